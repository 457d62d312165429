//! tierguard: a Kubernetes controller that runs the incident runbooks of a Redis-backed memory tier.
//!
//! - [`api`]: the `MemoryTier` custom resource (spec = the baseline humans own, status = what the
//!   controller saw, did and remembers).
//! - [`policy`]: the pure decision core; no IO, no clock.
//! - [`observe`]: signals from Prometheus, a /metrics endpoint and Redis.
//! - [`act`]: ConfigMaps, cache warming, Redis remediation, notifications, incident reports.
//! - [`controller`]: the kube-runtime reconcile loop.
//! - [`simulate`]: the policy on a virtual clock over a recorded or scripted incident.
//! - [`cli`]: the `tierguard` command.
//! - [`remote`]: answers from the network read within size and time bounds, and remote text
//!   made safe to show.
//! - [`shutdown`]: stopping on SIGTERM within the pod's grace period.
//! - [`build_info`]: version, commit and build date.
//! - [`secret`]: keeping Secret values out of every log, error, Event and status.
//! - [`destinations`]: where the controller may send requests on a tier's behalf.
#![forbid(unsafe_code)]

pub mod act;
pub mod api;
pub mod build_info;
pub mod cli;
pub mod controller;
pub mod destinations;
pub mod observe;
pub mod policy;
pub mod remote;
pub mod secret;
pub mod shutdown;
pub mod simulate;

/// Install the process-wide rustls crypto provider (ring). kube and reqwest both use rustls; without
/// an explicit provider, building a client can panic. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
