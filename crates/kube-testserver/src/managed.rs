//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! Faithful:
//! - ownership is tracked per field manager, operation (`Apply` / `Update`) and subresource, and
//!   stored in the real `FieldsV1` format (`{"f:data":{"f:KEY":{}}}`), so clients read it as from a
//!   cluster;
//! - an apply that changes a field another manager owns fails with 409 `Conflict` naming that
//!   manager and field, unless `force` is set, in which case ownership moves to the applier;
//!   applying the value a field already has makes the applier a co-owner instead;
//! - a field an applier stops applying is removed, unless another manager still owns it;
//! - non-apply writes (create, update, merge/JSON patch) give their manager the fields they change
//!   and take those fields away from everyone else, as `Update` operations.
//!
//! Simplified: maps (JSON objects) are merged key by key at any depth, but lists are atomic: a
//! list is owned and replaced as a whole (the API server merges `listType: map` lists such as
//! `conditions` item by item). Schema-driven details (`x-kubernetes-map-type`, defaults owned by
//! no one) are not modelled.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// A field: the keys leading to it from the object's root.
pub type FieldPath = Vec<String>;

/// Metadata fields the server owns; never tracked and never taken from a request.
pub const SYSTEM_METADATA: [&str; 10] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// Which part of an object a write may touch: all of it, all but `.status` (main resource of a kind
/// with a status subresource), or only `.status` (the `/status` subresource).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    NoStatus,
    OnlyStatus,
}

impl Scope {
    fn admits(self, top_level_key: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::NoStatus => top_level_key != "status",
            Scope::OnlyStatus => top_level_key == "status",
        }
    }
}

/// The leaf fields of an object within `scope`: scalars, lists, nulls and empty maps.
pub fn leaf_fields(object: &Value, scope: Scope) -> BTreeSet<FieldPath> {
    fn walk(value: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, child) in map {
                    path.push(key.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => {
                out.insert(path.clone());
            }
        }
    }
    let mut out = BTreeSet::new();
    let Some(root) = object.as_object() else {
        return out;
    };
    for (key, value) in root {
        if matches!(key.as_str(), "apiVersion" | "kind") || !scope.admits(key) {
            continue;
        }
        let mut path = vec![key.clone()];
        if key == "metadata" {
            for (meta_key, meta_value) in value.as_object().into_iter().flatten() {
                if !SYSTEM_METADATA.contains(&meta_key.as_str()) {
                    path.push(meta_key.clone());
                    walk(meta_value, &mut path, &mut out);
                    path.pop();
                }
            }
        } else {
            walk(value, &mut path, &mut out);
        }
    }
    out
}

pub fn get_field<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(object, |value, key| value.get(key))
}

/// Removes a field, then the maps it leaves empty on the way up.
fn remove_field(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if let Some(Value::Object(map)) = parents
        .iter()
        .try_fold(&mut *object, |v, key| v.get_mut(key))
    {
        map.remove(last);
        if map.is_empty() && !parents.is_empty() {
            remove_field(object, parents);
        }
    }
}

/// Whether a field's value differs; two maps never do as such (only their keys can).
fn differs(a: Option<&Value>, b: Option<&Value>) -> bool {
    !matches!((a, b), (Some(Value::Object(_)), Some(Value::Object(_)))) && a != b
}

fn is_map(object: &Value, path: &[String]) -> bool {
    get_field(object, path).is_some_and(Value::is_object)
}

/// Whether writing field `written` affects field `owned`: the same field, or one inside the other
/// where the outer one is atomic. Maps are merged key by key, so owning a map (its existence) is
/// not touched by writing one of its keys, nor is a key by writing the map itself.
/// `before` holds the owned value, `after` the written one.
fn entangled(written: &[String], owned: &[String], before: &Value, after: &Value) -> bool {
    if written == owned {
        true
    } else if written.starts_with(owned) {
        !is_map(before, owned)
    } else if owned.starts_with(written) {
        !is_map(after, written)
    } else {
        false
    }
}

