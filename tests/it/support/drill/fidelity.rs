//! Replay fidelity: after a drill, its MemoryTier is backtested over the drill's time range from
//! the drill's own Prometheus (the demo's metrics, and Redis through redis_exporter), and the
//! replay must take the live controller's decisions: the same transitions, alerts, incident
//! changes and actions, in the same order, each within one tick plus one scrape interval of the
//! live one.
//!
//! The live decisions are the Events the controller published as `Decide` (each says what was
//! decided and why; notifications and incident records are announced by their incident's
//! change); the replay's are its entries, through the Event that would announce each. Both sides
//! are compared by [`decision_key`]: what was decided, not the figures measured at that moment.

use std::fmt::Write as _;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tierguard::api::Reason;

use tierguard::observe::prometheus::PrometheusClient;
use tierguard::simulate::backtest::{Policy, backtest};
use tierguard::simulate::compare::{announced, decision_key, event_key};
use tierguard::simulate::history::{Limits, Range};

use super::{Drill, EventRecord, SCRAPE_INTERVAL};

/// One decision, live or replayed.
struct Decision {
    key: String,
    /// When it was taken; a repeated Event (a series) was taken again up to `until`.
    at: Timestamp,
    until: Timestamp,
}

/// The decisions an Event of the controller announces: one, or one per repeat of a series.
fn live_decisions(e: &EventRecord) -> Vec<Result<Decision, String>> {
    let Some(reason) = Reason::parse(&e.reason) else {
        return vec![Err(format!("unknown Event reason {}", e.reason))];
    };
    let Some(key) = event_key(reason, &e.note) else {
        return vec![Err(format!(
            "cannot read the decision of Event {}: {}",
            e.reason, e.note
        ))];
    };
    let until = e.last_seen.unwrap_or(e.at);
    (0..e.count.max(1))
        .map(|_| {
            Ok(Decision {
                key: key.clone(),
                at: e.at,
                until,
            })
        })
        .collect()
}

/// Run the replay and compare it with what the controller did. Returns the comparison for the
/// report, or why the replay disagrees.
pub async fn check(d: &Drill, origin: Timestamp) -> Result<String, String> {
    let tick = d.tier.spec.metrics.interval.as_std();
    let tolerance = tick + SCRAPE_INTERVAL;
    let start = d
        .events()
        .into_iter()
        .find(|e| e.action == "Decide")
        .ok_or("the controller decided nothing")?
        .at;
    let start = Timestamp::from_millisecond(start.as_millisecond()).map_err(|e| e.to_string())?;
    // The comparison stops a tolerance before the end, where one side may have decided and the
    // other not yet: the drill runs on a little so that everything it did is compared.
    let margin = tolerance + Duration::from_secs(1);
    tokio::time::sleep(margin).await;
    let end = Timestamp::now();
    // Whatever was scraped before the end is in Prometheus once the next scrapes have come in.
    tokio::time::sleep(SCRAPE_INTERVAL * 3).await;

    let url = d.prometheus.url();
    let timeout = Duration::from_secs(10);
    let client = PrometheusClient::new(
        tierguard::destinations::Network::any()
            .map_err(|e| e.to_string())?
            .metrics,
        &url,
        None,
        timeout,
    )
    .map_err(|e| e.to_string())?;
    let range = Range::new(start, end, tick, 100_000).map_err(|e| e.to_string())?;
    let policy = Policy {
        path: "the drill's MemoryTier".into(),
        tier: d.tier.clone(),
    };
    let report = backtest(&client, &url, vec![policy], range, &Limits::default(), None)
        .await
        .map_err(|e| format!("the replay failed: {e}"))?;
    let run = &report.runs[0];
    let replayed: Vec<Decision> = run
        .outcome
        .entries
        .iter()
        .filter(|e| announced(e).is_some())
        .filter_map(|e| {
            Some(Decision {
                key: decision_key(e)?,
                at: e.at,
                until: e.at,
            })
        })
        .collect();

    // Every decision up to the end takes part in the matching; one without a match counts only
    // before the cut, where its counterpart would have been in range.
    let cut = end - SignedDuration::try_from(margin).expect("a small duration");
    let live: Vec<Decision> = d
        .events()
        .into_iter()
        .filter(|e| e.action == "Decide")
        .flat_map(|e| live_decisions(&e))
        .collect::<Result<Vec<_>, String>>()?
        .into_iter()
        .filter(|x| x.at <= end)
        .collect();

    let tol = tolerance.as_secs_f64();
    let secs = |t: Timestamp| t.duration_since(origin).as_secs_f64();
    let mut used = vec![false; replayed.len()];
    let mut matched: Vec<Option<usize>> = Vec::new();
    for l in &live {
        let found = replayed.iter().enumerate().position(|(i, r)| {
            !used[i]
                && r.key == l.key
                && r.at.duration_since(l.at).as_secs_f64() >= -tol
                && r.at.duration_since(l.until).as_secs_f64() <= tol
        });
        if let Some(i) = found {
            used[i] = true;
        }
        matched.push(found);
    }

    let mut table = format!(
        "replay from {url} over {} steps of {:?}; tolerance {tol:.1}s (one tick plus one scrape)\n       live    replay        Δ  decision\n",
        range.steps, tick
    );
    let mut problems = Vec::new();
    let mut last: Option<usize> = None;
    for (l, m) in live.iter().zip(&matched) {
        match m {
            Some(i) => {
                let r = &replayed[*i];
                let delta = r.at.duration_since(l.at).as_secs_f64();
                let _ = writeln!(
                    table,
                    "  {:>+8.2}s {:>+8.2}s {delta:>+7.2}s  {}",
                    secs(l.at),
                    secs(r.at),
                    l.key
                );
                if last.is_some_and(|p| *i < p) {
                    problems.push(format!(
                        "out of order: {} (replayed before the decision preceding it live)",
                        l.key
                    ));
                }
                last = Some(*i);
            }
            None if l.at > cut => {}
            None => {
                let _ = writeln!(
                    table,
                    "  {:>+8.2}s {:>9}  {:>7}  {}",
                    secs(l.at),
                    "-",
                    "",
                    l.key
                );
                problems.push(format!("live only: {} at {:+.2}s", l.key, secs(l.at)));
            }
        }
    }
    for (r, u) in replayed.iter().zip(&used) {
        if !u && r.at <= cut {
            let _ = writeln!(
                table,
                "  {:>9} {:>+8.2}s  {:>7}  {}",
                "-",
                secs(r.at),
                "",
                r.key
            );
            problems.push(format!("replay only: {} at {:+.2}s", r.key, secs(r.at)));
        }
    }
    if problems.is_empty() {
        Ok(table)
    } else {
        Err(format!(
            "the replay of the drill disagrees with the live controller:\n  {}\n{table}",
            problems.join("\n  ")
        ))
    }
}
