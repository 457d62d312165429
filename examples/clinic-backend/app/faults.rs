//! Fault switches, set through `POST /admin/faults` and read with `GET /admin/faults`.
//!
//! | field | effect |
//! |---|---|
//! | `mem0_outage` | every mem0 call fails (the breaker opens) |
//! | `mem0_latency_ms` | added to every mem0 call (past the breaker's latency threshold it is a failure) |
//! | `request_latency_ms`, `request_latency_scope` | added to requests: `canary` (the default: the regression ships with the canary), `fast_path` (only canary requests on the fast path), or `all` |
//! | `canary_error_rate` | share of canary requests that fail with 500 |
//! | `db_latency_ms` | the database's query latency |
//! | `large_values` | `{"clinic_ids": [...], "bytes": N}`: those clinics' rows grow by N bytes (`null` ends it) |
//! | `sessions_without_ttl` | session keys are written without a TTL (a leak that grows with traffic) |
//! | `leak` | one-off: `{"keys": N, "value_bytes": B, "prefix": "session:"}` written without TTL |
//! | `reset` | `true` turns every switch off first (`db_latency_ms` back to its start-up value) |

use serde::{Deserialize, Serialize};

use super::sessions::Leak;

/// Largest added latency, so a typo cannot hang the service for hours.
pub const MAX_LATENCY_MS: u64 = 60_000;
/// Largest large-value filler per clinic.
pub const MAX_LARGE_VALUE_BYTES: u64 = 16 * 1024 * 1024;
pub const MAX_LARGE_VALUE_CLINICS: usize = 1000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencyScope {
    #[default]
    Canary,
    FastPath,
    All,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LargeValues {
    pub clinic_ids: Vec<u32>,
    pub bytes: u64,
}

/// The request-path switches (mem0's and the database's live in those components).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RequestFaults {
    pub request_latency_ms: u64,
    pub request_latency_scope: LatencyScope,
    pub canary_error_rate: f64,
    pub sessions_without_ttl: bool,
}

impl RequestFaults {
    /// The latency to add to a request on this path.
    pub fn added_latency_ms(&self, canary: bool, fast_path: bool) -> u64 {
        let applies = match self.request_latency_scope {
            LatencyScope::All => true,
            LatencyScope::Canary => canary,
            LatencyScope::FastPath => canary && fast_path,
        };
        if applies { self.request_latency_ms } else { 0 }
    }
}

/// The body of `POST /admin/faults`: only the fields given change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsUpdate {
    #[serde(default)]
    pub reset: bool,
    pub mem0_outage: Option<bool>,
    pub mem0_latency_ms: Option<u64>,
    pub request_latency_ms: Option<u64>,
    pub request_latency_scope: Option<LatencyScope>,
    pub canary_error_rate: Option<f64>,
    pub db_latency_ms: Option<u64>,
    /// `null` ends the fault; absent leaves it as is.
    #[serde(default, deserialize_with = "present")]
    pub large_values: Option<Option<LargeValues>>,
    pub sessions_without_ttl: Option<bool>,
    pub leak: Option<Leak>,
}

/// Tell "absent" (outer None, by `default`) from "null" (Some(None)).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl FaultsUpdate {
    /// Check every bound; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (field, value) in [
            ("mem0_latency_ms", self.mem0_latency_ms),
            ("request_latency_ms", self.request_latency_ms),
            ("db_latency_ms", self.db_latency_ms),
        ] {
            if let Some(ms) = value
                && ms > MAX_LATENCY_MS
            {
                return Err(format!("{field}: {ms} is more than {MAX_LATENCY_MS} ms"));
            }
        }
        if let Some(rate) = self.canary_error_rate
            && !(0.0..=1.0).contains(&rate)
        {
            return Err(format!("canary_error_rate: {rate} is not within 0..=1"));
        }
        if let Some(Some(large)) = &self.large_values {
            if large.bytes > MAX_LARGE_VALUE_BYTES {
                return Err(format!(
                    "large_values.bytes: {} is more than {MAX_LARGE_VALUE_BYTES}",
                    large.bytes
                ));
            }
            if large.clinic_ids.len() > MAX_LARGE_VALUE_CLINICS {
                return Err(format!(
                    "large_values.clinic_ids: {} ids, at most {MAX_LARGE_VALUE_CLINICS}",
                    large.clinic_ids.len()
                ));
            }
        }
        if let Some(leak) = &self.leak {
            leak.validate()?;
        }
        Ok(())
    }
}
