use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tierguard::cli::{Cli, PLUGIN_BINARY, PluginCli, run, tier};

/// How long the exit waits for work left on the blocking pool (a parse past its deadline): the
/// process must be gone within the pod's grace period.
const EXIT_WAIT: Duration = Duration::from_millis(500);

fn main() -> ExitCode {
    tierguard::install_crypto_provider();
    // Installed (or linked) as kubectl-tierguard, the binary is the kubectl plugin.
    let as_plugin = std::env::args_os()
        .next()
        .and_then(|arg0| {
            std::path::Path::new(&arg0)
                .file_stem()
                .map(|s| s == PLUGIN_BINARY)
        })
        .unwrap_or(false);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the Tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        if as_plugin {
            tier::run(PluginCli::parse().command).await
        } else {
            run(Cli::parse()).await
        }
    });
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    runtime.shutdown_timeout(EXIT_WAIT);
    code
}
