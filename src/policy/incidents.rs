//! Incidents: opened when a runbook's trouble starts, escalated by `spec.notify.escalation` as
//! `spec.notify.escalate` says for its kind, resolved once, with one `Resolved` notification and
//! the incident record.
//!
//! Escalation fits the incident: one whose automatic response is in force and has not helped
//! (a canary rollback, a stampede, critical memory) reaches the next level after each level's
//! delay, counted from when the response started; a wait-and-see incident (the breaker while its
//! fallback works, a memory warning) stays at level 1, except that the breaker escalates when
//! `maxOpenDuration` draws near and when mem0 reads are switched off. Every notification says
//! why it escalated, or why it does not.

use std::sync::Arc;

use std::time::Duration as StdDuration;

use jiff::Timestamp;

use super::window::{OnUnknown, Sample, elapsed, feed, holds_for};
use super::{Action, Change, IncidentChange, Notification, NotifyKind, Step};
use crate::api::{
    Duration, Escalate, IncidentSummary, MemoryLevel, OpenIncident, PolicyMemory, Runbook,
    TimelineEntry,
};

/// Timeline entries kept per incident; the first ones (how it started) are the ones kept.
const MAX_TIMELINE: usize = 50;

/// Who each escalation level reaches, in the runbooks' words.
fn role(level: u8) -> &'static str {
    match level {
        1 => "on-call engineer",
        2 => "senior engineer",
        3 => "technical lead",
        _ => "escalation contact",
    }
}

/// The open incident of `runbook`.
pub fn find(m: &PolicyMemory, runbook: Runbook) -> Option<&OpenIncident> {
    m.open_incidents.iter().find(|i| i.runbook == runbook)
}

fn find_mut(m: &mut PolicyMemory, runbook: Runbook) -> Option<&mut OpenIncident> {
    m.open_incidents.iter_mut().find(|i| i.runbook == runbook)
}

fn take(m: &mut PolicyMemory, runbook: Runbook) -> Option<OpenIncident> {
    let at = m.open_incidents.iter().position(|i| i.runbook == runbook)?;
    Some(m.open_incidents.remove(at))
}

/// Add a line to an open incident's timeline.
pub(crate) fn note(
    step: &mut Step,
    m: &mut PolicyMemory,
    runbook: Runbook,
    what: impl Into<String>,
) {
    if let Some(incident) = find_mut(m, runbook) {
        if incident.timeline.len() < MAX_TIMELINE {
            Arc::make_mut(&mut incident.timeline).push(TimelineEntry {
                at: step.now,
                what: what.into(),
            });
        }
        step.touch(runbook);
    }
}

/// Record why the open incident of `runbook` happened, as far as tierguard could tell.
pub(crate) fn set_diagnosis(
    step: &mut Step,
    m: &mut PolicyMemory,
    runbook: Runbook,
    diagnosis: String,
) {
    if let Some(incident) = find_mut(m, runbook) {
        incident.diagnosis = Some(diagnosis);
        step.touch(runbook);
    }
}

/// Most findings an incident keeps, and the longest one.
const MAX_FINDINGS: usize = 16;
const MAX_FINDING_CHARS: usize = 600;

fn bounded(findings: Vec<String>) -> Vec<String> {
    findings
        .into_iter()
        .take(MAX_FINDINGS)
        .map(|f| {
            if f.chars().count() > MAX_FINDING_CHARS {
                let mut cut: String = f.chars().take(MAX_FINDING_CHARS - 1).collect();
                cut.push('…');
                cut
            } else {
                f
            }
        })
        .collect()
}

/// Replace what the diagnosis of the open incident of `runbook` found (no change, no update).
pub(crate) fn set_findings(
    step: &mut Step,
    m: &mut PolicyMemory,
    runbook: Runbook,
    findings: Vec<String>,
) {
    let findings = bounded(findings);
    if let Some(incident) = find_mut(m, runbook)
        && incident.findings != findings
    {
        incident.findings = findings;
        step.touch(runbook);
    }
}

/// The notification of a new finding about an open incident, to the level already notified.
pub(crate) fn diagnosed(incident: &OpenIncident, finding: String) -> Notification {
    Notification {
        level: incident.notified_level,
        kind: NotifyKind::Diagnosed,
        incident_id: incident.id.clone(),
        runbook: incident.runbook,
        trigger: incident.trigger.clone(),
        escalated_because: Some(finding),
        escalation_plan: incident.escalation_plan.clone().unwrap_or_default(),
        message: message(incident, incident.notified_level, "INVESTIGATING"),
    }
}

