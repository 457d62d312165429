//! The `MemoryTier` custom resource: the baseline an application's memory tier runs with, and the
//! runbook thresholds the controller watches. Every default comes from the runbooks.
//!
//! The doc comments on these types become the CRD's schema descriptions (`kubectl explain`).

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Duration, MemoryTierStatus, RedisExporterSpec, SignalQueries, SqlQueries, bounds};

/// Desired state of a memory tier: the baseline configuration that humans and GitOps own, and the
/// rules by which the controller may temporarily mitigate it during an incident.
// The printer columns repeat `type_ = "string"`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tierguard.dev",
    version = "v1alpha1",
    kind = "MemoryTier",
    namespaced,
    shortname = "mt",
    category = "tierguard",
    status = "MemoryTierStatus",
    derive = "PartialEq",
    doc = "A MemoryTier declares how one application's Redis-backed memory tier is run: its canary rate, feature flags, cache TTLs, circuit breaker, Redis memory limits, rollback criteria and cache warming. The controller renders the effective configuration into a ConfigMap and applies the runbooks' mitigations automatically.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Where the tier is in the runbooks' lifecycle"
    ),
    printcolumn(
        name = "Canary",
        type_ = "string",
        json_path = ".status.effective.canarySampleRate",
        description = "Effective canary sample rate"
    ),
    printcolumn(
        name = "Memory",
        type_ = "string",
        json_path = ".status.memoryReport.level",
        description = "Redis memory level (ok, watch, warning, critical)"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.warming.endpoint) || self.warming.clinicIds.size() > 0 || has(self.warming.topN)").message("warming.endpoint is set but neither warming.clinicIds nor warming.topN says which clinics to warm").field_path(".warming"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.warming.topN) || has(self.metrics.prometheus)").message("warming.topN needs metrics.prometheus: the top clinics come from a PromQL query").field_path(".warming.topN"))]
pub struct MemoryTierSpec {
    /// Where the effective configuration is rendered, and which workload reads it.
    pub target: TargetSpec,

    /// How much the controller may do. Enforce acts; DryRun decides and records what it would do
    /// without acting; Paused only observes and reports.
    #[serde(default)]
    pub mode: Mode,

    /// Canary traffic: the share of requests that take the new memory path.
    #[serde(default)]
    #[x_kube(validation = kube::core::Rule::new("duration(self.rampInterval) > duration('0s')").message("rampInterval must be greater than zero").field_path(".rampInterval"))]
    #[x_kube(validation = kube::core::Rule::new("self.reducedRate <= self.sampleRate").message("reducedRate must not exceed sampleRate").field_path(".reducedRate"))]
    #[x_kube(validation = bounds::rule("canary", "rampInterval"))]
    pub canary: CanarySpec,

    /// Baseline feature flags, rendered as environment variables. The runbooks' flags are
    /// FAST_PATH_ENABLED, MEM0_READS_ENABLED and MEM0_SHADOW_MODE; any other upper-case flag may be
    /// added and is passed through.
    #[serde(default = "default_features")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = kube::core::Rule::new("self.all(k, size(k) <= 128 && k.matches('^[A-Z][A-Z0-9_]*$'))").message("feature flag names must be upper-case environment variable names of at most 128 characters, e.g. FAST_PATH_ENABLED"))]
    pub features: BTreeMap<String, bool>,

    /// Cache TTLs and size limits.
    #[serde(default)]
    #[x_kube(validation = kube::core::Rule::new("duration(self.incidentTtl) >= duration(self.ttl)").message("incidentTtl must be at least ttl: it lengthens the TTL during a stampede").field_path(".incidentTtl"))]
    #[x_kube(validation = kube::core::Rule::new("duration(self.ttl) > duration('0s')").message("ttl must be greater than zero").field_path(".ttl"))]
    #[x_kube(validation = bounds::rule("cache", "ttl"))]
    #[x_kube(validation = bounds::rule("cache", "ttlJitter"))]
    #[x_kube(validation = bounds::rule("cache", "incidentTtl"))]
    #[x_kube(validation = bounds::rule("cache", "staleTtl"))]
    pub cache: CacheSpec,

    /// The application's circuit breaker in front of the mem0 API.
    #[serde(default)]
    #[x_kube(validation = bounds::rule("breaker", "latencyThreshold"))]
    #[x_kube(validation = bounds::rule("breaker", "resetAfter"))]
    #[x_kube(validation = bounds::rule("breaker", "maxOpenDuration"))]
    #[x_kube(validation = bounds::rule("breaker", "bridgeClosedGaps"))]
    pub breaker: BreakerSpec,

