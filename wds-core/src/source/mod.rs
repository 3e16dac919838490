//! What sources are made of, beyond the [`Source`](crate::Source) trait,
//! [`Input`] and the two sources at the crate root
//! ([`ChannelSource`](crate::ChannelSource) and the folder's
//! `FolderSource`): the folder source's builder and opened file, its
//! intake report, and the identity of an input computed while its bytes
//! stream past.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Mutex};

use crate::model::Format;
use input::Input;

pub(crate) mod channel;
#[cfg(feature = "folder")]
pub(crate) mod folder;
pub(crate) mod input;
mod status;

#[cfg(feature = "folder")]
pub use folder::{FolderSourceBuilder, OpenedFile};
pub use status::{IntakeReport, IntakeStatus, Skipped};

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
/// assert_eq!(identity, Input::from_bytes("x", b"u1,hi\n".to_vec()).identity);
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

/// Shared receiver type for sources built on a channel.
pub(crate) type SharedReceiver = Mutex<mpsc::Receiver<Input>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_depends_on_content_format_and_message() {
        let a = Input::from_bytes("a", b"u1,hi\n".to_vec());
        let b = Input::from_bytes("b", b"u1,hi\n".to_vec());
        let c = Input::from_bytes("a", b"u1,hi\n".to_vec()).with_message("x");
        let d = Input::from_bytes("a", b"u1,ho\n".to_vec());
        assert_eq!(a.identity, b.identity, "name is not part of identity");
        assert_ne!(a.identity, c.identity);
        assert_ne!(a.identity, d.identity);
    }

    #[test]
    fn builder_makes_the_identity_of_its_format_and_message() {
        let bytes = b"u1\nu2\n";
        let mut content = IdentityHasher::new();
        content.update(bytes);
        let expected = content.finish(Some(Format::Csv), Some("Outage"));
        let one = Input::from_bytes("ids", bytes.to_vec())
            .with_format(Format::Csv)
            .with_message("Outage");
        let other = Input::from_bytes("ids", bytes.to_vec())
            .with_message("Outage")
            .with_format(Format::Csv);
        assert_eq!(one.identity, expected);
        assert_eq!(
            other.identity, expected,
            "the order of the calls does not matter"
        );
        assert_eq!(one.format, Some(Format::Csv));
        assert_eq!(one.default_message.as_deref(), Some("Outage"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids");
        std::fs::write(&path, bytes).unwrap();
        let file = Input::from_file(&path)
            .unwrap()
            .with_format(Format::Csv)
            .with_message("Outage");
        assert_eq!(file.identity, expected);
    }

    #[test]
    fn file_and_bytes_agree() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.csv");
        std::fs::write(&p, b"u1,hi\n").unwrap();
        let f = Input::from_file(&p).unwrap();
        let b = Input::from_bytes("f.csv", b"u1,hi\n".to_vec());
        assert_eq!(f.identity, b.identity);
        assert_eq!(f.name, "f.csv");
    }
}
