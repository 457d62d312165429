//! Incident reports (the rollback runbook's phase 4, for every runbook): Markdown with the date,
//! duration, trigger, timeline, impact, root cause to be determined, action items and the
//! post-incident checklist, kept in the ConfigMap `<tier>-incidents`.
//!
//! The ConfigMap holds one key per incident (`<id>.md`) and an `index` key listing the ids, newest
//! first. It is bounded: at most [`MAX_REPORTS`] reports and [`MAX_TOTAL_BYTES`] of data (well
//! under the 1 MiB object limit); the oldest reports go first. Writing the same incident again
//! replaces its report in place, so recording is idempotent.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use jiff::{Timestamp, ToSpan};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};

use super::configmap::{
    KubeActError, check_may_write, labels, may_write, owner_reference, tier_namespace,
};
use super::notify::impact_lines;
use super::record;
use crate::api::{
    ActionKind, ActionOutcome, ActionRecord, FIELD_MANAGER, IncidentSummary, MemoryTier,
    Mitigation, Observation, Runbook,
};

/// The incidents ConfigMap's name suffix.
pub const INCIDENTS_SUFFIX: &str = "-incidents";
/// The key listing the stored ids, newest first, one per line.
pub const INDEX_KEY: &str = "index";
/// Most reports kept.
pub const MAX_REPORTS: usize = 20;
/// Longest single report; a longer one is cut.
pub const MAX_REPORT_BYTES: usize = 64 * 1024;
/// Most report bytes kept in the ConfigMap.
pub const MAX_TOTAL_BYTES: usize = 512 * 1024;

/// The incidents ConfigMap of a tier.
pub fn incidents_config_map_name(tier: &str) -> String {
    format!("{tier}{INCIDENTS_SUFFIX}")
}

/// The data key of an incident: its id with anything a ConfigMap key may not hold replaced by `-`.
pub fn data_key(id: &str) -> String {
    let clean: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(240)
        .collect();
    format!("{clean}.md")
}

/// What else is known when the report is written.
#[derive(Clone, Copy, Debug)]
pub struct ReportContext<'a> {
    pub namespace: &'a str,
    pub tier: &'a str,
    /// When the report is written (the duration of an open incident runs to here).
    pub now: Timestamp,
    pub observed: Option<&'a Observation>,
    pub mitigations: &'a [Mitigation],
}

