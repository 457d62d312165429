//! The real controller as a process: `tierguard run` (the binary cargo built for this test)
//! against the test's API server through a kubeconfig file, with its log kept in a file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::servers::{free_port, http_get_ok};

pub struct ControllerProcess {
    child: Option<Child>,
    log: PathBuf,
    metrics_port: u16,
    /// The highest VmHWM seen (KiB), read while the process lives.
    peak_rss_kib: u64,
}

impl ControllerProcess {
    /// Start `tierguard run --kubeconfig KUBECONFIG --namespace NAMESPACE` and wait until it
    /// reports ready (its watches are running).
    pub fn spawn(kubeconfig: &Path, namespace: &str, log: PathBuf) -> Self {
        Self::spawn_with(
            Path::new(env!("CARGO_BIN_EXE_tierguard")),
            kubeconfig,
            namespace,
            log,
            "tierguard-drill",
            &[],
            true,
        )
    }

    /// Start `binary run` with this identity and extra arguments (e.g. `--leader-election`); wait
    /// until ready when asked.
    pub fn spawn_with(
        binary: &Path,
        kubeconfig: &Path,
        namespace: &str,
        log: PathBuf,
        identity: &str,
        extra: &[&str],
        wait_ready: bool,
    ) -> Self {
        let metrics_port = free_port();
        let stderr = std::fs::File::create(&log).expect("create the controller's log file");
        let child = Command::new(binary)
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--namespace", namespace])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--identity", identity])
            // The drill's servers listen on loopback, which the defaults refuse.
            .args(["--metrics-destinations", "127.0.0.0/8"])
            .args(["--warming-destinations", "127.0.0.0/8"])
            .args(["--webhook-destinations", "127.0.0.0/8"])
            .args(["--redis-destinations", "127.0.0.0/8"])
            .args(["--probe-destinations", "127.0.0.0/8"])
            // The drills follow the live readings in status at every tick; a real deployment
            // refreshes them every 5 minutes when nothing else changes (tests/it/scale.rs).
            .args(["--status-refresh", "1s"])
            .args(extra)
            .env("NO_COLOR", "1")
            .env(
                "RUST_LOG",
                std::env::var("TIERGUARD_DRILL_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn tierguard run");
        let mut process = ControllerProcess {
            child: Some(child),
            log,
            metrics_port,
            peak_rss_kib: 0,
        };
        if wait_ready {
            process.wait_ready(Duration::from_secs(30));
        }
        process
    }

    /// Wait until /readyz answers 200.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !http_get_ok(self.metrics_port, "/readyz") {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "tierguard run exited ({status}) before it was ready; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "tierguard run was not ready (/readyz on 127.0.0.1:{}) within {timeout:?}; log:\n{}",
                self.metrics_port,
                self.log().lines().take(30).collect::<Vec<_>>().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The controller's own metrics (`/metrics`).
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }

    /// Whether it is still running (it never exits on its own).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Read the kernel's high-water mark of its resident memory now; returns the highest seen.
    pub fn sample_rss(&mut self) -> u64 {
        if let Some(pid) = self.pid()
            && let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            self.peak_rss_kib = self.peak_rss_kib.max(kib);
        }
        self.peak_rss_kib
    }

    /// SIGKILL, as the OOM killer or a node failure would: no chance to clean up.
    pub fn kill(&mut self) {
        self.sample_rss();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, as the kubelet sends it; returns how long the process took to exit (it is
    /// SIGKILLed past `grace`, and None returned).
    pub fn terminate(&mut self, grace: Duration) -> Option<Duration> {
        self.sample_rss();
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < grace {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
