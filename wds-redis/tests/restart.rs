//! Redis stopped and restarted (with the append-only file on) in the middle
//! of a job driven by the real engine: the job still finishes, every line is
//! accounted for (G2) and no message reaches the sink twice (G1).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use wds_core::{Delivered, Engine, Format, Input, JobState, Message, MessageId, Sink, SinkError};
use wds_redis::{RedisBackend, RedisServer};

/// Counts the calls per message id, taking a little time per call so the job
/// lasts long enough to be interrupted.
#[derive(Debug, Default)]
struct Counting {
    calls: Mutex<HashMap<MessageId, u32>>,
}

#[async_trait]
impl Sink for Counting {
    async fn deliver(&self, message: &Message) -> Result<Delivered, SinkError> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        *self
            .calls
            .lock()
            .unwrap()
            .entry(message.id.clone())
            .or_default() += 1;
        Ok(Delivered::with_status(200))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_a_redis_restart() {
    let mut server = RedisServer::builder().append_only(true).start();
    let backend = RedisBackend::builder(server.url())
        .prefix("restart")
        // Fail fast while Redis is down; the engine retries with backoff.
        .command_timeout(Duration::from_millis(500))
        .connect()
        .await
        .expect("connect");
    let sink = Arc::new(Counting::default());
    let engine = Engine::builder()
        .backend(backend)
        .shared_sink(sink.clone())
        .concurrency(32)
        .build()
        .expect("engine");

    // 12,000 lines: 11,000 users, 500 repeats, 500 invalid lines.
    let mut csv = String::new();
    for i in 0..12_000u32 {
        match i % 24 {
            0 => csv.push_str(",missing user\n"),
            2 => csv.push_str(&format!("user-{},alert\n", i - 1)),
            _ => csv.push_str(&format!("user-{i},alert\n")),
        }
    }
    let input = Input::from_bytes("restart.csv", csv.into_bytes()).with_format(Format::Csv);

    let cancel = CancellationToken::new();
    let deliverer = engine.deliverer();
    let delivering = tokio::spawn({
        let cancel = cancel.clone();
        async move { deliverer.run(cancel).await }
    });
    let reading = tokio::spawn({
        let engine = engine.clone();
        let input = input.clone();
        async move {
            // A batcher whose push was applied but whose reply was lost sees
            // its retry as "already applied" and stops; a restarted
            // initiator submits the input again and resumes from the
            // checkpoint, as this loop does.
            loop {
                let report = engine.submit(&input).await.expect("submit");
                if report.state != JobState::Reading {
                    return report;
                }
            }
        }
    });

    // Interrupt the job once deliveries are under way.
    let start = Instant::now();
    while sink.calls.lock().unwrap().len() < 2_000 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "deliveries never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.stop();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let during = sink.calls.lock().unwrap().len();
    server.restart();

    // The reading loop resubmits until the input is read; a deadline keeps a
    // batcher that never gets there from hanging the test.
    let read = tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .expect("the input was not read within 60 s of the restart")
        .expect("reading task");
    let report = engine
        .wait_for(&read.job, Some(Duration::from_secs(60)))
        .await
        .expect("wait_for");
    cancel.cancel();
    delivering
        .await
        .expect("deliverer task")
        .expect("deliverer");

    eprintln!(
        "{during} of 11,000 sent while Redis was down; report: delivered {}, dead {} \
         (in doubt {}), invalid {}, duplicate {}",
        report.delivered, report.dead, report.in_doubt, report.invalid, report.duplicate
    );
    assert_eq!(report.state, JobState::Done, "the job finishes: {report:?}");
    assert_eq!(report.lines, 12_000);
    assert_eq!(
        report.delivered + report.dead + report.invalid + report.duplicate,
        report.lines,
        "every line accounted for: {report:?}"
    );
    assert_eq!((report.invalid, report.duplicate), (500, 500));
    let calls = sink.calls.lock().unwrap();
    assert!(
        calls.values().all(|n| *n == 1),
        "no message may reach the sink twice"
    );
    assert!(
        report.delivered as usize <= calls.len(),
        "every delivered message was sent"
    );
    assert!(
        calls.len() > during,
        "deliveries went on after the restart ({during} before, {} after)",
        calls.len()
    );
}
