//! The PostgreSQL source against a real PostgreSQL server: every signal from events the test
//! inserts (the runbooks' `observability_events` contract), per cohort and per clinic; empty
//! windows, NULL details, a slow query past the statement timeout, a table locked by someone
//! else, a connection ended mid-observation, wrong credentials, a missing table, a server that is
//! down and a host outside the allow-list: each unknown with a clear reason, never zero.

use crate::support;

use std::time::Duration;

use serde_json::{Value, json};
use support::servers::PostgresServer;
use support::tiers::spec;
use tierguard::api::{BreakerState, Observation};
use tierguard::destinations::{Destinations, Network};
use tierguard::observe::secrets::LocalSecrets;
use tierguard::observe::{ObserveConfig, Observer};

const APP_SIGNALS: [&str; 8] = [
    "p50LatencyMs",
    "p95LatencyMs",
    "p99LatencyMs",
    "errorRatePercent",
    "cacheHitRatePercent",
    "mem0WriteSuccessPercent",
    "breakerState",
    "requests",
];

const READER_PASSWORD: &str = "reader-Secret-9f3a";

/// The table contract of docs/metrics.md, and a reader that may only SELECT from it.
pub const TABLE_SQL: &str = "
    CREATE TABLE observability_events (
        id bigserial PRIMARY KEY,
        created_at timestamptz NOT NULL DEFAULT now(),
        event_type text NOT NULL,
        clinic_id text,
        cache_key text,
        processing_time_ms double precision,
        success boolean,
        cache_hit boolean,
        details jsonb
    );
    CREATE INDEX ON observability_events (event_type, created_at);";

async fn server() -> PostgresServer {
    let pg = PostgresServer::start();
    pg.exec(TABLE_SQL).await;
    pg.exec(&format!(
        "CREATE ROLE reader LOGIN PASSWORD '{READER_PASSWORD}';
         GRANT SELECT ON observability_events TO reader;"
    ))
    .await;
    pg
}

fn secrets(url: &str) -> LocalSecrets {
    let mut s = LocalSecrets::new();
    s.insert("events-db", "url", url);
    s
}

fn reader_url(pg: &PostgresServer) -> String {
    pg.url_for("reader", READER_PASSWORD, "postgres")
}

/// A spec reading the source `postgres` (merged over the Secret reference) with `timeout`.
fn postgres_spec(postgres: Value, timeout: &str) -> tierguard::api::MemoryTierSpec {
    let mut section = json!({"urlSecretRef": {"name": "events-db", "key": "url"}, "window": "15m"});
    json_patch::merge(&mut section, &postgres);
    spec(
        json!({"postgres": section, "timeout": timeout, "interval": "30s"}),
        Value::Null,
    )
}

async fn observer(url: &str, postgres: Value, timeout: &str) -> Observer {
    let spec = postgres_spec(postgres, timeout);
    let config = ObserveConfig::resolve(&spec, &secrets(url))
        .await
        .expect("the secret resolves");
    Observer::new(config).expect("the observer starts")
}

fn source<'a>(obs: &'a Observation, name: &str) -> &'a tierguard::api::SourceHealth {
    obs.sources
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no source {name} in {:?}", obs.sources))
}

fn close(actual: Option<f64>, expected: f64, what: &str) {
    let actual = actual.unwrap_or_else(|| panic!("{what} is unknown"));
    assert!(
        (actual - expected).abs() < 1e-6,
        "{what}: {actual} != {expected}"
    );
}

/// Every application signal unknown, none zero, each reason containing `needle`.
fn all_unknown_with(obs: &Observation, needle: &str) {
    for name in APP_SIGNALS {
        let reason = obs
            .unknown
            .get(name)
            .unwrap_or_else(|| panic!("{name} must be unknown: {obs:?}"));
        assert!(
            reason.contains(needle),
            "{name}: {reason:?} lacks {needle:?}"
        );
    }
    assert_eq!(obs.p50_latency_ms, None);
    assert_eq!(obs.error_rate_percent, None);
    assert_eq!(obs.requests, None);
    assert_eq!(obs.breaker_state, None);
}

/// Insert `n` events of one kind with SQL expressions for the columns, `ago` before now.
async fn insert(pg: &PostgresServer, n: u32, event: &str, columns: &str, values: &str, ago: &str) {
    pg.exec(&format!(
        "INSERT INTO observability_events (created_at, event_type, {columns})
         SELECT now() - interval '{ago}', '{event}', {values} FROM generate_series(1, {n}) AS i"
    ))
    .await;
}

