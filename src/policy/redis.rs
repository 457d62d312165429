//! Incident #3, Redis memory: levels watch / warning / critical (70 / 80 / 90 % of maxmemory by
//! default) with hysteresis, the eviction-rate alert, and remediation at critical within a
//! cooldown. Also tracks Redis restarts (run_id change, or uptime going back) for the cold-start
//! rule.

use super::incidents::{self, REDIS_MEMORY};
use super::signals::num;
use super::window::{at_least, elapsed};
use super::{Action, Change, Step};
use crate::api::{CounterSample, MemoryLevel, MemoryLevels, PolicyMemory, conditions::reasons};

/// Eviction readings kept per window: one at most every window/16, so the status stays small at
/// any tick length.
const EVICTION_SAMPLES_PER_WINDOW: u32 = 16;

/// The level for `used` percent, given the current level: a level is entered at its threshold and
/// left only once usage is `hysteresis` points below it.
pub fn level_for(levels: &MemoryLevels, used: f64, current: MemoryLevel) -> MemoryLevel {
    let ladder = [
        (MemoryLevel::Watch, levels.watch),
        (MemoryLevel::Warning, levels.warning),
        (MemoryLevel::Critical, levels.critical),
    ];
    let mut level = MemoryLevel::Ok;
    for (candidate, threshold) in ladder {
        let entered = used >= threshold;
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

/// Track restarts, the eviction counter and the memory level.
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

    // The evicted_keys counter restarts from 0 with Redis: a reading below the last one, or any
    // reading right after a restart, counts from zero.
    if let Some(raw) = s.redis_evicted_keys {
        let delta = match r.evicted_keys {
            Some(prev) if raw >= prev && step.cold_start.is_none() => raw - prev,
            Some(_) => raw,
            None => 0,
        };
        r.evicted_keys = Some(raw);
        r.evictions_total = r.evictions_total.saturating_add(delta);
        let window = step.spec.redis.evictions.window.as_std();
        let spacing = window / EVICTION_SAMPLES_PER_WINDOW;
        let sample = CounterSample {
            at: step.now,
            value: r.evictions_total,
        };
        let n = r.eviction_samples.len();
        // Thin: the newest slot floats until it is `spacing` past the one before it.
        if n >= 2 && elapsed(step.now, r.eviction_samples[n - 2].at) < spacing {
            r.eviction_samples[n - 1] = sample;
        } else {
            r.eviction_samples.push(sample);
        }
        // Keep one reading at or before the window's start, as the base.
        while r.eviction_samples.len() >= 2 && elapsed(step.now, r.eviction_samples[1].at) >= window
        {
            r.eviction_samples.remove(0);
        }
    }

    if let Some(used) = s.redis_used_memory_percent {
        r.level = level_for(&step.spec.redis.memory_levels, used, r.level);
    }
}

/// Evictions over the eviction window: counted from the reading at or before the window's start
/// (scaled down to the window when that reading is older), or from the oldest reading while the
/// window is not yet full.
pub(crate) fn evictions_in_window(step: &Step, m: &PolicyMemory) -> Option<u64> {
    let samples = &m.redis.eviction_samples;
    let (first, last) = (samples.first()?, samples.last()?);
    let count = last.value.saturating_sub(first.value);
    let window = step.spec.redis.evictions.window.as_std();
    let span = elapsed(last.at, first.at);
    if span > window && !span.is_zero() {
        let scaled = count as f64 * window.as_secs_f64() / span.as_secs_f64();
        Some(scaled.round() as u64)
    } else {
        Some(count)
    }
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
    let used_text = used
        .map(|u| format!("{}%", num(u)))
        .unwrap_or_else(|| "unknown".into());

    if level != m.redis.alerted_level {
        let from = m.redis.alerted_level;
        m.redis.alerted_level = level;
        if level > from {
            step.changes.push(Change::Alert {
                subject: "redis-memory",
                code: level_reason(level),
                warning: true,
                message: format!(
                    "Redis memory {used_text} of maxmemory: level {} (≥ {}%)",
                    level.as_str(),
                    num(threshold(levels, level))
                ),
            });
        } else {
            step.changes.push(Change::Transition {
                subject: "redis-memory",
                from: from.as_str().into(),
                to: level.as_str().into(),
                reason: format!(
                    "Redis memory {used_text}, more than {} points below the {} level",
                    num(levels.hysteresis),
                    from.as_str()
                ),
            });
        }
        if level >= MemoryLevel::Warning || from >= MemoryLevel::Warning {
            incidents::note(
                step,
                m,
                REDIS_MEMORY,
                format!(
                    "Memory level {} → {} ({used_text})",
                    from.as_str(),
                    level.as_str()
                ),
            );
        }
    }

    let evictions = evictions_in_window(step, m);
    let limit = spec.evictions.max_evictions;
    let window = spec.evictions.window;
    match evictions {
        Some(n) if n > limit && !m.redis.eviction_alert => {
            m.redis.eviction_alert = true;
            step.changes.push(Change::Alert {
                subject: "evictions",
                code: reasons::EVICTIONS,
                warning: true,
                message: format!("Redis evicted {n} keys within {window} (more than {limit})"),
            });
        }
        // Cleared with hysteresis: only at half the limit or below.
        Some(n) if n <= limit / 2 && m.redis.eviction_alert => {
            m.redis.eviction_alert = false;
            step.changes.push(Change::Transition {
                subject: "evictions",
                from: "alert".into(),
                to: "ok".into(),
                reason: format!(
                    "Redis evicted {n} keys within {window} (at most {})",
                    limit / 2
                ),
            });
        }
        _ => {}
    }

    if level == MemoryLevel::Critical && spec.remediation.enabled {
        let cooled = m
            .redis
            .last_remediation_at
            .is_none_or(|last| at_least(step.now, last, spec.remediation.cooldown));
        if cooled {
            m.redis.last_remediation_at = Some(step.now);
            let reason = format!(
                "Redis memory {used_text} ≥ critical {}%: unlink non-critical keys and old cache generations (cooldown {})",
                num(levels.critical),
                spec.remediation.cooldown
            );
            step.actions.push(Action::RemediateRedis {
                level,
                reason: reason.clone(),
            });
            step.actions.push(Action::AuditRedis {
                reason: format!("Redis memory {used_text} ≥ critical: find keys without TTL and the largest keys"),
            });
            incidents::open(step, m, REDIS_MEMORY, &reason);
            incidents::note(step, m, REDIS_MEMORY, "Remediation and key audit requested");
        }
    }

    let trouble = Some(level >= MemoryLevel::Warning || m.redis.eviction_alert);
    let alert = m.redis.eviction_alert;
    let trigger = || {
        if level >= MemoryLevel::Warning {
            format!("Redis memory {used_text}: level {}", level.as_str())
        } else if alert {
            format!(
                "Redis evicted {} keys within {window}",
                evictions.unwrap_or_default()
            )
        } else {
            "Redis memory".to_owned()
        }
    };
    incidents::track(step, m, REDIS_MEMORY, trouble, trigger, true);
}

/// The condition reason for a memory level.
pub fn level_reason(level: MemoryLevel) -> &'static str {
    match level {
        MemoryLevel::Ok => reasons::MEMORY_OK,
        MemoryLevel::Watch => reasons::MEMORY_WATCH,
        MemoryLevel::Warning => reasons::MEMORY_WARNING,
        MemoryLevel::Critical => reasons::MEMORY_CRITICAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_rise_at_once_and_fall_with_hysteresis() {
        let l = MemoryLevels::default();
        use MemoryLevel::*;
        let mut level = Ok;
        let mut seen = Vec::new();
        for used in [
            60.0, 70.0, 69.0, 66.0, 64.9, 85.0, 91.0, 86.0, 84.9, 79.0, 74.9, 50.0,
        ] {
            level = level_for(&l, used, level);
            seen.push(level);
        }
        assert_eq!(
            seen,
            [
                Ok, Watch, Watch, Watch, Ok, Warning, Critical, Critical, Warning, Warning, Watch,
                Ok
            ]
        );
    }
}
