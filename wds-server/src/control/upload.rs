//! `POST /upload`: a multipart upload streamed into the watched folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::multipart::{Field, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use wds_core::parse::text;
use wds_core::source::{display_name_file, IdentityHasher};
use wds_core::{backend::now_ms, Format, JobId};

use super::{ApiError, ControlApi, ControlConfig};

/// Longest `message` field, in bytes (the parser's default message limit).
const MAX_MESSAGE_BYTES: usize = 4096;

/// Temporary files that are removed unless the upload completes.
#[derive(Debug, Default)]
struct Temps(Vec<PathBuf>);

impl Drop for Temps {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// What was received of the `file` field.
#[derive(Debug)]
struct Received {
    temp: PathBuf,
    bytes: u64,
    hasher: IdentityHasher,
    client_ext: Option<&'static str>,
    /// The client's file name, fit for display (never a path here).
    client_name: Option<String>,
}

/// The multipart fields of `POST /upload`, for the API's description.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // a shape for the description; the handler reads the fields one by one
pub(super) struct UploadForm {
    /// The file (required), streamed to the inbox.
    #[schema(format = Binary, value_type = String)]
    file: Vec<u8>,
    /// The message for lines that carry only a user id.
    message: Option<String>,
    /// `csv`, `jsonl` or `json`; detected when absent.
    format: Option<String>,
}

#[utoipa::path(
    post,
    path = "/upload",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, description = "Accepted: `job`, `file`, `bytes`, `message`", body = serde_json::Value),
        (status = 400, description = "Not a multipart body with one `file`", body = super::openapi::ErrorBody),
        (status = 413, description = "Larger than the upload limit", body = super::openapi::ErrorBody),
        (status = 503, description = "Too many uploads at once, or the inbox cannot be read", body = super::openapi::ErrorBody),
        (status = 507, description = "Not enough free disk space", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn upload(
    State(api): State<ControlApi>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    // Before reading a byte of the body: a slot, and room on the disk.
    let Ok(_slot) = Arc::clone(&api.inner.uploads).try_acquire_owned() else {
        let mut busy = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} uploads are being received already; try again shortly",
                api.inner.config.max_concurrent_uploads.max(1)
            ),
        )
        .into_response();
        busy.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return Ok(busy);
    };
    // An inbox that cannot be read first: its disk cannot be measured either.
    if let Some(reason) = api.inbox_unreadable() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the inbox cannot be read, so an upload would not be picked up: {reason}"),
        ));
    }
    let floor = api.inner.config.min_free_disk_bytes;
    check_free_disk(&api.inner.config.inbox, floor)?;
    let mut multipart = multipart.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("expected a multipart/form-data body with a `file` field: {e}"),
        )
    })?;
    let config = &api.inner.config;
    let inbox = &config.inbox;
    let mut temps = Temps::default();
    let mut received: Option<Received> = None;
    let mut message: Option<String> = None;
    let mut format: Option<Format> = None;
    loop {
        let field = multipart.next_field().await.map_err(bad_multipart)?;
        let Some(field) = field else { break };
        match field.name() {
            Some("file") if received.is_none() => {
                received = Some(receive_file(field, inbox, config, &mut temps).await?);
            }
            Some("file") => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "only one `file` field is allowed",
                ));
            }
            Some("message") => message = Some(read_text(field, "message").await?),
            Some("format") => {
                let text = read_text(field, "format").await?;
                format = Some(
                    text.trim()
                        .parse()
                        .map_err(|e: String| ApiError::new(StatusCode::BAD_REQUEST, e))?,
                );
            }
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown field {:?} (expected file, message, format)",
                        other.unwrap_or("")
                    ),
                ))
            }
        }
    }
    let received = received.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "the multipart body has no `file` field",
        )
    })?;
    // The folder source trims a sidecar message and treats an empty one as
    // none; do the same so the job id computed here is the one it claims.
    let message = message
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty());

    // The name is ours: the client's file name only hints at the format.
    let ext = match format {
        Some(format) => format.extension(),
        None => received.client_ext.unwrap_or("upload"),
    };
    let name = format!(
        "upload-{}-{:06x}.{ext}",
        now_ms(),
        fastrand::u32(..0xff_ffff)
    );
    let target = inbox.join(&name);
    if let Some(m) = &message {
        // The sidecar goes in first, so the data file is never seen without it.
        let temp = inbox.join(format!(".{name}.message.part"));
        temps.0.push(temp.clone());
        tokio::fs::write(&temp, m.as_bytes())
            .await
            .map_err(io_error)?;
        tokio::fs::rename(&temp, inbox.join(format!("{name}.message")))
            .await
            .map_err(io_error)?;
    }
    if let Some(shown) = &received.client_name {
        // Beside the file before it lands, so the job is claimed with it.
        let note = display_name_file(&target);
        temps.0.push(note.clone());
        tokio::fs::write(&note, shown.as_bytes())
            .await
            .map_err(io_error)?;
    }
    tokio::fs::rename(&received.temp, &target)
        .await
        .map_err(io_error)?;
    temps.0.clear();

    let identity = received.hasher.finish(None, message.as_deref());
    let job = JobId::from_identity(&identity);
    let shown = received.client_name.as_deref().unwrap_or(&name);
    tracing::info!(%job, file = %name, name = %shown, bytes = received.bytes, "upload accepted");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "job": job,
            "file": name,
            "name": shown,
            "bytes": received.bytes,
            "message": message,
        })),
    )
        .into_response())
}

