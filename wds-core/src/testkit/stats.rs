//! Stats: ready, leased, scheduled and dead messages, and `Pushed::depth`.

use super::support::{assert_stats, claim, dead, delivered, ok, one, stats, Reader, LONG};
use crate::{
    backend::{now_ms, OffsetStore, Queue, Settle},
    DeadKind,
};

/// `stats()` counts messages (not batches) as they move: pushed messages
/// are `ready`, leased ones `leased`, retries `scheduled`, dead letters
/// `dead`, and a replay moves `dead` to `ready`. `Pushed::depth` is the
/// `ready` count after each push.
pub async fn stats_count_messages(q: &dyn Queue, s: &dyn OffsetStore) {
    assert_stats(stats(q).await, (0, 0, 0, 0), "of a fresh backend");
    let job = claim(s, "stats_count_messages", 0).await;
    let mut reader = Reader::new(&job);

    let pushed = ok("push", q.push(&reader.next(3, 1, 0, false)).await);
    assert_eq!(pushed.depth, 3, "Pushed::depth after pushing 3 messages");
    assert_stats(stats(q).await, (3, 0, 0, 0), "after pushing 3 messages");
    let pushed = ok("push", q.push(&reader.next(2, 0, 1, false)).await);
    assert_eq!(
        pushed.depth, 5,
        "Pushed::depth after pushing 3 + 2 messages"
    );
    assert_stats(stats(q).await, (5, 0, 0, 0), "after pushing 3 + 2 messages");

    let lease = one(ok("lease(1)", q.lease(1, LONG).await), "lease(1)");
    assert_eq!(
        lease.batch.messages.len(),
        3,
        "the first batch pushed is leased first"
    );
    assert_stats(stats(q).await, (2, 3, 0, 0), "with a batch of 3 leased");
    let pushed = ok("push", q.push(&reader.next(1, 0, 0, true)).await);
    assert_eq!(
        pushed.depth, 3,
        "Pushed::depth must count ready messages, not leased ones"
    );

    let m = &lease.batch.messages;
    let mut retried = m[2].clone();
    retried.attempts += 1;
    let outcomes = vec![
        delivered(&m[0]),
        dead(&m[1], DeadKind::Permanent),
        Settle::Retry {
            message: retried,
            at_ms: now_ms() + 60_000,
        },
    ];
    ok("settle()", q.settle(&lease, &outcomes).await);
    assert_stats(
        stats(q).await,
        (3, 0, 1, 1),
        "after settling 1 delivered, 1 dead and 1 retry",
    );

    assert_eq!(
        ok("replay()", q.replay(Some(&job)).await),
        1,
        "replay() count"
    );
    assert_stats(
        stats(q).await,
        (4, 0, 1, 0),
        "after replaying the dead letter",
    );
}
