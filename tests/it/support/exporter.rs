//! A real HTTP server on a free loopback port serving a `/metrics` page that the test controls,
//! with switches to answer garbage, an HTTP error, slowly, or to stop; and an auth-checking
//! proxy in front of a real Prometheus (Prometheus itself has no bearer-token auth).
//!
//! Each server runs on its own thread and Tokio runtime, so it serves while a test blocks
//! (e.g. on `std::process::Command`), and works from sync and async tests alike.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;

/// How the exporter answers.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// The metrics page.
    Normal,
    /// HTTP 200 with a body that is not the exposition format.
    Garbage,
    /// HTTP 500.
    Error,
    /// The metrics page, after this delay.
    Slow(Duration),
}

/// The application metrics of docs/metrics.md, as a test sets them.
#[derive(Clone, Debug, Default)]
pub struct AppMetrics {
    /// `http_requests_total` by `status`.
    pub requests: BTreeMap<String, u64>,
    /// `http_request_duration_seconds_bucket` cumulative counts by bound (the `+Inf` bucket is
    /// added with the largest count).
    pub duration_buckets: Vec<(f64, u64)>,
    pub duration_sum: f64,
    /// `cache_hits_total` / `cache_misses_total` by `clinic_id`.
    pub cache_hits: BTreeMap<String, u64>,
    pub cache_misses: BTreeMap<String, u64>,
    /// `mem0_writes_total{outcome="success"}` and `{outcome="failure"}`.
    pub mem0_success: u64,
    pub mem0_failure: u64,
    /// `circuit_breaker_state` by `breaker`.
    pub breakers: BTreeMap<String, f64>,
}

impl AppMetrics {
    /// Render in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP http_requests_total Requests served, by HTTP status.\n");
        out.push_str("# TYPE http_requests_total counter\n");
        for (status, n) in &self.requests {
            out.push_str(&format!(
                "http_requests_total{{method=\"GET\",status=\"{status}\"}} {n}\n"
            ));
        }
        out.push_str("# HELP http_request_duration_seconds Request duration.\n");
        out.push_str("# TYPE http_request_duration_seconds histogram\n");
        let total = self
            .duration_buckets
            .iter()
            .map(|(_, c)| *c)
            .max()
            .unwrap_or(0);
        for (le, count) in &self.duration_buckets {
            out.push_str(&format!(
                "http_request_duration_seconds_bucket{{le=\"{le}\"}} {count}\n"
            ));
        }
        out.push_str(&format!(
            "http_request_duration_seconds_bucket{{le=\"+Inf\"}} {total}\n"
        ));
        out.push_str(&format!(
            "http_request_duration_seconds_sum {}\n",
            self.duration_sum
        ));
        out.push_str(&format!("http_request_duration_seconds_count {total}\n"));
        out.push_str("# TYPE cache_hits_total counter\n");
        for (clinic, n) in &self.cache_hits {
            out.push_str(&format!("cache_hits_total{{clinic_id=\"{clinic}\"}} {n}\n"));
        }
        out.push_str("# TYPE cache_misses_total counter\n");
        for (clinic, n) in &self.cache_misses {
            out.push_str(&format!(
                "cache_misses_total{{clinic_id=\"{clinic}\"}} {n}\n"
            ));
        }
        out.push_str("# TYPE mem0_writes_total counter\n");
        out.push_str(&format!(
            "mem0_writes_total{{outcome=\"success\"}} {}\n",
            self.mem0_success
        ));
        out.push_str(&format!(
            "mem0_writes_total{{outcome=\"failure\"}} {}\n",
            self.mem0_failure
        ));
        out.push_str("# TYPE circuit_breaker_state gauge\n");
        for (breaker, v) in &self.breakers {
            out.push_str(&format!(
                "circuit_breaker_state{{breaker=\"{breaker}\"}} {v}\n"
            ));
        }
        out
    }
}

struct ExporterState {
    body: String,
    mode: Mode,
    served: u64,
}

