//! The policy's memory as it is stored in `status.policy`: a versioned document the CRD does not
//! describe field by field, decoded here, inside the reconcile.
//!
//! A change of the policy's state machine is then a change of this document's version, not of
//! the CRD, and memory this controller cannot read (corrupt, hand-edited, or written by a newer
//! version) is not an error of the whole controller: that tier starts again from what the rest
//! of its status still says, with a Warning Event and the `PolicyMemory` condition saying so.
//! What comes back keeps destructive actions from repeating: the remediation cooldown (from the
//! last remediation in `status.memoryReport`), the open incidents with their ids and escalation
//! levels (from `status.incidents`), a rollback in force (from `status.mitigations`, so a
//! rolled-back tier is never silently un-rolled), the last render and the spec generation seen.

use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::{
    MemoryTierStatus, MitigationName, OpenIncident, PolicyMemory, RollbackCriterion, RollbackPhase,
    RollbackState, StampedeState, WarmTrigger, WindowState,
};

/// The version of the memory document this controller writes, and the newest it reads.
pub const MEMORY_VERSION: u32 = 1;

/// The stored document: its version, the memory, and a note of the last reset.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reset: Option<ResetNote>,
    #[serde(flatten)]
    memory: PolicyMemory,
}

/// Why and when the memory was last started afresh; kept until the spec changes, so that the
/// condition saying so does not vanish at the next reconcile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResetNote {
    pub at: Timestamp,
    pub why: String,
    /// The spec generation at the reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

/// The memory a reconcile starts from.
#[derive(Clone, Debug, PartialEq)]
pub struct Recalled {
    pub memory: PolicyMemory,
    /// Set when the stored memory could not be read (now or since the last spec change).
    pub reset: Option<ResetNote>,
    /// True when the reset happened in this reconcile (its Warning Event is due).
    pub reset_now: bool,
}

/// Read the memory of a tier from its status. `generation` is the tier's spec generation now.
pub fn recall(status: &MemoryTierStatus, generation: Option<i64>, now: Timestamp) -> Recalled {
    let Some(doc) = &status.policy else {
        // A new tier (or one whose memory was removed by hand): what status says still counts.
        return Recalled {
            memory: recover(status),
            reset: None,
            reset_now: false,
        };
    };
    match decode_stored(doc) {
        Ok(stored) => {
            // The note lasts until a human changes the spec.
            let reset = stored
                .reset
                .filter(|note| note.generation == generation || generation.is_none());
            Recalled {
                memory: stored.memory,
                reset,
                reset_now: false,
            }
        }
        Err(why) => Recalled {
            memory: recover(status),
            reset: Some(ResetNote {
                at: now,
                why,
                generation,
            }),
            reset_now: true,
        },
    }
}

/// Decode a stored memory document.
pub fn decode(doc: &Value) -> Result<PolicyMemory, String> {
    decode_stored(doc).map(|s| s.memory)
}

fn decode_stored(doc: &Value) -> Result<Stored, String> {
    let version = doc.get("version").and_then(Value::as_u64);
    match version {
        None => {
            return Err(
                "status.policy has no version: it was not written by this controller".to_owned(),
            );
        }
        Some(v) if v > u64::from(MEMORY_VERSION) => {
            return Err(format!(
                "status.policy is version {v}, newer than this controller reads ({MEMORY_VERSION}): a newer tierguard wrote it"
            ));
        }
        Some(_) => {}
    }
    serde_json::from_value::<Stored>(doc.clone()).map_err(|e| {
        let mut text = e.to_string();
        text.truncate(300);
        format!("status.policy cannot be read: {text}")
    })
}

/// The document to store for `memory`.
pub fn store(memory: &PolicyMemory, reset: Option<&ResetNote>) -> Value {
    serde_json::to_value(Stored {
        version: MEMORY_VERSION,
        reset: reset.cloned(),
        memory: memory.clone(),
    })
    .expect("the policy memory serializes")
}

/// When the stored memory was last decided (the `lastTick`), without decoding the rest.
pub fn last_tick(status: &MemoryTierStatus) -> Option<Timestamp> {
    status
        .policy
        .as_ref()?
        .get("lastTick")?
        .as_str()?
        .parse()
        .ok()
}

