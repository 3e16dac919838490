//! The engine's front door over the memory backend: what an embedder
//! reaches without the backend protocol.

use wds_core::{async_trait, Delivered, Engine, Input, JobId, Message, Sink, SinkError};
use wds_memory::MemoryBackend;

#[derive(Debug)]
struct Accepts;

#[async_trait]
impl Sink for Accepts {
    async fn deliver(&self, _: &Message) -> Result<Delivered, SinkError> {
        Ok(Delivered::with_status(204))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_reports_a_job_it_ran_and_no_other() {
    let engine = Engine::builder()
        .backend(MemoryBackend::new())
        .sink(Accepts)
        .build()
        .unwrap();
    let input = Input::from_bytes("ids.txt", b"u1\nu2\nu2\n".to_vec()).with_message("Maintenance");
    let ran = engine.run_once(&input).await.unwrap();
    assert_eq!((ran.lines, ran.delivered, ran.duplicate), (3, 2, 1));
    assert_eq!(ran.meta.default_message.as_deref(), Some("Maintenance"));

    let reported = engine.report(&ran.job).await.unwrap();
    assert_eq!(reported.as_ref(), Some(&ran));
    assert_eq!(
        engine.report(&JobId::new("never-claimed")).await.unwrap(),
        None
    );
}
