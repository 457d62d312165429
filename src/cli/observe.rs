//! `tierguard observe MANIFEST`: read every signal of one MemoryTier once and print it — the
//! runbooks' detection steps in one call.
//!
//! Secret values come from `--secret NAME/KEY=VALUE` flags, then from
//! `TIERGUARD_SECRET_<NAME>_<KEY>` environment variables, then, for what is still missing, from
//! the cluster of the current kubeconfig (in the manifest's namespace). Unknown signals are
//! printed with their reason and are not an error: the command fails only on bad input (an
//! invalid manifest, a missing Secret).

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::api::signals::{Cohort, Signal, SignalValue, Unit};
use crate::api::{KIND, MemoryTier, MemoryTierSpec, Observation, SecretKeyRef, validate};
use crate::observe::secrets::{KubeSecrets, LocalSecrets, LocalThenCluster};
use crate::observe::{ObserveConfig, Observer};

/// How a command prints its result (each command's help says what the two forms hold).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// For people.
    #[default]
    Text,
    /// For programs.
    Json,
}

pub async fn run(
    manifest: &Path,
    output: OutputFormat,
    secret_flags: &[String],
) -> anyhow::Result<ExitCode> {
    let tier = load_manifest(manifest)?;
    let mut local = LocalSecrets::new().with_env();
    for flag in secret_flags {
        local.add_flag(flag)?;
    }
    let refs = secret_refs(&tier.spec);
    let all_local = refs.iter().all(|r| local.get(r).is_some());
    let cluster = if all_local {
        Err("not needed".to_owned())
    } else {
        cluster_secrets(tier.metadata.namespace.as_deref()).await
    };
    let resolver = LocalThenCluster { local, cluster };
    let config = ObserveConfig::resolve(&tier.spec, &resolver).await?;
    let mut observer = Observer::new(config)?;
    let observation = observer.observe().await;
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&observation)?),
        OutputFormat::Text => {
            print!("{}", render_text(&tier_name(&tier), &observation));
            if let Some(postgres) = observer.postgres() {
                let timeout = observer.config().timeout;
                let by_clinic =
                    match tokio::time::timeout(timeout, postgres.clinic_hit_rates(None)).await {
                        Ok(answer) => answer,
                        Err(_) => Err(format!("postgres: no answer within {timeout:?}")),
                    };
                print!("{}", render_clinics(&by_clinic));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The Secret references the observers need.
fn secret_refs(spec: &MemoryTierSpec) -> Vec<SecretKeyRef> {
    let mut refs = Vec::new();
    if let Some(p) = &spec.metrics.prometheus {
        refs.extend(p.bearer_token_secret_ref.clone());
        refs.extend(p.basic_auth_secret_ref.clone());
    }
    if let Some(p) = &spec.metrics.postgres {
        refs.push(p.url_secret_ref.clone());
    }
    refs.extend(spec.redis.url_secret_ref.clone());
    refs
}

/// The runbooks' "cache hit rate by clinic" (PostgreSQL source), lowest first, or why not.
pub fn render_clinics(
    answer: &Result<Vec<crate::observe::postgres::ClinicHitRate>, String>,
) -> String {
    use crate::observe::postgres::{MAX_CLINICS, MIN_CLINIC_LOOKUPS};
    let title = format!(
        "\ncache hit rate by clinic (postgres; clinics with more than {MIN_CLINIC_LOOKUPS} lookups, lowest first, at most {MAX_CLINICS})\n"
    );
    let clinics = match answer {
        Err(reason) => {
            return format!(
                "{title}  unknown: {}\n",
                crate::remote::text::reason(reason)
            );
        }
        Ok(c) if c.is_empty() => return format!("{title}  none\n"),
        Ok(c) => c,
    };
    let shown: Vec<String> = clinics
        .iter()
        .map(|c| crate::remote::text::one_line(c.clinic.as_deref().unwrap_or("(no clinic)")))
        .collect();
    let width = shown.iter().map(|c| c.chars().count()).max().unwrap_or(0);
    let mut out = title;
    for (clinic, c) in shown.iter().zip(clinics) {
        out.push_str(&format!(
            "  {clinic:<width$}  {:>6.2} %  ({} of {} lookups hit)\n",
            c.hit_rate_percent(),
            c.hits,
            c.lookups
        ));
    }
    out
}

/// Secrets from the current kubeconfig's cluster, or why there is none.
pub(super) async fn cluster_secrets(namespace: Option<&str>) -> Result<KubeSecrets, String> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| format!("no Kubernetes cluster to read it from: {e}"))?;
    let namespace = namespace
        .map(str::to_owned)
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = crate::remote::kube::client(config)
        .map_err(|e| format!("cannot build a Kubernetes client: {e}"))?;
    Ok(KubeSecrets::new(client, &namespace))
}

