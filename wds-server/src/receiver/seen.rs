//! The `webhook-id`s recorded in the last window, in memory and in a log
//! file, so that dedupe costs a bounded amount and survives a restart.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Ids seen, each with the time (ms since the epoch) it stops counting.
///
/// An id is remembered for `window` after it was recorded: with signatures
/// checked, a request replayed later than the tolerance is refused as stale
/// anyway, so the set holds at most the ids of one window. The log on disk
/// holds the same entries (plus expired ones until the next compaction),
/// one `expires_ms id` line each.
#[derive(Debug)]
pub(super) struct SeenIds {
    ids: HashMap<Box<str>, u64>,
    window_ms: u64,
    path: PathBuf,
    log: BufWriter<File>,
    /// Lines in the log file, live or expired.
    logged: usize,
}

impl SeenIds {
    /// Loads the ids of `path` still within the window and rewrites the log
    /// with only those.
    pub(super) fn open(path: PathBuf, window: Duration) -> io::Result<Self> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let now = wds_core::backend::now_ms();
        let mut ids = HashMap::new();
        for (expires, id) in read_id_log(&path)? {
            if expires > now {
                let kept = ids.entry(id.into_boxed_str()).or_insert(expires);
                *kept = (*kept).max(expires);
            }
        }
        let log = rewrite_id_log(&path, ids.iter().map(|(id, &e)| (e, &**id)))?;
        Ok(SeenIds {
            logged: ids.len(),
            ids,
            window_ms,
            path,
            log,
        })
    }

    /// Whether `id` was recorded within the window.
    pub(super) fn contains(&self, id: &str, now_ms: u64) -> bool {
        self.ids.get(id).is_some_and(|&expires| expires > now_ms)
    }

    /// Remembers `id` (buffered: see [`SeenIds::flush`]).
    pub(super) fn insert(&mut self, id: &str, now_ms: u64) -> io::Result<()> {
        let expires = now_ms.saturating_add(self.window_ms);
        self.ids.insert(id.into(), expires);
        writeln!(self.log, "{expires} {id}")?;
        self.logged += 1;
        Ok(())
    }

    /// Writes buffered entries to the log.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        self.log.flush()
    }

    /// Forgets expired ids; rewrites the log once it is mostly expired lines.
    pub(super) fn expire(&mut self, now_ms: u64) -> io::Result<()> {
        self.ids.retain(|_, &mut expires| expires > now_ms);
        if self.logged > 2 * self.ids.len() + 1024 {
            self.log.flush()?;
            self.log = rewrite_id_log(&self.path, self.ids.iter().map(|(id, &e)| (e, &**id)))?;
            self.logged = self.ids.len();
        }
        Ok(())
    }

    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Reads the `expires_ms id` lines of an id log, skipping malformed ones.
fn read_id_log(path: &Path) -> io::Result<Vec<(u64, String)>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for line in BufReader::new(file).split(b'\n') {
        let line = line?;
        let Ok(text) = std::str::from_utf8(&line) else {
            continue;
        };
        if let Some((expires, id)) = text.split_once(' ') {
            if let Ok(expires) = expires.parse() {
                out.push((expires, id.to_owned()));
            }
        }
    }
    Ok(out)
}

/// Replaces the id log at `path` with `entries`, atomically (a temporary
/// file renamed into place), and opens it for appending.
fn rewrite_id_log<'a>(
    path: &Path,
    entries: impl Iterator<Item = (u64, &'a str)>,
) -> io::Result<BufWriter<File>> {
    let mut tmp = path.as_os_str().to_owned();
    // Of this process: two receivers pointed at one output must not rename
    // each other's half-written file away.
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    {
        let mut out = BufWriter::new(File::create(&tmp)?);
        for (expires, id) in entries {
            writeln!(out, "{expires} {id}")?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(BufWriter::new(OpenOptions::new().append(true).open(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_expire_after_the_window_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids");
        let now = wds_core::backend::now_ms();
        let mut seen = SeenIds::open(path.clone(), Duration::from_secs(60)).unwrap();
        seen.insert("a", now).unwrap();
        seen.insert("old", now - 120_000).unwrap();
        seen.flush().unwrap();
        assert!(seen.contains("a", now));
        assert!(!seen.contains("old", now), "expired ids do not count");
        drop(seen);

        let mut seen = SeenIds::open(path.clone(), Duration::from_secs(60)).unwrap();
        assert!(seen.contains("a", now), "forgotten on reopen");
        assert_eq!(seen.len(), 1, "an expired id was reloaded");
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);

        // Many expired entries: the log is compacted.
        for i in 0..3000 {
            seen.insert(&format!("x{i}"), now - 120_000).unwrap();
        }
        seen.expire(now).unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    }
}
