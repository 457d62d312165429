//! Feature flags and tuning, read from the file the controller's ConfigMap renders into, and
//! reloaded while the service runs.
//!
//! Two layouts are read, chosen by what the path is:
//! - a **directory**: one file per key, the value its content (how a ConfigMap volume mounts);
//!   entries whose name starts with `.` (the volume's `..data` machinery) are skipped, and when
//!   `..data` exists the version it points to is read as a whole;
//! - a **file**: `KEY=VALUE` lines (`#` comments, optional `export `, optional quotes), or a JSON
//!   object when its first character is `{`.
//!
//! Every key of [`tierguard::policy::effective::KEYS`] must be present: the controller always
//! renders all of them, and a file caught half-written must not silently turn a flag back to a
//! default. A source that cannot be read or parsed keeps the previous flags and reports why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tierguard::policy::effective::{
    CACHE_SERVE_STALE, CACHE_STALE_TTL, CACHE_TTL, CACHE_TTL_JITTER, CANARY_SAMPLE_RATE,
    CIRCUIT_BREAKER_FAILURE_THRESHOLD, CIRCUIT_BREAKER_LATENCY_THRESHOLD_MS, CIRCUIT_BREAKER_NAME,
    CIRCUIT_BREAKER_RESET_SECONDS, FAST_PATH_ENABLED, MAX_CACHE_VALUE_SIZE, MAX_CLINIC_CACHE_ITEMS,
    MEM0_READS_ENABLED, MEM0_SHADOW_MODE,
};
use tokio::sync::watch;

/// The largest flags file (or directory entry) read; a ConfigMap holds at most 1 MiB anyway.
const MAX_SOURCE_BYTES: u64 = 1024 * 1024;

/// Why flags could not be read. Each message names the source and, where there is one, the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FlagsError {
    #[error("{path}: cannot read: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: larger than {MAX_SOURCE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path}: line {line}: expected KEY=VALUE, got {text:?}")]
    Syntax {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("{path}: key {key} appears twice (lines {first} and {second})")]
    Duplicate {
        path: PathBuf,
        key: String,
        first: usize,
        second: usize,
    },
    #[error("{path}: not a JSON object of flags: {reason}")]
    Json { path: PathBuf, reason: String },
    #[error("{path}: missing key {key} (every key the controller renders is required)")]
    Missing { path: PathBuf, key: &'static str },
    #[error("{path}: {key}={value:?}: {expected}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// The circuit breaker's settings (CIRCUIT_BREAKER_*).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BreakerSettings {
    pub name: String,
    pub failure_threshold: u32,
    pub latency_threshold: Duration,
    pub reset_after: Duration,
}

/// Parsed flags, in the units the service uses.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Flags {
    pub canary_sample_rate: f64,
    pub fast_path_enabled: bool,
    pub mem0_reads_enabled: bool,
    pub mem0_shadow_mode: bool,
    pub cache_ttl: Duration,
    pub cache_ttl_jitter: Duration,
    pub cache_serve_stale: bool,
    pub cache_stale_ttl: Duration,
    pub max_cache_value_size: u64,
    pub max_clinic_cache_items: u64,
    pub breaker: BreakerSettings,
}

