//! CSV: `userId[,alertMessage]` per record, or with a header row any
//! columns (those other than `userId` and `alertMessage` become attributes),
//! RFC 4180 quoting, on csv-core's state machine.
//!
//! Records end at a line break: `\n`, `\r\n` or a lone `\r` (files from
//! classic Mac OS and some spreadsheet exports), each one line. So every
//! record starts on its own physical line and line numbers, which make
//! message ids, are unique within a file. A position is never between the
//! `\r` and the `\n` of one line break.

use std::fmt;
use std::io::{self, Read};

use csv_core::{ReadRecordResult, Reader, ReaderBuilder, Terminator};

use super::buffer::Buffer;
use super::{invalid, Limits, MessageField, Parsed, Rules};
use crate::attributes::{Attributes, MAX_ATTRIBUTES};

const NO_DEFAULT: &str = "line has only a userId and the job has no default message";
const EMPTY_MESSAGE: &str = "alertMessage is empty and the job has no default message";
const UNTERMINATED: &str = "unterminated quoted field: a \" opened in this record is never closed";

/// How many field ends csv-core may report per call; more fields than this
/// are only counted.
const ENDS: usize = 4;

/// The CSV parser's state between records.
pub(super) struct CsvParser {
    machine: Reader,
    /// The unquoted fields of the current record, back to back. Grows up to
    /// `max_fields_len`; a record whose fields do not fit is too long.
    fields: Vec<u8>,
    max_fields_len: usize,
    /// Where each field of the current record ends in `fields`, for its
    /// first [`MAX_COLUMNS`]` + 1` fields (more are only counted).
    ends: Vec<usize>,
    /// The first record of an input may be a header.
    header_allowed: bool,
    /// The input's header, once read (or given to a resumed reader).
    header: Option<Header>,
}

/// Most columns a header may have: `userId`, `alertMessage` and
/// [`MAX_ATTRIBUTES`] attributes.
pub(super) const MAX_COLUMNS: usize = MAX_ATTRIBUTES + 2;

/// The columns of a CSV input's header row: which one holds the user id,
/// which the alert message, and the attribute each other one names.
///
/// A header is the first record of the input when one of its fields is
/// `userId` (in any case). The column named `alertMessage` (in any case),
/// if any, holds the alert message; every other column is an attribute,
/// named by the header exactly as written (trimmed). A header of `userId`
/// alone is that of a `userId[,alertMessage]` file. A [`RecordReader`](super::RecordReader) resumed
/// mid-input does not see it: give it the one the first reader found
/// ([`RecordReader::header`](super::RecordReader::header),
/// [`RecordReader::with_header`](super::RecordReader::with_header)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The user id's column.
    user: usize,
    /// The alert message's column, if there is one.
    message: Option<usize>,
    /// Per column, the attribute it names (`None` for the user id and
    /// message columns).
    names: Vec<Option<String>>,
    /// Why the header cannot be used: then every record of the input is
    /// invalid with this reason.
    problem: Option<String>,
}

