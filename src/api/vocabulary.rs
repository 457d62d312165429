//! Every word of the domain vocabulary, declared once: runbooks, rollback criteria and phases,
//! transition subjects, action kinds and outcomes, condition types and reasons (which are also
//! the Events' reasons).
//!
//! Each word is an enum variant with the string status, Events and JSON output have always
//! used; [`words!`] derives the string, parsing, serde and the schema from that one list, so no
//! module compares these words as strings.

use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An enum of words, each with its fixed spelling.
macro_rules! words {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every word, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The word as status, Events and JSON output spell it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The word for its spelling.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <::std::borrow::Cow<'de, str> as ::serde::Deserialize>::deserialize(d)?;
                $name::parse(&text).ok_or_else(|| {
                    <D::Error as ::serde::de::Error>::unknown_variant(&text, &[$($text,)+])
                })
            }
        }

        impl ::schemars::JsonSchema for $name {
            fn schema_name() -> ::std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut ::schemars::SchemaGenerator) -> ::schemars::Schema {
                ::schemars::json_schema!({"type": "string", "enum": [$($text,)+]})
            }
        }
    };
}

pub(crate) use words;

words! {
    /// The runbooks tierguard automates; each incident belongs to one.
    pub enum Runbook {
        CanaryRollback = "CanaryRollback",
        CircuitBreakerOpen = "CircuitBreakerOpen",
        CacheStampede = "CacheStampede",
        RedisMemory = "RedisMemory",
    }
}

impl Runbook {
    /// The runbook's title, as the incident report and notifications head it.
    pub const fn title(self) -> &'static str {
        match self {
            Runbook::CanaryRollback => "Canary Rollback",
            Runbook::CircuitBreakerOpen => "Circuit Breaker Open",
            Runbook::CacheStampede => "Cache Stampede",
            Runbook::RedisMemory => "Redis Memory",
        }
    }

    /// The runbook in incident ids (`2026-11-25-031200-canary-rollback`): its title, in kebab case.
    pub fn slug(self) -> String {
        self.title().to_ascii_lowercase().replace(' ', "-")
    }
}

words! {
    /// The `event_type` values of the application's events table (the runbooks'
    /// `observability_events`) that the PostgreSQL source reads.
    pub enum EventType {
        /// One request served: `processing_time_ms`, `success`.
        RequestCompleted = "request_completed",
        /// One cache lookup: `cache_hit`, and the clinic.
        CacheAccess = "cache_access",
        /// One write to mem0: `success`.
        Mem0Write = "mem0_write",
        /// The breaker changed state: `details->>'state'`, `details->>'failure_count'`.
        CircuitBreakerStateChange = "circuit_breaker_state_change",
    }
}

words! {
    /// The runbook's rollback criteria ("When to Rollback").
    pub enum RollbackCriterion {
        P50Latency = "p50-latency",
        ErrorRate = "error-rate",
        BreakerOpen = "breaker-open",
        Mem0WriteSuccess = "mem0-write-success",
    }
}

words! {
    /// What a transition is about: the tier's phase, a runbook's state, a ramp.
    pub enum Subject {
        Phase = "phase",
        Rollback = "rollback",
        Ramp = "ramp",
        StampedeRamp = "stampede-ramp",
        Breaker = "breaker",
        Stampede = "stampede",
        RedisMemory = "redis-memory",
        Evictions = "evictions",
        Deploy = "deploy",
    }
}

impl Subject {
    /// The reason of the Event that reports a transition of this subject.
    pub const fn event_reason(self) -> Reason {
        match self {
            Subject::Phase => Reason::PhaseChanged,
            Subject::Rollback => Reason::CanaryRollback,
            Subject::Ramp | Subject::StampedeRamp => Reason::CanaryRamp,
            Subject::Breaker => Reason::CircuitBreaker,
            Subject::Stampede => Reason::CacheStampede,
            Subject::RedisMemory => Reason::RedisMemory,
            Subject::Evictions => Reason::Evictions,
            Subject::Deploy => Reason::Deploy,
        }
    }
}

