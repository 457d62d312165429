//! MemoryTiers for tests: one builder, written as the JSON a manifest would hold and checked with
//! the rules `tierguard check` applies, so a test's tier is one a cluster would accept.

#![allow(dead_code)]

use serde_json::{Value, json};
use tierguard::api::{MemoryTier, MemoryTierSpec};

/// A MemoryTier `name` in `namespace` whose spec is the runbooks' defaults with `spec` merged in
/// (a JSON merge patch; the target ConfigMap defaults to `<name>-flags`). Panics, naming the
/// fields, if the result breaks the CRD's rules.
pub fn tier(name: &str, namespace: &str, spec: Value) -> MemoryTier {
    let mut merged = json!({"target": {"configMapName": format!("{name}-flags")}});
    json_patch::merge(&mut merged, &spec);
    let doc = json!({
        "apiVersion": "tierguard.dev/v1alpha1",
        "kind": "MemoryTier",
        "metadata": {"name": name, "namespace": namespace},
        "spec": merged,
    });
    tierguard::api::validate::validate_document(&doc)
        .unwrap_or_else(|problems| panic!("test MemoryTier {name} is invalid: {problems:?}"))
}

/// A spec with `metrics` and `redis` sections as given (`null` leaves a section at its default).
pub fn spec(metrics: Value, redis: Value) -> MemoryTierSpec {
    let mut sections = json!({"target": {"configMapName": "clinic-backend-flags"}});
    if !metrics.is_null() {
        sections["metrics"] = metrics;
    }
    if !redis.is_null() {
        sections["redis"] = redis;
    }
    tier("clinic-backend", "clinic", sections).spec
}

/// The same, as a full manifest in YAML-compatible JSON.
pub fn manifest(name: &str, namespace: &str, metrics: Value, redis: Value) -> String {
    let spec = serde_json::to_value(spec(metrics, redis)).unwrap();
    let doc = json!({
        "apiVersion": "tierguard.dev/v1alpha1",
        "kind": "MemoryTier",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    });
    serde_json::to_string_pretty(&doc).unwrap()
}
