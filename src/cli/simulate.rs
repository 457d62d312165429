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
    #[arg(long, required_unless_present_any = ["from_prometheus", "from_postgres"], conflicts_with_all = ["from_prometheus", "from_postgres", "incidents", "compare"])]
    pub scenario: Option<PathBuf>,
    /// Backtest: replay the tier's history read from this Prometheus (its root URL), with the
    /// queries the controller runs and redis_exporter's metrics for Redis.
    #[arg(long, value_name = "URL", requires = "start", group = "history")]
    pub from_prometheus: Option<String>,
    /// Backtest: replay the tier's history from its events table in PostgreSQL (the runbooks'
    /// observability_events, with spec.metrics.postgres's table, window, filter and queries):
    /// each step's signals over the window ending at that step. Without a URL, the one in
    /// spec.metrics.postgres.urlSecretRef (from --secret, the environment or the cluster). The
    /// Redis signals are unknown: the table has no Redis history.
    #[arg(
        long,
        value_name = "URL",
        num_args = 0..=1,
        requires = "start",
        conflicts_with = "from_prometheus",
        group = "history"
    )]
    pub from_postgres: Option<Option<String>>,
    /// Where the history starts: RFC 3339, `now`, or a time ago such as -7d, -36h or -90m.
    #[arg(
        long,
        value_name = "TIME",
        allow_hyphen_values = true,
        requires = "history"
    )]
    pub start: Option<String>,
    /// Where it ends (same forms).
    #[arg(
        long,
        value_name = "TIME",
        allow_hyphen_values = true,
        default_value = "now",
        requires = "history"
    )]
    pub end: String,
    /// One policy step every STEP (default: the tier's spec.metrics.interval).
    #[arg(long, value_name = "DURATION", requires = "history")]
    pub step: Option<Duration>,
    /// Known incidents (YAML: kind, start, end): score detections, misses and false alarms.
    #[arg(long, value_name = "FILE", requires = "history")]
    pub incidents: Option<PathBuf>,
    /// A second MemoryTier to replay on the same history: print where their decisions differ.
    #[arg(long, value_name = "OTHER_MANIFEST", requires = "history")]
    pub compare: Option<PathBuf>,
    /// A Secret value for Prometheus's auth or the PostgreSQL URL, NAME/KEY=VALUE (repeatable),
    /// as for `observe`.
    #[arg(long = "secret", value_name = "NAME/KEY=VALUE", requires = "history")]
    pub secrets: Vec<String>,
    /// The most policy steps one backtest replays.
    #[arg(long, value_name = "N", default_value_t = history::DEFAULT_MAX_STEPS, requires = "history")]
    pub max_steps: u64,
    /// How long one range request to Prometheus (one step's queries to PostgreSQL) may take.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "30s",
        requires = "history"
    )]
    pub query_timeout: Duration,
    /// text: a readable timeline; json: one object per line (`t`, `type`, details).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    match (&args.scenario, &args.from_prometheus, &args.from_postgres) {
        (Some(scenario), _, _) => run_scenario(&args.manifest, scenario, args.output),
        (None, Some(url), _) => run_backtest(&args, url).await,
        (None, None, Some(url)) => run_postgres_backtest(&args, url.as_deref()).await,
        (None, None, None) => {
            anyhow::bail!("give --scenario FILE, --from-prometheus URL or --from-postgres [URL]")
        }
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

/// The policies of a backtest (the manifest, and `--compare`'s), the known incidents and the range.
fn backtest_inputs(
    args: &SimulateArgs,
) -> anyhow::Result<(
    Vec<backtest::Policy>,
    Option<Vec<score::KnownIncident>>,
    history::Range,
)> {
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
    Ok((policies, known, range))
}

async fn run_postgres_backtest(args: &SimulateArgs, url: Option<&str>) -> anyhow::Result<ExitCode> {
    use crate::observe::postgres::{PostgresConfig, PostgresObserver};
    let (policies, known, range) = backtest_inputs(args)?;
    let mut local = LocalSecrets::new().with_env();
    for flag in &args.secrets {
        local.add_flag(flag)?;
    }
    let mut observers = Vec::with_capacity(policies.len());
    let mut shown_url = String::new();
    for policy in &policies {
        let spec = &policy.tier.spec;
        let source = match &spec.metrics.postgres {
            Some(source) => source.clone(),
            None if url.is_some() => serde_json::from_value(serde_json::json!({
                "urlSecretRef": {"name": "-", "key": "-"},
            }))
            .context("the default spec.metrics.postgres")?,
            None => anyhow::bail!(
                "{}: --from-postgres without a URL reads spec.metrics.postgres.urlSecretRef, and the tier has no spec.metrics.postgres",
                policy.path.display()
            ),
        };
        let url = match url {
            Some(url) => url.to_owned(),
            None => {
                let reference = &source.url_secret_ref;
                match local.get(reference) {
                    Some(value) => value.to_owned(),
                    None => {
                        let cluster =
                            cluster_secrets(policy.tier.metadata.namespace.as_deref()).await;
                        let resolver = LocalThenCluster {
                            local: local.clone(),
                            cluster,
                        };
                        use crate::observe::secrets::SecretResolver;
                        resolver
                            .resolve(reference)
                            .await
                            .context("spec.metrics.postgres.urlSecretRef")?
                    }
                }
            }
        };
        shown_url = crate::secret::redact_url(&url);
        let config = PostgresConfig::from_spec(spec, &source, url);
        let observer = PostgresObserver::new(
            config,
            args.query_timeout.as_std(),
            crate::destinations::AllowList::any(crate::destinations::Purpose::Metrics),
        )
        .map_err(|e| anyhow::anyhow!("--from-postgres: {e}"))?;
        observers.push(observer);
    }
    let report =
        backtest::backtest_postgres(&observers, &shown_url, policies, range, known.as_deref())
            .await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.output {
        OutputFormat::Text => backtest::write_text(&mut out, &report)?,
        OutputFormat::Json => backtest::write_json(&mut out, &report)?,
    }
    std::io::Write::flush(&mut out)?;
    Ok(ExitCode::SUCCESS)
}

async fn run_backtest(args: &SimulateArgs, url: &str) -> anyhow::Result<ExitCode> {
    let (policies, known, range) = backtest_inputs(args)?;
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