    /// The Redis instance behind the cache: connection, memory levels and safe remediation.
    #[serde(default)]
    #[x_kube(validation = kube::core::Rule::new("self.memoryLevels.watch < self.memoryLevels.warning && self.memoryLevels.warning < self.memoryLevels.critical").message("levels must rise: watch < warning < critical").field_path(".memoryLevels.warning"))]
    #[x_kube(validation = kube::core::Rule::new("duration(self.evictions.rateWindow) > duration('0s')").message("rateWindow must be greater than zero").field_path(".evictions.rateWindow"))]
    #[x_kube(validation = kube::core::Rule::new("self.memoryLevels.hysteresis < self.memoryLevels.watch").message("hysteresis must be smaller than the watch level").field_path(".memoryLevels.hysteresis"))]
    #[x_kube(validation = kube::core::Rule::new("!has(self.remediation.generationPattern) || self.remediation.generationPattern.contains('{generation}')").message("generationPattern must contain {generation} where the generation stands in the key").field_path(".remediation.generationPattern"))]
    #[x_kube(validation = kube::core::Rule::new("!has(self.remediation.generationPattern) || has(self.remediation.currentGeneration)").message("generationPattern needs currentGeneration: without it the current generation could be deleted").field_path(".remediation.currentGeneration"))]
    #[x_kube(validation = bounds::rule("redis", "memoryLevels.watchFor"))]
    #[x_kube(validation = bounds::rule("redis", "memoryLevels.warningFor"))]
    #[x_kube(validation = bounds::rule("redis", "memoryLevels.criticalFor"))]
    #[x_kube(validation = bounds::rule("redis", "evictions.rateWindow"))]
    #[x_kube(validation = bounds::rule("redis", "evictions.for"))]
    #[x_kube(validation = bounds::rule("redis", "remediation.maxDuration"))]
    #[x_kube(validation = bounds::rule("redis", "remediation.cooldown"))]
    #[x_kube(validation = bounds::rule("redis", "keysWithoutTtl.window"))]
    pub redis: RedisSpec,

    /// Where the live signals come from.
    #[serde(default)]
    #[x_kube(validation = kube::core::Rule::new("(has(self.prometheus) ? 1 : 0) + (has(self.scrape) ? 1 : 0) + (has(self.postgres) ? 1 : 0) <= 1").message("set at most one of prometheus, scrape and postgres"))]
    #[x_kube(validation = kube::core::Rule::new("duration(self.timeout) < duration(self.interval)").message("timeout must be shorter than interval").field_path(".timeout"))]
    #[x_kube(validation = kube::core::Rule::new("duration(self.rateWindow) >= duration('1s')").message("rateWindow must be at least 1s").field_path(".rateWindow"))]
    #[x_kube(validation = bounds::rule("metrics", "rateWindow"))]
    #[x_kube(validation = bounds::rule("metrics", "interval"))]
    #[x_kube(validation = bounds::rule("metrics", "timeout"))]
    #[x_kube(validation = bounds::interval_rule())]
    pub metrics: MetricsSpec,

    /// When to roll the canary back (the runbooks' "When to Rollback").
    #[serde(default)]
    #[x_kube(validation = kube::core::Rule::new("duration(self.phaseHold) > duration('0s')").message("phaseHold must be greater than zero").field_path(".phaseHold"))]
    #[x_kube(validation = bounds::rule("rollback", "p50LatencyFor"))]
    #[x_kube(validation = bounds::rule("rollback", "errorRateFor"))]
    #[x_kube(validation = bounds::rule("rollback", "breakerOpenFor"))]
    #[x_kube(validation = bounds::rule("rollback", "mem0WriteSuccessFor"))]
    #[x_kube(validation = bounds::rule("rollback", "phaseHold"))]
    pub rollback: RollbackSpec,

    /// Cache-stampede detection and recovery.
    #[serde(default)]
    #[x_kube(validation = kube::core::Rule::new("self.recoverAbovePercent <= self.hitRateBelowPercent").message("recoverAbovePercent must not exceed hitRateBelowPercent").field_path(".recoverAbovePercent"))]
    #[x_kube(validation = bounds::rule("stampede", "for"))]
    pub stampede: StampedeSpec,

    /// Cache warming through the application's admin endpoint.
    #[serde(default)]
    #[x_kube(validation = bounds::rule("warming", "timeout"))]
    pub warming: WarmingSpec,

    /// Who is told, and when incidents escalate.
    #[serde(default)]
    #[x_kube(validation = kube::core::Rule::new("self.escalation.size() < 2 || self.escalation.all(l, self.escalation.all(m, l.level >= m.level || duration(l.after) < duration(m.after)))").message("escalation levels must start later as the level rises").field_path(".escalation"))]
    #[x_kube(validation = kube::core::Rule::new("[self.escalate.canaryRollback, self.escalate.cacheStampede, self.escalate.redisMemoryWarning, self.escalate.redisMemoryCritical].all(e, e != 'NearAction')").message("NearAction applies only to circuitBreakerOpen, the one incident whose action waits for a threshold (breaker.maxOpenDuration)").field_path(".escalate"))]
    #[x_kube(validation = bounds::rule("notify", "escalate.nearActionLead"))]
    #[x_kube(validation = bounds::escalation_rule())]
    pub notify: NotifySpec,
}

