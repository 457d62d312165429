//! Reading the application's /metrics endpoint directly, for users without a Prometheus server.
//!
//! The same metrics as the built-in PromQL (see [`super::queries`]) are read from the Prometheus
//! text exposition format. Rates need two readings: each signal covers the time between the
//! previous scrape and this one (one reconcile interval), so the first scrape after start-up
//! gives only the breaker state; the rate-based signals are unknown until the second.
//!
//! Counters are compared series by series: a counter that went down was reset (the application
//! restarted) and counts from zero, as Prometheus's `rate()` does; a series that appears between
//! two scrapes counts from zero too. `spec.metrics.selector` and `queries` are PromQL and do not
//! apply here: the endpoint is one application already.
//!
//! The body is read in chunks and cut into lines as it arrives; only the lines of the metrics
//! tierguard reads (and their `# TYPE` lines) are kept, so an endpoint with hundreds of thousands
//! of other series costs one pass over its bytes and no memory. Everything is bounded: the body
//! ([`MAX_BODY_BYTES`]), a line ([`MAX_LINE_BYTES`]) and the series kept ([`MAX_SERIES`], which is
//! also what a tier remembers between scrapes); past a bound the scrape fails with the reason.
//! The kept lines are parsed on the blocking pool, within the observation's deadline.
//!
//! Parsing uses the `prometheus-parse` crate. Lines it cannot read are skipped; a body whose first
//! sample lines hold none readable, or more unreadable than readable ones, is rejected as not being
//! the exposition format. Label values containing a comma are not supported by that parser.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_parse::{LineInfo, Scrape, Value};
use reqwest::header::ACCEPT;

use super::histogram::{self, Bucket};
use super::queries::Scope;
use super::queries::{
    BREAKER_LABEL, BREAKER_STATE, CACHE_HITS_TOTAL, CACHE_MISSES_TOTAL, MEM0_WRITES_TOTAL,
    OUTCOME_LABEL, REQUEST_DURATION, REQUESTS_TOTAL, STATUS_LABEL,
};
use super::signals::{Reading, Readings};
use crate::api::signals::Cohort;
use crate::api::{CohortLabel, Signal};
use crate::remote::text;
use crate::secret::error_chain;

/// The largest /metrics body read; more is an error rather than unbounded work.
pub const MAX_BODY_BYTES: usize = 16 << 20;
/// The longest line of a body.
pub const MAX_LINE_BYTES: usize = 64 << 10;
/// Most series of the metrics tierguard reads kept from one scrape (the previous scrape a tier
/// remembers is one of these).
pub const MAX_SERIES: usize = 10_000;
/// Most bytes of those series' lines.
const MAX_KEPT_BYTES: usize = 4 << 20;
/// How many of the first sample lines (of any metric) are checked for the format.
const FORMAT_SAMPLE_LINES: usize = 200;
/// A sample line longer than this is not kept for the format check (and counts as unreadable).
const FORMAT_SAMPLE_LINE_BYTES: usize = 4 << 10;

const BUCKET_SERIES: &str = "http_request_duration_seconds_bucket";
const LE: &str = "le";

/// A series: metric name and its labels.
type SeriesKey = (String, Labels);

/// A series' labels, sorted by name, each name once. A tier keeps its previous scrape between
/// reconciles: a sorted vector holds a handful of labels in one allocation where a map takes a
/// node of room for eleven.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| n.as_str().cmp(name))
    }

    pub fn get(&self, name: &str) -> Option<&String> {
        self.position(name).ok().map(|i| &self.0[i].1)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut String> {
        self.position(name).ok().map(|i| &mut self.0[i].1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    fn insert(&mut self, name: String, value: String) {
        match self.position(&name) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (name, value)),
        }
    }
}

impl FromIterator<(String, String)> for Labels {
    /// As a map collects them: a name given twice keeps its last value.
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        let mut labels = Labels::default();
        for (name, value) in pairs {
            labels.insert(name, value);
        }
        labels.0.shrink_to_fit();
        labels
    }
}

/// The values of the metrics tierguard reads, from one scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScrapeSnapshot {
    series: BTreeMap<SeriesKey, f64>,
}

