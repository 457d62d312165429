//! The controller's own metrics (prometheus-client), served on /metrics.
//!
//! Every counter exists from start-up at 0 (each error kind, each action and outcome), so a
//! `rate()` sees the first error; `tierguard_build_info` says what runs; the `process_*` families
//! come from /proc. The exposition is OpenMetrics or, for a client that asks for `text/plain`, the
//! Prometheus text format 0.0.4.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::api::{
    ActionKind, ActionOutcome, MemoryTierSpec, Mitigation, MitigationName, Observation, Phase,
    PolicyMemory, ProbeClass, Signal,
};
use crate::policy::thresholds;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: String,
    pub outcome: String,
}

/// A tier's namespace or name as a label value: one allocation shared by all of a tier's series
/// (a tier has dozens; with a string each, the label values were most of the registry).
pub type Name = Arc<String>;

/// `namespace` and `tier` as label values shared by the series created with them.
fn names(namespace: &str, tier: &str) -> (Name, Name) {
    (Arc::new(namespace.to_owned()), Arc::new(tier.to_owned()))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub namespace: Name,
    pub tier: Name,
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    pub namespace: Name,
    pub tier: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    pub namespace: String,
    pub tier: String,
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignalLabels {
    pub namespace: Name,
    pub tier: Name,
    pub signal: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ThresholdLabels {
    pub namespace: Name,
    pub tier: Name,
    pub signal: &'static str,
    pub threshold: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MitigationLabels {
    pub namespace: Name,
    pub tier: Name,
    pub mitigation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
    build_date: &'static str,
}

/// The exposition formats /metrics speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    /// The Prometheus text format 0.0.4.
    Text,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }

    /// The format an `Accept` header prefers: OpenMetrics when it ranks it at least as high as
    /// `text/plain`, the text format otherwise (also without a header, as client_golang does).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let (mut open, mut text) = (None::<f32>, None::<f32>);
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            let slot = match media.as_str() {
                "application/openmetrics-text" => &mut open,
                "text/plain" | "text/*" | "*/*" => &mut text,
                _ => continue,
            };
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
        match (open, text) {
            (Some(o), t) if o > 0.0 && o >= t.unwrap_or(0.0) => Format::OpenMetrics,
            _ => Format::Text,
        }
    }
}

