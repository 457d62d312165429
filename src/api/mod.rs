//! The `MemoryTier` API (`tierguard.dev/v1alpha1`): spec, status, conditions and offline validation.
//!
//! Unknown fields are tolerated when an object is read (an older controller must not choke on a
//! newer CRD); `tierguard check` reports them, since a misspelt field is silently pruned by the
//! API server.

pub mod bounds;
pub mod clinics;
pub mod conditions;
mod duration;
pub mod exporter;
pub mod impact;
pub mod probe;
pub mod redis_next;
pub mod signals;
mod spec;
mod status;
pub mod validate;
pub mod vocabulary;

pub use clinics::{ClinicBreakdown, ClinicCache, ClinicRate, ClinicsSpec, StampedeSource};
pub use duration::{DURATION_PATTERN, Duration, ParseDurationError};
pub use exporter::RedisExporterSpec;
pub use impact::{IncidentImpact, Peak};
pub use probe::{BreakerDiagnosis, ProbeReading, RateLimitShed};
pub use redis_next::{CountSample, MaxMemoryRaise, TtlLeakSpec, TtlLeakTrack};
pub use signals::{Observation, Signal, SignalQueries, SignalValue, Signals, SqlQueries};
pub use spec::*;
pub use status::*;
pub use vocabulary::{
    ActionKind, ActionOutcome, ConditionType, EventType, ImpactScope, MitigationName, ProbeClass,
    Reason, RollbackCriterion, RollbackPhase, Runbook, Subject,
};

use kube::CustomResourceExt;

/// The API group of the MemoryTier resource.
pub const GROUP: &str = "tierguard.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of a MemoryTier.
pub const API_VERSION: &str = "tierguard.dev/v1alpha1";
/// The kind.
pub const KIND: &str = "MemoryTier";
/// Annotation a human sets (to any new value, e.g. a timestamp) to resume a rolled-back tier.
pub const RESUME_ANNOTATION: &str = "tierguard.dev/resume";
/// The field manager of every write the controller makes.
pub const FIELD_MANAGER: &str = "tierguard";

/// The CRD as YAML, exactly as `tierguard crd` prints it and `crds/memorytier.yaml` holds it.
pub fn crd_yaml() -> String {
    let crd = MemoryTier::crd();
    serde_saphyr::to_string(&crd).expect("the CRD serializes to YAML")
}
