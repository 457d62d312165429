//! What every reconcile shares: the client, the Event recorder, metrics, leadership, and the
//! per-tier observers (which keep the previous scrape and Redis connections between reconciles).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Client;

use super::events::EventPublisher;
use super::leader::Leadership;
use super::telemetry::Metrics;
use super::work::Work;
use crate::api::{MemoryTierSpec, MemoryTierStatus};
use crate::destinations::Network;
use crate::observe::fleet::Fleet;
use crate::observe::{ConfigError, ObserveConfig, Observer};
use crate::shutdown::Stop;
use jiff::Timestamp;

/// Shared state of the controller.
pub struct Context {
    pub client: Client,
    pub events: Arc<EventPublisher>,
    pub metrics: Metrics,
    pub leadership: Leadership,
    /// Where requests may go, and the HTTP clients that keep them there.
    pub network: Network,
    /// Warming, remediation and audit, run outside the reconcile.
    pub work: Work,
    /// Fires at shutdown: no reconcile starts after it, a flush stops after its round.
    pub stop: Stop,
    /// Reconciles running now, so a shutdown waits for them.
    in_flight: AtomicUsize,
    /// Observers by MemoryTier uid.
    observers: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Observer>>>>,
    /// Consecutive failed reconciles by MemoryTier uid, for the error backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// When the policy last decided in a status this replica wrote, by MemoryTier uid. A
    /// reconcile that follows at once (the ConfigMap it just rendered is watched too, and a
    /// reconcile queued meanwhile holds the tier as the cache had it then) may get the tier
    /// before the status write reaches the cache; deciding on that older memory would repeat the
    /// last step's actions (a second warm-up, a second remediation, duplicate Events). Only the
    /// time is kept, not the status: a lagging reconcile reads the tier again instead.
    written: Mutex<HashMap<String, Timestamp>>,
    /// When each tier's next periodic tick is due, by MemoryTier uid.
    ticks: Mutex<HashMap<String, Instant>>,
    /// The policy's memory of the ticks whose status was not written (only live readings
    /// moved: [`super::quiet`]), by MemoryTier uid, with the `lastTick` of the status it follows.
    pending: Mutex<HashMap<String, PendingMemory>>,
    /// When each tier's ownership preflight last passed, and for which spec generation.
    preflights: Mutex<HashMap<String, (Option<i64>, Instant)>>,
    /// The spec generation of each tier whose spec last passed validation: a spec does not
    /// change without a new generation, and the CEL rules cost more than the rest of a tick.
    validated: Mutex<HashMap<String, i64>>,
    /// How often the live readings in status are refreshed when nothing else changed.
    pub status_refresh: Duration,
    /// Which reconciles run first when many are due.
    pub admission: super::admission::Admission,
    /// The groups of tiers whose Prometheus queries are read together.
    pub fleet: Fleet,
}

/// The memory of ticks not written, over the status written last.
struct PendingMemory {
    /// The `lastTick` of the status it follows (the one in the API server).
    over: Option<Timestamp>,
    /// `status.policy` as compact JSON: every quiet tier has one, and as text it is a sixth of
    /// the JSON tree's size.
    policy: Box<str>,
}

/// The bounds a controller runs with.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most reconciles running at once.
    pub concurrency: u16,
    /// How often the live readings in status are refreshed when nothing else changed.
    pub status_refresh: Duration,
}

/// The first retry after a failed reconcile; it doubles per consecutive failure.
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest wait between retries.
const MAX_RETRY: Duration = Duration::from_secs(300);