impl ScrapeSnapshot {
    /// Parse an exposition-format body, keeping only the metrics tierguard reads.
    pub fn parse(body: &str) -> Result<Self, String> {
        let mut lines = LineFilter::default();
        lines.feed(body.as_bytes())?;
        Self::from_lines(lines.finish()?)
    }

    /// Parse what a [`LineFilter`] kept. CPU-bound: run it off the async workers for a large body.
    fn from_lines(lines: FilteredLines) -> Result<Self, String> {
        check_format(&lines.samples, lines.sample_lines)?;
        let kept = lines.kept.lines().map(|l| Ok(l.to_owned()));
        let scrape = Scrape::parse(kept).map_err(|e| format!("cannot parse the scrape: {e}"))?;
        let mut series = BTreeMap::new();
        for sample in scrape.samples {
            let labels: Labels = sample
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            match sample.value {
                Value::Histogram(buckets) if sample.metric == REQUEST_DURATION => {
                    for b in buckets {
                        let mut with_le = labels.clone();
                        with_le.insert(LE.to_owned(), format_le(b.less_than));
                        series.insert((BUCKET_SERIES.to_owned(), with_le), b.count);
                    }
                }
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)
                    if is_read(&sample.metric) =>
                {
                    let mut labels = labels;
                    // Buckets without a TYPE line arrive as plain samples: write their bound
                    // the way typed ones are written, so both compare equal.
                    if let Some(le) = labels.get_mut(LE)
                        && let Ok(bound) = le.to_ascii_lowercase().parse::<f64>()
                    {
                        *le = format_le(bound);
                    }
                    series.insert((sample.metric, labels), v);
                }
                _ => {}
            }
        }
        Ok(ScrapeSnapshot { series })
    }

    /// How many series this scrape holds.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    fn values<'a>(&'a self, metric: &'a str) -> impl Iterator<Item = (&'a SeriesKey, f64)> + 'a {
        self.series
            .iter()
            .filter(move |((m, _), _)| m == metric)
            .map(|(k, v)| (k, *v))
    }

    fn has(&self, metric: &str) -> bool {
        self.values(metric).next().is_some()
    }

    /// The series whose `label` is `value`: one cohort's traffic.
    pub fn only(&self, label: &str, value: &str) -> ScrapeSnapshot {
        ScrapeSnapshot {
            series: self
                .series
                .iter()
                .filter(|((_, labels), _)| labels.get(label).map(String::as_str) == Some(value))
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        }
    }

    /// Whether any series carries `label`.
    pub fn has_label(&self, label: &str) -> bool {
        self.series
            .keys()
            .any(|(_, labels)| labels.contains_key(label))
    }
}

/// What a tier keeps of a scrape for the next one's rates: each series' value under a 64-bit
/// hash of its metric name and labels, sorted by it. The next scrape only looks values up by
/// series, so the names and labels need not be kept: a dozen series take 200 bytes here where
/// the parsed scrape takes 4 KiB, and a controller keeps one per tier. (Two series of one
/// scrape sharing a hash, about one chance in 10^11 at the most series a scrape keeps, would
/// make one rate wrong for one tick.)
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Remembered {
    values: Box<[(u64, f64)]>,
}

impl Remembered {
    pub fn of(scrape: &ScrapeSnapshot) -> Self {
        let mut values: Vec<(u64, f64)> = scrape
            .series
            .iter()
            .map(|(key, value)| (series_hash(key), *value))
            .collect();
        values.sort_by_key(|(hash, _)| *hash);
        Remembered {
            values: values.into_boxed_slice(),
        }
    }

    fn get(&self, key: &SeriesKey) -> Option<f64> {
        let hash = series_hash(key);
        self.values
            .binary_search_by_key(&hash, |(h, _)| *h)
            .ok()
            .map(|i| self.values[i].1)
    }
}

