//! A backtest: the policy replayed on a tier's own history (`tierguard simulate MANIFEST
//! --from-prometheus URL --start T --end T`, or `--from-postgres` for the events table).
//!
//! History is read once ([`history::read`]), every step of the range becomes the observation the
//! controller would have read then, and the same [`Replay`] as a scenario's runs on it. The
//! output is a scenario's timeline (with the times themselves rather than offsets), then a
//! [`Summary`], and, given known incidents, a [`Score`]. With a second manifest both policies are
//! replayed on the same answers and the output lists where their decisions differ.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Instant;

use serde_json::{Value, json};

use super::Outcome;
use super::compare::{Side, differences};
use super::history::{self, History, HistoryError, Limits, Plan, Range};
use super::output::{self, Clock};
use super::replay::{Replay, TierMeta};
use super::score::{self, KnownIncident, Score};
use super::summary::{self, At, Summary, Timings, UnknownTally};
use crate::api::{MemoryTier, Observation, RESUME_ANNOTATION, Signal};
use crate::observe::postgres::PostgresObserver;
use crate::observe::prometheus::PrometheusClient;
use crate::observe::signals::set_readings;

/// A MemoryTier and the file it came from.
#[derive(Clone, Debug)]
pub struct Policy {
    pub path: PathBuf,
    pub tier: MemoryTier,
}

/// One policy's replay.
#[derive(Clone, Debug)]
pub struct Run {
    pub policy: Policy,
    pub outcome: Outcome,
    pub summary: Summary,
    pub score: Option<Score>,
    /// Why the Redis signals are unknown over the whole range, if they are.
    pub redis_unknown: Option<String>,
}

/// Where a backtest's history was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistorySource {
    Prometheus,
    /// The application's events table (`spec.metrics.postgres`): each step's signals are the
    /// runbooks' queries over the window ending at that step.
    Postgres,
}

impl HistorySource {
    pub fn name(self) -> &'static str {
        match self {
            HistorySource::Prometheus => "Prometheus",
            HistorySource::Postgres => "PostgreSQL",
        }
    }
}

/// Why every Redis signal is unknown in a backtest from PostgreSQL.
pub const NO_REDIS_IN_POSTGRES: &str =
    "a backtest from PostgreSQL has no Redis history (the controller reads Redis INFO live)";

/// A backtest's result: one run, or two to compare.
#[derive(Clone, Debug)]
pub struct Report {
    pub source: HistorySource,
    /// Where the history was read (a PostgreSQL URL without its password).
    pub url: String,
    pub range: Range,
    pub runs: Vec<Run>,
    pub timings: Timings,
}

/// Read the history `policies` need from Prometheus and replay each of them on it.
pub async fn backtest(
    client: &PrometheusClient,
    url: &str,
    policies: Vec<Policy>,
    range: Range,
    limits: &Limits,
    known: Option<&[KnownIncident]>,
) -> Result<Report, HistoryError> {
    let plans: Vec<Plan> = policies.iter().map(|p| Plan::of(&p.tier.spec)).collect();
    let plan_refs: Vec<&Plan> = plans.iter().collect();
    let (answers, read) = history::read(client, url, &plan_refs, &range, limits).await?;
    let started = Instant::now();
    let mut runs = Vec::with_capacity(policies.len());
    for (policy, plan) in policies.into_iter().zip(&plans) {
        let history = History::new(range, plan, &answers);
        let (outcome, tally) = replay(&policy.tier, &history);
        let summary = summary::summarize(&outcome, range.step.as_secs_f64(), tally);
        let score = known.map(|k| score::score(k, &outcome, range.start, range.end()));
        runs.push(Run {
            redis_unknown: history.redis_unknown.clone(),
            policy,
            outcome,
            summary,
            score,
        });
    }
    Ok(Report {
        source: HistorySource::Prometheus,
        url: url.to_owned(),
        range,
        runs,
        timings: Timings {
            prometheus_seconds: read.seconds,
            range_requests: read.requests,
            policy_seconds: started.elapsed().as_secs_f64(),
            postgres_seconds: None,
            postgres_queries: None,
        },
    })
}

/// Replay `tier` on every step of `history`, counting unknown signals as it goes.
pub fn replay(tier: &MemoryTier, history: &History<'_>) -> (Outcome, UnknownTally) {
    let range = *history.range();
    let mut stepper = Stepper::new(tier, range);
    for k in 0..range.steps {
        stepper.step(k, &history.observation(k));
    }
    stepper.finish()
}

/// The replay of one tier, one observation at a time.
struct Stepper<'a> {
    range: Range,
    meta: TierMeta,
    replay: Replay<'a>,
    tally: UnknownTally,
    unknown: BTreeMap<Signal, String>,
}

