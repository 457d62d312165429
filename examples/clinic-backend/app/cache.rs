//! The Redis cache in front of the database.
//!
//! Keys follow the runbooks' generation scheme: `cache:clinic:{id}:generation:{gen}` (and
//! `cache:clinic:{id}:provider:{p}:generation:{gen}`), the current generation being the value of
//! `cache:current_generation`. Bumping the generation invalidates everything at once; the old
//! generation's keys stay until they expire, which is what the OOM runbook cleans up.
//!
//! A value is stored as `{"fresh_until_ms": …, "value": …}` with a Redis expiry of
//! CACHE_TTL + a random jitter up to CACHE_TTL_JITTER, plus CACHE_STALE_TTL when
//! CACHE_SERVE_STALE is on: past `fresh_until_ms` such a copy is *stale* and may be served while
//! one request refreshes it.
//!
//! MAX_CLINIC_CACHE_ITEMS is enforced with a set per clinic and generation
//! (`cache:clinic:{id}:items:generation:{gen}`) that lives as long as the longest possible item;
//! it may count an item that already expired until the set itself expires.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngExt;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::flags::Flags;
use super::metrics::{Metrics, OpLabels};

/// Holds the current cache generation.
pub const GENERATION_KEY: &str = "cache:current_generation";
/// Stale copies refreshed at the same time, at most.
const MAX_REFRESHES: usize = 16;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("redis: {0}")]
pub struct CacheError(pub String);

impl From<redis::RedisError> for CacheError {
    fn from(e: redis::RedisError) -> Self {
        CacheError(e.to_string())
    }
}

/// What is cached for a clinic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Item {
    Clinic,
    Provider(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub clinic: u32,
    pub item: Item,
}

impl CacheKey {
    pub fn clinic(clinic: u32) -> Self {
        CacheKey {
            clinic,
            item: Item::Clinic,
        }
    }

    pub fn provider(clinic: u32, provider: u32) -> Self {
        CacheKey {
            clinic,
            item: Item::Provider(provider),
        }
    }

    pub fn redis_key(&self, generation: u64) -> String {
        match self.item {
            Item::Clinic => format!("cache:clinic:{}:generation:{generation}", self.clinic),
            Item::Provider(p) => format!(
                "cache:clinic:{}:provider:{p}:generation:{generation}",
                self.clinic
            ),
        }
    }

    fn index_key(&self, generation: u64) -> String {
        format!("cache:clinic:{}:items:generation:{generation}", self.clinic)
    }

