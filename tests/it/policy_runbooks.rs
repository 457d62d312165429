//! One row per runbook behaviour: a spec, a scripted scenario, and the exact times at which the
//! policy must change state and act, and the effective config it must end with.
//!
//! Each expected line is `<seconds> <what>`:
//! - `<subject> <from>-><to>`: a transition (`phase`, `rollback`, `breaker`, `stampede`, ...);
//! - `alert <subject> <code>`; `incident <runbook> <opened|escalated|resolved> [L<level>]`;
//! - `render <KEY=value ...>` (the keys that changed, sorted) or `render initial`;
//! - `notify L<level> <Opened|Escalated|Resolved>`, `warm <trigger>`, `remediate`, `audit`,
//!   `record <runbook>`, `restart`.

use serde_json::{Value, json};
use tierguard::api::MemoryTier;
use tierguard::policy::{Action, Change};
use tierguard::simulate::{self, EntryKind, Outcome};

/// A MemoryTier with the runbook defaults, `patch` merged into its spec.
fn tier(patch: Value) -> MemoryTier {
    crate::support::tiers::tier("t", "n", patch)
}

/// Healthy signals at the start of every scenario.
const HEALTHY: &str = "
  p50LatencyMs: 300
  errorRatePercent: 0.5
  cacheHitRatePercent: 97
  mem0WriteSuccessPercent: 99.9
  breakerState: closed
  redisUsedMemoryPercent: 40
  redisEvictedKeys: 0
  redisRunId: 0123456789abcdef0123456789abcdef01234567
  redisUptimeSeconds: 1000";

fn run(patch: Value, tick: &str, duration: &str, timeline: &str) -> Outcome {
    let yaml =
        format!("tick: {tick}\nduration: {duration}\nsignals:{HEALTHY}\ntimeline:\n{timeline}");
    let scenario = simulate::scenario::parse(&yaml)
        .unwrap_or_else(|p| panic!("test scenario invalid: {}: {}", p.path, p.message));
    simulate::run(&tier(patch), &scenario).expect("the scenario runs")
}

fn secs(t: f64) -> String {
    if t.fract() == 0.0 {
        format!("{t:.0}")
    } else {
        format!("{t}")
    }
}

/// The outcome as expectation lines (scenario inputs and Events left out).
fn lines(outcome: &Outcome) -> Vec<String> {
    let mut out = Vec::new();
    for entry in &outcome.entries {
        let t = secs(entry.t);
        let line = match &entry.what {
            EntryKind::Input(_) => continue,
            EntryKind::Change(Change::Transition {
                subject, from, to, ..
            }) => {
                format!("{t} {subject} {from}->{to}")
            }
            EntryKind::Change(Change::Alert { subject, code, .. }) => {
                format!("{t} alert {subject} {code}")
            }
            EntryKind::Change(Change::Incident {
                runbook,
                what,
                level,
                ..
            }) => {
                let level = if *level > 0 {
                    format!(" L{level}")
                } else {
                    String::new()
                };
                format!("{t} incident {runbook} {}{level}", what.as_str())
            }
            EntryKind::Action {
                action, changed, ..
            } => match action {
                Action::RenderConfig { .. } if changed.is_empty() => format!("{t} render initial"),
                Action::RenderConfig { .. } => {
                    let mut keys: Vec<String> = changed
                        .iter()
                        .map(|(k, _, to)| format!("{k}={}", to.as_deref().unwrap_or("")))
                        .collect();
                    keys.sort();
                    format!("{t} render {}", keys.join(" "))
                }
                Action::Notify(n) => format!("{t} notify L{} {:?}", n.level, n.kind),
                Action::WarmCache { trigger, .. } => format!("{t} warm {trigger:?}"),
                Action::RemediateRedis { .. } => format!("{t} remediate"),
                Action::AuditRedis { .. } => format!("{t} audit"),
                Action::SetMaxMemory { bytes, .. } => format!("{t} maxmemory {bytes}"),
                Action::RecordIncident { incident, .. } => {
                    format!("{t} record {}", incident.runbook)
                }
                Action::RestartWorkload { .. } => format!("{t} restart"),
                Action::Event { .. } => continue,
            },
        };
        out.push(line);
    }
    out
}

struct Row {
    name: &'static str,
    spec: Value,
    tick: &'static str,
    duration: &'static str,
    timeline: &'static str,
    expect: &'static [&'static str],
    /// Keys of the effective config at the end, with their values.
    effective: &'static [(&'static str, &'static str)],
}

fn check(row: &Row) {
    let outcome = run(row.spec.clone(), row.tick, row.duration, row.timeline);
    let got = lines(&outcome);
    let want: Vec<String> = row.expect.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        got, want,
        "row {:?}: the policy's timeline differs\n got: {got:#?}",
        row.name
    );
    for (key, value) in row.effective {
        assert_eq!(
            outcome.last.effective.config.get(*key).map(String::as_str),
            Some(*value),
            "row {:?}: effective {key} at the end",
            row.name
        );
    }
    // Whatever the row, status must explain the effective config: baseline ⊕ mitigations.
    let (config, _) = tierguard::policy::effective::render(
        &tier(row.spec.clone()).spec,
        &outcome.last.mitigations,
    );
    assert_eq!(config, outcome.last.effective.config, "row {:?}", row.name);
}

const START: [&str; 2] = ["0 phase Pending->Healthy", "0 render initial"];

#[test]
fn canary_rollback_on_p50_latency() {
    check(&Row {
        name: "P50 > 1000 ms for 10m: phases 1 to 4",
        spec: json!({}),
        tick: "30s",
        duration: "40m",
        timeline: "
  - {at: 5m, set: {p50LatencyMs: 1500}}
  - {at: 21m, set: {p50LatencyMs: 350}}",
        expect: &[
            START[0],
            START[1],
            // First breaching sample at 300 s: the window holds 10 minutes later.
            "900 phase Healthy->RollingBack",
            "900 rollback none->1",
            "900 incident CanaryRollback opened L1",
            "900 render CANARY_SAMPLE_RATE=0.05",
            "900 notify L1 Opened",
            // Phase 1 holds 5 minutes, then canary 0 and phase 2, and phase 3 starts at once.
            "1200 rollback 1->2",
            "1200 rollback 2->3",
            "1200 render CANARY_SAMPLE_RATE=0.0 FAST_PATH_ENABLED=false MEM0_READS_ENABLED=false MEM0_SHADOW_MODE=false",
            // Healthy from 1260 s; verified after phaseHold; the incident record is phase 4.
            "1560 phase RollingBack->RolledBack",
            "1560 rollback 3->4",
            "1560 incident CanaryRollback resolved L1",
            "1560 record CanaryRollback",
            "1560 notify L1 Resolved",
        ],
        effective: &[
            ("CANARY_SAMPLE_RATE", "0.0"),
            ("FAST_PATH_ENABLED", "false"),
            ("MEM0_READS_ENABLED", "false"),
            ("MEM0_SHADOW_MODE", "false"),
        ],
    });
}

#[test]
fn a_signal_worsening_in_phase_1_goes_straight_to_phase_2() {
    check(&Row {
        name: "worsening skips the hold",
        spec: json!({}),
        tick: "30s",
        duration: "18m",
        timeline: "
  - {at: 5m, set: {p50LatencyMs: 1200}}
  - {at: 17m, set: {p50LatencyMs: 1600}}",
        expect: &[
            START[0],
            START[1],
            "900 phase Healthy->RollingBack",
            "900 rollback none->1",
            "900 incident CanaryRollback opened L1",
            "900 render CANARY_SAMPLE_RATE=0.05",
            "900 notify L1 Opened",
            // 1600 ≥ 1200 + 25% of the 1000 ms threshold: no waiting for the 5m hold.
            "1020 rollback 1->2",
            "1020 rollback 2->3",
            "1020 render CANARY_SAMPLE_RATE=0.0 FAST_PATH_ENABLED=false MEM0_READS_ENABLED=false MEM0_SHADOW_MODE=false",
        ],
        effective: &[("CANARY_SAMPLE_RATE", "0.0")],
    });
}

