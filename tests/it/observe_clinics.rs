//! Cache hits and misses per clinic, read by the clinic label from a real exporter: through a real
//! Prometheus (`sum by (clinic_id) (increase(...))`) and by the direct scrape, into one bounded
//! breakdown whatever the source.

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use support::exporter::{AppMetrics, Exporter};
use support::servers::PrometheusServer;
use support::tiers::spec;
use tierguard::api::{ClinicBreakdown, Observation};
use tierguard::observe::prometheus::{InstantValue, PrometheusClient};
use tierguard::observe::secrets::LocalSecrets;
use tierguard::observe::{ObserveConfig, Observer};

/// 60 clinics, every counter at zero.
fn zero() -> AppMetrics {
    let ids: BTreeMap<String, u64> = (1..=60).map(|i| (i.to_string(), 0)).collect();
    AppMetrics {
        requests: [("200".to_owned(), 0)].into(),
        duration_buckets: vec![(0.1, 0), (1.0, 0)],
        cache_hits: ids.clone(),
        cache_misses: ids,
        breakers: [("mem0".to_owned(), 0.0)].into(),
        ..AppMetrics::default()
    }
}

/// Clinic 7 goes cold (20 hits, 380 misses); clinic 1 is the busiest and hits; the other 58
/// clinics see a little traffic each.
fn loaded() -> AppMetrics {
    let mut m = zero();
    for i in 2..=60 {
        m.cache_hits.insert(i.to_string(), 10 + i as u64);
    }
    m.cache_hits.insert("1".into(), 1900);
    m.cache_misses.insert("1".into(), 100);
    m.cache_hits.insert("7".into(), 20);
    m.cache_misses.insert("7".into(), 380);
    m
}

async fn observer(metrics: serde_json::Value) -> Observer {
    let spec = spec(metrics, serde_json::Value::Null);
    let mut full = serde_json::to_value(&spec).unwrap();
    full["stampede"]["clinics"] = json!({"keep": 5});
    let spec: tierguard::api::MemoryTierSpec = serde_json::from_value(full).unwrap();
    let config = ObserveConfig::resolve(&spec, &LocalSecrets::new())
        .await
        .unwrap();
    Observer::new(config).unwrap()
}

fn clinic<'a>(b: &'a ClinicBreakdown, id: &str) -> &'a tierguard::api::ClinicCache {
    b.clinics
        .iter()
        .find(|c| c.clinic == id)
        .unwrap_or_else(|| panic!("clinic {id} not kept: {b:?}"))
}

fn assert_breakdown(obs: &Observation) {
    let b = obs
        .clinics
        .as_ref()
        .unwrap_or_else(|| panic!("no clinics: {:?}", obs.without_clinics));
    assert_eq!(b.label, "clinic_id");
    // Bounded: the five busiest kept, the other 55 counted.
    assert_eq!(b.clinics.len(), 5, "{b:?}");
    assert_eq!(b.omitted, 55, "{b:?}");
    assert!(b.omitted_lookups > 0.0);
    assert_eq!(b.clinics[0].clinic, "1", "busiest first: {b:?}");
    assert_eq!(b.clinics[1].clinic, "7", "{b:?}");
    let cold = clinic(b, "7").hit_rate_percent().unwrap();
    assert!((cold - 5.0).abs() < 0.01, "clinic 7 hits 20 of 400: {cold}");
    let busy = clinic(b, "1").hit_rate_percent().unwrap();
    assert!(
        (busy - 95.0).abs() < 0.01,
        "clinic 1 hits 1900 of 2000: {busy}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_the_clinics_by_their_label() {
    tierguard::install_crypto_provider();
    let exporter = Exporter::start(&zero());
    let _prom = PrometheusServer::start(&[exporter.target()], Duration::from_secs(1));
    let url = _prom.url();
    let client =
        PrometheusClient::new(reqwest::Client::new(), &url, None, Duration::from_secs(5)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(InstantValue::Vector(v)) = client.query("cache_hits_total").await
            && v.len() == 60
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus scraped nothing within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    exporter.set(&loaded());
    let mut obs_er = observer(json!({"prometheus": {"url": url}, "timeout": "5s"})).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let obs = loop {
        let obs = obs_er.observe().await;
        let seen = obs
            .clinics
            .as_ref()
            .is_some_and(|b| b.clinics.iter().any(|c| c.clinic == "7" && c.misses > 0.0));
        if seen {
            break obs;
        }
        assert!(
            Instant::now() < deadline,
            "no per-clinic readings: {:?}",
            obs.without_clinics
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_breakdown(&obs);
    assert!(obs.without_clinics.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_direct_scrape_reads_the_clinics_from_two_scrapes() {
    tierguard::install_crypto_provider();
    let exporter = Exporter::start(&zero());
    let mut obs_er = observer(json!({"scrape": {"url": exporter.url()}, "timeout": "2s"})).await;
    let first = obs_er.observe().await;
    assert!(first.clinics.is_none());
    assert!(
        first
            .without_clinics
            .as_deref()
            .unwrap()
            .contains("need two scrapes"),
        "{:?}",
        first.without_clinics
    );
    exporter.set(&loaded());
    let obs = obs_er.observe().await;
    assert_breakdown(&obs);

    // Metrics without the clinic label: said, never zero.
    let mut unlabelled = AppMetrics {
        cache_hits: BTreeMap::new(),
        cache_misses: BTreeMap::new(),
        ..loaded()
    };
    unlabelled.requests.insert("200".into(), 5000);
    exporter.set_body(&unlabelled.render().replace(
        "# TYPE mem0_writes_total",
        "cache_hits_total 10\ncache_misses_total 1\n# TYPE mem0_writes_total",
    ));
    let obs = obs_er.observe().await;
    assert!(obs.clinics.is_none());
    assert!(
        obs.without_clinics
            .as_deref()
            .unwrap()
            .contains("carry the label clinic_id"),
        "{:?}",
        obs.without_clinics
    );
}
