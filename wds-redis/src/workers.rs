//! The workers seen, in Redis: `{prefix}:workers` (hash: worker id → last
//! beat as JSON) and `{prefix}:workers:seen` (zset: worker id by the
//! server time of its last beat). Each call drops the workers not heard
//! from for the retention in the same script, so the keys hold the live
//! workers and those of the last minutes, never every worker that ran.

use async_trait::async_trait;
use wds_core::backend::{WorkerBeat, WorkerRegistry, WorkerSeen};
use wds_core::{Error, Result};

use crate::args;
use crate::backend::RedisBackend;
use crate::codec;

impl RedisBackend {
    fn worker_retention_ms(&self) -> u64 {
        u64::try_from(self.inner.worker_retention.as_millis()).unwrap_or(u64::MAX)
    }
}

#[async_trait]
impl WorkerRegistry for RedisBackend {
    async fn beat(&self, beat: &WorkerBeat) -> Result<()> {
        let op = "worker beat";
        let json = codec::json(op, beat)?;
        let args = args::WorkerBeat {
            retention_ms: self.worker_retention_ms(),
            worker: &beat.worker,
            beat: json,
        };
        self.call(op, &args).await?;
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerSeen>> {
        let op = "workers";
        let args = args::Workers {
            retention_ms: self.worker_retention_ms(),
        };
        let reply = self.call(op, &args).await?;
        let items = codec::array(op, &reply)?;
        items
            .chunks(3)
            .map(|entry| {
                let [id, seen, beat] = entry else {
                    return Err(codec::unexpected(op, &reply));
                };
                let id = codec::string(op, id)?;
                let seen_ms = codec::uint(op, seen)?;
                let beat: WorkerBeat =
                    serde_json::from_slice(codec::bytes(op, beat)?).map_err(|e| {
                        Error::Corrupt {
                            key: format!("{}:workers {id:?}", self.key_prefix()),
                            detail: e.to_string(),
                        }
                    })?;
                Ok(WorkerSeen::new(beat, seen_ms))
            })
            .collect()
    }
}
