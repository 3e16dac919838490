//! `GET /workers`: the workers the deployment has seen (see
//! [`WorkerRegistry`](wds_core::backend::WorkerRegistry)), each with its last beat, whether it is live
//! and its delivery rate.
//!
//! The rate is computed here, from the last two distinct beats of each
//! worker this API has read (`delivered` difference over `seen_ms`
//! difference): `null` until two were seen. The API reads the beats
//! whenever `/workers` or `/metrics` is asked for, so the rate is the
//! average over the time between two beats it saw — at most a beat
//! interval apart while someone watches the page.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use wds_core::backend::now_ms;
use wds_core::backend::WorkerSeen;

use super::{backend, openapi, ApiError, ControlApi};

/// One worker as `GET /workers` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WorkerView {
    /// Its id (`--worker-name`, or `host-pid`).
    worker: String,
    /// The machine it runs on.
    host: String,
    /// Its process id.
    pid: u32,
    /// When it started (Unix ms, its clock).
    started_ms: u64,
    /// When its last beat was stored (Unix ms, the backend's clock).
    seen_ms: u64,
    /// Whether it beat within the last three beat intervals.
    live: bool,
    /// Sink calls that delivered since it started.
    delivered: u64,
    /// Sink calls that failed, 429s aside.
    failed: u64,
    /// Sink calls answered 429.
    rate_limited: u64,
    /// Sink calls on the wire at its last beat.
    in_flight: u64,
    /// Sink calls it may have on the wire.
    concurrency_limit: u64,
    /// Deliveries a second between its last two beats this API read
    /// (`null` until two were read; 0 once it is not live).
    rate_per_s: Option<f64>,
}

/// `GET /workers`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WorkersBody {
    /// Every worker heard from within the backend's retention, by id.
    workers: Vec<WorkerView>,
}

/// A beat as the rate needs it: `(seen_ms, delivered)`.
type Point = (u64, u64);

/// The last two distinct beats of each worker.
#[derive(Debug, Default)]
pub(crate) struct Rates {
    beats: Mutex<HashMap<String, [Option<Point>; 2]>>,
}

impl Rates {
    /// Records the workers listed now; answers each one's rate.
    fn update(&self, seen: &[WorkerSeen]) -> Vec<Option<f64>> {
        let mut beats = self.beats.lock().unwrap_or_else(|e| e.into_inner());
        // Forget the workers the backend forgot.
        beats.retain(|id, _| seen.iter().any(|s| &s.beat.worker == id));
        seen.iter()
            .map(|s| {
                let entry = beats.entry(s.beat.worker.clone()).or_default();
                let now = (s.seen_ms, s.beat.delivered);
                if entry[1].is_none_or(|(at, _)| at != s.seen_ms) {
                    *entry = [entry[1], Some(now)];
                }
                let (before, last) = (entry[0]?, entry[1]?);
                let ms = last.0.checked_sub(before.0).filter(|ms| *ms > 0)?;
                // A restarted worker with the same name counts from 0 again.
                let delivered = last.1.checked_sub(before.1)?;
                Some(delivered as f64 * 1000.0 / ms as f64)
            })
            .collect()
    }
}

impl ControlApi {
    /// The workers seen, as the API shows them (`None` without a registry).
    pub(crate) async fn worker_views(&self) -> Result<Option<Vec<WorkerView>>, ApiError> {
        let Some(registry) = &self.inner.config.workers else {
            return Ok(None);
        };
        let mut seen = backend(registry.workers()).await?;
        seen.sort_by(|a, b| a.beat.worker.cmp(&b.beat.worker));
        let rates = self.inner.worker_rates.update(&seen);
        let live_ms = u64::try_from(self.inner.config.worker_beat_interval.as_millis())
            .unwrap_or(u64::MAX)
            .saturating_mul(3);
        let now = now_ms();
        let views = seen
            .into_iter()
            .zip(rates)
            .map(|(s, rate)| {
                let live = now.saturating_sub(s.seen_ms) <= live_ms;
                let b = s.beat;
                WorkerView {
                    worker: b.worker,
                    host: b.host,
                    pid: b.pid,
                    started_ms: b.started_ms,
                    seen_ms: s.seen_ms,
                    live,
                    delivered: b.delivered,
                    failed: b.failed,
                    rate_limited: b.rate_limited,
                    in_flight: b.in_flight,
                    concurrency_limit: b.concurrency_limit,
                    rate_per_s: if live {
                        rate.map(|r| (r * 10.0).round() / 10.0)
                    } else {
                        Some(0.0)
                    },
                }
            })
            .collect();
        Ok(Some(views))
    }
}

/// How many of `views` are live and how many gone.
pub(crate) fn live_and_gone(views: &[WorkerView]) -> (usize, usize) {
    let live = views.iter().filter(|v| v.live).count();
    (live, views.len() - live)
}

#[utoipa::path(
    get,
    path = "/workers",
    responses(
        (status = 200, description = "The workers seen: each one's last beat (`worker`, `host`, `pid`, `started_ms`, `seen_ms`, counters since it started), `live` (beat within three beat intervals) and `rate_per_s` (between its last two beats)", body = WorkersBody),
        (status = 401, description = "Missing or wrong token", body = openapi::ErrorBody),
        (status = 501, description = "This API was started without a worker registry", body = openapi::ErrorBody),
        (status = 503, description = "The backend is unavailable", body = openapi::ErrorBody),
    )
)]
pub(super) async fn workers(State(api): State<ControlApi>) -> Result<Json<WorkersBody>, ApiError> {
    match api.worker_views().await? {
        Some(workers) => Ok(Json(WorkersBody { workers })),
        None => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "this API was started without a worker registry",
        )),
    }
}

#[cfg(test)]
mod tests {
    use wds_core::backend::WorkerBeat;

    use super::*;

    fn seen(id: &str, at: u64, delivered: u64) -> WorkerSeen {
        WorkerSeen::new(WorkerBeat::new(id).calls(delivered, 0, 0), at)
    }

    #[test]
    fn rate_is_between_the_last_two_distinct_beats() {
        let rates = Rates::default();
        assert_eq!(rates.update(&[seen("a", 1_000, 10)]), vec![None]);
        // The same beat read again changes nothing.
        assert_eq!(rates.update(&[seen("a", 1_000, 10)]), vec![None]);
        assert_eq!(rates.update(&[seen("a", 3_000, 110)]), vec![Some(50.0)]);
        assert_eq!(rates.update(&[seen("a", 3_000, 110)]), vec![Some(50.0)]);
        assert_eq!(
            rates.update(&[seen("a", 5_000, 110), seen("b", 5_000, 1)]),
            vec![Some(0.0), None]
        );
        // A worker restarted under the same name: no rate until its next beat.
        assert_eq!(rates.update(&[seen("a", 7_000, 5)]), vec![None]);
        assert_eq!(rates.update(&[seen("a", 9_000, 25)]), vec![Some(10.0)]);
        assert_eq!(rates.beats.lock().unwrap().len(), 1, "b was forgotten");
    }
}