/// Python-style booleans, because the runbooks grep for `fast_path=False`.
fn py(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

impl Flags {
    /// Parse the raw key/value map of a source.
    pub fn parse(path: &Path, raw: &BTreeMap<String, String>) -> Result<Self, FlagsError> {
        let get = |key: &'static str| -> Result<&str, FlagsError> {
            raw.get(key)
                .map(|v| v.as_str())
                .ok_or_else(|| FlagsError::Missing {
                    path: path.to_owned(),
                    key,
                })
        };
        let invalid =
            |key: &'static str, value: &str, expected: &'static str| FlagsError::Invalid {
                path: path.to_owned(),
                key,
                value: value.to_owned(),
                expected,
            };
        let boolean = |key: &'static str| -> Result<bool, FlagsError> {
            let v = get(key)?;
            match v.to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(invalid(key, v, "expected true or false")),
            }
        };
        let whole = |key: &'static str| -> Result<u64, FlagsError> {
            let v = get(key)?;
            v.parse::<u64>()
                .map_err(|_| invalid(key, v, "expected a whole number ≥ 0"))
        };
        let seconds = |key: &'static str| whole(key).map(Duration::from_secs);

        let rate_text = get(CANARY_SAMPLE_RATE)?;
        let canary_sample_rate = rate_text
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or_else(|| {
                invalid(
                    CANARY_SAMPLE_RATE,
                    rate_text,
                    "expected a number from 0 to 1",
                )
            })?;
        let threshold_text = get(CIRCUIT_BREAKER_FAILURE_THRESHOLD)?;
        let failure_threshold = threshold_text
            .parse::<u32>()
            .ok()
            .filter(|t| *t >= 1)
            .ok_or_else(|| {
                invalid(
                    CIRCUIT_BREAKER_FAILURE_THRESHOLD,
                    threshold_text,
                    "expected a whole number ≥ 1",
                )
            })?;
        let latency_ms = whole(CIRCUIT_BREAKER_LATENCY_THRESHOLD_MS)?;
        if latency_ms == 0 {
            return Err(invalid(
                CIRCUIT_BREAKER_LATENCY_THRESHOLD_MS,
                "0",
                "expected milliseconds ≥ 1",
            ));
        }
        let name = get(CIRCUIT_BREAKER_NAME)?.trim();
        if name.is_empty() {
            return Err(invalid(
                CIRCUIT_BREAKER_NAME,
                name,
                "expected a non-empty name",
            ));
        }
        Ok(Flags {
            canary_sample_rate,
            fast_path_enabled: boolean(FAST_PATH_ENABLED)?,
            mem0_reads_enabled: boolean(MEM0_READS_ENABLED)?,
            mem0_shadow_mode: boolean(MEM0_SHADOW_MODE)?,
            cache_ttl: seconds(CACHE_TTL)?,
            cache_ttl_jitter: seconds(CACHE_TTL_JITTER)?,
            cache_serve_stale: boolean(CACHE_SERVE_STALE)?,
            cache_stale_ttl: seconds(CACHE_STALE_TTL)?,
            max_cache_value_size: whole(MAX_CACHE_VALUE_SIZE)?,
            max_clinic_cache_items: whole(MAX_CLINIC_CACHE_ITEMS)?,
            breaker: BreakerSettings {
                name: name.to_owned(),
                failure_threshold,
                latency_threshold: Duration::from_millis(latency_ms),
                reset_after: seconds(CIRCUIT_BREAKER_RESET_SECONDS)?,
            },
        })
    }

    /// The line the runbooks' Phase 3 looks for.
    pub fn summary(&self) -> String {
        format!(
            "Feature flags loaded: fast_path={}, mem0_reads={}, mem0_shadow={}, canary_sample_rate={}, \
             cache_ttl={}, cache_ttl_jitter={}, serve_stale={}, stale_ttl={}, max_value_size={}, \
             max_clinic_items={}",
            py(self.fast_path_enabled),
            py(self.mem0_reads_enabled),
            py(self.mem0_shadow_mode),
            self.canary_sample_rate,
            self.cache_ttl.as_secs(),
            self.cache_ttl_jitter.as_secs(),
            py(self.cache_serve_stale),
            self.cache_stale_ttl.as_secs(),
            self.max_cache_value_size,
            self.max_clinic_cache_items,
        )
    }

    /// The line the circuit-breaker runbook's Step 2 looks for.
    pub fn breaker_summary(&self) -> String {
        let b = &self.breaker;
        format!(
            "Circuit breaker config: name={}, failure_threshold={}, latency_threshold_ms={}, reset_seconds={}",
            b.name,
            b.failure_threshold,
            b.latency_threshold.as_millis(),
            b.reset_after.as_secs()
        )
    }
}