/// Open an incident for `runbook` unless one is open already; notify the first escalation level.
pub(crate) fn open(step: &mut Step, m: &mut PolicyMemory, runbook: Runbook, trigger: &str) {
    open_with_findings(step, m, runbook, trigger, Vec::new());
}

/// [`open`], with what the diagnosis found at once (the first notification carries it).
pub(crate) fn open_with_findings(
    step: &mut Step,
    m: &mut PolicyMemory,
    runbook: Runbook,
    trigger: &str,
    findings: Vec<String>,
) {
    if find(m, runbook).is_some() {
        set_findings(step, m, runbook, findings);
        return;
    }
    let id = format!(
        "{}-{}",
        step.now.strftime("%Y-%m-%d-%H%M%S"),
        runbook.slug()
    );
    let incident = OpenIncident {
        id: id.clone(),
        runbook,
        trigger: trigger.to_owned(),
        started_at: step.now,
        notified_level: 0,
        timeline: Arc::new(vec![TimelineEntry {
            at: step.now,
            what: format!("Anomaly detected: {trigger}"),
        }]),
        clear: Default::default(),
        response_since: None,
        escalated_because: None,
        escalation_plan: None,
        escalated_near_action: false,
        escalated_on_action: false,
        escalated_on_diagnosis: false,
        diagnosis: None,
        impact: Some(crate::api::IncidentImpact::new(super::impact::scope(
            runbook,
        ))),
        findings: bounded(findings),
    };
    m.open_incidents.push(incident);
    step.touch(runbook);
    let at = step.changes.len();
    let level = escalate_one(step, m, runbook).first().copied().unwrap_or(0);
    step.changes.insert(
        at,
        Change::Incident {
            id,
            runbook,
            what: IncidentChange::Opened,
            level,
            reason: trigger.to_owned(),
        },
    );
}

/// Notify every escalation level now due for every open incident.
pub(crate) fn escalate(step: &mut Step, m: &mut PolicyMemory) {
    for &runbook in Runbook::ALL {
        if find(m, runbook).is_some() {
            escalate_one(step, m, runbook);
        }
    }
}

/// The escalation rule in force for an open incident of `runbook`.
fn rule_for(step: &Step, m: &PolicyMemory, runbook: Runbook) -> Escalate {
    let rules = &step.spec.notify.escalate;
    match runbook {
        Runbook::CanaryRollback => rules.canary_rollback,
        Runbook::CacheStampede => rules.cache_stampede,
        Runbook::RedisMemory if m.redis.level == MemoryLevel::Critical => {
            rules.redis_memory_critical
        }
        Runbook::RedisMemory => rules.redis_memory_warning,
        Runbook::CircuitBreakerOpen => rules.circuit_breaker_open,
    }
}

/// For `NearAction`: whether the runbook's action is near (with why), and whether it was taken.
fn action_state(
    step: &Step,
    m: &PolicyMemory,
    runbook: Runbook,
) -> (Option<String>, Option<String>) {
    if runbook != Runbook::CircuitBreakerOpen {
        return (None, None);
    }
    let max = step.spec.breaker.max_open_duration;
    let lead = step.spec.notify.escalate.near_action_lead;
    let open = super::breaker::open_for(m);
    let near = (super::breaker::clock_running(m)
        && open.as_std().saturating_add(lead.as_std()) >= max.as_std())
    .then(|| {
        format!(
            "circuit breaker {} open for {}, {} or less before breaker.maxOpenDuration {max} switches mem0 reads off",
            step.spec.breaker.name,
            super::signals::span(open),
            lead
        )
    });
    let taken = m
        .breaker
        .mitigation_reason
        .as_ref()
        .map(|reason| format!("mem0 reads and shadow writes switched off: {reason}"));
    (near, taken)
}

/// Why the incident of `runbook` must reach level 2 now, whatever its rule: the breaker probe
/// found the API key refused, an outage that will not heal by waiting.
fn urgent(m: &PolicyMemory, runbook: Runbook) -> Option<String> {
    let d = m.breaker.diagnosis.as_ref()?;
    (runbook == Runbook::CircuitBreakerOpen && d.class == crate::api::ProbeClass::AuthFailure).then(
        || {
            format!(
                "diagnosis {}; {}",
                super::diagnosis::describe(d),
                d.class.advice()
            )
        },
    )
}

/// Why a wait-and-see incident does not escalate, in the runbook's words where it has some.
fn why_wait(step: &Step, runbook: Runbook, rule: Escalate) -> String {
    let max = step.spec.breaker.max_open_duration;
    match (runbook, rule) {
        (Runbook::CircuitBreakerOpen, _) => format!(
            "the system continues with its fallback (the runbook: no immediate action unless the outage exceeds {max})"
        ),
        (Runbook::RedisMemory, _) => {
            "Redis memory below the critical level needs no action yet (remediation runs at critical)"
                .to_owned()
        }
        _ => "notify.escalate says Never for this kind of incident".to_owned(),
    }
}

