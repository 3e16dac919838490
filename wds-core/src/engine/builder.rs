//! [`Engine`] and its builder.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::backoff;
use super::batcher::Batcher;
use super::config::{DeliveryMode, EngineConfig};
use super::deliverer::Deliverer;

use crate::backend::CircuitStore;
use crate::backend::{Backend, OffsetStore, Queue};
use crate::error::{Error, Result};
use crate::health::CircuitBreaker;
use crate::limiter::{Limiter, LocalLimiter};
use crate::model::{JobId, JobReport, JobState};
use crate::sink::Sink;
use crate::source::input::{Input, Source};

/// A configured engine: one backend, one sink, one limiter.
///
/// ```
/// # async fn demo(backend: impl wds_core::backend::Backend) -> wds_core::Result<()> {
/// use std::sync::Arc;
/// use wds_core::{Delivered, Engine, Input, Message, Sink, SinkError};
///
/// #[derive(Debug)]
/// struct Print;
/// #[wds_core::async_trait]
/// impl Sink for Print {
///     async fn deliver(&self, m: &Message) -> Result<Delivered, SinkError> {
///         println!("{} <- {}", m.user_id, m.alert_message);
///         Ok(Delivered::default())
///     }
/// }
///
/// let engine = Engine::builder().backend(backend).sink(Print).build()?;
/// let input = Input::from_bytes("users.csv", b"u1,hello\nu2,hello\n".to_vec());
/// let report = engine.run_once(&input).await?;
/// assert_eq!(report.delivered, 2);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Engine {
    queue: Arc<dyn Queue>,
    offsets: Arc<dyn OffsetStore>,
    sink: Arc<dyn Sink>,
    limiter: Arc<dyn Limiter>,
    /// The endpoint's circuit breaker, shared by every deliverer made here.
    breaker: Option<Arc<CircuitBreaker>>,
    config: EngineConfig,
}

/// Builds an [`Engine`].
///
/// # Order
///
/// [`config`](EngineBuilder::config) replaces every setting, so call it before
/// the setters that change one setting ([`concurrency`](EngineBuilder::concurrency),
/// [`mode`](EngineBuilder::mode)…), which otherwise get overwritten.
#[derive(Debug, Default)]
pub struct EngineBuilder {
    queue: Option<Arc<dyn Queue>>,
    offsets: Option<Arc<dyn OffsetStore>>,
    sink: Option<Arc<dyn Sink>>,
    limiter: Option<Arc<dyn Limiter>>,
    rate: Option<(u32, u32)>,
    circuit: Option<(Arc<dyn CircuitStore>, String)>,
    config: EngineConfig,
}

impl EngineBuilder {
    /// The backend: the one store that holds both the queue and the jobs'
    /// offsets (see [`Backend`] for why they come as one value). Required.
    pub fn backend<B: Backend>(mut self, backend: B) -> Self {
        self.queue = Some(Arc::new(backend.clone()));
        self.offsets = Some(Arc::new(backend));
        self
    }

    /// Where messages go.
    pub fn sink(mut self, sink: impl Sink) -> Self {
        self.sink = Some(Arc::new(sink));
        self
    }

    /// Where messages go, already shared.
    pub fn shared_sink(mut self, sink: Arc<dyn Sink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// A local rate limit of `rate` deliveries per second with bursts of
    /// `burst`. Ignored when [`limiter`](EngineBuilder::limiter) is set.
    pub fn rate_limit(mut self, rate: u32, burst: u32) -> Self {
        self.rate = Some((rate, burst));
        self
    }

    /// A limiter of your own (e.g. one shared by every worker through Redis).
    pub fn limiter(mut self, limiter: Arc<dyn Limiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// A circuit breaker for `endpoint`, its circuit shared through `store`
    /// by every worker using the same store and endpoint name (see
    /// [`crate::health`]); its settings are [`EngineConfig::circuit`].
    /// Without it, every call goes to the endpoint however it fares.
    pub fn circuit(mut self, store: Arc<dyn CircuitStore>, endpoint: impl Into<String>) -> Self {
        self.circuit = Some((store, endpoint.into()));
        self
    }

    /// Replaces every setting.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Sink calls in flight at once.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.config.concurrency = concurrency;
        self
    }

    /// Sink calls in flight adapted to the endpoint, up to `max` (see
    /// [`EngineConfig::adaptive_concurrency`]).
    pub fn adaptive_concurrency(mut self, max: usize) -> Self {
        self.config.concurrency = max;
        self.config.adaptive_concurrency = true;
        self
    }

    /// Messages per batch.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.config.batch_size = batch_size;
        self
    }