/// What the runbooks' queries give, worked out by hand over the last 15 minutes:
/// - 100 requests, processing_time_ms 1..100: percentile_cont(0.5) = 50.5, (0.95) = 95.05,
///   (0.99) = 99.01; 7 failed = 7 %. Of them, i ≤ 20 are canary (i ≤ 5 of those failed: 25 %)
///   and the other 80 stable (2 failed: 2.5 %).
/// - 200 cache lookups, 150 hits = 75 %: clinic c-1 150 lookups (100 hits, 66.67 %), c-2 50
///   lookups (all hits; too few for the runbooks' "by clinic" query, which needs more than 100).
/// - 50 mem0 writes, 49 succeeded = 98 %.
/// - the breaker: open 10 minutes ago, half_open 1 minute ago.
/// - an hour ago, 100 slow failed requests and 100 missed lookups, outside the window.
/// - another application's 100 failed requests, left out by the filter.
async fn load_events(pg: &PostgresServer) {
    insert(
        pg,
        100,
        "request_completed",
        "processing_time_ms, success, details",
        "i, NOT (i <= 5 OR i IN (50, 60)), \
         jsonb_build_object('app', 'clinic-backend', 'cohort', CASE WHEN i <= 20 THEN 'canary' ELSE 'stable' END)",
        "1 minute",
    )
    .await;
    insert(
        pg,
        100,
        "request_completed",
        "processing_time_ms, success, details",
        "10000, false, '{\"app\": \"clinic-backend\"}'::jsonb",
        "1 hour",
    )
    .await;
    insert(
        pg,
        100,
        "request_completed",
        "processing_time_ms, success, details",
        "9000, false, '{\"app\": \"billing\"}'::jsonb",
        "1 minute",
    )
    .await;
    insert(
        pg,
        150,
        "cache_access",
        "clinic_id, cache_hit, details",
        "'c-1', i <= 100, '{\"app\": \"clinic-backend\"}'::jsonb",
        "2 minutes",
    )
    .await;
    insert(
        pg,
        50,
        "cache_access",
        "clinic_id, cache_hit, details",
        "'c-2', true, '{\"app\": \"clinic-backend\"}'::jsonb",
        "2 minutes",
    )
    .await;
    insert(
        pg,
        100,
        "cache_access",
        "clinic_id, cache_hit, details",
        "'c-1', false, '{\"app\": \"clinic-backend\"}'::jsonb",
        "1 hour",
    )
    .await;
    insert(
        pg,
        50,
        "mem0_write",
        "success, details",
        "i <> 17, '{\"app\": \"clinic-backend\"}'::jsonb",
        "3 minutes",
    )
    .await;
    pg.exec(
        "INSERT INTO observability_events (created_at, event_type, details) VALUES
         (now() - interval '10 minutes', 'circuit_breaker_state_change', '{\"app\": \"clinic-backend\", \"state\": \"open\", \"failure_count\": 5}'),
         (now() - interval '1 minute', 'circuit_breaker_state_change', '{\"app\": \"clinic-backend\", \"state\": \"half_open\", \"failure_count\": 0}')",
    )
    .await;
}

