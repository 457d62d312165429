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
/// and clients that do not say.
async fn metrics_handler(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        state.metrics.render_as(format),
    )
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
