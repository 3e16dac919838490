//! `Queue` for [`RedisBackend`]: one script call per method.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis::Value;
use wds_core::{
    backend::{
        now_ms, BatchId, Continue, Continued, Lease, LeaseId, Push, Pushed, Queue, QueueStats,
        RejectKind, Settle,
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
        mark: Option<&'a Lease>,
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
        let (mark_lease, mark_batch) = match mark {
            Some(next) => self.ids_of(next),
            None => ("", ""),
        };
        let (lease_id, batch_id) = self.ids_of(lease);
        Ok(args::SettleAndContinue {
            lease: lease_id,
            batch: batch_id,
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

impl RedisBackend {
    /// The shard of `lease`, from its id (see [`RedisBackend::shard_of_id`]).
    fn shard_of_lease(&self, lease: &Lease) -> usize {
        self.shard_of_id(lease.id.as_str()).0
    }

    /// `lease`'s lease and batch ids as the scripts of its shard know them.
    fn ids_of<'a>(&self, lease: &'a Lease) -> (&'a str, &'a str) {
        (
            self.shard_of_id(lease.id.as_str()).1,
            self.shard_of_id(lease.batch.id.as_str()).1,
        )
    }

    /// Up to `max_batches` from `shard`.
    async fn lease_on(
        &self,
        shard: usize,
        max_batches: usize,
        ttl: Duration,
    ) -> Result<Vec<Lease>> {
        let reply = self
            .call_on(shard, "lease", &lease_args(max_batches, ttl))
            .await?;
        self.leases_from(shard, replies::decode("lease", reply)?)
    }

    /// The leases of a reply from `shard`, their ids marked with it.
    fn leases_from(&self, shard: usize, reply: replies::LeaseReply) -> Result<Vec<Lease>> {
        let mut leases = codec::leases(reply)?;
        if shard > 0 {
            for lease in &mut leases {
                lease.id = LeaseId::new(Self::id_from(shard, lease.id.as_str().to_owned()));
                lease.batch.id =
                    BatchId::new(Self::id_from(shard, lease.batch.id.as_str().to_owned()));
            }
        }
        Ok(leases)
    }

    /// Up to `max_batches` from the shards in turn: from the shard after
    /// the last one that had work for this backend, on to the next while
    /// they come short. So jobs on different shards take turns between
    /// calls, as jobs on one shard do within its script. Shards that had
    /// no work a moment ago ([`RedisBackend::shard_is_idle`]) are asked
    /// only when the others had none either, so a lease never comes back
    /// empty while any shard has work, and a busy round does not ask every
    /// empty shard each time. `skip`: a shard just asked.
    async fn lease_round(
        &self,
        max_batches: usize,
        ttl: Duration,
        skip: Option<usize>,
    ) -> Result<Vec<Lease>> {
        let n = self.shards();
        let start = self.inner.cursor.load(Ordering::Relaxed);
        let order = (0..n).map(|i| (start + i) % n).filter(|&s| Some(s) != skip);
        let (idle, busy): (Vec<usize>, Vec<usize>) =
            order.partition(|&s| n > 1 && self.shard_is_idle(s));
        let mut leases = Vec::new();
        for pass in [busy, idle] {
            for shard in pass {
                let got = self.lease_on(shard, max_batches - leases.len(), ttl).await;
                match got {
                    Ok(got) => {
                        if n > 1 {
                            self.note_work(shard, !got.is_empty());
                        }
                        if !got.is_empty() {
                            self.inner.cursor.store((shard + 1) % n, Ordering::Relaxed);
                        }
                        leases.extend(got);
                    }
                    // What was leased already is held: hand it over rather
                    // than leave it to expire; the next call tries again.
                    Err(e) if leases.is_empty() => return Err(e),
                    Err(_) => return Ok(leases),
                }
                if leases.len() >= max_batches {
                    return Ok(leases);
                }
            }
            if !leases.is_empty() {
                break;
            }
        }
        Ok(leases)
    }
}

impl RedisBackend {
    /// `pushes`, all of jobs of `shard`, in one script call.
    async fn push_run(&self, shard: usize, pushes: &[Push]) -> Result<Vec<Pushed>> {
        let op = "push_all";
        let args = args::PushAll {
            pushes: pushes
                .iter()
                .map(|push| self.push_args(push))
                .collect::<Result<_>>()?,
        };
        let replies: Vec<PushReply> = replies::decode(op, self.call_on(shard, op, &args).await?)?;
        self.note_work(shard, true);
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
        // One script call per run of pushes to one shard (all of them, when
        // they are one job's, as a batcher's are).
        let mut answers = Vec::with_capacity(pushes.len());
        let mut rest = pushes;
        while let Some(first) = rest.first() {
            let shard = self.shard_of(first.job.as_str());
            let run = rest
                .iter()
                .position(|p| self.shard_of(p.job.as_str()) != shard)
                .unwrap_or(rest.len());
            answers.extend(self.push_run(shard, &rest[..run]).await?);
            rest = &rest[run..];
        }
        Ok(answers)
    }

    async fn lease(&self, max_batches: usize, ttl: Duration) -> Result<Vec<Lease>> {
        if max_batches == 0 {
            return Ok(Vec::new());
        }
        self.lease_round(max_batches, ttl, None).await
    }

    async fn mark_sending(&self, lease: &Lease) -> Result<()> {
        let (lease_id, batch) = self.ids_of(lease);
        let shard = self.shard_of_lease(lease);
        let args = args::MarkSending {
            lease: lease_id,
            batch,
        };
        let invocation = self.invocation_with(shard, &args);
        match codec::int(
            "mark_sending",
            &self.run_marking(shard, "mark_sending", &invocation).await?,
        )? {
            1 => Ok(()),
            _ => Err(Self::lost(lease)),
        }
    }

    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<u64> {
        let (lease_id, batch) = self.ids_of(lease);
        let args = args::Extend {
            lease: lease_id,
            batch,
            ttl_ms: millis(ttl).max(1),
        };
        let shard = self.shard_of_lease(lease);
        let deadline = codec::int("extend", &self.call_on(shard, "extend", &args).await?)?;
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
        let shard = self.shard_of_lease(lease);
        // The mark and the lease go with the settle when they are of its
        // shard (one script, one round trip); a mark of another shard is a
        // call of its own, and so is a lease when this shard has no work.
        let mark_here = then.mark.filter(|next| self.shard_of_lease(next) == shard);
        let invocation =
            self.invocation_with(shard, &self.settle_args(lease, outcomes, mark_here, &then)?);
        let reply = if mark_here.is_some() {
            self.run_marking(shard, op, &invocation).await?
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
        let settled = replies::decode(op, settle).and_then(|reply| settled(lease, reply));
        let marked = match (then.mark, mark_here, replies::decode::<i64>(op, marked)?) {
            (None, _, _) => None,
            (Some(_), Some(_), 1) => Some(Ok(())),
            (Some(next), Some(_), _) => Some(Err(Self::lost(next))),
            (Some(next), None, _) => Some(self.mark_sending(next).await),
        };
        let mut leased = replies::decode(op, leased).and_then(|l| self.leases_from(shard, l));
        if let Ok(got) = &mut leased {
            if got.is_empty() && then.lease > 0 && self.shards() > 1 {
                // Errors here are the next lease's to meet: what was
                // settled and marked is answered either way.
                if let Ok(more) = self.lease_round(then.lease, then.ttl, Some(shard)).await {
                    *got = more;
                }
            }
        }
        Ok(Continued {
            settled,
            marked,
            leased,
        })
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let (lease_id, batch) = self.ids_of(lease);
        let args = args::Release {
            lease: lease_id,
            batch,
            retention_s: self.retention_secs(),
        };
        let shard = self.shard_of_lease(lease);
        match codec::int("release", &self.call_on(shard, "release", &args).await?)? {
            1 => Ok(()),
            _ => Err(Self::lost(lease)),
        }
    }

    async fn dead_letters(&self, job: Option<&JobId>, limit: usize) -> Result<Vec<DeadLetter>> {
        let op = "dead_letters";
        let shards = match job {
            Some(job) => vec![self.shard_of(job.as_str())],
            None => (0..self.shards()).collect(),
        };
        let mut letters = Vec::new();
        for shard in shards {
            if letters.len() >= limit {
                break;
            }
            let args = args::DeadLetters {
                job: job.map_or("", JobId::as_str),
                // Lua numbers are doubles: `usize::MAX` would not reach LRANGE intact.
                limit: (limit - letters.len()).min(1 << 40),
            };
            let reply = self.call_on(shard, op, &args).await?;
            for entry in codec::array(op, &reply)? {
                letters.push(codec::decode_dead_entry(codec::bytes(op, entry)?)?);
            }
        }
        Ok(letters)
    }

    async fn replay(&self, job: Option<&JobId>) -> Result<u64> {
        let args = args::Replay {
            job: job.map_or("", JobId::as_str),
            rebatch_size: REBATCH_SIZE,
            kind: "",
        };
        let shards = match job {
            Some(job) => vec![self.shard_of(job.as_str())],
            None => (0..self.shards()).collect(),
        };
        let mut replayed = 0;
        for shard in shards {
            replayed += codec::uint("replay", &self.call_on(shard, "replay", &args).await?)?;
        }
        Ok(replayed)
    }

    async fn stats(&self) -> Result<QueueStats> {
        let op = "stats";
        let mut stats = QueueStats::default();
        for shard in 0..self.shards() {
            let reply = self.call_on(shard, op, &args::Stats {}).await?;
            let [ready, leased, scheduled, dead] = codec::array(op, &reply)? else {
                return Err(codec::unexpected(op, &reply));
            };
            stats.ready += codec::uint(op, ready)?;
            stats.leased += codec::uint(op, leased)?;
            stats.scheduled += codec::uint(op, scheduled)?;
            stats.dead += codec::uint(op, dead)?;
        }
        Ok(stats)
    }
}
