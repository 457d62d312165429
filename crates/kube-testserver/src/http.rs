//! The HTTP face of the server: Kubernetes API paths, query parameters and content types, JSON and
//! `Status` responses, streamed watches, the request log and injected faults.
//!
//! Watch is faithful to what clients rely on: one JSON event per line (`ADDED`, `MODIFIED`,
//! `DELETED`, `BOOKMARK`, `ERROR`); an object that starts or stops matching the selectors arrives
//! as ADDED or DELETED; a resourceVersion older than the kept history gets HTTP 200 with one
//! `ERROR` event carrying a 410 `Expired` Status, as from a real server; `timeoutSeconds` ends the
//! stream; `allowWatchBookmarks` adds a BOOKMARK every bookmark interval and one before the
//! stream ends; `sendInitialEvents` ends the initial ADDED events with the
//! `k8s.io/initial-events-end` bookmark. Unlike a real server no authentication or authorization is
//! enforced: a bearer token is only recorded as the request's user.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use super::error::ApiError;
use super::kinds::{self, Kind};
use super::selector::{FieldSelector, LabelSelector, Selectors};
use super::store::{Change, DeleteOptions, ListRequest, Patch, Store, Subresource, WriteOptions};

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: String,
    pub field_manager: Option<String>,
    pub content_type: Option<String>,
    /// The bearer token, which the tests use as the caller's identity.
    pub user: Option<String>,
    pub user_agent: Option<String>,
    pub watch: bool,
    /// The response code (for a watch: when the stream started); 0 while unanswered.
    pub status: u16,
    /// Answered by an injected fault.
    pub injected: bool,
    /// Asked for metadata only (`PartialObjectMetadata`): no data or spec came back.
    pub metadata_only: bool,
}

impl RequestRecord {
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }
}

/// How many writes the server received, by what they wrote.
#[derive(Default)]
pub struct WriteCounter {
    total: AtomicU64,
    status: AtomicU64,
    events: AtomicU64,
}

/// A snapshot of [`WriteCounter`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteCounts {
    /// Every POST, PUT, PATCH and DELETE.
    pub total: u64,
    /// Writes of a `/status` subresource.
    pub status: u64,
    /// Writes of Events (core or events.k8s.io).
    pub events: u64,
}