#[tokio::test]
async fn every_signal_comes_from_the_runbooks_queries_over_inserted_events() {
    let pg = server().await;
    load_events(&pg).await;
    let mut observer = observer(
        &reader_url(&pg),
        json!({"filter": "details->>'app' = 'clinic-backend'"}),
        "5s",
    )
    .await;
    let obs = observer.observe().await;
    assert!(source(&obs, "postgres").ok, "{:?}", obs.sources);
    for name in APP_SIGNALS {
        assert!(!obs.unknown.contains_key(name), "{name}: {:?}", obs.unknown);
    }
    close(obs.p50_latency_ms, 50.5, "p50");
    close(obs.p95_latency_ms, 95.05, "p95");
    close(obs.p99_latency_ms, 99.01, "p99");
    close(obs.error_rate_percent, 7.0, "error rate");
    close(obs.requests, 100.0, "requests");
    // c-1: 100 of 150 hit; c-2: 50 of 50: 150 of 200.
    close(obs.cache_hit_rate_percent, 75.0, "cache hit rate");
    close(obs.mem0_write_success_percent, 98.0, "mem0 write success");
    assert_eq!(obs.breaker_state, Some(BreakerState::HalfOpen));

    // Per cohort, from details->>'cohort' (the default key: spec.canary.cohortLabel.name).
    let cohorts = obs
        .cohorts
        .as_ref()
        .expect("cohorts from details->>'cohort'");
    close(cohorts.canary.error_rate_percent, 25.0, "canary error rate");
    close(cohorts.stable.error_rate_percent, 2.5, "stable error rate");
    close(cohorts.canary.requests, 20.0, "canary requests");
    close(cohorts.stable.requests, 80.0, "stable requests");
    close(cohorts.canary.p50_latency_ms, 10.5, "canary p50");
    // No cache or mem0 event carries a cohort: unknown for each cohort, not zero.
    assert_eq!(cohorts.canary.cache_hit_rate_percent, None);
    assert!(
        cohorts.canary.unknown["cacheHitRatePercent"].contains("no cache_access event"),
        "{:?}",
        cohorts.canary.unknown
    );

    // The runbooks' "cache hit rate by clinic": c-2 has 50 lookups, not more than 100.
    let pg_source = observer.postgres().expect("the postgres source");
    let clinics = pg_source.clinic_hit_rates(None).await.unwrap();
    assert_eq!(clinics.len(), 1, "{clinics:?}");
    assert_eq!(clinics[0].clinic.as_deref(), Some("c-1"));
    assert_eq!((clinics[0].hits, clinics[0].lookups), (100, 150));
    let text = tierguard::cli::render_clinics(&Ok(clinics));
    assert!(text.contains("c-1") && text.contains("66.67 %"), "{text}");
    // The same rows are the observation's per-clinic readings, which the stampede diagnosis reads.
    let breakdown = obs
        .clinics
        .as_ref()
        .unwrap_or_else(|| panic!("per-clinic readings: {:?}", obs.without_clinics));
    assert_eq!(breakdown.clinics.len(), 1, "{breakdown:?}");
    assert_eq!(breakdown.clinics[0].clinic, "c-1");
    assert_eq!(
        (breakdown.clinics[0].hits, breakdown.clinics[0].misses),
        (100.0, 50.0)
    );

    // Without the filter, the other application's 100 failed requests count: 107 of 200.
    let mut unfiltered = self::observer(&reader_url(&pg), json!({}), "5s").await;
    let obs = unfiltered.observe().await;
    close(obs.error_rate_percent, 53.5, "unfiltered error rate");

    // A window of 2 hours takes in the hour-old events too: 207 failures of 300 requests.
    let mut wide = self::observer(
        &reader_url(&pg),
        json!({"window": "2h", "filter": "details->>'app' = 'clinic-backend'"}),
        "5s",
    )
    .await;
    let obs = wide.observe().await;
    close(
        obs.error_rate_percent,
        107.0 / 200.0 * 100.0,
        "2h error rate",
    );
}

#[tokio::test]
async fn a_cohort_column_and_overrides_with_placeholders() {
    let pg = server().await;
    pg.exec("ALTER TABLE observability_events ADD COLUMN path text")
        .await;
    insert(
        &pg,
        40,
        "request_completed",
        "processing_time_ms, success, path",
        "i * 10, i > 4, CASE WHEN i <= 10 THEN 'new' ELSE 'old' END",
        "1 minute",
    )
    .await;
    let mut observer = observer(
        &reader_url(&pg),
        json!({
            "cohort": {"column": "path"},
            "queries": {
                "p50LatencyMs": "SELECT max(processing_time_ms) FROM {table} WHERE event_type = 'request_completed' AND created_at > {start} AND created_at <= {end} AND {cohort};",
                "mem0WriteSuccessPercent": "SELECT 99.5::float8",
            },
        }),
        "5s",
    )
    .await;
    let obs = observer.observe().await;
    assert!(source(&obs, "postgres").ok, "{:?}", obs.sources);
    close(
        obs.p50_latency_ms,
        400.0,
        "override p50 (max over the service)",
    );
    close(obs.mem0_write_success_percent, 99.5, "constant override");
    close(obs.error_rate_percent, 10.0, "error rate");
    // The cohort label's values are canary/stable and the column holds new/old: no cohort.
    assert!(obs.cohorts.is_none(), "{:?}", obs.cohorts);
    assert!(obs.without_cohorts.is_some());

    let mut observer = {
        let mut spec = postgres_spec(
            json!({
                "cohort": {"column": "path"},
                "queries": {
                    "p50LatencyMs": "SELECT max(processing_time_ms) FROM {table} WHERE event_type = 'request_completed' AND created_at > {start} AND {cohort}",
                    "mem0WriteSuccessPercent": "SELECT 99.5::float8",
                },
            }),
            "5s",
        );
        spec.canary.cohort_label.canary = "new".into();
        spec.canary.cohort_label.stable = "old".into();
        let config = ObserveConfig::resolve(&spec, &secrets(&reader_url(&pg)))
            .await
            .unwrap();
        Observer::new(config).unwrap()
    };
    let obs = observer.observe().await;
    let cohorts = obs.cohorts.as_ref().expect("cohorts from the path column");
    close(cohorts.canary.p50_latency_ms, 100.0, "canary max");
    close(cohorts.stable.p50_latency_ms, 400.0, "stable max");
    close(cohorts.canary.error_rate_percent, 40.0, "canary errors");
    close(cohorts.stable.error_rate_percent, 0.0, "stable errors");
    // An override without {cohort} is not read per cohort, and says so.
    assert!(
        cohorts.canary.unknown["mem0WriteSuccessPercent"].contains("{cohort}"),
        "{:?}",
        cohorts.canary.unknown
    );
}

