//! The demo clinic backend (examples/clinic-backend) against a real redis-server: the cache and
//! its generations, TTL jitter, stale serving, warming, hot-reloaded flags, the circuit breaker,
//! the fault switches, the metrics contract as tierguard's own observers read it (scraped
//! directly and through a real Prometheus), the load generator, and the binary itself.
//!
//! The service runs in-process (its module tree is included below) except in the last test,
//! which builds and runs the real example binary.

#[allow(dead_code)]
#[path = "../../examples/clinic-backend/app/mod.rs"]
mod app;
use crate::support::{self, clinic_backend as clinic_process};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redis::Commands;
use serde_json::{Value, json};
use support::servers::{PrometheusServer, RedisServer};
use support::tiers::spec;
use tierguard::api::BreakerState;
use tierguard::observe::secrets::LocalSecrets;
use tierguard::observe::{ObserveConfig, Observer};

const TOKEN: &str = "s3cret-admin-token";

/// Fast, deterministic start-up settings: no sessions unless a test asks.
fn settings() -> app::Settings {
    app::Settings {
        clinics: 100,
        db_latency: Duration::from_millis(20),
        db_connections: 8,
        db_queue_timeout: Duration::from_secs(2),
        mem0_latency: Duration::from_millis(1),
        session_rate: 0.0,
        session_ttl: Duration::from_secs(1800),
    }
}

/// The runbooks' defaults as tierguard renders them, with the canary off unless overridden.
fn flags_with(overrides: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut flags = app::cli::default_flags();
    flags.insert("CANARY_SAMPLE_RATE".into(), "0.0".into());
    for (k, v) in overrides {
        flags.insert(k.to_string(), v.to_string());
    }
    flags
}

/// Write atomically (temp file + rename), as a careful writer would.
fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn env_text(flags: &BTreeMap<String, String>) -> String {
    app::cli::render_flags(flags, app::cli::FlagsFormat::Env)
}

struct Demo {
    redis: RedisServer,
    _dir: tempfile::TempDir,
    flags_path: PathBuf,
    running: app::Running,
    http: reqwest::Client,
}

impl Demo {
    async fn start(overrides: &[(&str, &str)]) -> Self {
        Self::start_with(overrides, settings()).await
    }

    async fn start_with(overrides: &[(&str, &str)], settings: app::Settings) -> Self {
        Self::start_full(overrides, settings, &[]).await
    }

    async fn start_full(
        overrides: &[(&str, &str)],
        settings: app::Settings,
        redis_args: &[&str],
    ) -> Self {
        tierguard::install_crypto_provider();
        let redis = RedisServer::start_with(redis_args);
        let dir = tempfile::tempdir().unwrap();
        let flags_path = dir.path().join("flags.env");
        write_atomic(&flags_path, &env_text(&flags_with(overrides)));
        let mut config = app::ServeConfig::new(&redis.url(), &flags_path, TOKEN);
        config.flags_poll = Duration::from_millis(50);
        config.settings = settings;
        let running = app::start(config).await.expect("start the demo");
        Demo {
            redis,
            _dir: dir,
            flags_path,
            running,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.url())
    }

    async fn get(&self, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, headers, body)
    }

    async fn get_owned(&self, path: String) -> (u16, reqwest::header::HeaderMap, Value) {
        self.get(&path).await
    }

    /// GET that must succeed; returns the body.
    async fn ok(&self, path: &str) -> Value {
        let (status, _, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = self.http.post(self.url(path)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    }

    async fn faults(&self, body: Value) -> Value {
        let (status, answer) = self.post("/admin/faults", Some(TOKEN), body).await;
        assert_eq!(status, 200, "{answer}");
        answer
    }

    async fn metrics_text(&self) -> String {
        let response = self.http.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// Sum of the samples of `name` whose labels include `labels`.
    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        sample_sum(&self.metrics_text().await, name, labels)
    }

    async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], want: f64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.metric(name, labels).await;
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{labels:?} is {got}, expected {want}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Rewrite the flags file and wait until the service runs with exactly these flags.
    async fn reload(&self, overrides: &[(&str, &str)]) {
        let flags = flags_with(overrides);
        write_atomic(&self.flags_path, &env_text(&flags));
        self.wait_raw_flags(&flags).await;
    }

    async fn wait_raw_flags(&self, flags: &BTreeMap<String, String>) {
        let want = serde_json::to_value(flags).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (_, _, body) = self.get("/admin/flags").await;
            if body["raw"] == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "flags not reloaded within 5 s: {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn redis(&self) -> redis::Connection {
        self.redis.client()
    }
}

fn sample_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// Keys matching `pattern`, by SCAN (never KEYS).
fn scan(conn: &mut redis::Connection, pattern: &str) -> Vec<String> {
    let mut keys: Vec<String> = conn
        .scan_match(pattern)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    keys.sort();
    keys
}

