//! Long actions (cache warming, Redis remediation and audit, and notifications to webhooks) run
//! here, outside the reconcile, so that one tier's slow warm endpoint, webhooks or large keyspace
//! never hold a reconcile slot that another tier needs.
//!
//! Budgets:
//! - per tier, one job of each kind at a time: a warming decided while the last one still runs is
//!   recorded as skipped, never queued behind it;
//! - per job, a time budget ([`Budget::job_timeout`]): a job still running then is stopped and
//!   recorded as failed;
//! - for the controller, at most [`Budget::jobs`] jobs run at once; the others wait their turn
//!   (their time budget counts from when they start). Notifications have a pool of that size of
//!   their own, so that a page never waits behind a slow warm-up.
//!
//! A job's outcome is kept until the tier's next reconcile folds it into status (the record that
//! said "started" is replaced by how it went), and the finished job asks for that reconcile at
//! once. The job's Event and metric are published when it finishes. Jobs end with the controller:
//! dropping [`Work`] aborts those still running.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::reflector::ObjectRef;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Watched;
use crate::api::{ActionRecord, AuditOutcome, RemediationOutcome};

/// The background budget of the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Most jobs running at once, all tiers together.
    pub jobs: usize,
    /// Longest one job may run.
    pub job_timeout: Duration,
}

/// Default [`Budget::jobs`].
pub const DEFAULT_JOBS: usize = 4;
/// Default [`Budget::job_timeout`].
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Outcomes kept per tier until its next reconcile takes them.
const MAX_FINISHED_PER_TIER: usize = 16;

impl Default for Budget {
    fn default() -> Self {
        Budget {
            jobs: DEFAULT_JOBS,
            job_timeout: DEFAULT_JOB_TIMEOUT,
        }
    }
}

/// The kinds of background job; a tier runs at most one of each at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobKind {
    Warm,
    Remediate,
    Audit,
    /// One notification (by a key of its incident, level and kind): different notifications of
    /// a tier are sent side by side, the same one never twice at once.
    Notify(u64),
}

/// What a finished job hands to the tier's next status.
#[derive(Clone, Debug)]
pub struct Finished {
    /// How it went: it replaces the "started" record with the same action and time.
    pub record: ActionRecord,
    pub remediation: Option<RemediationOutcome>,
    pub audit: Option<AuditOutcome>,
}

/// Whether a job was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    Started,
    /// One of this kind is still running for the tier.
    Busy,
}

#[derive(Default)]
struct TierJobs {
    running: HashSet<JobKind>,
    finished: Vec<Finished>,
}

/// See [`Work::probe`].
#[derive(Clone)]
pub struct JobProbe(Arc<Mutex<HashMap<String, TierJobs>>>);

impl JobProbe {
    pub fn is_running(&self, uid: &str, kind: JobKind) -> bool {
        self.0
            .lock()
            .expect("work lock")
            .get(uid)
            .is_some_and(|jobs| jobs.running.contains(&kind))
    }
}

/// The controller's background jobs.
pub struct Work {
    budget: Budget,
    permits: Arc<Semaphore>,
    notify_permits: Arc<Semaphore>,
    tiers: Arc<Mutex<HashMap<String, TierJobs>>>,
    tasks: Mutex<JoinSet<()>>,
    /// Asks for a reconcile of a tier whose job finished.
    wake: Option<tokio::sync::mpsc::UnboundedSender<ObjectRef<Watched>>>,
}