fn default_features() -> BTreeMap<String, bool> {
    [
        ("FAST_PATH_ENABLED", true),
        ("MEM0_READS_ENABLED", true),
        ("MEM0_SHADOW_MODE", true),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The ConfigMap the controller renders into, and the workload that reads it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!self.restartOnChange || has(self.workloadRef)").message("restartOnChange needs workloadRef: there is no workload to restart").field_path(".workloadRef"))]
pub struct TargetSpec {
    /// Name of the ConfigMap (same namespace) that receives the effective configuration. The
    /// controller owns this ConfigMap; do not manage it with GitOps.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub config_map_name: String,

    /// The workload (same namespace) that reads the ConfigMap. Needed only for restartOnChange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_ref: Option<WorkloadRef>,

    /// Restart the workload (rollout restart) when the effective configuration changes, for
    /// applications that read their flags only at start-up.
    #[serde(default)]
    pub restart_on_change: bool,
}

/// A Deployment or StatefulSet in the MemoryTier's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    /// Deployment or StatefulSet.
    pub kind: WorkloadKind,
    /// Name of the workload.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The kinds of workload that can be restarted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

/// How much the controller may do.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Mode {
    /// Decide and act.
    #[default]
    Enforce,
    /// Decide and record what would be done; change nothing.
    DryRun,
    /// Observe and report only; no decisions are taken.
    Paused,
}

/// Canary traffic settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct CanarySpec {
    /// Baseline share of traffic on the canary path (CANARY_SAMPLE_RATE), 0 to 1.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sample_rate: f64,
    /// The rate rollback phase 1 and load shedding reduce to, 0 to 1.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub reduced_rate: f64,
    /// How much the rate rises per step when ramping back to the baseline after an incident.
    #[schemars(range(min = 0.001, max = 1.0))]
    pub ramp_step: f64,
    /// Time between ramp steps; also how long a signal must stay healthy before a mitigation ends.
    pub ramp_interval: Duration,
    /// The label the application's request, cache and mem0 metrics carry for the cohort that
    /// served them. With it, the rollback criteria judge the canary's own traffic (and compare its
    /// error rate with the stable cohort's); without it, the whole service.
    pub cohort_label: CohortLabel,
}

/// The cohort label of the application's metrics and its two values.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct CohortLabel {
    /// The label's name.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    )]
    pub name: String,
    /// Its value on canary traffic.
    #[schemars(length(min = 1, max = 63))]
    pub canary: String,
    /// Its value on stable traffic.
    #[schemars(length(min = 1, max = 63))]
    pub stable: String,
}

impl Default for CohortLabel {
    fn default() -> Self {
        CohortLabel {
            name: "cohort".into(),
            canary: "canary".into(),
            stable: "stable".into(),
        }
    }
}

impl Default for CanarySpec {
    fn default() -> Self {
        CanarySpec {
            sample_rate: 0.10,
            reduced_rate: 0.05,
            ramp_step: 0.05,
            ramp_interval: Duration::from_secs(5 * 60),
            cohort_label: CohortLabel::default(),
        }
    }
}

/// Cache TTLs and limits.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct CacheSpec {
    /// Normal cache TTL (CACHE_TTL).
    pub ttl: Duration,
    /// Random jitter added to each TTL to stagger expirations (CACHE_TTL_JITTER).
    pub ttl_jitter: Duration,
    /// TTL while a cache stampede lasts.
    pub incident_ttl: Duration,
    /// Baseline for serving stale entries while revalidating (CACHE_SERVE_STALE).
    pub serve_stale: bool,
    /// How long a stale entry may be served (CACHE_STALE_TTL).
    pub stale_ttl: Duration,
    /// Largest cache value in bytes the application may write (MAX_CACHE_VALUE_SIZE).
    #[schemars(range(min = 1, max = 1073741824))]
    pub max_value_bytes: u64,
    /// Most cached items per clinic (MAX_CLINIC_CACHE_ITEMS).
    #[schemars(range(min = 1, max = 10000000))]
    pub max_items_per_clinic: u64,
}

impl Default for CacheSpec {
    fn default() -> Self {
        CacheSpec {
            ttl: Duration::from_secs(3600),
            ttl_jitter: Duration::from_secs(300),
            incident_ttl: Duration::from_secs(7200),
            serve_stale: false,
            stale_ttl: Duration::from_secs(300),
            max_value_bytes: 100_000,
            max_items_per_clinic: 1000,
        }
    }
}

/// The circuit breaker guarding the mem0 API.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct BreakerSpec {
    /// Name of the breaker as the application labels it in its metrics.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Consecutive failures that open the breaker (CIRCUIT_BREAKER_FAILURE_THRESHOLD).
    #[schemars(range(min = 1, max = 10000))]
    pub failure_threshold: u32,
    /// A call slower than this counts as a failure (CIRCUIT_BREAKER_LATENCY_THRESHOLD_MS).
    pub latency_threshold: Duration,
    /// The breaker closes again after this long of successful requests (CIRCUIT_BREAKER_RESET_SECONDS).
    pub reset_after: Duration,
    /// Open longer than this and mem0 reads and shadow writes are switched off
    /// (MEM0_READS_ENABLED=false, MEM0_SHADOW_MODE=false). Only time the breaker is seen open (or
    /// half-open) counts; a closed reading stops the clock.
    pub max_open_duration: Duration,
    /// A breaker that reopens within this long after closing continues its open clock (the closed
    /// gap itself does not count). With 0s, the default, every reopening starts a new clock.
    pub bridge_closed_gaps: Duration,
    /// Diagnose why the breaker is open (the runbook's steps 1 to 3): while it is open, the
    /// controller calls mem0's health URL and an authenticated URL, at most once per interval,
    /// and follows the runbook's decision tree for what it finds (down, auth failure, rate
    /// limited, healthy). Without it, an open breaker is only waited out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<BreakerProbeSpec>,
}

