//! Scenario 5, `big`: a big file through Redis (1M lines; 10M with
//! `--full`): worker and initiator peak RSS, Redis memory.

use std::time::Duration;

use wds_core::backend::now_ms;
use wds_harness::receiver::ProductReceiver;
use wds_harness::redis::RedisServer;

use crate::deploy::{check_job, land, wait_done, write_users};
use crate::table::{mb, Target};
use crate::{explain, seconds_since, Bench, Fallible};

impl Bench {
    /// Scenario 5: A big file through Redis on a server of its own (so its peak
    /// memory is this file's): worker and initiator peak RSS, Redis peak.
    pub(crate) async fn big(&mut self) -> Fallible<()> {
        let lines = self.args.big_lines.unwrap_or(if self.args.full {
            10_000_000
        } else {
            1_000_000
        });
        eprintln!("[5] big file: {lines} lines through Redis, one worker");
        let server = RedisServer::start();
        // Only counts: 8 bytes per answer would be the benchmark's own memory.
        let receiver =
            ProductReceiver::start(self.dir.path(), "big-receiver", None, false, self.t0).await?;
        let name = self.next_name("big");
        let concurrency = self.args.concurrency.to_string();
        let result = async {
            let mut d = self
                .deploy(
                    &name,
                    &server.url(),
                    1,
                    &["--concurrency", &concurrency],
                    &receiver.url,
                )
                .await?;
            let (part, job) = write_users(&d.inbox, &format!("{name}.csv"), lines, &name)?;
            let landed = now_ms();
            land(&part)?;
            // Bounded: at least 500 deliveries/s, or the run fails.
            let waited = receiver
                .wait_for(lines, Duration::from_secs(120 + lines / 500))
                .await;
            let alive = d.check_running();
            explain(waited, &alive)?;
            let report = wait_done(&d.backend, &job, Duration::from_secs(120)).await?;
            let (worker_peak, initiator_peak) = d.peaks();
            let redis_peak = d.admin.memory("used_memory_peak").await?;
            let redis_after = d.admin.memory("used_memory").await?;
            d.stop().await;
            check_job(&report, lines, Some(&receiver))?;
            let secs = seconds_since(landed, &report);
            let scenario = format!("5 big file {lines} lines");
            self.table.add(
                &scenario,
                "throughput, landed → job done",
                0.0,
                format!(
                    "{:.0} deliveries/s ({secs:.0} s)",
                    lines as f64 / secs.max(0.001)
                ),
                Target::None,
            );
            self.table.add(
                &scenario,
                "worker peak RSS (MB)",
                worker_peak as f64 / 1e6,
                mb(worker_peak),
                Target::AtMost(100.0, " MB"),
            );
            self.table.add(
                &scenario,
                "initiator peak RSS",
                0.0,
                mb(initiator_peak),
                Target::None,
            );
            self.table.add(
                &scenario,
                "Redis used_memory_peak / used_memory after",
                0.0,
                format!("{} / {}", mb(redis_peak), mb(redis_after)),
                Target::None,
            );
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }
        .await;
        receiver.stop().await;
        drop(server);
        result
    }
}