#[test]
fn canary_rollback_on_error_rate_above_baseline() {
    check(&Row {
        name: "error rate > baseline + 2 points for 5m",
        spec: json!({"rollback": {"errorRateBaselinePercent": 1.0}}),
        tick: "30s",
        duration: "8m",
        timeline: "
  - {at: 1m, set: {errorRatePercent: 2.9}}
  - {at: 2m, set: {errorRatePercent: 3.5}}",
        expect: &[
            START[0],
            START[1],
            // 2.9 is within 1.0 + 2 points; 3.5 is not, from 120 s on.
            "420 phase Healthy->RollingBack",
            "420 rollback none->1",
            "420 incident CanaryRollback opened L1",
            "420 render CANARY_SAMPLE_RATE=0.05",
            "420 notify L1 Opened",
        ],
        effective: &[
            ("CANARY_SAMPLE_RATE", "0.05"),
            ("FAST_PATH_ENABLED", "true"),
        ],
    });
}

#[test]
fn canary_rollback_on_mem0_write_success() {
    check(&Row {
        name: "mem0 write success < 95% for 30m",
        spec: json!({}),
        tick: "1m",
        duration: "36m",
        timeline: "
  - {at: 5m, set: {mem0WriteSuccessPercent: 93}}",
        expect: &[
            START[0],
            START[1],
            // Below 99%: the breaker runbook's symptom, alerted at once as an incident.
            "300 phase Healthy->Degraded",
            "300 incident CircuitBreakerOpen opened L1",
            "300 notify L1 Opened",
            // A wait-and-see incident: no escalation while the breaker stays closed.
            // Below 95% for 30 minutes: rollback.
            "2100 phase Degraded->RollingBack",
            "2100 rollback none->1",
            "2100 incident CanaryRollback opened L1",
            "2100 render CANARY_SAMPLE_RATE=0.05",
            "2100 notify L1 Opened",
        ],
        effective: &[("CANARY_SAMPLE_RATE", "0.05")],
    });
}

#[test]
fn breaker_open_alerts_at_once_and_mitigates_after_max_open_duration() {
    // A drill with second-scale durations: nothing in the policy assumes minutes.
    check(&Row {
        name: "breaker open > maxOpenDuration",
        spec: json!({
            "breaker": {"maxOpenDuration": "20s"},
            "canary": {"rampInterval": "5s"},
            "rollback": {"breakerOpenFor": "1h"},
            "notify": {"escalate": {"nearActionLead": "10s"}},
        }),
        tick: "1s",
        duration: "60s",
        timeline: "
  - {at: 10s, set: {breakerState: open}}
  - {at: 40s, set: {breakerState: closed}}",
        expect: &[
            START[0],
            START[1],
            "10 phase Healthy->Degraded",
            "10 alert breaker BreakerOpened",
            "10 incident CircuitBreakerOpen opened L1",
            "10 notify L1 Opened",
            // The fallback works: no escalation until the action is 10 s away...
            "20 incident CircuitBreakerOpen escalated L2",
            "20 notify L2 Escalated",
            // ...and one more level when it is taken.
            "30 breaker open->mem0-off",
            "30 incident CircuitBreakerOpen escalated L3",
            "30 render MEM0_READS_ENABLED=false MEM0_SHADOW_MODE=false",
            "30 notify L3 Escalated",
            // Closed from 40 s: after rampInterval the outage and the mitigation end...
            "45 breaker open->closed",
            "45 breaker mem0-off->closed",
            "45 render MEM0_READS_ENABLED=true MEM0_SHADOW_MODE=true",
            // ...and the incident resolves once it has had no trouble for rampInterval.
            "50 phase Degraded->Healthy",
            "50 incident CircuitBreakerOpen resolved L3",
            "50 record CircuitBreakerOpen",
            "50 notify L3 Resolved",
        ],
        effective: &[("MEM0_READS_ENABLED", "true"), ("MEM0_SHADOW_MODE", "true")],
    });
}

#[test]
fn breaker_open_longer_than_breaker_open_for_rolls_back() {
    check(&Row {
        name: "breaker open > rollback.breakerOpenFor",
        spec: json!({
            "breaker": {"maxOpenDuration": "1h"},
            "rollback": {"breakerOpenFor": "10s"},
        }),
        tick: "1s",
        duration: "12s",
        timeline: "
  - {at: 1s, set: {breakerState: half-open}}",
        expect: &[
            START[0],
            START[1],
            "1 phase Healthy->Degraded",
            "1 alert breaker BreakerOpened",
            "1 incident CircuitBreakerOpen opened L1",
            "1 notify L1 Opened",
            "11 phase Degraded->RollingBack",
            "11 rollback none->1",
            "11 incident CanaryRollback opened L1",
            "11 render CANARY_SAMPLE_RATE=0.05",
            "11 notify L1 Opened",
        ],
        effective: &[
            ("CANARY_SAMPLE_RATE", "0.05"),
            ("MEM0_READS_ENABLED", "true"),
        ],
    });
}

#[test]
fn cache_stampede_ramps_back_in_steps() {
    check(&Row {
        name: "stampede: warm, serve stale, TTL, shed load, ramp",
        spec: json!({
            "canary": {"sampleRate": 0.1, "reducedRate": 0.04, "rampStep": 0.02, "rampInterval": "1m"},
            "stampede": {"for": "30s"},
        }),
        tick: "10s",
        duration: "7m",
        timeline: "
  - {at: 60s, set: {cacheHitRatePercent: 80, p50LatencyMs: 800}}
  - {at: 120s, set: {cacheHitRatePercent: 92, p50LatencyMs: 700}}
  - {at: 250s, set: {cacheHitRatePercent: 96, p50LatencyMs: 400}}",
        expect: &[
            START[0],
            START[1],
            "90 phase Healthy->Degraded",
            "90 stampede none->active",
            "90 incident CacheStampede opened L1",
            // Warming first, then the overlays.
            "90 warm Stampede",
            "90 render CACHE_SERVE_STALE=true CACHE_TTL=7200 CANARY_SAMPLE_RATE=0.04",
            "90 notify L1 Opened",
            // Hit rate above 90% from 120 s: one step per rampInterval.
            "180 phase Degraded->Recovering",
            "180 stampede-ramp 0.04->0.06",
            "180 render CANARY_SAMPLE_RATE=0.06",
            "240 stampede-ramp 0.06->0.08",
            "240 render CANARY_SAMPLE_RATE=0.08",
            "300 stampede-ramp 0.08->0.1",
            "300 render CANARY_SAMPLE_RATE=0.1",
            // No stampede from 250 s: clear for 1m at 310 s, but the config loosened at 300 s,
            // so the next loosening waits for 360 s.
            "360 phase Recovering->Healthy",
            "360 stampede active->over",
            "360 incident CacheStampede resolved L1",
            "360 render CACHE_SERVE_STALE=false CACHE_TTL=3600",
            "360 record CacheStampede",
            "360 notify L1 Resolved",
        ],
        effective: &[
            ("CANARY_SAMPLE_RATE", "0.1"),
            ("CACHE_TTL", "3600"),
            ("CACHE_SERVE_STALE", "false"),
        ],
    });
}

#[test]
fn redis_cold_start_by_uptime_going_back() {
    check(&Row {
        name: "cold start: uptime reset",
        spec: json!({}),
        tick: "30s",
        duration: "7m",
        timeline: "
  - {at: 60s, set: {redisRunId: null}}
  - {at: 90s, set: {redisUptimeSeconds: 3}}",
        expect: &[
            START[0],
            START[1],
            "90 phase Healthy->Degraded",
            "90 stampede none->active",
            "90 incident CacheStampede opened L1",
            "90 warm ColdStart",
            "90 render CACHE_SERVE_STALE=true CACHE_TTL=7200 CANARY_SAMPLE_RATE=0.05",
            "90 notify L1 Opened",
            // Hit rate 97: recovered and no stampede, for rampInterval (5m) from 90 s.
            "390 phase Degraded->Healthy",
            "390 stampede-ramp 0.05->0.1",
            "390 stampede active->over",
            "390 incident CacheStampede resolved L1",
            "390 render CACHE_SERVE_STALE=false CACHE_TTL=3600 CANARY_SAMPLE_RATE=0.1",
            "390 record CacheStampede",
            "390 notify L1 Resolved",
        ],
        effective: &[("CANARY_SAMPLE_RATE", "0.1")],
    });
}

