//! Incident drills: each runbook's incident caused for real and handled by the real controller,
//! with nobody in the loop.
//!
//! Every drill runs a real `redis-server`, a real `prometheus` scraping the demo clinic backend,
//! the demo itself (`clinic-backend serve`) under its own load generator, the controller
//! (`tierguard run`) against the in-process API server, and a small kubelet that mounts the
//! rendered ConfigMap where the demo reads its flags. Durations are scaled from minutes to
//! seconds (see `support/drill` for the tier every drill starts from).
//!
//! Each drill asserts the detection, the phases and mitigations in order, the ConfigMap history,
//! the warm calls, the Redis keys removed, the incident report and the recovery of the signals,
//! and prints a timeline with the detection-to-action time and the time to recovery.
//! `scripts/drill NAME` runs one for people; they run one at a time.

use crate::support::drill;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use tierguard::api::{BreakerState, MemoryLevel, MemoryTierStatus, MitigationName, Phase, Runbook};
use tierguard::policy::effective::{
    CACHE_SERVE_STALE, CACHE_STALE_TTL, CACHE_TTL, CANARY_SAMPLE_RATE, FAST_PATH_ENABLED,
    MEM0_READS_ENABLED, MEM0_SHADOW_MODE,
};

use drill::load::LoadShape;
use drill::{AppSource, Drill, HOT_CLINICS, Setup};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Seconds from `from` to `to` (negative when `to` is earlier).
fn between(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64()
}

fn plus(at: Timestamp, d: Duration) -> Timestamp {
    at + SignedDuration::try_from(d).expect("a small duration")
}

/// Every distinct phase the tier went through, in order.
fn phases(d: &Drill) -> Vec<Phase> {
    let mut out: Vec<Phase> = Vec::new();
    for s in d.statuses() {
        if let Some(p) = s.status.phase
            && out.last() != Some(&p)
        {
            out.push(p);
        }
    }
    out
}

/// Every mitigation name that was ever in force.
fn mitigations_seen(d: &Drill) -> BTreeSet<MitigationName> {
    d.statuses()
        .iter()
        .flat_map(|s| s.status.mitigations.iter().map(|m| m.name))
        .collect()
}

/// The Event reasons among `wanted`, in the order they first occurred. (An Event that repeats
/// its reason is counted in a series on the first one, as Kubernetes event recorders do.)
fn event_order(d: &Drill, wanted: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in d.events() {
        if wanted.contains(&e.reason.as_str()) && !out.contains(&e.reason) {
            out.push(e.reason);
        }
    }
    out
}

/// A transition, a render or an incident announced more than once (an Event series) means a
/// decision was taken twice: a reconcile decided on memory older than the last status written.
fn assert_each_decision_taken_once(d: &Drill) {
    let once = [
        "PhaseChanged",
        "ConfigRendered",
        "IncidentOpened",
        "IncidentResolved",
    ];
    let repeated: Vec<String> = d
        .events()
        .into_iter()
        .filter(|e| once.contains(&e.reason.as_str()) && e.count > 1)
        .map(|e| format!("{} (×{}): {}", e.reason, e.count, e.note))
        .collect();
    assert!(repeated.is_empty(), "decisions taken twice: {repeated:#?}");
}

/// The policy's memory in a status.
fn policy(status: &MemoryTierStatus) -> Option<tierguard::api::PolicyMemory> {
    tierguard::controller::memory::decode(status.policy.as_ref()?).ok()
}

/// The timeline entries of the status' incident of `runbook`.
fn incident_timeline(status: &MemoryTierStatus, runbook: Runbook) -> Vec<(Timestamp, String)> {
    status
        .incidents
        .iter()
        .find(|i| i.runbook == runbook)
        .map(|i| i.timeline.iter().map(|e| (e.at, e.what.clone())).collect())
        .unwrap_or_default()
}

fn entry_at(timeline: &[(Timestamp, String)], starts_with: &str) -> Timestamp {
    timeline
        .iter()
        .find(|(_, what)| what.starts_with(starts_with))
        .map(|(at, _)| *at)
        .unwrap_or_else(|| panic!("no timeline entry {starts_with:?} in {timeline:#?}"))
}

/// The controller neither warmed the cache nor touched Redis.
fn assert_no_warming_and_no_remediation(d: &Drill) {
    assert!(
        d.warm_calls().is_empty(),
        "unexpected warm calls: {:?}",
        d.warm_calls()
    );
    let status = d.status().expect("a status");
    let report = status.memory_report.unwrap_or_default();
    assert!(
        report.last_remediation.is_none(),
        "unexpected Redis remediation: {:?}",
        report.last_remediation
    );
}

/// The incident report of `title` in `<tier>-incidents`, once written.
async fn incident_report(d: &Drill, title: &str) -> String {
    d.wait(
        &format!(
            "the incident report \"{title}\" in {}",
            drill::INCIDENTS_CONFIG_MAP
        ),
        secs(40),
        |d| {
            let reports = d.incident_reports();
            reports
                .values()
                .find(|md| md.contains(&format!("# Incident: {title}")))
                .cloned()
                .ok_or_else(|| format!("reports: {:?}", reports.keys().collect::<Vec<_>>()))
        },
    )
    .await
}

// ---- Incident #1: circuit breaker open ------------------------------------------------------

#[test]
fn circuit_breaker_outage() {
    let _one_at_a_time = drill::serial();
    drill::runtime().block_on(circuit_breaker_outage_drill(AppSource::Prometheus));
}

/// The same drill with no Prometheus in the controller's picture: the demo writes its events to
/// PostgreSQL and the tier reads them with the runbooks' queries (`spec.metrics.postgres`).
#[test]
fn circuit_breaker_outage_on_postgres() {
    let _one_at_a_time = drill::serial();
    drill::runtime().block_on(circuit_breaker_outage_drill(AppSource::Postgres));
}

