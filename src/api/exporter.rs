//! Where a backtest reads the Redis signals: redis_exporter's metrics in Prometheus
//! (`spec.metrics.redisExporter`).
//!
//! The controller reads Redis itself (`INFO`); history of Redis lives in Prometheus only when
//! something exported it, and redis_exporter is what usually does. `tierguard simulate
//! --from-prometheus` reads each Redis signal from the exporter metric named here (redis_exporter's
//! own names unless overridden), narrowed by the selector, and groups the series into Redis nodes by
//! their [`NODE_LABEL`] label, so that several masters combine exactly as the controller combines
//! them. The memory share is not a metric: it is computed from used and max memory, as the
//! controller computes it.

use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Signal;

/// The label that tells one Redis node's series from another's.
pub const NODE_LABEL: &str = "instance";
/// The label of the info metric ([`Signal::RedisRunId`]) that holds the run id.
pub const RUN_ID_LABEL: &str = "run_id";

/// redis_exporter's name for the metric behind a Redis signal; none for the application's signals
/// and for the memory share, which is computed.
pub const fn default_metric(signal: Signal) -> Option<&'static str> {
    match signal {
        Signal::RedisUsedMemoryBytes => Some("redis_memory_used_bytes"),
        Signal::RedisMaxMemoryBytes => Some("redis_memory_max_bytes"),
        Signal::RedisEvictedKeys => Some("redis_evicted_keys_total"),
        Signal::RedisKeyspaceHits => Some("redis_keyspace_hits_total"),
        Signal::RedisKeyspaceMisses => Some("redis_keyspace_misses_total"),
        Signal::RedisRunId => Some("redis_instance_info"),
        Signal::RedisUptimeSeconds => Some("redis_uptime_in_seconds"),
        _ => None,
    }
}

/// The signals read from an exporter metric, in the signal table's order.
pub fn exporter_signals() -> impl Iterator<Item = Signal> {
    Signal::ALL
        .iter()
        .copied()
        .filter(|s| default_metric(*s).is_some())
}

/// `spec.metrics.redisExporter`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct RedisExporterSpec {
    /// PromQL label matchers selecting this tier's redis_exporter series, without braces, e.g.
    /// `job="redis",namespace="clinic"`. Empty selects every redis_exporter series Prometheus
    /// holds, which is right only when it holds one Redis deployment.
    #[schemars(length(max = 1024))]
    pub selector: String,
    /// Metric names per Redis signal, when they differ from redis_exporter's.
    pub metrics: ExporterMetrics,
}

impl RedisExporterSpec {
    /// The metric read for `signal` (an exporter signal).
    pub fn metric(&self, signal: Signal) -> Option<&str> {
        self.metrics
            .0
            .get(&signal)
            .map(|m| m.trim())
            .filter(|m| !m.is_empty())
            .or(default_metric(signal))
    }
}

/// Metric name overrides, keyed by Redis signal name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExporterMetrics(pub BTreeMap<Signal, String>);

impl Serialize for ExporterMetrics {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ExporterMetrics {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<Signal, String>::deserialize(d)?;
        if let Some(signal) = map.keys().find(|s| default_metric(**s).is_none()) {
            let why = if *signal == Signal::RedisUsedMemoryPercent {
                "is computed from used and max memory, not read from a metric"
            } else if signal.source() == super::signals::Source::Redis {
                "is not read from history (a backtest has it unknown)"
            } else {
                "is an application signal: override its PromQL in spec.metrics.queries"
            };
            return Err(serde::de::Error::custom(format!("{signal} {why}")));
        }
        Ok(ExporterMetrics(map))
    }
}

impl JsonSchema for ExporterMetrics {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ExporterMetrics".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let mut properties = serde_json::Map::new();
        for signal in exporter_signals() {
            let default = default_metric(signal).unwrap_or_default();
            let label = if signal == Signal::RedisRunId {
                format!(" (its `{RUN_ID_LABEL}` label)")
            } else {
                String::new()
            };
            properties.insert(
                signal.name().to_owned(),
                serde_json::json!({
                    "type": "string",
                    "maxLength": 256,
                    "pattern": "^[a-zA-Z_:][a-zA-Z0-9_:]*$",
                    "description": format!("Metric for: {}; default {default}{label}.", signal.description().trim_end_matches('.')),
                }),
            );
        }
        json_schema!({
            "type": "object",
            "description": "Metric names per Redis signal; a signal left out uses redis_exporter's name.",
            "properties": properties,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::signals::Source;

    #[test]
    fn every_redis_signal_but_the_share_has_an_exporter_metric() {
        for signal in Signal::ALL {
            // The share is computed; the keys without TTL (two exporter metrics) and the cache
            // generation (an application key) are not read from history.
            let expected = signal.source() == Source::Redis
                && !matches!(
                    signal,
                    Signal::RedisUsedMemoryPercent
                        | Signal::RedisKeysWithoutTtl
                        | Signal::RedisCacheGeneration
                );
            assert_eq!(default_metric(*signal).is_some(), expected, "{signal}");
        }
    }

    #[test]
    fn overrides_replace_the_default_and_refuse_other_signals() {
        let spec: RedisExporterSpec = serde_json::from_value(serde_json::json!({
            "selector": "job=\"redis\"",
            "metrics": {"redisUptimeSeconds": "my_uptime", "redisEvictedKeys": " "}
        }))
        .unwrap();
        assert_eq!(spec.metric(Signal::RedisUptimeSeconds), Some("my_uptime"));
        assert_eq!(
            spec.metric(Signal::RedisEvictedKeys),
            Some("redis_evicted_keys_total")
        );
        assert_eq!(spec.metric(Signal::P50LatencyMs), None);
        for refused in ["redisUsedMemoryPercent", "p50LatencyMs"] {
            let e = serde_json::from_value::<ExporterMetrics>(serde_json::json!({refused: "x"}))
                .unwrap_err()
                .to_string();
            assert!(e.contains(refused), "{e}");
        }
    }
}
