//! The canary rollback procedure, and the ramp back after a human resumes the tier.
//!
//! Criteria (any one, each over its own window): P50 latency above `p50LatencyMs` for
//! `p50LatencyFor`; error rate more than `errorRateIncreasePoints` above the baseline for
//! `errorRateFor`; circuit breaker open for `breakerOpenFor`; mem0 write success below
//! `mem0WriteSuccessBelowPercent` for `mem0WriteSuccessFor`.
//!
//! Phases: 1 canary → `reducedRate`, hold `phaseHold`, → 0 (straight on if the trigger signal
//! worsens meanwhile); 2 FAST_PATH_ENABLED, MEM0_READS_ENABLED, MEM0_SHADOW_MODE off; 3 verify:
//! every rollback signal back within its bound for `phaseHold`; 4 the incident record. The tier
//! then stays rolled back until a human resumes it: the annotation `tierguard.dev/resume` set to a
//! value other than the one it had when the rollback started, or a new spec generation. With
//! `autoResume` the verified rollback resumes by itself. Resuming drops the rollback overlays and
//! ramps the canary from `reducedRate` back to its baseline, one `rampStep` per `rampInterval`
//! while the signals stay within bounds.

use super::incidents;
use super::signals::num;
use super::window::{OnUnknown, Sample, at_least, feed, holds_for, restart};
use super::{Change, Step};
use crate::api::Runbook;
use crate::api::signals::CohortSignals;
use crate::api::{
    Duration, ErrorTest, ErrorTestSpan, OnMissingData, PolicyMemory, RampState, RollbackCriterion,
    RollbackPhase, RollbackState, Subject, WindowState,
};

/// How much further past its value at the start of the rollback the trigger signal must move, in
/// phase 1, to count as worsening: a quarter of the P50 threshold, one more error-rate increase,
/// or one more mem0 shortfall.
pub const P50_WORSENING_SHARE: f64 = 0.25;

fn on_unknown_breach(step: &Step) -> OnUnknown {
    match step.spec.metrics.on_missing_data {
        OnMissingData::Hold => OnUnknown::Hold,
        OnMissingData::Rollback => OnUnknown::Fill,
    }
}

fn on_unknown_healthy(step: &Step) -> OnUnknown {
    match step.spec.metrics.on_missing_data {
        OnMissingData::Hold => OnUnknown::Hold,
        OnMissingData::Rollback => OnUnknown::Reset,
    }
}

/// The error-rate baseline in force: the spec's, or the one learned from healthy samples.
pub(crate) fn error_baseline(step: &Step, m: &PolicyMemory) -> Option<f64> {
    step.spec
        .rollback
        .error_rate_baseline_percent
        .or(m.error_rate_baseline_percent)
}

/// Whose traffic the criteria judge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Judged {
    /// The canary cohort's (the application's metrics carry the cohort label).
    Canary,
    /// The whole service's.
    Service,
}

fn judged(step: &Step) -> Judged {
    if step.signals.canary.is_some() {
        Judged::Canary
    } else {
        Judged::Service
    }
}

/// Whether a sample rests on enough requests (`rollback.minRequests` over the rate window). A
/// cohort's count must be known; the service's, when its query gives none, is not required.
fn enough(requests: Option<f64>, min: u64, required: bool) -> bool {
    match requests {
        Some(n) => n >= min as f64,
        None => !required,
    }
}

/// A signal of the judged traffic: the canary cohort's, or the whole service's; unknown when that
/// traffic served fewer than `rollback.minRequests` requests.
fn value(
    step: &Step,
    judged: Judged,
    service: Option<f64>,
    cohort: impl Fn(&CohortSignals) -> Option<f64>,
) -> Option<f64> {
    let min = step.spec.rollback.min_requests;
    match (judged, &step.signals.canary) {
        (Judged::Canary, Some(c)) => cohort(c).filter(|_| enough(c.requests, min, true)),
        _ => service.filter(|_| enough(step.signals.requests, min, false)),
    }
}

fn p50_of(step: &Step, judged: Judged) -> Option<f64> {
    value(step, judged, step.signals.p50_latency_ms, |c| {
        c.p50_latency_ms
    })
}

