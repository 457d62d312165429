//! Time arithmetic and breach windows.
//!
//! A window says "this condition has held at every sample for at least D". Each sample covers the
//! interval since the previous sample of its run: a sample where the condition holds adds that
//! interval, a contrary sample resets the window, and an unknown sample does what the caller says
//! (hold: neither fill nor reset; fill; or reset). Nothing assumes a tick length, so a window of
//! "2s" in a drill behaves exactly like "10m" in production.

use std::time::Duration as StdDuration;

use jiff::Timestamp;

use crate::api::{Duration, WindowState};

/// Time from `earlier` to `now`, zero if the clock went back.
pub fn elapsed(now: Timestamp, earlier: Timestamp) -> StdDuration {
    let d = now.duration_since(earlier);
    if d.is_negative() {
        StdDuration::ZERO
    } else {
        d.unsigned_abs()
    }
}

/// Whether at least `d` has passed from `earlier` to `now`.
pub fn at_least(now: Timestamp, earlier: Timestamp, d: Duration) -> bool {
    elapsed(now, earlier) >= d.as_std()
}

/// One sample of a window's condition.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sample {
    /// The condition holds; the signal's value, when there is one.
    Holds(Option<f64>),
    /// The condition does not hold.
    Broken,
    /// The signal is unknown.
    Unknown,
}

/// What an unknown sample does to a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnUnknown {
    /// Neither fill nor reset: the time it covers does not count.
    Hold,
    /// Count as the condition holding.
    Fill,
    /// Count as the condition broken.
    Reset,
}

/// Feed one sample taken at `now` into the window.
pub fn feed(window: &mut WindowState, now: Timestamp, sample: Sample, on_unknown: OnUnknown) {
    let sample = match (sample, on_unknown) {
        (Sample::Unknown, OnUnknown::Fill) => Sample::Holds(None),
        (Sample::Unknown, OnUnknown::Reset) => Sample::Broken,
        (other, _) => other,
    };
    match sample {
        Sample::Holds(value) => {
            if let Some(previous) = window.last_sample_at {
                let total = window
                    .held_for
                    .as_std()
                    .saturating_add(elapsed(now, previous));
                window.held_for = Duration::from_std(total);
            } else {
                window.held_for = Duration::ZERO;
            }
            window.last_sample_at = Some(now);
            if value.is_some() {
                window.last_value = value;
            }
        }
        Sample::Broken => *window = WindowState::default(),
        Sample::Unknown => {
            // Hold: the run goes on, but the interval this sample covers is not counted.
            if window.last_sample_at.is_some() {
                window.last_sample_at = Some(now);
            }
        }
    }
}

/// Whether the window has held for at least `d`.
pub fn holds_for(window: &WindowState, d: Duration) -> bool {
    window.last_sample_at.is_some() && window.held_for >= d
}

/// Start a new run at `now` (used after a ramp step: the next step needs a full interval again).
pub fn restart(window: &mut WindowState, now: Timestamp) {
    window.held_for = Duration::ZERO;
    window.last_sample_at = Some(now);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn run(samples: &[(i64, Sample)], on_unknown: OnUnknown) -> WindowState {
        let mut w = WindowState::default();
        for (at, s) in samples {
            feed(&mut w, t(*at), *s, on_unknown);
        }
        w
    }

    const B: Sample = Sample::Holds(Some(1.0));

    #[test]
    fn fills_only_while_every_sample_breaches() {
        let w = run(&[(0, B), (30, B), (600, B)], OnUnknown::Hold);
        assert!(holds_for(&w, Duration::from_secs(600)));
        let w = run(&[(0, B), (300, Sample::Broken), (600, B)], OnUnknown::Hold);
        assert!(!holds_for(&w, Duration::from_secs(1)));
        assert!(holds_for(&w, Duration::ZERO));
    }

    #[test]
    fn unknown_samples_follow_the_rule() {
        let samples = [
            (0, B),
            (100, Sample::Unknown),
            (400, Sample::Unknown),
            (600, B),
        ];
        // Hold: 0..100 and 100..400 are not counted (they end in unknown samples); 400..600 is.
        let w = run(&samples, OnUnknown::Hold);
        assert_eq!(w.held_for, Duration::from_secs(200));
        let w = run(&samples, OnUnknown::Fill);
        assert_eq!(w.held_for, Duration::from_secs(600));
        let w = run(&samples, OnUnknown::Reset);
        assert_eq!(w.held_for, Duration::ZERO);
        // An unknown sample does not start a run.
        let w = run(&[(0, Sample::Unknown)], OnUnknown::Hold);
        assert!(w.is_idle());
    }

    #[test]
    fn a_clock_going_back_adds_nothing() {
        let w = run(&[(100, B), (50, B), (160, B)], OnUnknown::Hold);
        assert_eq!(w.held_for, Duration::from_secs(110));
    }

    #[test]
    fn sub_second_windows_work() {
        let mut w = WindowState::default();
        let base = t(0);
        for ms in [0, 250, 500, 750, 1000] {
            feed(
                &mut w,
                base + jiff::SignedDuration::from_millis(ms),
                B,
                OnUnknown::Hold,
            );
        }
        assert!(holds_for(&w, Duration::from_millis(1000)));
        assert!(!holds_for(&w, Duration::from_millis(1001)));
    }
}
