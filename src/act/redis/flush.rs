//! Delete keys by pattern, safely: SCAN with MATCH and a COUNT hint, UNLINK in pipelined batches.
//!
//! ## Generations
//!
//! Generation-scoped cache keys are described by a pattern in which `{generation}` stands for the
//! generation, e.g. `cache:*:generation:{generation}`, and by the current generation `G`:
//!
//! - keys matching the pattern with `{generation}` replaced by `*` are candidates
//!   (`cache:*:generation:*`, the MATCH sent to Redis);
//! - a candidate is **kept** when its generation segment is `G`: it matches the pattern with
//!   `{generation}` replaced by `G` literally, either exactly (`cache:*:generation:G`) or followed
//!   by `:` and anything (`cache:*:generation:G:*`), and deleted otherwise.
//!
//! So with `G = 17`, `cache:clinic:5:generation:17` and `cache:clinic:5:generation:17:item:3` are
//! kept, and `cache:clinic:5:generation:16` and `cache:clinic:5:generation:170:item:3` are
//! deleted. A key of the current generation is never deleted, even when a plain pattern matches
//! it too (the runbook's `grep -v "generation:$(date +%s)"` keeps them the same way).
//!
//! ## Budgets
//!
//! At most `max_keys` keys are sent for deletion in one run (across all patterns), and no batch
//! starts after `max_duration`. Every round (the next SCAN with the UNLINK of the previous keys)
//! is preceded by a PING, answered before the round is sent: while it takes longer than the latency
//! limit, the next round waits, as long as the PING waited and doubling while Redis stays slow (up
//! to 1 s).
//!
//! ## Failure
//!
//! Any Redis error stops the run at once: nothing more is sent. The report says how many keys were
//! deleted for sure and how many were in flight (sent, reply lost: deleted or not).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use redis::aio::MultiplexedConnection;
use serde::Serialize;

use super::glob::{self, Glob};
use super::{LatencyGuard, millis, rate};
use crate::shutdown;

/// Where the generation stands in a generation pattern.
pub const GENERATION_PLACEHOLDER: &str = "{generation}";
/// The runbooks' generation-scoped cache keys.
pub const DEFAULT_GENERATION_PATTERN: &str = "cache:*:generation:{generation}";
/// Keys per UNLINK command; a batch is several of these in one pipeline.
const UNLINK_CHUNK: usize = 100;

/// Old generations to delete and the current one to keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerationRule {
    pattern: String,
    keep: String,
}

impl GenerationRule {
    pub fn new(pattern: &str, keep: &str) -> Result<Self, FlushPlanError> {
        if pattern.matches(GENERATION_PLACEHOLDER).count() != 1 {
            return Err(FlushPlanError::GenerationPlaceholder(pattern.to_owned()));
        }
        if keep.is_empty() {
            return Err(FlushPlanError::EmptyGeneration);
        }
        Ok(GenerationRule {
            pattern: pattern.to_owned(),
            keep: keep.to_owned(),
        })
    }

    /// The pattern as given, with `{generation}`.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The current generation, kept.
    pub fn keep(&self) -> &str {
        &self.keep
    }

    /// The MATCH pattern sent to Redis: every generation.
    pub fn scan_pattern(&self) -> String {
        self.pattern.replace(GENERATION_PLACEHOLDER, "*")
    }

    /// The keys of the current generation.
    pub fn current(&self) -> CurrentGeneration {
        let exact = self
            .pattern
            .replace(GENERATION_PLACEHOLDER, &glob::escape(&self.keep));
        CurrentGeneration {
            nested: Glob::new(&format!("{exact}{GENERATION_SEGMENT_END}*")),
            exact: Glob::new(&exact),
        }
    }
}

/// What ends the generation's segment of a key: the keys of generation `G` are
/// `...:generation:G` and `...:generation:G:<anything>`, never `...:generation:G0`.
const GENERATION_SEGMENT_END: char = ':';

/// The keys of the current generation: the pattern with its generation, whatever follows the
/// generation's segment (`cache:clinic:1:generation:3` and `cache:clinic:1:generation:3:item:17`
/// both belong to generation 3; `cache:clinic:1:generation:30` does not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentGeneration {
    exact: Glob,
    nested: Glob,
}