fn display(path: &[String]) -> String {
    path.iter().map(|key| format!(".{key}")).collect()
}

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub subresource: String,
    pub api_version: String,
    pub time: String,
    pub fields: BTreeSet<FieldPath>,
}

impl Entry {
    fn is(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }
}

/// The `managedFields` of one object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Managed(pub Vec<Entry>);

fn encode(fields: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut node = &mut root;
        for key in path {
            node = node
                .entry(format!("f:{key}"))
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("fieldsV1 nodes are maps");
        }
        // A field owned itself and through some of its children: mark the field with ".".
        if fields
            .range(path.clone()..)
            .nth(1)
            .is_some_and(|next| next.starts_with(path))
        {
            node.insert(".".into(), json!({}));
        }
    }
    Value::Object(root)
}

fn decode(node: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    for (key, child) in node.as_object().into_iter().flatten() {
        if key == "." {
            out.insert(path.clone());
        } else if let Some(name) = key.strip_prefix("f:") {
            path.push(name.to_string());
            if child.as_object().is_some_and(Map::is_empty) {
                out.insert(path.clone());
            } else {
                decode(child, path, out);
            }
            path.pop();
        } else {
            // List items (`k:`, `v:`, `i:`) from a real server: lists are atomic here.
            out.insert(path.clone());
        }
    }
}

impl Managed {
    pub fn of(object: &Value) -> Self {
        let entries = object
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array);
        Self(
            entries
                .into_iter()
                .flatten()
                .map(|entry| {
                    let text = |key: &str| {
                        entry
                            .get(key)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    let mut fields = BTreeSet::new();
                    decode(
                        entry.get("fieldsV1").unwrap_or(&Value::Null),
                        &mut Vec::new(),
                        &mut fields,
                    );
                    Entry {
                        manager: text("manager"),
                        operation: text("operation"),
                        subresource: text("subresource"),
                        api_version: text("apiVersion"),
                        time: text("time"),
                        fields,
                    }
                })
                .collect(),
        )
    }

    pub fn to_json(&self) -> Value {
        self.0
            .iter()
            .map(|entry| {
                let mut json = json!({
                    "manager": entry.manager,
                    "operation": entry.operation,
                    "apiVersion": entry.api_version,
                    "time": entry.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": encode(&entry.fields),
                });
                if !entry.subresource.is_empty() {
                    json["subresource"] = json!(entry.subresource);
                }
                json
            })
            .collect()
    }

    fn entry_mut(&mut self, writer: &Writer<'_>, operation: &str) -> &mut Entry {
        let index = match self
            .0
            .iter()
            .position(|e| e.is(writer.manager, operation, writer.subresource))
        {
            Some(index) => index,
            None => {
                self.0.push(Entry {
                    manager: writer.manager.to_string(),
                    operation: operation.to_string(),
                    subresource: writer.subresource.to_string(),
                    api_version: writer.api_version.to_string(),
                    time: writer.now.to_string(),
                    fields: BTreeSet::new(),
                });
                self.0.len() - 1
            }
        };
        &mut self.0[index]
    }

    fn drop_empty(&mut self) {
        self.0.retain(|entry| !entry.fields.is_empty());
    }

    /// Records a non-apply write by `writer`: it owns what it changed; nobody else does any more.
    pub fn record_update(&mut self, writer: &Writer<'_>, before: Option<&Value>, after: &Value) {
        let old = before
            .map(|b| leaf_fields(b, writer.scope))
            .unwrap_or_default();
        let new = leaf_fields(after, writer.scope);
        let changed: BTreeSet<FieldPath> = new
            .iter()
            .filter(|path| {
                differs(
                    before.and_then(|b| get_field(b, path)),
                    get_field(after, path),
                )
            })
            .chain(old.difference(&new))
            .cloned()
            .collect();
        if changed.is_empty() {
            return;
        }
        for entry in self
            .0
            .iter_mut()
            .filter(|e| !e.is(writer.manager, "Update", writer.subresource))
        {
            entry.fields.retain(|owned| {
                !changed
                    .iter()
                    .any(|c| entangled(c, owned, before.unwrap_or(&Value::Null), after))
            });
        }
        let own = self.entry_mut(writer, "Update");
        own.fields.extend(changed.intersection(&new).cloned());
        own.fields.retain(|path| new.contains(path));
        own.time = writer.now.to_string();
        self.drop_empty();
    }

