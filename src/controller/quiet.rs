//! The quiet steady state: whether a reconcile's status must be written at all.
//!
//! A healthy tier is reconciled every interval and its live readings move every time; writing
//! them each time would cost the API server (and etcd) one write per tier per interval, and
//! every watcher of MemoryTiers one event. They are on /metrics already. So a status is written
//! when something a human or another controller acts on changed (a phase, a condition's status or
//! reason, a level, an incident, an action, a mitigation, a window that started to count, the
//! spec generation seen), and otherwise only when the readings in status are older than the
//! refresh period. Between two writes, the policy's memory of the ticks not written is kept in
//! the process ([`super::Context::pending_memory`]) and decided on; a restart or a takeover
//! resumes from the memory last written, at most one refresh period old, which holds nothing
//! that changes a decision (see [`live_memory_fields`]).

use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;

use crate::api::{MemoryTierStatus, Observation, SourceHealth};

/// The default refresh period of the readings in status.
pub const DEFAULT_STATUS_REFRESH: Duration = Duration::from_secs(300);

/// Whether `next` must be written over `written` (the status as last written, with the memory
/// of the ticks since), at `now`, with readings refreshed every `refresh`.
pub fn needs_write(
    written: &MemoryTierStatus,
    next: &MemoryTierStatus,
    now: Timestamp,
    refresh: Duration,
) -> bool {
    let readings_at = written.observed.as_ref().and_then(|o| o.at);
    let stale = readings_at.is_none_or(|at| {
        now.duration_since(at)
            .try_into()
            .is_ok_and(|age: Duration| age >= refresh)
            || at > now
    });
    stale || material(written) != material(next)
}

/// What of a status matters to a human or another controller: all of it but the values of the
/// live readings (whether each signal is known, each source answers and the cohorts are told
/// apart does matter), the condition messages (which quote the readings), and the memory fields
/// that follow the readings.
fn material(status: &MemoryTierStatus) -> MemoryTierStatus {
    let mut m = MemoryTierStatus {
        observed: status.observed.as_ref().map(readings_known),
        ..status.clone()
    };
    for condition in &mut m.conditions {
        condition.message.clear();
    }
    if let Some(report) = &mut m.memory_report {
        report.used_percent = None;
        report.evictions_per_second = None;
    }
    if let Some(policy) = &mut m.policy {
        strip_live(policy);
    }
    m
}

/// Which signals are known and which sources answer, without the values or the reasons' text.
fn readings_known(o: &Observation) -> Observation {
    Observation {
        unknown: o
            .unknown
            .keys()
            .map(|k| (k.clone(), String::new()))
            .collect(),
        sources: o
            .sources
            .iter()
            .map(|s| SourceHealth {
                name: s.name.clone(),
                ok: s.ok,
                reason: None,
                latency_ms: None,
            })
            .collect(),
        without_cohorts: o.cohorts.is_none().then(String::new),
        ..Observation::default()
    }
}

/// The fields of the policy's memory (`status.policy`, by JSON pointer) that move with every
/// reading and decide nothing by themselves: the time of the last tick, the learnt error-rate
/// baseline (an average that moves a little each tick), Redis's uptime and eviction readings
/// (a restart changes the run id, an eviction burst starts a window: both are written), and the
/// counts an error test has accumulated (a new test, a verdict, a window are written).
pub fn live_memory_fields() -> &'static [&'static str] {
    &[
        "/lastTick",
        "/errorRateBaselinePercent",
        "/redis/uptimeSeconds",
        "/redis/evictionsTotal",
        "/redis/evictionSamples",
    ]
}

/// The fields of each of `status.policy.windows.errorTests` that accumulate with every batch.
const ERROR_TEST_COUNTS: &[&str] = &[
    "lastBatchAt",
    "canaryRequests",
    "canaryErrors",
    "stableRequests",
    "stableErrors",
];

