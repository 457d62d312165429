//! Remote text made fit for status, Events, logs and terminals: control characters escaped and
//! the length cut, in one place.
//!
//! Anything a peer wrote (an error body, a query's error message, a Redis key, a line of a scrape)
//! may be megabytes long and may carry terminal escape sequences or line breaks that would forge
//! log lines or clear a terminal. [`shown`] is what every such text goes through before it is
//! stored or printed.

use std::fmt::Write as _;

/// The longest reason kept for one signal or source in status.
pub const MAX_REASON_CHARS: usize = 300;
/// The longest excerpt of a remote body quoted in a reason.
pub const MAX_EXCERPT_CHARS: usize = 120;
/// The longest key name printed or kept in status.
pub const MAX_KEY_CHARS: usize = 200;

/// What marks a cut.
const ELLIPSIS: char = '…';

/// `text` with every control character escaped (`\n`, `\t`, `\u{1b}`, …) and cut to at most
/// `max_chars` characters (the cut marked with `…`). Only the first `max_chars` characters are
/// looked at, so a huge text costs no more than a short one.
pub fn shown(text: &str, max_chars: usize) -> String {
    bounded(text.chars().map(escaped_char), max_chars)
}

/// `text` on one line for a terminal or a log: control characters escaped, nothing cut.
pub fn one_line(text: &str) -> String {
    shown(text, usize::MAX)
}

/// A reason for status (a signal's `unknown` entry, a source's health): [`shown`] at
/// [`MAX_REASON_CHARS`].
pub fn reason(text: &str) -> String {
    shown(text, MAX_REASON_CHARS)
}

/// The start of a remote body, for an error message: lossy UTF-8, trimmed, [`shown`] at
/// [`MAX_EXCERPT_CHARS`]. Only the first bytes are decoded.
pub fn excerpt(body: &[u8]) -> String {
    // Four bytes per character at most: this many bytes hold every character shown.
    let head = &body[..body.len().min(MAX_EXCERPT_CHARS * 4 + 4)];
    shown(String::from_utf8_lossy(head).trim(), MAX_EXCERPT_CHARS)
}

/// A key (or any byte string from Redis) for people: printable UTF-8 as it is, every control
/// character and every byte that is not UTF-8 escaped (`\u{1b}`, `\n`, `\xff`, and `\\` for a
/// backslash, so two different keys never print the same unless cut), cut at [`MAX_KEY_CHARS`].
pub fn key(bytes: &[u8]) -> String {
    let pieces = bytes.utf8_chunks().flat_map(|chunk| {
        let valid = chunk.valid().chars().map(|c| {
            if c == '\\' {
                "\\\\".to_owned()
            } else {
                escaped_char(c)
            }
        });
        let invalid = chunk.invalid().iter().map(|b| format!("\\x{b:02x}"));
        valid.chain(invalid)
    });
    bounded(pieces, MAX_KEY_CHARS)
}

/// Join `pieces` (each one escaped character) into at most `max_chars` characters: a piece is
/// never split, and when some are left out the text ends with `…`.
fn bounded(pieces: impl Iterator<Item = String>, max_chars: usize) -> String {
    let mut out = String::new();
    let mut written = 0usize;
    let mut pieces = pieces.peekable();
    while let Some(piece) = pieces.next() {
        let width = piece.chars().count();
        let room = if pieces.peek().is_none() {
            max_chars - written
        } else {
            // Keep one place for the cut mark.
            max_chars.saturating_sub(1).saturating_sub(written)
        };
        if width > room {
            if written < max_chars {
                out.push(ELLIPSIS);
            }
            return out;
        }
        out.push_str(&piece);
        written += width;
    }
    out
}

fn escaped_char(c: char) -> String {
    match c {
        '\n' => "\\n".to_owned(),
        '\r' => "\\r".to_owned(),
        '\t' => "\\t".to_owned(),
        c if c.is_control() || is_invisible_format(c) => {
            let mut s = String::new();
            let _ = write!(s, "\\u{{{:x}}}", c as u32);
            s
        }
        c => c.to_string(),
    }
}

/// Characters that reorder or hide text on a terminal (bidirectional overrides, zero-width).
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(shown("a\nb\tc\u{1b}[2J", 100), "a\\nb\\tc\\u{1b}[2J");
        assert_eq!(shown("rtl\u{202e}txt", 100), "rtl\\u{202e}txt");
        assert_eq!(shown("plain é ü", 100), "plain é ü");
    }

    #[test]
    fn long_text_is_cut_and_marked() {
        let long = "x".repeat(50_000_000);
        let out = shown(&long, 10);
        assert_eq!(out, format!("{}…", "x".repeat(9)));
        assert_eq!(shown("exactly10!", 10), "exactly10!");
        assert_eq!(shown("", 10), "");
        assert_eq!(reason(&long).chars().count(), MAX_REASON_CHARS);
    }

    #[test]
    fn an_escape_is_never_cut_in_half() {
        let out = shown("abcdefgh\u{1b}", 10);
        assert_eq!(out, "abcdefgh…");
    }

    #[test]
    fn keys_escape_control_bytes_and_invalid_utf8() {
        assert_eq!(key(b"session:1"), "session:1");
        assert_eq!(key(b"a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(key(b"line\nbreak"), "line\\nbreak");
        assert_eq!(key(b"bin\xff\xfe"), "bin\\xff\\xfe");
        assert_eq!(key(b"back\\slash"), "back\\\\slash");
        let long = key(&[b'k'; 10_000]);
        assert_eq!(long.chars().count(), MAX_KEY_CHARS);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn excerpts_read_only_the_head() {
        let mut body = b"  <html>".to_vec();
        body.extend(std::iter::repeat_n(b'y', 10_000_000));
        let out = excerpt(&body);
        assert!(out.starts_with("<html>y"), "{out}");
        assert_eq!(out.chars().count(), MAX_EXCERPT_CHARS);
    }
}
