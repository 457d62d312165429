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
pub mod remediate;

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use super::secret::{ExposeSecret, SecretString, redact_url, scrub};

/// Why Redis could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid Redis URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot connect to {url}: {reason}")]
    Unreachable { url: String, reason: String },
}

/// Connect to the Redis at `url`. The connection does not reconnect by itself: a remediation that
/// loses its connection stops and reports, rather than carrying on against a restarted server.
pub async fn connect(
    url: &SecretString,
    response_timeout: Duration,
) -> Result<MultiplexedConnection, ConnectError> {
    let shown = redact_url(url.expose_secret());
    let client =
        redis::Client::open(url.expose_secret()).map_err(|e| ConnectError::InvalidUrl {
            url: shown.clone(),
            reason: scrub(&e.to_string(), &[url]),
        })?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(response_timeout))
        .set_response_timeout(Some(response_timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| ConnectError::Unreachable {
            url: shown,
            reason: scrub(&e.to_string(), &[url]),
        })
}

/// The longest pause between two batches while Redis answers slowly.
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// The first pause; it doubles while Redis stays slow.
const FIRST_PAUSE: Duration = Duration::from_millis(10);

/// Watches Redis's own responsiveness between batches: a PING that takes longer than the limit
/// means Redis (or its host) is busy, and the next batch waits until it answers quickly again.
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

    /// PING; while the answer is slow and time remains, wait with a doubling pause and PING again.
    pub async fn settle(
        &mut self,
        con: &mut MultiplexedConnection,
        deadline: Instant,
    ) -> redis::RedisResult<()> {
        let mut pause = FIRST_PAUSE;
        loop {
            let rtt = ping(con).await?;
            self.max_ping = self.max_ping.max(rtt);
            let now = Instant::now();
            if rtt <= self.limit || now >= deadline {
                return Ok(());
            }
            let wait = pause.min(deadline - now);
            tracing::debug!(
                ping_us = rtt.as_micros() as u64,
                limit_us = self.limit.as_micros() as u64,
                pause_ms = wait.as_millis() as u64,
                "Redis answers slowly; pausing before the next batch"
            );
            tokio::time::sleep(wait).await;
            self.pauses += 1;
            self.paused += wait;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }
}

async fn ping(con: &mut MultiplexedConnection) -> redis::RedisResult<Duration> {
    let start = Instant::now();
    let _: String = redis::cmd("PING").query_async(con).await?;
    Ok(start.elapsed())
}

/// A key as text for reports: lossy UTF-8, cut at 200 characters.
pub(crate) fn show_key(key: &[u8]) -> String {
    let text = String::from_utf8_lossy(key);
    if text.chars().count() > 200 {
        let cut: String = text.chars().take(200).collect();
        format!("{cut}…")
    } else {
        text.into_owned()
    }
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
