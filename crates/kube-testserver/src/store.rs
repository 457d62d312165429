//! The object store and the write rules of the API server.
//!
//! Faithful:
//! - one global `resourceVersion` counter, like etcd's revision: every write (of any resource)
//!   takes the next value; a list carries the counter at the time of the list;
//! - a write that changes nothing (same object, same field ownership) is a no-op: no new
//!   resourceVersion, no watch event;
//! - `metadata.uid`, `creationTimestamp` are set on create; `metadata.generation` (for kinds that
//!   keep it) starts at 1 and increments only when something outside metadata and status changes;
//! - optimistic concurrency: a stale `resourceVersion` in a PUT or a patch is a 409 `Conflict`;
//!   PUT of a custom resource without a resourceVersion is 422 `Invalid`;
//! - the status subresource: writes to the main resource ignore `.status`, writes to `/status`
//!   change only `.status`, status is dropped on create;
//! - `generateName`, DNS-subdomain names, namespace/name mismatches between URL and body;
//! - deletion with preconditions, finalizers (`deletionTimestamp`, removal once the finalizers are
//!   gone), and garbage collection of dependents whose owners are all gone (unless `Orphan`);
//! - a bounded history of changes serves watches from a resourceVersion and consistent paginated
//!   lists (each page is read at the first page's resourceVersion); older versions are `Expired`.
//!
//! Simplified: core/v1 and events.k8s.io/v1 Events are stored separately (a real server shows one
//! store through both APIs); namespaces need not exist; garbage collection is immediate.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::error::ApiError;
use super::kinds::Kind;
use super::managed::{Managed, Scope, Writer};
use super::schema::apply_schema;
use super::selector::Selectors;

/// One write, as kept in the history and sent to watches.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub kind: usize,
    pub namespace: String,
    pub name: String,
    /// The object before the write (None: created).
    pub old: Option<Value>,
    /// The object after the write (None: deleted).
    pub new: Option<Value>,
    /// For a deletion: the object as last seen, stamped with this change's resourceVersion.
    pub deleted: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    kind: usize,
    namespace: String,
    name: String,
}

/// Which endpoint a write came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    Main,
    Status,
    /// The tests' direct access: the whole object, status included.
    Direct,
}

impl Subresource {
    fn name(self) -> &'static str {
        if self == Subresource::Status {
            "status"
        } else {
            ""
        }
    }
}

pub struct WriteOptions<'a> {
    pub manager: &'a str,
    pub dry_run: bool,
}

/// A patch other than server-side apply.
pub enum Patch {
    Merge(Value),
    Json(Value),
}

#[derive(Default)]
pub struct DeleteOptions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub orphan: bool,
    pub dry_run: bool,
}

#[derive(Default)]
pub struct ListRequest {
    pub namespace: Option<String>,
    pub selectors: Selectors,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

/// Where a watch starts: the events it replays first, and the live feed after them.
pub struct WatchStart {
    pub backlog: Vec<Arc<Change>>,
    pub feed: broadcast::Receiver<Arc<Change>>,
    /// The store's resourceVersion when the watch started.
    pub rv: u64,
}

pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn meta<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object
        .get("metadata")?
        .get(field)?
        .as_str()
        .filter(|s| !s.is_empty())
}

fn meta_mut(object: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let root = object
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    root.entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))
}

