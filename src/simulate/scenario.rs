//! The scenario file: a scripted incident for `tierguard simulate`.
//!
//! ```yaml
//! description: P50 regression on the canary path      # optional, printed in the header
//! start: 2026-01-01T00:00:00Z                          # optional; this is the default
//! tick: 30s                                            # how often the policy runs
//! duration: 1h                                         # how long the scenario lasts
//! signals:                                             # the values at the start
//!   p50LatencyMs: 320
//!   errorRatePercent: 0.5
//!   cacheHitRatePercent: 97
//!   mem0WriteSuccessPercent: 99.8
//!   breakerState: closed                               # closed, open or half-open
//!   redisUsedMemoryPercent: 45
//!   redisEvictedKeys: 0
//!   redisRunId: 6f1c0d2e
//!   redisUptimeSeconds: 86400                          # advances with the clock
//! timeline:                                            # changes; values hold until changed
//!   - at: 5m
//!     set: {p50LatencyMs: 1500}
//!   - at: 20m
//!     set: {p50LatencyMs: null}                        # null: the signal becomes unknown
//!   - at: 30m
//!     event: redis-restart                             # new run_id, uptime 0, evicted_keys 0
//!   - at: 40m
//!     event: resume                                    # a human sets tierguard.dev/resume
//!   - at: 50m
//!     event: deploy                                    # the spec's generation goes up by one
//! ```
//!
//! A signal left out of `signals` is unknown until a `set` gives it a value. Besides the
//! observation's signals, `set` accepts `redisEvictionsPerSecond`: the evicted_keys counter then
//! grows at that rate. A change takes effect at the first tick at or after its `at`.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Deserializer};

use crate::api::{BreakerState, Duration};

/// A scripted incident.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    /// What the scenario shows.
    #[serde(default)]
    pub description: Option<String>,
    /// The virtual clock's start.
    #[serde(default = "default_start")]
    pub start: Timestamp,
    /// Time between two policy steps.
    pub tick: Duration,
    /// How long the scenario runs.
    pub duration: Duration,
    /// Signal values at the start.
    #[serde(default)]
    pub signals: SignalPatch,
    /// Changes over time.
    #[serde(default)]
    pub timeline: Vec<TimelineStep>,
}

fn default_start() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().expect("a valid timestamp")
}

/// One change of the timeline.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimelineStep {
    /// When, from the start.
    pub at: Duration,
    /// Signal values from then on.
    #[serde(default)]
    pub set: Option<SignalPatch>,
    /// Something that happens.
    #[serde(default)]
    pub event: Option<ScenarioEvent>,
}

/// Things that happen besides signal changes.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioEvent {
    /// Redis restarts: a new run_id, uptime from 0, evicted_keys from 0.
    RedisRestart,
    /// A human sets the resume annotation to a new value.
    Resume,
    /// The MemoryTier's spec changes (its generation goes up by one).
    Deploy,
}

impl ScenarioEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioEvent::RedisRestart => "redis-restart",
            ScenarioEvent::Resume => "resume",
            ScenarioEvent::Deploy => "deploy",
        }
    }
}

/// Signal values to set; a field left out keeps its value, `null` makes the signal unknown.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignalPatch {
    #[serde(default, deserialize_with = "present")]
    pub p50_latency_ms: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    pub p95_latency_ms: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    pub p99_latency_ms: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    pub error_rate_percent: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    pub cache_hit_rate_percent: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    pub mem0_write_success_percent: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    pub breaker_state: Option<Option<BreakerState>>,
    #[serde(default, deserialize_with = "present")]
    pub redis_used_memory_percent: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    pub redis_evicted_keys: Option<Option<u64>>,
    /// Scenario only: the evicted_keys counter grows at this many keys per second.
    #[serde(default, deserialize_with = "present")]
    pub redis_evictions_per_second: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    pub redis_run_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub redis_uptime_seconds: Option<Option<u64>>,
}

/// A field that is present is `Some`, whether its value is null (`Some(None)`) or not.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// What is wrong with a scenario, at a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioProblem {
    pub path: String,
    pub message: String,
}

