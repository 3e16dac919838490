#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
pub use wds_core;
use wds_core::{
    backend::{
        now_ms, Batch, BatchId, Checkpoint, Claim, Lease, LeaseId, LineOutcome, OffsetStore, Push,
        Pushed, Queue, QueueStats, Reject, RejectKind, Settle,
    },
    DeadKind, DeadLetter, DeadReason, Error, JobId, JobMeta, JobReport, JobState, Message,
    MessageId, Result,
};

mod circuits;
mod control;
mod outcomes;
mod workers;

use outcomes::{Outcomes, NOT_KEPT};

/// How many rejects, and how many dead letters, of a job are kept in detail
/// by default (the same for every backend).
pub use wds_core::backend::DEFAULT_DETAIL_LIMIT;

/// Messages per batch made from due retries and replayed dead letters.
const REBATCH_SIZE: usize = 100;

/// An in-memory queue and offset store. Clones share state.
#[derive(Clone, Debug, Default)]
pub struct MemoryBackend {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    claims: HashMap<String, JobId>,
    jobs: HashMap<JobId, Job>,
    /// Claim order, for listing newest first.
    order: Vec<JobId>,
    batches: HashMap<BatchId, Entry>,
    /// Each job's ready batches, in lease order.
    ready: HashMap<JobId, VecDeque<BatchId>>,
    /// The jobs whose ready batches may be leased (some ready, not
    /// paused), in turn: the lease takes one batch of the first and moves
    /// it to the back (fair scheduling).
    ring: VecDeque<JobId>,
    /// Held leases by deadline, to find expired ones quickly.
    leases: BTreeMap<(u64, u64), BatchId>,
    scheduled: BTreeMap<(u64, u64), Message>,
    dead: VecDeque<DeadLetter>,
    next_no: u64,
    ready_messages: u64,
    leased_messages: u64,
    /// Rejected or dead lines kept in detail per job (`None`: the default).
    detail_limit: Option<usize>,
    /// Each endpoint's circuit (see [`wds_core::health`]).
    circuits: HashMap<String, wds_core::backend::CircuitState>,
    /// Each worker's last beat (see [`WorkerRegistry`](wds_core::backend::WorkerRegistry)).
    workers: HashMap<String, wds_core::backend::WorkerSeen>,
    /// How long a silent worker is kept (`None`: the default).
    worker_retention: Option<Duration>,
}

#[derive(Debug)]
struct Entry {
    batch: Batch,
    lease: Option<Held>,
    /// Sticky: once a holder marked the batch as sending, every later lease
    /// of it is `previously_sending`.
    sending: bool,
}

#[derive(Debug)]
struct Held {
    id: LeaseId,
    deadline: u64,
    no: u64,
}

#[derive(Debug)]
struct Job {
    meta: JobMeta,
    checkpoint: Checkpoint,
    enqueued: u64,
    delivered: u64,
    dead: u64,
    /// `dead` by reason, at [`DeadKind::index`].
    dead_by_kind: [u64; 3],
    invalid: u64,
    duplicate: u64,
    finished_ms: Option<u64>,
    outcomes: Outcomes,
    /// The first rejects, up to the detail limit.
    rejects: Vec<Reject>,
    /// Why reading failed, once it did.
    failure: Option<String>,
    /// Lines cancelled (queued when the job was cancelled, or retried or
    /// released after it).
    cancelled: u64,
    /// Whether an operator paused the job.
    paused: bool,
    /// Whether an operator cancelled the job.
    halted: bool,
}

impl Job {
    fn report(&self, id: &JobId) -> JobReport {
        let lines = self.checkpoint.records;
        let state = JobState::of(
            self.failure.is_some(),
            self.checkpoint.done,
            self.accounted(),
            lines,
        )
        .controlled(self.paused, self.halted);
        let mut report = JobReport::new(id.clone(), self.meta.clone(), state);
        report.lines = lines;
        report.enqueued = self.enqueued;
        report.delivered = self.delivered;
        report.dead = self.dead;
        report.permanent = self.dead_by_kind[DeadKind::Permanent.index()];
        report.exhausted = self.dead_by_kind[DeadKind::Exhausted.index()];
        report.in_doubt = self.dead_by_kind[DeadKind::InDoubt.index()];
        report.invalid = self.invalid;
        report.duplicate = self.duplicate;
        report.cancelled = self.cancelled;
        report.finished_ms = self.finished_ms;
        report.failure = self.failure.clone();
        report
    }

