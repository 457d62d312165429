//! Incident #3, Redis memory: levels watch / warning / critical (above 70 / 80 / 90 % of
//! maxmemory by default, each held for its own time, left with hysteresis), the eviction-rate
//! alert, and remediation at critical within a cooldown. Also tracks Redis restarts (run_id
//! change, or uptime going back) for the cold-start rule.
//!
//! The runbook reads "If >90% used: CRITICAL" and its alerts hold (`> 80 for: 5m`,
//! `> 90 for: 1m`): a level is entered only when usage has been above its threshold at every
//! reading for the level's hold, so a one-reading spike neither alerts nor deletes anything.
//! The eviction rate is computed from the evicted_keys readings exactly as Prometheus's `rate()`
//! computes it from samples, so the PrometheusRule and the controller fire at the same moment.

mod ceiling;
mod leak;

pub use ceiling::{OPTION_C, audit_lines};

use super::incidents;
use super::signals::num;
use super::window::{OnUnknown, Sample, at_least, elapsed, feed, holds_for};
use super::{Action, Change, Step};
use crate::api::Runbook;
use crate::api::{
    CounterSample, Duration, MemoryLevel, MemoryLevels, PolicyMemory, Reason, Subject, WindowState,
};

/// Eviction readings kept per rate window: one at most every window/16, so the status stays small
/// at any tick length.
const EVICTION_SAMPLES_PER_WINDOW: u32 = 16;

/// The levels above ok, lowest first, with their thresholds and holds.
fn ladder(levels: &MemoryLevels) -> [(MemoryLevel, f64, Duration); 3] {
    [
        (MemoryLevel::Watch, levels.watch, levels.watch_for),
        (MemoryLevel::Warning, levels.warning, levels.warning_for),
        (MemoryLevel::Critical, levels.critical, levels.critical_for),
    ]
}

fn above_window(m: &mut PolicyMemory, level: MemoryLevel) -> &mut WindowState {
    let above = &mut m.redis.above;
    match level {
        MemoryLevel::Critical => &mut above.critical,
        MemoryLevel::Warning => &mut above.warning,
        _ => &mut above.watch,
    }
}

/// The level for `used` percent, given the current level and whether usage has stayed above each
/// threshold for its hold: a level is entered once its hold is over, and left only once usage is
/// `hysteresis` points below its threshold.
pub fn level_for(
    levels: &MemoryLevels,
    used: f64,
    current: MemoryLevel,
    held: impl Fn(MemoryLevel) -> bool,
) -> MemoryLevel {
    let mut level = MemoryLevel::Ok;
    for (candidate, threshold, _) in ladder(levels) {
        let entered = used > threshold && held(candidate);
        let kept = candidate <= current && used >= threshold - levels.hysteresis;
        if entered || kept {
            level = candidate;
        }
    }
    level
}

fn threshold(levels: &MemoryLevels, level: MemoryLevel) -> f64 {
    match level {
        MemoryLevel::Ok => 0.0,
        MemoryLevel::Watch => levels.watch,
        MemoryLevel::Warning => levels.warning,
        MemoryLevel::Critical => levels.critical,
    }
}

