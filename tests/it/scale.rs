//! The controller with a fleet, in miniature, against the in-process API server and real HTTP
//! exporters: a healthy fleet writes nothing to the API server between status refreshes (while
//! it keeps being reconciled), a change that matters is written at once, the refresh comes at
//! its period; under full load a new tier and a tier with an incident go before healthy ones.
//! The figures at 1,000 to 10,000 tiers are `cargo bench --bench scale`'s.

use crate::support::exporter::{AppMetrics, Exporter, Mode};
use crate::support::{self, wait_for};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, PostParams};
use kube_testserver::{ApiServer, Gvr};
use serde_json::json;
use tierguard::api::{MemoryTier, Phase};
use tierguard::controller::RunConfig;

const NS: &str = "fleet";

/// An application's metrics after `step` ticks of healthy traffic: every counter grows, so every
/// rate is known.
fn healthy(step: u64, breaker: f64) -> AppMetrics {
    let n = 1000 + step * 100;
    AppMetrics {
        requests: [("200".to_owned(), n)].into(),
        duration_buckets: vec![(0.05, n * 9 / 10), (0.1, n)],
        duration_sum: n as f64 * 0.04,
        cache_hits: [("1".to_owned(), n * 99 / 100)].into(),
        cache_misses: [("1".to_owned(), n / 100)].into(),
        mem0_success: n / 10,
        mem0_failure: 0,
        breakers: [("mem0".to_owned(), breaker)].into(),
    }
}