/// How the controller checks the mem0 API while the breaker is open. The URLs must be allowed
/// destinations of the controller (`--probe-destinations`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = bounds::probe_timeout_rule())]
#[x_kube(validation = bounds::probe_interval_rule())]
#[x_kube(validation = kube::core::Rule::new("!has(self.authUrl) || has(self.apiKeySecretRef)").message("authUrl needs apiKeySecretRef: the authenticated call carries the API key").field_path(".apiKeySecretRef"))]
pub struct BreakerProbeSpec {
    /// mem0's health endpoint (the runbook's step 1), e.g. https://api.mem0.ai/v1/health. A
    /// failure or no answer within the timeout means mem0 is down.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub health_url: String,
    /// An endpoint that needs the API key (the runbook's key check), e.g.
    /// https://api.mem0.ai/v1/users/me: 401 or 403 means the key is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub auth_url: Option<String>,
    /// Secret key holding the mem0 API key (MEM0_API_KEY), sent as
    /// `Authorization: <authScheme> <key>`. It is never logged or shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
    /// The scheme of the Authorization header (the runbook's `Bearer`; mem0's own API uses
    /// `Token`).
    #[serde(default = "default_auth_scheme")]
    #[schemars(
        length(min = 1, max = 32),
        regex(pattern = r"^[A-Za-z][A-Za-z0-9_-]*$")
    )]
    pub auth_scheme: String,
    /// At most one probe per interval while the breaker is open (a 429's Retry-After waits
    /// longer).
    #[serde(default = "default_probe_interval")]
    pub interval: Duration,
    /// Timeout of each call of a probe.
    #[serde(default = "default_probe_timeout")]
    pub timeout: Duration,
}

fn default_auth_scheme() -> String {
    "Bearer".into()
}

fn default_probe_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_probe_timeout() -> Duration {
    Duration::from_secs(3)
}

impl Default for BreakerSpec {
    fn default() -> Self {
        BreakerSpec {
            name: "mem0".into(),
            failure_threshold: 5,
            latency_threshold: Duration::from_secs(5),
            reset_after: Duration::from_secs(60),
            max_open_duration: Duration::from_secs(4 * 3600),
            bridge_closed_gaps: Duration::ZERO,
            probe: None,
        }
    }
}

/// A key of a Secret in the MemoryTier's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Redis connection, memory levels and remediation.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct RedisSpec {
    /// Secret key holding the Redis URL (redis://, rediss:// for TLS; user and password may be in
    /// the URL). Without it, no Redis signal is read and no remediation runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<SecretKeyRef>,
    /// Treat the connection as a Redis Cluster and read every master.
    pub cluster: bool,
    /// Memory limit in bytes to compute usage against when Redis reports maxmemory 0
    /// (a suffix Ki, Mi, Gi or K, M, G is accepted: "512Mi").
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^[0-9]+(Ki|Mi|Gi|Ti|K|M|G|T)?$"))]
    pub max_memory: Option<String>,
    /// Memory-usage levels, in percent of maxmemory.
    pub memory_levels: MemoryLevels,
    /// Alert when Redis evicts keys faster than this.
    pub evictions: EvictionAlert,
    /// What the controller may delete at the critical level.
    pub remediation: RemediationSpec,
    /// Alert when the count of keys without a TTL keeps growing (a leak), before memory is
    /// critical.
    pub keys_without_ttl: super::TtlLeakSpec,
}

/// Memory-usage alert levels in percent of maxmemory (the runbooks' WATCH / WARNING / CRITICAL).
/// A level is entered when usage is above its threshold (the runbook's "> 90%") at every reading
/// for the level's hold (the runbook's alerts: warning `for: 5m`, critical `for: 1m`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct MemoryLevels {
    /// WATCH level: usage above this percentage.
    #[schemars(range(min = 0.0, max = 100.0))]
    pub watch: f64,
    /// How long usage must stay above the watch level before the tier enters it.
    pub watch_for: Duration,
    /// WARNING level: usage above this percentage.
    #[schemars(range(min = 0.0, max = 100.0))]
    pub warning: f64,
    /// How long usage must stay above the warning level before it alerts (RedisMemoryHigh).
    pub warning_for: Duration,
    /// CRITICAL level: usage above this percentage; remediation runs here.
    #[schemars(range(min = 0.0, max = 100.0))]
    pub critical: f64,
    /// How long usage must stay above the critical level before it alerts (RedisMemoryCritical)
    /// and remediation runs, so a one-reading spike deletes nothing.
    pub critical_for: Duration,
    /// A level is left only when usage falls this many points below it, so usage hovering at a
    /// threshold does not flap.
    #[schemars(range(min = 0.0, max = 50.0))]
    pub hysteresis: f64,
}

