//! The batcher: reads an input into batches on the [`Queue`].

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::backoff::with_backoff;
use super::config::EngineConfig;
use super::seen::Seen;
use crate::backend::{Backend, OffsetStore};
use crate::error::{Error, Result};
use crate::model::{
    now_ms, Checkpoint, Claim, JobId, JobMeta, JobReport, Message, Push, Reject, RejectKind,
};
use crate::parse::{detect_format, Parsed, Position, RecordReader};
use crate::queue::Queue;
use crate::source::input::Input;
use crate::source::StopReading;

/// Reads inputs into the queue, a batch at a time.
///
/// Each push carries the checkpoint after its batch, applied atomically by the
/// queue, so a batcher that dies mid-file resumes exactly where the last push
/// left off: no line enqueued twice, none skipped (guarantee G1). Repeats of
/// the same `(userId, alertMessage)` with the same attributes within a job
/// are counted as duplicates
/// and not enqueued; after a restart the set of seen pairs is rebuilt by
/// re-reading (not re-pushing) the part already done.
#[derive(Clone, Debug)]
pub struct Batcher {
    queue: Arc<dyn Queue>,
    offsets: Arc<dyn OffsetStore>,
    config: EngineConfig,
}

/// Most chunks handed to the queue in one [`Queue::push_all`] call (and
/// read ahead of it).
const MAX_PUSHES_PER_CALL: usize = 8;

/// One chunk of parsed input, ready to become a [`Push`].
#[derive(Debug)]
struct Chunk {
    messages: Vec<Message>,
    rejects: Vec<Reject>,
    end: Position,
    records: u64,
}

impl Batcher {
    /// A batcher over `backend` (its queue and offsets, one store: see
    /// [`Backend`]). [`Engine::batcher`](crate::Engine::batcher) makes one
    /// over the engine's backend.
    ///
    /// # Errors
    ///
    /// When `config` is not valid.
    pub fn new<B: Backend>(backend: B, config: EngineConfig) -> Result<Self> {
        Batcher::over(Arc::new(backend.clone()), Arc::new(backend), config)
    }

    /// A batcher over the queue and offsets of one backend, already shared.
    pub(crate) fn over(
        queue: Arc<dyn Queue>,
        offsets: Arc<dyn OffsetStore>,
        config: EngineConfig,
    ) -> Result<Self> {
        config.validate()?;
        Ok(Batcher {
            queue,
            offsets,
            config,
        })
    }

    /// Claims the input's job (creating it once per identity).
    pub async fn claim(&self, input: &Input) -> Result<Claim> {
        self.claim_until(input, &CancellationToken::new()).await
    }

    /// [`claim`](Self::claim), retrying a backend outage only until `cancel`
    /// fires (then for a short grace).
    async fn claim_until(&self, input: &Input, cancel: &CancellationToken) -> Result<Claim> {
        let format = match input.format {
            Some(f) => f,
            None => {
                let input = input.clone();
                tokio::task::spawn_blocking(move || -> Result<_> {
                    let mut head = Vec::with_capacity(4096);
                    input
                        .open()?
                        .take(4096)
                        .read_to_end(&mut head)
                        .map_err(|source| Error::Input {
                            name: input.name.clone(),
                            source,
                        })?;
                    Ok(detect_format(&input.name, &head))
                })
                .await
                .map_err(|e| Error::Task {
                    task: "format detection",
                    source: e.into(),
                })??
            }
        };
        let meta = JobMeta {
            name: input
                .display_name
                .clone()
                .unwrap_or_else(|| input.name.clone()),
            file: input.display_name.as_ref().map(|_| input.name.clone()),
            format,
            default_message: input.default_message.clone(),
            created_ms: now_ms(),
        };
        let offsets = &self.offsets;
        with_backoff("claim", cancel, || {
            offsets.claim(&input.identity, meta.clone())
        })
        .await
    }

    /// Reads the whole input into the queue (resuming a job already begun),
    /// and returns the job's report once it is completely read. Returns early,
    /// with the report so far, when `cancel` fires or another batcher is found
    /// to be reading the same job.
    ///
    /// An input that cannot be read to its end (a file rewritten, truncated,
    /// replaced or removed while being read, or a read error) ends its job
    /// as [`JobState::Failed`](crate::JobState::Failed) with the reason,
    /// through [`OffsetStore::fail`]: the lines read before stay counted.
    pub async fn run(&self, input: &Input, cancel: &CancellationToken) -> Result<JobReport> {
        let claim = self.claim_until(input, cancel).await?;
        self.read(input, &claim, cancel).await?;
        self.report(&claim.job, cancel).await
    }

