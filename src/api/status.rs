//! What the controller reports, and remembers, about a MemoryTier.
//!
//! `status` is the only state the controller keeps: a restarted or newly elected replica resumes
//! mid-incident from `status.policy` (timers, phases, cooldowns) and never repeats a destructive
//! action whose cooldown is recorded here.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    ActionKind, ActionOutcome, Duration, MitigationName, Observation, RollbackCriterion,
    RollbackPhase, Runbook, WarmTrigger,
};

/// How many incidents `status.incidents` keeps (newest first).
pub const MAX_INCIDENTS_IN_STATUS: usize = 10;
/// How many recent actions `status.recentActions` keeps (newest first).
pub const MAX_ACTIONS_IN_STATUS: usize = 20;

/// Observed state of a MemoryTier.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryTierStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the tier is in the runbooks' lifecycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Kubernetes conditions: Ready, Reconciling, Stalled, and the domain conditions RolledBack,
    /// MemoryPressure, CacheStampede, BreakerOpen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The signals read at the last reconcile; an absent value is unknown, with the reason in `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<Observation>,
    /// The configuration the application runs with now: the spec with the active mitigations applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective: Option<EffectiveConfig>,
    /// Mitigations in force, each with the reason it was applied and when it ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mitigations: Vec<Mitigation>,
    /// Recent incidents, newest first (at most ten).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incidents: Vec<IncidentSummary>,
    /// Redis memory level, last remediation and audit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_report: Option<MemoryReport>,
    /// Where the cache stampede being handled comes from: the clinics that miss, likely causes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stampede_source: Option<super::StampedeSource>,
    /// Recent actions, newest first (at most twenty); in DryRun, what would have been done.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_actions: Vec<ActionRecord>,
    /// The policy's memory: timers, phases and cooldowns the controller resumes from after a
    /// restart. A versioned document of the controller's own, not described field by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "policy_memory_schema")]
    pub policy: Option<serde_json::Value>,
}

/// The tier's lifecycle phase.
#[derive(
    Deserialize,
    Serialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
pub enum Phase {
    /// Not reconciled yet.
    #[default]
    Pending,
    /// Running on the baseline, all signals within bounds.
    Healthy,
    /// Something is being watched or mitigated (memory level, breaker, stampede), without a rollback.
    Degraded,
    /// A canary rollback is in progress (phases 1 to 3).
    RollingBack,
    /// The rollback is verified; the tier waits for a human to resume (or for autoResume).
    RolledBack,
    /// Mitigations are ending and the canary ramps back to the baseline.
    Recovering,
    /// spec.mode is Paused: observing and reporting only.
    Paused,
    /// The spec is invalid or a dependency is missing; nothing is done until it is fixed.
    Stalled,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Healthy => "Healthy",
            Phase::Degraded => "Degraded",
            Phase::RollingBack => "RollingBack",
            Phase::RolledBack => "RolledBack",
            Phase::Recovering => "Recovering",
            Phase::Paused => "Paused",
            Phase::Stalled => "Stalled",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of the application's circuit breaker.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The gauge encoding the built-in query expects: 0 closed, 1 open, 2 half-open.
    pub fn from_gauge(value: f64) -> Option<Self> {
        if value == 0.0 {
            Some(BreakerState::Closed)
        } else if value == 1.0 {
            Some(BreakerState::Open)
        } else if value == 2.0 {
            Some(BreakerState::HalfOpen)
        } else {
            None
        }
    }

    /// The gauge value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

/// How one source answered.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceHealth {
    /// prometheus, scrape or redis.
    pub name: String,
    /// Whether the source answered.
    pub ok: bool,
    /// Why it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long it took, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
}

/// The effective configuration and where it was rendered.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveConfig {
    /// The effective canary sample rate (shown in `kubectl get mt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_sample_rate: Option<String>,
    /// Every rendered key and value.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Hash of the rendered content (also on the ConfigMap as an annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Keys whose effective value differs from the spec, with the mitigation that changed them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overridden_by: BTreeMap<String, MitigationName>,
}

