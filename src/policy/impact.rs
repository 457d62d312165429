//! What an incident costs, measured at every reading while it is open (the rollback runbook's
//! phase 4 Impact section: affected users, failed requests).
//!
//! The `requests` signal counts requests over `metrics.rateWindow`, so each reading gives a
//! request rate; times the time since the previous reading it is the traffic of that stretch.
//! The canary rollback and the breaker hit the canary's share of it (the path that takes the new
//! code and calls mem0: the canary cohort's own requests when cohorts are observed, the effective
//! CANARY_SAMPLE_RATE otherwise); a stampede and Redis memory hit the whole service. Failed
//! requests are the affected traffic's error rate times its requests. A gap between readings
//! longer than two intervals (the controller was down) is counted as two intervals: what was not
//! seen is not made up. Each signal that went past its runbook threshold keeps its worst value.

use super::effective::CANARY_SAMPLE_RATE;
use super::signals::num;
use super::window::elapsed;
use super::{Step, mitigations};
use crate::api::{
    ImpactScope, IncidentImpact, MemoryLevel, OpenIncident, Peak, PolicyMemory, Runbook, Signal,
    TimelineEntry,
};

/// Which traffic an incident of `runbook` hits.
pub fn scope(runbook: Runbook) -> ImpactScope {
    match runbook {
        Runbook::CanaryRollback | Runbook::CircuitBreakerOpen => ImpactScope::Canary,
        Runbook::CacheStampede | Runbook::RedisMemory => ImpactScope::Service,
    }
}

/// What one reading adds to an incident's impact, worked out once per step.
pub(crate) struct Reading {
    canary_rate: f64,
    rate_window: f64,
    longest_gap: f64,
    thresholds: Thresholds,
}

pub(crate) fn reading(step: &Step, m: &PolicyMemory) -> Reading {
    Reading {
        canary_rate: effective_canary_rate(step, m),
        rate_window: step.spec.metrics.rate_window.as_std().as_secs_f64(),
        longest_gap: 2.0 * step.spec.metrics.interval.as_std().as_secs_f64(),
        thresholds: thresholds(step, m),
    }
}

/// Add this reading to every open incident's impact.
pub(crate) fn measure(step: &mut Step, m: &mut PolicyMemory) {
    if m.open_incidents.is_empty() {
        return;
    }
    let r = reading(step, m);
    let mut touched = Vec::new();
    for incident in &mut m.open_incidents {
        add(step, &r, incident);
        touched.push(incident.runbook);
    }
    // The status shows the impact as it grows.
    for runbook in touched {
        step.touch(runbook);
    }
}

