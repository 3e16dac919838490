//! The conformance suite every [`Queue`] and [`OffsetStore`] backend runs.
//!
//! Each check is a plain `pub async fn(&dyn Queue, &dyn OffsetStore)` that
//! exercises one part of the `# Contract` sections of [`Queue`] and
//! [`OffsetStore`] and panics with a message naming the rule it saw broken.
//! Both arguments MUST be views of one fresh, empty backend: the checks
//! count what the queue holds.
//!
//! [`run_all`] runs every check, each on a new backend made by your factory,
//! and panics at the end with the list of the checks that failed (each
//! failure's own panic message is printed as it happens, too).
//!
//! # Writing a backend
//!
//! Enable the `testkit` feature in your backend's dev-dependencies:
//!
//! ```toml
//! [dev-dependencies]
//! wds-core = { version = "0.1", features = ["testkit"] }
//! tokio = { version = "1", features = ["rt-multi-thread", "macros"] }
//! ```
//!
//! and run the suite from an integration test, on the concrete type and
//! through trait objects (which is how the engine holds a backend):
//!
//! ```text
//! // tests/conformance.rs
//! use std::sync::Arc;
//!
//! use wds_core::{testkit, backend::{OffsetStore, Queue}};
//! use my_backend::MyBackend;
//!
//! /// A fresh, empty backend per check (a new database, key prefix, …).
//! async fn fresh() -> MyBackend {
//!     MyBackend::connect(&test_url(), &unique_prefix()).await.unwrap()
//! }
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn conformance() {
//!     testkit::run_all(fresh).await;
//! }
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn conformance_through_trait_objects() {
//!     testkit::run_all_views(|| async {
//!         let backend = fresh().await;
//!         let queue: Arc<dyn Queue> = Arc::new(backend.clone());
//!         let offsets: Arc<dyn OffsetStore> = Arc::new(backend);
//!         (queue, offsets)
//!     })
//!     .await;
//! }
//!
//! // One check alone, while you work on it:
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn reclaim() {
//!     let backend = fresh().await;
//!     testkit::expired_lease_is_reclaimed(&backend, &backend).await;
//! }
//! ```
//!
//! # Requirements
//!
//! The checks run on a Tokio runtime with the time driver enabled (any
//! `#[tokio::test]`), sleep on the wall clock ([`crate::backend::now_ms`], which lease
//! deadlines and retry times use), and take a few seconds in all. Lease
//! expiry is exercised with ttls of 200–500 ms; nothing is asserted to *not*
//! happen unless it would be well early, and what must happen is polled for
//! generously, so the suite holds on a slow, loaded machine.
//!
//! # Readings of the contract
//!
//! Where the contract leaves room, the suite takes the reading an
//! experienced user would expect, and no more:
//!
//! - one push is leased as one batch holding its messages in order;
//! - `lease(n)` may return fewer than `n` batches, but not none while one is ready;
//! - a replay resets `attempts` (what `first_attempt_ms` becomes is not checked),
//!   and the order of dead letters and of replayed messages is not checked;
//! - a push to a job that was never claimed fails with some error, not
//!   necessarily [`crate::Error::UnknownJob`]; a settle that does not name
//!   every message exactly once fails with some error;
//! - `finished_ms` is `None` until the job is first `Done` (its value after a
//!   replay is not checked);
//! - the backend keeps the default detail limit
//!   ([`crate::backend::DEFAULT_DETAIL_LIMIT`]): [`detail_is_bounded_and_counts_stay_exact`]
//!   pushes and kills more lines than that; within one settle, which dead
//!   letters keep their detail is not checked, only how many;
//! - `reports()` lists jobs newest first by claim order (the checks claim
//!   with increasing `created_ms` too, so either clock agrees).

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::backend::{Backend, JobControl, OffsetStore, Queue};

mod attributes;
pub mod bench;
mod circuit;
mod claims;
mod control;
mod detail;
mod lease;
mod push;
mod replay;
mod settle;
mod stats;
mod support;
mod workers;

pub use attributes::{attributes_are_kept, replay_kind_ignores_attributes};
pub use circuit::circuit_store_conforms;
pub use claims::{
    claim_creates_a_job_once, claims_of_different_identities_differ,
    concurrent_claims_make_one_job, unknown_jobs_are_refused,
};
pub use control::{
    cancel_accounts_for_every_line, finished_job_refuses_control, lease_takes_jobs_in_turn,
    lease_takes_jobs_in_turn_across_shards, pause_holds_batches_until_resume,
    replay_kind_replays_one_kind,
};
pub use detail::detail_is_bounded_and_counts_stay_exact;
pub use lease::{
    expired_lease_is_reclaimed, expired_leases_come_first, extend_keeps_the_lease,
    lease_in_push_order, lease_in_push_order_per_job, leased_batch_has_one_holder,
    release_returns_the_batch_at_once, sending_mark_is_sticky,
};
pub use push::{
    fail_ends_reading_for_good, job_state_follows_reading_and_accounting, push_ahead_conflicts,
    push_all_applies_in_order, push_applies_atomically, repush_changes_nothing,
};
pub use replay::{replay_of_all_jobs, replay_of_one_job};
pub use settle::{
    retry_waits_until_due, settle_and_continue_goes_on, settle_dead_records_a_dead_letter,
    settle_delivered_records_the_receipt, settle_must_name_every_message_once,
    settle_requires_a_held_lease,
};
pub use stats::stats_count_messages;
pub use support::all_delivered;
pub use workers::workers_are_seen_and_forgotten;

/// How long one check may take before it counts as failed (hung).
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

type Check = for<'a> fn(&'a dyn Queue, &'a dyn OffsetStore) -> BoxFuture<'a, ()>;

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), {
            fn run<'a>(q: &'a dyn Queue, s: &'a dyn OffsetStore) -> BoxFuture<'a, ()> {
                Box::pin($name(q, s))
            }
            run as Check
        })),*]
    };
}