/// A temporary overlay on the baseline.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Mitigation {
    /// Stable name, e.g. rollback-canary, breaker-mem0-off, stampede-serve-stale.
    pub name: MitigationName,
    /// Why it was applied, with the signal values that triggered it.
    pub reason: String,
    /// When it was applied.
    #[schemars(schema_with = "timestamp_schema")]
    pub since: Timestamp,
    /// The condition under which it ends.
    pub until: String,
    /// The configuration keys it overrides and their values.
    #[serde(default)]
    pub overrides: BTreeMap<String, String>,
}

/// One incident, as listed in status; the full report is in the `<tier>-incidents` ConfigMap.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncidentSummary {
    /// Stable identifier, e.g. 2026-11-25-0312-canary-rollback.
    pub id: String,
    /// Which runbook: CanaryRollback, CircuitBreakerOpen, CacheStampede, RedisMemory.
    pub runbook: Runbook,
    /// What triggered it.
    pub trigger: String,
    /// When it started.
    #[schemars(schema_with = "timestamp_schema")]
    pub started_at: Timestamp,
    /// When it was resolved, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_timestamp_schema")]
    pub resolved_at: Option<Timestamp>,
    /// The highest escalation level notified.
    #[serde(default)]
    pub escalation_level: u8,
    /// Why it escalated, or why it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<String>,
    /// Timeline entries: what happened when.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelineEntry>,
    /// Why it happened as far as tierguard could tell (the breaker probe's finding and the
    /// runbook's advice for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<String>,
    /// What it cost, measured while it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impact: Option<super::IncidentImpact>,
    /// What the diagnosis found: where the trouble comes from and what fills what (latest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
    /// Where the full report is stored (ConfigMap/key), once written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
}

/// One line of an incident timeline.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    #[schemars(schema_with = "timestamp_schema")]
    pub at: Timestamp,
    pub what: String,
}

/// Redis memory: level, last remediation, last audit.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryReport {
    /// ok, watch, warning or critical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<MemoryLevel>,
    /// Used memory in percent of maxmemory at the last reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_percent: Option<f64>,
    /// Evicted keys per second over the eviction rate window (as Prometheus's `rate()` computes
    /// it from the readings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evictions_per_second: Option<f64>,
    /// The last remediation run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_remediation: Option<RemediationOutcome>,
    /// The last key audit (keys without TTL, largest keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_audit: Option<AuditOutcome>,
}

/// Memory levels of the Redis OOM runbook.
#[derive(
    Deserialize,
    Serialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum MemoryLevel {
    #[default]
    Ok,
    Watch,
    Warning,
    Critical,
}

impl MemoryLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryLevel::Ok => "ok",
            MemoryLevel::Watch => "watch",
            MemoryLevel::Warning => "warning",
            MemoryLevel::Critical => "critical",
        }
    }
}

/// What one remediation run did.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemediationOutcome {
    #[schemars(schema_with = "timestamp_schema")]
    pub at: Timestamp,
    /// Keys unlinked, by pattern.
    #[serde(default)]
    pub deleted_by_pattern: BTreeMap<String, u64>,
    /// Keys scanned.
    #[serde(default)]
    pub scanned: u64,
    /// Whether it stopped at a budget (keys or time) before the scan finished.
    #[serde(default)]
    pub budget_exhausted: bool,
    /// Dry run: counted, not deleted.
    #[serde(default)]
    pub dry_run: bool,
    /// Error, if the run failed part-way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What one key audit found.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditOutcome {
    #[schemars(schema_with = "timestamp_schema")]
    pub at: Timestamp,
    /// Keys sampled.
    pub sampled: u64,
    /// Sampled keys without a TTL, by prefix.
    #[serde(default)]
    pub without_ttl_by_prefix: BTreeMap<String, u64>,
    /// The largest sampled keys with their size in bytes, largest first.
    #[serde(default)]
    pub largest_keys: Vec<KeySize>,
    /// Sampled keys without a TTL.
    #[serde(default)]
    pub without_ttl: u64,
    /// Examples of keys without a TTL (at most ten).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub without_ttl_examples: Vec<String>,
    /// The prefixes holding the most bytes (at most ten).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bytes_by_prefix: BTreeMap<String, u64>,
}

