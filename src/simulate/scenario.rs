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
//!   - at: 55m
//!     probe: AuthFailure                               # what spec.breaker.probe finds from now on
//!     probeRetryAfter: 30s                             # with RateLimited: the 429's Retry-After
//! ```
//!
//! A signal left out of `signals` is unknown until a `set` gives it a value. Besides the
//! observation's signals, `set` accepts `redisEvictionsPerSecond`: the evicted_keys counter then
//! grows at that rate; `redisKeysWithoutTtlPerSecond`: the count of keys without a TTL grows at
//! that rate (a leak); and `clinics`: the cache lookups per clinic over the rate window, e.g.
//! `clinics: {"5": {hits: 20, misses: 380}, "9": {hits: 3000, misses: 10}}` (`null`: no
//! per-clinic readings). A change takes effect at the first tick at or after its `at`.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Deserializer};

use crate::api::signals::Cohort;
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
    /// The seed of the generators (`{normal: ...}`, `{poisson: ...}`, `{binomial: ...}`): the same
    /// seed replays the same noise.
    #[serde(default)]
    pub seed: u64,
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
    /// Repeat the step this often from `at` on (a daily traffic curve, a flapping signal).
    #[serde(default)]
    pub every: Option<Duration>,
    /// The last time a repeated step may happen (default: the end of the scenario).
    #[serde(default)]
    pub until: Option<Duration>,
    /// Signal values from then on.
    #[serde(default)]
    pub set: Option<SignalPatch>,
    /// Something that happens.
    #[serde(default)]
    pub event: Option<ScenarioEvent>,
    /// What the breaker probe (`spec.breaker.probe`) finds from then on, whenever it runs
    /// (Down, AuthFailure, RateLimited or Healthy; `null`: it finds nothing, as before any).
    #[serde(default, deserialize_with = "probe_answer")]
    pub probe: Option<Option<crate::api::ProbeClass>>,
    /// With `probe: RateLimited`: the Retry-After of the 429.
    #[serde(default)]
    pub probe_retry_after: Option<Duration>,
}

/// `probe: X` (some class) and `probe: null` (none) apart from a missing `probe`.
fn probe_answer<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<crate::api::ProbeClass>>, D::Error> {
    Option::<crate::api::ProbeClass>::deserialize(d).map(Some)
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
/// The key of a patch that holds per-cohort values.
pub const COHORTS: &str = "cohorts";
/// The scenario-only input that makes the keys-without-TTL count grow at a rate.
pub const KEYS_WITHOUT_TTL_PER_SECOND: &str = "redisKeysWithoutTtlPerSecond";
/// The key of a patch that holds the cache lookups per clinic.
pub const CLINICS: &str = "clinics";

/// One clinic's cache lookups over the rate window, as a scenario sets them.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClinicInput {
    pub hits: f64,
    pub misses: f64,
}

/// What a scenario sets a signal to: a value, or a draw at every tick from a seeded generator
/// (an A/A day is one line per signal, not a line per tick).
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// This value at every tick.
    Fixed(SignalValue),
    /// `{normal: [mean, sd]}`: a normal draw, at least 0.
    Normal { mean: f64, sd: f64 },
    /// `{poisson: mean}`: a Poisson count (requests over the rate window).
    Poisson { mean: f64 },
    /// `{binomial: percent}`: errors drawn as Binomial(requests, percent / 100) out of the same
    /// cohort's (or the service's) requests of this tick, as a percentage of them.
    Binomial { percent: f64 },
}

impl Input {
    /// The value the input is centred on: the fixed number or the generator's mean (a Binomial's
    /// percentage); none for a value that is not a number.
    pub fn mean(&self) -> Option<f64> {
        match self {
            Input::Fixed(v) => v.as_gauge(),
            Input::Normal { mean, .. } | Input::Poisson { mean } => Some(*mean),
            Input::Binomial { percent } => Some(*percent),
        }
    }
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Fixed(v) => write!(f, "{v}"),
            Input::Normal { mean, sd } => write!(f, "normal({mean}, {sd})"),
            Input::Poisson { mean } => write!(f, "poisson({mean})"),
            Input::Binomial { percent } => write!(f, "binomial({percent}%)"),
        }
    }
}

/// Signal inputs by the signal table's names; a signal left out keeps its input, `null` makes
/// it unknown.
pub type Inputs = BTreeMap<Signal, Option<Input>>;

/// What one `set` (or the `signals` at the start) changes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SignalPatch {
    /// The whole service's signals.
    pub values: Inputs,
    /// Each cohort's application signals (`cohorts: {canary: {...}, stable: {...}}`).
    pub cohorts: BTreeMap<Cohort, Inputs>,
    /// Scenario only: the evicted_keys counter grows at this many keys per second.
    pub evictions_per_second: Option<Option<f64>>,
    /// Scenario only: the keys-without-TTL count grows at this many keys per second.
    pub keys_without_ttl_per_second: Option<Option<f64>>,
    /// The cache lookups per clinic (`Some(None)`: none read).
    pub clinics: Option<Option<BTreeMap<String, ClinicInput>>>,
}

