//! The service's metrics, named as tierguard's observers expect them (docs/metrics.md):
//! `http_request_duration_seconds`, `http_requests_total{status}`, `cache_hits_total` and
//! `cache_misses_total` by `clinic_id`, `mem0_writes_total{outcome}` and
//! `circuit_breaker_state{breaker}`; plus a few more that explain what the service did.
//!
//! Request, cache and mem0 series carry `cohort`: `canary` or `stable`, the path that served the
//! request, so tierguard can judge the canary's own traffic. A request refused before the path was
//! chosen (an unknown clinic) has an empty cohort, which Prometheus treats as no label.
//!
//! Every series tierguard reads exists from start-up (counters at 0), so Prometheus has a first
//! sample before the first error. prometheus-client appends `_total` to counter names.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// What `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Request-duration buckets, in seconds: fine around the runbooks' 500 ms and 1 s thresholds.
const DURATION_BUCKETS: [f64; 18] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 5.0,
    10.0,
];

/// The value of the `cohort` label.
pub fn cohort(canary: Option<bool>) -> &'static str {
    match canary {
        Some(true) => "canary",
        Some(false) => "stable",
        None => "",
    }
}

const COHORTS: [bool; 2] = [true, false];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub status: String,
    pub cohort: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CohortLabels {
    pub cohort: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClinicLabels {
    pub clinic_id: String,
    pub cohort: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub outcome: String,
    pub cohort: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakerLabels {
    pub breaker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub breaker: String,
    pub to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    pub path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TtlLabels {
    pub ttl: String,
}

pub fn outcome(success: bool) -> OutcomeLabels {
    OutcomeLabels {
        outcome: if success { "success" } else { "failure" }.to_owned(),
    }
}

pub fn clinic(id: u32, canary: bool) -> ClinicLabels {
    ClinicLabels {
        clinic_id: id.to_string(),
        cohort: cohort(Some(canary)).to_owned(),
    }
}

pub fn mem0_write(success: bool, canary: bool) -> WriteLabels {
    WriteLabels {
        outcome: outcome(success).outcome,
        cohort: cohort(Some(canary)).to_owned(),
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// All metrics of the service and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<CohortLabels, Histogram, fn() -> Histogram>,
    pub cache_hits: Family<ClinicLabels, Counter>,
    pub cache_misses: Family<ClinicLabels, Counter>,
    pub cache_stale_served: Counter,
    pub cache_values_too_large: Counter,
    pub cache_items_limited: Counter,
    pub cache_errors: Family<OpLabels, Counter>,
    pub cache_warmed: Counter,
    pub db_queries: Counter,
    pub db_rejected: Counter,
    pub db_in_flight: Gauge,
    pub mem0_writes: Family<WriteLabels, Counter>,
    pub mem0_reads: Family<OutcomeLabels, Counter>,
    pub mem0_shadow_dropped: Counter,
    pub breaker_state: Family<BreakerLabels, Gauge>,
    pub breaker_transitions: Family<TransitionLabels, Counter>,
    pub canary_requests: Family<PathLabels, Counter>,
    pub session_writes: Family<TtlLabels, Counter>,
    pub flags_reloads: Counter,
    pub flags_reload_errors: Counter,
    /// Where events are also written (`--events-postgres`), when they are.
    pub events: std::sync::OnceLock<super::events::EventSink>,
}

impl Metrics {
    /// Register everything; `clinics` are pre-created so their series exist from start-up.
    pub fn new(clinics: impl IntoIterator<Item = u32>) -> Self {
        let m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(duration_histogram),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            cache_stale_served: Counter::default(),
            cache_values_too_large: Counter::default(),
            cache_items_limited: Counter::default(),
            cache_errors: Family::default(),
            cache_warmed: Counter::default(),
            db_queries: Counter::default(),
            db_rejected: Counter::default(),
            db_in_flight: Gauge::default(),
            mem0_writes: Family::default(),
            mem0_reads: Family::default(),
            mem0_shadow_dropped: Counter::default(),
            breaker_state: Family::default(),
            breaker_transitions: Family::default(),
            canary_requests: Family::default(),
            session_writes: Family::default(),
            flags_reloads: Counter::default(),
            flags_reload_errors: Counter::default(),
            events: std::sync::OnceLock::new(),
        };
        for canary in COHORTS {
            for status in ["200", "404", "500", "503"] {
                let _ = m.requests.get_or_create(&RequestLabels {
                    method: "GET".into(),
                    status: status.into(),
                    cohort: cohort(Some(canary)).into(),
                });
            }
            let _ = m.request_duration.get_or_create(&CohortLabels {
                cohort: cohort(Some(canary)).into(),
            });
        }
        for id in clinics {
            for canary in COHORTS {
                let _ = m.cache_hits.get_or_create(&clinic(id, canary));
                let _ = m.cache_misses.get_or_create(&clinic(id, canary));
            }
        }
        for ok in [true, false] {
            // Only canary requests write to mem0 (shadow mode is part of the new code).
            let _ = m.mem0_writes.get_or_create(&mem0_write(ok, true));
            let _ = m.mem0_reads.get_or_create(&outcome(ok));
        }
        for path in ["canary", "stable"] {
            let _ = m
                .canary_requests
                .get_or_create(&PathLabels { path: path.into() });
        }
        for op in ["get", "set"] {
            let _ = m.cache_errors.get_or_create(&OpLabels { op: op.into() });
        }
        for ttl in ["yes", "no"] {
            let _ = m
                .session_writes
                .get_or_create(&TtlLabels { ttl: ttl.into() });
        }
        m.register()
    }

    fn register(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "http_requests",
            "Clinic API requests answered, by HTTP status",
            self.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Clinic API request duration in seconds",
            self.request_duration.clone(),
        );
        r.register(
            "cache_hits",
            "Cache lookups answered from Redis (fresh or stale), by clinic",
            self.cache_hits.clone(),
        );
        r.register(
            "cache_misses",
            "Cache lookups that went to the database, by clinic",
            self.cache_misses.clone(),
        );
        r.register(
            "cache_stale_served",
            "Lookups answered with a stale copy while it is refreshed",
            self.cache_stale_served.clone(),
        );
        r.register(
            "cache_values_too_large",
            "Values not cached because they exceed MAX_CACHE_VALUE_SIZE",
            self.cache_values_too_large.clone(),
        );
        r.register(
            "cache_items_limited",
            "Values not cached because their clinic holds MAX_CLINIC_CACHE_ITEMS already",
            self.cache_items_limited.clone(),
        );
        r.register(
            "cache_errors",
            "Redis errors on cache reads and writes",
            self.cache_errors.clone(),
        );
        r.register(
            "cache_warmed",
            "Values written by /admin/cache/warm",
            self.cache_warmed.clone(),
        );
        r.register(
            "db_queries",
            "Queries answered by the database",
            self.db_queries.clone(),
        );
        r.register(
            "db_rejected",
            "Queries refused because the database stayed saturated",
            self.db_rejected.clone(),
        );
        r.register(
            "db_in_flight",
            "Queries running or waiting for a database connection",
            self.db_in_flight.clone(),
        );
        r.register(
            "mem0_writes",
            "mem0 shadow writes by outcome (a write refused by the open breaker is a failure)",
            self.mem0_writes.clone(),
        );
        r.register(
            "mem0_reads",
            "mem0 memory reads by outcome",
            self.mem0_reads.clone(),
        );
        r.register(
            "mem0_shadow_dropped",
            "Shadow writes skipped because too many were in flight",
            self.mem0_shadow_dropped.clone(),
        );
        r.register(
            "circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open",
            self.breaker_state.clone(),
        );
        r.register(
            "circuit_breaker_transitions",
            "Circuit breaker state changes, by new state",
            self.breaker_transitions.clone(),
        );
        r.register(
            "canary_requests",
            "Requests by path: canary (new features) or stable",
            self.canary_requests.clone(),
        );
        r.register(
            "session_writes",
            "Session keys written, by whether they got a TTL",
            self.session_writes.clone(),
        );
        r.register(
            "flags_reloads",
            "Flag changes applied without a restart",
            self.flags_reloads.clone(),
        );
        r.register(
            "flags_reload_errors",
            "Flag sources that could not be read or parsed",
            self.flags_reload_errors.clone(),
        );
        self
    }

    /// The exposition text.
    /// Write an event to the events table, when there is one.
    pub fn emit(&self, event: impl FnOnce() -> super::events::Event) {
        if let Some(sink) = self.events.get() {
            sink.send(event());
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Count one clinic API request, served by the canary or the stable path (`None`: refused
    /// before either was chosen).
    pub fn observe_request(&self, status: u16, seconds: f64, canary: Option<bool>) {
        self.emit(|| super::events::Event::request(status, seconds, canary));
        let cohort = cohort(canary).to_owned();
        self.requests
            .get_or_create(&RequestLabels {
                method: "GET".into(),
                status: status.to_string(),
                cohort: cohort.clone(),
            })
            .inc();
        self.request_duration
            .get_or_create(&CohortLabels { cohort })
            .observe(seconds);
    }
}
