//! One reconcile of one MemoryTier, as a pipeline of small named steps, each with its own error:
//! read → validate → resolve Secrets → observe → decide → claim → act → status.
//!
//! Only the leader goes past validation: a standby replica keeps its watch cache warm and does
//! nothing else, so it never writes and never loads Redis or Prometheus twice. A configuration
//! error (a missing Secret, a bad URL in one) stalls the tier with a condition and an Event; an
//! object that does not even deserialize is reported the same way, and never stops the others.

use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action as Requeue;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use super::Context;
use super::admission::Held;
use super::error::{DecideError, Error, ReadError, StatusError, ValidateError};
use super::execute::{self, ActSecrets};
use super::memory::{self, Recalled};
use super::quiet;
use super::status::{self, Reconciled};
use crate::act::configmap::CONFIG_HASH_ANNOTATION;
use crate::act::record;
use crate::api::{
    API_VERSION, ActionKind, ActionOutcome, FIELD_MANAGER, KIND, MemoryTier, MemoryTierStatus,
    Observation, Phase, RESUME_ANNOTATION, Reason, bounds, validate,
};
use crate::observe::secrets::KubeSecrets;
use crate::observe::{ConfigError, ObserveConfig};
use crate::policy::{self, AppliedConfig, DecideContext, Decision};

/// What kube-runtime hands over: a MemoryTier as the cache keeps it, or an object that failed
/// to deserialize as one.
pub type Watched = super::cached::CachedTier;

/// Reconcile one tier; kube-runtime calls this for every change and at every requeue.
#[instrument(skip_all, fields(namespace = watched.namespace().unwrap_or_default(), tier = %watched.name_any()))]
pub async fn reconcile(watched: Arc<Watched>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let urgency = watched.urgency();
    // Due reconciles wait here, most urgent first, for one of the slots.
    let mut slot = tokio::select! {
        slot = ctx.admission.hold(urgency) => slot,
        _ = ctx.stop.cancelled() => return Ok(Requeue::await_change()),
    };
    if ctx.stop.is_cancelled() {
        // Shutting down: nothing new starts.
        return Ok(Requeue::await_change());
    }
    let _running = ctx.running();
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    // Boxed: a reconcile waiting for its slot holds only the small future above. The tier is
    // unpacked only now, so one waiting holds only the cache's packed form.
    let result = match watched.unpack() {
        Ok(tier) => Box::pin(run_pipeline(tier, &ctx, &mut slot)).await,
        Err(invalid) => Box::pin(report_invalid(&watched, &invalid, &ctx)).await,
    };
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.succeeded(&uid(watched.meta()));
    }
    result
}

/// Requeue a failed reconcile with a per-tier exponential backoff.
pub fn error_policy(watched: Arc<Watched>, error: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&super::telemetry::ErrorLabels {
            kind: error.metric_label().to_owned(),
        })
        .inc();
    let wait = ctx.failed(&uid(watched.meta()));
    // An error may quote an answer (the API server's, a Secret lookup's): one bounded line.
    let error = crate::remote::text::shown(&error.to_string(), 1000);
    warn!(tier = %watched.name_any(), %error, retry_in = ?wait, "reconcile failed");
    Requeue::requeue(wait)
}

fn uid(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.uid.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        )
    })
}

/// What every step knows of the tier.
struct Tier<'a> {
    tier: &'a MemoryTier,
    namespace: String,
    name: String,
    uid: String,
    now: Timestamp,
    /// When this reconcile began, on the monotonic clock.
    started: Instant,
    requeue: Requeue,
}

impl Tier<'_> {
    /// The requeue after a full tick: at the tier's next periodic tick ([`Context::next_tick`]).
    fn next_tick(&self, ctx: &Context) -> Requeue {
        let interval = self.tier.spec.metrics.interval.as_std().max(MIN_REQUEUE);
        Requeue::requeue(
            ctx.next_tick(&self.uid, interval, self.started)
                .max(MIN_REQUEUE),
        )
    }
}

