//! [`CircuitBreaker`]: what a deliverer asks before sending to an endpoint
//! and tells after each call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::failures::Failures;
use super::settings::CircuitSettings;
use super::state::CircuitState;
use super::store::CircuitStore;
use crate::error::Result;
use crate::model::now_ms;

/// How often a breaker reads the shared state from its store: how soon a
/// worker learns that another one opened or closed the circuit.
const POLL: Duration = Duration::from_millis(100);

/// The circuit breaker of one endpoint in one process, shared by every
/// delivery task of that process; the circuit itself lives in a
/// [`CircuitStore`] shared by every worker.
///
/// Each breaker counts the calls of its own process ([`CircuitSettings`]
/// say when failure is sustained) and opens the shared circuit when they
/// fail; it learns what the other workers decided by reading the store at
/// most every 100 ms (from the delivery path: no task of its own). While
/// the circuit is open the deliverer holds its batches before marking them
/// as sending, and puts back unsent messages of batches already sending
/// without counting an attempt; when a probe is due, one worker claims it
/// with a compare-and-swap and sends one message; an answer closes the
/// circuit, a failure doubles the wait for the next probe.
///
/// ```
/// # async fn demo(store: std::sync::Arc<dyn wds_core::backend::CircuitStore>) -> wds_core::Result<()> {
/// use wds_core::health::{CircuitBreaker, CircuitSettings};
///
/// let breaker = CircuitBreaker::new(store, "https://api.example.com/hook", CircuitSettings::default())?;
/// assert!(!breaker.state().await.is_open());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct CircuitBreaker {
    store: Arc<dyn CircuitStore>,
    endpoint: String,
    settings: CircuitSettings,
    /// How long a probe claim holds: one call's timeout and a margin.
    probe_hold: Duration,
    known: Mutex<Known>,
    /// When the store is to be read next, in [`now_ms`] time.
    next_poll_ms: AtomicU64,
}

/// What this process knows.
#[derive(Debug, Default)]
struct Known {
    state: CircuitState,
    failures: Failures,
    /// Bumped by every change of `state`: a read of the store that began
    /// before a change is older than it, and is not taken.
    changes: u64,
}

/// What a batch may do, as [`CircuitBreaker::admit`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// The circuit is closed: send.
    Send,
    /// The circuit is open and this batch sends the probe: its first
    /// message alone, then the rest if the circuit closed. Carries the
    /// state as claimed, for [`CircuitBreaker::probe_done`].
    Probe(CircuitState),
}

/// How one call went, as far as the endpoint's health goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallOutcome {
    /// Any answer but a 5xx: the endpoint is up (a 429 or another 4xx
    /// included).
    Answered,
    /// A connection error, a timeout or a 5xx.
    Failed,
}

impl CircuitBreaker {
    /// A breaker for `endpoint` (any name; every worker using the same name
    /// and store shares the circuit).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Config`] when the settings are invalid.
    pub fn new(
        store: Arc<dyn CircuitStore>,
        endpoint: impl Into<String>,
        settings: CircuitSettings,
    ) -> Result<Self> {
        settings.validate()?;
        Ok(CircuitBreaker {
            store,
            endpoint: endpoint.into(),
            settings,
            probe_hold: Duration::from_secs(12),
            known: Mutex::new(Known::default()),
            next_poll_ms: AtomicU64::new(0),
        })
    }

    /// How long a worker's claim on the probe lasts before another worker
    /// may probe (the call timeout and a margin; default 12 s).
    pub fn probe_hold(mut self, hold: Duration) -> Self {
        self.probe_hold = hold;
        self
    }

    /// The endpoint's name.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The settings.
    pub fn settings(&self) -> &CircuitSettings {
        &self.settings
    }

    /// The circuit as last read from the store (at most 100 ms old while
    /// deliveries run).
    pub fn known(&self) -> CircuitState {
        self.lock().state
    }

    /// The circuit as the store has it now.
    pub async fn state(&self) -> CircuitState {
        self.next_poll_ms.store(0, Ordering::Release);
        self.refresh().await;
        self.known()
    }

