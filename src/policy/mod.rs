//! The policy engine: every runbook as a pure, time-aware state machine.
//!
//! [`decide`] takes the spec, the memory the last call returned, one observation and the time, and
//! gives back a [`Decision`]: the actions to take, the next memory, and the status (phase,
//! conditions, mitigations, effective config, incidents). It does no IO, reads no clock and uses
//! no randomness, so the same inputs always give the same decision, in the controller and in
//! `tierguard simulate` alike. Time is only ever compared, never assumed: no rule depends on how
//! often `decide` is called, so a drill with two-second windows behaves like production with
//! ten-minute ones.
//!
//! The runbooks: [`rollback`] (canary rollback phases 1–4 and the ramp back after a resume),
//! [`breaker`] (circuit breaker open), [`stampede`] (cache stampede, cold start, warming),
//! [`redis`] (memory levels, evictions, remediation) and [`incidents`] (escalation and records).
//!
//! # No flapping
//!
//! A signal that oscillates around a threshold must not make the tier roll back again and again or
//! the config churn. The rule has four parts:
//!
//! 1. **Sustained to start.** A breach counts only when *every* sample over its whole window
//!    breaches (P50 > 1000 ms for 10m). One contrary sample resets the window. An unknown sample
//!    follows `metrics.onMissingData` for the rollback criteria (Hold: the window neither fills nor
//!    resets; Rollback: it counts as a breach) and holds for the other runbooks.
//! 2. **Sustained to end.** A mitigation ends only when its exit condition has held at every
//!    sample for its own window (`canary.rampInterval`, or `rollback.phaseHold` for verification);
//!    memory levels are left only `memoryLevels.hysteresis` points below them; the eviction alert
//!    clears only at half its limit. Incidents resolve only after their trouble has been absent for
//!    `canary.rampInterval`, so a re-occurrence within that time is the same incident.
//! 3. **One rollback per incident.** A rollback runs phases 1–4 once; the tier then stays rolled
//!    back until a human resumes it (or `autoResume`), and after a resume a new rollback needs its
//!    criterion breached for a whole window again.
//! 4. **Loosen slowly, tighten at once.** A change that makes the effective config safer applies
//!    immediately. A change that loosens it (a mitigation ending, a ramp step up) happens at most
//!    once per `canary.rampInterval`; loosenings that fall due in the same step are applied
//!    together. Every tightening re-adds something a loosening removed (each runbook adds each of
//!    its overlays once per incident), so with the defaults the effective config changes at most
//!    2 × (1h / 5m + 1) + 7 = 33 times in any hour, and in practice a handful of times per incident.

mod action;
pub mod breaker;
pub mod clinics;
pub mod diagnosis;
pub mod effective;
pub mod impact;
pub mod incidents;
pub mod mitigations;
pub mod redis;
pub mod rollback;
pub mod sequential;
mod signals;
pub mod stampede;
pub mod thresholds;
pub mod window;

use jiff::Timestamp;
use serde::Serialize;

pub use action::{Action, Notification, NotifyKind};
pub use signals::{num, span};

use crate::api::Signals;
use crate::api::conditions::{TierCondition, Truth};
use crate::api::{
    ConditionType, EffectiveConfig, IncidentSummary, MemoryLevel, MemoryReport, MemoryTierSpec,
    Mitigation, Mode, Observation, Phase, PolicyMemory, Reason, RollbackPhase, Runbook, Subject,
    WarmTrigger,
};
use window::{Sample, at_least};

/// What the caller knows besides the spec, the memory and the observation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecideContext {
    /// `metadata.generation` of the MemoryTier. A change is a deploy: it may warm the cache and it
    /// resumes a rolled-back tier.
    pub generation: Option<i64>,
    /// The value of the annotation `tierguard.dev/resume` ([`crate::api::RESUME_ANNOTATION`]), if
    /// set. A rollback resumes when it differs from its value when the rollback started (removing
    /// the annotation does not resume).
    pub resume_token: Option<String>,
    /// What the target ConfigMap holds now.
    pub applied: AppliedConfig,
    /// The last Redis key audit (`status.memoryReport.lastAudit`): its findings go into the Redis
    /// memory incident.
    pub last_audit: Option<crate::api::AuditOutcome>,
}

