//! Redis remediation against a real redis-server: `tierguard redis flush|audit` and the library
//! behind them.

use crate::support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::servers::RedisServer;
use tierguard::act::redis::audit::{AuditPlan, audit};
use tierguard::act::redis::connect;
use tierguard::act::redis::flush::{FlushPlan, GenerationRule, flush};
use tierguard::act::redis::glob::Glob;
use tierguard::act::redis::remediate::remediate_redis;
use tierguard::api::{GenerationSource, MemoryLevel, RedisSpec};
use tierguard::secret::SecretString;
use tierguard::shutdown::Stop;

const BIN: &str = env!("CARGO_BIN_EXE_tierguard");

/// Any address: these tests are about Redis, not about where it may be.
fn any_redis() -> tierguard::destinations::AllowList {
    tierguard::destinations::AllowList::any(tierguard::destinations::Purpose::Redis)
}

/// Every key in the server (SCAN, like the product; the test server is small).
fn all_keys(con: &mut redis::Connection) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(con)
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

fn set_many(con: &mut redis::Connection, keys: impl IntoIterator<Item = String>, ttl: Option<u64>) {
    let mut pipe = redis::pipe();
    let mut n = 0;
    for key in keys {
        match ttl {
            Some(t) => pipe.cmd("SET").arg(&key).arg("v").arg("EX").arg(t).ignore(),
            None => pipe.cmd("SET").arg(&key).arg("v").ignore(),
        };
        n += 1;
        if n % 5000 == 0 {
            pipe.query::<()>(con).unwrap();
            pipe = redis::pipe();
        }
    }
    if n % 5000 != 0 {
        pipe.query::<()>(con).unwrap();
    }
}

/// The acceptance mix: sessions, generation-scoped cache keys of generations 1, 2, 3 and 30, and
/// other keys, some of them close misses of the patterns.
fn load_mix(con: &mut redis::Connection) {
    set_many(con, (0..2000).map(|i| format!("session:{i}")), Some(3600));
    set_many(
        con,
        (0..300)
            .flat_map(|c| [1, 2, 3, 30].map(move |g| format!("cache:clinic:{c}:generation:{g}"))),
        Some(3600),
    );
    set_many(con, (0..500).map(|i| format!("clinic_config:{i}")), None);
    set_many(
        con,
        [
            "session",
            "sessions:1",
            "xsession:1",
            "Session:1",
            "cache:clinic:1",
            "cache:generation",
        ]
        .map(String::from),
        None,
    );
}

fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run tierguard");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn flush_session_pattern_deletes_exactly_the_session_keys() {
    let redis = RedisServer::start();
    let mut con = redis.client();
    load_mix(&mut con);
    let before = all_keys(&mut con);
    let (code, stdout, stderr) = run_cli(&[
        "redis",
        "flush",
        "--url",
        &redis.url(),
        "--pattern",
        "session:*",
    ]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let after = all_keys(&mut con);
    let expected: BTreeSet<String> = before
        .iter()
        .filter(|k| !k.starts_with("session:"))
        .cloned()
        .collect();
    assert_eq!(after, expected);
    assert_eq!(before.len() - after.len(), 2000);
    assert!(stdout.contains("deleted 2000 keys"), "{stdout}");
}

