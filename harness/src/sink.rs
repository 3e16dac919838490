//! [`ScriptedSink`]: a [`Sink`] in the test process that follows a script
//! (succeed, fail, rate-limit, refuse, hang) and records every call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Notify;
use wds_core::{Delivered, Message, MessageId, Sink, SinkError};

/// What the scripted sink does on one call.
#[derive(Clone, Debug)]
pub enum Step {
    /// Succeed after `delay`.
    Ok(Duration),
    /// Fail retryably (a 503).
    Fail,
    /// Answer 429 with this `Retry-After`.
    RateLimited(Duration),
    /// Fail permanently (a 404).
    Permanent,
    /// Never answer (the engine's timeout must fire).
    Hang,
}

/// Decides the step for a message on its n-th call (1-based).
pub type Script = dyn Fn(&Message, u32) -> Step + Send + Sync;

/// One recorded call.
#[derive(Clone, Debug)]
pub struct Call {
    /// The message id.
    pub id: MessageId,
    /// When the call started.
    pub at: Instant,
}

/// A [`Sink`] that follows a script and records every call.
pub struct ScriptedSink {
    script: Box<Script>,
    calls: Mutex<Vec<Call>>,
    per_id: Mutex<HashMap<MessageId, u32>>,
    /// Notified on every call, for tests that act at the k-th call.
    pub called: Notify,
}

impl std::fmt::Debug for ScriptedSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedSink").finish_non_exhaustive()
    }
}

impl ScriptedSink {
    /// A sink following `script`.
    pub fn new(script: impl Fn(&Message, u32) -> Step + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(ScriptedSink {
            script: Box::new(script),
            calls: Mutex::new(Vec::new()),
            per_id: Mutex::new(HashMap::new()),
            called: Notify::new(),
        })
    }

    /// A sink that always succeeds after `delay`.
    pub fn ok(delay: Duration) -> Arc<Self> {
        Self::new(move |_, _| Step::Ok(delay))
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Calls per message id.
    pub fn calls_per_id(&self) -> HashMap<MessageId, u32> {
        self.per_id.lock().unwrap().clone()
    }

    /// Total calls so far.
    pub fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

#[async_trait]
impl Sink for ScriptedSink {
    async fn deliver(&self, message: &Message) -> Result<Delivered, SinkError> {
        let n = {
            let mut per_id = self.per_id.lock().unwrap();
            let n = per_id.entry(message.id.clone()).or_insert(0);
            *n += 1;
            *n
        };
        self.calls.lock().unwrap().push(Call {
            id: message.id.clone(),
            at: Instant::now(),
        });
        self.called.notify_waiters();
        match (self.script)(message, n) {
            Step::Ok(delay) => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok(Delivered::with_status(200))
            }
            Step::Fail => Err(SinkError::retryable("service unavailable").with_status(503)),
            Step::RateLimited(after) => Err(SinkError::rate_limited(Some(after))),
            Step::Permanent => Err(SinkError::permanent("no such user").with_status(404)),
            Step::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(Delivered::default())
            }
        }
    }
}
