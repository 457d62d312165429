//! Synthetic history for backtests: an application and its Redis as Prometheus would have
//! scraped them, written as OpenMetrics text with timestamps for `promtool tsdb
//! create-blocks-from openmetrics`.
//!
//! The application exposes the metrics the built-in queries read (docs/metrics.md): the request
//! histogram (requests take 40 ms, 0.9 s or 1.5 s), requests by status, cache hits and
//! misses, mem0 writes by outcome and the breaker gauge, with `job="app"`. Redis is seen through
//! redis_exporter's metric names with `job="redis"`. Counters start high, so Prometheus's `rate()`
//! never limits its extrapolation at zero and a ratio of two rates is the ratio of the increases.
//! Shared with the backtest benchmark (benches/backtest.rs).

#![allow(dead_code)]

use std::fmt::Write as _;

/// What the application does at a moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct App {
    pub requests_per_second: f64,
    /// Share of requests that take 1.5 s.
    pub slow: f64,
    /// Share of requests that take 0.9 s (the rest take 40 ms).
    pub medium: f64,
    /// Share of requests answered 500.
    pub errors: f64,
    /// Share of cache lookups (one per request) that hit.
    pub hit_rate: f64,
    pub mem0_writes_per_second: f64,
    /// Share of mem0 writes that succeed.
    pub mem0_success: f64,
    /// 0 closed, 1 open, 2 half-open.
    pub breaker: u8,
}

impl Default for App {
    fn default() -> Self {
        App {
            requests_per_second: 20.0,
            slow: 0.0,
            medium: 0.0,
            errors: 0.005,
            hit_rate: 0.97,
            mem0_writes_per_second: 5.0,
            mem0_success: 0.999,
            breaker: 0,
        }
    }
}

/// What Redis reports at a moment.
#[derive(Clone, Debug, PartialEq)]
pub struct Redis {
    pub used_bytes: u64,
    pub max_bytes: u64,
    pub evictions_per_second: f64,
    pub run_id: String,
    /// When this Redis started (Unix seconds).
    pub started: i64,
}

impl Redis {
    pub fn at_percent(percent: f64) -> Self {
        let max = 1 << 30;
        Redis {
            used_bytes: (max as f64 * percent / 100.0) as u64,
            max_bytes: max,
            evictions_per_second: 0.0,
            run_id: "5eed000000000000000000000000000000000001".into(),
            started: 1_700_000_000,
        }
    }
}

/// A history: scrapes every `scrape` seconds from `start` to `end` (Unix seconds, both
/// included), each source present when its function says so.
pub struct Model<'a> {
    pub start: i64,
    pub end: i64,
    pub scrape: i64,
    pub app: &'a dyn Fn(i64) -> Option<App>,
    pub redis: &'a dyn Fn(i64) -> Option<Redis>,
}

pub const LE: [&str; 8] = ["0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"];
const FAST_SECONDS: f64 = 0.04;
const MEDIUM_SECONDS: f64 = 0.9;
const SLOW_SECONDS: f64 = 1.5;
const COUNTER_START: f64 = 1_000_000.0;

