//! An application whose metrics move: a thread adds traffic to an [`Exporter`] every tick,
//! shaped by a [`Profile`] the test changes, so rates and quantiles derived from consecutive
//! scrapes (or by Prometheus) follow the profile.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::exporter::{AppMetrics, Exporter};

/// The histogram bounds the live application reports, in seconds.
const BOUNDS: [f64; 10] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// How the application behaves right now.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// Every request takes about this long (its histogram bucket is the one holding it).
    pub latency_ms: f64,
    /// Failed requests, percent.
    pub error_percent: f64,
    /// Cache hits, percent.
    pub hit_percent: f64,
    /// Successful mem0 writes, percent.
    pub mem0_success_percent: f64,
    /// 0 closed, 1 open, 2 half-open.
    pub breaker: f64,
}

impl Default for Profile {
    /// A healthy application: 60 ms, no errors, 99 % hits, every mem0 write ok, breaker closed.
    fn default() -> Self {
        Profile {
            latency_ms: 60.0,
            error_percent: 0.0,
            hit_percent: 99.0,
            mem0_success_percent: 100.0,
            breaker: 0.0,
        }
    }
}

pub struct LiveApp {
    exporter: Arc<Exporter>,
    profile: Arc<Mutex<Profile>>,
    stop: Arc<Mutex<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl LiveApp {
    /// Start serving /metrics, adding 1,000 requests per tick.
    pub fn start(tick: Duration) -> Self {
        let exporter = Arc::new(Exporter::start(&AppMetrics::default()));
        let profile = Arc::new(Mutex::new(Profile::default()));
        let stop = Arc::new(Mutex::new(false));
        let thread = {
            let (exporter, profile, stop) = (exporter.clone(), profile.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut metrics = AppMetrics {
                    duration_buckets: BOUNDS.iter().map(|b| (*b, 0)).collect(),
                    ..AppMetrics::default()
                };
                while !*stop.lock().unwrap() {
                    let p = profile.lock().unwrap().clone();
                    add_traffic(&mut metrics, &p, 1000);
                    exporter.set(&metrics);
                    std::thread::sleep(tick);
                }
            })
        };
        LiveApp {
            exporter,
            profile,
            stop,
            thread: Some(thread),
        }
    }

    pub fn set(&self, profile: Profile) {
        *self.profile.lock().unwrap() = profile;
    }

    pub fn update(&self, change: impl FnOnce(&mut Profile)) {
        change(&mut self.profile.lock().unwrap());
    }

    pub fn url(&self) -> String {
        self.exporter.url()
    }

    pub fn target(&self) -> String {
        self.exporter.target()
    }
}

impl Drop for LiveApp {
    fn drop(&mut self) {
        *self.stop.lock().unwrap() = true;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn add_traffic(m: &mut AppMetrics, p: &Profile, requests: u64) {
    let seconds = p.latency_ms / 1000.0;
    for (bound, count) in &mut m.duration_buckets {
        if seconds <= *bound {
            *count += requests;
        }
    }
    // Requests slower than the largest bound only count in +Inf, which `render` derives from the
    // largest bucket: keep them there by adding to nothing smaller.
    m.duration_sum += seconds * requests as f64;
    let errors = (requests as f64 * p.error_percent / 100.0).round() as u64;
    *m.requests.entry("500".into()).or_insert(0) += errors;
    *m.requests.entry("200".into()).or_insert(0) += requests - errors;
    let hits = (requests as f64 * p.hit_percent / 100.0).round() as u64;
    *m.cache_hits.entry("1".into()).or_insert(0) += hits;
    *m.cache_misses.entry("1".into()).or_insert(0) += requests - hits;
    let ok = (requests as f64 * p.mem0_success_percent / 100.0).round() as u64;
    m.mem0_success += ok;
    m.mem0_failure += requests - ok;
    m.breakers.insert("mem0".into(), p.breaker);
}
