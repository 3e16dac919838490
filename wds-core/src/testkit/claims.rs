//! Claims: one job per input identity, whoever asks and however often.

use std::collections::HashSet;
use std::time::Duration;

use futures::future::join_all;

use super::support::{
    assert_unknown_job, claim, identity, line_id, meta, ok, outcome, report, Reader, Snapshot, LONG,
};
use crate::{
    backend::{Checkpoint, OffsetStore, Queue},
    Format, JobId, JobState,
};

/// Claiming one identity twice gives the same job: the first claim is
/// `fresh`, the second is not, and both carry the first claim's metadata.
/// A new job is `Reading`, with no counts and the default checkpoint.
pub async fn claim_creates_a_job_once(_q: &dyn Queue, s: &dyn OffsetStore) {
    let identity = identity("claim_creates_a_job_once", 0);
    let first_meta = meta("first.csv");
    let first = ok("first claim", s.claim(&identity, first_meta.clone()).await);
    assert!(first.fresh, "the first claim of an identity must be fresh");
    assert_eq!(
        first.meta, first_meta,
        "a fresh claim must return the metadata it was given"
    );

    let mut later_meta = meta("second.jsonl");
    later_meta.format = Format::JsonLines;
    later_meta.default_message = Some("another message".into());
    later_meta.created_ms += 1_000;
    let second = ok("second claim", s.claim(&identity, later_meta).await);
    assert!(
        !second.fresh,
        "a second claim of an identity must not be fresh"
    );
    assert_eq!(
        second.job, first.job,
        "claims of one identity must return the same job id"
    );
    assert_eq!(
        second.meta, first_meta,
        "a later claim must return the metadata of the first claim, not its own"
    );

    let report = report(s, &first.job).await;
    assert_eq!(report.job, first.job, "report().job");
    assert_eq!(
        report.meta, first_meta,
        "report().meta must be the first claim's metadata"
    );
    assert_eq!(report.state, JobState::Reading, "a new job must be Reading");
    assert_eq!(
        (
            report.lines,
            report.enqueued,
            report.accounted(),
            report.finished_ms
        ),
        (0, 0, 0, None),
        "a new job must have no lines, no counts and no finish time"
    );
    assert_eq!(
        ok("checkpoint()", s.checkpoint(&first.job).await),
        Checkpoint::default(),
        "checkpoint() must return the default checkpoint before any push"
    );
    assert_eq!(
        ok("rejects()", s.rejects(&first.job, 10).await),
        Vec::new(),
        "a new job has no rejects"
    );
    assert_eq!(
        outcome(s, &line_id(&first.job, 1)).await,
        None,
        "outcome() of a line not yet read must be None"
    );
}

/// Different identities make different jobs, and `reports()` lists every
/// job, newest first.
pub async fn claims_of_different_identities_differ(_q: &dyn Queue, s: &dyn OffsetStore) {
    let mut jobs = Vec::new();
    for n in 0..3 {
        jobs.push(claim(s, "claims_of_different_identities_differ", n).await);
        // Distinct creation times, so "newest" means the same by any clock.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let distinct: HashSet<&JobId> = jobs.iter().collect();
    assert_eq!(
        distinct.len(),
        jobs.len(),
        "different identities must make different jobs, got {jobs:?}"
    );

    let listed: Vec<JobId> = ok("reports()", s.reports().await)
        .into_iter()
        .map(|r| r.job)
        .filter(|j| distinct.contains(j))
        .collect();
    let newest_first: Vec<JobId> = jobs.iter().rev().cloned().collect();
    assert_eq!(
        listed, newest_first,
        "reports() must list every job once, newest first"
    );
}

/// Of many concurrent claims of one identity exactly one is `fresh`, and all
/// return the same job and the metadata of that fresh claim.
pub async fn concurrent_claims_make_one_job(_q: &dyn Queue, s: &dyn OffsetStore) {
    const CLAIMS: usize = 32;
    let identity = identity("concurrent_claims_make_one_job", 0);
    let metas: Vec<_> = (0..CLAIMS)
        .map(|n| meta(&format!("copy-{n}.csv")))
        .collect();
    let claims = join_all(metas.iter().map(|m| s.claim(&identity, m.clone()))).await;
    let claims: Vec<_> = claims
        .into_iter()
        .map(|c| ok("concurrent claim", c))
        .collect();

    let fresh: Vec<usize> = (0..CLAIMS).filter(|&i| claims[i].fresh).collect();
    assert_eq!(
        fresh.len(),
        1,
        "exactly one of {CLAIMS} concurrent claims of one identity must be fresh, got {}",
        fresh.len()
    );
    let winner = &claims[fresh[0]];
    assert_eq!(
        winner.meta, metas[fresh[0]],
        "the fresh claim must return its own metadata"
    );
    for c in &claims {
        assert_eq!(
            c.job, winner.job,
            "concurrent claims of one identity must return the same job"
        );
        assert_eq!(
            c.meta, winner.meta,
            "concurrent claims of one identity must all return the fresh claim's metadata"
        );
    }
    let again = ok(
        "claim after the race",
        s.claim(&identity, meta("late.csv")).await,
    );
    assert!(
        !again.fresh && again.job == winner.job,
        "a claim after the race must return the same job, not fresh"
    );
}

/// A job that was never claimed: `checkpoint`, `outcome` and `rejects` fail
/// with `UnknownJob`, `report` answers `None`, and a push to it fails and
/// changes nothing.
pub async fn unknown_jobs_are_refused(q: &dyn Queue, s: &dyn OffsetStore) {
    let job = JobId::new(format!("never-claimed-{:016x}", fastrand::u64(..)));
    assert_eq!(
        ok("report() of an unknown job", s.report(&job).await),
        None,
        "report() of a job that was never claimed must be None"
    );
    assert_unknown_job("checkpoint() of an unknown job", s.checkpoint(&job).await);
    assert_unknown_job(
        "outcome() of an unknown job",
        s.outcome(&line_id(&job, 1)).await,
    );
    assert_unknown_job("rejects() of an unknown job", s.rejects(&job, 10).await);

    let before = Snapshot::take(q, s, &job).await;
    let mut reader = Reader::new(&job);
    let push = reader.next(2, 1, 0, true);
    let pushed = q.push(&push).await;
    assert!(
        pushed.is_err(),
        "a push to a job that was never claimed must fail, got {pushed:?}"
    );
    before
        .assert_unchanged(q, s, &job, "a push to an unclaimed job")
        .await;
    let leased = ok("lease()", q.lease(10, LONG).await);
    assert!(
        leased.is_empty(),
        "messages of a refused push must not be leasable, got {leased:?}"
    );
}
