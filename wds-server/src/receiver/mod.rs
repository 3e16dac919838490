//! The webhook [`Receiver`] (the "alert notifier"): verifies, de-duplicates
//! and records the calls an [`HttpSink`](wds_http::HttpSink) makes.
//!
//! Routes:
//!
//! - `POST /webhook` with `{"userId": …, "alertMessage": …}` (other fields,
//!   such as a message's attributes, are accepted and not recorded): appends
//!   `userId,alertMessage` as a CSV line to the output file and answers 200
//!   `{"status":"accepted"}` (or `{"status":"duplicate"}` for a repeated
//!   `webhook-id`). Errors are JSON `{"error": …}`: 400 for a body that is not
//!   that JSON, 401 for a missing, wrong or stale signature when secrets are
//!   configured, 413 for a body over the limit, 429 with `Retry-After` when
//!   the client exceeds the rate limit.
//! - `GET /healthz`: 200 `{"status":"ok"}` (never rate limited, so probes
//!   cannot be starved).
//!
//! # Unsigned webhooks are refused unless asked for
//!
//! [`Receiver::new`] fails without a secret unless
//! [`ReceiverConfig::accept_unsigned`] is set (and then logs a warning):
//! anyone who can reach an unsigned receiver can make it write lines.
//!
//! # Dedupe is bounded and survives restarts
//!
//! A `webhook-id` is remembered for [`ReceiverConfig::dedupe_window`]
//! (default: the signature tolerance, 5 minutes) after it was recorded: a
//! signed request replayed later is refused as stale anyway. The ids live in
//! memory (about 100 bytes each: at most one window's worth) and in a log
//! next to the output (`<output>.ids`, one `expires_ms id` line per id,
//! compacted as ids expire), from which a restarted receiver reloads them.
//! A legitimate re-send (a retry with a fresh timestamp) arriving later than
//! the window is recorded again: set the window at least as long as the
//! sender's retry horizon for exactly-once output across every retry.
//!
//! # The output is safe to open in a spreadsheet
//!
//! A cell starting with `=`, `+`, `-`, `@`, tab or carriage return gets a `'`
//! in front, so a spreadsheet shows it as text rather than running it as a
//! formula (`=HYPERLINK(…)`). Control characters are refused with 400 by the
//! rule the input parsers apply ([`wds_core::parse::text`]): none in a
//! `userId`; none but tab, line feed and carriage return in an
//! `alertMessage`; no bidirectional-text controls in either.

mod limit;
mod output;
mod routes;
mod seen;

use std::future::Future;
use std::io;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::{self, ServerLimits};
use limit::Limiter;
use output::AlertLog;
use wds_http::signature::{Secret, SecretError, DEFAULT_TOLERANCE};

/// The default body size limit (64 KiB).
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// How often idle rate-limit buckets are forgotten.
const LIMITER_SWEEP: Duration = Duration::from_secs(60);

/// When accepted lines reach the output file.
///
/// The HTTP answer never waits for the disk beyond a `write`: even
/// [`FlushPolicy::EveryWrite`] hands the line to the operating system without
/// `fsync`, so it survives the receiver crashing, not the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlushPolicy {
    /// Write each line to the file before answering. Slower under load, but
    /// the file is always up to date (what tests use).
    EveryWrite,
    /// Buffer lines in memory and write them every so often (from a
    /// background task run by [`Receiver::serve`]) and on shutdown. A crash
    /// loses at most this much of accepted alerts.
    Interval(Duration),
}

impl Default for FlushPolicy {
    /// `Interval(200 ms)`.
    fn default() -> Self {
        FlushPolicy::Interval(Duration::from_millis(200))
    }
}

/// The receiver's settings; start from [`ReceiverConfig::new`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReceiverConfig {
    /// Rate limit per (client address, path): `(per_second, burst)`. `None`
    /// (the default) disables it.
    pub rate: Option<(u32, u32)>,
    /// `whsec_…` secrets; every webhook must carry a valid signature under
    /// one of them. Without any, [`Receiver::new`] refuses to start unless
    /// `accept_unsigned` is set.
    pub secrets: Vec<String>,
    /// Accept webhooks without checking signatures when no secret is set
    /// (default `false`: no secret is then an error). Anyone who can reach
    /// the receiver can then make it write lines.
    pub accept_unsigned: bool,
    /// How long a recorded `webhook-id` is remembered, so that a repeat is
    /// dropped (default: the tolerance, 5 min); see the module docs.
    pub dedupe_window: Duration,
    /// How far `webhook-timestamp` may be from now, either way (default 5 min).
    pub tolerance: Duration,
    /// The CSV file accepted alerts are appended to (created if missing).
    pub output: PathBuf,
    /// When lines reach the file (default `Interval(200 ms)`).
    pub flush: FlushPolicy,
    /// The largest body accepted, in bytes (default 64 KiB).
    pub body_limit: usize,
    /// Timeouts and the connection cap of [`Receiver::serve`] (defaults:
    /// see [`ServerLimits`]).
    pub limits: ServerLimits,
}

