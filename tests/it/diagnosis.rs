//! The diagnosis steps of the stampede and Redis OOM runbooks, through the pure policy (scenarios
//! run by `tierguard simulate`, and `decide` driven against a small model of Redis): where a
//! stampede comes from, the hot-clinic stampede the service's averages hide, the leak alert on
//! keys without TTL, and option B (maxmemory raised within a ceiling, put back after).

use jiff::Timestamp;
use serde_json::{Value, json};
use tierguard::api::{
    AuditOutcome, ConditionType, KeySize, MemoryTier, Observation, PolicyMemory, Reason, Runbook,
    WarmTrigger,
};
use tierguard::policy::{Action, Change, DecideContext, decide};
use tierguard::simulate::{self, EntryKind, Outcome};

fn tier(patch: Value) -> MemoryTier {
    crate::support::tiers::tier("t", "n", patch)
}

/// The service looks healthy throughout: 97% hits, P50 300 ms.
const HEALTHY: &str = "
  p50LatencyMs: 300
  errorRatePercent: 0.5
  cacheHitRatePercent: 97
  mem0WriteSuccessPercent: 99.9
  breakerState: closed
  redisUsedMemoryPercent: 40
  redisEvictedKeys: 0
  redisRunId: 0123456789abcdef0123456789abcdef01234567
  redisUptimeSeconds: 1000
  redisCacheGeneration: '41'";

/// Forty quiet clinics that hit, and `hot` as given (YAML flow entries).
fn clinics(hot: &str) -> String {
    let quiet: Vec<String> = (10..50)
        .map(|id| format!("'{id}': {{hits: 300, misses: 1}}"))
        .collect();
    format!(
        "{{{hot}{}{}}}",
        if hot.is_empty() { "" } else { ", " },
        quiet.join(", ")
    )
}

fn run(patch: Value, duration: &str, timeline: &str) -> Outcome {
    let yaml = format!("tick: 10s\nduration: {duration}\nsignals:{HEALTHY}\ntimeline:\n{timeline}");
    let scenario = simulate::scenario::parse(&yaml)
        .unwrap_or_else(|p| panic!("test scenario invalid: {}: {}", p.path, p.message));
    simulate::run(&tier(patch), &scenario).expect("the scenario runs")
}

fn changes(outcome: &Outcome) -> Vec<(f64, &Change)> {
    outcome
        .entries
        .iter()
        .filter_map(|e| match &e.what {
            EntryKind::Change(c) => Some((e.t, c)),
            _ => None,
        })
        .collect()
}

fn actions(outcome: &Outcome) -> Vec<(f64, &Action)> {
    outcome
        .entries
        .iter()
        .filter_map(|e| match &e.what {
            EntryKind::Action { action, .. } => Some((e.t, action)),
            _ => None,
        })
        .collect()
}

const HOT_CLINICS_COLD: &str = "'5': {hits: 600, misses: 1400}, '8': {hits: 300, misses: 700}";

