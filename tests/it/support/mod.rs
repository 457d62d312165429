//! Shared test harness: real servers started by the tests, and an in-process Kubernetes API
//! server. Each test binary uses only a part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod clinic_backend;
pub mod drill;
pub mod exporter;
pub mod fake_cluster;
pub mod history;
pub mod hostile;
pub mod http;
pub mod live_app;
pub mod mem0;
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

/// The in-process API server with MemoryTiers served as their CRD says: pruned by its structural
/// schema and validated on every create and update with the code `tierguard check` runs.
pub async fn api_server() -> kube_testserver::ApiServer {
    api_server_builder().start().await
}

/// The same, to be configured further.
pub fn api_server_builder() -> kube_testserver::ApiServerBuilder {
    kube_testserver::ApiServer::builder().kind(memory_tier_kind())
}

/// MemoryTier as the API server serves it.
pub fn memory_tier_kind() -> kube_testserver::Kind {
    kube_testserver::Kind::custom::<tierguard::api::MemoryTier>().with_validator(|object| {
        // The schema allows status (the controller's); a manifest may not carry one, which is
        // `tierguard check`'s concern, not the API server's.
        let mut manifest = object.clone();
        if let Some(map) = manifest.as_object_mut() {
            map.remove("status");
        }
        tierguard::api::validate::validate_document(&manifest)
            .map(|_| ())
            .map_err(|problems| problems.into_iter().map(|p| (p.path, p.message)).collect())
    })
}

/// Poll `f` until it gives a value, or fail after `timeout` saying what was awaited.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: std::time::Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The controller's allow-lists for tests: every kind of request may reach the loopback
/// addresses, where the tests' servers listen (the default would refuse them).
pub fn loopback() -> tierguard::destinations::Destinations {
    tierguard::destinations::Destinations::everywhere(&["127.0.0.0/8", "::1"])
        .expect("loopback parses")
}

/// A status refresh period that writes the live readings at every tick: for the tests that
/// follow them in status (a deployment refreshes them every 5 minutes when nothing else changes).
pub const EVERY_TICK: std::time::Duration = std::time::Duration::ZERO;
