//! Leader election through a coordination.k8s.io Lease, so several replicas are safe: every replica
//! watches (its cache stays warm for a fast takeover), only the leader acts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Who leads. Cheap to clone; every reconcile asks it before acting.
#[derive(Clone, Debug)]
pub struct Leadership {
    is_leader: Arc<AtomicBool>,
    changes: watch::Receiver<bool>,
}

impl Leadership {
    /// A replica that always leads (leader election disabled: exactly one replica must run).
    pub fn always() -> Self {
        let (tx, rx) = watch::channel(true);
        // Keep the sender alive for the life of the process so the channel never closes.
        std::mem::forget(tx);
        Leadership {
            is_leader: Arc::new(AtomicBool::new(true)),
            changes: rx,
        }
    }

    /// Whether this replica holds the lease right now.
    pub fn is_leader(&self) -> bool {
        self.is_leader.load(Ordering::Acquire)
    }

    /// A receiver that sees every change of leadership (true: became leader).
    pub fn changes(&self) -> watch::Receiver<bool> {
        self.changes.clone()
    }
}

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// Unique per replica: the pod name.
    pub identity: String,
    /// How long a lease is valid without renewal; a standby takes over within this.
    pub duration: Duration,
    /// The holder renews this long before expiry (also the clock skew tolerated).
    pub grace: Duration,
}

/// The running election of this replica; [`Election::release`] gives the lease up at shutdown.
pub struct Election {
    release: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Election {
    /// Stop leading and give the lease up, so a standby takes over at once rather than after the
    /// lease expires. Waits at most `within` for the API server to record it.
    pub async fn release(mut self, within: Duration) {
        if let Some(release) = self.release.take() {
            let _ = release.send(());
        }
        let Some(task) = self.task.take() else {
            return;
        };
        let abort = task.abort_handle();
        if tokio::time::timeout(within, task).await.is_err() {
            abort.abort();
            tracing::warn!(
                ?within,
                "the lease was not released in time; it expires by itself"
            );
        }
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        // Without a release (a failed start-up, a test dropping the controller): stop competing.
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Start competing for the lease in the background.
pub async fn elect(
    client: Client,
    config: LeaseConfig,
) -> Result<(Leadership, Election), LeaseManagerError> {
    let manager = LeaseManagerBuilder::new(client, config.name.clone())
        .with_namespace(config.namespace.clone())
        .with_identity(config.identity.clone())
        .with_duration(config.duration.as_secs().max(2))
        .with_grace(
            config
                .grace
                .as_secs()
                .clamp(1, config.duration.as_secs().max(2) - 1),
        )
        // One field manager per replica: two replicas racing for an orphaned lease must conflict
        // on `holderIdentity`, which a shared manager name would let the second silently overwrite.
        .with_field_manager(format!(
            "{}-lease-{}",
            crate::api::FIELD_MANAGER,
            config.identity
        ))
        .build()
        .await?;
    let (mut lease_rx, mut lease_task) = manager.watch().await;
    let is_leader = Arc::new(AtomicBool::new(*lease_rx.borrow()));
    let (tx, rx) = watch::channel(*lease_rx.borrow());
    let flag = is_leader.clone();
    let identity = config.identity.clone();
    let (release, mut released) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut released => {
                    flag.store(false, Ordering::Release);
                    let _ = tx.send(false);
                    // Closing the channel makes the lease manager release the lease and end.
                    drop(lease_rx);
                    match (&mut lease_task).await {
                        Ok(Ok(_)) => tracing::info!(%identity, "released the lease"),
                        Ok(Err(e)) => tracing::warn!(error = %e, "releasing the lease failed"),
                        Err(e) => tracing::warn!(error = %e, "the lease task failed"),
                    }
                    return;
                }
                changed = lease_rx.changed() => {
                    if changed.is_err() {
                        // The lease task stopped: never keep acting on a lease we can no longer
                        // renew.
                        flag.store(false, Ordering::Release);
                        let _ = tx.send(false);
                        match (&mut lease_task).await {
                            Ok(Err(e)) => tracing::error!(error = %e, "leader election stopped"),
                            Err(e) => tracing::error!(error = %e, "leader election task failed"),
                            Ok(Ok(_)) => tracing::warn!("leader election stopped"),
                        }
                        return;
                    }
                    let leading = *lease_rx.borrow_and_update();
                    flag.store(leading, Ordering::Release);
                    if leading {
                        tracing::info!(%identity, "became the leader");
                    } else {
                        tracing::warn!(%identity, "lost the leadership");
                    }
                    let _ = tx.send(leading);
                }
            }
        }
    });
    Ok((
        Leadership {
            is_leader,
            changes: rx,
        },
        Election {
            release: Some(release),
            task: Some(task),
        },
    ))
}
