//! Many simulated canary runs, to measure how the rollback criteria judge cohorts: how often an
//! A/A run (the canary's code is the stable's) is rolled back, and how long a real regression on
//! the canary takes to be. A trial is a [`Scenario`] like any other (request counts drawn from a
//! Poisson law, errors drawn request by request, a noisy P50), so the property tests and the
//! benchmark measure the same policy `tierguard simulate` runs.

use std::collections::BTreeMap;

use crate::api::signals::Cohort;
use crate::api::{BreakerState, Duration, MemoryTier, Signal, SignalValue, Subject};
use crate::policy::Change;

use super::scenario::{Input, Inputs, Scenario, SignalPatch, TimelineStep};
use super::{EntryKind, SimulateError, run};

/// The traffic of one run, the same in both cohorts unless a regression says otherwise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Traffic {
    /// Canary requests per second.
    pub canary_per_second: f64,
    /// The canary's share of all requests (the runbooks' canary rate is 0.1).
    pub canary_share: f64,
    /// Both cohorts' error rate, percent.
    pub error_percent: f64,
    /// Both cohorts' mean P50, milliseconds, drawn at every tick with a standard deviation of an
    /// eighth of it.
    pub p50_ms: f64,
}

/// What goes wrong on the canary only, from the regression's start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Regression {
    /// Nothing: an A/A run.
    None,
    /// The canary's error rate is this many points above the stable's.
    ErrorPoints(f64),
    /// The canary's P50 is this many milliseconds above the stable's.
    P50Ms(f64),
}

/// One simulated run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trial {
    pub traffic: Traffic,
    pub regression: Regression,
    /// When the regression starts.
    pub regression_from: Duration,
    /// How often the policy runs. The error test takes one batch per rate window whatever the
    /// tick, so a tick of one rate window measures it as a 30 s tick does, ten times faster.
    pub tick: Duration,
    pub duration: Duration,
    pub seed: u64,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct TrialOutcome {
    /// Seconds from the start to the first rollback phase, and its reason; none if never.
    pub rollback: Option<(f64, String)>,
}

impl Trial {
    /// The run as a scenario: the tier's rate window sets what one request count covers.
    pub fn scenario(&self, rate_window: Duration) -> Scenario {
        let t = self.traffic;
        let window = rate_window.as_secs_f64();
        let canary = t.canary_per_second * window;
        let stable = canary * (1.0 - t.canary_share) / t.canary_share;
        // A regression's extra latency is a fixed delay on top of the same noise.
        let sd = t.p50_ms / 8.0;
        let cohort = |requests: f64, error_percent: f64, p50: f64| -> Inputs {
            BTreeMap::from([
                (Signal::Requests, Some(Input::Poisson { mean: requests })),
                (
                    Signal::ErrorRatePercent,
                    Some(Input::Binomial {
                        percent: error_percent,
                    }),
                ),
                (Signal::P50LatencyMs, Some(Input::Normal { mean: p50, sd })),
                (Signal::Mem0WriteSuccessPercent, Some(fixed(99.9))),
            ])
        };
        let service = |p50: f64| -> Inputs {
            BTreeMap::from([
                (Signal::Requests, Some(fixed(canary + stable))),
                (Signal::P50LatencyMs, Some(fixed(p50))),
                (Signal::ErrorRatePercent, Some(fixed(t.error_percent))),
                (Signal::CacheHitRatePercent, Some(fixed(97.0))),
                (Signal::Mem0WriteSuccessPercent, Some(fixed(99.9))),
                (
                    Signal::BreakerState,
                    Some(Input::Fixed(SignalValue::Breaker(BreakerState::Closed))),
                ),
            ])
        };
        let start = SignalPatch {
            values: service(t.p50_ms),
            cohorts: BTreeMap::from([
                (Cohort::Canary, cohort(canary, t.error_percent, t.p50_ms)),
                (Cohort::Stable, cohort(stable, t.error_percent, t.p50_ms)),
            ]),
            evictions_per_second: None,
            ..SignalPatch::default()
        };
        let (canary_errors, canary_p50) = match self.regression {
            Regression::None => (t.error_percent, t.p50_ms),
            Regression::ErrorPoints(points) => ((t.error_percent + points).min(100.0), t.p50_ms),
            Regression::P50Ms(ms) => (t.error_percent, t.p50_ms + ms),
        };
        let mut timeline = Vec::new();
        if self.regression != Regression::None {
            let share = t.canary_share;
            timeline.push(TimelineStep {
                at: self.regression_from,
                every: None,
                until: None,
                set: Some(SignalPatch {
                    values: BTreeMap::from([
                        (
                            Signal::ErrorRatePercent,
                            Some(fixed(
                                share * canary_errors + (1.0 - share) * t.error_percent,
                            )),
                        ),
                        (
                            Signal::P50LatencyMs,
                            Some(fixed(share * canary_p50 + (1.0 - share) * t.p50_ms)),
                        ),
                    ]),
                    cohorts: BTreeMap::from([(
                        Cohort::Canary,
                        cohort(canary, canary_errors, canary_p50),
                    )]),
                    evictions_per_second: None,
                    ..SignalPatch::default()
                }),
                event: None,
                probe: None,
                probe_retry_after: None,
            });
        }
        Scenario {
            description: None,
            start: "2026-01-01T00:00:00Z".parse().expect("a valid timestamp"),
            seed: self.seed,
            tick: self.tick,
            duration: self.duration,
            signals: start,
            timeline,
        }
    }

    /// Run the trial against a tier.
    pub fn run(&self, tier: &MemoryTier) -> Result<TrialOutcome, SimulateError> {
        let outcome = run(tier, &self.scenario(tier.spec.metrics.rate_window))?;
        let rollback = outcome.entries.iter().find_map(|e| match &e.what {
            EntryKind::Change(Change::Transition {
                subject: Subject::Rollback,
                from,
                reason,
                ..
            }) if from == "none" => Some((e.t, reason.clone())),
            _ => None,
        });
        Ok(TrialOutcome { rollback })
    }
}

fn fixed(v: f64) -> Input {
    Input::Fixed(SignalValue::Number(v))
}
