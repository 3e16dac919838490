//! How a webhook response maps onto [`SinkError`]: which statuses are worth
//! retrying, and how long a 429 asks us to wait.

use std::time::{Duration, SystemTime};

use wds_core::SinkError;

/// How many bytes of a refusing response's body go into the error reason:
/// enough to see the endpoint's message, not enough to bloat dead letters.
pub(crate) const REASON_BODY_BYTES: usize = 200;

/// What to do with a response of `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// 2xx: delivered.
    Delivered,
    /// 429: slow down (read `Retry-After`).
    RateLimited,
    /// 408, 425, 5xx except 501: try again later.
    Retryable,
    /// Everything else, 501 and 410 included: never going to work as is.
    Permanent,
}

/// Classifies a response status.
///
/// 3xx counts as permanent because redirects are not followed (the Standard
/// Webhooks guidance: update the URL rather than bounce every call), 501
/// because the endpoint says it will never implement the method, and 410
/// because the endpoint asked to stop receiving webhooks.
pub(crate) fn classify(status: u16) -> Class {
    match status {
        200..=299 => Class::Delivered,
        429 => Class::RateLimited,
        408 | 425 => Class::Retryable,
        501 => Class::Permanent,
        500..=599 => Class::Retryable,
        _ => Class::Permanent,
    }
}

/// How much of a response body of `status` to keep: its start for a
/// refusal's reason, nothing otherwise (it is only drained, so that the
/// connection can be reused).
pub(crate) fn body_to_keep(status: u16) -> usize {
    match classify(status) {
        Class::Delivered | Class::RateLimited => 0,
        Class::Retryable | Class::Permanent => REASON_BODY_BYTES + 4,
    }
}

/// What a response means for the delivery: its status, its `Retry-After`
/// value if any, and the start of its body (see [`body_to_keep`]).
pub(crate) fn outcome(
    status: reqwest::StatusCode,
    retry_after: Option<&str>,
    body: &[u8],
) -> Result<wds_core::Delivered, SinkError> {
    let (canonical, status) = (status.canonical_reason(), status.as_u16());
    match classify(status) {
        Class::Delivered => Ok(wds_core::Delivered::with_status(status)),
        Class::RateLimited => Err(SinkError::rate_limited(
            retry_after.and_then(|v| parse_retry_after(v, SystemTime::now())),
        )),
        Class::Retryable | Class::Permanent => Err(failure(status, canonical, body)),
    }
}

/// A response's `Retry-After` value, if it has a readable one.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Parses a `Retry-After` value in either form RFC 9110 allows: a number of
/// seconds, or an HTTP-date (a date in the past means "now").
///
/// Returns `None` for anything else, leaving the backoff to the engine.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long numbers saturate rather than being ignored: the
        // endpoint clearly wants us gone for a long time.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The error for a non-2xx, non-429 response, with a short reason that names
/// the status and starts the body.
pub(crate) fn failure(status: u16, canonical: Option<&str>, body: &[u8]) -> SinkError {
    let mut reason = match canonical {
        Some(text) => format!("HTTP {status} {text}"),
        None => format!("HTTP {status}"),
    };
    let excerpt = excerpt(body, REASON_BODY_BYTES);
    if !excerpt.is_empty() {
        reason.push_str(": ");
        reason.push_str(&excerpt);
    }
    match classify(status) {
        Class::Retryable => SinkError::retryable(reason),
        _ => SinkError::permanent(reason),
    }
    .with_status(status)
}

/// At most `max` bytes of `body` as one line of text (cut on a character
/// boundary, control characters replaced by spaces).
fn excerpt(body: &[u8], max: usize) -> String {
    let mut cut = &body[..body.len().min(max)];
    // Do not end on half a multi-byte character (it would show as U+FFFD).
    if let Err(e) = std::str::from_utf8(cut) {
        if e.error_len().is_none() {
            cut = &cut[..e.valid_up_to()];
        }
    }
    let mut out: String = String::from_utf8_lossy(cut)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    out.truncate(out.trim_end().len());
    if body.len() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn status_families() {
        for s in [200, 201, 204, 299] {
            assert_eq!(classify(s), Class::Delivered, "{s}");
        }
        for s in [408, 425, 500, 502, 503, 504, 599] {
            assert_eq!(classify(s), Class::Retryable, "{s}");
        }
        for s in [100, 301, 302, 400, 401, 404, 410, 422, 501] {
            assert_eq!(classify(s), Class::Permanent, "{s}");
        }
        assert_eq!(classify(429), Class::RateLimited);
    }

    #[test]
    fn retry_after_both_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(90)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn reasons_carry_a_short_body_excerpt() {
        let e = failure(404, Some("Not Found"), b"no such hook\n");
        assert_eq!(e.status(), Some(404));
        assert!(!e.is_retryable());
        assert!(
            e.to_string().contains("HTTP 404 Not Found: no such hook"),
            "{e}"
        );
        let long = "é".repeat(300);
        let e = failure(503, None, long.as_bytes());
        assert!(e.is_retryable());
        let SinkError::Retryable { reason, .. } = e else {
            panic!("not retryable")
        };
        assert!(reason.len() <= "HTTP 503: ".len() + REASON_BODY_BYTES + 3);
        assert!(reason.ends_with('…') && !reason.contains('\u{FFFD}'));
    }
}
