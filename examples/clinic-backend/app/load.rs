//! A bounded load generator: a fixed request rate for a fixed time, clinics picked with a
//! Zipf-like skew towards the hot ones, at most `concurrency` requests in flight. A request that
//! would exceed the limit is skipped and counted, never queued, so the generator's own memory
//! stays flat however slow the target gets. Only loopback targets are accepted.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::RngExt;
use serde::Serialize;
use tokio::sync::Semaphore;

/// Upper bounds that keep one run bounded.
pub const MAX_RPS: u32 = 10_000;
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
pub const MAX_CONCURRENCY: usize = 4096;
pub const MAX_CLINICS: u32 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("--target {0:?}: {1}")]
    Target(String, String),
    #[error(
        "--clinics {0:?}: expected N or FIRST-LAST with 1 ≤ FIRST ≤ LAST, at most {MAX_CLINICS} clinics"
    )]
    Clinics(String),
    #[error("--hot {0:?}: expected a comma-separated list of clinic ids")]
    Hot(String),
    #[error("{0}")]
    Bound(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base URL of the service, e.g. `http://127.0.0.1:8000`.
    pub target: reqwest::Url,
    pub rps: u32,
    pub duration: Duration,
    pub clinics: RangeInclusive<u32>,
    /// Hottest first.
    pub hot: Vec<u32>,
    /// Zipf exponent over the ranking (hot clinics first, then the others by id).
    pub skew: f64,
    pub concurrency: usize,
    pub timeout: Duration,
    /// Share of requests that ask for a provider instead of the clinic.
    pub provider_share: f64,
}

/// Accept only loopback hosts: the generator must never load anything but a local demo.
pub fn loopback_target(text: &str) -> Result<reqwest::Url, LoadError> {
    let bad = |why: &str| LoadError::Target(text.to_owned(), why.to_owned());
    let url = reqwest::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
    if url.scheme() != "http" {
        return Err(bad("the scheme must be http"));
    }
    let host = url.host_str().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(bad(
            "only loopback targets (127.0.0.0/8, ::1, localhost) are allowed",
        ));
    }
    Ok(url)
}

pub fn parse_clinics(text: &str) -> Result<RangeInclusive<u32>, LoadError> {
    let bad = || LoadError::Clinics(text.to_owned());
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => ("1", text.trim()),
    };
    let first: u32 = first.parse().map_err(|_| bad())?;
    let last: u32 = last.parse().map_err(|_| bad())?;
    if first == 0 || first > last || last - first >= MAX_CLINICS {
        return Err(bad());
    }
    Ok(first..=last)
}

pub fn parse_hot(text: &str) -> Result<Vec<u32>, LoadError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|p| {
            p.trim()
                .parse::<u32>()
                .map_err(|_| LoadError::Hot(text.to_owned()))
        })
        .collect()
}

impl LoadConfig {
    pub fn validate(&self) -> Result<(), LoadError> {
        let bound = |m: String| Err(LoadError::Bound(m));
        if self.rps == 0 || self.rps > MAX_RPS {
            return bound(format!("--rps {}: expected 1 to {MAX_RPS}", self.rps));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return bound(format!(
                "--duration {:?}: expected more than 0, at most 24h",
                self.duration
            ));
        }
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return bound(format!(
                "--concurrency {}: expected 1 to {MAX_CONCURRENCY}",
                self.concurrency
            ));
        }
        if !(0.0..=1.0).contains(&self.provider_share) {
            return bound(format!(
                "--provider-share {}: expected 0 to 1",
                self.provider_share
            ));
        }
        if !(self.skew.is_finite() && self.skew >= 0.0) {
            return bound(format!("--skew {}: expected a number ≥ 0", self.skew));
        }
        Ok(())
    }
}

/// Picks clinic ids: rank r (1-based) has weight 1 / r^skew.
pub struct ClinicPicker {
    ranking: Vec<u32>,
    cumulative: Vec<f64>,
}

impl ClinicPicker {
    pub fn new(clinics: &RangeInclusive<u32>, hot: &[u32], skew: f64) -> Self {
        let mut ranking: Vec<u32> = Vec::new();
        for id in hot {
            if !ranking.contains(id) {
                ranking.push(*id);
            }
        }
        ranking.extend(clinics.clone().filter(|id| !hot.contains(id)));
        let mut total = 0.0;
        let cumulative = (1..=ranking.len())
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(skew);
                total
            })
            .collect();
        ClinicPicker {
            ranking,
            cumulative,
        }
    }

    pub fn pick(&self, uniform: f64) -> u32 {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let target = uniform * total;
        let index = self.cumulative.partition_point(|c| *c <= target);
        self.ranking[index.min(self.ranking.len() - 1)]
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub planned: u64,
    pub sent: u64,
    pub ok: u64,
    /// Non-2xx answers by status code.
    pub errors_by_status: BTreeMap<u16, u64>,
    /// No answer: connection refused, reset, or the per-request timeout.
    pub transport_errors: u64,
    /// Not sent because `concurrency` requests were already in flight.
    pub skipped: u64,
    pub elapsed_seconds: f64,
    pub achieved_rps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Requests per clinic, the 10 most requested.
    pub top_clinics: Vec<(u32, u64)>,
}

impl Summary {
    pub fn errors(&self) -> u64 {
        self.errors_by_status.values().sum::<u64>() + self.transport_errors
    }