#[tokio::test]
async fn empty_windows_and_null_details_are_unknown_not_zero() {
    let pg = server().await;
    let mut observer = observer(&reader_url(&pg), json!({}), "5s").await;
    let obs = observer.observe().await;
    assert!(
        source(&obs, "postgres").ok,
        "an empty table is a healthy source: {:?}",
        obs.sources
    );
    for name in APP_SIGNALS {
        assert!(
            obs.unknown.contains_key(name),
            "{name} must be unknown: {obs:?}"
        );
    }
    assert_eq!(obs.requests, None);
    assert!(
        obs.unknown["requests"].contains("no request_completed event"),
        "{:?}",
        obs.unknown
    );
    assert!(
        obs.unknown["errorRatePercent"].contains("over the last 15m"),
        "{:?}",
        obs.unknown
    );
    assert!(obs.unknown["cacheHitRatePercent"].contains("no cache_access event"));
    assert!(obs.unknown["mem0WriteSuccessPercent"].contains("no mem0_write event"));
    assert!(obs.unknown["breakerState"].contains("no circuit_breaker_state_change event"));

    // Only old events: the window is still empty.
    insert(
        &pg,
        10,
        "request_completed",
        "processing_time_ms, success",
        "100, true",
        "2 hours",
    )
    .await;
    let obs = observer.observe().await;
    assert_eq!(obs.error_rate_percent, None);
    assert_eq!(obs.p50_latency_ms, None);

    // NULL details and NULL columns: a breaker change without a state, requests without a
    // processing time, lookups whose cache_hit is NULL.
    pg.exec(
        "INSERT INTO observability_events (event_type, details) VALUES ('circuit_breaker_state_change', NULL);
         INSERT INTO observability_events (event_type, processing_time_ms, success, details)
           SELECT 'request_completed', NULL, true, NULL FROM generate_series(1, 5);
         INSERT INTO observability_events (event_type, cache_hit, details) VALUES ('cache_access', NULL, NULL);",
    )
    .await;
    let obs = observer.observe().await;
    assert!(source(&obs, "postgres").ok, "{:?}", obs.sources);
    assert_eq!(obs.breaker_state, None);
    assert!(
        obs.unknown["breakerState"].contains("has no details->>'state'"),
        "{:?}",
        obs.unknown
    );
    assert_eq!(
        obs.p50_latency_ms, None,
        "no processing time: no percentile"
    );
    assert!(obs.unknown["p50LatencyMs"].contains("processing_time_ms"));
    // The requests are there, with success = true: 0 % errors is a measurement, not a default.
    close(
        obs.error_rate_percent,
        0.0,
        "error rate of 5 successful requests",
    );
    close(obs.requests, 5.0, "requests");
    // A lookup whose cache_hit is NULL is no hit, as in the runbooks' CASE WHEN.
    close(obs.cache_hit_rate_percent, 0.0, "one lookup, not a hit");
    // Details without a cohort: no cohorts, and why.
    assert!(obs.cohorts.is_none());
    assert!(obs.without_cohorts.as_deref().unwrap().contains("cohort"));

    // A state that is not one: unknown, with the state quoted.
    pg.exec("INSERT INTO observability_events (event_type, details) VALUES ('circuit_breaker_state_change', '{\"state\": \"melted\"}')").await;
    let obs = observer.observe().await;
    assert!(
        obs.unknown["breakerState"].contains("\"melted\""),
        "{:?}",
        obs.unknown
    );
}

