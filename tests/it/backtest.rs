//! `tierguard simulate --from-prometheus`: backtests against a real Prometheus serving history
//! that the test generates and loads with `promtool tsdb create-blocks-from openmetrics`.
//!
//! One history holds five stretches, each with its own trouble on a healthy baseline: a slow burn
//! of mem0 writes, a canary latency regression, a metrics outage, a Redis memory climb and a P50
//! that sits between 800 and 1000 ms. Every expected tick is worked out here from the generated
//! traffic (what the rate window of each tick saw), never from tierguard's own output.

use std::path::{Path, PathBuf};
use std::process::Command;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::support::history::{App, Model, Redis};
use crate::support::servers::{PrometheusServer, free_port};

const MINUTE: i64 = 60;
/// The policy's step (the spec's interval) and the history's scrape interval.
const STEP: i64 = 30;
const SCRAPE: i64 = 15;
/// Scrapes are 7 s off the step grid, so no sample sits on a rate window's edge.
const SCRAPE_OFFSET: i64 = 7;
const RATE_WINDOW: i64 = 5 * MINUTE;

/// The stretches of the history, in minutes from its base.
const SLOW_BURN: (i64, i64) = (0, 150);
const CANARY: (i64, i64) = (180, 270);
const OUTAGE: (i64, i64) = (300, 390);
const MEMORY: (i64, i64) = (420, 540);
const BETWEEN: (i64, i64) = (600, 690);

struct World {
    /// Unix seconds of minute 0, on the step grid.
    base: i64,
}

impl World {
    fn new() -> World {
        let now = Timestamp::now().as_second();
        World {
            base: (now - 13 * 3600) / STEP * STEP,
        }
    }

    fn minute(&self, m: f64) -> i64 {
        self.base + (m * 60.0) as i64
    }

    fn app(&self, t: i64) -> Option<App> {
        let m = (t - self.base) as f64 / 60.0;
        let mut app = App::default();
        // The slow burn: mem0 write success sinks from 99.9 % to 93 % over 40 minutes, stays
        // there, and recovers at minute 120.
        if (30.0..120.0).contains(&m) {
            let sunk = ((m - 30.0) / 40.0).min(1.0);
            app.mem0_success = 0.999 - sunk * (0.999 - 0.93);
        }
        // The canary regression: 80 % of requests take 1.5 s from minute 190 to 220.
        if (190.0..220.0).contains(&m) {
            app.slow = 0.8;
        }
        // The metrics outage: nothing scraped from minute 310 to 350.
        if (310.0..350.0).contains(&m) {
            return None;
        }
        // Slower, but not past the runbook's 1000 ms: P50 at 900 ms from minute 610 to 640.
        if (610.0..640.0).contains(&m) {
            app.slow = 0.4;
            app.medium = 0.5;
        }
        Some(app)
    }

    fn redis_percent(&self, t: i64) -> f64 {
        let m = (t - self.base) as f64 / 60.0;
        match m {
            m if (430.0..490.0).contains(&m) => 40.0 + (m - 430.0) / 60.0 * 55.0,
            m if (490.0..510.0).contains(&m) => 95.0,
            m if (510.0..540.0).contains(&m) => 60.0,
            _ => 40.0,
        }
    }

    fn redis(&self, t: i64) -> Option<Redis> {
        Some(Redis::at_percent(self.redis_percent(t)))
    }

    fn prometheus(&self) -> PrometheusServer {
        let app = |t| self.app(t);
        let redis = |t| self.redis(t);
        let model = Model {
            start: self.minute(-30.0) + SCRAPE_OFFSET,
            end: self.minute(700.0),
            scrape: SCRAPE,
            app: &app,
            redis: &redis,
        };
        PrometheusServer::with_history(&model.openmetrics())
    }

    fn with_model<T>(&self, f: impl FnOnce(&Model) -> T) -> T {
        let app = |t| self.app(t);
        let redis = |t| self.redis(t);
        let model = Model {
            start: self.minute(-30.0) + SCRAPE_OFFSET,
            end: self.minute(700.0),
            scrape: SCRAPE,
            app: &app,
            redis: &redis,
        };
        f(&model)
    }

    /// The steps of a stretch.
    fn steps(&self, (from, to): (i64, i64)) -> impl Iterator<Item = i64> {
        (self.minute(from as f64)..=self.minute(to as f64)).step_by(STEP as usize)
    }

