//! `status.recentActions` entries: what was done, why, and how it went.

use jiff::Timestamp;

use crate::api::ActionRecord;

/// How an action went, as `ActionRecord.outcome` spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    Skipped,
    DryRun,
    /// Claimed and begun; replaced by how it went once that is recorded (see the controller's
    /// claim before acting).
    Started,
}

impl Outcome {
    /// The outcomes an action ends with (`Started` is only ever a claim's).
    pub const ALL: [Outcome; 4] = [
        Outcome::Ok,
        Outcome::Failed,
        Outcome::Skipped,
        Outcome::DryRun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::DryRun => "dry-run",
            Outcome::Started => "started",
        }
    }
}

/// Longest detail kept in status; status objects must stay small.
pub const MAX_DETAIL_CHARS: usize = 1024;

/// An action record; the detail is cut to [`MAX_DETAIL_CHARS`]. Callers pass details that are
/// already free of secrets.
pub fn action(
    at: Timestamp,
    action: &str,
    reason: &str,
    outcome: Outcome,
    detail: Option<String>,
) -> ActionRecord {
    ActionRecord {
        at,
        action: action.to_owned(),
        reason: reason.to_owned(),
        outcome: outcome.as_str().to_owned(),
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
            "warm-cache",
            "stampede",
            Outcome::Failed,
            Some("x".repeat(5000)),
        );
        assert_eq!(r.outcome, "failed");
        assert_eq!(r.detail.unwrap().chars().count(), MAX_DETAIL_CHARS);
    }
}