#[tokio::test]
async fn a_slow_query_stops_at_the_statement_timeout_and_a_lock_too() {
    let pg = server().await;
    load_events(&pg).await;
    let mut observer = observer(
        &reader_url(&pg),
        json!({
            "filter": "details->>'app' = 'clinic-backend'",
            "queries": {"p99LatencyMs": "SELECT 1.0::float8 FROM pg_sleep(30)"},
        }),
        "3s",
    )
    .await;
    let started = std::time::Instant::now();
    let obs = observer.observe().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(obs.p99_latency_ms, None);
    let reason = &obs.unknown["p99LatencyMs"];
    assert!(reason.contains("statement timeout"), "{reason}");
    // The slow override is its own problem: the source and the other signals are fine.
    assert!(source(&obs, "postgres").ok, "{:?}", obs.sources);
    close(obs.p50_latency_ms, 50.5, "p50 beside the slow override");

    // Someone holds the table: the built-in queries wait on the lock until the statement timeout
    // cancels them, and the source says so.
    let locker = pg.client().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE observability_events IN ACCESS EXCLUSIVE MODE;")
        .await
        .unwrap();
    let mut plain = self::observer(&reader_url(&pg), json!({}), "3s").await;
    let obs = plain.observe().await;
    let health = source(&obs, "postgres");
    assert!(!health.ok, "{health:?}");
    assert!(
        health
            .reason
            .as_deref()
            .unwrap()
            .contains("statement timeout"),
        "{health:?}"
    );
    all_unknown_with(&obs, "statement timeout");
    locker.batch_execute("ROLLBACK").await.unwrap();
    let obs = plain.observe().await;
    assert!(
        source(&obs, "postgres").ok,
        "after the lock: {:?}",
        obs.sources
    );
    close(obs.error_rate_percent, 53.5, "after the lock");
}

#[tokio::test]
async fn a_connection_ended_mid_observation_is_a_reason_and_the_next_one_reconnects() {
    let pg = server().await;
    load_events(&pg).await;
    let mut observer = observer(
        &reader_url(&pg),
        json!({"queries": {"p95LatencyMs": "SELECT 95.0::float8 FROM pg_sleep(1.5)"}}),
        "5s",
    )
    .await;
    // A first observation fills the pool.
    let first = observer.observe().await;
    close(first.p95_latency_ms, 95.0, "p95 before");
    let admin = pg.client().await;
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let rows = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'tierguard'",
                &[],
            )
            .await
            .unwrap();
        rows.len()
    });
    let obs = observer.observe().await;
    let killed = killer.await.unwrap();
    assert!(killed >= 1, "no tierguard connection to end");
    assert_eq!(obs.p95_latency_ms, None, "{obs:?}");
    let reason = &obs.unknown["p95LatencyMs"];
    assert!(
        reason.contains("terminating connection") || reason.contains("closed"),
        "{reason}"
    );
    let health = source(&obs, "postgres");
    assert!(
        !health.ok,
        "a connection ended by the server is the source's: {health:?}"
    );
    // The pool drops the dead connections and opens new ones.
    let obs = observer.observe().await;
    assert!(source(&obs, "postgres").ok, "{:?}", obs.sources);
    close(obs.p95_latency_ms, 95.0, "p95 after reconnecting");
    close(
        obs.error_rate_percent,
        53.5,
        "error rate after reconnecting",
    );
}

