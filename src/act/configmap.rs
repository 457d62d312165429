//! The effective configuration, rendered into the target ConfigMap by server-side apply.
//!
//! The ConfigMap is owned by the MemoryTier (controller reference, so it is garbage-collected with
//! it) and carries the content hash and the reasons of the mitigations in force as annotations.
//! The object sent is a pure function of its inputs (no timestamps), so applying the same
//! configuration again changes nothing on the server.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};

use super::record;
use crate::api::{ActionKind, ActionOutcome};
use crate::api::{ActionRecord, FIELD_MANAGER, MemoryTier, Mitigation};

/// Hash of the rendered content (the same as `status.effective.hash`).
pub const CONFIG_HASH_ANNOTATION: &str = "tierguard.dev/config-hash";
/// JSON object: mitigation name → the reason it is in force.
pub const MITIGATIONS_ANNOTATION: &str = "tierguard.dev/mitigations";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "tierguard";
/// The MemoryTier an object belongs to.
pub const TIER_LABEL: &str = "tierguard.dev/tier";
/// Longest mitigation reason kept in the annotation.
const MAX_REASON_CHARS: usize = 512;

/// Why a Kubernetes actuator failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeActError {
    #[error("the MemoryTier has no metadata.{0}: it must be read from the API server")]
    MissingMetadata(&'static str),
    #[error(
        "ConfigMap {namespace}/{name} is controlled by {owner}, not by this MemoryTier: refusing to take it over"
    )]
    ForeignOwner {
        namespace: String,
        name: String,
        owner: String,
    },
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        kind: String,
        namespace: String,
        name: String,
    },
    #[error("{doing} {namespace}/{name}: {source}")]
    Api {
        doing: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
}

impl KubeActError {
    pub(crate) fn api(
        doing: &'static str,
        namespace: &str,
        name: &str,
        source: kube::Error,
    ) -> Self {
        KubeActError::Api {
            doing,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source: Box::new(source),
        }
    }
}

/// The MemoryTier's namespace.
pub fn tier_namespace(tier: &MemoryTier) -> Result<String, KubeActError> {
    tier.namespace()
        .ok_or(KubeActError::MissingMetadata("namespace"))
}

/// The controller owner reference to the MemoryTier (controller=true, blockOwnerDeletion=true).
pub fn owner_reference(tier: &MemoryTier) -> Result<OwnerReference, KubeActError> {
    if tier.meta().uid.is_none() {
        return Err(KubeActError::MissingMetadata("uid"));
    }
    let mut owner = tier
        .controller_owner_ref(&())
        .ok_or(KubeActError::MissingMetadata("name"))?;
    // Deleting the tier in the foreground waits for what it owns.
    owner.controller = Some(true);
    owner.block_owner_deletion = Some(true);
    Ok(owner)
}

/// The labels of every object the controller writes for a tier.
pub fn labels(tier_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        (TIER_LABEL.to_owned(), tier_name.to_owned()),
    ])
}

/// The mitigations annotation: a JSON object of name → reason (reasons cut to 512 characters).
pub fn mitigations_annotation(mitigations: &[Mitigation]) -> String {
    let reasons: BTreeMap<&str, String> = mitigations
        .iter()
        .map(|m| (m.name.as_str(), record::cut(&m.reason, MAX_REASON_CHARS)))
        .collect();
    serde_json::to_string(&reasons).expect("a map of strings serializes")
}

/// The ConfigMap to apply: exactly the effective configuration, owned by the tier.
pub fn config_map(
    tier: &MemoryTier,
    config: &BTreeMap<String, String>,
    hash: &str,
    mitigations: &[Mitigation],
) -> Result<ConfigMap, KubeActError> {
    let namespace = tier_namespace(tier)?;
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(tier.spec.target.config_map_name.clone()),
            namespace: Some(namespace),
            labels: Some(labels(&tier.name_any())),
            annotations: Some(BTreeMap::from([
                (CONFIG_HASH_ANNOTATION.to_owned(), hash.to_owned()),
                (
                    MITIGATIONS_ANNOTATION.to_owned(),
                    mitigations_annotation(mitigations),
                ),
            ])),
            owner_references: Some(vec![owner_reference(tier)?]),
            ..ObjectMeta::default()
        },
        data: Some(config.clone()),
        ..ConfigMap::default()
    })
}

