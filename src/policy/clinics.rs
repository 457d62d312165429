//! Where a stampede comes from (the stampede runbook's step 1): the clinics that miss, and the
//! likely causes seen shortly before (a cache generation change, a Redis restart).
//!
//! From the busiest clinics' cache readings, a clinic is judged once it has
//! `stampede.clinics.minLookups` lookups over the rate window; it is *cold* when its hit rate is
//! below `stampede.clinics.coldBelowPercent`. When the cold clinics carry at least
//! `stampede.clinics.trafficSharePercent` of all lookups, the stampede is there even if the
//! service's hit rate still looks fine: a few hot clinics can miss on every request while the
//! hundreds of quiet ones keep the average above the threshold. The P50 condition does not apply
//! to that case, since the median request belongs to the clinics that still hit.

use jiff::Timestamp;

use super::Step;
use super::num;
use crate::api::clinics::CLINICS_NAMED;
use crate::api::{ClinicBreakdown, ClinicRate, Clue, MemoryTierSpec, PolicyMemory, StampedeSource};

/// What one observation's per-clinic readings say.
#[derive(Clone, Debug, PartialEq)]
pub struct ClinicView {
    pub label: String,
    /// Clinics judged (enough lookups).
    pub judged: u32,
    /// Judged clinics below the hit-rate threshold.
    pub cold: u32,
    /// Their share of all lookups, percent.
    pub cold_share_percent: f64,
    /// Whether that share reaches `stampede.clinics.trafficSharePercent`.
    pub confined: bool,
    pub worst_hit_rate: Vec<ClinicRate>,
    pub most_misses: Vec<ClinicRate>,
    /// The cold clinics' ids as the warm endpoint takes them, most misses first, at most
    /// `stampede.clinics.warmAtMost`.
    pub missing_ids: Vec<i64>,
}

/// Judge the clinics of one observation; none without lookups to judge.
pub fn view(spec: &MemoryTierSpec, breakdown: &ClinicBreakdown) -> Option<ClinicView> {
    let settings = &spec.stampede.clinics;
    let total = breakdown.total_lookups();
    if !(settings.enabled && total > 0.0 && total.is_finite()) {
        return None;
    }
    let threshold = settings.cold_below_percent;
    let mut judged: Vec<ClinicRate> = breakdown
        .clinics
        .iter()
        .filter(|c| c.lookups() >= settings.min_lookups.max(f64::MIN_POSITIVE))
        .filter_map(|c| {
            Some(ClinicRate {
                clinic: c.clinic.clone(),
                hit_rate_percent: c.hit_rate_percent()?,
                misses: c.misses,
                traffic_percent: 100.0 * c.lookups() / total,
            })
        })
        .collect();
    if judged.is_empty() {
        return None;
    }
    let cold: Vec<&ClinicRate> = judged
        .iter()
        .filter(|c| c.hit_rate_percent < threshold)
        .collect();
    let cold_share_percent: f64 = cold.iter().map(|c| c.traffic_percent).sum();
    let mut by_misses: Vec<&ClinicRate> = cold.clone();
    by_misses.sort_by(|a, b| b.misses.total_cmp(&a.misses));
    let missing_ids = by_misses
        .iter()
        .filter_map(|c| c.clinic.parse::<i64>().ok())
        .take(settings.warm_at_most as usize)
        .collect();
    let cold_count = cold.len() as u32;

    // Only clinics that miss more than the service may are named: a healthy clinic is no source.
    let service_threshold = spec.stampede.hit_rate_below_percent;
    judged.retain(|c| c.misses > 0.0 && c.hit_rate_percent < service_threshold);
    let mut most_misses: Vec<ClinicRate> = judged.clone();
    most_misses.sort_by(|a, b| {
        b.misses
            .total_cmp(&a.misses)
            .then_with(|| a.clinic.cmp(&b.clinic))
    });
    most_misses.truncate(CLINICS_NAMED);
    judged.sort_by(|a, b| {
        a.hit_rate_percent
            .total_cmp(&b.hit_rate_percent)
            .then_with(|| b.traffic_percent.total_cmp(&a.traffic_percent))
            .then_with(|| a.clinic.cmp(&b.clinic))
    });
    let judged_count = breakdown
        .clinics
        .iter()
        .filter(|c| c.lookups() >= settings.min_lookups.max(f64::MIN_POSITIVE))
        .count() as u32;
    judged.truncate(CLINICS_NAMED);
    Some(ClinicView {
        label: breakdown.label.clone(),
        judged: judged_count,
        cold: cold_count,
        cold_share_percent,
        confined: cold_count > 0 && cold_share_percent >= settings.traffic_share_percent,
        worst_hit_rate: judged,
        most_misses,
        missing_ids,
    })
}

