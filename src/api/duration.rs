//! Human-readable durations ("10m", "4h", "1h30m") as they appear in manifests.
//!
//! The accepted form is the Go duration syntax that Kubernetes users already know and that
//! CEL's `duration()` understands, so the CRD's cross-field rules can compare durations.
//! Days are deliberately not accepted: CEL would reject them on the server.

use std::{borrow::Cow, fmt, str::FromStr, time::Duration as StdDuration};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The schema pattern for a duration: one or more `<number><unit>` groups, units ns, us, ms, s, m, h.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// The longest duration text accepted ("1h30m15s500ms" is 13).
pub const MAX_DURATION_CHARS: u64 = 32;

/// A non-negative span of time written as a Go-style duration string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(StdDuration);

impl Duration {
    pub const ZERO: Duration = Duration(StdDuration::ZERO);

    pub const fn from_secs(secs: u64) -> Self {
        Duration(StdDuration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> Self {
        Duration(StdDuration::from_millis(millis))
    }

    pub const fn from_std(d: StdDuration) -> Self {
        Duration(d)
    }

    pub const fn as_std(self) -> StdDuration {
        self.0
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0.as_secs_f64()
    }

    /// Whole milliseconds, saturating: the unit the policy clock counts in.
    pub fn as_millis_i64(self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<StdDuration> for Duration {
    fn from(d: StdDuration) -> Self {
        Duration(d)
    }
}

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (write it like \"90s\", \"10m\" or \"1h30m\")")]
pub struct ParseDurationError {
    input: String,
    reason: &'static str,
}

impl FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseDurationError {
            // Quoted in messages: a pasted megabyte is shown by its start.
            input: crate::remote::text::shown(s, 40),
            reason,
        };
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        let mut total = 0f64; // nanoseconds
        let mut rest = s;
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| err("a number has no unit"))?;
            if number_len == 0 {
                return Err(err("expected a number"));
            }
            let (number, tail) = rest.split_at(number_len);
            if number.starts_with('.') || number.ends_with('.') || number.matches('.').count() > 1 {
                return Err(err("malformed number"));
            }
            let value: f64 = number.parse().map_err(|_| err("malformed number"))?;
            let unit_len = tail
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(tail.len());
            let (unit, next) = tail.split_at(unit_len);
            let nanos_per_unit = match unit {
                "ns" => 1.0,
                "us" | "µs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                "" => return Err(err("a number has no unit")),
                _ => return Err(err("unknown unit (use ns, us, ms, s, m or h)")),
            };
            total += value * nanos_per_unit;
            rest = next;
        }
        // About 292 years: far beyond any sensible timer, and it keeps i64 millisecond math safe.
        if !total.is_finite() || total > 9.2e18 {
            return Err(err("too large"));
        }
        Ok(Duration(StdDuration::from_nanos(total.round() as u64)))
    }
}

impl fmt::Display for Duration {
    /// Canonical Go-style form: "1h30m", "90ms", "0s".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total_nanos = self.0.as_nanos();
        if total_nanos == 0 {
            return f.write_str("0s");
        }
        if !total_nanos.is_multiple_of(1_000_000_000) {
            if total_nanos.is_multiple_of(1_000_000) {
                return write!(f, "{}ms", total_nanos / 1_000_000);
            }
            return write!(f, "{total_nanos}ns");
        }
        let mut secs = self.0.as_secs();
        let hours = secs / 3600;
        secs %= 3600;
        let minutes = secs / 60;
        secs %= 60;
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        if secs > 0 {
            write!(f, "{secs}s")?;
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // A bounded length keeps the pattern and CEL's duration() cheap.
        json_schema!({
            "type": "string",
            "maxLength": MAX_DURATION_CHARS,
            "pattern": DURATION_PATTERN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_go_durations() {
        for (text, secs, canonical) in [
            ("10m", 600, "10m"),
            ("4h", 14_400, "4h"),
            ("1h30m", 5_400, "1h30m"),
            ("90s", 90, "1m30s"),
            ("1.5h", 5_400, "1h30m"),
            ("0s", 0, "0s"),
        ] {
            let d: Duration = text.parse().unwrap();
            assert_eq!(d.as_std().as_secs(), secs, "{text}");
            assert_eq!(d.to_string(), canonical, "{text}");
        }
        assert_eq!("250ms".parse::<Duration>().unwrap().to_string(), "250ms");
    }

    #[test]
    fn rejects_malformed_durations() {
        for text in ["", "10", "m", "10 m", "1d", "-5m", "1..5s", "5mm", "abc"] {
            assert!(
                text.parse::<Duration>().is_err(),
                "{text:?} should be rejected"
            );
        }
    }

    #[test]
    fn pattern_agrees_with_parser_on_examples() {
        let re = |s: &str| {
            // The schema pattern is checked by the API server; keep it in step with the parser.
            crate::api::validate::pattern_matches(DURATION_PATTERN, s)
        };
        for ok in ["10m", "1h30m", "250ms", "1.5h"] {
            assert!(re(ok) && ok.parse::<Duration>().is_ok(), "{ok}");
        }
        for bad in ["", "10", "1d", "10 m"] {
            assert!(!re(bad) && bad.parse::<Duration>().is_err(), "{bad}");
        }
    }
}