/// The state of the target ConfigMap, as the caller last read it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AppliedConfig {
    /// Not known: only changes decided by the policy are rendered.
    #[default]
    Unknown,
    /// The ConfigMap does not exist: in Enforce it is rendered.
    Absent,
    /// The ConfigMap carries this config hash: in Enforce it is re-rendered if it differs.
    Hash(String),
}

/// What happened in one step and why: the lines of `tierguard simulate` and the tier's Events.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Change {
    /// A state changed: the tier's phase, a rollback phase, a ramp step, a mitigation starting or
    /// ending.
    Transition {
        subject: Subject,
        from: String,
        to: String,
        reason: String,
    },
    /// Something needs attention now.
    Alert {
        subject: Subject,
        /// The Event reason.
        code: Reason,
        warning: bool,
        message: String,
    },
    /// An incident opened, escalated or resolved.
    Incident {
        id: String,
        runbook: Runbook,
        what: IncidentChange,
        /// The escalation level notified (0 when none was).
        level: u8,
        reason: String,
    },
}

/// What happened to an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IncidentChange {
    Opened,
    Escalated,
    Resolved,
}

impl IncidentChange {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentChange::Opened => "opened",
            IncidentChange::Escalated => "escalated",
            IncidentChange::Resolved => "resolved",
        }
    }
}

impl Change {
    /// transition, alert or incident.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Transition { .. } => "transition",
            Change::Alert { .. } => "alert",
            Change::Incident { .. } => "incident",
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Change::Transition {
                subject,
                from,
                to,
                reason,
            } => format!("{subject}: {from} → {to}: {reason}"),
            Change::Alert {
                subject, message, ..
            } => format!("{subject}: {message}"),
            Change::Incident {
                id,
                runbook,
                what,
                level,
                reason,
            } => {
                let level = if *level > 0 && *what != IncidentChange::Resolved {
                    format!(" (level {level})")
                } else {
                    String::new()
                };
                format!("{runbook} {id} {}{level}: {reason}", what.as_str())
            }
        }
    }

    /// Pending to Healthy: a new tier's first tick found it well.
    fn is_first_healthy_phase(&self) -> bool {
        matches!(self, Change::Transition { subject: Subject::Phase, from, to, .. }
            if from == Phase::Pending.as_str() && to == Phase::Healthy.as_str())
    }

    /// The Kubernetes Event that reports it. None for a new tier's first phase, Healthy: that is
    /// in status, and its first render's Event says it is taken over (one Event, not two, for
    /// each of a fleet's new tiers).
    pub fn event(&self) -> Option<Action> {
        if self.is_first_healthy_phase() {
            return None;
        }
        let (warning, reason) = match self {
            Change::Transition { subject, .. } => (false, subject.event_reason()),
            Change::Alert { code, warning, .. } => (*warning, *code),
            Change::Incident { what, .. } => (
                *what != IncidentChange::Resolved,
                match what {
                    IncidentChange::Opened => Reason::IncidentOpened,
                    IncidentChange::Escalated => Reason::IncidentEscalated,
                    IncidentChange::Resolved => Reason::IncidentResolved,
                },
            ),
        };
        Some(Action::Event {
            warning,
            reason,
            message: self.describe(),
        })
    }
}