/// A key and its memory usage.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeySize {
    pub key: String,
    pub bytes: u64,
}

/// An action the controller took (or, in DryRun, would have taken).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    #[schemars(schema_with = "timestamp_schema")]
    pub at: Timestamp,
    /// render-config, restart-workload, warm-cache, remediate-redis, audit-redis, notify, record-incident.
    pub action: ActionKind,
    /// Why.
    pub reason: String,
    /// ok, failed, skipped or dry-run; started while a claimed action runs (it stays when the
    /// controller stopped before recording how it went).
    pub outcome: ActionOutcome,
    /// Details of the outcome (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The policy engine's memory between reconciles. Everything time-dependent the runbooks need
/// ("for 10 minutes", "hold 5 minutes", cooldowns, escalation) is kept here, so that a restarted
/// controller resumes exactly where the last one stopped.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyMemory {
    /// When the policy last ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_timestamp_schema")]
    pub last_tick: Option<Timestamp>,
    /// The phase the policy reported last (a change is a transition, with an Event).
    #[serde(default)]
    pub phase: Phase,
    /// The rollback criteria's and the stampede's breach windows.
    #[serde(default, skip_serializing_if = "BreachWindows::is_idle")]
    pub windows: BreachWindows,
    /// The canary rollback in progress or awaiting resume, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackState>,
    /// The canary ramping back to its baseline after a resumed rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<RampState>,
    /// The circuit breaker's current outage and its mitigation.
    #[serde(default, skip_serializing_if = "BreakerTrack::is_idle")]
    pub breaker: BreakerTrack,
    /// The cache stampede being handled, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stampede: Option<StampedeState>,
    /// Redis: memory level, evictions, restarts and the remediation cooldown.
    #[serde(default)]
    pub redis: RedisTrack,
    /// The learned normal error rate (percent), when the spec gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate_baseline_percent: Option<f64>,
    /// Open incidents, at most one per runbook, with their escalation state and timeline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_incidents: Vec<OpenIncident>,
    /// When the effective config last loosened automatically (a mitigation ended or a ramp stepped
    /// up). The next automatic loosening waits at least canary.rampInterval, so the config cannot
    /// churn however the signals move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_timestamp_schema")]
    pub last_relaxed_at: Option<Timestamp>,
    /// The spec generation last seen (a change is a deploy; it may trigger warming and it resumes
    /// a rolled-back tier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_generation: Option<i64>,
    /// Hash of the effective config the policy last asked to render.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendered_hash: Option<String>,
    /// Whether that render was only recorded (DryRun): in Enforce it is then rendered for real.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rendered_dry_run: bool,
    /// What may start a stampede, seen lately: generation changes and Redis restarts.
    #[serde(default, skip_serializing_if = "CacheClues::is_idle")]
    pub cache_clues: CacheClues,
}

/// What the stampede diagnosis names as likely causes, remembered for a while.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheClues {
    /// The cache generation last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
    /// The last generation change: when, and from what to what.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_change: Option<Clue>,
    /// The last Redis restart: when, and how it was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_restart: Option<Clue>,
}

impl CacheClues {
    pub fn is_idle(&self) -> bool {
        *self == CacheClues::default()
    }
}

/// Something seen at a time.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Clue {
    #[schemars(schema_with = "timestamp_schema")]
    pub at: Timestamp,
    pub what: String,
}