    /// The first step of the stretch at which `holds` is true.
    fn first_step(&self, stretch: (i64, i64), holds: impl Fn(i64) -> bool) -> i64 {
        self.steps(stretch)
            .find(|t| holds(*t))
            .unwrap_or_else(|| panic!("the history never shows what the test expects"))
    }

    /// The Redis memory share the exporter reported last before `t`.
    fn redis_at(&self, t: i64) -> f64 {
        let last = (t - SCRAPE_OFFSET).div_euclid(SCRAPE) * SCRAPE + SCRAPE_OFFSET;
        self.redis_percent(last)
    }
}

/// The P50 a histogram_quantile over the window's requests gives, from the window's shares of
/// requests taking 40 ms, 0.9 s and 1.5 s (buckets 0.05, 0.1, 0.25, 0.5, 1, 2.5, …).
fn p50_ms(fast: f64, medium: f64, slow: f64) -> f64 {
    let total = fast + medium + slow;
    let (fast, medium, slow) = (fast / total, medium / total, slow / total);
    if fast >= 0.5 {
        50.0 * 0.5 / fast
    } else if fast + medium >= 0.5 {
        500.0 + 500.0 * (0.5 - fast) / medium
    } else {
        1000.0 + 1500.0 * (0.5 - fast - medium) / slow
    }
}

fn p50_at(model: &Model, t: i64) -> Option<f64> {
    let rps = |a: &App| a.requests_per_second;
    let slow = model.windowed(t, RATE_WINDOW, rps, |a| a.slow)?;
    let medium = model.windowed(t, RATE_WINDOW, rps, |a| a.medium)?;
    Some(p50_ms(1.0 - slow - medium, medium, slow))
}

fn mem0_at(model: &Model, t: i64) -> Option<f64> {
    model
        .windowed(
            t,
            RATE_WINDOW,
            |a| a.mem0_writes_per_second,
            |a| a.mem0_success,
        )
        .map(|s| 100.0 * s)
}

fn manifest(dir: &Path, name: &str, prometheus: &str, extra: Value) -> PathBuf {
    let mut spec = json!({
        "target": {"configMapName": "clinic-backend-flags"},
        "metrics": {
            "prometheus": {"url": prometheus},
            "selector": "job=\"app\"",
            "redisExporter": {"selector": "job=\"redis\""},
        },
    });
    json_patch::merge(&mut spec, &extra);
    let tier = json!({
        "apiVersion": "tierguard.dev/v1alpha1",
        "kind": "MemoryTier",
        "metadata": {"name": "clinic-backend", "namespace": "clinic"},
        "spec": spec,
    });
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, serde_json::to_string_pretty(&tier).unwrap()).unwrap();
    path
}

fn at(t: i64) -> String {
    Timestamp::from_second(t).unwrap().to_string()
}

fn tierguard(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tierguard"))
        .args(args)
        .output()
        .expect("the tierguard binary runs")
}

/// A backtest from `start` to `end` (Unix seconds) as JSON lines.
fn backtest(manifest: &Path, url: &str, start: i64, end: i64, extra: &[&str]) -> Vec<Value> {
    let (start, end) = (at(start), at(end));
    let mut args = vec![
        "simulate",
        manifest.to_str().unwrap(),
        "--from-prometheus",
        url,
        "--start",
        &start,
        "--end",
        &end,
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = tierguard(&args);
    assert!(
        out.status.success(),
        "simulate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn time_of(line: &Value) -> i64 {
    line["time"]
        .as_str()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .unwrap_or_else(|| panic!("no time in {line}"))
        .as_second()
}

/// (runbook, when) of every incident opened.
fn opened(lines: &[Value]) -> Vec<(String, i64)> {
    lines
        .iter()
        .filter(|l| l["type"] == "incident" && l["change"] == "opened")
        .map(|l| (l["runbook"].as_str().unwrap().to_owned(), time_of(l)))
        .collect()
}

fn summary(lines: &[Value]) -> &Value {
    let last = lines.last().expect("output");
    assert_eq!(last["type"], "summary", "the summary comes last: {last}");
    last
}

fn unknown<'a>(summary: &'a Value, signal: &str) -> Option<&'a Value> {
    summary["unknown"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["signal"] == signal)
}

fn clock(world: &World, t: i64) -> String {
    format!("minute {:.1}", (t - world.base) as f64 / 60.0)
}

