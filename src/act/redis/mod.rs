//! Safe Redis remediation: the runbooks' manual Redis commands done without harm.
//!
//! - [`flush`]: SCAN with MATCH and a COUNT hint, UNLINK in pipelined batches, old cache
//!   generations deleted while the current one is kept, within a key budget and a time budget,
//!   pausing while Redis answers slowly.
//! - [`audit`]: keys without TTL, the largest keys and the key count per prefix, in one pass.
//! - [`remediate`]: both driven by a MemoryTier's `spec.redis`, for the controller.
//!
//! KEYS, FLUSHALL and FLUSHDB are never sent: they block Redis or delete what must be kept.

pub mod audit;
pub mod flush;
pub mod glob;
pub mod maxmemory;
pub mod remediate;

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use crate::destinations::{AllowList, Purpose};
use crate::remote::redis::{Limits, MAX_COMMAND_REPLY_BYTES};
use crate::secret::{ExposeSecret, SecretString, redact_url, scrub};

/// Why Redis could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid Redis URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot connect to {url}: {reason}")]
    Unreachable { url: String, reason: String },
}

/// Connect to the Redis at `url`, wherever it is: the command line's own connections. Replies
/// are capped at [`MAX_COMMAND_REPLY_BYTES`] (see [`crate::remote::redis`]).
pub async fn connect(
    url: &SecretString,
    response_timeout: Duration,
) -> Result<MultiplexedConnection, ConnectError> {
    connect_within(url, response_timeout, &AllowList::any(Purpose::Redis)).await
}

/// Connect to the Redis at `url`, at an address `destinations` allows (resolved and checked
/// here). The connection does not reconnect by itself: a remediation that loses its connection
/// stops and reports, rather than carrying on against a restarted server.
pub async fn connect_within(
    url: &SecretString,
    response_timeout: Duration,
    destinations: &AllowList,
) -> Result<MultiplexedConnection, ConnectError> {
    let shown = redact_url(url.expose_secret());
    let invalid = |e: redis::RedisError| ConnectError::InvalidUrl {
        url: shown.clone(),
        reason: scrub(&e.to_string(), &[url]),
    };
    let info =
        redis::IntoConnectionInfo::into_connection_info(url.expose_secret()).map_err(invalid)?;
    let info =
        destinations
            .redis_connection(info)
            .await
            .map_err(|e| ConnectError::Unreachable {
                url: shown.clone(),
                reason: e.to_string(),
            })?;
    let limits = Limits {
        max_reply_bytes: MAX_COMMAND_REPLY_BYTES,
        timeout: response_timeout,
    };
    crate::remote::redis::connect(&info, limits)
        .await
        .map_err(|e| ConnectError::Unreachable {
            url: shown,
            reason: scrub(&e.to_string(), &[url]),
        })
}

/// The longest pause between two batches while Redis answers slowly.
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// The shortest pause.
const MIN_PAUSE: Duration = Duration::from_millis(1);

/// How long to wait after the `attempt`-th slow PING in a row (0-based) that took `rtt`: as long
/// as Redis made the PING wait, doubling while it stays slow, within 1 ms and 1 s. A one-off late
/// answer (the host scheduling another process, say) costs little; a Redis that stays slow gets
/// more and more room.
pub(crate) fn pause_for(rtt: Duration, attempt: u32) -> Duration {
    rtt.max(MIN_PAUSE)
        .saturating_mul(1u32 << attempt.min(10))
        .min(MAX_PAUSE)
}

/// Watches Redis's own responsiveness between batches: a PING slower than the limit means Redis
/// (or its host) is busy, and the next batch waits until it answers quickly again.
#[derive(Debug)]
pub(crate) struct LatencyGuard {
    limit: Duration,
    pub pauses: u32,
    pub paused: Duration,
    pub max_ping: Duration,
}

impl LatencyGuard {
    /// The limit is `floor` or three times the PING time measured now (median of five), whichever
    /// is larger, so a remote Redis with a slower network is not mistaken for a busy one.
    pub async fn calibrate(
        con: &mut MultiplexedConnection,
        floor: Duration,
    ) -> redis::RedisResult<Self> {
        let mut samples = Vec::with_capacity(5);
        for _ in 0..5 {
            samples.push(ping(con).await?);
        }
        samples.sort();
        Ok(LatencyGuard {
            limit: floor.max(samples[2] * 3),
            pauses: 0,
            paused: Duration::ZERO,
            max_ping: Duration::ZERO,
        })
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// After a round whose PING took `rtt`: while Redis answers slower than the limit and time
    /// remains, wait (see [`pause_for`]) and PING again. The first quick answer ends the pause.
    pub async fn settle(
        &mut self,
        con: &mut MultiplexedConnection,
        rtt: Duration,
        deadline: Instant,
    ) -> redis::RedisResult<()> {
        let mut rtt = rtt;
        let mut attempt = 0;
        loop {
            self.max_ping = self.max_ping.max(rtt);
            let now = Instant::now();
            if rtt <= self.limit || now >= deadline {
                return Ok(());
            }
            let wait = pause_for(rtt, attempt).min(deadline - now);
            tracing::debug!(
                ping_us = rtt.as_micros() as u64,
                limit_us = self.limit.as_micros() as u64,
                pause_ms = wait.as_millis() as u64,
                "Redis answers slowly; pausing before the next batch"
            );
            tokio::time::sleep(wait).await;
            self.pauses += 1;
            self.paused += wait;
            attempt += 1;
            rtt = ping(con).await?;
        }
    }
}

/// Time one PING. Sent ahead of a round's commands on the same connection, it is answered before
/// them, so it measures how long Redis makes any client wait, not the round's own work.
pub(crate) async fn ping(con: &mut MultiplexedConnection) -> redis::RedisResult<Duration> {
    let start = Instant::now();
    let _: String = redis::cmd("PING").query_async(con).await?;
    Ok(start.elapsed())
}

/// A key as text for reports and terminals: control characters and bytes that are not UTF-8
/// escaped, cut at 200 characters (see [`crate::remote::text::key`]).
pub(crate) fn show_key(key: &[u8]) -> String {
    crate::remote::text::key(key)
}

/// Milliseconds as a float with microsecond resolution, for reports.
pub(crate) fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// Keys per second, 0 when nothing was timed.
pub(crate) fn rate(keys: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { keys as f64 / secs } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_follow_the_wait_and_double_while_redis_stays_slow() {
        let ms = Duration::from_millis;
        assert_eq!(pause_for(ms(3), 0), ms(3));
        assert_eq!(pause_for(ms(3), 1), ms(6));
        assert_eq!(pause_for(ms(3), 2), ms(12));
        assert_eq!(pause_for(Duration::from_micros(10), 0), ms(1));
        assert_eq!(pause_for(ms(20), 8), MAX_PAUSE);
        assert_eq!(pause_for(ms(20), 40), MAX_PAUSE);
    }
}
