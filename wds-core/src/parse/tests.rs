//! Tests across formats: resuming at every boundary, reads of any size,
//! garbage input, and format detection. Format rules are tested next to
//! their parsers, with the helpers here.

use std::io::{self, Read};

use super::*;

/// Reads everything from `reader`, with the position after each item.
pub(super) fn collect<R: Read>(mut reader: RecordReader<R>) -> (Vec<(Parsed, Position)>, Position) {
    let mut items = Vec::new();
    while let Some(item) = reader.next_record().expect("in-memory reads do not fail") {
        items.push((item, reader.position()));
        assert!(items.len() < 1_000_000, "reader does not terminate");
    }
    (items, reader.position())
}

/// The items of `data`, read from the start.
pub(super) fn parse_with(
    data: &[u8],
    format: Format,
    default: Option<&str>,
    limits: Limits,
) -> Vec<Parsed> {
    let reader = RecordReader::new(
        data,
        format,
        default.map(String::from),
        limits,
        Position::START,
    );
    collect(reader)
        .0
        .into_iter()
        .map(|(item, _)| item)
        .collect()
}

/// The items of `data` with default limits.
pub(super) fn parse(data: &[u8], format: Format, default: Option<&str>) -> Vec<Parsed> {
    parse_with(data, format, default, Limits::default())
}

/// A valid record.
pub(super) fn rec(line: u64, user_id: &str, alert_message: &str) -> Parsed {
    Parsed::Record(Record::new(line, user_id, alert_message))
}

/// A valid record with attributes (name and JSON value pairs, in order).
pub(super) fn rec_with(
    line: u64,
    user_id: &str,
    alert_message: &str,
    attributes: &[(&str, serde_json::Value)],
) -> Parsed {
    let attributes = crate::Attributes::try_from_pairs(attributes.iter().cloned())
        .expect("test attributes keep the limits");
    Parsed::Record(Record::new(line, user_id, alert_message).with_attributes(attributes))
}

/// The line and reason of an invalid item, or a panic naming what it was.
#[track_caller]
pub(super) fn invalid_at(item: &Parsed) -> (u64, &str) {
    match item {
        Parsed::Invalid(i) => (i.line, i.reason.as_str()),
        other => panic!("expected an invalid item, got {other:?}"),
    }
}

/// Hands out at most `n` bytes per `read` call, and `Interrupted` before
/// every other one, to exercise every buffer boundary.
pub(super) struct Trickle<'a> {
    data: &'a [u8],
    n: usize,
    interrupt: bool,
}