impl Work {
    pub fn new(
        budget: Budget,
        wake: Option<tokio::sync::mpsc::UnboundedSender<ObjectRef<Watched>>>,
    ) -> Self {
        Work {
            budget,
            permits: Arc::new(Semaphore::new(budget.jobs.max(1))),
            notify_permits: Arc::new(Semaphore::new(budget.jobs.max(1))),
            tiers: Arc::default(),
            tasks: Mutex::new(JoinSet::new()),
            wake,
        }
    }

    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// Start `job` for the tier `uid` (reconciled again through `tier` when it is done), unless
    /// one of its kind still runs for that tier. `timed_out` says what a job stopped at the time
    /// budget did; `done` runs when the job has finished, with its outcome (to publish its Event).
    pub fn start<J, D, DF>(
        &self,
        uid: &str,
        tier: ObjectRef<Watched>,
        kind: JobKind,
        job: J,
        timed_out: impl FnOnce(Duration) -> Finished + Send + 'static,
        done: D,
    ) -> Start
    where
        J: Future<Output = Finished> + Send + 'static,
        D: FnOnce(Finished) -> DF + Send + 'static,
        DF: Future<Output = ()> + Send + 'static,
    {
        {
            let mut tiers = self.tiers.lock().expect("work lock");
            let jobs = tiers.entry(uid.to_owned()).or_default();
            if !jobs.running.insert(kind) {
                return Start::Busy;
            }
        }
        let permits = match kind {
            JobKind::Notify(_) => self.notify_permits.clone(),
            _ => self.permits.clone(),
        };
        let (tiers, wake) = (self.tiers.clone(), self.wake.clone());
        let (uid, budget) = (uid.to_owned(), self.budget.job_timeout);
        let mut tasks = self.tasks.lock().expect("tasks lock");
        // Reap the jobs that ended, so the set holds only running ones.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let finished = match permits.acquire_owned().await {
                Ok(_permit) => match tokio::time::timeout(budget, job).await {
                    Ok(finished) => finished,
                    Err(_) => timed_out(budget),
                },
                Err(_) => timed_out(Duration::ZERO),
            };
            {
                let mut tiers = tiers.lock().expect("work lock");
                let jobs = tiers.entry(uid).or_default();
                jobs.running.remove(&kind);
                jobs.finished.push(finished.clone());
                let excess = jobs.finished.len().saturating_sub(MAX_FINISHED_PER_TIER);
                jobs.finished.drain(..excess);
            }
            done(finished).await;
            if let Some(wake) = wake {
                let _ = wake.send(tier);
            }
        });
        Start::Started
    }

    /// The outcomes of the tier's finished jobs, oldest first; each is handed out once.
    pub fn take_finished(&self, uid: &str) -> Vec<Finished> {
        self.tiers
            .lock()
            .expect("work lock")
            .get_mut(uid)
            .map(|jobs| std::mem::take(&mut jobs.finished))
            .unwrap_or_default()
    }

    /// How many jobs run (or wait for their turn) for the tier.
    pub fn running(&self, uid: &str) -> usize {
        self.tiers
            .lock()
            .expect("work lock")
            .get(uid)
            .map_or(0, |jobs| jobs.running.len())
    }

    /// Whether a job of `kind` runs (or waits for its turn) for the tier, readable from inside
    /// another job: an audit waits for the remediation decided with it.
    pub fn probe(&self) -> JobProbe {
        JobProbe(self.tiers.clone())
    }

    /// How many jobs run (or wait for their turn), all tiers together.
    pub fn running_total(&self) -> usize {
        self.tiers
            .lock()
            .expect("work lock")
            .values()
            .map(|jobs| jobs.running.len())
            .sum()
    }

    /// Forget tiers that no longer exist (their running jobs finish into nothing).
    pub fn retain_tiers(&self, live_uids: &HashSet<String>) {
        self.tiers
            .lock()
            .expect("work lock")
            .retain(|uid, jobs| live_uids.contains(uid) || !jobs.running.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn record(outcome: &str) -> Finished {
        Finished {
            record: ActionRecord {
                at: Timestamp::UNIX_EPOCH,
                action: crate::api::ActionKind::WarmCache,
                reason: "r".into(),
                outcome: crate::api::ActionOutcome::parse(outcome).unwrap(),
                detail: None,
            },
            remediation: None,
            audit: None,
        }
    }

    fn tier() -> ObjectRef<Watched> {
        ObjectRef::new("t").within("ns")
    }

    async fn wait_finished(work: &Work, uid: &str) -> Vec<Finished> {
        for _ in 0..200 {
            let f = work.take_finished(uid);
            if !f.is_empty() {
                return f;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no job finished");
    }

    #[tokio::test]
    async fn one_job_of_a_kind_per_tier_and_a_time_budget() {
        let work = Work::new(
            Budget {
                jobs: 2,
                job_timeout: Duration::from_millis(100),
            },
            None,
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let started = work.start(
            "a",
            tier(),
            JobKind::Warm,
            async move {
                let _ = rx.await;
                record("ok")
            },
            |_| record("failed"),
            |_| async {},
        );
        assert_eq!(started, Start::Started);
        let again = work.start(
            "a",
            tier(),
            JobKind::Warm,
            async { record("ok") },
            |_| record("failed"),
            |_| async {},
        );
        assert_eq!(again, Start::Busy, "one warming per tier at a time");
        assert_eq!(work.running("a"), 1);
        // Another kind, or another tier, is not held up.
        let other = work.start(
            "b",
            tier(),
            JobKind::Warm,
            async { record("ok") },
            |_| record("failed"),
            |_| async {},
        );
        assert_eq!(other, Start::Started);
        assert_eq!(
            wait_finished(&work, "b").await[0].record.outcome,
            crate::api::ActionOutcome::Ok
        );
        // The first never finishes by itself: it is stopped at the budget.
        let finished = wait_finished(&work, "a").await;
        assert_eq!(
            finished[0].record.outcome,
            crate::api::ActionOutcome::Failed
        );
        assert_eq!(work.running("a"), 0);
        drop(tx);
    }

    #[tokio::test]
    async fn at_most_the_global_number_of_jobs_run_at_once() {
        let work = Work::new(
            Budget {
                jobs: 2,
                job_timeout: Duration::from_secs(5),
            },
            None,
        );
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for i in 0..6 {
            let (running, most) = (running.clone(), most.clone());
            work.start(
                &format!("tier-{i}"),
                tier(),
                JobKind::Remediate,
                async move {
                    use std::sync::atomic::Ordering::SeqCst;
                    let now = running.fetch_add(1, SeqCst) + 1;
                    most.fetch_max(now, SeqCst);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    running.fetch_sub(1, SeqCst);
                    record("ok")
                },
                |_| record("failed"),
                |_| async {},
            );
        }
        for i in 0..6 {
            wait_finished(&work, &format!("tier-{i}")).await;
        }
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