impl Context {
    // Every part is shared state of its own; a builder would only restate them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        events: EventPublisher,
        metrics: Metrics,
        leadership: Leadership,
        network: Network,
        work: Work,
        stop: Stop,
        limits: Limits,
    ) -> Self {
        Context {
            client,
            events: Arc::new(events),
            work,
            metrics,
            leadership,
            network,
            stop,
            in_flight: AtomicUsize::new(0),
            observers: Mutex::default(),
            failures: Mutex::default(),
            written: Mutex::default(),
            ticks: Mutex::default(),
            pending: Mutex::default(),
            preflights: Mutex::default(),
            validated: Mutex::default(),
            status_refresh: limits.status_refresh,
            admission: super::admission::Admission::new(limits.concurrency),
            fleet: Fleet::default(),
        }
    }

    /// Count a reconcile as running until the guard is dropped.
    pub fn running(&self) -> Running<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Running(self)
    }

    /// How many reconciles are running.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// How long until the tier's next periodic tick, after a reconcile that began at `started`.
    ///
    /// A tier is evaluated every `interval`, counted from when each tick began, whatever a
    /// reconcile costs; a reconcile in between (a change of the tier or of its ConfigMap) does
    /// not move the schedule ([`next_due`]). This is the clock a backtest replays (`simulate
    /// --from-prometheus` steps every interval); requeueing `interval` after each reconcile
    /// ended would let the ticks drift by the reconcile's duration every time.
    pub fn next_tick(&self, uid: &str, interval: Duration, started: Instant) -> Duration {
        let now = Instant::now();
        let mut ticks = self.ticks.lock().expect("ticks lock");
        let due = next_due(ticks.get(uid).copied(), interval, started, now);
        ticks.insert(uid.to_owned(), due);
        due.saturating_duration_since(now)
    }

    /// Keep the memory of a tick whose status was not written: `over` is the `lastTick` of the
    /// status in the API server, `next` the status decided.
    pub fn keep_pending(&self, uid: &str, over: Option<Timestamp>, next: &MemoryTierStatus) {
        let Some(policy) = next.policy.as_ref().map(|p| p.to_string().into_boxed_str()) else {
            return;
        };
        self.pending
            .lock()
            .expect("pending lock")
            .insert(uid.to_owned(), PendingMemory { over, policy });
    }

    /// `status` (the tier's, as stored) with the memory of the ticks not written since, when it
    /// is still the status that memory follows; a status written since by anyone else (another
    /// replica, a restore) is taken as it is.
    pub fn with_pending_memory(&self, uid: &str, status: &mut MemoryTierStatus) {
        let mut pending = self.pending.lock().expect("pending lock");
        match pending.get(uid) {
            // What was written as JSON reads back; were it not, the stored memory is used.
            Some(p) if p.over == last_tick(status) => match serde_json::from_str(&p.policy) {
                Ok(policy) => status.policy = Some(policy),
                Err(_) => {
                    pending.remove(uid);
                }
            },
            Some(_) => {
                pending.remove(uid);
            }
            None => {}
        }
    }

    /// Whether the ownership preflight of `uid` passed for this spec generation within the
    /// status refresh period (the actuators check again at every write).
    pub fn preflight_passed_recently(&self, uid: &str, generation: Option<i64>) -> bool {
        self.preflights
            .lock()
            .expect("preflights lock")
            .get(uid)
            .is_some_and(|(g, at)| *g == generation && at.elapsed() < self.status_refresh)
    }

    /// Whether the spec of `uid` at `generation` passed validation already.
    pub fn spec_validated(&self, uid: &str, generation: Option<i64>) -> bool {
        generation.is_some()
            && self.validated.lock().expect("validated lock").get(uid) == generation.as_ref()
    }

    /// Record that the spec of `uid` at `generation` passed validation (or, `None`, did not).
    pub fn record_validation(&self, uid: &str, generation: Option<i64>, passed: bool) {
        let mut validated = self.validated.lock().expect("validated lock");
        match generation.filter(|_| passed) {
            Some(generation) => validated.insert(uid.to_owned(), generation),
            None => validated.remove(uid),
        };
    }

    /// Record that the ownership preflight of `uid` passed.
    pub fn preflight_passed(&self, uid: &str, generation: Option<i64>) {
        self.preflights
            .lock()
            .expect("preflights lock")
            .insert(uid.to_owned(), (generation, Instant::now()));
    }

    /// Forget a passed preflight (a check failed since).
    pub fn preflight_failed(&self, uid: &str) {
        self.preflights.lock().expect("preflights lock").remove(uid);
    }

    /// Remember when the status just written for `uid` was decided.
    pub fn remember_status(&self, uid: &str, status: &MemoryTierStatus) {
        self.pending.lock().expect("pending lock").remove(uid);
        if let Some(tick) = last_tick(status) {
            self.written
                .lock()
                .expect("written lock")
                .insert(uid.to_owned(), tick);
        }
    }

    /// Whether the watch cache's status for `uid` is older than the one this replica wrote last,
    /// so that deciding on it would repeat a decision. A status another replica wrote since is
    /// newer than ours and never lags.
    pub fn watch_lags(&self, uid: &str, from_watch: Option<&MemoryTierStatus>) -> bool {
        let written = self.written.lock().expect("written lock");
        lags(written.get(uid).copied(), from_watch)
    }

    /// The tier's observer, created or updated for `config` (an unchanged config keeps its
    /// state), and in the fleet group its Prometheus queries are read with, if any.
    pub fn observer(
        &self,
        uid: &str,
        namespace: &str,
        spec: &MemoryTierSpec,
        config: ObserveConfig,
    ) -> Result<Arc<tokio::sync::Mutex<Observer>>, ConfigError> {
        let mut observers = self.observers.lock().expect("observers lock");
        if let Some(existing) = observers.get(uid) {
            let existing = existing.clone();
            // Only this tier's reconcile uses its observer, and kube-runtime never runs two
            // reconciles of one object at once, so this lock is free.
            if let Ok(mut observer) = existing.try_lock()
                && observer.config() != &config
            {
                observer.update(config)?;
                observer.set_fleet(None);
                let member = self
                    .fleet
                    .join(namespace, spec, observer.config(), observer.http());
                observer.set_fleet(member);
            }
            return Ok(existing);
        }
        let mut observer = Observer::with_network(config, &self.network)?;
        let member = self
            .fleet
            .join(namespace, spec, observer.config(), observer.http());
        observer.set_fleet(member);
        let observer = Arc::new(tokio::sync::Mutex::new(observer));
        observers.insert(uid.to_owned(), observer.clone());
        Ok(observer)
    }

    /// Drop the state of tiers that no longer exist.
    pub fn retain_tiers(&self, live_uids: &std::collections::HashSet<String>) {
        self.observers
            .lock()
            .expect("observers lock")
            .retain(|uid, _| live_uids.contains(uid));
        self.failures
            .lock()
            .expect("failures lock")
            .retain(|uid, _| live_uids.contains(uid));
        self.written
            .lock()
            .expect("written lock")
            .retain(|uid, _| live_uids.contains(uid));
        self.work.retain_tiers(live_uids);
        self.ticks
            .lock()
            .expect("ticks lock")
            .retain(|uid, _| live_uids.contains(uid));
        self.pending
            .lock()
            .expect("pending lock")
            .retain(|uid, _| live_uids.contains(uid));
        self.preflights
            .lock()
            .expect("preflights lock")
            .retain(|uid, _| live_uids.contains(uid));
        self.validated
            .lock()
            .expect("validated lock")
            .retain(|uid, _| live_uids.contains(uid));
    }

    /// Record a failed reconcile; returns how long to wait before the next attempt.
    pub fn failed(&self, uid: &str) -> Duration {
        let mut failures = self.failures.lock().expect("failures lock");
        let count = failures.entry(uid.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        let factor = 2u32.saturating_pow(count.saturating_sub(1).min(16));
        (FIRST_RETRY * factor).min(MAX_RETRY)
    }

    /// Record a successful reconcile.
    pub fn succeeded(&self, uid: &str) {
        self.failures.lock().expect("failures lock").remove(uid);
    }

    /// How many tiers have observers (for tests and metrics).
    pub fn observed_tiers(&self) -> usize {
        self.observers.lock().expect("observers lock").len()
    }
}