impl<'a> Trickle<'a> {
    pub(super) fn new(data: &'a [u8], n: usize) -> Self {
        Trickle {
            data,
            n,
            interrupt: false,
        }
    }
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.interrupt = !self.interrupt;
        if self.interrupt {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = self.n.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Checks that reading `data` in 1-byte reads gives what reading it whole
/// does, and that a reader resumed at any position returned gives exactly
/// the remaining items, with the same positions; and that lines are
/// physical lines, or for JSON arrays element numbers. Returns the items.
pub(super) fn check_resume(
    data: &[u8],
    format: Format,
    default: Option<&str>,
    limits: Limits,
) -> Vec<Parsed> {
    // Leaked so that the readers can borrow it for 'static; tests only.
    let data: &'static [u8] = Box::leak(data.to_vec().into_boxed_slice());
    // A resumed reader is given the header the first one read, as the
    // batcher does.
    let header = {
        let mut first = RecordReader::new(
            data,
            format,
            default.map(String::from),
            limits,
            Position::START,
        );
        while first.next_record().expect("in-memory").is_some() && first.header().is_none() {}
        first.header().cloned()
    };
    let new = |bytes: &'static [u8], start: Position| {
        RecordReader::new(bytes, format, default.map(String::from), limits, start)
            .with_header(header.clone())
    };
    let (straight, end) = collect(new(data, Position::START));
    assert_eq!(
        end.byte,
        data.len() as u64,
        "the end position is the end of the input"
    );

    let trickled = collect(RecordReader::new(
        Trickle::new(data, 1),
        format,
        default.map(String::from),
        limits,
        Position::START,
    ));
    assert_eq!(
        trickled,
        (straight.clone(), end),
        "1-byte reads change the result"
    );

    if format == Format::JsonArray {
        // Item k (from 1) is numbered k: the numbers are distinct even when
        // every element is on one line.
        for (k, (item, _)) in straight.iter().enumerate() {
            let line = match item {
                Parsed::Record(r) => r.line,
                Parsed::Invalid(i) => i.line,
            };
            assert_eq!(line, k as u64 + 1, "JSON array item {k} is {item:?}");
        }
    }

    let mut boundaries = vec![Position::START];
    boundaries.extend(straight.iter().map(|(_, p)| *p));
    for (k, start) in boundaries.iter().enumerate() {
        if format == Format::JsonArray {
            assert_eq!(
                start.line,
                k as u64 + 1,
                "the line of position {start:?} is the number of the next element"
            );
        } else {
            let before = &data[..start.byte as usize];
            // CSV also ends a line at a lone '\r'; JSON Lines at '\n' only.
            let breaks = match format {
                Format::Csv => before
                    .iter()
                    .enumerate()
                    .filter(|&(i, &b)| {
                        b == b'\r' || (b == b'\n' && (i == 0 || before[i - 1] != b'\r'))
                    })
                    .count(),
                _ => before.iter().filter(|&&b| b == b'\n').count(),
            };
            assert_eq!(
                start.line,
                1 + breaks as u64,
                "the line of position {start:?} counts the line breaks before it"
            );
            if format == Format::Csv && start.byte > 0 {
                assert!(
                    !(before.last() == Some(&b'\r') && data.get(before.len()) == Some(&b'\n')),
                    "position {start:?} splits a \\r\\n"
                );
            }
        }
        let rest = &data[start.byte as usize..];
        let resumed = collect(new(rest, *start));
        let expected: Vec<_> = straight[k..].to_vec();
        assert_eq!(resumed.0, expected, "resuming at {start:?} (item {k})");
        assert_eq!(
            resumed.1, end,
            "resuming at {start:?} ends at the same place"
        );
        let resumed = collect(
            RecordReader::new(
                Trickle::new(rest, 3),
                format,
                default.map(String::from),
                limits,
                *start,
            )
            .with_header(header.clone()),
        );
        assert_eq!(
            resumed.0, expected,
            "resuming at {start:?} with 3-byte reads"
        );
    }
    straight.into_iter().map(|(item, _)| item).collect()
}

/// Small limits, so that tricky inputs cross them.
fn small_limits() -> Limits {
    Limits {
        max_user_id_bytes: 12,
        max_message_bytes: 24,
        max_record_bytes: 32,
    }
}

const TRICKY_CSV: &[&[u8]] = &[
    b"",
    b"\n\n\r\n",
    b"u1",
    b"u1,hello\n",
    b"\xef\xbb\xbfuserId,alertMessage\r\nu1,hi\r\n\r\nu2\r\n",
    b"userId\nu1\n\n  \n,\n,,,\nu2,\"multi\nline, with \"\"quotes\"\"\"\nu3,after\n",
    b"u1,\"unterminated\nu2,x\nu3,y",
    b"u1,\"x\"\"\n",
    b"a,b,c\nu1,ok\n\"q\"\"\",m\n",
    b"u1,this message is far too long for the record limit of 32 bytes\nu2,short\n",
    b"u1,\"quoted record\nthat is far too long, spanning lines\nand more\"\nu2,ok\r\n",
    b"u1,\xff\xfe\nu2,ok\n\xef\xbb\xbfu3,bom inside\n",
    b"u\x01,ctl\nu2,nul\x00\n",
    b"\r\r\nu1,cr\r\r\n",
    b"u1,\"\"\nu2,\"\"\"\"\n\"\"\n",
];

const TRICKY_JSON_LINES: &[&[u8]] = &[
    b"",
    b"{\"userId\":\"u1\"}",
    b"\xef\xbb\xbf{\"userId\":\"u1\",\"alertMessage\":\"hi\"}\r\n\r\n{\"userId\":2}\r\n",
    b"{\"userId\":\"u1\"}\nnot json\n[1,2]\n{\"alertMessage\":\"x\"}\n\n   \n{\"userId\":1.5}\n",
    b"{\"userId\":\"u1\",\"alertMessage\":\"this message is far too long for the limit\"}\n{\"userId\":\"u2\"}\n",
    b"{\"userId\":\"u1\",\"extra\":{\"a\":[1,2,{\"b\":\"c\"}]}}\n{\"userId\":\"\\u0000\"}\n",
    b"\xff\xfe\n{\"userId\":\"u3\"}\n{\"userId\":\"u4\"",
];

const TRICKY_JSON_ARRAYS: &[&[u8]] = &[
    b"",
    b"[]",
    b"[ ]\n",
    b"[{\"userId\":\"u1\"}]",
    b"\xef\xbb\xbf[\n  {\"userId\": \"u1\", \"alertMessage\": \"hi\"},\n  {\"userId\": 2}\n]\n",
    b"[{\"userId\":\"u1\"} garbage, {\"userId\":\"u2\"}, 17, ,{\"userId\":\"u3\"},]",
    b"[\n{\"userId\":\"u1\",\"x\":\"a, ] } \\\" [\"},\n{\"userId\":\"u2\",\"n\":[[],{}]}\n]",
    b"[{\"userId\":\"u1\"},{\"userId\":\"u2\"}",
    b"[{\"userId\":\"u1\"},",
    b"[{\"userId\":\"u1\"},{\"userId\":\"u2",
    b"{\"userId\":\"u1\"}\n{\"userId\":\"u2\"}\n",
    b"[{\"userId\":\"u1\"}] trailing\n[{\"userId\":\"u2\"}]",
    b"[{\"userId\":\"u1\",\"alertMessage\":\"longer than the record limit of 32\"},\n{\"userId\":\"u2\"}]",
    b"[{\"userId\":\"u1\",\"x\":[[[[[[[\"long enough to be skipped, with ] and , inside\"]]]]]]]}, {\"userId\":\"u2\"}]",
    b"[{\"userId\":\"u1\"}}, {\"userId\":\"u2\"}]]]",
    b"[[{\"userId\":\"u1\"}], \"u2\", null, true]",
];

#[test]
fn csv_resumes_at_every_boundary() {
    for data in TRICKY_CSV {
        for limits in [Limits::default(), small_limits()] {
            for default in [None, Some("default")] {
                check_resume(data, Format::Csv, default, limits);
            }
        }
    }
}

#[test]
fn json_lines_resume_at_every_boundary() {
    for data in TRICKY_JSON_LINES {
        for limits in [Limits::default(), small_limits()] {
            for default in [None, Some("default")] {
                check_resume(data, Format::JsonLines, default, limits);
            }
        }
    }
}

#[test]
fn json_arrays_resume_at_every_boundary() {
    for data in TRICKY_JSON_ARRAYS {
        for limits in [Limits::default(), small_limits()] {
            for default in [None, Some("default")] {
                check_resume(data, Format::JsonArray, default, limits);
            }
        }
    }
}

#[test]
fn every_format_reads_every_other_format_without_panicking() {
    let inputs = TRICKY_CSV
        .iter()
        .chain(TRICKY_JSON_LINES)
        .chain(TRICKY_JSON_ARRAYS);
    for data in inputs {
        for format in [Format::Csv, Format::JsonLines, Format::JsonArray] {
            check_resume(data, format, Some("m"), small_limits());
        }
    }
}

/// A deterministic pseudo-random generator (xorshift), so that failures
/// reproduce.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize, alphabet: &[u8]) -> Vec<u8> {
        (0..len)
            .map(|_| {
                let r = self.next();
                if alphabet.is_empty() {
                    r as u8
                } else {
                    alphabet[(r % alphabet.len() as u64) as usize]
                }
            })
            .collect()
    }
}

