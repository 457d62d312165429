//! Figures, not a pass/fail test: how long one observation takes against local servers.
//! Run with `cargo test --release --test observe_latency -- --ignored --nocapture`.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::exporter::{AppMetrics, Exporter};
use support::servers::{PrometheusServer, RedisServer};
use support::tiers::spec;
use tierguard::observe::secrets::LocalSecrets;
use tierguard::observe::{ObserveConfig, Observer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "prints latency figures; run explicitly"]
async fn observation_latency() {
    tierguard::install_crypto_provider();
    let redis = RedisServer::start_with(&["--maxmemory", "8mb"]);
    let mut m = AppMetrics::default();
    m.requests.insert("200".into(), 10);
    m.requests.insert("503".into(), 1);
    m.duration_buckets = vec![(0.1, 5), (1.0, 11)];
    m.cache_hits.insert("1".into(), 5);
    m.cache_misses.insert("1".into(), 1);
    m.breakers.insert("mem0".into(), 0.0);
    let exporter = Exporter::start(&m);
    let prom = PrometheusServer::start(&[exporter.target()], Duration::from_secs(1));
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut secrets = LocalSecrets::new();
    secrets.insert("redis-auth", "url", &redis.url());
    let redis_section = json!({"urlSecretRef": {"name": "redis-auth", "key": "url"}});
    for (label, metrics) in [
        (
            "prometheus (7 queries) + redis",
            json!({"prometheus": {"url": prom.url()}, "selector": "app=\"clinic-backend\""}),
        ),
        ("scrape + redis", json!({"scrape": {"url": exporter.url()}})),
    ] {
        let spec = spec(metrics, redis_section.clone());
        let config = ObserveConfig::resolve(&spec, &secrets).await.unwrap();
        let mut observer = Observer::new(config).unwrap();
        observer.observe().await; // connections warm
        let n = 200;
        let mut ms = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            let obs = observer.observe().await;
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
            assert!(obs.sources.iter().all(|s| s.ok), "{:?}", obs.sources);
        }
        ms.sort_by(f64::total_cmp);
        println!(
            "{label}: {n} observations, median {:.2} ms, p95 {:.2} ms, max {:.2} ms",
            ms[n / 2],
            ms[n * 95 / 100],
            ms[n - 1]
        );
    }
}
