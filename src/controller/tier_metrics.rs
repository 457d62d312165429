//! Every tier's own series on /metrics: one fixed row per tier, encoded at each scrape.
//!
//! A tier has about fifty series (a phase gauge per phase, a gauge per signal, per bound and per
//! mitigation, its Redis evictions, its probes, when it was last reconciled). As
//! prometheus-client `Family`s, each series was an entry of its own, with its label set and an
//! atomic, written entry by entry at every reconcile: about 3 KiB and a hundred hash lookups
//! per tier per reconcile. Here a tier is one row of plain values, replaced in one step; the
//! families are written out from the rows when /metrics is read.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::api::{MitigationName, Phase, ProbeClass, Signal};

/// Every phase a tier may be in, in the order the phase series are written.
pub const ALL_PHASES: [Phase; 8] = [
    Phase::Pending,
    Phase::Healthy,
    Phase::Degraded,
    Phase::RollingBack,
    Phase::RolledBack,
    Phase::Recovering,
    Phase::Paused,
    Phase::Stalled,
];

/// One tier's values.
#[derive(Clone, Debug, Default)]
pub struct TierRow {
    pub phase: Option<Phase>,
    /// The last known value of each exported signal, unknown ones left out.
    pub signals: Vec<(Signal, f64)>,
    /// The bounds the signals are held against: signal, bound name, value.
    pub thresholds: Vec<(Signal, &'static str, f64)>,
    /// Whether each mitigation is in force, by its index in [`MitigationName::ALL`]; unset
    /// until the first decision.
    pub mitigations: Option<u32>,
    /// Redis's evicted_keys counter as read last.
    pub evicted_keys: Option<u64>,
    /// Breaker probes made, by their index in [`ProbeClass::ALL`].
    pub probes: Vec<u64>,
    /// When the tier was last reconciled to the end (Unix seconds).
    pub reconciled_at: Option<f64>,
}

/// Rows by namespace, then by name.
type Rows = HashMap<Box<str>, HashMap<Box<str>, TierRow>>;

/// The rows; clones share them.
#[derive(Clone, Debug, Default)]
pub struct TierTable {
    rows: Arc<RwLock<Rows>>,
}

impl TierTable {
    /// Change `namespace`/`tier`'s row (created empty if it has none).
    pub fn update(&self, namespace: &str, tier: &str, change: impl FnOnce(&mut TierRow)) {
        let mut rows = self.rows.write().expect("tier metrics lock");
        let names = match rows.get_mut(namespace) {
            Some(names) => names,
            None => rows.entry(namespace.into()).or_default(),
        };
        match names.get_mut(tier) {
            Some(row) => change(row),
            None => change(names.entry(tier.into()).or_default()),
        }
    }

    /// Forget a tier's row.
    pub fn forget(&self, namespace: &str, tier: &str) {
        let mut rows = self.rows.write().expect("tier metrics lock");
        if let Some(names) = rows.get_mut(namespace) {
            names.remove(tier);
            if names.is_empty() {
                rows.remove(namespace);
            }
        }
    }

    /// Keep only the rows of the tiers for which `live` holds.
    pub fn retain(&self, live: impl Fn(&str, &str) -> bool) {
        let mut rows = self.rows.write().expect("tier metrics lock");
        rows.retain(|namespace, names| {
            names.retain(|name, _| live(namespace, name));
            !names.is_empty()
        });
    }

