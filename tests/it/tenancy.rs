//! No confused deputy: each test is a hostile tenant's attempt, with no right but creating a
//! MemoryTier in its namespace, to make the controller do what the tenant itself may not. The
//! controller runs against the in-process API server through kube's real client; the tenant's
//! servers, and the "internal services" it must not reach, are real servers on loopback
//! (127.0.0.2 stands for an address outside the controller's allow-lists).

use crate::support::{self, wait_for};

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use kube_testserver::ApiServer;
use serde_json::{Value, json};
use support::http::{Recorder, Reply};
use tierguard::api::MemoryTier;
use tierguard::controller::RunConfig;
use tierguard::destinations::Destinations;

const NS: &str = "clinic";

/// The tenant's tier: reconciled every second.
fn tier(name: &str, extra: Value) -> MemoryTier {
    let mut spec = json!({
        "target": {"configMapName": format!("{name}-flags")},
        "metrics": {"interval": "1s", "timeout": "500ms"},
    });
    json_patch::merge(&mut spec, &extra);
    serde_json::from_value(json!({
        "apiVersion": "tierguard.dev/v1alpha1",
        "kind": "MemoryTier",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }))
    .expect("a valid MemoryTier")
}

fn controller(client: Client, destinations: Destinations) -> tokio::task::JoinHandle<()> {
    controller_with(client, destinations, Default::default(), 16)
}

fn controller_with(
    client: Client,
    destinations: Destinations,
    background: tierguard::controller::work::Budget,
    concurrency: u16,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tierguard::controller::run(
            client,
            RunConfig {
                namespaces: vec![NS.into()],
                selector: None,
                metrics_addr: None,
                lease: None,
                instance: None,
                concurrency,
                destinations,
                background,
                shutdown_timeout: tierguard::controller::DEFAULT_SHUTDOWN_TIMEOUT,
                status_refresh: support::EVERY_TICK,
            },
        )
        .await
        .expect("the controller runs");
    })
}

async fn create(client: &Client, tier: &MemoryTier) {
    Api::<MemoryTier>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), tier)
        .await
        .expect("create the MemoryTier");
}

async fn tier_now(client: &Client, name: &str) -> MemoryTier {
    Api::<MemoryTier>::namespaced(client.clone(), NS)
        .get(name)
        .await
        .expect("the tier exists")
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

/// Wait until the tier is Stalled; its reason and message.
async fn stalled(client: &Client, name: &str) -> (String, String) {
    let (_, reason, message) = wait_for(
        &format!("{name} Stalled"),
        Duration::from_secs(20),
        || async {
            let t = tier_now(client, name).await;
            condition(&t, "Stalled").filter(|c| c.0 == "True")
        },
    )
    .await;
    (reason, message)
}

/// The notes of the Warning Events about `tier`.
fn warnings(server: &ApiServer, tier: &str) -> Vec<String> {
    server
        .list_json(&kube_testserver::Gvr::of::<
            k8s_openapi::api::events::v1::Event,
        >())
        .into_iter()
        .filter(|e| e["regarding"]["name"] == tier && e["type"] == "Warning")
        .filter_map(|e| e["note"].as_str().map(str::to_owned))
        .collect()
}

/// Another application's Secret: not marked for tierguard.
async fn foreign_secret(client: &Client, name: &str, key: &str, value: &str) {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            key.to_owned(),
            k8s_openapi::ByteString(value.as_bytes().to_vec()),
        )])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

fn any_header_or_body_holds(requests: &[support::http::Recorded], secret: &str) -> bool {
    requests.iter().any(|r| {
        r.headers.values().any(|v| v.contains(secret)) || r.body.to_string().contains(secret)
    })
}

