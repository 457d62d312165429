//! The watch cache's form of a MemoryTier: its metadata as it is, its spec and status packed.
//!
//! The reflector keeps every watched tier in memory for the controller's whole life, and a
//! MemoryTier with a status, deserialized, is about 10 KiB (its strings, maps, and the policy's
//! memory as a JSON tree); its spec and status as compact JSON are about 6 KiB. Most of that is
//! the same from tier to tier (the field names, the defaults, the condition types), so it is
//! compressed (LZ4) against a dictionary: the JSON of the first tier with a status that the
//! cache packed. A reconcile unpacks its tier again, which costs a few tens of microseconds; what
//! decides when it runs (its urgency) is worked out once, when the watch delivers the object.
//!
//! The watch packs the spec and status as they are stored: they become a MemoryTier only when a
//! reconcile unpacks them, not at every watch event (each status write comes back as one). An
//! object that is not a MemoryTier is found then, with its metadata and the field at fault, so
//! one bad object cannot stop the watch of the others (as kube's `DeserializeGuard` would).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::error_boundary::InvalidObject;
use serde::{Deserialize, Serialize};
use serde_value::Value;

use super::admission::{StatusSummary, Urgency};
use crate::api::{MemoryTier, MemoryTierSpec, MemoryTierStatus, Phase};

/// A watched MemoryTier as the cache keeps it.
#[derive(Clone, Debug)]
pub struct CachedTier {
    metadata: ObjectMeta,
    body: Result<Packed, Arc<str>>,
}

/// The spec and status, as LZ4-compressed compact JSON, and the urgency they give.
#[derive(Clone, Debug)]
struct Packed {
    urgency: Urgency,
    /// Whether it was compressed against [`DICTIONARY`] (set once, never changed).
    with_dictionary: bool,
    bytes: Arc<[u8]>,
}

/// What every tier packed after it is compressed against: the packed JSON of the first tier
/// with a status. It is only ever in this process's memory, so any tier serves.
static DICTIONARY: OnceLock<Box<[u8]>> = OnceLock::new();

/// What is packed.
#[derive(Serialize, Deserialize)]
struct Parts<S, T> {
    spec: S,
    status: Option<T>,
}

impl CachedTier {
    /// The stored object as the watch delivers it, packed as it is: its spec and status are
    /// turned into a MemoryTier only when a reconcile unpacks them (which reports an object that
    /// is not one), not at every watch event (a status write comes back as one).
    fn pack_stored(mut object: BTreeMap<Value, Value>) -> Result<CachedTier, String> {
        let mut metadata = object.remove(&key("metadata")).unwrap_or(Value::Unit);
        if let Value::Map(fields) = &mut metadata {
            fields.remove(&key("managedFields"));
        }
        let metadata = ObjectMeta::deserialize(metadata).map_err(|e| format!("metadata: {e}"))?;
        let status = object.remove(&key("status")).and_then(present);
        let Some(spec) = object.remove(&key("spec")).and_then(present) else {
            return Ok(CachedTier {
                metadata,
                body: Err("missing field `spec`".into()),
            });
        };
        let urgency = Urgency::from_status(
            metadata.generation,
            status.as_ref().map(|s| summary(s).unwrap_or_default()),
        );
        let json = serde_json::to_vec(&Parts {
            spec: &spec,
            status: status.as_ref(),
        })
        .map_err(|e| e.to_string())?;
        Ok(CachedTier::packed(
            metadata,
            urgency,
            json,
            status.is_some(),
        ))
    }

    fn packed(metadata: ObjectMeta, urgency: Urgency, json: Vec<u8>, with_status: bool) -> Self {
        if with_status {
            DICTIONARY.get_or_init(|| json.clone().into_boxed_slice());
        }
        let (with_dictionary, bytes) = match DICTIONARY.get() {
            Some(dictionary) => (
                true,
                lz4_flex::block::compress_prepend_size_with_dict(&json, dictionary),
            ),
            None => (false, lz4_flex::compress_prepend_size(&json)),
        };
        CachedTier {
            metadata,
            body: Ok(Packed {
                urgency,
                with_dictionary,
                bytes: bytes.into(),
            }),
        }
    }

