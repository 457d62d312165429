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
use std::sync::atomic::{AtomicUsize, Ordering};

use super::tier_metrics::TierTable;
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
    /// Every tier's own series.
    tiers: TierTable,
    pub status_writes: Counter,
    pub leader: Gauge,
}

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
        let tiers = TierTable::default();
        registry.register_collector(Box::new(tiers.clone()));
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
            tiers,
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

    /// The exposition in `format`, gzip-compressed as it is written: the page itself is never
    /// held (at 10,000 tiers it is 32 MiB of text, and a tenth of that compressed).
    pub fn render_gzip(&self, format: Format) -> Vec<u8> {
        use std::io::Write as _;
        /// Text written straight into the compressor.
        struct Compressing(flate2::write::GzEncoder<Vec<u8>>);
        impl std::fmt::Write for Compressing {
            fn write_str(&mut self, s: &str) -> std::fmt::Result {
                self.0.write_all(s.as_bytes()).map_err(|_| std::fmt::Error)
            }
        }
        let last = self.page_len.load(Ordering::Relaxed);
        let mut out = Compressing(flate2::write::GzEncoder::new(
            Vec::with_capacity(last / 8),
            flate2::Compression::fast(),
        ));
        let written = match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
            Format::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
        };
        written.expect("writing to memory cannot fail");
        let page = out.0.finish().expect("writing to memory cannot fail");
        self.page_len.store(page.len() * 8, Ordering::Relaxed);
        page
    }

    /// Record a tier's phase: 1 for the current phase, 0 for every other.
    pub fn set_phase(&self, namespace: &str, tier: &str, phase: Phase) {
        self.tiers
            .update(namespace, tier, |row| row.phase = Some(phase));
    }

    /// Record a tier's signals; unknown signals are removed rather than reported as zero.
    pub fn set_signals(&self, namespace: &str, tier: &str, observation: &Observation) {
        let signals = Signal::ALL
            .iter()
            .filter(|s| s.on_telemetry())
            .filter_map(|s| Some((*s, observation.get(*s)?.as_gauge()?)))
            .collect();
        self.tiers
            .update(namespace, tier, |row| row.signals = signals);
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
        let thresholds = thresholds::thresholds(spec, memory)
            .into_iter()
            .map(|t| (t.signal, t.name, t.value))
            .collect();
        let mitigations = MitigationName::ALL
            .iter()
            .enumerate()
            .filter(|(_, name)| active.iter().any(|m| m.name == **name))
            .fold(0u32, |bits, (i, _)| bits | 1 << i);
        self.tiers.update(namespace, tier, |row| {
            row.thresholds = thresholds;
            row.mitigations = Some(mitigations);
        });
    }

    /// Record Redis's evicted_keys counter as a counter: a reading below the last one is a reset
    /// (Redis restarted), and the series starts again from it, so that `rate()` treats it as one.
    pub fn set_evicted_keys(&self, namespace: &str, tier: &str, evicted: Option<u64>) {
        self.tiers
            .update(namespace, tier, |row| row.evicted_keys = evicted);
    }

    /// Count the breaker probe this observation made, if it made one.
    pub fn count_probe(&self, namespace: &str, tier: &str, observation: &Observation) {
        let Some(probe) = &observation.breaker_probe else {
            return;
        };
        let Some(class) = ProbeClass::ALL.iter().position(|c| *c == probe.class) else {
            return;
        };
        self.tiers.update(namespace, tier, |row| {
            row.probes.resize(ProbeClass::ALL.len(), 0);
            row.probes[class] += 1;
        });
    }

    /// Record that a tier was reconciled to the end at `at`.
    pub fn set_reconciled(&self, namespace: &str, tier: &str, at: jiff::Timestamp) {
        let at = at.as_millisecond() as f64 / 1000.0;
        self.tiers
            .update(namespace, tier, |row| row.reconciled_at = Some(at));
    }

    /// Forget a deleted tier's series.
    pub fn forget_tier(&self, namespace: &str, tier: &str) {
        self.tiers.forget(namespace, tier);
    }

    /// Forget the series of every tier for which `live` does not hold.
    pub fn retain_tiers(&self, live: impl Fn(&str, &str) -> bool) {
        self.tiers.retain(live);
    }

    /// How many tiers have series.
    pub fn tiers_exported(&self) -> usize {
        self.tiers.tier_count()
    }
}

/// A spec with every default.
#[cfg(test)]
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
    fn the_series_of_tiers_no_longer_watched_are_dropped() {
        let metrics = Metrics::default();
        for tier in ["kept", "deleted"] {
            metrics.set_phase("clinic", tier, Phase::Healthy);
            metrics.set_reconciled("clinic", tier, "2026-12-02T03:00:00Z".parse().unwrap());
        }
        metrics.set_phase("other", "deleted", Phase::Degraded);
        assert_eq!(metrics.tiers_exported(), 3);
        metrics.retain_tiers(|namespace, name| namespace == "clinic" && name == "kept");
        assert_eq!(metrics.tiers_exported(), 1);
        let text = metrics.render_as(Format::Text);
        assert!(
            text.contains(
                "tierguard_tier_last_reconcile_timestamp_seconds{namespace=\"clinic\",tier=\"kept\"} 1796180400.0"
            ),
            "{text}"
        );
        assert!(!text.contains("deleted"), "{text}");
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
