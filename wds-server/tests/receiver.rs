//! The receiver over real loopback HTTP, fed by `HttpSink` and by raw requests.

mod support;

use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;
use serde_json::Value;
use tokio::task::JoinSet;
use wds_http::signature::{self, Secret};
use wds_http::wds_core::{Sink, SinkError};
use wds_http::HttpSink;
use wds_server::{FlushPolicy, Receiver, ReceiverConfig, ReceiverError};

use support::{client, config, message, read_csv, spawn_receiver, SECRET_A, SECRET_B};

/// Asserts a JSON error answer with `status` and returns its message.
async fn json_error(response: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status);
    let ct = response.headers().get("content-type").cloned();
    assert_eq!(ct.unwrap(), "application/json");
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"))
        .to_owned()
}

/// POSTs `body` with explicit Standard Webhooks headers.
async fn post_signed(
    url: &str,
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &'static str,
) -> reqwest::Response {
    client()
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp)
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// A receiver with `config` and [`SECRET_A`], and a sink signing with it.
async fn signed(
    (mut config, dir): (ReceiverConfig, tempfile::TempDir),
) -> (support::Running, HttpSink) {
    config.secrets = vec![SECRET_A.into()];
    let server = spawn_receiver(config, dir).await;
    let sink = HttpSink::builder(server.webhook_url())
        .secret(SECRET_A)
        .build()
        .unwrap();
    (server, sink)
}

#[tokio::test]
async fn signed_deliveries_land_in_the_csv_with_correct_quoting() {
    let (server, sink) = signed(config()).await;
    let alerts = [
        ("u1", "plain"),
        ("u,2", "comma, inside"),
        ("u3", "a \"quoted\" word"),
        ("u4", "two\nlines\r\nand CRLF"),
        ("ü5", "unicode ✓, \"all\" of it,\n"),
        ("u6", ""),
    ];
    for (line, (user, text)) in alerts.iter().enumerate() {
        let got = sink
            .deliver(&message("job1", line as u64 + 1, user, text))
            .await
            .unwrap();
        assert_eq!(got.status, Some(200));
    }
    assert_eq!(server.receiver.accepted(), alerts.len() as u64);
    let expected: Vec<(String, String)> = alerts
        .iter()
        .map(|(u, t)| (u.to_string(), t.to_string()))
        .collect();
    // EveryWrite: the file is complete before the answer.
    assert_eq!(read_csv(&server.output), expected);
    let (result, output, _dir) = server.stop().await;
    result.unwrap();
    assert_eq!(read_csv(&output), expected);
}

#[tokio::test]
async fn signed_deliveries_with_attributes_are_accepted_and_recorded_as_before() {
    let (server, sink) = signed(config()).await;
    let attributes = wds_http::wds_core::Attributes::try_from_pairs([
        ("orderId", serde_json::json!("A-1")),
        ("items", serde_json::json!(3)),
        ("gift", serde_json::json!({"wrap": true})),
    ])
    .unwrap();
    let with = message("job1", 1, "u1", "shipped").with_attributes(attributes);
    let got = sink.deliver(&with).await.unwrap();
    assert_eq!(
        got.status,
        Some(200),
        "signature over the body with attributes"
    );
    assert_eq!(server.receiver.accepted(), 1);
    assert_eq!(
        read_csv(&server.output),
        [("u1".to_string(), "shipped".to_string())]
    );
}

