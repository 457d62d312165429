//! The demo clinic backend as a process: builds `examples/clinic-backend` with the same cargo
//! and profile as the running tests (once per test binary), starts
//! `clinic-backend serve --print-port …` on a free port, reads the bound address from the first
//! line of stdout, and keeps stderr (the service's log) in a file to read back.
//!
//! The drills drive the real binary through this; stopped (SIGTERM, then killed) when dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Build the example (once) and return the path of its executable.
pub fn binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(build).clone()
}

fn build() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(env!("CARGO_MANIFEST_DIR")).args([
        "build",
        "--example",
        "clinic-backend",
        "--message-format=json",
    ]);
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    // Cargo sets these for the test process; build scripts (ring's) watch some of them, so
    // passing them on would make this build and the next `cargo test` rebuild each other's deps.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo_for_tests = name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || name.starts_with("CARGO_BIN_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&name.as_ref());
        if set_by_cargo_for_tests {
            command.env_remove(name.as_ref());
        }
    }
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build --example clinic-backend");
    assert!(
        output.status.success(),
        "cargo build --example clinic-backend failed"
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "clinic-backend")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported no executable for the clinic-backend example")
}

/// A running `clinic-backend serve`.
pub struct ClinicBackendProcess {
    child: Option<Child>,
    addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ClinicBackendProcess {
    /// Start `serve` with `--listen 127.0.0.1:0 --print-port` and the given arguments
    /// (`--redis-url`, `--flags`, `--admin-token`, ...).
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_on("127.0.0.1:0", args)
    }

    /// Like [`ClinicBackendProcess::spawn`], listening on `listen` (e.g. a port chosen before the
    /// service starts, for a Prometheus configured ahead of it).
    pub fn spawn_on(listen: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("clinic-backend.log");
        let stderr = std::fs::File::create(&log).expect("create the log file");
        let mut child = Command::new(binary())
            .args(["serve", "--listen", listen, "--print-port"])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("CLINIC_BACKEND_LOG").unwrap_or("info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn clinic-backend");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut first = String::new();
        let read = BufReader::new(stdout).read_line(&mut first);
        let addr = first.trim().to_owned();
        if read.is_err() || addr.is_empty() {
            let status = child.wait().ok();
            panic!(
                "clinic-backend did not print its address (exit {status:?}); log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        ClinicBackendProcess {
            child: Some(child),
            addr,
            log,
            _dir: dir,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the log contains `text`.
    pub fn wait_for_log(&self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(text) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} not logged within {timeout:?}; log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM and wait for the exit.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for ClinicBackendProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
