//! What every reconcile shares: the client, the Event recorder, metrics, leadership, and the
//! per-tier observers (which keep the previous scrape and Redis connections between reconciles).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;

use super::events::EventPublisher;
use super::leader::Leadership;
use super::telemetry::Metrics;
use crate::api::MemoryTierStatus;
use crate::observe::{ConfigError, ObserveConfig, Observer};

/// Shared state of the controller.
pub struct Context {
    pub client: Client,
    pub events: EventPublisher,
    pub metrics: Metrics,
    pub leadership: Leadership,
    /// For cache warming and webhooks.
    pub http: reqwest::Client,
    /// Observers by MemoryTier uid.
    observers: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Observer>>>>,
    /// Consecutive failed reconciles by MemoryTier uid, for the error backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The status this replica last wrote, by MemoryTier uid. A reconcile that follows at once
    /// (the ConfigMap it just rendered is watched too) may get the tier from the watch cache
    /// before the status write reaches it; deciding on that older memory would repeat the last
    /// step's actions (a second warm-up, a second remediation, duplicate Events).
    /// Boxed: a status is large, and a map's spare capacity holds its values inline.
    written: Mutex<HashMap<String, Box<MemoryTierStatus>>>,
}

/// The first retry after a failed reconcile; it doubles per consecutive failure.
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest wait between retries.
const MAX_RETRY: Duration = Duration::from_secs(300);

impl Context {
    pub fn new(
        client: Client,
        events: EventPublisher,
        metrics: Metrics,
        leadership: Leadership,
        http: reqwest::Client,
    ) -> Self {
        Context {
            client,
            events,
            metrics,
            leadership,
            http,
            observers: Mutex::default(),
            failures: Mutex::default(),
            written: Mutex::default(),
        }
    }

    /// Remember the status just written for `uid`.
    pub fn remember_status(&self, uid: &str, status: &MemoryTierStatus) {
        self.written
            .lock()
            .expect("written lock")
            .insert(uid.to_owned(), Box::new(status.clone()));
    }

    /// The latest status known for `uid`: the watch cache's, unless the one this replica wrote
    /// last decided later (its policy memory's last tick is newer), which means the watch has not
    /// caught up yet. Another replica's newer status always wins over an old one of ours.
    ///
    /// Our copy is kept even once the watch has caught up: a reconcile that was queued while the
    /// previous one ran may still get the tier as the cache held it then, without our write.
    pub fn freshest_status(
        &self,
        uid: &str,
        from_watch: Option<&MemoryTierStatus>,
    ) -> MemoryTierStatus {
        let written = self.written.lock().expect("written lock");
        fresher(from_watch, written.get(uid).map(|s| &**s))
            .cloned()
            .unwrap_or_default()
    }

    /// The tier's observer, created or updated for `config` (an unchanged config keeps its state).
    pub fn observer(
        &self,
        uid: &str,
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
            }
            return Ok(existing);
        }
        let observer = Arc::new(tokio::sync::Mutex::new(Observer::with_http(
            config,
            self.http.clone(),
        )?));
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

/// Whether `ours` decided after `watched` (the watch has not caught up with our write).
fn decided_later(ours: Option<&MemoryTierStatus>, watched: &MemoryTierStatus) -> bool {
    let tick = |s: &MemoryTierStatus| s.policy.as_ref().and_then(|p| p.last_tick);
    ours.is_some_and(|o| tick(o) > tick(watched))
}

/// Of the watch cache's status and the one written last, the one that decided later.
fn fresher<'a>(
    watched: Option<&'a MemoryTierStatus>,
    ours: Option<&'a MemoryTierStatus>,
) -> Option<&'a MemoryTierStatus> {
    match (watched, ours) {
        (Some(w), Some(o)) if decided_later(Some(o), w) => Some(o),
        (Some(w), _) => Some(w),
        (None, o) => o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PolicyMemory;
    use jiff::Timestamp;

    fn at(second: i64) -> MemoryTierStatus {
        MemoryTierStatus {
            policy: Some(PolicyMemory {
                last_tick: Some(Timestamp::from_second(second).unwrap()),
                ..PolicyMemory::default()
            }),
            ..MemoryTierStatus::default()
        }
    }

    #[test]
    fn the_status_that_decided_last_wins() {
        let (old, new) = (at(10), at(11));
        // The watch lags behind our own write: ours.
        assert_eq!(fresher(Some(&old), Some(&new)), Some(&new));
        // The watch caught up, or another replica decided since: the watch's.
        assert_eq!(fresher(Some(&new), Some(&new)), Some(&new));
        assert_eq!(fresher(Some(&new), Some(&old)), Some(&new));
        // Nothing written yet, or nothing in the cache yet.
        assert_eq!(fresher(Some(&old), None), Some(&old));
        assert_eq!(fresher(None, Some(&old)), Some(&old));
        let never = MemoryTierStatus::default();
        assert_eq!(fresher(Some(&never), Some(&old)), Some(&old));
    }
}