#[test]
fn redis_cold_start_only_warms_when_not_treated_as_stampede() {
    check(&Row {
        name: "cold start with stampede.coldStart false",
        spec: json!({"stampede": {"coldStart": false}}),
        tick: "30s",
        duration: "3m",
        timeline: "
  - {at: 60s, event: redis-restart}",
        expect: &[START[0], START[1], "60 warm ColdStart"],
        effective: &[("CANARY_SAMPLE_RATE", "0.1")],
    });
}

#[test]
fn redis_memory_levels_evictions_and_remediation() {
    check(&Row {
        name: "memory levels with hysteresis, eviction alert, remediation cooldown",
        spec: json!({
            "canary": {"rampInterval": "5s"},
            "redis": {
                "memoryLevels": {"watchFor": "0s", "warningFor": "0s", "criticalFor": "0s"},
                "evictions": {"maxPerSecond": 1, "rateWindow": "10s", "for": "0s"},
                "remediation": {"cooldown": "20s"},
            },
        }),
        tick: "1s",
        duration: "55s",
        timeline: "
  - {at: 5s, set: {redisUsedMemoryPercent: 71}}
  - {at: 10s, set: {redisUsedMemoryPercent: 89.9}}
  - {at: 11s, set: {redisUsedMemoryPercent: 90}}
  - {at: 12s, set: {redisUsedMemoryPercent: 90.5}}
  - {at: 20s, set: {redisUsedMemoryPercent: 92, redisEvictionsPerSecond: 3}}
  - {at: 30s, set: {redisEvictionsPerSecond: 0}}
  - {at: 40s, set: {redisUsedMemoryPercent: 86}}
  - {at: 41s, set: {redisUsedMemoryPercent: 84.9}}
  - {at: 45s, set: {redisUsedMemoryPercent: 75}}
  - {at: 46s, set: {redisUsedMemoryPercent: 74}}
  - {at: 50s, set: {redisUsedMemoryPercent: 64.9}}",
        expect: &[
            START[0],
            START[1],
            "5 phase Healthy->Degraded",
            "5 alert redis-memory MemoryWatch",
            "10 alert redis-memory MemoryWarning",
            "10 incident RedisMemory opened L1",
            "10 notify L1 Opened",
            "12 alert redis-memory MemoryCritical",
            "12 remediate",
            "12 audit",
            // 3 keys/s from 20 s: rate() over the 10 s range is above 1/s from 24 s.
            "24 alert evictions Evictions",
            // Still critical when the 20 s cooldown is over.
            "32 remediate",
            "32 audit",
            // 0.3/s over the last 10 s: at most half the limit.
            "39 evictions alert->ok",
            // 86 keeps critical (90 - 5 hysteresis); 84.9 leaves it.
            "41 redis-memory critical->warning",
            "46 redis-memory warning->watch",
            "50 redis-memory watch->ok",
            "51 phase Degraded->Healthy",
            "51 incident RedisMemory resolved L1",
            "51 record RedisMemory",
            "51 notify L1 Resolved",
        ],
        effective: &[("CANARY_SAMPLE_RATE", "0.1")],
    });
}

#[test]
fn escalation_levels_and_one_resolved_notification() {
    check(&Row {
        name: "a rollback that does not help escalates 0 / 15 / 30 minutes",
        spec: json!({}),
        tick: "1m",
        duration: "60m",
        timeline: "
  - {at: 1m, set: {p50LatencyMs: 1500}}
  - {at: 45m, set: {p50LatencyMs: 300}}",
        expect: &[
            START[0],
            START[1],
            "660 phase Healthy->RollingBack",
            "660 rollback none->1",
            "660 incident CanaryRollback opened L1",
            "660 render CANARY_SAMPLE_RATE=0.05",
            "660 notify L1 Opened",
            "960 rollback 1->2",
            "960 rollback 2->3",
            "960 render CANARY_SAMPLE_RATE=0.0 FAST_PATH_ENABLED=false MEM0_READS_ENABLED=false MEM0_SHADOW_MODE=false",
            // P50 stays high: the rollback has not helped 15 and 30 minutes after it started.,
            "1560 incident CanaryRollback escalated L2",
            "1560 notify L2 Escalated",
            "2460 incident CanaryRollback escalated L3",
            "2460 notify L3 Escalated",
            "3000 phase RollingBack->RolledBack",
            "3000 rollback 3->4",
            "3000 incident CanaryRollback resolved L3",
            "3000 record CanaryRollback",
            "3000 notify L3 Resolved",
        ],
        effective: &[("CANARY_SAMPLE_RATE", "0.0")],
    });
}

#[test]
fn auto_resume_ramps_the_canary_back() {
    check(&Row {
        name: "rollback.autoResume",
        spec: json!({"rollback": {"autoResume": true}}),
        tick: "30s",
        duration: "35m",
        timeline: "
  - {at: 5m, set: {p50LatencyMs: 1500}}
  - {at: 21m, set: {p50LatencyMs: 350}}",
        expect: &[
            START[0],
            START[1],
            "900 phase Healthy->RollingBack",
            "900 rollback none->1",
            "900 incident CanaryRollback opened L1",
            "900 render CANARY_SAMPLE_RATE=0.05",
            "900 notify L1 Opened",
            "1200 rollback 1->2",
            "1200 rollback 2->3",
            "1200 render CANARY_SAMPLE_RATE=0.0 FAST_PATH_ENABLED=false MEM0_READS_ENABLED=false MEM0_SHADOW_MODE=false",
            "1560 phase RollingBack->Recovering",
            "1560 rollback 3->4",
            "1560 incident CanaryRollback resolved L1",
            "1560 rollback 4->resumed",
            "1560 render CANARY_SAMPLE_RATE=0.05 FAST_PATH_ENABLED=true MEM0_READS_ENABLED=true MEM0_SHADOW_MODE=true",
            "1560 record CanaryRollback",
            "1560 notify L1 Resolved",
            "1860 phase Recovering->Healthy",
            "1860 ramp 0.05->0.1",
            "1860 render CANARY_SAMPLE_RATE=0.1",
        ],
        effective: &[("CANARY_SAMPLE_RATE", "0.1"), ("FAST_PATH_ENABLED", "true")],
    });
}

#[test]
fn a_rolled_back_tier_stays_rolled_back_until_resumed() {
    check(&Row {
        name: "rolled back until the resume annotation changes",
        spec: json!({}),
        tick: "30s",
        duration: "50m",
        timeline: "
  - {at: 5m, set: {p50LatencyMs: 1500}}
  - {at: 21m, set: {p50LatencyMs: 350}}
  - {at: 40m, event: resume}",
        expect: &[
            START[0],
            START[1],
            "900 phase Healthy->RollingBack",
            "900 rollback none->1",
            "900 incident CanaryRollback opened L1",
            "900 render CANARY_SAMPLE_RATE=0.05",
            "900 notify L1 Opened",
            "1200 rollback 1->2",
            "1200 rollback 2->3",
            "1200 render CANARY_SAMPLE_RATE=0.0 FAST_PATH_ENABLED=false MEM0_READS_ENABLED=false MEM0_SHADOW_MODE=false",
            "1560 phase RollingBack->RolledBack",
            "1560 rollback 3->4",
            "1560 incident CanaryRollback resolved L1",
            "1560 record CanaryRollback",
            "1560 notify L1 Resolved",
            // Healthy signals change nothing until a human resumes.
            "2400 phase RolledBack->Recovering",
            "2400 rollback 4->resumed",
            "2400 render CANARY_SAMPLE_RATE=0.05 FAST_PATH_ENABLED=true MEM0_READS_ENABLED=true MEM0_SHADOW_MODE=true",
            "2700 phase Recovering->Healthy",
            "2700 ramp 0.05->0.1",
            "2700 render CANARY_SAMPLE_RATE=0.1",
        ],
        effective: &[("CANARY_SAMPLE_RATE", "0.1")],
    });
}

