//! Replays: dead letters back to ready, out of the dead counts.

use std::collections::BTreeMap;

use super::support::{
    all_delivered, assert_stats, claim, dead, delivered, lease_all, ok, outcome, report, stats,
    Counts, Reader, LONG,
};
use crate::{
    backend::{Lease, LineOutcome, OffsetStore, Queue, Settle},
    DeadKind, DeadReason, JobId, JobState, Message, MessageId,
};

/// The lease of `job`'s batch among `leases`.
#[track_caller]
fn lease_of<'a>(leases: &'a [Lease], job: &JobId) -> &'a Lease {
    match leases
        .iter()
        .find(|l| l.batch.messages.iter().any(|m| &m.id.job == job))
    {
        Some(lease) => lease,
        None => panic!("no leased batch holds messages of job {job}"),
    }
}

/// Asserts the leased messages are `expected` (by id, in any batch and
/// order) with their attempts reset to 0.
#[track_caller]
fn assert_replayed(leases: &[Lease], expected: &[&Message]) {
    let got: BTreeMap<&MessageId, &Message> = leases
        .iter()
        .flat_map(|l| l.batch.messages.iter().map(|m| (&m.id, m)))
        .collect();
    let total: usize = leases.iter().map(|l| l.batch.messages.len()).sum();
    let want: BTreeMap<&MessageId, &&Message> = expected.iter().map(|m| (&m.id, m)).collect();
    assert_eq!(
        (total, got.keys().collect::<Vec<_>>()),
        (expected.len(), want.keys().collect::<Vec<_>>()),
        "the replayed dead letters, each once, and nothing else must be leasable"
    );
    for (id, m) in got {
        let original = want[id];
        assert_eq!(
            (&m.user_id, &m.alert_message, m.attempts),
            (&original.user_id, &original.alert_message, 0),
            "a replayed message must keep its content and have its attempts reset to 0"
        );
    }
}

/// `replay(Some(job))` replays only that job's dead letters and returns how
/// many: they leave `dead`, `in_doubt` and `dead_letters`, their lines are
/// pending again (`outcome` is `None`), they are leasable with `attempts`
/// reset to 0, and the `Done` job is `Delivering` again. Other jobs keep
/// their dead letters.
pub async fn replay_of_one_job(q: &dyn Queue, s: &dyn OffsetStore) {
    let a = claim(s, "replay_of_one_job", 0).await;
    let b = claim(s, "replay_of_one_job", 1).await;
    ok("push", q.push(&Reader::new(&a).next(3, 0, 0, true)).await);
    ok("push", q.push(&Reader::new(&b).next(1, 0, 0, true)).await);
    let leases = lease_all(q, LONG).await;
    assert_eq!(leases.len(), 2, "two pushed batches must be leasable");

    let la = lease_of(&leases, &a);
    let ma = &la.batch.messages;
    let mut tried = ma[0].clone();
    tried.attempts = 3;
    tried.first_attempt_ms = Some(1);
    let outcomes = vec![
        Settle::Dead {
            message: tried,
            reason: DeadReason {
                kind: DeadKind::Exhausted,
                detail: "gave up after 3 attempts".into(),
            },
        },
        dead(&ma[1], DeadKind::InDoubt),
        delivered(&ma[2]),
    ];
    let receipt = match &outcomes[2] {
        Settle::Delivered { receipt, .. } => receipt.clone(),
        _ => unreachable!("delivered() makes Delivered outcomes"),
    };
    ok("settle()", q.settle(la, &outcomes).await);
    let lb = lease_of(&leases, &b);
    let outcomes = lb
        .batch
        .messages
        .iter()
        .map(|m| dead(m, DeadKind::Permanent))
        .collect::<Vec<_>>();
    ok("settle()", q.settle(lb, &outcomes).await);
    assert_eq!(report(s, &a).await.state, JobState::Done, "job a is Done");
    let b_before = report(s, &b).await;
    assert_eq!(b_before.state, JobState::Done, "job b is Done");
    assert_stats(stats(q).await, (0, 0, 0, 3), "with 3 dead letters");

    let replayed = ok("replay(Some(job))", q.replay(Some(&a)).await);
    assert_eq!(
        replayed, 2,
        "replay(Some(job)) must return how many letters it replayed"
    );
    let r = report(s, &a).await;
    assert_eq!(
        Counts::of(&r),
        Counts {
            lines: 3,
            delivered: 1,
            dead: 0,
            in_doubt: 0,
            invalid: 0,
            duplicate: 0,
        },
        "replay() must take the replayed letters out of dead and in_doubt"
    );
    assert_eq!(
        r.state,
        JobState::Delivering,
        "replay() must move a Done job back to Delivering"
    );
    assert_eq!(
        Counts::of(&report(s, &b).await),
        Counts::of(&b_before),
        "replay(Some(job)) must not touch other jobs' counts"
    );
    assert!(
        ok("dead_letters(a)", q.dead_letters(Some(&a), 10).await).is_empty(),
        "replayed letters must leave dead_letters()"
    );
    assert_eq!(
        ok("dead_letters(b)", q.dead_letters(Some(&b), 10).await).len(),
        1,
        "replay(Some(job)) must leave other jobs' dead letters"
    );
    for m in &ma[..2] {
        assert_eq!(
            outcome(s, &m.id).await,
            None,
            "outcome() of a replayed line must be None again"
        );
    }
    assert_eq!(
        outcome(s, &ma[2].id).await,
        Some(LineOutcome::Delivered { receipt }),
        "replay() must not touch delivered lines"
    );
    assert_stats(
        stats(q).await,
        (2, 0, 0, 1),
        "after replaying 2 of 3 dead letters",
    );

    let leases = lease_all(q, LONG).await;
    assert_replayed(&leases, &[&ma[0], &ma[1]]);
    for lease in &leases {
        ok("settle()", q.settle(lease, &all_delivered(lease)).await);
    }
    let r = report(s, &a).await;
    assert_eq!(
        (r.delivered, r.dead, r.state),
        (3, 0, JobState::Done),
        "replayed and delivered: the job is Done again"
    );
}