/// The tenant may not read Secrets, but may name any of its namespace in a tier and point the
/// URLs at its own server: Prometheus's bearer token, the warming token and PagerDuty's routing
/// key would carry the other application's password there. The controller uses only Secrets
/// marked for it, and says which one and how to mark it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_send_itself_a_secret_it_may_not_read() {
    tierguard::install_crypto_provider();
    let server = support::api_server().await;
    let admin = server.client();
    let tenant_server = Recorder::start().await;
    const PASSWORD: &str = "payments-db-password-0x5eed";
    foreign_secret(&admin, "payments-db", "password", PASSWORD).await;
    let secret = json!({"name": "payments-db", "key": "password"});
    create(
        &admin,
        &tier(
            "intruder",
            json!({
                "metrics": {"prometheus": {"url": tenant_server.url("/"), "bearerTokenSecretRef": secret}},
                "warming": {"endpoint": tenant_server.url("/warm"), "tokenSecretRef": secret, "clinicIds": [1]},
                "notify": {"webhooks": [{"name": "pd", "format": "PagerDuty",
                    "url": tenant_server.url("/enqueue"), "routingKeySecretRef": secret}]},
            }),
        ),
    )
    .await;
    let run = controller(server.client_as("controller"), support::loopback());

    let (reason, message) = stalled(&admin, "intruder").await;
    assert_eq!(reason, "SecretNotUsable", "{message}");
    assert!(message.contains("Secret clinic/payments-db"), "{message}");
    assert!(message.contains("tierguard.dev/usable=true"), "{message}");
    assert!(!message.contains(PASSWORD));
    wait_for("the Warning Event", Duration::from_secs(10), || async {
        warnings(&server, "intruder")
            .iter()
            .any(|n| n.contains("payments-db") && n.contains("tierguard.dev/usable=true"))
            .then_some(())
    })
    .await;
    // Retries come and go; the password never leaves.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        !any_header_or_body_holds(&tenant_server.requests(), PASSWORD),
        "the password reached the tenant's server"
    );
    // Nor did the controller ever fetch the Secret's data: only its metadata.
    let fetched: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.user.as_deref() == Some("controller") && r.path.contains("/secrets/"))
        .collect();
    assert!(!fetched.is_empty(), "the controller looked at the Secret");
    assert!(
        fetched.iter().all(|r| r.metadata_only),
        "an unmarked Secret's data was fetched: {fetched:?}"
    );

    // Whoever may change the Secret marks it: now the tier may use it.
    Api::<Secret>::namespaced(admin.clone(), NS)
        .patch(
            "payments-db",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"tierguard.dev/usable": "true"}}})),
        )
        .await
        .unwrap();
    wait_for(
        "a Prometheus query with the marked Secret",
        Duration::from_secs(60),
        || async {
            tenant_server
                .requests()
                .iter()
                .any(|r| {
                    r.headers.get("authorization").map(String::as_str)
                        == Some(&format!("Bearer {PASSWORD}"))
                })
                .then_some(())
        },
    )
    .await;
    run.abort();
}

