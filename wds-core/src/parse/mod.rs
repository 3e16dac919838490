//! Streaming parsers for input files: CSV, JSON Lines and JSON arrays.
//!
//! Parsing runs in constant memory: a [`RecordReader`] reads through its own
//! buffer and yields one [`Parsed`] item at a time, with the exact byte offset
//! and line number after it ([`RecordReader::position`]), so a job can resume
//! by seeking to a stored offset.
//!
//! Bad data is never an error: a record that cannot be parsed or fails
//! validation is a [`Parsed::Invalid`] with its line number and a reason,
//! and reading goes on with the next record.
//!
//! # Line numbers
//!
//! Every item carries a 1-based `line` that is unique within its input,
//! because message ids are `(job, line)`:
//!
//! - CSV and JSON Lines: the physical line the record starts on (blank
//!   lines and a CSV header are skipped but counted).
//! - JSON array: the element's number in the array, *not* a physical line.
//!   A minified array has every element on line 1, which would give every
//!   record the same id. Every item is one element and takes the next
//!   number, invalid ones included: an empty element (`[a,,b]` numbers `b`
//!   3), and the single item for an input that is not an array, or for data
//!   after the closing `]`, takes the number the next element would have
//!   had. The `n`-th item of an array input is thus always numbered `n`.
//!
//! A [`Position`]'s `line` follows the same rule: the physical line at its
//! byte, or for a JSON array the number of the next element. So
//! [`Position::START`] means line 1 or element 1, and a reader resumed at a
//! returned position numbers on exactly where the first one left off.
//!
//! ```
//! use wds_core::parse::{Limits, Parsed, Position, RecordReader};
//! use wds_core::Format;
//!
//! let data = "userId,alertMessage\nu1,Hello\nu2\n,oops\n";
//! let mut reader = RecordReader::new(
//!     data.as_bytes(),
//!     Format::Csv,
//!     Some("Default".to_string()),
//!     Limits::default(),
//!     Position::START,
//! );
//! let mut lines = Vec::new();
//! while let Some(item) = reader.next_record()? {
//!     match item {
//!         Parsed::Record(r) => lines.push(format!("{}: {} {}", r.line, r.user_id, r.alert_message)),
//!         Parsed::Invalid(i) => lines.push(format!("{}: invalid ({})", i.line, i.reason)),
//!     }
//! }
//! assert_eq!(lines, ["2: u1 Hello", "3: u2 Default", "4: invalid (userId is empty)"]);
//! assert_eq!(reader.position(), Position { byte: data.len() as u64, line: 5 });
//!
//! // A JSON array is numbered by element, even all on one line.
//! let data = r#"[{"userId":"u1"},{"userId":"u2"},,{"userId":"u3"}]"#;
//! let mut reader = RecordReader::new(
//!     data.as_bytes(),
//!     Format::JsonArray,
//!     Some("Default".to_string()),
//!     Limits::default(),
//!     Position::START,
//! );
//! let mut lines = Vec::new();
//! while let Some(item) = reader.next_record()? {
//!     match item {
//!         Parsed::Record(r) => lines.push(format!("{}: {}", r.line, r.user_id)),
//!         Parsed::Invalid(i) => lines.push(format!("{}: invalid", i.line)),
//!     }
//! }
//! assert_eq!(lines, ["1: u1", "2: u2", "3: invalid", "4: u3"]);
//! // At the end: the next element would be number 5.
//! assert_eq!(reader.position(), Position { byte: data.len() as u64, line: 5 });
//! # Ok::<(), std::io::Error>(())
//! ```

mod buffer;
mod csv;
mod json;
mod json_array;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
pub mod text;

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Read};

use crate::attributes::Attributes;
use crate::model::Format;
pub use crate::model::{Invalid, Record};

use buffer::Buffer;
pub use csv::Header;

