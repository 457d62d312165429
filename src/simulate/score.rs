//! Scoring a backtest against the incidents that really happened (`--incidents FILE`).
//!
//! ```yaml
//! incidents:
//!   - kind: CanaryRollback          # the runbook: CanaryRollback, CircuitBreakerOpen,
//!     start: 2026-11-20T14:05:00Z   #   CacheStampede or RedisMemory
//!     end: 2026-11-20T15:10:00Z
//!     name: release 4.12 slowed the canary   # optional, shown in the score
//! ```
//!
//! An incident the replay opens *matches* a known incident of the same runbook when it opens
//! between that incident's start and end. A known incident with a match is detected (the first
//! match counts: the delay to detection is from the known start to its opening); one without is
//! missed. An opened incident that matches no known incident is a false alarm. The delay to the
//! first action is from the known start to the first action that changes something (a render, a
//! warm-up, a Redis remediation or audit, a restart; notifications do not count) at or after the
//! detection, before the replayed incident resolved.

use std::path::Path;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::summary::At;
use super::{EntryKind, Outcome, SimulateError};
use crate::api::Runbook;
use crate::policy::{Action, Change, IncidentChange};

/// An incident that happened.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KnownIncident {
    pub kind: Runbook,
    pub start: Timestamp,
    pub end: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncidentsFile {
    incidents: Vec<KnownIncident>,
}

/// Read and check a known-incidents file.
pub fn load(path: &Path) -> Result<Vec<KnownIncident>, SimulateError> {
    let problem = |field: String, message: String| SimulateError::Scenario {
        path: path.to_owned(),
        field,
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| SimulateError::Read {
        path: path.to_owned(),
        source,
    })?;
    let value: serde_json::Value = serde_saphyr::from_str(&text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!("line {}, column {}", l.line(), l.column()))
            .unwrap_or_else(|| "<yaml>".into());
        let message = e.to_string();
        problem(
            at,
            format!(
                "invalid YAML: {}",
                message.lines().next().unwrap_or("cannot parse")
            ),
        )
    })?;
    let file: IncidentsFile = serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        problem(
            if field == "." {
                "<document>".into()
            } else {
                field
            },
            e.into_inner().to_string(),
        )
    })?;
    for (i, incident) in file.incidents.iter().enumerate() {
        if incident.end <= incident.start {
            return Err(problem(
                format!("incidents[{i}].end"),
                format!(
                    "{} is not after the start ({})",
                    incident.end, incident.start
                ),
            ));
        }
    }
    Ok(file.incidents)
}

/// How one known incident fared.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Detection {
    pub known: KnownIncident,
    /// The replayed incident that detected it.
    pub detected_by: Option<String>,
    pub detected_after_seconds: Option<f64>,
    pub first_action_after_seconds: Option<f64>,
    pub first_action: Option<String>,
}

/// The score of one runbook.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunbookScore {
    pub runbook: Runbook,
    pub known: u64,
    pub detected: u64,
    pub missed: u64,
    pub false_alarms: u64,
    pub detections: Vec<Detection>,
    /// The incidents opened that match no known one, and when.
    pub false_alarm_incidents: Vec<(String, At)>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Score {
    pub runbooks: Vec<RunbookScore>,
    /// Known incidents entirely outside the replayed range: not scored.
    pub outside: Vec<KnownIncident>,
}

struct Opened {
    id: String,
    runbook: Runbook,
    at: At,
    resolved: Option<f64>,
    matched: bool,
}

