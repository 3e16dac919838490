//! Leases: one holder per batch, in push order, reclaimed after expiry,
//! extended, released.

use std::collections::HashSet;

use futures::future::join_all;

use super::support::{
    all_delivered, assert_batches, assert_deadline, assert_lease_lost, assert_stats, claim, dead,
    lease_soon, ok, one, outcome, report, sleep_past, stats, Reader, BRIEF, LONG, SHORT, SKEW_MS,
};
use crate::{
    backend::{now_ms, Lease, OffsetStore, Push, Queue},
    DeadKind,
};

/// `lease(n)` hands out at most `n` batches per call, at least one while any
/// is ready, in push order across jobs, each with a deadline `ttl` from now
/// and `previously_sending` false.
pub async fn lease_in_push_order(q: &dyn Queue, s: &dyn OffsetStore) {
    lease_in_order(q, s, true).await;
}

/// As [`lease_in_push_order`], for a backend that spreads jobs over shards
/// and leases from them in turn (see [`super::run_all_sharded`]): each
/// job's batches in its push order, but which job's come first is not
/// checked, since two jobs may be on different shards.
pub async fn lease_in_push_order_per_job(q: &dyn Queue, s: &dyn OffsetStore) {
    lease_in_order(q, s, false).await;
}

async fn lease_in_order(q: &dyn Queue, s: &dyn OffsetStore, across_jobs: bool) {
    let a = claim(s, "lease_in_push_order", 0).await;
    let b = claim(s, "lease_in_push_order", 1).await;
    let (mut ra, mut rb) = (Reader::new(&a), Reader::new(&b));
    let pushes = [
        ra.next(2, 0, 0, false),
        rb.next(3, 0, 0, true),
        ra.next(1, 0, 0, true),
    ];
    for p in &pushes {
        ok("push", q.push(p).await);
    }

    let mut got: Vec<Lease> = Vec::new();
    for _ in 0..=pushes.len() {
        let before = now_ms();
        let leases = ok("lease(2)", q.lease(2, LONG).await);
        let after = now_ms();
        assert!(
            leases.len() <= 2,
            "lease(2, ..) must lease at most 2 batches, got {}",
            leases.len()
        );
        if leases.is_empty() {
            break;
        }
        for l in &leases {
            assert_deadline(l, LONG, before, after);
            assert!(
                !l.previously_sending,
                "a batch never leased before must not be previously_sending"
            );
        }
        got.extend(leases);
    }
    if across_jobs {
        assert_batches(
            &got,
            &[&pushes[0], &pushes[1], &pushes[2]],
            "lease(2) until empty",
        );
    } else {
        for job in [&a, &b] {
            let of_job: Vec<Lease> = got
                .iter()
                .filter(|l| l.batch.messages.first().map(|m| &m.id.job) == Some(job))
                .cloned()
                .collect();
            let pushed: Vec<&Push> = pushes.iter().filter(|p| &p.job == job).collect();
            assert_batches(&of_job, &pushed, "lease(2) until empty, one job's batches");
        }
        assert_eq!(
            got.len(),
            pushes.len(),
            "lease(2) until empty: every push leased once"
        );
    }
    let ids: HashSet<_> = got.iter().map(|l| &l.batch.id).collect();
    assert_eq!(ids.len(), got.len(), "each batch must have its own BatchId");
    let leases: HashSet<_> = got.iter().map(|l| &l.id).collect();
    assert_eq!(
        leases.len(),
        got.len(),
        "each lease must have its own LeaseId"
    );
}

/// A leased batch is not leased again while its lease is held, also when
/// many workers lease at once.
pub async fn leased_batch_has_one_holder(q: &dyn Queue, s: &dyn OffsetStore) {
    let job = claim(s, "leased_batch_has_one_holder", 0).await;
    let mut reader = Reader::new(&job);
    let mut messages = 0;
    for size in 1..=4 {
        ok("push", q.push(&reader.next(size, 0, 0, size == 4)).await);
        messages += size;
    }

    let racing = join_all((0..8).map(|_| q.lease(1, LONG))).await;
    let mut got: Vec<Lease> = Vec::new();
    for leases in racing {
        let leases = ok("concurrent lease(1)", leases);
        assert!(leases.len() <= 1, "lease(1, ..) must lease at most 1 batch");
        got.extend(leases);
    }
    // Whatever the race left (a backend may lease fewer than asked).
    for _ in 0..4 {
        let leases = ok("lease(10)", q.lease(10, LONG).await);
        if leases.is_empty() {
            break;
        }
        got.extend(leases);
    }
    let batches: HashSet<_> = got.iter().map(|l| l.batch.id.clone()).collect();
    assert_eq!(
        (got.len(), batches.len()),
        (4, 4),
        "4 pushed batches leased by racing workers must each be leased exactly once"
    );
    let ids: HashSet<_> = got
        .iter()
        .flat_map(|l| l.batch.messages.iter().map(|m| m.id.clone()))
        .collect();
    assert_eq!(
        ids.len() as u64,
        messages,
        "every message must be leased exactly once"
    );

    let again = ok("lease(10)", q.lease(10, LONG).await);
    assert!(
        again.is_empty(),
        "a batch must not be leased again while its lease is held, got {again:?}"
    );
    assert_stats(
        stats(q).await,
        (0, messages, 0, 0),
        "with every batch leased",
    );
}

