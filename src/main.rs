use std::process::ExitCode;

use clap::Parser;
use tierguard::cli::{Cli, run};

#[tokio::main]
async fn main() -> ExitCode {
    tierguard::install_crypto_provider();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
