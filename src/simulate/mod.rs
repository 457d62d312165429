//! The policy on a virtual clock over a scenario: the cluster-free way to try a MemoryTier.
//!
//! `tierguard simulate MANIFEST --scenario FILE` reads one MemoryTier (checked like `tierguard
//! check`) and a scenario (see [`scenario`] for the format), runs [`crate::policy::decide`] at
//! every tick with the scenario's signal values, and prints what the controller would have done:
//! each transition, alert, incident change and action, with its reason. Actions count as carried
//! out at once (the ConfigMap holds what was rendered), except in DryRun, where nothing is.

pub mod backtest;
pub mod compare;
pub mod history;
pub mod output;
pub mod replay;
pub mod scenario;
pub mod score;
pub mod summary;
pub mod trial;

use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use crate::api::{
    KIND, MemoryTier, Observation, Phase, ProbeClass, RESUME_ANNOTATION, Signal, validate,
};
use crate::policy::{Action, Change, Decision};
pub use replay::{Replay, TierMeta};
pub use scenario::{Input, Scenario, ScenarioEvent, SignalPatch, TimelineStep};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Binomial, Distribution, Normal, Poisson};

use crate::api::SignalValue;
use crate::api::signals::Cohort;
use std::collections::BTreeMap;

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {location}: invalid YAML: {message}")]
    Yaml {
        path: PathBuf,
        location: String,
        message: String,
    },
    #[error("{path}: not a valid MemoryTier:\n{}", problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Manifest {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error("{path}: no {KIND} document found")]
    NoMemoryTier { path: PathBuf },
    #[error("{path}: {count} {KIND} documents found; simulate takes exactly one")]
    SeveralMemoryTiers { path: PathBuf, count: usize },
    #[error("{path}: {field}: {message}")]
    Scenario {
        path: PathBuf,
        field: String,
        message: String,
    },
}

/// Read one MemoryTier from a manifest file and validate it as the API server would.
pub fn load_manifest(path: &Path) -> Result<MemoryTier, SimulateError> {
    let text = std::fs::read_to_string(path).map_err(|source| SimulateError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_manifest(path, &text)
}

/// Parse one MemoryTier from manifest text; `path` names it in errors.
pub fn parse_manifest(path: &Path, text: &str) -> Result<MemoryTier, SimulateError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| SimulateError::Yaml {
        path: path.to_owned(),
        location: e
            .location()
            .map(|l| format!("line {}, column {}", l.line(), l.column()))
            .unwrap_or_else(|| "<yaml>".into()),
        message: e
            .to_string()
            .lines()
            .next()
            .unwrap_or("cannot parse")
            .to_owned(),
    })?;
    let tiers: Vec<&Value> = docs
        .iter()
        .filter(|d| !d.is_null())
        .filter(|d| {
            d.get("kind")
                .and_then(Value::as_str)
                .is_none_or(|k| k == KIND)
        })
        .collect();
    match tiers.as_slice() {
        [] => Err(SimulateError::NoMemoryTier {
            path: path.to_owned(),
        }),
        [doc] => validate::validate_document(doc).map_err(|problems| SimulateError::Manifest {
            path: path.to_owned(),
            problems: problems.iter().map(ToString::to_string).collect(),
        }),
        several => Err(SimulateError::SeveralMemoryTiers {
            path: path.to_owned(),
            count: several.len(),
        }),
    }
}

/// Read and check a scenario file.
pub fn load_scenario(path: &Path) -> Result<Scenario, SimulateError> {
    let text = std::fs::read_to_string(path).map_err(|source| SimulateError::Read {
        path: path.to_owned(),
        source,
    })?;
    scenario::parse(&text).map_err(|p| SimulateError::Scenario {
        path: path.to_owned(),
        field: p.path,
        message: p.message,
    })
}

/// One line of the simulation's record.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Seconds since the start.
    pub t: f64,
    pub at: Timestamp,
    /// The tier's phase after this step.
    pub phase: Phase,
    pub what: EntryKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum EntryKind {
    /// A scenario input: signals set or an event (text output only).
    Input(String),
    /// A transition, alert or incident change.
    Change(Change),
    /// An action (Events are left out: each repeats a change or an action already listed).
    Action {
        action: Action,
        dry_run: bool,
        /// For render-config: the keys whose value changed since the last render (from, to).
        changed: Vec<(String, Option<String>, Option<String>)>,
    },
}

/// The record of a run.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub entries: Vec<Entry>,
    /// The last step's decision.
    pub last: Decision,
    /// Seconds simulated.
    pub seconds: f64,
    /// Steps run.
    pub steps: u64,
    /// Steps that ended in each phase.
    pub phase_steps: std::collections::BTreeMap<Phase, u64>,
}