#[test]
fn binary_garbage_terminates_and_resumes_exactly() {
    let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15);
    // Random bytes, and random bytes from the characters that matter to the
    // parsers, which reach far more states.
    let alphabets: [&[u8]; 3] = [b"", b"u1,\"\n\r {}[]:\\", b"{\"userId\":1,}[] \n\r\\"];
    for round in 0..150 {
        let alphabet = alphabets[round % alphabets.len()];
        let len = (rng.next() % 300) as usize;
        let data = rng.bytes(len, alphabet);
        for format in [Format::Csv, Format::JsonLines, Format::JsonArray] {
            for limits in [Limits::default(), small_limits()] {
                check_resume(&data, format, None, limits);
            }
        }
    }
}

#[test]
fn large_random_garbage_stays_within_the_limits() {
    let mut rng = Xorshift(42);
    let data = rng.bytes(2_000_000, b"");
    let limits = Limits {
        max_record_bytes: 100,
        ..Limits::default()
    };
    for format in [Format::Csv, Format::JsonLines, Format::JsonArray] {
        let reader = RecordReader::new(&data[..], format, None, limits, Position::START);
        let (items, end) = collect(reader);
        assert_eq!(end.byte, data.len() as u64);
        assert!(items
            .iter()
            .all(|(item, _)| matches!(item, Parsed::Invalid(_))));
    }
}

