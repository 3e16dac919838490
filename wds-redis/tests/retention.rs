//! Memory in Redis stays bounded: a finished job's per-line data (outcome
//! chunks and rejects) expires after the retention, a replay keeps it
//! again until the job is done once more, and settled batches leave
//! nothing behind.

use std::time::Duration;

use async_trait::async_trait;
use wds_core::{
    backend::{OffsetStore, Queue},
    Delivered, Engine, EngineConfig, Format, Input, JobId, JobState, Message, MessageId, Sink,
    SinkError,
};
use wds_redis::redis::{self, aio::MultiplexedConnection};
use wds_redis::{RedisBackend, RedisServer};

const RETENTION: Duration = Duration::from_secs(600);

/// Refuses user 7 for good, accepts everyone else.
#[derive(Debug)]
struct AllButSeven;

#[async_trait]
impl Sink for AllButSeven {
    async fn deliver(&self, message: &Message) -> Result<Delivered, SinkError> {
        if message.user_id == "user-7" {
            Err(SinkError::Permanent {
                status: Some(404),
                reason: "no such user".into(),
            })
        } else {
            Ok(Delivered::with_status(200))
        }
    }
}

/// The TTL (seconds; -1 none, -2 no key) of every key of `job` that holds
/// per-line data.
async fn ttls(conn: &mut MultiplexedConnection, tag: &str, job: &JobId) -> Vec<(String, i64)> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{tag}:out:{job}:*"))
        .query_async(conn)
        .await
        .expect("KEYS");
    keys.sort();
    keys.push(format!("{tag}:rejects:{job}"));
    let mut out = Vec::new();
    for key in keys {
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(conn)
            .await
            .expect("TTL");
        out.push((key, ttl));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_expire_and_a_replay_keeps_them() {
    let server = RedisServer::start();
    let backend = RedisBackend::builder(server.url())
        .prefix("retention")
        .retention(RETENTION)
        .connect()
        .await
        .expect("connect to the test redis-server");
    let mut config = EngineConfig::default();
    config.batch_size = 50;
    let engine = Engine::builder()
        .config(config)
        .backend(backend.clone())
        .sink(AllButSeven)
        .build()
        .expect("engine");
    // 300 lines over 3 outcome chunks (128 lines each), one invalid.
    let mut csv = String::new();
    for i in 1..=300 {
        if i == 150 {
            csv.push_str("no comma here\n");
        } else {
            csv.push_str(&format!("user-{i},hello {i}\n"));
        }
    }
    let input = Input::from_bytes("retention.csv", csv.into_bytes()).with_format(Format::Csv);
    let report = engine.run_once(&input).await.expect("run the job");
    assert_eq!(
        (report.state, report.delivered, report.dead, report.invalid),
        (JobState::Done, 298, 1, 1),
        "{report:?}"
    );
    let job = report.job.clone();

    let client = redis::Client::open(server.url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let tag = backend.key_prefix().to_string();
    let done = ttls(&mut conn, &tag, &job).await;
    assert_eq!(done.len(), 4, "3 outcome chunks and the rejects: {done:?}");
    for (key, ttl) in &done {
        assert!(
            *ttl > 0 && *ttl <= RETENTION.as_secs() as i64,
            "{key} must expire within the retention once the job is done, TTL {ttl}"
        );
    }
    // Settled batches leave nothing behind.
    let batches: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{tag}:b:*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert!(batches.is_empty(), "settled batches remain: {batches:?}");

    // A replay makes the job pending again: its data must not expire.
    assert_eq!(backend.replay(Some(&job)).await.expect("replay"), 1);
    for (key, ttl) in ttls(&mut conn, &tag, &job).await {
        assert_eq!(ttl, -1, "{key} must be kept while the job is pending again");
    }
    let seventh = MessageId {
        job: job.clone(),
        line: 7,
    };
    assert_eq!(
        backend.outcome(&seventh).await.expect("outcome"),
        None,
        "a replayed line is pending again"
    );
    // Done again (user 7 fails again): the data expires again.
    let again = engine.run_once(&input).await.expect("finish the replay");
    assert_eq!(again.state, JobState::Done, "{again:?}");
    for (key, ttl) in ttls(&mut conn, &tag, &job).await {
        assert!(
            ttl > 0 && ttl <= RETENTION.as_secs() as i64,
            "{key} must expire again once the job is done again, TTL {ttl}"
        );
    }
    assert!(
        backend.outcome(&seventh).await.expect("outcome").is_some(),
        "the line's outcome is readable until it expires"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_invalid_lines_costs_a_few_bytes_a_line_and_keeps_the_first_in_detail() {
    let server = RedisServer::start();
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let backend = RedisBackend::builder(server.url())
        .prefix("bounded")
        .connect()
        .await
        .unwrap();
    let used = |conn: &mut MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            let info: String = redis::cmd("INFO")
                .arg("memory")
                .query_async(&mut conn)
                .await
                .unwrap();
            info.lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap()
        }
    };
    let lines = 100_000u64;
    let body = "x\n".repeat(lines as usize);
    let input = Input::from_bytes("invalid.csv", body.into_bytes());
    let engine = Engine::builder()
        .backend(backend.clone())
        .sink(AllButSeven)
        .build()
        .unwrap();
    let before = used(&mut conn).await;
    let report = engine.run_once(&input).await.unwrap();
    let after = used(&mut conn).await;
    assert_eq!((report.lines, report.invalid), (lines, lines), "{report:?}");
    let per_line = after.saturating_sub(before) as f64 / lines as f64;
    println!("FIGURES redis: {per_line:.2} bytes per invalid line");
    assert!(per_line < 10.0, "{per_line:.1} bytes per invalid line");

    // The outcome of the last line, in the last of many merged runs (what
    // the limit means is checked by the conformance suite).
    let last = backend
        .outcome(&MessageId {
            job: report.job.clone(),
            line: lines,
        })
        .await
        .unwrap();
    assert_eq!(
        last,
        Some(wds_core::backend::LineOutcome::Rejected {
            kind: wds_core::backend::RejectKind::Invalid {
                reason: wds_core::backend::DETAIL_NOT_KEPT.into()
            }
        })
    );
}

/// Refuses everyone, for good.
#[derive(Debug)]
struct NoOne;

#[async_trait]
impl Sink for NoOne {
    async fn deliver(&self, _: &Message) -> Result<Delivered, SinkError> {
        Err(SinkError::Permanent {
            status: Some(404),
            reason: "no such user".into(),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letter_detail_limit_is_a_setting() {
    let server = RedisServer::start();
    let backend = RedisBackend::builder(server.url())
        .prefix("deadcap")
        .detail_limit(50)
        .connect()
        .await
        .unwrap();
    let lines = 120u64;
    let body: String = (1..=lines).map(|i| format!("user-{i},hi\n")).collect();
    let input = Input::from_bytes("refused.csv", body.into_bytes());
    let engine = Engine::builder()
        .backend(backend.clone())
        .sink(NoOne)
        .build()
        .unwrap();
    let report = engine.run_once(&input).await.unwrap();
    assert_eq!(
        (report.dead, report.accounted()),
        (lines, lines),
        "{report:?}"
    );
    let letters = backend
        .dead_letters(Some(&report.job), usize::MAX)
        .await
        .unwrap();
    assert_eq!(letters.len() as u64, lines);
    let detailed = letters
        .iter()
        .filter(|d| d.reason.detail.contains("no such user"))
        .count();
    assert_eq!(detailed, 50, "dead letters kept in detail");
}
