//! Where a job's input file is now: in the inbox while it is read and
//! delivered, then in the archive (or the rejected folder).
//!
//! A job's id is derived from its file's identity (the SHA-256 of its
//! content and sidecar message), so a file is recognised by hashing it, not
//! by its name (an archived file may have been renamed `name.1.csv`, and an
//! upload's display name is not its file name). Each file is hashed once:
//! the index keeps its job id for as long as its length and modification
//! time are unchanged, so a request hashes only files that are new since
//! the last one. The index costs one entry per file in those folders.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use wds_core::source::IdentityHasher;
use wds_core::JobId;

/// A sidecar message larger than this is not one the folder source took.
const MAX_SIDECAR_BYTES: u64 = 64 * 1024;

/// The job ids of the files in some folders, by path.
#[derive(Debug, Default)]
pub(crate) struct JobFiles {
    known: Mutex<HashMap<PathBuf, Known>>,
}

#[derive(Debug, Clone)]
struct Known {
    len: u64,
    modified: Option<SystemTime>,
    job: JobId,
}

impl JobFiles {
    /// The file of `job` in one of `folders` (looked at in order), if any.
    /// Blocking: hashes the files not seen before.
    pub(crate) fn find(&self, folders: &[PathBuf], job: &JobId) -> io::Result<Option<PathBuf>> {
        let mut found = None;
        let mut seen = Vec::new();
        for folder in folders {
            let entries = match std::fs::read_dir(folder) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let path = entry?.path();
                if !is_input(&path) {
                    continue;
                }
                // A file that vanished or cannot be read is not this job's.
                let Ok(Some(id)) = self.job_of(&path) else {
                    continue;
                };
                if found.is_none() && &id == job {
                    found = Some(path.clone());
                }
                seen.push(path);
            }
        }
        // Forget files that are gone, so the index stays as big as the folders.
        self.lock().retain(|p, _| seen.contains(p));
        Ok(found)
    }

    /// The job id of one file, from the index or by hashing it.
    fn job_of(&self, path: &Path) -> io::Result<Option<JobId>> {
        let meta = std::fs::symlink_metadata(path)?;
        if !meta.is_file() {
            return Ok(None);
        }
        let modified = meta.modified().ok();
        if let Some(k) = self.lock().get(path) {
            if k.len == meta.len() && k.modified == modified && modified.is_some() {
                return Ok(Some(k.job.clone()));
            }
        }
        let job = identity_of(path)?;
        self.lock().insert(
            path.to_path_buf(),
            Known {
                len: meta.len(),
                modified,
                job: job.clone(),
            },
        );
        Ok(Some(job))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Known>> {
        // The map is a cache: a panic while it was held leaves it usable.
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether the folder source would take `path` as an input (not a hidden
/// or temporary file, not a sidecar or a reason beside a rejected file).
fn is_input(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !(name.starts_with('.')
        || name.ends_with(".part")
        || name.ends_with(".tmp")
        || name.ends_with(".message")
        || name.ends_with(".reason.txt"))
}

/// The job id the folder source gives `path`: its content's identity with
/// its sidecar message (trimmed; empty is none).
fn identity_of(path: &Path) -> io::Result<JobId> {
    let mut hasher = IdentityHasher::new();
    let mut file = File::open(path)?;
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    let message = sidecar(path)?;
    Ok(JobId::from_identity(
        &hasher.finish(None, message.as_deref()),
    ))
}

fn sidecar(path: &Path) -> io::Result<Option<String>> {
    let mut name = path.as_os_str().to_owned();
    name.push(".message");
    let file = match File::open(PathBuf::from(name)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    file.take(MAX_SIDECAR_BYTES).read_to_string(&mut text)?;
    let text = text.trim();
    Ok((!text.is_empty()).then(|| text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wds_core::Input;

    fn job_of_bytes(bytes: &[u8], message: Option<&str>) -> JobId {
        let input = Input::from_bytes("x", bytes.to_vec());
        let identity = match message {
            Some(message) => input.with_message(message).identity,
            None => input.identity,
        };
        JobId::from_identity(&identity)
    }

    #[test]
    fn finds_a_renamed_file_by_content_and_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let (inbox, done) = (dir.path().join("inbox"), dir.path().join("done"));
        std::fs::create_dir_all(&inbox).unwrap();
        std::fs::create_dir_all(&done).unwrap();
        std::fs::write(done.join("a.csv"), "u1\n").unwrap();
        std::fs::write(done.join("a.1.csv"), "u1\n").unwrap();
        std::fs::write(done.join("a.1.csv.message"), " hello \n").unwrap();
        std::fs::write(inbox.join(".hidden.part"), "u1\n").unwrap();
        let files = JobFiles::default();
        let folders = [inbox.clone(), done.clone()];
        let with_message = job_of_bytes(b"u1\n", Some("hello"));
        assert_eq!(
            files.find(&folders, &with_message).unwrap(),
            Some(done.join("a.1.csv"))
        );
        let without = job_of_bytes(b"u1\n", None);
        assert_eq!(
            files.find(&folders, &without).unwrap(),
            Some(done.join("a.csv"))
        );
        assert_eq!(
            files.find(&folders, &JobId::new("0".repeat(16))).unwrap(),
            None
        );
        // A file changed since it was indexed is hashed again.
        std::fs::write(done.join("a.csv"), "u2,changed and longer\n").unwrap();
        assert_eq!(files.find(&folders, &without).unwrap(), None);
    }
}
