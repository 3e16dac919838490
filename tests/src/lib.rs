//! Shared helpers for the WDS end-to-end tests: a scripted [`Sink`] that
//! records every call, and checks of the guarantees over a finished job.

pub mod checks;
pub mod cluster;
pub mod process;
pub mod receiver;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Notify;
use wds_core::{
    backend::{LineOutcome, OffsetStore},
    DeadKind, Delivered, JobReport, Message, MessageId, Sink, SinkError,
};

/// What the scripted sink does on one call.
#[derive(Clone, Debug)]
pub enum Step {
    /// Succeed after `delay`.
    Ok(Duration),
    /// Fail retryably (a 503).
    Fail,
    /// Answer 429 with this `Retry-After`.
    RateLimited(Duration),
    /// Fail permanently (a 404).
    Permanent,
    /// Never answer (the engine's timeout must fire).
    Hang,
}

/// Decides the step for a message on its n-th call (1-based).
pub type Script = dyn Fn(&Message, u32) -> Step + Send + Sync;

/// One recorded call.
#[derive(Clone, Debug)]
pub struct Call {
    /// The message id.
    pub id: MessageId,
    /// When the call started.
    pub at: Instant,
}

/// A [`Sink`] that follows a script and records every call.
pub struct ScriptedSink {
    script: Box<Script>,
    calls: Mutex<Vec<Call>>,
    per_id: Mutex<HashMap<MessageId, u32>>,
    /// Notified on every call, for tests that act at the k-th call.
    pub called: Notify,
}

impl std::fmt::Debug for ScriptedSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedSink").finish_non_exhaustive()
    }
}

impl ScriptedSink {
    /// A sink following `script`.
    pub fn new(script: impl Fn(&Message, u32) -> Step + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(ScriptedSink {
            script: Box::new(script),
            calls: Mutex::new(Vec::new()),
            per_id: Mutex::new(HashMap::new()),
            called: Notify::new(),
        })
    }

    /// A sink that always succeeds after `delay`.
    pub fn ok(delay: Duration) -> Arc<Self> {
        Self::new(move |_, _| Step::Ok(delay))
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Calls per message id.
    pub fn calls_per_id(&self) -> HashMap<MessageId, u32> {
        self.per_id.lock().unwrap().clone()
    }

    /// Total calls so far.
    pub fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

#[async_trait]
impl Sink for ScriptedSink {
    async fn deliver(&self, message: &Message) -> Result<Delivered, SinkError> {
        let n = {
            let mut per_id = self.per_id.lock().unwrap();
            let n = per_id.entry(message.id.clone()).or_insert(0);
            *n += 1;
            *n
        };
        self.calls.lock().unwrap().push(Call {
            id: message.id.clone(),
            at: Instant::now(),
        });
        self.called.notify_waiters();
        match (self.script)(message, n) {
            Step::Ok(delay) => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok(Delivered::with_status(200))
            }
            Step::Fail => Err(SinkError::retryable("service unavailable").with_status(503)),
            Step::RateLimited(after) => Err(SinkError::rate_limited(Some(after))),
            Step::Permanent => Err(SinkError::permanent("no such user").with_status(404)),
            Step::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(Delivered::default())
            }
        }
    }
}

/// Line-by-line accounting of a finished job (guarantee G2).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Accounting {
    /// Lines delivered.
    pub delivered: u64,
    /// Lines dead, all kinds.
    pub dead: u64,
    /// Of `dead`, in doubt.
    pub in_doubt: u64,
    /// Lines rejected (invalid or duplicate).
    pub rejected: u64,
    /// Record lines with no outcome at all (must be 0).
    pub missing: Vec<u64>,
}

/// Asks the store for the outcome of each of `lines` and checks that the
/// report's counters agree with the per-line outcomes.
pub async fn account(
    offsets: &dyn OffsetStore,
    report: &JobReport,
    lines: impl IntoIterator<Item = u64>,
) -> Accounting {
    let mut acc = Accounting::default();
    for line in lines {
        let id = MessageId {
            job: report.job.clone(),
            line,
        };
        match offsets.outcome(&id).await.expect("outcome") {
            Some(LineOutcome::Delivered { .. }) => acc.delivered += 1,
            Some(LineOutcome::Dead { reason }) => {
                acc.dead += 1;
                if reason.kind == DeadKind::InDoubt {
                    acc.in_doubt += 1;
                }
            }
            Some(LineOutcome::Rejected { .. }) => acc.rejected += 1,
            None => acc.missing.push(line),
        }
    }
    assert!(
        acc.missing.is_empty(),
        "lines with no terminal state: {:?}",
        acc.missing
    );
    assert_eq!(
        report.accounted(),
        report.lines,
        "G2 sum broken: {report:?}"
    );
    assert_eq!(
        acc.delivered, report.delivered,
        "delivered count vs outcomes: {report:?}"
    );
    assert_eq!(acc.dead, report.dead, "dead count vs outcomes: {report:?}");
    assert_eq!(
        acc.in_doubt, report.in_doubt,
        "in-doubt count vs outcomes: {report:?}"
    );
    assert_eq!(
        acc.rejected,
        report.invalid + report.duplicate,
        "rejected count vs outcomes: {report:?}"
    );
    acc
}

