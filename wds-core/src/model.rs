//! The domain model: jobs, records, messages, batches, leases and outcomes.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::attributes::Attributes;

/// Milliseconds since the Unix epoch, the clock every backend shares.
///
/// Wall-clock time is used (not `Instant`) because lease deadlines and retry
/// times are compared by other processes and by Redis.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The stable id of a job (one input file).
///
/// It is derived from the input's identity (see [`crate::Input::identity`]),
/// so the same file seen twice, by two initiators or after a restart, has
/// the same id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// The job id for an input identity: the first 16 hex digits of its SHA-256.
    pub fn from_identity(identity: &str) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(identity.as_bytes());
        let mut id = String::with_capacity(16);
        for b in &digest[..8] {
            id.push_str(&format!("{b:02x}"));
        }
        JobId(id)
    }

    /// A job id as stored (read back from a backend, or given by an
    /// operator); a new job's id comes from [`JobId::from_identity`].
    pub fn new(id: impl Into<String>) -> Self {
        JobId(id.into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for JobId {
    fn from(id: String) -> Self {
        JobId(id)
    }
}

impl From<&str> for JobId {
    fn from(id: &str) -> Self {
        JobId(id.to_owned())
    }
}

impl AsRef<str> for JobId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The deterministic id of a message: its job and the line it came from.
///
/// Rendered as `{job}:{line}` and sent as the webhook's idempotency key
/// (`webhook-id`), identical on every retry and replay.
///
/// Not `#[non_exhaustive]`: a job and a line are the whole identity of a message (the webhook id is made of them).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId {
    /// The job the message belongs to.
    pub job: JobId,
    /// The 1-based physical line the record starts on (for a JSON array
    /// input, the element's 1-based number in the array).
    pub line: u64,
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.job, self.line)
    }
}

/// One valid line of an input file.
///
/// Made with [`Record::new`] (it is `#[non_exhaustive]`: it has grown
/// before, by its attributes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Record {
    /// The 1-based physical line the record starts on (for a JSON array
    /// input, the element's 1-based number, so that minified arrays still
    /// give every record its own message id).
    pub line: u64,
    /// The user to alert.
    pub user_id: String,
    /// The alert text (from the line, or the job's default message).
    pub alert_message: String,
    /// The line's other fields, in file order (empty for a line with none).
    #[serde(default, skip_serializing_if = "Attributes::is_empty")]
    pub attributes: Attributes,
}

impl Record {
    /// A record without attributes.
    pub fn new(line: u64, user_id: impl Into<String>, alert_message: impl Into<String>) -> Self {
        Record {
            line,
            user_id: user_id.into(),
            alert_message: alert_message.into(),
            attributes: Attributes::new(),
        }
    }

    /// The record with `attributes` instead of its own.
    pub fn with_attributes(mut self, attributes: Attributes) -> Self {
        self.attributes = attributes;
        self
    }
}

/// A line that could not be parsed or failed validation.
///
/// Not `#[non_exhaustive]`: a line and a reason are all an invalid line is reported with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invalid {
    /// The 1-based physical line the bad record starts on (element number
    /// for a JSON array input).
    pub line: u64,
    /// Why it was rejected, for a person to read.
    pub reason: String,
}

/// A record ready to deliver.
///
/// Not `#[non_exhaustive]`: backends rebuild it field by field from their stored form, so a new field is a stored-format change anyway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Deterministic id, the webhook's idempotency key.
    pub id: MessageId,
    /// The user to alert.
    #[serde(rename = "userId")]
    pub user_id: String,
    /// The alert text.
    #[serde(rename = "alertMessage")]
    pub alert_message: String,
    /// The line's other fields, in file order, sent in the webhook body
    /// beside `userId` and `alertMessage` (empty for a line with none;
    /// left out of the serialized form then, which is thus unchanged).
    #[serde(default, skip_serializing_if = "Attributes::is_empty")]
    pub attributes: Attributes,
    /// How many delivery attempts already failed (0 for a fresh message).
    #[serde(default)]
    pub attempts: u32,
    /// When the first attempt was made, if any (for the retry age limit).
    #[serde(default)]
    pub first_attempt_ms: Option<u64>,
}

