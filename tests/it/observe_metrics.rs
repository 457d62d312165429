//! Application signals end to end: a real exporter, scraped by a real Prometheus and directly,
//! next to a real Redis; sources that are down, stopped mid-test, slow past the deadline or
//! answering garbage make only their own signals unknown.

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use support::exporter::{AppMetrics, AuthProxy, BlackHole, Exporter, Mode};
use support::servers::{PrometheusServer, RedisServer};
use support::tiers::spec;
use tierguard::api::{BreakerState, Observation};
use tierguard::observe::prometheus::{InstantValue, PrometheusClient};
use tierguard::observe::secrets::LocalSecrets;
use tierguard::observe::{ObserveConfig, Observer};

const APP_SIGNALS: [&str; 7] = [
    "p50LatencyMs",
    "p95LatencyMs",
    "p99LatencyMs",
    "errorRatePercent",
    "cacheHitRatePercent",
    "mem0WriteSuccessPercent",
    "breakerState",
];

/// Every series present, every counter at zero (so Prometheus has a first sample of each).
fn zero_metrics() -> AppMetrics {
    let map = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    };
    AppMetrics {
        requests: map(&[("200", 0), ("503", 0)]),
        duration_buckets: vec![(0.05, 0), (0.1, 0), (0.25, 0), (0.5, 0), (1.0, 0), (2.5, 0)],
        duration_sum: 0.0,
        cache_hits: map(&[("1", 0), ("2", 0)]),
        cache_misses: map(&[("1", 0), ("2", 0)]),
        mem0_success: 0,
        mem0_failure: 0,
        breakers: [("mem0".to_string(), 0.0), ("db".to_string(), 2.0)].into(),
    }
}

/// After some traffic. Worked out by hand:
/// - errors: 50 of 1000 requests = 5 %;
/// - latency (1000 requests): 400 ≤ 50 ms, 600 ≤ 100 ms, 800 ≤ 250 ms, 900 ≤ 500 ms,
///   950 ≤ 1 s, 1000 ≤ 2.5 s. P50: rank 500 is halfway through (50, 100] ms = 75 ms.
///   P95: rank 950 is the top of (0.5, 1] s = 1000 ms. P99: rank 990 is 40/50 through
///   (1, 2.5] s = 1 + 1.5 × 0.8 = 2.2 s = 2200 ms;
/// - cache: 900 hits, 100 misses = 90 %;
/// - mem0: 196 of 200 writes succeeded = 98 %;
/// - breaker mem0 open (1); breaker db half-open (2) must not leak into it.
fn loaded_metrics() -> AppMetrics {
    let mut m = zero_metrics();
    m.requests.insert("200".into(), 950);
    m.requests.insert("503".into(), 50);
    m.duration_buckets = vec![
        (0.05, 400),
        (0.1, 600),
        (0.25, 800),
        (0.5, 900),
        (1.0, 950),
        (2.5, 1000),
    ];
    m.duration_sum = 180.0;
    m.cache_hits.insert("1".into(), 600);
    m.cache_hits.insert("2".into(), 300);
    m.cache_misses.insert("1".into(), 60);
    m.cache_misses.insert("2".into(), 40);
    m.mem0_success = 196;
    m.mem0_failure = 4;
    m.breakers.insert("mem0".into(), 1.0);
    m
}

fn close(actual: Option<f64>, expected: f64, what: &str) {
    let actual = actual.unwrap_or_else(|| panic!("{what} is unknown"));
    assert!(
        (actual - expected).abs() <= 1e-6 * expected.abs().max(1.0),
        "{what}: expected {expected}, got {actual}"
    );
}

