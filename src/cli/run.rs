//! `tierguard run`: the controller.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::controller::{self, LeaseConfig, RunConfig};
use crate::destinations::{AllowList, Destinations, Purpose};

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// The least severe log events written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Watch MemoryTiers in this namespace only; repeat the flag (or separate them with commas)
    /// for several (default: all namespaces).
    #[arg(long = "namespace", env = "TIERGUARD_NAMESPACE", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Reconcile only MemoryTiers matching this label selector, e.g. `shard=a` (to split a large
    /// fleet across controller deployments).
    #[arg(long, env = "TIERGUARD_SELECTOR")]
    pub selector: Option<String>,
    /// A kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "TIERGUARD_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log level. RUST_LOG, when set, takes its place and may name targets too
    /// (`info,kube=debug`); a bare word in it must be a level.
    #[arg(long, value_enum, default_value_t = LogLevel::Info, env = "TIERGUARD_LOG_LEVEL")]
    pub log_level: LogLevel,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080", env = "TIERGUARD_METRICS_ADDR")]
    pub metrics_addr: SocketAddr,
    /// Compete for a Lease so several replicas are safe (required with more than one replica).
    #[arg(long)]
    pub leader_election: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "tierguard-leader")]
    pub lease_name: String,
    /// Namespace of the Lease (default: this pod's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease and in Events (default: the pod name or host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Most reconciles running at once. When more are due, an incident goes first, then a new or
    /// changed tier, then healthy tiers' periodic ticks.
    #[arg(long, default_value_t = controller::DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// How long the Lease is valid without renewal; a standby takes over within this.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// Most background jobs (cache warming, Redis remediation and audit) running at once, all
    /// tiers together; they run outside the reconciles, and a tier runs one of each kind at a
    /// time.
    #[arg(long, default_value_t = controller::work::DEFAULT_JOBS as u16, value_parser = clap::value_parser!(u16).range(1..))]
    pub background_jobs: u16,
    /// Longest one background job may run before it is stopped and recorded as failed.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub background_job_timeout: Duration,
    /// Where a tier's metrics requests (Prometheus, /metrics scrapes) may go: address ranges
    /// (10.0.0.0/8), addresses, host names (prometheus.example.com) or domains
    /// (*.svc.cluster.local), repeated or comma-separated. Default: the private address ranges.
    #[arg(long, env = "TIERGUARD_METRICS_DESTINATIONS", value_delimiter = ',')]
    pub metrics_destinations: Vec<String>,
    /// Where cache-warming requests may go (as --metrics-destinations). Default: the private
    /// address ranges.
    #[arg(long, env = "TIERGUARD_WARMING_DESTINATIONS", value_delimiter = ',')]
    pub warming_destinations: Vec<String>,
    /// Where webhooks may go (as --metrics-destinations). Default: the private address ranges,
    /// hooks.slack.com, events.pagerduty.com and events.eu.pagerduty.com.
    #[arg(long, env = "TIERGUARD_WEBHOOK_DESTINATIONS", value_delimiter = ',')]
    pub webhook_destinations: Vec<String>,
    /// Where Redis, and every node of a Redis Cluster, may be reached (as
    /// --metrics-destinations). Default: the private address ranges.
    #[arg(long, env = "TIERGUARD_REDIS_DESTINATIONS", value_delimiter = ',')]
    pub redis_destinations: Vec<String>,
    /// Where the breaker probe (spec.breaker.probe) may call the dependency behind the breaker
    /// (as --metrics-destinations). Default: the private address ranges and api.mem0.ai.
    #[arg(long, env = "TIERGUARD_PROBE_DESTINATIONS", value_delimiter = ',')]
    pub probe_destinations: Vec<String>,
    /// After SIGTERM, how long running reconciles may take to finish (a Redis flush stops after
    /// its current round) before the controller exits without them. Keep it a few seconds below
    /// the pod's terminationGracePeriodSeconds.
    #[arg(long, default_value = "7s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// How often a tier's live readings in status.observed are refreshed when nothing else
    /// changed (a change of phase, condition, level, incident or action is written at once).
    /// Between refreshes the readings are on /metrics; the status is not written.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub status_refresh: Duration,
}