#[test]
fn a_stampede_confined_to_hot_clinics_is_found_named_and_warmed() {
    // Clinics 5 and 8 carry 3000 of 15040 lookups (~20%) at 30% hits; the service still reads 97%
    // hits and P50 300 ms, so its own signals never show a stampede.
    let timeline = format!(
        "  - {{at: 0s, set: {{clinics: {}}}}}\n  - {{at: 60s, set: {{clinics: {}}}}}\n  - {{at: 200s, set: {{clinics: {}}}}}",
        clinics(""),
        clinics(HOT_CLINICS_COLD),
        clinics("'5': {hits: 1990, misses: 10}, '8': {hits: 995, misses: 5}"),
    );
    let patch = json!({
        "canary": {"rampInterval": "30s"},
        "stampede": {"for": "30s"},
        "warming": {"endpoint": "http://warm.example/admin/cache/warm", "clinicIds": [1, 2]},
    });
    let outcome = run(patch.clone(), "8m", &timeline);
    let all = changes(&outcome);
    let started = all
        .iter()
        .find_map(|(t, c)| match c {
            Change::Transition {
                subject,
                to,
                reason,
                ..
            } if subject.to_string() == "stampede" && to == "active" => Some((*t, reason.clone())),
            _ => None,
        })
        .expect("the hot-clinic stampede is detected");
    // The window holds from the first cold reading (60 s) for stampede.for (30 s).
    assert_eq!(started.0, 90.0, "{all:#?}");
    assert!(
        started.1.contains("clinic_id=5") && started.1.contains("clinic_id=8"),
        "{}",
        started.1
    );
    assert!(
        started.1.contains("confined to hot clinics"),
        "{}",
        started.1
    );
    assert!(
        started.1.contains("service's hit rate is 97%"),
        "{}",
        started.1
    );
    // The source, in its own Event.
    let source = all
        .iter()
        .find_map(|(_, c)| match c {
            Change::Alert { code, message, .. } if *code == Reason::HotClinicStampede => {
                Some(message.clone())
            }
            _ => None,
        })
        .expect("the source alert");
    assert!(source.contains("most misses: clinic_id=5"), "{source}");
    // The missing clinics are warmed first (most misses first), then the configured ones.
    let warm = actions(&outcome)
        .into_iter()
        .find_map(|(t, a)| match a {
            Action::WarmCache {
                trigger,
                clinic_ids,
                ..
            } => Some((t, *trigger, clinic_ids.clone())),
            _ => None,
        })
        .expect("a warm-up");
    assert_eq!(warm, (90.0, WarmTrigger::Stampede, vec![5, 8]));
    // The incident's first notification names them.
    let opened = actions(&outcome)
        .into_iter()
        .find_map(|(_, a)| match a {
            Action::Notify(n) if n.runbook == Runbook::CacheStampede => Some(n.message.clone()),
            _ => None,
        })
        .expect("a notification");
    assert!(
        opened.contains("Diagnosis:") && opened.contains("worst hit rate: clinic_id=5: 30% hits"),
        "{opened}"
    );
    // No ramp while the hot clinics still miss (the service's 97% alone would have ramped).
    let ramps: Vec<f64> = all
        .iter()
        .filter(|(_, c)| matches!(c, Change::Transition { subject, .. } if subject.to_string() == "stampede-ramp"))
        .map(|(t, _)| *t)
        .collect();
    assert!(
        ramps.iter().all(|t| *t >= 230.0),
        "ramped while clinics missed: {ramps:?}"
    );
    assert!(!ramps.is_empty(), "it ramps once they hit again: {all:#?}");
    let resolved = all.iter().any(|(_, c)| {
        matches!(c, Change::Incident { runbook: Runbook::CacheStampede, what, .. } if what.as_str() == "resolved")
    });
    assert!(resolved, "{all:#?}");

    // The same service signals without per-clinic readings: nothing is detected.
    let blind = run(
        json!({"stampede": {"for": "30s", "clinics": {"enabled": false}}}),
        "8m",
        &timeline,
    );
    assert!(
        !changes(&blind).iter().any(|(_, c)| matches!(c, Change::Transition { subject, .. } if subject.to_string() == "stampede")),
        "the service's averages hide it"
    );
}

#[test]
fn status_and_the_condition_name_the_clinics_and_the_generation_change() {
    // The generation key moves at 40 s; the hot clinics go cold at 50 s.
    let timeline = format!(
        "  - {{at: 0s, set: {{clinics: {}}}}}\n  - {{at: 40s, set: {{redisCacheGeneration: '42'}}}}\n  - {{at: 50s, set: {{clinics: {}}}}}",
        clinics(""),
        clinics(HOT_CLINICS_COLD),
    );
    let outcome = run(
        json!({
            "stampede": {"for": "30s"},
            "redis": {"remediation": {"currentGeneration": {"redisKey": "cache:current_generation"}}},
        }),
        "2m",
        &timeline,
    );
    let last = &outcome.last;
    let source = last
        .memory
        .stampede
        .as_ref()
        .and_then(|s| s.source.clone())
        .expect("the stampede's source is kept");
    assert!(source.confined);
    assert_eq!(source.cold_clinics, 2);
    assert_eq!(source.worst_hit_rate[0].clinic, "5");
    assert_eq!(source.most_misses[0].clinic, "5");
    assert_eq!(source.likely_causes.len(), 1, "{source:?}");
    assert!(
        source.likely_causes[0].contains("cache:current_generation moved from 41 to 42"),
        "{source:?}"
    );
    let condition = last
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::CacheStampede)
        .unwrap();
    assert_eq!(condition.reason, Reason::HotClinicStampede);
    assert!(
        condition
            .message
            .contains("likely cause: cache generation change"),
        "{condition:?}"
    );
    let incident = last
        .memory
        .open_incidents
        .iter()
        .find(|i| i.runbook == Runbook::CacheStampede)
        .expect("the open incident");
    assert!(
        incident
            .findings
            .iter()
            .any(|f| f.starts_with("most misses: clinic_id=5")),
        "{incident:?}"
    );
}

