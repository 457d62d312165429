//! The Kubernetes actuators against the in-process API server (tests/support/apiserver) through
//! kube's real client: the effective-config ConfigMap, the rollout restart, the incidents
//! ConfigMap and `tierguard report` from the cluster.

use crate::support;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tierguard::act::configmap::{
    CONFIG_HASH_ANNOTATION, KubeActError, MITIGATIONS_ANNOTATION, apply_config,
};
use tierguard::act::report::{ReportContext, read_reports, record_incident};
use tierguard::act::restart::{
    RESTARTED_AT_ANNOTATION, RESTARTED_FOR_HASH_ANNOTATION, restart_workload,
};
use tierguard::api::{
    IncidentSummary, MemoryTier, Mitigation, TimelineEntry, WorkloadKind, WorkloadRef,
};
use tierguard::policy::effective;

const NS: &str = "clinic";

async fn create_tier(client: &Client) -> MemoryTier {
    let tier: MemoryTier = serde_json::from_value(json!({
        "apiVersion": "tierguard.dev/v1alpha1",
        "kind": "MemoryTier",
        "metadata": {"name": "backend", "namespace": NS},
        "spec": {"target": {"configMapName": "backend-flags"}}
    }))
    .unwrap();
    Api::<MemoryTier>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &tier)
        .await
        .expect("create the MemoryTier")
}

fn mitigation(name: tierguard::api::MitigationName, overrides: &[(&str, &str)]) -> Mitigation {
    Mitigation {
        name,
        reason: format!("{name}: P50 1250 ms > 1000 ms for 10m"),
        since: "2026-11-25T03:12:00Z".parse().unwrap(),
        until: "verified".into(),
        overrides: overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[tokio::test]
async fn the_effective_config_is_applied_owned_and_idempotent() {
    let server = support::api_server().await;
    let client = server.client();
    let tier = create_tier(&client).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);

    let (config, _) = effective::render(&tier.spec, &[]);
    let hash = effective::hash(&config);
    let first = apply_config(&client, &tier, &config, &hash, &[])
        .await
        .unwrap();
    assert!(first.changed());
    assert_eq!(first.previous_hash, None);
    let cm = configmaps.get("backend-flags").await.unwrap();
    assert_eq!(cm.data.as_ref().unwrap(), &config);
    assert_eq!(cm.annotations()[CONFIG_HASH_ANNOTATION], hash);
    assert_eq!(cm.annotations()[MITIGATIONS_ANNOTATION], "{}");
    assert_eq!(cm.labels()["app.kubernetes.io/managed-by"], "tierguard");
    assert_eq!(cm.labels()["tierguard.dev/tier"], "backend");
    let owner = &cm.owner_references()[0];
    assert_eq!(owner.uid, tier.uid().unwrap());
    assert_eq!(
        (owner.controller, owner.block_owner_deletion),
        (Some(true), Some(true))
    );
    let managers: Vec<_> = cm
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(managers, ["tierguard"]);

    // The same config again changes nothing on the server.
    let again = apply_config(&client, &tier, &config, &hash, &[])
        .await
        .unwrap();
    assert!(!again.changed());
    assert_eq!(again.resource_version, again.resource_version_before);
    assert_eq!(again.resource_version, first.resource_version);

    // A mitigation changes the content, the hash and the reasons.
    let rollback = mitigation(
        tierguard::api::MitigationName::RollbackCanary,
        &[
            ("CANARY_SAMPLE_RATE", "0.0"),
            ("MEM0_READS_ENABLED", "false"),
        ],
    );
    let (mitigated, _) = effective::render(&tier.spec, std::slice::from_ref(&rollback));
    let new_hash = effective::hash(&mitigated);
    let third = apply_config(&client, &tier, &mitigated, &new_hash, &[rollback])
        .await
        .unwrap();
    assert!(third.changed());
    assert_eq!(third.previous_hash.as_deref(), Some(hash.as_str()));
    let cm = configmaps.get("backend-flags").await.unwrap();
    assert_eq!(cm.data.as_ref().unwrap()["CANARY_SAMPLE_RATE"], "0.0");
    assert_eq!(cm.annotations()[CONFIG_HASH_ANNOTATION], new_hash);
    let reasons: BTreeMap<String, String> =
        serde_json::from_str(&cm.annotations()[MITIGATIONS_ANNOTATION]).unwrap();
    assert_eq!(
        reasons["rollback-canary"],
        "rollback-canary: P50 1250 ms > 1000 ms for 10m"
    );

    // A key the config no longer has is removed (server-side apply owns what it last applied).
    let mut fewer = mitigated.clone();
    fewer.remove("MAX_CLINIC_CACHE_ITEMS");
    let fewer_hash = effective::hash(&fewer);
    apply_config(&client, &tier, &fewer, &fewer_hash, &[])
        .await
        .unwrap();
    let cm = configmaps.get("backend-flags").await.unwrap();
    assert!(
        !cm.data
            .as_ref()
            .unwrap()
            .contains_key("MAX_CLINIC_CACHE_ITEMS")
    );
    assert_eq!(cm.annotations()[MITIGATIONS_ANNOTATION], "{}");
}

#[tokio::test]
async fn a_config_map_controlled_by_something_else_is_not_taken_over() {
    let server = support::api_server().await;
    let client = server.client();
    let tier = create_tier(&client).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let foreign: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "backend-flags", "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "Deployment", "name": "other",
            "uid": "not-the-tier", "controller": true
        }]},
        "data": {"KEEP": "me"}
    }))
    .unwrap();
    configmaps
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let config = effective::baseline(&tier.spec);
    let err = apply_config(&client, &tier, &config, "h", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, KubeActError::ForeignOwner { .. }), "{err}");
    assert!(err.to_string().contains("Deployment other"));
    let cm = configmaps.get("backend-flags").await.unwrap();
    assert_eq!(
        cm.data.unwrap(),
        BTreeMap::from([("KEEP".into(), "me".into())])
    );
}

