//! # wds-memory
//!
//! An in-memory [`Queue`] and [`OffsetStore`] for WDS: the embedded default
//! when one process does everything, and the test double for everything else.
//!
//! [`MemoryBackend`] is `Default + Clone`; clones share the same state, so
//! give one clone to each component:
//!
//! ```
//! use wds_memory::MemoryBackend;
//! # async fn demo(sink: impl wds_core::Sink) -> wds_core::Result<()> {
//! let backend = MemoryBackend::default();
//! let engine = wds_core::Engine::builder().backend(backend).sink(sink).build()?;
//! # let _ = engine; Ok(()) }
//! ```
//!
//! Every operation takes one short lock, so each is atomic as the traits
//! require. State is lost when the process exits: use `wds-redis` when jobs
//! must survive a restart.
//!
//! # Bounded per-job storage
//!
//! A job's lines cost one byte each (their state), plus 16 bytes per
//! delivered line (its receipt, packed). A job's first
//! [`detail_limit`](MemoryBackend::with_detail_limit) rejects and first
//! `detail_limit` dead letters (default [`DEFAULT_DETAIL_LIMIT`] each) are
//! kept in full: their reasons, [`OffsetStore::rejects`], the line a
//! duplicate repeats, the dead letter's reason. For the rest only the kind is kept (the counts of the
//! [`JobReport`] stay exact): [`OffsetStore::outcome`] answers with the kind
//! and a detail saying it was not kept, `of_line: 0` for a duplicate, and
//! their dead letters keep the message (so they can be replayed) with the
//! kind of failure only. A file of 10,000,000 invalid lines costs about
//! 1 byte per line, not 250.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
pub use wds_core;
use wds_core::{
    now_ms, Batch, BatchId, Checkpoint, Claim, DeadKind, DeadLetter, DeadReason, Error, JobId,
    JobMeta, JobReport, JobState, Lease, LeaseId, LineOutcome, Message, MessageId, OffsetStore,
    Push, Pushed, Queue, QueueStats, Reject, RejectKind, Result, Settle,
};

mod circuits;
mod outcomes;

use outcomes::{Outcomes, NOT_KEPT};

/// How many rejects, and how many dead letters, of a job are kept in detail
/// by default (the same for every backend).
pub use wds_core::DEFAULT_DETAIL_LIMIT;

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
    ready: VecDeque<BatchId>,
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
    circuits: HashMap<String, wds_core::health::CircuitState>,
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
    in_doubt: u64,
    invalid: u64,
    duplicate: u64,
    finished_ms: Option<u64>,
    outcomes: Outcomes,
    /// The first rejects, up to the detail limit.
    rejects: Vec<Reject>,
    /// Why reading failed, once it did.
    failure: Option<String>,
}

impl Job {
    fn report(&self, id: &JobId) -> JobReport {
        let lines = self.checkpoint.records;
        let accounted = self.delivered + self.dead + self.invalid + self.duplicate;
        let state = JobState::of(
            self.failure.is_some(),
            self.checkpoint.done,
            accounted,
            lines,
        );
        JobReport {
            job: id.clone(),
            meta: self.meta.clone(),
            state,
            lines,
            enqueued: self.enqueued,
            delivered: self.delivered,
            dead: self.dead,
            in_doubt: self.in_doubt,
            invalid: self.invalid,
            duplicate: self.duplicate,
            finished_ms: self.finished_ms,
            failure: self.failure.clone(),
        }
    }

    /// Stamps the finish time the moment the job becomes done.
    fn note_progress(&mut self) {
        let accounted = self.delivered + self.dead + self.invalid + self.duplicate;
        if self.checkpoint.done && accounted == self.checkpoint.records {
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

    fn enqueue(&mut self, batch: Batch, front: bool) {
        self.ready_messages += batch.messages.len() as u64;
        let id = batch.id.clone();
        self.batches.insert(
            id.clone(),
            Entry {
                batch,
                lease: None,
                sending: false,
            },
        );
        if front {
            self.ready.push_front(id);
        } else {
            self.ready.push_back(id);
        }
    }

    fn enqueue_messages(&mut self, messages: Vec<Message>, kind: &str) {
        let mut messages = messages.into_iter().peekable();
        while messages.peek().is_some() {
            let chunk: Vec<Message> = messages.by_ref().take(REBATCH_SIZE).collect();
            let id = BatchId(format!("{kind}/{}", self.next_no()));
            self.enqueue(
                Batch {
                    id,
                    messages: chunk,
                },
                false,
            );
        }
    }

    fn take_lease(&mut self, id: &BatchId, ttl: Duration, now: u64) -> Option<Lease> {
        let no = self.next_no();
        let deadline = now + ttl.as_millis() as u64;
        let lease_id = LeaseId(format!("{id}#{no}"));
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
            let id = BatchId(format!("{}/{}", push.job, seq));
            st.enqueue(
                Batch {
                    id,
                    messages: push.messages.clone(),
                },
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
        // 3. Ready batches, oldest first.
        while leases.len() < max_batches {
            let Some(id) = st.ready.pop_front() else {
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
                    if reason.kind == DeadKind::InDoubt {
                        job.in_doubt += 1;
                    }
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
                    let no = st.next_no();
                    st.scheduled.insert((*at_ms, no), message.clone());
                }
            }
        }
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let mut st = self.lock();
        st.held(lease, now_ms())?;
        if let Some(entry) = st.unlease(&lease.batch.id) {
            let sending = entry.sending;
            st.enqueue(entry.batch, true);
            if let Some(e) = st.batches.get_mut(&lease.batch.id) {
                e.sending = sending;
            }
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
        let mut st = self.lock();
        let (replayed, kept): (Vec<DeadLetter>, Vec<DeadLetter>) = st
            .dead
            .drain(..)
            .partition(|d| job.is_none_or(|j| &d.message.id.job == j));
        st.dead = kept.into();
        let count = replayed.len() as u64;
        let mut messages = Vec::with_capacity(replayed.len());
        for letter in replayed {
            if let Some(j) = st.jobs.get_mut(&letter.message.id.job) {
                j.dead -= 1;
                if letter.reason.kind == DeadKind::InDoubt {
                    j.in_doubt -= 1;
                }
                j.outcomes.clear(letter.message.id.line);
                j.note_progress();
            }
            let mut message = letter.message;
            message.attempts = 0;
            message.first_attempt_ms = None;
            messages.push(message);
        }
        st.enqueue_messages(messages, "replay");
        Ok(count)
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
                in_doubt: 0,
                invalid: 0,
                duplicate: 0,
                finished_ms: None,
                outcomes: Outcomes::default(),
                rejects: Vec::new(),
                failure: None,
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
