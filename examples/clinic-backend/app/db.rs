//! A deliberately slow in-process "database" of clinics and their providers.
//!
//! Each query holds one of a few connections for the configured latency; queries wait for a
//! connection at most `queue_timeout` and are refused after that, so a cache stampede really
//! saturates it: latency climbs, then requests fail with 503.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;

use super::metrics::Metrics;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DbError {
    #[error("clinic {0} does not exist")]
    NoClinic(u32),
    #[error("clinic {0} has no provider {1}")]
    NoProvider(u32, u32),
    #[error("database overloaded: no connection free within {0:?}")]
    Overloaded(Duration),
}

#[derive(Debug, Clone, Serialize)]
pub struct Clinic {
    pub id: u32,
    pub name: String,
    pub city: String,
    pub timezone: String,
    pub phone: String,
    pub services: Vec<String>,
    pub provider_ids: Vec<u32>,
    /// Filler, present only while the large-values fault is on for this clinic.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub notes: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Provider {
    pub clinic_id: u32,
    pub id: u32,
    pub name: String,
    pub specialty: String,
    pub accepting_patients: bool,
}

const CITIES: [(&str, &str); 5] = [
    ("Lisbon", "Europe/Lisbon"),
    ("Austin", "America/Chicago"),
    ("Denver", "America/Denver"),
    ("Porto", "Europe/Lisbon"),
    ("Seattle", "America/Los_Angeles"),
];
const SPECIALTIES: [&str; 6] = [
    "family medicine",
    "pediatrics",
    "dermatology",
    "cardiology",
    "physiotherapy",
    "dentistry",
];

/// Clinic ids are 1..=clinics; clinic N has 5 + N % 20 providers.
pub fn provider_count(clinic: u32) -> u32 {
    5 + clinic % 20
}

pub struct Database {
    clinics: u32,
    latency_ms: AtomicU64,
    queue_timeout: Duration,
    connections: Semaphore,
    /// Clinic id → filler bytes (the large-values fault).
    large_values: RwLock<BTreeMap<u32, usize>>,
    metrics: Arc<Metrics>,
}

impl Database {
    pub fn new(
        clinics: u32,
        latency: Duration,
        connections: usize,
        queue_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Database {
            clinics,
            latency_ms: AtomicU64::new(latency.as_millis() as u64),
            queue_timeout,
            connections: Semaphore::new(connections.max(1)),
            large_values: RwLock::new(BTreeMap::new()),
            metrics,
        }
    }

    pub fn exists(&self, clinic: u32) -> bool {
        (1..=self.clinics).contains(&clinic)
    }

    pub fn latency_ms(&self) -> u64 {
        self.latency_ms.load(Ordering::Relaxed)
    }

    pub fn set_latency_ms(&self, ms: u64) {
        self.latency_ms.store(ms, Ordering::Relaxed);
    }

    /// Make these clinics' rows `bytes` larger (0 or an empty map turns the fault off).
    pub fn set_large_values(&self, clinics: BTreeMap<u32, usize>) {
        *self.large_values.write().unwrap_or_else(|p| p.into_inner()) = clinics;
    }

    pub fn large_values(&self) -> BTreeMap<u32, usize> {
        self.large_values
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Hold a connection for the query's latency.
    async fn query(&self) -> Result<(), DbError> {
        self.metrics.db_in_flight.inc();
        let permit = tokio::time::timeout(self.queue_timeout, self.connections.acquire()).await;
        let result = match permit {
            Ok(Ok(_connection)) => {
                tokio::time::sleep(Duration::from_millis(self.latency_ms())).await;
                self.metrics.db_queries.inc();
                Ok(())
            }
            // The semaphore is never closed; a timeout is the only refusal.
            _ => {
                self.metrics.db_rejected.inc();
                Err(DbError::Overloaded(self.queue_timeout))
            }
        };
        self.metrics.db_in_flight.dec();
        result
    }

    pub async fn clinic(&self, id: u32) -> Result<Clinic, DbError> {
        if !self.exists(id) {
            return Err(DbError::NoClinic(id));
        }
        self.query().await?;
        let (city, timezone) = CITIES[id as usize % CITIES.len()];
        let filler = self
            .large_values
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied()
            .unwrap_or(0);
        Ok(Clinic {
            id,
            name: format!("Clinic {id}"),
            city: city.to_owned(),
            timezone: timezone.to_owned(),
            phone: format!("+1-555-{:04}", id % 10_000),
            services: SPECIALTIES
                .iter()
                .cycle()
                .skip(id as usize % SPECIALTIES.len())
                .take(3)
                .map(|s| s.to_string())
                .collect(),
            provider_ids: (1..=provider_count(id)).collect(),
            notes: "x".repeat(filler),
        })
    }

    pub async fn provider(&self, clinic: u32, id: u32) -> Result<Provider, DbError> {
        if !self.exists(clinic) {
            return Err(DbError::NoClinic(clinic));
        }
        if id == 0 || id > provider_count(clinic) {
            return Err(DbError::NoProvider(clinic, id));
        }
        self.query().await?;
        Ok(Provider {
            clinic_id: clinic,
            id,
            name: format!("Dr. Provider {clinic}-{id}"),
            specialty: SPECIALTIES[(clinic + id) as usize % SPECIALTIES.len()].to_owned(),
            accepting_patients: !(clinic + id).is_multiple_of(3),
        })
    }
}