fn mem0_of(step: &Step, judged: Judged) -> Option<f64> {
    value(step, judged, step.signals.mem0_write_success_percent, |c| {
        c.mem0_write_success_percent
    })
}

fn error_of(step: &Step, judged: Judged) -> Option<f64> {
    value(step, judged, step.signals.error_rate_percent, |c| {
        c.error_rate_percent
    })
}

fn p50_breach(step: &Step, judged: Judged) -> Option<bool> {
    p50_of(step, judged).map(|v| v > step.spec.rollback.p50_latency_ms)
}

/// Without a stable cohort to compare with, the error rate is held against a baseline.
fn error_breach(step: &Step, m: &PolicyMemory, judged: Judged) -> Option<bool> {
    let baseline = error_baseline(step, m)?;
    error_of(step, judged).map(|v| v > baseline + step.spec.rollback.error_rate_increase_points)
}

fn mem0_breach(step: &Step, judged: Judged) -> Option<bool> {
    mem0_of(step, judged).map(|v| v < step.spec.rollback.mem0_write_success_below_percent)
}

/// Whether both cohorts are observed, so that the canary's error rate is compared with the stable
/// cohort's (and not with a learned baseline).
fn compares_cohorts(step: &Step) -> bool {
    step.signals.canary.is_some() && step.signals.stable.is_some()
}

fn sample(breach: Option<bool>, value: Option<f64>) -> Sample {
    match breach {
        Some(true) => Sample::Holds(value),
        Some(false) => Sample::Broken,
        None => Sample::Unknown,
    }
}

/// Feed this observation into the criteria windows, the error test and the learned baseline.
pub(crate) fn observe(step: &mut Step, m: &mut PolicyMemory) {
    let missing = on_unknown_breach(step);
    let now = step.now;
    let judged = judged(step);
    let p50 = sample(p50_breach(step, judged), p50_of(step, judged));
    feed(&mut m.windows.p50_latency, now, p50, missing);
    if compares_cohorts(step) {
        m.windows.error_rate = WindowState::default();
        count_errors(step, m);
    } else {
        let error = error_breach(step, m, judged);
        feed(
            &mut m.windows.error_rate,
            now,
            sample(error, error_of(step, judged)),
            missing,
        );
        learn_error_baseline(step, m, error, judged);
    }
    let mem0 = sample(mem0_breach(step, judged), mem0_of(step, judged));
    feed(&mut m.windows.mem0_write_success, now, mem0, missing);
}

