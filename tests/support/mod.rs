//! Shared test harness: real servers started by the tests, and an in-process Kubernetes API
//! server. Each test binary uses only a part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod apiserver;
pub mod exporter;
pub mod hostile;
pub mod http;
pub mod live_app;
pub mod redis_cluster;
pub mod servers;
pub mod tiers;

/// Standard base64, as Kubernetes writes Secret data (through k8s-openapi's own encoding).
pub fn base64(bytes: &[u8]) -> String {
    serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec()))
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .expect("a ByteString serializes as a base64 string")
}