impl Message {
    /// A fresh message for a record of `job`.
    pub fn new(job: &JobId, record: Record) -> Self {
        Message {
            id: MessageId {
                job: job.clone(),
                line: record.line,
            },
            user_id: record.user_id,
            alert_message: record.alert_message,
            attributes: record.attributes,
            attempts: 0,
            first_attempt_ms: None,
        }
    }

    /// A fresh message of `job` for line `line`, without attributes.
    pub fn fresh(
        job: &JobId,
        line: u64,
        user_id: impl Into<String>,
        alert_message: impl Into<String>,
    ) -> Self {
        Message::new(job, Record::new(line, user_id, alert_message))
    }

    /// The message with `attributes` instead of its own.
    pub fn with_attributes(mut self, attributes: Attributes) -> Self {
        self.attributes = attributes;
        self
    }
}

/// Identifies a batch inside a queue. Opaque: backends choose the format.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BatchId(String);

impl BatchId {
    /// A batch id; backends choose the format.
    pub fn new(id: impl Into<String>) -> Self {
        BatchId(id.into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for BatchId {
    fn from(id: String) -> Self {
        BatchId(id)
    }
}

impl From<&str> for BatchId {
    fn from(id: &str) -> Self {
        BatchId(id.to_owned())
    }
}

impl AsRef<str> for BatchId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The unit of work between components: many messages moved in one round trip.
///
/// Not `#[non_exhaustive]`: backends build it, so a new field is a breaking change of the backend protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The batch's id in its queue.
    pub id: BatchId,
    /// The messages; a batch made by a retry or a replay may mix jobs.
    pub messages: Vec<Message>,
}

/// Identifies one lease of a batch. Opaque; a new lease of the same batch
/// (after expiry) has a different id, so a late worker cannot settle it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseId(String);

impl LeaseId {
    /// A lease id; backends choose the format.
    pub fn new(id: impl Into<String>) -> Self {
        LeaseId(id.into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for LeaseId {
    fn from(id: String) -> Self {
        LeaseId(id)
    }
}

impl From<&str> for LeaseId {
    fn from(id: &str) -> Self {
        LeaseId(id.to_owned())
    }
}

impl AsRef<str> for LeaseId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A batch handed to one worker until `deadline_ms`.
///
/// Not `#[non_exhaustive]`: backends build it, so a new field is a breaking change of the backend protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// This lease's id (fencing token).
    pub id: LeaseId,
    /// The leased batch.
    pub batch: Batch,
    /// When the lease expires, in [`now_ms`] time, unless extended.
    pub deadline_ms: u64,
    /// True when an earlier lease of this batch marked it as sending and then
    /// expired: some of its messages may already have reached the sink
    /// (the *in-doubt* case of guarantee G2).
    pub previously_sending: bool,
}

/// Proof of one delivered message.
///
/// Not `#[non_exhaustive]`: backends store and rebuild every field, so a new one is a stored-format change anyway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The status the endpoint answered with, when the sink speaks HTTP.
    pub status: Option<u16>,
    /// Which attempt succeeded (1 for the first).
    pub attempt: u32,
    /// How long the successful call took, in milliseconds.
    pub latency_ms: u64,
    /// When it was confirmed, in [`now_ms`] time.
    pub at_ms: u64,
}

/// Why a message was dead-lettered.
///
/// Exhaustive on purpose: backends keep a counter per kind ([`DeadKind::ALL`]), so a new one is a breaking change of the backend protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadKind {
    /// The sink said the message can never be delivered (e.g. a 4xx).
    Permanent,
    /// Retryable failures went on past the attempt or age limit.
    Exhausted,
    /// A worker died while the message's batch was on the wire: it may or may
    /// not have been delivered, and in `AtMostOnce` mode it is not re-sent.
    InDoubt,
}

impl DeadKind {
    /// Every kind, in the order of [`DeadKind::index`].
    pub const ALL: [DeadKind; 3] = [DeadKind::Permanent, DeadKind::Exhausted, DeadKind::InDoubt];

    /// This kind's place in [`DeadKind::ALL`]: where a backend keeps a job's
    /// count of dead letters of this kind (a counter per reason, never one
    /// per line).
    pub fn index(self) -> usize {
        match self {
            DeadKind::Permanent => 0,
            DeadKind::Exhausted => 1,
            DeadKind::InDoubt => 2,
        }
    }

    /// The snake_case name used in reports and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadKind::Permanent => "permanent",
            DeadKind::Exhausted => "exhausted",
            DeadKind::InDoubt => "in_doubt",
        }
    }
}

