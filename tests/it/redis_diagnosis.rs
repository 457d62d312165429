//! The Redis OOM runbook's diagnosis and option B against a real redis-server: the count of keys
//! without a TTL from `INFO keyspace` (and the cache generation key) read at every observation,
//! and `CONFIG SET maxmemory` raised and restored within the ceiling, refused when CONFIG is
//! renamed away or denied by an ACL.

use crate::support;

use serde_json::json;
use support::servers::RedisServer;
use support::tiers::spec;
use tierguard::act::redis::maxmemory::{
    MaxMemoryChange, MaxMemoryError, change_max_memory, read_max_memory, set_max_memory,
};
use tierguard::api::{ActionOutcome, Signal};
use tierguard::destinations::{AllowList, Purpose};
use tierguard::observe::secrets::LocalSecrets;
use tierguard::observe::{ObserveConfig, Observer};
use tierguard::secret::SecretString;

const MB: u64 = 1 << 20;

fn info_maxmemory(server: &RedisServer) -> u64 {
    let mut con = server.client();
    let info: String = redis::cmd("INFO").arg("memory").query(&mut con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("maxmemory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
    tierguard::act::redis::connect(&SecretString::from(url), std::time::Duration::from_secs(5))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_without_ttl_and_the_generation_are_read_at_every_observation() {
    let server = RedisServer::start();
    let mut con = server.client();
    let mut secrets = LocalSecrets::new();
    secrets.insert("redis-auth", "url", &server.url());
    let spec = spec(
        json!({"timeout": "3s"}),
        json!({
            "urlSecretRef": {"name": "redis-auth", "key": "url"},
            "remediation": {"currentGeneration": {"redisKey": "cache:current_generation"}},
        }),
    );
    let mut observer =
        Observer::new(ObserveConfig::resolve(&spec, &secrets).await.unwrap()).unwrap();

    // No generation key yet: unknown with the reason, never an empty generation.
    let o = observer.observe().await;
    assert_eq!(o.redis_keys_without_ttl, Some(0));
    assert_eq!(o.redis_cache_generation, None);
    assert!(
        o.unknown[Signal::RedisCacheGeneration.name()].contains("does not exist"),
        "{o:?}"
    );

    // 30 keys without TTL and 20 with one in db 0, 5 without in db 3; the generation key has none.
    for i in 0..30 {
        let _: () = redis::cmd("SET")
            .arg(format!("session:{i}"))
            .arg("x")
            .query(&mut con)
            .unwrap();
    }
    for i in 0..20 {
        let _: () = redis::cmd("SET")
            .arg(format!("cache:clinic:{i}:generation:7"))
            .arg("x")
            .arg("EX")
            .arg(600)
            .query(&mut con)
            .unwrap();
    }
    let _: () = redis::cmd("SET")
        .arg("cache:current_generation")
        .arg("7")
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SELECT").arg(3).query(&mut con).unwrap();
    for i in 0..5 {
        let _: () = redis::cmd("SET")
            .arg(format!("leak:{i}"))
            .arg("x")
            .query(&mut con)
            .unwrap();
    }
    let o = observer.observe().await;
    assert_eq!(o.redis_keys_without_ttl, Some(30 + 1 + 5), "{o:?}");
    assert_eq!(o.redis_cache_generation.as_deref(), Some("7"));

    // The leak grows; expiring keys do not count.
    for i in 5..105 {
        let _: () = redis::cmd("SET")
            .arg(format!("leak:{i}"))
            .arg("x")
            .query(&mut con)
            .unwrap();
    }
    let _: () = redis::cmd("SET")
        .arg("cache:current_generation")
        .arg("8")
        .query(&mut con)
        .unwrap();
    let o = observer.observe().await;
    // db 0: 30 sessions and the generation key; db 3: 105 leaked keys and the test's own
    // generation key (the test's connection selected db 3).
    assert_eq!(o.redis_keys_without_ttl, Some(30 + 1 + 105 + 1));
    // The generation key is read in the URL's database (0), not the one the test selected.
    assert_eq!(o.redis_cache_generation.as_deref(), Some("7"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxmemory_is_raised_within_the_ceiling_and_restored() {
    let server = RedisServer::start_with(&["--maxmemory", "10mb"]);
    let con = connection(&server.url()).await;
    assert_eq!(read_max_memory(&con).await.unwrap(), 10 * MB);

    let raise = MaxMemoryChange {
        bytes: 12 * MB,
        from: 10 * MB,
        ceiling: 16 * MB,
        restore: false,
    };
    let done = set_max_memory(&con, raise).await.unwrap();
    assert_eq!((done.before, done.after), (10 * MB, 12 * MB));
    assert_eq!(info_maxmemory(&server), 12 * MB);
    // Again: already there, nothing sent twice.
    let again = set_max_memory(&con, raise).await.unwrap();
    assert_eq!((again.before, again.after), (12 * MB, 12 * MB));

    // Above the ceiling: refused before anything is sent.
    let above = MaxMemoryChange {
        bytes: 17 * MB,
        from: 12 * MB,
        ceiling: 16 * MB,
        restore: false,
    };
    assert_eq!(
        set_max_memory(&con, above).await.unwrap_err(),
        MaxMemoryError::AboveCeiling {
            bytes: 17 * MB,
            ceiling: 16 * MB
        }
    );
    assert_eq!(info_maxmemory(&server), 12 * MB);

    // Someone else changed it: left alone.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(13 * MB)
        .query(&mut server.client())
        .unwrap();
    let stale = MaxMemoryChange {
        bytes: 14 * MB,
        from: 12 * MB,
        ceiling: 16 * MB,
        restore: false,
    };
    assert!(matches!(
        set_max_memory(&con, stale).await.unwrap_err(),
        MaxMemoryError::ChangedElsewhere { now, .. } if now == 13 * MB
    ));
    assert_eq!(info_maxmemory(&server), 13 * MB);

    // Restored through the controller's action, with its record.
    let restore = MaxMemoryChange {
        bytes: 10 * MB,
        from: 13 * MB,
        ceiling: 16 * MB,
        restore: true,
    };
    let (result, record) = change_max_memory(
        &SecretString::from(server.url()),
        &AllowList::any(Purpose::Redis),
        restore,
        "the incident is over",
        jiff::Timestamp::now(),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(record.outcome, ActionOutcome::Ok, "{record:?}");
    assert!(
        record
            .detail
            .as_deref()
            .unwrap()
            .contains("before the incident"),
        "{record:?}"
    );
    assert_eq!(info_maxmemory(&server), 10 * MB);

    // A Redis without a limit is not given one.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .query(&mut server.client())
        .unwrap();
    let none = MaxMemoryChange {
        bytes: 12 * MB,
        from: 0,
        ceiling: 16 * MB,
        restore: false,
    };
    assert_eq!(
        set_max_memory(&con, none).await.unwrap_err(),
        MaxMemoryError::NoLimit
    );
    assert_eq!(info_maxmemory(&server), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_config_command_is_refused_with_the_reason() {
    let server =
        RedisServer::start_with(&["--maxmemory", "10mb", "--rename-command", "CONFIG", ""]);
    let con = connection(&server.url()).await;
    let change = MaxMemoryChange {
        bytes: 12 * MB,
        from: 10 * MB,
        ceiling: 16 * MB,
        restore: false,
    };
    let e = set_max_memory(&con, change).await.unwrap_err();
    assert!(matches!(e, MaxMemoryError::Renamed(_)), "{e:?}");
    assert!(e.is_refusal());
    assert!(e.to_string().contains("renamed or disabled"), "{e}");
    assert_eq!(info_maxmemory(&server), 10 * MB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_without_config_is_refused_with_the_reason() {
    let server = RedisServer::start_with(&[
        "--maxmemory",
        "10mb",
        "--user",
        "tierguard",
        "on",
        ">s3cret",
        "~*",
        "&*",
        "+@all",
        "-config",
    ]);
    let url = format!("redis://tierguard:s3cret@127.0.0.1:{}/", server.port());
    let (result, record) = change_max_memory(
        &SecretString::from(url.as_str()),
        &AllowList::any(Purpose::Redis),
        MaxMemoryChange {
            bytes: 12 * MB,
            from: 10 * MB,
            ceiling: 16 * MB,
            restore: false,
        },
        "still critical",
        jiff::Timestamp::now(),
    )
    .await;
    let e = result.unwrap_err();
    assert!(matches!(e, MaxMemoryError::Denied(_)), "{e:?}");
    assert_eq!(record.outcome, ActionOutcome::Failed);
    let detail = record.detail.unwrap();
    assert!(detail.contains("ACL user may not run it"), "{detail}");
    assert!(!detail.contains("s3cret"), "{detail}");
    assert_eq!(info_maxmemory(&server), 10 * MB);
}