/// The simulated world: signal values, Redis's counters, the tier's metadata.
struct World {
    obs: Observation,
    /// Signals drawn again at every tick, by scope (None: the whole service).
    generated: BTreeMap<(Option<Cohort>, Signal), Input>,
    rng: StdRng,
    uptime_set: Option<(u64, Timestamp)>,
    evicted: f64,
    evictions_per_second: f64,
    keys_without_ttl: f64,
    keys_without_ttl_per_second: f64,
    /// spec.stampede.clinics: the label and how many clinics an observation keeps.
    clinic_label: String,
    clinics_kept: u32,
    generation: i64,
    resume: Option<String>,
    restarts: u32,
    resumes: u32,
    /// What the breaker probe finds when it runs, and a 429's Retry-After in seconds.
    probe: Option<(crate::api::ProbeClass, Option<u64>)>,
}

impl World {
    fn apply(&mut self, patch: &SignalPatch, now: Timestamp) -> Result<(), String> {
        for (cohort, inputs) in &patch.cohorts {
            for (signal, input) in inputs {
                let key = (Some(*cohort), *signal);
                self.generated.remove(&key);
                let cohorts = self.obs.cohorts.get_or_insert_with(Default::default);
                let target = cohorts.get_mut(*cohort);
                match input {
                    Some(Input::Fixed(v)) => target.set(*signal, Some(v.clone()))?,
                    None => target.set(*signal, None)?,
                    Some(generator) => {
                        self.generated.insert(key, generator.clone());
                    }
                }
            }
        }
        for (signal, input) in &patch.values {
            self.generated.remove(&(None, *signal));
            let value = match input {
                Some(Input::Fixed(v)) => Some(v.clone()),
                None => None,
                Some(generator) => {
                    self.generated.insert((None, *signal), generator.clone());
                    continue;
                }
            };
            self.obs.set(*signal, value)?;
            match signal {
                // The counter grows from what was set.
                Signal::RedisEvictedKeys => {
                    self.evicted = self.obs.redis_evicted_keys.unwrap_or(0) as f64;
                }
                // Uptime advances with the virtual clock from what was set.
                Signal::RedisUptimeSeconds => {
                    self.uptime_set = self.obs.redis_uptime_seconds.map(|up| (up, now));
                }
                Signal::RedisKeysWithoutTtl => {
                    self.keys_without_ttl = self.obs.redis_keys_without_ttl.unwrap_or(0) as f64;
                }
                _ => {}
            }
        }
        if let Some(v) = patch.keys_without_ttl_per_second {
            self.keys_without_ttl_per_second = v.unwrap_or(0.0);
            if self.obs.redis_keys_without_ttl.is_none() && self.keys_without_ttl_per_second > 0.0 {
                self.obs.redis_keys_without_ttl = Some(self.keys_without_ttl as u64);
            }
        }
        if let Some(clinics) = &patch.clinics {
            self.obs.clinics = clinics.as_ref().map(|c| {
                crate::api::ClinicBreakdown::busiest(
                    &self.clinic_label,
                    c.iter().map(|(id, c)| crate::api::ClinicCache {
                        clinic: id.clone(),
                        hits: c.hits,
                        misses: c.misses,
                    }),
                    self.clinics_kept,
                )
            });
        }
        if let Some(v) = patch.evictions_per_second {
            self.evictions_per_second = v.unwrap_or(0.0);
            if self.obs.redis_evicted_keys.is_none() && self.evictions_per_second > 0.0 {
                self.obs.redis_evicted_keys = Some(self.evicted as u64);
            }
        }
        Ok(())
    }

    fn event(&mut self, event: ScenarioEvent, now: Timestamp) -> Result<(), String> {
        match event {
            ScenarioEvent::RedisRestart => {
                if self.obs.redis_run_id.is_none() && self.uptime_set.is_none() {
                    return Err("a restart cannot be seen without redisRunId or redisUptimeSeconds: set one of them first".into());
                }
                self.restarts += 1;
                if self.obs.redis_run_id.is_some() {
                    self.obs.redis_run_id = Some(format!(
                        "{:040x}",
                        0x5eed_0000_u64 + u64::from(self.restarts)
                    ));
                }
                self.uptime_set = Some((0, now));
                self.obs.redis_uptime_seconds = Some(0);
                if self.obs.redis_evicted_keys.is_some() {
                    self.obs.redis_evicted_keys = Some(0);
                }
                self.evicted = 0.0;
                if self.obs.redis_keys_without_ttl.is_some() {
                    self.obs.redis_keys_without_ttl = Some(0);
                }
                self.keys_without_ttl = 0.0;
            }
            ScenarioEvent::Resume => {
                self.resumes += 1;
                self.resume = Some(format!("simulated-resume-{}", self.resumes));
            }
            ScenarioEvent::Deploy => self.generation += 1,
        }
        Ok(())
    }