#[tokio::test]
async fn bad_missing_and_stale_signatures_get_401() {
    let (mut cfg, dir) = config();
    cfg.secrets = vec![SECRET_A.into()];
    let server = spawn_receiver(cfg, dir).await;
    let url = server.webhook_url();
    let secret: Secret = SECRET_A.parse().unwrap();
    let body = r#"{"userId":"u1","alertMessage":"hi"}"#;
    let now = signature::unix_seconds(SystemTime::now()).to_string();
    let good = secret.sign("j:1", &now, body.as_bytes());

    // Control: the correctly signed request is accepted.
    let ok = post_signed(&url, "j:1", &now, &good, body).await;
    assert_eq!(ok.status(), StatusCode::OK);

    // Tampered body (signature of the original).
    let tampered = r#"{"userId":"u1","alertMessage":"HI"}"#;
    let r = post_signed(
        &url,
        "j:2",
        &now,
        &secret.sign("j:2", &now, body.as_bytes()),
        tampered,
    )
    .await;
    json_error(r, StatusCode::UNAUTHORIZED).await;
    // Signed with another secret.
    let other: Secret = SECRET_B.parse().unwrap();
    let r = post_signed(
        &url,
        "j:3",
        &now,
        &other.sign("j:3", &now, body.as_bytes()),
        body,
    )
    .await;
    json_error(r, StatusCode::UNAUTHORIZED).await;
    // Stale: correctly signed, but 10 minutes old.
    let old = (signature::unix_seconds(SystemTime::now()) - 600).to_string();
    let r = post_signed(
        &url,
        "j:4",
        &old,
        &secret.sign("j:4", &old, body.as_bytes()),
        body,
    )
    .await;
    let message = json_error(r, StatusCode::UNAUTHORIZED).await;
    assert!(message.contains("tolerance"), "{message}");
    // The id is signed too: a valid signature replayed under another id fails.
    let r = post_signed(&url, "j:5", &now, &good, body).await;
    json_error(r, StatusCode::UNAUTHORIZED).await;
    // No signature headers at all.
    let r = client().post(&url).body(body).send().await.unwrap();
    let message = json_error(r, StatusCode::UNAUTHORIZED).await;
    assert!(message.contains("webhook-id"), "{message}");
    // Garbage signature header.
    let r = post_signed(&url, "j:6", &now, "v1,@@@ nonsense", body).await;
    json_error(r, StatusCode::UNAUTHORIZED).await;

    assert_eq!(server.receiver.accepted(), 1);
    assert_eq!(read_csv(&server.output), vec![("u1".into(), "hi".into())]);
}

#[tokio::test]
async fn key_rotation_the_receiver_knowing_only_the_new_key_accepts() {
    let (mut cfg, dir) = config();
    cfg.secrets = vec![SECRET_B.into()];
    let server = spawn_receiver(cfg, dir).await;
    let rotating = HttpSink::builder(server.webhook_url())
        .secrets([SECRET_A, SECRET_B])
        .build()
        .unwrap();
    let got = rotating
        .deliver(&message("j", 1, "u1", "m1"))
        .await
        .unwrap();
    assert_eq!(got.status, Some(200));
    // A sink that only has the old key is refused, permanently (401).
    let stale = HttpSink::builder(server.webhook_url())
        .secret(SECRET_A)
        .build()
        .unwrap();
    match stale.deliver(&message("j", 2, "u2", "m2")).await {
        Err(SinkError::Permanent {
            status: Some(401), ..
        }) => {}
        other => panic!("expected a 401, got {other:?}"),
    }
    assert_eq!(read_csv(&server.output), vec![("u1".into(), "m1".into())]);
}

