//! Carry out a decision's actions with the actuators, in the policy's order, and collect what
//! happened for status. A failed action is recorded and reported, never allowed to stop the ones
//! after it: a webhook that is down must not keep Redis from being remediated.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;

use kube::Resource;

use super::Context;
use super::events::EventPublisher;
use super::telemetry::Metrics;
use super::work::{Finished, JobKind, Start};
use crate::act::configmap::KubeActError;
use crate::act::http::Backoff;
use crate::act::notify::{self, ResolvedWebhook};
use crate::act::record;
use crate::act::redis::remediate::{audit_redis, remediate_redis};
use crate::act::report::{self, ReportContext};
use crate::act::{configmap, restart, warm};
use crate::api::{
    ActionKind, ActionOutcome, ActionRecord, AuditOutcome, MemoryTier, Observation, Reason,
    RemediationOutcome, SecretKeyRef,
};
use crate::destinations::{Destinations, Purpose, Refused};
use crate::observe::prometheus::{InstantValue, PrometheusClient};
use crate::observe::secrets::SecretResolver;
use crate::observe::{ConfigError, ObserveConfig};
use crate::policy::{Action, Decision, Notification};
use crate::secret::{ExposeSecret, SecretString};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::reflector::ObjectRef;

/// Webhook timeout and retries: notifications are best effort and must not hold a reconcile long.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
const NOTIFY_RETRIES: u32 = 2;

/// The Secrets the actuators need, resolved once per reconcile.
#[derive(Debug, Default)]
pub struct ActSecrets {
    pub warm_token: Option<SecretString>,
    pub webhooks: Vec<ResolvedWebhook>,
    pub redis_url: Option<SecretString>,
    /// Prometheus (with its auth) for the warming's top-N query.
    prometheus: Option<crate::observe::PrometheusConfig>,
}

impl ActSecrets {
    pub async fn resolve(
        spec: &crate::api::MemoryTierSpec,
        observe: &ObserveConfig,
        secrets: &impl SecretResolver,
    ) -> Result<Self, ConfigError> {
        let get = |field: &'static str, r: SecretKeyRef| async move {
            secrets
                .resolve(&r)
                .await
                .map(SecretString::from)
                .map_err(|source| ConfigError::Secret { field, source })
        };
        let warm_token = match &spec.warming.token_secret_ref {
            Some(r) => Some(get("spec.warming.tokenSecretRef", r.clone()).await?),
            None => None,
        };
        let mut webhooks = Vec::with_capacity(spec.notify.webhooks.len());
        for hook in &spec.notify.webhooks {
            let url = match (&hook.url, &hook.url_secret_ref) {
                (Some(url), _) => SecretString::from(url.clone()),
                (None, Some(r)) => get("spec.notify.webhooks[].urlSecretRef", r.clone()).await?,
                // The CRD requires one of them; a webhook without a URL cannot be sent to.
                (None, None) => continue,
            };
            let routing_key = match &hook.routing_key_secret_ref {
                Some(r) => {
                    Some(get("spec.notify.webhooks[].routingKeySecretRef", r.clone()).await?)
                }
                None => None,
            };
            webhooks.push(ResolvedWebhook {
                name: hook.name.clone(),
                format: hook.format,
                url,
                routing_key,
                levels: hook.levels.clone(),
            });
        }
        Ok(ActSecrets {
            warm_token,
            webhooks,
            redis_url: observe.redis.as_ref().map(|r| r.url.clone()),
            prometheus: observe.prometheus.clone(),
        })
    }
}

/// How much of the preflight to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preflight {
    /// Destinations and ownership.
    Full,
    /// Destinations only: the ownership checks passed for this spec not long ago (the actuators
    /// check ownership again whenever they write).
    DestinationsOnly,
}

