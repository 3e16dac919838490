//! Connecting, and losing the connection: clear errors, quickly, and no
//! panic; a restarted Redis is used again without reconnecting by hand.

use std::time::{Duration, Instant};

use wds_core::{backend::Queue, Error};
use wds_redis::{RedisBackend, RedisServer};

#[tokio::test]
async fn a_malformed_url_is_a_config_error() {
    for url in [
        "not a url",
        "http://127.0.0.1:6379",
        "redis://127.0.0.1:notaport",
    ] {
        let start = Instant::now();
        match RedisBackend::builder(url).connect().await {
            Err(Error::Config {
                setting: "url",
                reason: message,
                ..
            }) => {
                assert!(
                    message.contains("Redis URL"),
                    "unclear message for {url:?}: {message}"
                )
            }
            other => panic!("{url:?} must be refused as Error::Config, got {other:?}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{url:?} took {:?}",
            start.elapsed()
        );
    }
}

#[tokio::test]
async fn a_bad_prefix_is_a_config_error() {
    for prefix in ["", "a{b}"] {
        let result = RedisBackend::builder("redis://127.0.0.1:1")
            .prefix(prefix)
            .connect()
            .await;
        assert!(
            matches!(
                result,
                Err(Error::Config {
                    setting: "prefix",
                    ..
                })
            ),
            "prefix {prefix:?}: {result:?}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_quickly() {
    // A port that nobody listens on: reserved, so no other test server
    // binds it meanwhile (one free a moment ago could be taken by one).
    let reserved = wds_redis::reserve_port();
    let port = reserved.port();
    let url = format!("redis://:secret@127.0.0.1:{port}/0");
    let start = Instant::now();
    let result = RedisBackend::builder(&url)
        .command_timeout(Duration::from_secs(2))
        .connect()
        .await;
    let elapsed = start.elapsed();
    match result {
        Err(e @ Error::Unavailable { .. }) => {
            assert!(e.is_retryable());
            let message = e.to_string();
            assert!(
                message.contains(&port.to_string()),
                "the message names the server: {message}"
            );
            assert!(
                !message.contains("secret"),
                "the message must not show the password: {message}"
            );
        }
        other => panic!("an unreachable server must be Error::Unavailable, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_unavailable_and_heals_after_a_restart() {
    let mut server = RedisServer::start();
    let backend = RedisBackend::builder(server.url())
        .command_timeout(Duration::from_millis(500))
        .connect()
        .await
        .expect("connect");
    backend.stats().await.expect("stats while up");

    server.kill();
    let start = Instant::now();
    match backend.stats().await {
        Err(e) => assert!(
            e.is_retryable(),
            "a lost connection must be retryable: {e:?}"
        ),
        Ok(stats) => panic!("stats with Redis down answered {stats:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );

    server.restart();
    // The broken connection is replaced on the next call.
    let mut result = backend.stats().await;
    for _ in 0..20 {
        if result.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        result = backend.stats().await;
    }
    assert_eq!(result.expect("stats after the restart").ready, 0);
}

/// The key shard count belongs to the deployment: the first process
/// stores it, later ones adopt it, and one naming another count is refused
/// (its jobs would be looked for on the wrong shards).
#[tokio::test]
async fn the_shard_count_is_the_deployments() {
    let server = RedisServer::start();
    let connect = |shards: Option<usize>| {
        let url = server.url();
        async move {
            let builder = RedisBackend::builder(url).prefix("sharded");
            match shards {
                Some(n) => builder.shards(n).connect().await,
                None => builder.connect().await,
            }
        }
    };
    let first = connect(Some(4)).await.expect("the first process sets 4");
    assert_eq!(first.shards(), 4);
    assert_eq!(
        first.key_prefixes(),
        [
            "{sharded}",
            "{sharded:shard:1}",
            "{sharded:shard:2}",
            "{sharded:shard:3}"
        ]
    );
    assert_eq!(connect(None).await.expect("adopts").shards(), 4);
    assert_eq!(connect(Some(4)).await.expect("agrees").shards(), 4);
    match connect(Some(2)).await {
        Err(Error::Config { setting, reason }) => {
            assert_eq!(setting, "shards");
            assert!(reason.contains("over 4 key shards, not 2"), "{reason}");
        }
        other => panic!("another shard count must be refused, got {other:?}"),
    }
    for bad in [0, wds_redis::MAX_SHARDS + 1] {
        assert!(
            matches!(connect(Some(bad)).await, Err(Error::Config { .. })),
            "{bad} shards must be refused"
        );
    }
    // A new deployment on one server has one shard unless told otherwise.
    let single = RedisBackend::builder(server.url())
        .prefix("single")
        .connect()
        .await
        .expect("connect");
    assert_eq!(single.shards(), 1);
}
