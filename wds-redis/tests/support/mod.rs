//! What the Redis tests share: fresh backends, a counting sink, and a job
//! driven by the real engine while the test breaks Redis under it.

#![allow(dead_code)] // each test file uses its own part

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wds_core::{
    Delivered, Engine, Input, JobReport, JobState, Message, MessageId, Result, Sink, SinkError,
};
use wds_redis::RedisBackend;

/// A backend on `url` under a prefix no other check uses.
pub(crate) async fn fresh(url: &str, suite: &str) -> RedisBackend {
    connect_fresh(RedisBackend::builder(url), url, suite).await
}

/// As [`fresh`], its jobs spread over `shards` key shards.
pub(crate) async fn fresh_sharded(url: &str, suite: &str, shards: usize) -> RedisBackend {
    connect_fresh(RedisBackend::builder(url).shards(shards), url, suite).await
}

async fn connect_fresh(
    builder: wds_redis::RedisBackendBuilder,
    url: &str,
    suite: &str,
) -> RedisBackend {
    static N: AtomicU32 = AtomicU32::new(0);
    let prefix = format!("{suite}-{}", N.fetch_add(1, Ordering::Relaxed));
    match builder.prefix(prefix).connect().await {
        Ok(backend) => backend,
        Err(e) => panic!("cannot connect to the test Redis at {url}: {e}"),
    }
}

/// Counts the calls per message id, taking a little time per call so the
/// job lasts long enough to be interrupted.
#[derive(Debug, Default)]
pub(crate) struct Counting {
    pub(crate) calls: Mutex<HashMap<MessageId, u32>>,
}

impl Counting {
    /// Messages reached so far.
    pub(crate) fn reached(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
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

/// A job being read and delivered by `engine` in tasks of their own.
pub(crate) struct Running {
    engine: Engine,
    cancel: CancellationToken,
    delivering: JoinHandle<Result<()>>,
    reading: JoinHandle<JobReport>,
}

impl Running {
    /// Starts delivering, and submits `input` until it is read: a batcher
    /// whose push was applied but whose reply was lost (or whose push was
    /// lost with a master) stops, and a restarted initiator submits the
    /// input again and resumes from the checkpoint, as this loop does.
    pub(crate) fn start(engine: &Engine, input: &Input) -> Running {
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
                loop {
                    match engine.submit(&input).await {
                        Ok(report) if report.state != JobState::Reading => return report,
                        Ok(_) => {}
                        Err(e) if e.is_retryable() => {}
                        Err(e) => panic!("submit: {e}"),
                    }
                }
            }
        });
        Running {
            engine: engine.clone(),
            cancel,
            delivering,
            reading,
        }
    }

    /// Waits (30 s at most) until `sink` was reached `n` times.
    pub(crate) async fn until_reached(&self, sink: &Counting, n: usize) {
        let start = Instant::now();
        while sink.reached() < n {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "deliveries never started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits (60 s at most each) for the input to be read and the job to
    /// finish, then stops the deliverer; the job's report.
    pub(crate) async fn finish(self) -> JobReport {
        let read = tokio::time::timeout(Duration::from_secs(60), self.reading)
            .await
            .expect("the input was not read within 60 s")
            .expect("reading task");
        let report = self
            .engine
            .wait_for(&read.job, Some(Duration::from_secs(60)))
            .await
            .expect("wait_for");
        self.cancel.cancel();
        self.delivering
            .await
            .expect("deliverer task")
            .expect("deliverer");
        report
    }
}

/// G1 and G2 after an interruption: the job done, every line accounted
/// for, no message sent twice, every delivered one sent, and deliveries
/// after the interruption (`during` had been reached by then).
pub(crate) fn assert_once_each(report: &JobReport, sink: &Counting, during: usize) {
    assert_eq!(report.state, JobState::Done, "the job finishes: {report:?}");
    assert_eq!(
        report.delivered + report.dead + report.invalid + report.duplicate,
        report.lines,
        "every line accounted for: {report:?}"
    );
    let calls = sink.calls.lock().unwrap();
    let twice: Vec<_> = calls.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "no message may reach the sink twice: {} did, e.g. {:?}",
        twice.len(),
        twice.first()
    );
    assert!(
        report.delivered as usize <= calls.len(),
        "every delivered message was sent"
    );
    assert!(
        calls.len() > during,
        "deliveries went on after the interruption ({during} before, {} after)",
        calls.len()
    );
}