#[tokio::test]
async fn wrong_credentials_a_missing_table_and_a_server_down_are_reasons_without_the_password() {
    let pg = server().await;
    load_events(&pg).await;
    let wrong = pg.url_for("reader", "not-the-Password-77", "postgres");
    let mut observer = observer(&wrong, json!({}), "3s").await;
    let obs = observer.observe().await;
    let health = source(&obs, "postgres");
    assert!(!health.ok);
    let reason = health.reason.as_deref().unwrap();
    assert!(
        reason.contains("password authentication failed"),
        "{reason}"
    );
    all_unknown_with(&obs, "password authentication failed");
    let json = serde_json::to_string(&obs).unwrap();
    assert!(!json.contains("not-the-Password-77"), "{json}");
    assert!(!json.contains(READER_PASSWORD), "{json}");

    // A missing table.
    let mut observer = self::observer(&reader_url(&pg), json!({"table": "app.events"}), "3s").await;
    let obs = observer.observe().await;
    let health = source(&obs, "postgres");
    assert!(!health.ok);
    let reason = health.reason.as_deref().unwrap();
    assert!(
        reason.contains("does not exist") && reason.contains("app.events"),
        "{reason}"
    );
    all_unknown_with(&obs, "does not exist");

    // A table the reader may not read.
    pg.exec("CREATE TABLE secret_events (LIKE observability_events INCLUDING ALL)")
        .await;
    let mut observer =
        self::observer(&reader_url(&pg), json!({"table": "secret_events"}), "3s").await;
    let obs = observer.observe().await;
    all_unknown_with(&obs, "permission denied");

    // An override that would write: refused by the read-only transaction.
    let mut observer = self::observer(
        &pg.url(),
        json!({"queries": {"requests": "SELECT nextval('observability_events_id_seq')::float8"}}),
        "3s",
    )
    .await;
    let obs = observer.observe().await;
    assert!(
        obs.unknown["requests"].contains("read-only transaction"),
        "{:?}",
        obs.unknown
    );

    // The server goes down: a reason, never a panic; it comes back: values again.
    let mut observer = self::observer(&reader_url(&pg), json!({}), "3s").await;
    assert!(source(&observer.observe().await, "postgres").ok);
    let mut pg = pg;
    pg.stop();
    let obs = observer.observe().await;
    let health = source(&obs, "postgres");
    assert!(!health.ok, "{health:?}");
    for name in APP_SIGNALS {
        assert!(obs.unknown.contains_key(name), "{name}");
    }
    assert!(
        !serde_json::to_string(&obs)
            .unwrap()
            .contains(READER_PASSWORD)
    );
    pg.restart();
    let obs = observer.observe().await;
    assert!(
        source(&obs, "postgres").ok,
        "after the restart: {:?}",
        obs.sources
    );
    close(obs.mem0_write_success_percent, 98.0, "after the restart");
}

#[tokio::test]
async fn a_host_outside_the_metrics_allow_list_is_never_connected_to() {
    let pg = server().await;
    let spec = postgres_spec(json!({}), "3s");
    let config = ObserveConfig::resolve(&spec, &secrets(&reader_url(&pg)))
        .await
        .unwrap();
    let network = Network::new(Destinations::everywhere(&["10.0.0.0/8"]).unwrap()).unwrap();
    let mut observer = Observer::with_network(config, &network).unwrap();
    let obs = observer.observe().await;
    let health = source(&obs, "postgres");
    assert!(!health.ok);
    assert!(
        health.reason.as_deref().unwrap().contains("127.0.0.1"),
        "{health:?}"
    );
    let rows = pg
        .client()
        .await
        .query(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'tierguard'",
            &[],
        )
        .await
        .unwrap();
    assert!(rows.is_empty(), "a refused host was connected to");

    // A URL that is not a PostgreSQL one is refused when the observer is set up.
    let config = ObserveConfig::resolve(&spec, &secrets("http://127.0.0.1:1/db"))
        .await
        .unwrap();
    let err = Observer::new(config).unwrap_err().to_string();
    assert!(
        err.contains("spec.metrics.postgres.urlSecretRef") && err.contains("postgres://"),
        "{err}"
    );
}

