//! The controller's own metrics (prometheus-client), served on /metrics.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::api::{Observation, Phase, Signal};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub namespace: String,
    pub tier: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    pub namespace: String,
    pub tier: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignalLabels {
    pub namespace: String,
    pub tier: String,
    pub signal: String,
}

/// Every metric the controller exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub reconciles: Counter,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub actions: Family<ActionLabels, Counter>,
    pub tier_phase: Family<PhaseLabels, Gauge>,
    pub tier_signal: Family<SignalLabels, Gauge<f64, AtomicU64>>,
    pub redis_evicted_keys: Family<TierLabels, Counter>,
    pub leader: Gauge,
}

const ALL_PHASES: [Phase; 8] = [
    Phase::Pending,
    Phase::Healthy,
    Phase::Degraded,
    Phase::RollingBack,
    Phase::RolledBack,
    Phase::Recovering,
    Phase::Paused,
    Phase::Stalled,
];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tierguard");
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by kind of error",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]);
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            reconcile_duration.clone(),
        );
        let actions = Family::<ActionLabels, Counter>::default();
        registry.register(
            "actions",
            "Actions taken, by action and outcome",
            actions.clone(),
        );
        let tier_phase = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "tier_phase",
            "1 for the phase each MemoryTier is in, 0 for the others",
            tier_phase.clone(),
        );
        let tier_signal = Family::<SignalLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "tier_signal",
            "The last known value of each signal of each MemoryTier (absent when unknown)",
            tier_signal.clone(),
        );
        let redis_evicted_keys = Family::<TierLabels, Counter>::default();
        registry.register(
            "redis_evicted_keys",
            "Redis's evicted_keys counter of each MemoryTier's Redis (summed over masters); it resets when Redis restarts, so rate() gives the eviction rate of the runbook's alert",
            redis_evicted_keys.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            reconciles,
            reconcile_errors,
            reconcile_duration,
            actions,
            tier_phase,
            tier_signal,
            redis_evicted_keys,
            leader,
        }
    }
}

impl Metrics {
    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Record a tier's phase: 1 for the current phase, 0 for every other.
    pub fn set_phase(&self, namespace: &str, tier: &str, phase: Phase) {
        for p in ALL_PHASES {
            let labels = PhaseLabels {
                namespace: namespace.to_owned(),
                tier: tier.to_owned(),
                phase: p.as_str().to_owned(),
            };
            self.tier_phase
                .get_or_create(&labels)
                .set(i64::from(p == phase));
        }
    }

    /// Record a tier's signals; unknown signals are removed rather than reported as zero.
    pub fn set_signals(&self, namespace: &str, tier: &str, observation: &Observation) {
        for signal in Signal::ALL.iter().filter(|s| s.on_telemetry()) {
            let labels = SignalLabels {
                namespace: namespace.to_owned(),
                tier: tier.to_owned(),
                signal: signal.name().to_owned(),
            };
            match observation.get(*signal).and_then(|v| v.as_gauge()) {
                Some(v) => {
                    self.tier_signal.get_or_create(&labels).set(v);
                }
                None => {
                    self.tier_signal.remove(&labels);
                }
            }
        }
    }

    /// Record Redis's evicted_keys counter as a counter: a reading below the last one is a reset
    /// (Redis restarted), exported as a new series start so that `rate()` treats it as one.
    pub fn set_evicted_keys(&self, namespace: &str, tier: &str, evicted: Option<u64>) {
        let labels = TierLabels {
            namespace: namespace.to_owned(),
            tier: tier.to_owned(),
        };
        let Some(raw) = evicted else {
            self.redis_evicted_keys.remove(&labels);
            return;
        };
        let current = self.redis_evicted_keys.get_or_create(&labels).get();
        if raw < current {
            self.redis_evicted_keys.remove(&labels);
        }
        let counter = self.redis_evicted_keys.get_or_create(&labels);
        counter.inc_by(raw.saturating_sub(counter.get()));
    }

    /// Forget a deleted tier's series.
    pub fn forget_tier(&self, namespace: &str, tier: &str) {
        for p in ALL_PHASES {
            self.tier_phase.remove(&PhaseLabels {
                namespace: namespace.to_owned(),
                tier: tier.to_owned(),
                phase: p.as_str().to_owned(),
            });
        }
        self.set_signals(namespace, tier, &Observation::default());
        self.set_evicted_keys(namespace, tier, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_and_signals_render_and_unknown_signals_disappear() {
        let metrics = Metrics::default();
        metrics.set_phase("clinic", "backend", Phase::RollingBack);
        let observation = Observation {
            p50_latency_ms: Some(1200.0),
            redis_used_memory_percent: Some(91.5),
            ..Observation::default()
        };
        metrics.set_signals("clinic", "backend", &observation);
        let text = metrics.render();
        assert!(
            text.contains(
                r#"tierguard_tier_phase{namespace="clinic",tier="backend",phase="RollingBack"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"tierguard_tier_phase{namespace="clinic",tier="backend",phase="Healthy"} 0"#
        ));
        assert!(text.contains(
            r#"tierguard_tier_signal{namespace="clinic",tier="backend",signal="p50LatencyMs"} 1200.0"#
        ), "{text}");
        metrics.set_signals("clinic", "backend", &Observation::default());
        assert!(!metrics.render().contains("p50LatencyMs"));
        metrics.forget_tier("clinic", "backend");
        assert!(!metrics.render().contains("tier=\"backend\""));
    }

    #[test]
    fn evicted_keys_is_a_counter_that_resets_with_redis() {
        let metrics = Metrics::default();
        let line = |m: &Metrics| {
            m.render()
                .lines()
                .find(|l| l.starts_with("tierguard_redis_evicted_keys_total{"))
                .map(str::to_owned)
        };
        metrics.set_evicted_keys("clinic", "backend", Some(1200));
        assert_eq!(
            line(&metrics).as_deref(),
            Some(r#"tierguard_redis_evicted_keys_total{namespace="clinic",tier="backend"} 1200"#)
        );
        assert!(
            metrics
                .render()
                .contains("# TYPE tierguard_redis_evicted_keys counter")
        );
        metrics.set_evicted_keys("clinic", "backend", Some(1500));
        assert!(line(&metrics).unwrap().ends_with(" 1500"));
        // Redis restarted: the counter starts again below its last value.
        metrics.set_evicted_keys("clinic", "backend", Some(40));
        assert!(line(&metrics).unwrap().ends_with(" 40"));
        metrics.set_evicted_keys("clinic", "backend", None);
        assert_eq!(line(&metrics), None);
    }
}
