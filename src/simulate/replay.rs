//! The replay itself: [`crate::policy::decide`] step by step on observations that come from a
//! scenario or from history, recording each step's changes and actions as [`Entry`]s.
//!
//! Actions count as carried out at once: the ConfigMap holds what was rendered (except in DryRun,
//! where nothing is), which is what the controller's next reconcile would read back.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::{Entry, EntryKind, Outcome};
use crate::api::{MemoryTierSpec, Observation, Phase, PolicyMemory};
use crate::policy::{Action, AppliedConfig, DecideContext, Decision, decide, effective};

/// What the tier's metadata says at a step: its generation and the resume annotation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TierMeta {
    pub generation: Option<i64>,
    pub resume_token: Option<String>,
}

/// A run of the policy in progress.
pub struct Replay<'a> {
    spec: &'a MemoryTierSpec,
    memory: PolicyMemory,
    applied: AppliedConfig,
    rendered: Option<effective::ConfigMap>,
    entries: Vec<Entry>,
    last: Option<Decision>,
    steps: u64,
    phase_steps: BTreeMap<Phase, u64>,
}

impl<'a> Replay<'a> {
    /// A replay from fresh memory, the target ConfigMap not yet rendered.
    pub fn new(spec: &'a MemoryTierSpec) -> Self {
        Replay {
            spec,
            memory: PolicyMemory::default(),
            applied: AppliedConfig::Absent,
            rendered: None,
            entries: Vec::new(),
            last: None,
            steps: 0,
            phase_steps: BTreeMap::new(),
        }
    }

    /// Run one step at `now` (`t` seconds from the start) on `observation`; `inputs` are shown
    /// before the step's changes (text output only).
    pub fn step(
        &mut self,
        t: f64,
        now: Timestamp,
        observation: &Observation,
        meta: &TierMeta,
        inputs: Vec<String>,
    ) -> &Decision {
        let ctx = DecideContext {
            generation: meta.generation,
            resume_token: meta.resume_token.clone(),
            applied: self.applied.clone(),
            last_audit: None,
        };
        let decision = decide(self.spec, &self.memory, observation, now, &ctx);
        let phase = decision.phase;
        let entry = |what| Entry {
            t,
            at: now,
            phase,
            what,
        };
        self.entries
            .extend(inputs.into_iter().map(|i| entry(EntryKind::Input(i))));
        self.entries.extend(
            decision
                .changes
                .iter()
                .map(|c| entry(EntryKind::Change(c.clone()))),
        );
        for action in &decision.actions {
            if matches!(action, Action::Event { .. }) {
                continue;
            }
            let changed = match action {
                Action::RenderConfig { config, hash, .. } => {
                    let diff = diff(self.rendered.as_ref(), config);
                    if !decision.dry_run {
                        self.applied = AppliedConfig::Hash(hash.clone());
                    }
                    self.rendered = Some(config.clone());
                    diff
                }
                _ => Vec::new(),
            };
            self.entries.push(entry(EntryKind::Action {
                action: action.clone(),
                dry_run: decision.dry_run,
                changed,
            }));
        }
        self.memory = decision.memory.clone();
        self.steps += 1;
        *self.phase_steps.entry(phase).or_default() += 1;
        self.last.insert(decision)
    }

    /// The memory the next step starts from.
    pub fn memory(&self) -> &PolicyMemory {
        &self.memory
    }

    /// The record of the run, `seconds` long; none when no step ran.
    pub fn finish(self, seconds: f64) -> Option<Outcome> {
        Some(Outcome {
            entries: self.entries,
            last: self.last?,
            seconds,
            steps: self.steps,
            phase_steps: self.phase_steps,
        })
    }
}

/// The keys whose value a render changes: (key, before, after).
fn diff(
    before: Option<&effective::ConfigMap>,
    after: &effective::ConfigMap,
) -> Vec<(String, Option<String>, Option<String>)> {
    let Some(before) = before else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in after {
        if before.get(k) != Some(v) {
            out.push((k.clone(), before.get(k).cloned(), Some(v.clone())));
        }
    }
    for (k, v) in before {
        if !after.contains_key(k) {
            out.push((k.clone(), Some(v.clone()), None));
        }
    }
    out
}
