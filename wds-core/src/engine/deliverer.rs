//! The deliverer: leases batches and calls the [`Sink`] for every message.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::backoff::with_backoff;
use super::concurrency::{CallLimit, Signal};
use super::config::{DeliveryMode, EngineConfig};
use super::window::{Entry, Slot, Window};
use crate::backend::CircuitState;
use crate::error::{Error, Result, SinkError};
use crate::health::{Admission, CallOutcome, CircuitBreaker};
use crate::limiter::Limiter;
use crate::model::{now_ms, DeadKind, DeadReason, Lease, Message, Receipt, Settle};
use crate::queue::{Continue, Queue};
use crate::sink::Sink;

/// How long to wait after a 429 that carried no `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Leases batches from the [`Queue`] and delivers their messages through the
/// [`Sink`] with bounded concurrency, under a [`Limiter`], with retries.
///
/// For each batch: wait for one of the sending slots, mark the batch as
/// sending, deliver every message, settle the batch. One call,
/// [`Queue::settle_and_continue`], settles a finished batch, hands its slot
/// to the next waiting batch (marking it) and leases the next batch to
/// wait, so in a steady flow a batch costs one queue call, not four. A batch found `previously_sending` (its
/// worker died mid-send) is dead-lettered as `in_doubt` in
/// [`DeliveryMode::AtMostOnce`] and re-sent in [`DeliveryMode::AtLeastOnce`].
#[derive(Clone, Debug)]
pub struct Deliverer {
    queue: Arc<dyn Queue>,
    sink: Arc<dyn Sink>,
    limiter: Arc<dyn Limiter>,
    config: EngineConfig,
    /// Sink calls in flight at once: fixed, or adapted to the endpoint.
    calls: Arc<CallLimit>,
    /// Batches marked as sending at once: the in-doubt window.
    window: Arc<Window>,
    /// The endpoint's circuit, when there is one.
    breaker: Option<Arc<CircuitBreaker>>,
}

impl Deliverer {
    /// A deliverer over a queue, a sink and a limiter.
    pub fn new(
        queue: Arc<dyn Queue>,
        sink: Arc<dyn Sink>,
        limiter: Arc<dyn Limiter>,
        config: EngineConfig,
    ) -> Result<Self> {
        config.validate()?;
        let calls = Arc::new(if config.adaptive_concurrency {
            CallLimit::adaptive(config.concurrency)
        } else {
            CallLimit::fixed(config.concurrency)
        });
        let window = Window::new(config.sending_batches());
        Ok(Deliverer {
            queue,
            sink,
            limiter,
            config,
            calls,
            window,
            breaker: None,
        })
    }

    /// Sink calls this deliverer may have in flight now: the configured
    /// concurrency, or with [`EngineConfig::adaptive_concurrency`] the limit
    /// it adapted to the endpoint so far.
    pub fn concurrency_limit(&self) -> usize {
        self.calls.current()
    }

