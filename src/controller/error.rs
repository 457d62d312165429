//! What can go wrong in one reconcile: one variant per step (read → validate → secrets →
//! observe → decide → act → status), each with the step's own error, and each its own label of
//! `tierguard_reconcile_errors_total`.

use crate::act::configmap::KubeActError;
use crate::api::validate::Problem;
use crate::observe::ConfigError;

crate::api::vocabulary::words! {
    /// The steps of a reconcile, as the error metric's `kind` label names them.
    pub enum Step {
        Read = "read",
        Validate = "validate",
        Secrets = "secrets",
        Observe = "observe",
        Decide = "decide",
        Act = "act",
        Status = "status",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read: {0}")]
    Read(#[from] ReadError),
    #[error("validate: {0}")]
    Validate(#[from] ValidateError),
    #[error("secrets: {0}")]
    Secrets(#[source] ConfigError),
    #[error("observe: {0}")]
    Observe(#[source] ConfigError),
    #[error("decide: {0}")]
    Decide(#[from] DecideError),
    #[error("act: {0}")]
    Act(#[from] KubeActError),
    #[error("status: {0}")]
    Status(#[from] StatusError),
}

/// The object itself cannot be worked on.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// It lacks what every MemoryTier has.
    #[error("MemoryTier without {0}")]
    Malformed(&'static str),
    /// It does not deserialize as a MemoryTier (a stored object the CRD's validation did not
    /// catch, or written for another version).
    #[error("the stored object is not a valid MemoryTier: {0}")]
    Invalid(String),
}

/// The spec breaks the CRD's rules (the API server normally rejects this; an older CRD may not).
#[derive(Debug, thiserror::Error)]
#[error("invalid spec: {}", summary(.0))]
pub struct ValidateError(pub Vec<Problem>);

/// What the policy needs besides the observation could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("reading the tier (the watch cache lags behind the last write): {0}")]
    ReadTier(#[source] Box<kube::Error>),
    #[error("reading the target ConfigMap: {0}")]
    ReadConfigMap(#[source] Box<kube::Error>),
}

/// Writing status failed.
#[derive(Debug, thiserror::Error)]
#[error("writing status: {0}")]
pub struct StatusError(#[source] pub Box<kube::Error>);

impl Error {
    /// The `kind` label of `tierguard_reconcile_errors_total`: the step that failed.
    pub fn metric_label(&self) -> &'static str {
        self.step().as_str()
    }

    /// The step that failed.
    pub fn step(&self) -> Step {
        match self {
            Error::Read(_) => Step::Read,
            Error::Validate(_) => Step::Validate,
            Error::Secrets(_) => Step::Secrets,
            Error::Observe(_) => Step::Observe,
            Error::Decide(_) => Step::Decide,
            Error::Act(_) => Step::Act,
            Error::Status(_) => Step::Status,
        }
    }
}

fn summary(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
