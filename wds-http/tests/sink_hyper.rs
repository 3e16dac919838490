//! Every test of `tests/sink.rs` again, on the `hyper-client` transport
//! (`HttpSinkBuilder::hyper_client`): the same requests, headers,
//! signatures, timeouts and classification as the default reqwest client.
//! Plus what only this transport refuses.

#![cfg(feature = "hyper-client")]

#[path = "sink.rs"]
mod on_hyper;

use wds_http::{BuildError, HttpSink, HttpSinkBuilder};

/// The builder of every test of `on_hyper`: on hyper's client.
pub(crate) fn builder(url: impl Into<String>) -> HttpSinkBuilder {
    HttpSink::builder(url).hyper_client()
}

/// Whether `e` is hyper's client error for a failed connection.
pub(crate) fn is_client_error(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<hyper_util::client::legacy::Error>()
        .is_some_and(hyper_util::client::legacy::Error::is_connect)
}

#[test]
fn https_and_credentials_in_the_url_stay_with_the_default_client() {
    for (url, what) in [
        ("https://example.test/hook", "https"),
        (
            "http://user:pw@example.test/hook",
            "a URL with a user or password",
        ),
    ] {
        match builder(url).build() {
            Err(BuildError::HyperClientLimits { what: said }) => assert_eq!(said, what),
            other => panic!("{url}: expected HyperClientLimits, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn no_query_secret_reaches_an_error_or_debug_output() {
    use wds_http::wds_core::Sink as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let sink = builder(format!("http://{addr}/hook?api_key=SEKRIT"))
        .build()
        .unwrap();
    assert!(!format!("{sink:?}").contains("SEKRIT"), "{sink:?}");
    let message =
        wds_http::wds_core::Message::fresh(&wds_http::wds_core::JobId::new("job"), 1, "u", "m");
    let refused = sink.deliver(&message).await.unwrap_err();
    // Nothing listens: silent never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink = builder(format!("http://{}/?k=SEKRIT", silent.local_addr().unwrap()))
        .timeout(std::time::Duration::from_millis(200))
        .build()
        .unwrap();
    let timed_out = sink.deliver(&message).await.unwrap_err();
    for e in [refused, timed_out] {
        for text in [e.to_string(), format!("{e:?}")] {
            assert!(!text.contains("SEKRIT"), "{text}");
        }
    }
}
