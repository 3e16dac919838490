//! A JSON array of objects, streamed element by element.
//!
//! The array is never parsed whole: a small scanner tracks strings, escapes
//! and nesting to find where each element ends (the next `,` or `]` outside
//! strings and brackets), and only that element is handed to serde_json.
//! Malformed input therefore stays local: garbage or a broken object makes
//! one element invalid, and the next element parses normally.
//!
//! Items are numbered by element, not by physical line: the `line` of every
//! item is the 1-based number of its element in the array, and the `line`
//! of a position is the number of the next element. A minified array has
//! all its elements on one line, and message ids (job, line) must still be
//! unique. Every item, invalid ones included (an empty element, the single
//! "not an array" or "data after ]" item), takes the next number, so item
//! `k` (from 1) is numbered `k` and a reader resumed at a position numbers
//! on from it. The buffer counts no newlines for this format.

use std::io::{self, Read};

use super::buffer::Buffer;
use super::{invalid, json, Parsed, Rules};

const NOT_AN_ARRAY: &str = "not a JSON array: the input must start with [";
const EMPTY_ELEMENT: &str = "empty array element (a comma with no value before it)";
const AFTER_ARRAY: &str = "unexpected data after the closing ] of the array";
const UNCLOSED: &str = "the array ends without its closing ]: the input may be truncated";

/// The JSON array parser's state between elements.
#[derive(Debug)]
pub(super) struct JsonArrayParser {
    state: State,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the opening `[` (only a reader that starts at byte 0).
    Before,
    /// Inside the array, before an element or the closing `]`. A resumed
    /// reader starts here: positions inside an array are always here.
    Elements,
    /// After the closing `]`: only whitespace may follow.
    After,
    /// The input is consumed.
    Done,
}

impl JsonArrayParser {
    pub(super) fn new(at_input_start: bool) -> Self {
        JsonArrayParser {
            state: if at_input_start {
                State::Before
            } else {
                State::Elements
            },
        }
    }

    /// The next element or invalid item; `None` at the end of the input.
    pub(super) fn next<R: Read>(
        &mut self,
        input: &mut Buffer<R>,
        rules: &Rules,
    ) -> io::Result<Option<Parsed>> {
        let item = self.next_item(input, rules)?;
        if item.is_some() {
            // Each item is one element: the position names the next one.
            input.next_line();
        }
        Ok(item)
    }

    /// The next item, numbered with the line of `input`'s position (the
    /// number of the next element), which the caller then advances.
    fn next_item<R: Read>(
        &mut self,
        input: &mut Buffer<R>,
        rules: &Rules,
    ) -> io::Result<Option<Parsed>> {
        loop {
            if self.state == State::Done {
                return Ok(None);
            }
            let Some(byte) = skip_whitespace(input)? else {
                // An array cut off right after `[` or a comma is not reported:
                // that position is also where a resumed reader starts, and an
                // item must consume input for resuming to be exact.
                self.state = State::Done;
                return Ok(None);
            };
            // The element number, not a physical line (see the module docs).
            let line = input.position().line;
            match (self.state, byte) {
                (State::Before, b'[') => {
                    input.consume(1);
                    self.state = State::Elements;
                }
                (State::Before, _) => return self.give_up(input, line, NOT_AN_ARRAY),
                (State::After, _) => return self.give_up(input, line, AFTER_ARRAY),
                (_, b']') => {
                    input.consume(1);
                    self.state = State::After;
                }
                (_, b',') => {
                    input.consume(1);
                    return Ok(Some(invalid(line, EMPTY_ELEMENT)));
                }
                _ => return self.element(input, rules, line).map(Some),
            }
        }
    }

    /// Reports `reason` and consumes the rest of the input: once the shape
    /// of the input is wrong, there are no elements to find in it.
    fn give_up<R: Read>(
        &mut self,
        input: &mut Buffer<R>,
        line: u64,
        reason: &str,
    ) -> io::Result<Option<Parsed>> {
        loop {
            input.consume(input.available().len());
            if !input.fill()? {
                break;
            }
        }
        self.state = State::Done;
        Ok(Some(invalid(line, reason)))
    }

