//! The per-tier verbs, as `tierguard VERB` and as the kubectl plugin `kubectl tierguard VERB`
//! (the same binary installed, or linked, as `kubectl-tierguard`): status, resume, pause, unpause,
//! report and version.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::report::{self, ReportArgs};
use crate::api::signals::Unit;
use crate::api::{MemoryTier, Mode, Observation, RESUME_ANNOTATION, Signal, SignalValue};
use crate::policy::thresholds::{Threshold, thresholds};

/// The annotation `pause` leaves so that `unpause` restores the mode the tier had.
pub const MODE_BEFORE_PAUSE_ANNOTATION: &str = "tierguard.dev/mode-before-pause";
/// The field manager of the plugin's writes.
const FIELD_MANAGER: &str = "kubectl-tierguard";

/// Which cluster and namespace: the kubectl plugin's flags (kubectl does not pass its own).
#[derive(Debug, Clone, Args)]
pub struct KubeArgs {
    /// Namespace of the MemoryTier [default: the kubeconfig context's namespace].
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// A kubeconfig file [default: $KUBECONFIG, ~/.kube/config, or the in-cluster config].
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use [default: its current context].
    #[arg(long)]
    pub context: Option<String>,
}

impl KubeArgs {
    /// A client, and the namespace to use.
    pub async fn connect(&self) -> anyhow::Result<(Client, String)> {
        crate::install_crypto_provider();
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .with_context(|| format!("reading kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?
            }
            None if self.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
            None => kube::Config::infer()
                .await
                .context("no kubeconfig and not in a cluster")?,
        };
        let client = crate::remote::kube::client(config)?;
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        Ok((client, namespace))
    }
}

/// Output of `version`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum VersionOutput {
    #[default]
    Text,
    Json,
}

