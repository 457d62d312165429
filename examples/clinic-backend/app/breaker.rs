//! A circuit breaker with the runbooks' semantics.
//!
//! - **closed**: calls pass; `failure_threshold` consecutive failures open it. A call slower than
//!   `latency_threshold` is abandoned at that point and counts as a failure.
//! - **open**: calls are refused at once (the caller falls back); after `reset_after` it turns
//!   half-open.
//! - **half-open**: one trial call passes (others are refused); success closes the breaker,
//!   failure opens it again for another `reset_after`.
//!
//! The open → half-open step is driven by time ([`Breaker::tick`]), so the state gauge reads
//! half-open after `reset_after` even when nothing calls; the owner then runs a health probe as
//! the trial call so the breaker also recovers while no request uses the dependency.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::flags::BreakerSettings;
use super::metrics::{BreakerLabels, Metrics, TransitionLabels};

/// The state as the `circuit_breaker_state` gauge encodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
        }
    }
}

#[derive(Debug)]
enum Phase {
    Closed { failures: u32 },
    Open { since: Instant },
    HalfOpen { since: Instant, trial_running: bool },
}

impl Phase {
    fn state(&self) -> State {
        match self {
            Phase::Closed { .. } => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen { .. } => State::HalfOpen,
        }
    }
}

struct Inner {
    phase: Phase,
    settings: BreakerSettings,
    last_failure: Option<String>,
}

/// Why a call through the breaker did not succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("circuit breaker {0} is open")]
    Open(String),
    #[error("slower than the latency threshold ({0:?})")]
    TooSlow(Duration),
    #[error("{0}")]
    Failed(String),
}

/// A snapshot for the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Snapshot {
    pub name: String,
    pub state: State,
    pub consecutive_failures: u32,
    /// How long it has been in the current open or half-open state.
    pub in_state_ms: Option<u64>,
    pub last_failure: Option<String>,
    pub settings: BreakerSettings,
}

pub struct Breaker {
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
}

/// Leave to the call: releases a half-open trial slot if the call is dropped unfinished.
struct Permit<'a> {
    breaker: &'a Breaker,
    trial: bool,
    done: bool,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.trial && !self.done {
            let mut inner = self.breaker.lock();
            if let Phase::HalfOpen { trial_running, .. } = &mut inner.phase {
                *trial_running = false;
            }
        }
    }
}

impl Breaker {
    pub fn new(settings: BreakerSettings, metrics: Arc<Metrics>) -> Self {
        let breaker = Breaker {
            inner: Mutex::new(Inner {
                phase: Phase::Closed { failures: 0 },
                settings,
                last_failure: None,
            }),
            metrics,
        };
        let inner = breaker.lock();
        breaker.publish(&inner.settings.name, State::Closed);
        drop(inner);
        breaker
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, name: &str, state: State) {
        self.metrics
            .breaker_state
            .get_or_create(&BreakerLabels {
                breaker: name.to_owned(),
            })
            .set(state.gauge());
    }

    fn transition(&self, inner: &mut Inner, phase: Phase) {
        let from = inner.phase.state();
        let to = phase.state();
        inner.phase = phase;
        if from == to {
            return;
        }
        let name = inner.settings.name.clone();
        self.publish(&name, to);
        let failures = match inner.phase {
            Phase::Closed { failures } => failures,
            _ => inner.settings.failure_threshold,
        };
        self.metrics
            .emit(|| super::events::Event::breaker_change(&name, to.label(), failures));
        self.metrics
            .breaker_transitions
            .get_or_create(&TransitionLabels {
                breaker: name.clone(),
                to: to.label().to_owned(),
            })
            .inc();
        match to {
            State::Open => tracing::warn!(
                breaker = %name,
                last_failure = inner.last_failure.as_deref().unwrap_or(""),
                "Circuit breaker OPEN for {name}"
            ),
            State::HalfOpen => {
                tracing::info!(breaker = %name, "Circuit breaker HALF-OPEN for {name}: the next call is a trial")
            }
            State::Closed => {
                tracing::info!(breaker = %name, "Circuit breaker CLOSED for {name}: the trial call succeeded")
            }
        }
    }