/// A Deployment that lets the tier `backend` restart it.
fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {"tierguard.dev/restart-for": "backend"}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": {"keep": "this"}},
                "spec": {"containers": [{"name": "app", "image": "clinic-backend:1"}]}
            }
        }
    }))
    .unwrap()
}

fn template_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_workload_restarts_once_per_config_hash() {
    let server = support::api_server().await;
    let client = server.client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    deployments
        .create(&PostParams::default(), &deployment("backend"))
        .await
        .unwrap();
    let workload = WorkloadRef {
        kind: WorkloadKind::Deployment,
        name: "backend".into(),
    };
    let at = "2026-11-25T03:12:07Z".parse().unwrap();
    let first = restart_workload(&client, NS, &workload, "backend", "hash-1", at)
        .await
        .unwrap();
    assert!(first.restarted);
    let d = deployments.get("backend").await.unwrap();
    let annotations = template_annotations(&d);
    assert_eq!(annotations[RESTARTED_AT_ANNOTATION], "2026-11-25T03:12:07Z");
    assert_eq!(annotations[RESTARTED_FOR_HASH_ANNOTATION], "hash-1");
    assert_eq!(annotations["keep"], "this");
    let version = d.resource_version();

    // A repeat for the same hash (say, after a crash) does nothing.
    let later = "2026-11-25T03:20:00Z".parse().unwrap();
    let repeat = restart_workload(&client, NS, &workload, "backend", "hash-1", later)
        .await
        .unwrap();
    assert!(!repeat.restarted);
    assert_eq!(
        repeat.record(later, "x").outcome,
        tierguard::api::ActionOutcome::Skipped
    );
    assert_eq!(
        deployments.get("backend").await.unwrap().resource_version(),
        version
    );

    // A new hash restarts again.
    let next = restart_workload(&client, NS, &workload, "backend", "hash-2", later)
        .await
        .unwrap();
    assert!(next.restarted);
    let annotations = template_annotations(&deployments.get("backend").await.unwrap());
    assert_eq!(annotations[RESTARTED_AT_ANNOTATION], "2026-11-25T03:20:00Z");
    assert_eq!(annotations[RESTARTED_FOR_HASH_ANNOTATION], "hash-2");

    // StatefulSets too; a missing workload is a clear error.
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "cache", "annotations": {"tierguard.dev/restart-for": "other,backend"}},
        "spec": {
            "selector": {"matchLabels": {"app": "cache"}},
            "serviceName": "cache",
            "template": {"metadata": {"labels": {"app": "cache"}},
                         "spec": {"containers": [{"name": "c", "image": "redis:7"}]}}
        }
    }))
    .unwrap();
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    statefulsets
        .create(&PostParams::default(), &sts)
        .await
        .unwrap();
    let sts_ref = WorkloadRef {
        kind: WorkloadKind::StatefulSet,
        name: "cache".into(),
    };
    assert!(
        restart_workload(&client, NS, &sts_ref, "backend", "h", at)
            .await
            .unwrap()
            .restarted
    );
    let s = statefulsets.get("cache").await.unwrap();
    let annotations = s
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap();
    assert_eq!(annotations[RESTARTED_FOR_HASH_ANNOTATION], "h");
    let missing = WorkloadRef {
        kind: WorkloadKind::Deployment,
        name: "nope".into(),
    };
    let err = restart_workload(&client, NS, &missing, "backend", "h", at)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Deployment clinic/nope not found");
}

