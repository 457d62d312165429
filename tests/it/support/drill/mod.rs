#![allow(dead_code)]
//! The incident-drill harness: everything a runbook incident needs, for real, on loopback.
//!
//! A [`Drill`] starts a `redis-server`, a `prometheus` scraping the demo clinic backend every
//! [`SCRAPE_INTERVAL`], the in-process Kubernetes API server with the drill's MemoryTier and its
//! Secrets, the real controller (`tierguard run`, a separate process, through a kubeconfig), a
//! [`kubelet::Kubelet`] that mounts the rendered ConfigMap into the directory the demo reads its
//! flags from, the demo itself (`clinic-backend serve`) and, when asked, its load generator.
//! A [`record::Recorder`] keeps the tier's status history and the demo's flags and breaker.
//!
//! The drill then breaks something through the demo's fault switches (or Redis itself), waits
//! for what the runbook says must happen, and prints a timeline: test actions, Events, ConfigMap
//! versions, status phases and what the demo applied, with times relative to the fault.
//!
//! Durations in the tier are seconds where production has minutes. Prometheus' rate windows are
//! scaled the same way: `spec.metrics.rateWindow` is [`RATE_WINDOW`] instead of 5m.

pub mod controller;
mod fidelity;
pub mod kubelet;
pub mod load;
pub mod record;
mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::{Value, json};
use tierguard::api::{MemoryTier, MemoryTierStatus, Phase};

use crate::support::clinic_backend::{self as clinic_process, ClinicBackendProcess};
use crate::support::servers::{
    PostgresServer, PrometheusServer, RedisExporter, RedisServer, free_port,
};
use controller::ControllerProcess;
use kube_testserver::{ApiServer, Gvr};
use kubelet::{ConfigVersion, Kubelet};
use load::{Load, LoadShape, LoadTotals};
use record::{Recorded, Recorder, StatusSample};
use report::summarize;

pub const NAMESPACE: &str = "clinic";
pub const TIER: &str = "clinic-backend";
pub const FLAGS_CONFIG_MAP: &str = "clinic-backend-flags";
pub const INCIDENTS_CONFIG_MAP: &str = "clinic-backend-incidents";
pub const ADMIN_TOKEN: &str = "drill-admin-token";
/// The mem0 API key in the Secret `clinic-mem0` (key `apiKey`), for the breaker probe.
pub const MEM0_API_KEY: &str = "m0-drill-key-5c1d9e7a02b4f6";
/// The runbook's top clinics, which the drills' load makes hot and the controller warms.
pub const HOT_CLINICS: [u32; 5] = [1, 2, 3, 5, 8];
pub const SCRAPE_INTERVAL: Duration = Duration::from_millis(500);
/// The window of every rate in the drills' queries: 5m in production, 5s here.
pub const RATE_WINDOW: &str = "5s";

/// Only one drill runs at a time: they are timed, and the machine has two cores.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The last panic message of a drill's thread, repeated after the logs a failed drill prints
/// (a log's tail is often all that is kept of a failed run).
static FAILED_ON: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn remember_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let message = info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| {
                    info.payload()
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                })
                .unwrap_or_default();
            *FAILED_ON.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{message}{at}"));
            previous(info);
        }));
    });
}

/// A Tokio runtime for one drill.
pub fn runtime() -> tokio::runtime::Runtime {
    remember_panics();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime")
}

/// How a drill is set up.
pub struct Setup {
    pub name: &'static str,
    /// Extra `redis-server` arguments, e.g. a low `--maxmemory`.
    pub redis_args: Vec<&'static str>,
    /// Merged over [`base_spec`].
    pub tier: Value,
    /// Extra `clinic-backend serve` arguments.
    pub serve_args: Vec<&'static str>,
    /// Controller replicas: 1 runs one without leader election; more compete for the Lease
    /// [`LEASE_NAME`] with a [`LEASE_DURATION`] lease.
    pub replicas: usize,
}

/// Where the controller reads the demo's signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppSource {
    /// The drill's Prometheus, scraping the demo's /metrics.
    Prometheus,
    /// The demo's events table in a real PostgreSQL (`clinic-backend serve --events-postgres`),
    /// read with the runbooks' queries (`spec.metrics.postgres`).
    Postgres,
}

/// The password of the read-only role the controller reads the events table as.
pub const EVENTS_READER_PASSWORD: &str = "drill-events-reader";