/// The reason attached to a dead letter.
///
/// Not `#[non_exhaustive]`: backends build it from their stored form, so a new field is a breaking change of the backend protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadReason {
    /// The class of failure.
    pub kind: DeadKind,
    /// A human-readable detail (the last error, the status line…).
    pub detail: String,
}

/// A message that will not be delivered unless replayed.
///
/// Not `#[non_exhaustive]`: backends build it from their stored form, so a new field is a breaking change of the backend protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The message, as it will be replayed.
    pub message: Message,
    /// Why it is dead.
    pub reason: DeadReason,
    /// When it was dead-lettered, in [`now_ms`] time.
    pub at_ms: u64,
}

/// What a worker decided for one message of a leased batch.
///
/// Exhaustive on purpose: every backend must apply every outcome, so a new one is a breaking change of the backend protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settle {
    /// Delivered; terminal.
    Delivered {
        /// The delivered message.
        id: MessageId,
        /// The proof.
        receipt: Receipt,
    },
    /// Dead-lettered; terminal until replayed.
    Dead {
        /// The message (kept whole so it can be replayed).
        message: Message,
        /// Why.
        reason: DeadReason,
    },
    /// To be tried again no earlier than `at_ms`.
    Retry {
        /// The message, its `attempts` counting the calls that failed (the
        /// deliverer leaves it unchanged for a message it never sent).
        message: Message,
        /// The earliest time to lease it again, in [`now_ms`] time.
        at_ms: u64,
    },
}

impl Settle {
    /// Checks that `outcomes` name every message of `batch` exactly once, as
    /// [`crate::backend::Queue::settle`] requires. Backends call it before changing
    /// anything, so a bad call changes nothing.
    ///
    /// # Errors
    ///
    /// [`crate::Error::InvalidCall`] naming the batch when an id is missing,
    /// repeated or foreign.
    pub fn check_covers(batch: &Batch, outcomes: &[Settle]) -> crate::Result<()> {
        // Sorted by line first: cheaper than hashing every id twice, and
        // this runs for every batch.
        let order = |a: &&MessageId, b: &&MessageId| (a.line, &a.job).cmp(&(b.line, &b.job));
        let mut expected: Vec<&MessageId> = batch.messages.iter().map(|m| &m.id).collect();
        let mut given: Vec<&MessageId> = outcomes.iter().map(Settle::id).collect();
        expected.sort_unstable_by(order);
        given.sort_unstable_by(order);
        // Equal sorted lists of ids, and the batch's ids are distinct: so
        // each is named exactly once.
        if given != expected || expected.windows(2).any(|w| w[0] == w[1]) {
            return Err(crate::Error::InvalidCall {
                op: "settle",
                reason: format!(
                    "settle of batch {} must name each of its {} messages exactly once",
                    batch.id,
                    expected.len()
                ),
            });
        }
        Ok(())
    }

    /// The id of the message this settles.
    pub fn id(&self) -> &MessageId {
        match self {
            Settle::Delivered { id, .. } => id,
            Settle::Dead { message, .. } | Settle::Retry { message, .. } => &message.id,
        }
    }
}

/// A line the batcher did not turn into a message.
///
/// Not `#[non_exhaustive]`: backends rebuild it from their stored form, so a new field is a breaking change of the backend protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// The 1-based physical line.
    pub line: u64,
    /// Why it was not enqueued.
    pub kind: RejectKind,
}

/// Why a line was not enqueued.
///
/// Exhaustive on purpose: backends store each kind in their own encoding, so a new one is a breaking change of the backend protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RejectKind {
    /// It could not be parsed or failed validation.
    Invalid {
        /// What was wrong with it.
        reason: String,
    },
    /// The same user and message already appeared earlier in the job.
    Duplicate {
        /// The line of the first occurrence.
        of_line: u64,
    },
}

