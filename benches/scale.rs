//! Scale: one controller process reconciling a fleet of MemoryTiers against the in-process API
//! server, in two modes: every tier scraping a local metrics endpoint directly, and every tier
//! reading a real Prometheus (Debian's `prometheus`) that scrapes one exporter target holding
//! every tier's series (told apart by a `tier` label).
//!
//! For each fleet size and mode it prints: the first pass over the new fleet, how long a tier
//! created under full load waits for its first render, reconciles per second, the controller's
//! RSS (at the end and its peak, VmHWM), its CPU (cores on average over the steady state, and per
//! reconcile), the worst gap between two reconciles of one tier, the tiers not reconciled in the
//! last interval, the steady-state API writes per tier-hour (from the API server's own count),
//! and the Prometheus requests (or scrapes) per tick. Then one table of every run. Run with:
//!
//!     cargo build --release --bin tierguard && TIERS=10000 cargo bench --bench scale
//!
//! Options through the environment: TIERS (the largest fleet, default 1000; 1,000 and 3,000 run
//! first when smaller), SIZES (the fleet sizes instead, e.g. `1000,3000`), MODES (`scrape`,
//! `prometheus` or both, the default), INTERVAL (default 30s), ROUNDS (intervals measured,
//! default 3), SCALE_LOG (a file for the controller's log), SCALE_ARGS (more arguments of
//! `tierguard run`, e.g. `--status-refresh=0s` to write status at every tick as before the quiet
//! steady state), TIERGUARD_BIN (the controller binary, default target/release/tierguard), SCALE_DUMP (a file
//! for the first tier's object as stored at the end),
//! MALLOC_ARENA_MAX (default 2, as the manifests set it).

#[path = "../tests/it/support/exporter.rs"]
mod exporter;
#[path = "../tests/it/support/servers.rs"]
mod servers;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut text = String::new();
    if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
        let _ = write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n"
        );
        let _ = stream.read_to_string(&mut text);
    }
    text
}

/// The controller's /metrics page as Prometheus reads it: asked for gzip, and decompressed.
fn metrics_page(port: u16) -> String {
    use std::io::{Read, Write};
    let mut raw = Vec::new();
    if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
        let _ = write!(
            stream,
            "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\nAccept-Encoding: gzip\r\n\r\n"
        );
        let _ = stream.read_to_end(&mut raw);
    }
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return String::new();
    };
    let (head, body) = (String::from_utf8_lossy(&raw[..split]), &raw[split + 4..]);
    if !head.to_ascii_lowercase().contains("content-encoding: gzip") {
        return String::from_utf8_lossy(body).into_owned();
    }
    let mut text = String::new();
    let _ = flate2::read::GzDecoder::new(body).read_to_string(&mut text);
    text
}

/// The sum of a metric's samples in an exposition, over the series whose line contains `with`.
fn metric_sum(text: &str, name: &str, with: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter(|l| l.contains(with))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Each tier's last reconcile (Unix seconds) from the controller's /metrics, and the page's size.
fn last_reconciles(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("tierguard_tier_last_reconcile_timestamp_seconds{"))
        .filter_map(|l| {
            let tier = l.split("tier=\"").nth(1)?.split('"').next()?;
            let value = l.rsplit(' ').next()?.parse().ok()?;
            Some((tier.to_owned(), value))
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Scrape,
    Prometheus,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Scrape => "scrape",
            Mode::Prometheus => "prometheus",
        }
    }
}

/// The figures of one run.
struct Figures {
    tiers: usize,
    mode: Mode,
    first_pass: Duration,
    /// Tiers not rendered when the first pass was given up (after 10 minutes).
    unrendered: usize,
    newcomer: Duration,
    reconciles_per_s: f64,
    rss_mib: f64,
    peak_mib: f64,
    cores: f64,
    cpu_ms_per_reconcile: f64,
    worst_gap: f64,
    stale: usize,
    writes_per_tier_hour: f64,
    reads_per_tick: f64,
    metrics_page_kib: f64,
}

