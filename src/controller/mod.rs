//! The kube-runtime controller: read → validate → observe → decide → act → status.
//!
//! Every replica watches MemoryTiers (and the ConfigMaps they own); only the holder of the leader
//! Lease reconciles past validation. The controller keeps no state outside the tiers' `status`,
//! so a restarted or newly elected replica resumes mid-incident where the last one stopped.

pub mod admission;
pub mod cached;
mod context;
pub mod error;
pub mod events;
mod execute;
pub mod leader;
pub mod memory;
mod namespaces;
pub mod quiet;
mod reconcile;
pub mod selector;
pub mod server;
pub mod status;
pub mod telemetry;
mod tier_metrics;
pub mod work;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::controller::Controller;
use kube::runtime::utils::Predicate;
use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
use kube::{Api, Client, ResourceExt};

pub use context::{Context, Limits};
pub use error::Error;
pub use events::EventPublisher;
pub use execute::Executed;
pub use leader::{Leadership, LeaseConfig};
pub use quiet::DEFAULT_STATUS_REFRESH;
pub use reconcile::{Watched, error_policy, reconcile};

use crate::api::MemoryTier;
use crate::destinations::{Destinations, Network};
use crate::shutdown::{Stop, unless_stopped};
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
    /// due at once) from holding every tier's buffers at the same time. The ones waiting run
    /// most urgent first ([`admission`]).
    pub concurrency: u16,
    /// How often a tier's live readings in status are refreshed when nothing else changed
    /// ([`quiet`]).
    pub status_refresh: Duration,
    /// Where each kind of request may go.
    pub destinations: Destinations,
    /// The budget of warming, remediation and audit, which run outside the reconciles.
    pub background: work::Budget,
    /// After the stop signal, how long reconciles already running may take to finish before the
    /// controller stops without them. Keep it below the pod's `terminationGracePeriodSeconds`.
    pub shutdown_timeout: Duration,
}

/// The default [`RunConfig::shutdown_timeout`]: the drain, the lease's release and the exit fit
/// in a 10 s grace period.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(7);
/// How long the lease's release may take at shutdown.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one start-up check of the API may take.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(10);

/// The default bound on concurrent reconciles.
pub const DEFAULT_CONCURRENCY: u16 = 16;

/// How many due reconciles wait for admission at once beyond those running: enough that an
/// incident among them overtakes a backlog of periodic ticks, few enough to poll cheaply.
const ADMISSION_BACKLOG: u16 = 256;

/// The most reconciles started at once (running, or waiting in the admission).
fn admission_window(concurrency: u16) -> u16 {
    concurrency.max(1).saturating_add(ADMISSION_BACKLOG)
}

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
    let stop = crate::shutdown::on_signals()?;
    run_until(client, config, stop).await
}

