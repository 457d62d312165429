//! The cost of the policy: one `decide` step, and a whole day of steps.
//!
//! Run with `cargo bench --bench policy`. Budget: one step well under 10 µs.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jiff::{SignedDuration, Timestamp};
use tierguard::api::{BreakerState, MemoryTierSpec, Observation, PolicyMemory};
use tierguard::policy::{AppliedConfig, DecideContext, decide};

fn spec() -> MemoryTierSpec {
    let doc = serde_json::json!({
        "apiVersion": "tierguard.dev/v1alpha1",
        "kind": "MemoryTier",
        "metadata": {"name": "bench"},
        "spec": {"target": {"configMapName": "flags"}},
    });
    tierguard::api::validate::validate_document(&doc)
        .expect("valid")
        .spec
}

fn healthy() -> Observation {
    Observation {
        p50_latency_ms: Some(320.0),
        p95_latency_ms: Some(900.0),
        p99_latency_ms: Some(1400.0),
        error_rate_percent: Some(0.4),
        cache_hit_rate_percent: Some(97.0),
        mem0_write_success_percent: Some(99.8),
        breaker_state: Some(BreakerState::Closed),
        redis_used_memory_percent: Some(45.0),
        redis_evicted_keys: Some(0),
        redis_run_id: Some("9a1f3c5e7b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a".into()),
        redis_uptime_seconds: Some(86_400),
        // Traffic, so that an open incident measures its impact at every step.
        requests: Some(3000.0),
        ..Observation::default()
    }
}

/// The observation at second `s` of a day with a canary regression, a stampede, a breaker outage
/// and Redis memory pressure in it.
fn day(s: i64) -> Observation {
    let mut o = healthy();
    let hour = s / 3600;
    match hour {
        2 => o.p50_latency_ms = Some(1500.0),
        6 => {
            o.cache_hit_rate_percent = Some(if s % 3600 < 900 { 80.0 } else { 93.0 });
            o.p50_latency_ms = Some(800.0);
        }
        10..=14 => o.breaker_state = Some(BreakerState::Open),
        18 => o.redis_used_memory_percent = Some(91.0),
        19 => o.redis_used_memory_percent = Some(82.0),
        _ => {}
    }
    o.redis_evicted_keys = Some((s / 10) as u64 % 1000);
    o.redis_uptime_seconds = Some(86_400 + s as u64);
    o
}

fn bench(c: &mut Criterion) {
    let spec = spec();
    let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let ctx = DecideContext {
        generation: Some(1),
        resume_token: None,
        applied: AppliedConfig::Unknown,
        last_audit: None,
    };

    // A steady state: memory after an hour of healthy 10 s ticks.
    let obs = healthy();
    let mut memory = PolicyMemory::default();
    for i in 0..360 {
        memory = decide(
            &spec,
            &memory,
            &obs,
            start + SignedDuration::from_secs(i * 10),
            &ctx,
        )
        .memory;
    }
    let now = start + SignedDuration::from_secs(3600);
    c.bench_function("decide one step (healthy)", |b| {
        b.iter(|| {
            decide(
                black_box(&spec),
                black_box(&memory),
                black_box(&obs),
                now,
                &ctx,
            )
        })
    });

    // A hot-clinic stampede being handled, with the largest per-clinic table a tier may keep
    // (200 clinics): the diagnosis runs at every step.
    let mut clinics: Vec<tierguard::api::ClinicCache> = (0..400)
        .map(|i| tierguard::api::ClinicCache {
            clinic: i.to_string(),
            hits: 1000.0 + i as f64,
            misses: 5.0,
        })
        .collect();
    clinics[0].hits = 20_000.0;
    clinics[0].misses = 60_000.0;
    let hot_obs = Observation {
        clinics: Some(tierguard::api::ClinicBreakdown::busiest(
            "clinic_id",
            clinics,
            tierguard::api::clinics::MAX_CLINICS_KEPT,
        )),
        ..healthy()
    };
    let mut hot = PolicyMemory::default();
    for i in 0..30 {
        hot = decide(
            &spec,
            &hot,
            &hot_obs,
            start + SignedDuration::from_secs(i * 10),
            &ctx,
        )
        .memory;
    }
    assert!(
        hot.stampede.is_some(),
        "the bench's hot clinic is a stampede"
    );
    let hot_now = start + SignedDuration::from_secs(300);
    c.bench_function("decide one step (hot-clinic stampede, 200 clinics)", |b| {
        b.iter(|| {
            decide(
                black_box(&spec),
                black_box(&hot),
                black_box(&hot_obs),
                hot_now,
                &ctx,
            )
        })
    });

    // Mid-incident: a rollback in phase 3 and a stampede being handled.
    let mut busy = PolicyMemory::default();
    for i in 0..(7 * 360 + 120) {
        let s = i * 10;
        let mut o = day(s);
        if s > 6 * 3600 + 1200 {
            o.p50_latency_ms = Some(1500.0);
        }
        busy = decide(&spec, &busy, &o, start + SignedDuration::from_secs(s), &ctx).memory;
    }
    let busy_obs = day(7 * 3600);
    let busy_now = start + SignedDuration::from_secs(7 * 3600 + 1210);
    c.bench_function("decide one step (mid-incident)", |b| {
        b.iter(|| {
            decide(
                black_box(&spec),
                black_box(&busy),
                black_box(&busy_obs),
                busy_now,
                &ctx,
            )
        })
    });

    let observations: Vec<Observation> = (0..8640).map(|i| day(i * 10)).collect();
    let mut group = c.benchmark_group("scenario");
    group.sample_size(10);
    group.bench_function("24 hours at a 10 s tick (8640 steps)", |b| {
        b.iter(|| {
            let mut memory = PolicyMemory::default();
            for (i, o) in observations.iter().enumerate() {
                let at = start + SignedDuration::from_secs(i as i64 * 10);
                memory = decide(&spec, &memory, o, at, &ctx).memory;
            }
            memory
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
