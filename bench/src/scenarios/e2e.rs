//! Scenario 2, `e2e`: a file from its rename into the inbox until the job is
//! done, on one process (memory, SQLite) and on Redis with one and two
//! workers.

use std::path::Path;
use std::time::Duration;

use wds_core::backend::now_ms;
use wds_harness::ports::{loopback, reserve_port};
use wds_harness::redis::Commands;

use crate::deploy::{
    check_job, cpu_of, histogram_quantile, land, latency_histogram, spawn, wait_done,
    wait_done_http, write_users,
};
use crate::table::{mb, Target};
use crate::{explain, seconds_since, Bench, Fallible};

/// One run of `full_system all` on a local backend.
pub(crate) struct LocalRun {
    pub(crate) secs: f64,
    latency: Vec<(f64, u64)>,
    peak: u64,
    /// The SQLite database after the run.
    db: Option<wds_sqlite::Storage>,
    /// CPU seconds the process spent from the file's landing to the job's end.
    pub(crate) cpu_secs: f64,
}

impl Bench {
    /// Scenario 2a: one process, `full_system all` (folder source,
    /// batcher, deliverer, HttpSink, control API) delivering to the
    /// benchmark's receiver, on the memory backend and on its default,
    /// SQLite (the database in the data dir, on this machine's disk),
    /// alternating for `--local-rounds` rounds; the median round of each
    /// is shown, and their ratio.
    pub(crate) async fn e2e_local(&mut self) -> Fallible<()> {
        let rounds = self.args.local_rounds.max(1);
        let (mut memory, mut sqlite) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            eprintln!(
                "[2] end to end, one process (full_system all), round {round}: memory, then sqlite"
            );
            memory.push(self.e2e_all("memory", None, &[]).await?);
            sqlite.push(self.e2e_all("sqlite", None, &[]).await?);
        }
        let median = |runs: &mut Vec<LocalRun>| {
            runs.sort_by(|a, b| a.secs.total_cmp(&b.secs));
            runs.swap_remove(runs.len() / 2)
        };
        let (memory, sqlite) = (median(&mut memory), median(&mut sqlite));
        let lines = self.args.lines;
        for (scenario, run) in [("2 e2e memory ×1", &memory), ("2 e2e sqlite ×1", &sqlite)] {
            self.e2e_rows(scenario, lines, run.secs, 0.85, &run.latency);
            self.table.add(
                scenario,
                &format!("peak RSS (the one process; median of {rounds} rounds)"),
                0.0,
                mb(run.peak),
                Target::None,
            );
        }
        let ratio = memory.secs / sqlite.secs;
        self.table.add(
            "2 e2e sqlite ×1",
            &format!("deliveries/s, sqlite / memory (median rounds of {rounds})"),
            100.0 * ratio,
            format!("{:.1}%", 100.0 * ratio),
            Target::AtLeast(90.0, "%"),
        );
        if let Some(db) = sqlite.db {
            self.table.add(
                "2 e2e sqlite ×1",
                "database after the job: file / in use, per line",
                db.file_bytes as f64 / lines as f64,
                format!(
                    "{:.1} / {:.1} bytes ({} file; its high-water mark is the queue, reused)",
                    db.file_bytes as f64 / lines as f64,
                    (db.file_bytes - db.free_bytes) as f64 / lines as f64,
                    mb(db.file_bytes)
                ),
                Target::None,
            );
        }
        Ok(())
    }

    /// One 100,000-line run of `full_system all --backend <backend>`,
    /// delivering to the benchmark's receiver, or to `webhook` (then
    /// without waiting on that receiver).
    pub(crate) async fn e2e_all(
        &mut self,
        backend: &str,
        webhook: Option<&str>,
        extra: &[&str],
    ) -> Fallible<LocalRun> {
        let lines = self.args.lines;
        let name = self.next_name(backend);
        let binary = self.binary()?;
        let base = self.dir.path().join(&name);
        let inbox = base.join("inbox");
        std::fs::create_dir_all(&inbox)?;
        let ports = (reserve_port(), reserve_port());
        let (api, notifier) = (loopback(&ports.0), loopback(&ports.1));
        let args: Vec<String> = [
            "--backend",
            backend,
            "--data-dir",
            &base.display().to_string(),
            "--webhook-url",
            webhook.unwrap_or(&self.receiver.url),
            "--api-listen",
            &api.to_string(),
            "--notifier-listen",
            &notifier.to_string(),
            "--concurrency",
            &self.args.concurrency.to_string(),
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
        let mut all = spawn(&binary, &format!("{name}-all"), "all", &args, &base)?;
        all.wait_healthy(api).await?;
        let (part, job) = write_users(&inbox, &format!("{name}.csv"), lines, &name)?;
        let cpu = cpu_of(all.pid());
        let (landed, received) = match webhook {
            None => self.receive(&part, lines).await,
            Some(_) => (now_ms(), land(&part)),
        };
        let waited = async {
            received?;
            wait_done_http(api, &job, Duration::from_secs(60 + lines / 500)).await
        }
        .await;
        let cpu_secs = cpu_of(all.pid()) - cpu;
        let peak = all.peak_rss().unwrap_or(0);
        let alive = all.check_running().map_err(Into::into);
        let report = explain(waited, &alive)?;
        let latency = latency_histogram(&[format!("http://{api}/metrics")]).await?;
        all.stop().await;
        check_job(&report, lines, webhook.is_none().then_some(&self.receiver))?;
        let secs = seconds_since(landed, &report);
        // The process has stopped (and released the database): measure it.
        let db = match backend {
            "sqlite" => Some(
                wds_sqlite::SqliteBackend::open(base.join("wds.db"))
                    .await?
                    .storage()
                    .await?,
            ),
            _ => None,
        };
        eprintln!(
            "  {backend}: {:.0} deliveries/s ({secs:.2} s)",
            lines as f64 / secs.max(0.001)
        );
        Ok(LocalRun {
            secs,
            latency,
            peak,
            db,
            cpu_secs,
        })
    }

    /// Renames the `.part` file at `part` into place and waits until the
    /// receiver accepted its `lines` users (at least 500/s); returns when it
    /// landed (ms) and how the wait went.
    async fn receive(&self, part: &Path, lines: u64) -> (u64, Fallible<()>) {
        let base = self.receiver.accepted();
        let landed = now_ms();
        let received = match land(part) {
            Ok(()) => {
                let patience = Duration::from_secs(60 + lines / 500);
                self.receiver.wait_for(base + lines, patience).await
            }
            Err(e) => Err(e),
        };
        (landed, received)
    }

    /// The rows every end-to-end run has.
    fn e2e_rows(
        &mut self,
        scenario: &str,
        lines: u64,
        secs: f64,
        target_ratio: f64,
        latency: &[(f64, u64)],
    ) {
        let rate = lines as f64 / secs.max(0.001);
        self.table.add(
            scenario,
            &format!("{lines} lines, landed → job done"),
            rate,
            format!("{rate:.0} deliveries/s ({secs:.2} s)"),
            Target::None,
        );
        if let Some(ceiling) = self.ceiling {
            let ratio = rate / ceiling;
            self.table.add(
                scenario,
                "ratio to the ceiling",
                100.0 * ratio,
                format!("{:.1}%", 100.0 * ratio),
                Target::AtLeast(100.0 * target_ratio, "%"),
            );
        }
        self.table.add(
            scenario,
            "webhook call latency p50 / p99 (/metrics histogram bucket)",
            0.0,
            format!(
                "{} / {}",
                histogram_quantile(latency, 0.50),
                histogram_quantile(latency, 0.99)
            ),
            Target::None,
        );
    }

    /// Scenario 2b: Redis with `workers` worker processes and an initiator process.
    pub(crate) async fn e2e_redis(&mut self, workers: usize) -> Fallible<()> {
        eprintln!("[2] end to end: Redis backend, {workers} worker(s)");
        let lines = self.args.lines;
        let scenario = format!("2 e2e redis ×{workers}");
        let name = self.next_name(&format!("redis{workers}"));
        let url = self.redis_url();
        let webhook = self.receiver.url.clone();
        let concurrency = self.args.concurrency.to_string();
        let mut d = self
            .deploy(
                &name,
                &url,
                workers,
                &["--concurrency", &concurrency],
                &webhook,
            )
            .await?;
        let (part, job) = write_users(&d.inbox, &format!("{name}.csv"), lines, &name)?;
        d.admin.reset_stats().await?;
        let (landed, received) = self.receive(&part, lines).await;
        let waited = async {
            received?;
            wait_done(&d.backend, &job, Duration::from_secs(60)).await
        }
        .await;
        let commands = d.admin.commands().await;
        let (worker_peak, initiator_peak) = d.peaks();
        let alive = d.check_running();
        let report = explain(waited, &alive)?;
        let commands = commands?;
        let latency = latency_histogram(&d.metrics).await;
        d.stop().await;
        check_job(&report, lines, Some(&self.receiver))?;
        let secs = seconds_since(landed, &report);
        self.e2e_rows(&scenario, lines, secs, 0.70, &latency?);
        self.table.add(
            &scenario,
            "peak RSS: initiator / largest worker",
            0.0,
            format!("{} / {}", mb(initiator_peak), mb(worker_peak)),
            Target::None,
        );
        self.command_rows(&scenario, &commands, lines);
        Ok(())
    }

    fn command_rows(&mut self, scenario: &str, commands: &Commands, lines: u64) {
        let per = |n: u64| n as f64 / lines as f64;
        self.table.add(
            scenario,
            "Redis round trips per message (commands sent by clients: EVALSHA…)",
            per(commands.round_trips),
            format!("{:.4}", per(commands.round_trips)),
            Target::AtMost(0.1, ""),
        );
        self.table.add(
            scenario,
            "Redis commands per message, incl. those run inside Lua",
            per(commands.all),
            format!("{:.3}", per(commands.all)),
            Target::None,
        );
        if self.args.verbose {
            for (name, n) in &commands.by_name {
                eprintln!("    {name:<24} {n:>10}  {:.4}/message", per(*n));
            }
        }
    }
}
