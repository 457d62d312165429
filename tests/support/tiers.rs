//! MemoryTier specs for tests, written as the JSON a manifest would hold.

#![allow(dead_code)]

use serde_json::{Value, json};
use tierguard::api::MemoryTierSpec;

/// A spec with `metrics` and `redis` sections as given (`null` leaves a section at its default).
pub fn spec(metrics: Value, redis: Value) -> MemoryTierSpec {
    let mut spec = json!({"target": {"configMapName": "clinic-backend-flags"}});
    if !metrics.is_null() {
        spec["metrics"] = metrics;
    }
    if !redis.is_null() {
        spec["redis"] = redis;
    }
    serde_json::from_value(spec).expect("a valid MemoryTier spec")
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