    /// Advance the counters to `now` (from `before`).
    fn advance(&mut self, before: Timestamp, now: Timestamp) {
        let dt = crate::policy::window::elapsed(now, before).as_secs_f64();
        if self.evictions_per_second > 0.0 && self.obs.redis_evicted_keys.is_some() {
            self.evicted += self.evictions_per_second * dt;
            self.obs.redis_evicted_keys = Some(self.evicted.floor() as u64);
        }
        if self.keys_without_ttl_per_second > 0.0 && self.obs.redis_keys_without_ttl.is_some() {
            self.keys_without_ttl += self.keys_without_ttl_per_second * dt;
            self.obs.redis_keys_without_ttl = Some(self.keys_without_ttl.floor() as u64);
        }
        if let Some((base, at)) = self.uptime_set {
            let up = base.saturating_add(crate::policy::window::elapsed(now, at).as_secs());
            self.obs.redis_uptime_seconds = Some(up);
        }
        self.obs.at = Some(now);
    }

    /// Draw this tick's value of every generated signal: the counts first, then the error
    /// percentages out of them.
    fn draw(&mut self) -> Result<(), String> {
        let mut keys: Vec<(Option<Cohort>, Signal)> = self.generated.keys().copied().collect();
        keys.sort_by_key(|(_, s)| *s != Signal::Requests);
        for key in keys {
            let (scope, signal) = key;
            let input = self.generated[&key].clone();
            let value = match input {
                Input::Fixed(v) => v.as_gauge().unwrap_or(0.0),
                Input::Normal { mean, sd } => Normal::new(mean, sd)
                    .map_err(|e| format!("{signal}: {e}"))?
                    .sample(&mut self.rng)
                    .max(0.0),
                Input::Poisson { mean } if mean > 0.0 => Poisson::new(mean)
                    .map_err(|e| format!("{signal}: {e}"))?
                    .sample(&mut self.rng),
                Input::Poisson { .. } => 0.0,
                Input::Binomial { percent } => {
                    let requests = match scope {
                        Some(c) => self.obs.cohorts.as_ref().and_then(|o| o.get(c).requests),
                        None => self.obs.requests,
                    };
                    let n = requests.unwrap_or(0.0).round().max(0.0) as u64;
                    if n == 0 {
                        f64::NAN
                    } else {
                        let errors = Binomial::new(n, percent / 100.0)
                            .map_err(|e| format!("{signal}: {e}"))?
                            .sample(&mut self.rng);
                        100.0 * errors as f64 / n as f64
                    }
                }
            };
            let value = Some(SignalValue::Number(value)).filter(|_| value.is_finite());
            match scope {
                None => self.obs.set(signal, value)?,
                Some(c) => self
                    .obs
                    .cohorts
                    .get_or_insert_with(Default::default)
                    .get_mut(c)
                    .set(signal, value)?,
            }
        }
        Ok(())
    }
}

/// Load a manifest and a scenario and run them.
pub fn run_files(
    manifest: &Path,
    scenario_path: &Path,
) -> Result<(MemoryTier, Scenario, Outcome), SimulateError> {
    let tier = load_manifest(manifest)?;
    let scenario = load_scenario(scenario_path)?;
    let outcome =
        run_inner(&tier, &scenario).map_err(|(field, message)| SimulateError::Scenario {
            path: scenario_path.to_owned(),
            field,
            message,
        })?;
    Ok((tier, scenario, outcome))
}

