//! Tiers that read the same Prometheus with the built-in queries, read together.
//!
//! With one set of queries per tier, 10,000 tiers on a 30 s interval send Prometheus about 3,000
//! queries a second. Tiers of one namespace that read one Prometheus with the same credentials,
//! the built-in queries, the same rate window, breaker and cohort label, and a selector of plain
//! `label="value"` matchers form a group: one query per signal (and cohort) for the whole group,
//! kept grouped by the selector's labels (`sum by (app) (...)`), its answer split back per tier
//! by their values. The cache per clinic (`spec.stampede.clinics`) is two more group queries,
//! kept apart by the selector's labels and the clinic label; a group whose clinics do not fit its
//! answer bound leaves them to each member's own two queries. A tier with overrides or any other
//! selector reads its own queries.
//!
//! A group's answer is shared for half the shortest interval of the tiers reading it: a tier's
//! readings are at most that old. A tier missing from the answer (no series for its selector) is
//! unknown with a reason, as with its own query; a failed group query makes that signal unknown
//! for every member, and Prometheus unhealthy, as a failed query of their own would. Groups never
//! span namespaces: a tenant's selectors cannot slow or break another tenant's reads.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::StreamExt;
use futures::future::{BoxFuture, Shared};

use super::clinics::{self, ClinicsConfig};
use super::prometheus::{
    InstantValue, MAX_ANSWER_BYTES, PrometheusClient, PrometheusError, Sample, source_health,
};
use super::queries::{QuerySet, Scope};
use super::signals::Readings;
use super::{ObserveConfig, PrometheusConfig};
use crate::api::{ClinicBreakdown, ClinicCache, MemoryTierSpec, Signal};

/// Room in a group's answer for each member: one series per query, labels included.
const ANSWER_BYTES_PER_MEMBER: usize = 1024;
/// The largest answer of one group query, however many members.
const MAX_GROUP_ANSWER_BYTES: usize = 64 << 20;
/// The most members of one group; more start a second group.
pub const MAX_GROUP_MEMBERS: usize = 20_000;
/// From this many members on, a group's queries select its labels by presence (`app!=""`) and
/// keep the members' series from the answer, rather than naming every member in a regex: a
/// Prometheus that matches each series against such a regex alternative by alternative
/// (Debian 12's 2.42 does) spent more than a core on a group of 10,000. The answer keeps the
/// named form's bound; should it not fit (the label has many more values than the group has
/// members) or the query be refused, the round is sent again naming the members, as every round
/// after. A timeout does not: naming the members would only make each query slower.
const WIDE_GROUP_MEMBERS: usize = 256;
/// Room in a group's per-clinic answers for each member: a few dozen clinics. A group whose
/// clinics do not fit leaves them to each member's own queries, bounded as before.
const CLINIC_BYTES_PER_MEMBER: usize = 8 * 1024;
/// How many of a round's signal queries are in flight at once (the two per-clinic queries run
/// beside them).
const GROUP_QUERIES_AT_ONCE: usize = 6;
/// Labels the built-in queries use themselves: a selector on them is not a member's identity.
const RESERVED_LABELS: &[&str] = &["le", "status", "outcome", "breaker", "__name__"];

/// Every group of the controller.
#[derive(Default)]
pub struct Fleet {
    groups: Mutex<Vec<Weak<Group>>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").finish_non_exhaustive()
    }
}

/// What tiers must share to be read together.
#[derive(Clone, Debug, PartialEq)]
struct GroupKey {
    namespace: String,
    prometheus: PrometheusConfig,
    timeout: Duration,
    rate_window: Duration,
    breaker: String,
    cohorts: crate::api::CohortLabel,
    /// The selector's label names, sorted.
    labels: Vec<String>,
    /// The clinic label, when the members' cache is read per clinic with the group's queries.
    clinics: Option<String>,
}

