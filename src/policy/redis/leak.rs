//! The leak alert (the Redis OOM runbook's step 3, "keys without TTL: memory leak indicator"),
//! read for free at every interval from `INFO keyspace`: when the count of keys without a TTL
//! grew by `redis.keysWithoutTtl.growth` over `redis.keysWithoutTtl.window`, a leak is filling
//! Redis, and it is said before memory is critical. Cleared once the growth over the window is
//! below half that (or the count fell).

use super::super::signals::num;
use super::super::window::elapsed;
use super::super::{Action, Change, Step};
use crate::api::{CountSample, PolicyMemory, Reason, Subject};

/// Readings kept per window.
const SAMPLES_PER_WINDOW: u32 = 16;

/// Keep this observation's count (a Redis restart starts the readings over).
pub(crate) fn observe(step: &Step, m: &mut PolicyMemory) {
    let spec = &step.spec.redis.keys_without_ttl;
    let track = &mut m.redis.keys_without_ttl;
    if !spec.enabled {
        *track = Default::default();
        return;
    }
    if step.cold_start.is_some() {
        track.samples.clear();
    }
    let Some(count) = step.signals.redis_keys_without_ttl else {
        return;
    };
    let window = spec.window.as_std();
    let now = step.now;
    let samples = &mut track.samples;
    samples.retain(|s| s.at <= now && elapsed(now, s.at) <= window);
    let sample = CountSample { at: now, count };
    let n = samples.len();
    let spacing = window / SAMPLES_PER_WINDOW;
    if n >= 2 && elapsed(now, samples[n - 2].at) < spacing {
        samples[n - 1] = sample;
    } else {
        samples.push(sample);
    }
}

/// Growth of the count over the window: (oldest, newest) when the readings cover half of it.
pub(crate) fn growth(step: &Step, m: &PolicyMemory) -> Option<(CountSample, CountSample)> {
    let spec = &step.spec.redis.keys_without_ttl;
    let samples = &m.redis.keys_without_ttl.samples;
    let (first, last) = (samples.first()?, samples.last()?);
    (elapsed(last.at, first.at) >= spec.window.as_std() / 2).then(|| (first.clone(), last.clone()))
}

/// Raise or clear the alert. Returns the alert text when it is raised in this step.
pub(crate) fn step(step: &mut Step, m: &mut PolicyMemory) -> Option<String> {
    let spec = step.spec.redis.keys_without_ttl.clone();
    if !spec.enabled {
        return None;
    }
    let (first, last) = growth(step, m)?;
    let grew = last.count.saturating_sub(first.count);
    let track = &mut m.redis.keys_without_ttl;
    if !track.alert && grew >= spec.growth {
        track.alert = true;
        let memory = step
            .signals
            .redis_used_memory_percent
            .map(|u| format!("{}% of maxmemory", num(u)))
            .unwrap_or_else(|| "unknown".into());
        let message = format!(
            "Redis keys without TTL grew by {grew} over {} ({} → {}; at least {} is a leak): keys are not expiring, memory {memory}; the key audit names the prefixes",
            crate::api::Duration::from_std(elapsed(last.at, first.at)),
            first.count,
            last.count,
            spec.growth
        );
        step.changes.push(Change::Alert {
            subject: Subject::RedisMemory,
            code: Reason::KeysWithoutTtlGrowing,
            warning: true,
            message: message.clone(),
        });
        step.actions.push(Action::AuditRedis {
            reason: format!(
                "keys without TTL growing ({grew} over the window): find which prefixes leak"
            ),
        });
        return Some(message);
    }
    if track.alert && (grew < spec.growth / 2 || last.count < first.count) {
        track.alert = false;
        step.changes.push(Change::Transition {
            subject: Subject::RedisMemory,
            from: "keys-without-ttl-growing".into(),
            to: "steady".into(),
            reason: format!(
                "keys without TTL grew by {grew} over the window ({} → {}), under half of {}",
                first.count, last.count, spec.growth
            ),
        });
    }
    None
}
