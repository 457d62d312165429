//! What the policy asks the outside world to do. The actuators in [`crate::act`] carry these out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::{IncidentSummary, MemoryLevel, WarmTrigger};

/// The actions' names, as status, Events and metrics labels spell them.
pub mod names {
    pub const RENDER_CONFIG: &str = "render-config";
    pub const RESTART_WORKLOAD: &str = "restart-workload";
    pub const WARM_CACHE: &str = "warm-cache";
    pub const REMEDIATE_REDIS: &str = "remediate-redis";
    pub const AUDIT_REDIS: &str = "audit-redis";
    pub const NOTIFY: &str = "notify";
    pub const RECORD_INCIDENT: &str = "record-incident";
}

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
    },
    /// Delete non-critical keys and old generations (SCAN + UNLINK within the spec's budgets).
    RemediateRedis { level: MemoryLevel, reason: String },
    /// Audit keys without TTL and the largest keys, into status.
    AuditRedis { reason: String },
    /// Notify an escalation level.
    Notify {
        level: u8,
        kind: NotifyKind,
        incident_id: String,
        runbook: String,
        trigger: String,
        /// For an escalation: why.
        escalated_because: Option<String>,
        /// Who is notified next and when, or why nobody else is.
        escalation_plan: String,
        message: String,
    },
    /// Write (or update) the incident report: runbook phase 4.
    RecordIncident {
        incident: IncidentSummary,
        reason: String,
    },
    /// A Kubernetes Event on the MemoryTier.
    Event {
        warning: bool,
        reason: String,
        message: String,
    },
}

impl Action {
    /// The names of the actions the actuators carry out (every one but `event`), for the metrics
    /// that count them from start-up.
    pub const EXECUTED: [&'static str; 7] = [
        names::RENDER_CONFIG,
        names::RESTART_WORKLOAD,
        names::WARM_CACHE,
        names::REMEDIATE_REDIS,
        names::AUDIT_REDIS,
        names::NOTIFY,
        names::RECORD_INCIDENT,
    ];

    /// The action's name as used in status, Events and metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            Action::RenderConfig { .. } => names::RENDER_CONFIG,
            Action::RestartWorkload { .. } => names::RESTART_WORKLOAD,
            Action::WarmCache { .. } => names::WARM_CACHE,
            Action::RemediateRedis { .. } => names::REMEDIATE_REDIS,
            Action::AuditRedis { .. } => names::AUDIT_REDIS,
            Action::Notify { .. } => names::NOTIFY,
            Action::RecordIncident { .. } => names::RECORD_INCIDENT,
            Action::Event { .. } => "event",
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
            | Action::RecordIncident { reason, .. } => reason,
            Action::Notify { message, .. } | Action::Event { message, .. } => message,
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
}
