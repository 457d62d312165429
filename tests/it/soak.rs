//! The fault soak: the drills' incidents, one after another, while the environment fails on a
//! schedule, and the invariants that must hold whatever happened.
//!
//! Everything is real and on loopback, as in the drills (`support/drill`): the demo clinic
//! backend under load, a `redis-server`, a `prometheus` scraping the demo, and two replicas of
//! `tierguard run` competing for the Lease against the in-process API server. While the runbooks'
//! incidents come and go (a canary regression, a mem0 outage, a Redis cold start, memory filling
//! up to the critical level), the environment fails at seeded random moments:
//!
//! - the API server answers the controller with 500 or 409, hangs for seconds, drops every open
//!   watch, or forgets its history so that watches resume into 410 Gone;
//! - Prometheus and Redis are killed and restarted;
//! - a replica is SIGKILLed (the leader, often) and restarted, or the leader is sent SIGTERM and
//!   hands over the Lease.
//!
//! Each kind of fault comes once, in a seeded order, before the weighted draw, so every run has
//! them all. The tier restarts its Deployment on every change of its configuration
//! (`restartOnChange`).
//!
//! At the end every fault is lifted and the tier must come back to its baseline. Then the
//! invariants: every incident that opened is recorded exactly once; no destructive action (a
//! flush, a warm-up, a rollout restart) runs twice for one decision; no rollback without a
//! sustained breach; the tier back on its baseline; memory bounded; no panic in any log; every
//! kind of fault injected. The figures are printed. (tierguard never changes Redis' maxmemory.)
//!
//! `TIERGUARD_SOAK_SECS` sets the length of the faulty part (default 150 s: about 4 minutes in
//! all), `TIERGUARD_SOAK_SEED` the schedule; `TIERGUARD_SOAK_REPORT=1` prints the drill's
//! timeline also when every invariant held. `scripts/soak DURATION` runs a longer one.
//! Run it alone: `cargo test --test it soak::`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;
use tierguard::api::{
    ActionKind, ActionOutcome, MemoryLevel, MemoryTier, Phase, RESUME_ANNOTATION, Runbook,
};

use crate::support::drill::{
    self, CONTROLLER_USER, Drill, NAMESPACE, Setup, TIER, load::LoadShape,
};
use k8s_openapi::api::apps::v1::Deployment;
use kube_testserver::{Fault, FaultAction, Gvr};
use tierguard::act::restart::{RESTARTED_AT_ANNOTATION, RESTARTED_FOR_HASH_ANNOTATION};

/// The pod's grace period the SIGTERMed leader must exit within.
const GRACE: Duration = Duration::from_secs(10);
/// The memory limit the controller runs under in the shipped Deployment.
const MEMORY_LIMIT_KIB: u64 = 128 * 1024;
/// The drills' P50 window (`rollback.p50LatencyFor`).
const P50_FOR: Duration = Duration::from_secs(6);
/// The Deployment that reads the tier's ConfigMap, restarted on every change of it.
const WORKLOAD: &str = "clinic-backend";
/// The drills' remediation cooldown.
const COOLDOWN: Duration = Duration::from_secs(60);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn fault_soak() {
    let _one_at_a_time = drill::serial();
    drill::runtime().block_on(soak(
        Duration::from_secs(env_u64("TIERGUARD_SOAK_SECS", 150)),
        env_u64("TIERGUARD_SOAK_SEED", 16),
    ));
}

/// The incidents of the drills, as the soak causes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Incident {
    /// 1200 ms added to canary requests (80 % of the traffic): the canary rollback.
    CanaryRegression,
    /// mem0 down for longer than the breaker's maxOpenDuration.
    Mem0Outage,
    /// Redis restarted under load: a stampede on an empty cache.
    ColdStart,
    /// Redis filled with session keys past the critical level: remediation.
    MemoryPressure,
}

const INCIDENTS: [Incident; 4] = [
    Incident::CanaryRegression,
    Incident::Mem0Outage,
    Incident::ColdStart,
    Incident::MemoryPressure,
];

/// What the environment does to the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum EnvFault {
    Api500,
    Api409,
    ApiHang,
    DroppedWatches,
    Gone410,
    PrometheusKilled,
    RedisKilled,
    ControllerKilled,
    LeaderTerminated,
}

