//! Where two replays' decisions differ (`--compare OTHER_MANIFEST`, and the drills' replay
//! fidelity check).
//!
//! A decision is known by its [`decision_key`]: what changed or what is done, without the
//! measured figures in its reason (the same rollback reads "P50 latency 1180 ms above 800 ms"
//! under one policy and "… above 1000 ms" under another). Two replays agree at a step when the
//! same keys occur there; every other entry is a difference, listed in time order.

use super::{Entry, EntryKind, Outcome};
use crate::api::{Reason, Runbook, Subject};
use crate::policy::{Action, Change, action_event};

/// What identifies a decision: a transition by its subject and states, an alert by its code and
/// subject, an incident change by its runbook, an action by its kind and target (a render by the
/// config's hash). The first word is the reason of the Kubernetes Event that announces it (none
/// for a notification or an incident record, which their incident's change announces).
pub fn decision_key(entry: &Entry) -> Option<String> {
    Some(match &entry.what {
        EntryKind::Input(_) => return None,
        EntryKind::Change(change) => {
            let reason = match change.event()? {
                Action::Event { reason, .. } => reason,
                _ => return None,
            };
            match change {
                Change::Transition {
                    subject, from, to, ..
                } => format!("{reason} {subject}: {from} → {to}"),
                Change::Alert { subject, .. } => format!("{reason} {subject}"),
                Change::Incident { runbook, .. } => format!("{reason} {runbook}"),
            }
        }
        EntryKind::Action { action, .. } => {
            let kind = action.kind();
            match (kind.decision_reason(), action) {
                (Some(reason), Action::RenderConfig { hash, .. }) => format!("{reason} {hash}"),
                (Some(reason), _) => reason.to_string(),
                (None, Action::Notify(n)) => format!("{kind} level {} {:?}", n.level, n.kind),
                (None, Action::RecordIncident { incident, .. }) => {
                    format!("{kind} {}", incident.runbook)
                }
                (None, _) => kind.to_string(),
            }
        }
    })
}

/// The Kubernetes Event (reason and note) that announces an entry's decision, as the controller
/// publishes it; none for inputs, notifications and incident records.
pub fn announced(entry: &Entry) -> Option<(Reason, String)> {
    let event = match &entry.what {
        EntryKind::Input(_) => return None,
        EntryKind::Change(change) => change.event()?,
        EntryKind::Action {
            action, dry_run, ..
        } => action_event(action, *dry_run)?,
    };
    match event {
        Action::Event {
            reason, message, ..
        } => Some((reason, message)),
        _ => None,
    }
}

/// The [`decision_key`] of a decision read back from the Event that announced it: what the
/// controller's Events say it decided, comparable with what a replay decided.
pub fn event_key(reason: Reason, note: &str) -> Option<String> {
    let note = note.strip_prefix("DryRun: ").unwrap_or(note);
    // A transition: "{subject}: {from} → {to}: {why}".
    let transition = note.split_once(": ").and_then(|(subject, rest)| {
        let subject = Subject::parse(subject).filter(|s| s.event_reason() == reason)?;
        let (from, rest) = rest.split_once(" → ")?;
        let to = rest.split_once(": ").map_or(rest, |(to, _)| to);
        (!from.contains(": ")).then(|| format!("{reason} {subject}: {from} → {to}"))
    });
    if let Some(key) = transition {
        return Some(key);
    }
    Some(match reason {
        Reason::IncidentOpened | Reason::IncidentEscalated | Reason::IncidentResolved => {
            let runbook = Runbook::parse(note.split_whitespace().next()?)?;
            format!("{reason} {runbook}")
        }
        Reason::ConfigRendered => {
            let hash = note.split_once("(hash ")?.1.split_once(')')?.0;
            format!("{reason} {hash}")
        }
        Reason::WorkloadRestart
        | Reason::CacheWarming
        | Reason::RedisRemediation
        | Reason::RedisAudit => reason.to_string(),
        // An alert: "{subject}: {message}".
        _ => format!("{reason} {}", note.split_once(": ")?.0),
    })
}

/// Which replay an entry belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::A => "a",
            Side::B => "b",
        }
    }
}

