//! Signals from the world, turned into one [`Observation`] per reconcile.
//!
//! Four sources, each optional: a Prometheus server ([`prometheus`]), the application's
//! /metrics endpoint scraped directly ([`scrape`]), or its events table in PostgreSQL
//! ([`postgres`]), for the application signals; and Redis `INFO` ([`redis`]) for the memory
//! signals. They are read concurrently under one deadline
//! (`spec.metrics.timeout`): a slow or dead source makes its own signals unknown and never
//! holds the others past it. A signal that could not be read is absent, never zero, and
//! `Observation::unknown` says why; `Observation::sources` says how each source answered.
//!
//! The [`Observer`] keeps what must survive between reconciles (the previous scrape, Redis
//! connections); the controller holds one per MemoryTier.

pub mod clinics;
pub mod fleet;
pub mod histogram;
pub mod postgres;
pub mod probe;
pub mod prometheus;
pub mod queries;
pub mod redis;
pub mod scrape;
pub mod secrets;
pub mod signals;

use std::future::Future;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::api::Signal;
use crate::api::{MemoryTierSpec, Observation, SecretKeyRef, SourceHealth};
use crate::destinations::{AllowList, Network};
use crate::secret::{ExposeSecret, SecretString};
use postgres::{PostgresConfig, PostgresObserver};
use prometheus::{PrometheusAuth, PrometheusClient};
use queries::{QueryInputs, QuerySet};
use redis::RedisObserver;
use scrape::Scraper;
use secrets::{SecretError, SecretResolver};
use signals::Readings;

/// Source names in `Observation::sources`.
pub const SOURCE_PROMETHEUS: &str = "prometheus";
pub const SOURCE_SCRAPE: &str = "scrape";
pub const SOURCE_REDIS: &str = "redis";
pub const SOURCE_POSTGRES: &str = "postgres";

/// Why the observers cannot be set up from a spec. The controller shows it as a condition; the
/// `observe` command exits non-zero with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{field}: {source}")]
    Secret {
        field: &'static str,
        #[source]
        source: SecretError,
    },
    #[error(
        "spec.metrics.prometheus.basicAuthSecretRef: Secret {name} key {key} must hold user:password (no ':' found)"
    )]
    BasicAuthFormat { name: String, key: String },
    #[error(
        "spec.metrics.prometheus.bearerTokenSecretRef: Secret {name} key {key} holds characters an HTTP header cannot carry (a line break inside the token?)"
    )]
    BearerTokenFormat { name: String, key: String },
    #[error("spec.metrics.prometheus.url: {0}")]
    PrometheusUrl(String),
    #[error("spec.metrics.scrape.url: {0}")]
    ScrapeUrl(String),
    #[error("spec.redis.urlSecretRef: {0}")]
    RedisUrl(String),
    #[error("spec.metrics.postgres.urlSecretRef: {0}")]
    PostgresUrl(String),
    #[error("spec.redis.maxMemory: {0}")]
    MaxMemory(String),
    #[error("{0}")]
    ProbeKey(#[from] probe::BadKey),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    /// A URL or address that is not an allowed destination of its kind.
    #[error("{field}: {refused}")]
    Destination {
        field: String,
        refused: crate::destinations::Refused,
    },
    /// An object the tier would write that is not tierguard's to write.
    #[error("{0}")]
    NotOurs(Box<crate::act::configmap::KubeActError>),
}

impl ConfigError {
    /// Whether the API server failed to answer (a 5xx, a timeout, no connection) rather than
    /// said something about the tier's configuration: the next attempt may well succeed, so this
    /// is retried, not a Stalled tier.
    pub fn is_transient(&self) -> bool {
        matches!(self, ConfigError::Secret { source, .. } if source.is_transient())
    }
}

/// Where to read Prometheus.
#[derive(Clone, Debug, PartialEq)]
pub struct PrometheusConfig {
    pub url: String,
    pub auth: Option<PrometheusAuth>,
}

/// Where to read Redis.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    pub url: SecretString,
    pub cluster: bool,
    /// spec.redis.maxMemory in bytes, used when Redis reports maxmemory 0.
    pub max_memory: Option<u64>,
    /// spec.redis.remediation.currentGeneration.redisKey: the key read as the cache generation.
    pub generation_key: Option<String>,
}

