//! The signal table: every signal tierguard reads, declared once.
//!
//! Each row gives a signal's name (as `status.observed`, scenarios, metrics labels and
//! `tierguard observe` spell it), its value type, unit, where it is read, its title for people, and
//! whether it is exported on /metrics and shown in notifications. From the table come the
//! [`Observation`] (the CRD's `status.observed`), the policy's sanitized view ([`Signals`]), the
//! scenario format's signal values, the telemetry gauges, the notification and report lines,
//! `tierguard observe`'s table and the per-signal query overrides of `spec.metrics.queries`.
//! Adding a signal is a row here, its query or reader, and its use in the policy.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{BreakerState, SourceHealth};

/// Where a signal is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The application's metrics: Prometheus, its /metrics scraped directly, or its events in
    /// PostgreSQL.
    App,
    /// Redis `INFO`.
    Redis,
}

/// The unit of a signal's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Milliseconds,
    Percent,
    /// Percent of Redis's maxmemory.
    PercentOfMaxMemory,
    Bytes,
    /// A count since the source started (a counter).
    Count,
    Seconds,
    /// One of a few named states.
    State,
    /// An identifier.
    Id,
}

impl Unit {
    /// Whether values above 100 are impossible.
    pub const fn is_percent(self) -> bool {
        matches!(self, Unit::Percent | Unit::PercentOfMaxMemory)
    }

    /// What follows a number of this unit in messages ("1250.0 ms", "91.5% of maxmemory").
    pub const fn suffix(self) -> &'static str {
        match self {
            Unit::Milliseconds => " ms",
            Unit::Percent => "%",
            Unit::PercentOfMaxMemory => "% of maxmemory",
            Unit::Bytes => " bytes",
            Unit::Seconds => " s",
            Unit::Count | Unit::State | Unit::Id => "",
        }
    }
}

/// A signal's value, whatever its type.
#[derive(Clone, Debug, PartialEq)]
pub enum SignalValue {
    Number(f64),
    Count(u64),
    Breaker(BreakerState),
    Text(String),
}

impl SignalValue {
    /// The value as a gauge reads it (the breaker as 0 closed, 1 open, 2 half-open; text has none).
    pub fn as_gauge(&self) -> Option<f64> {
        match self {
            SignalValue::Number(v) => Some(*v).filter(|v| v.is_finite()),
            SignalValue::Count(v) => Some(*v as f64),
            SignalValue::Breaker(b) => Some(b.gauge()),
            SignalValue::Text(_) => None,
        }
    }
}

impl fmt::Display for SignalValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignalValue::Number(v) => write!(f, "{v}"),
            SignalValue::Count(v) => write!(f, "{v}"),
            SignalValue::Breaker(b) => f.write_str(b.as_str()),
            SignalValue::Text(t) => f.write_str(t),
        }
    }
}

/// The value types a signal may have, and how the policy sees each: a number only when it is
/// finite, an identifier only when it is not empty. An observer that hands over NaN has measured
/// nothing; treating it as unknown (rather than as a huge or tiny reading) keeps odd input from
/// starting or ending a mitigation.
pub trait SignalType: Sized + Clone {
    /// What the policy reads.
    type View<'a>
    where
        Self: 'a;
    fn to_value(&self) -> SignalValue;
    fn from_value(value: SignalValue) -> Option<Self>;
    fn view(&self) -> Option<Self::View<'_>>;
}

impl SignalType for f64 {
    type View<'a> = f64;
    fn to_value(&self) -> SignalValue {
        SignalValue::Number(*self)
    }
    fn from_value(value: SignalValue) -> Option<Self> {
        match value {
            SignalValue::Number(v) => Some(v),
            SignalValue::Count(v) => Some(v as f64),
            _ => None,
        }
    }
    fn view(&self) -> Option<f64> {
        Some(*self).filter(|v| v.is_finite())
    }
}

