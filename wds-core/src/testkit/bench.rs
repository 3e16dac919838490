//! Pieces for a backend's no-op-sink benchmark against the memory backend
//! (`redis_bench`, `sqlite_bench`): the sink, the input, one timed job, and
//! the figures.

use std::time::Instant;

use async_trait::async_trait;

use crate::{Delivered, Engine, Format, Input, JobReport, Message, Sink, SinkError};

/// Accepts everything at once: a benchmark with it measures the engine and
/// the backend.
#[derive(Debug)]
pub struct NoopSink;

#[async_trait]
impl Sink for NoopSink {
    async fn deliver(&self, _message: &Message) -> Result<Delivered, SinkError> {
        Ok(Delivered::with_status(200))
    }
}

/// A CSV job of `lines` distinct users; `salt` makes each one a new job.
pub fn csv_input(lines: u64, salt: &str) -> Input {
    let mut csv = String::with_capacity(lines as usize * 40);
    for i in 0..lines {
        csv.push_str(&format!("user-{i:07},Your alert number {i} ({salt})\n"));
    }
    Input::from_bytes(format!("bench-{salt}.csv"), csv.into_bytes()).with_format(Format::Csv)
}

/// Runs one job to its end; returns its report and the seconds from claim
/// to finish (the job's own `finished_ms - created_ms`, which leaves out
/// how long `run_once` takes to notice that the job is done).
///
/// # Errors
///
/// The engine's, or when the job did not deliver every line.
pub async fn timed_job(
    engine: &Engine,
    input: &Input,
) -> Result<(JobReport, f64), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let report = engine.run_once(input).await?;
    let wall = start.elapsed().as_secs_f64();
    if !report.is_complete() || report.delivered != report.lines {
        return Err(format!("the job did not complete: {report:?}").into());
    }
    let secs = report
        .elapsed()
        .map_or(wall, |d| d.as_secs_f64().max(0.001));
    Ok((report, secs))
}

/// The median and the smallest of `secs` (not empty).
pub fn median_and_best(secs: &mut [f64]) -> (f64, f64) {
    secs.sort_by(f64::total_cmp);
    (secs[secs.len() / 2], secs[0])
}

/// CPU seconds this process has used so far (user + system, all threads),
/// from `/proc/self/stat` in clock ticks of 10 ms; 0 where there is no
/// `/proc`.
pub fn process_cpu() -> f64 {
    std::fs::read_to_string("/proc/self/stat").map_or(0.0, |stat| stat_cpu(&stat))
}

/// CPU seconds (user + system) in the text of a `/proc/<pid>/stat` or
/// `/proc/<pid>/task/<tid>/stat` file, in clock ticks of 10 ms; 0 when it
/// does not parse.
pub fn stat_cpu(stat: &str) -> f64 {
    // utime and stime: the 12th and 13th fields after the command name.
    stat_seconds(stat, 11, 12)
}

/// CPU seconds (user + system) of the children this process has waited
/// for, from `/proc/self/stat`; 0 where there is no `/proc`.
pub fn children_cpu() -> f64 {
    // cutime and cstime: the 14th and 15th fields after the command name.
    std::fs::read_to_string("/proc/self/stat").map_or(0.0, |stat| stat_seconds(&stat, 13, 14))
}

/// The sum of two clock-tick fields of a `stat` text (counted after the
/// command name, which is in parentheses), in seconds; 0 when they do not
/// parse.
fn stat_seconds(stat: &str, user: usize, system: usize) -> f64 {
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map_or(Vec::new(), |(_, rest)| rest.split(' ').collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(user) + ticks(system)) / 100.0
}
