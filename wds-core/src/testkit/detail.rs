//! Bounded detail: a job's first rejects and dead letters in detail, the
//! rest by kind only, every count exact.

use super::support::{
    claim, dead, dead_by_reason, delivered, lease_all, line_id, ok, outcome, report, Counts,
    Reader, LONG,
};
use crate::{
    backend::{
        LineOutcome, OffsetStore, Queue, Reject, RejectKind, Settle, DEFAULT_DETAIL_LIMIT,
        DETAIL_NOT_KEPT,
    },
    DeadKind, DeadLetter,
};

/// The dead letters of `job` kept in detail, and those not.
fn split_detail(letters: &[DeadLetter]) -> (usize, usize) {
    let not_kept = letters
        .iter()
        .filter(|d| d.reason.detail == DETAIL_NOT_KEPT)
        .count();
    (letters.len() - not_kept, not_kept)
}

/// A backend with the default detail limit *N* ([`DEFAULT_DETAIL_LIMIT`])
/// keeps a job's first *N* rejects in detail and, while the job has fewer
/// than *N* dead letters, each new dead letter's detail. Past that every
/// count stays exact (rejects by kind, dead letters by reason:
/// `permanent`, `exhausted`, `in_doubt`), `rejects` returns only the *N* kept, the outcome of a
/// line not kept is `Invalid { reason: DETAIL_NOT_KEPT }`, `Duplicate {
/// of_line: 0 }` or `Dead` with the detail [`DETAIL_NOT_KEPT`], a dead
/// letter keeps its whole message and replays, a delivered line keeps its
/// receipt, and a replay gives dead-letter room back.
///
/// The backend under test MUST use the default detail limit.
pub async fn detail_is_bounded_and_counts_stay_exact(q: &dyn Queue, s: &dyn OffsetStore) {
    const N: u64 = DEFAULT_DETAIL_LIMIT as u64;
    let job = claim(s, "detail_is_bounded_and_counts_stay_exact", 0).await;
    let mut reader = Reader::new(&job);
    // N - 5 rejects (two of them duplicates), then N - 2 messages, then 22
    // messages with 20 rejects (5 of them still kept), then 5 more rejects.
    let pushes = [
        reader.next(0, N - 7, 2, false),
        reader.next(N - 2, 0, 0, false),
        reader.next(22, 10, 10, false),
        reader.next(0, 3, 2, true),
    ];
    for push in &pushes {
        ok("push", q.push(push).await);
    }
    let all_rejects: Vec<&Reject> = pushes.iter().flat_map(|p| &p.rejects).collect();
    let kept: Vec<Reject> = all_rejects
        .iter()
        .take(N as usize)
        .map(|r| (*r).clone())
        .collect();
    let invalid = all_rejects
        .iter()
        .filter(|r| matches!(r.kind, RejectKind::Invalid { .. }))
        .count() as u64;
    let duplicate = all_rejects.len() as u64 - invalid;

    let got = ok(
        "rejects(job, usize::MAX)",
        s.rejects(&job, usize::MAX).await,
    );
    assert_eq!(
        got.len(),
        kept.len(),
        "rejects() must return only the job's first {N} rejects, kept in detail \
         ({} were pushed)",
        all_rejects.len()
    );
    assert_eq!(
        got, kept,
        "rejects() must return the job's first {N} rejects as pushed"
    );
    assert_eq!(
        ok("rejects(job, 7)", s.rejects(&job, 7).await),
        kept[..7].to_vec(),
        "rejects(job, 7) must return the first 7"
    );
    for r in kept.iter().take(3).chain(kept.last()) {
        assert_eq!(
            outcome(s, &line_id(&job, r.line)).await,
            Some(LineOutcome::Rejected {
                kind: r.kind.clone()
            }),
            "the outcome of line {}, rejected within the first {N}, must keep its detail",
            r.line
        );
    }
    for r in all_rejects.iter().skip(N as usize) {
        let expected = match r.kind {
            RejectKind::Invalid { .. } => RejectKind::Invalid {
                reason: DETAIL_NOT_KEPT.into(),
            },
            RejectKind::Duplicate { .. } => RejectKind::Duplicate { of_line: 0 },
        };
        assert_eq!(
            outcome(s, &line_id(&job, r.line)).await,
            Some(LineOutcome::Rejected { kind: expected }),
            "the outcome of line {}, rejected past the first {N}, must keep its kind \
             and say its detail was not kept",
            r.line
        );
    }

    // The N - 2 messages all dead (kept), then of the 22: one delivered,
    // two dead kept, nineteen dead past the limit.
    let leases = lease_all(q, LONG).await;
    let sizes: Vec<usize> = leases.iter().map(|l| l.batch.messages.len()).collect();
    assert_eq!(
        sizes,
        vec![N as usize - 2, 22],
        "each push must be leased as one batch, in push order"
    );
    let kind = |line: u64| match line % 3 {
        0 => DeadKind::Permanent,
        1 => DeadKind::Exhausted,
        _ => DeadKind::InDoubt,
    };
    let first: Vec<Settle> = leases[0]
        .batch
        .messages
        .iter()
        .map(|m| dead(m, kind(m.id.line)))
        .collect();
    ok("settle(first batch)", q.settle(&leases[0], &first).await);
    let second_messages = &leases[1].batch.messages;
    let mut second = vec![delivered(&second_messages[0])];
    second.extend(
        second_messages[1..]
            .iter()
            .map(|m| dead(m, kind(m.id.line))),
    );
    ok("settle(second batch)", q.settle(&leases[1], &second).await);
    let dead_count = N - 2 + 21;
    let of_kind = |kind: DeadKind| {
        first
            .iter()
            .chain(&second)
            .filter(|o| matches!(o, Settle::Dead { reason, .. } if reason.kind == kind))
            .count() as u64
    };
    let in_doubt = of_kind(DeadKind::InDoubt);
    let by_reason = (
        of_kind(DeadKind::Permanent),
        of_kind(DeadKind::Exhausted),
        in_doubt,
    );

    let lines = pushes[3].next.records;
    let expected = Counts {
        lines,
        delivered: 1,
        dead: dead_count,
        in_doubt,
        invalid,
        duplicate,
    };
    assert_eq!(
        Counts::of(&report(s, &job).await),
        expected,
        "every count must stay exact past the detail limit"
    );
    assert_eq!(
        dead_by_reason(&report(s, &job).await),
        by_reason,
        "(permanent, exhausted, in_doubt) must count every dead letter by its reason, \
         those not kept in detail too"
    );

    let letters = ok(
        "dead_letters(job, usize::MAX)",
        q.dead_letters(Some(&job), usize::MAX).await,
    );
    assert_eq!(
        letters.len() as u64,
        dead_count,
        "every dead letter must be kept, with its message"
    );
    assert_eq!(
        split_detail(&letters),
        (N as usize, dead_count as usize - N as usize),
        "(kept in detail, not kept): while the job has fewer than {N} dead letters a new \
         one keeps its detail; past that its detail is {DETAIL_NOT_KEPT:?}"
    );
    let pushed: Vec<_> = pushes.iter().flat_map(|p| &p.messages).collect();
    for letter in &letters {
        let line = letter.message.id.line;
        let Some(original) = pushed.iter().find(|m| m.id == letter.message.id) else {
            panic!("dead letter of line {line}, which was never pushed");
        };
        assert_eq!(
            (&letter.message.user_id, &letter.message.alert_message),
            (&original.user_id, &original.alert_message),
            "the dead letter of line {line} must keep its whole message"
        );
        assert_eq!(
            letter.reason.kind,
            kind(line),
            "the dead letter of line {line} must keep its kind"
        );
        if letter.reason.detail != DETAIL_NOT_KEPT {
            assert_eq!(
                letter.reason.detail,
                format!("testkit: {} for line {line}", kind(line).as_str()),
                "a dead letter kept in detail must keep the detail it was settled with"
            );
        }
    }
    // The outcome of a dead line says what its dead letter says.
    let not_kept: Vec<&DeadLetter> = letters
        .iter()
        .filter(|d| d.reason.detail == DETAIL_NOT_KEPT)
        .collect();
    let detailed: Vec<&DeadLetter> = letters
        .iter()
        .filter(|d| d.reason.detail != DETAIL_NOT_KEPT)
        .collect();
    for letter in not_kept.iter().chain(detailed.iter().take(3)) {
        assert_eq!(
            outcome(s, &letter.message.id).await,
            Some(LineOutcome::Dead {
                reason: letter.reason.clone()
            }),
            "the outcome of dead line {} must be its dead letter's reason",
            letter.message.id.line
        );
    }
    let receipt = match &second[0] {
        Settle::Delivered { receipt, .. } => receipt.clone(),
        _ => unreachable!("the first outcome of the second batch is a delivery"),
    };
    assert_eq!(
        outcome(s, &second_messages[0].id).await,
        Some(LineOutcome::Delivered { receipt }),
        "a delivered line keeps its whole receipt, past the detail limit too"
    );

    // Every dead letter replays; its line is pending again, and the job's
    // dead-letter room is back.
    assert_eq!(
        ok("replay(job)", q.replay(Some(&job)).await),
        dead_count,
        "replay must replay every dead letter, those not kept in detail too"
    );
    for letter in not_kept.iter().take(3) {
        assert_eq!(
            outcome(s, &letter.message.id).await,
            None,
            "a replayed line (not kept in detail) must be pending again"
        );
    }
    assert_eq!(
        dead_by_reason(&report(s, &job).await),
        (0, 0, 0),
        "(permanent, exhausted, in_doubt) after replaying every dead letter"
    );
    let replayed = lease_all(q, LONG).await;
    let count: usize = replayed.iter().map(|l| l.batch.messages.len()).sum();
    assert_eq!(
        count as u64, dead_count,
        "every replayed dead letter must be leasable"
    );
    for lease in &replayed {
        let outcomes: Vec<Settle> = lease
            .batch
            .messages
            .iter()
            .map(|m| dead(m, kind(m.id.line)))
            .collect();
        ok("settle(replayed batch)", q.settle(lease, &outcomes).await);
    }
    let letters = ok(
        "dead_letters(job, usize::MAX)",
        q.dead_letters(Some(&job), usize::MAX).await,
    );
    assert_eq!(
        split_detail(&letters),
        (N as usize, dead_count as usize - N as usize),
        "(kept in detail, not kept) after a replay: the replayed dead letters leave the \
         job's count, so the first {N} to die again keep their detail"
    );
    assert_eq!(
        Counts::of(&report(s, &job).await),
        expected,
        "every count must be exact again once the replayed lines are dead again"
    );
    assert_eq!(
        dead_by_reason(&report(s, &job).await),
        by_reason,
        "(permanent, exhausted, in_doubt) must be exact again once the replayed lines are \
         dead again"
    );
}
