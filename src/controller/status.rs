//! The one place a MemoryTier's status is built: from the status before, the policy's decision,
//! what carrying it out did, and the time. Pure: it does no IO, so every rule of what status says
//! is tested without a server.

use jiff::Timestamp;

use super::execute::Executed;
use super::memory::{self, Recalled};
use crate::api::MemoryTierSpec;
use crate::api::conditions::{self, TierCondition, Truth};
use crate::api::{
    ConditionType, MAX_ACTIONS_IN_STATUS, MAX_INCIDENTS_IN_STATUS, MemoryReport, MemoryTierStatus,
    Observation, Phase, Reason,
};
use crate::policy::{self, DecideContext, Decision};

/// Everything one reconcile learnt.
pub struct Reconciled<'a> {
    pub decision: &'a Decision,
    pub observation: &'a Observation,
    pub executed: &'a Executed,
    pub recalled: &'a Recalled,
    pub generation: Option<i64>,
    pub now: Timestamp,
}

/// The status after a reconcile.
pub fn next_status(previous: &MemoryTierStatus, r: &Reconciled<'_>) -> MemoryTierStatus {
    let (decision, generation, now) = (r.decision, r.generation, r.now);
    let mut status = previous.clone();
    status.observed_generation = generation;
    status.phase = Some(decision.phase);

    let working = matches!(decision.phase, Phase::RollingBack | Phase::Recovering);
    let progress = [
        TierCondition::new(
            ConditionType::Reconciling,
            Truth::from_bool(working),
            if working {
                Reason::Mitigating
            } else {
                Reason::Reconciled
            },
            if working {
                format!("{}: see status.mitigations", decision.phase)
            } else {
                "the effective configuration matches the decision".to_owned()
            },
        ),
        TierCondition::new(ConditionType::Stalled, Truth::False, Reason::Reconciled, ""),
        memory_condition(r.recalled),
    ];
    for condition in decision.conditions.iter().chain(&progress) {
        conditions::merge(&mut status.conditions, condition, generation, now);
    }

    status.observed = Some(r.observation.clone());
    status.stampede_source = decision
        .memory
        .stampede
        .as_ref()
        .and_then(|s| s.source.clone());
    status.effective = Some(decision.effective.clone());
    status.mitigations = decision.mitigations.clone();

    for incident in &decision.incidents {
        status.incidents.retain(|i| i.id != incident.id);
        status.incidents.push(incident.clone());
    }
    for incident in &mut status.incidents {
        if let Some(location) = r.executed.reports.get(&incident.id) {
            incident.report = Some(location.clone());
        }
    }
    status.incidents.sort_by(|a, b| {
        b.started_at
            .cmp(&a.started_at)
            .then_with(|| a.id.cmp(&b.id))
    });
    status.incidents.truncate(MAX_INCIDENTS_IN_STATUS);

    // The policy reports level and usage; the remediation and audit come from the actuators, or
    // stay as they were.
    let before = previous.memory_report.clone().unwrap_or_default();
    status.memory_report = Some(MemoryReport {
        last_remediation: r.executed.remediation.clone().or(before.last_remediation),
        last_audit: r.executed.audit.clone().or(before.last_audit),
        ..decision.memory_report.clone()
    });

    let mut recent = r.executed.records.clone();
    recent.extend(previous.recent_actions.iter().cloned());
    // A background job's outcome replaces the record that said it started; it keeps the time it
    // was decided at, so the list stays newest first.
    for outcome in &r.executed.finished {
        let started = recent.iter_mut().find(|a| {
            a.action == outcome.action
                && a.at == outcome.at
                && a.outcome == crate::api::ActionOutcome::Started
        });
        match started {
            Some(record) => *record = outcome.clone(),
            None => recent.push(outcome.clone()),
        }
    }
    recent.sort_by_key(|a| std::cmp::Reverse(a.at));
    recent.truncate(MAX_ACTIONS_IN_STATUS);
    status.recent_actions = recent;

    status.policy = Some(memory::store(&decision.memory, r.recalled.reset.as_ref()));
    status
}

/// The status after the policy decides on `observation` and nothing is carried out: what a
/// DryRun shows, and what tests and tools that replay the policy see.
pub fn decided(
    previous: &MemoryTierStatus,
    spec: &MemoryTierSpec,
    observation: &Observation,
    ctx: &DecideContext,
    now: Timestamp,
) -> MemoryTierStatus {
    let recalled = memory::recall(previous, ctx.generation, now);
    let decision = policy::decide(spec, &recalled.memory, observation, now, ctx);
    next_status(
        previous,
        &Reconciled {
            decision: &decision,
            observation,
            executed: &Executed::default(),
            recalled: &recalled,
            generation: ctx.generation,
            now,
        },
    )
}

/// Whether the policy's memory was read, or started afresh (and why).
fn memory_condition(recalled: &Recalled) -> TierCondition {
    match &recalled.reset {
        None => TierCondition::new(
            ConditionType::PolicyMemory,
            Truth::True,
            Reason::MemoryRead,
            format!("status.policy read (version {})", memory::MEMORY_VERSION),
        ),
        Some(note) => TierCondition::new(
            ConditionType::PolicyMemory,
            Truth::False,
            Reason::MemoryReset,
            format!(
                "{}; started at {} from fresh memory and what the rest of status says (open incidents, the remediation cooldown, a rollback in force); this stays until the spec changes",
                note.why, note.at
            ),
        ),
    }
}