/// A group of tiers read together.
struct Group {
    key: GroupKey,
    client: PrometheusClient,
    /// A member's spec: the queries are built from it (every member's would give the same).
    spec: MemoryTierSpec,
    /// Members by their label values (in `key.labels` order), with how many tiers have them.
    members: Mutex<BTreeMap<Vec<String>, usize>>,
    state: Mutex<GroupState>,
    /// Set once a query selecting the labels by presence failed: the members are named since.
    named: std::sync::atomic::AtomicBool,
    /// Set once the per-clinic answers did not fit: each member reads its own since.
    clinics_own: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct GroupState {
    answer: Option<Arc<Answer>>,
    inflight: Option<Shared<BoxFuture<'static, Arc<Answer>>>>,
}

/// One query's value per member (by index in the answer's members), or why it failed.
type MemberValues = Result<Vec<Option<f64>>, PrometheusError>;

/// One round of the group's queries.
struct Answer {
    /// When the queries were sent.
    at: Instant,
    /// The members asked for, sorted.
    members: Vec<Vec<String>>,
    /// Each query's value per member (by index in `members`), or why the query failed.
    results: BTreeMap<(Scope, Signal), MemberValues>,
    /// The group's query of each signal, shortened for reasons.
    queries: BTreeMap<(Scope, Signal), String>,
    /// Each member's cache per clinic (by index in `members`), or why it is unknown; none when
    /// the members read their own.
    clinics: Option<Result<Vec<Vec<ClinicCache>>, String>>,
    /// The group's hits-per-clinic query, shortened for reasons.
    clinics_query: String,
}

impl Answer {
    fn empty() -> Self {
        Answer {
            at: Instant::now(),
            members: Vec::new(),
            results: BTreeMap::new(),
            queries: BTreeMap::new(),
            clinics: None,
            clinics_query: String::new(),
        }
    }
}

/// A tier's place in a group; leaving is dropping it.
pub struct FleetMember {
    group: Arc<Group>,
    values: Vec<String>,
    /// The selector, for reasons.
    selector: String,
    /// How old a shared answer may be.
    max_age: Duration,
}

impl std::fmt::Debug for FleetMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetMember")
            .field("selector", &self.selector)
            .finish_non_exhaustive()
    }
}

impl Drop for FleetMember {
    fn drop(&mut self) {
        let mut members = self.group.members.lock().expect("members lock");
        if let Some(count) = members.get_mut(&self.values) {
            *count -= 1;
            if *count == 0 {
                members.remove(&self.values);
            }
        }
    }
}

/// The `label="value"` matchers of a selector, sorted by label, when it has only those (at least
/// one, each label once, none the built-in queries use, values without quotes or backslashes).
pub fn plain_matchers(selector: &str, cohort_label: &str) -> Option<Vec<(String, String)>> {
    let inner = selector
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut rest = inner;
    while !rest.trim().is_empty() {
        let (name, after) = rest.trim_start().split_once('=')?;
        let name = name.trim();
        let valid_name = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name || RESERVED_LABELS.contains(&name) || name == cohort_label {
            return None;
        }
        let after = after.trim_start().strip_prefix('"')?;
        let (value, tail) = after.split_once('"')?;
        if value.contains('\\') {
            return None;
        }
        out.push((name.to_owned(), value.to_owned()));
        let tail = tail.trim_start();
        rest = match tail.strip_prefix(',') {
            Some(more) => more,
            None if tail.is_empty() => "",
            None => return None,
        };
    }
    out.sort();
    let distinct = out.windows(2).all(|w| w[0].0 != w[1].0);
    (!out.is_empty() && distinct).then_some(out)
}

