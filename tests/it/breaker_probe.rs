//! The breaker probe (`spec.breaker.probe`) against a real HTTP stand-in of the mem0 API on
//! loopback: each answer (200, 401/403, 429 with Retry-After, 5xx, no answer) gives its class; the
//! observer probes only while the breaker is open, once per interval and never before a
//! Retry-After; and the controller, end to end, follows the runbook's tree for an auth failure
//! (status, Event, level-2 webhook with the key rotation) without the key ever appearing in
//! status, Events, webhook bodies or logs. A probe URL outside the allow-list stalls the tier.

use crate::support::{self, wait_for};

use std::collections::BTreeMap;
use std::time::Duration;

use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use support::http::{LogCapture, Recorder};
use support::live_app::LiveApp;
use support::mem0::{Mem0Mode, Mem0StandIn};
use tierguard::api::{BreakerState, MemoryTier, Observation, ProbeClass};
use tierguard::destinations::Network;
use tierguard::observe::probe::{ProbeConfig, Prober};
use tierguard::observe::secrets::LocalSecrets;
use tierguard::observe::{ObserveConfig, Observer};
use tierguard::secret::SecretString;

const NS: &str = "clinic";
/// The mem0 API key: it must never appear in any output.
const KEY: &str = "m0-sk-live-9f8e7d6c5b4a39281706";

fn network() -> Network {
    tierguard::install_crypto_provider();
    Network::new(support::loopback()).expect("the network builds")
}

fn prober(mem0: &Mem0StandIn, key: &str, timeout: Duration) -> Prober {
    let spec: tierguard::api::BreakerProbeSpec = serde_json::from_value(json!({
        "healthUrl": mem0.health_url(),
        "authUrl": mem0.auth_url(),
        "apiKeySecretRef": {"name": "mem0", "key": "apiKey"},
        "timeout": format!("{}ms", timeout.as_millis()),
    }))
    .unwrap();
    let config = ProbeConfig::new(&spec, Some(SecretString::from(key.to_owned())));
    Prober::new(network().probe.clone(), config).expect("the key fits a header")
}

/// The tests of this module probe one after the other: the auth-failure test reads the probe's
/// log line through a thread-local subscriber, and tracing caches whether a log line is wanted
/// when it is first reached, which another test's thread, without a subscriber, may do first.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn each_answer_of_the_dependency_gives_its_class() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let mem0 = Mem0StandIn::start(KEY).await;
    let probe = prober(&mem0, KEY, Duration::from_millis(400));
    let cases = [
        (
            Mem0Mode::Up,
            ProbeClass::Healthy,
            "authenticated call HTTP 200",
        ),
        (
            Mem0Mode::KeyRefused(401),
            ProbeClass::AuthFailure,
            "authenticated call answered HTTP 401",
        ),
        (
            Mem0Mode::KeyRefused(403),
            ProbeClass::AuthFailure,
            "answered HTTP 403",
        ),
        (
            Mem0Mode::RateLimited(30),
            ProbeClass::RateLimited,
            "HTTP 429 (Retry-After 30s)",
        ),
        (
            Mem0Mode::Down(503),
            ProbeClass::Down,
            "health answered HTTP 503",
        ),
        (
            Mem0Mode::Hang(Duration::from_secs(5)),
            ProbeClass::Down,
            "no answer within",
        ),
    ];
    for (mode, class, says) in cases {
        mem0.set(mode);
        let reading = probe.probe().await;
        assert_eq!(reading.class, class, "{mode:?}: {reading:?}");
        assert!(reading.detail.contains(says), "{mode:?}: {reading:?}");
        assert!(!reading.detail.contains(KEY), "{reading:?}");
        assert!(
            !reading.detail.contains("upstream exploded"),
            "no remote text: {reading:?}"
        );
        if class == ProbeClass::RateLimited {
            assert_eq!(reading.retry_after_seconds, Some(30));
        } else {
            assert_eq!(reading.retry_after_seconds, None);
        }
    }
    // A timed-out probe gives up at its timeout, not at the peer's pace.
    let hung = probe.probe().await;
    assert!(
        hung.latency_ms.unwrap() < 3000,
        "the 400ms timeout bounds the probe: {hung:?}"
    );
    // A wrong key is refused by a healthy mem0: an auth failure.
    mem0.set(Mem0Mode::Up);
    let wrong = prober(&mem0, "m0-sk-rotated-away", Duration::from_millis(400));
    assert_eq!(wrong.probe().await.class, ProbeClass::AuthFailure);
    // The key travels in the Authorization header only.
    let sent: Vec<_> = mem0
        .requests()
        .into_iter()
        .filter_map(|r| r.authorization)
        .collect();
    assert!(
        sent.iter().any(|a| a == &format!("Bearer {KEY}")),
        "{sent:?}"
    );
    assert!(
        mem0.requests().iter().all(|r| !r.path.contains(KEY)),
        "never in a URL"
    );
}

