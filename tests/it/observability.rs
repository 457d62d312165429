//! The controller as kube-prometheus-stack sees it: a real Prometheus scrapes the real controller
//! (`tierguard run` against the in-process API server, with a tier reading a live application and
//! a real Redis) through the relabelling the Prometheus Operator generates from deploy/'s
//! ServiceMonitor, and evaluates deploy/'s PrometheusRule.
//!
//! - The alerts keep the tier's `namespace` (honorLabels), not the controller's.
//! - Every query of every panel of the Grafana dashboard returns data.
//! - /metrics speaks the text format to `Accept: text/plain`, and `promtool check metrics` finds
//!   nothing to complain about; every counter exists from start-up.

use crate::support;

use crate::support::drill::controller as controller_process;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use kube_testserver::ApiServer;
use serde_json::{Value, json};
use support::live_app::LiveApp;
use support::servers::{PrometheusServer, RedisServer, require_binary};
use tierguard::api::MemoryTier;

use controller_process::ControllerProcess;

const NS: &str = "clinic";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn kubectl() -> PathBuf {
    let local = root().join(".tools/bin/kubectl");
    if local.exists() {
        local
    } else {
        require_binary("kubectl")
    }
}

/// deploy/ as kustomize renders it.
fn deploy_objects() -> Vec<Value> {
    let out = Command::new(kubectl())
        .args(["kustomize", "deploy/"])
        .current_dir(root())
        .output()
        .expect("run kubectl kustomize (scripts/install-k8s-tools installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_saphyr::from_multiple::<Value>(&String::from_utf8(out.stdout).unwrap())
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn tier(name: &str, spec: Value) -> MemoryTier {
    support::tiers::tier(name, NS, spec)
}

struct Setup {
    _api: ApiServer,
    _app: LiveApp,
    _redis: RedisServer,
    controller: ControllerProcess,
    prometheus: PrometheusServer,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// The scrape configuration the Prometheus Operator generates for deploy/'s ServiceMonitor, for
/// one pod of the controller: the target labels come from the Service's endpoints (namespace,
/// service, pod, container, endpoint, job), and honor_labels from the ServiceMonitor.
fn operator_scrape_config(monitor: &Value, target: &str) -> String {
    let endpoint = &monitor["spec"]["endpoints"][0];
    let honor = endpoint["honorLabels"].as_bool().unwrap_or(false);
    let path = endpoint["path"].as_str().unwrap_or("/metrics");
    let namespace = monitor["metadata"]["namespace"].as_str().unwrap();
    let name = monitor["metadata"]["name"].as_str().unwrap();
    let mut relabel = String::new();
    for (label, value) in [
        ("namespace", namespace),
        ("service", name),
        ("pod", "tierguard-6c9d8b7f5-x2x7q"),
        ("container", "tierguard"),
        ("endpoint", endpoint["port"].as_str().unwrap()),
        ("job", name),
    ] {
        relabel.push_str(&format!(
            "      - target_label: {label}\n        replacement: {value}\n"
        ));
    }
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files: [tierguard.rules.json]\n\
         scrape_configs:\n  - job_name: serviceMonitor/{namespace}/{name}/0\n    honor_labels: {honor}\n    \
         metrics_path: {path}\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    \
         static_configs:\n      - targets: ['{target}']\n    relabel_configs:\n{relabel}"
    )
}

async fn start() -> Setup {
    tierguard::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let api = support::api_server().await;
    let client = api.client();
    let app = LiveApp::start(Duration::from_millis(100));
    let redis = RedisServer::start_with(&["--maxmemory", "64mb"]);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("clinic-redis".into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "url".to_owned(),
            k8s_openapi::ByteString(redis.url().into_bytes()),
        )])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let tiers: Api<MemoryTier> = Api::namespaced(client.clone(), NS);
    let good = tier(
        "backend",
        json!({
            "target": {"configMapName": "backend-flags"},
            "metrics": {"scrape": {"url": app.url()}, "interval": "500ms", "timeout": "400ms"},
            "redis": {"urlSecretRef": {"name": "clinic-redis", "key": "url"}},
        }),
    );
    tiers.create(&PostParams::default(), &good).await.unwrap();
    // A tier stored under an older CRD without the rule it breaks: stalled by the controller.
    let mut bad = tier(
        "broken",
        json!({"target": {"configMapName": "broken-flags"}, "metrics": {"scrape": {"url": app.url()}}}),
    );
    bad.spec.canary.reduced_rate = 0.5;
    api.put_json(
        &kube_testserver::Gvr::of::<MemoryTier>(),
        serde_json::to_value(&bad).unwrap(),
    )
    .unwrap();

    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig_as(&kubeconfig, "tierguard").unwrap();
    let controller = ControllerProcess::spawn(&kubeconfig, NS, dir.path().join("tierguard.log"));

    let deploy = deploy_objects();
    let monitor = deploy
        .iter()
        .find(|d| d["kind"] == "ServiceMonitor")
        .expect("deploy/ has a ServiceMonitor");
    let rule = deploy
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("deploy/ has a PrometheusRule");
    let target = controller
        .metrics_url()
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_owned();
    let prometheus = PrometheusServer::start_with_config(
        &operator_scrape_config(monitor, &target),
        &[("tierguard.rules.json", rule["spec"].to_string())],
    );
    Setup {
        _api: api,
        _app: app,
        _redis: redis,
        controller,
        prometheus,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        _dir: dir,
    }
}

