//! The PromQL behind each application signal: the built-in query, or the spec's override.
//!
//! The built-in queries expect the application to expose these metrics (Prometheus naming
//! conventions; docs/metrics.md has the full contract and an example exposition):
//!
//! | metric | type | labels | signal |
//! |---|---|---|---|
//! | `http_request_duration_seconds` | histogram | `le` (and any others) | P50 / P95 / P99 latency |
//! | `http_requests_total` | counter | `status` (HTTP status code, e.g. `200`, `503`) | error rate (5xx share) |
//! | `cache_hits_total`, `cache_misses_total` | counter | any (e.g. `clinic_id`) | cache hit rate |
//! | `mem0_writes_total` | counter | `outcome` = `success` or `failure` | mem0 write success |
//! | `circuit_breaker_state` | gauge | `breaker` (spec.breaker.name) | 0 closed, 1 open, 2 half-open |
//!
//! Rates are taken over `spec.metrics.rateWindow` (5m by default); every series is narrowed by
//! `spec.metrics.selector`.

use std::collections::BTreeMap;

use crate::api::signals::Cohort;
use crate::api::{CohortLabel, MemoryTierSpec, Signal, SignalQueries};

/// Request-duration histogram (seconds), base name without `_bucket`.
pub const REQUEST_DURATION: &str = "http_request_duration_seconds";
/// Requests counter, labelled by `status`.
pub const REQUESTS_TOTAL: &str = "http_requests_total";
/// The label of [`REQUESTS_TOTAL`] holding the HTTP status code; 5xx counts as an error.
pub const STATUS_LABEL: &str = "status";
/// Cache hits counter.
pub const CACHE_HITS_TOTAL: &str = "cache_hits_total";
/// Cache misses counter.
pub const CACHE_MISSES_TOTAL: &str = "cache_misses_total";
/// mem0 writes counter, labelled by `outcome`.
pub const MEM0_WRITES_TOTAL: &str = "mem0_writes_total";
/// The label of [`MEM0_WRITES_TOTAL`]: `success` or `failure`.
pub const OUTCOME_LABEL: &str = "outcome";
/// Circuit-breaker gauge: 0 closed, 1 open, 2 half-open.
pub const BREAKER_STATE: &str = "circuit_breaker_state";
/// The label of [`BREAKER_STATE`] naming the breaker.
pub const BREAKER_LABEL: &str = "breaker";

/// Whose traffic a query reads: the whole service, or one cohort's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Service,
    Cohort(Cohort),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Service => f.write_str("service"),
            Scope::Cohort(c) => write!(f, "{c}"),
        }
    }
}

/// Where an override query takes the cohort's label value: `rate(x{cohort="{cohort}"}[5m])`.
pub const COHORT_PLACEHOLDER: &str = "{cohort}";

/// The query of every application signal, for the whole service and for each cohort, resolved
/// from the spec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuerySet {
    queries: BTreeMap<(Scope, Signal), Query>,
    /// Signals without a per-cohort query, and why (an override without `{cohort}`).
    no_cohort: BTreeMap<Signal, String>,
}

/// One signal's query and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub promql: String,
    /// True when the spec overrides the built-in query.
    pub overridden: bool,
}

/// What a tier's queries are made of: kept in place of the queries (a controller keeps one per
/// tier, and the queries themselves are 4 KiB of text), which are made when they are sent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueryInputs {
    selector: String,
    overrides: SignalQueries,
    window: String,
    cohorts: CohortLabel,
    breaker: String,
}

impl QueryInputs {
    pub fn from_spec(spec: &MemoryTierSpec) -> Self {
        QueryInputs {
            selector: spec.metrics.selector.clone(),
            overrides: spec.metrics.queries.clone(),
            window: spec.metrics.rate_window.to_string(),
            cohorts: spec.canary.cohort_label.clone(),
            breaker: spec.breaker.name.clone(),
        }
    }

    /// Whether the spec overrides any built-in query.
    pub fn overridden(&self) -> bool {
        Signal::app().any(|signal| self.overrides.get(signal).is_some())
    }

    /// The queries.
    pub fn queries(&self) -> QuerySet {
        QuerySet::built(self, &self.selector, &[])
    }
}

impl QuerySet {
    /// Built-in queries for `selector`, `breaker` and the cohort label, with the spec's overrides
    /// applied.
    pub fn from_spec(spec: &MemoryTierSpec) -> Self {
        QueryInputs::from_spec(spec).queries()
    }