/// Before anything is sent or written for `tier`: every destination it names is allowed, and
/// (with [`Preflight::Full`]) every object it would write is its own (or adopted), or a workload
/// that opted in. A refusal stalls the tier; a failure to read what decides is left to the
/// actuators, which check again when they write. Returns whether every ownership check was
/// made and passed.
pub async fn preflight(
    tier: &MemoryTier,
    ctx: &Context,
    observe: &ObserveConfig,
    secrets: &ActSecrets,
    scope: Preflight,
) -> Result<bool, ConfigError> {
    check_destinations(&ctx.network.destinations, &tier.spec, observe, secrets).await?;
    if scope == Preflight::DestinationsOnly {
        return Ok(false);
    }
    let namespace = tier.namespace().unwrap_or_default();
    let name = tier.name_any();
    let incidents_name = report::incidents_config_map_name(&name);
    let (target, incidents) = futures::join!(
        configmap::check_may_write(&ctx.client, tier, &tier.spec.target.config_map_name),
        configmap::check_may_write(&ctx.client, tier, &incidents_name),
    );
    let mut checks = vec![target, incidents];
    if let (true, Some(workload)) = (
        tier.spec.target.restart_on_change,
        &tier.spec.target.workload_ref,
    ) {
        checks.push(restart::check_opted_in(&ctx.client, &namespace, workload, &name).await);
    }
    let mut all_passed = true;
    for check in checks {
        match check {
            Ok(()) => {}
            Err(
                e @ (KubeActError::NotOurs { .. }
                | KubeActError::NotOptedIn { .. }
                | KubeActError::ForeignOwner { .. }),
            ) => {
                return Err(ConfigError::NotOurs(Box::new(e)));
            }
            Err(e) => {
                all_passed = false;
                tracing::warn!(error = %e, "preflight: could not check ownership");
            }
        }
    }
    Ok(all_passed)
}

/// Every URL and address the tier would reach, against the allow-list of its kind.
async fn check_destinations(
    destinations: &Destinations,
    spec: &crate::api::MemoryTierSpec,
    observe: &ObserveConfig,
    secrets: &ActSecrets,
) -> Result<(), ConfigError> {
    let mut wanted: Vec<(String, Purpose, &str)> = Vec::new();
    if let Some(p) = &observe.prometheus {
        wanted.push((
            "spec.metrics.prometheus.url".into(),
            Purpose::Metrics,
            &p.url,
        ));
    }
    if let Some(url) = &observe.scrape_url {
        wanted.push(("spec.metrics.scrape.url".into(), Purpose::Metrics, url));
    }
    if let Some(p) = &observe.postgres {
        wanted.push((
            "spec.metrics.postgres.urlSecretRef".into(),
            Purpose::Metrics,
            p.url.expose_secret(),
        ));
    }
    if let Some(r) = &observe.redis {
        wanted.push((
            "spec.redis.urlSecretRef".into(),
            Purpose::Redis,
            r.url.expose_secret(),
        ));
    }
    if let Some(endpoint) = &spec.warming.endpoint {
        wanted.push(("spec.warming.endpoint".into(), Purpose::Warming, endpoint));
    }
    if let Some(probe) = &spec.breaker.probe {
        wanted.push((
            "spec.breaker.probe.healthUrl".into(),
            Purpose::Probe,
            &probe.health_url,
        ));
        if let Some(url) = &probe.auth_url {
            wanted.push(("spec.breaker.probe.authUrl".into(), Purpose::Probe, url));
        }
    }
    for hook in &secrets.webhooks {
        wanted.push((
            format!("spec.notify.webhooks[{}]", hook.name),
            Purpose::Webhooks,
            hook.url.expose_secret(),
        ));
    }
    // Side by side: a tier naming many hosts waits for the slowest name lookup, not for their sum.
    let checked = futures::future::join_all(
        wanted
            .iter()
            .map(|(_, purpose, url)| destinations.get(*purpose).check_url(url)),
    )
    .await;
    for ((field, _, _), result) in wanted.into_iter().zip(checked) {
        match result {
            Ok(()) => {}
            // A URL that is not one at all is said by whoever would use it (ConfigInvalid).
            Err(Refused::Malformed(_)) => {}
            Err(refused) => return Err(ConfigError::Destination { field, refused }),
        }
    }
    Ok(())
}

