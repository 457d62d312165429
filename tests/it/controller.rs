//! The controller end to end, through kube's real client against the in-process API server, with a
//! real HTTP application whose metrics the test shapes: a tier applied is rendered and Ready; a
//! latency regression rolls the canary back in phases at the right times; a controller killed
//! mid-rollback is replaced and carries on; of two replicas only the leader acts; a missing Secret
//! is a clear condition, not a crash.

use crate::support::{self, wait_for};

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use support::live_app::LiveApp;
use tierguard::api::{MemoryTier, Phase};
use tierguard::controller::{LeaseConfig, RunConfig};

const NS: &str = "clinic";

/// A tier scaled down to seconds: the rollback window is 3 s, each phase holds 2 s.
fn tier(name: &str, scrape_url: &str, extra: Value) -> MemoryTier {
    let mut spec = json!({
        "target": {"configMapName": format!("{name}-flags")},
        "metrics": {"scrape": {"url": scrape_url}, "interval": "300ms", "timeout": "250ms"},
        "canary": {"rampInterval": "2s"},
        "rollback": {"p50LatencyMs": 1000, "p50LatencyFor": "3s", "phaseHold": "2s"},
        "stampede": {"for": "2s"},
        "notify": {"escalation": [{"level": 1, "after": "0s"}, {"level": 2, "after": "30s"}, {"level": 3, "after": "60s"}]},
    });
    json_patch::merge(&mut spec, &extra);
    support::tiers::tier(name, NS, spec)
}

