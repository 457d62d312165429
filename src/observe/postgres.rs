//! The application's signals from its events table in PostgreSQL (`spec.metrics.postgres`): the
//! runbooks' own queries on `observability_events`, each over the window ending now (or, for a
//! backtest, at a given time).
//!
//! Every query runs in its own READ ONLY transaction with `SET LOCAL statement_timeout`, through a
//! small pool (deadpool-postgres over tokio-postgres). The host is checked against the metrics
//! allow-list before each observation and every connection is made to the address checked. An
//! empty window is unknown, never zero: the built-in ratios divide by `NULLIF(COUNT(*), 0)`, so
//! no rows answer NULL, and NULL is unknown with a reason. The URL's password never reaches a
//! message: every error text is scrubbed of it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use futures::future::{BoxFuture, join_all};
use jiff::Timestamp;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{NoTls, Row};

use super::queries::{NoCohortQuery, Scope};
use super::signals::Readings;
use crate::api::signals::Cohort;
use crate::api::{
    BreakerState, CohortLabel, EventType, MemoryTierSpec, PostgresSource, Signal, SqlQueries,
};
use crate::destinations::AllowList;
use crate::remote::text;
use crate::secret::{ExposeSecret, SecretString, redact_url, scrub};

/// The port of a URL that names none.
pub const DEFAULT_PORT: u16 = 5432;
/// Connections kept per tier: queries beyond it wait for one.
pub const POOL_SIZE: usize = 4;
/// The runbooks' "cache hit rate by clinic" keeps clinics with more lookups than this.
pub const MIN_CLINIC_LOOKUPS: u64 = 100;
/// Most clinics the "by clinic" query returns (the lowest hit rates first).
pub const MAX_CLINICS: usize = 50;
/// The longest clinic identifier or breaker state kept from a row.
pub const MAX_TEXT_CHARS: usize = 64;

/// Where a built-in or override query is placed in the table's text.
pub const TABLE_PLACEHOLDER: &str = "{table}";
pub const START_PLACEHOLDER: &str = "{start}";
pub const END_PLACEHOLDER: &str = "{end}";
pub const FILTER_PLACEHOLDER: &str = "{filter}";
pub const COHORT_PLACEHOLDER: &str = "{cohort}";

/// The window's end: the time given as `$1` (seconds since the epoch), or the server's `now()`.
const END_SQL: &str = "COALESCE(to_timestamp($1::float8), now())";

/// Where an event's cohort is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CohortField {
    Column(String),
    DetailsKey(String),
}

/// The source's configuration, with the URL resolved from its Secret.
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    pub url: SecretString,
    /// The table, each part quoted (`"public"."observability_events"`).
    pub table: String,
    /// How the table is named in messages.
    pub table_name: String,
    pub window: Duration,
    pub filter: Option<String>,
    pub queries: SqlQueries,
    pub cohort: CohortField,
    pub cohort_label: CohortLabel,
    pub clinic_column: String,
}

// Compared to tell whether a reconcile's config changed (a rotated password reconnects).
impl PartialEq for PostgresConfig {
    fn eq(&self, other: &Self) -> bool {
        self.url.expose_secret() == other.url.expose_secret()
            && self.table == other.table
            && self.window == other.window
            && self.filter == other.filter
            && self.queries == other.queries
            && self.cohort == other.cohort
            && self.cohort_label == other.cohort_label
            && self.clinic_column == other.clinic_column
    }
}

impl PostgresConfig {
    /// The spec's source with its URL.
    pub fn from_spec(spec: &MemoryTierSpec, source: &PostgresSource, url: String) -> Self {
        let window = source
            .window
            .unwrap_or(spec.metrics.rate_window)
            .as_std()
            .clamp(Duration::from_secs(1), Duration::from_secs(24 * 3600));
        let cohort = match &source.cohort {
            Some(c) => match (&c.column, &c.details_key) {
                (Some(column), _) => CohortField::Column(column.clone()),
                (None, Some(key)) => CohortField::DetailsKey(key.clone()),
                (None, None) => CohortField::DetailsKey(spec.canary.cohort_label.name.clone()),
            },
            None => CohortField::DetailsKey(spec.canary.cohort_label.name.clone()),
        };
        PostgresConfig {
            url: SecretString::from(url),
            table: quote_table(&source.table),
            table_name: source.table.clone(),
            window,
            filter: source
                .filter
                .as_deref()
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(str::to_owned),
            queries: source.queries.clone(),
            cohort,
            cohort_label: spec.canary.cohort_label.clone(),
            clinic_column: source.clinic_column.clone(),
        }
    }

    /// The SQL condition selecting one cohort's events.
    fn cohort_condition(&self, cohort: Cohort) -> String {
        let value = match cohort {
            Cohort::Canary => &self.cohort_label.canary,
            Cohort::Stable => &self.cohort_label.stable,
        };
        let field = match &self.cohort {
            CohortField::Column(c) => format!("{}::text", quote_ident(c)),
            CohortField::DetailsKey(k) => format!("details->>{}", literal(k)),
        };
        format!("({field} = {})", literal(value))
    }