impl SignalType for u64 {
    type View<'a> = u64;
    fn to_value(&self) -> SignalValue {
        SignalValue::Count(*self)
    }
    fn from_value(value: SignalValue) -> Option<Self> {
        match value {
            SignalValue::Count(v) => Some(v),
            SignalValue::Number(v) if v >= 0.0 && v.fract() == 0.0 && v <= u64::MAX as f64 => {
                Some(v as u64)
            }
            _ => None,
        }
    }
    fn view(&self) -> Option<u64> {
        Some(*self)
    }
}

impl SignalType for String {
    type View<'a> = &'a str;
    fn to_value(&self) -> SignalValue {
        SignalValue::Text(self.clone())
    }
    fn from_value(value: SignalValue) -> Option<Self> {
        match value {
            SignalValue::Text(t) => Some(t),
            _ => None,
        }
    }
    fn view(&self) -> Option<&str> {
        Some(self.as_str()).filter(|s| !s.is_empty())
    }
}

impl SignalType for BreakerState {
    type View<'a> = BreakerState;
    fn to_value(&self) -> SignalValue {
        SignalValue::Breaker(*self)
    }
    fn from_value(value: SignalValue) -> Option<Self> {
        match value {
            SignalValue::Breaker(b) => Some(b),
            _ => None,
        }
    }
    fn view(&self) -> Option<BreakerState> {
        Some(*self)
    }
}

