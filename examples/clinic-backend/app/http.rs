//! HTTP endpoints.
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /clinics/{id}` | a clinic (counted in the request metrics) |
//! | `GET /clinics/{id}/providers/{provider_id}` | one of its providers (counted too) |
//! | `GET /metrics` | Prometheus / OpenMetrics text |
//! | `GET /healthz` | `ok` |
//! | `GET /admin/flags` | the flags in force, the raw source, and the last reload error |
//! | `GET /admin/breaker` | the circuit breaker's state |
//! | `GET /admin/faults`, `POST /admin/faults` | fault switches (see `faults`) |
//! | `POST /admin/cache/warm` | `{"clinic_ids": [...]}`: load them into the cache |
//! | `POST /admin/cache/invalidate` | start a new cache generation |
//!
//! Every `POST /admin/...` needs `Authorization: Bearer <admin token>` (401 otherwise).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use super::cache::{CacheKey, PutOutcome};
use super::faults::FaultsUpdate;
use super::metrics::CONTENT_TYPE;
use super::service::{self, ServiceError};
use super::sessions::{self, LeakReport};

/// Clinics per warm request, at most.
pub const MAX_WARM_CLINICS: usize = 1000;
/// Clinics warmed at the same time.
const WARM_CONCURRENCY: usize = 4;

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/clinics/{id}", get(get_clinic))
        .route("/clinics/{id}/providers/{provider_id}", get(get_provider))
        .layer(middleware::from_fn_with_state(state.clone(), track));
    Router::new()
        .merge(api)
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/admin/flags", get(flags))
        .route("/admin/breaker", get(breaker))
        .route("/admin/faults", get(get_faults).post(post_faults))
        .route("/admin/cache/warm", post(warm))
        .route("/admin/cache/invalidate", post(invalidate))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    ApiError(status, message.into()).into_response()
}

/// An error answer: the status and a message, as `{"error": "..."}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({"error": self.1}))).into_response()
    }
}

/// Request count and duration of the clinic API.
async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    let cohort = response.extensions().get::<ServedBy>().map(|s| s.0);
    state.metrics.observe_request(
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
        cohort,
    );
    response
}

/// Which path served a clinic API request (true: the canary), for the request metrics.
#[derive(Clone, Copy)]
struct ServedBy(bool);

fn answer(handled: service::Handled) -> Response {
    let mut response = answer_result(handled.result);
    if let Some(canary) = handled.canary {
        response.extensions_mut().insert(ServedBy(canary));
    }
    response
}

fn answer_result(result: Result<service::Answer, ServiceError>) -> Response {
    match result {
        Ok(answer) => {
            let cache = answer.served.cache.as_str();
            let canary = if answer.served.canary {
                "true"
            } else {
                "false"
            };
            let mut response = axum::Json(answer).into_response();
            let headers = response.headers_mut();
            headers.insert("x-cache", HeaderValue::from_static(cache));
            headers.insert("x-canary", HeaderValue::from_static(canary));
            response
        }
        Err(e) => error(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.to_string(),
        ),
    }
}

async fn get_clinic(State(state): State<Arc<AppState>>, Path(id): Path<u32>) -> Response {
    answer(service::serve(&state, CacheKey::clinic(id)).await)
}

async fn get_provider(
    State(state): State<Arc<AppState>>,
    Path((id, provider)): Path<(u32, u32)>,
) -> Response {
    answer(service::serve(&state, CacheKey::provider(id, provider)).await)
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}

#[derive(Serialize)]
struct FlagsView<'a> {
    source: &'a std::path::Path,
    /// Why the source could not be applied at the last attempt; the flags in force are the
    /// previous ones meanwhile.
    last_error: Option<String>,
    #[serde(flatten)]
    loaded: &'a super::flags::Loaded,
}

async fn flags(State(state): State<Arc<AppState>>) -> Response {
    let loaded = state.flags.current();
    axum::Json(FlagsView {
        source: state.flags.path(),
        last_error: state.flags.last_error(),
        loaded: &loaded,
    })
    .into_response()
}

async fn breaker(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(state.mem0.breaker().snapshot()).into_response()
}

/// Compare without stopping at the first difference, so timing does not reveal the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(token) if same(token.as_bytes(), state.admin_token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "wrong admin token".into(),
        )),
        None => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Bearer <admin token>".into(),
        )),
    }
}

/// Parse a JSON body; the message names the field that is wrong.
fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let message = if path == "." {
            format!("body: {}", e.inner())
        } else {
            format!("body: {path}: {}", e.inner())
        };
        ApiError(StatusCode::BAD_REQUEST, message)
    })
}

#[derive(Serialize)]
struct FaultsView {
    mem0_outage: bool,
    mem0_latency_ms: u64,
    db_latency_ms: u64,
    large_values: std::collections::BTreeMap<u32, usize>,
    #[serde(flatten)]
    request: super::faults::RequestFaults,
    #[serde(skip_serializing_if = "Option::is_none")]
    leak: Option<LeakReport>,
}