    /// The built-in queries of a fleet of tiers read together ([`super::fleet`]): `selector`
    /// selects every member's series, and each query keeps the labels `by` that tell them apart,
    /// so its answer has one series per member. A spec with overrides has no fleet queries.
    pub fn for_fleet(spec: &MemoryTierSpec, selector: &str, by: &[String]) -> Self {
        Self::built(&QueryInputs::from_spec(spec), selector, by)
    }

    fn built(inputs: &QueryInputs, selector: &str, by: &[String]) -> Self {
        let label = &inputs.cohorts;
        let window = &inputs.window;
        let mut queries = BTreeMap::new();
        let mut no_cohort = BTreeMap::new();
        for signal in Signal::app() {
            let scopes = std::iter::once(Scope::Service).chain(
                Cohort::ALL
                    .iter()
                    .filter(|_| signal.per_cohort())
                    .map(|c| Scope::Cohort(*c)),
            );
            for scope in scopes {
                let cohort_value = match scope {
                    Scope::Service => None,
                    Scope::Cohort(Cohort::Canary) => Some(label.canary.as_str()),
                    Scope::Cohort(Cohort::Stable) => Some(label.stable.as_str()),
                };
                let query = match (inputs.overrides.get(signal), cohort_value) {
                    (Some(q), None) => Query {
                        promql: q.to_owned(),
                        overridden: true,
                    },
                    (Some(q), Some(value)) if q.contains(COHORT_PLACEHOLDER) => Query {
                        promql: q.replace(COHORT_PLACEHOLDER, &escape(value)),
                        overridden: true,
                    },
                    (Some(_), Some(_)) => {
                        no_cohort.insert(
                            signal,
                            format!(
                                "spec.metrics.queries.{signal} has no {COHORT_PLACEHOLDER} to read one cohort with"
                            ),
                        );
                        continue;
                    }
                    (None, cohort_value) => {
                        let extra: Vec<String> = cohort_value
                            .map(|v| format!("{}={}", label.name, quote(v)))
                            .into_iter()
                            .collect();
                        let Some(promql) =
                            grouped_query(signal, selector, &extra, &inputs.breaker, window, by)
                        else {
                            continue;
                        };
                        Query {
                            promql,
                            overridden: false,
                        }
                    }
                };
                queries.insert((scope, signal), query);
            }
        }
        QuerySet { queries, no_cohort }
    }

    pub fn get(&self, scope: Scope, signal: Signal) -> Option<&Query> {
        self.queries.get(&(scope, signal))
    }

    pub fn iter(&self) -> impl Iterator<Item = ((Scope, Signal), &Query)> {
        self.queries.iter().map(|(k, q)| (*k, q))
    }
}

/// Why a signal has no per-cohort query (an override without `{cohort}`): each source's query
/// set says.
pub trait NoCohortQuery {
    fn no_cohort_query(&self, signal: Signal) -> Option<&str>;
}

impl NoCohortQuery for QuerySet {
    fn no_cohort_query(&self, signal: Signal) -> Option<&str> {
        self.no_cohort.get(&signal).map(String::as_str)
    }
}

