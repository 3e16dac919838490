//! The job control routes (see the table in [`super`]): one job's pause,
//! resume, cancel and replay by reason.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use wds_core::{
    backend::{Action, JobControl},
    DeadKind, Error, JobId,
};

use super::resend::NotResent;
use super::{ApiError, ControlApi, JobView, BACKEND_TIMEOUT};

impl ControlApi {
    /// The backend's job control, or `501`.
    fn job_control(&self) -> Result<&dyn JobControl, ApiError> {
        self.inner.config.control.as_deref().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "this API was started without job control",
            )
        })
    }
}

/// The value of a control call, or `404` for an unknown job, `409` for an
/// action its state does not allow, and as every backend call otherwise.
async fn controlled<T>(
    fut: impl std::future::Future<Output = wds_core::Result<T>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(BACKEND_TIMEOUT, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e @ Error::UnknownJob { .. })) => {
            Err(ApiError::new(StatusCode::NOT_FOUND, e.to_string()))
        }
        Ok(Err(e @ Error::IllegalTransition { .. })) => {
            Err(ApiError::new(StatusCode::CONFLICT, e.to_string()))
        }
        Ok(Err(e)) => Err(ApiError::backend(e)),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the backend did not answer in time",
        )),
    }
}

async fn act(api: &ControlApi, id: String, action: Action) -> Result<Json<JobView>, ApiError> {
    let control = api.job_control()?;
    let job = JobId::new(id);
    let report = controlled(async {
        match action {
            Action::Pause => control.pause(&job).await,
            Action::Resume => control.resume(&job).await,
            Action::Cancel => control.cancel(&job).await,
        }
    })
    .await?;
    tracing::info!(job = %job, action = action.as_str(), state = ?report.state, "job control");
    Ok(Json(JobView::new(report)))
}

/// `POST /jobs/{id}/pause`.
#[utoipa::path(
    post,
    path = "/jobs/{id}/pause",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "No more of its batches are leased; the job's report", content_type = "application/json"),
        (status = 409, description = "The job's state refuses it (e.g. resuming a cancelled job)", body = super::openapi::ErrorBody),
        (status = 404, description = "No such job", body = super::openapi::ErrorBody),
        (status = 501, description = "This API has no job control", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn pause(
    State(api): State<ControlApi>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    act(&api, id, Action::Pause).await
}

/// `POST /jobs/{id}/resume`.
#[utoipa::path(
    post,
    path = "/jobs/{id}/resume",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "Its batches are leased again; the job's report", content_type = "application/json"),
        (status = 409, description = "The job's state refuses it (e.g. resuming a cancelled job)", body = super::openapi::ErrorBody),
        (status = 404, description = "No such job", body = super::openapi::ErrorBody),
        (status = 501, description = "This API has no job control", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn resume(
    State(api): State<ControlApi>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    act(&api, id, Action::Resume).await
}

/// `POST /jobs/{id}/cancel`.
#[utoipa::path(
    post,
    path = "/jobs/{id}/cancel",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "Reading stops and its queued lines end cancelled; the job's report", content_type = "application/json"),
        (status = 409, description = "The job's state refuses it (e.g. resuming a cancelled job)", body = super::openapi::ErrorBody),
        (status = 404, description = "No such job", body = super::openapi::ErrorBody),
        (status = 501, description = "This API has no job control", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn cancel(
    State(api): State<ControlApi>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    act(&api, id, Action::Cancel).await
}

/// Which dead letters a replay takes.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Reason {
    /// Every kind.
    #[default]
    All,
    Exhausted,
    InDoubt,
    Permanent,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    #[serde(default)]
    reason: Reason,
}

/// `POST /jobs/{id}/replay`.
#[utoipa::path(
    post,
    path = "/jobs/{id}/replay",
    params(("id" = String, Path, description = "The job id")),
    request_body(content = String, description = "{\"reason\": \"exhausted\" | \"in_doubt\" | \"permanent\" | \"all\"}; an empty body is all", content_type = "application/json"),
    responses(
        (status = 200, description = "`{\"replayed\": n}`: the dead letters of that reason queued again (in_doubt ones may alert twice)", content_type = "application/json"),
        (status = 400, description = "Not one of the reasons", body = super::openapi::ErrorBody),
        (status = 404, description = "No such job", body = super::openapi::ErrorBody),
        (status = 501, description = "This API has no job control", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn replay(
    State(api): State<ControlApi>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: ReplayRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ReplayRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "expected {{\"reason\": \"exhausted\" | \"in_doubt\" | \"permanent\" | \"all\"}}: {e}"
                ),
            )
        })?
    };
    let control = api.job_control()?;
    let job = JobId::new(id);
    let kind = match request.reason {
        Reason::All => None,
        Reason::Exhausted => Some(DeadKind::Exhausted),
        Reason::InDoubt => Some(DeadKind::InDoubt),
        Reason::Permanent => Some(DeadKind::Permanent),
    };
    let replayed = match kind {
        Some(kind) => controlled(control.replay_kind(&job, kind)).await?,
        None => {
            if controlled(api.inner.offsets.report(&job)).await?.is_none() {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("unknown job {job}"),
                ));
            }
            controlled(api.inner.queue.replay(Some(&job))).await?
        }
    };
    tracing::info!(job = %job, replayed, reason = ?request.reason, "dead letters replayed");
    Ok(Json(json!({ "replayed": replayed })))
}

/// `POST /jobs/{id}/resend`.
#[utoipa::path(
    post,
    path = "/jobs/{id}/resend",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 202, description = "`{\"job\": new id, \"resend_of\": id}`: the archived file is read again as a new job", content_type = "application/json"),
        (status = 409, description = "The job is not finished, or its file is not archived", body = super::openapi::ErrorBody),
        (status = 404, description = "No such job", body = super::openapi::ErrorBody),
        (status = 501, description = "This API has no job control", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn resend(
    State(api): State<ControlApi>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Some(resender) = &api.inner.config.resend else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "this API was started without an archive to resend from",
        ));
    };
    let job = JobId::new(id);
    let report = controlled(api.inner.offsets.report(&job))
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("unknown job {job}")))?;
    if !report.is_finished() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("job {job} is not finished: wait for it, or cancel it, before resending it"),
        ));
    }
    match resender.resend(&report).await {
        Ok(new) => {
            tracing::info!(job = %job, resent_as = %new, "job resent as a new job");
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "job": new, "resend_of": job })),
            ))
        }
        Err(NotResent::NotArchived) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("job {job}'s file is not in the archive (uploads and files in the inbox are archived once their job is read)"),
        )),
        Err(NotResent::Io(e)) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e)),
        Err(NotResent::Backend(e)) => Err(ApiError::backend(e)),
    }
}