/// A decision one replay took at a step and the other did not.
#[derive(Clone, Debug, PartialEq)]
pub struct Difference<'a> {
    pub side: Side,
    pub entry: &'a Entry,
}

/// Every decision that is not taken by both replays at the same step, in time order (at one
/// step, A's before B's).
pub fn differences<'a>(a: &'a Outcome, b: &'a Outcome) -> Vec<Difference<'a>> {
    let decisions = |o: &'a Outcome| -> Vec<(&'a Entry, String)> {
        o.entries
            .iter()
            .filter_map(|e| decision_key(e).map(|k| (e, k)))
            .collect()
    };
    let (a, b) = (decisions(a), decisions(b));
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let t = match (a.get(i), b.get(j)) {
            (Some((x, _)), Some((y, _))) => x.t.min(y.t),
            (Some((x, _)), None) => x.t,
            (None, Some((y, _))) => y.t,
            (None, None) => break,
        };
        let i_end = i + a[i..].iter().take_while(|(e, _)| e.t == t).count();
        let j_end = j + b[j..].iter().take_while(|(e, _)| e.t == t).count();
        let mut b_used = vec![false; j_end - j];
        for (entry, key) in &a[i..i_end] {
            match (j..j_end).find(|&n| !b_used[n - j] && b[n].1 == *key) {
                Some(n) => b_used[n - j] = true,
                None => out.push(Difference {
                    side: Side::A,
                    entry,
                }),
            }
        }
        for (n, (entry, _)) in b[j..j_end].iter().enumerate() {
            if !b_used[n] {
                out.push(Difference {
                    side: Side::B,
                    entry,
                });
            }
        }
        i = i_end;
        j = j_end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::{parse_manifest, run, scenario};

    /// Every decision of the shipped scenarios, read back from the Event that announces it,
    /// gives the same key as the decision itself.
    #[test]
    fn the_events_of_a_replay_give_its_decision_keys() {
        let tier = parse_manifest(
            std::path::Path::new("memorytier.yaml"),
            include_str!("../../examples/memorytier.yaml"),
        )
        .unwrap();
        let mut announced_count = 0;
        for text in [
            include_str!("../../examples/scenarios/canary-regression.yaml"),
            include_str!("../../examples/scenarios/redis-oom.yaml"),
            include_str!("../../examples/scenarios/cache-stampede.yaml"),
            include_str!("../../examples/scenarios/circuit-breaker-outage.yaml"),
            include_str!("../../examples/scenarios/cold-start.yaml"),
            include_str!("../../examples/scenarios/flapping.yaml"),
        ] {
            let outcome = run(&tier, &scenario::parse(text).unwrap()).unwrap();
            for entry in &outcome.entries {
                let Some((reason, note)) = announced(entry) else {
                    continue;
                };
                announced_count += 1;
                assert_eq!(
                    event_key(reason, &note),
                    decision_key(entry),
                    "{reason}: {note}"
                );
                assert_eq!(
                    event_key(reason, &format!("DryRun: {note}")),
                    decision_key(entry)
                );
            }
        }
        assert!(announced_count > 50, "{announced_count}");
    }

    #[test]
    fn a_difference_is_a_decision_taken_by_one_replay_only() {
        let tier = parse_manifest(
            std::path::Path::new("memorytier.yaml"),
            include_str!("../../examples/memorytier.yaml"),
        )
        .unwrap();
        let scenario = scenario::parse(include_str!(
            "../../examples/scenarios/canary-regression.yaml"
        ))
        .unwrap();
        let a = run(&tier, &scenario).unwrap();
        assert_eq!(differences(&a, &a), vec![]);
        let mut stricter = tier.clone();
        stricter.spec.rollback.p50_latency_for = crate::api::Duration::from_secs(5 * 60);
        let b = run(&stricter, &scenario).unwrap();
        let diffs = differences(&a, &b);
        // B rolls back 5 minutes earlier: every step of its rollback differs in time.
        let first_b = diffs.iter().find(|d| d.side == Side::B).unwrap();
        let first_a = diffs.iter().find(|d| d.side == Side::A).unwrap();
        assert_eq!(first_b.entry.t + 300.0, first_a.entry.t);
        assert_eq!(decision_key(first_a.entry), decision_key(first_b.entry));
    }
}
