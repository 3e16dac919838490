//! JSON Lines (one object per line), and the JSON object both JSON formats
//! are made of.

use std::fmt;
use std::io::{self, Read};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::buffer::Buffer;
use super::{invalid, MessageField, Parsed, Rules};
use crate::attributes::Attributes;

const NO_MESSAGE: &str = "alertMessage is missing and the job has no default message";
const EMPTY_MESSAGE: &str = "alertMessage is empty and the job has no default message";

/// The JSON Lines parser's state between records (there is none beyond the
/// shared buffer, but the reader keeps one per format).
#[derive(Debug)]
pub(super) struct JsonLinesParser;

impl JsonLinesParser {
    pub(super) fn new() -> Self {
        JsonLinesParser
    }

    /// The next record or invalid line; `None` at the end of the input.
    pub(super) fn next<R: Read>(
        &mut self,
        input: &mut Buffer<R>,
        rules: &Rules,
    ) -> io::Result<Option<Parsed>> {
        let max = rules.limits().max_record_bytes;
        loop {
            let line = input.position().line;
            // Find the end of the line, reading until it is buffered. A line
            // may carry a "\r" before its "\n", hence the extra byte.
            let mut scanned = 0;
            let newline = loop {
                let available = input.available();
                if let Some(i) = available[scanned..].iter().position(|&b| b == b'\n') {
                    break Some(scanned + i);
                }
                scanned = available.len();
                if scanned > max.saturating_add(1) {
                    skip_line(input)?;
                    return Ok(Some(rules.too_long(line)));
                }
                if input.is_full() || !input.fill()? {
                    break None;
                }
            };
            let available = input.available();
            if newline.is_none() && available.is_empty() {
                return Ok(None);
            }
            let end = newline.unwrap_or(available.len());
            let mut text = &available[..end];
            if let [rest @ .., b'\r'] = text {
                text = rest;
            }
            let item = if text.len() > max {
                Some(rules.too_long(line))
            } else if text.iter().all(u8::is_ascii_whitespace) {
                None
            } else {
                Some(record(line, text, rules))
            };
            input.consume(end + usize::from(newline.is_some()));
            if item.is_some() {
                return Ok(item);
            }
        }
    }
}

/// Consumes the rest of an overlong line, its "\n" included, without
/// buffering it.
fn skip_line<R: Read>(input: &mut Buffer<R>) -> io::Result<()> {
    loop {
        let available = input.available();
        if let Some(i) = available.iter().position(|&b| b == b'\n') {
            input.consume(i + 1);
            return Ok(());
        }
        input.consume(available.len());
        if !input.fill()? {
            return Ok(());
        }
    }
}

/// Parses one JSON object (a JSON Lines line or a JSON array element) into
/// an item.
pub(super) fn record(line: u64, text: &[u8], rules: &Rules) -> Parsed {
    match serde_json::from_slice::<JsonRecord>(text) {
        Ok(JsonRecord {
            user_id,
            alert_message,
            others,
        }) => {
            let message = match alert_message {
                Some(text) => MessageField::non_empty(text, EMPTY_MESSAGE),
                None => MessageField::Missing(NO_MESSAGE),
            };
            let attributes = match Attributes::try_from_pairs(others) {
                Ok(attributes) => attributes,
                Err(problem) => return invalid(line, problem.to_string()),
            };
            rules.record(line, user_id.into(), message, attributes)
        }
        // serde_json's words for bad UTF-8 ("invalid unicode code point")
        // do not say what to fix; checked only on this rare path.
        Err(_) if std::str::from_utf8(text).is_err() => invalid(line, "record is not valid UTF-8"),
        Err(e) => invalid(line, e.to_string()),
    }
}

/// `{"userId": …, "alertMessage": …, …}`; the other keys, in order, become
/// the record's attributes.
///
/// Hand-written rather than derived: a derived struct would also accept a
/// JSON array (`["u1", "hi"]`), and `userId` may be a number.
#[derive(Debug)]
struct JsonRecord {
    user_id: String,
    /// `None` when absent or `null`.
    alert_message: Option<String>,
    /// The other keys and their values, in order (checked against the
    /// attribute limits once the object is read, so that the reason is
    /// the limit's and not a parse error's).
    others: Vec<(String, serde_json::Value)>,
}

