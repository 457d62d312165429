//! What can go wrong in one reconcile, each kind with its own metric label.

use crate::act::configmap::KubeActError;
use crate::api::validate::Problem;
use crate::observe::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec breaks the CRD's rules (the API server normally rejects this; an older CRD may not).
    #[error("invalid spec: {}", summary(.0))]
    InvalidSpec(Vec<Problem>),

    /// A Secret or key the spec names is missing or unreadable.
    #[error("{0}")]
    Secrets(#[from] ConfigError),

    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[source] Box<kube::Error>),

    /// An actuator's Kubernetes write failed.
    #[error("{0}")]
    Act(#[from] KubeActError),

    /// The object lacks what every MemoryTier has (namespace, name).
    #[error("MemoryTier without {0}")]
    Malformed(&'static str),
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(Box::new(e))
    }
}

impl Error {
    /// Every `kind` label, so each error counter exists (at 0) from start-up.
    pub const KINDS: [&'static str; 5] =
        ["invalid_spec", "secrets", "kube_api", "action", "malformed"];

    /// The `kind` label of `tierguard_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Secrets(_) => "secrets",
            Error::Kube(_) => "kube_api",
            Error::Act(_) => "action",
            Error::Malformed(_) => "malformed",
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
