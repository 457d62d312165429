//! Properties of `decide` over generated signal histories: nothing happens without a breach
//! sustained for its window; the effective config is always baseline ⊕ mitigations; `decide` is
//! deterministic and resumes from serialized memory; every mitigation ends once its exit
//! condition holds; no observation, however odd, panics; oscillating signals cause no churn.

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use serde_json::json;
use tierguard::api::Subject;
use tierguard::api::{BreakerState, MemoryTierSpec, Observation, Phase, PolicyMemory};
use tierguard::policy::{
    Action, AppliedConfig, Change, DecideContext, Decision, decide, effective,
};

fn spec(patch: serde_json::Value) -> MemoryTierSpec {
    let mut doc = json!({
        "apiVersion": "tierguard.dev/v1alpha1",
        "kind": "MemoryTier",
        "metadata": {"name": "t"},
        "spec": {"target": {"configMapName": "flags"}, "rollback": {"errorRateBaselinePercent": 0.5}},
    });
    if let (Some(spec), serde_json::Value::Object(patch)) = (doc["spec"].as_object_mut(), patch) {
        for (k, v) in patch {
            spec.insert(k, v);
        }
    }
    tierguard::api::validate::validate_document(&doc)
        .expect("valid test spec")
        .spec
}

/// The runbook defaults (with a fixed error-rate baseline, so a reference can check it).
fn defaults() -> MemoryTierSpec {
    spec(json!({}))
}

/// A drill: every window in seconds.
fn drill() -> MemoryTierSpec {
    spec(json!({
        "canary": {"rampInterval": "5s"},
        "breaker": {"maxOpenDuration": "30s"},
        "rollback": {
            "errorRateBaselinePercent": 0.5,
            "p50LatencyFor": "20s", "errorRateFor": "10s", "mem0WriteSuccessFor": "30s",
            "breakerOpenFor": "40s", "phaseHold": "10s",
        },
        "stampede": {"for": "5s"},
        "redis": {
            "memoryLevels": {"warningFor": "5s", "criticalFor": "1s"},
            "evictions": {"rateWindow": "10s", "for": "10s"},
            "remediation": {"cooldown": "20s"},
        },
        "notify": {"escalation": [{"level": 1, "after": "0s"}, {"level": 2, "after": "15s"}, {"level": 3, "after": "30s"}]},
    }))
}

fn start() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

/// Signal values near every threshold, and unknown.
#[derive(Clone, Debug)]
struct Values {
    p50: Option<f64>,
    error: Option<f64>,
    hit: Option<f64>,
    mem0: Option<f64>,
    breaker: Option<BreakerState>,
    used: Option<f64>,
    evictions_per_tick: u64,
}

fn values() -> impl Strategy<Value = Values> {
    (
        prop::sample::select(vec![
            None,
            Some(300.0),
            Some(600.0),
            Some(990.0),
            Some(1010.0),
            Some(1500.0),
            Some(1900.0),
        ]),
        prop::sample::select(vec![None, Some(0.5), Some(2.4), Some(2.6), Some(5.0)]),
        prop::sample::select(vec![
            None,
            Some(85.0),
            Some(91.0),
            Some(94.0),
            Some(96.0),
            Some(99.0),
        ]),
        prop::sample::select(vec![
            None,
            Some(90.0),
            Some(94.0),
            Some(96.0),
            Some(98.9),
            Some(99.5),
        ]),
        prop::sample::select(vec![
            None,
            Some(BreakerState::Closed),
            Some(BreakerState::Closed),
            Some(BreakerState::Open),
            Some(BreakerState::HalfOpen),
        ]),
        prop::sample::select(vec![
            None,
            Some(40.0),
            Some(69.0),
            Some(71.0),
            Some(79.0),
            Some(81.0),
            Some(89.0),
            Some(91.0),
        ]),
        prop::sample::select(vec![0u64, 0, 1, 5, 40]),
    )
        .prop_map(
            |(p50, error, hit, mem0, breaker, used, evictions_per_tick)| Values {
                p50,
                error,
                hit,
                mem0,
                breaker,
                used,
                evictions_per_tick,
            },
        )
}

/// A stretch of time with steady values: `ticks` steps of `dt_ms` each.
#[derive(Clone, Debug)]
struct Segment {
    ticks: u32,
    dt_ms: u64,
    values: Values,
}

