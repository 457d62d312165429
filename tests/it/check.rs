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