#[test]
fn a_spec_change_resumes_and_warms_the_cache() {
    check(&Row {
        name: "deploy: new generation",
        spec: json!({}),
        tick: "1m",
        duration: "32m",
        timeline: "
  - {at: 5m, set: {p50LatencyMs: 1500}}
  - {at: 21m, set: {p50LatencyMs: 350}}
  - {at: 30m, event: deploy}",
        expect: &[
            START[0],
            START[1],
            "900 phase Healthy->RollingBack",
            "900 rollback none->1",
            "900 incident CanaryRollback opened L1",
            "900 render CANARY_SAMPLE_RATE=0.05",
            "900 notify L1 Opened",
            "1200 rollback 1->2",
            "1200 rollback 2->3",
            "1200 render CANARY_SAMPLE_RATE=0.0 FAST_PATH_ENABLED=false MEM0_READS_ENABLED=false MEM0_SHADOW_MODE=false",
            "1560 phase RollingBack->RolledBack",
            "1560 rollback 3->4",
            "1560 incident CanaryRollback resolved L1",
            "1560 record CanaryRollback",
            "1560 notify L1 Resolved",
            "1800 phase RolledBack->Recovering",
            "1800 deploy 1->2",
            "1800 rollback 4->resumed",
            "1800 warm Deploy",
            "1800 render CANARY_SAMPLE_RATE=0.05 FAST_PATH_ENABLED=true MEM0_READS_ENABLED=true MEM0_SHADOW_MODE=true",
        ],
        effective: &[
            ("CANARY_SAMPLE_RATE", "0.05"),
            ("FAST_PATH_ENABLED", "true"),
        ],
    });
}

#[test]
fn missing_data_holds_the_window() {
    check(&Row {
        name: "onMissingData Hold: the gap neither fills nor resets",
        spec: json!({}),
        tick: "30s",
        duration: "17m",
        timeline: "
  - {at: 1m, set: {p50LatencyMs: 1500}}
  - {at: 3m, set: {p50LatencyMs: null}}
  - {at: 8m, set: {p50LatencyMs: 1500}}",
        expect: &[
            START[0],
            START[1],
            // 90 s counted before the gap (60..150), none during it (150..450), then 30 s a tick:
            // 600 s are reached at 960 s instead of 660 s.
            "960 phase Healthy->RollingBack",
            "960 rollback none->1",
            "960 incident CanaryRollback opened L1",
            "960 render CANARY_SAMPLE_RATE=0.05",
            "960 notify L1 Opened",
        ],
        effective: &[("CANARY_SAMPLE_RATE", "0.05")],
    });
}

#[test]
fn missing_data_counts_as_a_breach_when_asked() {
    check(&Row {
        name: "onMissingData Rollback",
        spec: json!({"metrics": {"onMissingData": "Rollback"}}),
        tick: "30s",
        duration: "16m",
        timeline: "
  - {at: 5m, set: {p50LatencyMs: null}}",
        expect: &[
            START[0],
            START[1],
            "900 phase Healthy->RollingBack",
            "900 rollback none->1",
            "900 incident CanaryRollback opened L1",
            "900 render CANARY_SAMPLE_RATE=0.05",
            "900 notify L1 Opened",
        ],
        effective: &[("CANARY_SAMPLE_RATE", "0.05")],
    });
}

#[test]
fn restart_on_change_restarts_after_a_change_but_not_the_first_render() {
    check(&Row {
        name: "target.restartOnChange",
        spec: json!({"target": {"restartOnChange": true, "workloadRef": {"kind": "Deployment", "name": "app"}}}),
        tick: "1m",
        duration: "16m",
        timeline: "
  - {at: 5m, set: {p50LatencyMs: 1500}}",
        expect: &[
            START[0],
            START[1],
            "900 phase Healthy->RollingBack",
            "900 rollback none->1",
            "900 incident CanaryRollback opened L1",
            "900 render CANARY_SAMPLE_RATE=0.05",
            "900 restart",
            "900 notify L1 Opened",
        ],
        effective: &[("CANARY_SAMPLE_RATE", "0.05")],
    });
}

#[test]
fn dry_run_decides_the_same_and_acts_on_nothing() {
    let timeline = "
  - {at: 5m, set: {p50LatencyMs: 1500, cacheHitRatePercent: 80}}
  - {at: 21m, set: {p50LatencyMs: 350, cacheHitRatePercent: 97}}";
    let enforce = run(json!({}), "30s", "40m", timeline);
    let dry = run(json!({"mode": "DryRun"}), "30s", "40m", timeline);
    assert_eq!(lines(&enforce), lines(&dry));
    assert!(lines(&dry).iter().any(|l| l.contains("rollback none->1")));
    let actions = |o: &Outcome| -> Vec<bool> {
        o.entries
            .iter()
            .filter_map(|e| match &e.what {
                EntryKind::Action { dry_run, .. } => Some(*dry_run),
                _ => None,
            })
            .collect()
    };
    assert!(actions(&dry).len() > 5);
    assert!(
        actions(&dry).iter().all(|d| *d),
        "DryRun marks every action"
    );
    assert!(actions(&enforce).iter().all(|d| !*d), "Enforce marks none");
    // Status shows what would have been done: the same effective config and mitigations.
    assert_eq!(enforce.last.effective, dry.last.effective);
    assert_eq!(enforce.last.mitigations, dry.last.mitigations);
    // Its Events say so.
    let events: Vec<&str> = dry
        .last
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Event { message, .. } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        events.iter().all(|m| m.starts_with("DryRun: ")),
        "{events:?}"
    );
}

#[test]
fn paused_observes_and_reports_only() {
    let outcome = run(
        json!({"mode": "Paused"}),
        "30s",
        "40m",
        "
  - {at: 5m, set: {p50LatencyMs: 1500, cacheHitRatePercent: 80, redisUsedMemoryPercent: 95}}
  - {at: 10m, event: redis-restart}",
    );
    assert_eq!(lines(&outcome), ["0 phase Pending->Paused"]);
    let last = &outcome.last;
    assert!(last.mitigations.is_empty());
    assert!(
        last.actions
            .iter()
            .all(|a| matches!(a, Action::Event { .. }))
    );
    // It still observes and reports.
    assert_eq!(
        last.memory.redis.level,
        tierguard::api::MemoryLevel::Critical
    );
    assert!(last.memory.windows.p50_latency.held_for.as_std().as_secs() >= 1800);
    assert!(
        last.conditions
            .iter()
            .any(|c| c.type_ == tierguard::api::ConditionType::MemoryPressure
                && c.status == tierguard::api::conditions::Truth::True)
    );
}

/// Drive `decide` directly through mode switches, which a scenario cannot express.
mod mode_switches {
    use jiff::{SignedDuration, Timestamp};
    use serde_json::json;
    use tierguard::api::{Mode, Observation, Phase, PolicyMemory};
    use tierguard::policy::{Action, AppliedConfig, DecideContext, Decision, decide};

    fn obs(p50: f64) -> Observation {
        Observation {
            p50_latency_ms: Some(p50),
            error_rate_percent: Some(0.5),
            cache_hit_rate_percent: Some(97.0),
            ..Observation::default()
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_900_000_000).unwrap() + SignedDuration::from_secs(secs)
    }

    fn ctx() -> DecideContext {
        DecideContext {
            generation: Some(1),
            resume_token: None,
            applied: AppliedConfig::Unknown,
            last_audit: None,
        }
    }

    fn renders(d: &Decision) -> Vec<&Action> {
        d.actions
            .iter()
            .filter(|a| matches!(a, Action::RenderConfig { .. }))
            .collect()
    }

    #[test]
    fn enforce_after_dry_run_renders_what_was_only_recorded() {
        let mut spec = super::tier(json!({"mode": "DryRun"})).spec;
        let mut memory = PolicyMemory::default();
        let mut last = None;
        for i in 0..=40 {
            let d = decide(
                &spec,
                &memory,
                &obs(if i >= 5 { 1500.0 } else { 300.0 }),
                at(i * 30),
                &ctx(),
            );
            assert!(d.dry_run);
            memory = d.memory.clone();
            last = Some(d);
        }
        let recorded = last.unwrap();
        assert_eq!(recorded.phase, Phase::RollingBack);
        spec.mode = Mode::Enforce;
        let d = decide(&spec, &memory, &obs(1500.0), at(41 * 30), &ctx());
        assert!(!d.dry_run);
        let r = renders(&d);
        assert_eq!(r.len(), 1, "{:?}", d.actions);
        let Action::RenderConfig { config, reason, .. } = r[0] else {
            unreachable!()
        };
        assert_eq!(config, &recorded.effective.config);
        assert!(reason.contains("DryRun"), "{reason}");
        // And only once.
        let next = decide(&spec, &d.memory, &obs(1500.0), at(42 * 30), &ctx());
        assert!(renders(&next).is_empty());
    }