impl CurrentGeneration {
    pub fn is_match(&self, key: &[u8]) -> bool {
        self.exact.is_match(key) || self.nested.is_match(key)
    }
}

/// What to delete and within which bounds.
#[derive(Clone, Debug, PartialEq)]
pub struct FlushPlan {
    /// Patterns whose keys are deleted outright (Redis MATCH syntax).
    pub patterns: Vec<String>,
    /// Old generations to delete, the current one kept.
    pub generations: Option<GenerationRule>,
    /// Most keys sent for deletion in this run.
    pub max_keys: u64,
    /// No batch starts after this long.
    pub max_duration: Duration,
    /// Keys per pipelined UNLINK batch.
    pub batch: usize,
    /// The COUNT hint of each SCAN.
    pub scan_count: usize,
    /// Pause while a PING takes longer than this (or 3× the PING time at start, if larger).
    pub max_latency: Duration,
    /// Count what would be deleted; delete nothing.
    pub dry_run: bool,
}

impl Default for FlushPlan {
    fn default() -> Self {
        FlushPlan {
            patterns: Vec::new(),
            generations: None,
            max_keys: 100_000,
            max_duration: Duration::from_secs(30),
            batch: 500,
            scan_count: 1000,
            max_latency: Duration::from_millis(2),
            dry_run: false,
        }
    }
}

/// A plan that must not run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlushPlanError {
    #[error("nothing to delete: give at least one pattern, or a current generation to keep")]
    Nothing,
    #[error("pattern {0:?}: empty patterns are not allowed")]
    EmptyPattern(String),
    #[error("pattern {0:?} matches every key; name the keys, e.g. 'session:*'")]
    MatchesEverything(String),
    #[error("generation pattern {0:?} must contain {{generation}} exactly once")]
    GenerationPlaceholder(String),
    #[error("the current generation is empty: without it every generation would be deleted")]
    EmptyGeneration,
    #[error("{0} must be at least 1")]
    Zero(&'static str),
}

impl FlushPlan {
    pub fn validate(&self) -> Result<(), FlushPlanError> {
        if self.patterns.is_empty() && self.generations.is_none() {
            return Err(FlushPlanError::Nothing);
        }
        let generation_scan = self.generations.as_ref().map(|g| g.scan_pattern());
        for pattern in self.patterns.iter().chain(generation_scan.as_ref()) {
            if pattern.is_empty() {
                return Err(FlushPlanError::EmptyPattern(pattern.clone()));
            }
            if Glob::new(pattern).matches_everything() {
                return Err(FlushPlanError::MatchesEverything(pattern.clone()));
            }
        }
        if self.batch == 0 {
            return Err(FlushPlanError::Zero("batch"));
        }
        if self.scan_count == 0 {
            return Err(FlushPlanError::Zero("scan count"));
        }
        if self.max_keys == 0 {
            return Err(FlushPlanError::Zero("max keys"));
        }
        Ok(())
    }
}

/// Which budget stopped a run early.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Budget {
    Keys,
    Time,
    /// The process is shutting down: the round in flight finished, no other started.
    Shutdown,
}

/// What one pattern's pass did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PassReport {
    /// The pattern as given (a generation pattern keeps its `{generation}`).
    pub pattern: String,
    /// The MATCH pattern sent to Redis.
    #[serde(rename = "match")]
    pub match_pattern: String,
    /// For a generation pass: the generation kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_generation: Option<String>,
    /// Keys SCAN returned for this pattern (a key may be returned more than once).
    pub scanned: u64,
    /// Keys deleted (in a dry run: distinct keys that would be deleted).
    pub deleted: u64,
    /// Keys of the current generation seen and kept.
    pub kept_current: u64,
    /// Whether the SCAN went all the way round.
    pub complete: bool,
}

