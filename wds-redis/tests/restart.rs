//! Redis stopped and restarted (with the append-only file on) in the middle
//! of a job driven by the real engine: the job still finishes, every line is
//! accounted for (G2) and no message reaches the sink twice (G1).

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{assert_once_each, Counting, Running};
use wds_core::{Engine, Format, Input};
use wds_redis::{RedisBackend, RedisServer};

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

    // Interrupt the job once deliveries are under way.
    let running = Running::start(&engine, &input);
    running.until_reached(&sink, 2_000).await;
    server.stop();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let during = sink.reached();
    server.restart();
    let report = running.finish().await;
    eprintln!(
        "{during} of 11,000 sent while Redis was down; report: delivered {}, dead {} \
         (in doubt {}), invalid {}, duplicate {}",
        report.delivered, report.dead, report.in_doubt, report.invalid, report.duplicate
    );
    assert_eq!(report.lines, 12_000);
    assert_eq!((report.invalid, report.duplicate), (500, 500));
    assert_once_each(&report, &sink, during);
}
