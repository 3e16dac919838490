//! `Queue` for [`RedisBackend`]: one script call per method.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis::Value;
use wds_core::{
    backend::{
        now_ms, Continue, Continued, Lease, Push, Pushed, Queue, QueueStats, RejectKind, Settle,
    },
    DeadKind, DeadLetter, Error, JobId, Result,
};

use crate::args;
use crate::backend::{RedisBackend, MAX_DUE_PER_LEASE, REBATCH_SIZE};
use crate::codec;
use crate::replies::{self, PushReply, SettleReply};

impl RedisBackend {
    pub(crate) fn retention_secs(&self) -> u64 {
        self.inner.retention.as_secs().max(1)
    }

    /// `LeaseLost` for `lease`.
    fn lost(lease: &Lease) -> Error {
        Error::LeaseLost {
            lease: lease.id.clone(),
            batch: lease.batch.id.clone(),
        }
    }
}

/// The outcomes of one job in a settle.
#[derive(Debug)]
struct Group<'a> {
    job: &'a JobId,
    /// Every delivered and dead line's stored outcome.
    outcomes: codec::Chunks,
    delivered: usize,
    /// Dead entries: in full, and with the reason's detail left out (the
    /// script keeps the full one for a job's first dead letters).
    dead: Vec<(Vec<u8>, Vec<u8>)>,
    /// Of `dead`, those in doubt and those exhausted (the rest are permanent).
    in_doubt: usize,
    exhausted: usize,
}

impl<'a> Group<'a> {
    fn of<'g>(groups: &'g mut Vec<Group<'a>>, job: &'a JobId) -> &'g mut Group<'a> {
        let at = match groups.iter().position(|g| g.job == job) {
            Some(at) => at,
            None => {
                groups.push(Group {
                    job,
                    outcomes: codec::Chunks::default(),
                    delivered: 0,
                    dead: Vec::new(),
                    in_doubt: 0,
                    exhausted: 0,
                });
                groups.len() - 1
            }
        };
        &mut groups[at]
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RedisBackend {
    /// The arguments of the Lua `push()` for `push` (`lua/lib/push.lua`).
    fn push_args<'a>(&self, push: &'a Push) -> Result<args::PushArgs<'a>> {
        let next = push.next;
        let (mut invalid, mut duplicate) = (0u64, 0u64);
        let mut chunks = codec::Chunks::default();
        for reject in &push.rejects {
            match reject.kind {
                RejectKind::Invalid { .. } => invalid += 1,
                RejectKind::Duplicate { .. } => duplicate += 1,
            }
            // A few bytes a line: the detail is in the rejects list.
            chunks.add_reject(reject.line, &reject.kind);
        }
        Ok(args::PushArgs {
            job: push.job.as_str(),
            seq: push.seq(),
            next_seq: next.seq,
            byte: next.byte,
            line: next.line,
            records: next.records,
            done: u8::from(next.done),
            messages: push.messages.len(),
            payload: if push.messages.is_empty() {
                Vec::new()
            } else {
                codec::payload(&push.messages)?
            },
            invalid,
            duplicate,
            retention_s: self.retention_secs(),
            chunks,
            rejects: push
                .rejects
                .iter()
                .map(|reject| codec::json("reject", reject))
                .collect::<Result<_>>()?,
        })
    }

    /// The arguments of a `SETTLE_AND_CONTINUE` call: its Lua `settle()`'s
    /// (`lua/lib/settle.lua`), with `then`'s mark and lease.
    fn settle_args<'a>(
        &self,
        lease: &'a Lease,
        outcomes: &'a [Settle],
        then: &Continue<'a>,
    ) -> Result<args::SettleAndContinue<'a>> {
        // The lease carries its batch: check the outcomes against it here,
        // before any round trip (the script checks the count against the
        // stored batch too).
        Settle::check_covers(&lease.batch, outcomes)?;
        // Grouped by job (a batch of a push has one; retries and replays
        // may mix jobs), so the script hands each group's outcomes to Redis
        // as one slice of arguments.
        let at_ms = now_ms();
        let mut groups: Vec<Group<'_>> = Vec::with_capacity(1);
        let mut retries: Vec<(u64, Vec<u8>)> = Vec::new();
        for outcome in outcomes {
            match outcome {
                Settle::Delivered { id, receipt } => {
                    let group = Group::of(&mut groups, &id.job);
                    group.outcomes.add_delivered(id.line, receipt);
                    group.delivered += 1;
                }
                Settle::Dead { message, reason } => {
                    let line = message.id.line;
                    let mut letter = DeadLetter {
                        message: message.clone(),
                        reason: reason.clone(),
                        at_ms,
                    };
                    let full = codec::dead_entry(&letter)?;
                    letter.reason.detail = codec::NOT_KEPT.into();
                    let short = codec::dead_entry(&letter)?;
                    let group = Group::of(&mut groups, &message.id.job);
                    // The kind only: the detail is in the dead letter.
                    group.outcomes.add_dead(line, reason.kind);
                    group.dead.push((full, short));
                    group.in_doubt += usize::from(reason.kind == DeadKind::InDoubt);
                    group.exhausted += usize::from(reason.kind == DeadKind::Exhausted);
                }
                Settle::Retry { message, at_ms } => {
                    retries.push((*at_ms, codec::message(message)?));
                }
            }
        }
        let (mark_lease, mark_batch) = match then.mark {
            Some(next) => (next.id.as_str(), next.batch.id.as_str()),
            None => ("", ""),
        };
        Ok(args::SettleAndContinue {
            lease: lease.id.as_str(),
            batch: lease.batch.id.as_str(),
            retention_s: self.retention_secs(),
            outcomes: lease.batch.messages.len(),
            groups: groups
                .into_iter()
                .map(|g| args::SettleGroup {
                    job: g.job.as_str(),
                    delivered: g.delivered,
                    in_doubt: g.in_doubt,
                    exhausted: g.exhausted,
                    chunks: g.outcomes,
                    dead: g.dead,
                })
                .collect(),
            retries,
            mark_lease,
            mark_batch,
            lease_args: lease_args(then.lease, then.ttl),
        })
    }
}

