//! `status.recentActions` entries: what was done, why, and how it went.

use jiff::Timestamp;

use crate::api::{ActionKind, ActionOutcome, ActionRecord};

/// Longest detail kept in status; status objects must stay small.
pub const MAX_DETAIL_CHARS: usize = 1024;

/// An action record; the detail is cut to [`MAX_DETAIL_CHARS`]. Callers pass details that are
/// already free of secrets.
pub fn action(
    at: Timestamp,
    action: ActionKind,
    reason: &str,
    outcome: ActionOutcome,
    detail: Option<String>,
) -> ActionRecord {
    ActionRecord {
        at,
        action,
        reason: reason.to_owned(),
        outcome,
        // Details quote remote answers: escaped as well as cut.
        detail: detail.map(|d| crate::remote::text::shown(&d, MAX_DETAIL_CHARS)),
    }
}

/// Cut a text to at most `max` characters, marking the cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_bounded() {
        let r = action(
            Timestamp::UNIX_EPOCH,
            ActionKind::WarmCache,
            "stampede",
            ActionOutcome::Failed,
            Some("x".repeat(5000)),
        );
        assert_eq!(r.outcome, ActionOutcome::Failed);
        assert_eq!(r.detail.unwrap().chars().count(), MAX_DETAIL_CHARS);
    }
}
