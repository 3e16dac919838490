//! Settles: every message of a held lease, applied whole; delivered, dead
//! and retried messages.

use std::time::Duration;

use super::support::{
    all_delivered, assert_batches, assert_deadline, assert_lease_lost, assert_stats, claim, dead,
    delivered, lease_soon, message, ok, one, outcome, report, sleep_past, stats, Counts, Reader,
    Snapshot, BRIEF, LONG, PATIENCE, SHORT, SKEW_MS,
};
use crate::{
    backend::{now_ms, Continue, Lease, LeaseId, LineOutcome, OffsetStore, Queue, Settle},
    DeadKind, DeadLetter, DeadReason, JobState,
};

/// Settling messages as delivered counts them in `report().delivered`,
/// records `LineOutcome::Delivered` with the receipt, and ends the lease.
pub async fn settle_delivered_records_the_receipt(q: &dyn Queue, s: &dyn OffsetStore) {
    let job = claim(s, "settle_delivered_records_the_receipt", 0).await;
    let mut reader = Reader::new(&job);
    ok("push", q.push(&reader.next(2, 0, 0, true)).await);
    let lease = one(ok("lease()", q.lease(10, LONG).await), "lease");
    ok("mark_sending()", q.mark_sending(&lease).await);
    let outcomes = all_delivered(&lease);
    ok("settle()", q.settle(&lease, &outcomes).await);

    for settled in &outcomes {
        let Settle::Delivered { id, receipt } = settled else {
            unreachable!("all_delivered() makes Delivered outcomes")
        };
        assert_eq!(
            outcome(s, id).await,
            Some(LineOutcome::Delivered {
                receipt: receipt.clone()
            }),
            "outcome() of a delivered line must be Delivered with its receipt"
        );
    }
    let r = report(s, &job).await;
    assert_eq!(
        r.delivered, 2,
        "report().delivered must count delivered messages"
    );
    assert_eq!(
        r.state,
        JobState::Done,
        "every line delivered: the job is Done"
    );
    assert_stats(
        stats(q).await,
        (0, 0, 0, 0),
        "after settling the only batch",
    );
    let again = ok("lease()", q.lease(10, LONG).await);
    assert!(
        again.is_empty(),
        "a settled batch must not be leased again, got {again:?}"
    );
}

/// Settling messages as dead counts them in `dead` (and in `in_doubt` for
/// `DeadKind::InDoubt`), records `LineOutcome::Dead` with the reason, and
/// lists them in `dead_letters` (whole, with the reason; per job or all; at
/// most `limit`).
pub async fn settle_dead_records_a_dead_letter(q: &dyn Queue, s: &dyn OffsetStore) {
    let job = claim(s, "settle_dead_records_a_dead_letter", 0).await;
    let other = claim(s, "settle_dead_records_a_dead_letter", 1).await;
    let mut reader = Reader::new(&job);
    ok("push", q.push(&reader.next(3, 0, 0, true)).await);
    let lease = one(ok("lease()", q.lease(10, LONG).await), "lease");
    ok("mark_sending()", q.mark_sending(&lease).await);

    let m = &lease.batch.messages;
    let mut tried = m[0].clone();
    tried.attempts = 3;
    tried.first_attempt_ms = Some(now_ms().saturating_sub(5_000));
    let permanent = DeadReason {
        kind: DeadKind::Permanent,
        detail: "status 404: no such user".into(),
    };
    let outcomes = vec![
        Settle::Dead {
            message: tried.clone(),
            reason: permanent.clone(),
        },
        dead(&m[1], DeadKind::InDoubt),
        delivered(&m[2]),
    ];
    let Settle::Dead {
        reason: in_doubt, ..
    } = outcomes[1].clone()
    else {
        unreachable!("dead() makes Dead outcomes")
    };
    ok("settle()", q.settle(&lease, &outcomes).await);

    let r = report(s, &job).await;
    assert_eq!(
        (r.delivered, r.dead, r.in_doubt),
        (1, 2, 1),
        "report() (delivered, dead, in_doubt) after 1 delivered, 1 permanent and 1 in-doubt dead letter"
    );
    assert_eq!(
        r.state,
        JobState::Done,
        "dead letters are terminal: every line accounted for, the job is Done"
    );
    assert_eq!(
        outcome(s, &m[0].id).await,
        Some(LineOutcome::Dead {
            reason: permanent.clone()
        }),
        "outcome() of a dead line must be Dead with its reason"
    );
    assert_eq!(
        outcome(s, &m[1].id).await,
        Some(LineOutcome::Dead {
            reason: in_doubt.clone()
        }),
        "outcome() of an in-doubt line must be Dead with its reason"
    );

    let mut letters = ok("dead_letters(job)", q.dead_letters(Some(&job), 10).await);
    letters.sort_by_key(|d| d.message.id.line);
    let got: Vec<_> = letters
        .iter()
        .map(|d: &DeadLetter| (d.message.clone(), d.reason.clone()))
        .collect();
    assert_eq!(
        got,
        vec![(tried, permanent), (m[1].clone(), in_doubt)],
        "dead_letters() must list each dead message, whole, with its reason"
    );
    assert_eq!(
        ok("dead_letters(None)", q.dead_letters(None, 10).await).len(),
        2,
        "dead_letters(None) must list the dead letters of every job"
    );
    assert_eq!(
        ok("dead_letters(job, 1)", q.dead_letters(Some(&job), 1).await).len(),
        1,
        "dead_letters() must return at most `limit` letters"
    );
    let none = ok(
        "dead_letters(other)",
        q.dead_letters(Some(&other), 10).await,
    );
    assert!(
        none.is_empty(),
        "dead_letters(Some(job)) must list only that job's letters, got {none:?}"
    );
    assert_stats(stats(q).await, (0, 0, 0, 2), "with two dead letters");
}