/// Read the raw key/value pairs of a source (a directory or a file).
pub fn read_source(path: &Path) -> Result<BTreeMap<String, String>, FlagsError> {
    let read_err = |p: &Path, e: std::io::Error| FlagsError::Read {
        path: p.to_owned(),
        reason: e.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(|e| read_err(path, e))?;
    if meta.is_dir() {
        // A mounted ConfigMap: read the version `..data` points to now, resolved once, so a
        // swap in the middle of the read cannot mix two versions.
        let data = path.join("..data");
        let dir = match std::fs::canonicalize(&data) {
            Ok(version) if version.is_dir() => version,
            _ => path.to_owned(),
        };
        let mut out = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| read_err(&dir, e))? {
            let entry = entry.map_err(|e| read_err(path, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let file = entry.path();
            // Follow symlinks: a ConfigMap volume links each key to ..data/KEY.
            let meta = std::fs::metadata(&file).map_err(|e| read_err(&file, e))?;
            if !meta.is_file() {
                continue;
            }
            let text = read_small(&file, meta.len())?;
            out.insert(name, text.trim().to_owned());
        }
        Ok(out)
    } else {
        let text = read_small(path, meta.len())?;
        if text.trim_start().starts_with('{') {
            parse_json(path, &text)
        } else {
            parse_env(path, &text)
        }
    }
}

fn read_small(path: &Path, len: u64) -> Result<String, FlagsError> {
    if len > MAX_SOURCE_BYTES {
        return Err(FlagsError::TooLarge {
            path: path.to_owned(),
        });
    }
    std::fs::read_to_string(path).map_err(|e| FlagsError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// `KEY=VALUE` lines.
pub fn parse_env(path: &Path, text: &str) -> Result<BTreeMap<String, String>, FlagsError> {
    let mut out = BTreeMap::new();
    let mut lines_of: BTreeMap<String, usize> = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let syntax = || FlagsError::Syntax {
            path: path.to_owned(),
            line: number,
            text: line.chars().take(80).collect(),
        };
        let (key, value) = line.split_once('=').ok_or_else(syntax)?;
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(syntax());
        }
        let value = unquote(value.trim());
        if let Some(first) = lines_of.insert(key.to_owned(), number) {
            return Err(FlagsError::Duplicate {
                path: path.to_owned(),
                key: key.to_owned(),
                first,
                second: number,
            });
        }
        out.insert(key.to_owned(), value.to_owned());
    }
    Ok(out)
}

fn unquote(value: &str) -> &str {
    for q in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(q) && value.ends_with(q) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

/// A JSON object whose values are strings, numbers or booleans.
pub fn parse_json(path: &Path, text: &str) -> Result<BTreeMap<String, String>, FlagsError> {
    let json_err = |reason: String| FlagsError::Json {
        path: path.to_owned(),
        reason,
    };
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| json_err(e.to_string()))?;
    object
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                other => {
                    return Err(json_err(format!(
                        "key {k}: expected a string, number or boolean, got {other}"
                    )));
                }
            };
            Ok((k, text))
        })
        .collect()
}

/// The raw key/value pairs of a source.
pub type Raw = BTreeMap<String, String>;

/// Read and parse a source once.
pub fn load(path: &Path) -> Result<(Flags, Raw), FlagsError> {
    let raw = read_source(path)?;
    let flags = Flags::parse(path, &raw)?;
    Ok((flags, raw))
}

/// One successful load.
#[derive(Clone, Debug, Serialize)]
pub struct Loaded {
    pub flags: Flags,
    /// Every key of the source, including ones this service does not use.
    pub raw: BTreeMap<String, String>,
    /// Counts loads since start-up (1 is the initial load).
    pub version: u64,
    #[serde(with = "unix_ms")]
    pub loaded_at: SystemTime,
}

mod unix_ms {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let ms = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        s.serialize_u64(ms)
    }
}

/// The live flags: the current load, and the error of the last failed reload if the source is
/// broken right now.
pub struct FlagStore {
    path: PathBuf,
    current: watch::Sender<Arc<Loaded>>,
    last_error: Mutex<Option<String>>,
}