/// An observer reading a tier whose probe points at the stand-in.
async fn observer(mem0: &Mem0StandIn, interval: &str) -> Observer {
    let tier = support::tiers::tier(
        "backend",
        NS,
        json!({"breaker": {"probe": {
            "healthUrl": mem0.health_url(),
            "authUrl": mem0.auth_url(),
            "apiKeySecretRef": {"name": "mem0", "key": "apiKey"},
            "interval": interval,
            "timeout": "500ms",
        }}}),
    );
    let mut secrets = LocalSecrets::new();
    secrets.insert("mem0", "apiKey", KEY);
    let config = ObserveConfig::resolve(&tier.spec, &secrets)
        .await
        .expect("the config resolves");
    Observer::with_network(config, &network()).expect("the observer builds")
}

fn reading_with(breaker: Option<BreakerState>) -> Observation {
    Observation {
        breaker_state: breaker,
        ..Observation::default()
    }
}

#[tokio::test]
async fn the_observer_probes_while_open_once_per_interval_and_never_before_retry_after() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let mem0 = Mem0StandIn::start(KEY).await;
    let mut observer = observer(&mem0, "1s").await;

    // Closed or unknown: no probe.
    for state in [Some(BreakerState::Closed), None] {
        let mut obs = reading_with(state);
        observer.probe_if_due(&mut obs, None).await;
        assert!(obs.breaker_probe.is_none());
    }
    assert!(mem0.probes().is_empty());

    // Open: a probe, then none within the interval.
    let mut obs = reading_with(Some(BreakerState::Open));
    observer.probe_if_due(&mut obs, None).await;
    assert_eq!(obs.breaker_probe.unwrap().class, ProbeClass::Healthy);
    let mut obs = reading_with(Some(BreakerState::HalfOpen));
    observer.probe_if_due(&mut obs, None).await;
    assert!(obs.breaker_probe.is_none(), "once per interval");
    assert_eq!(mem0.probes().len(), 1);

    // After the interval: another, which finds the rate limit with its Retry-After.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    mem0.set(Mem0Mode::RateLimited(3));
    let mut obs = reading_with(Some(BreakerState::Open));
    observer.probe_if_due(&mut obs, None).await;
    let limited = obs.breaker_probe.unwrap();
    assert_eq!(limited.class, ProbeClass::RateLimited);
    assert_eq!(limited.retry_after_seconds, Some(3));

    // Past the interval but before the Retry-After: nothing is sent.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut obs = reading_with(Some(BreakerState::Open));
    observer.probe_if_due(&mut obs, None).await;
    assert!(obs.breaker_probe.is_none(), "the Retry-After is honoured");
    assert_eq!(mem0.probes().len(), 2);
    let gap = mem0.probes()[1].at.elapsed();
    assert!(gap < Duration::from_secs(3), "{gap:?}");

    // After it: the next probe.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    mem0.set(Mem0Mode::KeyRefused(401));
    let mut obs = reading_with(Some(BreakerState::Open));
    observer.probe_if_due(&mut obs, None).await;
    assert_eq!(obs.breaker_probe.unwrap().class, ProbeClass::AuthFailure);
    assert_eq!(mem0.probes().len(), 3);

    // A fresh observer (a new leader) honours the memory the last one left in status.
    let mut fresh = observer_for_memory(&mem0).await;
    let remembered = tierguard::api::BreakerDiagnosis {
        class: ProbeClass::AuthFailure,
        detail: "authenticated call answered HTTP 401".into(),
        since: jiff::Timestamp::now(),
        last_probe_at: jiff::Timestamp::now(),
        not_before: None,
    };
    let mut obs = reading_with(Some(BreakerState::Open));
    fresh.probe_if_due(&mut obs, Some(&remembered)).await;
    assert!(obs.breaker_probe.is_none(), "the stored last probe counts");
    assert_eq!(mem0.probes().len(), 3);
}

