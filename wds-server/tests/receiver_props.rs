//! Property tests of the receiver's request handling (proptest, a bounded
//! number of cases): whatever a client sends to `POST /webhook`, the
//! receiver answers 200, 400 or 413 (never a 5xx, never a panic), and its
//! output file stays valid CSV with two columns, no control character a
//! parser refuses, and no cell a spreadsheet would run as a formula.

mod support;

use axum::body::Body;
use axum::http::Request;
use proptest::prelude::*;
use tower::ServiceExt;
use wds_server::Receiver;

use support::{config, read_csv};

/// Any text, control and bidi characters included.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "[ -~]{0,12}",
        1 => "[=+@\t\r-][ -~]{0,8}",
        1 => any::<String>().prop_map(|s| s.chars().take(16).collect()),
        1 => "[a-z\u{0}-\u{1f}\u{7f}\u{85}\u{202e}\u{2066}]{1,8}",
    ]
}

/// A body: mostly the expected JSON object (with any strings), sometimes
/// other JSON or arbitrary bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (text(), text()).prop_map(|(u, m)| {
            serde_json::to_vec(&serde_json::json!({ "userId": u, "alertMessage": m })).unwrap_or_default()
        }),
        1 => (text(), any::<i64>()).prop_map(|(u, m)| {
            serde_json::to_vec(&serde_json::json!({ "userId": u, "alertMessage": m })).unwrap_or_default()
        }),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

#[test]
fn any_request_gets_200_400_or_413_and_the_output_stays_safe_csv() {
    let (mut cfg, dir) = config();
    cfg.body_limit = 256;
    let output = cfg.output.clone();
    let receiver = Receiver::new(cfg).unwrap();
    let router = receiver.router();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(body in body(), id in prop::option::of("[!-~]{1,40}"), padding in 0usize..400)| {
        let mut body = body;
        // Sometimes over the body limit.
        if padding > 300 {
            body.extend(std::iter::repeat_n(b' ', padding));
        }
        let mut request = Request::post("/webhook").header("content-type", "application/json");
        if let Some(id) = &id {
            request = request.header("webhook-id", id.as_str());
        }
        let request = request.body(Body::from(body)).unwrap();
        let status = runtime
            .block_on(router.clone().oneshot(request))
            .unwrap()
            .status()
            .as_u16();
        prop_assert!(matches!(status, 200 | 400 | 413), "status {}", status);
    });
    // Every line written reads back as two cells, none of them unsafe.
    let written = read_csv(&output);
    assert!(
        receiver.accepted() > 0,
        "no case was accepted: the test saw nothing"
    );
    assert_eq!(written.len() as u64, receiver.accepted());
    for (user, message) in written {
        for cell in [&user, &message] {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "a formula cell: {cell:?}"
            );
        }
        assert!(!user.chars().any(char::is_control), "{user:?}");
        assert!(
            !message
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')),
            "{message:?}"
        );
    }
    drop(dir);
}
