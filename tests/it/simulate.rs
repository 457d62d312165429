//! `tierguard simulate` end to end: the real binary on the shipped scenarios, against a manifest
//! with the runbook defaults, each scenario's expected outcome asserted from its JSON lines.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn defaults_manifest() -> PathBuf {
    root().join("tests/data/memorytier-defaults.yaml")
}

fn scenario(name: &str) -> PathBuf {
    root()
        .join("examples/scenarios")
        .join(format!("{name}.yaml"))
}

fn tierguard(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tierguard"))
        .args(args)
        .output()
        .expect("the tierguard binary runs")
}

/// Run a scenario with `--output json` and parse every line.
fn simulate_json(manifest: &Path, name: &str) -> Vec<Value> {
    let out = tierguard(&[
        "simulate",
        manifest.to_str().unwrap(),
        "--scenario",
        scenario(name).to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{name}: exit {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 output");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {l}")))
        .collect();
    for line in &lines {
        assert!(line["t"].is_number(), "{name}: t must be a number: {line}");
        let kind = line["type"].as_str().unwrap_or_default();
        assert!(
            ["transition", "action", "alert", "incident"].contains(&kind),
            "{name}: unexpected type {kind:?}"
        );
        if kind == "action" {
            assert!(
                line["action"].is_string(),
                "{name}: action without a name: {line}"
            );
            if line["action"] == "render-config" {
                assert!(
                    line["config"].as_object().is_some_and(|c| c.len() >= 14),
                    "{name}: render-config must carry the full config: {line}"
                );
            }
        }
    }
    assert!(!lines.is_empty(), "{name}: no output");
    lines
}

fn t(line: &Value) -> f64 {
    line["t"].as_f64().unwrap()
}

fn of_type<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["type"] == kind).collect()
}

fn actions<'a>(lines: &'a [Value], action: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["type"] == "action" && l["action"] == action)
        .collect()
}

fn transitions<'a>(lines: &'a [Value], subject: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["type"] == "transition" && l["subject"] == subject)
        .collect()
}

fn config<'a>(render: &'a Value, key: &str) -> &'a str {
    render["config"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {render}"))
}

/// The first time (seconds) at or after which the scenario's timeline makes `pred` true of a
/// `set`, rounded up to the scenario's tick: when the policy first sees it.
fn first_seen(name: &str, pred: impl Fn(&tierguard::simulate::SignalPatch) -> bool) -> f64 {
    let s = tierguard::simulate::load_scenario(&scenario(name)).expect("scenario loads");
    let at = s
        .timeline
        .iter()
        .find(|step| step.set.as_ref().is_some_and(&pred))
        .expect("the scenario has such a step")
        .at
        .as_secs_f64();
    let tick = s.tick.as_secs_f64();
    (at / tick).ceil() * tick
}

