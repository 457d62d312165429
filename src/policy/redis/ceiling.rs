//! What next when Redis memory stays critical (the OOM runbook's step 2, options B and C, and
//! step 3's findings).
//!
//! After the remediation has run twice and usage is still above the critical threshold, option B:
//! with `redis.remediation.maxMemoryCeiling` set, maxmemory is raised with CONFIG SET by
//! `maxMemoryStepPercent` of the original value at a time, never above the ceiling, one step per
//! `memoryLevels.criticalFor` (or `metrics.interval`, the longer) while usage stays above
//! critical. The original value is kept in `status.policy` and put back once the incident is over
//! and the used memory fits under the original limit below the warning level (restoring earlier
//! would make the incident at once). A value Redis does not take (CONFIG renamed or denied:
//! the actuator says which) stops the raises. Without a ceiling, at the ceiling, or refused, the
//! incident escalates to the next level at once with the audit's findings. Option C, restarting
//! Redis, is never automatic: the findings say why.

use super::super::incidents;
use super::super::signals::num;
use super::super::window::elapsed;
use super::super::{Action, Change, Step};
use crate::api::{AuditOutcome, MaxMemoryRaise, PolicyMemory, Reason, Runbook, Subject};

/// The least a raise adds.
const MIN_STEP_BYTES: u64 = 1 << 20;

/// Why option C stays a human's decision.
pub const OPTION_C: &str = "Option C (restart Redis) is left to a person: it empties the whole cache, so every clinic misses at once (a stampede onto the database) and anything without another copy is lost; tierguard never restarts Redis";

fn mib(bytes: u64) -> String {
    format!("{} MiB", num(bytes as f64 / (1u64 << 20) as f64))
}

/// Remediations, raises, restores and the escalation when nothing automatic is left.
pub(crate) fn step(step: &mut Step, m: &mut PolicyMemory) {
    let spec = &step.spec.redis;
    let now = step.now;
    let settle = spec
        .memory_levels
        .critical_for
        .as_std()
        .max(step.spec.metrics.interval.as_std());
    let observed_max = step.signals.redis_max_memory_bytes;
    let open = incidents::find(m, Runbook::RedisMemory).is_some();
    if !open {
        m.redis.escalated_still_critical = false;
    }
    let ceiling = spec
        .remediation
        .max_memory_ceiling
        .as_deref()
        .and_then(|c| crate::observe::redis::parse_quantity(c).ok());

    // Putting the original back, once the incident is over and it fits.
    if let Some(raise) = m.redis.max_memory_raise.clone()
        && (!open || raise.restoring)
    {
        if observed_max == Some(raise.original_bytes) {
            m.redis.max_memory_raise = None;
            if raise.steps > 0 && !raise.refused {
                step.changes.push(Change::Transition {
                    subject: Subject::RedisMemory,
                    from: mib(raise.target_bytes),
                    to: mib(raise.original_bytes),
                    reason: "maxmemory back at its value before the incident".into(),
                });
            }
            return;
        }
        let fits = step.signals.redis_used_memory_bytes.is_some_and(|used| {
            (used as f64) < raise.original_bytes as f64 * spec.memory_levels.warning / 100.0
        });
        let due = !raise.restoring || elapsed(now, raise.asked_at) >= settle;
        if fits && due {
            let from = observed_max.unwrap_or(raise.target_bytes);
            let reason = format!(
                "the Redis memory incident is over: maxmemory back from {} to {} (its value before the incident)",
                mib(from),
                mib(raise.original_bytes)
            );
            step.actions.push(Action::SetMaxMemory {
                bytes: raise.original_bytes,
                from,
                ceiling: ceiling.unwrap_or(raise.target_bytes).max(from),
                restore: true,
                reason: reason.clone(),
            });
            step.changes.push(Change::Alert {
                subject: Subject::RedisMemory,
                code: Reason::MaxMemoryRestored,
                warning: false,
                message: reason,
            });
            if let Some(r) = m.redis.max_memory_raise.as_mut() {
                r.restoring = true;
                r.asked_at = now;
            }
        }
        return;
    }

    let used = step.signals.redis_used_memory_percent;
    let above = used.is_some_and(|u| u > spec.memory_levels.critical);
    let ran_twice = m.redis.remediation_runs >= 2
        && m.redis
            .last_remediation_at
            .is_some_and(|at| elapsed(now, at) >= spec.remediation.max_duration.as_std());
    if !open || !above || !ran_twice || !spec.remediation.enabled {
        return;
    }
    let used_text = used.map(|u| format!("{}%", num(u))).unwrap_or_default();
    let Some(ceiling) = ceiling else {
        escalate_once(
            step,
            m,
            &format!(
                "Redis memory still {used_text} of maxmemory after two remediation runs, and spec.redis.remediation.maxMemoryCeiling is not set: more memory (option B) needs a person"
            ),
        );
        return;
    };
    let Some(current) = observed_max else {
        return;
    };
    match m.redis.max_memory_raise.as_mut() {
        Some(r) if r.refused => return,
        Some(r) if current != r.target_bytes => {
            if elapsed(now, r.asked_at) >= settle {
                r.refused = true;
                let why = format!(
                    "Redis did not take maxmemory {} (it reads {}): CONFIG refused or failed, see status.recentActions; no more raises",
                    mib(r.target_bytes),
                    mib(current)
                );
                step.changes.push(Change::Alert {
                    subject: Subject::RedisMemory,
                    code: Reason::ConfigRefused,
                    warning: true,
                    message: why.clone(),
                });
                escalate_once(step, m, &why);
            }
            return;
        }
        Some(r) if elapsed(now, r.asked_at) < settle => return,
        _ => {}
    }
    if current >= ceiling {
        escalate_once(
            step,
            m,
            &format!(
                "Redis memory still {used_text} with maxmemory at its ceiling {} (spec.redis.remediation.maxMemoryCeiling)",
                mib(ceiling)
            ),
        );
        return;
    }
    let original = m
        .redis
        .max_memory_raise
        .as_ref()
        .map_or(current, |r| r.original_bytes);
    let by = ((original as f64 * spec.remediation.max_memory_step_percent / 100.0) as u64)
        .max(MIN_STEP_BYTES);
    let target = current.saturating_add(by).min(ceiling);
    let steps = m.redis.max_memory_raise.as_ref().map_or(0, |r| r.steps) + 1;
    let reason = format!(
        "Redis memory still {used_text} of maxmemory after two remediation runs: option B, maxmemory {} → {} (step {steps}, ceiling {}; {} before the incident, put back after it)",
        mib(current),
        mib(target),
        mib(ceiling),
        mib(original)
    );
    step.actions.push(Action::SetMaxMemory {
        bytes: target,
        from: current,
        ceiling,
        restore: false,
        reason: reason.clone(),
    });
    m.redis.max_memory_raise = Some(MaxMemoryRaise {
        original_bytes: original,
        target_bytes: target,
        asked_at: now,
        steps,
        restoring: false,
        refused: false,
    });
    step.changes.push(Change::Alert {
        subject: Subject::RedisMemory,
        code: Reason::MaxMemoryRaised,
        warning: true,
        message: reason.clone(),
    });
    incidents::note(step, m, Runbook::RedisMemory, reason);
}