/// Track restarts, the eviction counter and rate, and the memory level.
pub(crate) fn observe(step: &mut Step, m: &mut PolicyMemory) {
    let r = &mut m.redis;
    let s = &step.signals;

    // A restart: a different run_id; or, when run_ids cannot be compared, uptime going back.
    step.cold_start = match (r.run_id.as_deref(), s.redis_run_id) {
        (Some(old), Some(new)) if old != new => Some(format!(
            "Redis restarted (run_id {} → {})",
            short(old),
            short(new)
        )),
        (Some(_), Some(_)) => None,
        _ => match (r.uptime_seconds, s.redis_uptime_seconds) {
            (Some(old), Some(new)) if new < old => Some(format!(
                "Redis restarted (uptime went back from {old}s to {new}s)"
            )),
            _ => None,
        },
    };
    if let Some(id) = s.redis_run_id
        && r.run_id.as_deref() != Some(id)
    {
        r.run_id = Some(id.to_owned());
    }
    if let Some(up) = s.redis_uptime_seconds {
        r.uptime_seconds = Some(up);
    }
    leak::observe(step, m);

    if let Some(raw) = s.redis_evicted_keys {
        record_evictions(step, m, raw);
    }
    let rate = evictions_per_second(step, m);
    let limit = step.spec.redis.evictions.max_per_second;
    let sample = match rate {
        Some(r) if r > limit => Sample::Holds(Some(r)),
        Some(_) => Sample::Broken,
        None => Sample::Unknown,
    };
    feed(&mut m.redis.evicting, step.now, sample, OnUnknown::Hold);

    if let Some(used) = step.signals.redis_used_memory_percent {
        let now = step.now;
        for (level, threshold, _) in ladder(&step.spec.redis.memory_levels) {
            let sample = if used > threshold {
                Sample::Holds(Some(used))
            } else {
                Sample::Broken
            };
            feed(above_window(m, level), now, sample, OnUnknown::Hold);
        }
        let levels = &step.spec.redis.memory_levels;
        let windows = m.redis.above.clone();
        let held = |level: MemoryLevel| {
            let (window, hold) = match level {
                MemoryLevel::Critical => (&windows.critical, levels.critical_for),
                MemoryLevel::Warning => (&windows.warning, levels.warning_for),
                _ => (&windows.watch, levels.watch_for),
            };
            holds_for(window, hold)
        };
        m.redis.level = level_for(levels, used, m.redis.level, held);
    }
}

/// Keep the evicted_keys reading. A counter that went down, or a new run id, is a restart: as
/// Prometheus does with a counter reset, the reading counts from zero.
fn record_evictions(step: &Step, m: &mut PolicyMemory, raw: u64) {
    let r = &mut m.redis;
    let (delta, seq) = match r.eviction_samples.last() {
        Some(last) if raw >= last.raw && step.cold_start.is_none() => {
            (raw - last.raw, last.seq + 1)
        }
        Some(last) => (raw, last.seq + 1),
        None => (0, 0),
    };
    r.evictions_total = r.evictions_total.saturating_add(delta);
    let window = step.spec.redis.evictions.rate_window.as_std();
    let spacing = window / EVICTION_SAMPLES_PER_WINDOW;
    let sample = CounterSample {
        at: step.now,
        raw,
        value: r.evictions_total,
        seq,
    };
    let now = step.now;
    let samples = &mut r.eviction_samples;
    // Readings older than the window are of no use to the rate; the newest is always kept.
    samples.retain(|s| elapsed(now, s.at) <= window);
    let n = samples.len();
    // Thin: the newest slot floats until it is `spacing` past the one before it.
    if n >= 2 && elapsed(now, samples[n - 2].at) < spacing {
        samples[n - 1] = sample;
    } else {
        samples.push(sample);
    }
}

