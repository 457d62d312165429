//! What a drill prints: the timeline of everything it saw (test actions, Events, ConfigMap
//! versions, status phases, what the demo loaded), the ConfigMap history and the timings.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use jiff::Timestamp;

use super::{Drill, FLAGS_CONFIG_MAP};

impl Drill {
    /// Seconds from the timeline's origin (the first fault) to `at`.
    pub fn since_fault(&self, at: Timestamp) -> f64 {
        let origin = self.fault_at.unwrap_or(self.started_at);
        at.duration_since(origin).as_secs_f64()
    }

    fn rel(&self, at: Timestamp) -> String {
        format!("{:+8.2}s", self.since_fault(at))
    }

    /// The timeline of everything that happened, oldest first.
    pub fn timeline(&self) -> String {
        let mut lines: Vec<(Timestamp, String)> = Vec::new();
        for (at, what) in &self.marks {
            lines.push((*at, format!("drill       {what}")));
        }
        let mut previous: Option<BTreeMap<String, String>> = None;
        for (n, v) in self.config_history().iter().enumerate() {
            lines.push((
                v.applied_at,
                format!(
                    "configmap   v{} mounted: {}",
                    n + 1,
                    diff(previous.as_ref(), &v.data)
                ),
            ));
            previous = Some(v.data.clone());
        }
        self.recorded(|r| {
            let mut phase = None;
            for s in &r.statuses {
                if s.status.phase != phase {
                    phase = s.status.phase;
                    lines.push((
                        s.seen_at,
                        format!("status      phase {}", phase.unwrap_or_default()),
                    ));
                }
            }
            let mut previous: Option<&BTreeMap<String, String>> = None;
            for f in &r.flags {
                lines.push((
                    f.loaded_at,
                    format!(
                        "demo        flags v{} loaded: {}",
                        f.version,
                        diff(previous, &f.raw)
                    ),
                ));
                previous = Some(&f.raw);
            }
            for b in &r.breaker {
                lines.push((b.seen_at, format!("demo        breaker {}", b.state)));
            }
        });
        for (at, warmed) in self.warm_calls() {
            lines.push((
                at,
                format!("demo        POST /admin/cache/warm: warmed {warmed}"),
            ));
        }
        for e in self.events() {
            let kind = if e.type_ == "Warning" {
                "Warning"
            } else {
                "Normal "
            };
            let times = if e.count > 1 {
                format!(" (×{})", e.count)
            } else {
                String::new()
            };
            lines.push((
                e.at,
                format!(
                    "event       {kind} {}{times}: {}",
                    e.reason,
                    clip(&e.note, 150)
                ),
            ));
        }
        lines.sort_by_key(|(at, _)| *at);
        let mut out = String::new();
        for (at, line) in lines {
            let _ = writeln!(out, "  {} {line}", self.rel(at));
        }
        out
    }

    /// Everything the drill saw, for people: the timeline, the ConfigMap history and the
    /// timings.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n=== drill {} — timeline (seconds from the fault) ===",
            self.name
        );
        out.push_str(&self.timeline());
        let _ = writeln!(out, "\n=== ConfigMap {FLAGS_CONFIG_MAP} history ===");
        for (n, v) in self.config_history().iter().enumerate() {
            let _ = writeln!(
                out,
                "  v{} at {}: {}",
                n + 1,
                self.rel(v.applied_at),
                summarize(&v.data)
            );
        }
        if !self.measures.is_empty() {
            let _ = writeln!(out, "\n=== timings ===");
            for m in &self.measures {
                let _ = writeln!(out, "  {:<22} {:>7.2}s  {}", m.label, m.seconds, m.detail);
            }
        }
        if self.load_totals.chunks > 0 {
            let _ = writeln!(out, "  load: {}", self.load_totals);
        }
        for (title, text) in &self.attachments {
            let _ = writeln!(out, "\n=== {title} ===");
            for line in text.lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
        out
    }
}

/// The keys that matter in a config, on one line.
pub fn summarize(data: &BTreeMap<String, String>) -> String {
    [
        "CANARY_SAMPLE_RATE",
        "FAST_PATH_ENABLED",
        "MEM0_READS_ENABLED",
        "MEM0_SHADOW_MODE",
        "CACHE_TTL",
        "CACHE_SERVE_STALE",
        "CACHE_STALE_TTL",
    ]
    .iter()
    .map(|k| format!("{k}={}", data.get(*k).map_or("-", String::as_str)))
    .collect::<Vec<_>>()
    .join(" ")
}

/// What changed from `before` to `after`.
fn diff(before: Option<&BTreeMap<String, String>>, after: &BTreeMap<String, String>) -> String {
    let Some(before) = before else {
        return format!("baseline, {}", summarize(after));
    };
    let mut changes = Vec::new();
    for (k, v) in after {
        match before.get(k) {
            Some(old) if old == v => {}
            Some(old) => changes.push(format!("{k} {old}→{v}")),
            None => changes.push(format!("{k} +{v}")),
        }
    }
    for k in before.keys().filter(|k| !after.contains_key(*k)) {
        changes.push(format!("{k} removed"));
    }
    if changes.is_empty() {
        "no change".into()
    } else {
        changes.join(", ")
    }
}

/// One line of at most `max` characters.
fn clip(text: &str, max: usize) -> String {
    let text = text.split('\n').collect::<Vec<_>>().join(" / ");
    if text.chars().count() <= max {
        return text;
    }
    let cut: String = text.chars().take(max).collect();
    format!("{cut}…")
}