/// The per-tier verbs.
#[derive(Debug, Subcommand)]
pub enum TierCommand {
    /// Show a MemoryTier: its phase, each signal against its thresholds, the mitigations in force
    /// (why, since when, until what) and the recent incidents.
    Status {
        /// The MemoryTier.
        tier: String,
        /// Keep watching: print the status again at every change (Ctrl-C ends it).
        #[arg(long, short = 'w')]
        watch: bool,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Approve re-deployment of a rolled-back tier: sets the annotation tierguard.dev/resume to
    /// the current time, and the canary ramps back to its baseline.
    Resume {
        tier: String,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Set spec.mode to Paused: the controller only observes and reports (remembering the mode
    /// for unpause). A GitOps tool that owns the spec may set it back.
    Pause {
        tier: String,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Give a paused tier back the mode it had before `pause`.
    Unpause {
        tier: String,
        /// The mode to return to, when the tier was not paused by `pause` (no remembered mode).
        #[arg(long, value_parser = ["Enforce", "DryRun"])]
        mode: Option<String>,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Print an incident report: from the tier's `<tier>-incidents` ConfigMap, or from the JSON
    /// lines of a simulate run.
    Report(ReportArgs),
    /// Print the version, the git commit and the build date.
    Version {
        #[arg(long, short = 'o', value_enum, default_value_t = VersionOutput::Text)]
        output: VersionOutput,
    },
}

pub async fn run(command: TierCommand) -> anyhow::Result<ExitCode> {
    match command {
        TierCommand::Status { tier, watch, kube } => status(&tier, watch, &kube).await,
        TierCommand::Resume { tier, kube } => resume(&tier, &kube).await,
        TierCommand::Pause { tier, kube } => pause(&tier, &kube).await,
        TierCommand::Unpause { tier, mode, kube } => unpause(&tier, mode.as_deref(), &kube).await,
        TierCommand::Report(args) => report::run(args).await,
        TierCommand::Version { output } => {
            let info = crate::build_info::BUILD_INFO;
            match output {
                VersionOutput::Text => println!(
                    "tierguard {} (commit {}, built {})",
                    info.version, info.commit, info.build_date
                ),
                VersionOutput::Json => println!("{}", serde_json::to_string(&info)?),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn get(api: &Api<MemoryTier>, namespace: &str, tier: &str) -> anyhow::Result<MemoryTier> {
    api.get_opt(tier)
        .await
        .with_context(|| format!("reading MemoryTier {namespace}/{tier}"))?
        .with_context(|| format!("MemoryTier {namespace}/{tier} not found"))
}

async fn status(tier: &str, watch: bool, kube: &KubeArgs) -> anyhow::Result<ExitCode> {
    let (client, namespace) = kube.connect().await?;
    let api: Api<MemoryTier> = Api::namespaced(client, &namespace);
    let now = get(&api, &namespace, tier).await?;
    print!("{}", render_status(&now, Timestamp::now()));
    if !watch {
        return Ok(ExitCode::SUCCESS);
    }
    let mut last = now.status.clone();
    let config = watcher::Config::default().fields(&format!("metadata.name={tier}"));
    let mut events = std::pin::pin!(watcher(api, config));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            event = events.next() => match event {
                None => return Ok(ExitCode::SUCCESS),
                Some(Err(e)) => {
                    eprintln!("watch: {e} (retrying)");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                Some(Ok(watcher::Event::Apply(t) | watcher::Event::InitApply(t))) => {
                    if t.status != last {
                        last = t.status.clone();
                        println!("---");
                        print!("{}", render_status(&t, Timestamp::now()));
                    }
                }
                Some(Ok(watcher::Event::Delete(_))) => {
                    println!("---\nMemoryTier {namespace}/{tier} was deleted");
                    return Ok(ExitCode::SUCCESS);
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

fn unit_of(signal: Signal) -> &'static str {
    match signal.unit() {
        Unit::Milliseconds => " ms",
        Unit::Percent | Unit::PercentOfMaxMemory => " %",
        _ => "",
    }
}

/// The signals the status shows (those on /metrics), with their value as text and as a number
/// to hold against the bounds.
fn signal_values(o: &Observation) -> Vec<(Signal, Option<String>, Option<f64>)> {
    Signal::ALL
        .iter()
        .filter(|s| s.on_telemetry())
        .map(|signal| {
            let value = o.get(*signal);
            let number = match &value {
                Some(SignalValue::Number(n)) if n.is_finite() => Some(*n),
                _ => None,
            };
            let text = value.map(|v| match v {
                SignalValue::Number(n) if n.is_finite() => crate::policy::num(n),
                other => other.to_string(),
            });
            (*signal, text, number)
        })
        .collect()
}

fn against(value: Option<f64>, bounds: &[&Threshold]) -> String {
    bounds
        .iter()
        .map(|t| {
            let verdict = match value {
                Some(v) if t.breach.breached(v, t.value) => "BREACHED",
                Some(_) => "ok",
                None => "?",
            };
            format!(
                "{} {} {}: {verdict}",
                t.name,
                t.breach.as_str(),
                crate::policy::num(t.value)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The status as `status` prints it.
pub fn render_status(tier: &MemoryTier, now: Timestamp) -> String {
    let mut out = String::new();
    let namespace = tier.namespace().unwrap_or_default();
    let name = tier.name_any();
    let status = tier.status.clone().unwrap_or_default();
    let mode = match tier.spec.mode {
        Mode::Enforce => "Enforce",
        Mode::DryRun => "DryRun",
        Mode::Paused => "Paused",
    };
    let _ = writeln!(out, "MemoryTier {namespace}/{name} (mode {mode})");
    let phase = status.phase.unwrap_or_default();
    let _ = writeln!(out, "Phase:      {phase}");
    if let (Some(g), Some(o)) = (tier.metadata.generation, status.observed_generation)
        && o < g
    {
        let _ = writeln!(
            out,
            "            the controller has not seen generation {g} yet (status is of {o})"
        );
    }
    for c in &status.conditions {
        if c.type_ == "Ready" || c.status == "True" {
            let message = if c.message.is_empty() {
                String::new()
            } else {
                format!(": {}", c.message)
            };
            let _ = writeln!(
                out,
                "{:<11} {} ({}){message}",
                format!("{}:", c.type_),
                c.status,
                c.reason
            );
        }
    }

    let observed = status.observed.clone().unwrap_or_default();
    let memory = status
        .policy
        .as_ref()
        .and_then(|doc| crate::controller::memory::decode(doc).ok())
        .unwrap_or_default();
    let bounds = thresholds(&tier.spec, &memory);
    let at = observed
        .at
        .map(|at| format!(" at {at}"))
        .unwrap_or_default();
    let _ = writeln!(out, "\nSignals{at}:");
    for (signal, text, value) in signal_values(&observed) {
        let shown = match &text {
            Some(t) => format!("{t}{}", unit_of(signal)),
            None => "unknown".to_owned(),
        };
        let mine: Vec<&Threshold> = bounds.iter().filter(|t| t.signal == signal).collect();
        let mut line = format!("  {:<25} {shown:<12}", signal.name());
        if !mine.is_empty() {
            line.push_str(&against(value, &mine));
        }
        if text.is_none()
            && let Some(reason) = observed.unknown.get(signal.name())
        {
            let reason: String = reason.chars().take(160).collect();
            line.push_str(&format!("({reason})"));
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }

    let _ = writeln!(out, "\nMitigations:");
    if status.mitigations.is_empty() {
        let _ = writeln!(out, "  none: the application runs on its spec");
    }
    for m in &status.mitigations {
        let overrides: Vec<String> = m
            .overrides
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            out,
            "  {} since {} ({} ago)\n    why:     {}\n    sets:    {}\n    ends:    {}",
            m.name,
            m.since,
            ago(m.since, now),
            m.reason,
            overrides.join(", "),
            m.until
        );
    }

    let _ = writeln!(out, "\nIncidents:");
    if status.incidents.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for i in &status.incidents {
        let state = match i.resolved_at {
            Some(at) => format!("resolved at {at}"),
            None => format!("open for {}", ago(i.started_at, now)),
        };
        let _ = writeln!(
            out,
            "  {} ({}, level {}): {state}\n    trigger: {}",
            i.id, i.runbook, i.escalation_level, i.trigger
        );
        if let Some(diagnosis) = &i.diagnosis {
            let _ = writeln!(out, "    diagnosis: {diagnosis}");
        }
        if let Some(impact) = &i.impact {
            for line in crate::policy::impact::lines(impact) {
                let _ = writeln!(out, "    impact:  {line}");
            }
        }
        if let Some(report) = &i.report {
            let _ = writeln!(out, "    report:  {report}");
        }
    }
    out
}

fn ago(since: Timestamp, now: Timestamp) -> String {
    let secs = now.duration_since(since).as_secs().max(0) as u64;
    crate::policy::span(crate::api::Duration::from_secs(secs))
}

async fn resume(tier: &str, kube: &KubeArgs) -> anyhow::Result<ExitCode> {
    let (client, namespace) = kube.connect().await?;
    let api: Api<MemoryTier> = Api::namespaced(client, &namespace);
    let current = get(&api, &namespace, tier).await?;
    let token = Timestamp::now().to_string();
    let patch = json!({"metadata": {"annotations": {RESUME_ANNOTATION: token}}});
    api.patch(
        tier,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Merge(&patch),
    )
    .await
    .with_context(|| format!("annotating MemoryTier {namespace}/{tier}"))?;
    let phase = current.status.and_then(|s| s.phase).unwrap_or_default();
    println!(
        "MemoryTier {namespace}/{tier} resumed ({RESUME_ANNOTATION}={token}; phase was {phase})"
    );
    Ok(ExitCode::SUCCESS)
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "Enforce",
        Mode::DryRun => "DryRun",
        Mode::Paused => "Paused",
    }
}

async fn pause(tier: &str, kube: &KubeArgs) -> anyhow::Result<ExitCode> {
    let (client, namespace) = kube.connect().await?;
    let api: Api<MemoryTier> = Api::namespaced(client, &namespace);
    let current = get(&api, &namespace, tier).await?;
    if current.spec.mode == Mode::Paused {
        println!("MemoryTier {namespace}/{tier} is already paused");
        return Ok(ExitCode::SUCCESS);
    }
    let patch = json!({
        "metadata": {
            "annotations": {MODE_BEFORE_PAUSE_ANNOTATION: mode_name(current.spec.mode)},
            "resourceVersion": current.resource_version(),
        },
        "spec": {"mode": "Paused"},
    });
    api.patch(
        tier,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Merge(&patch),
    )
    .await
    .with_context(|| format!("pausing MemoryTier {namespace}/{tier}"))?;
    println!(
        "MemoryTier {namespace}/{tier} paused (was {}): the controller observes and reports only",
        mode_name(current.spec.mode)
    );
    Ok(ExitCode::SUCCESS)
}

async fn unpause(tier: &str, mode: Option<&str>, kube: &KubeArgs) -> anyhow::Result<ExitCode> {
    let (client, namespace) = kube.connect().await?;
    let api: Api<MemoryTier> = Api::namespaced(client, &namespace);
    let current = get(&api, &namespace, tier).await?;
    if current.spec.mode != Mode::Paused {
        bail!(
            "MemoryTier {namespace}/{tier} is not paused (mode {})",
            mode_name(current.spec.mode)
        );
    }
    let remembered = current
        .annotations()
        .get(MODE_BEFORE_PAUSE_ANNOTATION)
        .filter(|m| matches!(m.as_str(), "Enforce" | "DryRun"))
        .cloned();
    let Some(target) = mode.map(str::to_owned).or(remembered) else {
        bail!(
            "MemoryTier {namespace}/{tier} was not paused by `pause` (no {MODE_BEFORE_PAUSE_ANNOTATION} annotation): say which mode it returns to with --mode Enforce or --mode DryRun"
        );
    };
    let patch = json!({
        "metadata": {
            "annotations": {MODE_BEFORE_PAUSE_ANNOTATION: null},
            "resourceVersion": current.resource_version(),
        },
        "spec": {"mode": target},
    });
    api.patch(
        tier,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Merge(&patch),
    )
    .await
    .with_context(|| format!("unpausing MemoryTier {namespace}/{tier}"))?;
    println!("MemoryTier {namespace}/{tier} unpaused: mode {target}");
    Ok(ExitCode::SUCCESS)
}
