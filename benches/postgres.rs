//! What one observation from the PostgreSQL source costs: a real PostgreSQL (the Debian package,
//! started by the test harness in a temporary directory on a free loopback port, as the `postgres` user when run
//! as root) holds the runbooks' `observability_events` with N events in the 5-minute window
//! (requests, cache lookups over 100 clinics, mem0 writes, each with a cohort in `details`) and
//! as many older ones; the index is the one docs/metrics.md recommends, `(event_type,
//! created_at)`. Printed: the time of one observation with a warm pool (the 22 queries: every
//! signal for the service and both cohorts), of the first one (the pool's connections opened),
//! and of the "by clinic" query, with the controller's peak RSS delta.
//!
//! Run with `cargo bench --bench postgres` (release build); `BENCH_PG_EVENTS=10000,100000` picks
//! the sizes.

// The integration tests' real servers; the bench uses PostgreSQL's.
#[path = "../tests/it/support/servers.rs"]
mod servers;

use std::time::{Duration, Instant};

use servers::PostgresServer;
use tierguard::api::MemoryTierSpec;
use tierguard::destinations::{AllowList, Purpose};
use tierguard::observe::postgres::{PostgresConfig, PostgresObserver};

const RUNS: usize = 10;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn load(url: &str, events: u64) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move { drop(connection.await) });
    // In the window (the last 5 minutes) and as many in the hour before it.
    let sql = format!(
        "DROP TABLE IF EXISTS observability_events;
         CREATE TABLE observability_events (
            id bigserial PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now(),
            event_type text NOT NULL, clinic_id text, cache_key text,
            processing_time_ms double precision, success boolean, cache_hit boolean, details jsonb);
         INSERT INTO observability_events (created_at, event_type, clinic_id, processing_time_ms, success, cache_hit, details)
           SELECT now() - (random() * CASE WHEN i % 2 = 0 THEN 290 ELSE 3600 END + CASE WHEN i % 2 = 0 THEN 0 ELSE 600 END) * interval '1 second',
                  (ARRAY['request_completed', 'cache_access', 'cache_access', 'mem0_write'])[1 + (i / 2) % 4],
                  (1 + i % 100)::text, 50 + random() * 900, random() > 0.01, random() > 0.1,
                  jsonb_build_object('cohort', CASE WHEN i % 10 = 0 THEN 'canary' ELSE 'stable' END)
           FROM generate_series(1, {}) AS i;
         INSERT INTO observability_events (event_type, details) VALUES ('circuit_breaker_state_change', '{{\"state\": \"closed\"}}');
         CREATE INDEX ON observability_events (event_type, created_at);
         ANALYZE observability_events;",
        events * 2
    );
    client.batch_execute(&sql).await.unwrap();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    tierguard::install_crypto_provider();
    let sizes: Vec<u64> = std::env::var("BENCH_PG_EVENTS")
        .unwrap_or_else(|_| "10000,100000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let server = PostgresServer::start();
    let url = server.url();
    let spec: MemoryTierSpec = serde_json::from_value(serde_json::json!({
        "target": {"configMapName": "f"},
        "metrics": {"postgres": {"urlSecretRef": {"name": "db", "key": "url"}}, "timeout": "30s", "interval": "1m"},
    }))
    .unwrap();
    let source = spec.metrics.postgres.clone().unwrap();
    println!("PostgreSQL source, one observation (22 queries, 5m window; {RUNS} runs each):");
    for events in sizes {
        let loading = Instant::now();
        load(&url, events).await;
        let loaded = loading.elapsed();
        let rss_before = peak_rss_kib();
        let observer = PostgresObserver::new(
            PostgresConfig::from_spec(&spec, &source, url.clone()),
            Duration::from_secs(30),
            AllowList::any(Purpose::Metrics),
        )
        .unwrap();
        let first = Instant::now();
        let (readings, failure) = observer.read_signals().await;
        let first = first.elapsed();
        assert!(failure.is_none(), "{failure:?}");
        assert!(readings.values().all(|r| r.is_ok()), "{readings:?}");
        let mut warm: Vec<Duration> = (0..RUNS).map(|_| Duration::ZERO).collect();
        for slot in warm.iter_mut() {
            let t = Instant::now();
            let (_, failure) = observer.read_signals().await;
            *slot = t.elapsed();
            assert!(failure.is_none());
        }
        warm.sort();
        let mut clinics: Vec<Duration> = Vec::new();
        let mut listed = 0;
        for _ in 0..RUNS {
            let t = Instant::now();
            // Clinics with more than 100 lookups only: none at the smallest size.
            listed = observer.clinic_hit_rates(None).await.unwrap().len();
            clinics.push(t.elapsed());
        }
        clinics.sort();
        println!(
            "  {events:>8} events in the window (+{events} older; loaded in {:.1} s): first {:.1} ms, warm p50 {:.1} ms, max {:.1} ms; by clinic p50 {:.1} ms ({listed} clinics); peak RSS +{} KiB",
            loaded.as_secs_f64(),
            ms(first),
            ms(warm[RUNS / 2]),
            ms(warm[RUNS - 1]),
            ms(clinics[RUNS / 2]),
            peak_rss_kib().saturating_sub(rss_before),
        );
    }
}
