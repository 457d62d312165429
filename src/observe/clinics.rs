//! Cache hits and misses per clinic, from Prometheus (`sum by (clinic) (increase(...))`) or from
//! two consecutive scrapes, into the source-independent [`ClinicBreakdown`].
//!
//! Bounded on both paths: a Prometheus answer is capped at [`super::prometheus::MAX_ANSWER_BYTES`]
//! (a few thousand clinics; more is an error naming the cause), a scrape at its series cap; only
//! the `spec.stampede.clinics.keep` busiest clinics are kept.

use std::collections::BTreeMap;

use super::prometheus::{InstantValue, PrometheusClient};
use super::queries::{CACHE_HITS_TOTAL, CACHE_MISSES_TOTAL, matchers};
use crate::api::{ClinicBreakdown, ClinicCache, MemoryTierSpec};

/// What the per-clinic readings need, from the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClinicsConfig {
    pub label: String,
    pub keep: u32,
    /// PromQL: cache hits per clinic over the rate window.
    pub hits_query: String,
    /// PromQL: cache misses per clinic over the rate window.
    pub misses_query: String,
}

impl ClinicsConfig {
    /// None when `spec.stampede.clinics.enabled` is false.
    pub fn from_spec(spec: &MemoryTierSpec) -> Option<Self> {
        let clinics = &spec.stampede.clinics;
        // The label goes into `by (...)` unquoted: only a label name may (the CRD says so too).
        if !clinics.enabled || !is_label_name(&clinics.label) {
            return None;
        }
        let window = spec.metrics.rate_window.to_string();
        let selector = matchers(&spec.metrics.selector, &[]);
        let [hits_query, misses_query] =
            per_clinic_queries(&selector, &[], &clinics.label, &window);
        Some(ClinicsConfig {
            label: clinics.label.clone(),
            keep: clinics.keep,
            hits_query,
            misses_query,
        })
    }
}

/// The hits and misses queries per clinic over `window` (a tier's own, or a fleet group's kept
/// apart by its members' labels `by` too).
pub fn per_clinic_queries(selector: &str, by: &[String], label: &str, window: &str) -> [String; 2] {
    let mut grouping: Vec<&str> = by.iter().map(String::as_str).collect();
    grouping.push(label);
    let grouping = grouping.join(", ");
    [CACHE_HITS_TOTAL, CACHE_MISSES_TOTAL]
        .map(|metric| format!("sum by ({grouping}) (increase({metric}{selector}[{window}]))"))
}

/// Why a tier's clinics are unknown when neither query returned a series with the label.
pub fn no_series_reason(label: &str, hits_query: &str) -> String {
    format!(
        "no cache_hits_total / cache_misses_total series carry the label {label} ({hits_query})"
    )
}

/// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Merge per-clinic hits and misses (a clinic seen in only one of them has none of the other).
pub fn merge(
    label: &str,
    hits: BTreeMap<String, f64>,
    misses: BTreeMap<String, f64>,
    keep: u32,
) -> ClinicBreakdown {
    let mut all: BTreeMap<String, ClinicCache> = BTreeMap::new();
    for (clinic, n) in hits {
        all.entry(clinic.clone())
            .or_insert_with(|| ClinicCache {
                clinic,
                hits: 0.0,
                misses: 0.0,
            })
            .hits += n;
    }
    for (clinic, n) in misses {
        all.entry(clinic.clone())
            .or_insert_with(|| ClinicCache {
                clinic,
                hits: 0.0,
                misses: 0.0,
            })
            .misses += n;
    }
    ClinicBreakdown::busiest(label, all.into_values(), keep)
}

/// Read the per-clinic hits and misses from Prometheus.
pub async fn read_prometheus(
    client: &PrometheusClient,
    config: &ClinicsConfig,
) -> Result<ClinicBreakdown, String> {
    let (hits, misses) = futures::join!(
        by_label(client, &config.hits_query, &config.label),
        by_label(client, &config.misses_query, &config.label)
    );
    let (hits, misses) = (hits?, misses?);
    if hits.is_empty() && misses.is_empty() {
        return Err(no_series_reason(&config.label, &config.hits_query));
    }
    Ok(merge(&config.label, hits, misses, config.keep))
}

async fn by_label(
    client: &PrometheusClient,
    promql: &str,
    label: &str,
) -> Result<BTreeMap<String, f64>, String> {
    match client.query(promql).await {
        Ok(InstantValue::Vector(samples)) => Ok(samples
            .into_iter()
            .filter_map(|s| Some((s.label(label)?.to_owned(), s.value)))
            .collect()),
        Ok(InstantValue::Scalar(_)) => Err(format!(
            "{promql} returned a scalar, not one series per clinic"
        )),
        Err(e) => Err(format!("prometheus: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queries_sum_by_the_label_over_the_rate_window() {
        let spec: MemoryTierSpec = serde_json::from_value(serde_json::json!({
            "target": {"configMapName": "f"},
            "metrics": {"selector": "app=\"x\"", "rateWindow": "2m"},
            "stampede": {"clinics": {"label": "clinic"}},
        }))
        .unwrap();
        let c = ClinicsConfig::from_spec(&spec).unwrap();
        assert_eq!(
            c.hits_query,
            "sum by (clinic) (increase(cache_hits_total{app=\"x\"}[2m]))"
        );
        assert!(c.misses_query.contains("cache_misses_total"));
        let off: MemoryTierSpec = serde_json::from_value(serde_json::json!({
            "target": {"configMapName": "f"},
            "stampede": {"clinics": {"enabled": false}},
        }))
        .unwrap();
        assert!(ClinicsConfig::from_spec(&off).is_none());
        assert!(!is_label_name("clinic) (up"));
        assert!(is_label_name("_clinic_id2"));
    }

    #[test]
    fn hits_and_misses_merge_by_clinic() {
        let hits = BTreeMap::from([("1".to_owned(), 90.0), ("2".to_owned(), 10.0)]);
        let misses = BTreeMap::from([("1".to_owned(), 10.0), ("3".to_owned(), 40.0)]);
        let b = merge("clinic_id", hits, misses, 10);
        let by: BTreeMap<&str, (f64, f64)> = b
            .clinics
            .iter()
            .map(|c| (c.clinic.as_str(), (c.hits, c.misses)))
            .collect();
        assert_eq!(by["1"], (90.0, 10.0));
        assert_eq!(by["2"], (10.0, 0.0));
        assert_eq!(by["3"], (0.0, 40.0));
        assert_eq!(b.clinics[0].clinic, "1");
    }
}
