use std::process::ExitCode;

use clap::Parser;
use tierguard::cli::{Cli, PLUGIN_BINARY, PluginCli, run, tier};

#[tokio::main]
async fn main() -> ExitCode {
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
    let result = if as_plugin {
        tier::run(PluginCli::parse().command).await
    } else {
        run(Cli::parse()).await
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
