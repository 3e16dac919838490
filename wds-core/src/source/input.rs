//! [`Input`], [`InputData`] and the [`Source`] trait.

use std::fmt::{self, Debug};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

#[cfg(feature = "folder")]
use super::folder::OpenedFile;
use super::{IdentityHasher, ReadSeek};
use crate::error::{Error, Result};
use crate::model::{Format, JobReport};

/// Where an input's bytes are.
#[derive(Clone)]
#[non_exhaustive]
pub enum InputData {
    /// A file on local disk (read, never modified, by the engine).
    File(PathBuf),
    /// Bytes in memory (programmatic submission).
    Bytes(Arc<[u8]>),
    /// A file the folder source opened once: read through that handle,
    /// never by its path, and followed while it grows (see
    /// [`FolderSource`](crate::FolderSource)).
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
    /// The content's hash so far, so that [`with_format`](Input::with_format)
    /// and [`with_message`](Input::with_message) can remake `identity`
    /// without reading the bytes again (`None` for an input the folder
    /// source opened: its identity is fixed when it claims the file).
    content: Option<IdentityHasher>,
}

impl Input {
    /// An input from bytes in memory, its format detected from `name` and
    /// the content, every line carrying its own message; see
    /// [`with_format`](Input::with_format) and
    /// [`with_message`](Input::with_message).
    ///
    /// ```
    /// use wds_core::{Format, Input};
    /// let input = Input::from_bytes("ids.txt", b"u1\nu2\n".to_vec())
    ///     .with_format(Format::Csv)
    ///     .with_message("Scheduled maintenance at 22:00");
    /// assert_eq!(input.default_message.as_deref(), Some("Scheduled maintenance at 22:00"));
    /// ```
    pub fn from_bytes(name: impl Into<String>, bytes: impl Into<Arc<[u8]>>) -> Self {
        let bytes: Arc<[u8]> = bytes.into();
        let mut content = IdentityHasher::new();
        content.update(&bytes);
        Input::hashed(name.into(), InputData::Bytes(bytes), content)
    }

    /// An input from a file, hashing its content (blocking I/O: call it from
    /// `spawn_blocking` in async code). Its format is detected from the file
    /// name and content, every line carrying its own message; see
    /// [`with_format`](Input::with_format) and
    /// [`with_message`](Input::with_message).
    ///
    /// # Errors
    ///
    /// [`Error::Input`] when the file cannot be opened or read.
    pub fn from_file(path: &Path) -> Result<Self> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let io_err = |source| Error::Input {
            name: name.clone(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io_err)?;
        let mut content = IdentityHasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(io_err)?;
            if n == 0 {
                break;
            }
            content.update(&buf[..n]);
        }
        Ok(Input::hashed(
            name,
            InputData::File(path.to_path_buf()),
            content,
        ))
    }

    /// An input the folder source opened, with the identity it claimed.
    #[cfg(feature = "folder")]
    pub(crate) fn opened(
        name: String,
        display_name: Option<String>,
        identity: String,
        opened: OpenedFile,
        default_message: Option<String>,
    ) -> Self {
        Input {
            name,
            display_name,
            identity,
            data: InputData::Opened(opened),
            format: None,
            default_message,
            content: None,
        }
    }

    fn hashed(name: String, data: InputData, content: IdentityHasher) -> Self {
        let mut input = Input {
            name,
            display_name: None,
            identity: String::new(),
            data,
            format: None,
            default_message: None,
            content: Some(content),
        };
        input.rehash();
        input
    }

    /// The input read as `format` instead of the format detected from its
    /// name and content. Part of the identity: the same bytes read as
    /// another format are another job.
    pub fn with_format(mut self, format: Format) -> Self {
        self.format = Some(format);
        self.rehash();
        self
    }

    /// The alert message for lines that carry only a user id (a file of bare
    /// user ids); lines with their own message keep it. Part of the
    /// identity: the same bytes with another message are another job.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.default_message = Some(message.into());
        self.rehash();
        self
    }

    /// Remakes `identity` from the content, the format and the message
    /// (kept as claimed for an input the folder source opened).
    fn rehash(&mut self) {
        if let Some(content) = &self.content {
            self.identity = content
                .clone()
                .finish(self.format, self.default_message.as_deref());
        }
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
