//! Carry out a decision's actions with the actuators, in the policy's order, and collect what
//! happened for status. A failed action is recorded and reported, never allowed to stop the ones
//! after it: a webhook that is down must not keep Redis from being remediated.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;

use kube::Resource;

use super::Context;
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
use crate::observe::prometheus::{InstantValue, PrometheusClient};
use crate::observe::secrets::SecretResolver;
use crate::observe::{ConfigError, ObserveConfig};
use crate::policy::{Action, Decision};
use crate::secret::SecretString;

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

/// What carrying out a decision did, for status.
#[derive(Debug, Default)]
pub struct Executed {
    /// Newest first.
    pub records: Vec<ActionRecord>,
    pub remediation: Option<RemediationOutcome>,
    pub audit: Option<AuditOutcome>,
    /// Where each incident's report was written, by incident id.
    pub reports: BTreeMap<String, String>,
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
            count(ctx, action.kind(), ActionOutcome::DryRun);
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
                    match restart::restart_workload(&ctx.client, &namespace, workload, hash, now)
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
            Action::WarmCache { trigger, reason } => {
                let top_n = top_clinics(tier, ctx, secrets).await;
                let run = warm::warm_cache(
                    &ctx.http,
                    &tier.spec.warming,
                    secrets.warm_token.as_ref(),
                    &top_n,
                    *trigger,
                    reason,
                    Backoff::default(),
                    now,
                )
                .await;
                run.record
            }
            Action::RemediateRedis { level, reason } => match &secrets.redis_url {
                Some(url) => {
                    let run = remediate_redis(
                        &tier.spec.redis,
                        url,
                        *level,
                        reason,
                        false,
                        now,
                        &ctx.stop,
                    )
                    .await;
                    done.remediation = Some(run.outcome);
                    run.record
                }
                None => no_redis(now, action),
            },
            Action::AuditRedis { reason } => match &secrets.redis_url {
                Some(url) => {
                    let run = audit_redis(&tier.spec.redis, url, reason, now, &ctx.stop).await;
                    if run.outcome.is_some() {
                        done.audit = run.outcome;
                    }
                    run.record
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
                    });
                let notify_ctx = notify::Context {
                    namespace: &namespace,
                    tier: &name,
                    now,
                    incident,
                    observed: Some(observation),
                    mitigations: &decision.mitigations,
                };
                let outcome = notify::notify(
                    &ctx.http,
                    &secrets.webhooks,
                    n,
                    &notify_ctx,
                    NOTIFY_TIMEOUT,
                    NOTIFY_RETRIES,
                    Backoff::default(),
                )
                .await;
                outcome.record(now, action.reason())
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
        count(ctx, record.action, record.outcome);
        announce(ctx, &regarding, &record).await;
        done.push(record);
    }
    done
}

fn count(ctx: &Context, action: ActionKind, outcome: ActionOutcome) {
    ctx.metrics
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
async fn announce(
    ctx: &Context,
    regarding: &k8s_openapi::api::core::v1::ObjectReference,
    record: &ActionRecord,
) {
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
    ctx.events
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

/// The busiest clinics by `spec.warming.topN`, when warming has no fixed clinic list. An
/// unanswered query warms nothing rather than guessing.
async fn top_clinics(tier: &MemoryTier, ctx: &Context, secrets: &ActSecrets) -> Vec<i64> {
    let warming = &tier.spec.warming;
    let (Some(top), Some(prometheus)) = (&warming.top_n, &secrets.prometheus) else {
        return Vec::new();
    };
    if !warming.clinic_ids.is_empty() {
        return Vec::new();
    }
    let client = match PrometheusClient::new(
        ctx.http.clone(),
        &prometheus.url,
        prometheus.auth.clone(),
        tier.spec.metrics.timeout.as_std(),
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "top-N query: bad Prometheus URL");
            return Vec::new();
        }
    };
    match client.query(&top.query).await {
        Ok(InstantValue::Vector(mut samples)) => {
            samples.retain(|s| s.value.is_finite());
            samples.sort_by(|a, b| b.value.total_cmp(&a.value));
            samples
                .iter()
                .filter_map(|s| s.labels.get(&top.label)?.parse::<i64>().ok())
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
