//! Redis's glob syntax (the one SCAN MATCH uses), matched on the client.
//!
//! Deciding which generation is the current one has to be done on the client, with exactly the
//! semantics Redis applies to MATCH: `*` any run of bytes, `?` one byte, `[abc]`, `[^abc]`,
//! `[a-z]` classes, and `\x` for a literal `x`. Braces have no meaning (unlike shell globs).

/// One element of a compiled pattern; each but `Star` matches exactly one byte.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Star,
    Any,
    Literal(u8),
    Class {
        negated: bool,
        items: Vec<ClassItem>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum ClassItem {
    Byte(u8),
    Range(u8, u8),
}

/// A compiled Redis glob pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    source: String,
    tokens: Vec<Token>,
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        let p = pattern.as_bytes();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < p.len() {
            match p[i] {
                b'*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                    i += 1;
                }
                b'?' => {
                    tokens.push(Token::Any);
                    i += 1;
                }
                b'\\' if i + 1 < p.len() => {
                    tokens.push(Token::Literal(p[i + 1]));
                    i += 2;
                }
                b'[' => {
                    i += 1;
                    let negated = p.get(i) == Some(&b'^');
                    if negated {
                        i += 1;
                    }
                    let mut items = Vec::new();
                    // An unterminated class runs to the end of the pattern, as in Redis.
                    while i < p.len() {
                        if p[i] == b'\\' && i + 1 < p.len() {
                            items.push(ClassItem::Byte(p[i + 1]));
                            i += 2;
                        } else if p[i] == b']' {
                            i += 1;
                            break;
                        } else if i + 2 < p.len() && p[i + 1] == b'-' {
                            let (a, b) = (p[i], p[i + 2]);
                            items.push(ClassItem::Range(a.min(b), a.max(b)));
                            i += 3;
                        } else {
                            items.push(ClassItem::Byte(p[i]));
                            i += 1;
                        }
                    }
                    tokens.push(Token::Class { negated, items });
                }
                other => {
                    tokens.push(Token::Literal(other));
                    i += 1;
                }
            }
        }
        Glob {
            source: pattern.to_owned(),
            tokens,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern matches every key, or every key but a few short ones (`?*` leaves out
    /// only the empty key): such a pattern is refused for deletion.
    ///
    /// Decided by what the tokens accept, not by how the pattern is spelt. A pattern with a star
    /// whose other tokens each accept any byte (`?`, `[^]`, a class covering all 256 bytes)
    /// matches every key at least as long as those tokens. Any token that refuses some byte `b`
    /// refuses the key `bbb…` of every length, so the pattern leaves infinitely many keys alone;
    /// and without a star a pattern matches keys of one length only.
    pub fn matches_everything(&self) -> bool {
        self.tokens.contains(&Token::Star) && self.tokens.iter().all(accepts_every_byte)
    }

    /// Whether `key` matches the whole pattern.
    pub fn is_match(&self, key: &[u8]) -> bool {
        // Greedy matching with backtracking to the last star: every other token is one byte wide.
        let (mut t, mut k) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while k < key.len() {
            match self.tokens.get(t) {
                Some(Token::Star) => {
                    star = Some((t, k));
                    t += 1;
                    continue;
                }
                Some(token) if token_matches(token, key[k]) => {
                    t += 1;
                    k += 1;
                    continue;
                }
                _ => {}
            }
            match star {
                Some((st, sk)) => {
                    t = st + 1;
                    k = sk + 1;
                    star = Some((st, sk + 1));
                }
                None => return false,
            }
        }
        self.tokens[t..].iter().all(|tok| *tok == Token::Star)
    }
}

fn accepts_every_byte(token: &Token) -> bool {
    (0..=u8::MAX).all(|byte| token_matches(token, byte))
}

fn token_matches(token: &Token, byte: u8) -> bool {
    match token {
        Token::Star => true,
        Token::Any => true,
        Token::Literal(l) => *l == byte,
        Token::Class { negated, items } => {
            let hit = items.iter().any(|item| match item {
                ClassItem::Byte(b) => *b == byte,
                ClassItem::Range(a, b) => (*a..=*b).contains(&byte),
            });
            hit != *negated
        }
    }
}

/// Escape text so that it matches itself literally inside a pattern.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, k: &str) -> bool {
        Glob::new(p).is_match(k.as_bytes())
    }

    #[test]
    fn stars_and_questions() {
        assert!(m("session:*", "session:abc"));
        assert!(m("session:*", "session:"));
        assert!(!m("session:*", "sessions:abc"));
        assert!(m("cache:*:generation:*", "cache:clinic:5:generation:17"));
        assert!(m("cache:*:generation:17", "cache:clinic:5:generation:17"));
        assert!(!m("cache:*:generation:1", "cache:clinic:5:generation:17"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("*", ""));
        assert!(m("a**b", "ab"));
        assert!(m("*a*b*", "xxaxxbxx"));
        assert!(!m("*a*b", "xxaxxbxxa"));
    }

    #[test]
    fn classes_and_escapes() {
        assert!(m("k[abc]", "kb"));
        assert!(!m("k[abc]", "kd"));
        assert!(m("k[^abc]", "kd"));
        assert!(!m("k[^abc]", "ka"));
        assert!(m("k[0-9]", "k7"));
        assert!(m("k[9-0]", "k7"));
        assert!(!m("k[0-9]", "kx"));
        assert!(m(r"k\*", "k*"));
        assert!(!m(r"k\*", "kx"));
        assert!(m(r"k[\]]", "k]"));
        assert!(m("{a}", "{a}"));
    }

    #[test]
    fn escaped_text_matches_only_itself() {
        for text in ["plain", "a*b", "x?y", "[1]", r"back\slash"] {
            let g = Glob::new(&escape(text));
            assert!(g.is_match(text.as_bytes()), "{text}");
            assert!(!g.is_match(format!("{text}x").as_bytes()));
        }
        assert!(!Glob::new(&escape("a*b")).is_match(b"axxb"));
    }

    #[test]
    fn patterns_that_match_every_key_are_found_by_what_they_accept() {
        for everything in [
            "*", "***", "?*", "*?", "*?*", "??*", "[^]*", "*[^]", "?[^]?*",
        ] {
            assert!(Glob::new(everything).matches_everything(), "{everything}");
        }
        // A class of every byte, written as a range over all of them.
        let all_bytes = Glob {
            source: String::new(),
            tokens: vec![
                Token::Class {
                    negated: false,
                    items: vec![ClassItem::Range(0, 255)],
                },
                Token::Star,
            ],
        };
        assert!(all_bytes.matches_everything());
        for named in [
            "*:*",
            "session:*",
            "*a",
            "[^a]*",
            "?",
            "????",
            "[a-z]*",
            r"\**",
            "*[^]x",
        ] {
            assert!(!Glob::new(named).matches_everything(), "{named}");
        }
    }

    /// The decision agrees with matching: a pattern said to match everything matches every key
    /// of each single byte repeated past its length, and one said not to misses one of them.
    #[test]
    fn matching_everything_agrees_with_matching() {
        for pattern in [
            "*", "?*", "*?*", "[^]*", "[^a]*", "a*", "*:*", "??*", "[!-~]*", "*[^b]*", "x",
        ] {
            let glob = Glob::new(pattern);
            let long = glob.tokens.len() + 1;
            let all_match = (0..=u8::MAX).all(|b| glob.is_match(&vec![b; long]));
            assert_eq!(glob.matches_everything(), all_match, "{pattern}");
        }
    }
}