// Compared to tell whether a reconcile's config changed (a rotated password reconnects).
impl PartialEq for RedisConfig {
    fn eq(&self, other: &Self) -> bool {
        self.url.expose_secret() == other.url.expose_secret()
            && self.cluster == other.cluster
            && self.max_memory == other.max_memory
            && self.generation_key == other.generation_key
    }
}

/// Everything the observers need, with the Secrets resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct ObserveConfig {
    pub prometheus: Option<PrometheusConfig>,
    pub scrape_url: Option<String>,
    pub postgres: Option<PostgresConfig>,
    /// What this tier's Prometheus queries are made of.
    pub queries: QueryInputs,
    /// spec.breaker.name: the `breaker` label of the breaker-state gauge.
    pub breaker: String,
    pub redis: Option<RedisConfig>,
    /// The deadline of one observation, all sources together.
    pub timeout: Duration,
    /// spec.metrics.rateWindow: what the `requests` signal counts over.
    pub rate_window: Duration,
    /// spec.canary.cohortLabel.
    pub cohorts: crate::api::CohortLabel,
    /// spec.breaker.probe, with its key.
    pub probe: Option<probe::ProbeConfig>,
    /// spec.stampede.clinics: the cache per clinic, when enabled.
    pub clinics: Option<clinics::ClinicsConfig>,
}

impl ObserveConfig {
    /// Resolve the spec's Secret references and check what can be checked before connecting.
    pub async fn resolve(
        spec: &MemoryTierSpec,
        secrets: &impl SecretResolver,
    ) -> Result<Self, ConfigError> {
        let metrics = &spec.metrics;
        let prometheus = resolve_prometheus(spec, secrets).await?;
        let resolve = |field: &'static str, r: &SecretKeyRef| {
            let r = r.clone();
            async move {
                secrets
                    .resolve(&r)
                    .await
                    .map_err(|source| ConfigError::Secret { field, source })
            }
        };
        let redis = match &spec.redis.url_secret_ref {
            None => None,
            Some(r) => {
                let url = resolve("spec.redis.urlSecretRef", r).await?;
                let max_memory = spec
                    .redis
                    .max_memory
                    .as_deref()
                    .map(redis::parse_quantity)
                    .transpose()
                    .map_err(ConfigError::MaxMemory)?;
                Some(RedisConfig {
                    url: SecretString::from(url),
                    cluster: spec.redis.cluster,
                    max_memory,
                    generation_key: spec
                        .redis
                        .remediation
                        .current_generation
                        .as_ref()
                        .and_then(|g| g.redis_key.clone()),
                })
            }
        };
        let probe = match &spec.breaker.probe {
            None => None,
            Some(p) => {
                let key = match &p.api_key_secret_ref {
                    Some(r) => Some(SecretString::from(
                        resolve("spec.breaker.probe.apiKeySecretRef", r).await?,
                    )),
                    None => None,
                };
                Some(probe::ProbeConfig::new(p, key))
            }
        };
        let postgres = match &metrics.postgres {
            None => None,
            Some(source) => {
                let url =
                    resolve("spec.metrics.postgres.urlSecretRef", &source.url_secret_ref).await?;
                Some(PostgresConfig::from_spec(spec, source, url))
            }
        };
        Ok(ObserveConfig {
            probe,
            prometheus,
            scrape_url: metrics.scrape.as_ref().map(|s| s.url.clone()),
            postgres,
            queries: QueryInputs::from_spec(spec),
            breaker: spec.breaker.name.clone(),
            redis,
            timeout: metrics.timeout.as_std(),
            rate_window: metrics.rate_window.as_std(),
            cohorts: spec.canary.cohort_label.clone(),
            clinics: clinics::ClinicsConfig::from_spec(spec),
        })
    }
}

/// Where Prometheus is and how to authenticate to it, with the spec's Secrets resolved (none when
/// the spec reads no Prometheus).
pub async fn resolve_prometheus(
    spec: &MemoryTierSpec,
    secrets: &impl SecretResolver,
) -> Result<Option<PrometheusConfig>, ConfigError> {
    let metrics = &spec.metrics;
    let resolve = |field: &'static str, r: &SecretKeyRef| {
        let r = r.clone();
        async move {
            secrets
                .resolve(&r)
                .await
                .map_err(|source| ConfigError::Secret { field, source })
        }
    };
    let prometheus = match &metrics.prometheus {
        None => None,
        Some(p) => {
            let auth = if let Some(r) = &p.bearer_token_secret_ref {
                let token = resolve("spec.metrics.prometheus.bearerTokenSecretRef", r).await?;
                if reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
                    return Err(ConfigError::BearerTokenFormat {
                        name: r.name.clone(),
                        key: r.key.clone(),
                    });
                }
                Some(PrometheusAuth::Bearer(SecretString::from(token)))
            } else if let Some(r) = &p.basic_auth_secret_ref {
                let value = resolve("spec.metrics.prometheus.basicAuthSecretRef", r).await?;
                Some(PrometheusAuth::basic_from_secret(&value).ok_or_else(|| {
                    ConfigError::BasicAuthFormat {
                        name: r.name.clone(),
                        key: r.key.clone(),
                    }
                })?)
            } else {
                None
            };
            Some(PrometheusConfig {
                url: p.url.clone(),
                auth,
            })
        }
    };
    Ok(prometheus)
}

