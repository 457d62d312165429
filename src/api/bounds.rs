//! The largest (and for the interval, the smallest) value each duration knob of a MemoryTier may
//! take, declared once. The CRD's rules are written from this table (so the API server and
//! `tierguard check` refuse a spec past them), and the controller clamps what reaches it anyway
//! ([`clamp`]): an older CRD without the rules cannot make it wait for hours.
//!
//! Counts, lengths and list sizes are bounded in the schema attributes of `spec.rs` itself.

use kube::core::{Message, Rule};

use super::{Duration, MemoryTierSpec};

const fn minutes(m: u64) -> Duration {
    Duration::from_secs(m * 60)
}

const fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}

/// The smallest `spec.metrics.interval`: a tier reconciles at most ten times a second.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// A duration field, by its path within a section of the spec, and its largest value.
pub struct Bound {
    pub section: &'static str,
    pub field: &'static str,
    pub max: Duration,
}

const fn bound(section: &'static str, field: &'static str, max: Duration) -> Bound {
    Bound {
        section,
        field,
        max,
    }
}

/// Every bounded duration of the spec.
pub const DURATIONS: &[Bound] = &[
    bound("canary", "rampInterval", hours(24)),
    bound("cache", "ttl", hours(30 * 24)),
    bound("cache", "ttlJitter", hours(24)),
    bound("cache", "incidentTtl", hours(30 * 24)),
    bound("cache", "staleTtl", hours(24)),
    bound("breaker", "latencyThreshold", minutes(10)),
    bound("breaker", "resetAfter", hours(24)),
    bound("breaker", "maxOpenDuration", hours(7 * 24)),
    bound("breaker", "bridgeClosedGaps", hours(24)),
    bound("redis", "memoryLevels.watchFor", hours(24)),
    bound("redis", "memoryLevels.warningFor", hours(24)),
    bound("redis", "memoryLevels.criticalFor", hours(24)),
    bound("redis", "evictions.rateWindow", hours(24)),
    bound("redis", "evictions.for", hours(24)),
    bound("redis", "remediation.maxDuration", minutes(10)),
    bound("redis", "remediation.cooldown", hours(7 * 24)),
    bound("redis", "keysWithoutTtl.window", hours(24)),
    bound("metrics", "rateWindow", hours(24)),
    bound("metrics", "interval", hours(1)),
    bound("metrics", "timeout", minutes(1)),
    bound("rollback", "p50LatencyFor", hours(24)),
    bound("rollback", "errorRateFor", hours(24)),
    bound("rollback", "breakerOpenFor", hours(7 * 24)),
    bound("rollback", "mem0WriteSuccessFor", hours(24)),
    bound("rollback", "phaseHold", hours(24)),
    bound("stampede", "for", hours(24)),
    bound("warming", "timeout", minutes(1)),
    bound("notify", "escalate.nearActionLead", hours(24)),
];

/// The longest timeout of one call of the breaker probe: it runs inside a reconcile.
pub const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest and longest breaker probe interval: a tenant cannot make the controller hammer
/// mem0, nor diagnose an outage only once a day.
pub const MIN_PROBE_INTERVAL: Duration = Duration::from_secs(1);
pub const MAX_PROBE_INTERVAL: Duration = hours(1);

/// The largest `after` of an escalation level.
pub const MAX_ESCALATION_AFTER: Duration = hours(24);

/// The bound of one duration field (`section`, `field` as in [`DURATIONS`]).
pub fn max_of(section: &str, field: &str) -> Duration {
    DURATIONS
        .iter()
        .find(|b| b.section == section && b.field == field)
        .map(|b| b.max)
        .unwrap_or_else(|| panic!("no bound for {section}.{field}"))
}