fn series_hash(key: &SeriesKey) -> u64 {
    use std::hash::{Hash, Hasher};
    // Fixed keys: the same series hashes the same from one scrape to the next.
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

fn is_read(metric: &str) -> bool {
    [
        REQUESTS_TOTAL,
        CACHE_HITS_TOTAL,
        CACHE_MISSES_TOTAL,
        MEM0_WRITES_TOTAL,
        BREAKER_STATE,
        BUCKET_SERIES,
    ]
    .contains(&metric)
}

fn format_le(le: f64) -> String {
    if le == f64::INFINITY {
        "+Inf".to_owned()
    } else {
        le.to_string()
    }
}

/// The lines of a body worth parsing, cut out as the body arrives: the series of the metrics
/// tierguard reads with their `# TYPE` lines, and the first sample lines of any metric for the
/// format check. Each bound is checked as the bytes come in.
#[derive(Debug, Default)]
pub struct LineFilter {
    partial: Vec<u8>,
    read: usize,
    line_number: usize,
    out: FilteredLines,
}

/// What a [`LineFilter`] kept.
#[derive(Debug, Default)]
pub struct FilteredLines {
    kept: String,
    kept_series: usize,
    /// The first sample lines: line number and text (None: too long to keep).
    samples: Vec<(usize, Option<String>)>,
    /// Sample lines seen in all.
    sample_lines: usize,
}

impl LineFilter {
    /// Take the next bytes of the body.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), String> {
        self.read += chunk.len();
        if self.read > MAX_BODY_BYTES {
            return Err(format!(
                "the endpoint returned more than {MAX_BODY_BYTES} bytes"
            ));
        }
        while let Some(end) = chunk.iter().position(|b| *b == b'\n') {
            if self.partial.is_empty() {
                self.line(&chunk[..end])?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&chunk[..end]);
                self.check_length(line.len())?;
                self.line(&line)?;
                line.clear();
                self.partial = line;
            }
            chunk = &chunk[end + 1..];
        }
        self.check_length(self.partial.len() + chunk.len())?;
        self.partial.extend_from_slice(chunk);
        Ok(())
    }

    /// The body ended.
    pub fn finish(mut self) -> Result<FilteredLines, String> {
        if !self.partial.is_empty() {
            let last = std::mem::take(&mut self.partial);
            self.line(&last)?;
        }
        Ok(self.out)
    }

    fn check_length(&self, len: usize) -> Result<(), String> {
        if len > MAX_LINE_BYTES {
            return Err(format!(
                "line {} is longer than {MAX_LINE_BYTES} bytes",
                self.line_number + 1
            ));
        }
        Ok(())
    }

    fn line(&mut self, raw: &[u8]) -> Result<(), String> {
        self.line_number += 1;
        let line = raw.trim_ascii();
        if line.is_empty() {
            return Ok(());
        }
        if let Some(comment) = line.strip_prefix(b"#") {
            // `# TYPE name type` and `# HELP name text`: kept for the metrics read.
            let mut words = comment
                .split(|b| b.is_ascii_whitespace())
                .filter(|w| !w.is_empty());
            if matches!(words.next(), Some(b"TYPE")) && words.next().is_some_and(is_described) {
                self.keep(line)?;
            }
            return Ok(());
        }
        let out = &mut self.out;
        out.sample_lines += 1;
        if out.samples.len() < FORMAT_SAMPLE_LINES {
            let text = (line.len() <= FORMAT_SAMPLE_LINE_BYTES)
                .then(|| String::from_utf8_lossy(line).into_owned());
            out.samples.push((self.line_number, text));
        }
        let name_end = line
            .iter()
            .position(|b| matches!(b, b'{' | b' ' | b'\t'))
            .unwrap_or(line.len());
        if is_read_bytes(&line[..name_end]) {
            out.kept_series += 1;
            if out.kept_series > MAX_SERIES {
                return Err(format!(
                    "more than {MAX_SERIES} series of the metrics tierguard reads"
                ));
            }
            self.keep(line)?;
        }
        Ok(())
    }

    fn keep(&mut self, line: &[u8]) -> Result<(), String> {
        let kept = &mut self.out.kept;
        if kept.len() + line.len() + 1 > MAX_KEPT_BYTES {
            return Err(format!(
                "the series of the metrics tierguard reads take more than {MAX_KEPT_BYTES} bytes"
            ));
        }
        kept.push_str(&String::from_utf8_lossy(line));
        kept.push('\n');
        Ok(())
    }
}

fn is_read_bytes(name: &[u8]) -> bool {
    std::str::from_utf8(name).is_ok_and(is_read)
}