/// The tenant names another application's ConfigMap as its target, and names its tier so that
/// `<tier>-incidents` is another application's ConfigMap too: a forced apply would overwrite
/// their keys and own them (deleting the tier would delete them). Neither is written; the tier
/// stalls saying how the ConfigMap's owner can let it in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_take_over_another_applications_config_maps() {
    tierguard::install_crypto_provider();
    let server = support::api_server().await;
    let admin = server.client();
    let app = Recorder::start().await;
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), NS);
    for name in ["payments-config", "billing-incidents"] {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS},
            "data": {"DB_POOL": "20"},
        }))
        .unwrap();
        configmaps
            .create(&PostParams::default(), &cm)
            .await
            .unwrap();
    }
    let scrape = json!({"metrics": {"scrape": {"url": app.url("/metrics")}}});
    let mut target = scrape.clone();
    target["target"] = json!({"configMapName": "payments-config"});
    create(&admin, &tier("intruder", target)).await;
    // Its own flags, but the incident reports would go into billing's ConfigMap.
    create(&admin, &tier("billing", scrape)).await;
    let before: BTreeMap<String, String> = ["payments-config", "billing-incidents"]
        .into_iter()
        .map(|n| (n.to_owned(), String::new()))
        .collect();
    let versions = async || {
        let mut v = before.clone();
        for (name, version) in v.iter_mut() {
            *version = configmaps
                .get(name)
                .await
                .unwrap()
                .resource_version()
                .unwrap();
        }
        v
    };
    let untouched = versions().await;
    let run = controller(server.client_as("controller"), support::loopback());

    let (reason, message) = stalled(&admin, "intruder").await;
    assert_eq!(reason, "NotOurs", "{message}");
    assert!(
        message.contains("ConfigMap clinic/payments-config"),
        "{message}"
    );
    assert!(
        message.contains("tierguard.dev/adopt=intruder"),
        "{message}"
    );
    let (reason, message) = stalled(&admin, "billing").await;
    assert_eq!(reason, "NotOurs", "{message}");
    assert!(
        message.contains("ConfigMap clinic/billing-incidents"),
        "{message}"
    );
    // The Event follows the status write.
    wait_for("the Warning Event", Duration::from_secs(10), || async {
        warnings(&server, "intruder")
            .iter()
            .any(|n| n.contains("payments-config") && n.contains("tierguard.dev/adopt=intruder"))
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        versions().await,
        untouched,
        "the other applications' ConfigMaps were written"
    );
    for name in ["payments-config", "billing-incidents"] {
        let cm = configmaps.get(name).await.unwrap();
        assert!(cm.owner_references().is_empty(), "{name} got an owner");
        assert_eq!(cm.data.unwrap()["DB_POOL"], "20");
    }
    assert!(
        configmaps.get_opt("billing-flags").await.unwrap().is_none(),
        "a tier that stalls renders nothing"
    );
    // None of their data was even read.
    let reads_of_data: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| {
            r.user.as_deref() == Some("controller")
                && r.method == "GET"
                && (r.path.ends_with("/payments-config") || r.path.ends_with("/billing-incidents"))
                && !r.metadata_only
        })
        .collect();
    assert!(reads_of_data.is_empty(), "{reads_of_data:?}");

    // The owner of payments-config lets the tier adopt it: then it is rendered and owned.
    configmaps
        .patch(
            "payments-config",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({"metadata": {"annotations": {"tierguard.dev/adopt": "intruder"}}}),
            ),
        )
        .await
        .unwrap();
    let adopted = wait_for(
        "the adopted ConfigMap rendered",
        Duration::from_secs(60),
        || async {
            let cm = configmaps.get("payments-config").await.ok()?;
            cm.annotations()
                .contains_key("tierguard.dev/config-hash")
                .then_some(cm)
        },
    )
    .await;
    assert_eq!(adopted.owner_references()[0].name, "intruder");
    run.abort();
}

fn deployment(name: &str, annotations: Value) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "app", "image": "app"}]}}},
    }))
    .unwrap()
}

/// The tenant points `workloadRef` at another application's Deployment with `restartOnChange`:
/// every change of its flags would restart payments. It is not restarted until it opts in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_restart_a_workload_that_did_not_opt_in() {
    tierguard::install_crypto_provider();
    let server = support::api_server().await;
    let admin = server.client();
    let app = Recorder::start().await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), NS);
    deployments
        .create(&PostParams::default(), &deployment("payments", json!({})))
        .await
        .unwrap();
    // Another tier opted this one in: not the intruder.
    deployments
        .create(
            &PostParams::default(),
            &deployment(
                "reports",
                json!({"tierguard.dev/restart-for": "reports-tier"}),
            ),
        )
        .await
        .unwrap();
    let untouched = deployments
        .get("payments")
        .await
        .unwrap()
        .resource_version();
    let restart_of = |name: &str| {
        json!({
            "metrics": {"scrape": {"url": app.url("/metrics")}},
            "target": {"workloadRef": {"kind": "Deployment", "name": name}, "restartOnChange": true},
        })
    };
    create(&admin, &tier("intruder", restart_of("payments"))).await;
    let mut other = tier("intruder-2", restart_of("reports"));
    other.spec.target.config_map_name = "intruder-2-flags".into();
    create(&admin, &other).await;
    let run = controller(server.client_as("controller"), support::loopback());

    for (tier_name, workload) in [("intruder", "payments"), ("intruder-2", "reports")] {
        let (reason, message) = stalled(&admin, tier_name).await;
        assert_eq!(reason, "NotOurs", "{message}");
        assert!(
            message.contains(&format!("Deployment clinic/{workload}")),
            "{message}"
        );
        assert!(
            message.contains(&format!("tierguard.dev/restart-for={tier_name}")),
            "{message}"
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        deployments
            .get("payments")
            .await
            .unwrap()
            .resource_version(),
        untouched
    );
    let patched: Vec<_> = server
        .writes()
        .into_iter()
        .filter(|w| w.user.as_deref() == Some("controller") && w.path.contains("/deployments/"))
        .collect();
    assert!(patched.is_empty(), "a workload was written: {patched:?}");

    // payments opts in to the intruder's restarts: then its pods roll for the tier's config.
    deployments
        .patch(
            "payments",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({"metadata": {"annotations": {"tierguard.dev/restart-for": "intruder"}}}),
            ),
        )
        .await
        .unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), NS);
    wait_for("the first render", Duration::from_secs(60), || async {
        configmaps.get_opt("intruder-flags").await.ok().flatten()
    })
    .await;
    // The first render restarts nothing; a change of the flags does.
    Api::<MemoryTier>::namespaced(admin.clone(), NS)
        .patch(
            "intruder",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"features": {"EXTRA_FLAG": true}}})),
        )
        .await
        .unwrap();
    wait_for("the opted-in restart", Duration::from_secs(30), || async {
        let d = deployments.get("payments").await.ok()?;
        d.spec?
            .template
            .metadata?
            .annotations?
            .contains_key("tierguard.dev/restarted-for-hash")
            .then_some(())
    })
    .await;
    run.abort();
}

