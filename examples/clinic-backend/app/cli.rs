//! Command line: `serve`, `load` and `default-flags`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use super::load::{self, LoadConfig};
use super::{ServeConfig, Settings};

#[derive(Debug, Parser)]
#[command(
    name = "clinic-backend",
    about = "The runbooks' clinic backend, for tierguard's incident drills"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the clinic API, /metrics and the admin endpoints.
    Serve(ServeArgs),
    /// Drive a running service with a bounded, skewed load and print a summary.
    Load(LoadArgs),
    /// Print a flags file with the runbooks' defaults (what tierguard renders for a default spec).
    DefaultFlags {
        #[arg(long, value_enum, default_value_t = FlagsFormat::Env)]
        format: FlagsFormat,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FlagsFormat {
    Env,
    Json,
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e} (e.g. 150ms, 2s, 5m)"))
}

fn share(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|v| (0.0..=1.0).contains(v))
        .ok_or_else(|| format!("{text:?}: expected a number from 0 to 1"))
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// redis:// URL of the cache.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: String,
    /// The flags: a directory with one file per key (a mounted ConfigMap), or a KEY=VALUE /
    /// JSON file. Re-read while running.
    #[arg(long)]
    pub flags: PathBuf,
    /// Bearer token of the admin endpoints.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,
    /// Print the bound address alone on the first line of stdout.
    #[arg(long)]
    pub print_port: bool,
    /// Number of clinics (ids 1..=N).
    #[arg(long, default_value_t = 100)]
    pub clinics: u32,
    /// Latency of one database query.
    #[arg(long, value_parser = duration, default_value = "150ms")]
    pub db_latency: Duration,
    /// Database connections (queries running at once).
    #[arg(long, default_value_t = 8)]
    pub db_connections: usize,
    /// How long a query waits for a connection before the request fails with 503.
    #[arg(long, value_parser = duration, default_value = "2s")]
    pub db_queue_timeout: Duration,
    /// Latency of one mem0 call (before faults).
    #[arg(long, value_parser = duration, default_value = "5ms")]
    pub mem0_latency: Duration,
    /// Share of requests that write a session key.
    #[arg(long, value_parser = share, default_value = "0.1")]
    pub session_rate: f64,
    /// TTL of session keys.
    #[arg(long, value_parser = duration, default_value = "30m")]
    pub session_ttl: Duration,
    /// How often the flags are re-read.
    #[arg(long, value_parser = duration, default_value = "200ms")]
    pub flags_poll: Duration,
    /// Also write every request, cache lookup, mem0 write and breaker change to this PostgreSQL
    /// database (postgres://user:password@host/db), as the runbooks' observability_events.
    #[arg(long, env = "EVENTS_POSTGRES_URL", hide_env_values = true)]
    pub events_postgres: Option<String>,
    /// The events table (created when missing).
    #[arg(long, default_value = "observability_events")]
    pub events_table: String,
}

impl ServeArgs {
    pub fn config(&self) -> ServeConfig {
        ServeConfig {
            listen: self.listen,
            redis_url: self.redis_url.clone(),
            flags_path: self.flags.clone(),
            admin_token: self.admin_token.clone(),
            flags_poll: self.flags_poll,
            events_postgres: self.events_postgres.clone(),
            events_table: self.events_table.clone(),
            settings: Settings {
                clinics: self.clinics,
                db_latency: self.db_latency,
                db_connections: self.db_connections,
                db_queue_timeout: self.db_queue_timeout,
                mem0_latency: self.mem0_latency,
                session_rate: self.session_rate,
                session_ttl: self.session_ttl,
            },
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Base URL of the service (loopback only).
    #[arg(long, value_parser = |s: &str| load::loopback_target(s).map_err(|e| e.to_string()))]
    pub target: reqwest::Url,
    /// Requests per second.
    #[arg(long, default_value_t = 50)]
    pub rps: u32,
    /// How long to run.
    #[arg(long, value_parser = duration, default_value = "30s")]
    pub duration: Duration,
    /// Clinic ids to request: FIRST-LAST, or N for 1-N.
    #[arg(long, default_value = "1-50", value_parser = |s: &str| load::parse_clinics(s).map_err(|e| e.to_string()))]
    pub clinics: std::ops::RangeInclusive<u32>,
    /// The hot clinics, hottest first.
    #[arg(long, default_value = "1,2,3,5,8", value_parser = |s: &str| load::parse_hot(s).map_err(|e| e.to_string()))]
    pub hot: std::vec::Vec<u32>,
    /// Zipf exponent: 0 is uniform, 1 is the classic skew.
    #[arg(long, default_value_t = 1.0)]
    pub skew: f64,
    /// Requests in flight at most; beyond it requests are skipped, not queued.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Per-request timeout.
    #[arg(long, value_parser = duration, default_value = "10s")]
    pub timeout: Duration,
    /// Share of requests for a provider instead of the clinic.
    #[arg(long, value_parser = share, default_value = "0")]
    pub provider_share: f64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

impl LoadArgs {
    pub fn config(&self) -> LoadConfig {
        LoadConfig {
            target: self.target.clone(),
            rps: self.rps,
            duration: self.duration,
            clinics: self.clinics.clone(),
            hot: self.hot.clone(),
            skew: self.skew,
            concurrency: self.concurrency,
            timeout: self.timeout,
            provider_share: self.provider_share,
        }
    }
}

/// The runbooks' defaults as tierguard renders them for a spec that sets nothing.
pub fn default_flags() -> std::collections::BTreeMap<String, String> {
    let spec: tierguard::api::MemoryTierSpec = serde_json::from_value(
        serde_json::json!({"target": {"configMapName": "clinic-backend-flags"}}),
    )
    .expect("a minimal spec is valid");
    tierguard::policy::effective::baseline(&spec)
}

pub fn render_flags(
    flags: &std::collections::BTreeMap<String, String>,
    format: FlagsFormat,
) -> String {
    match format {
        FlagsFormat::Env => flags.iter().map(|(k, v)| format!("{k}={v}\n")).collect(),
        FlagsFormat::Json => {
            let mut text = serde_json::to_string_pretty(flags).unwrap_or_default();
            text.push('\n');
            text
        }
    }
}

/// Run the command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let mut running = super::start(args.config()).await?;
            if args.print_port {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", running.addr)?;
                out.flush()?;
            }
            tokio::select! {
                () = shutdown_signal() => tracing::info!("shutting down"),
                result = running.wait() => return result,
            }
            running.stop().await
        }
        Command::Load(args) => {
            let summary = load::run(args.config()).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                println!("{}", summary.text());
            }
            Ok(())
        }
        Command::DefaultFlags { format } => {
            print!("{}", render_flags(&default_flags(), format));
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
