//! baseline ⊕ mitigations = effective config.
//!
//! The baseline is rendered from the spec into the application's environment variables. Each
//! active mitigation overrides some keys. When several mitigations touch the same key, the most
//! conservative value wins, whatever their order: the lowest canary rate, a feature flag off over
//! on, serving stale over not, the longest TTL. So a mitigation can only make the tier safer than
//! its baseline, never less safe, and dropping a mitigation is just removing its overlay.

use std::collections::BTreeMap;

use crate::api::{MemoryTierSpec, Mitigation, MitigationName};

/// Canary share of traffic, 0 to 1.
pub const CANARY_SAMPLE_RATE: &str = "CANARY_SAMPLE_RATE";
pub const FAST_PATH_ENABLED: &str = "FAST_PATH_ENABLED";
pub const MEM0_READS_ENABLED: &str = "MEM0_READS_ENABLED";
pub const MEM0_SHADOW_MODE: &str = "MEM0_SHADOW_MODE";
/// Cache TTL, whole seconds.
pub const CACHE_TTL: &str = "CACHE_TTL";
/// Random TTL jitter, whole seconds.
pub const CACHE_TTL_JITTER: &str = "CACHE_TTL_JITTER";
pub const CACHE_SERVE_STALE: &str = "CACHE_SERVE_STALE";
/// How long stale entries may be served, whole seconds.
pub const CACHE_STALE_TTL: &str = "CACHE_STALE_TTL";
/// Largest cache value, bytes.
pub const MAX_CACHE_VALUE_SIZE: &str = "MAX_CACHE_VALUE_SIZE";
pub const MAX_CLINIC_CACHE_ITEMS: &str = "MAX_CLINIC_CACHE_ITEMS";
pub const CIRCUIT_BREAKER_NAME: &str = "CIRCUIT_BREAKER_NAME";
pub const CIRCUIT_BREAKER_FAILURE_THRESHOLD: &str = "CIRCUIT_BREAKER_FAILURE_THRESHOLD";
/// Calls slower than this count as failures, milliseconds.
pub const CIRCUIT_BREAKER_LATENCY_THRESHOLD_MS: &str = "CIRCUIT_BREAKER_LATENCY_THRESHOLD_MS";
/// Seconds of success after which the breaker closes.
pub const CIRCUIT_BREAKER_RESET_SECONDS: &str = "CIRCUIT_BREAKER_RESET_SECONDS";

/// Every fixed key the effective config carries (feature flags beyond the runbooks' three are
/// added from `spec.features`).
pub const KEYS: [&str; 14] = [
    CANARY_SAMPLE_RATE,
    FAST_PATH_ENABLED,
    MEM0_READS_ENABLED,
    MEM0_SHADOW_MODE,
    CACHE_TTL,
    CACHE_TTL_JITTER,
    CACHE_SERVE_STALE,
    CACHE_STALE_TTL,
    MAX_CACHE_VALUE_SIZE,
    MAX_CLINIC_CACHE_ITEMS,
    CIRCUIT_BREAKER_NAME,
    CIRCUIT_BREAKER_FAILURE_THRESHOLD,
    CIRCUIT_BREAKER_LATENCY_THRESHOLD_MS,
    CIRCUIT_BREAKER_RESET_SECONDS,
];

/// The effective configuration: key → value, in the form the application reads from its env.
pub type ConfigMap = BTreeMap<String, String>;

/// Format a canary rate the way the runbooks write it ("0.05", "0.1", "0.0").
pub fn format_rate(rate: f64) -> String {
    // Four decimals at most, so ramp arithmetic (0.05 + 0.05) renders as "0.1", not
    // "0.10000000000000001". Written digit by digit: this runs several times per policy step.
    let n = (rate.clamp(0.0, 1.0) * 10_000.0).round() as u32;
    let (whole, mut frac) = (n / 10_000, n % 10_000);
    let mut text = String::with_capacity(6);
    text.push(char::from(b'0' + whole as u8));
    text.push('.');
    if frac == 0 {
        text.push('0');
        return text;
    }
    let mut digits = [b'0'; 4];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    let len = 4 - digits.iter().rev().take_while(|d| **d == b'0').count();
    text.extend(digits[..len].iter().map(|d| char::from(*d)));
    text
}

/// A duration in the whole seconds the application's env contract uses, rounded up: a positive
/// duration never renders as 0 (`ttl: 500ms` would otherwise switch the cache off, and a
/// `resetAfter` under a second would reset the breaker at once).
pub fn whole_seconds(d: crate::api::Duration) -> String {
    let d = d.as_std();
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.to_string()
}

fn format_bool(b: bool) -> String {
    if b { "true" } else { "false" }.to_owned()
}