impl WriteCounter {
    fn count(&self, record: &RequestRecord) {
        if !record.is_write() {
            return;
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        let path = record.path.trim_end_matches('/');
        if path.ends_with("/status") {
            self.status.fetch_add(1, Ordering::Relaxed);
        }
        if path.contains("/events") {
            self.events.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> WriteCounts {
        WriteCounts {
            total: self.total.load(Ordering::Relaxed),
            status: self.status.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
        }
    }
}

/// What an injected fault does to a matching request.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultAction {
    /// Answer with this HTTP code and a matching `Status` body, without touching the store.
    Fail(u16),
    /// Answer with this HTTP code and a body of this many bytes that is not a `Status` (a proxy's
    /// error page gone wrong).
    FailHuge(u16, usize),
    /// Wait this long, then serve the request normally.
    Delay(Duration),
}

/// A fault for the next `remaining` requests whose method (if given), path prefix, query (if
/// given: it must contain the text), caller (if given: the bearer token) and body match.
#[derive(Clone, Debug)]
pub struct Fault {
    pub method: Option<String>,
    pub path_prefix: String,
    pub query_contains: Option<String>,
    pub user: Option<String>,
    /// The request body must contain this text (e.g. `"phase":"RollingBack"` to fail the one
    /// status write that carries a decision).
    pub body_contains: Option<String>,
    pub remaining: usize,
    pub action: FaultAction,
}

impl Fault {
    /// A fault for every request of every caller (narrow it with the fields).
    pub fn new(action: FaultAction, remaining: usize) -> Fault {
        Fault {
            method: None,
            path_prefix: "/".to_string(),
            query_contains: None,
            user: None,
            body_contains: None,
            remaining,
            action,
        }
    }

    fn matches(&self, r: &Matched<'_>) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(r.method))
            && r.path.starts_with(&self.path_prefix)
            && self
                .query_contains
                .as_deref()
                .is_none_or(|q| r.query.contains(q))
            && self.user.as_deref().is_none_or(|u| Some(u) == r.user)
            && self
                .body_contains
                .as_deref()
                .is_none_or(|b| r.body.windows(b.len().max(1)).any(|w| w == b.as_bytes()))
    }
}

/// What a fault is matched on.
struct Matched<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    user: Option<&'a str>,
    body: &'a [u8],
}

pub struct App {
    pub store: Mutex<Store>,
    pub log: Mutex<Vec<RequestRecord>>,
    /// Writes counted since the start, kept apart from the log (which a long run clears).
    pub writes: WriteCounter,
    pub faults: Mutex<Vec<Fault>>,
    pub shutdown: watch::Receiver<bool>,
    /// Bumped to end every open watch at once (a restart, a load balancer's idle timeout).
    pub dropped: watch::Sender<u64>,
    pub bookmark_interval: Duration,
    pub address: SocketAddr,
}

impl App {
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn take_fault(&self, request: &Matched<'_>) -> Option<FaultAction> {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let index = faults
            .iter()
            .position(|f| f.remaining > 0 && f.matches(request))?;
        faults[index].remaining -= 1;
        let action = faults[index].action.clone();
        if faults[index].remaining == 0 {
            faults.remove(index);
        }
        Some(action)
    }
}

pub fn router(app: Arc<App>) -> Router {
    Router::new().fallback(handle).with_state(app)
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn is_true(value: Option<&String>) -> bool {
    value.is_some_and(|v| v == "true" || v == "1")
}

async fn handle(State(app): State<Arc<App>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let query: HashMap<String, String> = Query::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let record = RequestRecord {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        field_manager: query.get("fieldManager").cloned(),
        content_type: header_text(&parts.headers, header::CONTENT_TYPE),
        user: header_text(&parts.headers, header::AUTHORIZATION)
            .and_then(|auth| auth.strip_prefix("Bearer ").map(str::to_string)),
        user_agent: header_text(&parts.headers, header::USER_AGENT),
        watch: is_true(query.get("watch")),
        status: 0,
        injected: false,
        metadata_only: header_text(&parts.headers, header::ACCEPT)
            .is_some_and(|accept| accept.contains("as=PartialObjectMetadata")),
    };
    let user = record.user.clone();
    app.writes.count(&record);
    let index = {
        let mut log = app.log.lock().unwrap_or_else(|p| p.into_inner());
        log.push(record);
        log.len() - 1
    };
    let body = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(body) => body,
        Err(e) => {
            return error_response(&ApiError::bad_request(format!(
                "reading the request body: {e}"
            )));
        }
    };
    let fault = app.take_fault(&Matched {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or_default(),
        user: user.as_deref(),
        body: &body,
    });
    let injected = matches!(
        fault,
        Some(FaultAction::Fail(_) | FaultAction::FailHuge(..))
    );
    let response = match fault {
        Some(FaultAction::Fail(code)) => error_response(&ApiError::injected(code)),
        Some(FaultAction::FailHuge(code, bytes)) => huge_error(code, bytes),
        other => {
            if let Some(FaultAction::Delay(delay)) = other {
                tokio::time::sleep(delay).await;
            }
            serve(
                &app,
                &parts.method,
                parts.uri.path(),
                &parts.headers,
                &query,
                &body,
            )
            .unwrap_or_else(|e| error_response(&e))
        }
    };
    let mut log = app.log.lock().unwrap_or_else(|p| p.into_inner());
    log[index].status = response.status().as_u16();
    log[index].injected = injected;
    response
}

fn json_response(code: StatusCode, content_type: &str, value: &Value) -> Response {
    let body = serde_json::to_vec(value).expect("JSON values serialize");
    (
        code,
        [(header::CONTENT_TYPE, content_type.to_string())],
        body,
    )
        .into_response()
}

/// An error answer of `bytes` bytes of HTML, made as it is sent.
fn huge_error(code: u16, bytes: usize) -> Response {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let chunk = Bytes::from(b"<p>upstream error</p>\n".repeat(4096));
    let chunks = bytes.div_ceil(chunk.len());
    let body = Body::from_stream(futures::stream::iter(
        std::iter::repeat_n(chunk, chunks).map(Ok::<_, Infallible>),
    ));
    (code, [(header::CONTENT_TYPE, "text/html")], body).into_response()
}

fn ok(value: &Value) -> Response {
    json_response(StatusCode::OK, "application/json", value)
}

fn error_response(error: &ApiError) -> Response {
    let code = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, "application/json", &error.to_status())
}

