//! Backtest: `tierguard simulate --from-prometheus` over 7 days at a 30 s step (20,161 policy
//! steps) for one tier, from a local Prometheus holding those 7 days.
//!
//! The history is generated (tests/it/support/history.rs: an application scraped every 15 s and
//! its Redis through redis_exporter's names, with a latency regression, a mem0 slow burn, a Redis
//! memory climb and a metrics outage on the way), loaded with `promtool tsdb create-blocks-from
//! openmetrics`, and served by a real `prometheus`. Then the release binary runs the backtest
//! RUNS times; each run prints its wall time and the split the backtest reports itself
//! (Prometheus time: the range requests; policy time: the replay and the summary). Run with:
//!
//!     cargo bench --bench backtest
//!
//! Options through the environment: DAYS (default 7), STEP (default 30s), SCRAPE (seconds,
//! default 15), RUNS (default 3).

#[path = "../tests/it/support/history.rs"]
mod history;
#[path = "../tests/it/support/servers.rs"]
mod servers;

use std::process::Command;
use std::time::Instant;

use history::{App, Model, Redis};
use serde_json::Value;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A week of an ordinary service with some trouble in it, so that the policy has work to do.
fn app(base: i64, t: i64) -> Option<App> {
    let hour = (t - base) as f64 / 3600.0;
    let day = (hour / 24.0).floor();
    let mut app = App {
        // Traffic follows the day.
        requests_per_second: 20.0 + 15.0 * (hour / 24.0 * std::f64::consts::TAU).sin(),
        ..App::default()
    };
    match day as i64 {
        // A canary latency regression for 40 minutes.
        1 if (10.0..10.67).contains(&(hour - 24.0)) => app.slow = 0.8,
        // A mem0 slow burn over two hours.
        3 if (6.0..8.0).contains(&(hour - 72.0)) => app.mem0_success = 0.93,
        // Nothing scraped for an hour.
        5 if (2.0..3.0).contains(&(hour - 120.0)) => return None,
        _ => {}
    }
    Some(app)
}

fn redis(base: i64, t: i64) -> Option<Redis> {
    let hour = (t - base) as f64 / 3600.0;
    // Day 4: memory climbs to 95 % over an hour, stays half an hour, then is freed.
    let percent = match hour - 96.0 {
        h if (0.0..1.0).contains(&h) => 40.0 + 55.0 * h,
        h if (1.0..1.5).contains(&h) => 95.0,
        _ => 40.0,
    };
    Some(Redis::at_percent(percent))
}

fn main() {
    let days: i64 = env_or("DAYS", 7);
    let step: String = env_or("STEP", "30s".to_owned());
    let scrape: i64 = env_or("SCRAPE", 15);
    let runs: usize = env_or("RUNS", 3);

    let now = jiff::Timestamp::now().as_second();
    let end = now / 60 * 60 - 600;
    let start = end - days * 86_400;
    let a = |t| app(start, t);
    let r = |t| redis(start, t);
    let model = Model {
        // Half an hour more at the start: the first steps' rate windows are full.
        start: start - 1800 + 7,
        end,
        scrape,
        app: &a,
        redis: &r,
    };
    let built = Instant::now();
    let text = model.openmetrics();
    let megabytes = text.len() as f64 / 1e6;
    let prometheus = servers::PrometheusServer::with_history(&text);
    drop(text);
    println!(
        "history: {days} days scraped every {scrape}s, {megabytes:.0} MB of OpenMetrics, loaded into Prometheus in {:.1}s",
        built.elapsed().as_secs_f64()
    );

    let url = prometheus.url();
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("tier.yaml");
    let tier = serde_json::json!({
        "apiVersion": "tierguard.dev/v1alpha1",
        "kind": "MemoryTier",
        "metadata": {"name": "clinic-backend", "namespace": "clinic"},
        "spec": {
            "target": {"configMapName": "clinic-backend-flags"},
            "metrics": {
                "prometheus": {"url": url},
                "selector": "job=\"app\"",
                "interval": "30s",
                "redisExporter": {"selector": "job=\"redis\""},
            },
            "rollback": {"autoResume": true},
        },
    });
    std::fs::write(&manifest, serde_json::to_string(&tier).unwrap()).expect("write the manifest");
    let at = |t: i64| jiff::Timestamp::from_second(t).unwrap().to_string();
    let (from, to) = (at(start), at(end));

    // Writing the history pushes the binary out of the page cache on a machine short of memory:
    // its first start then waits on the disk, which is no part of a backtest. Load it first.
    let began = Instant::now();
    let loaded = Command::new(env!("CARGO_BIN_EXE_tierguard"))
        .arg("version")
        .output()
        .expect("run tierguard version");
    assert!(loaded.status.success(), "tierguard version failed");
    println!(
        "first start of the binary (tierguard version): {:.2}s",
        began.elapsed().as_secs_f64()
    );

    let mut walls = Vec::new();
    for run in 1..=runs {
        let began = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_tierguard"))
            .args(["simulate", manifest.to_str().unwrap()])
            .args(["--from-prometheus", &url, "--start", &from, "--end", &to])
            .args(["--step", &step, "--output", "json"])
            .output()
            .expect("run tierguard simulate");
        let wall = began.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "tierguard simulate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
        let lines = stdout.lines().count();
        let summary: Value = stdout
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .expect("a summary line");
        let timings = &summary["timings"];
        println!(
            "run {run}: {wall:.2}s wall for {} steps of {step}: Prometheus {:.2}s ({} range requests), policy {:.2}s; {} incidents opened, {lines} output lines",
            summary["steps"],
            timings["prometheusSeconds"].as_f64().unwrap_or(f64::NAN),
            timings["rangeRequests"],
            timings["policySeconds"].as_f64().unwrap_or(f64::NAN),
            summary["incidents"].as_array().map_or(0, Vec::len),
        );
        walls.push(wall);
    }
    walls.sort_by(f64::total_cmp);
    println!(
        "backtest of {days} days at a {step} step: median {:.2}s wall, slowest {:.2}s (budget 10s)",
        walls[walls.len() / 2],
        walls[walls.len() - 1]
    );
}
