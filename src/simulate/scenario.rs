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

use crate::api::{Duration, Signal, SignalValue};

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

/// The scenario-only input that makes the evicted_keys counter grow at a rate.
pub const EVICTIONS_PER_SECOND: &str = "redisEvictionsPerSecond";

/// Signal values to set, by the signal table's names; a signal left out keeps its value, `null`
/// makes it unknown.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SignalPatch {
    /// The signals set: a value, or `None` for unknown.
    pub values: BTreeMap<Signal, Option<SignalValue>>,
    /// Scenario only: the evicted_keys counter grows at this many keys per second.
    pub evictions_per_second: Option<Option<f64>>,
}

impl SignalPatch {
    /// What the patch does to `signal`: nothing (`None`), unknown (`Some(None)`) or a value.
    pub fn get(&self, signal: Signal) -> Option<Option<&SignalValue>> {
        self.values.get(&signal).map(Option::as_ref)
    }

    /// The same for a number.
    pub fn number(&self, signal: Signal) -> Option<Option<f64>> {
        self.get(signal).map(|v| v.and_then(SignalValue::as_gauge))
    }
}

/// Every name a patch accepts.
static PATCH_NAMES: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    Signal::ALL
        .iter()
        .map(|s| s.name())
        .chain([EVICTIONS_PER_SECOND])
        .collect()
});

impl<'de> Deserialize<'de> for SignalPatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(PatchVisitor)
    }
}

struct PatchVisitor;

/// One entry of a patch, read as its signal's type (so an error names the entry's path).
enum Entry {
    Signal(Signal, Option<SignalValue>),
    EvictionsPerSecond(Option<f64>),
}

struct EntrySeed<'k>(&'k str);

impl<'de> serde::de::DeserializeSeed<'de> for EntrySeed<'_> {
    type Value = Entry;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Entry, D::Error> {
        use serde::de::Error;
        if self.0 == EVICTIONS_PER_SECOND {
            return Option::<f64>::deserialize(d).map(Entry::EvictionsPerSecond);
        }
        let Some(signal) = Signal::parse(self.0) else {
            return Err(D::Error::unknown_field(self.0, &PATCH_NAMES));
        };
        let json = serde_json::Value::deserialize(d)?;
        if json.is_null() {
            return Ok(Entry::Signal(signal, None));
        }
        signal
            .value_from_json(json)
            .map(|v| Entry::Signal(signal, Some(v)))
            .map_err(D::Error::custom)
    }
}

impl<'de> serde::de::Visitor<'de> for PatchVisitor {
    type Value = SignalPatch;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a mapping of signal names to values")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<SignalPatch, A::Error> {
        let mut patch = SignalPatch::default();
        while let Some(key) = map.next_key::<String>()? {
            match map.next_value_seed(EntrySeed(&key))? {
                Entry::Signal(signal, value) => {
                    patch.values.insert(signal, value);
                }
                Entry::EvictionsPerSecond(rate) => patch.evictions_per_second = Some(rate),
            }
        }
        Ok(patch)
    }
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
    if let Some(Some(rate)) = p.evictions_per_second
        && !(rate.is_finite() && rate >= 0.0)
    {
        return Err(ScenarioProblem {
            path: format!("{path}.{EVICTIONS_PER_SECOND}"),
            message: format!("must be a finite number ≥ 0, found {rate}"),
        });
    }
    Ok(())
}

/// Names of the signals a patch sets, for the text output's "what changed".
pub fn describe(p: &SignalPatch) -> String {
    let show = |v: Option<String>| v.unwrap_or_else(|| "unknown".to_owned());
    let mut parts: BTreeMap<&str, String> = p
        .values
        .iter()
        .map(|(signal, value)| (signal.name(), show(value.as_ref().map(ToString::to_string))))
        .collect();
    if let Some(rate) = p.evictions_per_second {
        parts.insert(EVICTIONS_PER_SECOND, show(rate.map(|r| r.to_string())));
    }
    parts
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