/// What happens next, for people: who is told when, or why nobody else is.
fn plan(step: &Step, incident: &OpenIncident, rule: Escalate, levels: &[(u8, Duration)]) -> String {
    let next = levels.iter().find(|(l, _)| *l > incident.notified_level);
    match (rule, next) {
        (_, None) => "every escalation level has been notified".to_owned(),
        (Escalate::Unresolved, Some((level, after))) => format!(
            "level {level} ({}) is notified if it is still unresolved {after} after its automatic response started",
            role(*level)
        ),
        (Escalate::Never, Some(_)) => format!(
            "no escalation past level {}: {}",
            incident.notified_level,
            why_wait(step, incident.runbook, rule)
        ),
        (Escalate::NearAction, Some(_)) if incident.escalated_on_action => format!(
            "no further escalation: mem0 reads are switched off as the runbook says; the breaker recovers on its own (level {} already notified)",
            incident.notified_level
        ),
        (Escalate::NearAction, Some((level, _))) => {
            let max = step.spec.breaker.max_open_duration;
            let lead = step.spec.notify.escalate.near_action_lead;
            let when = if incident.escalated_near_action {
                format!("when mem0 reads are switched off (open for {max})")
            } else {
                let at = crate::api::Duration::from_std(max.as_std().saturating_sub(lead.as_std()));
                format!(
                    "once the breaker has been open for {at}, and the next when mem0 reads are switched off"
                )
            };
            format!(
                "no escalation yet: {}; level {level} ({}) is notified {when}",
                why_wait(step, incident.runbook, rule),
                role(*level)
            )
        }
    }
}

/// Notify every level now due for the open incident of `runbook`; returns the levels notified.
fn escalate_one(step: &mut Step, m: &mut PolicyMemory, runbook: Runbook) -> Vec<u8> {
    let rule = rule_for(step, m, runbook);
    let (near, taken) = action_state(step, m, runbook);
    let urgent = urgent(m, runbook);
    let mut levels: Vec<(u8, Duration)> = step
        .spec
        .notify
        .escalation
        .iter()
        .map(|l| (l.level, l.after))
        .collect();
    levels.sort_unstable();
    levels.dedup_by_key(|(level, _)| *level);
    let now = step.now;
    let Some(incident) = find_mut(m, runbook) else {
        return Vec::new();
    };
    // The clock of `Unresolved` runs from when that rule came into force (for Redis memory: when
    // the level became critical).
    match rule {
        Escalate::Unresolved => {
            incident.response_since.get_or_insert(now);
        }
        _ => incident.response_since = None,
    }

    // (level, why it is notified now); the first level is told as its `after` says.
    let mut due: Vec<(u8, Option<String>)> = Vec::new();
    let mut reached = incident.notified_level;
    if let Some((first, after)) = levels.first()
        && *first > reached
        && elapsed(now, incident.started_at) >= after.as_std()
    {
        due.push((*first, None));
        reached = *first;
    }
    let next_above = |reached: u8| levels.iter().map(|(l, _)| *l).find(|l| *l > reached);
    if let Some(why) = urgent.filter(|_| !incident.escalated_on_diagnosis && reached > 0) {
        incident.escalated_on_diagnosis = true;
        // Level 2 (the first configured level from 2 on), unless it was reached already.
        if let Some(level) = levels
            .iter()
            .map(|(l, _)| *l)
            .find(|l| *l >= 2)
            .filter(|l| *l > reached)
        {
            due.push((level, Some(why)));
            reached = level;
        }
    }
    match rule {
        Escalate::Unresolved => {
            let responding = incident
                .response_since
                .map_or(StdDuration::ZERO, |since| elapsed(now, since));
            for (level, after) in levels.iter().skip(1) {
                if *level > reached && responding >= after.as_std() {
                    due.push((
                        *level,
                        Some(format!(
                            "unresolved {after} after its automatic response started"
                        )),
                    ));
                    reached = *level;
                }
            }
        }
        Escalate::Never => {}
        Escalate::NearAction => {
            if let Some(why) = near.filter(|_| !incident.escalated_near_action && reached > 0) {
                incident.escalated_near_action = true;
                if let Some(level) = next_above(reached) {
                    due.push((level, Some(why)));
                    reached = level;
                }
            }
            if let Some(why) = taken.filter(|_| !incident.escalated_on_action && reached > 0) {
                incident.escalated_on_action = true;
                incident.escalated_near_action = true;
                if let Some(level) = next_above(reached) {
                    due.push((level, Some(why)));
                }
            }
        }
    }

    let notified: Vec<u8> = due.iter().map(|(level, _)| *level).collect();
    for (level, why) in due {
        let kind = if incident.notified_level == 0 {
            NotifyKind::Opened
        } else {
            NotifyKind::Escalated
        };
        incident.notified_level = level;
        let what = match (&why, kind) {
            (Some(why), NotifyKind::Escalated) => {
                format!("Escalated to level {level} ({}): {why}", role(level))
            }
            _ => format!("Level {level} ({}) notified", role(level)),
        };
        if incident.timeline.len() < MAX_TIMELINE {
            Arc::make_mut(&mut incident.timeline).push(TimelineEntry {
                at: now,
                what: what.clone(),
            });
        }
        if kind == NotifyKind::Escalated {
            incident.escalated_because = why.clone();
        }
        incident.escalation_plan = Some(plan(step, incident, rule, &levels));
        step.actions.push(Action::Notify(Notification {
            level,
            kind,
            incident_id: incident.id.clone(),
            runbook,
            trigger: incident.trigger.clone(),
            escalated_because: incident
                .escalated_because
                .clone()
                .filter(|_| kind == NotifyKind::Escalated),
            escalation_plan: incident.escalation_plan.clone().unwrap_or_default(),
            message: message(incident, level, "INVESTIGATING"),
        }));
        if kind == NotifyKind::Escalated {
            step.changes.push(Change::Incident {
                id: incident.id.clone(),
                runbook,
                what: IncidentChange::Escalated,
                level,
                reason: what,
            });
        }
        step.touch(runbook);
    }
    // Keep the plan current (a memory warning turning critical changes it) without a notification.
    if incident.notified_level > 0 {
        let next = plan(step, incident, rule, &levels);
        if incident.escalation_plan.as_deref() != Some(next.as_str()) {
            incident.escalation_plan = Some(next);
            step.touch(runbook);
        }
    }
    notified
}

