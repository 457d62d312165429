//! A tier's history, read from Prometheus for a backtest (`tierguard simulate --from-prometheus`).
//!
//! Every application signal is read with `query_range` through the query the controller runs
//! ([`QuerySet::from_spec`], overrides included); every Redis signal from redis_exporter's metric
//! (`spec.metrics.redisExporter`). One range query per query, split so that no request asks for
//! more than [`Limits::points_per_request`] steps (Prometheus refuses more than 11,000 points per
//! series), at most [`Limits::concurrency`] requests at a time, each answer bounded in size
//! ([`MAX_RANGE_ANSWER_BYTES`]) and time (the client's timeout). Queries that two policies share
//! (`--compare`) are read once.
//!
//! Each step of the range then becomes an [`Observation`] by the controller's own rules: a query
//! with no series at a step is unknown (never zero), more than one series is unknown with the
//! controller's reason, NaN and out-of-range values are unknown; Redis nodes combine as
//! [`redis::aggregate`] combines them live.
//!
//! [`MAX_RANGE_ANSWER_BYTES`]: crate::observe::prometheus::MAX_RANGE_ANSWER_BYTES

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};

use crate::api::exporter::{NODE_LABEL, RUN_ID_LABEL, exporter_signals};
use crate::api::{CohortLabel, MemoryTierSpec, Observation, Signal};
use crate::observe::prometheus::{PrometheusClient, PrometheusError, one_value};
use crate::observe::queries::{QuerySet, Scope, matchers};
use crate::observe::redis::{self, NodeInfo};
use crate::observe::signals::{Readings, set_readings};

/// How history is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Steps per range request.
    pub points_per_request: u64,
    /// Range requests in flight at once.
    pub concurrency: usize,
    /// The most steps one backtest may replay.
    pub max_steps: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            points_per_request: 10_000,
            concurrency: 4,
            max_steps: DEFAULT_MAX_STEPS,
        }
    }
}

/// The most steps a backtest replays unless told otherwise: 34 days at a 30 s step.
pub const DEFAULT_MAX_STEPS: u64 = 100_000;

/// The steps of a backtest: `start`, `start + step`, … up to the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: Timestamp,
    pub step: Duration,
    pub steps: u64,
}

/// Why a range cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("--start {start} is not before --end {end}")]
    StartNotBeforeEnd { start: Timestamp, end: Timestamp },
    #[error("--step must be at least 1ms, in whole milliseconds (found {0:?})")]
    Step(Duration),
    #[error(
        "{start} to {end} at one step every {step} is {steps} steps, more than the limit of {max}: narrow the range to at most {longest} (e.g. --start {suggested}) or take a longer --step (at least {shortest_step}); --max-steps raises the limit"
    )]
    TooManySteps {
        start: Timestamp,
        end: Timestamp,
        step: crate::api::Duration,
        steps: u64,
        max: u64,
        longest: String,
        suggested: Timestamp,
        shortest_step: crate::api::Duration,
    },
}

impl Range {
    /// The steps from `start` to `end` (both included when `end` falls on a step).
    pub fn new(
        start: Timestamp,
        end: Timestamp,
        step: Duration,
        max_steps: u64,
    ) -> Result<Range, RangeError> {
        if start >= end {
            return Err(RangeError::StartNotBeforeEnd { start, end });
        }
        // Prometheus takes times in milliseconds: steps fall on whole milliseconds (a relative
        // `--start -7d` is taken from a clock with nanoseconds).
        let start = Timestamp::from_millisecond(start.as_millisecond()).unwrap_or(start);
        let step_ms = step.as_millis();
        if step_ms == 0 || !step.subsec_nanos().is_multiple_of(1_000_000) {
            return Err(RangeError::Step(step));
        }
        let span_ms = end.duration_since(start).as_millis() as u128;
        let steps = u64::try_from(span_ms / step_ms + 1).unwrap_or(u64::MAX);
        if steps > max_steps {
            let longest_ms = (max_steps.saturating_sub(1) as u128 * step_ms) as u64;
            let longest = Duration::from_millis(longest_ms);
            let shortest_step = Duration::from_millis(
                u64::try_from(span_ms.div_ceil(max_steps.saturating_sub(1).max(1) as u128))
                    .unwrap_or(u64::MAX),
            );
            return Err(RangeError::TooManySteps {
                start,
                end,
                step: step.into(),
                steps,
                max: max_steps,
                longest: crate::api::Duration::from(longest).to_string(),
                suggested: end - SignedDuration::try_from(longest).unwrap_or(SignedDuration::ZERO),
                shortest_step: shortest_step.into(),
            });
        }
        Ok(Range { start, step, steps })
    }

