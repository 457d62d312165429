//! Session keys (`session:{uuid}`), the OOM runbook's non-critical pattern, and the leak fault
//! that writes keys without a TTL.

use std::time::Duration;

use rand::RngExt;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use super::metrics::{Metrics, TtlLabels};

/// Keys per pipeline when leaking.
const LEAK_BATCH: usize = 500;
/// Bounds of one leak request.
pub const LEAK_MAX_KEYS: u64 = 1_000_000;
pub const LEAK_MAX_VALUE_BYTES: u64 = 1024 * 1024;
pub const LEAK_MAX_TOTAL_BYTES: u64 = 1024 * 1024 * 1024;

pub fn new_id() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rand::rng().random()).into_uuid()
}

/// Write one session key; without `ttl` it never expires (the leak).
pub async fn write_session(
    redis: &mut ConnectionManager,
    metrics: &Metrics,
    clinic: u32,
    ttl: Option<Duration>,
) -> Result<String, redis::RedisError> {
    let key = format!("session:{}", new_id());
    let value = serde_json::json!({
        "clinic_id": clinic,
        "created_ms": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        "cart": [],
        "locale": "en",
    })
    .to_string();
    let mut cmd = redis::cmd("SET");
    cmd.arg(&key).arg(value);
    if let Some(ttl) = ttl {
        cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
    }
    let () = cmd.query_async(redis).await?;
    metrics
        .session_writes
        .get_or_create(&TtlLabels {
            ttl: if ttl.is_some() { "yes" } else { "no" }.to_owned(),
        })
        .inc();
    Ok(key)
}

/// A request to leak keys.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Leak {
    pub keys: u64,
    pub value_bytes: u64,
    /// Key prefix; the key is the prefix followed by a UUID. Default `session:`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn default_prefix() -> String {
    "session:".to_owned()
}

impl Leak {
    pub fn validate(&self) -> Result<(), String> {
        if self.keys == 0 || self.keys > LEAK_MAX_KEYS {
            return Err(format!(
                "leak.keys: {} is not within 1..={LEAK_MAX_KEYS}",
                self.keys
            ));
        }
        if self.value_bytes > LEAK_MAX_VALUE_BYTES {
            return Err(format!(
                "leak.value_bytes: {} is more than {LEAK_MAX_VALUE_BYTES}",
                self.value_bytes
            ));
        }
        if self.keys.saturating_mul(self.value_bytes) > LEAK_MAX_TOTAL_BYTES {
            return Err(format!(
                "leak: {} keys × {} bytes is more than {LEAK_MAX_TOTAL_BYTES} bytes",
                self.keys, self.value_bytes
            ));
        }
        if self.prefix.is_empty()
            || self.prefix.len() > 64
            || self
                .prefix
                .contains(|c: char| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "leak.prefix: {:?} must be 1 to 64 characters without spaces",
                self.prefix
            ));
        }
        Ok(())
    }
}

/// What a leak wrote.
#[derive(Debug, Clone, Serialize)]
pub struct LeakReport {
    pub requested: u64,
    pub written: u64,
    /// The Redis error that stopped it early (e.g. OOM), if any.
    pub error: Option<String>,
}

/// Write `leak.keys` keys without TTL, in pipelines; stops at the first Redis error.
/// `written` counts whole batches written before the error.
pub async fn leak(redis: &mut ConnectionManager, leak: &Leak) -> LeakReport {
    let value = "L".repeat(leak.value_bytes as usize);
    let mut written = 0u64;
    while written < leak.keys {
        let batch = (leak.keys - written).min(LEAK_BATCH as u64);
        let mut pipe = redis::pipe();
        for _ in 0..batch {
            pipe.set(format!("{}{}", leak.prefix, new_id()), &value)
                .ignore();
        }
        if let Err(e) = pipe.query_async::<()>(redis).await {
            tracing::warn!(written, error = %e, "leak fault stopped by a Redis error");
            return LeakReport {
                requested: leak.keys,
                written,
                error: Some(e.to_string()),
            };
        }
        written += batch;
    }
    tracing::warn!(written, prefix = %leak.prefix, "leak fault: wrote keys without TTL");
    LeakReport {
        requested: leak.keys,
        written,
        error: None,
    }
}