impl SignalPatch {
    /// What the patch does to the service's `signal`: nothing (`None`), unknown (`Some(None)`) or
    /// an input.
    pub fn get(&self, signal: Signal) -> Option<Option<&Input>> {
        self.values.get(&signal).map(Option::as_ref)
    }

    /// The fixed number the patch sets the service's `signal` to, if it sets one.
    pub fn number(&self, signal: Signal) -> Option<Option<f64>> {
        self.get(signal).map(|v| match v {
            Some(Input::Fixed(v)) => v.as_gauge(),
            _ => None,
        })
    }
}

/// Every name a patch accepts.
static PATCH_NAMES: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    Signal::ALL
        .iter()
        .map(|s| s.name())
        .chain([
            EVICTIONS_PER_SECOND,
            COHORTS,
            KEYS_WITHOUT_TTL_PER_SECOND,
            CLINICS,
        ])
        .collect()
});

/// The names a cohort's patch may set: the signals read per cohort.
static COHORT_PATCH_NAMES: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| {
        Signal::ALL
            .iter()
            .filter(|s| s.per_cohort())
            .map(|s| s.name())
            .collect()
    });

impl<'de> Deserialize<'de> for SignalPatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(PatchVisitor { cohort: false })
    }
}

struct PatchVisitor {
    /// Reading one cohort's values: only its application signals.
    cohort: bool,
}

/// One entry of a patch, read as its signal's type (so an error names the entry's path).
enum Entry {
    Signal(Signal, Option<Input>),
    EvictionsPerSecond(Option<f64>),
    KeysWithoutTtlPerSecond(Option<f64>),
    Clinics(Option<BTreeMap<String, ClinicInput>>),
    Cohorts(BTreeMap<Cohort, Inputs>),
}

struct EntrySeed<'k> {
    key: &'k str,
    cohort: bool,
}

/// A generator's parameters, as written.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
enum Generator {
    Normal([f64; 2]),
    Poisson(f64),
    Binomial(f64),
}

impl<'de> serde::de::DeserializeSeed<'de> for EntrySeed<'_> {
    type Value = Entry;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Entry, D::Error> {
        use serde::de::Error;
        if !self.cohort && self.key == EVICTIONS_PER_SECOND {
            return Option::<f64>::deserialize(d).map(Entry::EvictionsPerSecond);
        }
        if !self.cohort && self.key == KEYS_WITHOUT_TTL_PER_SECOND {
            return Option::<f64>::deserialize(d).map(Entry::KeysWithoutTtlPerSecond);
        }
        if !self.cohort && self.key == CLINICS {
            let clinics = Option::<BTreeMap<String, ClinicInput>>::deserialize(d)?;
            if let Some(bad) = clinics.iter().flatten().find(|(_, c)| {
                !(c.hits.is_finite() && c.misses.is_finite() && c.hits >= 0.0 && c.misses >= 0.0)
            }) {
                return Err(D::Error::custom(format!(
                    "clinic {:?}: hits and misses must be finite numbers ≥ 0",
                    bad.0
                )));
            }
            return Ok(Entry::Clinics(clinics));
        }
        if !self.cohort && self.key == COHORTS {
            let cohorts = BTreeMap::<Cohort, CohortPatch>::deserialize(d)?;
            return Ok(Entry::Cohorts(
                cohorts.into_iter().map(|(c, p)| (c, p.0)).collect(),
            ));
        }
        let signal = Signal::parse(self.key)
            .filter(|s| !self.cohort || s.per_cohort())
            .ok_or_else(|| {
                let names = if self.cohort {
                    &COHORT_PATCH_NAMES
                } else {
                    &PATCH_NAMES
                };
                D::Error::unknown_field(self.key, names)
            })?;
        let json = serde_json::Value::deserialize(d)?;
        if json.is_null() {
            return Ok(Entry::Signal(signal, None));
        }
        let input = if json.is_object() {
            let generator: Generator = serde_json::from_value(json).map_err(|e| {
                D::Error::custom(format!(
                    "{e}: a generator is {{normal: [mean, sd]}}, {{poisson: mean}} or {{binomial: percent}}"
                ))
            })?;
            let finite = |v: f64| v.is_finite() && v >= 0.0;
            match generator {
                Generator::Normal([mean, sd]) if finite(mean) && finite(sd) => {
                    Input::Normal { mean, sd }
                }
                Generator::Poisson(mean) if finite(mean) => Input::Poisson { mean },
                Generator::Binomial(percent) if finite(percent) && percent <= 100.0 => {
                    Input::Binomial { percent }
                }
                _ => {
                    return Err(D::Error::custom(
                        "generator parameters must be finite numbers ≥ 0 (a percentage at most 100)",
                    ));
                }
            }
        } else {
            Input::Fixed(signal.value_from_json(json).map_err(D::Error::custom)?)
        };
        Ok(Entry::Signal(signal, Some(input)))
    }
}