/// What the rest of the status still tells of the policy's memory.
fn recover(status: &MemoryTierStatus) -> PolicyMemory {
    let mut m = PolicyMemory {
        seen_generation: status.observed_generation,
        rendered_hash: status.effective.as_ref().and_then(|e| e.hash.clone()),
        phase: status.phase.unwrap_or_default(),
        ..PolicyMemory::default()
    };
    if let Some(report) = &status.memory_report {
        // The remediation's cooldown runs from its last run: no second run within it.
        m.redis.last_remediation_at = report.last_remediation.as_ref().map(|r| r.at);
        if let Some(level) = report.level {
            m.redis.level = level;
            m.redis.alerted_level = level;
        }
    }
    // Open incidents keep their ids and escalation levels: no second incident, no repeated page.
    for incident in status.incidents.iter().filter(|i| i.resolved_at.is_none()) {
        if m.open_incidents
            .iter()
            .any(|o| o.runbook == incident.runbook)
        {
            continue;
        }
        m.open_incidents.push(OpenIncident {
            id: incident.id.clone(),
            runbook: incident.runbook,
            trigger: incident.trigger.clone(),
            started_at: incident.started_at,
            notified_level: incident.escalation_level,
            timeline: Arc::new(incident.timeline.clone()),
            clear: WindowState::default(),
            response_since: Some(incident.started_at),
            escalated_because: None,
            escalation_plan: None,
            escalated_near_action: false,
            escalated_on_action: false,
            escalated_on_diagnosis: false,
            diagnosis: incident.diagnosis.clone(),
            impact: incident.impact.clone(),
            findings: incident.findings.clone(),
        });
    }
    for mitigation in &status.mitigations {
        match mitigation.name {
            // A rollback in force stays in force: it waits for a human, as before.
            MitigationName::RollbackFeatures | MitigationName::RollbackCanary => {
                let features_off = mitigation.name == MitigationName::RollbackFeatures;
                m.rollback = Some(RollbackState {
                    phase: if features_off {
                        RollbackPhase::Documented
                    } else {
                        RollbackPhase::ReduceTraffic
                    },
                    phase_since: mitigation.since,
                    started_at: mitigation.since,
                    // The criterion is not in status; the phase and the reason are.
                    trigger: RollbackCriterion::P50Latency,
                    reason: mitigation.reason.clone(),
                    trigger_value: None,
                    features_off_at: features_off.then_some(mitigation.since),
                    verified: WindowState::default(),
                    resume_token: None,
                    generation: status.observed_generation,
                });
            }
            MitigationName::BreakerMem0Off => {
                // The outage goes on until the breaker has been closed for a ramp interval again.
                m.breaker.outage_since = Some(mitigation.since);
                m.breaker.alerted = true;
                m.breaker.mitigated_since = Some(mitigation.since);
                m.breaker.mitigation_reason = Some(mitigation.reason.clone());
            }
            MitigationName::StampedeServeStale => {
                let rate = status
                    .mitigations
                    .iter()
                    .find(|x| x.name == MitigationName::StampedeShedLoad)
                    .and_then(|x| x.overrides.values().next())
                    .and_then(|v| v.parse::<f64>().ok());
                m.stampede = Some(StampedeState {
                    started_at: mitigation.since,
                    trigger: WarmTrigger::Stampede,
                    reason: mitigation.reason.clone(),
                    canary_rate: rate.unwrap_or(f64::INFINITY),
                    recovering: WindowState::default(),
                    clear: WindowState::default(),
                    source: None,
                });
            }
            _ => {}
        }
    }
    if let Some(s) = m.stampede.as_mut()
        && !s.canary_rate.is_finite()
    {
        // No load shedding in force: the canary is at its baseline (the policy caps it there).
        s.canary_rate = 1.0;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        IncidentSummary, MemoryReport, Mitigation, Phase, RemediationOutcome, Runbook,
    };

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn stored_memory_round_trips() {
        let memory = PolicyMemory {
            last_tick: Some(at(100)),
            phase: Phase::Degraded,
            ..PolicyMemory::default()
        };
        let status = MemoryTierStatus {
            policy: Some(store(&memory, None)),
            ..MemoryTierStatus::default()
        };
        let recalled = recall(&status, Some(1), at(200));
        assert_eq!(recalled.memory, memory);
        assert_eq!(recalled.reset, None);
        assert_eq!(last_tick(&status), Some(at(100)));
    }

    #[test]
    fn unreadable_or_newer_memory_starts_again_from_the_status() {
        let status = |policy: Value| MemoryTierStatus {
            policy: Some(policy),
            observed_generation: Some(3),
            phase: Some(Phase::RolledBack),
            memory_report: Some(MemoryReport {
                last_remediation: Some(RemediationOutcome {
                    at: at(50),
                    ..RemediationOutcome::default()
                }),
                ..MemoryReport::default()
            }),
            incidents: vec![IncidentSummary {
                id: "2026-01-01-000100-canary-rollback".into(),
                runbook: Runbook::CanaryRollback,
                trigger: "P50".into(),
                started_at: at(60),
                resolved_at: None,
                escalation_level: 2,
                findings: vec![],
                escalation: None,
                timeline: vec![],
                diagnosis: None,
                impact: None,
                report: None,
            }],
            mitigations: vec![Mitigation {
                name: MitigationName::RollbackFeatures,
                reason: "canary rollback phase 2: P50".into(),
                since: at(70),
                until: String::new(),
                overrides: Default::default(),
            }],
            ..MemoryTierStatus::default()
        };
        for (doc, says) in [
            (
                serde_json::json!({"version": 2, "phase": "Healthy"}),
                "version 2",
            ),
            (
                serde_json::json!({"version": 1, "phase": 17}),
                "cannot be read",
            ),
            (serde_json::json!({"phase": "Healthy"}), "no version"),
        ] {
            let recalled = recall(&status(doc), Some(3), at(100));
            let reset = recalled.reset.expect("a reset");
            assert!(reset.why.contains(says), "{}", reset.why);
            assert!(recalled.reset_now);
            let m = recalled.memory;
            assert_eq!(m.redis.last_remediation_at, Some(at(50)));
            assert_eq!(m.open_incidents.len(), 1);
            assert_eq!(m.open_incidents[0].id, "2026-01-01-000100-canary-rollback");
            assert_eq!(m.open_incidents[0].notified_level, 2);
            let rb = m.rollback.expect("the rollback stays in force");
            assert_eq!(rb.phase, RollbackPhase::Documented);
            assert_eq!(m.seen_generation, Some(3));
        }
    }

    #[test]
    fn the_reset_note_lasts_until_the_spec_changes() {
        let note = ResetNote {
            at: at(1),
            why: "x".into(),
            generation: Some(4),
        };
        let status = MemoryTierStatus {
            policy: Some(store(&PolicyMemory::default(), Some(&note))),
            ..MemoryTierStatus::default()
        };
        assert_eq!(recall(&status, Some(4), at(2)).reset, Some(note));
        assert_eq!(recall(&status, Some(5), at(2)).reset, None);
    }
}