    #[test]
    fn a_tier_unpaused_mid_breach_acts_on_what_held() {
        let mut spec = super::tier(json!({"mode": "Paused"})).spec;
        let mut memory = PolicyMemory::default();
        for i in 0..=30 {
            let d = decide(&spec, &memory, &obs(1500.0), at(i * 30), &ctx());
            assert_eq!(d.phase, Phase::Paused);
            assert!(d.actions.iter().all(|a| matches!(a, Action::Event { .. })));
            memory = d.memory;
        }
        spec.mode = Mode::Enforce;
        let d = decide(&spec, &memory, &obs(1500.0), at(31 * 30), &ctx());
        assert_eq!(
            d.phase,
            Phase::RollingBack,
            "the breach held for 15 minutes while paused"
        );
        assert_eq!(d.effective.config["CANARY_SAMPLE_RATE"], "0.05");
        assert_eq!(renders(&d).len(), 1);
    }

    #[test]
    fn a_drifted_configmap_is_rendered_again_in_enforce() {
        let spec = super::tier(json!({})).spec;
        let first = decide(&spec, &PolicyMemory::default(), &obs(300.0), at(0), &ctx());
        let hash = first.effective.hash.clone().unwrap();
        let same = DecideContext {
            applied: AppliedConfig::Hash(hash.clone()),
            ..ctx()
        };
        assert!(renders(&decide(&spec, &first.memory, &obs(300.0), at(30), &same)).is_empty());
        let edited = DecideContext {
            applied: AppliedConfig::Hash("edited".into()),
            ..ctx()
        };
        let d = decide(&spec, &first.memory, &obs(300.0), at(30), &edited);
        assert_eq!(renders(&d).len(), 1);
        let absent = DecideContext {
            applied: AppliedConfig::Absent,
            ..ctx()
        };
        assert_eq!(
            renders(&decide(&spec, &first.memory, &obs(300.0), at(30), &absent)).len(),
            1
        );
        // DryRun never repairs: it acts on nothing.
        let dry = super::tier(json!({"mode": "DryRun"})).spec;
        assert!(renders(&decide(&dry, &first.memory, &obs(300.0), at(30), &edited)).is_empty());
    }

    #[test]
    fn status_shows_the_decision() {
        let spec = super::tier(json!({})).spec;
        let mut status = tierguard::api::MemoryTierStatus::default();
        for i in 0..=40 {
            let o = obs(if i >= 5 { 1500.0 } else { 300.0 });
            let recalled = tierguard::controller::memory::recall(&status, Some(1), at(i * 30));
            let d = decide(&spec, &recalled.memory, &o, at(i * 30), &ctx());
            status = tierguard::controller::status::next_status(
                &status,
                &tierguard::controller::status::Reconciled {
                    decision: &d,
                    observation: &o,
                    executed: &Default::default(),
                    recalled: &recalled,
                    generation: Some(1),
                    now: at(i * 30),
                },
            );
        }
        assert_eq!(status.phase, Some(Phase::RollingBack));
        assert_eq!(status.mitigations.len(), 1);
        assert_eq!(
            status.mitigations[0].name,
            tierguard::api::MitigationName::RollbackFeatures
        );
        let effective = status.effective.as_ref().unwrap();
        assert_eq!(effective.canary_sample_rate.as_deref(), Some("0.0"));
        assert_eq!(
            effective.overridden_by["FAST_PATH_ENABLED"],
            tierguard::api::MitigationName::RollbackFeatures
        );
        assert_eq!(status.incidents.len(), 1);
        assert!(status.incidents[0].timeline.len() >= 4);
        assert!(tierguard::api::conditions::is_true(
            &status.conditions,
            tierguard::api::ConditionType::RolledBack
        ));
        assert!(!tierguard::api::conditions::is_true(
            &status.conditions,
            tierguard::api::ConditionType::Ready
        ));
        let memory =
            tierguard::controller::memory::decode(status.policy.as_ref().unwrap()).unwrap();
        assert_eq!(
            memory.rollback.as_ref().unwrap().phase,
            tierguard::api::RollbackPhase::Verify
        );
    }
}

/// Evictions are counted from evicted_keys readings; a restarted Redis starts its counter again,
/// which is a reset (counted from zero), never a negative rate.
mod eviction_counter {
    use jiff::{SignedDuration, Timestamp};
    use serde_json::json;
    use tierguard::api::{Observation, PolicyMemory};
    use tierguard::policy::{AppliedConfig, Change, DecideContext, decide};

    #[test]
    fn counter_resets_are_counted_from_zero() {
        let spec = super::tier(
            json!({"redis": {"evictions": {"maxPerSecond": 0.2, "rateWindow": "1m", "for": "0s"}}}),
        )
        .spec;
        let ctx = DecideContext {
            generation: Some(1),
            resume_token: None,
            applied: AppliedConfig::Unknown,
            last_audit: None,
        };
        let t0 = Timestamp::from_second(1_900_000_000).unwrap();
        let readings: [(i64, u64, &str); 5] = [
            (0, 1000, "a"),
            (10, 1005, "a"),
            // Redis restarted: a new run_id and the counter from zero.
            (20, 4, "b"),
            (30, 8, "b"),
            // A counter below the last reading without a run_id change is a reset too.
            (40, 2, "b"),
        ];
        let mut memory = PolicyMemory::default();
        let mut counted = Vec::new();
        let mut alerts = Vec::new();
        for (secs, evicted, run) in readings {
            let obs = Observation {
                redis_evicted_keys: Some(evicted),
                redis_run_id: Some(run.into()),
                ..Observation::default()
            };
            let d = decide(
                &spec,
                &memory,
                &obs,
                t0 + SignedDuration::from_secs(secs),
                &ctx,
            );
            counted.push(d.memory.redis.evictions_total);
            let rate = d.memory_report.evictions_per_second;
            assert!(rate.is_none_or(|r| r >= 0.0), "a negative rate at {secs}s");
            alerts.extend(
                d.changes
                    .iter()
                    .filter(|c| {
                        matches!(
                            c,
                            Change::Alert {
                                subject: tierguard::api::Subject::Evictions,
                                ..
                            }
                        )
                    })
                    .map(|_| secs),
            );
            memory = d.memory;
        }
        // 5, then +4 after the restart, +4, then +2 after the reset: never a negative or wrapped
        // difference of raw readings.
        assert_eq!(counted, [0, 5, 9, 13, 15]);
        // Over the minute, as rate() takes it: 0.19/s at 20 s, 0.25/s at 30 s.
        assert_eq!(alerts, [30], "above 0.2 keys/s from 30 s");
    }
}

/// The runbooks read exactly: each of these failed before the controller followed the runbook's
/// words ("open for >4 hours", `rate(...[5m]) > 10` per second, "> 90%" with the alerts' `for`,
/// escalation that fits the incident).
mod runbook_words {
    use super::{Row, START, check};
    use serde_json::json;

    #[test]
    fn a_breaker_that_closes_before_max_open_duration_is_never_mitigated() {
        check(&Row {
            name: "open 3h59m, then closed",
            spec: json!({}),
            tick: "1m",
            duration: "4h30m",
            timeline: "
  - {at: 1m, set: {breakerState: open}}
  - {at: 4h, set: {breakerState: closed}}",
            expect: &[
                START[0],
                START[1],
                "60 phase Healthy->Degraded",
                "60 alert breaker BreakerOpened",
                "60 incident CircuitBreakerOpen opened L1",
                "60 notify L1 Opened",
                // 15 minutes before maxOpenDuration would switch mem0 reads off.,
                "13560 incident CircuitBreakerOpen escalated L2",
                "13560 notify L2 Escalated",
                // Closed at 4h: no mitigation, no rollback; the outage ends once closed for rampInterval.,
                "14700 breaker open->closed",
                "15000 phase Degraded->Healthy",
                "15000 incident CircuitBreakerOpen resolved L2",
                "15000 record CircuitBreakerOpen",
                "15000 notify L2 Resolved",
            ],
            effective: &[
                ("MEM0_READS_ENABLED", "true"),
                ("CANARY_SAMPLE_RATE", "0.1"),
            ],
        });
    }

