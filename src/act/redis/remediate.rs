//! The controller's Redis actions, driven by `spec.redis`: remediation at the critical level and
//! the key audit, each returning what goes into `status.memoryReport` and `status.recentActions`.

use std::time::Duration;

use jiff::Timestamp;
use redis::aio::MultiplexedConnection;

use super::audit::{AuditPlan, AuditReport, audit_until};
use super::connect_within;
use super::flush::{FlushPlan, FlushPlanError, FlushReport, GenerationRule, flush_until};
use crate::act::record;
use crate::api::{ActionKind, ActionOutcome};
use crate::api::{
    ActionRecord, AuditOutcome, GenerationSource, MemoryLevel, RedisSpec, RemediationOutcome,
    RemediationSpec,
};
use crate::destinations::AllowList;
use crate::remote::text;
use crate::secret::{SecretString, scrub};
use crate::shutdown::Stop;

/// How long one Redis reply may take before the run gives up.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The flush a remediation runs: the spec's non-critical patterns and, when a generation pattern
/// is set, the old generations (the current one, resolved by the caller, is kept).
pub fn plan_from_spec(
    spec: &RemediationSpec,
    current_generation: Option<&str>,
    dry_run: bool,
) -> Result<FlushPlan, FlushPlanError> {
    let generations = match (&spec.generation_pattern, current_generation) {
        (Some(pattern), Some(current)) => Some(GenerationRule::new(pattern, current)?),
        (Some(_), None) => return Err(FlushPlanError::EmptyGeneration),
        (None, _) => None,
    };
    let plan = FlushPlan {
        patterns: spec.non_critical_patterns.clone(),
        generations,
        max_keys: spec.max_keys_per_run,
        max_duration: spec.max_duration.as_std(),
        batch: spec.batch_size as usize,
        dry_run,
        ..FlushPlan::default()
    };
    plan.validate()?;
    Ok(plan)
}

/// Why the current generation is unknown.
#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    #[error("currentGeneration sets neither redisKey nor value")]
    Unset,
    #[error("the generation key {0:?} does not exist (or is empty) in Redis")]
    Missing(String),
    #[error("reading the generation key {key:?} failed: {reason}")]
    Read { key: String, reason: String },
}

/// The current generation: the fixed value, or the string stored at the Redis key.
pub async fn current_generation(
    con: &mut MultiplexedConnection,
    source: &GenerationSource,
) -> Result<String, GenerationError> {
    if let Some(value) = &source.value {
        return Ok(value.clone());
    }
    let Some(key) = &source.redis_key else {
        return Err(GenerationError::Unset);
    };
    let value: Option<String> = redis::cmd("GET")
        .arg(key)
        .query_async(con)
        .await
        .map_err(|e| GenerationError::Read {
            key: key.clone(),
            reason: e.to_string(),
        })?;
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(GenerationError::Missing(key.clone())),
    }
}

/// One remediation: its status entry, its action record, and the full report.
#[derive(Clone, Debug)]
pub struct RemediationRun {
    pub outcome: RemediationOutcome,
    pub record: ActionRecord,
    pub report: Option<FlushReport>,
}

impl FlushReport {
    /// The part kept in `status.memoryReport.lastRemediation`.
    pub fn to_status(&self) -> RemediationOutcome {
        RemediationOutcome {
            at: self.started_at,
            deleted_by_pattern: self
                .passes
                .iter()
                .map(|p| (p.pattern.clone(), p.deleted))
                .collect(),
            scanned: self.scanned,
            budget_exhausted: self.stopped_by.is_some(),
            dry_run: self.dry_run,
            error: self.error.as_deref().map(text::reason),
        }
    }
}

