//! Shared test harness: real servers started by the tests, and an in-process Kubernetes API
//! server. Each test binary uses only a part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod apiserver;
pub mod exporter;
pub mod http;
pub mod redis_cluster;
pub mod secret_api;
pub mod servers;
pub mod tiers;