impl Fleet {
    /// The group `config` (of a tier in `namespace` with `spec`) belongs to, joined; none when
    /// the tier must read its own queries.
    pub fn join(
        &self,
        namespace: &str,
        spec: &MemoryTierSpec,
        config: &ObserveConfig,
        http: &reqwest::Client,
    ) -> Option<FleetMember> {
        let prometheus = config.prometheus.clone()?;
        if config.queries.overridden() {
            return None;
        }
        let selector = &spec.metrics.selector;
        let matchers = plain_matchers(selector, &config.cohorts.name)?;
        let key = GroupKey {
            namespace: namespace.to_owned(),
            prometheus,
            timeout: config.timeout,
            rate_window: config.rate_window,
            breaker: config.breaker.clone(),
            cohorts: config.cohorts.clone(),
            labels: matchers.iter().map(|(l, _)| l.clone()).collect(),
            clinics: None,
        };
        // A clinic label that is also a member's identity cannot be kept apart from it.
        let key = GroupKey {
            clinics: config
                .clinics
                .as_ref()
                .map(|c| c.label.clone())
                .filter(|label| !key.labels.contains(label)),
            ..key
        };
        let values: Vec<String> = matchers.into_iter().map(|(_, v)| v).collect();
        let mut groups = self.groups.lock().expect("groups lock");
        groups.retain(|g| g.strong_count() > 0);
        let existing = groups.iter().filter_map(Weak::upgrade).find(|g| {
            g.key == key && g.members.lock().expect("members lock").len() < MAX_GROUP_MEMBERS
        });
        let group = match existing {
            Some(group) => group,
            None => {
                let client = PrometheusClient::new(
                    http.clone(),
                    &key.prometheus.url,
                    key.prometheus.auth.clone(),
                    key.timeout,
                )
                .ok()?;
                let group = Arc::new(Group {
                    key,
                    client,
                    spec: spec.clone(),
                    members: Mutex::default(),
                    state: Mutex::default(),
                    named: std::sync::atomic::AtomicBool::new(false),
                    clinics_own: std::sync::atomic::AtomicBool::new(false),
                });
                groups.push(Arc::downgrade(&group));
                group
            }
        };
        *group
            .members
            .lock()
            .expect("members lock")
            .entry(values.clone())
            .or_insert(0) += 1;
        Some(FleetMember {
            group,
            values,
            selector: selector.clone(),
            max_age: (spec.metrics.interval.as_std() / 2).max(Duration::from_millis(50)),
        })
    }

    /// How many groups there are (for tests and metrics).
    pub fn groups(&self) -> usize {
        let groups = self.groups.lock().expect("groups lock");
        groups.iter().filter(|g| g.strong_count() > 0).count()
    }
}

impl FleetMember {
    /// A wait for the group's round that will cover this tier, when the freshest answer does not
    /// (it is too old, or was sent before the tier joined); none when it does.
    pub fn round_to_wait_for(&self) -> Option<impl std::future::Future<Output = ()> + '_> {
        let wide = self.group.is_wide();
        let covered = {
            let state = self.group.state.lock().expect("group lock");
            state.answer.as_ref().is_some_and(|a| {
                a.at.elapsed() < self.max_age && (wide || a.index(&self.values).is_some())
            })
        };
        (!covered).then_some(async move {
            self.covering_answer().await;
        })
    }

    /// A fresh answer that covers this tier if one comes: joined after a round was sent, it waits
    /// for one that covers it. The round in flight may have been sent before it joined too, so
    /// at most two more: the one after that is sent once this tier is a member.
    ///
    /// Not in a wide group: there a round costs Prometheus seconds of CPU, and rounds sent for
    /// each wave of newcomers (a first pass over thousands of tiers) would follow one another
    /// without end. A newcomer is read by the next round that falls due; its first reconcile
    /// renders its config with its signals "not read yet", as a direct scrape's first reconcile
    /// does without a previous scrape.
    async fn covering_answer(&self) -> Arc<Answer> {
        let mut answer = self.group.answer(self.max_age, None).await;
        if self.group.is_wide() {
            return answer;
        }
        for _ in 0..2 {
            if answer.index(&self.values).is_some() {
                break;
            }
            answer = self.group.answer(self.max_age, Some(answer.at)).await;
        }
        answer
    }

    /// This tier's readings from the group's answer (fetched if none is fresh enough), and why
    /// Prometheus is unhealthy, if it is: as [`PrometheusClient::read_signals`] gives them; with
    /// its cache per clinic when `clinics` asks for it and the group read it (none: the tier
    /// reads its own with [`clinics::read_prometheus`]).
    pub async fn read(
        &self,
        clinics: Option<&ClinicsConfig>,
    ) -> (
        (Readings, Option<String>),
        Option<Result<ClinicBreakdown, String>>,
    ) {
        let answer = self.covering_answer().await;
        let index = answer.index(&self.values);
        let mut readings = Readings::new();
        let mut failures = Vec::new();
        for (key, result) in &answer.results {
            let reading = match (result, index) {
                (Err(e), _) => {
                    if !e.is_query_error() {
                        failures.push((*key, e.clone()));
                    }
                    Err(format!("prometheus: {e}"))
                }
                (Ok(values), Some(i)) => match values.get(i).copied().flatten() {
                    Some(v) => Ok(v),
                    None => Err(format!(
                        "no data: the query returned no series for {{{}}} ({})",
                        self.selector,
                        answer.queries.get(key).map(String::as_str).unwrap_or("")
                    )),
                },
                (Ok(_), None) => Err(format!(
                    "not read yet: {{{}}} joined the group query after it was sent",
                    self.selector
                )),
            };
            readings.insert(*key, reading);
        }
        let health = source_health(&failures, readings.len());
        let per_clinic = clinics.and_then(|config| {
            let of_members = answer.clinics.as_ref()?;
            Some(match (of_members, index) {
                (Err(e), _) => Err(e.clone()),
                (Ok(all), Some(i)) => match all.get(i) {
                    Some(mine) if !mine.is_empty() => Ok(ClinicBreakdown::busiest(
                        &config.label,
                        mine.iter().cloned(),
                        config.keep,
                    )),
                    _ => Err(clinics::no_series_reason(
                        &config.label,
                        &answer.clinics_query,
                    )),
                },
                (Ok(_), None) => Err(format!(
                    "not read yet: {{{}}} joined the group query after it was sent",
                    self.selector
                )),
            })
        });
        ((readings, health), per_clinic)
    }
}