    pub fn text(&self) -> String {
        let errors: Vec<String> = self
            .errors_by_status
            .iter()
            .map(|(s, n)| format!("{s}×{n}"))
            .collect();
        format!(
            "requests {} of {} planned in {:.1}s ({:.1}/s), ok {}, errors {} [{}], transport errors {}, skipped {}\n\
             latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n\
             top clinics {:?}",
            self.sent,
            self.planned,
            self.elapsed_seconds,
            self.achieved_rps,
            self.ok,
            self.errors(),
            errors.join(", "),
            self.transport_errors,
            self.skipped,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.max_ms,
            self.top_clinics
        )
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors_by_status: BTreeMap<u16, u64>,
    transport_errors: u64,
    by_clinic: BTreeMap<u32, u64>,
}

/// Run the load and summarise it.
pub async fn run(config: LoadConfig) -> Result<Summary, LoadError> {
    config.validate()?;
    tierguard::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .pool_max_idle_per_host(config.concurrency)
        .build()
        .map_err(|e| LoadError::Client(e.to_string()))?;
    let picker = ClinicPicker::new(&config.clinics, &config.hot, config.skew);
    let planned = (config.rps as f64 * config.duration.as_secs_f64())
        .round()
        .max(1.0) as u64;
    let slots = Arc::new(Semaphore::new(config.concurrency));
    // Latencies in microseconds, up to an hour, 3 significant figures: a few hundred KiB at most.
    let latencies = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
    ));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let base = config.target.as_str().trim_end_matches('/').to_owned();

    let period = Duration::from_secs_f64(1.0 / config.rps as f64);
    let started = Instant::now();
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0u64;
    let mut skipped = 0u64;
    for _ in 0..planned {
        ticker.tick().await;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            skipped += 1;
            continue;
        };
        let (clinic, path) = {
            let mut rng = rand::rng();
            let clinic = picker.pick(rng.random::<f64>());
            let path = if rng.random::<f64>() < config.provider_share {
                let provider = rng.random_range(1..=5);
                format!("{base}/clinics/{clinic}/providers/{provider}")
            } else {
                format!("{base}/clinics/{clinic}")
            };
            (clinic, path)
        };
        sent += 1;
        let client = client.clone();
        let latencies = latencies.clone();
        let tally = tally.clone();
        tokio::spawn(async move {
            let begun = Instant::now();
            let result = client.get(&path).send().await;
            // Read the body so the connection is reused and the timing covers the whole answer.
            let status = match result {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body = response.bytes().await;
                    body.ok().map(|_| status)
                }
                Err(_) => None,
            };
            let micros = begun.elapsed().as_micros() as u64;
            let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
            *tally.by_clinic.entry(clinic).or_default() += 1;
            match status {
                Some(s) if (200..300).contains(&s) => {
                    tally.ok += 1;
                    let _ = latencies
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .record(micros.max(1));
                }
                Some(s) => {
                    *tally.errors_by_status.entry(s).or_default() += 1;
                    let _ = latencies
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .record(micros.max(1));
                }
                None => tally.transport_errors += 1,
            }
            drop(slot);
        });
    }
    // Wait for the requests in flight (each ends within the timeout).
    let _all = slots
        .acquire_many(config.concurrency as u32)
        .await
        .expect("the semaphore is never closed");
    let elapsed = started.elapsed().as_secs_f64();

    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    let latencies = latencies.lock().unwrap_or_else(|p| p.into_inner());
    let ms = |q: f64| {
        if latencies.is_empty() {
            0.0
        } else {
            latencies.value_at_quantile(q) as f64 / 1000.0
        }
    };
    let mut top: Vec<(u32, u64)> = tally.by_clinic.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(10);
    Ok(Summary {
        planned,
        sent,
        ok: tally.ok,
        errors_by_status: tally.errors_by_status,
        transport_errors: tally.transport_errors,
        skipped,
        elapsed_seconds: elapsed,
        achieved_rps: sent as f64 / elapsed.max(1e-9),
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        max_ms: if latencies.is_empty() {
            0.0
        } else {
            latencies.max() as f64 / 1000.0
        },
        top_clinics: top,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_clinics_are_picked_most() {
        let picker = ClinicPicker::new(&(1..=50), &[1, 2, 3, 5, 8], 1.0);
        let mut counts = BTreeMap::<u32, u32>::new();
        for i in 0..10_000 {
            let u = (i as f64 + 0.5) / 10_000.0;
            *counts.entry(picker.pick(u)).or_default() += 1;
        }
        let hot: u32 = [1, 2, 3, 5, 8].iter().map(|c| counts[c]).sum();
        // H(5) / H(50) ≈ 2.283 / 4.499 ≈ 50.7 % of requests go to the 5 hot clinics.
        assert!((4900..=5200).contains(&hot), "{hot}");
        assert!(counts[&1] > counts[&2] && counts[&2] > counts[&3]);
        assert!(counts.keys().all(|c| (1..=50).contains(c)));
        assert_eq!(counts.len(), 50);
    }

    #[test]
    fn only_loopback_targets() {
        assert!(loopback_target("http://127.0.0.1:8000").is_ok());
        assert!(loopback_target("http://localhost:1").is_ok());
        assert!(loopback_target("http://[::1]:1").is_ok());
        let err = loopback_target("http://10.0.0.1:80")
            .unwrap_err()
            .to_string();
        assert!(err.contains("only loopback"), "{err}");
        assert!(loopback_target("http://example.com").is_err());
        assert!(loopback_target("https://127.0.0.1").is_err());
    }

    #[test]
    fn clinic_ranges_and_hot_lists() {
        assert_eq!(parse_clinics("1-50").unwrap(), 1..=50);
        assert_eq!(parse_clinics("20").unwrap(), 1..=20);
        assert!(parse_clinics("0-5").is_err());
        assert!(parse_clinics("9-5").is_err());
        assert!(parse_clinics("1-1000000").is_err());
        assert_eq!(parse_hot("1, 2,3").unwrap(), vec![1, 2, 3]);
        assert!(parse_hot("1,x").is_err());
    }
}