    fn accounted(&self) -> u64 {
        self.delivered + self.dead + self.invalid + self.duplicate + self.cancelled
    }

    /// Whether the job is fully read and every line accounted for.
    fn finished(&self) -> bool {
        self.checkpoint.done && self.accounted() == self.checkpoint.records
    }

    /// Stamps the finish time the moment the job becomes done.
    fn note_progress(&mut self) {
        if self.finished() {
            if self.finished_ms.is_none() {
                self.finished_ms = Some(now_ms());
            }
        } else {
            self.finished_ms = None;
        }
    }
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty backend that keeps each job's first `limit` rejects and
    /// first `limit` dead letters in detail (see [Bounded per-job storage](crate#bounded-per-job-storage)).
    pub fn with_detail_limit(limit: usize) -> Self {
        let backend = Self::default();
        backend.lock().detail_limit = Some(limit);
        backend
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied
        // operation visible (each one validates before it mutates), so the
        // state stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn detail_limit(&self) -> usize {
        self.detail_limit.unwrap_or(DEFAULT_DETAIL_LIMIT)
    }

    fn next_no(&mut self) -> u64 {
        self.next_no += 1;
        self.next_no
    }

    fn job_mut(&mut self, job: &JobId) -> Result<&mut Job> {
        self.jobs
            .get_mut(job)
            .ok_or_else(|| Error::UnknownJob { job: job.clone() })
    }

    /// The entry of a lease that is still held, or `LeaseLost`.
    fn held(&mut self, lease: &Lease, now: u64) -> Result<&mut Entry> {
        let lost = || Error::LeaseLost {
            lease: lease.id.clone(),
            batch: lease.batch.id.clone(),
        };
        let entry = self.batches.get_mut(&lease.batch.id).ok_or_else(lost)?;
        match &entry.lease {
            Some(h) if h.id == lease.id && h.deadline > now => Ok(entry),
            _ => Err(lost()),
        }
    }

    fn unlease(&mut self, batch: &BatchId) -> Option<Entry> {
        let entry = self.batches.remove(batch)?;
        if let Some(h) = &entry.lease {
            self.leases.remove(&(h.deadline, h.no));
            self.leased_messages -= entry.batch.messages.len() as u64;
        }
        Some(entry)
    }

    /// Queues a batch of one job's messages (at the front of its job's
    /// batches, and its job first in turn, when `front`); a cancelled
    /// job's batch is counted as cancelled instead.
    fn enqueue(&mut self, batch: Batch, front: bool, sending: bool) {
        let Some(job_id) = batch.messages.first().map(|m| m.id.job.clone()) else {
            return;
        };
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if job.halted {
            job.cancelled += batch.messages.len() as u64;
            job.note_progress();
            return;
        }
        let paused = job.paused;
        self.ready_messages += batch.messages.len() as u64;
        let id = batch.id.clone();
        self.batches.insert(
            id.clone(),
            Entry {
                batch,
                lease: None,
                sending,
            },
        );
        let queue = self.ready.entry(job_id.clone()).or_default();
        if front {
            queue.push_front(id);
        } else {
            queue.push_back(id);
        }
        if !paused {
            if front {
                self.ring.retain(|j| j != &job_id);
                self.ring.push_front(job_id);
            } else if !self.ring.contains(&job_id) {
                self.ring.push_back(job_id);
            }
        }
    }

    /// Queues messages (of any jobs) as new batches of one job each.
    fn enqueue_messages(&mut self, messages: Vec<Message>, kind: &str) {
        let mut by_job: Vec<(JobId, Vec<Message>)> = Vec::new();
        for m in messages {
            match by_job.iter_mut().find(|(j, _)| j == &m.id.job) {
                Some((_, group)) => group.push(m),
                None => by_job.push((m.id.job.clone(), vec![m])),
            }
        }
        for (_, group) in by_job {
            let mut group = group.into_iter().peekable();
            while group.peek().is_some() {
                let chunk: Vec<Message> = group.by_ref().take(REBATCH_SIZE).collect();
                let id = BatchId::new(format!("{kind}/{}", self.next_no()));
                self.enqueue(
                    Batch {
                        id,
                        messages: chunk,
                    },
                    false,
                    false,
                );
            }
        }
    }