/// The shortest wait between two reconciles of a tier.
const MIN_REQUEUE: std::time::Duration = std::time::Duration::from_millis(100);

async fn run_pipeline(
    tier: MemoryTier,
    ctx: &Context,
    slot: &mut Held<'_>,
) -> Result<Requeue, Error> {
    let t = read(&tier)?;
    if !ctx.leadership.is_leader() {
        // A standby re-checks on the same cadence; a change of leader also reconciles every tier.
        return Ok(t.requeue);
    }
    let generation = tier.metadata.generation;
    if !ctx.spec_validated(&t.uid, generation) {
        let validated = validate_spec(&tier);
        ctx.record_validation(&t.uid, generation, validated.is_ok());
        if let Err(problems) = validated {
            stall(ctx, &t, Reason::InvalidSpec, &problems.to_string()).await?;
            // Nothing is done until the spec changes.
            return Ok(Requeue::await_change());
        }
    }
    // Whatever an older CRD let through, the controller works within the bounds.
    let Tier {
        namespace,
        name,
        uid,
        now,
        started,
        requeue,
        ..
    } = t;
    let bounded = MemoryTier {
        spec: bounds::clamp(&tier.spec),
        ..tier
    };
    let (tier, t) = (
        &bounded,
        Tier {
            tier: &bounded,
            namespace,
            name,
            uid,
            now,
            started,
            requeue,
        },
    );
    let (observe_config, act_secrets) = match resolve_secrets(ctx, &t).await {
        Ok(resolved) => resolved,
        // The API server did not answer: retried with the error backoff. Stalling here would
        // report a Secret missing that is not, and overwrite the phase of a tier mid-incident.
        Err(e) if e.is_transient() => return Err(Error::Secrets(e)),
        Err(e) => {
            stall(ctx, &t, config_reason(&e), &e.to_string()).await?;
            return Err(Error::Secrets(e));
        }
    };
    let observation = match observe(ctx, &t, observe_config, slot).await {
        Ok(observation) => observation,
        Err(e) => {
            stall(ctx, &t, config_reason(&e), &e.to_string()).await?;
            return Err(Error::Observe(e));
        }
    };
    ctx.metrics.count_probe(&t.namespace, &t.name, &observation);
    let decided = decide(ctx, &t, &observation).await?;
    if ctx.stop.is_cancelled() {
        // Nothing was done yet: the next leader decides again from the same status.
        info!("shutting down: not acting on this decision");
        return Ok(Requeue::await_change());
    }
    let claimed = match claim(ctx, &t, &decided, &observation).await? {
        Claim::Written(version) => version,
        Claim::Outdated => return Ok(Requeue::requeue(CONFLICT_RETRY)),
    };
    let executed = execute::execute(
        t.tier,
        ctx,
        &decided.decision,
        &observation,
        &act_secrets,
        t.now,
    )
    .await;
    let next = status::next_status(
        &decided.previous,
        &Reconciled {
            decision: &decided.decision,
            observation: &observation,
            executed: &executed,
            recalled: &decided.recalled,
            generation: tier.metadata.generation,
            now: t.now,
        },
    );
    let quiet = decided.decision.actions.is_empty()
        && executed.error.is_none()
        && !quiet::needs_write(&decided.previous, &next, t.now, ctx.status_refresh);
    if quiet {
        // Only the live readings moved: they are on /metrics; status keeps them until the refresh.
        ctx.keep_pending(&t.uid, decided.stored_tick, &next);
    } else {
        record_outcomes(ctx, tier, &next, claimed.as_deref()).await?;
        ctx.remember_status(&t.uid, &next);
        ctx.metrics.status_writes.inc();
    }
    if decided.recalled.reset_now
        && let Some(note) = &decided.recalled.reset
    {
        announce(ctx, tier, true, Reason::MemoryReset, "Decide", &note.why).await;
    }
    ctx.metrics
        .set_phase(&t.namespace, &t.name, next.phase.unwrap_or_default());
    ctx.metrics.set_signals(&t.namespace, &t.name, &observation);
    ctx.metrics.set_bounds(
        &t.namespace,
        &t.name,
        &tier.spec,
        &decided.decision.memory,
        &decided.decision.mitigations,
    );
    ctx.metrics
        .set_evicted_keys(&t.namespace, &t.name, observation.redis_evicted_keys);
    ctx.metrics.set_reconciled(&t.namespace, &t.name, t.now);
    info!(phase = %next.phase.unwrap_or_default(), actions = decided.decision.actions.len(), "reconciled");

    match executed.error {
        // The status already says what failed; back off before trying again.
        Some(e) => Err(e.into()),
        None => Ok(t.next_tick(ctx)),
    }
}

