//! The in-process API server (tests/support/apiserver) against kube's real client and runtime:
//! if these pass, code tested against it sees what it would see on a cluster.

use crate::support;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, ObjectReference, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{
    DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::PartialObjectMeta;
use kube::core::response::Status;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as RecorderEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use kube_testserver::Gvr;
use serde_json::{Value, json};
use tierguard::api::{MemoryTier, MemoryTierStatus};

const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(10);

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.to_string());
    cm.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    cm
}

fn memory_tier(name: &str, config_map: &str) -> MemoryTier {
    serde_json::from_value(json!({
        "apiVersion": "tierguard.dev/v1alpha1",
        "kind": "MemoryTier",
        "metadata": { "name": name },
        "spec": { "target": { "configMapName": config_map } },
    }))
    .expect("a minimal MemoryTier")
}

/// The Status of a failed call; panics (failing the test) if the call succeeded.
fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> Box<Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error Status, got {other:?}"),
    }
}

fn data(cm: &ConfigMap) -> BTreeMap<String, String> {
    cm.data.clone().unwrap_or_default()
}

/// Polls `check` until it holds, failing the test after [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn next<S: futures::Stream + Unpin>(stream: &mut S) -> S::Item {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an event within the wait")
        .expect("the stream goes on")
}

#[tokio::test]
async fn config_map_create_get_list_replace_delete() {
    let server = support::api_server().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), NS);

    let created = cms
        .create(&PostParams::default(), &config_map("one", &[("a", "1")]))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some(), "uid set on create");
    assert!(
        created.metadata.creation_timestamp.is_some(),
        "creationTimestamp set on create"
    );
    assert_eq!(created.metadata.namespace.as_deref(), Some(NS));
    let rv1: u64 = created.resource_version().unwrap().parse().unwrap();

    let exists = api_error(
        cms.create(&PostParams::default(), &config_map("one", &[]))
            .await,
    );
    assert_eq!(
        (exists.code, exists.reason.as_str()),
        (409, "AlreadyExists")
    );
    assert_eq!(exists.message, "configmaps \"one\" already exists");

    let missing = api_error(cms.get("nope").await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "configmaps \"nope\" not found");
    assert!(cms.get_opt("nope").await.unwrap().is_none());

    let mut two = config_map("two", &[("b", "2")]);
    two.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
    cms.create(&PostParams::default(), &two).await.unwrap();
    let other_ns: Api<ConfigMap> = Api::namespaced(server.client(), "elsewhere");
    other_ns
        .create(&PostParams::default(), &config_map("one", &[]))
        .await
        .unwrap();

    let all = cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        all.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(),
        ["one", "two"]
    );
    assert_eq!(
        all.metadata.resource_version,
        Some(server.resource_version().to_string())
    );
    let labelled = cms
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(
        labelled
            .items
            .iter()
            .map(|c| c.name_any())
            .collect::<Vec<_>>(),
        ["two"]
    );
    let not_labelled = cms
        .list(&ListParams::default().labels("app!=web"))
        .await
        .unwrap();
    assert_eq!(
        not_labelled
            .items
            .iter()
            .map(|c| c.name_any())
            .collect::<Vec<_>>(),
        ["one"]
    );
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=two"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let everywhere: Api<ConfigMap> = Api::all(server.client());
    let named_one = everywhere
        .list(&ListParams::default().fields("metadata.name=one"))
        .await
        .unwrap();
    assert_eq!(
        named_one
            .items
            .iter()
            .map(|c| c.namespace().unwrap())
            .collect::<Vec<_>>(),
        ["default", "elsewhere"]
    );
    let by_namespace = everywhere
        .list(&ListParams::default().fields("metadata.namespace=elsewhere"))
        .await
        .unwrap();
    assert_eq!(by_namespace.items.len(), 1);
    let unsupported = api_error(cms.list(&ListParams::default().fields("data.a=1")).await);
    assert_eq!(
        (unsupported.code, unsupported.reason.as_str()),
        (400, "BadRequest")
    );

    // replace: guarded by resourceVersion; every write takes the next global version.
    let mut fresh = cms.get("one").await.unwrap();
    let stale = fresh.clone();
    fresh.data = Some([("a".to_string(), "changed".to_string())].into());
    let replaced = cms
        .replace("one", &PostParams::default(), &fresh)
        .await
        .unwrap();
    let rv2: u64 = replaced.resource_version().unwrap().parse().unwrap();
    assert!(rv2 > rv1);
    assert_eq!(
        replaced.metadata.uid, created.metadata.uid,
        "uid survives updates"
    );
    let conflict = api_error(cms.replace("one", &PostParams::default(), &stale).await);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(
        conflict.message.contains("the object has been modified"),
        "{}",
        conflict.message
    );
    assert_eq!(
        data(&cms.get("one").await.unwrap())["a"],
        "changed",
        "the stale replace changed nothing"
    );

    // A write that changes nothing is a no-op.
    let same = cms
        .replace("one", &PostParams::default(), &replaced)
        .await
        .unwrap();
    assert_eq!(same.resource_version(), replaced.resource_version());

    // merge, strategic (as merge) and JSON patch
    let merged = cms
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": { "a": null, "c": "3" } })),
        )
        .await
        .unwrap();
    assert_eq!(
        data(&merged),
        BTreeMap::from([("c".to_string(), "3".to_string())])
    );
    let strategic = cms
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Strategic(json!({ "data": { "d": "4" } })),
        )
        .await
        .unwrap();
    assert_eq!(data(&strategic).len(), 2);
    let ops: json_patch::Patch =
        serde_json::from_value(json!([{ "op": "replace", "path": "/data/d", "value": "5" }]))
            .unwrap();
    let patched = cms
        .patch("one", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .unwrap();
    assert_eq!(data(&patched)["d"], "5");
    let stale_patch = Patch::Merge(
        json!({ "metadata": { "resourceVersion": rv1.to_string() }, "data": { "e": "6" } }),
    );
    let precondition = api_error(
        cms.patch("one", &PatchParams::default(), &stale_patch)
            .await,
    );
    assert_eq!(
        precondition.code, 409,
        "a resourceVersion in a patch is a precondition"
    );
    let missing_patch = api_error(
        cms.patch("nope", &PatchParams::default(), &Patch::Merge(json!({})))
            .await,
    );
    assert_eq!(missing_patch.code, 404);

    // delete: a Status for built-in kinds, then 404
    let deleted = cms.delete("two", &DeleteParams::default()).await.unwrap();
    assert!(
        deleted.is_right(),
        "a built-in kind answers DELETE with a Status"
    );
    assert_eq!(api_error(cms.get("two").await).code, 404);
    assert_eq!(
        api_error(cms.delete("two", &DeleteParams::default()).await).code,
        404
    );
    let wrong_uid = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("other".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    assert_eq!(api_error(cms.delete("one", &wrong_uid).await).code, 409);

    // generateName, name validation, dry run
    let mut generated = ConfigMap::default();
    generated.metadata.generate_name = Some("gen-".into());
    let generated = cms
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    assert!(
        generated.name_any().starts_with("gen-") && generated.name_any().len() == 9,
        "{}",
        generated.name_any()
    );
    let invalid = api_error(
        cms.create(&PostParams::default(), &config_map("Not_Valid", &[]))
            .await,
    );
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    cms.create(&dry, &config_map("dry", &[])).await.unwrap();
    assert!(
        cms.get_opt("dry").await.unwrap().is_none(),
        "a dry run stores nothing"
    );

    server.shutdown().await;
}

#[tokio::test]
async fn paginated_lists_are_consistent_and_expire() {
    let server = support::api_server().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), NS);
    for i in 0..5 {
        cms.create(
            &PostParams::default(),
            &config_map(&format!("cm-{i}"), &[("v", "old")]),
        )
        .await
        .unwrap();
    }
    let first = cms.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(
        first.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(),
        ["cm-0", "cm-1"]
    );
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().expect("a continue token");

    // Changes after the first page do not show in the next ones.
    cms.patch(
        "cm-3",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "v": "new" } })),
    )
    .await
    .unwrap();
    cms.delete("cm-4", &DeleteParams::default()).await.unwrap();
    cms.create(&PostParams::default(), &config_map("cm-5", &[]))
        .await
        .unwrap();
    let second = cms
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(
        second
            .items
            .iter()
            .map(|c| c.name_any())
            .collect::<Vec<_>>(),
        ["cm-2", "cm-3"]
    );
    assert_eq!(
        data(&second.items[1])["v"],
        "old",
        "pages are read at the first page's version"
    );
    assert_eq!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );
    let third = cms
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(second.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(
        third.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(),
        ["cm-4"]
    );
    assert!(third.metadata.continue_.is_none());

    server.compact();
    let expired = api_error(
        cms.list(&ListParams::default().limit(2).continue_token(&token))
            .await,
    );
    assert_eq!((expired.code, expired.reason.as_str()), (410, "Expired"));
    server.shutdown().await;
}

