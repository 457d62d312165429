//! Incident #1, steps 1 to 3: why is the breaker open, and the runbook's decision tree on it.
//!
//! The breaker probe (`spec.breaker.probe`, run by the observer while the breaker is seen open,
//! at most once per interval and never before a 429's Retry-After: [`probe_due`]) classifies
//! what mem0 answers. Its finding is kept for the outage in `status.policy` and drives:
//!
//! - **Down**: the runbook's wait; the open clock and `maxOpenDuration` (the 4-hour rule) go on.
//! - **AuthFailure**: level 2 is paged at once with the runbook's instruction (rotate
//!   MEM0_API_KEY), whatever `notify.escalate` says: an outage that will not heal by itself.
//! - **RateLimited**: the canary (the traffic that calls mem0) goes to `canary.reducedRate` until
//!   the mem0 write success is back at or above its alert threshold for `canary.rampInterval`,
//!   then steps back up by `canary.rampStep` as after a stampede.
//! - **Healthy**: the step-4 advice (application side; restarting workers is for a human), sent
//!   to whoever was told of the incident. Nothing is restarted.
//!
//! A new finding (the first, or another class than before) is an Event, a timeline line of the
//! incident and, past the first notification, a notification of its own.

use std::time::Duration as StdDuration;

use jiff::{SignedDuration, Timestamp};

use super::breaker::MEM0_WRITE_ALERT_BELOW_PERCENT;
use super::effective::format_rate;
use super::incidents;
use super::window::{OnUnknown, Sample, elapsed, feed, holds_for};
use super::{Action, Change, Step};
use crate::api::{
    BreakerDiagnosis, BreakerState, PolicyMemory, ProbeClass, ProbeReading, RateLimitShed, Reason,
    Runbook, Subject, WindowState,
};

/// Whether a probe is due now: the breaker is seen open (or half-open), and the latest probe
/// (when, and the Retry-After it was given) was at least `interval` ago and its Retry-After has
/// passed.
pub fn probe_due(
    interval: StdDuration,
    latest: Option<(Timestamp, Option<Timestamp>)>,
    breaker: Option<BreakerState>,
    now: Timestamp,
) -> bool {
    if !matches!(breaker, Some(BreakerState::Open | BreakerState::HalfOpen)) {
        return false;
    }
    match latest {
        None => true,
        Some((at, not_before)) => {
            elapsed(now, at) >= interval && not_before.is_none_or(|until| now >= until)
        }
    }
}

/// The finding, in one line for status, Events and reports.
pub fn describe(d: &BreakerDiagnosis) -> String {
    format!("{}: {}", d.class, d.detail)
}

/// Take this observation's probe reading into the memory. The finding lasts as long as the
/// outage: once the breaker has been closed long enough to end it, it is forgotten.
pub(crate) fn observe(step: &mut Step, m: &mut PolicyMemory, reading: Option<&ProbeReading>) {
    if m.breaker.outage_since.is_none() {
        m.breaker.diagnosis = None;
        return;
    }
    let Some(r) = reading else {
        return;
    };
    let not_before = r
        .retry_after_seconds
        .and_then(|s| i64::try_from(s).ok())
        .and_then(|s| r.at.checked_add(SignedDuration::from_secs(s)).ok());
    let previous = m.breaker.diagnosis.take();
    let changed = previous.as_ref().map(|d| d.class) != Some(r.class);
    let since = match &previous {
        Some(d) if !changed => d.since,
        _ => step.now,
    };
    m.breaker.diagnosis = Some(BreakerDiagnosis {
        class: r.class,
        detail: crate::remote::text::reason(&r.detail),
        since,
        last_probe_at: r.at,
        not_before,
    });
    if changed {
        step.diagnosed = true;
    }
}

/// Announce a new finding and act on it as the runbook's decision tree says.
pub(crate) fn step(step: &mut Step, m: &mut PolicyMemory) {
    if step.diagnosed
        && let Some(d) = m.breaker.diagnosis.clone()
    {
        announce(step, m, &d);
        if d.class == ProbeClass::RateLimited {
            shed(step, m, &d);
        }
    }
    ramp(step, m);
}

fn announce(step: &mut Step, m: &mut PolicyMemory, d: &BreakerDiagnosis) {
    let name = &step.spec.breaker.name;
    let found = describe(d);
    step.changes.push(Change::Alert {
        subject: Subject::Breaker,
        code: Reason::BreakerDiagnosed,
        warning: d.class != ProbeClass::Healthy,
        message: format!(
            "circuit breaker {name} open, diagnosis {found}; {}",
            d.class.advice()
        ),
    });
    incidents::note(
        step,
        m,
        Runbook::CircuitBreakerOpen,
        format!("Diagnosis {found}"),
    );
    // mem0 found healthy after a fault was found is the fault healing (a rotated key, a lifted
    // rate limit), not the incident's cause: the timeline has it, the cause stays.
    let cause_known = incidents::find(m, Runbook::CircuitBreakerOpen)
        .is_some_and(|incident| incident.diagnosis.is_some());
    if d.class != ProbeClass::Healthy || !cause_known {
        incidents::set_diagnosis(
            step,
            m,
            Runbook::CircuitBreakerOpen,
            format!("{found}; {}", d.class.advice()),
        );
    }
    // An auth failure pages level 2 through the escalation, unless level 2 was told already;
    // anything else tells whoever knows of the incident, unless they are told in this very step.
    let level_two = step
        .spec
        .notify
        .escalation
        .iter()
        .map(|l| l.level)
        .filter(|l| *l >= 2)
        .min();
    if let Some(incident) = incidents::find(m, Runbook::CircuitBreakerOpen)
        && incident.notified_level > 0
        && !(d.class == ProbeClass::AuthFailure
            && level_two.is_some_and(|l| l > incident.notified_level))
        && !step
            .actions
            .iter()
            .any(|a| matches!(a, Action::Notify(n) if n.incident_id == incident.id))
    {
        let notification = incidents::diagnosed(incident, format!("{found}; {}", d.class.advice()));
        step.actions.push(Action::Notify(notification));
    }
}

