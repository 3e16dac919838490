//! Checks that a backend keeps a message's attributes wherever it keeps the
//! message: in a fresh batch, a scheduled retry, a dead letter and its
//! replay.

use super::support::{claim, dead, delivered, lease_soon, ok, one, report, Reader, LONG};
use crate::{
    backend::{now_ms, JobControl, OffsetStore, Queue, Settle},
    Attributes, DeadKind, Message,
};

/// Attributes of every JSON type, in an order that is not alphabetical,
/// with names and values that look like the parts of a stored message
/// (and of a dead letter's reason) to a backend that searches its text.
fn attributes(line: u64) -> Attributes {
    let pairs = [
        ("orderId", serde_json::json!(format!("A-{line}"))),
        ("items", serde_json::json!(line)),
        ("vip", serde_json::json!(true)),
        ("note", serde_json::json!(null)),
        ("price", serde_json::json!(12.5)),
        (
            "reason",
            serde_json::json!({"kind": "in_doubt", "detail": "]\",[\"x\""}),
        ),
        ("kind", serde_json::json!("in_doubt")),
        ("tags", serde_json::json!(["a", {"b": [1, 2]}])),
        ("zz \"quoted\", [x]", serde_json::json!("say \"hi\"\n")),
        ("é", serde_json::json!("😀")),
    ];
    match Attributes::try_from_pairs(pairs) {
        Ok(attributes) => attributes,
        Err(e) => panic!("testkit attributes keep the limits: {e}"),
    }
}

/// `message` with [`attributes`] of its line.
fn with_attributes(message: Message) -> Message {
    let line = message.id.line;
    message.with_attributes(attributes(line))
}

/// Asserts `got` are `expected`, attributes and their order included.
#[track_caller]
fn assert_same(got: &[Message], expected: &[Message], what: &str) {
    assert_eq!(got, expected, "{what}: the messages as pushed");
    for (g, e) in got.iter().zip(expected) {
        let names = |m: &Message| {
            m.attributes
                .iter()
                .map(|(n, _)| n.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(g),
            names(e),
            "{what}: attribute order of line {}",
            e.id.line
        );
    }
}

/// A message's attributes come back with it, in order and with their JSON
/// types: on lease after a push, after a scheduled retry, in its dead
/// letter, and after a replay. Messages without attributes beside them
/// stay without.
pub async fn attributes_are_kept(q: &dyn Queue, s: &dyn OffsetStore) {
    let job = claim(s, "attributes_are_kept", 0).await;
    let mut push = Reader::new(&job).next(4, 0, 0, true);
    for i in [0, 2, 3] {
        push.messages[i] = with_attributes(push.messages[i].clone());
    }
    ok("push", q.push(&push).await);
    let lease = one(ok("lease", q.lease(1, LONG).await), "lease");
    assert_same(&lease.batch.messages, &push.messages, "lease after push");

    let m = &lease.batch.messages;
    let mut retried = m[0].clone();
    retried.attempts += 1;
    retried.first_attempt_ms = Some(now_ms());
    let outcomes = [
        Settle::Retry {
            message: retried.clone(),
            at_ms: now_ms(),
        },
        delivered(&m[1]),
        dead(&m[2], DeadKind::Permanent),
        delivered(&m[3]),
    ];
    ok("settle", q.settle(&lease, &outcomes).await);
    let again = one(lease_soon(q, 1, LONG).await, "the retried message");
    assert_same(&again.batch.messages, &[retried], "lease after a retry");
    ok(
        "settle",
        q.settle(&again, &[delivered(&again.batch.messages[0])])
            .await,
    );

    let letters = ok("dead_letters", q.dead_letters(Some(&job), 10).await);
    assert_eq!(letters.len(), 1, "one dead letter");
    assert_same(
        std::slice::from_ref(&letters[0].message),
        std::slice::from_ref(&m[2]),
        "dead letter",
    );
    assert_eq!(ok("replay", q.replay(Some(&job)).await), 1);
    let replayed = one(lease_soon(q, 1, LONG).await, "the replayed message");
    assert_eq!(replayed.batch.messages.len(), 1);
    let mut expected = m[2].clone();
    // A replay resets attempts; what first_attempt_ms becomes is not checked.
    expected.first_attempt_ms = replayed.batch.messages[0].first_attempt_ms;
    expected.attempts = replayed.batch.messages[0].attempts;
    assert_same(
        &replayed.batch.messages,
        &[expected],
        "lease after a replay",
    );
    ok(
        "settle",
        q.settle(&replayed, &[delivered(&replayed.batch.messages[0])])
            .await,
    );
    let r = report(s, &job).await;
    assert!(r.is_complete(), "every line delivered: {r:?}");
}

/// Replaying one kind of dead letter goes by each letter's own reason,
/// whatever its message's attributes say (here an attribute `kind` and an
/// attribute `reason` that name another kind).
pub async fn replay_kind_ignores_attributes(
    q: &dyn Queue,
    s: &dyn OffsetStore,
    c: &dyn JobControl,
) {
    let job = claim(s, "replay_kind_ignores_attributes", 0).await;
    let mut push = Reader::new(&job).next(2, 0, 0, true);
    push.messages[0] = with_attributes(push.messages[0].clone());
    ok("push", q.push(&push).await);
    let lease = one(ok("lease", q.lease(1, LONG).await), "lease");
    let m = &lease.batch.messages;
    // Line 1 (attributes saying in_doubt) is permanent; line 2 in doubt.
    let outcomes = [
        dead(&m[0], DeadKind::Permanent),
        dead(&m[1], DeadKind::InDoubt),
    ];
    ok("settle", q.settle(&lease, &outcomes).await);
    assert_eq!(
        ok(
            "replay_kind(in_doubt)",
            c.replay_kind(&job, DeadKind::InDoubt).await
        ),
        1,
        "one in-doubt letter"
    );
    let replayed = one(lease_soon(q, 1, LONG).await, "the replayed batch");
    let lines: Vec<u64> = replayed.batch.messages.iter().map(|m| m.id.line).collect();
    assert_eq!(
        lines,
        [m[1].id.line],
        "the in-doubt line, not the one whose attributes say in_doubt"
    );
    let left = ok("dead_letters", q.dead_letters(Some(&job), 10).await);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].reason.kind, DeadKind::Permanent);
    assert_same(
        std::slice::from_ref(&left[0].message),
        std::slice::from_ref(&m[0]),
        "the permanent letter",
    );
    assert_eq!(
        ok(
            "replay_kind(permanent)",
            c.replay_kind(&job, DeadKind::Permanent).await
        ),
        1
    );
}
