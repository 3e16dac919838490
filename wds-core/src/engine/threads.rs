//! Delivery on threads of its own, one single-threaded runtime each
//! ("thread per core").
//!
//! On a multi-threaded runtime a call's request, response and connection
//! task hop between worker threads: every hop is a wake-up across cores
//! and memory that one core allocates and another frees. A deliverer that
//! owns a thread, its runtime and its HTTP client keeps all of that on one
//! core. The deliverers share the engine's queue, limiter and circuit; each
//! has its own sink and an equal share of the engine's concurrency, so the
//! calls in flight add up to the configured number.

use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::builder::Engine;
use super::config::EngineConfig;
use super::deliverer::Deliverer;
use crate::error::{Error, Result};
use crate::sink::Sink;

/// [`Deliverer`]s that each run on an OS thread of their own, with a
/// single-threaded tokio runtime and their own sink.
///
/// Each deliverer has its own sending window, so the messages a process
/// may leave in doubt when it dies are the sum of its threads' windows:
/// see [`EngineConfig::split`](crate::EngineConfig::split) and
/// [`EngineConfig::sending_batches`](crate::EngineConfig::sending_batches).
///
/// ```no_run
/// # #[derive(Debug)] struct MySink;
/// # impl MySink { fn connect() -> wds_core::Result<Self> { Ok(MySink) } }
/// # #[async_trait::async_trait] impl wds_core::Sink for MySink {
/// #     async fn deliver(&self, _: &wds_core::Message) -> Result<wds_core::Delivered, wds_core::SinkError> { Ok(wds_core::Delivered::with_status(200)) }
/// # }
/// # async fn demo(engine: wds_core::Engine) -> wds_core::Result<()> {
/// use std::sync::Arc;
/// use wds_core::engine::DeliveryThreads;
///
/// // One sink per thread: a client whose connections live on that thread.
/// let threads = DeliveryThreads::new(&engine, 2, |_| {
///     let sink: Arc<dyn wds_core::Sink> = Arc::new(MySink::connect()?);
///     Ok(sink)
/// })?;
/// threads.run(tokio_util::sync::CancellationToken::new()).await
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct DeliveryThreads {
    deliverers: Vec<Deliverer>,
}

/// The fewest calls in flight that [`DeliveryThreads::auto`] gives a
/// thread: below this, a thread's runtime and sending window cost more
/// than the cross-core hops they save.
pub const CALLS_PER_THREAD: usize = 32;

impl DeliveryThreads {
    /// The threads to use for `config` by default: one per core, but no
    /// fewer than [`CALLS_PER_THREAD`] calls each (every thread adds a
    /// sending window, so more threads means more messages in doubt when
    /// the process dies), and at least one.
    ///
    /// ```
    /// use wds_core::engine::DeliveryThreads;
    /// let mut config = wds_core::EngineConfig::default();
    /// config.concurrency = 16;
    /// assert_eq!(DeliveryThreads::auto(&config), 1);
    /// ```
    pub fn auto(config: &EngineConfig) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        cores.min(config.concurrency / CALLS_PER_THREAD).max(1)
    }

    /// `threads` deliverers over `engine`'s queue, limiter and circuit
    /// (at most one per call of the engine's concurrency), deliverer `i`
    /// with the sink `sink_for(i)` and an equal share of the concurrency.
    ///
    /// # Errors
    ///
    /// What `sink_for` returns; [`Error::Config`] for zero threads.
    pub fn new<F>(engine: &Engine, threads: usize, mut sink_for: F) -> Result<Self>
    where
        F: FnMut(usize) -> Result<Arc<dyn Sink>>,
    {
        if threads == 0 {
            return Err(Error::config("delivery threads", "must be at least 1"));
        }
        let deliverers = engine
            .config()
            .split(threads)
            .into_iter()
            .enumerate()
            .map(|(i, config)| engine.deliverer_with(sink_for(i)?, config))
            .collect::<Result<Vec<_>>>()?;
        Ok(DeliveryThreads { deliverers })
    }

    /// The deliverers, one per thread.
    pub fn deliverers(&self) -> &[Deliverer] {
        &self.deliverers
    }

    /// Sink calls the threads may have in flight now, together.
    pub fn concurrency_limit(&self) -> usize {
        self.deliverers
            .iter()
            .map(Deliverer::concurrency_limit)
            .sum()
    }

    /// Runs every deliverer on its thread until `cancel` fires, then
    /// shuts them down gracefully (see [`Deliverer::run`]) and returns once
    /// all have stopped. A deliverer that fails stops the others.
    ///
    /// Each thread keeps its runtime until every deliverer has stopped: a
    /// pooled backend connection opened on one thread may be in use on
    /// another, and lives as long as the runtime that drives it.
    ///
    /// # Errors
    ///
    /// The first error a deliverer returned; [`Error::Task`] when a thread
    /// could not start or panicked.
    pub async fn run(&self, cancel: CancellationToken) -> Result<()> {
        let stop = cancel.child_token();
        let all_stopped = CancellationToken::new();
        let mut stopped = FuturesUnordered::new();
        let mut first_error = None;
        for (i, deliverer) in self.deliverers.iter().enumerate() {
            let (done, finished) = oneshot::channel();
            let (deliverer, stopping, all_stopped) =
                (deliverer.clone(), stop.clone(), all_stopped.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("wds-deliver-{i}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            let _ = done.send(Err(task_error(e)));
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        let _ = done.send(deliverer.run(stopping).await);
                        all_stopped.cancelled().await;
                    });
                });
            match spawned {
                Ok(_) => stopped.push(finished),
                Err(e) => {
                    first_error = Some(task_error(e));
                    stop.cancel();
                    break;
                }
            }
        }
        while let Some(finished) = stopped.next().await {
            let result = finished
                .unwrap_or_else(|_| Err(task_error("a delivery thread panicked".to_string())));
            if let Err(e) = result {
                tracing::error!(error = %e, "a delivery thread failed; stopping the others");
                stop.cancel();
                first_error.get_or_insert(e);
            }
        }
        all_stopped.cancel();
        first_error.map_or(Ok(()), Err)
    }
}

fn task_error(source: impl Into<crate::error::BoxError>) -> Error {
    Error::Task {
        task: "delivery thread",
        source: source.into(),
    }
}