/// How far the batcher has read a job. Stored atomically with each push, so a
/// resumed batcher seeks to `byte` and neither re-reads nor skips a line.
///
/// Not `#[non_exhaustive]`: backends store and rebuild every field, so a new one is a breaking change of the backend protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// How many pushes have been applied (the next push must carry this `seq`).
    pub seq: u64,
    /// Byte offset in the input of the next unread record.
    pub byte: u64,
    /// The physical line number (1-based) at `byte` (the next element's
    /// number for a JSON array input).
    pub line: u64,
    /// Records consumed so far (messages + invalid + duplicate lines).
    pub records: u64,
    /// True once the whole input has been read.
    pub done: bool,
}

/// One step of the batcher: a batch of messages, the lines it rejected, and
/// the checkpoint after them, applied atomically by [`crate::backend::Queue::push`].
///
/// Not `#[non_exhaustive]`: backends read every field and apply it atomically, so a new one is a breaking change of the backend protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    /// The job being read.
    pub job: JobId,
    /// Messages to enqueue (may be empty, e.g. for the final checkpoint).
    pub messages: Vec<Message>,
    /// Invalid and duplicate lines among the records consumed.
    pub rejects: Vec<Reject>,
    /// The checkpoint after this push; `next.seq` is the current `seq + 1`.
    pub next: Checkpoint,
}

impl Push {
    /// The sequence number this push expects the job to be at.
    pub fn seq(&self) -> u64 {
        self.next.seq.saturating_sub(1)
    }
}

/// What [`crate::backend::Queue::push`] did.
///
/// Not `#[non_exhaustive]`: backends build it, so a new field is a breaking change of the backend protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// False when the push had already been applied (an idempotent re-push).
    pub applied: bool,
    /// Ready messages in the queue after the push (for backpressure).
    pub depth: u64,
}

/// Counts of what a queue holds.
///
/// Not `#[non_exhaustive]`: backends build it, so a new field is a breaking change of the backend protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Messages ready to lease.
    pub ready: u64,
    /// Messages in leased batches.
    pub leased: u64,
    /// Messages waiting for a scheduled retry.
    pub scheduled: u64,
    /// Messages in the dead-letter set.
    pub dead: u64,
}

/// The input format of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Format {
    /// `userId[,alertMessage]` per record, RFC 4180 quoting, optional header.
    Csv,
    /// One JSON object per line.
    JsonLines,
    /// One JSON array of objects.
    JsonArray,
}

impl Format {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::JsonLines => "json_lines",
            Format::JsonArray => "json_array",
        }
    }

    /// The usual file extension of an input in this format (`csv`,
    /// `jsonl`, `json`): what a file saved in this format is named with,
    /// and what [`parse::detect_format`](crate::parse::detect_format) reads
    /// back as this format when the content does not say otherwise.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::JsonLines => "jsonl",
            Format::JsonArray => "json",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "csv" | "txt" => Ok(Format::Csv),
            "jsonl" | "ndjson" | "json_lines" | "jsonlines" => Ok(Format::JsonLines),
            "json" | "json_array" => Ok(Format::JsonArray),
            other => Err(format!(
                "unknown format {other:?} (expected csv, jsonl or json)"
            )),
        }
    }
}

/// What the engine knows about a job when it claims it.
///
/// Made with [`JobMeta::new`] and filled in field by field (it is
/// `#[non_exhaustive]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JobMeta {
    /// A display name (the file name, or the name an upload came with).
    pub name: String,
    /// The input's own name (the file in the watched folder) when `name`
    /// is a display name given apart from it; see [`JobMeta::file_name`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The format the job is read with (fixed at claim time).
    pub format: Format,
    /// The message for lines that carry only a user id.
    pub default_message: Option<String>,
    /// When the job was claimed, in [`now_ms`] time.
    pub created_ms: u64,
}

impl JobMeta {
    /// The metadata of a job named `name`, read as `format`, claimed at
    /// `created_ms` ([`now_ms`] time), with no separate file name and no
    /// default message.
    pub fn new(name: impl Into<String>, format: Format, created_ms: u64) -> Self {
        JobMeta {
            name: name.into(),
            file: None,
            format,
            default_message: None,
            created_ms,
        }
    }

    /// The input's own name: [`file`](JobMeta::file) when set, else `name`.
    pub fn file_name(&self) -> &str {
        self.file.as_deref().unwrap_or(&self.name)
    }
}

