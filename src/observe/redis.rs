//! Redis signals from `INFO`: memory use against maxmemory, evictions, keyspace hits and misses,
//! and run_id / uptime (a change means Redis restarted with an empty cache).
//!
//! With `spec.redis.cluster`, every master listed by `CLUSTER NODES` is read: counters are
//! summed, the usage is the fullest master's (it is the one that runs out of memory first),
//! run_ids are joined (sorted by address) and the uptime is the smallest. Masters are reached
//! at the address they announce, with the credentials and TLS settings of the URL.
//!
//! Auth and TLS come through the URL held in the Secret (`redis://user:password@host:6379/0`,
//! `rediss://` for TLS). The URL and its password never appear in a message.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, InfoDict};

use crate::api::Observation;
use crate::api::Signal;
use crate::destinations::AllowList;
use crate::remote::redis::{Limits, MAX_INFO_REPLY_BYTES};
use crate::secret::redact_url;

/// What one Redis node reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub used_memory: u64,
    /// 0 means no limit.
    pub maxmemory: u64,
    pub evicted_keys: u64,
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
    pub run_id: String,
    pub uptime_in_seconds: u64,
    /// Keys without a TTL over every database (`INFO keyspace`: keys minus expires).
    pub keys_without_ttl: u64,
}

/// Keys without a TTL in an `INFO` answer's keyspace lines (`db0:keys=10,expires=4,avg_ttl=0`),
/// summed over databases; no database line means no keys.
pub fn keys_without_ttl(info: &str) -> Result<u64, String> {
    let mut total = 0u64;
    for line in info.lines() {
        let Some((db, fields)) = line.trim().split_once(':') else {
            continue;
        };
        let Some(number) = db.strip_prefix("db") else {
            continue;
        };
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let field = |name: &str| -> Result<u64, String> {
            fields
                .split(',')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .ok_or_else(|| format!("INFO keyspace line {db} has no {name}"))?
                .parse::<u64>()
                .map_err(|_| format!("INFO keyspace line {db}: {name} is not a number"))
        };
        let (keys, expires) = (field("keys")?, field("expires")?);
        total = total.saturating_add(keys.saturating_sub(expires));
    }
    Ok(total)
}

impl NodeInfo {
    /// Read the fields from an `INFO` answer; a missing field is an error naming it.
    pub fn parse(info: &str) -> Result<Self, String> {
        let dict = InfoDict::new(info);
        let number = |key: &str| -> Result<u64, String> {
            dict.get::<u64>(key)
                .ok_or_else(|| format!("INFO has no numeric field {key}"))
        };
        Ok(NodeInfo {
            used_memory: number("used_memory")?,
            maxmemory: number("maxmemory")?,
            evicted_keys: number("evicted_keys")?,
            keyspace_hits: number("keyspace_hits")?,
            keyspace_misses: number("keyspace_misses")?,
            run_id: dict
                .get::<String>("run_id")
                .ok_or("INFO has no field run_id")?,
            uptime_in_seconds: number("uptime_in_seconds")?,
            keys_without_ttl: keys_without_ttl(info)?,
        })
    }
}

/// The Redis signals of one observation (one node, or all masters of a cluster).
#[derive(Clone, Debug, PartialEq)]
pub struct RedisReading {
    pub used_memory_bytes: u64,
    pub max_memory_bytes: Result<u64, String>,
    pub used_memory_percent: Result<f64, String>,
    pub evicted_keys: u64,
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
    pub run_id: String,
    pub uptime_seconds: u64,
    pub keys_without_ttl: u64,
    /// The value of the generation key, when one is read (a missing key is an error).
    pub generation: Option<Result<String, String>>,
}

impl RedisReading {
    /// Store the reading into an observation.
    pub fn apply(&self, obs: &mut Observation) {
        obs.redis_used_memory_bytes = Some(self.used_memory_bytes);
        match &self.max_memory_bytes {
            Ok(max) => obs.redis_max_memory_bytes = Some(*max),
            Err(why) => {
                obs.unknown
                    .insert(Signal::RedisMaxMemoryBytes.name().to_owned(), why.clone());
            }
        }
        match &self.used_memory_percent {
            Ok(p) => obs.redis_used_memory_percent = Some(*p),
            Err(why) => {
                obs.unknown.insert(
                    Signal::RedisUsedMemoryPercent.name().to_owned(),
                    why.clone(),
                );
            }
        }
        obs.redis_evicted_keys = Some(self.evicted_keys);
        obs.redis_keyspace_hits = Some(self.keyspace_hits);
        obs.redis_keyspace_misses = Some(self.keyspace_misses);
        obs.redis_run_id = Some(self.run_id.clone());
        obs.redis_uptime_seconds = Some(self.uptime_seconds);
        obs.redis_keys_without_ttl = Some(self.keys_without_ttl);
        match &self.generation {
            Some(Ok(generation)) => obs.redis_cache_generation = Some(generation.clone()),
            Some(Err(why)) => {
                obs.unknown
                    .insert(Signal::RedisCacheGeneration.name().to_owned(), why.clone());
            }
            None => {}
        }
    }
}

