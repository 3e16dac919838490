//! Receipts on request: `GET /jobs/{id}/lines/{n}` (what became of one
//! line) and `GET /jobs/{id}/users/{userId}` (did this user get it).
//!
//! A line's outcome is stored by the backend; which lines name a user is
//! not (a per-user index would cost every job a key per line). The job's
//! file is that index already: it is found by its identity in the inbox,
//! the archive or the rejected folder (see [`super::job_files`]) and read
//! again with the job's format, at constant memory. A scan of a
//! 100,000-line file takes milliseconds (`docs/operations.md`).

use std::path::PathBuf;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use wds_core::parse::{Limits, Parsed, Position, RecordReader};
use wds_core::{
    backend::{LineOutcome, Receipt, RejectKind},
    DeadKind, DeadReason, JobId, JobReport, MessageId,
};

use super::{backend, ApiError, ControlApi};

/// Lines of one user returned at most (a file may name a user many times).
pub(crate) const MAX_USER_LINES: usize = 1_000;

/// Dead letters of a job looked through for a dead line's attempts.
const DEAD_LETTERS_SEARCHED: usize = 10_000;

/// What became of one line.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LineStatus {
    /// The 1-based line.
    line: u64,
    /// `delivered`, `dead`, `invalid`, `duplicate` or `pending` (read and
    /// not yet in a terminal state).
    #[schema(value_type = String)]
    outcome: &'static str,
    /// The proof of delivery, for a delivered line.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    receipt: Option<Receipt>,
    /// Why a line is dead (`kind`: permanent, exhausted or in_doubt, and a
    /// detail) or invalid.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    reason: Option<serde_json::Value>,
    /// The first line of the same user and message, for a duplicate.
    #[serde(skip_serializing_if = "Option::is_none")]
    of_line: Option<u64>,
    /// Calls made to the endpoint: the receipt's attempt for a delivered
    /// line; for a dead one (among the first dead letters listed), the
    /// failed calls, the last included; for an in-doubt one, the calls known
    /// to have failed (whether its last call arrived is what is in doubt).
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<u32>,
}

impl LineStatus {
    fn new(line: u64, outcome: &'static str) -> Self {
        LineStatus {
            line,
            outcome,
            receipt: None,
            reason: None,
            of_line: None,
            attempts: None,
        }
    }
}

/// The answer of `GET /jobs/{id}/lines/{n}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LineAnswer {
    /// The job.
    job: String,
    #[serde(flatten)]
    status: LineStatus,
}

/// The answer of `GET /jobs/{id}/users/{userId}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct UserAnswer {
    /// The job.
    job: String,
    /// The user asked about.
    user_id: String,
    /// Whether any line of this user was delivered.
    delivered: bool,
    /// Every line of the file naming the user (up to 1,000), in order.
    lines: Vec<LineStatus>,
}

async fn known_job(api: &ControlApi, id: String) -> Result<(JobId, JobReport), ApiError> {
    let job = JobId::new(id);
    match backend(api.inner.offsets.report(&job)).await? {
        Some(report) => Ok((job, report)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no job {job}"),
        )),
    }
}

/// What the backend says of one line, `None` when it has no outcome yet.
async fn status_of(
    api: &ControlApi,
    job: &JobId,
    line: u64,
) -> Result<Option<LineStatus>, ApiError> {
    let id = MessageId {
        job: job.clone(),
        line,
    };
    let Some(outcome) = backend(api.inner.offsets.outcome(&id)).await? else {
        return Ok(None);
    };
    #[allow(unreachable_patterns)] // outcomes added later answer by their name
    let status = match outcome {
        LineOutcome::Delivered { receipt } => LineStatus {
            attempts: Some(receipt.attempt),
            receipt: Some(receipt),
            ..LineStatus::new(line, "delivered")
        },
        LineOutcome::Dead { reason } => LineStatus {
            attempts: dead_attempts(api, &id, reason.kind).await?,
            reason: Some(dead_reason(&reason)),
            ..LineStatus::new(line, "dead")
        },
        LineOutcome::Rejected {
            kind: RejectKind::Invalid { reason },
        } => LineStatus {
            reason: Some(serde_json::Value::String(reason)),
            ..LineStatus::new(line, "invalid")
        },
        LineOutcome::Rejected {
            kind: RejectKind::Duplicate { of_line },
        } => LineStatus {
            of_line: Some(of_line),
            ..LineStatus::new(line, "duplicate")
        },
    };
    Ok(Some(status))
}

fn dead_reason(reason: &DeadReason) -> serde_json::Value {
    serde_json::to_value(reason).unwrap_or(serde_json::Value::Null)
}

/// A dead line's attempts, from its dead letter when it is among the first
/// the backend lists. A dead letter's message counts the failed calls
/// before its last, which failed too unless it is in doubt.
async fn dead_attempts(
    api: &ControlApi,
    id: &MessageId,
    kind: DeadKind,
) -> Result<Option<u32>, ApiError> {
    let letters = backend(
        api.inner
            .queue
            .dead_letters(Some(&id.job), DEAD_LETTERS_SEARCHED),
    )
    .await?;
    let last = u32::from(kind != DeadKind::InDoubt);
    Ok(letters
        .into_iter()
        .find(|l| &l.message.id == id)
        .map(|l| l.message.attempts + last))
}