words! {
    /// What the policy asks the actuators to do.
    pub enum ActionKind {
        RenderConfig = "render-config",
        RestartWorkload = "restart-workload",
        WarmCache = "warm-cache",
        RemediateRedis = "remediate-redis",
        AuditRedis = "audit-redis",
        /// CONFIG SET maxmemory: raise within the ceiling, or put the original back.
        SetMaxMemory = "set-maxmemory",
        Notify = "notify",
        RecordIncident = "record-incident",
        Event = "event",
    }
}

words! {
    /// How an action went.
    pub enum ActionOutcome {
        Ok = "ok",
        Failed = "failed",
        Skipped = "skipped",
        DryRun = "dry-run",
        /// Begun: claimed before acting (the controller writes a decision down first), or running
        /// in the background; the outcome replaces this once recorded (it stays when the
        /// controller stopped first).
        Started = "started",
    }
}

impl ActionKind {
    /// Whether doing it twice leaves things as doing it once: rendering the same ConfigMap again
    /// (a server-side apply of the same content), or an Event (a repeat is counted in its
    /// series). A decision made only of these is not claimed before it acts.
    pub const fn repeats_harmlessly(self) -> bool {
        matches!(self, ActionKind::RenderConfig | ActionKind::Event)
    }

    /// The reason of the Event that reports how an action went.
    pub const fn outcome_reason(self, outcome: ActionOutcome) -> Reason {
        match (self, outcome) {
            (_, ActionOutcome::Failed) => Reason::ActionFailed,
            (ActionKind::RenderConfig, _) => Reason::ConfigRendered,
            (ActionKind::RestartWorkload, _) => Reason::WorkloadRestarted,
            (ActionKind::WarmCache, _) => Reason::CacheWarmed,
            (ActionKind::RemediateRedis, _) => Reason::RedisRemediated,
            (ActionKind::AuditRedis, _) => Reason::RedisAudited,
            (ActionKind::SetMaxMemory, _) => Reason::MaxMemoryRaised,
            (ActionKind::Notify, _) => Reason::Notified,
            (ActionKind::RecordIncident, _) => Reason::IncidentRecorded,
            (ActionKind::Event, _) => Reason::ActionTaken,
        }
    }

    /// The reason of the Event that says an action is about to be taken (and why).
    pub const fn decision_reason(self) -> Option<Reason> {
        match self {
            ActionKind::RenderConfig => Some(Reason::ConfigRendered),
            ActionKind::RestartWorkload => Some(Reason::WorkloadRestart),
            ActionKind::WarmCache => Some(Reason::CacheWarming),
            ActionKind::RemediateRedis => Some(Reason::RedisRemediation),
            ActionKind::AuditRedis => Some(Reason::RedisAudit),
            ActionKind::SetMaxMemory => Some(Reason::RedisMemory),
            // Reported by their incident's change.
            ActionKind::Notify | ActionKind::RecordIncident | ActionKind::Event => None,
        }
    }
}

words! {
    /// The overlays the runbooks put on the baseline.
    pub enum MitigationName {
        RollbackCanary = "rollback-canary",
        RollbackFeatures = "rollback-features",
        ResumeRamp = "resume-ramp",
        BreakerMem0Off = "breaker-mem0-off",
        StampedeServeStale = "stampede-serve-stale",
        StampedeTtl = "stampede-ttl",
        StampedeShedLoad = "stampede-shed-load",
        /// mem0 rate-limits the application: the canary (the traffic that calls mem0) is
        /// reduced until writes succeed again.
        BreakerRateLimitShed = "breaker-rate-limit-shed",
    }
}

words! {
    /// Which traffic an incident hits.
    pub enum ImpactScope {
        /// The canary's share of the traffic (the path that calls mem0 and takes the new code).
        Canary = "canary",
        /// Every request of the service (the cache and Redis are shared).
        Service = "service",
    }
}