/// Mark every Redis signal unknown with the same reason.
pub fn set_all_unknown(obs: &mut Observation, reason: &str) {
    for signal in Signal::ALL
        .iter()
        .filter(|s| s.source() == crate::api::signals::Source::Redis)
    {
        obs.unknown
            .insert(signal.name().to_owned(), reason.to_owned());
    }
}

/// Combine what the nodes (standalone: one; cluster: every master, by address) report.
/// `fallback_max` is spec.redis.maxMemory, used for a node that reports maxmemory 0.
pub fn aggregate(
    nodes: &BTreeMap<String, NodeInfo>,
    fallback_max: Option<u64>,
) -> Result<RedisReading, String> {
    if nodes.is_empty() {
        return Err("no Redis master to read".to_owned());
    }
    let several = nodes.len() > 1;
    let max_of = |addr: &str, node: &NodeInfo| -> Result<u64, String> {
        match (node.maxmemory, fallback_max) {
            (0, Some(fallback)) if fallback > 0 => Ok(fallback),
            (0, _) => Err(format!(
                "Redis{} reports maxmemory 0 (no limit) and spec.redis.maxMemory is not set",
                if several {
                    format!(" master {addr}")
                } else {
                    String::new()
                }
            )),
            (max, _) => Ok(max),
        }
    };
    // The fullest master: the highest percentage; unknown if any master's limit is unknown.
    let mut fullest: Option<(f64, u64, u64)> = None;
    let mut limit_error: Option<String> = None;
    for (addr, node) in nodes {
        match max_of(addr, node) {
            Ok(max) => {
                let percent = 100.0 * node.used_memory as f64 / max as f64;
                if fullest.is_none_or(|(p, _, _)| percent > p) {
                    fullest = Some((percent, node.used_memory, max));
                }
            }
            Err(e) => {
                limit_error.get_or_insert(e);
            }
        }
    }
    let (used_memory_bytes, max_memory_bytes, used_memory_percent) = match (limit_error, fullest) {
        (None, Some((percent, used, max))) => (used, Ok(max), Ok(percent)),
        (error, _) => {
            let why = error.unwrap_or_else(|| "no memory limit known".to_owned());
            let used = nodes.values().map(|n| n.used_memory).max().unwrap_or(0);
            (used, Err(why.clone()), Err(why))
        }
    };
    Ok(RedisReading {
        used_memory_bytes,
        max_memory_bytes,
        used_memory_percent,
        evicted_keys: nodes.values().map(|n| n.evicted_keys).sum(),
        keyspace_hits: nodes.values().map(|n| n.keyspace_hits).sum(),
        keyspace_misses: nodes.values().map(|n| n.keyspace_misses).sum(),
        run_id: nodes
            .values()
            .map(|n| n.run_id.as_str())
            .collect::<Vec<_>>()
            .join(","),
        uptime_seconds: nodes
            .values()
            .map(|n| n.uptime_in_seconds)
            .min()
            .unwrap_or(0),
        keys_without_ttl: nodes
            .values()
            .fold(0u64, |all, n| all.saturating_add(n.keys_without_ttl)),
        generation: None,
    })
}

/// The reachable masters (`host`, `port`) of a `CLUSTER NODES` answer. A master with an empty
/// address (the node answering, before it learnt its own address) is reported as `seed`.
pub fn cluster_masters(nodes: &str, seed: (&str, u16)) -> Result<Vec<(String, u16)>, String> {
    let mut masters = Vec::new();
    for line in nodes.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            return Err(format!("unexpected CLUSTER NODES line {line:?}"));
        }
        let flags: Vec<&str> = fields[2].split(',').collect();
        if !flags.contains(&"master")
            || flags
                .iter()
                .any(|f| matches!(*f, "fail" | "handshake" | "noaddr"))
        {
            continue;
        }
        // ip:port@cport[,hostname]
        let address = fields[1].split(['@', ',']).next().unwrap_or_default();
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("unexpected node address {:?}", fields[1]))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("unexpected node address {:?}", fields[1]))?;
        if host.is_empty() || port == 0 {
            masters.push((seed.0.to_owned(), seed.1));
        } else {
            masters.push((host.trim_matches(['[', ']']).to_owned(), port));
        }
    }
    masters.sort();
    masters.dedup();
    if masters.is_empty() {
        return Err("CLUSTER NODES lists no reachable master".to_owned());
    }
    Ok(masters)
}

