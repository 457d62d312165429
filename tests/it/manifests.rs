//! deploy/ and the Helm chart render, and every object parses into its typed Kubernetes struct.
//!
//! k8s-openapi ignores unknown fields when deserializing, so each object is also serialized back
//! and compared with the original: a misspelt field or a wrong type fails here, not in a cluster.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
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
    namespace_selector: Option<NamespaceSelector>,
    endpoints: Vec<Endpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct NamespaceSelector {
    match_names: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct Endpoint {
    port: String,
    path: String,
    interval: String,
    scrape_timeout: Option<String>,
    honor_labels: Option<bool>,
    relabelings: Option<Vec<Value>>,
    metric_relabelings: Option<Vec<Value>>,
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
            "ConfigMap" => drop(strict::<ConfigMap>(doc, &what)),
            "PodDisruptionBudget" => drop(strict::<PodDisruptionBudget>(doc, &what)),
            "NetworkPolicy" => drop(strict::<NetworkPolicy>(doc, &what)),
            "Deployment" => check_deployment(&strict::<Deployment>(doc, &what), &what),
            "CustomResourceDefinition" => drop(strict::<CustomResourceDefinition>(doc, &what)),
            "MemoryTier" => {
                if let Err(problems) = tierguard::api::validate::validate_document(doc) {
                    panic!("{what}: {problems:?}");
                }
            }
            "ServiceMonitor" => {
                let monitor: ServiceMonitor =
                    serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
                for endpoint in &monitor.spec.endpoints {
                    assert_eq!(
                        endpoint.honor_labels,
                        Some(true),
                        "{what}: honorLabels must be true, or the tiers' namespace label becomes exported_namespace"
                    );
                }
            }
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
                for r in rule.spec.groups.iter().flat_map(|g| &g.rules) {
                    for key in ["summary", "description", "runbook_url"] {
                        assert!(
                            r.annotations.get(key).is_some_and(|v| !v.trim().is_empty()),
                            "{what}: alert {} has no {key}",
                            r.alert
                        );
                    }
                    let url = &r.annotations["runbook_url"];
                    let anchor = url
                        .split_once("/docs/alerts.md#")
                        .map(|(_, a)| a)
                        .unwrap_or_else(|| {
                            panic!(
                                "{what}: {}: runbook_url {url} is not a docs/alerts.md section",
                                r.alert
                            )
                        });
                    assert!(
                        markdown_anchors("docs/alerts.md").contains(anchor),
                        "{what}: {}: docs/alerts.md has no section #{anchor}",
                        r.alert
                    );
                }
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

/// The anchors GitHub gives a Markdown file's headings: lower case, spaces as `-`, other
/// punctuation dropped.
fn markdown_anchors(path: &str) -> std::collections::BTreeSet<String> {
    std::fs::read_to_string(root().join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| {
            h.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

fn check_deployment(deployment: &Deployment, what: &str) {
    let spec = deployment.spec.as_ref().unwrap();
    let replicas = spec.replicas.unwrap_or(1);
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
    let elected = args.iter().any(|a| a == "--leader-election");
    assert!(
        replicas == 1 || elected,
        "{what}: leader election with {replicas} replicas"
    );
    // Without leader election a RollingUpdate would start the new pod before the old one stops:
    // two controllers acting at once.
    let strategy = spec.strategy.as_ref().and_then(|s| s.type_.as_deref());
    if !elected {
        assert_eq!(
            strategy,
            Some("Recreate"),
            "{what}: no leader election needs Recreate"
        );
    }
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
        std::fs::read_to_string(root().join("charts/tierguard/files/memorytier-crd.yaml")).unwrap();
    assert!(
        chart == tierguard::api::crd_yaml(),
        "charts/tierguard/files/memorytier-crd.yaml is stale: run scripts/regen-crd"
    );
}

/// `helm template` of the chart with these arguments (values files, --set), as documents.
fn helm_template(args: &[&str]) -> Vec<Value> {
    let mut all = vec![
        "template",
        "tg",
        "charts/tierguard",
        "--namespace",
        "tierguard-system",
    ];
    all.extend_from_slice(args);
    documents(&run("helm", &all))
}

/// Whether `helm template` refuses these arguments; returns its error output.
fn helm_refuses(args: &[&str]) -> Option<String> {
    let mut all = vec!["template", "tg", "charts/tierguard"];
    all.extend_from_slice(args);
    let out = Command::new(tool("helm"))
        .args(&all)
        .current_dir(root())
        .output()
        .unwrap();
    (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    match find(docs, kind).as_slice() {
        [only] => only,
        other => panic!("expected one {kind}, found {}", other.len()),
    }
}

fn container_args(docs: &[Value]) -> Vec<String> {
    serde_json::from_value(
        one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"].clone(),
    )
    .unwrap()
}

#[test]
fn helm_lint_strict_passes_with_the_defaults_and_with_every_value() {
    run("helm", &["lint", "--strict", "charts/tierguard"]);
    run(
        "helm",
        &[
            "lint",
            "--strict",
            "charts/tierguard",
            "-f",
            "tests/data/chart-values.yaml",
        ],
    );
    run(
        "helm",
        &[
            "lint",
            "--strict",
            "charts/tierguard",
            "--set",
            "leaderElection.enabled=false,replicaCount=1",
            "--set",
            "watchNamespaces={clinic,billing}",
        ],
    );
}

/// The values users of kube-prometheus-stack and of the argo-rollouts, flagger and cert-manager
/// charts set are accepted and land where they belong.
#[test]
fn the_values_platform_charts_offer_are_accepted_and_rendered() {
    let docs = helm_template(&["-f", "tests/data/chart-values.yaml"]);
    let kinds = parse_all(&docs, "charts/tierguard with tests/data/chart-values.yaml");
    for kind in [
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ConfigMap",
        "CustomResourceDefinition",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} rendered");
    }
    let deployment = one(&docs, "Deployment");
    assert_eq!(
        deployment["metadata"]["name"], "tg-controller",
        "fullnameOverride"
    );
    let pod = &deployment["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["team"], "platform", "podLabels");
    assert_eq!(
        pod["metadata"]["labels"]["app.kubernetes.io/name"], "guard",
        "nameOverride"
    );
    assert_eq!(pod["spec"]["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["spec"]["topologySpreadConstraints"][0]["maxSkew"], 1);
    assert_eq!(pod["spec"]["volumes"][0]["name"], "ca", "extraVolumes");
    let container = &pod["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        "registry.example.com/tierguard@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "image.digest wins over the tag"
    );
    assert_eq!(
        container["volumeMounts"][0]["mountPath"],
        "/etc/ssl/corporate"
    );
    assert!(
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "HTTPS_PROXY"),
        "extraEnv"
    );
    let args = container_args(&docs);
    assert!(
        args.contains(&"--concurrency=8".to_owned()),
        "extraArgs: {args:?}"
    );
    assert!(args.contains(&"--log-level=warn".to_owned()), "{args:?}");
    for wanted in [
        "--webhook-destinations=hooks.slack.com,10.0.0.0/8",
        "--redis-destinations=10.20.0.0/16",
        "--background-jobs=2",
        "--background-job-timeout=2m",
    ] {
        assert!(args.contains(&wanted.to_owned()), "{wanted}: {args:?}");
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--metrics-destinations")),
        "an empty list keeps the default: {args:?}"
    );
    // The controller takes the arguments the chart renders (it stops at the missing kubeconfig).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tierguard"))
        .args(&args)
        .args(["--kubeconfig", "/nonexistent/kubeconfig"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("/nonexistent/kubeconfig"),
        "the chart's arguments are refused: {stderr}"
    );
    assert_eq!(
        one(&docs, "Service")["metadata"]["annotations"]["prometheus.io/scrape"],
        "false"
    );
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        let doc = one(&docs, kind);
        assert_eq!(
            doc["metadata"]["namespace"], "monitoring",
            "{kind} namespace"
        );
        assert_eq!(
            doc["metadata"]["labels"]["release"], "kube-prometheus-stack",
            "{kind}: kube-prometheus-stack selects on release"
        );
    }
    let monitor = one(&docs, "ServiceMonitor");
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"][0], "tierguard-system",
        "a monitor in another namespace still selects the controller's Service"
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["relabelings"][0]["targetLabel"], "cluster");
    assert_eq!(endpoint["metricRelabelings"][0]["action"], "drop");
    assert_eq!(endpoint["scrapeTimeout"], "10s");
    let rule = one(&docs, "PrometheusRule");
    assert!(
        rule["spec"]["groups"][0]["rules"][0]["annotations"]["runbook_url"]
            .as_str()
            .unwrap()
            .starts_with("https://docs.example.com/tierguard/docs/alerts.md#"),
        "runbookBaseUrl"
    );
    let dashboard = one(&docs, "ConfigMap");
    assert_eq!(
        dashboard["metadata"]["labels"]["grafana_dashboard"], "1",
        "sidecar label"
    );
    let json: Value =
        serde_json::from_str(dashboard["data"]["tierguard.json"].as_str().unwrap()).unwrap();
    assert!(json["panels"].as_array().is_some_and(|p| !p.is_empty()));
    assert_eq!(
        one(&docs, "PodDisruptionBudget")["spec"]["maxUnavailable"],
        1
    );
    assert_eq!(
        one(&docs, "NetworkPolicy")["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]
            ["kubernetes.io/metadata.name"],
        "monitoring"
    );
}

#[test]
fn the_values_schema_refuses_what_the_binary_would_not_understand() {
    for bad in [
        "logLevel=warning",
        "logLevel=WARN",
        "logFormat=xml",
        "image.digest=latest",
        "watchNamespaces[0]=Not_A_Namespace",
        "unknownValue=1",
        "destinations.webhooks[0]=a b",
        "destinations.everywhere[0]=10.0.0.0/8",
        "backgroundJobs.jobTimeout=5 minutes",
    ] {
        assert!(
            helm_refuses(&["--set-string", bad]).is_some(),
            "values.schema.json must refuse {bad}"
        );
    }
    let args = container_args(&helm_template(&["--set", "logLevel=debug"]));
    assert!(args.contains(&"--log-level=debug".to_owned()), "{args:?}");
    assert!(
        !helm_template(&[])
            .iter()
            .any(|d| d.to_string().contains("RUST_LOG")),
        "the level goes to --log-level, which refuses an unknown level, not to RUST_LOG"
    );
}

#[test]
fn without_leader_election_a_rollout_never_runs_two_controllers() {
    let docs = helm_template(&["--set", "leaderElection.enabled=false,replicaCount=1"]);
    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    parse_all(&docs, "charts/tierguard without leader election");
    let elected = one(&helm_template(&[]), "Deployment").clone();
    assert!(
        elected["spec"]["strategy"].is_null(),
        "with leader election a rolling update is safe"
    );
    assert!(helm_refuses(&["--set", "leaderElection.enabled=false,replicaCount=2"]).is_some());
}

/// With the namespaces listed, the chart grants a Role in each of them and nothing cluster-wide,
/// and the controller watches exactly those.
#[test]
fn a_namespaced_install_grants_roles_in_the_watched_namespaces_only() {
    let docs = helm_template(&[
        "--set",
        "watchNamespaces={clinic,billing}",
        "--set",
        "watchNamespace=legacy",
    ]);
    parse_all(&docs, "charts/tierguard namespaced");
    assert!(
        find(&docs, "ClusterRole").is_empty(),
        "no ClusterRole in a namespaced install"
    );
    assert!(find(&docs, "ClusterRoleBinding").is_empty());
    let mut granted: Vec<String> = find(&docs, "RoleBinding")
        .iter()
        .filter(|b| b["roleRef"]["name"] == "tg-tierguard")
        .map(|b| b["metadata"]["namespace"].as_str().unwrap().to_owned())
        .collect();
    granted.sort();
    assert_eq!(granted, ["billing", "clinic", "legacy"]);
    let secrets_in: Vec<&str> = find(&docs, "Role")
        .iter()
        .filter(|r| r.to_string().contains("\"secrets\""))
        .map(|r| r["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(secrets_in.len(), 3, "{secrets_in:?}");
    let args = container_args(&docs);
    for ns in ["clinic", "billing", "legacy"] {
        assert!(args.contains(&format!("--namespace={ns}")), "{args:?}");
    }
    // The default is the cluster-wide install.
    let all = helm_template(&[]);
    assert_eq!(find(&all, "ClusterRole").len(), 1);
    assert!(
        !container_args(&all)
            .iter()
            .any(|a| a.starts_with("--namespace"))
    );
}

#[test]
fn kustomize_namespaced_overlay_has_no_cluster_wide_access() {
    let docs = documents(&run("kubectl", &["kustomize", "deploy/namespaced/"]));
    parse_all(&docs, "deploy/namespaced/");
    assert!(find(&docs, "ClusterRole").is_empty());
    assert!(find(&docs, "ClusterRoleBinding").is_empty());
    let roles: Vec<&str> = find(&docs, "Role")
        .iter()
        .filter(|r| r.to_string().contains("\"secrets\""))
        .map(|r| r["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["clinic"]);
    assert!(container_args(&docs).contains(&"--namespace=clinic".to_owned()));
}

/// Helm installs crds/ once and never upgrades it, so the CRD is a template: the generated one,
/// labelled, kept on uninstall, and left out when the CRD is managed elsewhere.
#[test]
fn the_chart_installs_and_upgrades_the_generated_crd() {
    let docs = helm_template(&[]);
    let crd = one(&docs, "CustomResourceDefinition");
    let generated: Value = serde_saphyr::from_str(&tierguard::api::crd_yaml()).unwrap();
    assert_eq!(
        crd["spec"], generated["spec"],
        "the chart's CRD is `tierguard crd`"
    );
    assert_eq!(crd["metadata"]["name"], generated["metadata"]["name"]);
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    assert_eq!(
        crd["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "Helm"
    );
    let unkept = helm_template(&["--set", "crds.keep=false"]);
    assert!(one(&unkept, "CustomResourceDefinition")["metadata"]["annotations"].is_null());
    let without = helm_template(&["--set", "crds.install=false"]);
    assert!(find(&without, "CustomResourceDefinition").is_empty());
}

/// A platform's umbrella chart that depends on this one (with `global` values) builds and renders.
#[test]
fn an_umbrella_chart_with_tierguard_as_a_dependency_renders() {
    let dir = tempfile::tempdir().unwrap();
    let umbrella = dir.path().join("platform");
    std::fs::create_dir_all(&umbrella).unwrap();
    let chart = std::fs::read_to_string(root().join("tests/data/umbrella/Chart.yaml"))
        .unwrap()
        .replace(
            "file://../../../charts/tierguard",
            &format!("file://{}", root().join("charts/tierguard").display()),
        );
    std::fs::write(umbrella.join("Chart.yaml"), chart).unwrap();
    std::fs::copy(
        root().join("tests/data/umbrella/values.yaml"),
        umbrella.join("values.yaml"),
    )
    .unwrap();
    std::fs::create_dir_all(umbrella.join("templates")).unwrap();
    std::fs::copy(
        root().join("tests/data/umbrella/templates/NOTES.txt"),
        umbrella.join("templates/NOTES.txt"),
    )
    .unwrap();
    let path = umbrella.to_str().unwrap();
    run("helm", &["dependency", "build", path]);
    run("helm", &["lint", "--strict", path]);
    let docs = documents(&run(
        "helm",
        &["template", "platform", path, "--namespace", "platform"],
    ));
    let kinds = parse_all(&docs, "the umbrella chart");
    for kind in [
        "Deployment",
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
        "CustomResourceDefinition",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "the umbrella chart lacks a {kind}"
        );
    }
    assert_eq!(one(&docs, "Deployment")["metadata"]["name"], "tierguard");
    assert_eq!(
        one(&docs, "ServiceMonitor")["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
}

/// The `groups` of a PrometheusRule object, as a Prometheus rule file.
fn rule_file(docs: &[Value], dir: &Path, name: &str) -> PathBuf {
    let rule = one(docs, "PrometheusRule");
    let file = dir.join(name);
    std::fs::write(&file, serde_json::to_string(&rule["spec"]).unwrap()).unwrap();
    file
}

#[test]
fn promtool_checks_the_rules_of_deploy_and_of_the_chart() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = documents(&run("kubectl", &["kustomize", "deploy/"]));
    let chart = helm_template(&["--set", "prometheusRule.enabled=true"]);
    for (source, docs) in [("deploy", deploy), ("chart", chart)] {
        let file = rule_file(&docs, dir.path(), &format!("{source}.rules.json"));
        let out = Command::new(tierguard_servers_binary("promtool"))
            .args(["check", "rules"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool check rules ({source}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A Debian-packaged tool, or a failure that says how to install it.
fn tierguard_servers_binary(name: &str) -> PathBuf {
    ["/usr/bin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is missing: run scripts/test (it installs prometheus, which ships promtool)"))
}

/// One address for the docs: the alerts' runbook_url base (the chart's default and deploy/'s) is
/// the docs address the notifications link to.
#[test]
fn the_alerts_and_the_notifications_link_to_the_same_docs() {
    let base = format!("{}/alerts.md#", tierguard::act::notify::DOCS_URL);
    let deploy = documents(&run("kubectl", &["kustomize", "deploy/"]));
    let chart = helm_template(&["--set", "prometheusRule.enabled=true"]);
    for (source, docs) in [("deploy", deploy), ("chart", chart)] {
        let rule = one(&docs, "PrometheusRule");
        for group in rule["spec"]["groups"].as_array().unwrap() {
            for r in group["rules"].as_array().unwrap() {
                let url = r["annotations"]["runbook_url"].as_str().unwrap();
                assert!(
                    url.starts_with(&base),
                    "{source}: {url} is not under {base}"
                );
            }
        }
    }
}

#[test]
fn kustomize_shards_run_one_deployment_per_shard_with_its_own_selector_and_lease() {
    let docs = documents(&run("kubectl", &["kustomize", "deploy/shards/"]));
    parse_all(&docs, "deploy/shards/");
    let deployments: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Deployment").collect();
    assert_eq!(deployments.len(), 2);
    let mut seen = Vec::new();
    for d in deployments {
        let args: Vec<&str> = d["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let selector = args
            .iter()
            .find_map(|a| a.strip_prefix("--selector="))
            .unwrap();
        let lease = args
            .iter()
            .find_map(|a| a.strip_prefix("--lease-name="))
            .unwrap();
        let shard = selector.strip_prefix("tierguard.dev/shard=").unwrap();
        assert_eq!(lease, format!("tierguard-shard-{shard}"));
        // The pods of one shard are never the other's.
        assert_eq!(
            d["spec"]["selector"]["matchLabels"]["tierguard.dev/shard"],
            shard
        );
        assert_eq!(
            d["spec"]["template"]["metadata"]["labels"]["tierguard.dev/shard"],
            shard
        );
        seen.push(shard.to_owned());
    }
    seen.sort();
    assert_eq!(seen, ["a", "b"]);
}
