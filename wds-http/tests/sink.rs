//! `HttpSink` against tiny real servers on loopback: what it sends, and how
//! every family of answer (and non-answer) is classified.

mod support;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use tokio::net::TcpListener;
use wds_http::signature::{self, Secret};
use wds_http::wds_core::{Delivered, Sink, SinkError};
use wds_http::HttpSink;

use support::{message, SECRET_A, SECRET_B};

/// The builder every test here starts from. `tests/sink_hyper.rs` runs the
/// whole file again with its own, on the `hyper-client` transport (there,
/// `crate::` is that file).
#[allow(dead_code)]
pub(crate) fn builder(url: impl Into<String>) -> wds_http::HttpSinkBuilder {
    HttpSink::builder(url)
}

/// Whether `e` is the error type of this file's client.
#[allow(dead_code)]
pub(crate) fn is_client_error(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<reqwest::Error>()
        .is_some_and(reqwest::Error::is_connect)
}

/// Serves `app` on a free loopback port for the rest of the test.
async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// `POST /{script}` answers the scripted status (see the match).
async fn scripted(Path(script): Path<String>) -> Response {
    match script.as_str() {
        "429-seconds" => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "7".to_owned())],
            "slow down",
        )
            .into_response(),
        "429-date" => {
            let at = SystemTime::now() + Duration::from_secs(120);
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, httpdate::fmt_http_date(at))],
                "slow down",
            )
                .into_response()
        }
        "429-none" => StatusCode::TOO_MANY_REQUESTS.into_response(),
        "301" => (
            StatusCode::MOVED_PERMANENTLY,
            [(header::LOCATION, "/200".to_owned())],
            "moved",
        )
            .into_response(),
        "big-200" => (StatusCode::OK, "x".repeat(200_000)).into_response(),
        code => {
            let status = code
                .parse()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::IM_A_TEAPOT);
            (status, format!("scripted {code}")).into_response()
        }
    }
}

async fn deliver_to(url: String) -> Result<Delivered, SinkError> {
    let sink = crate::builder(url)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    sink.deliver(&message("job", 1, "u1", "hello")).await
}

