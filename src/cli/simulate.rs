//! `tierguard simulate`: the policy on a virtual clock over a scenario, or over a tier's history in
//! Prometheus (a backtest).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use jiff::Timestamp;

use super::OutputFormat;
use super::observe::cluster_secrets;
use crate::api::{Duration, SecretKeyRef};
use crate::observe::prometheus::PrometheusClient;
use crate::observe::resolve_prometheus;
use crate::observe::secrets::{LocalSecrets, LocalThenCluster};
use crate::simulate::{self, backtest, history, score};

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// A file holding one MemoryTier.
    pub manifest: PathBuf,
    /// The scenario: tick, duration, starting signals and a timeline of changes.
    #[arg(long, required_unless_present = "from_prometheus", conflicts_with_all = ["from_prometheus", "incidents", "compare"])]
    pub scenario: Option<PathBuf>,
    /// Backtest: replay the tier's history read from this Prometheus (its root URL), with the
    /// queries the controller runs and redis_exporter's metrics for Redis.
    #[arg(long, value_name = "URL", requires = "start")]
    pub from_prometheus: Option<String>,
    /// Where the history starts: RFC 3339, `now`, or a time ago such as -7d, -36h or -90m.
    #[arg(
        long,
        value_name = "TIME",
        allow_hyphen_values = true,
        requires = "from_prometheus"
    )]
    pub start: Option<String>,
    /// Where it ends (same forms).
    #[arg(
        long,
        value_name = "TIME",
        allow_hyphen_values = true,
        default_value = "now",
        requires = "from_prometheus"
    )]
    pub end: String,
    /// One policy step every STEP (default: the tier's spec.metrics.interval).
    #[arg(long, value_name = "DURATION", requires = "from_prometheus")]
    pub step: Option<Duration>,
    /// Known incidents (YAML: kind, start, end): score detections, misses and false alarms.
    #[arg(long, value_name = "FILE", requires = "from_prometheus")]
    pub incidents: Option<PathBuf>,
    /// A second MemoryTier to replay on the same history: print where their decisions differ.
    #[arg(long, value_name = "OTHER_MANIFEST", requires = "from_prometheus")]
    pub compare: Option<PathBuf>,
    /// A Secret value for Prometheus's auth, NAME/KEY=VALUE (repeatable), as for `observe`.
    #[arg(
        long = "secret",
        value_name = "NAME/KEY=VALUE",
        requires = "from_prometheus"
    )]
    pub secrets: Vec<String>,
    /// The most policy steps one backtest replays.
    #[arg(long, value_name = "N", default_value_t = history::DEFAULT_MAX_STEPS, requires = "from_prometheus")]
    pub max_steps: u64,
    /// How long one range request to Prometheus may take.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "30s",
        requires = "from_prometheus"
    )]
    pub query_timeout: Duration,
    /// text: a readable timeline; json: one object per line (`t`, `type`, details).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    match (&args.scenario, &args.from_prometheus) {
        (Some(scenario), _) => run_scenario(&args.manifest, scenario, args.output),
        (None, Some(url)) => run_backtest(&args, url).await,
        (None, None) => anyhow::bail!("give --scenario FILE or --from-prometheus URL"),
    }
}

fn run_scenario(
    manifest: &Path,
    scenario: &Path,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let (tier, scenario, outcome) = simulate::run_files(manifest, scenario)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match output {
        OutputFormat::Text => simulate::output::write_text(&mut out, &tier, &scenario, &outcome)?,
        OutputFormat::Json => simulate::output::write_json(&mut out, &outcome)?,
    }
    std::io::Write::flush(&mut out)?;
    Ok(ExitCode::SUCCESS)
}

async fn run_backtest(args: &SimulateArgs, url: &str) -> anyhow::Result<ExitCode> {
    let tier = simulate::load_manifest(&args.manifest)?;
    let mut policies = vec![backtest::Policy {
        path: args.manifest.clone(),
        tier,
    }];
    if let Some(other) = &args.compare {
        policies.push(backtest::Policy {
            path: other.clone(),
            tier: simulate::load_manifest(other)?,
        });
    }
    let known = args.incidents.as_deref().map(score::load).transpose()?;

    let now = Timestamp::now();
    let start = args.start.as_deref().unwrap_or("now");
    let start = history::parse_time(start, now).map_err(|e| anyhow::anyhow!("--start: {e}"))?;
    let end = history::parse_time(&args.end, now).map_err(|e| anyhow::anyhow!("--end: {e}"))?;
    let step = args
        .step
        .unwrap_or(policies[0].tier.spec.metrics.interval)
        .as_std();
    let range = history::Range::new(start, end, step, args.max_steps)?;

    let spec = &policies[0].tier.spec;
    let mut local = LocalSecrets::new().with_env();
    for flag in &args.secrets {
        local.add_flag(flag)?;
    }
    let refs: Vec<SecretKeyRef> = spec
        .metrics
        .prometheus
        .iter()
        .flat_map(|p| {
            p.bearer_token_secret_ref
                .iter()
                .chain(&p.basic_auth_secret_ref)
                .cloned()
        })
        .collect();
    let cluster = if refs.iter().all(|r| local.get(r).is_some()) {
        Err("not needed".to_owned())
    } else {
        cluster_secrets(policies[0].tier.metadata.namespace.as_deref()).await
    };
    let resolver = LocalThenCluster { local, cluster };
    let auth = resolve_prometheus(spec, &resolver)
        .await?
        .and_then(|p| p.auth);
    let timeout = args.query_timeout.as_std();
    // The command line reaches wherever its user can; no redirects, as everywhere.
    let http = crate::destinations::Network::any()
        .context("--from-prometheus: the HTTP client")?
        .metrics;
    let client = PrometheusClient::new(http, url, auth, timeout).context("--from-prometheus")?;

    let limits = history::Limits {
        max_steps: args.max_steps,
        ..history::Limits::default()
    };
    let report =
        backtest::backtest(&client, url, policies, range, &limits, known.as_deref()).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.output {
        OutputFormat::Text => backtest::write_text(&mut out, &report)?,
        OutputFormat::Json => backtest::write_json(&mut out, &report)?,
    }
    std::io::Write::flush(&mut out)?;
    Ok(ExitCode::SUCCESS)
}