#[test]
fn many_records_cross_buffer_boundaries() {
    let mut csv = String::new();
    let mut lines = String::new();
    let mut array = String::from("[\n");
    for i in 0..20_000 {
        csv.push_str(&format!("user-{i},\"Message, number {i}\"\r\n"));
        lines.push_str(&format!(
            "{{\"userId\":\"user-{i}\",\"alertMessage\":\"Message {i}\"}}\n"
        ));
        array.push_str(&format!(
            "{}{{\"userId\":{i}}}\n",
            if i > 0 { "," } else { "" }
        ));
    }
    array.push(']');
    for (data, format) in [
        (&csv, Format::Csv),
        (&lines, Format::JsonLines),
        (&array, Format::JsonArray),
    ] {
        let (items, end) = collect(RecordReader::new(
            Trickle::new(data.as_bytes(), 7919),
            format,
            Some("d".into()),
            Limits::default(),
            Position::START,
        ));
        assert_eq!(end.byte, data.len() as u64);
        assert_eq!(items.len(), 20_000, "{format:?}");
        for (i, (item, _)) in items.iter().enumerate() {
            let Parsed::Record(r) = item else {
                panic!("{format:?} item {i} is {item:?}");
            };
            // The array's records start on line 2, but are numbered by
            // element.
            assert_eq!(r.line, i as u64 + 1, "{format:?}");
        }
    }
}

#[test]
fn a_read_error_is_returned_and_the_position_stays_at_the_last_item() {
    /// Fails after `ok` bytes.
    struct Failing<'a>(&'a [u8]);
    impl Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.0.len()).min(10);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut reader = RecordReader::new(
        Failing(b"u1,a\nu2,b\nu3,c"),
        Format::Csv,
        None,
        Limits::default(),
        Position::START,
    );
    assert_eq!(reader.next_record().ok().flatten(), Some(rec(1, "u1", "a")));
    assert_eq!(reader.next_record().ok().flatten(), Some(rec(2, "u2", "b")));
    let err = reader.next_record().err();
    assert_eq!(err.map(|e| e.to_string()), Some("disk on fire".to_string()));
    assert_eq!(reader.position(), Position { byte: 10, line: 3 });
}

#[test]
fn each_format_extension_is_detected_as_that_format() {
    for format in [Format::Csv, Format::JsonLines, Format::JsonArray] {
        let name = format!("upload.{}", format.extension());
        assert_eq!(detect_format(&name, b""), format, "{name}");
    }
}

