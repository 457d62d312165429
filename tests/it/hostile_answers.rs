//! Hostile and broken answers: each peer tierguard reads is made to answer far too much, and the
//! real binary (`tierguard observe`, a child process measured by `/usr/bin/time`) must stay small,
//! finish within the tier's deadline, and say why in a short, escaped reason.
//!
//! Before these bounds, the same answers made `observe` hold 400 MB for a 15 MB Prometheus body,
//! 650 MB for a 300 MB `INFO`, and spend 26 s and 440 MB on a 16.5 MB /metrics body with a 2 s
//! timeout.

use std::path::Path;
use std::time::Duration;

use crate::support::hostile::{Answer, HostileHttp, HostileRedis, run_measured};
use crate::support::tiers::manifest;
use serde_json::{Value, json};

/// The most a one-tier `observe` may hold, whatever it is sent (it needs about 20 MiB).
const MAX_RSS_KIB: u64 = 96 * 1024;

fn write_manifest(dir: &Path, metrics: Value, redis: Value) -> String {
    let path = dir.join("tier.yaml");
    std::fs::write(&path, manifest("clinic-backend", "clinic", metrics, redis)).unwrap();
    path.to_string_lossy().into_owned()
}

/// Every reason in the observation: short, on one line, free of escape sequences.
fn assert_reasons_bounded(observation: &Value) -> Vec<String> {
    let mut reasons: Vec<String> = observation["unknown"]
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for source in observation["sources"].as_array().into_iter().flatten() {
        if let Some(r) = source["reason"].as_str() {
            reasons.push(r.to_owned());
        }
    }
    for r in &reasons {
        assert!(
            r.chars().count() <= 300,
            "a reason of {} characters",
            r.chars().count()
        );
        assert!(
            !r.chars().any(char::is_control),
            "a control character in {r:?}"
        );
    }
    reasons
}