/// Remember what may start a stampede: a change of the cache generation, a Redis restart.
pub(crate) fn track_clues(step: &Step, m: &mut PolicyMemory) {
    let clues = &mut m.cache_clues;
    if let Some(generation) = step.signals.redis_cache_generation {
        if let Some(before) = clues.generation.as_deref()
            && before != generation
        {
            let key = step
                .spec
                .redis
                .remediation
                .current_generation
                .as_ref()
                .and_then(|g| g.redis_key.as_deref())
                .unwrap_or("the generation key");
            clues.generation_change = Some(Clue {
                at: step.now,
                what: format!(
                    "cache generation change: {key} moved from {before} to {generation} (every cached entry of the old generation misses)"
                ),
            });
        }
        if clues.generation.as_deref() != Some(generation) {
            clues.generation = Some(generation.to_owned());
        }
    }
    if let Some(why) = &step.cold_start {
        clues.redis_restart = Some(Clue {
            at: step.now,
            what: format!("Redis restart: {why} (the cache started empty)"),
        });
    }
}

/// The clues seen since `since`, oldest first.
fn causes(m: &PolicyMemory, since: Timestamp) -> Vec<String> {
    let mut found: Vec<&Clue> = [
        &m.cache_clues.generation_change,
        &m.cache_clues.redis_restart,
    ]
    .into_iter()
    .flatten()
    .filter(|c| c.at >= since)
    .collect();
    found.sort_by_key(|c| c.at);
    found
        .into_iter()
        .map(|c| format!("{} at {}", c.what, c.at.strftime("%H:%M:%S UTC")))
        .collect()
}

/// The stampede's source as of this step: the clinics (when read) and the likely causes seen
/// since a little before `started` (the detection window and the rate window it looked over).
pub(crate) fn source(
    step: &Step,
    m: &PolicyMemory,
    started: Timestamp,
    view: Option<&ClinicView>,
) -> StampedeSource {
    let spec = step.spec;
    let lookback = spec.stampede.for_duration.as_std() + spec.metrics.rate_window.as_std();
    let since = jiff::SignedDuration::try_from(lookback)
        .ok()
        .and_then(|d| started.checked_sub(d).ok())
        .unwrap_or(started);
    StampedeSource {
        at: step.now,
        label: view
            .map(|v| v.label.clone())
            .unwrap_or_else(|| spec.stampede.clinics.label.clone()),
        confined: view.is_some_and(|v| v.confined),
        cold_clinics: view.map_or(0, |v| v.cold),
        cold_traffic_percent: view.map_or(0.0, |v| v.cold_share_percent),
        worst_hit_rate: view.map(|v| v.worst_hit_rate.clone()).unwrap_or_default(),
        most_misses: view.map(|v| v.most_misses.clone()).unwrap_or_default(),
        likely_causes: causes(m, since),
    }
}

/// "clinic_id=3: 12.5% hits, 420 misses, 18% of lookups".
pub fn describe(clinic: &ClinicRate, label: &str) -> String {
    format!(
        "{label}={}: {}% hits, {} misses, {}% of lookups",
        clinic.clinic,
        num(clinic.hit_rate_percent),
        num(clinic.misses.round()),
        num(clinic.traffic_percent)
    )
}