fn assert_loaded_values(obs: &Observation) {
    assert!(
        all_app_known(obs),
        "unknown: {:?}, sources: {:?}",
        obs.unknown,
        obs.sources
    );
    close(obs.p50_latency_ms, 75.0, "p50");
    close(obs.p95_latency_ms, 1000.0, "p95");
    close(obs.p99_latency_ms, 2200.0, "p99");
    close(obs.error_rate_percent, 5.0, "error rate");
    close(obs.cache_hit_rate_percent, 90.0, "cache hit rate");
    close(obs.mem0_write_success_percent, 98.0, "mem0 write success");
    assert_eq!(obs.breaker_state, Some(BreakerState::Open));
}

fn all_app_known(obs: &Observation) -> bool {
    APP_SIGNALS.iter().all(|s| !obs.unknown.contains_key(*s))
}

fn source<'a>(obs: &'a Observation, name: &str) -> &'a tierguard::api::SourceHealth {
    obs.sources
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no source {name} in {:?}", obs.sources))
}

fn redis_secret(redis: &RedisServer) -> LocalSecrets {
    let mut secrets = LocalSecrets::new();
    secrets.insert("redis-auth", "url", &redis.url());
    secrets
}

fn redis_section() -> serde_json::Value {
    json!({"urlSecretRef": {"name": "redis-auth", "key": "url"}, "maxMemory": "64Mi"})
}

async fn observer(metrics: serde_json::Value, secrets: &LocalSecrets) -> Observer {
    let spec = spec(metrics, redis_section());
    let config = ObserveConfig::resolve(&spec, secrets)
        .await
        .expect("the secrets resolve");
    Observer::new(config).expect("the observer starts")
}

fn assert_redis_known(obs: &Observation) {
    assert!(
        obs.redis_run_id.is_some() && obs.redis_used_memory_bytes.is_some(),
        "Redis signals must stay known: {:?}",
        obs.unknown
    );
    assert!(source(obs, "redis").ok);
}