    #[test]
    fn a_breaker_that_reopens_starts_a_new_clock() {
        check(&Row {
            name: "open 30s, closed 10s, open 35s: no clock reaches 40s",
            spec: json!({
                "breaker": {"maxOpenDuration": "40s"},
                "canary": {"rampInterval": "30s"},
                "rollback": {"breakerOpenFor": "1h"},
                "notify": {"escalate": {"nearActionLead": "5s"}},
            }),
            tick: "1s",
            duration: "2m",
            timeline: "
  - {at: 10s, set: {breakerState: open}}
  - {at: 40s, set: {breakerState: closed}}
  - {at: 50s, set: {breakerState: open}}
  - {at: 85s, set: {breakerState: closed}}",
            expect: &[
                START[0],
                START[1],
                "10 phase Healthy->Degraded",
                "10 alert breaker BreakerOpened",
                "10 incident CircuitBreakerOpen opened L1",
                "10 notify L1 Opened",
                // 30 s and 35 s open: neither clock reaches maxOpenDuration, nor the lead.
                "115 breaker open->closed",
            ],
            effective: &[("MEM0_READS_ENABLED", "true")],
        });
    }

    #[test]
    fn bridged_gaps_continue_the_open_clock() {
        check(&Row {
            name: "the same with breaker.bridgeClosedGaps 15s",
            spec: json!({
                "breaker": {"maxOpenDuration": "40s", "bridgeClosedGaps": "15s"},
                "canary": {"rampInterval": "30s"},
                "rollback": {"breakerOpenFor": "1h"},
                "notify": {"escalate": {"nearActionLead": "5s"}},
            }),
            tick: "1s",
            duration: "2m",
            timeline: "
  - {at: 10s, set: {breakerState: open}}
  - {at: 40s, set: {breakerState: closed}}
  - {at: 50s, set: {breakerState: open}}
  - {at: 85s, set: {breakerState: closed}}",
            expect: &[
                START[0],
                START[1],
                "10 phase Healthy->Degraded",
                "10 alert breaker BreakerOpened",
                "10 incident CircuitBreakerOpen opened L1",
                "10 notify L1 Opened",
                // 30 s before the gap and 5 s after it: 5 s before the action.,
                "55 incident CircuitBreakerOpen escalated L2",
                "55 notify L2 Escalated",
                "60 breaker open->mem0-off",
                "60 incident CircuitBreakerOpen escalated L3",
                "60 render MEM0_READS_ENABLED=false MEM0_SHADOW_MODE=false",
                "60 notify L3 Escalated",
                "115 breaker open->closed",
                "115 breaker mem0-off->closed",
                "115 render MEM0_READS_ENABLED=true MEM0_SHADOW_MODE=true",
            ],
            effective: &[("MEM0_READS_ENABLED", "true")],
        });
    }

    #[test]
    fn one_evicted_key_per_second_is_not_an_eviction_alert() {
        check(&Row {
            name: "1 key/s for 20 minutes",
            spec: json!({}),
            tick: "30s",
            duration: "20m",
            timeline: "
  - {at: 1m, set: {redisEvictionsPerSecond: 1}}",
            expect: &[START[0], START[1]],
            effective: &[],
        });
    }

    #[test]
    fn twenty_evicted_keys_per_second_alert_after_the_hold_and_again_after_a_restart() {
        check(&Row {
            name: "20 keys/s, a Redis restart in the middle",
            spec: json!({"stampede": {"coldStart": false}, "warming": {"triggers": []}}),
            tick: "30s",
            duration: "40m",
            timeline: "
  - {at: 1m, set: {redisEvictionsPerSecond: 20}}
  - {at: 15m, set: {redisEvictionsPerSecond: 0}}
  - {at: 25m, event: redis-restart}
  - {at: 25m, set: {redisEvictionsPerSecond: 20}}",
            expect: &[
                START[0],
                START[1],
                // rate(...[5m]) passes 10/s at 240 s (3600 keys over the 5m range), held for 5m.,
                "540 phase Healthy->Degraded",
                "540 alert evictions Evictions",
                "540 incident RedisMemory opened L1",
                "540 notify L1 Opened",
                "1140 evictions alert->ok",
                "1440 phase Degraded->Healthy",
                "1440 incident RedisMemory resolved L1",
                "1440 record RedisMemory",
                "1440 notify L1 Resolved",
                // After the restart the counter starts again from 0: a reset, not a negative rate.,
                "1980 phase Healthy->Degraded",
                "1980 alert evictions Evictions",
                "1980 incident RedisMemory opened L1",
                "1980 notify L1 Opened",
            ],
            effective: &[],
        });
    }

    #[test]
    fn memory_levels_are_strict_and_held() {
        check(&Row {
            name: "exactly 90%, a one-reading spike to 91%, then 95% held",
            spec: json!({}),
            tick: "30s",
            duration: "20m",
            timeline: "
  - {at: 1m, set: {redisUsedMemoryPercent: 90}}
  - {at: 3m, set: {redisUsedMemoryPercent: 91}}
  - {at: 210s, set: {redisUsedMemoryPercent: 60}}
  - {at: 5m, set: {redisUsedMemoryPercent: 95}}",
            expect: &[
                START[0],
                START[1],
                // 90% is above watch (70%) but not above critical (90%); warning needs 5m.,
                "60 phase Healthy->Degraded",
                "60 alert redis-memory MemoryWatch",
                // The one reading at 91% (180 s) deletes nothing.,
                "210 phase Degraded->Healthy",
                "210 redis-memory watch->ok",
                "300 phase Healthy->Degraded",
                "300 alert redis-memory MemoryWatch",
                // Above 90% for the 1m hold: critical, remediation.,
                "360 alert redis-memory MemoryCritical",
                "360 incident RedisMemory opened L1",
                "360 remediate",
                "360 audit",
                "360 notify L1 Opened",
                "960 remediate",
                "960 audit",
                // Still critical after the two runs (and their 30s), no maxMemoryCeiling: level 2
                // at once with the audit's findings (option B needs a person).
                "990 incident RedisMemory escalated L2",
                "990 notify L2 Escalated",
            ],
            effective: &[],
        });
    }

    #[test]
    fn a_memory_warning_stays_at_level_one_and_critical_escalates_from_when_it_began() {
        check(&Row {
            name: "85% for an hour, then 95%",
            spec: json!({}),
            tick: "1m",
            duration: "1h40m",
            timeline: "
  - {at: 1m, set: {redisUsedMemoryPercent: 85}}
  - {at: 1h, set: {redisUsedMemoryPercent: 95}}",
            expect: &[
                START[0],
                START[1],
                "60 phase Healthy->Degraded",
                "60 alert redis-memory MemoryWatch",
                // Above 80% for 5m: warning, level 1 only for as long as it lasts.,
                "360 alert redis-memory MemoryWarning",
                "360 incident RedisMemory opened L1",
                "360 notify L1 Opened",
                // Above 90% for 1m: critical; remediation every cooldown, escalation timed from here.,
                "3660 alert redis-memory MemoryCritical",
                "3660 remediate",
                "3660 audit",
                "4260 remediate",
                "4260 audit",
                // Still critical after two runs, no maxMemoryCeiling: level 2 at once (before the
                // timed 15m); level 3 stays timed from when critical began.
                "4320 incident RedisMemory escalated L2",
                "4320 notify L2 Escalated",
                "4860 remediate",
                "4860 audit",
                "5460 incident RedisMemory escalated L3",
                "5460 remediate",
                "5460 audit",
                "5460 notify L3 Escalated",
            ],
            effective: &[],
        });
    }

    #[test]
    fn a_breaker_with_its_fallback_working_stays_at_level_one() {
        check(&Row {
            name: "breaker open 39 minutes",
            spec: json!({}),
            tick: "1m",
            duration: "55m",
            timeline: "
  - {at: 1m, set: {breakerState: open}}
  - {at: 40m, set: {breakerState: closed}}",
            expect: &[
                START[0],
                START[1],
                "60 phase Healthy->Degraded",
                "60 alert breaker BreakerOpened",
                "60 incident CircuitBreakerOpen opened L1",
                "60 notify L1 Opened",
                // No escalation: the fallback works and maxOpenDuration (4h) is far.,
                "2700 breaker open->closed",
                "3000 phase Degraded->Healthy",
                "3000 incident CircuitBreakerOpen resolved L1",
                "3000 record CircuitBreakerOpen",
                "3000 notify L1 Resolved",
            ],
            effective: &[("MEM0_READS_ENABLED", "true")],
        });
    }
}

