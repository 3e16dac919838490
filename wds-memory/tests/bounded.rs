//! Per-job storage is bounded: past the detail limit a line keeps its kind
//! (the counts stay exact, dead letters stay replayable), not its reasons.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use wds_core::{
    backend::{OffsetStore, Queue},
    Delivered, Engine, Input, Message, Sink, SinkError,
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
        Ok(Delivered::with_status(200))
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
    let input = Input::from_bytes("mixed.csv", body.into_bytes());
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
    assert_eq!(
        (report.permanent, report.exhausted, report.in_doubt),
        (1000, 0, 0),
        "dead letters by reason, 900 of them past the detail limit: {report:?}"
    );

    // What the limit means (outcomes, texts, replays) is checked by
    // `wds_core::testkit::detail_is_bounded_and_counts_stay_exact`; here,
    // that the setting is what counts.
    let rejects = backend.rejects(&report.job, usize::MAX).await.unwrap();
    assert_eq!(rejects.len(), 100, "rejects kept in detail");
    let dead = backend
        .dead_letters(Some(&report.job), usize::MAX)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1000);
    let detailed = dead
        .iter()
        .filter(|d| d.reason.detail.contains("refused"))
        .count();
    assert_eq!(detailed, 100, "dead letters kept in detail");

    // Dead letters past the limit still replay, and the job then adds up.
    sink.healed.store(true, Ordering::SeqCst);
    assert_eq!(backend.replay(Some(&report.job)).await.unwrap(), 1000);
    let report = engine.run_once(&input).await.unwrap();
    assert_eq!((report.delivered, report.dead), (2000, 0), "{report:?}");
}
