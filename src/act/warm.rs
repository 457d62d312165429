//! Cache warming (the stampede runbook's preferred mitigation): POST `{"clinic_ids": [...]}` to
//! the application's warm endpoint with the admin bearer token, in batches, a bounded number at
//! once, each with a timeout and retries.
//!
//! Warming is idempotent on the application's side (it fills caches), so repeating it after a
//! crash is harmless; the outcome of every batch is recorded.

use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use serde::Serialize;

use super::http::{Backoff, Delivery, post_json};
use super::record;
use crate::api::{ActionKind, ActionOutcome};
use crate::api::{ActionRecord, WarmTrigger, WarmingSpec};
use crate::secret::{SecretString, redact_url};

/// The request body the runbooks' warm endpoint takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WarmBody<'a> {
    pub clinic_ids: &'a [i64],
}

/// One batch's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchOutcome {
    pub clinic_ids: Vec<i64>,
    #[serde(flatten)]
    pub delivery: Delivery,
}

/// What one warming did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WarmOutcome {
    pub trigger: WarmTrigger,
    /// The endpoint, redacted.
    pub endpoint: String,
    pub batches: Vec<BatchOutcome>,
}

impl WarmOutcome {
    pub fn ok(&self) -> bool {
        self.batches.iter().all(|b| b.delivery.ok)
    }

    pub fn clinics(&self) -> usize {
        self.batches.iter().map(|b| b.clinic_ids.len()).sum()
    }

    /// "warmed 12 clinics in 3 batches (3 ok): 200 in 35 ms after 1 attempt; ..."
    pub fn summary(&self) -> String {
        let ok = self.batches.iter().filter(|b| b.delivery.ok).count();
        let batches = self
            .batches
            .iter()
            .map(|b| b.delivery.describe())
            .collect::<Vec<_>>()
            .join("; ");
        format!(
            "{} clinics in {} batches to {} ({ok} ok): {batches}",
            self.clinics(),
            self.batches.len(),
            self.endpoint
        )
    }
}

/// Why nothing was warmed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WarmSkipped {
    #[error("spec.warming.endpoint is not set")]
    NoEndpoint,
    #[error("no clinics to warm: spec.warming.clinicIds is empty and the top-N query gave none")]
    NoClinics,
}

/// A warming's outcome (when it ran) and its action record.
#[derive(Clone, Debug)]
pub struct WarmRun {
    pub outcome: Result<WarmOutcome, WarmSkipped>,
    pub record: ActionRecord,
}

/// The clinics to warm: first the ones the policy saw missing (already bounded by
/// `stampede.clinics.warmAtMost`), then `spec.warming.clinicIds` when given, else the top-N ids
/// the observer resolved (at most `topN.count`), without duplicates and in their order.
pub fn clinics_to_warm(spec: &WarmingSpec, missing: &[i64], top_n: &[i64]) -> Vec<i64> {
    let mut seen = std::collections::HashSet::new();
    let missing: Vec<i64> = missing
        .iter()
        .copied()
        .filter(|id| seen.insert(*id))
        .collect();
    let configured = configured_clinics(spec, top_n, &mut seen);
    missing.into_iter().chain(configured).collect()
}

fn configured_clinics(
    spec: &WarmingSpec,
    top_n: &[i64],
    seen: &mut std::collections::HashSet<i64>,
) -> Vec<i64> {
    if spec.clinic_ids.is_empty() {
        let limit = spec.top_n.as_ref().map_or(usize::MAX, |q| q.count as usize);
        top_n
            .iter()
            .copied()
            .filter(|id| seen.insert(*id))
            .take(limit)
            .collect()
    } else {
        spec.clinic_ids
            .iter()
            .copied()
            .filter(|id| seen.insert(*id))
            .collect()
    }
}

