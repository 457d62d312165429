//! The summary of a backtest: what the policy would have done over the whole range, in figures.
//!
//! Incidents opened (by runbook, with when each was resolved and the highest level notified),
//! each rollback with the time of each of its phases, config changes (in total, per hour and in
//! the busiest hour), the remediations, warm-ups, audits and restarts that would have run, the
//! time spent in each phase, and for every signal the share of steps it was unknown, why, and
//! when. Everything comes from the replay's own record ([`Outcome`]) and the observations it ran
//! on, so the summary can never tell a different story from the timeline.

use std::collections::BTreeMap;
use std::io::{self, Write};

use jiff::Timestamp;
use serde::Serialize;

use super::output::clock;
use super::{EntryKind, Outcome};
use crate::api::{Observation, Runbook, Signal, Subject};
use crate::policy::{Action, Change, IncidentChange};

/// Spans of unknown kept per signal; the rest are counted.
const MAX_SPANS: usize = 10;
/// Distinct reasons kept per signal; the rest are counted together.
const MAX_REASONS: usize = 16;

/// A moment of the replay.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct At {
    /// Seconds from the start.
    pub t: f64,
    pub time: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentLine {
    pub id: String,
    pub runbook: Runbook,
    pub opened: At,
    pub resolved: Option<At>,
    /// The highest escalation level notified.
    pub level: u8,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackLine {
    pub reason: String,
    /// Each rollback phase entered (1 to 4, or `none` when it ended) and when.
    pub phases: Vec<(String, At)>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigChanges {
    /// Renders that changed the effective config (the first render is not a change).
    pub total: u64,
    pub per_hour: f64,
    /// The most changes within any 60 minutes, and when that hour starts.
    pub busiest_hour: Option<(u64, At)>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionLine {
    pub at: At,
    /// The level remediated, or what triggered a warm-up.
    pub what: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseTime {
    pub phase: String,
    pub seconds: f64,
    pub share: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnknownLine {
    pub signal: Signal,
    pub steps: u64,
    pub share: f64,
    /// Why, most frequent first: (reason, steps).
    pub reasons: Vec<(String, u64)>,
    /// When: (first step unknown, last step unknown), the first few spans.
    pub spans: Vec<(At, At)>,
    /// Spans not listed.
    pub more_spans: u64,
}

/// How long reading and replaying took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timings {
    pub prometheus_seconds: f64,
    pub range_requests: u64,
    pub policy_seconds: f64,
    /// Reading the events table (a backtest from PostgreSQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres_queries: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub steps: u64,
    pub seconds: f64,
    pub incidents_opened: BTreeMap<Runbook, u64>,
    pub incidents: Vec<IncidentLine>,
    pub rollbacks: Vec<RollbackLine>,
    pub config_changes: ConfigChanges,
    pub remediations: Vec<ActionLine>,
    pub warmups: Vec<ActionLine>,
    pub audits: u64,
    pub restarts: u64,
    pub phases: Vec<PhaseTime>,
    pub unknown: Vec<UnknownLine>,
}

/// Counts, step by step, which signals were unknown, why and when.
#[derive(Debug, Default)]
pub struct UnknownTally {
    steps: u64,
    signals: BTreeMap<Signal, SignalTally>,
}

#[derive(Debug, Default)]
struct SignalTally {
    steps: u64,
    reasons: BTreeMap<String, u64>,
    other_reasons: u64,
    spans: Vec<(At, At)>,
    more_spans: u64,
    open: Option<(At, At)>,
}

impl UnknownTally {
    /// Count one step's observation.
    pub fn record(&mut self, obs: &Observation, at: At) {
        self.steps += 1;
        for signal in Signal::ALL {
            let tally = self.signals.entry(*signal).or_default();
            if obs.get(*signal).is_some() {
                tally.close();
                continue;
            }
            tally.steps += 1;
            let reason = obs
                .unknown
                .get(signal.name())
                .map(String::as_str)
                .unwrap_or("unknown");
            if let Some(n) = tally.reasons.get_mut(reason) {
                *n += 1;
            } else if tally.reasons.len() < MAX_REASONS {
                tally.reasons.insert(reason.to_owned(), 1);
            } else {
                tally.other_reasons += 1;
            }
            tally.open = Some(match tally.open {
                Some((first, _)) => (first, at),
                None => (at, at),
            });
        }
    }

    fn lines(mut self) -> Vec<UnknownLine> {
        let steps = self.steps.max(1);
        let mut out = Vec::new();
        for (signal, tally) in &mut self.signals {
            tally.close();
            if tally.steps == 0 {
                continue;
            }
            let mut reasons: Vec<(String, u64)> =
                std::mem::take(&mut tally.reasons).into_iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            if tally.other_reasons > 0 {
                reasons.push(("other reasons".to_owned(), tally.other_reasons));
            }
            out.push(UnknownLine {
                signal: *signal,
                steps: tally.steps,
                share: tally.steps as f64 / steps as f64,
                reasons,
                spans: std::mem::take(&mut tally.spans),
                more_spans: tally.more_spans,
            });
        }
        out
    }
}

impl SignalTally {
    fn close(&mut self) {
        if let Some(span) = self.open.take() {
            if self.spans.len() < MAX_SPANS {
                self.spans.push(span);
            } else {
                self.more_spans += 1;
            }
        }
    }
}

/// Summarize a replay of `step_seconds` steps.
pub fn summarize(outcome: &Outcome, step_seconds: f64, unknown: UnknownTally) -> Summary {
    let mut incidents: Vec<IncidentLine> = Vec::new();
    let mut rollbacks: Vec<RollbackLine> = Vec::new();
    let mut renders: Vec<At> = Vec::new();
    let mut first_render = true;
    let mut remediations = Vec::new();
    let mut warmups = Vec::new();
    let (mut audits, mut restarts) = (0, 0);
    for entry in &outcome.entries {
        let at = At {
            t: entry.t,
            time: entry.at,
        };
        match &entry.what {
            EntryKind::Input(_) => {}
            EntryKind::Change(Change::Incident {
                id,
                runbook,
                what,
                level,
                reason,
            }) => match what {
                IncidentChange::Opened => incidents.push(IncidentLine {
                    id: id.clone(),
                    runbook: *runbook,
                    opened: at,
                    resolved: None,
                    level: *level,
                    reason: reason.clone(),
                }),
                IncidentChange::Escalated | IncidentChange::Resolved => {
                    if let Some(line) = incidents.iter_mut().rev().find(|i| i.id == *id) {
                        line.level = line.level.max(*level);
                        if *what == IncidentChange::Resolved {
                            line.resolved = Some(at);
                        }
                    }
                }
            },
            EntryKind::Change(Change::Transition {
                subject: Subject::Rollback,
                from,
                to,
                reason,
            }) => {
                if from == "none" || rollbacks.is_empty() {
                    rollbacks.push(RollbackLine {
                        reason: reason.clone(),
                        phases: Vec::new(),
                    });
                }
                if let Some(rollback) = rollbacks.last_mut() {
                    rollback.phases.push((to.clone(), at));
                }
            }
            EntryKind::Change(_) => {}
            EntryKind::Action { action, .. } => match action {
                Action::RenderConfig { .. } if !std::mem::take(&mut first_render) => {
                    renders.push(at);
                }
                Action::RemediateRedis { level, reason } => remediations.push(ActionLine {
                    at,
                    what: level.as_str().to_owned(),
                    reason: reason.clone(),
                }),
                Action::WarmCache {
                    trigger, reason, ..
                } => warmups.push(ActionLine {
                    at,
                    what: serde_json::to_value(trigger)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    reason: reason.clone(),
                }),
                Action::AuditRedis { .. } => audits += 1,
                Action::RestartWorkload { .. } => restarts += 1,
                _ => {}
            },
        }
    }
    let mut incidents_opened = BTreeMap::new();
    for i in &incidents {
        *incidents_opened.entry(i.runbook).or_default() += 1;
    }
    let seconds = outcome.steps as f64 * step_seconds;
    let hours = seconds / 3600.0;
    let config_changes = ConfigChanges {
        total: renders.len() as u64,
        per_hour: if hours > 0.0 {
            renders.len() as f64 / hours
        } else {
            0.0
        },
        busiest_hour: busiest_hour(&renders),
    };
    let total_steps = outcome.steps.max(1) as f64;
    let phases = outcome
        .phase_steps
        .iter()
        .map(|(phase, steps)| PhaseTime {
            phase: phase.as_str().to_owned(),
            seconds: *steps as f64 * step_seconds,
            share: *steps as f64 / total_steps,
        })
        .collect();
    Summary {
        steps: outcome.steps,
        seconds,
        incidents_opened,
        incidents,
        rollbacks,
        config_changes,
        remediations,
        warmups,
        audits,
        restarts,
        phases,
        unknown: unknown.lines(),
    }
}

/// The most renders within 60 minutes of one of them.
fn busiest_hour(renders: &[At]) -> Option<(u64, At)> {
    let mut best: Option<(u64, At)> = None;
    let mut end = 0;
    for (i, first) in renders.iter().enumerate() {
        end = end.max(i);
        while end < renders.len() && renders[end].t < first.t + 3600.0 {
            end += 1;
        }
        let count = (end - i) as u64;
        if best.is_none_or(|(n, _)| count > n) {
            best = Some((count, *first));
        }
    }
    best
}

/// A duration for people: `3h 20m`, `45s`.
pub fn span_text(seconds: f64) -> String {
    let s = seconds.round() as u64;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let parts: Vec<String> = [(d, "d"), (h, "h"), (m, "m"), (sec, "s")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    if parts.is_empty() {
        "0s".to_owned()
    } else {
        parts.join(" ")
    }
}

/// How a moment is shown: the time itself, with its offset from the start.
fn when(at: &At) -> String {
    format!("{} ({})", at.time, clock(at.t))
}

/// Write the summary for people.
pub fn write_text(out: &mut impl Write, s: &Summary) -> io::Result<()> {
    writeln!(
        out,
        "\nSummary over {} ({} steps)",
        span_text(s.seconds),
        s.steps
    )?;
    let opened: Vec<String> = s
        .incidents_opened
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    writeln!(
        out,
        "  incidents opened: {}{}",
        s.incidents.len(),
        if opened.is_empty() {
            String::new()
        } else {
            format!(" ({})", opened.join(", "))
        }
    )?;
    for i in &s.incidents {
        let resolved = match &i.resolved {
            Some(r) => format!("resolved {}", when(r)),
            None => "still open at the end".to_owned(),
        };
        writeln!(
            out,
            "    {} {} opened {}, {resolved}, level {}: {}",
            i.runbook,
            i.id,
            when(&i.opened),
            i.level,
            i.reason
        )?;
    }
    writeln!(out, "  rollbacks: {}", s.rollbacks.len())?;
    for r in &s.rollbacks {
        let phases: Vec<String> = r
            .phases
            .iter()
            .map(|(p, at)| format!("{p} at {}", clock(at.t)))
            .collect();
        writeln!(out, "    {}: {}", phases.join(", "), r.reason)?;
    }
    let c = &s.config_changes;
    writeln!(
        out,
        "  config changes: {} ({:.2} per hour{})",
        c.total,
        c.per_hour,
        match &c.busiest_hour {
            Some((n, at)) => format!("; busiest hour from {}: {n}", when(at)),
            None => String::new(),
        }
    )?;
    for (label, lines) in [("remediations", &s.remediations), ("warm-ups", &s.warmups)] {
        writeln!(out, "  {label} that would have run: {}", lines.len())?;
        for line in lines.iter().take(MAX_SPANS) {
            writeln!(
                out,
                "    {} ({}): {}",
                when(&line.at),
                line.what,
                line.reason
            )?;
        }
        if lines.len() > MAX_SPANS {
            writeln!(out, "    … and {} more", lines.len() - MAX_SPANS)?;
        }
    }
    writeln!(
        out,
        "  audits that would have run: {}; workload restarts: {}",
        s.audits, s.restarts
    )?;
    let phases: Vec<String> = s
        .phases
        .iter()
        .map(|p| {
            format!(
                "{} {} ({:.1}%)",
                p.phase,
                span_text(p.seconds),
                100.0 * p.share
            )
        })
        .collect();
    writeln!(out, "  time in each phase: {}", phases.join(", "))?;
    if s.unknown.is_empty() {
        writeln!(out, "  every signal was known at every step")?;
    } else {
        writeln!(out, "  unknown signals (share of the steps):")?;
        // Signals unknown at the same steps for the same reasons share a line.
        let mut groups: Vec<(Vec<Signal>, &UnknownLine)> = Vec::new();
        for u in &s.unknown {
            match groups
                .iter_mut()
                .find(|(_, g)| g.steps == u.steps && g.reasons == u.reasons && g.spans == u.spans)
            {
                Some((signals, _)) => signals.push(u.signal),
                None => groups.push((vec![u.signal], u)),
            }
        }
        for (signals, u) in groups {
            let names: Vec<&str> = signals.iter().map(|s| s.name()).collect();
            let why = u
                .reasons
                .first()
                .map(|(r, _)| r.as_str())
                .unwrap_or("unknown");
            let others = if u.reasons.len() > 1 {
                format!(" (and {} other reasons)", u.reasons.len() - 1)
            } else {
                String::new()
            };
            writeln!(
                out,
                "    {} {:.1}% ({} steps): {why}{others}",
                names.join(", "),
                100.0 * u.share,
                u.steps
            )?;
            let spans: Vec<String> = u
                .spans
                .iter()
                .map(|(a, b)| format!("{}–{}", clock(a.t), clock(b.t)))
                .collect();
            if u.share < 1.0 {
                writeln!(
                    out,
                    "      when: {}{}",
                    spans.join(", "),
                    if u.more_spans > 0 {
                        format!(" and {} more spans", u.more_spans)
                    } else {
                        String::new()
                    }
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: f64) -> At {
        At {
            t,
            time: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_busiest_hour_counts_renders_within_sixty_minutes() {
        let renders: Vec<At> = [0.0, 100.0, 3000.0, 3700.0, 3710.0, 9000.0]
            .iter()
            .map(|t| at(*t))
            .collect();
        let (n, from) = busiest_hour(&renders).unwrap();
        // 0, 100 and 3000 (and 3000, 3700 and 3710): the earliest such hour is shown.
        assert_eq!(n, 3);
        assert_eq!(from.t, 0.0);
        let (n, from) = busiest_hour(&renders[1..]).unwrap();
        assert_eq!((n, from.t), (3, 3000.0));
        assert_eq!(busiest_hour(&[]), None);
    }

    #[test]
    fn unknown_signals_are_counted_with_their_spans_and_reasons() {
        let mut tally = UnknownTally::default();
        for k in 0..6 {
            let mut obs = Observation::default();
            if (2..4).contains(&k) {
                obs.unknown
                    .insert("p50LatencyMs".into(), "no data: x".into());
            } else {
                obs.p50_latency_ms = Some(10.0);
            }
            tally.record(&obs, at(k as f64 * 30.0));
        }
        let lines = tally.lines();
        let p50 = lines
            .iter()
            .find(|l| l.signal == Signal::P50LatencyMs)
            .unwrap();
        assert_eq!(p50.steps, 2);
        assert!((p50.share - 2.0 / 6.0).abs() < 1e-9);
        assert_eq!(p50.reasons, vec![("no data: x".to_owned(), 2)]);
        assert_eq!(p50.spans.len(), 1);
        assert_eq!((p50.spans[0].0.t, p50.spans[0].1.t), (60.0, 90.0));
        // A signal never read is unknown at every step, for want of a reason "unknown".
        let p95 = lines
            .iter()
            .find(|l| l.signal == Signal::P95LatencyMs)
            .unwrap();
        assert_eq!(p95.steps, 6);
    }

    #[test]
    fn spans_read_as_people_write_them() {
        assert_eq!(span_text(0.0), "0s");
        assert_eq!(span_text(90.0), "1m 30s");
        assert_eq!(span_text(7.0 * 86_400.0 + 3600.0), "7d 1h");
    }
}
