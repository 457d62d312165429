//! Redis signals from a real redis-server (and a real Redis Cluster): memory against
//! maxmemory (and the spec.redis.maxMemory fallback), evictions, keyspace hits and misses,
//! run_id and uptime across a restart, passwords, and a Redis that is down.

use crate::support;

use std::collections::BTreeMap;

use serde_json::{Value, json};
use support::redis_cluster::RedisCluster;
use support::servers::RedisServer;
use support::tiers::spec;
use tierguard::api::Observation;
use tierguard::observe::secrets::LocalSecrets;
use tierguard::observe::{ObserveConfig, Observer};

const REDIS_SIGNALS: [&str; 8] = [
    "redisUsedMemoryPercent",
    "redisUsedMemoryBytes",
    "redisMaxMemoryBytes",
    "redisEvictedKeys",
    "redisKeyspaceHits",
    "redisKeyspaceMisses",
    "redisRunId",
    "redisUptimeSeconds",
];

async fn observer_for(url: &str, redis: Value) -> Observer {
    let mut secrets = LocalSecrets::new();
    secrets.insert("redis-auth", "url", url);
    let mut section = redis;
    section["urlSecretRef"] = json!({"name": "redis-auth", "key": "url"});
    let spec = spec(json!({"timeout": "3s"}), section);
    let config = ObserveConfig::resolve(&spec, &secrets).await.unwrap();
    Observer::new(config).unwrap()
}

