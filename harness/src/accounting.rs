//! Checks of the guarantees over a finished job, and the files the tests feed it.

use wds_core::{
    backend::{LineOutcome, OffsetStore},
    DeadKind, JobReport, MessageId,
};

/// Line-by-line accounting of a finished job (guarantee G2).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Accounting {
    /// Lines delivered.
    pub delivered: u64,
    /// Lines dead, all kinds.
    pub dead: u64,
    /// Of `dead`, in doubt.
    pub in_doubt: u64,
    /// Lines rejected (invalid or duplicate).
    pub rejected: u64,
    /// Record lines with no outcome at all (must be 0).
    pub missing: Vec<u64>,
}

/// Asks the store for the outcome of each of `lines` and checks that the
/// report's counters agree with the per-line outcomes.
pub async fn account(
    offsets: &dyn OffsetStore,
    report: &JobReport,
    lines: impl IntoIterator<Item = u64>,
) -> Accounting {
    let mut acc = Accounting::default();
    for line in lines {
        let id = MessageId {
            job: report.job.clone(),
            line,
        };
        match offsets.outcome(&id).await.expect("outcome") {
            Some(LineOutcome::Delivered { .. }) => acc.delivered += 1,
            Some(LineOutcome::Dead { reason }) => {
                acc.dead += 1;
                if reason.kind == DeadKind::InDoubt {
                    acc.in_doubt += 1;
                }
            }
            Some(LineOutcome::Rejected { .. }) => acc.rejected += 1,
            None => acc.missing.push(line),
        }
    }
    assert!(
        acc.missing.is_empty(),
        "lines with no terminal state: {:?}",
        acc.missing
    );
    assert_eq!(
        report.accounted(),
        report.lines,
        "G2 sum broken: {report:?}"
    );
    assert_eq!(
        acc.delivered, report.delivered,
        "delivered count vs outcomes: {report:?}"
    );
    assert_eq!(acc.dead, report.dead, "dead count vs outcomes: {report:?}");
    assert_eq!(
        acc.in_doubt, report.in_doubt,
        "in-doubt count vs outcomes: {report:?}"
    );
    assert_eq!(
        acc.rejected,
        report.invalid + report.duplicate,
        "rejected count vs outcomes: {report:?}"
    );
    acc
}

/// A CSV file body of `n` distinct users, one per line (lines 1..=n).
pub fn users_csv(n: usize) -> Vec<u8> {
    let mut s = String::with_capacity(n * 32);
    for i in 1..=n {
        s.push_str(&format!("user-{i},Your alert number {i}\n"));
    }
    s.into_bytes()
}
