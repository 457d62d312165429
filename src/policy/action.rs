//! What the policy asks the outside world to do. The actuators in [`crate::act`] carry these out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::{ActionKind, IncidentSummary, MemoryLevel, Reason, Runbook, WarmTrigger};

/// One action of a decision. Every action carries the reason it is taken, for status and Events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "action",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum Action {
    /// Render this effective configuration into the target ConfigMap.
    RenderConfig {
        config: BTreeMap<String, String>,
        hash: String,
        reason: String,
    },
    /// Rollout-restart the referenced workload (only when the config hash changed and the spec asks).
    RestartWorkload { hash: String, reason: String },
    /// Warm the cache through the application's admin endpoint.
    WarmCache {
        trigger: WarmTrigger,
        reason: String,
        /// The clinics seen missing (most misses first, bounded by
        /// `stampede.clinics.warmAtMost`), warmed before the configured ones.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        clinic_ids: Vec<i64>,
    },
    /// Delete non-critical keys and old generations (SCAN + UNLINK within the spec's budgets).
    RemediateRedis { level: MemoryLevel, reason: String },
    /// Audit keys without TTL and the largest keys, into status.
    AuditRedis { reason: String },
    /// CONFIG SET maxmemory `bytes`, expecting it at `from` now (already at `bytes` is done); never
    /// above `ceiling`. A restore puts back the value before the incident.
    SetMaxMemory {
        bytes: u64,
        from: u64,
        ceiling: u64,
        restore: bool,
        reason: String,
    },
    /// Notify an escalation level.
    Notify(Notification),
    /// Write (or update) the incident report: runbook phase 4.
    RecordIncident {
        // Boxed: a summary with its impact is far larger than any other action.
        incident: Box<IncidentSummary>,
        reason: String,
    },
    /// A Kubernetes Event on the MemoryTier.
    Event {
        warning: bool,
        reason: Reason,
        message: String,
    },
}

/// What an escalation level is told about an incident.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub level: u8,
    pub kind: NotifyKind,
    pub incident_id: String,
    pub runbook: Runbook,
    pub trigger: String,
    /// For an escalation: why; for a diagnosis: what was found and the runbook's advice.
    #[serde(default)]
    pub escalated_because: Option<String>,
    /// Who is notified next and when, or why nobody else is.
    pub escalation_plan: String,
    /// The runbooks' communication template, filled in from the incident.
    pub message: String,
}

impl Action {
    /// The action's kind, as status, Events and metrics labels name it.
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::RenderConfig { .. } => ActionKind::RenderConfig,
            Action::RestartWorkload { .. } => ActionKind::RestartWorkload,
            Action::WarmCache { .. } => ActionKind::WarmCache,
            Action::RemediateRedis { .. } => ActionKind::RemediateRedis,
            Action::AuditRedis { .. } => ActionKind::AuditRedis,
            Action::SetMaxMemory { .. } => ActionKind::SetMaxMemory,
            Action::Notify(_) => ActionKind::Notify,
            Action::RecordIncident { .. } => ActionKind::RecordIncident,
            Action::Event { .. } => ActionKind::Event,
        }
    }

    /// Why the action is taken.
    pub fn reason(&self) -> &str {
        match self {
            Action::RenderConfig { reason, .. }
            | Action::RestartWorkload { reason, .. }
            | Action::WarmCache { reason, .. }
            | Action::RemediateRedis { reason, .. }
            | Action::AuditRedis { reason }
            | Action::SetMaxMemory { reason, .. }
            | Action::RecordIncident { reason, .. } => reason,
            Action::Notify(Notification { message, .. }) | Action::Event { message, .. } => message,
        }
    }
}

/// What a notification is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyKind {
    /// A new incident (level 1 at once).
    Opened,
    /// Still unresolved: a higher level is told.
    Escalated,
    /// The incident is over.
    Resolved,
    /// The breaker probe found why the breaker is open (the finding is in `escalated_because`).
    Diagnosed,
}
