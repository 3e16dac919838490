//! Job control (pause, resume, cancel, replay by kind) and fair leasing.

use super::support::{claim, dead, delivered, ok, one, report, stats, Reader, LONG};
use crate::{
    backend::{now_ms, JobControl, Lease, OffsetStore, Queue, Settle},
    DeadKind, Error, JobId, JobState, Result,
};

/// Asserts a call was refused with [`Error::IllegalTransition`].
#[track_caller]
fn assert_illegal<T: std::fmt::Debug>(what: &str, result: Result<T>) {
    match result {
        Err(Error::IllegalTransition { .. }) => {}
        other => panic!("{what} must fail with Error::IllegalTransition, got {other:?}"),
    }
}

/// The job a leased batch belongs to.
fn job_of(lease: &Lease) -> &JobId {
    &lease.batch.messages[0].id.job
}

/// `lease` takes ready batches round-robin across jobs: with three batches
/// of job A pushed before one of job B, the second batch leased is B's, and
/// A's come in push order.
pub async fn lease_takes_jobs_in_turn(q: &dyn Queue, s: &dyn OffsetStore) {
    jobs_in_turn(q, s, true).await;
}

/// As [`lease_takes_jobs_in_turn`], for a backend that spreads jobs over
/// shards and leases from them in turn (see [`super::run_all_sharded`]):
/// B's batch is among the first two leased, so A's backlog does not hold it
/// back, and A's come in push order; which of the two goes first is not
/// checked, since they may be on different shards.
pub async fn lease_takes_jobs_in_turn_across_shards(q: &dyn Queue, s: &dyn OffsetStore) {
    jobs_in_turn(q, s, false).await;
}

async fn jobs_in_turn(q: &dyn Queue, s: &dyn OffsetStore, exact: bool) {
    let a = claim(s, "lease_takes_jobs_in_turn", 0).await;
    let b = claim(s, "lease_takes_jobs_in_turn", 1).await;
    let mut ra = Reader::new(&a);
    let pushes_a = [
        ra.next(2, 0, 0, false),
        ra.next(2, 0, 0, false),
        ra.next(2, 0, 0, true),
    ];
    for p in &pushes_a {
        ok("push", q.push(p).await);
    }
    ok("push", q.push(&Reader::new(&b).next(1, 0, 0, true)).await);
    let mut order = Vec::new();
    for _ in 0..4 {
        let lease = one(ok("lease(1)", q.lease(1, LONG).await), "lease(1)");
        order.push((job_of(&lease).clone(), lease.batch.messages[0].id.line));
    }
    let expected = vec![
        (a.clone(), 1),
        (b.clone(), 1),
        (a.clone(), 3),
        (a.clone(), 5),
    ];
    if exact {
        assert_eq!(
            order, expected,
            "lease(1) four times must take A's first batch, then B's (a job in turn, \
             not push order), then A's others in push order"
        );
        return;
    }
    let b_at = order.iter().position(|(job, _)| job == &b);
    let of_a: Vec<_> = order.iter().filter(|(job, _)| job == &a).cloned().collect();
    assert!(
        matches!(b_at, Some(0 | 1))
            && of_a
                == expected[..1]
                    .iter()
                    .chain(&expected[2..])
                    .cloned()
                    .collect::<Vec<_>>(),
        "lease(1) four times must take B's batch first or second (a job in turn, \
         not behind A's backlog), and A's in push order; got {order:?}"
    );
}

