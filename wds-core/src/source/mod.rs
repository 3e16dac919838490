//! The [`Source`] trait and the inputs it yields.

use std::fmt::{self, Debug};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::model::{Format, JobReport};

mod channel;
#[cfg(feature = "folder")]
mod folder;
mod status;

pub use channel::{ChannelSource, Submitter};
#[cfg(feature = "folder")]
pub use folder::{FolderSource, FolderSourceBuilder, OpenedFile};
pub use status::{IntakeReport, IntakeStatus, Skipped};

/// Where an input's bytes are.
#[derive(Clone)]
pub enum InputData {
    /// A file on local disk (read, never modified, by the engine).
    File(PathBuf),
    /// Bytes in memory (programmatic submission).
    Bytes(Arc<[u8]>),
    /// A file the folder source opened once: read through that handle,
    /// never by its path, and followed while it grows (see
    /// [`FolderSource`]).
    #[cfg(feature = "folder")]
    Opened(OpenedFile),
}

impl Debug for InputData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputData::File(p) => f.debug_tuple("File").field(p).finish(),
            InputData::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            #[cfg(feature = "folder")]
            InputData::Opened(o) => f.debug_tuple("Opened").field(o).finish(),
        }
    }
}

/// A complete input, ready to become a job.
#[derive(Clone, Debug)]
pub struct Input {
    /// The input's name (the file name): what the format is detected from
    /// and errors name.
    pub name: String,
    /// The job's name when it is not `name` (an upload's client file name,
    /// fit for display by [`crate::parse::text::display_name`]).
    pub display_name: Option<String>,
    /// The input's identity: equal identities are the same job. Made from the
    /// content's SHA-256, the format and the default message, so the same file
    /// dropped twice, or seen by two initiators, is claimed once.
    pub identity: String,
    /// The bytes.
    pub data: InputData,
    /// The format, when known; otherwise detected from the name and content.
    pub format: Option<Format>,
    /// The message for lines that carry only a user id.
    pub default_message: Option<String>,
}

/// Where a display name for the file `data` may wait, beside it:
/// `.NAME.wds-name` (a dotfile, so never an input itself). The control API
/// writes an upload's client file name there before the file lands in the
/// watched folder, and the folder source shows it as the job's name.
pub fn display_name_file(data: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(data.file_name().unwrap_or(std::ffi::OsStr::new("input")));
    name.push(".wds-name");
    data.with_file_name(name)
}

impl Input {
    /// An input from bytes in memory.
    pub fn from_bytes(
        name: impl Into<String>,
        bytes: impl Into<Arc<[u8]>>,
        format: Option<Format>,
        default_message: Option<String>,
    ) -> Self {
        let bytes: Arc<[u8]> = bytes.into();
        let mut hasher = IdentityHasher::new();
        hasher.update(&bytes);
        let identity = hasher.finish(format, default_message.as_deref());
        Input {
            name: name.into(),
            display_name: None,
            identity,
            data: InputData::Bytes(bytes),
            format,
            default_message,
        }
    }

    /// An input from a file, hashing its content (blocking I/O: call it from
    /// `spawn_blocking` in async code).
    pub fn from_file(
        path: &Path,
        format: Option<Format>,
        default_message: Option<String>,
    ) -> Result<Self> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let io_err = |source| Error::Input {
            name: name.clone(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io_err)?;
        let mut hasher = IdentityHasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(io_err)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let identity = hasher.finish(format, default_message.as_deref());
        Ok(Input {
            name,
            display_name: None,
            identity,
            data: InputData::File(path.to_path_buf()),
            format,
            default_message,
        })
    }

    /// Opens the bytes for reading.
    pub fn open(&self) -> Result<Box<dyn ReadSeek>> {
        match &self.data {
            InputData::File(path) => {
                let f = std::fs::File::open(path).map_err(|source| Error::Input {
                    name: self.name.clone(),
                    source,
                })?;
                Ok(Box::new(f))
            }
            InputData::Bytes(b) => Ok(Box::new(std::io::Cursor::new(b.clone()))),
            #[cfg(feature = "folder")]
            InputData::Opened(o) => Ok(Box::new(o.reader())),
        }
    }

    /// Opens the bytes for reading to the input's real end: a file the
    /// folder source opened is followed while it grows, and reading fails
    /// with [`StopReading`] when it changes or `cancel` fires. Other inputs
    /// read as [`open`](Input::open).
    pub(crate) fn open_following(&self, cancel: &CancellationToken) -> Result<Box<dyn ReadSeek>> {
        match &self.data {
            #[cfg(feature = "folder")]
            InputData::Opened(o) => Ok(Box::new(o.following(cancel.clone()))),
            _ => {
                let _ = cancel;
                self.open()
            }
        }
    }
}

/// Why reading a followed input stopped early: the payload of the
/// `io::Error` its reader returns.
#[derive(Debug, thiserror::Error)]
#[cfg_attr(not(feature = "folder"), allow(dead_code))]
pub(crate) enum StopReading {
    /// The file changed in a way that ends its job as failed.
    #[error("{0}")]
    Changed(String),
    /// The reader's job was cancelled (shutdown).
    #[error("reading was cancelled")]
    Cancelled,
}