/// One cohort's values.
struct CohortPatch(Inputs);

impl<'de> Deserialize<'de> for CohortPatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(PatchVisitor { cohort: true })
            .map(|p| CohortPatch(p.values))
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
            let seed = EntrySeed {
                key: &key,
                cohort: self.cohort,
            };
            match map.next_value_seed(seed)? {
                Entry::Signal(signal, value) => {
                    patch.values.insert(signal, value);
                }
                Entry::EvictionsPerSecond(rate) => patch.evictions_per_second = Some(rate),
                Entry::KeysWithoutTtlPerSecond(rate) => {
                    patch.keys_without_ttl_per_second = Some(rate)
                }
                Entry::Clinics(clinics) => patch.clinics = Some(clinics),
                Entry::Cohorts(cohorts) => patch.cohorts = cohorts,
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
    let mut scenario = scenario;
    scenario.timeline = expand(&scenario.timeline, scenario.duration)?;
    Ok(scenario)
}

/// Most timeline steps a scenario may expand to.
const MAX_STEPS: usize = 1_000_000;

/// The timeline with every repeated step written out, in time order (steps at the same time in
/// the order they are listed).
fn expand(
    timeline: &[TimelineStep],
    duration: Duration,
) -> Result<Vec<TimelineStep>, ScenarioProblem> {
    let mut out = Vec::new();
    for (i, step) in timeline.iter().enumerate() {
        let Some(every) = step.every else {
            out.push((step.at, i, step.clone()));
            continue;
        };
        let until = step.until.unwrap_or(duration).min(duration);
        let mut at = step.at.as_std();
        while at <= until.as_std() {
            if out.len() >= MAX_STEPS {
                return Err(ScenarioProblem {
                    path: format!("timeline[{i}].every"),
                    message: format!("the timeline expands to more than {MAX_STEPS} steps"),
                });
            }
            out.push((
                Duration::from_std(at),
                i,
                TimelineStep {
                    at: Duration::from_std(at),
                    every: None,
                    until: None,
                    ..step.clone()
                },
            ));
            at += every.as_std();
        }
    }
    out.sort_by_key(|(at, i, _)| (*at, *i));
    Ok(out.into_iter().map(|(_, _, step)| step).collect())
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
        if step.set.is_none() && step.event.is_none() && step.probe.is_none() {
            return problem(
                format!("timeline[{i}]"),
                "needs `set`, `event` or `probe`".into(),
            );
        }
        if step.probe_retry_after.is_some()
            && step.probe != Some(Some(crate::api::ProbeClass::RateLimited))
        {
            return problem(
                format!("timeline[{i}].probeRetryAfter"),
                "only a RateLimited probe answer carries a Retry-After".into(),
            );
        }
        if step.every.is_some_and(|e| e.is_zero()) {
            return problem(
                format!("timeline[{i}].every"),
                "must be greater than zero".into(),
            );
        }
        if step.until.is_some() && step.every.is_none() {
            return problem(
                format!("timeline[{i}].until"),
                "only a repeated step (`every`) has an `until`".into(),
            );
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
    for (name, rate) in [
        (EVICTIONS_PER_SECOND, p.evictions_per_second),
        (KEYS_WITHOUT_TTL_PER_SECOND, p.keys_without_ttl_per_second),
    ] {
        if let Some(Some(rate)) = rate
            && !(rate.is_finite() && rate >= 0.0)
        {
            return Err(ScenarioProblem {
                path: format!("{path}.{name}"),
                message: format!("must be a finite number ≥ 0, found {rate}"),
            });
        }
    }
    Ok(())
}

/// Names of the signals a patch sets, for the text output's "what changed".
pub fn describe(p: &SignalPatch) -> String {
    let show = |v: Option<String>| v.unwrap_or_else(|| "unknown".to_owned());
    let mut parts: BTreeMap<String, String> = BTreeMap::new();
    for (signal, value) in &p.values {
        parts.insert(
            signal.name().to_owned(),
            show(value.as_ref().map(ToString::to_string)),
        );
    }
    for (cohort, values) in &p.cohorts {
        for (signal, value) in values {
            parts.insert(
                format!("{cohort}.{}", signal.name()),
                show(value.as_ref().map(ToString::to_string)),
            );
        }
    }
    if let Some(rate) = p.evictions_per_second {
        parts.insert(
            EVICTIONS_PER_SECOND.to_owned(),
            show(rate.map(|r| r.to_string())),
        );
    }
    if let Some(rate) = p.keys_without_ttl_per_second {
        parts.insert(
            KEYS_WITHOUT_TTL_PER_SECOND.to_owned(),
            show(rate.map(|r| r.to_string())),
        );
    }
    if let Some(clinics) = &p.clinics {
        parts.insert(
            CLINICS.to_owned(),
            show(clinics.as_ref().map(|c| {
                c.iter()
                    .map(|(id, c)| format!("{id}:{}/{}", c.hits, c.misses))
                    .collect::<Vec<_>>()
                    .join(" ")
            })),
        );
    }
    parts
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