/// The table itself: one row per signal, the application's first, then Redis's.
macro_rules! signal_table {
    (
        app {$(
            $(#[doc = $app_doc:literal])*
            $app:ident, $app_field:ident: $app_ty:ty = $app_name:literal {
                title: $app_title:literal,
                unit: $app_unit:ident,
                telemetry: $app_telemetry:literal,
                report: $app_report:literal $(,)?
            }
        )+}
        redis {$(
            $(#[doc = $redis_doc:literal])*
            $redis:ident, $redis_field:ident: $redis_ty:ty = $redis_name:literal {
                title: $redis_title:literal,
                unit: $redis_unit:ident,
                telemetry: $redis_telemetry:literal,
                report: $redis_report:literal $(,)?
            }
        )+}
    ) => {
        /// A signal.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Signal {
            $($app,)+
            $($redis,)+
        }

        impl Signal {
            /// Every signal, in the table's order.
            pub const ALL: &'static [Signal] = &[$(Signal::$app,)+ $(Signal::$redis,)+];

            /// The name `status.observed`, scenarios, metrics labels and `tierguard observe` use.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Signal::$app => $app_name,)+
                    $(Signal::$redis => $redis_name,)+
                }
            }

            /// The signal for people ("P50 latency").
            pub const fn title(self) -> &'static str {
                match self {
                    $(Signal::$app => $app_title,)+
                    $(Signal::$redis => $redis_title,)+
                }
            }

            pub const fn unit(self) -> Unit {
                match self {
                    $(Signal::$app => Unit::$app_unit,)+
                    $(Signal::$redis => Unit::$redis_unit,)+
                }
            }

            pub const fn source(self) -> Source {
                match self {
                    $(Signal::$app => Source::App,)+
                    $(Signal::$redis => Source::Redis,)+
                }
            }

            /// Whether `tierguard_tier_signal` exports it.
            pub const fn on_telemetry(self) -> bool {
                match self {
                    $(Signal::$app => $app_telemetry,)+
                    $(Signal::$redis => $redis_telemetry,)+
                }
            }

            /// Whether notifications and incident reports show it.
            pub const fn in_reports(self) -> bool {
                match self {
                    $(Signal::$app => $app_report,)+
                    $(Signal::$redis => $redis_report,)+
                }
            }

            /// What the signal is (its schema description).
            pub const fn description(self) -> &'static str {
                match self {
                    $(Signal::$app => concat!($($app_doc),+).trim_ascii(),)+
                    $(Signal::$redis => concat!($($redis_doc),+).trim_ascii(),)+
                }
            }

            pub fn parse(name: &str) -> Option<Signal> {
                match name {
                    $($app_name => Some(Signal::$app),)+
                    $($redis_name => Some(Signal::$redis),)+
                    _ => None,
                }
            }

            /// Parse a value of this signal from JSON (a scenario's `set`).
            pub fn value_from_json(self, json: serde_json::Value) -> Result<SignalValue, String> {
                match self {
                    $(Signal::$app => serde_json::from_value::<$app_ty>(json)
                        .map(|v| SignalType::to_value(&v))
                        .map_err(|e| e.to_string()),)+
                    $(Signal::$redis => serde_json::from_value::<$redis_ty>(json)
                        .map(|v| SignalType::to_value(&v))
                        .map_err(|e| e.to_string()),)+
                }
            }
        }

        /// One reading of every signal. A signal that could not be read is absent (unknown),
        /// never zero, and `unknown` says why.
        #[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct Observation {
            /// When the observation was taken.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schemars(schema_with = "super::status::timestamp_schema")]
            pub at: Option<Timestamp>,
            $(
                $(#[doc = $app_doc])*
                #[serde(rename = $app_name, default, skip_serializing_if = "Option::is_none")]
                pub $app_field: Option<$app_ty>,
            )+
            $(
                $(#[doc = $redis_doc])*
                #[serde(rename = $redis_name, default, skip_serializing_if = "Option::is_none")]
                pub $redis_field: Option<$redis_ty>,
            )+
            /// The application's signals per cohort (canary and stable traffic), when its metrics
            /// carry the cohort label (`spec.canary.cohortLabel`); absent otherwise, and then the
            /// rollback criteria judge the whole service.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub cohorts: Option<Cohorts>,
            /// Why there are no cohorts, when there are none: the rollback criteria then judge the
            /// whole service's signals.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub without_cohorts: Option<String>,
            /// What the breaker probe found, when one ran for this observation
            /// (`spec.breaker.probe`).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub breaker_probe: Option<super::ProbeReading>,
            /// Cache hits and misses of the busiest clinics (`spec.stampede.clinics`), whichever
            /// source read them.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub clinics: Option<super::ClinicBreakdown>,
            /// Why there are no per-clinic readings, when there are none.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub without_clinics: Option<String>,
            /// Why each unknown signal is unknown, by signal name.
            #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
            pub unknown: BTreeMap<String, String>,
            /// Health of each source that was read.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub sources: Vec<SourceHealth>,
        }

        /// The application's signals over one cohort's traffic.
        #[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct CohortObservation {
            $(
                $(#[doc = $app_doc])*
                #[serde(rename = $app_name, default, skip_serializing_if = "Option::is_none")]
                pub $app_field: Option<$app_ty>,
            )+
            /// Why each unknown signal of this cohort is unknown, by signal name.
            #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
            pub unknown: BTreeMap<String, String>,
        }

        impl Observation {
            /// The value of `signal`, if known.
            pub fn get(&self, signal: Signal) -> Option<SignalValue> {
                match signal {
                    $(Signal::$app => self.$app_field.as_ref().map(SignalType::to_value),)+
                    $(Signal::$redis => self.$redis_field.as_ref().map(SignalType::to_value),)+
                }
            }

            /// Set (or, with `None`, forget) the value of `signal`. A value of another type is
            /// refused and leaves the signal as it was.
            pub fn set(&mut self, signal: Signal, value: Option<SignalValue>) -> Result<(), String> {
                match signal {
                    $(Signal::$app => self.$app_field = convert(signal, value)?,)+
                    $(Signal::$redis => self.$redis_field = convert(signal, value)?,)+
                }
                Ok(())
            }
        }

        impl CohortObservation {
            /// The value of an application `signal` over this cohort, if known (a Redis signal
            /// has no cohort).
            pub fn get(&self, signal: Signal) -> Option<SignalValue> {
                match signal {
                    $(Signal::$app => self.$app_field.as_ref().map(SignalType::to_value),)+
                    _ => None,
                }
            }

            /// Set (or forget) an application signal of this cohort.
            pub fn set(&mut self, signal: Signal, value: Option<SignalValue>) -> Result<(), String> {
                match signal {
                    $(Signal::$app => self.$app_field = convert(signal, value)?,)+
                    _ => return Err(format!("{} is not read per cohort", signal.name())),
                }
                Ok(())
            }
        }

        /// The observation as the policy reads it: every number finite, every id non-empty, or
        /// unknown.
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct Signals<'a> {
            $(pub $app_field: Option<<$app_ty as SignalType>::View<'a>>,)+
            $(pub $redis_field: Option<<$redis_ty as SignalType>::View<'a>>,)+
            /// The canary cohort's signals, when cohorts are observed.
            pub canary: Option<CohortSignals<'a>>,
            /// The stable cohort's signals, when cohorts are observed.
            pub stable: Option<CohortSignals<'a>>,
            /// The busiest clinics' cache readings, when observed.
            pub clinics: Option<&'a super::ClinicBreakdown>,
        }

        /// One cohort's signals as the policy reads them.
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct CohortSignals<'a> {
            $(pub $app_field: Option<<$app_ty as SignalType>::View<'a>>,)+
        }

        impl<'a> Signals<'a> {
            pub fn from_observation(o: &'a Observation) -> Self {
                let cohort = |c: &'a CohortObservation| CohortSignals {
                    $($app_field: c.$app_field.as_ref().and_then(SignalType::view),)+
                };
                Signals {
                    $($app_field: o.$app_field.as_ref().and_then(SignalType::view),)+
                    $($redis_field: o.$redis_field.as_ref().and_then(SignalType::view),)+
                    canary: o.cohorts.as_ref().map(|c| cohort(&c.canary)),
                    stable: o.cohorts.as_ref().map(|c| cohort(&c.stable)),
                    clinics: o.clinics.as_ref(),
                }
            }
        }
    };
}