async fn observer_for_memory(mem0: &Mem0StandIn) -> Observer {
    observer(mem0, "1m").await
}

// ---- the controller, end to end ---------------------------------------------------------------

fn controller(client: Client, destinations: tierguard::destinations::Destinations) {
    tokio::spawn(async move {
        tierguard::controller::run(
            client,
            tierguard::controller::RunConfig {
                namespaces: vec![NS.into()],
                selector: None,
                metrics_addr: None,
                lease: None,
                instance: None,
                concurrency: tierguard::controller::DEFAULT_CONCURRENCY,
                destinations,
                background: Default::default(),
                shutdown_timeout: tierguard::controller::DEFAULT_SHUTDOWN_TIMEOUT,
                status_refresh: crate::support::EVERY_TICK,
            },
        )
        .await
        .expect("the controller runs");
    });
}

async fn create_secret(client: &Client, name: &str, key: &str, value: &str) {
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
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

fn probed_tier(app: &LiveApp, mem0: &Mem0StandIn, hooks: &Recorder) -> MemoryTier {
    support::tiers::tier(
        "backend",
        NS,
        json!({
            "metrics": {"scrape": {"url": app.url()}, "interval": "300ms", "timeout": "250ms"},
            "canary": {"rampInterval": "2s"},
            "breaker": {"maxOpenDuration": "1h", "probe": {
                "healthUrl": mem0.health_url(),
                "authUrl": mem0.auth_url(),
                "apiKeySecretRef": {"name": "mem0", "key": "apiKey"},
                "interval": "1s",
                "timeout": "500ms",
            }},
            "rollback": {"breakerOpenFor": "2h", "mem0WriteSuccessFor": "1h"},
            "notify": {
                "webhooks": [{"name": "oncall", "format": "Generic", "url": hooks.url("/hook")}],
                "escalation": [{"level": 1, "after": "0s"}, {"level": 2, "after": "10m"}, {"level": 3, "after": "20m"}],
            },
        }),
    )
}

async fn tier_now(client: &Client) -> MemoryTier {
    Api::<MemoryTier>::namespaced(client.clone(), NS)
        .get("backend")
        .await
        .expect("the tier exists")
}

/// The key refused: diagnosed AuthFailure, level 2 paged at once (not after 10m) with the
/// rotation; status, the Event and the webhook say so; the key is nowhere.
#[tokio::test]
async fn an_auth_failure_is_diagnosed_and_pages_level_two_without_ever_showing_the_key() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let logs = LogCapture::start();
    tierguard::install_crypto_provider();
    let server = support::api_server().await;
    let client = server.client();
    let app = LiveApp::start(Duration::from_millis(100));
    let mem0 = Mem0StandIn::start(KEY).await;
    mem0.set(Mem0Mode::KeyRefused(401));
    let hooks = Recorder::start().await;
    create_secret(&client, "mem0", "apiKey", KEY).await;
    Api::<MemoryTier>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &probed_tier(&app, &mem0, &hooks))
        .await
        .unwrap();
    controller(client.clone(), support::loopback());
    wait_for("the tier reconciled", Duration::from_secs(20), || async {
        tier_now(&client).await.status?.observed
    })
    .await;
    assert!(
        mem0.probes().is_empty(),
        "no probe while the breaker is closed"
    );

    // mem0 calls fail: the breaker opens.
    app.update(|p| {
        p.breaker = 1.0;
        p.mem0_success_percent = 0.0;
    });
    let status = wait_for(
        "the diagnosis in status",
        Duration::from_secs(30),
        || async {
            let s = tier_now(&client).await.status?;
            let incident = s.incidents.iter().find(|i| i.escalation_level >= 2)?;
            incident.diagnosis.as_ref()?;
            Some(s)
        },
    )
    .await;
    let probe = status
        .observed
        .as_ref()
        .and_then(|o| o.breaker_probe.clone());
    if let Some(p) = probe {
        assert_eq!(p.class, ProbeClass::AuthFailure);
    }
    let incident = &status.incidents[0];
    let diagnosis = incident.diagnosis.as_deref().unwrap();
    assert!(diagnosis.starts_with("AuthFailure: "), "{diagnosis}");
    assert!(diagnosis.contains("MEM0_API_KEY"), "{diagnosis}");
    let breaker = status
        .conditions
        .iter()
        .find(|c| c.type_ == "BreakerOpen")
        .unwrap();
    assert!(
        breaker.message.contains("diagnosis AuthFailure"),
        "{breaker:?}"
    );

    // Level 2 is paged at once, with the runbook's instruction.
    let bodies = wait_for("the level-2 page", Duration::from_secs(20), || async {
        let bodies: Vec<Value> = hooks
            .requests_to("/hook")
            .into_iter()
            .map(|r| r.body)
            .collect();
        bodies.iter().any(|b| b["level"] == 2).then_some(bodies)
    })
    .await;
    let page = bodies.iter().find(|b| b["level"] == 2).unwrap().to_string();
    assert!(
        page.contains("fly secrets set MEM0_API_KEY=<new_key>"),
        "{page}"
    );
    assert!(page.contains("AuthFailure"), "{page}");

    // The Event.
    let events = server.list_json(&kube_testserver::Gvr::of::<
        k8s_openapi::api::events::v1::Event,
    >());
    let diagnosed = events
        .iter()
        .find(|e| e["reason"] == "BreakerDiagnosed")
        .unwrap_or_else(|| panic!("no BreakerDiagnosed Event: {events:#?}"));
    assert_eq!(diagnosed["type"], "Warning");
    assert!(
        diagnosed["note"].as_str().unwrap().contains("AuthFailure"),
        "{diagnosed}"
    );

    // At most one probe per interval (1s), whatever the reconcile rate (300ms).
    let probes = mem0.probes();
    for pair in probes.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= Duration::from_millis(950), "probes {gap:?} apart");
    }

    // The key is nowhere: not in status, Events, webhook bodies or logs.
    let status_json = serde_json::to_string(&tier_now(&client).await.status).unwrap();
    let events_json = serde_json::to_string(&events).unwrap();
    let hooks_json = serde_json::to_string(&bodies).unwrap();
    for (what, text) in [
        ("status", status_json),
        ("Events", events_json),
        ("webhook bodies", hooks_json),
        ("logs", logs.text()),
    ] {
        assert!(!text.contains(KEY), "the API key appears in the {what}");
    }
    assert!(
        logs.text().contains("breaker probe"),
        "the probe is logged (without its key)"
    );
}

