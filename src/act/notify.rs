//! Notifications: the runbooks' communication template, filled in, sent to webhooks in Slack,
//! PagerDuty Events v2 or generic JSON format.
//!
//! Each webhook is tried on its own, with retries; a failed notification is recorded in the
//! outcome and never stops anything else: [`notify`] cannot fail.

use std::fmt::Write as _;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};

use super::http::{Backoff, Delivery, post_json};
use super::record;
use crate::api::{
    ActionKind, ActionOutcome, ActionRecord, IncidentSummary, Mitigation, Observation, Runbook,
    Signal, SignalValue, WebhookFormat,
};
use crate::policy::{Notification, NotifyKind};
use crate::secret::SecretString;

/// A webhook with its secrets resolved.
#[derive(Clone, Debug)]
pub struct ResolvedWebhook {
    pub name: String,
    pub format: WebhookFormat,
    /// The URL (a secret: Slack webhook URLs carry their credential).
    pub url: SecretString,
    /// PagerDuty's routing key.
    pub routing_key: Option<SecretString>,
    /// Levels sent to this webhook; empty means every level.
    pub levels: Vec<u8>,
}

impl ResolvedWebhook {
    pub fn wants(&self, level: u8) -> bool {
        self.levels.is_empty() || self.levels.contains(&level)
    }
}

/// What else is known when the message is written.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub namespace: &'a str,
    pub tier: &'a str,
    pub now: Timestamp,
    /// The incident as status records it (its timeline fills the message's).
    pub incident: Option<&'a IncidentSummary>,
    /// The last observation (the impact as far as signals tell).
    pub observed: Option<&'a Observation>,
    /// Mitigations in force.
    pub mitigations: &'a [Mitigation],
}

/// The runbooks' communication template, filled in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Communication {
    pub subject: String,
    pub timeline: Vec<String>,
    pub impact: Vec<String>,
    pub next_steps: Vec<String>,
    pub status: String,
}

fn hhmm(at: Timestamp) -> String {
    at.strftime("%H:%M UTC").to_string()
}

/// The incident's measured impact (the share of users affected, failed requests, the peaks),
/// then what the signals said at the last reading and the mitigations in force.
pub fn impact_lines(
    incident: Option<&IncidentSummary>,
    observed: Option<&Observation>,
    mitigations: &[Mitigation],
) -> Vec<String> {
    let mut lines = match incident.and_then(|i| i.impact.as_ref()) {
        Some(impact) => crate::policy::impact::lines(impact),
        None => vec![
            "Share of users affected and failed requests: not measured (no reading was taken during the incident)"
                .to_owned(),
        ],
    };
    if let Some(o) = observed {
        let signals: Vec<String> = Signal::ALL
            .iter()
            .filter(|s| s.in_reports())
            .filter_map(|s| {
                Some(match o.get(*s)? {
                    SignalValue::Number(v) => format!("{} {v:.1}{}", s.title(), s.unit().suffix()),
                    other => format!("{} {other}", s.title()),
                })
            })
            .collect();
        if !signals.is_empty() {
            lines.push(format!("Signals at last reading: {}", signals.join(", ")));
        }
    }
    if observed.is_none() {
        lines.push("No signal readings available".to_owned());
    }
    for m in mitigations {
        let overrides = m
            .overrides
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ");
        lines.push(format!("Mitigation {} in force: {overrides}", m.name));
    }
    lines
}

