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
    /// A setting is invalid: a zero batch size, a folder that does not
    /// exist, a malformed URL, a database another process holds. Only
    /// mistakes a person fixes by changing a setting are reported so;
    /// failures of the things the settings point at are [`Error::Io`] or
    /// [`Error::Backend`]. Not retryable.
    #[error("invalid setting {setting}: {reason}")]
    Config {
        /// The setting, as its builder method or field is named
        /// (`batch_size`, `rate`, `url`, `folder`).
        setting: &'static str,
        /// What is wrong with it, and what to do when that is not obvious.
        reason: String,
    },
    /// An I/O operation outside the reading of an input failed: creating
    /// or listing a folder, opening a lock file. What `?` on a
    /// [`std::io::Error`] gives (with the context `"I/O"`). Not retryable by
    /// the engine: the caller decides.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path when there is one.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A backend failed in a way that trying again will not fix: its file
    /// cannot be written, its disk is full, its schema is newer than this
    /// code. Not retryable (compare [`Error::Unavailable`]).
    #[error("backend failed during {op}: {reason}")]
    Backend {
        /// The operation that failed (`open`, `configure`, `migrate`…).
        op: &'static str,
        /// What happened, and what to do about it.
        reason: String,
        /// The cause, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// A call broke its trait's contract (a settle that does not name each
    /// message of its batch exactly once). A bug in the caller; nothing was
    /// changed. Not retryable.
    #[error("invalid {op} call: {reason}")]
    InvalidCall {
        /// The call (`settle`…).
        op: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// The component asked to work is shutting down or gone: a closed
    /// channel or semaphore (a dropped [`crate::ChannelSource`], an engine
    /// whose job slots closed). Not retryable.
    #[error("{what} has shut down")]
    Shutdown {
        /// What is gone.
        what: &'static str,
    },
    /// A background task of the engine panicked or was cancelled. Not
    /// retryable; the panic's message is in the source.
    #[error("{task} task failed: {source}")]
    Task {
        /// The task (`reader`, `format detection`).
        task: &'static str,
        /// The cause (a [`tokio::task::JoinError`]).
        #[source]
        source: BoxError,
    },
    /// Data could not be decoded (stored data damaged, a bug or a foreign
    /// writer) or encoded for storage. Not retryable.
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

    /// An invalid setting, as [`Error::Config`].
    pub fn config(setting: &'static str, reason: impl Into<String>) -> Self {
        Error::Config {
            setting,
            reason: reason.into(),
        }
    }

    /// An I/O failure with what was being done, as [`Error::Io`].
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A failure of a backend that retrying will not fix, as
    /// [`Error::Backend`], without a source (add one with a struct literal).
    pub fn backend(op: &'static str, reason: impl Into<String>) -> Self {
        Error::Backend {
            op,
            reason: reason.into(),
            source: None,
        }
    }
}

/// An I/O failure without more context becomes [`Error::Io`] with the
/// context `"I/O"`, so that `?` works on [`std::io::Result`] in code that
/// returns [`Result`]. Reading an input is reported as [`Error::Input`]
/// instead, which names the input; prefer [`Error::io`] to say what failed.
impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Self {
        Error::Io {
            context: "I/O".into(),
            source,
        }
    }
}

