//! The controller's HTTP server: /metrics, /healthz (the process is alive) and /readyz (leader
//! election and the watches are running).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::telemetry::{Format, Metrics};

/// What /readyz reports on.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    election_running: Arc<AtomicBool>,
    watches_running: Arc<AtomicBool>,
}

impl Readiness {
    pub fn set_election_running(&self, running: bool) {
        self.election_running.store(running, Ordering::Release);
    }

    pub fn set_watches_running(&self, running: bool) {
        self.watches_running.store(running, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.election_running.load(Ordering::Acquire)
            && self.watches_running.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    readiness: Readiness,
}

/// The router, separate from binding so tests can serve it on their own listener.
pub fn router(metrics: Metrics, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready_handler))
        .with_state(AppState { metrics, readiness })
}

/// OpenMetrics for Prometheus (which asks for it), the text format 0.0.4 for `Accept: text/plain`
/// and clients that do not say; gzip-compressed for a client that accepts it. The page is
/// written on the blocking pool: with a large fleet it takes long enough to hold up a worker.
async fn metrics_handler(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let gzip = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(accepts_gzip);
    let metrics = state.metrics.clone();
    let page = tokio::task::spawn_blocking(move || {
        if gzip {
            metrics.render_gzip(format)
        } else {
            metrics.render_as(format).into_bytes()
        }
    })
    .await;
    let Ok(page) = page else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the page could not be written",
        )
            .into_response();
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, format.content_type()),
            (header::VARY, "Accept, Accept-Encoding"),
        ],
        page,
    )
        .into_response();
    if gzip {
        response.headers_mut().insert(
            header::CONTENT_ENCODING,
            header::HeaderValue::from_static("gzip"),
        );
    }
    response
}

/// Whether an `Accept-Encoding` value accepts gzip (`gzip` or `*`, without `q=0`).
fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|coding| {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
    })
}

async fn ready_handler(State(state): State<AppState>) -> impl IntoResponse {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "leader election or watches not running yet",
        )
    }
}

/// Serve until the process ends.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    readiness: Readiness,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router(metrics, readiness)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;
    use tower::ServiceExt as _;

    async fn get(router: Router, accept_encoding: Option<&str>) -> (HeaderMap, Vec<u8>) {
        let mut request = axum::http::Request::get("/metrics").header(header::ACCEPT, "text/plain");
        if let Some(coding) = accept_encoding {
            request = request.header(header::ACCEPT_ENCODING, coding);
        }
        let response = router
            .oneshot(request.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (headers, body.to_vec())
    }

    #[tokio::test]
    async fn metrics_are_compressed_for_a_client_that_accepts_gzip() {
        let metrics = Metrics::default();
        for i in 0..200 {
            metrics.set_phase("clinic", &format!("tier-{i}"), crate::api::Phase::Healthy);
        }
        let router = router(metrics, Readiness::default());
        let (plain_headers, plain) = get(router.clone(), None).await;
        assert_eq!(plain_headers.get(header::CONTENT_ENCODING), None);
        let (headers, compressed) = get(router.clone(), Some("gzip, deflate")).await;
        assert_eq!(headers.get(header::CONTENT_ENCODING).unwrap(), "gzip");
        let mut text = String::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_string(&mut text)
            .unwrap();
        // The same families and series (the process figures move between two pages).
        let series = |page: &str| {
            page.lines()
                .filter(|l| l.starts_with("tierguard_tier_phase{"))
                .map(str::to_owned)
                .collect::<std::collections::BTreeSet<_>>()
        };
        let plain = String::from_utf8(plain).unwrap();
        assert_eq!(series(&text), series(&plain));
        assert_eq!(series(&text).len(), 200 * 8);
        assert!(
            compressed.len() * 5 < plain.len(),
            "{} of {}",
            compressed.len(),
            plain.len()
        );
        let (refused, _) = get(router, Some("gzip;q=0, identity")).await;
        assert_eq!(refused.get(header::CONTENT_ENCODING), None);
    }

    #[test]
    fn accept_encoding_is_read_as_http_says() {
        assert!(accepts_gzip("gzip"));
        assert!(accepts_gzip("deflate, GZIP;q=0.5"));
        assert!(accepts_gzip("*"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("identity"));
        assert!(!accepts_gzip("br, deflate"));
    }
}