fn finalizers_pending(object: &Value) -> bool {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// Everything but metadata and status: what `metadata.generation` counts changes of.
fn spec_part(object: &Value) -> Value {
    let mut spec = object.clone();
    if let Some(map) = spec.as_object_mut() {
        for key in ["metadata", "status", "apiVersion", "kind"] {
            map.remove(key);
        }
    }
    spec
}

fn without_times(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(entries) = object
        .pointer_mut("/metadata/managedFields")
        .and_then(Value::as_array_mut)
    {
        for entry in entries.iter_mut().filter_map(Value::as_object_mut) {
            entry.remove("time");
        }
    }
    object
}

fn is_dns_subdomain(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    name.len() <= 253
        && name.starts_with(ok)
        && name.ends_with(ok)
        && name.chars().all(|c| ok(c) || c == '-' || c == '.')
}

fn scope(kind: &Kind, sub: Subresource) -> Scope {
    match (kind.status_subresource, sub) {
        (true, Subresource::Main) => Scope::NoStatus,
        (true, Subresource::Status) => Scope::OnlyStatus,
        _ => Scope::All,
    }
}

fn check_type(kind: &Kind, body: &Value) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    let field = |name: &str| body.get(name).and_then(Value::as_str).unwrap_or_default();
    let (api_version, body_kind) = (field("apiVersion"), field("kind"));
    if body_kind.is_empty() {
        return Err(ApiError::bad_request(
            "Object 'Kind' is missing in the request body",
        ));
    }
    if api_version != kind.api_version() || body_kind != kind.kind {
        return Err(ApiError::bad_request(format!(
            "the object's {api_version}, Kind={body_kind} does not match the resource {}, Kind={}",
            kind.api_version(),
            kind.kind
        )));
    }
    Ok(())
}

pub struct Store {
    pub kinds: Vec<Kind>,
    objects: BTreeMap<Key, Value>,
    rv: u64,
    uid_seed: u64,
    uids_issued: u64,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Every change with a resourceVersion above this is in `history`.
    compacted: u64,
    feed: broadcast::Sender<Arc<Change>>,
}