/// Incident #1's decision tree on the breaker probe's finding (`spec.breaker.probe`): the probe
/// runs while the breaker is open, at most once per interval, and what it finds decides.
mod breaker_diagnosis {
    use super::*;

    /// A tier whose breaker probe runs every 10 s; seconds stand for minutes.
    fn probed(extra: Value) -> Value {
        let mut spec = json!({
            "breaker": {
                "maxOpenDuration": "1h",
                "probe": {
                    "healthUrl": "http://mem0.example/v1/health",
                    "authUrl": "http://mem0.example/v1/users/me",
                    "apiKeySecretRef": {"name": "mem0", "key": "apiKey"},
                    "interval": "10s",
                    "timeout": "2s",
                },
            },
            "canary": {"rampInterval": "10s"},
            "rollback": {"breakerOpenFor": "2h", "mem0WriteSuccessFor": "1h"},
        });
        json_patch::merge(&mut spec, &extra);
        spec
    }

    /// The notifications of a run.
    fn notifications(outcome: &Outcome) -> Vec<tierguard::policy::Notification> {
        outcome
            .entries
            .iter()
            .filter_map(|e| match &e.what {
                EntryKind::Action {
                    action: Action::Notify(n),
                    ..
                } => Some(n.clone()),
                _ => None,
            })
            .collect()
    }

    const AUTH: &str = "
  - {at: 10s, set: {breakerState: open, mem0WriteSuccessPercent: 0}, probe: AuthFailure}
  - {at: 60s, set: {breakerState: closed, mem0WriteSuccessPercent: 100}}";

    #[test]
    fn an_auth_failure_pages_level_two_at_once_with_the_key_rotation() {
        check(&Row {
            name: "breaker open, key refused",
            spec: probed(json!({})),
            tick: "1s",
            duration: "100s",
            timeline: AUTH,
            expect: &[
                START[0],
                START[1],
                "10 phase Healthy->Degraded",
                "10 alert breaker BreakerOpened",
                "10 incident CircuitBreakerOpen opened L1",
                // No wait for maxOpenDuration (1h here): level 2 at once.
                "10 incident CircuitBreakerOpen escalated L2",
                "10 alert breaker BreakerDiagnosed",
                "10 notify L1 Opened",
                "10 notify L2 Escalated",
                "70 breaker open->closed",
                "80 phase Degraded->Healthy",
                "80 incident CircuitBreakerOpen resolved L2",
                "80 record CircuitBreakerOpen",
                "80 notify L2 Resolved",
            ],
            effective: &[
                ("CANARY_SAMPLE_RATE", "0.1"),
                ("MEM0_READS_ENABLED", "true"),
            ],
        });
        let outcome = run(probed(json!({})), "1s", "100s", AUTH);
        let page = notifications(&outcome)
            .into_iter()
            .find(|n| n.level == 2 && n.kind == tierguard::policy::NotifyKind::Escalated)
            .expect("level 2 is paged");
        let why = page.escalated_because.unwrap_or_default();
        assert!(why.contains("AuthFailure"), "{why}");
        assert!(
            why.contains("fly secrets set MEM0_API_KEY=<new_key>"),
            "{why}"
        );
        // The incident keeps the finding for the report.
        let record = outcome
            .entries
            .iter()
            .find_map(|e| match &e.what {
                EntryKind::Action {
                    action: Action::RecordIncident { incident, .. },
                    ..
                } => Some((**incident).clone()),
                _ => None,
            })
            .expect("the incident is recorded");
        assert!(
            record
                .diagnosis
                .as_deref()
                .is_some_and(|d| d.starts_with("AuthFailure: authenticated call answered HTTP 401")),
            "{record:?}"
        );
        assert!(
            record
                .timeline
                .iter()
                .any(|e| e.what.starts_with("Diagnosis AuthFailure")),
            "{:?}",
            record.timeline
        );
    }

    #[test]
    fn rate_limiting_sheds_the_canary_until_writes_succeed_then_ramps_back() {
        check(&Row {
            name: "breaker open, 429 with Retry-After",
            spec: probed(json!({"canary": {"sampleRate": 0.2, "reducedRate": 0.05, "rampStep": 0.05}})),
            tick: "1s",
            duration: "100s",
            timeline: "
  - {at: 10s, set: {breakerState: open, mem0WriteSuccessPercent: 80}, probe: RateLimited, probeRetryAfter: 25s}
  - {at: 20s, probe: Healthy}
  - {at: 40s, set: {breakerState: closed, mem0WriteSuccessPercent: 99.5}}",
            expect: &[
                START[0],
                START[1],
                "10 phase Healthy->Degraded",
                "10 alert breaker BreakerOpened",
                "10 incident CircuitBreakerOpen opened L1",
                "10 alert breaker BreakerDiagnosed",
                // The runbook's CANARY_SAMPLE_RATE=0.05 (canary.reducedRate), at once.
                "10 breaker 0.2->0.05",
                "10 render CANARY_SAMPLE_RATE=0.05",
                "10 notify L1 Opened",
                // The 429's Retry-After (25 s) holds the next probe past the 10 s interval.
                "35 alert breaker BreakerDiagnosed",
                "35 notify L1 Diagnosed",
                // Writes succeed again from 40 s: one step per rampInterval of success.
                "50 phase Degraded->Recovering",
                "50 breaker open->closed",
                "50 ramp 0.05->0.1",
                "50 render CANARY_SAMPLE_RATE=0.1",
                "61 ramp 0.1->0.15",
                "61 render CANARY_SAMPLE_RATE=0.15",
                "72 phase Recovering->Degraded",
                "72 ramp 0.15->0.2",
                "72 render CANARY_SAMPLE_RATE=0.2",
                "73 phase Degraded->Healthy",
                "73 incident CircuitBreakerOpen resolved L1",
                "73 record CircuitBreakerOpen",
                "73 notify L1 Resolved",
            ],
            effective: &[("CANARY_SAMPLE_RATE", "0.2")],
        });
    }

    #[test]
    fn writes_still_failing_keep_the_canary_down() {
        let outcome = run(
            probed(json!({})),
            "1s",
            "120s",
            "
  - {at: 10s, set: {breakerState: open, mem0WriteSuccessPercent: 80}, probe: RateLimited}
  - {at: 40s, set: {breakerState: closed}}",
        );
        assert_eq!(
            outcome.last.effective.config["CANARY_SAMPLE_RATE"],
            "0.05",
            "{:#?}",
            lines(&outcome)
        );
        assert!(
            outcome
                .last
                .mitigations
                .iter()
                .any(|m| m.name == tierguard::api::MitigationName::BreakerRateLimitShed)
        );
    }

    #[test]
    fn a_healthy_dependency_gets_the_step_four_advice_and_no_restart() {
        let spec = probed(json!({
            "target": {"restartOnChange": true, "workloadRef": {"kind": "Deployment", "name": "app"}},
        }));
        check(&Row {
            name: "breaker open, mem0 healthy",
            spec: spec.clone(),
            tick: "1s",
            duration: "100s",
            timeline: "
  - {at: 10s, set: {breakerState: open}}
  - {at: 25s, probe: Healthy}
  - {at: 50s, set: {breakerState: closed}}",
            expect: &[
                START[0],
                START[1],
                "10 phase Healthy->Degraded",
                "10 alert breaker BreakerOpened",
                "10 incident CircuitBreakerOpen opened L1",
                "10 notify L1 Opened",
                // Found later: a notification of its own to whoever knows of the incident.
                "25 alert breaker BreakerDiagnosed",
                "25 notify L1 Diagnosed",
                "60 breaker open->closed",
                "70 phase Degraded->Healthy",
                "70 incident CircuitBreakerOpen resolved L1",
                "70 record CircuitBreakerOpen",
                "70 notify L1 Resolved",
            ],
            effective: &[("CANARY_SAMPLE_RATE", "0.1")],
        });
        let outcome = run(
            spec,
            "1s",
            "100s",
            "
  - {at: 10s, set: {breakerState: open}}
  - {at: 25s, probe: Healthy}",
        );
        let advice = notifications(&outcome)
            .into_iter()
            .find(|n| n.kind == tierguard::policy::NotifyKind::Diagnosed)
            .and_then(|n| n.escalated_because)
            .expect("the diagnosis is notified");
        assert!(advice.contains("application's side"), "{advice}");
        assert!(advice.contains("60s of successful requests"), "{advice}");
    }

