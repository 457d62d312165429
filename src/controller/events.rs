//! Kubernetes Events (`events.k8s.io/v1`) about MemoryTiers.
//!
//! An Event that repeats within [`SERIES_TTL`] is counted in a series on the first one rather
//! than created again, as Kubernetes recorders do. "Repeats" means the same type, reason, action,
//! object *and note*: kube's `Recorder` leaves the note out of that comparison, so a second,
//! different message with the same reason (phase 1 → 2 after none → 1, a second render) would only
//! bump the count of the first and never be shown. Every step the controller explains must be
//! readable, so this publisher keeps the note in the key, like client-go's.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use std::sync::Mutex;

use crate::api::Reason;

/// How long a published Event may still be continued as a series.
const SERIES_TTL: Duration = Duration::from_secs(6 * 60);
/// How often the series that can no longer continue are forgotten (not at every Event: with
/// thousands of tiers, each Event would go over them all).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Longest Event note in bytes: the API server refuses notes over 1 kB.
const MAX_NOTE_BYTES: usize = 1024;
/// Longest Event action in bytes.
const MAX_ACTION_BYTES: usize = 128;

/// What to say about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: Reason,
    /// What was done or failed, at most 128 characters.
    pub action: String,
    /// For people, at most 1 kB.
    pub note: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    warning: bool,
    reason: Reason,
    action: String,
    note: String,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
}

/// Publishes Events as one controller instance.
pub struct EventPublisher {
    client: Client,
    controller: String,
    instance: String,
    /// The last Event of each key: only what continuing its series needs, as a controller with a
    /// thousand tiers keeps a few thousand of these.
    recent: Mutex<Recent>,
}

/// The series that may still continue, and when those that cannot were last forgotten.
#[derive(Default)]
struct Recent {
    /// By a hash of the key: after a fleet's first pass there are two per tier for minutes,
    /// and the key's text (the note above all) would be most of their size. Two keys sharing a
    /// hash (one chance in 10^10 among 20,000 series) would count one Event in the other's series.
    series: HashMap<u64, Published>,
    pruned: Option<Timestamp>,
}

/// An Event already created, as far as its series is concerned.
struct Published {
    name: String,
    count: i32,
    seen: Timestamp,
}

impl EventPublisher {
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        EventPublisher {
            client,
            controller: controller.to_owned(),
            instance: instance.unwrap_or_else(|| controller.to_owned()),
            recent: Mutex::default(),
        }
    }

    /// Publish `note` about `regarding`: a new Event, or the next count of the same one.
    pub async fn publish(
        &self,
        note: &Note,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = Key {
            warning: note.warning,
            reason: note.reason,
            action: note.action.clone(),
            note: note.note.clone(),
            namespace: regarding.namespace.clone(),
            name: regarding.name.clone(),
            uid: regarding.uid.clone(),
        };
        let key = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::hash::DefaultHasher::new();
            key.hash(&mut hasher);
            hasher.finish()
        };
        let ttl = jiff::SignedDuration::try_from(SERIES_TTL).unwrap_or_default();
        // Taken out while its Event is written (the lock is not held across the API call, so
        // Events of different tiers are written side by side); put back once written.
        let previous = {
            let mut recent = self.recent.lock().expect("events lock");
            let every = jiff::SignedDuration::try_from(PRUNE_EVERY).unwrap_or_default();
            if recent.pruned.is_none_or(|at| at + every <= now) {
                recent
                    .series
                    .retain(|_, published| published.seen + ttl > now);
                recent.pruned = Some(now);
            }
            recent
                .series
                .remove(&key)
                .filter(|published| published.seen + ttl > now)
        };
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let published = match previous {
            Some(previous) => {
                // A repeat (count 2 for the first) only moves the series on.
                let count = previous.count.saturating_add(1);
                let series = serde_json::json!({
                    "series": EventSeries {
                        count,
                        last_observed_time: MicroTime(now),
                    }
                });
                api.patch(
                    &previous.name,
                    &PatchParams::default(),
                    &Patch::Merge(&series),
                )
                .await?;
                Published {
                    count,
                    seen: now,
                    ..previous
                }
            }
            None => {
                let event = self.new_event(note, regarding, now);
                let created = api.create(&PostParams::default(), &event).await?;
                Published {
                    name: created.name_any(),
                    count: 1,
                    seen: now,
                }
            }
        };
        self.recent
            .lock()
            .expect("events lock")
            .series
            .insert(key, published);
        Ok(())
    }

    /// Publish an Event about `regarding`, with the note and action cut to what the API server
    /// takes. A failed Event is logged, never fatal: it must not stop a remediation.
    pub async fn announce(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: Reason,
        action: &str,
        note: &str,
    ) {
        let event = Note {
            warning,
            reason,
            note: truncate(note, MAX_NOTE_BYTES),
            action: truncate(action, MAX_ACTION_BYTES),
        };
        if let Err(e) = self.publish(&event, regarding).await {
            tracing::warn!(error = %e, %reason, "could not publish an Event");
        }
    }

    fn new_event(&self, note: &Note, regarding: &ObjectReference, now: Timestamp) -> Event {
        let object = regarding.name.as_deref().unwrap_or(&self.controller);
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{object}.{:x}", now.as_nanosecond())),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(if note.warning { "Warning" } else { "Normal" }.to_owned()),
            reason: Some(note.reason.as_str().to_owned()),
            action: Some(note.action.clone()),
            note: Some(note.note.clone()),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        }
    }
}

/// Cut `text` to at most `max` bytes on a character boundary, marking the cut.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}