/// The arguments of a lease of up to `max_batches` for `ttl`.
fn lease_args(max_batches: usize, ttl: Duration) -> args::LeaseArgs {
    args::LeaseArgs {
        max_batches,
        ttl_ms: millis(ttl).max(1),
        rebatch_size: REBATCH_SIZE,
        max_due: MAX_DUE_PER_LEASE,
    }
}

/// What the Lua `push()` answered about `push`, for the trait call.
fn pushed(push: &Push, reply: PushReply) -> Result<Pushed> {
    match reply {
        PushReply::Ok { ready } => Ok(Pushed {
            applied: true,
            depth: ready,
        }),
        PushReply::Stale { ready } => Ok(Pushed {
            applied: false,
            depth: ready,
        }),
        PushReply::Conflict { current } => Err(Error::Conflict {
            seq: push.seq(),
            job: push.job.clone(),
            current,
        }),
        PushReply::Unknown => Err(Error::UnknownJob {
            job: push.job.clone(),
        }),
    }
}

/// What the Lua `settle()` answered about `lease`, for the trait call.
fn settled(lease: &Lease, reply: SettleReply) -> Result<()> {
    match reply {
        SettleReply::Ok => Ok(()),
        SettleReply::Lost => Err(RedisBackend::lost(lease)),
        SettleReply::Count { n } => Err(Error::InvalidCall {
            op: "settle",
            reason: format!(
                "settle of batch {} must name each of its {n} messages exactly once",
                lease.batch.id
            ),
        }),
        SettleReply::Unknown { job } => Err(Error::UnknownJob {
            job: JobId::new(job),
        }),
    }
}

// Queue and offsets are keys of one deployment, changed by one script per call.
impl wds_core::backend::Backend for RedisBackend {}

#[async_trait]
impl Queue for RedisBackend {
    async fn push(&self, push: &Push) -> Result<Pushed> {
        let mut pushed = self.push_all(std::slice::from_ref(push)).await?;
        pushed.pop().ok_or_else(|| Error::Corrupt {
            key: "push".into(),
            detail: "Redis answered a push with nothing".into(),
        })
    }

    async fn push_all(&self, pushes: &[Push]) -> Result<Vec<Pushed>> {
        let op = "push_all";
        if pushes.is_empty() {
            return Ok(Vec::new());
        }
        let args = args::PushAll {
            pushes: pushes
                .iter()
                .map(|push| self.push_args(push))
                .collect::<Result<_>>()?,
        };
        let replies: Vec<PushReply> = replies::decode(op, self.call(op, &args).await?)?;
        if replies.is_empty() || replies.len() > pushes.len() {
            return Err(Error::Corrupt {
                key: op.into(),
                detail: format!("{} replies to {} pushes", replies.len(), pushes.len()),
            });
        }
        // The script stops at the first push it refuses: that one's error
        // is the answer (the ones before it stay applied).
        pushes
            .iter()
            .zip(replies)
            .map(|(push, reply)| pushed(push, reply))
            .collect()
    }