/// `pause` keeps a job's ready batches from being leased (another job's
/// are leased meanwhile), its report says `Paused`, a batch leased before
/// the pause settles as usual, and `resume` makes the rest leasable.
pub async fn pause_holds_batches_until_resume(
    q: &dyn Queue,
    s: &dyn OffsetStore,
    c: &dyn JobControl,
) {
    let a = claim(s, "pause_holds_batches_until_resume", 0).await;
    let b = claim(s, "pause_holds_batches_until_resume", 1).await;
    let mut ra = Reader::new(&a);
    ok("push", q.push(&ra.next(2, 0, 0, false)).await);
    ok("push", q.push(&ra.next(2, 0, 0, false)).await);
    let first = one(ok("lease(1)", q.lease(1, LONG).await), "lease(1)");
    assert_eq!(job_of(&first), &a, "A's batch was the only one ready");
    let paused = ok("pause", c.pause(&a).await);
    assert_eq!(paused.state, JobState::Paused, "pause's report");
    assert_eq!(
        report(s, &a).await.state,
        JobState::Paused,
        "report after pause"
    );
    ok("pause again", c.pause(&a).await);
    ok("push", q.push(&Reader::new(&b).next(1, 0, 0, true)).await);
    let leased = ok("lease(10)", q.lease(10, LONG).await);
    assert!(
        leased.iter().all(|l| job_of(l) == &b) && leased.len() == 1,
        "while A is paused only B's batch may be leased, got {:?}",
        leased.iter().map(|l| &l.batch.id).collect::<Vec<_>>()
    );
    let outcomes: Vec<Settle> = first.batch.messages.iter().map(delivered).collect();
    ok(
        "settle of a batch leased before the pause",
        q.settle(&first, &outcomes).await,
    );
    assert_eq!(report(s, &a).await.delivered, 2, "the leased batch settles");
    assert!(
        ok("lease(10)", q.lease(10, LONG).await).is_empty(),
        "a paused job's batch must not be leased"
    );
    let resumed = ok("resume", c.resume(&a).await);
    assert_eq!(resumed.state, JobState::Reading, "resume's report");
    let again = one(
        ok("lease(10)", q.lease(10, LONG).await),
        "lease after resume",
    );
    assert_eq!(
        (job_of(&again), again.batch.messages[0].id.line),
        (&a, 3),
        "after resume A's second batch is leasable"
    );
}

/// `cancel` ends reading (a later push is stale), counts the ready and
/// scheduled messages as cancelled, and later retries and releases of the
/// job's leased batches too; a batch leased at the time settles as usual;
/// the job ends `Cancelled` with every line accounted for; pause and resume
/// are then refused and a second cancel changes nothing.
pub async fn cancel_accounts_for_every_line(
    q: &dyn Queue,
    s: &dyn OffsetStore,
    c: &dyn JobControl,
) {
    let a = claim(s, "cancel_accounts_for_every_line", 0).await;
    let mut ra = Reader::new(&a);
    ok("push", q.push(&ra.next(2, 1, 0, false)).await);
    for _ in 0..3 {
        ok("push", q.push(&ra.next(2, 0, 0, false)).await);
    }
    let leases = ok("lease(3)", q.lease(3, LONG).await);
    assert_eq!(leases.len(), 3, "three of A's four batches are leasable");
    let retried: Vec<Settle> = leases[1]
        .batch
        .messages
        .iter()
        .map(|m| Settle::Retry {
            message: m.clone(),
            at_ms: now_ms() + 60_000,
        })
        .collect();
    ok("settle as retry", q.settle(&leases[1], &retried).await);
    ok("mark_sending", q.mark_sending(&leases[0]).await);

    let cancelled = ok("cancel", c.cancel(&a).await);
    assert_eq!(cancelled.state, JobState::Cancelled, "cancel's report");
    assert_eq!(
        (cancelled.lines, cancelled.cancelled),
        (9, 4),
        "cancel counts the ready batch and the scheduled retries (4 lines) of 9 read"
    );
    let late = ra.next(2, 0, 0, true);
    let pushed = ok("push after cancel", q.push(&late).await);
    assert!(
        !pushed.applied,
        "a push after cancel must be refused as stale"
    );
    assert!(
        ok("lease(10)", q.lease(10, LONG).await).is_empty(),
        "nothing of a cancelled job is leased"
    );
    let st = stats(q).await;
    assert_eq!(
        (st.ready, st.scheduled),
        (0, 0),
        "cancel empties the job's queue"
    );

    ok("release", q.release(&leases[2]).await);
    let outcomes: Vec<Settle> = leases[0].batch.messages.iter().map(delivered).collect();
    ok(
        "settle of a batch leased before cancel",
        q.settle(&leases[0], &outcomes).await,
    );
    let done = report(s, &a).await;
    assert_eq!(
        (
            done.state,
            done.delivered,
            done.invalid,
            done.cancelled,
            done.lines
        ),
        (JobState::Cancelled, 2, 1, 6, 9),
        "the sending batch is delivered, the released one cancelled"
    );
    assert_eq!(done.accounted(), done.lines, "G2: every line accounted for");
    assert!(
        done.is_finished(),
        "a cancelled job with every line accounted is finished"
    );
    assert!(
        done.finished_ms.is_some(),
        "finished_ms once every line is accounted"
    );
    assert!(
        ok("lease(10)", q.lease(10, LONG).await).is_empty(),
        "a released batch of a cancelled job is not leased again"
    );

    assert_illegal("resume of a cancelled job", c.resume(&a).await);
    assert_illegal("pause of a cancelled job", c.pause(&a).await);
    let again = ok("cancel again", c.cancel(&a).await);
    assert_eq!(again.cancelled, 6, "a second cancel changes nothing");
}