impl RunArgs {
    /// The allow-lists: each flag given replaces its kind's default.
    pub fn destinations(&self) -> anyhow::Result<Destinations> {
        let mut destinations = Destinations::default();
        for (purpose, entries) in [
            (Purpose::Metrics, &self.metrics_destinations),
            (Purpose::Warming, &self.warming_destinations),
            (Purpose::Webhooks, &self.webhook_destinations),
            (Purpose::Redis, &self.redis_destinations),
            (Purpose::Probe, &self.probe_destinations),
        ] {
            if !entries.is_empty() {
                destinations
                    .set(AllowList::parse(purpose, entries).map_err(|e| anyhow::anyhow!(e))?);
            }
        }
        Ok(destinations)
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    text.parse::<crate::api::Duration>()
        .map(|d| d.as_std())
        .map_err(|e| e.to_string())
}

/// The log filter: RUST_LOG when set, else the level. A RUST_LOG the filter cannot parse, or with
/// a bare word that is not a level (`warning`: the filter would read it as a target and silence
/// everything else), is refused rather than ignored.
fn log_filter(
    level: LogLevel,
    rust_log: Option<&str>,
) -> anyhow::Result<tracing_subscriber::EnvFilter> {
    use tracing_subscriber::EnvFilter;
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let Some(directives) = rust_log.map(str::trim).filter(|d| !d.is_empty()) else {
        return Ok(EnvFilter::new(level.as_str()));
    };
    for directive in directives.split(',').map(str::trim) {
        let bare = !directive.contains(['=', ':', '[']);
        if bare
            && !directive.is_empty()
            && !LEVELS.contains(&directive.to_ascii_lowercase().as_str())
        {
            anyhow::bail!(
                "RUST_LOG: {directive:?} is not a log level (one of {}); to set a target's level write TARGET=LEVEL",
                LEVELS.join(", ")
            );
        }
    }
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| anyhow::anyhow!("RUST_LOG: {directives:?}: {e}"))
}

fn init_tracing(format: LogFormat, level: LogLevel) -> anyhow::Result<()> {
    let filter = log_filter(level, std::env::var("RUST_LOG").ok().as_deref())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Ok(())
}

async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<Client> {
    crate::install_crypto_provider();
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("reading kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(crate::remote::kube::client(config)?)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("tierguard-{}", std::process::id()))
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format, args.log_level)?;
    // Before anything that may wait: a SIGTERM during start-up stops it too.
    let stop = crate::shutdown::on_signals()?;
    if let Some(selector) = &args.selector {
        controller::selector::parse(selector).map_err(|e| anyhow::anyhow!("--selector: {e}"))?;
    }
    let destinations = args.destinations()?;
    let client = client(args.kubeconfig.as_ref()).await?;
    let identity = args.identity.clone().unwrap_or_else(hostname);
    let lease = if args.leader_election {
        let namespace = args
            .lease_namespace
            .clone()
            .or_else(|| match args.namespaces.as_slice() {
                [only] => Some(only.clone()),
                _ => None,
            })
            .unwrap_or_else(|| client.default_namespace().to_owned());
        Some(LeaseConfig {
            name: args.lease_name.clone(),
            namespace,
            identity: identity.clone(),
            duration: args.lease_duration,
            grace: (args.lease_duration / 3).max(Duration::from_secs(1)),
        })
    } else {
        None
    };
    tracing::info!(
        namespaces = if args.namespaces.is_empty() {
            "<all>".to_owned()
        } else {
            args.namespaces.join(",")
        },
        selector = args.selector.as_deref().unwrap_or(""),
        leader_election = args.leader_election,
        %identity,
        destinations = %Purpose::ALL
            .iter()
            .map(|p| format!(
                "{p}: {}",
                destinations
                    .get(*p)
                    .entries()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            ))
            .collect::<Vec<_>>()
            .join("; "),
        "starting the tierguard controller"
    );
    controller::run_until(
        client,
        RunConfig {
            namespaces: args.namespaces,
            selector: args.selector,
            metrics_addr: Some(args.metrics_addr),
            lease,
            instance: Some(identity),
            concurrency: args.concurrency,
            destinations,
            background: controller::work::Budget {
                jobs: usize::from(args.background_jobs),
                job_timeout: args.background_job_timeout,
            },
            shutdown_timeout: args.shutdown_timeout,
            status_refresh: args.status_refresh,
        },
        stop,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_level_must_be_a_level() {
        assert!(log_filter(LogLevel::Warn, None).is_ok());
        assert!(log_filter(LogLevel::Info, Some("debug")).is_ok());
        assert!(log_filter(LogLevel::Info, Some("info,kube=debug,tierguard::act=trace")).is_ok());
        let e = log_filter(LogLevel::Info, Some("warning")).unwrap_err();
        assert!(
            e.to_string().contains("\"warning\" is not a log level"),
            "{e}"
        );
        assert!(log_filter(LogLevel::Info, Some("kube=loud")).is_err());
    }
}