/// The baseline: the spec rendered into environment variables.
pub fn baseline(spec: &MemoryTierSpec) -> ConfigMap {
    let flag = |name: &str| format_bool(spec.features.get(name).copied().unwrap_or(false));
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(KEYS.len() + spec.features.len());
    // In key order, so that building the map needs no reordering.
    let fixed: [(&str, String); 14] = [
        (CACHE_SERVE_STALE, format_bool(spec.cache.serve_stale)),
        (CACHE_STALE_TTL, whole_seconds(spec.cache.stale_ttl)),
        (CACHE_TTL, whole_seconds(spec.cache.ttl)),
        (CACHE_TTL_JITTER, whole_seconds(spec.cache.ttl_jitter)),
        (CANARY_SAMPLE_RATE, format_rate(spec.canary.sample_rate)),
        (
            CIRCUIT_BREAKER_FAILURE_THRESHOLD,
            spec.breaker.failure_threshold.to_string(),
        ),
        (
            CIRCUIT_BREAKER_LATENCY_THRESHOLD_MS,
            spec.breaker
                .latency_threshold
                .as_std()
                .as_millis()
                .to_string(),
        ),
        (CIRCUIT_BREAKER_NAME, spec.breaker.name.clone()),
        (
            CIRCUIT_BREAKER_RESET_SECONDS,
            whole_seconds(spec.breaker.reset_after),
        ),
        // The runbooks' three flags are always rendered; the application must never guess a default.
        (FAST_PATH_ENABLED, flag(FAST_PATH_ENABLED)),
        (MAX_CACHE_VALUE_SIZE, spec.cache.max_value_bytes.to_string()),
        (
            MAX_CLINIC_CACHE_ITEMS,
            spec.cache.max_items_per_clinic.to_string(),
        ),
        (MEM0_READS_ENABLED, flag(MEM0_READS_ENABLED)),
        (MEM0_SHADOW_MODE, flag(MEM0_SHADOW_MODE)),
    ];
    pairs.extend(fixed.into_iter().map(|(k, v)| (k.to_owned(), v)));
    // Every other flag of spec.features passes through.
    for (name, on) in &spec.features {
        if !KEYS.contains(&name.as_str()) {
            pairs.push((name.clone(), format_bool(*on)));
        }
    }
    // Built in one go (the standard library sorts an already sorted list in one pass): much
    // cheaper than key-by-key insertion.
    ConfigMap::from_iter(pairs)
}

/// The more conservative of two values for a key.
fn conservative(key: &str, current: &str, proposed: &str) -> String {
    let pick = |keep_current: bool| if keep_current { current } else { proposed }.to_owned();
    match key {
        CANARY_SAMPLE_RATE => match (current.parse::<f64>(), proposed.parse::<f64>()) {
            (Ok(a), Ok(b)) => pick(a <= b),
            _ => pick(current.parse::<f64>().is_ok()),
        },
        CACHE_TTL | CACHE_STALE_TTL => match (current.parse::<u64>(), proposed.parse::<u64>()) {
            (Ok(a), Ok(b)) => pick(a >= b),
            _ => pick(current.parse::<u64>().is_ok()),
        },
        CACHE_SERVE_STALE => pick(current == "true"),
        // Feature flags (and anything else boolean): off is the safe side.
        _ if current == "false" || proposed == "false" => "false".to_owned(),
        _ => proposed.to_owned(),
    }
}

/// The effective config and, for each key that differs from the baseline, the mitigation that set it.
pub fn render(
    spec: &MemoryTierSpec,
    mitigations: &[Mitigation],
) -> (ConfigMap, BTreeMap<String, MitigationName>) {
    let mut effective = baseline(spec);
    let mut overridden_by = BTreeMap::new();
    // First merge the overrides per key (key, value, the mitigation that set it), then apply
    // them: the baseline value is still at hand to tell whether the key differs from it.
    let mut merged: Vec<(&String, String, MitigationName)> = Vec::new();
    for mitigation in mitigations {
        for (key, value) in &mitigation.overrides {
            let slot = merged.iter().position(|(k, _, _)| *k == key);
            let current = match slot {
                Some(i) => Some(merged[i].1.as_str()),
                None => effective.get(key).map(String::as_str),
            };
            let next = match current {
                Some(current) => conservative(key, current, value),
                None => value.clone(),
            };
            if current == Some(next.as_str()) {
                continue;
            }
            match slot {
                Some(i) => merged[i] = (key, next, mitigation.name),
                None => merged.push((key, next, mitigation.name)),
            }
        }
    }
    for (key, value, name) in merged {
        match effective.get_mut(key) {
            Some(slot) if *slot == value => continue,
            Some(slot) => *slot = value,
            None => {
                effective.insert(key.clone(), value);
            }
        }
        overridden_by.insert(key.clone(), name);
    }
    (effective, overridden_by)
}