/// Bytes from a quantity such as `512Mi`, `2G` or `1048576` (spec.redis.maxMemory).
pub fn parse_quantity(text: &str) -> Result<u64, String> {
    let shown = crate::remote::text::shown(text, 40);
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!("{shown:?} is not a byte quantity like 512Mi or 1G"));
    }
    let factor: u64 = match suffix {
        "" => 1,
        "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => {
            return Err(format!(
                "{shown:?} has an unknown suffix {:?}; use Ki, Mi, Gi, Ti, K, M, G or T",
                crate::remote::text::shown(suffix, 20)
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("{shown:?} is too large: at most {} bytes", u64::MAX))
}

/// Reads one Redis deployment (standalone or cluster); the controller keeps one per tier so
/// connections are reused between reconciles. Replies are capped at [`MAX_INFO_REPLY_BYTES`]
/// (see [`crate::remote::redis`]); a connection that failed is opened again at the next read.
pub struct RedisObserver {
    client: redis::Client,
    password: Option<String>,
    cluster: bool,
    fallback_max: Option<u64>,
    timeout: Duration,
    /// Where the seed and every cluster node may be reached.
    destinations: AllowList,
    connections: BTreeMap<String, MultiplexedConnection>,
    /// The key holding the current cache generation, read at every observation.
    generation_key: Option<String>,
}

/// The longest cache generation value kept (it is an id; a longer value is cut).
const MAX_GENERATION_CHARS: usize = 64;

/// Most masters of a Redis Cluster read; a `CLUSTER NODES` answer listing more is refused before
/// any node is contacted (each node is a connection, and the credentials go to each).
pub const MAX_CLUSTER_MASTERS: usize = 128;

impl std::fmt::Debug for RedisObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisObserver")
            .field(
                "addr",
                &self.client.get_connection_info().addr().to_string(),
            )
            .field("cluster", &self.cluster)
            .field("fallback_max", &self.fallback_max)
            .finish_non_exhaustive()
    }
}

