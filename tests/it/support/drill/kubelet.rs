//! A small "kubelet": keeps a directory in step with a ConfigMap the way a ConfigMap volume is
//! kept, so the demo reads exactly what the controller rendered.
//!
//! Layout (what the kubelet's atomic writer makes): each version's files live in `..<version>/`,
//! `..data` links to the current version, and every key is a link `KEY -> ..data/KEY`. A new
//! version is written into a fresh directory and made current by renaming a new link over
//! `..data`, one atomic step, so a reader never sees half of one version and half of another.
//!
//! Every distinct `data` the kubelet sees is recorded with the time it was written into the
//! directory: the drill's ConfigMap history.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use tokio::task::JoinHandle;

/// How often the ConfigMap is read. A real kubelet syncs within a minute or so; the drills
/// measure the controller, so this one is quick.
const POLL: Duration = Duration::from_millis(50);

/// One version of the ConfigMap's data, as written into the volume.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigVersion {
    /// When it was visible in the directory.
    pub applied_at: Timestamp,
    pub resource_version: String,
    pub data: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    history: Vec<ConfigVersion>,
    last_error: Option<String>,
}

pub struct Kubelet {
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Kubelet {
    /// Start syncing ConfigMap `namespace/name` into `dir` (created if missing).
    pub fn start(client: Client, namespace: &str, name: &str, dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("create the ConfigMap volume directory");
        let state = Arc::new(Mutex::new(State::default()));
        let api: Api<ConfigMap> = Api::namespaced(client, namespace);
        let (name, volume, shared) = (name.to_owned(), dir.to_owned(), state.clone());
        let task = tokio::spawn(async move {
            let mut version = 0u32;
            loop {
                match api.get_opt(&name).await {
                    Ok(Some(cm)) => {
                        let data = cm.data.clone().unwrap_or_default();
                        let changed = shared
                            .lock()
                            .unwrap()
                            .history
                            .last()
                            .is_none_or(|v| v.data != data);
                        if changed {
                            version += 1;
                            let written = write_version(&volume, version, &data);
                            let mut state = shared.lock().unwrap();
                            match written {
                                Ok(()) => state.history.push(ConfigVersion {
                                    applied_at: Timestamp::now(),
                                    resource_version: cm
                                        .metadata
                                        .resource_version
                                        .clone()
                                        .unwrap_or_default(),
                                    data,
                                }),
                                Err(e) => {
                                    state.last_error = Some(format!("writing the volume: {e}"))
                                }
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(e) => shared.lock().unwrap().last_error = Some(format!("reading: {e}")),
                }
                tokio::time::sleep(POLL).await;
            }
        });
        Kubelet { state, task }
    }

    /// Every distinct version seen so far, oldest first.
    pub fn history(&self) -> Vec<ConfigVersion> {
        self.state.lock().unwrap().history.clone()
    }

    pub fn last_error(&self) -> Option<String> {
        self.state.lock().unwrap().last_error.clone()
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Write `data` as version `n` of the volume and make it current atomically.
fn write_version(dir: &Path, n: u32, data: &BTreeMap<String, String>) -> std::io::Result<()> {
    let version_dir = format!("..v{n}");
    let target = dir.join(&version_dir);
    std::fs::create_dir_all(&target)?;
    for (key, value) in data {
        std::fs::write(target.join(key), value)?;
    }
    let previous = std::fs::read_link(dir.join("..data")).ok();
    let staged = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&staged);
    std::os::unix::fs::symlink(&version_dir, &staged)?;
    std::fs::rename(&staged, dir.join("..data"))?;
    // Key links: add the new keys, drop the ones that are gone.
    for key in data.keys() {
        let link = dir.join(key);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(key), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && !data.contains_key(&name) {
            std::fs::remove_file(dir.join(&name))?;
        }
    }
    if let Some(old) = previous
        && old != Path::new(&version_dir)
    {
        std::fs::remove_dir_all(dir.join(old))?;
    }
    Ok(())
}