fn serve(
    app: &Arc<App>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let aggregated = header_text(headers, header::ACCEPT)
        .is_some_and(|a| a.contains("as=APIGroupDiscoveryList"));
    let discovery = |value: Option<Value>| -> Result<Response, ApiError> {
        if method != Method::GET {
            return Err(ApiError::method_not_allowed(method.as_str()));
        }
        let value = value.ok_or_else(ApiError::no_such_path)?;
        let content_type = if aggregated {
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        } else {
            "application/json"
        };
        Ok(json_response(StatusCode::OK, content_type, &value))
    };
    let served = || app.store().kinds.clone();
    match segments.as_slice() {
        ["version"] => discovery(Some(kinds::version())),
        ["api"] if aggregated => discovery(Some(kinds::aggregated(&served(), true))),
        ["apis"] if aggregated => discovery(Some(kinds::aggregated(&served(), false))),
        ["api"] => discovery(Some(kinds::core_versions(&app.address.to_string()))),
        ["apis"] => discovery(Some(kinds::group_list(&served()))),
        ["api", version] => discovery(kinds::resource_list(&served(), "", version)),
        ["apis", group] => discovery(kinds::group(&served(), group)),
        ["apis", group, version] => discovery(kinds::resource_list(&served(), group, version)),
        ["api", version, rest @ ..] => {
            resource(app, method, "", version, rest, headers, query, body)
        }
        ["apis", group, version, rest @ ..] => {
            resource(app, method, group, version, rest, headers, query, body)
        }
        _ => Err(ApiError::no_such_path()),
    }
}