/// A notification with what its message is written from, owned, so that it can be sent in the
/// background.
struct Notifying {
    http: reqwest::Client,
    webhooks: Vec<ResolvedWebhook>,
    namespace: String,
    tier: String,
    incident: Option<crate::api::IncidentSummary>,
    observed: Observation,
    mitigations: Vec<crate::api::Mitigation>,
    reason: String,
    now: Timestamp,
}

impl Notifying {
    async fn send(&self, n: &Notification) -> Finished {
        let notify_ctx = notify::Context {
            namespace: &self.namespace,
            tier: &self.tier,
            now: self.now,
            incident: self.incident.as_ref(),
            observed: Some(&self.observed),
            mitigations: &self.mitigations,
        };
        let outcome = notify::notify(
            &self.http,
            &self.webhooks,
            n,
            &notify_ctx,
            NOTIFY_TIMEOUT,
            NOTIFY_RETRIES,
            Backoff::default(),
        )
        .await;
        Finished {
            record: outcome.record(self.now, &self.reason),
            remediation: None,
            audit: None,
        }
    }
}

/// One notification (incident, level, kind) is sent once at a time; different ones run side by
/// side.
fn notification_key(n: &Notification) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&n.incident_id, n.level, format!("{:?}", n.kind)).hash(&mut hasher);
    hasher.finish()
}

/// What carrying out a decision did, for status.
#[derive(Debug, Default)]
pub struct Executed {
    /// Newest first.
    pub records: Vec<ActionRecord>,
    pub remediation: Option<RemediationOutcome>,
    pub audit: Option<AuditOutcome>,
    /// Where each incident's report was written, by incident id.
    pub reports: BTreeMap<String, String>,
    /// How background jobs started earlier went: each replaces its "started" record.
    pub finished: Vec<ActionRecord>,
    /// The first failed Kubernetes write: the reconcile backs off after writing status.
    pub error: Option<KubeActError>,
}

impl Executed {
    fn push(&mut self, record: ActionRecord) {
        self.records.insert(0, record);
    }
}