    /// Apply new settings; the state is kept. A new name moves the gauge to the new label.
    pub fn configure(&self, settings: BreakerSettings) {
        let mut inner = self.lock();
        if inner.settings == settings {
            return;
        }
        if inner.settings.name != settings.name {
            self.metrics.breaker_state.remove(&BreakerLabels {
                breaker: inner.settings.name.clone(),
            });
            self.publish(&settings.name, inner.phase.state());
        }
        inner.settings = settings;
    }

    pub fn state(&self) -> State {
        self.lock().phase.state()
    }

    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        let now = Instant::now();
        let (failures, since) = match &inner.phase {
            Phase::Closed { failures } => (*failures, None),
            Phase::Open { since } | Phase::HalfOpen { since, .. } => (0, Some(*since)),
        };
        Snapshot {
            name: inner.settings.name.clone(),
            state: inner.phase.state(),
            consecutive_failures: failures,
            in_state_ms: since.map(|s| now.duration_since(s).as_millis() as u64),
            last_failure: inner.last_failure.clone(),
            settings: inner.settings.clone(),
        }
    }

    /// Turn open into half-open once `reset_after` has passed. Returns how long the breaker has
    /// been half-open without a trial call, if it is half-open and idle.
    pub fn tick(&self) -> Option<Duration> {
        let mut inner = self.lock();
        let now = Instant::now();
        match inner.phase {
            Phase::Open { since } if now.duration_since(since) >= inner.settings.reset_after => {
                self.transition(
                    &mut inner,
                    Phase::HalfOpen {
                        since: now,
                        trial_running: false,
                    },
                );
                Some(Duration::ZERO)
            }
            Phase::HalfOpen {
                since,
                trial_running: false,
            } => Some(now.duration_since(since)),
            _ => None,
        }
    }

    fn acquire(&self) -> Result<Permit<'_>, CallError> {
        let mut inner = self.lock();
        let now = Instant::now();
        if let Phase::Open { since } = inner.phase
            && now.duration_since(since) >= inner.settings.reset_after
        {
            self.transition(
                &mut inner,
                Phase::HalfOpen {
                    since: now,
                    trial_running: false,
                },
            );
        }
        let name = inner.settings.name.clone();
        match &mut inner.phase {
            Phase::Closed { .. } => Ok(Permit {
                breaker: self,
                trial: false,
                done: false,
            }),
            Phase::Open { .. } => Err(CallError::Open(name)),
            Phase::HalfOpen { trial_running, .. } => {
                if *trial_running {
                    Err(CallError::Open(name))
                } else {
                    *trial_running = true;
                    Ok(Permit {
                        breaker: self,
                        trial: true,
                        done: false,
                    })
                }
            }
        }
    }

    fn record(&self, permit: &mut Permit<'_>, failure: Option<String>) {
        permit.done = true;
        let mut inner = self.lock();
        let now = Instant::now();
        match failure {
            None => {
                if permit.trial {
                    if matches!(inner.phase, Phase::HalfOpen { .. }) {
                        self.transition(&mut inner, Phase::Closed { failures: 0 });
                    }
                } else if let Phase::Closed { failures } = &mut inner.phase {
                    *failures = 0;
                }
            }
            Some(reason) => {
                inner.last_failure = Some(reason);
                let threshold = inner.settings.failure_threshold;
                let open = match &mut inner.phase {
                    Phase::HalfOpen { .. } => permit.trial,
                    Phase::Closed { failures } => {
                        *failures += 1;
                        *failures >= threshold
                    }
                    Phase::Open { .. } => false,
                };
                if open {
                    self.transition(&mut inner, Phase::Open { since: now });
                }
            }
        }
    }

    /// Run `call` through the breaker, abandoning it at the latency threshold.
    pub async fn call<T, E, F>(&self, call: F) -> Result<T, CallError>
    where
        F: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let mut permit = self.acquire()?;
        let limit = self.lock().settings.latency_threshold;
        let result = match tokio::time::timeout(limit, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(CallError::Failed(e.to_string())),
            Err(_) => Err(CallError::TooSlow(limit)),
        };
        self.record(&mut permit, result.as_ref().err().map(|e| e.to_string()));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(threshold: u32, latency_ms: u64, reset_ms: u64) -> BreakerSettings {
        BreakerSettings {
            name: "mem0".into(),
            failure_threshold: threshold,
            latency_threshold: Duration::from_millis(latency_ms),
            reset_after: Duration::from_millis(reset_ms),
        }
    }

    async fn fail(b: &Breaker) -> Result<(), CallError> {
        b.call(async { Err::<(), _>("down") }).await
    }

    async fn succeed(b: &Breaker) -> Result<(), CallError> {
        b.call(async { Ok::<(), &str>(()) }).await
    }

    #[tokio::test]
    async fn opens_after_consecutive_failures_only() {
        let b = Breaker::new(settings(3, 1000, 60_000), Arc::new(Metrics::new([])));
        fail(&b).await.unwrap_err();
        fail(&b).await.unwrap_err();
        succeed(&b).await.unwrap(); // resets the count
        fail(&b).await.unwrap_err();
        fail(&b).await.unwrap_err();
        assert_eq!(b.state(), State::Closed);
        fail(&b).await.unwrap_err();
        assert_eq!(b.state(), State::Open);
        assert_eq!(succeed(&b).await, Err(CallError::Open("mem0".into())));
    }

    #[tokio::test]
    async fn a_slow_call_is_a_failure() {
        let b = Breaker::new(settings(1, 100, 60_000), Arc::new(Metrics::new([])));
        let slow = b
            .call(async {
                tokio::time::sleep(Duration::from_millis(150)).await;
                Ok::<(), &str>(())
            })
            .await;
        assert_eq!(slow, Err(CallError::TooSlow(Duration::from_millis(100))));
        assert_eq!(b.state(), State::Open);
    }

    #[tokio::test]
    async fn half_open_after_reset_then_one_trial_decides() {
        let b = Breaker::new(settings(1, 1000, 100), Arc::new(Metrics::new([])));
        fail(&b).await.unwrap_err();
        assert_eq!(b.tick(), None);
        tokio::time::sleep(Duration::from_millis(101)).await;
        assert_eq!(b.tick(), Some(Duration::ZERO));
        assert_eq!(b.state(), State::HalfOpen);
        // A failed trial opens it again for a full reset period.
        fail(&b).await.unwrap_err();
        assert_eq!(b.state(), State::Open);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(b.tick(), None);
        tokio::time::sleep(Duration::from_millis(100)).await;
        succeed(&b).await.unwrap();
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test]
    async fn only_one_trial_at_a_time_and_a_dropped_trial_frees_the_slot() {
        let b = Arc::new(Breaker::new(
            settings(1, 10_000, 10),
            Arc::new(Metrics::new([])),
        ));
        fail(&b).await.unwrap_err();
        tokio::time::sleep(Duration::from_millis(11)).await;
        let slow = {
            let b = b.clone();
            tokio::spawn(async move {
                b.call(async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok::<(), &str>(())
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(matches!(succeed(&b).await, Err(CallError::Open(_))));
        slow.abort();
        let _ = slow.await;
        succeed(&b).await.unwrap();
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn renaming_moves_the_gauge() {
        let metrics = Arc::new(Metrics::new([]));
        let b = Breaker::new(settings(1, 10, 10), metrics.clone());
        b.configure(BreakerSettings {
            name: "memory".into(),
            ..settings(1, 10, 10)
        });
        let text = metrics.encode();
        assert!(
            text.contains("circuit_breaker_state{breaker=\"memory\"} 0"),
            "{text}"
        );
        assert!(!text.contains("breaker=\"mem0\""), "{text}");
    }
}
