//! `tierguard report --from-simulation`: incident reports from a simulate run's JSON lines.

use std::process::Command;

use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_tierguard");

fn incident(id: &str, started: &str, resolved: Option<&str>) -> serde_json::Value {
    json!({
        "id": id,
        "runbook": "CacheStampede",
        "trigger": "cache hit rate 82% < 95% with P50 640 ms > 500 ms for 1m",
        "startedAt": started,
        "resolvedAt": resolved,
        "escalationLevel": 1,
        "timeline": [
            {"at": started, "what": "Stampede detected"},
            {"at": "2026-11-25T03:13:00Z", "what": "Cache warmed for 5 clinics"}
        ]
    })
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn reports_are_printed_from_simulation_lines() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.jsonl");
    let lines = [
        json!({"t": "0s", "type": "transition", "from": "Healthy", "to": "Degraded"}).to_string(),
        json!({"t": "60s", "type": "incident", "incident": incident("stampede-1", "2026-11-25T03:12:00Z", None)}).to_string(),
        json!({"t": "70s", "type": "action", "action": "warm-cache"}).to_string(),
        json!({"t": "900s", "type": "incident", "incident": incident("stampede-1", "2026-11-25T03:12:00Z", Some("2026-11-25T03:27:00Z"))}).to_string(),
        json!({"t": "950s", "type": "incident", "incident": incident("stampede-2", "2026-11-25T03:30:00Z", None)}).to_string(),
        "garbage".to_owned(),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let path = file.to_str().unwrap();

    let (code, stdout, stderr) = run(&["report", "--from-simulation", path]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("# Incident: Cache Stampede\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("**Incident:** stampede-2"),
        "the newest comes first"
    );
    assert!(stderr.contains("skipped 1 line"), "{stderr}");

    let (code, stdout, _) = run(&[
        "report",
        "--from-simulation",
        path,
        "--incident",
        "stampede-1",
    ]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("**Duration:** 15 minutes"),
        "the resolved line wins: {stdout}"
    );
    assert!(stdout.contains("- 03:13 UTC - Cache warmed for 5 clinics"));
    assert!(stdout.contains("To be determined during post-mortem."));

    let (_, stdout, _) = run(&["report", "--from-simulation", path, "--list"]);
    assert_eq!(stdout, "stampede-2\nstampede-1\n");

    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "{\"t\": \"0s\", \"type\": \"transition\"}\n").unwrap();
    let (code, _, stderr) = run(&["report", "--from-simulation", empty.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no incident found"), "{stderr}");
    let (code, _, stderr) = run(&["report", "--from-simulation", "/nonexistent/run.jsonl"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("/nonexistent/run.jsonl: cannot read"),
        "{stderr}"
    );
    let (code, _, _) = run(&["report"]);
    assert_eq!(code, 2, "a tier or a file is required");
}

/// The real pipeline: `tierguard simulate --output json` on a shipped scenario, then `report`.
#[test]
fn a_simulated_rollback_yields_its_incident_report() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(BIN)
        .args([
            "simulate",
            "examples/memorytier.yaml",
            "--scenario",
            "examples/scenarios/canary-regression.yaml",
            "--output",
            "json",
        ])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.jsonl");
    std::fs::write(&file, &out.stdout).unwrap();
    let (code, stdout, stderr) = run(&["report", "--from-simulation", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("# Incident: Canary Rollback\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("P50 latency"),
        "the trigger is named: {stdout}"
    );
    assert!(
        stdout.contains("Features disabled"),
        "the timeline is there: {stdout}"
    );
}
