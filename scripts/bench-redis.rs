//! Benchmark of `tierguard redis flush|audit` against the runbooks' own shell methods, on a real
//! redis-server loaded with mixed keys. Run it through `scripts/bench-redis`, which builds the
//! release binaries first.
//!
//! For each method the same fresh data set is loaded into a new redis-server, and a concurrent
//! client PINGs Redis every millisecond while the method runs; its p50/p99 tell what the
//! application would feel meanwhile.
//!
//! - flush: `tierguard redis flush --pattern 'session:*'` against
//!   `redis-cli --scan --pattern 'session:*' | xargs -n 100 redis-cli del`;
//! - audit: `tierguard redis audit --sample 0` against a per-key `redis-cli ttl` loop (timed over
//!   a prefix of the keys, since one process per key over a million keys takes most of an hour)
//!   and against `redis-cli --memkeys` (over every key).
//!
//! Budget: tierguard's flush at least 10× the peer's keys/s with the concurrent p99 under 5 ms,
//! and the same for audit against the per-key loop. Exits 1 when the budget is missed.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

struct Options {
    tierguard: PathBuf,
    keys: u64,
    ttl_loop_keys: u64,
    /// Extra arguments for `tierguard redis flush` / `audit` (space-separated), to try settings.
    flush_args: Vec<String>,
    audit_args: Vec<String>,
}

fn options() -> Options {
    let mut o = Options {
        tierguard: PathBuf::from("target/release/tierguard"),
        keys: 1_000_000,
        ttl_loop_keys: 3000,
        flush_args: Vec::new(),
        audit_args: Vec::new(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--tierguard" => o.tierguard = PathBuf::from(value),
            "--keys" => o.keys = value.parse().expect("--keys N"),
            "--ttl-loop-keys" => o.ttl_loop_keys = value.parse().expect("--ttl-loop-keys N"),
            "--flush-args" => o.flush_args = value.split_whitespace().map(String::from).collect(),
            "--audit-args" => o.audit_args = value.split_whitespace().map(String::from).collect(),
            other => {
                panic!("unknown argument {other}; use --tierguard PATH --keys N --ttl-loop-keys N")
            }
        }
        i += 2;
    }
    o
}