/// Reads every configured source; keep one per MemoryTier across reconciles.
#[derive(Debug)]
pub struct Observer {
    config: ObserveConfig,
    http: reqwest::Client,
    /// Where Redis (and every node of a Redis Cluster) may be reached.
    redis_destinations: AllowList,
    /// Where PostgreSQL may be reached: the metrics allow-list, since it is a metrics source.
    postgres_destinations: AllowList,
    prometheus: Option<PrometheusClient>,
    scraper: Option<Scraper>,
    postgres: Option<PostgresObserver>,
    redis: Option<RedisObserver>,
    /// The breaker probe's HTTP client (its own allow-list).
    probe_http: reqwest::Client,
    prober: Option<probe::Prober>,
    /// When this observer last probed, and the Retry-After it was given: the memory in status
    /// says the same, but may lag behind a status write.
    last_probe: Option<(Timestamp, Option<Timestamp>)>,
    /// The group this tier's Prometheus queries are read with, if any ([`fleet`]).
    fleet: Option<fleet::FleetMember>,
}

impl Observer {
    /// An observer that may reach any address (the never-reached ones aside): for the command
    /// line, run with its user's own credentials.
    pub fn new(config: ObserveConfig) -> Result<Self, ConfigError> {
        let network =
            Network::any().map_err(|e| ConfigError::Http(crate::secret::error_chain(&e)))?;
        Self::with_network(config, &network)
    }

    /// An observer on the controller's network: its allow-lists, and a shared HTTP client (a
    /// controller watching many tiers keeps one connection pool and one TLS configuration for
    /// all of them). Each request is still bounded by the observation's deadline.
    pub fn with_network(config: ObserveConfig, network: &Network) -> Result<Self, ConfigError> {
        let mut observer = Observer {
            config: config.clone(),
            http: network.metrics.clone(),
            redis_destinations: network.destinations.redis.clone(),
            postgres_destinations: network.destinations.metrics.clone(),
            prometheus: None,
            scraper: None,
            postgres: None,
            redis: None,
            probe_http: network.probe.clone(),
            prober: None,
            last_probe: None,
            fleet: None,
        };
        observer.build(None)?;
        Ok(observer)
    }

    pub fn config(&self) -> &ObserveConfig {
        &self.config
    }

    /// The PostgreSQL source, when the tier reads one.
    pub fn postgres(&self) -> Option<&PostgresObserver> {
        self.postgres.as_ref()
    }

    /// The HTTP client the observer reads with.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Read Prometheus with `member`'s group rather than with this tier's own queries (none:
    /// with its own).
    pub fn set_fleet(&mut self, member: Option<fleet::FleetMember>) {
        self.fleet = member;
    }

    /// Whether Prometheus is read with a group.
    pub fn in_fleet(&self) -> bool {
        self.fleet.is_some()
    }