words! {
    /// Why the circuit breaker is open, as the breaker probe found it (the runbook's decision
    /// tree, Incident #1 step 3).
    pub enum ProbeClass {
        /// The health call failed or timed out: mem0 is down; wait (the 4-hour rule).
        Down = "Down",
        /// mem0 refuses the API key (401 or 403): rotate MEM0_API_KEY.
        AuthFailure = "AuthFailure",
        /// mem0 answers 429: reduce the request rate until writes succeed again.
        RateLimited = "RateLimited",
        /// mem0 is fine and the breaker is still open: the trouble is on the application's side.
        Healthy = "Healthy",
    }
}

impl ProbeClass {
    /// The runbook's instruction for this finding.
    pub const fn advice(self) -> &'static str {
        match self {
            ProbeClass::Down => {
                "mem0 API is DOWN: monitor https://status.mem0.ai; the circuit breaker recovers when the service is restored and the system continues with its fallback (degraded memory); no immediate action unless the outage exceeds 4 hours"
            }
            ProbeClass::AuthFailure => {
                "mem0 refuses the API key (401/403): rotate the API key (fly secrets set MEM0_API_KEY=<new_key>); the outage will not heal by itself"
            }
            ProbeClass::RateLimited => {
                "mem0 rate-limits the application (429): the canary is reduced (CANARY_SAMPLE_RATE) until mem0 writes succeed again, then ramps back; review the mem0 plan limits"
            }
            ProbeClass::Healthy => {
                "mem0 is healthy but the breaker stays open: the problem is on the application's side; the breaker auto-resets after 60s of successful requests; restarting the workers (scale up by one, then back) is a last resort for a human, never done automatically"
            }
        }
    }
}

words! {
    /// Condition types: kstatus's Ready, Reconciling and Stalled, and the runbooks' domain
    /// conditions, in the order status lists them.
    pub enum ConditionType {
        Ready = "Ready",
        Reconciling = "Reconciling",
        Stalled = "Stalled",
        PolicyMemory = "PolicyMemory",
        RolledBack = "RolledBack",
        MemoryPressure = "MemoryPressure",
        CacheStampede = "CacheStampede",
        BreakerOpen = "BreakerOpen",
    }
}

words! {
    /// Reasons of conditions and of Events.
    pub enum Reason {
        // Conditions.
        Reconciled = "Reconciled",
        Healthy = "Healthy",
        Mitigating = "Mitigating",
        RollingBack = "RollingBack",
        RollbackVerified = "RollbackVerified",
        AwaitingResume = "AwaitingResume",
        Recovering = "Recovering",
        Paused = "Paused",
        DryRun = "DryRun",
        InvalidSpec = "InvalidSpec",
        InvalidObject = "InvalidObject",
        SecretMissing = "SecretMissing",
        /// A Secret the spec names is not marked for tierguard.
        SecretNotUsable = "SecretNotUsable",
        /// A URL or address the spec names is not an allowed destination.
        DestinationRefused = "DestinationRefused",
        /// An object the spec names is not tierguard's to write (not created by it, not
        /// adopted, or a workload that did not opt in).
        NotOurs = "NotOurs",
        ConfigInvalid = "ConfigInvalid",
        ObserveFailed = "ObserveFailed",
        ActionFailed = "ActionFailed",
        MemoryOk = "MemoryOk",
        MemoryWatch = "MemoryWatch",
        MemoryWarning = "MemoryWarning",
        MemoryCritical = "MemoryCritical",
        Evictions = "Evictions",
        StampedeDetected = "StampedeDetected",
        ColdStart = "ColdStart",
        /// A stampede confined to a few hot clinics (the service's hit rate may still look fine).
        HotClinicStampede = "HotClinicStampede",
        /// The count of Redis keys without a TTL keeps growing: a leak.
        KeysWithoutTtlGrowing = "KeysWithoutTtlGrowing",
        /// Redis maxmemory raised within spec.redis.remediation.maxMemoryCeiling.
        MaxMemoryRaised = "MaxMemoryRaised",
        /// Redis maxmemory put back to its value before the incident.
        MaxMemoryRestored = "MaxMemoryRestored",
        /// Redis refused CONFIG (renamed command, ACL): maxmemory cannot be raised.
        ConfigRefused = "ConfigRefused",
        NoStampede = "NoStampede",
        BreakerOpened = "BreakerOpened",
        BreakerClosed = "BreakerClosed",
        /// The breaker probe found why the breaker is open (or found something else than before).
        BreakerDiagnosed = "BreakerDiagnosed",
        NotRolledBack = "NotRolledBack",
        SignalsUnknown = "SignalsUnknown",
        MemoryRead = "MemoryRead",
        MemoryReset = "MemoryReset",
        // Events.
        PhaseChanged = "PhaseChanged",
        CanaryRollback = "CanaryRollback",
        CanaryRamp = "CanaryRamp",
        CircuitBreaker = "CircuitBreaker",
        CacheStampede = "CacheStampede",
        RedisMemory = "RedisMemory",
        Deploy = "Deploy",
        IncidentOpened = "IncidentOpened",
        IncidentEscalated = "IncidentEscalated",
        IncidentResolved = "IncidentResolved",
        ConfigRendered = "ConfigRendered",
        WorkloadRestart = "WorkloadRestart",
        WorkloadRestarted = "WorkloadRestarted",
        CacheWarming = "CacheWarming",
        CacheWarmed = "CacheWarmed",
        RedisRemediation = "RedisRemediation",
        RedisRemediated = "RedisRemediated",
        RedisAudit = "RedisAudit",
        RedisAudited = "RedisAudited",
        Notified = "Notified",
        IncidentRecorded = "IncidentRecorded",
        ActionTaken = "ActionTaken",
    }
}