#[test]
fn keep_generation_keeps_exactly_the_current_generation() {
    let redis = RedisServer::start();
    let mut con = redis.client();
    load_mix(&mut con);
    let before = all_keys(&mut con);
    let (code, stdout, stderr) = run_cli(&[
        "redis",
        "flush",
        "--url",
        &redis.url(),
        "--keep-generation",
        "3",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let after = all_keys(&mut con);
    let old_generation = |k: &String| {
        k.starts_with("cache:clinic:")
            && k.contains(":generation:")
            && !k.ends_with(":generation:3")
    };
    let expected: BTreeSet<String> = before
        .iter()
        .filter(|k| !old_generation(k))
        .cloned()
        .collect();
    assert_eq!(after, expected);
    // Generation 30 is not generation 3.
    assert!(!after.contains("cache:clinic:7:generation:30"));
    assert!(after.contains("cache:clinic:7:generation:3"));
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["deleted"], 900);
    assert_eq!(report["keptCurrent"], 300);
    assert_eq!(report["passes"][0]["keepGeneration"], "3");
    assert_eq!(report["passes"][0]["match"], "cache:*:generation:*");
}

#[test]
fn a_pattern_never_deletes_the_current_generation() {
    let redis = RedisServer::start();
    let mut con = redis.client();
    load_mix(&mut con);
    let (code, stdout, _) = run_cli(&[
        "redis",
        "flush",
        "--url",
        &redis.url(),
        "--pattern",
        "cache:clinic:*",
        "--keep-generation",
        "2",
    ]);
    assert_eq!(code, 0, "{stdout}");
    let after = all_keys(&mut con);
    let cache: BTreeSet<_> = after
        .iter()
        .filter(|k| k.starts_with("cache:clinic:"))
        .collect();
    assert_eq!(cache.len(), 300);
    assert!(cache.iter().all(|k| k.ends_with(":generation:2")));
}

#[test]
fn budgets_dry_run_and_refusals() {
    let redis = RedisServer::start();
    let mut con = redis.client();
    load_mix(&mut con);
    let url = redis.url();

    let (code, stdout, _) = run_cli(&[
        "redis",
        "flush",
        "--url",
        &url,
        "--pattern",
        "session:*",
        "--dry-run",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["deleted"], 2000);
    assert_eq!(report["dryRun"], true);
    assert_eq!(
        all_keys(&mut con)
            .iter()
            .filter(|k| k.starts_with("session:"))
            .count(),
        2000
    );

    let (code, stdout, _) = run_cli(&[
        "redis",
        "flush",
        "--url",
        &url,
        "--pattern",
        "session:*",
        "--max-keys",
        "150",
        "--batch",
        "40",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "a budget stop is not a failure");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["deleted"], 150);
    assert_eq!(report["stoppedBy"], "keys");
    assert_eq!(
        all_keys(&mut con)
            .iter()
            .filter(|k| k.starts_with("session:"))
            .count(),
        1850
    );

    for bad in [
        &["--pattern", "*"][..],
        &[][..],
        &["--generation-pattern", "cache:*"][..],
    ] {
        let mut args = vec!["redis", "flush", "--url", &url];
        args.extend_from_slice(bad);
        let (code, _, stderr) = run_cli(&args);
        assert_ne!(code, 0, "{bad:?} must be refused");
        assert!(!stderr.is_empty());
    }
    assert_eq!(all_keys(&mut con).len(), 1850 + 1200 + 500 + 6);
}

#[test]
fn the_password_is_never_printed() {
    let redis = RedisServer::start_with(&["--requirepass", "hunter2-secret"]);
    let mut con = redis.client();
    load_mix(&mut con);
    for args in [
        vec![
            "redis",
            "flush",
            "--url",
            &redis.url(),
            "--pattern",
            "session:*",
        ],
        vec![
            "redis",
            "flush",
            "--url",
            &redis.url(),
            "--pattern",
            "session:*",
            "--output",
            "json",
        ],
        vec!["redis", "audit", "--url", &redis.url()],
        vec!["redis", "audit", "--url", &redis.url(), "--output", "json"],
    ] {
        let (code, stdout, stderr) = run_cli(&args);
        assert_eq!(code, 0, "{stdout} {stderr}");
        assert!(stdout.contains("redis://:***@127.0.0.1"), "{stdout}");
        assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"));
    }
    // A wrong password and an unreachable server fail without echoing the URL's secret.
    let wrong = format!("redis://:wrong-pass-123@127.0.0.1:{}/", redis.port());
    let (code, stdout, stderr) = run_cli(&["redis", "flush", "--url", &wrong, "--pattern", "x:*"]);
    assert_eq!(code, 1);
    assert!(stdout.contains("FAILED"), "{stdout}");
    assert!(!stdout.contains("wrong-pass-123") && !stderr.contains("wrong-pass-123"));
    // Through the environment, as the help recommends.
    let out = Command::new(BIN)
        .args(["redis", "audit", "--output", "json"])
        .env("TIERGUARD_REDIS_URL", redis.url())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));
}

