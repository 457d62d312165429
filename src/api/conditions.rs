//! Conditions: the tier's conditions as the policy and the controller decide them, and merging
//! into Kubernetes conditions so that `lastTransitionTime` moves only on a real flip.
//!
//! Ready, Reconciling and Stalled follow kstatus, so Argo CD, Flux and `kubectl wait` understand
//! a MemoryTier's health; the others are the runbooks' domain conditions. A condition whose truth
//! is not known (its signals are unknown) is `Unknown`, as Kubernetes conventions ask.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::{ConditionType, Reason};

/// Whether a condition holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Truth {
    True,
    False,
    Unknown,
}

impl Truth {
    pub const fn as_str(self) -> &'static str {
        match self {
            Truth::True => "True",
            Truth::False => "False",
            Truth::Unknown => "Unknown",
        }
    }

    pub const fn from_bool(value: bool) -> Self {
        if value { Truth::True } else { Truth::False }
    }
}

/// One condition of a tier, before it is stamped with a generation and a transition time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierCondition {
    pub type_: ConditionType,
    pub status: Truth,
    pub reason: Reason,
    pub message: String,
}

impl TierCondition {
    pub fn new(
        type_: ConditionType,
        status: Truth,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        TierCondition {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Put `new` into `conditions`, keeping the old `lastTransitionTime` unless the status flipped.
pub fn merge(
    conditions: &mut Vec<Condition>,
    new: &TierCondition,
    observed_generation: Option<i64>,
    now: Timestamp,
) {
    let mut new = Condition {
        type_: new.type_.as_str().to_owned(),
        status: new.status.as_str().to_owned(),
        reason: new.reason.as_str().to_owned(),
        message: new.message.clone(),
        observed_generation,
        last_transition_time: Time(now),
    };
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
    let rank = |c: &Condition| {
        ConditionType::parse(&c.type_).map_or(ConditionType::ALL.len(), |t| {
            ConditionType::ALL.iter().position(|x| *x == t).unwrap_or(0)
        })
    };
    conditions.sort_by_key(rank);
}

/// Find a condition by type.
pub fn find(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

/// Whether the condition of this type is present and True.
pub fn is_true(conditions: &[Condition], type_: ConditionType) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == Truth::True.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn ready(status: Truth, reason: Reason) -> TierCondition {
        TierCondition::new(ConditionType::Ready, status, reason, "")
    }

    #[test]
    fn transition_time_moves_only_on_a_flip() {
        let mut conds = Vec::new();
        merge(
            &mut conds,
            &ready(Truth::True, Reason::Healthy),
            Some(1),
            at(100),
        );
        merge(
            &mut conds,
            &ready(Truth::True, Reason::DryRun),
            Some(2),
            at(200),
        );
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time.0, at(100));
        assert_eq!(conds[0].reason, "DryRun");
        assert_eq!(conds[0].observed_generation, Some(2));
        merge(
            &mut conds,
            &ready(Truth::Unknown, Reason::SignalsUnknown),
            Some(2),
            at(300),
        );
        assert_eq!(conds[0].last_transition_time.0, at(300));
        assert_eq!(conds[0].status, "Unknown");
    }

    #[test]
    fn conditions_keep_a_stable_order() {
        let mut conds = Vec::new();
        for type_ in [
            ConditionType::BreakerOpen,
            ConditionType::Ready,
            ConditionType::Stalled,
        ] {
            merge(
                &mut conds,
                &TierCondition::new(type_, Truth::False, Reason::Reconciled, ""),
                None,
                at(1),
            );
        }
        let types: Vec<_> = conds.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "Stalled", "BreakerOpen"]);
        assert!(!is_true(&conds, ConditionType::Ready));
    }
}
