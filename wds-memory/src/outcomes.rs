//! A job's per-line outcomes in a bounded amount of memory: one byte of
//! state per line, a packed receipt per delivered line (in blocks allocated
//! only where lines were delivered), and the full detail (reasons, the line a
//! duplicate repeats) for the first `detail_limit` rejected or dead lines.

use std::collections::HashMap;

use wds_core::{
    backend::{LineOutcome, Receipt, RejectKind},
    DeadKind, DeadReason,
};

/// Lines per receipt block.
const BLOCK: usize = 1024;

/// What a line's detail says when it was not kept.
pub(crate) const NOT_KEPT: &str = wds_core::backend::DETAIL_NOT_KEPT;

/// The state byte of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum State {
    Pending = 0,
    Delivered,
    Permanent,
    Exhausted,
    InDoubt,
    Invalid,
    Duplicate,
}

impl State {
    fn from_byte(b: u8) -> State {
        match b {
            1 => State::Delivered,
            2 => State::Permanent,
            3 => State::Exhausted,
            4 => State::InDoubt,
            5 => State::Invalid,
            6 => State::Duplicate,
            _ => State::Pending,
        }
    }

    fn of(outcome: &LineOutcome) -> State {
        match outcome {
            LineOutcome::Delivered { .. } => State::Delivered,
            LineOutcome::Dead { reason } => match reason.kind {
                DeadKind::Permanent => State::Permanent,
                DeadKind::Exhausted => State::Exhausted,
                DeadKind::InDoubt => State::InDoubt,
            },
            LineOutcome::Rejected { kind } => match kind {
                RejectKind::Invalid { .. } => State::Invalid,
                RejectKind::Duplicate { .. } => State::Duplicate,
            },
        }
    }
}

/// A receipt in 16 bytes: `attempt` saturates at 65,535 and `latency_ms` at
/// about 49 days, neither of which a delivery reaches.
#[derive(Debug, Clone, Copy, Default)]
struct Packed {
    at_ms: u64,
    latency_ms: u32,
    attempt: u16,
    /// 0 for none.
    status: u16,
}

impl Packed {
    fn new(r: &Receipt) -> Self {
        Packed {
            at_ms: r.at_ms,
            latency_ms: u32::try_from(r.latency_ms).unwrap_or(u32::MAX),
            attempt: u16::try_from(r.attempt).unwrap_or(u16::MAX),
            status: r.status.unwrap_or(0),
        }
    }

    fn receipt(self) -> Receipt {
        Receipt {
            status: (self.status != 0).then_some(self.status),
            attempt: u32::from(self.attempt),
            latency_ms: u64::from(self.latency_ms),
            at_ms: self.at_ms,
        }
    }
}

/// The outcomes of one job's lines; see the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct Outcomes {
    /// Indexed by line.
    states: Vec<u8>,
    receipts: Vec<Option<Box<[Packed]>>>,
    /// Full outcomes of the lines kept in detail.
    detail: HashMap<u64, LineOutcome>,
}

impl Outcomes {
    /// Records `outcome` for `line`; a rejected or dead one in detail when
    /// `keep_detail` (the caller counts the job's lines kept so).
    pub(crate) fn set(&mut self, line: u64, outcome: &LineOutcome, keep_detail: bool) {
        let Ok(at) = usize::try_from(line) else {
            return;
        };
        if self.states.len() <= at {
            self.states.resize(at + 1, State::Pending as u8);
        }
        self.states[at] = State::of(outcome) as u8;
        match outcome {
            LineOutcome::Delivered { receipt } => {
                let (block, slot) = (at / BLOCK, at % BLOCK);
                if self.receipts.len() <= block {
                    self.receipts.resize_with(block + 1, || None);
                }
                let block = self.receipts[block]
                    .get_or_insert_with(|| vec![Packed::default(); BLOCK].into_boxed_slice());
                block[slot] = Packed::new(receipt);
                self.detail.remove(&line);
            }
            _ if keep_detail => {
                self.detail.insert(line, outcome.clone());
            }
            _ => {
                self.detail.remove(&line);
            }
        }
    }

    /// Forgets `line`'s outcome (a replayed dead letter is pending again).
    pub(crate) fn clear(&mut self, line: u64) {
        if let Some(state) = usize::try_from(line)
            .ok()
            .and_then(|at| self.states.get_mut(at))
        {
            *state = State::Pending as u8;
        }
        self.detail.remove(&line);
    }

    /// The outcome of `line`, `None` while it has none.
    pub(crate) fn get(&self, line: u64) -> Option<LineOutcome> {
        let at = usize::try_from(line).ok()?;
        let state = State::from_byte(*self.states.get(at)?);
        if let Some(detail) = self.detail.get(&line) {
            return Some(detail.clone());
        }
        let dead = |kind| LineOutcome::Dead {
            reason: DeadReason {
                kind,
                detail: NOT_KEPT.into(),
            },
        };
        Some(match state {
            State::Pending => return None,
            State::Delivered => {
                let packed = self.receipts.get(at / BLOCK)?.as_ref()?[at % BLOCK];
                LineOutcome::Delivered {
                    receipt: packed.receipt(),
                }
            }
            State::Permanent => dead(DeadKind::Permanent),
            State::Exhausted => dead(DeadKind::Exhausted),
            State::InDoubt => dead(DeadKind::InDoubt),
            State::Invalid => LineOutcome::Rejected {
                kind: RejectKind::Invalid {
                    reason: NOT_KEPT.into(),
                },
            },
            // The line it repeats was not kept: 0 says unknown.
            State::Duplicate => LineOutcome::Rejected {
                kind: RejectKind::Duplicate { of_line: 0 },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_for_the_first_lines_then_states_only() {
        let mut o = Outcomes::default();
        let invalid = |r: &str| LineOutcome::Rejected {
            kind: RejectKind::Invalid { reason: r.into() },
        };
        o.set(1, &invalid("first"), true);
        o.set(2, &invalid("second"), false);
        let receipt = Receipt {
            status: Some(200),
            attempt: 2,
            latency_ms: 7,
            at_ms: 1_700_000_000_000,
        };
        o.set(
            5000,
            &LineOutcome::Delivered {
                receipt: receipt.clone(),
            },
            true,
        );
        assert_eq!(o.get(1), Some(invalid("first")));
        assert_eq!(o.get(2), Some(invalid(NOT_KEPT)));
        assert_eq!(o.get(3), None);
        assert_eq!(o.get(5000), Some(LineOutcome::Delivered { receipt }));
        assert_eq!(o.get(1 << 40), None);
        o.clear(1);
        assert_eq!(o.get(1), None);
        // Only one receipt block, where the delivered line is.
        assert_eq!(o.receipts.iter().filter(|b| b.is_some()).count(), 1);
    }
}