/// A resource path, parsed.
struct Target {
    kind: usize,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn target(store: &Store, group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let find = |resource: &str| {
        store
            .kind_index(group, version, resource)
            .ok_or_else(ApiError::no_such_path)
    };
    let (kind, namespace, tail) = match rest {
        ["namespaces", namespace, resource, tail @ ..] => {
            let kind = find(resource)?;
            if !store.kinds[kind].namespaced {
                return Err(ApiError::no_such_path());
            }
            (kind, Some(namespace.to_string()), tail)
        }
        [resource, tail @ ..] => {
            let kind = find(resource)?;
            if store.kinds[kind].namespaced && !tail.is_empty() {
                return Err(ApiError::no_such_path());
            }
            (kind, None, tail)
        }
        [] => return Err(ApiError::no_such_path()),
    };
    if tail.len() > 2 {
        return Err(ApiError::no_such_path());
    }
    Ok(Target {
        kind,
        namespace,
        name: tail.first().map(|s| s.to_string()),
        subresource: tail.get(1).map(|s| s.to_string()),
    })
}

fn parse_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

fn list_request(
    kind: &Kind,
    namespace: Option<String>,
    query: &HashMap<String, String>,
) -> Result<ListRequest, ApiError> {
    let text = |key: &str| query.get(key).map(String::as_str).unwrap_or_default();
    let limit = match query.get("limit") {
        Some(limit) => Some(
            limit
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid limit: {limit:?}")))?,
        ),
        None => None,
    };
    Ok(ListRequest {
        namespace,
        selectors: Selectors {
            labels: LabelSelector::parse(text("labelSelector"))?,
            fields: FieldSelector::parse(text("fieldSelector"), kind)?,
        },
        limit,
        continue_token: query.get("continue").cloned(),
        resource_version: query.get("resourceVersion").cloned(),
        resource_version_match: query.get("resourceVersionMatch").cloned(),
    })
}

/// The field manager of a non-apply write: `fieldManager`, else the user agent's first word.
fn default_manager(headers: &HeaderMap) -> String {
    header_text(headers, header::USER_AGENT)
        .and_then(|ua| ua.split('/').next().map(str::to_string))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

#[allow(clippy::too_many_arguments)]
fn resource(
    app: &Arc<App>,
    method: &Method,
    group: &str,
    version: &str,
    rest: &[&str],
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let mut store = app.store();
    let target = target(&store, group, version, rest)?;
    let kind = store.kinds[target.kind].clone();
    let sub = match target.subresource.as_deref() {
        None => Subresource::Main,
        Some("status") if kind.status_subresource => Subresource::Status,
        Some(_) => return Err(ApiError::no_such_path()),
    };
    let namespace = target.namespace.clone().unwrap_or_default();
    let dry_run = query.get("dryRun").is_some_and(|v| v == "All");
    let manager = query
        .get("fieldManager")
        .cloned()
        .unwrap_or_else(|| default_manager(headers));
    let options = WriteOptions {
        manager: &manager,
        dry_run,
    };
    let force = is_true(query.get("force"));
    let metadata_only = header_text(headers, header::ACCEPT)
        .is_some_and(|accept| accept.contains("as=PartialObjectMetadata"));
    let (code, value) = match (method, target.name.as_deref()) {
        (&Method::GET, None) if is_true(query.get("watch")) => {
            return watch(app, store, &kind, target, query, metadata_only);
        }
        (&Method::GET, None) => {
            let request = list_request(&kind, target.namespace, query)?;
            (StatusCode::OK, store.list(target.kind, &request)?)
        }
        (&Method::POST, None) if kind.namespaced && target.namespace.is_none() => {
            return Err(ApiError::method_not_allowed(method.as_str()));
        }
        (&Method::POST, None) => {
            let body = parse_json(body)?;
            let created = store.create(target.kind, &namespace, body, sub, &options)?;
            (StatusCode::CREATED, created)
        }
        (&Method::DELETE, None) => {
            let request = list_request(&kind, target.namespace, query)?;
            let options = delete_options(query, body)?;
            let deleted = store.delete_collection(target.kind, &request, &options);
            let list = json!({
                "kind": format!("{}List", kind.kind),
                "apiVersion": kind.api_version(),
                "metadata": { "resourceVersion": store.resource_version().to_string() },
                "items": deleted,
            });
            (StatusCode::OK, list)
        }
        (&Method::GET, Some(name)) => (StatusCode::OK, store.get(target.kind, &namespace, name)?),
        (&Method::PUT, Some(name)) => {
            let body = parse_json(body)?;
            let replaced = store.replace(target.kind, &namespace, name, body, sub, &options)?;
            (StatusCode::OK, replaced)
        }
        (&Method::PATCH, Some(name)) => {
            let content_type = header_text(headers, header::CONTENT_TYPE).unwrap_or_default();
            let media = content_type.split(';').next().unwrap_or_default().trim();
            if force && media != "application/apply-patch+yaml" {
                return Err(ApiError::invalid(
                    &kind.kind,
                    &kind.gvr,
                    name,
                    &[(
                        "force",
                        "Invalid value: true: may not be specified for non-apply patch".into(),
                    )],
                ));
            }
            let patch = match media {
                "application/apply-patch+yaml" => {
                    let config = parse_apply(body)?;
                    // Apply has no default field manager: the request must name one.
                    let manager = query.get("fieldManager").map_or("", String::as_str);
                    let options = WriteOptions { manager, dry_run };
                    let (object, created) =
                        store.apply(target.kind, &namespace, name, config, force, sub, &options)?;
                    let code = if created {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    };
                    return Ok(respond(code, object, metadata_only));
                }
                // Strategic merge is served as a JSON merge patch: right for maps, but lists are
                // replaced rather than merged by their patch keys.
                "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                    Patch::Merge(parse_json(body)?)
                }
                "application/json-patch+json" => Patch::Json(parse_json(body)?),
                other => return Err(ApiError::unsupported_media_type(other)),
            };
            let patched = store.patch(target.kind, &namespace, name, patch, sub, &options)?;
            (StatusCode::OK, patched)
        }
        (&Method::DELETE, Some(name)) => {
            let options = delete_options(query, body)?;
            let (object, gone) = store.delete(target.kind, &namespace, name, &options)?;
            if gone && !kind.custom {
                let status = json!({
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {
                        "name": name,
                        "group": kind.gvr.group,
                        "kind": kind.gvr.resource,
                        "uid": object.pointer("/metadata/uid"),
                    },
                });
                return Ok(ok(&status));
            }
            (StatusCode::OK, object)
        }
        _ => return Err(ApiError::method_not_allowed(method.as_str())),
    };
    Ok(respond(code, value, metadata_only))
}

fn parse_apply(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).or_else(|_| {
        let text = std::str::from_utf8(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
        serde_saphyr::from_str::<Value>(text)
            .map_err(|e| ApiError::bad_request(format!("the apply patch is not valid YAML: {e}")))
    })
}

/// An object as `meta.k8s.io/v1` `PartialObjectMetadata`: what a client gets when it asks for
/// metadata only (kube's `metadata_watcher`, `get_metadata`, `list_metadata`).
fn partial_metadata(object: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

fn respond(code: StatusCode, value: Value, metadata_only: bool) -> Response {
    let value = match (metadata_only, value.get("items").and_then(Value::as_array)) {
        (false, _) => value,
        (true, Some(items)) => json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadataList",
            "metadata": value["metadata"],
            "items": items.iter().map(partial_metadata).collect::<Vec<_>>(),
        }),
        (true, None) => partial_metadata(&value),
    };
    json_response(code, "application/json", &value)
}