    fn member(&self) -> String {
        match self.item {
            Item::Clinic => "clinic".to_owned(),
            Item::Provider(p) => format!("provider:{p}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Fresh(Value),
    Stale(Value),
    Miss,
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "stored", rename_all = "snake_case")]
pub enum PutOutcome {
    /// Stored with this Redis expiry.
    Yes { expiry_ms: u64 },
    /// Not stored: larger than MAX_CACHE_VALUE_SIZE.
    TooLarge { bytes: usize, max: u64 },
    /// Not stored: the clinic holds MAX_CLINIC_CACHE_ITEMS already.
    ClinicFull { max: u64 },
    /// Not stored: CACHE_TTL is 0.
    Disabled,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Envelope {
    fresh_until_ms: u64,
    value: Value,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub struct Cache {
    redis: ConnectionManager,
    metrics: Arc<Metrics>,
    refreshing: Arc<Mutex<HashSet<String>>>,
    refresh_slots: Arc<Semaphore>,
}

/// The right to refresh one stale key; the key is free again when dropped.
pub struct Refresh {
    key: String,
    refreshing: Arc<Mutex<HashSet<String>>>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Refresh {
    fn drop(&mut self) {
        self.refreshing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

impl Cache {
    pub fn new(redis: ConnectionManager, metrics: Arc<Metrics>) -> Self {
        Cache {
            redis,
            metrics,
            refreshing: Arc::default(),
            refresh_slots: Arc::new(Semaphore::new(MAX_REFRESHES)),
        }
    }

    pub fn connection(&self) -> ConnectionManager {
        self.redis.clone()
    }

    fn count_error(&self, op: &str, e: &CacheError) {
        self.metrics
            .cache_errors
            .get_or_create(&OpLabels { op: op.to_owned() })
            .inc();
        tracing::warn!(op, error = %e, "cache operation failed");
    }

    /// The current generation, created as 1 when Redis has none (a fresh or restarted Redis).
    pub async fn generation(&self) -> Result<u64, CacheError> {
        let result = async {
            let mut redis = self.redis.clone();
            let current: Option<String> = redis.get(GENERATION_KEY).await?;
            let text = match current {
                Some(text) => text,
                None => {
                    let _: bool = redis.set_nx(GENERATION_KEY, 1).await?;
                    let again: Option<String> = redis.get(GENERATION_KEY).await?;
                    again.unwrap_or_else(|| "1".to_owned())
                }
            };
            text.parse::<u64>().map_err(|_| {
                CacheError(format!(
                    "{GENERATION_KEY} holds {text:?}, not a whole number"
                ))
            })
        }
        .await;
        if let Err(e) = &result {
            self.count_error("get", e);
        }
        result
    }

    /// Start a new generation: every cached value is a miss from now on.
    pub async fn invalidate(&self) -> Result<u64, CacheError> {
        self.generation().await?;
        let mut redis = self.redis.clone();
        let next: u64 = redis.incr(GENERATION_KEY, 1).await?;
        tracing::info!(generation = next, "cache_invalidate: new cache generation");
        Ok(next)
    }

    /// Look a value up. A Redis error is returned (and counted); callers treat it as a miss.
    pub async fn get(
        &self,
        key: &CacheKey,
        generation: u64,
        flags: &Flags,
    ) -> Result<Lookup, CacheError> {
        let mut redis = self.redis.clone();
        let redis_key = key.redis_key(generation);
        let stored: Option<String> = match redis.get(&redis_key).await {
            Ok(v) => v,
            Err(e) => {
                let e = CacheError::from(e);
                self.count_error("get", &e);
                return Err(e);
            }
        };
        let Some(text) = stored else {
            return Ok(Lookup::Miss);
        };
        let Ok(envelope) = serde_json::from_str::<Envelope>(&text) else {
            // Not ours (or truncated): a miss, and the write that follows replaces it.
            tracing::warn!(key = %redis_key, "unreadable cache value; treated as a miss");
            return Ok(Lookup::Miss);
        };
        if now_ms() < envelope.fresh_until_ms {
            Ok(Lookup::Fresh(envelope.value))
        } else if flags.cache_serve_stale {
            Ok(Lookup::Stale(envelope.value))
        } else {
            Ok(Lookup::Miss)
        }
    }

    /// Store a value under the flags in force.
    pub async fn put(
        &self,
        key: &CacheKey,
        generation: u64,
        value: &Value,
        flags: &Flags,
    ) -> Result<PutOutcome, CacheError> {
        let bytes = value.to_string().len();
        if bytes as u64 > flags.max_cache_value_size {
            self.metrics.cache_values_too_large.inc();
            tracing::warn!(
                clinic_id = key.clinic,
                "Cache value too large: {bytes} bytes (MAX_CACHE_VALUE_SIZE={})",
                flags.max_cache_value_size
            );
            return Ok(PutOutcome::TooLarge {
                bytes,
                max: flags.max_cache_value_size,
            });
        }
        let ttl_ms = flags.cache_ttl.as_millis() as u64;
        if ttl_ms == 0 {
            return Ok(PutOutcome::Disabled);
        }
        let jitter_max = flags.cache_ttl_jitter.as_millis() as u64;
        let jitter = if jitter_max == 0 {
            0
        } else {
            rand::rng().random_range(0..=jitter_max)
        };
        let fresh_ms = ttl_ms + jitter;
        let stale_ms = if flags.cache_serve_stale {
            flags.cache_stale_ttl.as_millis() as u64
        } else {
            0
        };
        let expiry_ms = fresh_ms + stale_ms;
        let longest_ms = ttl_ms + jitter_max + stale_ms;
        let envelope = serde_json::to_string(&Envelope {
            fresh_until_ms: now_ms() + fresh_ms,
            value: value.clone(),
        })
        .map_err(|e| CacheError(e.to_string()))?;

        let result = async {
            let mut redis = self.redis.clone();
            let index = key.index_key(generation);
            let member = key.member();
            let (count, present): (u64, bool) = redis::pipe()
                .scard(&index)
                .sismember(&index, &member)
                .query_async(&mut redis)
                .await?;
            if !present && count >= flags.max_clinic_cache_items {
                return Ok(PutOutcome::ClinicFull {
                    max: flags.max_clinic_cache_items,
                });
            }
            let () = redis::pipe()
                .pset_ex(key.redis_key(generation), envelope, expiry_ms)
                .ignore()
                .sadd(&index, &member)
                .ignore()
                .pexpire(&index, longest_ms as i64)
                .ignore()
                .query_async(&mut redis)
                .await?;
            Ok(PutOutcome::Yes { expiry_ms })
        }
        .await;
        match &result {
            Ok(PutOutcome::ClinicFull { max }) => {
                self.metrics.cache_items_limited.inc();
                tracing::warn!(
                    clinic_id = key.clinic,
                    "Cache item not stored: clinic holds {max} items (MAX_CLINIC_CACHE_ITEMS)"
                );
            }
            Err(e) => self.count_error("set", e),
            _ => {}
        }
        result
    }

    /// Claim the refresh of a stale key; `None` if another request refreshes it already or too
    /// many refreshes run.
    pub fn begin_refresh(&self, key: &CacheKey, generation: u64) -> Option<Refresh> {
        let redis_key = key.redis_key(generation);
        let slot = self.refresh_slots.clone().try_acquire_owned().ok()?;
        let mut refreshing = self.refreshing.lock().unwrap_or_else(|p| p.into_inner());
        if !refreshing.insert(redis_key.clone()) {
            return None;
        }
        Some(Refresh {
            key: redis_key,
            refreshing: self.refreshing.clone(),
            _slot: slot,
        })
    }
}

/// Connect to Redis with short timeouts, so a Redis that is down or restarting makes requests
/// fall through to the database instead of hanging; the manager reconnects by itself.
pub async fn connect(url: &str) -> Result<ConnectionManager, CacheError> {
    let client = redis::Client::open(url).map_err(CacheError::from)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_millis(1000)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_with_config(client, config)
        .await
        .map_err(CacheError::from)
}
