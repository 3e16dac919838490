//! Scenario 7, `cost`: what one delivery costs, against a receiver that is
//! not the bottleneck. A minimal responder (this binary with
//! `--responder`, a process of its own that reads each body and answers
//! 200) receives, in turn each round: a bare reqwest loop, a raw hyper
//! loop (both posting `HttpSink`'s bodies and headers at the same
//! concurrency, each in a process of its own), `full_system all` on its
//! default backend (SQLite) with the default reqwest client and with
//! `--http-client hyper`, and Redis with an initiator and one worker.
//! The loops sign each request as `HttpSink` does (the same bytes as WDS,
//! which signs), and the reqwest loop runs unsigned too.
//! For each: the rate, its spread over the rounds, and the CPU seconds per
//! delivery of every process involved (`/proc/<pid>/stat`), the
//! responder's and redis-server's included.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use wds_core::backend::now_ms;

use crate::deploy::{cpu_of, land, wait_done, write_users};
use crate::scenarios::Client;
use crate::table::Target;
use crate::{explain, seconds_since, Bench, Fallible};

/// One run of one setup.
struct Run {
    rate: f64,
    /// CPU seconds per process, by name, over the run.
    cpu: Vec<(String, f64)>,
}

/// What one setup runs.
#[derive(Clone, Copy)]
enum Setup {
    /// A bare loop of this client, signing each request when `true`.
    Loop(Client, bool),
    /// `full_system all` on SQLite with this `--http-client`.
    All(&'static str),
    /// Redis: an initiator and one worker.
    Redis,
}

/// The setups, in the order each round runs them, with their names. The
/// first is the reference of the ratios: WDS signs every webhook (`all`
/// with the secret it generates, the Redis worker with `--secret`), so the
/// reference loop signs too and sends the same bytes; the unsigned loop
/// shows what signing costs.
const SETUPS: [(&str, Setup); 6] = [
    ("bare reqwest loop", Setup::Loop(Client::Reqwest, true)),
    (
        "bare reqwest loop, unsigned",
        Setup::Loop(Client::Reqwest, false),
    ),
    ("bare hyper loop", Setup::Loop(Client::Hyper, true)),
    ("all (SQLite)", Setup::All("reqwest")),
    ("all (SQLite), hyper client", Setup::All("hyper")),
    ("redis ×1", Setup::Redis),
];

/// The secret the Redis deployment signs with (any valid one will do: the
/// responder does not check).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

impl Bench {
    /// Scenario 7 (see the module docs).
    pub(crate) async fn cost(&mut self) -> Fallible<()> {
        let mut responder = tokio::process::Command::new(std::env::current_exe()?)
            .arg("--responder")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let pid = responder.id().ok_or("the responder did not start")?;
        let stdout = responder.stdout.take().ok_or("no responder stdout")?;
        let mut first = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            BufReader::new(stdout).read_line(&mut first),
        )
        .await
        .map_err(|_| "the responder did not say where it listens")??;
        let addr = first
            .trim()
            .strip_prefix("listening ")
            .ok_or_else(|| format!("the responder said {first:?}"))?
            .to_string();
        let url = format!("http://{addr}/webhook");
        let rounds = self.args.cost_rounds.max(1);
        let mut runs: Vec<Vec<Run>> = (0..SETUPS.len()).map(|_| Vec::new()).collect();
        for round in 0..rounds {
            for (i, (name, setup)) in SETUPS.iter().enumerate() {
                eprintln!("[7] cost per delivery, round {round}: {name}");
                let before = cpu_of(pid);
                let mut run = match *setup {
                    Setup::Loop(client, sign) => self.loop_run(client, sign, &url).await?,
                    Setup::All(client) => {
                        let local = self
                            .e2e_all("sqlite", Some(&url), &["--http-client", client])
                            .await?;
                        Run {
                            rate: self.args.lines as f64 / local.secs.max(0.001),
                            cpu: vec![("all".into(), local.cpu_secs)],
                        }
                    }
                    Setup::Redis => self.cost_redis(&url).await?,
                };
                run.cpu.push(("responder".into(), cpu_of(pid) - before));
                eprintln!("  {:.0} deliveries/s", run.rate);
                runs[i].push(run);
            }
        }
        let _ = responder.kill().await;
        self.cost_rows(&mut runs, rounds);
        Ok(())
    }

    async fn loop_run(&mut self, client: Client, sign: bool, url: &str) -> Fallible<Run> {
        let run = self.run_loop(client, sign, url).await?;
        Ok(Run {
            rate: run.rate,
            cpu: vec![("loop".into(), run.cpu_secs)],
        })
    }