/// The Lease replicas compete for, in [`NAMESPACE`].
pub const LEASE_NAME: &str = "tierguard-leader";
/// How long a lease holds without renewal when several replicas run (15 s in production).
pub const LEASE_DURATION: &str = "3s";

/// One controller replica: its process (when running) and the logs of every run it had.
pub struct Replica {
    pub identity: String,
    pub process: Option<ControllerProcess>,
    pub logs: Vec<std::path::PathBuf>,
    pub starts: u32,
    /// The highest VmHWM (KiB) of any of its runs.
    pub peak_rss_kib: u64,
}

/// The drills' MemoryTier spec: the runbooks' rules with minutes scaled to seconds.
pub fn base_spec(demo_url: &str, prometheus_url: &str) -> Value {
    let selector = "job=\"app\"";
    json!({
        "target": {"configMapName": FLAGS_CONFIG_MAP},
        "canary": {"sampleRate": 0.2, "reducedRate": 0.05, "rampStep": 0.05, "rampInterval": "3s"},
        "breaker": {"resetAfter": "2s", "maxOpenDuration": "8s"},
        "redis": {
            "urlSecretRef": {"name": "clinic-redis", "key": "url"},
            "memoryLevels": {"warningFor": "3s", "criticalFor": "1s"},
            "remediation": {
                "nonCriticalPatterns": ["session:*"],
                "generationPattern": "cache:*:generation:{generation}",
                "currentGeneration": {"redisKey": "cache:current_generation"},
                "cooldown": "60s",
                "maxDuration": "10s",
            },
        },
        "metrics": {
            "prometheus": {"url": prometheus_url},
            "selector": selector,
            "rateWindow": RATE_WINDOW,
            "interval": "1s",
            "timeout": "800ms",
            // Where the replay of the drill finds Redis (the controller reads Redis itself).
            "redisExporter": {"selector": "job=\"redis\""},
        },
        // The mem0-write criterion stays long: the breaker drill isolates the breaker runbook.
        // The minimum sample scales with the drills' traffic (tens of requests a second, 5s
        // windows) as the windows do with time.
        "rollback": {"p50LatencyFor": "6s", "errorRateFor": "6s", "mem0WriteSuccessFor": "10m", "phaseHold": "4s", "minRequests": 10},
        "stampede": {"for": "3s"},
        "warming": {
            "endpoint": format!("{demo_url}/admin/cache/warm"),
            "tokenSecretRef": {"name": "clinic-admin", "key": "token"},
            "clinicIds": HOT_CLINICS,
            "timeout": "5s",
            "retries": 2,
        },
        "notify": {
            "escalation": [
                {"level": 1, "after": "0s"}, {"level": 2, "after": "30s"}, {"level": 3, "after": "60s"},
            ],
            "escalate": {"nearActionLead": "2s"},
        },
    })
}

/// A timing the drill measured, printed in its summary.
struct Measure {
    label: String,
    seconds: f64,
    detail: String,
}

pub struct Drill {
    pub name: &'static str,
    started: Instant,
    started_at: Timestamp,
    /// When the first fault was injected: the origin of the timeline.
    fault_at: Option<Timestamp>,
    pub api: ApiServer,
    pub redis: RedisServer,
    prometheus: PrometheusServer,
    _redis_exporter: RedisExporter,
    /// Where the demo writes its events, when the tier reads them from PostgreSQL.
    events_db: Option<PostgresServer>,
    source: AppSource,
    /// The MemoryTier as the drill created it: what its replay runs.
    tier: MemoryTier,
    pub demo: ClinicBackendProcess,
    replicas: Vec<Replica>,
    kubeconfig: std::path::PathBuf,
    kubelet: Kubelet,
    recorder: Recorder,
    load: Option<Load>,
    load_totals: LoadTotals,
    marks: Vec<(Timestamp, String)>,
    measures: Vec<Measure>,
    /// Documents shown after the timings (an incident report).
    attachments: Vec<(String, String)>,
    /// Why the replay from Prometheus cannot take the live decisions, when it cannot.
    no_replay: Option<&'static str>,
    http: reqwest::Client,
    passed: bool,
    _dir: tempfile::TempDir,
}

impl Drill {
    /// Start everything and wait until the demo runs on the controller's first render.
    pub async fn start(setup: Setup) -> Drill {
        Self::start_on(setup, AppSource::Prometheus).await
    }

