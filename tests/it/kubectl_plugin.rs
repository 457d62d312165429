//! `kubectl tierguard`: the tierguard binary installed as `kubectl-tierguard` on PATH, run by the
//! real kubectl (kubectl finds plugins by that name) against the in-process API server through a
//! kubeconfig. Also `tierguard version`, `tierguard completions` and the start-up check of the
//! log level.

use crate::support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use kube_testserver::ApiServer;
use serde_json::{Value, json};
use tierguard::act::report::{ReportContext, record_incident};
use tierguard::api::{
    BreakerState, MemoryTier, MemoryTierStatus, Mode, Observation, Phase, RESUME_ANNOTATION,
};
use tierguard::policy::{AppliedConfig, DecideContext};

const NS: &str = "clinic";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn kubectl() -> PathBuf {
    let local = root().join(".tools/bin/kubectl");
    if local.exists() {
        local
    } else {
        support::servers::require_binary("kubectl")
    }
}

/// A directory holding `kubectl-tierguard`, a link to the binary cargo built, as `ln -s` installs
/// the plugin.
struct Plugin {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Plugin {
    fn install(server: &ApiServer) -> Plugin {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_tierguard"),
            dir.path().join("kubectl-tierguard"),
        )
        .unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig_as(&kubeconfig, "someone").unwrap();
        Plugin { dir, kubeconfig }
    }

    fn command(&self, args: &[&str]) -> Command {
        let path = std::env::join_paths(std::iter::once(self.dir.path().to_owned()).chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))
        .unwrap();
        let mut command = Command::new(kubectl());
        command
            .arg("tierguard")
            .args(args)
            .args(["-n", NS, "--kubeconfig"])
            .arg(&self.kubeconfig)
            .env("PATH", path)
            .env_remove("KUBECONFIG");
        command
    }

    /// `kubectl tierguard ARGS`, off the async runtime.
    async fn run(&self, args: &[&str]) -> Output {
        let mut command = self.command(args);
        tokio::task::spawn_blocking(move || command.output().expect("run kubectl"))
            .await
            .unwrap()
    }
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "kubectl tierguard failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn tier(name: &str, mode: Mode) -> MemoryTier {
    let mut tier = crate::support::tiers::tier(
        name,
        NS,
        json!({"rollback": {"p50LatencyFor": "3s", "phaseHold": "2s"}}),
    );
    tier.spec.mode = mode;
    tier
}

fn observation(p50: f64) -> Observation {
    Observation {
        p50_latency_ms: Some(p50),
        error_rate_percent: Some(0.5),
        cache_hit_rate_percent: Some(98.0),
        mem0_write_success_percent: Some(99.5),
        breaker_state: Some(BreakerState::Closed),
        redis_used_memory_percent: Some(42.0),
        redis_evicted_keys: Some(0),
        ..Observation::default()
    }
}

/// The status the controller's policy writes after a latency regression: a rollback under way,
/// with its mitigation and incident.
fn rolling_back(tier: &MemoryTier) -> MemoryTierStatus {
    let mut status = MemoryTierStatus::default();
    let mut now: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
    for p50 in [80.0, 80.0, 1500.0, 1500.0, 1500.0, 1500.0, 1500.0] {
        let ctx = DecideContext {
            generation: tier.metadata.generation,
            resume_token: None,
            applied: AppliedConfig::Unknown,
            last_audit: None,
        };
        let obs = observation(p50);
        status = tierguard::controller::status::decided(&status, &tier.spec, &obs, &ctx, now);
        now += SignedDuration::from_secs(1);
    }
    assert_eq!(status.phase, Some(Phase::RollingBack));
    status
}

async fn create(client: &Client, tier: &MemoryTier) -> MemoryTier {
    Api::<MemoryTier>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), tier)
        .await
        .unwrap()
}

async fn set_status(client: &Client, name: &str, status: &MemoryTierStatus) {
    Api::<MemoryTier>::namespaced(client.clone(), NS)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await
        .unwrap();
}

