//! A file the folder source opened once: its job hashes, reads and
//! archives it through this one handle, following it while it grows and
//! failing when it is rewritten, truncated, replaced or removed.

use std::fmt::{self, Debug};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::files;
use super::scan::{wait_at_end, Stamp};
use crate::source::{IdentityHasher, StopReading};

/// How often a job reading a file checks that the file is still the one it
/// opened, between its ends.
const CHECK_EVERY: Duration = Duration::from_millis(200);
/// The longest nap while waiting at the end of a growing file (cancel is
/// noticed within it).
const NAP: Duration = Duration::from_millis(50);

/// A file opened once by the folder source (see
/// [`InputData::Opened`](crate::InputData::Opened)).
#[derive(Clone)]
pub struct OpenedFile {
    shared: Arc<Shared>,
}

struct Shared {
    file: Arc<File>,
    path: PathBuf,
    /// At hand-over.
    stamp: Stamp,
    handover: Handover,
    /// The length read when its job found the end.
    end: Mutex<Option<u64>>,
}

/// What the hand-over knew, for the job that follows the file.
#[derive(Clone, Debug)]
pub(super) struct Handover {
    pub(super) settle: Duration,
    /// When a change of the file was last seen before hand-over.
    pub(super) quiet_since: Instant,
    /// Hand-over found it complete already: quiet for the settle time (or
    /// renamed into place) and not held open for writing.
    pub(super) verified: bool,
    /// The input's identity, the default message it was made with, and how
    /// many bytes of the file it covers: those bytes must still hash to it
    /// when the job ends.
    pub(super) identity: String,
    pub(super) message: Option<String>,
    pub(super) covers: u64,
}

impl Debug for OpenedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedFile")
            .field("path", &self.shared.path)
            .field("dev", &self.shared.stamp.dev)
            .field("ino", &self.shared.stamp.ino)
            .finish_non_exhaustive()
    }
}

impl OpenedFile {
    pub(super) fn new(file: File, path: PathBuf, stamp: Stamp, handover: Handover) -> Self {
        OpenedFile {
            shared: Arc::new(Shared {
                file: Arc::new(file),
                path,
                stamp,
                handover,
                end: Mutex::new(None),
            }),
        }
    }

    /// The path it was opened at (it is never opened by this path again).
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    pub(super) fn file(&self) -> &File {
        &self.shared.file
    }

    pub(super) fn stamp(&self) -> &Stamp {
        &self.shared.stamp
    }

    /// The default message its job was made with.
    pub(super) fn default_message(&self) -> Option<&str> {
        self.shared.handover.message.as_deref()
    }