/// Fill in the template.
pub fn communication(n: &Notification, ctx: &Context<'_>) -> Communication {
    let title = n.runbook.title();
    let subject = format!("[INCIDENT] {title} - {}/{}", ctx.namespace, ctx.tier);
    let mut timeline: Vec<String> = match ctx.incident {
        Some(incident) if !incident.timeline.is_empty() => incident
            .timeline
            .iter()
            .map(|e| format!("{} - {}", hhmm(e.at), e.what))
            .collect(),
        Some(incident) => vec![format!(
            "{} - Issue detected: {}",
            hhmm(incident.started_at),
            n.trigger
        )],
        None => vec![format!("{} - Issue detected: {}", hhmm(ctx.now), n.trigger)],
    };
    let now_line = match n.kind {
        NotifyKind::Opened => None,
        NotifyKind::Escalated => Some(format!(
            "{} - Escalated to level {}: {}",
            hhmm(ctx.now),
            n.level,
            n.escalated_because.as_deref().unwrap_or("not resolved yet")
        )),
        NotifyKind::Resolved => Some(format!("{} - Resolved", hhmm(ctx.now))),
        NotifyKind::Diagnosed => Some(format!(
            "{} - Diagnosis: {}",
            hhmm(ctx.now),
            n.escalated_because.as_deref().unwrap_or("see the incident")
        )),
    };
    timeline.extend(now_line);
    let report = format!(
        "tierguard report --namespace {} {} --incident {}",
        ctx.namespace, ctx.tier, n.incident_id
    );
    let next_steps = match n.kind {
        NotifyKind::Opened | NotifyKind::Escalated | NotifyKind::Diagnosed => {
            let mut steps = vec![
                format!(
                    "Automatic remediation under way ({title} runbook): {}",
                    n.message
                ),
                format!("Level {} responder: follow the {title} runbook", n.level),
            ];
            if let Some(diagnosis) = ctx.incident.and_then(|i| i.diagnosis.as_ref()) {
                steps.insert(0, format!("Diagnosis: {diagnosis}"));
            }
            if !n.escalation_plan.is_empty() {
                steps.push(format!("Escalation: {}", n.escalation_plan));
            }
            steps.push(format!("Incident id: {}", n.incident_id));
            steps
        }
        NotifyKind::Resolved => {
            let mut steps = vec![
                "Root cause investigation in progress".to_owned(),
                format!("Incident report: {report}"),
            ];
            if n.runbook == Runbook::CanaryRollback {
                steps.push("Re-deployment timeline: TBD (resuming needs approval)".to_owned());
            }
            steps
        }
    };
    let status = match n.kind {
        NotifyKind::Opened => "MITIGATING".to_owned(),
        NotifyKind::Escalated => format!("ESCALATED (level {})", n.level),
        NotifyKind::Resolved => "RESOLVED".to_owned(),
        NotifyKind::Diagnosed => "INVESTIGATING (diagnosed)".to_owned(),
    };
    Communication {
        subject,
        timeline,
        impact: impact_lines(ctx.incident, ctx.observed, ctx.mitigations),
        next_steps,
        status,
    }
}

impl Communication {
    /// The template as text.
    pub fn text(&self) -> String {
        let mut out = format!("Subject: {}\n\nTimeline:\n", self.subject);
        for line in &self.timeline {
            let _ = writeln!(out, "- {line}");
        }
        out.push_str("\nImpact:\n");
        for line in &self.impact {
            let _ = writeln!(out, "- {line}");
        }
        out.push_str("\nNext Steps:\n");
        for line in &self.next_steps {
            let _ = writeln!(out, "- {line}");
        }
        let _ = write!(out, "\nStatus: {}", self.status);
        out
    }
}

/// Where the project's documentation lives; PagerDuty events link to its runbook sections.
pub const DOCS_URL: &str = "https://github.com/tierguard/tierguard/blob/main/docs";

/// The documentation section of a runbook (docs/runbooks.md has one anchor per runbook).
pub fn runbook_url(runbook: Runbook) -> String {
    format!(
        "{DOCS_URL}/runbooks.md#{}",
        runbook.as_str().to_ascii_lowercase()
    )
}

/// Slack's escaping for message text: `&`, `<` and `>` only, so that a breaker or tier named
/// `<!channel>` is shown, never acted on as a mention or a link.
pub fn slack_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Slack's limits on a header's and a section's text.
const SLACK_HEADER_CHARS: usize = 150;
const SLACK_SECTION_CHARS: usize = 3000;