fn escalate_once(step: &mut Step, m: &mut PolicyMemory, why: &str) {
    if m.redis.escalated_still_critical {
        return;
    }
    m.redis.escalated_still_critical = true;
    let lines = findings(step, m);
    incidents::set_findings(step, m, Runbook::RedisMemory, lines);
    incidents::escalate_because(step, m, Runbook::RedisMemory, why);
}

/// What the audit found (when it ran for this incident), the raise, and option C.
pub(crate) fn findings(step: &Step, m: &PolicyMemory) -> Vec<String> {
    let mut out = Vec::new();
    let started = incidents::find(m, Runbook::RedisMemory).map(|i| i.started_at);
    if let (Some(audit), Some(started)) = (&step.ctx.last_audit, started)
        && audit.at >= started
    {
        out.extend(audit_lines(audit));
    }
    if let Some(r) = &m.redis.max_memory_raise {
        out.push(if r.refused {
            format!(
                "maxmemory could not be raised: Redis did not take {} (CONFIG renamed or denied?)",
                mib(r.target_bytes)
            )
        } else {
            format!(
                "maxmemory raised from {} to {} in {} step(s); put back after the incident",
                mib(r.original_bytes),
                mib(r.target_bytes),
                r.steps
            )
        });
    }
    if let Some((first, last)) = super::leak::growth(step, m)
        && last.count > first.count
    {
        out.push(format!(
            "keys without TTL: {} → {} over the last {}",
            first.count,
            last.count,
            crate::api::Duration::from_std(elapsed(last.at, first.at))
        ));
    }
    if m.redis.level >= crate::api::MemoryLevel::Critical || m.redis.remediation_runs > 0 {
        out.push(OPTION_C.to_owned());
    }
    out
}

fn top(map: &std::collections::BTreeMap<String, u64>, n: usize, unit: &str) -> String {
    let mut all: Vec<(&String, &u64)> = map.iter().collect();
    all.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    all.iter()
        .take(n)
        .map(|(k, v)| format!("{k} {v}{unit}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The audit's findings, one a line.
pub fn audit_lines(audit: &AuditOutcome) -> Vec<String> {
    let mut out = Vec::new();
    if !audit.bytes_by_prefix.is_empty() {
        out.push(format!(
            "top prefixes by bytes ({} keys sampled): {}",
            audit.sampled,
            top(&audit.bytes_by_prefix, 5, " bytes")
        ));
    }
    if !audit.without_ttl_by_prefix.is_empty() {
        let examples = if audit.without_ttl_examples.is_empty() {
            String::new()
        } else {
            format!(
                "; e.g. {}",
                audit
                    .without_ttl_examples
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        out.push(format!(
            "keys without TTL by prefix: {}{examples}",
            top(&audit.without_ttl_by_prefix, 5, "")
        ));
    }
    if !audit.largest_keys.is_empty() {
        out.push(format!(
            "largest keys: {}",
            audit
                .largest_keys
                .iter()
                .take(5)
                .map(|k| format!("{} ({} bytes)", k.key, k.bytes))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out
}