    /// At-most-once (default) or at-least-once.
    pub fn mode(mut self, mode: DeliveryMode) -> Self {
        self.config.mode = mode;
        self
    }

    /// Checks the settings and builds the engine.
    pub fn build(self) -> Result<Engine> {
        self.config.validate()?;
        let missing =
            |what: &'static str| Error::config(what, format!("not set; the engine needs a {what}"));
        let limiter: Arc<dyn Limiter> = match (self.limiter, self.rate) {
            (Some(l), _) => l,
            (None, Some((rate, burst))) => Arc::new(LocalLimiter::per_second(rate, burst)?),
            (None, None) => Arc::new(LocalLimiter::unlimited()),
        };
        let breaker = match self.circuit {
            Some((store, endpoint)) if self.config.circuit.enabled => Some(Arc::new(
                CircuitBreaker::new(store, endpoint, self.config.circuit)?
                    // A probe claim outlives the probe's call.
                    .probe_hold(self.config.delivery_timeout + Duration::from_secs(2)),
            )),
            _ => None,
        };
        Ok(Engine {
            queue: self.queue.ok_or_else(|| missing("backend"))?,
            offsets: self.offsets.ok_or_else(|| missing("backend"))?,
            sink: self.sink.ok_or_else(|| missing("sink"))?,
            limiter,
            breaker,
            config: self.config,
        })
    }
}

impl Engine {
    /// Starts building an engine.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The queue.
    pub fn queue(&self) -> &Arc<dyn Queue> {
        &self.queue
    }

    /// The offset store.
    pub fn offsets(&self) -> &Arc<dyn OffsetStore> {
        &self.offsets
    }

    /// The job's progress and its G2 counts, or `None` for a job this
    /// engine's backend never claimed.
    ///
    /// # Errors
    ///
    /// A backend failure ([`Error::Unavailable`] when it is transient).
    pub async fn report(&self, job: &JobId) -> Result<Option<JobReport>> {
        self.offsets.report(job).await
    }

    /// The limiter every deliverer made here shares.
    pub fn limiter(&self) -> &Arc<dyn Limiter> {
        &self.limiter
    }

    /// The endpoint's circuit breaker, when the engine has one.
    pub fn circuit(&self) -> Option<&Arc<CircuitBreaker>> {
        self.breaker.as_ref()
    }

    /// A batcher over this engine's backend.
    pub fn batcher(&self) -> Batcher {
        Batcher::over(
            self.queue.clone(),
            self.offsets.clone(),
            self.config.clone(),
        )
        .expect("config validated by the builder")
    }

    /// A deliverer over this engine's backend, sink and limiter.
    pub fn deliverer(&self) -> Deliverer {
        self.deliverer_with(self.sink.clone(), self.config.clone())
            .expect("config validated by the builder")
    }

