//! The workers seen, in the backend's state: every task of the process
//! (the `all` role's worker and control API) shares them.

use std::time::Duration;

use async_trait::async_trait;
use wds_core::backend::{WorkerBeat, WorkerRegistry, WorkerSeen, WORKER_RETENTION};
use wds_core::{backend::now_ms, Result};

use crate::MemoryBackend;

impl MemoryBackend {
    /// Forgets a worker once it has not beaten for `retention` (default
    /// [`WORKER_RETENTION`]); see [`WorkerRegistry`].
    pub fn with_worker_retention(self, retention: Duration) -> Self {
        self.lock().worker_retention = Some(retention);
        self
    }
}

#[async_trait]
impl WorkerRegistry for MemoryBackend {
    async fn beat(&self, beat: &WorkerBeat) -> Result<()> {
        let now = now_ms();
        let mut state = self.lock();
        let oldest = now.saturating_sub(retention_ms(state.worker_retention));
        state.workers.retain(|_, seen| seen.seen_ms >= oldest);
        state
            .workers
            .insert(beat.worker.clone(), WorkerSeen::new(beat.clone(), now));
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerSeen>> {
        let now = now_ms();
        let mut state = self.lock();
        let oldest = now.saturating_sub(retention_ms(state.worker_retention));
        state.workers.retain(|_, seen| seen.seen_ms >= oldest);
        Ok(state.workers.values().cloned().collect())
    }
}

fn retention_ms(retention: Option<Duration>) -> u64 {
    u64::try_from(retention.unwrap_or(WORKER_RETENTION).as_millis()).unwrap_or(u64::MAX)
}