impl ReceiverConfig {
    /// Defaults, writing to `output`.
    pub fn new(output: impl Into<PathBuf>) -> Self {
        ReceiverConfig {
            rate: None,
            secrets: Vec::new(),
            accept_unsigned: false,
            dedupe_window: DEFAULT_TOLERANCE,
            tolerance: DEFAULT_TOLERANCE,
            output: output.into(),
            flush: FlushPolicy::default(),
            body_limit: DEFAULT_BODY_LIMIT,
            limits: ServerLimits::default(),
        }
    }
}

/// Why the receiver could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiverError {
    /// A secret is not a valid `whsec_` secret.
    #[error("receiver secret #{index} is invalid: {source}")]
    InvalidSecret {
        /// Its position in [`ReceiverConfig::secrets`] (from 0).
        index: usize,
        /// What is wrong with it.
        #[source]
        source: SecretError,
    },
    /// A setting is out of range.
    #[error("invalid receiver configuration: {0}")]
    Config(String),
    /// No secret is set and unsigned webhooks were not explicitly accepted.
    #[error(
        "no signing secret: set one (whsec_…) or accept unsigned webhooks explicitly \
         (ReceiverConfig::accept_unsigned, --insecure-accept-unsigned)"
    )]
    Unsigned,
    /// The output file could not be opened, written or flushed.
    #[error("alert output {path}: {source}")]
    Output {
        /// The output file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The server failed.
    #[error("receiver server failed: {0}")]
    Serve(#[source] io::Error),
}

/// State shared by every request.
#[derive(Debug)]
struct Shared {
    secrets: Vec<Secret>,
    tolerance: Duration,
    body_limit: usize,
    flush: FlushPolicy,
    limits: ServerLimits,
    /// How often expired ids are forgotten.
    sweep: Duration,
    output: PathBuf,
    log: AlertLog,
    limiter: Option<Arc<Limiter>>,
}

/// The webhook receiver; see the [module docs](self).
///
/// Cheap to clone: clones share the output file, the ids seen and the
/// counters.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use wds_server::{FlushPolicy, Receiver, ReceiverConfig};
///
/// let mut config = ReceiverConfig::new("alerts.csv");
/// config.rate = Some((100, 20));
/// config.secrets = vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()];
/// config.flush = FlushPolicy::EveryWrite;
/// let receiver = Receiver::new(config)?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9000").await?;
/// let stop = tokio_util::sync::CancellationToken::new();
/// receiver.serve(listener, stop.clone().cancelled_owned()).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Receiver {
    shared: Arc<Shared>,
}

impl Receiver {
    /// Validates `config` and opens the output file for appending.
    ///
    /// # Errors
    ///
    /// [`ReceiverError::Unsigned`] without a secret unless
    /// [`ReceiverConfig::accept_unsigned`], [`ReceiverError::InvalidSecret`],
    /// [`ReceiverError::Config`] for a zero rate, burst, flush interval, body
    /// limit or dedupe window, and [`ReceiverError::Output`] when the output
    /// or its id log cannot be opened.
    pub fn new(config: ReceiverConfig) -> Result<Self, ReceiverError> {
        let secrets = Secret::parse_all(&config.secrets)
            .map_err(|(index, source)| ReceiverError::InvalidSecret { index, source })?;
        let limiter = match config.rate {
            None => None,
            Some((per_second, burst)) => {
                let nonzero = |n: u32, what: &str| {
                    NonZeroU32::new(n)
                        .ok_or_else(|| ReceiverError::Config(format!("rate {what} must be > 0")))
                };
                Some(Arc::new(Limiter::new(
                    nonzero(per_second, "per second")?,
                    nonzero(burst, "burst")?,
                )))
            }
        };
        if config.flush == FlushPolicy::Interval(Duration::ZERO) {
            return Err(ReceiverError::Config(
                "the flush interval must be > 0 (use FlushPolicy::EveryWrite)".into(),
            ));
        }
        if config.body_limit == 0 {
            return Err(ReceiverError::Config("body_limit must be > 0".into()));
        }
        config.limits.validate().map_err(ReceiverError::Config)?;
        if config.dedupe_window.is_zero() {
            return Err(ReceiverError::Config("dedupe_window must be > 0".into()));
        }
        if config.secrets.is_empty() {
            if !config.accept_unsigned {
                return Err(ReceiverError::Unsigned);
            }
            tracing::warn!(
                "the receiver accepts UNSIGNED webhooks: anyone who can reach it can write alerts"
            );
        }
        let ids = id_log_path(&config.output);
        let log = AlertLog::open(&config.output, ids, config.dedupe_window, config.flush).map_err(
            |source| ReceiverError::Output {
                path: config.output.clone(),
                source,
            },
        )?;
        Ok(Receiver {
            shared: Arc::new(Shared {
                secrets,
                tolerance: config.tolerance,
                body_limit: config.body_limit,
                flush: config.flush,
                limits: config.limits,
                sweep: (config.dedupe_window / 2).clamp(Duration::from_secs(1), LIMITER_SWEEP),
                output: config.output,
                log,
                limiter,
            }),
        })
    }