impl EnvFault {
    /// Every fault with its weight: kills and API faults often, the rest now and then.
    const WEIGHTS: [(EnvFault, u32); 9] = [
        (EnvFault::Api500, 3),
        (EnvFault::Api409, 2),
        (EnvFault::ApiHang, 2),
        (EnvFault::DroppedWatches, 2),
        (EnvFault::Gone410, 2),
        (EnvFault::PrometheusKilled, 2),
        (EnvFault::RedisKilled, 1),
        (EnvFault::ControllerKilled, 4),
        (EnvFault::LeaderTerminated, 2),
    ];

    /// Pick one, weighted.
    fn pick(rng: &mut StdRng) -> EnvFault {
        let total: u32 = Self::WEIGHTS.iter().map(|(_, w)| w).sum();
        let mut roll = rng.random_range(0..total);
        for (fault, weight) in Self::WEIGHTS {
            if roll < weight {
                return fault;
            }
            roll -= weight;
        }
        EnvFault::Api500
    }
}

/// Something to undo later.
#[derive(Debug)]
enum Restore {
    Replica(usize),
    Prometheus,
    Redis,
}

/// An incident the soak caused: when, and when its cause was lifted.
#[derive(Debug)]
struct Episode {
    incident: Incident,
    started: Timestamp,
    lifted: Option<Timestamp>,
}

struct Soak {
    d: Drill,
    rng: StdRng,
    faults: BTreeMap<EnvFault, u32>,
    restores: Vec<(Instant, Restore)>,
    episodes: Vec<Episode>,
    /// (start, end) of each time the canary latency fault was on.
    latency_on: Vec<(Timestamp, Option<Timestamp>)>,
    sigkills: u32,
    handovers: Vec<Duration>,
    resumes: u32,
    /// Every incident report key seen in `<tier>-incidents` (which keeps only the newest 20).
    reports_seen: BTreeSet<String>,
    /// Faults not injected yet: each kind comes once, in a shuffled order, before the weighted
    /// draw, so that even the shortest soak has every kind.
    first_round: Vec<EnvFault>,
    /// Every (restartedAt, config hash) the workload's pod template was seen with, in order.
    restarts_seen: Vec<(String, String)>,
}