fn controller(client: Client, lease: Option<LeaseConfig>) -> tokio::task::JoinHandle<()> {
    let identity = lease.as_ref().map(|l| l.identity.clone());
    tokio::spawn(async move {
        tierguard::controller::run(
            client,
            RunConfig {
                namespaces: vec![NS.into()],
                selector: None,
                metrics_addr: None,
                lease,
                instance: identity,
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
}

async fn flags(client: &Client, name: &str) -> Option<BTreeMap<String, String>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    api.get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|cm| cm.data)
}

async fn tier_now(client: &Client, name: &str) -> MemoryTier {
    let api: Api<MemoryTier> = Api::namespaced(client.clone(), NS);
    api.get(name).await.expect("the tier exists")
}

fn condition(tier: &MemoryTier, type_: &str) -> Option<(String, String, String)> {
    let c = tier
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn create_secret(client: &Client, name: &str, key: &str, value: &str) {
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            // Marked for tierguard: the controller uses no other Secret.
            labels: Some(BTreeMap::from([(
                "tierguard.dev/usable".to_owned(),
                "true".to_owned(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            key.to_owned(),
            k8s_openapi::ByteString(value.as_bytes().to_vec()),
        )])),
        ..Default::default()
    };
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the Secret");
}

async fn create(client: &Client, tier: &MemoryTier) {
    let api: Api<MemoryTier> = Api::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), tier)
        .await
        .expect("create the MemoryTier");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_is_rendered_with_its_baseline_and_becomes_ready() {
    tierguard::install_crypto_provider();
    let server = support::api_server().await;
    let client = server.client();
    let app = LiveApp::start(Duration::from_millis(100));
    create(&client, &tier("backend", &app.url(), json!({}))).await;
    let run = controller(client.clone(), None);

    let data = wait_for(
        "the effective-config ConfigMap",
        Duration::from_secs(20),
        || flags(&client, "backend-flags"),
    )
    .await;
    assert_eq!(data["CANARY_SAMPLE_RATE"], "0.1");
    assert_eq!(data["FAST_PATH_ENABLED"], "true");
    assert_eq!(data["MEM0_READS_ENABLED"], "true");
    assert_eq!(data["CACHE_TTL"], "3600");

    let ready = wait_for("Ready=True", Duration::from_secs(20), || async {
        let t = tier_now(&client, "backend").await;
        let ready = condition(&t, "Ready")?;
        let p50_known = t
            .status
            .as_ref()?
            .observed
            .as_ref()?
            .p50_latency_ms
            .is_some();
        (ready.0 == "True" && p50_known).then_some(t)
    })
    .await;
    let status = ready.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Healthy));
    assert_eq!(status.observed_generation, ready.metadata.generation);
    let observed = status.observed.expect("signals in status");
    let p50 = observed
        .p50_latency_ms
        .expect("P50 known after two scrapes");
    assert!((50.0..=100.0).contains(&p50), "healthy P50 {p50}");
    assert_eq!(
        status.effective.unwrap().canary_sample_rate.as_deref(),
        Some("0.1")
    );

    // The ConfigMap is owned by the tier and carries the hash of its content.
    let cm: ConfigMap = Api::namespaced(client.clone(), NS)
        .get("backend-flags")
        .await
        .unwrap();
    let owner = &cm.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("MemoryTier", "backend")
    );
    assert!(cm.annotations().contains_key("tierguard.dev/config-hash"));

    // One render: the reconcile that the ConfigMap's own change triggers decides on the status
    // just written, not on an older copy from the watch cache.
    let renders = server
        .writes()
        .iter()
        .filter(|w| w.path.ends_with("/configmaps/backend-flags"))
        .count();
    assert_eq!(renders, 1, "the baseline was rendered {renders} times");

    // Only the controller's field manager wrote the ConfigMap, and it never wrote the spec.
    for write in server.writes() {
        if write.path.contains("/memorytiers/") && !write.path.ends_with("/status") {
            panic!("the controller wrote a MemoryTier's spec: {write:?}");
        }
    }
    run.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_regression_rolls_back_in_phases_and_a_restarted_controller_carries_on() {
    tierguard::install_crypto_provider();
    let server = support::api_server().await;
    let client = server.client();
    let app = LiveApp::start(Duration::from_millis(100));
    create(&client, &tier("backend", &app.url(), json!({}))).await;
    let first = controller(client.clone(), None);
    wait_for("the baseline", Duration::from_secs(20), || async {
        let t = tier_now(&client, "backend").await;
        (t.status?.phase? == Phase::Healthy).then_some(())
    })
    .await;

    // P50 goes to ~1.75 s: the 3 s window must fill before phase 1.
    let breached = Instant::now();
    app.update(|p| p.latency_ms = 1500.0);
    wait_for(
        "phase 1: canary at the reduced rate",
        Duration::from_secs(20),
        || async {
            let data = flags(&client, "backend-flags").await?;
            (data["CANARY_SAMPLE_RATE"] == "0.05").then_some(())
        },
    )
    .await;
    let phase1_after = breached.elapsed();
    assert!(
        phase1_after >= Duration::from_secs(3),
        "rolled back after {phase1_after:?}, before the 3 s window had held"
    );
    assert!(
        phase1_after < Duration::from_secs(9),
        "rolled back late: {phase1_after:?}"
    );
    // Status is written right after the ConfigMap.
    let t = wait_for("status RollingBack", Duration::from_secs(5), || async {
        let t = tier_now(&client, "backend").await;
        (t.status.as_ref()?.phase? == Phase::RollingBack).then_some(t)
    })
    .await;
    assert!(
        t.status
            .as_ref()
            .unwrap()
            .mitigations
            .iter()
            .any(|m| m.reason.contains("P50")),
        "the mitigation says why: {:?}",
        t.status.unwrap().mitigations
    );

    // Kill the controller mid-rollback; a new one resumes from status.
    first.abort();
    let _ = first.await;
    let second = controller(client.clone(), None);

    let phase1_at = Instant::now();
    wait_for(
        "the canary at 0 after the hold",
        Duration::from_secs(20),
        || async {
            let data = flags(&client, "backend-flags").await?;
            (data["CANARY_SAMPLE_RATE"] == "0.0").then_some(())
        },
    )
    .await;
    wait_for(
        "phase 2: features disabled",
        Duration::from_secs(20),
        || async {
            let data = flags(&client, "backend-flags").await?;
            (data["FAST_PATH_ENABLED"] == "false"
                && data["MEM0_READS_ENABLED"] == "false"
                && data["MEM0_SHADOW_MODE"] == "false")
                .then_some(())
        },
    )
    .await;
    assert!(
        phase1_at.elapsed() >= Duration::from_millis(1500),
        "phase 1 did not hold"
    );

    // The signals recover: phase 3 verifies, phase 4 records the incident; the tier stays rolled
    // back (autoResume is false).
    app.update(|p| p.latency_ms = 60.0);
    let rolled_back = wait_for("RolledBack", Duration::from_secs(30), || async {
        let t = tier_now(&client, "backend").await;
        (t.status.as_ref()?.phase? == Phase::RolledBack).then_some(t)
    })
    .await;
    let status = rolled_back.status.unwrap();
    let incident = status
        .incidents
        .iter()
        .find(|i| i.runbook == tierguard::api::Runbook::CanaryRollback)
        .expect("an incident in status");
    let report = wait_for("the incident report", Duration::from_secs(20), || async {
        flags(&client, "backend-incidents").await
    })
    .await;
    assert!(
        report.values().any(|md| md.contains("Canary Rollback")),
        "report: {report:?}"
    );
    // Each phase is explained by its own Event, not folded into the first one's count.
    let notes: Vec<String> = server
        .list_json(&kube_testserver::Gvr::of::<
            k8s_openapi::api::events::v1::Event,
        >())
        .iter()
        .filter(|e| e["reason"] == "CanaryRollback")
        .filter_map(|e| e["note"].as_str().map(str::to_owned))
        .collect();
    for step in ["none → 1", "1 → 2", "2 → 3", "3 → 4"] {
        assert!(
            notes
                .iter()
                .any(|n| n.contains(&format!("rollback: {step}"))),
            "no Event for rollback {step}: {notes:#?}"
        );
    }
    // Exactly one rollback: the restart did not start a second one.
    let rollbacks = status
        .incidents
        .iter()
        .filter(|i| i.runbook == tierguard::api::Runbook::CanaryRollback)
        .count();
    assert_eq!(rollbacks, 1, "incidents: {:?}", status.incidents);
    assert!(
        incident.timeline.len() >= 3,
        "timeline: {:?}",
        incident.timeline
    );
    let data = flags(&client, "backend-flags").await.unwrap();
    assert_eq!(
        data["CANARY_SAMPLE_RATE"], "0.0",
        "stays rolled back without approval"
    );

    // A human approves: the tier resumes towards its baseline.
    let api: Api<MemoryTier> = Api::namespaced(client.clone(), NS);
    api.patch(
        "backend",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(
            json!({"metadata": {"annotations": {"tierguard.dev/resume": "approved-1"}}}),
        ),
    )
    .await
    .unwrap();
    wait_for(
        "the features back on after resume",
        Duration::from_secs(30),
        || async {
            let data = flags(&client, "backend-flags").await?;
            (data["MEM0_READS_ENABLED"] == "true").then_some(())
        },
    )
    .await;
    second.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_replicas_only_the_leader_acts_and_the_standby_takes_over() {
    tierguard::install_crypto_provider();
    let server = support::api_server().await;
    let admin = server.client();
    let app = LiveApp::start(Duration::from_millis(100));
    create(&admin, &tier("backend", &app.url(), json!({}))).await;
    let lease = |identity: &str| LeaseConfig {
        name: "tierguard-leader".into(),
        namespace: NS.into(),
        identity: identity.into(),
        duration: Duration::from_secs(3),
        grace: Duration::from_secs(1),
    };
    server.clear_requests();
    let a = controller(server.client_as("replica-a"), Some(lease("replica-a")));
    let b = controller(server.client_as("replica-b"), Some(lease("replica-b")));
    wait_for("the baseline rendered", Duration::from_secs(20), || {
        flags(&admin, "backend-flags")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let acting = |writes: &[kube_testserver::RequestRecord]| -> Vec<String> {
        let mut users: Vec<String> = writes
            .iter()
            .filter(|w| !w.path.contains("/leases"))
            .filter_map(|w| w.user.clone())
            .collect();
        users.sort();
        users.dedup();
        users
    };
    let writers = acting(&server.writes());
    assert_eq!(writers.len(), 1, "only the leader writes: {writers:?}");
    let leader = writers[0].clone();

    // The leader dies; the standby takes over within the lease duration and carries on.
    let (dead, survivor) = if leader == "replica-a" {
        (a, b)
    } else {
        (b, a)
    };
    dead.abort();
    let _ = dead.await;
    server.clear_requests();
    app.update(|p| p.latency_ms = 1500.0);
    wait_for(
        "the survivor rolling back",
        Duration::from_secs(30),
        || async {
            let data = flags(&admin, "backend-flags").await?;
            (data["CANARY_SAMPLE_RATE"] == "0.05").then_some(())
        },
    )
    .await;
    let writers = acting(&server.writes());
    assert_eq!(writers.len(), 1, "{writers:?}");
    assert_ne!(writers[0], leader, "the new leader is the survivor");
    survivor.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_is_a_clear_condition_and_other_tiers_carry_on() {
    tierguard::install_crypto_provider();
    let server = support::api_server().await;
    let client = server.client();
    let app = LiveApp::start(Duration::from_millis(100));
    create(
        &client,
        &tier(
            "no-secret",
            &app.url(),
            json!({"redis": {"urlSecretRef": {"name": "clinic-redis", "key": "url"}}}),
        ),
    )
    .await;
    create(&client, &tier("fine", &app.url(), json!({}))).await;
    let run = controller(client.clone(), None);

    let (status, reason, message) =
        wait_for("the Stalled condition", Duration::from_secs(20), || async {
            let t = tier_now(&client, "no-secret").await;
            condition(&t, "Stalled").filter(|c| c.0 == "True")
        })
        .await;
    assert_eq!(status, "True");
    assert_eq!(reason, "SecretMissing");
    assert!(
        message.contains("clinic-redis") && message.contains("url"),
        "the message names the Secret and key: {message}"
    );
    let t = tier_now(&client, "no-secret").await;
    assert_eq!(condition(&t, "Ready").unwrap().0, "False");
    assert!(
        flags(&client, "no-secret-flags").await.is_none(),
        "nothing acted on"
    );

    // The other tier is unaffected.
    wait_for("the other tier rendered", Duration::from_secs(20), || {
        flags(&client, "fine-flags")
    })
    .await;

    // An Event says so.
    let events = server.list_json(&kube_testserver::Gvr::of::<
        k8s_openapi::api::events::v1::Event,
    >());
    assert!(
        events.iter().any(|e| e["reason"] == "SecretMissing"),
        "events: {events:?}"
    );

    // Creating the Secret heals it.
    let redis = support::servers::RedisServer::start();
    create_secret(&client, "clinic-redis", "url", &redis.url()).await;
    wait_for("the tier healed", Duration::from_secs(60), || async {
        let t = tier_now(&client, "no-secret").await;
        condition(&t, "Stalled").filter(|c| c.0 == "False")
    })
    .await;
    let t = tier_now(&client, "no-secret").await;
    assert!(
        t.status
            .unwrap()
            .observed
            .unwrap()
            .redis_used_memory_bytes
            .is_some()
    );
    run.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_ready_once_the_watches_run() {
    tierguard::install_crypto_provider();
    let server = support::api_server().await;
    let client = server.client();
    let app = LiveApp::start(Duration::from_millis(100));
    create(&client, &tier("backend", &app.url(), json!({}))).await;
    let port = support::servers::free_port();
    let run = tokio::spawn(async move {
        tierguard::controller::run(
            client,
            RunConfig {
                namespaces: vec![NS.into()],
                selector: None,
                metrics_addr: Some(([127, 0, 0, 1], port).into()),
                lease: None,
                instance: None,
                concurrency: tierguard::controller::DEFAULT_CONCURRENCY,
                destinations: support::loopback(),
                background: Default::default(),
                shutdown_timeout: tierguard::controller::DEFAULT_SHUTDOWN_TIMEOUT,
                status_refresh: support::EVERY_TICK,
            },
        )
        .await
        .expect("the controller runs");
    });
    // The Controller waits on the same store as the readiness check; both must see it ready.
    wait_for(
        "/readyz to answer 200",
        Duration::from_secs(20),
        || async move {
            tokio::task::spawn_blocking(move || support::servers::http_get_ok(port, "/readyz"))
                .await
                .unwrap()
                .then_some(())
        },
    )
    .await;
    assert!(support::servers::http_get_ok(port, "/healthz"));
    run.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_stalls_without_acting() {
    tierguard::install_crypto_provider();
    let server = support::api_server().await;
    let client = server.client();
    // The API server refuses this object (a CEL rule); one stored before the rule existed, under
    // an older CRD, is still there: the controller must catch it itself.
    let mut bad = tier("bad", "http://127.0.0.1:9/metrics", json!({}));
    bad.spec.canary.reduced_rate = 0.5;
    let refused = Api::<MemoryTier>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("the API server validates the CRD's rules");
    assert!(refused.to_string().contains("reducedRate"), "{refused}");
    server
        .put_json(
            &kube_testserver::Gvr::of::<MemoryTier>(),
            serde_json::to_value(&bad).unwrap(),
        )
        .expect("store the tier as an older CRD let it be");
    let run = controller(client.clone(), None);
    let (_, reason, message) = wait_for("Stalled", Duration::from_secs(20), || async {
        let t = tier_now(&client, "bad").await;
        condition(&t, "Stalled").filter(|c| c.0 == "True")
    })
    .await;
    assert_eq!(reason, "InvalidSpec");
    assert!(message.contains("spec.canary.reducedRate"), "{message}");
    assert!(flags(&client, "bad-flags").await.is_none());
    run.abort();
}

/// The (API group, resource, verb) a request needs, as RBAC sees it.
fn rbac_need(r: &kube_testserver::RequestRecord) -> Option<(String, String, String)> {
    let parts: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match *parts.first()? {
        "api" => (String::new(), &parts[2..]),
        "apis" => (parts.get(1)?.to_string(), &parts[3..]),
        _ => return None,
    };
    let rest = if rest.first() == Some(&"namespaces") && rest.len() > 2 {
        &rest[2..]
    } else {
        rest
    };
    let (resource, named) = match rest {
        [] => return None, // discovery
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub, ..] => (format!("{resource}/{sub}"), true),
    };
    let verb = match (r.method.as_str(), named, r.watch) {
        ("GET", _, true) => "watch",
        ("GET", true, false) => "get",
        ("GET", false, false) => "list",
        ("POST", ..) => "create",
        ("PUT", ..) => "update",
        ("PATCH", ..) => "patch",
        ("DELETE", true, _) => "delete",
        ("DELETE", false, _) => "deletecollection",
        _ => return None,
    };
    Some((group, resource, verb.to_owned()))
}

/// Every (group, resource, verb) the RBAC rules of `yaml` (ClusterRoles and Roles) grant.
fn rbac_grants(yaml: &str) -> Vec<(String, String, String)> {
    let mut grants = Vec::new();
    for doc in serde_saphyr::from_multiple::<Value>(yaml).unwrap() {
        if !matches!(doc["kind"].as_str(), Some("ClusterRole" | "Role")) {
            continue;
        }
        for rule in doc["rules"].as_array().into_iter().flatten() {
            let list = |key: &str| -> Vec<String> {
                rule[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            };
            for group in list("apiGroups") {
                for resource in list("resources") {
                    for verb in list("verbs") {
                        grants.push((group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    grants
}

/// The RBAC in deploy/ and in the chart is derived from what the controller really calls: a
/// scenario that exercises every kind of call (leader election, Secrets, status, ConfigMaps,
/// restarts, incident reports, Events) is recorded, and each call must be granted. Tiers that name
/// another application's Secret, ConfigMap and Deployment run alongside: what RBAC would let
/// through but tierguard's own rules forbid is never reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_grants_every_call_the_controller_makes_and_nothing_is_missing() {
    tierguard::install_crypto_provider();
    let server = support::api_server().await;
    let admin = server.client();
    let app = LiveApp::start(Duration::from_millis(100));
    let redis = support::servers::RedisServer::start();
    create_secret(&admin, "clinic-redis", "url", &redis.url()).await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(admin.clone(), NS);
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "backend", "namespace": NS,
                             "annotations": {"tierguard.dev/restart-for": "backend"}},
                "spec": {"selector": {"matchLabels": {"app": "backend"}},
                         "template": {"metadata": {"labels": {"app": "backend"}},
                                      "spec": {"containers": [{"name": "app", "image": "app"}]}}},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    create(
        &admin,
        &tier(
            "backend",
            &app.url(),
            json!({
                "target": {"workloadRef": {"kind": "Deployment", "name": "backend"}, "restartOnChange": true},
                "redis": {"urlSecretRef": {"name": "clinic-redis", "key": "url"}},
            }),
        ),
    )
    .await;
    // Next to it, tiers that name what they may not use: another application's Secret (not
    // marked for tierguard), its ConfigMap, and its Deployment (which did not opt in).
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(admin.clone(), NS)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "payments-db", "namespace": NS},
                "stringData": {"url": "redis://:payments-password@127.0.0.1:1/"},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    Api::<ConfigMap>::namespaced(admin.clone(), NS)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "payments-config", "namespace": NS},
                "data": {"DB_POOL": "20"},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "payments", "namespace": NS},
                "spec": {"selector": {"matchLabels": {"app": "payments"}},
                         "template": {"metadata": {"labels": {"app": "payments"}},
                                      "spec": {"containers": [{"name": "app", "image": "app"}]}}},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    for (name, extra) in [
        (
            "intruder-secret",
            json!({"redis": {"urlSecretRef": {"name": "payments-db", "key": "url"}}}),
        ),
        (
            "intruder-configmap",
            json!({"target": {"configMapName": "payments-config"}}),
        ),
        (
            "intruder-restart",
            json!({"target": {"workloadRef": {"kind": "Deployment", "name": "payments"}, "restartOnChange": true}}),
        ),
    ] {
        create(&admin, &tier(name, &app.url(), extra)).await;
    }
    let run = controller(
        server.client_as("controller"),
        Some(LeaseConfig {
            name: "tierguard-leader".into(),
            namespace: NS.into(),
            identity: "controller-0".into(),
            duration: Duration::from_secs(3),
            grace: Duration::from_secs(1),
        }),
    );
    app.update(|p| p.latency_ms = 1500.0);
    wait_for("phase 2 of a rollback", Duration::from_secs(30), || async {
        let data = flags(&admin, "backend-flags").await?;
        (data["MEM0_READS_ENABLED"] == "false").then_some(())
    })
    .await;
    app.update(|p| p.latency_ms = 60.0);
    wait_for("the incident report", Duration::from_secs(30), || {
        flags(&admin, "backend-incidents")
    })
    .await;
    for intruder in ["intruder-secret", "intruder-configmap", "intruder-restart"] {
        let (_, reason, _) = wait_for(
            &format!("{intruder} Stalled"),
            Duration::from_secs(20),
            || async {
                condition(&tier_now(&admin, intruder).await, "Stalled").filter(|c| c.0 == "True")
            },
        )
        .await;
        assert!(
            matches!(reason.as_str(), "SecretNotUsable" | "NotOurs"),
            "{intruder}: {reason}"
        );
    }
    run.abort();

    let calls: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.user.as_deref() == Some("controller"))
        .collect();
    // What RBAC grants but the rules above forbid is never reached: the foreign Secret's and
    // ConfigMap's contents are never read (their metadata is), and nothing of the other
    // application is written.
    for call in &calls {
        let foreign = ["/secrets/payments-db", "/configmaps/payments-config"]
            .iter()
            .any(|p| call.path.ends_with(p));
        assert!(
            !foreign || call.metadata_only,
            "the controller read {} {} whole",
            call.method,
            call.path
        );
        let theirs = call.path.ends_with("/configmaps/payments-config")
            || call.path.ends_with("/deployments/payments")
            || call.path.ends_with("/secrets/payments-db");
        assert!(
            !(theirs && call.is_write()),
            "the controller wrote {} {}",
            call.method,
            call.path
        );
    }
    assert!(
        calls
            .iter()
            .any(|c| c.path.ends_with("/secrets/payments-db") && c.metadata_only),
        "the scenario did not exercise the refusal of an unmarked Secret"
    );

    let needs: std::collections::BTreeSet<_> = calls.iter().filter_map(rbac_need).collect();
    for wanted in [
        ("tierguard.dev", "memorytiers", "watch"),
        ("tierguard.dev", "memorytiers/status", "patch"),
        ("", "configmaps", "patch"),
        ("", "secrets", "get"),
        ("apps", "deployments", "patch"),
        ("coordination.k8s.io", "leases", "get"),
        ("events.k8s.io", "events", "create"),
    ] {
        let wanted = (
            wanted.0.to_owned(),
            wanted.1.to_owned(),
            wanted.2.to_owned(),
        );
        assert!(
            needs.contains(&wanted),
            "the scenario did not exercise {wanted:?}: {needs:?}"
        );
    }

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let deploy = std::fs::read_to_string(root.join("deploy/base/rbac.yaml")).unwrap();
    let helm = root.join(".tools/bin/helm");
    let chart = std::process::Command::new(&helm)
        .args(["template", "t", "charts/tierguard"])
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}: run scripts/install-k8s-tools", helm.display()));
    assert!(chart.status.success());
    for (source, yaml) in [
        ("deploy/base/rbac.yaml", deploy),
        ("charts/tierguard", String::from_utf8(chart.stdout).unwrap()),
    ] {
        let grants = rbac_grants(&yaml);
        for need in &needs {
            assert!(
                grants.contains(need),
                "{source} does not grant {need:?}, which the controller calls"
            );
        }
        // Least privilege: nothing granted that the controller never needs, except verbs a
        // reflector may use after a resync (list goes with watch), creating what it applies, and
        // continuing an Event series.
        for grant in &grants {
            let used = needs.contains(grant)
                || (grant.2 == "list"
                    && needs.contains(&(grant.0.clone(), grant.1.clone(), "watch".into())))
                || (grant.2 == "create"
                    && needs.contains(&(grant.0.clone(), grant.1.clone(), "patch".into())))
                || (grant.1 == "statefulsets"
                    && needs.iter().any(|n| n.1 == "deployments" && n.2 == grant.2))
                // An Event whose message repeats is continued as a series (a patch); this
                // scenario's messages are all different.
                || (grant.1 == "events"
                    && grant.2 == "patch"
                    && needs.contains(&(grant.0.clone(), grant.1.clone(), "create".into())))
                || (grant.2 == "get" && needs.iter().any(|n| n.0 == grant.0 && n.1 == grant.1));
            assert!(
                used,
                "{source} grants {grant:?}, which the controller never uses"
            );
        }
    }
}

/// Events: a repeat of the same message is counted on the first Event; a new message is a new
/// Event even with the same reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_repeats_as_a_series_and_a_new_message_is_a_new_event() {
    use tierguard::controller::events::{EventPublisher, Note};
    tierguard::install_crypto_provider();
    let server = support::api_server().await;
    let client = server.client();
    create(
        &client,
        &tier("backend", "http://127.0.0.1:9/metrics", json!({})),
    )
    .await;
    let regarding = tier_now(&client, "backend").await.object_ref(&());
    let events = EventPublisher::new(client.clone(), "tierguard", Some("replica-0".into()));
    let note = |text: &str| Note {
        warning: false,
        reason: tierguard::api::Reason::CanaryRollback,
        action: "Decide".into(),
        note: text.into(),
    };
    for text in [
        "rollback: none → 1",
        "rollback: none → 1",
        "rollback: 1 → 2",
    ] {
        events.publish(&note(text), &regarding).await.unwrap();
    }
    let stored = server.list_json(&kube_testserver::Gvr::of::<
        k8s_openapi::api::events::v1::Event,
    >());
    let summary: Vec<(String, u64)> = stored
        .iter()
        .map(|e| {
            (
                e["note"].as_str().unwrap().to_owned(),
                e["series"]["count"].as_u64().unwrap_or(1),
            )
        })
        .collect();
    assert_eq!(summary.len(), 2, "{summary:?}");
    assert!(
        summary.contains(&("rollback: none → 1".into(), 2)),
        "{summary:?}"
    );
    assert!(
        summary.contains(&("rollback: 1 → 2".into(), 1)),
        "{summary:?}"
    );
    for e in &stored {
        assert_eq!(e["reportingController"], "tierguard");
        assert_eq!(e["reportingInstance"], "replica-0");
        assert_eq!(e["regarding"]["name"], "backend");
    }
}

/// `--namespace clinic --namespace billing`: tiers in both are reconciled through one store, a
/// third namespace is left alone, and every call the controller makes stays in a watched
/// namespace, where the chart's namespaced install grants it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_namespaces_are_watched_with_roles_in_those_namespaces_only() {
    tierguard::install_crypto_provider();
    let server = support::api_server().await;
    let admin = server.client();
    let app = LiveApp::start(Duration::from_millis(100));
    let watched = ["clinic", "billing"];
    for ns in watched.iter().chain(&["elsewhere"]) {
        let mut t = tier("backend", &app.url(), json!({}));
        t.metadata.namespace = Some((*ns).into());
        Api::<MemoryTier>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &t)
            .await
            .unwrap();
    }
    let client = server.client_as("controller");
    let run = tokio::spawn(async move {
        tierguard::controller::run(
            client,
            RunConfig {
                namespaces: watched.iter().map(|s| s.to_string()).collect(),
                selector: None,
                metrics_addr: None,
                lease: None,
                instance: None,
                concurrency: tierguard::controller::DEFAULT_CONCURRENCY,
                destinations: support::loopback(),
                background: Default::default(),
                shutdown_timeout: tierguard::controller::DEFAULT_SHUTDOWN_TIMEOUT,
                status_refresh: support::EVERY_TICK,
            },
        )
        .await
        .expect("the controller runs");
    });
    for ns in watched {
        let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), ns);
        wait_for(
            &format!("the rendered ConfigMap in {ns}"),
            Duration::from_secs(20),
            || {
                let configmaps = configmaps.clone();
                async move { configmaps.get_opt("backend-flags").await.ok().flatten() }
            },
        )
        .await;
    }
    // A spec change in one namespace is seen while the other keeps its tier.
    Api::<MemoryTier>::namespaced(admin.clone(), "billing")
        .patch(
            "backend",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&json!({"spec": {"features": {"EXTRA_FLAG": true}}})),
        )
        .await
        .unwrap();
    let billing: Api<ConfigMap> = Api::namespaced(admin.clone(), "billing");
    wait_for(
        "the new flag rendered in billing",
        Duration::from_secs(20),
        || {
            let billing = billing.clone();
            async move {
                let data = billing.get_opt("backend-flags").await.ok()??.data?;
                (data.get("EXTRA_FLAG").map(String::as_str) == Some("true")).then_some(())
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    run.abort();
    let elsewhere: Api<ConfigMap> = Api::namespaced(admin.clone(), "elsewhere");
    assert!(elsewhere.get_opt("backend-flags").await.unwrap().is_none());
    let untouched = Api::<MemoryTier>::namespaced(admin.clone(), "elsewhere")
        .get("backend")
        .await
        .unwrap();
    assert!(
        untouched.status.is_none(),
        "a namespace not watched is not reconciled"
    );

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let chart = std::process::Command::new(root.join(".tools/bin/helm"))
        .args([
            "template",
            "t",
            "charts/tierguard",
            "--set",
            "watchNamespaces={clinic,billing}",
        ])
        .current_dir(root)
        .output()
        .expect("helm: run scripts/install-k8s-tools");
    assert!(chart.status.success());
    let mut granted: std::collections::BTreeMap<String, Vec<(String, String, String)>> =
        Default::default();
    for doc in
        serde_saphyr::from_multiple::<Value>(&String::from_utf8(chart.stdout).unwrap()).unwrap()
    {
        assert_ne!(
            doc["kind"], "ClusterRole",
            "a namespaced install has no ClusterRole"
        );
        if doc["kind"] == "Role" {
            let ns = doc["metadata"]["namespace"].as_str().unwrap().to_owned();
            granted
                .entry(ns)
                .or_default()
                .extend(rbac_grants(&serde_json::to_string(&doc).unwrap()));
        }
    }
    let calls: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.user.as_deref() == Some("controller"))
        .collect();
    assert!(!calls.is_empty());
    for call in &calls {
        let Some(need) = rbac_need(call) else {
            continue;
        };
        let ns = call
            .path
            .split("/namespaces/")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("a cluster-wide call: {} {}", call.method, call.path));
        assert!(
            watched.contains(&ns),
            "a call outside the watched namespaces: {}",
            call.path
        );
        assert!(
            granted.get(ns).is_some_and(|g| g.contains(&need)),
            "the chart grants no {need:?} in {ns} ({} {})",
            call.method,
            call.path
        );
    }
}

/// One tier whose memory this controller cannot read, and one whose stored spec has a wrong type
/// (written straight into the store, as an object from before a CRD change would be), beside
/// healthy tiers: the healthy ones keep being reconciled on time; the broken ones are reported
/// (condition, Event, metric) and the controller neither crashes nor stalls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_that_cannot_be_read_are_reported_and_never_stop_the_others() {
    tierguard::install_crypto_provider();
    let server = support::api_server().await;
    let client = server.client();
    let app = LiveApp::start(Duration::from_millis(100));
    let gvr = kube_testserver::Gvr::of::<MemoryTier>();
    for name in ["healthy-a", "healthy-b"] {
        create(&client, &tier(name, &app.url(), json!({}))).await;
    }
    // Memory written by a newer tierguard, beside a status that says an incident is open.
    let mut newer = serde_json::to_value(tier("newer-memory", &app.url(), json!({}))).unwrap();
    newer["status"] = json!({
        "phase": "Degraded",
        "policy": {"version": 7, "whatever": {"a": 1}},
        "incidents": [{
            "id": "2026-01-01-000000-redis-memory", "runbook": "RedisMemory",
            "trigger": "Redis memory 93%", "startedAt": "2026-01-01T00:00:00Z", "escalationLevel": 2,
        }],
    });
    server
        .put_json(&gvr, newer)
        .expect("store the tier with newer memory");
    // A spec that does not deserialize.
    let mut wrong = serde_json::to_value(tier("wrong-type", &app.url(), json!({}))).unwrap();
    wrong["spec"]["canary"]["sampleRate"] = json!("lots");
    server
        .put_json(&gvr, wrong)
        .expect("store the tier with a wrong type");

    let (run, metrics) = controller_with_metrics(client.clone()).await;

    // The unreadable one: Stalled with the reason, and an Event.
    let (_, reason, message) = wait_for(
        "the invalid tier's Stalled condition",
        Duration::from_secs(20),
        || async {
            let stored = server.get_json(&gvr, NS, "wrong-type")?;
            let c = stored["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Stalled")?
                .clone();
            (c["status"] == "True").then(|| {
                (
                    c["status"].as_str().unwrap().to_owned(),
                    c["reason"].as_str().unwrap().to_owned(),
                    c["message"].as_str().unwrap().to_owned(),
                )
            })
        },
    )
    .await;
    assert_eq!(reason, "InvalidObject");
    assert!(
        message.contains("sampleRate") || message.contains("lots"),
        "{message}"
    );

    // The newer memory: started afresh from what status says, with a condition and a Warning.
    let recovered = wait_for("the memory reset", Duration::from_secs(20), || async {
        let t = tier_now(&client, "newer-memory").await;
        condition(&t, "PolicyMemory")
            .filter(|c| c.1 == "MemoryReset")
            .map(|c| (c, t))
    })
    .await;
    assert_eq!(recovered.0.0, "False");
    assert!(recovered.0.2.contains("version 7"), "{}", recovered.0.2);
    let status = recovered.1.status.unwrap();
    // The open incident kept its id: no second incident, no repeated page.
    assert!(
        status
            .incidents
            .iter()
            .any(|i| i.id == "2026-01-01-000000-redis-memory"),
        "{:?}",
        status.incidents
    );
    // The memory written back is this controller's version, and reads.
    assert_eq!(status.policy.as_ref().unwrap()["version"], 1);
    tierguard::controller::memory::decode(status.policy.as_ref().unwrap()).unwrap();
    // Each is said in a Warning Event (published after the status write).
    for reason in ["InvalidObject", "MemoryReset"] {
        wait_for(
            &format!("a Warning Event {reason}"),
            Duration::from_secs(10),
            || async {
                let events = server.list_json(&kube_testserver::Gvr::of::<
                    k8s_openapi::api::events::v1::Event,
                >());
                events
                    .iter()
                    .any(|e| e["reason"] == reason && e["type"] == "Warning")
                    .then_some(())
            },
        )
        .await;
    }

    // The healthy tiers keep being reconciled at their interval (300 ms): their observation
    // moves on while the broken ones sit there.
    for name in ["healthy-a", "healthy-b"] {
        let first = wait_for("a first observation", Duration::from_secs(20), || async {
            tier_now(&client, name).await.status?.observed?.at
        })
        .await;
        let later = wait_for("a later observation", Duration::from_secs(5), || async {
            let at = tier_now(&client, name).await.status?.observed?.at?;
            (at > first).then_some(at)
        })
        .await;
        assert!(later > first);
        let t = tier_now(&client, name).await;
        assert_eq!(t.status.unwrap().phase, Some(Phase::Healthy));
    }
    // The controller counted the unreadable object as a read error, and is still running.
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("tierguard_reconcile_errors_total{kind=\"read\"}")),
        "{text}"
    );
    assert!(!run.is_finished(), "the controller stopped");
    run.abort();
}

