//! Incident #1, circuit breaker open: alert as soon as it opens; the breaker recovers on its own;
//! open longer than `breaker.maxOpenDuration` ⇒ MEM0_READS_ENABLED=false and
//! MEM0_SHADOW_MODE=false until the breaker has been closed for `canary.rampInterval`.
//!
//! An outage starts at the first open (or half-open) reading and ends once the breaker has been
//! closed for `canary.rampInterval`, so a breaker that flickers closed for a moment is still the
//! same outage (and the same incident). Its open clock, which `maxOpenDuration` and
//! `rollback.breakerOpenFor` compare against, counts only the time the breaker is seen open: the
//! runbook's criterion is "Circuit breaker open for >4 hours". A closed reading stops the clock,
//! and a reopening starts a new one, unless it reopens within `breaker.bridgeClosedGaps`, when the
//! clock goes on (the closed gap not counted). The mem0 write success rate below
//! [`MEM0_WRITE_ALERT_BELOW_PERCENT`] is part of the same incident (the runbook's first symptom).

use super::incidents;
use super::signals::num;
use super::window::{OnUnknown, Sample, elapsed, feed, holds_for};
use super::{Change, Step};
use crate::api::Runbook;
use crate::api::{BreakerState, PolicyMemory, Reason, Subject, WindowState};

/// The runbook's symptom "mem0 write success rate drops below 99%".
pub const MEM0_WRITE_ALERT_BELOW_PERCENT: f64 = 99.0;

/// Track the outage and its open clock from the breaker readings.
pub(crate) fn observe(step: &mut Step, m: &mut PolicyMemory) {
    let open = step
        .signals
        .breaker_state
        .map(|s| s != BreakerState::Closed);
    let now = step.now;
    let bridge = step.spec.breaker.bridge_closed_gaps;
    let b = &mut m.breaker;
    if b.outage_since.is_none() {
        if open == Some(true) {
            b.outage_since = Some(now);
            b.open = WindowState::default();
            b.closed = WindowState::default();
            b.closed_since = None;
            feed(&mut b.open, now, Sample::Holds(None), OnUnknown::Hold);
        }
        return;
    }
    // The open clock: open readings fill it; a closed reading stops it, for good once the gap is
    // longer than the bridge; unknown readings hold it.
    match open {
        Some(true) => {
            b.closed_since = None;
            feed(&mut b.open, now, Sample::Holds(None), OnUnknown::Hold);
        }
        Some(false) => {
            let since = *b.closed_since.get_or_insert(now);
            if bridge.is_zero() || elapsed(now, since) > bridge.as_std() {
                b.open = WindowState::default();
            } else {
                feed(&mut b.open, now, Sample::Unknown, OnUnknown::Hold);
            }
        }
        None => feed(&mut b.open, now, Sample::Unknown, OnUnknown::Hold),
    }
    let closed = match open {
        Some(false) => Sample::Holds(None),
        Some(true) => Sample::Broken,
        None => Sample::Unknown,
    };
    feed(&mut b.closed, now, closed, OnUnknown::Hold);
    if holds_for(&b.closed, step.spec.canary.ramp_interval) {
        b.outage_since = None;
        b.open = WindowState::default();
        b.closed = WindowState::default();
        b.closed_since = None;
    }
}

/// How long the breaker has been open in the current outage's clock.
pub(crate) fn open_for(m: &PolicyMemory) -> crate::api::Duration {
    m.breaker.open.held_for
}

/// Whether the open clock is running (the breaker was last seen open, or its gap is bridged).
pub(crate) fn clock_running(m: &PolicyMemory) -> bool {
    m.breaker.outage_since.is_some() && !m.breaker.open.is_idle()
}

/// Alert, mitigate, end the mitigation, and keep the incident.
pub(crate) fn step(step: &mut Step, m: &mut PolicyMemory) {
    let spec = step.spec;
    let name = &spec.breaker.name;
    let max_open = step.spec.breaker.max_open_duration;
    let interval = step.spec.canary.ramp_interval;
    if m.breaker.outage_since.is_some() && !m.breaker.alerted {
        m.breaker.alerted = true;
        let state = step
            .signals
            .breaker_state
            .map_or("open", BreakerState::as_str);
        step.changes.push(Change::Alert {
            subject: Subject::Breaker,
            code: Reason::BreakerOpened,
            warning: true,
            message: format!(
                "circuit breaker {name} is {state}: mem0 calls fall back (degraded memory persistence); it recovers on its own"
            ),
        });
    }
    if m.breaker.outage_since.is_none() && m.breaker.alerted {
        m.breaker.alerted = false;
        step.changes.push(Change::Transition {
            subject: Subject::Breaker,
            from: "open".into(),
            to: "closed".into(),
            reason: format!("circuit breaker {name} closed for {interval}"),
        });
        incidents::note(
            step,
            m,
            Runbook::CircuitBreakerOpen,
            format!("Breaker closed for {interval}"),
        );
    }

    if clock_running(m)
        && m.breaker.mitigated_since.is_none()
        && holds_for(&m.breaker.open, max_open)
    {
        let reason = format!(
            "circuit breaker {name} open for {} (breaker.maxOpenDuration {max_open})",
            super::signals::span(open_for(m))
        );
        m.breaker.mitigated_since = Some(step.now);
        m.breaker.mitigation_reason = Some(reason.clone());
        step.changes.push(Change::Transition {
            subject: Subject::Breaker,
            from: "open".into(),
            to: "mem0-off".into(),
            reason: format!("{reason}: MEM0_READS_ENABLED=false, MEM0_SHADOW_MODE=false"),
        });
        incidents::note(
            step,
            m,
            Runbook::CircuitBreakerOpen,
            format!("mem0 reads and shadow writes switched off: {reason}"),
        );
    }
    if m.breaker.outage_since.is_none() && m.breaker.mitigated_since.is_some() && step.may_relax(m)
    {
        m.breaker.mitigated_since = None;
        m.breaker.mitigation_reason = None;
        step.changes.push(Change::Transition {
            subject: Subject::Breaker,
            from: "mem0-off".into(),
            to: "closed".into(),
            reason: format!("circuit breaker {name} closed for {interval}: mem0 reads and shadow writes back to the spec"),
        });
        incidents::note(
            step,
            m,
            Runbook::CircuitBreakerOpen,
            "mem0 reads and shadow writes back to the spec",
        );
        step.relaxed(m);
    }

    let low_writes = step
        .signals
        .mem0_write_success_percent
        .map(|v| v < MEM0_WRITE_ALERT_BELOW_PERCENT);
    let open = m.breaker.outage_since.is_some();
    let trouble = match (open, low_writes) {
        (true, _) | (_, Some(true)) => Some(true),
        (false, Some(false)) => Some(false),
        // No outage is on record; an unknown write rate alone is no reason to keep the incident.
        (false, None) if step.signals.breaker_state.is_some() => Some(false),
        (false, None) => None,
    };
    let success = step.signals.mem0_write_success_percent;
    let trigger = || {
        if open {
            format!("circuit breaker {name} open")
        } else {
            format!(
                "mem0 write success {}% below {}%",
                success.map(num).unwrap_or_default(),
                num(MEM0_WRITE_ALERT_BELOW_PERCENT)
            )
        }
    };
    let mitigated = m.breaker.mitigated_since.is_some() || m.breaker.rate_limit_shed.is_some();
    incidents::track(
        step,
        m,
        Runbook::CircuitBreakerOpen,
        trouble,
        trigger,
        !mitigated,
    );
}
