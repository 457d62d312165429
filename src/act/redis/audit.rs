//! The runbooks' "Investigate Memory Usage" loops in one pass: keys without a TTL (count, examples,
//! by prefix), the largest keys, and the keys and bytes per prefix.
//!
//! Keys come from SCAN (COUNT hint, optional MATCH); for each batch one pipeline asks `PTTL` and
//! `MEMORY USAGE` of every key, while the next SCAN is already on its way. The prefix of a key is
//! the text before its first `:` (the runbooks' `cut -d: -f1`).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use redis::aio::MultiplexedConnection;
use serde::Serialize;

use super::flush::Budget;
use super::{LatencyGuard, millis, rate, show_key};
use crate::api::KeySize;
use crate::shutdown::Stop;

/// Distinct prefixes counted; the rest are summed under [`OTHER_PREFIXES`].
pub const MAX_PREFIXES: usize = 256;
/// Where keys of prefixes past [`MAX_PREFIXES`] are counted.
pub const OTHER_PREFIXES: &str = "(other prefixes)";
/// The prefix of keys without a `:`.
pub const NO_PREFIX: &str = "(no prefix)";

/// Keys asked about per pipeline: small enough that Redis serves other clients in between.
const AUDIT_CHUNK: usize = 100;

/// What to audit and within which bounds.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditPlan {
    /// Only keys matching this pattern (Redis MATCH syntax); all keys when unset.
    pub pattern: Option<String>,
    /// Stop after this many keys; 0 audits every key.
    pub sample: u64,
    /// How many of the largest keys to report.
    pub top: usize,
    /// Examples of keys without a TTL to report.
    pub examples: usize,
    /// The COUNT hint of each SCAN.
    pub scan_count: usize,
    /// No batch starts after this long.
    pub max_duration: Duration,
    /// Pause while a PING takes longer than this (or 3× the PING time at start, if larger).
    pub max_latency: Duration,
}

impl Default for AuditPlan {
    fn default() -> Self {
        AuditPlan {
            pattern: None,
            sample: 100_000,
            top: 10,
            examples: 10,
            scan_count: 1000,
            max_duration: Duration::from_secs(60),
            max_latency: Duration::from_millis(2),
        }
    }
}

