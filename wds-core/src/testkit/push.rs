//! Pushes: messages, rejects and the checkpoint, applied together or not at all.

use super::support::{
    all_delivered, assert_batches, assert_stats, assert_unknown_job, claim, dead, line_id, ok, one,
    outcome, report, stats, Counts, Reader, Snapshot, LONG,
};
use crate::{
    backend::{LineOutcome, OffsetStore, Queue},
    DeadKind, Error, JobId, JobState,
};

/// A push at the job's checkpoint is applied whole: its messages become
/// leasable as one batch, the checkpoint is stored, the records are counted
/// (`lines`, `enqueued`, `invalid`, `duplicate`), the rejects are listed by
/// line and are the outcome of their lines, and `Pushed::depth` counts the
/// ready messages.
pub async fn push_applies_atomically(q: &dyn Queue, s: &dyn OffsetStore) {
    let job = claim(s, "push_applies_atomically", 0).await;
    let mut reader = Reader::new(&job);

    let first = reader.next(3, 1, 1, false);
    let pushed = ok("push", q.push(&first).await);
    assert!(
        pushed.applied,
        "a push at the job's checkpoint must be applied"
    );
    assert_eq!(
        pushed.depth, 3,
        "Pushed::depth must count the ready messages after the push"
    );
    assert_eq!(
        ok("checkpoint()", s.checkpoint(&job).await),
        first.next,
        "checkpoint() must return the checkpoint stored by the last applied push"
    );
    let r = report(s, &job).await;
    assert_eq!(
        r.state,
        JobState::Reading,
        "a job is Reading until a push with done"
    );
    assert_eq!(
        r.enqueued, 3,
        "report().enqueued must count the pushed messages"
    );
    assert_eq!(
        Counts::of(&r),
        Counts {
            lines: 5,
            delivered: 0,
            dead: 0,
            in_doubt: 0,
            invalid: 1,
            duplicate: 1,
        },
        "report() after a push of 3 messages, 1 invalid and 1 duplicate line"
    );
    assert_eq!(
        ok("rejects()", s.rejects(&job, 100).await),
        first.rejects,
        "rejects() must list the pushed rejects by line"
    );
    for reject in &first.rejects {
        assert_eq!(
            outcome(s, &line_id(&job, reject.line)).await,
            Some(LineOutcome::Rejected {
                kind: reject.kind.clone()
            }),
            "outcome() of a rejected line must be Rejected with its kind"
        );
    }
    for m in &first.messages {
        assert_eq!(
            outcome(s, &m.id).await,
            None,
            "outcome() of a pushed, undelivered message must be None"
        );
    }
    assert_stats(stats(q).await, (3, 0, 0, 0), "after a push of 3 messages");

    let lease = one(
        ok("lease()", q.lease(10, LONG).await),
        "lease after one push",
    );
    assert_batches(
        std::slice::from_ref(&lease),
        &[&first],
        "lease after one push",
    );
    assert!(
        !lease.previously_sending,
        "a batch never leased before must not be previously_sending"
    );
    assert_stats(stats(q).await, (0, 3, 0, 0), "after leasing the batch");

    // A second push adds to the first.
    let second = reader.next(2, 1, 0, false);
    let pushed = ok("second push", q.push(&second).await);
    assert!(pushed.applied, "the next push in sequence must be applied");
    assert_eq!(
        pushed.depth, 2,
        "Pushed::depth must count ready messages only, not leased ones"
    );
    assert_eq!(
        ok("checkpoint()", s.checkpoint(&job).await),
        second.next,
        "checkpoint() must return the checkpoint of the last applied push"
    );
    let mut all_rejects = first.rejects.clone();
    all_rejects.extend(second.rejects.iter().cloned());
    assert_eq!(
        ok("rejects()", s.rejects(&job, 100).await),
        all_rejects,
        "rejects() must list the rejects of every push, by line"
    );
    assert_eq!(
        ok("rejects(limit 1)", s.rejects(&job, 1).await),
        all_rejects[..1].to_vec(),
        "rejects() must return at most `limit` rejects, the first lines first"
    );
    let r = report(s, &job).await;
    assert_eq!(
        (r.lines, r.enqueued, r.invalid, r.duplicate),
        (8, 5, 2, 1),
        "report() must count the records of every applied push (lines, enqueued, invalid, duplicate)"
    );
}