/// read: what every MemoryTier has.
fn read(tier: &MemoryTier) -> Result<Tier<'_>, ReadError> {
    let namespace = tier
        .namespace()
        .ok_or(ReadError::Malformed("metadata.namespace"))?;
    let interval = tier.spec.metrics.interval.as_std();
    Ok(Tier {
        tier,
        namespace,
        name: tier.name_any(),
        uid: uid(&tier.metadata),
        now: Timestamp::now(),
        started: Instant::now(),
        requeue: Requeue::requeue(interval.max(bounds::MIN_INTERVAL.as_std())),
    })
}

/// validate: the CRD's rules, checked again (an older CRD may not have had them).
fn validate_spec(tier: &MemoryTier) -> Result<(), ValidateError> {
    validate::validate_tier(tier).map_err(ValidateError)
}

/// resolve Secrets: what the observers and the actuators need from the tier's namespace (Secrets
/// marked for tierguard only), then the preflight: every destination allowed, every object to be
/// written the tier's own.
async fn resolve_secrets(
    ctx: &Context,
    t: &Tier<'_>,
) -> Result<(ObserveConfig, ActSecrets), ConfigError> {
    let secrets = KubeSecrets::new(ctx.client.clone(), &t.namespace);
    let observe = ObserveConfig::resolve(&t.tier.spec, &secrets).await?;
    let act = ActSecrets::resolve(&t.tier.spec, &observe, &secrets).await?;
    let generation = t.tier.metadata.generation;
    // Ownership is checked again by every actuator that writes: here it is checked once per spec
    // generation and refresh period, so a healthy tick reads no ConfigMap for it.
    let scope = if ctx.preflight_passed_recently(&t.uid, generation) {
        execute::Preflight::DestinationsOnly
    } else {
        execute::Preflight::Full
    };
    match execute::preflight(t.tier, ctx, &observe, &act, scope).await {
        Ok(true) => ctx.preflight_passed(&t.uid, generation),
        Ok(false) => {}
        Err(e) => {
            ctx.preflight_failed(&t.uid);
            return Err(e);
        }
    }
    Ok((observe, act))
}

/// A configuration error's condition reason: a Secret that is missing or not marked for tierguard,
/// a destination outside the allow-lists, an object that is not tierguard's, or a value that is
/// unusable (a bad URL, a malformed token).
fn config_reason(e: &ConfigError) -> Reason {
    use crate::observe::secrets::SecretError;
    match e {
        ConfigError::Secret {
            source: SecretError::NotMarked { .. },
            ..
        } => Reason::SecretNotUsable,
        ConfigError::Secret { .. } => Reason::SecretMissing,
        ConfigError::Destination { .. } => Reason::DestinationRefused,
        ConfigError::NotOurs(_) => Reason::NotOurs,
        _ => Reason::ConfigInvalid,
    }
}