#[test]
fn finds_each_incident_at_its_step_and_nothing_else() {
    let world = World::new();
    let prometheus = world.prometheus();
    let dir = tempfile::tempdir().unwrap();
    let url = prometheus.url();
    let tier = manifest(dir.path(), "tier", &url, json!({}));
    let run = |stretch: (i64, i64)| {
        backtest(
            &tier,
            &url,
            world.minute(stretch.0 as f64),
            world.minute(stretch.1 as f64),
            &[],
        )
    };

    // The slow burn: the breaker runbook's symptom (mem0 writes below 99 %) first, then the
    // rollback once they have stayed below 95 % for 30 minutes.
    let lines = run(SLOW_BURN);
    let (below_99, below_95) = world.with_model(|m| {
        (
            world.first_step(SLOW_BURN, |t| mem0_at(m, t).is_some_and(|v| v < 99.0)),
            world.first_step(SLOW_BURN, |t| mem0_at(m, t).is_some_and(|v| v < 95.0)),
        )
    });
    let expected = vec![
        ("CircuitBreakerOpen".to_owned(), below_99),
        ("CanaryRollback".to_owned(), below_95 + 30 * MINUTE),
    ];
    assert_eq!(
        opened(&lines),
        expected,
        "slow burn: below 99 % at {}, below 95 % at {}",
        clock(&world, below_99),
        clock(&world, below_95)
    );
    let phases: Vec<(String, i64)> = lines
        .iter()
        .filter(|l| l["type"] == "transition" && l["subject"] == "rollback")
        .map(|l| (l["to"].as_str().unwrap().to_owned(), time_of(l)))
        .collect();
    let rollback = below_95 + 30 * MINUTE;
    assert_eq!(
        phases[..3],
        [
            ("1".to_owned(), rollback),
            ("2".to_owned(), rollback + 5 * MINUTE),
            ("3".to_owned(), rollback + 5 * MINUTE)
        ],
        "{phases:?}"
    );
    let s = summary(&lines);
    assert_eq!(s["rollbacks"].as_array().unwrap().len(), 1, "{s}");
    assert!(
        unknown(s, "p50LatencyMs").is_none(),
        "every app signal is known: {s}"
    );
    assert!(unknown(s, "redisUsedMemoryPercent").is_none(), "{s}");

    // The canary regression: P50 above 1000 ms once most requests in the rate window are slow,
    // the rollback 10 minutes later.
    let lines = run(CANARY);
    let above = world
        .with_model(|m| world.first_step(CANARY, |t| p50_at(m, t).is_some_and(|v| v > 1000.0)));
    assert_eq!(
        opened(&lines),
        vec![("CanaryRollback".to_owned(), above + 10 * MINUTE)],
        "canary: P50 above 1000 ms from {}",
        clock(&world, above)
    );

    // The metrics outage: no incident, and the application's signals unknown (never zero) at
    // exactly the steps whose rate window holds fewer than two scrapes.
    let lines = run(OUTAGE);
    assert_eq!(
        opened(&lines),
        vec![],
        "an outage of the metrics is no incident"
    );
    let s = summary(&lines);
    let (rate_gaps, gauge_gaps) = world.with_model(|m| {
        let steps: Vec<i64> = world.steps(OUTAGE).collect();
        let rate: Vec<i64> = steps
            .iter()
            .copied()
            .filter(|t| m.app_samples(t - RATE_WINDOW, *t).len() < 2)
            .collect();
        let gauge: Vec<i64> = steps
            .iter()
            .copied()
            .filter(|t| m.app_samples(t - RATE_WINDOW, *t).is_empty())
            .collect();
        (rate, gauge)
    });
    assert!(
        rate_gaps.len() > 60,
        "the outage is long: {}",
        rate_gaps.len()
    );
    for signal in [
        "p50LatencyMs",
        "errorRatePercent",
        "cacheHitRatePercent",
        "mem0WriteSuccessPercent",
    ] {
        let u = unknown(s, signal).unwrap_or_else(|| panic!("{signal} is never unknown: {s}"));
        assert_eq!(u["steps"], rate_gaps.len(), "{signal}: {u}");
        let span = &u["spans"][0];
        assert_eq!(
            (time_of(&span[0]), time_of(&span[1])),
            (rate_gaps[0], *rate_gaps.last().unwrap()),
            "{signal}: {u}"
        );
    }
    let breaker = unknown(s, "breakerState").expect("the breaker is unknown too");
    assert_eq!(breaker["steps"], gauge_gaps.len(), "{breaker}");
    assert!(
        unknown(s, "p50LatencyMs").unwrap()["reasons"][0][0]
            .as_str()
            .unwrap()
            .starts_with("no data"),
        "{s}"
    );
    assert!(
        unknown(s, "redisUsedMemoryPercent").is_none(),
        "Redis was scraped: {s}"
    );

    // The Redis memory climb: watch above 70 %, the incident at warning (above 80 % for 5
    // minutes), remediation at critical (above 90 % for 1 minute), every cooldown while it stays.
    let lines = run(MEMORY);
    let first_above = |p: f64| world.first_step(MEMORY, |t| world.redis_at(t) > p);
    let (watch, warning, critical) = (first_above(70.0), first_above(80.0), first_above(90.0));
    assert_eq!(
        opened(&lines),
        vec![("RedisMemory".to_owned(), warning + 5 * MINUTE)],
        "memory above 80 % from {}",
        clock(&world, warning)
    );
    let alerts: Vec<(String, i64)> = lines
        .iter()
        .filter(|l| l["type"] == "alert")
        .map(|l| (l["message"].as_str().unwrap().to_owned(), time_of(l)))
        .collect();
    assert!(
        alerts[0].0.contains("level watch") && alerts[0].1 == watch,
        "{alerts:?}"
    );
    let remediations: Vec<i64> = lines
        .iter()
        .filter(|l| l["action"] == "remediate-redis")
        .map(time_of)
        .collect();
    assert_eq!(remediations[0], critical + MINUTE, "{remediations:?}");
    let drop = world.first_step((490, 540), |t| world.redis_at(t) < 85.0);
    let expected: Vec<i64> = (0..)
        .map(|n| critical + MINUTE + n * 10 * MINUTE)
        .take_while(|t| *t < drop)
        .collect();
    assert_eq!(remediations, expected, "every 10 minutes while critical");
    let s = summary(&lines);
    assert_eq!(s["remediations"].as_array().unwrap().len(), expected.len());

    // The 900 ms stretch is within the runbook's threshold: nothing happens.
    assert_eq!(opened(&run(BETWEEN)), vec![]);
}