/// A metric whose `# TYPE` line matters: one that is read, or the histogram of the buckets.
fn is_described(name: &[u8]) -> bool {
    name == REQUEST_DURATION.as_bytes() || is_read_bytes(name)
}

/// Reject bodies that are not the exposition format at all (an HTML error page, JSON, ...),
/// judged on their first sample lines.
fn check_format(samples: &[(usize, Option<String>)], sample_lines: usize) -> Result<(), String> {
    let mut readable = 0usize;
    let mut unreadable = 0usize;
    let mut first_bad: Option<(usize, String)> = None;
    for (number, line) in samples {
        let ok = line
            .as_deref()
            .is_some_and(|line| match LineInfo::parse(line) {
                LineInfo::Sample { value, .. } => value.to_ascii_lowercase().parse::<f64>().is_ok(),
                _ => false,
            });
        if ok {
            readable += 1;
        } else {
            unreadable += 1;
            first_bad.get_or_insert_with(|| {
                (
                    *number,
                    line.clone()
                        .unwrap_or_else(|| "(a very long line)".to_owned()),
                )
            });
        }
    }
    if readable > 0 && unreadable <= readable {
        return Ok(());
    }
    let checked = if sample_lines > samples.len() {
        format!(" (of the first {} lines)", samples.len())
    } else {
        String::new()
    };
    Err(match first_bad {
        Some((n, line)) => format!(
            "not the Prometheus text format: {unreadable} unreadable line(s), {readable} sample(s){checked}; line {n}: {:?}",
            text::shown(&line, 60)
        ),
        None => "the endpoint returned no samples".to_owned(),
    })
}

/// The increase of every series of `metric` accepted by `keep`, summed, from `prev` to `cur`.
fn increase(
    prev: &Remembered,
    cur: &ScrapeSnapshot,
    metric: &str,
    keep: impl Fn(&Labels) -> bool,
) -> f64 {
    cur.values(metric)
        .filter(|((_, labels), _)| keep(labels))
        .map(|(key, now)| match prev.get(key) {
            Some(before) if now >= before => now - before,
            // Reset (the counter went down) or a new series: it counted from zero.
            _ => now,
        })
        .sum()
}

/// The increase of `metric` per value of `label` from `prev` to `cur` (series without the label
/// are left out; several series of one value, e.g. per cohort, are summed), scaled by `scale`.
pub fn increase_by_label(
    prev: &Remembered,
    cur: &ScrapeSnapshot,
    metric: &str,
    label: &str,
    scale: f64,
) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for (key, now) in cur.values(metric) {
        let Some(value) = key.1.get(label) else {
            continue;
        };
        let delta = match prev.get(key) {
            Some(before) if now >= before => now - before,
            _ => now,
        };
        *out.entry(value.clone()).or_insert(0.0) += delta * scale;
    }
    out
}

/// The per-clinic cache readings two consecutive scrapes give, over the rate window.
pub fn derive_clinics(
    prev: Option<&Remembered>,
    cur: &ScrapeSnapshot,
    label: &str,
    keep: u32,
    window_scale: f64,
) -> Result<crate::api::ClinicBreakdown, String> {
    let Some(prev) = prev else {
        return Err("need two scrapes: per-clinic rates come from consecutive scrapes".to_owned());
    };
    if !cur.has_label(label) {
        return Err(format!(
            "no {CACHE_HITS_TOTAL} / {CACHE_MISSES_TOTAL} series carry the label {label}"
        ));
    }
    let hits = increase_by_label(prev, cur, CACHE_HITS_TOTAL, label, window_scale);
    let misses = increase_by_label(prev, cur, CACHE_MISSES_TOTAL, label, window_scale);
    Ok(super::clinics::merge(label, hits, misses, keep))
}

fn missing(metric: &str) -> String {
    format!("metric {metric} not found in the scrape")
}

fn ratio(part: f64, whole: f64, what: &str) -> Reading {
    if whole <= 0.0 {
        Err(format!("no {what} between the last two scrapes"))
    } else {
        Ok(100.0 * part / whole)
    }
}