/// Evicted keys per second over the rate window, computed from the readings in the window the way
/// Prometheus's `rate()` computes it from samples: the increase (resets corrected) extrapolated
/// towards the window's edges, over the window's length. Unknown with fewer than two readings.
pub(crate) fn evictions_per_second(step: &Step, m: &PolicyMemory) -> Option<f64> {
    let window = step.spec.redis.evictions.rate_window.as_secs_f64();
    let now = step.now;
    let in_range: Vec<&CounterSample> = m
        .redis
        .eviction_samples
        .iter()
        .filter(|s| s.at <= now && elapsed(now, s.at).as_secs_f64() <= window)
        .collect();
    let (first, last) = (in_range.first()?, in_range.last()?);
    if last.seq == first.seq || window <= 0.0 {
        return None;
    }
    let increase = last.value.saturating_sub(first.value) as f64;
    let sampled = elapsed(last.at, first.at).as_secs_f64();
    if sampled <= 0.0 {
        return None;
    }
    let mut to_start = window - elapsed(now, first.at).as_secs_f64();
    let to_end = elapsed(now, last.at).as_secs_f64();
    let average = sampled / (last.seq - first.seq) as f64;
    // A counter is not extrapolated below zero.
    if increase > 0.0 {
        let to_zero = sampled * (first.raw as f64 / increase);
        to_start = to_start.min(to_zero);
    }
    let threshold = average * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        average / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        average / 2.0
    };
    Some(increase * (interval / sampled) / window)
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Alerts, remediation and the incident.
pub(crate) fn step(step: &mut Step, m: &mut PolicyMemory) {
    let spec = &step.spec.redis;
    let levels = &spec.memory_levels;
    let used = step.signals.redis_used_memory_percent;
    let level = m.redis.level;
    let used_text = || {
        used.map(|u| format!("{}%", num(u)))
            .unwrap_or_else(|| "unknown".into())
    };

    if level != m.redis.alerted_level {
        let from = m.redis.alerted_level;
        m.redis.alerted_level = level;
        if level > from {
            step.changes.push(Change::Alert {
                subject: Subject::RedisMemory,
                code: level_reason(level),
                warning: true,
                message: format!(
                    "Redis memory {} of maxmemory: level {} (above {}%{})",
                    used_text(),
                    level.as_str(),
                    num(threshold(levels, level)),
                    match hold(levels, level) {
                        h if h.is_zero() => String::new(),
                        h => format!(" for {h}"),
                    }
                ),
            });
        } else {
            step.changes.push(Change::Transition {
                subject: Subject::RedisMemory,
                from: from.as_str().into(),
                to: level.as_str().into(),
                reason: format!(
                    "Redis memory {}, more than {} points below the {} level",
                    used_text(),
                    num(levels.hysteresis),
                    from.as_str()
                ),
            });
        }
        if level >= MemoryLevel::Warning || from >= MemoryLevel::Warning {
            incidents::note(
                step,
                m,
                Runbook::RedisMemory,
                format!(
                    "Memory level {} → {} ({})",
                    from.as_str(),
                    level.as_str(),
                    used_text()
                ),
            );
        }
    }

    let rate = evictions_per_second(step, m);
    let limit = spec.evictions.max_per_second;
    let rate_text = || format!("{}/s", rate.map(num).unwrap_or_else(|| "?".into()));
    let window = spec.evictions.rate_window;
    let held = spec.evictions.for_duration;
    if !m.redis.eviction_alert && holds_for(&m.redis.evicting, held) {
        m.redis.eviction_alert = true;
        step.changes.push(Change::Alert {
            subject: Subject::Evictions,
            code: Reason::Evictions,
            warning: true,
            message: format!(
                "Redis evicts {} keys over {window}, above {}/s for {held}",
                rate_text(),
                num(limit)
            ),
        });
    }
    // Cleared with hysteresis: only at half the limit or below.
    if m.redis.eviction_alert && rate.is_some_and(|r| r <= limit / 2.0) {
        m.redis.eviction_alert = false;
        step.changes.push(Change::Transition {
            subject: Subject::Evictions,
            from: "alert".into(),
            to: "ok".into(),
            reason: format!(
                "Redis evicts {} keys over {window} (at most {}/s)",
                rate_text(),
                num(limit / 2.0)
            ),
        });
    }

    if level < MemoryLevel::Critical {
        m.redis.remediation_runs = 0;
    }
    let leak = leak::step(step, m);
    if let Some(alert) = &leak {
        incidents::note(step, m, Runbook::RedisMemory, alert.clone());
    }
    let spec = &step.spec.redis;

    if level == MemoryLevel::Critical && spec.remediation.enabled {
        let cooled = m
            .redis
            .last_remediation_at
            .is_none_or(|last| at_least(step.now, last, spec.remediation.cooldown));
        if cooled {
            m.redis.last_remediation_at = Some(step.now);
            m.redis.remediation_runs = m.redis.remediation_runs.saturating_add(1);
            let reason = format!(
                "Redis memory {} above critical {}% for {}: unlink non-critical keys and old cache generations (cooldown {})",
                used_text(),
                num(levels.critical),
                levels.critical_for,
                spec.remediation.cooldown
            );
            step.actions.push(Action::RemediateRedis {
                level,
                reason: reason.clone(),
            });
            step.actions.push(Action::AuditRedis {
                reason: format!(
                    "Redis memory {} above critical: find keys without TTL and the largest keys",
                    used_text()
                ),
            });
            incidents::open(step, m, Runbook::RedisMemory, &reason);
            incidents::note(
                step,
                m,
                Runbook::RedisMemory,
                "Remediation and key audit requested",
            );
        }
    }

    ceiling::step(step, m);

    let leaking = m.redis.keys_without_ttl.alert;
    let trouble = Some(level >= MemoryLevel::Warning || m.redis.eviction_alert || leaking);
    let alert = m.redis.eviction_alert;
    let trigger = || {
        if level >= MemoryLevel::Warning {
            format!("Redis memory {}: level {}", used_text(), level.as_str())
        } else if alert {
            format!("Redis evicts {} keys over {window}", rate_text())
        } else if let Some(leak) = &leak {
            leak.clone()
        } else if leaking {
            "Redis keys without TTL keep growing".to_owned()
        } else {
            "Redis memory".to_owned()
        }
    };
    incidents::track(step, m, Runbook::RedisMemory, trouble, trigger, true);
    if incidents::find(m, Runbook::RedisMemory).is_some() {
        let lines = ceiling::findings(step, m);
        incidents::set_findings(step, m, Runbook::RedisMemory, lines);
    }
}