/// A redis-server of our own on a free loopback port, killed on drop.
struct Server {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = tempfile::tempdir().expect("temp dir");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed (apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server {
            port,
            child,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn connect(&self) -> MultiplexedConnection {
        let client = redis::Client::open(self.url()).unwrap();
        let config =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .expect("connect to the bench redis-server")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What was loaded.
#[derive(Clone, Copy, Debug)]
struct Loaded {
    total: u64,
    sessions: u64,
}

/// 40% sessions, 40% generation-scoped cache keys over four generations, 20% other keys (half of
/// them without TTL), with a few larger values.
async fn load(server: &Server, keys: u64) -> Loaded {
    let mut con = server.connect().await;
    let mut pipe = redis::pipe();
    let mut sessions = 0;
    for i in 0..keys {
        match i % 10 {
            0..=3 => {
                sessions += 1;
                pipe.cmd("SET")
                    .arg(format!("session:{i:x}"))
                    .arg("s")
                    .arg("EX")
                    .arg(3600)
                    .ignore();
            }
            4..=7 => {
                pipe.cmd("SET")
                    .arg(format!("cache:clinic:{}:generation:{}:{i}", i % 997, i % 4))
                    .arg(if i % 1000 == 4 {
                        "v".repeat(4096)
                    } else {
                        "v".into()
                    })
                    .arg("EX")
                    .arg(7200)
                    .ignore();
            }
            8 => {
                pipe.cmd("SET")
                    .arg(format!("clinic_config:{i}"))
                    .arg("c")
                    .ignore();
            }
            _ => {
                pipe.cmd("SET")
                    .arg(format!("user:{i}:profile"))
                    .arg("u")
                    .arg("EX")
                    .arg(86400)
                    .ignore();
            }
        }
        if i % 10_000 == 9_999 {
            pipe.query_async::<()>(&mut con).await.unwrap();
            pipe = redis::pipe();
        }
    }
    if !keys.is_multiple_of(10_000) {
        pipe.query_async::<()>(&mut con).await.unwrap();
    }
    let size: u64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    assert_eq!(size, keys, "the load did not store every key");
    Loaded {
        total: keys,
        sessions,
    }
}

async fn dbsize(server: &Server) -> u64 {
    let mut con = server.connect().await;
    redis::cmd("DBSIZE").query_async(&mut con).await.unwrap()
}

/// PING latencies of a concurrent client, one PING per millisecond.
struct Pinger {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Duration>>,
}

impl Pinger {
    async fn start(server: &Server) -> Pinger {
        let mut con = server.connect().await;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                let start = Instant::now();
                let _: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
                samples.push(start.elapsed());
            }
            samples
        });
        Pinger { stop, task }
    }

    async fn finish(self) -> Latency {
        self.stop.store(true, Ordering::Relaxed);
        let mut samples = self.task.await.unwrap();
        samples.sort();
        let at = |q: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples[i].as_secs_f64() * 1000.0
        };
        Latency {
            count: samples.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Latency {
    count: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Clone, Debug)]
struct Measured {
    name: String,
    keys: u64,
    seconds: f64,
    ping: Latency,
}

impl Measured {
    fn keys_per_second(&self) -> f64 {
        self.keys as f64 / self.seconds
    }

    fn print(&self) {
        println!(
            "  {:<58} {:>9} keys {:>8.2} s {:>11.0} keys/s   ping p50 {:>6.3} ms  p99 {:>6.3} ms  max {:>7.3} ms  ({} pings)",
            self.name,
            self.keys,
            self.seconds,
            self.keys_per_second(),
            self.ping.p50_ms,
            self.ping.p99_ms,
            self.ping.max_ms,
            self.ping.count
        );
    }
}

/// Run a command while the pinger runs; returns the wall-clock time and the pinger's figures.
async fn timed(server: &Server, mut command: tokio::process::Command) -> (f64, Latency, String) {
    let pinger = Pinger::start(server).await;
    // Let the pinger settle before the measured command starts.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = Instant::now();
    let out = command
        .stderr(Stdio::inherit())
        .output()
        .await
        .expect("run the measured command");
    let seconds = start.elapsed().as_secs_f64();
    let ping = pinger.finish().await;
    assert!(out.status.success(), "the measured command failed: {out:?}");
    (
        seconds,
        ping,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn shell(script: String) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("bash");
    c.arg("-c").arg(script).stdout(Stdio::null());
    c
}

#[tokio::main]
async fn main() {
    let o = options();
    assert!(
        o.tierguard.is_file(),
        "{} not found: build it with cargo build --release",
        o.tierguard.display()
    );
    println!(
        "tierguard redis benchmark: {} mixed keys (40% session:*, 40% cache:clinic:*:generation:*, 20% other)",
        o.keys
    );
    if !o.flush_args.is_empty() || !o.audit_args.is_empty() {
        println!(
            "extra flush args: {:?}, audit args: {:?}",
            o.flush_args, o.audit_args
        );
    }
    let mut results: Vec<Measured> = Vec::new();

    // Idle latency, for reference.
    let server = Server::start();
    let loaded = load(&server, o.keys).await;
    let pinger = Pinger::start(&server).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = pinger.finish().await;
    println!(
        "idle ping: p50 {:.3} ms, p99 {:.3} ms ({} pings)",
        idle.p50_ms, idle.p99_ms, idle.count
    );

    // Flush: tierguard.
    let mut cmd = tokio::process::Command::new(&o.tierguard);
    cmd.args([
        "redis",
        "flush",
        "--url",
        &server.url(),
        "--pattern",
        "session:*",
    ])
    .args([
        "--max-keys",
        "100000000",
        "--max-duration",
        "30m",
        "--output",
        "json",
    ])
    .stdout(Stdio::piped());
    let (seconds, ping, stdout) = timed(&server, cmd).await;
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("flush JSON");
    assert_eq!(
        report["deleted"].as_u64(),
        Some(loaded.sessions),
        "{report}"
    );
    assert_eq!(dbsize(&server).await, loaded.total - loaded.sessions);
    results.push(Measured {
        name: "flush  tierguard redis flush --pattern 'session:*'".into(),
        keys: loaded.sessions,
        seconds,
        ping,
    });
    println!(
        "  (tierguard's own report: {:.0} keys/s, {} pauses, max PING {:.3} ms)",
        report["keysPerSecond"].as_f64().unwrap_or(0.0),
        report["pauses"],
        report["maxPingMs"].as_f64().unwrap_or(0.0)
    );
    drop(server);

    // Flush: the runbooks' method.
    let server = Server::start();
    load(&server, o.keys).await;
    let p = server.port;
    let (seconds, ping, _) = timed(
        &server,
        shell(format!(
            "redis-cli -p {p} --scan --pattern 'session:*' | xargs -n 100 redis-cli -p {p} del"
        )),
    )
    .await;
    assert_eq!(dbsize(&server).await, loaded.total - loaded.sessions);
    results.push(Measured {
        name: "flush  redis-cli --scan | xargs -n 100 redis-cli del".into(),
        keys: loaded.sessions,
        seconds,
        ping,
    });

    // Audit: tierguard, every key (on a fresh load: the flushes removed the sessions).
    drop(server);
    let server = Server::start();
    load(&server, o.keys).await;
    let mut cmd = tokio::process::Command::new(&o.tierguard);
    cmd.args(["redis", "audit", "--url", &server.url(), "--sample", "0"])
        .args(["--max-duration", "30m", "--output", "json"])
        .args(&o.audit_args)
        .stdout(Stdio::piped());
    let (seconds, ping, stdout) = timed(&server, cmd).await;
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("audit JSON");
    assert_eq!(report["sampled"].as_u64(), Some(loaded.total), "{report}");
    println!(
        "  (tierguard's own report: {:.0} keys/s, {} pauses, max PING {:.3} ms)",
        report["keysPerSecond"].as_f64().unwrap_or(0.0),
        report["pauses"],
        report["maxPingMs"].as_f64().unwrap_or(0.0)
    );
    results.push(Measured {
        name: "audit  tierguard redis audit --sample 0 (PTTL + MEMORY USAGE)".into(),
        keys: loaded.total,
        seconds,
        ping,
    });

    // Audit: a per-key TTL loop over the first keys of a SCAN.
    let n = o.ttl_loop_keys.min(loaded.total);
    let mut cmd = shell(format!(
        "redis-cli -p {p2} --scan | head -n {n} | while read -r key; do redis-cli -p {p2} ttl \"$key\"; done | wc -l",
        p2 = server.port
    ));
    cmd.stdout(Stdio::piped());
    let (seconds, ping, stdout) = timed(&server, cmd).await;
    assert_eq!(
        stdout.trim(),
        n.to_string(),
        "the TTL loop did not answer every key"
    );
    results.push(Measured {
        name: format!("audit  per-key redis-cli ttl loop (first {n} keys)"),
        keys: n,
        seconds,
        ping,
    });

    // Audit: redis-cli --memkeys, every key.
    let mut cmd = shell(format!("redis-cli -p {} --memkeys", server.port));
    cmd.stdout(Stdio::piped());
    let (seconds, ping, stdout) = timed(&server, cmd).await;
    assert!(
        stdout.contains(&format!("Sampled {} keys", loaded.total)),
        "redis-cli --memkeys did not see every key: {stdout}"
    );
    results.push(Measured {
        name: "audit  redis-cli --memkeys".into(),
        keys: loaded.total,
        seconds,
        ping,
    });
    drop(server);

    println!();
    for r in &results {
        r.print();
    }
    let ratio = |a: usize, b: usize| results[a].keys_per_second() / results[b].keys_per_second();
    let flush_ratio = ratio(0, 1);
    let audit_ttl_ratio = ratio(2, 3);
    let audit_memkeys_ratio = ratio(2, 4);
    println!();
    println!("flush: tierguard / runbook method      = {flush_ratio:.1}x");
    println!("audit: tierguard / per-key ttl loop    = {audit_ttl_ratio:.1}x");
    println!("audit: tierguard / redis-cli --memkeys = {audit_memkeys_ratio:.1}x");
    let checks = [
        ("flush >= 10x the runbook method", flush_ratio >= 10.0),
        ("flush: concurrent p99 < 5 ms", results[0].ping.p99_ms < 5.0),
        ("audit >= 10x the per-key ttl loop", audit_ttl_ratio >= 10.0),
        ("audit: concurrent p99 < 5 ms", results[2].ping.p99_ms < 5.0),
    ];
    let mut met = true;
    for (what, ok) in checks {
        println!("budget: {what}: {}", if ok { "met" } else { "MISSED" });
        met &= ok;
    }
    if !met {
        std::process::exit(1);
    }
}