    #[test]
    fn a_dependency_that_is_down_waits_for_max_open_duration() {
        check(&Row {
            name: "breaker open, mem0 down",
            spec: probed(
                json!({"breaker": {"maxOpenDuration": "30s"}, "notify": {"escalate": {"nearActionLead": "10s"}}}),
            ),
            tick: "1s",
            duration: "100s",
            timeline: "
  - {at: 10s, set: {breakerState: open}, probe: Down}
  - {at: 60s, set: {breakerState: closed}}",
            expect: &[
                START[0],
                START[1],
                "10 phase Healthy->Degraded",
                "10 alert breaker BreakerOpened",
                "10 incident CircuitBreakerOpen opened L1",
                "10 alert breaker BreakerDiagnosed",
                "10 notify L1 Opened",
                // The runbook's wait: escalation and mem0 off only as maxOpenDuration says.
                "30 incident CircuitBreakerOpen escalated L2",
                "30 notify L2 Escalated",
                "40 breaker open->mem0-off",
                "40 incident CircuitBreakerOpen escalated L3",
                "40 render MEM0_READS_ENABLED=false MEM0_SHADOW_MODE=false",
                "40 notify L3 Escalated",
                "70 breaker open->closed",
                "70 breaker mem0-off->closed",
                "70 render MEM0_READS_ENABLED=true MEM0_SHADOW_MODE=true",
                "80 phase Degraded->Healthy",
                "80 incident CircuitBreakerOpen resolved L3",
                "80 record CircuitBreakerOpen",
                "80 notify L3 Resolved",
            ],
            effective: &[("MEM0_READS_ENABLED", "true")],
        });
    }

    #[test]
    fn an_auth_failure_found_after_level_two_was_paged_pages_nobody_more() {
        let outcome = run(
            probed(
                json!({"breaker": {"maxOpenDuration": "30s"}, "notify": {"escalate": {"nearActionLead": "20s"}}}),
            ),
            "1s",
            "60s",
            "
  - {at: 10s, set: {breakerState: open}}
  - {at: 25s, probe: AuthFailure}",
        );
        let escalations: Vec<String> = lines(&outcome)
            .into_iter()
            .filter(|l| l.contains("escalated"))
            .collect();
        // Level 2 when maxOpenDuration drew near (20 s), level 3 when mem0 was switched off
        // (40 s); the auth failure at 25 s finds level 2 told already.
        assert_eq!(
            escalations,
            [
                "20 incident CircuitBreakerOpen escalated L2",
                "40 incident CircuitBreakerOpen escalated L3"
            ]
        );
        assert!(
            lines(&outcome).contains(&"25 notify L2 Diagnosed".to_owned()),
            "the finding is still told: {:#?}",
            lines(&outcome)
        );
    }

    #[test]
    fn a_probe_answer_without_a_probe_in_the_spec_is_refused() {
        let yaml = format!(
            "tick: 1s\nduration: 10s\nsignals:{HEALTHY}\ntimeline:\n  - {{at: 1s, probe: Down}}"
        );
        let scenario = simulate::scenario::parse(&yaml).unwrap();
        let err = simulate::run(&tier(json!({})), &scenario).unwrap_err();
        assert!(err.to_string().contains("spec.breaker.probe"), "{err}");
    }
}

/// The incident's measured impact: what the report's Impact section and the communication
/// template's "[X]% of users affected" are written from.
mod impact {
    use super::*;
    use tierguard::act::report::{ReportContext, render};
    use tierguard::api::IncidentSummary;

    fn recorded(outcome: &Outcome) -> IncidentSummary {
        outcome
            .entries
            .iter()
            .find_map(|e| match &e.what {
                EntryKind::Action {
                    action: Action::RecordIncident { incident, .. },
                    ..
                } => Some((**incident).clone()),
                _ => None,
            })
            .expect("the incident is recorded")
    }

    fn report(incident: &IncidentSummary) -> String {
        render(
            incident,
            &ReportContext {
                namespace: "n",
                tier: "t",
                now: incident.resolved_at.unwrap(),
                observed: None,
                mitigations: &[],
            },
        )
    }

    #[test]
    fn a_stampede_hits_the_whole_service_and_counts_its_failed_requests() {
        // 3000 requests per 5m rate window: 10 a second; 2% of them fail during the stampede.
        let outcome = run(
            json!({"stampede": {"for": "30s"}, "canary": {"rampInterval": "1m"}}),
            "10s",
            "10m",
            "
  - {at: 0s, set: {requests: 3000}}
  - {at: 60s, set: {cacheHitRatePercent: 80, p50LatencyMs: 800, errorRatePercent: 2}}
  - {at: 100s, set: {cacheHitRatePercent: 70}}
  - {at: 150s, set: {cacheHitRatePercent: 97, p50LatencyMs: 300, errorRatePercent: 0}}",
        );
        let incident = recorded(&outcome);
        let impact = incident.impact.clone().expect("measured");
        // Opened at 90 s (30 s of breach), resolved at 210 s: 120 s of readings at 10 req/s.
        assert_eq!(impact.measured_seconds, 120.0, "{impact:?}");
        assert_eq!(impact.requests, 1200.0);
        assert_eq!(impact.affected_requests, 1200.0);
        // 2% of the requests of the readings at 100 to 140 s (10 s each; the one at 90 s opens
        // the incident and starts the clock).
        assert_eq!(impact.failed_requests, 2.0 / 100.0 * 10.0 * 5.0 * 10.0);
        assert_eq!(impact.affected_percent(), Some(100.0));
        let hit = &impact.peaks["cacheHitRatePercent"];
        assert_eq!((hit.value, hit.threshold), (70.0, 95.0));
        assert_eq!(impact.peaks["p50LatencyMs"].value, 800.0);

        let md = report(&incident);
        for line in [
            "- 100% of users affected (the whole service: ~1200 of ~1200 requests during the incident)\n",
            "- Failed requests: ~10, over 2m0s of readings\n",
            "- Peak cache hit rate: 70% at 00:01:40 UTC (below 95%)\n",
            "- Peak P50 latency: 800 ms at 00:01:30 UTC (above 500 ms)\n",
            "### Time from detection\n",
        ] {
            assert!(md.contains(line), "missing {line:?} in\n{md}");
        }
        assert!(!md.contains("not measured"), "{md}");
    }

    #[test]
    fn a_breaker_hits_the_canary_cohort_share() {
        // 3000 requests per window, 300 of them the canary's (10%), 40% of those failing.
        let outcome = run(
            json!({"canary": {"rampInterval": "1m"}}),
            "10s",
            "10m",
            "
  - {at: 0s, set: {requests: 3000, cohorts: {canary: {requests: 300, errorRatePercent: 0}, stable: {requests: 2700, errorRatePercent: 0}}}}
  - {at: 60s, set: {breakerState: open, mem0WriteSuccessPercent: 60, cohorts: {canary: {errorRatePercent: 40}}}}
  - {at: 120s, set: {breakerState: closed, mem0WriteSuccessPercent: 100, cohorts: {canary: {errorRatePercent: 0}}}}",
        );
        let incident = recorded(&outcome);
        let impact = incident.impact.clone().expect("measured");
        let share = impact.affected_requests / impact.requests;
        assert!((share - 0.1).abs() < 1e-9, "{impact:?}");
        // Failed: 40% of the canary's 1 req/s over the readings from 70 s to 120 s... while open.
        assert!(!impact.failed_service_wide);
        assert_eq!(impact.failed_requests, 0.4 * 1.0 * 10.0 * 5.0, "{impact:?}");
        assert_eq!(impact.peaks["mem0WriteSuccessPercent"].value, 60.0);
        let md = report(&incident);
        assert!(
            md.contains("- 10% of users affected (the canary's share of the traffic:"),
            "{md}"
        );
        assert!(md.contains("- Failed requests: ~20,"), "{md}");
    }
}