impl Answer {
    fn index(&self, values: &[String]) -> Option<usize> {
        self.members
            .binary_search_by(|m| m.as_slice().cmp(values))
            .ok()
    }
}

impl Group {
    /// Whether the group is large enough to select its labels by presence.
    fn is_wide(&self) -> bool {
        self.members.lock().expect("members lock").len() >= WIDE_GROUP_MEMBERS
    }

    /// An answer at most `max_age` old (and newer than `after`, if given), shared by every
    /// member that asks meanwhile; a round is one query per signal, run as its own task so a
    /// member that stops waiting (its deadline) does not stop it for the others.
    async fn answer(self: &Arc<Self>, max_age: Duration, after: Option<Instant>) -> Arc<Answer> {
        let pending = {
            let mut state = self.state.lock().expect("group lock");
            if let Some(a) = &state.answer
                && a.at.elapsed() < max_age
                && after.is_none_or(|after| a.at > after)
            {
                return a.clone();
            }
            match &state.inflight {
                Some(round) => round.clone(),
                None => {
                    let group = self.clone();
                    let round = tokio::spawn(async move { group.round().await })
                        .map(|joined| joined.unwrap_or_else(|_| Arc::new(Answer::empty())))
                        .boxed()
                        .shared();
                    state.inflight = Some(round.clone());
                    round
                }
            }
        };
        pending.await
    }

