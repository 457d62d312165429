//! How the policy writes numbers and spans in its messages. (The sanitized view of an
//! observation the policy reads, [`crate::api::Signals`], comes from the signal table.)

/// A number for a message: whole numbers without decimals, others with at most two.
pub fn num(v: f64) -> String {
    let hundredths = (v * 100.0).round();
    if hundredths.abs() >= 1e15 {
        return format!("{v:e}");
    }
    // Integer arithmetic (this runs in messages at every step); anything that rounds to zero
    // prints as 0, never -0.
    let h = hundredths as i64;
    let sign = if h < 0 { "-" } else { "" };
    let (whole, frac) = (h.unsigned_abs() / 100, h.unsigned_abs() % 100);
    match frac {
        0 if h == 0 => "0".to_owned(),
        0 => format!("{sign}{whole}"),
        f if f % 10 == 0 => format!("{sign}{whole}.{}", f / 10),
        f => format!("{sign}{whole}.{f:02}"),
    }
}

/// A measured span for people: milliseconds below a second, else hours, minutes and seconds to
/// a tenth ("8.8s", "4h0m3.2s"). Measured spans carry the clock's precision, which the exact
/// form (`Duration`'s Display, "8795439815ns") would print in full.
pub fn span(d: crate::api::Duration) -> String {
    let ms = (d.as_std().as_nanos() + 500_000) / 1_000_000;
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let tenths = (ms + 50) / 100;
    let (secs, tenth) = (tenths / 10, tenths % 10);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h{m}m"));
    } else if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if tenth > 0 {
        out.push_str(&format!("{s}.{tenth}s"));
    } else {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_like_durations_at_any_precision() {
        use crate::api::Duration;
        use std::time::Duration as Std;
        assert_eq!(
            span(Duration::from_std(Std::from_nanos(8_795_439_815))),
            "8.8s"
        );
        assert_eq!(
            span(Duration::from_std(Std::from_nanos(249_600_000))),
            "250ms"
        );
        assert_eq!(span(Duration::from_millis(999_960)), "16m40s");
        assert_eq!(
            span(Duration::from_millis(4 * 3_600_000 + 3_217)),
            "4h0m3.2s"
        );
        assert_eq!(span(Duration::from_secs(600)), "10m0s");
        assert_eq!(span(Duration::ZERO), "0ms");
    }

    #[test]
    fn numbers_print_plainly() {
        assert_eq!(num(1500.0), "1500");
        assert_eq!(num(2.5), "2.5");
        assert_eq!(num(99.333), "99.33");
        assert_eq!(num(-0.5), "-0.5");
        assert_eq!(num(-1e-300), "0");
        assert_eq!(num(0.05), "0.05");
        assert_eq!(num(1e300), "1e300");
    }
}