impl Header {
    /// The header in `fields` (the unquoted fields back to back, ending at
    /// `ends`), if the record is one.
    fn parse(fields: &[u8], ends: &[usize], count: usize) -> Option<Header> {
        let field = |i: usize| {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            fields[start..ends[i]].trim_ascii()
        };
        let stored = count.min(ends.len());
        let user = (0..stored).find(|&i| field(i).eq_ignore_ascii_case(b"userId"))?;
        let mut header = Header {
            user,
            message: None,
            names: Vec::with_capacity(stored),
            problem: None,
        };
        if count > MAX_COLUMNS {
            header.problem = Some(format!(
                "the header has {count} columns, more than the limit of {MAX_COLUMNS} \
                 (userId, alertMessage and {MAX_ATTRIBUTES} attributes)"
            ));
            return Some(header);
        }
        if count == 1 {
            // A lone `userId`: the header of a `userId[,alertMessage]` file.
            header.message = Some(1);
            header.names = vec![None, None];
            return Some(header);
        }
        let mut attributes = Attributes::new();
        for i in 0..count {
            let name = field(i);
            if name.eq_ignore_ascii_case(b"userId") || name.eq_ignore_ascii_case(b"alertMessage") {
                let reserved = if name.eq_ignore_ascii_case(b"userId") {
                    "userId"
                } else {
                    "alertMessage"
                };
                if i != user && (reserved == "userId" || header.message.is_some()) {
                    header.problem = Some(format!(
                        "the header names {reserved} twice (columns {} and {})",
                        if reserved == "userId" {
                            user + 1
                        } else {
                            header.message.unwrap_or(0) + 1
                        },
                        i + 1
                    ));
                    return Some(header);
                }
                if reserved == "alertMessage" {
                    header.message = Some(i);
                }
                header.names.push(None);
                continue;
            }
            let Ok(name) = std::str::from_utf8(name) else {
                header.problem = Some(format!("the header's column {} is not valid UTF-8", i + 1));
                return Some(header);
            };
            // Checked with an empty value: names only (sizes are per line).
            if let Err(problem) = attributes.push(name, "") {
                header.problem = Some(format!("the header's column {}: {problem}", i + 1));
                return Some(header);
            }
            header.names.push(Some(name.to_string()));
        }
        Some(header)
    }

    /// The attribute names, in column order.
    pub fn attribute_names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().flatten().map(String::as_str)
    }

    /// Why the header is unusable (every record is then invalid with this
    /// reason), or `None`.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }
}

impl fmt::Debug for CsvParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsvParser")
            .field("fields_capacity", &self.fields.len())
            .field("header_allowed", &self.header_allowed)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// What csv-core made of one record.
enum RawRecord {
    /// The fields fit: `count` fields, the first ones ending at
    /// `CsvParser::ends` (offsets into `CsvParser::fields`), `len` bytes of
    /// fields in all.
    Fields { count: usize, len: usize },
    /// Longer than `max_record_bytes`; skipped.
    TooLong,
    /// The input ended inside a quoted field.
    Unterminated,
}

impl CsvParser {
    pub(super) fn new(limits: &Limits, at_input_start: bool) -> Self {
        let mut machine = ReaderBuilder::new().terminator(Terminator::CRLF).build();
        // csv-core strips a BOM from the first bytes it ever sees. The record
        // reader strips it itself, at byte 0 only; without this empty line a
        // reader resumed mid-file would strip BOM-like bytes that a reader
        // from the start keeps.
        let _ = machine.read_record(b"\n", &mut [0u8; 1], &mut [0usize; 1]);
        // Unquoted fields are never longer than the raw record, which may
        // also hold the "\r" of its line break: fields that fill this are a
        // record over the limit.
        let max = limits.max_record_bytes.saturating_add(2);
        CsvParser {
            machine,
            fields: vec![0; max.min(4096)],
            max_fields_len: max,
            ends: Vec::with_capacity(8),
            header_allowed: at_input_start,
            header: None,
        }
    }

    /// The input's header, if it has one and it was read (or given).
    pub(super) fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// Uses `header` as the input's header, for a reader resumed past it;
    /// a reader at the start of its input reads its header itself.
    pub(super) fn set_header(&mut self, header: Header) {
        if !self.header_allowed {
            self.header = Some(header);
        }
    }

    /// The next record or invalid line; `None` at the end of the input.
    pub(super) fn next<R: Read>(
        &mut self,
        input: &mut Buffer<R>,
        rules: &Rules,
    ) -> io::Result<Option<Parsed>> {
        loop {
            if !skip_line_breaks(input)? {
                return Ok(None);
            }
            let line = input.position().line;
            match self.read_record(input, rules.limits().max_record_bytes)? {
                RawRecord::TooLong => {
                    self.header_allowed = false;
                    return Ok(Some(rules.too_long(line)));
                }
                RawRecord::Unterminated => {
                    self.header_allowed = false;
                    return Ok(Some(invalid(line, UNTERMINATED)));
                }
                RawRecord::Fields { count, len } => {
                    if let Some(item) = self.interpret(line, count, len, rules) {
                        return Ok(Some(item));
                    }
                    // A blank record or the header: not an item.
                }
            }
        }
    }