    /// The same, with the tier reading the demo's signals from `source`.
    pub async fn start_on(setup: Setup, source: AppSource) -> Drill {
        tierguard::install_crypto_provider();
        let started = Instant::now();
        let started_at = Timestamp::now();
        let dir = tempfile::tempdir().expect("temp dir");
        let api = crate::support::api_server().await;
        let client = api.client();
        // Memory usage is a share of maxmemory: every drill's Redis has one.
        let mut redis_args = setup.redis_args.clone();
        if !redis_args.contains(&"--maxmemory") {
            redis_args.extend(["--maxmemory", "64mb"]);
        }
        let redis = RedisServer::start_with(&redis_args);

        // The demo's port is chosen first: Prometheus and the tier's warm endpoint need it.
        let demo_addr = format!("127.0.0.1:{}", free_port());
        let demo_url = format!("http://{demo_addr}");
        // Prometheus records the demo and, through redis_exporter, Redis: the whole drill, for
        // its replay at the end.
        let redis_exporter = RedisExporter::start(&redis.url());
        let prometheus = PrometheusServer::start_jobs(
            &[
                ("app", std::slice::from_ref(&demo_addr)),
                ("redis", &[redis_exporter.target()]),
            ],
            SCRAPE_INTERVAL,
        );

        for (name, key, value) in [
            ("clinic-redis", "url", redis.url()),
            ("clinic-admin", "token", ADMIN_TOKEN.to_owned()),
            ("clinic-mem0", "apiKey", MEM0_API_KEY.to_owned()),
        ] {
            create_secret(&client, name, key, &value).await;
        }
        let mut spec = base_spec(&demo_url, &prometheus.url());
        let events_db = match source {
            AppSource::Prometheus => None,
            AppSource::Postgres => {
                let pg = PostgresServer::start();
                pg.exec(crate::observe_postgres::TABLE_SQL).await;
                pg.exec(&format!(
                    "CREATE ROLE reader LOGIN PASSWORD '{EVENTS_READER_PASSWORD}';
                     GRANT SELECT ON observability_events TO reader;"
                ))
                .await;
                let url = pg.url_for("reader", EVENTS_READER_PASSWORD, "postgres");
                create_secret(&client, "clinic-events-db", "url", &url).await;
                // The same windows as the PromQL rates: 5s where production has 5m.
                json_patch::merge(
                    &mut spec,
                    &json!({"metrics": {"prometheus": null, "postgres": {
                        "urlSecretRef": {"name": "clinic-events-db", "key": "url"},
                        "window": RATE_WINDOW,
                    }}}),
                );
                Some(pg)
            }
        };
        json_patch::merge(&mut spec, &setup.tier);
        let tier: MemoryTier = serde_json::from_value(json!({
            "apiVersion": "tierguard.dev/v1alpha1",
            "kind": "MemoryTier",
            "metadata": {"name": TIER, "namespace": NAMESPACE},
            "spec": spec,
        }))
        .unwrap_or_else(|e| panic!("the drill's MemoryTier does not parse: {e}"));
        if let Err(problems) = tierguard::api::validate::validate_tier(&tier) {
            let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
            panic!("the drill's MemoryTier is invalid: {}", problems.join("; "));
        }
        Api::<MemoryTier>::namespaced(client.clone(), NAMESPACE)
            .create(&PostParams::default(), &tier)
            .await
            .expect("create the MemoryTier");
        let created = tier;

        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig_as(&kubeconfig, CONTROLLER_USER)
            .expect("write the kubeconfig");
        // Replicas restarted later run this copy: a build meanwhile does not change them.
        let binary = dir.path().join("tierguard");
        std::fs::copy(env!("CARGO_BIN_EXE_tierguard"), &binary).expect("copy the tierguard binary");
        let mut replicas: Vec<Replica> = (0..setup.replicas.max(1))
            .map(|i| Replica {
                identity: if setup.replicas > 1 {
                    format!("tierguard-{i}")
                } else {
                    "tierguard-drill".to_owned()
                },
                process: None,
                logs: Vec::new(),
                starts: 0,
                peak_rss_kib: 0,
            })
            .collect();
        for i in 0..replicas.len() {
            start_replica(&mut replicas, i, &binary, &kubeconfig, dir.path(), false);
        }
        for replica in &mut replicas {
            if let Some(p) = replica.process.as_mut() {
                p.wait_ready(Duration::from_secs(30));
            }
        }
        let controller_log = || {
            replicas[0]
                .process
                .as_ref()
                .map(|p| p.log())
                .unwrap_or_default()
        };

        // The pod starts once its ConfigMap volume can be mounted.
        let volume = dir.path().join("flags");
        let kubelet = Kubelet::start(client.clone(), NAMESPACE, FLAGS_CONFIG_MAP, &volume);
        let deadline = Instant::now() + Duration::from_secs(30);
        while kubelet.history().is_empty() {
            assert!(
                Instant::now() < deadline,
                "the controller did not render ConfigMap {FLAGS_CONFIG_MAP} within 30s \
                 (kubelet: {:?}); controller log:\n{}",
                kubelet.last_error(),
                tail(&controller_log(), 40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let mut serve: Vec<String> = [
            "--redis-url",
            &redis.url(),
            "--flags",
            &volume.to_string_lossy(),
            "--admin-token",
            ADMIN_TOKEN,
            "--flags-poll",
            "100ms",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(pg) = &events_db {
            serve.extend(["--events-postgres".to_owned(), pg.url()]);
        }
        serve.extend(setup.serve_args.iter().map(|s| s.to_string()));
        let serve: Vec<&str> = serve.iter().map(String::as_str).collect();
        let demo = ClinicBackendProcess::spawn_on(&demo_addr, &serve);
        let recorder = Recorder::start(client.clone(), NAMESPACE, TIER, demo.url());

        Drill {
            name: setup.name,
            started,
            started_at,
            fault_at: None,
            api,
            redis,
            prometheus,
            _redis_exporter: redis_exporter,
            events_db,
            source,
            tier: created,
            demo,
            replicas,
            kubeconfig,
            kubelet,
            recorder,
            load: None,
            load_totals: LoadTotals::default(),
            marks: Vec::new(),
            measures: Vec::new(),
            attachments: Vec::new(),
            no_replay: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
            passed: false,
            _dir: dir,
        }
    }

    // ---- controller replicas -------------------------------------------------------------

    pub fn replica_count(&self) -> usize {
        self.replicas.len()
    }

    pub fn replica(&self, i: usize) -> &Replica {
        &self.replicas[i]
    }

    /// The identity holding the Lease, if any (several replicas only).
    pub fn lease_holder(&self) -> Option<String> {
        self.api
            .get_json(
                &Gvr::of::<k8s_openapi::api::coordination::v1::Lease>(),
                NAMESPACE,
                LEASE_NAME,
            )
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
    }

    /// SIGKILL replica `i` (its last run's peak RSS is kept).
    pub fn kill_replica(&mut self, i: usize) {
        let replica = &mut self.replicas[i];
        if let Some(mut p) = replica.process.take() {
            p.kill();
            replica.peak_rss_kib = replica.peak_rss_kib.max(p.sample_rss());
        }
    }

    /// SIGTERM replica `i`; how long it took to exit (None: it did not within `grace`).
    pub fn terminate_replica(&mut self, i: usize, grace: Duration) -> Option<Duration> {
        let replica = &mut self.replicas[i];
        let mut p = replica.process.take()?;
        let took = p.terminate(grace);
        replica.peak_rss_kib = replica.peak_rss_kib.max(p.sample_rss());
        took
    }

    /// Start replica `i` again (a new process and log), without waiting for it.
    pub fn restart_replica(&mut self, i: usize) {
        let dir = self._dir.path().to_owned();
        let binary = dir.join("tierguard");
        start_replica(&mut self.replicas, i, &binary, &self.kubeconfig, &dir, true);
    }

    pub fn replica_running(&mut self, i: usize) -> bool {
        self.replicas[i]
            .process
            .as_mut()
            .is_some_and(|p| p.is_running())
    }

    /// Read every running replica's peak RSS; the highest of all runs so far (KiB).
    pub fn sample_rss(&mut self) -> u64 {
        for replica in &mut self.replicas {
            if let Some(p) = replica.process.as_mut() {
                replica.peak_rss_kib = replica.peak_rss_kib.max(p.sample_rss());
            }
        }
        self.replicas
            .iter()
            .map(|r| r.peak_rss_kib)
            .max()
            .unwrap_or(0)
    }

    /// The log of replica `i`'s current (or last) run.
    pub fn replica_log(&self, i: usize) -> String {
        self.replicas[i]
            .logs
            .last()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Every log of every run of every replica: (file name, text).
    pub fn all_controller_logs(&self) -> Vec<(String, String)> {
        self.replicas
            .iter()
            .flat_map(|r| r.logs.iter())
            .map(|p| {
                (
                    p.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                    std::fs::read_to_string(p).unwrap_or_default(),
                )
            })
            .collect()
    }

    /// The PostgreSQL the demo writes its events to (a drill on [`AppSource::Postgres`]).
    pub fn events_db(&self) -> Option<&PostgresServer> {
        self.events_db.as_ref()
    }

    /// The Prometheus server the tier reads.
    pub fn prometheus(&mut self) -> &mut PrometheusServer {
        &mut self.prometheus
    }

    // ---- traffic, faults and notes -------------------------------------------------------

    pub fn start_load(&mut self, shape: LoadShape) {
        self.mark(format!(
            "load on: {} req/s over clinics {}, hot {}",
            shape.rps, shape.clinics, shape.hot
        ));
        self.load = Some(Load::start(
            clinic_process::binary(),
            self.demo.url(),
            shape,
        ));
    }

    pub fn stop_load(&mut self) {
        if let Some(load) = self.load.take() {
            let totals = load.stop();
            self.mark(format!("load off ({totals})"));
            self.load_totals = totals;
        }
    }

    /// Note a test action in the timeline; returns its time.
    pub fn mark(&mut self, what: impl Into<String>) -> Timestamp {
        let at = Timestamp::now();
        self.marks.push((at, what.into()));
        at
    }

    /// Set the demo's fault switches (`POST /admin/faults`); the first fault is the timeline's
    /// origin. Returns the demo's answer.
    pub async fn fault(&mut self, label: &str, body: Value) -> (Timestamp, Value) {
        let at = self.mark(format!("fault: {label}"));
        self.fault_at.get_or_insert(at);
        let answer = self.admin_post("/admin/faults", body).await;
        (at, answer)
    }

    /// Mark an action as the timeline's origin (when it is not a fault switch, e.g. a restart).
    pub fn origin(&mut self, label: &str) -> Timestamp {
        let at = self.mark(label);
        self.fault_at.get_or_insert(at);
        at
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.demo.url());
        let response = self
            .http
            .post(&url)
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "POST {path} {body} answered {status}: {answer}"
        );
        answer
    }

    /// Record a measured timing for the summary.
    pub fn measure(&mut self, label: &str, seconds: f64, detail: impl Into<String>) {
        self.measures.push(Measure {
            label: label.to_owned(),
            seconds,
            detail: detail.into(),
        });
    }

    /// The replay from Prometheus is not compared with the live decisions, because `why` (an
    /// input of the decisions that Prometheus does not record); the report says so.
    pub fn skip_replay(&mut self, why: &'static str) {
        self.no_replay = Some(why);
    }

    /// Show a document (e.g. the incident report) in the drill's report.
    pub fn attach(&mut self, title: &str, text: &str) {
        self.attachments.push((title.to_owned(), text.to_owned()));
    }

    // ---- what was recorded ---------------------------------------------------------------

    /// Every distinct ConfigMap version the kubelet mounted, oldest first.
    pub fn config_history(&self) -> Vec<ConfigVersion> {
        self.kubelet.history()
    }

    pub fn recorded<T>(&self, f: impl FnOnce(&Recorded) -> T) -> T {
        self.recorder.with(f)
    }

    /// The latest status.
    pub fn status(&self) -> Option<MemoryTierStatus> {
        self.recorded(|r| r.statuses.last().map(|s| s.status.clone()))
    }

    pub fn statuses(&self) -> Vec<StatusSample> {
        self.recorded(|r| r.statuses.clone())
    }

    /// The demo's breaker state as last seen.
    pub fn demo_breaker(&self) -> String {
        self.recorded(|r| {
            r.breaker
                .last()
                .map(|b| b.state.clone())
                .unwrap_or_default()
        })
    }

    /// The Events about the tier, oldest first: (time, type, reason, note).
    pub fn events(&self) -> Vec<EventRecord> {
        let mut events: Vec<EventRecord> = self
            .api
            .list_json(&Gvr::of::<k8s_openapi::api::events::v1::Event>())
            .into_iter()
            .filter(|e| e["regarding"]["name"] == TIER)
            .map(|e| EventRecord {
                at: e["eventTime"]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(self.started_at),
                type_: e["type"].as_str().unwrap_or("").to_owned(),
                reason: e["reason"].as_str().unwrap_or("").to_owned(),
                action: e["action"].as_str().unwrap_or("").to_owned(),
                note: e["note"].as_str().unwrap_or("").to_owned(),
                count: e["series"]["count"].as_u64().unwrap_or(1),
                last_seen: e["series"]["lastObservedTime"]
                    .as_str()
                    .and_then(|t| t.parse().ok()),
            })
            .collect();
        events.sort_by_key(|e| e.at);
        events
    }

    /// The first Event with this reason, if any.
    pub fn event(&self, reason: &str) -> Option<EventRecord> {
        self.events().into_iter().find(|e| e.reason == reason)
    }

    /// The incident reports the controller wrote (`<tier>-incidents`), by data key.
    pub fn incident_reports(&self) -> BTreeMap<String, String> {
        self.api
            .get_json(&Gvr::of::<ConfigMap>(), NAMESPACE, INCIDENTS_CONFIG_MAP)
            .and_then(|cm| serde_json::from_value(cm["data"].clone()).ok())
            .unwrap_or_default()
    }

    /// When the demo logged lines containing `needle` (its own clock).
    pub fn demo_logged(&self, needle: &str) -> Vec<Timestamp> {
        self.demo
            .log()
            .lines()
            .filter(|l| l.contains(needle))
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    }

    /// `POST /admin/cache/warm` calls the demo served: (time, warmed ids as logged).
    pub fn warm_calls(&self) -> Vec<(Timestamp, String)> {
        self.demo
            .log()
            .lines()
            .filter(|l| l.contains("cache warm"))
            .filter_map(|l| {
                let at: Timestamp = l.split_whitespace().next()?.parse().ok()?;
                let warmed = l.split("warmed=").nth(1)?;
                let end = warmed.find(']').map_or(warmed.len(), |i| i + 1);
                Some((at, warmed[..end].to_owned()))
            })
            .collect()
    }

    // ---- Redis ---------------------------------------------------------------------------

    /// Every key matching `pattern`, by SCAN (never KEYS).
    pub fn scan(&self, pattern: &str) -> BTreeSet<String> {
        let mut con = self.redis.client();
        let mut keys = BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query(&mut con)
                .expect("SCAN");
            keys.extend(batch);
            if next == 0 {
                return keys;
            }
            cursor = next;
        }
    }

    /// The keys matching `pattern` that have no TTL.
    pub fn without_ttl(&self, pattern: &str) -> BTreeSet<String> {
        let keys: Vec<String> = self.scan(pattern).into_iter().collect();
        if keys.is_empty() {
            return BTreeSet::new();
        }
        let mut con = self.redis.client();
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.pttl(key);
        }
        let ttls: Vec<i64> = pipe.query(&mut con).expect("PTTL");
        keys.into_iter()
            .zip(ttls)
            .filter(|(_, ttl)| *ttl == -1)
            .map(|(key, _)| key)
            .collect()
    }

    /// (used_memory, maxmemory) from INFO.
    pub fn redis_memory(&self) -> (u64, u64) {
        let mut con = self.redis.client();
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query(&mut con)
            .expect("INFO memory");
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        (field("used_memory"), field("maxmemory"))
    }

    // ---- waiting -------------------------------------------------------------------------

    /// Poll `check` until it gives a value, or fail after `timeout` naming what was awaited, the
    /// last state `check` reported and the tier's state.
    pub async fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Drill) -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match check(self) {
                Ok(value) => return value,
                Err(last) => last,
            };
            if Instant::now() >= deadline {
                panic!(
                    "[{}] timed out after {timeout:?} waiting for {what}\n  last seen: {last}\n  tier: {}",
                    self.name,
                    self.brief()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait for a status that passes `check`.
    pub async fn wait_status<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&MemoryTierStatus) -> Option<T>,
    ) -> T {
        self.wait(what, timeout, |d| {
            let status = d.status().ok_or("no status yet")?;
            check(&status).ok_or_else(|| d.brief())
        })
        .await
    }

