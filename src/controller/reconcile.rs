//! One reconcile of one MemoryTier, as a pipeline of small named steps:
//! read → validate → resolve Secrets → observe → decide → act → status.
//!
//! Only the leader goes past validation: a standby replica keeps its watch cache warm and does
//! nothing else, so it never writes and never loads Redis or Prometheus twice.

use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use super::Context;
use super::error::Error;
use super::events::Note;
use super::execute::{self, ActSecrets};
use crate::act::configmap::CONFIG_HASH_ANNOTATION;
use crate::api::conditions::{self, reasons};
use crate::api::{
    API_VERSION, FIELD_MANAGER, KIND, MAX_ACTIONS_IN_STATUS, MemoryTier, MemoryTierStatus, Phase,
    RESUME_ANNOTATION, validate,
};
use crate::observe::secrets::KubeSecrets;
use crate::observe::{ConfigError, ObserveConfig};
use crate::policy::{self, AppliedConfig, DecideContext};

/// Reconcile one tier; kube-runtime calls this for every change and at every requeue.
#[instrument(skip_all, fields(namespace = tier.namespace().unwrap_or_default(), tier = %tier.name_any()))]
pub async fn reconcile(tier: Arc<MemoryTier>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    if ctx.stop.is_cancelled() {
        // Shutting down: nothing new starts.
        return Ok(Requeue::await_change());
    }
    let _running = ctx.running();
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let result = run_pipeline(&tier, &ctx).await;
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.succeeded(&uid(&tier));
    }
    result
}

/// Requeue a failed reconcile with a per-tier exponential backoff.
pub fn error_policy(tier: Arc<MemoryTier>, error: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&super::telemetry::ErrorLabels {
            kind: error.metric_label().to_owned(),
        })
        .inc();
    let wait = ctx.failed(&uid(&tier));
    // An error may quote an answer (the API server's, a Secret lookup's): one bounded line.
    let error = crate::remote::text::shown(&error.to_string(), 1000);
    warn!(tier = %tier.name_any(), %error, retry_in = ?wait, "reconcile failed");
    Requeue::requeue(wait)
}

fn uid(tier: &MemoryTier) -> String {
    tier.metadata.uid.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            tier.namespace().unwrap_or_default(),
            tier.name_any()
        )
    })
}

