//! `tierguard observe` as a user runs it: the real binary against a real exporter, Prometheus
//! and Redis; Secrets from flags, the environment, or a cluster's API.

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use kube_testserver::{ApiServer, Gvr};
use serde_json::{Value, json};
use support::exporter::{AppMetrics, Exporter};
use support::servers::{PrometheusServer, RedisServer};
use support::tiers::manifest;
use tierguard::observe::prometheus::{InstantValue, PrometheusClient};

const SIGNALS: [&str; 15] = [
    "p50LatencyMs",
    "p95LatencyMs",
    "p99LatencyMs",
    "errorRatePercent",
    "cacheHitRatePercent",
    "mem0WriteSuccessPercent",
    "breakerState",
    "redisUsedMemoryPercent",
    "redisUsedMemoryBytes",
    "redisMaxMemoryBytes",
    "redisEvictedKeys",
    "redisKeyspaceHits",
    "redisKeyspaceMisses",
    "redisRunId",
    "redisUptimeSeconds",
];

const PASSWORD: &str = "cli-s3cret";

/// The binary, with no cluster reachable unless the test gives one.
fn tierguard(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tierguard"));
    cmd.env("HOME", home)
        .env("KUBECONFIG", home.join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env_remove("TIERGUARD_SECRET_REDIS_AUTH_URL")
        .env_remove("RUST_LOG");
    cmd
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run tierguard");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn metrics(requests: (u64, u64), buckets: [u64; 3], breaker: f64) -> AppMetrics {
    AppMetrics {
        requests: [
            ("200".to_string(), requests.0),
            ("500".to_string(), requests.1),
        ]
        .into(),
        duration_buckets: vec![(0.1, buckets[0]), (0.5, buckets[1]), (1.0, buckets[2])],
        duration_sum: 0.0,
        cache_hits: [("7".to_string(), requests.0)].into(),
        cache_misses: [("7".to_string(), requests.1)].into(),
        mem0_success: requests.0,
        mem0_failure: requests.1,
        breakers: [("mem0".to_string(), breaker)].into(),
    }
}

fn write_manifest(dir: &Path, prometheus_url: &str) -> std::path::PathBuf {
    let text = manifest(
        "clinic-backend",
        "clinic",
        json!({
            "prometheus": {"url": prometheus_url},
            "selector": "app=\"clinic-backend\"",
            "timeout": "5s",
        }),
        json!({"urlSecretRef": {"name": "redis-auth", "key": "url"}}),
    );
    let path = dir.join("tier.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_prints_every_signal_and_survives_prometheus_stopping() {
    tierguard::install_crypto_provider();
    let home = tempfile::tempdir().unwrap();
    let redis = RedisServer::start_with(&["--requirepass", PASSWORD, "--maxmemory", "16mb"]);
    let exporter = Exporter::start(&metrics((0, 0), [0, 0, 0], 0.0));
    let mut prom = PrometheusServer::start(&[exporter.target()], Duration::from_secs(1));
    let client = PrometheusClient::new(
        reqwest::Client::new(),
        &prom.url(),
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    // Wait for a first sample of the zeros, then serve the traffic:
    // 80 + 20 requests: 20 % errors, 80 % cache hits, 80 % mem0 success;
    // latency: 50 ≤ 0.1 s, 90 ≤ 0.5 s, 100 ≤ 1 s: P50 = 100 ms, P95 = 750 ms, P99 = 950 ms.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(InstantValue::Vector(v)) = client.query("circuit_breaker_state").await
            && !v.is_empty()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus scraped nothing in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    exporter.set(&metrics((80, 20), [50, 90, 100], 2.0));

    let manifest = write_manifest(home.path(), &prom.url());
    let secret_flag = format!("redis-auth/url={}", redis.url());
    let deadline = Instant::now() + Duration::from_secs(30);
    let observed = loop {
        let (code, stdout, stderr) = run(tierguard(home.path())
            .arg("observe")
            .arg(&manifest)
            .args(["--output", "json", "--secret", &secret_flag]));
        assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
        assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD));
        let observed: Value = serde_json::from_str(&stdout).expect("JSON output");
        if observed.get("unknown").is_none() {
            break observed;
        }
        assert!(
            Instant::now() < deadline,
            "still unknown after 30 s: {}",
            observed["unknown"]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for s in SIGNALS {
        assert!(observed.get(s).is_some(), "{s} missing from {observed}");
    }
    let num = |s: &str| observed[s].as_f64().unwrap();
    let close = |s: &str, expected: f64| {
        assert!(
            (num(s) - expected).abs() < 1e-6,
            "{s}: {} != {expected}",
            num(s)
        );
    };
    close("p50LatencyMs", 100.0);
    close("p95LatencyMs", 750.0);
    close("p99LatencyMs", 950.0);
    close("errorRatePercent", 20.0);
    close("cacheHitRatePercent", 80.0);
    close("mem0WriteSuccessPercent", 80.0);
    assert_eq!(observed["breakerState"], "half-open");
    assert_eq!(observed["redisMaxMemoryBytes"], 16 * 1024 * 1024);
    let run_id: String = {
        let mut con = redis.client();
        let text: String = redis::cmd("INFO").arg("server").query(&mut con).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(observed["redisRunId"], run_id.as_str());
    let sources: BTreeMap<String, bool> = observed["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["ok"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        [("prometheus".into(), true), ("redis".into(), true)].into()
    );

    // Text output, the Redis URL from the environment: every signal has a value.
    let (code, text, stderr) = run(tierguard(home.path())
        .arg("observe")
        .arg(&manifest)
        .env("TIERGUARD_SECRET_REDIS_AUTH_URL", redis.url()));
    assert_eq!(code, 0, "{stderr}");
    assert!(text.contains("MemoryTier clinic/clinic-backend"), "{text}");
    for s in SIGNALS {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{s} ")))
            .unwrap_or_else(|| panic!("no line for {s}:\n{text}"));
        assert!(!line.contains("unknown"), "{line}");
    }
    assert!(
        text.contains("p95LatencyMs             750.00 ms"),
        "{text}"
    );
    assert!(
        text.contains("breakerState             half-open"),
        "{text}"
    );

    // Prometheus stopped: those signals are unknown with the reason; still exit 0.
    prom.stop();
    let (code, text, stderr) = run(tierguard(home.path())
        .arg("observe")
        .arg(&manifest)
        .args(["--secret", &secret_flag]));
    assert_eq!(code, 0, "{stderr}");
    for s in &SIGNALS[..7] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{s} ")))
            .unwrap();
        assert!(
            line.contains("unknown: prometheus: cannot reach Prometheus"),
            "{line}"
        );
    }
    for s in &SIGNALS[7..] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{s} ")))
            .unwrap();
        assert!(!line.contains("unknown"), "{line}");
    }
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("prometheus") && l.contains("error")),
        "{text}"
    );
}