/// `tierguard simulate --from-postgres`: the history is the table. An hour of requests every 5 s
/// (100 ms each) with a stretch from minute 20 to 40 at 2000 ms, and the breaker open from minute
/// 45 to 50. Worked out by hand: each step's 5-minute window holds 60 requests; P50
/// (percentile_cont) passes 1000 ms once 30 of them are slow, i.e. at the first step at least
/// 145 s into the slow stretch: minute 22.5; the rollback opens when that has held for
/// p50LatencyFor (10m): minute 32.5. The breaker incident opens at the step of its change,
/// minute 45.
#[tokio::test]
async fn a_backtest_reads_its_history_from_the_table() {
    let pg = server().await;
    // On the 30 s step grid, two hours ago.
    let base = (jiff::Timestamp::now().as_second() - 7200) / 30 * 30;
    pg.exec(&format!(
        "INSERT INTO observability_events (created_at, event_type, processing_time_ms, success)
           SELECT to_timestamp({base} + 5 * i), 'request_completed',
                  CASE WHEN i * 5 >= 1200 AND i * 5 < 2400 THEN 2000 ELSE 100 END, true
           FROM generate_series(-60, 720) AS i;
         INSERT INTO observability_events (created_at, event_type, details) VALUES
           (to_timestamp({base} - 60), 'circuit_breaker_state_change', '{{\"state\": \"closed\"}}'),
           (to_timestamp({base} + 2700), 'circuit_breaker_state_change', '{{\"state\": \"open\"}}'),
           (to_timestamp({base} + 3000), 'circuit_breaker_state_change', '{{\"state\": \"closed\"}}');"
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("tier.yaml");
    let tier = json!({
        "apiVersion": "tierguard.dev/v1alpha1",
        "kind": "MemoryTier",
        "metadata": {"name": "clinic-backend", "namespace": "clinic"},
        "spec": {
            "target": {"configMapName": "clinic-backend-flags"},
            "metrics": {"postgres": {"urlSecretRef": {"name": "events-db", "key": "url"}}},
        },
    });
    std::fs::write(&manifest, serde_json::to_string_pretty(&tier).unwrap()).unwrap();
    let at = |t: i64| jiff::Timestamp::from_second(t).unwrap().to_string();
    let (start, end) = (at(base), at(base + 3600));
    let secret = format!("events-db/url={}", reader_url(&pg));
    let run = |extra: &[&str]| {
        let mut args = vec![
            "simulate",
            manifest.to_str().unwrap(),
            "--start",
            &start,
            "--end",
            &end,
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_tierguard"))
            .args(&args)
            .env_remove("KUBECONFIG")
            .output()
            .expect("tierguard runs")
    };
    let out = run(&["--from-postgres", "--secret", &secret, "--output", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let opened: Vec<(String, i64)> = lines
        .iter()
        .filter(|l| l["type"] == "incident" && l["change"] == "opened")
        .map(|l| {
            let t: jiff::Timestamp = l["time"].as_str().unwrap().parse().unwrap();
            (
                l["runbook"].as_str().unwrap().to_owned(),
                t.as_second() - base,
            )
        })
        .collect();
    assert_eq!(
        opened,
        vec![
            ("CanaryRollback".to_owned(), 1950),
            ("CircuitBreakerOpen".to_owned(), 2700)
        ],
        "{lines:#?}"
    );
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["timings"]["postgresQueries"], 121 * 22, "{summary}");
    let unknown: Vec<&str> = summary["unknown"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["signal"].as_str())
        .collect();
    assert!(!unknown.contains(&"p50LatencyMs"), "{unknown:?}");
    assert!(unknown.contains(&"redisUsedMemoryPercent"), "{unknown:?}");

    // The URL on the command line, text output: the password is never printed.
    let out = run(&["--from-postgres", &reader_url(&pg)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("History from PostgreSQL postgres://reader:***@127.0.0.1"),
        "{text}"
    );
    assert!(
        text.contains("PostgreSQL ") && text.contains(" queries), policy "),
        "{text}"
    );
    assert!(!text.contains(READER_PASSWORD), "{text}");

    // Wrong credentials: a clear error, non-zero, without the password.
    let wrong = pg.url_for("reader", "Wrong-Password-42", "postgres");
    let out = run(&["--from-postgres", &wrong]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot read PostgreSQL at postgres://reader:***@")
            && stderr.contains("password authentication failed"),
        "{stderr}"
    );
    assert!(!stderr.contains("Wrong-Password-42"), "{stderr}");
}

/// The controller itself on the SQL source, through the in-process API server: the status shows
/// the signals read from the table; the server ending the controller's connections mid-run is
/// absorbed (the pool reconnects); a table renamed away and a password changed under it are each
/// a reason in `status.observed`, no value and never zero, and the tier recovers when they are
/// put back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_reports_what_the_table_says_and_why_when_it_cannot() {
    use kube::api::{Api, PostParams};
    use tierguard::api::MemoryTier;
    use tierguard::controller::RunConfig;

    tierguard::install_crypto_provider();
    let pg = server().await;
    // Requests over the last minute (a 5s window sees some of them), and a breaker state.
    pg.exec(
        "INSERT INTO observability_events (created_at, event_type, processing_time_ms, success)
           SELECT now() + (i || ' milliseconds')::interval, 'request_completed', 120, true
           FROM generate_series(0, 600000, 100) AS i;
         INSERT INTO observability_events (event_type, details)
           VALUES ('circuit_breaker_state_change', '{\"state\": \"closed\"}');",
    )
    .await;
    let api_server = crate::support::api_server().await;
    let client = api_server.client();
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("events-db".into()),
            namespace: Some("clinic".into()),
            labels: Some([("tierguard.dev/usable".to_owned(), "true".to_owned())].into()),
            ..Default::default()
        },
        string_data: None,
        data: Some(
            [(
                "url".to_owned(),
                k8s_openapi::ByteString(reader_url(&pg).into_bytes()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), "clinic")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let tier = crate::support::tiers::tier(
        "sql-tier",
        "clinic",
        json!({"metrics": {
            "postgres": {"urlSecretRef": {"name": "events-db", "key": "url"}, "window": "5s"},
            "interval": "1s",
            "timeout": "800ms",
        }}),
    );
    let tiers: Api<MemoryTier> = Api::namespaced(client.clone(), "clinic");
    tiers.create(&PostParams::default(), &tier).await.unwrap();
    let run = {
        let client = client.clone();
        tokio::spawn(async move {
            tierguard::controller::run(
                client,
                RunConfig {
                    namespaces: vec!["clinic".into()],
                    selector: None,
                    metrics_addr: None,
                    lease: None,
                    instance: None,
                    concurrency: tierguard::controller::DEFAULT_CONCURRENCY,
                    destinations: crate::support::loopback(),
                    background: Default::default(),
                    shutdown_timeout: tierguard::controller::DEFAULT_SHUTDOWN_TIMEOUT,
                    status_refresh: crate::support::EVERY_TICK,
                },
            )
            .await
            .expect("the controller runs");
        })
    };
    // The first observation after `since` that satisfies `f`.
    let observed = |what: &'static str, since: jiff::Timestamp, f: fn(&Observation) -> bool| {
        let tiers = tiers.clone();
        async move {
            crate::support::wait_for(what, Duration::from_secs(30), || {
                let tiers = tiers.clone();
                async move {
                    let t = tiers.get("sql-tier").await.ok()?;
                    let o = t.status?.observed?;
                    (o.at.is_some_and(|at| at > since) && f(&o)).then_some(o)
                }
            })
            .await
        }
    };
    let pg_ok = |o: &Observation| o.sources.iter().any(|s| s.name == "postgres" && s.ok);
    let healthy = |o: &Observation| {
        o.sources.iter().any(|s| s.name == "postgres" && s.ok)
            && o.p50_latency_ms == Some(120.0)
            && o.breaker_state == Some(BreakerState::Closed)
    };
    let first = observed(
        "the signals from the table",
        jiff::Timestamp::now(),
        healthy,
    )
    .await;
    assert_eq!(first.error_rate_percent, Some(0.0));

    // The server ends every connection of the controller: the next observations still read.
    let ended = jiff::Timestamp::now();
    let rows = pg
        .client()
        .await
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'tierguard'",
            &[],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty(), "the controller holds connections");
    observed("a reading after the connections ended", ended, healthy).await;

    // The table is renamed away: a reason, no value.
    let renamed = jiff::Timestamp::now();
    pg.exec("ALTER TABLE observability_events RENAME TO observability_events_old")
        .await;
    let o = observed("the missing table in status", renamed, |o| {
        o.sources.iter().any(|s| {
            s.name == "postgres"
                && !s.ok
                && s.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("does not exist"))
        })
    })
    .await;
    assert_eq!(o.p50_latency_ms, None);
    assert_eq!(o.requests, None);
    assert!(
        o.unknown["p50LatencyMs"].contains("observability_events"),
        "{:?}",
        o.unknown
    );
    pg.exec("ALTER TABLE observability_events_old RENAME TO observability_events")
        .await;
    observed("the table back", jiff::Timestamp::now(), healthy).await;

    // The password changes under the controller and its connections end: a reason naming
    // authentication, without the password; then the Secret follows and it reads again.
    let changed = jiff::Timestamp::now();
    pg.exec(
        "ALTER ROLE reader PASSWORD 'rotated-Secret-2';
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'tierguard';",
    )
    .await;
    let o = observed("the failed authentication in status", changed, |o| {
        o.sources.iter().any(|s| {
            s.name == "postgres"
                && !s.ok
                && s.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("password authentication failed"))
        })
    })
    .await;
    assert_eq!(o.error_rate_percent, None);
    let status = serde_json::to_string(&tiers.get("sql-tier").await.unwrap().status).unwrap();
    assert!(!status.contains(READER_PASSWORD) && !status.contains("rotated-Secret-2"));
    let rotated = pg.url_for("reader", "rotated-Secret-2", "postgres");
    let mut secret = secret;
    secret.data = Some(
        [(
            "url".to_owned(),
            k8s_openapi::ByteString(rotated.into_bytes()),
        )]
        .into(),
    );
    secret.metadata.resource_version = None;
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), "clinic")
        .replace("events-db", &PostParams::default(), &secret)
        .await
        .unwrap();
    let back = observed("reading again with the rotated password", changed, |o| {
        o.sources.iter().any(|s| s.name == "postgres" && s.ok)
    })
    .await;
    assert!(
        pg_ok(&back) && back.p50_latency_ms == Some(120.0),
        "{back:?}"
    );
    run.abort();
}