    /// The routes, for embedding in another server.
    ///
    /// The rate limiter keys on the client address from `ConnectInfo`
    /// ([`crate::server::serve`] or
    /// `into_make_service_with_connect_info::<SocketAddr>()` set it); without
    /// it all clients share one bucket. With [`FlushPolicy::Interval`], nothing
    /// flushes on a timer unless [`Receiver::serve`] runs: call
    /// [`Receiver::flush`] yourself.
    pub fn router(&self) -> Router {
        let shared = Arc::clone(&self.shared);
        let mut webhook = post(routes::webhook)
            .with_state(Arc::clone(&shared))
            .layer(DefaultBodyLimit::max(shared.body_limit));
        if let Some(limiter) = &shared.limiter {
            // Outermost, so a throttled client costs no body read.
            webhook = webhook.layer(axum::middleware::from_fn_with_state(
                Arc::clone(limiter),
                limit::limit,
            ));
        }
        Router::new()
            .route("/webhook", webhook)
            .route("/healthz", get(routes::healthz))
            .fallback(routes::not_found)
    }

    /// Serves on `listener` under [`ReceiverConfig::limits`] until
    /// `shutdown` completes, then finishes the requests in flight and
    /// flushes the output.
    ///
    /// Runs the background flush of [`FlushPolicy::Interval`].
    ///
    /// # Errors
    ///
    /// [`ReceiverError::Serve`] if the server fails, [`ReceiverError::Output`]
    /// if the final flush fails.
    pub async fn serve<F>(&self, listener: TcpListener, shutdown: F) -> Result<(), ReceiverError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let housekeeping = tokio::spawn(housekeeping(Arc::clone(&self.shared), stop.clone()));
        let stopping = stop.clone();
        let trigger = tokio::spawn(async move {
            shutdown.await;
            stopping.cancel();
        });
        let served = server::serve(listener, self.router(), self.shared.limits, stop.clone()).await;
        trigger.abort();
        stop.cancel();
        let _ = housekeeping.await;
        let flushed = self.flush();
        served.map_err(ReceiverError::Serve)?;
        flushed
    }

    /// Writes buffered lines to the output file.
    ///
    /// # Errors
    ///
    /// [`ReceiverError::Output`] if the write fails.
    pub fn flush(&self) -> Result<(), ReceiverError> {
        self.shared
            .log
            .flush()
            .map_err(|source| ReceiverError::Output {
                path: self.shared.output.clone(),
                source,
            })
    }

    /// How many alerts were accepted (written) since start.
    pub fn accepted(&self) -> u64 {
        self.shared.log.accepted()
    }

    /// How many repeats of an already recorded `webhook-id` were dropped.
    pub fn duplicates(&self) -> u64 {
        self.shared.log.duplicates()
    }

    /// How many `webhook-id`s are remembered for dedupe now (those recorded
    /// within the window, until the next sweep).
    pub fn remembered_ids(&self) -> usize {
        self.shared.log.remembered()
    }
}

/// Where the ids recorded for dedupe are logged: `<output>.ids`.
fn id_log_path(output: &std::path::Path) -> PathBuf {
    let mut path = output.as_os_str().to_owned();
    path.push(".ids");
    PathBuf::from(path)
}

/// Flushes on the policy's interval, forgets expired ids and sweeps idle
/// limiter buckets, until `stop`.
async fn housekeeping(shared: Arc<Shared>, stop: CancellationToken) {
    let flush_every = match shared.flush {
        FlushPolicy::Interval(every) => every,
        // Nothing to flush on a timer; tick rarely.
        FlushPolicy::EveryWrite => LIMITER_SWEEP,
    };
    // The first ticks come one period from now: there is nothing to do yet.
    let start = tokio::time::Instant::now();
    let mut flush = tokio::time::interval_at(start + flush_every, flush_every);
    let mut sweep = tokio::time::interval_at(start + LIMITER_SWEEP, LIMITER_SWEEP);
    let mut expire = tokio::time::interval_at(start + shared.sweep, shared.sweep);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = flush.tick() => {
                if let Err(e) = shared.log.flush() {
                    tracing::error!(error = %e, path = %shared.output.display(), "cannot flush alerts");
                }
            }
            _ = expire.tick() => {
                if let Err(e) = shared.log.expire(wds_core::backend::now_ms()) {
                    tracing::error!(error = %e, path = %shared.output.display(), "cannot compact the id log");
                }
            }
            _ = sweep.tick() => {
                if let Some(limiter) = &shared.limiter {
                    limiter.forget_idle();
                }
            }
        }
    }
}

/// Builds a [`Receiver`] from `config` and serves it on `listener` until
/// `shutdown` completes; see [`Receiver::serve`]. Use [`Receiver::new`] and
/// [`Receiver::serve`] to keep a handle for the counters.
///
/// # Errors
///
/// As [`Receiver::new`] and [`Receiver::serve`].
pub async fn serve<F>(
    listener: TcpListener,
    config: ReceiverConfig,
    shutdown: F,
) -> Result<(), ReceiverError>
where
    F: Future<Output = ()> + Send + 'static,
{
    Receiver::new(config)?.serve(listener, shutdown).await
}