fn observation(stdout: &str) -> Value {
    serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("observe printed no JSON ({e}):\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_prometheus_answer_is_refused_without_being_held() {
    let dir = tempfile::tempdir().unwrap();
    let http = HostileHttp::start().await;
    // 40 MB of one vector that never ends, with no Content-Length to refuse it early.
    http.answer(
        "/api/v1/query",
        Answer::huge(
            200,
            r#"{"status":"success","data":{"resultType":"vector","result":["#,
            r#"{"metric":{"instance":"a-rather-long-instance-name:9090"},"value":[1700000000,"1"]},"#,
            r#"{"metric":{},"value":[1700000000,"1"]}]}}"#,
            40 << 20,
        ),
    );
    let manifest = write_manifest(
        dir.path(),
        json!({"prometheus": {"url": http.url()}, "timeout": "20s"}),
        Value::Null,
    );
    let run = run_measured(&["observe", &manifest, "--output", "json"], &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let obs = observation(&run.stdout);
    let reasons = assert_reasons_bounded(&obs);
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("more than 1048576 bytes")),
        "{reasons:#?}"
    );
    assert!(obs["p50LatencyMs"].is_null());
    assert!(
        run.max_rss_kib < MAX_RSS_KIB,
        "observe peaked at {} KiB for a 40 MB Prometheus answer",
        run.max_rss_kib
    );
    eprintln!(
        "prometheus 40 MB streamed: peak RSS {} KiB, {:.2}s",
        run.max_rss_kib,
        run.elapsed.as_secs_f64()
    );

    // The same announced with its Content-Length is refused before a byte of it is read.
    http.answer(
        "/api/v1/query",
        Answer::huge(200, "{", " ", "}", 200 << 20).with_length(),
    );
    let run = run_measured(&["observe", &manifest, "--output", "json"], &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let reasons = assert_reasons_bounded(&observation(&run.stdout));
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("more than 1048576 bytes")),
        "{reasons:#?}"
    );
    assert!(
        run.max_rss_kib < MAX_RSS_KIB,
        "peak {} KiB",
        run.max_rss_kib
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_error_message_with_escape_sequences_is_cut_and_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let http = HostileHttp::start().await;
    let message = format!("\u{1b}[2J\u{1b}[Hforged\nline {}", "x".repeat(500_000));
    http.answer(
        "/api/v1/query",
        Answer::new(
            400,
            serde_json::to_vec(
                &json!({"status": "error", "errorType": "bad_data", "error": message}),
            )
            .unwrap(),
        ),
    );
    let manifest = write_manifest(
        dir.path(),
        json!({"prometheus": {"url": http.url()}, "timeout": "10s"}),
        Value::Null,
    );
    let run = run_measured(&["observe", &manifest, "--output", "json"], &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let reasons = assert_reasons_bounded(&observation(&run.stdout));
    let p50 = reasons
        .iter()
        .find(|r| r.contains("forged"))
        .unwrap_or_else(|| panic!("{reasons:#?}"));
    assert!(p50.contains("\\u{1b}[2J"), "{p50}");
    assert!(p50.contains("forged\\nline"), "{p50}");
    assert!(p50.ends_with('…'), "{p50}");

    // The text output is one line per signal.
    let run = run_measured(&["observe", &manifest], &[]).await;
    assert!(!run.stdout.contains('\u{1b}'), "{}", run.stdout);
    assert!(
        run.stdout.lines().all(|l| l.chars().count() < 600),
        "{}",
        run.stdout
    );
}

/// 16.5 MB of /metrics in 340,000 distinct series, with a 2 s timeout.
async fn scrape(template: &str) -> (crate::support::hostile::Measured, Value) {
    let dir = tempfile::tempdir().unwrap();
    let http = HostileHttp::start().await;
    http.answer(
        "/metrics",
        Answer::huge(
            200,
            "# TYPE http_requests_total counter\n",
            template,
            "circuit_breaker_state{breaker=\"mem0\"} 0\n",
            340_000 * template.len(),
        )
        .text(),
    );
    let manifest = write_manifest(
        dir.path(),
        json!({"scrape": {"url": http.url() + "/metrics"}, "timeout": "2s"}),
        Value::Null,
    );
    let run = run_measured(&["observe", &manifest, "--output", "json"], &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let obs = observation(&run.stdout);
    assert_reasons_bounded(&obs);
    (run, obs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_scrape_of_other_series_is_read_within_the_deadline_and_small() {
    // About 48 bytes a line, as in the scrape this reproduces.
    let (run, obs) = scrape("app_fds_in_use{worker=\"{n}\",pool=\"main\"} 17\n").await;
    // The one series tierguard reads is found among them.
    assert_eq!(obs["breakerState"], "closed", "{obs:#}");
    assert!(
        run.elapsed < Duration::from_secs(5),
        "observe took {:.1}s with a 2 s timeout",
        run.elapsed.as_secs_f64()
    );
    assert!(
        run.max_rss_kib < MAX_RSS_KIB,
        "peak {} KiB",
        run.max_rss_kib
    );
    eprintln!(
        "scrape 16.5 MB of other series: peak RSS {} KiB, {:.2}s",
        run.max_rss_kib,
        run.elapsed.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_with_too_many_series_of_a_read_metric_is_refused() {
    let (run, obs) = scrape("http_requests_total{status=\"200\",path=\"/c/{n}\"} 1\n").await;
    let reason = obs["sources"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("more than 10000 series"),
        "{reason}\n{obs:#}"
    );
    assert!(
        run.elapsed < Duration::from_secs(5),
        "observe took {:.1}s with a 2 s timeout",
        run.elapsed.as_secs_f64()
    );
    assert!(
        run.max_rss_kib < MAX_RSS_KIB,
        "peak {} KiB",
        run.max_rss_kib
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_redis_info_reply_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let redis = HostileRedis::start(150 << 20).await;
    let manifest = write_manifest(
        dir.path(),
        json!({"timeout": "20s"}),
        json!({"urlSecretRef": {"name": "redis", "key": "url"}}),
    );
    let secret = format!("redis/url={}", redis.url());
    let run = run_measured(
        &[
            "observe", &manifest, "--output", "json", "--secret", &secret,
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let obs = observation(&run.stdout);
    let reasons = assert_reasons_bounded(&obs);
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("larger than 1048576 bytes")),
        "{reasons:#?}"
    );
    assert!(
        run.max_rss_kib < MAX_RSS_KIB,
        "observe peaked at {} KiB for a 150 MB INFO",
        run.max_rss_kib
    );
    eprintln!(
        "redis INFO 150 MB: peak RSS {} KiB, {:.2}s",
        run.max_rss_kib,
        run.elapsed.as_secs_f64()
    );
}

/// The API server (or a proxy in front of it) answers the controller's status writes with 20 MB
/// of HTML. The controller reads 64 KiB of it at most: its log stays short and its memory small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_error_body_from_the_api_server_is_not_read_whole() {
    use kube_testserver::{Fault, FaultAction, Gvr};
    let api = crate::support::api_server().await;
    api.put_json(
        &Gvr::of::<tierguard::api::MemoryTier>(),
        json!({
            "apiVersion": "tierguard.dev/v1alpha1", "kind": "MemoryTier",
            "metadata": {"name": "clinic-backend", "namespace": "clinic"},
            "spec": {"target": {"configMapName": "flags"}, "metrics": {"interval": "1s"}},
        }),
    )
    .unwrap();
    api.push_fault(Fault {
        method: Some("PATCH".into()),
        path_prefix:
            "/apis/tierguard.dev/v1alpha1/namespaces/clinic/memorytiers/clinic-backend/status"
                .into(),
        ..Fault::new(FaultAction::FailHuge(500, 20 << 20), usize::MAX)
    });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let log_path = dir.path().join("run.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tierguard"))
        .arg("run")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--namespace", "clinic", "--metrics-addr", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak_kib = 0u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut failures = 0;
    while failures < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no failed reconcile logged"
        );
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        failures = std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .matches("reconcile failed")
            .count();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.len() < 100_000, "the log holds {} bytes", log.len());
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 2000, "a log line of {longest} bytes");
    assert!(
        peak_kib < MAX_RSS_KIB,
        "the controller peaked at {peak_kib} KiB"
    );
}
