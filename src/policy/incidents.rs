//! Incidents: opened when a runbook's trouble starts, escalated by `spec.notify.escalation`,
//! resolved once, with one `Resolved` notification and the incident record.

use jiff::Timestamp;

use super::window::{OnUnknown, Sample, elapsed, feed, holds_for};
use super::{Action, Change, IncidentChange, NotifyKind, Step};
use crate::api::{IncidentSummary, OpenIncident, PolicyMemory, TimelineEntry};

/// The runbooks, as incidents name them.
pub const CANARY_ROLLBACK: &str = "CanaryRollback";
pub const CIRCUIT_BREAKER_OPEN: &str = "CircuitBreakerOpen";
pub const CACHE_STAMPEDE: &str = "CacheStampede";
pub const REDIS_MEMORY: &str = "RedisMemory";

/// Timeline entries kept per incident; the first ones (how it started) are the ones kept.
const MAX_TIMELINE: usize = 50;

fn title(runbook: &str) -> &'static str {
    match runbook {
        CANARY_ROLLBACK => "Canary Rollback",
        CIRCUIT_BREAKER_OPEN => "Circuit Breaker Open",
        CACHE_STAMPEDE => "Cache Stampede",
        REDIS_MEMORY => "Redis Memory",
        _ => "Incident",
    }
}

fn slug(runbook: &str) -> &'static str {
    match runbook {
        CANARY_ROLLBACK => "canary-rollback",
        CIRCUIT_BREAKER_OPEN => "circuit-breaker-open",
        CACHE_STAMPEDE => "cache-stampede",
        REDIS_MEMORY => "redis-memory",
        _ => "incident",
    }
}

/// Who each escalation level reaches, in the runbooks' words.
fn role(level: u8) -> &'static str {
    match level {
        1 => "on-call engineer",
        2 => "senior engineer",
        3 => "technical lead",
        _ => "escalation contact",
    }
}

/// Add a line to an open incident's timeline.
pub(crate) fn note(
    step: &mut Step,
    m: &mut PolicyMemory,
    runbook: &'static str,
    what: impl Into<String>,
) {
    if let Some(incident) = m.open_incidents.get_mut(runbook) {
        if incident.timeline.len() < MAX_TIMELINE {
            incident.timeline.push(TimelineEntry {
                at: step.now,
                what: what.into(),
            });
        }
        step.touch(runbook);
    }
}

/// Open an incident for `runbook` unless one is open already; notify the first escalation level.
pub(crate) fn open(step: &mut Step, m: &mut PolicyMemory, runbook: &'static str, trigger: &str) {
    if m.open_incidents.contains_key(runbook) {
        return;
    }
    let id = format!("{}-{}", step.now.strftime("%Y-%m-%d-%H%M%S"), slug(runbook));
    let incident = OpenIncident {
        id: id.clone(),
        runbook: runbook.to_owned(),
        trigger: trigger.to_owned(),
        started_at: step.now,
        notified_level: 0,
        timeline: vec![TimelineEntry {
            at: step.now,
            what: format!("Anomaly detected: {trigger}"),
        }],
        clear: Default::default(),
    };
    step.changes.push(Change::Incident {
        id,
        runbook,
        what: IncidentChange::Opened,
        level: 0,
        reason: trigger.to_owned(),
    });
    m.open_incidents.insert(runbook.to_owned(), incident);
    step.touch(runbook);
    escalate_one(step, m, runbook);
}

/// Notify every escalation level now due for every open incident.
pub(crate) fn escalate(step: &mut Step, m: &mut PolicyMemory) {
    let runbooks: Vec<&'static str> = [
        CANARY_ROLLBACK,
        CIRCUIT_BREAKER_OPEN,
        CACHE_STAMPEDE,
        REDIS_MEMORY,
    ]
    .into_iter()
    .filter(|r| m.open_incidents.contains_key(*r))
    .collect();
    for runbook in runbooks {
        escalate_one(step, m, runbook);
    }
}