#[tokio::test]
async fn server_side_apply_tracks_managers_conflicts_and_removals() {
    let server = support::api_server().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), NS);
    let apply = |fields: Value| {
        Patch::Apply(
            json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "cfg" }, "data": fields }),
        )
    };
    let alpha = PatchParams::apply("alpha");
    let beta = PatchParams::apply("beta");

    // apply creates the object
    let created = cms
        .patch("cfg", &alpha, &apply(json!({ "a": "1", "b": "2" })))
        .await
        .unwrap();
    assert_eq!(data(&created).len(), 2);
    let managed = created.metadata.managed_fields.clone().unwrap();
    assert_eq!(managed.len(), 1);
    assert_eq!(
        (
            managed[0].manager.as_deref(),
            managed[0].operation.as_deref()
        ),
        (Some("alpha"), Some("Apply"))
    );
    assert_eq!(
        serde_json::to_value(managed[0].fields_v1.as_ref().unwrap()).unwrap(),
        json!({ "f:data": { "f:a": {}, "f:b": {} } })
    );

    // applying the same again changes nothing
    let again = cms
        .patch("cfg", &alpha, &apply(json!({ "a": "1", "b": "2" })))
        .await
        .unwrap();
    assert_eq!(again.resource_version(), created.resource_version());

    // another manager changing alpha's field: a conflict naming alpha and the field
    let conflict = api_error(cms.patch("cfg", &beta, &apply(json!({ "a": "9" }))).await);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(
        conflict.message.contains("conflict with \"alpha\""),
        "{}",
        conflict.message
    );
    assert!(conflict.message.contains(".data.a"), "{}", conflict.message);
    assert_eq!(
        data(&cms.get("cfg").await.unwrap())["a"],
        "1",
        "a conflicting apply changes nothing"
    );

    // the same value is no conflict: beta becomes a co-owner of b
    cms.patch("cfg", &beta, &apply(json!({ "b": "2" })))
        .await
        .unwrap();
    // force moves ownership of a to beta
    let forced = cms
        .patch(
            "cfg",
            &beta.clone().force(),
            &apply(json!({ "a": "9", "b": "2" })),
        )
        .await
        .unwrap();
    assert_eq!(data(&forced)["a"], "9");
    let owners = |cm: &ConfigMap, field: &str| -> Vec<String> {
        cm.metadata
            .managed_fields
            .iter()
            .flatten()
            .filter(|e| {
                serde_json::to_value(&e.fields_v1).unwrap()["f:data"]
                    .get(format!("f:{field}"))
                    .is_some()
            })
            .map(|e| e.manager.clone().unwrap())
            .collect()
    };
    assert_eq!(owners(&forced, "a"), ["beta"]);
    assert_eq!(owners(&forced, "b"), ["alpha", "beta"]);

    // alpha stops applying b: b stays, beta still owns it; alpha applying a again conflicts
    let dropped = cms
        .patch("cfg", &alpha, &apply(json!({ "c": "3" })))
        .await
        .unwrap();
    assert_eq!(
        data(&dropped),
        BTreeMap::from([
            ("a".into(), "9".into()),
            ("b".into(), "2".into()),
            ("c".into(), "3".into())
        ])
    );
    // beta stops applying b, which nobody else owns now: b is removed
    let removed = cms
        .patch("cfg", &beta, &apply(json!({ "a": "9" })))
        .await
        .unwrap();
    assert_eq!(
        data(&removed),
        BTreeMap::from([("a".into(), "9".into()), ("c".into(), "3".into())])
    );

    // a plain update takes the fields it changes from everyone, and conflicts with later applies
    let edit = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    let edited = cms
        .patch(
            "cfg",
            &edit,
            &Patch::Merge(json!({ "data": { "c": "edited" } })),
        )
        .await
        .unwrap();
    assert_eq!(owners(&edited, "c"), ["kubectl-edit"]);
    let update_entry = edited
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|e| e.manager.as_deref() == Some("kubectl-edit"))
        .unwrap();
    assert_eq!(update_entry.operation.as_deref(), Some("Update"));
    let conflict = api_error(cms.patch("cfg", &alpha, &apply(json!({ "c": "3" }))).await);
    assert!(
        conflict.message.contains("conflict with \"kubectl-edit\""),
        "{}",
        conflict.message
    );

    // labels and annotations are fields like any other
    let labelled = Patch::Apply(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "cfg", "labels": { "team": "memory" } },
    }));
    let with_label = cms
        .patch("cfg", &PatchParams::apply("labeller"), &labelled)
        .await
        .unwrap();
    assert_eq!(with_label.labels()["team"], "memory");
    assert_eq!(
        data(&with_label).len(),
        2,
        "applying metadata only leaves data alone"
    );

    // maps are granular: the creator of an empty map does not own the keys others add to it
    cms.create(&PostParams::default(), &config_map("shared", &[]))
        .await
        .unwrap();
    let shared = |fields: Value| {
        Patch::Apply(
            json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "shared" }, "data": fields }),
        )
    };
    cms.patch("shared", &alpha, &shared(json!({ "k": "1" })))
        .await
        .unwrap();
    let emptied = cms
        .patch("shared", &alpha, &shared(json!({})))
        .await
        .unwrap();
    assert!(
        data(&emptied).is_empty(),
        "a key only the applier owned goes when it stops applying it"
    );

    // an apply with a stale resourceVersion is a conflict
    let stale = Patch::Apply(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "cfg", "resourceVersion": created.resource_version() },
    }));
    assert_eq!(api_error(cms.patch("cfg", &alpha, &stale).await).code, 409);
    server.shutdown().await;
}

