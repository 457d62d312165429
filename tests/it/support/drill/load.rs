//! Traffic for a drill: the demo's own bounded load generator (`clinic-backend load`), run in
//! short back-to-back chunks until stopped, so the load lasts as long as the drill needs while
//! every process stays bounded, and each chunk's summary shows how the service fared.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

/// Length of one `load` run.
const CHUNK: Duration = Duration::from_secs(4);

/// What the load generator was asked to do.
#[derive(Clone, Debug)]
pub struct LoadShape {
    pub rps: u32,
    /// `FIRST-LAST`.
    pub clinics: String,
    /// Hottest first, comma-separated.
    pub hot: String,
}

impl Default for LoadShape {
    fn default() -> Self {
        LoadShape {
            rps: 40,
            clinics: "1-20".into(),
            hot: "1,2,3,5,8".into(),
        }
    }
}

/// Totals over the chunks that ran to the end.
#[derive(Clone, Debug, Default)]
pub struct LoadTotals {
    pub chunks: u32,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub skipped: u64,
}

impl std::fmt::Display for LoadTotals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests in {} chunks of {}s: {} ok, {} errors, {} skipped",
            self.sent,
            self.chunks,
            CHUNK.as_secs(),
            self.ok,
            self.errors,
            self.skipped
        )
    }
}

pub struct Load {
    stop: Arc<AtomicBool>,
    current: Arc<Mutex<Option<Child>>>,
    totals: Arc<Mutex<LoadTotals>>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    /// Drive `target` (the demo's base URL) with `shape` until [`Load::stop`].
    pub fn start(binary: PathBuf, target: String, shape: LoadShape) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let current: Arc<Mutex<Option<Child>>> = Arc::default();
        let totals: Arc<Mutex<LoadTotals>> = Arc::default();
        let thread = {
            let (stop, current, totals) = (stop.clone(), current.clone(), totals.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let child = Command::new(&binary)
                        .args(["load", "--target", &target, "--json"])
                        .args(["--rps", &shape.rps.to_string()])
                        .args(["--duration", &format!("{}s", CHUNK.as_secs())])
                        .args(["--clinics", &shape.clinics, "--hot", &shape.hot])
                        .args(["--timeout", "5s"])
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("spawn clinic-backend load");
                    let stdout = {
                        let mut slot = current.lock().unwrap();
                        let mut child = child;
                        if stop.load(Ordering::SeqCst) {
                            // Stopped while this chunk was starting.
                            let _ = child.kill();
                        }
                        *slot = Some(child);
                        slot.as_mut().and_then(|c| c.stdout.take())
                    };
                    let mut text = String::new();
                    if let Some(mut out) = stdout {
                        let _ = std::io::Read::read_to_string(&mut out, &mut text);
                    }
                    if let Some(mut child) = current.lock().unwrap().take() {
                        let _ = child.wait();
                    }
                    let Ok(summary) = serde_json::from_str::<Value>(&text) else {
                        continue; // stopped mid-chunk
                    };
                    let n = |key: &str| summary[key].as_u64().unwrap_or(0);
                    let errors = summary["errors_by_status"]
                        .as_object()
                        .map(|m| m.values().filter_map(Value::as_u64).sum::<u64>())
                        .unwrap_or(0)
                        + n("transport_errors");
                    let mut t = totals.lock().unwrap();
                    t.chunks += 1;
                    t.sent += n("sent");
                    t.ok += n("ok");
                    t.errors += errors;
                    t.skipped += n("skipped");
                }
            })
        };
        Load {
            stop,
            current,
            totals,
            thread: Some(thread),
        }
    }

    /// Stop at once (the chunk running is cut short) and return the totals.
    pub fn stop(mut self) -> LoadTotals {
        self.halt();
        self.totals.lock().unwrap().clone()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(child) = self.current.lock().unwrap().as_mut() {
            let _ = child.kill();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.halt();
    }
}
