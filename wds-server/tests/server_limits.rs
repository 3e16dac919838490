//! The servers' limits with real sockets on loopback: connections that send
//! nothing, headers or bodies that trickle in, and idle keep-alives are
//! closed on time, and the server keeps answering everyone else.

mod support;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wds_server::ServerLimits;

use support::{config, spawn_receiver};

/// Limits short enough for a test, each distinct so a failure names which.
fn limits() -> ServerLimits {
    let mut limits = ServerLimits::default();
    limits.header_timeout = Duration::from_millis(400);
    limits.idle_timeout = Duration::from_millis(700);
    limits.request_timeout = Duration::from_millis(1000);
    limits.max_connections = 64;
    limits
}

/// A receiver under [`limits`].
async fn limited() -> support::Running {
    let (mut cfg, dir) = config();
    cfg.limits = limits();
    spawn_receiver(cfg, dir).await
}

/// Reads until the server closes the connection (or resets it); returns
/// what it sent and when it closed. Panics after `patience`.
async fn until_closed(
    stream: &mut (impl AsyncReadExt + Unpin),
    patience: Duration,
) -> (String, Instant) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(patience, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (String::from_utf8_lossy(&got).into(), Instant::now())
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "still open after {patience:?}; received {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let server = limited().await;
    let start = Instant::now();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let (_, closed) = until_closed(&mut stream, Duration::from_secs(5)).await;
    let after = closed - start;
    assert!(
        after >= Duration::from_millis(350),
        "closed too early: {after:?}"
    );
}

#[tokio::test]
async fn headers_that_trickle_in_are_cut_off_at_the_header_timeout() {
    let server = limited().await;
    let start = Instant::now();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    // One header byte every 50 ms, for ever: each byte is progress, so only
    // the header timeout can end it.
    let trickle = async {
        loop {
            if stream.write_all(b"x").await.is_err() {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let cut = tokio::time::timeout(Duration::from_secs(5), trickle)
        .await
        .expect("a slow-header connection stayed open 5 s");
    let after = cut - start;
    assert!(
        after >= Duration::from_millis(350),
        "cut too early: {after:?}"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = limited().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let answered = Instant::now();
    let (rest, closed) = until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(rest.is_empty(), "{rest}");
    let idle = closed - answered;
    assert!(
        idle >= Duration::from_millis(300),
        "closed too early: {idle:?}"
    );
}

#[tokio::test]
async fn a_body_that_trickles_in_gets_408_at_the_request_timeout() {
    let server = limited().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            b"POST /webhook HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 4000\r\n\r\n{",
        )
        .await
        .unwrap();
    let start = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        // A byte every 50 ms: never idle, never done.
        while writer.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let (text, _) = until_closed(&mut reader, Duration::from_secs(5)).await;
    trickle.abort();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("took longer than"), "{text}");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn past_the_cap_the_longest_idle_connection_makes_room_and_healthz_answers_at_once() {
    let (mut cfg, dir) = config();
    let mut l = limits();
    l.max_connections = 4;
    // Long enough that only eviction can explain a prompt answer.
    l.header_timeout = Duration::from_secs(5);
    l.idle_timeout = Duration::from_secs(5);
    cfg.limits = l;
    let server = spawn_receiver(cfg, dir).await;
    // Fill the cap with connections that send nothing, oldest first.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start = Instant::now();
    let answer = support::client()
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("/healthz never answered past the cap");
    assert_eq!(answer.status(), 200);
    let waited = start.elapsed();
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    // The oldest held connection was the one closed.
    let (_, _) = until_closed(&mut held[0], Duration::from_secs(2)).await;
    for (i, stream) in held.iter_mut().enumerate().skip(1) {
        let mut buf = [0u8; 1];
        let still_open = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf))
            .await
            .is_err();
        assert!(
            still_open,
            "held connection {i} was closed instead of the oldest"
        );
    }
}