/// `DeleteOptions` from the body (as kube sends them) and the query.
fn delete_options(
    query: &HashMap<String, String>,
    body: &Bytes,
) -> Result<DeleteOptions, ApiError> {
    let body = if body.is_empty() {
        json!({})
    } else {
        parse_json(body)?
    };
    let text = |pointer: &str| {
        body.pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let propagation =
        text("/propagationPolicy").or_else(|| query.get("propagationPolicy").cloned());
    let dry_run = query.get("dryRun").is_some_and(|v| v == "All")
        || body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|v| v == "All"));
    Ok(DeleteOptions {
        uid: text("/preconditions/uid"),
        resource_version: text("/preconditions/resourceVersion"),
        orphan: propagation.as_deref() == Some("Orphan"),
        dry_run,
    })
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({ "type": kind, "object": object }))
        .expect("JSON values serialize");
    line.push(b'\n');
    Bytes::from(line)
}

/// What one watch sends of the store's changes.
struct WatchFilter {
    kind: usize,
    namespace: Option<String>,
    selectors: Selectors,
    kind_name: String,
    api_version: String,
    metadata_only: bool,
}

impl WatchFilter {
    fn line(&self, kind: &str, object: &Value) -> Bytes {
        if self.metadata_only {
            event_line(kind, &partial_metadata(object))
        } else {
            event_line(kind, object)
        }
    }

    fn event(&self, change: &Change) -> Option<Bytes> {
        if change.kind != self.kind
            || self
                .namespace
                .as_ref()
                .is_some_and(|ns| *ns != change.namespace)
        {
            return None;
        }
        let was = change
            .old
            .as_ref()
            .is_some_and(|o| self.selectors.matches(o));
        match (&change.new, &change.deleted) {
            (Some(new), _) => match (was, self.selectors.matches(new)) {
                (false, true) => Some(self.line("ADDED", new)),
                (true, true) => Some(self.line("MODIFIED", new)),
                (true, false) => Some(self.line("DELETED", new)),
                (false, false) => None,
            },
            (None, Some(deleted)) if was => Some(self.line("DELETED", deleted)),
            _ => None,
        }
    }

