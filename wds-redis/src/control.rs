//! `JobControl` for [`RedisBackend`]: one script call per method.

use async_trait::async_trait;
use wds_core::{
    backend::{Action, JobControl, OffsetStore},
    DeadKind, Error, JobId, JobReport, Result,
};

use crate::args;
use crate::backend::{RedisBackend, REBATCH_SIZE};
use crate::codec;
use crate::offsets::{hash_fields, report};

impl RedisBackend {
    /// Runs `action` on the job in the `CONTROL` script.
    async fn control(&self, job: &JobId, action: Action) -> Result<JobReport> {
        let op = action.as_str();
        let args = args::Control {
            action: op,
            job: job.as_str(),
            retention_s: self.retention_secs(),
        };
        let reply = self.call_on(self.shard_of(job.as_str()), op, &args).await?;
        let parts = codec::array(op, &reply)?;
        match (parts.first().map(|p| codec::string(op, p)), parts.get(1)) {
            (Some(Ok(tag)), Some(fields)) if tag == "ok" => {
                report(op, job.clone(), &hash_fields(op, fields.clone())?)
            }
            (Some(Ok(tag)), None) if tag == "unknown" => {
                Err(Error::UnknownJob { job: job.clone() })
            }
            (Some(Ok(tag)), Some(state)) if tag == "illegal" => {
                let cancelled = codec::string(op, state)? == "cancelled";
                // The script checked what `Action::check` checks: let it
                // build the error, so every backend words it alike.
                action.check(job, cancelled, !cancelled)?;
                Err(codec::unexpected(op, &reply))
            }
            _ => Err(codec::unexpected(op, &reply)),
        }
    }
}

#[async_trait]
impl JobControl for RedisBackend {
    async fn act(&self, job: &JobId, action: Action) -> Result<JobReport> {
        self.control(job, action).await
    }

    async fn replay_kind(&self, job: &JobId, kind: DeadKind) -> Result<u64> {
        if self.report(job).await?.is_none() {
            return Err(Error::UnknownJob { job: job.clone() });
        }
        let args = args::Replay {
            job: job.as_str(),
            rebatch_size: REBATCH_SIZE,
            kind: kind.as_str(),
        };
        let shard = self.shard_of(job.as_str());
        codec::uint(
            "replay_kind",
            &self.call_on(shard, "replay_kind", &args).await?,
        )
    }
}