#[tokio::test]
async fn the_limiter_allows_the_burst_then_answers_429_with_retry_after() {
    const N: usize = 50;
    const PER_SECOND: u32 = 10;
    const BURST: usize = 5;
    let (mut cfg, dir) = config();
    cfg.rate = Some((PER_SECOND, BURST as u32));
    let server = spawn_receiver(cfg, dir).await;
    let http = client();
    // Concurrent requests over many connections: each comes from a different
    // port but the same address, which is what the limiter keys on.
    let started = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..N {
        let request = http
            .post(server.webhook_url())
            .header("webhook-id", format!("burst:{i}"))
            .body(format!(r#"{{"userId":"u{i}","alertMessage":"m"}}"#));
        set.spawn(async move { request.send().await.unwrap() });
    }
    let mut accepted = 0;
    let mut limited = 0;
    while let Some(response) = set.join_next().await {
        let response = response.unwrap();
        match response.status() {
            StatusCode::OK => accepted += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                let retry_after: u64 = response.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(retry_after >= 1);
                json_error(response, StatusCode::TOO_MANY_REQUESTS).await;
                limited += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let elapsed = started.elapsed();
    println!("{accepted} accepted, {limited} refused with 429, in {elapsed:?}");
    // The bucket holds BURST; it refills one request per 1/PER_SECOND s. A
    // burst that took longer than that may legitimately see the refill, so
    // the bound widens by exactly what the elapsed time allows (normally
    // nothing: 50 loopback requests take a few milliseconds).
    let refill = (elapsed.as_secs_f64() * f64::from(PER_SECOND)).floor() as usize;
    assert!(
        (BURST..=BURST + refill).contains(&accepted),
        "{accepted} accepted in {elapsed:?}"
    );
    assert_eq!(accepted + limited, N);
    assert_eq!(server.receiver.accepted(), accepted as u64);
    assert_eq!(read_csv(&server.output).len(), accepted);
    // The health probe is never throttled.
    let health = http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_repeated_webhook_id_is_answered_200_and_recorded_once() {
    let (server, sink) = signed(config()).await;
    let m = message("job", 7, "u7", "once");
    assert_eq!(sink.deliver(&m).await.unwrap().status, Some(200));
    assert_eq!(sink.deliver(&m).await.unwrap().status, Some(200));
    // Another line of the same job is a different id.
    let other = message("job", 8, "u7", "once");
    assert_eq!(sink.deliver(&other).await.unwrap().status, Some(200));
    assert_eq!(server.receiver.accepted(), 2);
    assert_eq!(server.receiver.duplicates(), 1);
    assert_eq!(
        read_csv(&server.output),
        vec![("u7".into(), "once".into()), ("u7".into(), "once".into())]
    );
}

#[tokio::test]
async fn bodies_that_are_not_the_expected_json_get_400() {
    let (cfg, dir) = config();
    let server = spawn_receiver(cfg, dir).await;
    let cases = [
        "",
        "not json",
        r#"{"userId":"u1","alertMessage":"m""#,
        r#"{"userId":1,"alertMessage":"m"}"#,
        r#"{"userId":"u1","alertMessage":["m"]}"#,
        r#"{"alertMessage":"m"}"#,
        r#"{"userId":"u1"}"#,
        r#"{"userId":"","alertMessage":"m"}"#,
        r#"["u1","m"]"#,
        "\u{0}\u{1}\u{2}",
    ];
    for body in cases {
        let r = client()
            .post(server.webhook_url())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body:?}");
        let message = json_error(r, StatusCode::BAD_REQUEST).await;
        assert!(!message.is_empty(), "{body:?}");
    }
    // Invalid UTF-8 is refused the same way.
    let r = client()
        .post(server.webhook_url())
        .body(vec![b'{', 0xff, 0xfe, b'}'])
        .send()
        .await
        .unwrap();
    json_error(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(server.receiver.accepted(), 0);
    assert_eq!(server.output_text(), "");
    // Unknown extra fields are tolerated.
    let r = client()
        .post(server.webhook_url())
        .body(r#"{"userId":"u1","alertMessage":"m","extra":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_oversized_body_gets_413() {
    let (mut cfg, dir) = config();
    cfg.body_limit = 1024;
    let server = spawn_receiver(cfg, dir).await;
    let big = format!(r#"{{"userId":"u1","alertMessage":"{}"}}"#, "x".repeat(2000));
    let r = client()
        .post(server.webhook_url())
        .body(big)
        .send()
        .await
        .unwrap();
    let message = json_error(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(message.contains("1024"), "{message}");
    // Just under the limit is fine.
    let fits = format!(r#"{{"userId":"u1","alertMessage":"{}"}}"#, "x".repeat(900));
    let r = client()
        .post(server.webhook_url())
        .body(fits)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(server.receiver.accepted(), 1);
}

#[tokio::test]
async fn healthz_and_unknown_paths() {
    let (cfg, dir) = config();
    let server = spawn_receiver(cfg, dir).await;
    let r = client().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(body, serde_json::json!({"status": "ok"}));
    let r = client().get(server.url("/nope")).send().await.unwrap();
    json_error(r, StatusCode::NOT_FOUND).await;
    let r = client().get(server.webhook_url()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn interval_flush_writes_buffered_lines_on_shutdown() {
    let (mut cfg, dir) = config();
    // Far longer than the test: only the shutdown flush can write the line.
    cfg.flush = FlushPolicy::Interval(Duration::from_secs(3600));
    let server = spawn_receiver(cfg, dir).await;
    let sink = HttpSink::builder(server.webhook_url()).build().unwrap();
    sink.deliver(&message("j", 1, "u1", "buffered"))
        .await
        .unwrap();
    // The line waits in the buffer (the first timed flush is an hour away).
    assert_eq!(server.output_text(), "");
    let (result, output, _dir) = server.stop().await;
    result.unwrap();
    assert_eq!(read_csv(&output), vec![("u1".into(), "buffered".into())]);
}

#[tokio::test]
async fn lines_are_appended_to_an_existing_file() {
    let (cfg, dir) = config();
    std::fs::write(&cfg.output, "old,line\n").unwrap();
    let server = spawn_receiver(cfg, dir).await;
    let sink = HttpSink::builder(server.webhook_url()).build().unwrap();
    sink.deliver(&message("j", 1, "u1", "new")).await.unwrap();
    assert_eq!(
        read_csv(&server.output),
        vec![("old".into(), "line".into()), ("u1".into(), "new".into())]
    );
}

#[test]
fn invalid_configuration_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ReceiverConfig::new(dir.path().join("a.csv"));
    cfg.secrets = vec![SECRET_A.into(), "not-a-secret".into()];
    let e = Receiver::new(cfg).unwrap_err();
    assert!(
        matches!(e, ReceiverError::InvalidSecret { index: 1, .. }),
        "{e}"
    );

    let mut cfg = ReceiverConfig::new(dir.path().join("a.csv"));
    cfg.accept_unsigned = true;
    cfg.rate = Some((0, 5));
    assert!(matches!(Receiver::new(cfg), Err(ReceiverError::Config(_))));

    let mut cfg = ReceiverConfig::new(dir.path().join("a.csv"));
    cfg.accept_unsigned = true;
    cfg.flush = FlushPolicy::Interval(Duration::ZERO);
    assert!(matches!(Receiver::new(cfg), Err(ReceiverError::Config(_))));

    let mut cfg = ReceiverConfig::new(dir.path().join("missing-dir/a.csv"));
    cfg.accept_unsigned = true;
    let e = Receiver::new(cfg).unwrap_err();
    assert!(matches!(e, ReceiverError::Output { .. }));
    assert!(e.to_string().contains("missing-dir"), "{e}");
}

#[test]
fn no_secret_refuses_to_start_unless_unsigned_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ReceiverConfig::new(dir.path().join("a.csv"));
    let e = Receiver::new(cfg).unwrap_err();
    assert!(matches!(e, ReceiverError::Unsigned), "{e}");
    assert!(e.to_string().contains("--insecure-accept-unsigned"), "{e}");
    assert!(
        !dir.path().join("a.csv").exists(),
        "refused, yet opened the output"
    );

    let mut cfg = ReceiverConfig::new(dir.path().join("a.csv"));
    cfg.accept_unsigned = true;
    Receiver::new(cfg).unwrap();
}

#[tokio::test]
async fn formula_cells_are_neutralised_and_control_characters_refused() {
    let (server, sink) = signed(config()).await;
    let alerts = [
        ("=1+1", "@SUM(A1)"),
        (
            "+33612345678",
            "=HYPERLINK(\"http://evil.example\",\"click\")",
        ),
        ("-5", "\tstarts with a tab"),
        ("u4", "\rstarts with CR"),
        ("u5", "plain = text - with @ inside"),
    ];
    for (line, (user, text)) in alerts.iter().enumerate() {
        let got = sink
            .deliver(&message("job", line as u64 + 1, user, text))
            .await
            .unwrap();
        assert_eq!(got.status, Some(200));
    }
    let expected: Vec<(String, String)> = [
        ("'=1+1", "'@SUM(A1)"),
        (
            "'+33612345678",
            "'=HYPERLINK(\"http://evil.example\",\"click\")",
        ),
        ("'-5", "'\tstarts with a tab"),
        ("u4", "'\rstarts with CR"),
        ("u5", "plain = text - with @ inside"),
    ]
    .iter()
    .map(|(u, t)| (u.to_string(), t.to_string()))
    .collect();
    assert_eq!(read_csv(&server.output), expected);

    let refused = [
        (
            "u\u{0}1",
            "m",
            "userId contains a control character (U+0000)",
        ),
        (
            "u\u{1b}1",
            "m",
            "userId contains a control character (U+001B)",
        ),
        (
            "u\u{202E}1",
            "m",
            "userId contains a control character (U+202E)",
        ),
        ("u1", "a\u{0}b", "alertMessage contains a NUL character"),
        (
            "u1",
            "\u{1b}[2J",
            "alertMessage contains a control character (U+001B)",
        ),
        (
            "u1",
            "abc\u{2066}",
            "alertMessage contains a control character (U+2066)",
        ),
    ];
    for (line, (user, text, why)) in refused.iter().enumerate() {
        let got = sink
            .deliver(&message("bad", line as u64 + 1, user, text))
            .await;
        match got {
            Err(SinkError::Permanent { status, reason, .. }) => {
                assert_eq!(status, Some(400));
                assert!(reason.contains(why), "{reason}");
            }
            other => panic!("{user:?}/{text:?}: {other:?}"),
        }
    }
    assert_eq!(read_csv(&server.output).len(), alerts.len());
}

#[tokio::test]
async fn repeats_are_dropped_across_a_restart() {
    let (mut cfg, dir) = config();
    cfg.secrets = vec![SECRET_A.into()];
    let again = cfg.clone();
    let server = spawn_receiver(cfg, dir).await;
    let sink = |url: String| HttpSink::builder(url).secret(SECRET_A).build().unwrap();
    let m = message("job", 1, "u1", "once");
    assert_eq!(
        sink(server.webhook_url()).deliver(&m).await.unwrap().status,
        Some(200)
    );
    let (result, _, dir) = server.stop().await;
    result.unwrap();

    let server = spawn_receiver(again, dir).await;
    let sink = sink(server.webhook_url());
    assert_eq!(sink.deliver(&m).await.unwrap().status, Some(200));
    assert_eq!(
        server.receiver.duplicates(),
        1,
        "the restarted receiver forgot the id"
    );
    assert_eq!(server.receiver.accepted(), 0);
    assert_eq!(read_csv(&server.output), vec![("u1".into(), "once".into())]);
}

#[tokio::test]
async fn remembered_ids_are_forgotten_after_the_window() {
    let (mut cfg, dir) = config();
    cfg.dedupe_window = Duration::from_secs(1);
    let (server, sink) = signed((cfg, dir)).await;
    for line in 1..=50 {
        sink.deliver(&message("job", line, "u", "m")).await.unwrap();
    }
    assert_eq!(server.receiver.remembered_ids(), 50);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.receiver.remembered_ids() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} ids still remembered after the window",
            server.receiver.remembered_ids()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
