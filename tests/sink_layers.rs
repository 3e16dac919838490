//! The sink wrappers of `wds_core::layer` (`SinkExt::inspect`, `traced`,
//! `instrument`, `layer` with a `Layer` of one's own, and `Router`), each
//! run by a real `Engine` on the memory backend: what a wrapper sees and
//! does must match what the engine did, and a failure's classification must
//! come through it unchanged (a retryable failure retried and then
//! delivered, a permanent one dead-lettered at once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use wds_core::layer::{layer_fn, Router};
use wds_core::{
    async_trait, Delivered, Engine, EngineConfig, Input, JobReport, Layer, Message, MessageId,
    Sink, SinkError, SinkExt,
};
use wds_harness::{users_csv, ScriptedSink, Step};
use wds_memory::MemoryBackend;

/// Lines of the files the tests run.
const LINES: usize = 200;
/// How long a successful call of the scripted sink takes.
const CALL: Duration = Duration::from_millis(2);

/// Retries that happen within a test's time.
fn config() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.batch_size = 20;
    c.concurrency = 16;
    c.idle_poll = Duration::from_millis(10);
    c.retry.max_attempts = 3;
    c.retry.base_delay = Duration::from_millis(5);
    c.retry.max_delay = Duration::from_millis(20);
    c
}

/// Runs `bytes` as one file through an engine delivering to `sink`.
async fn run(sink: impl Sink, name: &str, bytes: Vec<u8>) -> JobReport {
    let engine = Engine::builder()
        .backend(MemoryBackend::new())
        .sink(sink)
        .config(config())
        .build()
        .expect("engine");
    let input = Input::from_bytes(name, bytes);
    tokio::time::timeout(Duration::from_secs(60), engine.run_once(&input))
        .await
        .expect("the job finishes")
        .expect("the job runs")
}

/// The number in `user-<n>`.
fn user_number(m: &Message) -> usize {
    m.user_id
        .trim_start_matches("user-")
        .parse()
        .expect("a user-<n> id")
}

/// Every 10th user is refused for good, every 10th + 1 fails once and is
/// delivered on its second attempt, the others are delivered at once.
fn mixed(m: &Message, attempt: u32) -> Step {
    match user_number(m) % 10 {
        0 => Step::Permanent,
        1 if attempt == 1 => Step::Fail,
        _ => Step::Ok(CALL),
    }
}

/// Users of `LINES` refused for good, and failing once, by [`mixed`].
fn mixed_counts() -> (usize, usize) {
    let permanent = (1..=LINES).filter(|i| i % 10 == 0).count();
    let failing_once = (1..=LINES).filter(|i| i % 10 == 1).count();
    (permanent, failing_once)
}

/// Checks the report of a run of [`mixed`]: the wrappers passed each
/// classification through.
fn assert_mixed_report(report: &JobReport) {
    let (permanent, _) = mixed_counts();
    assert_eq!(report.lines, LINES as u64, "{report:?}");
    assert_eq!(report.delivered, (LINES - permanent) as u64, "{report:?}");
    assert_eq!(report.permanent, permanent as u64, "{report:?}");
    assert_eq!(report.exhausted, 0, "{report:?}");
}

/// How a call went, by the names `SinkExt::instrument` records.
fn outcome(result: &Result<Delivered, SinkError>) -> &'static str {
    result
        .as_ref()
        .map_or_else(SinkError::kind, |_| "delivered")
}

/// What an `inspect` function was given for one call.
type Look = (MessageId, &'static str, Duration);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_sees_every_call_with_its_result_and_duration() {
    let scripted = ScriptedSink::new(mixed);
    let seen: Arc<Mutex<Vec<Look>>> = Arc::default();
    let sink = scripted.clone().inspect({
        let seen = Arc::clone(&seen);
        move |m, result, took| {
            seen.lock()
                .unwrap()
                .push((m.id.clone(), outcome(result), took))
        }
    });
    let report = run(sink, "inspect.csv", users_csv(LINES)).await;
    assert_mixed_report(&report);

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), scripted.call_count(), "one look per call");
    let count = |what: &str| seen.iter().filter(|(_, o, _)| *o == what).count();
    let (permanent, failing_once) = mixed_counts();
    assert_eq!(count("delivered"), LINES - permanent);
    assert_eq!(count("permanent"), permanent);
    assert_eq!(count("retryable"), failing_once);
    for (id, what, took) in seen.iter() {
        if *what == "delivered" {
            assert!(*took >= CALL, "{id}: a call of {CALL:?} measured {took:?}");
        }
    }
}

/// Spans as a subscriber saw them: name and fields, once closed.
#[derive(Clone, Default)]
struct Spans {
    open: Arc<Mutex<HashMap<u64, SpanSeen>>>,
    closed: Arc<Mutex<Vec<SpanSeen>>>,
}

#[derive(Clone, Debug, Default)]
struct SpanSeen {
    name: &'static str,
    fields: HashMap<&'static str, String>,
}