async fn soak(length: Duration, seed: u64) {
    let started = Instant::now();
    let d = Drill::start(Setup {
        name: "fault-soak",
        redis_args: vec!["--enable-debug-command", "yes"],
        tier: json!({
            // Back from a stampede's 0.05 in three steps rather than fifteen: more incidents fit.
            "canary": {"sampleRate": 0.8, "rampStep": 0.25},
            // Every change of the configuration restarts the workload: a destructive action that
            // must not run twice for one decision either.
            "target": {"workloadRef": {"kind": "Deployment", "name": WORKLOAD}, "restartOnChange": true},
            "redis": {"remediation": {"cooldown": "60s", "maxDuration": "5s"}},
        }),
        serve_args: vec![],
        replicas: 2,
    })
    .await;
    d.api
        .put_json(
            &Gvr::of::<Deployment>(),
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                // The workload's owner lets the tier restart it.
                "metadata": {
                    "name": WORKLOAD, "namespace": NAMESPACE,
                    "annotations": {"tierguard.dev/restart-for": crate::support::drill::TIER},
                },
                "spec": {
                    "selector": {"matchLabels": {"app": WORKLOAD}},
                    "template": {
                        "metadata": {"labels": {"app": WORKLOAD}},
                        "spec": {"containers": [{"name": "app", "image": "clinic-backend"}]},
                    },
                },
            }),
        )
        .expect("create the workload");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut first_round: Vec<EnvFault> = EnvFault::WEIGHTS.iter().map(|(f, _)| *f).collect();
    shuffle(&mut first_round, &mut rng);
    let mut s = Soak {
        d,
        rng,
        faults: BTreeMap::new(),
        restores: Vec::new(),
        episodes: Vec::new(),
        latency_on: Vec::new(),
        sigkills: 0,
        handovers: Vec::new(),
        resumes: 0,
        reports_seen: BTreeSet::new(),
        first_round,
        restarts_seen: Vec::new(),
    };
    s.d.start_load(LoadShape::default());
    s.d.wait_steady(90.0).await;
    let baseline = s.d.config_history()[0].data.clone();
    s.d.mark(format!(
        "soak: {}s of faults, seed {seed}",
        length.as_secs()
    ));

    let faults_end = Instant::now() + length;
    let mut next_fault = Instant::now() + Duration::from_secs(2);
    let mut order: Vec<Incident> = INCIDENTS.to_vec();
    let mut next_incident = 0usize;
    let mut incident: Option<(Incident, Instant)> = None;
    let mut next_incident_at = Instant::now() + Duration::from_secs(5);
    while Instant::now() < faults_end {
        s.d.sample_rss();
        s.note_reports();
        s.note_restarts();
        s.restore_due(false).await;
        if Instant::now() >= next_fault {
            let fault = match s.first_round.pop() {
                Some(fault) => fault,
                None => EnvFault::pick(&mut s.rng),
            };
            if !s.inject(fault).await && s.faults.get(&fault).is_none_or(|n| *n == 0) {
                // Not possible now (no leader, say): it comes again later.
                s.first_round.insert(0, fault);
            }
            next_fault = Instant::now() + Duration::from_millis(s.rng.random_range(2500..6000));
        }
        match incident {
            // The next incident starts on a calm tier (Healthy, no mitigation): a canary
            // regression while a stampede keeps the canary low would go unnoticed, rightly.
            None if Instant::now() >= next_incident_at
                && (s.calm() || next_incident_at.elapsed() > Duration::from_secs(60)) =>
            {
                if next_incident.is_multiple_of(order.len()) {
                    shuffle(&mut order, &mut s.rng);
                    if next_incident == 0 {
                        // The rollback first: the shortest soak still checks it.
                        order.retain(|i| *i != Incident::CanaryRegression);
                        order.insert(0, Incident::CanaryRegression);
                    }
                }
                let which = order[next_incident % order.len()];
                next_incident += 1;
                s.begin(which).await;
                incident = Some((which, Instant::now()));
            }
            Some((which, since)) if s.lift_if_due(which, since).await => {
                incident = None;
                next_incident_at = Instant::now() + Duration::from_secs(8);
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Every fault lifted, everything back up: the tier must return to its baseline.
    if let Some((which, _)) = incident {
        s.lift(which).await;
    }
    s.d.api.clear_faults();
    s.restore_due(true).await;
    s.d.mark("soak: every fault lifted");
    let recovered = s.recover(&baseline).await;
    s.d.stop_load();
    s.d.sample_rss();
    s.check(&baseline, recovered, started.elapsed(), seed);
}

fn shuffle<T>(items: &mut [T], rng: &mut StdRng) {
    for i in (1..items.len()).rev() {
        let j = rng.random_range(0..=i);
        items.swap(i, j);
    }
}

impl Soak {
    fn count(&mut self, fault: EnvFault) {
        *self.faults.entry(fault).or_default() += 1;
    }

    fn controller_fault(&self, action: FaultAction, remaining: usize) -> Fault {
        Fault {
            user: Some(CONTROLLER_USER.to_owned()),
            ..Fault::new(action, remaining)
        }
    }

    fn note_restarts(&mut self) {
        let Some(deployment) = self
            .d
            .api
            .get_json(&Gvr::of::<Deployment>(), NAMESPACE, WORKLOAD)
        else {
            return;
        };
        let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
        if let (Some(at), Some(hash)) = (
            annotations[RESTARTED_AT_ANNOTATION].as_str(),
            annotations[RESTARTED_FOR_HASH_ANNOTATION].as_str(),
        ) {
            let seen = (at.to_owned(), hash.to_owned());
            if self.restarts_seen.last() != Some(&seen) {
                self.restarts_seen.push(seen);
            }
        }
    }

    fn note_reports(&mut self) {
        self.reports_seen
            .extend(self.d.incident_reports().into_keys());
    }

    fn calm(&self) -> bool {
        self.d
            .status()
            .is_some_and(|s| s.phase == Some(Phase::Healthy) && s.mitigations.is_empty())
    }

    fn leader_index(&self) -> Option<usize> {
        let holder = self.d.lease_holder()?;
        (0..self.d.replica_count()).find(|&i| self.d.replica(i).identity == holder)
    }

    fn after(&mut self, from_ms: u64, to_ms: u64, restore: Restore) {
        let wait = Duration::from_millis(self.rng.random_range(from_ms..to_ms));
        self.restores.push((Instant::now() + wait, restore));
    }

    /// Inject `fault`; false when it could not be now (nothing was done).
    async fn inject(&mut self, fault: EnvFault) -> bool {
        let tier_status = format!(
            "/apis/tierguard.dev/v1alpha1/namespaces/{NAMESPACE}/memorytiers/{TIER}/status"
        );
        match fault {
            EnvFault::Api500 => {
                let n = self.rng.random_range(2..6);
                self.d
                    .api
                    .push_fault(self.controller_fault(FaultAction::Fail(500), n));
            }
            EnvFault::Api409 => {
                let fault = Fault {
                    method: Some("PATCH".into()),
                    path_prefix: tier_status,
                    ..self.controller_fault(FaultAction::Fail(409), 2)
                };
                self.d.api.push_fault(fault);
            }
            EnvFault::ApiHang => {
                let hang = Duration::from_millis(self.rng.random_range(1500..5000));
                self.d
                    .api
                    .push_fault(self.controller_fault(FaultAction::Delay(hang), 3));
            }
            EnvFault::DroppedWatches => self.d.api.drop_watches(),
            EnvFault::Gone410 => {
                // Resuming from before the compaction answers 410 Gone: the watchers relist.
                self.d.api.compact();
                self.d.api.drop_watches();
            }
            EnvFault::PrometheusKilled => {
                if self
                    .restores
                    .iter()
                    .any(|(_, r)| matches!(r, Restore::Prometheus))
                {
                    return false;
                }
                self.d.prometheus().kill();
                self.after(2000, 8000, Restore::Prometheus);
            }
            EnvFault::RedisKilled => {
                // A cold start during a canary regression holds the canary at the stampede's
                // rate, and the regression rightly goes unnoticed: no kill then, so that every
                // regression is a rollback to check.
                let regression_on = self.episodes.last().is_some_and(|e| {
                    e.incident == Incident::CanaryRegression && e.lifted.is_none()
                });
                if regression_on
                    || self
                        .restores
                        .iter()
                        .any(|(_, r)| matches!(r, Restore::Redis))
                {
                    return false;
                }
                self.d.redis.kill();
                self.after(1000, 4000, Restore::Redis);
            }
            EnvFault::ControllerKilled => {
                // The leader more often than not: that is where a kill can lose work.
                let leader = self.leader_index();
                let i = match leader {
                    Some(l) if self.rng.random_bool(0.7) => l,
                    _ => self.rng.random_range(0..self.d.replica_count()),
                };
                if !self.d.replica_running(i) {
                    return false;
                }
                self.d.kill_replica(i);
                self.sigkills += 1;
                self.after(500, 3000, Restore::Replica(i));
            }
            EnvFault::LeaderTerminated => {
                let Some(i) = self.leader_index() else {
                    return false;
                };
                if !self.d.replica_running(i) {
                    return false;
                }
                let took = self.d.terminate_replica(i, GRACE);
                let took = took.unwrap_or_else(|| {
                    panic!(
                        "the leader did not exit within {GRACE:?} of SIGTERM; log:\n{}",
                        self.d.replica_log(i)
                    )
                });
                self.handovers.push(took);
                self.after(500, 2000, Restore::Replica(i));
            }
        }
        self.d.mark(format!("env fault: {fault:?}"));
        self.count(fault);
        true
    }

    /// Undo what is due (everything, with `all`).
    async fn restore_due(&mut self, all: bool) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.restores)
            .into_iter()
            .partition(|(at, _)| all || *at <= now);
        self.restores = later;
        for (_, restore) in due {
            match restore {
                Restore::Replica(i) => self.d.restart_replica(i),
                Restore::Prometheus => self.d.prometheus().restart(),
                Restore::Redis => self.d.redis.restart(),
            }
            self.d.mark(format!("restored: {restore:?}"));
        }
    }

    async fn begin(&mut self, incident: Incident) {
        let now = Timestamp::now();
        match incident {
            Incident::CanaryRegression => {
                self.d
                    .fault(
                        "1200 ms added to canary requests",
                        json!({"request_latency_ms": 1200, "request_latency_scope": "canary"}),
                    )
                    .await;
                self.latency_on.push((now, None));
            }
            Incident::Mem0Outage => {
                self.d
                    .fault("mem0 outage on", json!({"mem0_outage": true}))
                    .await;
            }
            Incident::ColdStart => {
                self.d.origin("Redis restarted under load (cold start)");
                self.d.redis.restart();
            }
            Incident::MemoryPressure => {
                // Session keys up to 95 % of maxmemory (64 MB): critical.
                let (used, max) = self.d.redis_memory();
                let target = (max as f64 * 0.95) as u64;
                // About 1.1 KB a key: one remediation run (100,000 keys at most) clears them.
                let keys = target.saturating_sub(used) / 1100;
                let mut con = self.d.redis.client();
                let start: u64 = self.rng.random_range(0..1_000_000_000);
                let filled: redis::RedisResult<()> = redis::cmd("DEBUG")
                    .arg("POPULATE")
                    .arg(keys)
                    .arg(format!("session:soak{start}"))
                    .arg(1000)
                    .query(&mut con);
                self.d.mark(format!(
                    "memory pressure: {keys} session keys ({})",
                    if filled.is_ok() { "written" } else { "failed" }
                ));
            }
        }
        self.episodes.push(Episode {
            incident,
            started: now,
            lifted: None,
        });
    }

    /// Lift the incident's cause once it had its effect (or long enough); true when lifted.
    async fn lift_if_due(&mut self, incident: Incident, since: Instant) -> bool {
        let age = since.elapsed();
        let status = self.d.status().unwrap_or_default();
        let due = match incident {
            // Until rolled back (a human then resumes), or 60 s.
            Incident::CanaryRegression => {
                status.phase == Some(Phase::RolledBack) || age > Duration::from_secs(60)
            }
            // Past maxOpenDuration (8 s) with room for the mitigation.
            Incident::Mem0Outage => age > Duration::from_secs(16),
            // The cause is over at once; let the stampede run a little.
            Incident::ColdStart => age > Duration::from_secs(10),
            Incident::MemoryPressure => {
                let level = status.memory_report.as_ref().and_then(|m| m.level);
                (level == Some(MemoryLevel::Ok) && age > Duration::from_secs(5))
                    || age > Duration::from_secs(40)
            }
        };
        if due {
            self.lift(incident).await;
        }
        due
    }

    async fn lift(&mut self, incident: Incident) {
        let now = Timestamp::now();
        match incident {
            Incident::CanaryRegression => {
                self.d
                    .fault(
                        "canary latency off",
                        json!({"request_latency_ms": 0, "request_latency_scope": "all"}),
                    )
                    .await;
                if let Some(last) = self.latency_on.last_mut() {
                    last.1 = Some(now);
                }
                self.resume().await;
            }
            Incident::Mem0Outage => {
                self.d
                    .fault("mem0 outage off", json!({"mem0_outage": false}))
                    .await;
            }
            Incident::ColdStart => {}
            Incident::MemoryPressure => {
                // What remediation left (it stops at its budgets) goes by the same SCAN + UNLINK
                // a person would run.
                let url = self.d.redis.url();
                let _ = tokio::process::Command::new(env!("CARGO_BIN_EXE_tierguard"))
                    .args([
                        "redis",
                        "flush",
                        "--url",
                        &url,
                        "--pattern",
                        "session:soak*",
                    ])
                    .output()
                    .await;
            }
        }
        if let Some(e) = self
            .episodes
            .iter_mut()
            .rev()
            .find(|e| e.incident == incident)
        {
            e.lifted = Some(now);
        }
    }

    /// Approve re-deployment after a rollback, as a human does.
    async fn resume(&mut self) {
        self.resumes += 1;
        let tiers: Api<MemoryTier> = Api::namespaced(self.d.api.client(), NAMESPACE);
        let patch = json!({"metadata": {"annotations": {RESUME_ANNOTATION: format!("soak-{}", self.resumes)}}});
        let _ = tiers
            .patch(TIER, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        self.d.mark("resume annotation set");
    }

    /// Wait for the tier on its baseline: Healthy, no mitigation, the ConfigMap as at the start.
    async fn recover(&mut self, baseline: &BTreeMap<String, String>) -> Duration {
        let from = Instant::now();
        let deadline = from + Duration::from_secs(150);
        let mut resumed_at = Instant::now();
        loop {
            let status = self.d.status().unwrap_or_default();
            let config = self.d.config_history().pop().map(|v| v.data);
            if status.phase == Some(Phase::Healthy)
                && status.mitigations.is_empty()
                && config.as_ref() == Some(baseline)
            {
                return from.elapsed();
            }
            if status.phase == Some(Phase::RolledBack)
                && resumed_at.elapsed() > Duration::from_secs(5)
            {
                self.resume().await;
                resumed_at = Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "the tier did not return to its baseline within 150 s of the last fault: {}",
                self.d.brief()
            );
            self.d.sample_rss();
            self.note_reports();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn check(
        &mut self,
        baseline: &BTreeMap<String, String>,
        recovered: Duration,
        wall: Duration,
        seed: u64,
    ) {
        let statuses = self.d.statuses();
        let events = self.d.events();
        let logs = self.d.all_controller_logs();
        let mut failures: Vec<String> = Vec::new();

        // -- every incident that opened is recorded exactly once ------------------------------
        let mut in_status: BTreeMap<String, (String, bool)> = BTreeMap::new();
        for s in &statuses {
            for i in &s.status.incidents {
                let entry = in_status
                    .entry(i.id.clone())
                    .or_insert((i.runbook.as_str().to_owned(), false));
                entry.1 |= i.resolved_at.is_some();
            }
        }
        let mut announced: BTreeMap<String, (String, u64, Timestamp)> = BTreeMap::new();
        for e in events.iter().filter(|e| e.reason == "IncidentOpened") {
            let mut words = e.note.split_whitespace();
            let (Some(runbook), Some(id)) = (words.next(), words.next()) else {
                continue;
            };
            let entry = announced
                .entry(id.to_owned())
                .or_insert((runbook.to_owned(), 0, e.at));
            entry.1 += e.count;
        }
        self.note_reports();
        let reports = self.reports_seen.clone();
        let mut duplicates = 0u64;
        let mut lost = 0u64;
        for (id, (runbook, count, at)) in &announced {
            if *count > 1 {
                duplicates += count - 1;
                failures.push(format!("incident {id} announced {count} times"));
            }
            if !in_status.contains_key(id) {
                // Announced, then never in status: the decision was lost and taken again.
                let again = announced.iter().any(|(other, (rb, _, t))| {
                    other != id
                        && rb == runbook
                        && *t > *at
                        && t.duration_since(*at).as_secs_f64() < 60.0
                });
                if again {
                    duplicates += 1;
                    failures.push(format!(
                        "incident {id} ({runbook}) opened twice: a decision taken again"
                    ));
                } else {
                    lost += 1;
                    failures.push(format!(
                        "incident {id} ({runbook}) announced but never recorded in status"
                    ));
                }
            }
        }
        for (id, (runbook, resolved)) in &in_status {
            if *resolved && !reports.iter().any(|k| k.contains(id.as_str())) {
                lost += 1;
                failures.push(format!(
                    "incident {id} ({runbook}) resolved without its report"
                ));
            }
        }
        let resolved = in_status.values().filter(|(_, r)| *r).count();

        // -- no destructive action twice for one decision --------------------------------------
        // What ran, from the ground truth: the controllers' own "redis flush finished" lines
        // (every run, whatever was recorded after) and the warm calls the demo served.
        let flush_runs: Vec<Timestamp> = logs
            .iter()
            .flat_map(|(_, text)| text.lines())
            .filter(|l| l.contains("redis flush finished") && l.contains("dry_run=false"))
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        // A call that warmed nothing (the demo answered 503: Redis was down) is retried by the
        // same warm-up; the calls that warmed clinics are the warm-ups that ran.
        let warm_runs = group_runs(
            self.d
                .warm_calls()
                .into_iter()
                .filter(|(_, warmed)| warmed != "[]")
                .map(|(at, _)| at)
                .collect(),
        );
        // What was decided and recorded: every action record that ever reached status.
        let mut recorded: BTreeMap<&str, BTreeSet<Timestamp>> = BTreeMap::new();
        let mut actions: BTreeMap<String, BTreeSet<Timestamp>> = BTreeMap::new();
        for s in &statuses {
            for r in &s.status.recent_actions {
                actions
                    .entry(r.action.as_str().to_owned())
                    .or_default()
                    .insert(r.at);
                // A claimed action is recorded `started` before it runs.
                let ran = matches!(
                    r.outcome,
                    ActionOutcome::Ok | ActionOutcome::Failed | ActionOutcome::Started
                );
                match r.action {
                    ActionKind::RemediateRedis if ran => {
                        recorded.entry("remediate-redis").or_default().insert(r.at);
                    }
                    ActionKind::WarmCache if ran => {
                        recorded.entry("warm-cache").or_default().insert(r.at);
                    }
                    ActionKind::RestartWorkload if ran => {
                        recorded.entry("restart-workload").or_default().insert(r.at);
                    }
                    _ => {}
                }
            }
        }
        let flush_recorded = recorded.get("remediate-redis").map_or(0, BTreeSet::len);
        let warm_recorded = recorded.get("warm-cache").map_or(0, BTreeSet::len);
        let flush_extra = flush_runs.len().saturating_sub(flush_recorded) as u64;
        let warm_extra = warm_runs.len().saturating_sub(warm_recorded) as u64;
        if flush_extra > 0 {
            failures.push(format!(
                "{} flush runs for {flush_recorded} recorded decisions",
                flush_runs.len()
            ));
        }
        if warm_extra > 0 {
            failures.push(format!(
                "{} warm-ups for {warm_recorded} recorded decisions",
                warm_runs.len()
            ));
        }
        let mut sorted = flush_runs.clone();
        sorted.sort();
        for pair in sorted.windows(2) {
            let gap = pair[1].duration_since(pair[0]).as_secs_f64();
            if gap < COOLDOWN.as_secs_f64() - 1.0 {
                failures.push(format!(
                    "two flushes {gap:.1}s apart, within the {COOLDOWN:?} cooldown"
                ));
            }
        }
        // A rollout restart is a PATCH of the workload the API server served (a repeat for a
        // hash already restarted finds the annotation and sends none).
        let workload_path = format!("/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{WORKLOAD}");
        let restart_runs = self
            .d
            .api
            .requests()
            .iter()
            .filter(|r| {
                r.method == "PATCH"
                    && r.path == workload_path
                    && (200..300).contains(&r.status)
                    && !r.injected
            })
            .count();
        let restart_recorded = recorded.get("restart-workload").map_or(0, BTreeSet::len);
        let restart_extra = restart_runs.saturating_sub(restart_recorded) as u64;
        if restart_extra > 0 {
            failures.push(format!(
                "{restart_runs} restarts of the workload for {restart_recorded} recorded decisions"
            ));
        }
        // A configuration may come back (the baseline after each incident) and restart the
        // workload again; two restarts in a row for one hash are one decision taken twice.
        let mut restart_repeats = 0u64;
        for pair in self.restarts_seen.windows(2) {
            if pair[0].1 == pair[1].1 {
                restart_repeats += 1;
                failures.push(format!(
                    "the workload restarted twice in a row for config hash {} ({} and {})",
                    pair[0].1, pair[0].0, pair[1].0
                ));
            }
        }
        if restart_runs == 0 {
            failures.push(
                "the workload was never restarted: the soak did not exercise restarts".into(),
            );
        }
        duplicates += flush_extra + warm_extra + restart_extra.max(restart_repeats);

        // -- every kind of fault was injected -----------------------------------------------------
        for (fault, _) in EnvFault::WEIGHTS {
            if self.faults.get(&fault).is_none_or(|n| *n == 0) {
                failures.push(format!("{fault:?} was never injected"));
            }
        }

        // -- no rollback without a sustained breach ---------------------------------------------
        // Each rollback is one CanaryRollback incident: it started when the policy decided it,
        // and every P50 the controller saw over the window before was above the bound (an
        // unknown reading holds the window). The soak causes rollbacks only by canary latency.
        let mut rollbacks = 0;
        let mut decided: BTreeMap<String, (Timestamp, String)> = BTreeMap::new();
        for s in &statuses {
            for i in &s.status.incidents {
                if i.runbook == Runbook::CanaryRollback {
                    decided
                        .entry(i.id.clone())
                        .or_insert((i.started_at, i.trigger.clone()));
                }
            }
        }
        let regressions = self
            .episodes
            .iter()
            .filter(|e| e.incident == Incident::CanaryRegression)
            .count();
        if regressions > 0 && decided.is_empty() {
            failures.push(format!(
                "{regressions} canary regression(s) and no rollback: the check below checked nothing"
            ));
        }
        for (id, (at, trigger)) in &decided {
            rollbacks += 1;
            let from = *at - SignedDuration::try_from(P50_FOR).unwrap();
            let window: Vec<f64> = statuses
                .iter()
                .filter_map(|x| {
                    let o = x.status.observed.as_ref()?;
                    let t = o.at?;
                    // The criterion judges the canary cohort's P50 when there are cohorts.
                    let p50 = match &o.cohorts {
                        Some(c) => c.canary.p50_latency_ms,
                        None => o.p50_latency_ms,
                    };
                    (t >= from && t <= *at).then_some(p50).flatten()
                })
                .collect();
            // The samples are what the recorder happened to read (under load it may read none
            // in the window); the latency fault being on over the whole window is the cause.
            let sustained = trigger.contains("P50 latency") && window.iter().all(|p| *p > 1000.0);
            let fault_long_enough = self
                .latency_on
                .iter()
                .any(|(on, off)| *on <= from && off.is_none_or(|off| off >= from));
            if !sustained || !fault_long_enough {
                failures.push(format!(
                    "rollback {id} at {at} ({trigger}) without a sustained breach: P50 over the window {window:?}, latency faults {:?}",
                    self.latency_on
                ));
            }
        }

        // -- back on the baseline ----------------------------------------------------------------
        let last = self.d.status().unwrap_or_default();
        let config = self.d.config_history().pop().map(|v| v.data);
        if config.as_ref() != Some(baseline) || !last.mitigations.is_empty() {
            failures.push(format!(
                "not back on the baseline: {:?}, mitigations {:?}",
                config, last.mitigations
            ));
        }

        // -- memory bounded, no panic --------------------------------------------------------------
        let peak = self.d.sample_rss();
        if peak >= MEMORY_LIMIT_KIB {
            failures.push(format!("a controller peaked at {peak} KiB"));
        }
        let mut panics = 0;
        for (name, text) in logs
            .iter()
            .chain([("clinic-backend".to_owned(), self.d.demo.log())].iter())
        {
            for line in text.lines().filter(|l| l.contains("panicked")) {
                panics += 1;
                failures.push(format!("{name}: {line}"));
            }
        }

        // -- the figures ------------------------------------------------------------------------
        let injected: u32 = self.faults.values().sum();
        let incidents: BTreeMap<String, usize> =
            self.episodes.iter().fold(BTreeMap::new(), |mut m, e| {
                *m.entry(format!("{:?}", e.incident)).or_default() += 1;
                m
            });
        let action_counts: Vec<String> = actions
            .iter()
            .map(|(a, at)| format!("{a} {}", at.len()))
            .collect();
        println!("=== fault soak (seed {seed}) ===");
        println!(
            "  wall {:.0}s; back on the baseline {:.1}s after the last fault",
            wall.as_secs_f64(),
            recovered.as_secs_f64()
        );
        println!(
            "  faults injected: {injected} [{}]",
            self.faults
                .iter()
                .map(|(f, n)| format!("{f:?} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  kills: {} SIGKILL, {} SIGTERM handovers (exit after {})",
            self.sigkills,
            self.handovers.len(),
            self.handovers
                .iter()
                .map(|d| format!("{:.2}s", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  incidents caused: {incidents:?}; opened {} (in status {}), resolved {resolved}; rollbacks {rollbacks}; resumes {}",
            announced.len(),
            in_status.len(),
            self.resumes
        );
        println!(
            "  actions recorded: {}; flush runs {} (recorded {flush_recorded}); warm-ups {} (recorded {warm_recorded}); restarts {restart_runs} (recorded {restart_recorded})",
            action_counts.join(", "),
            flush_runs.len(),
            warm_runs.len()
        );
        let failed_reconciles = logs
            .iter()
            .flat_map(|(_, text)| text.lines())
            .filter(|l| l.contains("reconcile failed"))
            .count();
        let detection: Vec<String> = self
            .episodes
            .iter()
            .filter(|e| e.incident == Incident::CanaryRegression)
            .map(|e| {
                statuses
                    .iter()
                    .find(|x| x.seen_at > e.started && x.status.phase == Some(Phase::RollingBack))
                    .map_or("none".to_owned(), |x| {
                        format!("{:.1}s", x.seen_at.duration_since(e.started).as_secs_f64())
                    })
            })
            .collect();
        println!(
            "  failed reconciles (logged by the replicas): {failed_reconciles}; canary regression to rollback: [{}]",
            detection.join(", ")
        );
        println!("  duplicates {duplicates}, lost records {lost}, panics {panics}");
        for e in &self.episodes {
            println!(
                "  episode {:?} from {} to {}",
                e.incident,
                e.started,
                e.lifted.map_or("the end".to_owned(), |t| t.to_string())
            );
        }
        println!(
            "  peak controller RSS {:.1} MiB (limit {} MiB)",
            peak as f64 / 1024.0,
            MEMORY_LIMIT_KIB / 1024
        );
        println!(
            "soak-summary: seed={seed} wall={:.0}s faults={injected} sigkills={} handovers={} incidents={} actions={} duplicates={duplicates} lost={lost} peak_rss_mib={:.1}",
            wall.as_secs_f64(),
            self.sigkills,
            self.handovers.len(),
            announced.len(),
            actions.values().map(BTreeSet::len).sum::<usize>(),
            peak as f64 / 1024.0
        );
        assert!(
            failures.is_empty(),
            "the soak's invariants failed:\n  {}\n{}",
            failures.join("\n  "),
            self.d.report()
        );
        if std::env::var_os("TIERGUARD_SOAK_REPORT").is_none() {
            self.d.passed();
        }
    }
}

/// The batches of one warm-up go out together (the drills warm five clinics in one batch); a
/// gap of 250 ms starts another warm-up.
fn group_runs(mut calls: Vec<Timestamp>) -> Vec<Timestamp> {
    calls.sort();
    let mut runs: Vec<Timestamp> = Vec::new();
    let mut last: Option<Timestamp> = None;
    for at in calls {
        if last.is_none_or(|l| at.duration_since(l).as_secs_f64() > 0.25) {
            runs.push(at);
        }
        last = Some(at);
    }
    runs
}