/// A redis-server killed mid-flush: the command reports what it deleted and exits non-zero, and
/// nothing but session keys was touched. The server writes every command to its append-only file
/// before answering, so after a restart the test sees exactly what was deleted.
#[test]
fn a_redis_killed_mid_flush_is_reported_and_nothing_else_is_touched() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let mut con = redis.client();
    set_many(&mut con, (0..40_000).map(|i| format!("session:{i}")), None);
    set_many(
        &mut con,
        (0..1000).map(|i| format!("clinic_config:{i}")),
        None,
    );
    set_many(
        &mut con,
        (0..500).map(|c| format!("cache:clinic:{c}:generation:1")),
        None,
    );
    let others_before: BTreeSet<String> = all_keys(&mut con)
        .into_iter()
        .filter(|k| !k.starts_with("session:"))
        .collect();

    let child = Command::new(BIN)
        .args([
            "redis",
            "flush",
            "--url",
            &redis.url(),
            "--pattern",
            "session:*",
            "--batch",
            "5",
            "--scan-count",
            "10",
            "--max-keys",
            "1000000",
            "--max-duration",
            "10m",
            "--output",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the flush is well under way, then kill the server.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let size: u64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
        if size <= 41_500 - 500 {
            break;
        }
        assert!(Instant::now() < deadline, "the flush did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    redis.kill();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "stdout: {stdout}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert!(report["error"].as_str().is_some(), "{report}");
    let reported = report["deleted"].as_u64().unwrap();
    let in_flight = report["inFlight"].as_u64().unwrap();
    assert!(reported >= 500, "{report}");
    assert!(
        reported < 40_000,
        "the kill came too late to test anything: {report}"
    );

    redis.restart();
    let mut con = redis.client();
    let after = all_keys(&mut con);
    let sessions_left = after.iter().filter(|k| k.starts_with("session:")).count() as u64;
    let others_after: BTreeSet<String> = after
        .into_iter()
        .filter(|k| !k.starts_with("session:"))
        .collect();
    assert_eq!(
        others_after, others_before,
        "only session keys may be touched"
    );
    let actually_deleted = 40_000 - sessions_left;
    assert!(
        actually_deleted >= reported && actually_deleted <= reported + in_flight,
        "reported {reported} (+{in_flight} in flight), actually deleted {actually_deleted}"
    );
}

/// The client-side glob agrees with Redis's own MATCH.
#[tokio::test]
async fn the_glob_matches_like_redis_match() {
    let redis = RedisServer::start();
    let mut con = redis.client();
    let keys = [
        "a",
        "ab",
        "abc",
        "a*c",
        "a?c",
        "a[c",
        "a]c",
        "a-c",
        "abbbc",
        "k7",
        "kx",
        "k]",
        "k-",
        "cache:1:generation:17",
        "cache:1:generation:170",
        "x{y}z",
        r"back\slash",
        "",
    ];
    set_many(
        &mut con,
        keys.iter().filter(|k| !k.is_empty()).map(|k| k.to_string()),
        None,
    );
    let patterns = [
        "a*",
        "a?c",
        "a*c",
        r"a\*c",
        "a[bc]c",
        "a[^b]c",
        "a[b-c]*",
        "k[0-9]",
        "k[9-0]",
        "k[^0-9]",
        r"k[\]]",
        "k[a-]",
        "*gen*:17",
        "cache:*:generation:1?",
        "x{y}z",
        "*[",
        r"back\\slash",
        "[",
        "a[",
        "???",
        "*?*?*",
    ];
    for pattern in patterns {
        let (mut cursor, mut from_redis) = (0u64, BTreeSet::new());
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query(&mut con)
                .unwrap();
            from_redis.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let glob = Glob::new(pattern);
        let ours: BTreeSet<String> = keys
            .iter()
            .filter(|k| !k.is_empty() && glob.is_match(k.as_bytes()))
            .map(|k| k.to_string())
            .collect();
        assert_eq!(ours, from_redis, "pattern {pattern:?}");
    }
}

#[tokio::test]
async fn remediation_from_the_spec_reads_the_current_generation_from_redis() {
    tierguard::install_crypto_provider();
    let redis = RedisServer::start_with(&["--requirepass", "pw-remediate"]);
    let mut con = redis.client();
    load_mix(&mut con);
    let url = SecretString::from(redis.url());
    let mut spec: RedisSpec = serde_json::from_value(serde_json::json!({
        "remediation": {
            "nonCriticalPatterns": ["session:*"],
            "generationPattern": "cache:*:generation:{generation}",
            "currentGeneration": {"redisKey": "cache:current-generation"},
            "batchSize": 100
        }
    }))
    .unwrap();

    // Without the generation key, sessions go and every generation stays.
    let now = jiff::Timestamp::now();
    let run = remediate_redis(
        &spec,
        &url,
        &any_redis(),
        MemoryLevel::Critical,
        "used 93% >= 90%",
        false,
        now,
        &Stop::new(),
    )
    .await;
    assert_eq!(run.record.outcome, tierguard::api::ActionOutcome::Ok);
    assert_eq!(run.outcome.deleted_by_pattern["session:*"], 2000);
    assert!(
        run.outcome
            .error
            .as_deref()
            .unwrap()
            .contains("cache:current-generation")
    );
    assert_eq!(
        all_keys(&mut con)
            .iter()
            .filter(|k| k.contains(":generation:"))
            .count(),
        1200
    );

    let _: () = redis::cmd("SET")
        .arg("cache:current-generation")
        .arg("2")
        .query(&mut con)
        .unwrap();
    let run = remediate_redis(
        &spec,
        &url,
        &any_redis(),
        MemoryLevel::Critical,
        "used 93% >= 90%",
        false,
        now,
        &Stop::new(),
    )
    .await;
    assert_eq!(
        run.record.outcome,
        tierguard::api::ActionOutcome::Ok,
        "{:?}",
        run.record
    );
    assert_eq!(
        run.outcome.deleted_by_pattern["cache:*:generation:{generation}"],
        900
    );
    assert!(run.record.reason.contains("critical"));
    let left: Vec<_> = all_keys(&mut con)
        .into_iter()
        .filter(|k| k.contains(":generation:"))
        .collect();
    assert_eq!(left.len(), 300);
    assert!(left.iter().all(|k| k.ends_with(":generation:2")));
    // Repeating it is harmless: nothing left to delete.
    let again = remediate_redis(
        &spec,
        &url,
        &any_redis(),
        MemoryLevel::Critical,
        "again",
        false,
        now,
        &Stop::new(),
    )
    .await;
    assert_eq!(again.outcome.deleted_by_pattern.values().sum::<u64>(), 0);

    // Dry run changes nothing; disabled remediation is skipped and says why.
    set_many(&mut con, (0..10).map(|i| format!("session:{i}")), None);
    let dry = remediate_redis(
        &spec,
        &url,
        &any_redis(),
        MemoryLevel::Critical,
        "dry",
        true,
        now,
        &Stop::new(),
    )
    .await;
    assert_eq!(dry.record.outcome, tierguard::api::ActionOutcome::DryRun);
    assert_eq!(dry.outcome.deleted_by_pattern["session:*"], 10);
    assert_eq!(
        all_keys(&mut con)
            .iter()
            .filter(|k| k.starts_with("session:"))
            .count(),
        10
    );
    spec.remediation.enabled = false;
    let off = remediate_redis(
        &spec,
        &url,
        &any_redis(),
        MemoryLevel::Critical,
        "off",
        false,
        now,
        &Stop::new(),
    )
    .await;
    assert_eq!(off.record.outcome, tierguard::api::ActionOutcome::Skipped);

    // The fixed-value source works too, and nothing mentions the password.
    spec.remediation.enabled = true;
    spec.remediation.current_generation = Some(GenerationSource {
        redis_key: None,
        value: Some("30".into()),
    });
    let run = remediate_redis(
        &spec,
        &url,
        &any_redis(),
        MemoryLevel::Critical,
        "v",
        false,
        now,
        &Stop::new(),
    )
    .await;
    assert_eq!(
        run.outcome.deleted_by_pattern["cache:*:generation:{generation}"],
        300
    );
    let text = format!("{:?} {:?}", run.record, run.outcome);
    assert!(!text.contains("pw-remediate"));

    // An unreachable Redis is a failed record, without the password.
    let gone = SecretString::from("redis://:pw-remediate@127.0.0.1:1/".to_owned());
    let failed = remediate_redis(
        &spec,
        &gone,
        &any_redis(),
        MemoryLevel::Critical,
        "x",
        false,
        now,
        &Stop::new(),
    )
    .await;
    assert_eq!(failed.record.outcome, tierguard::api::ActionOutcome::Failed);
    assert!(!format!("{failed:?}").contains("pw-remediate"));
}

/// While Redis stalls (another client runs DEBUG SLEEP, for the first 600 ms), the flush waits
/// between batches, and carries on once Redis answers quickly again.
#[tokio::test]
async fn the_flush_pauses_while_redis_answers_slowly() {
    let redis = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let mut con = redis.client();
    set_many(&mut con, (0..4000).map(|i| format!("session:{i}")), None);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let staller = {
        let stop = stop.clone();
        let mut con = redis.client();
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_millis(600);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < until {
                let _: () = redis::cmd("DEBUG")
                    .arg("SLEEP")
                    .arg("0.02")
                    .query(&mut con)
                    .unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let async_con = connect(&SecretString::from(redis.url()), Duration::from_secs(5))
        .await
        .unwrap();
    let plan = FlushPlan {
        patterns: vec!["session:*".into()],
        batch: 50,
        scan_count: 100,
        max_keys: 1_000_000,
        max_duration: Duration::from_secs(60),
        ..FlushPlan::default()
    };
    let report = flush(&async_con, &plan).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    staller.join().unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.deleted, 4000);
    assert!(report.pauses > 0, "{report:?}");
    assert!(report.paused_ms >= 10.0, "{report:?}");
    assert!(report.max_ping_ms > report.latency_limit_ms, "{report:?}");
}

#[test]
fn a_time_budget_stops_the_flush() {
    let redis = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let mut con = redis.client();
    set_many(&mut con, (0..20_000).map(|i| format!("session:{i}")), None);
    let (code, stdout, _) = run_cli(&[
        "redis",
        "flush",
        "--url",
        &redis.url(),
        "--pattern",
        "session:*",
        "--batch",
        "1",
        "--scan-count",
        "1",
        "--max-keys",
        "100000",
        "--max-duration",
        "200ms",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{stdout}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["stoppedBy"], "time");
    let deleted = report["deleted"].as_u64().unwrap();
    assert!(deleted < 20_000);
    let left = all_keys(&mut con).len() as u64;
    assert_eq!(left, 20_000 - deleted);
    let _ = GenerationRule::new("cache:*:generation:{generation}", "1").unwrap();
}

#[tokio::test]
async fn audit_finds_keys_without_ttl_the_largest_keys_and_prefix_counts() {
    let redis = RedisServer::start();
    let mut con = redis.client();
    set_many(
        &mut con,
        (0..300).map(|i| format!("session:{i}")),
        Some(600),
    );
    set_many(
        &mut con,
        (0..120).map(|i| format!("cache:clinic:{i}:generation:1")),
        Some(600),
    );
    set_many(&mut con, (0..40).map(|i| format!("cache:leak:{i}")), None);
    set_many(&mut con, (0..7).map(|i| format!("plain{i}")), None);
    for (key, size) in [
        ("blob:a", 300_000usize),
        ("blob:b", 200_000),
        ("cache:big", 100_000),
    ] {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("x".repeat(size))
            .query(&mut con)
            .unwrap();
    }
    let con = connect(&SecretString::from(redis.url()), Duration::from_secs(5))
        .await
        .unwrap();
    let report = audit(
        &con,
        &AuditPlan {
            sample: 0,
            top: 3,
            scan_count: 50,
            ..AuditPlan::default()
        },
    )
    .await;
    assert!(report.ok() && report.complete, "{report:?}");
    assert_eq!(report.sampled, 300 + 120 + 40 + 7 + 3);
    assert_eq!(report.without_ttl, 40 + 7 + 3);
    assert_eq!(report.without_ttl_by_prefix["cache"], 41);
    assert_eq!(report.without_ttl_by_prefix["blob"], 2);
    assert_eq!(report.without_ttl_by_prefix["(no prefix)"], 7);
    assert!(!report.without_ttl_by_prefix.contains_key("session"));
    assert_eq!(report.keys_by_prefix["session"], 300);
    assert_eq!(report.keys_by_prefix["cache"], 161);
    let largest: Vec<&str> = report.largest_keys.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(largest, ["blob:a", "blob:b", "cache:big"]);
    assert!(report.largest_keys[0].bytes >= 300_000);
    assert_eq!(report.without_ttl_examples.len(), 10);
    let status = report.to_status();
    assert_eq!(status.sampled, report.sampled);
    assert_eq!(status.largest_keys.len(), 3);

    // A sample stops early and says so.
    let sample = audit(
        &con,
        &AuditPlan {
            sample: 100,
            scan_count: 10,
            ..AuditPlan::default()
        },
    )
    .await;
    assert_eq!(sample.sampled, 100);
    assert!(!sample.complete);
}

/// Generation-scoped keys in both layouts, generations 3 and 30 side by side: keys that end with
/// the generation (`cache:clinic:7:generation:3`) and keys with more after it
/// (`cache:clinic:7:generation:3:item:17`).
fn load_generations_in_both_layouts(con: &mut redis::Connection) {
    set_many(
        con,
        (0..50).flat_map(|c| {
            [1, 3, 30].into_iter().flat_map(move |g| {
                let base = format!("cache:clinic:{c}:generation:{g}");
                [
                    base.clone(),
                    format!("{base}:item:17"),
                    format!("{base}:item:3"),
                ]
            })
        }),
        Some(3600),
    );
}

/// Keys of generation 3 in either layout: the generation's segment is exactly `3`.
fn of_generation_3(keys: &BTreeSet<String>) -> BTreeSet<String> {
    keys.iter()
        .filter(|k| {
            k.split(':')
                .collect::<Vec<_>>()
                .windows(2)
                .any(|w| w[0] == "generation" && w[1] == "3")
        })
        .cloned()
        .collect()
}

#[test]
fn keep_generation_keeps_every_key_of_the_current_generation_in_either_layout() {
    let redis = RedisServer::start();
    let mut con = redis.client();
    load_generations_in_both_layouts(&mut con);
    let before = all_keys(&mut con);
    let current = of_generation_3(&before);
    assert_eq!(current.len(), 150);
    // The runbook's own spelling: every generation by pattern, keeping the current one.
    let (code, stdout, stderr) = run_cli(&[
        "redis",
        "flush",
        "--url",
        &redis.url(),
        "--pattern",
        "cache:*:generation:*",
        "--keep-generation",
        "3",
    ]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let after = all_keys(&mut con);
    assert_eq!(
        of_generation_3(&after),
        current,
        "the current generation lost keys"
    );
    // Generations 1 and 30 are gone, in both layouts.
    assert_eq!(after, current, "old generations left behind");
}

#[tokio::test]
async fn remediation_keeps_every_key_of_the_current_generation_in_either_layout() {
    tierguard::install_crypto_provider();
    let redis = RedisServer::start();
    let mut con = redis.client();
    load_generations_in_both_layouts(&mut con);
    let current = of_generation_3(&all_keys(&mut con));
    let spec: RedisSpec = serde_json::from_value(serde_json::json!({
        "remediation": {
            "nonCriticalPatterns": [],
            "generationPattern": "cache:*:generation:{generation}",
            "currentGeneration": {"value": "3"},
        }
    }))
    .unwrap();
    let url = SecretString::from(redis.url());
    let run = remediate_redis(
        &spec,
        &url,
        &any_redis(),
        MemoryLevel::Critical,
        "critical",
        false,
        jiff::Timestamp::now(),
        &Stop::new(),
    )
    .await;
    assert_eq!(
        run.record.outcome,
        tierguard::api::ActionOutcome::Ok,
        "{:?}",
        run.record
    );
    assert_eq!(
        run.outcome.deleted_by_pattern["cache:*:generation:{generation}"],
        300
    );
    assert_eq!(all_keys(&mut con), current);
}

/// A hostile tenant (or a tired operator) spells "every key" so that a check for `*` misses it:
/// `?*`, `[^]*`, `*?*`. Real Redis confirms each matches every key loaded; the CLI refuses each
/// and deletes nothing, and so does a remediation whose spec lists one.
#[tokio::test]
async fn a_flush_never_matches_everything_however_it_is_spelt() {
    tierguard::install_crypto_provider();
    let redis = RedisServer::start();
    let mut con = redis.client();
    load_mix(&mut con);
    let before = all_keys(&mut con);
    let url = redis.url();
    for pattern in ["?*", "[^]*", "*?*", "??*", "*[^]"] {
        let (mut cursor, mut matched) = (0u64, BTreeSet::new());
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query(&mut con)
                .unwrap();
            matched.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        assert_eq!(
            matched, before,
            "Redis itself: {pattern:?} matches every key"
        );
        let (code, _, stderr) = run_cli(&["redis", "flush", "--url", &url, "--pattern", pattern]);
        assert_ne!(code, 0, "{pattern:?} must be refused");
        assert!(
            stderr.contains("matches every key"),
            "{pattern:?}: {stderr}"
        );
    }
    // A pattern that names its keys still works next to the refusals.
    let (code, _, stderr) = run_cli(&[
        "redis",
        "flush",
        "--url",
        &url,
        "--pattern",
        "session:*",
        "--pattern",
        "*?*",
    ]);
    assert_ne!(code, 0, "one bad pattern refuses the whole run: {stderr}");
    assert_eq!(all_keys(&mut con), before, "nothing was deleted");

    let spec: RedisSpec = serde_json::from_value(serde_json::json!({
        "remediation": {"nonCriticalPatterns": ["session:*", "[^]*"]}
    }))
    .unwrap();
    let run = remediate_redis(
        &spec,
        &SecretString::from(url.clone()),
        &any_redis(),
        MemoryLevel::Critical,
        "used 95% > 90%",
        false,
        jiff::Timestamp::now(),
        &Stop::new(),
    )
    .await;
    assert_eq!(
        run.record.outcome,
        tierguard::api::ActionOutcome::Failed,
        "{:?}",
        run.record
    );
    assert!(
        run.record
            .detail
            .as_deref()
            .unwrap()
            .contains("matches every key"),
        "{:?}",
        run.record
    );
    assert_eq!(all_keys(&mut con), before, "nothing was deleted");
}

/// Key names are remote text: `redis audit` prints them escaped, so a key holding a terminal
/// escape or a line break neither clears the screen nor splits the summary line.
#[test]
fn audit_and_flush_print_key_names_escaped() {
    let redis = RedisServer::start();
    let mut con = redis.client();
    let evil: &[&[u8]] = &[b"\x1b[2J\x1b[H:wiped", b"forged\nline:1", b"bin\xff:1"];
    for key in evil {
        let _: () = redis::cmd("SET")
            .arg(*key)
            .arg("v".repeat(2000))
            .query(&mut con)
            .unwrap();
    }
    let (code, stdout, _) = run_cli(&["redis", "audit", "--url", &redis.url()]);
    assert_eq!(code, 0, "{stdout}");
    assert!(!stdout.contains('\u{1b}'), "a raw escape: {stdout:?}");
    assert_eq!(stdout.lines().count(), 1, "one summary line: {stdout:?}");
    for shown in ["\\u{1b}[2J\\u{1b}[H", "forged\\nline", "bin\\xff"] {
        assert!(stdout.contains(shown), "{shown} not in {stdout}");
    }
    // The JSON output escapes them as JSON does.
    let (code, stdout, _) = run_cli(&["redis", "audit", "--url", &redis.url(), "--output", "json"]);
    assert_eq!(code, 0);
    assert!(
        !stdout.contains('\u{1b}') && stdout.lines().count() == 1,
        "{stdout:?}"
    );
    // A flush pattern holding an escape is printed escaped too.
    let (_, stdout, _) = run_cli(&[
        "redis",
        "flush",
        "--url",
        &redis.url(),
        "--pattern",
        "\u{1b}[2J*",
        "--dry-run",
    ]);
    assert!(
        !stdout.contains('\u{1b}') && stdout.lines().count() == 1,
        "{stdout:?}"
    );
}