/// Remediate Redis as `spec.redis.remediation` allows: at `level`, because of `reason`.
///
/// Skipped (and recorded as such) when remediation is disabled or the tier is a Redis Cluster
/// (not supported yet: each master would need its own SCAN). When the current generation cannot be
/// read, old generations are left alone and only the non-critical patterns are deleted.
// Each argument is a different input of one run (what, where, which addresses, why, when, how
// to stop); a struct for them would only rename the call.
#[allow(clippy::too_many_arguments)]
pub async fn remediate_redis(
    spec: &RedisSpec,
    url: &SecretString,
    destinations: &AllowList,
    level: MemoryLevel,
    reason: &str,
    dry_run: bool,
    now: Timestamp,
    stop: &Stop,
) -> RemediationRun {
    let why = format!("{reason} (memory level {})", level.as_str());
    let skipped = |detail: &str| RemediationRun {
        outcome: RemediationOutcome {
            at: now,
            error: Some(detail.to_owned()),
            dry_run,
            ..RemediationOutcome::default()
        },
        record: record::action(
            now,
            ActionKind::RemediateRedis,
            &why,
            ActionOutcome::Skipped,
            Some(detail.into()),
        ),
        report: None,
    };
    if !spec.remediation.enabled {
        return skipped("spec.redis.remediation.enabled is false: alerting only");
    }
    if spec.cluster {
        return skipped("remediation of a Redis Cluster is not supported: alerting only");
    }
    let mut con = match connect_within(url, RESPONSE_TIMEOUT, destinations).await {
        Ok(c) => c,
        Err(e) => return failed_run(now, &why, dry_run, e.to_string()),
    };
    let mut notes = Vec::new();
    let generation = match (
        &spec.remediation.generation_pattern,
        &spec.remediation.current_generation,
    ) {
        (Some(_), Some(source)) => match current_generation(&mut con, source).await {
            Ok(g) => Some(g),
            Err(e) => {
                notes.push(format!("old generations left alone: {e}"));
                None
            }
        },
        (Some(_), None) => {
            notes.push("old generations left alone: no currentGeneration".to_owned());
            None
        }
        _ => None,
    };
    let mut remediation = spec.remediation.clone();
    if generation.is_none() {
        remediation.generation_pattern = None;
    }
    let plan = match plan_from_spec(&remediation, generation.as_deref(), dry_run) {
        Ok(p) => p,
        Err(FlushPlanError::Nothing) => {
            return skipped(&format!(
                "nothing to delete: no nonCriticalPatterns{}",
                notes.first().map(|n| format!("; {n}")).unwrap_or_default()
            ));
        }
        Err(e) => return failed_run(now, &why, dry_run, e.to_string()),
    };
    let mut report = flush_until(&con, &plan, stop).await;
    report.error = report.error.map(|e| scrub(&e, &[url]));
    let mut outcome = report.to_status();
    if !notes.is_empty() && outcome.error.is_none() {
        outcome.error = Some(text::reason(&notes.join("; ")));
    }
    let verdict = if report.error.is_some() {
        ActionOutcome::Failed
    } else if dry_run {
        ActionOutcome::DryRun
    } else {
        ActionOutcome::Ok
    };
    let mut detail = report.summary();
    for note in &notes {
        detail.push_str("; ");
        detail.push_str(note);
    }
    RemediationRun {
        outcome,
        record: record::action(now, ActionKind::RemediateRedis, &why, verdict, Some(detail)),
        report: Some(report),
    }
}

fn failed_run(now: Timestamp, why: &str, dry_run: bool, error: String) -> RemediationRun {
    RemediationRun {
        outcome: RemediationOutcome {
            at: now,
            dry_run,
            error: Some(text::reason(&error)),
            ..RemediationOutcome::default()
        },
        record: record::action(
            now,
            ActionKind::RemediateRedis,
            why,
            ActionOutcome::Failed,
            Some(error),
        ),
        report: None,
    }
}

/// One audit: its status entry (when it ran), its action record and the full report.
#[derive(Clone, Debug)]
pub struct AuditRun {
    pub outcome: Option<AuditOutcome>,
    pub record: ActionRecord,
    pub report: Option<AuditReport>,
}

/// Audit keys without TTL and the largest keys, within the remediation's time budget.
pub async fn audit_redis(
    spec: &RedisSpec,
    url: &SecretString,
    destinations: &AllowList,
    reason: &str,
    now: Timestamp,
    stop: &Stop,
) -> AuditRun {
    let failed = |error: String| AuditRun {
        outcome: None,
        record: record::action(
            now,
            ActionKind::AuditRedis,
            reason,
            ActionOutcome::Failed,
            Some(error),
        ),
        report: None,
    };
    if spec.cluster {
        return AuditRun {
            outcome: None,
            record: record::action(
                now,
                ActionKind::AuditRedis,
                reason,
                ActionOutcome::Skipped,
                Some("auditing a Redis Cluster is not supported".into()),
            ),
            report: None,
        };
    }
    let con = match connect_within(url, RESPONSE_TIMEOUT, destinations).await {
        Ok(c) => c,
        Err(e) => return failed(e.to_string()),
    };
    let plan = AuditPlan {
        max_duration: spec.remediation.max_duration.as_std(),
        ..AuditPlan::default()
    };
    let mut report = audit_until(&con, &plan, stop).await;
    report.error = report.error.map(|e| scrub(&e, &[url]));
    let verdict = if report.ok() {
        ActionOutcome::Ok
    } else {
        ActionOutcome::Failed
    };
    AuditRun {
        outcome: Some(report.to_status()),
        record: record::action(
            now,
            ActionKind::AuditRedis,
            reason,
            verdict,
            Some(report.summary()),
        ),
        report: Some(report),
    }
}
