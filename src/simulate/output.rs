//! Printing a simulation: a readable timeline, or JSON lines.
//!
//! JSON: one object per line, with `t` (seconds since the start), `time`, `phase` (after the
//! step), `type` (transition, action, alert or incident) and the details: for a transition
//! `subject`, `from`, `to`, `reason`; for an alert `subject`, `code`, `severity`, `message`; for an
//! incident `id`, `runbook`, `change` (opened, escalated, resolved), `level`, `reason`; for an
//! action `action` (render-config, restart-workload, warm-cache, remediate-redis, audit-redis,
//! notify, record-incident) with its fields, `dryRun`, and for render-config the full effective
//! `config` and the `changed` keys. Scenario inputs are shown only in the text output.

use std::io::{self, Write};

use serde_json::{Map, Value, json};

use super::{Entry, EntryKind, Outcome, Scenario};
use crate::api::MemoryTier;
use crate::policy::{Action, Change};

/// `+HH:MM:SS` (with milliseconds when the time is not whole seconds).
pub fn clock(t: f64) -> String {
    let millis = (t * 1000.0).round() as u64;
    let (h, m, s, ms) = (
        millis / 3_600_000,
        millis / 60_000 % 60,
        millis / 1000 % 60,
        millis % 1000,
    );
    if ms == 0 {
        format!("+{h:02}:{m:02}:{s:02}")
    } else {
        format!("+{h:02}:{m:02}:{s:02}.{ms:03}")
    }
}

/// The JSON object of one entry; `None` for scenario inputs.
pub fn json_entry(entry: &Entry) -> Option<Value> {
    let mut obj = Map::new();
    obj.insert("t".into(), json!(entry.t));
    obj.insert("time".into(), json!(entry.at.to_string()));
    obj.insert("phase".into(), json!(entry.phase.as_str()));
    match &entry.what {
        EntryKind::Input(_) => return None,
        EntryKind::Change(change) => {
            obj.insert("type".into(), json!(change.kind()));
            match change {
                Change::Transition {
                    subject,
                    from,
                    to,
                    reason,
                } => {
                    obj.insert("subject".into(), json!(subject));
                    obj.insert("from".into(), json!(from));
                    obj.insert("to".into(), json!(to));
                    obj.insert("reason".into(), json!(reason));
                }
                Change::Alert {
                    subject,
                    code,
                    warning,
                    message,
                } => {
                    obj.insert("subject".into(), json!(subject));
                    obj.insert("code".into(), json!(code));
                    obj.insert(
                        "severity".into(),
                        json!(if *warning { "warning" } else { "info" }),
                    );
                    obj.insert("message".into(), json!(message));
                }
                Change::Incident {
                    id,
                    runbook,
                    what,
                    level,
                    reason,
                } => {
                    obj.insert("id".into(), json!(id));
                    obj.insert("runbook".into(), json!(runbook));
                    obj.insert("change".into(), json!(what.as_str()));
                    obj.insert("level".into(), json!(level));
                    obj.insert("reason".into(), json!(reason));
                }
            }
        }
        EntryKind::Action {
            action,
            dry_run,
            changed,
        } => {
            obj.insert("type".into(), json!("action"));
            if let Ok(Value::Object(fields)) = serde_json::to_value(action) {
                obj.extend(fields);
            }
            obj.insert("dryRun".into(), json!(dry_run));
            if matches!(action, Action::RenderConfig { .. }) {
                let changes: Map<String, Value> = changed
                    .iter()
                    .map(|(k, from, to)| (k.clone(), json!({"from": from, "to": to})))
                    .collect();
                obj.insert("changed".into(), Value::Object(changes));
            }
        }
    }
    Some(Value::Object(obj))
}

