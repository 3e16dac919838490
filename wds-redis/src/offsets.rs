//! `OffsetStore` for [`RedisBackend`].

use async_trait::async_trait;
use deadpool_redis::redis::{self, Value};
use wds_core::{
    backend::{Checkpoint, Claim, LineOutcome, OffsetStore, Queue, Reject},
    Error, JobId, JobMeta, JobReport, JobState, MessageId, Result,
};

use crate::args;
use crate::backend::RedisBackend;
use crate::codec;

/// A job's report from the field/value list of its hash.
pub(crate) fn report(op: &str, job: JobId, fields: &[Value]) -> Result<JobReport> {
    let mut meta = None;
    let (mut records, mut done, mut enqueued, mut delivered, mut dead) = (0, false, 0, 0, 0);
    let (mut in_doubt, mut invalid, mut duplicate, mut finished_ms) = (0, 0, 0, None);
    let (mut permanent, mut exhausted) = (0, 0);
    let mut failure = None;
    let (mut cancelled, mut paused, mut halted) = (0, false, false);
    for pair in fields.chunks_exact(2) {
        let name = codec::bytes(op, &pair[0])?;
        let value = &pair[1];
        match name {
            b"meta" => {
                meta = Some(
                    serde_json::from_slice::<JobMeta>(codec::bytes(op, value)?).map_err(|e| {
                        Error::Corrupt {
                            key: format!("job {job} meta"),
                            detail: e.to_string(),
                        }
                    })?,
                );
            }
            b"records" => records = codec::uint(op, value)?,
            b"done" => done = codec::uint(op, value)? == 1,
            b"enqueued" => enqueued = codec::uint(op, value)?,
            b"delivered" => delivered = codec::uint(op, value)?,
            b"dead" => dead = codec::uint(op, value)?,
            b"in_doubt" => in_doubt = codec::uint(op, value)?,
            b"permanent" => permanent = codec::uint(op, value)?,
            b"exhausted" => exhausted = codec::uint(op, value)?,
            b"invalid" => invalid = codec::uint(op, value)?,
            b"duplicate" => duplicate = codec::uint(op, value)?,
            b"finished_ms" => finished_ms = Some(codec::uint(op, value)?),
            b"failed" => failure = Some(codec::string(op, value)?),
            b"cancelled" => cancelled = codec::uint(op, value)?,
            b"paused" => paused = codec::uint(op, value)? == 1,
            b"halted" => halted = codec::uint(op, value)? == 1,
            _ => {}
        }
    }
    let meta = meta.ok_or_else(|| Error::Corrupt {
        key: format!("job {job}"),
        detail: "no metadata".into(),
    })?;
    let accounted = delivered + dead + invalid + duplicate + cancelled;
    let state =
        JobState::of(failure.is_some(), done, accounted, records).controlled(paused, halted);
    let mut report = JobReport::new(job, meta, state);
    report.lines = records;
    report.enqueued = enqueued;
    report.delivered = delivered;
    report.dead = dead;
    report.in_doubt = in_doubt;
    report.permanent = permanent;
    report.exhausted = exhausted;
    report.invalid = invalid;
    report.duplicate = duplicate;
    report.cancelled = cancelled;
    report.finished_ms = finished_ms;
    report.failure = failure;
    Ok(report)
}

/// The field/value list of a job hash reply (RESP2 array or RESP3 map).
pub(crate) fn hash_fields(op: &str, reply: Value) -> Result<Vec<Value>> {
    Ok(match reply {
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        other => codec::array(op, &other)?.to_vec(),
    })
}

#[async_trait]
impl OffsetStore for RedisBackend {
    async fn claim(&self, identity: &str, meta: JobMeta) -> Result<Claim> {
        let op = "claim";
        let job = JobId::from_identity(identity);
        let shard = self.shard_of(job.as_str());
        // Jobs are listed in claim order across shards: with more than
        // one, the order comes from shard 0's counter.
        let order = if self.shards() > 1 {
            let next = self
                .inner
                .conns
                .query(
                    op,
                    redis::cmd("INCR").arg(format!("{}:jobno", self.key_prefix())),
                )
                .await?;
            codec::uint(op, &next)?.to_string()
        } else {
            String::new()
        };
        let args = args::Claim {
            identity,
            job: job.as_str(),
            meta: codec::json("job meta", &meta)?,
            detail_limit: self.inner.detail_limit,
            order,
        };
        let reply = self.call_on(shard, op, &args).await?;
        let [fresh, job, stored] = codec::array(op, &reply)? else {
            return Err(codec::unexpected(op, &reply));
        };
        let job = JobId::new(codec::string(op, job)?);
        let meta =
            serde_json::from_slice(codec::bytes(op, stored)?).map_err(|e| Error::Corrupt {
                key: format!("job {job} meta"),
                detail: e.to_string(),
            })?;
        Ok(Claim {
            job,
            fresh: codec::int(op, fresh)? == 1,
            meta,
        })
    }