#[tokio::test]
async fn every_status_family_is_classified() {
    let base = serve(Router::new().route("/{script}", post(scripted))).await;
    for (script, status) in [("200", 200), ("201", 201), ("204", 204), ("big-200", 200)] {
        let got = deliver_to(format!("{base}/{script}")).await;
        assert_eq!(got.unwrap(), Delivered::with_status(status), "{script}");
    }
    for code in [408u16, 425, 500, 502, 503, 504] {
        match deliver_to(format!("{base}/{code}")).await {
            Err(SinkError::Retryable { status, reason, .. }) => {
                assert_eq!(status, Some(code));
                assert!(reason.contains(&format!("scripted {code}")), "{reason}");
            }
            other => panic!("{code}: expected Retryable, got {other:?}"),
        }
    }
    for code in [301u16, 400, 401, 404, 410, 422, 501] {
        match deliver_to(format!("{base}/{code}")).await {
            Err(SinkError::Permanent { status, reason, .. }) => {
                assert_eq!(status, Some(code));
                assert!(reason.starts_with(&format!("HTTP {code}")), "{reason}");
            }
            other => panic!("{code}: expected Permanent, got {other:?}"),
        }
    }
    match deliver_to(format!("{base}/404")).await {
        Err(e @ SinkError::Permanent { .. }) => {
            assert_eq!(
                e.to_string(),
                "permanent failure (status 404): HTTP 404 Not Found: scripted 404"
            )
        }
        other => panic!("expected Permanent, got {other:?}"),
    }
    match deliver_to(format!("{base}/429-seconds")).await {
        Err(SinkError::RateLimited { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)))
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    match deliver_to(format!("{base}/429-date")).await {
        Err(SinkError::RateLimited {
            retry_after: Some(wait),
            ..
        }) => {
            // HTTP-dates have whole seconds, and a second may tick meanwhile.
            assert!(
                (Duration::from_secs(115)..=Duration::from_secs(120)).contains(&wait),
                "{wait:?}"
            )
        }
        other => panic!("expected RateLimited with a wait, got {other:?}"),
    }
    match deliver_to(format!("{base}/429-none")).await {
        Err(SinkError::RateLimited {
            retry_after: None, ..
        }) => {}
        other => panic!("expected RateLimited without a wait, got {other:?}"),
    }
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_as_retryable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        // Accept and hold every connection without ever answering.
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let sink = crate::builder(format!("http://{addr}/hook"))
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    match sink.deliver(&message("job", 1, "u", "m")).await {
        Err(SinkError::Retryable {
            status: None,
            reason,
            ..
        }) => {
            assert!(reason.contains("no response within"), "{reason}")
        }
        other => panic!("expected a retryable timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_dropped_connection_is_retryable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        // Accept, then close at once: the request gets no response.
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let sink = crate::builder(format!("http://{addr}/hook"))
        .build()
        .unwrap();
    match sink.deliver(&message("job", 1, "u", "m")).await {
        Err(SinkError::Retryable { status: None, .. }) => {}
        other => panic!("expected retryable, got {other:?}"),
    }
}

/// Delivers to a loopback port nobody listens on.
async fn deliver_to_a_closed_port() -> Result<Delivered, SinkError> {
    // Bind to learn a free port, then close it so nothing listens there.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let sink = crate::builder(format!("http://{addr}/hook"))
        .build()
        .unwrap();
    sink.deliver(&message("job", 1, "u", "m")).await
}

#[tokio::test]
async fn a_refused_connection_is_retryable() {
    match deliver_to_a_closed_port().await {
        Err(SinkError::Retryable {
            status: None,
            reason,
            ..
        }) => {
            assert!(reason.contains("connection failed"), "{reason}")
        }
        other => panic!("expected retryable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_refused_connection_keeps_the_client_error_as_its_source() {
    let e = deliver_to_a_closed_port()
        .await
        .expect_err("nothing listens there");
    // The chain, walked with `source()` as an error reporter would.
    let mut chain: Vec<&(dyn std::error::Error + 'static)> = Vec::new();
    let mut next = std::error::Error::source(&e);
    while let Some(cause) = next {
        chain.push(cause);
        next = cause.source();
    }
    assert!(
        chain.first().is_some_and(|c| crate::is_client_error(*c)),
        "the first source must be the client's connect error: {e:?}"
    );
    assert!(
        chain.iter().any(|c| c
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)),
        "the operating system's refusal must be in the chain: {chain:?}"
    );
    // The URL stays out of the source too (it may hold a key).
    assert!(!format!("{chain:?}").contains("/hook"), "{chain:?}");
}

#[tokio::test]
async fn no_url_secret_reaches_an_error_a_reason_or_debug_output() {
    // The default client's (credentials in the URL are its alone: the hyper
    // client refuses them; tests/sink_hyper.rs checks its query secrets).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://bot:pw-SEKRIT@{addr}/hook?api_key=SEKRIT-2");
    let sink = HttpSink::builder(&url).build().unwrap();
    let shown = format!("{sink:?}");
    assert!(!shown.contains("SEKRIT"), "{shown}");
    assert!(shown.contains(&addr.to_string()), "{shown}");
    let e = sink
        .deliver(&message("job", 1, "u", "m"))
        .await
        .unwrap_err();
    // The reason is what a dead letter stores and /jobs/{id} shows.
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains("SEKRIT"), "{text}");
        assert!(text.contains("connection failed"), "{text}");
    }
    // A timeout too (the reqwest error names the URL).
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let sink = HttpSink::builder(format!("http://u:pw-SEKRIT@{addr}/?k=SEKRIT"))
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let e = sink
        .deliver(&message("job", 1, "u", "m"))
        .await
        .unwrap_err();
    assert!(!e.to_string().contains("SEKRIT"), "{e}");
    let e = HttpSink::builder("http://u:pw-SEKRIT@/?k=SEKRIT")
        .build()
        .unwrap_err();
    assert!(!e.to_string().contains("SEKRIT"), "{e}");
}

type Seen = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn capture(State(seen): State<Seen>, headers: HeaderMap, body: Bytes) -> StatusCode {
    seen.lock().unwrap().push((headers, body));
    StatusCode::NO_CONTENT
}

#[tokio::test]
async fn sends_the_standard_webhooks_headers_and_the_exact_body() {
    let seen_all = Seen::default();
    let base = serve(
        Router::new()
            .route("/hook", post(capture))
            .with_state(Arc::clone(&seen_all)),
    )
    .await;
    let sink = crate::builder(format!("{base}/hook"))
        .secrets([SECRET_A, SECRET_B])
        .header("x-api-key", "k1")
        .build()
        .unwrap();
    let m = message("0123abcd", 42, "user,1", "line \"one\"\nline two");
    for _ in 0..2 {
        assert_eq!(sink.deliver(&m).await.unwrap().status, Some(204));
    }
    let seen = seen_all.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let now = signature::unix_seconds(SystemTime::now());
    for (headers, body) in seen.iter() {
        let h = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
        assert_eq!(
            &body[..],
            br#"{"userId":"user,1","alertMessage":"line \"one\"\nline two"}"#
        );
        assert_eq!(h("content-type"), "application/json");
        assert_eq!(h("x-api-key"), "k1");
        // The same id on every attempt: the receiver's idempotency key.
        assert_eq!(h("webhook-id"), "0123abcd:42");
        let ts = h("webhook-timestamp");
        assert!((now - ts.parse::<i64>().unwrap()).abs() <= 5, "{ts}");
        let sigs = h("webhook-signature");
        let entries: Vec<&str> = sigs.split(' ').collect();
        assert_eq!(entries.len(), 2, "{sigs}");
        assert!(entries.iter().all(|e| e.starts_with("v1,")));
        for secret in [SECRET_A, SECRET_B] {
            let s: Secret = secret.parse().unwrap();
            signature::verify(
                &[s],
                "0123abcd:42",
                &ts,
                &sigs,
                body,
                signature::DEFAULT_TOLERANCE,
                SystemTime::now(),
            )
            .unwrap();
        }
    }
    // Without secrets: the id and timestamp, but no signature header.
    let unsigned = crate::builder(format!("{base}/hook")).build().unwrap();
    unsigned.deliver(&m).await.unwrap();
    let seen = seen_all.lock().unwrap().clone();
    let (headers, _) = seen.last().unwrap();
    assert!(headers.get("webhook-signature").is_none());
    assert_eq!(headers.get("webhook-id").unwrap(), "0123abcd:42");
    assert!(headers.get("webhook-timestamp").is_some());
}

/// Cross-checks our signatures with an independent implementation written in
/// Python (standard library only) from the specification's text.
#[test]
fn signatures_agree_with_an_independent_python_implementation() {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let a: Secret = SECRET_A.parse().unwrap();
    let b: Secret = SECRET_B.parse().unwrap();
    let now = signature::unix_seconds(SystemTime::now());
    let ts = now.to_string();
    let bodies: [&[u8]; 3] = [
        br#"{"userId":"u1","alertMessage":"hello"}"#,
        "{\"userId\":\"ü,\\\"x\\\"\",\"alertMessage\":\"line\\nbreak ✓\"}".as_bytes(),
        b"",
    ];
    let mut verify = Vec::new();
    let mut expected = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let id = format!("job{i}:{}", i + 1);
        let header = signature::sign(&[a.clone(), b.clone()], &id, &ts, body);
        for secret in [SECRET_A, SECRET_B] {
            verify.push(serde_json::json!({
                "secret": secret, "id": id, "timestamp": ts, "body_b64": b64(body),
                "signature": header, "now": now,
            }));
            expected.push(true);
        }
        // Tampered body, and a stale timestamp: Python must refuse both,
        // which shows the script is not vacuously accepting.
        verify.push(serde_json::json!({
            "secret": SECRET_A, "id": id, "timestamp": ts, "body_b64": b64(b"{}x"),
            "signature": header, "now": now,
        }));
        expected.push(false);
        verify.push(serde_json::json!({
            "secret": SECRET_A, "id": id, "timestamp": ts, "body_b64": b64(body),
            "signature": header, "now": now + 301,
        }));
        expected.push(false);
    }
    let sign: Vec<_> = bodies
        .iter()
        .map(|body| {
            serde_json::json!({
                "secret": SECRET_B, "id": "msg_1", "timestamp": ts, "body_b64": b64(body),
            })
        })
        .collect();
    let request = serde_json::json!({ "verify": verify, "sign": sign });

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/standard_webhooks.py"
    );
    let mut child = match Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!(
            "python3 is required for this test and could not be started ({e}); \
             install it (e.g. `apt-get install python3`)"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let verified: Vec<bool> = serde_json::from_value(answer["verified"].clone()).unwrap();
    assert_eq!(verified, expected);
    // And the other way round: Python's signatures verify with ours.
    let signed: Vec<String> = serde_json::from_value(answer["signed"].clone()).unwrap();
    assert_eq!(signed.len(), bodies.len());
    for (sig, body) in signed.iter().zip(bodies) {
        assert_eq!(sig, &b.sign("msg_1", &ts, body));
        signature::verify(
            std::slice::from_ref(&b),
            "msg_1",
            &ts,
            sig,
            body,
            signature::DEFAULT_TOLERANCE,
            SystemTime::now(),
        )
        .unwrap();
    }
}

/// Cross-checks our signatures with the official Standard Webhooks package
/// for Python (`standardwebhooks`), installed by `scripts/test` into
/// `target/pydeps` (or anywhere on `WDS_PYDEPS`).
#[test]
fn signatures_agree_with_the_official_standard_webhooks_package() {
    let pydeps = std::env::var("WDS_PYDEPS")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target/pydeps").to_string());
    let a: Secret = SECRET_A.parse().unwrap();
    let b: Secret = SECRET_B.parse().unwrap();
    let ts = signature::unix_seconds(SystemTime::now()).to_string();
    let bodies = [
        r#"{"userId":"u1","alertMessage":"hello"}"#.to_string(),
        serde_json::json!({"userId": "ü,\"x\"", "alertMessage": "line\nbreak ✓"}).to_string(),
    ];
    let mut cases = Vec::new();
    let mut expected = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let id = format!("job{i}:{}", i + 1);
        let both = signature::sign(&[a.clone(), b.clone()], &id, &ts, body.as_bytes());
        for secret in [SECRET_A, SECRET_B] {
            cases.push(serde_json::json!({"secret": secret, "id": id, "timestamp": ts, "body": body, "signature": both}));
            expected.push(true);
        }
        // A tampered body must be refused, so the check cannot pass vacuously.
        cases.push(serde_json::json!({"secret": SECRET_A, "id": id, "timestamp": ts, "body": format!("{body} "), "signature": both}));
        expected.push(false);
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/official_standardwebhooks.py"
    );
    let mut child = Command::new("python3")
        .arg(script)
        .env("PYTHONPATH", &pydeps)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("python3 is required for this test ({e}); install it (apt-get install python3)")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::json!({ "cases": cases }).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the official standardwebhooks package is needed: run ./scripts/test, or \
         `python3 -m pip install --target {pydeps} standardwebhooks==1.1.0`.\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let verified: Vec<bool> = serde_json::from_value(answer["verified"].clone()).unwrap();
    assert_eq!(verified, expected);
    // The package's own signatures are exactly ours.
    let signed: Vec<String> = serde_json::from_value(answer["signed"].clone()).unwrap();
    for (case, theirs) in cases.iter().zip(&signed) {
        let secret: Secret = case["secret"].as_str().unwrap().parse().unwrap();
        let body = case["body"].as_str().unwrap();
        assert_eq!(
            theirs,
            &secret.sign(case["id"].as_str().unwrap(), &ts, body.as_bytes())
        );
    }
}
