//! `demo`: the whole system on one file, with a progress bar and a report.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;
use wds_core::{backend::now_ms, Input, JobId, JobReport};
use wds_server::Metrics;

use crate::roles::{self, bind, Backend, Fallible};
use crate::settings::{DemoArgs, Settings};

/// Generates `rows` users, drops them into the inbox, runs every role until
/// each line is accounted for, and prints the report.
pub(crate) async fn run(
    settings: &Settings,
    args: &DemoArgs,
    cancel: CancellationToken,
) -> Fallible<ExitCode> {
    if args.rows == 0 {
        return Err("--rows must be at least 1".into());
    }
    let backend = Backend::connect(settings, "demo").await?;
    // Free ports, so the demo runs next to anything already listening.
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let notifier_listener = bind(loopback, "notifier").await?;
    let api_listener = bind(loopback, "control API").await?;
    let notifier_addr = notifier_listener.local_addr().map_err(|e| e.to_string())?;
    let api_addr = api_listener.local_addr().map_err(|e| e.to_string())?;

    let stamp = now_ms();
    let output = settings
        .data_dir
        .join("outbox")
        .join(format!("demo-{stamp}.csv"));
    let services = cancel.child_token();
    let mut running = {
        let (settings_output, services) = (output.clone(), services.clone());
        let backend = backend.clone();
        let settings = settings.clone();
        tokio::spawn(async move {
            run_all(
                &settings,
                &backend,
                api_listener,
                notifier_listener,
                settings_output,
                services,
            )
            .await
        })
    };

    let inbox = settings.inbox();
    std::fs::create_dir_all(&inbox)
        .map_err(|e| format!("cannot create the inbox {}: {e}", inbox.display()))?;
    let name = format!("demo-{stamp}.csv");
    let job = write_users(
        &inbox,
        &name,
        args.rows,
        stamp,
        settings.default_message.clone(),
    )?;
    println!(
        "dropped {} users into {} (job {job})",
        args.rows,
        inbox.join(&name).display()
    );
    println!(
        "notifier on http://{notifier_addr}/webhook, control API on http://{api_addr}, backend: {}",
        backend.name
    );

    let started = Instant::now();
    let report = tokio::select! {
        report = follow(&backend, &job, args.rows, &cancel) => report,
        // A service that stops before the job is done failed to start or crashed.
        stopped = &mut running => {
            let stopped = stopped.map_err(|e| format!("services failed: {e}"))?;
            return Err(stopped.err().unwrap_or_else(|| "the services stopped before the job was done".into()));
        }
    };
    services.cancel();
    let stopped = running.await.map_err(|e| format!("services failed: {e}"))?;
    let Some(report) = report? else {
        println!("interrupted; the job is left as it is");
        return Ok(ExitCode::from(130));
    };
    stopped?;
    let wall = started.elapsed();
    let (out_lines, distinct) = count_output(&output)?;
    print_report(&report, &name, wall, &output, out_lines, distinct);
    let complete = report.accounted() == report.lines
        && report.lines == args.rows
        && out_lines == report.delivered
        && distinct == report.delivered;
    if complete {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: the report or the notifier's output does not add up (see above)");
        Ok(ExitCode::FAILURE)
    }
}

/// Runs notifier, initiator and worker together; the first to fail stops the others.
pub(crate) async fn run_all(
    settings: &Settings,
    backend: &Backend,
    api: tokio::net::TcpListener,
    notifier: tokio::net::TcpListener,
    output: std::path::PathBuf,
    cancel: CancellationToken,
) -> Fallible<()> {
    let notifier_addr = notifier.local_addr().map_err(|e| e.to_string())?;
    let metrics = Arc::new(Metrics::new());
    let stop_all = |r: Fallible<()>| {
        if r.is_err() {
            cancel.cancel();
        }
        r
    };
    let (n, i, w) = tokio::join!(
        async { stop_all(roles::notifier(settings, notifier, output, cancel.clone()).await) },
        async {
            let url = settings.webhook_url(notifier_addr);
            let initiator = roles::initiator(
                settings,
                backend,
                api,
                &url,
                metrics.clone(),
                cancel.clone(),
            );
            stop_all(initiator.await)
        },
        async {
            let url = settings.webhook_url(notifier_addr);
            stop_all(roles::worker(settings, backend, url, metrics.clone(), cancel.clone()).await)
        },
    );
    n.and(i).and(w)
}