/// A server that answers every request with a redirect to `location`.
async fn redirecting(location: String) -> std::net::SocketAddr {
    let app = axum::Router::new().fallback(move || {
        let location = location.clone();
        async move {
            (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, location)],
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The tenant aims the controller at an internal address, directly, through a redirect from a
/// server it is allowed to reach, and at the cloud metadata address; and compares what status
/// says for an open and a closed port. None of it is reached, and the answer is the same
/// whatever listens there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_reach_addresses_outside_the_allow_lists() {
    tierguard::install_crypto_provider();
    let server = support::api_server().await;
    let admin = server.client();
    // An internal service, outside the allow-lists.
    let internal = Recorder::start_on([127, 0, 0, 2].into()).await;
    let open = internal.url("/");
    let closed = format!("http://127.0.0.2:{}/", support::servers::free_port());
    let bounce = redirecting(internal.url("/api/v1/query")).await;
    let mut destinations = Destinations::everywhere(&["127.0.0.1/32"]).unwrap();
    // Webhooks may go anywhere here; the metadata address is refused all the same.
    destinations.webhooks = tierguard::destinations::AllowList::parse(
        tierguard::destinations::Purpose::Webhooks,
        &["0.0.0.0/0"],
    )
    .unwrap();
    let prometheus = |url: &str| json!({"metrics": {"prometheus": {"url": url}}});
    create(&admin, &tier("direct-open", prometheus(&open))).await;
    create(&admin, &tier("direct-closed", prometheus(&closed))).await;
    create(
        &admin,
        &tier("bounced", prometheus(&format!("http://{bounce}/"))),
    )
    .await;
    create(
        &admin,
        &tier(
            "metadata",
            json!({"notify": {"webhooks": [{"name": "imds", "format": "Generic",
                "url": "http://169.254.169.254/latest/meta-data/"}]}}),
        ),
    )
    .await;
    let run = controller(server.client_as("controller"), destinations);

    let (reason, open_message) = stalled(&admin, "direct-open").await;
    assert_eq!(reason, "DestinationRefused", "{open_message}");
    assert!(
        open_message.starts_with(
            "spec.metrics.prometheus.url: 127.0.0.2 is not an allowed metrics destination"
        ),
        "{open_message}"
    );
    assert!(
        open_message.contains("--metrics-destinations"),
        "{open_message}"
    );
    let (_, closed_message) = stalled(&admin, "direct-closed").await;
    assert_eq!(
        open_message, closed_message,
        "status must not tell an open port from a closed one"
    );
    let (reason, message) = stalled(&admin, "metadata").await;
    assert_eq!(reason, "DestinationRefused", "{message}");
    assert!(
        message.contains("169.254.169.254 is a link-local address"),
        "{message}"
    );

    // The redirect is answered, but not followed.
    let bounced = wait_for(
        "the bounced tier's observation",
        Duration::from_secs(20),
        || async {
            let t = tier_now(&admin, "bounced").await;
            let status = t.status?;
            let source = status
                .observed?
                .sources
                .into_iter()
                .find(|s| s.name == "prometheus")?;
            source.reason
        },
    )
    .await;
    assert!(
        bounced.contains("a redirect, which tierguard does not follow"),
        "{bounced}"
    );
    assert!(
        !bounced.contains("127.0.0.2"),
        "where it pointed is not repeated: {bounced}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        internal.requests().is_empty(),
        "the internal service was reached: {:?}",
        internal.requests()
    );
    run.abort();
}

/// A tenant's own "Redis Cluster" lists 3,000 masters, or masters at internal addresses: the
/// controller would connect to each and send the tenant's password there. It contacts none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fake_redis_cluster_cannot_send_the_controller_everywhere() {
    use support::fake_cluster::{Counting, FakeSeed, master_line};
    use tierguard::destinations::{AllowList, Network, Purpose};
    use tierguard::observe::{ObserveConfig, Observer};
    tierguard::install_crypto_provider();
    // Fifty listeners on the allowed address, and 2,950 more masters listed at ports nobody
    // listens on.
    let mut counting = Vec::new();
    for _ in 0..50 {
        counting.push(Counting::start([127, 0, 0, 1].into()).await);
    }
    let mut listing = String::new();
    for (i, node) in counting.iter().enumerate() {
        listing.push_str(&master_line(i, node.addr, &i.to_string()));
    }
    for i in 50..3000 {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", 20000 + i).parse().unwrap();
        listing.push_str(&master_line(i, addr, &i.to_string()));
    }
    let many = FakeSeed::start(listing).await;
    // Three masters, one of them at an internal address.
    let internal = Counting::start([127, 0, 0, 2].into()).await;
    let mut listing = String::new();
    for (i, addr) in [counting[0].addr, counting[1].addr, internal.addr]
        .iter()
        .enumerate()
    {
        listing.push_str(&master_line(
            i,
            *addr,
            &format!("{}-{}", i * 5000, i * 5000 + 4999),
        ));
    }
    let outside = FakeSeed::start(listing).await;

    let network = Network::new(Destinations {
        redis: AllowList::parse(Purpose::Redis, &["127.0.0.1/32"]).unwrap(),
        ..Destinations::any()
    })
    .unwrap();
    for (seed, expected) in [
        (
            &many,
            "CLUSTER NODES lists 3000 masters; tierguard reads at most 128 and contacted none",
        ),
        (&outside, "CLUSTER NODES lists a master at 127.0.0.2"),
    ] {
        let spec = support::tiers::spec(
            Value::Null,
            json!({"urlSecretRef": {"name": "r", "key": "url"}, "cluster": true}),
        );
        let mut secrets = tierguard::observe::secrets::LocalSecrets::new();
        secrets.insert("r", "url", &seed.url());
        let config = ObserveConfig::resolve(&spec, &secrets).await.unwrap();
        let mut observer = Observer::with_network(config, &network).unwrap();
        let observation = observer.observe().await;
        let redis = observation
            .sources
            .iter()
            .find(|s| s.name == "redis")
            .expect("the Redis source");
        let reason = redis.reason.clone().unwrap_or_default();
        assert!(!redis.ok, "{reason}");
        assert!(reason.contains(expected), "{reason}");
        assert!(!reason.contains("tenant-password"), "{reason}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let contacted: usize = counting.iter().map(Counting::accepted).sum();
    assert_eq!(contacted, 0, "listed masters were contacted");
    assert_eq!(internal.accepted(), 0, "the internal address was contacted");
}

/// A tenant's warm endpoint that never answers, on sixteen tiers at once (a spec change each, so
/// each warms): warming runs in the background within the controller's budget, and another
/// tenant's tier goes on being reconciled at its interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_slow_warmings_do_not_hold_up_another_tier() {
    tierguard::install_crypto_provider();
    let server = support::api_server().await;
    let admin = server.client();
    let app = Recorder::start().await;
    let slow = Recorder::start().await;
    // Each warm request takes 2 s: 1,000 clinics one per request, 16 at a time, is two minutes.
    slow.default_reply("/warm", Reply::slow(200, Duration::from_secs(2)));
    let hostile = |name: &str| {
        let mut t = tier(
            name,
            json!({
                "metrics": {"scrape": {"url": app.url("/metrics")}},
                "warming": {"endpoint": slow.url("/warm"), "clinicIds": (1..=1000).collect::<Vec<_>>(),
                            "batchSize": 1, "concurrency": 16, "timeout": "1m", "retries": 10,
                            "triggers": ["Deploy"]},
            }),
        );
        t.spec.target.config_map_name = format!("{name}-flags");
        t
    };
    for i in 0..16 {
        create(&admin, &hostile(&format!("hostile-{i}"))).await;
    }
    create(
        &admin,
        &tier(
            "neighbour",
            json!({"metrics": {"scrape": {"url": app.url("/metrics")}}}),
        ),
    )
    .await;
    let budget = tierguard::controller::work::Budget {
        jobs: 2,
        job_timeout: Duration::from_secs(20),
    };
    let run = controller_with(
        server.client_as("controller"),
        support::loopback(),
        budget,
        16,
    );
    let tiers: Api<MemoryTier> = Api::namespaced(admin.clone(), NS);
    for i in 0..16 {
        let name = format!("hostile-{i}");
        wait_for(
            &format!("{name} reconciled"),
            Duration::from_secs(30),
            || async { tier_now(&admin, &name).await.status?.observed?.at },
        )
        .await;
        // A spec change: a deploy, so the tier warms.
        tiers
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"features": {"EXTRA_FLAG": true}}})),
            )
            .await
            .unwrap();
    }
    wait_for(
        "the slow warm-ups under way",
        Duration::from_secs(20),
        || async { (!slow.requests().is_empty()).then_some(()) },
    )
    .await;
    // While sixteen warm-ups hang, the neighbour is reconciled at its interval (1s).
    let mut ticks = std::collections::BTreeSet::new();
    let watch_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < watch_until {
        if let Some(tick) = tier_now(&admin, "neighbour")
            .await
            .status
            .and_then(|s| s.observed)
            .and_then(|o| o.at)
        {
            ticks.insert(tick);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        ticks.len() >= 4,
        "the neighbour was reconciled {} times in 8 s at a 1 s interval: {ticks:?}",
        ticks.len()
    );
    // The global budget: two jobs at once (no job has reached its 20 s budget yet), each with
    // its 16 requests in flight.
    assert!(
        slow.max_in_flight() <= 2 * 16,
        "{} warm requests in flight",
        slow.max_in_flight()
    );
    // The per-job budget: a hung warm-up is stopped and says so.
    // A job's budget starts when it gets a slot, and the hostile tiers' jobs queue for theirs.
    let stopped = wait_for(
        "a warm-up stopped at its budget",
        Duration::from_secs(90),
        || async {
            let t = tier_now(&admin, "hostile-0").await;
            t.status?.recent_actions.into_iter().find(|a| {
                a.action == tierguard::api::ActionKind::WarmCache
                    && a.outcome == tierguard::api::ActionOutcome::Failed
            })
        },
    )
    .await;
    assert!(
        stopped
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("background budget of 20s"),
        "{stopped:?}"
    );
    run.abort();
}