/// How long usage must stay above a level's threshold to enter it.
fn hold(levels: &MemoryLevels, level: MemoryLevel) -> Duration {
    match level {
        MemoryLevel::Ok => Duration::ZERO,
        MemoryLevel::Watch => levels.watch_for,
        MemoryLevel::Warning => levels.warning_for,
        MemoryLevel::Critical => levels.critical_for,
    }
}

/// The condition reason for a memory level.
pub fn level_reason(level: MemoryLevel) -> Reason {
    match level {
        MemoryLevel::Ok => Reason::MemoryOk,
        MemoryLevel::Watch => Reason::MemoryWatch,
        MemoryLevel::Warning => Reason::MemoryWarning,
        MemoryLevel::Critical => Reason::MemoryCritical,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_entered_above_their_threshold_and_left_with_hysteresis() {
        let l = MemoryLevels::default();
        use MemoryLevel::*;
        let held = |_: MemoryLevel| true;
        let mut level = Ok;
        let mut seen = Vec::new();
        for used in [
            60.0, 70.0, 70.1, 66.0, 64.9, 85.0, 90.0, 91.0, 86.0, 84.9, 79.0, 74.9, 50.0,
        ] {
            level = level_for(&l, used, level, held);
            seen.push(level);
        }
        assert_eq!(
            seen,
            [
                Ok, Ok, Watch, Watch, Ok, Warning, Warning, Critical, Critical, Warning, Warning,
                Watch, Ok
            ]
        );
    }

    #[test]
    fn a_level_whose_hold_is_not_over_is_not_entered() {
        let l = MemoryLevels::default();
        let only_watch = |level: MemoryLevel| level == MemoryLevel::Watch;
        assert_eq!(
            level_for(&l, 95.0, MemoryLevel::Ok, only_watch),
            MemoryLevel::Watch
        );
        // Kept with hysteresis whatever the holds say.
        assert_eq!(
            level_for(&l, 86.0, MemoryLevel::Critical, |_| false),
            MemoryLevel::Critical
        );
    }
}
