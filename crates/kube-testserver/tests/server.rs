//! The server through kube's real client: the behaviour a controller depends on.

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube_testserver::{ApiServer, Kind};
use serde_json::json;

fn config_map(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "data": {"key": value},
    }))
    .unwrap()
}

/// A small custom resource: `spec.size` must be a number from 1 to 10 (checked by the validator,
/// as a CRD's schema and CEL rules would be), and only `spec.size` is in the schema.
fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.dev"},
        "spec": {
            "group": "example.dev",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "properties": {"size": {"type": "integer", "default": 3}}},
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    },
                }},
            }],
        },
    }))
    .unwrap()
}

fn widgets(server: &ApiServer) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.dev", "v1", "Widget"),
        "widgets",
    );
    Api::namespaced_with(server.client(), "default", &resource)
}

async fn widget_server() -> ApiServer {
    ApiServer::builder()
        .kind(Kind::from_crd(&widget_crd()).with_validator(|object| {
            match object["spec"]["size"].as_i64() {
                Some(1..=10) => Ok(()),
                _ => Err(vec![(
                    "spec.size".to_owned(),
                    "must be from 1 to 10".to_owned(),
                )]),
            }
        }))
        .start()
        .await
}

fn widget(name: &str, spec: serde_json::Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "example.dev/v1", "kind": "Widget",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))
    .unwrap()
}

#[tokio::test]
async fn objects_get_resource_versions_and_conflicts_are_409() {
    let server = ApiServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let created = api
        .create(&PostParams::default(), &config_map("a", "1"))
        .await
        .unwrap();
    let v1 = created.metadata.resource_version.clone().unwrap();
    assert!(created.metadata.uid.is_some());
    let mut stale = created.clone();
    let mut updated = created;
    updated
        .data
        .as_mut()
        .unwrap()
        .insert("key".into(), "2".into());
    let updated = api
        .replace("a", &PostParams::default(), &updated)
        .await
        .unwrap();
    assert_ne!(updated.metadata.resource_version.unwrap(), v1);
    // A write with the old resourceVersion is a conflict.
    stale
        .data
        .as_mut()
        .unwrap()
        .insert("key".into(), "3".into());
    let err = api
        .replace("a", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 409));
    assert_eq!(
        api.get("a").await.unwrap().data.unwrap()["key"],
        "2",
        "the conflicting write changed nothing"
    );
    let missing = api.get("absent").await.unwrap_err();
    assert!(matches!(missing, kube::Error::Api(s) if s.code == 404));
}

#[tokio::test]
async fn server_side_apply_tracks_owners_and_refuses_to_take_a_field_without_force() {
    let server = ApiServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let apply = |value: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "cm", "namespace": "default"}, "data": {"key": value}})
    };
    api.patch("cm", &PatchParams::apply("one"), &Patch::Apply(&apply("1")))
        .await
        .unwrap();
    let err = api
        .patch("cm", &PatchParams::apply("two"), &Patch::Apply(&apply("2")))
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 409));
    let forced = api
        .patch(
            "cm",
            &PatchParams::apply("two").force(),
            &Patch::Apply(&apply("2")),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["key"], "2");
    let managers: Vec<String> = forced
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.contains(&"two".to_owned()), "{managers:?}");
}

#[tokio::test]
async fn custom_resources_are_pruned_defaulted_and_validated() {
    let server = widget_server().await;
    let api = widgets(&server);
    // An unknown field is pruned, an absent one defaulted.
    let created = api
        .create(
            &PostParams::default(),
            &widget("w", json!({"colour": "blue"})),
        )
        .await
        .unwrap();
    assert_eq!(created.data["spec"], json!({"size": 3}));
    // The validator refuses with 422 Invalid and the cause's field.
    let err = api
        .create(&PostParams::default(), &widget("big", json!({"size": 99})))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err:?}")
    };
    assert_eq!(status.code, 422);
    assert_eq!(status.reason, "Invalid");
    assert!(status.message.contains("spec.size"), "{}", status.message);
    assert!(api.get_opt("big").await.unwrap().is_none());
    // Status writes go to the status subresource, and are not validated again.
    let status = api
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"ready": true}})),
        )
        .await
        .unwrap();
    assert_eq!(status.data["status"]["ready"], true);
    // An object put straight into the store (as an older CRD let it be) is not validated.
    server
        .put_json(
            &kube_testserver::Gvr::new("example.dev", "v1", "widgets"),
            serde_json::to_value(widget("old", json!({"size": 0}))).unwrap(),
        )
        .unwrap();
    assert_eq!(api.get("old").await.unwrap().data["spec"]["size"], 0);
}

#[tokio::test]
async fn watches_see_changes_in_order() {
    use futures::{StreamExt, TryStreamExt};
    use kube::runtime::watcher;
    let server = ApiServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    // The initial list (empty) ends with InitDone.
    loop {
        if let watcher::Event::InitDone = events.try_next().await.unwrap().unwrap() {
            break;
        }
    }
    api.create(&PostParams::default(), &config_map("x", "1"))
        .await
        .unwrap();
    match events.try_next().await.unwrap().unwrap() {
        watcher::Event::Apply(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("x")),
        other => panic!("{other:?}"),
    }
    api.delete("x", &Default::default()).await.unwrap();
    match events.try_next().await.unwrap().unwrap() {
        watcher::Event::Delete(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("x")),
        other => panic!("{other:?}"),
    }
}