/// The outcome of one [`decide`] step.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// What to do, in order: warming first, then the config render (and restart), Redis
    /// remediation and audit, incident records, notifications, and last the Events that explain
    /// all of it.
    pub actions: Vec<Action>,
    /// DryRun: carry out none of the actions except the Events (which say what would have been
    /// done); record the others in status as `dry-run`. Paused decisions hold Events only.
    pub dry_run: bool,
    /// The memory to store in `status.policy` and pass to the next call.
    pub memory: PolicyMemory,
    /// The tier's phase.
    pub phase: Phase,
    /// Ready and the domain conditions (RolledBack, MemoryPressure, CacheStampede, BreakerOpen).
    pub conditions: Vec<TierCondition>,
    /// The mitigations in force.
    pub mitigations: Vec<Mitigation>,
    /// baseline ⊕ mitigations, as [`effective::render`] gives it.
    pub effective: EffectiveConfig,
    /// Memory level, usage and evictions (the last remediation and audit come from the actuators).
    pub memory_report: MemoryReport,
    /// Incidents opened, updated or resolved in this step, as they should appear in status.
    pub incidents: Vec<IncidentSummary>,
    /// What changed in this step and why.
    pub changes: Vec<Change>,
}

/// The working state of one step.
pub(crate) struct Step<'a> {
    pub spec: &'a MemoryTierSpec,
    pub ctx: &'a DecideContext,
    pub now: Timestamp,
    pub signals: Signals<'a>,
    pub actions: Vec<Action>,
    pub changes: Vec<Change>,
    /// Runbooks whose open incident changed in this step.
    pub touched: Vec<Runbook>,
    /// Incidents resolved in this step.
    pub resolved: Vec<IncidentSummary>,
    /// A Redis restart seen in this observation, with its description.
    pub cold_start: Option<String>,
    /// A spec generation change seen in this step: (before, after).
    pub deploy: Option<(i64, i64)>,
    /// This observation's stampede sample.
    pub stampede_sample: Sample,
    /// The breaker probe found something new in this observation.
    pub diagnosed: bool,
    /// This observation's per-clinic cache readings, judged.
    pub clinics: Option<clinics::ClinicView>,
}

impl Step<'_> {
    pub fn touch(&mut self, runbook: Runbook) {
        if !self.touched.contains(&runbook) {
            self.touched.push(runbook);
        }
    }

    /// Whether an automatic loosening may happen now: at most one per `canary.rampInterval`
    /// (several in the same step count as one).
    pub fn may_relax(&self, m: &PolicyMemory) -> bool {
        m.last_relaxed_at.is_none_or(|last| {
            last == self.now || at_least(self.now, last, self.spec.canary.ramp_interval)
        })
    }

    pub fn relaxed(&self, m: &mut PolicyMemory) {
        m.last_relaxed_at = Some(self.now);
    }
}