/// A background HTTP server thread that stops when told to or when dropped.
pub struct ServerHandle {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ServerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serve `app` on 127.0.0.1:`port` (0: any free port) from a thread of its own.
pub fn spawn_server(port: u16, app: Router) -> ServerHandle {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a Tokio runtime for the test server");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .expect("bind the test server on 127.0.0.1");
            addr_tx
                .send(listener.local_addr().expect("local address"))
                .ok();
            // Dropping `serve` closes the listener; dropping the runtime ends open requests.
            tokio::select! {
                _ = axum::serve(listener, app) => {}
                _ = shutdown_rx => {}
            }
        });
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the test server starts");
    ServerHandle {
        addr,
        shutdown: Some(shutdown_tx),
        thread: Some(thread),
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A controllable /metrics endpoint.
pub struct Exporter {
    state: Arc<Mutex<ExporterState>>,
    server: ServerHandle,
}

async fn metrics(State(state): State<Arc<Mutex<ExporterState>>>) -> Response {
    let (mode, body) = {
        let mut s = state.lock().unwrap();
        s.served += 1;
        (s.mode.clone(), s.body.clone())
    };
    let text = |status: StatusCode, body: String| {
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            body,
        )
            .into_response()
    };
    match mode {
        Mode::Normal => text(StatusCode::OK, body),
        Mode::Garbage => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            GARBAGE,
        )
            .into_response(),
        Mode::Error => text(StatusCode::INTERNAL_SERVER_ERROR, "boom\n".to_owned()),
        Mode::Slow(delay) => {
            tokio::time::sleep(delay).await;
            text(StatusCode::OK, body)
        }
    }
}

const GARBAGE: &str = "<html>\n<body>\n<h1>Welcome to nginx!</h1>\n</body>\n</html>\n";

async fn other(State(state): State<Arc<Mutex<ExporterState>>>) -> Response {
    let mode = state.lock().unwrap().mode.clone();
    match mode {
        Mode::Garbage => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            GARBAGE,
        )
            .into_response(),
        _ => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

impl Exporter {
    /// Start on a free port, serving `metrics`.
    pub fn start(metrics: &AppMetrics) -> Self {
        Self::start_on(0, metrics)
    }

    /// Start on `port` (0: any free port).
    pub fn start_on(port: u16, initial: &AppMetrics) -> Self {
        let state = Arc::new(Mutex::new(ExporterState {
            body: initial.render(),
            mode: Mode::Normal,
            served: 0,
        }));
        // Any other path: 404, or the garbage page in Garbage mode (so the exporter can also
        // stand in for a "Prometheus" that answers nonsense).
        let app = Router::new()
            .route("/metrics", axum::routing::get(metrics))
            .fallback(other)
            .with_state(state.clone());
        Exporter {
            state,
            server: spawn_server(port, app),
        }
    }

    pub fn set(&self, metrics: &AppMetrics) {
        self.state.lock().unwrap().body = metrics.render();
    }

    pub fn set_body(&self, body: &str) {
        self.state.lock().unwrap().body = body.to_owned();
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    /// How many requests /metrics answered (or started answering).
    pub fn served(&self) -> u64 {
        self.state.lock().unwrap().served
    }

    pub fn port(&self) -> u16 {
        self.server.addr.port()
    }

    /// `127.0.0.1:PORT`, as a Prometheus scrape target.
    pub fn target(&self) -> String {
        self.server.addr.to_string()
    }

    pub fn url(&self) -> String {
        format!("http://{}/metrics", self.server.addr)
    }

    /// The base URL (for pointing a Prometheus client at a server that is not Prometheus).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// Stop serving: the port refuses connections afterwards.
    pub fn stop(&mut self) {
        self.server.stop();
    }
}

/// A proxy in front of a real Prometheus that forwards only requests carrying the expected
/// `Authorization` header, as kube-rbac-proxy or an ingress with auth would.
pub struct AuthProxy {
    server: ServerHandle,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    expected: String,
    http: reqwest::Client,
}

async fn forward(
    State(state): State<ProxyState>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if given != state.expected {
        return (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
    }
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    match state
        .http
        .get(format!("{}{path}", state.upstream))
        .send()
        .await
    {
        Ok(upstream) => {
            let status =
                StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let body = upstream.bytes().await.unwrap_or_default();
            Response::builder()
                .status(status)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .unwrap()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

impl AuthProxy {
    /// Forward to `upstream` (e.g. `http://127.0.0.1:9090`) requests whose `Authorization`
    /// header is exactly `expected` (e.g. `Bearer t0ken`).
    pub fn start(upstream: &str, expected: &str) -> Self {
        tierguard::install_crypto_provider();
        let state = ProxyState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            expected: expected.to_owned(),
            http: reqwest::Client::new(),
        };
        let app = Router::new().fallback(forward).with_state(state);
        AuthProxy {
            server: spawn_server(0, app),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }
}

/// A listening socket that never accepts: connections are made (the kernel completes the
/// handshake) and then nothing is ever answered, like a hung server.
pub struct BlackHole {
    listener: std::net::TcpListener,
}

impl BlackHole {
    pub fn start() -> Self {
        BlackHole {
            listener: std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"),
        }
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }
}