/// Carry out `decision` for `tier`.
pub async fn execute(
    tier: &MemoryTier,
    ctx: &Context,
    decision: &Decision,
    observation: &Observation,
    secrets: &ActSecrets,
    now: Timestamp,
) -> Executed {
    let mut done = Executed::default();
    let namespace = tier.namespace().unwrap_or_default();
    let name = tier.name_any();
    let regarding = tier.object_ref(&());
    // What the background jobs started by earlier reconciles did (their Events are out already).
    for finished in ctx.work.take_finished(&tier_uid(tier)) {
        if finished.remediation.is_some() {
            done.remediation = finished.remediation;
        }
        if finished.audit.is_some() {
            done.audit = finished.audit;
        }
        done.finished.push(finished.record);
    }
    // The decision's Events first: why each action runs reads before how it went.
    for action in &decision.actions {
        if let Action::Event {
            warning,
            reason,
            message,
        } = action
        {
            ctx.events
                .announce(&regarding, *warning, *reason, "Decide", message)
                .await;
        }
    }
    for action in &decision.actions {
        if matches!(action, Action::Event { .. }) {
            continue;
        }
        if decision.dry_run {
            // DryRun: say what would have been done, do none of it.
            done.push(record::action(
                now,
                action.kind(),
                action.reason(),
                ActionOutcome::DryRun,
                None,
            ));
            count(&ctx.metrics, action.kind(), ActionOutcome::DryRun);
            continue;
        }
        let record = match action {
            Action::RenderConfig {
                config,
                hash,
                reason,
            } => match configmap::apply_config(
                &ctx.client,
                tier,
                config,
                hash,
                &decision.mitigations,
            )
            .await
            {
                Ok(applied) => applied.record(now, reason),
                Err(e) => failed(&mut done, now, action, e),
            },
            Action::RestartWorkload { hash, reason } => match &tier.spec.target.workload_ref {
                Some(workload) => {
                    match restart::restart_workload(
                        &ctx.client,
                        &namespace,
                        workload,
                        &name,
                        hash,
                        now,
                    )
                    .await
                    {
                        Ok(outcome) => outcome.record(now, reason),
                        Err(e) => failed(&mut done, now, action, e),
                    }
                }
                None => record::action(
                    now,
                    action.kind(),
                    reason,
                    ActionOutcome::Skipped,
                    Some("spec.target.workloadRef is not set".into()),
                ),
            },
            Action::WarmCache {
                trigger,
                reason,
                clinic_ids,
            } => {
                let http = ctx.network.warming.clone();
                let top_n = TopN::of(tier, ctx, secrets);
                let warming = tier.spec.warming.clone();
                let token = secrets.warm_token.clone();
                let (trigger, reason, missing) = (*trigger, reason.clone(), clinic_ids.clone());
                background(ctx, tier, JobKind::Warm, action, now, async move {
                    let top_n = top_n.clinics().await;
                    let run = warm::warm_cache(
                        &http,
                        &warming,
                        token.as_ref(),
                        &missing,
                        &top_n,
                        trigger,
                        &reason,
                        Backoff::default(),
                        now,
                    )
                    .await;
                    Finished {
                        record: run.record,
                        remediation: None,
                        audit: None,
                    }
                })
            }
            Action::RemediateRedis { level, reason } => match &secrets.redis_url {
                Some(url) => {
                    let (spec, url) = (tier.spec.redis.clone(), url.clone());
                    let destinations = ctx.network.destinations.clone();
                    let (level, reason) = (*level, reason.clone());
                    let stop = ctx.stop.clone();
                    background(ctx, tier, JobKind::Remediate, action, now, async move {
                        let run = remediate_redis(
                            &spec,
                            &url,
                            &destinations.redis,
                            level,
                            &reason,
                            false,
                            now,
                            &stop,
                        )
                        .await;
                        Finished {
                            record: run.record,
                            remediation: Some(run.outcome),
                            audit: None,
                        }
                    })
                }
                None => no_redis(now, action),
            },
            Action::SetMaxMemory {
                bytes,
                from,
                ceiling,
                restore,
                reason,
            } => match &secrets.redis_url {
                // A few short commands: done in the reconcile, within their own timeouts.
                Some(url) => {
                    let change = crate::act::redis::maxmemory::MaxMemoryChange {
                        bytes: *bytes,
                        from: *from,
                        ceiling: *ceiling,
                        restore: *restore,
                    };
                    crate::act::redis::maxmemory::change_max_memory(
                        url,
                        &ctx.network.destinations.redis,
                        change,
                        reason,
                        now,
                    )
                    .await
                    .1
                }
                None => no_redis(now, action),
            },
            Action::AuditRedis { reason } => match &secrets.redis_url {
                Some(url) => {
                    let (spec, url) = (tier.spec.redis.clone(), url.clone());
                    let destinations = ctx.network.destinations.clone();
                    let reason = reason.clone();
                    let stop = ctx.stop.clone();
                    let (probe, uid) = (ctx.work.probe(), tier_uid(tier));
                    background(ctx, tier, JobKind::Audit, action, now, async move {
                        // The audit reports what the remediation decided with it left, so it
                        // waits for that to end (within the audit's own budget).
                        while probe.is_running(&uid, JobKind::Remediate) {
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                        let run =
                            audit_redis(&spec, &url, &destinations.redis, &reason, now, &stop)
                                .await;
                        Finished {
                            record: run.record,
                            remediation: None,
                            audit: run.outcome,
                        }
                    })
                }
                None => no_redis(now, action),
            },
            Action::Notify(n) => {
                let incident = decision
                    .incidents
                    .iter()
                    .find(|i| i.id == n.incident_id)
                    .or_else(|| {
                        tier.status
                            .as_ref()
                            .and_then(|s| s.incidents.iter().find(|i| i.id == n.incident_id))
                    })
                    .cloned();
                let job = Notifying {
                    http: ctx.network.webhooks.clone(),
                    webhooks: secrets.webhooks.clone(),
                    namespace: namespace.clone(),
                    tier: name.clone(),
                    incident,
                    observed: observation.clone(),
                    mitigations: decision.mitigations.clone(),
                    reason: action.reason().to_owned(),
                    now,
                };
                if secrets.webhooks.is_empty() {
                    // Nothing is sent: said at once.
                    job.send(n).await.record
                } else {
                    // Webhooks that answer slowly (or not at all) wait in the background.
                    let kind = JobKind::Notify(notification_key(n));
                    let n = n.clone();
                    background(
                        ctx,
                        tier,
                        kind,
                        action,
                        now,
                        async move { job.send(&n).await },
                    )
                }
            }
            Action::RecordIncident { incident, reason } => {
                let report_ctx = ReportContext {
                    namespace: &namespace,
                    tier: &name,
                    now,
                    observed: Some(observation),
                    mitigations: &decision.mitigations,
                };
                match report::record_incident(&ctx.client, tier, incident, &report_ctx).await {
                    Ok(recorded) => {
                        done.reports
                            .insert(incident.id.clone(), recorded.location.clone());
                        recorded.record(now, reason)
                    }
                    Err(e) => failed(&mut done, now, action, e),
                }
            }
            Action::Event { .. } => unreachable!("Events are published above"),
        };
        // A job that only started is counted and announced when it has finished.
        if record.outcome != ActionOutcome::Started {
            count(&ctx.metrics, record.action, record.outcome);
            announce(&ctx.events, &regarding, &record).await;
        }
        done.push(record);
    }
    done
}

fn tier_uid(tier: &MemoryTier) -> String {
    tier.metadata.uid.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            tier.namespace().unwrap_or_default(),
            tier.name_any()
        )
    })
}

