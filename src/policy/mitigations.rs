//! The overlays in force, derived from the runbooks' state in the policy memory. Each has a stable
//! name, the reason it was applied, since when, and the condition that ends it.

use std::collections::BTreeMap;

use super::effective::{
    CACHE_SERVE_STALE, CACHE_STALE_TTL, CACHE_TTL, CANARY_SAMPLE_RATE, FAST_PATH_ENABLED,
    MEM0_READS_ENABLED, MEM0_SHADOW_MODE, format_rate,
};
use crate::api::{MemoryTierSpec, Mitigation, MitigationName, PolicyMemory, RESUME_ANNOTATION};

fn overrides<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    // A handful of keys: inserting one by one beats collecting (which sorts first).
    let mut map = BTreeMap::new();
    for (k, v) in pairs {
        map.insert(k.to_owned(), v);
    }
    map
}

const OFF: &str = "false";

/// Every active mitigation, in a fixed order.
pub fn active(spec: &MemoryTierSpec, m: &PolicyMemory) -> Vec<Mitigation> {
    let mut out = Vec::new();
    let interval = spec.canary.ramp_interval;
    if let Some(rb) = &m.rollback {
        let resume = if spec.rollback.auto_resume {
            "the rollback is verified (autoResume)".to_owned()
        } else {
            format!(
                "a human resumes the tier: annotation {RESUME_ANNOTATION} set to a new value, or a spec change"
            )
        };
        match rb.features_off_at {
            None => out.push(Mitigation {
                name: MitigationName::RollbackCanary,
                reason: format!("canary rollback phase 1: {}", rb.reason),
                since: rb.started_at,
                until: format!(
                    "phase 1 holds {}, then the canary goes to 0.0 and phase 2 disables the features",
                    spec.rollback.phase_hold
                ),
                overrides: overrides([(CANARY_SAMPLE_RATE, format_rate(spec.canary.reduced_rate))]),
            }),
            Some(off) => out.push(Mitigation {
                name: MitigationName::RollbackFeatures,
                reason: format!("canary rollback phase 2: {}", rb.reason),
                since: off,
                until: resume,
                overrides: overrides([
                    (CANARY_SAMPLE_RATE, format_rate(0.0)),
                    (FAST_PATH_ENABLED, OFF.into()),
                    (MEM0_READS_ENABLED, OFF.into()),
                    (MEM0_SHADOW_MODE, OFF.into()),
                ]),
            }),
        }
    }
    if let Some(ramp) = &m.ramp {
        out.push(Mitigation {
            name: MitigationName::ResumeRamp,
            reason: ramp.reason.clone(),
            since: ramp.since,
            until: format!(
                "the canary is back at {}: +{} every {interval} while the rollback signals stay within bounds",
                format_rate(spec.canary.sample_rate),
                format_rate(spec.canary.ramp_step)
            ),
            overrides: overrides([(CANARY_SAMPLE_RATE, format_rate(ramp.rate))]),
        });
    }
    if let (Some(since), Some(reason)) = (m.breaker.mitigated_since, &m.breaker.mitigation_reason) {
        out.push(Mitigation {
            name: MitigationName::BreakerMem0Off,
            reason: reason.clone(),
            since,
            until: format!("the circuit breaker has been closed for {interval}"),
            overrides: overrides([
                (MEM0_READS_ENABLED, OFF.into()),
                (MEM0_SHADOW_MODE, OFF.into()),
            ]),
        });
    }
    if let Some(shed) = &m.breaker.rate_limit_shed {
        out.push(Mitigation {
            name: MitigationName::BreakerRateLimitShed,
            reason: "mem0 rate-limits the application (HTTP 429): the canary is reduced until mem0 writes succeed again".to_owned(),
            since: shed.since,
            until: format!(
                "the canary is back at {}: +{} each time mem0 write success stays at {}% or more for {interval}",
                format_rate(spec.canary.sample_rate),
                format_rate(spec.canary.ramp_step),
                super::signals::num(super::breaker::MEM0_WRITE_ALERT_BELOW_PERCENT)
            ),
            overrides: overrides([(CANARY_SAMPLE_RATE, format_rate(shed.canary_rate))]),
        });
    }
    if let Some(s) = &m.stampede {
        let over = format!(
            "the canary is back at its baseline and no stampede for {interval} (hit rate ≥ {}% or P50 ≤ {} ms)",
            super::signals::num(spec.stampede.hit_rate_below_percent),
            super::signals::num(spec.stampede.p50_latency_above_ms)
        );
        out.push(Mitigation {
            name: MitigationName::StampedeServeStale,
            reason: s.reason.clone(),
            since: s.started_at,
            until: over.clone(),
            overrides: overrides([
                (CACHE_SERVE_STALE, "true".into()),
                (
                    CACHE_STALE_TTL,
                    super::effective::whole_seconds(spec.cache.stale_ttl),
                ),
            ]),
        });
        out.push(Mitigation {
            name: MitigationName::StampedeTtl,
            reason: s.reason.clone(),
            since: s.started_at,
            until: over,
            overrides: overrides([(
                CACHE_TTL,
                super::effective::whole_seconds(spec.cache.incident_ttl),
            )]),
        });
        if s.canary_rate < spec.canary.sample_rate {
            out.push(Mitigation {
                name: MitigationName::StampedeShedLoad,
                reason: s.reason.clone(),
                since: s.started_at,
                until: format!(
                    "the canary is back at {}: +{} each time the hit rate stays above {}% for {interval}",
                    format_rate(spec.canary.sample_rate),
                    format_rate(spec.canary.ramp_step),
                    super::signals::num(spec.stampede.recover_above_percent)
                ),
                overrides: overrides([(CANARY_SAMPLE_RATE, format_rate(s.canary_rate))]),
            });
        }
    }
    out
}
