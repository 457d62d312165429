//! `tierguard check FILE...`: offline validation of MemoryTier manifests.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;

use crate::api::{KIND, validate};
use crate::remote::text;

/// What checking one file found.
#[derive(Debug, Default)]
pub struct FileReport {
    /// One line per problem, already prefixed with the file name.
    pub problems: Vec<String>,
    /// Documents that are not MemoryTiers (reported, not checked).
    pub skipped: Vec<String>,
    /// MemoryTiers found valid.
    pub valid: usize,
    /// MemoryTier documents checked (valid or not).
    pub checked: usize,
}

pub fn run(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    let mut valid = 0;
    let mut checked = 0;
    for file in files {
        let report = check_file(file);
        for line in &report.skipped {
            eprintln!("{line}");
        }
        for line in &report.problems {
            println!("{line}");
        }
        failed |= !report.problems.is_empty();
        valid += report.valid;
        checked += report.checked;
    }
    if failed {
        ExitCode::FAILURE
    } else if checked == 0 {
        eprintln!("no MemoryTier document found: nothing was checked");
        ExitCode::FAILURE
    } else {
        eprintln!("{valid} MemoryTier document(s) valid");
        ExitCode::SUCCESS
    }
}

/// Check every document of one file.
pub fn check_file(path: &Path) -> FileReport {
    let name = path.display().to_string();
    let text = if path == Path::new("-") {
        let mut buf = String::new();
        std::io::stdin().read_to_string(&mut buf).map(|_| buf)
    } else {
        std::fs::read_to_string(path)
    };
    match text {
        Ok(text) => check_text(&name, &text),
        Err(e) => FileReport {
            problems: vec![format!("{name}: <file>: cannot read: {e}")],
            ..FileReport::default()
        },
    }
}

/// Check every document of a file's content; `name` prefixes each line.
pub fn check_text(name: &str, text: &str) -> FileReport {
    let mut report = FileReport::default();
    let docs: Vec<Value> = match serde_saphyr::from_multiple(text) {
        Ok(docs) => docs,
        Err(e) => {
            let position = e
                .location()
                .map(|l| format!("line {}, column {}", l.line(), l.column()))
                .unwrap_or_else(|| "<yaml>".into());
            let message = e.to_string();
            let first_line = message.lines().next().unwrap_or("invalid YAML");
            // The parser repeats the position in its message; it is already in front.
            let first_line = first_line.trim_start_matches("error: ");
            let first_line = regex::Regex::new(r"^line \d+ column \d+: ")
                .map(|re| re.replace(first_line, "").into_owned())
                .unwrap_or_else(|_| first_line.to_owned());
            report.problems.push(shown(&format!(
                "{name}: {position}: invalid YAML: {first_line}"
            )));
            return report;
        }
    };
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    if docs.is_empty() {
        report
            .problems
            .push(format!("{name}: <file>: no YAML document found"));
        return report;
    }
    // What `kubectl apply` would send: each document, and each item of a List.
    let mut objects: Vec<(String, &Value)> = Vec::new();
    let several = docs.len() > 1;
    for (index, doc) in docs.iter().enumerate() {
        flatten(
            format!("document {}", index + 1),
            doc,
            0,
            &mut objects,
            &mut |label, problem| {
                report
                    .problems
                    .push(shown(&format!("{name}: items: {problem} ({label})")));
            },
        );
    }
    let labelled = several || objects.len() > 1;
    for (label, doc) in objects {
        if let Some(other) = other_kind(doc) {
            report.skipped.push(shown(&format!(
                "{name}: kind: {label} is a {other}, not a {KIND}: not checked"
            )));
            continue;
        }
        report.checked += 1;
        match validate::validate_document(doc) {
            Ok(_) => report.valid += 1,
            Err(problems) => {
                let suffix = if labelled {
                    let ident = doc
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .map(|n| format!(" {:?}", text::shown(n, 60)))
                        .unwrap_or_default();
                    format!(" ({label}{ident})")
                } else {
                    String::new()
                };
                for p in problems {
                    report
                        .problems
                        .push(shown(&format!("{name}: {}: {}{suffix}", p.path, p.message)));
                }
            }
        }
    }
    report
}

/// How deep Lists inside Lists are followed.
const MAX_LIST_DEPTH: usize = 8;

/// Push `doc` to `objects`, or, when it is a list (a `kind: List` or any `…List`, or an object
/// with an array of `items`, as kubectl reads it), each of its items, following Lists inside
/// Lists as kubectl does. A `…List` without an array of items is a problem, not a skip: kubectl
/// would refuse it.
fn flatten<'a>(
    label: String,
    doc: &'a Value,
    depth: usize,
    objects: &mut Vec<(String, &'a Value)>,
    problem: &mut impl FnMut(&str, &str),
) {
    let is_list_kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|kind| kind.ends_with("List"));
    match doc.get("items") {
        Some(Value::Array(items)) if depth < MAX_LIST_DEPTH => {
            for (i, item) in items.iter().enumerate() {
                flatten(
                    format!("{label}, item {}", i + 1),
                    item,
                    depth + 1,
                    objects,
                    problem,
                );
            }
        }
        Some(Value::Array(_)) => problem(&label, "Lists nested too deep"),
        Some(_) if is_list_kind => problem(&label, "must be a sequence of objects"),
        None if is_list_kind => problem(&label, "required: a List holds its objects in items"),
        _ => objects.push((label, doc)),
    }
}

/// The kind of a document that is plainly something else (a ConfigMap, a Deployment), which is
/// reported and not checked. A document meant as a MemoryTier with a wrong `kind` (`Memorytier`,
/// `MemoryTeir`) or a tierguard.dev `apiVersion` is checked, so the mistake is an error.
fn other_kind(doc: &Value) -> Option<String> {
    let kind = doc.get("kind").and_then(Value::as_str)?;
    let group = doc
        .get("apiVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.rsplit_once('/').map(|(group, _)| group));
    let ours = kind == KIND || group == Some(crate::api::GROUP) || validate::looks_like(kind, KIND);
    (!ours).then(|| text::shown(kind, 60))
}

/// A printed line: escaped and at most a few hundred characters.
fn shown(line: &str) -> String {
    text::shown(line, MAX_LINE_CHARS)
}

/// The longest line printed for one problem.
const MAX_LINE_CHARS: usize = 400;