/// What an apply did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigApplied {
    pub namespace: String,
    pub name: String,
    pub hash: String,
    /// The hash the ConfigMap carried before, if it existed.
    pub previous_hash: Option<String>,
    /// The server's resourceVersion before and after: equal when nothing changed.
    pub resource_version_before: Option<String>,
    pub resource_version: Option<String>,
}

impl ConfigApplied {
    /// Whether the rendered content changed (a new hash).
    pub fn changed(&self) -> bool {
        self.previous_hash.as_deref() != Some(self.hash.as_str())
    }

    pub fn record(&self, at: Timestamp, reason: &str) -> ActionRecord {
        let detail = match &self.previous_hash {
            Some(previous) if previous == &self.hash => format!(
                "ConfigMap {}/{} unchanged (hash {})",
                self.namespace, self.name, self.hash
            ),
            Some(previous) => format!(
                "ConfigMap {}/{}: hash {previous} -> {}",
                self.namespace, self.name, self.hash
            ),
            None => format!(
                "ConfigMap {}/{} created (hash {})",
                self.namespace, self.name, self.hash
            ),
        };
        record::action(
            at,
            ActionKind::RenderConfig,
            reason,
            ActionOutcome::Ok,
            Some(detail),
        )
    }
}

/// The name of an object's controller, if another object controls it.
pub(crate) fn foreign_controller(meta: &ObjectMeta, owner: &OwnerReference) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true) && r.uid != owner.uid)
        .map(|r| format!("{} {}", r.kind, r.name))
}

