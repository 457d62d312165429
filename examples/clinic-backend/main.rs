//! The demo clinic backend for tierguard's incident drills (see `app` for what it does).
//!
//! ```text
//! clinic-backend serve --listen 127.0.0.1:8000 --redis-url redis://127.0.0.1:6379/ \
//!     --flags flags.env --admin-token secret [--print-port]
//! clinic-backend load --target http://127.0.0.1:8000 --rps 50 --duration 30s \
//!     --clinics 1-50 --hot 1,2,3,5,8
//! clinic-backend default-flags > flags.env
//! ```
//!
//! Logs go to stderr (`RUST_LOG` filters them, default `info`); stdout carries only the bound
//! address (with `--print-port`) and the load summary.

mod app;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let cli = app::cli::Cli::parse();
    match app::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clinic-backend: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