/// A running reconcile (see [`Context::running`]).
pub struct Running<'a>(&'a Context);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// When the tick after a reconcile that began at `started` is due, given when the current one
/// was due (none before the first reconcile).
///
/// A periodic tick schedules the next one `interval` after it began: ticks are never closer than
/// the interval, so a hold of n intervals is met at the n-th tick, as in a backtest, and the
/// schedule drifts only by how late each wake-up is (not by how long a reconcile takes). A
/// reconcile before the tick is due (a change of the tier or of its ConfigMap) leaves it.
fn next_due(due: Option<Instant>, interval: Duration, started: Instant, now: Instant) -> Instant {
    match due {
        Some(due) if started < due && due <= now + interval => due,
        _ => {
            let mut due = started + interval;
            // A reconcile longer than the interval skips the ticks it missed.
            while due <= now {
                due += interval;
            }
            due
        }
    }
}

use super::memory::last_tick;

/// Whether the status we wrote at `ours` decided after `watched`.
fn lags(ours: Option<Timestamp>, watched: Option<&MemoryTierStatus>) -> bool {
    ours.is_some_and(|ours| Some(ours) > watched.and_then(last_tick))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PolicyMemory;

    #[test]
    fn ticks_keep_their_schedule() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let interval = s(30);
        // The first reconcile starts the schedule.
        let due = next_due(None, interval, t0, t0 + ms(300));
        assert_eq!(due, t0 + s(30));
        // A periodic tick that woke 5 ms late and took 300 ms: the next is 30 s after it began.
        let due = next_due(
            Some(due),
            interval,
            t0 + s(30) + ms(5),
            t0 + s(30) + ms(305),
        );
        assert_eq!(due, t0 + s(60) + ms(5));
        // A reconcile in between (the ConfigMap changed) does not move it.
        assert_eq!(
            next_due(Some(due), interval, t0 + s(41), t0 + s(42)),
            t0 + s(60) + ms(5)
        );
        // A reconcile longer than the interval skips the ticks it missed.
        assert_eq!(
            next_due(Some(due), interval, t0 + s(61), t0 + s(125)),
            t0 + s(151)
        );
        // A shorter interval (the spec changed) starts again from this reconcile.
        assert_eq!(
            next_due(Some(t0 + s(60)), s(5), t0 + s(41), t0 + s(42)),
            t0 + s(46)
        );
    }

    fn at(second: i64) -> MemoryTierStatus {
        let memory = PolicyMemory {
            last_tick: Some(Timestamp::from_second(second).unwrap()),
            ..PolicyMemory::default()
        };
        MemoryTierStatus {
            policy: Some(super::super::memory::store(&memory, None)),
            ..MemoryTierStatus::default()
        }
    }

    #[test]
    fn the_watch_lags_only_behind_a_later_write_of_ours() {
        let (old, new) = (at(10), at(11));
        // Our write is not in the cache yet.
        assert!(lags(last_tick(&new), Some(&old)));
        assert!(lags(last_tick(&new), None));
        assert!(lags(last_tick(&new), Some(&MemoryTierStatus::default())));
        // The cache caught up, or another replica decided since.
        assert!(!lags(last_tick(&new), Some(&new)));
        assert!(!lags(last_tick(&old), Some(&new)));
        // Nothing written by this replica.
        assert!(!lags(None, Some(&old)));
        assert!(!lags(None, None));
    }
}
