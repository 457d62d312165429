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
}

impl ControllerProcess {
    /// Start `tierguard run --kubeconfig KUBECONFIG --namespace NAMESPACE` and wait until it
    /// reports ready (its watches are running).
    pub fn spawn(kubeconfig: &Path, namespace: &str, log: PathBuf) -> Self {
        let metrics_port = free_port();
        let stderr = std::fs::File::create(&log).expect("create the controller's log file");
        let child = Command::new(env!("CARGO_BIN_EXE_tierguard"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--namespace", namespace])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--identity", "tierguard-drill"])
            // The drill's servers listen on loopback, which the defaults refuse.
            .args(["--metrics-destinations", "127.0.0.0/8"])
            .args(["--warming-destinations", "127.0.0.0/8"])
            .args(["--webhook-destinations", "127.0.0.0/8"])
            .args(["--redis-destinations", "127.0.0.0/8"])
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
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http_get_ok(metrics_port, "/readyz") {
            if let Some(Ok(Some(status))) = process.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "tierguard run exited ({status}) before it was ready; log:\n{}",
                    process.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "tierguard run was not ready (/readyz on 127.0.0.1:{metrics_port}) within 30s; log:\n{}",
                process
                    .log()
                    .lines()
                    .take(30)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        process
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The controller's own metrics (`/metrics`).
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }

    /// Whether it is still running (it never exits on its own).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
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