/// What an audit found.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditReport {
    pub started_at: Timestamp,
    /// Keys looked at.
    pub sampled: u64,
    /// Keys that disappeared between SCAN and the questions about them.
    pub vanished: u64,
    /// Sampled keys without a TTL.
    pub without_ttl: u64,
    pub without_ttl_examples: Vec<String>,
    pub without_ttl_by_prefix: BTreeMap<String, u64>,
    pub keys_by_prefix: BTreeMap<String, u64>,
    pub bytes_by_prefix: BTreeMap<String, u64>,
    /// The largest sampled keys, largest first.
    pub largest_keys: Vec<KeySize>,
    /// Whether the SCAN went all the way round (false when the sample size or a budget stopped it).
    pub complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<Budget>,
    pub pauses: u32,
    pub latency_limit_ms: f64,
    pub max_ping_ms: f64,
    pub elapsed_ms: f64,
    pub keys_per_second: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl AuditReport {
    fn new() -> Self {
        AuditReport {
            started_at: Timestamp::now(),
            sampled: 0,
            vanished: 0,
            without_ttl: 0,
            without_ttl_examples: Vec::new(),
            without_ttl_by_prefix: BTreeMap::new(),
            keys_by_prefix: BTreeMap::new(),
            bytes_by_prefix: BTreeMap::new(),
            largest_keys: Vec::new(),
            complete: false,
            stopped_by: None,
            pauses: 0,
            latency_limit_ms: 0.0,
            max_ping_ms: 0.0,
            elapsed_ms: 0.0,
            keys_per_second: 0.0,
            error: None,
        }
    }

    /// A report for an audit that could not start.
    pub fn failed(error: String) -> Self {
        AuditReport {
            error: Some(error),
            ..AuditReport::new()
        }
    }

    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        let top_prefixes = |map: &BTreeMap<String, u64>, n: usize| {
            let mut v: Vec<_> = map.iter().collect();
            v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            v.iter()
                .take(n)
                .map(|(k, c)| format!("{k} {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let largest = self
            .largest_keys
            .iter()
            .take(3)
            .map(|k| format!("{} {}B", k.key, k.bytes))
            .collect::<Vec<_>>()
            .join(", ");
        let mut line = format!(
            "audited {} keys{} in {:.2}s ({:.0} keys/s): {} without TTL [{}]; by prefix [{}]; largest [{}]",
            self.sampled,
            if self.complete { " (all)" } else { " (sample)" },
            self.elapsed_ms / 1000.0,
            self.keys_per_second,
            self.without_ttl,
            top_prefixes(&self.without_ttl_by_prefix, 5),
            top_prefixes(&self.keys_by_prefix, 5),
            largest,
        );
        if self.stopped_by == Some(Budget::Time) {
            line.push_str("; stopped at the time budget");
        }
        if let Some(error) = &self.error {
            line = format!("FAILED: {error}; {line}");
        }
        line
    }

    /// The part kept in `status.memoryReport.lastAudit`.
    pub fn to_status(&self) -> crate::api::AuditOutcome {
        crate::api::AuditOutcome {
            at: self.started_at,
            sampled: self.sampled,
            without_ttl_by_prefix: self.without_ttl_by_prefix.clone(),
            largest_keys: self.largest_keys.clone(),
            without_ttl: self.without_ttl,
            without_ttl_examples: self.without_ttl_examples.iter().take(10).cloned().collect(),
            bytes_by_prefix: top_by_value(&self.bytes_by_prefix, 10),
        }
    }
}

/// The `n` largest entries of a map, as a map.
fn top_by_value(map: &BTreeMap<String, u64>, n: usize) -> BTreeMap<String, u64> {
    let mut all: Vec<(&String, &u64)> = map.iter().collect();
    all.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    all.into_iter()
        .take(n)
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// The prefix a key is counted under.
pub fn prefix_of(key: &[u8]) -> String {
    match key.iter().position(|b| *b == b':') {
        Some(i) => show_key(&key[..i]),
        None => NO_PREFIX.to_owned(),
    }
}

fn bump(map: &mut BTreeMap<String, u64>, prefix: &str, by: u64) {
    if let Some(v) = map.get_mut(prefix) {
        *v += by;
    } else if map.len() < MAX_PREFIXES {
        map.insert(prefix.to_owned(), by);
    } else {
        *map.entry(OTHER_PREFIXES.to_owned()).or_default() += by;
    }
}

/// Most keys remembered to count a repeated one once (8 MB or so of hashes); an unbounded
/// audit of a larger keyspace may count a repeat past them.
const MAX_SEEN: usize = 500_000;

fn key_hash(key: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

/// Run an audit. Never fails as a whole: an error stops it and is in the report, with what was
/// found before it.
pub async fn audit(con: &MultiplexedConnection, plan: &AuditPlan) -> AuditReport {
    audit_until(con, plan, &Stop::new()).await
}

/// [`audit`], stopping after the round in flight once `stop` fires (like the time budget).
pub async fn audit_until(
    con: &MultiplexedConnection,
    plan: &AuditPlan,
    stop: &Stop,
) -> AuditReport {
    let started = Instant::now();
    let deadline = started + plan.max_duration;
    let mut report = AuditReport::new();
    let mut con = con.clone();
    let mut guard = match LatencyGuard::calibrate(&mut con, plan.max_latency).await {
        Ok(g) => g,
        Err(e) => return AuditReport::failed(format!("Redis did not answer PING: {e}")),
    };
    let mut largest: BinaryHeap<Reverse<(u64, Vec<u8>)>> = BinaryHeap::new();
    let mut cursor: u64 = 0;
    let mut scan_done = false;
    let mut taken: u64 = 0;
    let mut pending: Vec<Vec<u8>> = Vec::new();
    // SCAN may return a key more than once (while Redis resizes its table, after a remediation
    // deleted many keys, say): each is counted once. A hash per key keeps this small.
    let mut seen: HashSet<u64> = HashSet::new();
    loop {
        let stopping = stop.is_cancelled();
        if !scan_done && (stopping || Instant::now() >= deadline) {
            report.stopped_by = Some(if stopping {
                Budget::Shutdown
            } else {
                Budget::Time
            });
            scan_done = true;
            pending.clear();
        }
        let batch: Vec<Vec<u8>> = pending.drain(..pending.len().min(AUDIT_CHUNK)).collect();
        if scan_done && batch.is_empty() {
            break;
        }
        // Scan on only while less than a chunk is waiting, so waiting keys stay bounded.
        let scan_now = !scan_done && pending.len() < AUDIT_CHUNK;
        let mut scan_con = con.clone();
        let mut ask_con = con.clone();
        let scan = async {
            if !scan_now {
                return None;
            }
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor);
            if let Some(p) = &plan.pattern {
                cmd.arg("MATCH").arg(p);
            }
            cmd.arg("COUNT").arg(plan.scan_count);
            Some(cmd.query_async::<(u64, Vec<Vec<u8>>)>(&mut scan_con).await)
        };
        let ask = async {
            if batch.is_empty() {
                return None;
            }
            let mut pipe = redis::pipe();
            for key in &batch {
                pipe.cmd("PTTL").arg(key);
                pipe.cmd("MEMORY").arg("USAGE").arg(key);
            }
            Some(pipe.query_async::<Vec<redis::Value>>(&mut ask_con).await)
        };
        let mut ping_con = con.clone();
        // The PING goes first, so it is answered before the round's own commands.
        let (pinged, scanned, answers) = futures::join!(super::ping(&mut ping_con), scan, ask);
        let mut failure = None;
        match answers {
            Some(Ok(values)) => {
                for (key, pair) in batch.iter().zip(values.chunks(2)) {
                    let ttl = match pair.first() {
                        Some(redis::Value::Int(t)) => *t,
                        _ => -2,
                    };
                    let bytes = match pair.get(1) {
                        Some(redis::Value::Int(b)) => Some(*b as u64),
                        _ => None,
                    };
                    let (Some(bytes), true) = (bytes, ttl != -2) else {
                        report.vanished += 1;
                        continue;
                    };
                    report.sampled += 1;
                    let prefix = prefix_of(key);
                    bump(&mut report.keys_by_prefix, &prefix, 1);
                    bump(&mut report.bytes_by_prefix, &prefix, bytes);
                    if ttl == -1 {
                        report.without_ttl += 1;
                        bump(&mut report.without_ttl_by_prefix, &prefix, 1);
                        if report.without_ttl_examples.len() < plan.examples {
                            report.without_ttl_examples.push(show_key(key));
                        }
                    }
                    if plan.top > 0 {
                        let smallest = largest.peek().map(|Reverse((b, _))| *b);
                        if largest.len() < plan.top {
                            largest.push(Reverse((bytes, key.clone())));
                        } else if smallest.is_some_and(|s| bytes > s) {
                            largest.pop();
                            largest.push(Reverse((bytes, key.clone())));
                        }
                    }
                }
            }
            Some(Err(e)) => failure = Some(format!("PTTL/MEMORY USAGE failed: {e}")),
            None => {}
        }
        match scanned {
            Some(Ok((next, keys))) => {
                for key in keys {
                    let hash = key_hash(&key);
                    let repeated = if seen.len() < MAX_SEEN {
                        !seen.insert(hash)
                    } else {
                        seen.contains(&hash)
                    };
                    if repeated {
                        continue;
                    }
                    if plan.sample > 0 && taken >= plan.sample {
                        scan_done = true;
                        break;
                    }
                    taken += 1;
                    pending.push(key);
                }
                cursor = next;
                if next == 0 && !scan_done {
                    scan_done = true;
                    report.complete = true;
                }
            }
            Some(Err(e)) => {
                failure.get_or_insert_with(|| format!("SCAN failed: {e}"));
            }
            None => {}
        }
        if let Some(error) = failure {
            report.error = Some(error);
            break;
        }
        let settled = match pinged {
            Ok(rtt) => guard.settle(&mut con, rtt, deadline).await,
            Err(e) => Err(e),
        };
        if let Err(e) = settled {
            report.error = Some(format!("PING failed: {e}"));
            break;
        }
    }
    let mut largest: Vec<_> = largest.into_iter().map(|Reverse(x)| x).collect();
    largest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    report.largest_keys = largest
        .into_iter()
        .map(|(bytes, key)| KeySize {
            key: show_key(&key),
            bytes,
        })
        .collect();
    report.pauses = guard.pauses;
    report.latency_limit_ms = millis(guard.limit());
    report.max_ping_ms = millis(guard.max_ping);
    let elapsed = started.elapsed();
    report.elapsed_ms = millis(elapsed);
    report.keys_per_second = rate(report.sampled, elapsed);
    tracing::info!(
        sampled = report.sampled,
        without_ttl = report.without_ttl,
        error = report.error.as_deref(),
        "redis audit finished"
    );
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_cut_at_the_first_colon_and_bounded() {
        assert_eq!(prefix_of(b"cache:clinic:1"), "cache");
        assert_eq!(prefix_of(b"plain"), NO_PREFIX);
        assert_eq!(prefix_of(b":x"), "");
        let mut map = BTreeMap::new();
        for i in 0..(MAX_PREFIXES + 10) {
            bump(&mut map, &format!("p{i}"), 1);
        }
        assert_eq!(map.len(), MAX_PREFIXES + 1);
        assert_eq!(map[OTHER_PREFIXES], 10);
        bump(&mut map, "p0", 2);
        assert_eq!(map["p0"], 3);
    }
}