fn pttl(conn: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(conn).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_then_a_hit_under_the_current_generation() {
    let demo = Demo::start(&[]).await;
    let (status, headers, body) = demo.get("/clinics/7").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-cache"], "miss");
    assert_eq!(body["data"]["id"], 7);
    assert_eq!(body["served"]["generation"], 1);
    assert_eq!(body["served"]["cache_write"]["stored"], "yes");

    let mut redis = demo.redis();
    let generation: String = redis.get("cache:current_generation").unwrap();
    assert_eq!(generation, "1");
    let stored: String = redis.get("cache:clinic:7:generation:1").unwrap();
    let stored: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored["value"]["id"], 7);
    assert_eq!(stored["value"]["name"], "Clinic 7");

    let (_, headers, again) = demo.get("/clinics/7").await;
    assert_eq!(headers["x-cache"], "hit");
    assert_eq!(again["data"], body["data"]);

    let text = demo.metrics_text().await;
    assert_eq!(
        sample_sum(&text, "cache_misses_total", &[("clinic_id", "7")]),
        1.0
    );
    assert_eq!(
        sample_sum(&text, "cache_hits_total", &[("clinic_id", "7")]),
        1.0
    );
    assert_eq!(sample_sum(&text, "db_queries_total", &[]), 1.0);
    assert_eq!(
        sample_sum(&text, "http_requests_total", &[("status", "200")]),
        2.0
    );
    assert_eq!(
        sample_sum(&text, "http_request_duration_seconds_count", &[]),
        2.0
    );

    // An unknown clinic is a 404 and labels no metric with its id.
    let (status, _, body) = demo.get("/clinics/100000").await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("100000"));
    let text = demo.metrics_text().await;
    assert!(!text.contains("clinic_id=\"100000\""));
    assert_eq!(
        sample_sum(&text, "http_requests_total", &[("status", "404")]),
        1.0
    );

    // A new generation: the next read misses and writes under it; the old key is left to expire.
    let (status, _) = demo.post("/admin/cache/invalidate", None, json!({})).await;
    assert_eq!(status, 401);
    let (status, body) = demo
        .post("/admin/cache/invalidate", Some(TOKEN), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["generation"], 2);
    let (_, headers, body) = demo.get("/clinics/7").await;
    assert_eq!(headers["x-cache"], "miss");
    assert_eq!(body["served"]["generation"], 2);
    assert_eq!(
        scan(&mut redis, "cache:clinic:7:generation:*"),
        ["cache:clinic:7:generation:1", "cache:clinic:7:generation:2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_is_a_cold_start_that_the_service_rides_out() {
    let mut demo = Demo::start(&[]).await;
    demo.ok("/clinics/1").await;
    let (_, headers, _) = demo.get("/clinics/1").await;
    assert_eq!(headers["x-cache"], "hit");

    // Redis down: answered from the database, the failures counted.
    demo.redis.stop();
    let (status, headers, body) = demo.get("/clinics/1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-cache"], "miss");
    assert!(body["served"]["generation"].is_null());
    assert!(demo.metric("cache_errors_total", &[("op", "get")]).await >= 1.0);

    // Back, empty: the generation is created again and the cache refills.
    demo.redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, headers, body) = demo.get("/clinics/1").await;
        assert_eq!(status, 200, "{body}");
        if headers["x-cache"] == "hit" {
            assert_eq!(body["served"]["generation"], 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cache never refilled: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut redis = demo.redis();
    let generation: String = redis.get("cache:current_generation").unwrap();
    assert_eq!(generation, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_out_of_memory_requests_still_succeed() {
    let demo = Demo::start_full(
        &[("MAX_CACHE_VALUE_SIZE", "2000000")],
        settings(),
        &["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"],
    )
    .await;
    demo.ok("/clinics/1").await;
    // Fill Redis with keys without TTL until it refuses writes.
    let answer = demo
        .faults(json!({"leak": {"keys": 20000, "value_bytes": 1000}}))
        .await;
    let written = answer["leak"]["written"].as_u64().unwrap();
    assert!(written < 20000, "{answer}");
    assert!(
        answer["leak"]["error"].as_str().unwrap().contains("OOM"),
        "{answer}"
    );
    // Reads still hit; writes fail (a value of 1 MB cannot fit in what is left), are counted,
    // and the answer still comes from the database.
    demo.faults(json!({"large_values": {"clinic_ids": [2], "bytes": 1_000_000}}))
        .await;
    let (_, headers, _) = demo.get("/clinics/1").await;
    assert_eq!(headers["x-cache"], "hit");
    let (status, headers, body) = demo.get("/clinics/2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-cache"], "miss");
    assert!(body["served"].get("cache_write").is_none(), "{body}");
    assert_eq!(
        demo.metric("cache_errors_total", &[("op", "set")]).await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_the_ttl_plus_a_jitter_plus_the_stale_window() {
    let demo = Demo::start(&[
        ("CACHE_TTL", "100"),
        ("CACHE_TTL_JITTER", "20"),
        ("CACHE_SERVE_STALE", "false"),
    ])
    .await;
    let mut redis = demo.redis();
    let mut expiries = Vec::new();
    for id in 1..=20 {
        demo.ok(&format!("/clinics/{id}")).await;
        expiries.push(pttl(&mut redis, &format!("cache:clinic:{id}:generation:1")));
    }
    for ms in &expiries {
        assert!(
            (95_000..=120_000).contains(ms),
            "PTTL {ms} ms not within 100 s + 0..20 s"
        );
    }
    let spread = expiries.iter().max().unwrap() - expiries.iter().min().unwrap();
    assert!(
        spread > 1000,
        "the jitter did not stagger expiries: {expiries:?}"
    );

    // Serving stale keeps the copy CACHE_STALE_TTL longer.
    demo.reload(&[
        ("CACHE_TTL", "100"),
        ("CACHE_TTL_JITTER", "20"),
        ("CACHE_SERVE_STALE", "true"),
        ("CACHE_STALE_TTL", "50"),
    ])
    .await;
    for id in 21..=30 {
        demo.ok(&format!("/clinics/{id}")).await;
        let ms = pttl(&mut redis, &format!("cache:clinic:{id}:generation:1"));
        assert!((145_000..=170_000).contains(&ms), "PTTL {ms} ms");
    }

    // No jitter: exactly the TTL.
    demo.reload(&[("CACHE_TTL", "100"), ("CACHE_TTL_JITTER", "0")])
        .await;
    demo.ok("/clinics/31").await;
    let ms = pttl(&mut redis, "cache:clinic:31:generation:1");
    assert!((98_000..=100_000).contains(&ms), "PTTL {ms} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_copies_are_served_while_one_request_refreshes() {
    // A refresh takes a second, so the five requests below surely arrive while it runs.
    let mut slow = settings();
    slow.db_latency = Duration::from_millis(1000);
    let stale_on = [
        ("CACHE_TTL", "1"),
        ("CACHE_TTL_JITTER", "0"),
        ("CACHE_SERVE_STALE", "true"),
        ("CACHE_STALE_TTL", "30"),
    ];
    let demo = Demo::start_with(&stale_on, slow).await;
    demo.ok("/clinics/3").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // Five requests at once after expiry: all get the stale copy, one refresh reaches the DB.
    let answers = futures::future::join_all((0..5).map(|_| demo.get("/clinics/3"))).await;
    for (status, headers, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(headers["x-cache"], "stale");
        assert_eq!(body["data"]["id"], 3);
    }
    demo.wait_metric("db_queries_total", &[], 2.0).await;
    let (_, headers, _) = demo.get("/clinics/3").await;
    assert_eq!(headers["x-cache"], "hit", "the refresh stored a fresh copy");
    assert_eq!(demo.metric("cache_stale_served_total", &[]).await, 5.0);
    assert_eq!(
        demo.metric("cache_hits_total", &[("clinic_id", "3")]).await,
        6.0
    );
    assert_eq!(demo.metric("db_queries_total", &[]).await, 2.0);

    // Stale serving switched off: an expired copy is a miss even though Redis still holds it.
    demo.reload(&[
        ("CACHE_TTL", "1"),
        ("CACHE_TTL_JITTER", "0"),
        ("CACHE_SERVE_STALE", "false"),
        ("CACHE_STALE_TTL", "30"),
    ])
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut redis = demo.redis();
    assert!(pttl(&mut redis, "cache:clinic:3:generation:1") > 0);
    let (_, headers, _) = demo.get("/clinics/3").await;
    assert_eq!(headers["x-cache"], "miss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warm_endpoint_needs_the_token_and_fills_the_cache() {
    let demo = Demo::start(&[]).await;
    let top5 = json!({"clinic_ids": [1, 2, 3, 5, 8]});
    let (status, body) = demo.post("/admin/cache/warm", None, top5.clone()).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = demo
        .post("/admin/cache/warm", Some("guess"), top5.clone())
        .await;
    assert_eq!(status, 401);
    let mut redis = demo.redis();
    assert!(scan(&mut redis, "cache:clinic:*").is_empty());

    let (status, body) = demo.post("/admin/cache/warm", Some(TOKEN), top5).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["warmed"], json!([1, 2, 3, 5, 8]));
    assert_eq!(body["failed"], json!([]));
    for id in [1, 2, 3, 5, 8] {
        assert!(
            redis
                .exists::<_, bool>(format!("cache:clinic:{id}:generation:1"))
                .unwrap()
        );
    }
    let (_, headers, _) = demo.get("/clinics/5").await;
    assert_eq!(headers["x-cache"], "hit");
    assert_eq!(
        demo.metric("cache_misses_total", &[("clinic_id", "5")])
            .await,
        0.0
    );
    assert_eq!(demo.metric("cache_warmed_total", &[]).await, 5.0);

    // Bad bodies name the field; unknown clinics are listed and make it a 422.
    let (status, body) = demo
        .post(
            "/admin/cache/warm",
            Some(TOKEN),
            json!({"clinic_ids": "1,2"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("clinic_ids"),
        "{body}"
    );
    let (status, body) = demo
        .post("/admin/cache/warm", Some(TOKEN), json!({"clinic_ids": []}))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = demo
        .post(
            "/admin/cache/warm",
            Some(TOKEN),
            json!({"clinic_ids": [13, 9999]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["warmed"], json!([13]));
    assert_eq!(body["failed"][0]["clinic_id"], 9999);
    assert!(
        body["failed"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("does not exist")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_reload_without_a_restart_and_change_what_requests_do() {
    let canary_with_reads = [
        ("CANARY_SAMPLE_RATE", "1.0"),
        ("FAST_PATH_ENABLED", "true"),
        ("MEM0_READS_ENABLED", "true"),
        ("MEM0_SHADOW_MODE", "false"),
    ];
    let demo = Demo::start(&canary_with_reads).await;
    let body = demo.ok("/clinics/1").await;
    assert_eq!(body["served"]["canary"], true);
    assert_eq!(body["served"]["fast_path"], true);
    assert_eq!(body["served"]["memory"]["status"], "ok");
    assert_eq!(demo.metric("mem0_reads_total", &[]).await, 1.0);
    let (_, _, flags) = demo.get("/admin/flags").await;
    assert_eq!(flags["version"], 1);

    // MEM0_READS_ENABLED=false: canary requests stop reading mem0.
    demo.reload(&[
        ("CANARY_SAMPLE_RATE", "1.0"),
        ("FAST_PATH_ENABLED", "true"),
        ("MEM0_READS_ENABLED", "false"),
        ("MEM0_SHADOW_MODE", "false"),
    ])
    .await;
    for _ in 0..10 {
        let body = demo.ok("/clinics/1").await;
        assert_eq!(body["served"]["canary"], true);
        assert!(body["served"].get("memory").is_none(), "{body}");
    }
    assert_eq!(demo.metric("mem0_reads_total", &[]).await, 1.0);

    // CANARY_SAMPLE_RATE=0: no request takes the canary.
    demo.reload(&[
        ("CANARY_SAMPLE_RATE", "0.0"),
        ("MEM0_READS_ENABLED", "true"),
    ])
    .await;
    let canary_before = demo
        .metric("canary_requests_total", &[("path", "canary")])
        .await;
    assert_eq!(canary_before, 11.0);
    for _ in 0..20 {
        let body = demo.ok("/clinics/2").await;
        assert_eq!(body["served"]["canary"], false);
        assert_eq!(body["served"]["fast_path"], false);
    }
    assert_eq!(
        demo.metric("canary_requests_total", &[("path", "canary")])
            .await,
        11.0
    );
    assert_eq!(
        demo.metric("canary_requests_total", &[("path", "stable")])
            .await,
        20.0
    );
    assert_eq!(demo.metric("mem0_reads_total", &[]).await, 1.0);
    assert_eq!(demo.metric("flags_reloads_total", &[]).await, 2.0);

    // A broken file keeps the flags in force and says why.
    let mut broken = flags_with(&[("CANARY_SAMPLE_RATE", "1.0")]);
    broken.insert("FAST_PATH_ENABLED".into(), "maybe".into());
    write_atomic(&demo.flags_path, &env_text(&broken));
    let deadline = Instant::now() + Duration::from_secs(5);
    let body = loop {
        let (_, _, body) = demo.get("/admin/flags").await;
        if !body["last_error"].is_null() {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no reload error reported: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let error = body["last_error"].as_str().unwrap();
    assert!(error.contains("FAST_PATH_ENABLED=\"maybe\""), "{error}");
    assert!(error.contains("flags.env"), "{error}");
    assert_eq!(body["flags"]["canary_sample_rate"], 0.0);
    assert_eq!(demo.ok("/clinics/2").await["served"]["canary"], false);
    assert_eq!(demo.metric("flags_reload_errors_total", &[]).await, 1.0);

    // A file missing a key is refused too (a half-written file must not reset a flag).
    let mut partial = flags_with(&[("CANARY_SAMPLE_RATE", "1.0")]);
    partial.remove("MEM0_SHADOW_MODE");
    write_atomic(&demo.flags_path, &env_text(&partial));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, _, body) = demo.get("/admin/flags").await;
        if body["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("missing key MEM0_SHADOW_MODE"))
        {
            assert_eq!(body["flags"]["canary_sample_rate"], 0.0);
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lay out `flags` the way the kubelet mounts a ConfigMap: `..TIMESTAMP/KEY` files, a `..data`
/// link to the current one, and `KEY -> ..data/KEY` links.
fn configmap_volume(dir: &Path, version: &str, flags: &BTreeMap<String, String>) {
    let data = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&data).unwrap();
    for (k, v) in flags {
        std::fs::write(data.join(k), v).unwrap();
        let link = dir.join(k);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(k), &link).unwrap();
        }
    }
    // Swap ..data atomically, as the kubelet does.
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_from_a_mounted_configmap_directory_and_a_json_file() {
    tierguard::install_crypto_provider();
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("flags");
    std::fs::create_dir(&volume).unwrap();
    let first = flags_with(&[("CANARY_SAMPLE_RATE", "1.0"), ("FAST_PATH_ENABLED", "true")]);
    configmap_volume(&volume, "2026_01_01_00_00_00.1", &first);
    let mut config = app::ServeConfig::new(&redis.url(), &volume, TOKEN);
    config.flags_poll = Duration::from_millis(50);
    config.settings = settings();
    let running = app::start(config).await.unwrap();
    let http = reqwest::Client::new();
    let flags = |http: reqwest::Client, url: String| async move {
        http.get(url)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let url = format!("{}/admin/flags", running.url());
    let body = flags(http.clone(), url.clone()).await;
    assert_eq!(body["raw"], serde_json::to_value(&first).unwrap());
    assert_eq!(body["flags"]["canary_sample_rate"], 1.0);

    let second = flags_with(&[
        ("CANARY_SAMPLE_RATE", "0.05"),
        ("FAST_PATH_ENABLED", "false"),
    ]);
    configmap_volume(&volume, "2026_01_01_00_05_00.2", &second);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let body = flags(http.clone(), url.clone()).await;
        if body["flags"]["canary_sample_rate"] == 0.05 {
            assert_eq!(body["flags"]["fast_path_enabled"], false);
            assert_eq!(body["version"], 2);
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.stop().await.unwrap();

    // The same flags as a JSON object.
    let json_path = dir.path().join("flags.json");
    let text = app::cli::render_flags(&second, app::cli::FlagsFormat::Json);
    std::fs::write(&json_path, text).unwrap();
    let (parsed, raw) = app::flags::load(&json_path).unwrap();
    assert_eq!(raw, second);
    assert_eq!(parsed.canary_sample_rate, 0.05);
    assert!(!parsed.fast_path_enabled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_under_a_mem0_outage_and_closes_after_the_reset() {
    let breaker_flags = [
        ("CANARY_SAMPLE_RATE", "1.0"),
        ("MEM0_READS_ENABLED", "true"),
        ("MEM0_SHADOW_MODE", "true"),
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "3"),
        ("CIRCUIT_BREAKER_LATENCY_THRESHOLD_MS", "200"),
        ("CIRCUIT_BREAKER_RESET_SECONDS", "1"),
    ];
    let demo = Demo::start(&breaker_flags).await;
    let state = |demo: &Demo| {
        let demo_url = demo.url("/admin/breaker");
        let http = demo.http.clone();
        async move {
            let body: Value = http
                .get(demo_url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body
        }
    };
    for _ in 0..3 {
        let body = demo.ok("/clinics/4").await;
        assert_eq!(body["served"]["memory"]["status"], "ok");
    }
    demo.wait_metric("mem0_writes_total", &[("outcome", "success")], 3.0)
        .await;
    assert_eq!(
        demo.metric("circuit_breaker_state", &[("breaker", "mem0")])
            .await,
        0.0
    );

    // Outage: reads fail and fall back, the third consecutive failure opens the breaker.
    demo.faults(json!({"mem0_outage": true})).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while state(&demo).await["state"] != "open" {
        let (status, _, body) = demo.get("/clinics/4").await;
        assert_eq!(
            status, 200,
            "mem0 failing must not fail the request: {body}"
        );
        assert!(Instant::now() < deadline, "the breaker did not open");
    }
    assert_eq!(
        demo.metric("circuit_breaker_state", &[("breaker", "mem0")])
            .await,
        1.0
    );
    assert!(
        demo.metric("mem0_writes_total", &[("outcome", "failure")])
            .await
            >= 1.0
    );
    let body = demo.ok("/clinics/4").await;
    assert_eq!(body["served"]["memory"]["status"], "breaker_open");
    let snapshot = state(&demo).await;
    assert!(
        snapshot["last_failure"]
            .as_str()
            .unwrap()
            .contains("outage"),
        "{snapshot}"
    );

    // After the reset period it is half-open; the trial (a health probe, no traffic) fails
    // while mem0 is still down, so it opens again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while state(&demo).await["state"] != "half-open" {
        assert!(Instant::now() < deadline, "never half-open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        demo.metric("circuit_breaker_state", &[("breaker", "mem0")])
            .await,
        2.0
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while state(&demo).await["state"] != "open" {
        assert!(
            Instant::now() < deadline,
            "the failed trial did not reopen it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // mem0 back: the next trial closes it, without any request.
    demo.faults(json!({"mem0_outage": false})).await;
    let deadline = Instant::now() + Duration::from_secs(6);
    while state(&demo).await["state"] != "closed" {
        assert!(Instant::now() < deadline, "the breaker did not close");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        demo.metric("circuit_breaker_state", &[("breaker", "mem0")])
            .await,
        0.0
    );
    assert_eq!(
        demo.ok("/clinics/4").await["served"]["memory"]["status"],
        "ok"
    );
    let text = demo.metrics_text().await;
    for to in ["open", "half-open", "closed"] {
        assert!(
            sample_sum(&text, "circuit_breaker_transitions_total", &[("to", to)]) >= 1.0,
            "no transition to {to}"
        );
    }

    // Slower than the latency threshold counts as a failure too.
    demo.faults(json!({"mem0_latency_ms": 400})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while state(&demo).await["state"] != "open" {
        demo.ok("/clinics/4").await;
        assert!(
            Instant::now() < deadline,
            "slow calls did not open the breaker"
        );
    }
    let snapshot = state(&demo).await;
    assert!(
        snapshot["last_failure"]
            .as_str()
            .unwrap()
            .contains("latency threshold"),
        "{snapshot}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_and_the_leak_fault_writes_keys_without_ttl() {
    let mut with_sessions = settings();
    with_sessions.session_rate = 1.0;
    let demo = Demo::start_with(&[], with_sessions).await;
    let mut redis = demo.redis();
    for id in 1..=5 {
        let body = demo.ok(&format!("/clinics/{id}")).await;
        let key = body["served"]["session"].as_str().unwrap().to_owned();
        assert!(key.starts_with("session:"));
        let ms = pttl(&mut redis, &key);
        assert!((1_790_000..=1_800_000).contains(&ms), "{key}: PTTL {ms}");
    }

    let answer = demo
        .faults(json!({"leak": {"keys": 50, "value_bytes": 1000}}))
        .await;
    assert_eq!(answer["leak"]["written"], 50);
    assert!(answer["leak"]["error"].is_null());
    let sessions = scan(&mut redis, "session:*");
    assert_eq!(sessions.len(), 55);
    let without_ttl: Vec<&String> = sessions
        .iter()
        .filter(|k| pttl(&mut redis, k) == -1)
        .collect();
    assert_eq!(without_ttl.len(), 50);
    for key in without_ttl {
        let len: usize = redis.strlen(key).unwrap();
        assert_eq!(len, 1000);
    }

    // Another prefix, and the mode where every session forgets its TTL.
    demo.faults(json!({"leak": {"keys": 3, "value_bytes": 10, "prefix": "clinic_config:"}}))
        .await;
    assert_eq!(scan(&mut redis, "clinic_config:*").len(), 3);
    demo.faults(json!({"sessions_without_ttl": true})).await;
    let body = demo.ok("/clinics/9").await;
    let key = body["served"]["session"].as_str().unwrap();
    assert_eq!(pttl(&mut redis, key), -1);
    assert_eq!(
        demo.metric("session_writes_total", &[("ttl", "no")]).await,
        1.0
    );
    assert_eq!(
        demo.metric("session_writes_total", &[("ttl", "yes")]).await,
        5.0
    );

    // Bad switches are refused with the field named, and need the token.
    let (status, body) = demo
        .post(
            "/admin/faults",
            Some(TOKEN),
            json!({"leak": {"keys": 0, "value_bytes": 1}}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("leak.keys"),
        "{body}"
    );
    let (status, body) = demo
        .post("/admin/faults", Some(TOKEN), json!({"mem0_outgae": true}))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("mem0_outgae"),
        "{body}"
    );
    let (status, _) = demo
        .post("/admin/faults", None, json!({"mem0_outage": true}))
        .await;
    assert_eq!(status, 401);
    let (_, _, faults) = demo.get("/admin/faults").await;
    assert_eq!(faults["mem0_outage"], false);
    assert_eq!(faults["sessions_without_ttl"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_over_the_size_limit_are_not_cached() {
    let demo = Demo::start(&[("MAX_CACHE_VALUE_SIZE", "10000")]).await;
    demo.faults(json!({"large_values": {"clinic_ids": [4], "bytes": 20000}}))
        .await;
    let mut redis = demo.redis();
    for _ in 0..2 {
        let (_, headers, body) = demo.get("/clinics/4").await;
        assert_eq!(headers["x-cache"], "miss");
        assert_eq!(body["served"]["cache_write"]["stored"], "too_large");
        assert!(body["data"]["notes"].as_str().unwrap().len() == 20000);
    }
    assert!(
        !redis
            .exists::<_, bool>("cache:clinic:4:generation:1")
            .unwrap()
    );
    assert_eq!(demo.metric("cache_values_too_large_total", &[]).await, 2.0);
    // Other clinics are cached as usual; the fault ends with null.
    demo.ok("/clinics/6").await;
    assert!(
        redis
            .exists::<_, bool>("cache:clinic:6:generation:1")
            .unwrap()
    );
    demo.faults(json!({"large_values": null})).await;
    let body = demo.ok("/clinics/4").await;
    assert_eq!(body["served"]["cache_write"]["stored"], "yes");

    // A limit large enough lets the large values fill Redis (the OOM drill's way in).
    demo.reload(&[("MAX_CACHE_VALUE_SIZE", "100000")]).await;
    demo.faults(json!({"large_values": {"clinic_ids": [10, 11], "bytes": 50000}}))
        .await;
    demo.ok("/clinics/10").await;
    let stored: usize = redis.strlen("cache:clinic:10:generation:1").unwrap();
    assert!(stored > 50000, "{stored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinic_caches_at_most_max_clinic_cache_items() {
    let demo = Demo::start(&[("MAX_CLINIC_CACHE_ITEMS", "2")]).await;
    assert_eq!(
        demo.ok("/clinics/9").await["served"]["cache_write"]["stored"],
        "yes"
    );
    let body = demo.ok("/clinics/9/providers/1").await;
    assert_eq!(body["data"]["clinic_id"], 9);
    assert_eq!(body["served"]["cache_write"]["stored"], "yes");
    let body = demo.ok("/clinics/9/providers/2").await;
    assert_eq!(body["served"]["cache_write"]["stored"], "clinic_full");
    assert_eq!(demo.metric("cache_items_limited_total", &[]).await, 1.0);
    let mut redis = demo.redis();
    assert_eq!(
        scan(&mut redis, "cache:clinic:9:provider:*"),
        ["cache:clinic:9:provider:1:generation:1"]
    );
    // Items already cached are still served and rewritten; other clinics are not affected.
    let (_, headers, _) = demo.get("/clinics/9/providers/1").await;
    assert_eq!(headers["x-cache"], "hit");
    assert_eq!(
        demo.ok("/clinics/10/providers/2").await["served"]["cache_write"]["stored"],
        "yes"
    );
    let (status, _, _) = demo.get("/clinics/9/providers/999").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_database_answers_503_and_the_errors_are_counted() {
    let mut tight = settings();
    tight.db_connections = 1;
    tight.db_queue_timeout = Duration::from_millis(100);
    tight.db_latency = Duration::from_millis(400);
    let demo = Demo::start_with(&[], tight).await;
    let answers =
        futures::future::join_all((1..=4).map(|id| demo.get_owned(format!("/clinics/{id}")))).await;
    let unavailable = answers.iter().filter(|(s, _, _)| *s == 503).count();
    let ok = answers.iter().filter(|(s, _, _)| *s == 200).count();
    assert_eq!(ok, 1, "{answers:?}");
    assert_eq!(unavailable, 3, "{answers:?}");
    assert!(answers.iter().any(|(_, _, b)| {
        b["error"]
            .as_str()
            .is_some_and(|e| e.contains("database overloaded"))
    }));
    let text = demo.metrics_text().await;
    assert_eq!(
        sample_sum(&text, "http_requests_total", &[("status", "503")]),
        3.0
    );
    assert_eq!(sample_sum(&text, "db_rejected_total", &[]), 3.0);

    // The database latency is a fault switch too.
    demo.faults(json!({"db_latency_ms": 5})).await;
    let (_, _, faults) = demo.get("/admin/faults").await;
    assert_eq!(faults["db_latency_ms"], 5);
    demo.faults(json!({"reset": true})).await;
    let (_, _, faults) = demo.get("/admin/faults").await;
    assert_eq!(faults["db_latency_ms"], 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_latency_hits_the_canary_only_and_injected_errors_are_500s() {
    let demo = Demo::start(&[("CANARY_SAMPLE_RATE", "0.0"), ("FAST_PATH_ENABLED", "true")]).await;
    demo.ok("/clinics/1").await; // cached
    demo.faults(json!({"request_latency_ms": 1000, "canary_error_rate": 1.0}))
        .await;
    // The stable path is untouched by both.
    let started = Instant::now();
    for _ in 0..3 {
        assert_eq!(demo.ok("/clinics/1").await["served"]["canary"], false);
    }
    assert!(started.elapsed() < Duration::from_millis(1000));

    demo.reload(&[("CANARY_SAMPLE_RATE", "1.0"), ("FAST_PATH_ENABLED", "true")])
        .await;
    let started = Instant::now();
    let (status, _, body) = demo.get("/clinics/1").await;
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert_eq!(status, 500, "{body}");
    assert!(body["error"].as_str().unwrap().contains("injected"));
    assert_eq!(
        demo.metric("http_requests_total", &[("status", "500")])
            .await,
        1.0
    );

    // Scope fast_path: only canary requests on the fast path are slowed.
    demo.faults(json!({"canary_error_rate": 0.0, "request_latency_scope": "fast_path"}))
        .await;
    demo.reload(&[
        ("CANARY_SAMPLE_RATE", "1.0"),
        ("FAST_PATH_ENABLED", "false"),
    ])
    .await;
    let started = Instant::now();
    let body = demo.ok("/clinics/1").await;
    assert_eq!(body["served"]["canary"], true);
    assert!(started.elapsed() < Duration::from_millis(1000));
}

/// Two scrapes of the demo, read by tierguard's direct-scrape observer, give the signals the
/// traffic in between implies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tierguards_scrape_observer_reads_the_demos_metrics() {
    let flags = [
        ("CANARY_SAMPLE_RATE", "1.0"),
        ("MEM0_READS_ENABLED", "false"),
        ("MEM0_SHADOW_MODE", "true"),
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "100"),
    ];
    let demo = Demo::start(&flags).await;
    let tier = spec(
        json!({"scrape": {"url": demo.url("/metrics")}, "timeout": "2s"}),
        Value::Null,
    );
    let config = ObserveConfig::resolve(&tier, &LocalSecrets::new())
        .await
        .unwrap();
    let mut observer = Observer::new(config).unwrap();
    let first = observer.observe().await;
    assert_eq!(first.breaker_state, Some(BreakerState::Closed));
    assert!(first.unknown["errorRatePercent"].contains("need two scrapes"));

    // 14 good requests: clinic 1 ten times, clinic 2 four (2 misses, 12 hits), each with a
    // successful shadow write.
    for _ in 0..10 {
        demo.ok("/clinics/1").await;
    }
    for _ in 0..4 {
        demo.ok("/clinics/2").await;
    }
    demo.wait_metric("mem0_writes_total", &[("outcome", "success")], 14.0)
        .await;
    // mem0 down: 6 more requests (hits), whose shadow writes fail.
    demo.faults(json!({"mem0_outage": true})).await;
    for _ in 0..6 {
        demo.ok("/clinics/1").await;
    }
    demo.wait_metric("mem0_writes_total", &[("outcome", "failure")], 6.0)
        .await;
    // 5 requests fail with 500 before reaching the cache.
    demo.faults(json!({"mem0_outage": false, "canary_error_rate": 1.0}))
        .await;
    for _ in 0..5 {
        let (status, _, _) = demo.get("/clinics/1").await;
        assert_eq!(status, 500);
    }

    let second = observer.observe().await;
    assert!(
        second.unknown.is_empty() || second.unknown.keys().all(|k| k.starts_with("redis")),
        "unknown: {:?}",
        second.unknown
    );
    let close = |got: Option<f64>, want: f64, what: &str| {
        let got = got.unwrap_or_else(|| panic!("{what} unknown"));
        assert!((got - want).abs() < 1e-9, "{what}: {got}, expected {want}");
    };
    close(second.error_rate_percent, 20.0, "error rate (5 of 25)");
    close(
        second.cache_hit_rate_percent,
        90.0,
        "cache hit rate (18 of 20)",
    );
    close(
        second.mem0_write_success_percent,
        70.0,
        "mem0 write success (14 of 20)",
    );
    assert_eq!(second.breaker_state, Some(BreakerState::Closed));
    let p50 = second.p50_latency_ms.expect("p50 known");
    assert!(p50 > 0.0 && p50 < 1000.0, "p50 {p50}");
    assert!(second.p99_latency_ms.unwrap() >= p50);

    // The breaker opens: the gauge is read as open.
    demo.faults(json!({"mem0_outage": true, "canary_error_rate": 0.0}))
        .await;
    demo.reload(&[
        ("CANARY_SAMPLE_RATE", "1.0"),
        ("MEM0_READS_ENABLED", "true"),
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "1"),
        ("CIRCUIT_BREAKER_RESET_SECONDS", "600"),
    ])
    .await;
    demo.ok("/clinics/1").await;
    let third = observer.observe().await;
    assert_eq!(third.breaker_state, Some(BreakerState::Open));
}

/// A real Prometheus scraping the demo (OpenMetrics text), read with tierguard's built-in PromQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_demo_and_tierguard_reads_it() {
    let demo = Demo::start(&[]).await;
    let target = demo.running.addr.to_string();
    let prometheus = PrometheusServer::start(&[target], Duration::from_millis(500));
    let tier = spec(
        json!({"prometheus": {"url": prometheus.url()}, "selector": "app=\"clinic-backend\"", "timeout": "5s"}),
        Value::Null,
    );
    let config = ObserveConfig::resolve(&tier, &LocalSecrets::new())
        .await
        .unwrap();
    let mut observer = Observer::new(config).unwrap();
    // Let Prometheus take the all-zero first samples, then make traffic: 2 misses, 18 hits.
    let first_sample = format!(
        "{}/api/v1/query?query=cache_misses_total%7Bclinic_id%3D%222%22%7D",
        prometheus.url()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer: Value = demo
            .http
            .get(&first_sample)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if answer["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus took no sample: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..20 {
        demo.ok(&format!("/clinics/{}", 1 + i % 2)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let obs = loop {
        let obs = observer.observe().await;
        if obs.cache_hit_rate_percent.is_some() && obs.error_rate_percent.is_some() {
            break obs;
        }
        assert!(
            Instant::now() < deadline,
            "no signals from Prometheus: {:?}",
            obs.unknown
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let hit_rate = obs.cache_hit_rate_percent.unwrap();
    assert!((85.0..=95.0).contains(&hit_rate), "hit rate {hit_rate}");
    assert_eq!(obs.error_rate_percent, Some(0.0));
    assert_eq!(obs.breaker_state, Some(BreakerState::Closed));
    assert!(obs.p50_latency_ms.is_some(), "{:?}", obs.unknown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_is_skewed_bounded_and_stops_by_itself() {
    let demo = Demo::start(&[]).await;
    let config = app::load::LoadConfig {
        target: app::load::loopback_target(&demo.running.url()).unwrap(),
        rps: 100,
        duration: Duration::from_secs(2),
        clinics: 1..=20,
        hot: vec![3, 1],
        skew: 1.0,
        concurrency: 16,
        timeout: Duration::from_secs(5),
        provider_share: 0.0,
    };
    let started = Instant::now();
    let summary = app::load::run(config.clone()).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert_eq!(summary.planned, 200);
    assert_eq!(summary.sent + summary.skipped, 200, "{}", summary.text());
    assert_eq!(summary.ok, summary.sent, "{}", summary.text());
    assert_eq!(summary.errors(), 0);
    assert!(summary.p50_ms > 0.0 && summary.p99_ms >= summary.p50_ms);
    assert_eq!(summary.top_clinics[0].0, 3, "{:?}", summary.top_clinics);
    // The service saw every request as one cache lookup.
    let text = demo.metrics_text().await;
    let lookups =
        sample_sum(&text, "cache_hits_total", &[]) + sample_sum(&text, "cache_misses_total", &[]);
    assert_eq!(lookups, summary.sent as f64);
    let hot = sample_sum(&text, "cache_hits_total", &[("clinic_id", "3")])
        + sample_sum(&text, "cache_misses_total", &[("clinic_id", "3")]);
    let cold = sample_sum(&text, "cache_hits_total", &[("clinic_id", "20")])
        + sample_sum(&text, "cache_misses_total", &[("clinic_id", "20")]);
    assert!(hot > 4.0 * cold, "hot {hot}, cold {cold}");

    // A slow target: never more than `concurrency` in flight; the rest is skipped, not queued.
    demo.faults(json!({"db_latency_ms": 1000})).await;
    let slow = app::load::LoadConfig {
        rps: 50,
        duration: Duration::from_secs(1),
        clinics: 30..=100,
        hot: vec![],
        skew: 0.0,
        concurrency: 4,
        ..config
    };
    let summary = app::load::run(slow).await.unwrap();
    assert_eq!(summary.sent + summary.skipped, 50, "{}", summary.text());
    assert!(summary.sent <= 8, "{}", summary.text());
    assert!(summary.skipped >= 40, "{}", summary.text());

    let err = app::load::loopback_target("http://192.0.2.10:8000").unwrap_err();
    assert!(err.to_string().contains("only loopback"));
}

/// The real binary: `serve --print-port`, the flag log lines, `load`, SIGTERM, and start-up errors.
#[test]
fn the_binary_serves_reloads_loads_and_stops() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let flags_path = dir.path().join("flags.env");
    write_atomic(
        &flags_path,
        &env_text(&flags_with(&[
            ("FAST_PATH_ENABLED", "true"),
            ("MEM0_READS_ENABLED", "true"),
        ])),
    );
    let flags_arg = flags_path.to_str().unwrap();
    let mut service = clinic_process::ClinicBackendProcess::spawn(&[
        "--redis-url",
        &redis.url(),
        "--flags",
        flags_arg,
        "--admin-token",
        TOKEN,
        "--db-latency",
        "10ms",
        "--flags-poll",
        "50ms",
    ]);
    assert!(
        service.addr().starts_with("127.0.0.1:"),
        "{}",
        service.addr()
    );
    service.wait_for_log(
        "Feature flags loaded: fast_path=True, mem0_reads=True",
        Duration::from_secs(5),
    );
    service.wait_for_log("Circuit breaker config: name=mem0", Duration::from_secs(5));

    // The runbooks' Phase 2 as the controller would render it: logged on reload.
    write_atomic(
        &flags_path,
        &env_text(&flags_with(&[
            ("FAST_PATH_ENABLED", "false"),
            ("MEM0_READS_ENABLED", "false"),
            ("MEM0_SHADOW_MODE", "false"),
        ])),
    );
    service.wait_for_log(
        "Feature flags loaded: fast_path=False, mem0_reads=False, mem0_shadow=False, canary_sample_rate=0",
        Duration::from_secs(5),
    );

    let output = std::process::Command::new(clinic_process::binary())
        .args([
            "load",
            "--target",
            &service.url(),
            "--rps",
            "20",
            "--duration",
            "1s",
        ])
        .args(["--clinics", "1-10", "--hot", "1,2", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["planned"], 20);
    assert_eq!(summary["sent"], 20, "{summary}");
    assert_eq!(summary["ok"], 20, "{summary}");

    let refused = std::process::Command::new(clinic_process::binary())
        .args(["load", "--target", "http://192.0.2.10:8000"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("only loopback"));

    let status = service.terminate().expect("exited");
    assert!(status.success(), "{status:?}");
    assert!(service.log().contains("shutting down"));

    // A flags file missing a key stops start-up with a message naming it.
    let mut partial = flags_with(&[]);
    partial.remove("CACHE_TTL");
    write_atomic(&flags_path, &env_text(&partial));
    let output = std::process::Command::new(clinic_process::binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--redis-url",
            &redis.url(),
        ])
        .args(["--flags", flags_arg, "--admin-token", TOKEN])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("missing key CACHE_TTL"), "{stderr}");

    // default-flags prints a file the service accepts.
    let output = std::process::Command::new(clinic_process::binary())
        .arg("default-flags")
        .output()
        .unwrap();
    std::fs::write(&flags_path, &output.stdout).unwrap();
    assert!(app::flags::load(&flags_path).is_ok());
}