fn incident(id: &str, minute: u32, resolved: bool) -> IncidentSummary {
    let start: jiff::Timestamp = format!("2026-11-25T03:{minute:02}:00Z").parse().unwrap();
    IncidentSummary {
        id: id.into(),
        runbook: tierguard::api::Runbook::RedisMemory,
        trigger: "Redis memory 93% > 90%".into(),
        started_at: start,
        resolved_at: resolved.then(|| {
            start
                .checked_add(jiff::SignedDuration::from_mins(20))
                .unwrap()
        }),
        escalation_level: 1,
        escalation: None,
        findings: vec![],
        timeline: vec![TimelineEntry {
            at: start,
            what: "Memory critical: unlinking session:*".into(),
        }],
        diagnosis: None,
        impact: None,
        report: None,
    }
}

#[tokio::test]
async fn incident_reports_are_stored_bounded_newest_first_and_printed_by_the_cli() {
    let server = support::api_server().await;
    let client = server.client();
    let tier = create_tier(&client).await;
    let ctx = ReportContext {
        namespace: NS,
        tier: "backend",
        now: "2026-11-25T04:00:00Z".parse().unwrap(),
        observed: None,
        mitigations: &[],
    };
    let recorded = record_incident(&client, &tier, &incident("inc-00", 0, false), &ctx)
        .await
        .unwrap();
    assert_eq!(recorded.location, "backend-incidents/inc-00.md");
    // The same incident again, now resolved: replaced in place.
    record_incident(&client, &tier, &incident("inc-00", 0, true), &ctx)
        .await
        .unwrap();
    let reports = read_reports(&client, NS, "backend").await.unwrap();
    assert_eq!(reports.len(), 1);
    assert!(
        reports[0].1.contains("**Duration:** 20 minutes"),
        "{}",
        reports[0].1
    );

    for i in 1..25 {
        record_incident(
            &client,
            &tier,
            &incident(&format!("inc-{i:02}"), i, true),
            &ctx,
        )
        .await
        .unwrap();
    }
    let reports = read_reports(&client, NS, "backend").await.unwrap();
    let ids: Vec<&str> = reports.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), 20);
    assert_eq!(ids[0], "inc-24");
    assert_eq!(ids[19], "inc-05");
    let cm = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .get("backend-incidents")
        .await
        .unwrap();
    assert_eq!(cm.owner_references()[0].uid, tier.uid().unwrap());
    assert_eq!(
        cm.data.as_ref().unwrap().len(),
        21,
        "20 reports and the index"
    );
    assert!(!cm.data.as_ref().unwrap().contains_key("inc-04.md"));

    // `tierguard report` reads them through a kubeconfig.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let run = move |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tierguard"))
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The binary is blocking: run it off the runtime that serves the API.
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let newest = run(&["report", "--namespace", NS, "backend"]);
        let chosen = run(&["report", "-n", NS, "backend", "--incident", "inc-07"]);
        let list = run(&["report", "-n", NS, "backend", "--list"]);
        let unknown = run(&["report", "-n", NS, "backend", "--incident", "inc-00"]);
        let none = run(&["report", "-n", NS, "other-tier"]);
        assert_eq!(chosen.0, Some(0), "{}", chosen.2);
        assert!(chosen.1.contains("**Incident:** inc-07"));
        assert_eq!(list.1.lines().next(), Some("inc-24"));
        assert_eq!(list.1.lines().count(), 20);
        assert_ne!(unknown.0, Some(0));
        assert!(
            unknown.2.contains("no incident \"inc-00\""),
            "{}",
            unknown.2
        );
        assert_ne!(none.0, Some(0));
        assert!(none.2.contains("no incident reports"), "{}", none.2);
        newest
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("# Incident: Redis Memory\n"), "{stdout}");
    assert!(stdout.contains("**Incident:** inc-24"));
    assert!(stdout.contains("## Post-Incident Checklist"));
}