/// mem0 goes down: the breaker opens and the controller alerts at once; the breaker stays open
/// past `breaker.maxOpenDuration` (8s here, 4h in production), so mem0 reads and shadow writes are
/// switched off in the ConfigMap and the demo stops calling mem0; mem0 comes back, the breaker
/// closes, and after `canary.rampInterval` (3s) of a closed breaker the flags go back.
async fn circuit_breaker_outage_drill(source: AppSource) {
    let mut d = Drill::start_on(
        Setup {
            name: match source {
                AppSource::Prometheus => "circuit-breaker-outage",
                AppSource::Postgres => "circuit-breaker-outage-on-postgres",
            },
            redis_args: vec![],
            tier: json!({}),
            serve_args: vec![],
            replicas: 1,
        },
        source,
    )
    .await;
    d.start_load(LoadShape::default());
    d.wait_steady(0.0).await;
    if source == AppSource::Postgres {
        let status = d.status().expect("a status");
        let sources: Vec<&str> = status
            .observed
            .as_ref()
            .map(|o| o.sources.iter().map(|s| s.name.as_str()).collect())
            .unwrap_or_default();
        assert!(
            sources.contains(&"postgres") && !sources.contains(&"prometheus"),
            "the tier reads PostgreSQL only: {sources:?}"
        );
        let pg = d.events_db().expect("the events database");
        let written: i64 = pg
            .client()
            .await
            .query_one(
                "SELECT count(*) FROM observability_events WHERE event_type = 'request_completed'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(written > 0, "the demo wrote no request_completed event");
    }
    let baseline = d.config_history()[0].data.clone();
    assert_eq!(baseline[MEM0_READS_ENABLED], "true");
    assert_eq!(baseline[MEM0_SHADOW_MODE], "true");

    let (outage, _) = d
        .fault("mem0 outage on", json!({"mem0_outage": true}))
        .await;
    d.wait_demo_breaker("open", secs(20)).await;

    // Detection: an alert at once, long before any mitigation.
    let alert = d.wait_event("BreakerOpened", secs(20)).await;
    assert_eq!(alert.type_, "Warning");
    let outage_since = d
        .wait_status("the controller's record of the outage", secs(10), |s| {
            policy(s)?.breaker.outage_since
        })
        .await;
    assert_eq!(d.config_history().len(), 1, "nothing changed at the alert");

    // Open for longer than maxOpenDuration: mem0 off.
    let mem0_off = d
        .wait_config(
            "MEM0_READS_ENABLED=false and MEM0_SHADOW_MODE=false in the ConfigMap",
            secs(40),
            |c| c[MEM0_READS_ENABLED] == "false" && c[MEM0_SHADOW_MODE] == "false",
        )
        .await;
    let window_closed = plus(outage_since, secs(8));
    assert!(
        mem0_off.applied_at >= window_closed,
        "mem0 switched off at {} before the breaker had been open for 8s (since {outage_since})",
        mem0_off.applied_at
    );
    let mut expected = baseline.clone();
    expected.insert(MEM0_READS_ENABLED.into(), "false".into());
    expected.insert(MEM0_SHADOW_MODE.into(), "false".into());
    assert_eq!(mem0_off.data, expected, "only the two mem0 flags change");
    let applied = d
        .wait_demo_flags("the demo running with mem0 off", secs(10), |f| {
            f[MEM0_READS_ENABLED] == "false" && f[MEM0_SHADOW_MODE] == "false"
        })
        .await;
    d.wait("the demo's log line of the new flags", secs(5), |d| {
        let log = d.demo.log();
        log.contains("Feature flags loaded: fast_path=True, mem0_reads=False, mem0_shadow=False")
            .then_some(())
            .ok_or("not logged yet".to_owned())
    })
    .await;
    d.measure(
        "detection-to-action",
        between(window_closed, mem0_off.applied_at),
        format!(
            "breaker open (controller) at {:+.2}s + maxOpenDuration 8s = {:+.2}s; ConfigMap mounted at {:+.2}s, demo applied at {:+.2}s",
            d.since_fault(outage_since),
            d.since_fault(window_closed),
            d.since_fault(mem0_off.applied_at),
            d.since_fault(applied.loaded_at),
        ),
    );
    let status = d.status().unwrap();
    let mitigation = status
        .mitigations
        .iter()
        .find(|m| m.name == MitigationName::BreakerMem0Off)
        .expect("the mitigation is listed in status");
    assert!(
        mitigation.reason.contains("maxOpenDuration"),
        "{mitigation:?}"
    );

    // mem0 is back: the breaker closes by itself (a health probe is its trial call), and the
    // mitigation ends once it has stayed closed for the ramp interval.
    let (restored, _) = d
        .fault("mem0 outage off", json!({"mem0_outage": false}))
        .await;
    d.wait_demo_breaker("closed", secs(30)).await;
    let closed = *d
        .demo_logged("Circuit breaker CLOSED")
        .last()
        .expect("the demo logs its breaker closing");
    let back = d
        .wait_config("the ConfigMap back on the baseline", secs(40), |c| {
            *c == baseline
        })
        .await;
    assert!(
        between(closed, back.applied_at) >= 3.0,
        "the mitigation ended {:.2}s after the breaker closed, before the 3s ramp interval",
        between(closed, back.applied_at)
    );
    d.wait_demo_flags("the demo running on the baseline again", secs(10), |f| {
        *f == baseline
    })
    .await;
    let report = incident_report(&d, "Circuit Breaker Open").await;
    assert!(
        report.contains("mem0 reads and shadow writes switched off"),
        "{report}"
    );
    assert!(
        report.contains("mem0 reads and shadow writes back to the spec"),
        "{report}"
    );
    let healthy = d
        .wait_status("Healthy, the breaker closed", secs(30), |s| {
            let closed = s.observed.as_ref()?.breaker_state == Some(BreakerState::Closed);
            (s.phase == Some(Phase::Healthy) && closed).then(|| s.clone())
        })
        .await;
    assert!(healthy.mitigations.is_empty());

    // The whole story, in order.
    let history: Vec<_> = d.config_history().into_iter().map(|v| v.data).collect();
    assert_eq!(
        history,
        vec![baseline.clone(), expected, baseline],
        "ConfigMap history"
    );
    assert_eq!(
        phases(&d),
        vec![Phase::Healthy, Phase::Degraded, Phase::Healthy],
        "phases"
    );
    // The report is written (IncidentRecorded) in the step that resolves the incident: the
    // decision's Event comes first, then the outcome of writing the report.
    let order = [
        "BreakerOpened",
        "IncidentOpened",
        "CircuitBreaker",
        "IncidentResolved",
        "IncidentRecorded",
    ];
    assert_each_decision_taken_once(&d);
    let seen = event_order(&d, &order);
    // The breaker alert and the incident come first, in either order: the incident opens on
    // whichever shows the outage first, the breaker-state gauge or the falling mem0 write
    // success, and the two are scraped independently.
    assert_eq!(
        BTreeSet::from_iter(seen.iter().take(2).map(String::as_str)),
        BTreeSet::from(["BreakerOpened", "IncidentOpened"]),
        "alert and incident first: {seen:?}"
    );
    assert_eq!(
        seen[2..],
        order[2..],
        "then mem0 off, resolved, recorded: {seen:?}"
    );
    assert_eq!(
        mitigations_seen(&d),
        BTreeSet::from([MitigationName::BreakerMem0Off])
    );
    assert_no_warming_and_no_remediation(&d);
    d.measure(
        "time to recovery",
        between(restored, back.applied_at),
        format!(
            "mem0 back at {:+.2}s; breaker closed at {:+.2}s; flags back on the baseline at {:+.2}s",
            d.since_fault(restored),
            d.since_fault(closed),
            d.since_fault(back.applied_at)
        ),
    );
    d.measure("outage", between(outage, restored), "mem0 down");
    d.finish().await;
}

#[test]
fn circuit_breaker_auth_failure() {
    let _one_at_a_time = drill::serial();
    drill::runtime().block_on(circuit_breaker_auth_failure_drill());
}

/// mem0's API key is refused: the application's mem0 calls fail and its breaker opens. The
/// controller probes mem0 (the runbook's steps 1 and 2: health, then an authenticated call),
/// finds it up and the key refused (401), and follows the runbook's tree for it: level 2 is
/// paged at once with the instruction to rotate MEM0_API_KEY, instead of waiting out
/// `maxOpenDuration` (60s here) for an outage that will not heal. The key is rotated, the breaker
/// closes, and the incident report says what was found and what it cost.
async fn circuit_breaker_auth_failure_drill() {
    use crate::support::http::Recorder as Webhooks;
    use crate::support::mem0::{Mem0Mode, Mem0StandIn};

    let mem0 = Mem0StandIn::start(drill::MEM0_API_KEY).await;
    let hooks = Webhooks::start().await;
    let mut d = Drill::start(Setup {
        name: "circuit-breaker-auth-failure",
        redis_args: vec![],
        tier: json!({
            "breaker": {"maxOpenDuration": "60s", "probe": {
                "healthUrl": mem0.health_url(),
                "authUrl": mem0.auth_url(),
                "apiKeySecretRef": {"name": "clinic-mem0", "key": "apiKey"},
                "interval": "2s",
                "timeout": "1s",
            }},
            "notify": {"webhooks": [{"name": "oncall", "format": "Generic", "url": hooks.url("/hook")}]},
        }),
        serve_args: vec![],
        replicas: 1,
    })
    .await;
    d.skip_replay(
        "the breaker probe's findings decide the escalation and are not in Prometheus (the backtest has no probe input)",
    );
    d.start_load(LoadShape::default());
    d.wait_steady(0.0).await;
    let baseline = d.config_history()[0].data.clone();
    assert!(
        mem0.probes().is_empty(),
        "no probe while the breaker is closed"
    );

    // The key is refused: mem0 answers 401 to the authenticated call, and the app's calls fail.
    mem0.set(Mem0Mode::KeyRefused(401));
    let (refused, _) = d
        .fault("mem0 refuses the API key", json!({"mem0_outage": true}))
        .await;
    let opened = d.wait_demo_breaker("open", secs(20)).await;

    // Diagnosis: an Event, status, and level 2 paged at once.
    let diagnosed = d.wait_event("BreakerDiagnosed", secs(20)).await;
    assert_eq!(diagnosed.type_, "Warning");
    assert!(
        diagnosed.note.contains("AuthFailure") && diagnosed.note.contains("MEM0_API_KEY"),
        "{}",
        diagnosed.note
    );
    let paged = d
        .wait("the level-2 page", secs(20), |_| {
            hooks
                .requests_to("/hook")
                .into_iter()
                .find(|r| r.body["level"] == 2)
                .map(|r| r.body)
                .ok_or_else(|| format!("{} webhook calls", hooks.requests_to("/hook").len()))
        })
        .await;
    let paged_at = Timestamp::now();
    let page = paged.to_string();
    assert!(
        page.contains("fly secrets set MEM0_API_KEY=<new_key>"),
        "{page}"
    );
    assert!(page.contains("AuthFailure"), "{page}");
    let status = d
        .wait_status("the incident at level 2 in status", secs(10), |s| {
            s.incidents
                .iter()
                .any(|i| i.runbook == Runbook::CircuitBreakerOpen && i.escalation_level == 2)
                .then(|| s.clone())
        })
        .await;
    let incident = status
        .incidents
        .iter()
        .find(|i| i.runbook == Runbook::CircuitBreakerOpen)
        .expect("the incident is in status");
    assert!(
        incident
            .diagnosis
            .as_deref()
            .is_some_and(|x| x.starts_with("AuthFailure: ")),
        "{incident:?}"
    );
    let outage_since = policy(&status)
        .and_then(|m| m.breaker.outage_since)
        .expect("the outage is on record");
    assert!(
        between(outage_since, paged_at) < 30.0,
        "level 2 was paged {:.1}s after the outage began: not at once",
        between(outage_since, paged_at)
    );
    assert!(
        policy(&status).is_some_and(|m| m.breaker.mitigated_since.is_none()),
        "no 60s wait, no mitigation yet: the page came first"
    );
    d.measure(
        "detection-to-page",
        between(diagnosed.at, paged_at),
        format!(
            "breaker open (demo) at {:+.2}s, diagnosed at {:+.2}s, level 2 paged by {:+.2}s",
            d.since_fault(opened),
            d.since_fault(diagnosed.at),
            d.since_fault(paged_at)
        ),
    );

    // The outage goes on until someone rotates the key: the probe keeps finding the same, at
    // most once per interval (2s) though the controller reconciles every second, and nothing
    // else happens (no mitigation, no further page).
    tokio::time::sleep(secs(7)).await;
    let probes = mem0.probes();
    assert!(probes.len() >= 3, "{} probes in 7s", probes.len());
    for pair in probes.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= Duration::from_millis(1900), "probes {gap:?} apart");
    }

    assert_eq!(
        d.config_history().len(),
        1,
        "an auth failure changes no flag"
    );
    assert!(
        hooks
            .requests_to("/hook")
            .iter()
            .all(|r| r.body["level"].as_u64() <= Some(2)),
        "no level 3 before maxOpenDuration"
    );

    // The key is rotated: mem0 accepts the app's calls again and the breaker closes.
    mem0.set(Mem0Mode::Up);
    let (rotated, _) = d
        .fault("MEM0_API_KEY rotated", json!({"mem0_outage": false}))
        .await;
    d.wait_demo_breaker("closed", secs(30)).await;
    let report = incident_report(&d, "Circuit Breaker Open").await;
    d.attach(
        &format!("incident report ({})", drill::INCIDENTS_CONFIG_MAP),
        &report,
    );
    for line in [
        "Diagnosis by tierguard: AuthFailure: health HTTP 200; authenticated call answered HTTP 401",
        "Diagnosis AuthFailure",
        "Escalated to level 2 (senior engineer): diagnosis AuthFailure",
        "% of users affected (the canary's share of the traffic:",
        "Failed requests: ~",
        "Peak mem0 write success:",
        "### Time from detection",
    ] {
        assert!(
            report.contains(line),
            "the report lacks {line:?}:\n{report}"
        );
    }
    assert!(!report.contains("not measured"), "{report}");
    let healthy = d
        .wait_status("Healthy again", secs(40), |s| {
            (s.phase == Some(Phase::Healthy) && s.incidents.iter().all(|i| i.resolved_at.is_some()))
                .then(|| s.clone())
        })
        .await;
    assert!(healthy.mitigations.is_empty());
    let history: Vec<_> = d.config_history().into_iter().map(|v| v.data).collect();
    assert_eq!(
        history,
        vec![baseline],
        "no flag changed during the incident"
    );
    assert_no_warming_and_no_remediation(&d);
    assert_each_decision_taken_once(&d);

    // The key is nowhere: not in status, Events, webhook bodies or the controller's logs.
    let outputs = [
        ("status", serde_json::to_string(&d.status()).unwrap()),
        (
            "Events",
            d.events()
                .iter()
                .map(|e| e.note.clone())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        (
            "webhook bodies",
            hooks
                .requests_to("/hook")
                .iter()
                .map(|r| r.body.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        (
            "controller logs",
            d.all_controller_logs()
                .into_iter()
                .map(|(_, text)| text)
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        ("incident report", report.clone()),
    ];
    for (what, text) in outputs {
        assert!(
            !text.contains(drill::MEM0_API_KEY),
            "the mem0 API key appears in the {what}"
        );
    }
    d.measure(
        "outage",
        between(refused, rotated),
        "key refused until rotated",
    );
    d.finish().await;
}

// ---- Incident #2: cache stampede ------------------------------------------------------------

#[test]
fn cache_stampede() {
    let _one_at_a_time = drill::serial();
    drill::runtime().block_on(cache_stampede_drill());
}

/// Redis restarts under load on the hot clinics: a cold start. The controller warms the hot
/// clinics through the demo's warm endpoint, serves stale, lengthens the TTL to the incident TTL
/// and sheds canary load to the reduced rate; once the hit rate holds above 90% the canary ramps
/// back one step per ramp interval, and the serve-stale and TTL overlays end last.
async fn cache_stampede_drill() {
    let mut d = Drill::start(Setup {
        name: "cache-stampede",
        redis_args: vec![],
        tier: json!({}),
        serve_args: vec![],
        replicas: 1,
    })
    .await;
    d.start_load(LoadShape::default());
    d.wait_steady(95.0).await;
    let baseline = d.config_history()[0].data.clone();
    assert_eq!(baseline[CACHE_SERVE_STALE], "false");
    assert_eq!(baseline[CANARY_SAMPLE_RATE], "0.2");
    assert!(
        d.warm_calls().is_empty(),
        "nothing is warmed before the incident"
    );
    let old_run_id = d
        .status()
        .and_then(|s| s.observed?.redis_run_id)
        .expect("the controller knows Redis' run_id");

    // The cold start: same port, empty cache, new run_id, load still running.
    let restart = d.origin("Redis restarted under load (cold start: empty cache, new run_id)");
    d.redis.restart();

    // Detection as the policy records it: the step that saw the new run_id.
    let detected = d
        .wait_status("the controller to see the new run_id", secs(20), |s| {
            let o = s.observed.as_ref()?;
            let new = o.redis_run_id.as_deref().is_some_and(|id| id != old_run_id);
            let memory = policy(s)?;
            let stampede = memory.stampede.as_ref()?;
            new.then_some(stampede.started_at)
        })
        .await;
    let mitigated = d
        .wait_config(
            "serve stale, the incident TTL and the canary at the reduced rate",
            secs(20),
            |c| {
                c[CACHE_SERVE_STALE] == "true"
                    && c[CACHE_STALE_TTL] == "300"
                    && c[CACHE_TTL] == "7200"
                    && c[CANARY_SAMPLE_RATE] == "0.05"
            },
        )
        .await;
    d.measure(
        "detection-to-action",
        between(detected, mitigated.applied_at),
        format!(
            "cold start seen at {:+.2}s (no window: a restart acts at once); ConfigMap mounted at {:+.2}s",
            d.since_fault(detected),
            d.since_fault(mitigated.applied_at)
        ),
    );

    // The warm calls the demo served: the hot clinics, warmed once, after the restart. The warm-up
    // runs in the background, decided in the step that applied the mitigations (checked below).
    let warms = d
        .wait(
            "the controller's warm call served by the demo",
            secs(20),
            |d| {
                let calls = d.warm_calls();
                (!calls.is_empty())
                    .then_some(calls)
                    .ok_or("no POST /admin/cache/warm yet".to_owned())
            },
        )
        .await;
    let hot = format!("{HOT_CLINICS:?}");
    assert_eq!(warms.len(), 1, "one warm call per cold start: {warms:?}");
    assert_eq!(warms[0].1, hot, "the hot clinics are warmed: {warms:?}");
    assert!(warms[0].0 >= restart, "{warms:?}");
    let warmed_keys = d.scan("cache:clinic:*:generation:1");
    for id in HOT_CLINICS {
        assert!(
            warmed_keys.contains(&format!("cache:clinic:{id}:generation:1")),
            "clinic {id} is cached again: {warmed_keys:?}"
        );
    }
    // Its record says how it went once it has finished, under the time of the step that decided
    // it: the same step as the mitigations' render.
    let (record, render) = d
        .wait_status("the warm-up's outcome in status", secs(20), |s| {
            use tierguard::api::{ActionKind, ActionOutcome};
            let warm = s.recent_actions.iter().find(|a| {
                a.action == ActionKind::WarmCache && a.outcome != ActionOutcome::Started
            })?;
            let render = s.recent_actions.iter().find(|a| {
                a.action == ActionKind::RenderConfig && a.reason.contains("stampede-serve-stale")
            })?;
            Some((warm.clone(), render.clone()))
        })
        .await;
    assert_eq!(
        record.outcome,
        tierguard::api::ActionOutcome::Ok,
        "{record:?}"
    );
    assert_eq!(
        record.at, render.at,
        "warm-up {record:?}, render {render:?}"
    );

    // The hit rate recovers; the canary ramps back in steps; the overlays end last.
    let recovered = d
        .wait_status("the hit rate back above 90%", secs(60), |s| {
            let o = s.observed.as_ref()?;
            (o.at? > detected && o.cache_hit_rate_percent? > 90.0).then_some(o.at?)
        })
        .await;
    let back = d
        .wait_config("the ConfigMap back on the baseline", secs(90), |c| {
            *c == baseline
        })
        .await;
    let report = incident_report(&d, "Cache Stampede").await;
    assert!(report.contains("Redis cold start"), "{report}");

    // The ConfigMap history: baseline, the mitigation, the ramp steps with serve-stale and the
    // incident TTL still on, then the baseline (the last step may end the overlays too).
    let history: Vec<_> = d.config_history().into_iter().map(|v| v.data).collect();
    assert_eq!(history.first(), Some(&baseline));
    assert_eq!(history.last(), Some(&baseline));
    assert_eq!(history[1], mitigated.data, "the mitigation comes first");
    let ramp: Vec<&str> = history[1..history.len() - 1]
        .iter()
        .map(|c| {
            assert_eq!(
                c[CACHE_SERVE_STALE], "true",
                "overlays stay while ramping: {c:?}"
            );
            assert_eq!(c[CACHE_TTL], "7200", "overlays stay while ramping: {c:?}");
            c[CANARY_SAMPLE_RATE].as_str()
        })
        .collect();
    assert!(
        ramp == ["0.05", "0.1", "0.15", "0.2"] || ramp == ["0.05", "0.1", "0.15"],
        "the canary ramps back one step at a time: {ramp:?}"
    );
    // Each step waited for a ramp interval of recovered hit rate.
    let timeline = incident_timeline(&d.status().unwrap(), Runbook::CacheStampede);
    let steps: Vec<Timestamp> = timeline
        .iter()
        .filter(|(_, what)| what.starts_with("Canary ramped"))
        .map(|(at, _)| *at)
        .collect();
    assert!(steps.len() >= 2, "{timeline:#?}");
    for pair in steps.windows(2) {
        assert!(
            between(pair[0], pair[1]) >= 3.0,
            "ramp steps {:.2}s apart, less than the 3s ramp interval: {timeline:#?}",
            between(pair[0], pair[1])
        );
    }

    let healthy = d
        .wait_status("Healthy on the baseline", secs(30), |s| {
            (s.phase == Some(Phase::Healthy)).then(|| s.clone())
        })
        .await;
    assert!(healthy.mitigations.is_empty());
    assert!(
        !phases(&d).contains(&Phase::RollingBack),
        "no rollback: {:?}",
        phases(&d)
    );
    assert_eq!(
        mitigations_seen(&d),
        BTreeSet::from([
            MitigationName::StampedeServeStale,
            MitigationName::StampedeShedLoad,
            MitigationName::StampedeTtl
        ])
    );
    let order = ["CacheWarming", "CacheWarmed", "CacheStampede", "CanaryRamp"];
    assert_each_decision_taken_once(&d);
    assert_eq!(
        event_order(&d, &order).len(),
        order.len(),
        "{:?}",
        event_order(&d, &order)
    );
    assert_eq!(d.warm_calls().len(), 1, "warmed once: {:?}", d.warm_calls());
    let remediation = healthy.memory_report.unwrap_or_default().last_remediation;
    assert!(
        remediation.is_none(),
        "no Redis remediation: {remediation:?}"
    );
    d.measure(
        "time to recovery",
        between(restart, recovered),
        format!(
            "hit rate above 90% at {:+.2}s; canary back at 0.2 and overlays dropped at {:+.2}s",
            d.since_fault(recovered),
            d.since_fault(back.applied_at)
        ),
    );
    d.measure(
        "mitigations ended",
        between(restart, back.applied_at),
        "ConfigMap back on the baseline",
    );
    d.finish().await;
}

/// A bulk job that keeps invalidating `clinics` (the stampede runbook's "bulk updates trigger
/// mass invalidation"): their cache keys are unlinked every 100 ms until it is stopped.
struct BulkInvalidation {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl BulkInvalidation {
    fn start(d: &Drill, clinics: &[u32]) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut con = d.redis.client();
        let patterns: Vec<String> = clinics
            .iter()
            .map(|c| format!("cache:clinic:{c}:*"))
            .collect();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut unlinked = 0u64;
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                for pattern in &patterns {
                    let mut cursor = 0u64;
                    loop {
                        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(1000)
                            .query(&mut con)
                            .expect("SCAN");
                        if !keys.is_empty() {
                            let n: u64 = redis::cmd("UNLINK")
                                .arg(&keys)
                                .query(&mut con)
                                .expect("UNLINK");
                            unlinked += n;
                        }
                        if next == 0 {
                            break;
                        }
                        cursor = next;
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            unlinked
        });
        BulkInvalidation {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}

impl Drop for BulkInvalidation {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn hot_clinic_stampede() {
    let _one_at_a_time = drill::serial();
    drill::runtime().block_on(hot_clinic_stampede_drill());
}

/// Two hot clinics (5 and 8) lose their cache over and over to a bulk job while the other
/// clinics keep hitting: the service's P50 stays low, so its own signals never show a stampede.
/// The controller reads the cache per clinic (`sum by (clinic_id)`), sees the cold clinics carry
/// more than `stampede.clinics.trafficSharePercent` of the lookups, names them in status, the
/// Event and the incident report, and warms exactly them first; once the bulk job ends their hit
/// rate comes back and the canary ramps back.
async fn hot_clinic_stampede_drill() {
    const COLD: [u32; 2] = [5, 8];
    let mut d = Drill::start(Setup {
        name: "hot-clinic-stampede",
        redis_args: vec![],
        // The drill's traffic is a hundred requests a second over 5s windows: a clinic is judged
        // from 20 lookups (the runbook's 100 over 15 minutes, scaled like the windows).
        tier: json!({"stampede": {"clinics": {"minLookups": 20, "trafficSharePercent": 8}}}),
        serve_args: vec![],
        replicas: 1,
    })
    .await;
    d.start_load(LoadShape {
        rps: 100,
        ..LoadShape::default()
    });
    d.wait_steady(95.0).await;
    let baseline = d.config_history()[0].data.clone();
    assert!(
        d.status().unwrap().stampede_source.is_none(),
        "no stampede before the fault"
    );

    let fault = d.origin("a bulk job starts invalidating clinics 5 and 8 every 100 ms");
    let mut bulk = BulkInvalidation::start(&d, &COLD);

    let (detected, status) = d
        .wait_status("the hot-clinic stampede in status", secs(40), |s| {
            let c = s
                .conditions
                .iter()
                .find(|c| c.type_ == "CacheStampede" && c.status == "True")?;
            if c.reason != "HotClinicStampede" {
                return None;
            }
            Some((policy(s)?.stampede?.started_at, s.clone()))
        })
        .await;
    let source = status
        .stampede_source
        .clone()
        .expect("status.stampedeSource");
    assert!(source.confined, "{source:?}");
    let named: BTreeSet<String> = source
        .worst_hit_rate
        .iter()
        .take(2)
        .map(|c| c.clinic.clone())
        .collect();
    assert_eq!(
        named,
        BTreeSet::from(["5".to_owned(), "8".to_owned()]),
        "the cold clinics are the worst: {source:?}"
    );
    assert!(
        source
            .most_misses
            .iter()
            .take(2)
            .all(|c| c.clinic == "5" || c.clinic == "8"),
        "{source:?}"
    );
    // The service's own signals did not show it: the P50 stayed under stampede.p50LatencyAboveMs.
    let p50 = status
        .observed
        .as_ref()
        .and_then(|o| o.p50_latency_ms)
        .unwrap_or_default();
    assert!(
        p50 < 500.0,
        "P50 {p50} ms: the service-wide rule could have fired"
    );
    let hit = status
        .observed
        .as_ref()
        .and_then(|o| o.cache_hit_rate_percent);
    d.measure(
        "detection",
        between(fault, detected),
        format!(
            "service hit rate {} and P50 {p50:.0} ms at detection; cold clinics {:.1}% of lookups",
            hit.map_or("?".into(), |h| format!("{h:.1}%")),
            source.cold_traffic_percent
        ),
    );
    let event = d.wait_event("HotClinicStampede", secs(10)).await;
    assert!(
        event.note.contains("clinic_id=5") && event.note.contains("clinic_id=8"),
        "{}",
        event.note
    );

    // The warm call: the missing clinics first, then the configured hot ones.
    let warms = d
        .wait(
            "the controller's warm call served by the demo",
            secs(20),
            |d| {
                let calls = d.warm_calls();
                (!calls.is_empty())
                    .then_some(calls)
                    .ok_or("no POST /admin/cache/warm yet".to_owned())
            },
        )
        .await;
    assert_eq!(warms.len(), 1, "{warms:?}");
    // The order asked for, as the demo logged it.
    let requested = d.demo.log();
    let requested = requested
        .lines()
        .find(|l| l.contains("cache warm"))
        .and_then(|l| l.split("requested=[").nth(1))
        .and_then(|r| r.split(']').next())
        .unwrap_or_default()
        .to_owned();
    let ids: Vec<u32> = requested
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    assert_eq!(
        ids[..2].iter().copied().collect::<BTreeSet<u32>>(),
        BTreeSet::from(COLD),
        "the missing clinics are warmed first: {requested}"
    );
    assert_eq!(
        ids[2..],
        [1, 2, 3],
        "then the configured ones not already warmed: {requested}"
    );
    let mitigated = d
        .wait_config(
            "serve stale and the canary at the reduced rate",
            secs(20),
            |c| c[CACHE_SERVE_STALE] == "true" && c[CANARY_SAMPLE_RATE] == "0.05",
        )
        .await;
    d.measure(
        "detection-to-action",
        between(detected, mitigated.applied_at),
        "ConfigMap mounted with the stampede overlays",
    );

    // While the bulk job runs the canary stays reduced, whatever the service's average says.
    tokio::time::sleep(secs(6)).await;
    let still = d.status().unwrap();
    assert!(still.stampede_source.is_some());
    assert_eq!(
        still
            .effective
            .as_ref()
            .and_then(|e| e.canary_sample_rate.clone())
            .as_deref(),
        Some("0.05"),
        "no ramp while the hot clinics miss"
    );

    let ended = d.mark("the bulk job ends");
    let unlinked = bulk.stop();
    assert!(unlinked > 0, "the bulk job removed cache keys");
    let back = d
        .wait_config("the ConfigMap back on the baseline", secs(90), |c| {
            *c == baseline
        })
        .await;
    let report = incident_report(&d, "Cache Stampede").await;
    let diagnosis = report
        .split("## Diagnosis")
        .nth(1)
        .and_then(|r| r.split("## Root Cause").next())
        .unwrap_or_else(|| panic!("no Diagnosis section: {report}"));
    assert!(
        diagnosis.contains("most misses: clinic_id=") && diagnosis.contains("clinic_id=8"),
        "the report names the clinics: {report}"
    );
    assert!(report.contains("confined to hot clinics"), "{report}");
    d.attach("incident report", &report);
    let healthy = d
        .wait_status("Healthy on the baseline", secs(30), |s| {
            (s.phase == Some(Phase::Healthy)).then(|| s.clone())
        })
        .await;
    assert!(
        healthy.stampede_source.is_none(),
        "the source goes with the stampede"
    );
    assert!(
        !phases(&d).contains(&Phase::RollingBack),
        "{:?}",
        phases(&d)
    );
    assert_each_decision_taken_once(&d);
    d.measure(
        "time to recovery",
        between(ended, back.applied_at),
        format!(
            "from the bulk job's end to the baseline ConfigMap ({unlinked} keys unlinked by it)"
        ),
    );
    d.finish().await;
}

// ---- Incident #3: Redis out of memory -------------------------------------------------------

#[test]
fn redis_oom() {
    let _one_at_a_time = drill::serial();
    drill::runtime().block_on(redis_oom_drill());
}

/// The bytes one leaked key of [`LEAK_VALUE_BYTES`] costs Redis, before it is measured.
const LEAK_VALUE_BYTES: u64 = 4000;

/// Redis' used memory in percent of maxmemory.
fn used_percent(d: &Drill) -> f64 {
    let (used, max) = d.redis_memory();
    100.0 * used as f64 / max as f64
}

/// Leak `session:` keys without TTL (the demo's leak fault) until used memory reaches `percent`;
/// returns the keys written. `per_key` is what one key costs, learned as the fill goes.
async fn fill_to(d: &mut Drill, percent: f64, per_key: &mut f64) -> u64 {
    let mut written = 0;
    for _ in 0..10 {
        let (used, max) = d.redis_memory();
        let now = 100.0 * used as f64 / max as f64;
        if now >= percent {
            return written;
        }
        let keys = ((percent + 1.0 - now) / 100.0 * max as f64 / *per_key).ceil() as u64;
        let (_, answer) = d
            .fault(
                &format!("leak: {keys} session keys of {LEAK_VALUE_BYTES} bytes without TTL"),
                json!({"leak": {"keys": keys, "value_bytes": LEAK_VALUE_BYTES}}),
            )
            .await;
        let leak = &answer["leak"];
        assert!(leak["error"].is_null(), "the leak failed: {leak}");
        written += leak["written"].as_u64().unwrap_or(0);
        let grown = d.redis_memory().0.saturating_sub(used) as f64;
        if grown > 0.0 {
            *per_key = grown / keys as f64;
        }
    }
    panic!("used memory did not reach {percent}% after 10 leaks");
}

/// A key the remediation may delete: a session, or a cache key of a generation other than the
/// current one (2).
fn deletable(key: &str) -> bool {
    let old_generation = key.starts_with("cache:")
        && key.contains(":generation:")
        && !key.ends_with(":generation:2");
    key.starts_with("session:") || old_generation
}

/// Redis fills up with large cache values, two cache generations, sessions and leaked keys
/// without TTL under a low maxmemory (8 MB, noeviction). The controller alerts at the watch,
/// warning and critical levels; at critical it unlinks the session keys and the old generation
/// (and nothing else), audits the keys without TTL, and memory falls.
async fn redis_oom_drill() {
    let mut d = Drill::start(Setup {
        name: "redis-oom",
        redis_args: vec!["--maxmemory", "8mb", "--maxmemory-policy", "noeviction"],
        // Large values are cached only below MAX_CACHE_VALUE_SIZE.
        tier: json!({"cache": {"maxValueBytes": 500000}}),
        serve_args: vec![],
        replicas: 1,
    })
    .await;
    // Three clinics' rows grow large before traffic starts, so both generations hold them.
    d.fault(
        "large values: clinics 11, 12, 13 grow by 150 kB",
        json!({"large_values": {"clinic_ids": [11, 12, 13], "bytes": 150000}}),
    )
    .await;
    d.start_load(LoadShape::default());
    d.wait_steady(0.0).await;
    let baseline = d.config_history()[0].data.clone();
    let large = |generation: u32| -> BTreeSet<String> {
        [11, 12, 13]
            .iter()
            .map(|id| format!("cache:clinic:{id}:generation:{generation}"))
            .collect()
    };
    d.wait("the large values cached in generation 1", secs(30), |d| {
        let cached = d.scan("cache:clinic:*:generation:1");
        large(1)
            .is_subset(&cached)
            .then_some(())
            .ok_or(format!("{} generation-1 keys", cached.len()))
    })
    .await;

    // A new cache generation: the old one stays in Redis until it expires (an hour).
    d.mark("POST /admin/cache/invalidate: generation 2 (generation 1 stays until it expires)");
    d.admin_post("/admin/cache/invalidate", json!({})).await;
    d.fault(
        "sessions written without TTL",
        json!({"sessions_without_ttl": true}),
    )
    .await;
    d.wait(
        "the large values in generation 2 and sessions without TTL",
        secs(30),
        |d| {
            let cached = d.scan("cache:clinic:*:generation:2");
            let leaked = d.without_ttl("session:*").len();
            (large(2).is_subset(&cached) && leaked >= 10)
                .then_some(())
                .ok_or(format!(
                    "{} generation-2 keys, {leaked} sessions without TTL",
                    cached.len()
                ))
        },
    )
    .await;
    // Traffic drains: from here only the faults write, so every key can be accounted for.
    d.stop_load();
    d.fault(
        "leak: 40 tmp:* keys without TTL (not a pattern remediation may delete)",
        json!({"leak": {"keys": 40, "value_bytes": 200, "prefix": "tmp:"}}),
    )
    .await;
    assert_eq!(
        d.status().unwrap().memory_report.unwrap().level,
        Some(MemoryLevel::Ok)
    );

    // Watch, then warning: alerts only.
    let mut per_key = 4200.0;
    for (percent, level, event) in [
        (72.0, MemoryLevel::Watch, "MemoryWatch"),
        (82.0, MemoryLevel::Warning, "MemoryWarning"),
    ] {
        fill_to(&mut d, percent, &mut per_key).await;
        d.wait_status(&format!("the level {level:?}"), secs(15), |s| {
            (s.memory_report.as_ref()?.level? == level).then_some(())
        })
        .await;
        d.wait_event(event, secs(15)).await;
    }
    assert!(
        d.scan("session:*").len() > 500,
        "the sessions are still there"
    );
    assert!(
        d.status()
            .unwrap()
            .memory_report
            .unwrap()
            .last_remediation
            .is_none(),
        "nothing is deleted below the critical level"
    );

    // Critical: one more leak past 90 %, then the remediation.
    let before = d.scan("*");
    let keys =
        ((93.0 - used_percent(&d)) / 100.0 * d.redis_memory().1 as f64 / per_key).ceil() as u64;
    // The push lands just after one of the controller's ticks, not within a scrape interval
    // before one: the controller reads Redis itself and its remediation erases the episode at
    // once, so a crossing the exporter had not yet been scraped for would leave the replay of
    // the drill (tests/it/support/drill/fidelity.rs) one reading short of the critical hold.
    let tick = d.status().and_then(|s| policy(&s)?.last_tick);
    d.wait_status("the controller's next tick", secs(5), |s| {
        (policy(s)?.last_tick != tick).then_some(())
    })
    .await;
    let (pushed, answer) = d
        .fault(
            &format!("leak: {keys} session keys of {LEAK_VALUE_BYTES} bytes without TTL"),
            json!({"leak": {"keys": keys, "value_bytes": LEAK_VALUE_BYTES}}),
        )
        .await;
    assert!(answer["leak"]["error"].is_null(), "{answer}");
    let leaked_last = answer["leak"]["written"].as_u64().unwrap();
    let remediated = d
        .wait_status("the remediation at the critical level", secs(20), |s| {
            s.memory_report.as_ref()?.last_remediation.clone()
        })
        .await;
    // The step that saw the critical level decided the remediation at `remediated.at`; the
    // remediation's Event is published when it has finished.
    let critical_at = remediated.at;
    let unlinked_at = d.wait_event("RedisRemediated", secs(10)).await.at;
    assert!(remediated.error.is_none(), "{remediated:?}");
    assert!(
        !remediated.budget_exhausted && !remediated.dry_run,
        "{remediated:?}"
    );

    // Exactly the deletable keys went, and nothing else.
    let after = d.scan("*");
    let kept: BTreeSet<String> = before.iter().filter(|k| !deletable(k)).cloned().collect();
    assert_eq!(
        after, kept,
        "after the remediation: exactly the keys that may not be deleted"
    );
    let sessions_before = before.iter().filter(|k| k.starts_with("session:")).count() as u64;
    let old_generation = before
        .iter()
        .filter(|k| deletable(k) && !k.starts_with("session:"))
        .count() as u64;
    assert!(old_generation > large(1).len() as u64, "{old_generation}");
    assert!(large(1).iter().all(|k| !after.contains(k)));
    assert!(large(2).is_subset(&after), "the current generation stays");
    assert!(after.contains("cache:current_generation"));
    assert_eq!(after.iter().filter(|k| k.starts_with("tmp:")).count(), 40);
    assert_eq!(
        remediated.deleted_by_pattern,
        BTreeMap::from([
            ("session:*".to_owned(), sessions_before + leaked_last),
            ("cache:*:generation:{generation}".to_owned(), old_generation),
        ]),
        "deleted, by pattern"
    );

    // The audit reports what has no TTL and survived: the tmp:* leak and the generation key. It
    // runs as a background job after the remediation and reaches status at a later reconcile: on
    // a loaded machine that took more than 10 s once.
    let audit = d
        .wait_status("the key audit", secs(30), |s| {
            s.memory_report.as_ref()?.last_audit.clone()
        })
        .await;
    assert_eq!(
        audit.without_ttl_by_prefix.get("tmp"),
        Some(&40),
        "{audit:?}"
    );
    assert_eq!(
        audit.without_ttl_by_prefix.get("session"),
        None,
        "{audit:?}"
    );
    let largest: Vec<&str> = audit.largest_keys.iter().map(|k| k.key.as_str()).collect();
    for key in large(2) {
        assert!(
            largest.contains(&key.as_str()),
            "{key} among the largest: {largest:?}"
        );
    }

    // Memory falls; the levels come down; the incident is recorded.
    let recovered = d
        .wait_status("memory back below the watch level", secs(30), |s| {
            let level = s.memory_report.as_ref()?.level?;
            let o = s.observed.as_ref()?;
            (level == MemoryLevel::Ok && o.redis_used_memory_percent? < 65.0).then_some(o.at?)
        })
        .await;
    let report = incident_report(&d, "Redis Memory").await;
    assert!(
        report.contains("Remediation and key audit requested"),
        "{report}"
    );
    d.wait_status("Healthy", secs(30), |s| {
        (s.phase == Some(Phase::Healthy)).then_some(())
    })
    .await;

    // The critical alert and the decision to remediate and audit come first, then what the
    // remediation did.
    let order = [
        "MemoryWatch",
        "MemoryWarning",
        "MemoryCritical",
        "RedisRemediation",
        "RedisRemediated",
    ];
    assert_each_decision_taken_once(&d);
    assert_eq!(
        event_order(&d, &order),
        order,
        "levels, then remediation and audit"
    );
    let critical = d.event("MemoryCritical").expect("the critical alert");
    let remediated_event = d.event("RedisRemediated").unwrap();
    assert!(
        between(remediated_event.at, critical.at).abs() < 1.0,
        "alert and remediation in one step: {critical:?} {remediated_event:?}"
    );
    assert_eq!(critical.type_, "Warning");
    let runs = d
        .status()
        .unwrap()
        .recent_actions
        .iter()
        .filter(|a| a.action == tierguard::api::ActionKind::RemediateRedis)
        .count();
    assert_eq!(runs, 1, "one remediation (cooldown 60s)");
    assert_eq!(
        d.config_history().len(),
        1,
        "memory incidents change no flags: {:?}",
        d.config_history()
    );
    assert_eq!(d.config_history()[0].data, baseline);
    assert!(d.warm_calls().is_empty(), "{:?}", d.warm_calls());
    d.measure(
        "detection-to-action",
        between(critical_at, unlinked_at),
        format!(
            "pushed past 90% at {:+.2}s; critical level seen at {:+.2}s (no window); keys unlinked by {:+.2}s: {} session keys and {} old-generation keys, {} kept",
            d.since_fault(pushed),
            d.since_fault(critical_at),
            d.since_fault(unlinked_at),
            sessions_before + leaked_last,
            old_generation,
            after.len()
        ),
    );
    d.measure(
        "time to recovery",
        between(pushed, recovered),
        format!(
            "pushed past 90% at {:+.2}s; memory below 65% and level ok at {:+.2}s",
            d.since_fault(pushed),
            d.since_fault(recovered)
        ),
    );
    d.finish().await;
}

// ---- Canary rollback ------------------------------------------------------------------------

/// The canary drills' load: at a 10% canary, about 4 canary requests a second, 20 per 5s rate
/// window, above the drills' `minRequests` of 10.
const CANARY_DRILL_RPS: u32 = 40;

#[test]
fn canary_aa() {
    let _one_at_a_time = drill::serial();
    drill::runtime().block_on(canary_aa_drill());
}

/// An A/A canary: 10% of the traffic on the canary path, the same code and no fault, for several
/// minutes of the controller judging both cohorts every second. Nothing may be rolled back, and
/// status must show both cohorts with the canary's traffic counted.
async fn canary_aa_drill() {
    let mut d = Drill::start(Setup {
        name: "canary-aa",
        redis_args: vec![],
        tier: json!({"canary": {"sampleRate": 0.1}}),
        serve_args: vec![],
        replicas: 1,
    })
    .await;
    d.start_load(LoadShape {
        rps: CANARY_DRILL_RPS,
        ..LoadShape::default()
    });
    d.wait_steady(97.0).await;
    let watched = d.mark("A/A: judging both cohorts");
    let judged_for = secs(AA_DRILL_SECONDS);
    let until = std::time::Instant::now() + judged_for;
    let mut cohorts_seen = 0u32;
    while std::time::Instant::now() < until {
        tokio::time::sleep(secs(5)).await;
        let status = d.status().expect("a status");
        assert_ne!(
            status.phase,
            Some(Phase::RollingBack),
            "an A/A canary was rolled back: {:?}",
            status.mitigations
        );
        if let Some(c) = status.observed.as_ref().and_then(|o| o.cohorts.as_ref())
            && c.canary.requests.is_some_and(|n| n > 0.0)
            && c.stable
                .requests
                .is_some_and(|n| n > c.canary.requests.unwrap_or(0.0))
        {
            cohorts_seen += 1;
        }
    }
    assert!(
        cohorts_seen >= (AA_DRILL_SECONDS / 5 / 2) as u32,
        "status showed both cohorts' traffic in only {cohorts_seen} of {} looks",
        AA_DRILL_SECONDS / 5
    );
    let history: Vec<_> = d.config_history().into_iter().map(|v| v.data).collect();
    assert_eq!(
        history.len(),
        1,
        "the config changed during an A/A canary: {history:?}"
    );
    assert!(
        d.event("CanaryRollback").is_none(),
        "a CanaryRollback Event during an A/A canary"
    );
    assert_eq!(phases(&d), vec![Phase::Healthy], "phases");
    let done = d.mark("A/A: done");
    d.measure(
        "A/A canary judged without a rollback",
        between(watched, done),
        format!("{CANARY_DRILL_RPS} requests/s at a 10% canary, P50 and the error test every 1s"),
    );
    d.finish().await;
}

/// How long the A/A drill judges: with 5s rate windows and a 1s interval, three minutes are 36
/// error-test batches and 180 P50 samples of each cohort.
const AA_DRILL_SECONDS: u64 = 180;

#[test]
fn canary_regression() {
    let _one_at_a_time = drill::serial();
    drill::runtime().block_on(canary_regression_drill());
}

/// A regression ships with the canary: 1.2 s added to canary requests only, at the runbooks' 10%
/// canary, so the service's P50 stays far below 1000 ms while the canary cohort's crosses it.
/// After `rollback.p50LatencyFor` (6s) of the canary's P50 above it, phase 1 puts the canary
/// at the reduced rate, holds `rollback.phaseHold` (4s), then goes to 0 and phase 2 switches the
/// features off; phase 3 verifies the signals for the hold, and phase 4 writes the incident
/// report. The tier stays rolled back until a human resumes it.
async fn canary_regression_drill() {
    let mut d = Drill::start(Setup {
        name: "canary-regression",
        redis_args: vec![],
        tier: json!({"canary": {"sampleRate": 0.1}}),
        serve_args: vec![],
        replicas: 1,
    })
    .await;
    d.start_load(LoadShape {
        rps: CANARY_DRILL_RPS,
        ..LoadShape::default()
    });
    // A warm cache first: a slow P50 with a cold cache would be a stampede, not a regression.
    d.wait_steady(97.0).await;
    let baseline = d.config_history()[0].data.clone();
    assert_eq!(baseline[CANARY_SAMPLE_RATE], "0.1");

    let (fault, _) = d
        .fault(
            "1200 ms added to canary requests",
            json!({"request_latency_ms": 1200, "request_latency_scope": "canary"}),
        )
        .await;
    // The breach as the policy counts it: the start of the P50 window that led to the rollback.
    let breach_start = d
        .wait_status(
            "P50 above 1000 ms in the controller's window",
            secs(30),
            |s| {
                let memory = policy(s)?;
                let w = &memory.windows.p50_latency;
                let last = w.last_sample_at?;
                Some(last - SignedDuration::try_from(w.held_for.as_std()).ok()?)
            },
        )
        .await;

    // Phase 1: the reduced rate, and nothing else.
    let phase1 = d
        .wait_config("phase 1: the canary at 0.05", secs(30), |c| {
            c[CANARY_SAMPLE_RATE] == "0.05"
        })
        .await;
    let window_closed = plus(breach_start, secs(6));
    assert!(
        phase1.applied_at >= window_closed,
        "phase 1 at {} before P50 had been above 1000 ms for 6s (from {breach_start})",
        phase1.applied_at
    );
    let mut expected1 = baseline.clone();
    expected1.insert(CANARY_SAMPLE_RATE.into(), "0.05".into());
    assert_eq!(
        phase1.data, expected1,
        "phase 1 changes only the canary rate"
    );
    // The decision is the canary cohort's, beside the stable cohort's figure, and the service
    // as a whole never crossed the threshold.
    let decided = d.event("CanaryRollback").expect("a CanaryRollback Event");
    assert!(
        decided.note.contains("canary P50 latency") && decided.note.contains("(stable cohort "),
        "the reason names the canary cohort and the stable cohort's figure: {}",
        decided.note
    );
    let service_p50 = d
        .statuses()
        .into_iter()
        .filter_map(|s| s.status.observed?.p50_latency_ms)
        .fold(0.0f64, f64::max);
    assert!(
        service_p50 < 1000.0,
        "the service's P50 reached {service_p50} ms: the drill would not show that the canary is judged on its own"
    );
    d.measure(
        "detection-to-action",
        between(window_closed, phase1.applied_at),
        format!(
            "P50 above 1000 ms from {:+.2}s, window of 6s closed at {:+.2}s; phase 1 mounted at {:+.2}s",
            d.since_fault(breach_start),
            d.since_fault(window_closed),
            d.since_fault(phase1.applied_at)
        ),
    );

    // Phase 1 holds, then the canary goes to 0 and phase 2 switches the features off.
    let phase2 = d
        .wait_config("phase 2: canary 0.0 and the features off", secs(30), |c| {
            c[CANARY_SAMPLE_RATE] == "0.0"
                && c[FAST_PATH_ENABLED] == "false"
                && c[MEM0_READS_ENABLED] == "false"
                && c[MEM0_SHADOW_MODE] == "false"
        })
        .await;
    d.wait("the runbook's phase 3 check in the demo's log", secs(10), |d| {
        let line = "Feature flags loaded: fast_path=False, mem0_reads=False, mem0_shadow=False, canary_sample_rate=0";
        d.demo.log().contains(line).then_some(()).ok_or(format!("no {line:?} yet"))
    })
    .await;

    // Phase 3 verifies, phase 4 documents; the tier stays rolled back.
    let rolled_back = d
        .wait_status("phase 4: RolledBack", secs(40), |s| {
            (s.phase == Some(Phase::RolledBack)).then(|| s.clone())
        })
        .await;
    let report = incident_report(&d, "Canary Rollback").await;
    d.attach(
        &format!("incident report ({})", drill::INCIDENTS_CONFIG_MAP),
        &report,
    );
    for line in [
        "Anomaly detected: canary P50 latency",
        "Rollback initiated: traffic reduced to 0.05",
        "Traffic reduced to 0.0",
        "Features disabled: FAST_PATH_ENABLED, MEM0_READS_ENABLED, MEM0_SHADOW_MODE = false",
        "System stable",
        "Re-deployment plan approved",
    ] {
        assert!(
            report.contains(line),
            "the report lacks {line:?}:\n{report}"
        );
    }
    let timeline = incident_timeline(&rolled_back, Runbook::CanaryRollback);
    let initiated = entry_at(&timeline, "Rollback initiated");
    let reduced_to_zero = entry_at(&timeline, "Traffic reduced to 0.0");
    let stable = entry_at(&timeline, "System stable");
    assert!(
        between(initiated, reduced_to_zero) >= 4.0,
        "phase 1 held {:.2}s, less than phaseHold 4s",
        between(initiated, reduced_to_zero)
    );
    assert!(
        between(reduced_to_zero, stable) >= 4.0,
        "phase 3 verified after {:.2}s, less than phaseHold 4s",
        between(reduced_to_zero, stable)
    );

    // The signals are back within bounds, on the rolled-back config.
    let recovered = d
        .statuses()
        .into_iter()
        .find_map(|s| {
            let o = s.status.observed?;
            (o.at? > phase1.applied_at && o.p50_latency_ms? < 1000.0).then_some(o.at?)
        })
        .expect("P50 back under 1000 ms after phase 1");
    let p50 = rolled_back.observed.as_ref().and_then(|o| o.p50_latency_ms);
    assert!(p50.is_some_and(|p| p < 1000.0), "P50 {p50:?}");

    let history: Vec<_> = d.config_history().into_iter().map(|v| v.data).collect();
    assert_eq!(
        history,
        vec![baseline, expected1, phase2.data.clone()],
        "ConfigMap history: baseline, phase 1, phase 2"
    );
    assert_eq!(
        phases(&d),
        vec![Phase::Healthy, Phase::RollingBack, Phase::RolledBack],
        "phases"
    );
    assert_eq!(
        mitigations_seen(&d),
        BTreeSet::from([
            MitigationName::RollbackCanary,
            MitigationName::RollbackFeatures
        ])
    );
    let order = [
        "CanaryRollback",
        "IncidentOpened",
        "IncidentResolved",
        "IncidentRecorded",
    ];
    assert_each_decision_taken_once(&d);
    assert_eq!(event_order(&d, &order), order);
    assert_no_warming_and_no_remediation(&d);
    d.measure(
        "time to recovery",
        between(fault, recovered),
        format!(
            "regression at +0.00s; P50 back under 1000 ms at {:+.2}s; features off at {:+.2}s; verified and documented at {:+.2}s",
            d.since_fault(recovered),
            d.since_fault(phase2.applied_at),
            d.since_fault(stable)
        ),
    );
    d.finish().await;
}