fn canary_regression_acceptance(manifest: &Path) {
    let tier = tierguard::simulate::load_manifest(manifest).expect("manifest loads");
    let r = &tier.spec.rollback;
    let lines = simulate_json(manifest, "canary-regression");
    let breach_from = first_seen("canary-regression", |p| {
        p.number(tierguard::api::Signal::P50LatencyMs)
            .flatten()
            .is_some_and(|v| v > r.p50_latency_ms)
    });
    let renders = actions(&lines, "render-config");
    let baseline = tierguard::policy::effective::format_rate(tier.spec.canary.sample_rate);
    let reduced = tierguard::policy::effective::format_rate(tier.spec.canary.reduced_rate);
    assert_eq!(config(renders[0], "CANARY_SAMPLE_RATE"), baseline);

    // Phase 1: canary → reducedRate exactly when P50 has breached for p50LatencyFor.
    let phase1 = renders[1];
    assert_eq!(t(phase1), breach_from + r.p50_latency_for.as_secs_f64());
    assert_eq!(
        phase1["changed"]["CANARY_SAMPLE_RATE"]["from"],
        baseline.as_str()
    );
    assert_eq!(config(phase1, "CANARY_SAMPLE_RATE"), reduced);
    assert_eq!(config(phase1, "FAST_PATH_ENABLED"), "true");

    // After the hold: canary 0 and, in phase 2, the features off.
    let phase2 = renders[2];
    assert_eq!(t(phase2), t(phase1) + r.phase_hold.as_secs_f64());
    assert_eq!(config(phase2, "CANARY_SAMPLE_RATE"), "0.0");
    for flag in [
        "FAST_PATH_ENABLED",
        "MEM0_READS_ENABLED",
        "MEM0_SHADOW_MODE",
    ] {
        assert_eq!(config(phase2, flag), "false", "{flag} in phase 2");
    }
    let rollback = transitions(&lines, "rollback");
    let steps: Vec<(f64, &str, &str)> = rollback
        .iter()
        .map(|l| (t(l), l["from"].as_str().unwrap(), l["to"].as_str().unwrap()))
        .collect();
    assert_eq!(steps[0], (t(phase1), "none", "1"));
    assert_eq!(steps[1], (t(phase2), "1", "2"));
    // Phase 3, the verify step, then phase 4 once the signals stayed within bounds.
    assert_eq!(steps[2], (t(phase2), "2", "3"));
    let recovered = first_seen("canary-regression", |p| {
        p.number(tierguard::api::Signal::P50LatencyMs)
            .flatten()
            .is_some_and(|v| v <= r.p50_latency_ms)
    });
    assert_eq!(steps[3], (recovered + r.phase_hold.as_secs_f64(), "3", "4"));
    assert_eq!(steps.len(), 4, "exactly one rollback: {steps:?}");

    // Phase 4: the incident record.
    let records = actions(&lines, "record-incident");
    assert_eq!(records.len(), 1);
    assert_eq!(t(records[0]), steps[3].0);
    let incident = &records[0]["incident"];
    assert_eq!(incident["runbook"], "CanaryRollback");
    assert!(incident["resolvedAt"].is_string());
    let timeline: Vec<&str> = incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["what"].as_str().unwrap())
        .collect();
    assert!(
        timeline[0].starts_with("Anomaly detected: P50 latency"),
        "{timeline:?}"
    );
    assert!(
        timeline.iter().any(|w| w.starts_with("Features disabled")),
        "{timeline:?}"
    );
    assert!(
        timeline.iter().any(|w| w.starts_with("System stable")),
        "{timeline:?}"
    );
    // Still rolled back at the end: no resume in this scenario.
    assert_eq!(lines.last().unwrap()["phase"], "RolledBack");
}

#[test]
fn canary_regression_rolls_back_in_phases() {
    canary_regression_acceptance(&defaults_manifest());
}

#[test]
fn canary_regression_against_the_shipped_example_manifest() {
    let example = root().join("examples/memorytier.yaml");
    if !example.exists() {
        eprintln!("SKIPPED: {} does not exist yet", example.display());
        return;
    }
    canary_regression_acceptance(&example);
}

#[test]
fn every_shipped_scenario_runs_against_the_shipped_example_manifest() {
    let example = root().join("examples/memorytier.yaml");
    if !example.exists() {
        eprintln!("SKIPPED: {} does not exist yet", example.display());
        return;
    }
    for name in SCENARIOS {
        simulate_json(&example, name);
    }
}

const SCENARIOS: [&str; 13] = [
    "hot-clinic-stampede",
    "redis-leak",
    "circuit-breaker-outage",
    "cache-stampede",
    "redis-oom",
    "canary-regression",
    "flapping",
    "metrics-outage",
    "cold-start",
    "canary-only-regression",
    "whole-service-regression",
    "low-traffic-night",
    "aa-day",
];

#[test]
fn every_scenario_file_is_shipped_and_documented() {
    let readme = std::fs::read_to_string(root().join("examples/scenarios/README.md")).unwrap();
    for name in SCENARIOS {
        assert!(scenario(name).exists(), "{name}.yaml missing");
        assert!(
            readme.contains(&format!("{name}.yaml")),
            "README does not describe {name}"
        );
    }
}