fn day_time(at: Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

/// The runbook's "X minutes"; under a minute, the seconds (a short incident is not "0 minutes").
fn length(from: Timestamp, to: Timestamp) -> String {
    let seconds = (to.as_second() - from.as_second()).max(0);
    if seconds < 60 {
        plural(seconds, "second")
    } else {
        plural(seconds / 60, "minute")
    }
}

fn plural(n: i64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The report, as Markdown.
pub fn render(incident: &IncidentSummary, ctx: &ReportContext<'_>) -> String {
    let title = incident.runbook.title();
    let mut md = String::new();
    let _ = writeln!(md, "# Incident: {title}");
    let _ = writeln!(md);
    let _ = writeln!(md, "**Tier:** {}/{}  ", ctx.namespace, ctx.tier);
    let _ = writeln!(md, "**Incident:** {}  ", incident.id);
    let _ = writeln!(md, "**Date:** {}  ", day_time(incident.started_at));
    let duration = match incident.resolved_at {
        Some(end) => length(incident.started_at, end),
        None => format!("ongoing ({} so far)", length(incident.started_at, ctx.now)),
    };
    let _ = writeln!(md, "**Duration:** {duration}  ");
    let _ = writeln!(md, "**Trigger:** {}  ", incident.trigger);
    let _ = writeln!(
        md,
        "**Highest escalation level notified:** {}{}",
        incident.escalation_level,
        if incident.escalation.is_some() {
            "  "
        } else {
            ""
        }
    );
    if let Some(escalation) = &incident.escalation {
        let _ = writeln!(md, "**Escalation:** {escalation}");
    }

    let _ = writeln!(md, "\n## Timeline\n");
    let start_day = incident.started_at.strftime("%Y-%m-%d").to_string();
    let when = |at: Timestamp| {
        if at.strftime("%Y-%m-%d").to_string() == start_day {
            at.strftime("%H:%M UTC").to_string()
        } else {
            day_time(at)
        }
    };
    if incident.timeline.is_empty() {
        let _ = writeln!(
            md,
            "- {} - Anomaly detected: {}",
            when(incident.started_at),
            incident.trigger
        );
    }
    for entry in &incident.timeline {
        let _ = writeln!(md, "- {} - {}", when(entry.at), entry.what);
    }
    if let Some(end) = incident.resolved_at
        && !incident.timeline.iter().any(|e| e.at == end)
    {
        let _ = writeln!(md, "- {} - Resolved", when(end));
    }

    if !incident.findings.is_empty() {
        let _ = writeln!(md, "\n## Diagnosis\n");
        for finding in &incident.findings {
            let _ = writeln!(md, "- {finding}");
        }
    }

    let _ = writeln!(md, "\n## Root Cause\n");
    if let Some(diagnosis) = &incident.diagnosis {
        let _ = writeln!(md, "Diagnosis by tierguard: {diagnosis}.\n");
        let _ = writeln!(md, "To be confirmed during post-mortem.");
    } else {
        let _ = writeln!(md, "To be determined during post-mortem.");
    }

    let _ = writeln!(md, "\n## Impact\n");
    for line in impact_lines(Some(incident), ctx.observed, ctx.mitigations) {
        let _ = writeln!(md, "- {line}");
    }
    let offsets = crate::policy::impact::since_detection(incident.started_at, &incident.timeline);
    if !offsets.is_empty() {
        let _ = writeln!(md, "\n### Time from detection\n");
        for line in offsets {
            let _ = writeln!(md, "- {line}");
        }
    }

    let _ = writeln!(md, "\n## Action Items\n");
    let mut items = vec![
        "Root cause analysis",
        "Fix implemented",
        "Testing completed",
    ];
    if incident.runbook == Runbook::CanaryRollback {
        items.push("Re-deployment plan approved");
    } else {
        items.push("Prevention steps of the runbook reviewed");
    }
    for item in items {
        let _ = writeln!(md, "- [ ] {item}");
    }

    let _ = writeln!(md, "\n## Post-Incident Checklist\n");
    let post_mortem_by = incident
        .resolved_at
        .map(|end| {
            let due = end.checked_add(48.hours()).unwrap_or(end);
            format!(" — by {}", day_time(due))
        })
        .unwrap_or_default();
    let checklist = [
        (
            "Verify all metrics returned to normal",
            false,
            String::new(),
        ),
        (
            "Document incident timeline",
            true,
            " — recorded above by tierguard; add what it cannot see".to_owned(),
        ),
        ("Identify root cause", false, String::new()),
        (
            "Create action items with owners and due dates",
            false,
            String::new(),
        ),
        ("Update runbooks based on learnings", false, String::new()),
        (
            "Schedule post-mortem meeting (within 48 hours)",
            false,
            post_mortem_by,
        ),
        (
            "Communicate resolution to stakeholders",
            false,
            String::new(),
        ),
        (
            "Review and update monitoring/alerts if needed",
            false,
            String::new(),
        ),
    ];
    for (item, done, note) in checklist {
        let _ = writeln!(md, "- [{}] {item}{note}", if done { "x" } else { " " });
    }
    let _ = writeln!(
        md,
        "\n_Written by tierguard at {}; it rewrites this report while the incident evolves._",
        day_time(ctx.now)
    );
    cut_report(md)
}

fn cut_report(md: String) -> String {
    if md.len() <= MAX_REPORT_BYTES {
        return md;
    }
    let note = "\n\n_(report cut: it exceeded 64 KiB)_\n";
    let mut end = MAX_REPORT_BYTES - note.len();
    while !md.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{note}", &md[..end])
}

/// The stored reports, newest first: (id, Markdown).
pub type Reports = Vec<(String, String)>;

/// The reports an incidents ConfigMap holds, in index order. Keys the index does not name are
/// ignored; ids whose key is missing are dropped.
pub fn parse_reports(cm: &ConfigMap) -> Reports {
    let data = cm.data.clone().unwrap_or_default();
    let index = data.get(INDEX_KEY).cloned().unwrap_or_default();
    index
        .lines()
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .filter_map(|id| {
            data.get(&data_key(id))
                .map(|md| (id.to_owned(), md.clone()))
        })
        .collect()
}

/// Put a report in: an existing id is replaced where it stands, a new one goes first. Then the
/// oldest are dropped until at most `max_reports` and `max_bytes` remain; their ids are returned.
pub fn upsert(
    reports: &mut Reports,
    id: &str,
    markdown: String,
    max_reports: usize,
    max_bytes: usize,
) -> Vec<String> {
    match reports.iter_mut().find(|(i, _)| i == id) {
        Some(entry) => entry.1 = markdown,
        None => reports.insert(0, (id.to_owned(), markdown)),
    }
    let mut dropped = Vec::new();
    let size = |r: &Reports| {
        r.iter()
            .map(|(i, m)| i.len() * 2 + m.len() + 8)
            .sum::<usize>()
    };
    // The newest report always stays, whatever its size.
    while reports.len() > 1 && (reports.len() > max_reports || size(reports) > max_bytes) {
        if let Some((old, _)) = reports.pop() {
            dropped.push(old);
        }
    }
    dropped
}

/// The incidents ConfigMap holding `reports`, owned by the tier.
pub fn incidents_config_map(
    tier: &MemoryTier,
    reports: &Reports,
) -> Result<ConfigMap, KubeActError> {
    let namespace = tier_namespace(tier)?;
    let mut data = BTreeMap::new();
    let index: Vec<&str> = reports.iter().map(|(id, _)| id.as_str()).collect();
    data.insert(INDEX_KEY.to_owned(), index.join("\n"));
    for (id, md) in reports {
        data.insert(data_key(id), md.clone());
    }
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(incidents_config_map_name(&tier.name_any())),
            namespace: Some(namespace),
            labels: Some(labels(&tier.name_any())),
            owner_references: Some(vec![owner_reference(tier)?]),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..ConfigMap::default()
    })
}