fn strip_live(policy: &mut Value) {
    for pointer in live_memory_fields() {
        let (parent, key) = pointer.rsplit_once('/').expect("a pointer has a slash");
        if let Some(Value::Object(map)) = policy.pointer_mut(parent) {
            map.remove(key);
        }
    }
    if let Some(Value::Array(tests)) = policy.pointer_mut("/windows/errorTests") {
        for test in tests {
            if let Value::Object(map) = test {
                for key in ERROR_TEST_COUNTS {
                    map.remove(*key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Phase;
    use serde_json::json;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn status(read_at: i64, p50: f64, policy: Value) -> MemoryTierStatus {
        MemoryTierStatus {
            phase: Some(Phase::Healthy),
            observed: Some(Observation {
                at: Some(at(read_at)),
                p50_latency_ms: Some(p50),
                ..Observation::default()
            }),
            policy: Some(policy),
            ..MemoryTierStatus::default()
        }
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn only_live_readings_moved_nothing_is_written_until_the_refresh() {
        let written = status(
            1000,
            40.0,
            json!({"version": 1, "lastTick": "2026-01-01T00:00:00Z", "redis": {"level": "ok", "uptimeSeconds": 10}}),
        );
        let next = status(
            1030,
            55.0,
            json!({"version": 1, "lastTick": "2026-01-01T00:00:30Z", "redis": {"level": "ok", "uptimeSeconds": 40}, "errorRateBaselinePercent": 0.4}),
        );
        assert!(!needs_write(&written, &next, at(1030), 5 * MIN));
        // The readings in status are as old as the refresh period: written.
        assert!(needs_write(&written, &next, at(1300), 5 * MIN));
        // Never written, or readings from the future (a clock step): written.
        let mut none = written.clone();
        none.observed = None;
        assert!(needs_write(&none, &next, at(1030), 5 * MIN));
        assert!(needs_write(&written, &next, at(900), 5 * MIN));
    }

    #[test]
    fn a_change_that_matters_is_written_at_once() {
        let policy = json!({"version": 1, "redis": {"level": "ok"}});
        let written = status(1000, 40.0, policy.clone());
        let mut phase = status(1030, 40.0, policy.clone());
        phase.phase = Some(Phase::RollingBack);
        assert!(needs_write(&written, &phase, at(1030), 5 * MIN));
        let level = status(
            1030,
            40.0,
            json!({"version": 1, "redis": {"level": "watch"}}),
        );
        assert!(needs_write(&written, &level, at(1030), 5 * MIN));
        let window = status(
            1030,
            40.0,
            json!({"version": 1, "redis": {"level": "ok"}, "windows": {"p50Latency": {"lastSampleAt": "2026-01-01T00:00:30Z"}}}),
        );
        assert!(needs_write(&written, &window, at(1030), 5 * MIN));
        let mut condition = status(1030, 40.0, policy);
        condition
            .conditions
            .push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "Reconciled".into(),
                message: String::new(),
                observed_generation: Some(1),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(
                    1030,
                )),
            });
        assert!(needs_write(&written, &condition, at(1030), 5 * MIN));
    }

    #[test]
    fn a_signal_becoming_unknown_or_a_source_failing_is_written() {
        let written = status(1000, 40.0, json!({"version": 1}));
        let mut unknown = status(1030, 40.0, json!({"version": 1}));
        let o = unknown.observed.as_mut().unwrap();
        o.p50_latency_ms = None;
        o.unknown.insert("p50LatencyMs".into(), "no samples".into());
        assert!(needs_write(&written, &unknown, at(1030), 5 * MIN));
        let mut failing = status(1030, 40.0, json!({"version": 1}));
        failing
            .observed
            .as_mut()
            .unwrap()
            .sources
            .push(SourceHealth {
                name: "scrape".into(),
                ok: false,
                reason: Some("timeout".into()),
                latency_ms: Some(5000),
            });
        assert!(needs_write(&written, &failing, at(1030), 5 * MIN));
    }

    #[test]
    fn a_condition_message_quoting_a_reading_is_not_a_change() {
        let mk = |message: &str| {
            let mut s = status(1000, 40.0, json!({"version": 1}));
            s.conditions
                .push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                    type_: "MemoryPressure".into(),
                    status: "False".into(),
                    reason: "MemoryOk".into(),
                    message: message.into(),
                    observed_generation: Some(1),
                    last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(
                        1000,
                    )),
                });
            s
        };
        assert!(!needs_write(
            &mk("used 41%"),
            &mk("used 42%"),
            at(1030),
            5 * MIN
        ));
    }

    #[test]
    fn error_test_counts_are_live_but_a_new_test_is_not() {
        let test = |n: f64| json!({"span": "sinceDeploy", "since": "2026-01-01T00:00:00Z", "canaryRequests": n, "canaryErrors": 0.0, "stableRequests": n, "stableErrors": 0.0});
        let written = status(
            1000,
            40.0,
            json!({"version": 1, "windows": {"errorTests": [test(10.0)]}}),
        );
        let more = status(
            1030,
            40.0,
            json!({"version": 1, "windows": {"errorTests": [test(20.0)]}}),
        );
        assert!(!needs_write(&written, &more, at(1030), 5 * MIN));
        let another = status(
            1030,
            40.0,
            json!({"version": 1, "windows": {"errorTests": [test(20.0), test(1.0)]}}),
        );
        assert!(needs_write(&written, &another, at(1030), 5 * MIN));
    }
}
