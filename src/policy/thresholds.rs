//! The bounds each signal is held against, as the spec (and the runbooks' defaults) set them: one
//! list, read by the controller's threshold series (the dashboard draws them next to the signals)
//! and by `kubectl tierguard status`.

use crate::api::Signal;
use crate::api::{MemoryTierSpec, PolicyMemory};

/// Which side of the bound is trouble.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Breach {
    Above,
    Below,
}

impl Breach {
    pub fn as_str(self) -> &'static str {
        match self {
            Breach::Above => "above",
            Breach::Below => "below",
        }
    }

    pub fn breached(self, value: f64, bound: f64) -> bool {
        match self {
            Breach::Above => value > bound,
            Breach::Below => value < bound,
        }
    }
}

/// One bound of one signal.
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    /// The signal it bounds.
    pub signal: Signal,
    /// What crossing it starts: `rollback`, `stampede`, `recovered`, or a Redis memory level.
    pub name: &'static str,
    pub value: f64,
    pub breach: Breach,
}

/// Every bound of the tier's signals. The error-rate bound is the baseline (the spec's, or the one
/// learned from healthy samples) plus the allowed increase, so it is absent until a baseline is
/// known.
pub fn thresholds(spec: &MemoryTierSpec, memory: &PolicyMemory) -> Vec<Threshold> {
    let r = &spec.rollback;
    let s = &spec.stampede;
    let levels = &spec.redis.memory_levels;
    let mut out = vec![
        Threshold {
            signal: Signal::P50LatencyMs,
            name: "rollback",
            value: r.p50_latency_ms,
            breach: Breach::Above,
        },
        Threshold {
            signal: Signal::P50LatencyMs,
            name: "stampede",
            value: s.p50_latency_above_ms,
            breach: Breach::Above,
        },
    ];
    if let Some(baseline) = r
        .error_rate_baseline_percent
        .or(memory.error_rate_baseline_percent)
    {
        out.push(Threshold {
            signal: Signal::ErrorRatePercent,
            name: "rollback",
            value: baseline + r.error_rate_increase_points,
            breach: Breach::Above,
        });
    }
    out.extend([
        Threshold {
            signal: Signal::CacheHitRatePercent,
            name: "stampede",
            value: s.hit_rate_below_percent,
            breach: Breach::Below,
        },
        Threshold {
            signal: Signal::CacheHitRatePercent,
            name: "recovered",
            value: s.recover_above_percent,
            breach: Breach::Below,
        },
        Threshold {
            signal: Signal::Mem0WriteSuccessPercent,
            name: "rollback",
            value: r.mem0_write_success_below_percent,
            breach: Breach::Below,
        },
    ]);
    for (name, value) in [
        ("watch", levels.watch),
        ("warning", levels.warning),
        ("critical", levels.critical),
    ] {
        out.push(Threshold {
            signal: Signal::RedisUsedMemoryPercent,
            name,
            value,
            breach: Breach::Above,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runbooks_defaults_and_a_learned_error_baseline() {
        let spec: MemoryTierSpec =
            serde_json::from_value(serde_json::json!({"target": {"configMapName": "x"}})).unwrap();
        let mut memory = PolicyMemory::default();
        let names = |t: &[Threshold]| {
            t.iter()
                .map(|t| (t.signal.name(), t.name, t.value))
                .collect::<Vec<_>>()
        };
        let without = thresholds(&spec, &memory);
        assert!(names(&without).contains(&("p50LatencyMs", "rollback", 1000.0)));
        assert!(names(&without).contains(&("redisUsedMemoryPercent", "critical", 90.0)));
        assert!(!without.iter().any(|t| t.signal == Signal::ErrorRatePercent));
        memory.error_rate_baseline_percent = Some(1.5);
        let with = thresholds(&spec, &memory);
        assert!(names(&with).contains(&("errorRatePercent", "rollback", 3.5)));
        assert!(Breach::Below.breached(90.0, 95.0) && !Breach::Above.breached(90.0, 95.0));
    }
}