/// What a flush did.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlushReport {
    pub started_at: Timestamp,
    pub dry_run: bool,
    pub passes: Vec<PassReport>,
    pub scanned: u64,
    /// Keys deleted for sure (in a dry run: that would be deleted).
    pub deleted: u64,
    pub kept_current: u64,
    /// Keys sent whose reply was lost when the run failed: each may or may not be deleted.
    pub in_flight: u64,
    /// The budget that stopped the run early, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<Budget>,
    pub pauses: u32,
    pub paused_ms: f64,
    pub latency_limit_ms: f64,
    pub max_ping_ms: f64,
    pub elapsed_ms: f64,
    pub keys_per_second: f64,
    /// Why the run failed, if it did (already free of secrets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl FlushReport {
    fn new(plan: &FlushPlan) -> Self {
        FlushReport {
            started_at: Timestamp::now(),
            dry_run: plan.dry_run,
            passes: Vec::new(),
            scanned: 0,
            deleted: 0,
            kept_current: 0,
            in_flight: 0,
            stopped_by: None,
            pauses: 0,
            paused_ms: 0.0,
            latency_limit_ms: 0.0,
            max_ping_ms: 0.0,
            elapsed_ms: 0.0,
            keys_per_second: 0.0,
            error: None,
        }
    }

    /// A report for a run that could not start (bad plan, no connection).
    pub fn failed(plan: &FlushPlan, error: String) -> Self {
        FlushReport {
            error: Some(error),
            ..FlushReport::new(plan)
        }
    }

    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// One line for people: what was deleted, what was kept, how fast, and why it stopped.
    pub fn summary(&self) -> String {
        if let (Some(error), true) = (&self.error, self.passes.is_empty()) {
            return format!("FAILED: {error}; nothing was deleted");
        }
        let verb = if self.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        let passes = self
            .passes
            .iter()
            .map(|p| match &p.keep_generation {
                Some(g) => format!(
                    "{} {} (kept {} of generation {g})",
                    p.pattern, p.deleted, p.kept_current
                ),
                None => format!("{} {}", p.pattern, p.deleted),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut line = format!(
            "{verb} {} keys [{passes}] of {} scanned in {:.2}s ({:.0} keys/s), {} pauses",
            self.deleted,
            self.scanned,
            self.elapsed_ms / 1000.0,
            self.keys_per_second,
            self.pauses,
        );
        match self.stopped_by {
            Some(Budget::Keys) => line.push_str("; stopped at the key budget, run again to go on"),
            Some(Budget::Time) => line.push_str("; stopped at the time budget, run again to go on"),
            Some(Budget::Shutdown) => {
                line.push_str("; stopped after the round in flight: shutting down")
            }
            None => {}
        }
        if let Some(error) = &self.error {
            line = format!("FAILED: {error}; {line}");
            if self.in_flight > 0 {
                line.push_str(&format!(
                    "; {} more keys were in flight and may or may not be deleted",
                    self.in_flight
                ));
            }
        }
        line
    }
}

/// Run a flush. Never fails as a whole: an error stops the run and is in the report, with what
/// was deleted before it.
pub async fn flush(con: &MultiplexedConnection, plan: &FlushPlan) -> FlushReport {
    flush_until(con, plan, &shutdown::Stop::new()).await
}

/// [`flush`], stopping after the round in flight once `stop` fires (like the time budget).
pub async fn flush_until(
    con: &MultiplexedConnection,
    plan: &FlushPlan,
    stop: &shutdown::Stop,
) -> FlushReport {
    if let Err(e) = plan.validate() {
        return FlushReport::failed(plan, e.to_string());
    }
    let started = Instant::now();
    let mut run = Run {
        plan,
        con: con.clone(),
        deadline: started + plan.max_duration,
        stop: stop.clone(),
        reserved: 0,
        report: FlushReport::new(plan),
        guard: None,
    };
    run.go().await;
    let mut report = run.report;
    if let Some(guard) = run.guard {
        report.pauses = guard.pauses;
        report.paused_ms = millis(guard.paused);
        report.latency_limit_ms = millis(guard.limit());
        report.max_ping_ms = millis(guard.max_ping);
    }
    let elapsed = started.elapsed();
    report.elapsed_ms = millis(elapsed);
    report.keys_per_second = rate(report.deleted, elapsed);
    tracing::info!(
        deleted = report.deleted,
        scanned = report.scanned,
        dry_run = report.dry_run,
        error = report.error.as_deref(),
        "redis flush finished"
    );
    report
}

struct Run<'a> {
    plan: &'a FlushPlan,
    con: MultiplexedConnection,
    deadline: Instant,
    stop: shutdown::Stop,
    /// Keys sent for deletion (or counted, in a dry run) so far: the key budget is checked on this.
    reserved: u64,
    report: FlushReport,
    guard: Option<LatencyGuard>,
}

