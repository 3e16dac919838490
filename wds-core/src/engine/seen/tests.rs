use std::collections::HashMap;
use std::io::{Cursor, Write};

use super::sorter::{Sorted, Sorter};
use super::*;

fn sorted_of(records: &[KeyLine], budget: usize) -> Sorted<KeyLine> {
    let dir = std::env::temp_dir();
    let mut sorter = Sorter::new(budget, &dir);
    for r in records {
        sorter.push(*r).unwrap();
    }
    sorter.finish().unwrap()
}

fn random_records(n: usize, distinct_keys: u64, rng: &mut fastrand::Rng) -> Vec<KeyLine> {
    (0..n)
        .map(|i| KeyLine {
            key: u128::from(rng.u64(0..distinct_keys)) << 70 | u128::from(rng.u64(..)),
            line: i as u64 + 1,
        })
        .collect()
}

#[test]
fn sorter_returns_every_record_in_order_in_memory_and_across_runs() {
    let mut rng = fastrand::Rng::with_seed(7);
    let records = random_records(10_000, 50, &mut rng);
    let mut expected = records.clone();
    expected.sort_unstable();
    for budget in [7, 999, 4_096, 10_000, 20_000] {
        let sorted = sorted_of(&records, budget);
        let got: Vec<KeyLine> = sorted.iter().unwrap().map(Result::unwrap).collect();
        assert_eq!(got, expected, "budget {budget}");
        let runs = sorted.runs();
        assert_eq!(
            runs > 0,
            budget <= records.len(),
            "budget {budget}: {runs} runs"
        );
        assert!(runs < 32, "runs are merged past a bound: {runs}");
        let owned: Vec<KeyLine> = sorted.into_iter().unwrap().map(Result::unwrap).collect();
        assert_eq!(owned, expected, "budget {budget}, consumed");
    }
}

#[test]
fn lower_bounds_find_the_first_record_not_before_a_probe_in_every_run() {
    let mut rng = fastrand::Rng::with_seed(11);
    // Runs longer than the index step, so lookups cross block edges.
    let records = random_records(9_000, 9_000, &mut rng);
    for budget in [2_500, 9_000] {
        let sorted = sorted_of(&records, budget);
        let mut probes: Vec<u128> = records.iter().map(|r| r.key).step_by(7).collect();
        probes.extend((0..500).map(|_| rng.u128(..)));
        probes.extend([0, u128::MAX]);
        for probe in probes {
            let found = sorted.lower_bounds(|r| r.key < probe).unwrap();
            let best = found.iter().filter(|r| r.key >= probe).min();
            let expected = records.iter().filter(|r| r.key >= probe).min();
            assert_eq!(best, expected, "budget {budget}, probe {probe}");
        }
    }
}

/// What the filter must answer, computed the obvious way.
fn naive(lines: &[(String, String)]) -> Vec<Option<u64>> {
    let mut first = HashMap::new();
    lines
        .iter()
        .enumerate()
        .map(|(i, pair)| {
            let line = i as u64 + 1;
            match first.get(pair) {
                Some(f) => Some(*f),
                None => {
                    first.insert(pair.clone(), line);
                    None
                }
            }
        })
        .collect()
}

fn csv(lines: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (user, message) in lines {
        writeln!(out, "{user},{message}").unwrap();
    }
    out
}

fn prepared(bytes: &[u8], format: Format, memory_pairs: usize) -> (Seen, FirstPass) {
    Seen::prepare(
        &mut Cursor::new(bytes.to_vec()),
        format,
        None,
        Limits::default(),
        memory_pairs,
        &std::env::temp_dir(),
        &CancellationToken::new(),
    )
    .unwrap()
    .expect("not cancelled")
}

fn random_pairs(n: usize, users: u64, rng: &mut fastrand::Rng) -> Vec<(String, String)> {
    (0..n)
        .map(|_| {
            (
                format!("user-{}", rng.u64(0..users)),
                format!("msg-{}", rng.u8(0..3)),
            )
        })
        .collect()
}

#[test]
fn duplicates_are_found_in_memory_and_when_spilled() {
    let mut rng = fastrand::Rng::with_seed(3);
    let lines = random_pairs(5_000, 1_500, &mut rng);
    let expected = naive(&lines);
    for memory_pairs in [7, 1_000, 1 << 20] {
        let (mut seen, pass) = prepared(&csv(&lines), Format::Csv, memory_pairs);
        let got: Vec<Option<u64>> = lines
            .iter()
            .enumerate()
            .map(|(i, (u, m))| seen.check(&Line::new(i as u64 + 1, u, m)).unwrap())
            .collect();
        assert_eq!(got, expected, "memory_pairs {memory_pairs}");
        assert_eq!(
            pass.duplicates,
            expected.iter().filter(|d| d.is_some()).count() as u64
        );
        assert_eq!(pass.runs > 0, memory_pairs <= lines.len());
    }
}

#[test]
fn a_resumed_read_asks_from_a_later_line_and_gets_the_same_answers() {
    let mut rng = fastrand::Rng::with_seed(5);
    let lines = random_pairs(3_000, 800, &mut rng);
    let expected = naive(&lines);
    let (mut seen, _) = prepared(&csv(&lines), Format::Csv, 100);
    for (i, (u, m)) in lines.iter().enumerate().skip(1_234) {
        let line = i as u64 + 1;
        assert_eq!(
            seen.check(&Line::new(line, u, m)).unwrap(),
            expected[i],
            "line {line}"
        );
    }
}

