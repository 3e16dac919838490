//! [`JobControl`] for [`MemoryBackend`]: each call under the one lock.

use async_trait::async_trait;
use wds_core::{
    backend::{Action, JobControl},
    DeadKind, JobId, JobReport, Result,
};

use crate::{MemoryBackend, State};

impl State {
    /// Checks `action` against the job's state; `Ok(false)` when it
    /// changes nothing.
    fn allows(&mut self, job: &JobId, action: Action) -> Result<bool> {
        let j = self.job_mut(job)?;
        action.check(job, j.halted, j.finished())
    }

    /// Removes the job's ready batches and scheduled retries; returns how
    /// many messages they held.
    fn drop_queued(&mut self, job: &JobId) -> u64 {
        self.ring.retain(|j| j != job);
        let mut dropped = 0;
        for id in self.ready.remove(job).unwrap_or_default() {
            if let Some(entry) = self.batches.remove(&id) {
                let n = entry.batch.messages.len() as u64;
                self.ready_messages -= n;
                dropped += n;
            }
        }
        let before = self.scheduled.len();
        self.scheduled.retain(|_, m| &m.id.job != job);
        dropped + (before - self.scheduled.len()) as u64
    }
}

#[async_trait]
impl JobControl for MemoryBackend {
    async fn act(&self, job: &JobId, action: Action) -> Result<JobReport> {
        let mut st = self.lock();
        if st.allows(job, action)? {
            match action {
                Action::Pause => {
                    st.job_mut(job)?.paused = true;
                    st.ring.retain(|j| j != job);
                }
                Action::Resume => {
                    st.job_mut(job)?.paused = false;
                    if st.ready.contains_key(job) && !st.ring.contains(job) {
                        st.ring.push_back(job.clone());
                    }
                }
                Action::Cancel => {
                    let dropped = st.drop_queued(job);
                    let j = st.job_mut(job)?;
                    if !j.checkpoint.done {
                        j.checkpoint.done = true;
                        j.checkpoint.seq += 1;
                    }
                    j.cancelled += dropped;
                    j.paused = false;
                    j.halted = true;
                    j.note_progress();
                }
            }
        }
        Ok(st.job_mut(job)?.report(job))
    }

    async fn replay_kind(&self, job: &JobId, kind: DeadKind) -> Result<u64> {
        let mut st = self.lock();
        st.job_mut(job)?;
        Ok(st.replay_where(|d| &d.message.id.job == job && d.reason.kind == kind))
    }
}