    /// Runs csv-core over one record, which starts at the first available
    /// byte (not a line break), and consumes it with its terminator.
    fn read_record<R: Read>(
        &mut self,
        input: &mut Buffer<R>,
        max_record_bytes: usize,
    ) -> io::Result<RawRecord> {
        let mut len = 0; // bytes used in `fields`
        let mut count = 0;
        self.ends.clear();
        let mut ends = [0; ENDS];
        let mut overflow = false; // the fields did not fit: only skipping
        let mut raw_len: u64 = 0; // bytes consumed, terminator included
        let mut last_two = [0u8; 2]; // the last bytes consumed, to spot "\r\n"
        let mut after_cr = false; // the last byte consumed was a '\r'
        loop {
            let at_eof = input.available().is_empty() && !input.fill()?;
            // At the end of the input, a line break closes the last record
            // if it is complete, and lands inside the field if a quote is
            // still open: csv-core has no other way to tell.
            let data = if at_eof {
                &b"\n"[..]
            } else {
                input.available()
            };
            if len == self.fields.len() {
                if self.fields.len() < self.max_fields_len {
                    let grown = (self.fields.len() * 2).min(self.max_fields_len);
                    self.fields.resize(grown, 0);
                } else {
                    overflow = true;
                    len = 0; // keep counting fields in the same space
                }
            }
            let (result, nin, nout, nend) =
                self.machine
                    .read_record(data, &mut self.fields[len..], &mut ends);
            if !at_eof {
                last_two = match nin {
                    0 => last_two,
                    1 => [last_two[1], data[0]],
                    _ => [data[nin - 2], data[nin - 1]],
                };
                let newlines = line_breaks(&data[..nin], &mut after_cr);
                input.consume_counted(nin, newlines);
                raw_len += nin as u64;
            }
            len += nout;
            for &end in &ends[..nend] {
                if count <= MAX_COLUMNS {
                    self.ends.push(end);
                }
                count += 1;
            }
            match result {
                ReadRecordResult::Record | ReadRecordResult::End => break,
                ReadRecordResult::InputEmpty if at_eof => {
                    return Ok(if overflow || raw_len > max_record_bytes as u64 {
                        RawRecord::TooLong
                    } else {
                        RawRecord::Unterminated
                    });
                }
                ReadRecordResult::InputEmpty
                | ReadRecordResult::OutputFull
                | ReadRecordResult::OutputEndsFull => {}
            }
        }
        let mut content_len = raw_len;
        if last_two[1] == b'\n' && raw_len > 0 {
            content_len -= 1 + u64::from(last_two[0] == b'\r');
        } else if last_two[1] == b'\r' && raw_len > 0 {
            content_len -= 1;
            // The '\n' of a "\r\n" belongs to this line: take it now, so no
            // position falls between the two.
            if input.ensure(1)? && input.available()[0] == b'\n' {
                input.consume_counted(1, 0);
            }
        }
        if overflow || content_len > max_record_bytes as u64 {
            return Ok(RawRecord::TooLong);
        }
        Ok(RawRecord::Fields { count, len })
    }