impl FlagStore {
    /// Load the source; start-up fails with the reason if it cannot be read.
    pub fn open(path: &Path) -> Result<Self, FlagsError> {
        let (flags, raw) = load(path)?;
        let loaded = Arc::new(Loaded {
            flags,
            raw,
            version: 1,
            loaded_at: SystemTime::now(),
        });
        Ok(FlagStore {
            path: path.to_owned(),
            current: watch::Sender::new(loaded),
            last_error: Mutex::new(None),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The flags in force.
    pub fn current(&self) -> Arc<Loaded> {
        self.current.borrow().clone()
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn read_changed(&self) -> Result<Option<(Flags, Raw)>, FlagsError> {
        let raw = read_source(&self.path)?;
        if raw == self.current.borrow().raw {
            return Ok(None);
        }
        Flags::parse(&self.path, &raw).map(|flags| Some((flags, raw)))
    }

    /// Read the source again. `Ok(true)` when the flags changed and were applied.
    ///
    /// A failed read is tried once more a moment later before it counts: a ConfigMap volume
    /// in the middle of its `..data` swap, or a file caught while being written, settles within
    /// milliseconds.
    pub fn reload(&self) -> Result<bool, FlagsError> {
        let result = self.read_changed().or_else(|_| {
            std::thread::sleep(Duration::from_millis(20));
            self.read_changed()
        });
        let mut last_error = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(None) => {
                *last_error = None;
                Ok(false)
            }
            Ok(Some((flags, raw))) => {
                *last_error = None;
                let version = self.current.borrow().version + 1;
                self.current.send_replace(Arc::new(Loaded {
                    flags,
                    raw,
                    version,
                    loaded_at: SystemTime::now(),
                }));
                Ok(true)
            }
            Err(e) => {
                *last_error = Some(e.to_string());
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tierguard::policy::effective::KEYS;

    fn full() -> BTreeMap<String, String> {
        let spec: tierguard::api::MemoryTierSpec =
            serde_json::from_value(serde_json::json!({"target": {"configMapName": "f"}})).unwrap();
        tierguard::policy::effective::baseline(&spec)
    }

    #[test]
    fn the_controllers_baseline_parses() {
        let flags = Flags::parse(Path::new("f"), &full()).unwrap();
        assert_eq!(flags.canary_sample_rate, 0.1);
        assert_eq!(flags.cache_ttl, Duration::from_secs(3600));
        assert_eq!(flags.breaker.latency_threshold, Duration::from_secs(5));
        assert!(KEYS.iter().all(|k| full().contains_key(*k)));
    }

    #[test]
    fn errors_name_the_key() {
        let mut raw = full();
        raw.insert(CANARY_SAMPLE_RATE.into(), "1.5".into());
        let err = Flags::parse(Path::new("f"), &raw).unwrap_err().to_string();
        assert!(err.contains("CANARY_SAMPLE_RATE=\"1.5\""), "{err}");
        raw = full();
        raw.remove(MEM0_SHADOW_MODE);
        let err = Flags::parse(Path::new("f"), &raw).unwrap_err().to_string();
        assert!(err.contains("missing key MEM0_SHADOW_MODE"), "{err}");
    }

    #[test]
    fn env_syntax() {
        let p = Path::new("flags.env");
        let raw = parse_env(p, "# c\n\nexport A=1\nB = \"x y\"\nC='z'\n").unwrap();
        assert_eq!(raw["A"], "1");
        assert_eq!(raw["B"], "x y");
        assert_eq!(raw["C"], "z");
        let err = parse_env(p, "A=1\nnonsense\n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        let err = parse_env(p, "A=1\nA=2\n").unwrap_err().to_string();
        assert!(err.contains("lines 1 and 2"), "{err}");
    }

    #[test]
    fn json_values() {
        let p = Path::new("flags.json");
        let raw = parse_json(p, r#"{"A": 0.05, "B": true, "C": "x"}"#).unwrap();
        assert_eq!(raw["A"], "0.05");
        assert_eq!(raw["B"], "true");
        assert!(parse_json(p, r#"{"A": [1]}"#).is_err());
    }
}