impl RedisObserver {
    /// `url` is the Secret's value; errors never repeat it.
    pub fn new(
        url: &str,
        cluster: bool,
        fallback_max: Option<u64>,
        timeout: Duration,
        destinations: AllowList,
    ) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| {
            format!(
                "invalid Redis URL {}: {}",
                redact_url(url),
                scrub(&e.to_string(), None, url)
            )
        })?;
        let password = client
            .get_connection_info()
            .redis_settings()
            .password()
            .map(str::to_owned);
        Ok(RedisObserver {
            client,
            password,
            cluster,
            fallback_max,
            timeout,
            destinations,
            connections: BTreeMap::new(),
            generation_key: None,
        })
    }

    /// Also read `key` as the current cache generation.
    pub fn with_generation_key(mut self, key: Option<String>) -> Self {
        self.generation_key = key;
        self
    }

    /// The generation key's value (standalone Redis, or the seed of a cluster).
    async fn generation(&mut self, key: &str) -> Result<String, String> {
        let client = self.client.clone();
        let mut conn = self.connection("seed", &client).await?;
        let answer = redis::cmd("GET")
            .arg(key)
            .query_async::<Option<String>>(&mut conn)
            .await;
        match answer {
            Ok(Some(v)) => Ok(v.chars().take(MAX_GENERATION_CHARS).collect()),
            Ok(None) => Err(format!(
                "the generation key {:?} does not exist",
                crate::remote::text::shown(key, 80)
            )),
            Err(e) => Err(format!(
                "GET {}: {}",
                crate::remote::text::shown(key, 80),
                self.describe(&e)
            )),
        }
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn limits(&self) -> Limits {
        Limits {
            max_reply_bytes: MAX_INFO_REPLY_BYTES,
            timeout: self.timeout,
        }
    }

    /// The kept connection to `key`, or a new one to the address the allow-list checked.
    async fn connection(
        &mut self,
        key: &str,
        client: &redis::Client,
    ) -> Result<MultiplexedConnection, String> {
        if let Some(c) = self.connections.get(key) {
            return Ok(c.clone());
        }
        let info = self
            .destinations
            .redis_connection(client.get_connection_info().clone())
            .await
            .map_err(|e| e.to_string())?;
        let connection = crate::remote::redis::connect(&info, self.limits())
            .await
            .map_err(|e| self.describe(&e))?;
        self.connections.insert(key.to_owned(), connection.clone());
        Ok(connection)
    }

    /// A failed connection is made anew (resolved and checked again) at the next read.
    fn forget_on_error<T>(&mut self, key: &str, result: Result<T, String>) -> Result<T, String> {
        if result.is_err() {
            self.connections.remove(key);
        }
        result
    }

    fn describe(&self, e: &redis::RedisError) -> String {
        scrub(&e.to_string(), self.password.as_deref(), "")
    }

    /// Run a command on the connection to `key`; when a kept connection had dropped, open a new
    /// one and try once more. A failed connection is forgotten.
    async fn query(
        &mut self,
        key: &str,
        client: &redis::Client,
        cmd: &redis::Cmd,
    ) -> Result<String, String> {
        let reused = self.connections.contains_key(key);
        let mut conn = self.connection(key, client).await?;
        match cmd.query_async::<String>(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                self.connections.remove(key);
                if reused && (e.is_connection_dropped() || e.is_io_error()) && !is_too_large(&e) {
                    let mut conn = self.connection(key, client).await?;
                    return cmd.query_async::<String>(&mut conn).await.map_err(|e| {
                        self.connections.remove(key);
                        self.describe(&e)
                    });
                }
                Err(self.describe(&e))
            }
        }
    }

    async fn info(&mut self, key: &str, client: &redis::Client) -> Result<NodeInfo, String> {
        let text = self.query(key, client, &redis::cmd("INFO")).await?;
        NodeInfo::parse(&text)
    }

    /// Read every node and combine, and the generation key when one is set.
    pub async fn read(&mut self) -> Result<RedisReading, String> {
        let mut reading = self.read_nodes().await?;
        if let Some(key) = self.generation_key.clone() {
            reading.generation = Some(self.generation(&key).await);
        }
        Ok(reading)
    }

    async fn read_nodes(&mut self) -> Result<RedisReading, String> {
        let seed_client = self.client.clone();
        if !self.cluster {
            let node = self.info("seed", &seed_client).await?;
            let nodes = BTreeMap::from([(self.seed_address(), node)]);
            return aggregate(&nodes, self.fallback_max);
        }
        let listing = self
            .query("seed", &seed_client, redis::cmd("CLUSTER").arg("NODES"))
            .await
            .map_err(|e| format!("CLUSTER NODES: {e}"));
        let listing = self.forget_on_error("seed", listing)?;
        let seed_addr = match self.client.get_connection_info().addr() {
            ConnectionAddr::Tcp(h, p)
            | ConnectionAddr::TcpTls {
                host: h, port: p, ..
            } => (h.clone(), *p),
            _ => {
                return Err("a Redis Cluster is reached over TCP, not a unix socket".to_owned());
            }
        };
        let masters = cluster_masters(&listing, (&seed_addr.0, seed_addr.1))?;
        // The listing is the seed's word: every master must be an allowed destination, and there
        // may be only so many, before any of them is contacted.
        check_cluster_masters(&masters, &self.destinations)?;
        // Forget connections to nodes that are no longer masters.
        let wanted: Vec<String> = masters.iter().map(|(h, p)| format!("{h}:{p}")).collect();
        self.connections
            .retain(|k, _| k == "seed" || wanted.contains(k));
        let mut conns = Vec::with_capacity(masters.len());
        for (host, port) in &masters {
            let key = format!("{host}:{port}");
            let client = self.client_for(host, *port)?;
            let conn = self.connection(&key, &client).await;
            let conn = self
                .forget_on_error(&key, conn)
                .map_err(|e| master_failed(&key, &e))?;
            conns.push((key, conn));
        }
        // Every master at once; a connection that failed is opened again at the next read.
        let answers =
            futures::future::join_all(conns.into_iter().map(|(key, mut conn)| async move {
                let answer = redis::cmd("INFO").query_async::<String>(&mut conn).await;
                (key, answer)
            }))
            .await;
        let mut nodes = BTreeMap::new();
        for (key, answer) in answers {
            let text = answer.map_err(|e| {
                self.connections.remove(&key);
                master_failed(&key, &self.describe(&e))
            })?;
            let node = NodeInfo::parse(&text).map_err(|e| master_failed(&key, &e))?;
            nodes.insert(key, node);
        }
        aggregate(&nodes, self.fallback_max)
    }

    fn seed_address(&self) -> String {
        self.client.get_connection_info().addr().to_string()
    }

    /// A client for another node: same credentials, database and TLS settings.
    fn client_for(&self, host: &str, port: u16) -> Result<redis::Client, String> {
        let info = self.client.get_connection_info().clone();
        let addr = match info.addr().clone() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure,
                tls_params,
            },
            _ => ConnectionAddr::Tcp(host.to_owned(), port),
        };
        redis::Client::open(info.set_addr(addr)).map_err(|e| self.describe(&e))
    }
}