/// The signals two consecutive scrapes give, for the whole service and, when the series carry
/// the cohort label, each cohort. `window_scale` is the rate window over the time between the
/// scrapes: the requests counted between them, scaled to a rate window, are the `requests`
/// signal.
pub fn derive_readings(
    prev: Option<&Remembered>,
    cur: &ScrapeSnapshot,
    breaker: &str,
    window_scale: f64,
    cohorts: &CohortLabel,
) -> Readings {
    let mut out: Readings = derive_signals(prev, cur, breaker, window_scale)
        .into_iter()
        .map(|(signal, r)| ((Scope::Service, signal), r))
        .collect();
    if !cur.has_label(&cohorts.name) {
        return out;
    }
    for (cohort, value) in [
        (Cohort::Canary, cohorts.canary.as_str()),
        (Cohort::Stable, cohorts.stable.as_str()),
    ] {
        // The previous scrape is looked up by series: one cohort's are found among all.
        let cur = cur.only(&cohorts.name, value);
        for (signal, reading) in derive_signals(prev, &cur, breaker, window_scale) {
            if signal.per_cohort() {
                out.insert((Scope::Cohort(cohort), signal), reading);
            }
        }
    }
    out
}

/// The signals two consecutive scrapes give (`prev` is `None` on the first scrape).
pub fn derive_signals(
    prev: Option<&Remembered>,
    cur: &ScrapeSnapshot,
    breaker: &str,
    window_scale: f64,
) -> BTreeMap<Signal, Reading> {
    let mut out = BTreeMap::new();
    out.insert(Signal::BreakerState, breaker_state(cur, breaker));
    let Some(prev) = prev else {
        for signal in Signal::app() {
            out.entry(signal).or_insert_with(|| {
                Err(
                    "need two scrapes: rates come from the difference between consecutive scrapes"
                        .to_owned(),
                )
            });
        }
        return out;
    };

    // Latency quantiles from the bucket increases, summed by bound.
    let latency: Result<Vec<Bucket>, String> = if cur.has(BUCKET_SERIES) {
        let mut by_le: BTreeMap<String, f64> = BTreeMap::new();
        for ((_, labels), _) in cur.values(BUCKET_SERIES) {
            let le = labels.get(LE).cloned().unwrap_or_default();
            by_le.entry(le).or_insert(0.0);
        }
        for le in by_le.clone().keys() {
            let d = increase(prev, cur, BUCKET_SERIES, |l| l.get(LE) == Some(le));
            by_le.insert(le.clone(), d);
        }
        by_le
            .into_iter()
            .map(|(le, count)| {
                le.to_ascii_lowercase()
                    .parse::<f64>()
                    .map(|le| Bucket { le, count })
                    .map_err(|_| format!("bucket bound le={le:?} is not a number"))
            })
            .collect()
    } else {
        Err(missing(&format!("{REQUEST_DURATION} (histogram)")))
    };
    for signal in [
        Signal::P50LatencyMs,
        Signal::P95LatencyMs,
        Signal::P99LatencyMs,
    ] {
        let q = super::queries::quantile(signal).unwrap_or(0.5);
        let reading = latency
            .clone()
            .and_then(|b| histogram::quantile(q, &b))
            .map(|seconds| seconds * 1000.0);
        out.insert(signal, reading);
    }

    out.insert(
        Signal::Requests,
        if cur.has(REQUESTS_TOTAL) {
            Ok(increase(prev, cur, REQUESTS_TOTAL, |_| true) * window_scale)
        } else {
            Err(missing(REQUESTS_TOTAL))
        },
    );

    out.insert(
        Signal::ErrorRatePercent,
        if cur.has(REQUESTS_TOTAL) {
            let all = increase(prev, cur, REQUESTS_TOTAL, |_| true);
            let errors = increase(prev, cur, REQUESTS_TOTAL, |l| {
                l.get(STATUS_LABEL).is_some_and(|s| s.starts_with('5'))
            });
            ratio(errors, all, "requests")
        } else {
            Err(missing(REQUESTS_TOTAL))
        },
    );

    out.insert(
        Signal::CacheHitRatePercent,
        if cur.has(CACHE_HITS_TOTAL) || cur.has(CACHE_MISSES_TOTAL) {
            let hits = increase(prev, cur, CACHE_HITS_TOTAL, |_| true);
            let misses = increase(prev, cur, CACHE_MISSES_TOTAL, |_| true);
            ratio(hits, hits + misses, "cache lookups")
        } else {
            Err(missing(&format!(
                "{CACHE_HITS_TOTAL} / {CACHE_MISSES_TOTAL}"
            )))
        },
    );

    out.insert(
        Signal::Mem0WriteSuccessPercent,
        if cur.has(MEM0_WRITES_TOTAL) {
            let all = increase(prev, cur, MEM0_WRITES_TOTAL, |_| true);
            let ok = increase(prev, cur, MEM0_WRITES_TOTAL, |l| {
                l.get(OUTCOME_LABEL).map(String::as_str) == Some("success")
            });
            ratio(ok, all, "mem0 writes")
        } else {
            Err(missing(MEM0_WRITES_TOTAL))
        },
    );
    out
}

