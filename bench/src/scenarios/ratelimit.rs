//! Scenario 4, `ratelimit`: 1,000/s shared by four workers through Redis.

use std::time::Duration;

use crate::table::Target;
use crate::{Bench, Fallible};
use wds_harness::receiver::ProductReceiver;

impl Bench {
    /// Scenario 4: 1,000/s with burst 50, shared by four workers through Redis.
    pub(crate) async fn ratelimit(&mut self) -> Fallible<()> {
        eprintln!("[4] rate-limit accuracy: 1,000/s, four workers");
        let (rate, burst) = (1_000u64, 50u64);
        let seconds = if self.args.full { 30 } else { 10 };
        let lines = rate * seconds;
        let url = self.redis_url();
        // A receiver of its own: the shared one has taken every earlier
        // scenario's webhooks by now, and its bookkeeping for them (the
        // dedupe set, the CSV) delayed the arrival times it noted by enough
        // to put ~1,100 of them in one second (full runs only).
        let receiver =
            ProductReceiver::start(self.dir.path(), "rate-receiver", None, true, self.t0).await?;
        let name = self.next_name("ratelimit");
        let d = self
            .deploy(
                &name,
                &url,
                4,
                &["--rate", &rate.to_string(), "--burst", &burst.to_string()],
                &receiver.url,
            )
            .await?;
        let patience = Duration::from_secs(60 + 2 * seconds);
        let times = d.run_file(&receiver, &name, lines, patience).await;
        receiver.stop().await;
        let times = times?;
        let (first, last) = (times[0], times[times.len() - 1]);
        // Steady state: after the first second, which may hold the burst.
        let steady: Vec<u64> = times
            .iter()
            .copied()
            .filter(|t| *t >= first + 1_000_000)
            .collect();
        let steady_rate = match (steady.first(), steady.last()) {
            (Some(a), Some(b)) if b > a => (steady.len() - 1) as f64 / ((b - a) as f64 / 1e6),
            _ => 0.0,
        };
        let whole = (times.len() - 1) as f64 / ((last - first) as f64 / 1e6).max(1e-3);
        let mut max_window = 0usize;
        let mut start = 0;
        for (end, t) in times.iter().enumerate() {
            while times[start] + 1_000_000 <= *t {
                start += 1;
            }
            max_window = max_window.max(end - start + 1);
        }
        let scenario = "4 rate limit 1000/s ×4";
        self.table.add(
            scenario,
            &format!("achieved rate after the first second, % of the limit ({lines} lines)"),
            steady_rate / rate as f64 * 100.0,
            format!(
                "{steady_rate:.1}/s = {:.1}%",
                steady_rate / rate as f64 * 100.0
            ),
            Target::Between(97.0, 100.0, "%"),
        );
        self.table.add(
            scenario,
            "whole-run rate, first to last delivery (includes the burst)",
            0.0,
            format!("{whole:.1}/s"),
            Target::None,
        );
        self.table.add(
            scenario,
            "largest count in any 1 s window",
            max_window as f64,
            format!("{max_window}"),
            Target::AtMost((rate + burst) as f64, ""),
        );
        Ok(())
    }
}