/// A pass ended by an error: nothing more may be sent.
struct Stop;

impl Run<'_> {
    async fn go(&mut self) {
        match LatencyGuard::calibrate(&mut self.con, self.plan.max_latency).await {
            Ok(guard) => self.guard = Some(guard),
            Err(e) => {
                self.report.error = Some(format!("Redis did not answer PING: {e}"));
                return;
            }
        }
        let generation_current = self.plan.generations.as_ref().map(|g| g.current());
        let mut passes: Vec<PassReport> = self
            .plan
            .patterns
            .iter()
            .map(|p| PassReport {
                pattern: p.clone(),
                match_pattern: p.clone(),
                ..PassReport::default()
            })
            .collect();
        if let Some(rule) = &self.plan.generations {
            passes.push(PassReport {
                pattern: rule.pattern().to_owned(),
                match_pattern: rule.scan_pattern(),
                keep_generation: Some(rule.keep().to_owned()),
                ..PassReport::default()
            });
        }
        for mut pass in passes {
            let result = self.pass(&mut pass, generation_current.as_ref()).await;
            self.report.scanned += pass.scanned;
            self.report.deleted += pass.deleted;
            self.report.kept_current += pass.kept_current;
            self.report.passes.push(pass);
            if result.is_err() || self.report.stopped_by.is_some() {
                return;
            }
        }
    }

    async fn pass(
        &mut self,
        pass: &mut PassReport,
        protect: Option<&CurrentGeneration>,
    ) -> Result<(), Stop> {
        let plan = self.plan;
        let mut cursor: u64 = 0;
        let mut scan_done = false;
        let mut pending: Vec<Vec<u8>> = Vec::new();
        let mut counted: HashSet<Vec<u8>> = HashSet::new();
        loop {
            let stopping = self.stop.is_cancelled();
            if !scan_done && (stopping || Instant::now() >= self.deadline) {
                self.report.stopped_by = Some(if stopping {
                    Budget::Shutdown
                } else {
                    Budget::Time
                });
                scan_done = true;
                // Keys already reserved are not deleted after the deadline either.
                self.reserved -= pending.len() as u64;
                pending.clear();
            }
            let full = pending.len() >= plan.batch;
            let take = if full || scan_done {
                pending.len().min(plan.batch)
            } else {
                0
            };
            let batch: Vec<Vec<u8>> = pending.drain(..take).collect();
            if scan_done && batch.is_empty() {
                return Ok(());
            }
            // Scan on only while less than a batch is waiting, so waiting keys stay bounded.
            let scan_now = !scan_done && pending.len() < plan.batch;
            // The next SCAN and the UNLINK of the previous keys go out together.
            let mut scan_con = self.con.clone();
            let mut unlink_con = self.con.clone();
            let scan = async {
                if !scan_now {
                    return None;
                }
                Some(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pass.match_pattern)
                        .arg("COUNT")
                        .arg(plan.scan_count)
                        .query_async::<(u64, Vec<Vec<u8>>)>(&mut scan_con)
                        .await,
                )
            };
            let unlink = async {
                if batch.is_empty() || plan.dry_run {
                    return None;
                }
                let mut pipe = redis::pipe();
                for chunk in batch.chunks(UNLINK_CHUNK) {
                    pipe.cmd("UNLINK").arg(chunk);
                }
                Some(pipe.query_async::<Vec<u64>>(&mut unlink_con).await)
            };
            // The PING is answered before the round starts: sent alongside the round, its time
            // would include reading the round's own replies (measured: a PING limit of 10 ms was
            // exceeded on most rounds while a separate client's p99 stayed under 4 ms).
            let pinged = super::ping(&mut self.con.clone()).await;
            let (scanned, unlinked) = futures::join!(scan, unlink);
            let mut failure = None;
            match unlinked {
                Some(Ok(counts)) => pass.deleted += counts.iter().sum::<u64>(),
                Some(Err(e)) => {
                    self.report.in_flight += batch.len() as u64;
                    failure = Some(format!("UNLINK failed: {e}"));
                }
                None => pass.deleted += batch.len() as u64, // dry run: counted, distinct
            }
            match scanned {
                Some(Ok((next, keys))) => {
                    pass.scanned += keys.len() as u64;
                    for key in keys {
                        if protect.is_some_and(|g| g.is_match(&key)) {
                            pass.kept_current += 1;
                            continue;
                        }
                        if plan.dry_run && !counted.insert(key.clone()) {
                            continue;
                        }
                        if self.reserved >= plan.max_keys {
                            self.report.stopped_by = Some(Budget::Keys);
                            scan_done = true;
                            break;
                        }
                        self.reserved += 1;
                        pending.push(key);
                    }
                    cursor = next;
                    if next == 0 && !scan_done {
                        scan_done = true;
                        pass.complete = true;
                    }
                }
                Some(Err(e)) => {
                    failure.get_or_insert_with(|| format!("SCAN failed: {e}"));
                }
                None => {}
            }
            if let Some(error) = failure {
                self.report.error = Some(error);
                return Err(Stop);
            }
            let settled = match (pinged, self.guard.as_mut()) {
                (Ok(rtt), Some(guard)) => guard.settle(&mut self.con, rtt, self.deadline).await,
                (Ok(_), None) => Ok(()),
                (Err(e), _) => Err(e),
            };
            if let Err(e) = settled {
                self.report.error = Some(format!("PING failed: {e}"));
                return Err(Stop);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_generation_is_matched_literally() {
        let rule = GenerationRule::new(DEFAULT_GENERATION_PATTERN, "17").unwrap();
        assert_eq!(rule.scan_pattern(), "cache:*:generation:*");
        let current = rule.current();
        assert!(current.is_match(b"cache:clinic:5:generation:17"));
        assert!(!current.is_match(b"cache:clinic:5:generation:170"));
        assert!(!current.is_match(b"cache:clinic:5:generation:1"));
        // Whatever follows the generation's segment, the key belongs to it.
        assert!(current.is_match(b"cache:clinic:5:generation:17:item:3"));
        assert!(current.is_match(b"cache:clinic:5:generation:17:"));
        assert!(!current.is_match(b"cache:clinic:5:generation:170:item:3"));
        assert!(!current.is_match(b"cache:clinic:5:generation:1:item:17"));
        let odd = GenerationRule::new(DEFAULT_GENERATION_PATTERN, "v*").unwrap();
        assert!(odd.current().is_match(b"cache:x:generation:v*"));
        assert!(!odd.current().is_match(b"cache:x:generation:v2"));
    }

    #[test]
    fn plans_that_could_harm_are_refused() {
        let plan = |patterns: &[&str]| FlushPlan {
            patterns: patterns.iter().map(|s| s.to_string()).collect(),
            ..FlushPlan::default()
        };
        assert_eq!(plan(&[]).validate(), Err(FlushPlanError::Nothing));
        assert_eq!(
            plan(&["*"]).validate(),
            Err(FlushPlanError::MatchesEverything("*".into()))
        );
        assert_eq!(
            plan(&[""]).validate(),
            Err(FlushPlanError::EmptyPattern("".into()))
        );
        assert!(plan(&["session:*"]).validate().is_ok());
        assert_eq!(
            GenerationRule::new("cache:*", "1"),
            Err(FlushPlanError::GenerationPlaceholder("cache:*".into()))
        );
        assert_eq!(
            GenerationRule::new(DEFAULT_GENERATION_PATTERN, ""),
            Err(FlushPlanError::EmptyGeneration)
        );
        let everything = FlushPlan {
            generations: Some(GenerationRule::new("{generation}", "1").unwrap()),
            ..FlushPlan::default()
        };
        assert_eq!(
            everything.validate(),
            Err(FlushPlanError::MatchesEverything("*".into()))
        );
        let zero = FlushPlan {
            batch: 0,
            ..plan(&["session:*"])
        };
        assert_eq!(zero.validate(), Err(FlushPlanError::Zero("batch")));
    }
}
