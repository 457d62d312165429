//! Cache hits and misses per clinic: where a stampede comes from (the stampede runbook's step 1).
//!
//! The application's cache metrics carry a clinic label (`spec.stampede.clinics.label`,
//! `clinic_id` by default). Whatever source reads them (Prometheus with a `by (clinic)` query, the
//! direct scrape, later a database), the readings land in one [`ClinicBreakdown`] in the
//! [`super::Observation`]: the busiest clinics by cache lookups over the rate window, at most
//! `spec.stampede.clinics.keep` of them, so a tenant with a hundred thousand clinics costs a
//! bounded status and a bounded policy step.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The hard cap of `spec.stampede.clinics.keep`.
pub const MAX_CLINICS_KEPT: u32 = 200;
/// The longest clinic label value kept; a longer one is cut (it is a name, not a payload).
pub const MAX_CLINIC_NAME_CHARS: usize = 64;
/// How many clinics each list of a [`StampedeSource`] names.
pub const CLINICS_NAMED: usize = 5;

/// Per-clinic cache readings and how the stampede detector uses them.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ClinicsSpec {
    /// Read the cache hits and misses per clinic.
    pub enabled: bool,
    /// The label of `cache_hits_total` / `cache_misses_total` naming the clinic.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    )]
    pub label: String,
    /// How many clinics are kept per observation: the busiest by cache lookups.
    #[schemars(range(min = 1, max = 200))]
    pub keep: u32,
    /// A clinic is judged only with at least this many cache lookups over
    /// `spec.metrics.rateWindow` (the runbook's `HAVING COUNT(*) > 100`).
    #[schemars(range(min = 0.0, max = 1000000000.0))]
    pub min_lookups: f64,
    /// A clinic is cold when its hit rate is below this percentage. Lower than the service's
    /// threshold: one clinic's rate swings more than the average (first requests, expiring
    /// keys), and a stampede on a clinic misses far more than that.
    #[schemars(range(min = 0.0, max = 100.0))]
    pub cold_below_percent: f64,
    /// A stampede confined to a few hot clinics: the cold clinics carry at least this share of
    /// all cache lookups (percent), for `stampede.for`, even while the hit rate of the whole
    /// service is still above `stampede.hitRateBelowPercent`.
    #[schemars(range(min = 0.1, max = 100.0))]
    pub traffic_share_percent: f64,
    /// Most missing clinics warmed per warming (the ones with the most misses first); the
    /// configured `spec.warming.clinicIds` are warmed too.
    #[schemars(range(min = 0, max = 100))]
    pub warm_at_most: u32,
}

impl Default for ClinicsSpec {
    fn default() -> Self {
        ClinicsSpec {
            enabled: true,
            label: "clinic_id".into(),
            keep: 50,
            min_lookups: 100.0,
            cold_below_percent: 80.0,
            traffic_share_percent: 10.0,
            warm_at_most: 10,
        }
    }
}

/// One clinic's cache lookups over the rate window.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClinicCache {
    /// The clinic label's value.
    pub clinic: String,
    /// Cache hits over the rate window.
    pub hits: f64,
    /// Cache misses over the rate window.
    pub misses: f64,
}

impl ClinicCache {
    pub fn lookups(&self) -> f64 {
        self.hits + self.misses
    }

    /// Hits in percent of lookups; none without lookups.
    pub fn hit_rate_percent(&self) -> Option<f64> {
        let all = self.lookups();
        (all > 0.0 && all.is_finite()).then(|| 100.0 * self.hits / all)
    }
}

/// The busiest clinics' cache readings of one observation.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClinicBreakdown {
    /// The label the clinics were read by.
    pub label: String,
    /// The busiest clinics, most lookups first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clinics: Vec<ClinicCache>,
    /// Clinics read but not kept (beyond `spec.stampede.clinics.keep`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: u64,
    /// Cache lookups of the omitted clinics, so that shares stay shares of all traffic.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub omitted_lookups: f64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_f64(n: &f64) -> bool {
    *n == 0.0
}