impl Default for MemoryLevels {
    fn default() -> Self {
        MemoryLevels {
            watch: 70.0,
            watch_for: Duration::ZERO,
            warning: 80.0,
            warning_for: Duration::from_secs(5 * 60),
            critical: 90.0,
            critical_for: Duration::from_secs(60),
            hysteresis: 5.0,
        }
    }
}

/// The eviction alert of the runbook, `rate(redis_evicted_keys[5m]) > 10` held `for: 5m`: more
/// than `maxPerSecond` keys evicted per second, averaged over `rateWindow`, at every reading for
/// `for`. A counter that goes down, or a new Redis run id, is a restart and not a negative rate.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct EvictionAlert {
    /// Evicted keys per second tolerated, averaged over rateWindow.
    #[schemars(range(min = 0.0, max = 1000000000.0))]
    pub max_per_second: f64,
    /// The range the eviction rate is averaged over (the runbook's `[5m]`).
    pub rate_window: Duration,
    /// How long the rate must stay above maxPerSecond before the alert fires.
    #[serde(rename = "for")]
    pub for_duration: Duration,
}

impl Default for EvictionAlert {
    fn default() -> Self {
        EvictionAlert {
            max_per_second: 10.0,
            rate_window: Duration::from_secs(300),
            for_duration: Duration::from_secs(300),
        }
    }
}

/// Safe Redis remediation at the critical level: SCAN and UNLINK of non-critical keys and old cache
/// generations, within budgets. Never KEYS, FLUSHALL, FLUSHDB or a restart.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct RemediationSpec {
    /// Allow remediation. When false, the critical level only alerts.
    pub enabled: bool,
    /// Glob patterns (Redis MATCH syntax) of keys that may be deleted outright.
    #[schemars(length(max = 32), inner(length(min = 1, max = 256)))]
    pub non_critical_patterns: Vec<String>,
    /// Glob pattern of generation-scoped cache keys, with `{generation}` standing for the
    /// generation, e.g. `cache:*:generation:{generation}`. Keys of other generations are deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub generation_pattern: Option<String>,
    /// Where the current generation is read from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_generation: Option<GenerationSource>,
    /// Most keys deleted in one remediation run.
    #[schemars(range(min = 1, max = 10000000))]
    pub max_keys_per_run: u64,
    /// Longest one remediation run may take.
    pub max_duration: Duration,
    /// Keys unlinked per pipelined batch.
    #[schemars(range(min = 1, max = 10000))]
    pub batch_size: u32,
    /// Least time between two remediation runs.
    pub cooldown: Duration,
    /// Option B of the runbook: when memory stays critical after two remediation runs, raise
    /// maxmemory with CONFIG SET in steps up to this ceiling (a quantity such as 1gb or 2Gi);
    /// the original value is put back when the incident ends. Unset: escalate instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^[0-9]+(Ki|Mi|Gi|Ti|K|M|G|T)?$"))]
    pub max_memory_ceiling: Option<String>,
    /// Each raise adds this share of the original maxmemory (percent; at least 1 MiB).
    #[schemars(range(min = 1.0, max = 100.0))]
    pub max_memory_step_percent: f64,
}

impl Default for RemediationSpec {
    fn default() -> Self {
        RemediationSpec {
            enabled: true,
            non_critical_patterns: vec!["session:*".into()],
            generation_pattern: None,
            current_generation: None,
            max_keys_per_run: 100_000,
            max_duration: Duration::from_secs(30),
            batch_size: 500,
            cooldown: Duration::from_secs(600),
            max_memory_ceiling: None,
            max_memory_step_percent: 10.0,
        }
    }
}

/// Where the current cache generation comes from: a Redis key holding it, or a fixed value.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.redisKey) != has(self.value)").message("set exactly one of redisKey and value"))]
pub struct GenerationSource {
    /// A Redis key whose string value is the current generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub redis_key: Option<String>,
    /// The current generation, fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub value: Option<String>,
}

/// Where the signals come from: a Prometheus server, the application's /metrics scraped directly,
/// or its events table in PostgreSQL.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct MetricsSpec {
    /// Query a Prometheus server's HTTP API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSource>,
    /// Scrape the application's Prometheus text endpoint directly (no Prometheus server needed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrape: Option<ScrapeSource>,
    /// Query the application's events table in PostgreSQL (the runbooks' `observability_events`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSource>,
    /// PromQL label matchers selecting the application's series, without braces,
    /// e.g. `app="clinic-backend",namespace="clinic"`. Used by the built-in queries.
    #[schemars(length(max = 1024))]
    pub selector: String,
    /// PromQL overrides per signal; a signal without an override uses the built-in query.
    pub queries: SignalQueries,
    /// The range of the `rate()` in the built-in queries: at least four of Prometheus's scrape
    /// intervals, and short enough for the rollback windows to see a change in time.
    pub rate_window: Duration,
    /// How often the signals are read and the tier reconciled.
    pub interval: Duration,
    /// How long one observation may take, all sources together.
    pub timeout: Duration,
    /// What an unknown signal means: Hold (windows neither fill nor reset) or Rollback
    /// (a window whose signal stays unknown counts as breached).
    pub on_missing_data: OnMissingData,
    /// Where a backtest (`tierguard simulate --from-prometheus`) finds the Redis signals in
    /// Prometheus: redis_exporter's metrics. The controller reads Redis itself and ignores this.
    pub redis_exporter: RedisExporterSpec,
}

