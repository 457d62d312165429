//! A small client of the Prometheus HTTP API (`/api/v1/query`, `/api/v1/query_range`), and the
//! application signals read through it.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use jiff::Timestamp;
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use super::queries::QuerySet;
use super::queries::Scope;
use super::signals::{Reading, Readings};
use crate::api::Signal;
use crate::remote::body::{BodyError, read_limited};
use crate::remote::text;
use crate::secret::{ExposeSecret, SecretString, error_chain};

/// The largest answer to an instant query (one number per signal; a top-N vector of a few
/// thousand series fits too).
pub const MAX_ANSWER_BYTES: usize = 1 << 20;
/// The largest answer to a range query.
pub const MAX_RANGE_ANSWER_BYTES: usize = 16 << 20;
/// Answers above this are parsed on the blocking pool rather than on an async worker.
const PARSE_INLINE_BYTES: usize = 64 << 10;
/// The longest message of Prometheus quoted in an error.
const MAX_MESSAGE_CHARS: usize = 200;

/// How a request to Prometheus authenticates.
#[derive(Clone, Debug)]
pub enum PrometheusAuth {
    Bearer(SecretString),
    Basic {
        user: String,
        password: SecretString,
    },
}

impl PartialEq for PrometheusAuth {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (PrometheusAuth::Bearer(a), PrometheusAuth::Bearer(b)) => {
                a.expose_secret() == b.expose_secret()
            }
            (
                PrometheusAuth::Basic { user, password },
                PrometheusAuth::Basic {
                    user: other_user,
                    password: other_password,
                },
            ) => user == other_user && password.expose_secret() == other_password.expose_secret(),
            _ => false,
        }
    }
}

impl PrometheusAuth {
    /// `user:password` as a basic-auth Secret holds it.
    pub fn basic_from_secret(value: &str) -> Option<Self> {
        let (user, password) = value.split_once(':')?;
        Some(PrometheusAuth::Basic {
            user: user.to_owned(),
            password: SecretString::from(password),
        })
    }
}

/// Why a query gave no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PrometheusError {
    #[error("invalid Prometheus URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach Prometheus: {0}")]
    Transport(String),
    #[error("Prometheus answered {0}")]
    Redirect(String),
    #[error("Prometheus answered HTTP {status}: {message}")]
    Http { status: u16, message: String },
    #[error("query rejected ({error_type}): {message}")]
    Query { error_type: String, message: String },
    #[error("Prometheus answered something that is not its API's JSON: {0}")]
    Decode(String),
    #[error("Prometheus answered more than {0} bytes (does the query return too many series?)")]
    TooLarge(usize),
    #[error("{0}")]
    UnexpectedResult(String),
}

impl PrometheusError {
    /// True when the query was at fault, not the server: the server is healthy, the signal is
    /// unknown.
    pub fn is_query_error(&self) -> bool {
        match self {
            PrometheusError::Query { error_type, .. } => error_type == "bad_data",
            PrometheusError::UnexpectedResult(_) => true,
            _ => false,
        }
    }
}

/// One series of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Its labels, as Prometheus lists them (sorted by name). A list, not a map: a fleet group's
    /// answer has a series per member, and a map's node for two labels takes half a kilobyte.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of the label `name`, if the series has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A series' labels as a list of pairs, in the answer's order.
fn label_pairs<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<(String, String)>, D::Error> {
    struct Pairs;
    impl<'de> serde::de::Visitor<'de> for Pairs {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a mapping of label names to values")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(map.size_hint().unwrap_or(2).min(16));
            while let Some(pair) = map.next_entry::<String, String>()? {
                out.push(pair);
            }
            out.shrink_to_fit();
            Ok(out)
        }
    }
    deserializer.deserialize_map(Pairs)
}

/// The result of an instant query.
#[derive(Debug, Clone, PartialEq)]
pub enum InstantValue {
    Scalar(f64),
    Vector(Vec<Sample>),
}

/// One series of a range query.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(Timestamp, f64)>,
}

#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum ApiData {
    Vector(Vec<VectorItem>),
    Scalar((f64, String)),
    Matrix(Vec<MatrixItem>),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct VectorItem {
    #[serde(default, deserialize_with = "label_pairs")]
    metric: Vec<(String, String)>,
    #[serde(default)]
    value: Option<(f64, String)>,
}