    /// The time of step `k`.
    pub fn at(&self, k: u64) -> Timestamp {
        let offset = (self.step.as_millis() as i64).saturating_mul(k as i64);
        self.start + SignedDuration::from_millis(offset)
    }

    /// Seconds from the start to step `k`.
    pub fn offset(&self, k: u64) -> f64 {
        self.step.as_secs_f64() * k as f64
    }

    /// The last step's time.
    pub fn end(&self) -> Timestamp {
        self.at(self.steps - 1)
    }

    /// The step that `at` falls on, if any.
    fn index(&self, at: Timestamp) -> Option<u64> {
        let since = at.as_millisecond() - self.start.as_millisecond();
        let step = self.step.as_millis() as i64;
        (since >= 0 && since % step == 0)
            .then_some((since / step) as u64)
            .filter(|k| *k < self.steps)
    }
}

/// A time on the command line: RFC 3339 (`2026-11-24T08:00:00Z`), `now`, or a time before now
/// such as `-7d`, `-36h` or `-1d12h` (units w, d, h, m, s; a day is 24 hours).
pub fn parse_time(text: &str, now: Timestamp) -> Result<Timestamp, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(now);
    }
    if let Some(ago) = text.strip_prefix('-') {
        let seconds = relative_seconds(ago).ok_or_else(|| {
            format!("{text:?} is neither RFC 3339 nor a time ago such as -7d, -36h or -1d12h")
        })?;
        return now
            .checked_sub(SignedDuration::from_secs(seconds))
            .map_err(|e| format!("{text:?}: {e}"));
    }
    text.parse::<Timestamp>().map_err(|e| {
        format!(
            "{text:?} is not a time: use RFC 3339 (2026-11-24T08:00:00Z), now, or a time ago such as -7d ({e})"
        )
    })
}

fn relative_seconds(text: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let number: i64 = rest[..digits].parse().ok()?;
        let unit = rest[digits..].chars().next()?;
        let seconds = match unit {
            'w' => 7 * 86_400,
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        total = total.checked_add(number.checked_mul(seconds)?)?;
        rest = &rest[digits + unit.len_utf8()..];
    }
    Some(total)
}

/// One series over the range: its labels and its value at every step (`None` where it had none).
pub type SeriesSteps = (BTreeMap<String, String>, Vec<Option<f64>>);

/// What a query gave over the range.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Matrix {
    pub series: Vec<SeriesSteps>,
}

impl Matrix {
    /// Whether any series has a number anywhere in the range (a NaN is what a ratio of two
    /// absent rates gives, not data).
    pub fn has_data(&self) -> bool {
        self.series
            .iter()
            .any(|(_, values)| values.iter().any(|v| v.is_some_and(|v| !v.is_nan())))
    }

    /// The series with a value at step `k`.
    fn at(&self, k: usize) -> impl Iterator<Item = (&BTreeMap<String, String>, f64)> {
        self.series
            .iter()
            .filter_map(move |(labels, values)| Some((labels, values.get(k).copied()??)))
    }
}

/// What a backtest reads for one tier.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Application signals (for the service and each cohort) and their PromQL.
    pub app: Vec<((Scope, Signal), String, Source)>,
    /// The queries as the controller resolves them, and the cohort label: the readings of a step
    /// become an observation exactly as the controller's do.
    pub query_set: QuerySet,
    pub cohort_label: CohortLabel,
    /// Redis signals and the exporter series they come from.
    pub redis: Vec<(Signal, String)>,
    /// spec.redis.maxMemory, used where Redis reports maxmemory 0.
    pub fallback_max: Option<u64>,
    pub exporter_selector: String,
    /// The per-clinic cache queries (spec.stampede.clinics), read as the controller reads them.
    pub clinics: Option<crate::observe::clinics::ClinicsConfig>,
}

/// Where a query comes from, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    BuiltIn,
    Override,
}

