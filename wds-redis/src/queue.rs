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

use crate::backend::{RedisBackend, MAX_DUE_PER_LEASE, REBATCH_SIZE};
use crate::codec;
use crate::scripts::{Invocation, SCRIPTS};

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
    /// Adds the arguments of the Lua `push()` (see `scripts::push_fn!`),
    /// preceded by their count, as `PUSH_ALL` takes them.
    fn add_push_args(&self, invocation: &mut Invocation, push: &Push) -> Result<()> {
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
        invocation.arg(13 + 2 * chunks.len() + push.rejects.len());
        invocation
            .arg(push.job.as_str())
            .arg(push.seq())
            .arg(next.seq)
            .arg(next.byte)
            .arg(next.line)
            .arg(next.records)
            .arg(u8::from(next.done))
            .arg(push.messages.len());
        if push.messages.is_empty() {
            invocation.arg("");
        } else {
            invocation.arg(codec::payload(&push.messages)?);
        }
        invocation
            .arg(invalid)
            .arg(duplicate)
            .arg(self.retention_secs())
            .arg(chunks.len());
        for (chunk, entries) in chunks.iter() {
            invocation.arg(chunk).arg(entries);
        }
        for reject in &push.rejects {
            invocation.arg(codec::json("reject", reject)?);
        }
        Ok(())
    }

    /// A `SETTLE_AND_CONTINUE` call with the arguments of its Lua
    /// `settle()` (see `scripts::settle_fn!`); the rest follow.
    fn settle_invocation(&self, lease: &Lease, outcomes: &[Settle]) -> Result<Invocation> {
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
        let mut invocation = self.invocation(&SCRIPTS.settle_and_continue);
        invocation
            .arg(lease.id.as_str())
            .arg(lease.batch.id.as_str())
            .arg(self.retention_secs())
            .arg(lease.batch.messages.len())
            .arg(groups.len())
            .arg(retries.len());
        for group in &groups {
            invocation
                .arg(group.job.as_str())
                .arg(group.delivered)
                .arg(group.dead.len())
                .arg(group.in_doubt)
                .arg(group.exhausted)
                .arg(group.outcomes.len());
            for (chunk, entries) in group.outcomes.iter() {
                invocation.arg(chunk).arg(entries);
            }
            for (full, short) in &group.dead {
                invocation.arg(full).arg(short);
            }
        }
        for (due, message) in &retries {
            invocation.arg(*due).arg(message);
        }
        Ok(invocation)
    }
}

/// What the Lua `push()` answered about `push`.
fn push_reply(push: &Push, reply: &Value) -> Result<Pushed> {
    let op = "push";
    let fields = codec::array(op, reply)?;
    let tag = fields.first().map(|t| codec::string(op, t)).transpose()?;
    match (tag.as_deref(), fields.get(1)) {
        (Some("ok"), Some(depth)) => Ok(Pushed {
            applied: true,
            depth: codec::uint(op, depth)?,
        }),
        (Some("stale"), Some(depth)) => Ok(Pushed {
            applied: false,
            depth: codec::uint(op, depth)?,
        }),
        (Some("conflict"), Some(current)) => Err(Error::Conflict {
            seq: push.seq(),
            job: push.job.clone(),
            current: codec::uint(op, current)?,
        }),
        (Some("unknown"), _) => Err(Error::UnknownJob {
            job: push.job.clone(),
        }),
        _ => Err(codec::unexpected(op, reply)),
    }
}

