//! The `tierguard` command line.

mod check;
mod observe;
mod run;
pub mod tier;

pub use observe::{OutputFormat, render_clinics, render_text};
mod redis;
mod report;
mod simulate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// tierguard runs the incident runbooks of a Redis-backed memory tier by itself.
#[derive(Debug, Parser)]
#[command(name = "tierguard", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller: watch MemoryTiers and carry out the runbooks.
    Run(run::RunArgs),
    /// Print the MemoryTier CustomResourceDefinition as YAML.
    Crd,
    /// Validate MemoryTier manifests offline with the same rules as the cluster.
    ///
    /// Exits 0 when every MemoryTier document is valid, 1 otherwise, printing one line per problem:
    /// `FILE: <field path>: <what is wrong>`. Documents of other kinds are reported and not checked.
    Check {
        /// Manifest files (YAML, several documents per file allowed); `-` reads standard input.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Read every signal of one MemoryTier once and print it (the runbooks' detection steps).
    ///
    /// Secret values come from --secret flags, then from TIERGUARD_SECRET_<NAME>_<KEY>
    /// environment variables (NAME and KEY upper-cased, other characters as _), then from the
    /// cluster of the current kubeconfig. Unknown signals are printed with the reason; the
    /// command exits 0 unless the manifest is invalid or a Secret is missing.
    Observe {
        /// A manifest holding exactly one MemoryTier; `-` reads standard input.
        manifest: PathBuf,
        /// text: one line per signal, then the sources; json: the observation as
        /// `status.observed` holds it.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        /// A Secret value, NAME/KEY=VALUE (repeatable). Prefer the environment variable for
        /// passwords: command lines are visible to other users of the machine.
        #[arg(long = "secret", value_name = "NAME/KEY=VALUE")]
        secrets: Vec<String>,
    },
    /// Run the policy on a virtual clock over a scenario, or over a tier's history in Prometheus
    /// (a backtest), and print what the controller would have done.
    ///
    /// With --scenario no cluster and no servers are needed: the MemoryTier is read from MANIFEST
    /// (and validated), the signals come from the scenario file (see
    /// examples/scenarios/README.md for the format). With --from-prometheus the signals come from
    /// Prometheus over --start..--end through the controller's own queries, and a summary follows
    /// the timeline; --incidents scores it against known incidents, --compare replays a second
    /// manifest on the same history and prints where the two differ.
    Simulate(simulate::SimulateArgs),
    /// The runbooks' manual Redis commands, done safely: flush patterns, audit keys.
    #[command(subcommand)]
    Redis(redis::RedisCommand),
    /// The per-tier verbs (also `kubectl tierguard VERB`).
    #[command(flatten)]
    Tier(tier::TierCommand),
    /// Print a shell completion script: `source <(tierguard completions bash)`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// The kubectl plugin: this binary run as `kubectl-tierguard` (linked or copied under that name
/// onto PATH), which kubectl runs for `kubectl tierguard ...`.
#[derive(Debug, Parser)]
#[command(name = "kubectl tierguard", bin_name = "kubectl tierguard", version, about = "Inspect and steer MemoryTiers: status, resume, pause, unpause, report", long_about = None)]
pub struct PluginCli {
    #[command(subcommand)]
    pub command: tier::TierCommand,
}

/// The name the plugin is installed as.
pub const PLUGIN_BINARY: &str = "kubectl-tierguard";

/// Run the parsed command line; the exit code is the command's verdict.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => {
            run::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crd => {
            print!("{}", crate::api::crd_yaml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { files } => Ok(check::run(&files)),
        Command::Observe {
            manifest,
            output,
            secrets,
        } => observe::run(&manifest, output, &secrets).await,
        Command::Simulate(args) => simulate::run(args).await,
        Command::Redis(command) => redis::run(command).await,
        Command::Tier(command) => tier::run(command).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "tierguard", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}