#[tokio::test]
async fn memory_tier_status_subresource_generation_and_schema() {
    let server = support::api_server().await;
    let tiers: Api<MemoryTier> = Api::namespaced(server.client(), NS);

    let mut tier = memory_tier("clinic", "clinic-flags");
    tier.status = Some(MemoryTierStatus {
        observed_generation: Some(42),
        ..Default::default()
    });
    let created = tiers.create(&PostParams::default(), &tier).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.status.is_none(), "status is dropped on create");

    // status writes: only .status changes, the generation stays
    let status_patch = Patch::Merge(json!({
        "spec": { "target": { "configMapName": "sneaky" } },
        "status": { "observedGeneration": 1, "phase": "Healthy" },
    }));
    let with_status = tiers
        .patch_status("clinic", &PatchParams::default(), &status_patch)
        .await
        .unwrap();
    assert_eq!(
        with_status.status.as_ref().unwrap().observed_generation,
        Some(1)
    );
    assert_eq!(
        with_status.spec.target.config_map_name, "clinic-flags",
        "a status write ignores spec"
    );
    assert_eq!(with_status.metadata.generation, Some(1));
    assert!(with_status.resource_version() != created.resource_version());

    // main-resource writes: .status ignored, generation counts spec changes only
    let spec_patch =
        Patch::Merge(json!({ "spec": { "mode": "DryRun" }, "status": { "phase": "Stalled" } }));
    let changed = tiers
        .patch("clinic", &PatchParams::default(), &spec_patch)
        .await
        .unwrap();
    assert_eq!(changed.metadata.generation, Some(2));
    assert_eq!(
        changed.status.as_ref().unwrap().phase,
        with_status.status.as_ref().unwrap().phase,
        "a main write ignores status"
    );
    let labels_only = Patch::Merge(json!({ "metadata": { "labels": { "x": "y" } } }));
    let relabelled = tiers
        .patch("clinic", &PatchParams::default(), &labels_only)
        .await
        .unwrap();
    assert_eq!(
        relabelled.metadata.generation,
        Some(2),
        "metadata changes keep the generation"
    );

    // status by server-side apply, as the controller writes it
    let status_apply = Patch::Apply(json!({
        "apiVersion": "tierguard.dev/v1alpha1",
        "kind": "MemoryTier",
        "status": { "observedGeneration": 2, "phase": "Degraded" },
    }));
    let applied = tiers
        .patch_status(
            "clinic",
            &PatchParams::apply("tierguard").force(),
            &status_apply,
        )
        .await
        .unwrap();
    assert_eq!(
        applied.status.as_ref().unwrap().observed_generation,
        Some(2)
    );
    let entry = applied
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|e| e.manager.as_deref() == Some("tierguard"))
        .unwrap();
    assert_eq!(entry.subresource.as_deref(), Some("status"));
    assert_eq!(applied.metadata.generation, Some(2));
    assert_eq!(
        tiers.get_status("clinic").await.unwrap().status,
        applied.status
    );

    // status fields have owners too; a status apply does not create a missing object
    let other_status = Patch::Apply(json!({
        "apiVersion": "tierguard.dev/v1alpha1",
        "kind": "MemoryTier",
        "status": { "phase": "Healthy" },
    }));
    let conflict = api_error(
        tiers
            .patch_status("clinic", &PatchParams::apply("intruder"), &other_status)
            .await,
    );
    assert!(
        conflict.message.contains("conflict with \"tierguard\"")
            && conflict.message.contains(".status.phase"),
        "{}",
        conflict.message
    );
    let missing = api_error(
        tiers
            .patch_status("absent", &PatchParams::apply("tierguard"), &status_apply)
            .await,
    );
    assert_eq!(missing.code, 404);
    // a main-resource apply ignores status and owns none of it
    let main_apply = Patch::Apply(json!({
        "apiVersion": "tierguard.dev/v1alpha1",
        "kind": "MemoryTier",
        "spec": { "target": { "configMapName": "clinic-flags" } },
        "status": { "phase": "Stalled" },
    }));
    let gitops = tiers
        .patch("clinic", &PatchParams::apply("gitops"), &main_apply)
        .await
        .unwrap();
    assert_eq!(
        gitops.status.as_ref().unwrap().phase,
        applied.status.as_ref().unwrap().phase
    );
    let gitops_entry = gitops
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|e| e.manager.as_deref() == Some("gitops"))
        .unwrap();
    assert!(
        serde_json::to_value(gitops_entry.fields_v1.as_ref().unwrap())
            .unwrap()
            .get("f:status")
            .is_none()
    );

    // replace_status, and PUT of a custom resource needs a resourceVersion
    let mut next = tiers.get("clinic").await.unwrap();
    next.status.as_mut().unwrap().observed_generation = Some(3);
    let replaced = tiers
        .replace_status("clinic", &PostParams::default(), &next)
        .await
        .unwrap();
    assert_eq!(replaced.status.unwrap().observed_generation, Some(3));
    let mut unversioned = tiers.get("clinic").await.unwrap();
    unversioned.metadata.resource_version = None;
    let invalid = api_error(
        tiers
            .replace("clinic", &PostParams::default(), &unversioned)
            .await,
    );
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));

    // DELETE of a custom resource answers with the object
    assert!(
        tiers
            .delete("clinic", &DeleteParams::default())
            .await
            .unwrap()
            .is_left()
    );

    // structural schema: unknown fields pruned, defaults filled in
    let gvr = Gvr::of::<MemoryTier>();
    let raw = server
        .put_json(
            &gvr,
            json!({
                "apiVersion": "tierguard.dev/v1alpha1",
                "kind": "MemoryTier",
                "metadata": { "name": "raw", "namespace": NS },
                "spec": { "target": { "configMapName": "raw-flags" }, "bogus": true },
            }),
        )
        .unwrap();
    assert!(
        raw["spec"].get("bogus").is_none(),
        "unknown fields are pruned"
    );
    assert_eq!(
        raw["spec"]["mode"], "Enforce",
        "schema defaults are applied"
    );
    assert_eq!(
        tiers.get("raw").await.unwrap().spec.target.config_map_name,
        "raw-flags"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn watcher_lists_then_follows_changes() {
    let server = support::api_server().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), NS);
    cms.create(&PostParams::default(), &config_map("before", &[]))
        .await
        .unwrap();

    let mut events = watcher(cms.clone(), watcher::Config::default()).boxed();
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::Init
    ));
    match next(&mut events).await.unwrap() {
        watcher::Event::InitApply(cm) => assert_eq!(cm.name_any(), "before"),
        other => panic!("expected InitApply, got {other:?}"),
    }
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::InitDone
    ));

    cms.create(&PostParams::default(), &config_map("after", &[("k", "1")]))
        .await
        .unwrap();
    // a write to another namespace and another kind is not seen
    let elsewhere: Api<ConfigMap> = Api::namespaced(server.client(), "elsewhere");
    elsewhere
        .create(&PostParams::default(), &config_map("far", &[]))
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(server.client(), NS);
    let mut secret = Secret::default();
    secret.metadata.name = Some("token".into());
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    cms.patch(
        "after",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "k": "2" } })),
    )
    .await
    .unwrap();
    cms.delete("before", &DeleteParams::default())
        .await
        .unwrap();

    match next(&mut events).await.unwrap() {
        watcher::Event::Apply(cm) => assert_eq!(
            (cm.name_any(), data(&cm).get("k").cloned()),
            ("after".into(), Some("1".into()))
        ),
        other => panic!("expected Apply(after), got {other:?}"),
    }
    match next(&mut events).await.unwrap() {
        watcher::Event::Apply(cm) => assert_eq!(data(&cm)["k"], "2"),
        other => panic!("expected Apply(after, k=2), got {other:?}"),
    }
    match next(&mut events).await.unwrap() {
        watcher::Event::Delete(cm) => assert_eq!(cm.name_any(), "before"),
        other => panic!("expected Delete(before), got {other:?}"),
    }

    // metadata-only access (PartialObjectMetadata), as kube's metadata_watcher uses it
    let meta = cms.get_metadata("after").await.unwrap();
    assert_eq!(meta.metadata.name.as_deref(), Some("after"));
    assert_eq!(
        meta.types.as_ref().map(|t| t.kind.as_str()),
        Some("PartialObjectMetadata")
    );
    let metadata_api: Api<PartialObjectMeta<ConfigMap>> = Api::namespaced(server.client(), NS);
    let mut metadata_events = watcher(metadata_api, watcher::Config::default()).boxed();
    assert!(matches!(
        next(&mut metadata_events).await.unwrap(),
        watcher::Event::Init
    ));
    assert!(
        matches!(next(&mut metadata_events).await.unwrap(), watcher::Event::InitApply(m) if m.name_any() == "after")
    );
    assert!(matches!(
        next(&mut metadata_events).await.unwrap(),
        watcher::Event::InitDone
    ));
    cms.patch(
        "after",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "labels": { "l": "1" } } })),
    )
    .await
    .unwrap();
    match next(&mut metadata_events).await.unwrap() {
        watcher::Event::Apply(m) => assert_eq!(m.labels()["l"], "1"),
        other => panic!("expected Apply, got {other:?}"),
    }

    // one object by name (a fieldSelector on metadata.name), as await_condition uses it
    let mut one = watcher::watch_object(cms.clone(), "after").boxed();
    assert_eq!(next(&mut one).await.unwrap().unwrap().name_any(), "after");
    cms.delete("after", &DeleteParams::default()).await.unwrap();
    assert!(
        next(&mut one).await.unwrap().is_none(),
        "the deletion is seen"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn watch_across_namespaces_with_label_selector() {
    let server = support::api_server().await;
    let client = server.client();
    let all: Api<MemoryTier> = Api::all(client.clone());
    let config = watcher::Config::default().labels("shard=a");
    let mut events = watcher(all, config).boxed();
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::Init
    ));
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::InitDone
    ));

    for ns in ["team-1", "team-2"] {
        let tiers: Api<MemoryTier> = Api::namespaced(client.clone(), ns);
        let mut tier = memory_tier("tier", "flags");
        tier.metadata.labels = Some([("shard".to_string(), "a".to_string())].into());
        tiers.create(&PostParams::default(), &tier).await.unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..2 {
        match next(&mut events).await.unwrap() {
            watcher::Event::Apply(tier) => seen.push(tier.namespace().unwrap()),
            other => panic!("expected Apply, got {other:?}"),
        }
    }
    assert_eq!(seen, ["team-1", "team-2"]);

    // leaving the selection is a deletion for this watch; coming back an addition
    let team1: Api<MemoryTier> = Api::namespaced(client.clone(), "team-1");
    team1
        .patch(
            "tier",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "shard": "b" } } })),
        )
        .await
        .unwrap();
    match next(&mut events).await.unwrap() {
        watcher::Event::Delete(tier) => assert_eq!(tier.labels()["shard"], "b"),
        other => panic!("expected Delete, got {other:?}"),
    }
    team1
        .patch(
            "tier",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "shard": "a" } } })),
        )
        .await
        .unwrap();
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::Apply(_)
    ));
    server.shutdown().await;
}