#[test]
fn a_growing_count_of_keys_without_ttl_alerts_before_memory_is_critical() {
    // 200 keys without TTL, growing by 2 a second from 60 s: 600 more in 5 minutes.
    let timeline = "  - {at: 0s, set: {redisKeysWithoutTtl: 200}}\n  - {at: 60s, set: {redisKeysWithoutTtlPerSecond: 2}}\n  - {at: 600s, set: {redisKeysWithoutTtlPerSecond: 0}}";
    let outcome = run(
        json!({"redis": {"keysWithoutTtl": {"growth": 500, "window": "10m"}}}),
        "40m",
        timeline,
    );
    let all = changes(&outcome);
    let alert = all
        .iter()
        .find_map(|(t, c)| match c {
            Change::Alert { code, message, .. } if *code == Reason::KeysWithoutTtlGrowing => {
                Some((*t, message.clone()))
            }
            _ => None,
        })
        .expect("the leak alert");
    // 500 more keys 250 s after the growth began.
    assert!((310.0..=330.0).contains(&alert.0), "{alert:?}");
    assert!(alert.1.contains("a leak"), "{}", alert.1);
    let audit = actions(&outcome)
        .into_iter()
        .any(|(t, a)| t == alert.0 && matches!(a, Action::AuditRedis { .. }));
    assert!(audit, "the audit is asked for with the alert");
    let opened = all.iter().any(|(t, c)| {
        *t == alert.0
            && matches!(c, Change::Incident { runbook: Runbook::RedisMemory, what, .. } if what.as_str() == "opened")
    });
    assert!(opened, "{all:#?}");
    // Memory stayed at 40%: no level, no remediation.
    assert!(
        !actions(&outcome)
            .iter()
            .any(|(_, a)| matches!(a, Action::RemediateRedis { .. }))
    );
    // Once it stops growing the alert clears and the incident resolves.
    assert!(all.iter().any(|(_, c)| matches!(c, Change::Transition { from, .. } if from == "keys-without-ttl-growing")), "{all:#?}");
    assert!(outcome.last.memory.redis.keys_without_ttl.samples.len() <= 2 * 16 + 2);
}

/// Redis as far as option B sees it: a fixed amount of used memory against a maxmemory that
/// CONFIG SET changes (unless CONFIG is refused).
struct RedisModel {
    used: u64,
    max: u64,
    refuses_config: bool,
}

impl RedisModel {
    fn observation(&self, at: Timestamp) -> Observation {
        Observation {
            at: Some(at),
            p50_latency_ms: Some(300.0),
            cache_hit_rate_percent: Some(97.0),
            redis_used_memory_bytes: Some(self.used),
            redis_max_memory_bytes: Some(self.max),
            redis_used_memory_percent: Some(100.0 * self.used as f64 / self.max as f64),
            redis_evicted_keys: Some(0),
            redis_run_id: Some("r".repeat(40)),
            redis_uptime_seconds: Some(1000),
            ..Observation::default()
        }
    }

    fn apply(&mut self, action: &Action) {
        if let Action::SetMaxMemory {
            bytes,
            from,
            ceiling,
            restore,
            ..
        } = action
        {
            assert!(
                *restore || bytes <= ceiling,
                "asked above the ceiling: {action:?}"
            );
            if !self.refuses_config && *from == self.max {
                self.max = *bytes;
            }
        }
    }
}

