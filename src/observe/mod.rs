//! Observers: turn Prometheus, a /metrics endpoint and Redis INFO into one [`crate::api::Observation`].
