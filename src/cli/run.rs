//! `tierguard run`: the controller.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::controller::{self, LeaseConfig, RunConfig};

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Watch MemoryTiers in this namespace only (default: all namespaces).
    #[arg(long, env = "TIERGUARD_NAMESPACE")]
    pub namespace: Option<String>,
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
    /// Most reconciles running at once.
    #[arg(long, default_value_t = controller::DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// How long the Lease is valid without renewal; a standby takes over within this.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// After SIGTERM, how long running reconciles may take to finish (a Redis flush stops after
    /// its current round) before the controller exits without them. Keep it a few seconds below
    /// the pod's terminationGracePeriodSeconds.
    #[arg(long, default_value = "7s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    text.parse::<crate::api::Duration>()
        .map(|d| d.as_std())
        .map_err(|e| e.to_string())
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
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
    init_tracing(args.log_format);
    // Before anything that may wait: a SIGTERM during start-up stops it too.
    let stop = crate::shutdown::on_signals()?;
    if let Some(selector) = &args.selector {
        controller::selector::parse(selector).map_err(|e| anyhow::anyhow!("--selector: {e}"))?;
    }
    let client = client(args.kubeconfig.as_ref()).await?;
    let identity = args.identity.clone().unwrap_or_else(hostname);
    let lease = if args.leader_election {
        let namespace = args
            .lease_namespace
            .clone()
            .or_else(|| args.namespace.clone())
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
        namespace = args.namespace.as_deref().unwrap_or("<all>"),
        selector = args.selector.as_deref().unwrap_or(""),
        leader_election = args.leader_election,
        %identity,
        "starting the tierguard controller"
    );
    controller::run_until(
        client,
        RunConfig {
            namespace: args.namespace,
            selector: args.selector,
            metrics_addr: Some(args.metrics_addr),
            lease,
            instance: Some(identity),
            concurrency: args.concurrency,
            shutdown_timeout: args.shutdown_timeout,
        },
        stop,
    )
    .await
}