/// A result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a [`crate::Sink`] failed to deliver a message. The variant decides
/// what the engine does next.
///
/// Build one with a constructor and refine it, rather than with a struct
/// literal (the variants are `#[non_exhaustive]`):
///
/// ```
/// use wds_core::SinkError;
///
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
/// let e = SinkError::retryable("the SMS gateway hung up")
///     .with_status(503)
///     .with_source(io);
/// assert!(e.is_retryable());
/// assert_eq!(e.status(), Some(503));
/// // The cause is kept for `source()` chains (logs, error reporters)...
/// let cause = std::error::Error::source(&e).expect("a source");
/// assert_eq!(cause.to_string(), "reset");
/// // ...while the message (stored with dead letters) is the reason alone.
/// assert_eq!(e.to_string(), "retryable failure (status 503): the SMS gateway hung up");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// A transient failure (5xx, timeout, connection reset). The engine retries
    /// with exponential backoff until the attempt or age limit, then
    /// dead-letters the message as `exhausted`.
    #[error("retryable failure{}: {reason}", status_suffix(*.status))]
    #[non_exhaustive]
    Retryable {
        /// The status, when there was a response.
        status: Option<u16>,
        /// What happened.
        reason: String,
        /// The underlying error (a connection error, a timeout), if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The endpoint asked us to slow down (HTTP 429). The engine pauses all
    /// deliveries of this worker (and, with a shared limiter, of every worker)
    /// for `retry_after`, then retries; it counts as an attempt.
    #[error("rate limited (retry after {retry_after:?})")]
    #[non_exhaustive]
    RateLimited {
        /// How long the endpoint asked us to wait, if it said.
        retry_after: Option<Duration>,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The message can never be delivered (a 4xx other than 408/425/429).
    /// The engine dead-letters it as `permanent` at once.
    #[error("permanent failure{}: {reason}", status_suffix(*.status))]
    #[non_exhaustive]
    Permanent {
        /// The status, when there was a response.
        status: Option<u16>,
        /// What happened.
        reason: String,
        /// The underlying error (a request that cannot be built), if any.
        #[source]
        source: Option<BoxError>,
    },
}

fn status_suffix(status: Option<u16>) -> String {
    status.map(|s| format!(" (status {s})")).unwrap_or_default()
}

impl SinkError {
    /// A transient failure with no response: [`SinkError::Retryable`].
    pub fn retryable(reason: impl Into<String>) -> Self {
        SinkError::Retryable {
            status: None,
            reason: reason.into(),
            source: None,
        }
    }

    /// A permanent failure with no response: [`SinkError::Permanent`].
    pub fn permanent(reason: impl Into<String>) -> Self {
        SinkError::Permanent {
            status: None,
            reason: reason.into(),
            source: None,
        }
    }

    /// A request to slow down: [`SinkError::RateLimited`], waiting
    /// `retry_after` when the endpoint said how long.
    pub fn rate_limited(retry_after: Option<Duration>) -> Self {
        SinkError::RateLimited {
            retry_after,
            source: None,
        }
    }

    /// The same error with the response status `status`. A rate limit's
    /// status is always 429, so it is left as it is.
    pub fn with_status(mut self, status: u16) -> Self {
        match &mut self {
            SinkError::Retryable { status: s, .. } | SinkError::Permanent { status: s, .. } => {
                *s = Some(status)
            }
            SinkError::RateLimited { .. } => {}
        }
        self
    }

    /// The same error with `source` as its cause, returned by
    /// [`std::error::Error::source`]. The message (and so what a dead
    /// letter records) stays the reason alone.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        match &mut self {
            SinkError::Retryable { source: s, .. }
            | SinkError::Permanent { source: s, .. }
            | SinkError::RateLimited { source: s, .. } => *s = Some(source.into()),
        }
        self
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

    /// What happened, in words (for a rate limit, the wait asked for).
    pub fn reason(&self) -> std::borrow::Cow<'_, str> {
        match self {
            SinkError::Retryable { reason, .. } | SinkError::Permanent { reason, .. } => {
                reason.as_str().into()
            }
            SinkError::RateLimited { .. } => self.to_string().into(),
        }
    }

    /// The variant's name in snake case (`retryable`, `rate_limited`,
    /// `permanent`): a label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkError::Retryable { .. } => "retryable",
            SinkError::RateLimited { .. } => "rate_limited",
            SinkError::Permanent { .. } => "permanent",
        }
    }

    /// How long a rate limit asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SinkError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// Every error in the chain under `e`, outermost first.
    fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
        let mut out = Vec::new();
        let mut next = e.source();
        while let Some(e) = next {
            out.push(e.to_string());
            next = e.source();
        }
        out
    }

    #[test]
    fn an_io_error_is_the_source_of_the_error_it_becomes() {
        fn open(path: &std::path::Path) -> Result<std::fs::File> {
            Ok(std::fs::File::open(path)?)
        }
        let dir = tempfile::tempdir().unwrap();
        let err = open(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        let source = err.source().expect("the io error is the source");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("an io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        assert!(!err.is_retryable());

        let err = Error::io(
            "cannot list /x",
            std::io::ErrorKind::PermissionDenied.into(),
        );
        assert_eq!(chain(&err).len(), 1, "{:?}", chain(&err));
        assert!(err.to_string().starts_with("cannot list /x: "), "{err}");
    }

    #[test]
    fn a_sink_error_keeps_its_source_and_status() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "deadline");
        for e in [
            SinkError::retryable("slow").with_source(io),
            SinkError::permanent("bad").with_source("inner"),
            SinkError::rate_limited(None).with_source("inner"),
        ] {
            assert_eq!(chain(&e).len(), 1, "{e:?}");
        }
        assert_eq!(
            chain(&SinkError::retryable("x").with_source("inner")),
            ["inner"]
        );
        assert!(SinkError::permanent("x").source().is_none());
        let e = SinkError::permanent("gone").with_status(410);
        assert_eq!((e.status(), e.is_retryable()), (Some(410), false));
        assert_eq!(e.reason(), "gone");
        let e = SinkError::rate_limited(Some(Duration::from_secs(3))).with_status(503);
        assert_eq!(e.status(), Some(429));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(e.kind(), "rate_limited");
        assert_eq!(SinkError::retryable("x").kind(), "retryable");
        assert_eq!(SinkError::permanent("x").kind(), "permanent");
    }
}