/// Size limits applied to every record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Longest user id, in bytes (default 256).
    pub max_user_id_bytes: usize,
    /// Longest alert message, in bytes (default 4096).
    pub max_message_bytes: usize,
    /// Longest record (a CSV record or a JSON value), in bytes (default 64 KiB).
    ///
    /// A longer record is reported as invalid and skipped without being
    /// buffered, so this also bounds the reader's memory.
    pub max_record_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_user_id_bytes: 256,
            max_message_bytes: 4096,
            max_record_bytes: 64 * 1024,
        }
    }
}

/// A place in an input: the byte offset of the next unread record and the
/// 1-based line number it starts on (for a JSON array, the number of the
/// next element: see [Line numbers](self#line-numbers)).
///
/// Not `#[non_exhaustive]`: a byte offset and a line number are the whole of a place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// Byte offset from the start of the input.
    pub byte: u64,
    /// 1-based physical line number at `byte`; for a JSON array, the
    /// 1-based number of the next element.
    pub line: u64,
}

impl Position {
    /// The start of an input: line 1, or for a JSON array element 1.
    pub const START: Position = Position { byte: 0, line: 1 };
}

/// One item read from an input.
///
/// Its `line` is the physical line the record starts on, or for a JSON
/// array the element's 1-based number in the array; it is unique within
/// the input (see [Line numbers](self#line-numbers)).
///
/// Exhaustive on purpose: a line is a record or it is invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A valid record.
    Record(Record),
    /// A record that was rejected, with its line number and reason.
    Invalid(Invalid),
}

/// Reads records from an input, one at a time, in constant memory.
///
/// # Positions and resuming
///
/// After each item, [`RecordReader::position`] is the byte offset just past
/// that item (past the CSV or JSON Lines line terminator, past the separating
/// comma of a JSON array element, or at the closing `]`) and the line number
/// there (for a JSON array, the number of the next element, one more than
/// the item's). A new reader over the same input seeked to that offset,
/// created with that position as `start` (and, for a CSV input with a
/// header row, given that header with [`RecordReader::with_header`]),
/// yields exactly the remaining items with the same line numbers.
///
/// # Memory
///
/// The reader holds at most about `limits.max_record_bytes` plus a fixed
/// 64 KiB read buffer (for CSV, the unquoted fields of one record plus the
/// read buffer). It does its own buffering: pass the raw file, not a
/// `BufReader`.
pub struct RecordReader<R> {
    input: Buffer<R>,
    parser: Parser,
    rules: Rules,
    /// The position after the last item returned; `input` may be further
    /// along (mid-record) when a read failed.
    position: Position,
    /// A BOM is only meaningful at byte 0 of the input.
    check_bom: bool,
}

/// The format-specific state of a [`RecordReader`].
#[derive(Debug)]
enum Parser {
    // Boxed: csv-core's transition tables make it far larger than the others.
    Csv(Box<csv::CsvParser>),
    JsonLines(json::JsonLinesParser),
    JsonArray(json_array::JsonArrayParser),
}

impl<R: Read> RecordReader<R> {
    /// A reader over `reader`, which is already positioned at `start.byte`.
    ///
    /// `default_message` is used for records that carry only a user id (or
    /// an empty message). Pass [`Position::START`] for a fresh input, or a
    /// position returned by [`RecordReader::position`] to resume.
    pub fn new(
        reader: R,
        format: Format,
        default_message: Option<String>,
        limits: Limits,
        start: Position,
    ) -> Self {
        let at_start = start.byte == 0;
        let (parser, buffer_len) = match format {
            // csv-core copies each record's fields into the parser's own
            // buffer, so the read buffer need not hold a whole record.
            Format::Csv => (
                Parser::Csv(Box::new(csv::CsvParser::new(&limits, at_start))),
                buffer::CHUNK,
            ),
            // JSON records are parsed from the read buffer in one piece.
            Format::JsonLines => (
                Parser::JsonLines(json::JsonLinesParser::new()),
                limits.max_record_bytes.saturating_add(buffer::CHUNK),
            ),
            Format::JsonArray => (
                Parser::JsonArray(json_array::JsonArrayParser::new(at_start)),
                limits.max_record_bytes.saturating_add(buffer::CHUNK),
            ),
        };
        RecordReader {
            // JSON arrays number elements, not lines (see the module docs).
            input: Buffer::new(reader, start, buffer_len, format != Format::JsonArray),
            parser,
            rules: Rules {
                limits,
                default_message,
            },
            position: start,
            check_bom: at_start,
        }
    }

