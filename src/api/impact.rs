//! What an incident cost, measured while it runs: the traffic it hit, the requests that failed
//! and the worst value of each signal past its threshold. Accumulated in the open incident (in
//! `status.policy`) at every reading, and shown in `status.incidents`, the report and the
//! notifications.

use std::collections::BTreeMap;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ImpactScope;
use super::status::{optional_timestamp_schema, timestamp_schema};

/// The measured impact of one incident.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncidentImpact {
    /// Which traffic the incident hits.
    pub scope: ImpactScope,
    /// Requests the service served during the incident, from its request rate at each reading.
    pub requests: f64,
    /// Of those, the requests of the affected traffic (the canary's share, or all of them).
    pub affected_requests: f64,
    /// Failed requests of the affected traffic (its error rate times its requests); the whole
    /// service's when the canary's own errors are not observed (no cohorts).
    pub failed_requests: f64,
    /// Whether `failed_requests` counts the whole service's failures (no cohort was observed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failed_service_wide: bool,
    /// How much of the incident the readings covered, in seconds.
    pub measured_seconds: f64,
    /// Readings that carried a request rate.
    pub samples: u32,
    /// When the last reading was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_timestamp_schema")]
    pub last_sample_at: Option<Timestamp>,
    /// The worst value of each signal (by its name) that went past its threshold.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub peaks: BTreeMap<String, Peak>,
}

impl IncidentImpact {
    pub fn new(scope: ImpactScope) -> Self {
        IncidentImpact {
            scope,
            requests: 0.0,
            affected_requests: 0.0,
            failed_requests: 0.0,
            failed_service_wide: false,
            measured_seconds: 0.0,
            samples: 0,
            last_sample_at: None,
            peaks: BTreeMap::new(),
        }
    }

    /// The affected share of the traffic in percent, once any traffic was measured.
    pub fn affected_percent(&self) -> Option<f64> {
        (self.requests > 0.0).then(|| 100.0 * self.affected_requests / self.requests)
    }
}

/// The worst value of a signal past its threshold.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Peak {
    pub value: f64,
    #[schemars(schema_with = "timestamp_schema")]
    pub at: Timestamp,
    /// The threshold it went past.
    pub threshold: f64,
    /// Whether lower is worse (hit rate, write success).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lower_is_worse: bool,
}
