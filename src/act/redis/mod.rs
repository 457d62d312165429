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

/// How many recent PINGs decide whether Redis is slow: all of them must be over the limit, so a
/// single late answer (the host scheduling another process, say) does not stop the work, while a
/// Redis that stays slow does.
const LATENCY_WINDOW: usize = 3;

/// Watches Redis's own responsiveness between batches: while the last PINGs all take longer than
/// the limit, Redis (or its host) is busy, and the next batch waits until it answers quickly again.
#[derive(Debug)]
pub(crate) struct LatencyGuard {
    limit: Duration,
    recent: std::collections::VecDeque<Duration>,
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
            recent: std::collections::VecDeque::with_capacity(LATENCY_WINDOW),
            pauses: 0,
            paused: Duration::ZERO,
            max_ping: Duration::ZERO,
        })
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Record one PING time; true when Redis counts as slow.
    fn observe(&mut self, rtt: Duration) -> bool {
        self.max_ping = self.max_ping.max(rtt);
        if self.recent.len() == LATENCY_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(rtt);
        self.recent.len() == LATENCY_WINDOW && self.recent.iter().all(|r| *r > self.limit)
    }

    /// After a round whose PING took `rtt`: while Redis counts as slow and time remains, wait
    /// with a doubling pause and PING again. The first quick answer ends the pause.
    pub async fn settle(
        &mut self,
        con: &mut MultiplexedConnection,
        rtt: Duration,
        deadline: Instant,
    ) -> redis::RedisResult<()> {
        let mut pause = FIRST_PAUSE;
        let mut rtt = rtt;
        loop {
            let slow = self.observe(rtt);
            let now = Instant::now();
            if !slow || now >= deadline {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> LatencyGuard {
        LatencyGuard {
            limit: Duration::from_millis(2),
            recent: Default::default(),
            pauses: 0,
            paused: Duration::ZERO,
            max_ping: Duration::ZERO,
        }
    }

    #[test]
    fn one_late_ping_is_not_slowness_but_a_run_of_them_is() {
        let (fast, late) = (Duration::from_micros(100), Duration::from_millis(9));
        let mut g = guard();
        assert!(!g.observe(late));
        assert!(!g.observe(fast));
        assert!(!g.observe(late));
        assert!(!g.observe(late));
        assert!(g.observe(late), "three late answers in a row");
        assert!(!g.observe(fast), "one quick answer ends it");
        assert_eq!(g.max_ping, late);
    }
}