/// Traffic on the shared exporter: counters grow every 2 s until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(exporter: Arc<Exporter>, render: impl Fn(u64) -> String + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut step = 0;
                while !stop.load(Ordering::SeqCst) {
                    exporter.set_body(&render(step));
                    step += 1;
                    for _ in 0..20 {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })
        };
        Traffic {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn one_app(step: u64) -> String {
    let n = 1000 + step * 50;
    AppMetrics {
        requests: [("200".to_owned(), n)].into(),
        duration_buckets: vec![(0.05, n * 9 / 10), (0.1, n)],
        duration_sum: n as f64 * 0.04,
        cache_hits: [("1".to_owned(), n * 99 / 100)].into(),
        cache_misses: [("1".to_owned(), n / 100)].into(),
        mem0_success: n / 10,
        mem0_failure: 0,
        breakers: [("mem0".to_owned(), 0.0)].into(),
    }
    .render()
}

fn tier_name(i: usize) -> String {
    format!("tier-{i:05}")
}

/// Every tier's series on one page, told apart by `tier`.
fn fleet_page(tiers: usize, step: u64) -> String {
    let n = 1000 + step * 50;
    let mut out = String::with_capacity(tiers * 900);
    let family = |out: &mut String, name: &str, kind: &str| {
        let _ = writeln!(out, "# HELP {name} {name}\n# TYPE {name} {kind}");
    };
    family(&mut out, "http_requests_total", "counter");
    for i in 0..tiers {
        let t = tier_name(i);
        let _ = writeln!(
            out,
            "http_requests_total{{tier=\"{t}\",status=\"200\"}} {n}"
        );
    }
    family(&mut out, "http_request_duration_seconds", "histogram");
    for i in 0..tiers {
        let t = tier_name(i);
        let _ = writeln!(
            out,
            "http_request_duration_seconds_bucket{{tier=\"{t}\",le=\"0.05\"}} {}\nhttp_request_duration_seconds_bucket{{tier=\"{t}\",le=\"0.1\"}} {n}\nhttp_request_duration_seconds_bucket{{tier=\"{t}\",le=\"+Inf\"}} {n}\nhttp_request_duration_seconds_sum{{tier=\"{t}\"}} {}\nhttp_request_duration_seconds_count{{tier=\"{t}\"}} {n}",
            n * 9 / 10,
            n as f64 * 0.04
        );
    }
    for (name, value) in [
        ("cache_hits_total", n * 99 / 100),
        ("cache_misses_total", n / 100),
    ] {
        family(&mut out, name, "counter");
        for i in 0..tiers {
            let _ = writeln!(out, "{name}{{tier=\"{}\"}} {value}", tier_name(i));
        }
    }
    family(&mut out, "mem0_writes_total", "counter");
    for i in 0..tiers {
        let t = tier_name(i);
        let _ = writeln!(
            out,
            "mem0_writes_total{{tier=\"{t}\",outcome=\"success\"}} {}\nmem0_writes_total{{tier=\"{t}\",outcome=\"failure\"}} 0",
            n / 10
        );
    }
    family(&mut out, "circuit_breaker_state", "gauge");
    for i in 0..tiers {
        let _ = writeln!(
            out,
            "circuit_breaker_state{{tier=\"{}\",breaker=\"mem0\"}} 0",
            tier_name(i)
        );
    }
    out
}

/// The MemoryTier `name` reading `source` (a scrape URL, or a Prometheus URL).
fn manifest(name: &str, mode: Mode, source: &str, interval_s: u64) -> serde_json::Value {
    let timeout = format!("{}ms", (interval_s * 1000 / 2).min(5000));
    let metrics = match mode {
        Mode::Scrape => json!({
            "scrape": {"url": source}, "interval": format!("{interval_s}s"), "timeout": timeout,
        }),
        Mode::Prometheus => json!({
            "prometheus": {"url": source}, "selector": format!("tier=\"{name}\""),
            "rateWindow": "1m", "interval": format!("{interval_s}s"), "timeout": timeout,
        }),
    };
    json!({
        "apiVersion": "tierguard.dev/v1alpha1",
        "kind": "MemoryTier",
        "metadata": {"name": name, "namespace": "scale"},
        "spec": {"target": {"configMapName": format!("{name}-flags")}, "metrics": metrics},
    })
}

fn configmaps(server: &ApiServer) -> usize {
    server
        .list_json(&Gvr::of::<k8s_openapi::api::core::v1::ConfigMap>())
        .len()
}

fn start_controller(binary: &Path, kubeconfig: &Path, metrics_port: u16) -> Child {
    Command::new(binary)
        .args(["run", "--namespace", "scale", "--log-format", "json"])
        // The exporter and Prometheus listen on loopback, which the defaults refuse.
        .args(["--metrics-destinations", "127.0.0.0/8"])
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
        .args(
            std::env::var("SCALE_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .env(
            "RUST_LOG",
            std::env::var("SCALE_RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        // As the shipped manifests run it (deploy/base/deployment.yaml).
        .env(
            "MALLOC_ARENA_MAX",
            std::env::var("MALLOC_ARENA_MAX").unwrap_or_else(|_| "2".into()),
        )
        .stdout(Stdio::null())
        .stderr(match std::env::var_os("SCALE_LOG") {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("the SCALE_LOG file")),
            None => Stdio::null(),
        })
        .spawn()
        .expect("start the controller")
}

fn run(binary: &Path, tiers: usize, mode: Mode, interval_s: u64, rounds: u64) -> Figures {
    println!("\nscale: {tiers} tiers, {} mode", mode.name());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(
        ApiServer::builder()
            .kind(Kind::custom::<MemoryTier>())
            .start(),
    );
    let exporter = Arc::new(Exporter::start(&AppMetrics::default()));
    let (traffic, prometheus) = match mode {
        Mode::Scrape => (Traffic::start(exporter.clone(), one_app), None),
        Mode::Prometheus => {
            let traffic = Traffic::start(exporter.clone(), move |step| fleet_page(tiers, step));
            let prometheus =
                servers::PrometheusServer::start(&[exporter.target()], Duration::from_secs(5));
            (traffic, Some(prometheus))
        }
    };
    let source = match &prometheus {
        Some(p) => p.url(),
        None => exporter.url(),
    };
    if let Some(p) = &prometheus {
        // Two scrapes of every series, so every rate is known from the first reconcile on.
        let wanted = "count(http_requests_total)";
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let answer = http_get(
                p.port(),
                &format!("/api/v1/query?query={}", urlencode(wanted)),
            );
            if answer.contains(&format!("\"{tiers}\"")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus did not scrape every tier's series: {answer}"
            );
            std::thread::sleep(Duration::from_secs(1));
        }
        std::thread::sleep(Duration::from_secs(11));
    }
    let gvr = Gvr::of::<MemoryTier>();
    let created = Instant::now();
    for i in 0..tiers {
        server
            .put_json(&gvr, manifest(&tier_name(i), mode, &source, interval_s))
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
    let metrics_port = servers::free_port();
    let before_start = server.write_counts();
    let mut child = start_controller(binary, &kubeconfig, metrics_port);
    let pid = child.id();

    // First pass: every new tier gets its first reconcile (and its ConfigMap).
    let started = Instant::now();
    let mut unrendered = 0;
    let first_pass = loop {
        let rendered = configmaps(&server);
        if rendered >= tiers {
            break started.elapsed();
        }
        if started.elapsed() >= Duration::from_secs(600) {
            // Measured on as it is: the table says how many were not rendered.
            unrendered = tiers - rendered;
            println!("scale: only {rendered} of {tiers} tiers rendered after 10 minutes");
            break started.elapsed();
        }
        // Listing copies every ConfigMap under the API server's lock: not too often.
        std::thread::sleep(Duration::from_secs(1));
    };
    let after_first = server.write_counts();
    println!(
        "scale: first reconcile of all {tiers} tiers within {first_pass:?} (two intervals: {}s); API writes meanwhile {:.2} per tier ({:.2} status, {:.2} Events)",
        2 * interval_s,
        (after_first.total - before_start.total) as f64 / tiers as f64,
        (after_first.status - before_start.status) as f64 / tiers as f64,
        (after_first.events - before_start.events) as f64 / tiers as f64,
    );
    // A tier created under full load.
    let newcomer = {
        let name = "newcomer";
        server
            .put_json(
                &gvr,
                manifest(name, Mode::Scrape, &exporter.url(), interval_s),
            )
            .expect("store the new MemoryTier");
        let created = Instant::now();
        let cms = Gvr::of::<k8s_openapi::api::core::v1::ConfigMap>();
        while server
            .get_json(&cms, "scale", &format!("{name}-flags"))
            .is_none()
        {
            assert!(created.elapsed() < Duration::from_secs(300));
            std::thread::sleep(Duration::from_millis(50));
        }
        created.elapsed()
    };
    println!("scale: a tier created under full load was rendered {newcomer:?} later");
    // Let the second reconciles (the first with every rate known) pass.
    std::thread::sleep(Duration::from_secs(interval_s));

    // Steady state: measured over whole intervals.
    let (_, cpu0) = usage(pid);
    let page = metrics_page(metrics_port);
    let reconciles0 = metric_sum(&page, "tierguard_reconciles_total", "");
    let writes0 = server.write_counts();
    let reads0 = reads(&prometheus, &exporter);
    let steady = Instant::now();
    let mut last: HashMap<String, f64> = last_reconciles(&page);
    let mut worst_gap = 0.0f64;
    let mut page_bytes = page.len();
    // Often enough to see every reconcile (the gauge holds its time), rarely enough that
    // rendering the page (31 MiB at 10,000 tiers) is not what is measured.
    let poll = Duration::from_secs(interval_s) / 3;
    while steady.elapsed() < Duration::from_secs(interval_s * rounds) {
        std::thread::sleep(poll);
        let page = metrics_page(metrics_port);
        page_bytes = page_bytes.max(page.len());
        for (tier, at) in last_reconciles(&page) {
            if let Some(before) = last.get(&tier)
                && at > *before
            {
                worst_gap = worst_gap.max(at - before);
            }
            last.insert(tier, at);
        }
    }
    let elapsed = steady.elapsed().as_secs_f64();
    let object = server
        .get_json(&gvr, "scale", &tier_name(0))
        .expect("the first tier is stored");
    let object_bytes = serde_json::to_vec(&object).map_or(0, |v| v.len());
    if let Some(path) = std::env::var_os("SCALE_DUMP") {
        std::fs::write(path, serde_json::to_vec_pretty(&object).unwrap()).expect("SCALE_DUMP");
    }
    let (rss, cpu1) = usage(pid);
    let peak_rss = high_water_mark(pid);
    let page = metrics_page(metrics_port);
    let reconciles = metric_sum(&page, "tierguard_reconciles_total", "") - reconciles0;
    let writes1 = server.write_counts();
    let reads1 = reads(&prometheus, &exporter);
    let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
    let stale = last_reconciles(&page)
        .values()
        .filter(|at| now - **at > (interval_s + 5) as f64)
        .count();
    child.kill().ok();
    child.wait().ok();
    drop(traffic);
    drop(prometheus);

    let writes = writes1.total - writes0.total;
    let tier_hours = (tiers + 1) as f64 * elapsed / 3600.0;
    let figures = Figures {
        tiers,
        mode,
        first_pass,
        unrendered,
        newcomer,
        reconciles_per_s: reconciles / elapsed,
        rss_mib: rss as f64 / 1024.0,
        peak_mib: peak_rss as f64 / 1024.0,
        cores: (cpu1 - cpu0) / elapsed,
        cpu_ms_per_reconcile: (cpu1 - cpu0) * 1000.0 / reconciles.max(1.0),
        worst_gap,
        stale,
        writes_per_tier_hour: writes as f64 / tier_hours,
        reads_per_tick: (reads1 - reads0) / (elapsed / interval_s as f64),
        metrics_page_kib: page_bytes as f64 / 1024.0,
    };
    println!(
        "scale: {tiers} tiers, interval {interval_s}s, measured over {elapsed:.0}s ({} mode)",
        mode.name()
    );
    println!(
        "scale: reconciles/s           {:.1} (expected {:.1}: tiers / interval)",
        figures.reconciles_per_s,
        (tiers + 1) as f64 / interval_s as f64
    );
    println!(
        "scale: controller RSS         {:.1} MiB at the end, peak (VmHWM, first pass included) {:.1} MiB",
        figures.rss_mib, figures.peak_mib
    );
    println!(
        "scale: controller CPU         {:.3} cores on average, {:.2} ms per reconcile",
        figures.cores, figures.cpu_ms_per_reconcile
    );
    println!(
        "scale: worst gap between two reconciles of one tier {:.1}s (interval {interval_s}s); tiers not reconciled in the last interval: {stale}",
        worst_gap
    );
    println!(
        "scale: API writes             {writes} in the steady state ({} status, {} Events): {:.2} per tier-hour",
        writes1.status - writes0.status,
        writes1.events - writes0.events,
        figures.writes_per_tier_hour
    );
    println!(
        "scale: {} per tick   {:.1} (one per tier and query before the groups: {})",
        match mode {
            Mode::Scrape => "scrapes",
            Mode::Prometheus => "Prometheus requests",
        },
        figures.reads_per_tick,
        match mode {
            Mode::Scrape => tiers + 1,
            Mode::Prometheus => (tiers + 1) * built_in_queries(),
        }
    );
    println!(
        "scale: the controller's /metrics page: {:.0} KiB; one MemoryTier as stored: {:.1} KiB of JSON",
        figures.metrics_page_kib,
        object_bytes as f64 / 1024.0
    );
    runtime.block_on(server.shutdown());
    figures
}

/// How many built-in queries one tier's observation sends to Prometheus.
fn built_in_queries() -> usize {
    let tier: MemoryTier = serde_json::from_value(manifest("x", Mode::Prometheus, "http://p", 30))
        .expect("the bench's tier parses");
    tierguard::observe::queries::QuerySet::from_spec(&tier.spec)
        .iter()
        .count()
}

/// Requests Prometheus has answered on its query API, or scrapes the exporter has served.
fn reads(prometheus: &Option<servers::PrometheusServer>, exporter: &Exporter) -> f64 {
    match prometheus {
        Some(p) => metric_sum(
            &http_get(p.port(), "/metrics"),
            "prometheus_http_requests_total",
            "handler=\"/api/v1/query\"",
        ),
        None => exporter.served() as f64,
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would run this in test mode: skip then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale: run with `cargo bench --bench scale`");
        return;
    }
    tierguard::install_crypto_provider();
    let largest: usize = env_or("TIERS", 1000);
    let sizes: Vec<usize> = match std::env::var("SIZES") {
        Ok(list) => list
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect(),
        Err(_) => [1000, 3000]
            .into_iter()
            .filter(|s| *s < largest)
            .chain([largest])
            .collect(),
    };
    let modes: Vec<Mode> = match std::env::var("MODES").as_deref() {
        Ok("scrape") => vec![Mode::Scrape],
        Ok("prometheus") => vec![Mode::Prometheus],
        _ => vec![Mode::Scrape, Mode::Prometheus],
    };
    let interval_s: u64 = env_or("INTERVAL", 30);
    let rounds: u64 = env_or("ROUNDS", 3);
    let binary: PathBuf = std::env::var_os("TIERGUARD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/tierguard"));
    assert!(
        binary.exists(),
        "build the controller first: cargo build --release --bin tierguard"
    );
    let mut all = Vec::new();
    for &mode in &modes {
        for &tiers in &sizes {
            all.push(run(&binary, tiers, mode, interval_s, rounds));
        }
    }
    println!(
        "\n| tiers | mode | first pass | new tier under load | reconciles/s | RSS end / peak (MiB) | CPU (cores) | CPU/reconcile (ms) | worst gap (s) | late tiers | API writes per tier-hour | reads per tick |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for f in &all {
        println!(
            "| {} | {} | {} | {:.2}s | {:.1} | {:.0} / {:.0} | {:.3} | {:.2} | {:.1} | {} | {:.2} | {:.1} |",
            f.tiers,
            f.mode.name(),
            if f.unrendered > 0 {
                format!(
                    "{} not rendered after {:.0}s",
                    f.unrendered,
                    f.first_pass.as_secs_f64()
                )
            } else {
                format!("{:.1}s", f.first_pass.as_secs_f64())
            },
            f.newcomer.as_secs_f64(),
            f.reconciles_per_s,
            f.rss_mib,
            f.peak_mib,
            f.cores,
            f.cpu_ms_per_reconcile,
            f.worst_gap,
            f.stale,
            f.writes_per_tier_hour,
            f.reads_per_tick
        );
    }
}
