//! Conformance of a [`WorkerRegistry`]: beats seen by every view, the last
//! beat per worker wins, workers past the retention are forgotten.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::backend::now_ms;
use crate::workers::{WorkerBeat, WorkerRegistry, WorkerSeen};

/// Slack for the store's clock against this process's (the same machine
/// in a test) and for a slow, loaded machine.
const SLACK_MS: u64 = 1_000;

async fn listed(view: &dyn WorkerRegistry) -> BTreeMap<String, WorkerSeen> {
    let all = view.workers().await.expect("workers");
    let mut by_id = BTreeMap::new();
    for seen in all {
        let id = seen.beat.worker.clone();
        assert!(
            by_id.insert(id.clone(), seen).is_none(),
            "each worker is listed once: {id:?} twice"
        );
    }
    by_id
}

/// Checks the `# Contract` of [`WorkerRegistry`] on two views of one fresh
/// store (`a` and `b`: clones, or two connections to it, as two processes
/// would have) that forgets a worker after `retention` (configure the
/// backend so, a second or two): beats of one view are listed by the
/// other with the store's time, the last beat of a worker replaces its
/// earlier one, any string is a worker id, and a worker not heard from for
/// longer than `retention` is no longer listed while one that keeps
/// beating is. Takes about `retention` and a second.
///
/// # Panics
///
/// Naming the rule it saw broken.
pub async fn workers_are_seen_and_forgotten(
    a: &dyn WorkerRegistry,
    b: &dyn WorkerRegistry,
    retention: Duration,
) {
    assert!(
        listed(a).await.is_empty(),
        "a fresh store has seen no worker"
    );

    let ids = [
        "host-1-123",
        "",
        "ünï cødé",
        "a:b{c}\"d\"",
        &"w".repeat(300),
    ];
    let before = now_ms();
    let mut beats = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let n = i as u64;
        let beat = WorkerBeat::new(*id)
            .process(format!("host-{i}"), 1_000 + i as u32)
            .started_ms(before - 60_000 + n)
            .calls(10 * n, n, 2 * n)
            .in_flight(n, 64 + n);
        let view = if i % 2 == 0 { a } else { b };
        view.beat(&beat).await.expect("beat");
        beats.push(beat);
    }
    let after = now_ms();
    for view in [a, b] {
        let seen = listed(view).await;
        assert_eq!(
            seen.len(),
            ids.len(),
            "every worker that beat is listed by every view: {seen:?}"
        );
        for beat in &beats {
            let got = seen
                .get(&beat.worker)
                .unwrap_or_else(|| panic!("worker {:?} is listed", beat.worker));
            assert_eq!(&got.beat, beat, "the beat is listed as it was sent");
            assert!(
                got.seen_ms + SLACK_MS >= before && got.seen_ms <= after + SLACK_MS,
                "seen_ms is the store's clock when the beat was stored: {} not in {before}..={after}",
                got.seen_ms
            );
        }
    }

    // The last beat wins; nothing else changes.
    let first_seen = listed(a).await[ids[0]].seen_ms;
    let newer = beats[0].clone().calls(500, 7, 3).in_flight(9, 32);
    b.beat(&newer).await.expect("beat");
    let seen = listed(a).await;
    assert_eq!(seen.len(), ids.len(), "a second beat adds no worker");
    assert_eq!(
        seen[ids[0]].beat, newer,
        "the last beat of a worker replaces its earlier one"
    );
    assert!(
        seen[ids[0]].seen_ms >= first_seen,
        "seen_ms moves on with the last beat"
    );
    assert_eq!(seen[ids[1]].beat, beats[1], "other workers are untouched");

    // Past the retention, the workers that stopped beating are forgotten;
    // one that keeps beating stays.
    let keeps = &beats[1];
    let stopped = Instant::now();
    let margin = Duration::from_millis(SLACK_MS);
    while stopped.elapsed() < retention + margin {
        a.beat(keeps).await.expect("beat");
        tokio::time::sleep(retention / 4).await;
    }
    a.beat(keeps).await.expect("beat");
    let seen = listed(b).await;
    assert!(
        seen.contains_key(&keeps.worker),
        "a worker heard from within the retention is listed: {seen:?}"
    );
    assert_eq!(
        seen.len(),
        1,
        "workers not heard from for longer than the retention are no longer listed: {:?}",
        seen.keys().collect::<Vec<_>>()
    );
}
