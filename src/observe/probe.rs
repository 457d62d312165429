//! The breaker probe: why is the circuit breaker open? (Incident #1, steps 1 to 3.)
//!
//! Two GETs, one after the other: mem0's health URL, then (when the spec names one) a URL that
//! needs the API key. What they answer is classified as the runbook's decision tree reads it:
//!
//! | health call | authenticated call | class |
//! |---|---|---|
//! | no answer within the timeout, a connection error, 5xx or another non-2xx | — | Down |
//! | 401 / 403 | — | AuthFailure |
//! | 429 | — | RateLimited |
//! | 2xx | 401 / 403 | AuthFailure |
//! | 2xx | 429 | RateLimited |
//! | 2xx | no answer, 5xx, another non-2xx | Down |
//! | 2xx | 2xx, or no authenticated URL | Healthy |
//!
//! A 429's `Retry-After` (seconds or an HTTP date) is kept, bounded by [`MAX_RETRY_AFTER`], so
//! that no probe is made before it. Bodies are never needed: at most [`MAX_BODY_BYTES`] are read
//! and dropped, so the connection can be reused. The key travels only in the Authorization
//! header; errors are scrubbed of it and of the URL's query, and no remote text is quoted.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};

use crate::api::{BreakerProbeSpec, ProbeClass, ProbeReading};
use crate::remote::body::read_prefix;
use crate::secret::{ExposeSecret, SecretString, error_chain, scrub};

/// The longest Retry-After honoured: a peer cannot silence the probe for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// The most of a body read (and dropped).
pub const MAX_BODY_BYTES: usize = 4 * 1024;

/// What a probe needs, with the key resolved.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    pub health_url: String,
    pub auth_url: Option<String>,
    pub api_key: Option<SecretString>,
    pub auth_scheme: String,
    pub interval: Duration,
    pub timeout: Duration,
}

// Compared to tell whether a reconcile's config changed (a rotated key takes effect).
impl PartialEq for ProbeConfig {
    fn eq(&self, other: &Self) -> bool {
        self.health_url == other.health_url
            && self.auth_url == other.auth_url
            && self.api_key.as_ref().map(|k| k.expose_secret())
                == other.api_key.as_ref().map(|k| k.expose_secret())
            && self.auth_scheme == other.auth_scheme
            && self.interval == other.interval
            && self.timeout == other.timeout
    }
}

impl ProbeConfig {
    pub fn new(spec: &BreakerProbeSpec, api_key: Option<SecretString>) -> Self {
        ProbeConfig {
            health_url: spec.health_url.clone(),
            auth_url: spec.auth_url.clone(),
            api_key,
            auth_scheme: spec.auth_scheme.clone(),
            interval: spec.interval.as_std(),
            timeout: spec.timeout.as_std(),
        }
    }
}

/// Why the Authorization header cannot be built from the key.
#[derive(Debug, thiserror::Error)]
#[error(
    "spec.breaker.probe.apiKeySecretRef: the key holds characters an HTTP header cannot carry (a line break inside it?)"
)]
pub struct BadKey;

/// Probes the dependency; one per MemoryTier.
#[derive(Debug)]
pub struct Prober {
    http: reqwest::Client,
    config: ProbeConfig,
    authorization: Option<HeaderValue>,
}

/// One call's answer, as far as the classification needs it.
enum Answer {
    Status(StatusCode, Option<u64>),
    Failed(String),
}

impl Prober {
    pub fn new(http: reqwest::Client, config: ProbeConfig) -> Result<Self, BadKey> {
        let authorization = match &config.api_key {
            None => None,
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!(
                    "{} {}",
                    config.auth_scheme,
                    key.expose_secret()
                ))
                .map_err(|_| BadKey)?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(Prober {
            http,
            config,
            authorization,
        })
    }

    pub fn config(&self) -> &ProbeConfig {
        &self.config
    }

    /// Probe once: the health call, then the authenticated one when the health call passed.
    pub async fn probe(&self) -> ProbeReading {
        let started = Instant::now();
        let at = Timestamp::now();
        let health = self.call(&self.config.health_url).await;
        let (class, detail, retry_after) = match classify_call("health", &health) {
            Some(found) => found,
            None => match &self.config.auth_url {
                None => (
                    ProbeClass::Healthy,
                    format!("health {}", describe(&health)),
                    None,
                ),
                Some(url) => {
                    let auth = self.call(url).await;
                    match classify_call("authenticated call", &auth) {
                        Some((class, detail, retry)) => (
                            class,
                            format!("health {}; {detail}", describe(&health)),
                            retry,
                        ),
                        None => (
                            ProbeClass::Healthy,
                            format!(
                                "health {}; authenticated call {}",
                                describe(&health),
                                describe(&auth)
                            ),
                            None,
                        ),
                    }
                }
            },
        };
        ProbeReading {
            at,
            class,
            detail,
            retry_after_seconds: retry_after,
            latency_ms: Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
        }
    }