    /// The next item, or `None` at the end of the input. An `Err` is an I/O
    /// failure of the underlying reader, never bad data.
    ///
    /// # Errors
    ///
    /// Only the errors of the underlying reader (`Interrupted` is retried).
    /// After an error, [`RecordReader::position`] is still the position after
    /// the last item returned, so a new reader can resume from there.
    pub fn next_record(&mut self) -> io::Result<Option<Parsed>> {
        if self.check_bom {
            if self.input.ensure(BOM.len())? && self.input.available().starts_with(BOM) {
                self.input.consume(BOM.len());
            }
            self.check_bom = false;
        }
        let item = match &mut self.parser {
            Parser::Csv(p) => p.next(&mut self.input, &self.rules)?,
            Parser::JsonLines(p) => p.next(&mut self.input, &self.rules)?,
            Parser::JsonArray(p) => p.next(&mut self.input, &self.rules)?,
        };
        self.position = self.input.position();
        Ok(item)
    }

    /// The header of a CSV input, once the reader has read it (or was
    /// given it with [`with_header`](Self::with_header)); `None` for an
    /// input without one and for the JSON formats.
    pub fn header(&self) -> Option<&Header> {
        match &self.parser {
            Parser::Csv(p) => p.header(),
            _ => None,
        }
    }

    /// A reader resumed past a CSV input's header reads its records with
    /// `header`, which a reader from the start of the same input found
    /// ([`header`](Self::header)). Without it, such a reader reads
    /// `userId[,alertMessage]` records as if the input had no header.
    /// Does nothing for a reader at the start of its input (it reads the
    /// header itself), for the JSON formats, or with `None`.
    pub fn with_header(mut self, header: Option<Header>) -> Self {
        if let (Parser::Csv(p), Some(header)) = (&mut self.parser, header) {
            p.set_header(header);
        }
        self
    }

    /// The position after the last item returned: where the next record
    /// starts (after the last line terminator or array separator consumed),
    /// or the end of the input once `next_record` returned `None`.
    pub fn position(&self) -> Position {
        self.position
    }
}

impl<R> fmt::Debug for RecordReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordReader")
            .field("parser", &self.parser)
            .field("position", &self.position)
            .field("input", &self.input)
            .field("limits", &self.rules.limits)
            .finish_non_exhaustive()
    }
}

/// The UTF-8 byte order mark some editors put at the start of a file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Picks a format from the file name's extension, else from the first
/// non-blank byte of `head`: `[` is a JSON array, `{` JSON Lines, else CSV.
///
/// `.csv` and `.txt` are CSV; `.jsonl` and `.ndjson` are JSON Lines; `.json`
/// is a JSON array unless its first non-blank byte is `{` (many tools write
/// JSON Lines under a `.json` name).
///
/// ```
/// use wds_core::parse::detect_format;
/// use wds_core::Format;
///
/// assert_eq!(detect_format("users.csv", b"[1]"), Format::Csv);
/// assert_eq!(detect_format("users.json", b"{\"userId\":\"u1\"}\n"), Format::JsonLines);
/// assert_eq!(detect_format("upload", b"\xEF\xBB\xBF  [{\"userId\":\"u1\"}]"), Format::JsonArray);
/// ```
pub fn detect_format(name: &str, head: &[u8]) -> Format {
    let first = {
        let head = head.strip_prefix(BOM).unwrap_or(head);
        head.iter().copied().find(|b| !b.is_ascii_whitespace())
    };
    let extension = std::path::Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("csv" | "txt") => Format::Csv,
        Some("jsonl" | "ndjson") => Format::JsonLines,
        Some("json") if first == Some(b'{') => Format::JsonLines,
        Some("json") => Format::JsonArray,
        _ => match first {
            Some(b'[') => Format::JsonArray,
            Some(b'{') => Format::JsonLines,
            _ => Format::Csv,
        },
    }
}