/// A controller with its /metrics served on a free port.
async fn controller_with_metrics(
    client: Client,
) -> (tokio::task::JoinHandle<()>, std::net::SocketAddr) {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", support::servers::free_port())
        .parse()
        .unwrap();
    let run = tokio::spawn(async move {
        tierguard::controller::run(
            client,
            RunConfig {
                namespaces: vec![NS.into()],
                selector: None,
                metrics_addr: Some(addr),
                lease: None,
                instance: None,
                concurrency: tierguard::controller::DEFAULT_CONCURRENCY,
                destinations: support::loopback(),
                background: Default::default(),
                shutdown_timeout: tierguard::controller::DEFAULT_SHUTDOWN_TIMEOUT,
                status_refresh: support::EVERY_TICK,
            },
        )
        .await
        .expect("the controller runs");
    });
    (run, addr)
}

/// A Secret that holds something other than a Redis URL is a configuration error: the tier is
/// Stalled with a condition and a Warning Event naming the field (never a silent backoff), and it
/// heals when the Secret is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_redis_url_in_a_secret_stalls_the_tier_with_a_reason() {
    tierguard::install_crypto_provider();
    let server = support::api_server().await;
    let client = server.client();
    let app = LiveApp::start(Duration::from_millis(100));
    create_secret(
        &client,
        "clinic-redis",
        "url",
        "mysql://app:s3cret@somewhere:3306",
    )
    .await;
    create(
        &client,
        &tier(
            "bad-url",
            &app.url(),
            json!({"redis": {"urlSecretRef": {"name": "clinic-redis", "key": "url"}}}),
        ),
    )
    .await;
    let run = controller(client.clone(), None);
    let (_, reason, message) =
        wait_for("the Stalled condition", Duration::from_secs(20), || async {
            let t = tier_now(&client, "bad-url").await;
            condition(&t, "Stalled").filter(|c| c.0 == "True")
        })
        .await;
    assert_eq!(reason, "ConfigInvalid");
    assert!(message.contains("spec.redis.urlSecretRef"), "{message}");
    assert!(
        !message.contains("s3cret"),
        "the password is not echoed: {message}"
    );
    wait_for(
        "a Warning Event ConfigInvalid",
        Duration::from_secs(10),
        || async {
            server
                .list_json(&kube_testserver::Gvr::of::<
                    k8s_openapi::api::events::v1::Event,
                >())
                .iter()
                .any(|e| e["reason"] == "ConfigInvalid" && e["type"] == "Warning")
                .then_some(())
        },
    )
    .await;
    assert!(
        flags(&client, "bad-url-flags").await.is_none(),
        "nothing acted on"
    );
    run.abort();
}

