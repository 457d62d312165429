//! Condition types and reasons, and merging that moves `lastTransitionTime` only on a real flip.
//!
//! Ready, Reconciling and Stalled follow kstatus, so Argo CD, Flux and `kubectl wait` understand
//! a MemoryTier's health; the others are the runbooks' domain conditions.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::{MemoryTierStatus, Phase};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const ROLLED_BACK: &str = "RolledBack";
pub const MEMORY_PRESSURE: &str = "MemoryPressure";
pub const CACHE_STAMPEDE: &str = "CacheStampede";
pub const BREAKER_OPEN: &str = "BreakerOpen";

/// Every condition type the controller sets, in the order they are listed in status.
pub const ALL: [&str; 7] = [
    READY,
    RECONCILING,
    STALLED,
    ROLLED_BACK,
    MEMORY_PRESSURE,
    CACHE_STAMPEDE,
    BREAKER_OPEN,
];

pub mod reasons {
    pub const RECONCILED: &str = "Reconciled";
    pub const HEALTHY: &str = "Healthy";
    pub const MITIGATING: &str = "Mitigating";
    pub const ROLLING_BACK: &str = "RollingBack";
    pub const ROLLBACK_VERIFIED: &str = "RollbackVerified";
    pub const AWAITING_RESUME: &str = "AwaitingResume";
    pub const RECOVERING: &str = "Recovering";
    pub const PAUSED: &str = "Paused";
    pub const DRY_RUN: &str = "DryRun";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const SECRET_MISSING: &str = "SecretMissing";
    pub const OBSERVE_FAILED: &str = "ObserveFailed";
    pub const ACTION_FAILED: &str = "ActionFailed";
    pub const MEMORY_OK: &str = "MemoryOk";
    pub const MEMORY_WATCH: &str = "MemoryWatch";
    pub const MEMORY_WARNING: &str = "MemoryWarning";
    pub const MEMORY_CRITICAL: &str = "MemoryCritical";
    pub const EVICTIONS: &str = "Evictions";
    pub const STAMPEDE_DETECTED: &str = "StampedeDetected";
    pub const COLD_START: &str = "ColdStart";
    pub const NO_STAMPEDE: &str = "NoStampede";
    pub const BREAKER_OPENED: &str = "BreakerOpened";
    pub const BREAKER_CLOSED: &str = "BreakerClosed";
    pub const NOT_ROLLED_BACK: &str = "NotRolledBack";
    pub const SIGNALS_UNKNOWN: &str = "SignalsUnknown";
}

/// Reconciling while the controller is mid-change (a rollback or a ramp), and not Stalled: what a
/// reconcile that went through the whole pipeline says about its progress.
pub fn set_progress(status: &mut MemoryTierStatus, generation: Option<i64>, now: Timestamp) {
    let phase = status.phase.unwrap_or_default();
    let working = matches!(phase, Phase::RollingBack | Phase::Recovering);
    merge(
        &mut status.conditions,
        condition(
            RECONCILING,
            working,
            if working {
                reasons::MITIGATING
            } else {
                reasons::RECONCILED
            },
            if working {
                format!("{phase}: see status.mitigations")
            } else {
                "the effective configuration matches the decision".to_owned()
            },
            generation,
            now,
        ),
    );
    merge(
        &mut status.conditions,
        condition(STALLED, false, reasons::RECONCILED, "", generation, now),
    );
}

/// The tier cannot progress (an invalid spec, a missing Secret): Stalled and not Ready.
pub fn set_stalled(
    status: &mut MemoryTierStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    status.observed_generation = generation;
    status.phase = Some(Phase::Stalled);
    for (type_, value) in [(STALLED, true), (READY, false), (RECONCILING, false)] {
        merge(
            &mut status.conditions,
            condition(type_, value, reason, message, generation, now),
        );
    }
}

/// Build a condition. `status` is "True", "False" or "Unknown".
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time: Time(now),
    }
}

/// Put `new` into `conditions`, keeping the old `lastTransitionTime` unless the status flipped.
pub fn merge(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
    conditions.sort_by_key(|c| ALL.iter().position(|t| *t == c.type_).unwrap_or(ALL.len()));
}

/// Find a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of this type is present and True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn transition_time_moves_only_on_a_flip() {
        let mut conds = Vec::new();
        merge(
            &mut conds,
            condition(READY, true, "A", "first", Some(1), at(100)),
        );
        merge(
            &mut conds,
            condition(READY, true, "B", "second", Some(2), at(200)),
        );
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time.0, at(100));
        assert_eq!(conds[0].reason, "B");
        assert_eq!(conds[0].observed_generation, Some(2));
        merge(
            &mut conds,
            condition(READY, false, "C", "third", Some(2), at(300)),
        );
        assert_eq!(conds[0].last_transition_time.0, at(300));
        assert_eq!(conds[0].status, "False");
    }

    #[test]
    fn conditions_keep_a_stable_order() {
        let mut conds = Vec::new();
        merge(
            &mut conds,
            condition(BREAKER_OPEN, false, "x", "", None, at(1)),
        );
        merge(&mut conds, condition(READY, true, "x", "", None, at(1)));
        merge(&mut conds, condition(STALLED, false, "x", "", None, at(1)));
        let types: Vec<_> = conds.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [READY, STALLED, BREAKER_OPEN]);
        assert!(is_true(&conds, READY));
        assert!(!is_true(&conds, STALLED));
    }
}
