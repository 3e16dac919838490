//! Attributes end to end (issue 17): a CSV file with a header row and two
//! columns beyond `userId` and `alertMessage`, dropped into the inbox of a
//! deployment on Redis (an initiator and two workers as real processes),
//! reaches the receiver with those columns as fields of the webhook body,
//! in file order, every line once; the file's duplicate and bad lines are
//! counted as usual.

use std::collections::HashMap;
use std::time::Duration;

use wds_harness::checks::assert_sent_once;
use wds_harness::cluster::{count, Cluster};
use wds_harness::receiver::TestReceiver;

/// Lines of orders in the file (besides the header and the special lines).
const ORDERS: u64 = 3_000;

/// The locale column of order `i`: some empty, some beyond ASCII.
fn locale(i: u64) -> &'static str {
    match i % 4 {
        0 => "fr",
        1 => "de",
        2 => "",
        _ => "pt-BR 🇧🇷",
    }
}

/// The orderId column of order `i`: every 100th needs quoting.
fn order_id(i: u64) -> String {
    if i.is_multiple_of(100) {
        format!("A-{i},B")
    } else {
        format!("A-{i}")
    }
}

/// The exact body the receiver must get for a line.
fn body(user: &str, message: &str, order: &str, locale: &str) -> String {
    let s = |v: &str| serde_json::to_string(v).expect("a string serializes");
    format!(
        "{{\"userId\":{},\"alertMessage\":{},\"orderId\":{},\"locale\":{}}}",
        s(user),
        s(message),
        s(order),
        s(locale)
    )
}

#[test]
fn csv_columns_beyond_user_and_message_reach_the_webhook_body_through_redis() {
    let receiver = TestReceiver::start();
    let url = receiver.url();
    let mut cluster = Cluster::new(&[("WDS_WEBHOOK_URL", &url), ("WDS_BATCH_SIZE", "100")]);
    cluster.start("initiator", &[]);
    cluster.start("worker", &[]);
    cluster.start("worker", &[]);

    // The extra columns on both sides of the user's, as a spreadsheet
    // export may order them; the header's case as a person writes it.
    let mut file = String::from("orderId,UserId,alertMessage,locale\n");
    // Line number -> the body expected for it.
    let mut expected: HashMap<u64, String> = HashMap::new();
    for i in 1..=ORDERS {
        let message = format!("Hello {i}, your order has shipped");
        let order = order_id(i);
        file.push_str(&format!(
            "\"{order}\",user-{i},\"{message}\",{}\n",
            locale(i)
        ));
        expected.insert(
            i + 1,
            body(&format!("user-{i}"), &message, &order, locale(i)),
        );
    }
    let mut line = ORDERS + 1;
    // A second order of user-1 with the same message: not a duplicate.
    line += 1;
    file.push_str("A-second,user-1,\"Hello 1, your order has shipped\",fr\n");
    expected.insert(
        line,
        body(
            "user-1",
            "Hello 1, your order has shipped",
            "A-second",
            "fr",
        ),
    );
    // The very same line as order 2: a duplicate, not sent.
    line += 1;
    file.push_str(&format!(
        "\"{}\",user-2,\"Hello 2, your order has shipped\",{}\n",
        order_id(2),
        locale(2)
    ));
    // A field more than the header has: invalid.
    line += 1;
    file.push_str("A-x,user-x,hi,fr,extra\n");
    // A line without its last column: an empty locale.
    line += 1;
    file.push_str("A-short,user-short,Short\n");
    expected.insert(line, body("user-short", "Short", "A-short", ""));
    let lines = line - 1; // the header is not a record

    cluster.drop_file("orders.csv", file.as_bytes());
    let job = cluster.wait_done(1, Duration::from_secs(300)).remove(0);
    let sent = expected.len() as u64;
    assert_eq!(count(&job, "lines"), lines, "{job}");
    assert_eq!(count(&job, "delivered"), sent, "{job}");
    assert_eq!(count(&job, "duplicate"), 1, "{job}");
    assert_eq!(count(&job, "invalid"), 1, "{job}");
    assert_eq!(count(&job, "dead"), 0, "{job}");
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());

    // Every line once, each with its own fields, exactly as expected (the
    // attributes in file order after userId and alertMessage).
    let hits = receiver.hits();
    assert_sent_once(&receiver.per_id(), "reached the receiver");
    assert_eq!(hits.len() as u64, sent, "requests");
    let mut wrong = Vec::new();
    for hit in &hits {
        let line = hit.line().expect("a webhook-id ends with the line");
        let got = String::from_utf8_lossy(&hit.body);
        match expected.get(&line) {
            Some(want) if *want == got => {}
            want => wrong.push(format!("line {line}: got {got}, want {want:?}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} bodies differ, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
    assert!(
        hits.iter().all(|h| !h.signed.1.is_empty()),
        "every request signed"
    );
    eprintln!(
        "FIGURES attributes: {sent} bodies with orderId and locale through Redis, \
         {} lines ({} duplicate, {} invalid)",
        lines,
        count(&job, "duplicate"),
        count(&job, "invalid")
    );
}