#[tokio::test]
async fn watch_bookmarks_timeouts_and_expired_versions() {
    let server = support::api_server_builder()
        .bookmark_interval(Duration::from_millis(100))
        .start()
        .await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), NS);
    cms.create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();

    // bookmarks carry the current version, and the stream ends at timeoutSeconds
    let mut stream = cms
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap()
        .boxed();
    cms.create(&PostParams::default(), &config_map("b", &[]))
        .await
        .unwrap();
    let mut added = None;
    let mut bookmark = None;
    while let Some(event) = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("the watch ends by itself")
    {
        match event.unwrap() {
            WatchEvent::Added(cm) => added = Some(cm),
            WatchEvent::Bookmark(b) => bookmark = Some(b),
            other => panic!("unexpected {other:?}"),
        }
    }
    let added = added.expect("the new object arrived");
    assert_eq!(added.name_any(), "b");
    assert_eq!(
        bookmark.expect("a bookmark").metadata.resource_version,
        server.resource_version().to_string()
    );

    // a version older than the history: one ERROR event with 410 Expired
    server.compact();
    let mut stream = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match next(&mut stream).await.unwrap() {
        WatchEvent::Error(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected an Expired error, got {other:?}"),
    }
    assert!(stream.next().await.is_none());

    // kube's watcher relists after Expired: restarted by a timeout, with versions compacted away
    let config = watcher::Config::default().timeout(1).disable_bookmarks();
    let mut events = watcher(cms.clone(), config).boxed();
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::Init
    ));
    let mut initial = 0;
    while let watcher::Event::InitApply(_) = next(&mut events).await.unwrap() {
        initial += 1;
    }
    assert_eq!(initial, 2);
    let secrets: Api<Secret> = Api::namespaced(server.client(), NS);
    let mut secret = Secret::default();
    secret.metadata.name = Some("s".into());
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    server.compact();
    match next(&mut events).await {
        Err(watcher::Error::WatchError(status)) => assert_eq!(status.code, 410),
        other => panic!("expected the watcher to report 410, got {other:?}"),
    }
    assert!(
        matches!(next(&mut events).await.unwrap(), watcher::Event::Init),
        "the watcher relists"
    );

    // sendInitialEvents: the streaming-list start kube supports
    let config = watcher::Config::default().streaming_lists();
    let mut events = watcher(cms.clone(), config).boxed();
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::Init
    ));
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::InitApply(_)
    ));
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::InitApply(_)
    ));
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::InitDone
    ));
    server.shutdown().await;
}