/// Any replica open wins; otherwise the highest state (half-open over closed).
fn breaker_state(cur: &ScrapeSnapshot, breaker: &str) -> Reading {
    let values: Vec<f64> = cur
        .values(BREAKER_STATE)
        .filter(|((_, labels), _)| labels.get(BREAKER_LABEL).map(String::as_str) == Some(breaker))
        .map(|(_, v)| v)
        .collect();
    if values.is_empty() {
        return Err(missing(&format!(
            "{BREAKER_STATE}{{{BREAKER_LABEL}=\"{breaker}\"}}"
        )));
    }
    if values.contains(&1.0) {
        return Ok(1.0);
    }
    Ok(values.into_iter().fold(f64::NEG_INFINITY, f64::max))
}

/// Scrapes one endpoint and remembers the previous scrape; the controller keeps one per tier.
#[derive(Debug)]
pub struct Scraper {
    http: reqwest::Client,
    url: String,
    timeout: Duration,
    /// The rate window the `requests` signal is counted over.
    window: Duration,
    cohorts: CohortLabel,
    /// The clinic label and how many clinics to keep, when per-clinic readings are wanted.
    clinics: Option<(String, u32)>,
    previous: Option<(Remembered, std::time::Instant)>,
}

/// What one scrape gave: the signals, and the per-clinic readings when asked for.
pub type ScrapeReadings = (
    Readings,
    Option<Result<crate::api::ClinicBreakdown, String>>,
);

impl Scraper {
    pub fn new(
        http: reqwest::Client,
        url: &str,
        timeout: Duration,
        window: Duration,
        cohorts: CohortLabel,
    ) -> Self {
        Scraper {
            http,
            url: url.to_owned(),
            timeout,
            window,
            cohorts,
            clinics: None,
            previous: None,
        }
    }

    /// Also read the cache per clinic, by `label`, keeping the `keep` busiest.
    pub fn with_clinics(mut self, clinics: Option<(String, u32)>) -> Self {
        self.clinics = clinics;
        self
    }