    /// Wait until the ConfigMap mounted now passes `check`; returns that version.
    pub async fn wait_config(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> ConfigVersion {
        self.wait(what, timeout, |d| {
            let latest = d.config_history().pop().ok_or("no ConfigMap yet")?;
            if check(&latest.data) {
                Ok(latest)
            } else {
                Err(format!("ConfigMap now: {}", summarize(&latest.data)))
            }
        })
        .await
    }

    /// Wait until the demo runs with flags that pass `check`.
    pub async fn wait_demo_flags(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> record::FlagsVersion {
        self.wait(what, timeout, |d| {
            let latest = d
                .recorded(|r| r.flags.last().cloned())
                .ok_or("no flags yet")?;
            if check(&latest.raw) {
                Ok(latest)
            } else {
                Err(format!(
                    "demo flags v{}: {}",
                    latest.version,
                    summarize(&latest.raw)
                ))
            }
        })
        .await
    }

    /// Wait until the demo's breaker is in `state`; returns when the drill saw it.
    pub async fn wait_demo_breaker(&self, state: &str, timeout: Duration) -> Timestamp {
        self.wait(&format!("the demo's breaker {state}"), timeout, |d| {
            d.recorded(|r| {
                let last = r.breaker.last().ok_or("no breaker state yet".to_owned())?;
                if last.state == state {
                    Ok(last.seen_at)
                } else {
                    Err(format!("breaker {}", last.state))
                }
            })
        })
        .await
    }

    /// Wait for an Event with this reason.
    pub async fn wait_event(&self, reason: &str, timeout: Duration) -> EventRecord {
        self.wait(&format!("an Event {reason}"), timeout, |d| {
            d.event(reason).ok_or_else(|| {
                let reasons: Vec<String> = d.events().into_iter().map(|e| e.reason).collect();
                format!("Events so far: {}", reasons.join(", "))
            })
        })
        .await
    }

    /// Wait until the tier runs healthy on its baseline with every signal known, and the cache
    /// hit rate at least `min_hit_rate`.
    pub async fn wait_steady(&self, min_hit_rate: f64) {
        self.wait_status(
            &format!("a steady state (Healthy, every signal known, hit rate ≥ {min_hit_rate}%)"),
            Duration::from_secs(90),
            |s| {
                let o = s.observed.as_ref()?;
                let known = o.p50_latency_ms.is_some()
                    && o.error_rate_percent.is_some()
                    && o.breaker_state.is_some()
                    && o.redis_used_memory_percent.is_some();
                let hit = o.cache_hit_rate_percent? >= min_hit_rate;
                (s.phase == Some(Phase::Healthy) && known && hit).then_some(())
            },
        )
        .await;
    }

    /// One line on where the tier is: phase, mitigations, canary and the main signals.
    pub fn brief(&self) -> String {
        let Some(s) = self.status() else {
            return "no status yet".into();
        };
        let o = s.observed.clone().unwrap_or_default();
        let f = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.1}"));
        let mitigations: Vec<&str> = s.mitigations.iter().map(|m| m.name.as_str()).collect();
        format!(
            "phase {:?}, mitigations [{}], canary {}, P50 {} ms, errors {}%, hit rate {}%, mem0 writes {}%, breaker {}, Redis {}% ({:?}); ConfigMap v{}; demo breaker {}",
            s.phase,
            mitigations.join(", "),
            s.effective
                .as_ref()
                .and_then(|e| e.canary_sample_rate.clone())
                .unwrap_or_default(),
            f(o.p50_latency_ms),
            f(o.error_rate_percent),
            f(o.cache_hit_rate_percent),
            f(o.mem0_write_success_percent),
            o.breaker_state.map_or("?", |b| b.as_str()),
            f(o.redis_used_memory_percent),
            s.memory_report.as_ref().and_then(|m| m.level),
            self.config_history().len(),
            self.demo_breaker(),
        )
    }

    /// Passed without [`Drill::finish`]'s checks (a run that makes the controller fail on
    /// purpose checks its own invariants): the report is not printed again at the end.
    pub fn passed(&mut self) {
        self.passed = true;
    }

    /// The drill passed: check that every reconcile and every action of the controller
    /// succeeded, then print the report and the summary line `scripts/drill` collects.
    pub async fn finish(mut self) {
        self.stop_load();
        let metrics_url = self.replicas[0]
            .process
            .as_ref()
            .map(|p| p.metrics_url())
            .unwrap_or_default();
        let metrics = self
            .http
            .get(metrics_url)
            .send()
            .await
            .and_then(|r| r.error_for_status());
        let metrics = match metrics {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => panic!("the controller's /metrics: {e}"),
        };
        let count = |name: &str, filter: &dyn Fn(&str) -> bool| -> f64 {
            metrics
                .lines()
                .filter(|l| l.starts_with(name) && filter(l))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let errors = count("tierguard_reconcile_errors_total", &|_| true);
        let failed = count("tierguard_actions_total", &|l| {
            l.contains("outcome=\"failed\"")
        });
        let reconciles = count("tierguard_reconciles_total", &|_| true);
        let actions = count("tierguard_actions_total", &|_| true);
        assert!(
            errors == 0.0 && failed == 0.0,
            "the controller reports {errors} failed reconciles and {failed} failed actions:\n{}",
            metrics
                .lines()
                .filter(|l| l.contains("errors_total") || l.contains("failed"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        // The drill's own Prometheus recorded all of it: replayed, the policy must decide what
        // the controller decided.
        let origin = self.fault_at.unwrap_or(self.started_at);
        match self.source {
            AppSource::Prometheus => match self.no_replay {
                Some(why) => self.attach(
                    "replay of the drill from its Prometheus",
                    &format!("not compared: {why}"),
                ),
                None => match fidelity::check(&self, origin).await {
                    Ok(table) => self.attach("replay of the drill from its Prometheus", &table),
                    Err(why) => panic!("[{}] {why}", self.name),
                },
            },
            // The live tier read PostgreSQL: a replay from Prometheus would judge other data.
            AppSource::Postgres => {}
        }
        self.passed = true;
        println!("{}", self.report());
        println!(
            "  controller: {reconciles} reconciles, {actions} actions, none failed (its /metrics)"
        );
        let wall = self.started.elapsed().as_secs_f64();
        let mut summary = format!("drill-summary: {} PASS wall={wall:.1}s", self.name);
        for m in &self.measures {
            let _ = write!(summary, " {}={:.2}s", m.label.replace(' ', "-"), m.seconds);
        }
        println!("{summary}");
    }
}

impl Drop for Drill {
    fn drop(&mut self) {
        if self.passed {
            return;
        }
        // A failed drill: show what it saw, and the logs of the controller and the demo.
        eprintln!("{}", self.report());
        // Reconciles that did nothing are left out: they are one a second.
        let log: String = self
            .replica_log(0)
            .lines()
            .filter(|l| !l.contains("actions=0"))
            .map(|l| format!("{l}\n"))
            .collect();
        eprintln!(
            "=== tierguard run log (last lines that did something) ===\n{}",
            tail(&log, 60)
        );
        eprintln!(
            "=== clinic-backend log (last lines) ===\n{}",
            tail(&self.demo.log(), 40)
        );
        if !self.replicas[0]
            .process
            .as_mut()
            .is_some_and(|p| p.is_running())
        {
            eprintln!("the controller process is not running");
        }
        if let Some(message) = FAILED_ON.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let shown: String = message.chars().take(4000).collect();
            eprintln!("=== the drill failed on ===\n{shown}");
        }
        let _ = &self.prometheus;
    }
}

/// An Event about the tier.
#[derive(Clone, Debug)]
pub struct EventRecord {
    pub at: Timestamp,
    pub type_: String,
    pub reason: String,
    /// `Decide` for what the policy decided; the action's kind for how an action went.
    pub action: String,
    pub note: String,
    pub count: u64,
    /// When a repeated Event was last seen (its series).
    pub last_seen: Option<Timestamp>,
}

/// The bearer token every replica's kubeconfig sends: how the API server's faults pick the
/// controller's requests and not the drill's own.
pub const CONTROLLER_USER: &str = "tierguard";

fn start_replica(
    replicas: &mut [Replica],
    i: usize,
    binary: &std::path::Path,
    kubeconfig: &std::path::Path,
    dir: &std::path::Path,
    restart: bool,
) {
    let several = replicas.len() > 1;
    let replica = &mut replicas[i];
    replica.starts += 1;
    let log = if several {
        dir.join(format!("{}-run{}.log", replica.identity, replica.starts))
    } else {
        dir.join("tierguard.log")
    };
    let mut extra: Vec<&str> = Vec::new();
    if several {
        extra.extend([
            "--leader-election",
            "--lease-name",
            LEASE_NAME,
            "--lease-duration",
            LEASE_DURATION,
        ]);
    }
    replica.logs.push(log.clone());
    replica.process = Some(ControllerProcess::spawn_with(
        binary,
        kubeconfig,
        NAMESPACE,
        log,
        &replica.identity,
        &extra,
        !restart && !several,
    ));
}

async fn create_secret(client: &Client, name: &str, key: &str, value: &str) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NAMESPACE.into()),
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
    Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap_or_else(|e| panic!("create Secret {name}: {e}"));
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