/// A value of `signal`'s type, or why not.
fn convert<T: SignalType>(signal: Signal, value: Option<SignalValue>) -> Result<Option<T>, String> {
    match value {
        None => Ok(None),
        Some(v) => T::from_value(v.clone())
            .map(Some)
            .ok_or_else(|| format!("{} cannot be {v:?}", signal.name())),
    }
}

crate::api::vocabulary::words! {
    /// The two cohorts of the application's traffic.
    pub enum Cohort {
        Canary = "canary",
        Stable = "stable",
    }
}

/// Both cohorts' observations.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cohorts {
    /// Traffic on the canary path (the new code).
    pub canary: CohortObservation,
    /// The rest of the traffic.
    pub stable: CohortObservation,
}

impl Cohorts {
    pub fn get(&self, cohort: Cohort) -> &CohortObservation {
        match cohort {
            Cohort::Canary => &self.canary,
            Cohort::Stable => &self.stable,
        }
    }

    pub fn get_mut(&mut self, cohort: Cohort) -> &mut CohortObservation {
        match cohort {
            Cohort::Canary => &mut self.canary,
            Cohort::Stable => &mut self.stable,
        }
    }
}

signal_table! {
    app {
    /// Median request latency, milliseconds.
    P50LatencyMs, p50_latency_ms: f64 = "p50LatencyMs" {
        title: "P50 latency", unit: Milliseconds, telemetry: true, report: true,
    }
    /// 95th percentile request latency, milliseconds.
    P95LatencyMs, p95_latency_ms: f64 = "p95LatencyMs" {
        title: "P95 latency", unit: Milliseconds, telemetry: true, report: false,
    }
    /// 99th percentile request latency, milliseconds.
    P99LatencyMs, p99_latency_ms: f64 = "p99LatencyMs" {
        title: "P99 latency", unit: Milliseconds, telemetry: true, report: false,
    }
    /// Failed requests, percent.
    ErrorRatePercent, error_rate_percent: f64 = "errorRatePercent" {
        title: "error rate", unit: Percent, telemetry: true, report: true,
    }
    /// Cache hits, percent of lookups.
    CacheHitRatePercent, cache_hit_rate_percent: f64 = "cacheHitRatePercent" {
        title: "cache hit rate", unit: Percent, telemetry: true, report: true,
    }
    /// Successful mem0 writes, percent.
    Mem0WriteSuccessPercent, mem0_write_success_percent: f64 = "mem0WriteSuccessPercent" {
        title: "mem0 write success", unit: Percent, telemetry: true, report: true,
    }
    /// Circuit-breaker state.
    BreakerState, breaker_state: BreakerState = "breakerState" {
        title: "circuit breaker", unit: State, telemetry: true, report: true,
    }
    /// Requests served over the rate window (`spec.metrics.rateWindow`): how much traffic the
    /// other signals describe.
    Requests, requests: f64 = "requests" {
        title: "requests", unit: Count, telemetry: true, report: false,
    }
    }
    redis {
    /// Redis used memory in percent of maxmemory.
    RedisUsedMemoryPercent, redis_used_memory_percent: f64 = "redisUsedMemoryPercent" {
        title: "Redis memory", unit: PercentOfMaxMemory, telemetry: true, report: true,
    }
    /// Redis used memory, bytes.
    RedisUsedMemoryBytes, redis_used_memory_bytes: u64 = "redisUsedMemoryBytes" {
        title: "Redis used memory", unit: Bytes, telemetry: false, report: false,
    }
    /// Redis maxmemory (or spec.redis.maxMemory when Redis reports 0), bytes.
    RedisMaxMemoryBytes, redis_max_memory_bytes: u64 = "redisMaxMemoryBytes" {
        title: "Redis maxmemory", unit: Bytes, telemetry: false, report: false,
    }
    /// Redis evicted_keys counter (summed over masters).
    RedisEvictedKeys, redis_evicted_keys: u64 = "redisEvictedKeys" {
        title: "Redis evicted keys", unit: Count, telemetry: true, report: false,
    }
    /// Redis keyspace_hits counter.
    RedisKeyspaceHits, redis_keyspace_hits: u64 = "redisKeyspaceHits" {
        title: "Redis keyspace hits", unit: Count, telemetry: false, report: false,
    }
    /// Redis keyspace_misses counter.
    RedisKeyspaceMisses, redis_keyspace_misses: u64 = "redisKeyspaceMisses" {
        title: "Redis keyspace misses", unit: Count, telemetry: false, report: false,
    }
    /// Redis run_id (a change means Redis restarted; several masters are joined with commas).
    RedisRunId, redis_run_id: String = "redisRunId" {
        title: "Redis run id", unit: Id, telemetry: false, report: false,
    }
    /// Redis uptime in seconds (the smallest over masters).
    RedisUptimeSeconds, redis_uptime_seconds: u64 = "redisUptimeSeconds" {
        title: "Redis uptime", unit: Seconds, telemetry: true, report: false,
    }
    /// Keys without a TTL (INFO keyspace: keys minus keys with an expiry, summed over databases
    /// and masters); a growing count is a leak.
    RedisKeysWithoutTtl, redis_keys_without_ttl: u64 = "redisKeysWithoutTtl" {
        title: "Redis keys without TTL", unit: Count, telemetry: true, report: true,
    }
    /// The current cache generation (the value of
    /// `spec.redis.remediation.currentGeneration.redisKey`); a change invalidates the cache.
    RedisCacheGeneration, redis_cache_generation: String = "redisCacheGeneration" {
        title: "cache generation", unit: Id, telemetry: false, report: false,
    }
    }
}