/// The first rollback transition (phase 1) of a run.
fn first_rollback(lines: &[Value]) -> Option<&Value> {
    transitions(lines, "rollback")
        .into_iter()
        .find(|l| l["from"] == "none")
}

/// The scenario's first `set` of the canary cohort's P50 above `threshold`, as the policy sees it.
fn canary_p50_breach_from(name: &str, threshold: f64) -> f64 {
    first_seen(name, |p| {
        p.cohorts
            .get(&tierguard::api::signals::Cohort::Canary)
            .is_some_and(|c| {
                c.get(&tierguard::api::Signal::P50LatencyMs)
                    .is_some_and(|input| {
                        input
                            .as_ref()
                            .and_then(|i| i.mean())
                            .is_some_and(|m| m > threshold)
                    })
            })
    })
}

#[test]
fn a_canary_only_regression_at_ten_percent_is_rolled_back_on_the_canarys_own_p50() {
    let tier = tierguard::simulate::load_manifest(&defaults_manifest()).unwrap();
    let r = &tier.spec.rollback;
    let lines = simulate_json(&defaults_manifest(), "canary-only-regression");
    // The service's P50 never reaches the threshold: a whole-service criterion could not fire.
    let s = tierguard::simulate::load_scenario(&scenario("canary-only-regression")).unwrap();
    let service_p50 = s
        .signals
        .number(tierguard::api::Signal::P50LatencyMs)
        .flatten();
    assert!(
        service_p50.is_some_and(|v| v < r.p50_latency_ms),
        "{service_p50:?}"
    );
    assert!(s.timeline.iter().all(|step| {
        step.set
            .as_ref()
            .and_then(|p| p.number(tierguard::api::Signal::P50LatencyMs))
            .is_none()
    }));

    let breach = canary_p50_breach_from("canary-only-regression", r.p50_latency_ms);
    let rollback = first_rollback(&lines).expect("the canary is rolled back");
    assert_eq!(
        t(rollback),
        breach + r.p50_latency_for.as_secs_f64(),
        "{rollback}"
    );
    let reason = rollback["reason"].as_str().unwrap();
    assert!(reason.starts_with("canary P50 latency "), "{reason}");
    assert!(
        reason.contains("above 1000 ms for 10m (stable cohort "),
        "{reason}"
    );
    assert!(!reason.contains("equally affected"), "{reason}");
    let render = actions(&lines, "render-config")
        .into_iter()
        .find(|l| t(l) == t(rollback))
        .expect("phase 1 renders the reduced rate");
    assert_eq!(config(render, "CANARY_SAMPLE_RATE"), "0.05");
}

#[test]
fn a_whole_service_regression_still_rolls_back_and_says_the_stable_cohort_is_affected_too() {
    let tier = tierguard::simulate::load_manifest(&defaults_manifest()).unwrap();
    let r = &tier.spec.rollback;
    let lines = simulate_json(&defaults_manifest(), "whole-service-regression");
    let breach = canary_p50_breach_from("whole-service-regression", r.p50_latency_ms);
    let rollback = first_rollback(&lines).expect("the runbook's threshold still holds");
    assert_eq!(
        t(rollback),
        breach + r.p50_latency_for.as_secs_f64(),
        "{rollback}"
    );
    let reason = rollback["reason"].as_str().unwrap();
    assert!(
        reason.contains("the stable cohort is equally affected"),
        "{reason}"
    );
}

