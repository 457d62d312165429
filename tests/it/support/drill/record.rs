//! What a drill watches while it runs: every distinct status of the MemoryTier (as the controller
//! wrote it), every flags version the demo loaded, and every state of the demo's breaker. Polled
//! in the background so the drill can assert the order of things afterwards.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use kube::{Api, Client};
use serde_json::Value;
use tierguard::api::{MemoryTier, MemoryTierStatus};
use tokio::task::JoinHandle;

const POLL: Duration = Duration::from_millis(100);

/// A status as the controller wrote it, and when the drill first saw it.
#[derive(Clone, Debug)]
pub struct StatusSample {
    pub seen_at: Timestamp,
    pub status: MemoryTierStatus,
}

/// A flags version the demo loaded.
#[derive(Clone, Debug)]
pub struct FlagsVersion {
    pub version: u64,
    /// When the demo applied it (its own clock, milliseconds).
    pub loaded_at: Timestamp,
    pub raw: BTreeMap<String, String>,
}

/// A state of the demo's breaker and when the drill first saw it.
#[derive(Clone, Debug)]
pub struct BreakerSample {
    pub seen_at: Timestamp,
    pub state: String,
}

#[derive(Default)]
pub struct Recorded {
    pub statuses: Vec<StatusSample>,
    pub flags: Vec<FlagsVersion>,
    pub breaker: Vec<BreakerSample>,
    pub last_error: Option<String>,
}

pub struct Recorder {
    state: Arc<Mutex<Recorded>>,
    task: JoinHandle<()>,
}

impl Recorder {
    pub fn start(client: Client, namespace: &str, tier: &str, demo_url: String) -> Self {
        let state = Arc::new(Mutex::new(Recorded::default()));
        let tiers: Api<MemoryTier> = Api::namespaced(client, namespace);
        let (tier, shared) = (tier.to_owned(), state.clone());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("an HTTP client");
        let task = tokio::spawn(async move {
            loop {
                let now = Timestamp::now();
                match tiers.get_opt(&tier).await {
                    Ok(Some(t)) => {
                        if let Some(status) = t.status {
                            let mut s = shared.lock().unwrap();
                            if s.statuses.last().is_none_or(|l| l.status != status) {
                                s.statuses.push(StatusSample {
                                    seen_at: now,
                                    status,
                                });
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(e) => shared.lock().unwrap().last_error = Some(format!("tier: {e}")),
                }
                if let Some(flags) = get_json(&http, &format!("{demo_url}/admin/flags")).await {
                    let version = flags["version"].as_u64().unwrap_or(0);
                    let mut s = shared.lock().unwrap();
                    if version > 0 && s.flags.last().is_none_or(|l| l.version != version) {
                        let raw = serde_json::from_value(flags["raw"].clone()).unwrap_or_default();
                        let ms = flags["loaded_at"].as_i64().unwrap_or(0);
                        s.flags.push(FlagsVersion {
                            version,
                            loaded_at: Timestamp::from_millisecond(ms).unwrap_or(now),
                            raw,
                        });
                    }
                }
                if let Some(breaker) = get_json(&http, &format!("{demo_url}/admin/breaker")).await {
                    let state = breaker["state"].as_str().unwrap_or("?").to_owned();
                    let mut s = shared.lock().unwrap();
                    if s.breaker.last().is_none_or(|l| l.state != state) {
                        s.breaker.push(BreakerSample {
                            seen_at: Timestamp::now(),
                            state,
                        });
                    }
                }
                tokio::time::sleep(POLL).await;
            }
        });
        Recorder { state, task }
    }

    pub fn with<T>(&self, f: impl FnOnce(&Recorded) -> T) -> T {
        f(&self.state.lock().unwrap())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The demo is started after the recorder may have begun; until then this is None.
async fn get_json(http: &reqwest::Client, url: &str) -> Option<Value> {
    let response = http.get(url).send().await.ok()?;
    response.json::<Value>().await.ok()
}