async fn run_pipeline(tier: &MemoryTier, ctx: &Context) -> Result<Requeue, Error> {
    // read
    let namespace = tier
        .namespace()
        .ok_or(Error::Malformed("metadata.namespace"))?;
    let name = tier.name_any();
    let now = Timestamp::now();
    let interval = tier.spec.metrics.interval.as_std();
    let requeue = Requeue::requeue(interval.max(std::time::Duration::from_millis(100)));

    if !ctx.leadership.is_leader() {
        // A standby re-checks on the same cadence; a change of leader also reconciles every tier.
        return Ok(requeue);
    }

    // validate
    if let Err(problems) = validate::validate_tier(tier) {
        let message = problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        stall(tier, ctx, reasons::INVALID_SPEC, &message, now).await?;
        // Nothing is done until the spec changes.
        return Ok(Requeue::await_change());
    }

    // resolve Secrets
    let secrets = KubeSecrets::new(ctx.client.clone(), &namespace);
    let resolved = async {
        let observe = ObserveConfig::resolve(&tier.spec, &secrets).await?;
        let act = ActSecrets::resolve(&tier.spec, &observe, &secrets).await?;
        Ok::<_, ConfigError>((observe, act))
    }
    .await;
    let (observe_config, act_secrets) = match resolved {
        Ok(r) => r,
        Err(e) => {
            stall(tier, ctx, reasons::SECRET_MISSING, &e.to_string(), now).await?;
            return Err(e.into());
        }
    };

    // observe
    let observer = ctx.observer(&uid(tier), observe_config)?;
    let observation = observer.lock().await.observe().await;

    // decide
    let (mut status, decided_on) = if ctx.watch_lags(&uid(tier), tier.status.as_ref()) {
        // The cache has not caught up with our last write: read the tier itself.
        let api: Api<MemoryTier> = Api::namespaced(ctx.client.clone(), &namespace);
        let fresh = api.get(&name).await?;
        (
            fresh.status.unwrap_or_default(),
            fresh.metadata.resource_version,
        )
    } else {
        (
            tier.status.clone().unwrap_or_default(),
            tier.metadata.resource_version.clone(),
        )
    };
    let memory = status.policy.clone().unwrap_or_default();
    let decide_ctx = DecideContext {
        generation: tier.metadata.generation,
        resume_token: tier.annotations().get(RESUME_ANNOTATION).cloned(),
        applied: applied_config(ctx, &namespace, &tier.spec.target.config_map_name).await?,
    };
    let decision = policy::decide(&tier.spec, &memory, &observation, now, &decide_ctx);
    if ctx.stop.is_cancelled() {
        // Nothing was done yet: the next leader decides again from the same status.
        info!("shutting down: not acting on this decision");
        return Ok(Requeue::await_change());
    }

    // claim: a decision that acts is written down before it acts (see `claim`)
    let claimed = if decision.actions.is_empty() {
        decided_on
    } else {
        let mut claim = status.clone();
        decision.apply_to_status(&mut claim, &observation, tier.metadata.generation);
        claim
            .recent_actions
            .splice(0..0, started_records(&decision, now));
        conditions::set_progress(&mut claim, tier.metadata.generation, now);
        match write_status_if(ctx, tier, &claim, decided_on.as_deref()).await {
            Ok(version) => {
                ctx.remember_status(&uid(tier), &claim);
                version
            }
            Err(e) if is_conflict(&e) => {
                // Another write reached the tier since it was read (another replica's decision,
                // a spec change): decide again on what is there now, soon.
                info!("the tier changed since it was read; deciding again");
                return Ok(Requeue::requeue(CONFLICT_RETRY));
            }
            // Nothing was done: the next reconcile decides again.
            Err(e) => return Err(e),
        }
    };

    // act
    let outcome = execute::execute(tier, ctx, &decision, &observation, &act_secrets, now).await;

    // status
    decision.apply_to_status(&mut status, &observation, tier.metadata.generation);
    outcome.apply_to_status(&mut status);
    conditions::set_progress(&mut status, tier.metadata.generation, now);
    record_outcomes(ctx, tier, &status, claimed.as_deref()).await?;
    ctx.remember_status(&uid(tier), &status);
    ctx.metrics
        .set_phase(&namespace, &name, status.phase.unwrap_or_default());
    ctx.metrics.set_signals(&namespace, &name, &observation);
    ctx.metrics.set_bounds(
        &namespace,
        &name,
        &tier.spec,
        &decision.memory,
        &decision.mitigations,
    );
    ctx.metrics
        .set_evicted_keys(&namespace, &name, observation.redis_evicted_keys);
    info!(phase = %status.phase.unwrap_or_default(), actions = decision.actions.len(), "reconciled");

    match outcome.error {
        // The status already says what failed; back off before trying again.
        Some(e) => Err(e),
        None => Ok(requeue),
    }
}

/// The hash the target ConfigMap carries now, so a hand-edited or deleted ConfigMap is repaired.
async fn applied_config(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<AppliedConfig, Error> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(match api.get_opt(name).await? {
        None => AppliedConfig::Absent,
        Some(cm) => match cm.annotations().get(CONFIG_HASH_ANNOTATION) {
            // A ConfigMap without our hash was not rendered by us (or was edited): re-render it.
            None => AppliedConfig::Hash(String::new()),
            Some(hash) => AppliedConfig::Hash(hash.clone()),
        },
    })
}