impl<'de> Deserialize<'de> for JsonRecord {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(JsonRecordVisitor)
    }
}

struct JsonRecordVisitor;

impl<'de> Visitor<'de> for JsonRecordVisitor {
    type Value = JsonRecord;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with a userId")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonRecord, A::Error> {
        let mut user_id = None;
        let mut alert_message = None;
        let mut others = Vec::new();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::UserId => {
                    if user_id.is_some() {
                        return Err(de::Error::duplicate_field("userId"));
                    }
                    user_id = Some(map.next_value::<UserId>()?.0);
                }
                Key::AlertMessage => {
                    if alert_message.is_some() {
                        return Err(de::Error::duplicate_field("alertMessage"));
                    }
                    alert_message = Some(map.next_value::<Option<String>>()?);
                }
                Key::Other(name) => {
                    others.push((name, map.next_value::<serde_json::Value>()?));
                }
            }
        }
        Ok(JsonRecord {
            user_id: user_id.ok_or_else(|| de::Error::missing_field("userId"))?,
            alert_message: alert_message.flatten(),
            others,
        })
    }
}

/// The keys of a record object.
enum Key {
    UserId,
    AlertMessage,
    Other(String),
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "userId" => Key::UserId,
                    "alertMessage" => Key::AlertMessage,
                    other => Key::Other(other.to_owned()),
                })
            }
            fn visit_string<E: de::Error>(self, key: String) -> Result<Key, E> {
                Ok(match key.as_str() {
                    "userId" => Key::UserId,
                    "alertMessage" => Key::AlertMessage,
                    _ => Key::Other(key),
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// A user id: a string, or an integer taken as its decimal text (exports
/// often write numeric ids as numbers). Fractions and integers beyond 64
/// bits are rejected: their text would not be the id the file meant.
struct UserId(String);

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UserIdVisitor;
        impl Visitor<'_> for UserIdVisitor {
            type Value = UserId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<UserId, E> {
                Ok(UserId(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<UserId, E> {
                Ok(UserId(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<UserId, E> {
                Ok(UserId(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<UserId, E> {
                Ok(UserId(v.to_string()))
            }
        }
        deserializer.deserialize_any(UserIdVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check_resume, invalid_at, parse, parse_with, rec, rec_with};
    use super::super::Limits;
    use super::Parsed;
    use crate::model::Format;
    use serde_json::json;

    fn lines(data: &str, default: Option<&str>) -> Vec<Parsed> {
        check_resume(
            data.as_bytes(),
            Format::JsonLines,
            default,
            Limits::default(),
        )
    }

    #[test]
    fn objects_one_per_line() {
        let data = "{\"userId\":\"u1\",\"alertMessage\":\"Hello\"}\n\
                    {\"alertMessage\":\"Hi, \\\"you\\\"\\n\",\"userId\":\"u2\"}\n\
                    {\"userId\":\"u3\"}\n";
        assert_eq!(
            lines(data, Some("D")),
            [
                rec(1, "u1", "Hello"),
                rec(2, "u2", "Hi, \"you\"\n"),
                rec(3, "u3", "D"),
            ]
        );
    }

    #[test]
    fn a_numeric_user_id_becomes_its_decimal_text() {
        assert_eq!(
            lines(
                "{\"userId\":123456}\n{\"userId\":-7}\n{\"userId\":18446744073709551615}\n",
                Some("m")
            ),
            [
                rec(1, "123456", "m"),
                rec(2, "-7", "m"),
                rec(3, "18446744073709551615", "m"),
            ]
        );
        // Its text would not be the id the file meant.
        for number in ["1.5", "1e3", "123456789012345678901234567890"] {
            let data = format!("{{\"userId\":{number}}}\n");
            let items = lines(&data, Some("m"));
            assert!(
                invalid_at(&items[0])
                    .1
                    .starts_with("invalid type: floating point"),
                "{number}: {:?}",
                items[0]
            );
        }
    }

    #[test]
    fn a_missing_message_uses_the_default() {
        let data = "{\"userId\":\"u1\"}\n{\"userId\":\"u2\",\"alertMessage\":null}\n{\"userId\":\"u3\",\"alertMessage\":\"\"}\n";
        assert_eq!(
            lines(data, Some("D")),
            [rec(1, "u1", "D"), rec(2, "u2", "D"), rec(3, "u3", "D")]
        );
        let reasons: Vec<_> = lines(data, None)
            .iter()
            .map(|i| invalid_at(i).1.to_string())
            .collect();
        assert_eq!(
            reasons,
            [
                "alertMessage is missing and the job has no default message",
                "alertMessage is missing and the job has no default message",
                "alertMessage is empty and the job has no default message",
            ]
        );
    }

    #[test]
    fn other_keys_become_attributes_in_order_with_their_json_types() {
        let data = "{\"id\":1,\"userId\":\"u1\",\"meta\":{\"userId\":\"nested\",\"list\":[1,\"]\"]},\"alertMessage\":\"hi\",\"vip\":true,\"note\":null}\n\
                    {\"userId\":\"u2\",\"alertMessage\":\"plain\"}\n";
        assert_eq!(
            lines(data, None),
            [
                rec_with(
                    1,
                    "u1",
                    "hi",
                    &[
                        ("id", json!(1)),
                        ("meta", json!({"userId": "nested", "list": [1, "]"]})),
                        ("vip", json!(true)),
                        ("note", json!(null)),
                    ]
                ),
                rec(2, "u2", "plain"),
            ]
        );
        // Attribute order is the line's, not alphabetical.
        let Parsed::Record(r) = &lines(data, None)[0] else {
            panic!("a record")
        };
        let names: Vec<&str> = r.attributes.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["id", "meta", "vip", "note"]);
    }

    #[test]
    fn attributes_over_the_limits_make_the_line_invalid() {
        use crate::attributes::{MAX_ATTRIBUTES, MAX_ATTRIBUTES_BYTES, MAX_ATTRIBUTE_NAME_BYTES};
        let many: String = (0..=MAX_ATTRIBUTES)
            .map(|i| format!(",\"a{i}\":{i}"))
            .collect();
        let big = "x".repeat(MAX_ATTRIBUTES_BYTES);
        let long_name = "n".repeat(MAX_ATTRIBUTE_NAME_BYTES + 1);
        let data = format!(
            "{{\"userId\":\"u1\"{many}}}\n\
             {{\"userId\":\"u2\",\"big\":\"{big}\"}}\n\
             {{\"userId\":\"u3\",\"{long_name}\":1}}\n\
             {{\"userId\":\"u4\",\"\":1}}\n\
             {{\"userId\":\"u5\",\"k\":1,\"k\":2}}\n\
             {{\"userId\":\"u6\",\"k\":\"ok\"}}\n"
        );
        let items = lines(&data, Some("D"));
        assert_eq!(
            invalid_at(&items[0]),
            (1, format!("more than {MAX_ATTRIBUTES} attributes").as_str())
        );
        assert_eq!(
            invalid_at(&items[1]),
            (
                2,
                format!("attributes take more than {MAX_ATTRIBUTES_BYTES} bytes").as_str()
            )
        );
        assert_eq!(invalid_at(&items[2]).0, 3);
        assert!(invalid_at(&items[2])
            .1
            .contains("65 bytes, longer than the limit of 64"));
        assert_eq!(invalid_at(&items[3]), (4, "an attribute name is empty"));
        assert_eq!(invalid_at(&items[4]), (5, "attribute \"k\" is given twice"));
        assert_eq!(items[5], rec_with(6, "u6", "D", &[("k", json!("ok"))]));
    }

    #[test]
    fn wrong_types_and_shapes_are_invalid_with_serde_json_s_reason() {
        let data = [
            "{\"userId\":true}",
            "{\"userId\":null}",
            "{\"userId\":[\"u1\"]}",
            "{\"userId\":\"u1\",\"alertMessage\":5}",
            "{\"alertMessage\":\"no user\"}",
            "[\"u1\",\"hi\"]",
            "\"u1\"",
            "42",
            "{\"userId\":\"u1\"",
            "{\"userId\":\"u1\"} {}",
            "{\"userId\":\"u1\",\"userId\":\"u2\"}",
            "not json at all",
            "u1,hello",
        ]
        .join("\n");
        let reasons: Vec<_> = lines(&data, Some("D"))
            .iter()
            .map(|i| invalid_at(i).1.to_string())
            .collect();
        let expected_starts = [
            "invalid type: boolean `true`, expected a string or an integer",
            "invalid type: null, expected a string or an integer",
            "invalid type: sequence, expected a string or an integer",
            "invalid type: integer `5`, expected a string",
            "missing field `userId`",
            "invalid type: sequence, expected a JSON object with a userId",
            "invalid type: string \"u1\", expected a JSON object with a userId",
            "invalid type: integer `42`, expected a JSON object with a userId",
            "EOF while parsing an object",
            "trailing characters",
            "duplicate field `userId`",
            "expected ident",
            "expected value",
        ];
        assert_eq!(reasons.len(), expected_starts.len());
        for (reason, start) in reasons.iter().zip(expected_starts) {
            assert!(
                reason.starts_with(start),
                "{reason:?} should start with {start:?}"
            );
        }
    }

    #[test]
    fn invalid_lines_keep_their_line_numbers() {
        let items = lines(
            "{\"userId\":\"u1\"}\n\nnope\n{\"userId\":\"u2\"}\n",
            Some("D"),
        );
        assert_eq!(items[0], rec(1, "u1", "D"));
        assert_eq!(invalid_at(&items[1]).0, 3);
        assert_eq!(items[2], rec(4, "u2", "D"));
    }

    #[test]
    fn crlf_bom_and_blank_lines() {
        let data = "\u{feff}{\"userId\":\"u1\"}\r\n\r\n  \t \r\n{\"userId\":\"u2\"}\r\n";
        assert_eq!(
            lines(data, Some("D")),
            [rec(1, "u1", "D"), rec(4, "u2", "D")]
        );
        assert_eq!(lines("\n\r\n \n", None), []);
    }

    #[test]
    fn the_last_line_needs_no_newline() {
        assert_eq!(
            lines("{\"userId\":\"u1\"}\n{\"userId\":\"u2\"}", Some("D")).len(),
            2
        );
    }

    #[test]
    fn invalid_utf8_is_invalid() {
        let items = check_resume(
            b"{\"userId\":\"caf\xe9\"}\n{\"userId\":\"u2\"}\n",
            Format::JsonLines,
            Some("D"),
            Limits::default(),
        );
        assert_eq!(invalid_at(&items[0]), (1, "record is not valid UTF-8"));
        assert_eq!(items[1], rec(2, "u2", "D"));
    }

    #[test]
    fn a_too_long_line_is_skipped_and_the_next_one_read() {
        let limits = Limits {
            max_record_bytes: 30,
            ..Limits::default()
        };
        let long = "x".repeat(200_000);
        let data = format!(
            "{{\"userId\":\"u1\",\"alertMessage\":\"{long}\"}}\n{{\"userId\":\"u2\"}}\n{{\"userId\":\"{long}\n{{\"userId\":\"u3\"}}\n{long}"
        );
        let items = check_resume(data.as_bytes(), Format::JsonLines, Some("D"), limits);
        let reason = "record longer than 30 bytes";
        assert_eq!(invalid_at(&items[0]), (1, reason));
        assert_eq!(items[1], rec(2, "u2", "D"));
        assert_eq!(invalid_at(&items[2]), (3, reason));
        assert_eq!(items[3], rec(4, "u3", "D"));
        assert_eq!(invalid_at(&items[4]), (5, reason));
        assert_eq!(items.len(), 5);
    }

    #[test]
    fn the_line_limit_is_exact_and_ignores_the_line_terminator() {
        let limits = Limits {
            max_record_bytes: 15,
            ..Limits::default()
        };
        for data in [
            "{\"userId\":\"u1\"}\n",
            "{\"userId\":\"u1\"}\r\n",
            "{\"userId\":\"u1\"}",
        ] {
            assert_eq!(
                parse_with(data.as_bytes(), Format::JsonLines, Some("D"), limits),
                [rec(1, "u1", "D")]
            );
        }
        let items = parse_with(
            b"{\"userId\":\"u12\"}\n",
            Format::JsonLines,
            Some("D"),
            limits,
        );
        assert_eq!(invalid_at(&items[0]), (1, "record longer than 15 bytes"));
    }

    #[test]
    fn escaped_control_characters_in_a_user_id_are_invalid() {
        let items = parse(b"{\"userId\":\"u\\t1\"}\n", Format::JsonLines, Some("D"));
        assert_eq!(
            invalid_at(&items[0]),
            (1, "userId contains a control character (U+0009)")
        );
    }
}
