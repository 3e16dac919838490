//! Finished files on their way out of the folder: a done job's file to the
//! archive, a failed one's to the rejected folder with its reason, through
//! the job's handle; a move that fails is retried with back-off.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use tokio::time::Instant;

use super::files;
use super::opened::OpenedFile;
use super::scan::Tracker;
use super::scanner::lock;
use crate::source::IntakeStatus;

/// The longest pause between two tries of moving a finished file out.
const MAX_OUTBOX_BACKOFF: Duration = Duration::from_secs(30);

/// Finished files on their way out of the folder.
#[derive(Debug)]
pub(super) struct Outbox {
    pub(super) archive: Option<PathBuf>,
    pub(super) rejected: Option<PathBuf>,
    pub(super) tracker: Arc<StdMutex<Tracker>>,
    /// Moves that failed, retried with back-off.
    pub(super) pending: StdMutex<Vec<Pending>>,
}

/// A move that failed, waiting for its next try.
#[derive(Debug)]
pub(super) struct Pending {
    opened: OpenedFile,
    reason: Option<String>,
    next_at: Instant,
    pause: Duration,
}

impl Outbox {
    /// Moves `opened` out now, or queues it to be tried again.
    pub(super) async fn finish(
        &self,
        opened: OpenedFile,
        reason: Option<String>,
        status: &IntakeStatus,
    ) {
        if let Err(e) = self.move_out(&opened, reason.clone()).await {
            tracing::warn!(path = %opened.path().display(), error = %e, "cannot move the finished file out of the folder; retrying");
            status.set_archive_error(Some(format!("{}: {e}", opened.path().display())));
            let pause = Duration::from_secs(1);
            lock(&self.pending).push(Pending {
                opened,
                reason,
                next_at: Instant::now() + pause,
                pause,
            });
        }
    }

    /// Tries the queued moves that are due.
    pub(super) async fn retry_due(&self, status: &IntakeStatus) {
        let now = Instant::now();
        let due: Vec<Pending> = {
            let mut pending = lock(&self.pending);
            let (due, wait) = std::mem::take(&mut *pending)
                .into_iter()
                .partition(|p| p.next_at <= now);
            *pending = wait;
            due
        };
        if due.is_empty() {
            return;
        }
        for mut p in due {
            match self.move_out(&p.opened, p.reason.clone()).await {
                Ok(()) => {
                    tracing::info!(path = %p.opened.path().display(), "finished file moved out after a retry");
                }
                Err(e) => {
                    tracing::debug!(path = %p.opened.path().display(), error = %e, "still cannot move the finished file out");
                    status.set_archive_error(Some(format!("{}: {e}", p.opened.path().display())));
                    p.pause = (p.pause * 2).min(MAX_OUTBOX_BACKOFF);
                    p.next_at = now + p.pause;
                    lock(&self.pending).push(p);
                }
            }
        }
        if lock(&self.pending).is_empty() {
            status.set_archive_error(None);
        }
    }

    async fn move_out(&self, opened: &OpenedFile, reason: Option<String>) -> io::Result<()> {
        let folder = match &reason {
            Some(_) => self.rejected.clone(),
            None => self.archive.clone(),
        };
        let Some(folder) = folder else {
            if let Some(reason) = &reason {
                tracing::warn!(path = %opened.path().display(), %reason, "job failed; the file stays (no rejected folder)");
            }
            return Ok(());
        };
        let opened = opened.clone();
        let tracker = Arc::clone(&self.tracker);
        tokio::task::spawn_blocking(move || {
            let path = opened.path();
            let (target, was_ours) =
                files::move_out(opened.file(), opened.stamp(), path, &folder, reason.is_some())?;
            if let Some(target) = &target {
                if was_ours {
                    // The data file first: a crash in between must not
                    // leave the data file behind without its message.
                    files::move_sidecar(path, target)?;
                }
                if let Some(reason) = &reason {
                    files::write_reason(target, reason)?;
                    tracing::warn!(path = %path.display(), to = %target.display(), %reason, "job failed; file rejected");
                }
            }
            if was_ours || !path.exists() {
                files::remove_claim_note(path)?;
            }
            // Bytes appended after the job found the end, before the file
            // left the folder, are not part of the job any more: they go
            // back to the folder as a file of their own, a new job.
            if let (Some(end), Ok(meta), None) =
                (opened.end(), opened.file().metadata(), reason.as_ref())
            {
                if meta.len() > end {
                    let bytes = meta.len() - end;
                    match files::hand_back_appended(
                        opened.file(),
                        end,
                        path,
                        opened.default_message(),
                    ) {
                        Ok(new) => tracing::warn!(
                            path = %path.display(), bytes, to = %new.display(),
                            "bytes appended after the job read the file to its end become a new file"
                        ),
                        Err(e) => tracing::error!(
                            path = %path.display(), bytes, error = %e,
                            "bytes were appended after the job read the file to its end and cannot be handed back; they are not delivered"
                        ),
                    }
                }
            }
            lock(&tracker).release(path, opened.stamp());
            Ok(())
        })
        .await
        .map_err(io::Error::other)?
    }
}