    async fn report(&self, job: &JobId, cancel: &CancellationToken) -> Result<JobReport> {
        let offsets = &self.offsets;
        with_backoff("report", cancel, || offsets.report(job))
            .await?
            .ok_or_else(|| Error::UnknownJob { job: job.clone() })
    }

    async fn read(&self, input: &Input, claim: &Claim, cancel: &CancellationToken) -> Result<()> {
        let offsets = &self.offsets;
        let mut checkpoint =
            with_backoff("checkpoint", cancel, || offsets.checkpoint(&claim.job)).await?;
        if checkpoint.done {
            return Ok(());
        }
        if checkpoint.seq > 0 {
            tracing::info!(job = %claim.job, line = checkpoint.line, "resuming job");
        } else {
            tracing::info!(job = %claim.job, name = %input.name, "reading job");
        }
        let (tx, mut rx) = mpsc::channel::<Result<Chunk>>(MAX_PUSHES_PER_CALL);
        let reader = {
            let input = input.clone();
            let claim = claim.clone();
            let config = self.config.clone();
            let cancel = cancel.clone();
            tokio::task::spawn_blocking(move || {
                parse_chunks(&input, &claim, checkpoint, &config, &cancel, tx)
            })
        };
        let mut outcome = Ok(());
        let mut finished = false;
        while !finished {
            let mut item = tokio::select! {
                _ = cancel.cancelled() => break,
                item = rx.recv() => item,
            };
            // Every chunk read while the last call was on its way goes into
            // this one, so a batcher ahead of its backend catches up in
            // fewer round trips.
            let mut pushes = Vec::new();
            let mut at = checkpoint;
            loop {
                let next = match item {
                    Some(Ok(chunk)) => {
                        let next = Checkpoint {
                            seq: at.seq + 1,
                            byte: chunk.end.byte,
                            line: chunk.end.line,
                            records: at.records + chunk.records,
                            done: false,
                        };
                        pushes.push(Push {
                            job: claim.job.clone(),
                            messages: chunk.messages,
                            rejects: chunk.rejects,
                            next,
                        });
                        next
                    }
                    Some(Err(e)) => {
                        outcome = Err(e);
                        finished = true;
                        break;
                    }
                    None => {
                        // The reader hit the end: record that the job is fully read.
                        pushes.push(Push {
                            job: claim.job.clone(),
                            messages: Vec::new(),
                            rejects: Vec::new(),
                            next: Checkpoint {
                                seq: at.seq + 1,
                                done: true,
                                ..at
                            },
                        });
                        finished = true;
                        break;
                    }
                };
                at = next;
                if pushes.len() == MAX_PUSHES_PER_CALL {
                    break;
                }
                item = match rx.try_recv() {
                    Ok(item) => Some(item),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                };
            }
            let queue = &self.queue;
            let mut from = 0;
            while from < pushes.len() {
                let pushed =
                    with_backoff("push", cancel, || queue.push_all(&pushes[from..])).await?;
                let Some(deepest) = pushed.last().map(|p| p.depth) else {
                    return Err(Error::Corrupt {
                        key: format!("job {}", claim.job),
                        detail: "the queue answered a push with nothing".into(),
                    });
                };
                if pushed.iter().all(|p| p.applied) {
                    from += pushed.len();
                    checkpoint = pushes[from - 1].next;
                } else if let Some(at) = self
                    .applied_by_us(&claim.job, &pushes[from..], cancel)
                    .await?
                {
                    // A retry after a lost reply: those pushes were ours.
                    from += at + 1;
                    checkpoint = pushes[from - 1].next;
                } else {
                    // Another batcher is reading the same job and is ahead
                    // of us: leave it to them rather than race.
                    tracing::warn!(job = %claim.job, seq = checkpoint.seq, "another batcher is ahead; stopping");
                    finished = true;
                    break;
                }
                if deepest > self.config.high_water {
                    self.wait_for_room(cancel).await?;
                }
            }
        }
        drop(rx);
        // The parser stops at its next send once the receiver is gone.
        reader.await.map_err(|e| Error::Task {
            task: "reader",
            source: e.into(),
        })?;
        match outcome {
            Err(Error::Input { source, .. }) if !cancel.is_cancelled() => {
                let reason = match StopReading::of(&source) {
                    Some(StopReading::Changed(reason)) => reason.clone(),
                    Some(StopReading::Cancelled) => return Ok(()),
                    None => format!("cannot read the input: {source}"),
                };
                tracing::warn!(job = %claim.job, name = %input.name, %reason, "job failed");
                with_backoff("fail", cancel, || offsets.fail(&claim.job, &reason)).await?;
                Ok(())
            }
            Err(Error::Input { .. }) => Ok(()),
            other => other,
        }
    }