    /// Turns a record's fields into an item, or `None` for a blank record or
    /// the header.
    fn interpret(&mut self, line: u64, count: usize, len: usize, rules: &Rules) -> Option<Parsed> {
        let fields = &self.fields[..len];
        let ends = &self.ends;
        let field = |i: usize| {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            fields[start..ends[i]].trim_ascii()
        };
        // A row of empty fields (`,` is how spreadsheets export an empty
        // row) carries no user: skip it like a blank line.
        if fields.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        if std::mem::replace(&mut self.header_allowed, false) {
            if let Some(header) = Header::parse(fields, ends, count) {
                self.header = Some(header);
                return None;
            }
        }
        let Some(header) = &self.header else {
            // No header: `userId[,alertMessage]`, nothing else.
            if count > 2 {
                return Some(invalid(
                    line,
                    format!(
                        "expected 1 or 2 fields, found {count} \
                         (quote an alertMessage that contains commas)"
                    ),
                ));
            }
            let (Ok(user_id), Ok(message)) = (
                std::str::from_utf8(field(0)),
                std::str::from_utf8(if count == 2 { field(1) } else { &[] }),
            ) else {
                return Some(invalid(line, "record is not valid UTF-8"));
            };
            let message = if count == 1 {
                MessageField::Missing(NO_DEFAULT)
            } else {
                MessageField::non_empty(message, EMPTY_MESSAGE)
            };
            return Some(rules.record(line, user_id.into(), message, Attributes::new()));
        };
        if let Some(problem) = &header.problem {
            return Some(invalid(line, problem.clone()));
        }
        let columns = header.names.len();
        if count > columns {
            return Some(invalid(
                line,
                format!(
                    "expected at most {columns} fields as the header has, found {count} \
                     (quote a field that contains commas)"
                ),
            ));
        }
        // A field the line does not have is empty.
        let text = |i: usize| {
            if i < count {
                std::str::from_utf8(field(i)).map_err(|_| ())
            } else {
                Ok("")
            }
        };
        let Ok(user_id) = text(header.user) else {
            return Some(invalid(line, "record is not valid UTF-8"));
        };
        let message = match header.message {
            Some(i) if i < count => match text(i) {
                Ok(message) => MessageField::non_empty(message, EMPTY_MESSAGE),
                Err(()) => return Some(invalid(line, "record is not valid UTF-8")),
            },
            _ => MessageField::Missing(NO_DEFAULT),
        };
        let mut attributes = Attributes::new();
        for (i, name) in header.names.iter().enumerate() {
            let Some(name) = name else { continue };
            let Ok(value) = text(i) else {
                return Some(invalid(line, "record is not valid UTF-8"));
            };
            if let Err(problem) = attributes.push(name.as_str(), value) {
                return Some(invalid(line, problem.to_string()));
            }
        }
        Some(rules.record(line, user_id.into(), message, attributes))
    }
}

/// Consumes line breaks (blank lines) before a record. Returns `false` at the
/// end of the input.
fn skip_line_breaks<R: Read>(input: &mut Buffer<R>) -> io::Result<bool> {
    let mut after_cr = false;
    loop {
        let available = input.available();
        let n = available
            .iter()
            .take_while(|&&b| b == b'\n' || b == b'\r')
            .count();
        let more = n < available.len();
        // A "\r\n" split across two reads is one line break: `after_cr`
        // carries the '\r' over.
        let lines = line_breaks(&available[..n], &mut after_cr);
        input.consume_counted(n, lines);
        if more {
            return Ok(true);
        }
        if !input.fill()? {
            return Ok(false);
        }
    }
}