impl Store {
    pub fn new(kinds: Vec<Kind>, history_limit: usize) -> Self {
        // A watch that falls this far behind the feed is ended; its client resumes from history.
        let (feed, _) = broadcast::channel(1024);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64);
        Self {
            kinds,
            objects: BTreeMap::new(),
            rv: 1,
            uid_seed: seed.unwrap_or(0x5eed),
            uids_issued: 0,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 1,
            feed,
        }
    }

    pub fn kind_index(&self, group: &str, version: &str, resource: &str) -> Option<usize> {
        self.kinds.iter().position(|k| {
            k.gvr.group == group && k.gvr.version == version && k.gvr.resource == resource
        })
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    fn key(&self, kind: usize, namespace: &str, name: &str) -> Key {
        let namespace = if self.kinds[kind].namespaced {
            namespace
        } else {
            ""
        };
        Key {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// A pseudo-random number from the store's seed and a counter (uids, generated names).
    fn next_random(&mut self) -> u64 {
        self.uids_issued += 1;
        let mut x = self.uid_seed ^ self.uids_issued.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 33)
    }

    fn new_uid(&mut self) -> String {
        let (a, b) = (self.next_random(), self.uids_issued);
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (a >> 4) & 0xfff,
            b
        )
    }

    fn generate_name(&mut self, prefix: &str) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut x = self.next_random();
        let suffix: String = (0..5)
            .map(|_| {
                let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
                x /= ALPHABET.len() as u64;
                c
            })
            .collect();
        format!("{prefix}{suffix}")
    }

    pub fn get(&self, kind: usize, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&self.key(kind, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&self.kinds[kind].gvr, name))
    }

    /// All objects of a kind (in one namespace, or all), as of resourceVersion `rv` (which must
    /// not be older than the history), in key order.
    fn snapshot(&self, kind: usize, namespace: Option<&str>, rv: u64) -> BTreeMap<Key, Value> {
        let in_scope =
            |key: &Key| key.kind == kind && namespace.is_none_or(|ns| ns == key.namespace);
        let mut objects: BTreeMap<Key, Value> = self
            .objects
            .range(
                Key {
                    kind,
                    namespace: String::new(),
                    name: String::new(),
                }..,
            )
            .take_while(|(key, _)| key.kind == kind)
            .filter(|(key, _)| in_scope(key))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        for change in self.history.iter().rev().take_while(|c| c.rv > rv) {
            let key = Key {
                kind: change.kind,
                namespace: change.namespace.clone(),
                name: change.name.clone(),
            };
            if !in_scope(&key) {
                continue;
            }
            match &change.old {
                Some(old) => objects.insert(key, old.clone()),
                None => objects.remove(&key),
            };
        }
        objects
    }

    pub fn list(&self, kind: usize, request: &ListRequest) -> Result<Value, ApiError> {
        let k = &self.kinds[kind];
        let (rv, after) = match request.continue_token.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => {
                let parsed = token
                    .split_once(':')
                    .and_then(|(rv, rest)| Some((rv.parse::<u64>().ok()?, rest.split_once('/')?)));
                let Some((rv, (namespace, name))) = parsed else {
                    return Err(ApiError::bad_request(format!(
                        "continue key is not valid: {token:?}"
                    )));
                };
                if rv < self.compacted {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. \
                         You can start a new list without the continue parameter.",
                    ));
                }
                (rv, Some((namespace.to_string(), name.to_string())))
            }
            None => match request
                .resource_version
                .as_deref()
                .filter(|v| !v.is_empty() && *v != "0")
            {
                None => (self.rv, None),
                Some(text) => {
                    let asked: u64 = text.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid resourceVersion: {text:?}"))
                    })?;
                    if asked > self.rv {
                        return Err(ApiError::timeout(format!(
                            "Too large resource version: {asked}, current: {}",
                            self.rv
                        )));
                    }
                    match request.resource_version_match.as_deref() {
                        Some("Exact") if asked < self.compacted => {
                            return Err(ApiError::expired(format!(
                                "too old resource version: {asked} ({})",
                                self.compacted
                            )));
                        }
                        Some("Exact") => (asked, None),
                        _ => (self.rv, None),
                    }
                }
            },
        };
        let mut items = Vec::new();
        let mut last_key: Option<Key> = None;
        let mut next = None;
        let mut remaining = 0usize;
        for (key, object) in self.snapshot(kind, request.namespace.as_deref(), rv) {
            if after
                .as_ref()
                .is_some_and(|(ns, name)| (&key.namespace, &key.name) <= (ns, name))
            {
                continue;
            }
            if !request.selectors.matches(&object) {
                continue;
            }
            if request
                .limit
                .is_some_and(|limit| limit > 0 && items.len() >= limit)
            {
                if let Some(last) = last_key.take() {
                    next = Some(format!("{rv}:{}/{}", last.namespace, last.name));
                }
                remaining += 1;
                continue;
            }
            items.push(object);
            last_key = Some(key);
        }
        let mut metadata = json!({ "resourceVersion": rv.to_string() });
        if let Some(token) = next {
            metadata["continue"] = json!(token);
            metadata["remainingItemCount"] = json!(remaining);
        }
        Ok(
            json!({ "kind": format!("{}List", k.kind), "apiVersion": k.api_version(), "metadata": metadata, "items": items }),
        )
    }

    /// Starts a watch: from `from` (replaying the history after it) or, with None, from now
    /// (replaying the current objects as ADDED). The caller must hold the store's lock until it
    /// has taken both, so no write falls between them.
    pub fn watch(&self, kind: usize, from: Option<u64>) -> Result<WatchStart, ApiError> {
        let backlog = match from {
            Some(rv) if rv < self.compacted => {
                return Err(ApiError::expired(format!(
                    "too old resource version: {rv} ({})",
                    self.compacted
                )));
            }
            Some(rv) => self
                .history
                .iter()
                .filter(|c| c.kind == kind && c.rv > rv)
                .cloned()
                .collect(),
            None => self
                .snapshot(kind, None, self.rv)
                .into_iter()
                .map(|(key, object)| {
                    Arc::new(Change {
                        rv: self.rv,
                        kind,
                        namespace: key.namespace,
                        name: key.name,
                        old: None,
                        new: Some(object),
                        deleted: None,
                    })
                })
                .collect(),
        };
        Ok(WatchStart {
            backlog,
            feed: self.feed.subscribe(),
            rv: self.rv,
        })
    }

    /// Forgets the history: watches and continue tokens from before now get 410 `Expired`.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    /// Stores the result of a write under the next resourceVersion and tells the watches.
    /// Returns the object as stored (or as deleted) and whether it is gone.
    fn commit(&mut self, key: Key, old: Option<Value>, new: Option<Value>) -> (Value, bool) {
        self.rv += 1;
        let rv = self.rv;
        let mut new = new;
        if let Some(object) = new.as_mut() {
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
        }
        let mut deleted = None;
        // An object marked for deletion goes once its last finalizer is removed.
        if let Some(object) = new.take_if(|o| {
            o.pointer("/metadata/deletionTimestamp").is_some() && !finalizers_pending(o)
        }) {
            deleted = Some(object);
        } else if new.is_none() {
            let mut last = old.clone().expect("a deletion has an old object");
            last["metadata"]["resourceVersion"] = json!(rv.to_string());
            deleted = Some(last);
        }
        match &new {
            Some(object) => self.objects.insert(key.clone(), object.clone()),
            None => self.objects.remove(&key),
        };
        let change = Arc::new(Change {
            rv,
            kind: key.kind,
            namespace: key.namespace,
            name: key.name,
            old,
            new: new.clone(),
            deleted: deleted.clone(),
        });
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.rv;
            }
        }
        let _ = self.feed.send(change);
        match (new, deleted) {
            (Some(object), _) => (object, false),
            (None, deleted) => (deleted.expect("a deleted object"), true),
        }
    }

    fn writer<'a>(
        &self,
        kind: usize,
        sub: Subresource,
        options: &'a WriteOptions<'_>,
        api_version: &'a str,
        now: &'a str,
    ) -> Writer<'a> {
        Writer {
            manager: options.manager,
            subresource: sub.name(),
            api_version,
            scope: scope(&self.kinds[kind], sub),
            now,
        }
    }

    pub fn create(
        &mut self,
        kind: usize,
        namespace: &str,
        body: Value,
        sub: Subresource,
        options: &WriteOptions<'_>,
    ) -> Result<Value, ApiError> {
        self.create_object(kind, namespace, body, sub, None, options)
    }

    /// Create; `managed` is the ownership a server-side apply computed (None: an `Update`).
    fn create_object(
        &mut self,
        kind: usize,
        namespace: &str,
        mut body: Value,
        sub: Subresource,
        managed: Option<Managed>,
        options: &WriteOptions<'_>,
    ) -> Result<Value, ApiError> {
        let k = self.kinds[kind].clone();
        check_type(&k, &body)?;
        let metadata = meta_mut(&mut body)?;
        if k.namespaced {
            match metadata
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|ns| !ns.is_empty())
            {
                Some(ns) if ns != namespace => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    metadata.insert("namespace".into(), json!(namespace));
                }
            }
        } else {
            metadata.remove("namespace");
        }
        let name = match metadata
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            Some(name) => name.to_string(),
            None => match metadata
                .get("generateName")
                .and_then(Value::as_str)
                .map(str::to_string)
            {
                Some(prefix) => loop {
                    let candidate = self.generate_name(&prefix);
                    if !self
                        .objects
                        .contains_key(&self.key(kind, namespace, &candidate))
                    {
                        break candidate;
                    }
                },
                None => {
                    return Err(ApiError::invalid(
                        &k.kind,
                        &k.gvr,
                        "",
                        &[(
                            "metadata.name",
                            "Required value: name or generateName is required".into(),
                        )],
                    ));
                }
            },
        };
        if !is_dns_subdomain(&name) {
            return Err(ApiError::invalid(
                &k.kind,
                &k.gvr,
                &name,
                &[(
                    "metadata.name",
                    format!(
                        "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
                     characters, '-' or '.', and must start and end with an alphanumeric character"
                    ),
                )],
            ));
        }
        if meta(&body, "resourceVersion").is_some() {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let key = self.key(kind, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&k.gvr, &name));
        }
        let (uid, now) = (self.new_uid(), now());
        let metadata = meta_mut(&mut body)?;
        metadata.insert("name".into(), json!(name));
        metadata.insert("uid".into(), json!(uid));
        metadata.insert("creationTimestamp".into(), json!(now));
        for field in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
            "generation",
        ] {
            metadata.remove(field);
        }
        if k.generation {
            metadata.insert("generation".into(), json!(1));
        }
        if k.status_subresource && sub != Subresource::Direct {
            body.as_object_mut().expect("checked").remove("status");
        }
        if let Some(schema) = &k.schema {
            apply_schema(&mut body, schema);
        }
        if sub != Subresource::Direct {
            validate(&k, &body)?;
        }
        let api_version = k.api_version();
        let managed = managed.unwrap_or_else(|| {
            let mut managed = Managed::default();
            managed.record_update(
                &self.writer(kind, sub, options, &api_version, &now),
                None,
                &body,
            );
            managed
        });
        if !managed.0.is_empty() {
            body["metadata"]["managedFields"] = managed.to_json();
        }
        if options.dry_run {
            return Ok(body);
        }
        Ok(self.commit(key, None, Some(body)).0)
    }

    /// The common end of every update: identity checks, server-owned metadata, the status
    /// subresource, schema, field ownership, the no-op check and the generation.
    #[allow(clippy::too_many_arguments)]
    fn update_object(
        &mut self,
        kind: usize,
        key: Key,
        live: Value,
        mut candidate: Value,
        sub: Subresource,
        managed: Option<Managed>,
        options: &WriteOptions<'_>,
    ) -> Result<Value, ApiError> {
        let k = self.kinds[kind].clone();
        check_type(&k, &candidate)?;
        if let Some(name) = meta(&candidate, "name").filter(|n| *n != key.name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match the name on the URL ({})",
                key.name
            )));
        }
        if k.namespaced && meta(&candidate, "namespace").is_some_and(|ns| ns != key.namespace) {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let metadata = meta_mut(&mut candidate)?;
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
            "selfLink",
            "managedFields",
        ] {
            match live["metadata"].get(field) {
                Some(value) if field != "managedFields" => {
                    metadata.insert(field.into(), value.clone())
                }
                _ => metadata.remove(field),
            };
        }
        if k.status_subresource {
            let root = candidate.as_object_mut().expect("checked");
            match sub {
                Subresource::Main => match live.get("status") {
                    Some(status) => root.insert("status".into(), status.clone()),
                    None => root.remove("status"),
                },
                Subresource::Status => {
                    let status = root.remove("status");
                    candidate = live.clone();
                    let root = candidate.as_object_mut().expect("stored objects are maps");
                    match status {
                        Some(status) => root.insert("status".into(), status),
                        None => root.remove("status"),
                    }
                }
                Subresource::Direct => None,
            };
        }
        if let Some(schema) = &k.schema {
            apply_schema(&mut candidate, schema);
        }
        if sub == Subresource::Main {
            validate(&k, &candidate)?;
        }
        let (api_version, now) = (k.api_version(), now());
        let managed = managed.unwrap_or_else(|| {
            let mut managed = Managed::of(&live);
            managed.record_update(
                &self.writer(kind, sub, options, &api_version, &now),
                Some(&live),
                &candidate,
            );
            managed
        });
        let metadata = meta_mut(&mut candidate)?;
        if managed.0.is_empty() {
            metadata.remove("managedFields");
        } else {
            metadata.insert("managedFields".into(), managed.to_json());
        }
        if without_times(&live) == without_times(&candidate) {
            return Ok(live);
        }
        if k.generation && spec_part(&live) != spec_part(&candidate) {
            let generation = live
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            candidate["metadata"]["generation"] = json!(generation + 1);
        }
        if options.dry_run {
            return Ok(candidate);
        }
        let uid = meta(&live, "uid").unwrap_or_default().to_string();
        let (object, gone) = self.commit(key, Some(live), Some(candidate));
        if gone {
            self.collect_garbage(&uid);
        }
        Ok(object)
    }

    /// PUT: replace the object (or its status), guarded by its resourceVersion.
    pub fn replace(
        &mut self,
        kind: usize,
        namespace: &str,
        name: &str,
        body: Value,
        sub: Subresource,
        options: &WriteOptions<'_>,
    ) -> Result<Value, ApiError> {
        let k = &self.kinds[kind];
        let key = self.key(kind, namespace, name);
        let live = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&k.gvr, name))?;
        match meta(&body, "resourceVersion") {
            Some(rv) if Some(rv) != meta(&live, "resourceVersion") => {
                return Err(ApiError::modified(&k.gvr, name));
            }
            None if k.custom && sub != Subresource::Direct => {
                return Err(ApiError::invalid(
                    &k.kind,
                    &k.gvr,
                    name,
                    &[(
                        "metadata.resourceVersion",
                        "Invalid value: 0x0: must be specified for an update".into(),
                    )],
                ));
            }
            _ => {}
        }
        self.update_object(kind, key, live, body, sub, None, options)
    }

    /// Server-side apply (a PATCH of type `application/apply-patch+yaml`); creates the object if it
    /// does not exist, and then also returns true.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        kind: usize,
        namespace: &str,
        name: &str,
        mut config: Value,
        force: bool,
        sub: Subresource,
        options: &WriteOptions<'_>,
    ) -> Result<(Value, bool), ApiError> {
        let k = self.kinds[kind].clone();
        let key = self.key(kind, namespace, name);
        let live = self.objects.get(&key).cloned();
        check_type(&k, &config)?;
        if options.manager.is_empty() {
            return Err(ApiError::invalid(
                &k.kind,
                &k.gvr,
                name,
                &[(
                    "fieldManager",
                    "Required value: is required for apply patch".into(),
                )],
            ));
        }
        let metadata = meta_mut(&mut config)?;
        match metadata.get("name").and_then(Value::as_str) {
            Some(body_name) if body_name != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
            _ => metadata.insert("name".into(), json!(name)),
        };
        if let Some(rv) = meta(&config, "resourceVersion")
            && live.as_ref().and_then(|l| meta(l, "resourceVersion")) != Some(rv)
        {
            return Err(ApiError::modified(&k.gvr, name));
        }
        if live.is_none() && sub == Subresource::Status {
            return Err(ApiError::not_found(&k.gvr, name));
        }
        let (api_version, now) = (k.api_version(), now());
        let writer = self.writer(kind, sub, options, &api_version, &now);
        let mut managed = live.as_ref().map(Managed::of).unwrap_or_default();
        let merged = managed
            .apply(&writer, live.as_ref(), &config, force)
            .map_err(|causes| ApiError::apply_conflict(&k.gvr, name, &api_version, &causes))?;
        match live {
            None => Ok((
                self.create_object(kind, namespace, merged, sub, Some(managed), options)?,
                true,
            )),
            Some(live) => Ok((
                self.update_object(kind, key, live, merged, sub, Some(managed), options)?,
                false,
            )),
        }
    }

    /// PATCH with a JSON merge patch or a JSON patch.
    pub fn patch(
        &mut self,
        kind: usize,
        namespace: &str,
        name: &str,
        patch: Patch,
        sub: Subresource,
        options: &WriteOptions<'_>,
    ) -> Result<Value, ApiError> {
        let k = self.kinds[kind].clone();
        let key = self.key(kind, namespace, name);
        let live = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&k.gvr, name))?;
        let mut candidate = live.clone();
        match patch {
            Patch::Merge(patch) => {
                if !patch.is_object() {
                    return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                }
                json_patch::merge(&mut candidate, &patch);
            }
            Patch::Json(patch) => {
                let operations: json_patch::Patch = serde_json::from_value(patch)
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                json_patch::patch(&mut candidate, &operations).map_err(|e| {
                    ApiError::invalid(
                        &k.kind,
                        &k.gvr,
                        name,
                        &[("", format!("the JSON patch could not be applied: {e}"))],
                    )
                })?;
            }
        }
        // A resourceVersion in a patch is a precondition.
        if let Some(rv) = meta(&candidate, "resourceVersion")
            && Some(rv) != meta(&live, "resourceVersion")
        {
            return Err(ApiError::modified(&k.gvr, name));
        }
        self.update_object(kind, key, live, candidate, sub, None, options)
    }

    /// DELETE; returns the object (deleted, or marked for deletion) and whether it is gone.
    pub fn delete(
        &mut self,
        kind: usize,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let gvr = self.kinds[kind].gvr.clone();
        let key = self.key(kind, namespace, name);
        let live = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&gvr, name))?;
        if let Some(uid) = &options.uid
            && Some(uid.as_str()) != meta(&live, "uid")
        {
            let actual = meta(&live, "uid").unwrap_or_default();
            return Err(ApiError::conflict(
                &gvr,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                ),
            ));
        }
        if let Some(rv) = &options.resource_version
            && Some(rv.as_str()) != meta(&live, "resourceVersion")
        {
            let actual = meta(&live, "resourceVersion").unwrap_or_default();
            return Err(ApiError::conflict(
                &gvr,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                ),
            ));
        }
        if options.dry_run {
            let gone = !finalizers_pending(&live);
            return Ok((live, gone));
        }
        Ok(self.delete_live(key, live, !options.orphan))
    }

    fn delete_live(&mut self, key: Key, live: Value, collect: bool) -> (Value, bool) {
        if finalizers_pending(&live) {
            if live.pointer("/metadata/deletionTimestamp").is_some() {
                return (live, false);
            }
            let mut marked = live.clone();
            marked["metadata"]["deletionTimestamp"] = json!(now());
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            return self.commit(key, Some(live), Some(marked));
        }
        let uid = meta(&live, "uid").unwrap_or_default().to_string();
        let deleted = self.commit(key, Some(live), None);
        if collect {
            self.collect_garbage(&uid);
        }
        deleted
    }

    /// Deletes the dependents of a deleted owner whose owners are now all gone.
    fn collect_garbage(&mut self, owner_uid: &str) {
        if owner_uid.is_empty() {
            return;
        }
        let living: HashSet<&str> = self
            .objects
            .values()
            .filter_map(|o| meta(o, "uid"))
            .collect();
        let orphans: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, object)| {
                let owners: Vec<&str> = object
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.get("uid").and_then(Value::as_str))
                    .collect();
                owners.contains(&owner_uid) && owners.iter().all(|uid| !living.contains(uid))
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in orphans {
            if let Some(live) = self.objects.get(&key).cloned() {
                self.delete_live(key, live, true);
            }
        }
    }

    /// DELETE on a collection: deletes every matching object; returns them.
    pub fn delete_collection(
        &mut self,
        kind: usize,
        request: &ListRequest,
        options: &DeleteOptions,
    ) -> Vec<Value> {
        let targets: Vec<(Key, Value)> = self
            .snapshot(kind, request.namespace.as_deref(), self.rv)
            .into_iter()
            .filter(|(_, object)| request.selectors.matches(object))
            .collect();
        targets
            .into_iter()
            .map(|(key, live)| {
                if options.dry_run {
                    live
                } else {
                    self.delete_live(key, live, !options.orphan).0
                }
            })
            .collect()
    }

    /// Objects of a kind across namespaces, for the tests' direct access.
    pub fn all(&self, kind: usize) -> Vec<Value> {
        self.snapshot(kind, None, self.rv).into_values().collect()
    }

    /// The tests' direct write: create, or overwrite whatever is stored (status included).
    pub fn put(&mut self, kind: usize, object: Value) -> Result<Value, ApiError> {
        let namespace = meta(&object, "namespace").unwrap_or_default().to_string();
        let name = meta(&object, "name").unwrap_or_default().to_string();
        let options = WriteOptions {
            manager: "test-harness",
            dry_run: false,
        };
        let key = self.key(kind, &namespace, &name);
        match self.objects.get(&key).cloned() {
            Some(live) => {
                self.update_object(kind, key, live, object, Subresource::Direct, None, &options)
            }
            None => self.create_object(
                kind,
                &namespace,
                object,
                Subresource::Direct,
                None,
                &options,
            ),
        }
    }
}

/// The resource's validation of an object about to be stored.
fn validate(kind: &Kind, object: &Value) -> Result<(), ApiError> {
    let Some(validator) = &kind.validator else {
        return Ok(());
    };
    (validator.0)(object).map_err(|causes| {
        let causes: Vec<(&str, String)> = causes
            .iter()
            .map(|(field, message)| (field.as_str(), message.clone()))
            .collect();
        ApiError::invalid(
            &kind.kind,
            &kind.gvr,
            meta(object, "name").unwrap_or_default(),
            &causes,
        )
    })
}