/// The breach windows of the rollback criteria and of the stampede detector.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BreachWindows {
    /// P50 latency above rollback.p50LatencyMs.
    #[serde(default, skip_serializing_if = "WindowState::is_idle")]
    pub p50_latency: WindowState,
    /// Error rate more than rollback.errorRateIncreasePoints above the baseline.
    #[serde(default, skip_serializing_if = "WindowState::is_idle")]
    pub error_rate: WindowState,
    /// mem0 write success below rollback.mem0WriteSuccessBelowPercent.
    #[serde(default, skip_serializing_if = "WindowState::is_idle")]
    pub mem0_write_success: WindowState,
    /// Cache hit rate below stampede.hitRateBelowPercent while P50 is above
    /// stampede.p50LatencyAboveMs.
    #[serde(default, skip_serializing_if = "WindowState::is_idle")]
    pub stampede: WindowState,
    /// The canary's errors against the stable cohort's: the test since the deploy (or resume),
    /// and the rolling tests started every hour since, each counted from its start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_tests: Vec<ErrorTest>,
}

/// Which counts an error test covers.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ErrorTestSpan {
    /// Everything since the deploy or resume: a regression shipped with the canary.
    #[default]
    SinceDeploy,
    /// A bounded stretch started later: a regression that begins after hours of health is not
    /// diluted by them.
    Rolling,
}

/// The sequential comparison of the canary's error rate with the stable cohort's: the counts it
/// has seen, one batch per rate window (batches never overlap, so no request counts twice).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorTest {
    #[serde(default)]
    pub span: ErrorTestSpan,
    /// When it started.
    #[schemars(schema_with = "timestamp_schema")]
    pub since: Timestamp,
    /// When the last batch was counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_timestamp_schema")]
    pub last_batch_at: Option<Timestamp>,
    pub canary_requests: f64,
    pub canary_errors: f64,
    pub stable_requests: f64,
    pub stable_errors: f64,
}

impl BreachWindows {
    pub fn is_idle(&self) -> bool {
        self.p50_latency.is_idle()
            && self.error_rate.is_idle()
            && self.mem0_write_success.is_idle()
            && self.stampede.is_idle()
            && self.error_tests.is_empty()
    }
}

/// A window over which a condition must hold at every sample ("P50 > 1000 ms for 10m"). A
/// contrary sample resets it; an unknown sample either holds it (neither fills nor resets) or,
/// when unknown counts as a breach, fills it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WindowState {
    /// How long the condition has held, summed over the intervals between counting samples.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub held_for: Duration,
    /// When the last sample of the current run was taken; absent when no run is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_timestamp_schema")]
    pub last_sample_at: Option<Timestamp>,
    /// The signal's value at the last known sample of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_value: Option<f64>,
}

impl WindowState {
    /// No run in progress.
    pub fn is_idle(&self) -> bool {
        self.last_sample_at.is_none()
    }
}

/// A canary rollback: phases 1 to 3 in progress, or 4 (verified and documented) awaiting resume.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackState {
    /// 1 reduce traffic, 2 disable features, 3 verify, 4 documented (rolled back).
    pub phase: RollbackPhase,
    /// When the current phase started.
    #[schemars(schema_with = "timestamp_schema")]
    pub phase_since: Timestamp,
    /// When the rollback started.
    #[schemars(schema_with = "timestamp_schema")]
    pub started_at: Timestamp,
    /// The criterion that triggered it: p50-latency, error-rate, breaker-open or mem0-write-success.
    pub trigger: RollbackCriterion,
    /// Why it started, with the signal values.
    pub reason: String,
    /// The trigger signal's value when the rollback started (to tell whether it worsens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_value: Option<f64>,
    /// When the canary went to 0 and the features were switched off (phase 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_timestamp_schema")]
    pub features_off_at: Option<Timestamp>,
    /// Phase 3: how long every rollback signal has been back within its bound.
    #[serde(default, skip_serializing_if = "WindowState::is_idle")]
    pub verified: WindowState,
    /// The resume annotation's value when the rollback started; a different value resumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_token: Option<String>,
    /// The spec generation when the rollback started; a different generation resumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