    /// The window's start and end and the tier's filter, put in a query's placeholders.
    fn fill(&self, sql: &str, cohort: &str) -> String {
        let filter = match &self.filter {
            Some(f) => format!("({f})"),
            None => "TRUE".to_owned(),
        };
        sql.replace(TABLE_PLACEHOLDER, &self.table)
            .replace(
                START_PLACEHOLDER,
                &format!("({END_SQL} - make_interval(secs => $2::float8))"),
            )
            .replace(END_PLACEHOLDER, END_SQL)
            .replace(FILTER_PLACEHOLDER, &filter)
            .replace(COHORT_PLACEHOLDER, cohort)
    }
}

/// A table name with each part quoted as an identifier.
fn quote_table(table: &str) -> String {
    table
        .split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".")
}

/// An identifier, quoted.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal, as PostgreSQL's own quote_literal writes it (E'' when a backslash is in it).
pub fn literal(value: &str) -> String {
    let value = value.replace('\0', "");
    let quoted = value.replace('\'', "''");
    if quoted.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// The built-in query of a signal, with placeholders: the runbooks' "Monitoring Dashboard
/// Queries", parameterised by the window, with `NULLIF(COUNT(*), 0)` where the runbooks divide by
/// the count (no rows is unknown, not a division by zero).
pub fn builtin_sql(signal: Signal) -> Option<String> {
    let window = format!(
        "created_at > {START_PLACEHOLDER} AND created_at <= {END_PLACEHOLDER} AND {FILTER_PLACEHOLDER} AND {COHORT_PLACEHOLDER}"
    );
    let from = |event: EventType| {
        format!("FROM {TABLE_PLACEHOLDER} WHERE event_type = '{event}' AND {window}")
    };
    let share = |column: &str, value: bool, event: EventType| {
        format!(
            "SELECT COUNT(CASE WHEN {column} = {value} THEN 1 END)::float8 / NULLIF(COUNT(*), 0) * 100 {}",
            from(event)
        )
    };
    Some(match signal {
        Signal::P50LatencyMs | Signal::P95LatencyMs | Signal::P99LatencyMs => {
            let q = super::queries::quantile(signal)?;
            format!(
                "SELECT (percentile_cont({q}) WITHIN GROUP (ORDER BY processing_time_ms))::float8 {}",
                from(EventType::RequestCompleted)
            )
        }
        Signal::ErrorRatePercent => share("success", false, EventType::RequestCompleted),
        Signal::CacheHitRatePercent => share("cache_hit", true, EventType::CacheAccess),
        Signal::Mem0WriteSuccessPercent => share("success", true, EventType::Mem0Write),
        Signal::Requests => format!(
            "SELECT NULLIF(COUNT(*), 0)::float8 {}",
            from(EventType::RequestCompleted)
        ),
        // The latest change at or before the window's end, however old: the state lasts until
        // the next change.
        Signal::BreakerState => format!(
            "SELECT left(details->>'state', {MAX_TEXT_CHARS}), created_at::text FROM {TABLE_PLACEHOLDER} \
             WHERE event_type = '{}' AND created_at <= {END_PLACEHOLDER} AND {FILTER_PLACEHOLDER} \
             ORDER BY created_at DESC LIMIT 1",
            EventType::CircuitBreakerStateChange
        ),
        _ => return None,
    })
}

/// The runbooks' "cache hit rate by clinic", with placeholders; `{clinic}` is the clinic column.
fn clinic_sql(clinic: &str) -> String {
    let hits = "COUNT(CASE WHEN cache_hit = true THEN 1 END)";
    format!(
        "SELECT left({clinic}::text, {MAX_TEXT_CHARS}), {hits}::int8, COUNT(*)::int8 \
         FROM {TABLE_PLACEHOLDER} WHERE event_type = '{}' \
         AND created_at > {START_PLACEHOLDER} AND created_at <= {END_PLACEHOLDER} AND {FILTER_PLACEHOLDER} \
         GROUP BY {clinic} HAVING COUNT(*) > {MIN_CLINIC_LOOKUPS} \
         ORDER BY {hits}::float8 / COUNT(*) ASC, 1 LIMIT {MAX_CLINICS}",
        EventType::CacheAccess
    )
}

/// One query of the set: its SQL, ready to run, and whether the spec wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlQuery {
    pub sql: String,
    pub overridden: bool,
}

/// The SQL of every application signal for the whole service and each cohort.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlSet {
    queries: BTreeMap<(Scope, Signal), SqlQuery>,
    no_cohort: BTreeMap<Signal, String>,
}