fn escalate_one(step: &mut Step, m: &mut PolicyMemory, runbook: &'static str) {
    let Some(incident) = m.open_incidents.get_mut(runbook) else {
        return;
    };
    let open_for = elapsed(step.now, incident.started_at);
    let mut due: Vec<u8> = step
        .spec
        .notify
        .escalation
        .iter()
        .filter(|l| l.after.as_std() <= open_for && l.level > incident.notified_level)
        .map(|l| l.level)
        .collect();
    if due.is_empty() {
        return;
    }
    due.sort_unstable();
    due.dedup();
    for level in due {
        let kind = if incident.notified_level == 0 {
            NotifyKind::Opened
        } else {
            NotifyKind::Escalated
        };
        incident.notified_level = level;
        let what = match kind {
            NotifyKind::Opened => format!("Level {level} ({}) notified", role(level)),
            _ => format!(
                "Escalated to level {level} ({}): unresolved after {}",
                role(level),
                crate::api::Duration::from_std(std::time::Duration::from_secs(open_for.as_secs()))
            ),
        };
        if incident.timeline.len() < MAX_TIMELINE {
            incident.timeline.push(TimelineEntry {
                at: step.now,
                what: what.clone(),
            });
        }
        step.actions.push(Action::Notify {
            level,
            kind,
            incident_id: incident.id.clone(),
            runbook: runbook.to_owned(),
            trigger: incident.trigger.clone(),
            message: message(incident, level, "INVESTIGATING"),
        });
        if kind == NotifyKind::Escalated {
            step.changes.push(Change::Incident {
                id: incident.id.clone(),
                runbook,
                what: IncidentChange::Escalated,
                level,
                reason: what,
            });
        }
    }
    step.touch(runbook);
}

/// Resolve the open incident of `runbook`: timeline, one Resolved notification, the record.
pub(crate) fn resolve(step: &mut Step, m: &mut PolicyMemory, runbook: &'static str, reason: &str) {
    let Some(mut incident) = m.open_incidents.remove(runbook) else {
        return;
    };
    if incident.timeline.len() < MAX_TIMELINE {
        incident.timeline.push(TimelineEntry {
            at: step.now,
            what: format!("Resolved: {reason}"),
        });
    }
    let summary = summary(&incident, Some(step.now));
    if incident.notified_level > 0 {
        step.actions.push(Action::Notify {
            level: incident.notified_level,
            kind: NotifyKind::Resolved,
            incident_id: incident.id.clone(),
            runbook: runbook.to_owned(),
            trigger: incident.trigger.clone(),
            message: message(&incident, incident.notified_level, "RESOLVED"),
        });
    }
    step.actions.push(Action::RecordIncident {
        incident: summary.clone(),
        reason: format!("{} incident resolved: {reason}", title(runbook)),
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
    runbook: &'static str,
    trouble: Option<bool>,
    trigger: impl FnOnce() -> String,
    may_resolve: bool,
) {
    let interval = step.spec.canary.ramp_interval;
    match m.open_incidents.get_mut(runbook) {
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
        runbook: incident.runbook.clone(),
        trigger: incident.trigger.clone(),
        started_at: incident.started_at,
        resolved_at,
        escalation_level: incident.notified_level,
        timeline: incident.timeline.clone(),
        report: None,
    }
}

/// The runbooks' communication template, filled in.
fn message(incident: &OpenIncident, level: u8, status: &str) -> String {
    let mut text = format!(
        "[INCIDENT] {} - mem0-redis memory tier\nIncident: {} (level {level}: {})\nTrigger: {}\n\nTimeline:\n",
        title(&incident.runbook),
        incident.id,
        role(level),
        incident.trigger,
    );
    for entry in &incident.timeline {
        text.push_str(&format!(
            "- {} - {}\n",
            entry.at.strftime("%H:%M:%S UTC"),
            entry.what
        ));
    }
    text.push_str(&format!("\nStatus: {status}"));
    text
}