    /// Which of `pushes` the job's checkpoint is at, when pushes reported as
    /// not applied were in fact ours: a retry after a lost reply (the
    /// connection dropped after the backend applied them) finds the
    /// checkpoint exactly where one of them put it. Going on from there is
    /// then right; `None` means another batcher is ahead.
    async fn applied_by_us(
        &self,
        job: &JobId,
        pushes: &[Push],
        cancel: &CancellationToken,
    ) -> Result<Option<usize>> {
        let offsets = &self.offsets;
        let stored = with_backoff("checkpoint", cancel, || offsets.checkpoint(job)).await?;
        Ok(pushes.iter().position(|p| {
            p.next.seq == stored.seq
                && p.next.byte == stored.byte
                && p.next.records == stored.records
        }))
    }

    /// Backpressure: wait while the queue is above its high-water mark.
    async fn wait_for_room(&self, cancel: &CancellationToken) -> Result<()> {
        let queue = &self.queue;
        let mut pause = Duration::from_millis(5);
        loop {
            let stats = with_backoff("stats", cancel, || queue.stats()).await?;
            if stats.ready <= self.config.high_water / 2 || cancel.is_cancelled() {
                return Ok(());
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

/// Runs on a blocking thread: parses the input from the checkpoint and sends
/// chunks of up to `batch_size` records.
fn parse_chunks(
    input: &Input,
    claim: &Claim,
    checkpoint: Checkpoint,
    config: &EngineConfig,
    cancel: &CancellationToken,
    tx: mpsc::Sender<Result<Chunk>>,
) {
    let io_err = |source| Error::Input {
        name: input.name.clone(),
        source,
    };
    let result = (|| -> Result<()> {
        let format = claim.meta.format;
        let default = claim.meta.default_message.clone();
        // The duplicate filter reads the whole file once first (also when
        // resuming: what was pushed before has to be known).
        let mut whole = input.open()?;
        let spill_dir = config.spill_dir.clone().unwrap_or_else(std::env::temp_dir);
        let Some((mut seen, pass)) = Seen::prepare(
            &mut whole,
            format,
            default.clone(),
            config.limits,
            config.dedupe_memory_pairs,
            &spill_dir,
            cancel,
        )
        .map_err(io_err)?
        else {
            return Ok(()); // Cancelled.
        };
        drop(whole);
        if pass.runs > 0 {
            tracing::info!(job = %claim.job, records = pass.pairs, duplicates = pass.duplicates, runs = pass.runs, dir = %spill_dir.display(), "duplicate filter spilled to disk");
        }
        let mut file = input.open_following(cancel)?;
        file.seek(SeekFrom::Start(checkpoint.byte))
            .map_err(io_err)?;
        let start = if checkpoint.byte == 0 {
            Position::START
        } else {
            Position {
                byte: checkpoint.byte,
                line: checkpoint.line,
            }
        };
        // A reader resumed past a CSV header reads with the one the first
        // pass found (a reader from the start reads it itself).
        let mut reader = RecordReader::new(file, format, default, config.limits, start)
            .with_header(seen.header());
        loop {
            let mut chunk = Chunk {
                messages: Vec::with_capacity(config.batch_size),
                rejects: Vec::new(),
                end: reader.position(),
                records: 0,
            };
            while chunk.records < config.batch_size as u64 {
                let Some(item) = reader.next_record().map_err(io_err)? else {
                    break;
                };
                chunk.records += 1;
                match item {
                    Parsed::Record(r) => match seen.check(&r).map_err(io_err)? {
                        Some(first) => chunk.rejects.push(Reject {
                            line: r.line,
                            kind: RejectKind::Duplicate { of_line: first },
                        }),
                        None => chunk.messages.push(Message::new(&claim.job, r)),
                    },
                    Parsed::Invalid(inv) => chunk.rejects.push(Reject {
                        line: inv.line,
                        kind: RejectKind::Invalid { reason: inv.reason },
                    }),
                }
            }
            chunk.end = reader.position();
            if chunk.records == 0 {
                return Ok(());
            }
            if tx.blocking_send(Ok(chunk)).is_err() {
                return Ok(()); // The batcher stopped.
            }
        }
    })();
    if let Err(e) = result {
        let _ = tx.blocking_send(Err(e));
    }
}