impl tracing::field::Visit for SpanSeen {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.fields.insert(field.name(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.fields.insert(field.name(), value.to_owned());
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut seen = SpanSeen {
            name: attrs.metadata().name(),
            ..SpanSeen::default()
        };
        attrs.record(&mut seen);
        self.open.lock().unwrap().insert(id.into_u64(), seen);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some(seen) = self.open.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(seen);
        }
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        // Ids are reused once a span closes: keep the closed ones apart.
        if let Some(seen) = self.open.lock().unwrap().remove(&id.into_u64()) {
            self.closed.lock().unwrap().push(seen);
        }
    }
}

impl Spans {
    /// Installs the recorder for this thread (a current-thread runtime runs
    /// the engine's tasks on it too).
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(tracing_subscriber::registry().with(self.clone()))
    }

    fn closed(&self, name: &str) -> Vec<SpanSeen> {
        let closed = self.closed.lock().unwrap();
        closed.iter().filter(|s| s.name == name).cloned().collect()
    }
}

/// Runs a file of [`mixed`] through `wrap(sink)` with a [`Spans`] recorder
/// installed for the run, and checks the report. Returns the recorder, the
/// name of the span each call of the scripted sink ran in, and that sink.
async fn run_recording_spans<S: Sink>(
    name: &str,
    wrap: impl FnOnce(Arc<ScriptedSink>) -> S,
) -> (Spans, Vec<Option<&'static str>>, Arc<ScriptedSink>) {
    let spans = Spans::default();
    let _guard = spans.install();
    let current: Arc<Mutex<Vec<Option<&'static str>>>> = Arc::default();
    let scripted = ScriptedSink::new({
        let current = Arc::clone(&current);
        move |m, attempt| {
            let span = tracing::Span::current();
            current
                .lock()
                .unwrap()
                .push(span.metadata().map(|m| m.name()));
            mixed(m, attempt)
        }
    });
    let report = run(wrap(scripted.clone()), name, users_csv(LINES)).await;
    assert_mixed_report(&report);
    let current = current.lock().unwrap().clone();
    (spans, current, scripted)
}