/// The result of [`crate::backend::OffsetStore::claim`].
///
/// Not `#[non_exhaustive]`: backends build it, so a new field is a breaking change of the backend protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The job for the identity.
    pub job: JobId,
    /// True when this call created the job; false when it already existed.
    pub fresh: bool,
    /// The job's metadata as first claimed (a later claim never changes it).
    pub meta: JobMeta,
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobState {
    /// The input is still being read.
    Reading,
    /// All lines are read; some are not yet in a terminal state.
    Delivering,
    /// Every line is in a terminal state.
    Done,
    /// Reading ended early for good, for the reason in
    /// [`JobReport::failure`] (the file was rewritten, truncated, replaced
    /// or removed while being read). Terminal: the lines read before it
    /// stay counted in `lines` and are delivered as usual; the job is
    /// finished once they are all accounted for.
    Failed,
    /// Paused by an operator (see [`crate::backend::JobControl::pause`]): none of its
    /// batches is leased until it is resumed; batches already leased finish.
    Paused,
    /// Cancelled by an operator (see [`crate::backend::JobControl::cancel`]).
    /// Terminal: reading stopped (`lines` is what was read by then), the
    /// lines still queued were counted as [`JobReport::cancelled`], and
    /// the batches leased at the time finish as usual.
    Cancelled,
}

impl JobState {
    /// The state shown once an operator's control is applied over `self`
    /// (the state [`JobState::of`] derives): a cancelled job is
    /// [`Cancelled`](JobState::Cancelled); a paused job that is not
    /// [`Done`](JobState::Done) is [`Paused`](JobState::Paused).
    pub fn controlled(self, paused: bool, cancelled: bool) -> JobState {
        if cancelled {
            JobState::Cancelled
        } else if paused && self != JobState::Done {
            JobState::Paused
        } else {
            self
        }
    }

    /// The state a backend reports for a job from what it stores: whether
    /// reading failed, whether the input is fully read (the checkpoint's
    /// `done`), and how many of its `lines` are accounted for
    /// (`delivered + dead + invalid + duplicate`).
    pub fn of(failed: bool, fully_read: bool, accounted: u64, lines: u64) -> JobState {
        if failed {
            JobState::Failed
        } else if !fully_read {
            JobState::Reading
        } else if accounted == lines {
            JobState::Done
        } else {
            JobState::Delivering
        }
    }
}

/// A job's progress and the G2 counts.
///
/// Made by backends with [`JobReport::new`] and filled in field by field
/// (it is `#[non_exhaustive]`: it has grown before and will again).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JobReport {
    /// The job.
    pub job: JobId,
    /// Its metadata.
    pub meta: JobMeta,
    /// Where it is.
    pub state: JobState,
    /// Records read so far (the total once `state` is not `Reading`).
    pub lines: u64,
    /// Messages enqueued (valid, unique records).
    pub enqueued: u64,
    /// Messages delivered with a receipt.
    pub delivered: u64,
    /// Messages dead-lettered (all kinds, in-doubt included).
    pub dead: u64,
    /// Of `dead`, those dead because they were in doubt.
    pub in_doubt: u64,
    /// Of `dead`, those the sink refused for good ([`DeadKind::Permanent`]).
    /// Exact past the detail limit too: `permanent + exhausted + in_doubt
    /// == dead`.
    #[serde(default)]
    pub permanent: u64,
    /// Of `dead`, those whose retries ran out ([`DeadKind::Exhausted`]).
    #[serde(default)]
    pub exhausted: u64,
    /// Invalid lines.
    pub invalid: u64,
    /// Duplicate lines.
    pub duplicate: u64,
    /// Lines that were queued (or not yet leased, or waiting for a retry)
    /// when the job was [cancelled](JobState::Cancelled): never sent.
    #[serde(default)]
    pub cancelled: u64,
    /// When the job finished, in [`now_ms`] time.
    pub finished_ms: Option<u64>,
    /// Why the job [failed](JobState::Failed), when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl JobReport {
    /// The report of `job` in `state` with every count zero, no finish time
    /// and no failure: what a backend fills in from what it stores.
    pub fn new(job: JobId, meta: JobMeta, state: JobState) -> Self {
        JobReport {
            job,
            meta,
            state,
            lines: 0,
            enqueued: 0,
            delivered: 0,
            dead: 0,
            in_doubt: 0,
            permanent: 0,
            exhausted: 0,
            invalid: 0,
            duplicate: 0,
            cancelled: 0,
            finished_ms: None,
            failure: None,
        }
    }

    /// Lines in a terminal state:
    /// `delivered + dead + invalid + duplicate + cancelled`.
    pub fn accounted(&self) -> u64 {
        self.delivered + self.dead + self.invalid + self.duplicate + self.cancelled
    }

    /// Messages enqueued and not yet delivered, dead or cancelled.
    pub fn in_flight(&self) -> u64 {
        self.enqueued
            .saturating_sub(self.delivered + self.dead + self.cancelled)
    }

    /// Whether every line is accounted for (guarantee G2) and reading is done.
    pub fn is_complete(&self) -> bool {
        self.state == JobState::Done && self.accounted() == self.lines
    }

    /// Whether the job will change no more: reading ended (done,
    /// [failed](JobState::Failed) or [cancelled](JobState::Cancelled)) and
    /// every line read is accounted for.
    pub fn is_finished(&self) -> bool {
        matches!(
            self.state,
            JobState::Done | JobState::Failed | JobState::Cancelled
        ) && self.accounted() == self.lines
    }

    /// Wall time from claim to finish, once finished.
    pub fn elapsed(&self) -> Option<Duration> {
        self.finished_ms
            .map(|f| Duration::from_millis(f.saturating_sub(self.meta.created_ms)))
    }
}