    /// Server-side apply of `config` by `writer` onto `live` (None: the object does not exist yet).
    /// Returns the merged object, or the conflicts as `(manager, field)` pairs.
    pub fn apply(
        &mut self,
        writer: &Writer<'_>,
        live: Option<&Value>,
        config: &Value,
        force: bool,
    ) -> Result<Value, Vec<(String, String)>> {
        let applied = leaf_fields(config, writer.scope);
        let empty = json!({});
        let current = live.unwrap_or(&empty);
        let is_own = |e: &Entry| e.is(writer.manager, "Apply", writer.subresource);

        // Fields this apply would change that someone else owns.
        let mut conflicts: Vec<(usize, FieldPath, FieldPath)> = Vec::new();
        for (index, entry) in self.0.iter().enumerate().filter(|(_, e)| !is_own(e)) {
            for owned in &entry.fields {
                for path in applied
                    .iter()
                    .filter(|p| entangled(p, owned, current, config))
                {
                    if differs(get_field(config, path), get_field(current, path)) {
                        conflicts.push((index, owned.clone(), path.clone()));
                    }
                }
            }
        }
        if !conflicts.is_empty() {
            if !force {
                let mut causes: Vec<(String, String)> = conflicts
                    .iter()
                    .map(|(i, _, path)| (self.0[*i].manager.clone(), display(path)))
                    .collect();
                causes.dedup();
                return Err(causes);
            }
            for (index, owned, _) in &conflicts {
                self.0[*index].fields.remove(owned);
            }
        }

        // Fields this manager applied before and no longer does are removed, unless someone else
        // owns them (or something inside them, or an atomic field around them).
        let previous = self
            .0
            .iter()
            .find(|e| is_own(e))
            .map(|e| e.fields.clone())
            .unwrap_or_default();
        let mut object = current.clone();
        for dropped in previous.difference(&applied) {
            let still_owned = self.0.iter().filter(|e| !is_own(e)).any(|e| {
                e.fields.iter().any(|owned| {
                    owned.starts_with(dropped)
                        || (dropped.starts_with(owned) && !is_map(current, owned))
                })
            });
            if !still_owned {
                remove_field(&mut object, dropped);
            }
        }

        merge_applied(&mut object, config, writer.scope);
        let own = self.entry_mut(writer, "Apply");
        own.fields = applied;
        own.time = writer.now.to_string();
        self.drop_empty();
        Ok(object)
    }
}

/// Who writes, through which subresource, and when.
pub struct Writer<'a> {
    pub manager: &'a str,
    /// `""` or `"status"`.
    pub subresource: &'a str,
    pub api_version: &'a str,
    pub scope: Scope,
    pub now: &'a str,
}

/// Merges an applied configuration: maps key by key, anything else replaced; `null` removes.
fn merge_applied(object: &mut Value, config: &Value, scope: Scope) {
    fn merge(target: &mut Value, source: &Value) {
        match (target, source) {
            (Value::Object(target), Value::Object(source)) => {
                for (key, value) in source {
                    if value.is_null() {
                        target.remove(key);
                    } else {
                        merge(target.entry(key.clone()).or_insert(Value::Null), value);
                    }
                }
            }
            (target, source) => *target = source.clone(),
        }
    }
    for (key, value) in config.as_object().into_iter().flatten() {
        let value = match key.as_str() {
            "apiVersion" | "kind" => value.clone(),
            "metadata" => Value::Object(
                value
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| {
                        !SYSTEM_METADATA.contains(&k.as_str())
                            || matches!(k.as_str(), "name" | "namespace")
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            other if scope.admits(other) => value.clone(),
            _ => continue,
        };
        merge(object, &json!({ key: value }));
    }
}
