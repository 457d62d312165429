//! `tierguard report`: print an incident report, from the cluster or from a simulate run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;

use crate::act::report::{
    ReportContext, Reports, incidents_config_map_name, incidents_from_simulation, read_reports,
    render,
};

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["tier", "from_simulation"]))]
pub struct ReportArgs {
    /// The MemoryTier whose reports are printed (from its `<tier>-incidents` ConfigMap).
    tier: Option<String>,
    #[command(flatten)]
    kube: super::tier::KubeArgs,
    /// Print this incident instead of the newest.
    #[arg(long, value_name = "ID")]
    incident: Option<String>,
    /// List the stored incidents (newest first) instead of printing one.
    #[arg(long)]
    list: bool,
    /// Read incidents from the JSON lines of `tierguard simulate --output json` instead of the
    /// cluster.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["tier", "namespace", "kubeconfig", "context"])]
    from_simulation: Option<PathBuf>,
}

pub async fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let (source, reports) = match &args.from_simulation {
        Some(file) => from_simulation(file)?,
        None => {
            let tier = args
                .tier
                .as_deref()
                .expect("clap requires a tier or a file");
            from_cluster(tier, &args.kube).await?
        }
    };
    if reports.is_empty() {
        bail!("{source}: no incident reports");
    }
    if args.list {
        for (id, _) in &reports {
            println!("{id}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let chosen = match &args.incident {
        Some(id) => reports.iter().find(|(i, _)| i == id).with_context(|| {
            let known: Vec<&str> = reports.iter().map(|(i, _)| i.as_str()).collect();
            format!("{source}: no incident {id:?}; stored: {}", known.join(", "))
        })?,
        None => &reports[0],
    };
    print!("{}", chosen.1);
    Ok(ExitCode::SUCCESS)
}

async fn from_cluster(
    tier: &str,
    kube: &super::tier::KubeArgs,
) -> anyhow::Result<(String, Reports)> {
    let (client, namespace) = kube
        .connect()
        .await
        .context("cannot build a Kubernetes client from the kubeconfig or the in-cluster config")?;
    let reports = read_reports(&client, &namespace, tier).await?;
    Ok((
        format!("ConfigMap {namespace}/{}", incidents_config_map_name(tier)),
        reports,
    ))
}

fn from_simulation(file: &std::path::Path) -> anyhow::Result<(String, Reports)> {
    let name = file.display().to_string();
    let text = if file == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("{name}: cannot read"))?
    };
    let (incidents, unreadable) = incidents_from_simulation(&text);
    if unreadable > 0 {
        eprintln!("{name}: skipped {unreadable} line(s) that are not JSON or not a valid incident");
    }
    if incidents.is_empty() {
        bail!(
            "{name}: no incident found (looked for JSON lines carrying an \"incident\" object, as `tierguard simulate --output json` writes them)"
        );
    }
    let reports = incidents
        .iter()
        .map(|incident| {
            let now = incident.resolved_at.unwrap_or_else(|| {
                incident
                    .timeline
                    .last()
                    .map(|e| e.at)
                    .unwrap_or(incident.started_at)
            });
            let ctx = ReportContext {
                namespace: "simulation",
                tier: "(simulated)",
                now,
                observed: None,
                mitigations: &[],
            };
            (incident.id.clone(), render(incident, &ctx))
        })
        .collect();
    Ok((name, reports))
}