    /// The MemoryTier, or why the stored object is not one.
    pub fn unpack(&self) -> Result<MemoryTier, Box<InvalidObject>> {
        let invalid = |error: String| {
            Box::new(InvalidObject {
                error,
                metadata: self.metadata.clone(),
            })
        };
        let packed = self.body.as_ref().map_err(|e| invalid(e.to_string()))?;
        let unpacked = match (packed.with_dictionary, DICTIONARY.get()) {
            (false, _) => lz4_flex::decompress_size_prepended(&packed.bytes),
            (true, Some(dictionary)) => {
                lz4_flex::block::decompress_size_prepended_with_dict(&packed.bytes, dictionary)
            }
            // Not so: the flag is set only once the dictionary is.
            (true, None) => return Err(invalid("the cache's dictionary is missing".to_owned())),
        };
        let json =
            unpacked.map_err(|e| invalid(format!("the cached object does not unpack: {e}")))?;
        // Where the stored object is not a MemoryTier, it is read again to name the field (only
        // then: tracking the path costs every reconcile's unpack otherwise).
        let parts: Parts<MemoryTierSpec, MemoryTierStatus> = match serde_json::from_slice(&json) {
            Ok(parts) => parts,
            Err(plain) => {
                let named = serde_path_to_error::deserialize::<
                    _,
                    Parts<MemoryTierSpec, MemoryTierStatus>,
                >(&mut serde_json::Deserializer::from_slice(&json));
                return Err(invalid(match named {
                    Err(e) => format!("{}: {}", e.path(), e.inner()),
                    Ok(_) => plain.to_string(),
                }));
            }
        };
        let mut tier = MemoryTier::new(
            self.metadata.name.as_deref().unwrap_or_default(),
            parts.spec,
        );
        tier.metadata = self.metadata.clone();
        tier.status = parts.status;
        Ok(tier)
    }

    /// How soon the tier must be reconciled, as the cache has it; an invalid object is new.
    pub fn urgency(&self) -> Urgency {
        self.body.as_ref().map_or(Urgency::New, |p| p.urgency)
    }

    /// The packed size of the spec and status, in bytes (0 for an invalid object).
    pub fn packed_len(&self) -> usize {
        self.body.as_ref().map_or(0, |p| p.bytes.len())
    }
}

impl<'de> Deserialize<'de> for CachedTier {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        match Value::deserialize(deserializer)? {
            Value::Map(object) => CachedTier::pack_stored(object).map_err(D::Error::custom),
            _ => Err(D::Error::custom("a MemoryTier is a mapping")),
        }
    }
}

fn key(name: &str) -> Value {
    Value::String(name.to_owned())
}

/// A value that is there: not null.
fn present(value: Value) -> Option<Value> {
    match value {
        Value::Unit | Value::Option(None) => None,
        Value::Option(Some(inner)) => present(*inner),
        value => Some(value),
    }
}

/// What the urgency needs of a stored status, read where it lies (None: not a mapping).
fn summary(status: &Value) -> Option<StatusSummary> {
    let Value::Map(fields) = status else {
        return None;
    };
    let field = |name: &str| fields.get(&key(name));
    let phase = match field("phase") {
        Some(Value::String(phase)) => Phase::deserialize(Value::String(phase.clone())).ok(),
        _ => None,
    };
    let observed_generation = match field("observedGeneration") {
        Some(Value::I64(n)) => Some(*n),
        Some(Value::U64(n)) => i64::try_from(*n).ok(),
        _ => None,
    };
    let listed = |name: &str| match field(name) {
        Some(Value::Seq(items)) => items.as_slice(),
        _ => &[],
    };
    let incident_open = listed("incidents").iter().any(|incident| match incident {
        Value::Map(i) => i
            .get(&key("resolvedAt"))
            .and_then(|v| present(v.clone()))
            .is_none(),
        _ => false,
    });
    Some(StatusSummary {
        phase,
        observed_generation,
        mitigating: !listed("mitigations").is_empty(),
        incident_open,
    })
}