/// A decision is written down (claimed) before it acts. Without that, a status write that failed
/// after the actions made the next reconcile take the same decision again from the old status:
/// the soak saw a cold start warmed three times and an incident opened twice. Here the one write
/// that carries the rollback is refused with a 409 Conflict (as when another writer got there
/// first): the rollback still happens, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_whose_status_write_fails_is_not_taken_twice() {
    use kube_testserver::{Fault, FaultAction, Gvr};
    tierguard::install_crypto_provider();
    let server = support::api_server().await;
    let client = server.client();
    let app = LiveApp::start(Duration::from_millis(100));
    create(&client, &tier("backend", &app.url(), json!({}))).await;
    let _run = controller(client.clone(), None);
    wait_for("the baseline", Duration::from_secs(20), || async {
        let t = tier_now(&client, "backend").await;
        (t.status?.phase? == Phase::Healthy).then_some(())
    })
    .await;

    server.push_fault(Fault {
        method: Some("PATCH".into()),
        path_prefix: format!(
            "/apis/tierguard.dev/v1alpha1/namespaces/{NS}/memorytiers/backend/status"
        ),
        body_contains: Some("\"phase\":\"RollingBack\"".into()),
        ..Fault::new(FaultAction::Fail(409), 1)
    });
    app.update(|p| p.latency_ms = 1500.0);
    wait_for("status RollingBack", Duration::from_secs(30), || async {
        let t = tier_now(&client, "backend").await;
        (t.status.as_ref()?.phase? == Phase::RollingBack).then_some(())
    })
    .await;
    assert!(server.pending_faults().is_empty(), "the fault was not used");
    // Whatever a second decision would do is done by now (reconciles run every 300 ms).
    tokio::time::sleep(Duration::from_secs(2)).await;

    let opened: Vec<(String, u64)> = server
        .list_json(&Gvr::of::<k8s_openapi::api::events::v1::Event>())
        .iter()
        .filter(|e| e["reason"] == "IncidentOpened")
        .map(|e| {
            (
                e["note"].as_str().unwrap_or_default().to_owned(),
                e["series"]["count"].as_u64().unwrap_or(1),
            )
        })
        .collect();
    let total: u64 = opened.iter().map(|(_, n)| n).sum();

    assert_eq!(
        total, 1,
        "the incident was opened {total} times: {opened:#?}"
    );
    let status = tier_now(&client, "backend").await.status.unwrap();
    assert_eq!(status.incidents.len(), 1, "{:#?}", status.incidents);
    let renders = status
        .recent_actions
        .iter()
        .filter(|r| {
            r.action == tierguard::api::ActionKind::RenderConfig
                && r.reason.starts_with("applied rollback-canary")
        })
        .count();
    assert_eq!(renders, 1, "{:#?}", status.recent_actions);
}