fn segments(max_dt_ms: u64) -> impl Strategy<Value = Vec<Segment>> {
    prop::collection::vec(
        (1u32..40, 500..max_dt_ms, values()).prop_map(|(ticks, dt_ms, values)| Segment {
            ticks,
            dt_ms,
            values,
        }),
        1..25,
    )
}

/// One step of a history: the time and the observation.
#[derive(Clone, Debug)]
struct Sample {
    at: Timestamp,
    obs: Observation,
}

fn expand(segs: &[Segment]) -> Vec<Sample> {
    let mut at = start();
    let mut evicted = 0u64;
    let mut out = Vec::new();
    for seg in segs {
        for _ in 0..seg.ticks {
            at += SignedDuration::from_millis(seg.dt_ms as i64);
            evicted += seg.values.evictions_per_tick;
            let v = &seg.values;
            out.push(Sample {
                at,
                obs: Observation {
                    p50_latency_ms: v.p50,
                    error_rate_percent: v.error,
                    cache_hit_rate_percent: v.hit,
                    mem0_write_success_percent: v.mem0,
                    breaker_state: v.breaker,
                    redis_used_memory_percent: v.used,
                    redis_evicted_keys: Some(evicted),
                    redis_run_id: Some("steady".into()),
                    redis_uptime_seconds: None,
                    ..Observation::default()
                },
            });
        }
    }
    out
}

fn ctx(resume: Option<&str>) -> DecideContext {
    DecideContext {
        generation: Some(1),
        resume_token: resume.map(str::to_owned),
        applied: AppliedConfig::Unknown,
        last_audit: None,
    }
}

/// Every signal well within the runbooks' bounds, with Redis's eviction counter at `evicted`.
fn healthy_observation(evicted: Option<u64>) -> Observation {
    Observation {
        p50_latency_ms: Some(300.0),
        error_rate_percent: Some(0.5),
        cache_hit_rate_percent: Some(97.0),
        mem0_write_success_percent: Some(99.9),
        breaker_state: Some(BreakerState::Closed),
        redis_used_memory_percent: Some(40.0),
        redis_evicted_keys: evicted,
        redis_run_id: Some("steady".into()),
        ..Observation::default()
    }
}

/// A new tier found healthy at its first tick is announced by one Event, its first render's: the
/// phase it starts in is in status (a fleet of new tiers writes one Event each, not two).
#[test]
fn a_new_healthy_tier_is_announced_by_its_first_render_alone() {
    let runbook_defaults = defaults();
    let healthy = healthy_observation(None);
    let now = "2026-12-01T03:00:00Z".parse().unwrap();
    let first = decide(
        &runbook_defaults,
        &PolicyMemory::default(),
        &healthy,
        now,
        &ctx(None),
    );
    assert_eq!(first.phase, Phase::Healthy);
    let events: Vec<_> = first
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Event { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        events,
        [tierguard::api::Reason::ConfigRendered],
        "{:?}",
        first.actions
    );
    // Any other phase change is still an Event.
    let spec_paused = spec(json!({"mode": "Paused"}));
    let paused = decide(
        &spec_paused,
        &PolicyMemory::default(),
        &healthy,
        now,
        &ctx(None),
    );
    assert!(
        paused.actions.iter().any(|a| matches!(a, Action::Event { reason, .. } if *reason == tierguard::api::Reason::PhaseChanged)),
        "{:?}",
        paused.actions
    );
}

/// Run a history; return every decision.
fn run(spec: &MemoryTierSpec, history: &[Sample]) -> Vec<Decision> {
    let mut memory = PolicyMemory::default();
    let mut out = Vec::with_capacity(history.len());
    for s in history {
        let d = decide(spec, &memory, &s.obs, s.at, &ctx(None));
        memory = d.memory.clone();
        out.push(d);
    }
    out
}

fn secs(a: Timestamp, b: Timestamp) -> f64 {
    a.duration_since(b).as_secs_f64()
}

/// Reference check: the criterion `breach` (Some(true) breach, Some(false) fine, None unknown)
/// held at every known sample of a run ending at `i`, over counted time of at least `window`
/// (an interval counts when the sample ending it is a known breach and the one starting it lies
/// inside the run).
fn sustained(
    history: &[Sample],
    i: usize,
    window: f64,
    breach: impl Fn(&Observation) -> Option<bool>,
) -> bool {
    let mut counted = 0.0;
    let mut k = i;
    loop {
        match breach(&history[k].obs) {
            Some(false) => return false,
            Some(true) if k > 0 => {
                // Does the run extend to k - 1?
                match breach(&history[k - 1].obs) {
                    Some(false) => return counted >= window,
                    _ => counted += secs(history[k].at, history[k - 1].at).max(0.0),
                }
            }
            Some(true) => return counted >= window,
            None if k > 0 => {
                if breach(&history[k - 1].obs) == Some(false) {
                    return counted >= window;
                }
            }
            None => return counted >= window,
        }
        if counted >= window {
            return true;
        }
        k -= 1;
    }
}

