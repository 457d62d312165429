//! The breaker probe's findings: one reading per probe (in `status.observed.breakerProbe`), and
//! what the policy remembers of them between reconciles.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::{optional_timestamp_schema, timestamp_schema};
use super::{ProbeClass, WindowState};

/// One probe of the mem0 API: what it found and what was seen, in tierguard's words (status
/// codes, timeouts); never a remote body, never the key.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeReading {
    /// When the probe ran.
    #[schemars(schema_with = "timestamp_schema")]
    pub at: Timestamp,
    /// Down, AuthFailure, RateLimited or Healthy.
    pub class: ProbeClass,
    /// What the calls answered.
    pub detail: String,
    /// A 429's Retry-After, in seconds: no probe before it has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
    /// How long the probe took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
}

/// What the policy knows of why the breaker is open, for the current outage.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BreakerDiagnosis {
    /// The last probe's finding.
    pub class: ProbeClass,
    /// What the last probe saw.
    pub detail: String,
    /// Since when the probes find this class.
    #[schemars(schema_with = "timestamp_schema")]
    pub since: Timestamp,
    /// When the last probe ran: the next one waits `breaker.probe.interval`.
    #[schemars(schema_with = "timestamp_schema")]
    pub last_probe_at: Timestamp,
    /// No probe before this (a 429's Retry-After).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_timestamp_schema")]
    pub not_before: Option<Timestamp>,
}

/// The canary held down while mem0 rate-limits the application, ramping back as writes succeed.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitShed {
    #[schemars(schema_with = "timestamp_schema")]
    pub since: Timestamp,
    /// The canary rate it holds the canary at; it steps back up to the baseline.
    pub canary_rate: f64,
    /// How long mem0 write success has stayed at or above its alert threshold since the last
    /// step.
    #[serde(default, skip_serializing_if = "WindowState::is_idle")]
    pub recovering: WindowState,
}