const MIB: u64 = 1 << 20;

fn option_b_spec(ceiling: Option<&str>) -> tierguard::api::MemoryTierSpec {
    let mut remediation =
        json!({"cooldown": "30s", "maxDuration": "5s", "maxMemoryStepPercent": 25});
    if let Some(c) = ceiling {
        remediation["maxMemoryCeiling"] = json!(c);
    }
    tier(json!({
        "redis": {"memoryLevels": {"criticalFor": "10s", "warningFor": "10s"}, "remediation": remediation},
        "notify": {"escalation": [{"level": 1, "after": "0s"}, {"level": 2, "after": "1h"}]},
    }))
    .spec
}

/// Run `steps` ticks of 10 s, the model taking every action; returns every action with its time.
fn drive(
    spec: &tierguard::api::MemoryTierSpec,
    redis: &mut RedisModel,
    memory: &mut PolicyMemory,
    from: i64,
    steps: i64,
    audit: Option<&AuditOutcome>,
) -> Vec<(i64, Action)> {
    let mut out = Vec::new();
    for i in 0..steps {
        let t = from + i * 10;
        let now = Timestamp::from_second(1_800_000_000 + t).unwrap();
        let ctx = DecideContext {
            generation: Some(1),
            last_audit: audit.cloned(),
            ..DecideContext::default()
        };
        let d = decide(spec, memory, &redis.observation(now), now, &ctx);
        for a in &d.actions {
            redis.apply(a);
            out.push((t, a.clone()));
        }
        *memory = d.memory;
    }
    out
}

#[test]
fn option_b_raises_maxmemory_in_steps_within_the_ceiling_and_restores_it() {
    let spec = option_b_spec(Some("150Mi"));
    let mut redis = RedisModel {
        used: 96 * MIB,
        max: 100 * MIB,
        refuses_config: false,
    };
    let mut memory = PolicyMemory::default();
    let actions = drive(&spec, &mut redis, &mut memory, 0, 20, None);
    let remediations: Vec<i64> = actions
        .iter()
        .filter(|(_, a)| matches!(a, Action::RemediateRedis { .. }))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(remediations, [10, 40], "{actions:#?}");
    let raises: Vec<(i64, u64, u64)> = actions
        .iter()
        .filter_map(|(t, a)| match a {
            Action::SetMaxMemory {
                bytes,
                from,
                restore: false,
                ..
            } => Some((*t, *from / MIB, *bytes / MIB)),
            _ => None,
        })
        .collect();
    // Two runs later (the second at 40 s, given its 5 s), still above 90%: +25 MiB at a time, one
    // step per criticalFor while usage stays above critical; 125 MiB puts it at 77%: no more.
    assert_eq!(raises, [(50, 100, 125)], "{actions:#?}");
    assert_eq!(redis.max, 125 * MIB);
    let raise = memory
        .redis
        .max_memory_raise
        .clone()
        .expect("kept in status.policy");
    assert_eq!(raise.original_bytes, 100 * MIB);

    // Usage grows again: the next step, and never past the ceiling.
    redis.used = 140 * MIB;
    let more = drive(&spec, &mut redis, &mut memory, 200, 20, None);
    let raises: Vec<u64> = more
        .iter()
        .filter_map(|(_, a)| match a {
            Action::SetMaxMemory {
                bytes,
                restore: false,
                ..
            } => Some(*bytes / MIB),
            _ => None,
        })
        .collect();
    assert_eq!(raises, [150], "{more:#?}");
    assert_eq!(redis.max, 150 * MIB);
    // At the ceiling and still critical: level 2 at once, with option C said.
    let escalated = more.iter().find_map(|(_, a)| match a {
        Action::Notify(n) if n.level == 2 => Some(n.message.clone()),
        _ => None,
    });
    let escalated = escalated.expect("escalated at the ceiling");
    assert!(
        escalated.contains("Option C (restart Redis) is left to a person"),
        "{escalated}"
    );

    // The incident ends (usage falls); maxmemory goes back once the used memory fits under the
    // original limit below the warning level, and the raise is forgotten once Redis reads it.
    redis.used = 90 * MIB;
    let calm = drive(&spec, &mut redis, &mut memory, 500, 60, None);
    assert!(
        !calm
            .iter()
            .any(|(_, a)| matches!(a, Action::SetMaxMemory { restore: true, .. })),
        "90 MiB would be 90% of the original: no restore yet"
    );
    redis.used = 50 * MIB;
    let after = drive(&spec, &mut redis, &mut memory, 1200, 60, None);
    let restores: Vec<u64> = after
        .iter()
        .filter_map(|(_, a)| match a {
            Action::SetMaxMemory {
                bytes,
                restore: true,
                ..
            } => Some(*bytes / MIB),
            _ => None,
        })
        .collect();
    assert_eq!(restores, [100], "{after:#?}");
    assert_eq!(redis.max, 100 * MIB);
    assert!(memory.redis.max_memory_raise.is_none());
}

