//! The commit and build date that `tierguard version` and `tierguard_build_info` report.
//!
//! The commit comes from `TIERGUARD_GIT_COMMIT` when set (the Docker build has no .git: pass it
//! as a build argument), else from git when this is a git checkout, else "unknown". The build date
//! is `SOURCE_DATE_EPOCH` when set (reproducible builds), else the time of this build script's run.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=TIERGUARD_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");

    let commit = match std::env::var("TIERGUARD_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_owned(),
        _ => {
            // Rebuild when HEAD moves: HEAD itself, the branch it points at, and packed refs. Only
            // files that exist are named (cargo reruns a script at every build for a missing one).
            let watch = |path: String| {
                if std::path::Path::new(&path).exists() {
                    println!("cargo:rerun-if-changed={path}");
                }
            };
            if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
                watch(format!("{git_dir}/HEAD"));
                if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
                    watch(format!("{common}/packed-refs"));
                    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                        watch(format!("{common}/{branch}"));
                    }
                }
            }
            git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
        }
    };
    let built = match std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
    {
        Some(epoch) => jiff::Timestamp::from_second(epoch).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        None => jiff::Timestamp::now(),
    };
    println!("cargo:rustc-env=TIERGUARD_GIT_COMMIT={commit}");
    println!(
        "cargo:rustc-env=TIERGUARD_BUILD_DATE={}",
        built.strftime("%Y-%m-%dT%H:%M:%SZ")
    );
}
