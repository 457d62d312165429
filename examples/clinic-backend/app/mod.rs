//! The demo clinic backend: a small service that behaves like the runbooks' application, so the
//! incident drills have something real to break and tierguard something real to fix.
//!
//! `GET /clinics/{id}` and `GET /clinics/{id}/providers/{provider_id}` answer through a Redis
//! cache in front of a slow in-process database; canary requests also use a fake mem0 behind a
//! circuit breaker. Flags come from the file the controller renders (reloaded while running),
//! metrics follow tierguard's contract on `/metrics`, and admin endpoints warm the cache and
//! inject faults. See `http` for the endpoints and `faults` for the switches.

pub mod breaker;
pub mod cache;
pub mod cli;
pub mod db;
pub mod events;
pub mod faults;
pub mod flags;
pub mod http;
pub mod load;
pub mod mem0;
pub mod metrics;
pub mod service;
pub mod sessions;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use breaker::Breaker;
use cache::Cache;
use db::Database;
use faults::RequestFaults;
use flags::FlagStore;
use mem0::{FakeMem0, Mem0Client};
use metrics::Metrics;

/// Everything `serve` needs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub redis_url: String,
    pub flags_path: PathBuf,
    pub admin_token: String,
    /// How often the flags source is read again.
    pub flags_poll: Duration,
    /// Where the events are also written (the runbooks' observability_events), if anywhere.
    pub events_postgres: Option<String>,
    pub events_table: String,
    pub settings: Settings,
}

/// Start-up settings of the service (the flags are the part that changes while it runs).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Clinic ids are 1..=clinics.
    pub clinics: u32,
    pub db_latency: Duration,
    pub db_connections: usize,
    pub db_queue_timeout: Duration,
    pub mem0_latency: Duration,
    /// Share of requests that write a session key.
    pub session_rate: f64,
    pub session_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            clinics: 100,
            db_latency: Duration::from_millis(150),
            db_connections: 8,
            db_queue_timeout: Duration::from_secs(2),
            mem0_latency: Duration::from_millis(5),
            session_rate: 0.1,
            session_ttl: Duration::from_secs(1800),
        }
    }
}

impl ServeConfig {
    /// Defaults for everything but what has none (the tests' way in).
    #[allow(dead_code)]
    pub fn new(redis_url: &str, flags_path: impl Into<PathBuf>, admin_token: &str) -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            redis_url: redis_url.to_owned(),
            flags_path: flags_path.into(),
            admin_token: admin_token.to_owned(),
            flags_poll: Duration::from_millis(200),
            events_postgres: None,
            events_table: "observability_events".to_owned(),
            settings: Settings::default(),
        }
    }
}

/// Shared by every handler.
pub struct AppState {
    pub settings: Settings,
    pub admin_token: String,
    pub flags: FlagStore,
    pub metrics: Arc<Metrics>,
    pub db: Database,
    pub cache: Cache,
    pub mem0: Arc<Mem0Client>,
    faults: RwLock<RequestFaults>,
}

impl AppState {
    pub fn request_faults(&self) -> RequestFaults {
        self.faults
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn update_request_faults(&self, change: impl FnOnce(&mut RequestFaults)) {
        change(&mut self.faults.write().unwrap_or_else(|p| p.into_inner()));
    }
}

/// A running service; stopped when dropped.
pub struct Running {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    background: Vec<JoinHandle<()>>,
}

impl Running {
    #[allow(dead_code)]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop accepting, finish the requests in flight, stop the background tasks.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        for task in self.background.drain(..) {
            task.abort();
        }
        if let Some(server) = self.server.take() {
            server.await.context("server task")??;
        }
        Ok(())
    }

    /// Serve until the server ends by itself (an error); cancel-safe.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        if let Some(server) = self.server.as_mut() {
            let result = server.await;
            self.server = None;
            result.context("server task")??;
        }
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

/// Build the service and start serving on `config.listen`.
pub async fn start(config: ServeConfig) -> anyhow::Result<Running> {
    anyhow::ensure!(
        !config.admin_token.trim().is_empty(),
        "--admin-token must not be empty"
    );
    let flags = FlagStore::open(&config.flags_path)?;
    let initial = flags.current();
    tracing::info!("{}", initial.flags.summary());
    tracing::info!("{}", initial.flags.breaker_summary());

    let settings = config.settings.clone();
    let metrics = Arc::new(Metrics::new(1..=settings.clinics));
    if let Some(url) = &config.events_postgres {
        let sink = events::start(url, &config.events_table)
            .await
            .with_context(|| format!("--events-postgres {}", redacted(url)))?;
        let _ = metrics.events.set(sink);
    }
    let redis = cache::connect(&config.redis_url)
        .await
        .with_context(|| format!("cannot connect to Redis at {}", redacted(&config.redis_url)))?;
    let cache = Cache::new(redis, metrics.clone());
    let db = Database::new(
        settings.clinics,
        settings.db_latency,
        settings.db_connections,
        settings.db_queue_timeout,
        metrics.clone(),
    );
    let breaker = Arc::new(Breaker::new(initial.flags.breaker.clone(), metrics.clone()));
    // The events table learns the breaker's state at start-up, not only at its first change.
    metrics.emit(|| {
        events::Event::breaker_change(&initial.flags.breaker.name, breaker.state().label(), 0)
    });
    let mem0 = Arc::new(Mem0Client::new(
        Arc::new(FakeMem0::new(settings.mem0_latency)),
        breaker,
        metrics.clone(),
    ));
    let state = Arc::new(AppState {
        settings,
        admin_token: config.admin_token.clone(),
        flags,
        metrics,
        db,
        cache,
        mem0: mem0.clone(),
        faults: RwLock::new(RequestFaults::default()),
    });

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let router = http::router(state.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    let background = vec![
        tokio::spawn(watch_flags(state.clone(), config.flags_poll)),
        tokio::spawn(mem0.supervise(Duration::from_millis(100), Duration::from_secs(1))),
    ];
    tracing::info!(%addr, "clinic backend listening");
    Ok(Running {
        addr,
        shutdown: Some(tx),
        server: Some(server),
        background,
    })
}

/// Poll the flags source; apply and log changes; log a broken source once per distinct error.
async fn watch_flags(state: Arc<AppState>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported: Option<String> = None;
    loop {
        ticker.tick().await;
        let store = &state.flags;
        // File reads (and the retry's pause) stay off the request-serving threads.
        let reading = state.clone();
        let result = tokio::task::spawn_blocking(move || reading.flags.reload()).await;
        let Ok(result) = result else {
            continue; // the read panicked or the runtime is shutting down
        };
        match result {
            Ok(false) => reported = None,
            Ok(true) => {
                reported = None;
                let loaded = store.current();
                state.metrics.flags_reloads.inc();
                state.mem0.breaker().configure(loaded.flags.breaker.clone());
                tracing::info!(version = loaded.version, "{}", loaded.flags.summary());
                tracing::info!("{}", loaded.flags.breaker_summary());
            }
            Err(e) => {
                let text = e.to_string();
                if reported.as_deref() != Some(text.as_str()) {
                    state.metrics.flags_reload_errors.inc();
                    tracing::error!("flags not reloaded, keeping the previous ones: {text}");
                    reported = Some(text);
                }
            }
        }
    }
}

/// A Redis URL with its password hidden, for messages.
pub fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}