impl Model<'_> {
    /// Every scrape time.
    pub fn scrapes(&self) -> impl Iterator<Item = i64> + '_ {
        (self.start..=self.end).step_by(self.scrape as usize)
    }

    /// The application's scrapes in `(from, to]`.
    pub fn app_samples(&self, from: i64, to: i64) -> Vec<i64> {
        self.scrapes()
            .filter(|t| *t > from && *t <= to && (self.app)(*t).is_some())
            .collect()
    }

    /// The share of `f(app)` over what Prometheus's `rate(…[window])` at `t` sees: the
    /// increments of the scrapes in `(t - window, t]` after the first of them, each weighted by
    /// `weight(app)` (e.g. requests per second). None with fewer than two samples.
    pub fn windowed(
        &self,
        t: i64,
        window: i64,
        weight: impl Fn(&App) -> f64,
        share: impl Fn(&App) -> f64,
    ) -> Option<f64> {
        let samples = self.app_samples(t - window, t);
        if samples.len() < 2 {
            return None;
        }
        let (mut part, mut all) = (0.0, 0.0);
        for pair in samples.windows(2) {
            // The counters grow by what happened since the previous scrape of the app.
            let app = (self.app)(pair[1]).expect("a sample of the app");
            let n = weight(&app) * (pair[1] - pair[0]) as f64;
            part += n * share(&app);
            all += n;
        }
        Some(part / all)
    }

    /// The OpenMetrics text, ending with `# EOF`.
    pub fn openmetrics(&self) -> String {
        let mut families: Vec<(String, String)> = Vec::new();
        let mut family = |name: &str, kind: &str| -> usize {
            families.push((format!("# TYPE {name} {kind}\n"), String::new()));
            families.len() - 1
        };
        let histogram = family("http_request_duration_seconds", "histogram");
        let requests = family("http_requests", "counter");
        let hits = family("cache_hits", "counter");
        let misses = family("cache_misses", "counter");
        let mem0 = family("mem0_writes", "counter");
        let breaker = family("circuit_breaker_state", "gauge");
        let used = family("redis_memory_used_bytes", "gauge");
        let max = family("redis_memory_max_bytes", "gauge");
        let evicted = family("redis_evicted_keys", "counter");
        let khits = family("redis_keyspace_hits", "counter");
        let kmisses = family("redis_keyspace_misses", "counter");
        let uptime = family("redis_uptime_in_seconds", "gauge");
        let info = family("redis_instance_info", "gauge");

        let app_labels = "job=\"app\",instance=\"app:8000\"";
        let redis_labels = "job=\"redis\",instance=\"redis:6379\"";
        let mut buckets = [COUNTER_START; 8];
        let (mut count, mut sum) = (COUNTER_START, 0.0);
        let (mut ok, mut failed) = (COUNTER_START, COUNTER_START);
        let (mut hit, mut miss) = (COUNTER_START, COUNTER_START);
        let (mut written, mut lost) = (COUNTER_START, COUNTER_START);
        let mut evictions = 0.0;
        let mut run: Option<String> = None;
        // Counters keep counting between scrapes, seen or not.
        let (mut last_app, mut last_redis) = (self.start - self.scrape, self.start - self.scrape);
        for t in self.scrapes() {
            if let Some(app) = (self.app)(t) {
                let dt = (t - last_app) as f64;
                last_app = t;
                let n = app.requests_per_second * dt;
                let slow = n * app.slow;
                let medium = n * app.medium;
                let fast = n - slow - medium;
                for (i, le) in LE.iter().enumerate() {
                    let bound: f64 = le.parse().unwrap_or(f64::INFINITY);
                    for (requests, seconds) in [
                        (fast, FAST_SECONDS),
                        (medium, MEDIUM_SECONDS),
                        (slow, SLOW_SECONDS),
                    ] {
                        if bound >= seconds {
                            buckets[i] += requests;
                        }
                    }
                }
                count += n;
                sum += fast * FAST_SECONDS + medium * MEDIUM_SECONDS + slow * SLOW_SECONDS;
                failed += n * app.errors;
                ok += n * (1.0 - app.errors);
                hit += n * app.hit_rate;
                miss += n * (1.0 - app.hit_rate);
                let w = app.mem0_writes_per_second * dt;
                written += w * app.mem0_success;
                lost += w * (1.0 - app.mem0_success);
                let out = &mut families[histogram].1;
                for (i, le) in LE.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "http_request_duration_seconds_bucket{{{app_labels},le=\"{le}\"}} {:.3} {t}",
                        buckets[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_count{{{app_labels}}} {count:.3} {t}"
                );
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_sum{{{app_labels}}} {sum:.3} {t}"
                );
                let out = &mut families[requests].1;
                let _ = writeln!(
                    out,
                    "http_requests_total{{{app_labels},status=\"200\"}} {ok:.3} {t}"
                );
                let _ = writeln!(
                    out,
                    "http_requests_total{{{app_labels},status=\"500\"}} {failed:.3} {t}"
                );
                let _ = writeln!(
                    families[hits].1,
                    "cache_hits_total{{{app_labels}}} {hit:.3} {t}"
                );
                let _ = writeln!(
                    families[misses].1,
                    "cache_misses_total{{{app_labels}}} {miss:.3} {t}"
                );
                let out = &mut families[mem0].1;
                let _ = writeln!(
                    out,
                    "mem0_writes_total{{{app_labels},outcome=\"success\"}} {written:.3} {t}"
                );
                let _ = writeln!(
                    out,
                    "mem0_writes_total{{{app_labels},outcome=\"failure\"}} {lost:.3} {t}"
                );
                let _ = writeln!(
                    families[breaker].1,
                    "circuit_breaker_state{{{app_labels},breaker=\"mem0\"}} {} {t}",
                    app.breaker
                );
            }
            if let Some(redis) = (self.redis)(t) {
                let dt = (t - last_redis) as f64;
                last_redis = t;
                if run.as_deref() != Some(redis.run_id.as_str()) {
                    if run.is_some() {
                        evictions = 0.0;
                    }
                    run = Some(redis.run_id.clone());
                }
                evictions += redis.evictions_per_second * dt;
                let _ = writeln!(
                    families[used].1,
                    "redis_memory_used_bytes{{{redis_labels}}} {} {t}",
                    redis.used_bytes
                );
                let _ = writeln!(
                    families[max].1,
                    "redis_memory_max_bytes{{{redis_labels}}} {} {t}",
                    redis.max_bytes
                );
                let _ = writeln!(
                    families[evicted].1,
                    "redis_evicted_keys_total{{{redis_labels}}} {} {t}",
                    evictions.floor()
                );
                let _ = writeln!(
                    families[khits].1,
                    "redis_keyspace_hits_total{{{redis_labels}}} {hit:.0} {t}"
                );
                let _ = writeln!(
                    families[kmisses].1,
                    "redis_keyspace_misses_total{{{redis_labels}}} {miss:.0} {t}"
                );
                let _ = writeln!(
                    families[uptime].1,
                    "redis_uptime_in_seconds{{{redis_labels}}} {} {t}",
                    (t - redis.started).max(0)
                );
                let _ = writeln!(
                    families[info].1,
                    "redis_instance_info{{{redis_labels},run_id=\"{}\",role=\"master\"}} 1 {t}",
                    redis.run_id
                );
            }
        }
        let mut text = String::new();
        for (head, body) in families {
            if !body.is_empty() {
                text.push_str(&head);
                text.push_str(&body);
            }
        }
        text.push_str("# EOF\n");
        text
    }
}
