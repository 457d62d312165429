//! Rollout restart of the workload that reads the ConfigMap, for applications that read their
//! flags only at start-up.
//!
//! It is what `kubectl rollout restart` does (a new `kubectl.kubernetes.io/restartedAt` on the pod
//! template), plus a second template annotation with the config hash the restart was for. A repeat
//! for the same hash (after a crash between the restart and the status update, say) finds that
//! annotation and does nothing, so a workload restarts once per configuration, not once per try.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::configmap::KubeActError;
use super::record;
use crate::api::{ActionKind, ActionOutcome};
use crate::api::{ActionRecord, FIELD_MANAGER, WorkloadKind, WorkloadRef};

/// The annotation `kubectl rollout restart` sets; a new value rolls the pods.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";
/// The config hash the last restart was for.
pub const RESTARTED_FOR_HASH_ANNOTATION: &str = "tierguard.dev/restarted-for-hash";

/// What a restart did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartOutcome {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    pub hash: String,
    /// False when the workload had already been restarted for this hash.
    pub restarted: bool,
}

impl RestartOutcome {
    pub fn record(&self, at: Timestamp, reason: &str) -> ActionRecord {
        let what = format!("{:?} {}/{}", self.kind, self.namespace, self.name);
        if self.restarted {
            record::action(
                at,
                ActionKind::RestartWorkload,
                reason,
                ActionOutcome::Ok,
                Some(format!("{what} restarted for config hash {}", self.hash)),
            )
        } else {
            record::action(
                at,
                ActionKind::RestartWorkload,
                reason,
                ActionOutcome::Skipped,
                Some(format!(
                    "{what} already restarted for config hash {}",
                    self.hash
                )),
            )
        }
    }
}

/// The merge patch that restarts a workload's pods for `hash`.
pub fn restart_patch(hash: &str, at: Timestamp) -> Value {
    json!({
        "spec": {"template": {"metadata": {"annotations": {
            RESTARTED_AT_ANNOTATION: at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            RESTARTED_FOR_HASH_ANNOTATION: hash,
        }}}}
    })
}

/// Restart `workload` (in `namespace`) for config `hash`, unless that was done already.
pub async fn restart_workload(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
    hash: &str,
    now: Timestamp,
) -> Result<RestartOutcome, KubeActError> {
    let restarted = match workload.kind {
        WorkloadKind::Deployment => {
            restart::<Deployment>(client, namespace, &workload.name, hash, now, |d| {
                d.spec
                    .as_ref()
                    .and_then(|s| s.template.metadata.as_ref())
                    .and_then(|m| m.annotations.as_ref())
            })
            .await?
        }
        WorkloadKind::StatefulSet => {
            restart::<StatefulSet>(client, namespace, &workload.name, hash, now, |s| {
                s.spec
                    .as_ref()
                    .and_then(|s| s.template.metadata.as_ref())
                    .and_then(|m| m.annotations.as_ref())
            })
            .await?
        }
    };
    Ok(RestartOutcome {
        kind: workload.kind,
        namespace: namespace.to_owned(),
        name: workload.name.clone(),
        hash: hash.to_owned(),
        restarted,
    })
}

async fn restart<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    hash: &str,
    now: Timestamp,
    template_annotations: impl Fn(&K) -> Option<&BTreeMap<String, String>>,
) -> Result<bool, KubeActError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let kind = K::kind(&()).into_owned();
    let current = api
        .get_opt(name)
        .await
        .map_err(|e| KubeActError::api("reading workload", namespace, name, e))?
        .ok_or_else(|| KubeActError::NotFound {
            kind: kind.clone(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })?;
    let done_for =
        template_annotations(&current).and_then(|a| a.get(RESTARTED_FOR_HASH_ANNOTATION));
    if done_for.map(String::as_str) == Some(hash) {
        tracing::debug!(%kind, name, hash, "workload already restarted for this config");
        return Ok(false);
    }
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    api.patch(name, &params, &Patch::Merge(restart_patch(hash, now)))
        .await
        .map_err(|e| KubeActError::api("restarting workload", namespace, name, e))?;
    tracing::info!(%kind, name, hash, "workload restarted for a new config");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_sets_both_template_annotations() {
        let at: Timestamp = "2026-11-25T03:12:07.123Z".parse().unwrap();
        assert_eq!(
            restart_patch("abc123", at),
            json!({"spec": {"template": {"metadata": {"annotations": {
                "kubectl.kubernetes.io/restartedAt": "2026-11-25T03:12:07Z",
                "tierguard.dev/restarted-for-hash": "abc123"
            }}}}})
        );
    }

    #[test]
    fn records_say_whether_it_restarted() {
        let mut o = RestartOutcome {
            kind: WorkloadKind::Deployment,
            namespace: "clinic".into(),
            name: "backend".into(),
            hash: "h1".into(),
            restarted: true,
        };
        let r = o.record(Timestamp::UNIX_EPOCH, "config changed");
        assert_eq!(r.outcome, ActionOutcome::Ok);
        assert_eq!(
            r.detail.as_deref(),
            Some("Deployment clinic/backend restarted for config hash h1")
        );
        o.restarted = false;
        assert_eq!(
            o.record(Timestamp::UNIX_EPOCH, "x").outcome,
            ActionOutcome::Skipped
        );
    }
}