/// The tier cannot progress: Stalled and not Ready, with an Event saying why.
async fn stall(
    tier: &MemoryTier,
    ctx: &Context,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> Result<(), Error> {
    let generation = tier.metadata.generation;
    let mut status = tier.status.clone().unwrap_or_default();
    // The message may quote remote text (a Secret lookup's error): escaped and cut for status.
    let message = crate::remote::text::shown(message, 1000);
    let message = message.as_str();
    let already = conditions::find(&status.conditions, conditions::STALLED)
        .is_some_and(|c| c.status == "True" && c.reason == reason && c.message == message);
    conditions::set_stalled(&mut status, reason, message, generation, now);
    write_status(ctx, tier, &status).await?;
    ctx.metrics.set_phase(
        &tier.namespace().unwrap_or_default(),
        &tier.name_any(),
        Phase::Stalled,
    );
    if !already {
        publish(ctx, tier, true, reason, "Stall", message).await;
    }
    Ok(())
}

/// One server-side apply of the whole status, as the field manager `tierguard`.
async fn write_status(
    ctx: &Context,
    tier: &MemoryTier,
    status: &MemoryTierStatus,
) -> Result<(), Error> {
    write_status_if(ctx, tier, status, None).await.map(|_| ())
}

/// [`write_status`], only if the tier is still at `version` (a 409 Conflict otherwise).
/// Returns the resourceVersion written.
async fn write_status_if(
    ctx: &Context,
    tier: &MemoryTier,
    status: &MemoryTierStatus,
    version: Option<&str>,
) -> Result<Option<String>, Error> {
    let namespace = tier
        .namespace()
        .ok_or(Error::Malformed("metadata.namespace"))?;
    let api: Api<MemoryTier> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut status = status.clone();
    status.recent_actions.truncate(MAX_ACTIONS_IN_STATUS);
    let mut patch = json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "status": status,
    });
    if let Some(version) = version {
        patch["metadata"] = json!({"resourceVersion": version});
    }
    let written = api
        .patch_status(
            &tier.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(written.metadata.resource_version)
}

/// How soon a decision taken on a tier that changed meanwhile is taken again.
const CONFLICT_RETRY: std::time::Duration = std::time::Duration::from_millis(500);
/// Attempts to record what a decision did, and the wait between them.
const RECORD_ATTEMPTS: u32 = 3;
const RECORD_RETRY: std::time::Duration = std::time::Duration::from_millis(300);

fn is_conflict(e: &Error) -> bool {
    matches!(e, Error::Kube(k) if matches!(k.as_ref(), kube::Error::Api(s) if s.code == 409))
}

/// A decision that acts is claimed first: the status it leads to (the policy's memory with its
/// cooldowns and open incidents, the actions marked `started`) is written, on condition that the
/// tier is still what the decision was taken on. Only then are its actions carried out. So a
/// replica killed mid-action, a status write that fails afterwards, or two replicas deciding on
/// the same status, never make a decision run twice: the next decision starts from the claim,
/// and of two deciders on one version only one claim is written.
fn started_records(decision: &policy::Decision, now: Timestamp) -> Vec<crate::api::ActionRecord> {
    decision
        .actions
        .iter()
        .filter(|a| !matches!(a, policy::Action::Event { .. }))
        .map(|a| {
            crate::act::record::action(
                now,
                a.name(),
                a.reason(),
                crate::act::record::Outcome::Started,
                None,
            )
        })
        .collect()
}

/// Write what the decision did over its claim. A failed write is tried again a few times; if
/// it still fails the claim stays, with its actions `started` and no outcome: nothing runs again.
async fn record_outcomes(
    ctx: &Context,
    tier: &MemoryTier,
    status: &MemoryTierStatus,
    claimed: Option<&str>,
) -> Result<(), Error> {
    let mut attempt = 1;
    loop {
        match write_status_if(ctx, tier, status, claimed).await {
            Ok(_) => return Ok(()),
            Err(e) if is_conflict(&e) => {
                // Someone decided on the claim already: theirs stands, ours keeps `started`.
                warn!(error = %e, "the outcome of this decision is not recorded: the tier changed since its claim");
                return Ok(());
            }
            Err(e) if attempt >= RECORD_ATTEMPTS || ctx.stop.is_cancelled() => return Err(e),
            Err(e) => {
                warn!(error = %e, attempt, "recording the outcome failed; trying again");
                attempt += 1;
                tokio::time::sleep(RECORD_RETRY).await;
            }
        }
    }
}

/// Publish an Event on the tier. A failed Event is logged, never fatal: it must not stop
/// remediation.
pub(super) async fn publish(
    ctx: &Context,
    tier: &MemoryTier,
    warning: bool,
    reason: &str,
    action: &str,
    note: &str,
) {
    let event = Note {
        warning,
        reason: truncate(reason, 128),
        note: truncate(note, 1024),
        action: truncate(action, 128),
    };
    if let Err(e) = ctx.events.publish(&event, &tier.object_ref(&())).await {
        warn!(error = %e, reason, "could not publish an Event");
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}
