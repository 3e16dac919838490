//! [`Freezable`]: a backend view that can be made to hang, like a killed process.

use std::time::Duration;

use async_trait::async_trait;
use wds_core::{
    backend::{LineOutcome, OffsetStore},
    JobReport, MessageId,
};

/// A view of a [`MemoryBackend`](wds_memory::MemoryBackend) that can be frozen: from then on every call
/// through it hangs forever and changes nothing, like the calls of a process
/// that was killed. Aborting an engine's tasks one by one is not atomic (a
/// task can still act while its siblings are being aborted); freezing its
/// backend view first is.
#[derive(Clone, Debug)]
pub struct Freezable {
    inner: wds_memory::MemoryBackend,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Pushes still let through before the view freezes itself.
    pushes_left: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Freezable {
    /// A view of `inner`, not frozen.
    pub fn new(inner: &wds_memory::MemoryBackend) -> Self {
        Freezable {
            inner: inner.clone(),
            frozen: Default::default(),
            pushes_left: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX)),
        }
    }

    /// Lets `n` more pushes through, then freezes: a batcher killed right
    /// after its `n`-th push, wherever a poll of its progress would have
    /// caught it (on a fast or a loaded machine alike).
    pub fn freeze_after_pushes(&self, n: u64) {
        self.pushes_left
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the view is frozen.
    pub fn is_frozen(&self) -> bool {
        self.frozen.load(std::sync::atomic::Ordering::SeqCst)
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
        let took = self.pushes_left.fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |n| n.checked_sub(1),
        );
        if took.is_err() {
            self.freeze();
            std::future::pending::<()>().await;
        }
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
