//! Actuators: each carries out one kind of [`crate::policy::Action`], idempotently and within
//! bounds, and returns a typed outcome that maps onto the status types (`ActionRecord`,
//! `RemediationOutcome`, `AuditOutcome`). Each takes what it needs explicitly (a spec section,
//! resolved secrets, a kube `Client`); the controller dispatches.
//!
//! Secrets arrive resolved, as [`crate::secret::SecretString`]; no actuator writes one into a log, an
//! error, an Event or status.

pub mod configmap;
pub mod http;
pub mod notify;
pub mod record;
pub mod redis;
pub mod report;
pub mod restart;
pub mod warm;