impl<'a> Stepper<'a> {
    fn new(tier: &'a MemoryTier, range: Range) -> Self {
        Stepper {
            range,
            meta: TierMeta {
                generation: Some(tier.metadata.generation.unwrap_or(1)),
                resume_token: tier
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(RESUME_ANNOTATION).cloned()),
            },
            replay: Replay::new(&tier.spec),
            tally: UnknownTally::default(),
            unknown: BTreeMap::new(),
        }
    }

    fn step(&mut self, k: u64, obs: &Observation) {
        let (t, at) = (self.range.offset(k), self.range.at(k));
        self.tally.record(obs, At { t, time: at });
        let inputs = knownness(&mut self.unknown, obs);
        self.replay.step(t, at, obs, &self.meta, inputs);
    }

    fn finish(self) -> (Outcome, UnknownTally) {
        let outcome = self
            .replay
            .finish(self.range.offset(self.range.steps - 1))
            .expect("a range has at least one step");
        (outcome, self.tally)
    }
}

/// Replay `policies` on the history of their events tables: at each step, every signal is read
/// with the runbooks' queries over the window ending then (`observers[i]` reads policy `i`'s).
/// The Redis signals are unknown ([`NO_REDIS_IN_POSTGRES`]). A first step that cannot be read
/// at all (the server down, wrong credentials, no table) is an error; a later failing step is
/// replayed with its signals unknown, as the controller would have seen it.
pub async fn backtest_postgres(
    observers: &[PostgresObserver],
    shown_url: &str,
    policies: Vec<Policy>,
    range: Range,
    known: Option<&[KnownIncident]>,
) -> Result<Report, HistoryError> {
    let mut read_seconds = 0.0;
    let mut queries = 0u64;
    let started = Instant::now();
    let mut runs = Vec::with_capacity(policies.len());
    for (policy, observer) in policies.into_iter().zip(observers) {
        let mut stepper = Stepper::new(&policy.tier, range);
        for k in 0..range.steps {
            let at = range.at(k);
            let reading = Instant::now();
            let (readings, failure) = observer.read_signals_at(Some(at)).await;
            read_seconds += reading.elapsed().as_secs_f64();
            queries += observer.queries().iter().count() as u64;
            if k == 0
                && let Some(reason) = failure
            {
                return Err(HistoryError::Postgres {
                    url: shown_url.to_owned(),
                    reason,
                });
            }
            let mut obs = Observation {
                at: Some(at),
                ..Observation::default()
            };
            set_readings(
                &mut obs,
                readings,
                &observer.config().cohort_label,
                observer.queries(),
            );
            crate::observe::redis::set_all_unknown(&mut obs, NO_REDIS_IN_POSTGRES);
            stepper.step(k, &obs);
        }
        let (outcome, tally) = stepper.finish();
        let summary = summary::summarize(&outcome, range.step.as_secs_f64(), tally);
        let score = known.map(|k| score::score(k, &outcome, range.start, range.end()));
        runs.push(Run {
            redis_unknown: Some(NO_REDIS_IN_POSTGRES.to_owned()),
            policy,
            outcome,
            summary,
            score,
        });
    }
    let policy_seconds = (started.elapsed().as_secs_f64() - read_seconds).max(0.0);
    Ok(Report {
        source: HistorySource::Postgres,
        url: shown_url.to_owned(),
        range,
        runs,
        timings: Timings {
            prometheus_seconds: 0.0,
            range_requests: 0,
            policy_seconds,
            postgres_seconds: Some(read_seconds),
            postgres_queries: Some(queries),
        },
    })
}

/// Lines for the signals that became unknown (grouped by reason) or known again at this step.
fn knownness(before: &mut BTreeMap<Signal, String>, obs: &Observation) -> Vec<String> {
    let now: BTreeMap<Signal, String> = Signal::ALL
        .iter()
        .filter(|s| obs.get(**s).is_none())
        .map(|s| {
            let reason = obs.unknown.get(s.name()).cloned();
            (*s, reason.unwrap_or_else(|| "unknown".to_owned()))
        })
        .collect();
    let mut lines = Vec::new();
    let mut by_reason: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (signal, reason) in &now {
        if before.get(signal) != Some(reason) {
            by_reason.entry(reason).or_default().push(signal.name());
        }
    }
    for (reason, signals) in by_reason {
        lines.push(format!("unknown: {}: {reason}", signals.join(", ")));
    }
    let back: Vec<&str> = before
        .keys()
        .filter(|s| !now.contains_key(s))
        .map(|s| s.name())
        .collect();
    if !back.is_empty() {
        lines.push(format!("known again: {}", back.join(", ")));
    }
    *before = now;
    lines
}

fn tier_name(tier: &MemoryTier) -> &str {
    tier.metadata.name.as_deref().unwrap_or("(unnamed)")
}

