//! Is the canary's error rate above the stable cohort's by more than the spec's points? Decided on
//! counts, with a bounded false-rollback rate however often the question is asked.
//!
//! The test is a mixture sequential probability ratio test (mSPRT; Robbins' normal mixture, as in
//! Johari, Pekelis and Walsh's "always valid" A/B tests) on the difference of the two error
//! proportions. With `θ` the true difference and `θ0` the spec's points, the statistic after the
//! counts seen so far is
//!
//! ```text
//!   Λ = sqrt(1 / (1 + τ²·I)) · exp(τ²·I²·(θ̂ − θ0)² / (2·(1 + τ²·I)))
//! ```
//!
//! where `θ̂` is the observed difference, `I` the information (the inverse of `θ̂`'s variance,
//! from both cohorts' proportions and counts) and `τ` the mixture's scale (the spec's points as a
//! proportion, at least half a point). At `θ = θ0`, `Λ` is (to the normal approximation of the
//! proportions) a nonnegative martingale with mean one, so by Ville's inequality it ever reaches
//! `1/α` with probability at most `α`; for `θ < θ0` a crossing with `θ̂ > θ0` is rarer still, so
//! the bound holds for every canary no worse than the allowance. Hence
//! looking at every tick does not inflate the false-rollback rate, as repeated fixed-sample tests
//! would. The canary is rolled back when `θ̂ > θ0` and `Λ ≥ 1/α`.
//!
//! Counted since the deploy, a test dilutes a regression that begins after hours of health, so
//! the policy also runs rolling tests, one started every hour and each kept twelve hours; the
//! spec's `alpha` is split between them (`rollback::error_test_level`) so that an A/A canary is
//! rolled back at most `alpha` of its days, however long it runs.
//!
//! Why not for latency: the runbook's latency criterion is a threshold on the canary's own P50
//! held for ten minutes, not a comparison with the stable cohort, and the P50 comes from histogram
//! buckets whose bounds need not fall on the threshold; the criterion stays the runbook's window
//! (every sample of the canary's P50 above the threshold for `p50LatencyFor`, each with at least
//! `minRequests` requests), which a short burst of slow requests cannot satisfy.

use crate::api::ErrorTest;

/// What the counts say.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    /// The canary's error rate, percent.
    pub canary_percent: f64,
    /// The stable cohort's, percent.
    pub stable_percent: f64,
    /// The evidence `Λ` that the canary's rate exceeds the stable's by more than the points.
    pub evidence: f64,
    /// `θ̂ > θ0` and `Λ ≥ 1/α`: roll back.
    pub significant: bool,
}

/// Smallest mixture scale, in proportion: a spec of 0 points still gets a proper test.
const MIN_TAU: f64 = 0.005;

/// Judge the counts against `points` (percentage points) at level `alpha`. None until both
/// cohorts have served requests.
pub fn judge(counts: &ErrorTest, points: f64, alpha: f64) -> Option<Verdict> {
    let (nc, ns) = (counts.canary_requests, counts.stable_requests);
    if !(nc > 0.0 && ns > 0.0) {
        return None;
    }
    let pc = (counts.canary_errors / nc).clamp(0.0, 1.0);
    let ps = (counts.stable_errors / ns).clamp(0.0, 1.0);
    // A continuity correction keeps the variance positive when a cohort has no errors yet.
    let smooth = |e: f64, n: f64| ((e + 0.5) / (n + 1.0)).clamp(0.0, 1.0);
    let (qc, qs) = (
        smooth(counts.canary_errors, nc),
        smooth(counts.stable_errors, ns),
    );
    let variance = qc * (1.0 - qc) / nc + qs * (1.0 - qs) / ns;
    let theta0 = points / 100.0;
    let tau = theta0.max(MIN_TAU);
    let info = 1.0 / variance;
    let t2i = tau * tau * info;
    let excess = pc - ps - theta0;
    let log_evidence = -0.5 * (1.0 + t2i).ln() + t2i * info * excess * excess / (2.0 * (1.0 + t2i));
    let evidence = log_evidence.exp();
    Some(Verdict {
        canary_percent: 100.0 * pc,
        stable_percent: 100.0 * ps,
        evidence,
        significant: excess > 0.0 && log_evidence >= (1.0 / alpha).ln(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn counts(nc: f64, ec: f64, ns: f64, es: f64) -> ErrorTest {
        ErrorTest {
            span: Default::default(),
            since: Timestamp::UNIX_EPOCH,
            last_batch_at: None,
            canary_requests: nc,
            canary_errors: ec,
            stable_requests: ns,
            stable_errors: es,
        }
    }

    #[test]
    fn a_clear_excess_is_significant_and_a_small_sample_is_not() {
        // 10% against 1%, 2,000 canary requests: far above 2 points.
        let v = judge(&counts(2000.0, 200.0, 18000.0, 180.0), 2.0, 0.01).unwrap();
        assert!(v.significant, "{v:?}");
        assert!((v.canary_percent - 10.0).abs() < 1e-9);
        // The same rates on 20 canary requests prove nothing.
        let v = judge(&counts(20.0, 2.0, 180.0, 2.0), 2.0, 0.01).unwrap();
        assert!(!v.significant, "{v:?}");
        // Equal rates never are, however much traffic.
        let v = judge(&counts(1e6, 1e4, 9e6, 9e4), 2.0, 0.01).unwrap();
        assert!(!v.significant);
        // Below the points, even a real difference is not a rollback.
        let v = judge(&counts(1e6, 2e4, 9e6, 9e4), 2.0, 0.01).unwrap();
        assert!(!v.significant, "2% against 1% is within 2 points: {v:?}");
        assert!(judge(&counts(0.0, 0.0, 10.0, 0.0), 2.0, 0.01).is_none());
    }
}