    async fn checkpoint(&self, job: &JobId) -> Result<Checkpoint> {
        let op = "checkpoint";
        let reply = self
            .call_on(
                self.shard_of(job.as_str()),
                op,
                &args::Checkpoint { job: job.as_str() },
            )
            .await?;
        let [seq, byte, line, records, done] = codec::array(op, &reply)? else {
            return Err(codec::unexpected(op, &reply));
        };
        if *seq == Value::Nil {
            return Err(Error::UnknownJob { job: job.clone() });
        }
        Ok(Checkpoint {
            seq: codec::uint(op, seq)?,
            byte: codec::uint(op, byte)?,
            line: codec::uint(op, line)?,
            records: codec::uint(op, records)?,
            done: codec::uint(op, done)? == 1,
        })
    }

    async fn report(&self, job: &JobId) -> Result<Option<JobReport>> {
        let op = "report";
        let shard = self.shard_of(job.as_str());
        let reply = self
            .call_on(shard, op, &args::Report { job: job.as_str() })
            .await?;
        let fields = hash_fields(op, reply)?;
        if fields.is_empty() {
            return Ok(None);
        }
        report(op, job.clone(), &fields).map(Some)
    }

    async fn fail(&self, job: &JobId, reason: &str) -> Result<JobReport> {
        let op = "fail";
        let args = args::Fail {
            job: job.as_str(),
            reason,
            retention_s: self.retention_secs(),
        };
        let reply = self.call_on(self.shard_of(job.as_str()), op, &args).await?;
        let fields = hash_fields(op, reply)?;
        if fields.is_empty() {
            return Err(Error::UnknownJob { job: job.clone() });
        }
        report(op, job.clone(), &fields)
    }

    async fn reports(&self) -> Result<Vec<JobReport>> {
        let op = "reports";
        let mut listed = Vec::new();
        for shard in 0..self.shards() {
            let reply = self.call_on(shard, op, &args::Reports {}).await?;
            for item in codec::array(op, &reply)? {
                let [job, fields, order] = codec::array(op, item)? else {
                    return Err(codec::unexpected(op, item));
                };
                let job = JobId::new(codec::string(op, job)?);
                let report = report(op, job, codec::array(op, fields)?)?;
                listed.push((codec::uint(op, order)?, report));
            }
        }
        // Newest first across shards; each shard's are already.
        listed.sort_by_key(|(order, _)| std::cmp::Reverse(*order));
        Ok(listed.into_iter().map(|(_, report)| report).collect())
    }

    async fn outcome(&self, id: &MessageId) -> Result<Option<LineOutcome>> {
        let op = "outcome";
        let args = args::Outcome {
            job: id.job.as_str(),
            chunk: id.line / codec::CHUNK_LINES,
        };
        let reply = self
            .call_on(self.shard_of(id.job.as_str()), op, &args)
            .await?;
        let fields = codec::array(op, &reply)?;
        if fields.first().map(|k| codec::int(op, k)).transpose()? != Some(1) {
            return Err(Error::UnknownJob {
                job: id.job.clone(),
            });
        }
        // The chunk's elements in order: a line's last entry is its outcome.
        let mut chunk = Vec::new();
        if let Some(elements) = fields.get(1) {
            for element in codec::array(op, elements)? {
                chunk.extend_from_slice(codec::bytes(op, element)?);
            }
        }
        let found = codec::find_in_chunk(&chunk, id.line)
            .map(codec::decode_outcome)
            .transpose()?;
        match found {
            // A reject's detail is in the job's rejects list when it is one
            // of the first kept.
            Some(LineOutcome::Rejected { .. }) => {
                let kept = self.rejects(&id.job, self.inner.detail_limit).await?;
                Ok(kept
                    .into_iter()
                    .find(|r| r.line == id.line)
                    .map(|r| LineOutcome::Rejected { kind: r.kind })
                    .or(found))
            }
            // A dead line's reason is in its dead letter, when the letter is
            // one of the job's first and still dead.
            Some(LineOutcome::Dead { .. }) => {
                let letters = self
                    .dead_letters(Some(&id.job), self.inner.detail_limit)
                    .await?;
                Ok(letters
                    .into_iter()
                    .rev()
                    .find(|d| d.message.id.line == id.line)
                    .map(|d| LineOutcome::Dead { reason: d.reason })
                    .or(found))
            }
            other => Ok(other),
        }
    }

    async fn rejects(&self, job: &JobId, limit: usize) -> Result<Vec<Reject>> {
        let op = "rejects";
        let args = args::Rejects {
            job: job.as_str(),
            // Lua numbers are doubles: `usize::MAX` would not reach LRANGE intact.
            limit: limit.min(1 << 40),
        };
        let reply = self.call_on(self.shard_of(job.as_str()), op, &args).await?;
        let fields = codec::array(op, &reply)?;
        if fields.first().map(|k| codec::int(op, k)).transpose()? != Some(1) {
            return Err(Error::UnknownJob { job: job.clone() });
        }
        match fields.get(1) {
            None => Ok(Vec::new()),
            Some(list) => codec::array(op, list)?
                .iter()
                .map(|r| {
                    serde_json::from_slice(codec::bytes(op, r)?).map_err(|e| Error::Corrupt {
                        key: format!("rejects of job {job}"),
                        detail: e.to_string(),
                    })
                })
                .collect(),
        }
    }
}
