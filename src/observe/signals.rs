//! The signals an observation holds, by the names `status.observed` uses for them.

use crate::api::{BreakerState, Observation};

/// An application signal: read from Prometheus or from a direct /metrics scrape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AppSignal {
    P50LatencyMs,
    P95LatencyMs,
    P99LatencyMs,
    ErrorRatePercent,
    CacheHitRatePercent,
    Mem0WriteSuccessPercent,
    BreakerState,
}

impl AppSignal {
    pub const ALL: [AppSignal; 7] = [
        AppSignal::P50LatencyMs,
        AppSignal::P95LatencyMs,
        AppSignal::P99LatencyMs,
        AppSignal::ErrorRatePercent,
        AppSignal::CacheHitRatePercent,
        AppSignal::Mem0WriteSuccessPercent,
        AppSignal::BreakerState,
    ];

    /// The field name in `status.observed` (and the key in its `unknown` map).
    pub fn name(self) -> &'static str {
        match self {
            AppSignal::P50LatencyMs => "p50LatencyMs",
            AppSignal::P95LatencyMs => "p95LatencyMs",
            AppSignal::P99LatencyMs => "p99LatencyMs",
            AppSignal::ErrorRatePercent => "errorRatePercent",
            AppSignal::CacheHitRatePercent => "cacheHitRatePercent",
            AppSignal::Mem0WriteSuccessPercent => "mem0WriteSuccessPercent",
            AppSignal::BreakerState => "breakerState",
        }
    }

    /// The quantile of a latency signal.
    pub fn quantile(self) -> Option<f64> {
        match self {
            AppSignal::P50LatencyMs => Some(0.5),
            AppSignal::P95LatencyMs => Some(0.95),
            AppSignal::P99LatencyMs => Some(0.99),
            _ => None,
        }
    }

    fn is_percent(self) -> bool {
        matches!(
            self,
            AppSignal::ErrorRatePercent
                | AppSignal::CacheHitRatePercent
                | AppSignal::Mem0WriteSuccessPercent
        )
    }
}

impl std::fmt::Display for AppSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Names of the Redis signals in `status.observed`.
pub mod redis_names {
    pub const USED_MEMORY_PERCENT: &str = "redisUsedMemoryPercent";
    pub const USED_MEMORY_BYTES: &str = "redisUsedMemoryBytes";
    pub const MAX_MEMORY_BYTES: &str = "redisMaxMemoryBytes";
    pub const EVICTED_KEYS: &str = "redisEvictedKeys";
    pub const KEYSPACE_HITS: &str = "redisKeyspaceHits";
    pub const KEYSPACE_MISSES: &str = "redisKeyspaceMisses";
    pub const RUN_ID: &str = "redisRunId";
    pub const UPTIME_SECONDS: &str = "redisUptimeSeconds";

    pub const ALL: [&str; 8] = [
        USED_MEMORY_PERCENT,
        USED_MEMORY_BYTES,
        MAX_MEMORY_BYTES,
        EVICTED_KEYS,
        KEYSPACE_HITS,
        KEYSPACE_MISSES,
        RUN_ID,
        UPTIME_SECONDS,
    ];
}

/// What reading one signal gave: a value, or why there is none.
pub type Reading = Result<f64, String>;

/// Check a raw value before it becomes a signal: NaN, infinities and negative values are unknown.
pub fn check_value(signal: AppSignal, value: f64) -> Reading {
    if value.is_nan() {
        return Err(if signal.quantile().is_some() {
            "value is NaN (no requests observed in the window)".to_owned()
        } else {
            "value is NaN (nothing counted in the window: 0 / 0)".to_owned()
        });
    }
    if value.is_infinite() {
        return Err(format!(
            "value is {}Inf{}",
            if value > 0.0 { "+" } else { "-" },
            if signal.quantile().is_some() {
                " (the quantile falls in the +Inf bucket, or the histogram has no +Inf bucket)"
            } else {
                ""
            }
        ));
    }
    if value < 0.0 {
        return Err(format!("value {value} is negative"));
    }
    if signal.is_percent() && value > 100.0 + 1e-9 {
        return Err(format!("value {value} is above 100 percent"));
    }
    Ok(value)
}

/// Store one application signal (or why it is unknown) into an observation.
pub fn set_app_signal(obs: &mut Observation, signal: AppSignal, reading: Reading) {
    let value = match reading.and_then(|v| check_value(signal, v)) {
        Ok(v) => v,
        Err(reason) => {
            obs.unknown.insert(signal.name().to_owned(), reason);
            return;
        }
    };
    match signal {
        AppSignal::P50LatencyMs => obs.p50_latency_ms = Some(value),
        AppSignal::P95LatencyMs => obs.p95_latency_ms = Some(value),
        AppSignal::P99LatencyMs => obs.p99_latency_ms = Some(value),
        AppSignal::ErrorRatePercent => obs.error_rate_percent = Some(value),
        AppSignal::CacheHitRatePercent => obs.cache_hit_rate_percent = Some(value),
        AppSignal::Mem0WriteSuccessPercent => obs.mem0_write_success_percent = Some(value),
        AppSignal::BreakerState => match BreakerState::from_gauge(value) {
            Some(state) => obs.breaker_state = Some(state),
            None => {
                obs.unknown.insert(
                    signal.name().to_owned(),
                    format!("breaker gauge {value} is not 0 (closed), 1 (open) or 2 (half-open)"),
                );
            }
        },
    }
}

/// Mark every application signal unknown with the same reason.
pub fn set_all_app_unknown(obs: &mut Observation, reason: &str) {
    for signal in AppSignal::ALL {
        set_app_signal(obs, signal, Err(reason.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_values_become_unknown_with_a_reason() {
        let mut obs = Observation::default();
        set_app_signal(&mut obs, AppSignal::P50LatencyMs, Ok(f64::NAN));
        set_app_signal(&mut obs, AppSignal::P95LatencyMs, Ok(f64::INFINITY));
        set_app_signal(&mut obs, AppSignal::P99LatencyMs, Ok(-1.0));
        set_app_signal(&mut obs, AppSignal::ErrorRatePercent, Ok(250.0));
        set_app_signal(&mut obs, AppSignal::BreakerState, Ok(3.0));
        set_app_signal(&mut obs, AppSignal::CacheHitRatePercent, Ok(97.5));
        assert_eq!(obs.p50_latency_ms, None);
        assert!(obs.unknown["p50LatencyMs"].contains("NaN"));
        assert!(obs.unknown["p95LatencyMs"].contains("+Inf"));
        assert!(obs.unknown["p99LatencyMs"].contains("negative"));
        assert!(obs.unknown["errorRatePercent"].contains("above 100"));
        assert!(obs.unknown["breakerState"].contains("not 0"));
        assert_eq!(obs.cache_hit_rate_percent, Some(97.5));
        assert!(!obs.unknown.contains_key("cacheHitRatePercent"));
    }

    #[test]
    fn breaker_gauge_maps_to_states() {
        for (gauge, state) in [
            (0.0, BreakerState::Closed),
            (1.0, BreakerState::Open),
            (2.0, BreakerState::HalfOpen),
        ] {
            let mut obs = Observation::default();
            set_app_signal(&mut obs, AppSignal::BreakerState, Ok(gauge));
            assert_eq!(obs.breaker_state, Some(state));
        }
    }
}