/// A CSV file body of `n` distinct users, one per line (lines 1..=n).
pub fn users_csv(n: usize) -> Vec<u8> {
    let mut s = String::with_capacity(n * 32);
    for i in 1..=n {
        s.push_str(&format!("user-{i},Your alert number {i}\n"));
    }
    s.into_bytes()
}

/// A view of a [`MemoryBackend`](wds_memory::MemoryBackend) that can be frozen: from then on every call
/// through it hangs forever and changes nothing, like the calls of a process
/// that was killed. Aborting an engine's tasks one by one is not atomic (a
/// task can still act while its siblings are being aborted); freezing its
/// backend view first is.
#[derive(Clone, Debug)]
pub struct Freezable {
    inner: wds_memory::MemoryBackend,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Freezable {
    /// A view of `inner`, not frozen.
    pub fn new(inner: &wds_memory::MemoryBackend) -> Self {
        Freezable {
            inner: inner.clone(),
            frozen: Default::default(),
        }
    }

    /// Freezes the view: every call made through it from now on never returns.
    pub fn freeze(&self) {
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    async fn gate(&self) {
        if self.frozen.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait]
impl wds_core::backend::Queue for Freezable {
    async fn push(
        &self,
        push: &wds_core::backend::Push,
    ) -> wds_core::Result<wds_core::backend::Pushed> {
        self.gate().await;
        self.inner.push(push).await
    }
    async fn lease(
        &self,
        n: usize,
        ttl: Duration,
    ) -> wds_core::Result<Vec<wds_core::backend::Lease>> {
        self.gate().await;
        self.inner.lease(n, ttl).await
    }
    async fn mark_sending(&self, lease: &wds_core::backend::Lease) -> wds_core::Result<()> {
        self.gate().await;
        self.inner.mark_sending(lease).await
    }
    async fn extend(
        &self,
        lease: &wds_core::backend::Lease,
        ttl: Duration,
    ) -> wds_core::Result<u64> {
        self.gate().await;
        self.inner.extend(lease, ttl).await
    }
    async fn settle(
        &self,
        lease: &wds_core::backend::Lease,
        outcomes: &[wds_core::backend::Settle],
    ) -> wds_core::Result<()> {
        self.gate().await;
        self.inner.settle(lease, outcomes).await
    }
    async fn release(&self, lease: &wds_core::backend::Lease) -> wds_core::Result<()> {
        self.gate().await;
        self.inner.release(lease).await
    }
    async fn dead_letters(
        &self,
        job: Option<&wds_core::JobId>,
        limit: usize,
    ) -> wds_core::Result<Vec<wds_core::DeadLetter>> {
        self.gate().await;
        self.inner.dead_letters(job, limit).await
    }
    async fn replay(&self, job: Option<&wds_core::JobId>) -> wds_core::Result<u64> {
        self.gate().await;
        self.inner.replay(job).await
    }
    async fn stats(&self) -> wds_core::Result<wds_core::backend::QueueStats> {
        self.gate().await;
        self.inner.stats().await
    }
}

// Both halves are views of the one memory backend it wraps.
impl wds_core::backend::Backend for Freezable {}

#[async_trait]
impl OffsetStore for Freezable {
    async fn claim(
        &self,
        identity: &str,
        meta: wds_core::JobMeta,
    ) -> wds_core::Result<wds_core::backend::Claim> {
        self.gate().await;
        self.inner.claim(identity, meta).await
    }
    async fn checkpoint(
        &self,
        job: &wds_core::JobId,
    ) -> wds_core::Result<wds_core::backend::Checkpoint> {
        self.gate().await;
        self.inner.checkpoint(job).await
    }
    async fn report(&self, job: &wds_core::JobId) -> wds_core::Result<Option<JobReport>> {
        self.gate().await;
        self.inner.report(job).await
    }
    async fn reports(&self) -> wds_core::Result<Vec<JobReport>> {
        self.gate().await;
        self.inner.reports().await
    }
    async fn outcome(&self, id: &MessageId) -> wds_core::Result<Option<LineOutcome>> {
        self.gate().await;
        self.inner.outcome(id).await
    }
    async fn rejects(
        &self,
        job: &wds_core::JobId,
        limit: usize,
    ) -> wds_core::Result<Vec<wds_core::backend::Reject>> {
        self.gate().await;
        self.inner.rejects(job, limit).await
    }
    async fn fail(&self, job: &wds_core::JobId, reason: &str) -> wds_core::Result<JobReport> {
        self.gate().await;
        self.inner.fail(job, reason).await
    }
}