/// One step of the policy. See the module docs for the rules.
pub fn decide(
    spec: &MemoryTierSpec,
    memory: &PolicyMemory,
    observation: &Observation,
    now: Timestamp,
    ctx: &DecideContext,
) -> Decision {
    let mut m = memory.clone();
    let mut step = Step {
        spec,
        ctx,
        now,
        signals: Signals::from_observation(observation),
        actions: Vec::new(),
        changes: Vec::new(),
        touched: Vec::new(),
        resolved: Vec::new(),
        cold_start: None,
        deploy: None,
        stampede_sample: Sample::Unknown,
        diagnosed: false,
        clinics: None,
    };

    // Observation: trackers and windows move in every mode, so that the status always shows the
    // truth and a tier un-paused mid-breach acts on what really held.
    redis::observe(&mut step, &mut m);
    clinics::track_clues(&step, &mut m);
    breaker::observe(&mut step, &mut m);
    diagnosis::observe(&mut step, &mut m, observation.breaker_probe.as_ref());
    rollback::observe(&mut step, &mut m);
    stampede::observe(&mut step, &mut m);
    if let Some(generation) = ctx.generation {
        if let Some(seen) = m.seen_generation
            && seen != generation
        {
            step.deploy = Some((seen, generation));
        }
        m.seen_generation = Some(generation);
    }

    let paused = spec.mode == Mode::Paused;
    if !paused {
        if let Some((before, after)) = step.deploy {
            rollback::restart_error_test(&mut m);
            let reason = format!("the spec changed (generation {before} → {after}): a deploy");
            stampede::warm(&mut step, WarmTrigger::Deploy, &reason);
            step.changes.push(Change::Transition {
                subject: Subject::Deploy,
                from: before.to_string(),
                to: after.to_string(),
                reason,
            });
        }
        rollback::step(&mut step, &mut m);
        rollback::ramp(&mut step, &mut m);
        breaker::step(&mut step, &mut m);
        diagnosis::step(&mut step, &mut m);
        stampede::step(&mut step, &mut m);
        redis::step(&mut step, &mut m);
        impact::measure(&mut step, &mut m);
        incidents::escalate(&mut step, &mut m);
    }

    let active = mitigations::active(spec, &m);
    let (config, overridden_by) = effective::render(spec, &active);
    let hash = effective::hash(&config);
    if !paused && render(&mut step, &m, memory, &config, &hash) {
        m.rendered_hash = Some(hash.clone());
        m.rendered_dry_run = spec.mode == Mode::DryRun;
    }
    let effective = EffectiveConfig {
        canary_sample_rate: config.get(effective::CANARY_SAMPLE_RATE).cloned(),
        config,
        hash: Some(hash),
        overridden_by,
    };

    let phase = phase_of(spec, &m, &active);
    if phase != m.phase {
        let reason = phase_reason(spec, &m, &active, phase);
        step.changes.insert(
            0,
            Change::Transition {
                subject: Subject::Phase,
                from: m.phase.as_str().to_owned(),
                to: phase.as_str().to_owned(),
                reason,
            },
        );
    }
    m.phase = phase;
    m.last_tick = Some(now);

    let evictions = redis::evictions_per_second(&step, &m);
    let memory_report = MemoryReport {
        level: Some(m.redis.level),
        used_percent: step.signals.redis_used_memory_percent,
        evictions_per_second: evictions,
        last_remediation: None,
        last_audit: None,
    };
    let conditions = conditions_of(&step, &m, phase, &active, evictions);

    let mut incidents_out = std::mem::take(&mut step.resolved);
    for runbook in &step.touched {
        if let Some(open) = incidents::find(&m, *runbook) {
            incidents_out.push(incidents::summary(open, None));
        }
    }

    let dry_run = spec.mode == Mode::DryRun;
    let mut actions = step.actions;
    actions.sort_by_key(rank);
    let mut events: Vec<Action> = step.changes.iter().filter_map(Change::event).collect();
    events.extend(actions.iter().filter_map(|a| action_event(a, dry_run)));
    if dry_run {
        for event in &mut events {
            if let Action::Event { message, .. } = event {
                message.insert_str(0, "DryRun: ");
            }
        }
    }
    actions.extend(events);

    Decision {
        actions,
        dry_run: dry_run || paused,
        memory: m,
        phase,
        conditions,
        mitigations: active,
        effective,
        memory_report,
        incidents: incidents_out,
        changes: step.changes,
    }
}

/// The order actions are carried out in.
fn rank(action: &Action) -> u8 {
    match action {
        Action::WarmCache { .. } => 0,
        Action::RenderConfig { .. } => 1,
        Action::RestartWorkload { .. } => 2,
        Action::RemediateRedis { .. } => 3,
        Action::AuditRedis { .. } => 4,
        Action::SetMaxMemory { .. } => 4,
        Action::RecordIncident { .. } => 5,
        Action::Notify(_) => 6,
        Action::Event { .. } => 7,
    }
}