/// CEL's reserved words, which a property name must be escaped from (`for` is `__for__`), as the
/// API server reads them.
const CEL_RESERVED: [&str; 21] = [
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// A field path as CEL names it.
fn cel_path(field: &str) -> String {
    field
        .split('.')
        .map(|part| {
            if CEL_RESERVED.contains(&part) {
                format!("__{part}__")
            } else {
                part.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The CEL rule of one bound, for the section's field in `MemoryTierSpec`.
pub fn rule(section: &str, field: &str) -> Rule {
    let max = max_of(section, field);
    let path = cel_path(field);
    Rule::new(format!("duration(self.{path}) <= duration('{max}')"))
        .message(Message::Message(format!("{field} must be at most {max}")))
        .field_path(format!(".{field}"))
}

/// The rule bounding every escalation level's `after`.
pub fn escalation_rule() -> Rule {
    let max = MAX_ESCALATION_AFTER;
    Rule::new(format!(
        "self.escalation.all(l, duration(l.after) <= duration('{max}'))"
    ))
    .message(Message::Message(format!(
        "an escalation level's after must be at most {max}"
    )))
    .field_path(".escalation")
}

/// The rule bounding `breaker.probe.timeout`.
pub fn probe_timeout_rule() -> Rule {
    Rule::new(format!(
        "duration(self.timeout) <= duration('{MAX_PROBE_TIMEOUT}')"
    ))
    .message(Message::Message(format!(
        "timeout must be at most {MAX_PROBE_TIMEOUT}"
    )))
    .field_path(".timeout")
}

/// The rule bounding `breaker.probe.interval`.
pub fn probe_interval_rule() -> Rule {
    Rule::new(format!(
        "duration(self.interval) >= duration('{MIN_PROBE_INTERVAL}') && duration(self.interval) <= duration('{MAX_PROBE_INTERVAL}')"
    ))
    .message(Message::Message(format!(
        "interval must be between {MIN_PROBE_INTERVAL} and {MAX_PROBE_INTERVAL}"
    )))
    .field_path(".interval")
}

/// The rule of the smallest interval.
pub fn interval_rule() -> Rule {
    Rule::new(format!(
        "duration(self.interval) >= duration('{MIN_INTERVAL}')"
    ))
    .message(Message::Message(format!(
        "interval must be at least {MIN_INTERVAL}"
    )))
    .field_path(".interval")
}

/// The spec with every bounded duration within its bound: what the controller works with,
/// whatever the CRD installed let through.
pub fn clamp(spec: &MemoryTierSpec) -> MemoryTierSpec {
    let mut s = spec.clone();
    let fields: [(&mut Duration, &str, &str); 28] = [
        (&mut s.canary.ramp_interval, "canary", "rampInterval"),
        (&mut s.cache.ttl, "cache", "ttl"),
        (&mut s.cache.ttl_jitter, "cache", "ttlJitter"),
        (&mut s.cache.incident_ttl, "cache", "incidentTtl"),
        (&mut s.cache.stale_ttl, "cache", "staleTtl"),
        (
            &mut s.breaker.latency_threshold,
            "breaker",
            "latencyThreshold",
        ),
        (&mut s.breaker.reset_after, "breaker", "resetAfter"),
        (
            &mut s.breaker.max_open_duration,
            "breaker",
            "maxOpenDuration",
        ),
        (
            &mut s.breaker.bridge_closed_gaps,
            "breaker",
            "bridgeClosedGaps",
        ),
        (
            &mut s.redis.memory_levels.watch_for,
            "redis",
            "memoryLevels.watchFor",
        ),
        (
            &mut s.redis.memory_levels.warning_for,
            "redis",
            "memoryLevels.warningFor",
        ),
        (
            &mut s.redis.memory_levels.critical_for,
            "redis",
            "memoryLevels.criticalFor",
        ),
        (
            &mut s.redis.evictions.rate_window,
            "redis",
            "evictions.rateWindow",
        ),
        (
            &mut s.redis.evictions.for_duration,
            "redis",
            "evictions.for",
        ),
        (
            &mut s.redis.remediation.max_duration,
            "redis",
            "remediation.maxDuration",
        ),
        (
            &mut s.redis.remediation.cooldown,
            "redis",
            "remediation.cooldown",
        ),
        (&mut s.metrics.rate_window, "metrics", "rateWindow"),
        (&mut s.metrics.interval, "metrics", "interval"),
        (&mut s.metrics.timeout, "metrics", "timeout"),
        (&mut s.rollback.p50_latency_for, "rollback", "p50LatencyFor"),
        (&mut s.rollback.error_rate_for, "rollback", "errorRateFor"),
        (
            &mut s.rollback.breaker_open_for,
            "rollback",
            "breakerOpenFor",
        ),
        (
            &mut s.rollback.mem0_write_success_for,
            "rollback",
            "mem0WriteSuccessFor",
        ),
        (&mut s.rollback.phase_hold, "rollback", "phaseHold"),
        (&mut s.stampede.for_duration, "stampede", "for"),
        (
            &mut s.redis.keys_without_ttl.window,
            "redis",
            "keysWithoutTtl.window",
        ),
        (&mut s.warming.timeout, "warming", "timeout"),
        (
            &mut s.notify.escalate.near_action_lead,
            "notify",
            "escalate.nearActionLead",
        ),
    ];
    for (value, section, field) in fields {
        *value = (*value).min(max_of(section, field));
    }
    s.metrics.interval = s.metrics.interval.max(MIN_INTERVAL);
    if let Some(probe) = &mut s.breaker.probe {
        probe.timeout = probe.timeout.min(MAX_PROBE_TIMEOUT);
        probe.interval = probe.interval.clamp(MIN_PROBE_INTERVAL, MAX_PROBE_INTERVAL);
    }
    for level in &mut s.notify.escalation {
        level.after = level.after.min(MAX_ESCALATION_AFTER);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bound_is_clamped_and_every_field_has_a_rule() {
        let mut huge = MemoryTierSpec {
            target: serde_json::from_value(serde_json::json!({"configMapName": "f"})).unwrap(),
            ..serde_json::from_value(serde_json::json!({"target": {"configMapName": "f"}})).unwrap()
        };
        let forever = Duration::from_secs(2_000_000 * 3600);
        huge.warming.timeout = forever;
        huge.redis.remediation.max_duration = forever;
        huge.metrics.interval = Duration::from_std(std::time::Duration::from_nanos(1));
        huge.metrics.timeout = forever;
        huge.notify.escalation[2].after = forever;
        let clamped = clamp(&huge);
        assert_eq!(clamped.warming.timeout, minutes(1));
        assert_eq!(clamped.redis.remediation.max_duration, minutes(10));
        assert_eq!(clamped.metrics.interval, MIN_INTERVAL);
        assert_eq!(clamped.metrics.timeout, minutes(1));
        assert_eq!(clamped.notify.escalation[2].after, MAX_ESCALATION_AFTER);
        // A spec within its bounds is left as it is.
        let defaults: MemoryTierSpec =
            serde_json::from_value(serde_json::json!({"target": {"configMapName": "f"}})).unwrap();
        assert_eq!(clamp(&defaults), defaults);
        // Every bound has its rule in the CRD.
        let crd =
            serde_json::to_string(&<super::super::MemoryTier as kube::CustomResourceExt>::crd())
                .unwrap();
        for b in DURATIONS {
            let rule = format!(
                "duration(self.{}) <= duration('{}')",
                cel_path(b.field),
                b.max
            );
            assert!(crd.contains(&rule), "no rule {rule}");
        }
    }
}