/// Start `job` for `action` in the background: the record says it started (or that the tier's
/// previous job of its kind still runs); the job's own record replaces it once it is done.
fn background(
    ctx: &Context,
    tier: &MemoryTier,
    kind: JobKind,
    action: &Action,
    now: Timestamp,
    job: impl std::future::Future<Output = Finished> + Send + 'static,
) -> ActionRecord {
    let action_kind = action.kind();
    let reason = action.reason().to_owned();
    let budget = ctx.work.budget().job_timeout;
    let stopped_reason = reason.clone();
    let timed_out = move |budget: Duration| Finished {
        record: record::action(
            now,
            action_kind,
            &stopped_reason,
            ActionOutcome::Failed,
            Some(format!(
                "stopped: it ran past the background budget of {} (the controller's --background-job-timeout)",
                crate::api::Duration::from_std(budget)
            )),
        ),
        remediation: None,
        audit: None,
    };
    let (events, metrics) = (ctx.events.clone(), ctx.metrics.clone());
    let regarding = tier.object_ref(&());
    let done = move |finished: Finished| async move {
        count(&metrics, finished.record.action, finished.record.outcome);
        announce(&events, &regarding, &finished.record).await;
    };
    match ctx.work.start(
        &tier_uid(tier),
        ObjectRef::new(&tier.name_any()).within(&tier.namespace().unwrap_or_default()),
        kind,
        job,
        timed_out,
        done,
    ) {
        Start::Started => record::action(
            now,
            action_kind,
            &reason,
            ActionOutcome::Started,
            Some(format!(
                "running in the background, for at most {}",
                crate::api::Duration::from_std(budget)
            )),
        ),
        Start::Busy => record::action(
            now,
            action_kind,
            &reason,
            ActionOutcome::Skipped,
            Some(format!(
                "this tier's previous {action_kind} is still running in the background"
            )),
        ),
    }
}

