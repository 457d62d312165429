//! `tierguard check`: the example is valid; every invalid manifest fails naming its field.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn tierguard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tierguard"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run tierguard")
}

#[test]
fn the_example_manifest_is_valid() {
    let out = tierguard(&["check", "examples/memorytier.yaml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.stdout.is_empty(), "a valid file prints no problems");
}

#[test]
fn every_invalid_manifest_fails_and_names_its_field() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 12,
        "at least 12 invalid manifests, found {}",
        files.len()
    );
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expected = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| {
                panic!("{} lacks its '# expect: <field path>' line", file.display())
            });
        let relative = format!(
            "tests/data/invalid/{}",
            file.file_name().unwrap().to_string_lossy()
        );
        let out = tierguard(&["check", &relative]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{relative} must exit 1; printed:\n{stdout}"
        );
        let wanted = format!("{relative}: {expected}");
        let first = stdout.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&wanted) && first[wanted.len()..].starts_with([':', ' ']),
            "{relative}: expected the first problem at `{expected}`, got:\n{stdout}"
        );
        // One line per problem, each in the FILE: path: message form.
        for line in stdout.lines() {
            assert!(
                line.starts_with(&format!("{relative}: ")),
                "stray line: {line}"
            );
            assert!(
                line.matches(": ").count() >= 2,
                "line lacks a path or a message: {line}"
            );
        }
    }
}

