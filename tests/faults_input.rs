//! Scenarios 5, 6 and 7 of the fault tests, about what arrives in the inbox:
//! two initiators on one folder and the same file dropped twice make one
//! job; files written slowly, or copied under a `.part` name and renamed,
//! are never read before they are complete; hostile inputs are reported
//! line by line while the good lines are delivered and nothing crashes.
//!
//! `WDS_FAULT_SCALE=n` multiplies the large file (20,000 lines, 10% bad;
//! `WDS_FAULT_SCALE=5` is the 100,000).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::Duration;

use serde_json::Value;
use wds_harness::cluster::{count, scale, Cluster};
use wds_harness::http::http_get;
use wds_harness::receiver::TestReceiver;
use wds_harness::users_csv;

fn by_name(jobs: &[Value]) -> HashMap<String, Value> {
    jobs.iter()
        .map(|j| {
            (
                j["meta"]["name"].as_str().unwrap_or("").to_string(),
                j.clone(),
            )
        })
        .collect()
}

#[test]
fn two_initiators_and_a_file_dropped_twice_make_one_job() {
    let lines = 2_000;
    let receiver = TestReceiver::start();
    let url = receiver.url();
    let mut cluster = Cluster::new(&[("WDS_WEBHOOK_URL", &url)]);
    let first = cluster.start("initiator", &[]);
    let first_api = cluster.api.clone();
    let second = cluster.start("initiator", &[]);
    let second_api = std::mem::replace(&mut cluster.api, first_api);
    cluster.start("worker", &[]);
    let body = users_csv(lines);
    cluster.drop_file("users.csv", &body);
    let jobs = cluster.wait_done(1, Duration::from_secs(180));
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    // The same content again, under another name and under the same name.
    // Each copy is handled (recognised and archived by one of the two
    // initiators) once it has left the inbox.
    let inbox = cluster.inbox();
    for name in ["users-again.csv", "users.csv"] {
        cluster.drop_file(name, &body);
        cluster.eventually("the copy to be handled", Duration::from_secs(60), || {
            (!inbox.join(name).exists()).then_some(())
        });
    }

    let jobs = cluster.wait_done(1, Duration::from_secs(60));
    let seen_by_second = Cluster::jobs_at(&second_api).unwrap_or_default();
    assert_eq!(jobs.len(), 1, "one job for one content: {jobs:?}");
    assert_eq!(seen_by_second.len(), 1, "{seen_by_second:?}");
    assert_eq!(count(&jobs[0], "lines"), lines as u64);
    assert_eq!(count(&jobs[0], "enqueued"), lines as u64);
    assert_eq!(count(&jobs[0], "delivered"), lines as u64);
    let per_id = receiver.per_id();
    assert_eq!(per_id.len(), lines, "every line sent");
    assert!(per_id.values().all(|n| *n == 1), "a line sent twice");
    assert!(cluster.running(first) && cluster.running(second));
    eprintln!(
        "FIGURES one job: 2 initiators, 3 drops of one content -> {} job, {} requests for {lines} lines",
        jobs.len(),
        receiver.count()
    );
}

#[test]
fn slowly_written_and_renamed_files_are_never_read_early() {
    let receiver = TestReceiver::start();
    let url = receiver.url();
    // A settle time well above the writer's pauses: a file kept open and
    // growing is not complete until it stops changing (or is closed).
    let mut cluster = Cluster::new(&[("WDS_WEBHOOK_URL", &url), ("WDS_SETTLE_MS", "1500")]);
    cluster.start("initiator", &[]);
    cluster.start("worker", &[]);
    let inbox = cluster.inbox();

    // 1. Written in place over ~4 s, 50 lines every 250 ms, kept open.
    let chunks = 16;
    let mut slow = std::fs::File::create(inbox.join("slow.csv")).unwrap();
    let mut n = 0;
    for _ in 0..chunks {
        for _ in 0..50 {
            n += 1;
            writeln!(slow, "slow-{n},written slowly").unwrap();
        }
        slow.flush().unwrap();
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(slow);

    // 2. Copied in as `.part`, opened and closed for every chunk (each
    // close would hand over a normal file early), then renamed into place.
    let part = inbox.join("copied.csv.part");
    let mut m = 0;
    for _ in 0..chunks {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)
            .unwrap();
        for _ in 0..50 {
            m += 1;
            writeln!(f, "copied-{m},copied in parts").unwrap();
        }
        drop(f);
        std::thread::sleep(Duration::from_millis(250));
    }
    std::fs::rename(&part, inbox.join("copied.csv")).unwrap();

    let jobs = by_name(&cluster.wait_done(2, Duration::from_secs(180)));
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    for (name, total) in [("slow.csv", n), ("copied.csv", m)] {
        let job = &jobs[name];
        assert_eq!(
            count(job, "lines"),
            total,
            "{name} read before it was complete: {job}"
        );
        assert_eq!(count(job, "delivered"), total, "{job}");
    }
    let users: HashSet<String> = receiver.hits().into_iter().map(|h| h.user).collect();
    assert_eq!(users.len() as u64, n + m);
    eprintln!("FIGURES slow files: {n} lines written over ~4 s and {m} copied as .part, each one job, every line once");
}