/// Apply the effective configuration (server-side apply, field manager `tierguard`, forced).
pub async fn apply_config(
    client: &Client,
    tier: &MemoryTier,
    config: &BTreeMap<String, String>,
    hash: &str,
    mitigations: &[Mitigation],
) -> Result<ConfigApplied, KubeActError> {
    let desired = config_map(tier, config, hash, mitigations)?;
    let namespace = tier_namespace(tier)?;
    let name = tier.spec.target.config_map_name.clone();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let existing = api
        .get_opt(&name)
        .await
        .map_err(|e| KubeActError::api("reading ConfigMap", &namespace, &name, e))?;
    let owner = owner_reference(tier)?;
    if let Some(owner_name) = existing
        .as_ref()
        .and_then(|cm| foreign_controller(&cm.metadata, &owner))
    {
        return Err(KubeActError::ForeignOwner {
            namespace,
            name,
            owner: owner_name,
        });
    }
    let previous_hash = existing
        .as_ref()
        .and_then(|cm| cm.annotations().get(CONFIG_HASH_ANNOTATION).cloned());
    let resource_version_before = existing.as_ref().and_then(|cm| cm.resource_version());
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
        .map_err(|e| KubeActError::api("applying ConfigMap", &namespace, &name, e))?;
    tracing::info!(
        configmap = %name,
        namespace = %namespace,
        hash,
        previous = previous_hash.as_deref(),
        "effective configuration applied"
    );
    Ok(ConfigApplied {
        namespace,
        name,
        hash: hash.to_owned(),
        previous_hash,
        resource_version_before,
        resource_version: applied.resource_version(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::policy::effective;

    pub(crate) fn tier() -> MemoryTier {
        let mut tier: MemoryTier = serde_json::from_value(serde_json::json!({
            "apiVersion": "tierguard.dev/v1alpha1",
            "kind": "MemoryTier",
            "metadata": {"name": "backend", "namespace": "clinic", "uid": "1234-abcd"},
            "spec": {"target": {"configMapName": "backend-flags"}}
        }))
        .unwrap();
        tier.metadata.resource_version = Some("7".into());
        tier
    }

    #[test]
    fn the_config_map_is_owned_labelled_and_annotated() {
        let tier = tier();
        let config = effective::baseline(&tier.spec);
        let hash = effective::hash(&config);
        let mitigation = Mitigation {
            name: crate::api::MitigationName::RollbackCanary,
            reason: "P50 1250 ms > 1000 ms for 10m".into(),
            since: Timestamp::UNIX_EPOCH,
            until: "verified".into(),
            overrides: BTreeMap::new(),
        };
        let cm = config_map(&tier, &config, &hash, std::slice::from_ref(&mitigation)).unwrap();
        assert_eq!(cm.metadata.name.as_deref(), Some("backend-flags"));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("clinic"));
        let owner = &cm.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("MemoryTier", "backend", "1234-abcd")
        );
        assert_eq!(owner.api_version, "tierguard.dev/v1alpha1");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, Some(true));
        let annotations = cm.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[CONFIG_HASH_ANNOTATION], hash);
        assert_eq!(
            annotations[MITIGATIONS_ANNOTATION],
            r#"{"rollback-canary":"P50 1250 ms > 1000 ms for 10m"}"#
        );
        let labels = cm.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[MANAGED_BY_LABEL], "tierguard");
        assert_eq!(labels[TIER_LABEL], "backend");
        assert_eq!(cm.data.as_ref().unwrap(), &config);
        // The object carries its type, as server-side apply needs.
        let json = serde_json::to_value(&cm).unwrap();
        assert_eq!(json["apiVersion"], "v1");
        assert_eq!(json["kind"], "ConfigMap");
        // Deterministic: the same inputs give the same object.
        assert_eq!(
            cm,
            config_map(&tier, &config, &hash, &[mitigation]).unwrap()
        );
    }

    #[test]
    fn a_tier_not_read_from_the_server_is_refused() {
        let mut t = tier();
        t.metadata.uid = None;
        assert!(matches!(
            config_map(&t, &BTreeMap::new(), "h", &[]),
            Err(KubeActError::MissingMetadata("uid"))
        ));
        let mut t = tier();
        t.metadata.namespace = None;
        assert!(matches!(
            config_map(&t, &BTreeMap::new(), "h", &[]),
            Err(KubeActError::MissingMetadata("namespace"))
        ));
    }

    #[test]
    fn another_controller_is_detected() {
        let owner = owner_reference(&tier()).unwrap();
        let mut meta = ObjectMeta::default();
        assert_eq!(foreign_controller(&meta, &owner), None);
        meta.owner_references = Some(vec![owner.clone()]);
        assert_eq!(foreign_controller(&meta, &owner), None);
        meta.owner_references = Some(vec![OwnerReference {
            uid: "other".into(),
            kind: "HelmRelease".into(),
            name: "flags".into(),
            controller: Some(true),
            ..owner
        }]);
        assert_eq!(
            foreign_controller(&meta, &owner_reference(&tier()).unwrap()),
            Some("HelmRelease flags".into())
        );
    }

    #[test]
    fn records_say_what_changed() {
        let mut applied = ConfigApplied {
            namespace: "ns".into(),
            name: "cm".into(),
            hash: "b".into(),
            previous_hash: Some("a".into()),
            resource_version_before: None,
            resource_version: None,
        };
        assert!(applied.changed());
        let r = applied.record(Timestamp::UNIX_EPOCH, "rollback phase 1");
        assert_eq!(r.detail.as_deref(), Some("ConfigMap ns/cm: hash a -> b"));
        applied.previous_hash = Some("b".into());
        assert!(!applied.changed());
        assert!(
            applied
                .record(Timestamp::UNIX_EPOCH, "x")
                .detail
                .unwrap()
                .contains("unchanged")
        );
    }
}