/// Pushing a `seq` that was already applied (a batcher resuming after a
/// crash) returns `applied: false` and changes nothing: no message is
/// leasable twice, no count moves, `depth` still counts the ready messages.
pub async fn repush_changes_nothing(q: &dyn Queue, s: &dyn OffsetStore) {
    let job = claim(s, "repush_changes_nothing", 0).await;
    let mut reader = Reader::new(&job);
    let first = reader.next(2, 0, 0, false);
    ok("push 0", q.push(&first).await);
    // A worker already holds the first batch when the batcher re-pushes.
    let _held = one(ok("lease()", q.lease(10, LONG).await), "lease of push 0");
    let second = reader.next(2, 1, 1, false);
    ok("push 1", q.push(&second).await);

    let before = Snapshot::take(q, s, &job).await;
    for (name, push) in [("push 0", &first), ("push 1", &second)] {
        let again = ok(&format!("re-{name}"), q.push(push).await);
        assert!(
            !again.applied,
            "a push whose seq is below the checkpoint's must return applied: false"
        );
        assert_eq!(
            again.depth, 2,
            "Pushed::depth must count the ready messages after a re-push too"
        );
    }
    before
        .assert_unchanged(q, s, &job, "re-pushing an applied push")
        .await;

    let rest = ok("lease()", q.lease(10, LONG).await);
    assert_batches(&rest, &[&second], "lease after the re-pushes");
    let none = ok("lease()", q.lease(10, LONG).await);
    assert!(
        none.is_empty(),
        "a re-push must not enqueue its messages again, got {none:?}"
    );
}

/// A push whose `seq` is ahead of the checkpoint fails with
/// `Error::Conflict` (carrying the job, the push's seq and the current one)
/// and changes nothing; the push in sequence still applies afterwards.
pub async fn push_ahead_conflicts(q: &dyn Queue, s: &dyn OffsetStore) {
    let job = claim(s, "push_ahead_conflicts", 0).await;
    let mut reader = Reader::new(&job);
    ok("push 0", q.push(&reader.next(1, 0, 0, false)).await);

    let in_order = reader.next(2, 1, 0, false);
    let mut ahead = in_order.clone();
    ahead.next.seq += 1;
    let before = Snapshot::take(q, s, &job).await;
    match q.push(&ahead).await {
        Err(Error::Conflict {
            job: j,
            seq,
            current,
        }) => {
            assert_eq!(j, job, "Error::Conflict::job");
            assert_eq!(
                seq, 2,
                "Error::Conflict::seq must be the seq the push carried"
            );
            assert_eq!(current, 1, "Error::Conflict::current must be the job's seq");
        }
        other => panic!(
            "a push with seq 2 to a job at seq 1 must fail with Error::Conflict, got {other:?}"
        ),
    }
    before
        .assert_unchanged(q, s, &job, "a conflicting push")
        .await;

    let pushed = ok("the push in sequence", q.push(&in_order).await);
    assert!(
        pushed.applied,
        "after a conflict the push in sequence must still apply"
    );
    assert_eq!(
        ok("checkpoint()", s.checkpoint(&job).await),
        in_order.next,
        "checkpoint() after the push in sequence"
    );
}