    /// Moves the dead letters `chosen` picks back to ready (those of
    /// cancelled jobs stay dead); returns how many.
    fn replay_where(&mut self, chosen: impl Fn(&DeadLetter) -> bool) -> u64 {
        let jobs = &self.jobs;
        let (replayed, kept): (Vec<DeadLetter>, Vec<DeadLetter>) = self
            .dead
            .drain(..)
            .partition(|d| chosen(d) && jobs.get(&d.message.id.job).is_some_and(|j| !j.halted));
        self.dead = kept.into();
        let count = replayed.len() as u64;
        let mut messages = Vec::with_capacity(replayed.len());
        for letter in replayed {
            if let Some(j) = self.jobs.get_mut(&letter.message.id.job) {
                j.dead -= 1;
                j.dead_by_kind[letter.reason.kind.index()] -= 1;
                j.outcomes.clear(letter.message.id.line);
                j.note_progress();
            }
            let mut message = letter.message;
            message.attempts = 0;
            message.first_attempt_ms = None;
            messages.push(message);
        }
        self.enqueue_messages(messages, "replay");
        count
    }

    /// The next ready batch in turn: the first job's oldest, that job then
    /// going to the back of the ring if it has more.
    fn next_ready(&mut self) -> Option<BatchId> {
        let job = self.ring.pop_front()?;
        let queue = self.ready.get_mut(&job)?;
        let id = queue.pop_front();
        if queue.is_empty() {
            self.ready.remove(&job);
        } else {
            self.ring.push_back(job);
        }
        id
    }

    fn take_lease(&mut self, id: &BatchId, ttl: Duration, now: u64) -> Option<Lease> {
        let no = self.next_no();
        let deadline = now + ttl.as_millis() as u64;
        let lease_id = LeaseId::new(format!("{id}#{no}"));
        let entry = self.batches.get_mut(id)?;
        entry.lease = Some(Held {
            id: lease_id.clone(),
            deadline,
            no,
        });
        let lease = Lease {
            id: lease_id,
            batch: entry.batch.clone(),
            deadline_ms: deadline,
            previously_sending: entry.sending,
        };
        self.leased_messages += entry.batch.messages.len() as u64;
        self.leases.insert((deadline, no), id.clone());
        Some(lease)
    }
}

// Queue and offsets are one `Inner` behind one lock: one store.
impl wds_core::backend::Backend for MemoryBackend {}

#[async_trait]
impl Queue for MemoryBackend {
    async fn push(&self, push: &Push) -> Result<Pushed> {
        let mut st = self.lock();
        let seq = push.seq();
        let limit = st.detail_limit();
        let job = st.job_mut(&push.job)?;
        let current = job.checkpoint.seq;
        if seq < current {
            let depth = st.ready_messages;
            return Ok(Pushed {
                applied: false,
                depth,
            });
        }
        if seq > current {
            return Err(Error::Conflict {
                job: push.job.clone(),
                seq,
                current,
            });
        }
        job.enqueued += push.messages.len() as u64;
        for reject in &push.rejects {
            match reject.kind {
                RejectKind::Invalid { .. } => job.invalid += 1,
                RejectKind::Duplicate { .. } => job.duplicate += 1,
            }
            // The job's first `limit` rejects in detail.
            let keep = job.rejects.len() < limit;
            if keep {
                job.rejects.push(reject.clone());
            }
            job.outcomes.set(
                reject.line,
                &LineOutcome::Rejected {
                    kind: reject.kind.clone(),
                },
                keep,
            );
        }
        job.checkpoint = push.next;
        job.note_progress();
        if !push.messages.is_empty() {
            let id = BatchId::new(format!("{}/{}", push.job, seq));
            st.enqueue(
                Batch {
                    id,
                    messages: push.messages.clone(),
                },
                false,
                false,
            );
        }
        Ok(Pushed {
            applied: true,
            depth: st.ready_messages,
        })
    }

