//! What every reconcile shares: the client, the Event recorder, metrics, leadership, and the
//! per-tier observers (which keep the previous scrape and Redis connections between reconciles).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::runtime::events::Recorder;

use super::leader::Leadership;
use super::telemetry::Metrics;
use crate::observe::{ConfigError, ObserveConfig, Observer};

/// Shared state of the controller.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub leadership: Leadership,
    /// For cache warming and webhooks.
    pub http: reqwest::Client,
    /// Observers by MemoryTier uid.
    observers: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Observer>>>>,
    /// Consecutive failed reconciles by MemoryTier uid, for the error backoff.
    failures: Mutex<HashMap<String, u32>>,
}

/// The first retry after a failed reconcile; it doubles per consecutive failure.
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest wait between retries.
const MAX_RETRY: Duration = Duration::from_secs(300);

impl Context {
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: Metrics,
        leadership: Leadership,
        http: reqwest::Client,
    ) -> Self {
        Context {
            client,
            recorder,
            metrics,
            leadership,
            http,
            observers: Mutex::default(),
            failures: Mutex::default(),
        }
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
