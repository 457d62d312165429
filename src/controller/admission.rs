//! Which reconcile runs next when more are due than may run at once.
//!
//! kube-runtime's Controller starts reconciles in the order they fall due; with a large fleet
//! under load, a tier just created, or one in the middle of an incident, would wait behind every
//! healthy tier's periodic tick that fell due before it. Here the Controller hands over a window
//! of due reconciles (256 beyond those running) at once, and each waits for a slot in its class: an
//! incident before a new or changed tier, and that before a periodic tick of a healthy tier; in
//! arrival order within a class. A waiting reconcile holds only the tier's shared handle, so
//! waiting costs little. Only a backlog larger than the window (a controller that cannot keep up
//! with its fleet, or the first pass over thousands of new tiers) is taken in the order it fell
//! due.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::api::{MemoryTier, MemoryTierStatus, Phase};

/// How soon a reconcile must run, most urgent first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Urgency {
    /// An open incident, a mitigation in force, a phase other than Healthy.
    Incident,
    /// A tier never reconciled, or whose spec changed since its last reconcile.
    New,
    /// A healthy tier's periodic tick.
    Periodic,
}

impl Urgency {
    /// How many there are.
    pub const COUNT: usize = 3;

    /// The urgency of reconciling `tier` as the watch cache has it.
    pub fn of(tier: &MemoryTier) -> Urgency {
        Urgency::from_status(
            tier.metadata.generation,
            tier.status.as_ref().map(StatusSummary::of),
        )
    }

    /// The urgency of a tier at `generation` whose status says `status`.
    pub fn from_status(generation: Option<i64>, status: Option<StatusSummary>) -> Urgency {
        match status {
            None
            | Some(StatusSummary {
                phase: None | Some(Phase::Pending),
                ..
            }) => Urgency::New,
            Some(s) if s.in_incident() => Urgency::Incident,
            Some(s) if s.observed_generation != generation => Urgency::New,
            Some(_) => Urgency::Periodic,
        }
    }
}

/// What a status tells of how soon its tier must be reconciled.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StatusSummary {
    pub phase: Option<Phase>,
    pub observed_generation: Option<i64>,
    /// Any mitigation in force.
    pub mitigating: bool,
    /// Any incident not resolved.
    pub incident_open: bool,
}

impl StatusSummary {
    pub fn of(status: &MemoryTierStatus) -> StatusSummary {
        StatusSummary {
            phase: status.phase,
            observed_generation: status.observed_generation,
            mitigating: !status.mitigations.is_empty(),
            incident_open: status.incidents.iter().any(|i| i.resolved_at.is_none()),
        }
    }

    fn in_incident(&self) -> bool {
        matches!(
            self.phase,
            Some(Phase::Degraded | Phase::RollingBack | Phase::RolledBack | Phase::Recovering)
        ) || self.mitigating
            || self.incident_open
    }
}

/// A reconcile's slot, which it can give up while it only waits (a fleet group's round in
/// flight), and take again with the same urgency.
pub struct Held<'a> {
    admission: &'a Admission,
    urgency: Urgency,
    permit: Option<Permit<'a>>,
}

impl Held<'_> {
    /// Run `wait` without the slot, then take a slot again.
    pub async fn without_slot<F: std::future::Future>(&mut self, wait: F) -> F::Output {
        self.permit = None;
        let out = wait.await;
        self.permit = Some(self.admission.admit(self.urgency).await);
        out
    }
}

/// A bounded number of slots, handed out most urgent first.
pub struct Admission {
    state: Mutex<State>,
}

struct State {
    free: usize,
    waiting: [VecDeque<oneshot::Sender<()>>; Urgency::COUNT],
}

impl Admission {
    /// `slots` reconciles at once (at least one).
    pub fn new(slots: u16) -> Self {
        Admission {
            state: Mutex::new(State {
                free: usize::from(slots.max(1)),
                waiting: Default::default(),
            }),
        }
    }

    /// Wait for a slot; it is given back when the permit is dropped.
    pub async fn admit(&self, urgency: Urgency) -> Permit<'_> {
        let granted = {
            let mut state = self.state.lock().expect("admission lock");
            if state.free > 0 {
                state.free -= 1;
                None
            } else {
                let (tx, rx) = oneshot::channel();
                state.waiting[urgency as usize].push_back(tx);
                Some(rx)
            }
        };
        if let Some(rx) = granted {
            let mut waiting = Waiting {
                admission: self,
                rx: Some(rx),
            };
            let rx = waiting.rx.as_mut().expect("set above");
            // The sender is only dropped after a send, or with the Admission itself.
            let _ = rx.await;
            waiting.rx = None;
        }
        Permit(self)
    }

    /// Wait for a slot, held by a reconcile that may give it up while it waits on the network.
    pub async fn hold(&self, urgency: Urgency) -> Held<'_> {
        Held {
            admission: self,
            urgency,
            permit: Some(self.admit(urgency).await),
        }
    }

    /// How many reconciles wait, by urgency (for /metrics and tests).
    pub fn waiting(&self) -> [usize; Urgency::COUNT] {
        let state = self.state.lock().expect("admission lock");
        std::array::from_fn(|i| state.waiting[i].len())
    }

    /// Hand a slot to the most urgent live waiter, or keep it free.
    fn release(&self) {
        let mut state = self.state.lock().expect("admission lock");
        for queue in 0..Urgency::COUNT {
            while let Some(next) = state.waiting[queue].pop_front() {
                if next.send(()).is_ok() {
                    return;
                }
            }
        }
        state.free += 1;
    }
}

/// A slot held by a running reconcile.
pub struct Permit<'a>(&'a Admission);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A reconcile waiting for a slot; if it is dropped (shutdown) after a slot was handed to it,
/// the slot goes to the next.
struct Waiting<'a> {
    admission: &'a Admission,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.admission.release();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn the_most_urgent_waiter_goes_first_and_a_dropped_waiter_passes_its_slot_on() {
        let admission = Arc::new(Admission::new(1));
        let held = admission.admit(Urgency::Periodic).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, urgency) in [
            Urgency::Periodic,
            Urgency::Periodic,
            Urgency::New,
            Urgency::Incident,
        ]
        .into_iter()
        .enumerate()
        {
            let (slots, order) = (admission.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = slots.admit(urgency).await;
                order.lock().unwrap().push(i);
                tokio::task::yield_now().await;
            }));
            // Each is queued before the next arrives.
            while admission.waiting().iter().sum::<usize>() < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        // One waiter gives up: its place is skipped.
        let gone = {
            let admission = admission.clone();
            tokio::spawn(async move {
                let _permit = admission.admit(Urgency::Incident).await;
                unreachable!("aborted before its turn");
            })
        };
        while admission.waiting()[Urgency::Incident as usize] < 2 {
            tokio::task::yield_now().await;
        }
        gone.abort();
        let _ = gone.await;
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![3, 2, 0, 1]);
        // Every slot came back.
        let _one = admission.admit(Urgency::Periodic).await;
        assert_eq!(admission.waiting(), [0, 0, 0]);
    }
}
