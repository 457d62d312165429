//! The shipped PrometheusRule against `promtool test rules` (the Debian package's promtool), and
//! against `tierguard simulate` on the same data: both must start firing at the same moment.
//!
//! Each case is one series sampled every 30 s. `tierguard simulate --output json` replays it and
//! gives the moments the controller raises its alert; a promtool unit test then requires the
//! rule to be firing at each of those moments and not one evaluation before, and not at all when
//! the controller never alerts.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use support::servers::require_binary;

const BIN: &str = env!("CARGO_BIN_EXE_tierguard");
const STEP: u64 = 30;
const NAMESPACE: &str = "clinic";
const TIER: &str = "backend";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The rule groups of a PrometheusRule object, without annotations (promtool compares them, and
/// they are prose, not behaviour).
fn rule_groups(prometheus_rule: &Value) -> Value {
    let mut groups = prometheus_rule["spec"]["groups"].clone();
    for group in groups.as_array_mut().expect("spec.groups is a list") {
        for rule in group["rules"].as_array_mut().expect("rules is a list") {
            rule.as_object_mut().unwrap().remove("annotations");
        }
    }
    groups
}

fn deploy_rule() -> Value {
    let text = std::fs::read_to_string(root().join("deploy/base/prometheusrule.yaml")).unwrap();
    serde_saphyr::from_str(&text).expect("deploy/base/prometheusrule.yaml parses")
}

/// What kind of signal a case feeds.
#[derive(Clone, Copy)]
enum Feed {
    /// `redisUsedMemoryPercent`, the gauge `tierguard_tier_signal{signal="redisUsedMemoryPercent"}`.
    MemoryPercent,
    /// `redisEvictedKeys`, the counter `tierguard_redis_evicted_keys_total`.
    EvictedKeys,
}

struct Case {
    name: &'static str,
    feed: Feed,
    /// One value per 30 s step from t = 0.
    values: Vec<f64>,
    /// Steps at which Redis restarts (a new run id; the counter starts again).
    restarts: Vec<usize>,
    /// The PrometheusRule alert, and the controller's alert code (the Event reason) for it.
    alert: &'static str,
    code: &'static str,
    /// The moments (seconds) the controller must alert, as the runbook says.
    expect_starts: Vec<u64>,
}

/// A counter growing at `per_second` from step `from` on, restarting from 0 at each restart.
fn counter(steps: usize, per_second: impl Fn(usize) -> f64, restarts: &[usize]) -> Vec<f64> {
    let mut value = 0.0;
    (0..steps)
        .map(|i| {
            if restarts.contains(&i) {
                value = 0.0;
            } else if i > 0 {
                value += per_second(i) * STEP as f64;
            }
            value
        })
        .collect()
}

fn constant_after(steps: usize, before: f64, from: usize, after: f64) -> Vec<f64> {
    (0..steps)
        .map(|i| if i < from { before } else { after })
        .collect()
}

/// When `tierguard simulate` raises the alert `code` on this series.
fn controller_alerts(case: &Case, dir: &Path) -> Vec<u64> {
    let manifest = json!({
        "apiVersion": "tierguard.dev/v1alpha1",
        "kind": "MemoryTier",
        "metadata": {"name": TIER, "namespace": NAMESPACE},
        // A restart is a cold start; these cases are about the alerts only.
        "spec": {"target": {"configMapName": "flags"}, "stampede": {"coldStart": false}},
    });
    let field = match case.feed {
        Feed::MemoryPercent => "redisUsedMemoryPercent",
        Feed::EvictedKeys => "redisEvictedKeys",
    };
    let mut timeline = Vec::new();
    for (i, v) in case.values.iter().enumerate() {
        if case.restarts.contains(&i) {
            timeline.push(json!({"at": format!("{}s", i as u64 * STEP), "event": "redis-restart"}));
        }
        let value = match case.feed {
            Feed::MemoryPercent => json!(v),
            Feed::EvictedKeys => json!(*v as u64),
        };
        timeline.push(json!({"at": format!("{}s", i as u64 * STEP), "set": {field: value}}));
    }
    let scenario = json!({
        "tick": format!("{STEP}s"),
        "duration": format!("{}s", (case.values.len() as u64 - 1) * STEP),
        "signals": {
            "redisUsedMemoryPercent": 40,
            "redisEvictedKeys": 0,
            "redisRunId": "0123456789abcdef0123456789abcdef01234567",
            "redisUptimeSeconds": 1000,
        },
        "timeline": timeline,
    });
    let manifest_path = dir.join("tier.yaml");
    let scenario_path = dir.join("scenario.yaml");
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    std::fs::write(&scenario_path, scenario.to_string()).unwrap();
    let out = Command::new(BIN)
        .args(["simulate", "--output", "json", "--scenario"])
        .arg(&scenario_path)
        .arg(&manifest_path)
        .output()
        .expect("run tierguard simulate");
    assert!(
        out.status.success(),
        "{}: simulate failed: {}",
        case.name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("one JSON object per line"))
        .filter(|e| e["type"] == "alert" && e["code"] == case.code)
        .map(|e| e["t"].as_f64().unwrap() as u64)
        .collect()
}

/// Run a promtool unit test requiring `alert` to fire at each of `starts` and not one step
/// before; with no starts, to fire at no evaluation at all.
fn promtool_agrees(case: &Case, starts: &[u64], rules: &Value, dir: &Path) {
    let series = match case.feed {
        Feed::MemoryPercent => format!(
            r#"tierguard_tier_signal{{namespace="{NAMESPACE}",tier="{TIER}",signal="redisUsedMemoryPercent"}}"#
        ),
        Feed::EvictedKeys => {
            format!(
                r#"tierguard_redis_evicted_keys_total{{namespace="{NAMESPACE}",tier="{TIER}"}}"#
            )
        }
    };
    let values: Vec<String> = case.values.iter().map(|v| v.to_string()).collect();
    let labels = |severity: &str| {
        let mut l = json!({"namespace": NAMESPACE, "tier": TIER, "severity": severity});
        if let Feed::MemoryPercent = case.feed {
            l["signal"] = json!("redisUsedMemoryPercent");
        }
        l
    };
    let severity =
        rules
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .find(|r| r["alert"] == case.alert)
            .unwrap_or_else(|| panic!("the PrometheusRule has no alert {}", case.alert))["labels"]
            ["severity"]
            .as_str()
            .unwrap()
            .to_owned();
    let mut checks = Vec::new();
    if starts.is_empty() {
        for i in 0..case.values.len() as u64 {
            checks.push(json!({"eval_time": format!("{}s", i * STEP), "alertname": case.alert, "exp_alerts": []}));
        }
    }
    for &t in starts {
        checks.push(json!({
            "eval_time": format!("{t}s"),
            "alertname": case.alert,
            "exp_alerts": [{"exp_labels": labels(&severity)}],
        }));
        if t >= STEP {
            checks.push(json!({"eval_time": format!("{}s", t - STEP), "alertname": case.alert, "exp_alerts": []}));
        }
    }
    let rules_path = dir.join("rules.yaml");
    std::fs::write(&rules_path, json!({"groups": rules}).to_string()).unwrap();
    let test = json!({
        "rule_files": [rules_path],
        "evaluation_interval": format!("{STEP}s"),
        "tests": [{
            "interval": format!("{STEP}s"),
            "input_series": [{"series": series, "values": values.join(" ")}],
            "alert_rule_test": checks,
        }],
    });
    let test_path = dir.join("test.yaml");
    std::fs::write(&test_path, test.to_string()).unwrap();
    let out = Command::new(require_binary("promtool"))
        .args(["test", "rules"])
        .arg(&test_path)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "{}: the PrometheusRule disagrees with the controller (alert at {starts:?}):\n{}{}",
        case.name,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn cases() -> Vec<Case> {
    let steps = 60; // 30 minutes
    vec![
        Case {
            name: "1 evicted key per second",
            feed: Feed::EvictedKeys,
            values: counter(steps, |i| if i >= 2 { 1.0 } else { 0.0 }, &[]),
            restarts: vec![],
            alert: "RedisEvictions",
            code: "Evictions",
            expect_starts: vec![],
        },
        Case {
            name: "20 evicted keys per second, stopping, then again after a Redis restart",
            feed: Feed::EvictedKeys,
            values: counter(
                80,
                |i| {
                    if (2..30).contains(&i) || i >= 50 {
                        20.0
                    } else {
                        0.0
                    }
                },
                &[50],
            ),
            restarts: vec![50],
            alert: "RedisEvictions",
            code: "Evictions",
            // Evictions from 30 s: the 5m rate() passes 10/s once more than 3000 keys fall in
            // its range (3 minutes in), then the alert holds for 5 minutes: 30 + 180 + 300 s;
            // the same after the restart at 1500 s (the counter going back to 0 is a reset, not
            // a negative rate).
            expect_starts: vec![30 + 180 + 300, 1500 + 180 + 300],
        },
        Case {
            name: "75 % of maxmemory",
            feed: Feed::MemoryPercent,
            values: constant_after(steps, 40.0, 2, 75.0),
            restarts: vec![],
            alert: "RedisMemoryWatch",
            code: "MemoryWatch",
            expect_starts: vec![60],
        },
        Case {
            name: "85 % of maxmemory",
            feed: Feed::MemoryPercent,
            values: constant_after(steps, 40.0, 2, 85.0),
            restarts: vec![],
            alert: "RedisMemoryHigh",
            code: "MemoryWarning",
            expect_starts: vec![60 + 300],
        },
        Case {
            name: "95 % of maxmemory",
            feed: Feed::MemoryPercent,
            values: constant_after(steps, 40.0, 2, 95.0),
            restarts: vec![],
            alert: "RedisMemoryCritical",
            code: "MemoryCritical",
            expect_starts: vec![60 + 60],
        },
        Case {
            name: "exactly 90 % is not critical",
            feed: Feed::MemoryPercent,
            values: constant_after(steps, 40.0, 2, 90.0),
            restarts: vec![],
            alert: "RedisMemoryCritical",
            code: "MemoryCritical",
            expect_starts: vec![],
        },
        Case {
            name: "95 % pages once: no high alert beside the critical one",
            feed: Feed::MemoryPercent,
            values: constant_after(steps, 40.0, 2, 95.0),
            restarts: vec![],
            alert: "RedisMemoryHigh",
            code: "MemoryWarning",
            expect_starts: vec![],
        },
    ]
}

#[test]
fn the_prometheus_rule_and_the_controller_alert_at_the_same_moments() {
    let rules = rule_groups(&deploy_rule());
    for case in cases() {
        let dir = tempfile::tempdir().unwrap();
        let starts = controller_alerts(&case, dir.path());
        assert_eq!(
            starts, case.expect_starts,
            "{}: the controller alerts at the wrong moments",
            case.name
        );
        promtool_agrees(&case, &starts, &rules, dir.path());
    }
}

#[test]
fn the_shipped_rule_files_pass_promtool_check() {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("rules.yaml");
    std::fs::write(
        &path,
        json!({"groups": deploy_rule()["spec"]["groups"]}).to_string(),
    )
    .unwrap();
    let out = Command::new(require_binary("promtool"))
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The chart renders the same rules (expressions, holds, labels) as deploy/.
#[test]
fn the_chart_ships_the_same_rules_as_deploy() {
    let local = root().join(".tools/bin/helm");
    let helm = if local.exists() {
        local
    } else {
        require_binary("helm")
    };
    let out = Command::new(helm)
        .args([
            "template",
            "tierguard",
            "charts/tierguard",
            "--set",
            "prometheusRule.enabled=true",
        ])
        .current_dir(root())
        .output()
        .expect("run helm (scripts/install-k8s-tools installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).unwrap();
    let chart_rule = serde_saphyr::from_multiple::<Value>(&rendered)
        .unwrap()
        .into_iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("the chart renders a PrometheusRule when asked");
    assert_eq!(rule_groups(&chart_rule), rule_groups(&deploy_rule()));
}