/// Warm the cache as `spec` says, for `trigger`, because of `reason`.
#[allow(clippy::too_many_arguments)]
pub async fn warm_cache(
    http: &reqwest::Client,
    spec: &WarmingSpec,
    token: Option<&SecretString>,
    missing: &[i64],
    top_n: &[i64],
    trigger: WarmTrigger,
    reason: &str,
    backoff: Backoff,
    now: Timestamp,
) -> WarmRun {
    let skipped = |why: WarmSkipped| WarmRun {
        record: record::action(
            now,
            ActionKind::WarmCache,
            reason,
            ActionOutcome::Skipped,
            Some(why.to_string()),
        ),
        outcome: Err(why),
    };
    let Some(endpoint) = spec.endpoint.as_deref() else {
        return skipped(WarmSkipped::NoEndpoint);
    };
    let clinics = clinics_to_warm(spec, missing, top_n);
    if clinics.is_empty() {
        return skipped(WarmSkipped::NoClinics);
    }
    let url = SecretString::from(endpoint);
    let shown = redact_url(endpoint);
    let timeout: Duration = spec.timeout.as_std();
    let batch_size = spec.batch_size.max(1) as usize;
    let concurrency = spec.concurrency.max(1) as usize;
    tracing::info!(endpoint = %shown, clinics = clinics.len(), ?trigger, reason, "warming the cache");
    // Owned batches: futures borrowing slices of `clinics` would not be `Send` for every
    // lifetime, and the controller runs this inside a spawned task.
    let chunks: Vec<Vec<i64>> = clinics.chunks(batch_size).map(<[i64]>::to_vec).collect();
    let url = &url;
    let mut batches: Vec<(usize, BatchOutcome)> =
        futures::stream::iter(chunks.into_iter().enumerate())
            .map(|(index, ids)| async move {
                let delivery = post_json(
                    http,
                    url,
                    token,
                    &WarmBody { clinic_ids: &ids },
                    timeout,
                    spec.retries,
                    backoff,
                )
                .await;
                (
                    index,
                    BatchOutcome {
                        clinic_ids: ids,
                        delivery,
                    },
                )
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
    batches.sort_by_key(|(i, _)| *i);
    let outcome = WarmOutcome {
        trigger,
        endpoint: shown,
        batches: batches.into_iter().map(|(_, b)| b).collect(),
    };
    let verdict = if outcome.ok() {
        ActionOutcome::Ok
    } else {
        ActionOutcome::Failed
    };
    WarmRun {
        record: record::action(
            now,
            ActionKind::WarmCache,
            reason,
            verdict,
            Some(outcome.summary()),
        ),
        outcome: Ok(outcome),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> WarmingSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn spec_clinics_win_over_top_n_and_duplicates_go() {
        let s = spec(serde_json::json!({"clinicIds": [1, 2, 2, 3]}));
        assert_eq!(clinics_to_warm(&s, &[], &[9, 8]), [1, 2, 3]);
        let s2 = spec(serde_json::json!({"topN": {"query": "q", "count": 2}}));
        assert_eq!(clinics_to_warm(&s2, &[], &[9, 9, 8, 7]), [9, 8]);
        assert_eq!(clinics_to_warm(&s2, &[], &[9, 8, 7]), [9, 8]);
        assert!(clinics_to_warm(&spec(serde_json::json!({})), &[], &[]).is_empty());
        // The clinics seen missing come first, merged with the configured ones.
        assert_eq!(clinics_to_warm(&s, &[7, 2, 7], &[]), [7, 2, 1, 3]);
        assert_eq!(clinics_to_warm(&s2, &[5], &[9, 5, 8]), [5, 9, 8]);
        assert_eq!(
            clinics_to_warm(&spec(serde_json::json!({})), &[4], &[]),
            [4]
        );
    }

    #[test]
    fn the_body_is_the_runbooks_shape() {
        let body = serde_json::to_value(WarmBody {
            clinic_ids: &[1, 2, 3, 5, 8],
        })
        .unwrap();
        assert_eq!(body, serde_json::json!({"clinic_ids": [1, 2, 3, 5, 8]}));
    }
}