fn faults_view(state: &AppState, leak: Option<LeakReport>) -> FaultsView {
    let mem0 = state.mem0.fake();
    FaultsView {
        mem0_outage: mem0.outage(),
        mem0_latency_ms: mem0.added_latency_ms(),
        db_latency_ms: state.db.latency_ms(),
        large_values: state.db.large_values(),
        request: state.request_faults(),
        leak,
    }
}

async fn get_faults(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(faults_view(&state, None)).into_response()
}

async fn post_faults(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(denied) = authorize(&state, &headers) {
        return denied.into_response();
    }
    let update: FaultsUpdate = match parse_body(&body) {
        Ok(u) => u,
        Err(bad) => return bad.into_response(),
    };
    if let Err(message) = update.validate() {
        return error(StatusCode::BAD_REQUEST, format!("body: {message}"));
    }
    let mem0 = state.mem0.fake();
    if update.reset {
        mem0.set_outage(false);
        mem0.set_added_latency(0);
        state
            .db
            .set_latency_ms(state.settings.db_latency.as_millis() as u64);
        state.db.set_large_values(Default::default());
        state.update_request_faults(|f| *f = Default::default());
    }
    if let Some(on) = update.mem0_outage {
        mem0.set_outage(on);
    }
    if let Some(ms) = update.mem0_latency_ms {
        mem0.set_added_latency(ms);
    }
    if let Some(ms) = update.db_latency_ms {
        state.db.set_latency_ms(ms);
    }
    if let Some(large) = &update.large_values {
        let map = match large {
            Some(l) if l.bytes > 0 => l
                .clinic_ids
                .iter()
                .map(|id| (*id, l.bytes as usize))
                .collect(),
            _ => Default::default(),
        };
        state.db.set_large_values(map);
    }
    state.update_request_faults(|f| {
        if let Some(ms) = update.request_latency_ms {
            f.request_latency_ms = ms;
        }
        if let Some(scope) = update.request_latency_scope {
            f.request_latency_scope = scope;
        }
        if let Some(rate) = update.canary_error_rate {
            f.canary_error_rate = rate;
        }
        if let Some(on) = update.sessions_without_ttl {
            f.sessions_without_ttl = on;
        }
    });
    let leak = match &update.leak {
        Some(leak) => {
            let mut redis = state.cache.connection();
            Some(sessions::leak(&mut redis, leak).await)
        }
        None => None,
    };
    let view = faults_view(&state, leak);
    tracing::warn!(faults = %serde_json::to_string(&view).unwrap_or_default(), "fault switches changed");
    axum::Json(view).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WarmRequest {
    clinic_ids: Vec<u32>,
}

#[derive(Serialize)]
struct WarmFailure {
    clinic_id: u32,
    reason: String,
}

#[derive(Serialize)]
struct WarmResponse {
    warmed: Vec<u32>,
    failed: Vec<WarmFailure>,
    generation: Option<u64>,
}

/// 200 when every clinic was warmed; 422 when the only failures are clinics that do not exist;
/// 503 when Redis or the database failed (worth retrying). The body lists each clinic either way.
async fn warm(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(denied) = authorize(&state, &headers) {
        return denied.into_response();
    }
    let request: WarmRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(bad) => return bad.into_response(),
    };
    if request.clinic_ids.is_empty() || request.clinic_ids.len() > MAX_WARM_CLINICS {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "body: clinic_ids: {} ids given, expected 1 to {MAX_WARM_CLINICS}",
                request.clinic_ids.len()
            ),
        );
    }
    let mut ids = request.clinic_ids.clone();
    ids.sort_unstable();
    ids.dedup();
    let results: Vec<(u32, Result<PutOutcome, String>)> = futures::stream::iter(ids)
        .map(|id| {
            let state = state.clone();
            async move { (id, service::warm(&state, id).await) }
        })
        .buffer_unordered(WARM_CONCURRENCY)
        .collect()
        .await;
    let mut response = WarmResponse {
        warmed: Vec::new(),
        failed: Vec::new(),
        generation: state.cache.generation().await.ok(),
    };
    let mut transient = false;
    for (id, result) in results {
        match result {
            Ok(PutOutcome::Yes { .. }) => response.warmed.push(id),
            Ok(other) => response.failed.push(WarmFailure {
                clinic_id: id,
                reason: format!(
                    "not stored: {}",
                    serde_json::to_string(&other).unwrap_or_default()
                ),
            }),
            Err(reason) => {
                transient |= state.db.exists(id);
                response.failed.push(WarmFailure {
                    clinic_id: id,
                    reason,
                });
            }
        }
    }
    response.warmed.sort_unstable();
    response.failed.sort_by_key(|f| f.clinic_id);
    tracing::info!(
        warmed = ?response.warmed,
        failed = response.failed.len(),
        requested = ?request.clinic_ids,
        "cache warm"
    );
    let status = if response.failed.is_empty() {
        StatusCode::OK
    } else if transient {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    (status, axum::Json(response)).into_response()
}

async fn invalidate(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = authorize(&state, &headers) {
        return denied.into_response();
    }
    match state.cache.invalidate().await {
        Ok(generation) => axum::Json(json!({"generation": generation})).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