    /// How many tiers have a row.
    pub fn tier_count(&self) -> usize {
        let rows = self.rows.read().expect("tier metrics lock");
        rows.values().map(HashMap::len).sum()
    }
}

/// One sample's value.
#[derive(Clone, Copy)]
enum Value {
    Gauge(f64),
    Counter(u64),
}

/// One tier's samples of one family: the labels after `namespace` and `tier` (at most two), and
/// the values.
struct Samples {
    labels: Vec<[(&'static str, &'static str); 2]>,
    values: Vec<(usize, Value)>,
}

impl Samples {
    fn push(&mut self, labels: &[(&'static str, &'static str)], value: Value) {
        let mut fixed = [("", ""); 2];
        fixed[..labels.len()].copy_from_slice(labels);
        self.labels.push(fixed);
        self.values.push((labels.len(), value));
    }
}

/// Write one family: its descriptor, then each tier's samples as `sample` gives them.
fn family(
    encoder: &mut DescriptorEncoder,
    rows: &Rows,
    name: &str,
    help: &str,
    counter: bool,
    sample: impl Fn(&TierRow, &mut Samples),
) -> Result<(), std::fmt::Error> {
    let kind = if counter {
        ConstCounter::new(0u64).metric_type()
    } else {
        ConstGauge::new(0.0).metric_type()
    };
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    let mut samples = Samples {
        labels: Vec::new(),
        values: Vec::new(),
    };
    for (namespace, names) in rows {
        for (tier, row) in names {
            samples.labels.clear();
            samples.values.clear();
            sample(row, &mut samples);
            for (extra, (count, value)) in samples.labels.iter().zip(&samples.values) {
                let labels = [
                    ("namespace", &**namespace),
                    ("tier", &**tier),
                    extra[0],
                    extra[1],
                ];
                let labels = &labels[..2 + count];
                let encoder = metric.encode_family(&labels)?;
                match value {
                    Value::Gauge(v) => ConstGauge::new(*v).encode(encoder)?,
                    Value::Counter(v) => ConstCounter::new(*v).encode(encoder)?,
                }
            }
        }
    }
    Ok(())
}

impl Collector for TierTable {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = self.rows.read().expect("tier metrics lock");
        family(
            &mut encoder,
            &rows,
            "tier_phase",
            "1 for the phase each MemoryTier is in, 0 for the others",
            false,
            |row, out| {
                if let Some(phase) = row.phase {
                    for p in ALL_PHASES {
                        let value = Value::Gauge(f64::from(u8::from(p == phase)));
                        out.push(&[("phase", p.as_str())], value);
                    }
                }
            },
        )?;
        family(
            &mut encoder,
            &rows,
            "tier_signal",
            "The last known value of each signal of each MemoryTier (absent when unknown)",
            false,
            |row, out| {
                for (signal, value) in &row.signals {
                    out.push(&[("signal", signal.name())], Value::Gauge(*value));
                }
            },
        )?;
        family(
            &mut encoder,
            &rows,
            "tier_threshold",
            "Each bound a MemoryTier's signal is held against (rollback, stampede, recovered, Redis memory levels), in the signal's unit",
            false,
            |row, out| {
                for (signal, threshold, value) in &row.thresholds {
                    out.push(
                        &[("signal", signal.name()), ("threshold", *threshold)],
                        Value::Gauge(*value),
                    );
                }
            },
        )?;
        family(
            &mut encoder,
            &rows,
            "tier_mitigation",
            "1 while the mitigation is in force on the MemoryTier, 0 otherwise",
            false,
            |row, out| {
                if let Some(active) = row.mitigations {
                    for (i, name) in MitigationName::ALL.iter().enumerate() {
                        let value = Value::Gauge(f64::from(active >> i & 1));
                        out.push(&[("mitigation", name.as_str())], value);
                    }
                }
            },
        )?;
        family(
            &mut encoder,
            &rows,
            "redis_evicted_keys",
            "Redis's evicted_keys counter of each MemoryTier's Redis (summed over masters); it resets when Redis restarts, so rate() gives the eviction rate of the runbook's alert",
            true,
            |row, out| {
                if let Some(evicted) = row.evicted_keys {
                    out.push(&[], Value::Counter(evicted));
                }
            },
        )?;
        family(
            &mut encoder,
            &rows,
            "breaker_probes",
            "Breaker probes made for each MemoryTier (spec.breaker.probe), by what they found: Down, AuthFailure, RateLimited or Healthy",
            true,
            |row, out| {
                for (class, count) in ProbeClass::ALL.iter().zip(&row.probes) {
                    if *count > 0 {
                        out.push(&[("class", class.as_str())], Value::Counter(*count));
                    }
                }
            },
        )?;
        family(
            &mut encoder,
            &rows,
            "tier_last_reconcile_timestamp_seconds",
            "When each MemoryTier was last reconciled to the end (Unix seconds); status.observed is refreshed less often when nothing changes",
            false,
            |row, out| {
                if let Some(at) = row.reconciled_at {
                    out.push(&[], Value::Gauge(at));
                }
            },
        )?;
        Ok(())
    }
}
