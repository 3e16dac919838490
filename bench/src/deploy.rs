//! What the scenarios share: a Redis deployment of `full_system` processes,
//! the file they deliver, waits on the job, and the checks of its outcome.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wds_core::{backend::OffsetStore, Input, JobId, JobReport, JobState};
use wds_harness::ports::{loopback, reserve_port, ReservedPort};
use wds_harness::process::Service;
use wds_harness::receiver::ProductReceiver;
use wds_harness::redis::RedisAdmin;
use wds_redis::RedisBackend;

use crate::{Bench, Fallible};

/// A Redis deployment under test: one initiator, N workers, and the
/// benchmark's own view of the same keys.
pub(crate) struct Deployment {
    pub(crate) inbox: PathBuf,
    initiator: Service,
    workers: Vec<Service>,
    /// Each worker's `/metrics`.
    pub(crate) metrics: Vec<String>,
    pub(crate) backend: RedisBackend,
    pub(crate) admin: RedisAdmin,
    /// The ports the processes listen on, held while they run.
    _ports: Vec<ReservedPort>,
}

impl Deployment {
    pub(crate) fn check_running(&mut self) -> Fallible<()> {
        self.initiator.check_running()?;
        for worker in &mut self.workers {
            worker.check_running()?;
        }
        Ok(())
    }

    /// Each process's name and pid: the initiator, then the workers.
    pub(crate) fn pids(&self) -> Vec<(String, u32)> {
        std::iter::once(("initiator".to_string(), self.initiator.pid()))
            .chain(
                self.workers
                    .iter()
                    .enumerate()
                    .map(|(i, w)| (format!("worker {}", i + 1), w.pid())),
            )
            .collect()
    }

    /// The largest worker peak RSS, and the initiator's.
    pub(crate) fn peaks(&self) -> (u64, u64) {
        let worker = self
            .workers
            .iter()
            .filter_map(Service::peak_rss)
            .max()
            .unwrap_or(0);
        (worker, self.initiator.peak_rss().unwrap_or(0))
    }

    pub(crate) async fn stop(self) {
        for w in self.workers {
            w.stop().await;
        }
        self.initiator.stop().await;
    }

    /// Delivers a file of `lines` users named `name` to `receiver` (waiting
    /// at most `patience` for the last one), checks the job, stops the
    /// deployment, and returns when each delivery arrived (µs, sorted).
    pub(crate) async fn run_file(
        mut self,
        receiver: &ProductReceiver,
        name: &str,
        lines: u64,
        patience: Duration,
    ) -> Fallible<Vec<u64>> {
        let (part, job) = write_users(&self.inbox, &format!("{name}.csv"), lines, name)?;
        let (base, from) = (receiver.accepted(), receiver.noted());
        land(&part)?;
        let waited = receiver.wait_for(base + lines, patience).await;
        let alive = self.check_running();
        crate::explain(waited, &alive)?;
        let report = wait_done(&self.backend, &job, Duration::from_secs(60)).await?;
        self.stop().await;
        check_job(&report, lines, Some(receiver))?;
        let mut times = receiver.times_from(from);
        times.sort_unstable();
        Ok(times)
    }
}

/// Writes `lines` users to `inbox/.name.part` (ready to be renamed into
/// place) and returns that path and the job id the file will become.
pub(crate) fn write_users(
    inbox: &Path,
    name: &str,
    lines: u64,
    salt: &str,
) -> Fallible<(PathBuf, JobId)> {
    let part = inbox.join(format!(".{name}.part"));
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&part)?);
    writeln!(file, "userId,alertMessage")?;
    for i in 1..=lines {
        writeln!(file, "user-{i},\"{salt}: your order #{i} has shipped\"")?;
    }
    file.flush()?;
    drop(file);
    let input = Input::from_file(&part)?;
    Ok((part, JobId::from_identity(&input.identity)))
}

/// Renames the `.part` file into place: the moment the file lands.
pub(crate) fn land(part: &Path) -> Fallible<()> {
    let name = part
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix('.'))
        .and_then(|n| n.strip_suffix(".part"))
        .ok_or("not a .part file")?;
    std::fs::rename(part, part.with_file_name(name))?;
    Ok(())
}