fn describe_all(clinics: &[ClinicRate], label: &str) -> String {
    clinics
        .iter()
        .map(|c| describe(c, label))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The diagnosis for people, one finding a line: what status, Events, notifications and the
/// incident report say.
pub fn lines(source: &StampedeSource) -> Vec<String> {
    let mut out = Vec::new();
    if source.cold_clinics > 0 {
        out.push(format!(
            "{} cold clinic(s) carry {}% of cache lookups{}",
            source.cold_clinics,
            num(source.cold_traffic_percent),
            if source.confined {
                ": a stampede confined to hot clinics"
            } else {
                ""
            }
        ));
    }
    if !source.worst_hit_rate.is_empty() {
        out.push(format!(
            "worst hit rate: {}",
            describe_all(&source.worst_hit_rate, &source.label)
        ));
    }
    if !source.most_misses.is_empty() {
        out.push(format!(
            "most misses: {}",
            describe_all(&source.most_misses, &source.label)
        ));
    }
    for cause in &source.likely_causes {
        out.push(format!("likely cause: {cause}"));
    }
    if source.likely_causes.is_empty() {
        out.push(
            "no generation change or Redis restart seen: look for expiring keys, bulk invalidations or a newly popular clinic (runbook step 4)"
                .to_owned(),
        );
    }
    out
}

/// The hot-clinic trigger in words.
pub fn confined_reason(
    spec: &MemoryTierSpec,
    view: &ClinicView,
    service_hit: Option<f64>,
) -> String {
    let names: Vec<String> = view
        .worst_hit_rate
        .iter()
        .filter(|c| c.hit_rate_percent < spec.stampede.clinics.cold_below_percent)
        .map(|c| {
            format!(
                "{}={} at {}%",
                view.label,
                c.clinic,
                num(c.hit_rate_percent)
            )
        })
        .collect();
    format!(
        "{} clinic(s) below {}% cache hit rate carry {}% of cache lookups (at least {}%) for {} ({}), while the service's hit rate is {}: a stampede confined to hot clinics",
        view.cold,
        num(spec.stampede.clinics.cold_below_percent),
        num(view.cold_share_percent),
        num(spec.stampede.clinics.traffic_share_percent),
        spec.stampede.for_duration,
        names.join(", "),
        service_hit
            .map(|h| format!("{}%", num(h)))
            .unwrap_or_else(|| "unknown".into())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ClinicCache;

    fn spec() -> MemoryTierSpec {
        serde_json::from_value(serde_json::json!({"target": {"configMapName": "f"}})).unwrap()
    }

    fn breakdown(clinics: &[(&str, f64, f64)]) -> ClinicBreakdown {
        ClinicBreakdown::busiest(
            "clinic_id",
            clinics.iter().map(|(c, h, m)| ClinicCache {
                clinic: (*c).into(),
                hits: *h,
                misses: *m,
            }),
            50,
        )
    }

    #[test]
    fn hot_clinics_that_miss_are_named_even_when_the_service_hits() {
        // Clinics 1 and 2 hit only 70%; 40 quiet clinics always hit; the service is at 96.1%.
        let mut rows: Vec<(String, f64, f64)> =
            vec![("1".into(), 840.0, 360.0), ("2".into(), 420.0, 180.0)];
        for i in 10..50 {
            rows.push((i.to_string(), 300.0, 0.0));
        }
        let rows: Vec<(&str, f64, f64)> =
            rows.iter().map(|(c, h, m)| (c.as_str(), *h, *m)).collect();
        let b = breakdown(&rows);
        let hits: f64 = b.clinics.iter().map(|c| c.hits).sum();
        assert!(100.0 * hits / b.total_lookups() > 95.0);
        let v = view(&spec(), &b).unwrap();
        assert_eq!(v.cold, 2);
        assert!(v.confined, "{v:?}");
        assert!((v.cold_share_percent - 100.0 * 1_800.0 / 13_800.0).abs() < 1e-9);
        assert_eq!(v.missing_ids, [1, 2]);
        assert_eq!(v.worst_hit_rate[0].clinic, "1");
        assert_eq!(v.most_misses[0].clinic, "1");
        assert_eq!(v.most_misses.len(), 2);
    }

    #[test]
    fn quiet_clinics_are_not_judged_and_a_small_share_is_no_stampede() {
        // Clinic 7 misses everything but has too few lookups; clinic 8 is cold but carries 1%.
        let b = breakdown(&[("7", 0.0, 50.0), ("8", 50.0, 50.0), ("9", 9_850.0, 0.0)]);
        let v = view(&spec(), &b).unwrap();
        assert_eq!(v.cold, 1);
        assert!(!v.confined);
        assert_eq!(v.missing_ids, [8]);
        assert!(view(&spec(), &breakdown(&[])).is_none());
        assert!(view(&spec(), &breakdown(&[("1", 10.0, 10.0)])).is_none());
    }

    #[test]
    fn non_numeric_clinics_are_named_but_not_warmed() {
        let b = breakdown(&[("north", 0.0, 500.0), ("9", 500.0, 0.0)]);
        let v = view(&spec(), &b).unwrap();
        assert!(v.confined);
        assert!(v.missing_ids.is_empty());
        assert_eq!(v.worst_hit_rate[0].clinic, "north");
    }
}