impl Default for MetricsSpec {
    fn default() -> Self {
        MetricsSpec {
            prometheus: None,
            scrape: None,
            postgres: None,
            selector: String::new(),
            queries: SignalQueries::default(),
            rate_window: Duration::from_secs(5 * 60),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            on_missing_data: OnMissingData::Hold,
            redis_exporter: RedisExporterSpec::default(),
        }
    }
}

/// A Prometheus server.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSource {
    /// Base URL of the Prometheus HTTP API, e.g. http://prometheus.monitoring:9090.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub url: String,
    /// Secret key holding a bearer token for Prometheus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret_ref: Option<SecretKeyRef>,
    /// Secret key holding `user:password` for basic authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth_secret_ref: Option<SecretKeyRef>,
}

/// An application /metrics endpoint in Prometheus text format.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScrapeSource {
    /// URL of the endpoint, e.g. http://clinic-backend.clinic:8000/metrics.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub url: String,
}

/// The application's events in a PostgreSQL table: the runbooks' `observability_events`, read
/// with the runbooks' own queries (docs/metrics.md has the table contract).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.window) || (duration(self.window) >= duration('1s') && duration(self.window) <= duration('24h'))").message("window must be between 1s and 24h").field_path(".window"))]
pub struct PostgresSource {
    /// Secret key holding the connection URL, e.g.
    /// `postgres://reader:PASSWORD@db.clinic:5432/app?sslmode=require`. TLS is as the URL's
    /// sslmode says: disable, prefer (the default), or require / verify-ca / verify-full, which all
    /// require TLS and verify the server's certificate and name against the system's roots.
    pub url_secret_ref: SecretKeyRef,
    /// The events table, optionally schema-qualified (`public.observability_events`).
    #[serde(default = "default_events_table")]
    #[schemars(
        length(min = 1, max = 127),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")
    )]
    pub table: String,
    /// How far back each query looks; spec.metrics.rateWindow when unset (the runbooks'
    /// dashboards use 15m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
    /// An SQL condition every built-in query adds to its WHERE clause, selecting this
    /// application's events, e.g. `details->>'app' = 'clinic-backend'`. It runs in a read-only
    /// transaction with the URL's own credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub filter: Option<String>,
    /// SQL overrides per signal. Each query answers one row whose first column is the value (a
    /// number; for breakerState a state name or 0/1/2), and may use `{table}`, `{start}`, `{end}`
    /// (the window's bounds), `{filter}` and, to be read per cohort, `{cohort}` (a condition
    /// selecting the cohort's events).
    #[serde(default)]
    pub queries: SqlQueries,
    /// Where an event says which cohort served it: a column, or a key of `details`. The values are
    /// spec.canary.cohortLabel's; unset, the `details` key named spec.canary.cohortLabel.name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort: Option<PostgresCohort>,
    /// The column naming the clinic of a `cache_access` event (the runbooks' "cache hit rate by
    /// clinic").
    #[serde(default = "default_clinic_column")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub clinic_column: String,
}

fn default_events_table() -> String {
    "observability_events".into()
}

fn default_clinic_column() -> String {
    "clinic_id".into()
}

/// Where an event's cohort is: exactly one of a column and a `details` key.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.column) != has(self.detailsKey)").message("set exactly one of column and detailsKey"))]
pub struct PostgresCohort {
    /// A column of the events table holding the cohort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub column: Option<String>,
    /// A key of the events' `details` (JSON) holding the cohort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    )]
    pub details_key: Option<String>,
}

/// What an unknown signal means to a rollback window.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OnMissingData {
    /// The window neither fills nor resets while the signal is unknown.
    #[default]
    Hold,
    /// An unknown signal counts as a breach: no data is treated as bad data.
    Rollback,
}

