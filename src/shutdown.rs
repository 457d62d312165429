//! Stopping on SIGTERM: what runs finishes (a Redis round, a reconcile that already acts), nothing
//! new starts, and the process is gone within the pod's grace period.
//!
//! A [`Stop`] is handed to everything long: the controller's start-up, its reconciles, a flush or
//! an audit, which checks it between rounds. The controller bounds the whole drain (see
//! `RunConfig::shutdown_timeout`), so a reconcile stuck on an unreachable API server cannot
//! hold the process past it.

pub use tokio_util::sync::CancellationToken as Stop;

use tokio::signal::unix::{SignalKind, signal};

/// A [`Stop`] that fires on the first SIGTERM or SIGINT. A second signal exits at once (status
/// 130), as an operator pressing Ctrl+C twice expects. The handlers are installed before this
/// returns, so a signal that arrives during start-up is not lost.
pub fn on_signals() -> std::io::Result<Stop> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let stop = Stop::new();
    let fired = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("shutdown requested: finishing what runs, starting nothing new");
        fired.cancel();
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::warn!("a second shutdown signal: exiting now");
        std::process::exit(130);
    });
    Ok(stop)
}

/// Run `work` unless `stop` fires first (`None` then).
pub async fn unless_stopped<T>(
    stop: &Stop,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        _ = stop.cancelled() => None,
        out = work => Some(out),
    }
}