#[test]
fn observe_exits_non_zero_on_bad_input_with_a_clear_message() {
    let home = tempfile::tempdir().unwrap();
    let manifest = write_manifest(home.path(), "http://127.0.0.1:9");

    // The Redis Secret is given nowhere and no cluster is configured.
    let (code, stdout, stderr) = run(tierguard(home.path()).arg("observe").arg(&manifest));
    assert_eq!(code, 1, "{stdout}");
    assert!(stderr.contains("spec.redis.urlSecretRef"), "{stderr}");
    assert!(stderr.contains("--secret redis-auth/url=VALUE"), "{stderr}");
    assert!(
        stderr.contains("TIERGUARD_SECRET_REDIS_AUTH_URL"),
        "{stderr}"
    );

    // A malformed --secret flag.
    let (code, _, stderr) = run(tierguard(home.path())
        .arg("observe")
        .arg(&manifest)
        .args(["--secret", "redis-auth=hunter2"]));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("NAME/KEY=VALUE") && !stderr.contains("hunter2"),
        "{stderr}"
    );

    // An invalid manifest names the field.
    let bad = home.path().join("bad.yaml");
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("\"sampleRate\": 0.1", "\"sampleRate\": 2.0");
    assert!(text.contains("2.0"));
    std::fs::write(&bad, text).unwrap();
    let (code, _, stderr) = run(tierguard(home.path()).arg("observe").arg(&bad));
    assert_eq!(code, 1);
    assert!(stderr.contains("spec.canary.sampleRate"), "{stderr}");

    // No such file.
    let (code, _, stderr) = run(tierguard(home.path())
        .arg("observe")
        .arg(home.path().join("missing.yaml")));
    assert_eq!(code, 1);
    assert!(stderr.contains("missing.yaml"), "{stderr}");
}

#[test]
fn observe_reads_missing_secrets_from_the_cluster() {
    let home = tempfile::tempdir().unwrap();
    let redis = RedisServer::start_with(&["--requirepass", PASSWORD, "--maxmemory", "16mb"]);
    // The in-process API server serves the Secrets; its tasks run on this runtime's workers
    // while the test blocks on the command.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let api = runtime.block_on(ApiServer::start());
    for (name, key, value) in [
        ("redis-auth", "url", format!("{}\n", redis.url())),
        ("other", "token", "x".to_owned()),
    ] {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("clinic".into()),
                ..ObjectMeta::default()
            },
            data: Some([(key.to_owned(), ByteString(value.into_bytes()))].into()),
            ..Secret::default()
        };
        api.put_json(&Gvr::of::<Secret>(), serde_json::to_value(&secret).unwrap())
            .expect("store the Secret");
    }
    let kubeconfig = home.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let manifest = write_manifest(home.path(), "http://127.0.0.1:9");
    let (code, stdout, stderr) = run(tierguard(home.path())
        .arg("observe")
        .arg(&manifest)
        .args(["--output", "json"])
        .env("KUBECONFIG", &kubeconfig));
    assert_eq!(code, 0, "{stderr}");
    let observed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        observed["redisMaxMemoryBytes"],
        16 * 1024 * 1024,
        "{observed}"
    );
    assert!(observed["redisRunId"].is_string());
    // Prometheus at port 9 is not there: unknown, not an error.
    assert!(
        observed["unknown"]["p50LatencyMs"]
            .as_str()
            .unwrap()
            .contains("prometheus")
    );

    // A Secret that does not exist, and a key that does not exist, are named.
    let missing = home.path().join("missing-secret.yaml");
    std::fs::write(
        &missing,
        std::fs::read_to_string(&manifest)
            .unwrap()
            .replace("\"name\": \"redis-auth\"", "\"name\": \"nope\""),
    )
    .unwrap();
    let (code, _, stderr) = run(tierguard(home.path())
        .arg("observe")
        .arg(&missing)
        .env("KUBECONFIG", &kubeconfig));
    assert_eq!(code, 1);
    assert!(stderr.contains("Secret clinic/nope not found"), "{stderr}");
    let no_key = home.path().join("missing-key.yaml");
    std::fs::write(
        &no_key,
        std::fs::read_to_string(&manifest)
            .unwrap()
            .replace("\"name\": \"redis-auth\"", "\"name\": \"other\""),
    )
    .unwrap();
    let (code, _, stderr) = run(tierguard(home.path())
        .arg("observe")
        .arg(&no_key)
        .env("KUBECONFIG", &kubeconfig));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("Secret clinic/other has no key \"url\""),
        "{stderr}"
    );
}
