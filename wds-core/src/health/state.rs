//! What a circuit store keeps per endpoint, and how it changes.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::settings::CircuitSettings;

/// The circuit of one endpoint. Times are [`crate::backend::now_ms`] milliseconds.
///
/// A store keeps it as its [`Display`](fmt::Display) text (`closed`, or
/// `open:<since>:<next probe>:<interval>:<probing until>`), which
/// [`FromStr`] reads back; an endpoint never seen is `Closed`.
///
/// Exhaustive on purpose: every [`CircuitStore`](crate::backend::CircuitStore)
/// keeps every state, so a new one is a breaking change of the backend
/// protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Calls go through.
    #[default]
    Closed,
    /// Calls are held; a single probe goes out at `next_probe_ms`.
    Open {
        /// When the circuit opened (the outage as WDS saw it began).
        since_ms: u64,
        /// When a probe may go out.
        next_probe_ms: u64,
        /// The wait before the probe after the next failed one, doubled by
        /// each failed probe up to [`CircuitSettings::max_probe_interval`].
        interval_ms: u64,
        /// While later than now, a worker is sending a probe and no other
        /// may; if that worker dies, the claim lapses at this time.
        probing_until_ms: u64,
    },
}

impl CircuitState {
    /// Newly opened at `now_ms`: the first probe after the first interval.
    pub fn opened(now_ms: u64, settings: &CircuitSettings) -> Self {
        let interval_ms = millis(settings.first_probe_interval);
        CircuitState::Open {
            since_ms: now_ms,
            next_probe_ms: now_ms.saturating_add(interval_ms),
            interval_ms,
            probing_until_ms: 0,
        }
    }

    /// Whether calls are held.
    pub fn is_open(&self) -> bool {
        matches!(self, CircuitState::Open { .. })
    }

    /// When the circuit opened, if it is open.
    pub fn open_since_ms(&self) -> Option<u64> {
        match self {
            CircuitState::Open { since_ms, .. } => Some(*since_ms),
            CircuitState::Closed => None,
        }
    }

    /// When an open circuit may next be probed (`None` when closed).
    pub fn next_probe_ms(&self) -> Option<u64> {
        match self {
            CircuitState::Open {
                next_probe_ms,
                probing_until_ms,
                ..
            } => Some((*next_probe_ms).max(*probing_until_ms)),
            CircuitState::Closed => None,
        }
    }

    /// Whether a worker may claim the probe at `now_ms`: open, the probe
    /// due, and no other probe on the wire.
    pub fn probe_due(&self, now_ms: u64) -> bool {
        self.next_probe_ms().is_some_and(|at| at <= now_ms)
    }

    /// The state of a circuit whose probe a worker claimed at `now_ms`,
    /// holding the claim for `hold` (how long one call may take).
    pub fn probing(&self, now_ms: u64, hold: Duration) -> Self {
        match *self {
            CircuitState::Open {
                since_ms,
                next_probe_ms,
                interval_ms,
                ..
            } => CircuitState::Open {
                since_ms,
                next_probe_ms,
                interval_ms,
                probing_until_ms: now_ms.saturating_add(millis(hold)),
            },
            CircuitState::Closed => CircuitState::Closed,
        }
    }

    /// The state after a failed probe at `now_ms`: still open, the next
    /// probe after twice the interval (at most the settings' maximum).
    pub fn probe_failed(&self, now_ms: u64, settings: &CircuitSettings) -> Self {
        match *self {
            CircuitState::Open {
                since_ms,
                interval_ms,
                ..
            } => {
                let interval_ms = interval_ms
                    .saturating_mul(2)
                    .min(millis(settings.max_probe_interval))
                    .max(1);
                CircuitState::Open {
                    since_ms,
                    next_probe_ms: now_ms.saturating_add(interval_ms),
                    interval_ms,
                    probing_until_ms: 0,
                }
            }
            CircuitState::Closed => CircuitState::Closed,
        }
    }
}

/// `d` in whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CircuitState::Closed => f.write_str("closed"),
            CircuitState::Open {
                since_ms,
                next_probe_ms,
                interval_ms,
                probing_until_ms,
            } => write!(
                f,
                "open:{since_ms}:{next_probe_ms}:{interval_ms}:{probing_until_ms}"
            ),
        }
    }
}

impl FromStr for CircuitState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "closed" {
            return Ok(CircuitState::Closed);
        }
        let bad = || format!("not a circuit state: {s:?}");
        let rest = s.strip_prefix("open:").ok_or_else(bad)?;
        let numbers = rest
            .split(':')
            .map(|n| n.parse::<u64>().map_err(|_| bad()))
            .collect::<Result<Vec<_>, _>>()?;
        let [since_ms, next_probe_ms, interval_ms, probing_until_ms] = numbers[..] else {
            return Err(bad());
        };
        Ok(CircuitState::Open {
            since_ms,
            next_probe_ms,
            interval_ms,
            probing_until_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CircuitSettings {
        CircuitSettings {
            first_probe_interval: Duration::from_secs(1),
            max_probe_interval: Duration::from_secs(5),
            ..CircuitSettings::default()
        }
    }

    #[test]
    fn probes_come_at_growing_intervals_up_to_the_maximum() {
        let s = settings();
        let mut c = CircuitState::opened(1_000, &s);
        assert!(!c.probe_due(1_999));
        let mut at = 2_000;
        let mut gaps = Vec::new();
        for _ in 0..5 {
            assert!(c.probe_due(at), "{c}");
            c = c.probing(at, Duration::from_secs(10));
            assert!(!c.probe_due(at + 1), "one probe at a time");
            let next = c.probe_failed(at, &s);
            let due = next.next_probe_ms().unwrap();
            gaps.push(due - at);
            c = next;
            at = due;
        }
        assert_eq!(gaps, [2_000, 4_000, 5_000, 5_000, 5_000]);
        assert_eq!(c.open_since_ms(), Some(1_000));
    }

    #[test]
    fn a_lapsed_probe_claim_lets_another_worker_probe() {
        let c = CircuitState::opened(0, &settings()).probing(1_000, Duration::from_secs(3));
        assert!(!c.probe_due(3_999));
        assert!(c.probe_due(4_000));
    }

    #[test]
    fn text_round_trips_and_garbage_is_refused() {
        for c in [
            CircuitState::Closed,
            CircuitState::opened(5, &settings()).probing(7, Duration::from_secs(1)),
        ] {
            assert_eq!(c.to_string().parse::<CircuitState>(), Ok(c));
        }
        for bad in ["", "open", "open:1:2:3", "open:1:2:3:x", "shut"] {
            assert!(bad.parse::<CircuitState>().is_err(), "{bad}");
        }
    }
}