/// How often (in bytes received) an upload checks the free space again.
const DISK_CHECK_EVERY: u64 = 8 << 20;

/// `507` when the file system of `dir` has less than `floor` bytes free.
fn check_free_disk(dir: &Path, floor: u64) -> Result<(), ApiError> {
    if floor == 0 {
        return Ok(());
    }
    let free = fs4::available_space(dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            // Gone before the intake noticed: as unreadable as it gets.
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the inbox cannot be read, so an upload would not be picked up: {e}"),
            )
        } else {
            io_error(e)
        }
    })?;
    if free < floor {
        tracing::warn!(
            free,
            floor,
            "upload refused: the inbox's disk is nearly full"
        );
        return Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "not enough free disk space for uploads ({free} bytes free, {floor} kept free)"
            ),
        ));
    }
    Ok(())
}

async fn receive_file(
    mut field: Field<'_>,
    inbox: &Path,
    config: &ControlConfig,
    temps: &mut Temps,
) -> Result<Received, ApiError> {
    let limit = config.max_upload_bytes;
    let client_ext = field.file_name().and_then(known_extension);
    let client_name = field.file_name().and_then(text::display_name);
    // A dotfile ending in .part: the folder source ignores it until renamed.
    let temp = inbox.join(format!(
        ".upload-{}-{:08x}.part",
        now_ms(),
        fastrand::u32(..)
    ));
    let mut file = tokio::fs::File::create(&temp).await.map_err(io_error)?;
    temps.0.push(temp.clone());
    let mut bytes = 0u64;
    let mut hasher = IdentityHasher::new();
    while let Some(chunk) = field.chunk().await.map_err(bad_multipart)? {
        bytes += chunk.len() as u64;
        if bytes > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the file is larger than the limit of {limit} bytes"),
            ));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(io_error)?;
        let before = bytes - chunk.len() as u64;
        if before / DISK_CHECK_EVERY != bytes / DISK_CHECK_EVERY {
            check_free_disk(inbox, config.min_free_disk_bytes)?;
        }
    }
    file.flush().await.map_err(io_error)?;
    // On disk before it is renamed into the inbox, so a crash right after
    // the rename cannot leave a truncated file to be processed.
    file.sync_all().await.map_err(io_error)?;
    Ok(Received {
        temp,
        bytes,
        hasher,
        client_ext,
        client_name,
    })
}

async fn read_text(mut field: Field<'_>, what: &str) -> Result<String, ApiError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(bad_multipart)? {
        buf.extend_from_slice(&chunk);
        if buf.len() > MAX_MESSAGE_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the `{what}` field is longer than {MAX_MESSAGE_BYTES} bytes"),
            ));
        }
    }
    String::from_utf8(buf).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the `{what}` field is not UTF-8"),
        )
    })
}

/// The extension of a client's file name, when it names a format we read.
fn known_extension(name: &str) -> Option<&'static str> {
    let ext = Path::new(name).extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "csv" => Some("csv"),
        "txt" => Some("txt"),
        "jsonl" => Some("jsonl"),
        "ndjson" => Some("ndjson"),
        "json" => Some("json"),
        _ => None,
    }
}

fn bad_multipart(e: axum::extract::multipart::MultipartError) -> ApiError {
    let status = e.status();
    let status = if status.is_client_error() {
        status
    } else {
        StatusCode::BAD_REQUEST
    };
    ApiError::new(
        status,
        format!("malformed multipart body: {}", e.body_text()),
    )
}

fn io_error(e: std::io::Error) -> ApiError {
    tracing::error!(error = %e, "upload failed on disk");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("could not store the upload: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::known_extension;

    #[test]
    fn only_known_extensions_are_kept() {
        assert_eq!(known_extension("users.CSV"), Some("csv"));
        assert_eq!(known_extension("../../etc/passwd"), None);
        assert_eq!(known_extension("a.json"), Some("json"));
        assert_eq!(known_extension("noext"), None);
        assert_eq!(known_extension("evil.csv/../../x.sh"), None);
    }
}
