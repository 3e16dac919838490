//! Property tests of the parsers (proptest, a bounded number of cases so
//! CI time stays fixed): any bytes in any format parse without a panic and
//! resume exactly at every position; records written by a CSV or JSON
//! writer come back as written, at the lines they were written on.

use proptest::prelude::*;

use super::tests::{check_resume, parse, rec};
use super::*;

/// Bytes that matter to some parser, and anything else.
fn tricky_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => prop::sample::select(b"\n\r,\"{}[]: \\\t".to_vec()),
        2 => b'a'..=b'z',
        1 => any::<u8>(),
    ]
}

/// A field a CSV or JSON writer would write back unchanged (the parser trims
/// whitespace around fields and refuses control characters).
fn field() -> impl Strategy<Value = String> {
    "[!-~\u{e9}\u{4e2d}]([ -~\u{e9}\u{4e2d}]{0,16}[!-~\u{e9}\u{4e2d}])?"
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_parse_and_resume_exactly_in_every_format(
        data in prop::collection::vec(tricky_byte(), 0..200),
        default in prop::option::of(Just("m")),
    ) {
        let limits = Limits {
            max_user_id_bytes: 12,
            max_message_bytes: 24,
            max_record_bytes: 40,
        };
        for format in [Format::Csv, Format::JsonLines, Format::JsonArray] {
            check_resume(&data, format, default, limits);
        }
    }

    #[test]
    fn csv_written_records_come_back_at_their_lines(
        records in prop::collection::vec((field(), field()), 1..30),
        ending in prop::sample::select(vec!["\n", "\r\n", "\r"]),
    ) {
        prop_assume!(!records[0].0.eq_ignore_ascii_case("userId"));
        let mut data = String::new();
        let mut expected = Vec::new();
        for (i, (user, message)) in records.iter().enumerate() {
            // The user id plain (no comma or quote in it), the message quoted.
            let user = user.replace([',', '"'], "_");
            data.push_str(&format!("{user},\"{}\"{ending}", message.replace('"', "\"\"")));
            expected.push(rec(i as u64 + 1, &user, message));
        }
        prop_assert_eq!(parse(data.as_bytes(), Format::Csv, None), expected);
    }

    #[test]
    fn json_lines_written_records_come_back_at_their_lines(
        records in prop::collection::vec((field(), field()), 1..30),
    ) {
        let mut data = String::new();
        let mut expected = Vec::new();
        for (i, (user, message)) in records.iter().enumerate() {
            let line = serde_json::json!({ "userId": user, "alertMessage": message });
            data.push_str(&format!("{line}\n"));
            expected.push(rec(i as u64 + 1, user, message));
        }
        prop_assert_eq!(parse(data.as_bytes(), Format::JsonLines, None), expected);
    }
}