/// Write the report for people.
pub fn write_text(out: &mut impl Write, report: &Report) -> io::Result<()> {
    let range = &report.range;
    let header = |out: &mut dyn Write| -> io::Result<()> {
        writeln!(
            out,
            "History from {} {}: {} to {}, one step every {} ({} steps)",
            report.source.name(),
            report.url,
            range.start,
            range.end(),
            crate::api::Duration::from(range.step),
            range.steps
        )
    };
    match report.runs.as_slice() {
        [run] => {
            let tier = &run.policy.tier;
            writeln!(
                out,
                "MemoryTier {} (mode {:?}) from {}",
                tier_name(tier),
                tier.spec.mode,
                run.policy.path.display()
            )?;
            header(out)?;
            if let Some(why) = &run.redis_unknown {
                writeln!(out, "Redis signals: unknown over the whole range: {why}")?;
            }
            writeln!(out)?;
            output::write_timeline(out, &run.outcome, Clock::Absolute)?;
            output::write_end(out, &run.outcome, &range.end().to_string())?;
            summary::write_text(out, &run.summary)?;
            if let Some(score) = &run.score {
                score::write_text(out, score)?;
            }
        }
        [a, b] => {
            writeln!(out, "Two policies on the same history")?;
            for (side, run) in [("A", a), ("B", b)] {
                writeln!(
                    out,
                    "  {side}: MemoryTier {} (mode {:?}) from {}",
                    tier_name(&run.policy.tier),
                    run.policy.tier.spec.mode,
                    run.policy.path.display()
                )?;
            }
            header(out)?;
            for (side, run) in [("A", a), ("B", b)] {
                if let Some(why) = &run.redis_unknown {
                    writeln!(
                        out,
                        "Redis signals of {side}: unknown over the whole range: {why}"
                    )?;
                }
            }
            let diffs = differences(&a.outcome, &b.outcome);
            writeln!(out, "\nDecisions that differ: {}", diffs.len())?;
            for d in &diffs {
                let marker = match d.side {
                    Side::A => "A only  ",
                    Side::B => "B only  ",
                };
                output::write_entry(out, d.entry, Clock::Absolute, marker)?;
            }
            for (side, run) in [("A", a), ("B", b)] {
                write!(out, "\n== {side}: {}", run.policy.path.display())?;
                summary::write_text(out, &run.summary)?;
                if let Some(score) = &run.score {
                    score::write_text(out, score)?;
                }
            }
        }
        _ => {}
    }
    let t = &report.timings;
    match (report.source, t.postgres_seconds, t.postgres_queries) {
        (HistorySource::Postgres, Some(seconds), Some(queries)) => writeln!(
            out,
            "\nPostgreSQL {seconds:.2} s ({queries} queries), policy {:.2} s",
            t.policy_seconds
        ),
        _ => writeln!(
            out,
            "\nPrometheus {:.2} s ({} range requests), policy {:.2} s",
            t.prometheus_seconds, t.range_requests, t.policy_seconds
        ),
    }
}

/// The JSON object of a run's summary.
fn summary_json(run: &Run, report: &Report, policy: Option<Side>) -> Value {
    let mut obj = match serde_json::to_value(&run.summary) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    obj.insert("type".into(), json!("summary"));
    if let Some(side) = policy {
        obj.insert("policy".into(), json!(side.as_str()));
    }
    obj.insert(
        "manifest".into(),
        json!(run.policy.path.display().to_string()),
    );
    obj.insert("start".into(), json!(report.range.start.to_string()));
    obj.insert("end".into(), json!(report.range.end().to_string()));
    obj.insert(
        "step".into(),
        json!(crate::api::Duration::from(report.range.step).to_string()),
    );
    obj.insert("redisUnknown".into(), json!(run.redis_unknown));
    if let Some(score) = &run.score {
        obj.insert("score".into(), json!(score));
    }
    obj.insert("timings".into(), json!(report.timings));
    Value::Object(obj)
}

fn line(out: &mut impl Write, value: &Value) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}

/// Write the report as JSON lines: a run's entries then its summary; for two policies, each
/// difference (`type: difference`, `policy`, `entry`) then both summaries.
pub fn write_json(out: &mut impl Write, report: &Report) -> io::Result<()> {
    match report.runs.as_slice() {
        [run] => {
            output::write_json(out, &run.outcome)?;
            line(out, &summary_json(run, report, None))
        }
        [a, b] => {
            for d in differences(&a.outcome, &b.outcome) {
                if let Some(entry) = output::json_entry(d.entry) {
                    line(
                        out,
                        &json!({"type": "difference", "policy": d.side.as_str(), "entry": entry}),
                    )?;
                }
            }
            line(out, &summary_json(a, report, Some(Side::A)))?;
            line(out, &summary_json(b, report, Some(Side::B)))
        }
        _ => Ok(()),
    }
}