fn p50_breach(spec: &MemoryTierSpec) -> impl Fn(&Observation) -> Option<bool> + '_ {
    |o| {
        o.p50_latency_ms
            .filter(|v| v.is_finite())
            .map(|v| v > spec.rollback.p50_latency_ms)
    }
}

fn stampede_breach(spec: &MemoryTierSpec) -> impl Fn(&Observation) -> Option<bool> + '_ {
    move |o| {
        let s = &spec.stampede;
        let low = o
            .cache_hit_rate_percent
            .map(|h| h < s.hit_rate_below_percent);
        let slow = o.p50_latency_ms.map(|p| p > s.p50_latency_above_ms);
        match (low, slow) {
            (Some(true), Some(true)) => Some(true),
            (Some(false), _) | (_, Some(false)) => Some(false),
            _ => None,
        }
    }
}

fn started(d: &Decision, subject: Subject) -> bool {
    d.changes.iter().any(|c| {
        matches!(c, Change::Transition { subject: s, from, .. } if *s == subject && (from == "none" || from == "open") )
    })
}

fn check_sustained(
    spec: &MemoryTierSpec,
    history: &[Sample],
    decisions: &[Decision],
) -> Result<(), TestCaseError> {
    let r = &spec.rollback;
    for (i, d) in decisions.iter().enumerate() {
        if started(d, Subject::Rollback) {
            let rb = d.memory.rollback.as_ref().expect("a rollback started");
            let ok = match rb.trigger.as_str() {
                "p50-latency" => sustained(
                    history,
                    i,
                    r.p50_latency_for.as_secs_f64(),
                    p50_breach(spec),
                ),
                "error-rate" => sustained(history, i, r.error_rate_for.as_secs_f64(), |o| {
                    o.error_rate_percent
                        .map(|v| v > 0.5 + r.error_rate_increase_points)
                }),
                "mem0-write-success" => {
                    sustained(history, i, r.mem0_write_success_for.as_secs_f64(), |o| {
                        o.mem0_write_success_percent
                            .map(|v| v < r.mem0_write_success_below_percent)
                    })
                }
                "breaker-open" => {
                    let since = d.memory.breaker.outage_since.expect("an outage");
                    secs(history[i].at, since) >= r.breaker_open_for.as_secs_f64()
                }
                other => return Err(TestCaseError::fail(format!("unknown trigger {other}"))),
            };
            prop_assert!(
                ok,
                "rollback at step {i} ({}) without a sustained breach",
                rb.trigger
            );
        }
        if d.changes.iter().any(
            |c| matches!(c, Change::Transition { subject: Subject::Stampede, from, .. } if from == "none"),
        ) {
            prop_assert!(
                sustained(
                    history,
                    i,
                    spec.stampede.for_duration.as_secs_f64(),
                    stampede_breach(spec)
                ),
                "stampede response at step {i} without a sustained stampede"
            );
        }
        if d.changes.iter().any(
            |c| matches!(c, Change::Transition { subject: Subject::Breaker, to, .. } if to == "mem0-off"),
        ) {
            let since = d.memory.breaker.outage_since.expect("an outage");
            prop_assert!(
                secs(history[i].at, since) >= spec.breaker.max_open_duration.as_secs_f64()
            );
        }
        for action in &d.actions {
            if matches!(action, Action::RemediateRedis { .. }) {
                prop_assert_eq!(d.memory.redis.level, tierguard::api::MemoryLevel::Critical);
            }
        }
    }
    Ok(())
}

fn check_effective(spec: &MemoryTierSpec, d: &Decision) -> Result<(), TestCaseError> {
    let (config, overridden) = effective::render(spec, &d.mitigations);
    prop_assert_eq!(&config, &d.effective.config);
    prop_assert_eq!(&overridden, &d.effective.overridden_by);
    let hash = effective::hash(&config);
    prop_assert_eq!(d.effective.hash.as_deref(), Some(hash.as_str()));
    for action in &d.actions {
        if let Action::RenderConfig {
            config: rendered, ..
        } = action
        {
            prop_assert_eq!(rendered, &config);
        }
    }
    Ok(())
}