/// A 500 from the API server while reading the tier's Secret is the API server's trouble, not a
/// missing Secret: the reconcile is retried, and the tier is neither Stalled nor announced as
/// `SecretMissing`. (The long soak saw a tier mid-rollback flip to Stalled and back on such a 500.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_reading_a_secret_does_not_stall_the_tier() {
    use kube_testserver::Gvr;
    tierguard::install_crypto_provider();
    let server = support::api_server().await;
    let client = server.client();
    let app = LiveApp::start(Duration::from_millis(100));
    create_secret(&client, "redis", "url", "redis://127.0.0.1:1/").await;
    let spec = json!({"redis": {"urlSecretRef": {"name": "redis", "key": "url"}}});
    create(&client, &tier("backend", &app.url(), spec)).await;
    let _run = controller(client.clone(), None);
    wait_for("the baseline", Duration::from_secs(20), || async {
        let t = tier_now(&client, "backend").await;
        (t.status?.phase? == Phase::Healthy).then_some(())
    })
    .await;

    server.fail_next(
        Some("GET"),
        &format!("/api/v1/namespaces/{NS}/secrets/redis"),
        2,
        500,
    );
    wait_for("the failures used", Duration::from_secs(20), || async {
        server.pending_faults().is_empty().then_some(())
    })
    .await;
    // The next reconcile after the backoff reads the Secret again.
    wait_for(
        "a reconcile after the failures",
        Duration::from_secs(30),
        || async {
            let requests = server.requests();
            let last_failure = requests.iter().rposition(|r| r.injected)?;
            requests[last_failure + 1..]
                .iter()
                .any(|r| r.path.ends_with("/secrets/redis") && r.status == 200)
                .then_some(())
        },
    )
    .await;
    let stalled: Vec<String> = server
        .list_json(&Gvr::of::<k8s_openapi::api::events::v1::Event>())
        .iter()
        .filter(|e| {
            matches!(
                e["reason"].as_str(),
                Some("SecretMissing" | "ConfigInvalid")
            )
        })
        .map(|e| e["note"].to_string())
        .collect();
    assert!(
        stalled.is_empty(),
        "a transient 500 stalled the tier: {stalled:?}"
    );
    let t = tier_now(&client, "backend").await;
    assert_eq!(t.status.unwrap().phase, Some(Phase::Healthy));
}