impl Signal {
    /// Whether the signal is read per cohort: every application signal but the breaker's state,
    /// which is one per service, whoever's traffic tripped it.
    pub fn per_cohort(self) -> bool {
        self.source() == Source::App && self != Signal::BreakerState
    }

    /// The application's signals (read from Prometheus or a scrape).
    pub fn app() -> impl Iterator<Item = Signal> {
        Signal::ALL
            .iter()
            .copied()
            .filter(|s| s.source() == Source::App)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Signal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<str>::deserialize(d)?;
        Signal::parse(&name).ok_or_else(|| {
            let names: Vec<&str> = Signal::ALL.iter().map(|s| s.name()).collect();
            serde::de::Error::custom(format!(
                "unknown signal {name:?}: expected one of {}",
                names.join(", ")
            ))
        })
    }
}

/// PromQL overrides, one per application signal (`spec.metrics.queries`); a signal without an
/// override uses the built-in query.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SignalQueries(pub BTreeMap<Signal, String>);

impl SignalQueries {
    /// The override of `signal`, if the spec gives a non-empty one.
    pub fn get(&self, signal: Signal) -> Option<&str> {
        self.0
            .get(&signal)
            .map(|q| q.trim())
            .filter(|q| !q.is_empty())
    }
}

impl Serialize for SignalQueries {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SignalQueries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<Signal, String>::deserialize(d)?;
        if let Some(signal) = map.keys().find(|s| s.source() != Source::App) {
            return Err(serde::de::Error::custom(format!(
                "{signal} is read from Redis, not with a query"
            )));
        }
        Ok(SignalQueries(map))
    }
}