/// Add this reading to one incident's impact (also the one resolved in this step, whose last
/// stretch counts too).
pub(crate) fn add(step: &Step, r: &Reading, incident: &mut OpenIncident) {
    let signals = &step.signals;
    let now = step.now;
    let impact = incident
        .impact
        .get_or_insert_with(|| IncidentImpact::new(scope(incident.runbook)));
    if impact.last_sample_at == Some(now) {
        return;
    }
    let dt = impact.last_sample_at.map_or(0.0, |last| {
        elapsed(now, last).as_secs_f64().min(r.longest_gap)
    });
    // Traffic: the service's, and the affected share of it.
    if let Some(requests) = signals.requests.filter(|r| *r >= 0.0)
        && r.rate_window > 0.0
    {
        let served = requests / r.rate_window * dt;
        let canary_cohort = signals
            .canary
            .as_ref()
            .and_then(|c| Some((c.requests?, c.error_rate_percent)));
        let (affected, failed, service_wide) = match impact.scope {
            ImpactScope::Service => (
                served,
                signals.error_rate_percent.map(|e| served * e / 100.0),
                false,
            ),
            ImpactScope::Canary => match canary_cohort {
                Some((canary_requests, canary_errors)) => {
                    let share = if requests > 0.0 {
                        (canary_requests / requests).clamp(0.0, 1.0)
                    } else {
                        0.0
                    };
                    let affected = served * share;
                    (affected, canary_errors.map(|e| affected * e / 100.0), false)
                }
                None => (
                    served * r.canary_rate,
                    signals.error_rate_percent.map(|e| served * e / 100.0),
                    true,
                ),
            },
        };
        impact.requests += served;
        impact.affected_requests += affected;
        if let Some(failed) = failed.filter(|f| f.is_finite()) {
            impact.failed_requests += failed;
        }
        impact.failed_service_wide |= service_wide;
        impact.measured_seconds += dt;
        impact.samples = impact.samples.saturating_add(1);
    }
    impact.last_sample_at = Some(now);
    // Peaks of the signals past their thresholds.
    for (signal, threshold, lower_is_worse) in thresholds_for(incident.runbook, &r.thresholds) {
        let Some(value) = value_of(signals, signal, incident.runbook) else {
            continue;
        };
        let breaches = if lower_is_worse {
            value < threshold
        } else {
            value > threshold
        };
        if !breaches {
            continue;
        }
        let worse = |p: &Peak| {
            if lower_is_worse {
                value < p.value
            } else {
                value > p.value
            }
        };
        if impact.peaks.get(signal.name()).is_none_or(worse) {
            impact.peaks.insert(
                signal.name().to_owned(),
                Peak {
                    value,
                    at: now,
                    threshold,
                    lower_is_worse,
                },
            );
        }
    }
}

/// The canary rate in force: the baseline, or the lowest rate a mitigation holds it at.
fn effective_canary_rate(step: &Step, m: &PolicyMemory) -> f64 {
    let base = step.spec.canary.sample_rate;
    mitigations::active(step.spec, m)
        .iter()
        .filter_map(|a| a.overrides.get(CANARY_SAMPLE_RATE)?.parse::<f64>().ok())
        .fold(base, f64::min)
        .clamp(0.0, 1.0)
}

/// The runbooks' thresholds, as they stand in this step.
struct Thresholds {
    rollback_p50: f64,
    error_rate: Option<f64>,
    mem0_write_rollback: f64,
    mem0_write_alert: f64,
    hit_rate: f64,
    stampede_p50: f64,
    memory: f64,
}

fn thresholds(step: &Step, m: &PolicyMemory) -> Thresholds {
    let spec = step.spec;
    let baseline = spec
        .rollback
        .error_rate_baseline_percent
        .or(m.error_rate_baseline_percent);
    let levels = &spec.redis.memory_levels;
    Thresholds {
        rollback_p50: spec.rollback.p50_latency_ms,
        error_rate: baseline.map(|b| b + spec.rollback.error_rate_increase_points),
        mem0_write_rollback: spec.rollback.mem0_write_success_below_percent,
        mem0_write_alert: super::breaker::MEM0_WRITE_ALERT_BELOW_PERCENT,
        hit_rate: spec.stampede.hit_rate_below_percent,
        stampede_p50: spec.stampede.p50_latency_above_ms,
        memory: match m.redis.level {
            MemoryLevel::Critical => levels.critical,
            MemoryLevel::Warning => levels.warning,
            _ => levels.watch,
        },
    }
}

/// The signals each runbook watches: (signal, threshold, lower is worse).
fn thresholds_for(runbook: Runbook, t: &Thresholds) -> Vec<(Signal, f64, bool)> {
    match runbook {
        Runbook::CanaryRollback => {
            let mut out = vec![
                (Signal::P50LatencyMs, t.rollback_p50, false),
                (Signal::Mem0WriteSuccessPercent, t.mem0_write_rollback, true),
            ];
            if let Some(e) = t.error_rate {
                out.push((Signal::ErrorRatePercent, e, false));
            }
            out
        }
        Runbook::CircuitBreakerOpen => {
            vec![(Signal::Mem0WriteSuccessPercent, t.mem0_write_alert, true)]
        }
        Runbook::CacheStampede => vec![
            (Signal::CacheHitRatePercent, t.hit_rate, true),
            (Signal::P50LatencyMs, t.stampede_p50, false),
        ],
        Runbook::RedisMemory => vec![(Signal::RedisUsedMemoryPercent, t.memory, false)],
    }
}