/// `{a="b",c="d"}` from a selector (without braces) and extra matchers; empty parts are dropped.
pub fn matchers(selector: &str, extra: &[&str]) -> String {
    let selector = selector
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim()
        .trim_end_matches(',');
    let parts: Vec<&str> = std::iter::once(selector)
        .chain(extra.iter().copied())
        .filter(|p| !p.trim().is_empty())
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// Escape a label value for the inside of a PromQL string literal.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A label value as a PromQL string literal.
fn quote(value: &str) -> String {
    format!("\"{}\"", escape(value))
}

/// The quantile behind a latency signal.
pub fn quantile(signal: Signal) -> Option<f64> {
    match signal {
        Signal::P50LatencyMs => Some(0.5),
        Signal::P95LatencyMs => Some(0.95),
        Signal::P99LatencyMs => Some(0.99),
        _ => None,
    }
}

/// The built-in PromQL of an application signal over the series `selector` and `extra` (a cohort's
/// label matcher) select, its rates over `window` (a PromQL duration such as `5m`); none for the
/// signals read from Redis.
pub fn default_query(
    signal: Signal,
    selector: &str,
    extra: &[String],
    breaker: &str,
    window: &str,
) -> Option<String> {
    grouped_query(signal, selector, extra, breaker, window, &[])
}

/// [`default_query`], with one result per combination of the labels `by` (none: one result).
/// Where the single query adds `or vector(0)` (no 5xx series at all means no errors), the grouped
/// one adds a zero for each group that has requests, since `vector(0)` carries no labels.
pub fn grouped_query(
    signal: Signal,
    selector: &str,
    extra: &[String],
    breaker: &str,
    window: &str,
    by: &[String],
) -> Option<String> {
    let w = window;
    let with = |more: &[String]| {
        let all: Vec<&str> = extra.iter().chain(more).map(String::as_str).collect();
        matchers(selector, &all)
    };
    let all = with(&[]);
    let by_labels = by.join(", ");
    let grouping = if by.is_empty() {
        String::new()
    } else {
        format!(" by ({by_labels})")
    };
    let rate_sum = |metric: &str, m: &str| format!("sum{grouping}(rate({metric}{m}[{w}]))");
    // `x or <zero>`: x, or 0 where x has no series (for each group that `like` has).
    let or_zero = |x: String, like: String| {
        if by.is_empty() {
            format!("({x} or vector(0))")
        } else {
            format!("({x} or {like} * 0)")
        }
    };
    Some(match signal {
        Signal::P50LatencyMs | Signal::P95LatencyMs | Signal::P99LatencyMs => {
            let q = quantile(signal).unwrap_or(0.5);
            let le = if by.is_empty() {
                "le".to_owned()
            } else {
                format!("le, {by_labels}")
            };
            format!(
                "1000 * histogram_quantile({q}, sum by ({le}) (rate({REQUEST_DURATION}_bucket{all}[{w}])))"
            )
        }
        Signal::ErrorRatePercent => {
            let errors = with(&[format!("{STATUS_LABEL}=~\"5..\"")]);
            let total = rate_sum(REQUESTS_TOTAL, &all);
            // No 5xx series at all means no errors, not an unknown error rate.
            format!(
                "100 * {} / {total}",
                or_zero(rate_sum(REQUESTS_TOTAL, &errors), total.clone()),
            )
        }
        Signal::CacheHitRatePercent => {
            let (hits, misses) = (
                rate_sum(CACHE_HITS_TOTAL, &all),
                rate_sum(CACHE_MISSES_TOTAL, &all),
            );
            let hits_or_zero = or_zero(hits.clone(), misses.clone());
            let misses_or_zero = or_zero(misses, hits);
            format!("100 * {hits_or_zero} / ({hits_or_zero} + {misses_or_zero})")
        }
        Signal::Mem0WriteSuccessPercent => {
            let ok = with(&[format!("{OUTCOME_LABEL}=\"success\"")]);
            let total = rate_sum(MEM0_WRITES_TOTAL, &all);
            format!(
                "100 * {} / {total}",
                or_zero(rate_sum(MEM0_WRITES_TOTAL, &ok), total.clone()),
            )
        }
        Signal::BreakerState => {
            let m = with(&[format!("{BREAKER_LABEL}={}", quote(breaker))]);
            // Any replica open wins; otherwise half-open (2) over closed (0).
            format!("max{grouping}({BREAKER_STATE}{m} == 1) or max{grouping}({BREAKER_STATE}{m})")
        }
        Signal::Requests => format!("sum{grouping}(increase({REQUESTS_TOTAL}{all}[{w}]))"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_signals_have_no_query() {
        assert_eq!(
            default_query(Signal::RedisRunId, "", &[], "mem0", "5m"),
            None
        );
        let spec: MemoryTierSpec =
            serde_json::from_value(serde_json::json!({"target": {"configMapName": "f"}})).unwrap();
        let set = QuerySet::from_spec(&spec);
        // Every application signal for the service; all but the breaker for each cohort.
        assert_eq!(
            set.iter().count(),
            Signal::app().count() + 2 * Signal::app().filter(|s| s.per_cohort()).count()
        );
        let canary = &set
            .get(Scope::Cohort(Cohort::Canary), Signal::ErrorRatePercent)
            .unwrap()
            .promql;
        assert!(
            canary.contains(r#"cohort="canary",status=~"5.."#),
            "{canary}"
        );
        assert!(
            set.get(Scope::Cohort(Cohort::Stable), Signal::BreakerState)
                .is_none()
        );
    }

    #[test]
    fn an_override_reads_a_cohort_through_its_placeholder() {
        let spec: MemoryTierSpec = serde_json::from_value(serde_json::json!({
            "target": {"configMapName": "f"},
            "canary": {"cohortLabel": {"name": "path", "canary": "new", "stable": "old"}},
            "metrics": {"queries": {
                "p50LatencyMs": "my_p50{path=\"{cohort}\"}",
                "errorRatePercent": "my_errors",
            }},
        }))
        .unwrap();
        let set = QuerySet::from_spec(&spec);
        assert_eq!(
            set.get(Scope::Cohort(Cohort::Canary), Signal::P50LatencyMs)
                .unwrap()
                .promql,
            r#"my_p50{path="new"}"#
        );
        assert!(
            set.get(Scope::Cohort(Cohort::Canary), Signal::ErrorRatePercent)
                .is_none()
        );
        assert!(
            set.no_cohort_query(Signal::ErrorRatePercent)
                .unwrap()
                .contains("{cohort}")
        );
        // The built-in queries use the configured label.
        let requests = &set
            .get(Scope::Cohort(Cohort::Stable), Signal::Requests)
            .unwrap()
            .promql;
        assert!(requests.contains(r#"path="old""#), "{requests}");
    }

    #[test]
    fn matchers_join_the_selector_and_extras() {
        assert_eq!(matchers("", &[]), "{}");
        assert_eq!(matchers("app=\"x\"", &[]), "{app=\"x\"}");
        assert_eq!(
            matchers(" {app=\"x\",} ", &["status=~\"5..\""]),
            "{app=\"x\",status=~\"5..\"}"
        );
        assert_eq!(matchers("", &["a=\"b\""]), "{a=\"b\"}");
    }

    #[test]
    fn default_queries_use_the_documented_metrics() {
        let sel = "app=\"clinic-backend\"";
        assert_eq!(
            default_query(Signal::P95LatencyMs, sel, &[], "mem0", "5m").unwrap(),
            "1000 * histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{app=\"clinic-backend\"}[5m])))"
        );
        assert_eq!(
            default_query(Signal::ErrorRatePercent, sel, &[], "mem0", "5m").unwrap(),
            "100 * (sum(rate(http_requests_total{app=\"clinic-backend\",status=~\"5..\"}[5m])) or vector(0)) / sum(rate(http_requests_total{app=\"clinic-backend\"}[5m]))"
        );
        assert_eq!(
            default_query(Signal::BreakerState, "", &[], "me\"m0", "5m").unwrap(),
            "max(circuit_breaker_state{breaker=\"me\\\"m0\"} == 1) or max(circuit_breaker_state{breaker=\"me\\\"m0\"})"
        );
        assert!(
            default_query(Signal::CacheHitRatePercent, sel, &[], "mem0", "5m")
                .unwrap()
                .contains("cache_misses_total{app=\"clinic-backend\"}[5m]")
        );
        assert!(
            default_query(Signal::Mem0WriteSuccessPercent, sel, &[], "mem0", "5m")
                .unwrap()
                .contains("mem0_writes_total{app=\"clinic-backend\",outcome=\"success\"}[5m]")
        );
    }

    #[test]
    fn the_rate_window_comes_from_the_spec() {
        let spec: MemoryTierSpec = serde_json::from_value(serde_json::json!({
            "target": {"configMapName": "flags"},
            "metrics": {"selector": "job=\"a\"", "rateWindow": "90s"}
        }))
        .unwrap();
        let queries = QuerySet::from_spec(&spec);
        let p50 = &queries
            .get(Scope::Service, Signal::P50LatencyMs)
            .unwrap()
            .promql;
        assert!(p50.contains("{job=\"a\"}[1m30s]"), "{p50}");
        let default: MemoryTierSpec =
            serde_json::from_value(serde_json::json!({"target": {"configMapName": "flags"}}))
                .unwrap();
        let default_queries = QuerySet::from_spec(&default);
        let errors = &default_queries
            .get(Scope::Service, Signal::ErrorRatePercent)
            .unwrap()
            .promql;
        assert!(
            errors.contains("[5m]") && !errors.contains("[1m30s]"),
            "{errors}"
        );
    }

    #[test]
    fn overrides_replace_the_built_in_query() {
        let mut spec: MemoryTierSpec = serde_json::from_value(serde_json::json!({
            "target": {"configMapName": "x"},
            "metrics": {"selector": "job=\"a\"", "queries": {"p50LatencyMs": "vector(42)", "errorRatePercent": "  "}}
        }))
        .unwrap();
        spec.breaker.name = "db".into();
        let set = QuerySet::from_spec(&spec);
        assert_eq!(
            set.get(Scope::Service, Signal::P50LatencyMs)
                .unwrap()
                .promql,
            "vector(42)"
        );
        assert!(
            set.get(Scope::Service, Signal::P50LatencyMs)
                .unwrap()
                .overridden
        );
        // A blank override is no override.
        assert!(
            !set.get(Scope::Service, Signal::ErrorRatePercent)
                .unwrap()
                .overridden
        );
        assert!(
            set.get(Scope::Service, Signal::BreakerState)
                .unwrap()
                .promql
                .contains("breaker=\"db\"")
        );
        assert!(set.get(Scope::Service, Signal::Requests).is_some());
    }
}