#[derive(Deserialize)]
struct MatrixItem {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

fn parse_value(s: &str) -> Result<f64, PrometheusError> {
    // Prometheus writes NaN, +Inf and -Inf, which Rust's parser accepts too.
    s.parse::<f64>()
        .map_err(|_| PrometheusError::Decode(format!("sample value {s:?} is not a number")))
}

fn timestamp(seconds: f64) -> Result<Timestamp, PrometheusError> {
    Timestamp::from_millisecond((seconds * 1000.0).round() as i64)
        .map_err(|e| PrometheusError::Decode(format!("sample time {seconds}: {e}")))
}

/// A Prometheus server's HTTP API.
#[derive(Clone, Debug)]
pub struct PrometheusClient {
    http: reqwest::Client,
    base: Url,
    auth: Option<PrometheusAuth>,
    timeout: Duration,
}

impl PrometheusClient {
    /// `base_url` is the server's root (a path prefix such as `/prometheus` is kept).
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        auth: Option<PrometheusAuth>,
        timeout: Duration,
    ) -> Result<Self, PrometheusError> {
        let invalid = |reason: String| PrometheusError::InvalidUrl {
            url: base_url.to_owned(),
            reason,
        };
        let mut base = Url::parse(base_url).map_err(|e| invalid(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https".into()));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        base.set_query(None);
        Ok(PrometheusClient {
            http,
            base,
            auth,
            timeout,
        })
    }

    fn endpoint(&self, path: &str, params: &[(&str, &str)]) -> Url {
        let mut url = self
            .base
            .join(path)
            .expect("a relative API path joins any http(s) base URL");
        url.query_pairs_mut().extend_pairs(params);
        url
    }

    async fn get(&self, url: Url, limit: usize) -> Result<ApiData, PrometheusError> {
        self.send(self.http.get(url), limit).await
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        limit: usize,
    ) -> Result<ApiData, PrometheusError> {
        let mut request = request.timeout(self.timeout);
        request = match &self.auth {
            Some(PrometheusAuth::Bearer(token)) => request.bearer_auth(token.expose_secret()),
            Some(PrometheusAuth::Basic { user, password }) => {
                request.basic_auth(user, Some(password.expose_secret()))
            }
            None => request,
        };
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        if let Some(refused) = crate::destinations::redirect_not_followed(status) {
            return Err(PrometheusError::Redirect(refused));
        }
        let body = read_limited(response, limit).await.map_err(|e| match e {
            BodyError::TooLarge { limit, .. } => PrometheusError::TooLarge(limit),
            BodyError::Transport(e) => self.transport(e),
        })?;
        if body.len() > PARSE_INLINE_BYTES {
            crate::remote::off_runtime(move || decode(&body, status))
                .await
                .map_err(PrometheusError::Decode)?
        } else {
            decode(&body, status)
        }
    }

    fn transport(&self, e: reqwest::Error) -> PrometheusError {
        if e.is_timeout() {
            return PrometheusError::Timeout(self.timeout);
        }
        // The URL is left out: it may carry credentials a user put there.
        PrometheusError::Transport(error_chain(&e.without_url()))
    }

    /// Evaluate `promql` at the current time.
    pub async fn query(&self, promql: &str) -> Result<InstantValue, PrometheusError> {
        let url = self.endpoint("api/v1/query", &[("query", promql)]);
        instant(self.get(url, MAX_ANSWER_BYTES).await?)
    }

    /// Evaluate `promql` at the current time, sent as a form (a fleet's query names every
    /// member, too long for a URL), with an answer of at most `limit` bytes.
    pub async fn query_form(
        &self,
        promql: &str,
        limit: usize,
    ) -> Result<InstantValue, PrometheusError> {
        // The form body is the query string a GET would carry, encoded the same way.
        let mut url = self.endpoint("api/v1/query", &[("query", promql)]);
        let body = url.query().unwrap_or_default().to_owned();
        url.set_query(None);
        let request = self
            .http
            .post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body);
        instant(self.send(request, limit).await?)
    }

    /// Evaluate `promql` from `start` to `end` every `step`.
    pub async fn query_range(
        &self,
        promql: &str,
        start: Timestamp,
        end: Timestamp,
        step: Duration,
    ) -> Result<Vec<RangeSeries>, PrometheusError> {
        let secs = |t: Timestamp| format!("{:.3}", t.as_millisecond() as f64 / 1000.0);
        let step = format!("{:.3}", step.as_secs_f64());
        let (start, end) = (secs(start), secs(end));
        let url = self.endpoint(
            "api/v1/query_range",
            &[
                ("query", promql),
                ("start", &start),
                ("end", &end),
                ("step", &step),
            ],
        );
        match self.get(url, MAX_RANGE_ANSWER_BYTES).await? {
            ApiData::Matrix(items) => items
                .into_iter()
                .map(|item| {
                    let points = item
                        .values
                        .iter()
                        .map(|(t, v)| Ok((timestamp(*t)?, parse_value(v)?)))
                        .collect::<Result<Vec<_>, PrometheusError>>()?;
                    Ok(RangeSeries {
                        labels: item.metric,
                        points,
                    })
                })
                .collect(),
            _ => Err(PrometheusError::UnexpectedResult(
                "a range query returned something other than a matrix".to_owned(),
            )),
        }
    }

    /// One signal's value: a scalar, or a vector of exactly one series.
    pub async fn read(&self, promql: &str) -> Result<Reading, PrometheusError> {
        Ok(match self.query(promql).await? {
            InstantValue::Scalar(v) => Ok(v),
            InstantValue::Vector(samples) => {
                one_value(samples.iter().map(|s| s.value), samples.len(), promql)
            }
        })
    }

    /// Every application signal, queried concurrently. The error, if any, says why the source
    /// is unhealthy (the server could not be read); bad queries only make their signal unknown.
    pub async fn read_signals(&self, queries: &QuerySet) -> (Readings, Option<String>) {
        let answers = join_all(
            queries
                .iter()
                .map(|(signal, query)| async move { (signal, self.read(&query.promql).await) }),
        )
        .await;
        let mut readings = BTreeMap::new();
        let mut failures: Vec<((Scope, Signal), PrometheusError)> = Vec::new();
        for (signal, answer) in answers {
            let reading = match answer {
                Ok(reading) => reading,
                Err(e) => {
                    let reason = format!("prometheus: {e}");
                    if !e.is_query_error() {
                        failures.push((signal, e));
                    }
                    Err(reason)
                }
            };
            readings.insert(signal, reading);
        }
        let health = source_health(&failures, readings.len());
        (readings, health)
    }
}

/// Why Prometheus is unhealthy, from the queries that failed at the server (not bad queries) out
/// of `total`: none when none failed.
pub fn source_health(
    failures: &[((Scope, Signal), PrometheusError)],
    total: usize,
) -> Option<String> {
    match failures {
        [] => None,
        [(_, first), rest @ ..] if rest.iter().all(|(_, e)| e == first) => Some(first.to_string()),
        [((scope, signal), first), ..] => Some(format!(
            "{} of {total} queries failed, e.g. {signal} ({scope}): {first}",
            failures.len(),
        )),
    }
}

/// An instant query's answer as a value.
fn instant(data: ApiData) -> Result<InstantValue, PrometheusError> {
    match data {
        ApiData::Scalar((_, v)) => Ok(InstantValue::Scalar(parse_value(&v)?)),
        ApiData::Vector(items) => {
            let mut samples = Vec::with_capacity(items.len());
            for item in items {
                let Some((_, v)) = item.value else {
                    return Err(PrometheusError::UnexpectedResult(
                        "the query returned a native histogram; turn it into a number, e.g. with histogram_quantile".to_owned(),
                    ));
                };
                samples.push(Sample {
                    labels: item.metric,
                    value: parse_value(&v)?,
                });
            }
            Ok(InstantValue::Vector(samples))
        }
        ApiData::Matrix(_) => Err(PrometheusError::UnexpectedResult(
            "the query returned a range vector; an instant value is needed (wrap it in rate(), max_over_time() or similar)".to_owned(),
        )),
        ApiData::String(_) => Err(PrometheusError::UnexpectedResult(
            "the query returned a string; a number is needed".to_owned(),
        )),
    }
}

/// Read an API answer: the data of a success, or why it is not one. Messages quoted from the
/// body are escaped and cut.
fn decode(body: &[u8], status: StatusCode) -> Result<ApiData, PrometheusError> {
    let parsed: Result<ApiResponse, _> = serde_json::from_slice(body);
    match parsed {
        Ok(api) if api.status == "success" => api
            .data
            .ok_or_else(|| PrometheusError::Decode("a success answer without data".to_owned())),
        Ok(api) => Err(PrometheusError::Query {
            error_type: text::shown(
                api.error_type.as_deref().unwrap_or("error"),
                MAX_MESSAGE_CHARS,
            ),
            message: match api.error {
                Some(message) => text::shown(&message, MAX_MESSAGE_CHARS),
                None => format!(
                    "status {} (HTTP {status})",
                    text::shown(&api.status, MAX_MESSAGE_CHARS)
                ),
            },
        }),
        Err(_) if !status.is_success() => Err(PrometheusError::Http {
            status: status.as_u16(),
            message: snippet(body, status),
        }),
        Err(e) => Err(PrometheusError::Decode(format!(
            "{}; the body starts with {:?}",
            text::shown(&e.to_string(), MAX_MESSAGE_CHARS),
            text::excerpt(body)
        ))),
    }
}

/// A signal's reading from the `count` values a query gave at one time: the value when there is
/// exactly one series. The same rule holds for a live query and for each step of a range query.
pub fn one_value(mut values: impl Iterator<Item = f64>, count: usize, promql: &str) -> Reading {
    match (count, values.next()) {
        (1, Some(value)) => Ok(value),
        (0, _) | (_, None) => Err(format!("no data: the query returned no series ({promql})")),
        (many, _) => Err(format!(
            "the query returned {many} series; it must return one (aggregate it, e.g. with sum or max): {promql}"
        )),
    }
}

fn snippet(body: &[u8], status: StatusCode) -> String {
    let text = text::excerpt(body);
    if text.is_empty() {
        status.canonical_reason().unwrap_or("no body").to_owned()
    } else {
        text
    }
}