/// Writes the users under a `.part` name, then renames it into place so the
/// initiator never reads half of it. Returns the job id it will become.
fn write_users(
    inbox: &Path,
    name: &str,
    rows: u64,
    stamp: u64,
    default_message: Option<String>,
) -> Fallible<JobId> {
    let part = inbox.join(format!(".{name}.part"));
    let err = |e: std::io::Error| format!("cannot write {}: {e}", part.display());
    let mut file = std::io::BufWriter::new(std::fs::File::create(&part).map_err(err)?);
    writeln!(file, "userId,alertMessage").map_err(err)?;
    for i in 1..=rows {
        writeln!(
            file,
            "user-{i},\"Demo {stamp}: your order #{i} has shipped\""
        )
        .map_err(err)?;
    }
    file.flush().map_err(err)?;
    drop(file);
    let mut input = Input::from_file(&part).map_err(|e| e.to_string())?;
    if let Some(message) = default_message {
        input = input.with_message(message);
    }
    std::fs::rename(&part, inbox.join(name)).map_err(err)?;
    Ok(JobId::from_identity(&input.identity))
}

/// Shows progress until the job is done (`Ok(Some)`) or the user interrupts (`Ok(None)`).
async fn follow(
    backend: &Backend,
    job: &JobId,
    rows: u64,
    cancel: &CancellationToken,
) -> Fallible<Option<JobReport>> {
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        let bar = ProgressBar::new(rows);
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40.cyan/blue}] {pos}/{len} accounted  {msg}  ETA {eta}",
            )
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
        );
        Some(bar)
    } else {
        None
    };
    let started = Instant::now();
    let mut last_line = Instant::now();
    loop {
        let report = tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            r = backend.offsets.report(job) => r.map_err(|e| e.to_string())?,
        };
        if let Some(r) = &report {
            let secs = started.elapsed().as_secs_f64().max(0.001);
            let rate = r.delivered as f64 / secs;
            let msg = format!(
                "read {} · delivered {} · dead {} · {:.0}/s",
                r.lines, r.delivered, r.dead, rate
            );
            match &bar {
                Some(bar) => {
                    bar.set_position(r.accounted());
                    bar.set_message(msg);
                }
                None if last_line.elapsed() >= Duration::from_secs(2) => {
                    println!("progress: {}/{rows} accounted · {msg}", r.accounted());
                    last_line = Instant::now();
                }
                None => {}
            }
            if r.is_finished() {
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
                return Ok(report);
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Lines in the notifier's output, and how many distinct users they name.
fn count_output(output: &Path) -> Fallible<(u64, u64)> {
    let mut reader = csv_reader(output)?;
    let mut users = std::collections::HashSet::new();
    let mut lines = 0u64;
    for record in reader.records() {
        let record = record.map_err(|e| format!("{}: {e}", output.display()))?;
        lines += 1;
        users.insert(record.get(0).unwrap_or_default().to_string());
    }
    Ok((lines, users.len() as u64))
}

fn csv_reader(path: &Path) -> Fallible<csv::Reader<std::fs::File>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .map_err(|e| format!("cannot read the notifier's output {}: {e}", path.display()))
}

fn print_report(
    r: &JobReport,
    name: &str,
    wall: Duration,
    output: &Path,
    out_lines: u64,
    distinct: u64,
) {
    let secs = wall.as_secs_f64().max(0.001);
    let verdict = if r.accounted() == r.lines {
        "every line accounted for"
    } else {
        "LINES MISSING"
    };
    println!("job {} ({name}): {verdict}", r.job);
    println!("  lines       {:>10}", r.lines);
    println!("  delivered   {:>10}", r.delivered);
    println!("  dead        {:>10}   (in doubt {})", r.dead, r.in_doubt);
    println!("  invalid     {:>10}", r.invalid);
    println!("  duplicate   {:>10}", r.duplicate);
    println!("  wall time   {:>10.2} s", secs);
    println!(
        "  rate        {:>10.0} deliveries/s",
        r.delivered as f64 / secs
    );
    println!(
        "  notifier    {out_lines:>10} lines, {distinct} distinct users, in {}",
        output.display()
    );
}