#[test]
fn lines_appended_after_the_first_pass_are_checked_against_everything_before() {
    let mut rng = fastrand::Rng::with_seed(9);
    let lines = random_pairs(4_000, 1_000, &mut rng);
    let expected = naive(&lines);
    // The first pass sees only the first 2,500 lines: the rest is appended
    // while the job is read.
    for memory_pairs in [50, 1 << 20] {
        let (mut seen, _) = prepared(&csv(&lines[..2_500]), Format::Csv, memory_pairs);
        for (i, (u, m)) in lines.iter().enumerate() {
            let line = i as u64 + 1;
            assert_eq!(
                seen.check(&Line::new(line, u, m)).unwrap(),
                expected[i],
                "line {line}, memory_pairs {memory_pairs}"
            );
        }
    }
}

#[test]
fn a_last_line_without_its_end_is_left_to_the_second_pass() {
    // When the first pass runs, line 2 is still being written ("b,m" of
    // what becomes "b,mx"); line 3 then repeats the unfinished text.
    let (mut seen, _) = prepared(b"a,m\nb,m", Format::Csv, 10);
    assert_eq!(seen.check(&Line::new(1, "a", "m")).unwrap(), None);
    assert_eq!(seen.check(&Line::new(2, "b", "mx")).unwrap(), None);
    assert_eq!(
        seen.check(&Line::new(3, "b", "m")).unwrap(),
        None,
        "not a repeat of line 2"
    );
    assert_eq!(seen.check(&Line::new(4, "b", "mx")).unwrap(), Some(2));
}

#[test]
fn json_arrays_are_filtered_in_memory() {
    let (mut seen, pass) = prepared(
        br#"[{"userId":"a","alertMessage":"m"},{"userId":"a","alertMessage":"m"}]"#,
        Format::JsonArray,
        1,
    );
    assert_eq!(pass.pairs, 0, "no first pass");
    assert_eq!(seen.check(&Line::new(1, "a", "m")).unwrap(), None);
    assert_eq!(seen.check(&Line::new(2, "a", "m")).unwrap(), Some(1));
}

#[test]
fn a_cancelled_first_pass_returns_nothing() {
    let mut rng = fastrand::Rng::with_seed(1);
    let lines = random_pairs(70_000, 70_000, &mut rng);
    let cancel = CancellationToken::new();
    cancel.cancel();
    let got = Seen::prepare(
        &mut Cursor::new(csv(&lines)),
        Format::Csv,
        None,
        Limits::default(),
        1 << 20,
        &std::env::temp_dir(),
        &cancel,
    )
    .unwrap();
    assert!(got.is_none());
}

/// The record of `line` with the attributes given as `(name, value)`.
fn with_attributes(line: u64, user: &str, message: &str, attributes: &[(&str, &str)]) -> Line {
    let attributes = crate::Attributes::try_from_pairs(attributes.iter().copied())
        .expect("test attributes keep the limits");
    Line::new(line, user, message).with_attributes(attributes)
}

#[test]
fn lines_differing_only_in_attributes_are_not_duplicates() {
    // Two orders of one user, then a real repeat of the first, then the
    // same pair with no attributes (different too), then its repeat.
    let file = b"userId,alertMessage,orderId\nu1,shipped,A-1\nu1,shipped,A-2\nu1,shipped,A-1\nu1,shipped\nu1,shipped\n";
    let expected = [None, None, Some(2), None, Some(5)];
    for memory_pairs in [1, 1 << 20] {
        let (mut seen, pass) = prepared(file, Format::Csv, memory_pairs);
        assert_eq!(pass.duplicates, 2, "memory_pairs {memory_pairs}");
        let records = [
            with_attributes(2, "u1", "shipped", &[("orderId", "A-1")]),
            with_attributes(3, "u1", "shipped", &[("orderId", "A-2")]),
            with_attributes(4, "u1", "shipped", &[("orderId", "A-1")]),
            with_attributes(5, "u1", "shipped", &[("orderId", "")]),
            with_attributes(6, "u1", "shipped", &[("orderId", "")]),
        ];
        let got: Vec<_> = records.iter().map(|r| seen.check(r).unwrap()).collect();
        assert_eq!(got, expected, "memory_pairs {memory_pairs}");
    }
    // Appended lines (after the first pass) are keyed the same way, and a
    // string is not the JSON value with the same text.
    let (mut seen, _) = prepared(b"", Format::JsonLines, 10);
    let number = |line: u64, n: i64| {
        Line::new(line, "u", "m").with_attributes(
            crate::Attributes::try_from_pairs([("n", serde_json::json!(n))]).unwrap(),
        )
    };
    assert_eq!(seen.check(&number(1, 1)).unwrap(), None);
    assert_eq!(
        seen.check(&with_attributes(2, "u", "m", &[("n", "1")]))
            .unwrap(),
        None
    );
    assert_eq!(seen.check(&number(3, 2)).unwrap(), None);
    assert_eq!(seen.check(&number(4, 1)).unwrap(), Some(1));
    assert_eq!(seen.check(&Line::new(5, "u", "m")).unwrap(), None);
    assert_eq!(seen.check(&Line::new(6, "u", "m")).unwrap(), Some(5));
}