fn count(metrics: &Metrics, action: ActionKind, outcome: ActionOutcome) {
    metrics
        .actions
        .get_or_create(&super::telemetry::ActionLabels {
            action: action.as_str().to_owned(),
            outcome: outcome.as_str().to_owned(),
        })
        .inc();
}

/// The outcome of an action as an Event on the tier: a Warning when it failed. The policy has
/// already published why each action runs; a plain success adds nothing to that for a render, a
/// restart or an audit (whose findings are in status), so only outcomes that say something new are
/// published: failures, skips, and what a warming, a remediation, a notification or a report did.
async fn announce(events: &EventPublisher, regarding: &ObjectReference, record: &ActionRecord) {
    if record.outcome == ActionOutcome::Ok
        && matches!(
            record.action,
            ActionKind::RenderConfig | ActionKind::RestartWorkload | ActionKind::AuditRedis
        )
    {
        return;
    }
    let note = match &record.detail {
        Some(detail) => format!(
            "{} ({}): {}: {detail}",
            record.action, record.outcome, record.reason
        ),
        None => format!("{} ({}): {}", record.action, record.outcome, record.reason),
    };
    let reason: Reason = record.action.outcome_reason(record.outcome);
    events
        .announce(
            regarding,
            record.outcome == ActionOutcome::Failed,
            reason,
            record.action.as_str(),
            &note,
        )
        .await;
}

fn failed(
    done: &mut Executed,
    now: Timestamp,
    action: &Action,
    error: KubeActError,
) -> ActionRecord {
    let detail = error.to_string();
    if done.error.is_none() {
        done.error = Some(error);
    }
    record::action(
        now,
        action.kind(),
        action.reason(),
        ActionOutcome::Failed,
        Some(detail),
    )
}

fn no_redis(now: Timestamp, action: &Action) -> ActionRecord {
    record::action(
        now,
        action.kind(),
        action.reason(),
        ActionOutcome::Skipped,
        Some("spec.redis.urlSecretRef is not set".into()),
    )
}

/// What the busiest clinics of `spec.warming.topN` are read with, taken out of the reconcile
/// with the warming.
struct TopN {
    query: Option<(crate::api::TopNQuery, PrometheusClient)>,
}

impl TopN {
    fn of(tier: &MemoryTier, ctx: &Context, secrets: &ActSecrets) -> TopN {
        let warming = &tier.spec.warming;
        let (Some(top), Some(prometheus)) = (&warming.top_n, &secrets.prometheus) else {
            return TopN { query: None };
        };
        if !warming.clinic_ids.is_empty() {
            return TopN { query: None };
        }
        match PrometheusClient::new(
            ctx.network.metrics.clone(),
            &prometheus.url,
            prometheus.auth.clone(),
            tier.spec.metrics.timeout.as_std(),
        ) {
            Ok(client) => TopN {
                query: Some((top.clone(), client)),
            },
            Err(e) => {
                tracing::warn!(error = %e, "top-N query: bad Prometheus URL");
                TopN { query: None }
            }
        }
    }

    /// The busiest clinics by the query, when warming has no fixed clinic list. An unanswered
    /// query warms nothing rather than guessing.
    async fn clinics(&self) -> Vec<i64> {
        let Some((top, client)) = &self.query else {
            return Vec::new();
        };
        match client.query(&top.query).await {
            Ok(InstantValue::Vector(mut samples)) => {
                samples.retain(|s| s.value.is_finite());
                samples.sort_by(|a, b| b.value.total_cmp(&a.value));
                samples
                    .iter()
                    .filter_map(|s| s.label(&top.label)?.parse::<i64>().ok())
                    .take(top.count as usize)
                    .collect()
            }
            Ok(InstantValue::Scalar(_)) => {
                tracing::warn!("top-N query returned a scalar, not one series per clinic");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(error = %e, "top-N query failed");
                Vec::new()
            }
        }
    }
}