/// observe: every signal, within the spec's deadline (unknown with a reason when not read).
async fn observe(
    ctx: &Context,
    t: &Tier<'_>,
    config: ObserveConfig,
    slot: &mut Held<'_>,
) -> Result<Observation, ConfigError> {
    let observer = ctx.observer(&t.uid, &t.namespace, &t.tier.spec, config)?;
    let mut observer = observer.lock().await;
    // A tier that joined its fleet group after the group's last round waits for the next one:
    // network time, so its slot goes to another tier meanwhile (in a first pass over thousands
    // of new tiers, the slots would otherwise all be waiting on rounds).
    if let Some(round) = observer.fleet_round_to_wait_for() {
        slot.without_slot(round).await;
    }
    let mut observation = observer.observe().await;
    // The last probe as the stored memory has it, so a new leader does not probe again at once.
    let last_probe = t
        .tier
        .status
        .as_ref()
        .and_then(|s| s.policy.as_ref())
        .and_then(|doc| memory::decode(doc).ok())
        .and_then(|m| m.breaker.diagnosis);
    observer
        .probe_if_due(&mut observation, last_probe.as_ref())
        .await;
    Ok(observation)
}

/// What decide gives the later steps.
struct Decided {
    /// The status decided on: as stored, with the memory of the ticks not written since.
    previous: MemoryTierStatus,
    /// The `lastTick` of the status as stored.
    stored_tick: Option<jiff::Timestamp>,
    /// The resourceVersion of the tier `previous` was read from.
    version: Option<String>,
    recalled: Recalled,
    decision: Decision,
}

