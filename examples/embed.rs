//! The engine inside your own axum service: jobs are submitted from code (a
//! request handler) instead of a folder.
//!
//! ```text
//! cargo run --example embed            # starts, submits one job to itself, prints it, exits
//! cargo run --example embed -- --serve # keeps serving on 127.0.0.1:3000
//! curl -X POST localhost:3000/alerts -H 'content-type: application/json' \
//!      -d '{"message":"Maintenance at 22:00","users":["ada","grace"]}'
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use wds_core::{ChannelSource, Engine, Format, Input, JobId, Submitter};
use wds_http::HttpSink;
use wds_memory::MemoryBackend;
use wds_server::{Receiver, ReceiverConfig};

/// Milliseconds since the Unix epoch, to name things.
fn millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

#[derive(Clone)]
struct App {
    submitter: Submitter,
    engine: Engine,
}

#[derive(Deserialize)]
struct AlertRequest {
    message: String,
    users: Vec<String>,
}

type Reply = (StatusCode, Json<Value>);

async fn create(State(app): State<App>, Json(req): Json<AlertRequest>) -> Reply {
    if req.users.is_empty() || req.message.trim().is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "need a message and at least one user"})),
        );
    }
    // One JSON object per user; the request's message is the job's default.
    let mut body = Vec::new();
    for user in &req.users {
        body.extend_from_slice(json!({ "userId": user }).to_string().as_bytes());
        body.push(b'\n');
    }
    let input = Input::from_bytes(format!("api-{}", millis()), body)
        .with_format(Format::JsonLines)
        .with_message(req.message);
    let job = JobId::from_identity(&input.identity);
    match app.submitter.submit(input).await {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({ "job": job }))),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": e.to_string() })),
        ),
    }
}

async fn status(State(app): State<App>, Path(id): Path<String>) -> Reply {
    match app.engine.report(&JobId::new(id)).await {
        Ok(Some(r)) => (StatusCode::OK, Json(json!(r))),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such job (yet)"})),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": e.to_string()})),
        ),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let serve = std::env::args().any(|a| a == "--serve");
    let cancel = CancellationToken::new();

    // Stand-in for the real webhook API: the bundled receiver on a free port.
    let out = std::env::temp_dir().join(format!("wds-embed-{}.csv", millis()));
    // Both ends are ours: sign with a secret made for this run.
    let secret = wds_http::signature::Secret::generate()?.to_whsec();
    let mut config = ReceiverConfig::new(&out);
    config.secrets = vec![secret.clone()];
    let receiver = Receiver::new(config)?;
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_url = format!("http://{}/webhook", hook.local_addr()?);
    tokio::spawn({
        let stop = cancel.clone();
        async move { receiver.serve(hook, stop.cancelled_owned()).await }
    });

    // The engine, fed from code through a channel source.
    let engine = Engine::builder()
        .backend(MemoryBackend::new())
        .sink(HttpSink::builder(&hook_url).secret(&secret).build()?)
        .rate_limit(200, 20)
        .build()?;
    let (source, submitter) = ChannelSource::new(16);
    let running = tokio::spawn({
        let (engine, cancel) = (engine.clone(), cancel.clone());
        async move { engine.run(Arc::new(source), cancel).await }
    });

    // Your service, with the engine behind two routes.
    let app = App {
        submitter,
        engine: engine.clone(),
    };
    let router = Router::new()
        .route("/alerts", post(create))
        .route("/alerts/{id}", get(status))
        .with_state(app);
    let addr = if serve {
        "127.0.0.1:3000"
    } else {
        "127.0.0.1:0"
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn({
        let stop = cancel.clone();
        async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
    });
    println!("service on {base}, delivering to {hook_url}");

    if serve {
        tokio::signal::ctrl_c().await?;
    } else {
        // Act as a client of our own service once.
        let client = reqwest::Client::new();
        let req = json!({"message": "Maintenance at 22:00", "users": ["ada", "grace", "linus"]});
        let resp = client
            .post(format!("{base}/alerts"))
            .header("content-type", "application/json")
            .body(req.to_string())
            .send()
            .await?;
        let job: Value = serde_json::from_slice(&resp.bytes().await?)?;
        let job = job["job"]
            .as_str()
            .ok_or("no job id in the answer")?
            .to_string();
        loop {
            let r: Value = serde_json::from_slice(
                &client
                    .get(format!("{base}/alerts/{job}"))
                    .send()
                    .await?
                    .bytes()
                    .await?,
            )?;
            if r["state"] == "done" {
                println!(
                    "job {job}: {} lines, {} delivered, {} dead",
                    r["lines"], r["delivered"], r["dead"]
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    cancel.cancel();
    running.await??;
    server.await??;
    println!("alerts received: {}", out.display());
    Ok(())
}
