use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tierguard::cli::{Cli, run};

/// How long the exit waits for work left on the blocking pool (a parse past its deadline): the
/// process must be gone within the pod's grace period.
const EXIT_WAIT: Duration = Duration::from_millis(500);

fn main() -> ExitCode {
    tierguard::install_crypto_provider();
    let cli = Cli::parse();
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
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    runtime.shutdown_timeout(EXIT_WAIT);
    code
}
