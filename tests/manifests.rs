//! deploy/ and the Helm chart render, and every object parses into its typed Kubernetes struct.
//!
//! k8s-openapi ignores unknown fields when deserializing, so each object is also serialized back
//! and compared with the original: a misspelt field or a wrong type fails here, not in a cluster.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tool(name: &str) -> PathBuf {
    let local = root().join(".tools/bin").join(name);
    if local.exists() {
        return local;
    }
    let on_path = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| {
        panic!("`{name}` is missing: run scripts/install-k8s-tools (scripts/test runs it)")
    })
}

fn run(tool_name: &str, args: &[&str]) -> String {
    let out = Command::new(tool(tool_name))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("run {tool_name}: {e}"));
    assert!(
        out.status.success(),
        "{tool_name} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .expect("rendered YAML parses")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// Parse into `T`, then require that serializing `T` gives back exactly the input.
fn strict<T: DeserializeOwned + serde::Serialize>(doc: &Value, what: &str) -> T {
    let typed: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{what}: does not parse as its type: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    if let Some(diff) = first_difference(doc, &back, String::new()) {
        panic!("{what}: field not understood by its type (misspelt or misplaced?): {diff}");
    }
    typed
}

fn first_difference(a: &Value, b: &Value, path: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) => {
                        if let Some(d) = first_difference(v, w, format!("{path}.{k}")) {
                            return Some(d);
                        }
                    }
                    None => return Some(format!("{path}.{k}")),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, format!("{path}[{i}]"))),
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
        _ if a == b => None,
        _ => Some(format!("{path}: {a} became {b}")),
    }
}

/// The Prometheus Operator's types are not in k8s-openapi: these cover the fields we use, strictly.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct ServiceMonitor {
    api_version: String,
    kind: String,
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: ServiceMonitorSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct ServiceMonitorSpec {
    selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    endpoints: Vec<Endpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct Endpoint {
    port: String,
    path: String,
    interval: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct PrometheusRule {
    api_version: String,
    kind: String,
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: RuleSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    #[allow(dead_code)]
    name: String,
    rules: Vec<AlertRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct AlertRule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    labels: std::collections::BTreeMap<String, String>,
    annotations: std::collections::BTreeMap<String, String>,
}

/// Parse every rendered object by kind; returns the kinds seen, in order.
fn parse_all(docs: &[Value], source: &str) -> Vec<String> {
    let mut kinds = Vec::new();
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        let what = format!("{source}: {kind} {}", doc["metadata"]["name"]);
        match kind.as_str() {
            "Namespace" => drop(strict::<Namespace>(doc, &what)),
            "ServiceAccount" => drop(strict::<ServiceAccount>(doc, &what)),
            "ClusterRole" => drop(strict::<ClusterRole>(doc, &what)),
            "ClusterRoleBinding" => drop(strict::<ClusterRoleBinding>(doc, &what)),
            "Role" => drop(strict::<Role>(doc, &what)),
            "RoleBinding" => drop(strict::<RoleBinding>(doc, &what)),
            "Service" => drop(strict::<Service>(doc, &what)),
            "Deployment" => check_deployment(&strict::<Deployment>(doc, &what), &what),
            "CustomResourceDefinition" => drop(strict::<CustomResourceDefinition>(doc, &what)),
            "MemoryTier" => {
                if let Err(problems) = tierguard::api::validate::validate_document(doc) {
                    panic!("{what}: {problems:?}");
                }
            }
            "ServiceMonitor" => drop(
                serde_json::from_value::<ServiceMonitor>(doc.clone())
                    .unwrap_or_else(|e| panic!("{what}: {e}")),
            ),
            "PrometheusRule" => {
                let rule: PrometheusRule =
                    serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
                let alerts: Vec<&str> = rule
                    .spec
                    .groups
                    .iter()
                    .flat_map(|g| &g.rules)
                    .map(|r| r.alert.as_str())
                    .collect();
                for wanted in [
                    "RedisMemoryHigh",
                    "RedisMemoryCritical",
                    "RedisEvictions",
                    "CircuitBreakerOpen",
                    "CanaryRollbackInProgress",
                    "TierguardReconcileErrors",
                ] {
                    assert!(alerts.contains(&wanted), "{what}: alert {wanted} missing");
                }
            }
            other => panic!("{what}: no typed check for kind {other:?}; add one"),
        }
        kinds.push(kind);
    }
    kinds
}

fn check_deployment(deployment: &Deployment, what: &str) {
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2), "{what}: two replicas");
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_non_root,
        Some(true),
        "{what}: non-root"
    );
    let container = &pod.containers[0];
    let sc = container.security_context.as_ref().unwrap();
    assert_eq!(
        sc.read_only_root_filesystem,
        Some(true),
        "{what}: read-only root"
    );
    assert_eq!(sc.allow_privilege_escalation, Some(false), "{what}");
    assert!(
        container.liveness_probe.is_some() && container.readiness_probe.is_some(),
        "{what}: probes"
    );
    assert!(
        container
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .is_some(),
        "{what}: resources"
    );
    let args = container.args.as_ref().unwrap();
    assert_eq!(args[0], "run");
    assert!(
        args.iter().any(|a| a == "--leader-election"),
        "{what}: leader election with 2 replicas"
    );
}

#[test]
fn kustomize_renders_deploy_and_every_object_is_well_typed() {
    let docs = documents(&run("kubectl", &["kustomize", "deploy/"]));
    let kinds = parse_all(&docs, "deploy/");
    for kind in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "Role",
        "Deployment",
        "Service",
        "ServiceMonitor",
        "PrometheusRule",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "deploy/ lacks a {kind}");
    }
    let example = documents(&run("kubectl", &["kustomize", "deploy/example/"]));
    assert!(parse_all(&example, "deploy/example/").contains(&"MemoryTier".to_owned()));
}

#[test]
fn helm_chart_lints_renders_and_every_object_is_well_typed() {
    run("helm", &["lint", "charts/tierguard"]);
    let rendered = run(
        "helm",
        &[
            "template",
            "tg",
            "charts/tierguard",
            "--namespace",
            "tierguard-system",
            "--include-crds",
            "--set",
            "serviceMonitor.enabled=true",
            "--set",
            "prometheusRule.enabled=true",
        ],
    );
    let kinds = parse_all(&documents(&rendered), "charts/tierguard");
    for kind in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "Role",
        "Deployment",
        "Service",
        "ServiceMonitor",
        "PrometheusRule",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "the chart lacks a {kind}");
    }
}

#[test]
fn helm_values_schema_rejects_bad_values() {
    let out = Command::new(tool("helm"))
        .args([
            "template",
            "tg",
            "charts/tierguard",
            "--set",
            "logFormat=xml",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "values.schema.json must reject logFormat=xml"
    );
    let out = Command::new(tool("helm"))
        .args([
            "template",
            "tg",
            "charts/tierguard",
            "--set",
            "leaderElection.enabled=false",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "two replicas without leader election must be refused"
    );
}

#[test]
fn the_chart_carries_the_same_crd() {
    let chart =
        std::fs::read_to_string(root().join("charts/tierguard/crds/memorytier.yaml")).unwrap();
    assert!(
        chart == tierguard::api::crd_yaml(),
        "charts/tierguard/crds/memorytier.yaml is stale: run scripts/regen-crd"
    );
}