/// Score the replay against the known incidents, for the range `start..=end`.
pub fn score(
    known: &[KnownIncident],
    outcome: &Outcome,
    start: Timestamp,
    end: Timestamp,
) -> Score {
    let mut opened: Vec<Opened> = Vec::new();
    // (t, what) of every action that changes something.
    let mut acts: Vec<(f64, String)> = Vec::new();
    for entry in &outcome.entries {
        let at = At {
            t: entry.t,
            time: entry.at,
        };
        match &entry.what {
            EntryKind::Change(Change::Incident {
                id, runbook, what, ..
            }) => match what {
                IncidentChange::Opened => opened.push(Opened {
                    id: id.clone(),
                    runbook: *runbook,
                    at,
                    resolved: None,
                    matched: false,
                }),
                IncidentChange::Resolved => {
                    if let Some(o) = opened.iter_mut().rev().find(|o| o.id == *id) {
                        o.resolved = Some(entry.t);
                    }
                }
                IncidentChange::Escalated => {}
            },
            EntryKind::Action { action, .. } if changes_something(action) => {
                acts.push((entry.t, action.kind().as_str().to_owned()));
            }
            _ => {}
        }
    }
    let (inside, outside): (Vec<&KnownIncident>, Vec<&KnownIncident>) =
        known.iter().partition(|k| k.end >= start && k.start <= end);
    let mut runbooks = Vec::new();
    for runbook in Runbook::ALL {
        let mut detections = Vec::new();
        for k in inside.iter().filter(|k| k.kind == *runbook) {
            let mut first: Option<&Opened> = None;
            for o in opened.iter_mut().filter(|o| o.runbook == *runbook) {
                if o.at.time >= k.start && o.at.time <= k.end {
                    o.matched = true;
                    if first.is_none() {
                        first = Some(o);
                    }
                }
            }
            let known_t = k.start.duration_since(start).as_secs_f64();
            let since_start = |t: f64| t - known_t;
            let detection = match first {
                None => Detection {
                    known: (*k).clone(),
                    detected_by: None,
                    detected_after_seconds: None,
                    first_action_after_seconds: None,
                    first_action: None,
                },
                Some(o) => {
                    let until = o.resolved.unwrap_or(f64::INFINITY);
                    let action = acts.iter().find(|(t, _)| *t >= o.at.t && *t <= until);
                    Detection {
                        known: (*k).clone(),
                        detected_by: Some(o.id.clone()),
                        detected_after_seconds: Some(since_start(o.at.t)),
                        first_action_after_seconds: action.map(|(t, _)| since_start(*t)),
                        first_action: action.map(|(_, what)| what.clone()),
                    }
                }
            };
            detections.push(detection);
        }
        let false_alarm_incidents: Vec<(String, At)> = opened
            .iter()
            .filter(|o| o.runbook == *runbook && !o.matched)
            .map(|o| (o.id.clone(), o.at))
            .collect();
        let detected = detections
            .iter()
            .filter(|d| d.detected_by.is_some())
            .count() as u64;
        runbooks.push(RunbookScore {
            runbook: *runbook,
            known: detections.len() as u64,
            detected,
            missed: detections.len() as u64 - detected,
            false_alarms: false_alarm_incidents.len() as u64,
            detections,
            false_alarm_incidents,
        });
    }
    Score {
        runbooks,
        outside: outside.into_iter().cloned().collect(),
    }
}

/// Actions that change the system: not notifications, reports or Events.
fn changes_something(action: &Action) -> bool {
    matches!(
        action,
        Action::RenderConfig { .. }
            | Action::WarmCache { .. }
            | Action::RemediateRedis { .. }
            | Action::AuditRedis { .. }
            | Action::SetMaxMemory { .. }
            | Action::RestartWorkload { .. }
    )
}

/// Write the score for people.
pub fn write_text(out: &mut impl std::io::Write, score: &Score) -> std::io::Result<()> {
    use super::summary::span_text;
    writeln!(out, "\nScore against the known incidents")?;
    for r in &score.runbooks {
        if r.known == 0 && r.false_alarms == 0 {
            continue;
        }
        writeln!(
            out,
            "  {}: {} known, {} detected, {} missed, {} false alarms",
            r.runbook, r.known, r.detected, r.missed, r.false_alarms
        )?;
        for d in &r.detections {
            let name = d
                .known
                .name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            match (&d.detected_by, d.detected_after_seconds) {
                (Some(id), Some(after)) => {
                    let action = match (d.first_action_after_seconds, &d.first_action) {
                        (Some(a), Some(what)) => {
                            format!("first action ({what}) after {}", span_text(a))
                        }
                        _ => "no action taken".to_owned(),
                    };
                    writeln!(
                        out,
                        "    {}{name}: detected after {} by {id}; {action}",
                        d.known.start,
                        span_text(after)
                    )?;
                }
                _ => writeln!(out, "    {}{name}: missed", d.known.start)?,
            }
        }
        for (id, at) in &r.false_alarm_incidents {
            writeln!(out, "    false alarm: {id} opened at {}", at.time)?;
        }
    }
    if score
        .runbooks
        .iter()
        .all(|r| r.known == 0 && r.false_alarms == 0)
    {
        writeln!(
            out,
            "  no known incident in the range and no incident opened"
        )?;
    }
    for k in &score.outside {
        writeln!(
            out,
            "  not scored, outside the range: {} {}–{}",
            k.kind, k.start, k.end
        )?;
    }
    Ok(())
}