/// The canary stepping back up to its baseline after a resumed rollback.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RampState {
    /// The canary rate reached so far.
    pub rate: f64,
    /// When the ramp started.
    #[schemars(schema_with = "timestamp_schema")]
    pub since: Timestamp,
    /// Why it started.
    pub reason: String,
    /// How long the rollback signals have stayed within bounds since the last step.
    #[serde(default, skip_serializing_if = "WindowState::is_idle")]
    pub healthy: WindowState,
}

/// The circuit breaker: the current outage, its alert and its mitigation.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BreakerTrack {
    /// When the breaker was first seen open (or half-open) in the current outage. The outage ends
    /// once the breaker has been closed for canary.rampInterval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_timestamp_schema")]
    pub outage_since: Option<Timestamp>,
    /// How long the breaker has been seen open (or half-open) since it last opened: only open
    /// readings count, and a closed reading stops the clock (a reopening starts a new one, unless
    /// breaker.bridgeClosedGaps bridges the gap).
    #[serde(default, skip_serializing_if = "WindowState::is_idle")]
    pub open: WindowState,
    /// Since when the breaker has been closed, while a gap may still be bridged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_timestamp_schema")]
    pub closed_since: Option<Timestamp>,
    /// How long the breaker has been closed within the outage.
    #[serde(default, skip_serializing_if = "WindowState::is_idle")]
    pub closed: WindowState,
    /// Whether the outage (or low mem0 write success) has been alerted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub alerted: bool,
    /// Since when mem0 reads and shadow writes are switched off, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_timestamp_schema")]
    pub mitigated_since: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mitigation_reason: Option<String>,
    /// Why the breaker is open, as the last probe found it (spec.breaker.probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<super::BreakerDiagnosis>,
    /// The canary held down while mem0 rate-limits the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_shed: Option<super::RateLimitShed>,
}

impl BreakerTrack {
    pub fn is_idle(&self) -> bool {
        *self == BreakerTrack::default()
    }
}

/// A cache stampede being handled.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StampedeState {
    #[schemars(schema_with = "timestamp_schema")]
    pub started_at: Timestamp,
    /// What started it: a detected stampede or a Redis cold start.
    pub trigger: WarmTrigger,
    /// Why it started, with the signal values.
    pub reason: String,
    /// The canary rate the stampede holds the canary at; it steps back up to the baseline.
    pub canary_rate: f64,
    /// How long the hit rate has stayed above stampede.recoverAbovePercent since the last step.
    #[serde(default, skip_serializing_if = "WindowState::is_idle")]
    pub recovering: WindowState,
    /// How long the stampede condition has been absent.
    #[serde(default, skip_serializing_if = "WindowState::is_idle")]
    pub clear: WindowState,
    /// Where it comes from, as last diagnosed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<super::StampedeSource>,
}

/// Redis as the policy tracks it between reconciles.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisTrack {
    /// The current memory level (with holds and hysteresis).
    #[serde(default)]
    pub level: MemoryLevel,
    /// The level last announced (alerts fire when the level differs from it).
    #[serde(default)]
    pub alerted_level: MemoryLevel,
    /// How long usage has stayed above each level's threshold.
    #[serde(default, skip_serializing_if = "LevelWindows::is_idle")]
    pub above: LevelWindows,
    /// The last Redis run_id seen, to detect a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The last Redis uptime seen, seconds; going back means a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_seconds: Option<u64>,
    /// Evictions counted since tracking began, corrected for counter resets.
    #[serde(default)]
    pub evictions_total: u64,
    /// Readings of the evicted_keys counter over the eviction rate window (thinned to a bounded
    /// number).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eviction_samples: Vec<CounterSample>,
    /// How long the eviction rate has stayed above redis.evictions.maxPerSecond.
    #[serde(default, skip_serializing_if = "WindowState::is_idle")]
    pub evicting: WindowState,
    /// Whether the eviction-rate alert is raised.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub eviction_alert: bool,
    /// When the last remediation was asked for (its cooldown starts here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_timestamp_schema")]
    pub last_remediation_at: Option<Timestamp>,
    /// Remediations asked for since memory became critical (option B waits for two).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub remediation_runs: u32,
    /// The keys-without-TTL count and its leak alert.
    #[serde(default, skip_serializing_if = "super::TtlLeakTrack::is_idle")]
    pub keys_without_ttl: super::TtlLeakTrack,
    /// maxmemory as raised by tierguard, with the original value to put back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_raise: Option<super::MaxMemoryRaise>,
    /// Whether the escalation with the audit's findings (no ceiling, or the ceiling reached)
    /// was made in this incident.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub escalated_still_critical: bool,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// How long Redis memory usage has stayed above each level's threshold.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LevelWindows {
    #[serde(default, skip_serializing_if = "WindowState::is_idle")]
    pub watch: WindowState,
    #[serde(default, skip_serializing_if = "WindowState::is_idle")]
    pub warning: WindowState,
    #[serde(default, skip_serializing_if = "WindowState::is_idle")]
    pub critical: WindowState,
}

