//! How the rollback criteria judge the canary at the runbooks' 10 % canary: how long a regression
//! confined to the canary takes to be rolled back, at several canary request rates, and how often
//! an A/A day (the same code in both cohorts) is rolled back. Every run is a seeded
//! `tierguard simulate` scenario at the default 30 s interval against the runbook defaults.
//!
//! Run with `cargo bench --bench cohorts` (release build; about a minute).

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tierguard::api::{Duration, MemoryTier};
use tierguard::simulate::trial::{Regression, Traffic, Trial};

const RUNS: u64 = 100;
const AA_DAYS: u64 = 2000;
const CANARY_RATES: [f64; 4] = [1.0, 3.0, 10.0, 50.0];

fn defaults() -> MemoryTier {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/memorytier-defaults.yaml");
    tierguard::simulate::load_manifest(&path).expect("the defaults manifest loads")
}

fn traffic(canary_per_second: f64) -> Traffic {
    Traffic {
        canary_per_second,
        canary_share: 0.1,
        error_percent: 1.0,
        p50_ms: 300.0,
    }
}

/// Minutes from the regression's start to the rollback, over `RUNS` seeds; `None` where a run
/// was not rolled back within its duration.
fn detection(
    tier: &MemoryTier,
    traffic: Traffic,
    regression: Regression,
    from: u64,
) -> Vec<Option<f64>> {
    (0..RUNS)
        .map(|seed| {
            let trial = Trial {
                traffic,
                regression,
                regression_from: Duration::from_secs(from),
                tick: tier.spec.metrics.interval,
                duration: Duration::from_secs(from + 12 * 3600),
                seed,
            };
            let outcome = trial.run(tier).expect("the run");
            outcome
                .rollback
                .map(|(t, _)| (t - from as f64) / 60.0)
                .filter(|m| *m >= 0.0)
        })
        .collect()
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn print_detection(tier: &MemoryTier, name: &str, regression: Regression, from: u64) {
    println!("{name}, regression from +{}m:", from / 60);
    println!("  canary req/s   median min   p95 min   max min   not rolled back in 12 h");
    for rate in CANARY_RATES {
        let runs = detection(tier, traffic(rate), regression, from);
        let mut found: Vec<f64> = runs.iter().flatten().copied().collect();
        found.sort_by(f64::total_cmp);
        let missed = runs.len() - found.len();
        if found.is_empty() {
            println!(
                "  {rate:>12}   {:>10}   {:>7}   {:>7}   {missed}/{RUNS}",
                "-", "-", "-"
            );
            continue;
        }
        println!(
            "  {rate:>12}   {:>10.1}   {:>7.1}   {:>7.1}   {missed}/{RUNS}",
            quantile(&found, 0.5),
            quantile(&found, 0.95),
            found[found.len() - 1],
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; this harness has no options.
    let tier = defaults();
    let started = std::time::Instant::now();
    print_detection(
        &tier,
        "canary errors +3 points (1% -> 4%)",
        Regression::ErrorPoints(3.0),
        0,
    );
    // Half an hour after a rolling test started: the worst case for the late regression.
    print_detection(
        &tier,
        "canary errors +3 points (1% -> 4%)",
        Regression::ErrorPoints(3.0),
        6 * 3600 + 1800,
    );
    print_detection(
        &tier,
        "canary P50 +1000 ms (300 -> 1300 ms)",
        Regression::P50Ms(1000.0),
        0,
    );

    let mut rng = StdRng::seed_from_u64(14);
    let mut rolled_back = 0u64;
    for _ in 0..AA_DAYS {
        let trial = Trial {
            traffic: Traffic {
                canary_per_second: rng.random_range(1.0..=50.0),
                canary_share: 0.1,
                error_percent: rng.random_range(0.1..=5.0),
                p50_ms: rng.random_range(150.0..=600.0),
            },
            regression: Regression::None,
            regression_from: Duration::from_secs(0),
            tick: tier.spec.metrics.interval,
            duration: Duration::from_secs(24 * 3600),
            seed: rng.random(),
        };
        if trial.run(&tier).expect("the run").rollback.is_some() {
            rolled_back += 1;
        }
    }
    println!(
        "A/A days (1-50 canary req/s, 0.1-5% errors, 150-600 ms P50, 30 s ticks): {rolled_back} of {AA_DAYS} rolled back = {:.4} (alpha {})",
        rolled_back as f64 / AA_DAYS as f64,
        tier.spec.rollback.alpha
    );
    println!("total {:.1} s", started.elapsed().as_secs_f64());
}
