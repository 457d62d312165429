//! A mem0 API stand-in on 127.0.0.1: `GET /v1/health` and `GET /v1/users/me` answer as the
//! test switches them (up, key refused, rate-limited with a Retry-After, down, no answer), and
//! every request is recorded with its Authorization header.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// What the stand-in does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mem0Mode {
    /// Health 200; the key is accepted (200).
    Up,
    /// Health 200; the authenticated call answers this (401 or 403).
    KeyRefused(u16),
    /// Both calls answer 429 with `Retry-After: N` (seconds).
    RateLimited(u64),
    /// Health answers this 5xx.
    Down(u16),
    /// Nothing answers within this long.
    Hang(Duration),
}

/// One request as the stand-in saw it.
#[derive(Clone, Debug)]
pub struct Mem0Request {
    pub path: String,
    pub authorization: Option<String>,
    pub at: std::time::Instant,
}

#[derive(Debug)]
struct Shared {
    mode: Mutex<Mem0Mode>,
    requests: Mutex<Vec<Mem0Request>>,
    expected_key: String,
}

/// The running stand-in; it stops with the test's runtime.
pub struct Mem0StandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Mem0StandIn {
    /// A stand-in whose valid key is `key`; it starts [`Mem0Mode::Up`].
    pub async fn start(key: &str) -> Mem0StandIn {
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mem0Mode::Up),
            requests: Mutex::new(Vec::new()),
            expected_key: key.to_owned(),
        });
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Mem0StandIn { addr, shared }
    }

    pub fn health_url(&self) -> String {
        format!("http://{}/v1/health", self.addr)
    }

    pub fn auth_url(&self) -> String {
        format!("http://{}/v1/users/me", self.addr)
    }

    pub fn set(&self, mode: Mem0Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    pub fn requests(&self) -> Vec<Mem0Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Requests to the health endpoint: one per probe.
    pub fn probes(&self) -> Vec<Mem0Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == "/v1/health")
            .collect()
    }
}

async fn answer(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap) -> Response {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path = uri.path().to_owned();
    shared.requests.lock().unwrap().push(Mem0Request {
        path: path.clone(),
        authorization: authorization.clone(),
        at: std::time::Instant::now(),
    });
    let mode = *shared.mode.lock().unwrap();
    let key_ok = authorization.as_deref() == Some(&format!("Bearer {}", shared.expected_key));
    let status = |code: u16| StatusCode::from_u16(code).unwrap();
    match (mode, path.as_str()) {
        (Mem0Mode::Hang(d), _) => {
            tokio::time::sleep(d).await;
            StatusCode::OK.into_response()
        }
        (Mem0Mode::Down(code), _) => (status(code), "upstream exploded").into_response(),
        (Mem0Mode::RateLimited(after), _) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", after.to_string())],
            "slow down",
        )
            .into_response(),
        (_, "/v1/health") => (StatusCode::OK, "{\"status\":\"ok\"}").into_response(),
        (Mem0Mode::KeyRefused(code), "/v1/users/me") => {
            (status(code), "{\"detail\":\"Invalid API key\"}").into_response()
        }
        (Mem0Mode::Up, "/v1/users/me") if key_ok => {
            (StatusCode::OK, "{\"id\":\"u-1\"}").into_response()
        }
        (Mem0Mode::Up, "/v1/users/me") => StatusCode::UNAUTHORIZED.into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