impl LevelWindows {
    pub fn is_idle(&self) -> bool {
        self.watch.is_idle() && self.warning.is_idle() && self.critical.is_idle()
    }
}

/// A reading of the evicted_keys counter.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CounterSample {
    #[schemars(schema_with = "timestamp_schema")]
    pub at: Timestamp,
    /// The counter as Redis reported it.
    pub raw: u64,
    /// The count since tracking began, corrected for resets.
    pub value: u64,
    /// The reading's number since tracking began (readings thinned out still count).
    #[serde(default)]
    pub seq: u64,
}

/// An incident that is still open, with its escalation and timeline.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenIncident {
    pub id: String,
    /// CanaryRollback, CircuitBreakerOpen, CacheStampede or RedisMemory.
    pub runbook: Runbook,
    /// What triggered it.
    pub trigger: String,
    #[schemars(schema_with = "timestamp_schema")]
    pub started_at: Timestamp,
    /// The highest escalation level already notified.
    #[serde(default)]
    pub notified_level: u8,
    /// What happened when (bounded; the oldest entries are kept).
    // Shared: carrying the memory from one step to the next must not copy it every time.
    #[serde(default, skip_serializing_if = "is_empty_timeline")]
    pub timeline: std::sync::Arc<Vec<TimelineEntry>>,
    /// How long its trouble has been absent (it resolves after canary.rampInterval).
    #[serde(default, skip_serializing_if = "WindowState::is_idle")]
    pub clear: WindowState,
    /// Since when its automatic response has been in force: the clock of `Unresolved` escalation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_timestamp_schema")]
    pub response_since: Option<Timestamp>,
    /// Why it last escalated past level 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated_because: Option<String>,
    /// Who is notified next and when, or why nobody else is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation_plan: Option<String>,
    /// `NearAction` escalations already made: the action drew near, the action was taken.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub escalated_near_action: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub escalated_on_action: bool,
    /// Escalated because of the breaker probe's finding (an auth failure pages level 2 at once).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub escalated_on_diagnosis: bool,
    /// Why it happened as far as tierguard could tell (the breaker probe's finding and the
    /// runbook's advice for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<String>,
    /// What it cost so far, measured at every reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impact: Option<super::IncidentImpact>,
    /// What the diagnosis found, latest first-hand (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
}

fn is_empty_timeline(t: &std::sync::Arc<Vec<TimelineEntry>>) -> bool {
    t.is_empty()
}

fn is_zero(d: &Duration) -> bool {
    d.is_zero()
}

fn policy_memory_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "description": "The policy's memory: timers, phases and cooldowns the controller resumes from after a restart. A versioned document of the controller's own (field version), not described field by field."
    })
}

pub(super) fn timestamp_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "format": "date-time"})
}

pub(super) fn optional_timestamp_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "format": "date-time", "nullable": true})
}