/// The Event that says why an action is taken (Notify and RecordIncident are reported by their
/// incident's change).
pub fn action_event(action: &Action, dry_run: bool) -> Option<Action> {
    let reason = action.kind().decision_reason()?;
    let verb = if dry_run { "would " } else { "" };
    let message = match action {
        Action::RenderConfig { hash, reason, .. } => {
            format!("{verb}render the effective config (hash {hash}): {reason}")
        }
        Action::RestartWorkload { reason, .. } => format!("{verb}restart the workload: {reason}"),
        Action::WarmCache { reason, .. } => format!("{verb}warm the cache: {reason}"),
        Action::RemediateRedis { reason, .. } => format!("{verb}remediate Redis: {reason}"),
        Action::AuditRedis { reason } => format!("{verb}audit Redis keys: {reason}"),
        Action::SetMaxMemory { bytes, reason, .. } => {
            format!("{verb}set Redis maxmemory to {bytes} bytes: {reason}")
        }
        Action::Notify(_) | Action::RecordIncident { .. } | Action::Event { .. } => {
            return None;
        }
    };
    Some(Action::Event {
        warning: false,
        reason,
        message,
    })
}

/// Ask for a render when the effective config changed, or (in Enforce) when the ConfigMap does not
/// hold it or the last render was only recorded in DryRun. Returns whether it asked.
fn render(
    step: &mut Step,
    m: &PolicyMemory,
    before: &PolicyMemory,
    config: &effective::ConfigMap,
    hash: &str,
) -> bool {
    let enforce = step.spec.mode == Mode::Enforce;
    let changed = before.rendered_hash.as_deref() != Some(hash);
    let only_recorded = enforce && before.rendered_dry_run;
    let drift = enforce
        && match &step.ctx.applied {
            AppliedConfig::Unknown => None,
            AppliedConfig::Absent => Some("the ConfigMap does not exist".to_owned()),
            AppliedConfig::Hash(h) if h != hash => {
                Some(format!("the ConfigMap holds config {h}, not {hash}"))
            }
            AppliedConfig::Hash(_) => None,
        }
        .is_some();
    if !changed && !drift && !only_recorded {
        return false;
    }
    let reason = if changed {
        match &before.rendered_hash {
            None => "first render of the effective config".to_owned(),
            Some(_) => change_reason(step.spec, before, m),
        }
    } else if only_recorded {
        "spec.mode is Enforce: the effective config so far was only recorded (DryRun)".to_owned()
    } else {
        match &step.ctx.applied {
            AppliedConfig::Absent => "the ConfigMap does not exist".to_owned(),
            AppliedConfig::Hash(h) => format!("the ConfigMap holds config {h}, not {hash}"),
            AppliedConfig::Unknown => unreachable!("no drift without a known ConfigMap"),
        }
    };
    step.actions.push(Action::RenderConfig {
        config: config.clone(),
        hash: hash.to_owned(),
        reason: reason.clone(),
    });
    let target = &step.spec.target;
    if changed
        && before.rendered_hash.is_some()
        && target.restart_on_change
        && target.workload_ref.is_some()
    {
        step.actions.push(Action::RestartWorkload {
            hash: hash.to_owned(),
            reason: format!("target.restartOnChange: {reason}"),
        });
    }
    true
}

fn change_reason(spec: &MemoryTierSpec, before: &PolicyMemory, after: &PolicyMemory) -> String {
    let old = mitigations::active(spec, before);
    let new = mitigations::active(spec, after);
    let mut parts = Vec::new();
    for n in &new {
        match old.iter().find(|o| o.name == n.name) {
            None => parts.push(format!("applied {} ({})", n.name, n.reason)),
            Some(o) if o.overrides != n.overrides => parts.push(format!("updated {}", n.name)),
            Some(_) => {}
        }
    }
    for o in &old {
        if !new.iter().any(|n| n.name == o.name) {
            parts.push(format!("removed {} ({})", o.name, o.until));
        }
    }
    if parts.is_empty() {
        "the spec changed".to_owned()
    } else {
        parts.join("; ")
    }
}

