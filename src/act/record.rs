//! `status.recentActions` entries: what was done, why, and how it went.

use jiff::Timestamp;

use crate::api::{ActionKind, ActionOutcome, ActionRecord};

/// Longest detail kept in status; status objects must stay small.
pub const MAX_DETAIL_CHARS: usize = 1024;

/// An action record; the detail is an excerpt of at most [`MAX_DETAIL_CHARS`] (it may quote what
/// a tenant's server or Redis answered). Callers pass details that are already free of secrets.
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
        detail: detail.map(|d| excerpt(&d, MAX_DETAIL_CHARS)),
    }
}

/// What status keeps of a text that may come from elsewhere: control characters escaped (no
/// terminal escapes or line breaks reach whoever reads status), then cut to `max` characters.
pub fn excerpt(text: &str, max: usize) -> String {
    let mut escaped = String::with_capacity(text.len().min(4 * max));
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
        if escaped.len() > 4 * max {
            // Past what is kept: the rest is cut anyway.
            break;
        }
    }
    cut(&escaped, max)
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

    #[test]
    fn excerpts_escape_control_characters() {
        let e = excerpt("\u{1b}[2Jred\r\nnext", 100);
        assert_eq!(e, "\\u{1b}[2Jred\\r\\nnext");
        assert!(!e.chars().any(char::is_control));
        assert_eq!(excerpt(&"\n".repeat(100), 10).chars().count(), 10);
    }
}