/// Write JSON lines.
pub fn write_json(out: &mut impl Write, outcome: &Outcome) -> io::Result<()> {
    for entry in &outcome.entries {
        if let Some(value) = json_entry(entry) {
            serde_json::to_writer(&mut *out, &value)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

fn action_text(action: &Action, changed: &[(String, Option<String>, Option<String>)]) -> String {
    match action {
        Action::RenderConfig { reason, hash, .. } => {
            let keys = if changed.is_empty() {
                format!("config {hash}")
            } else {
                changed
                    .iter()
                    .map(|(k, from, to)| {
                        format!(
                            "{k} {} → {}",
                            from.as_deref().unwrap_or("(none)"),
                            to.as_deref().unwrap_or("(none)")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!("render-config {keys}: {reason}")
        }
        Action::RestartWorkload { reason, .. } => format!("restart-workload: {reason}"),
        Action::WarmCache {
            trigger,
            reason,
            clinic_ids,
        } => {
            if clinic_ids.is_empty() {
                format!("warm-cache ({trigger:?}): {reason}")
            } else {
                let ids: Vec<String> = clinic_ids.iter().map(i64::to_string).collect();
                format!(
                    "warm-cache ({trigger:?}) clinics {} first: {reason}",
                    ids.join(",")
                )
            }
        }
        Action::RemediateRedis { reason, .. } => format!("remediate-redis: {reason}"),
        Action::AuditRedis { reason } => format!("audit-redis: {reason}"),
        Action::SetMaxMemory { bytes, reason, .. } => {
            format!("set-maxmemory {bytes}: {reason}")
        }
        Action::Notify(n) => {
            format!(
                "notify level {} ({:?}) about {}",
                n.level, n.kind, n.incident_id
            )
        }
        Action::RecordIncident { incident, reason } => format!(
            "record-incident {} ({} timeline entries): {reason}",
            incident.id,
            incident.timeline.len()
        ),
        Action::Event {
            reason, message, ..
        } => format!("event {reason}: {message}"),
    }
}

/// How the timeline shows when something happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// `+HH:MM:SS` from the start: a scenario's virtual clock.
    Relative,
    /// The time itself: a backtest of history.
    Absolute,
}

fn shown(clock_kind: Clock, entry_t: f64, at: jiff::Timestamp) -> String {
    match clock_kind {
        Clock::Relative => clock(entry_t),
        Clock::Absolute => at.to_string(),
    }
}

/// Write the readable timeline of a scenario run: its header, the timeline and where it ended.
pub fn write_text(
    out: &mut impl Write,
    tier: &MemoryTier,
    scenario: &Scenario,
    outcome: &Outcome,
) -> io::Result<()> {
    let name = tier.metadata.name.as_deref().unwrap_or("(unnamed)");
    writeln!(out, "MemoryTier {name} (mode {:?})", tier.spec.mode)?;
    if let Some(description) = &scenario.description {
        writeln!(out, "Scenario: {}", description.trim())?;
    }
    writeln!(
        out,
        "From {} for {}, one step every {} ({} steps)\n",
        scenario.start, scenario.duration, scenario.tick, outcome.steps
    )?;
    write_timeline(out, outcome, Clock::Relative)?;
    write_end(out, outcome, &clock(outcome.seconds))
}

/// One line per entry: when, the phase after the step, the kind and what happened.
pub fn write_timeline(
    out: &mut impl Write,
    outcome: &Outcome,
    clock_kind: Clock,
) -> io::Result<()> {
    for entry in &outcome.entries {
        write_entry(out, entry, clock_kind, "")?;
    }
    Ok(())
}

/// One entry's line, `marker` (e.g. which policy took it) after the time.
pub fn write_entry(
    out: &mut impl Write,
    entry: &Entry,
    clock_kind: Clock,
    marker: &str,
) -> io::Result<()> {
    let (kind, text) = match &entry.what {
        EntryKind::Input(text) => ("input", text.clone()),
        EntryKind::Change(change) => (change.kind(), change.describe()),
        EntryKind::Action {
            action,
            dry_run,
            changed,
        } => (
            if *dry_run { "dry-run" } else { "action" },
            action_text(action, changed),
        ),
    };
    let when = shown(clock_kind, entry.t, entry.at);
    let width = match clock_kind {
        Clock::Relative => 13,
        Clock::Absolute => 24,
    };
    writeln!(
        out,
        "{when:<width$} {marker}{:<12} {kind:<10} {text}",
        entry.phase.as_str(),
    )
}

/// Where the run ended (`end` says when): the phase, the effective config's differences from the
/// spec, the mitigations in force and the incidents still open.
pub fn write_end(out: &mut impl Write, outcome: &Outcome, end: &str) -> io::Result<()> {
    let last = &outcome.last;
    writeln!(out, "\nEnd {end}: phase {}", last.phase)?;
    if last.effective.overridden_by.is_empty() {
        writeln!(out, "Effective config equals the spec's baseline.")?;
    } else {
        writeln!(out, "Effective config differs from the spec:")?;
        for (key, mitigation) in &last.effective.overridden_by {
            let value = last
                .effective
                .config
                .get(key)
                .map(String::as_str)
                .unwrap_or("");
            writeln!(out, "  {key}={value} ({mitigation})")?;
        }
    }
    for m in &last.mitigations {
        writeln!(
            out,
            "Mitigation {} since {}: ends when {}",
            m.name, m.since, m.until
        )?;
    }
    for incident in &last.memory.open_incidents {
        writeln!(
            out,
            "Incident {} still open (level {} notified)",
            incident.id, incident.notified_level
        )?;
    }
    Ok(())
}