/// The runbooks' rollback criteria.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct RollbackSpec {
    /// Roll back when P50 latency stays above this many milliseconds...
    #[schemars(range(min = 1.0, max = 3600000.0))]
    pub p50_latency_ms: f64,
    /// ...for this long.
    pub p50_latency_for: Duration,
    /// Roll back when the error rate rises more than this many percentage points above the baseline
    /// (with cohorts: the canary's above the stable cohort's, with confidence 1 − alpha)...
    #[schemars(range(min = 0.0, max = 100.0))]
    pub error_rate_increase_points: f64,
    /// ...for this long (without cohorts, where the rate is compared with a learned baseline).
    pub error_rate_for: Duration,
    /// With cohorts, the error-rate comparison rolls back only when the canary's error rate is
    /// above the stable's by more than errorRateIncreasePoints with confidence at least 1 − alpha,
    /// however often it is looked at (a mixture sequential probability ratio test on the counts).
    #[schemars(range(min = 0.000001, max = 0.5))]
    pub alpha: f64,
    /// A sample counts toward a rollback window only when its cohort (or, without cohorts, the
    /// whole service) served at least this many requests over the rate window; below that it is
    /// unknown, and metrics.onMissingData decides.
    #[schemars(range(min = 0))]
    pub min_requests: u64,
    /// The normal error rate in percent. When unset, the controller learns it from healthy
    /// observations before the incident.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub error_rate_baseline_percent: Option<f64>,
    /// Roll back when the circuit breaker has been open this long.
    pub breaker_open_for: Duration,
    /// Roll back when the mem0 write success rate stays below this percentage...
    #[schemars(range(min = 0.0, max = 100.0))]
    pub mem0_write_success_below_percent: f64,
    /// ...for this long.
    pub mem0_write_success_for: Duration,
    /// How long phase 1 holds the canary at the reduced rate before going to 0, and how long
    /// signals must stay within the baseline for phase 3 to verify the rollback.
    pub phase_hold: Duration,
    /// Resume the canary automatically once the rollback is verified. When false (the runbooks'
    /// rule: re-deployment needs approval), a human resumes it with the annotation
    /// `tierguard.dev/resume`.
    pub auto_resume: bool,
}

impl Default for RollbackSpec {
    fn default() -> Self {
        RollbackSpec {
            p50_latency_ms: 1000.0,
            p50_latency_for: Duration::from_secs(600),
            error_rate_increase_points: 2.0,
            error_rate_for: Duration::from_secs(300),
            alpha: 0.01,
            min_requests: 50,
            error_rate_baseline_percent: None,
            breaker_open_for: Duration::from_secs(4 * 3600),
            mem0_write_success_below_percent: 95.0,
            mem0_write_success_for: Duration::from_secs(1800),
            phase_hold: Duration::from_secs(300),
            auto_resume: false,
        }
    }
}

/// Cache-stampede detection.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct StampedeSpec {
    /// A stampede is when the cache hit rate is below this percentage...
    #[schemars(range(min = 0.0, max = 100.0))]
    pub hit_rate_below_percent: f64,
    /// ...while P50 latency is above this many milliseconds...
    #[schemars(range(min = 0.0, max = 3600000.0))]
    pub p50_latency_above_ms: f64,
    /// ...for this long.
    #[serde(rename = "for")]
    pub for_duration: Duration,
    /// The stampede is over, and the ramp back starts, once the hit rate is above this percentage.
    #[schemars(range(min = 0.0, max = 100.0))]
    pub recover_above_percent: f64,
    /// Treat a Redis cold start (run_id changed or uptime went back) as a stampede at once.
    pub cold_start: bool,
    /// Cache hits and misses per clinic: name the clinics that miss, detect a stampede confined
    /// to a few hot clinics, and warm those clinics.
    pub clinics: super::ClinicsSpec,
}

impl Default for StampedeSpec {
    fn default() -> Self {
        StampedeSpec {
            hit_rate_below_percent: 95.0,
            p50_latency_above_ms: 500.0,
            for_duration: Duration::from_secs(60),
            recover_above_percent: 90.0,
            cold_start: true,
            clinics: super::ClinicsSpec::default(),
        }
    }
}

/// Cache warming: POST {"clinic_ids": [...]} to the application's admin endpoint.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct WarmingSpec {
    /// The warm endpoint, e.g. http://clinic-backend.clinic:8000/admin/cache/warm.
    /// Without it, nothing is warmed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub endpoint: Option<String>,
    /// Secret key holding the admin bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,
    /// Clinics to warm.
    #[schemars(length(max = 1000))]
    pub clinic_ids: Vec<i64>,
    /// Warm the busiest clinics instead, as ranked by a PromQL query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_n: Option<TopNQuery>,
    /// When to warm.
    #[schemars(length(max = 3))]
    pub triggers: Vec<WarmTrigger>,
    /// Clinic ids per request.
    #[schemars(range(min = 1, max = 1000))]
    pub batch_size: u32,
    /// Requests in flight at once.
    #[schemars(range(min = 1, max = 16))]
    pub concurrency: u32,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Retries of a failed request, with exponential backoff.
    #[schemars(range(min = 0, max = 10))]
    pub retries: u32,
}

impl Default for WarmingSpec {
    fn default() -> Self {
        WarmingSpec {
            endpoint: None,
            token_secret_ref: None,
            clinic_ids: Vec::new(),
            top_n: None,
            triggers: vec![
                WarmTrigger::ColdStart,
                WarmTrigger::Stampede,
                WarmTrigger::Deploy,
            ],
            batch_size: 50,
            concurrency: 2,
            timeout: Duration::from_secs(10),
            retries: 3,
        }
    }
}