/// A short, stable hash of a rendered config (hex SHA-256 prefix), for change detection.
pub fn hash(config: &ConfigMap) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for (k, v) in config {
        hasher.update(k.as_bytes());
        hasher.update([0]);
        hasher.update(v.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    let mut text = String::with_capacity(16);
    for b in &digest[..8] {
        use std::fmt::Write as _;
        let _ = write!(text, "{b:02x}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn spec() -> MemoryTierSpec {
        serde_json::from_value(serde_json::json!({"target": {"configMapName": "flags"}})).unwrap()
    }

    fn mitigation(name: MitigationName, overrides: &[(&str, &str)]) -> Mitigation {
        Mitigation {
            name,
            reason: "test".into(),
            since: Timestamp::UNIX_EPOCH,
            until: "never".into(),
            overrides: overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn baseline_has_the_runbook_defaults() {
        let base = baseline(&spec());
        assert_eq!(base[CANARY_SAMPLE_RATE], "0.1");
        assert_eq!(base[FAST_PATH_ENABLED], "true");
        assert_eq!(base[CACHE_TTL], "3600");
        assert_eq!(base[CACHE_TTL_JITTER], "300");
        assert_eq!(base[CACHE_STALE_TTL], "300");
        assert_eq!(base[CACHE_SERVE_STALE], "false");
        assert_eq!(base[MAX_CACHE_VALUE_SIZE], "100000");
        assert_eq!(base[CIRCUIT_BREAKER_LATENCY_THRESHOLD_MS], "5000");
        for key in KEYS {
            assert!(base.contains_key(key), "{key} missing");
        }
    }

    #[test]
    fn the_most_conservative_override_wins_in_any_order() {
        let a = mitigation(
            MitigationName::StampedeShedLoad,
            &[
                (CANARY_SAMPLE_RATE, "0.05"),
                (CACHE_TTL, "7200"),
                (CACHE_SERVE_STALE, "true"),
            ],
        );
        let b = mitigation(
            MitigationName::RollbackFeatures,
            &[(CANARY_SAMPLE_RATE, "0.0"), (MEM0_READS_ENABLED, "false")],
        );
        let (ab, by_ab) = render(&spec(), &[a.clone(), b.clone()]);
        let (ba, _) = render(&spec(), &[b, a]);
        assert_eq!(ab, ba);
        assert_eq!(ab[CANARY_SAMPLE_RATE], "0.0");
        assert_eq!(ab[CACHE_TTL], "7200");
        assert_eq!(ab[CACHE_SERVE_STALE], "true");
        assert_eq!(ab[MEM0_READS_ENABLED], "false");
        assert_eq!(by_ab[CANARY_SAMPLE_RATE], MitigationName::RollbackFeatures);
        assert_eq!(by_ab[CACHE_TTL], MitigationName::StampedeShedLoad);
    }

    #[test]
    fn a_mitigation_never_raises_the_canary_above_baseline() {
        let m = mitigation(MitigationName::ResumeRamp, &[(CANARY_SAMPLE_RATE, "0.5")]);
        let (eff, by) = render(&spec(), &[m]);
        assert_eq!(eff[CANARY_SAMPLE_RATE], "0.1");
        assert!(by.is_empty());
    }

    #[test]
    fn sub_second_durations_round_up_to_whole_seconds() {
        let mut spec = spec();
        spec.cache.ttl = crate::api::Duration::from_millis(500);
        spec.cache.stale_ttl = crate::api::Duration::from_millis(1500);
        spec.breaker.reset_after = crate::api::Duration::from_millis(2000);
        spec.cache.ttl_jitter = crate::api::Duration::ZERO;
        let base = baseline(&spec);
        assert_eq!(base[CACHE_TTL], "1", "a positive TTL never renders as 0");
        assert_eq!(base[CACHE_STALE_TTL], "2");
        assert_eq!(base[CIRCUIT_BREAKER_RESET_SECONDS], "2");
        assert_eq!(base[CACHE_TTL_JITTER], "0");
    }

    #[test]
    fn rates_render_cleanly() {
        assert_eq!(format_rate(0.05 + 0.05), "0.1");
        assert_eq!(format_rate(0.0005), "0.0005");
        assert_eq!(format_rate(0.1234), "0.1234");
        assert_eq!(format_rate(0.12345), "0.1235");
        assert_eq!(format_rate(2.0), "1.0");
        assert_eq!(format_rate(-1.0), "0.0");
        assert_eq!(format_rate(f64::NAN), "0.0");
        assert_eq!(format_rate(0.0), "0.0");
        assert_eq!(format_rate(1.0), "1.0");
        assert_eq!(format_rate(0.05), "0.05");
    }
}