/// The escalation in words: why it escalated, and what happens next.
pub fn escalation_text(incident: &OpenIncident) -> Option<String> {
    match (&incident.escalated_because, &incident.escalation_plan) {
        (Some(why), Some(plan)) => Some(format!(
            "escalated to level {} because {why}; {plan}",
            incident.notified_level
        )),
        (Some(why), None) => Some(format!(
            "escalated to level {} because {why}",
            incident.notified_level
        )),
        (None, plan) => plan.clone(),
    }
}

/// Resolve the open incident of `runbook`: timeline, one Resolved notification, the record.
pub(crate) fn resolve(step: &mut Step, m: &mut PolicyMemory, runbook: Runbook, reason: &str) {
    let Some(mut incident) = take(m, runbook) else {
        return;
    };
    let reading = super::impact::reading(step, m);
    super::impact::add(step, &reading, &mut incident);
    if incident.timeline.len() < MAX_TIMELINE {
        Arc::make_mut(&mut incident.timeline).push(TimelineEntry {
            at: step.now,
            what: format!("Resolved: {reason}"),
        });
    }
    let summary = summary(&incident, Some(step.now));
    if incident.notified_level > 0 {
        step.actions.push(Action::Notify(Notification {
            level: incident.notified_level,
            kind: NotifyKind::Resolved,
            incident_id: incident.id.clone(),
            runbook,
            trigger: incident.trigger.clone(),
            escalated_because: None,
            escalation_plan: escalation_text(&incident).unwrap_or_default(),
            message: message(&incident, incident.notified_level, "RESOLVED"),
        }));
    }
    step.actions.push(Action::RecordIncident {
        incident: Box::new(summary.clone()),
        reason: format!("{} incident resolved: {reason}", runbook.title()),
    });
    step.changes.push(Change::Incident {
        id: incident.id.clone(),
        runbook,
        what: IncidentChange::Resolved,
        level: incident.notified_level,
        reason: reason.to_owned(),
    });
    step.resolved.push(summary);
}