#[test]
fn a_low_traffic_night_is_not_rolled_back_unless_the_minimum_sample_is_switched_off() {
    let lines = simulate_json(&defaults_manifest(), "low-traffic-night");
    assert!(
        first_rollback(&lines).is_none(),
        "{:?}",
        transitions(&lines, "rollback")
    );
    assert!(of_type(&lines, "incident").is_empty());

    // The guard is what keeps the night quiet: without it the same input rolls back.
    let dir = tempfile::tempdir().unwrap();
    let manifest = std::fs::read_to_string(defaults_manifest())
        .unwrap()
        .replace("spec:\n", "spec:\n  rollback:\n    minRequests: 0\n");
    let manifest = write(dir.path(), "no-minimum.yaml", &manifest);
    let unguarded = simulate_json(&manifest, "low-traffic-night");
    let rollback = first_rollback(&unguarded).expect("without the minimum sample it rolls back");
    let night = 10.0 * 60.0;
    assert!(
        t(rollback) > night && t(rollback) < 6.0 * 3600.0,
        "{rollback}"
    );
    assert!(
        rollback["reason"]
            .as_str()
            .unwrap()
            .starts_with("canary P50 latency"),
        "{rollback}"
    );
}

#[test]
fn an_aa_day_at_ten_percent_rolls_nothing_back() {
    let lines = simulate_json(&defaults_manifest(), "aa-day");
    assert!(
        transitions(&lines, "rollback").is_empty(),
        "{:?}",
        transitions(&lines, "rollback")
    );
    assert!(of_type(&lines, "incident").is_empty());
    assert_eq!(actions(&lines, "render-config").len(), 1, "rendered once");
}

#[test]
fn flapping_causes_no_rollback_and_no_churn() {
    let lines = simulate_json(&defaults_manifest(), "flapping");
    assert!(transitions(&lines, "rollback").is_empty(), "no rollback");
    assert!(
        transitions(&lines, "stampede").is_empty(),
        "no stampede response"
    );
    assert_eq!(
        actions(&lines, "render-config").len(),
        1,
        "rendered once, never changed"
    );
    assert!(of_type(&lines, "incident").is_empty(), "no incident");
    // Memory hovering at the watch level is announced once, not at every crossing.
    let alerts = of_type(&lines, "alert");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["code"], "MemoryWatch");
}

#[test]
fn metrics_outage_causes_no_rollback() {
    let lines = simulate_json(&defaults_manifest(), "metrics-outage");
    assert!(transitions(&lines, "rollback").is_empty(), "no rollback");
    assert_eq!(actions(&lines, "render-config").len(), 1);
    assert!(lines.iter().all(|l| l["phase"] == "Healthy"));
}