    /// One file through an initiator and one worker on Redis, to `url`.
    async fn cost_redis(&mut self, url: &str) -> Fallible<Run> {
        let lines = self.args.lines;
        let name = self.next_name("cost-redis");
        let redis_url = self.redis_url();
        let redis_pid = self.redis.as_ref().and_then(|r| r.pid()).unwrap_or(0);
        let concurrency = self.args.concurrency.to_string();
        let mut d = self
            .deploy(
                &name,
                &redis_url,
                1,
                &["--concurrency", &concurrency, "--secret", SECRET],
                url,
            )
            .await?;
        let (part, job) = write_users(&d.inbox, &format!("{name}.csv"), lines, &name)?;
        let mut pids = d.pids();
        pids.push(("redis-server".into(), redis_pid));
        let before: Vec<f64> = pids.iter().map(|(_, pid)| cpu_of(*pid)).collect();
        let landed = now_ms();
        land(&part)?;
        let waited = wait_done(&d.backend, &job, Duration::from_secs(60 + lines / 500)).await;
        let cpu = pids
            .iter()
            .zip(before)
            .map(|((name, pid), before)| (name.clone(), cpu_of(*pid) - before))
            .collect();
        let alive = d.check_running();
        let report = explain(waited, &alive)?;
        d.stop().await;
        crate::deploy::check_job(&report, lines, None)?;
        Ok(Run {
            rate: lines as f64 / seconds_since(landed, &report).max(0.001),
            cpu,
        })
    }

    /// The rows of scenario 7: each setup's median rate and spread, its
    /// ratio to the bare reqwest loop, and CPU per delivery per process.
    fn cost_rows(&mut self, runs: &mut [Vec<Run>], rounds: usize) {
        let lines = self.args.lines as f64;
        let c = self.args.concurrency;
        let mut medians = Vec::new();
        for ((setup, _), runs) in SETUPS.iter().zip(runs.iter_mut()) {
            runs.sort_by(|a, b| a.rate.total_cmp(&b.rate));
            let median = &runs[runs.len() / 2];
            let (low, high) = (runs[0].rate, runs[runs.len() - 1].rate);
            let total: f64 = median
                .cpu
                .iter()
                .filter(|(name, _)| name != "responder" && name != "redis-server")
                .map(|(_, secs)| secs)
                .sum();
            medians.push((median.rate, total));
            let scenario = format!("7 cost {setup}");
            self.table.add(
                &scenario,
                &format!(
                    "deliveries/s to the minimal responder, concurrency {c} (median of \
                     {rounds}; lowest – highest)"
                ),
                median.rate,
                format!("{:.0} ({low:.0} – {high:.0})", median.rate),
                Target::None,
            );
            self.table.add(
                &scenario,
                "spread: highest / lowest round − 1",
                100.0 * (high / low - 1.0),
                format!("{:.1}%", 100.0 * (high / low - 1.0)),
                Target::AtMost(10.0, "%"),
            );
            let per: Vec<String> = median
                .cpu
                .iter()
                .map(|(name, secs)| format!("{name} {:.1}", secs * 1e6 / lines))
                .collect();
            self.table.add(
                &scenario,
                "CPU per delivery, µs (median round), by process",
                total * 1e6 / lines,
                per.join(", "),
                Target::None,
            );
        }
        let (loop_rate, loop_cpu) = medians[0];
        for ((setup, _), (rate, cpu)) in SETUPS.iter().zip(&medians).skip(1) {
            let scenario = format!("7 cost {setup}");
            // The targets are for the default client; the hyper
            // client is the step beyond, reported without one.
            let wds = *setup == "all (SQLite)" || setup.starts_with("redis");
            let ratio = 100.0 * rate / loop_rate;
            self.table.add(
                &scenario,
                "rate / bare reqwest loop's",
                ratio,
                format!("{ratio:.1}%"),
                if wds {
                    Target::AtLeast(90.0, "%")
                } else {
                    Target::None
                },
            );
            let cpu_ratio = cpu / loop_cpu.max(1e-9);
            self.table.add(
                &scenario,
                "CPU per delivery / bare reqwest loop's (its processes, responder and Redis aside)",
                cpu_ratio,
                format!("{cpu_ratio:.2}×"),
                if wds {
                    Target::AtMost(1.2, "×")
                } else {
                    Target::None
                },
            );
        }
    }
}
