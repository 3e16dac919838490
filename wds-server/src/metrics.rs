//! Prometheus metrics: a [`Metered`] sink wrapper that counts every call, and
//! the registry the control API's `GET /metrics` renders.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use wds_core::backend::CircuitState;
use wds_core::{backend::QueueStats, Delivered, JobReport, JobState, Message, Sink, SinkError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// Delivery metrics of one process, rendered in the Prometheus text format.
///
/// - `wds_deliveries_total{outcome}`: sink calls by outcome (`delivered`,
///   `retryable`, `rate_limited`, `permanent`);
/// - `wds_delivery_latency_seconds`: latency of sink calls (histogram);
/// - `wds_retries_total`: calls that failed in a way the engine retries;
/// - `wds_rate_limited_total`: 429 answers;
/// - `wds_queue_messages{state}`: ready, leased, scheduled and dead messages;
/// - `wds_jobs{state}`: jobs reading, delivering, done, failed, paused and cancelled;
/// - `wds_circuit_open{endpoint}`: 1 while the endpoint's circuit breaker
///   holds deliveries, else 0, and `wds_circuit_open_since_seconds{endpoint}`
///   (Unix time it opened; 0 when closed), once a circuit is known
///   ([`Metrics::circuit`]);
/// - `wds_concurrency_limit`: a worker's calls in flight limit, fixed or
///   adapted ([`Metrics::concurrency_limit`]; 0 where nothing delivers);
/// - `wds_calls_in_flight`: sink calls on the wire now;
/// - `wds_workers{state}`: the workers seen, `live` and `gone`, on the
///   control API's `/metrics` when it has a worker registry
///   ([`Metrics::workers`]).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    delivered: Counter,
    retryable: Counter,
    rate_limited_calls: Counter,
    permanent: Counter,
    latency: Histogram,
    retries: Counter,
    rate_limited: Counter,
    queue: Family<StateLabel, Gauge>,
    jobs: Family<StateLabel, Gauge>,
    circuit_open: Family<EndpointLabel, Gauge>,
    circuit_since: Family<EndpointLabel, Gauge>,
    concurrency_limit: Gauge,
    in_flight: Gauge,
    workers: Family<StateLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics in its own registry.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let deliveries = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "wds_deliveries",
            "Sink calls by outcome",
            deliveries.clone(),
        );
        let outcome = |o| {
            deliveries
                .get_or_create(&OutcomeLabel { outcome: o })
                .clone()
        };
        let latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "wds_delivery_latency_seconds",
            "Latency of sink calls",
            latency.clone(),
        );
        let retries = Counter::default();
        registry.register(
            "wds_retries",
            "Sink calls that failed in a way the engine retries",
            retries.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "wds_rate_limited",
            "Sink calls answered 429",
            rate_limited.clone(),
        );
        let queue = Family::<StateLabel, Gauge>::default();
        registry.register(
            "wds_queue_messages",
            "Messages in the queue by state",
            queue.clone(),
        );
        let jobs = Family::<StateLabel, Gauge>::default();
        registry.register("wds_jobs", "Jobs by state", jobs.clone());
        let circuit_open = Family::<EndpointLabel, Gauge>::default();
        registry.register(
            "wds_circuit_open",
            "1 while the endpoint's circuit breaker holds deliveries",
            circuit_open.clone(),
        );
        let circuit_since = Family::<EndpointLabel, Gauge>::default();
        registry.register(
            "wds_circuit_open_since_seconds",
            "Unix time the endpoint's circuit opened (0 when closed)",
            circuit_since.clone(),
        );
        let concurrency_limit = Gauge::default();
        registry.register(
            "wds_concurrency_limit",
            "Webhook calls this worker may have in flight now (adapted with --concurrency auto)",
            concurrency_limit.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "wds_calls_in_flight",
            "Webhook calls on the wire now",
            in_flight.clone(),
        );
        let workers = Family::<StateLabel, Gauge>::default();
        registry.register(
            "wds_workers",
            "Workers seen, live (beat within three intervals) or gone",
            workers.clone(),
        );
        Metrics {
            concurrency_limit,
            in_flight,
            workers,
            delivered: outcome("delivered"),
            retryable: outcome("retryable"),
            rate_limited_calls: outcome("rate_limited"),
            permanent: outcome("permanent"),
            registry,
            latency,
            retries,
            rate_limited,
            queue,
            jobs,
            circuit_open,
            circuit_since,
        }
    }

    /// Records one sink call.
    pub fn observe(&self, result: &Result<Delivered, SinkError>, seconds: f64) {
        self.latency.observe(seconds);
        match result {
            Ok(_) => {
                self.delivered.inc();
            }
            Err(SinkError::RateLimited { .. }) => {
                self.rate_limited_calls.inc();
                self.rate_limited.inc();
                self.retries.inc();
            }
            Err(SinkError::Permanent { .. }) => {
                self.permanent.inc();
            }
            Err(_) => {
                self.retryable.inc();
                self.retries.inc();
            }
        }
    }

    /// Shows the circuit of `endpoint` (set it before rendering).
    pub fn circuit(&self, endpoint: &str, state: &CircuitState) {
        let label = EndpointLabel {
            endpoint: endpoint.to_owned(),
        };
        self.circuit_open
            .get_or_create(&label)
            .set(i64::from(state.is_open()));
        let since = state.open_since_ms().map_or(0, |ms| ms / 1_000);
        self.circuit_since
            .get_or_create(&label)
            .set(i64::try_from(since).unwrap_or(i64::MAX));
    }

    /// Shows the calls in flight a worker may have now (set it before rendering).
    pub fn concurrency_limit(&self, limit: usize) {
        self.concurrency_limit
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    /// Shows how many workers are live and how many gone (set it before rendering).
    pub fn workers(&self, live: usize, gone: usize) {
        for (state, n) in [("live", live), ("gone", gone)] {
            self.workers
                .get_or_create(&StateLabel { state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Sink calls that delivered, so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.get()
    }

    /// Sink calls that failed, so far, 429s aside (retryable or permanent).
    pub fn failed(&self) -> u64 {
        self.retryable.get() + self.permanent.get()
    }

    /// Sink calls answered 429, so far.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.get()
    }

    /// Sink calls on the wire now.
    pub fn in_flight(&self) -> u64 {
        u64::try_from(self.in_flight.get()).unwrap_or(0)
    }

    /// Renders the metrics, with the queue and job gauges set from `stats`
    /// and `reports` (read by the caller just before).
    pub fn render(&self, stats: Option<&QueueStats>, reports: &[JobReport]) -> String {
        if let Some(s) = stats {
            let set = |state, v: u64| {
                self.queue
                    .get_or_create(&StateLabel { state })
                    .set(i64::try_from(v).unwrap_or(i64::MAX));
            };
            set("ready", s.ready);
            set("leased", s.leased);
            set("scheduled", s.scheduled);
            set("dead", s.dead);
        }
        for (state, name) in [
            (JobState::Reading, "reading"),
            (JobState::Delivering, "delivering"),
            (JobState::Done, "done"),
            (JobState::Failed, "failed"),
            (JobState::Paused, "paused"),
            (JobState::Cancelled, "cancelled"),
        ] {
            let n = reports.iter().filter(|r| r.state == state).count();
            self.jobs
                .get_or_create(&StateLabel { state: name })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Wraps a sink so that every call is counted here.
    pub fn wrap<S: Sink>(self: &Arc<Self>, sink: S) -> Metered<S> {
        Metered::new(sink, self.clone())
    }
}

/// A [`Sink`] that records every call of the sink it wraps in [`Metrics`].
#[derive(Debug)]
pub struct Metered<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S: Sink> Metered<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, metrics: Arc<Metrics>) -> Self {
        Metered { inner, metrics }
    }

    /// The wrapped sink.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the sink.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

#[async_trait]
impl<S: Sink> Sink for Metered<S> {
    async fn deliver(&self, message: &Message) -> Result<Delivered, SinkError> {
        let start = Instant::now();
        // Counted out on drop too: a call given up mid-way is no longer on the wire.
        let _on_the_wire = InFlight::enter(&self.metrics.in_flight);
        let result = self.inner.deliver(message).await;
        self.metrics.observe(&result, start.elapsed().as_secs_f64());
        result
    }
}

/// One call on the wire, counted in a gauge while it lives.
struct InFlight<'a>(&'a Gauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a Gauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_by_outcome() {
        let m = Metrics::new();
        m.observe(&Ok(Delivered::with_status(200)), 0.01);
        m.observe(&Ok(Delivered::with_status(200)), 0.02);
        m.observe(&Err(SinkError::rate_limited(None)), 0.01);
        m.observe(&Err(SinkError::permanent("gone")), 0.01);
        let stats = QueueStats {
            ready: 5,
            leased: 1,
            scheduled: 2,
            dead: 3,
        };
        let text = m.render(Some(&stats), &[]);
        assert!(
            text.contains("wds_deliveries_total{outcome=\"delivered\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("wds_deliveries_total{outcome=\"permanent\"} 1"),
            "{text}"
        );
        assert!(text.contains("wds_rate_limited_total 1"), "{text}");
        assert!(text.contains("wds_retries_total 1"), "{text}");
        assert!(
            text.contains("wds_queue_messages{state=\"ready\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("wds_delivery_latency_seconds_count 4"),
            "{text}"
        );
        assert_eq!((m.delivered(), m.failed(), m.rate_limited()), (2, 1, 1));
        m.workers(2, 1);
        let text = m.render(None, &[]);
        assert!(text.contains("wds_workers{state=\"live\"} 2"), "{text}");
        assert!(text.contains("wds_workers{state=\"gone\"} 1"), "{text}");
    }

    /// Answers once told to, so a test can look at a call on the wire.
    #[derive(Debug)]
    struct Gate(tokio::sync::Notify);

    #[async_trait]
    impl Sink for Gate {
        async fn deliver(&self, _: &Message) -> Result<Delivered, SinkError> {
            self.0.notified().await;
            Ok(Delivered::with_status(200))
        }
    }

    #[tokio::test]
    async fn counts_calls_on_the_wire_until_they_end_or_are_dropped() {
        let metrics = Arc::new(Metrics::new());
        let sink = Arc::new(metrics.wrap(Gate(tokio::sync::Notify::new())));
        let message = Message::new(
            &wds_core::JobId::new("j"),
            wds_core::parse::Record::new(1, "u", "m"),
        );
        let call = tokio::spawn({
            let (sink, message) = (sink.clone(), message.clone());
            async move { sink.deliver(&message).await }
        });
        while metrics.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(metrics.in_flight(), 1);
        sink.get_ref().0.notify_one();
        call.await.unwrap().unwrap();
        assert_eq!(metrics.in_flight(), 0, "a call that ended is off the wire");
        let dropped = tokio::spawn({
            let sink = sink.clone();
            async move { sink.deliver(&message).await }
        });
        while metrics.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        dropped.abort();
        let _ = dropped.await;
        assert_eq!(metrics.in_flight(), 0, "a call given up is off the wire");
    }
}