/// A probe URL outside the controller's allow-list for probes is refused before any request:
/// the tier stalls with DestinationRefused naming the field, and the stand-in sees nothing.
#[tokio::test]
async fn a_probe_url_outside_the_allow_list_stalls_the_tier() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    tierguard::install_crypto_provider();
    let server = support::api_server().await;
    let client = server.client();
    let app = LiveApp::start(Duration::from_millis(100));
    app.update(|p| p.breaker = 1.0);
    let mem0 = Mem0StandIn::start(KEY).await;
    let hooks = Recorder::start().await;
    create_secret(&client, "mem0", "apiKey", KEY).await;
    Api::<MemoryTier>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &probed_tier(&app, &mem0, &hooks))
        .await
        .unwrap();
    let mut destinations = support::loopback();
    destinations.set(
        tierguard::destinations::AllowList::parse(
            tierguard::destinations::Purpose::Probe,
            &["10.0.0.0/8"],
        )
        .unwrap(),
    );
    controller(client.clone(), destinations);
    let stalled = wait_for("Stalled", Duration::from_secs(20), || async {
        let s = tier_now(&client).await.status?;
        s.conditions
            .into_iter()
            .find(|c| c.type_ == "Stalled" && c.status == "True")
    })
    .await;
    assert_eq!(stalled.reason, "DestinationRefused");
    assert!(
        stalled.message.contains("spec.breaker.probe.healthUrl"),
        "{stalled:?}"
    );
    assert!(
        stalled.message.contains("--probe-destinations"),
        "{stalled:?}"
    );
    assert!(
        mem0.requests().is_empty(),
        "nothing reached the refused host"
    );
}