fn tier_name(tier: &MemoryTier) -> String {
    let name = tier.metadata.name.as_deref().unwrap_or("<unnamed>");
    match tier.metadata.namespace.as_deref() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

/// The one valid MemoryTier of a manifest file (`-` is standard input).
fn load_manifest(path: &Path) -> anyhow::Result<MemoryTier> {
    let name = path.display().to_string();
    let text = if path == Path::new("-") {
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .context("reading standard input")?;
        buf
    } else {
        std::fs::read_to_string(path).with_context(|| format!("{name}: cannot read"))?
    };
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .map_err(|e| anyhow::anyhow!("{name}: invalid YAML: {e}"))?;
    let tiers: Vec<&Value> = docs
        .iter()
        .filter(|d| d.get("kind").and_then(Value::as_str) == Some(KIND))
        .collect();
    let doc = match tiers.as_slice() {
        [one] => *one,
        [] => bail!("{name}: no {KIND} document found"),
        many => bail!(
            "{name}: {} {KIND} documents found; observe takes a file with exactly one",
            many.len()
        ),
    };
    validate::validate_document(doc).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(|p| format!("{name}: {p}")).collect();
        anyhow::anyhow!("invalid {KIND}:\n{}", lines.join("\n"))
    })
}

/// A human-readable observation: every signal with its value or why it is unknown.
pub fn render_text(tier: &str, obs: &Observation) -> String {
    let at = obs
        .at
        .map(|t| t.to_string())
        .unwrap_or_else(|| "-".to_owned());
    let mut out = format!("MemoryTier {tier}, observed at {at}\n\n");
    let width = Signal::ALL
        .iter()
        .map(|s| s.name().len())
        .max()
        .unwrap_or(0);
    for signal in Signal::ALL {
        let shown = match obs.get(*signal) {
            Some(value) => show(signal.unit(), &value),
            None => format!(
                "unknown: {}",
                obs.unknown
                    .get(signal.name())
                    .map(String::as_str)
                    .unwrap_or("no reason given")
            ),
        };
        out.push_str(&format!("  {:<width$}  {shown}\n", signal.name()));
    }
    out.push_str(&render_cohorts(obs, width));
    // The runbook's step 1 to 3 in one line, when the breaker was open and a probe is set.
    if let Some(p) = &obs.breaker_probe {
        out.push_str(&format!(
            "\nbreaker probe: {}: {}\n  {}\n",
            p.class,
            p.detail,
            p.class.advice()
        ));
    }
    if !obs.sources.is_empty() {
        out.push_str("\nsources\n");
        let width = obs.sources.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for s in &obs.sources {
            let latency = s
                .latency_ms
                .map(|ms| format!("{ms} ms"))
                .unwrap_or_default();
            let state = if s.ok { "ok" } else { "error" };
            let reason = s
                .reason
                .as_deref()
                .map(|r| format!("  {r}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {:<width$}  {state:<5}  {latency:>8}{reason}\n",
                s.name
            ));
        }
    }
    out
}

/// The application's signals per cohort side by side, or why there are none (then the rollback
/// criteria judge the whole service, and the reader should know it).
fn render_cohorts(obs: &Observation, width: usize) -> String {
    let Some(cohorts) = &obs.cohorts else {
        let why = obs.without_cohorts.as_deref().unwrap_or("no reason given");
        return format!("\ncohorts: none ({why})\n");
    };
    let cell = |cohort: Cohort, signal: Signal| match cohorts.get(cohort).get(signal) {
        Some(value) => show(signal.unit(), &value),
        None => format!(
            "unknown: {}",
            cohorts
                .get(cohort)
                .unknown
                .get(signal.name())
                .map(String::as_str)
                .unwrap_or("no reason given")
        ),
    };
    let rows: Vec<(Signal, String, String)> = Signal::app()
        .filter(|s| s.per_cohort())
        .map(|s| (s, cell(Cohort::Canary, s), cell(Cohort::Stable, s)))
        .collect();
    let canary_width = rows
        .iter()
        .map(|(_, c, _)| c.len())
        .chain([Cohort::Canary.as_str().len()])
        .max()
        .unwrap_or(0);
    let mut out = format!(
        "\n  {:<width$}  {:<canary_width$}  {}\n",
        "cohorts",
        Cohort::Canary,
        Cohort::Stable
    );
    for (signal, canary, stable) in rows {
        out.push_str(&format!(
            "  {:<width$}  {canary:<canary_width$}  {stable}\n",
            signal.name()
        ));
    }
    out
}