    /// Reads the element at the first available byte, and the separator
    /// after it: a comma is consumed, a `]` is left for the next call.
    fn element<R: Read>(
        &mut self,
        input: &mut Buffer<R>,
        rules: &Rules,
        line: u64,
    ) -> io::Result<Parsed> {
        let max = rules.limits().max_record_bytes as u64;
        let mut scanner = Scanner::default();
        // While the element fits, keep it buffered so it can be parsed in
        // one piece.
        let end = loop {
            let available = input.available();
            let from = scanner.scanned as usize;
            if let Some(i) = scanner.scan(&available[from..]) {
                break Some(from + i);
            }
            if scanner.content_len > max || input.is_full() {
                return self.skip_element(input, scanner, rules, line);
            }
            if !input.fill()? {
                break None;
            }
        };
        let available = input.available();
        let text = &available[..scanner.content_len as usize];
        let item = match end {
            Some(_) if scanner.content_len > max => rules.too_long(line),
            Some(_) => json::record(line, text, rules),
            None => match json::record(line, text, rules) {
                // A complete last element, but the array is cut off.
                Parsed::Record(_) => invalid(line, UNCLOSED),
                broken => broken,
            },
        };
        match end {
            Some(end) => self.consume_separator(input, end),
            None => {
                input.consume(available.len());
                self.state = State::Done;
            }
        }
        Ok(item)
    }

    /// Consumes the rest of an element too long to buffer, scanning it as
    /// it goes.
    fn skip_element<R: Read>(
        &mut self,
        input: &mut Buffer<R>,
        mut scanner: Scanner,
        rules: &Rules,
        line: u64,
    ) -> io::Result<Parsed> {
        // `scanner` has seen all available bytes.
        input.consume(input.available().len());
        loop {
            if !input.fill()? {
                self.state = State::Done;
                break;
            }
            let available = input.available();
            match scanner.scan(available) {
                Some(end) => {
                    self.consume_separator(input, end);
                    break;
                }
                None => input.consume(available.len()),
            }
        }
        Ok(rules.too_long(line))
    }

    /// Consumes an element ending before `available()[end]`, and the comma
    /// there if it is one.
    fn consume_separator<R: Read>(&mut self, input: &mut Buffer<R>, end: usize) {
        let comma = input.available()[end] == b',';
        input.consume(end + usize::from(comma));
    }
}

/// Finds the end of one JSON value, across as many buffers as it takes.
#[derive(Debug, Default)]
struct Scanner {
    /// `[` and `{` opened and not yet closed.
    depth: u64,
    in_string: bool,
    /// The previous byte was a backslash inside a string.
    escaped: bool,
    /// Bytes of the element scanned so far.
    scanned: u64,
    /// Bytes from the element's start to its last non-whitespace byte.
    content_len: u64,
}

impl Scanner {
    /// Scans `bytes`, which follow the ones scanned before. Returns the
    /// index in `bytes` of the `,` or `]` that ends the element, if any.
    fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        let start = self.scanned;
        for (i, &b) in bytes.iter().enumerate() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
            } else {
                match b {
                    b' ' | b'\t' | b'\n' | b'\r' => continue,
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' if self.depth > 0 => self.depth -= 1,
                    b',' | b']' if self.depth == 0 => {
                        self.scanned += i as u64;
                        return Some(i);
                    }
                    // Anything else, a stray `}` included, belongs to the
                    // element, and serde_json will say what is wrong with it.
                    _ => {}
                }
            }
            self.content_len = start + i as u64 + 1;
        }
        self.scanned += bytes.len() as u64;
        None
    }
}