/// Run the controller until `stop` fires, then shut down within `config.shutdown_timeout`:
/// reconciles already running finish (a flush stops after its round), none starts, and the lease
/// is released. Fails at start-up, before anything runs, when the selector is invalid, the
/// MemoryTier CRD is not installed or MemoryTiers may not be listed.
pub async fn run_until(client: Client, config: RunConfig, stop: Stop) -> anyhow::Result<()> {
    let selector = match &config.selector {
        Some(text) => Some(selector::parse(text)?.to_string()),
        None => None,
    };
    // One probe per watched namespace (a namespaced install may list only those).
    let probes: Vec<Api<MemoryTier>> = if config.namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        config
            .namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    let checks = async {
        for tiers in &probes {
            preflight(tiers, selector.as_deref()).await?;
        }
        Ok::<_, anyhow::Error>(())
    };
    if unless_stopped(&stop, checks).await.transpose()?.is_none() {
        tracing::info!("stopped before the controller started");
        return Ok(());
    }

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

    let (leadership, election) = match config.lease.clone() {
        Some(lease) => match unless_stopped(&stop, leader::elect(client.clone(), lease)).await {
            None => return Ok(()),
            Some(elected) => {
                let (leadership, election) = elected?;
                (leadership, Some(election))
            }
        },
        None => (Leadership::always(), None),
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
        stop.clone(),
        Limits {
            concurrency: config.concurrency,
            status_refresh: config.status_refresh,
        },
    ));

    let mut tier_watch = watcher::Config::default();
    if let Some(selector) = &selector {
        tier_watch = tier_watch.labels(selector);
    }
    let (reader, writer) = reflector::store();
    // Status writes do not trigger a reconcile (the interval does); spec and annotation changes
    // (e.g. the resume annotation) do, at once.
    // The cache keeps each tier packed ([`cached`]): no managedFields, the spec and status
    // compressed; one stored object that does not deserialize is reported on its own and cannot
    // stop the watch of the others.
    let tier_stream =
        namespaces::watch::<Watched>(&client, &config.namespaces, tier_watch, reader.clone())
            .inspect_err(|e| log_watch_error("MemoryTiers", e))
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
                let tiers = reader.state();
                let live: HashSet<String> = tiers.iter().filter_map(|t| t.uid()).collect();
                ctx.retain_tiers(&live);
                let names: HashSet<(String, String)> = tiers
                    .iter()
                    .map(|t| (t.namespace().unwrap_or_default(), t.name_any()))
                    .collect();
                ctx.metrics.retain_tiers(|namespace, name| {
                    names.contains(&(namespace.to_owned(), name.to_owned()))
                });
            }
        });
    }

    let controller = Controller::for_stream(tier_stream, reader)
        // Up to a window of due reconciles is started at once, and each waits for its slot in
        // the admission, where an incident or a new tier goes before healthy tiers' periodic
        // ticks; beyond the window, kube-runtime queues them in the order they fell due. The
        // window is bounded because kube-runtime polls every started reconcile whenever any one
        // of them wakes: with every due tier started (10,000 at a fleet's first pass), that
        // polling took a third of the controller's CPU.
        .with_config(
            kube::runtime::controller::Config::default()
                .concurrency(admission_window(config.concurrency)),
        )
        // Only the owner reference of a ConfigMap matters here, so its metadata is all that is
        // fetched: the incident reports in the `-incidents` ConfigMaps are never downloaded.
        .owns_stream(
            namespaces::watch_metadata::<ConfigMap>(
                &client,
                &config.namespaces,
                watcher::Config::default().labels(MANAGED_BY_SELECTOR),
            )
            .inspect_err(|e| log_watch_error("ConfigMaps", e)),
        )
        .reconcile_all_on(takeover)
        .reconcile_on(finished)
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Err(kube::runtime::controller::Error::RunnerError(e)) => {
                    tracing::warn!(error = %e, "the reconcile runner failed");
                }
                // Failed watches are logged where they fail, failed reconciles in error_policy.
                Err(e) => tracing::debug!(error = %e, "reconcile request not run"),
                Ok(_) => {}
            }
        });
    let mut controller = std::pin::pin!(controller);
    tokio::select! {
        _ = &mut controller => {}
        _ = stop.cancelled() => {}
    }

    // Shutting down: no reconcile starts now. The controller's stream is still driven, so those
    // running go on (dropping it would abort them mid-action) until they end or time is up.
    readiness.set_watches_running(false);
    let running = ctx.in_flight();
    let jobs = ctx.work.running_total();
    if running > 0 || jobs > 0 {
        tracing::info!(running, jobs, timeout = ?config.shutdown_timeout, "waiting for running reconciles and background jobs");
    }
    // Background jobs see the stop too (a flush stops after its round); their end, and the Event
    // that says how they went, is waited for like a reconcile's.
    let drained = async {
        while ctx.in_flight() > 0 || ctx.work.running_total() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        _ = &mut controller => {}
        _ = drained => {}
        _ = tokio::time::sleep(config.shutdown_timeout) => {
            tracing::warn!(
                running = ctx.in_flight(),
                jobs = ctx.work.running_total(),
                timeout = ?config.shutdown_timeout,
                "reconciles still running at the shutdown timeout (or background jobs); stopping without them"
            );
        }
    }
    if let Some(election) = election {
        election.release(RELEASE_TIMEOUT).await;
    }
    tracing::info!("controller stopped");
    drop(tasks);
    Ok(())
}

/// Before anything starts: one list of MemoryTiers (a single item) proves the CRD is installed,
/// the selector acceptable and listing allowed. An unreachable API server is retried (the watch
/// would retry too), with a warning each time; the caller stops the retries at shutdown.
async fn preflight(tiers: &Api<MemoryTier>, selector: Option<&str>) -> anyhow::Result<()> {
    let mut params = kube::api::ListParams::default().limit(1);
    if let Some(selector) = selector {
        params = params.labels(selector);
    }
    let mut wait = Duration::from_millis(500);
    loop {
        let outcome = tokio::time::timeout(PREFLIGHT_TIMEOUT, tiers.list_metadata(&params)).await;
        let failure = match outcome {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(kube::Error::Api(status))) if status.code == 404 => anyhow::bail!(
                "the MemoryTier CRD is not installed: the API server does not serve {}/{}                  memorytiers (apply crds/memorytier.yaml, or `tierguard crd | kubectl apply -f -`)",
                crate::api::GROUP,
                crate::api::VERSION,
            ),
            Ok(Err(kube::Error::Api(status))) if status.code == 400 => anyhow::bail!(
                "the API server refused to list MemoryTiers{}: {}",
                selector
                    .map(|s| format!(" with the selector {s:?}"))
                    .unwrap_or_default(),
                crate::remote::text::reason(&status.message)
            ),
            Ok(Err(kube::Error::Api(status))) if matches!(status.code, 401 | 403) => anyhow::bail!(
                "not allowed to list MemoryTiers ({}): {}",
                status.code,
                crate::remote::text::reason(&status.message)
            ),
            Ok(Err(e)) => crate::remote::text::reason(&crate::secret::error_chain(&e)),
            Err(_) => format!("no answer within {PREFLIGHT_TIMEOUT:?}"),
        };
        tracing::warn!(error = %failure, retry_in = ?wait, "cannot list MemoryTiers yet");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}

/// A watch that fails is retried with a backoff by kube's watcher; each failure is logged at warn
/// with the reason (a 404 once the CRD is deleted, a 403 after an RBAC change, a dead API server).
fn log_watch_error(what: &str, error: &watcher::Error) {
    tracing::warn!(
        watch = what,
        error = %crate::remote::text::reason(&crate::secret::error_chain(error)),
        "watching failed; retrying"
    );
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