impl SqlSet {
    pub fn new(config: &PostgresConfig) -> Self {
        let mut queries = BTreeMap::new();
        let mut no_cohort = BTreeMap::new();
        for signal in Signal::app() {
            let scopes = std::iter::once(Scope::Service).chain(
                Cohort::ALL
                    .iter()
                    .filter(|_| signal.per_cohort())
                    .map(|c| Scope::Cohort(*c)),
            );
            for scope in scopes {
                let cohort = match scope {
                    Scope::Service => "TRUE".to_owned(),
                    Scope::Cohort(c) => config.cohort_condition(c),
                };
                let query = match config.queries.get(signal) {
                    Some(q) if scope != Scope::Service && !q.contains(COHORT_PLACEHOLDER) => {
                        no_cohort.insert(
                            signal,
                            format!(
                                "spec.metrics.postgres.queries.{signal} has no {COHORT_PLACEHOLDER} to read one cohort with"
                            ),
                        );
                        continue;
                    }
                    Some(q) => SqlQuery {
                        // At most two rows are read of an override: one is the answer, a second
                        // says the query is ambiguous.
                        sql: format!(
                            "SELECT * FROM (\n{}\n) AS tierguard_override LIMIT 2",
                            config.fill(q.trim().trim_end_matches(';'), &cohort)
                        ),
                        overridden: true,
                    },
                    None => match builtin_sql(signal) {
                        Some(sql) => SqlQuery {
                            sql: config.fill(&sql, &cohort),
                            overridden: false,
                        },
                        None => continue,
                    },
                };
                queries.insert((scope, signal), query);
            }
        }
        SqlSet { queries, no_cohort }
    }

    pub fn get(&self, scope: Scope, signal: Signal) -> Option<&SqlQuery> {
        self.queries.get(&(scope, signal))
    }

    pub fn iter(&self) -> impl Iterator<Item = ((Scope, Signal), &SqlQuery)> {
        self.queries.iter().map(|(k, q)| (*k, q))
    }
}

impl NoCohortQuery for SqlSet {
    fn no_cohort_query(&self, signal: Signal) -> Option<&str> {
        self.no_cohort.get(&signal).map(String::as_str)
    }
}

/// One clinic's cache lookups over the window.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClinicHitRate {
    /// The clinic (none for events without one).
    pub clinic: Option<String>,
    pub hits: u64,
    pub lookups: u64,
}

impl ClinicHitRate {
    pub fn hit_rate_percent(&self) -> f64 {
        if self.lookups == 0 {
            return f64::NAN;
        }
        100.0 * self.hits as f64 / self.lookups as f64
    }
}

/// The runbooks' per-clinic rows as the stampede diagnosis reads them (the busiest `keep` of
/// them); rows without a clinic are left out, as the metrics sources leave out series without the
/// label.
pub fn clinic_breakdown(
    config: &super::clinics::ClinicsConfig,
    rows: Vec<ClinicHitRate>,
) -> crate::api::ClinicBreakdown {
    let readings = rows.into_iter().filter_map(|row| {
        let clinic = row.clinic?;
        Some(crate::api::ClinicCache {
            clinic,
            hits: row.hits as f64,
            misses: row.lookups.saturating_sub(row.hits) as f64,
        })
    });
    crate::api::ClinicBreakdown::busiest(&config.label, readings, config.keep)
}

/// Why a query gave no value, and whether the source (not just this query) is at fault.
#[derive(Clone, Debug, PartialEq)]
struct Failure {
    reason: String,
    whole_source: bool,
}

/// Reads the application's signals from PostgreSQL; keep one per MemoryTier.
pub struct PostgresObserver {
    config: PostgresConfig,
    queries: SqlSet,
    host: String,
    port: u16,
    pool: Pool,
    /// The address the allow-list admitted, where every new connection goes.
    checked: Arc<Mutex<Option<IpAddr>>>,
    destinations: AllowList,
    timeout: Duration,
}

impl std::fmt::Debug for PostgresObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresObserver")
            .field("url", &redact_url(self.config.url.expose_secret()))
            .field("table", &self.config.table_name)
            .finish_non_exhaustive()
    }
}

