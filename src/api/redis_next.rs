//! The Redis OOM runbook's steps 3 and 4 as data: the keys-without-TTL leak alert, and option B
//! (raise maxmemory within a ceiling, put it back afterwards), as the spec asks for them and as
//! the policy remembers them in `status.policy`.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Duration;

/// The leak alert on the count of keys without a TTL (`INFO keyspace`: keys − expires).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct TtlLeakSpec {
    /// Alert when the count grows.
    pub enabled: bool,
    /// The alert fires when the count grew by at least this many keys over `window`...
    #[schemars(range(min = 1, max = 1000000000))]
    pub growth: u64,
    /// ...measured over this long (the readings must cover at least half of it).
    pub window: Duration,
}

impl Default for TtlLeakSpec {
    fn default() -> Self {
        TtlLeakSpec {
            enabled: true,
            growth: 1000,
            window: Duration::from_secs(900),
        }
    }
}

/// A reading of the keys-without-TTL count.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CountSample {
    #[schemars(schema_with = "super::status::timestamp_schema")]
    pub at: Timestamp,
    pub count: u64,
}

/// The keys-without-TTL count as the policy tracks it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TtlLeakTrack {
    /// Readings over the window (thinned to a bounded number).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<CountSample>,
    /// Whether the leak alert is raised.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub alert: bool,
}

impl TtlLeakTrack {
    pub fn is_idle(&self) -> bool {
        *self == TtlLeakTrack::default()
    }
}

/// maxmemory raised by tierguard (the runbook's option B), to be put back when the incident ends.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaxMemoryRaise {
    /// maxmemory before the first raise, bytes: what is restored.
    pub original_bytes: u64,
    /// The value last asked for, bytes.
    pub target_bytes: u64,
    /// When the last CONFIG SET was asked for.
    #[schemars(schema_with = "super::status::timestamp_schema")]
    pub asked_at: Timestamp,
    /// Raises asked for so far.
    pub steps: u32,
    /// Putting the original back has been asked for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restoring: bool,
    /// Redis did not take a value asked for (CONFIG refused, see status.recentActions): no
    /// more raises in this incident.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
}