    /// A wait (within `spec.metrics.timeout`) for the group round this tier's next observation
    /// will read, when none is ready for it: the caller may wait without holding resources.
    pub fn fleet_round_to_wait_for(&self) -> Option<impl std::future::Future<Output = ()> + '_> {
        let timeout = self.config.timeout;
        let round = self.fleet.as_ref()?.round_to_wait_for()?;
        Some(async move {
            // Past the timeout, the observation reports the group's answer as late.
            let _ = tokio::time::timeout(timeout, round).await;
        })
    }

    /// Apply a new configuration (the spec or a Secret changed). What did not change keeps its
    /// state: the previous scrape and the Redis connections survive.
    pub fn update(&mut self, config: ObserveConfig) -> Result<(), ConfigError> {
        if config == self.config {
            return Ok(());
        }
        let old = std::mem::replace(&mut self.config, config);
        self.build(Some(old))
    }

    fn build(&mut self, old: Option<ObserveConfig>) -> Result<(), ConfigError> {
        let config = &self.config;
        let timeout = config.timeout;
        // The previous scrape is kept only while what it is read against stays the same.
        let old_config_same_cohorts = old.as_ref().is_some_and(|o| {
            o.cohorts == config.cohorts
                && o.rate_window == config.rate_window
                && o.clinics == config.clinics
        });
        let scrape_clinics = config.clinics.as_ref().map(|c| (c.label.clone(), c.keep));
        // Prometheus wins when both metrics sources are set (the CRD forbids it anyway).
        self.prometheus = match &config.prometheus {
            Some(p) => Some(
                PrometheusClient::new(self.http.clone(), &p.url, p.auth.clone(), timeout)
                    .map_err(|e| ConfigError::PrometheusUrl(e.to_string()))?,
            ),
            None => None,
        };
        let scrape_url = config
            .scrape_url
            .as_ref()
            .filter(|_| config.prometheus.is_none());
        self.scraper = match scrape_url {
            None => None,
            Some(url) => {
                let parsed = reqwest::Url::parse(url)
                    .map_err(|e| ConfigError::ScrapeUrl(format!("{url:?}: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(ConfigError::ScrapeUrl(format!(
                        "{url:?}: the scheme must be http or https"
                    )));
                }
                match self.scraper.take() {
                    Some(mut kept) if kept.url() == url && old_config_same_cohorts => {
                        kept.set_timeout(timeout);
                        Some(kept)
                    }
                    _ => Some(
                        Scraper::new(
                            self.http.clone(),
                            url,
                            timeout,
                            config.rate_window,
                            config.cohorts.clone(),
                        )
                        .with_clinics(scrape_clinics),
                    ),
                }
            }
        };
        self.prober = match &config.probe {
            None => None,
            Some(p) => Some(probe::Prober::new(self.probe_http.clone(), p.clone())?),
        };
        // Prometheus, then the scrape, win over PostgreSQL (the CRD allows only one anyway). The
        // pool survives while the configuration and the deadline stay the same.
        let postgres = config
            .postgres
            .as_ref()
            .filter(|_| config.prometheus.is_none() && config.scrape_url.is_none());
        let same_postgres = old
            .as_ref()
            .is_some_and(|o| o.postgres == config.postgres && o.timeout == config.timeout);
        self.postgres = match postgres {
            None => None,
            Some(_) if same_postgres && self.postgres.is_some() => self.postgres.take(),
            Some(p) => Some(
                PostgresObserver::new(p.clone(), timeout, self.postgres_destinations.clone())
                    .map_err(ConfigError::PostgresUrl)?,
            ),
        };
        let same_redis = old.as_ref().map(|o| &o.redis) == Some(&config.redis);
        self.redis = match &config.redis {
            None => None,
            Some(_) if same_redis && self.redis.is_some() => {
                let mut kept = self.redis.take();
                if let Some(r) = kept.as_mut() {
                    r.set_timeout(timeout);
                }
                kept
            }
            Some(r) => Some(
                RedisObserver::new(
                    r.url.expose_secret(),
                    r.cluster,
                    r.max_memory,
                    timeout,
                    self.redis_destinations.clone(),
                )
                .map_err(ConfigError::RedisUrl)?
                .with_generation_key(r.generation_key.clone()),
            ),
        };
        Ok(())
    }

    /// Read every source once, concurrently, within the configured deadline.
    pub async fn observe(&mut self) -> Observation {
        let mut obs = Observation {
            at: Some(Timestamp::now()),
            ..Observation::default()
        };
        let timeout = self.config.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let Observer {
            config,
            prometheus,
            scraper,
            postgres,
            redis,
            fleet,
            ..
        } = self;
        let breaker = config.breaker.as_str();
        // Only a Prometheus read on its own sends them (and only an override can leave a
        // signal without a per-cohort query, which a group's members never have).
        let queries = match (prometheus.as_ref(), fleet.as_ref()) {
            (Some(_), None) => config.queries.queries(),
            _ => QuerySet::default(),
        };
        let queries = &queries;
        let clinic_config = config.clinics.as_ref();

        let prometheus_read = async {
            match prometheus.as_ref() {
                Some(client) => Some(
                    timed(deadline, async {
                        let own_clinics = async {
                            match clinic_config {
                                Some(c) => Some(clinics::read_prometheus(client, c).await),
                                None => None,
                            }
                        };
                        // A fleet group's answer, or this tier's own queries.
                        match fleet.as_ref() {
                            Some(member) => match member.read(clinic_config).await {
                                (signals, Some(per_clinic)) => (signals, Some(per_clinic)),
                                (signals, None) => (signals, own_clinics.await),
                            },
                            None => futures::join!(client.read_signals(queries), own_clinics),
                        }
                    })
                    .await,
                ),
                None => None,
            }
        };
        let scrape_read = async {
            match scraper.as_mut() {
                Some(s) => Some(timed(deadline, s.read_signals(breaker)).await),
                None => None,
            }
        };
        let postgres_read = async {
            match postgres.as_ref() {
                Some(p) => Some(
                    timed(deadline, async {
                        // The runbooks' "cache hit rate by clinic", for the stampede's source.
                        let per_clinic = async {
                            match clinic_config {
                                Some(c) => Some(
                                    p.clinic_hit_rates(None)
                                        .await
                                        .map(|rows| postgres::clinic_breakdown(c, rows)),
                                ),
                                None => None,
                            }
                        };
                        futures::join!(p.read_signals(), per_clinic)
                    })
                    .await,
                ),
                None => None,
            }
        };
        let redis_read = async {
            match redis.as_mut() {
                Some(r) => Some(timed(deadline, r.read()).await),
                None => None,
            }
        };
        let (from_prometheus, from_scrape, from_postgres, from_redis) =
            tokio::join!(prometheus_read, scrape_read, postgres_read, redis_read);

        let late =
            |source: &str| format!("{source}: no answer within {timeout:?} (spec.metrics.timeout)");
        let mut app: Option<Readings> = None;
        let mut per_clinic: Option<Result<crate::api::ClinicBreakdown, String>> = None;
        if let Some((answer, ms)) = from_prometheus {
            let (readings, health) = match answer {
                Some(((readings, failure), clinics)) => {
                    per_clinic = clinics;
                    (Some(readings), failure)
                }
                None => (None, Some(late(SOURCE_PROMETHEUS))),
            };
            obs.sources.push(health_of(SOURCE_PROMETHEUS, health, ms));
            app = Some(readings.unwrap_or_else(|| all_app(&late(SOURCE_PROMETHEUS))));
        }
        if let Some((answer, ms)) = from_scrape {
            let result = match answer {
                Some(Ok((readings, clinics))) => {
                    per_clinic = clinics.map(|c| c.map_err(|e| format!("{SOURCE_SCRAPE}: {e}")));
                    Ok(readings)
                }
                Some(Err(e)) => Err(format!("{SOURCE_SCRAPE}: {e}")),
                None => Err(late(SOURCE_SCRAPE)),
            };
            let failure = result.as_ref().err().cloned();
            if let (Some(reason), true) = (&failure, config.clinics.is_some()) {
                per_clinic = Some(Err(reason.clone()));
            }
            obs.sources.push(health_of(SOURCE_SCRAPE, failure, ms));
            app = Some(result.unwrap_or_else(|reason| all_app(&reason)));
        }
        let mut sql_queries = None;
        if let Some((answer, ms)) = from_postgres {
            let (readings, health) = match answer {
                Some(((readings, failure), clinics)) => {
                    per_clinic = clinics;
                    (Some(readings), failure)
                }
                None => (None, Some(late(SOURCE_POSTGRES))),
            };
            obs.sources.push(health_of(SOURCE_POSTGRES, health, ms));
            app = Some(readings.unwrap_or_else(|| all_app(&late(SOURCE_POSTGRES))));
            sql_queries = postgres.as_ref().map(|p| p.queries());
        }
        let app = app.unwrap_or_else(|| {
            all_app(
                "no metrics source: set spec.metrics.prometheus, spec.metrics.scrape or spec.metrics.postgres",
            )
        });
        match sql_queries {
            Some(sql) => signals::set_readings(&mut obs, app, &config.cohorts, sql),
            None => signals::set_readings(&mut obs, app, &config.cohorts, queries),
        }
        match per_clinic {
            Some(Ok(breakdown)) => obs.clinics = Some(breakdown),
            Some(Err(reason)) => obs.without_clinics = Some(reason),
            None if config.clinics.is_some() && config.prometheus.is_some() => {
                obs.without_clinics = Some(late(SOURCE_PROMETHEUS));
            }
            None if config.clinics.is_some() && postgres.is_some() => {
                obs.without_clinics = Some(late(SOURCE_POSTGRES));
            }
            None if config.clinics.is_some() => {
                obs.without_clinics = Some(
                    "no metrics source: set spec.metrics.prometheus, spec.metrics.scrape or spec.metrics.postgres"
                        .into(),
                );
            }
            None => {}
        }

        match from_redis {
            None => {
                redis::set_all_unknown(&mut obs, "no Redis: spec.redis.urlSecretRef is not set")
            }
            Some((answer, ms)) => {
                let result = match answer {
                    Some(Ok(reading)) => Ok(reading),
                    Some(Err(e)) => Err(format!("{SOURCE_REDIS}: {e}")),
                    None => Err(late(SOURCE_REDIS)),
                };
                obs.sources
                    .push(health_of(SOURCE_REDIS, result.as_ref().err().cloned(), ms));
                match result {
                    Ok(reading) => reading.apply(&mut obs),
                    Err(reason) => redis::set_all_unknown(&mut obs, &reason),
                }
            }
        }
        bound_reasons(&mut obs);
        obs
    }
}