/// mem0 rate-limits: hold the canary at the reduced rate (again, if it was ramping back).
fn shed(step: &mut Step, m: &mut PolicyMemory, d: &BreakerDiagnosis) {
    let canary = &step.spec.canary;
    let reduced = canary.reduced_rate.min(canary.sample_rate);
    if m.breaker
        .rate_limit_shed
        .as_ref()
        .is_some_and(|s| s.canary_rate <= reduced)
    {
        return;
    }
    let from = m
        .breaker
        .rate_limit_shed
        .as_ref()
        .map_or(canary.sample_rate, |s| s.canary_rate);
    let since = m
        .breaker
        .rate_limit_shed
        .as_ref()
        .map_or(step.now, |s| s.since);
    m.breaker.rate_limit_shed = Some(RateLimitShed {
        since,
        canary_rate: reduced,
        recovering: WindowState::default(),
    });
    let reason = format!(
        "mem0 rate-limits the application ({}): CANARY_SAMPLE_RATE {} → {} until mem0 write success is back at {}% or more",
        d.detail,
        format_rate(from),
        format_rate(reduced),
        super::num(MEM0_WRITE_ALERT_BELOW_PERCENT)
    );
    step.changes.push(Change::Transition {
        subject: Subject::Breaker,
        from: format_rate(from),
        to: format_rate(reduced),
        reason: reason.clone(),
    });
    incidents::note(
        step,
        m,
        Runbook::CircuitBreakerOpen,
        format!("Traffic reduced to {}: {reason}", format_rate(reduced)),
    );
}

/// Once writes succeed again, step the canary back up, one step per `canary.rampInterval` of
/// success, to its baseline.
fn ramp(step: &mut Step, m: &mut PolicyMemory) {
    let may_relax = step.may_relax(m);
    let Some(shed) = m.breaker.rate_limit_shed.as_mut() else {
        return;
    };
    let canary = &step.spec.canary;
    let interval = canary.ramp_interval;
    let sample = match step.signals.mem0_write_success_percent {
        Some(v) if v >= MEM0_WRITE_ALERT_BELOW_PERCENT => Sample::Holds(Some(v)),
        Some(_) => Sample::Broken,
        None => Sample::Unknown,
    };
    feed(&mut shed.recovering, step.now, sample, OnUnknown::Hold);
    if !holds_for(&shed.recovering, interval) || !may_relax {
        return;
    }
    let from = shed.canary_rate;
    let to = (from + canary.ramp_step).min(canary.sample_rate);
    let success = step
        .signals
        .mem0_write_success_percent
        .map(super::num)
        .unwrap_or_default();
    let reason = format!(
        "mem0 write success {success}% at or above {}% for {interval}",
        super::num(MEM0_WRITE_ALERT_BELOW_PERCENT)
    );
    let done = to >= canary.sample_rate;
    if done {
        m.breaker.rate_limit_shed = None;
    } else {
        shed.canary_rate = to;
        shed.recovering = WindowState::default();
    }
    step.changes.push(Change::Transition {
        subject: Subject::Ramp,
        from: format_rate(from),
        to: format_rate(to),
        reason: format!("after mem0's rate limiting: {reason}"),
    });
    let what = if done {
        format!(
            "Canary back at its baseline {} after mem0's rate limiting",
            format_rate(to)
        )
    } else {
        format!("Canary ramped to {}: {reason}", format_rate(to))
    };
    incidents::note(step, m, Runbook::CircuitBreakerOpen, what);
    step.relaxed(m);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_probe_is_due_only_while_open_once_per_interval_and_after_retry_after() {
        let minute = StdDuration::from_secs(60);
        let now = at("2026-12-02T03:10:00Z");
        let open = Some(BreakerState::Open);
        assert!(probe_due(minute, None, open, now));
        assert!(probe_due(minute, None, Some(BreakerState::HalfOpen), now));
        assert!(!probe_due(minute, None, Some(BreakerState::Closed), now));
        assert!(!probe_due(minute, None, None, now));
        let recent = at("2026-12-02T03:09:30Z");
        assert!(!probe_due(minute, Some((recent, None)), open, now));
        let old = at("2026-12-02T03:09:00Z");
        assert!(probe_due(minute, Some((old, None)), open, now));
        let later = at("2026-12-02T03:12:00Z");
        assert!(!probe_due(minute, Some((old, Some(later))), open, now));
        assert!(probe_due(minute, Some((old, Some(later))), open, later));
    }
}
