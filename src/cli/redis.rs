//! `tierguard redis flush|audit`: the runbooks' manual Redis commands, done safely.

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use crate::act::redis::audit::{AuditPlan, AuditReport, audit};
use crate::act::redis::connect;
use crate::act::redis::flush::{
    DEFAULT_GENERATION_PATTERN, FlushPlan, FlushReport, GenerationRule, flush,
};
use crate::api::Duration;
use crate::remote::text;
use crate::secret::{ExposeSecret, SecretString, redact_url, scrub};

#[derive(Debug, Subcommand)]
pub enum RedisCommand {
    /// Delete keys by pattern with SCAN and pipelined UNLINK (never KEYS, FLUSHALL or FLUSHDB),
    /// within a key budget and a time budget, pausing while Redis answers slowly.
    ///
    /// With --keep-generation G, keys matching the generation pattern (default
    /// `cache:*:generation:{generation}`) are deleted unless they belong to generation G, i.e.
    /// match the pattern with {generation} replaced by G. Keys of generation G are never deleted,
    /// even when a --pattern matches them.
    ///
    /// Exits 0 when the run completed or stopped at a budget (the summary says so), 1 when it
    /// failed; a failed run reports what it deleted before the failure.
    Flush(FlushArgs),
    /// Audit keys: keys without TTL (count, examples, by prefix), the largest keys, and keys and
    /// bytes per prefix, with pipelined PTTL and MEMORY USAGE over a SCAN.
    Audit(AuditArgs),
}

/// How results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// One summary line.
    #[default]
    Text,
    /// One JSON object.
    Json,
}

#[derive(Debug, Args)]
pub struct Connection {
    /// Redis URL (redis:// or rediss://); may carry a password, which is never printed.
    /// Prefer the environment variable: command lines are visible to other users.
    #[arg(long, env = "TIERGUARD_REDIS_URL", hide_env_values = true, value_parser = parse_secret)]
    url: SecretString,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Args)]
pub struct FlushArgs {
    #[command(flatten)]
    connection: Connection,
    /// Delete keys matching this pattern (Redis MATCH syntax); repeat for several.
    #[arg(long = "pattern", value_name = "PATTERN")]
    patterns: Vec<String>,
    /// Delete old cache generations, keeping this one.
    #[arg(long, value_name = "G")]
    keep_generation: Option<String>,
    /// Where {generation} stands in generation-scoped keys [default: cache:*:generation:{generation}].
    #[arg(long, value_name = "PATTERN", requires = "keep_generation")]
    generation_pattern: Option<String>,
    /// Count what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Most keys deleted in this run.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_keys: u64,
    /// No batch starts after this long (e.g. 30s, 5m).
    #[arg(long, value_name = "D", default_value = "30s")]
    max_duration: Duration,
    /// Keys per pipelined UNLINK batch.
    #[arg(long, value_name = "N", default_value_t = 500)]
    batch: usize,
    /// COUNT hint of each SCAN.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    scan_count: usize,
    /// Pause between batches while a PING takes longer than this (or 3x the PING time at start).
    #[arg(long, value_name = "D", default_value = "2ms")]
    max_latency: Duration,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    connection: Connection,
    /// Keys to look at; 0 looks at every key.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    sample: u64,
    /// How many of the largest keys to report.
    #[arg(long, value_name = "N", default_value_t = 10)]
    top: usize,
    /// Only keys matching this pattern.
    #[arg(long, value_name = "PATTERN")]
    pattern: Option<String>,
    /// No batch starts after this long.
    #[arg(long, value_name = "D", default_value = "60s")]
    max_duration: Duration,
    /// COUNT hint of each SCAN.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    scan_count: usize,
    /// Pause between batches while a PING takes longer than this (or 3x the PING time at start).
    #[arg(long, value_name = "D", default_value = "2ms")]
    max_latency: Duration,
}

fn parse_secret(text: &str) -> Result<SecretString, String> {
    if text.is_empty() {
        return Err("the URL is empty".into());
    }
    Ok(SecretString::from(text))
}

/// How long one reply may take before the command gives up.
const RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Serialize)]
struct Printed<'a, T: Serialize> {
    target: &'a str,
    #[serde(flatten)]
    report: &'a T,
}

fn print<T: Serialize>(output: Output, target: &str, report: &T, summary: String) {
    match output {
        // Key names in the summary are escaped already; so is anything else a server wrote.
        Output::Text => println!("{target}: {}", text::one_line(&summary)),
        Output::Json => println!(
            "{}",
            serde_json::to_string(&Printed { target, report }).expect("reports serialize")
        ),
    }
}

pub async fn run(command: RedisCommand) -> anyhow::Result<ExitCode> {
    match command {
        RedisCommand::Flush(args) => run_flush(args).await,
        RedisCommand::Audit(args) => run_audit(args).await,
    }
}

async fn run_flush(args: FlushArgs) -> anyhow::Result<ExitCode> {
    let url = &args.connection.url;
    let target = redact_url(url.expose_secret());
    let generations = match &args.keep_generation {
        Some(keep) => Some(GenerationRule::new(
            args.generation_pattern
                .as_deref()
                .unwrap_or(DEFAULT_GENERATION_PATTERN),
            keep,
        )?),
        None => None,
    };
    let plan = FlushPlan {
        patterns: args.patterns.clone(),
        generations,
        max_keys: args.max_keys,
        max_duration: args.max_duration.as_std(),
        batch: args.batch,
        scan_count: args.scan_count,
        max_latency: args.max_latency.as_std(),
        dry_run: args.dry_run,
    };
    plan.validate()?;
    let mut report = match connect(url, RESPONSE_TIMEOUT).await {
        Ok(con) => flush(&con, &plan).await,
        Err(e) => FlushReport::failed(&plan, e.to_string()),
    };
    report.error = report.error.map(|e| scrub(&e, &[url]));
    let summary = report.summary();
    print(args.connection.output, &target, &report, summary);
    Ok(exit(report.ok()))
}

async fn run_audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let url = &args.connection.url;
    let target = redact_url(url.expose_secret());
    if args.scan_count == 0 {
        anyhow::bail!("--scan-count must be at least 1");
    }
    let plan = AuditPlan {
        pattern: args.pattern.clone(),
        sample: args.sample,
        top: args.top,
        scan_count: args.scan_count,
        max_duration: args.max_duration.as_std(),
        max_latency: args.max_latency.as_std(),
        ..AuditPlan::default()
    };
    let mut report = match connect(url, RESPONSE_TIMEOUT).await {
        Ok(con) => audit(&con, &plan).await,
        Err(e) => AuditReport::failed(e.to_string()),
    };
    report.error = report.error.map(|e| scrub(&e, &[url]));
    let summary = report.summary();
    print(args.connection.output, &target, &report, summary);
    Ok(exit(report.ok()))
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