/// A phase of the canary rollback procedure, stored as its number (1 to 4), as status always has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RollbackPhase {
    /// Phase 1: reduce traffic to the reduced rate, hold, then to 0.
    ReduceTraffic = 1,
    /// Phase 2: disable the features.
    DisableFeatures = 2,
    /// Phase 3: verify that every rollback signal stays within its bound.
    Verify = 3,
    /// Phase 4: document the incident; the tier is rolled back.
    Documented = 4,
}

impl RollbackPhase {
    pub const fn number(self) -> u8 {
        self as u8
    }

    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            1 => Some(RollbackPhase::ReduceTraffic),
            2 => Some(RollbackPhase::DisableFeatures),
            3 => Some(RollbackPhase::Verify),
            4 => Some(RollbackPhase::Documented),
            _ => None,
        }
    }
}

impl fmt::Display for RollbackPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

impl Serialize for RollbackPhase {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.number())
    }
}

impl<'de> Deserialize<'de> for RollbackPhase {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u8::deserialize(d)?;
        RollbackPhase::from_number(n).ok_or_else(|| {
            serde::de::Error::invalid_value(
                serde::de::Unexpected::Unsigned(n.into()),
                &"a rollback phase from 1 to 4",
            )
        })
    }
}

impl JsonSchema for RollbackPhase {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RollbackPhase".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "integer", "minimum": 1, "maximum": 4})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_through_their_spelling() {
        for word in Reason::ALL {
            let json = serde_json::to_value(word).unwrap();
            assert_eq!(json, word.as_str());
            assert_eq!(serde_json::from_value::<Reason>(json).unwrap(), *word);
        }
        assert_eq!(
            serde_json::to_value(RollbackCriterion::Mem0WriteSuccess).unwrap(),
            "mem0-write-success"
        );
        assert!(serde_json::from_value::<Subject>("phaze".into()).is_err());
        assert_eq!(serde_json::to_value(RollbackPhase::Verify).unwrap(), 3);
        assert!(serde_json::from_value::<RollbackPhase>(5.into()).is_err());
    }

    #[test]
    fn incident_ids_name_the_runbook_in_kebab_case() {
        let slugs: Vec<String> = Runbook::ALL.iter().map(|r| r.slug()).collect();
        assert_eq!(
            slugs,
            [
                "canary-rollback",
                "circuit-breaker-open",
                "cache-stampede",
                "redis-memory"
            ]
        );
    }

    #[test]
    fn every_spelling_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for word in Reason::ALL {
            assert!(seen.insert(word.as_str()), "{word} twice");
        }
    }
}
