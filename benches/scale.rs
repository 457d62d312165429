//! Scale: one controller process reconciling many MemoryTiers against the in-process API server,
//! every tier scraping a local metrics endpoint.
//!
//! Prints reconciles per second, the controller's RSS, CPU per reconcile, and whether every tier
//! was reconciled within its interval. Run with:
//!
//!     cargo build --release --bin tierguard && cargo bench --bench scale
//!
//! Options through the environment: TIERS (default 1000), INTERVAL (default 30s), ROUNDS (how many
//! intervals to measure, default 3), SCALE_LOG (a file for the controller's log), TIERGUARD_BIN (the controller binary, default
//! target/release/tierguard).

#[path = "../tests/it/support/exporter.rs"]
mod exporter;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use exporter::{AppMetrics, Exporter};
use kube_testserver::{ApiServer, Gvr, Kind};
use serde_json::json;
use tierguard::api::MemoryTier;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// RSS (KiB) and CPU time (user + system, seconds) of a process, from /proc.
fn usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat; after the ")" they are at 11 and 12.
    let hz = 100.0;
    (rss, (ticks(11) + ticks(12)) / hz)
}

/// The largest RSS (KiB) the process has had since it started (the kernel's VmHWM).
fn high_water_mark(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn reconciles_total(metrics_port: u16) -> f64 {
    use std::io::{Read, Write};
    let mut text = String::new();
    if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", metrics_port)) {
        let _ = stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        let _ = stream.read_to_string(&mut text);
    }
    text.lines()
        .find_map(|l| l.strip_prefix("tierguard_reconciles_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would run this in test mode: skip then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale: run with `cargo bench --bench scale`");
        return;
    }
    tierguard::install_crypto_provider();
    let tiers: usize = env_or("TIERS", 1000);
    let interval_s: u64 = env_or("INTERVAL", 30);
    let rounds: u64 = env_or("ROUNDS", 3);
    let binary = std::env::var_os("TIERGUARD_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/tierguard"));
    assert!(
        binary.exists(),
        "build the controller first: cargo build --release --bin tierguard"
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(
        ApiServer::builder()
            .kind(Kind::custom::<MemoryTier>())
            .start(),
    );
    let app = Exporter::start(&AppMetrics {
        requests: [("200".to_owned(), 1000)].into(),
        duration_buckets: vec![(0.05, 900), (0.1, 1000)],
        duration_sum: 50.0,
        cache_hits: [("1".to_owned(), 990)].into(),
        cache_misses: [("1".to_owned(), 10)].into(),
        mem0_success: 100,
        mem0_failure: 0,
        breakers: [("mem0".to_owned(), 0.0)].into(),
    });
    let gvr = Gvr::of::<MemoryTier>();
    let created = Instant::now();
    for i in 0..tiers {
        let name = format!("tier-{i:04}");
        server
            .put_json(
            &gvr,
            json!({
                "apiVersion": "tierguard.dev/v1alpha1",
                "kind": "MemoryTier",
                "metadata": {"name": name, "namespace": "scale"},
                "spec": {
                    "target": {"configMapName": format!("{name}-flags")},
                    "metrics": {"scrape": {"url": app.url()}, "interval": format!("{interval_s}s"), "timeout": format!("{}ms", (interval_s * 1000 / 2).min(5000))},
                },
            }),
        )
            .expect("store a MemoryTier");
    }
    println!(
        "scale: {tiers} MemoryTiers created in {:?}",
        created.elapsed()
    );

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig)
        .expect("write a kubeconfig");
    let metrics_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(&binary)
        .args(["run", "--namespace", "scale", "--log-format", "json"])
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
        .env(
            "RUST_LOG",
            std::env::var("SCALE_RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(match std::env::var_os("SCALE_LOG") {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("the SCALE_LOG file")),
            None => Stdio::null(),
        })
        .spawn()
        .expect("start the controller");
    let pid = child.id();

    // First round: every tier gets its first reconcile (and its ConfigMap).
    let started = Instant::now();
    let first_pass = loop {
        let rendered = server
            .list_json(&Gvr::of::<k8s_openapi::api::core::v1::ConfigMap>())
            .len();
        if rendered >= tiers {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {rendered} of {tiers} tiers rendered after 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("scale: first reconcile of all {tiers} tiers within {first_pass:?}");

    // Steady state: measure over whole intervals.
    let (_, cpu0) = usage(pid);
    let reconciles0 = reconciles_total(metrics_port);
    let steady = Instant::now();
    let mut last_seen: HashMap<String, String> = HashMap::new();
    let mut worst_gap = Duration::ZERO;
    let mut last_change: HashMap<String, Instant> = HashMap::new();
    while steady.elapsed() < Duration::from_secs(interval_s * rounds) {
        std::thread::sleep(Duration::from_secs(1));
        let now = Instant::now();
        for tier in server.list_json(&gvr) {
            let name = tier["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let at = tier["status"]["observed"]["at"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if last_seen.get(&name) != Some(&at) {
                if let Some(prev) = last_change.get(&name) {
                    worst_gap = worst_gap.max(now - *prev);
                }
                last_change.insert(name.clone(), now);
                last_seen.insert(name, at);
            }
        }
    }
    let elapsed = steady.elapsed().as_secs_f64();
    let (rss, cpu1) = usage(pid);
    let peak_rss = high_water_mark(pid);
    let reconciles = reconciles_total(metrics_port) - reconciles0;
    let stale = last_change
        .values()
        .filter(|t| t.elapsed() > Duration::from_secs(interval_s + 5))
        .count();
    child.kill().ok();
    child.wait().ok();

    println!("scale: {tiers} tiers, interval {interval_s}s, measured over {elapsed:.0}s");
    println!("scale: reconciles/s           {:.1}", reconciles / elapsed);
    println!(
        "scale: expected reconciles/s  {:.1} (tiers / interval)",
        tiers as f64 / interval_s as f64
    );
    println!(
        "scale: controller RSS         {:.1} MiB at the end (peak over the whole run, first pass included: {:.1} MiB)",
        rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0
    );
    println!(
        "scale: CPU per reconcile      {:.2} ms",
        (cpu1 - cpu0) * 1000.0 / reconciles.max(1.0)
    );
    println!(
        "scale: worst gap between two reconciles of one tier {:.1}s (interval {interval_s}s); tiers not reconciled in the last interval: {stale}",
        worst_gap.as_secs_f64()
    );
    runtime.block_on(server.shutdown());
}