#[tokio::test]
async fn lease_replace_with_stale_version_conflicts() {
    let server = support::api_server().await;
    let leases: Api<Lease> = Api::namespaced(server.client(), NS);
    let mut lease = Lease::default();
    lease.metadata.name = Some("leader".into());
    leases.create(&PostParams::default(), &lease).await.unwrap();

    // two contenders read the same version; the first write wins, the second gets 409
    let contender_a = Api::<Lease>::namespaced(server.client_as("a"), NS);
    let contender_b = Api::<Lease>::namespaced(server.client_as("b"), NS);
    let mut seen_by_a = contender_a.get("leader").await.unwrap();
    let mut seen_by_b = contender_b.get("leader").await.unwrap();
    seen_by_a.spec.get_or_insert_default().holder_identity = Some("a".into());
    seen_by_b.spec.get_or_insert_default().holder_identity = Some("b".into());
    contender_a
        .replace("leader", &PostParams::default(), &seen_by_a)
        .await
        .unwrap();
    let lost = api_error(
        contender_b
            .replace("leader", &PostParams::default(), &seen_by_b)
            .await,
    );
    assert_eq!((lost.code, lost.reason.as_str()), (409, "Conflict"));
    let holder = leases
        .get("leader")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_eq!(holder.as_deref(), Some("a"));

    let puts: Vec<_> = server
        .writes()
        .into_iter()
        .filter(|w| w.method == "PUT")
        .collect();
    assert_eq!(
        puts.iter()
            .map(|w| (w.user.clone().unwrap(), w.status))
            .collect::<Vec<_>>(),
        [("a".to_string(), 200), ("b".to_string(), 409)]
    );
    server.shutdown().await;
}