/// Track an incident whose trouble is a present-tense condition: open it when the trouble starts,
/// resolve it once the trouble has been absent for `canary.rampInterval` (and `may_resolve`, i.e.
/// the runbook's mitigations are gone). Unknown trouble neither counts as absent nor as present.
pub(crate) fn track(
    step: &mut Step,
    m: &mut PolicyMemory,
    runbook: Runbook,
    trouble: Option<bool>,
    trigger: impl FnOnce() -> String,
    may_resolve: bool,
) {
    let interval = step.spec.canary.ramp_interval;
    match find_mut(m, runbook) {
        None => {
            if trouble == Some(true) {
                open(step, m, runbook, &trigger());
            }
        }
        Some(incident) => {
            let sample = match trouble {
                Some(false) => Sample::Holds(None),
                Some(true) => Sample::Broken,
                None => Sample::Unknown,
            };
            feed(&mut incident.clear, step.now, sample, OnUnknown::Hold);
            if may_resolve && holds_for(&incident.clear, interval) {
                let reason = format!("no trouble for {interval}");
                resolve(step, m, runbook, &reason);
            }
        }
    }
}

/// The status entry of an incident.
pub fn summary(incident: &OpenIncident, resolved_at: Option<Timestamp>) -> IncidentSummary {
    IncidentSummary {
        id: incident.id.clone(),
        runbook: incident.runbook,
        trigger: incident.trigger.clone(),
        started_at: incident.started_at,
        resolved_at,
        escalation_level: incident.notified_level,
        escalation: escalation_text(incident),
        timeline: incident.timeline.to_vec(),
        diagnosis: incident.diagnosis.clone(),
        impact: incident.impact.clone(),
        findings: incident.findings.clone(),
        report: None,
    }
}

/// The runbooks' communication template, filled in.
fn message(incident: &OpenIncident, level: u8, status: &str) -> String {
    let mut text = format!(
        "[INCIDENT] {} - mem0-redis memory tier\nIncident: {} (level {level}: {})\nTrigger: {}\n",
        incident.runbook.title(),
        incident.id,
        role(level),
        incident.trigger,
    );
    if !incident.findings.is_empty() {
        text.push_str("\nDiagnosis:\n");
        for finding in &incident.findings {
            text.push_str(&format!("- {finding}\n"));
        }
    }
    text.push_str("\nTimeline:\n");
    for entry in incident.timeline.iter() {
        text.push_str(&format!(
            "- {} - {}\n",
            entry.at.strftime("%H:%M:%S UTC"),
            entry.what
        ));
    }
    if let Some(diagnosis) = &incident.diagnosis {
        text.push_str(&format!("\nDiagnosis: {diagnosis}\n"));
    }
    if let Some(impact) = &incident.impact {
        text.push_str("\nImpact:\n");
        for line in super::impact::lines(impact) {
            text.push_str(&format!("- {line}\n"));
        }
    }
    if let Some(escalation) = escalation_text(incident) {
        text.push_str(&format!("\nEscalation: {escalation}\n"));
    }
    text.push_str(&format!("\nStatus: {status}"));
    text
}

/// Escalate the open incident of `runbook` to the next level at once, because of `why` (the
/// automatic response has run out: what is left needs a person), whatever its escalation rule.
pub(crate) fn escalate_because(step: &mut Step, m: &mut PolicyMemory, runbook: Runbook, why: &str) {
    let mut levels: Vec<(u8, Duration)> = step
        .spec
        .notify
        .escalation
        .iter()
        .map(|l| (l.level, l.after))
        .collect();
    levels.sort_unstable();
    levels.dedup_by_key(|(level, _)| *level);
    let rule = rule_for(step, m, runbook);
    let now = step.now;
    let Some(incident) = find_mut(m, runbook) else {
        return;
    };
    let Some(level) = levels
        .iter()
        .map(|(l, _)| *l)
        .find(|l| *l > incident.notified_level)
    else {
        return;
    };
    let kind = if incident.notified_level == 0 {
        NotifyKind::Opened
    } else {
        NotifyKind::Escalated
    };
    incident.notified_level = level;
    incident.escalated_because = Some(why.to_owned());
    let what = format!("Escalated to level {level} ({}): {why}", role(level));
    if incident.timeline.len() < MAX_TIMELINE {
        Arc::make_mut(&mut incident.timeline).push(TimelineEntry {
            at: now,
            what: what.clone(),
        });
    }
    incident.escalation_plan = Some(plan(step, incident, rule, &levels));
    step.actions.push(Action::Notify(Notification {
        level,
        kind,
        incident_id: incident.id.clone(),
        runbook,
        trigger: incident.trigger.clone(),
        escalated_because: Some(why.to_owned()),
        escalation_plan: incident.escalation_plan.clone().unwrap_or_default(),
        message: message(incident, level, "INVESTIGATING"),
    }));
    step.changes.push(Change::Incident {
        id: incident.id.clone(),
        runbook,
        what: IncidentChange::Escalated,
        level,
        reason: what,
    });
    step.touch(runbook);
}
