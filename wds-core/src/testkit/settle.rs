//! Settles: every message of a held lease, applied whole; delivered, dead
//! and retried messages.

use std::time::Duration;

use super::support::{
    all_delivered, assert_lease_lost, assert_stats, claim, dead, delivered, message, ok, one,
    outcome, report, stats, Counts, Reader, Snapshot, LONG, PATIENCE, SKEW_MS,
};
use crate::{
    now_ms, DeadKind, DeadLetter, DeadReason, JobState, Lease, LeaseId, LineOutcome, OffsetStore,
    Queue, Settle,
};

/// Settling messages as delivered counts them in `report().delivered`,
/// records `LineOutcome::Delivered` with the receipt, and ends the lease.
pub async fn settle_delivered_records_the_receipt(q: &dyn Queue, s: &dyn OffsetStore) {
    let job = claim(s, "settle_delivered_records_the_receipt", 0).await;
    let mut reader = Reader::new(&job);
    ok("push", q.push(reader.next(2, 0, 0, true)).await);
    let lease = one(ok("lease()", q.lease(10, LONG).await), "lease");
    ok("mark_sending()", q.mark_sending(&lease).await);
    let outcomes = all_delivered(&lease);
    ok("settle()", q.settle(&lease, outcomes.clone()).await);

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
    ok("push", q.push(reader.next(3, 0, 0, true)).await);
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
    ok("settle()", q.settle(&lease, outcomes).await);

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
    ok("push", q.push(reader.next(3, 0, 0, true)).await);
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
        let result = q.settle(&lease, outcomes).await;
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
        q.settle(&lease, all_delivered(&lease)).await,
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
    ok("push", q.push(reader.next(2, 0, 0, true)).await);
    let lease = one(ok("lease()", q.lease(10, LONG).await), "lease");
    let forged = Lease {
        id: LeaseId(format!("{}-forged", lease.id)),
        ..lease.clone()
    };

    let before = Snapshot::take(q, s, &job).await;
    assert_lease_lost(
        "settle() with a forged lease id",
        q.settle(&forged, all_delivered(&forged)).await,
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

    ok("settle()", q.settle(&lease, all_delivered(&lease)).await);
    let before = Snapshot::take(q, s, &job).await;
    assert_lease_lost(
        "a second settle() of a settled lease",
        q.settle(&lease, all_delivered(&lease)).await,
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
    ok("push", q.push(reader.next(2, 0, 0, true)).await);
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
    ok("settle() with a retry", q.settle(&lease, outcomes).await);

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
    ok("settle()", q.settle(&lease, all_delivered(&lease)).await);
    let r = report(s, &job).await;
    assert_eq!(
        (r.delivered, r.state),
        (2, JobState::Done),
        "once the retried message is delivered the job is Done"
    );
}