    async fn lease(&self, max_batches: usize, ttl: Duration) -> Result<Vec<Lease>> {
        let mut st = self.lock();
        let now = now_ms();
        let mut leases = Vec::new();
        // 1. Expired leases: their holders are presumed dead.
        let expired: Vec<((u64, u64), BatchId)> = st
            .leases
            .range(..(now + 1, 0))
            .take(max_batches)
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (key, id) in expired {
            st.leases.remove(&key);
            if let Some(entry) = st.batches.get(&id) {
                st.leased_messages -= entry.batch.messages.len() as u64;
            }
            if let Some(lease) = st.take_lease(&id, ttl, now) {
                leases.push(lease);
            }
        }
        // 2. Due retries become ready.
        let due: Vec<(u64, u64)> = st
            .scheduled
            .range(..(now + 1, 0))
            .map(|(k, _)| *k)
            .collect();
        if !due.is_empty() {
            let messages: Vec<Message> =
                due.iter().filter_map(|k| st.scheduled.remove(k)).collect();
            st.enqueue_messages(messages, "retry");
        }
        // 3. Ready batches, one job's at a time in turn, each job's oldest first.
        while leases.len() < max_batches {
            let Some(id) = st.next_ready() else {
                break;
            };
            let size = st
                .batches
                .get(&id)
                .map_or(0, |e| e.batch.messages.len() as u64);
            st.ready_messages -= size;
            if let Some(lease) = st.take_lease(&id, ttl, now) {
                leases.push(lease);
            }
        }
        Ok(leases)
    }

    async fn mark_sending(&self, lease: &Lease) -> Result<()> {
        let mut st = self.lock();
        st.held(lease, now_ms())?.sending = true;
        Ok(())
    }

    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<u64> {
        let mut st = self.lock();
        let now = now_ms();
        let entry = st.held(lease, now)?;
        let deadline = now + ttl.as_millis() as u64;
        let held = entry.lease.as_mut().ok_or_else(|| Error::LeaseLost {
            lease: lease.id.clone(),
            batch: lease.batch.id.clone(),
        })?;
        let old = (held.deadline, held.no);
        held.deadline = deadline;
        let id = lease.batch.id.clone();
        st.leases.remove(&old);
        st.leases.insert((deadline, old.1), id);
        Ok(deadline)
    }

    async fn settle(&self, lease: &Lease, outcomes: &[Settle]) -> Result<()> {
        let mut st = self.lock();
        let now = now_ms();
        let entry = st.held(lease, now)?;
        // Validate before mutating anything, so a bad call changes nothing.
        Settle::check_covers(&entry.batch, outcomes)?;
        for outcome in outcomes {
            if !st.jobs.contains_key(&outcome.id().job) {
                return Err(Error::UnknownJob {
                    job: outcome.id().job.clone(),
                });
            }
        }
        st.unlease(&lease.batch.id);
        let limit = st.detail_limit();
        for outcome in outcomes {
            match outcome {
                Settle::Delivered { id, receipt } => {
                    let job = st.job_mut(&id.job)?;
                    job.delivered += 1;
                    job.outcomes.set(
                        id.line,
                        &LineOutcome::Delivered {
                            receipt: receipt.clone(),
                        },
                        true,
                    );
                    job.note_progress();
                }
                Settle::Dead { message, reason } => {
                    let job = st.job_mut(&message.id.job)?;
                    // The job's first `limit` dead letters in detail (as
                    // many as are dead now: a replay gives room back); past
                    // it the dead letter keeps the message (to be replayed)
                    // and the kind of failure only.
                    let keep = job.dead < limit as u64;
                    job.dead += 1;
                    job.dead_by_kind[reason.kind.index()] += 1;
                    let reason = if keep {
                        reason.clone()
                    } else {
                        DeadReason {
                            kind: reason.kind,
                            detail: NOT_KEPT.into(),
                        }
                    };
                    job.outcomes.set(
                        message.id.line,
                        &LineOutcome::Dead {
                            reason: reason.clone(),
                        },
                        keep,
                    );
                    job.note_progress();
                    st.dead.push_back(DeadLetter {
                        message: message.clone(),
                        reason,
                        at_ms: now,
                    });
                }
                Settle::Retry { message, at_ms } => {
                    let job = st.job_mut(&message.id.job)?;
                    if job.halted {
                        job.cancelled += 1;
                        job.note_progress();
                    } else {
                        let no = st.next_no();
                        st.scheduled.insert((*at_ms, no), message.clone());
                    }
                }
            }
        }
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let mut st = self.lock();
        st.held(lease, now_ms())?;
        if let Some(entry) = st.unlease(&lease.batch.id) {
            st.enqueue(entry.batch, true, entry.sending);
        }
        Ok(())
    }

