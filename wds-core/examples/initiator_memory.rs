//! Peak memory of the reading side (what an initiator does per file) for
//! files of 1 M, 10 M and (with `--full`) 50 M lines.
//!
//! ```sh
//! cargo run --release -p wds-core --example initiator_memory            # 1 M, 10 M
//! cargo run --release -p wds-core --example initiator_memory -- --full  # and 50 M
//! ```
//!
//! Each size runs in a child process of its own, so its peak resident set
//! (`VmHWM`) is that file's alone. The child reads the file with the real
//! `Batcher` into a backend that keeps only the job's checkpoint and
//! counts, so what is measured is the reader: parsing, batching and the
//! per-job duplicate filter, not a backend holding the messages. One line
//! in 50 repeats an earlier one, so the filter has duplicates to find.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wds_core::{
    async_trait,
    backend::{
        Backend, Checkpoint, Claim, Lease, LineOutcome, OffsetStore, Push, Pushed, Queue,
        QueueStats, Reject, RejectKind, Settle,
    },
    engine::Batcher,
    EngineConfig, Format, Input, JobId, JobMeta, JobReport, JobState, MessageId,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--child") {
        return child(Path::new(&args[at + 1]));
    }
    let mut sizes = vec![1_000_000u64, 10_000_000];
    if args.iter().any(|a| a == "--full") {
        sizes.push(50_000_000);
    }
    let dir = tempfile::tempdir()?;
    println!(
        "| lines | file | peak RSS | peak RSS, filter kept in memory | read time | duplicates |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for lines in sizes {
        let path = dir.path().join(format!("users-{lines}.csv"));
        write_file(&path, lines)?;
        let size = std::fs::metadata(&path)?.len();
        let bounded = measure(&path, dir.path(), None)?;
        let unbounded = measure(&path, dir.path(), Some(usize::MAX))?;
        println!(
            "| {lines} | {:.0} MB | {:.1} MB ({:.2} B/line) | {:.1} MB | {:.1} s | {} |",
            size as f64 / 1e6,
            bounded.peak_mib,
            bounded.peak_mib * 1024.0 * 1024.0 / lines as f64,
            unbounded.peak_mib,
            bounded.secs,
            bounded.duplicates,
        );
        std::fs::remove_file(&path)?;
    }
    Ok(())
}

/// What one child measured.
struct Measured {
    peak_mib: f64,
    secs: f64,
    duplicates: u64,
}

/// Reads `path` in a child process; `memory_pairs` overrides the duplicate
/// filter's memory budget (`usize::MAX`: never spill, all in memory).
fn measure(
    path: &Path,
    tmp: &Path,
    memory_pairs: Option<usize>,
) -> Result<Measured, Box<dyn std::error::Error>> {
    let mut child = std::process::Command::new(std::env::current_exe()?);
    child.arg("--child").arg(path).env("TMPDIR", tmp);
    if let Some(pairs) = memory_pairs {
        child.env("MEMORY_PAIRS", pairs.to_string());
    }
    let out = child.output()?;
    if !out.status.success() {
        return Err(format!("child failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let report = String::from_utf8(out.stdout)?;
    let field = |name: &str| -> Result<f64, Box<dyn std::error::Error>> {
        Ok(report
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .ok_or_else(|| format!("no {name} in {report:?}"))?
            .parse()?)
    };
    Ok(Measured {
        peak_mib: field("peak_kib")? / 1024.0,
        secs: field("secs")?,
        duplicates: field("duplicates")? as u64,
    })
}

/// `lines` lines of `user-N,message`; every 50th repeats the line 1,001
/// before it.
fn write_file(path: &Path, lines: u64) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    for i in 1..=lines {
        let user = if i % 50 == 0 && i > 1_001 {
            i - 1_001
        } else {
            i
        };
        writeln!(out, "user-{user},Your order {user} has shipped")?;
    }
    out.flush()
}

fn child(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let backend = Checkpoints::default();
        let mut config = EngineConfig::default();
        config.high_water = u64::MAX;
        if let Ok(pairs) = std::env::var("MEMORY_PAIRS") {
            config.dedupe_memory_pairs = pairs.parse()?;
        }
        let batcher = Batcher::new(backend, config)?;
        let input = Input::from_file(path)?.with_format(Format::Csv);
        let start = Instant::now();
        let report = batcher.run(&input, &Default::default()).await?;
        let secs = start.elapsed().as_secs_f64();
        let peak_kib = peak_rss_kib()?;
        println!(
            "peak_kib={peak_kib} secs={secs:.1} lines={} duplicates={}",
            report.lines, report.duplicate,
        );
        Ok(())
    })
}

