//! The runbooks' `observability_events`: with `--events-postgres URL`, every request, cache
//! lookup, mem0 write and breaker change is also written as a row of that table (the contract of
//! docs/metrics.md), so tierguard can read the service from PostgreSQL instead of Prometheus.
//!
//! Events go through a bounded queue to one writer task that inserts them in batches (one
//! `INSERT ... SELECT FROM unnest(...)` per batch); when the database is slow or down the queue
//! fills and further events are dropped and counted, so a request never waits on the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

/// Events waiting for the writer, at most.
const QUEUE: usize = 50_000;
/// Rows in one INSERT, at most.
const BATCH: usize = 2_000;
/// How long the writer gathers a batch.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// One row of the table.
#[derive(Clone, Debug)]
pub struct Event {
    /// Seconds since the epoch, when it happened.
    pub at: f64,
    pub event_type: &'static str,
    pub clinic_id: Option<String>,
    pub processing_time_ms: Option<f64>,
    pub success: Option<bool>,
    pub cache_hit: Option<bool>,
    pub details: serde_json::Value,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn with_cohort(canary: Option<bool>) -> serde_json::Value {
    match canary {
        Some(true) => serde_json::json!({"cohort": "canary"}),
        Some(false) => serde_json::json!({"cohort": "stable"}),
        None => serde_json::json!({}),
    }
}

impl Event {
    /// A clinic API request answered (a 5xx is a failure).
    pub fn request(status: u16, seconds: f64, canary: Option<bool>) -> Self {
        Event {
            at: now(),
            event_type: "request_completed",
            clinic_id: None,
            processing_time_ms: Some(seconds * 1000.0),
            success: Some(status < 500),
            cache_hit: None,
            details: with_cohort(canary),
        }
    }

    /// One cache lookup for a clinic.
    pub fn cache_access(clinic: u32, hit: bool, canary: bool) -> Self {
        Event {
            at: now(),
            event_type: "cache_access",
            clinic_id: Some(clinic.to_string()),
            processing_time_ms: None,
            success: None,
            cache_hit: Some(hit),
            details: with_cohort(Some(canary)),
        }
    }

    /// One write to mem0.
    pub fn mem0_write(success: bool, canary: bool) -> Self {
        Event {
            at: now(),
            event_type: "mem0_write",
            clinic_id: None,
            processing_time_ms: None,
            success: Some(success),
            cache_hit: None,
            details: with_cohort(Some(canary)),
        }
    }

    /// The breaker changed state.
    pub fn breaker_change(breaker: &str, state: &str, failure_count: u32) -> Self {
        Event {
            at: now(),
            event_type: "circuit_breaker_state_change",
            clinic_id: None,
            processing_time_ms: None,
            success: None,
            cache_hit: None,
            details: serde_json::json!({
                "breaker": breaker, "state": state, "failure_count": failure_count,
            }),
        }
    }
}

/// Where events are queued for the writer.
#[derive(Debug, Clone)]
pub struct EventSink {
    queue: mpsc::Sender<Event>,
    dropped: Arc<AtomicU64>,
}

impl EventSink {
    /// Queue an event; dropped (and counted) when the queue is full.
    pub fn send(&self, event: Event) {
        if self.queue.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The table's definition (docs/metrics.md), created when missing.
pub fn create_table_sql(table: &str) -> String {
    let index = format!("{}_type_time", table.replace('.', "_"));
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (
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
        CREATE INDEX IF NOT EXISTS {index} ON {table} (event_type, created_at);"
    )
}

/// Connect, create the table when missing, and start the writer.
pub async fn start(url: &str, table: &str) -> anyhow::Result<EventSink> {
    anyhow::ensure!(
        !table.is_empty()
            && table
                .split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')),
        "--events-table {table:?}: letters, digits and _ (schema.table allowed)"
    );
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the events database: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "the events database connection ended");
        }
    });
    client
        .batch_execute(&create_table_sql(table))
        .await
        .map_err(|e| anyhow::anyhow!("cannot create {table}: {e}"))?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let sink = EventSink {
        queue: tx,
        dropped: Arc::new(AtomicU64::new(0)),
    };
    tokio::spawn(write(client, table.to_owned(), rx, sink.dropped.clone()));
    tracing::info!(table, "writing events to PostgreSQL");
    Ok(sink)
}

async fn write(
    client: tokio_postgres::Client,
    table: String,
    mut rx: mpsc::Receiver<Event>,
    dropped: Arc<AtomicU64>,
) {
    let mut dropped_told = 0;
    let sql = format!(
        "INSERT INTO {table} (created_at, event_type, clinic_id, processing_time_ms, success, cache_hit, details)
         SELECT to_timestamp(at), event_type, clinic_id, ms, success, cache_hit, details::jsonb
         FROM unnest($1::float8[], $2::text[], $3::text[], $4::float8[], $5::bool[], $6::bool[], $7::text[])
           AS e(at, event_type, clinic_id, ms, success, cache_hit, details)"
    );
    let mut batch: Vec<Event> = Vec::with_capacity(BATCH);
    loop {
        let Some(first) = rx.recv().await else {
            return;
        };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) => batch.push(e),
                Ok(None) | Err(_) => break,
            }
        }
        let at: Vec<f64> = batch.iter().map(|e| e.at).collect();
        let types: Vec<&str> = batch.iter().map(|e| e.event_type).collect();
        let clinics: Vec<Option<&str>> = batch.iter().map(|e| e.clinic_id.as_deref()).collect();
        let ms: Vec<Option<f64>> = batch.iter().map(|e| e.processing_time_ms).collect();
        let success: Vec<Option<bool>> = batch.iter().map(|e| e.success).collect();
        let hits: Vec<Option<bool>> = batch.iter().map(|e| e.cache_hit).collect();
        let details: Vec<String> = batch.iter().map(|e| e.details.to_string()).collect();
        if let Err(e) = client
            .execute(
                &sql,
                &[&at, &types, &clinics, &ms, &success, &hits, &details],
            )
            .await
        {
            tracing::warn!(error = %e, rows = batch.len(), "cannot write events");
        }
        batch.clear();
        let now_dropped = dropped.load(Ordering::Relaxed);
        if now_dropped > dropped_told {
            tracing::warn!(
                dropped = now_dropped,
                "events dropped: the queue to PostgreSQL was full"
            );
            dropped_told = now_dropped;
        }
    }
}