/// A job is `Reading` until a push with `done` is applied, even when every
/// line read so far is accounted for; then `Delivering`; then `Done`, with
/// `finished_ms`, once `delivered + dead + invalid + duplicate == lines`
/// (at once if the last push leaves nothing to deliver).
pub async fn job_state_follows_reading_and_accounting(q: &dyn Queue, s: &dyn OffsetStore) {
    const CHECK: &str = "job_state_follows_reading_and_accounting";
    let job = claim(s, CHECK, 0).await;
    let mut reader = Reader::new(&job);
    ok("push 0", q.push(&reader.next(2, 1, 0, false)).await);
    let lease = one(ok("lease()", q.lease(10, LONG).await), "lease of push 0");
    ok("settle", q.settle(&lease, &all_delivered(&lease)).await);
    let r = report(s, &job).await;
    assert_eq!(
        (r.state, r.accounted(), r.lines),
        (JobState::Reading, 3, 3),
        "a job must stay Reading until a push with done, even when every line read so far is accounted for"
    );
    assert_eq!(r.finished_ms, None, "a Reading job has no finish time");

    ok("final push", q.push(&reader.next(1, 0, 1, true)).await);
    let r = report(s, &job).await;
    assert_eq!(
        r.state,
        JobState::Delivering,
        "after the push with done, a job with undelivered messages must be Delivering"
    );
    assert_eq!(r.finished_ms, None, "a Delivering job has no finish time");
    assert!(
        ok("checkpoint()", s.checkpoint(&job).await).done,
        "the checkpoint of the final push must be done"
    );

    let lease = one(
        ok("lease()", q.lease(10, LONG).await),
        "lease of the final push",
    );
    let outcomes = lease
        .batch
        .messages
        .iter()
        .map(|m| dead(m, DeadKind::Exhausted))
        .collect::<Vec<_>>();
    ok("settle", q.settle(&lease, &outcomes).await);
    let r = report(s, &job).await;
    assert_eq!(
        Counts::of(&r),
        Counts {
            lines: 5,
            delivered: 2,
            dead: 1,
            in_doubt: 0,
            invalid: 1,
            duplicate: 1,
        },
        "report() once every line is accounted for"
    );
    assert_eq!(
        r.state,
        JobState::Done,
        "a read job must be Done once delivered + dead + invalid + duplicate == lines"
    );
    assert!(r.finished_ms.is_some(), "a Done job must have finished_ms");
    assert!(r.is_complete(), "a Done job must be complete");

    // The last push may carry no lines at all.
    let job = claim(s, CHECK, 1).await;
    let mut reader = Reader::new(&job);
    ok("push 0", q.push(&reader.next(1, 0, 0, false)).await);
    let lease = one(ok("lease()", q.lease(10, LONG).await), "lease of push 0");
    ok("settle", q.settle(&lease, &all_delivered(&lease)).await);
    let last = ok(
        "empty final push",
        q.push(&reader.next(0, 0, 0, true)).await,
    );
    assert!(last.applied, "an empty final push must be applied");
    let r = report(s, &job).await;
    assert_eq!(
        (r.state, r.finished_ms.is_some()),
        (JobState::Done, true),
        "a job whose last (empty) push leaves every line accounted for must be Done with finished_ms"
    );

    // A file of rejects only is done as soon as it is read.
    let job = claim(s, CHECK, 2).await;
    let mut reader = Reader::new(&job);
    ok("push of rejects", q.push(&reader.next(0, 2, 1, true)).await);
    let r = report(s, &job).await;
    assert_eq!(
        (
            r.state,
            r.lines,
            r.invalid,
            r.duplicate,
            r.finished_ms.is_some()
        ),
        (JobState::Done, 3, 2, 1, true),
        "a job of rejected lines only must be Done with finished_ms once its final push is applied"
    );
    let none = ok("lease()", q.lease(10, LONG).await);
    assert!(
        none.is_empty(),
        "a push without messages must not make a batch, got {none:?}"
    );
}

/// `push_all` applies pushes in order as `push` would: all of a run in
/// sequence; a re-push of applied ones changes nothing (each
/// `applied: false`) while the fresh ones after them apply; and it stops
/// with `Error::Conflict` at the first push ahead of the checkpoint,
/// leaving the ones before it applied.
pub async fn push_all_applies_in_order(q: &dyn Queue, s: &dyn OffsetStore) {
    let job = claim(s, "push_all_applies_in_order", 0).await;
    let mut reader = Reader::new(&job);
    let run: Vec<_> = (0..3).map(|_| reader.next(2, 1, 0, false)).collect();
    let pushed = ok("push_all() of 3 pushes", q.push_all(&run).await);
    assert_eq!(
        pushed
            .iter()
            .map(|p| (p.applied, p.depth))
            .collect::<Vec<_>>(),
        vec![(true, 2), (true, 4), (true, 6)],
        "push_all() must apply each push in order, each Pushed::depth counting up to it"
    );
    assert_eq!(
        ok("checkpoint()", s.checkpoint(&job).await),
        run[2].next,
        "the checkpoint is the last push's"
    );
    let r = report(s, &job).await;
    assert_eq!(
        (r.enqueued, r.invalid, r.lines),
        (6, 3, 9),
        "push_all() counts every push's records"
    );

    let fresh = reader.next(1, 0, 0, false);
    let mut again = run.clone();
    again.push(fresh.clone());
    let pushed = ok(
        "push_all() of 3 applied pushes and a fresh one",
        q.push_all(&again).await,
    );
    assert_eq!(
        pushed.iter().map(|p| p.applied).collect::<Vec<_>>(),
        vec![false, false, false, true],
        "re-pushes are not applied again; the fresh push after them is"
    );
    assert_eq!(
        report(s, &job).await.enqueued,
        7,
        "only the fresh push counts"
    );

    let next = reader.next(1, 0, 0, false);
    let skipped = reader.next(1, 0, 0, false);
    let ahead = reader.next(1, 0, 0, true);
    match q.push_all(&[next.clone(), ahead.clone()]).await {
        Err(Error::Conflict { seq, current, .. }) => assert_eq!(
            (seq, current),
            (ahead.seq(), next.next.seq),
            "the conflict names the push ahead and the checkpoint the push before it left"
        ),
        other => panic!("push_all() with a push ahead must fail with Conflict, got {other:?}"),
    }
    assert_eq!(
        ok("checkpoint()", s.checkpoint(&job).await),
        next.next,
        "the push before the conflicting one stays applied"
    );
    let pushed = ok(
        "push_all() of the rest, in sequence",
        q.push_all(&[skipped, ahead.clone()]).await,
    );
    assert!(pushed.iter().all(|p| p.applied));
    let mut batches = Vec::new();
    loop {
        let leases = ok("lease()", q.lease(10, LONG).await);
        if leases.is_empty() {
            break;
        }
        batches.extend(leases);
    }
    assert_eq!(
        batches
            .iter()
            .map(|l| l.batch.messages.len())
            .collect::<Vec<_>>(),
        vec![2, 2, 2, 1, 1, 1, 1],
        "each push is leased as one batch, in push order"
    );
    for lease in &batches {
        ok("settle()", q.settle(lease, &all_delivered(lease)).await);
    }
    let r = report(s, &job).await;
    assert_eq!(
        (r.delivered, r.state),
        (10, JobState::Done),
        "every record of every push accounted for"
    );
}

