//! The receiver's handlers: `POST /webhook` and `GET /healthz`.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::output::Recorded;
use super::Shared;
use wds_core::parse::text;
use wds_http::signature::{self, VerifyError};
use wds_http::{WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};

/// The longest `webhook-id` accepted: ids are kept for dedupe, so an
/// unbounded one would let a client grow the set at will.
pub(crate) const MAX_ID_LEN: usize = 512;

const EXPECTED_BODY: &str = r#"expected a JSON object {"userId": string, "alertMessage": string}"#;

/// The webhook body. Other fields (a message's attributes) are ignored, so
/// that a file with extra columns is still recorded as `userId,alertMessage`.
#[derive(Deserialize)]
struct Alert {
    #[serde(rename = "userId")]
    user_id: String,
    #[serde(rename = "alertMessage")]
    alert_message: String,
}

/// `{"error": message}` with `status`.
pub(crate) fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// `GET /healthz`.
pub(crate) async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// Any other path.
pub(crate) async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "not found")
}

/// `POST /webhook`: size limit, signature, body, dedupe, then the CSV line.
pub(crate) async fn webhook(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        // 413 when over the limit, 400 for a body that could not be read.
        Err(rejection) => {
            let status = rejection.status();
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("body larger than {} bytes", shared.body_limit)
            } else {
                rejection.body_text()
            };
            return json_error(status, message);
        }
    };
    let id = match header_text(&headers, WEBHOOK_ID) {
        Some(id) if id.len() > MAX_ID_LEN => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("webhook-id longer than {MAX_ID_LEN} bytes"),
            )
        }
        other => other,
    };
    if !shared.secrets.is_empty() {
        // Verify the raw bytes before parsing: the signature covers exactly
        // what was sent, and unsigned input should cost us as little as possible.
        if let Err(e) = verify(&shared, &headers, id, &body) {
            tracing::debug!(error = %e, "refused webhook signature");
            return json_error(StatusCode::UNAUTHORIZED, e.to_string());
        }
    }
    // serde would also accept `["u1", "m"]` for a struct; only an object is
    // the documented body.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return json_error(StatusCode::BAD_REQUEST, EXPECTED_BODY);
    }
    let alert: Alert = match serde_json::from_slice(&body) {
        Ok(alert) => alert,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("{EXPECTED_BODY}: {e}")),
    };
    if alert.user_id.is_empty() {
        return json_error(StatusCode::BAD_REQUEST, "userId must not be empty");
    }
    // The rule the input parsers apply, so no control character (NUL, an
    // escape sequence, a bidi override) reaches the output file.
    let problem = text::user_id_problem(&alert.user_id)
        .or_else(|| text::message_problem(&alert.alert_message));
    if let Some(problem) = problem {
        return json_error(StatusCode::BAD_REQUEST, problem);
    }
    let now = wds_core::backend::now_ms();
    match shared
        .log
        .record(id, &alert.user_id, &alert.alert_message, now)
    {
        Ok(Recorded::Accepted) => Json(json!({ "status": "accepted" })).into_response(),
        // 200, not 409: the sender did nothing wrong, it retried after a lost
        // response, and must treat the repeat as delivered.
        Ok(Recorded::Duplicate) => Json(json!({ "status": "duplicate" })).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot append to the alert log");
            // 500 lets the sender retry; the id was not remembered.
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "cannot record the alert")
        }
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn verify(
    shared: &Shared,
    headers: &HeaderMap,
    id: Option<&str>,
    body: &[u8],
) -> Result<(), VerifyError> {
    let id = id.ok_or(VerifyError::MissingHeader(WEBHOOK_ID))?;
    let timestamp = header_text(headers, WEBHOOK_TIMESTAMP)
        .ok_or(VerifyError::MissingHeader(WEBHOOK_TIMESTAMP))?;
    let signatures = header_text(headers, WEBHOOK_SIGNATURE)
        .ok_or(VerifyError::MissingHeader(WEBHOOK_SIGNATURE))?;
    signature::verify(
        &shared.secrets,
        id,
        timestamp,
        signatures,
        body,
        shared.tolerance,
        SystemTime::now(),
    )
}