/// Refuse a cluster listing with more masters than [`MAX_CLUSTER_MASTERS`], or with a master
/// outside the allow-list (an address literal is decided here; a name when it is resolved).
pub fn check_cluster_masters(
    masters: &[(String, u16)],
    destinations: &AllowList,
) -> Result<(), String> {
    if masters.len() > MAX_CLUSTER_MASTERS {
        return Err(format!(
            "CLUSTER NODES lists {} masters; tierguard reads at most {MAX_CLUSTER_MASTERS} and contacted none",
            masters.len()
        ));
    }
    for (host, port) in masters {
        destinations.check_host(host).map_err(|refused| {
            format!("CLUSTER NODES lists a master at {host}:{port}, and no master was contacted: {refused}")
        })?;
    }
    Ok(())
}

/// A master, whose address came from the seed's answer, could not be read. What went wrong is
/// logged for the operator; status says only which master, so that the listing cannot be used to
/// learn which ports answer at an address.
fn master_failed(key: &str, error: &str) -> String {
    tracing::warn!(master = %key, %error, "a Redis Cluster master could not be read");
    format!("master {key} could not be read (the controller's log says why)")
}

fn is_too_large(e: &redis::RedisError) -> bool {
    e.to_string().contains("larger than")
}

/// Remove a password (and the whole URL) from a message.
fn scrub(message: &str, password: Option<&str>, url: &str) -> String {
    let mut out = message.to_owned();
    if !url.is_empty() {
        out = out.replace(url, &redact_url(url));
    }
    if let Some(p) = password.filter(|p| !p.is_empty()) {
        out = out.replace(p, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\nuptime_in_seconds:42\r\n\r\n# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmaxmemory:4194304\r\n\r\n# Stats\r\nevicted_keys:7\r\nkeyspace_hits:90\r\nkeyspace_misses:10\r\n\r\n# Keyspace\r\ndb0:keys=10,expires=4,avg_ttl=0\r\ndb2:keys=5,expires=5,avg_ttl=1\r\n";

    fn node(used: u64, max: u64, run_id: &str, uptime: u64) -> NodeInfo {
        NodeInfo {
            used_memory: used,
            maxmemory: max,
            evicted_keys: 1,
            keyspace_hits: 10,
            keyspace_misses: 2,
            run_id: run_id.into(),
            uptime_in_seconds: uptime,
            keys_without_ttl: 3,
        }
    }

    #[test]
    fn keys_without_ttl_are_keys_minus_expires_over_databases() {
        assert_eq!(keys_without_ttl("# Keyspace\r\n"), Ok(0));
        assert_eq!(
            keys_without_ttl(
                "db0:keys=3,expires=1,avg_ttl=0\r\ndb15:keys=7,expires=0,avg_ttl=0\r\n"
            ),
            Ok(9)
        );
        // A db line without its fields is named, not read as zero.
        assert!(
            keys_without_ttl("db0:keys=3,avg_ttl=0")
                .unwrap_err()
                .contains("expires")
        );
        // Other lines with a colon are not keyspace lines.
        assert_eq!(keys_without_ttl("dbfilename:dump.rdb\r\nrun_id:x"), Ok(0));
    }

    #[test]
    fn info_fields_are_read_and_a_missing_one_is_named() {
        let n = NodeInfo::parse(INFO).unwrap();
        assert_eq!(
            n,
            NodeInfo {
                used_memory: 1_048_576,
                maxmemory: 4_194_304,
                evicted_keys: 7,
                keyspace_hits: 90,
                keyspace_misses: 10,
                run_id: "abc123".into(),
                uptime_in_seconds: 42,
                keys_without_ttl: 6,
            }
        );
        let e = NodeInfo::parse(&INFO.replace("evicted_keys:7\r\n", "")).unwrap_err();
        assert!(e.contains("evicted_keys"), "{e}");
    }

    #[test]
    fn standalone_usage_and_the_maxmemory_zero_fallback() {
        let one = |n| BTreeMap::from([("h:1".to_owned(), n)]);
        let r = aggregate(&one(node(25, 100, "a", 5)), None).unwrap();
        assert_eq!(r.used_memory_percent, Ok(25.0));
        assert_eq!(r.max_memory_bytes, Ok(100));
        let r = aggregate(&one(node(25, 0, "a", 5)), Some(50)).unwrap();
        assert_eq!(r.used_memory_percent, Ok(50.0));
        assert_eq!(r.max_memory_bytes, Ok(50));
        let r = aggregate(&one(node(25, 0, "a", 5)), None).unwrap();
        assert!(
            r.used_memory_percent
                .unwrap_err()
                .contains("spec.redis.maxMemory is not set")
        );
        assert_eq!(r.used_memory_bytes, 25);
    }

    #[test]
    fn cluster_sums_counters_takes_the_fullest_master_and_the_youngest_uptime() {
        let nodes = BTreeMap::from([
            ("10.0.0.2:6379".to_owned(), node(60, 100, "bbb", 500)),
            ("10.0.0.1:6379".to_owned(), node(300, 1000, "aaa", 30)),
            ("10.0.0.3:6379".to_owned(), node(10, 0, "ccc", 900)),
        ]);
        let r = aggregate(&nodes, Some(20)).unwrap();
        // 10.0.0.3 falls back to 20 bytes: 50 %, below 10.0.0.2's 60 %.
        assert_eq!(r.used_memory_percent, Ok(60.0));
        assert_eq!((r.used_memory_bytes, r.max_memory_bytes), (60, Ok(100)));
        assert_eq!(r.evicted_keys, 3);
        assert_eq!(r.keyspace_hits, 30);
        assert_eq!(r.keyspace_misses, 6);
        assert_eq!(r.run_id, "aaa,bbb,ccc");
        assert_eq!(r.uptime_seconds, 30);
        // Without the fallback the percentage is unknown and names the master.
        let r = aggregate(&nodes, None).unwrap();
        assert!(
            r.used_memory_percent
                .unwrap_err()
                .contains("master 10.0.0.3:6379")
        );
        assert!(aggregate(&BTreeMap::new(), None).is_err());
    }

    #[test]
    fn cluster_nodes_lists_the_live_masters() {
        let listing = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host-a slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 master,fail - 0 1426238316232 5 connected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca :0@0 myself,master - 0 0 1 connected 0-5460
";
        let masters = cluster_masters(listing, ("seed", 30001)).unwrap();
        assert_eq!(
            masters,
            vec![
                ("127.0.0.1".to_owned(), 30002),
                ("127.0.0.1".to_owned(), 30003),
                ("seed".to_owned(), 30001),
            ]
        );
        assert!(cluster_masters("garbage\n", ("s", 1)).is_err());
        assert!(cluster_masters("", ("s", 1)).is_err());
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("512Mi"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_quantity("2G"), Ok(2_000_000_000));
        assert_eq!(parse_quantity("1024"), Ok(1024));
        assert!(
            parse_quantity("12Qi")
                .unwrap_err()
                .contains("unknown suffix")
        );
        assert!(parse_quantity("Mi").is_err());
        assert!(
            parse_quantity("99999999999999999999Ti")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse_quantity("99999999Ti")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn errors_are_scrubbed_of_the_password_and_url() {
        assert_eq!(
            scrub("AUTH s3cret failed", Some("s3cret"), ""),
            "AUTH *** failed"
        );
        assert_eq!(
            scrub(
                "cannot reach redis://:s3cret@h:1/",
                None,
                "redis://:s3cret@h:1/"
            ),
            "cannot reach redis://:***@h:1/"
        );
    }

    #[test]
    fn an_invalid_url_is_reported_without_the_password() {
        let e = RedisObserver::new(
            "redis://:s3cret@host:notaport/",
            false,
            None,
            Duration::from_secs(1),
            AllowList::any(crate::destinations::Purpose::Redis),
        )
        .unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(e.contains("invalid Redis URL"), "{e}");
    }
}
