//! The resources the server serves and the discovery documents that describe them.
//!
//! A resource is described once, as a [`Kind`]; routing, storage, watch and discovery all follow
//! from that description, so serving one more resource is one line in [`default_kinds`] (or
//! [`ApiServerBuilder::kind`](super::ApiServerBuilder::kind) from a test).

use std::any::TypeId;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResourceExt, Resource};
use serde_json::{Value, json};

/// Group, version and (plural) resource name: how a resource is addressed in a URL.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gvr {
    /// Empty for the core group.
    pub group: String,
    pub version: String,
    pub resource: String,
}

impl Gvr {
    pub fn new(group: &str, version: &str, resource: &str) -> Self {
        Self {
            group: group.to_string(),
            version: version.to_string(),
            resource: resource.to_string(),
        }
    }

    /// The Gvr of a typed resource, e.g. `Gvr::of::<ConfigMap>()`.
    pub fn of<K: Resource<DynamicType = ()>>() -> Self {
        Self::new(&K::group(&()), &K::version(&()), &K::plural(&()))
    }

    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// `configmaps` or `memorytiers.tierguard.dev`, as the API server names a resource in messages.
impl fmt::Display for Gvr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// Why a write is refused: (field path, message) pairs.
pub type Causes = Vec<(String, String)>;

/// A check of one object.
pub type Check = dyn Fn(&Value) -> Result<(), Causes> + Send + Sync;

/// Validation of a resource's objects: `Ok`, or the causes of a refusal.
#[derive(Clone)]
pub struct Validator(pub Arc<Check>);

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Validator")
    }
}

/// How the server treats one resource.
#[derive(Clone, Debug)]
pub struct Kind {
    pub gvr: Gvr,
    pub kind: String,
    pub namespaced: bool,
    /// Has a `/status` subresource: writes to the main resource ignore `.status` and writes to
    /// `/status` change only `.status`.
    pub status_subresource: bool,
    /// Keeps `metadata.generation`, incremented when anything outside metadata and status changes.
    pub generation: bool,
    /// Custom-resource semantics: DELETE answers with the object, PUT needs a resourceVersion, and
    /// the structural schema (if any) prunes unknown fields and applies defaults.
    pub custom: bool,
    /// `openAPIV3Schema` of a custom resource.
    pub schema: Option<Arc<Value>>,
    /// What the schema's types, patterns and CEL rules say of a created or updated object (after
    /// pruning and defaulting), as the API server validates it.
    pub validator: Option<Validator>,
    /// Fields usable in a fieldSelector besides `metadata.name` and `metadata.namespace`.
    pub field_selectors: Vec<String>,
    pub short_names: Vec<String>,
}

impl Kind {
    /// A built-in resource from its k8s-openapi type.
    pub fn builtin<K: Resource<DynamicType = ()>>() -> Self
    where
        K::Scope: 'static,
    {
        Self {
            gvr: Gvr::of::<K>(),
            kind: K::kind(&()).into_owned(),
            namespaced: TypeId::of::<K::Scope>() == TypeId::of::<NamespaceResourceScope>(),
            status_subresource: false,
            generation: false,
            custom: false,
            schema: None,
            validator: None,
            field_selectors: Vec::new(),
            short_names: Vec::new(),
        }
    }

    /// A custom resource from its kube-derive type (served version = the type's version).
    pub fn custom<K: CustomResourceExt>() -> Self {
        Self::from_crd(&K::crd())
    }