impl Plan {
    pub fn of(spec: &MemoryTierSpec) -> Plan {
        let query_set = QuerySet::from_spec(spec);
        let app = query_set
            .iter()
            .map(|(signal, query)| {
                let source = if query.overridden {
                    Source::Override
                } else {
                    Source::BuiltIn
                };
                (signal, query.promql.clone(), source)
            })
            .collect();
        let exporter = &spec.metrics.redis_exporter;
        let selector = matchers(&exporter.selector, &[]);
        let redis = exporter_signals()
            .filter_map(|signal| {
                let series = format!("{}{selector}", exporter.metric(signal)?);
                Some((
                    signal,
                    if signal == Signal::RedisRunId {
                        // After a restart the old run id's series may linger for Prometheus's
                        // lookback (backfilled data has no staleness markers): the newest
                        // sample of each node names its run id.
                        format!("topk by ({NODE_LABEL}) (1, timestamp({series}))")
                    } else {
                        series
                    },
                ))
            })
            .collect();
        Plan {
            app,
            query_set,
            cohort_label: spec.canary.cohort_label.clone(),
            redis,
            fallback_max: spec
                .redis
                .max_memory
                .as_deref()
                .and_then(|q| redis::parse_quantity(q).ok()),
            exporter_selector: exporter.selector.clone(),
            clinics: crate::observe::clinics::ClinicsConfig::from_spec(spec),
        }
    }

    /// Every PromQL expression the plan reads, each once.
    pub fn queries(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let all = self
            .app
            .iter()
            .map(|(_, q, _)| q)
            .chain(self.redis.iter().map(|(_, q)| q))
            .chain(
                self.clinics
                    .iter()
                    .flat_map(|c| [&c.hits_query, &c.misses_query]),
            );
        for q in all {
            if !out.contains(q) {
                out.push(q.clone());
            }
        }
        out
    }

    /// How errors name a query.
    fn describe(&self, promql: &str) -> String {
        if let Some(((scope, signal), _, source)) = self.app.iter().find(|(_, q, _)| q == promql) {
            let whose = match scope {
                Scope::Service => String::new(),
                Scope::Cohort(c) => format!(" for the {c} cohort"),
            };
            return match source {
                Source::Override => {
                    format!("the query of {signal}{whose} (spec.metrics.queries.{signal})")
                }
                Source::BuiltIn => format!("the built-in query of {signal}{whose}"),
            };
        }
        if let Some((signal, _)) = self.redis.iter().find(|(_, q)| q == promql) {
            return format!("the redis_exporter series of {signal} (spec.metrics.redisExporter)");
        }
        "a query".to_owned()
    }
}

/// Why history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot read Prometheus at {url}: {error}")]
    Unreachable { url: String, error: PrometheusError },
    #[error("{}", .failures.iter().map(|(what, promql, e)| format!("{what} failed: {e}\n  query: {promql}")).collect::<Vec<_>>().join("\n"))]
    Query {
        /// (what the query is, its PromQL, the error), in the plan's order.
        failures: Vec<(String, String, PrometheusError)>,
    },
    #[error("cannot read PostgreSQL at {url}: {reason}")]
    Postgres { url: String, reason: String },
    #[error(
        "Prometheus at {url} holds no data for any of the tier's queries from {start} to {end}: check the range, spec.metrics.selector and spec.metrics.redisExporter.selector"
    )]
    NoData {
        url: String,
        start: Timestamp,
        end: Timestamp,
    },
}

/// How the reading went.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReadStats {
    pub requests: u64,
    pub seconds: f64,
}

/// Every answer, by PromQL.
pub type Answers = BTreeMap<String, Matrix>;