/// `GET /jobs/{id}/lines/{n}`.
#[utoipa::path(
    get,
    path = "/jobs/{id}/lines/{n}",
    params(
        ("id" = String, Path, description = "The job id"),
        ("n" = u64, Path, description = "The 1-based line (for a JSON array, the element)"),
    ),
    responses(
        (status = 200, description = "What became of the line", body = LineAnswer),
        (status = 400, description = "Not a line number", body = super::openapi::ErrorBody),
        (status = 404, description = "No such job, or the line holds no record", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn line(
    State(api): State<ControlApi>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<LineAnswer>, ApiError> {
    let (id, n) = path_params(path)?;
    let line = n.parse::<u64>().ok().filter(|l| *l >= 1).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("line must be a whole number from 1 up, not {n:?}"),
        )
    })?;
    let (job, report) = known_job(&api, id).await?;
    let status = match status_of(&api, &job, line).await? {
        Some(status) => status,
        None => {
            let checkpoint = backend(api.inner.offsets.checkpoint(&job)).await?;
            let read = line < checkpoint.line;
            // Pending: read and not yet settled, or not yet read. Otherwise
            // the line holds no record (a header or a blank line), or the
            // file has no such line.
            if (read && !report.is_finished()) || (!read && !checkpoint.done) {
                LineStatus::new(line, "pending")
            } else {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!(
                        "line {line} of job {job} holds no record (a header, a blank line, or past its last line, {})",
                        checkpoint.line.saturating_sub(1)
                    ),
                ));
            }
        }
    };
    Ok(Json(LineAnswer {
        job: job.to_string(),
        status,
    }))
}

/// `GET /jobs/{id}/users/{userId}`.
#[utoipa::path(
    get,
    path = "/jobs/{id}/users/{user}",
    params(
        ("id" = String, Path, description = "The job id"),
        ("user" = String, Path, description = "The user id, as in the file (1 to 256 bytes)"),
    ),
    responses(
        (status = 200, description = "Every line of the job's file naming the user, with its outcome", body = UserAnswer),
        (status = 400, description = "Not a user id", body = super::openapi::ErrorBody),
        (status = 404, description = "No such job, no line of this user, or the job's file is gone", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn user(
    State(api): State<ControlApi>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<UserAnswer>, ApiError> {
    let (id, user) = path_params(path)?;
    let limits = Limits::default();
    if user.is_empty() || user.len() > limits.max_user_id_bytes {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("a user id has 1 to {} bytes", limits.max_user_id_bytes),
        ));
    }
    let (job, report) = known_job(&api, id).await?;
    let folders = api.inner.config.job_folders();
    let files = std::sync::Arc::clone(&api.inner.job_files);
    let wanted = job.clone();
    let meta = report.meta.clone();
    let who = user.clone();
    let lines = tokio::task::spawn_blocking(move || -> Result<Vec<u64>, ApiError> {
        let path = files.find(&folders, &wanted).map_err(io_error)?.ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("the file of job {wanted} is in none of the inbox, archive and rejected folders (moved or removed), so its users cannot be looked up"),
            )
        })?;
        lines_of_user(&path, &meta, &who)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    if lines.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("user {user:?} has no line in job {job}"),
        ));
    }
    let mut statuses = Vec::with_capacity(lines.len());
    for line in lines {
        let status = status_of(&api, &job, line).await?;
        statuses.push(status.unwrap_or_else(|| LineStatus::new(line, "pending")));
    }
    Ok(Json(UserAnswer {
        job: job.to_string(),
        delivered: statuses.iter().any(|s| s.outcome == "delivered"),
        user_id: user,
        lines: statuses,
    }))
}

/// The lines of `path` whose record names `user` (up to [`MAX_USER_LINES`]),
/// read as the job read it.
pub(crate) fn lines_of_user(
    path: &std::path::Path,
    meta: &wds_core::JobMeta,
    user: &str,
) -> Result<Vec<u64>, ApiError> {
    let file = std::fs::File::open(path).map_err(io_error)?;
    let mut reader = RecordReader::new(
        file,
        meta.format,
        meta.default_message.clone(),
        Limits::default(),
        Position::START,
    );
    let mut lines = Vec::new();
    while let Some(item) = reader.next_record().map_err(io_error)? {
        if let Parsed::Record(record) = item {
            if record.user_id == user {
                lines.push(record.line);
                if lines.len() == MAX_USER_LINES {
                    break;
                }
            }
        }
    }
    Ok(lines)
}

/// The two path parameters, or a JSON `400` (not axum's plain text) when
/// they are not UTF-8 once decoded.
fn path_params(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), ApiError> {
    path.map(|Path(params)| params)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))
}

fn io_error(e: std::io::Error) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("cannot read the job's file: {e}"),
    )
}

impl super::ControlConfig {
    /// Where a job's file may be: the inbox, then the archive folders.
    pub(crate) fn job_folders(&self) -> Vec<PathBuf> {
        std::iter::once(self.inbox.clone())
            .chain(self.archives.iter().cloned())
            .collect()
    }
}