/// JSON's insignificant whitespace.
fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Consumes whitespace and returns the next byte, unconsumed, or `None` at
/// the end of the input.
fn skip_whitespace<R: Read>(input: &mut Buffer<R>) -> io::Result<Option<u8>> {
    loop {
        let available = input.available();
        let n = available.iter().take_while(|&&b| is_whitespace(b)).count();
        let next = available.get(n).copied();
        input.consume(n);
        if next.is_some() {
            return Ok(next);
        }
        if !input.fill()? {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check_resume, invalid_at, parse_with, rec, rec_with};
    use super::super::{Limits, Position, RecordReader};
    use super::*;
    use crate::model::Format;

    fn array(data: &str, default: Option<&str>) -> Vec<Parsed> {
        check_resume(
            data.as_bytes(),
            Format::JsonArray,
            default,
            Limits::default(),
        )
    }

    #[test]
    fn elements_are_numbered_wherever_they_are_on_their_lines() {
        let data = "[\n  {\"userId\": \"u1\", \"alertMessage\": \"Hello\"},\n  {\"userId\": 2},\n\n  {\n    \"userId\": \"u3\"\n  }, {\"userId\": \"u4\"}\n]\n";
        assert_eq!(
            array(data, Some("D")),
            [
                rec(1, "u1", "Hello"),
                rec(2, "2", "D"),
                rec(3, "u3", "D"),
                rec(4, "u4", "D")
            ]
        );
        assert_eq!(
            array("[{\"userId\":\"u1\"},{\"userId\":\"u2\"}]", Some("D")),
            [rec(1, "u1", "D"), rec(2, "u2", "D")]
        );
    }

    #[test]
    fn a_minified_array_numbers_every_element() {
        let n = 1_000;
        let data = format!(
            "[{}]",
            (1..=n)
                .map(|i| format!("{{\"userId\":\"u{i}\",\"alertMessage\":\"m{i}\"}}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(!data.contains('\n'));
        // `check_resume` also resumes at every boundary and checks that the
        // numbering goes on from there.
        let items = array(&data, None);
        let expected: Vec<_> = (1..=n)
            .map(|i| rec(i, &format!("u{i}"), &format!("m{i}")))
            .collect();
        assert_eq!(items, expected);
        let lines: std::collections::HashSet<_> = items
            .iter()
            .map(|item| match item {
                Parsed::Record(r) => r.line,
                Parsed::Invalid(i) => i.line,
            })
            .collect();
        assert_eq!(lines.len(), n as usize);

        // Resuming at element 501 numbers on from 501.
        let mut reader = RecordReader::new(
            data.as_bytes(),
            Format::JsonArray,
            None,
            Limits::default(),
            Position::START,
        );
        for _ in 0..500 {
            reader.next_record().ok().flatten();
        }
        let at = reader.position();
        assert_eq!(at.line, 501);
        let mut resumed = RecordReader::new(
            &data.as_bytes()[at.byte as usize..],
            Format::JsonArray,
            None,
            Limits::default(),
            at,
        );
        assert_eq!(
            resumed.next_record().ok().flatten(),
            Some(rec(501, "u501", "m501"))
        );
        assert_eq!(resumed.position().line, 502);
    }

    #[test]
    fn positions_are_after_the_comma_or_at_the_bracket() {
        let data = b"[ {\"userId\":\"u1\"} ,\n{\"userId\":\"u2\"}\n] ";
        let mut reader = RecordReader::new(
            &data[..],
            Format::JsonArray,
            Some("D".into()),
            Limits::default(),
            Position::START,
        );
        let mut positions = Vec::new();
        while let Ok(Some(_)) = reader.next_record() {
            positions.push(reader.position());
        }
        // The line of a position is the number of the next element.
        assert_eq!(
            positions,
            [
                Position { byte: 19, line: 2 },
                Position { byte: 36, line: 3 }
            ]
        );
        assert_eq!(reader.next_record().ok(), Some(None));
        assert_eq!(reader.position(), Position { byte: 38, line: 3 });
    }

    #[test]
    fn empty_arrays_and_empty_input() {
        assert_eq!(array("[]", None), []);
        assert_eq!(array(" \n[\n]\n", None), []);
        assert_eq!(array("", None), []);
        assert_eq!(array("\u{feff}  \n", None), []);
        assert_eq!(
            array("\u{feff}[{\"userId\":\"u1\"}]", Some("D")),
            [rec(1, "u1", "D")]
        );
    }

    #[test]
    fn strings_and_nesting_do_not_end_an_element() {
        let data = "[{\"userId\":\"u1\",\"x\":\"a, ] } \\\" [ \\\\\",\"y\":[1,[2,{\"z\":\"]\"}]]},{\"userId\":\"u2\"}]";
        assert_eq!(
            array(data, Some("D")),
            [
                rec_with(
                    1,
                    "u1",
                    "D",
                    &[
                        ("x", serde_json::json!("a, ] } \" [ \\")),
                        ("y", serde_json::json!([1, [2, {"z": "]"}]])),
                    ]
                ),
                rec(2, "u2", "D")
            ]
        );
    }

    #[test]
    fn elements_are_validated_like_json_lines() {
        let data = "[{\"userId\":\"u1\",\"alertMessage\":7},{\"alertMessage\":\"x\"},[\"u3\"],\"u4\",{\"userId\":\"\"},{\"userId\":\"u6\"}]";
        let items = array(data, None);
        let lines: Vec<_> = items.iter().map(|i| invalid_at(i).0).collect();
        assert_eq!(lines, [1, 2, 3, 4, 5, 6]);
        let reasons: Vec<_> = items.iter().map(|i| invalid_at(i).1).collect();
        assert!(reasons[0].starts_with("invalid type: integer `7`, expected a string"));
        assert!(reasons[1].starts_with("missing field `userId`"));
        assert!(reasons[2].starts_with("invalid type: sequence, expected a JSON object"));
        assert!(reasons[3].starts_with("invalid type: string \"u4\", expected a JSON object"));
        assert_eq!(reasons[4], "userId is empty");
        assert_eq!(
            reasons[5],
            "alertMessage is missing and the job has no default message"
        );
    }

    #[test]
    fn garbage_between_elements_spoils_only_its_element() {
        let data = "[\n{\"userId\":\"u1\"} garbage,\n{\"userId\":\"u2\"},\nnonsense,\n,\n{\"userId\":\"u3\"}}\n,{\"userId\":\"u4\"},\n]";
        let items = array(data, Some("D"));
        assert!(
            invalid_at(&items[0]).1.starts_with("trailing characters"),
            "{:?}",
            items[0]
        );
        assert_eq!(invalid_at(&items[0]).0, 1);
        assert_eq!(items[1], rec(2, "u2", "D"));
        assert_eq!(invalid_at(&items[2]).0, 3);
        // An empty element is an element: it takes a number.
        assert_eq!(invalid_at(&items[3]), (4, EMPTY_ELEMENT));
        assert_eq!(invalid_at(&items[4]).0, 5);
        assert_eq!(items[5], rec(6, "u4", "D"));
        assert_eq!(items.len(), 6);
    }

    #[test]
    fn a_missing_closing_bracket_is_reported() {
        let items = array("[\n{\"userId\":\"u1\"},\n{\"userId\":\"u2\"}\n", Some("D"));
        assert_eq!(items[0], rec(1, "u1", "D"));
        assert_eq!(invalid_at(&items[1]), (2, UNCLOSED));
        assert_eq!(items.len(), 2);

        let items = array("[{\"userId\":\"u1\"},{\"userId\":\"u2", Some("D"));
        assert!(invalid_at(&items[1])
            .1
            .starts_with("EOF while parsing a string"));
        let items = array("[{\"userId\":\"u1\",\"x\":[[[{", Some("D"));
        assert!(invalid_at(&items[0]).1.starts_with("EOF while parsing"));

        // Cut off after a comma: nothing is left to attach the error to.
        assert_eq!(
            array("[{\"userId\":\"u1\"},\n", Some("D")),
            [rec(1, "u1", "D")]
        );
    }

    #[test]
    fn input_that_is_not_an_array_is_one_invalid_item() {
        for data in [
            "{\"userId\":\"u1\"}\n{\"userId\":\"u2\"}\n",
            "u1,hello\nu2,bye\n",
            "\u{feff}\"[\"",
            "]",
        ] {
            let items = array(data, Some("D"));
            assert_eq!(items.len(), 1, "{data:?}");
            assert_eq!(invalid_at(&items[0]), (1, NOT_AN_ARRAY));
        }
    }

    #[test]
    fn data_after_the_array_is_one_invalid_item() {
        let items = array(
            "[{\"userId\":\"u1\"}]\n\n[{\"userId\":\"u2\"}]\n",
            Some("D"),
        );
        assert_eq!(items[0], rec(1, "u1", "D"));
        // The number the next element would have had.
        assert_eq!(invalid_at(&items[1]), (2, AFTER_ARRAY));
        assert_eq!(items.len(), 2);
        let items = array("[{\"userId\":\"u1\"},{\"userId\":\"u2\"},] x", Some("D"));
        assert_eq!(invalid_at(&items[2]), (3, AFTER_ARRAY));
    }

    #[test]
    fn a_too_long_element_is_skipped_and_the_next_one_read() {
        let limits = Limits {
            max_record_bytes: 40,
            ..Limits::default()
        };
        let long = "x".repeat(150_000);
        let data = format!(
            "[{{\"userId\":\"u1\",\"alertMessage\":\"{long}\"}},\n{{\"userId\":\"u2\"}},\n\
             {{\"userId\":\"u3\",\"x\":[[\"{long}\",\"],\\\"\"]]}}\n,{{\"userId\":\"u4\"}},\n\
             {{\"userId\":\"u5\",\"x\":\"{long}\"}}]"
        );
        let items = check_resume(data.as_bytes(), Format::JsonArray, Some("D"), limits);
        let reason = "record longer than 40 bytes";
        assert_eq!(invalid_at(&items[0]), (1, reason));
        assert_eq!(items[1], rec(2, "u2", "D"));
        assert_eq!(invalid_at(&items[2]), (3, reason));
        assert_eq!(items[3], rec(4, "u4", "D"));
        assert_eq!(invalid_at(&items[4]), (5, reason));
        assert_eq!(items.len(), 5);
        // Cut off inside a long element.
        let items = parse_with(
            &data.as_bytes()[..1000],
            Format::JsonArray,
            Some("D"),
            limits,
        );
        assert_eq!(items.len(), 1);
        assert_eq!(invalid_at(&items[0]), (1, reason));
    }

    #[test]
    fn the_element_limit_ignores_surrounding_whitespace() {
        let limits = Limits {
            max_record_bytes: 15,
            ..Limits::default()
        };
        let data = format!(
            "[{}{{\"userId\":\"u1\"}}{}]",
            " ".repeat(100),
            "\n".repeat(100)
        );
        assert_eq!(
            parse_with(data.as_bytes(), Format::JsonArray, Some("D"), limits),
            [rec(1, "u1", "D")]
        );
        let items = parse_with(
            b"[{\"userId\":\"u12\"}]",
            Format::JsonArray,
            Some("D"),
            limits,
        );
        assert_eq!(invalid_at(&items[0]), (1, "record longer than 15 bytes"));
    }
}