/// Read `queries` over `range`: one range request per query and slice of at most
/// `points_per_request` steps, `concurrency` at a time. A server that cannot be read stops the
/// reading at once; queries that Prometheus refuses are all reported, by name.
pub async fn read(
    client: &PrometheusClient,
    url: &str,
    plans: &[&Plan],
    range: &Range,
    limits: &Limits,
) -> Result<(Answers, ReadStats), HistoryError> {
    let started = Instant::now();
    let mut queries: Vec<String> = Vec::new();
    for plan in plans {
        for q in plan.queries() {
            if !queries.contains(&q) {
                queries.push(q);
            }
        }
    }
    let per = limits.points_per_request.max(1);
    let slices: Vec<(u64, u64)> = (0..range.steps.div_ceil(per))
        .map(|i| (i * per, ((i + 1) * per).min(range.steps) - 1))
        .collect();
    let requests: Vec<(usize, u64, u64)> = (0..queries.len())
        .flat_map(|q| slices.iter().map(move |(a, b)| (q, *a, *b)))
        .collect();
    let count = requests.len() as u64;
    let queries_ref = &queries;
    let answers: Vec<(
        usize,
        Result<Vec<crate::observe::prometheus::RangeSeries>, PrometheusError>,
    )> = futures::stream::iter(requests)
        .map(|(q, first, last)| async move {
            let answer = client
                .query_range(&queries_ref[q], range.at(first), range.at(last), range.step)
                .await;
            match answer {
                Err(e) if server_fault(&e) => Err(e),
                other => Ok((q, other)),
            }
        })
        .buffer_unordered(limits.concurrency.max(1))
        .try_collect()
        .await
        .map_err(|error| HistoryError::Unreachable {
            url: url.to_owned(),
            error,
        })?;

    let steps = range.steps as usize;
    let mut matrices: Vec<Matrix> = vec![Matrix::default(); queries.len()];
    let mut failed: BTreeMap<usize, PrometheusError> = BTreeMap::new();
    for (q, answer) in answers {
        match answer {
            Ok(series) => {
                let matrix = &mut matrices[q];
                for s in series {
                    let slot = match matrix.series.iter().position(|(l, _)| *l == s.labels) {
                        Some(i) => i,
                        None => {
                            matrix.series.push((s.labels.clone(), vec![None; steps]));
                            matrix.series.len() - 1
                        }
                    };
                    let values = &mut matrix.series[slot].1;
                    for (at, value) in s.points {
                        if let Some(k) = range.index(at) {
                            values[k as usize] = Some(value);
                        }
                    }
                }
            }
            Err(e) => {
                failed.entry(q).or_insert(e);
            }
        }
    }
    if !failed.is_empty() {
        let describe = |promql: &str| {
            plans
                .iter()
                .map(|p| p.describe(promql))
                .find(|d| d != "a query")
                .unwrap_or_else(|| "a query".to_owned())
        };
        return Err(HistoryError::Query {
            failures: failed
                .into_iter()
                .map(|(q, e)| (describe(&queries[q]), queries[q].clone(), e))
                .collect(),
        });
    }
    if !matrices.iter().any(Matrix::has_data) {
        return Err(HistoryError::NoData {
            url: url.to_owned(),
            start: range.start,
            end: range.end(),
        });
    }
    let stats = ReadStats {
        requests: count,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((queries.into_iter().zip(matrices).collect(), stats))
}

/// An error of the server or the way to it, not of one query: reading stops.
fn server_fault(e: &PrometheusError) -> bool {
    matches!(
        e,
        PrometheusError::Transport(_)
            | PrometheusError::Timeout(_)
            | PrometheusError::Http { .. }
            | PrometheusError::InvalidUrl { .. }
    ) || matches!(e, PrometheusError::Query { error_type, .. } if error_type == "unavailable")
}

/// A tier's history, step by step.
pub struct History<'a> {
    range: Range,
    plan: &'a Plan,
    answers: &'a Answers,
    /// Why every Redis signal is unknown over the whole range, if it is.
    pub redis_unknown: Option<String>,
}

impl<'a> History<'a> {
    pub fn new(range: Range, plan: &'a Plan, answers: &'a Answers) -> Self {
        let used = plan
            .redis
            .iter()
            .find(|(s, _)| *s == Signal::RedisUsedMemoryBytes);
        let redis_unknown = match used {
            None => Some("spec.metrics.redisExporter names no used-memory metric".to_owned()),
            Some((_, promql)) if !answers.get(promql).is_some_and(Matrix::has_data) => {
                Some(format!(
                    "Prometheus holds no redis_exporter series {promql} in this range (spec.metrics.redisExporter says where they are)"
                ))
            }
            Some(_) => None,
        };
        History {
            range,
            plan,
            answers,
            redis_unknown,
        }
    }

    pub fn range(&self) -> &Range {
        &self.range
    }

