//! The Redis OOM runbook's option B done safely: `CONFIG SET maxmemory` within a ceiling, and the
//! original value put back afterwards.
//!
//! Idempotent and bounded: the value is read first (`CONFIG GET maxmemory`); already at the target
//! is done; a value that is neither what the policy last saw nor the target was changed by someone
//! else and is left alone; a target above the ceiling, or a Redis without a limit (maxmemory 0),
//! is refused before anything is sent. A Redis that refuses CONFIG (the command renamed away with
//! `rename-command CONFIG ""`, or an ACL user without `+config`) gives a reason that says which.

use std::time::Duration;

use jiff::Timestamp;
use redis::aio::MultiplexedConnection;

use super::connect_within;
use crate::act::record;
use crate::api::{ActionKind, ActionOutcome, ActionRecord};
use crate::destinations::AllowList;
use crate::secret::{SecretString, scrub};

/// How long one Redis reply may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a CONFIG SET maxmemory is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxMemoryChange {
    pub bytes: u64,
    /// The value the policy saw; the only one changed from (besides the target itself).
    pub from: u64,
    pub ceiling: u64,
    pub restore: bool,
}

/// How it went.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MaxMemoryError {
    #[error(
        "{bytes} bytes is above the ceiling spec.redis.remediation.maxMemoryCeiling ({ceiling} bytes): not sent"
    )]
    AboveCeiling { bytes: u64, ceiling: u64 },
    #[error("Redis has no memory limit (maxmemory 0): nothing to raise")]
    NoLimit,
    #[error(
        "maxmemory is {now} bytes, neither the {from} tierguard saw nor the target {bytes}: changed outside tierguard, left alone"
    )]
    ChangedElsewhere { now: u64, from: u64, bytes: u64 },
    #[error(
        "Redis refuses CONFIG: the command is renamed or disabled (rename-command) on this server: {0}"
    )]
    Renamed(String),
    #[error(
        "Redis refuses CONFIG: the ACL user may not run it (needs +config|get and +config|set): {0}"
    )]
    Denied(String),
    #[error("CONFIG SET maxmemory failed: {0}")]
    Failed(String),
    #[error("{0}")]
    Connect(String),
}

impl MaxMemoryError {
    /// Whether Redis will not take CONFIG at all (no retry will help).
    pub fn is_refusal(&self) -> bool {
        matches!(self, MaxMemoryError::Renamed(_) | MaxMemoryError::Denied(_))
    }
}

/// What was done: the value before and after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxMemoryDone {
    pub before: u64,
    pub after: u64,
}

fn classify(e: &redis::RedisError) -> MaxMemoryError {
    let text = crate::remote::text::reason(&e.to_string());
    let lower = text.to_ascii_lowercase();
    if lower.contains("noperm") || lower.contains("no permissions") {
        MaxMemoryError::Denied(text)
    } else if lower.contains("unknown command") || lower.contains("err unknown") {
        MaxMemoryError::Renamed(text)
    } else {
        MaxMemoryError::Failed(text)
    }
}

/// `CONFIG GET maxmemory`.
pub async fn read_max_memory(con: &MultiplexedConnection) -> Result<u64, MaxMemoryError> {
    let mut con = con.clone();
    let answer: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query_async(&mut con)
        .await
        .map_err(|e| classify(&e))?;
    match answer.as_slice() {
        [_, value] => value.parse::<u64>().map_err(|_| {
            MaxMemoryError::Failed(format!(
                "CONFIG GET maxmemory answered {:?}",
                crate::remote::text::shown(value, 40)
            ))
        }),
        _ => Err(MaxMemoryError::Failed(
            "CONFIG GET maxmemory answered no value".into(),
        )),
    }
}

/// Apply `change` on `con`.
pub async fn set_max_memory(
    con: &MultiplexedConnection,
    change: MaxMemoryChange,
) -> Result<MaxMemoryDone, MaxMemoryError> {
    if change.bytes > change.ceiling && !change.restore {
        return Err(MaxMemoryError::AboveCeiling {
            bytes: change.bytes,
            ceiling: change.ceiling,
        });
    }
    let now = read_max_memory(con).await?;
    if now == change.bytes {
        return Ok(MaxMemoryDone {
            before: now,
            after: now,
        });
    }
    if now == 0 && !change.restore {
        return Err(MaxMemoryError::NoLimit);
    }
    if now != change.from {
        return Err(MaxMemoryError::ChangedElsewhere {
            now,
            from: change.from,
            bytes: change.bytes,
        });
    }
    let mut c = con.clone();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(change.bytes)
        .query_async::<()>(&mut c)
        .await
        .map_err(|e| classify(&e))?;
    let after = read_max_memory(con).await?;
    if after != change.bytes {
        return Err(MaxMemoryError::Failed(format!(
            "maxmemory reads {after} bytes after CONFIG SET {}",
            change.bytes
        )));
    }
    Ok(MaxMemoryDone { before: now, after })
}

/// The controller's action: connect, apply, record.
pub async fn change_max_memory(
    url: &SecretString,
    destinations: &AllowList,
    change: MaxMemoryChange,
    reason: &str,
    now: Timestamp,
) -> (Result<MaxMemoryDone, MaxMemoryError>, ActionRecord) {
    let result = match connect_within(url, RESPONSE_TIMEOUT, destinations).await {
        Ok(con) => set_max_memory(&con, change).await,
        Err(e) => Err(MaxMemoryError::Connect(e.to_string())),
    }
    .map_err(|e| match e {
        MaxMemoryError::Failed(t) => MaxMemoryError::Failed(scrub(&t, &[url])),
        other => other,
    });
    let (outcome, detail) = match &result {
        Ok(done) if done.before == done.after => (
            ActionOutcome::Ok,
            format!("maxmemory already {} bytes", done.after),
        ),
        Ok(done) => (
            ActionOutcome::Ok,
            format!(
                "maxmemory {} → {} bytes{}",
                done.before,
                done.after,
                if change.restore {
                    " (the value before the incident)"
                } else {
                    ""
                }
            ),
        ),
        Err(e) => (ActionOutcome::Failed, e.to_string()),
    };
    let record = record::action(now, ActionKind::SetMaxMemory, reason, outcome, Some(detail));
    (result, record)
}