/// Run a scenario against a MemoryTier.
/// The reading of a probe made now, if one is due as the controller would make it.
fn probe_reading(
    tier: &MemoryTier,
    world: &World,
    memory: &crate::api::PolicyMemory,
    now: Timestamp,
) -> Option<crate::api::ProbeReading> {
    let spec = tier.spec.breaker.probe.as_ref()?;
    let (class, retry_after) = world.probe?;
    let last = memory
        .breaker
        .diagnosis
        .as_ref()
        .map(|d| (d.last_probe_at, d.not_before));
    let due = crate::policy::diagnosis::probe_due(
        spec.interval.as_std(),
        last,
        world.obs.breaker_state,
        now,
    );
    due.then(|| crate::api::ProbeReading {
        at: now,
        class,
        // What the real probe would say of such an answer, marked as scripted.
        detail: match (class, retry_after) {
            (ProbeClass::Down, _) => "health: no answer (scripted)".to_owned(),
            (ProbeClass::AuthFailure, _) => {
                "authenticated call answered HTTP 401: the API key is refused (scripted)".to_owned()
            }
            (ProbeClass::RateLimited, Some(s)) => {
                format!("health answered HTTP 429 (Retry-After {s}s) (scripted)")
            }
            (ProbeClass::RateLimited, None) => "health answered HTTP 429 (scripted)".to_owned(),
            (ProbeClass::Healthy, _) => {
                "health HTTP 200; authenticated call HTTP 200 (scripted)".to_owned()
            }
        },
        retry_after_seconds: retry_after,
        latency_ms: None,
    })
}

pub fn run(tier: &MemoryTier, scenario: &Scenario) -> Result<Outcome, SimulateError> {
    run_inner(tier, scenario).map_err(|(field, message)| SimulateError::Scenario {
        path: PathBuf::from("<scenario>"),
        field,
        message,
    })
}

fn run_inner(tier: &MemoryTier, scenario: &Scenario) -> Result<Outcome, (String, String)> {
    let start = scenario.start;
    let mut world = World {
        obs: Observation::default(),
        generated: BTreeMap::new(),
        rng: StdRng::seed_from_u64(scenario.seed),
        uptime_set: None,
        evicted: 0.0,
        evictions_per_second: 0.0,
        keys_without_ttl: 0.0,
        keys_without_ttl_per_second: 0.0,
        clinic_label: tier.spec.stampede.clinics.label.clone(),
        clinics_kept: tier.spec.stampede.clinics.keep,
        generation: tier.metadata.generation.unwrap_or(1),
        resume: tier
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RESUME_ANNOTATION).cloned()),
        restarts: 0,
        resumes: 0,
        probe: None,
    };
    world
        .apply(&scenario.signals, start)
        .map_err(|e| ("signals".to_owned(), e))?;

    let tick = scenario.tick.as_std();
    let duration = scenario.duration.as_std();
    let mut replay = Replay::new(&tier.spec);
    let mut next_step = 0usize;
    let mut previous_now = start;
    let mut offset = std::time::Duration::ZERO;
    loop {
        let now = start
            .checked_add(
                SignedDuration::try_from(offset)
                    .map_err(|e| ("duration".to_owned(), e.to_string()))?,
            )
            .map_err(|e| {
                (
                    "duration".to_owned(),
                    format!("the scenario runs past the end of time: {e}"),
                )
            })?;
        let t = offset.as_secs_f64();
        world.advance(previous_now, now);
        previous_now = now;
        let mut inputs = Vec::new();
        while let Some(step) = scenario.timeline.get(next_step)
            && step.at.as_std() <= offset
        {
            if let Some(patch) = &step.set {
                world
                    .apply(patch, now)
                    .map_err(|e| (format!("timeline[{next_step}].set"), e))?;
                inputs.push(format!("set {}", scenario::describe(patch)));
            }
            if let Some(event) = step.event {
                world
                    .event(event, now)
                    .map_err(|e| (format!("timeline[{next_step}].event"), e))?;
                inputs.push(format!("event {}", event.as_str()));
            }
            if let Some(answer) = step.probe {
                if tier.spec.breaker.probe.is_none() {
                    return Err((
                        format!("timeline[{next_step}].probe"),
                        "the manifest sets no spec.breaker.probe: nothing would probe".to_owned(),
                    ));
                }
                let retry = step.probe_retry_after.map(|d| d.as_std().as_secs());
                world.probe = answer.map(|class| (class, retry));
                inputs.push(match answer {
                    Some(class) => format!("probe answers from now on: {class}"),
                    None => "probe answers from now on: none".to_owned(),
                });
            }
            next_step += 1;
        }
        world.obs.at = Some(now);
        world.draw().map_err(|e| ("signals".to_owned(), e))?;
        world.obs.breaker_probe = probe_reading(tier, &world, replay.memory(), now);
        if let Some(probe) = &world.obs.breaker_probe {
            inputs.push(format!("breaker probe: {}: {}", probe.class, probe.detail));
        }
        let meta = TierMeta {
            generation: Some(world.generation),
            resume_token: world.resume.clone(),
        };
        replay.step(t, now, &world.obs, &meta, inputs);

        offset += tick;
        if offset > duration {
            break;
        }
    }
    Ok(replay
        .finish(duration.as_secs_f64())
        .expect("at least one step runs"))
}
