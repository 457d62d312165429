//! A fake mem0 (the memory API of the runbooks) living in the process, with fault switches, and
//! the client that reaches it through the circuit breaker.
//!
//! Reads are on the request path and fall back to "no memory" (degraded) when mem0 fails or the
//! breaker is open. Shadow writes run after the answer, in the background, at most
//! [`MAX_SHADOW_WRITES`] at a time; beyond that they are dropped and counted, never queued.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::breaker::{Breaker, CallError};
use super::metrics::{Metrics, mem0_write, outcome};

/// Shadow writes in flight at most.
pub const MAX_SHADOW_WRITES: usize = 64;
/// Memories kept per clinic by the fake.
const MEMORIES_PER_CLINIC: usize = 20;
/// Clinics the fake keeps memories for; beyond that it forgets the oldest clinic's.
const MAX_CLINICS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Mem0Error {
    #[error("mem0 unavailable: 503 Service Unavailable (injected outage)")]
    Outage,
}

/// The fake service.
pub struct FakeMem0 {
    base_latency: Duration,
    outage: AtomicBool,
    added_latency_ms: AtomicU64,
    store: Mutex<Store>,
}

#[derive(Default)]
struct Store {
    by_clinic: HashMap<u32, VecDeque<String>>,
    order: VecDeque<u32>,
}

impl FakeMem0 {
    pub fn new(base_latency: Duration) -> Self {
        FakeMem0 {
            base_latency,
            outage: AtomicBool::new(false),
            added_latency_ms: AtomicU64::new(0),
            store: Mutex::new(Store::default()),
        }
    }

    pub fn set_outage(&self, on: bool) {
        self.outage.store(on, Ordering::Relaxed);
    }

    pub fn outage(&self) -> bool {
        self.outage.load(Ordering::Relaxed)
    }

    pub fn set_added_latency(&self, ms: u64) {
        self.added_latency_ms.store(ms, Ordering::Relaxed);
    }

    pub fn added_latency_ms(&self) -> u64 {
        self.added_latency_ms.load(Ordering::Relaxed)
    }

    async fn round_trip(&self) -> Result<(), Mem0Error> {
        let added = Duration::from_millis(self.added_latency_ms());
        tokio::time::sleep(self.base_latency + added).await;
        if self.outage() {
            Err(Mem0Error::Outage)
        } else {
            Ok(())
        }
    }

    pub async fn health(&self) -> Result<(), Mem0Error> {
        self.round_trip().await
    }

    pub async fn write(&self, clinic: u32, memory: String) -> Result<(), Mem0Error> {
        self.round_trip().await?;
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        if !store.by_clinic.contains_key(&clinic) {
            if store.order.len() >= MAX_CLINICS
                && let Some(oldest) = store.order.pop_front()
            {
                store.by_clinic.remove(&oldest);
            }
            store.order.push_back(clinic);
        }
        let memories = store.by_clinic.entry(clinic).or_default();
        if memories.len() >= MEMORIES_PER_CLINIC {
            memories.pop_front();
        }
        memories.push_back(memory);
        Ok(())
    }

    pub async fn read(&self, clinic: u32) -> Result<Vec<String>, Mem0Error> {
        self.round_trip().await?;
        let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        Ok(store
            .by_clinic
            .get(&clinic)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default())
    }
}

/// What a memory read gave the request.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ReadOutcome {
    Ok {
        memories: Vec<String>,
    },
    /// Degraded: mem0 failed or was too slow; the answer carries no memory.
    Failed {
        reason: String,
    },
    /// Degraded: the breaker refused the call.
    BreakerOpen,
}

/// mem0 as the request handlers see it: every call goes through the breaker.
pub struct Mem0Client {
    mem0: Arc<FakeMem0>,
    breaker: Arc<Breaker>,
    metrics: Arc<Metrics>,
    shadow_slots: Arc<Semaphore>,
}

impl Mem0Client {
    pub fn new(mem0: Arc<FakeMem0>, breaker: Arc<Breaker>, metrics: Arc<Metrics>) -> Self {
        Mem0Client {
            mem0,
            breaker,
            metrics,
            shadow_slots: Arc::new(Semaphore::new(MAX_SHADOW_WRITES)),
        }
    }

    pub fn fake(&self) -> &FakeMem0 {
        &self.mem0
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    pub async fn read(&self, clinic: u32) -> ReadOutcome {
        let result = self.breaker.call(self.mem0.read(clinic)).await;
        self.metrics
            .mem0_reads
            .get_or_create(&outcome(result.is_ok()))
            .inc();
        match result {
            Ok(memories) => ReadOutcome::Ok { memories },
            Err(CallError::Open(_)) => ReadOutcome::BreakerOpen,
            Err(e) => {
                tracing::debug!(clinic_id = clinic, error = %e, "mem0 read failed; answering without memory");
                ReadOutcome::Failed {
                    reason: e.to_string(),
                }
            }
        }
    }

    /// Start a shadow write; returns false when it was dropped (too many in flight). Only the
    /// canary path writes to mem0, so the write is counted in the canary cohort.
    pub fn shadow_write(self: &Arc<Self>, clinic: u32, memory: String) -> bool {
        let Ok(slot) = self.shadow_slots.clone().try_acquire_owned() else {
            self.metrics.mem0_shadow_dropped.inc();
            return false;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let result = this.breaker.call(this.mem0.write(clinic, memory)).await;
            this.metrics
                .mem0_writes
                .get_or_create(&mem0_write(result.is_ok(), true))
                .inc();
            let ok = result.is_ok();
            this.metrics
                .emit(|| super::events::Event::mem0_write(ok, true));
            if let Err(e) = result {
                tracing::debug!(clinic_id = clinic, error = %e, "mem0 write failed");
            }
            drop(slot);
        });
        true
    }

    /// Keep the breaker's clock going: open → half-open after the reset period, and a health
    /// probe as the trial call when half-open and no request has tried within `idle`.
    pub async fn supervise(self: Arc<Self>, every: Duration, idle: Duration) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Some(waited) = self.breaker.tick()
                && waited >= idle
            {
                let result = self.breaker.call(self.mem0.health()).await;
                tracing::info!(
                    ok = result.is_ok(),
                    "mem0 health probe as the breaker's trial call"
                );
            }
        }
    }
}