/// The tenant's own Prometheus answers every query with an error of 100,000 characters, terminal
/// escapes included, hoping to fill the tier's status (and whoever reads it) with its text: what
/// status keeps is a short excerpt, escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_server_cannot_write_long_text_into_status() {
    use tierguard::destinations::Network;
    use tierguard::observe::{ObserveConfig, Observer};
    tierguard::install_crypto_provider();
    let essay = format!("\u{1b}[2J\u{1b}[31mPWNED\r\n{}", "x".repeat(100_000));
    let body = json!({"status": "error", "errorType": "bad_data", "error": essay}).to_string();
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let spec = support::tiers::spec(
        json!({"prometheus": {"url": format!("http://{addr}/")}}),
        Value::Null,
    );
    let config = ObserveConfig::resolve(&spec, &tierguard::observe::secrets::LocalSecrets::new())
        .await
        .unwrap();
    let network = Network::new(support::loopback()).unwrap();
    let observation = Observer::with_network(config, &network)
        .unwrap()
        .observe()
        .await;
    let reason = &observation.unknown["p50LatencyMs"];
    assert!(
        reason.contains("PWNED"),
        "the excerpt quotes the answer: {reason}"
    );
    assert!(
        reason.chars().count() <= 300,
        "{} characters",
        reason.chars().count()
    );
    assert!(
        !reason.chars().any(char::is_control),
        "control characters reach status: {reason:?}"
    );
    for other in observation.unknown.values() {
        assert!(other.chars().count() <= 300 && !other.chars().any(char::is_control));
    }
}