    fn matrix(&self, promql: &str) -> &Matrix {
        static EMPTY: Matrix = Matrix { series: Vec::new() };
        self.answers.get(promql).unwrap_or(&EMPTY)
    }

    /// The observation at step `k`, as the controller would have read it then.
    pub fn observation(&self, k: u64) -> Observation {
        let mut obs = Observation {
            at: Some(self.range.at(k)),
            ..Observation::default()
        };
        let i = k as usize;
        let mut readings = Readings::new();
        for (key, promql, _) in &self.plan.app {
            let matrix = self.matrix(promql);
            let values: Vec<f64> = matrix.at(i).map(|(_, v)| v).collect();
            readings.insert(
                *key,
                one_value(values.iter().copied(), values.len(), promql),
            );
        }
        set_readings(
            &mut obs,
            readings,
            &self.plan.cohort_label,
            &self.plan.query_set,
        );
        match &self.redis_unknown {
            Some(reason) => redis::set_all_unknown(&mut obs, reason),
            None => self.redis_at(i, &mut obs),
        }
        if let Some(c) = &self.plan.clinics {
            let by_clinic = |promql: &str| -> BTreeMap<String, f64> {
                self.matrix(promql)
                    .at(i)
                    .filter(|(_, v)| v.is_finite())
                    .filter_map(|(labels, v)| Some((labels.get(&c.label)?.clone(), v)))
                    .collect()
            };
            let (hits, misses) = (by_clinic(&c.hits_query), by_clinic(&c.misses_query));
            if hits.is_empty() && misses.is_empty() {
                obs.without_clinics = Some(format!(
                    "no cache_hits_total / cache_misses_total series carry the label {} at this time",
                    c.label
                ));
            } else {
                obs.clinics = Some(crate::observe::clinics::merge(
                    &c.label, hits, misses, c.keep,
                ));
            }
        }
        obs
    }

