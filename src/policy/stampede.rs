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

use super::clinics;
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
    let service = match (low_hits, slow) {
        (Some(true), Some(true)) => Some(true),
        (Some(false), _) | (_, Some(false)) => Some(false),
        _ => None,
    };
    // A stampede confined to hot clinics holds whatever the service's averages say.
    step.clinics = step
        .signals
        .clinics
        .and_then(|b| clinics::view(step.spec, b));
    let confined = step.clinics.as_ref().map(|v| v.confined);
    let sample = match (service, confined) {
        (Some(true), _) | (_, Some(true)) => Sample::Holds(hit),
        (Some(false), _) => Sample::Broken,
        _ => Sample::Unknown,
    };
    step.stampede_sample = sample;
    feed(&mut m.windows.stampede, step.now, sample, OnUnknown::Hold);
}

/// Ask for warming when `trigger` is among `warming.triggers`.
pub(crate) fn warm(step: &mut Step, trigger: WarmTrigger, reason: &str) {
    warm_clinics(step, trigger, reason, Vec::new());
}

/// Ask for warming, the clinics seen missing first.
fn warm_clinics(step: &mut Step, trigger: WarmTrigger, reason: &str, clinic_ids: Vec<i64>) {
    if step.spec.warming.triggers.contains(&trigger) {
        step.actions.push(Action::WarmCache {
            trigger,
            reason: reason.to_owned(),
            clinic_ids,
        });
    }
}

/// The clinics this observation saw missing.
fn missing(step: &Step) -> Vec<i64> {
    step.clinics
        .as_ref()
        .map(|v| v.missing_ids.clone())
        .unwrap_or_default()
}

/// Whether the service's own signals show the stampede now (not only the clinics).
fn service_shows_it(step: &Step) -> bool {
    let s = &step.spec.stampede;
    step.signals
        .cache_hit_rate_percent
        .is_some_and(|h| h < s.hit_rate_below_percent)
        && step
            .signals
            .p50_latency_ms
            .is_some_and(|p| p > s.p50_latency_above_ms)
}

/// Start, ramp and end the stampede response.
pub(crate) fn step(step: &mut Step, m: &mut PolicyMemory) {
    let spec = step.spec;
    let cold_start = step.cold_start.clone();
    if let Some(why) = &cold_start {
        let ids = missing(step);
        warm_clinics(
            step,
            WarmTrigger::ColdStart,
            &format!("Redis cold start: {why}"),
            ids,
        );
    }
    let cold_start = cold_start.filter(|_| spec.stampede.cold_start);

    let Some(state) = m.stampede.as_mut() else {
        let confined_view = step
            .clinics
            .clone()
            .filter(|v| v.confined && !service_shows_it(step));
        if holds_for(&m.windows.stampede, spec.stampede.for_duration)
            && let Some(view) = confined_view
        {
            let reason = clinics::confined_reason(spec, &view, step.signals.cache_hit_rate_percent);
            activate(step, m, WarmTrigger::Stampede, reason);
        } else if holds_for(&m.windows.stampede, spec.stampede.for_duration) {
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
        diagnose(step, m);
        return;
    }

    feed_recovery(step, state);
    diagnose(step, m);

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

/// Renew the stampede's source (the clinics and likely causes) and the incident's findings.
fn diagnose(step: &mut Step, m: &mut PolicyMemory) {
    let Some(state) = m.stampede.as_ref() else {
        return;
    };
    let before = state.source.clone();
    let mut source = clinics::source(step, m, state.started_at, step.clinics.as_ref());
    // The clinics are named as at the stampede's worst (the largest share of lookups on cold
    // clinics): while they recover, or when nothing was read, the report still names what it was.
    let milder = step.clinics.as_ref().is_none_or(|v| {
        v.cold_share_percent < before.as_ref().map_or(0.0, |b| b.cold_traffic_percent)
    });
    if milder
        && let Some(before) = &before
        && (before.cold_clinics > 0 || step.clinics.is_none())
    {
        source = crate::api::StampedeSource {
            likely_causes: source.likely_causes,
            at: before.at,
            ..before.clone()
        };
    }
    if before.as_ref() == Some(&source) {
        return;
    }
    let lines = clinics::lines(&source);
    if let Some(state) = m.stampede.as_mut() {
        state.source = Some(source);
    }
    incidents::set_findings(step, m, Runbook::CacheStampede, lines);
}

/// Feed this observation into the recovery and all-clear windows.
fn feed_recovery(step: &Step, state: &mut StampedeState) {
    // Hot clinics still missing keep the ramp from starting, whatever the service's average.
    let confined = step.clinics.as_ref().is_some_and(|v| v.confined);
    let recovered = match step.signals.cache_hit_rate_percent {
        Some(_) if confined => Sample::Broken,
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
        let ids = missing(step);
        warm_clinics(step, WarmTrigger::Stampede, &reason, ids);
    }
    let source = clinics::source(step, m, step.now, step.clinics.as_ref());
    let findings = clinics::lines(&source);
    // The source, said once in its own Event, when there is more to say than the trigger: the
    // clinics, or a likely cause of a detected stampede.
    let worth_saying = step.clinics.is_some()
        || (trigger == WarmTrigger::Stampede && !source.likely_causes.is_empty());
    if worth_saying {
        step.changes.push(Change::Alert {
            subject: Subject::Stampede,
            code: if source.confined {
                crate::api::Reason::HotClinicStampede
            } else {
                crate::api::Reason::StampedeDetected
            },
            warning: true,
            message: format!("stampede source: {}", findings.join("; ")),
        });
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
        source: Some(source),
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
    incidents::open_with_findings(step, m, Runbook::CacheStampede, &reason, findings.clone());
    for finding in findings {
        incidents::note(
            step,
            m,
            Runbook::CacheStampede,
            format!("Diagnosis: {finding}"),
        );
    }
    let ids = missing(step);
    let warmed = match (spec.warming.triggers.contains(&trigger), ids.is_empty()) {
        (false, _) => String::new(),
        (true, true) => "cache warming requested; ".to_owned(),
        (true, false) => format!(
            "cache warming requested, the missing clinics first ({}); ",
            ids.iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    incidents::note(
        step,
        m,
        Runbook::CacheStampede,
        format!("{warmed}serving stale, TTL lengthened, canary reduced"),
    );
}