/// What the test's own client reads from INFO.
fn info(con: &mut redis::Connection) -> BTreeMap<String, String> {
    let text: String = redis::cmd("INFO").query(con).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

fn field(info: &BTreeMap<String, String>, key: &str) -> u64 {
    info[key].parse().unwrap()
}

fn why(obs: &Observation, signal: &str) -> String {
    obs.unknown.get(signal).cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_signals_hits_misses_and_memory_against_maxmemory() {
    let redis = RedisServer::start_with(&["--maxmemory", "8mb"]);
    let mut con = redis.client();
    let _: () = redis::cmd("SET")
        .arg("clinic:1")
        .arg("x")
        .query(&mut con)
        .unwrap();
    for key in ["clinic:1", "clinic:1", "clinic:1", "clinic:2", "clinic:3"] {
        let _: Option<String> = redis::cmd("GET").arg(key).query(&mut con).unwrap();
    }
    let mut observer = observer_for(&redis.url(), json!({})).await;
    let obs = observer.observe().await;
    let expected = info(&mut con);
    for s in REDIS_SIGNALS {
        assert!(!obs.unknown.contains_key(s), "{s}: {:?}", obs.unknown);
    }
    assert_eq!(obs.redis_keyspace_hits, Some(3));
    assert_eq!(obs.redis_keyspace_misses, Some(2));
    assert_eq!(obs.redis_evicted_keys, Some(0));
    assert_eq!(obs.redis_max_memory_bytes, Some(8 * 1024 * 1024));
    assert_eq!(
        obs.redis_run_id.as_deref(),
        Some(expected["run_id"].as_str())
    );
    assert!(obs.redis_uptime_seconds.unwrap() <= field(&expected, "uptime_in_seconds"));
    let used = obs.redis_used_memory_bytes.unwrap();
    assert!(used > 0);
    // The percentage is this very reading's used / max.
    let percent = obs.redis_used_memory_percent.unwrap();
    assert!((percent - 100.0 * used as f64 / (8.0 * 1024.0 * 1024.0)).abs() < 1e-9);
    // And agrees with the test's own reading within a little allocator noise.
    let theirs = field(&expected, "used_memory") as f64;
    assert!(
        (used as f64 - theirs).abs() < 256.0 * 1024.0,
        "{used} vs {theirs}"
    );
    let health = &obs.sources[0];
    assert_eq!((health.name.as_str(), health.ok), ("redis", true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evictions_are_counted() {
    let redis =
        RedisServer::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"]);
    let mut con = redis.client();
    let value = "v".repeat(10_000);
    for i in 0..600 {
        let _: () = redis::cmd("SET")
            .arg(format!("cache:{i}"))
            .arg(&value)
            .query(&mut con)
            .unwrap();
    }
    let mut observer = observer_for(&redis.url(), json!({})).await;
    // Redis may go on evicting in the background: bracket the observation.
    let before = field(&info(&mut con), "evicted_keys");
    let obs = observer.observe().await;
    let after = field(&info(&mut con), "evicted_keys");
    assert!(before > 0, "the test should have caused evictions");
    let seen = obs.redis_evicted_keys.unwrap();
    assert!(
        before <= seen && seen <= after,
        "{before} <= {seen} <= {after}"
    );
    assert!(obs.redis_used_memory_percent.unwrap() > 50.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxmemory_zero_falls_back_to_the_spec_or_is_unknown() {
    let redis = RedisServer::start(); // maxmemory 0: no limit
    let obs = observer_for(&redis.url(), json!({})).await.observe().await;
    assert_eq!(obs.redis_used_memory_percent, None);
    assert_eq!(obs.redis_max_memory_bytes, None);
    assert!(
        why(&obs, "redisUsedMemoryPercent").contains("maxmemory 0")
            && why(&obs, "redisUsedMemoryPercent").contains("spec.redis.maxMemory"),
        "{}",
        why(&obs, "redisUsedMemoryPercent")
    );
    // The rest is still read.
    assert!(obs.redis_used_memory_bytes.is_some() && obs.redis_run_id.is_some());

    let obs = observer_for(&redis.url(), json!({"maxMemory": "64Mi"}))
        .await
        .observe()
        .await;
    assert_eq!(obs.redis_max_memory_bytes, Some(64 * 1024 * 1024));
    let used = obs.redis_used_memory_bytes.unwrap() as f64;
    let percent = obs.redis_used_memory_percent.unwrap();
    assert!((percent - 100.0 * used / (64.0 * 1024.0 * 1024.0)).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_changes_run_id_and_resets_uptime_and_counters() {
    let mut redis = RedisServer::start_with(&["--maxmemory", "8mb"]);
    let mut observer = observer_for(&redis.url(), json!({})).await;
    let mut con = redis.client();
    let _: Option<String> = redis::cmd("GET").arg("k").query(&mut con).unwrap();
    let before = observer.observe().await;
    assert_eq!(before.redis_keyspace_misses, Some(1));
    redis.restart();
    // The same observer reconnects by itself.
    let after = observer.observe().await;
    assert!(after.redis_run_id.is_some(), "{:?}", after.unknown);
    assert_ne!(before.redis_run_id, after.redis_run_id);
    assert_eq!(
        after.redis_run_id.as_deref(),
        Some(info(&mut redis.client())["run_id"].as_str())
    );
    assert_eq!(after.redis_keyspace_misses, Some(0));
    assert!(after.redis_uptime_seconds.unwrap() <= before.redis_uptime_seconds.unwrap() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_protected_redis_and_a_wrong_password() {
    let redis = RedisServer::start_with(&["--requirepass", "s3cret-pw", "--maxmemory", "8mb"]);
    assert!(redis.url().contains("s3cret-pw"));
    let obs = observer_for(&redis.url(), json!({})).await.observe().await;
    assert!(obs.redis_run_id.is_some(), "{:?}", obs.unknown);
    assert_eq!(obs.redis_max_memory_bytes, Some(8 * 1024 * 1024));

    let wrong = format!("redis://:wr0ng-pw@127.0.0.1:{}/", redis.port());
    let obs = observer_for(&wrong, json!({})).await.observe().await;
    for s in REDIS_SIGNALS {
        assert!(why(&obs, s).starts_with("redis: "), "{s}: {}", why(&obs, s));
    }
    assert!(!obs.sources[0].ok);
    let everything = format!("{obs:?} {}", serde_json::to_string(&obs).unwrap());
    assert!(!everything.contains("wr0ng-pw"), "{everything}");
    assert!(!everything.contains("s3cret-pw"), "{everything}");

    // No password at all against a protected server.
    let anonymous = format!("redis://127.0.0.1:{}/", redis.port());
    let obs = observer_for(&anonymous, json!({})).await.observe().await;
    assert!(
        why(&obs, "redisRunId").to_lowercase().contains("auth"),
        "{}",
        why(&obs, "redisRunId")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_is_down_or_killed_is_unknown_with_the_reason() {
    let mut redis = RedisServer::start_with(&["--maxmemory", "8mb"]);
    let mut observer = observer_for(&redis.url(), json!({})).await;
    assert!(observer.observe().await.redis_run_id.is_some());
    redis.kill();
    let obs = observer.observe().await;
    assert_eq!(obs.redis_run_id, None);
    assert!(!obs.sources[0].ok);
    let reason = obs.sources[0].reason.clone().unwrap_or_default();
    assert!(reason.starts_with("redis: "), "{reason}");
    for s in REDIS_SIGNALS {
        assert_eq!(why(&obs, s), reason, "{s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_cluster_is_read_on_every_master() {
    let cluster = RedisCluster::start(&["4mb", "64mb", "64mb"]);
    // One hit and two misses on each master, on keys that live there.
    for node in 0..3 {
        let mut con = cluster.nodes[node].client();
        let key = cluster.key_on(node, "clinic:");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg("x")
            .query(&mut con)
            .unwrap();
        let _: Option<String> = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
        let missing = cluster.key_on(node, "absent:");
        let _: Option<String> = redis::cmd("GET").arg(&missing).query(&mut con).unwrap();
        let _: Option<String> = redis::cmd("GET").arg(&missing).query(&mut con).unwrap();
    }
    let mut observer = observer_for(&cluster.nodes[1].url(), json!({"cluster": true})).await;
    let obs = observer.observe().await;
    for s in REDIS_SIGNALS {
        assert!(!obs.unknown.contains_key(s), "{s}: {:?}", obs.unknown);
    }
    let infos: Vec<BTreeMap<String, String>> = cluster
        .nodes
        .iter()
        .map(|n| info(&mut n.client()))
        .collect();
    assert_eq!(obs.redis_keyspace_hits, Some(3));
    assert_eq!(obs.redis_keyspace_misses, Some(6));
    // run_ids of all masters, ordered by address.
    let mut by_addr: Vec<(String, String)> = cluster
        .nodes
        .iter()
        .zip(&infos)
        .map(|(n, i)| (format!("127.0.0.1:{}", n.port()), i["run_id"].clone()))
        .collect();
    by_addr.sort();
    let joined: Vec<String> = by_addr.into_iter().map(|(_, id)| id).collect();
    assert_eq!(obs.redis_run_id, Some(joined.join(",")));
    let youngest = infos
        .iter()
        .map(|i| field(i, "uptime_in_seconds"))
        .min()
        .unwrap();
    assert!(obs.redis_uptime_seconds.unwrap() <= youngest);
    // The 4 MB master is by far the fullest: its limit and usage are reported.
    assert_eq!(obs.redis_max_memory_bytes, Some(4 * 1024 * 1024));
    let used0 = field(&infos[0], "used_memory") as f64;
    let percent = obs.redis_used_memory_percent.unwrap();
    assert!(
        (percent - 100.0 * used0 / (4.0 * 1024.0 * 1024.0)).abs() < 5.0,
        "{percent} vs {used0}"
    );

    // cluster: true against a plain server is a clear error.
    let plain = RedisServer::start();
    let obs = observer_for(&plain.url(), json!({"cluster": true}))
        .await
        .observe()
        .await;
    assert!(
        why(&obs, "redisRunId").contains("CLUSTER NODES"),
        "{}",
        why(&obs, "redisRunId")
    );
}

/// A self-signed certificate for 127.0.0.1, made with the openssl command.
fn self_signed_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let openssl = support::servers::require_binary("openssl");
    let (cert, key) = (dir.join("redis.crt"), dir.join("redis.key"));
    let status = std::process::Command::new(openssl)
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl could not make a certificate");
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_through_the_url() {
    tierguard::install_crypto_provider();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(certs.path());
    let tls_port = support::servers::free_port().to_string();
    let redis = RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-ca-cert-file",
        cert.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
        "--maxmemory",
        "8mb",
    ]);
    let expected_run_id = info(&mut redis.client())["run_id"].clone();

    // The certificate is not signed by a root the system trusts: refused, with the reason.
    let verified = format!("rediss://127.0.0.1:{tls_port}/");
    let obs = observer_for(&verified, json!({})).await.observe().await;
    assert_eq!(obs.redis_run_id, None);
    let reason = why(&obs, "redisRunId").to_lowercase();
    assert!(
        reason.contains("certificate") || reason.contains("issuer"),
        "{reason}"
    );

    // #insecure skips verification (self-signed test setups): read over TLS.
    let insecure = format!("rediss://127.0.0.1:{tls_port}/#insecure");
    let obs = observer_for(&insecure, json!({})).await.observe().await;
    assert_eq!(
        obs.redis_run_id.as_deref(),
        Some(expected_run_id.as_str()),
        "{:?}",
        obs.unknown
    );
    assert_eq!(obs.redis_max_memory_bytes, Some(8 * 1024 * 1024));
}