    /// The Redis signals at step `i`: the exporter's series grouped into nodes by their
    /// `instance` label and combined as the controller combines masters.
    fn redis_at(&self, i: usize, obs: &mut Observation) {
        #[derive(Default)]
        struct Parts {
            values: BTreeMap<Signal, f64>,
            run_id: Option<String>,
        }
        let mut nodes: BTreeMap<String, Parts> = BTreeMap::new();
        for (signal, promql) in &self.plan.redis {
            for (labels, value) in self.matrix(promql).at(i) {
                let node = labels.get(NODE_LABEL).cloned().unwrap_or_default();
                let parts = nodes.entry(node).or_default();
                if *signal == Signal::RedisRunId {
                    parts.run_id = labels.get(RUN_ID_LABEL).cloned();
                } else if value.is_finite() && value >= 0.0 {
                    parts.values.insert(*signal, value);
                }
            }
        }
        let metric = |signal: Signal| {
            self.plan
                .redis
                .iter()
                .find(|(s, _)| *s == signal)
                .map(|(_, q)| q.as_str())
                .unwrap_or("?")
        };
        if nodes.is_empty() {
            redis::set_all_unknown(
                obs,
                &format!(
                    "no redis_exporter data at this time ({})",
                    metric(Signal::RedisUsedMemoryBytes)
                ),
            );
            return;
        }
        let required = [
            Signal::RedisUsedMemoryBytes,
            Signal::RedisMaxMemoryBytes,
            Signal::RedisEvictedKeys,
            Signal::RedisUptimeSeconds,
        ];
        let mut infos = BTreeMap::new();
        let mut missing_optional: BTreeMap<Signal, String> = BTreeMap::new();
        for (node, parts) in &nodes {
            let shown = if node.is_empty() {
                String::new()
            } else {
                format!(" of {NODE_LABEL} {node}")
            };
            if let Some(absent) = required.iter().find(|s| !parts.values.contains_key(s)) {
                redis::set_all_unknown(obs, &format!("no {}{shown} at this time", metric(*absent)));
                return;
            }
            let count = |signal: Signal| parts.values.get(&signal).map(|v| v.round() as u64);
            for signal in [Signal::RedisKeyspaceHits, Signal::RedisKeyspaceMisses] {
                if count(signal).is_none() {
                    missing_optional
                        .entry(signal)
                        .or_insert_with(|| format!("no {}{shown} at this time", metric(signal)));
                }
            }
            if parts.run_id.as_deref().is_none_or(str::is_empty) {
                missing_optional
                    .entry(Signal::RedisRunId)
                    .or_insert_with(|| {
                        format!(
                            "no {} with a {RUN_ID_LABEL} label{shown} at this time",
                            metric(Signal::RedisRunId)
                        )
                    });
            }
            infos.insert(
                node.clone(),
                NodeInfo {
                    used_memory: count(Signal::RedisUsedMemoryBytes).unwrap_or(0),
                    maxmemory: count(Signal::RedisMaxMemoryBytes).unwrap_or(0),
                    evicted_keys: count(Signal::RedisEvictedKeys).unwrap_or(0),
                    keyspace_hits: count(Signal::RedisKeyspaceHits).unwrap_or(0),
                    keyspace_misses: count(Signal::RedisKeyspaceMisses).unwrap_or(0),
                    run_id: parts.run_id.clone().unwrap_or_default(),
                    uptime_in_seconds: count(Signal::RedisUptimeSeconds).unwrap_or(0),
                    keys_without_ttl: 0,
                },
            );
        }
        match redis::aggregate(&infos, self.plan.fallback_max) {
            Ok(reading) => {
                reading.apply(obs);
                // Not read from history: unknown, never the zero the reading carries.
                let _ = obs.set(Signal::RedisKeysWithoutTtl, None);
                obs.unknown.insert(
                    Signal::RedisKeysWithoutTtl.name().to_owned(),
                    "not read from history".to_owned(),
                );
                for (signal, reason) in missing_optional {
                    let _ = obs.set(signal, None);
                    obs.unknown.insert(signal.name().to_owned(), reason);
                }
            }
            Err(reason) => redis::set_all_unknown(obs, &reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn times_are_rfc3339_now_or_ago() {
        let now = ts("2026-11-24T08:00:00Z");
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(parse_time("-7d", now).unwrap(), ts("2026-11-17T08:00:00Z"));
        assert_eq!(
            parse_time("-1d12h30m", now).unwrap(),
            ts("2026-11-22T19:30:00Z")
        );
        assert_eq!(
            parse_time("2026-11-20T01:02:03Z", now).unwrap(),
            ts("2026-11-20T01:02:03Z")
        );
        for bad in ["-", "-7", "-7x", "-d", "yesterday", "2026-13-01"] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_range_is_every_step_from_start_to_end() {
        let start = ts("2026-11-24T00:00:00Z");
        let r = Range::new(
            start,
            ts("2026-11-24T00:10:00Z"),
            Duration::from_secs(30),
            100,
        )
        .unwrap();
        assert_eq!(r.steps, 21);
        let odd = Range::new(
            ts("2026-11-24T00:00:00.123456789Z"),
            ts("2026-11-24T00:10:00Z"),
            Duration::from_secs(30),
            100,
        )
        .unwrap();
        assert_eq!(odd.start, ts("2026-11-24T00:00:00.123Z"));
        assert_eq!(r.end(), ts("2026-11-24T00:10:00Z"));
        assert_eq!(r.index(ts("2026-11-24T00:00:30Z")), Some(1));
        assert_eq!(r.index(ts("2026-11-24T00:00:31Z")), None);
        assert_eq!(r.index(ts("2026-11-24T00:10:30Z")), None);
        assert!(matches!(
            Range::new(start, start, Duration::from_secs(30), 100),
            Err(RangeError::StartNotBeforeEnd { .. })
        ));
        assert!(matches!(
            Range::new(
                start,
                ts("2026-11-25T00:00:00Z"),
                Duration::from_micros(1500),
                100
            ),
            Err(RangeError::Step(_))
        ));
    }

    #[test]
    fn too_long_a_range_says_how_to_narrow_it() {
        let end = ts("2026-11-24T00:00:00Z");
        let e = Range::new(
            ts("2026-10-24T00:00:00Z"),
            end,
            Duration::from_secs(30),
            20_161,
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("89281 steps"), "{text}");
        assert!(text.contains("at most 168h"), "{text}");
        assert!(text.contains("--start 2026-11-17T00:00:00Z"), "{text}");
        assert!(text.contains("--max-steps"), "{text}");
    }
}