/// A settle that misses a message, names one twice, or names one that is
/// not in the batch fails and changes nothing; the lease is still held and
/// a correct settle then succeeds.
pub async fn settle_must_name_every_message_once(q: &dyn Queue, s: &dyn OffsetStore) {
    let job = claim(s, "settle_must_name_every_message_once", 0).await;
    let mut reader = Reader::new(&job);
    ok("push", q.push(&reader.next(3, 0, 0, true)).await);
    let lease = one(ok("lease()", q.lease(10, LONG).await), "lease");
    let m = &lease.batch.messages;
    let stranger = message(&job, 99);

    let bad: Vec<(&str, Vec<Settle>)> = vec![
        ("no message", vec![]),
        (
            "a missing message",
            vec![delivered(&m[0]), delivered(&m[1])],
        ),
        (
            "a message that is not in the batch",
            vec![
                delivered(&m[0]),
                delivered(&m[1]),
                delivered(&m[2]),
                delivered(&stranger),
            ],
        ),
        (
            "a message named twice instead of another",
            vec![delivered(&m[0]), delivered(&m[0]), delivered(&m[1])],
        ),
        (
            "a message named twice",
            vec![
                delivered(&m[0]),
                delivered(&m[1]),
                delivered(&m[2]),
                dead(&m[2], DeadKind::Permanent),
            ],
        ),
    ];
    let before = Snapshot::take(q, s, &job).await;
    for (what, outcomes) in bad {
        let result = q.settle(&lease, &outcomes).await;
        assert!(
            result.is_err(),
            "settle() with {what} must fail, got {result:?}"
        );
        before
            .assert_unchanged(q, s, &job, &format!("settle() with {what}"))
            .await;
    }
    ok(
        "a correct settle() after rejected ones (the lease must still be held)",
        q.settle(&lease, &all_delivered(&lease)).await,
    );
    assert_eq!(
        report(s, &job).await.delivered,
        3,
        "the correct settle counts"
    );
}

/// `settle`, `mark_sending`, `extend` and `release` with a lease that is not
/// held (a forged id, or one already settled) fail with `LeaseLost` and
/// change nothing.
pub async fn settle_requires_a_held_lease(q: &dyn Queue, s: &dyn OffsetStore) {
    let job = claim(s, "settle_requires_a_held_lease", 0).await;
    let mut reader = Reader::new(&job);
    ok("push", q.push(&reader.next(2, 0, 0, true)).await);
    let lease = one(ok("lease()", q.lease(10, LONG).await), "lease");
    let forged = Lease {
        id: LeaseId::new(format!("{}-forged", lease.id)),
        ..lease.clone()
    };

    let before = Snapshot::take(q, s, &job).await;
    assert_lease_lost(
        "settle() with a forged lease id",
        q.settle(&forged, &all_delivered(&forged)).await,
    );
    assert_lease_lost(
        "mark_sending() with a forged lease id",
        q.mark_sending(&forged).await,
    );
    assert_lease_lost(
        "extend() with a forged lease id",
        q.extend(&forged, LONG).await,
    );
    assert_lease_lost("release() with a forged lease id", q.release(&forged).await);
    before
        .assert_unchanged(q, s, &job, "calls with a forged lease id")
        .await;

    ok("settle()", q.settle(&lease, &all_delivered(&lease)).await);
    let before = Snapshot::take(q, s, &job).await;
    assert_lease_lost(
        "a second settle() of a settled lease",
        q.settle(&lease, &all_delivered(&lease)).await,
    );
    assert_lease_lost(
        "mark_sending() with a settled lease",
        q.mark_sending(&lease).await,
    );
    assert_lease_lost(
        "extend() with a settled lease",
        q.extend(&lease, LONG).await,
    );
    assert_lease_lost("release() with a settled lease", q.release(&lease).await);
    before
        .assert_unchanged(q, s, &job, "calls with a settled lease")
        .await;
    assert_eq!(
        report(s, &job).await.delivered,
        2,
        "each message counted once"
    );
}