/// A lease that expires without `mark_sending` is refused by every method
/// from its deadline on, and its batch is leased again, whole, under a new
/// lease id with `previously_sending` false.
pub async fn expired_lease_is_reclaimed(q: &dyn Queue, s: &dyn OffsetStore) {
    let job = claim(s, "expired_lease_is_reclaimed", 0).await;
    let mut reader = Reader::new(&job);
    ok("push", q.push(&reader.next(2, 0, 0, true)).await);
    let first = one(ok("lease()", q.lease(1, SHORT).await), "first lease");

    sleep_past(first.deadline_ms, SKEW_MS).await;
    // Expired, not yet leased again: already refused.
    assert_lease_lost(
        "extend() with an expired lease",
        q.extend(&first, LONG).await,
    );
    assert_lease_lost(
        "mark_sending() with an expired lease",
        q.mark_sending(&first).await,
    );

    let second = one(
        lease_soon(q, 1, LONG).await,
        "lease after the first one expired",
    );
    assert_eq!(
        second.batch, first.batch,
        "the batch of an expired lease must be leased again, whole"
    );
    assert_ne!(
        second.id, first.id,
        "a new lease of a batch must have a new LeaseId"
    );
    assert!(
        !second.previously_sending,
        "previously_sending must be false when the expired holder never called mark_sending"
    );

    assert_lease_lost(
        "settle() with an expired lease",
        q.settle(&first, &all_delivered(&first)).await,
    );
    assert_lease_lost("release() with an expired lease", q.release(&first).await);
    assert_lease_lost(
        "mark_sending() with an expired lease",
        q.mark_sending(&first).await,
    );
    assert_lease_lost(
        "extend() with an expired lease",
        q.extend(&first, LONG).await,
    );
    let r = report(s, &job).await;
    assert_eq!(r.delivered, 0, "a refused settle must not count anything");
    assert_eq!(
        outcome(s, &first.batch.messages[0].id).await,
        None,
        "a refused settle must not record an outcome"
    );

    ok(
        "mark_sending() by the new holder",
        q.mark_sending(&second).await,
    );
    ok(
        "settle() by the new holder",
        q.settle(&second, &all_delivered(&second)).await,
    );
    assert_eq!(
        report(s, &job).await.delivered,
        2,
        "the new holder's settle counts"
    );
}

/// A batch whose holder called `mark_sending` and then let the lease expire
/// comes back `previously_sending`; it stays so on every later expiry, even
/// when the later holders never marked it.
pub async fn sending_mark_is_sticky(q: &dyn Queue, s: &dyn OffsetStore) {
    let job = claim(s, "sending_mark_is_sticky", 0).await;
    let mut reader = Reader::new(&job);
    ok("push", q.push(&reader.next(2, 0, 0, true)).await);

    let first = one(ok("lease()", q.lease(1, BRIEF).await), "first lease");
    ok(
        "mark_sending() right after lease() (ttl 500 ms)",
        q.mark_sending(&first).await,
    );
    sleep_past(first.deadline_ms, SKEW_MS).await;

    let second = one(
        lease_soon(q, 1, SHORT).await,
        "lease after a marked lease expired",
    );
    assert_eq!(
        second.batch, first.batch,
        "the expired batch must come back whole"
    );
    assert!(
        second.previously_sending,
        "previously_sending must be true when the expired holder had called mark_sending"
    );
    // The second holder dies before marking.
    sleep_past(second.deadline_ms, SKEW_MS).await;

    let third = one(lease_soon(q, 1, LONG).await, "lease after a second expiry");
    assert_eq!(
        third.batch, first.batch,
        "the expired batch must come back whole"
    );
    assert!(
        third.previously_sending,
        "previously_sending must stay true on later expiries, even when the later holder did not mark"
    );
    let ids: HashSet<_> = [&first.id, &second.id, &third.id].into_iter().collect();
    assert_eq!(
        ids.len(),
        3,
        "every lease of a batch must have a new LeaseId"
    );

    let outcomes = third
        .batch
        .messages
        .iter()
        .map(|m| dead(m, DeadKind::InDoubt))
        .collect::<Vec<_>>();
    ok(
        "settle() of an in-doubt batch",
        q.settle(&third, &outcomes).await,
    );
    let r = report(s, &job).await;
    assert_eq!(
        (r.dead, r.in_doubt),
        (2, 2),
        "in-doubt dead letters count as dead and in_doubt"
    );
}