    /// A deliverer over this engine's queue, limiter and circuit, with a
    /// sink and settings of its own (see [`crate::engine::DeliveryThreads`]).
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) when `config` is invalid.
    pub fn deliverer_with(&self, sink: Arc<dyn Sink>, config: EngineConfig) -> Result<Deliverer> {
        let deliverer = Deliverer::new(self.queue.clone(), sink, self.limiter.clone(), config)?;
        Ok(match &self.breaker {
            Some(breaker) => deliverer.with_circuit(breaker.clone()),
            None => deliverer,
        })
    }

    /// Reads one input into the queue and returns its job's report once it
    /// is completely read. Delivery happens in [`run`](Engine::run) or
    /// [`Deliverer::run`].
    pub async fn submit(&self, input: &Input) -> Result<JobReport> {
        self.batcher().run(input, &CancellationToken::new()).await
    }

    /// Reads one input and delivers it, returning when every line is in a
    /// terminal state. Handy for tests and one-shot tools.
    pub async fn run_once(&self, input: &Input) -> Result<JobReport> {
        let cancel = CancellationToken::new();
        let deliverer = self.deliverer();
        // Joined, not spawned: dropping this future stops everything it started.
        let (delivered, result) = tokio::join!(deliverer.run(cancel.clone()), async {
            let result = async {
                let read = self.submit(input).await?;
                self.wait_for(&read.job, None).await
            }
            .await;
            cancel.cancel();
            result
        });
        delivered?;
        result
    }

    /// Runs the whole pipeline until `cancel` fires: reads every input the
    /// source yields (up to `concurrent_jobs` at once) and delivers. Returns
    /// early only if the source fails.
    pub async fn run(&self, source: Arc<dyn Source>, cancel: CancellationToken) -> Result<()> {
        let deliverer = self.deliverer();
        let (delivered, read) = tokio::join!(deliverer.run(cancel.clone()), async {
            let read = self.read_source(source, cancel.clone()).await;
            // A failed source ends the run; one that merely ran out of inputs
            // leaves the deliverer working until `cancel` fires.
            if read.is_err() {
                cancel.cancel();
            }
            read
        });
        read.and(delivered)
    }

    /// Reads every input the source yields into the queue, until `cancel`
    /// fires or the source ends. No delivery (the initiator's half).
    pub async fn read_source(
        &self,
        source: Arc<dyn Source>,
        cancel: CancellationToken,
    ) -> Result<()> {
        let jobs = Arc::new(tokio::sync::Semaphore::new(self.config.concurrent_jobs));
        let mut tasks = JoinSet::new();
        let result = loop {
            while tasks.try_join_next().is_some() {}
            let next = tokio::select! {
                _ = cancel.cancelled() => break Ok(()),
                next = source.next() => next,
            };
            let input = match next {
                Ok(Some(input)) => input,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            let permit = tokio::select! {
                _ = cancel.cancelled() => break Ok(()),
                p = jobs.clone().acquire_owned() => p.map_err(|_| Error::Shutdown { what: "the engine's job slots" })?,
            };
            let batcher = self.batcher();
            let source = source.clone();
            let cancel = cancel.clone();
            tasks.spawn(async move {
                let _permit = permit;
                match batcher.run(&input, &cancel).await {
                    // Done, failed or delivering: the input is read.
                    Ok(report) if report.state != JobState::Reading => {
                        if let Err(e) = source.finished(&input, &report).await {
                            tracing::warn!(name = %input.name, error = %e, "source could not finish input");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(name = %input.name, error = %e, "reading input failed"),
                }
            });
        };
        while tasks.join_next().await.is_some() {}
        result
    }

    /// Waits until the job is finished (done or failed, every line read in
    /// a terminal state) and returns its report; `None` waits forever.
    pub async fn wait_for(&self, job: &JobId, timeout: Option<Duration>) -> Result<JobReport> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let never = CancellationToken::new();
        let mut pause = Duration::from_millis(2);
        loop {
            let offsets = &self.offsets;
            let report = backoff::with_backoff("report", &never, || offsets.report(job))
                .await?
                .ok_or_else(|| Error::UnknownJob { job: job.clone() })?;
            if report.is_finished() {
                return Ok(report);
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Ok(report);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}