/// The alert message a record gave, or why it gave none.
#[derive(Clone, Debug)]
enum MessageField<'a> {
    /// A non-empty message.
    Text(Cow<'a, str>),
    /// No message; the default applies. The reason is used when there is
    /// no default either.
    Missing(&'static str),
}

impl<'a> MessageField<'a> {
    /// `Text` unless `text` is empty, in which case `Missing(reason)`.
    fn non_empty(text: impl Into<Cow<'a, str>>, reason: &'static str) -> Self {
        let text = text.into();
        if text.is_empty() {
            MessageField::Missing(reason)
        } else {
            MessageField::Text(text)
        }
    }
}

/// The validation shared by all formats: limits, the default message, and
/// what a user id and a message may contain.
#[derive(Debug)]
struct Rules {
    limits: Limits,
    default_message: Option<String>,
}

impl Rules {
    /// A record from a user id and a message, or why they are invalid.
    ///
    /// Takes `Cow`s so that JSON's owned strings move into the record and
    /// CSV's borrowed fields are copied once: the two `String`s of a
    /// `Record` are the only allocations per record.
    fn record(
        &self,
        line: u64,
        user_id: Cow<'_, str>,
        message: MessageField<'_>,
        attributes: Attributes,
    ) -> Parsed {
        if let Err(reason) = self.check(&user_id, &message) {
            return invalid(line, reason);
        }
        let alert_message = match message {
            MessageField::Text(text) => text.into_owned(),
            // `check` saw the default.
            MessageField::Missing(_) => self.default_message.clone().unwrap_or_default(),
        };
        Parsed::Record(Record {
            line,
            user_id: user_id.into_owned(),
            alert_message,
            attributes,
        })
    }

    fn check(&self, user_id: &str, message: &MessageField<'_>) -> Result<(), String> {
        let limits = &self.limits;
        if user_id.is_empty() {
            return Err("userId is empty".into());
        }
        if user_id.len() > limits.max_user_id_bytes {
            return Err(format!(
                "userId is {} bytes, longer than the limit of {} bytes",
                user_id.len(),
                limits.max_user_id_bytes
            ));
        }
        // Control characters in an id are never intended (a stray tab, a
        // newline from a bad export) and would corrupt logs and CSV output.
        if let Some(problem) = text::user_id_problem(user_id) {
            return Err(problem);
        }
        let message = match message {
            MessageField::Text(text) => text.as_ref(),
            MessageField::Missing(reason) => match &self.default_message {
                Some(default) => default.as_str(),
                None => return Err((*reason).into()),
            },
        };
        if message.len() > limits.max_message_bytes {
            return Err(format!(
                "alertMessage is {} bytes, longer than the limit of {} bytes",
                message.len(),
                limits.max_message_bytes
            ));
        }
        if let Some(problem) = text::message_problem(message) {
            return Err(problem);
        }
        Ok(())
    }

    /// The reason for a record over `max_record_bytes`.
    fn too_long(&self, line: u64) -> Parsed {
        invalid(
            line,
            format!("record longer than {} bytes", self.limits.max_record_bytes),
        )
    }

    /// The limits in force.
    fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// An invalid item.
fn invalid(line: u64, reason: impl Into<String>) -> Parsed {
    Parsed::Invalid(Invalid {
        line,
        reason: reason.into(),
    })
}