/// Every check, in the order [`run_all`] runs them.
const CHECKS: &[(&str, Check)] = checks![
    claim_creates_a_job_once,
    claims_of_different_identities_differ,
    concurrent_claims_make_one_job,
    unknown_jobs_are_refused,
    push_applies_atomically,
    repush_changes_nothing,
    push_ahead_conflicts,
    push_all_applies_in_order,
    job_state_follows_reading_and_accounting,
    fail_ends_reading_for_good,
    lease_in_push_order,
    lease_takes_jobs_in_turn,
    leased_batch_has_one_holder,
    settle_delivered_records_the_receipt,
    settle_dead_records_a_dead_letter,
    settle_must_name_every_message_once,
    settle_requires_a_held_lease,
    settle_and_continue_goes_on,
    expired_lease_is_reclaimed,
    sending_mark_is_sticky,
    expired_leases_come_first,
    extend_keeps_the_lease,
    release_returns_the_batch_at_once,
    retry_waits_until_due,
    replay_of_one_job,
    replay_of_all_jobs,
    stats_count_messages,
    detail_is_bounded_and_counts_stay_exact,
    attributes_are_kept,
];

type ControlCheck =
    for<'a> fn(&'a dyn Queue, &'a dyn OffsetStore, &'a dyn JobControl) -> BoxFuture<'a, ()>;

macro_rules! control_checks {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), {
            fn run<'a>(
                q: &'a dyn Queue,
                s: &'a dyn OffsetStore,
                c: &'a dyn JobControl,
            ) -> BoxFuture<'a, ()> {
                Box::pin($name(q, s, c))
            }
            run as ControlCheck
        })),*]
    };
}

/// Every [`JobControl`] check, in the order [`run_control`] runs them.
const CONTROL_CHECKS: &[(&str, ControlCheck)] = control_checks![
    pause_holds_batches_until_resume,
    cancel_accounts_for_every_line,
    finished_job_refuses_control,
    replay_kind_replays_one_kind,
    replay_kind_ignores_attributes,
];