/// What the Lua `settle()` answered.
fn settle_reply(lease: &Lease, reply: &Value) -> Result<()> {
    let op = "settle";
    let fields = codec::array(op, reply)?;
    let tag = fields.first().map(|t| codec::string(op, t)).transpose()?;
    match (tag.as_deref(), fields.get(1)) {
        (Some("ok"), _) => Ok(()),
        (Some("lost"), _) => Err(RedisBackend::lost(lease)),
        (Some("count"), Some(n)) => Err(Error::Config(format!(
            "settle of batch {} must name each of its {} messages exactly once",
            lease.batch.id,
            codec::uint(op, n)?
        ))),
        (Some("unknown"), Some(job)) => Err(Error::UnknownJob {
            job: JobId::new(codec::string(op, job)?),
        }),
        _ => Err(codec::unexpected(op, reply)),
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
        let mut invocation = self.invocation(&SCRIPTS.push_all);
        for push in pushes {
            self.add_push_args(&mut invocation, push)?;
        }
        let reply = self.run(op, &invocation).await?;
        let replies = codec::array(op, &reply)?;
        if replies.is_empty() || replies.len() > pushes.len() {
            return Err(codec::unexpected(op, &reply));
        }
        // The script stops at the first push it refuses: that one's error
        // is the answer (the ones before it stay applied).
        pushes
            .iter()
            .zip(replies)
            .map(|(push, reply)| push_reply(push, reply))
            .collect()
    }

    async fn lease(&self, max_batches: usize, ttl: Duration) -> Result<Vec<Lease>> {
        if max_batches == 0 {
            return Ok(Vec::new());
        }
        let mut invocation = self.invocation(&SCRIPTS.lease);
        invocation
            .arg(max_batches)
            .arg(millis(ttl).max(1))
            .arg(REBATCH_SIZE)
            .arg(MAX_DUE_PER_LEASE);
        let reply = self.run("lease", &invocation).await?;
        codec::decode_leases(&reply)
    }

    async fn mark_sending(&self, lease: &Lease) -> Result<()> {
        let mut invocation = self.invocation(&SCRIPTS.mark_sending);
        invocation
            .arg(lease.id.as_str())
            .arg(lease.batch.id.as_str());
        match codec::int(
            "mark_sending",
            &self.run("mark_sending", &invocation).await?,
        )? {
            1 => Ok(()),
            _ => Err(Self::lost(lease)),
        }
    }

    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<u64> {
        let mut invocation = self.invocation(&SCRIPTS.extend);
        invocation
            .arg(lease.id.as_str())
            .arg(lease.batch.id.as_str())
            .arg(millis(ttl).max(1));
        let deadline = codec::int("extend", &self.run("extend", &invocation).await?)?;
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
        let mut invocation = self.settle_invocation(lease, outcomes)?;
        match then.mark {
            Some(next) => invocation.arg(next.id.as_str()).arg(next.batch.id.as_str()),
            None => invocation.arg("").arg(""),
        };
        invocation
            .arg(then.lease)
            .arg(millis(then.ttl).max(1))
            .arg(REBATCH_SIZE)
            .arg(MAX_DUE_PER_LEASE);
        let reply = self.run(op, &invocation).await?;
        let [settled, marked, leased] = codec::array(op, &reply)? else {
            return Err(codec::unexpected(op, &reply));
        };
        let marked = match (then.mark, codec::int(op, marked)?) {
            (None, _) => None,
            (Some(_), 1) => Some(Ok(())),
            (Some(next), _) => Some(Err(Self::lost(next))),
        };
        Ok(Continued {
            settled: settle_reply(lease, settled),
            marked,
            leased: codec::decode_leases(leased),
        })
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let mut invocation = self.invocation(&SCRIPTS.release);
        invocation
            .arg(lease.id.as_str())
            .arg(lease.batch.id.as_str())
            .arg(self.retention_secs());
        match codec::int("release", &self.run("release", &invocation).await?)? {
            1 => Ok(()),
            _ => Err(Self::lost(lease)),
        }
    }

    async fn dead_letters(&self, job: Option<&JobId>, limit: usize) -> Result<Vec<DeadLetter>> {
        let op = "dead_letters";
        let mut invocation = self.invocation(&SCRIPTS.dead_letters);
        // Lua numbers are doubles: `usize::MAX` would not reach LRANGE intact.
        invocation
            .arg(job.map_or("", JobId::as_str))
            .arg(limit.min(1 << 40));
        let reply = self.run(op, &invocation).await?;
        codec::array(op, &reply)?
            .iter()
            .map(|entry| codec::decode_dead_entry(codec::bytes(op, entry)?))
            .collect()
    }

    async fn replay(&self, job: Option<&JobId>) -> Result<u64> {
        let mut invocation = self.invocation(&SCRIPTS.replay);
        invocation
            .arg(job.map_or("", JobId::as_str))
            .arg(REBATCH_SIZE)
            .arg("");
        codec::uint("replay", &self.run("replay", &invocation).await?)
    }

    async fn stats(&self) -> Result<QueueStats> {
        let op = "stats";
        let reply = self.run(op, &self.invocation(&SCRIPTS.stats)).await?;
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