#[tokio::test(flavor = "current_thread")]
async fn traced_runs_every_call_in_a_deliver_span_with_its_outcome() {
    let (spans, current, scripted) = run_recording_spans("traced.csv", |s| s.traced()).await;
    assert_eq!(current.len(), scripted.call_count());
    assert!(
        current.iter().all(|name| *name == Some("deliver")),
        "every call must run inside its span: {:?}",
        current.iter().find(|name| **name != Some("deliver"))
    );
    let deliver = spans.closed("deliver");
    assert_eq!(deliver.len(), scripted.call_count(), "one span per call");
    let count = |what: &str| {
        deliver
            .iter()
            .filter(|s| s.fields.get("outcome").map(String::as_str) == Some(what))
            .count()
    };
    let (permanent, failing_once) = mixed_counts();
    assert_eq!(count("delivered"), LINES - permanent);
    assert_eq!(count("permanent"), permanent);
    assert_eq!(count("retryable"), failing_once);
    // The message id and the attempt are on the span.
    let calls = scripted.calls_per_id();
    for (id, n) in calls {
        let ids = id.to_string();
        let spans_of: Vec<&SpanSeen> = deliver
            .iter()
            .filter(|s| s.fields.get("message") == Some(&ids))
            .collect();
        assert_eq!(spans_of.len(), n as usize, "{id}");
        let mut attempts: Vec<&str> = spans_of
            .iter()
            .map(|s| s.fields["attempt"].as_str())
            .collect();
        attempts.sort_unstable();
        let expected: Vec<String> = (1..=n).map(|a| a.to_string()).collect();
        assert_eq!(attempts, expected, "{id}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn instrument_runs_every_call_in_the_span_made_for_its_message() {
    let (spans, current, scripted) = run_recording_spans("instrument.csv", |s| {
        s.instrument(|m| {
            tracing::info_span!("sms", line = m.id.line, outcome = tracing::field::Empty)
        })
    })
    .await;
    assert!(current.iter().all(|n| *n == Some("sms")), "{current:?}");
    let sms = spans.closed("sms");
    assert_eq!(sms.len(), scripted.call_count());
    // Each line has a span (line 1 is user-1), and each span an outcome.
    let mut lines: Vec<u64> = sms
        .iter()
        .map(|s| s.fields["line"].parse().unwrap())
        .collect();
    lines.sort_unstable();
    lines.dedup();
    assert_eq!(lines, (1..=LINES as u64).collect::<Vec<_>>());
    assert!(sms.iter().all(|s| s.fields.contains_key("outcome")));
}

/// A layer that notes, per message, the order in which its wrappers were
/// entered.
#[derive(Clone, Debug)]
struct Tag {
    name: &'static str,
    log: Arc<Mutex<HashMap<MessageId, Vec<&'static str>>>>,
}

#[derive(Debug)]
struct Tagged<S> {
    inner: S,
    tag: Tag,
}

impl<S: Sink> Layer<S> for Tag {
    type Sink = Tagged<S>;

    fn layer(&self, inner: S) -> Tagged<S> {
        Tagged {
            inner,
            tag: self.clone(),
        }
    }
}

#[async_trait]
impl<S: Sink> Sink for Tagged<S> {
    async fn deliver(&self, m: &Message) -> Result<Delivered, SinkError> {
        self.tag
            .log
            .lock()
            .unwrap()
            .entry(m.id.clone())
            .or_default()
            .push(self.tag.name);
        self.inner.deliver(m).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_wrap_in_order_and_pass_results_through() {
    for pair in [false, true] {
        let log = Arc::default();
        let tag = |name| Tag {
            name,
            log: Arc::clone(&log),
        };
        let scripted = ScriptedSink::new(mixed);
        let report = if pair {
            run(
                scripted.clone().layer((tag("inner"), tag("outer"))),
                "pair.csv",
                users_csv(LINES),
            )
            .await
        } else {
            run(
                scripted.clone().layer(tag("inner")).layer(tag("outer")),
                "chain.csv",
                users_csv(LINES),
            )
            .await
        };
        assert_mixed_report(&report);
        let log = log.lock().unwrap();
        let calls = scripted.calls_per_id();
        assert_eq!(log.len(), calls.len());
        for (id, names) in log.iter() {
            let n = calls[id] as usize;
            let expected: Vec<&str> = ["outer", "inner"].repeat(n);
            assert_eq!(names, &expected, "pair {pair}, {id}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_fn_makes_a_layer_of_a_function() {
    let scripted = ScriptedSink::new(mixed);
    let looks = Arc::new(Mutex::new(0usize));
    let sink = scripted.clone().layer(layer_fn({
        let looks = Arc::clone(&looks);
        move |inner: Arc<ScriptedSink>| {
            let looks = Arc::clone(&looks);
            inner.inspect(move |_, _, _| *looks.lock().unwrap() += 1)
        }
    }));
    let report = run(sink, "layer-fn.csv", users_csv(LINES)).await;
    assert_mixed_report(&report);
    assert_eq!(*looks.lock().unwrap(), scripted.call_count());
}

/// The channel of line `line` of [`channels_csv`] (line 1 is the header).
fn channel_of(line: u64) -> &'static str {
    ["sms", "mail", "pigeon", ""][(line % 4) as usize]
}

/// A CSV file with a header and a `channel` column.
fn channels_csv() -> Vec<u8> {
    let mut s = String::from("userId,alertMessage,channel\n");
    for i in 1..=LINES {
        let line = i as u64 + 1;
        s.push_str(&format!("user-{i},alert {i},{}\n", channel_of(line)));
    }
    s.into_bytes()
}

/// The lines `sink` was called for.
fn lines_of(sink: &ScriptedSink) -> Vec<u64> {
    let mut lines: Vec<u64> = sink.calls_per_id().keys().map(|id| id.line).collect();
    lines.sort_unstable();
    lines
}

/// The lines of [`channels_csv`] whose channel is one of `channels`.
fn lines_with(channels: &[&str]) -> Vec<u64> {
    (2..=LINES as u64 + 1)
        .filter(|line| channels.contains(&channel_of(*line)))
        .collect()
}

fn channel(m: &Message) -> Option<&str> {
    m.attributes.get("channel")?.as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_sends_each_message_to_the_sink_of_its_key() {
    let sms = ScriptedSink::ok(Duration::ZERO);
    let mail = ScriptedSink::ok(Duration::ZERO);
    let other = ScriptedSink::ok(Duration::ZERO);
    let router = Router::new(channel)
        .route("sms", sms.clone())
        .route("mail", mail.clone())
        .fallback(other.clone());
    let report = run(router, "routed.csv", channels_csv()).await;
    assert_eq!(report.delivered, LINES as u64, "{report:?}");
    assert_eq!(lines_of(&sms), lines_with(&["sms"]));
    assert_eq!(lines_of(&mail), lines_with(&["mail"]));
    assert_eq!(lines_of(&other), lines_with(&["pigeon", ""]));

    // Without a fallback, a message of no route is refused for good, and
    // the routed sinks' own failures come through as they are.
    let sms = ScriptedSink::ok(Duration::ZERO);
    let mail = ScriptedSink::new(|_, attempt| match attempt {
        1 => Step::Fail,
        _ => Step::Permanent,
    });
    let router = Router::new(channel)
        .route("sms", sms.clone())
        .route("mail", mail.clone());
    let report = run(router, "unrouted.csv", channels_csv()).await;
    let unrouted = lines_with(&["pigeon", ""]).len() as u64;
    let mails = lines_with(&["mail"]);
    assert_eq!(report.delivered, lines_with(&["sms"]).len() as u64);
    assert_eq!(
        report.permanent,
        unrouted + mails.len() as u64,
        "{report:?}"
    );
    assert_eq!(lines_of(&sms), lines_with(&["sms"]));
    assert_eq!(lines_of(&mail), mails);
    assert!(
        mail.calls_per_id().values().all(|n| *n == 2),
        "retried once"
    );
}