/// kube-lease-manager takes an orphaned lease with a server-side apply under a per-replica field
/// manager: a second replica's apply then conflicts on `holderIdentity`, which is what keeps two
/// replicas from leading at once. The first apply is delayed so that the others race past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_manager_elects_exactly_one_leader() {
    let server = support::api_server().await;
    let lease_path =
        format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/tierguard-leader");
    server.delay_next(Some("PATCH"), &lease_path, 1, Duration::from_secs(1));
    let identities = ["replica-a", "replica-b", "replica-c"];
    let managers = futures::future::join_all(identities.map(|identity| {
        kube_lease_manager::LeaseManagerBuilder::new(server.client_as(identity), "tierguard-leader")
            .with_namespace(NS)
            .with_identity(identity)
            .with_duration(3)
            .with_grace(1)
            .build()
    }))
    .await;
    let mut contenders = Vec::new();
    for manager in managers {
        contenders.push(manager.unwrap().watch().await);
    }
    let leaders = |contenders: &[(tokio::sync::watch::Receiver<bool>, _)]| {
        contenders.iter().filter(|(rx, _)| *rx.borrow()).count()
    };
    eventually("a leader", || std::future::ready(leaders(&contenders) == 1)).await;
    for _ in 0..30 {
        assert!(leaders(&contenders) <= 1, "two leaders at once");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leases: Api<Lease> = Api::namespaced(server.client(), NS);
    let holder = || async {
        leases
            .get("tierguard-leader")
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
            .unwrap()
    };
    let leader = contenders.iter().position(|(rx, _)| *rx.borrow()).unwrap();
    assert_eq!(holder().await, identities[leader]);
    let applies: Vec<u16> = server
        .writes()
        .iter()
        .filter(|w| w.content_type.as_deref() == Some("application/apply-patch+yaml"))
        .map(|w| w.status)
        .collect();
    assert!(
        applies.contains(&200) && applies.contains(&409),
        "one apply won, a racing one conflicted: {applies:?}"
    );

    // the leader goes away without releasing: another takes over once the lease expires
    let (_, task) = contenders.remove(leader);
    task.abort();
    let mut remaining = identities.to_vec();
    remaining.remove(leader);
    eventually("a new leader", || {
        std::future::ready(leaders(&contenders) == 1)
    })
    .await;
    let leader = contenders.iter().position(|(rx, _)| *rx.borrow()).unwrap();
    assert_eq!(holder().await, remaining[leader]);
    server.shutdown().await;
}

