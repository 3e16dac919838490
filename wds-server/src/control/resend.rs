//! Re-sending a finished job's file on purpose, as a new job.
//!
//! A file dropped twice is one job (its identity is its content, format and
//! message), so a repeat is never sent by accident. `POST /jobs/{id}/resend`
//! is the explicit way: it finds the job's file in the archive (the one
//! whose identity gives the job's id), and reads it as a new job whose
//! identity is the original's followed by `"\0resend:<k>"`, `k` the first
//! number not yet used. The new job has its own id (so its `webhook-id`s
//! differ from the first job's and a receiver does not drop them as
//! repeats), the same lines, format and default message, and the display
//! name `"<name> (resend <k>)"`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;
use wds_core::{Engine, Input, JobId, JobReport};

/// Reads archived files again as new jobs, for `POST /jobs/{id}/resend`
/// (see [`ControlConfig::resend`](super::ControlConfig::resend)).
#[derive(Clone, Debug)]
pub struct Resender {
    archive: PathBuf,
    engine: Engine,
}

/// Why a resend could not start.
#[derive(Debug)]
pub(super) enum NotResent {
    /// No file in the archive has the job's identity.
    NotArchived,
    /// Reading the archive failed.
    Io(String),
    /// The backend failed.
    Backend(wds_core::Error),
}

impl Resender {
    /// Resends from `archive` (the folder source's archive) through
    /// `engine` (its batcher reads the file; the workers deliver it).
    pub fn new(archive: impl Into<PathBuf>, engine: Engine) -> Self {
        Resender {
            archive: archive.into(),
            engine,
        }
    }

    /// Starts reading `report`'s archived file as a new job; returns its id.
    pub(super) async fn resend(&self, report: &JobReport) -> Result<JobId, NotResent> {
        let archive = self.archive.clone();
        let (job, name, message) = (
            report.job.clone(),
            report.meta.name.clone(),
            report.meta.default_message.clone(),
        );
        let found = tokio::task::spawn_blocking(move || find(&archive, &name, &job, message))
            .await
            .map_err(|e| NotResent::Io(e.to_string()))??;
        let mut input = found;
        input.format = Some(report.meta.format);
        let original = input.identity.clone();
        let offsets = self.engine.offsets();
        let mut k = 1u32;
        let job = loop {
            let identity = format!("{original}\0resend:{k}");
            let job = JobId::from_identity(&identity);
            match offsets.report(&job).await {
                Ok(None) => {
                    input.identity = identity;
                    input.name = format!("{} (resend {k})", report.meta.name);
                    break job;
                }
                Ok(Some(_)) => k += 1,
                Err(e) => return Err(NotResent::Backend(e)),
            }
        };
        let batcher = self.engine.batcher();
        tokio::spawn(async move {
            if let Err(e) = batcher.run(&input, &CancellationToken::new()).await {
                tracing::error!(name = %input.name, error = %e, "reading a resent file failed");
            }
        });
        Ok(job)
    }
}

/// The archived file of `job`: named `name` or `stem.N.ext` (the archive
/// numbers a name already taken), with the job's identity.
fn find(
    archive: &Path,
    name: &str,
    job: &JobId,
    message: Option<String>,
) -> Result<Input, NotResent> {
    let as_path = Path::new(name);
    let stem = as_path
        .file_stem()
        .and_then(OsStr::to_str)
        .unwrap_or(name)
        .to_owned();
    let entries = std::fs::read_dir(archive).map_err(|e| {
        NotResent::Io(format!(
            "cannot read the archive {}: {e}",
            archive.display()
        ))
    })?;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(candidate) = file_name.to_str() else {
            continue;
        };
        if !(candidate == name || candidate.starts_with(&format!("{stem}.")))
            || candidate.ends_with(".message")
            || !entry.file_type().is_ok_and(|t| t.is_file())
        {
            continue;
        }
        let Ok(mut input) = Input::from_file(&entry.path()) else {
            continue;
        };
        if let Some(message) = &message {
            input = input.with_message(message.clone());
        }
        if &JobId::from_identity(&input.identity) == job {
            return Ok(input);
        }
    }
    Err(NotResent::NotArchived)
}
