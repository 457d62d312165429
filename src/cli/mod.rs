//! The `tierguard` command line.

mod check;
mod observe;
mod redis;
mod report;

pub use observe::{OutputFormat, render_text};

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
    /// The runbooks' manual Redis commands, done safely: flush patterns, audit keys.
    #[command(subcommand)]
    Redis(redis::RedisCommand),
    /// Print an incident report: from the tier's `<tier>-incidents` ConfigMap (kubeconfig), or
    /// from the JSON lines of a simulate run.
    Report(report::ReportArgs),
    /// Read every signal of one MemoryTier once and print it (the runbooks' detection steps).
    ///
    /// Secret values come from --secret flags, then from TIERGUARD_SECRET_<NAME>_<KEY>
    /// environment variables (NAME and KEY upper-cased, other characters as _), then from the
    /// cluster of the current kubeconfig. Unknown signals are printed with the reason; the
    /// command exits 0 unless the manifest is invalid or a Secret is missing.
    Observe {
        /// A manifest holding exactly one MemoryTier; `-` reads standard input.
        manifest: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        /// A Secret value, NAME/KEY=VALUE (repeatable). Prefer the environment variable for
        /// passwords: command lines are visible to other users of the machine.
        #[arg(long = "secret", value_name = "NAME/KEY=VALUE")]
        secrets: Vec<String>,
    },
}

/// Run the parsed command line; the exit code is the command's verdict.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Crd => {
            print!("{}", crate::api::crd_yaml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { files } => Ok(check::run(&files)),
        Command::Redis(command) => redis::run(command).await,
        Command::Report(args) => report::run(args).await,
        Command::Observe {
            manifest,
            output,
            secrets,
        } => observe::run(&manifest, output, &secrets).await,
    }
}
