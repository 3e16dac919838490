//! Parsing throughput: generates 1,000,000 lines of CSV, JSON Lines and a
//! JSON array in memory and prints how many lines per second
//! [`RecordReader`] reads from each.
//!
//! Run it in release mode:
//!
//! ```text
//! cargo run --release -p wds-core --example parse_bench
//! ```

use std::io::Write;
use std::time::{Duration, Instant};

use wds_core::parse::{Limits, Parsed, Position, RecordReader};
use wds_core::Format;

const LINES: usize = 1_000_000;
/// Each format is parsed this many times and the fastest run is reported,
/// so that a noisy neighbour on a shared machine skews the figure less.
const RUNS: usize = 3;

fn main() -> std::io::Result<()> {
    let inputs = [
        ("CSV", Format::Csv, csv()?),
        ("JSON Lines", Format::JsonLines, json_lines()?),
        ("JSON array", Format::JsonArray, json_array()?),
    ];
    for (name, format, data) in &inputs {
        let mut best = Duration::MAX;
        for _ in 0..RUNS {
            best = best.min(parse(data, *format)?);
        }
        let seconds = best.as_secs_f64();
        println!(
            "{name:<10}  {LINES} lines, {:>5.1} MB in {:>6.1} ms: {:>10.0} lines/s, {:>6.1} MB/s",
            data.len() as f64 / 1e6,
            seconds * 1e3,
            LINES as f64 / seconds,
            data.len() as f64 / 1e6 / seconds,
        );
    }
    Ok(())
}

/// Parses `data` and checks that every line became a record.
fn parse(data: &[u8], format: Format) -> std::io::Result<Duration> {
    let start = Instant::now();
    let mut reader = RecordReader::new(data, format, None, Limits::default(), Position::START);
    let mut records = 0;
    let mut bytes = 0;
    while let Some(item) = reader.next_record()? {
        match item {
            Parsed::Record(r) => {
                records += 1;
                // Use the strings, so the work cannot be optimised away.
                bytes += r.user_id.len() + r.alert_message.len();
            }
            Parsed::Invalid(i) => panic!("line {} is invalid: {}", i.line, i.reason),
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(records, LINES);
    assert!(bytes > 0);
    Ok(elapsed)
}

fn csv() -> std::io::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(LINES * 48);
    for i in 0..LINES {
        let id = 100_000 + i;
        writeln!(data, "user-{id},Your order #{id} has shipped")?;
    }
    Ok(data)
}

fn json_lines() -> std::io::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(LINES * 72);
    for i in 0..LINES {
        let id = 100_000 + i;
        writeln!(
            data,
            r#"{{"userId":"user-{id}","alertMessage":"Your order #{id} has shipped"}}"#
        )?;
    }
    Ok(data)
}

fn json_array() -> std::io::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(LINES * 76);
    data.extend_from_slice(b"[\n");
    for i in 0..LINES {
        let id = 100_000 + i;
        let separator = if i + 1 < LINES { "," } else { "" };
        writeln!(
            data,
            r#"  {{"userId":"user-{id}","alertMessage":"Your order #{id} has shipped"}}{separator}"#
        )?;
    }
    data.extend_from_slice(b"]\n");
    Ok(data)
}