/// Runs every [`JobControl`] check, each on a fresh backend from `make`,
/// which serves as the [`Queue`], the [`OffsetStore`] and the
/// [`JobControl`]. Run it beside [`run_all`].
///
/// # Panics
///
/// After running them all, if any check failed or hung, listing each with
/// its message.
pub async fn run_control<F, Fut, B>(mut make: F)
where
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = B> + Send,
    B: Queue + OffsetStore + JobControl + Clone,
{
    let mut failures = Vec::new();
    for (name, check) in CONTROL_CHECKS {
        let backend = make().await;
        let run = AssertUnwindSafe(check(&backend, &backend, &backend)).catch_unwind();
        record(name, run, &mut failures).await;
    }
    report_failures(&failures, CONTROL_CHECKS.len());
}

/// Runs one check with the time limit; notes its failure.
async fn record(
    name: &str,
    run: impl Future<Output = std::thread::Result<()>>,
    failures: &mut Vec<String>,
) {
    match tokio::time::timeout(CHECK_TIMEOUT, run).await {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => failures.push(format!("{name}: {}", panic_message(&*panic))),
        Err(_) => failures.push(format!("{name}: did not finish within {CHECK_TIMEOUT:?}")),
    }
}

/// Panics listing `failures`, if any.
fn report_failures(failures: &[String], of: usize) {
    if !failures.is_empty() {
        panic!(
            "{} of {} conformance checks failed:\n- {}",
            failures.len(),
            of,
            failures.join("\n- ")
        );
    }
}

/// Runs every check, each on a fresh backend from `make`, which serves as
/// both the [`Queue`] and the [`OffsetStore`]: a [`Backend`], as the
/// engine requires.
///
/// # Panics
///
/// After running them all, if any check failed or hung, listing each with
/// its message.
pub async fn run_all<F, Fut, B>(mut make: F)
where
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = B> + Send,
    B: Backend,
{
    run_all_views(move || {
        let backend = make();
        async move {
            let backend = backend.await;
            (backend.clone(), backend)
        }
    })
    .await;
}

/// Runs every check, each on a fresh pair of views of one backend from
/// `make`: use it to run the suite through `Arc<dyn Queue>` and
/// `Arc<dyn OffsetStore>`, or when the two views are different types.
///
/// # Panics
///
/// After running them all, if any check failed or hung, listing each with
/// its message.
pub async fn run_all_views<F, Fut, Q, S>(make: F)
where
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = (Q, S)> + Send,
    Q: Queue,
    S: OffsetStore,
{
    run_checks(CHECKS, make).await;
}

/// What [`run_all_sharded`] runs instead of the two checks that hold two
/// jobs to one order of turns: each beside the name of the one it replaces.
const PER_SHARD_READINGS: &[(&str, (&str, Check))] = &[
    (
        "lease_in_push_order",
        checks![lease_in_push_order_per_job][0],
    ),
    (
        "lease_takes_jobs_in_turn",
        checks![lease_takes_jobs_in_turn_across_shards][0],
    ),
];

/// Runs every check as [`run_all_views`] does, for a backend that spreads
/// jobs over shards (keys on several nodes, say) and leases from them in
/// turn: jobs on one shard take turns exactly, but two jobs on different
/// shards cannot be held to one order without a key every lease touches.
/// Two checks are read accordingly ([`lease_in_push_order_per_job`],
/// [`lease_takes_jobs_in_turn_across_shards`]); every other check is the
/// same.
///
/// # Panics
///
/// As [`run_all`].
pub async fn run_all_sharded<F, Fut, Q, S>(make: F)
where
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = (Q, S)> + Send,
    Q: Queue,
    S: OffsetStore,
{
    let checks: Vec<(&str, Check)> = CHECKS
        .iter()
        .map(|&(name, check)| {
            PER_SHARD_READINGS
                .iter()
                .find(|(replaced, _)| *replaced == name)
                .map_or((name, check), |(_, reading)| *reading)
        })
        .collect();
    run_checks(&checks, make).await;
}

async fn run_checks<F, Fut, Q, S>(checks: &[(&str, Check)], mut make: F)
where
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = (Q, S)> + Send,
    Q: Queue,
    S: OffsetStore,
{
    let mut failures = Vec::new();
    for (name, check) in checks {
        let (queue, offsets) = make().await;
        let run = AssertUnwindSafe(check(&queue, &offsets)).catch_unwind();
        record(name, run, &mut failures).await;
    }
    report_failures(&failures, checks.len());
}

/// The message a panic was raised with.
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(a panic without a message)"
    }
}