/// Parse and check a scenario.
pub fn parse(text: &str) -> Result<Scenario, ScenarioProblem> {
    let value: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!("line {}, column {}", l.line(), l.column()))
            .unwrap_or_else(|| "<yaml>".into());
        let message = e.to_string();
        ScenarioProblem {
            path: at,
            message: format!(
                "invalid YAML: {}",
                message.lines().next().unwrap_or("cannot parse")
            ),
        }
    })?;
    if !value.is_object() {
        return Err(ScenarioProblem {
            path: "<document>".into(),
            message: "expected a mapping with tick, duration, signals and timeline".into(),
        });
    }
    let scenario: Scenario = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ScenarioProblem {
            path: if path == "." {
                "<document>".into()
            } else {
                path
            },
            message: e.into_inner().to_string(),
        }
    })?;
    check(&scenario)?;
    Ok(scenario)
}

fn check(s: &Scenario) -> Result<(), ScenarioProblem> {
    let problem = |path: String, message: String| Err(ScenarioProblem { path, message });
    if s.tick.is_zero() {
        return problem("tick".into(), "must be greater than zero".into());
    }
    if s.duration.as_std().as_nanos() / s.tick.as_std().as_nanos() > 10_000_000 {
        return problem(
            "tick".into(),
            format!(
                "{} over {} is more than ten million steps",
                s.tick, s.duration
            ),
        );
    }
    for (i, step) in s.timeline.iter().enumerate() {
        if step.set.is_none() && step.event.is_none() {
            return problem(format!("timeline[{i}]"), "needs `set` or `event`".into());
        }
        if step.at > s.duration {
            return problem(
                format!("timeline[{i}].at"),
                format!(
                    "{} is after the end of the scenario ({})",
                    step.at, s.duration
                ),
            );
        }
        if i > 0 && step.at < s.timeline[i - 1].at {
            return problem(
                format!("timeline[{i}].at"),
                format!(
                    "{} comes before the previous step ({}): list steps in time order",
                    step.at,
                    s.timeline[i - 1].at
                ),
            );
        }
        if let Some(patch) = &step.set {
            check_patch(patch, &format!("timeline[{i}].set"))?;
        }
    }
    check_patch(&s.signals, "signals")
}

fn check_patch(p: &SignalPatch, path: &str) -> Result<(), ScenarioProblem> {
    if let Some(Some(rate)) = p.redis_evictions_per_second
        && !(rate.is_finite() && rate >= 0.0)
    {
        return Err(ScenarioProblem {
            path: format!("{path}.redisEvictionsPerSecond"),
            message: format!("must be a finite number ≥ 0, found {rate}"),
        });
    }
    Ok(())
}

/// Names of the signals a patch sets, for the text output's "what changed".
pub fn describe(p: &SignalPatch) -> String {
    fn show<T: std::fmt::Display>(v: &Option<T>) -> String {
        v.as_ref()
            .map_or_else(|| "unknown".to_owned(), ToString::to_string)
    }
    let mut parts: BTreeMap<&str, String> = BTreeMap::new();
    let mut put = |name, value: Option<String>| {
        if let Some(v) = value {
            parts.insert(name, v);
        }
    };
    put("p50LatencyMs", p.p50_latency_ms.as_ref().map(show));
    put("p95LatencyMs", p.p95_latency_ms.as_ref().map(show));
    put("p99LatencyMs", p.p99_latency_ms.as_ref().map(show));
    put("errorRatePercent", p.error_rate_percent.as_ref().map(show));
    put(
        "cacheHitRatePercent",
        p.cache_hit_rate_percent.as_ref().map(show),
    );
    put(
        "mem0WriteSuccessPercent",
        p.mem0_write_success_percent.as_ref().map(show),
    );
    put(
        "breakerState",
        p.breaker_state
            .as_ref()
            .map(|b| b.map_or_else(|| "unknown".to_owned(), |b| b.as_str().to_owned())),
    );
    put(
        "redisUsedMemoryPercent",
        p.redis_used_memory_percent.as_ref().map(show),
    );
    put("redisEvictedKeys", p.redis_evicted_keys.as_ref().map(show));
    put(
        "redisEvictionsPerSecond",
        p.redis_evictions_per_second.as_ref().map(show),
    );
    put("redisRunId", p.redis_run_id.as_ref().map(show));
    put(
        "redisUptimeSeconds",
        p.redis_uptime_seconds.as_ref().map(show),
    );
    parts
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
