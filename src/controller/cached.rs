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
//! An object that does not deserialize as a MemoryTier keeps its metadata and the error, as
//! kube's `DeserializeGuard` does, so one bad object cannot stop the watch of the others.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::DeserializeGuard;
use kube::core::error_boundary::InvalidObject;
use serde::{Deserialize, Serialize};

use super::admission::Urgency;
use crate::api::{MemoryTier, MemoryTierSpec, MemoryTierStatus};

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
    /// Pack a MemoryTier (its managedFields are dropped: nothing here reads them, and with
    /// server-side apply of a large status they are large too).
    pub fn pack(mut tier: MemoryTier) -> CachedTier {
        tier.metadata.managed_fields = None;
        let urgency = Urgency::of(&tier);
        let json = serde_json::to_vec(&Parts {
            spec: &tier.spec,
            status: tier.status.as_ref(),
        })
        .expect("a MemoryTier serializes");
        if tier.status.is_some() {
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
            metadata: tier.metadata,
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
        let parts: Parts<MemoryTierSpec, MemoryTierStatus> = serde_json::from_slice(&json)
            .map_err(|e| invalid(format!("the cached object does not unpack: {e}")))?;
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
        Ok(
            match DeserializeGuard::<MemoryTier>::deserialize(deserializer)?.0 {
                Ok(tier) => CachedTier::pack(tier),
                Err(InvalidObject {
                    error,
                    mut metadata,
                }) => {
                    metadata.managed_fields = None;
                    CachedTier {
                        metadata,
                        body: Err(error.into()),
                    }
                }
            },
        )
    }
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
