//! Errors of the core traits and the engine.

use std::time::Duration;

use crate::model::{BatchId, JobId, LeaseId};

/// A boxed error from a backend, a file or a sink.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors returned by [`crate::backend::Queue`], [`crate::backend::OffsetStore`], [`crate::Source`]
/// and the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend could not be reached or failed (a lost connection, a
    /// timeout). Retryable: the engine backs off and tries again.
    #[error("backend unavailable during {op}: {source}")]
    Unavailable {
        /// The operation that failed (`push`, `lease`…).
        op: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The lease is no longer held: it expired and may belong to another
    /// worker now. Not retryable: the worker must drop the batch.
    #[error("lease {lease} of batch {batch} is no longer held")]
    LeaseLost {
        /// The lost lease.
        lease: LeaseId,
        /// Its batch.
        batch: BatchId,
    },
    /// A push did not match the job's checkpoint: another batcher is ahead or
    /// the push skipped a sequence number. Not retryable: re-read the checkpoint.
    #[error("push {seq} for job {job} conflicts with checkpoint {current}")]
    Conflict {
        /// The job.
        job: JobId,
        /// The sequence number the push carried.
        seq: u64,
        /// The job's current sequence number.
        current: u64,
    },
    /// The job does not exist in the store. Not retryable.
    #[error("unknown job {job}")]
    UnknownJob {
        /// The job asked for.
        job: JobId,
    },
    /// An operator's action does not apply to the job in its state (resume
    /// a cancelled job, pause a finished one). Not retryable.
    #[error("cannot {action} job {job}: it is {state}")]
    IllegalTransition {
        /// The job.
        job: JobId,
        /// What was asked (`pause`, `resume`, `cancel`).
        action: &'static str,
        /// Why not, in words (`cancelled`, `finished`).
        state: &'static str,
    },
    /// Reading an input failed. Not retryable for this input.
    #[error("cannot read input {name}: {source}")]
    Input {
        /// The input's display name.
        name: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A setting is invalid. Not retryable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Stored data could not be decoded (a bug or a foreign writer). Not retryable.
    #[error("corrupt data at {key}: {detail}")]
    Corrupt {
        /// Where.
        key: String,
        /// What was wrong.
        detail: String,
    },
}

impl Error {
    /// Whether trying the same operation again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// Wraps a backend failure as [`Error::Unavailable`].
    pub fn unavailable(op: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Unavailable {
            op,
            source: source.into(),
        }
    }
}

/// A result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a [`crate::Sink`] failed to deliver a message. The variant decides
/// what the engine does next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// A transient failure (5xx, timeout, connection reset). The engine retries
    /// with exponential backoff until the attempt or age limit, then
    /// dead-letters the message as `exhausted`.
    #[error("retryable failure{}: {reason}", status_suffix(*.status))]
    Retryable {
        /// The status, when there was a response.
        status: Option<u16>,
        /// What happened.
        reason: String,
    },
    /// The endpoint asked us to slow down (HTTP 429). The engine pauses all
    /// deliveries of this worker (and, with a shared limiter, of every worker)
    /// for `retry_after`, then retries; it counts as an attempt.
    #[error("rate limited (retry after {retry_after:?})")]
    RateLimited {
        /// How long the endpoint asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The message can never be delivered (a 4xx other than 408/425/429).
    /// The engine dead-letters it as `permanent` at once.
    #[error("permanent failure{}: {reason}", status_suffix(*.status))]
    Permanent {
        /// The status, when there was a response.
        status: Option<u16>,
        /// What happened.
        reason: String,
    },
}

fn status_suffix(status: Option<u16>) -> String {
    status.map(|s| format!(" (status {s})")).unwrap_or_default()
}

impl SinkError {
    /// A transient failure with no response.
    pub fn retryable(reason: impl Into<String>) -> Self {
        SinkError::Retryable {
            status: None,
            reason: reason.into(),
        }
    }

    /// A permanent failure with no response.
    pub fn permanent(reason: impl Into<String>) -> Self {
        SinkError::Permanent {
            status: None,
            reason: reason.into(),
        }
    }

    /// Whether the engine will try the message again.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, SinkError::Permanent { .. })
    }

    /// The response status, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            SinkError::Retryable { status, .. } | SinkError::Permanent { status, .. } => *status,
            SinkError::RateLimited { .. } => Some(429),
        }
    }
}