#[test]
fn detect_format_by_extension_then_content() {
    let cases: &[(&str, &[u8], Format)] = &[
        ("users.csv", b"[{\"userId\":1}]", Format::Csv),
        ("USERS.CSV", b"", Format::Csv),
        ("users.txt", b"{}", Format::Csv),
        ("users.jsonl", b"[1]", Format::JsonLines),
        ("users.ndjson", b"", Format::JsonLines),
        ("users.json", b"[{}]", Format::JsonArray),
        ("users.json", b"", Format::JsonArray),
        (
            "users.json",
            b"\xEF\xBB\xBF\r\n {\"userId\":1}",
            Format::JsonLines,
        ),
        ("users.JSON", b"  \n[", Format::JsonArray),
        ("upload", b"\n\t[{}]", Format::JsonArray),
        ("upload.bin", b"\xEF\xBB\xBF{", Format::JsonLines),
        ("dir.json/upload", b"u1,hi", Format::Csv),
        ("upload", b"u1,hi", Format::Csv),
        ("upload", b"", Format::Csv),
        ("", b"   ", Format::Csv),
    ];
    for (name, head, expected) in cases {
        assert_eq!(detect_format(name, head), *expected, "{name} {head:?}");
    }
}

#[test]
fn shared_validation_applies_to_every_format() {
    let limits = Limits {
        max_record_bytes: 200,
        ..small_limits()
    };
    let long_id = "x".repeat(13);
    let long_message = "m".repeat(25);
    let inputs = [
        (
            Format::Csv,
            format!("{long_id},m\nu1,{long_message}\nu\u{7f},m\nu\u{85},m\nu1,a\u{0}b\n"),
        ),
        (
            Format::JsonLines,
            format!(
                "{{\"userId\":\"{long_id}\",\"alertMessage\":\"m\"}}\n\
                 {{\"userId\":\"u1\",\"alertMessage\":\"{long_message}\"}}\n\
                 {{\"userId\":\"u\\u007f\",\"alertMessage\":\"m\"}}\n\
                 {{\"userId\":\"u\\u0085\",\"alertMessage\":\"m\"}}\n\
                 {{\"userId\":\"u1\",\"alertMessage\":\"a\\u0000b\"}}\n"
            ),
        ),
    ];
    for (format, data) in inputs {
        let items = parse_with(data.as_bytes(), format, None, limits);
        let reasons: Vec<_> = items.iter().map(invalid_at).collect();
        assert_eq!(
            reasons,
            [
                (1, "userId is 13 bytes, longer than the limit of 12 bytes"),
                (
                    2,
                    "alertMessage is 25 bytes, longer than the limit of 24 bytes"
                ),
                (3, "userId contains a control character (U+007F)"),
                (4, "userId contains a control character (U+0085)"),
                (5, "alertMessage contains a NUL character"),
            ],
            "{format:?}"
        );
    }
}

#[test]
fn the_default_message_is_validated_too() {
    let items = parse_with(b"u1\n", Format::Csv, Some(&"m".repeat(25)), small_limits());
    assert_eq!(
        invalid_at(&items[0]),
        (
            1,
            "alertMessage is 25 bytes, longer than the limit of 24 bytes"
        )
    );
}

#[test]
fn limits_at_exactly_the_maximum_are_accepted() {
    let limits = Limits {
        max_record_bytes: 37,
        ..small_limits()
    };
    let id = "i".repeat(12);
    let message = "m".repeat(24);
    let items = parse_with(
        format!("{id},{message}\n").as_bytes(),
        Format::Csv,
        None,
        limits,
    );
    assert_eq!(items, [rec(1, &id, &message)]);
}

#[test]
fn debug_output_is_short() {
    let reader = RecordReader::new(
        &[0u8; 100_000][..],
        Format::Csv,
        None,
        Limits::default(),
        Position::START,
    );
    let text = format!("{reader:?}");
    assert!(text.contains("RecordReader") && text.len() < 1000, "{text}");
}