/// decide: the policy, on the memory in status and what the target ConfigMap holds.
async fn decide(
    ctx: &Context,
    t: &Tier<'_>,
    observation: &Observation,
) -> Result<Decided, DecideError> {
    let tier = t.tier;
    let (previous, version) = if ctx.watch_lags(&t.uid, tier.status.as_ref()) {
        // The cache has not caught up with our last write: read the tier itself.
        let api: Api<MemoryTier> = Api::namespaced(ctx.client.clone(), &t.namespace);
        let fresh = api
            .get(&t.name)
            .await
            .map_err(|e| DecideError::ReadTier(Box::new(e)))?;
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
    let stored_tick = memory::last_tick(&previous);
    let mut previous = previous;
    ctx.with_pending_memory(&t.uid, &mut previous);
    let recalled = memory::recall(&previous, tier.metadata.generation, t.now);
    let decide_ctx = DecideContext {
        generation: tier.metadata.generation,
        resume_token: tier.annotations().get(RESUME_ANNOTATION).cloned(),
        applied: applied_config(ctx, &t.namespace, &tier.spec.target.config_map_name).await?,
        last_audit: previous
            .memory_report
            .as_ref()
            .and_then(|r| r.last_audit.clone()),
    };
    let decision = policy::decide(
        &tier.spec,
        &recalled.memory,
        observation,
        t.now,
        &decide_ctx,
    );
    Ok(Decided {
        previous,
        stored_tick,
        version,
        recalled,
        decision,
    })
}

/// How soon a decision taken on a tier that changed meanwhile is taken again.
const CONFLICT_RETRY: std::time::Duration = std::time::Duration::from_millis(500);
/// Attempts to record what a decision did, and the wait between them.
const RECORD_ATTEMPTS: u32 = 3;
const RECORD_RETRY: std::time::Duration = std::time::Duration::from_millis(300);

/// How a claim went.
enum Claim {
    /// Written (or nothing to claim): the tier's resourceVersion now.
    Written(Option<String>),
    /// The tier changed since it was read: decide again.
    Outdated,
}

/// claim: a decision that acts is written down before it acts. The status it leads to (the
/// policy's memory with its cooldowns and open incidents, the actions marked `started`) is
/// written on condition that the tier is still the version the decision was taken on; only then
/// are the actions carried out. So a replica killed mid-action, a status write that fails
/// afterwards, or two replicas deciding on one status never make a decision run twice: the next
/// decision starts from the claim, and of two deciders on one version only one claim is written.
async fn claim(
    ctx: &Context,
    t: &Tier<'_>,
    decided: &Decided,
    observation: &Observation,
) -> Result<Claim, StatusError> {
    let decision = &decided.decision;
    // Nothing to claim when taking the decision twice would do no harm (a first render, a ramp
    // step: the same ConfigMap applied again); the status written after it is still checked
    // against the version decided on.
    if decision
        .actions
        .iter()
        .all(|a| a.kind().repeats_harmlessly())
    {
        return Ok(Claim::Written(decided.version.clone()));
    }
    let started = execute::Executed {
        records: decision
            .actions
            .iter()
            .filter(|a| a.kind() != ActionKind::Event)
            .map(|a| record::action(t.now, a.kind(), a.reason(), ActionOutcome::Started, None))
            .collect(),
        ..execute::Executed::default()
    };
    let claimed = status::next_status(
        &decided.previous,
        &Reconciled {
            decision,
            observation,
            executed: &started,
            recalled: &decided.recalled,
            generation: t.tier.metadata.generation,
            now: t.now,
        },
    );
    match write_status_if(ctx, t.tier, &claimed, decided.version.as_deref()).await {
        Ok(version) => {
            ctx.remember_status(&t.uid, &claimed);
            Ok(Claim::Written(version))
        }
        Err(e) if is_conflict(&e) => {
            // Another write reached the tier since it was read (another replica's decision, a
            // spec change): nothing was done; decide again on what is there now, soon.
            info!("the tier changed since it was read; deciding again");
            Ok(Claim::Outdated)
        }
        // Nothing was done: the next reconcile decides again.
        Err(e) => Err(e),
    }
}

/// status: write what the decision did over its claim. A failed write is tried again a few
/// times; if it still fails, the claim stays, with its actions `started` and no outcome, and
/// nothing runs again.
async fn record_outcomes(
    ctx: &Context,
    tier: &MemoryTier,
    status: &MemoryTierStatus,
    claimed: Option<&str>,
) -> Result<(), StatusError> {
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

fn is_conflict(e: &StatusError) -> bool {
    matches!(e.0.as_ref(), kube::Error::Api(s) if s.code == 409)
}

/// The hash the target ConfigMap carries now, so a hand-edited or deleted ConfigMap is repaired.
async fn applied_config(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<AppliedConfig, DecideError> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    // Its annotations are all that is needed: its data is never downloaded.
    let found = api
        .get_metadata_opt(name)
        .await
        .map_err(|e| DecideError::ReadConfigMap(Box::new(e)))?;
    Ok(match found {
        None => AppliedConfig::Absent,
        Some(cm) => match cm.annotations().get(CONFIG_HASH_ANNOTATION) {
            // A ConfigMap without our hash was not rendered by us (or was edited): re-render it.
            None => AppliedConfig::Hash(String::new()),
            Some(hash) => AppliedConfig::Hash(hash.clone()),
        },
    })
}

/// The tier cannot progress: Stalled and not Ready, with an Event saying why (once per reason
/// and message).
async fn stall(ctx: &Context, t: &Tier<'_>, reason: Reason, message: &str) -> Result<(), Error> {
    // The message may quote remote text (a Secret lookup's error): escaped and cut for status.
    let message = crate::remote::text::shown(message, 1000);
    let message = message.as_str();
    let previous = t.tier.status.clone().unwrap_or_default();
    let already = status::already_stalled(&previous, reason, message);
    let next = status::stalled(
        &previous,
        reason,
        message,
        t.tier.metadata.generation,
        t.now,
    );
    write_status(ctx, t.tier, &next).await?;
    ctx.metrics.set_phase(&t.namespace, &t.name, Phase::Stalled);
    if !already {
        announce(ctx, t.tier, true, reason, "Stall", message).await;
    }
    Ok(())
}

/// An object that does not deserialize as a MemoryTier: said in a log line, a metric, an Event
/// and (where the API server takes it) a Stalled condition; nothing else is done with it until
/// it changes, and every other tier goes on.
async fn report_invalid(
    watched: &Watched,
    invalid: &InvalidObject,
    ctx: &Context,
) -> Result<Requeue, Error> {
    let meta = watched.meta();
    let mut error = invalid.error.clone();
    error.truncate(512);
    let message = format!("the stored object is not a valid MemoryTier: {error}");
    warn!(tier = %watched.name_any(), error = %error, "a MemoryTier does not deserialize");
    ctx.metrics
        .reconcile_errors
        .get_or_create(&super::telemetry::ErrorLabels {
            kind: Error::Read(ReadError::Invalid(String::new()))
                .metric_label()
                .to_owned(),
        })
        .inc();
    if !ctx.leadership.is_leader() {
        return Ok(Requeue::await_change());
    }
    let now = Timestamp::now();
    let (Some(namespace), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
        return Err(ReadError::Malformed("metadata.name or metadata.namespace").into());
    };
    // Only the conditions are written, as a merge of this one condition list: the rest of the
    // stored status may be what does not deserialize.
    let previous = MemoryTierStatus::default();
    let next = status::stalled(
        &previous,
        Reason::InvalidObject,
        &message,
        meta.generation,
        now,
    );
    let api: Api<MemoryTier> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = json!({"status": {"phase": Phase::Stalled, "conditions": next.conditions, "observedGeneration": meta.generation}});
    if let Err(e) = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        warn!(tier = %name, error = %e, "could not write the Stalled condition of an invalid MemoryTier");
    }
    ctx.metrics.set_phase(namespace, name, Phase::Stalled);
    ctx.events
        .announce(
            &watched.object_ref(&()),
            true,
            Reason::InvalidObject,
            "Read",
            &message,
        )
        .await;
    Ok(Requeue::await_change())
}

/// status: one server-side apply of the whole status, as the field manager `tierguard`.
async fn write_status(
    ctx: &Context,
    tier: &MemoryTier,
    status: &MemoryTierStatus,
) -> Result<(), StatusError> {
    write_status_if(ctx, tier, status, None).await.map(|_| ())
}

/// [`write_status`], only if the tier is still at `version` (a 409 Conflict otherwise).
/// Returns the resourceVersion written.
async fn write_status_if(
    ctx: &Context,
    tier: &MemoryTier,
    status: &MemoryTierStatus,
    version: Option<&str>,
) -> Result<Option<String>, StatusError> {
    let mut patch = json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "status": status,
    });
    if let Some(version) = version {
        patch["metadata"] = json!({"resourceVersion": version});
    }
    let namespace = tier.namespace().unwrap_or_default();
    let mut request = kube::core::Request::new(MemoryTier::url_path(&(), Some(&namespace)))
        .patch_subresource(
            "status",
            &tier.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .map_err(|e| StatusError(Box::new(kube::Error::BuildRequest(e))))?;
    request.extensions_mut().insert("patch_status");
    let written: Written = ctx
        .client
        .request(request)
        .await
        .map_err(|e| StatusError(Box::new(e)))?;
    Ok(written.metadata.resource_version)
}

/// What the answer to a status write is read for: the tier's new resourceVersion. The rest (the
/// whole tier, with the managedFields of every writer) is skipped unread, not decoded.
#[derive(serde::Deserialize)]
struct Written {
    metadata: WrittenMetadata,
}

#[derive(serde::Deserialize)]
struct WrittenMetadata {
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
}

/// An Event on the tier.
async fn announce(
    ctx: &Context,
    tier: &MemoryTier,
    warning: bool,
    reason: Reason,
    action: &str,
    note: &str,
) {
    ctx.events
        .announce(&tier.object_ref(&()), warning, reason, action, note)
        .await;
}
