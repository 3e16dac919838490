//! Job notices, from the initiator: a log line when a job finishes, with its
//! counts, and the optional completion webhook (`--on-job-done URL`) that
//! posts the job's report as JSON, signed like every delivery.
//!
//! Which jobs were announced is kept in `DATA_DIR/notices` (a job id a
//! line, appended once the notice is out), so an initiator that stops
//! with a notice pending (unsent, or failing) sends it at its next start.
//! The `webhook-id` is derived from the job id (`<job>:done`): a receiver
//! drops the repeat if a crash came between sending and noting.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wds_core::{backend::OffsetStore, JobId, JobReport, SinkError};
use wds_http::HttpSink;

/// How often the initiator looks for jobs that finished.
const POLL: Duration = Duration::from_secs(1);
/// Attempts at one notice in one run; a notice still unsent after them is
/// sent again at the next start.
const ATTEMPTS: u32 = 5;
/// The longest wait between two attempts.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// The jobs already announced: `DATA_DIR/notices`, a job id a line.
#[derive(Debug)]
struct Ledger {
    path: PathBuf,
    announced: HashSet<JobId>,
}

impl Ledger {
    /// The ledger at `path`, and whether it existed.
    fn open(path: &Path) -> std::io::Result<(Ledger, bool)> {
        let (text, existed) = match std::fs::read_to_string(path) {
            Ok(text) => (text, true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), false),
            Err(e) => return Err(e),
        };
        let announced = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(JobId::new)
            .collect();
        let ledger = Ledger {
            path: path.to_path_buf(),
            announced,
        };
        Ok((ledger, existed))
    }

    /// Rewrites the ledger with the jobs of `known` it holds (through a
    /// temporary file): jobs the backend forgot need no line any more.
    fn compact(&mut self, known: &HashSet<&JobId>) -> std::io::Result<()> {
        self.announced.retain(|job| known.contains(job));
        let mut text = String::with_capacity(self.announced.len() * 17);
        for job in &self.announced {
            text.push_str(job.as_str());
            text.push('\n');
        }
        let temp = self.path.with_extension("part");
        std::fs::write(&temp, text)?;
        std::fs::rename(&temp, &self.path)
    }

    fn contains(&self, job: &JobId) -> bool {
        self.announced.contains(job)
    }

    /// Notes `job` as announced, on disk before in memory.
    fn note(&mut self, job: JobId) -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        writeln!(file, "{job}")?;
        file.sync_data()?;
        self.announced.insert(job);
        Ok(())
    }
}

/// Announces every job that finishes until `cancel` fires: logs it and,
/// with a `hook`, posts its report there. Never fails: a problem is logged.
pub(crate) async fn announce(
    offsets: Arc<dyn OffsetStore>,
    hook: Option<Arc<HttpSink>>,
    ledger_path: PathBuf,
    cancel: CancellationToken,
) {
    let Some(mut ledger) = first_ledger(offsets.as_ref(), &ledger_path, &cancel).await else {
        return;
    };
    let (sent_tx, mut sent) = mpsc::unbounded_channel::<JobId>();
    // Jobs being sent, or given up on in this run.
    let mut busy: HashSet<JobId> = HashSet::new();
    let mut sending = JoinSet::new();
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            Some(job) = sent.recv() => {
                if let Err(e) = ledger.note(job.clone()) {
                    tracing::warn!(%job, error = %e, path = %ledger.path.display(), "cannot note a sent completion notice; it may be sent again after a restart");
                }
                continue;
            }
            () = tokio::time::sleep(POLL) => {}
        }
        while sending.try_join_next().is_some() {}
        let reports = match offsets.reports().await {
            Ok(reports) => reports,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list jobs to announce the finished ones");
                continue;
            }
        };
        for report in reports {
            if !report.is_finished() || ledger.contains(&report.job) || busy.contains(&report.job) {
                continue;
            }
            log_finished(&report);
            match &hook {
                None => {
                    if let Err(e) = ledger.note(report.job.clone()) {
                        tracing::warn!(job = %report.job, error = %e, "cannot note an announced job");
                        busy.insert(report.job.clone());
                    }
                }
                Some(hook) => {
                    busy.insert(report.job.clone());
                    let (hook, sent) = (Arc::clone(hook), sent_tx.clone());
                    sending.spawn(async move {
                        if send(&hook, &report).await {
                            let _ = sent.send(report.job);
                        }
                    });
                }
            }
        }
    }
    let pending = sending.len();
    sending.abort_all();
    if pending > 0 {
        tracing::warn!(
            pending,
            "stopping with completion notices unsent: they are sent at the next start"
        );
    }
    // Notices sent while stopping.
    while let Ok(job) = sent.try_recv() {
        let _ = ledger.note(job);
    }
}