/// Every change that has an Event (all but a new tier's first phase, Healthy) is reported by it
/// with the same words; every action says why.
fn check_explained(d: &Decision) -> Result<(), TestCaseError> {
    let events: Vec<&str> = d
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Event { message, .. } => Some(message.trim_start_matches("DryRun: ")),
            _ => None,
        })
        .collect();
    for change in d.changes.iter().filter(|c| c.event().is_some()) {
        let text = change.describe();
        prop_assert!(events.contains(&text.as_str()), "no Event for {}", text);
    }
    for action in &d.actions {
        prop_assert!(
            !action.reason().trim().is_empty(),
            "{:?} without a reason",
            action
        );
    }
    Ok(())
}

fn config_changes(decisions: &[Decision]) -> Vec<Timestamp> {
    decisions
        .iter()
        .skip(1)
        .filter(|d| {
            d.actions
                .iter()
                .any(|a| matches!(a, Action::RenderConfig { .. }))
        })
        .map(|d| d.memory.last_tick.unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn no_action_without_a_breach_sustained_for_its_window(segs in segments(90_000), drill_spec in any::<bool>()) {
        let spec = if drill_spec { drill() } else { defaults() };
        let history = expand(&segs);
        let decisions = run(&spec, &history);
        check_sustained(&spec, &history, &decisions)?;
        for d in &decisions {
            check_explained(d)?;
        }
    }

    #[test]
    fn healthy_signals_change_nothing(ticks in 1usize..300, dt_ms in 100u64..120_000) {
        let spec = defaults();
        let history = expand(&[Segment {
            ticks: ticks as u32,
            dt_ms,
            values: Values {
                p50: Some(300.0), error: Some(0.5), hit: Some(97.0), mem0: Some(99.9),
                breaker: Some(BreakerState::Closed), used: Some(40.0), evictions_per_tick: 0,
            },
        }]);
        let decisions = run(&spec, &history);
        let actions: usize = decisions.iter().map(|d| d.actions.iter().filter(|a| !matches!(a, Action::Event { .. })).count()).sum();
        prop_assert_eq!(actions, 1, "only the first render");
        prop_assert!(decisions.iter().all(|d| d.phase == Phase::Healthy && d.mitigations.is_empty()));
    }

    #[test]
    fn effective_config_is_always_baseline_with_the_mitigations(segs in segments(90_000), drill_spec in any::<bool>()) {
        let spec = if drill_spec { drill() } else { defaults() };
        for d in run(&spec, &expand(&segs)) {
            check_effective(&spec, &d)?;
        }
    }

    #[test]
    fn every_mitigation_ends_once_its_exit_condition_holds(segs in segments(90_000), drill_spec in any::<bool>(), tick_share in 1u64..=12) {
        let spec = if drill_spec { drill() } else { defaults() };
        // Ticks from a twelfth of a ramp interval up to a whole one.
        let dt_ms = spec.canary.ramp_interval.as_millis_i64() as u64 * tick_share / 12;
        let history = expand(&segs);
        let decisions = run(&spec, &history);
        let mut memory = decisions.last().unwrap().memory.clone();
        let mut at = history.last().unwrap().at;
        let healthy = healthy_observation;
        let evicted = memory.redis.eviction_samples.last().map(|s| s.raw);
        // Healthy for 36 ramp intervals (three hours with the defaults): every exit window, and
        // the pace of one loosening per ramp interval, fit in far less.
        let steps = (36 * spec.canary.ramp_interval.as_millis_i64() as u64 / dt_ms) as usize + 1;
        let mut last = None;
        for _ in 0..steps {
            at += SignedDuration::from_millis(dt_ms as i64);
            let d = decide(&spec, &memory, &healthy(evicted), at, &ctx(None));
            memory = d.memory.clone();
            last = Some(d);
        }
        let d = last.take().unwrap();
        // Only a verified rollback may remain: it waits for a human.
        for m in &d.mitigations {
            prop_assert_eq!(m.name.as_str(), "rollback-features", "{:?} still active", m);
        }
        if let Some(rb) = &memory.rollback {
            prop_assert_eq!(rb.phase, tierguard::api::RollbackPhase::Documented);
        }
        prop_assert!(memory.open_incidents.is_empty(), "{:?}", memory.open_incidents);
        // A human resumes: then everything ends.
        for _ in 0..steps {
            at += SignedDuration::from_millis(dt_ms as i64);
            let d = decide(&spec, &memory, &healthy(evicted), at, &ctx(Some("resume-now")));
            memory = d.memory.clone();
            last = Some(d);
        }
        let d = last.unwrap();
        prop_assert!(d.mitigations.is_empty(), "{:?}", d.mitigations);
        prop_assert_eq!(d.phase, Phase::Healthy);
        prop_assert_eq!(d.effective.config, effective::baseline(&spec));
    }

    #[test]
    fn oscillating_signals_cause_no_churn(segs in segments(60_000), drill_spec in any::<bool>()) {
        let spec = if drill_spec { drill() } else { defaults() };
        let history = expand(&segs);
        let decisions = run(&spec, &history);
        // At most one rollback: no human resumes here.
        let rollbacks = decisions.iter().filter(|d| started(d, Subject::Rollback)).count();
        prop_assert!(rollbacks <= 1, "{} rollbacks", rollbacks);
        // The documented bound on effective-config changes in any sliding window of
        // 12 ramp intervals (one hour with the defaults): 2 × (12 + 1) + 7.
        let window = spec.canary.ramp_interval.as_secs_f64() * 12.0;
        let changes = config_changes(&decisions);
        for (i, at) in changes.iter().enumerate() {
            let within = changes[i..].iter().take_while(|t| secs(**t, *at) < window).count();
            prop_assert!(within <= 33, "{} config changes within {}s", within, window);
        }
    }

    #[test]
    fn no_observation_however_odd_panics(
        steps in prop::collection::vec(
            (
                -5_000i64..600_000,
                prop::option::of(any::<f64>()),
                prop::option::of(any::<f64>()),
                prop::option::of(any::<f64>()),
                prop::option::of(any::<f64>()),
                prop::option::of(any::<f64>()),
                prop::option::of(prop_oneof![Just(BreakerState::Closed), Just(BreakerState::Open), Just(BreakerState::HalfOpen)]),
                prop::option::of(any::<u64>()),
                prop::option::of(prop_oneof![Just(String::new()), "[a-f0-9]{1,40}"]),
                prop::option::of(any::<u64>()),
            ),
            1..80,
        ),
        drill_spec in any::<bool>(),
    ) {
        let spec = if drill_spec { drill() } else { defaults() };
        let mut memory = PolicyMemory::default();
        let mut at = start();
        for (dt_ms, p50, error, hit, mem0, used, breaker, evicted, run_id, uptime) in steps {
            // The clock may even go back.
            at += SignedDuration::from_millis(dt_ms);
            let obs = Observation {
                p50_latency_ms: p50,
                p95_latency_ms: p50.map(|v| v * 3.0),
                error_rate_percent: error,
                cache_hit_rate_percent: hit,
                mem0_write_success_percent: mem0,
                breaker_state: breaker,
                redis_used_memory_percent: used,
                redis_evicted_keys: evicted,
                redis_run_id: run_id,
                redis_uptime_seconds: uptime,
                ..Observation::default()
            };
            let d = decide(&spec, &memory, &obs, at, &ctx(Some("x")));
            check_effective(&spec, &d)?;
            check_explained(&d)?;
            // Whatever came in, the memory still round-trips through status JSON.
            let text = serde_json::to_string(&d.memory).expect("memory serializes");
            let back: PolicyMemory = serde_json::from_str(&text).expect("memory deserializes");
            prop_assert_eq!(&back, &d.memory);
            memory = d.memory;
        }
    }
}

proptest! {
    // Each case decides every step twice and round-trips the memory: fewer cases suffice.
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn decide_is_deterministic_and_resumes_from_serialized_memory(segs in segments(60_000)) {
        let spec = drill();
        let history = expand(&segs);
        let direct = run(&spec, &history);
        // A controller that restarts at every step: memory only via status JSON.
        let mut memory = PolicyMemory::default();
        for (i, s) in history.iter().enumerate() {
            let again = decide(&spec, &memory, &s.obs, s.at, &ctx(None));
            let twice = decide(&spec, &memory, &s.obs, s.at, &ctx(None));
            prop_assert_eq!(&again, &twice);
            prop_assert_eq!(&again.actions, &direct[i].actions, "step {}", i);
            prop_assert_eq!(again.phase, direct[i].phase);
            let text = serde_json::to_string(&again.memory).expect("memory serializes");
            memory = serde_json::from_str(&text).expect("memory deserializes");
            prop_assert_eq!(&memory, &again.memory);
        }
    }
}