    fn lock(&self) -> MutexGuard<'_, Known> {
        // Nothing below panics while holding the lock.
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the store when the last read is older than [`POLL`] (one
    /// caller per interval; the others go on with what is known).
    async fn refresh(&self) {
        let now = now_ms();
        let due = self.next_poll_ms.load(Ordering::Acquire);
        let poll = POLL.as_millis() as u64;
        if now < due
            || self
                .next_poll_ms
                .compare_exchange(due, now + poll, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        let before = self.lock().changes;
        match self.store.load(&self.endpoint).await {
            Ok(state) => {
                let mut known = self.lock();
                if known.changes == before {
                    self.take(&mut known, state);
                }
            }
            // Delivery goes on with what is known: the store being down is
            // the backend's problem, which settling reports anyway.
            Err(e) => tracing::debug!(error = %e, "cannot read the circuit"),
        }
    }

    /// Takes `state` as the shared state.
    fn learn(&self, state: CircuitState) {
        self.take(&mut self.lock(), state);
    }

    fn take(&self, known: &mut Known, state: CircuitState) {
        known.changes += 1;
        if known.state.is_open() && !state.is_open() {
            known.failures.clear();
            tracing::info!(endpoint = %self.endpoint, "circuit closed: delivery resumes");
        }
        known.state = state;
    }

    /// Whether calls are held now (the state at most 100 ms old).
    pub(crate) async fn is_open(&self) -> bool {
        self.refresh().await;
        self.known().is_open()
    }

    /// Waits until a batch may go: the circuit closed, or open with a
    /// probe due that this call claimed. `None` when `cancel` fired first.
    pub(crate) async fn admit(&self, cancel: &CancellationToken) -> Option<Admission> {
        loop {
            if cancel.is_cancelled() {
                return None;
            }
            self.refresh().await;
            let state = self.known();
            let now = now_ms();
            if !state.is_open() {
                return Some(Admission::Send);
            }
            if state.probe_due(now) {
                let claimed = state.probing(now, self.probe_hold);
                match self.store.swap(&self.endpoint, &state, &claimed).await {
                    Ok(true) => {
                        self.learn(claimed);
                        tracing::info!(endpoint = %self.endpoint, "circuit open: sending a probe");
                        return Some(Admission::Probe(claimed));
                    }
                    // Another worker moved first: read what it did.
                    Ok(false) => self.next_poll_ms.store(0, Ordering::Release),
                    Err(e) => tracing::debug!(error = %e, "cannot claim the probe"),
                }
            }
            let until_probe = state
                .next_probe_ms()
                .map_or(POLL, |at| Duration::from_millis(at.saturating_sub(now)));
            tokio::select! {
                () = tokio::time::sleep(until_probe.clamp(Duration::from_millis(5), POLL)) => {}
                () = cancel.cancelled() => return None,
            }
        }
    }

    /// Counts a call that was not a probe; opens the circuit when failure
    /// is sustained.
    pub(crate) async fn record(&self, outcome: CallOutcome) {
        let now = now_ms();
        let opened = CircuitState::opened(now, &self.settings);
        {
            let mut known = self.lock();
            let sustained =
                known
                    .failures
                    .record(now, outcome == CallOutcome::Failed, &self.settings);
            if !sustained || known.state.is_open() {
                return;
            }
            // This process holds its calls at once, not one store round
            // trip later: against an endpoint that fails fast, that round
            // trip is many calls.
            known.state = opened;
            known.changes += 1;
        }
        match self
            .store
            .swap(&self.endpoint, &CircuitState::Closed, &opened)
            .await
        {
            Ok(true) => {
                self.learn(opened);
                tracing::warn!(
                    endpoint = %self.endpoint,
                    "circuit opened: calls keep failing; holding messages and probing"
                );
            }
            // Already open (another worker), or just closed by a probe:
            // the next read of the store says which.
            Ok(false) => self.next_poll_ms.store(0, Ordering::Release),
            // Held here until the next read of the store closes it again.
            Err(e) => tracing::warn!(error = %e, "cannot open the circuit"),
        }
    }

    /// Records how the probe claimed as `claimed` went: an answer closes
    /// the circuit, a failure sets the next probe further out.
    pub(crate) async fn probe_done(&self, claimed: CircuitState, outcome: CallOutcome) {
        let now = now_ms();
        if outcome == CallOutcome::Failed {
            let next = claimed.probe_failed(now, &self.settings);
            match self.store.swap(&self.endpoint, &claimed, &next).await {
                Ok(true) => self.learn(next),
                Ok(false) => self.next_poll_ms.store(0, Ordering::Release),
                Err(e) => tracing::warn!(error = %e, "cannot record a failed probe"),
            }
            return;
        }
        // The endpoint answered: close, whatever the state became meanwhile.
        let mut current = claimed;
        for _ in 0..8 {
            match self
                .store
                .swap(&self.endpoint, &current, &CircuitState::Closed)
                .await
            {
                Ok(true) => break,
                Ok(false) => match self.store.load(&self.endpoint).await {
                    Ok(state) if state.is_open() => current = state,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot close the circuit");
                        return;
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot close the circuit");
                    return;
                }
            }
        }
        self.learn(CircuitState::Closed);
    }
}