    /// How far its job read, once it found the end.
    pub(super) fn end(&self) -> Option<u64> {
        *self
            .shared
            .end
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads what is there now, from the start.
    pub(crate) fn reader(&self) -> PositionalReader<Arc<File>> {
        PositionalReader::new(Arc::clone(&self.shared.file))
    }

    /// Reads to the file's real end: at the end of what is there, waits
    /// until the file has been quiet for the settle time and nobody holds
    /// it open for writing, reading whatever is appended meanwhile. Fails
    /// with [`StopReading::Changed`] when the file is rewritten,
    /// truncated, replaced or removed, and with [`StopReading::Cancelled`]
    /// once `cancel` fires.
    pub(crate) fn following(&self, cancel: CancellationToken) -> Following {
        Following {
            at: self.reader(),
            shared: Arc::clone(&self.shared),
            cancel,
            hasher: Sha256::new(),
            from: 0,
            last: self.shared.stamp,
            quiet_since: self.shared.handover.quiet_since,
            checked_at: Instant::now(),
            ended: false,
        }
    }
}

/// Reads a file by position (`pread`), so several readers of one handle
/// never move each other's offset.
#[derive(Debug)]
pub(crate) struct PositionalReader<F> {
    file: F,
    pos: u64,
}

impl<F: Deref<Target = File>> PositionalReader<F> {
    pub(crate) fn new(file: F) -> Self {
        PositionalReader { file, pos: 0 }
    }
}

impl<F: Deref<Target = File>> Read for PositionalReader<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        #[cfg(unix)]
        let n = std::os::unix::fs::FileExt::read_at(&*self.file, buf, self.pos)?;
        #[cfg(windows)]
        let n = std::os::windows::fs::FileExt::seek_read(&*self.file, buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<F: Deref<Target = File>> Seek for PositionalReader<F> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let base = match to {
            SeekFrom::Start(n) => {
                self.pos = n;
                return Ok(n);
            }
            SeekFrom::End(d) => (self.file.metadata()?.len(), d),
            SeekFrom::Current(d) => (self.pos, d),
        };
        self.pos = base
            .0
            .checked_add_signed(base.1)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

/// See [`OpenedFile::following`].
#[derive(Debug)]
pub(crate) struct Following {
    at: PositionalReader<Arc<File>>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    /// The bytes handed out since `from`, checked again at the end.
    hasher: Sha256,
    from: u64,
    last: Stamp,
    quiet_since: Instant,
    checked_at: Instant,
    /// The end was found (and the bytes checked): nothing more to read.
    ended: bool,
}

impl Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn changed(reason: &str) -> io::Error {
    io::Error::other(StopReading::Changed(reason.to_owned()))
}

impl Following {
    /// Checks the file is still the one opened, and notes when it last
    /// changed.
    fn check(&mut self) -> io::Result<()> {
        self.checked_at = Instant::now();
        let meta = self.shared.file.metadata()?;
        let stamp = Stamp::of(&meta);
        if stamp.len < self.at.pos || stamp.len < self.shared.handover.covers {
            return Err(changed("the file was truncated while being read"));
        }
        match files::look(&self.shared.path)? {
            Some(files::Kind::File(s)) if s.same_file(&stamp) => {}
            Some(_) => {
                return Err(changed(
                    "the file was replaced under the same name while being read",
                ))
            }
            None => {
                return Err(changed(
                    "the file was removed (or moved away) before it was read completely",
                ))
            }
        }
        if stamp != self.last {
            self.last = stamp;
            self.quiet_since = Instant::now();
        }
        Ok(())
    }

    /// Whether the end of what is there is the end of the file.
    fn at_end(&mut self) -> io::Result<Option<Duration>> {
        self.check()?;
        let handover = &self.shared.handover;
        if handover.verified && self.last == self.shared.stamp {
            return Ok(None);
        }
        let now = Instant::now();
        let quiet = now.saturating_duration_since(self.quiet_since) >= handover.settle;
        // Looking through /proc costs: only once the file is quiet.
        let held = quiet && files::writer_of(&self.last).is_some();
        Ok(wait_at_end(handover.settle, self.quiet_since, now, held))
    }

    /// The bytes read from `from` are still the file's, and the bytes the
    /// identity covers still hash to it (they may have changed before this
    /// reader got to them).
    fn verify(&mut self) -> io::Result<()> {
        let expected = std::mem::take(&mut self.hasher).finalize();
        let mut hasher = Sha256::new();
        self.each_chunk(self.from, self.at.pos - self.from, |b| hasher.update(b))?;
        let handover = &self.shared.handover;
        let mut identity = IdentityHasher::new();
        self.each_chunk(0, handover.covers, |b| identity.update(b))?;
        if hasher.finalize() != expected
            || identity.finish(None, handover.message.as_deref()) != handover.identity
        {
            return Err(changed("the file was rewritten while being read"));
        }
        Ok(())
    }

    /// Calls `f` with the file's bytes from `from`, `len` of them at most.
    fn each_chunk(&self, from: u64, len: u64, mut f: impl FnMut(&[u8])) -> io::Result<()> {
        let mut again = PositionalReader {
            file: Arc::clone(&self.shared.file),
            pos: from,
        }
        .take(len);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match again.read(&mut buf)? {
                0 => return Ok(()),
                n => f(&buf[..n]),
            }
        }
    }
}

impl Read for Following {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.ended {
                return Ok(0);
            }
            if self.cancel.is_cancelled() {
                return Err(io::Error::other(StopReading::Cancelled));
            }
            if self.checked_at.elapsed() >= CHECK_EVERY {
                self.check()?;
            }
            let n = self.at.read(buf)?;
            if n > 0 {
                self.hasher.update(&buf[..n]);
                return Ok(n);
            }
            match self.at_end()? {
                None => {
                    self.verify()?;
                    self.ended = true;
                    *self
                        .shared
                        .end
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(self.at.pos);
                    return Ok(0);
                }
                Some(wait) => std::thread::sleep(wait.min(NAP)),
            }
        }
    }
}

impl Seek for Following {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = self.at.seek(to)?;
        self.hasher = Sha256::new();
        self.from = pos;
        self.ended = false;
        Ok(pos)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::io::Write;

    use super::*;

    const SETTLE: Duration = Duration::from_millis(300);

