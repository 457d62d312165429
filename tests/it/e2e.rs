//! End to end against a real cluster (kind, k3d, or any other), when `TIERGUARD_E2E_KUBECONFIG`
//! names its kubeconfig; skipped, saying so, otherwise.
//!
//! The test installs the CRD, runs the controller in this process against the cluster, and drives
//! a MemoryTier through a latency regression with an application simulated on loopback (the
//! controller runs here, so it reaches it). Everything it creates lives in a namespace of its own,
//! deleted at the end.
//!
//!     TIERGUARD_E2E_KUBECONFIG=~/.kube/config cargo test --test e2e -- --nocapture

use crate::support::{self, wait_for};

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, CustomResourceExt};
use serde_json::json;
use support::live_app::LiveApp;
use tierguard::api::{FIELD_MANAGER, MemoryTier, Phase};
use tierguard::controller::RunConfig;

async fn cluster() -> Option<Client> {
    let Some(path) = std::env::var_os("TIERGUARD_E2E_KUBECONFIG") else {
        eprintln!(
            "e2e: skipped: set TIERGUARD_E2E_KUBECONFIG to a kubeconfig to run it against a real cluster"
        );
        return None;
    };
    tierguard::install_crypto_provider();
    let kubeconfig = Kubeconfig::read_from(&path).expect("read TIERGUARD_E2E_KUBECONFIG");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a usable kubeconfig");
    Some(Client::try_from(config).expect("a client"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_cluster_runs_a_rollback() {
    let Some(client) = cluster().await else {
        return;
    };
    // The CRD, as `kubectl apply -f crds/memorytier.yaml` would install it.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "memorytiers.tierguard.dev",
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(MemoryTier::crd()),
    )
    .await
    .expect("install the CRD");
    wait_for(
        "the CRD to be established",
        Duration::from_secs(60),
        || async {
            let crd = crds.get("memorytiers.tierguard.dev").await.ok()?;
            let established = crd
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        },
    )
    .await;

    let ns = format!("tierguard-e2e-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .expect("create the test namespace");

    let app = LiveApp::start(Duration::from_millis(200));
    let tier: MemoryTier = serde_json::from_value(json!({
        "apiVersion": "tierguard.dev/v1alpha1",
        "kind": "MemoryTier",
        "metadata": {"name": "backend", "namespace": ns},
        "spec": {
            "target": {"configMapName": "backend-flags"},
            "metrics": {"scrape": {"url": app.url()}, "interval": "1s", "timeout": "800ms"},
            "rollback": {"p50LatencyFor": "5s", "phaseHold": "3s"},
        },
    }))
    .unwrap();
    let tiers: Api<MemoryTier> = Api::namespaced(client.clone(), &ns);
    // The real API server checks the CRD's schema and CEL rules here.
    tiers
        .create(&PostParams::default(), &tier)
        .await
        .expect("the API server accepts the MemoryTier");
    let mut invalid = tier.clone();
    invalid.metadata.name = Some("invalid".into());
    invalid.spec.canary.reduced_rate = 0.5;
    let refused = tiers.create(&PostParams::default(), &invalid).await;
    assert!(
        refused.is_err(),
        "the CRD's CEL rules refuse reducedRate > sampleRate"
    );

    let controller = {
        let (client, ns) = (client.clone(), ns.clone());
        tokio::spawn(async move {
            tierguard::controller::run(
                client,
                RunConfig {
                    namespaces: vec![ns],
                    selector: None,
                    metrics_addr: None,
                    lease: None,
                    instance: Some("e2e".into()),
                    concurrency: tierguard::controller::DEFAULT_CONCURRENCY,
                    destinations: support::loopback(),
                    background: Default::default(),
                    shutdown_timeout: tierguard::controller::DEFAULT_SHUTDOWN_TIMEOUT,
                    status_refresh: support::EVERY_TICK,
                },
            )
            .await
            .expect("the controller runs");
        })
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let rate = |config_maps: Api<ConfigMap>| async move {
        config_maps
            .get_opt("backend-flags")
            .await
            .ok()
            .flatten()
            .and_then(|cm| cm.data?.get("CANARY_SAMPLE_RATE").cloned())
    };
    wait_for("the baseline ConfigMap", Duration::from_secs(60), || {
        let cms = config_maps.clone();
        async move { rate(cms).await.filter(|r| r == "0.1") }
    })
    .await;
    app.update(|p| p.latency_ms = 1500.0);
    wait_for("rollback phase 1", Duration::from_secs(60), || {
        let cms = config_maps.clone();
        async move { rate(cms).await.filter(|r| r == "0.05") }
    })
    .await;
    let phase = wait_for("status RollingBack", Duration::from_secs(30), || async {
        let t = tiers.get("backend").await.ok()?;
        t.status?.phase.filter(|p| *p == Phase::RollingBack)
    })
    .await;
    assert_eq!(phase, Phase::RollingBack);

    controller.abort();
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .expect("delete the test namespace");
}
