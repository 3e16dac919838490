//! When a circuit opens and how it is probed.

use std::time::Duration;

use crate::error::{Error, Result};

/// Settings of the [`super::CircuitBreaker`].
///
/// A worker opens the circuit when, among its last `sample` calls within
/// the last `window`, at least `min_failures` failed (connection error,
/// timeout, 5xx) and they were at least `failure_percent` of them. A 429 or another 4xx
/// is an answer, not a failure: the endpoint is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CircuitSettings {
    /// Whether the breaker runs at all. Default true.
    pub enabled: bool,
    /// How far back failures are counted. Default 10 s.
    pub window: Duration,
    /// Failures within the window before the circuit may open. Default 20.
    pub min_failures: u32,
    /// How many of a worker's last calls count (so that many earlier
    /// successes cannot hide an outage). Default 100.
    pub sample: u32,
    /// Share of failed calls within the window, in percent. Default 50.
    pub failure_percent: u32,
    /// Wait from opening to the first probe. Default 1 s.
    pub first_probe_interval: Duration,
    /// Longest wait between two probes (each failed probe doubles the
    /// wait up to this). Default 30 s.
    pub max_probe_interval: Duration,
}

impl Default for CircuitSettings {
    fn default() -> Self {
        CircuitSettings {
            enabled: true,
            window: Duration::from_secs(10),
            min_failures: 20,
            sample: 100,
            failure_percent: 50,
            first_probe_interval: Duration::from_secs(1),
            max_probe_interval: Duration::from_secs(30),
        }
    }
}

impl CircuitSettings {
    /// Breaker off: every call goes through whatever the endpoint does.
    pub fn disabled() -> Self {
        CircuitSettings {
            enabled: false,
            ..CircuitSettings::default()
        }
    }

    /// Checks the settings, with a message that names the bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |setting: &'static str, reason: &str| Err(Error::config(setting, reason));
        if self.window < Duration::from_millis(100) {
            return bad("circuit.window", "must be at least 100 ms");
        }
        if self.min_failures == 0 {
            return bad("circuit.min_failures", "must be at least 1");
        }
        if self.sample < self.min_failures {
            return bad("circuit.sample", "must be at least min_failures");
        }
        if !(1..=100).contains(&self.failure_percent) {
            return bad("circuit.failure_percent", "must be between 1 and 100");
        }
        if self.first_probe_interval.is_zero() {
            return bad("circuit.first_probe_interval", "must be positive");
        }
        if self.max_probe_interval < self.first_probe_interval {
            return bad(
                "circuit.max_probe_interval",
                "must be at least first_probe_interval",
            );
        }
        Ok(())
    }
}