/// Traffic on an exporter: its counters grow every 100 ms until dropped.
struct Traffic {
    stop: Arc<AtomicBool>,
    breaker: Arc<std::sync::Mutex<f64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(exporter: Arc<Exporter>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let breaker = Arc::new(std::sync::Mutex::new(0.0));
        let thread = {
            let (stop, breaker) = (stop.clone(), breaker.clone());
            std::thread::spawn(move || {
                let mut step = 0;
                while !stop.load(Ordering::SeqCst) {
                    exporter.set(&healthy(step, *breaker.lock().unwrap()));
                    step += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Traffic {
            stop,
            breaker,
            thread: Some(thread),
        }
    }

    fn open_breaker(&self) {
        *self.breaker.lock().unwrap() = 1.0;
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A tier scraping `scrape_url` every `interval`, with a timeout of 80 % of it.
fn tier(name: &str, scrape_url: &str, interval: &str) -> MemoryTier {
    let every: tierguard::api::Duration = interval.parse().expect("an interval");
    let timeout = format!("{}ms", every.as_std().as_millis() * 4 / 5);
    support::tiers::tier(
        name,
        NS,
        json!({
            "metrics": {"scrape": {"url": scrape_url}, "interval": interval, "timeout": timeout},
        }),
    )
}

async fn create(client: &Client, tier: &MemoryTier) {
    Api::<MemoryTier>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), tier)
        .await
        .expect("create the tier");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn controller(
    client: Client,
    concurrency: u16,
    status_refresh: Duration,
    metrics_port: u16,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tierguard::controller::run_until(
            client,
            RunConfig {
                namespaces: vec![NS.into()],
                selector: None,
                metrics_addr: Some(([127, 0, 0, 1], metrics_port).into()),
                lease: None,
                instance: None,
                concurrency,
                destinations: support::loopback(),
                background: Default::default(),
                shutdown_timeout: tierguard::controller::DEFAULT_SHUTDOWN_TIMEOUT,
                status_refresh,
            },
            tierguard::shutdown::Stop::new(),
        )
        .await
        .expect("the controller runs");
    })
}

/// `tierguard_reconciles_total` from the controller's /metrics.
async fn reconciles(metrics_port: u16) -> f64 {
    let text = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .expect("/metrics answers")
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("tierguard_reconciles_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("tierguard_reconciles_total is exported")
}

fn statuses(server: &ApiServer) -> Vec<tierguard::api::MemoryTierStatus> {
    server
        .list_json(&Gvr::of::<MemoryTier>())
        .into_iter()
        .filter_map(|t| serde_json::from_value(t["status"].clone()).ok())
        .collect()
}

/// Wait until every one of `tiers` runs Healthy with its latency known.
async fn wait_healthy(server: &ApiServer, tiers: usize) {
    wait_for(
        "every tier Healthy with its signals known",
        Duration::from_secs(60),
        || async {
            let s = statuses(server);
            (s.len() == tiers
                && s.iter().all(|s| {
                    s.phase == Some(Phase::Healthy)
                        && s.observed.as_ref().and_then(|o| o.p50_latency_ms).is_some()
                }))
            .then_some(())
        },
    )
    .await;
}

/// Wait until the API server has seen no write for `quiet` (the first reconciles render the
/// ConfigMaps and write the first readings).
async fn wait_writes_settle(server: &ApiServer, quiet: Duration) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = server.write_counts();
    let mut since = Instant::now();
    while since.elapsed() < quiet {
        assert!(
            Instant::now() < deadline,
            "the writes never settled: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = server.write_counts();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}

/// Steady-state API writes per tier-hour allowed: the readings' refresh every 5 minutes (12 an
/// hour), nothing else.
const WRITES_PER_TIER_HOUR: f64 = 12.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_fleet_writes_nothing_but_a_change_that_matters_at_once() {
    let server = support::api_server().await;
    let client = server.client();
    let exporter = Arc::new(Exporter::start(&healthy(0, 0.0)));
    let traffic = Traffic::start(exporter.clone());
    const TIERS: usize = 20;
    for i in 0..TIERS {
        create(
            &client,
            &tier(&format!("quiet-{i:02}"), &exporter.url(), "1s"),
        )
        .await;
    }
    let port = free_port();
    let run = controller(
        client.clone(),
        tierguard::controller::DEFAULT_CONCURRENCY,
        tierguard::controller::DEFAULT_STATUS_REFRESH,
        port,
    );
    wait_healthy(&server, TIERS).await;
    wait_writes_settle(&server, Duration::from_secs(2)).await;

    // Steady state: reconciled every second, and nothing written.
    let window = Duration::from_secs(10);
    server.clear_requests();
    let (writes0, reconciles0) = (server.write_counts(), reconciles(port).await);
    tokio::time::sleep(window).await;
    let (writes1, reconciles1) = (server.write_counts(), reconciles(port).await);
    let done = reconciles1 - reconciles0;
    let expected = TIERS as f64 * window.as_secs_f64();
    assert!(
        done >= expected * 0.4,
        "{done} reconciles in {window:?}, expected about {expected}"
    );
    let writes = writes1.total - writes0.total;
    let per_tier_hour = writes as f64 * 3600.0 / (TIERS as f64 * window.as_secs_f64());
    println!(
        "steady state: {done} reconciles, {writes} writes ({} status, {} Events): {per_tier_hour:.1} writes per tier-hour",
        writes1.status - writes0.status,
        writes1.events - writes0.events
    );
    let written: Vec<String> = server
        .writes()
        .iter()
        .map(|w| format!("{} {}", w.method, w.path))
        .collect();
    assert!(
        per_tier_hour <= WRITES_PER_TIER_HOUR,
        "{writes} writes in {window:?} over {TIERS} tiers: {per_tier_hour:.1} per tier-hour, more than {WRITES_PER_TIER_HOUR}: {written:?}"
    );

    // A change that matters (the breaker opens) is in status within a few ticks.
    let opened = Instant::now();
    traffic.open_breaker();
    wait_for(
        "every tier's status to say the breaker is open",
        Duration::from_secs(10),
        || async {
            let s = statuses(&server);
            s.iter()
                .all(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "BreakerOpen" && c.status == "True")
                })
                .then_some(())
        },
    )
    .await;
    println!(
        "the breaker's opening was in status after {:?}",
        opened.elapsed()
    );
    assert!(server.write_counts().status > writes1.status);
    run.abort();
    drop(traffic);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readings_in_status_are_refreshed_at_their_period() {
    let server = support::api_server().await;
    let client = server.client();
    let exporter = Arc::new(Exporter::start(&healthy(0, 0.0)));
    let _traffic = Traffic::start(exporter.clone());
    const TIERS: usize = 6;
    for i in 0..TIERS {
        create(
            &client,
            &tier(&format!("fresh-{i}"), &exporter.url(), "500ms"),
        )
        .await;
    }
    let port = free_port();
    let refresh = Duration::from_secs(2);
    let run = controller(
        client.clone(),
        tierguard::controller::DEFAULT_CONCURRENCY,
        refresh,
        port,
    );
    wait_healthy(&server, TIERS).await;
    let window = Duration::from_secs(10);
    let writes0 = server.write_counts();
    let at0: Vec<_> = statuses(&server)
        .iter()
        .map(|s| s.observed.as_ref().and_then(|o| o.at))
        .collect();
    tokio::time::sleep(window).await;
    let writes = server.write_counts().status - writes0.status;
    let per_tier = writes as f64 / TIERS as f64;
    // One refresh every 2 s (the first tick at or past the period): about 5 in 10 s, not 20.
    assert!(
        (3.0..=6.5).contains(&per_tier),
        "{writes} status writes over {TIERS} tiers in {window:?}: {per_tier:.1} each, expected about 5"
    );
    let at1: Vec<_> = statuses(&server)
        .iter()
        .map(|s| s.observed.as_ref().and_then(|o| o.at))
        .collect();
    assert!(at0.iter().zip(&at1).all(|(a, b)| b > a), "{at0:?} {at1:?}");
    run.abort();
}

/// Seconds until `name`'s ConfigMap exists.
async fn rendered_within(client: &Client, name: &str, timeout: Duration) -> Duration {
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let started = Instant::now();
    wait_for(&format!("{name} rendered"), timeout, || async {
        configmaps
            .get_opt(&format!("{name}-flags"))
            .await
            .ok()
            .flatten()
            .map(|_| ())
    })
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_full_load_a_new_tier_and_an_incident_go_before_healthy_ticks() {
    let server = support::api_server().await;
    let client = server.client();
    // Thirty healthy tiers due every second, each reconcile waiting 150 ms for its scrape, one at
    // a time: about six reconciles a second for thirty due.
    let slow = Arc::new(Exporter::start(&healthy(0, 0.0)));
    let _traffic = Traffic::start(slow.clone());
    slow.set_mode(Mode::Slow(Duration::from_millis(150)));
    const TIERS: usize = 30;
    for i in 0..TIERS {
        create(&client, &tier(&format!("busy-{i:02}"), &slow.url(), "1s")).await;
    }
    // One tier whose breaker is open: an incident from its first reconcile on.
    let burning_app = Arc::new(Exporter::start(&healthy(0, 1.0)));
    let burning_traffic = Traffic::start(burning_app.clone());
    burning_traffic.open_breaker();
    create(&client, &tier("burning", &burning_app.url(), "1s")).await;
    let run = controller(
        client.clone(),
        1,
        tierguard::controller::DEFAULT_STATUS_REFRESH,
        free_port(),
    );
    for i in 0..TIERS {
        rendered_within(&client, &format!("busy-{i:02}"), Duration::from_secs(30)).await;
    }
    wait_for(
        "the burning tier in an incident",
        Duration::from_secs(10),
        || async {
            let t = Api::<MemoryTier>::namespaced(client.clone(), NS)
                .get("burning")
                .await
                .ok()?;
            (t.status?.phase != Some(Phase::Healthy)).then_some(())
        },
    )
    .await;
    // Under full load now: a new tier is rendered within its interval.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let newcomer_app = Exporter::start(&healthy(0, 0.0));
    create(&client, &tier("newcomer", &newcomer_app.url(), "1s")).await;
    let waited = rendered_within(&client, "newcomer", Duration::from_secs(20)).await;
    println!("the new tier was rendered {waited:?} after it was created");
    assert!(
        waited < Duration::from_secs(1),
        "the new tier waited {waited:?} behind healthy ticks"
    );
    // The tier with an incident keeps its interval while the healthy ones wait.
    let (served0, healthy0) = (burning_app.served(), slow.served());
    let window = Duration::from_secs(6);
    tokio::time::sleep(window).await;
    let burning = burning_app.served() - served0;
    let healthy_per_tier = (slow.served() - healthy0) as f64 / TIERS as f64;
    println!(
        "in {window:?}: the incident's tier was read {burning} times, each healthy tier {healthy_per_tier:.1} times"
    );
    assert!(
        burning >= 5,
        "the tier with an incident was read {burning} times in {window:?} (interval 1s)"
    );
    assert!(
        healthy_per_tier < 3.0,
        "the load was not full ({healthy_per_tier:.1} reads per healthy tier): the test proves nothing"
    );
    run.abort();
}

/// Two tiers' series on one page, told apart by `tier`: `a` with its breaker open, `b` closed,
/// counters growing with `step`; `a` caches for clinics 1 (with misses) and 2, `b` for 3.
fn two_tiers_page(step: u64) -> String {
    let n = 1000 + step * 20;
    let mut out = String::new();
    out.push_str("# TYPE http_requests_total counter\n");
    for t in ["a", "b"] {
        out.push_str(&format!(
            "http_requests_total{{tier=\"{t}\",status=\"200\"}} {n}\n"
        ));
    }
    // b fails one request in ten.
    out.push_str(&format!(
        "http_requests_total{{tier=\"b\",status=\"503\"}} {}\n",
        n / 9
    ));
    out.push_str("# TYPE http_request_duration_seconds histogram\n");
    for (t, fast) in [("a", n), ("b", n / 4)] {
        out.push_str(&format!(
            "http_request_duration_seconds_bucket{{tier=\"{t}\",le=\"0.05\"}} {fast}\nhttp_request_duration_seconds_bucket{{tier=\"{t}\",le=\"0.5\"}} {n}\nhttp_request_duration_seconds_bucket{{tier=\"{t}\",le=\"+Inf\"}} {n}\nhttp_request_duration_seconds_sum{{tier=\"{t}\"}} 1\nhttp_request_duration_seconds_count{{tier=\"{t}\"}} {n}\n"
        ));
    }
    out.push_str("# TYPE cache_hits_total counter\n");
    for (t, clinic, hits) in [("a", 1, n * 9 / 10), ("a", 2, n / 2), ("b", 3, n)] {
        out.push_str(&format!(
            "cache_hits_total{{tier=\"{t}\",clinic_id=\"{clinic}\"}} {hits}\n"
        ));
    }
    out.push_str("# TYPE cache_misses_total counter\n");
    out.push_str(&format!(
        "cache_misses_total{{tier=\"a\",clinic_id=\"1\"}} {}\n",
        n / 10
    ));
    out.push_str("# TYPE circuit_breaker_state gauge\n");
    for (t, state) in [("a", 1), ("b", 0)] {
        out.push_str(&format!(
            "circuit_breaker_state{{tier=\"{t}\",breaker=\"mem0\"}} {state}\n"
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_reading_one_prometheus_share_one_query_per_signal_split_back_per_tier() {
    use tierguard::api::BreakerState;
    use tierguard::observe::fleet::Fleet;
    use tierguard::observe::secrets::LocalSecrets;
    use tierguard::observe::{ObserveConfig, Observer};
    tierguard::install_crypto_provider();

    let exporter = Arc::new(Exporter::start(&AppMetrics::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (exporter, stop) = (exporter.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut step = 0;
            while !stop.load(Ordering::SeqCst) {
                exporter.set_body(&two_tiers_page(step));
                step += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let mut prometheus =
        support::servers::PrometheusServer::start(&[exporter.target()], Duration::from_millis(250));
    // Both tiers' series scraped a few times (rates need two samples).
    let count_url = format!(
        "{}/api/v1/query?query=count(circuit_breaker_state)",
        prometheus.url()
    );
    wait_for(
        "Prometheus to hold both tiers' series",
        Duration::from_secs(30),
        || async {
            let body = reqwest::get(&count_url).await.ok()?.text().await.ok()?;
            body.contains("\"2\"").then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let network = tierguard::destinations::Network::new(support::loopback()).unwrap();
    let fleet = Fleet::default();
    let spec = |selector: &str, extra: serde_json::Value| {
        let mut metrics = json!({"prometheus": {"url": prometheus.url()}, "selector": selector, "rateWindow": "2s", "interval": "1s", "timeout": "800ms"});
        json_patch::merge(&mut metrics, &extra);
        support::tiers::tier("t", NS, json!({"metrics": metrics})).spec
    };
    let specs = [
        ("a", spec(r#"tier="a""#, json!({}))),
        ("b", spec(r#"tier="b""#, json!({}))),
        // No series: unknown, with a reason, while the others are read.
        ("ghost", spec(r#"tier="ghost""#, json!({}))),
        // An exotic selector and an override read their own queries.
        ("regex", spec(r#"tier=~"b""#, json!({}))),
        (
            "override",
            spec(
                r#"tier="a""#,
                json!({"queries": {"breakerState": "max(circuit_breaker_state{tier=\"b\"})"}}),
            ),
        ),
    ];
    let mut observers = Vec::new();
    for (name, spec) in &specs {
        let config = ObserveConfig::resolve(spec, &LocalSecrets::default())
            .await
            .unwrap();
        let mut observer = Observer::with_network(config, &network).unwrap();
        let member = fleet.join(NS, spec, observer.config(), observer.http());
        observer.set_fleet(member);
        observers.push((*name, observer));
    }
    let grouped: Vec<&str> = observers
        .iter()
        .filter(|(_, o)| o.in_fleet())
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(grouped, ["a", "b", "ghost"]);
    assert_eq!(fleet.groups(), 1);

    let metrics_url = format!("{}/metrics", prometheus.url());
    let requests = || async {
        let text = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| {
                l.starts_with("prometheus_http_requests_total")
                    && l.contains("handler=\"/api/v1/query\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = requests().await;
    let mut seen = std::collections::BTreeMap::new();
    for (name, observer) in observers.iter_mut().take(3) {
        seen.insert(*name, observer.observe().await);
    }
    let grouped_requests = requests().await - before;
    let per_tier = tierguard::observe::queries::QuerySet::from_spec(&specs[0].1)
        .iter()
        .count();
    // One round for the group: one query per signal, not one per tier and signal, and the
    // group's two per-clinic cache queries (hits and misses by member and clinic).
    assert_eq!(
        grouped_requests as usize,
        per_tier + 2,
        "{grouped_requests}"
    );

    let a = &seen["a"];
    let b = &seen["b"];
    assert_eq!(a.breaker_state, Some(BreakerState::Open), "{a:?}");
    assert_eq!(b.breaker_state, Some(BreakerState::Closed), "{b:?}");
    assert!(a.error_rate_percent.is_some_and(|e| e < 0.01), "{a:?}");
    assert!(b.error_rate_percent.is_some_and(|e| e > 5.0), "{b:?}");
    assert!(a.p50_latency_ms.is_some_and(|p| p < 50.0), "{a:?}");
    assert!(b.p50_latency_ms.is_some_and(|p| p > 50.0), "{b:?}");
    let ghost = &seen["ghost"];
    assert_eq!(ghost.breaker_state, None);
    let reason = &ghost.unknown["breakerState"];
    assert!(
        reason.contains("no data") && reason.contains("ghost"),
        "{reason}"
    );
    assert!(ghost.sources.iter().all(|s| s.ok), "{:?}", ghost.sources);
    // Each member's clinics, and only its own, from the group's per-clinic answers.
    let clinics_of = |o: &tierguard::api::Observation| -> Vec<(String, f64, f64)> {
        let breakdown = o.clinics.as_ref().unwrap_or_else(|| panic!("{o:?}"));
        assert_eq!(breakdown.label, "clinic_id");
        let mut all: Vec<_> = breakdown
            .clinics
            .iter()
            .map(|c| (c.clinic.clone(), c.hits, c.misses))
            .collect();
        all.sort_by(|x, y| x.0.cmp(&y.0));
        all
    };
    let of_a = clinics_of(a);
    assert_eq!(
        of_a.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        ["1", "2"],
        "{of_a:?}"
    );
    let (one, two) = (&of_a[0], &of_a[1]);
    assert!(one.1 > one.2 && one.2 > 0.0, "clinic 1: {one:?}");
    assert!(
        two.1 > 0.0 && two.2 == 0.0,
        "clinic 2 has no misses series: {two:?}"
    );
    let of_b = clinics_of(b);
    assert_eq!(of_b.len(), 1, "{of_b:?}");
    assert!(of_b[0].0 == "3" && of_b[0].1 > 0.0, "{of_b:?}");
    let why = ghost.without_clinics.as_deref().unwrap_or_default();
    assert!(
        ghost.clinics.is_none() && why.contains("clinic_id"),
        "{:?} {why}",
        ghost.clinics
    );

    // The others read their own queries, as before.
    for (name, observer) in observers.iter_mut().skip(3) {
        seen.insert(*name, observer.observe().await);
    }
    assert_eq!(seen["regex"].breaker_state, Some(BreakerState::Closed));
    let own = clinics_of(&seen["regex"]);
    assert!(own.len() == 1 && own[0].0 == "3", "{own:?}");
    assert_eq!(seen["override"].breaker_state, Some(BreakerState::Closed));

    // Prometheus down: every member's signals unknown, Prometheus unhealthy, for each tier.
    prometheus.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (_, observer) in observers.iter_mut().take(3) {
        let o = observer.observe().await;
        assert_eq!(o.breaker_state, None);
        let source = o.sources.iter().find(|s| s.name == "prometheus").unwrap();
        assert!(!source.ok, "{source:?}");
    }
    stop.store(true, Ordering::SeqCst);
    feeder.join().unwrap();
}

/// A page of `tiers` breakers told apart by `tier`: `t<i>` open when `i` is odd.
fn breakers_page(tiers: usize) -> String {
    let mut out = String::from("# TYPE circuit_breaker_state gauge\n");
    for i in 0..tiers {
        out.push_str(&format!(
            "circuit_breaker_state{{tier=\"t{i}\",breaker=\"mem0\"}} {}\n",
            i % 2
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_that_joins_its_group_while_a_round_is_in_flight_is_read_at_once() {
    use tierguard::api::BreakerState;
    use tierguard::observe::fleet::Fleet;
    use tierguard::observe::secrets::LocalSecrets;
    use tierguard::observe::{ObserveConfig, Observer};
    tierguard::install_crypto_provider();

    const TIERS: usize = 150;
    let exporter = Exporter::start(&AppMetrics::default());
    exporter.set_body(&breakers_page(TIERS));
    let prometheus =
        support::servers::PrometheusServer::start(&[exporter.target()], Duration::from_millis(250));
    let count_url = format!(
        "{}/api/v1/query?query=count(circuit_breaker_state)",
        prometheus.url()
    );
    wait_for(
        "Prometheus to hold every tier's breaker",
        Duration::from_secs(30),
        || async {
            let body = reqwest::get(&count_url).await.ok()?.text().await.ok()?;
            body.contains(&format!("\"{TIERS}\"")).then_some(())
        },
    )
    .await;
    let network = tierguard::destinations::Network::new(support::loopback()).unwrap();
    let fleet = Fleet::default();
    // Tiers join one after another, as in a first pass, each reading at once: many join while
    // the round for the ones before them is in flight. Answers are fresh for 5 s, so only a
    // round sent for latecomers can cover them.
    let mut reads = Vec::new();
    for i in 0..TIERS {
        let metrics = json!({"prometheus": {"url": prometheus.url()}, "selector": format!("tier=\"t{i}\""), "interval": "10s", "timeout": "8s"});
        let spec = support::tiers::tier("t", NS, json!({"metrics": metrics})).spec;
        let config = ObserveConfig::resolve(&spec, &LocalSecrets::default())
            .await
            .unwrap();
        let mut observer = Observer::with_network(config, &network).unwrap();
        observer.set_fleet(fleet.join(NS, &spec, observer.config(), observer.http()));
        assert!(observer.in_fleet());
        reads.push(tokio::spawn(async move {
            let observation = observer.observe().await;
            (i, observation, observer)
        }));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(fleet.groups(), 1);
    let mut unread = Vec::new();
    let mut _observers = Vec::new();
    for read in reads {
        let (i, observation, observer) = read.await.unwrap();
        let expected = if i % 2 == 1 {
            BreakerState::Open
        } else {
            BreakerState::Closed
        };
        if observation.breaker_state != Some(expected) {
            unread.push(format!(
                "t{i}: {:?} ({:?})",
                observation.breaker_state,
                observation.unknown.get("breakerState")
            ));
        }
        // Every member stays in the group until all have read.
        _observers.push(observer);
    }
    assert!(
        unread.is_empty(),
        "{} of {TIERS} tiers not read by their first observation: {}",
        unread.len(),
        unread
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ")
    );
}

/// A group of hundreds of members selects its label by presence (`tier!=""`) rather than naming
/// every member in one regex; the members' series are kept from the answer, the others' (here a
/// tier that is no member) left out, and a member without a series is unknown as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_group_selects_its_label_by_presence_and_keeps_its_members_series() {
    use tierguard::api::BreakerState;
    use tierguard::observe::fleet::Fleet;
    use tierguard::observe::secrets::LocalSecrets;
    use tierguard::observe::{ObserveConfig, Observer};
    tierguard::install_crypto_provider();

    // 300 members: t0..t298 have a series, t299 has none; t300..t319 are not members.
    const SERIES: usize = 320;
    const MEMBERS: usize = 300;
    let exporter = Exporter::start(&AppMetrics::default());
    exporter.set_body(&breakers_page(SERIES - 1).replace("tier=\"t299\"", "tier=\"t319\""));
    let prometheus =
        support::servers::PrometheusServer::start(&[exporter.target()], Duration::from_millis(250));
    let count_url = format!(
        "{}/api/v1/query?query=count(circuit_breaker_state)",
        prometheus.url()
    );
    wait_for(
        "Prometheus to hold every series",
        Duration::from_secs(30),
        || async {
            let body = reqwest::get(&count_url).await.ok()?.text().await.ok()?;
            body.contains(&format!("\"{}\"", SERIES - 1)).then_some(())
        },
    )
    .await;
    let network = tierguard::destinations::Network::new(support::loopback()).unwrap();
    let fleet = Fleet::default();
    let mut observers = Vec::new();
    for i in 0..MEMBERS {
        let metrics = json!({"prometheus": {"url": prometheus.url()}, "selector": format!("tier=\"t{i}\""), "interval": "20s", "timeout": "8s"});
        let spec = support::tiers::tier("t", NS, json!({"metrics": metrics})).spec;
        let config = ObserveConfig::resolve(&spec, &LocalSecrets::default())
            .await
            .unwrap();
        let mut observer = Observer::with_network(config, &network).unwrap();
        observer.set_fleet(fleet.join(NS, &spec, observer.config(), observer.http()));
        observers.push(observer);
    }
    assert_eq!(fleet.groups(), 1);
    // Every member has joined: one round reads them all.
    let reads = observers.into_iter().enumerate().map(|(i, mut observer)| {
        tokio::spawn(async move { (i, observer.observe().await, observer) })
    });
    let mut wrong = Vec::new();
    let mut kept = Vec::new();
    for read in reads.collect::<Vec<_>>() {
        let (i, observation, observer) = read.await.unwrap();
        kept.push(observer);
        let expected = match i {
            299 => None,
            odd if odd % 2 == 1 => Some(BreakerState::Open),
            _ => Some(BreakerState::Closed),
        };
        if observation.breaker_state != expected {
            wrong.push(format!(
                "t{i}: {:?} ({:?})",
                observation.breaker_state,
                observation.unknown.get("breakerState")
            ));
        }
        if i == 299 {
            let reason = observation
                .unknown
                .get("breakerState")
                .cloned()
                .unwrap_or_default();
            assert!(reason.contains("t299"), "{reason}");
            assert!(
                reason.contains("tier!=\"\""),
                "the group named its members: {reason}"
            );
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );

    // A newcomer to a group this wide gets no round of its own: its first observation has its
    // signals not read yet (Prometheus healthy), and the next round that falls due (answers are
    // fresh for half the 20 s interval) reads it.
    let metrics = json!({"prometheus": {"url": prometheus.url()}, "selector": "tier=\"t300\"", "interval": "20s", "timeout": "8s"});
    let spec = support::tiers::tier("t", NS, json!({"metrics": metrics})).spec;
    let config = ObserveConfig::resolve(&spec, &LocalSecrets::default())
        .await
        .unwrap();
    let mut newcomer = Observer::with_network(config, &network).unwrap();
    newcomer.set_fleet(fleet.join(NS, &spec, newcomer.config(), newcomer.http()));
    assert_eq!(fleet.groups(), 1, "the newcomer is in the members' group");
    let first = newcomer.observe().await;
    let reason = first
        .unknown
        .get("breakerState")
        .cloned()
        .unwrap_or_default();
    assert!(
        first.breaker_state.is_none() && reason.contains("not read yet"),
        "{:?}: {reason}",
        first.breaker_state
    );
    assert!(first.sources.iter().all(|s| s.ok), "{:?}", first.sources);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let next = newcomer.observe().await;
    assert_eq!(
        next.breaker_state,
        Some(BreakerState::Closed),
        "{:?}",
        next.unknown.get("breakerState")
    );
    drop(kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_on_disjoint_shards_each_reconcile_their_own_under_their_own_lease() {
    use tierguard::controller::LeaseConfig;
    let server = support::api_server().await;
    let admin = server.client();
    let exporter = Arc::new(Exporter::start(&healthy(0, 0.0)));
    let _traffic = Traffic::start(exporter.clone());
    const SHARD_LABEL: &str = "tierguard.dev/shard";
    for shard in ["a", "b"] {
        for i in 0..3 {
            let mut t = tier(&format!("{shard}-{i}"), &exporter.url(), "500ms");
            t.metadata.labels = Some([(SHARD_LABEL.to_owned(), shard.to_owned())].into());
            create(&admin, &t).await;
        }
    }
    let replica = |shard: &str| {
        let identity = format!("shard-{shard}-0");
        let config = RunConfig {
            namespaces: vec![NS.into()],
            selector: Some(format!("{SHARD_LABEL}={shard}")),
            metrics_addr: None,
            lease: Some(LeaseConfig {
                name: format!("tierguard-shard-{shard}"),
                namespace: NS.into(),
                identity: identity.clone(),
                duration: Duration::from_secs(3),
                grace: Duration::from_secs(1),
            }),
            instance: Some(identity.clone()),
            concurrency: tierguard::controller::DEFAULT_CONCURRENCY,
            destinations: support::loopback(),
            background: Default::default(),
            shutdown_timeout: tierguard::controller::DEFAULT_SHUTDOWN_TIMEOUT,
            status_refresh: tierguard::controller::DEFAULT_STATUS_REFRESH,
        };
        let client = server.client_as(&identity);
        tokio::spawn(async move {
            tierguard::controller::run_until(client, config, tierguard::shutdown::Stop::new())
                .await
                .expect("the controller runs");
        })
    };
    let (a, b) = (replica("a"), replica("b"));
    for shard in ["a", "b"] {
        for i in 0..3 {
            rendered_within(&admin, &format!("{shard}-{i}"), Duration::from_secs(30)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Each shard's tiers, ConfigMaps and Events were written by that shard's controller only.
    let mut checked = 0;
    for write in server.writes() {
        if write.path.contains("/leases") {
            continue;
        }
        let object = write
            .path
            .rsplit('/')
            .find(|p| (p.starts_with("a-") || p.starts_with("b-")) && p.len() >= 3);
        let Some(object) = object else { continue };
        let user = write.user.clone().unwrap_or_default();
        assert_eq!(
            user,
            format!("shard-{}-0", &object[..1]),
            "{} {} written by {user}",
            write.method,
            write.path
        );
        checked += 1;
    }
    assert!(
        checked >= 6,
        "only {checked} writes of the shards' objects seen"
    );
    // Each shard holds its own lease.
    for shard in ["a", "b"] {
        let lease = server
            .get_json(
                &Gvr::of::<k8s_openapi::api::coordination::v1::Lease>(),
                NS,
                &format!("tierguard-shard-{shard}"),
            )
            .expect("the shard's lease");
        assert_eq!(lease["spec"]["holderIdentity"], format!("shard-{shard}-0"));
    }
    a.abort();
    b.abort();
}