async fn flags(client: &Client) -> Option<BTreeMap<String, String>> {
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), NS)
        .get_opt("backend-flags")
        .await
        .ok()
        .flatten()
        .and_then(|cm| cm.data)
}

/// mem0 answers 429: the canary goes to the reduced rate at once, stays there while writes fail,
/// and ramps back once they succeed again; a healthy mem0 found later is notified with the
/// runbook's step-4 advice, and nothing is restarted.
#[tokio::test]
async fn a_rate_limit_sheds_the_canary_until_writes_succeed_and_a_healthy_mem0_gets_the_advice() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    tierguard::install_crypto_provider();
    let server = support::api_server().await;
    let client = server.client();
    let app = LiveApp::start(Duration::from_millis(100));
    let mem0 = Mem0StandIn::start(KEY).await;
    mem0.set(Mem0Mode::RateLimited(1));
    let hooks = Recorder::start().await;
    create_secret(&client, "mem0", "apiKey", KEY).await;
    Api::<MemoryTier>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &probed_tier(&app, &mem0, &hooks))
        .await
        .unwrap();
    controller(client.clone(), support::loopback());
    let baseline = wait_for("the first render", Duration::from_secs(20), || {
        flags(&client)
    })
    .await;
    assert_eq!(baseline["CANARY_SAMPLE_RATE"], "0.1");

    app.update(|p| {
        p.breaker = 1.0;
        p.mem0_success_percent = 80.0;
    });
    wait_for("the canary at 0.05", Duration::from_secs(20), || async {
        flags(&client)
            .await
            .filter(|f| f["CANARY_SAMPLE_RATE"] == "0.05")
    })
    .await;
    let status = tier_now(&client).await.status.unwrap();
    let shed = status
        .mitigations
        .iter()
        .find(|m| m.name == tierguard::api::MitigationName::BreakerRateLimitShed)
        .expect("the mitigation is listed");
    assert!(shed.until.contains("mem0 write success"), "{shed:?}");

    // mem0 recovers and the probe finds it healthy while the breaker is still open.
    mem0.set(Mem0Mode::Up);
    let advice = wait_for(
        "the Healthy diagnosis notified",
        Duration::from_secs(20),
        || async {
            hooks
                .requests_to("/hook")
                .into_iter()
                .find(|r| r.body["kind"] == "diagnosed")
                .map(|r| r.body)
        },
    )
    .await;
    let text = advice.to_string();
    assert!(text.contains("Healthy"), "{text}");
    assert!(text.contains("application's side"), "{text}");
    assert_eq!(
        flags(&client).await.unwrap()["CANARY_SAMPLE_RATE"],
        "0.05",
        "writes still fail: the canary stays down"
    );

    // Writes succeed and the breaker closes: the canary ramps back to its baseline.
    app.update(|p| {
        p.breaker = 0.0;
        p.mem0_success_percent = 100.0;
    });
    wait_for(
        "the canary back at 0.1",
        Duration::from_secs(30),
        || async {
            flags(&client)
                .await
                .filter(|f| f["CANARY_SAMPLE_RATE"] == "0.1")
        },
    )
    .await;
    let events = server.list_json(&kube_testserver::Gvr::of::<
        k8s_openapi::api::events::v1::Event,
    >());
    assert!(
        !events
            .iter()
            .any(|e| e["reason"] == "WorkloadRestart" || e["reason"] == "WorkloadRestarted"),
        "nothing is restarted"
    );
    let found: Vec<&str> = events
        .iter()
        .filter(|e| e["reason"] == "BreakerDiagnosed")
        .filter_map(|e| e["note"].as_str())
        .collect();
    assert!(found.iter().any(|n| n.contains("RateLimited")), "{found:?}");
    assert!(found.iter().any(|n| n.contains("Healthy")), "{found:?}");
}