/// The ledger, after dropping the jobs the backend no longer has. At the
/// first start (no ledger yet) every job already finished is noted without
/// a notice, rather than announcing a whole history at once.
async fn first_ledger(
    offsets: &dyn OffsetStore,
    path: &Path,
    cancel: &CancellationToken,
) -> Option<Ledger> {
    let (mut ledger, existed) = match Ledger::open(path) {
        Ok(opened) => opened,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the notices ledger: no job will be announced");
            return None;
        }
    };
    let reports = loop {
        match offsets.reports().await {
            Ok(reports) => break reports,
            Err(e) => tracing::warn!(error = %e, "cannot list jobs; trying again"),
        }
        tokio::select! {
            () = cancel.cancelled() => return None,
            () = tokio::time::sleep(POLL) => {}
        }
    };
    let known: HashSet<&JobId> = reports.iter().map(|r| &r.job).collect();
    if !existed {
        ledger.announced.extend(
            reports
                .iter()
                .filter(|r| r.is_finished())
                .map(|r| r.job.clone()),
        );
        let before = ledger.announced.len();
        if before > 0 {
            tracing::info!(
                jobs = before,
                "jobs finished before notices were kept are not announced"
            );
        }
    }
    if let Err(e) = ledger.compact(&known) {
        tracing::error!(path = %path.display(), error = %e, "cannot write the notices ledger: no job will be announced");
        return None;
    }
    Some(ledger)
}

/// The line an operator reads when a job finishes.
fn log_finished(r: &JobReport) {
    let elapsed_ms = r.elapsed().map_or(0, |d| d.as_millis() as u64);
    tracing::info!(
        job = %r.job,
        name = %r.meta.name,
        state = ?r.state,
        lines = r.lines,
        delivered = r.delivered,
        dead = r.dead,
        permanent = r.permanent,
        exhausted = r.exhausted,
        in_doubt = r.in_doubt,
        invalid = r.invalid,
        duplicate = r.duplicate,
        elapsed_ms,
        failure = r.failure.as_deref().unwrap_or(""),
        "job finished"
    );
}

/// Posts `report` to `hook`, trying a few times; true once it is delivered.
async fn send(hook: &HttpSink, report: &JobReport) -> bool {
    let job = &report.job;
    let body = match serde_json::to_vec(report) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(%job, error = %e, "cannot encode a job report");
            return false;
        }
    };
    let id = format!("{job}:done");
    let mut wait = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        let error = match hook.post(&id, body.clone()).await {
            Ok(delivered) => {
                tracing::info!(%job, status = ?delivered.status, "completion notice sent");
                return true;
            }
            Err(e) => e,
        };
        if let SinkError::Permanent { .. } = error {
            tracing::error!(%job, %error, "completion notice refused; sent again at the next start");
            return false;
        }
        if attempt == ATTEMPTS {
            tracing::error!(%job, %error, attempts = ATTEMPTS, "completion notice not delivered; sent again at the next start");
            return false;
        }
        let pause = match error {
            SinkError::RateLimited {
                retry_after: Some(after),
                ..
            } => after.min(MAX_WAIT),
            _ => wait,
        };
        tracing::warn!(%job, %error, attempt, "completion notice failed; trying again");
        tokio::time::sleep(pause).await;
        wait = (wait * 2).min(MAX_WAIT);
    }
    false
}
