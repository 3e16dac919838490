//! The sending window: how many batches a deliverer may have marked as
//! sending and not yet settled (its in-doubt set), and the hand-over of a
//! freed slot to the next waiting batch.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::error::Result;
use crate::model::Lease;

/// A fixed number of sending slots. A batch may be marked as sending only
/// while it holds a [`Slot`], and keeps it until it is settled.
#[derive(Debug)]
pub(crate) struct Window {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    free: usize,
    waiting: VecDeque<Waiter>,
    next_ticket: u64,
}

/// A batch waiting for a slot.
#[derive(Debug)]
pub(crate) struct Waiter {
    ticket: u64,
    /// The waiting batch's lease, for the holder that hands its slot over.
    pub(crate) lease: Lease,
    grant: oneshot::Sender<Grant>,
}

/// A slot handed to a waiting batch.
#[derive(Debug)]
pub(crate) struct Grant {
    pub(crate) slot: Slot,
    /// `Some` when the previous holder already marked the batch as sending
    /// (in the same call that settled its own batch), with how that went;
    /// `None` when the batch must be marked by its own task.
    pub(crate) marked: Option<Result<()>>,
}

/// Where a batch stands in the queue for a slot.
#[derive(Debug)]
pub(crate) enum Entry {
    /// A slot was free: it is this batch's now.
    Slot(Slot),
    /// No slot was free: one arrives on the receiver. Withdraw with
    /// [`Window::withdraw`] to stop waiting.
    Waiting {
        ticket: u64,
        grant: oneshot::Receiver<Grant>,
    },
}

impl Window {
    /// A window of `slots` slots, all free.
    pub(crate) fn new(slots: usize) -> Arc<Self> {
        Arc::new(Window {
            state: Mutex::new(State {
                free: slots,
                waiting: VecDeque::new(),
                next_ticket: 0,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The critical sections below cannot panic halfway; a poisoned lock
        // still holds consistent counts.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a free slot, or joins the queue of waiting batches (first come,
    /// first served).
    pub(crate) fn enter(self: &Arc<Self>, lease: &Lease) -> Entry {
        let mut state = self.lock();
        if state.free > 0 && state.waiting.is_empty() {
            state.free -= 1;
            return Entry::Slot(Slot {
                window: Some(self.clone()),
            });
        }
        let (tx, rx) = oneshot::channel();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push_back(Waiter {
            ticket,
            lease: lease.clone(),
            grant: tx,
        });
        Entry::Waiting { ticket, grant: rx }
    }

    /// Leaves the queue. Returns false when it is too late: a slot has
    /// already been handed to this batch (and arrives on its receiver).
    pub(crate) fn withdraw(&self, ticket: u64) -> bool {
        let mut state = self.lock();
        match state.waiting.iter().position(|w| w.ticket == ticket) {
            Some(at) => {
                state.waiting.remove(at);
                true
            }
            None => false,
        }
    }

    /// The longest-waiting batch whose task is still there, taken out of the
    /// queue: the holder of `slot` settles its own batch and marks this one
    /// in one call, then passes the slot with [`Waiter::hand`].
    pub(crate) fn next_waiter(&self) -> Option<Waiter> {
        let mut state = self.lock();
        while let Some(waiter) = state.waiting.pop_front() {
            if !waiter.grant.is_closed() {
                return Some(waiter);
            }
        }
        None
    }

    /// A slot given back: to the next waiting batch (to be marked by its own
    /// task), or free.
    fn give_back(self: &Arc<Self>) {
        loop {
            let waiter = {
                let mut state = self.lock();
                match state.waiting.pop_front() {
                    Some(waiter) => waiter,
                    None => {
                        state.free += 1;
                        return;
                    }
                }
            };
            let grant = Grant {
                slot: Slot {
                    window: Some(self.clone()),
                },
                marked: None,
            };
            match waiter.grant.send(grant) {
                Ok(()) => return,
                // Its task is gone; take the slot back and try the next.
                Err(mut grant) => grant.slot.window = None,
            }
        }
    }
}

impl Waiter {
    /// Passes `slot` to this waiting batch, with the result of marking it.
    /// If the batch's task is gone, the slot goes back to the window.
    pub(crate) fn hand(self, slot: Slot, marked: Option<Result<()>>) {
        // On failure the grant (and so the slot) is dropped: given back.
        let _ = self.grant.send(Grant { slot, marked });
    }
}

/// A held sending slot; dropping it gives it back.
#[derive(Debug)]
pub(crate) struct Slot {
    window: Option<Arc<Window>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(window) = self.window.take() {
            window.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Batch, BatchId, LeaseId};

    fn lease(n: u64) -> Lease {
        Lease {
            id: LeaseId::new(format!("l{n}")),
            batch: Batch {
                id: BatchId::new(format!("b{n}")),
                messages: Vec::new(),
            },
            deadline_ms: 0,
            previously_sending: false,
        }
    }

    fn slot(entry: Entry) -> Slot {
        match entry {
            Entry::Slot(slot) => slot,
            Entry::Waiting { .. } => panic!("expected a free slot"),
        }
    }

    fn waiting(entry: Entry) -> (u64, oneshot::Receiver<Grant>) {
        match entry {
            Entry::Waiting { ticket, grant } => (ticket, grant),
            Entry::Slot(_) => panic!("expected to wait"),
        }
    }

    #[test]
    fn slots_are_counted_and_passed_on_in_order() {
        let window = Window::new(2);
        let a = slot(window.enter(&lease(1)));
        let _b = slot(window.enter(&lease(2)));
        let (_, mut c) = waiting(window.enter(&lease(3)));
        let (_, mut d) = waiting(window.enter(&lease(4)));
        drop(a);
        let grant = c.try_recv().expect("the first waiter gets the freed slot");
        assert!(grant.marked.is_none(), "a dropped slot is not a hand-over");
        assert!(d.try_recv().is_err(), "one slot freed, one waiter served");
        // A hand-over with a mark skips the queue's bookkeeping.
        let waiter = window.next_waiter().expect("d still waits");
        assert_eq!(waiter.lease.id.as_str(), "l4");
        waiter.hand(grant.slot, Some(Ok(())));
        let grant = d.try_recv().expect("handed over");
        assert!(matches!(grant.marked, Some(Ok(()))));
        drop(grant);
        // Nobody waits: the slot is free again, and taken without waiting.
        let _e = slot(window.enter(&lease(5)));
        let (_, _f) = waiting(window.enter(&lease(6)));
    }

    #[test]
    fn a_withdrawn_or_vanished_waiter_gets_nothing() {
        let window = Window::new(1);
        let a = slot(window.enter(&lease(1)));
        let (t2, _r2) = waiting(window.enter(&lease(2)));
        let (_, r3) = waiting(window.enter(&lease(3)));
        let (_, mut r4) = waiting(window.enter(&lease(4)));
        assert!(window.withdraw(t2));
        assert!(!window.withdraw(t2), "withdrawn once");
        drop(r3);
        drop(a);
        let grant = r4.try_recv().expect("the slot skips the gone waiters");
        drop(grant);
        assert!(window.next_waiter().is_none());
        let _again = slot(window.enter(&lease(5)));
        let (_, _r6) = waiting(window.enter(&lease(6)));
    }
}