/// `fail` ends a job's reading for good: the checkpoint is `done` with its
/// `seq` one higher (a push with the old `seq` is stale), the state is
/// `Failed` with the first reason from then on, the lines read stay
/// counted and their messages are still delivered, `finished_ms` comes once
/// they are all accounted for; failing a fully read job changes nothing.
pub async fn fail_ends_reading_for_good(q: &dyn Queue, s: &dyn OffsetStore) {
    const CHECK: &str = "fail_ends_reading_for_good";
    let job = claim(s, CHECK, 0).await;
    let mut reader = Reader::new(&job);
    ok("push 0", q.push(&reader.next(2, 1, 0, false)).await);
    let before = ok("checkpoint()", s.checkpoint(&job).await);
    let r = ok("fail()", s.fail(&job, "the file was truncated").await);
    assert_eq!(
        (
            r.state,
            r.failure.as_deref(),
            r.lines,
            r.enqueued,
            r.invalid
        ),
        (JobState::Failed, Some("the file was truncated"), 3, 2, 1),
        "fail() must answer the Failed report with the reason, keeping the lines read"
    );
    assert_eq!(r.finished_ms, None, "messages are still to deliver");
    let after = ok("checkpoint()", s.checkpoint(&job).await);
    assert!(after.done, "a failed job's checkpoint must be done");
    assert_eq!(after.seq, before.seq + 1, "fail() must raise seq by one");
    assert_eq!(
        (after.records, after.byte, after.line),
        (before.records, before.byte, before.line),
        "fail() must keep where reading stopped"
    );
    let stale = ok(
        "push after fail",
        q.push(&reader.next(1, 0, 0, false)).await,
    );
    assert!(
        !stale.applied,
        "a push with the seq before fail() must be stale"
    );
    let again = ok("second fail()", s.fail(&job, "another reason").await);
    assert_eq!(
        again.failure.as_deref(),
        Some("the file was truncated"),
        "a second fail() must keep the first reason"
    );

    let lease = one(ok("lease()", q.lease(10, LONG).await), "lease of push 0");
    ok("settle", q.settle(&lease, &all_delivered(&lease)).await);
    let r = report(s, &job).await;
    assert_eq!(
        (r.state, r.delivered, r.accounted(), r.lines),
        (JobState::Failed, 2, 3, 3),
        "a failed job keeps counting its settles and stays Failed"
    );
    assert!(
        r.finished_ms.is_some(),
        "finished once every line read is accounted for"
    );
    assert!(r.is_finished() && !r.is_complete());
    let listed = ok("reports()", s.reports().await);
    assert!(
        listed
            .iter()
            .any(|l| l.job == job && l.state == JobState::Failed && l.failure == r.failure),
        "reports() must show the failure too"
    );

    // A fully read job is finished, not failed.
    let job = claim(s, CHECK, 1).await;
    let mut reader = Reader::new(&job);
    ok("final push", q.push(&reader.next(0, 1, 0, true)).await);
    let r = ok("fail() of a read job", s.fail(&job, "too late").await);
    assert_eq!(
        (r.state, r.failure),
        (JobState::Done, None),
        "fail() of a job already fully read must change nothing"
    );
    let unknown = JobId::new(format!("{CHECK}-never-claimed"));
    assert_unknown_job("fail() of an unknown job", s.fail(&unknown, "x").await);
}