/// The status of a tier that cannot progress: Stalled, not Ready, with why.
pub fn stalled(
    previous: &MemoryTierStatus,
    reason: Reason,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> MemoryTierStatus {
    let mut status = previous.clone();
    status.observed_generation = generation;
    status.phase = Some(Phase::Stalled);
    for (type_, truth) in [
        (ConditionType::Stalled, Truth::True),
        (ConditionType::Ready, Truth::False),
        (ConditionType::Reconciling, Truth::False),
    ] {
        conditions::merge(
            &mut status.conditions,
            &TierCondition::new(type_, truth, reason, message),
            generation,
            now,
        );
    }
    status
}

/// Whether `status` already says this tier is stalled for `reason` with `message` (the Event
/// is then not repeated).
pub fn already_stalled(status: &MemoryTierStatus, reason: Reason, message: &str) -> bool {
    conditions::find(&status.conditions, ConditionType::Stalled).is_some_and(|c| {
        c.status == Truth::True.as_str() && c.reason == reason.as_str() && c.message == message
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ActionKind, ActionOutcome, ActionRecord, MemoryTier, PolicyMemory};
    use crate::policy::{AppliedConfig, DecideContext, decide};

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn spec() -> crate::api::MemoryTierSpec {
        let tier: MemoryTier = serde_json::from_value(serde_json::json!({
            "apiVersion": "tierguard.dev/v1alpha1", "kind": "MemoryTier",
            "metadata": {"name": "t", "namespace": "n"},
            "spec": {"target": {"configMapName": "flags"}},
        }))
        .unwrap();
        tier.spec
    }

    fn reconciled(
        previous: &MemoryTierStatus,
        observation: Observation,
        now: Timestamp,
    ) -> MemoryTierStatus {
        let recalled = memory::recall(previous, Some(1), now);
        let decision = decide(
            &spec(),
            &recalled.memory,
            &observation,
            now,
            &DecideContext {
                generation: Some(1),
                resume_token: None,
                applied: AppliedConfig::Unknown,
                last_audit: None,
            },
        );
        let executed = Executed {
            records: vec![ActionRecord {
                at: now,
                action: ActionKind::RenderConfig,
                reason: "first".into(),
                outcome: ActionOutcome::Ok,
                detail: None,
            }],
            ..Executed::default()
        };
        next_status(
            previous,
            &Reconciled {
                decision: &decision,
                observation: &observation,
                executed: &executed,
                recalled: &recalled,
                generation: Some(1),
                now,
            },
        )
    }

    #[test]
    fn unknown_signals_make_unknown_conditions() {
        let status = reconciled(&MemoryTierStatus::default(), Observation::default(), at(10));
        for type_ in [
            ConditionType::MemoryPressure,
            ConditionType::CacheStampede,
            ConditionType::BreakerOpen,
        ] {
            let c = conditions::find(&status.conditions, type_).unwrap();
            assert_eq!(c.status, "Unknown", "{type_}");
        }
        let ready = conditions::find(&status.conditions, ConditionType::Ready).unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(status.phase, Some(Phase::Healthy));
        // The memory is stored as a versioned document.
        assert_eq!(status.policy.as_ref().unwrap()["version"], 1);
        let c = conditions::find(&status.conditions, ConditionType::PolicyMemory).unwrap();
        assert_eq!(c.status, "True");
    }

    #[test]
    fn actions_accumulate_newest_first_and_transition_times_hold() {
        let first = reconciled(&MemoryTierStatus::default(), Observation::default(), at(10));
        let second = reconciled(&first, Observation::default(), at(40));
        assert_eq!(second.recent_actions.len(), 2);
        assert_eq!(second.recent_actions[0].at, at(40));
        let ready = conditions::find(&second.conditions, ConditionType::Ready).unwrap();
        assert_eq!(ready.last_transition_time.0, at(10));
        let decoded = memory::decode(second.policy.as_ref().unwrap()).unwrap();
        assert_eq!(decoded.last_tick, Some(at(40)));
        let _: PolicyMemory = decoded;
    }

    #[test]
    fn a_reset_memory_is_said_in_a_condition() {
        let broken = MemoryTierStatus {
            policy: Some(serde_json::json!({"version": 9})),
            ..MemoryTierStatus::default()
        };
        let status = reconciled(&broken, Observation::default(), at(10));
        let c = conditions::find(&status.conditions, ConditionType::PolicyMemory).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "MemoryReset")
        );
        assert!(c.message.contains("version 9"), "{}", c.message);
        // The next reconcile reads its own memory, and still says it was reset.
        let again = reconciled(&status, Observation::default(), at(40));
        let c = conditions::find(&again.conditions, ConditionType::PolicyMemory).unwrap();
        assert_eq!(c.status, "False");
    }

    #[test]
    fn a_stalled_tier_is_not_ready() {
        let status = stalled(
            &MemoryTierStatus::default(),
            Reason::SecretMissing,
            "Secret x missing",
            Some(2),
            at(5),
        );
        assert_eq!(status.phase, Some(Phase::Stalled));
        assert!(already_stalled(
            &status,
            Reason::SecretMissing,
            "Secret x missing"
        ));
        assert!(!already_stalled(
            &status,
            Reason::InvalidSpec,
            "Secret x missing"
        ));
        assert!(!conditions::is_true(
            &status.conditions,
            ConditionType::Ready
        ));
    }
}