    async fn call(&self, url: &str) -> Answer {
        let mut request = self.http.get(url).timeout(self.config.timeout);
        if let Some(value) = &self.authorization {
            request = request.header(AUTHORIZATION, value.clone());
        }
        let timeout = self.config.timeout;
        let attempt = async {
            match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| retry_after_seconds(v, Timestamp::now()));
                    // Drain a little so the connection can be reused; what it says is not used.
                    let _ = read_prefix(response, MAX_BODY_BYTES).await;
                    Answer::Status(status, retry_after)
                }
                Err(e) if e.is_timeout() => Answer::Failed(format!("no answer within {timeout:?}")),
                Err(e) => Answer::Failed(self.scrubbed(e)),
            }
        };
        // The body read is bounded by bytes; this bounds it by time too.
        tokio::time::timeout(timeout + Duration::from_millis(100), attempt)
            .await
            .unwrap_or_else(|_| Answer::Failed(format!("no answer within {timeout:?}")))
    }

    /// A transport error in words, without the URL (its query may carry a token) or the key.
    fn scrubbed(&self, e: reqwest::Error) -> String {
        let text = error_chain(&e.without_url());
        let secrets: Vec<&SecretString> = self.config.api_key.iter().collect();
        crate::remote::text::reason(&scrub(&text, &secrets))
    }
}

/// The class one call's answer decides, if it decides one (a 2xx decides nothing yet).
fn classify_call(what: &str, answer: &Answer) -> Option<(ProbeClass, String, Option<u64>)> {
    match answer {
        Answer::Failed(why) => Some((ProbeClass::Down, format!("{what}: {why}"), None)),
        Answer::Status(s, _) if s.is_success() => None,
        Answer::Status(s, _) if matches!(s.as_u16(), 401 | 403) => Some((
            ProbeClass::AuthFailure,
            format!(
                "{what} answered HTTP {}: the API key is refused",
                s.as_u16()
            ),
            None,
        )),
        Answer::Status(s, retry) if s.as_u16() == 429 => Some((
            ProbeClass::RateLimited,
            match retry {
                Some(r) => format!("{what} answered HTTP 429 (Retry-After {r}s)"),
                None => format!("{what} answered HTTP 429"),
            },
            *retry,
        )),
        Answer::Status(s, _) => Some((
            ProbeClass::Down,
            format!("{what} answered HTTP {}", s.as_u16()),
            None,
        )),
    }
}

fn describe(answer: &Answer) -> String {
    match answer {
        Answer::Status(s, _) => format!("HTTP {}", s.as_u16()),
        Answer::Failed(why) => why.clone(),
    }
}

/// A Retry-After value in seconds from `now`: delta-seconds or an HTTP date, at most
/// [`MAX_RETRY_AFTER`]; `None` when it is neither.
pub fn retry_after_seconds(value: &str, now: Timestamp) -> Option<u64> {
    let value = value.trim();
    let seconds = if let Ok(s) = value.parse::<u64>() {
        s
    } else {
        let date = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
        u64::try_from(date.as_second() - now.as_second()).unwrap_or(0)
    };
    Some(seconds.min(MAX_RETRY_AFTER.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_a_date_and_bounded() {
        let now: Timestamp = "2026-12-02T03:00:00Z".parse().unwrap();
        assert_eq!(retry_after_seconds("30", now), Some(30));
        assert_eq!(retry_after_seconds(" 7 ", now), Some(7));
        assert_eq!(
            retry_after_seconds("Wed, 02 Dec 2026 03:01:30 GMT", now),
            Some(90)
        );
        assert_eq!(
            retry_after_seconds("Wed, 02 Dec 2026 02:00:00 GMT", now),
            Some(0)
        );
        assert_eq!(retry_after_seconds("999999999", now), Some(3600));
        assert_eq!(retry_after_seconds("soon", now), None);
        assert_eq!(retry_after_seconds("-5", now), None);
    }

    #[test]
    fn each_answer_decides_its_class() {
        let s = |c: u16| Answer::Status(StatusCode::from_u16(c).unwrap(), None);
        assert!(classify_call("health", &s(200)).is_none());
        assert!(classify_call("health", &s(204)).is_none());
        assert_eq!(
            classify_call("health", &s(401)).unwrap().0,
            ProbeClass::AuthFailure
        );
        assert_eq!(
            classify_call("health", &s(403)).unwrap().0,
            ProbeClass::AuthFailure
        );
        assert_eq!(
            classify_call("health", &s(503)).unwrap().0,
            ProbeClass::Down
        );
        assert_eq!(
            classify_call("health", &s(404)).unwrap().0,
            ProbeClass::Down
        );
        let limited = Answer::Status(StatusCode::TOO_MANY_REQUESTS, Some(12));
        let (class, detail, retry) = classify_call("health", &limited).unwrap();
        assert_eq!((class, retry), (ProbeClass::RateLimited, Some(12)));
        assert!(detail.contains("Retry-After 12s"), "{detail}");
        assert_eq!(
            classify_call("health", &Answer::Failed("refused".into()))
                .unwrap()
                .0,
            ProbeClass::Down
        );
    }
}