impl PostgresObserver {
    /// Set up the pool (no connection is made yet). `timeout` bounds one observation.
    pub fn new(
        config: PostgresConfig,
        timeout: Duration,
        destinations: AllowList,
    ) -> Result<Self, String> {
        let (pg, host, port) = parse_url(&config.url)?;
        let checked = Arc::new(Mutex::new(None));
        let tls = match pg.get_ssl_mode() {
            SslMode::Disable => None,
            _ => Some(tokio_postgres_rustls::MakeRustlsConnect::new(
                crate::remote::redis::verified_tls_config()?
                    .as_ref()
                    .clone(),
            )),
        };
        let mut pg = pg;
        pg.connect_timeout(timeout);
        pg.application_name("tierguard");
        let manager = Manager::from_connect(
            pg,
            CheckedConnect {
                checked: checked.clone(),
                tls,
            },
            ManagerConfig {
                // A connection the server ended (pg_terminate_backend, a restart) is found out
                // when it is taken from the pool, not by the query that would have used it.
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(PostgresObserver {
            queries: SqlSet::new(&config),
            config,
            host,
            port,
            pool,
            checked,
            destinations,
            timeout,
        })
    }

    pub fn config(&self) -> &PostgresConfig {
        &self.config
    }

    pub fn queries(&self) -> &SqlSet {
        &self.queries
    }

    /// How long one statement may run at most: most of the observation's deadline, so that the
    /// server's own cancellation (and its reason) arrives before the deadline gives up on the
    /// answer. A statement that starts late gets what is left of the deadline, less the margin.
    pub fn statement_timeout(&self) -> Duration {
        self.timeout.saturating_sub(self.margin())
    }

    /// What is kept of the deadline for the server's answer to a cancelled statement.
    fn margin(&self) -> Duration {
        (self.timeout / 5).max(Duration::from_millis(50))
    }

    /// Every signal over the window ending now: the readings, and why the source is unhealthy
    /// when it is.
    pub async fn read_signals(&self) -> (Readings, Option<String>) {
        self.read_signals_at(None).await
    }

    /// Every signal over the window ending at `end` (the server's now when `None`).
    pub async fn read_signals_at(&self, end: Option<Timestamp>) -> (Readings, Option<String>) {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let all = |reason: &str| -> Readings {
            self.queries
                .iter()
                .map(|(key, _)| (key, Err(format!("postgres: {reason}"))))
                .collect()
        };
        // One connection first: a server that is down or refuses the credentials is said once,
        // not by every query.
        if let Err(f) = self.connect().await {
            return (all(&f.reason), Some(f.reason));
        }
        let end = end.map(|t| t.as_millisecond() as f64 / 1000.0);
        // The first failure of the source stops the queries still waiting for a connection: a
        // locked table or a dying server is said once, within the deadline, not hammered.
        let stop = Mutex::new(None);
        let stop = &stop;
        // Each query gives up a little before the observation's deadline, so that the answers
        // that came in are kept (the observation's deadline drops everything still running).
        let give_up = deadline - self.margin() / 2;
        let answers = join_all(self.queries.iter().map(|(key, query)| async move {
            let answer = tokio::time::timeout_at(give_up, self.value(key, query, end, stop, deadline))
                .await
                .unwrap_or_else(|_| {
                    Err(Failure {
                        reason: format!(
                            "no answer within spec.metrics.timeout ({:?}): the server did not answer in time, not even to cancel the query",
                            self.timeout
                        ),
                        whole_source: true,
                    })
                });
            (key, answer)
        }))
        .await;
        let mut readings = Readings::new();
        let mut failures: Vec<((Scope, Signal), String)> = Vec::new();
        for (key, answer) in answers {
            let reading = match answer {
                Ok(v) => Ok(v),
                Err(f) => {
                    if f.whole_source {
                        failures.push((key, f.reason.clone()));
                    }
                    Err(format!("postgres: {}", f.reason))
                }
            };
            readings.insert(key, reading);
        }
        let health = match failures.as_slice() {
            [] => None,
            [(_, first), rest @ ..] if rest.iter().all(|(_, r)| r == first) => Some(first.clone()),
            [((scope, signal), first), ..] => Some(format!(
                "{} of {} queries failed, e.g. {signal} ({scope}): {first}",
                failures.len(),
                readings.len()
            )),
        };
        (readings, health)
    }

    /// The runbooks' "cache hit rate by clinic" over the window ending at `end` (now when `None`):
    /// clinics with more than [`MIN_CLINIC_LOOKUPS`] lookups, lowest hit rate first, at most
    /// [`MAX_CLINICS`].
    pub async fn clinic_hit_rates(
        &self,
        end: Option<Timestamp>,
    ) -> Result<Vec<ClinicHitRate>, String> {
        let sql = self.config.fill(
            &clinic_sql(&quote_ident(&self.config.clinic_column)),
            "TRUE",
        );
        let end = end.map(|t| t.as_millisecond() as f64 / 1000.0);
        let deadline = tokio::time::Instant::now() + self.timeout;
        // Back to the pool at once: the query takes its own.
        drop(
            self.connect()
                .await
                .map_err(|f| format!("postgres: {}", f.reason))?,
        );
        let rows = self
            .rows(&sql, end, &Mutex::new(None), deadline)
            .await
            .map_err(|f| format!("postgres: {}", f.reason))?;
        let mut out = Vec::with_capacity(rows.len().min(MAX_CLINICS));
        for row in rows.iter().take(MAX_CLINICS) {
            let clinic: Option<String> = row
                .try_get(0)
                .map_err(|e| format!("postgres: the clinic column: {e}"))?;
            let hits: i64 = row.try_get(1).map_err(|e| format!("postgres: {e}"))?;
            let lookups: i64 = row.try_get(2).map_err(|e| format!("postgres: {e}"))?;
            out.push(ClinicHitRate {
                clinic: clinic.map(|c| text::shown(&c, MAX_TEXT_CHARS)),
                hits: u64::try_from(hits).unwrap_or(0),
                lookups: u64::try_from(lookups).unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// Check the host against the allow-list (once per observation), remember the address
    /// admitted, and take one connection from the pool (made to that address when a new one is
    /// needed).
    async fn connect(&self) -> Result<deadpool_postgres::Object, Failure> {
        let whole = |reason: String| Failure {
            reason,
            whole_source: true,
        };
        let admitted = self
            .destinations
            .resolve(&self.host, self.port)
            .await
            .map_err(|e| whole(format!("spec.metrics.postgres.urlSecretRef: {e}")))?;
        let ip = admitted
            .first()
            .map(|a| a.ip())
            .ok_or_else(|| whole(format!("{} has no address", self.host)))?;
        if let Ok(mut slot) = self.checked.lock() {
            *slot = Some(ip);
        }
        self.checkout().await
    }

    /// A connection from the pool (new ones to the address [`Self::connect`] admitted last).
    async fn checkout(&self) -> Result<deadpool_postgres::Object, Failure> {
        self.pool.get().await.map_err(|e| Failure {
            reason: self.pool_error(e),
            whole_source: true,
        })
    }

    fn pool_error(&self, e: PoolError) -> String {
        let text = match e {
            PoolError::Backend(e) => describe(&e, &self.config, self.statement_timeout()).0,
            PoolError::Timeout(_) => format!(
                "no connection to {}:{} within {:?}",
                self.host, self.port, self.timeout
            ),
            other => other.to_string(),
        };
        self.scrubbed(&text)
    }

    fn scrubbed(&self, text: &str) -> String {
        let mut out = scrub(text, &[&self.config.url]);
        let url = self.config.url.expose_secret();
        if url.len() >= 3 && out.contains(url) {
            out = out.replace(url, &redact_url(url));
        }
        out
    }

    /// The rows of one query in a read-only transaction under the statement timeout, with `$1`
    /// the window's end (seconds since the epoch, or NULL for now) and `$2` its length in seconds
    /// (each bound only when the query uses it).
    async fn rows(
        &self,
        sql: &str,
        end: Option<f64>,
        stop: &Mutex<Option<String>>,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<Row>, Failure> {
        // The host was checked for this observation by `connect`: the queries only take
        // connections.
        let mut client = self.checkout().await?;
        if let Some(reason) = stop.lock().ok().and_then(|s| s.clone()) {
            return Err(Failure {
                reason,
                whole_source: true,
            });
        }
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .saturating_sub(self.margin());
        if left < Duration::from_millis(10) {
            return Err(Failure {
                reason: format!(
                    "no time left within spec.metrics.timeout ({:?}) for this query: the others took it",
                    self.timeout
                ),
                whole_source: true,
            });
        }
        let timeout = left.min(self.statement_timeout());
        let failed = |e: tokio_postgres::Error| {
            let (reason, whole_source) = describe(&e, &self.config, timeout);
            Failure {
                reason: self.scrubbed(&reason),
                whole_source,
            }
        };
        let tx = client
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .map_err(failed)?;
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = {}",
            timeout.as_millis().max(1)
        ))
        .await
        .map_err(failed)?;
        let statement = tx.prepare(sql).await.map_err(failed)?;
        let window = self.config.window.as_secs_f64();
        let params: [&(dyn ToSql + Sync); 2] = [&end, &window];
        let used = statement.params().len();
        if used > params.len() {
            return Err(Failure {
                reason: format!(
                    "the query uses {used} parameters; only $1 (the window's end) and $2 (its length in seconds) are given"
                ),
                whole_source: false,
            });
        }
        let rows = tx
            .query(&statement, &params[..used])
            .await
            .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        Ok(rows)
    }

    /// One signal's value from its query's first row and column.
    async fn value(
        &self,
        (scope, signal): (Scope, Signal),
        query: &SqlQuery,
        end: Option<f64>,
        stop: &Mutex<Option<String>>,
        deadline: tokio::time::Instant,
    ) -> Result<f64, Failure> {
        let own = |reason: String| Failure {
            reason,
            whole_source: false,
        };
        let rows = self
            .rows(&query.sql, end, stop, deadline)
            .await
            .map_err(|f| {
                // A query the spec wrote that fails is that signal's problem, unless the
                // connection is.
                let whole_source =
                    f.whole_source && (!query.overridden || is_connection_failure(&f));
                if whole_source && let Ok(mut first) = stop.lock() {
                    first.get_or_insert_with(|| f.reason.clone());
                }
                Failure { whole_source, ..f }
            })?;
        let Some(row) = rows.first() else {
            return Err(own(
                if signal == Signal::BreakerState && !query.overridden {
                    format!(
                        "no {} event in {}",
                        EventType::CircuitBreakerStateChange,
                        self.config.table_name
                    )
                } else {
                    "the query returned no row".to_owned()
                },
            ));
        };
        if rows.len() > 1 {
            return Err(own(
                "the query returned more than one row; it must return one".to_owned(),
            ));
        }
        let value = match first_column(row) {
            Ok(v) => v,
            Err(reason) => return Err(own(reason)),
        };
        match value {
            Cell::Null => Err(own(self.null_reason((scope, signal), query, row))),
            Cell::Number(v) => Ok(v),
            Cell::Text(t) if signal == Signal::BreakerState => breaker_gauge(&t).ok_or_else(|| {
                own(format!(
                    "breaker state {:?} is not closed, open or half_open",
                    text::shown(&t, MAX_TEXT_CHARS)
                ))
            }),
            Cell::Text(t) => t.trim().parse::<f64>().map_err(|_| {
                own(format!(
                    "the query answered {:?}, not a number",
                    text::shown(&t, MAX_TEXT_CHARS)
                ))
            }),
        }
    }

    /// Why a NULL answer is unknown, in the table's words.
    fn null_reason(&self, (scope, signal): (Scope, Signal), query: &SqlQuery, row: &Row) -> String {
        if query.overridden {
            return "the query answered NULL".to_owned();
        }
        let window = humantime::format_duration(self.config.window);
        let table = match scope {
            Scope::Service => self.config.table_name.clone(),
            Scope::Cohort(c) => format!(
                "{} where {}",
                self.config.table_name,
                self.config.cohort_condition(c)
            ),
        };
        match signal {
            Signal::P50LatencyMs | Signal::P95LatencyMs | Signal::P99LatencyMs => format!(
                "no {} event with a processing_time_ms in {table} over the last {window}",
                EventType::RequestCompleted
            ),
            Signal::ErrorRatePercent | Signal::Requests => format!(
                "no {} event in {table} over the last {window}",
                EventType::RequestCompleted
            ),
            Signal::CacheHitRatePercent => format!(
                "no {} event in {table} over the last {window}",
                EventType::CacheAccess
            ),
            Signal::Mem0WriteSuccessPercent => format!(
                "no {} event in {table} over the last {window}",
                EventType::Mem0Write
            ),
            Signal::BreakerState => {
                let at: Option<String> = row.try_get(1).ok().flatten();
                format!(
                    "the latest {} event ({}) has no details->>'state'",
                    EventType::CircuitBreakerStateChange,
                    at.as_deref()
                        .map(|t| text::shown(t, MAX_TEXT_CHARS))
                        .unwrap_or_default()
                )
            }
            _ => "the query answered NULL".to_owned(),
        }
    }
}

/// The breaker's gauge (0 closed, 1 open, 2 half-open) from the state an event names, or from
/// the gauge itself.
pub fn breaker_gauge(state: &str) -> Option<f64> {
    let state = state.trim().to_ascii_lowercase().replace(['-', ' '], "_");
    let parsed = match state.as_str() {
        "closed" => BreakerState::Closed,
        "open" => BreakerState::Open,
        "half_open" | "halfopen" => BreakerState::HalfOpen,
        other => {
            return other
                .parse::<f64>()
                .ok()
                .filter(|g| BreakerState::from_gauge(*g).is_some());
        }
    };
    Some(parsed.gauge())
}

/// A cell of the first column, in the types a signal's value may come in.
enum Cell {
    Null,
    Number(f64),
    Text(String),
}

fn first_column(row: &Row) -> Result<Cell, String> {
    let Some(column) = row.columns().first() else {
        return Err("the query returned no column".to_owned());
    };
    let ty = column.type_().clone();
    let get_err = |e: tokio_postgres::Error| format!("the first column ({ty}): {e}");
    let cell = match ty {
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(0)
            .map_err(get_err)?
            .map(Cell::Number),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(0)
            .map_err(get_err)?
            .map(|v| Cell::Number(v.into())),
        Type::INT8 => row
            .try_get::<_, Option<i64>>(0)
            .map_err(get_err)?
            .map(|v| Cell::Number(v as f64)),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(0)
            .map_err(get_err)?
            .map(|v| Cell::Number(v.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(0)
            .map_err(get_err)?
            .map(|v| Cell::Number(v.into())),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => row
            .try_get::<_, Option<String>>(0)
            .map_err(get_err)?
            .map(|t| Cell::Text(t.chars().take(MAX_TEXT_CHARS * 4).collect())),
        other => {
            return Err(format!(
                "the first column is of type {other}; cast it to float8 (or text for a breaker state)"
            ));
        }
    };
    Ok(cell.unwrap_or(Cell::Null))
}

/// Whether a failure is the connection's (the server, the network), not one query's.
fn is_connection_failure(f: &Failure) -> bool {
    f.reason.starts_with(CONNECTION_PREFIX)
}

const CONNECTION_PREFIX: &str = "connection: ";

/// A driver error in words for status, and whether it is the source's fault (not one query's).
fn describe(
    e: &tokio_postgres::Error,
    config: &PostgresConfig,
    statement_timeout: Duration,
) -> (String, bool) {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let message = db.message();
        let reason = if *code == SqlState::QUERY_CANCELED {
            format!(
                "the query ran past the statement timeout ({statement_timeout:?}, from spec.metrics.timeout): {message}"
            )
        } else if *code == SqlState::UNDEFINED_TABLE {
            format!(
                "{message} (spec.metrics.postgres.table is {:?})",
                config.table_name
            )
        } else if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            || *code == SqlState::INVALID_CATALOG_NAME
        {
            format!("{CONNECTION_PREFIX}{message} (spec.metrics.postgres.urlSecretRef)")
        } else if *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::TOO_MANY_CONNECTIONS
        {
            format!("{CONNECTION_PREFIX}{message}")
        } else {
            format!("{message} (SQLSTATE {})", code.code())
        };
        return (reason, true);
    }
    let chain = crate::secret::error_chain(e);
    if e.is_closed() {
        return (
            format!("{CONNECTION_PREFIX}the server closed the connection ({chain})"),
            true,
        );
    }
    (format!("{CONNECTION_PREFIX}{chain}"), true)
}

/// The driver's configuration from the URL, and its one TCP host and port. `sslmode=verify-ca`
/// and `verify-full` are read as `require`: the certificate is verified in every TLS mode.
fn parse_url(url: &SecretString) -> Result<(tokio_postgres::Config, String, u16), String> {
    let raw = url.expose_secret();
    let shown = redact_url(raw);
    let mut parsed = url::Url::parse(raw).map_err(|e| format!("{shown}: not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(format!(
            "{shown}: the scheme must be postgres:// or postgresql://"
        ));
    }
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| {
            let v = match (k.as_ref(), v.as_ref()) {
                ("sslmode", "verify-ca" | "verify-full") => "require".to_owned(),
                _ => v.into_owned(),
            };
            (k.into_owned(), v)
        })
        .collect();
    if pairs.iter().any(|(k, _)| k == "host" || k == "hostaddr") {
        return Err(format!(
            "{shown}: give the host in the URL's authority, not as a host or hostaddr parameter"
        ));
    }
    if pairs.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    let config: tokio_postgres::Config = parsed
        .as_str()
        .parse()
        .map_err(|e: tokio_postgres::Error| scrub(&format!("{shown}: {e}"), &[url]))?;
    let host = match config.get_hosts() {
        [Host::Tcp(host)] => host.clone(),
        [] => return Err(format!("{shown}: the URL names no host")),
        [_] => {
            return Err(format!(
                "{shown}: a Unix socket is not a network destination"
            ));
        }
        _ => return Err(format!("{shown}: give exactly one host")),
    };
    let port = match config.get_ports() {
        [] => DEFAULT_PORT,
        [port] => *port,
        _ => return Err(format!("{shown}: give exactly one port")),
    };
    Ok((config, host, port))
}

/// New connections go to the address the allow-list admitted (the host name stays for TLS).
struct CheckedConnect {
    checked: Arc<Mutex<Option<IpAddr>>>,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl deadpool_postgres::Connect for CheckedConnect {
    fn connect(
        &self,
        pg_config: &tokio_postgres::Config,
    ) -> BoxFuture<
        '_,
        Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
    > {
        let mut config = pg_config.clone();
        let ip = self.checked.lock().ok().and_then(|slot| *slot);
        let tls = self.tls.clone();
        Box::pin(async move {
            match ip {
                Some(ip) => {
                    config.hostaddr(ip);
                }
                // Never reached (the address is checked before a connection is taken); without
                // one, no connection is made: an empty configuration fails at once.
                None => {
                    config = tokio_postgres::Config::new();
                }
            }
            let (client, task) = match tls {
                Some(tls) => {
                    let (client, connection) = config.connect(tls).await?;
                    (client, tokio::spawn(async move { drop(connection.await) }))
                }
                None => {
                    let (client, connection) = config.connect(NoTls).await?;
                    (client, tokio::spawn(async move { drop(connection.await) }))
                }
            };
            Ok((client, task))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(source: serde_json::Value) -> PostgresConfig {
        let mut postgres = serde_json::json!({"urlSecretRef": {"name": "db", "key": "url"}});
        if let (Some(base), Some(extra)) = (postgres.as_object_mut(), source.as_object()) {
            base.extend(extra.clone());
        }
        let spec: MemoryTierSpec = serde_json::from_value(serde_json::json!({
            "target": {"configMapName": "f"},
            "metrics": {"postgres": postgres, "rateWindow": "90s"},
        }))
        .unwrap();
        let source = spec.metrics.postgres.clone().unwrap();
        PostgresConfig::from_spec(&spec, &source, "postgres://u:pw@db:5432/app".into())
    }

    #[test]
    fn built_in_queries_are_the_runbooks_over_the_window() {
        let set = SqlSet::new(&config(serde_json::json!({})));
        let sql = |scope, signal| set.get(scope, signal).unwrap().sql.clone();
        let p95 = sql(Scope::Service, Signal::P95LatencyMs);
        assert!(
            p95.starts_with(
                "SELECT (percentile_cont(0.95) WITHIN GROUP (ORDER BY processing_time_ms))::float8 FROM \"observability_events\" WHERE event_type = 'request_completed'"
            ),
            "{p95}"
        );
        assert!(p95.contains("make_interval(secs => $2::float8)"), "{p95}");
        let errors = sql(Scope::Service, Signal::ErrorRatePercent);
        assert!(
            errors.starts_with("SELECT COUNT(CASE WHEN success = false THEN 1 END)::float8 / NULLIF(COUNT(*), 0) * 100"),
            "{errors}"
        );
        let hits = sql(Scope::Service, Signal::CacheHitRatePercent);
        assert!(
            hits.contains("cache_hit = true") && hits.contains("'cache_access'"),
            "{hits}"
        );
        let mem0 = sql(Scope::Service, Signal::Mem0WriteSuccessPercent);
        assert!(
            mem0.contains("success = true") && mem0.contains("'mem0_write'"),
            "{mem0}"
        );
        let breaker = sql(Scope::Service, Signal::BreakerState);
        assert!(
            breaker.contains("details->>'state'")
                && breaker.contains("ORDER BY created_at DESC LIMIT 1"),
            "{breaker}"
        );
        // Per cohort, the default key of details; the breaker is one per service.
        let canary = sql(Scope::Cohort(Cohort::Canary), Signal::Requests);
        assert!(
            canary.contains("(details->>'cohort' = 'canary')"),
            "{canary}"
        );
        assert!(
            set.get(Scope::Cohort(Cohort::Stable), Signal::BreakerState)
                .is_none()
        );
        // The window is the rate window unless set.
        assert_eq!(
            config(serde_json::json!({})).window,
            Duration::from_secs(90)
        );
        assert_eq!(
            config(serde_json::json!({"window": "15m"})).window,
            Duration::from_secs(900)
        );
    }

    #[test]
    fn names_and_values_are_quoted() {
        assert_eq!(quote_table("public.events"), "\"public\".\"events\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("a\\b'"), "E'a\\\\b'''");
        let c = config(serde_json::json!({"cohort": {"column": "path"}, "filter": " app = 'x' "}));
        assert_eq!(
            c.cohort_condition(Cohort::Stable),
            "(\"path\"::text = 'stable')"
        );
        let set = SqlSet::new(&c);
        let sql = &set.get(Scope::Service, Signal::Requests).unwrap().sql;
        assert!(sql.contains("AND (app = 'x') AND TRUE"), "{sql}");
    }

    #[test]
    fn overrides_take_placeholders_and_are_bounded_to_two_rows() {
        let c = config(serde_json::json!({"queries": {
            "p50LatencyMs": "SELECT 1 FROM {table} WHERE {cohort};",
            "errorRatePercent": "SELECT 2",
        }}));
        let set = SqlSet::new(&c);
        let p50 = set
            .get(Scope::Cohort(Cohort::Canary), Signal::P50LatencyMs)
            .unwrap();
        assert!(p50.overridden);
        assert_eq!(
            p50.sql,
            "SELECT * FROM (\nSELECT 1 FROM \"observability_events\" WHERE (details->>'cohort' = 'canary')\n) AS tierguard_override LIMIT 2"
        );
        assert!(
            set.get(Scope::Cohort(Cohort::Canary), Signal::ErrorRatePercent)
                .is_none()
        );
        assert!(
            set.no_cohort_query(Signal::ErrorRatePercent)
                .unwrap()
                .contains("{cohort}")
        );
    }

    #[test]
    fn breaker_states_in_any_spelling() {
        assert_eq!(breaker_gauge("open"), Some(1.0));
        assert_eq!(breaker_gauge(" CLOSED "), Some(0.0));
        assert_eq!(breaker_gauge("half-open"), Some(2.0));
        assert_eq!(breaker_gauge("half_open"), Some(2.0));
        assert_eq!(breaker_gauge("2"), Some(2.0));
        assert_eq!(breaker_gauge("3"), None);
        assert_eq!(breaker_gauge("melted"), None);
    }

    #[test]
    fn urls_give_one_tcp_host_and_never_echo_the_password() {
        let parse = |u: &str| parse_url(&SecretString::from(u.to_owned()));
        let (config, host, port) =
            parse("postgres://u:s3cret@db.example:6543/app?sslmode=verify-full").unwrap();
        assert_eq!((host.as_str(), port), ("db.example", 6543));
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
        let (_, _, port) = parse("postgresql://u@db/app").unwrap();
        assert_eq!(port, DEFAULT_PORT);
        for bad in [
            "http://u:s3cret@db/app",
            "postgres://u:s3cret@db/app?host=/var/run/postgresql",
            "postgres://u:s3cret@db/app?hostaddr=10.0.0.1",
            "postgres://u:s3cret@db/app?sslmode=sometimes",
            "postgres://u:s3cret@a,b/app",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(!err.contains("s3cret"), "{bad}: {err}");
        }
    }
}
