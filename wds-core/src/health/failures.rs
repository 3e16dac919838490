//! A worker's recent calls: whether failure is sustained.

use std::collections::VecDeque;

use super::settings::CircuitSettings;

/// The last [`CircuitSettings::sample`] calls of one worker within the
/// window, and how many of them failed. Counting the last calls rather
/// than every call of the window makes an outage that follows a fast,
/// healthy period show at once: thousands of earlier successes would
/// otherwise dilute its failures for the whole window.
#[derive(Debug, Default)]
pub(crate) struct Failures {
    /// `(ended at, failed)`, oldest first.
    calls: VecDeque<(u64, bool)>,
    failed: u64,
}

impl Failures {
    /// Counts one call that ended at `now_ms`, and says whether failure is
    /// now sustained enough to open the circuit.
    pub(crate) fn record(&mut self, now_ms: u64, failed: bool, s: &CircuitSettings) -> bool {
        let window_ms = u64::try_from(s.window.as_millis()).unwrap_or(u64::MAX);
        self.calls.push_back((now_ms, failed));
        self.failed += u64::from(failed);
        let sample = s.sample.max(1) as usize;
        while let Some(&(at, old_failed)) = self.calls.front() {
            if self.calls.len() <= sample && at.saturating_add(window_ms) > now_ms {
                break;
            }
            self.calls.pop_front();
            self.failed -= u64::from(old_failed);
        }
        let calls = self.calls.len() as u64;
        failed
            && self.failed >= u64::from(s.min_failures)
            && self.failed * 100 >= calls * u64::from(s.failure_percent)
    }

    /// Forgets every call (the circuit closed: a new window starts).
    pub(crate) fn clear(&mut self) {
        self.calls.clear();
        self.failed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> CircuitSettings {
        CircuitSettings {
            window: Duration::from_secs(10),
            min_failures: 5,
            failure_percent: 50,
            sample: 20,
            ..CircuitSettings::default()
        }
    }

    #[test]
    fn opens_on_enough_failures_that_are_a_large_enough_share() {
        let s = settings();
        let mut f = Failures::default();
        for i in 0..4 {
            assert!(!f.record(1_000 + i, true, &s), "below min_failures");
        }
        assert!(f.record(1_010, true, &s), "the fifth failure in the window");

        let mut mostly_ok = Failures::default();
        for i in 0..15 {
            mostly_ok.record(1_000 + i, false, &s);
        }
        for i in 0..7 {
            assert!(!mostly_ok.record(1_100 + i, true, &s), "7 of the last 20");
        }
        assert!(!mostly_ok.record(1_200, false, &s), "a success never opens");
    }

    #[test]
    fn an_outage_after_many_successes_shows_within_the_sample() {
        let s = settings();
        let mut f = Failures::default();
        for i in 0..10_000 {
            f.record(1_000 + i / 10, false, &s);
        }
        let opened_after = (1..=20).find(|n| f.record(2_000 + n, true, &s));
        assert_eq!(opened_after, Some(10), "half of the last 20 calls");
    }

    #[test]
    fn failures_older_than_the_window_are_forgotten() {
        let s = settings();
        let mut f = Failures::default();
        for i in 0..4 {
            f.record(1_000 + i, true, &s);
        }
        // 4 old failures, 11 s later one more: not five within 10 s.
        assert!(!f.record(12_000, true, &s));
        f.clear();
        for i in 0..4 {
            assert!(!f.record(13_000 + i, true, &s));
        }
    }
}