    /// A custom resource from a CRD (its first served version).
    pub fn from_crd(crd: &CustomResourceDefinition) -> Self {
        let spec = &crd.spec;
        let version = spec
            .versions
            .iter()
            .find(|v| v.served)
            .unwrap_or(&spec.versions[0]);
        let schema = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .map(|s| Arc::new(serde_json::to_value(s).expect("a CRD schema serializes")));
        Self {
            gvr: Gvr::new(&spec.group, &version.name, &spec.names.plural),
            kind: spec.names.kind.clone(),
            namespaced: spec.scope == "Namespaced",
            status_subresource: version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some()),
            generation: true,
            custom: true,
            schema,
            validator: None,
            field_selectors: Vec::new(),
            short_names: spec.names.short_names.clone().unwrap_or_default(),
        }
    }

    /// Validates every create and update of the resource (not of its `/status`: an unchanged
    /// spec is not validated again, as validation ratcheting has it) with `validator`, which
    /// returns the causes of a refusal as (field path, message). A refused write is answered 422
    /// `Invalid`, as the API server answers.
    pub fn with_validator(
        mut self,
        validator: impl Fn(&Value) -> Result<(), Causes> + Send + Sync + 'static,
    ) -> Self {
        self.validator = Some(Validator(Arc::new(validator)));
        self
    }

    pub fn with_status_subresource(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    pub fn with_generation(mut self) -> Self {
        self.generation = true;
        self
    }

    pub fn with_field_selectors(mut self, fields: &[&str]) -> Self {
        self.field_selectors = fields.iter().map(|f| f.to_string()).collect();
        self
    }

    pub fn with_short_names(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    pub fn api_version(&self) -> String {
        self.gvr.api_version()
    }

    pub fn supports_field(&self, field: &str) -> bool {
        matches!(field, "metadata.name" | "metadata.namespace")
            || self.field_selectors.iter().any(|f| f == field)
    }
}

/// The built-in resources most controllers touch: ConfigMaps, Secrets, both Event APIs, Leases,
/// Deployments and StatefulSets. Custom resources are added with [`ApiServerBuilder::kind`].
///
/// [`ApiServerBuilder::kind`]: crate::ApiServerBuilder::kind
pub fn default_kinds() -> Vec<Kind> {
    vec![
        Kind::builtin::<ConfigMap>().with_short_names(&["cm"]),
        Kind::builtin::<Secret>().with_field_selectors(&["type"]),
        Kind::builtin::<CoreEvent>()
            .with_short_names(&["ev"])
            .with_field_selectors(&[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ]),
        Kind::builtin::<Event>()
            .with_short_names(&["ev"])
            .with_field_selectors(&[
                "regarding.kind",
                "regarding.namespace",
                "regarding.name",
                "regarding.uid",
                "reason",
                "reportingController",
                "type",
            ]),
        Kind::builtin::<Lease>(),
        Kind::builtin::<Deployment>()
            .with_status_subresource()
            .with_generation()
            .with_short_names(&["deploy"]),
        Kind::builtin::<StatefulSet>()
            .with_status_subresource()
            .with_generation()
            .with_short_names(&["sts"]),
    ]
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `GET /api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }],
    })
}

/// The served API groups (not the core group) with their versions.
fn groups(kinds: &[Kind]) -> BTreeMap<&str, Vec<&str>> {
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for kind in kinds.iter().filter(|k| !k.gvr.group.is_empty()) {
        let versions = groups.entry(&kind.gvr.group).or_default();
        if !versions.contains(&kind.gvr.version.as_str()) {
            versions.push(&kind.gvr.version);
        }
    }
    groups
}

fn group_doc(name: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({ "groupVersion": format!("{name}/{v}"), "version": v }))
        .collect();
    json!({ "name": name, "versions": versions, "preferredVersion": versions[0] })
}

/// `GET /apis`.
pub fn group_list(kinds: &[Kind]) -> Value {
    let groups: Vec<Value> = groups(kinds)
        .iter()
        .map(|(name, versions)| group_doc(name, versions))
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `GET /apis/<group>`, if served.
pub fn group(kinds: &[Kind], name: &str) -> Option<Value> {
    let groups = groups(kinds);
    let versions = groups.get(name)?;
    let mut doc = group_doc(name, versions);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// `GET /api/v1` or `GET /apis/<group>/<version>`, if served.
pub fn resource_list(kinds: &[Kind], group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for kind in kinds
        .iter()
        .filter(|k| k.gvr.group == group && k.gvr.version == version)
    {
        resources.push(json!({
            "name": kind.gvr.resource,
            "singularName": kind.kind.to_lowercase(),
            "namespaced": kind.namespaced,
            "kind": kind.kind,
            "verbs": VERBS,
            "shortNames": kind.short_names,
        }));
        if kind.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", kind.gvr.resource),
                "singularName": "",
                "namespaced": kind.namespaced,
                "kind": kind.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources }),
    )
}

/// Aggregated discovery (`apidiscovery.k8s.io/v2`) for `/api` (`core == true`) or `/apis`.
pub fn aggregated(kinds: &[Kind], core: bool) -> Value {
    let mut by_group: BTreeMap<&str, BTreeMap<&str, Vec<Value>>> = BTreeMap::new();
    for kind in kinds.iter().filter(|k| k.gvr.group.is_empty() == core) {
        let response_kind =
            json!({ "group": kind.gvr.group, "version": kind.gvr.version, "kind": kind.kind });
        let mut resource = json!({
            "resource": kind.gvr.resource,
            "responseKind": response_kind,
            "scope": if kind.namespaced { "Namespaced" } else { "Cluster" },
            "singularResource": kind.kind.to_lowercase(),
            "verbs": VERBS,
            "shortNames": kind.short_names,
        });
        if kind.status_subresource {
            resource["subresources"] = json!([{
                "subresource": "status",
                "responseKind": response_kind,
                "verbs": ["get", "patch", "update"],
            }]);
        }
        by_group
            .entry(&kind.gvr.group)
            .or_default()
            .entry(&kind.gvr.version)
            .or_default()
            .push(resource);
    }
    let items: Vec<Value> = by_group
        .into_iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .into_iter()
                .map(|(version, resources)| json!({ "version": version, "resources": resources, "freshness": "Current" }))
                .collect();
            json!({ "metadata": { "name": group }, "versions": versions })
        })
        .collect();
    json!({ "kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items })
}

/// `GET /version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-tierguard-test",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}
