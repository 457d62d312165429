//! Shared test harness: real servers started by the tests.
#![allow(dead_code)]

pub mod exporter;
pub mod http;
pub mod redis_cluster;
pub mod secret_api;
pub mod servers;
pub mod tiers;