/// A value as the observe table prints it.
fn show(unit: Unit, value: &SignalValue) -> String {
    match (unit, value) {
        (Unit::Milliseconds, SignalValue::Number(v)) => format!("{v:.2} ms"),
        (Unit::Percent | Unit::PercentOfMaxMemory, SignalValue::Number(v)) => format!("{v:.2} %"),
        (Unit::Bytes, SignalValue::Count(v)) => {
            format!("{v} ({:.1} MiB)", *v as f64 / 1048576.0)
        }
        (_, value) => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BreakerState, SourceHealth};

    #[test]
    fn text_shows_values_and_unknown_reasons() {
        let mut obs = Observation {
            p50_latency_ms: Some(123.456),
            breaker_state: Some(BreakerState::HalfOpen),
            redis_used_memory_bytes: Some(1048576),
            ..Observation::default()
        };
        obs.unknown
            .insert("p95LatencyMs".into(), "prometheus: no data".into());
        obs.sources.push(SourceHealth {
            name: "prometheus".into(),
            ok: false,
            reason: Some("cannot reach Prometheus".into()),
            latency_ms: Some(3),
        });
        let text = render_text("ns/tier", &obs);
        assert!(text.contains("MemoryTier ns/tier"), "{text}");
        assert!(
            text.contains("p50LatencyMs             123.46 ms"),
            "{text}"
        );
        assert!(
            text.contains("p95LatencyMs             unknown: prometheus: no data"),
            "{text}"
        );
        assert!(
            text.contains("breakerState             half-open"),
            "{text}"
        );
        assert!(
            text.contains("redisUsedMemoryBytes     1048576 (1.0 MiB)"),
            "{text}"
        );
        assert!(
            text.contains("redisRunId               unknown: no reason given"),
            "{text}"
        );
        assert!(
            text.contains("prometheus  error      3 ms  cannot reach Prometheus"),
            "{text}"
        );
        assert!(text.contains("cohorts: none (no reason given)"), "{text}");
        assert!(!text.contains("breaker probe"), "no probe ran: {text}");
        obs.breaker_probe = Some(crate::api::ProbeReading {
            at: "2026-12-02T03:00:00Z".parse().unwrap(),
            class: crate::api::ProbeClass::RateLimited,
            detail: "health answered HTTP 429 (Retry-After 30s)".into(),
            retry_after_seconds: Some(30),
            latency_ms: Some(12),
        });
        let text = render_text("ns/tier", &obs);
        assert!(
            text.contains("breaker probe: RateLimited: health answered HTTP 429 (Retry-After 30s)\n  mem0 rate-limits"),
            "{text}"
        );
    }

    #[test]
    fn text_shows_both_cohorts_side_by_side_or_why_there_are_none() {
        let mut obs = Observation {
            without_cohorts: Some("no requests labelled cohort".into()),
            ..Observation::default()
        };
        let text = render_text("ns/tier", &obs);
        assert!(
            text.contains("cohorts: none (no requests labelled cohort)"),
            "{text}"
        );
        let mut cohorts = crate::api::signals::Cohorts::default();
        cohorts.canary.p50_latency_ms = Some(1500.0);
        cohorts.canary.requests = Some(31.0);
        cohorts.stable.p50_latency_ms = Some(320.0);
        cohorts.stable.requests = Some(280.0);
        cohorts
            .stable
            .unknown
            .insert("errorRatePercent".into(), "prometheus: no data".into());
        obs.cohorts = Some(cohorts);
        obs.without_cohorts = None;
        let text = render_text("ns/tier", &obs);
        let line = |name: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(name) && l.contains("  "))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        };
        assert_eq!(
            line("cohorts").as_deref(),
            Some("cohorts canary stable"),
            "{text}"
        );
        let p50: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("p50LatencyMs"))
            .collect();
        assert_eq!(p50.len(), 2, "{text}");
        assert!(
            p50[1].contains("1500.00 ms") && p50[1].contains("320.00 ms"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.contains("errorRatePercent")
                    && l.contains("unknown: prometheus: no data")),
            "{text}"
        );
        // The breaker is one per service, not per cohort.
        assert_eq!(text.matches("breakerState").count(), 1, "{text}");
    }
}
