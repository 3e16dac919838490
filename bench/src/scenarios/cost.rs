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
use crate::scenarios::{Client, LoopSpec};
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
    /// A bare loop (`threads` 0: on one multi-threaded runtime).
    Loop(LoopSpec),
    /// `full_system all` on SQLite with this `--http-client`.
    All(&'static str),
    /// Redis: an initiator and one worker.
    Redis,
}

/// A signed loop of `client` on one multi-threaded runtime.
const fn plain(client: Client, sign: bool) -> Setup {
    Setup::Loop(LoopSpec {
        client,
        sign,
        threads: 0,
    })
}

/// The setups, in the order each round runs them, with their names. The
/// first is the reference of the ratios, the "bare reqwest loop":
/// WDS signs every webhook (`all` with the secret it generates, the Redis
/// worker with `--secret`), so the reference loop signs too and sends the
/// same bytes; the unsigned loop shows what signing costs. The HttpSink
/// loop is the product's sink without the engine; the per-core loop runs
/// the reference loop the way WDS delivers (one current-thread runtime per
/// delivery thread, `PER_CORE`), to show what that alone is worth.
const SETUPS: [(&str, Setup); 8] = [
    ("bare reqwest loop", plain(Client::Reqwest, true)),
    ("bare reqwest loop, unsigned", plain(Client::Reqwest, false)),
    ("bare hyper loop", plain(Client::Hyper, true)),
    ("HttpSink loop (no engine)", plain(Client::Sink, true)),
    (
        "bare reqwest loop, thread per core",
        Setup::Loop(LoopSpec {
            client: Client::Reqwest,
            sign: true,
            threads: PER_CORE,
        }),
    ),
    ("all (SQLite)", Setup::All("reqwest")),
    ("all (SQLite), hyper client", Setup::All("hyper")),
    ("redis ×1", Setup::Redis),
];

/// Stands for the delivery threads `full_system` starts by default
/// (`DeliveryThreads::auto` of the run's concurrency), resolved per run.
const PER_CORE: usize = usize::MAX;

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
        let mut wrk = Vec::new();
        for round in 0..rounds {
            for (i, (name, setup)) in SETUPS.iter().enumerate() {
                eprintln!("[7] cost per delivery, round {round}: {name}");
                let before = cpu_of(pid);
                let mut run = match *setup {
                    Setup::Loop(spec) => self.loop_run(spec, &url).await?,
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
            eprintln!("[7] cost per delivery, round {round}: wrk");
            if let Some(run) = self.wrk_run(&url).await? {
                eprintln!("  {:.0} requests/s", run.rate);
                wrk.push(run);
            }
        }
        let _ = responder.kill().await;
        self.cost_rows(&mut runs, rounds);
        self.wrk_rows(&mut wrk, &runs);
        Ok(())
    }

    async fn loop_run(&mut self, mut spec: LoopSpec, url: &str) -> Fallible<Run> {
        if spec.threads == PER_CORE {
            let mut config = wds_core::EngineConfig::default();
            config.concurrency = self.args.concurrency;
            spec.threads = wds_core::engine::DeliveryThreads::auto(&config);
        }
        let run = self.run_loop(spec, url).await?;
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

    /// `wrk -t1` at the same concurrency against `url` for 3 s, posting a
    /// webhook-sized body; `None` when `wrk` is not on `PATH`. Its CPU is
    /// read from this process's waited-for children's times.
    async fn wrk_run(&mut self, url: &str) -> Fallible<Option<Run>> {
        let script = self.dir.path().join("wrk-post.lua");
        std::fs::write(
            &script,
            "wrk.method = \"POST\"\n\
             wrk.body = '{\"userId\":\"user-1\",\"alertMessage\":\"wrk: your order #1 has shipped\"}'\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.headers[\"webhook-id\"] = \"wrk:1\"\n\
             wrk.headers[\"webhook-timestamp\"] = \"1796390000\"\n",
        )?;
        let before = wds_core::testkit::bench::children_cpu();
        let output = tokio::process::Command::new("wrk")
            .args(["-t1", &format!("-c{}", self.args.concurrency), "-d3s", "-s"])
            .arg(&script)
            .arg(url)
            .kill_on_drop(true)
            .output()
            .await;
        let output = match output {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let cpu = wds_core::testkit::bench::children_cpu() - before;
        let text = String::from_utf8_lossy(&output.stdout);
        // "  612345 requests in 3.00s, 45.67MB read"
        let requests = text
            .lines()
            .find(|l| l.contains(" requests in "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok());
        let rate = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
            .and_then(|r| r.trim().parse::<f64>().ok());
        match (output.status.success(), requests, rate) {
            (true, Some(requests), Some(rate)) => Ok(Some(Run {
                rate,
                // Scaled to the setups' request count, so that per-delivery
                // figures divide alike.
                cpu: vec![("wrk".into(), cpu * self.args.lines as f64 / requests)],
            })),
            _ => Err(format!("wrk printed {text:?}").into()),
        }
    }

    /// wrk's rows (or why there are none), and WDS's rates against it.
    fn wrk_rows(&mut self, wrk: &mut [Run], runs: &[Vec<Run>]) {
        let scenario = "7 cost wrk -t1";
        if wrk.is_empty() {
            self.table.add(
                scenario,
                "requests/s to the minimal responder",
                0.0,
                "not measured: wrk is not on PATH (apt-get install wrk)".into(),
                Target::None,
            );
            return;
        }
        wrk.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        let median = &wrk[wrk.len() / 2];
        let lines = self.args.lines as f64;
        let wrk_cpu = median.cpu.iter().map(|(_, s)| s).sum::<f64>() * 1e6 / lines;
        self.table.add(
            scenario,
            &format!(
                "requests/s to the minimal responder, {} connections, 3 s (median of {})",
                self.args.concurrency,
                wrk.len()
            ),
            median.rate,
            format!("{:.0}, CPU {wrk_cpu:.1} µs per request", median.rate),
            Target::None,
        );
        for ((setup, _), runs) in SETUPS.iter().zip(runs) {
            if !setup.starts_with("all") && !setup.starts_with("redis") {
                continue;
            }
            let rate = runs[runs.len() / 2].rate;
            let ratio = 100.0 * rate / median.rate;
            self.table.add(
                &format!("7 cost {setup}"),
                "rate / wrk's (the issue's goal beyond the targets: ≥ 70% with the hyper client)",
                ratio,
                format!("{ratio:.1}%"),
                Target::None,
            );
        }
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
