//! JSON POSTs with a timeout and retries, shared by cache warming and webhooks.
//!
//! A request is retried, with exponential backoff and jitter, when the peer may recover: a 5xx
//! answer, 429 Too Many Requests, a timeout or a connection error. Any other 4xx is final:
//! repeating a rejected request does not make it acceptable. The URL and token are secrets for
//! this module: errors are stripped of the URL and scrubbed of both. A success's body is never
//! read; of an error's body only the first kilobyte is, to quote its start.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::Serialize;

use crate::remote::body::read_prefix;
use crate::remote::text;
use crate::secret::{ExposeSecret, SecretString, error_chain, scrub, url_origin};

/// The most of an error answer's body read, to quote the start of it.
const MAX_ERROR_BODY_BYTES: usize = 1024;

/// Delays between attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Wait before the first retry; it doubles (with jitter) for each further one.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_millis(500),
            max: Duration::from_secs(10),
        }
    }
}

/// How one request went, after every attempt.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub ok: bool,
    /// The HTTP status of the last answer, if there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Attempts made (1 + retries used).
    pub attempts: u32,
    /// How long the last attempt took, milliseconds.
    pub latency_ms: u64,
    /// Why it failed (free of secrets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Delivery {
    /// "200 after 1 attempt", "failed: 503 Service Unavailable after 4 attempts".
    pub fn describe(&self) -> String {
        let attempts = if self.attempts == 1 {
            "1 attempt".to_owned()
        } else {
            format!("{} attempts", self.attempts)
        };
        match (&self.error, self.status) {
            (None, Some(s)) => format!("{s} in {} ms after {attempts}", self.latency_ms),
            (None, None) => format!("ok after {attempts}"),
            (Some(e), _) => format!("failed: {e} after {attempts}"),
        }
    }
}

/// A reqwest client for actuators: rustls (ring), no redirects (a redirect could carry the token
/// elsewhere). Installs the process's crypto provider if nobody has.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    crate::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tierguard/", env!("CARGO_PKG_VERSION")))
        .build()
}

struct AttemptError {
    retryable: bool,
    status: Option<u16>,
    message: String,
    latency: Duration,
}

/// POST `body` as JSON to `url`, with `Authorization: Bearer <token>` when a token is given.
/// Never fails as a whole: the outcome says what happened.
pub async fn post_json<T: Serialize + ?Sized>(
    http: &reqwest::Client,
    url: &SecretString,
    bearer: Option<&SecretString>,
    body: &T,
    timeout: Duration,
    retries: u32,
    backoff: Backoff,
) -> Delivery {
    let secrets: Vec<&SecretString> = std::iter::once(url).chain(bearer).collect();
    // Webhook URLs carry their credential in the path: logs show only where the request went.
    let shown = url_origin(url.expose_secret());
    let auth = match bearer.map(bearer_header).transpose() {
        Ok(a) => a,
        Err(message) => {
            return Delivery {
                ok: false,
                attempts: 0,
                error: Some(message),
                ..Delivery::default()
            };
        }
    };
    let attempts = AtomicU32::new(0);
    let attempt = || async {
        attempts.fetch_add(1, Ordering::Relaxed);
        let mut request = http.post(url.expose_secret()).timeout(timeout).json(body);
        if let Some(value) = &auth {
            request = request.header(AUTHORIZATION, value.clone());
        }
        let start = Instant::now();
        match request.send().await {
            Ok(response) => {
                let latency = start.elapsed();
                let status = response.status();
                if status.is_success() {
                    Ok((status.as_u16(), latency))
                } else {
                    // What the peer says is quoted from the start of its body, never read whole.
                    let said = text::excerpt(&read_prefix(response, MAX_ERROR_BODY_BYTES).await);
                    let message = if said.is_empty() {
                        format!("HTTP {status}")
                    } else {
                        format!("HTTP {status}: {}", scrub(&said, &secrets))
                    };
                    Err(AttemptError {
                        retryable: status.is_server_error() || status.as_u16() == 429,
                        status: Some(status.as_u16()),
                        message: crate::destinations::redirect_not_followed(status)
                            .unwrap_or(message),
                        latency,
                    })
                }
            }
            Err(e) => Err(AttemptError {
                retryable: e.is_timeout() || e.is_connect() || e.is_request(),
                status: None,
                message: scrub(&error_chain(&e.without_url()), &secrets),
                latency: start.elapsed(),
            }),
        }
    };
    let policy = ExponentialBuilder::new()
        .with_min_delay(backoff.first)
        .with_max_delay(backoff.max)
        .with_max_times(retries as usize)
        .with_jitter();
    let result = attempt
        .retry(policy)
        .sleep(tokio::time::sleep)
        .when(|e: &AttemptError| e.retryable)
        .notify(|e: &AttemptError, wait: Duration| {
            tracing::warn!(
                url = %shown,
                error = %e.message,
                retry_in_ms = wait.as_millis() as u64,
                "POST failed; retrying"
            );
        })
        .await;
    let attempts = attempts.load(Ordering::Relaxed);
    match result {
        Ok((status, latency)) => Delivery {
            ok: true,
            status: Some(status),
            attempts,
            latency_ms: latency.as_millis() as u64,
            error: None,
        },
        Err(e) => {
            tracing::warn!(url = %shown, error = %e.message, attempts, "POST failed");
            Delivery {
                ok: false,
                status: e.status,
                attempts,
                latency_ms: e.latency.as_millis() as u64,
                error: Some(e.message),
            }
        }
    }
}

fn bearer_header(token: &SecretString) -> Result<HeaderValue, String> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
        .map_err(|_| "the token contains characters not allowed in an HTTP header".to_owned())?;
    // Keeps the value out of HTTP-level debug logs.
    value.set_sensitive(true);
    Ok(value)
}
