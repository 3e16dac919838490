//! `GET /`: the status page, one static HTML file with its script and
//! styles inline, built into the binary.
//!
//! The page itself holds no data, so it is served without the token: its
//! script asks for the token once, keeps it in the tab's `sessionStorage`
//! and sends it as `Authorization: Bearer` on every API call, so the data
//! has the API's auth. It polls `GET /jobs` and `GET /metrics` every second.

use axum::http::header;
use axum::response::IntoResponse;

/// The page: HTML, inline script and styles, no external asset.
const PAGE: &str = include_str!("page.html");

/// Inline script and styles only, API calls to this origin only, no frames.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
     connect-src 'self'; img-src 'self' data:; form-action 'none'; base-uri 'none'; \
     frame-ancestors 'none'";

#[utoipa::path(
    get,
    path = "/",
    security(()),
    responses((status = 200, description = "The status page", content_type = "text/html"))
)]
pub(super) async fn status_page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}

#[cfg(test)]
mod tests {
    use super::PAGE;

    /// Data from the API is hostile: the page never parses it as HTML.
    #[test]
    fn page_never_parses_data_as_html() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!PAGE.contains(sink), "the page uses {sink}");
        }
    }

    /// The network may be closed: nothing is loaded from elsewhere.
    #[test]
    fn page_loads_nothing_from_elsewhere() {
        for external in ["http://", "https://", "<link", "src=\"", "@import"] {
            assert!(!PAGE.contains(external), "the page refers to {external}");
        }
    }
}