impl StopReading {
    /// The reason in `e`, when it is one of these.
    pub(crate) fn of(e: &std::io::Error) -> Option<&StopReading> {
        e.get_ref().and_then(|inner| inner.downcast_ref())
    }
}

/// `Read + Seek + Send`, for [`Input::open`].
pub trait ReadSeek: std::io::Read + std::io::Seek + Send {}
impl<T: std::io::Read + std::io::Seek + Send> ReadSeek for T {}

/// Computes an input's identity while its bytes stream past, e.g. during an
/// upload, so the job id is known before the file is handed to a source.
///
/// ```
/// use wds_core::{source::IdentityHasher, Input, JobId};
/// let mut h = IdentityHasher::new();
/// h.update(b"u1,");
/// h.update(b"hi\n");
/// let identity = h.finish(None, None);
/// assert_eq!(identity, Input::from_bytes("x", b"u1,hi\n".to_vec(), None, None).identity);
/// let job = JobId::from_identity(&identity);
/// # let _ = job;
/// ```
#[derive(Clone, Debug, Default)]
pub struct IdentityHasher {
    content: Sha256,
}

impl IdentityHasher {
    /// A hasher over no bytes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the content.
    pub fn update(&mut self, bytes: &[u8]) {
        self.content.update(bytes);
    }

    /// The identity of the content with this format (`None`: detected) and
    /// default message, as [`Input::identity`] holds it.
    pub fn finish(self, format: Option<Format>, default_message: Option<&str>) -> String {
        let mut hasher = self.content;
        // Separate the parts so different (content, message) pairs cannot collide.
        hasher.update(b"\0format=");
        hasher.update(format.map(Format::as_str).unwrap_or("auto").as_bytes());
        hasher.update(b"\0message=");
        if let Some(m) = default_message {
            hasher.update(b"some:");
            hasher.update(m.as_bytes());
        }
        let digest = hasher.finalize();
        let mut s = String::from("sha256:");
        for b in digest {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

/// Yields inputs that are complete and ready to read.
///
/// # Contract
///
/// - [`next`](Source::next) MUST only yield an input whose bytes are complete
///   (nothing is appended to it afterwards), or one whose reader itself
///   follows it to its real end (`InputData::Opened`, from the folder
///   source).
/// - It MAY yield the same input more than once (after a restart, say): the
///   engine claims each identity once, so a repeat is harmless.
/// - It returns `Ok(None)` when the source is exhausted; a watching source
///   never is, until it is shut down.
///
/// # Errors
///
/// A failure that ends the source (the watched folder vanished…). A problem
/// with one input (unreadable file) SHOULD be logged and skipped instead.
///
/// # Cancel safety
///
/// `next` MUST be cancel safe: dropping its future loses no input.
#[async_trait]
pub trait Source: Send + Sync + Debug + 'static {
    /// The next ready input, waiting for one if needed.
    async fn next(&self) -> Result<Option<Input>>;

    /// Called once an input's job has been read completely or has
    /// [failed](crate::JobState::Failed) (its lines not necessarily
    /// delivered yet). A folder source may archive or reject the file. The
    /// default does nothing.
    async fn finished(&self, input: &Input, report: &JobReport) -> Result<()> {
        let _ = (input, report);
        Ok(())
    }
}

#[async_trait]
impl<T: Source + ?Sized> Source for Arc<T> {
    async fn next(&self) -> Result<Option<Input>> {
        (**self).next().await
    }
    async fn finished(&self, input: &Input, report: &JobReport) -> Result<()> {
        (**self).finished(input, report).await
    }
}

#[allow(dead_code)]
fn _object_safe(_: Arc<dyn Source>) {}

/// Shared receiver type for sources built on a channel.
pub(crate) type SharedReceiver = Mutex<mpsc::Receiver<Input>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_depends_on_content_format_and_message() {
        let a = Input::from_bytes("a", b"u1,hi\n".to_vec(), None, None);
        let b = Input::from_bytes("b", b"u1,hi\n".to_vec(), None, None);
        let c = Input::from_bytes("a", b"u1,hi\n".to_vec(), None, Some("x".into()));
        let d = Input::from_bytes("a", b"u1,ho\n".to_vec(), None, None);
        assert_eq!(a.identity, b.identity, "name is not part of identity");
        assert_ne!(a.identity, c.identity);
        assert_ne!(a.identity, d.identity);
    }

    #[test]
    fn file_and_bytes_agree() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.csv");
        std::fs::write(&p, b"u1,hi\n").unwrap();
        let f = Input::from_file(&p, None, None).unwrap();
        let b = Input::from_bytes("f.csv", b"u1,hi\n".to_vec(), None, None);
        assert_eq!(f.identity, b.identity);
        assert_eq!(f.name, "f.csv");
    }
}