#[tokio::test]
async fn events_through_both_apis_and_the_recorder() {
    let server = support::api_server().await;
    let client = server.client();
    let core_events: Api<CoreEvent> = Api::namespaced(client.clone(), NS);
    let mut event = CoreEvent::default();
    event.metadata.name = Some("clinic.1".into());
    event.reason = Some("Scaled".into());
    event.type_ = Some("Normal".into());
    event.involved_object = ObjectReference {
        kind: Some("MemoryTier".into()),
        name: Some("clinic".into()),
        ..Default::default()
    };
    core_events
        .create(&PostParams::default(), &event)
        .await
        .unwrap();
    let found = core_events
        .list(&ListParams::default().fields("involvedObject.name=clinic,reason=Scaled"))
        .await
        .unwrap();
    assert_eq!(found.items.len(), 1);

    // kube's Recorder: events.k8s.io/v1, created once, then patched as a series
    let tiers: Api<MemoryTier> = Api::namespaced(client.clone(), NS);
    let tier = tiers
        .create(&PostParams::default(), &memory_tier("clinic", "flags"))
        .await
        .unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "tierguard".into(),
            instance: None,
        },
    );
    let note = RecorderEvent {
        type_: EventType::Warning,
        reason: "MemoryCritical".into(),
        note: Some("used_memory at 92% of maxmemory".into()),
        action: "Remediate".into(),
        secondary: None,
    };
    let reference = tier.object_ref(&());
    recorder.publish(&note, &reference).await.unwrap();
    recorder.publish(&note, &reference).await.unwrap();
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let listed = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        listed.items.len(),
        1,
        "the repeat is a series on the same Event"
    );
    let recorded = &listed.items[0];
    assert_eq!(recorded.reason.as_deref(), Some("MemoryCritical"));
    assert_eq!(recorded.regarding.as_ref().unwrap().uid, tier.metadata.uid);
    assert_eq!(recorded.series.as_ref().map(|s| s.count), Some(2));
    let by_regarding = events
        .list(&ListParams::default().fields("regarding.name=clinic"))
        .await
        .unwrap();
    assert_eq!(by_regarding.items.len(), 1);
    let writes: Vec<(String, String)> = server
        .writes()
        .into_iter()
        .filter(|w| w.path.starts_with("/apis/events.k8s.io/v1/"))
        .map(|w| (w.method, w.content_type.unwrap_or_default()))
        .collect();
    assert_eq!(
        writes,
        [
            ("POST".into(), "application/json".into()),
            ("PATCH".into(), "application/merge-patch+json".into())
        ]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn controller_reconciles_tiers_and_their_config_maps() {
    let server = support::api_server().await;
    let client = server.client();
    let tiers: Api<MemoryTier> = Api::all(client.clone());
    let cms: Api<ConfigMap> = Api::all(client.clone());

    async fn reconcile(tier: Arc<MemoryTier>, client: Arc<Client>) -> Result<Action, kube::Error> {
        let ns = tier.namespace().unwrap();
        let owner = tier.controller_owner_ref(&()).unwrap();
        let cm = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": tier.spec.target.config_map_name, "ownerReferences": [owner] },
            "data": { "MODE": format!("{:?}", tier.spec.mode) },
        });
        let params = PatchParams::apply("tierguard").force();
        Api::<ConfigMap>::namespaced((*client).clone(), &ns)
            .patch(
                &tier.spec.target.config_map_name,
                &params,
                &Patch::Apply(cm),
            )
            .await?;
        let status = json!({
            "apiVersion": "tierguard.dev/v1alpha1",
            "kind": "MemoryTier",
            "status": { "observedGeneration": tier.metadata.generation, "phase": "Healthy" },
        });
        Api::<MemoryTier>::namespaced((*client).clone(), &ns)
            .patch_status(&tier.name_any(), &params, &Patch::Apply(status))
            .await?;
        Ok(Action::await_change())
    }
    fn error_policy(_: Arc<MemoryTier>, _: &kube::Error, _: Arc<Client>) -> Action {
        Action::requeue(Duration::from_millis(100))
    }
    let controller = tokio::spawn(
        Controller::new(tiers.clone(), watcher::Config::default())
            .owns(cms.clone(), watcher::Config::default())
            .run(reconcile, error_policy, Arc::new(client.clone()))
            .for_each(|_| std::future::ready(())),
    );

    let team: Api<MemoryTier> = Api::namespaced(client.clone(), "team");
    let team_cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    team.create(
        &PostParams::default(),
        &memory_tier("clinic", "clinic-flags"),
    )
    .await
    .unwrap();
    eventually("the ConfigMap and the status", || async {
        let cm = team_cms.get_opt("clinic-flags").await.unwrap();
        let status = team.get("clinic").await.unwrap().status;
        cm.is_some() && status.and_then(|s| s.observed_generation) == Some(1)
    })
    .await;
    assert_eq!(
        data(&team_cms.get("clinic-flags").await.unwrap())["MODE"],
        "Enforce"
    );

    // a spec change is reconciled: generation 2 observed, the ConfigMap follows
    team.patch(
        "clinic",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "mode": "DryRun" } })),
    )
    .await
    .unwrap();
    eventually("generation 2 observed", || async {
        team.get("clinic")
            .await
            .unwrap()
            .status
            .and_then(|s| s.observed_generation)
            == Some(2)
    })
    .await;
    assert_eq!(
        data(&team_cms.get("clinic-flags").await.unwrap())["MODE"],
        "DryRun"
    );

    // an owned ConfigMap deleted by someone is put back (the owns() watch triggers a reconcile)
    team_cms
        .delete("clinic-flags", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the ConfigMap restored", || async {
        team_cms.get_opt("clinic-flags").await.unwrap().is_some()
    })
    .await;

    // deleting the tier garbage-collects the ConfigMap it owns
    team.delete("clinic", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the owned ConfigMap collected", || async {
        team_cms.get_opt("clinic-flags").await.unwrap().is_none()
    })
    .await;
    controller.abort();
    server.shutdown().await;
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let server = support::api_server().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), NS);
    let mut cm = config_map("held", &[]);
    cm.metadata.finalizers = Some(vec!["tierguard.dev/cleanup".into()]);
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let marked = cms
        .delete("held", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("the object, still there");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(cms.get_opt("held").await.unwrap().is_some());
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
    )
    .await
    .unwrap();
    assert!(
        cms.get_opt("held").await.unwrap().is_none(),
        "gone once its finalizers are"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn request_log_and_injected_faults() {
    let server = support::api_server().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client_as("alice"), NS);
    cms.create(&PostParams::default(), &config_map("cm", &[]))
        .await
        .unwrap();

    let path = format!("/api/v1/namespaces/{NS}/configmaps/cm");
    server.fail_next(Some("PATCH"), &path, 1, 500);
    let apply =
        Patch::Apply(json!({ "apiVersion": "v1", "kind": "ConfigMap", "data": { "k": "v" } }));
    let failed = api_error(
        cms.patch("cm", &PatchParams::apply("tierguard"), &apply)
            .await,
    );
    assert_eq!(
        (failed.code, failed.reason.as_str()),
        (500, "InternalError")
    );
    assert!(
        server
            .get_json(&Gvr::of::<ConfigMap>(), NS, "cm")
            .unwrap()
            .pointer("/data/k")
            .is_none(),
        "a failed request changes nothing"
    );
    assert!(server.pending_faults().is_empty());
    let ok = cms
        .patch("cm", &PatchParams::apply("tierguard"), &apply)
        .await
        .unwrap();
    assert_eq!(data(&ok)["k"], "v");

    server.delay_next(Some("GET"), &path, 1, Duration::from_millis(300));
    let started = std::time::Instant::now();
    cms.get("cm").await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the GET waited for the injected delay"
    );

    let writes = server.writes();
    assert_eq!(writes.len(), 3);
    assert!(writes.iter().all(|w| w.user.as_deref() == Some("alice")));
    assert_eq!(
        (
            writes[1].method.as_str(),
            writes[1].path.as_str(),
            writes[1].status
        ),
        ("PATCH", path.as_str(), 500)
    );
    assert!(writes[1].injected);
    assert_eq!(writes[2].field_manager.as_deref(), Some("tierguard"));
    assert_eq!(
        writes[2].content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(writes[2].status, 200);
    server.clear_requests();
    assert!(server.requests().is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn direct_store_access_is_seen_by_clients_and_watches() {
    let server = support::api_server().await;
    let gvr = Gvr::of::<ConfigMap>();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), NS);
    let mut events = watcher(cms.clone(), watcher::Config::default()).boxed();
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::Init
    ));
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::InitDone
    ));

    let stored = server
        .put_json(&gvr, json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "seeded", "namespace": NS }, "data": { "a": "1" } }))
        .unwrap();
    assert_eq!(
        stored["metadata"]["resourceVersion"],
        server.resource_version().to_string()
    );
    assert!(
        matches!(next(&mut events).await.unwrap(), watcher::Event::Apply(cm) if cm.name_any() == "seeded")
    );
    assert_eq!(data(&cms.get("seeded").await.unwrap())["a"], "1");
    assert_eq!(server.list_json(&gvr).len(), 1);
    assert!(server.delete_json(&gvr, NS, "seeded").is_some());
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::Delete(_)
    ));
    assert!(server.get_json(&gvr, NS, "seeded").is_none());
    assert!(
        server.requests().iter().all(|r| r.method == "GET"),
        "direct access is not logged as requests"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn kubeconfig_discovery_and_dynamic_access() {
    let server = support::api_server().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig_as(&path, "bob").unwrap();
    tierguard::install_crypto_provider();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = Client::try_from(config).unwrap();
    assert_eq!(client.apiserver_version().await.unwrap().major, "1");

    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let (resource, capabilities) = discovery
        .groups()
        .find(|g| g.name() == "tierguard.dev")
        .expect("the tierguard.dev group")
        .recommended_kind("MemoryTier")
        .expect("MemoryTier is served");
    assert_eq!(resource.plural, "memorytiers");
    assert!(
        capabilities
            .subresources
            .iter()
            .any(|(s, _)| s.plural == "memorytiers/status" || s.plural == "status")
    );
    let aggregated = kube::Discovery::new(client.clone())
        .run_aggregated()
        .await
        .unwrap();
    assert!(aggregated.has_group("coordination.k8s.io") && aggregated.has_group("apps"));

    let dynamic: Api<DynamicObject> = Api::namespaced_with(client, NS, &resource);
    dynamic
        .patch(
            "dyn",
            &PatchParams::apply("bob"),
            &Patch::Apply(json!({
                "apiVersion": "tierguard.dev/v1alpha1",
                "kind": "MemoryTier",
                "spec": { "target": { "configMapName": "dyn-flags" } },
            })),
        )
        .await
        .unwrap();
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.user.as_deref() == Some("bob")),
        "the kubeconfig's token identifies the caller"
    );
    assert!(
        server
            .get_json(&Gvr::of::<MemoryTier>(), NS, "dyn")
            .is_some()
    );
    server.shutdown().await;
}