/// `replay(None)` replays every job's dead letters and returns how many; a
/// second replay finds nothing.
pub async fn replay_of_all_jobs(q: &dyn Queue, s: &dyn OffsetStore) {
    let a = claim(s, "replay_of_all_jobs", 0).await;
    let b = claim(s, "replay_of_all_jobs", 1).await;
    let pa = Reader::new(&a).next(2, 0, 0, true);
    let pb = Reader::new(&b).next(2, 1, 0, true);
    ok("push", q.push(&pa).await);
    ok("push", q.push(&pb).await);
    for lease in lease_all(q, LONG).await {
        let outcomes = lease
            .batch
            .messages
            .iter()
            .map(|m| {
                let kind = if m.id.line == 1 {
                    DeadKind::InDoubt
                } else {
                    DeadKind::Permanent
                };
                dead(m, kind)
            })
            .collect::<Vec<_>>();
        ok("settle()", q.settle(&lease, &outcomes).await);
    }
    assert_stats(stats(q).await, (0, 0, 0, 4), "with 4 dead letters");

    let replayed = ok("replay(None)", q.replay(None).await);
    assert_eq!(
        replayed, 4,
        "replay(None) must replay every job's dead letters"
    );
    for job in [&a, &b] {
        let r = report(s, job).await;
        assert_eq!(
            (r.dead, r.in_doubt, r.state),
            (0, 0, JobState::Delivering),
            "after replay(None) every job's dead letters are out of dead and in_doubt, and the job is Delivering"
        );
    }
    assert!(
        ok("dead_letters(None)", q.dead_letters(None, 10).await).is_empty(),
        "replay(None) must empty dead_letters()"
    );
    assert_stats(stats(q).await, (4, 0, 0, 0), "after replay(None)");
    assert_eq!(
        ok("second replay(None)", q.replay(None).await),
        0,
        "a replay with no dead letters must return 0"
    );

    let leases = lease_all(q, LONG).await;
    let expected: Vec<&Message> = pa.messages.iter().chain(&pb.messages).collect();
    assert_replayed(&leases, &expected);
    for lease in &leases {
        ok("settle()", q.settle(lease, &all_delivered(lease)).await);
    }
    for job in [&a, &b] {
        assert_eq!(
            report(s, job).await.state,
            JobState::Done,
            "delivered after replay: Done"
        );
    }
}