/// `Retry` is not terminal: the line stays pending, the message is
/// `scheduled`, it is not leasable before its `at_ms`, and it is leasable
/// after, exactly as settled (with its incremented `attempts`).
pub async fn retry_waits_until_due(q: &dyn Queue, s: &dyn OffsetStore) {
    let job = claim(s, "retry_waits_until_due", 0).await;
    let mut reader = Reader::new(&job);
    ok("push", q.push(&reader.next(2, 0, 0, true)).await);
    let lease = one(ok("lease()", q.lease(10, LONG).await), "lease");
    ok("mark_sending()", q.mark_sending(&lease).await);

    let m = &lease.batch.messages;
    let mut retried = m[0].clone();
    retried.attempts += 1;
    retried.first_attempt_ms = Some(now_ms());
    let at_ms = now_ms() + 300;
    let outcomes = vec![
        Settle::Retry {
            message: retried.clone(),
            at_ms,
        },
        delivered(&m[1]),
    ];
    ok("settle() with a retry", q.settle(&lease, &outcomes).await);

    let r = report(s, &job).await;
    assert_eq!(
        Counts::of(&r),
        Counts {
            lines: 2,
            delivered: 1,
            dead: 0,
            in_doubt: 0,
            invalid: 0,
            duplicate: 0,
        },
        "a retry must not be counted as terminal"
    );
    assert_eq!(
        (r.state, r.finished_ms),
        (JobState::Delivering, None),
        "a job with a message waiting for a retry is Delivering, not finished"
    );
    assert_eq!(
        outcome(s, &m[0].id).await,
        None,
        "outcome() of a line waiting for a retry must be None"
    );
    assert_stats(stats(q).await, (0, 0, 1, 0), "with one message scheduled");

    let give_up = at_ms + PATIENCE.as_millis() as u64;
    let lease = loop {
        let leases = ok("lease()", q.lease(10, LONG).await);
        let asked_by = now_ms();
        if let Some(lease) = leases.into_iter().next() {
            assert!(
                asked_by + SKEW_MS >= at_ms,
                "a retried message must not be leasable before its at_ms: leased {} ms early",
                at_ms - asked_by
            );
            break lease;
        }
        assert!(
            now_ms() < give_up,
            "a retried message must be leasable once its at_ms has passed; still not after {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        lease.batch.messages,
        vec![retried],
        "a due retry must be leased exactly as settled, with its incremented attempts"
    );
    assert_stats(stats(q).await, (0, 1, 0, 0), "with the retry leased");
    ok("settle()", q.settle(&lease, &all_delivered(&lease)).await);
    let r = report(s, &job).await;
    assert_eq!(
        (r.delivered, r.state),
        (2, JobState::Done),
        "once the retried message is delivered the job is Done"
    );
}

/// `settle_and_continue` settles one lease, marks the next batch as sending
/// and leases more, each part as `settle`, `mark_sending` and `lease`
/// would: a part whose lease is not held fails with `LeaseLost` and does
/// not stop the parts after it.
pub async fn settle_and_continue_goes_on(q: &dyn Queue, s: &dyn OffsetStore) {
    let job = claim(s, "settle_and_continue_goes_on", 0).await;
    let mut reader = Reader::new(&job);
    let pushes: Vec<_> = (1..=5).map(|n| reader.next(2, 0, 0, n == 5)).collect();
    for push in &pushes {
        ok("push", q.push(push).await);
    }
    let first = one(ok("lease(1)", q.lease(1, LONG).await), "first lease");
    // Marked by settle_and_continue only: its lease is short so that, once
    // it expires, the mark shows as `previously_sending`.
    let second = one(ok("lease(1)", q.lease(1, BRIEF).await), "second lease");
    ok("mark_sending()", q.mark_sending(&first).await);
    let then = Continue {
        mark: Some(&second),
        lease: 1,
        ttl: LONG,
    };
    let before = now_ms();
    let all = ok(
        "settle_and_continue() of two held leases",
        q.settle_and_continue(&first, &all_delivered(&first), then)
            .await,
    );
    ok("its settle part", all.settled);
    assert!(
        matches!(all.marked, Some(Ok(()))),
        "its mark part must succeed, got {:?}",
        all.marked
    );
    let third = one(ok("its lease part", all.leased), "the lease part");
    assert_batches(
        std::slice::from_ref(&third),
        &[&pushes[2]],
        "the lease part leases the next ready batch",
    );
    assert_deadline(&third, LONG, before, now_ms());
    assert_eq!(
        report(s, &job).await.delivered,
        2,
        "settle_and_continue() must settle the first lease"
    );
    sleep_past(second.deadline_ms, SKEW_MS).await;
    let again = one(lease_soon(q, 1, LONG).await, "lease after it expired");
    assert_eq!(
        again.batch, second.batch,
        "the expired batch comes back first"
    );
    assert!(
        again.previously_sending,
        "settle_and_continue() must mark the batch it is given"
    );

    // The settle part's lease expired: the other parts still apply.
    let gone = one(ok("lease(1)", q.lease(1, SHORT).await), "lease");
    sleep_past(gone.deadline_ms, SKEW_MS).await;
    let then = Continue {
        mark: Some(&third),
        lease: 1,
        ttl: SHORT,
    };
    let rest = ok(
        "settle_and_continue() with the settled lease expired",
        q.settle_and_continue(&gone, &all_delivered(&gone), then)
            .await,
    );
    assert_lease_lost("the settle part of an expired lease", rest.settled);
    assert!(
        matches!(rest.marked, Some(Ok(()))),
        "the mark part of a held lease must succeed, got {:?}",
        rest.marked
    );
    let expired = one(ok("the lease part", rest.leased), "the lease part");
    assert_eq!(
        expired.batch, gone.batch,
        "the lease part re-leases the expired batch first"
    );
    assert_eq!(
        report(s, &job).await.delivered,
        2,
        "a settle part whose lease expired must change nothing"
    );

    // The mark part's lease expired: the settle part still applies; nothing
    // asked for, nothing leased.
    sleep_past(expired.deadline_ms, SKEW_MS).await;
    let then = Continue {
        mark: Some(&expired),
        lease: 0,
        ttl: LONG,
    };
    let rest = ok(
        "settle_and_continue() with the next lease expired",
        q.settle_and_continue(&third, &all_delivered(&third), then)
            .await,
    );
    ok("the settle part of a held lease", rest.settled);
    assert_lease_lost(
        "the mark part of an expired lease",
        rest.marked.expect("a mark was asked for"),
    );
    let none = ok("a lease part of 0 batches", rest.leased);
    assert!(none.is_empty(), "lease part of 0 batches leased {none:?}");
    assert_eq!(
        report(s, &job).await.delivered,
        4,
        "the settle part applies whatever came of the other parts"
    );
    let last = one(
        lease_soon(q, 1, LONG).await,
        "the expired batch, a third time",
    );
    assert_eq!(last.batch, gone.batch);
    assert!(
        !last.previously_sending,
        "a mark part whose lease expired must not mark the batch"
    );

    // No mark asked for; more asked for than is ready.
    let fifth = one(ok("lease(1)", q.lease(1, LONG).await), "the last batch");
    let then = Continue {
        mark: None,
        lease: 3,
        ttl: LONG,
    };
    let rest = ok(
        "settle_and_continue() with no mark",
        q.settle_and_continue(&again, &all_delivered(&again), then)
            .await,
    );
    ok("settle part", rest.settled);
    assert!(
        rest.marked.is_none(),
        "no mark asked for, got {:?}",
        rest.marked
    );
    let none = ok("lease part", rest.leased);
    assert!(none.is_empty(), "nothing was ready, yet leased {none:?}");
    for lease in [&last, &fifth] {
        ok("settle()", q.settle(lease, &all_delivered(lease)).await);
    }
    let r = report(s, &job).await;
    assert_eq!(
        (r.delivered, r.state),
        (10, JobState::Done),
        "every batch settled once"
    );
    assert_stats(stats(q).await, (0, 0, 0, 0), "after the last settle");
}