#[test]
fn scores_against_known_incidents() {
    let world = World::new();
    let prometheus = world.prometheus();
    let dir = tempfile::tempdir().unwrap();
    let url = prometheus.url();
    // Resumed automatically, so that the canary regression can roll back after the slow burn.
    let tier = manifest(
        dir.path(),
        "tier",
        &url,
        json!({"rollback": {"autoResume": true}}),
    );
    let known = json!({"incidents": [
        {"kind": "CanaryRollback", "start": at(world.minute(30.0)), "end": at(world.minute(150.0)), "name": "mem0 slow burn"},
        {"kind": "CanaryRollback", "start": at(world.minute(190.0)), "end": at(world.minute(230.0))},
        {"kind": "RedisMemory", "start": at(world.minute(430.0)), "end": at(world.minute(530.0))},
        // Never in the data: missed.
        {"kind": "CacheStampede", "start": at(world.minute(300.0)), "end": at(world.minute(330.0))},
    ]});
    let incidents = dir.path().join("incidents.yaml");
    std::fs::write(&incidents, serde_json::to_string(&known).unwrap()).unwrap();
    let lines = backtest(
        &tier,
        &url,
        world.minute(0.0),
        world.minute(560.0),
        &["--incidents", incidents.to_str().unwrap()],
    );
    let score = &summary(&lines)["score"];
    let runbook = |name: &str| -> &Value {
        score["runbooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["runbook"] == name)
            .unwrap()
    };
    let canary = runbook("CanaryRollback");
    assert_eq!(
        (
            &canary["known"],
            &canary["detected"],
            &canary["missed"],
            &canary["falseAlarms"]
        ),
        (&json!(2), &json!(2), &json!(0), &json!(0)),
        "{canary}"
    );
    let below_95 = world
        .with_model(|m| world.first_step(SLOW_BURN, |t| mem0_at(m, t).is_some_and(|v| v < 95.0)));
    let slow_burn = &canary["detections"][0];
    let delay = (below_95 + 30 * MINUTE - world.minute(30.0)) as f64;
    assert_eq!(
        slow_burn["detectedAfterSeconds"],
        json!(delay),
        "{slow_burn}"
    );
    // The rollback's first render comes with the detection.
    assert_eq!(
        slow_burn["firstActionAfterSeconds"],
        json!(delay),
        "{slow_burn}"
    );
    assert_eq!(slow_burn["firstAction"], "render-config");

    let memory = runbook("RedisMemory");
    assert_eq!(
        (&memory["detected"], &memory["falseAlarms"]),
        (&json!(1), &json!(0))
    );
    let warning = world.first_step(MEMORY, |t| world.redis_at(t) > 80.0);
    let critical = world.first_step(MEMORY, |t| world.redis_at(t) > 90.0);
    let d = &memory["detections"][0];
    assert_eq!(
        d["detectedAfterSeconds"],
        json!((warning + 5 * MINUTE - world.minute(430.0)) as f64),
        "{d}"
    );
    // A warning only notifies; the first action is the remediation at critical.
    assert_eq!(d["firstAction"], "remediate-redis", "{d}");
    assert_eq!(
        d["firstActionAfterSeconds"],
        json!((critical + MINUTE - world.minute(430.0)) as f64),
        "{d}"
    );

    let stampede = runbook("CacheStampede");
    assert_eq!(
        (&stampede["known"], &stampede["missed"]),
        (&json!(1), &json!(1))
    );
    // The slow burn's early symptom (mem0 writes below 99 %) opened the breaker runbook's
    // incident, which the list of known incidents does not have: a false alarm.
    let breaker = runbook("CircuitBreakerOpen");
    assert_eq!(breaker["falseAlarms"], 1, "{breaker}");
}

#[test]
fn compares_two_thresholds_on_the_same_history() {
    let world = World::new();
    let prometheus = world.prometheus();
    let dir = tempfile::tempdir().unwrap();
    let url = prometheus.url();
    let a = manifest(dir.path(), "a", &url, json!({}));
    let b = manifest(
        dir.path(),
        "b",
        &url,
        json!({"rollback": {"p50LatencyMs": 800}}),
    );
    let lines = backtest(
        &a,
        &url,
        world.minute(BETWEEN.0 as f64),
        world.minute(BETWEEN.1 as f64),
        &["--compare", b.to_str().unwrap()],
    );
    let diffs: Vec<&Value> = lines.iter().filter(|l| l["type"] == "difference").collect();
    assert!(
        !diffs.is_empty(),
        "the 800 ms policy rolls back: {lines:#?}"
    );
    assert!(
        diffs.iter().all(|d| d["policy"] == "b"),
        "only B differs: {diffs:#?}"
    );
    let above_800 = world
        .with_model(|m| world.first_step(BETWEEN, |t| p50_at(m, t).is_some_and(|v| v > 800.0)));
    let first = &diffs[0]["entry"];
    assert_eq!(time_of(first), above_800 + 10 * MINUTE, "{first}");
    assert_eq!(
        (&first["subject"], &first["to"]),
        (&json!("phase"), &json!("RollingBack"))
    );
    assert!(
        diffs.iter().any(|d| d["entry"]["type"] == "incident"
            && d["entry"]["runbook"] == "CanaryRollback"
            && d["entry"]["change"] == "opened"),
        "{diffs:#?}"
    );
    let summaries: Vec<&Value> = lines.iter().filter(|l| l["type"] == "summary").collect();
    assert_eq!(summaries.len(), 2);
    assert_eq!(
        (&summaries[0]["policy"], &summaries[1]["policy"]),
        (&json!("a"), &json!("b"))
    );
    assert_eq!(summaries[0]["rollbacks"].as_array().unwrap().len(), 0);
    assert_eq!(summaries[1]["rollbacks"].as_array().unwrap().len(), 1);

    // The same in text: the header names both policies, each difference says whose it is.
    let (start, end) = (
        at(world.minute(BETWEEN.0 as f64)),
        at(world.minute(BETWEEN.1 as f64)),
    );
    let out = tierguard(&[
        "simulate",
        a.to_str().unwrap(),
        "--from-prometheus",
        &url,
        "--start",
        &start,
        "--end",
        &end,
        "--compare",
        b.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Two policies on the same history"), "{text}");
    assert!(
        text.contains(&format!("Decisions that differ: {}", diffs.len())),
        "{text}"
    );
    assert!(text.contains("B only"), "{text}");
}

#[test]
fn text_output_has_the_timeline_and_the_summary() {
    let world = World::new();
    let prometheus = world.prometheus();
    let dir = tempfile::tempdir().unwrap();
    let url = prometheus.url();
    // No redisExporter selector matches: the Redis signals are unknown, and the output says so.
    let tier = manifest(
        dir.path(),
        "tier",
        &url,
        json!({"metrics": {"redisExporter": {"selector": "job=\"elsewhere\""}}}),
    );
    let (start, end) = (
        at(world.minute(CANARY.0 as f64)),
        at(world.minute(CANARY.1 as f64)),
    );
    let out = tierguard(&[
        "simulate",
        tier.to_str().unwrap(),
        "--from-prometheus",
        &url,
        "--start",
        &start,
        "--end",
        &end,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needed in [
        "MemoryTier clinic-backend (mode Enforce)",
        &format!("History from Prometheus {url}: {start} to {end}, one step every 30s (181 steps)"),
        "Redis signals: unknown over the whole range: Prometheus holds no redis_exporter series redis_memory_used_bytes{job=\"elsewhere\"}",
        "transition phase: Healthy → RollingBack: canary rollback: P50 latency",
        "Summary over 1h 30m 30s (181 steps)",
        "incidents opened: 1 (CanaryRollback 1)",
        "rollbacks: 1",
        "config changes: 2",
        "remediations that would have run: 0",
        "redisUsedMemoryPercent, redisUsedMemoryBytes, redisMaxMemoryBytes, redisEvictedKeys, redisKeyspaceHits, redisKeyspaceMisses, redisRunId, redisUptimeSeconds, redisKeysWithoutTtl, redisCacheGeneration 100.0% (181 steps): Prometheus holds no redis_exporter series",
        "range requests), policy",
    ] {
        assert!(text.contains(needed), "missing {needed:?} in:\n{text}");
    }
}

#[test]
fn bad_input_gets_a_clear_error() {
    let world = World::new();
    let prometheus = world.prometheus();
    let dir = tempfile::tempdir().unwrap();
    let url = prometheus.url();
    let tier = manifest(dir.path(), "tier", &url, json!({}));
    let tier = tier.to_str().unwrap();
    let fails = |args: &[&str], needles: &[&str]| {
        let out = tierguard(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        for needle in needles {
            assert!(err.contains(needle), "{args:?}: {needle:?} not in: {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    };
    let (start, end) = (at(world.minute(0.0)), at(world.minute(60.0)));

    let closed = format!("http://127.0.0.1:{}", free_port());
    fails(
        &[
            "simulate",
            tier,
            "--from-prometheus",
            &closed,
            "--start",
            &start,
            "--end",
            &end,
        ],
        &[
            &format!("cannot read Prometheus at {closed}"),
            "cannot reach Prometheus",
        ],
    );
    // Years before the history: a range with no data.
    fails(
        &[
            "simulate",
            tier,
            "--from-prometheus",
            &url,
            "--start",
            "2020-01-01T00:00:00Z",
            "--end",
            "2020-01-01T06:00:00Z",
        ],
        &[
            "holds no data for any of the tier's queries",
            "check the range",
        ],
    );
    fails(
        &[
            "simulate",
            tier,
            "--from-prometheus",
            &url,
            "--start",
            &end,
            "--end",
            &start,
        ],
        &["--start", "is not before --end"],
    );
    fails(
        &[
            "simulate",
            tier,
            "--from-prometheus",
            &url,
            "--start",
            "yesterday",
        ],
        &["--start", "\"yesterday\" is not a time"],
    );
    let bad_query = manifest(
        dir.path(),
        "bad-query",
        &url,
        json!({"metrics": {"queries": {"errorRatePercent": "sum(rate(http_requests_total[5m]"}}}),
    );
    fails(
        &[
            "simulate",
            bad_query.to_str().unwrap(),
            "--from-prometheus",
            &url,
            "--start",
            &start,
            "--end",
            &end,
        ],
        &[
            "the query of errorRatePercent (spec.metrics.queries.errorRatePercent) failed",
            "bad_data",
            "query: sum(rate(http_requests_total[5m]",
        ],
    );
    fails(
        &[
            "simulate",
            tier,
            "--from-prometheus",
            &url,
            "--start",
            "-90d",
            "--end",
            "now",
        ],
        &[
            "259201 steps, more than the limit of 100000",
            "narrow the range to at most 833h19m30s",
            "--step",
            "--max-steps",
        ],
    );
    let _ = &prometheus;
}