    /// Holds deliveries while `breaker`'s circuit is open (see
    /// [`crate::health`]): a batch waits, not yet marked as sending, until
    /// the circuit closes or it may carry the probe, and a message of a
    /// batch already sending goes back to the queue unsent with its
    /// attempts unchanged.
    pub fn with_circuit(mut self, breaker: Arc<CircuitBreaker>) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Delivers until `cancel` fires, then shuts down gracefully: no new
    /// batch is leased, batches not yet sending are released, and batches on
    /// the wire are finished and settled before this returns.
    pub async fn run(&self, cancel: CancellationToken) -> Result<()> {
        let slots = Arc::new(Semaphore::new(self.config.effective_batches_in_flight()));
        let mut tasks = JoinSet::new();
        let mut idle = Duration::from_millis(1);
        loop {
            while let Some(done) = tasks.try_join_next() {
                report_lane(done);
            }
            let first = tokio::select! {
                _ = cancel.cancelled() => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let mut permits = vec![first];
            while let Ok(p) = slots.clone().try_acquire_owned() {
                permits.push(p);
            }
            let leases = match self.queue.lease(permits.len(), self.config.lease_ttl).await {
                Ok(leases) => leases,
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "lease failed; retrying");
                    Vec::new()
                }
                Err(e) => return Err(e),
            };
            if leases.is_empty() {
                drop(permits);
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(idle) => {}
                }
                idle = (idle * 2).min(self.config.idle_poll);
                continue;
            }
            idle = Duration::from_millis(1);
            for (lease, permit) in leases.into_iter().zip(permits) {
                let this = self.clone();
                let cancel = cancel.clone();
                // A lane: one batch after another, each leased by the call
                // that settled the one before, until the queue runs dry or
                // `cancel` fires; then its permit comes back here.
                tasks.spawn(async move {
                    let _lane = permit;
                    let mut next = Some(lease);
                    while let Some(lease) = next.take() {
                        let (done, after) = this.process(lease, &cancel).await;
                        report_batch(done);
                        next = after;
                    }
                });
            }
        }
        while let Some(done) = tasks.join_next().await {
            report_lane(done);
        }
        Ok(())
    }

    /// Delivers one leased batch and settles it. Returns how that went and
    /// the lane's next batch, leased by the same call as the settle.
    async fn process(
        &self,
        lease: Lease,
        cancel: &CancellationToken,
    ) -> (Result<()>, Option<Lease>) {
        if lease.previously_sending && self.config.mode == DeliveryMode::AtMostOnce {
            let outcomes = lease
                .batch
                .messages
                .iter()
                .map(|m| Settle::Dead {
                    message: m.clone(),
                    reason: DeadReason {
                        kind: DeadKind::InDoubt,
                        detail: "a worker stopped while this message's batch was being sent; \
                                 it may or may not have been delivered"
                            .into(),
                    },
                })
                .collect::<Vec<_>>();
            tracing::warn!(batch = %lease.batch.id, messages = outcomes.len(), "batch in doubt");
            return self.finish(&lease, outcomes, None, cancel).await;
        }
        match self.send(&lease, cancel).await {
            Ok(Some((outcomes, slot))) => self.finish(&lease, outcomes, Some(slot), cancel).await,
            Ok(None) => (Ok(()), None),
            Err(e) => (Err(e), None),
        }
    }

    /// Waits for a sending slot, marks the batch as sending and delivers
    /// every message. Returns the outcomes and the slot, which the batch
    /// holds until it is settled; `None` when `cancel` fired before the
    /// batch was marked (it is then released).
    async fn send(
        &self,
        lease: &Lease,
        cancel: &CancellationToken,
    ) -> Result<Option<(Vec<Settle>, Slot)>> {
        let queue = &self.queue;
        let renew_every = self.config.lease_ttl / 3;
        let mut renew =
            tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
        // While the endpoint's circuit is open the batch waits here, leased
        // but not marked: never in doubt, and its messages keep their attempts.
        let Some(admission) = self.admit(lease, &mut renew, cancel).await? else {
            with_backoff("release", cancel, || queue.release(lease)).await?;
            return Ok(None);
        };
        // Wait for a sending slot without marking the batch: a prefetched
        // batch that is not yet sending is never in doubt, so the in-doubt
        // window stays at the sending slots however many batches are held.
        let Some((slot, marked)) = self.wait_for_slot(lease, &mut renew, cancel).await? else {
            with_backoff("release", cancel, || queue.release(lease)).await?;
            return Ok(None);
        };
        match marked {
            // The slot's previous holder marked this batch as it settled its own.
            Some(Ok(())) => {}
            Some(Err(e)) if !e.is_retryable() => return Err(e),
            Some(Err(_)) => {
                with_backoff("mark_sending", cancel, || queue.mark_sending(lease)).await?
            }
            None => {
                if cancel.is_cancelled() {
                    drop(slot);
                    with_backoff("release", cancel, || queue.release(lease)).await?;
                    return Ok(None);
                }
                with_backoff("mark_sending", cancel, || queue.mark_sending(lease)).await?;
            }
        }

        let messages = &lease.batch.messages;
        let mut pending = FuturesUnordered::new();
        // A probe goes alone; the rest of its batch follows once it is
        // answered (and is held if the circuit stayed open).
        let mut rest = match (admission, messages.split_first()) {
            (Admission::Probe(claimed), Some((first, rest))) => {
                pending.push(self.deliver_one(first, cancel, Some(claimed)));
                Some(rest)
            }
            _ => {
                pending.extend(messages.iter().map(|m| self.deliver_one(m, cancel, None)));
                None
            }
        };
        let mut outcomes = Vec::with_capacity(messages.len());
        while !pending.is_empty() {
            tokio::select! {
                Some(outcome) = pending.next() => {
                    outcomes.push(outcome);
                    for m in rest.take().into_iter().flatten() {
                        pending.push(self.deliver_one(m, cancel, None));
                    }
                }
                _ = renew.tick() => self.renew(lease).await?,
            }
        }
        Ok(Some((outcomes, slot)))
    }

    /// Settles a batch and, in the same call, passes its sending slot (if it
    /// holds one) to the longest-waiting batch, marking that one as sending,
    /// and leases the lane's next batch unless `cancel` fired. Returns how
    /// the settle went and the next batch.
    ///
    /// The slot is held until the batch is settled: a crash before the
    /// settle lands leaves this batch in doubt too, so releasing the slot
    /// earlier would let more batches than the window be in doubt at once.
    async fn finish(
        &self,
        lease: &Lease,
        outcomes: Vec<Settle>,
        slot: Option<Slot>,
        cancel: &CancellationToken,
    ) -> (Result<()>, Option<Lease>) {
        let going_on = !cancel.is_cancelled();
        let waiter = match slot {
            Some(_) if going_on => self.window.next_waiter(),
            _ => None,
        };
        let then = Continue {
            mark: waiter.as_ref().map(|w| &w.lease),
            lease: usize::from(going_on),
            ttl: self.config.lease_ttl,
        };
        let queue = &self.queue;
        let continued = with_backoff("settle", cancel, || {
            queue.settle_and_continue(lease, &outcomes, then)
        })
        .await;
        let (settled, marked, leased) = match continued {
            Ok(c) => (c.settled, c.marked, c.leased),
            // Nothing is known of the other parts: a waiter marks itself.
            Err(e) => (Err(e), None, Ok(Vec::new())),
        };
        match (waiter, slot) {
            (Some(waiter), Some(slot)) => waiter.hand(slot, marked),
            (_, slot) => drop(slot),
        }
        let mut leased = match leased {
            Ok(leased) => leased.into_iter(),
            Err(e) => {
                tracing::warn!(error = %e, "leasing the next batch failed");
                Vec::new().into_iter()
            }
        };
        let next = leased.next();
        for extra in leased {
            // More than asked for: give it back rather than hold it idle.
            if let Err(e) = with_backoff("release", cancel, || queue.release(&extra)).await {
                tracing::warn!(error = %e, batch = %extra.batch.id, "could not release a batch");
            }
        }
        (settled, next)
    }

    /// Waits until the endpoint's circuit lets `lease` go (at once without a
    /// breaker), extending the lease meanwhile. `None` when `cancel` fired
    /// first.
    async fn admit(
        &self,
        lease: &Lease,
        renew: &mut tokio::time::Interval,
        cancel: &CancellationToken,
    ) -> Result<Option<Admission>> {
        let Some(breaker) = &self.breaker else {
            return Ok(Some(Admission::Send));
        };
        let admit = breaker.admit(cancel);
        tokio::pin!(admit);
        loop {
            tokio::select! {
                admitted = &mut admit => return Ok(admitted),
                _ = renew.tick() => self.renew(lease).await?,
            }
        }
    }

    /// Waits for a sending slot for `lease`, extending the lease meanwhile.
    /// Returns the slot and, when the previous holder marked the batch while
    /// handing the slot over, how that went; `None` when `cancel` fired
    /// first (the batch is not marked and holds no slot).
    async fn wait_for_slot(
        &self,
        lease: &Lease,
        renew: &mut tokio::time::Interval,
        cancel: &CancellationToken,
    ) -> Result<Option<(Slot, Option<Result<()>>)>> {
        loop {
            let (ticket, mut grant) = match self.window.enter(lease) {
                Entry::Slot(slot) => return Ok(Some((slot, None))),
                Entry::Waiting { ticket, grant } => (ticket, grant),
            };
            loop {
                tokio::select! {
                    got = &mut grant => match got {
                        Ok(grant) => return Ok(Some((grant.slot, grant.marked))),
                        // The holder that took this batch off the queue
                        // vanished without handing the slot over: queue again.
                        Err(_) => break,
                    },
                    _ = cancel.cancelled() => {
                        if self.window.withdraw(ticket) {
                            return Ok(None);
                        }
                        // Too late: a slot is on its way, maybe with this
                        // batch already marked.
                        return Ok(grant.await.ok().map(|g| (g.slot, g.marked)));
                    }
                    _ = renew.tick() => {
                        if let Err(e) = self.renew(lease).await {
                            self.window.withdraw(ticket);
                            return Err(e);
                        }
                    }
                }
            }
        }
    }

    /// Extends a held lease. A transient failure is logged (the next tick
    /// tries again); a lost lease stops the batch: it belongs to someone else.
    async fn renew(&self, lease: &Lease) -> Result<()> {
        match self.queue.extend(lease, self.config.lease_ttl).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "lease extension failed");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Calls the sink once for `message` and decides what happens next.
    ///
    /// Waiting for the limiter (a rate limit, or a back-off an endpoint asked
    /// for) ends when `cancel` fires: the message was not sent, so it goes
    /// back to the queue as it was, due at once (not an attempt), and
    /// shutdown never waits for a pause. A permit already at hand still goes
    /// first.
    ///
    /// With a circuit breaker, a message finds the circuit open just before
    /// its call (unless it is the `probe`), or fails while it is open, goes
    /// back to the queue with its attempts unchanged: the outage is the
    /// endpoint's.
    async fn deliver_one(
        &self,
        message: &Message,
        cancel: &CancellationToken,
        probe: Option<CircuitState>,
    ) -> Settle {
        let permitted = tokio::select! {
            biased;
            permitted = async {
                let call = self.calls.acquire().await;
                (call, with_backoff("limiter", cancel, || self.limiter.acquire(1)).await)
            } => Some(permitted),
            () = cancel.cancelled() => None,
        };
        let Some((in_flight, permitted)) = permitted else {
            return Settle::Retry {
                message: message.clone(),
                at_ms: now_ms(),
            };
        };
        if let Err(e) = permitted {
            // Only a misconfigured limiter fails for good; try the message later.
            return self.failed(message, now_ms(), &e.to_string(), None);
        }
        if let Some(held) = self.held_by_circuit(message, probe).await {
            return held;
        }
        let started_ms = now_ms();
        let start = Instant::now();
        let call = AssertUnwindSafe(self.sink.deliver(message)).catch_unwind();
        let result = match tokio::time::timeout(self.config.delivery_timeout, call).await {
            Ok(Ok(result)) => result,
            Ok(Err(_panic)) => Err(SinkError::retryable("the sink panicked")),
            Err(elapsed) => Err(SinkError::retryable(format!(
                "timed out after {:?}",
                self.config.delivery_timeout
            ))
            .with_source(elapsed)),
        };
        let took = start.elapsed();
        let signal = match &result {
            Ok(_) | Err(SinkError::Permanent { .. }) => Signal::Answered(took),
            Err(_) => Signal::BackPressure,
        };
        self.calls.done(in_flight, signal);
        if let Some(held) = self.tell_circuit(message, &result, probe).await {
            return held;
        }
        match result {
            Ok(delivered) => Settle::Delivered {
                id: message.id.clone(),
                receipt: Receipt {
                    status: delivered.status,
                    attempt: message.attempts + 1,
                    latency_ms: millis(took),
                    // The clock read once per call: the start plus the call.
                    at_ms: started_ms.saturating_add(millis(took)),
                },
            },
            Err(SinkError::Permanent { status, reason, .. }) => Settle::Dead {
                message: message.clone(),
                reason: DeadReason {
                    kind: DeadKind::Permanent,
                    detail: match status {
                        Some(s) => format!("status {s}: {reason}"),
                        None => reason,
                    },
                },
            },
            Err(SinkError::RateLimited { retry_after, .. }) => {
                // The endpoint does not decide how long every worker stops:
                // the policy's max delay does, and never past this message's
                // max age.
                let first = message.first_attempt_ms.unwrap_or(started_ms);
                let age = Duration::from_millis(now_ms().saturating_sub(first));
                let asked = retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
                let wait = self.config.retry.cap_retry_after(asked, age);
                let until = now_ms().saturating_add(millis(wait));
                if let Err(e) = self.limiter.back_off(until).await {
                    tracing::warn!(error = %e, "could not share the back-off");
                }
                self.failed(message, started_ms, "rate limited (429)", Some(wait))
            }
            Err(e) => self.failed(message, started_ms, &e.to_string(), None),
        }
    }

    /// `Some` (the message put back, unsent and its attempts unchanged) when
    /// the circuit is open and `message` is not the probe.
    async fn held_by_circuit(
        &self,
        message: &Message,
        probe: Option<CircuitState>,
    ) -> Option<Settle> {
        let breaker = self.breaker.as_ref()?;
        if probe.is_some() || !breaker.is_open().await {
            return None;
        }
        Some(self.held(message, breaker))
    }

    /// Tells the circuit how a call went. `Some` (the message put back with
    /// its attempts unchanged) when it failed and the circuit is open now
    /// (the probe's failure, the failure that opened it, or one while it is
    /// open).
    async fn tell_circuit(
        &self,
        message: &Message,
        result: &std::result::Result<crate::sink::Delivered, SinkError>,
        probe: Option<CircuitState>,
    ) -> Option<Settle> {
        let breaker = self.breaker.as_ref()?;
        let outcome = match result {
            Err(SinkError::Retryable { .. }) => CallOutcome::Failed,
            _ => CallOutcome::Answered,
        };
        match probe {
            Some(claimed) => breaker.probe_done(claimed, outcome).await,
            None => breaker.record(outcome).await,
        }
        (outcome == CallOutcome::Failed && breaker.known().is_open())
            .then(|| self.held(message, breaker))
    }

    /// `message` back to the queue as it was, due when the circuit may
    /// next be probed.
    fn held(&self, message: &Message, breaker: &CircuitBreaker) -> Settle {
        Settle::Retry {
            message: message.clone(),
            at_ms: breaker.known().next_probe_ms().unwrap_or_else(now_ms),
        }
    }

    /// A retryable failure: schedule a retry, or give up when the policy says so.
    fn failed(
        &self,
        message: &Message,
        started_ms: u64,
        error: &str,
        retry_after: Option<Duration>,
    ) -> Settle {
        let failed = message.attempts + 1;
        let first = message.first_attempt_ms.unwrap_or(started_ms);
        let age = Duration::from_millis(now_ms().saturating_sub(first));
        match self.config.retry.next_delay(failed, age, retry_after) {
            Some(delay) => {
                let mut message = message.clone();
                message.attempts = failed;
                message.first_attempt_ms = Some(first);
                Settle::Retry {
                    message,
                    at_ms: now_ms().saturating_add(millis(delay)),
                }
            }
            None => Settle::Dead {
                message: message.clone(),
                reason: DeadReason {
                    kind: DeadKind::Exhausted,
                    detail: format!("gave up after {failed} attempts; last error: {error}"),
                },
            },
        }
    }
}

/// `d` in whole milliseconds, saturating at `u64::MAX`.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Logs how one batch went, when it went wrong.
fn report_batch(done: Result<()>) {
    match done {
        Ok(()) => {}
        Err(Error::LeaseLost { lease, batch }) => {
            tracing::warn!(%lease, %batch, "lost a lease while delivering; its batch is now in doubt")
        }
        Err(e) => tracing::error!(error = %e, "delivering a batch failed"),
    }
}

/// Logs a lane that ended by a panic.
fn report_lane(done: std::result::Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(error = %e, "a delivery task panicked");
    }
}
