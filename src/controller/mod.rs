//! The kube-runtime controller: read → validate → observe → decide → act → status.
//!
//! Every replica watches MemoryTiers (and the ConfigMaps they own); only the holder of the leader
//! Lease reconciles past validation. The controller keeps no state outside the tiers' `status`,
//! so a restarted or newly elected replica resumes mid-incident where the last one stopped.

mod context;
pub mod error;
pub mod events;
mod execute;
pub mod leader;
pub mod memory;
mod namespaces;
mod reconcile;
pub mod server;
pub mod status;
pub mod telemetry;
pub mod work;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::controller::Controller;
use kube::runtime::utils::Predicate;
use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
use kube::{Client, ResourceExt};

pub use context::Context;
pub use error::Error;
pub use events::EventPublisher;
pub use execute::Executed;
pub use leader::{Leadership, LeaseConfig};
pub use reconcile::{Watched, error_policy, reconcile};

use crate::destinations::{Destinations, Network};
use server::Readiness;
use telemetry::Metrics;

/// How often /readyz re-checks the watch cache while it is not ready yet.
const READY_POLL: Duration = Duration::from_millis(250);

/// The label every object the controller writes carries.
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=tierguard";

/// How `tierguard run` is set up.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Watch these namespaces only (empty: all namespaces).
    pub namespaces: Vec<String>,
    /// Reconcile only MemoryTiers matching this label selector.
    pub selector: Option<String>,
    /// Where /metrics, /healthz and /readyz are served (None: not served).
    pub metrics_addr: Option<SocketAddr>,
    /// Compete for a Lease (None: this replica always leads; run exactly one).
    pub lease: Option<LeaseConfig>,
    /// Name of this replica in Events.
    pub instance: Option<String>,
    /// Most reconciles running at once. A bound keeps a start-up with a large fleet (every tier
    /// due at once) from holding every tier's buffers at the same time.
    pub concurrency: u16,
    /// Where each kind of request may go.
    pub destinations: Destinations,
    /// The budget of warming, remediation and audit, which run outside the reconciles.
    pub background: work::Budget,
}

/// The default bound on concurrent reconciles.
pub const DEFAULT_CONCURRENCY: u16 = 16;

/// Background tasks that end with the controller: dropping the run future (a shutdown, or a test
/// killing a replica) takes the lease holder, the server and the housekeeping with it.
#[derive(Default)]
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Tasks {
    fn spawn(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.0.push(tokio::spawn(task));
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Run the controller until SIGTERM/SIGINT.
pub async fn run(client: Client, config: RunConfig) -> anyhow::Result<()> {
    let mut tasks = Tasks::default();
    let metrics = Metrics::default();
    let readiness = Readiness::default();
    if let Some(addr) = config.metrics_addr {
        let (m, r) = (metrics.clone(), readiness.clone());
        tasks.spawn(async move {
            if let Err(e) = server::serve(addr, m, r).await {
                tracing::error!(error = %e, %addr, "the metrics server stopped");
            }
        });
    }

    let leadership = match config.lease.clone() {
        Some(lease) => {
            let (leadership, task) = leader::elect(client.clone(), lease).await?;
            tasks.0.push(task);
            leadership
        }
        None => Leadership::always(),
    };
    readiness.set_election_running(true);
    {
        let (metrics, mut changes) = (metrics.clone(), leadership.changes());
        metrics.leader.set(i64::from(*changes.borrow()));
        tasks.spawn(async move {
            while changes.changed().await.is_ok() {
                metrics.leader.set(i64::from(*changes.borrow()));
            }
        });
    }

    let events = EventPublisher::new(client.clone(), "tierguard", config.instance.clone());
    let network = Network::new(config.destinations.clone())?;
    // A tier whose background job finished is reconciled at once, to put the outcome in status.
    let (wake, finished) = tokio::sync::mpsc::unbounded_channel();
    let finished = futures::stream::unfold(finished, |mut rx| async move {
        rx.recv().await.map(|tier| (tier, rx))
    });
    let ctx = Arc::new(Context::new(
        client.clone(),
        events,
        metrics,
        leadership.clone(),
        network,
        work::Work::new(config.background, Some(wake)),
    ));

    let mut tier_watch = watcher::Config::default();
    if let Some(selector) = &config.selector {
        tier_watch = tier_watch.labels(selector);
    }
    let (reader, writer) = reflector::store();
    // Status writes do not trigger a reconcile (the interval does); spec and annotation changes
    // (e.g. the resume annotation) do, at once.
    // managedFields are never read here, and with server-side apply of a large status they are
    // large too: the cache keeps none.
    // Every tier is watched through a guard: one stored object that does not deserialize is
    // reported on its own and cannot stop the watch of the others.
    let tier_stream =
        namespaces::watch::<Watched>(&client, &config.namespaces, tier_watch, reader.clone())
            .modify(|tier: &mut Watched| tier.managed_fields_mut().clear())
            .reflect(writer)
            .applied_objects()
            .predicate_filter(
                (predicates::generation as fn(&Watched) -> Option<u64>)
                    .combine(predicates::annotations as fn(&Watched) -> Option<u64>),
                Default::default(),
            );

    // Reconcile every tier when this replica becomes the leader, so a takeover resumes at once.
    let mut became_leader = leadership.changes();
    let takeover = async_stream(&mut tasks, move |tx| async move {
        while became_leader.changed().await.is_ok() {
            if *became_leader.borrow_and_update() && tx.send(()).await.is_err() {
                return;
            }
        }
    });

    {
        let (reader, readiness, ctx) = (reader.clone(), readiness.clone(), ctx.clone());
        tasks.spawn(async move {
            // The store wakes only the last task that waited on it (kube-runtime keeps one
            // waker), and the Controller waits on it too: so wait in short rounds, each of which
            // sees a readiness that was signalled while another task held the waker.
            loop {
                match tokio::time::timeout(READY_POLL, reader.wait_until_ready()).await {
                    Ok(Ok(())) => {
                        readiness.set_watches_running(true);
                        break;
                    }
                    Ok(Err(_)) => break, // the watch ended: never ready
                    Err(_) => continue,
                }
            }
            // Forget observers of deleted tiers now and then.
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                let live: HashSet<String> = reader.state().iter().filter_map(|t| t.uid()).collect();
                ctx.retain_tiers(&live);
            }
        });
    }

    Controller::for_stream(tier_stream, reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(config.concurrency))
        // Only the owner reference of a ConfigMap matters here, so its metadata is all that is
        // fetched: the incident reports in the `-incidents` ConfigMaps are never downloaded.
        .owns_stream(namespaces::watch_metadata::<ConfigMap>(
            &client,
            &config.namespaces,
            watcher::Config::default().labels(MANAGED_BY_SELECTOR),
        ))
        .reconcile_all_on(takeover)
        .reconcile_on(finished)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile request not run");
            }
        })
        .await;
    tracing::info!("controller stopped");
    drop(tasks);
    Ok(())
}

/// A stream fed by a task: `f` gets the sending end.
fn async_stream<F, Fut>(tasks: &mut Tasks, f: F) -> impl futures::Stream<Item = ()> + Send + 'static
where
    F: FnOnce(tokio::sync::mpsc::Sender<()>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tasks.spawn(f(tx));
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}