    /// Opens `path` as the source does, handed over at a close (so its
    /// reader waits for `settle` of quiet at the end).
    fn open_with(path: &Path, settle: Duration) -> OpenedFile {
        let (file, stamp) = files::open_regular(path).unwrap().unwrap();
        let mut identity = IdentityHasher::new();
        identity.update(&std::fs::read(path).unwrap());
        let handover = Handover {
            settle,
            quiet_since: Instant::now(),
            verified: false,
            identity: identity.finish(None, None),
            message: None,
            covers: stamp.len,
        };
        OpenedFile::new(file, path.to_path_buf(), stamp, handover)
    }

    fn open(path: &Path) -> OpenedFile {
        open_with(path, SETTLE)
    }

    fn read_all(reader: &mut Following) -> io::Result<String> {
        let mut text = String::new();
        reader.read_to_string(&mut text)?;
        Ok(text)
    }

    fn reason(e: &io::Error) -> String {
        match StopReading::of(e) {
            Some(StopReading::Changed(reason)) => reason.clone(),
            other => panic!("expected a change, got {other:?} ({e})"),
        }
    }

    #[test]
    fn appends_are_read_until_the_file_is_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        std::fs::write(&path, "u1\n").unwrap();
        let opened = open(&path);
        let mut reader = opened.following(CancellationToken::new());
        let appender = std::thread::spawn({
            let path = path.clone();
            move || {
                for i in 2..=4 {
                    std::thread::sleep(SETTLE / 3);
                    let mut f = std::fs::OpenOptions::new()
                        .append(true)
                        .open(&path)
                        .unwrap();
                    writeln!(f, "u{i}").unwrap();
                }
            }
        });
        assert_eq!(read_all(&mut reader).unwrap(), "u1\nu2\nu3\nu4\n");
        appender.join().unwrap();
        assert_eq!(opened.end(), Some(12));
    }

    #[test]
    fn a_truncated_removed_replaced_or_rewritten_file_stops_its_reader() {
        let dir = tempfile::tempdir().unwrap();
        type Change = fn(&Path);
        let cases: [(&str, Change); 4] = [
            ("truncated", |p| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(p)
                    .unwrap()
                    .set_len(1)
                    .unwrap();
            }),
            ("removed", |p| std::fs::remove_file(p).unwrap()),
            ("replaced", |p| {
                let other = p.with_extension("new");
                std::fs::write(&other, "x\n").unwrap();
                std::fs::rename(&other, p).unwrap();
            }),
            ("rewritten", |p| {
                let mut f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
                f.write_all(b"XX").unwrap();
            }),
        ];
        for (expected, change) in cases {
            let path = dir.path().join(format!("{expected}.csv"));
            std::fs::write(&path, "u1\nu2\n").unwrap();
            let opened = open(&path);
            let mut reader = opened.following(CancellationToken::new());
            let mut first = [0u8; 6];
            reader.read_exact(&mut first).unwrap();
            change(&path);
            let err = read_all(&mut reader).expect_err(expected);
            assert!(reason(&err).contains(expected), "{expected}: {err}");
            assert_eq!(opened.end(), None, "{expected}: no end was found");
        }
    }

    #[test]
    fn a_change_before_the_reader_starts_is_caught_too() {
        let dir = tempfile::tempdir().unwrap();
        // Hashed at hand-over, changed before its job read a byte.
        let path = dir.path().join("early.csv");
        std::fs::write(&path, "u1\nu2\n").unwrap();
        let opened = open(&path);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(3)
            .unwrap();
        let err = read_all(&mut opened.following(CancellationToken::new())).unwrap_err();
        assert!(reason(&err).contains("truncated"), "{err}");

        let path = dir.path().join("same-length.csv");
        std::fs::write(&path, "u1\nu2\n").unwrap();
        let opened = open(&path);
        std::fs::write(&path, "u3\nu4\n").unwrap();
        let err = read_all(&mut opened.following(CancellationToken::new())).unwrap_err();
        assert!(reason(&err).contains("rewritten"), "{err}");
    }

    #[test]
    fn cancel_stops_a_reader_waiting_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        std::fs::write(&path, "u1\n").unwrap();
        let opened = open_with(&path, Duration::from_secs(3600));
        let cancel = CancellationToken::new();
        let mut reader = opened.following(cancel.clone());
        let started = Instant::now();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            cancel.cancel();
        });
        let err = read_all(&mut reader).expect_err("cancelled");
        assert!(matches!(
            StopReading::of(&err),
            Some(StopReading::Cancelled)
        ));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