/// A finished job refuses pause, resume and cancel; an unknown job is
/// `UnknownJob`.
pub async fn finished_job_refuses_control(q: &dyn Queue, s: &dyn OffsetStore, c: &dyn JobControl) {
    let a = claim(s, "finished_job_refuses_control", 0).await;
    ok("push", q.push(&Reader::new(&a).next(0, 2, 0, true)).await);
    assert_eq!(
        report(s, &a).await.state,
        JobState::Done,
        "an all-invalid job is done"
    );
    assert_illegal("pause of a done job", c.pause(&a).await);
    assert_illegal("resume of a done job", c.resume(&a).await);
    assert_illegal("cancel of a done job", c.cancel(&a).await);
    let unknown = JobId::new("finished_job_refuses_control-unknown");
    match c.pause(&unknown).await {
        Err(Error::UnknownJob { .. }) => {}
        other => panic!("pause of an unknown job must be UnknownJob, got {other:?}"),
    }
}

/// `replay_kind` replays only the dead letters of that kind; a cancelled
/// job's dead letters stay dead even for `replay`.
pub async fn replay_kind_replays_one_kind(q: &dyn Queue, s: &dyn OffsetStore, c: &dyn JobControl) {
    let a = claim(s, "replay_kind_replays_one_kind", 0).await;
    ok("push", q.push(&Reader::new(&a).next(3, 0, 0, true)).await);
    let lease = one(ok("lease", q.lease(1, LONG).await), "lease");
    let m = &lease.batch.messages;
    let outcomes = [
        dead(&m[0], DeadKind::Exhausted),
        dead(&m[1], DeadKind::InDoubt),
        dead(&m[2], DeadKind::Permanent),
    ];
    ok("settle", q.settle(&lease, &outcomes).await);
    assert_eq!(
        ok(
            "replay_kind(in_doubt)",
            c.replay_kind(&a, DeadKind::InDoubt).await
        ),
        1
    );
    let r = report(s, &a).await;
    assert_eq!(
        (r.dead, r.in_doubt),
        (2, 0),
        "only the in-doubt letter left dead"
    );
    let left = ok("dead_letters", q.dead_letters(Some(&a), 10).await);
    let mut kinds: Vec<&str> = left.iter().map(|d| d.reason.kind.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["exhausted", "permanent"],
        "the other kinds stay dead"
    );
    let replayed = one(ok("lease", q.lease(10, LONG).await), "the replayed batch");
    assert_eq!(replayed.batch.messages.len(), 1, "one message replayed");
    assert_eq!(replayed.batch.messages[0].id, m[1].id, "the in-doubt line");

    let cancelled = ok("cancel", c.cancel(&a).await);
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(
        ok("replay of a cancelled job", q.replay(Some(&a)).await),
        0,
        "a cancelled job's dead letters stay dead"
    );
    assert_eq!(
        ok(
            "replay_kind of a cancelled job",
            c.replay_kind(&a, DeadKind::Exhausted).await
        ),
        0
    );
    assert_eq!(report(s, &a).await.dead, 2);
}