impl Resource for CachedTier {
    type DynamicType = ();
    type Scope = <MemoryTier as Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        MemoryTier::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        MemoryTier::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        MemoryTier::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        MemoryTier::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(status: serde_json::Value) -> serde_json::Value {
        json!({
            "apiVersion": "tierguard.dev/v1alpha1",
            "kind": "MemoryTier",
            "metadata": {
                "name": "checkout", "namespace": "shop", "uid": "u-1", "generation": 3,
                "resourceVersion": "42", "labels": {"team": "payments"},
                "managedFields": [{"manager": "tierguard", "operation": "Apply",
                                   "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}}],
            },
            "spec": {
                "target": {"configMapName": "checkout-flags"},
                "metrics": {"scrape": {"url": "http://app:8080/metrics"}, "interval": "20s"},
                "canary": {"sampleRate": 0.05},
            },
            "status": status,
        })
    }

    #[test]
    fn a_tier_unpacks_as_it_was_stored_without_its_managed_fields() {
        let object = stored(json!({
            "observedGeneration": 3, "phase": "Degraded",
            "conditions": [{"type": "Ready", "status": "False", "reason": "Degraded",
                            "message": "error rate 7.1% over 5%", "lastTransitionTime": "2026-12-01T03:00:00Z"}],
            "policy": {"version": 1, "lastTick": "2026-12-01T03:00:30Z", "windows": {"errorSince": "2026-12-01T03:00:00Z"}},
        }));
        let expected: MemoryTier = serde_json::from_value(object.clone()).unwrap();
        let cached: CachedTier = serde_json::from_value(object).unwrap();
        let tier = cached.unpack().unwrap();
        assert_eq!(tier.metadata.managed_fields, None);
        assert_eq!(cached.meta().managed_fields, None);
        assert_eq!(tier.metadata.labels, expected.metadata.labels);
        assert_eq!(tier.metadata.generation, Some(3));
        assert_eq!(tier.spec, expected.spec);
        assert_eq!(tier.status, expected.status);
        // A tier in an incident is admitted before healthy ones, from the cache alone.
        assert_eq!(cached.urgency(), Urgency::Incident);
        assert_eq!(cached.urgency(), Urgency::of(&expected));
        assert!(cached.packed_len() > 0);
    }

    #[test]
    fn a_tier_without_status_is_new() {
        let mut object = stored(json!(null));
        object.as_object_mut().unwrap().remove("status");
        let cached: CachedTier = serde_json::from_value(object).unwrap();
        assert_eq!(cached.urgency(), Urgency::New);
        assert_eq!(cached.unpack().unwrap().status, None);
    }

    #[test]
    fn an_invalid_object_keeps_its_metadata_and_error() {
        let mut object = stored(json!({}));
        object["spec"]["canary"]["sampleRate"] = json!("a lot");
        let cached: CachedTier = serde_json::from_value(object).unwrap();
        assert_eq!(cached.meta().name.as_deref(), Some("checkout"));
        assert_eq!(cached.meta().managed_fields, None);
        assert_eq!(cached.urgency(), Urgency::New);
        let invalid = cached.unpack().unwrap_err();
        assert!(invalid.error.contains("\"a lot\""), "{}", invalid.error);
        assert_eq!(invalid.metadata.uid.as_deref(), Some("u-1"));
    }

    #[test]
    fn a_tier_packs_to_a_fraction_of_its_json_against_another() {
        let healthy = |name: &str, at: &str| {
            let mut object = stored(json!({
                "observedGeneration": 3, "phase": "Healthy",
                "conditions": [{"type": "Ready", "status": "True", "reason": "Healthy",
                                "message": "running on the baseline", "lastTransitionTime": at}],
                "observed": {"at": at, "requests": 812.5, "errorRatePercent": 0.4},
            }));
            object["metadata"]["name"] = json!(name);
            object["spec"]["target"]["configMapName"] = json!(format!("{name}-flags"));
            object
        };
        // Whichever tier set the dictionary (this one, or another test's), the next packs small.
        let first: CachedTier =
            serde_json::from_value(healthy("cart", "2026-12-01T02:00:00Z")).unwrap();
        let object = healthy("checkout", "2026-12-01T03:00:07Z");
        let tier: MemoryTier = serde_json::from_value(object.clone()).unwrap();
        let json = serde_json::to_vec(&Parts {
            spec: &tier.spec,
            status: tier.status.as_ref(),
        })
        .unwrap();
        let cached: CachedTier = serde_json::from_value(object).unwrap();
        assert!(
            cached.packed_len() * 3 < json.len(),
            "{} packed of {} bytes",
            cached.packed_len(),
            json.len()
        );
        assert_eq!(cached.unpack().unwrap().status, tier.status);
        assert_eq!(
            first.unpack().unwrap().metadata.name.as_deref(),
            Some("cart")
        );
    }
}