/// What recording an incident did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncidentRecorded {
    /// `<configmap>/<key>`, for `IncidentSummary.report`.
    pub location: String,
    pub kept: usize,
    /// Older reports dropped to stay within the bounds.
    pub dropped: Vec<String>,
}

impl IncidentRecorded {
    pub fn record(&self, at: Timestamp, reason: &str) -> ActionRecord {
        let mut detail = format!("report in ConfigMap {} ({} kept)", self.location, self.kept);
        if !self.dropped.is_empty() {
            let _ = write!(detail, "; dropped the oldest: {}", self.dropped.join(", "));
        }
        record::action(
            at,
            ActionKind::RecordIncident,
            reason,
            ActionOutcome::Ok,
            Some(detail),
        )
    }
}

/// Write (or rewrite) an incident's report into `<tier>-incidents` by server-side apply.
pub async fn record_incident(
    client: &Client,
    tier: &MemoryTier,
    incident: &IncidentSummary,
    ctx: &ReportContext<'_>,
) -> Result<IncidentRecorded, KubeActError> {
    let namespace = tier_namespace(tier)?;
    let name = incidents_config_map_name(&tier.name_any());
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    // Its metadata first: the reports of a ConfigMap that is not ours are never read.
    check_may_write(client, tier, &name).await?;
    let existing = api
        .get_opt(&name)
        .await
        .map_err(|e| KubeActError::api("reading ConfigMap", &namespace, &name, e))?;
    if let Some(existing) = &existing {
        may_write(&existing.metadata, tier)?;
    }
    let mut reports = existing.as_ref().map(parse_reports).unwrap_or_default();
    let dropped = upsert(
        &mut reports,
        &incident.id,
        render(incident, ctx),
        MAX_REPORTS,
        MAX_TOTAL_BYTES,
    );
    let desired = incidents_config_map(tier, &reports)?;
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await
    .map_err(|e| KubeActError::api("applying ConfigMap", &namespace, &name, e))?;
    tracing::info!(configmap = %name, incident = %incident.id, "incident report written");
    Ok(IncidentRecorded {
        location: format!("{name}/{}", data_key(&incident.id)),
        kept: reports.len(),
        dropped,
    })
}

/// The reports stored for a tier, newest first (empty when there are none).
pub async fn read_reports(
    client: &Client,
    namespace: &str,
    tier: &str,
) -> Result<Reports, KubeActError> {
    let name = incidents_config_map_name(tier);
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = api
        .get_opt(&name)
        .await
        .map_err(|e| KubeActError::api("reading ConfigMap", namespace, &name, e))?;
    Ok(cm.as_ref().map(parse_reports).unwrap_or_default())
}

