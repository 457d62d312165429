//! How a raw reading becomes a signal's value, or the reason the signal is unknown.

use std::collections::BTreeMap;

use super::queries::{NoCohortQuery, Scope};
use crate::api::signals::{Cohorts, Unit};
use crate::api::{BreakerState, CohortLabel, Observation, Signal, SignalValue};

/// What reading one application signal gave: a value, or why there is none.
pub type Reading = Result<f64, String>;

/// The application's readings, for the whole service and for each cohort.
pub type Readings = BTreeMap<(Scope, Signal), Reading>;

/// Check a raw value before it becomes a signal: NaN, infinities and negative values are unknown.
pub fn check_value(signal: Signal, value: f64) -> Reading {
    let latency = signal.unit() == Unit::Milliseconds;
    if value.is_nan() {
        return Err(if latency {
            "value is NaN (no requests observed in the window)".to_owned()
        } else {
            "value is NaN (nothing counted in the window: 0 / 0)".to_owned()
        });
    }
    if value.is_infinite() {
        return Err(format!(
            "value is {}Inf{}",
            if value > 0.0 { "+" } else { "-" },
            if latency {
                " (the quantile falls in the +Inf bucket, or the histogram has no +Inf bucket)"
            } else {
                ""
            }
        ));
    }
    if value < 0.0 {
        return Err(format!("value {value} is negative"));
    }
    if signal.unit().is_percent() && value > 100.0 + 1e-9 {
        return Err(format!("value {value} is above 100 percent"));
    }
    Ok(value)
}

/// Store one application signal (or why it is unknown) into an observation.
pub fn set_app_signal(obs: &mut Observation, signal: Signal, reading: Reading) {
    let value = reading
        .and_then(|v| check_value(signal, v))
        .and_then(|v| match signal.unit() {
            // The breaker's gauge encoding: 0 closed, 1 open, 2 half-open.
            Unit::State => BreakerState::from_gauge(v)
                .map(SignalValue::Breaker)
                .ok_or_else(|| {
                    format!("breaker gauge {v} is not 0 (closed), 1 (open) or 2 (half-open)")
                }),
            _ => Ok(SignalValue::Number(v)),
        })
        .and_then(|v| obs.set(signal, Some(v)));
    if let Err(reason) = value {
        obs.unknown.insert(signal.name().to_owned(), reason);
    }
}

/// Store the application's readings into an observation: the whole service's, and each cohort's
/// when there are any. Without a reading of either cohort's requests, the application's metrics
/// carry no cohort label: the observation has no cohorts, and `without_cohorts` says so.
pub fn set_readings(
    obs: &mut Observation,
    readings: Readings,
    label: &CohortLabel,
    queries: &impl NoCohortQuery,
) {
    let mut cohorts = Cohorts::default();
    let mut any_cohort = false;
    for ((scope, signal), reading) in readings {
        match scope {
            Scope::Service => set_app_signal(obs, signal, reading),
            Scope::Cohort(cohort) => {
                let target = cohorts.get_mut(cohort);
                match reading.and_then(|v| check_value(signal, v)) {
                    Ok(v) => {
                        any_cohort |= signal == Signal::Requests;
                        if let Err(e) = target.set(signal, Some(SignalValue::Number(v))) {
                            target.unknown.insert(signal.name().to_owned(), e);
                        }
                    }
                    Err(reason) => {
                        target.unknown.insert(signal.name().to_owned(), reason);
                    }
                }
            }
        }
    }
    for signal in Signal::app().filter(|s| s.per_cohort()) {
        if let Some(why) = queries.no_cohort_query(signal) {
            for c in [&mut cohorts.canary, &mut cohorts.stable] {
                c.unknown.insert(signal.name().to_owned(), why.to_owned());
            }
        }
    }
    if any_cohort {
        obs.cohorts = Some(cohorts);
    } else {
        obs.without_cohorts = Some(format!(
            "no requests labelled {}={:?} or {:?} (spec.canary.cohortLabel): the rollback criteria judge the whole service",
            label.name, label.canary, label.stable
        ));
    }
}

/// Mark every application signal unknown with the same reason.
pub fn set_all_app_unknown(obs: &mut Observation, reason: &str) {
    for signal in Signal::app() {
        set_app_signal(obs, signal, Err(reason.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_values_become_unknown_with_a_reason() {
        let mut obs = Observation::default();
        set_app_signal(&mut obs, Signal::P50LatencyMs, Ok(f64::NAN));
        set_app_signal(&mut obs, Signal::P95LatencyMs, Ok(f64::INFINITY));
        set_app_signal(&mut obs, Signal::P99LatencyMs, Ok(-1.0));
        set_app_signal(&mut obs, Signal::ErrorRatePercent, Ok(250.0));
        set_app_signal(&mut obs, Signal::BreakerState, Ok(3.0));
        set_app_signal(&mut obs, Signal::CacheHitRatePercent, Ok(97.5));
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
            set_app_signal(&mut obs, Signal::BreakerState, Ok(gauge));
            assert_eq!(obs.breaker_state, Some(state));
        }
    }
}