#[test]
fn circuit_breaker_outage() {
    let lines = simulate_json(&defaults_manifest(), "circuit-breaker-outage");
    let opened = first_seen("circuit-breaker-outage", |p| {
        p.get(tierguard::api::Signal::BreakerState)
            == Some(Some(&tierguard::simulate::Input::Fixed(
                tierguard::api::SignalValue::Breaker(tierguard::api::BreakerState::Open),
            )))
    });
    // Alert and level 1 at once. The fallback works, so no escalation until maxOpenDuration (4h)
    // is 15 minutes away (level 2), then level 3 when mem0 reads are switched off.
    let alert = of_type(&lines, "alert")[0];
    assert_eq!(
        (t(alert), alert["code"].as_str()),
        (opened, Some("BreakerOpened"))
    );
    let notes: Vec<(f64, u64, &str)> = actions(&lines, "notify")
        .iter()
        .filter(|n| n["runbook"] == "CircuitBreakerOpen")
        .map(|n| {
            (
                t(n),
                n["level"].as_u64().unwrap(),
                n["kind"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        &notes[..3],
        &[
            (opened, 1, "opened"),
            (opened + 4.0 * 3600.0 - 900.0, 2, "escalated"),
            (opened + 4.0 * 3600.0, 3, "escalated")
        ]
    );
    assert_eq!(
        notes.iter().filter(|n| n.2 == "resolved").count(),
        1,
        "{notes:?}"
    );
    // Open for 4 hours: mem0 reads and shadow writes off (and the rollback criterion fires).
    let mitigated = opened + 4.0 * 3600.0;
    let render = actions(&lines, "render-config")
        .into_iter()
        .find(|r| config(r, "MEM0_READS_ENABLED") == "false")
        .unwrap();
    assert_eq!(t(render), mitigated);
    assert_eq!(config(render, "MEM0_SHADOW_MODE"), "false");
    assert_eq!(transitions(&lines, "rollback")[0]["to"], "1");
    // Closed at +4h30m: the mitigation ends after rampInterval (5m).
    let closed = first_seen("circuit-breaker-outage", |p| {
        p.get(tierguard::api::Signal::BreakerState)
            == Some(Some(&tierguard::simulate::Input::Fixed(
                tierguard::api::SignalValue::Breaker(tierguard::api::BreakerState::Closed),
            )))
    });
    let ended = transitions(&lines, "breaker")
        .into_iter()
        .find(|l| l["from"] == "mem0-off")
        .unwrap();
    assert_eq!(t(ended), closed + 300.0);
    // Resumed by a human: back on the baseline at the end.
    let last = actions(&lines, "render-config").pop().unwrap();
    assert_eq!(config(last, "CANARY_SAMPLE_RATE"), "0.1");
    assert_eq!(config(last, "MEM0_READS_ENABLED"), "true");
    assert_eq!(lines.last().unwrap()["phase"], "Healthy");
}

#[test]
fn cache_stampede() {
    let lines = simulate_json(&defaults_manifest(), "cache-stampede");
    let bad = first_seen("cache-stampede", |p| {
        p.number(tierguard::api::Signal::CacheHitRatePercent)
            .flatten()
            .is_some_and(|h| h < 95.0)
    });
    let detected = bad + 60.0; // stampede.for
    // Warming first, then the overlays, in the same step.
    let at_detection: Vec<&Value> = lines
        .iter()
        .filter(|l| t(l) == detected && l["type"] == "action")
        .collect();
    assert_eq!(at_detection[0]["action"], "warm-cache");
    assert_eq!(at_detection[0]["trigger"], "Stampede");
    assert_eq!(at_detection[1]["action"], "render-config");
    let overlays = at_detection[1];
    assert_eq!(config(overlays, "CACHE_SERVE_STALE"), "true");
    assert_eq!(config(overlays, "CACHE_STALE_TTL"), "300");
    assert_eq!(config(overlays, "CACHE_TTL"), "7200");
    assert_eq!(config(overlays, "CANARY_SAMPLE_RATE"), "0.05");
    // Hit rate above 90% for 5 minutes: the canary steps back up before the other overlays end.
    let recovered = first_seen("cache-stampede", |p| {
        p.number(tierguard::api::Signal::CacheHitRatePercent)
            .flatten()
            .is_some_and(|h| h > 90.0)
    });
    let renders = actions(&lines, "render-config");
    let step = renders
        .iter()
        .find(|r| t(r) == recovered + 300.0)
        .expect("a ramp step");
    assert_eq!(config(step, "CANARY_SAMPLE_RATE"), "0.1");
    assert_eq!(config(step, "CACHE_SERVE_STALE"), "true");
    let last = renders.last().unwrap();
    assert_eq!(config(last, "CACHE_SERVE_STALE"), "false");
    assert_eq!(config(last, "CACHE_TTL"), "3600");
    let resolved: Vec<&Value> = of_type(&lines, "incident")
        .into_iter()
        .filter(|i| i["change"] == "resolved")
        .collect();
    assert_eq!(resolved.len(), 1);
    assert_eq!(t(resolved[0]), t(last));
}

#[test]
fn redis_oom() {
    let lines = simulate_json(&defaults_manifest(), "redis-oom");
    let codes: Vec<&str> = of_type(&lines, "alert")
        .iter()
        .map(|a| a["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "MemoryWatch",
            "MemoryWarning",
            "MemoryCritical",
            "Evictions"
        ]
    );
    // Above 90 % for the critical level's 1m hold.
    let critical = first_seen("redis-oom", |p| {
        p.number(tierguard::api::Signal::RedisUsedMemoryPercent)
            .flatten()
            .is_some_and(|u| u > 90.0)
    }) + 60.0;
    let remediations: Vec<f64> = actions(&lines, "remediate-redis")
        .iter()
        .map(|a| t(a))
        .collect();
    // At critical, then again once the 10m cooldown is over while still critical; never more.
    assert_eq!(remediations, [critical, critical + 600.0]);
    let audits: Vec<f64> = actions(&lines, "audit-redis")
        .iter()
        .map(|a| t(a))
        .collect();
    assert_eq!(audits, remediations);
    let levels: Vec<(&str, &str)> = transitions(&lines, "redis-memory")
        .iter()
        .map(|l| (l["from"].as_str().unwrap(), l["to"].as_str().unwrap()))
        .collect();
    assert_eq!(levels, [("critical", "warning"), ("warning", "ok")]);
    assert_eq!(
        actions(&lines, "render-config").len(),
        1,
        "memory never touches the config"
    );
    assert_eq!(lines.last().unwrap()["phase"], "Healthy");
}

#[test]
fn cold_start() {
    let lines = simulate_json(&defaults_manifest(), "cold-start");
    let warms: Vec<(f64, &str)> = actions(&lines, "warm-cache")
        .iter()
        .map(|w| (t(w), w["trigger"].as_str().unwrap()))
        .collect();
    assert_eq!(warms, [(600.0, "ColdStart"), (2400.0, "Deploy")]);
    let at_restart: Vec<&str> = lines
        .iter()
        .filter(|l| t(l) == 600.0 && l["type"] == "action")
        .map(|l| l["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        at_restart[..2],
        ["warm-cache", "render-config"],
        "warm first"
    );
    let renders = actions(&lines, "render-config");
    assert_eq!(config(renders[1], "CANARY_SAMPLE_RATE"), "0.05");
    assert_eq!(config(renders[1], "CACHE_SERVE_STALE"), "true");
    let back = renders.last().unwrap();
    assert_eq!(config(back, "CANARY_SAMPLE_RATE"), "0.1");
    assert_eq!(config(back, "CACHE_SERVE_STALE"), "false");
    assert_eq!(lines.last().unwrap()["phase"], "Healthy");
}

#[test]
fn text_output_is_a_readable_timeline() {
    let out = tierguard(&[
        "simulate",
        defaults_manifest().to_str().unwrap(),
        "--scenario",
        scenario("canary-regression").to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("+00:15:00     RollingBack  transition rollback: none → 1: P50 latency 1500 ms above 1000 ms for 10m"), "{text}");
    assert!(
        text.contains("render-config CANARY_SAMPLE_RATE 0.1 → 0.05"),
        "{text}"
    );
    assert!(text.contains("input      set p50LatencyMs=1500"), "{text}");
    assert!(text.contains("End +01:00:00: phase RolledBack"), "{text}");
    assert!(
        text.contains("CANARY_SAMPLE_RATE=0.0 (rollback-features)"),
        "{text}"
    );
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let good_scenario = scenario("canary-regression");
    let good_scenario = good_scenario.to_str().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![write(dir.path(), "bad-rate.yaml", "apiVersion: tierguard.dev/v1alpha1\nkind: MemoryTier\nmetadata: {name: x}\nspec:\n  target: {configMapName: f}\n  canary: {sampleRate: 1.5}\n").display().to_string(), good_scenario.into()],
            "spec.canary.sampleRate: must be between 0 and 1",
        ),
        (
            vec![write(dir.path(), "none.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n").display().to_string(), good_scenario.into()],
            "no MemoryTier document found",
        ),
        (
            vec![dir.path().join("missing.yaml").display().to_string(), good_scenario.into()],
            "missing.yaml: cannot read",
        ),
        (
            vec![defaults_manifest().display().to_string(), write(dir.path(), "typo.yaml", "tick: 30s\nduration: 1h\nsignals: {p50LatncyMs: 3}\n").display().to_string()],
            "typo.yaml: signals.p50LatncyMs: unknown field `p50LatncyMs`, expected one of `p50LatencyMs`",
        ),
        (
            vec![defaults_manifest().display().to_string(), write(dir.path(), "order.yaml", "tick: 30s\nduration: 1h\ntimeline:\n  - {at: 10m, event: resume}\n  - {at: 5m, event: deploy}\n").display().to_string()],
            "order.yaml: timeline[1].at: 5m comes before the previous step",
        ),
        (
            vec![defaults_manifest().display().to_string(), write(dir.path(), "tick.yaml", "tick: soon\nduration: 1h\n").display().to_string()],
            "tick.yaml: tick: invalid duration \"soon\"",
        ),
        (
            vec![defaults_manifest().display().to_string(), write(dir.path(), "restart.yaml", "tick: 30s\nduration: 1h\ntimeline:\n  - {at: 1m, event: redis-restart}\n").display().to_string()],
            "restart.yaml: timeline[0].event: a restart cannot be seen without redisRunId",
        ),
        (
            vec![defaults_manifest().display().to_string(), write(dir.path(), "binomial.yaml", "tick: 30s\nduration: 1h\nsignals: {cohorts: {canary: {errorRatePercent: {binomial: 120}}}}\n").display().to_string()],
            "binomial.yaml: signals.cohorts.canary.errorRatePercent: generator parameters must be finite numbers ≥ 0 (a percentage at most 100)",
        ),
        (
            vec![defaults_manifest().display().to_string(), write(dir.path(), "breaker.yaml", "tick: 30s\nduration: 1h\ntimeline:\n  - {at: 1m, set: {cohorts: {stable: {breakerState: open}}}}\n").display().to_string()],
            "breaker.yaml: timeline[0].set.cohorts.stable.breakerState: unknown field `breakerState`, expected one of `p50LatencyMs`",
        ),
        (
            vec![defaults_manifest().display().to_string(), write(dir.path(), "every.yaml", "tick: 30s\nduration: 1h\ntimeline:\n  - {at: 1m, every: 0s, set: {p50LatencyMs: 3}}\n").display().to_string()],
            "every.yaml: timeline[0].every: must be greater than zero",
        ),
    ];
    for (args, expected) in cases {
        let out = tierguard(&["simulate", &args[0], "--scenario", &args[1]]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn the_timeline_shows_where_a_hot_clinic_stampede_comes_from() {
    let lines = simulate_json(&defaults_manifest(), "hot-clinic-stampede");
    let source = of_type(&lines, "alert")
        .into_iter()
        .find(|l| l["code"] == "HotClinicStampede")
        .expect("the stampede's source in the timeline");
    assert_eq!(t(source), 420.0, "{source}");
    let message = source["message"].as_str().unwrap();
    assert!(
        message.contains("worst hit rate: clinic_id=5: 70% hits"),
        "{message}"
    );
    assert!(
        !message.contains("clinic_id=11"),
        "healthy clinics are not named: {message}"
    );
    assert!(
        message.contains("likely cause: cache generation change"),
        "{message}"
    );
    assert!(message.contains("from 41 to 42"), "{message}");
    let warm = actions(&lines, "warm-cache");
    assert_eq!(warm.len(), 1, "{warm:?}");
    assert_eq!(warm[0]["clinicIds"], serde_json::json!([5, 8]));
    let over = transitions(&lines, "stampede")
        .into_iter()
        .find(|l| l["to"] == "over")
        .expect("the stampede ends");
    assert_eq!(t(over), 1500.0, "{over}");
}

#[test]
fn the_timeline_shows_the_keys_without_ttl_leak_before_any_memory_level() {
    let lines = simulate_json(&defaults_manifest(), "redis-leak");
    let alerts = of_type(&lines, "alert");
    let leak = alerts
        .iter()
        .find(|l| l["code"] == "KeysWithoutTtlGrowing")
        .expect("the leak alert");
    assert_eq!(t(leak), 960.0, "{leak}");
    assert!(
        !alerts
            .iter()
            .any(|l| l["code"].as_str().unwrap_or("").starts_with("Memory")),
        "no memory level: {alerts:?}"
    );
    assert_eq!(actions(&lines, "audit-redis").len(), 1);
    assert!(actions(&lines, "remediate-redis").is_empty());
}
