//! `--selector`: a label selector in the API server's syntax, checked at start-up.
//!
//! An invalid selector makes every list and watch fail with 400 Bad Request, forever; parsed here
//! first, it is a clear error before anything starts. The grammar is the API server's:
//! requirements separated by commas, each `key`, `!key`, `key=value`, `key==value`, `key!=value`,
//! `key in (v1,v2)` or `key notin (v1,v2)`. A key is an optional DNS subdomain prefix and `/`,
//! then a name of at most 63 characters; a value is empty or at most 63 characters. The result
//! is kube's typed [`Selector`], which writes the canonical form sent to the API server.

use std::collections::BTreeSet;

use kube::core::{Expression, Selector};

/// Why a selector does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {shown:?}: {reason}")]
pub struct SelectorError {
    shown: String,
    reason: String,
}

/// Parse a label selector; an empty one selects everything.
pub fn parse(text: &str) -> Result<Selector, SelectorError> {
    let fail = |reason: String| SelectorError {
        shown: crate::remote::text::shown(text, 80),
        reason,
    };
    let mut expressions = Vec::new();
    for requirement in split_requirements(text).map_err(&fail)? {
        let requirement = requirement.trim();
        if requirement.is_empty() {
            if text.trim().is_empty() {
                continue;
            }
            return Err(fail("an empty requirement (two commas in a row?)".into()));
        }
        expressions.push(parse_requirement(requirement).map_err(&fail)?);
    }
    Ok(Selector::from_iter(expressions))
}

/// Split at the commas outside parentheses.
fn split_requirements(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("a ')' without its '('".into());
                }
            }
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("a '(' without its ')'".into());
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn parse_requirement(requirement: &str) -> Result<Expression, String> {
    if let Some(key) = requirement.strip_prefix('!') {
        let key = key.trim();
        check_key(key)?;
        return Ok(Expression::DoesNotExist(key.to_owned()));
    }
    for (operator, build) in [
        (
            "!=",
            Expression::NotEqual as fn(String, String) -> Expression,
        ),
        ("==", Expression::Equal),
        ("=", Expression::Equal),
    ] {
        if let Some((key, value)) = requirement.split_once(operator) {
            let (key, value) = (key.trim(), value.trim());
            check_key(key)?;
            check_value(value)?;
            return Ok(build(key.to_owned(), value.to_owned()));
        }
    }
    if requirement.contains(['<', '>']) {
        return Err(format!(
            "{requirement:?}: numeric comparisons are not label selectors"
        ));
    }
    let words: Vec<&str> = requirement.splitn(2, char::is_whitespace).collect();
    match words.as_slice() {
        [key] => {
            check_key(key)?;
            Ok(Expression::Exists((*key).to_owned()))
        }
        [key, rest] => {
            let rest = rest.trim_start();
            let (set, operator) = if let Some(set) = rest.strip_prefix("notin") {
                (set, "notin")
            } else if let Some(set) = rest.strip_prefix("in") {
                (set, "in")
            } else {
                return Err(format!(
                    "{requirement:?}: expected =, ==, !=, in or notin after the key"
                ));
            };
            check_key(key)?;
            let values = parse_set(set.trim()).map_err(|e| format!("{requirement:?}: {e}"))?;
            let key = (*key).to_owned();
            Ok(if operator == "in" {
                Expression::In(key, values)
            } else {
                Expression::NotIn(key, values)
            })
        }
        _ => Err(format!("{requirement:?}: expected a key")),
    }
}

fn parse_set(set: &str) -> Result<BTreeSet<String>, String> {
    let inner = set
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or("the values must be in parentheses, e.g. in (a,b)")?;
    let mut values = BTreeSet::new();
    for value in inner.split(',') {
        let value = value.trim();
        check_value(value)?;
        values.insert(value.to_owned());
    }
    Ok(values)
}

/// `[prefix/]name`: the prefix a DNS subdomain (at most 253 characters), the name at most 63
/// characters of alphanumerics, `-`, `_` and `.`, starting and ending with an alphanumeric.
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if prefix.is_empty() || prefix.len() > 253 || !prefix.split('.').all(label_ok) {
            return Err(format!(
                "the key {:?} has an invalid prefix: a DNS subdomain such as example.com",
                crate::remote::text::shown(key, 80)
            ));
        }
    }
    if !is_name(name) {
        return Err(format!(
            "the key {:?} is invalid: at most 63 characters of letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
            crate::remote::text::shown(key, 80)
        ));
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_name(value) {
        Ok(())
    } else {
        Err(format!(
            "the value {:?} is invalid: empty, or at most 63 characters of letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
            crate::remote::text::shown(value, 80)
        ))
    }
}

fn is_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> String {
        parse(text).unwrap().to_string()
    }

    #[test]
    fn the_api_servers_forms_parse() {
        assert_eq!(canonical("shard=a"), "shard=a");
        assert_eq!(canonical("shard==a"), "shard=a");
        assert_eq!(canonical("tier!=cold"), "tier!=cold");
        assert_eq!(canonical("env in (prod, staging)"), "env in (prod,staging)");
        assert_eq!(canonical("env notin (dev)"), "env notin (dev)");
        assert_eq!(canonical("tierguard.dev/managed"), "tierguard.dev/managed");
        assert_eq!(canonical("!legacy"), "!legacy");
        assert_eq!(
            canonical("shard=a, !legacy,app.kubernetes.io/name=clinic"),
            "shard=a,!legacy,app.kubernetes.io/name=clinic"
        );
        assert_eq!(canonical("empty="), "empty=");
        assert_eq!(canonical(""), "");
    }

    #[test]
    fn invalid_selectors_say_why() {
        for (text, why) in [
            ("shard=a,,b=c", "empty requirement"),
            ("env in (a", "without its ')'"),
            ("env in a", "parentheses"),
            ("shard=a b", "value \"a b\" is invalid"),
            ("-bad=x", "key \"-bad\" is invalid"),
            ("Example.com/x=1", "invalid prefix"),
            ("replicas>3", "numeric comparisons"),
            ("env within (a)", "expected =, ==, !=, in or notin"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
        let long = format!("k={}", "v".repeat(64));
        assert!(parse(&long).unwrap_err().to_string().contains("at most 63"));
    }
}
