//! The control API over real loopback HTTP, on the in-memory backend.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use wds_http::wds_core::{
    backend::{now_ms, Checkpoint, OffsetStore, Push, Queue, Settle},
    parse::Record,
    DeadKind, DeadReason, Delivered, Engine, Format, Input, JobId, JobMeta, Message, Sink,
    SinkError,
};
use wds_memory::MemoryBackend;
use wds_server::{ControlApi, ControlConfig, Metrics};

const BOUNDARY: &str = "wdsTestBoundary7MA4YWxk";

struct Api {
    addr: SocketAddr,
    inbox: PathBuf,
    backend: MemoryBackend,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn start(config: impl FnOnce(ControlConfig) -> ControlConfig) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("inbox");
        std::fs::create_dir_all(&inbox).unwrap();
        let backend = MemoryBackend::new();
        let metrics = Arc::new(Metrics::new());
        let api = ControlApi::new(
            Arc::new(backend.clone()),
            Arc::new(backend.clone()),
            metrics.clone(),
            config(ControlConfig::new(&inbox).control(Arc::new(backend.clone()))),
        );
        let (addr, stop) = support::serve_control(api).await;
        Api {
            addr,
            inbox,
            backend,
            metrics,
            stop,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The inbox's data files and `.message` sidecars: what the folder
    /// source reads (dotfiles, such as an upload's display name, apart).
    fn inbox_data_files(&self) -> Vec<String> {
        let mut names = self.inbox_files();
        names.retain(|n| !n.starts_with('.'));
        names
    }

    fn inbox_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.inbox)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A multipart body with the given (name, file name, content) parts.
fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, file_name, content) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match file_name {
            Some(f) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn post_multipart(api: &Api, body: Vec<u8>, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(api.url("/upload"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, json_of(resp).await)
}

async fn get(api: &Api, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(api.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, json_of(resp).await)
}

async fn json_of(resp: reqwest::Response) -> Value {
    let bytes = resp.bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

fn error_of(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("not a JSON error: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_lands_in_the_inbox_with_its_message_and_job_id() {
    let api = Api::start(|c| c).await;
    let body = multipart(&[
        ("message", None, b"  Maintenance at 22:00  "),
        ("file", Some("../../etc/passwd.csv"), b"userId\nu1\nu2\n"),
    ]);
    let (status, json) = post_multipart(&api, body, None).await;
    assert_eq!(status, 202, "{json}");
    let name = json["file"].as_str().unwrap().to_string();
    assert!(
        name.starts_with("upload-") && name.ends_with(".csv"),
        "{name}"
    );
    assert_eq!(
        api.inbox_data_files(),
        vec![name.clone(), format!("{name}.message")]
    );
    // The client's name is the job's display name, beside the file and
    // never a path.
    assert_eq!(json["name"], "passwd.csv", "{json}");
    let shown = std::fs::read_to_string(wds_http::wds_core::source::display_name_file(
        &api.inbox.join(&name),
    ))
    .unwrap();
    assert_eq!(shown, "passwd.csv");
    let path = api.inbox.join(&name);
    assert_eq!(std::fs::read(&path).unwrap(), b"userId\nu1\nu2\n");
    let sidecar = std::fs::read_to_string(api.inbox.join(format!("{name}.message"))).unwrap();
    assert_eq!(sidecar, "Maintenance at 22:00");
    // The job id answered is the one the folder source will claim.
    let input = Input::from_file(&path).unwrap().with_message(sidecar);
    let job = wds_http::wds_core::JobId::from_identity(&input.identity);
    assert_eq!(json["job"].as_str().unwrap(), job.as_str());
    assert_eq!(json["bytes"].as_u64(), Some(13));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_is_streamed_to_disk_not_held_in_memory() {
    let api = Api::start(|c| c).await;
    // 8 MiB of users, sent in two halves over a raw connection with a pause:
    // the first half must already be on disk (in a hidden .part file the
    // folder source ignores) while the second is still to come.
    let mut content = Vec::new();
    let mut i = 0u64;
    while content.len() < 8 << 20 {
        content.extend_from_slice(format!("user-{i},hello {i}\n").as_bytes());
        i += 1;
    }
    let body = multipart(&[("file", Some("big.csv"), &content)]);
    let (first, second) = body.split_at(body.len() / 2);
    let mut conn = tokio::net::TcpStream::connect(api.addr).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(first).await.unwrap();
    let part_size = |dir: &Path| -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    let mut seen = 0;
    for _ in 0..100 {
        seen = part_size(&api.inbox);
        if seen > (first.len() as u64) / 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen > (first.len() as u64) / 2,
        "only {seen} bytes on disk mid-upload"
    );
    let visible: Vec<_> = api
        .inbox_files()
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(
        visible.is_empty(),
        "a half-uploaded file is visible: {visible:?}"
    );
    conn.write_all(second).await.unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    let files = api.inbox_data_files();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(std::fs::read(api.inbox.join(&files[0])).unwrap(), content);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_get_a_json_4xx_and_leave_nothing_behind() {
    let api = Api::start(|c| c.max_upload_bytes(1000)).await;
    let big = vec![b'a'; 5000];
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            multipart(&[("file", Some("a.csv"), &big)]),
            413,
            "larger than",
        ),
        (multipart(&[("message", None, b"hi")]), 400, "no `file`"),
        (
            multipart(&[("file", Some("a.csv"), b"u1,x\n"), ("format", None, b"xml")]),
            400,
            "unknown format",
        ),
        (
            multipart(&[
                ("file", Some("a.csv"), b"u1,x\n"),
                ("file", Some("b.csv"), b"u2,x\n"),
            ]),
            400,
            "only one",
        ),
        (multipart(&[("evil", None, b"x")]), 400, "unknown field"),
        (b"not multipart at all".to_vec(), 400, "multipart"),
    ];
    for (body, want, needle) in cases {
        let (status, json) = post_multipart(&api, body, None).await;
        assert_eq!(status, want, "{json}");
        assert!(error_of(&json).contains(needle), "{json}");
    }
    // Not multipart by content type.
    let resp = reqwest::Client::new()
        .post(api.url("/upload"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let json = json_of(resp).await;
    error_of(&json);
    assert!(api.inbox_files().is_empty(), "{:?}", api.inbox_files());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_route_but_healthz() {
    let api = Api::start(|c| c.token(Some("s3cret".into()))).await;
    for path in ["/jobs", "/metrics", "/jobs/abc"] {
        let (status, json) = get(&api, path, None).await;
        assert_eq!(status, 401, "{path}: {json}");
        error_of(&json);
        assert_eq!(get(&api, path, Some("wrong")).await.0, 401, "{path}");
    }
    assert_eq!(get(&api, "/jobs", Some("s3cret")).await.0, 200);
    assert_eq!(
        get(&api, "/healthz", None).await,
        (200, serde_json::json!({"status": "ok"}))
    );
    let (status, _) =
        post_multipart(&api, multipart(&[("file", Some("a.csv"), b"u,m\n")]), None).await;
    assert_eq!(status, 401);
    let (status, _) = post_multipart(
        &api,
        multipart(&[("file", Some("a.csv"), b"u,m\n")]),
        Some("s3cret"),
    )
    .await;
    assert_eq!(status, 202);
    // Without a token configured, no header is needed.
    let open = Api::start(|c| c).await;
    assert_eq!(get(&open, "/jobs", None).await.0, 200);
}

/// Fails lines whose user id starts with `gone` until healed.
#[derive(Debug, Default)]
struct Flaky {
    healed: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Sink for Flaky {
    async fn deliver(&self, m: &Message) -> Result<Delivered, SinkError> {
        if m.user_id.starts_with("gone") && !self.healed.load(std::sync::atomic::Ordering::SeqCst) {
            Err(SinkError::permanent("gone").with_status(410))
        } else {
            Ok(Delivered::with_status(200))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_retry_and_metrics_tell_the_truth() {
    let api = Api::start(|c| c).await;
    let flaky = Arc::new(Flaky::default());
    let engine = Engine::builder()
        .backend(api.backend.clone())
        .sink(api.metrics.wrap(flaky.clone()))
        .build()
        .unwrap();
    let input = Input::from_bytes(
        "users.csv",
        b"u1,a\nu2,b\ngone1,c\nbad,line,x\nu1,a\n".to_vec(),
    );
    let report = engine.run_once(&input).await.unwrap();
    let id = report.job.to_string();

    let (status, jobs) = get(&api, "/jobs", None).await;
    assert_eq!(status, 200);
    let job = &jobs[0];
    assert_eq!(job["job"], id.as_str());
    assert_eq!(job["state"], "done");
    assert_eq!(
        (
            job["lines"].as_u64(),
            job["delivered"].as_u64(),
            job["dead"].as_u64()
        ),
        (Some(5), Some(2), Some(1))
    );
    assert_eq!(
        (job["invalid"].as_u64(), job["duplicate"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(job["in_flight"].as_u64(), Some(0));
    assert_eq!(
        (
            job["permanent"].as_u64(),
            job["exhausted"].as_u64(),
            job["in_doubt"].as_u64()
        ),
        (Some(1), Some(0), Some(0)),
        "dead letters by reason: {job}"
    );

    let (status, detail) = get(&api, &format!("/jobs/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(detail["rejects"].as_array().unwrap().len(), 2);
    assert_eq!(detail["dead_letters"][0]["reason"]["kind"], "permanent");
    assert_eq!(detail["permanent"].as_u64(), Some(1), "{detail}");
    let (status, json) = get(&api, "/jobs/0000000000000000", None).await;
    assert_eq!(status, 404);
    error_of(&json);

    let metrics = reqwest::get(api.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("wds_deliveries_total{outcome=\"delivered\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wds_deliveries_total{outcome=\"permanent\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wds_queue_messages{state=\"dead\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("wds_jobs{state=\"done\"} 1"), "{metrics}");

    // Retry: bad bodies and unknown jobs are refused; a good one replays.
    let client = reqwest::Client::new();
    let resp = client
        .post(api.url("/retry"))
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let resp = client
        .post(api.url("/retry"))
        .body(r#"{"job":"ffffffffffffffff"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    flaky
        .healed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let resp = client
        .post(api.url("/retry"))
        .body(format!(r#"{{"job":"{id}"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let json = json_of(resp).await;
    assert_eq!(json["replayed"].as_u64(), Some(1));
    assert_eq!(api.backend.stats().await.unwrap().dead, 0);
    // Delivering the replayed letter completes the job again.
    let cancel = CancellationToken::new();
    let deliverer = engine.deliverer();
    let task = tokio::spawn({
        let cancel = cancel.clone();
        async move { deliverer.run(cancel).await }
    });
    let report = engine
        .wait_for(&report.job, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    cancel.cancel();
    task.await.unwrap().unwrap();
    assert_eq!((report.delivered, report.dead), (3, 0));
    let stored = api.backend.report(&report.job).await.unwrap().unwrap();
    assert_eq!(stored.accounted(), stored.lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_answer_json() {
    let api = Api::start(|c| c).await;
    let (status, json) = get(&api, "/nope", None).await;
    assert_eq!(status, 404);
    error_of(&json);
    let resp = reqwest::Client::new()
        .delete(api.url("/jobs"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    let json = json_of(resp).await;
    error_of(&json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_inbox_makes_healthz_and_upload_503() {
    let status = wds_http::wds_core::source::IntakeStatus::new();
    let api = Api::start({
        let status = status.clone();
        |c| c.intake(status)
    })
    .await;
    assert_eq!(get(&api, "/healthz", None).await.0, 200);
    status.set_unreadable(Some("cannot list /in: No such file or directory".into()));
    let (code, json) = get(&api, "/healthz", None).await;
    assert_eq!(code, 503, "{json}");
    assert!(error_of(&json).contains("No such file"), "{json}");
    let (code, json) =
        post_multipart(&api, multipart(&[("file", Some("a.csv"), b"u,m\n")]), None).await;
    assert_eq!(code, 503, "{json}");
    assert!(api.inbox_files().is_empty(), "{:?}", api.inbox_files());
    status.skip("x.csv", "a FIFO");
    let (code, json) = get(&api, "/intake", None).await;
    assert_eq!(code, 200);
    assert_eq!(json["skipped"][0]["reason"], "a FIFO", "{json}");

    status.set_unreadable(None);
    assert_eq!(get(&api, "/healthz", None).await.0, 200);
    let (code, _) =
        post_multipart(&api, multipart(&[("file", Some("a.csv"), b"u,m\n")]), None).await;
    assert_eq!(code, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_limits_answer_413_and_507_with_json_errors() {
    // Size.
    let api = Api::start(|mut c| {
        c.max_upload_bytes = 10;
        c
    })
    .await;
    let big = multipart(&[("file", Some("a.csv"), b"user-1,hello there\n")]);
    let (status, json) = post_multipart(&api, big, None).await;
    assert_eq!(status, 413, "{json}");
    assert!(error_of(&json).contains("limit of 10 bytes"), "{json}");

    // A free-disk floor above what any disk has.
    let full = Api::start(|mut c| {
        c.min_free_disk_bytes = u64::MAX;
        c
    })
    .await;
    let small = multipart(&[("file", Some("a.csv"), b"u,m\n")]);
    let (status, json) = post_multipart(&full, small.clone(), None).await;
    assert_eq!(status, 507, "{json}");
    assert!(error_of(&json).contains("free disk space"), "{json}");
    assert!(full.inbox_files().is_empty(), "{:?}", full.inbox_files());
}

/// The concurrent-upload cap: while one upload holds the only slot, another
/// gets 503 with `Retry-After` and a JSON error, and nothing of it lands in
/// the inbox; the slot is free again once the first completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_past_the_concurrent_cap_gets_503_with_retry_after() {
    let one = Api::start(|mut c| {
        c.max_concurrent_uploads = 1;
        c
    })
    .await;
    let small = multipart(&[("file", Some("a.csv"), b"u,m\n")]);
    let mut slow = tokio::net::TcpStream::connect(one.addr).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        small.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&small[..10]).await.unwrap();
    // The first upload holds the only slot once its handler runs, before
    // it reads the body; until then an upload made here goes through.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (status, retry_after, json) = loop {
        let resp = reqwest::Client::new()
            .post(one.url("/upload"))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(small.clone())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or("").to_string());
        let json = json_of(resp).await;
        if status != 202 || std::time::Instant::now() > deadline {
            break (status, retry_after, json);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        status, 503,
        "a second upload while the only slot is held: {json}"
    );
    assert_eq!(retry_after.as_deref(), Some("5"), "{json}");
    assert!(
        error_of(&json).contains("1 uploads are being received"),
        "{json}"
    );
    let landed = one.inbox_data_files().len();
    slow.write_all(&small[10..]).await.unwrap();
    let mut response = String::new();
    slow.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    assert_eq!(
        one.inbox_data_files().len(),
        landed + 1,
        "only the upload that held the slot lands: {:?}",
        one.inbox_files()
    );
    // The slot is free again.
    assert_eq!(post_multipart(&one, small, None).await.0, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let api = Api::start(|c| c.token(Some("s3cret".into()))).await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let status = reqwest::Client::new()
            .get(api.url("/jobs"))
            .header("authorization", format!("{scheme} s3cret"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{scheme}");
    }
    for wrong in [
        "Basic s3cret",
        "Bearer s3cre",
        "Bearer s3cret2",
        "Bearer",
        "s3cret",
    ] {
        let status = reqwest::Client::new()
            .get(api.url("/jobs"))
            .header("authorization", wrong)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401, "{wrong}");
    }
}

/// A claimed job with `batches` pushes of two messages each, read to the
/// end when `done`.
async fn job_with(backend: &MemoryBackend, name: &str, batches: u64, done: bool) -> JobId {
    let meta = JobMeta::new(name, Format::Csv, now_ms());
    let job = backend.claim(name, meta).await.unwrap().job;
    for seq in 0..batches {
        let messages = (1..=2)
            .map(|i| {
                let line = seq * 2 + i;
                Message::new(&job, Record::new(line, format!("u{line}"), "hi"))
            })
            .collect();
        let next = Checkpoint {
            seq: seq + 1,
            byte: (seq + 1) * 10,
            line: seq * 2 + 3,
            records: (seq + 1) * 2,
            done: done && seq + 1 == batches,
        };
        backend
            .push(&Push {
                job: job.clone(),
                messages,
                rejects: Vec::new(),
                next,
            })
            .await
            .unwrap();
    }
    job
}

async fn post(api: &Api, path: &str, body: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(api.url(path))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, json_of(resp).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_control_routes_pause_resume_cancel_with_json_errors() {
    let api = Api::start(|c| c).await;
    let job = job_with(&api.backend, "control.csv", 2, false).await;

    let (status, json) = post(&api, &format!("/jobs/{job}/pause"), "").await;
    assert_eq!((status, json["state"].as_str()), (200, Some("paused")));
    assert!(
        api.backend
            .lease(10, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty(),
        "a paused job's batches are not leased"
    );
    let (status, json) = post(&api, &format!("/jobs/{job}/resume"), "").await;
    assert_eq!((status, json["state"].as_str()), (200, Some("reading")));

    let (status, json) = post(&api, &format!("/jobs/{job}/cancel"), "").await;
    assert_eq!((status, json["state"].as_str()), (200, Some("cancelled")));
    assert_eq!(
        (json["cancelled"].as_u64(), json["lines"].as_u64()),
        (Some(4), Some(4))
    );

    let (status, json) = post(&api, &format!("/jobs/{job}/resume"), "").await;
    assert_eq!(status, 409, "resume of a cancelled job: {json}");
    error_of(&json);
    let (status, json) = post(&api, "/jobs/ffffffffffffffff/pause", "").await;
    assert_eq!(status, 404);
    error_of(&json);
    let (status, json) = post(&api, &format!("/jobs/{job}/replay"), "{bad").await;
    assert_eq!(status, 400);
    error_of(&json);
    let (status, json) = post(
        &api,
        &format!("/jobs/{job}/replay"),
        r#"{"reason":"sideways"}"#,
    )
    .await;
    assert_eq!(status, 400);
    error_of(&json);
    let (status, json) = post(&api, "/jobs/ffffffffffffffff/replay", r#"{"reason":"all"}"#).await;
    assert_eq!(status, 404);
    error_of(&json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_route_takes_one_reason_only() {
    let api = Api::start(|c| c).await;
    let job = job_with(&api.backend, "replay.csv", 2, true).await;
    let leases = api.backend.lease(2, Duration::from_secs(30)).await.unwrap();
    let kinds = [
        DeadKind::Exhausted,
        DeadKind::InDoubt,
        DeadKind::Permanent,
        DeadKind::InDoubt,
    ];
    let mut kinds = kinds.iter();
    for lease in &leases {
        let outcomes: Vec<Settle> = lease
            .batch
            .messages
            .iter()
            .map(|m| Settle::Dead {
                message: m.clone(),
                reason: DeadReason {
                    kind: *kinds.next().unwrap(),
                    detail: "test".into(),
                },
            })
            .collect();
        api.backend.settle(lease, &outcomes).await.unwrap();
    }
    let (status, json) = post(
        &api,
        &format!("/jobs/{job}/replay"),
        r#"{"reason":"in_doubt"}"#,
    )
    .await;
    assert_eq!((status, json["replayed"].as_u64()), (200, Some(2)));
    let left = api.backend.dead_letters(Some(&job), 10).await.unwrap();
    let mut left: Vec<&str> = left.iter().map(|d| d.reason.kind.as_str()).collect();
    left.sort_unstable();
    assert_eq!(left, ["exhausted", "permanent"]);
    let (status, json) = post(&api, &format!("/jobs/{job}/replay"), r#"{"reason":"all"}"#).await;
    assert_eq!((status, json["replayed"].as_u64()), (200, Some(2)));
}

/// The page and the API's description hold no data: served without the
/// token, while the data behind them needs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_the_openapi_description_need_no_token() {
    let api = Api::start(|c| c.token(Some("s3cret".into()))).await;
    let page = reqwest::get(api.url("/")).await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("<title>WDS status</title>"));

    let (status, spec) = get(&api, "/openapi.json", None).await;
    assert_eq!(status, 200, "{spec}");
    assert!(spec["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.")));
    for path in [
        "/jobs",
        "/upload",
        "/jobs/{id}/lines/{n}",
        "/jobs/{id}/users/{user}",
    ] {
        assert!(spec["paths"].get(path).is_some(), "{path} missing");
    }
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object());

    let (status, json) = get(&api, "/jobs", None).await;
    assert_eq!(status, 401, "{json}");
    let (status, _) = get(&api, "/jobs", Some("s3cret")).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_route_lists_each_worker_live_or_gone_with_its_rate() {
    use wds_http::wds_core::backend::{WorkerBeat, WorkerRegistry};

    let dir = tempfile::tempdir().unwrap();
    let backend = MemoryBackend::new();
    let metrics = Arc::new(Metrics::new());
    let mut config = ControlConfig::new(dir.path())
        .token(Some("s3cret".into()))
        .workers(Arc::new(backend.clone()));
    // Beats every 200 ms: gone after 600 ms without one.
    config.worker_beat_interval = Duration::from_millis(200);
    let api = ControlApi::new(
        Arc::new(backend.clone()),
        Arc::new(backend.clone()),
        metrics,
        config,
    );
    let (addr, stop) = support::serve_control(api).await;
    let client = reqwest::Client::new();
    let fetch = |path: &str| {
        let req = client
            .get(format!("http://{addr}{path}"))
            .bearer_auth("s3cret");
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let beat = |id: &str, delivered: u64| {
        WorkerBeat::new(id)
            .process("host-a", 42)
            .started_ms(1_000)
            .calls(delivered, 2, 3)
            .in_flight(4, 64)
    };
    backend.beat(&beat("w-1", 100)).await.unwrap();
    backend.beat(&beat("w-2", 10)).await.unwrap();

    let (status, body) = fetch("/workers").await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    let workers = body["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{body}");
    let w1 = &workers[0];
    assert_eq!(w1["worker"], "w-1");
    assert_eq!(w1["host"], "host-a");
    assert_eq!(w1["pid"], 42);
    assert_eq!(w1["started_ms"], 1_000);
    assert_eq!(w1["live"], true);
    assert_eq!(
        (
            &w1["delivered"],
            &w1["failed"],
            &w1["rate_limited"],
            &w1["in_flight"],
            &w1["concurrency_limit"]
        ),
        (
            &Value::from(100),
            &Value::from(2),
            &Value::from(3),
            &Value::from(4),
            &Value::from(64)
        )
    );
    assert!(w1["seen_ms"].as_u64().unwrap() >= now_ms() - 5_000, "{w1}");
    assert_eq!(w1["rate_per_s"], Value::Null, "no rate from one beat");

    // w-1 keeps beating (with 100 more deliveries per beat), w-2 stops.
    for i in 1..=5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        backend.beat(&beat("w-1", 100 + 100 * i)).await.unwrap();
        fetch("/workers").await;
    }
    let (_, body) = fetch("/workers").await;
    let body: Value = serde_json::from_str(&body).unwrap();
    let (w1, w2) = (&body["workers"][0], &body["workers"][1]);
    assert_eq!(
        (w1["live"].clone(), w2["live"].clone()),
        (true.into(), false.into()),
        "{body}"
    );
    let rate = w1["rate_per_s"].as_f64().unwrap();
    // 100 deliveries between beats ~200 ms apart (later on a loaded machine).
    assert!(rate > 50.0 && rate <= 1_000.0, "rate {rate}: {body}");
    assert_eq!(w2["rate_per_s"], 0.0, "a gone worker delivers nothing");

    let (_, text) = fetch("/metrics").await;
    assert!(text.contains("wds_workers{state=\"live\"} 1"), "{text}");
    assert!(text.contains("wds_workers{state=\"gone\"} 1"), "{text}");

    // Same auth as the rest of the API.
    let resp = client
        .get(format!("http://{addr}/workers"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    stop.cancel();

    // Without a registry: 501, as a JSON error.
    let open = Api::start(|c| c).await;
    let (status, json) = get(&open, "/workers", None).await;
    assert_eq!(status, 501, "{json}");
    error_of(&json);
}
