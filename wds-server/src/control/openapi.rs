//! `GET /openapi.json`: the control API's OpenAPI 3.1 description, made by
//! utoipa from the `#[utoipa::path]` attribute on each handler and the
//! schemas of the answers. Served without the token: it holds no data.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{jobs, page, receipts, upload, workers};

/// Every error: a JSON body with a 4xx or 5xx status.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // a shape for the description; `ApiError` builds the body
pub(crate) struct ErrorBody {
    /// What went wrong, for a person to read.
    error: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "WDS control API",
        description = "Upload files, follow jobs and their lines, replay dead letters, health and metrics. \
            When a token is configured, every route but `/`, `/healthz` and `/openapi.json` needs \
            `Authorization: Bearer <token>`. Every error is `{\"error\": \"...\"}`."
    ),
    paths(
        page::status_page,
        upload::upload,
        super::retry,
        super::jobs,
        super::job,
        jobs::pause,
        jobs::resume,
        jobs::cancel,
        jobs::replay,
        jobs::resend,
        receipts::line,
        receipts::user,
        super::healthz,
        super::intake,
        workers::workers,
        super::metrics,
        openapi_json,
    ),
    components(schemas(ErrorBody, workers::WorkersBody, workers::WorkerView)),
    modifiers(&BearerToken),
    security(("bearer" = []))
)]
pub(crate) struct ApiDoc;

/// The bearer token scheme the routes name.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    security(()),
    responses((status = 200, description = "This API's OpenAPI description", content_type = "application/json"))
)]
pub(super) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;

    const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

    /// Every `.route("PATH", method(handler)…)` in the control API's
    /// source files: (method, path). Read from the source because an axum
    /// `Router` cannot list its routes; a route added in any file of
    /// `src/control` is found.
    fn routes_in_source() -> BTreeSet<(String, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/control");
        let mut routes = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                // Not the tests' own examples of route calls.
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                routes.extend(routes_in(code));
            }
        }
        routes
    }

    fn routes_in(source: &str) -> Vec<(String, String)> {
        let mut found = Vec::new();
        for call in source.split(".route(").skip(1) {
            let call = call.trim_start();
            let Some(rest) = call.strip_prefix('"') else {
                continue;
            };
            let Some((path, rest)) = rest.split_once('"') else {
                continue;
            };
            // The method router: up to the parenthesis closing `.route(`.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(rest.len(), |(i, _)| i);
            let handler = &rest[..end];
            for method in METHODS {
                let called = handler.match_indices(&format!("{method}(")).any(|(i, _)| {
                    i == 0 || !handler[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                });
                if called {
                    found.push((method.to_string(), path.to_string()));
                }
            }
        }
        found
    }

    fn routes_in_spec() -> BTreeSet<(String, String)> {
        let spec = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut routes = BTreeSet::new();
        for (path, item) in spec["paths"].as_object().unwrap() {
            for method in METHODS {
                if item.get(method).is_some() {
                    routes.insert((method.to_string(), path.clone()));
                }
            }
        }
        routes
    }

    #[test]
    fn every_route_of_the_router_is_in_the_spec_and_back() {
        let source = routes_in_source();
        // The scan itself works: it sees routes of every kind of call.
        for known in [
            ("get", "/jobs"),
            ("post", "/upload"),
            ("get", "/jobs/{id}/lines/{n}"),
        ] {
            let known = (known.0.to_string(), known.1.to_string());
            assert!(
                source.contains(&known),
                "the scan missed {known:?}: {source:?}"
            );
        }
        let spec = routes_in_spec();
        let undocumented: Vec<_> = source.difference(&spec).collect();
        let stale: Vec<_> = spec.difference(&source).collect();
        assert!(
            undocumented.is_empty(),
            "routes without an OpenAPI entry (add #[utoipa::path] and list the handler in ApiDoc): {undocumented:?}"
        );
        assert!(stale.is_empty(), "OpenAPI entries of no route: {stale:?}");
    }

    #[test]
    fn the_route_scan_reads_chained_and_multiline_calls() {
        let source = r#"
            .route("/a", get(a).post(b))
            .route(
                "/upload",
                post(upload::upload).layer(DefaultBodyLimit::max(limit)),
            )
            .route("/x/{id}", axum::routing::delete(x))
            .route_layer(forget(me))
        "#;
        let found: BTreeSet<_> = routes_in(source).into_iter().collect();
        let expected: BTreeSet<_> = [
            ("get", "/a"),
            ("post", "/a"),
            ("post", "/upload"),
            ("delete", "/x/{id}"),
        ]
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
        assert_eq!(found, expected);
    }
}
