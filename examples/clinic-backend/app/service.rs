//! The request path: canary decision, the cache in front of the database, mem0 reads and shadow
//! writes for canary requests, session keys.
//!
//! A request is on the *canary* (the new code) with probability CANARY_SAMPLE_RATE. Canary
//! requests take the fast path when FAST_PATH_ENABLED (they skip the stable path's extra
//! work), read the clinic's memory from mem0 when MEM0_READS_ENABLED, and write a memory to mem0
//! in the background when MEM0_SHADOW_MODE. Stable requests never touch mem0.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::AppState;
use super::cache::{CacheKey, Item, Lookup, PutOutcome};
use super::db::DbError;
use super::events::Event;
use super::flags::Flags;
use super::mem0::ReadOutcome;
use super::metrics::{PathLabels, clinic};
use super::sessions;

/// The extra work of the stable path that the fast path skips.
const STABLE_PATH_OVERHEAD: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("injected canary failure (fault canary_error_rate)")]
    InjectedFailure,
}

impl ServiceError {
    pub fn status(&self) -> u16 {
        match self {
            ServiceError::Db(DbError::NoClinic(_) | DbError::NoProvider(..)) => 404,
            ServiceError::Db(DbError::Overloaded(_)) => 503,
            ServiceError::InjectedFailure => 500,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheStatus {
    Hit,
    Stale,
    Miss,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Stale => "stale",
            CacheStatus::Miss => "miss",
        }
    }
}

/// How a request was served; returned with the data so a caller can see every decision.
#[derive(Debug, Clone, Serialize)]
pub struct Served {
    pub canary: bool,
    pub fast_path: bool,
    pub cache: CacheStatus,
    /// The generation used, or none when Redis could not be read.
    pub generation: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<PutOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<ReadOutcome>,
    /// Whether a shadow write was started (false: dropped, too many in flight).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow_write: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub data: Value,
    pub served: Served,
}

/// Load an item from the database.
async fn load(state: &AppState, key: &CacheKey) -> Result<Value, ServiceError> {
    let value = match key.item {
        Item::Clinic => serde_json::to_value(state.db.clinic(key.clinic).await?),
        Item::Provider(p) => serde_json::to_value(state.db.provider(key.clinic, p).await?),
    };
    // Our own plain structs always serialize.
    Ok(value.unwrap_or(Value::Null))
}

/// The value of `key`, from the cache when it can, else from the database (then cached).
async fn fetch_through(
    state: &Arc<AppState>,
    key: CacheKey,
    flags: &Flags,
    canary: bool,
) -> Result<(Value, CacheStatus, Option<u64>, Option<PutOutcome>), ServiceError> {
    let metrics = &state.metrics;
    let generation = state.cache.generation().await.ok();
    if let Some(generation) = generation {
        match state.cache.get(&key, generation, flags).await {
            Ok(Lookup::Fresh(value)) => {
                metrics
                    .cache_hits
                    .get_or_create(&clinic(key.clinic, canary))
                    .inc();
                metrics.emit(|| Event::cache_access(key.clinic, true, canary));
                return Ok((value, CacheStatus::Hit, Some(generation), None));
            }
            Ok(Lookup::Stale(value)) => {
                metrics
                    .cache_hits
                    .get_or_create(&clinic(key.clinic, canary))
                    .inc();
                metrics.emit(|| Event::cache_access(key.clinic, true, canary));
                metrics.cache_stale_served.inc();
                if let Some(refresh) = state.cache.begin_refresh(&key, generation) {
                    let state = state.clone();
                    let flags = flags.clone();
                    tokio::spawn(async move {
                        if let Ok(value) = load(&state, &key).await {
                            let _ = state.cache.put(&key, generation, &value, &flags).await;
                        }
                        drop(refresh);
                    });
                }
                return Ok((value, CacheStatus::Stale, Some(generation), None));
            }
            // A Redis error was counted by the cache; the database answers instead.
            Ok(Lookup::Miss) | Err(_) => {}
        }
    }
    metrics
        .cache_misses
        .get_or_create(&clinic(key.clinic, canary))
        .inc();
    metrics.emit(|| Event::cache_access(key.clinic, false, canary));
    tracing::debug!(
        clinic_id = key.clinic,
        key = %key.redis_key(generation.unwrap_or(0)),
        "Cache miss"
    );
    let value = load(state, &key).await?;
    let put = match generation {
        Some(generation) => state.cache.put(&key, generation, &value, flags).await.ok(),
        None => None,
    };
    Ok((value, CacheStatus::Miss, generation, put))
}

/// A request's answer and the path that served it: `Some(true)` the canary, `Some(false)` the
/// stable path, `None` when it was refused before the path was chosen.
pub struct Handled {
    pub canary: Option<bool>,
    pub result: Result<Answer, ServiceError>,
}

/// Answer one clinic API request.
pub async fn serve(state: &Arc<AppState>, key: CacheKey) -> Handled {
    // Unknown ids are answered before any metric is labelled with them.
    let refused = if !state.db.exists(key.clinic) {
        Some(DbError::NoClinic(key.clinic))
    } else if let Item::Provider(p) = key.item
        && (p == 0 || p > super::db::provider_count(key.clinic))
    {
        Some(DbError::NoProvider(key.clinic, p))
    } else {
        None
    };
    if let Some(e) = refused {
        return Handled {
            canary: None,
            result: Err(e.into()),
        };
    }
    let loaded = state.flags.current();
    let canary = rand::random::<f64>() < loaded.flags.canary_sample_rate;
    Handled {
        canary: Some(canary),
        result: serve_on_path(state, key, &loaded.flags, canary).await,
    }
}

/// Answer a request on the canary path or the stable one.
async fn serve_on_path(
    state: &Arc<AppState>,
    key: CacheKey,
    flags: &Flags,
    canary: bool,
) -> Result<Answer, ServiceError> {
    let fast_path = canary && flags.fast_path_enabled;
    state
        .metrics
        .canary_requests
        .get_or_create(&PathLabels {
            path: if canary { "canary" } else { "stable" }.to_owned(),
        })
        .inc();
    let faults = state.request_faults();
    let added = faults.added_latency_ms(canary, fast_path);
    if added > 0 {
        tokio::time::sleep(Duration::from_millis(added)).await;
    }
    if canary && faults.canary_error_rate > 0.0 && rand::random::<f64>() < faults.canary_error_rate
    {
        return Err(ServiceError::InjectedFailure);
    }
    if !fast_path {
        tokio::time::sleep(STABLE_PATH_OVERHEAD).await;
    }

    let (data, cache, generation, cache_write) = fetch_through(state, key, flags, canary).await?;

    let memory = if canary && flags.mem0_reads_enabled {
        Some(state.mem0.read(key.clinic).await)
    } else {
        None
    };
    let shadow_write = if canary && flags.mem0_shadow_mode {
        let memory = format!("viewed {:?} of clinic {}", key.item, key.clinic);
        Some(state.mem0.shadow_write(key.clinic, memory))
    } else {
        None
    };
    let session = if rand::random::<f64>() < state.settings.session_rate {
        let ttl = (!faults.sessions_without_ttl).then_some(state.settings.session_ttl);
        let mut redis = state.cache.connection();
        match sessions::write_session(&mut redis, &state.metrics, key.clinic, ttl).await {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::warn!(error = %e, "session write failed");
                None
            }
        }
    } else {
        None
    };
    Ok(Answer {
        data,
        served: Served {
            canary,
            fast_path,
            cache,
            generation,
            cache_write,
            memory,
            shadow_write,
            session,
        },
    })
}

/// Warm one clinic: load it from the database and store it in the current generation.
pub async fn warm(state: &AppState, clinic_id: u32) -> Result<PutOutcome, String> {
    if !state.db.exists(clinic_id) {
        return Err(format!("clinic {clinic_id} does not exist"));
    }
    let loaded = state.flags.current();
    let generation = state.cache.generation().await.map_err(|e| e.to_string())?;
    let key = CacheKey::clinic(clinic_id);
    let value = load(state, &key).await.map_err(|e| e.to_string())?;
    let outcome = state
        .cache
        .put(&key, generation, &value, &loaded.flags)
        .await
        .map_err(|e| e.to_string())?;
    if matches!(outcome, PutOutcome::Yes { .. }) {
        state.metrics.cache_warmed.inc();
    }
    Ok(outcome)
}