/// Every metric the controller exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// The length of the last page rendered: the next is written into a buffer of about that
    /// size at once, not grown by doubling (at 10,000 tiers a page is 31 MiB, and each doubling
    /// copies it with the old buffer still held).
    page_len: Arc<AtomicUsize>,
    pub reconciles: Counter,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub actions: Family<ActionLabels, Counter>,
    pub tier_phase: Family<PhaseLabels, Gauge>,
    pub tier_signal: Family<SignalLabels, Gauge<f64, AtomicU64>>,
    pub tier_threshold: Family<ThresholdLabels, Gauge<f64, AtomicU64>>,
    pub tier_mitigation: Family<MitigationLabels, Gauge>,
    pub redis_evicted_keys: Family<TierLabels, Counter>,
    pub breaker_probes: Family<ProbeLabels, Counter>,
    pub tier_reconciled: Family<TierLabels, Gauge<f64, AtomicU64>>,
    pub status_writes: Counter,
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
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix("tierguard");
        let build = crate::build_info::BUILD_INFO;
        registry.register(
            "build",
            "The version, git commit and build date of this controller (always 1)",
            Info::new(BuildLabels {
                version: build.version,
                commit: build.commit,
                build_date: build.build_date,
            }),
        );
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by kind of error",
            reconcile_errors.clone(),
        );
        for step in super::error::Step::ALL {
            drop(reconcile_errors.get_or_create(&ErrorLabels {
                kind: step.as_str().to_owned(),
            }));
        }
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
        // Every action the actuators carry out (Events are not counted), with every outcome an
        // action ends with (`started` is only a claim's).
        for action in ActionKind::ALL.iter().filter(|k| **k != ActionKind::Event) {
            for outcome in ActionOutcome::ALL
                .iter()
                .filter(|o| **o != ActionOutcome::Started)
            {
                drop(actions.get_or_create(&ActionLabels {
                    action: action.as_str().to_owned(),
                    outcome: outcome.as_str().to_owned(),
                }));
            }
        }
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
        let tier_threshold = Family::<ThresholdLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "tier_threshold",
            "Each bound a MemoryTier's signal is held against (rollback, stampede, recovered, Redis memory levels), in the signal's unit",
            tier_threshold.clone(),
        );
        let tier_mitigation = Family::<MitigationLabels, Gauge>::default();
        registry.register(
            "tier_mitigation",
            "1 while the mitigation is in force on the MemoryTier, 0 otherwise",
            tier_mitigation.clone(),
        );
        let redis_evicted_keys = Family::<TierLabels, Counter>::default();
        registry.register(
            "redis_evicted_keys",
            "Redis's evicted_keys counter of each MemoryTier's Redis (summed over masters); it resets when Redis restarts, so rate() gives the eviction rate of the runbook's alert",
            redis_evicted_keys.clone(),
        );
        let breaker_probes = Family::<ProbeLabels, Counter>::default();
        registry.register(
            "breaker_probes",
            "Breaker probes made for each MemoryTier (spec.breaker.probe), by what they found: Down, AuthFailure, RateLimited or Healthy",
            breaker_probes.clone(),
        );
        let tier_reconciled = Family::<TierLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "tier_last_reconcile_timestamp_seconds",
            "When each MemoryTier was last reconciled to the end (Unix seconds); status.observed is refreshed less often when nothing changes",
            tier_reconciled.clone(),
        );
        let status_writes = Counter::default();
        registry.register(
            "status_writes",
            "Status writes of MemoryTiers after a decision (a reconcile where only live readings moved writes none)",
            status_writes.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Metrics {
            page_len: Arc::default(),
            registry: Arc::new(root),
            reconciles,
            reconcile_errors,
            reconcile_duration,
            actions,
            tier_phase,
            tier_signal,
            tier_threshold,
            tier_mitigation,
            redis_evicted_keys,
            breaker_probes,
            tier_reconciled,
            status_writes,
            leader,
        }
    }
}

impl Metrics {
    /// The OpenMetrics exposition of every metric.
    pub fn render(&self) -> String {
        self.render_as(Format::OpenMetrics)
    }