/// A Slack message: Block Kit blocks (a header, one section per part of the template, the status
/// and incident id as context) and the whole template as the text fallback for notifications and
/// clients without blocks. Every mrkdwn text is escaped; the header is plain text, which Slack
/// never reads as a mention.
fn slack_payload(n: &Notification, message: &Communication) -> Value {
    let section = |title: &str, lines: &[String]| {
        let body: String = lines
            .iter()
            .map(|l| format!("\u{2022} {}", slack_escape(l)))
            .collect::<Vec<_>>()
            .join("\n");
        json!({
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": record::cut(&format!("*{title}*\n{body}"), SLACK_SECTION_CHARS),
            }
        })
    };
    json!({
        "text": record::cut(&slack_escape(&message.text()), SLACK_SECTION_CHARS),
        "blocks": [
            {
                "type": "header",
                "text": {
                    "type": "plain_text",
                    "text": record::cut(&message.subject, SLACK_HEADER_CHARS),
                }
            },
            section("Timeline", &message.timeline),
            section("Impact", &message.impact),
            section("Next Steps", &message.next_steps),
            {
                "type": "context",
                "elements": [{
                    "type": "mrkdwn",
                    "text": record::cut(
                        &format!(
                            "Status: *{}* \u{00b7} incident {} \u{00b7} level {}",
                            slack_escape(&message.status),
                            slack_escape(&n.incident_id),
                            n.level
                        ),
                        SLACK_SECTION_CHARS,
                    ),
                }]
            }
        ]
    })
}

/// PagerDuty severity by escalation level.
pub fn pagerduty_severity(level: u8) -> &'static str {
    match level {
        0 | 1 => "warning",
        2 => "error",
        _ => "critical",
    }
}

/// The JSON body for one webhook.
pub fn payload(
    webhook: &ResolvedWebhook,
    n: &Notification,
    ctx: &Context<'_>,
    message: &Communication,
) -> Value {
    match webhook.format {
        WebhookFormat::Slack => slack_payload(n, message),
        WebhookFormat::PagerDuty => {
            use crate::secret::ExposeSecret;
            let routing_key = webhook
                .routing_key
                .as_ref()
                .map(|k| k.expose_secret().to_owned())
                .unwrap_or_default();
            if n.kind == NotifyKind::Resolved {
                return json!({
                    "routing_key": routing_key,
                    "event_action": "resolve",
                    "dedup_key": n.incident_id,
                });
            }
            let summary = record::cut(&format!("{}: {}", message.subject, n.trigger), 1024);
            let report = format!(
                "kubectl tierguard report {} -n {} --incident {}",
                ctx.tier, ctx.namespace, n.incident_id
            );
            json!({
                "routing_key": routing_key,
                "event_action": "trigger",
                "dedup_key": n.incident_id,
                "client": "tierguard",
                "links": [
                    {
                        "href": runbook_url(n.runbook),
                        "text": format!("Runbook: {}", n.runbook.title()),
                    },
                    {
                        "href": format!("{DOCS_URL}/runbooks.md#incident-reports"),
                        "text": format!("Incident report: {report}"),
                    },
                ],
                "payload": {
                    "summary": summary,
                    "timestamp": ctx.now,
                    "source": format!("tierguard/{}/{}", ctx.namespace, ctx.tier),
                    "severity": pagerduty_severity(n.level),
                    "component": ctx.tier,
                    "group": ctx.namespace,
                    "class": n.runbook,
                    "custom_details": {
                        "level": n.level,
                        "kind": n.kind,
                        "runbook": n.runbook,
                        "trigger": n.trigger,
                        "message": n.message,
                        "timeline": message.timeline,
                        "impact": message.impact,
                        "next_steps": message.next_steps,
                        "status": message.status,
                        "report": report,
                    }
                }
            })
        }
        WebhookFormat::Generic => json!({
            "namespace": ctx.namespace,
            "tier": ctx.tier,
            "at": ctx.now,
            "level": n.level,
            "kind": n.kind,
            "incidentId": n.incident_id,
            "runbook": n.runbook,
            "trigger": n.trigger,
            "message": n.message,
            "subject": message.subject,
            "timeline": message.timeline,
            "impact": message.impact,
            "nextSteps": message.next_steps,
            "status": message.status,
            "text": message.text(),
        }),
    }
}

