//! Incident #2, cache stampede, and cache warming.
//!
//! Detected when the cache hit rate stays below `stampede.hitRateBelowPercent` while P50 stays
//! above `stampede.p50LatencyAboveMs` for `stampede.for`, or at once on a Redis cold start (when
//! `stampede.coldStart`). Response, in the runbook's order: warm the cache first (when the trigger
//! is among `warming.triggers`), serve stale (CACHE_SERVE_STALE=true, CACHE_STALE_TTL=staleTtl),
//! CACHE_TTL → incidentTtl, canary → reducedRate.
//!
//! Recovery: each time the hit rate has stayed above `stampede.recoverAbovePercent` for a whole
//! `canary.rampInterval`, the canary steps up by `canary.rampStep`, until it is back at its
//! baseline. The serve-stale and TTL overlays end once the canary is back and the stampede
//! condition has been absent for `canary.rampInterval`; then the incident resolves. While the
//! stampede lasts, a hit rate that dips again only pauses the ramp; a new cold start warms again
//! and puts the canary back to the reduced rate.

use super::incidents;
use super::signals::num;
use super::window::{OnUnknown, Sample, feed, holds_for, restart};
use super::{Action, Change, Step};
use crate::api::Runbook;
use crate::api::{PolicyMemory, StampedeState, Subject, WarmTrigger, WindowState};

/// Feed the detection window.
pub(crate) fn observe(step: &mut Step, m: &mut PolicyMemory) {
    let s = &step.spec.stampede;
    let hit = step.signals.cache_hit_rate_percent;
    let p50 = step.signals.p50_latency_ms;
    let low_hits = hit.map(|h| h < s.hit_rate_below_percent);
    let slow = p50.map(|p| p > s.p50_latency_above_ms);
    let sample = match (low_hits, slow) {
        (Some(true), Some(true)) => Sample::Holds(hit),
        (Some(false), _) | (_, Some(false)) => Sample::Broken,
        _ => Sample::Unknown,
    };
    step.stampede_sample = sample;
    feed(&mut m.windows.stampede, step.now, sample, OnUnknown::Hold);
}

/// Ask for warming when `trigger` is among `warming.triggers`.
pub(crate) fn warm(step: &mut Step, trigger: WarmTrigger, reason: &str) {
    if step.spec.warming.triggers.contains(&trigger) {
        step.actions.push(Action::WarmCache {
            trigger,
            reason: reason.to_owned(),
        });
    }
}