#[test]
fn documents_of_other_kinds_are_reported_not_silently_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mixed.yaml");
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/memorytier.yaml"),
    )
    .unwrap();
    std::fs::write(
        &file,
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\ndata: {{}}\n---\n{example}"
        ),
    )
    .unwrap();
    let out = tierguard(&["check", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the MemoryTier in it is valid");
    assert!(
        stderr.contains("document 1 is a ConfigMap, not a MemoryTier: not checked"),
        "{stderr}"
    );
}

#[test]
fn several_files_report_every_problem_and_stdin_works() {
    let out = tierguard(&[
        "check",
        "tests/data/invalid/unknown-mode.yaml",
        "examples/memorytier.yaml",
        "tests/data/invalid/percent-over-100.yaml",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("unknown-mode.yaml: spec.mode:"), "{stdout}");
    assert!(
        stdout.contains("percent-over-100.yaml: spec.stampede.hitRateBelowPercent:"),
        "{stdout}"
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_tierguard"))
        .args(["check", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"apiVersion: tierguard.dev/v1alpha1\nkind: MemoryTier\nmetadata: {name: x}\nspec: {target: {configMapName: f}, canary: {rampStep: 0}}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.starts_with("-: spec.canary.rampStep: must be between 0.001 and 1"),
        "{stdout}"
    );
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = tierguard(&["check", "no/such/file.yaml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.starts_with("no/such/file.yaml: <file>: cannot read:"),
        "{stdout}"
    );
}

/// What a tenant would write to make one tier hold the controller for hours, or to make
/// validation itself slow: every such knob is refused, naming its field.
#[test]
fn every_knob_a_tenant_could_turn_up_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let webhooks: Vec<serde_json::Value> = (0..17)
        .map(|i| serde_json::json!({"name": format!("hook-{i}"), "format": "Generic", "url": "http://10.0.0.1/"}))
        .collect();
    let features: serde_json::Map<String, serde_json::Value> = (0..100_000)
        .map(|i| (format!("FLAG_{i}"), serde_json::Value::Bool(true)))
        .collect();
    let cases = [
        (
            serde_json::json!({"warming": {"timeout": "1000h"}}),
            "spec.warming.timeout",
        ),
        (
            serde_json::json!({"warming": {"retries": 11}}),
            "spec.warming.retries",
        ),
        (
            serde_json::json!({"redis": {"remediation": {"maxDuration": "2000000h"}}}),
            "spec.redis.remediation.maxDuration",
        ),
        (
            serde_json::json!({"metrics": {"interval": "1ns", "timeout": "0s"}}),
            "spec.metrics.interval",
        ),
        (
            serde_json::json!({"metrics": {"timeout": "10m", "interval": "1h"}}),
            "spec.metrics.timeout",
        ),
        (
            serde_json::json!({"stampede": {"for": "10000h"}}),
            "spec.stampede.for",
        ),
        (
            serde_json::json!({"redis": {"evictions": {"for": "48h"}}}),
            "spec.redis.evictions.for",
        ),
        (
            serde_json::json!({"notify": {"escalation": [{"level": 1, "after": "0s"}, {"level": 2, "after": "100h"}]}}),
            "spec.notify.escalation",
        ),
        (
            serde_json::json!({"notify": {"webhooks": webhooks}}),
            "spec.notify.webhooks",
        ),
        (serde_json::json!({"features": features}), "spec.features"),
        (
            serde_json::json!({"redis": {"remediation": {"maxKeysPerRun": 100_000_000_000u64}}}),
            "spec.redis.remediation.maxKeysPerRun",
        ),
        (
            serde_json::json!({"metrics": {"queries": {"p50LatencyMs": "x".repeat(5000)}}}),
            "spec.metrics.queries.p50LatencyMs",
        ),
    ];
    for (i, (spec, path)) in cases.into_iter().enumerate() {
        let mut doc = serde_json::json!({
            "apiVersion": "tierguard.dev/v1alpha1",
            "kind": "MemoryTier",
            "metadata": {"name": "t", "namespace": "clinic"},
            "spec": {"target": {"configMapName": "f"}},
        });
        json_patch::merge(&mut doc["spec"], &spec);
        let file = dir.path().join(format!("case-{i}.yaml"));
        std::fs::write(&file, serde_json::to_string(&doc).unwrap()).unwrap();
        let out = tierguard(&["check", file.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{path} must be refused:\n{stdout}"
        );
        let wanted = format!("{}: {path}:", file.display());
        assert!(
            stdout.lines().any(|l| l.starts_with(&wanted)),
            "expected a problem at {path}:\n{stdout}"
        );
    }
}
/// `tierguard check` on a file written by the test; returns (exit code, stdout, stderr).
fn check_written(text: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tier.yaml");
    std::fs::write(&file, text).unwrap();
    let out = tierguard(&["check", file.to_str().unwrap()]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const TIER: &str = "apiVersion: tierguard.dev/v1alpha1\nkind: MemoryTier\nmetadata: {name: clinic}\nspec: {target: {configMapName: flags}}\n";

#[test]
fn the_items_of_a_list_are_checked_as_kubectl_would_apply_them() {
    let list = "apiVersion: v1\nkind: List\nitems:\n\
        - apiVersion: tierguard.dev/v1alpha1\n  kind: MemoryTier\n  metadata: {name: good}\n  spec: {target: {configMapName: flags}}\n\
        - apiVersion: tierguard.dev/v1alpha1\n  kind: MemoryTier\n  metadata: {name: bad}\n  spec: {target: {configMapName: flags}, mode: Yolo}\n";
    let (code, stdout, _) = check_written(list);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains(": spec.mode: ") && stdout.contains("(document 1, item 2 \"bad\")"),
        "{stdout}"
    );
    let (code, _, stderr) = check_written(&list.replace("mode: Yolo", "mode: DryRun"));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("2 MemoryTier document(s) valid"),
        "{stderr}"
    );
}

#[test]
fn lists_inside_lists_are_followed_and_a_list_without_items_is_an_error() {
    let nested = "apiVersion: v1\nkind: List\nitems:\n\
        - apiVersion: v1\n  kind: List\n  items:\n\
        \x20 - apiVersion: tierguard.dev/v1alpha1\n    kind: MemoryTier\n    metadata: {name: inner}\n    spec: {target: {configMapName: flags}, mode: Yolo}\n";
    let text = format!("{TIER}---\n{nested}");
    let (code, stdout, _) = check_written(&text);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains(": spec.mode: ")
            && stdout.contains("(document 2, item 1, item 1 \"inner\")"),
        "{stdout}"
    );
    for broken in [
        "apiVersion: v1\nkind: List\nitems: {}\n",
        "apiVersion: v1\nkind: List\n",
        "apiVersion: tierguard.dev/v1alpha1\nkind: MemoryTierList\nitems: oops\n",
    ] {
        let text = format!("{TIER}---\n{broken}");
        let (code, stdout, _) = check_written(&text);
        assert_eq!(code, Some(1), "{text}\n{stdout}");
        assert!(
            stdout.contains(": items: ") && stdout.contains("(document 2)"),
            "{text}\n{stdout}"
        );
    }
}

#[test]
fn a_wrong_kind_or_api_version_is_an_error_not_a_skip() {
    let (code, stdout, _) = check_written(&TIER.replace("kind: MemoryTier", "kind: Memorytier"));
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("kind: expected \"MemoryTier\", found \"Memorytier\""),
        "{stdout}"
    );
    let (code, stdout, _) = check_written(&TIER.replace("v1alpha1", "v1"));
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("apiVersion: unsupported version"),
        "{stdout}"
    );
    // A file with nothing to check is not "0 documents valid".
    let (code, _, stderr) =
        check_written("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {}\n");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no MemoryTier document found"), "{stderr}");
}

#[test]
fn check_refuses_what_the_controller_refuses() {
    for (field, value, path) in [
        (
            "redis",
            "{maxMemory: 99999999999999999999999Ti}",
            "spec.redis.maxMemory",
        ),
        ("redis", "{maxMemory: 99999999Ti}", "spec.redis.maxMemory"),
        (
            "metrics",
            "{prometheus: {url: 'http://'}}",
            "spec.metrics.prometheus.url",
        ),
        (
            "redis",
            "{remediation: {nonCriticalPatterns: ['session:*', '*']}}",
            "spec.redis.remediation.nonCriticalPatterns[1]",
        ),
    ] {
        let text = TIER.replace("}}\n", &format!("}}, {field}: {value}}}\n"));
        let (code, stdout, _) = check_written(&text);
        assert_eq!(code, Some(1), "{text}\n{stdout}");
        assert!(stdout.contains(&format!(": {path}: ")), "{text}\n{stdout}");
        // The controller validates a tier read from the cluster with the same rules.
        let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let tier: tierguard::api::MemoryTier = serde_json::from_value(doc).unwrap();
        let problems = tierguard::api::validate::validate_tier(&tier).unwrap_err();
        assert!(
            problems.iter().any(|p| p.path == path),
            "the controller disagrees on {text}: {problems:?}"
        );
    }
}

#[test]
fn long_values_are_shortened_in_the_messages() {
    let name = format!("Bad_{}", "x".repeat(50 << 20));
    let (code, stdout, _) = check_written(&TIER.replace("name: clinic", &format!("name: {name}")));
    assert_eq!(code, Some(1));
    assert!(
        stdout.contains("metadata.name: \"Bad_xxx"),
        "{}",
        &stdout[..stdout.len().min(300)]
    );
    assert!(
        stdout.lines().all(|l| l.chars().count() <= 400),
        "a line of {} characters",
        stdout.lines().map(|l| l.chars().count()).max().unwrap_or(0)
    );
    assert!(stdout.len() < 2000, "{} bytes printed", stdout.len());
    // Control characters in a value are escaped.
    let (code, stdout, _) = check_written(&TIER.replace("}}\n", "}, mode: \"\\e[2JYolo\"}\n"));
    assert_eq!(code, Some(1));
    assert!(
        !stdout.contains('\u{1b}') && stdout.contains("[2JYolo\" is not one of"),
        "{stdout}"
    );
}
