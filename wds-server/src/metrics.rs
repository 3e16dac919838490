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
use wds_core::health::CircuitState;
use wds_core::{Delivered, JobReport, JobState, Message, QueueStats, Sink, SinkError};

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
///   adapted ([`Metrics::concurrency_limit`]; 0 where nothing delivers).
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
        Metrics {
            concurrency_limit,
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

    /// Sink calls that delivered, so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.get()
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
        let result = self.inner.deliver(message).await;
        self.metrics.observe(&result, start.elapsed().as_secs_f64());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_by_outcome() {
        let m = Metrics::new();
        m.observe(&Ok(Delivered { status: Some(200) }), 0.01);
        m.observe(&Ok(Delivered { status: Some(200) }), 0.02);
        m.observe(&Err(SinkError::RateLimited { retry_after: None }), 0.01);
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
    }
}