/// Polls the job's report until it is done, at most `timeout`.
pub(crate) async fn wait_done(
    offsets: &dyn OffsetStore,
    job: &JobId,
    timeout: Duration,
) -> Fallible<JobReport> {
    let give_up = Instant::now() + timeout;
    loop {
        if let Some(report) = offsets.report(job).await? {
            if report.state == JobState::Done {
                return Ok(report);
            }
            if Instant::now() > give_up {
                return Err(format!("job {job} not done within {timeout:?}: {report:?}").into());
            }
        } else if Instant::now() > give_up {
            return Err(format!("job {job} never appeared within {timeout:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `GET /jobs/{id}` of a control API until the job is done.
pub(crate) async fn wait_done_http(
    api: std::net::SocketAddr,
    job: &JobId,
    timeout: Duration,
) -> Fallible<JobReport> {
    let client = reqwest::Client::new();
    let url = format!("http://{api}/jobs/{job}");
    let give_up = Instant::now() + timeout;
    loop {
        let response = client
            .get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        if response.status().is_success() {
            let report: JobReport = serde_json::from_slice(&response.bytes().await?)?;
            if report.state == JobState::Done {
                return Ok(report);
            }
        }
        if Instant::now() > give_up {
            return Err(format!("job {job} not done within {timeout:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `wds_delivery_latency_seconds` (cumulative buckets: upper bound in
/// seconds → calls) from each `/metrics` page, summed.
pub(crate) async fn latency_histogram(pages: &[String]) -> Fallible<Vec<(f64, u64)>> {
    let client = reqwest::Client::new();
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    for url in pages {
        let text = client
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .text()
            .await?;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("wds_delivery_latency_seconds_bucket{le=\"") else {
                continue;
            };
            let Some((le, count)) = rest.split_once("\"}") else {
                continue;
            };
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse()?
            };
            let count: u64 = count.trim().parse()?;
            match buckets.iter_mut().find(|(b, _)| *b == le) {
                Some((_, n)) => *n += count,
                None => buckets.push((le, count)),
            }
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(buckets)
}

/// The `q` quantile of a cumulative histogram, as "≤ bucket bound".
pub(crate) fn histogram_quantile(buckets: &[(f64, u64)], q: f64) -> String {
    let total = buckets.last().map_or(0, |b| b.1);
    let want = (q * total as f64).ceil() as u64;
    match buckets.iter().find(|(_, n)| *n >= want.max(1)) {
        Some((le, _)) if le.is_finite() => format!("≤ {} ms", le * 1e3),
        Some(_) => "> 16 s".into(),
        None => "n/a".into(),
    }
}

/// A job's checks: every line delivered, nothing dead, and no duplicate
/// at the receiver when it is the product's (which counts them).
pub(crate) fn check_job(
    report: &JobReport,
    lines: u64,
    receiver: Option<&ProductReceiver>,
) -> Fallible<()> {
    if !report.is_complete() || report.delivered != lines || report.dead != 0 {
        return Err(format!("the job did not deliver every line: {report:?}").into());
    }
    if let Some(duplicates) = receiver
        .map(ProductReceiver::duplicates)
        .filter(|&n| n != 0)
    {
        return Err(format!("the receiver saw {duplicates} repeated ids").into());
    }
    Ok(())
}

/// CPU seconds (user + system) process `pid` has used so far; 0 once it is gone.
pub(crate) fn cpu_of(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(0.0, |stat| wds_core::testkit::bench::stat_cpu(&stat))
}

impl Bench {
    /// Starts an initiator and `workers` worker processes on their own key
    /// prefix of `redis_url`, delivering to `webhook`.
    pub(crate) async fn deploy(
        &mut self,
        name: &str,
        redis_url: &str,
        workers: usize,
        worker_args: &[&str],
        webhook: &str,
    ) -> Fallible<Deployment> {
        let binary = self.binary()?;
        let base = self.dir.path().join(name);
        let inbox = base.join("inbox");
        std::fs::create_dir_all(&inbox)?;
        let common = |more: &[String]| {
            let mut args = vec![
                "--redis".to_string(),
                redis_url.to_string(),
                "--redis-prefix".into(),
                name.to_string(),
                "--data-dir".into(),
                base.display().to_string(),
                "--webhook-url".into(),
                webhook.to_string(),
            ];
            args.extend(more.iter().cloned());
            args
        };
        let mut ports = vec![reserve_port()];
        let api = loopback(&ports[0]);
        let mut initiator = spawn(
            &binary,
            &format!("{name}-initiator"),
            "initiator",
            &common(&["--api-listen".into(), api.to_string()]),
            &base,
        )?;
        initiator.wait_healthy(api).await?;
        let mut started = Vec::new();
        let mut pages = Vec::new();
        for i in 0..workers {
            ports.push(reserve_port());
            let metrics = loopback(&ports[ports.len() - 1]);
            pages.push(format!("http://{metrics}/metrics"));
            let mut args = vec!["--metrics-listen".to_string(), metrics.to_string()];
            args.extend(worker_args.iter().map(|s| s.to_string()));
            let mut worker = spawn(
                &binary,
                &format!("{name}-worker{i}"),
                "worker",
                &common(&args),
                &base,
            )?;
            worker.wait_healthy(metrics).await?;
            started.push(worker);
        }
        let backend = RedisBackend::builder(redis_url)
            .prefix(name)
            .connect()
            .await?;
        let admin = RedisAdmin::connect(redis_url).await?;
        Ok(Deployment {
            inbox,
            initiator,
            workers: started,
            metrics: pages,
            backend,
            admin,
            _ports: ports,
        })
    }
}

/// Starts `full_system <role> <args…>` logging warnings only, its log in
/// `dir/<name>.log`.
pub(crate) fn spawn(
    binary: &Path,
    name: &str,
    role: &str,
    args: &[String],
    dir: &Path,
) -> Fallible<Service> {
    let mut all = vec![role.to_string()];
    all.extend_from_slice(args);
    Ok(Service::spawn(binary, name, dir, &all, &[], "warn")?)
}