/// How one webhook went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookOutcome {
    pub name: String,
    /// False when the webhook's level filter excluded this notification.
    pub sent: bool,
    #[serde(flatten)]
    pub delivery: Delivery,
}

/// How one notification went, webhook by webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifyOutcome {
    pub level: u8,
    pub kind: NotifyKind,
    pub incident_id: String,
    pub webhooks: Vec<WebhookOutcome>,
}

impl NotifyOutcome {
    /// ok when every webhook that wanted it got it; failed when one did not; skipped when no
    /// webhook wanted it.
    pub fn outcome(&self) -> ActionOutcome {
        let sent: Vec<_> = self.webhooks.iter().filter(|w| w.sent).collect();
        if sent.is_empty() {
            ActionOutcome::Skipped
        } else if sent.iter().all(|w| w.delivery.ok) {
            ActionOutcome::Ok
        } else {
            ActionOutcome::Failed
        }
    }

    pub fn summary(&self) -> String {
        if self.webhooks.is_empty() {
            return "no webhooks configured".to_owned();
        }
        self.webhooks
            .iter()
            .map(|w| {
                if w.sent {
                    format!("{}: {}", w.name, w.delivery.describe())
                } else {
                    format!("{}: not for level {}", w.name, self.level)
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The action record for status.
    pub fn record(&self, at: Timestamp, reason: &str) -> ActionRecord {
        record::action(
            at,
            ActionKind::Notify,
            reason,
            self.outcome(),
            Some(self.summary()),
        )
    }
}

/// Send one notification to every webhook that wants its level, concurrently.
pub async fn notify(
    http: &reqwest::Client,
    webhooks: &[ResolvedWebhook],
    n: &Notification,
    ctx: &Context<'_>,
    timeout: Duration,
    retries: u32,
    backoff: Backoff,
) -> NotifyOutcome {
    let message = communication(n, ctx);
    let sends = webhooks.iter().map(|webhook| {
        let message = &message;
        async move {
            if !webhook.wants(n.level) {
                return WebhookOutcome {
                    name: webhook.name.clone(),
                    sent: false,
                    delivery: Delivery::default(),
                };
            }
            if webhook.format == WebhookFormat::PagerDuty && webhook.routing_key.is_none() {
                return WebhookOutcome {
                    name: webhook.name.clone(),
                    sent: true,
                    delivery: Delivery {
                        error: Some("PagerDuty webhook without a routing key".into()),
                        ..Delivery::default()
                    },
                };
            }
            let body = payload(webhook, n, ctx, message);
            let secrets: Vec<&SecretString> = webhook.routing_key.iter().collect();
            let mut delivery =
                post_json(http, &webhook.url, None, &body, timeout, retries, backoff).await;
            delivery.error = delivery.error.map(|e| crate::secret::scrub(&e, &secrets));
            tracing::info!(
                webhook = %webhook.name,
                level = n.level,
                incident = %n.incident_id,
                ok = delivery.ok,
                "notification sent"
            );
            WebhookOutcome {
                name: webhook.name.clone(),
                sent: true,
                delivery,
            }
        }
    });
    NotifyOutcome {
        level: n.level,
        kind: n.kind,
        incident_id: n.incident_id.clone(),
        webhooks: futures::future::join_all(sends).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TimelineEntry;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn notification(kind: NotifyKind, level: u8) -> Notification {
        Notification {
            level,
            kind,
            incident_id: "2026-11-25-0312-canary-rollback".into(),
            runbook: Runbook::CanaryRollback,
            trigger: "P50 latency 1250 ms > 1000 ms for 10m".into(),
            escalated_because: (kind == NotifyKind::Escalated)
                .then(|| "unresolved 15m after its automatic response started".into()),
            escalation_plan: "level 3 (technical lead) is notified if it is still unresolved 30m after its automatic response started".into(),
            message: "canary reduced to 5%".into(),
        }
    }

    #[test]
    fn the_template_is_filled_from_the_incident() {
        let incident = IncidentSummary {
            id: "2026-11-25-0312-canary-rollback".into(),
            runbook: Runbook::CanaryRollback,
            trigger: "P50 latency".into(),
            started_at: ts("2026-11-25T03:12:00Z"),
            resolved_at: None,
            escalation_level: 1,
            findings: vec![],
            escalation: None,
            timeline: vec![
                TimelineEntry {
                    at: ts("2026-11-25T03:12:00Z"),
                    what: "Anomaly detected: P50 latency 1250 ms".into(),
                },
                TimelineEntry {
                    at: ts("2026-11-25T03:12:30Z"),
                    what: "Traffic reduced to 5%".into(),
                },
            ],
            diagnosis: None,
            impact: Some(crate::api::IncidentImpact {
                requests: 12000.0,
                affected_requests: 1200.0,
                failed_requests: 84.4,
                measured_seconds: 1680.0,
                samples: 56,
                ..crate::api::IncidentImpact::new(crate::api::ImpactScope::Canary)
            }),
            report: None,
        };
        let observed = Observation {
            p50_latency_ms: Some(1250.0),
            error_rate_percent: Some(1.5),
            ..Observation::default()
        };
        let ctx = Context {
            namespace: "clinic",
            tier: "backend",
            now: ts("2026-11-25T03:40:00Z"),
            incident: Some(&incident),
            observed: Some(&observed),
            mitigations: &[],
        };
        let text = communication(&notification(NotifyKind::Resolved, 2), &ctx).text();
        let expected_start = "Subject: [INCIDENT] Canary Rollback - clinic/backend\n\nTimeline:\n\
             - 03:12 UTC - Anomaly detected: P50 latency 1250 ms\n\
             - 03:12 UTC - Traffic reduced to 5%\n\
             - 03:40 UTC - Resolved\n\nImpact:\n\
             - 10% of users affected (the canary's share of the traffic: ~1200 of ~12000 requests during the incident)\n\
             - Failed requests: ~84, over 28m0s of readings\n\
             - Signals at last reading: P50 latency 1250.0 ms, error rate 1.5%\n";
        assert!(text.starts_with(expected_start), "{text}");
        assert!(text.contains("Next Steps:\n- Root cause investigation in progress\n"));
        assert!(text.contains(
            "tierguard report --namespace clinic backend --incident 2026-11-25-0312-canary-rollback"
        ));
        assert!(text.ends_with("Status: RESOLVED"));
        let escalated = communication(&notification(NotifyKind::Escalated, 2), &ctx);
        assert_eq!(escalated.status, "ESCALATED (level 2)");
        assert!(
            escalated.timeline.last().unwrap().ends_with(
                "Escalated to level 2: unresolved 15m after its automatic response started"
            ),
            "{escalated:?}"
        );
        // The plan says who is next.
        assert!(escalated.next_steps.iter().any(|s| s
            == "Escalation: level 3 (technical lead) is notified if it is still unresolved 30m after its automatic response started"));
    }

    #[test]
    fn pagerduty_payloads_follow_events_v2() {
        let webhook = ResolvedWebhook {
            name: "pd".into(),
            format: WebhookFormat::PagerDuty,
            url: SecretString::from("http://127.0.0.1:1/v2/enqueue"),
            routing_key: Some(SecretString::from("R0UTING")),
            levels: vec![],
        };
        let ctx = Context {
            namespace: "ns",
            tier: "t",
            now: ts("2026-11-25T03:40:00Z"),
            incident: None,
            observed: None,
            mitigations: &[],
        };
        for (level, severity) in [(1, "warning"), (2, "error"), (3, "critical")] {
            let n = notification(NotifyKind::Opened, level);
            let body = payload(&webhook, &n, &ctx, &communication(&n, &ctx));
            assert_eq!(body["routing_key"], "R0UTING");
            assert_eq!(body["event_action"], "trigger");
            assert_eq!(body["dedup_key"], n.incident_id);
            assert_eq!(body["payload"]["severity"], severity);
            assert_eq!(body["payload"]["source"], "tierguard/ns/t");
            assert!(
                body["payload"]["summary"]
                    .as_str()
                    .unwrap()
                    .starts_with("[INCIDENT] Canary Rollback")
            );
            assert_eq!(body["payload"]["timestamp"], "2026-11-25T03:40:00Z");
            assert_eq!(body["client"], "tierguard");
            let links = body["links"].as_array().unwrap();
            assert_eq!(
                links[0]["href"],
                format!("{DOCS_URL}/runbooks.md#canaryrollback")
            );
            assert!(
                links[1]["text"].as_str().unwrap().contains(
                    "kubectl tierguard report t -n ns --incident 2026-11-25-0312-canary-rollback"
                ),
                "{links:?}"
            );
        }
        let n = notification(NotifyKind::Resolved, 1);
        let body = payload(&webhook, &n, &ctx, &communication(&n, &ctx));
        assert_eq!(
            body,
            json!({"routing_key": "R0UTING", "event_action": "resolve", "dedup_key": n.incident_id})
        );
    }

    #[test]
    fn slack_messages_escape_what_slack_would_act_on_and_carry_blocks() {
        let webhook = ResolvedWebhook {
            name: "slack".into(),
            format: WebhookFormat::Slack,
            url: SecretString::from("http://127.0.0.1:1/hook"),
            routing_key: None,
            levels: vec![],
        };
        let ctx = Context {
            namespace: "clinic",
            tier: "backend",
            now: ts("2026-11-25T03:40:00Z"),
            incident: None,
            observed: None,
            mitigations: &[],
        };
        let mut n = notification(NotifyKind::Opened, 1);
        n.trigger = "breaker <!channel> open & <https://evil.example|click>".into();
        let body = payload(&webhook, &n, &ctx, &communication(&n, &ctx));
        let text = body["text"].as_str().unwrap();
        assert!(
            text.contains("breaker &lt;!channel&gt; open &amp; &lt;https://evil.example|click&gt;"),
            "{text}"
        );
        let blocks = body["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        for block in &blocks[1..] {
            let all = block.to_string();
            assert!(!all.contains("<!") && !all.contains("<http"), "{all}");
        }
        assert!(
            blocks[1]["text"]["text"]
                .as_str()
                .unwrap()
                .starts_with("*Timeline*")
        );
        assert!(
            blocks[1]["text"]["text"]
                .as_str()
                .unwrap()
                .contains("&lt;!channel&gt;")
        );
    }

    #[test]
    fn every_runbook_link_has_its_section_in_the_docs() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/runbooks.md"))
            .unwrap();
        for &runbook in Runbook::ALL {
            assert!(
                doc.contains(&format!("\n## {runbook}\n")),
                "docs/runbooks.md lacks ## {runbook}"
            );
            assert!(
                runbook_url(runbook).ends_with(&format!("#{}", runbook.as_str().to_lowercase()))
            );
        }
        assert!(doc.contains("\n## Incident reports\n"));
    }

    #[test]
    fn titles_and_level_filters() {
        assert_eq!(Runbook::CircuitBreakerOpen.title(), "Circuit Breaker Open");
        let w = ResolvedWebhook {
            name: "x".into(),
            format: WebhookFormat::Slack,
            url: SecretString::from("http://x"),
            routing_key: None,
            levels: vec![2, 3],
        };
        assert!(!w.wants(1) && w.wants(2));
        assert!(
            ResolvedWebhook {
                levels: vec![],
                ..w
            }
            .wants(1)
        );
    }
}
