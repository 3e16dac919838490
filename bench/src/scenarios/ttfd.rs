//! Scenario 6, `ttfd`: time from a file's rename into the inbox to its
//! first delivery, with an idle initiator and worker on Redis.

use std::time::Duration;

use crate::deploy::{land, write_users};
use crate::table::{quantile, Target};
use crate::{Bench, Fallible};

impl Bench {
    /// Scenario 6: Time from a file's rename into the inbox to its first delivery,
    /// with an idle initiator and worker on Redis.
    pub(crate) async fn ttfd(&mut self) -> Fallible<()> {
        eprintln!("[6] time to first delivery");
        let url = self.redis_url();
        let webhook = self.receiver.url.clone();
        let name = self.next_name("ttfd");
        let mut d = self.deploy(&name, &url, 1, &[], &webhook).await?;
        let mut samples = Vec::new();
        let result = async {
            for run in 0..self.args.ttfd_runs {
                let lines = 100;
                let (part, _job) = write_users(
                    &d.inbox,
                    &format!("{name}-{run}.csv"),
                    lines,
                    &format!("{name}-{run}"),
                )?;
                // Idle long enough for the worker's polling to reach its slowest pace.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let (base, from) = (self.receiver.accepted(), self.receiver.noted());
                let landed = self.t0.elapsed().as_micros() as u64;
                land(&part)?;
                self.receiver
                    .wait_for(base + lines, Duration::from_secs(30))
                    .await?;
                let first = self
                    .receiver
                    .times_from(from)
                    .into_iter()
                    .min()
                    .unwrap_or(landed);
                samples.push(first.saturating_sub(landed) / 1_000);
            }
            d.check_running()
        }
        .await;
        d.stop().await;
        result?;
        samples.sort_unstable();
        let median = quantile(&samples, 0.5);
        let max = samples.last().copied().unwrap_or(0);
        self.table.add(
            "6 first delivery",
            &format!(
                "rename → first webhook, Redis, idle worker: median of {} runs",
                samples.len()
            ),
            median as f64,
            format!("{median} ms"),
            Target::AtMost(200.0, " ms"),
        );
        self.table.add(
            "6 first delivery",
            "worst run",
            max as f64,
            format!("{max} ms (all: {samples:?})"),
            Target::AtMost(200.0, " ms"),
        );
        Ok(())
    }
}
