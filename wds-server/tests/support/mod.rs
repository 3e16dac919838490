//! Helpers shared by the integration tests: real servers on 127.0.0.1:0.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wds_http::wds_core::{parse::Record, JobId, Message};
use wds_server::{ControlApi, FlushPolicy, Receiver, ReceiverConfig, ReceiverError};

/// Secrets of the right shape (24 and 32 bytes).
pub(crate) const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub(crate) const SECRET_B: &str = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24tdGVzdHM=";

/// A message of job `job` at `line`.
pub(crate) fn message(job: &str, line: u64, user: &str, text: &str) -> Message {
    Message::new(&JobId::new(job), Record::new(line, user, text))
}

/// A receiver served on a free loopback port, writing into a temp dir.
pub(crate) struct Running {
    pub(crate) receiver: Receiver,
    pub(crate) addr: SocketAddr,
    pub(crate) output: PathBuf,
    stop: CancellationToken,
    task: JoinHandle<Result<(), ReceiverError>>,
    _dir: tempfile::TempDir,
}

impl Running {
    /// `http://addr/webhook`.
    pub(crate) fn webhook_url(&self) -> String {
        format!("http://{}/webhook", self.addr)
    }

    /// `http://addr{path}`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server gracefully and returns what `serve` returned.
    pub(crate) async fn stop(self) -> (Result<(), ReceiverError>, PathBuf, tempfile::TempDir) {
        self.stop.cancel();
        let result = match tokio::time::timeout(Duration::from_secs(10), self.task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => panic!("receiver task failed: {join}"),
            Err(_) => panic!("receiver did not shut down within 10 s"),
        };
        (result, self.output, self._dir)
    }

    /// The output file's current contents.
    pub(crate) fn output_text(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap()
    }
}

/// Default test settings: flush on every write, unsigned webhooks accepted,
/// output in a fresh temp dir.
pub(crate) fn config() -> (ReceiverConfig, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ReceiverConfig::new(dir.path().join("alerts.csv"));
    config.flush = FlushPolicy::EveryWrite;
    // Tests that check signatures set a secret; the others send unsigned.
    config.accept_unsigned = true;
    (config, dir)
}

/// Serves a receiver with `config` (from [`config`], whose dir is passed along).
pub(crate) async fn spawn_receiver(config: ReceiverConfig, dir: tempfile::TempDir) -> Running {
    let output = config.output.clone();
    let receiver = Receiver::new(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let task = {
        let receiver = receiver.clone();
        let shutdown = stop.clone().cancelled_owned();
        tokio::spawn(async move { receiver.serve(listener, shutdown).await })
    };
    Running {
        receiver,
        addr,
        output,
        stop,
        task,
        _dir: dir,
    }
}

/// Serves `api` on a free loopback port until the token is cancelled.
pub(crate) async fn serve_control(api: ControlApi) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move { api.serve(listener, stop).await }
    });
    (addr, stop)
}

/// Reads a CSV file of `userId,alertMessage` lines with a real CSV parser.
pub(crate) fn read_csv(path: &std::path::Path) -> Vec<(String, String)> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .unwrap();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            assert_eq!(r.len(), 2, "a line with {} fields: {r:?}", r.len());
            (r[0].to_owned(), r[1].to_owned())
        })
        .collect()
}

/// A client for raw requests, with a timeout so a broken server fails the
/// test instead of hanging it.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}