/// A file body and what should come of it: (lines, delivered, invalid lines).
struct Case {
    name: &'static str,
    body: Vec<u8>,
    lines: u64,
    delivered: u64,
    /// The invalid lines, each with a part of the reason it must be
    /// reported with.
    invalid: Vec<(u64, &'static str)>,
}

fn cases(big: u64) -> Vec<Case> {
    let mut long = b"long-1,short\nlong-2,".to_vec();
    long.extend(std::iter::repeat_n(b'x', 1 << 20));
    long.extend_from_slice(b"\nlong-3,after the long line\n");
    let mut garbage = Vec::with_capacity(8192);
    let mut x: u32 = 12345;
    for _ in 0..8192 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        garbage.push((x >> 16) as u8);
    }
    let mut tenth = String::new();
    for i in 1..=big {
        if i % 10 == 0 {
            tenth.push_str(&format!(",no user on line {i}\n"));
        } else {
            tenth.push_str(&format!("big-{i},fine\n"));
        }
    }
    vec![
        Case {
            name: "empty.csv",
            body: Vec::new(),
            lines: 0,
            delivered: 0,
            invalid: vec![],
        },
        Case {
            name: "header.csv",
            body: b"userId,alertMessage\n".to_vec(),
            lines: 0,
            delivered: 0,
            invalid: vec![],
        },
        Case {
            name: "crlf.csv",
            body: b"userId,alertMessage\r\ncrlf-1,hello\r\ncrlf-2,world\r\n".to_vec(),
            lines: 2,
            delivered: 2,
            invalid: vec![],
        },
        Case {
            name: "bom.csv",
            body: "\u{feff}userId,alertMessage\nbom-1,hi\n"
                .as_bytes()
                .to_vec(),
            lines: 1,
            delivered: 1,
            invalid: vec![],
        },
        Case {
            name: "quoted.csv",
            body: b"q-1,\"hello, world\"\nq-2,\"line one\nline two\"\nq-3,plain\n".to_vec(),
            lines: 3,
            delivered: 3,
            invalid: vec![],
        },
        Case {
            name: "long.csv",
            body: long,
            lines: 3,
            delivered: 2,
            invalid: vec![(2, "record longer than")],
        },
        Case {
            name: "utf8.csv",
            body: b"utf-1,ok\nutf-2,\xff\xfe broken\nutf-3,ok\n".to_vec(),
            lines: 3,
            delivered: 2,
            invalid: vec![(2, "record is not valid UTF-8")],
        },
        Case {
            name: "types.jsonl",
            body: concat!(
                "{\"userId\":\"json-1\",\"alertMessage\":\"ok\"}\n",
                "{\"userId\":true,\"alertMessage\":\"bool id\"}\n",
                "{\"userId\":\"json-3\",\"alertMessage\":[1]}\n",
                "[1,2]\n",
                "{\"userId\":\"json-5\",\"alertMessage\":\"ok\"}\n"
            )
            .as_bytes()
            .to_vec(),
            lines: 5,
            delivered: 2,
            invalid: vec![
                (2, "invalid type: boolean `true`"),
                (3, "invalid type: sequence, expected a string"),
                (4, "expected a JSON object"),
            ],
        },
        Case {
            name: "garbage.csv",
            body: garbage,
            lines: u64::MAX,
            delivered: u64::MAX,
            invalid: vec![],
        },
        Case {
            name: "tenth-bad.csv",
            body: tenth.into_bytes(),
            lines: big,
            delivered: big - big / 10,
            invalid: (1..=big)
                .filter(|i| i % 10 == 0)
                .map(|i| (i, "userId is empty"))
                .collect(),
        },
    ]
}