    pub fn clinics(&self) -> Option<&(String, u32)> {
        self.clinics.as_ref()
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Fetch and parse the endpoint once, without touching the remembered scrape.
    pub async fn fetch(&self) -> Result<ScrapeSnapshot, String> {
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                format!("no answer within {:?}", self.timeout)
            } else {
                format!(
                    "cannot reach the endpoint: {}",
                    error_chain(&e.without_url())
                )
            }
        };
        let mut response = self
            .http
            .get(&self.url)
            .header(ACCEPT, "text/plain;version=0.0.4;q=1, */*;q=0.1")
            .timeout(self.timeout)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if let Some(refused) = crate::destinations::redirect_not_followed(status) {
            return Err(refused);
        }
        if !status.is_success() {
            let body = crate::remote::body::read_prefix(response, 4 << 10).await;
            return Err(format!("HTTP {status}: {:?}", text::excerpt(&body)));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY_BYTES as u64)
        {
            return Err(format!(
                "the endpoint returned more than {MAX_BODY_BYTES} bytes"
            ));
        }
        let mut lines = LineFilter::default();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            lines.feed(&chunk)?;
        }
        let lines = lines.finish()?;
        crate::remote::off_runtime(move || ScrapeSnapshot::from_lines(lines)).await?
    }

    /// Scrape, derive the signals against the previous scrape, and remember this one.
    pub async fn read_signals(&mut self, breaker: &str) -> Result<ScrapeReadings, String> {
        let current = self.fetch().await?;
        let now = std::time::Instant::now();
        let previous = self.previous.as_ref();
        let scale = previous
            .map(|(_, at)| now.duration_since(*at).as_secs_f64())
            .filter(|elapsed| *elapsed > 0.0)
            .map_or(1.0, |elapsed| self.window.as_secs_f64() / elapsed);
        let readings = derive_readings(
            previous.map(|(p, _)| p),
            &current,
            breaker,
            scale,
            &self.cohorts,
        );
        let clinics = self.clinics.as_ref().map(|(label, keep)| {
            derive_clinics(previous.map(|(p, _)| p), &current, label, *keep, scale)
        });
        self.previous = Some((Remembered::of(&current), now));
        Ok((readings, clinics))
    }

    /// Forget the previous scrape (the next one starts over).
    pub fn reset(&mut self) {
        self.previous = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: &str = r#"# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{status="200",route="/a"} 100
http_requests_total{status="503",route="/a"} 0
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.1"} 10
http_request_duration_seconds_bucket{le="0.5"} 10
http_request_duration_seconds_bucket{le="1"} 10
http_request_duration_seconds_bucket{le="+Inf"} 10
http_request_duration_seconds_sum 0.5
http_request_duration_seconds_count 10
# TYPE cache_hits_total counter
cache_hits_total{clinic_id="1"} 50
cache_hits_total{clinic_id="2"} 50
# TYPE cache_misses_total counter
cache_misses_total{clinic_id="1"} 0
# TYPE mem0_writes_total counter
mem0_writes_total{outcome="success"} 10
mem0_writes_total{outcome="failure"} 0
# TYPE circuit_breaker_state gauge
circuit_breaker_state{breaker="mem0"} 0
circuit_breaker_state{breaker="db"} 1
"#;

    fn second() -> String {
        FIRST
            .replace(
                "{status=\"200\",route=\"/a\"} 100",
                "{status=\"200\",route=\"/a\"} 190",
            )
            .replace(
                "{status=\"503\",route=\"/a\"} 0",
                "{status=\"503\",route=\"/a\"} 10",
            )
            .replace("{le=\"0.1\"} 10", "{le=\"0.1\"} 60")
            .replace("{le=\"0.5\"} 10", "{le=\"0.5\"} 100")
            .replace("{le=\"1\"} 10", "{le=\"1\"} 110")
            .replace("{le=\"+Inf\"} 10", "{le=\"+Inf\"} 110")
            .replace(
                "cache_hits_total{clinic_id=\"1\"} 50",
                "cache_hits_total{clinic_id=\"1\"} 110",
            )
            .replace(
                "cache_hits_total{clinic_id=\"2\"} 50",
                "cache_hits_total{clinic_id=\"2\"} 80",
            )
            .replace(
                "cache_misses_total{clinic_id=\"1\"} 0",
                "cache_misses_total{clinic_id=\"1\"} 10",
            )
            .replace("{outcome=\"success\"} 10", "{outcome=\"success\"} 28")
            .replace("{outcome=\"failure\"} 0", "{outcome=\"failure\"} 2")
    }

    #[test]
    fn first_scrape_gives_only_the_breaker() {
        let cur = ScrapeSnapshot::parse(FIRST).unwrap();
        let s = derive_signals(None, &cur, "mem0", 1.0);
        assert_eq!(s[&Signal::BreakerState], Ok(0.0));
        assert_eq!(
            derive_signals(None, &cur, "db", 1.0)[&Signal::BreakerState],
            Ok(1.0)
        );
        for signal in Signal::app().filter(|s| *s != Signal::BreakerState) {
            assert!(
                s[&signal]
                    .as_ref()
                    .unwrap_err()
                    .contains("need two scrapes")
            );
        }
    }

    #[test]
    fn second_scrape_gives_rates_and_quantiles_from_the_increases() {
        let prev = ScrapeSnapshot::parse(FIRST).unwrap();
        let cur = ScrapeSnapshot::parse(&second()).unwrap();
        let s = derive_signals(Some(&Remembered::of(&prev)), &cur, "mem0", 1.0);
        // 10 errors of 100 requests.
        assert_eq!(s[&Signal::ErrorRatePercent], Ok(10.0));
        // 90 hits, 10 misses.
        assert_eq!(s[&Signal::CacheHitRatePercent], Ok(90.0));
        // 18 of 20 writes succeeded.
        assert_eq!(s[&Signal::Mem0WriteSuccessPercent], Ok(90.0));
        // Increases: 50 ≤ 0.1 s, 40 in (0.1, 0.5], 10 in (0.5, 1]. P50 = 0.1 s, P95 = 0.75 s.
        assert!((s[&Signal::P50LatencyMs].clone().unwrap() - 100.0).abs() < 1e-9);
        assert!((s[&Signal::P95LatencyMs].clone().unwrap() - 750.0).abs() < 1e-9);
        assert!((s[&Signal::P99LatencyMs].clone().unwrap() - 950.0).abs() < 1e-9);
    }

    #[test]
    fn a_counter_reset_counts_from_zero() {
        let prev = ScrapeSnapshot::parse(&second()).unwrap();
        // The application restarted: every counter starts over.
        let restarted = FIRST
            .replace(
                "{status=\"200\",route=\"/a\"} 100",
                "{status=\"200\",route=\"/a\"} 3",
            )
            .replace(
                "{status=\"503\",route=\"/a\"} 0",
                "{status=\"503\",route=\"/a\"} 1",
            );
        let cur = ScrapeSnapshot::parse(&restarted).unwrap();
        let s = derive_signals(Some(&Remembered::of(&prev)), &cur, "mem0", 1.0);
        assert_eq!(s[&Signal::ErrorRatePercent], Ok(25.0));
    }

    #[test]
    fn no_traffic_and_missing_metrics_are_unknown_with_reasons() {
        let prev = ScrapeSnapshot::parse(FIRST).unwrap();
        let cur = ScrapeSnapshot::parse(FIRST).unwrap();
        let s = derive_signals(Some(&Remembered::of(&prev)), &cur, "mem0", 1.0);
        assert!(
            s[&Signal::ErrorRatePercent]
                .as_ref()
                .unwrap_err()
                .contains("no requests")
        );
        assert!(
            s[&Signal::P50LatencyMs]
                .as_ref()
                .unwrap_err()
                .contains("no observations")
        );
        let bare = ScrapeSnapshot::parse("up 1\n").unwrap();
        let s = derive_signals(Some(&Remembered::of(&bare)), &bare, "mem0", 1.0);
        assert!(
            s[&Signal::ErrorRatePercent]
                .as_ref()
                .unwrap_err()
                .contains("http_requests_total not found")
        );
        assert!(
            s[&Signal::BreakerState]
                .as_ref()
                .unwrap_err()
                .contains("circuit_breaker_state{breaker=\"mem0\"} not found")
        );
    }

    #[test]
    fn garbage_is_rejected_with_the_offending_line() {
        let e = ScrapeSnapshot::parse("<html>\n<body>oops</body>\n</html>\n").unwrap_err();
        assert!(e.contains("not the Prometheus text format"), "{e}");
        assert!(e.contains("line 1"), "{e}");
        assert!(
            ScrapeSnapshot::parse("")
                .unwrap_err()
                .contains("no samples")
        );
        assert!(ScrapeSnapshot::parse("{\"json\": true}").is_err());
        // One odd line among good ones is skipped, not fatal.
        assert!(ScrapeSnapshot::parse("a 1\nb 2\nfoo:bar 3\n").is_ok());
    }

    #[test]
    fn histograms_without_type_lines_are_read_too() {
        let untyped = "http_request_duration_seconds_bucket{le=\"0.1\"} 1\nhttp_request_duration_seconds_bucket{le=\"+Inf\"} 2\n";
        let prev = ScrapeSnapshot::parse("up 1\n").unwrap();
        let cur = ScrapeSnapshot::parse(untyped).unwrap();
        let s = derive_signals(Some(&Remembered::of(&prev)), &cur, "mem0", 1.0);
        // Rank 1 of 2 is reached at the top of the first bucket.
        assert!((s[&Signal::P50LatencyMs].clone().unwrap() - 100.0).abs() < 1e-9);
    }
}