impl JsonSchema for SignalQueries {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SignalQueries".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        queries_schema("PromQL")
    }
}

/// The schema of per-signal overrides in one query language.
fn queries_schema(language: &str) -> Schema {
    let mut properties = serde_json::Map::new();
    for signal in Signal::app() {
        properties.insert(
            signal.name().to_owned(),
            serde_json::json!({
                "type": "string",
                "maxLength": 4096,
                "description": format!("{language} for: {}", signal.description()),
            }),
        );
    }
    json_schema!({
        "type": "object",
        "description": format!("{language} overrides per signal; a signal without an override uses the built-in query."),
        "properties": properties,
    })
}

/// SQL overrides, one per application signal (`spec.metrics.postgres.queries`): the same map as
/// [`SignalQueries`], in another language.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SqlQueries(pub SignalQueries);

impl SqlQueries {
    pub fn get(&self, signal: Signal) -> Option<&str> {
        self.0.get(signal)
    }
}

impl Serialize for SqlQueries {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SqlQueries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SignalQueries::deserialize(d).map(SqlQueries)
    }
}

impl JsonSchema for SqlQueries {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SqlQueries".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        queries_schema("SQL")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_is_a_field_of_the_observation_under_its_name() {
        let mut o = Observation::default();
        for (i, signal) in Signal::ALL.iter().enumerate() {
            let json = match signal.unit() {
                Unit::State => serde_json::json!("open"),
                Unit::Id => serde_json::json!(format!("id{i}")),
                _ => serde_json::json!(i),
            };
            let value = signal.value_from_json(json).unwrap();
            o.set(*signal, Some(value.clone())).unwrap();
            assert_eq!(o.get(*signal), Some(value));
        }
        let json = serde_json::to_value(&o).unwrap();
        for signal in Signal::ALL {
            assert!(
                json.get(signal.name()).is_some(),
                "{signal} missing in {json}"
            );
            assert_eq!(Signal::parse(signal.name()), Some(*signal));
            assert!(!signal.description().is_empty());
        }
        assert!(
            o.set(Signal::RedisRunId, Some(SignalValue::Number(1.0)))
                .is_err()
        );
    }

    #[test]
    fn the_policy_sees_only_finite_numbers_and_non_empty_ids() {
        let o = Observation {
            p50_latency_ms: Some(f64::NAN),
            error_rate_percent: Some(f64::INFINITY),
            cache_hit_rate_percent: Some(-3.0),
            redis_run_id: Some(String::new()),
            ..Observation::default()
        };
        let s = Signals::from_observation(&o);
        assert_eq!(s.p50_latency_ms, None);
        assert_eq!(s.error_rate_percent, None);
        assert_eq!(s.cache_hit_rate_percent, Some(-3.0));
        assert_eq!(s.redis_run_id, None);
    }

    #[test]
    fn queries_are_keyed_by_application_signals() {
        let q: SignalQueries =
            serde_json::from_value(serde_json::json!({"p50LatencyMs": " up "})).unwrap();
        assert_eq!(q.get(Signal::P50LatencyMs), Some("up"));
        assert!(serde_json::from_value::<SignalQueries>(serde_json::json!({"p51": "x"})).is_err());
        assert!(
            serde_json::from_value::<SignalQueries>(serde_json::json!({"redisRunId": "x"}))
                .is_err()
        );
    }
}