#[test]
fn hostile_inputs_are_reported_by_line_and_nothing_crashes() {
    let big = 20_000 * scale();
    let receiver = TestReceiver::start();
    let url = receiver.url();
    let mut cluster = Cluster::new(&[("WDS_WEBHOOK_URL", &url)]);
    let initiator = cluster.start("initiator", &[]);
    let workers: Vec<usize> = (0..3).map(|_| cluster.start("worker", &[])).collect();
    let cases = cases(big);
    for case in &cases {
        cluster.drop_file(case.name, &case.body);
    }
    let jobs = by_name(&cluster.wait_done(cases.len(), Duration::from_secs(300)));
    let mut figures = Vec::new();
    for case in &cases {
        let job = jobs
            .get(case.name)
            .unwrap_or_else(|| panic!("no job for {}: {jobs:?}", case.name));
        let (lines, delivered, invalid) = (
            count(job, "lines"),
            count(job, "delivered"),
            count(job, "invalid"),
        );
        assert_eq!(
            delivered + count(job, "dead") + invalid + count(job, "duplicate"),
            lines,
            "{}: {job}",
            case.name
        );
        if case.lines != u64::MAX {
            assert_eq!(lines, case.lines, "{}: {job}", case.name);
            assert_eq!(delivered, case.delivered, "{}: {job}", case.name);
            assert_eq!(invalid, case.invalid.len() as u64, "{}: {job}", case.name);
        }
        // Each bad line reported with its line number and the reason (the
        // first 100 shown).
        let id = job["job"].as_str().unwrap();
        let (status, body) =
            http_get(&cluster.api, &format!("/jobs/{id}")).expect("GET /jobs/{id}");
        assert_eq!(status, 200, "{body}");
        let detail: Value = serde_json::from_str(&body).unwrap();
        let reported: Vec<(u64, String)> = detail["rejects"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kind"]["kind"] == "invalid")
            .map(|r| {
                let line = r["line"].as_u64().expect("a reject's line");
                let reason = r["kind"]["reason"]
                    .as_str()
                    .expect("an invalid line's reason");
                (line, reason.to_string())
            })
            .collect();
        if case.lines != u64::MAX {
            let lines_reported: Vec<u64> = reported.iter().map(|(l, _)| *l).collect();
            let expected: Vec<u64> = case
                .invalid
                .iter()
                .map(|(l, _)| *l)
                .take(reported.len())
                .collect();
            assert_eq!(lines_reported, expected, "{}: {body:.2000}", case.name);
            for ((line, reason), (_, part)) in reported.iter().zip(&case.invalid) {
                assert!(
                    reason.contains(part),
                    "{} line {line}: reason {reason:?} does not say {part:?}",
                    case.name
                );
            }
            assert_eq!(
                reported.len(),
                case.invalid.len().min(100),
                "{}: {body:.2000}",
                case.name
            );
        }
        figures.push(format!("{} {lines}/{delivered}/{invalid}", case.name));
    }
    // The good lines arrived intact.
    let users: HashMap<String, u32> =
        receiver
            .hits()
            .into_iter()
            .fold(HashMap::new(), |mut m, h| {
                *m.entry(h.user).or_default() += 1;
                m
            });
    for user in [
        "crlf-1", "crlf-2", "bom-1", "q-1", "q-2", "q-3", "long-1", "long-3", "json-1", "json-5",
    ] {
        assert_eq!(users.get(user), Some(&1), "{user}");
    }
    cluster.assert_running(workers.into_iter().chain([initiator]));
    eprintln!(
        "FIGURES hostile input (name lines/delivered/invalid): {}",
        figures.join(", ")
    );
}