#[test]
fn without_a_ceiling_or_when_config_is_refused_it_escalates_with_the_audit() {
    let audit = AuditOutcome {
        at: Timestamp::from_second(1_800_000_015).unwrap(),
        sampled: 5000,
        without_ttl: 3000,
        without_ttl_by_prefix: [("session".to_owned(), 2990u64)].into(),
        without_ttl_examples: vec!["session:abc".into()],
        bytes_by_prefix: [
            ("session".to_owned(), 80_000_000u64),
            ("cache".to_owned(), 9_000_000),
        ]
        .into(),
        largest_keys: vec![KeySize {
            key: "cache:clinic:5:generation:1".into(),
            bytes: 400_000,
        }],
    };
    for (ceiling, refuses, why) in [
        (None, false, "maxMemoryCeiling is not set"),
        (Some("1Gi"), true, "Redis did not take maxmemory"),
    ] {
        let spec = option_b_spec(ceiling);
        let mut redis = RedisModel {
            used: 96 * MIB,
            max: 100 * MIB,
            refuses_config: refuses,
        };
        let mut memory = PolicyMemory::default();
        let actions = drive(&spec, &mut redis, &mut memory, 0, 20, Some(&audit));
        let escalations: Vec<String> = actions
            .iter()
            .filter_map(|(_, a)| match a {
                Action::Notify(n) if n.level == 2 => Some(n.message.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(escalations.len(), 1, "once: {actions:#?}");
        let text = &escalations[0];
        assert!(text.contains(why), "{text}");
        assert!(
            text.contains("top prefixes by bytes (5000 keys sampled): session 80000000 bytes"),
            "{text}"
        );
        assert!(
            text.contains("keys without TTL by prefix: session 2990; e.g. session:abc"),
            "{text}"
        );
        assert!(
            text.contains("largest keys: cache:clinic:5:generation:1 (400000 bytes)"),
            "{text}"
        );
        assert!(text.contains("Option C"), "{text}");
        assert_eq!(redis.max, 100 * MIB, "nothing changed maxmemory");
        let raises = actions
            .iter()
            .filter(|(_, a)| matches!(a, Action::SetMaxMemory { .. }))
            .count();
        assert_eq!(
            raises,
            usize::from(refuses),
            "one attempt when a ceiling is set: {actions:#?}"
        );
    }
}

#[test]
fn a_redis_restart_is_named_as_the_likely_cause() {
    let timeline = format!(
        "  - {{at: 0s, set: {{clinics: {}}}}}\n  - {{at: 60s, event: redis-restart}}\n  - {{at: 70s, set: {{clinics: {}}}}}",
        clinics(""),
        clinics(HOT_CLINICS_COLD),
    );
    let outcome = run(json!({}), "2m", &timeline);
    let source = outcome
        .last
        .memory
        .stampede
        .as_ref()
        .and_then(|s| s.source.clone())
        .expect("the cold start is handled as a stampede, with its source");
    assert!(
        source
            .likely_causes
            .iter()
            .any(|c| c.starts_with("Redis restart: Redis restarted (run_id")),
        "{source:?}"
    );
    // The clinics that miss after the restart are named as the readings come in.
    assert_eq!(
        source.most_misses.first().map(|c| c.clinic.as_str()),
        Some("5"),
        "{source:?}"
    );
}
