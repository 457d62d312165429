//! The `tierguard` command line.

mod check;
mod redis;
mod report;

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
    }
}