/// Start, ramp and end the stampede response.
pub(crate) fn step(step: &mut Step, m: &mut PolicyMemory) {
    let spec = step.spec;
    let cold_start = step.cold_start.clone();
    if let Some(why) = &cold_start {
        warm(
            step,
            WarmTrigger::ColdStart,
            &format!("Redis cold start: {why}"),
        );
    }
    let cold_start = cold_start.filter(|_| spec.stampede.cold_start);

    let Some(state) = m.stampede.as_mut() else {
        if holds_for(&m.windows.stampede, spec.stampede.for_duration) {
            let reason = format!(
                "cache hit rate {}% below {}% with P50 latency {} above {} ms for {}",
                step.signals
                    .cache_hit_rate_percent
                    .or(m.windows.stampede.last_value)
                    .map(num)
                    .unwrap_or_else(|| "?".into()),
                num(spec.stampede.hit_rate_below_percent),
                step.signals
                    .p50_latency_ms
                    .map(|v| format!("{} ms", num(v)))
                    .unwrap_or_else(|| "?".into()),
                num(spec.stampede.p50_latency_above_ms),
                spec.stampede.for_duration
            );
            activate(step, m, WarmTrigger::Stampede, reason);
        } else if let Some(why) = cold_start {
            activate(
                step,
                m,
                WarmTrigger::ColdStart,
                format!("Redis cold start: {why}"),
            );
        }
        return;
    };

    let reduced = spec
        .canary
        .reduced_rate
        .min(spec.canary.sample_rate)
        .max(0.0);
    if let Some(why) = cold_start {
        let from = super::effective::format_rate(state.canary_rate);
        state.canary_rate = reduced;
        state.recovering = WindowState::default();
        state.clear = WindowState::default();
        feed_recovery(step, state);
        let reason =
            format!("Redis cold start during the stampede: {why}; canary back to the reduced rate");
        step.changes.push(Change::Transition {
            subject: Subject::Stampede,
            from,
            to: super::effective::format_rate(reduced),
            reason: reason.clone(),
        });
        incidents::note(step, m, Runbook::CacheStampede, reason);
        return;
    }

    feed_recovery(step, state);

    let interval = spec.canary.ramp_interval;
    let baseline = spec.canary.sample_rate;
    let may_relax = step.may_relax(m);
    let Some(state) = m.stampede.as_mut() else {
        return;
    };
    let mut relaxed = false;
    let mut notes = Vec::new();
    if state.canary_rate < baseline && holds_for(&state.recovering, interval) && may_relax {
        let from = state.canary_rate;
        let to = super::rollback::next_rate(from, spec.canary.ramp_step, baseline);
        state.canary_rate = to;
        restart(&mut state.recovering, step.now);
        let reason = format!(
            "cache hit rate above {}% for {}{}",
            num(spec.stampede.recover_above_percent),
            interval,
            if to >= baseline {
                ": canary back at its baseline"
            } else {
                ""
            }
        );
        let (from, to) = (
            super::effective::format_rate(from),
            super::effective::format_rate(to),
        );
        notes.push(format!("Canary ramped {from} → {to}"));
        step.changes.push(Change::Transition {
            subject: Subject::StampedeRamp,
            from,
            to,
            reason,
        });
        relaxed = true;
    }
    let done = state.canary_rate >= baseline && holds_for(&state.clear, interval) && may_relax;
    for note in notes {
        incidents::note(step, m, Runbook::CacheStampede, note);
    }
    if done {
        m.stampede = None;
        let reason = format!("no stampede for {interval} and the canary is back at its baseline");
        step.changes.push(Change::Transition {
            subject: Subject::Stampede,
            from: "active".into(),
            to: "over".into(),
            reason: format!("{reason}: serve-stale and incident TTL dropped"),
        });
        incidents::resolve(step, m, Runbook::CacheStampede, &reason);
        relaxed = true;
    }
    if relaxed {
        step.relaxed(m);
    }
}

/// Feed this observation into the recovery and all-clear windows.
fn feed_recovery(step: &Step, state: &mut StampedeState) {
    let recovered = match step.signals.cache_hit_rate_percent {
        Some(h) if h > step.spec.stampede.recover_above_percent => Sample::Holds(Some(h)),
        Some(_) => Sample::Broken,
        None => Sample::Unknown,
    };
    feed(&mut state.recovering, step.now, recovered, OnUnknown::Hold);
    let clear = match step.stampede_sample {
        Sample::Holds(_) => Sample::Broken,
        Sample::Broken => Sample::Holds(None),
        Sample::Unknown => Sample::Unknown,
    };
    feed(&mut state.clear, step.now, clear, OnUnknown::Hold);
}

fn activate(step: &mut Step, m: &mut PolicyMemory, trigger: WarmTrigger, reason: String) {
    let spec = step.spec;
    if trigger == WarmTrigger::Stampede {
        warm(step, WarmTrigger::Stampede, &reason);
    }
    let rate = spec
        .canary
        .reduced_rate
        .min(spec.canary.sample_rate)
        .max(0.0);
    let mut state = StampedeState {
        started_at: step.now,
        trigger,
        reason: reason.clone(),
        canary_rate: rate,
        recovering: WindowState::default(),
        clear: WindowState::default(),
    };
    // This observation is the recovery windows' first sample.
    feed_recovery(step, &mut state);
    m.stampede = Some(state);
    m.windows.stampede = WindowState::default();
    step.changes.push(Change::Transition {
        subject: Subject::Stampede,
        from: "none".into(),
        to: "active".into(),
        reason: format!(
            "{reason}: serve stale for {}, CACHE_TTL → {}, canary → {}",
            spec.cache.stale_ttl,
            spec.cache.incident_ttl,
            super::effective::format_rate(rate)
        ),
    });
    incidents::open(step, m, Runbook::CacheStampede, &reason);
    let warmed = if spec.warming.triggers.contains(&trigger) {
        "cache warming requested; "
    } else {
        ""
    };
    incidents::note(
        step,
        m,
        Runbook::CacheStampede,
        format!("{warmed}serving stale, TTL lengthened, canary reduced"),
    );
}
