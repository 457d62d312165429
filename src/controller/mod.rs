//! The kube-runtime controller: read → validate → observe → decide → act → status.

pub mod leader;
pub mod server;
pub mod telemetry;