async fn wait_for_first_sample(prom: &PrometheusClient) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(InstantValue::Vector(v)) = prom
            .query("http_requests_total{app=\"clinic-backend\"}")
            .await
            && v.len() == 2
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus scraped nothing within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_gives_every_signal_and_failures_stay_local() {
    tierguard::install_crypto_provider();
    let redis = RedisServer::start();
    let exporter = Exporter::start(&zero_metrics());
    let mut prom = PrometheusServer::start(&[exporter.target()], Duration::from_secs(1));
    let http = reqwest::Client::new();
    let client = PrometheusClient::new(http, &prom.url(), None, Duration::from_secs(5)).unwrap();
    wait_for_first_sample(&client).await;
    exporter.set(&loaded_metrics());

    let secrets = redis_secret(&redis);
    let metrics = json!({
        "prometheus": {"url": prom.url()},
        "selector": "app=\"clinic-backend\"",
        "timeout": "5s",
    });
    let mut obs_er = observer(metrics, &secrets).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let obs = loop {
        let obs = obs_er.observe().await;
        if all_app_known(&obs) {
            break obs;
        }
        assert!(
            Instant::now() < deadline,
            "signals still unknown after 30 s: {:?}",
            obs.unknown
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_loaded_values(&obs);
    assert_redis_known(&obs);
    assert!(obs.unknown.is_empty(), "{:?}", obs.unknown);
    assert!(source(&obs, "prometheus").ok);
    assert!(source(&obs, "prometheus").latency_ms.is_some());

    // A range query over the last minute sees the counter go from 0 to 1000.
    let now = jiff::Timestamp::now();
    let series = client
        .query_range(
            "sum(http_requests_total{app=\"clinic-backend\"})",
            now - jiff::SignedDuration::from_secs(60),
            now,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    assert_eq!(series.len(), 1);
    let values: Vec<f64> = series[0].points.iter().map(|(_, v)| *v).collect();
    assert_eq!(values.first(), Some(&0.0), "{values:?}");
    assert_eq!(values.last(), Some(&1000.0), "{values:?}");
    assert!(series[0].points.windows(2).all(|w| w[0].0 < w[1].0));

    // Overrides: scalars, NaN, infinities, empty results, several series and a bad query.
    let odd = json!({
        "prometheus": {"url": prom.url()},
        "timeout": "5s",
        "queries": {
            "p50LatencyMs": "scalar(vector(42))",
            "p95LatencyMs": "0/0",
            "p99LatencyMs": "1/0",
            "errorRatePercent": "-1/0",
            "cacheHitRatePercent": "http_requests_total",
            "mem0WriteSuccessPercent": "http_requests_total{status=\"999\"}",
            "breakerState": "sum(",
        },
    });
    let obs = observer(odd, &secrets).await.observe().await;
    assert_eq!(obs.p50_latency_ms, Some(42.0));
    let why = |s: &str| obs.unknown.get(s).cloned().unwrap_or_default();
    assert!(
        why("p95LatencyMs").contains("NaN"),
        "{}",
        why("p95LatencyMs")
    );
    assert!(
        why("p99LatencyMs").contains("+Inf"),
        "{}",
        why("p99LatencyMs")
    );
    assert!(
        why("errorRatePercent").contains("-Inf"),
        "{}",
        why("errorRatePercent")
    );
    assert!(
        why("cacheHitRatePercent").contains("returned 2 series"),
        "{}",
        why("cacheHitRatePercent")
    );
    assert!(
        why("mem0WriteSuccessPercent").contains("no data"),
        "{}",
        why("mem0WriteSuccessPercent")
    );
    assert!(
        why("breakerState").contains("bad_data"),
        "{}",
        why("breakerState")
    );
    // Bad queries are the query's fault, not the server's.
    assert!(source(&obs, "prometheus").ok, "{:?}", obs.sources);

    // Bearer and basic auth, through a proxy that checks the header.
    let bearer = AuthProxy::start(&prom.url(), "Bearer t0ken");
    let basic = AuthProxy::start(
        &prom.url(),
        &format!("Basic {}", support::base64(b"grafana:pa:ss")),
    );
    let mut secrets_auth = secrets.clone();
    secrets_auth.insert("prom", "token", "t0ken\n");
    secrets_auth.insert("prom", "basic", "grafana:pa:ss");
    secrets_auth.insert("prom", "wrong", "nope");
    let with_auth = |url: String, key: &str, kind: &str| {
        json!({
            "prometheus": {"url": url, kind: {"name": "prom", "key": key}},
            "selector": "app=\"clinic-backend\"",
            "timeout": "5s",
        })
    };
    let obs = observer(
        with_auth(bearer.url(), "token", "bearerTokenSecretRef"),
        &secrets_auth,
    )
    .await
    .observe()
    .await;
    assert_loaded_values(&obs);
    let obs = observer(
        with_auth(basic.url(), "basic", "basicAuthSecretRef"),
        &secrets_auth,
    )
    .await
    .observe()
    .await;
    assert_loaded_values(&obs);
    let obs = observer(
        with_auth(bearer.url(), "wrong", "bearerTokenSecretRef"),
        &secrets_auth,
    )
    .await
    .observe()
    .await;
    let health = source(&obs, "prometheus");
    assert!(!health.ok);
    assert!(
        health
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("HTTP 401"),
        "{health:?}"
    );
    assert!(why_of(&obs, "p50LatencyMs").contains("HTTP 401"));
    assert!(!format!("{obs:?}").contains("nope"));
    assert_redis_known(&obs);

    // A "Prometheus" that answers garbage.
    let impostor = Exporter::start(&zero_metrics());
    impostor.set_mode(Mode::Garbage);
    let obs = observer(
        json!({"prometheus": {"url": impostor.base_url()}, "timeout": "5s"}),
        &secrets,
    )
    .await
    .observe()
    .await;
    assert!(!source(&obs, "prometheus").ok);
    for s in APP_SIGNALS {
        assert!(
            why_of(&obs, s).contains("not its API's JSON"),
            "{s}: {}",
            why_of(&obs, s)
        );
    }
    assert_redis_known(&obs);

    // Prometheus stopped mid-test: its signals become unknown, Redis is unaffected.
    prom.stop();
    let obs = obs_er.observe().await;
    let health = source(&obs, "prometheus");
    assert!(!health.ok);
    let reason = health.reason.clone().unwrap_or_default();
    assert!(reason.contains("cannot reach Prometheus"), "{reason}");
    for s in APP_SIGNALS {
        assert!(
            why_of(&obs, s).starts_with("prometheus: cannot reach Prometheus"),
            "{s}: {}",
            why_of(&obs, s)
        );
    }
    assert_eq!(obs.p50_latency_ms, None);
    assert_eq!(obs.breaker_state, None);
    assert_redis_known(&obs);
}

fn why_of(obs: &Observation, signal: &str) -> String {
    obs.unknown.get(signal).cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_scrape_derives_rates_from_consecutive_scrapes() {
    tierguard::install_crypto_provider();
    let redis = RedisServer::start();
    let mut exporter = Exporter::start(&zero_metrics());
    let secrets = redis_secret(&redis);
    let mut obs_er = observer(
        json!({"scrape": {"url": exporter.url()}, "timeout": "2s"}),
        &secrets,
    )
    .await;

    // First scrape: only the breaker (a gauge) is known.
    let obs = obs_er.observe().await;
    assert_eq!(obs.breaker_state, Some(BreakerState::Closed));
    for s in APP_SIGNALS.iter().filter(|s| **s != "breakerState") {
        assert!(
            why_of(&obs, s).contains("need two scrapes"),
            "{s}: {}",
            why_of(&obs, s)
        );
    }
    assert!(source(&obs, "scrape").ok);
    assert_redis_known(&obs);

    // Second scrape: every signal from the increases.
    exporter.set(&loaded_metrics());
    let obs = obs_er.observe().await;
    assert_loaded_values(&obs);
    assert!(obs.unknown.is_empty(), "{:?}", obs.unknown);

    // The application restarts: counters start over and count from zero.
    // 30 + 10 requests since the restart, 10 of them errors: 25 %.
    let mut restarted = loaded_metrics();
    restarted.requests.insert("200".into(), 30);
    restarted.requests.insert("503".into(), 10);
    exporter.set(&restarted);
    let obs = obs_er.observe().await;
    close(obs.error_rate_percent, 25.0, "error rate after a reset");
    assert!(why_of(&obs, "cacheHitRatePercent").contains("no cache lookups"));

    // Garbage, then an HTTP error: the scrape fails, Redis is unaffected.
    exporter.set_mode(Mode::Garbage);
    let obs = obs_er.observe().await;
    let health = source(&obs, "scrape");
    assert!(!health.ok);
    assert!(
        health
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("not the Prometheus text format"),
        "{health:?}"
    );
    assert!(why_of(&obs, "breakerState").contains("not the Prometheus text format"));
    assert_redis_known(&obs);
    exporter.set_mode(Mode::Error);
    let obs = obs_er.observe().await;
    assert!(why_of(&obs, "p50LatencyMs").contains("HTTP 500"));
    assert_redis_known(&obs);

    // Slow past the deadline: unknown, and the observation does not wait for it.
    exporter.set_mode(Mode::Slow(Duration::from_secs(20)));
    let started = Instant::now();
    let obs = obs_er.observe().await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(3500), "took {took:?}");
    assert!(
        why_of(&obs, "errorRatePercent").contains("no answer within 2s"),
        "{}",
        why_of(&obs, "errorRatePercent")
    );
    assert_redis_known(&obs);

    // Back to normal: the failed scrapes did not replace the last good one.
    // 60 - 30 = 30 new requests, no new errors.
    exporter.set_mode(Mode::Normal);
    restarted.requests.insert("200".into(), 60);
    exporter.set(&restarted);
    let obs = obs_er.observe().await;
    close(obs.error_rate_percent, 0.0, "error rate after recovery");

    // Stopped: the port refuses connections.
    exporter.stop();
    let obs = obs_er.observe().await;
    assert!(
        why_of(&obs, "breakerState").contains("cannot reach the endpoint"),
        "{}",
        why_of(&obs, "breakerState")
    );
    assert!(!source(&obs, "scrape").ok);
    assert_redis_known(&obs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_sources_never_hold_the_others_past_the_deadline() {
    tierguard::install_crypto_provider();
    let hung_prometheus = BlackHole::start();
    let hung_redis = BlackHole::start();
    let mut secrets = LocalSecrets::new();
    secrets.insert(
        "redis-auth",
        "url",
        &format!("redis://127.0.0.1:{}/", hung_redis.port()),
    );
    let mut obs_er = observer(
        json!({
            "prometheus": {"url": format!("http://127.0.0.1:{}", hung_prometheus.port())},
            "timeout": "1500ms",
        }),
        &secrets,
    )
    .await;
    let started = Instant::now();
    let obs = obs_er.observe().await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(3000), "took {took:?}");
    for name in ["prometheus", "redis"] {
        let health = source(&obs, name);
        assert!(!health.ok, "{health:?}");
        assert!(
            health
                .reason
                .as_deref()
                .unwrap_or_default()
                .contains("no answer within"),
            "{health:?}"
        );
    }
    assert!(why_of(&obs, "redisUsedMemoryPercent").contains("no answer within"));
    assert!(why_of(&obs, "p99LatencyMs").contains("no answer within"));

    // A working scrape next to a hung Redis is read in full.
    let exporter = Exporter::start(&loaded_metrics());
    let mut obs_er = observer(
        json!({"scrape": {"url": exporter.url()}, "timeout": "1500ms"}),
        &secrets,
    )
    .await;
    let obs = obs_er.observe().await;
    assert!(source(&obs, "scrape").ok);
    assert_eq!(obs.breaker_state, Some(BreakerState::Open));
    assert!(!source(&obs, "redis").ok);
}

#[tokio::test]
async fn no_sources_configured_means_every_signal_unknown_with_the_reason() {
    let spec = spec(serde_json::Value::Null, serde_json::Value::Null);
    let config = ObserveConfig::resolve(&spec, &LocalSecrets::new())
        .await
        .unwrap();
    let obs = Observer::new(config).unwrap().observe().await;
    assert!(obs.sources.is_empty());
    assert!(
        why_of(&obs, "p50LatencyMs")
            .contains("spec.metrics.prometheus, spec.metrics.scrape or spec.metrics.postgres")
    );
    assert!(why_of(&obs, "redisRunId").contains("spec.redis.urlSecretRef is not set"));
    assert_eq!(obs.unknown.len(), tierguard::api::Signal::ALL.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_config_keeps_the_previous_scrape_when_the_endpoint_is_the_same() {
    tierguard::install_crypto_provider();
    let exporter = Exporter::start(&zero_metrics());
    let other = Exporter::start(&zero_metrics());
    let config = |url: String, timeout: &str| {
        let spec = spec(
            json!({"scrape": {"url": url}, "timeout": timeout}),
            serde_json::Value::Null,
        );
        async move {
            ObserveConfig::resolve(&spec, &LocalSecrets::new())
                .await
                .unwrap()
        }
    };
    let mut obs_er = Observer::new(config(exporter.url(), "2s").await).unwrap();
    obs_er.observe().await;
    exporter.set(&loaded_metrics());
    // Only the deadline changed: the first scrape is still the baseline.
    obs_er.update(config(exporter.url(), "3s").await).unwrap();
    assert_loaded_values(&obs_er.observe().await);
    // Another endpoint: its first scrape has no baseline.
    obs_er.update(config(other.url(), "3s").await).unwrap();
    let obs = obs_er.observe().await;
    assert!(why_of(&obs, "errorRatePercent").contains("need two scrapes"));
}