    /// One query per signal for every member.
    async fn round(self: Arc<Self>) -> Arc<Answer> {
        let at = Instant::now();
        let members: Vec<Vec<String>> = self
            .members
            .lock()
            .expect("members lock")
            .keys()
            .cloned()
            .collect();
        use std::sync::atomic::Ordering;
        let wide = members.len() >= WIDE_GROUP_MEMBERS && !self.named.load(Ordering::Relaxed);
        let selector = self
            .key
            .labels
            .iter()
            .enumerate()
            .map(|(i, label)| {
                if wide {
                    return format!("{label}!=\"\"");
                }
                let mut values: Vec<&str> = members.iter().map(|m| m[i].as_str()).collect();
                values.dedup();
                let alternatives: Vec<String> = values.iter().map(|v| regex_literal(v)).collect();
                format!("{label}=~\"{}\"", alternatives.join("|"))
            })
            .collect::<Vec<_>>()
            .join(",");
        let queries = QuerySet::for_fleet(&self.spec, &selector, &self.key.labels);
        // The same bound either way: a label with far more values than the group has members
        // (other applications' series) fails the wide query rather than filling memory.
        let limit = MAX_ANSWER_BYTES
            .saturating_add(members.len().saturating_mul(ANSWER_BYTES_PER_MEMBER))
            .min(MAX_GROUP_ANSWER_BYTES);
        let client = &self.client;
        let clinic_label = self
            .key
            .clinics
            .as_deref()
            .filter(|_| !self.clinics_own.load(Ordering::Relaxed));
        let clinic_queries = clinic_label.map(|label| {
            clinics::per_clinic_queries(
                &super::queries::matchers(&selector, &[]),
                &self.key.labels,
                label,
                &self.spec.metrics.rate_window.to_string(),
            )
        });
        let clinic_limit = MAX_ANSWER_BYTES
            .saturating_add(members.len().saturating_mul(CLINIC_BYTES_PER_MEMBER))
            .min(MAX_GROUP_ANSWER_BYTES);
        let per_clinic = async {
            match (&clinic_queries, clinic_label) {
                (Some([hits, misses]), Some(label)) => {
                    let (hits, misses) = futures::join!(
                        client.query_form(hits, clinic_limit),
                        client.query_form(misses, clinic_limit)
                    );
                    Some(self.split_clinics(&members, label, hits, misses))
                }
                _ => None,
            }
        };
        // A few at a time: each answer holds a series per member until it is split, and a
        // round of two dozen answers for 10,000 members at once would be tens of megabytes.
        let owned: Vec<((Scope, Signal), String)> = queries
            .iter()
            .map(|(key, query)| (key, query.promql.clone()))
            .collect();
        let signals = futures::stream::iter(owned)
            .map(|(key, promql)| {
                let client = client.clone();
                async move { (key, client.query_form(&promql, limit).await) }
            })
            .buffer_unordered(GROUP_QUERIES_AT_ONCE)
            .collect::<Vec<_>>();
        let (answers, per_clinic) = futures::join!(signals, per_clinic);
        let per_clinic = match per_clinic {
            Some(Err(e)) if wide && refuses_the_wide_form(&e) => {
                tracing::debug!(error = %e, "a wide group's per-clinic query was refused: naming the members");
                self.named.store(true, Ordering::Relaxed);
                return Box::pin(self.clone().round()).await;
            }
            Some(Err(PrometheusError::TooLarge(_))) => {
                // More clinics than the group's bound: each member's own queries, bounded each.
                self.clinics_own.store(true, Ordering::Relaxed);
                None
            }
            Some(Err(e)) => Some(Err(format!("prometheus: {e}"))),
            Some(Ok(values)) => Some(Ok(values)),
            None => None,
        };
        let mut results = BTreeMap::new();
        let mut shown = BTreeMap::new();
        for (key, answer) in answers {
            let values = answer.and_then(|value| match value {
                InstantValue::Vector(samples) => {
                    let mut values = vec![None; members.len()];
                    for sample in samples {
                        if let Some(i) = self.member_of(&sample, &members) {
                            values[i] = Some(sample.value);
                        }
                    }
                    Ok(values)
                }
                InstantValue::Scalar(_) => Err(PrometheusError::UnexpectedResult(
                    "a group query returned a scalar".to_owned(),
                )),
            });
            if wide && values.as_ref().is_err_and(refuses_the_wide_form) {
                // Named from now on, beginning with this round.
                self.named.store(true, Ordering::Relaxed);
                return Box::pin(self.clone().round()).await;
            }
            results.insert(key, values);
            shown.insert(key, short(&queries, key));
        }
        let clinics_query = clinic_queries
            .as_ref()
            .map(|[hits, _]| crate::remote::text::shown(hits, 160))
            .unwrap_or_default();
        let answer = Arc::new(Answer {
            at,
            members,
            results,
            queries: shown,
            clinics: per_clinic,
            clinics_query,
        });
        let mut state = self.state.lock().expect("group lock");
        state.answer = Some(answer.clone());
        state.inflight = None;
        answer
    }
}