fn phase_of(spec: &MemoryTierSpec, m: &PolicyMemory, active: &[Mitigation]) -> Phase {
    if spec.mode == Mode::Paused {
        return Phase::Paused;
    }
    if let Some(rb) = &m.rollback {
        return if rb.phase == RollbackPhase::Documented {
            Phase::RolledBack
        } else {
            Phase::RollingBack
        };
    }
    let reduced = spec.canary.reduced_rate.min(spec.canary.sample_rate);
    let stampede_ramping = m.stampede.as_ref().is_some_and(|s| s.canary_rate > reduced);
    let rate_limit_ramping = m
        .breaker
        .rate_limit_shed
        .as_ref()
        .is_some_and(|s| s.canary_rate > reduced);
    if m.ramp.is_some() || stampede_ramping || rate_limit_ramping {
        return Phase::Recovering;
    }
    let troubled = !active.is_empty()
        || m.stampede.is_some()
        || m.breaker.outage_since.is_some()
        || !m.open_incidents.is_empty()
        || m.redis.level >= MemoryLevel::Watch
        || m.redis.eviction_alert;
    if troubled {
        Phase::Degraded
    } else {
        Phase::Healthy
    }
}

fn phase_reason(
    spec: &MemoryTierSpec,
    m: &PolicyMemory,
    active: &[Mitigation],
    phase: Phase,
) -> String {
    match phase {
        Phase::Paused => "spec.mode is Paused: observing and reporting only".into(),
        Phase::RollingBack => m
            .rollback
            .as_ref()
            .map(|rb| format!("canary rollback: {}", rb.reason))
            .unwrap_or_default(),
        Phase::RolledBack => {
            if spec.rollback.auto_resume {
                "rollback verified".into()
            } else {
                format!(
                    "rollback verified; waiting for a human to resume (annotation {} or a spec change)",
                    crate::api::RESUME_ANNOTATION
                )
            }
        }
        Phase::Recovering => "the canary ramps back to its baseline".into(),
        Phase::Degraded => {
            let mut why: Vec<String> = active
                .iter()
                .map(|a| format!("mitigation {}", a.name))
                .collect();
            if m.breaker.outage_since.is_some() {
                why.push("circuit breaker open".into());
            }
            if m.redis.level >= MemoryLevel::Watch {
                why.push(format!("Redis memory level {}", m.redis.level.as_str()));
            }
            if m.redis.eviction_alert {
                why.push("Redis evictions".into());
            }
            for incident in &m.open_incidents {
                why.push(format!("incident {} open", incident.id));
            }
            why.dedup();
            why.join(", ")
        }
        Phase::Healthy => "all signals within bounds, running on the baseline".into(),
        Phase::Pending | Phase::Stalled => String::new(),
    }
}