impl Observer {
    /// Probe the dependency behind the breaker if a probe is due (see
    /// [`crate::policy::diagnosis::probe_due`]): the breaker is seen open in `obs`, and neither
    /// the last probe in the policy's memory (`last`) nor this observer's own forbids one yet.
    /// The reading goes into `obs`.
    pub async fn probe_if_due(
        &mut self,
        obs: &mut Observation,
        last: Option<&crate::api::BreakerDiagnosis>,
    ) {
        let Some(prober) = &self.prober else {
            return;
        };
        let now = Timestamp::now();
        let remembered = last.map(|d| (d.last_probe_at, d.not_before));
        let latest = [remembered, self.last_probe]
            .into_iter()
            .flatten()
            .max_by_key(|(at, _)| *at);
        let state = obs.breaker_state;
        if !crate::policy::diagnosis::probe_due(prober.config().interval, latest, state, now) {
            return;
        }
        let reading = prober.probe().await;
        let not_before = reading.retry_after_seconds.and_then(|s| {
            reading
                .at
                .checked_add(jiff::SignedDuration::from_secs(s as i64))
                .ok()
        });
        self.last_probe = Some((reading.at, not_before));
        tracing::info!(class = %reading.class, detail = %reading.detail, "breaker probe");
        obs.breaker_probe = Some(reading);
    }
}