/// `VmHWM` of this process, in KiB.
fn peak_rss_kib() -> Result<u64, Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .ok_or("no VmHWM in /proc/self/status")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmHWM")?.parse()?)
}

/// A backend that keeps only what reading needs: the checkpoint and the
/// counts, so the memory measured is the reader's.
#[derive(Clone, Debug, Default)]
struct Checkpoints {
    state: Arc<Mutex<(Checkpoint, u64, u64, u64)>>, // checkpoint, messages, invalid, duplicates
}

// Its queue and offsets are the one `state`.
impl Backend for Checkpoints {}

const JOB: &str = "measured";

#[async_trait]
impl Queue for Checkpoints {
    async fn push(&self, push: &Push) -> wds_core::Result<Pushed> {
        let mut state = self.state.lock().expect("not poisoned");
        if push.next.seq != state.0.seq + 1 {
            return Ok(Pushed {
                applied: false,
                depth: 0,
            });
        }
        state.0 = push.next;
        state.1 += push.messages.len() as u64;
        for reject in &push.rejects {
            match reject.kind {
                RejectKind::Invalid { .. } => state.2 += 1,
                RejectKind::Duplicate { .. } => state.3 += 1,
            }
        }
        Ok(Pushed {
            applied: true,
            depth: 0,
        })
    }
    async fn lease(&self, _: usize, _: Duration) -> wds_core::Result<Vec<Lease>> {
        Ok(Vec::new())
    }
    async fn mark_sending(&self, _: &Lease) -> wds_core::Result<()> {
        Ok(())
    }
    async fn extend(&self, _: &Lease, _: Duration) -> wds_core::Result<u64> {
        Ok(0)
    }
    async fn settle(&self, _: &Lease, _: &[Settle]) -> wds_core::Result<()> {
        Ok(())
    }
    async fn release(&self, _: &Lease) -> wds_core::Result<()> {
        Ok(())
    }
    async fn dead_letters(
        &self,
        _: Option<&JobId>,
        _: usize,
    ) -> wds_core::Result<Vec<wds_core::DeadLetter>> {
        Ok(Vec::new())
    }
    async fn replay(&self, _: Option<&JobId>) -> wds_core::Result<u64> {
        Ok(0)
    }
    async fn stats(&self) -> wds_core::Result<QueueStats> {
        Ok(QueueStats::default())
    }
}

#[async_trait]
impl OffsetStore for Checkpoints {
    async fn claim(&self, _: &str, meta: JobMeta) -> wds_core::Result<Claim> {
        Ok(Claim {
            job: JobId::new(JOB),
            fresh: true,
            meta,
        })
    }
    async fn checkpoint(&self, _: &JobId) -> wds_core::Result<Checkpoint> {
        Ok(self.state.lock().expect("not poisoned").0)
    }
    async fn report(&self, job: &JobId) -> wds_core::Result<Option<JobReport>> {
        let (checkpoint, messages, invalid, duplicate) = *self.state.lock().expect("not poisoned");
        let state = JobState::of(
            false,
            checkpoint.done,
            messages + invalid + duplicate,
            checkpoint.records,
        );
        let mut report = JobReport::new(job.clone(), JobMeta::new(JOB, Format::Csv, 0), state);
        report.lines = checkpoint.records;
        report.enqueued = messages;
        report.delivered = messages;
        report.invalid = invalid;
        report.duplicate = duplicate;
        Ok(Some(report))
    }
    async fn reports(&self) -> wds_core::Result<Vec<JobReport>> {
        Ok(Vec::new())
    }
    async fn outcome(&self, _: &MessageId) -> wds_core::Result<Option<LineOutcome>> {
        Ok(None)
    }
    async fn rejects(&self, _: &JobId, _: usize) -> wds_core::Result<Vec<Reject>> {
        Ok(Vec::new())
    }
    async fn fail(&self, job: &JobId, _: &str) -> wds_core::Result<JobReport> {
        Ok(self.report(job).await?.expect("always there"))
    }
}