    async fn dead_letters(&self, job: Option<&JobId>, limit: usize) -> Result<Vec<DeadLetter>> {
        let st = self.lock();
        Ok(st
            .dead
            .iter()
            .filter(|d| job.is_none_or(|j| &d.message.id.job == j))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn replay(&self, job: Option<&JobId>) -> Result<u64> {
        Ok(self
            .lock()
            .replay_where(|d| job.is_none_or(|j| &d.message.id.job == j)))
    }

    async fn stats(&self) -> Result<QueueStats> {
        let st = self.lock();
        Ok(QueueStats {
            ready: st.ready_messages,
            leased: st.leased_messages,
            scheduled: st.scheduled.len() as u64,
            dead: st.dead.len() as u64,
        })
    }
}

#[async_trait]
impl OffsetStore for MemoryBackend {
    async fn claim(&self, identity: &str, meta: JobMeta) -> Result<Claim> {
        let mut st = self.lock();
        if let Some(job) = st.claims.get(identity).cloned() {
            let meta = st.job_mut(&job)?.meta.clone();
            return Ok(Claim {
                job,
                fresh: false,
                meta,
            });
        }
        let job = JobId::from_identity(identity);
        st.claims.insert(identity.to_string(), job.clone());
        st.order.push(job.clone());
        st.jobs.insert(
            job.clone(),
            Job {
                meta: meta.clone(),
                checkpoint: Checkpoint::default(),
                enqueued: 0,
                delivered: 0,
                dead: 0,
                dead_by_kind: [0; 3],
                invalid: 0,
                duplicate: 0,
                finished_ms: None,
                outcomes: Outcomes::default(),
                rejects: Vec::new(),
                failure: None,
                cancelled: 0,
                paused: false,
                halted: false,
            },
        );
        Ok(Claim {
            job,
            fresh: true,
            meta,
        })
    }

    async fn checkpoint(&self, job: &JobId) -> Result<Checkpoint> {
        Ok(self.lock().job_mut(job)?.checkpoint)
    }

    async fn report(&self, job: &JobId) -> Result<Option<JobReport>> {
        Ok(self.lock().jobs.get(job).map(|j| j.report(job)))
    }

    async fn reports(&self) -> Result<Vec<JobReport>> {
        let st = self.lock();
        Ok(st
            .order
            .iter()
            .rev()
            .filter_map(|id| st.jobs.get(id).map(|j| j.report(id)))
            .collect())
    }

    async fn outcome(&self, id: &MessageId) -> Result<Option<LineOutcome>> {
        let mut st = self.lock();
        Ok(st.job_mut(&id.job)?.outcomes.get(id.line))
    }

    async fn rejects(&self, job: &JobId, limit: usize) -> Result<Vec<Reject>> {
        let mut st = self.lock();
        Ok(st
            .job_mut(job)?
            .rejects
            .iter()
            .take(limit)
            .cloned()
            .collect())
    }

    async fn fail(&self, job: &JobId, reason: &str) -> Result<JobReport> {
        let mut st = self.lock();
        let j = st.job_mut(job)?;
        if !j.checkpoint.done {
            j.checkpoint.done = true;
            j.checkpoint.seq += 1;
            j.failure = Some(reason.to_owned());
            j.note_progress();
        }
        Ok(j.report(job))
    }
}