impl ClinicBreakdown {
    /// Keep the `keep` busiest of `readings` (odd values dropped, names cut), most lookups first;
    /// ties go by name so that the same readings always keep the same clinics.
    pub fn busiest(
        label: &str,
        readings: impl IntoIterator<Item = ClinicCache>,
        keep: u32,
    ) -> Self {
        let mut all: Vec<ClinicCache> = readings
            .into_iter()
            .filter(|c| {
                c.hits.is_finite() && c.misses.is_finite() && c.hits >= 0.0 && c.misses >= 0.0
            })
            .map(|mut c| {
                if c.clinic.chars().count() > MAX_CLINIC_NAME_CHARS {
                    c.clinic = c.clinic.chars().take(MAX_CLINIC_NAME_CHARS).collect();
                }
                c
            })
            .collect();
        all.sort_by(|a, b| {
            b.lookups()
                .total_cmp(&a.lookups())
                .then_with(|| a.clinic.cmp(&b.clinic))
        });
        let keep = keep.clamp(1, MAX_CLINICS_KEPT) as usize;
        let rest = if all.len() > keep {
            all.split_off(keep)
        } else {
            Vec::new()
        };
        ClinicBreakdown {
            label: label.to_owned(),
            clinics: all,
            omitted: rest.len() as u64,
            omitted_lookups: rest.iter().map(ClinicCache::lookups).sum(),
        }
    }

    /// Every cache lookup counted, the omitted clinics' included.
    pub fn total_lookups(&self) -> f64 {
        self.clinics.iter().map(ClinicCache::lookups).sum::<f64>() + self.omitted_lookups
    }
}

/// One clinic as a diagnosis names it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClinicRate {
    pub clinic: String,
    /// Its cache hit rate, percent.
    pub hit_rate_percent: f64,
    /// Its cache misses over the rate window.
    pub misses: f64,
    /// Its share of all cache lookups, percent.
    pub traffic_percent: f64,
}

/// Where the stampede being handled comes from: `status.stampedeSource`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StampedeSource {
    /// When this diagnosis was made (it is renewed at each observation with per-clinic readings).
    #[schemars(schema_with = "super::status::timestamp_schema")]
    pub at: Timestamp,
    /// The clinic label.
    pub label: String,
    /// The stampede is confined to a few hot clinics: the service's hit rate alone does not show it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confined: bool,
    /// How many clinics are below `stampede.hitRateBelowPercent`, and their share of lookups.
    #[serde(default)]
    pub cold_clinics: u32,
    #[serde(default)]
    pub cold_traffic_percent: f64,
    /// The clinics with the worst hit rate (worst first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worst_hit_rate: Vec<ClinicRate>,
    /// The clinics with the most misses (most first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub most_misses: Vec<ClinicRate>,
    /// Likely causes seen shortly before: a cache generation change, a Redis restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub likely_causes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(clinic: &str, hits: f64, misses: f64) -> ClinicCache {
        ClinicCache {
            clinic: clinic.into(),
            hits,
            misses,
        }
    }

    #[test]
    fn the_busiest_are_kept_and_the_rest_still_counts() {
        let b = ClinicBreakdown::busiest(
            "clinic_id",
            vec![
                c("1", 10.0, 0.0),
                c("2", 100.0, 50.0),
                c("3", f64::NAN, 1.0),
                c("4", 5.0, 5.0),
                c(&"x".repeat(500), 1.0, 1.0),
            ],
            2,
        );
        let names: Vec<&str> = b.clinics.iter().map(|c| c.clinic.as_str()).collect();
        assert_eq!(names, ["2", "1"]);
        assert_eq!(b.omitted, 2);
        assert_eq!(b.omitted_lookups, 12.0);
        assert_eq!(b.total_lookups(), 172.0);
        assert_eq!(c("a", 3.0, 1.0).hit_rate_percent(), Some(75.0));
        assert_eq!(c("a", 0.0, 0.0).hit_rate_percent(), None);
        let long = ClinicBreakdown::busiest("l", vec![c(&"y".repeat(500), 1.0, 1.0)], 5);
        assert_eq!(long.clinics[0].clinic.len(), MAX_CLINIC_NAME_CHARS);
    }
}
