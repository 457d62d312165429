//! Where two replays' decisions differ (`--compare OTHER_MANIFEST`, and the drills' replay
//! fidelity check).
//!
//! A decision is known by its [`decision_key`]: what changed or what is done, without the
//! measured figures in its reason (the same rollback reads "P50 latency 1180 ms above 800 ms"
//! under one policy and "… above 1000 ms" under another). Two replays agree at a step when the
//! same keys occur there; every other entry is a difference, listed in time order.

use super::{Entry, EntryKind, Outcome};
use crate::policy::{Action, Change};

/// What identifies a decision: a transition by its subject and states, an alert by its code and
/// subject, an incident change by its runbook, an action by its kind and target (a render by the
/// config's hash). The first word is the reason of the Kubernetes Event that announces it (none
/// for a notification or an incident record, which their incident's change announces).
pub fn decision_key(entry: &Entry) -> Option<String> {
    Some(match &entry.what {
        EntryKind::Input(_) => return None,
        EntryKind::Change(change) => {
            let reason = match change.event() {
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
