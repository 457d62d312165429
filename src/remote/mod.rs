//! Answers from the network, read within bounds.
//!
//! Every peer (Prometheus, an application's /metrics, Redis, a webhook, the Kubernetes API server)
//! may answer with something huge, slow or malformed. What is read is capped in size before it is
//! buffered ([`body`], [`redis`], [`kube`]), heavy parsing runs on the blocking pool rather than on
//! the async workers ([`off_runtime`]) and within the source's deadline, and any remote text
//! that reaches status, an Event, a log line or a terminal goes through [`text`].

pub mod body;
pub mod kube;
pub mod redis;
pub mod text;

/// Run CPU-heavy `work` (parsing a large answer) on Tokio's blocking pool, so the async workers
/// keep serving other tiers. A caller's deadline around the `.await` stops waiting; `work` itself
/// must be bounded (its input is, by the size limits above).
pub async fn off_runtime<T, F>(work: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("the parser stopped: {e}"))
}
