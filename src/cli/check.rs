//! `tierguard check FILE...`: offline validation of MemoryTier manifests.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;

use crate::api::{KIND, validate};

/// What checking one file found.
#[derive(Debug, Default)]
pub struct FileReport {
    /// One line per problem, already prefixed with the file name.
    pub problems: Vec<String>,
    /// Documents that are not MemoryTiers (reported, not checked).
    pub skipped: Vec<String>,
    /// MemoryTiers found valid.
    pub valid: usize,
}

pub fn run(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    let mut valid = 0;
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
    }
    if failed {
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
            report
                .problems
                .push(format!("{name}: {position}: invalid YAML: {first_line}"));
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
    let several = docs.len() > 1;
    for (index, doc) in docs.iter().enumerate() {
        let where_ = || {
            let ident = doc
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(|n| format!(" {n:?}"))
                .unwrap_or_default();
            format!(" (document {}{ident})", index + 1)
        };
        let kind = doc.get("kind").and_then(Value::as_str);
        if let Some(other) = kind.filter(|k| *k != KIND) {
            report.skipped.push(format!(
                "{name}: kind: document {} is a {other}, not a {KIND}: not checked",
                index + 1
            ));
            continue;
        }
        match validate::validate_document(doc) {
            Ok(_) => report.valid += 1,
            Err(problems) => {
                let suffix = if several { where_() } else { String::new() };
                for p in problems {
                    report
                        .problems
                        .push(format!("{name}: {}: {}{suffix}", p.path, p.message));
                }
            }
        }
    }
    report
}