/// Incidents from a `tierguard simulate --output json` run: lines with `"type": "incident"` whose
/// `incident` object is an `IncidentSummary`. Later lines for the same id replace earlier ones;
/// the result is newest first. Other lines, and lines that do not parse, are skipped and counted.
pub fn incidents_from_simulation(text: &str) -> (Vec<IncidentSummary>, usize) {
    let mut incidents: Vec<IncidentSummary> = Vec::new();
    let mut unreadable = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            unreadable += 1;
            continue;
        };
        // `tierguard simulate --output json` carries the full incident on its `record-incident`
        // action lines; any line with an `incident` object is read, the last one of an id wins.
        let Some(object) = value.get("incident").filter(|i| i.is_object()) else {
            continue;
        };
        match serde_json::from_value::<IncidentSummary>(object.clone()) {
            Ok(incident) => match incidents.iter_mut().find(|i| i.id == incident.id) {
                Some(existing) => *existing = incident,
                None => incidents.push(incident),
            },
            Err(_) => unreadable += 1,
        }
    }
    incidents.sort_by_key(|i| std::cmp::Reverse(i.started_at));
    (incidents, unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TimelineEntry;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn incident(id: &str, resolved: bool) -> IncidentSummary {
        IncidentSummary {
            id: id.into(),
            runbook: Runbook::CanaryRollback,
            trigger: "P50 latency 1250 ms > 1000 ms for 10m".into(),
            started_at: ts("2026-11-25T03:12:00Z"),
            resolved_at: resolved.then(|| ts("2026-11-25T03:40:00Z")),
            findings: vec![],
            escalation_level: 2,
            escalation: Some("escalated to level 2 because unresolved 15m after its automatic response started; level 3 (technical lead) is notified if it is still unresolved 30m after its automatic response started".into()),
            timeline: vec![
                TimelineEntry {
                    at: ts("2026-11-25T03:12:00Z"),
                    what: "Anomaly detected".into(),
                },
                TimelineEntry {
                    at: ts("2026-11-25T03:12:30Z"),
                    what: "Rollback initiated: traffic reduced to 5%".into(),
                },
                TimelineEntry {
                    at: ts("2026-11-26T00:05:00Z"),
                    what: "System stable".into(),
                },
            ],
            diagnosis: None,
            impact: None,
            report: None,
        }
    }

    fn ctx() -> ReportContext<'static> {
        ReportContext {
            namespace: "clinic",
            tier: "backend",
            now: ts("2026-11-25T03:50:00Z"),
            observed: None,
            mitigations: &[],
        }
    }

    #[test]
    fn the_report_has_every_section_of_the_runbook() {
        let md = render(&incident("2026-11-25-0312-canary-rollback", true), &ctx());
        for needle in [
            "# Incident: Canary Rollback\n",
            "**Date:** 2026-11-25 03:12 UTC",
            "**Duration:** 28 minutes",
            "**Trigger:** P50 latency 1250 ms > 1000 ms for 10m",
            "**Escalation:** escalated to level 2 because unresolved 15m after its automatic response started; level 3",
            "## Timeline\n\n- 03:12 UTC - Anomaly detected\n- 03:12 UTC - Rollback initiated: traffic reduced to 5%\n- 2026-11-26 00:05 UTC - System stable\n- 03:40 UTC - Resolved\n",
            "## Root Cause\n\nTo be determined during post-mortem.",
            "## Impact\n\n- Share of users affected and failed requests: not measured (no reading was taken during the incident)\n- No signal readings available\n",
            "### Time from detection\n\n- +30s: Rollback initiated: traffic reduced to 5%\n- +20h53m0s: System stable\n",
            "- [ ] Re-deployment plan approved",
            "- [ ] Verify all metrics returned to normal",
            "- [x] Document incident timeline",
            "- [ ] Schedule post-mortem meeting (within 48 hours) — by 2026-11-27 03:40 UTC",
            "- [ ] Review and update monitoring/alerts if needed",
        ] {
            assert!(md.contains(needle), "missing {needle:?} in\n{md}");
        }
        let open = render(&incident("x", false), &ctx());
        assert!(open.contains("**Duration:** ongoing (38 minutes so far)"));
        assert!(!open.contains("Resolved\n"));
    }

    #[test]
    fn an_incident_shorter_than_a_minute_says_its_seconds() {
        let mut short = incident("x", true);
        short.resolved_at = Some(short.started_at + 42.seconds());
        let md = render(&short, &ctx());
        assert!(md.contains("**Duration:** 42 seconds"), "{md}");
        short.resolved_at = Some(short.started_at + 60.seconds());
        assert!(render(&short, &ctx()).contains("**Duration:** 1 minute  "));
    }

    #[test]
    fn storage_is_bounded_newest_first_and_idempotent() {
        let mut reports = Reports::new();
        for i in 0..5 {
            upsert(
                &mut reports,
                &format!("i{i}"),
                format!("report {i}"),
                3,
                1 << 20,
            );
        }
        let ids: Vec<_> = reports.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(ids, ["i4", "i3", "i2"]);
        // Rewriting an incident keeps its place and drops nothing.
        let dropped = upsert(&mut reports, "i3", "report 3, resolved".into(), 3, 1 << 20);
        assert!(dropped.is_empty());
        assert_eq!(reports[1], ("i3".into(), "report 3, resolved".into()));
        // The byte bound drops the oldest, never the newest.
        let dropped = upsert(&mut reports, "big", "x".repeat(1000), 10, 1050);
        assert_eq!(dropped, ["i2", "i3"]);
        let dropped = upsert(&mut reports, "huge", "y".repeat(5000), 10, 1050);
        assert_eq!(dropped, ["i4", "big"]);
        assert_eq!(reports.len(), 1);
    }

    #[test]
    fn the_config_map_round_trips_and_stays_under_the_limit() {
        let tier = crate::act::configmap::tests::tier();
        let mut reports = Reports::new();
        let long = IncidentSummary {
            timeline: (0..400)
                .map(|i| TimelineEntry {
                    at: ts("2026-11-25T03:12:00Z"),
                    what: format!("step {i}: {}", "detail ".repeat(20)),
                })
                .collect(),
            ..incident("a", true)
        };
        for i in 0..40 {
            let id = format!("2026-11-{:02}-0312-canary-rollback", i % 28 + 1);
            let md = render(
                &IncidentSummary {
                    id: id.clone(),
                    ..long.clone()
                },
                &ctx(),
            );
            assert!(md.len() <= MAX_REPORT_BYTES);
            upsert(
                &mut reports,
                &format!("{id}-{i}"),
                md,
                MAX_REPORTS,
                MAX_TOTAL_BYTES,
            );
        }
        let cm = incidents_config_map(&tier, &reports).unwrap();
        assert_eq!(cm.metadata.name.as_deref(), Some("backend-incidents"));
        assert_eq!(
            cm.metadata.owner_references.as_ref().unwrap()[0].uid,
            "1234-abcd"
        );
        let bytes = serde_json::to_vec(&cm).unwrap().len();
        assert!(bytes < 600 * 1024, "{bytes} bytes");
        let back = parse_reports(&cm);
        assert_eq!(back, reports);
        assert_eq!(back[0].0, "2026-11-12-0312-canary-rollback-39");
    }

    #[test]
    fn keys_are_valid_config_map_keys() {
        assert_eq!(
            data_key("2026-11-25-0312-canary-rollback"),
            "2026-11-25-0312-canary-rollback.md"
        );
        assert_eq!(data_key("a/b c:d"), "a-b-c-d.md");
    }

    #[test]
    fn simulation_lines_are_read_leniently() {
        let first = serde_json::to_value(incident("sim-1", false)).unwrap();
        let resolved = serde_json::to_value(incident("sim-1", true)).unwrap();
        let text = format!(
            "{{\"t\": \"0s\", \"type\": \"transition\", \"to\": \"Degraded\"}}\nnot json\n\
             {{\"t\": \"60s\", \"type\": \"incident\", \"incident\": {first}}}\n\
             {{\"t\": \"90s\", \"type\": \"incident\", \"incident\": {{\"id\": 3}}}}\n\
             {{\"t\": \"600s\", \"type\": \"incident\", \"incident\": {resolved}}}\n"
        );
        let (incidents, unreadable) = incidents_from_simulation(&text);
        assert_eq!(unreadable, 2);
        assert_eq!(incidents.len(), 1);
        assert!(incidents[0].resolved_at.is_some(), "the later line wins");
    }
}