/// How often a rolling error test starts, and how long one lives. A regression that begins after
/// hours of healthy canary traffic would be diluted by them in the test since the deploy; the
/// rolling test started after it sees only regressed traffic. At most
/// `ROLLING_TEST_LIFETIME / ROLLING_TEST_EVERY` rolling tests run at once.
pub const ROLLING_TEST_EVERY: Duration = Duration::from_secs(3600);
pub const ROLLING_TEST_LIFETIME: Duration = Duration::from_secs(12 * 3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The level of one error test, so that the false-rollback rate of an A/A canary stays at most
/// `alpha` per day however long it runs (a union bound): half of `alpha` for the test since the
/// deploy, the other half shared by the rolling tests a day starts.
pub fn error_test_level(span: ErrorTestSpan, alpha: f64) -> f64 {
    match span {
        ErrorTestSpan::SinceDeploy => alpha / 2.0,
        ErrorTestSpan::Rolling => {
            alpha / 2.0 * ROLLING_TEST_EVERY.as_secs_f64() / DAY.as_secs_f64()
        }
    }
}

/// Add this rate window's requests and errors of both cohorts to the sequential tests: one batch
/// per rate window, so that no request counts twice; a window where a cohort served fewer than
/// `rollback.minRequests` adds nothing. The tests pause while a rollback is under way.
fn count_errors(step: &Step, m: &mut PolicyMemory) {
    if m.rollback.is_some() {
        return;
    }
    let (Some(c), Some(s)) = (&step.signals.canary, &step.signals.stable) else {
        return;
    };
    let window = step.spec.metrics.rate_window;
    let tests = &mut m.windows.error_tests;
    let due = tests
        .iter()
        .filter_map(|t| t.last_batch_at)
        .max()
        .is_none_or(|last| at_least(step.now, last, window));
    let min = step.spec.rollback.min_requests;
    let batch = |requests: Option<f64>, errors: Option<f64>| match (requests, errors) {
        (Some(n), Some(rate)) if enough(Some(n), min, true) => Some((n, n * rate / 100.0)),
        _ => None,
    };
    let (Some((nc, ec)), Some((ns, es))) = (
        batch(c.requests, c.error_rate_percent),
        batch(s.requests, s.error_rate_percent),
    ) else {
        return;
    };
    if !due {
        return;
    }
    tests.retain(|t| {
        t.span == ErrorTestSpan::SinceDeploy || !at_least(step.now, t.since, ROLLING_TEST_LIFETIME)
    });
    let start = |span| ErrorTest {
        span,
        since: step.now,
        ..ErrorTest::default()
    };
    match tests.iter().map(|t| t.since).max() {
        None => tests.push(start(ErrorTestSpan::SinceDeploy)),
        Some(newest) if at_least(step.now, newest, ROLLING_TEST_EVERY) => {
            tests.push(start(ErrorTestSpan::Rolling))
        }
        Some(_) => {}
    }
    for test in tests.iter_mut() {
        test.last_batch_at = Some(step.now);
        test.canary_requests += nc;
        test.canary_errors += ec;
        test.stable_requests += ns;
        test.stable_errors += es;
    }
}

/// Start the error tests again (a deploy or a resume: what came before says nothing of the canary
/// now).
pub(crate) fn restart_error_test(m: &mut PolicyMemory) {
    m.windows.error_tests.clear();
}

/// An exponentially weighted mean of healthy error-rate samples, with a time constant of six
/// error-rate windows, learned only while no rollback is under way.
fn learn_error_baseline(step: &Step, m: &mut PolicyMemory, breach: Option<bool>, judged: Judged) {
    if step.spec.rollback.error_rate_baseline_percent.is_some() || m.rollback.is_some() {
        return;
    }
    let Some(value) = error_of(step, judged) else {
        return;
    };
    if breach == Some(true) {
        return;
    }
    let value = value.clamp(0.0, 100.0);
    m.error_rate_baseline_percent = Some(match (m.error_rate_baseline_percent, m.last_tick) {
        (Some(baseline), Some(last)) => {
            let tau = (step.spec.rollback.error_rate_for.as_secs_f64() * 6.0).max(1.0);
            let dt = super::window::elapsed(step.now, last).as_secs_f64();
            let alpha = 1.0 - (-dt / tau).exp();
            baseline + alpha * (value - baseline)
        }
        _ => value,
    });
}

/// A criterion whose window holds, with the words that explain it.
struct Breach {
    criterion: RollbackCriterion,
    value: Option<f64>,
    reason: String,
}

fn value_or_unknown(v: Option<f64>, unit: &str) -> String {
    v.map(|v| format!("{}{unit}", num(v)))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn holding(step: &Step, m: &PolicyMemory) -> Option<Breach> {
    let r = &step.spec.rollback;
    let missing = match step.spec.metrics.on_missing_data {
        OnMissingData::Rollback => " (unknown counts as a breach: metrics.onMissingData Rollback)",
        OnMissingData::Hold => "",
    };
    let judged = judged(step);
    let (who, stable) = match judged {
        Judged::Canary => ("canary ", step.signals.stable.as_ref()),
        Judged::Service => ("", None),
    };
    if holds_for(&m.windows.p50_latency, r.p50_latency_for) {
        let value = p50_of(step, judged);
        let beside = stable.map(|s| {
            let stable = s.p50_latency_ms;
            let affected = if stable.is_some_and(|v| v > r.p50_latency_ms) {
                ": the stable cohort is equally affected"
            } else {
                ""
            };
            format!(
                " (stable cohort {}{affected})",
                value_or_unknown(stable, " ms")
            )
        });
        return Some(Breach {
            criterion: RollbackCriterion::P50Latency,
            value,
            reason: format!(
                "{who}P50 latency {} above {} ms for {}{}{missing}",
                value_or_unknown(value, " ms"),
                num(r.p50_latency_ms),
                r.p50_latency_for,
                beside.unwrap_or_default()
            ),
        });
    }
    if compares_cohorts(step)
        && let Some((test, level, v)) = m.windows.error_tests.iter().find_map(|test| {
            let level = error_test_level(test.span, r.alpha);
            super::sequential::judge(test, r.error_rate_increase_points, level)
                .filter(|v| v.significant)
                .map(|v| (test, level, v))
        })
    {
        return Some(Breach {
            criterion: RollbackCriterion::ErrorRate,
            value: Some(v.canary_percent),
            reason: format!(
                "canary error rate {}% more than {} points above the stable cohort's {}% (confidence {}%, over {} canary and {} stable requests since {})",
                num(v.canary_percent),
                num(r.error_rate_increase_points),
                num(v.stable_percent),
                num(100.0 * (1.0 - level)),
                num(test.canary_requests.round()),
                num(test.stable_requests.round()),
                match test.span {
                    ErrorTestSpan::SinceDeploy => "the deploy".to_owned(),
                    ErrorTestSpan::Rolling => test.since.to_string(),
                }
            ),
        });
    }
    if holds_for(&m.windows.error_rate, r.error_rate_for) {
        let value = error_of(step, judged);
        let baseline = error_baseline(step, m)
            .map(num)
            .unwrap_or_else(|| "unknown".into());
        return Some(Breach {
            criterion: RollbackCriterion::ErrorRate,
            value,
            reason: format!(
                "{who}error rate {} more than {} points above the {baseline}% baseline for {}{missing}",
                value_or_unknown(value, "%"),
                num(r.error_rate_increase_points),
                r.error_rate_for
            ),
        });
    }
    if super::breaker::clock_running(m) && holds_for(&m.breaker.open, r.breaker_open_for) {
        return Some(Breach {
            criterion: RollbackCriterion::BreakerOpen,
            value: None,
            reason: format!(
                "circuit breaker {} open for {} (rollback.breakerOpenFor {})",
                step.spec.breaker.name,
                super::signals::span(super::breaker::open_for(m)),
                r.breaker_open_for
            ),
        });
    }
    if holds_for(&m.windows.mem0_write_success, r.mem0_write_success_for) {
        let value = mem0_of(step, judged);
        return Some(Breach {
            criterion: RollbackCriterion::Mem0WriteSuccess,
            value,
            reason: format!(
                "{who}mem0 write success {} below {}% for {}{missing}",
                value_or_unknown(value, "%"),
                num(r.mem0_write_success_below_percent),
                r.mem0_write_success_for
            ),
        });
    }
    None
}

/// Whether every rollback signal is back within its bound: the verification of phase 3 and the
/// condition of each ramp step.
fn within_bounds(step: &Step, m: &PolicyMemory) -> Sample {
    // The whole service must be back within bounds (a rolled-back canary serves no traffic).
    let checks = [
        p50_breach(step, Judged::Service),
        error_breach(step, m, Judged::Service),
        mem0_breach(step, Judged::Service),
        // The breaker counts as known and fine only once its outage is over.
        step.signals
            .breaker_state
            .map(|_| m.breaker.outage_since.is_some())
            .or(m.breaker.outage_since.map(|_| true)),
    ];
    if checks.contains(&Some(true)) {
        Sample::Broken
    } else if checks.iter().any(Option::is_some) {
        Sample::Holds(None)
    } else {
        Sample::Unknown
    }
}

/// Whether the trigger signal got worse, in phase 1, than when the rollback started.
fn worsened(step: &Step, rb: &RollbackState) -> Option<String> {
    let start = rb.trigger_value?;
    let r = &step.spec.rollback;
    match rb.trigger {
        RollbackCriterion::P50Latency => {
            let now = p50_of(step, judged(step))?;
            (now >= start + r.p50_latency_ms * P50_WORSENING_SHARE).then(|| {
                format!(
                    "P50 latency worsened to {} ms from {} ms",
                    num(now),
                    num(start)
                )
            })
        }
        RollbackCriterion::ErrorRate => {
            let now = error_of(step, judged(step))?;
            (now >= start + r.error_rate_increase_points.max(0.1))
                .then(|| format!("error rate worsened to {}% from {}%", num(now), num(start)))
        }
        RollbackCriterion::Mem0WriteSuccess => {
            let now = mem0_of(step, judged(step))?;
            let margin = (100.0 - r.mem0_write_success_below_percent).max(1.0);
            (now <= start - margin).then(|| {
                format!(
                    "mem0 write success worsened to {}% from {}%",
                    num(now),
                    num(start)
                )
            })
        }
        RollbackCriterion::BreakerOpen => None,
    }
}

fn transition(step: &mut Step, from: &str, to: &str, reason: String) {
    // The rollback's phases by number ("none → 1", "3 → 4"), as status has always shown them.
    step.changes.push(Change::Transition {
        subject: Subject::Rollback,
        from: from.to_owned(),
        to: to.to_owned(),
        reason,
    });
}

/// Advance the rollback: start it, move through its phases, or resume it.
pub(crate) fn step(step: &mut Step, m: &mut PolicyMemory) {
    if let Some(rb) = &m.rollback
        && let Some(why) = resumed_by(step, rb)
    {
        resume(step, m, &why);
        return;
    }
    let Some(rb) = m.rollback.as_ref() else {
        if let Some(breach) = holding(step, m) {
            start(step, m, breach);
        }
        return;
    };
    match rb.phase {
        RollbackPhase::ReduceTraffic => {
            let hold = step.spec.rollback.phase_hold;
            if let Some(why) = worsened(step, rb) {
                let reason = format!("{why}: skipping the rest of the {hold} hold");
                disable_features(step, m, reason);
            } else if at_least(step.now, rb.phase_since, hold) {
                let reason = format!("held at the reduced rate for {hold}");
                disable_features(step, m, reason);
            }
        }
        RollbackPhase::Verify => verify(step, m),
        RollbackPhase::DisableFeatures | RollbackPhase::Documented => {}
    }
}

fn start(step: &mut Step, m: &mut PolicyMemory, breach: Breach) {
    let reduced = super::effective::format_rate(step.spec.canary.reduced_rate);
    transition(
        step,
        "none",
        "1",
        format!("{}: phase 1, canary → {reduced}", breach.reason),
    );
    m.rollback = Some(RollbackState {
        phase: RollbackPhase::ReduceTraffic,
        phase_since: step.now,
        started_at: step.now,
        trigger: breach.criterion,
        reason: breach.reason.clone(),
        trigger_value: breach.value,
        features_off_at: None,
        verified: WindowState::default(),
        resume_token: step.ctx.resume_token.clone(),
        generation: step.ctx.generation,
    });
    // A rollback supersedes a ramp in progress.
    m.ramp = None;
    incidents::open(step, m, Runbook::CanaryRollback, &breach.reason);
    incidents::note(
        step,
        m,
        Runbook::CanaryRollback,
        format!("Rollback initiated: traffic reduced to {reduced}"),
    );
}

/// End of phase 1 (canary → 0) and phase 2 (features off), then phase 3 begins at once.
fn disable_features(step: &mut Step, m: &mut PolicyMemory, reason: String) {
    let now = step.now;
    transition(
        step,
        "1",
        "2",
        format!(
            "{reason}; canary → 0.0, FAST_PATH_ENABLED, MEM0_READS_ENABLED and MEM0_SHADOW_MODE off"
        ),
    );
    transition(
        step,
        "2",
        "3",
        format!(
            "features disabled; verifying that every rollback signal stays within its bound for {}",
            step.spec.rollback.phase_hold
        ),
    );
    if let Some(rb) = m.rollback.as_mut() {
        rb.phase = RollbackPhase::Verify;
        rb.phase_since = now;
        rb.features_off_at = Some(now);
        rb.verified = WindowState::default();
    }
    incidents::note(
        step,
        m,
        Runbook::CanaryRollback,
        format!("Traffic reduced to 0.0 ({reason})"),
    );
    incidents::note(
        step,
        m,
        Runbook::CanaryRollback,
        "Features disabled: FAST_PATH_ENABLED, MEM0_READS_ENABLED, MEM0_SHADOW_MODE = false",
    );
    verify(step, m);
}

fn verify(step: &mut Step, m: &mut PolicyMemory) {
    let sample = within_bounds(step, m);
    let on_unknown = on_unknown_healthy(step);
    let hold = step.spec.rollback.phase_hold;
    let Some(rb) = m.rollback.as_mut() else {
        return;
    };
    feed(&mut rb.verified, step.now, sample, on_unknown);
    if !holds_for(&rb.verified, hold) {
        return;
    }
    rb.phase = RollbackPhase::Documented;
    rb.phase_since = step.now;
    let reason = format!("every rollback signal within its bound for {hold}: system stable");
    transition(
        step,
        "3",
        "4",
        format!("{reason}; writing the incident record"),
    );
    incidents::note(
        step,
        m,
        Runbook::CanaryRollback,
        format!("System stable: {reason}"),
    );
    incidents::resolve(step, m, Runbook::CanaryRollback, "rollback verified");
    if step.spec.rollback.auto_resume {
        resume(
            step,
            m,
            "rollback.autoResume is set and the rollback is verified",
        );
    }
}

fn resumed_by(step: &Step, rb: &RollbackState) -> Option<String> {
    if let Some(token) = &step.ctx.resume_token
        && rb.resume_token.as_ref() != Some(token)
    {
        return Some(format!(
            "annotation {} set to {token:?}",
            crate::api::RESUME_ANNOTATION
        ));
    }
    match (rb.generation, step.ctx.generation) {
        (Some(then), Some(now)) if then != now => {
            Some(format!("the spec changed (generation {then} → {now})"))
        }
        _ => None,
    }
}

/// Drop the rollback and ramp the canary back up from the reduced rate.
fn resume(step: &mut Step, m: &mut PolicyMemory, why: &str) {
    let Some(rb) = m.rollback.take() else {
        return;
    };
    transition(
        step,
        &rb.phase.to_string(),
        "resumed",
        format!("{why}: features back to the spec, canary ramps back to the baseline"),
    );
    if incidents::find(m, Runbook::CanaryRollback).is_some() {
        incidents::note(
            step,
            m,
            Runbook::CanaryRollback,
            format!("Resumed before verification: {why}"),
        );
        incidents::resolve(step, m, Runbook::CanaryRollback, &format!("resumed: {why}"));
    }
    // A fresh start: a new rollback needs its criterion breached for a whole window again.
    restart_error_test(m);
    m.windows.p50_latency = WindowState::default();
    m.windows.error_rate = WindowState::default();
    m.windows.mem0_write_success = WindowState::default();
    m.last_relaxed_at = Some(step.now);
    let c = &step.spec.canary;
    let rate = c.reduced_rate.min(c.sample_rate).max(0.0);
    if rate < c.sample_rate {
        let mut healthy = WindowState::default();
        restart(&mut healthy, step.now);
        m.ramp = Some(RampState {
            rate,
            since: step.now,
            reason: format!("resumed after a rollback ({why})"),
            healthy,
        });
    }
}

/// Step the post-rollback ramp: +rampStep once the signals have stayed within bounds for a ramp
/// interval, until the canary is back at its baseline.
pub(crate) fn ramp(step: &mut Step, m: &mut PolicyMemory) {
    if m.rollback.is_some() {
        return;
    }
    let sample = within_bounds(step, m);
    let on_unknown = on_unknown_healthy(step);
    let c = step.spec.canary.clone();
    let may_relax = step.may_relax(m);
    let Some(ramp) = m.ramp.as_mut() else {
        return;
    };
    feed(&mut ramp.healthy, step.now, sample, on_unknown);
    if !(holds_for(&ramp.healthy, c.ramp_interval) && may_relax) {
        return;
    }
    let from = ramp.rate;
    let to = next_rate(from, c.ramp_step, c.sample_rate);
    let (from_text, to_text) = (
        super::effective::format_rate(from),
        super::effective::format_rate(to),
    );
    restart(&mut ramp.healthy, step.now);
    ramp.rate = to;
    let done = to >= c.sample_rate;
    if done {
        m.ramp = None;
    }
    step.changes.push(Change::Transition {
        subject: Subject::Ramp,
        from: from_text,
        to: to_text,
        reason: format!(
            "signals within bounds for {}{}",
            c.ramp_interval,
            if done {
                ": canary back at its baseline"
            } else {
                ""
            }
        ),
    });
    step.relaxed(m);
}

/// One ramp step up from `rate`, never past `baseline`; a step that would not move finishes it.
pub fn next_rate(rate: f64, step: f64, baseline: f64) -> f64 {
    let next = rate + step;
    if step.is_nan() || step <= 0.0 || next >= baseline - 1e-9 {
        baseline
    } else {
        next
    }
}