async fn get(client: &Client, name: &str) -> MemoryTier {
    Api::<MemoryTier>::namespaced(client.clone(), NS)
        .get(name)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_phase_signals_against_thresholds_mitigations_and_incidents() {
    tierguard::install_crypto_provider();
    let server = support::api_server().await;
    let client = server.client();
    let created = create(&client, &tier("backend", Mode::Enforce)).await;
    let status = rolling_back(&created);
    set_status(&client, "backend", &status).await;
    let plugin = Plugin::install(&server);

    let text = stdout(&plugin.run(&["status", "backend"]).await);
    for wanted in [
        "MemoryTier clinic/backend (mode Enforce)",
        "Phase:      RollingBack",
        "Ready:      False (RollingBack)",
        "rollback above 1000: BREACHED",
        "stampede below 95: ok",
        "watch above 70: ok",
        "rollback-canary since 2026-12-01T00:00:",
        "why:     canary rollback phase 1: P50 latency 1500 ms above 1000 ms",
        "sets:    CANARY_SAMPLE_RATE=0.05",
        "ends:    phase 1 holds 2s",
        "canary-rollback (CanaryRollback, level 1): open for",
    ] {
        assert!(text.contains(wanted), "{wanted:?} missing from:\n{text}");
    }
    let p50 = text
        .lines()
        .find(|l| l.trim_start().starts_with("p50LatencyMs"))
        .unwrap();
    assert!(p50.contains("1500 ms"), "{p50}");

    // --watch prints the status again at each change.
    let mut command = plugin.command(&["status", "backend", "--watch"]);
    let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
    let reader = BufReader::new(child.stdout.take().unwrap());
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let wait_line = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(100)) {
                if line.contains(needle) {
                    return;
                }
                seen.push(line);
            }
        }
        panic!(
            "--watch never printed {needle:?}; printed:\n{}",
            seen.join("\n")
        );
    };
    wait_line("Phase:      RollingBack");
    let mut next = status.clone();
    next.phase = Some(Phase::RolledBack);
    set_status(&client, "backend", &next).await;
    wait_line("---");
    wait_line("Phase:      RolledBack");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_pause_unpause_and_report_steer_the_tier() {
    tierguard::install_crypto_provider();
    let server = support::api_server().await;
    let client = server.client();
    let created = create(&client, &tier("backend", Mode::Enforce)).await;
    create(&client, &tier("trial", Mode::DryRun)).await;
    let mut gitops = tier("gitops", Mode::Paused);
    gitops.metadata.name = Some("gitops".into());
    create(&client, &gitops).await;
    let plugin = Plugin::install(&server);

    // resume: a new value of the resume annotation, which the controller takes as approval.
    let before = Timestamp::now();
    let said = stdout(&plugin.run(&["resume", "backend"]).await);
    assert!(said.contains("resumed"), "{said}");
    let token: Timestamp = get(&client, "backend").await.annotations()[RESUME_ANNOTATION]
        .parse()
        .expect("the resume annotation is a timestamp");
    assert!(token >= before - SignedDuration::from_secs(1), "{token}");

    // pause and unpause give back the mode the tier had, DryRun included.
    for (name, mode) in [("backend", Mode::Enforce), ("trial", Mode::DryRun)] {
        stdout(&plugin.run(&["pause", name]).await);
        assert_eq!(get(&client, name).await.spec.mode, Mode::Paused);
        stdout(&plugin.run(&["unpause", name]).await);
        let back = get(&client, name).await;
        assert_eq!(back.spec.mode, mode, "{name}");
        assert!(
            !back
                .annotations()
                .contains_key("tierguard.dev/mode-before-pause"),
            "{name}: the remembered mode is removed"
        );
    }
    // A tier paused by its manifest has no remembered mode: unpause asks which.
    let refused = plugin.run(&["unpause", "gitops"]).await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--mode Enforce or --mode DryRun"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    stdout(&plugin.run(&["unpause", "gitops", "--mode", "DryRun"]).await);
    assert_eq!(get(&client, "gitops").await.spec.mode, Mode::DryRun);
    let not_paused = plugin.run(&["unpause", "backend"]).await;
    assert!(!not_paused.status.success());

    // report reads the incident report the controller wrote.
    let status = rolling_back(&created);
    let incident = status.incidents[0].clone();
    let ctx = ReportContext {
        namespace: NS,
        tier: "backend",
        now: Timestamp::now(),
        observed: status.observed.as_ref(),
        mitigations: &status.mitigations,
    };
    record_incident(&client, &created, &incident, &ctx)
        .await
        .unwrap();
    let report = stdout(&plugin.run(&["report", "backend"]).await);
    assert!(report.contains("# Incident: Canary Rollback"), "{report}");
    let listed = stdout(&plugin.run(&["report", "backend", "--list"]).await);
    assert_eq!(listed.trim(), incident.id);

    let missing = plugin.run(&["status", "nothing"]).await;
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("MemoryTier clinic/nothing not found")
    );
}

fn tierguard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tierguard"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn version_names_the_commit_and_the_build_date() {
    let out = tierguard(&["version", "-o", "json"]);
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    let built: Timestamp = info["buildDate"].as_str().unwrap().parse().unwrap();
    assert!(built <= Timestamp::now());
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_owned());
    match (head, std::env::var("TIERGUARD_GIT_COMMIT")) {
        (_, Ok(set)) if !set.is_empty() => assert_eq!(info["commit"], set),
        (Some(head), _) => assert_eq!(info["commit"], head.as_str()),
        (None, _) => assert_eq!(info["commit"], "unknown"),
    }
    let text = String::from_utf8(tierguard(&["version"]).stdout).unwrap();
    assert!(text.starts_with(&format!("tierguard {} (commit ", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn completions_cover_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = tierguard(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for verb in ["status", "resume", "unpause", "simulate", "observe"] {
            assert!(script.contains(verb), "{shell} completion lacks {verb}");
        }
    }
    let bad = tierguard(&["completions", "tcsh"]);
    assert!(!bad.status.success());
}

/// `logLevel: warning` used to reach RUST_LOG, which read it as a target and silenced every
/// line: an unknown level is now refused at start-up, naming it.
#[test]
fn an_unknown_log_level_is_refused_at_start_up() {
    let missing = Path::new("/nonexistent/kubeconfig");
    for (env, flag) in [(Some("warning"), None), (None, Some("warning"))] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tierguard"));
        command.arg("run").arg("--kubeconfig").arg(missing);
        if let Some(level) = flag {
            command.args(["--log-level", level]);
        }
        match env {
            Some(v) => command.env("RUST_LOG", v),
            None => command.env_remove("RUST_LOG"),
        };
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("warning"), "{stderr}");
        assert!(
            stderr.contains("not a log level") || stderr.contains("invalid value 'warning'"),
            "the error must say the level is unknown: {stderr}"
        );
        assert!(
            !stderr.contains("kubeconfig"),
            "refused before anything else: {stderr}"
        );
    }
}