    fn bookmark(&self, rv: u64, initial_events_end: bool) -> Bytes {
        let mut metadata = json!({ "resourceVersion": rv.to_string() });
        if initial_events_end {
            metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        event_line(
            "BOOKMARK",
            &json!({ "kind": self.kind_name, "apiVersion": self.api_version, "metadata": metadata }),
        )
    }
}

struct WatchStream {
    filter: WatchFilter,
    feed: broadcast::Receiver<Arc<Change>>,
    pending: VecDeque<Bytes>,
    /// The resourceVersion of the last change this stream has seen (sent or filtered out): all
    /// changes up to it are accounted for, so it is what a bookmark may promise.
    last_rv: u64,
    deadline: Instant,
    bookmark_every: Option<Duration>,
    next_bookmark: Instant,
    shutdown: watch::Receiver<bool>,
    dropped: watch::Receiver<u64>,
    done: bool,
}

async fn next_line(mut stream: WatchStream) -> Option<(Bytes, WatchStream)> {
    loop {
        if let Some(line) = stream.pending.pop_front() {
            return Some((line, stream));
        }
        let stopping = *stream.shutdown.borrow();
        if stream.done || stopping {
            return None;
        }
        let bookmarks = stream.bookmark_every.is_some();
        tokio::select! {
            changed = stream.shutdown.changed() => {
                if changed.is_err() {
                    stream.done = true;
                }
            }
            // Dropped: the stream just ends, with no bookmark, as a broken connection would.
            _ = stream.dropped.changed() => stream.done = true,
            received = stream.feed.recv() => match received {
                Ok(change) => {
                    stream.last_rv = change.rv;
                    if let Some(line) = stream.filter.event(&change) {
                        stream.pending.push_back(line);
                    }
                }
                // A watcher too slow for the feed is cut off; the client resumes from what it saw.
                Err(_) => stream.done = true,
            },
            _ = tokio::time::sleep_until(stream.next_bookmark), if bookmarks => {
                stream.pending.push_back(stream.filter.bookmark(stream.last_rv, false));
                stream.next_bookmark = Instant::now() + stream.bookmark_every.unwrap_or_default();
            }
            _ = tokio::time::sleep_until(stream.deadline) => {
                if bookmarks {
                    stream.pending.push_back(stream.filter.bookmark(stream.last_rv, false));
                }
                stream.done = true;
            }
        }
    }
}

fn stream_response(lines: impl futures::Stream<Item = Bytes> + Send + 'static) -> Response {
    let body = Body::from_stream(lines.map(Ok::<_, Infallible>));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn watch(
    app: &Arc<App>,
    store: MutexGuard<'_, Store>,
    kind: &Kind,
    target: Target,
    query: &HashMap<String, String>,
    metadata_only: bool,
) -> Result<Response, ApiError> {
    let request = list_request(kind, target.namespace.clone(), query)?;
    let bookmarks = is_true(query.get("allowWatchBookmarks"));
    let initial_events = is_true(query.get("sendInitialEvents"));
    let timeout = match query.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {t:?}")))?,
        ),
        None => Duration::from_secs(1800),
    };
    let from = match query
        .get("resourceVersion")
        .map(String::as_str)
        .filter(|v| !v.is_empty() && *v != "0")
    {
        Some(text) => Some(
            text.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion: {text:?}")))?,
        ),
        None => None,
    };
    if initial_events && (from.is_some() || !bookmarks) {
        return Err(ApiError::invalid(&kind.kind, &kind.gvr, "", &[(
            "sendInitialEvents",
            "Forbidden: sendInitialEvents needs allowWatchBookmarks and a resourceVersion that is unset or 0".into(),
        )]));
    }
    let start = match store.watch(target.kind, from) {
        Ok(start) => start,
        Err(expired) => {
            let line = event_line("ERROR", &expired.to_status());
            return Ok(stream_response(futures::stream::iter([line])));
        }
    };
    drop(store);
    let filter = WatchFilter {
        kind: target.kind,
        namespace: target.namespace,
        selectors: request.selectors,
        kind_name: kind.kind.clone(),
        api_version: kind.api_version(),
        metadata_only,
    };
    let mut pending: VecDeque<Bytes> = start
        .backlog
        .iter()
        .filter_map(|c| filter.event(c))
        .collect();
    if initial_events {
        pending.push_back(filter.bookmark(start.rv, true));
    }
    let now = Instant::now();
    let stream = WatchStream {
        filter,
        feed: start.feed,
        pending,
        last_rv: start.rv,
        deadline: now + timeout,
        bookmark_every: bookmarks.then_some(app.bookmark_interval),
        next_bookmark: now + app.bookmark_interval,
        shutdown: app.shutdown.clone(),
        dropped: app.dropped.subscribe(),
        done: false,
    };
    Ok(stream_response(futures::stream::unfold(stream, next_line)))
}