    async fn lease(&self, max_batches: usize, ttl: Duration) -> Result<Vec<Lease>> {
        if max_batches == 0 {
            return Ok(Vec::new());
        }
        let reply = self.call("lease", &lease_args(max_batches, ttl)).await?;
        codec::leases(replies::decode("lease", reply)?)
    }

    async fn mark_sending(&self, lease: &Lease) -> Result<()> {
        let args = args::MarkSending {
            lease: lease.id.as_str(),
            batch: lease.batch.id.as_str(),
        };
        let invocation = self.invocation_with(&args);
        match codec::int(
            "mark_sending",
            &self.run_marking("mark_sending", &invocation).await?,
        )? {
            1 => Ok(()),
            _ => Err(Self::lost(lease)),
        }
    }

    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<u64> {
        let args = args::Extend {
            lease: lease.id.as_str(),
            batch: lease.batch.id.as_str(),
            ttl_ms: millis(ttl).max(1),
        };
        let deadline = codec::int("extend", &self.call("extend", &args).await?)?;
        u64::try_from(deadline).map_err(|_| Self::lost(lease))
    }

    async fn settle(&self, lease: &Lease, outcomes: &[Settle]) -> Result<()> {
        let alone = Continue {
            mark: None,
            lease: 0,
            ttl: Duration::ZERO,
        };
        self.settle_and_continue(lease, outcomes, alone)
            .await?
            .settled
    }

    async fn settle_and_continue(
        &self,
        lease: &Lease,
        outcomes: &[Settle],
        then: Continue<'_>,
    ) -> Result<Continued> {
        let op = "settle_and_continue";
        let invocation = self.invocation_with(&self.settle_args(lease, outcomes, &then)?);
        let reply = if then.mark.is_some() {
            self.run_marking(op, &invocation).await?
        } else {
            self.run(op, &invocation).await?
        };
        // Each part on its own: a settle that was applied stays known even
        // if what was leased after it cannot be read.
        let parts = match reply {
            Value::Array(parts) => parts,
            other => return Err(codec::unexpected(op, &other)),
        };
        let Ok([settle, marked, leased]) = <[Value; 3]>::try_from(parts) else {
            return Err(Error::Corrupt {
                key: op.into(),
                detail: "not {settled, marked, leased}".into(),
            });
        };
        let marked = match (then.mark, replies::decode::<i64>(op, marked)?) {
            (None, _) => None,
            (Some(_), 1) => Some(Ok(())),
            (Some(next), _) => Some(Err(Self::lost(next))),
        };
        Ok(Continued {
            settled: replies::decode(op, settle).and_then(|reply| settled(lease, reply)),
            marked,
            leased: replies::decode(op, leased).and_then(codec::leases),
        })
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let args = args::Release {
            lease: lease.id.as_str(),
            batch: lease.batch.id.as_str(),
            retention_s: self.retention_secs(),
        };
        match codec::int("release", &self.call("release", &args).await?)? {
            1 => Ok(()),
            _ => Err(Self::lost(lease)),
        }
    }

    async fn dead_letters(&self, job: Option<&JobId>, limit: usize) -> Result<Vec<DeadLetter>> {
        let op = "dead_letters";
        let args = args::DeadLetters {
            job: job.map_or("", JobId::as_str),
            // Lua numbers are doubles: `usize::MAX` would not reach LRANGE intact.
            limit: limit.min(1 << 40),
        };
        let reply = self.call(op, &args).await?;
        codec::array(op, &reply)?
            .iter()
            .map(|entry| codec::decode_dead_entry(codec::bytes(op, entry)?))
            .collect()
    }

    async fn replay(&self, job: Option<&JobId>) -> Result<u64> {
        let args = args::Replay {
            job: job.map_or("", JobId::as_str),
            rebatch_size: REBATCH_SIZE,
            kind: "",
        };
        codec::uint("replay", &self.call("replay", &args).await?)
    }

    async fn stats(&self) -> Result<QueueStats> {
        let op = "stats";
        let reply = self.call(op, &args::Stats {}).await?;
        let [ready, leased, scheduled, dead] = codec::array(op, &reply)? else {
            return Err(codec::unexpected(op, &reply));
        };
        Ok(QueueStats {
            ready: codec::uint(op, ready)?,
            leased: codec::uint(op, leased)?,
            scheduled: codec::uint(op, scheduled)?,
            dead: codec::uint(op, dead)?,
        })
    }
}
