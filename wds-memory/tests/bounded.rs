//! Per-job storage is bounded: past the detail limit a line keeps its kind
//! (the counts stay exact, dead letters stay replayable), not its reasons.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use wds_core::{
    Delivered, Engine, Input, LineOutcome, Message, MessageId, OffsetStore, Queue, RejectKind,
    Sink, SinkError,
};
use wds_memory::MemoryBackend;

/// Refuses even users (permanently) until healed.
#[derive(Debug, Default)]
struct RefusesEven {
    healed: AtomicBool,
}

#[async_trait]
impl Sink for RefusesEven {
    async fn deliver(&self, m: &Message) -> Result<Delivered, SinkError> {
        let even = m
            .user_id
            .trim_start_matches("user-")
            .parse::<u64>()
            .unwrap_or(0)
            % 2
            == 0;
        if even && !self.healed.load(Ordering::SeqCst) {
            return Err(SinkError::permanent(
                "refused: a long reason the endpoint gave",
            ));
        }
        Ok(Delivered { status: Some(200) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_detail_limit_lines_keep_their_kind_and_the_counts_stay_exact() {
    let mut body = String::new();
    for _ in 0..3000 {
        body.push_str("x\n");
    }
    for i in 1..=2000 {
        body.push_str(&format!("user-{i},hi\n"));
    }
    let input = Input::from_bytes("mixed.csv", body.into_bytes(), None, None);
    let backend = MemoryBackend::with_detail_limit(100);
    let sink = Arc::new(RefusesEven::default());
    let engine = Engine::builder()
        .backend(backend.clone())
        .shared_sink(sink.clone())
        .build()
        .unwrap();
    let report = engine.run_once(&input).await.unwrap();
    assert_eq!(
        (report.lines, report.invalid, report.delivered, report.dead),
        (5000, 3000, 1000, 1000),
        "{report:?}"
    );
    assert_eq!(report.accounted(), report.lines);

    let rejects = backend.rejects(&report.job, usize::MAX).await.unwrap();
    assert_eq!(rejects.len(), 100, "rejects kept in detail");
    let outcome = |line| {
        let backend = backend.clone();
        let job = report.job.clone();
        async move { backend.outcome(&MessageId { job, line }).await.unwrap() }
    };
    match outcome(1).await {
        Some(LineOutcome::Rejected {
            kind: RejectKind::Invalid { reason },
        }) => assert!(reason.contains("default message"), "{reason}"),
        other => panic!("line 1: {other:?}"),
    }
    match outcome(2500).await {
        Some(LineOutcome::Rejected {
            kind: RejectKind::Invalid { reason },
        }) => assert!(reason.contains("not kept"), "{reason}"),
        other => panic!("line 2500: {other:?}"),
    }
    match outcome(3001).await {
        Some(LineOutcome::Delivered { receipt }) => assert_eq!(receipt.status, Some(200)),
        other => panic!("line 3001: {other:?}"),
    }
    // The first 100 dead letters in detail, the rest with their kind only.
    let dead = backend
        .dead_letters(Some(&report.job), usize::MAX)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1000);
    let detailed: Vec<_> = dead
        .iter()
        .filter(|d| d.reason.detail.contains("refused"))
        .collect();
    assert_eq!(detailed.len(), 100);
    let kept = detailed[0].message.id.line;
    match outcome(kept).await {
        Some(LineOutcome::Dead { reason }) => assert!(reason.detail.contains("refused")),
        other => panic!("line {kept}: {other:?}"),
    }
    let short = dead
        .iter()
        .find(|d| d.reason.detail.contains("not kept"))
        .unwrap()
        .message
        .id
        .line;
    match outcome(short).await {
        Some(LineOutcome::Dead { reason }) => assert!(reason.detail.contains("not kept")),
        other => panic!("line {short}: {other:?}"),
    }

    // Dead letters past the limit still replay, and the job then adds up.
    sink.healed.store(true, Ordering::SeqCst);
    assert_eq!(backend.replay(Some(&report.job)).await.unwrap(), 1000);
    let report = engine.run_once(&input).await.unwrap();
    assert_eq!((report.delivered, report.dead), (2000, 0), "{report:?}");
}
