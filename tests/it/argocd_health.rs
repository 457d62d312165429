//! The Argo CD health check of docs/argocd-health.md (deploy/argocd/memorytier-health.lua), run by
//! a real Lua interpreter (Debian's lua5.4 with dkjson) against MemoryTiers in every phase. The
//! tiers' status is what the controller writes: the policy's decisions applied to status as a
//! reconcile applies them, over a virtual clock.
//!
//! The doc's table of what Argo CD shows is read here and must agree with what the script says,
//! and the doc must carry the script as it is in deploy/argocd.

use std::path::Path;
use std::process::{Command, Stdio};

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use tierguard::api::{BreakerState, MemoryTier, MemoryTierStatus, Mode, Observation, Phase};
use tierguard::policy::{AppliedConfig, DecideContext};

const SCRIPT: &str = "deploy/argocd/memorytier-health.lua";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn lua() -> std::path::PathBuf {
    ["/usr/bin/lua5.4", "/usr/local/bin/lua5.4"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("lua5.4 is missing: run scripts/test (it installs lua5.4 and lua-dkjson)")
        })
}

/// What Argo CD would show: the script run with `obj` set, as Argo CD runs it.
fn health(tier: &Value) -> (String, String) {
    let runner = r#"
local json = require("dkjson")
local input = io.read("a")
obj = json.decode(input)
local check = assert(loadfile(arg[1]))
local hs = check()
io.write(json.encode({ status = hs.status, message = hs.message }))
"#;
    let dir = tempfile::tempdir().unwrap();
    let runner_file = dir.path().join("runner.lua");
    std::fs::write(&runner_file, runner).unwrap();
    let mut child = Command::new(lua())
        .arg(&runner_file)
        .arg(root().join(SCRIPT))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lua5.4");
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        tier.to_string().as_bytes(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the health script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hs: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (
        hs["status"].as_str().unwrap_or_default().to_owned(),
        hs["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The drills' scale: seconds where production has minutes.
fn tier(mode: Mode) -> MemoryTier {
    let mut tier = crate::support::tiers::tier(
        "backend",
        "clinic",
        json!({
            "canary": {"rampInterval": "2s"},
            "rollback": {"p50LatencyFor": "3s", "phaseHold": "2s"},
            "stampede": {"for": "2s"},
        }),
    );
    tier.metadata.generation = Some(1);
    tier.spec.mode = mode;
    tier
}

fn healthy() -> Observation {
    Observation {
        p50_latency_ms: Some(80.0),
        p95_latency_ms: Some(200.0),
        p99_latency_ms: Some(300.0),
        error_rate_percent: Some(0.2),
        cache_hit_rate_percent: Some(99.0),
        mem0_write_success_percent: Some(100.0),
        breaker_state: Some(BreakerState::Closed),
        redis_used_memory_percent: Some(40.0),
        redis_evicted_keys: Some(0),
        redis_run_id: Some("run-1".into()),
        redis_uptime_seconds: Some(1000),
        ..Observation::default()
    }
}

/// Reconciles every second, as the controller does, until `done` holds for the status.
struct Reconciler {
    tier: MemoryTier,
    status: MemoryTierStatus,
    now: Timestamp,
    resume: Option<String>,
}

impl Reconciler {
    fn new(tier: MemoryTier) -> Self {
        Reconciler {
            tier,
            status: MemoryTierStatus::default(),
            now: "2026-12-01T00:00:00Z".parse().unwrap(),
            resume: None,
        }
    }

    fn run_until(
        &mut self,
        observation: &Observation,
        what: &str,
        done: impl Fn(&MemoryTierStatus) -> bool,
    ) -> &mut Self {
        for _ in 0..120 {
            let ctx = DecideContext {
                generation: self.tier.metadata.generation,
                resume_token: self.resume.clone(),
                applied: AppliedConfig::Unknown,
                last_audit: None,
            };
            self.status = tierguard::controller::status::decided(
                &self.status,
                &self.tier.spec,
                observation,
                &ctx,
                self.now,
            );
            self.now += SignedDuration::from_secs(1);
            if done(&self.status) {
                return self;
            }
        }
        panic!("never reached {what}: {:?}", self.status.phase);
    }

    fn object(&self) -> Value {
        let mut tier = self.tier.clone();
        tier.status = Some(self.status.clone());
        serde_json::to_value(&tier).unwrap()
    }
}

fn phase_is(phase: Phase) -> impl Fn(&MemoryTierStatus) -> bool {
    move |s| s.phase == Some(phase)
}

/// Every case of the doc's table, as the controller would leave the tier.
fn cases() -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    let mut bare = tier(Mode::Enforce);
    bare.status = None;
    out.push(("no status", serde_json::to_value(&bare).unwrap()));
    let mut pending = tier(Mode::Enforce);
    pending.status = Some(MemoryTierStatus {
        phase: Some(Phase::Pending),
        ..MemoryTierStatus::default()
    });
    out.push(("Pending", serde_json::to_value(&pending).unwrap()));

    let mut r = Reconciler::new(tier(Mode::Enforce));
    r.run_until(&healthy(), "Healthy", phase_is(Phase::Healthy));
    out.push(("Healthy", r.object()));
    let mut behind = r.object();
    behind["metadata"]["generation"] = json!(2);
    out.push(("observedGeneration behind", behind));

    // Redis at the watch level: watched, nothing mitigated.
    let mut watch = healthy();
    watch.redis_used_memory_percent = Some(75.0);
    let mut r = Reconciler::new(tier(Mode::Enforce));
    r.run_until(&healthy(), "Healthy", phase_is(Phase::Healthy));
    r.run_until(&watch, "Degraded without a mitigation", |s| {
        s.phase == Some(Phase::Degraded) && s.mitigations.is_empty()
    });
    out.push(("Degraded, no mitigation", r.object()));

    // A cache stampede: serve stale, a longer TTL and a lower canary are in force.
    let mut stampede = healthy();
    stampede.cache_hit_rate_percent = Some(60.0);
    stampede.p50_latency_ms = Some(700.0);
    let mut r = Reconciler::new(tier(Mode::Enforce));
    r.run_until(&healthy(), "Healthy", phase_is(Phase::Healthy));
    r.run_until(&stampede, "Degraded with mitigations", |s| {
        s.phase == Some(Phase::Degraded) && !s.mitigations.is_empty()
    });
    out.push(("Degraded, mitigation in force", r.object()));

    // A latency regression: the canary rollback, verified, then resumed and ramping back.
    let mut slow = healthy();
    slow.p50_latency_ms = Some(1500.0);
    let mut r = Reconciler::new(tier(Mode::Enforce));
    r.run_until(&healthy(), "Healthy", phase_is(Phase::Healthy));
    r.run_until(&slow, "RollingBack", phase_is(Phase::RollingBack));
    out.push(("RollingBack", r.object()));
    r.run_until(&healthy(), "RolledBack", phase_is(Phase::RolledBack));
    out.push(("RolledBack", r.object()));
    r.resume = Some("2026-12-01T01:00:00Z".into());
    r.run_until(&healthy(), "Recovering", phase_is(Phase::Recovering));
    out.push(("Recovering", r.object()));

    let mut r = Reconciler::new(tier(Mode::Paused));
    r.run_until(&healthy(), "Paused", phase_is(Phase::Paused));
    out.push(("Paused", r.object()));

    // DryRun decides the rollback and carries none of it out.
    let mut r = Reconciler::new(tier(Mode::DryRun));
    r.run_until(&healthy(), "Healthy (DryRun)", phase_is(Phase::Healthy));
    r.run_until(&slow, "RollingBack (DryRun)", phase_is(Phase::RollingBack));
    out.push(("DryRun", r.object()));

    // An invalid spec, as the controller stalls it.
    let mut r = Reconciler::new(tier(Mode::Enforce));
    r.run_until(&healthy(), "Healthy", phase_is(Phase::Healthy));
    let now = r.now;
    r.status = tierguard::controller::status::stalled(
        &r.status,
        tierguard::api::Reason::InvalidSpec,
        "spec.canary.reducedRate: reducedRate must not exceed sampleRate",
        Some(1),
        now,
    );
    out.push(("Stalled", r.object()));
    out
}

/// The doc's table: first column the case, second what Argo CD shows.
fn documented() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(root().join("docs/argocd-health.md")).unwrap();
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in doc.lines() {
        if line.starts_with("| the tier |") {
            in_table = true;
            continue;
        }
        if in_table {
            if !line.starts_with('|') {
                break;
            }
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            if cells[0].starts_with("---") {
                continue;
            }
            rows.push((cells[0].trim_matches('`').to_owned(), cells[1].to_owned()));
        }
    }
    rows
}

#[test]
fn argo_cd_shows_what_the_doc_says_in_every_phase() {
    let table = documented();
    let cases = cases();
    let documented_cases: Vec<&str> = table.iter().map(|(c, _)| c.as_str()).collect();
    let tested_cases: Vec<&str> = cases.iter().map(|(c, _)| *c).collect();
    assert_eq!(
        documented_cases, tested_cases,
        "docs/argocd-health.md's table and this test must list the same cases"
    );
    let mut wrong = Vec::new();
    for ((case, tier), (_, expected)) in cases.iter().zip(&table) {
        let (status, message) = health(tier);
        assert!(!message.is_empty(), "{case}: the health has no message");
        if &status != expected {
            wrong.push(format!(
                "{case}: Argo CD shows {status} ({message}), the doc says {expected}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn mitigations_and_the_reason_reach_the_message() {
    let cases = cases();
    let get = |name: &str| &cases.iter().find(|(c, _)| *c == name).unwrap().1;
    let (_, message) = health(get("Degraded, mitigation in force"));
    assert!(message.contains("stampede-serve-stale"), "{message}");
    let (_, message) = health(get("Stalled"));
    assert!(message.contains("spec.canary.reducedRate"), "{message}");
    let (_, message) = health(get("Degraded, no mitigation"));
    assert!(message.contains("MemoryPressure"), "{message}");
}

#[test]
fn the_doc_carries_the_script_as_it_is() {
    let doc = std::fs::read_to_string(root().join("docs/argocd-health.md")).unwrap();
    let script = std::fs::read_to_string(root().join(SCRIPT)).unwrap();
    let indented: String = script
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_owned()
            } else {
                format!("    {l}\n")
            }
        })
        .collect();
    assert!(
        doc.contains(&indented),
        "docs/argocd-health.md must hold {SCRIPT} verbatim (indented by four spaces in the argocd-cm block)"
    );
}