/// The terminal (or pending) state of one line, as stored.
///
/// Exhaustive on purpose: every backend stores and decodes every outcome, so a new one is a breaking change of the backend protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum LineOutcome {
    /// Delivered, with its receipt.
    Delivered {
        /// The proof of delivery.
        receipt: Receipt,
    },
    /// Dead-lettered.
    Dead {
        /// Why.
        reason: DeadReason,
    },
    /// Rejected by the batcher (invalid or duplicate).
    Rejected {
        /// Why.
        kind: RejectKind,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_id_is_stable_and_short() {
        let a = JobId::from_identity("sha256:abc");
        assert_eq!(a, JobId::from_identity("sha256:abc"));
        assert_ne!(a, JobId::from_identity("sha256:abd"));
        assert_eq!(a.as_str().len(), 16);
    }

    #[test]
    fn ids_are_stored_as_bare_strings() {
        // SQLite and Redis hold these as the plain string: the encoding of
        // data written before the fields went private must not change.
        for (json, text) in [
            (serde_json::to_string(&JobId::new("j1")).unwrap(), "j1"),
            (serde_json::to_string(&BatchId::from("b7")).unwrap(), "b7"),
            (
                serde_json::to_string(&LeaseId::from(String::from("l3"))).unwrap(),
                "l3",
            ),
        ] {
            assert_eq!(json, format!("{text:?}"));
        }
        let job: JobId = serde_json::from_str("\"0123456789abcdef\"").unwrap();
        assert_eq!(job.as_str(), "0123456789abcdef");
        assert_eq!(job.to_string(), "0123456789abcdef");
        assert_eq!(AsRef::<str>::as_ref(&job), "0123456789abcdef");
        let message: Message =
            serde_json::from_str(r#"{"id":{"job":"j1","line":4},"userId":"u","alertMessage":"m"}"#)
                .unwrap();
        assert_eq!(message.id.job, JobId::from("j1"));
    }

    #[test]
    fn message_id_renders_as_webhook_id() {
        let id = MessageId {
            job: JobId::new("j1"),
            line: 42,
        };
        assert_eq!(id.to_string(), "j1:42");
    }

    #[test]
    fn report_accounting() {
        let r = JobReport {
            job: JobId::new("j"),
            meta: JobMeta {
                name: "f.csv".into(),
                file: None,
                format: Format::Csv,
                default_message: None,
                created_ms: 0,
            },
            state: JobState::Done,
            lines: 10,
            enqueued: 7,
            delivered: 5,
            dead: 2,
            in_doubt: 1,
            permanent: 1,
            exhausted: 0,
            invalid: 2,
            duplicate: 1,
            cancelled: 0,
            finished_ms: Some(5),
            failure: None,
        };
        assert_eq!(r.accounted(), 10);
        assert!(r.is_complete());
        assert_eq!(r.in_flight(), 0);
    }
}