/// `lease` re-leases expired batches before it leases ready ones.
pub async fn expired_leases_come_first(q: &dyn Queue, s: &dyn OffsetStore) {
    let job = claim(s, "expired_leases_come_first", 0).await;
    let mut reader = Reader::new(&job);
    let early = reader.next(1, 0, 0, false);
    let late = reader.next(1, 0, 0, true);
    ok("push", q.push(&early).await);
    ok("push", q.push(&late).await);

    let first = one(ok("lease(1)", q.lease(1, SHORT).await), "first lease");
    assert_batches(std::slice::from_ref(&first), &[&early], "first lease");
    sleep_past(first.deadline_ms, 3 * SKEW_MS).await;

    let next = one(
        ok("lease(1)", q.lease(1, LONG).await),
        "lease(1) after expiry",
    );
    assert_eq!(
        next.batch.id, first.batch.id,
        "lease() must re-lease an expired batch before leasing ready ones"
    );
    let last = one(
        ok("lease(1)", q.lease(1, LONG).await),
        "lease(1) of the ready batch",
    );
    assert_batches(
        std::slice::from_ref(&last),
        &[&late],
        "lease of the ready batch",
    );
    ok("settle()", q.settle(&next, &all_delivered(&next)).await);
    ok("settle()", q.settle(&last, &all_delivered(&last)).await);
}

/// `extend` moves a held lease's deadline to `ttl` from now and returns it:
/// the batch is not leased again after the original deadline, and the lease
/// is still accepted.
pub async fn extend_keeps_the_lease(q: &dyn Queue, s: &dyn OffsetStore) {
    let job = claim(s, "extend_keeps_the_lease", 0).await;
    let mut reader = Reader::new(&job);
    ok("push", q.push(&reader.next(2, 0, 0, true)).await);
    let lease = one(ok("lease()", q.lease(1, BRIEF).await), "lease");

    let before = now_ms();
    let deadline = ok(
        "extend() right after lease() (ttl 500 ms)",
        q.extend(&lease, LONG).await,
    );
    let after = now_ms();
    assert!(
        deadline > lease.deadline_ms,
        "extend() must return the new, later deadline: {deadline} <= {}",
        lease.deadline_ms
    );
    let extended = Lease {
        deadline_ms: deadline,
        ..lease.clone()
    };
    assert_deadline(&extended, LONG, before, after);

    sleep_past(lease.deadline_ms, 4 * SKEW_MS).await;
    let others = ok("lease()", q.lease(10, LONG).await);
    assert!(
        others.is_empty(),
        "an extended lease must not be re-leased after its original deadline, got {others:?}"
    );
    ok(
        "mark_sending() with an extended lease past its original deadline",
        q.mark_sending(&lease).await,
    );
    ok(
        "settle() with an extended lease past its original deadline",
        q.settle(&lease, &all_delivered(&lease)).await,
    );
    assert_eq!(report(s, &job).await.delivered, 2, "the settle counts");
}

/// A released batch is ready again at once, before later batches, under a
/// new lease that is not `previously_sending`; the released lease is refused.
pub async fn release_returns_the_batch_at_once(q: &dyn Queue, s: &dyn OffsetStore) {
    let job = claim(s, "release_returns_the_batch_at_once", 0).await;
    let mut reader = Reader::new(&job);
    let early = reader.next(2, 0, 0, false);
    let late = reader.next(1, 0, 0, true);
    ok("push", q.push(&early).await);
    ok("push", q.push(&late).await);

    let first = one(ok("lease(1)", q.lease(1, LONG).await), "first lease");
    assert_batches(std::slice::from_ref(&first), &[&early], "first lease");
    assert_stats(
        stats(q).await,
        (1, 2, 0, 0),
        "with one of two batches leased",
    );
    ok("release()", q.release(&first).await);
    assert_stats(stats(q).await, (3, 0, 0, 0), "after the release");

    let again = one(
        ok("lease(1)", q.lease(1, LONG).await),
        "lease after release",
    );
    assert_eq!(
        again.batch, first.batch,
        "a released batch must be leased again at once, before later batches"
    );
    assert_ne!(
        again.id, first.id,
        "a new lease of a batch must have a new LeaseId"
    );
    assert!(
        !again.previously_sending,
        "a released batch that was never marked must not be previously_sending"
    );
    assert_lease_lost(
        "settle() with a released lease",
        q.settle(&first, &all_delivered(&first)).await,
    );

    let last = one(
        ok("lease(1)", q.lease(1, LONG).await),
        "lease of the later batch",
    );
    assert_batches(
        std::slice::from_ref(&last),
        &[&late],
        "lease of the later batch",
    );
    ok("settle()", q.settle(&again, &all_delivered(&again)).await);
    ok("settle()", q.settle(&last, &all_delivered(&last)).await);
    assert_eq!(
        report(s, &job).await.delivered,
        3,
        "every message delivered once"
    );
}