impl Group {
    /// The index in `members` (sorted) of the member a series belongs to, by the group's labels;
    /// none for a series without them, or with a combination no member has (two labels' values
    /// crossed).
    fn member_of(&self, sample: &Sample, members: &[Vec<String>]) -> Option<usize> {
        let of = self
            .key
            .labels
            .iter()
            .map(|l| sample.label(l).map(str::to_owned))
            .collect::<Option<Vec<String>>>()?;
        members.binary_search(&of).ok()
    }

    /// The two per-clinic answers split by member: each member's clinics with their hits and
    /// misses (a clinic in only one answer has none of the other).
    fn split_clinics(
        &self,
        members: &[Vec<String>],
        label: &str,
        hits: Result<InstantValue, PrometheusError>,
        misses: Result<InstantValue, PrometheusError>,
    ) -> Result<Vec<Vec<ClinicCache>>, PrometheusError> {
        let mut of_members: Vec<BTreeMap<String, ClinicCache>> =
            vec![BTreeMap::new(); members.len()];
        for (answer, is_hits) in [(hits?, true), (misses?, false)] {
            let InstantValue::Vector(samples) = answer else {
                return Err(PrometheusError::UnexpectedResult(
                    "a group's per-clinic query returned a scalar".to_owned(),
                ));
            };
            for sample in samples {
                let Some(clinic) = sample.label(label) else {
                    continue;
                };
                let Some(i) = self.member_of(&sample, members) else {
                    continue;
                };
                let entry = of_members[i]
                    .entry(clinic.to_owned())
                    .or_insert_with(|| ClinicCache {
                        clinic: clinic.to_owned(),
                        hits: 0.0,
                        misses: 0.0,
                    });
                if is_hits {
                    entry.hits += sample.value;
                } else {
                    entry.misses += sample.value;
                }
            }
        }
        Ok(of_members
            .into_iter()
            .map(|clinics| clinics.into_values().collect())
            .collect())
    }
}

/// Whether a wide query failed for being wide (an answer over the bound: the label has far more
/// values than the group has members; or a query error, as other series under the label can
/// cause), so that naming the members would do better. A timeout or an unreachable Prometheus
/// is no reason: naming the members only makes each query slower.
fn refuses_the_wide_form(error: &PrometheusError) -> bool {
    matches!(error, PrometheusError::TooLarge(_)) || error.is_query_error()
}

/// A group query as a reason quotes it: the metric part, without the members' list.
fn short(queries: &QuerySet, key: (Scope, Signal)) -> String {
    let promql = queries
        .get(key.0, key.1)
        .map(|q| q.promql.as_str())
        .unwrap_or("");
    crate::remote::text::shown(promql, 160)
}

/// `value` as an alternative of a PromQL regex inside a double-quoted string: regex
/// metacharacters escaped (the backslash doubled for the string literal).
fn regex_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push_str("\\\\");
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_matchers_make_a_member() {
        assert_eq!(
            plain_matchers(r#"tier="a", app="b""#, "cohort"),
            Some(vec![
                ("app".into(), "b".into()),
                ("tier".into(), "a".into())
            ])
        );
        assert_eq!(
            plain_matchers(r#"{tier="a,b"}"#, "cohort"),
            Some(vec![("tier".into(), "a,b".into())])
        );
        for exotic in [
            "",
            r#"tier=~"a.*""#,
            r#"tier!="a""#,
            r#"tier="a",tier="b""#,
            r#"le="0.1""#,
            r#"cohort="canary""#,
            r#"tier="a\"b""#,
            r#"tier="a" app="b""#,
            r#"1x="a""#,
        ] {
            assert_eq!(plain_matchers(exotic, "cohort"), None, "{exotic}");
        }
    }

    #[test]
    fn regex_literals_are_escaped_for_a_promql_string() {
        assert_eq!(regex_literal("a.b|c"), r"a\\.b\\|c");
        assert_eq!(regex_literal("tier-0001"), "tier-0001");
    }
}