/// Reasons quote what sources answered: escaped and cut before they reach status.
fn bound_reasons(obs: &mut Observation) {
    let cut = |reason: &mut String| *reason = crate::remote::text::reason(reason);
    obs.unknown.values_mut().for_each(cut);
    if let Some(c) = obs.cohorts.as_mut() {
        c.canary.unknown.values_mut().for_each(cut);
        c.stable.unknown.values_mut().for_each(cut);
    }
    obs.without_cohorts.iter_mut().for_each(cut);
    obs.without_clinics.iter_mut().for_each(cut);
    for source in &mut obs.sources {
        source.reason.iter_mut().for_each(cut);
    }
}

fn all_app(reason: &str) -> Readings {
    Signal::app()
        .map(|s| ((queries::Scope::Service, s), Err(reason.to_owned())))
        .collect()
}

fn health_of(name: &str, failure: Option<String>, latency_ms: u64) -> SourceHealth {
    SourceHealth {
        name: name.to_owned(),
        ok: failure.is_none(),
        reason: failure,
        latency_ms: Some(latency_ms),
    }
}

/// Run `fut` until `deadline`: its output (`None` when late) and how long it took.
async fn timed<T>(
    deadline: tokio::time::Instant,
    fut: impl Future<Output = T>,
) -> (Option<T>, u64) {
    let started = Instant::now();
    let out = tokio::time::timeout_at(deadline, fut).await.ok();
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    (out, ms)
}

/// Resolve the spec's Secrets, set up the observers and read every source once: what
/// `tierguard observe` does. The controller keeps an [`Observer`] instead.
pub async fn observe_once(
    spec: &MemoryTierSpec,
    secrets: &impl SecretResolver,
) -> Result<Observation, ConfigError> {
    let config = ObserveConfig::resolve(spec, secrets).await?;
    let mut observer = Observer::new(config)?;
    let mut observation = observer.observe().await;
    observer.probe_if_due(&mut observation, None).await;
    Ok(observation)
}