    /// The exposition of every metric in `format`.
    pub fn render_as(&self, format: Format) -> String {
        let last = self.page_len.load(Ordering::Relaxed);
        let mut out = String::with_capacity(last + last / 16);
        let written = match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
            Format::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
        };
        written.expect("writing to a String cannot fail");
        self.page_len.store(out.len(), Ordering::Relaxed);
        out
    }

    /// Record a tier's phase: 1 for the current phase, 0 for every other.
    pub fn set_phase(&self, namespace: &str, tier: &str, phase: Phase) {
        let (ns, tier_name) = names(namespace, tier);
        for p in ALL_PHASES {
            let labels = PhaseLabels {
                namespace: ns.clone(),
                tier: tier_name.clone(),
                phase: p.as_str(),
            };
            self.tier_phase
                .get_or_create(&labels)
                .set(i64::from(p == phase));
        }
    }

    /// Record a tier's signals; unknown signals are removed rather than reported as zero.
    pub fn set_signals(&self, namespace: &str, tier: &str, observation: &Observation) {
        let (ns, tier_name) = names(namespace, tier);
        for signal in Signal::ALL.iter().filter(|s| s.on_telemetry()) {
            let labels = SignalLabels {
                namespace: ns.clone(),
                tier: tier_name.clone(),
                signal: signal.name(),
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

    /// Record the bounds a tier's signals are held against, and which mitigations are in force.
    pub fn set_bounds(
        &self,
        namespace: &str,
        tier: &str,
        spec: &MemoryTierSpec,
        memory: &PolicyMemory,
        active: &[Mitigation],
    ) {
        let (ns, tier_name) = names(namespace, tier);
        self.forget_thresholds(namespace, tier);
        for t in thresholds::thresholds(spec, memory) {
            self.tier_threshold
                .get_or_create(&ThresholdLabels {
                    namespace: ns.clone(),
                    tier: tier_name.clone(),
                    signal: t.signal.name(),
                    threshold: t.name,
                })
                .set(t.value);
        }
        for name in MitigationName::ALL {
            self.tier_mitigation
                .get_or_create(&MitigationLabels {
                    namespace: ns.clone(),
                    tier: tier_name.clone(),
                    mitigation: name.as_str(),
                })
                .set(i64::from(active.iter().any(|m| m.name == *name)));
        }
    }

    fn forget_thresholds(&self, namespace: &str, tier: &str) {
        let (ns, tier_name) = names(namespace, tier);
        // A bound that is no longer known (the error-rate baseline) must not linger.
        let spec_all = thresholds::thresholds(
            &default_spec(),
            &PolicyMemory {
                error_rate_baseline_percent: Some(0.0),
                ..PolicyMemory::default()
            },
        );
        for t in spec_all {
            self.tier_threshold.remove(&ThresholdLabels {
                namespace: ns.clone(),
                tier: tier_name.clone(),
                signal: t.signal.name(),
                threshold: t.name,
            });
        }
    }

    /// Record Redis's evicted_keys counter as a counter: a reading below the last one is a reset
    /// (Redis restarted), exported as a new series start so that `rate()` treats it as one.
    pub fn set_evicted_keys(&self, namespace: &str, tier: &str, evicted: Option<u64>) {
        let (ns, tier_name) = names(namespace, tier);
        let labels = TierLabels {
            namespace: ns.clone(),
            tier: tier_name.clone(),
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

    /// Count the breaker probe this observation made, if it made one.
    pub fn count_probe(&self, namespace: &str, tier: &str, observation: &Observation) {
        if let Some(probe) = &observation.breaker_probe {
            self.breaker_probes
                .get_or_create(&ProbeLabels {
                    namespace: namespace.to_owned(),
                    tier: tier.to_owned(),
                    class: probe.class.as_str().to_owned(),
                })
                .inc();
        }
    }

    /// Record that a tier was reconciled to the end at `at`.
    pub fn set_reconciled(&self, namespace: &str, tier: &str, at: jiff::Timestamp) {
        let (ns, tier_name) = names(namespace, tier);
        self.tier_reconciled
            .get_or_create(&TierLabels {
                namespace: ns.clone(),
                tier: tier_name.clone(),
            })
            .set(at.as_millisecond() as f64 / 1000.0);
    }

    /// Forget a deleted tier's series.
    pub fn forget_tier(&self, namespace: &str, tier: &str) {
        let (ns, tier_name) = names(namespace, tier);
        self.tier_reconciled.remove(&TierLabels {
            namespace: ns.clone(),
            tier: tier_name.clone(),
        });
        for p in ALL_PHASES {
            self.tier_phase.remove(&PhaseLabels {
                namespace: ns.clone(),
                tier: tier_name.clone(),
                phase: p.as_str(),
            });
        }
        self.set_signals(namespace, tier, &Observation::default());
        self.forget_thresholds(namespace, tier);
        for name in MitigationName::ALL {
            self.tier_mitigation.remove(&MitigationLabels {
                namespace: ns.clone(),
                tier: tier_name.clone(),
                mitigation: name.as_str(),
            });
        }
        self.set_evicted_keys(namespace, tier, None);
        for class in ProbeClass::ALL {
            self.breaker_probes.remove(&ProbeLabels {
                namespace: namespace.to_owned(),
                tier: tier.to_owned(),
                class: class.as_str().to_owned(),
            });
        }
    }
}

/// A spec with every default, to enumerate the threshold series' names.
fn default_spec() -> MemoryTierSpec {
    serde_json::from_value(serde_json::json!({"target": {"configMapName": "x"}}))
        .expect("a spec of defaults parses")
}

/// The standard `process_*` families, read from /proc/self at each scrape (Linux only; elsewhere,
/// or when /proc cannot be read, they are left out).
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(me) = procfs::process::Process::myself() else {
            return Ok(());
        };
        let Ok(stat) = me.stat() else {
            return Ok(());
        };
        let ticks = procfs::ticks_per_second() as f64;
        let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let mut gauge = |name: &str, help: &str, value: f64| -> Result<(), std::fmt::Error> {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            (stat.rss * procfs::page_size()) as f64,
        )?;
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            stat.vsize as f64,
        )?;
        gauge(
            "process_threads",
            "Number of OS threads in the process",
            stat.num_threads as f64,
        )?;
        if let Ok(boot) = procfs::boot_time_secs() {
            gauge(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                boot as f64 + stat.starttime as f64 / ticks,
            )?;
        }
        if let Ok(fds) = me.fd_count() {
            gauge(
                "process_open_fds",
                "Number of open file descriptors",
                fds as f64,
            )?;
        }
        if let Ok(limits) = me.limits()
            && let procfs::process::LimitValue::Value(max) = limits.max_open_files.soft_limit
        {
            gauge(
                "process_max_fds",
                "Maximum number of open file descriptors",
                max as f64,
            )?;
        }
        Ok(())
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
        let spec = default_spec();
        metrics.set_bounds("clinic", "backend", &spec, &PolicyMemory::default(), &[]);
        let text = metrics.render();
        assert!(text.contains(
            r#"tierguard_tier_threshold{namespace="clinic",tier="backend",signal="p50LatencyMs",threshold="rollback"} 1000.0"#
        ), "{text}");
        assert!(text.contains(
            r#"tierguard_tier_mitigation{namespace="clinic",tier="backend",mitigation="rollback-canary"} 0"#
        ), "{text}");
        metrics.forget_tier("clinic", "backend");
        assert!(!metrics.render().contains("tier=\"backend\""));
    }

    #[test]
    fn counters_build_info_and_process_metrics_exist_from_start_up() {
        let text = Metrics::default().render_as(Format::Text);
        for line in [
            r#"tierguard_reconcile_errors_total{kind="status"} 0"#,
            r#"tierguard_actions_total{action="remediate-redis",outcome="failed"} 0"#,
            "tierguard_reconciles_total 0",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        assert!(text.contains("tierguard_build_info{version=\""), "{text}");
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
        assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
        // Every family has its help text.
        let families = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let helped = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(families, helped, "{text}");
    }

    #[test]
    fn accept_headers_choose_the_format() {
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Text);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        // What Prometheus 2.x sends.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0.2, text/plain")),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; version=1.0.0")),
            Format::OpenMetrics
        );
    }

    #[test]
    fn breaker_probes_are_counted_by_finding_and_forgotten_with_the_tier() {
        let metrics = Metrics::default();
        let probed = |class| Observation {
            breaker_probe: Some(crate::api::ProbeReading {
                at: "2026-12-02T03:00:00Z".parse().unwrap(),
                class,
                detail: String::new(),
                retry_after_seconds: None,
                latency_ms: None,
            }),
            ..Observation::default()
        };
        metrics.count_probe("clinic", "backend", &probed(ProbeClass::AuthFailure));
        metrics.count_probe("clinic", "backend", &probed(ProbeClass::AuthFailure));
        metrics.count_probe("clinic", "backend", &Observation::default());
        let text = metrics.render_as(Format::Text);
        assert!(
            text.contains(
                "tierguard_breaker_probes_total{namespace=\"clinic\",tier=\"backend\",class=\"AuthFailure\"} 2"
            ),
            "{text}"
        );
        metrics.forget_tier("clinic", "backend");
        assert!(
            !metrics
                .render_as(Format::Text)
                .contains("class=\"AuthFailure\"")
        );
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