/// The line breaks that `bytes` complete, given whether the byte before
/// them was a `\r` (updated): every `\r`, and every `\n` not right after one.
fn line_breaks(bytes: &[u8], after_cr: &mut bool) -> u64 {
    let mut lines = 0;
    for &b in bytes {
        lines += u64::from(b == b'\r' || (b == b'\n' && !*after_cr));
        *after_cr = b == b'\r';
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check_resume, invalid_at, parse, parse_with, rec, rec_with};
    use super::super::{Limits, Position};
    use crate::model::Format;
    use serde_json::json;

    fn csv(data: &str, default: Option<&str>) -> Vec<super::Parsed> {
        check_resume(data.as_bytes(), Format::Csv, default, Limits::default())
    }

    #[test]
    fn one_and_two_fields() {
        assert_eq!(
            csv("u1,Hello\nu2\n", Some("Default")),
            [rec(1, "u1", "Hello"), rec(2, "u2", "Default")]
        );
    }

    #[test]
    fn lone_carriage_returns_end_lines() {
        assert_eq!(
            csv("userId,alertMessage\ru1,a\r\ru2,\"two\rlines\"\ru3,c", None),
            [
                rec(2, "u1", "a"),
                rec(4, "u2", "two\rlines"),
                rec(6, "u3", "c")
            ]
        );
        assert_eq!(csv("u1,a\r", None), [rec(1, "u1", "a")]);
        assert_eq!(
            csv("u1,a\r\nu2,b\rc,d\n\r\nu3,e", None),
            [
                rec(1, "u1", "a"),
                rec(2, "u2", "b"),
                rec(3, "c", "d"),
                rec(5, "u3", "e")
            ]
        );
    }

    #[test]
    fn one_field_without_a_default_message_is_invalid() {
        let items = csv("u1\nu2,hi\n", None);
        assert_eq!(
            invalid_at(&items[0]),
            (
                1,
                "line has only a userId and the job has no default message"
            )
        );
        assert_eq!(items[1], rec(2, "u2", "hi"));
    }

    #[test]
    fn an_empty_message_falls_back_to_the_default() {
        assert_eq!(
            csv("u1,\nu2, \t\n", Some("D")),
            [rec(1, "u1", "D"), rec(2, "u2", "D")]
        );
        let items = csv("u1,\n", None);
        assert_eq!(
            invalid_at(&items[0]),
            (
                1,
                "alertMessage is empty and the job has no default message"
            )
        );
    }

    #[test]
    fn fields_are_trimmed() {
        assert_eq!(
            csv("  u1 \t,  Hello there  \r\n", None),
            [rec(1, "u1", "Hello there")]
        );
    }

    #[test]
    fn quotes_protect_commas_quotes_and_newlines() {
        let data = "u1,\"Hello, world\"\n\"u2\",\"Say \"\"hi\"\"\"\nu3,\"two\nlines\r\nthree\"\nu4,after\n";
        assert_eq!(
            csv(data, None),
            [
                rec(1, "u1", "Hello, world"),
                rec(2, "u2", "Say \"hi\""),
                rec(3, "u3", "two\nlines\r\nthree"),
                // The quoted newlines moved the line count along.
                rec(6, "u4", "after"),
            ]
        );
    }

    #[test]
    fn more_than_two_fields_is_invalid() {
        let items = csv("u1,Hello, world\nu2,ok\n", None);
        assert_eq!(
            invalid_at(&items[0]),
            (
                1,
                "expected 1 or 2 fields, found 3 (quote an alertMessage that contains commas)"
            )
        );
        assert_eq!(items[1], rec(2, "u2", "ok"));
        let items = csv(&format!("u1{}\n", ",x".repeat(50)), None);
        assert!(invalid_at(&items[0]).1.contains("found 51"));
    }

    #[test]
    fn crlf_and_lf_mix() {
        assert_eq!(
            csv("u1,a\r\nu2,b\nu3,c\r\n\r\nu4,d", None),
            [
                rec(1, "u1", "a"),
                rec(2, "u2", "b"),
                rec(3, "u3", "c"),
                rec(5, "u4", "d")
            ]
        );
    }

    #[test]
    fn positions_are_just_after_each_line() {
        let data = b"u1,a\r\n\nu2,b\nu3";
        let mut reader = super::super::RecordReader::new(
            &data[..],
            Format::Csv,
            Some("d".into()),
            Limits::default(),
            Position::START,
        );
        let mut positions = Vec::new();
        while reader.next_record().ok().flatten().is_some() {
            positions.push(reader.position());
        }
        assert_eq!(
            positions,
            [
                Position { byte: 6, line: 2 },
                Position { byte: 12, line: 4 },
                Position { byte: 14, line: 4 },
            ]
        );
    }

    #[test]
    fn blank_lines_are_not_records() {
        assert_eq!(
            csv("\n\nu1,a\n\n   \n\t\r\n,\n , \n,,,\nu2,b\n\n", None),
            [rec(3, "u1", "a"), rec(10, "u2", "b")]
        );
        assert_eq!(csv("\n\r\n  \n", None), []);
        assert_eq!(csv("", None), []);
    }

    #[test]
    fn a_bom_at_the_start_is_skipped() {
        assert_eq!(csv("\u{feff}u1,a\n", None), [rec(1, "u1", "a")]);
        // Only at the start: elsewhere it is part of the data.
        let items = csv("u1,a\n\u{feff}u2,b\n", None);
        assert_eq!(items[1], rec(2, "\u{feff}u2", "b"));
    }

    #[test]
    fn a_header_is_skipped_only_as_the_first_record() {
        for header in [
            "userId,alertMessage",
            "userid,ALERTMESSAGE",
            " userId , alertMessage ",
            "\"userId\",\"alertMessage\"",
            "userId",
            "\u{feff}userId,alertMessage",
            "\n\nuserId,alertMessage",
        ] {
            let data = format!("{header}\r\nu1,hi\nuserId,alertMessage\n");
            let items = csv(&data, None);
            let first = 2 + header.matches('\n').count() as u64;
            assert_eq!(
                items,
                [
                    rec(first, "u1", "hi"),
                    rec(first + 1, "userId", "alertMessage")
                ],
                "{header:?}"
            );
        }
        // Not a header: a user id that merely starts like one.
        assert_eq!(
            csv("userIds,alertMessage\n", None)[0],
            rec(1, "userIds", "alertMessage")
        );
        // Headers with attributes: whatever else they name.
        assert_eq!(csv("userId,message\n", None), []);
        assert_eq!(csv("userId,alertMessage,x\n", None), []);
        // A header after an invalid first record is a record.
        let items = csv("a,b,c\nuserId\n", Some("d"));
        assert_eq!(items[1], rec(2, "userId", "d"));
    }

    #[test]
    fn header_columns_other_than_user_and_message_are_attributes() {
        let data = "orderId, USERID ,locale,alertMessage\n\
                    A-1,u1,fr,Votre commande\n\
                    \"A,2\",u2,,\"Shipped, today\"\n\
                    A-3,u3\n\
                    A-4,u4,de,Bestellung,extra\n";
        let items = csv(data, Some("D"));
        assert_eq!(
            items[..3],
            [
                rec_with(
                    2,
                    "u1",
                    "Votre commande",
                    &[("orderId", json!("A-1")), ("locale", json!("fr"))]
                ),
                // An empty cell is an empty string.
                rec_with(
                    3,
                    "u2",
                    "Shipped, today",
                    &[("orderId", json!("A,2")), ("locale", json!(""))]
                ),
                // Missing trailing cells are empty; the message falls back.
                rec_with(
                    4,
                    "u3",
                    "D",
                    &[("orderId", json!("A-3")), ("locale", json!(""))]
                ),
            ]
        );
        assert_eq!(
            invalid_at(&items[3]),
            (
                5,
                "expected at most 4 fields as the header has, found 5 \
                 (quote a field that contains commas)"
            )
        );
        // Without a message column every line takes the default.
        assert_eq!(
            csv("userId,name\nu1,Ann\n", Some("Hi")),
            [rec_with(2, "u1", "Hi", &[("name", json!("Ann"))])]
        );
        let items = csv("userId,name\nu1,Ann\n", None);
        assert_eq!(
            invalid_at(&items[0]),
            (
                2,
                "line has only a userId and the job has no default message"
            )
        );
        // Without a header, a third field is still an error.
        let items = csv("u1,hi,A-1\n", None);
        assert!(invalid_at(&items[0])
            .1
            .starts_with("expected 1 or 2 fields, found 3"));
    }

    #[test]
    fn a_bad_header_makes_every_line_invalid_with_its_reason() {
        use crate::attributes::{MAX_ATTRIBUTES, MAX_ATTRIBUTE_NAME_BYTES};
        let cases = [
            (
                "userId,alertMessage,a,b,a".to_string(),
                "the header's column 5: attribute \"a\" is given twice".to_string(),
            ),
            (
                "userId,alertMessage,userid".to_string(),
                "the header names userId twice (columns 1 and 3)".to_string(),
            ),
            (
                "userId,alertMessage,x,AlertMessage".to_string(),
                "the header names alertMessage twice (columns 2 and 4)".to_string(),
            ),
            (
                "userId,alertMessage,".to_string(),
                "the header's column 3: an attribute name is empty".to_string(),
            ),
            (
                format!("userId,{}", "n".repeat(MAX_ATTRIBUTE_NAME_BYTES + 1)),
                format!(
                    "the header's column 2: attribute name \"{}\" is {} bytes, \
                     longer than the limit of {MAX_ATTRIBUTE_NAME_BYTES} bytes",
                    "n".repeat(MAX_ATTRIBUTE_NAME_BYTES),
                    MAX_ATTRIBUTE_NAME_BYTES + 1
                ),
            ),
            (
                format!(
                    "userId,alertMessage{}",
                    (0..=MAX_ATTRIBUTES)
                        .map(|i| format!(",a{i}"))
                        .collect::<String>()
                ),
                format!(
                    "the header has {} columns, more than the limit of {} \
                     (userId, alertMessage and {MAX_ATTRIBUTES} attributes)",
                    MAX_ATTRIBUTES + 3,
                    MAX_ATTRIBUTES + 2
                ),
            ),
        ];
        for (header, reason) in cases {
            let items = csv(&format!("{header}\nu1,hi\nu2,ho\n"), None);
            assert_eq!(
                items.iter().map(invalid_at).collect::<Vec<_>>(),
                [(2, reason.as_str()), (3, reason.as_str())],
                "{header}"
            );
        }
        // The most columns a header may have are fine.
        let header: String = (0..MAX_ATTRIBUTES).map(|i| format!(",a{i}")).collect();
        let items = csv(&format!("userId,alertMessage{header}\nu1,hi\n"), None);
        let super::Parsed::Record(r) = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(r.attributes.len(), MAX_ATTRIBUTES);
    }

    #[test]
    fn attributes_over_the_size_limit_make_only_that_line_invalid() {
        use crate::attributes::MAX_ATTRIBUTES_BYTES;
        let big = "x".repeat(MAX_ATTRIBUTES_BYTES);
        let data = format!("userId,alertMessage,a,b\nu1,hi,{big},y\nu2,hi,x,y\n");
        let items = csv(&data, None);
        assert_eq!(
            invalid_at(&items[0]),
            (
                2,
                format!("attributes take more than {MAX_ATTRIBUTES_BYTES} bytes").as_str()
            )
        );
        assert_eq!(
            items[1],
            rec_with(3, "u2", "hi", &[("a", json!("x")), ("b", json!("y"))])
        );
    }

    #[test]
    fn a_resumed_reader_given_the_header_reads_attributes() {
        let data = b"userId,alertMessage,orderId\nu1,a,A-1\nu2,b,A-2\n";
        let mut first = super::super::RecordReader::new(
            &data[..],
            Format::Csv,
            None,
            Limits::default(),
            Position::START,
        );
        first.next_record().unwrap();
        let at = first.position();
        let header = first.header().cloned();
        assert_eq!(
            header
                .as_ref()
                .map(|h| h.attribute_names().collect::<Vec<_>>()),
            Some(vec!["orderId"])
        );
        let resumed = |header| {
            let reader = super::super::RecordReader::new(
                &data[at.byte as usize..],
                Format::Csv,
                None,
                Limits::default(),
                at,
            )
            .with_header(header);
            super::super::tests::collect(reader).0
        };
        assert_eq!(
            resumed(header)[0].0,
            rec_with(3, "u2", "b", &[("orderId", json!("A-2"))])
        );
        // Without it the line has a field too many.
        assert!(matches!(resumed(None)[0].0, super::Parsed::Invalid(_)));
    }

    #[test]
    fn a_resumed_reader_does_not_look_for_a_header() {
        let data = b"u0,x\nuserId,alertMessage\n";
        let reader = super::super::RecordReader::new(
            &data[5..],
            Format::Csv,
            None,
            Limits::default(),
            Position { byte: 5, line: 2 },
        );
        let (items, _) = super::super::tests::collect(reader);
        assert_eq!(items[0].0, rec(2, "userId", "alertMessage"));
    }

    #[test]
    fn invalid_utf8_is_invalid_and_reading_goes_on() {
        let items = check_resume(
            b"u1,caf\xe9\n\xff\nu2,ok\n",
            Format::Csv,
            Some("d"),
            Limits::default(),
        );
        assert_eq!(invalid_at(&items[0]), (1, "record is not valid UTF-8"));
        assert_eq!(invalid_at(&items[1]), (2, "record is not valid UTF-8"));
        assert_eq!(items[2], rec(3, "u2", "ok"));
    }

    #[test]
    fn an_unterminated_quote_at_the_end_is_invalid() {
        let items = csv("u1,a\nu2,\"never closed\nu3,x\n", None);
        assert_eq!(items[0], rec(1, "u1", "a"));
        assert_eq!(
            invalid_at(&items[1]),
            (
                2,
                "unterminated quoted field: a \" opened in this record is never closed"
            )
        );
        assert_eq!(items.len(), 2);
        // A closed quote at the very end is fine.
        assert_eq!(csv("u1,\"a\"", None), [rec(1, "u1", "a")]);
    }

    #[test]
    fn quotes_inside_an_unquoted_field_are_literal() {
        assert_eq!(csv("u1,say \"hi\"\n", None), [rec(1, "u1", "say \"hi\"")]);
    }

    #[test]
    fn a_too_long_record_is_skipped_and_the_next_one_read() {
        let limits = Limits {
            max_record_bytes: 20,
            ..Limits::default()
        };
        let long = "x".repeat(100_000);
        let data = format!(
            "u1,{long}\nu2,ok\nu3,\"{long}\n,{long}\"\nu4,ok\n\"{long}\"\nu5,ok\nu6,{long}"
        );
        let items = check_resume(data.as_bytes(), Format::Csv, None, limits);
        let reason = "record longer than 20 bytes";
        assert_eq!(invalid_at(&items[0]), (1, reason));
        assert_eq!(items[1], rec(2, "u2", "ok"));
        assert_eq!(invalid_at(&items[2]), (3, reason));
        assert_eq!(items[3], rec(5, "u4", "ok"));
        assert_eq!(invalid_at(&items[4]), (6, reason));
        assert_eq!(items[5], rec(7, "u5", "ok"));
        assert_eq!(invalid_at(&items[6]), (8, reason));
        assert_eq!(items.len(), 7);
    }

    #[test]
    fn the_record_limit_is_exact_and_ignores_the_line_terminator() {
        let limits = Limits {
            max_record_bytes: 10,
            ..Limits::default()
        };
        // Ten bytes, with LF, CRLF and no terminator: all fit.
        for data in ["u1,4567890\n", "u1,4567890\r\n", "u1,4567890"] {
            assert_eq!(
                parse_with(data.as_bytes(), Format::Csv, None, limits),
                [rec(1, "u1", "4567890")]
            );
        }
        let items = parse_with(b"u1,45678901\n", Format::Csv, None, limits);
        assert_eq!(invalid_at(&items[0]), (1, "record longer than 10 bytes"));
        // Quoting counts: the raw record is what is limited.
        let items = parse_with(b"u1,\"\"\"\"\"\"\"\"\n", Format::Csv, None, limits);
        assert_eq!(invalid_at(&items[0]), (1, "record longer than 10 bytes"));
    }

    #[test]
    fn an_unterminated_quote_longer_than_the_limit_is_too_long() {
        let limits = Limits {
            max_record_bytes: 10,
            ..Limits::default()
        };
        let items = parse_with(b"u1,\"abc\nu2,def\nu3\n", Format::Csv, None, limits);
        assert_eq!(invalid_at(&items[0]), (1, "record longer than 10 bytes"));
        assert_eq!(items.len(), 1);
    }

    #[test]
    fn control_characters_in_a_user_id_are_invalid() {
        let items = parse(b"\"u\n1\",hi\nu\x1b2,hi\n", Format::Csv, None);
        assert_eq!(
            invalid_at(&items[0]),
            (1, "userId contains a control character (U+000A)")
        );
        assert_eq!(
            invalid_at(&items[1]),
            (3, "userId contains a control character (U+001B)")
        );
    }

    #[test]
    fn an_empty_user_id_is_invalid() {
        let items = csv(",hello\n\"\",hi\n", None);
        assert_eq!(invalid_at(&items[0]), (1, "userId is empty"));
        assert_eq!(invalid_at(&items[1]), (2, "userId is empty"));
    }

    #[test]
    fn unicode_passes_through() {
        assert_eq!(
            csv("usér-1,Votre commande 📦 est partie\n", None),
            [rec(1, "usér-1", "Votre commande 📦 est partie")]
        );
    }
}