fn conditions_of(
    step: &Step,
    m: &PolicyMemory,
    phase: Phase,
    active: &[Mitigation],
    evictions: Option<f64>,
) -> Vec<TierCondition> {
    let spec = step.spec;
    let mut out = Vec::with_capacity(5);

    let (ready, reason, message) = match phase {
        Phase::Paused => (
            true,
            Reason::Paused,
            "spec.mode is Paused: observing and reporting only".to_owned(),
        ),
        Phase::RollingBack => (
            false,
            Reason::RollingBack,
            "a canary rollback is in progress".to_owned(),
        ),
        Phase::RolledBack => (
            false,
            Reason::AwaitingResume,
            "rolled back; waiting to be resumed".to_owned(),
        ),
        Phase::Recovering => (
            false,
            Reason::Recovering,
            "the canary ramps back to its baseline".to_owned(),
        ),
        _ if !active.is_empty() => (
            false,
            Reason::Mitigating,
            format!("{} mitigation(s) in force", active.len()),
        ),
        _ if spec.mode == Mode::DryRun => (
            true,
            Reason::DryRun,
            "DryRun: decisions are recorded, not carried out".to_owned(),
        ),
        _ => (true, Reason::Healthy, "running on the baseline".to_owned()),
    };
    out.push(TierCondition::new(
        ConditionType::Ready,
        Truth::from_bool(ready),
        reason,
        message,
    ));

    out.push(match &m.rollback {
        Some(rb) if rb.phase == RollbackPhase::Documented => TierCondition::new(
            ConditionType::RolledBack,
            Truth::True,
            Reason::AwaitingResume,
            format!("rolled back and verified: {}", rb.reason),
        ),
        Some(rb) => TierCondition::new(
            ConditionType::RolledBack,
            Truth::True,
            Reason::RollingBack,
            format!("phase {}: {}", rb.phase, rb.reason),
        ),
        None => TierCondition::new(
            ConditionType::RolledBack,
            Truth::False,
            Reason::NotRolledBack,
            "",
        ),
    });

    let used = step.signals.redis_used_memory_percent;
    let level = m.redis.level;
    out.push(if m.redis.eviction_alert && level < MemoryLevel::Watch {
        TierCondition::new(
            ConditionType::MemoryPressure,
            Truth::True,
            Reason::Evictions,
            format!(
                "Redis evicts {}/s over {} (above {}/s for {})",
                evictions.map(num).unwrap_or_else(|| "?".into()),
                spec.redis.evictions.rate_window,
                num(spec.redis.evictions.max_per_second),
                spec.redis.evictions.for_duration
            ),
        )
    } else if level >= MemoryLevel::Watch {
        TierCondition::new(
            ConditionType::MemoryPressure,
            Truth::True,
            redis::level_reason(level),
            format!(
                "level {} at {} used",
                level.as_str(),
                used.map(|u| format!("{}%", num(u)))
                    .unwrap_or_else(|| "unknown".into())
            ),
        )
    } else if used.is_none() {
        TierCondition::new(
            ConditionType::MemoryPressure,
            Truth::Unknown,
            Reason::SignalsUnknown,
            "Redis used memory is unknown",
        )
    } else {
        TierCondition::new(
            ConditionType::MemoryPressure,
            Truth::False,
            Reason::MemoryOk,
            "",
        )
    });

    let stampede_known =
        step.signals.cache_hit_rate_percent.is_some() && step.signals.p50_latency_ms.is_some();
    out.push(match &m.stampede {
        Some(s) => TierCondition::new(
            ConditionType::CacheStampede,
            Truth::True,
            if s.trigger == WarmTrigger::ColdStart {
                Reason::ColdStart
            } else if s.source.as_ref().is_some_and(|src| src.confined) {
                Reason::HotClinicStampede
            } else {
                Reason::StampedeDetected
            },
            match &s.source {
                Some(source) => format!("{}; {}", s.reason, clinics::lines(source).join("; ")),
                None => s.reason.clone(),
            },
        ),
        None if !stampede_known => TierCondition::new(
            ConditionType::CacheStampede,
            Truth::Unknown,
            Reason::SignalsUnknown,
            "the cache hit rate or P50 latency is unknown",
        ),
        None => TierCondition::new(
            ConditionType::CacheStampede,
            Truth::False,
            Reason::NoStampede,
            "",
        ),
    });

    out.push(match (m.breaker.outage_since, step.signals.breaker_state) {
        (Some(_), _) => TierCondition::new(
            ConditionType::BreakerOpen,
            Truth::True,
            Reason::BreakerOpened,
            if breaker::clock_running(m) {
                let found = m
                    .breaker
                    .diagnosis
                    .as_ref()
                    .map(|d| format!("; diagnosis {}", diagnosis::describe(d)))
                    .unwrap_or_default();
                format!("open for {}{found}", signals::span(breaker::open_for(m)))
            } else {
                format!(
                    "closed again; the outage ends once it has stayed closed for {}",
                    spec.canary.ramp_interval
                )
            },
        ),
        (None, None) => TierCondition::new(
            ConditionType::BreakerOpen,
            Truth::Unknown,
            Reason::SignalsUnknown,
            "breaker state unknown",
        ),
        (None, Some(_)) => TierCondition::new(
            ConditionType::BreakerOpen,
            Truth::False,
            Reason::BreakerClosed,
            "",
        ),
    });
    out
}
