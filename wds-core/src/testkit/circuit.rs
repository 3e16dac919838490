//! Conformance of a [`CircuitStore`]: loads, compare-and-swap, endpoints.

use std::time::Duration;

use futures::future::join_all;

use crate::backend::{CircuitState, CircuitStore};
use crate::health::CircuitSettings;

/// Checks the `# Contract` of [`CircuitStore`] on two views of one fresh
/// store (`a` and `b`: clones, or two connections to it, as two workers
/// would have): an unknown endpoint is closed, a swap succeeds only from
/// the stored state and is seen through the other view, endpoints are
/// independent whatever their names, and of many concurrent swaps from one
/// state exactly one wins.
///
/// # Panics
///
/// Naming the rule it saw broken.
pub async fn circuit_store_conforms(a: &dyn CircuitStore, b: &dyn CircuitStore) {
    let endpoint = "https://api.example.com/hook";
    let settings = CircuitSettings::default();
    let closed = CircuitState::Closed;
    assert_eq!(
        a.load(endpoint).await.expect("load"),
        closed,
        "an endpoint never stored is closed"
    );
    assert!(
        !a.swap(endpoint, &CircuitState::opened(1, &settings), &closed)
            .await
            .expect("swap"),
        "a swap from a state that is not stored fails"
    );

    let open = CircuitState::opened(1_000, &settings);
    assert!(
        a.swap(endpoint, &closed, &open).await.expect("swap"),
        "a swap from the stored state (closed: never stored) succeeds"
    );
    assert_eq!(
        b.load(endpoint).await.expect("load"),
        open,
        "seen by every view"
    );
    assert!(
        !b.swap(endpoint, &closed, &open).await.expect("swap"),
        "a swap from a stale state fails"
    );
    assert_eq!(
        a.load(endpoint).await.expect("load"),
        open,
        "a failed swap changes nothing"
    );

    // Endpoints are independent, whatever their names.
    for other in [
        "",
        "x:y",
        "open:1:2:3:4",
        "http://h/p?a=b&c",
        "ünï cødé",
        &"e".repeat(500),
    ] {
        assert_eq!(
            a.load(other).await.expect("load"),
            closed,
            "{other:?} is another endpoint"
        );
        let state = CircuitState::opened(other.len() as u64, &settings);
        assert!(
            a.swap(other, &closed, &state).await.expect("swap"),
            "{other:?}"
        );
        assert_eq!(b.load(other).await.expect("load"), state, "{other:?}");
    }
    assert_eq!(
        a.load(endpoint).await.expect("load"),
        open,
        "untouched by the others"
    );

    // Many workers claim the probe at once: one wins, and its state is stored.
    let claims: Vec<CircuitState> = (0..16)
        .map(|i| open.probing(2_000 + i, Duration::from_secs(5)))
        .collect();
    let swaps = claims.iter().enumerate().map(|(i, claim)| {
        let view = if i % 2 == 0 { a } else { b };
        async move { view.swap(endpoint, &open, claim).await.expect("swap") }
    });
    let won: Vec<usize> = join_all(swaps)
        .await
        .into_iter()
        .enumerate()
        .filter_map(|(i, won)| won.then_some(i))
        .collect();
    assert_eq!(
        won.len(),
        1,
        "of concurrent swaps from one state exactly one wins: {won:?}"
    );
    assert_eq!(a.load(endpoint).await.expect("load"), claims[won[0]]);

    // And back to closed, and open again.
    assert!(b
        .swap(endpoint, &claims[won[0]], &closed)
        .await
        .expect("swap"));
    assert_eq!(a.load(endpoint).await.expect("load"), closed);
    assert!(
        a.swap(endpoint, &closed, &open).await.expect("swap"),
        "reopened"
    );
}
