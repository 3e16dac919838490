//! Receipts on request over real loopback HTTP, on the in-memory backend:
//! `GET /jobs/{id}/lines/{n}` and `GET /jobs/{id}/users/{userId}`, the
//! latter reading the job's file again from the archive.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use wds_http::wds_core::{Delivered, Engine, Input, Message, Sink, SinkError};
use wds_memory::MemoryBackend;
use wds_server::{ControlApi, ControlConfig, Metrics};

/// Delivers every user but those named `gone…`, which are refused for good.
#[derive(Debug)]
struct GoneRefused;

#[async_trait]
impl Sink for GoneRefused {
    async fn deliver(&self, m: &Message) -> Result<Delivered, SinkError> {
        if m.user_id.starts_with("gone") {
            Err(SinkError::permanent("gone").with_status(410))
        } else {
            Ok(Delivered::with_status(200))
        }
    }
}

/// Line 1 u1 delivered, 2 u2 delivered, 3 gone1 dead, 4 invalid,
/// 5 duplicate of 1, 6 u2 again (another message) delivered.
const FILE: &[u8] = b"u1,a\nu2,b\ngone1,c\nbad,line,x\nu1,a\nu2,second\n";

struct Api {
    addr: SocketAddr,
    stop: CancellationToken,
    job: String,
    archived: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The API over a finished job whose file is in the archive under another
/// name than the job's (as a name clash in the archive leaves it).
async fn finished_job() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let (inbox, done) = (dir.path().join("inbox"), dir.path().join("done"));
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::create_dir_all(&done).unwrap();
    let archived = done.join("users.1.csv");
    std::fs::write(&archived, FILE).unwrap();
    std::fs::write(done.join("users.csv"), b"someone,else\n").unwrap();
    let backend = MemoryBackend::new();
    let engine = Engine::builder()
        .backend(backend.clone())
        .sink(Arc::new(GoneRefused))
        .build()
        .unwrap();
    let input = Input::from_bytes("users.csv", FILE.to_vec());
    let report = engine.run_once(&input).await.unwrap();
    let api = ControlApi::new(
        Arc::new(backend.clone()),
        Arc::new(backend),
        Arc::new(Metrics::new()),
        ControlConfig::new(&inbox).archive(&done),
    );
    let (addr, stop) = support::serve_control(api).await;
    Api {
        addr,
        stop,
        job: report.job.to_string(),
        archived,
        _dir: dir,
    }
}

async fn get(api: &Api, path: &str) -> (u16, Value) {
    let resp = reqwest::get(format!("http://{}{path}", api.addr))
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, json)
}

/// A refusal: the status, and a JSON error saying something.
async fn refused(api: &Api, path: &str, status: u16) -> String {
    let (got, json) = get(api, path).await;
    assert_eq!(got, status, "{path}: {json}");
    json["error"]
        .as_str()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| panic!("{path}: no error in {json}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_answers_its_outcome_with_receipt_reason_and_attempts() {
    let api = finished_job().await;
    let job = &api.job;
    let (status, line) = get(&api, &format!("/jobs/{job}/lines/1")).await;
    assert_eq!(status, 200, "{line}");
    assert_eq!(line["job"], job.as_str());
    assert_eq!(line["outcome"], "delivered");
    assert_eq!(line["receipt"]["status"], 200);
    assert_eq!(line["attempts"], 1);

    let (_, line) = get(&api, &format!("/jobs/{job}/lines/3")).await;
    assert_eq!(line["outcome"], "dead", "{line}");
    assert_eq!(line["reason"]["kind"], "permanent");
    assert_eq!(line["attempts"], 1, "{line}");

    let (_, line) = get(&api, &format!("/jobs/{job}/lines/4")).await;
    assert_eq!(line["outcome"], "invalid", "{line}");
    assert!(line["reason"].as_str().is_some_and(|r| !r.is_empty()));

    let (_, line) = get(&api, &format!("/jobs/{job}/lines/5")).await;
    assert_eq!(line["outcome"], "duplicate", "{line}");
    assert_eq!(line["of_line"], 1);

    let past = refused(&api, &format!("/jobs/{job}/lines/7"), 404).await;
    assert!(past.contains("no record"), "{past}");
    for bad in ["0", "abc", "-1", "99999999999999999999999"] {
        refused(&api, &format!("/jobs/{job}/lines/{bad}"), 400).await;
    }
    refused(&api, "/jobs/0000000000000000/lines/1", 404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_answers_every_line_naming_them_from_the_archived_file() {
    let api = finished_job().await;
    let job = &api.job;
    let (status, user) = get(&api, &format!("/jobs/{job}/users/u2")).await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["user_id"], "u2");
    assert_eq!(user["delivered"], true);
    let lines: Vec<(u64, &str)> = user["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["line"].as_u64().unwrap(), l["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(lines, [(2, "delivered"), (6, "delivered")]);

    let (_, user) = get(&api, &format!("/jobs/{job}/users/u1")).await;
    assert_eq!(user["lines"][1]["outcome"], "duplicate", "{user}");

    let (_, user) = get(&api, &format!("/jobs/{job}/users/gone1")).await;
    assert_eq!(user["delivered"], false, "{user}");
    assert_eq!(user["lines"][0]["outcome"], "dead");

    // The other file in the archive is another job's: its user is not here.
    let nobody = refused(&api, &format!("/jobs/{job}/users/someone"), 404).await;
    assert!(nobody.contains("no line"), "{nobody}");
    refused(&api, &format!("/jobs/{job}/users/{}", "x".repeat(300)), 400).await;
    refused(&api, &format!("/jobs/{job}/users/%FF"), 400).await;
    refused(&api, &format!("/jobs/{job}/lines/%FF"), 400).await;
    refused(&api, "/jobs/0000000000000000/users/u1", 404).await;

    // A file removed from the archive cannot be read again: said so.
    std::fs::remove_file(&api.archived).unwrap();
    let gone = refused(&api, &format!("/jobs/{job}/users/u1"), 404).await;
    assert!(gone.contains("archive"), "{gone}");
}