impl Setup {
    async fn get_json(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let url = url::Url::parse_with_params(&format!("{}{path}", self.prometheus.url()), query)
            .unwrap();
        self.http
            .get(url.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .json()
            .await
            .unwrap()
    }

    /// An instant query's series (empty on an error, with the error in the second value).
    async fn query(&self, expr: &str) -> (Vec<Value>, Option<String>) {
        let answer = self.get_json("/api/v1/query", &[("query", expr)]).await;
        if answer["status"] != "success" {
            return (Vec::new(), Some(answer.to_string()));
        }
        let result = answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (result, None)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_keep_the_tiers_namespace_through_operator_style_relabelling() {
    let setup = start().await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let alert = loop {
        let alerts = setup.get_json("/api/v1/alerts", &[]).await;
        let found = alerts["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["labels"]["alertname"] == "TierguardTierStalled")
            .cloned();
        if let Some(alert) = found {
            break alert;
        }
        assert!(
            Instant::now() < deadline,
            "TierguardTierStalled never became pending; alerts: {alerts}; controller log:\n{}",
            setup.controller.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let labels = &alert["labels"];
    assert_eq!(
        labels["namespace"], NS,
        "the alert must name the tier's namespace, not the controller's: {labels}"
    );
    assert_eq!(labels["tier"], "broken", "{labels}");
    assert!(labels.get("exported_namespace").is_none(), "{labels}");
    let summary = alert["annotations"]["summary"].as_str().unwrap();
    assert!(summary.starts_with("clinic/broken is stalled"), "{summary}");
    assert!(
        alert["annotations"]["runbook_url"]
            .as_str()
            .unwrap()
            .ends_with("docs/alerts.md#tierguardtierstalled")
    );
    // The controller's own target labels are still there.
    let (series, _) = setup.query("tierguard_build_info").await;
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(series[0]["metric"]["job"], "tierguard");
    assert_eq!(series[0]["metric"]["namespace"], "tierguard-system");
}

/// Grafana's variables as the test sets them: this tier, the operator's job, a rate window of a
/// few scrapes.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "10s")
        .replace("$namespace", NS)
        .replace("$tier", "backend")
        .replace("$job", "tierguard")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_a_live_controller() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("charts/tierguard/dashboards/tierguard.json"))
            .unwrap(),
    )
    .unwrap();
    let mut queries: Vec<(String, String)> = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .expect("every target has a PromQL expr");
            queries.push((
                format!("{} ({})", panel["title"].as_str().unwrap(), target["refId"]),
                substitute(expr),
            ));
        }
    }
    assert!(queries.len() >= 15, "{queries:?}");
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = variable["query"]["query"].as_str() {
            let metric = q
                .trim_start_matches("label_values(")
                .split([',', '{'])
                .next()
                .unwrap()
                .to_owned();
            queries.push((format!("variable {}", variable["name"]), metric));
        }
    }

    let setup = start().await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut missing: Vec<String>;
    loop {
        missing = Vec::new();
        for (what, expr) in &queries {
            let (series, error) = setup.query(expr).await;
            let finite = series.iter().any(|s| {
                s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(f64::is_finite)
            });
            if let Some(e) = error {
                panic!("{what}: Prometheus refused `{expr}`: {e}");
            }
            if !finite {
                missing.push(format!("{what}: {expr}"));
            }
        }
        if missing.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        missing.is_empty(),
        "dashboard queries without data:\n  {}\ncontroller log:\n{}",
        missing.join("\n  "),
        setup.controller.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_negotiate_the_format_and_promtool_finds_nothing_to_lint() {
    let setup = start().await;
    // Wait until the tiers' series are there too.
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let response = setup
            .http
            .get(setup.controller.metrics_url())
            .header("Accept", "text/plain")
            .send()
            .await
            .unwrap();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let text = response.text().await.unwrap();
        if text.contains("tierguard_tier_threshold{") {
            break text;
        }
        assert!(Instant::now() < deadline, "no tier series yet:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!text.contains("# EOF"), "the text format has no EOF marker");
    for line in [
        r#"tierguard_reconcile_errors_total{kind="status"} 0"#,
        r#"tierguard_reconcile_errors_total{kind="secrets"} 0"#,
        r#"tierguard_actions_total{action="remediate-redis",outcome="failed"} 0"#,
    ] {
        assert!(text.contains(line), "{line} is missing:\n{text}");
    }
    assert!(text.contains("tierguard_build_info{version=\"0.1.0\",commit=\""));
    for family in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(text.contains(&format!("\n{family} ")), "{family}:\n{text}");
    }
    let mut promtool = Command::new(require_binary("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics:\n{said}"
    );

    let open = setup
        .http
        .get(setup.controller.metrics_url())
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(
        open.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(open.text().await.unwrap().ends_with("# EOF\n"));
}