/// A signal's value as the runbook judges it: the canary cohort's for the canary rollback when
/// cohorts are observed, the service's otherwise.
fn value_of(signals: &crate::api::Signals<'_>, signal: Signal, runbook: Runbook) -> Option<f64> {
    let canary = signals
        .canary
        .as_ref()
        .filter(|_| runbook == Runbook::CanaryRollback);
    match signal {
        Signal::P50LatencyMs => canary
            .and_then(|c| c.p50_latency_ms)
            .or(signals.p50_latency_ms),
        Signal::ErrorRatePercent => canary
            .and_then(|c| c.error_rate_percent)
            .or(signals.error_rate_percent),
        Signal::Mem0WriteSuccessPercent => canary
            .and_then(|c| c.mem0_write_success_percent)
            .or(signals.mem0_write_success_percent),
        Signal::CacheHitRatePercent => signals.cache_hit_rate_percent,
        Signal::RedisUsedMemoryPercent => signals.redis_used_memory_percent,
        _ => None,
    }
}

fn whole(n: f64) -> String {
    format!("{}", n.round() as u64)
}

/// The impact in lines for people: the communication template's "[X]% of users affected", the
/// report's "Affected users" and "Failed requests", and the peaks.
pub fn lines(impact: &IncidentImpact) -> Vec<String> {
    let mut out = Vec::new();
    let traffic = match impact.scope {
        ImpactScope::Canary => "the canary's share of the traffic",
        ImpactScope::Service => "the whole service",
    };
    match impact.affected_percent() {
        Some(percent) => out.push(format!(
            "{}% of users affected ({traffic}: ~{} of ~{} requests during the incident)",
            num((percent * 10.0).round() / 10.0),
            whole(impact.affected_requests),
            whole(impact.requests)
        )),
        None if impact.samples == 0 => out.push(format!(
            "Share of users affected not measured: no request rate was read during the incident ({traffic} is affected)"
        )),
        None if impact.measured_seconds == 0.0 => out.push(format!(
            "Share of users affected: measured from the next reading on, the incident has just begun ({traffic} is affected)"
        )),
        None => out.push(format!(
            "No requests were served during the incident ({traffic} is affected)"
        )),
    }
    if impact.samples > 0 {
        let whose = if impact.failed_service_wide {
            " (the whole service's: the canary's own errors are not observed without cohorts)"
        } else {
            ""
        };
        out.push(format!(
            "Failed requests: ~{}{whose}, over {} of readings",
            whole(impact.failed_requests),
            super::span(crate::api::Duration::from_std(
                std::time::Duration::from_secs_f64(impact.measured_seconds.max(0.0))
            ))
        ));
    }
    for (name, peak) in &impact.peaks {
        let (title, suffix) = Signal::parse(name)
            .map(|s| (s.title(), s.unit().suffix()))
            .unwrap_or((name.as_str(), ""));
        let side = if peak.lower_is_worse {
            "below"
        } else {
            "above"
        };
        out.push(format!(
            "Peak {title}: {}{suffix} at {} ({side} {}{suffix})",
            num((peak.value * 10.0).round() / 10.0),
            peak.at.strftime("%H:%M:%S UTC"),
            num(peak.threshold)
        ));
    }
    out
}

/// How long after detection each timeline entry happened: "+2m 30s: Traffic reduced to 0.05".
pub fn since_detection(started: jiff::Timestamp, timeline: &[TimelineEntry]) -> Vec<String> {
    timeline
        .iter()
        .skip(1)
        .map(|e| {
            let after = crate::api::Duration::from_std(elapsed(e.at, started));
            format!("+{}: {}", super::span(after), e.what)
        })
        .collect()
}
