//! Scenario 3, `scaling`: a receiver answering after 100 ms; 1, 2 and 4
//! workers at concurrency 128 against workers × 128 / 0.1 s.

use std::time::Duration;

use wds_harness::receiver::ProductReceiver;

use crate::table::Target;
use crate::{Bench, Fallible};

impl Bench {
    /// Scenario 3: A receiver answering after 100 ms: 1, 2 and 4 workers at
    /// concurrency 128, against workers × 128 / 0.1 s.
    pub(crate) async fn scaling(&mut self) -> Fallible<()> {
        eprintln!("[3] latency-bound scaling: receiver answers after 100 ms");
        let slow = ProductReceiver::start(
            self.dir.path(),
            "slow-receiver",
            Some(Duration::from_millis(100)),
            true,
            self.t0,
        )
        .await?;
        let seconds = if self.args.full { 15 } else { 5 };
        let url = self.redis_url();
        let result = async {
            for workers in [1u64, 2, 4] {
                let ideal = workers as f64 * 128.0 / 0.1;
                let lines = (ideal as u64) * seconds;
                let name = self.next_name(&format!("scaling{workers}"));
                let d = self
                    .deploy(
                        &name,
                        &url,
                        workers as usize,
                        &["--concurrency", "128"],
                        &slow.url,
                    )
                    .await?;
                let patience = Duration::from_secs(120 + 2 * seconds);
                let times = d.run_file(&slow, &name, lines, patience).await?;
                let span = times
                    .last()
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(times.first().copied().unwrap_or(0));
                let rate = times.len().saturating_sub(1) as f64 / (span as f64 / 1e6).max(1e-3);
                self.table.add(
                    "3 scaling (100 ms API)",
                    &format!(
                        "{workers} worker(s) × 128, {lines} lines: deliveries/s (ideal {ideal:.0})"
                    ),
                    100.0 * rate / ideal,
                    format!("{rate:.0}/s = {:.1}% of ideal", 100.0 * rate / ideal),
                    Target::AtLeast(90.0, "%"),
                );
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }
        .await;
        slow.stop().await;
        result
    }
}