/// The top clinics by a PromQL query whose result vector carries a clinic label.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopNQuery {
    /// PromQL returning one series per clinic, ranked by its value.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// The label holding the clinic id.
    #[serde(default = "default_clinic_label")]
    #[schemars(length(min = 1, max = 128))]
    pub label: String,
    /// How many clinics to warm.
    #[serde(default = "default_top_n_count")]
    #[schemars(range(min = 1, max = 1000))]
    pub count: u32,
}

fn default_clinic_label() -> String {
    "clinic_id".into()
}

fn default_top_n_count() -> u32 {
    5
}

/// Events that warm the cache.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WarmTrigger {
    /// Redis restarted (run_id changed or uptime went back).
    ColdStart,
    /// A cache stampede was detected.
    Stampede,
    /// The MemoryTier's spec changed (a new generation was deployed).
    Deploy,
}

/// Notifications and escalation.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct NotifySpec {
    /// Where notifications go.
    #[schemars(length(max = 16))]
    pub webhooks: Vec<Webhook>,
    /// Escalation levels: who is told after how long an incident stays unresolved.
    #[schemars(length(max = 5))]
    pub escalation: Vec<EscalationLevel>,
    /// When each kind of incident escalates past level 1.
    pub escalate: EscalationRules,
}

impl Default for NotifySpec {
    fn default() -> Self {
        NotifySpec {
            webhooks: Vec::new(),
            escalation: vec![
                EscalationLevel {
                    level: 1,
                    after: Duration::ZERO,
                },
                EscalationLevel {
                    level: 2,
                    after: Duration::from_secs(15 * 60),
                },
                EscalationLevel {
                    level: 3,
                    after: Duration::from_secs(30 * 60),
                },
            ],
            escalate: EscalationRules::default(),
        }
    }
}

/// When each kind of incident escalates past the first level. An incident whose automatic
/// response is in force and has not helped escalates as the levels' `after` say; a wait-and-see
/// incident (the breaker with its fallback working, a memory warning) does not.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct EscalationRules {
    /// A canary rollback: the runbook's escalation path, timed from the rollback's start.
    pub canary_rollback: Escalate,
    /// A cache stampede: timed from the start of the response (warming, serve stale, shed load).
    pub cache_stampede: Escalate,
    /// Redis memory at the critical level: timed from when the level became critical.
    pub redis_memory_critical: Escalate,
    /// Redis memory at the warning level (or evictions): nothing to do until critical.
    pub redis_memory_warning: Escalate,
    /// The circuit breaker open with its fallback working ("no immediate action required unless
    /// the outage exceeds 4 hours").
    pub circuit_breaker_open: Escalate,
    /// NearAction escalates one level when the action is this close (breaker.maxOpenDuration
    /// minus the open time).
    pub near_action_lead: Duration,
}

impl Default for EscalationRules {
    fn default() -> Self {
        EscalationRules {
            canary_rollback: Escalate::Unresolved,
            cache_stampede: Escalate::Unresolved,
            redis_memory_critical: Escalate::Unresolved,
            redis_memory_warning: Escalate::Never,
            circuit_breaker_open: Escalate::NearAction,
            near_action_lead: Duration::from_secs(15 * 60),
        }
    }
}

/// How an incident escalates past level 1.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Escalate {
    /// Level N is notified once the incident has stayed unresolved for level N's `after`, counted
    /// from the start of its automatic response.
    Unresolved,
    /// Level 1 only: nothing is expected of anyone else.
    Never,
    /// Level 1 at once; one level more when the runbook's action is `nearActionLead` away, and
    /// one more when it is taken.
    NearAction,
}

/// One escalation level.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EscalationLevel {
    /// The level (1 on-call engineer, 2 senior engineer, 3 technical lead).
    #[schemars(range(min = 1, max = 5))]
    pub level: u8,
    /// How long after the incident starts this level is notified.
    pub after: Duration,
}

/// A notification webhook.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.url) != has(self.urlSecretRef)").message("set exactly one of url and urlSecretRef"))]
#[x_kube(validation = kube::core::Rule::new("self.format != 'PagerDuty' || has(self.routingKeySecretRef)").message("a PagerDuty webhook needs routingKeySecretRef").field_path(".routingKeySecretRef"))]
pub struct Webhook {
    /// A name for status and Events.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Payload format.
    pub format: WebhookFormat,
    /// The URL, when it is not secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub url: Option<String>,
    /// Secret key holding the URL (Slack webhook URLs are secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<SecretKeyRef>,
    /// Secret key holding the PagerDuty Events v2 routing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key_secret_ref: Option<SecretKeyRef>,
    /// Escalation levels sent to this webhook; empty means every level.
    #[serde(default)]
    #[schemars(length(max = 5), inner(range(min = 1, max = 5)))]
    pub levels: Vec<u8>,
}

/// Webhook payload formats.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WebhookFormat {
    /// Slack-compatible incoming webhook ({"text": ...}).
    Slack,
    /// PagerDuty Events API v2.
    PagerDuty,
    /// Plain JSON with every field.
    Generic,
}
