//! Memory in Redis stays bounded: a finished job's per-line data (outcome
//! chunks and rejects) expires after the retention, a replay keeps it
//! again until the job is done once more, and settled batches leave
//! nothing behind. Finishing a job costs the same Redis work whatever its
//! size: the outcome chunks are deleted afterwards, a few hundred a lease.

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
            Err(SinkError::permanent("no such user").with_status(404))
        } else {
            Ok(Delivered::with_status(200))
        }
    }
}

/// The TTL (seconds; -1 none, -2 no key) of every key of `job` that holds
/// per-line data, and when (ms since the epoch) its outcome chunks are due
/// to go, if they are.
async fn ttls(
    conn: &mut MultiplexedConnection,
    tag: &str,
    job: &JobId,
) -> (Vec<(String, i64)>, Option<u64>) {
    let mut keys = chunk_keys(conn, tag, job).await;
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
    let due: Option<u64> = redis::cmd("ZSCORE")
        .arg(format!("{tag}:expiring"))
        .arg(job.as_str())
        .query_async(conn)
        .await
        .expect("ZSCORE");
    (out, due)
}

/// The outcome chunk keys of `job`, sorted.
async fn chunk_keys(conn: &mut MultiplexedConnection, tag: &str, job: &JobId) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{tag}:out:{job}:*"))
        .query_async(conn)
        .await
        .expect("KEYS");
    keys.sort();
    keys
}

/// Asserts that `job`'s per-line data goes within the retention: the
/// rejects by their TTL, the chunks by the job's time in `:expiring`.
fn assert_expiring(keys: &[(String, i64)], due: Option<u64>, retention: Duration) {
    let now = wds_core::backend::now_ms();
    let due = due.expect("a finished job's chunks are due to go");
    assert!(
        due > now && due <= now + retention.as_millis() as u64,
        "chunks due within the retention: {due} vs now {now}"
    );
    let (rejects, ttl) = keys.last().expect("the rejects key");
    assert!(
        *ttl > 0 && *ttl <= retention.as_secs() as i64,
        "{rejects} must expire within the retention once the job is done, TTL {ttl}"
    );
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
    let (done, due) = ttls(&mut conn, &tag, &job).await;
    assert_eq!(done.len(), 4, "3 outcome chunks and the rejects: {done:?}");
    assert_expiring(&done, due, RETENTION);
    // Settled batches leave nothing behind.
    let batches: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{tag}:b:*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert!(batches.is_empty(), "settled batches remain: {batches:?}");

    // A replay makes the job pending again: its data must not expire.
    assert_eq!(backend.replay(Some(&job)).await.expect("replay"), 1);
    let (pending, due) = ttls(&mut conn, &tag, &job).await;
    for (key, ttl) in pending {
        assert_eq!(ttl, -1, "{key} must be kept while the job is pending again");
    }
    assert_eq!(due, None, "a pending job's chunks are not due to go");
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
    let (again_keys, due) = ttls(&mut conn, &tag, &job).await;
    assert_expiring(&again_keys, due, RETENTION);
    assert!(
        backend.outcome(&seventh).await.expect("outcome").is_some(),
        "the line's outcome is readable until it expires"
    );
}

/// `calls` of `cmdstat_<command>` in `INFO commandstats` (commands run by
/// scripts included).
async fn calls_of(conn: &mut MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO commandstats");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|v| v.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finishing_a_big_job_costs_no_more_than_a_small_one() {
    let server = RedisServer::start();
    let retention = Duration::from_secs(1);
    let backend = RedisBackend::builder(server.url())
        .prefix("finish")
        .retention(retention)
        .connect()
        .await
        .expect("connect to the test redis-server");
    let engine = Engine::builder()
        .backend(backend.clone())
        .sink(AllButSeven)
        .build()
        .expect("engine");
    let mut conn = redis::Client::open(server.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let tag = backend.key_prefix().to_string();
    // 64,000 lines: 501 outcome chunks (line `n` is in chunk `n / 128`),
    // which the old finish expired one EXPIRE each, in the call that
    // settled the last batch.
    let lines = 64_000;
    let csv: String = (1..=lines).map(|i| format!("user-{i},hi\n")).collect();
    let input = Input::from_bytes("big.csv", csv.into_bytes()).with_format(Format::Csv);
    let expires = calls_of(&mut conn, "expire").await;
    let report = engine.run_once(&input).await.expect("run the job");
    assert_eq!(report.state, JobState::Done, "{report:?}");
    let expired = calls_of(&mut conn, "expire").await - expires;
    assert!(
        expired <= 1,
        "finishing issued {expired} EXPIREs (one is the rejects list's)"
    );
    let chunks = (lines / 128 + 1) as usize;
    assert_eq!(chunk_keys(&mut conn, &tag, &report.job).await.len(), chunks);

    // Past the retention, the leases that follow delete the chunks, at
    // most 256 keys each.
    tokio::time::sleep(retention + Duration::from_millis(100)).await;
    let first = backend
        .lease(1, Duration::from_secs(1))
        .await
        .expect("lease");
    assert!(first.is_empty());
    let left = chunk_keys(&mut conn, &tag, &report.job).await.len();
    assert_eq!(left, chunks - 256, "one lease deletes 256 chunks");
    backend
        .lease(1, Duration::from_secs(1))
        .await
        .expect("lease");
    assert!(chunk_keys(&mut conn, &tag, &report.job).await.is_empty());
    let (_, due) = ttls(&mut conn, &tag, &report.job).await;
    assert_eq!(due, None, "a swept job is no longer due");
    // The report and its counts stay.
    let kept = backend
        .report(&report.job)
        .await
        .expect("report")
        .expect("the job is known");
    assert_eq!((kept.delivered, kept.dead), (lines - 1, 1));
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
        Err(SinkError::permanent("no such user").with_status(404))
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
