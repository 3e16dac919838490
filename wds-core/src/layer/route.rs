//! [`Router`]: one of several sinks per message.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::SinkError;
use crate::model::Message;
use crate::sink::{Delivered, Sink};

/// A sink that hands each message to one of several sinks, chosen by a key
/// that a function reads from the message (an attribute, typically).
///
/// A message whose key names no route goes to the fallback sink; with no
/// fallback it fails as [`SinkError::Permanent`] ("no route"), since the
/// same message would be routed the same way on every attempt. The chosen
/// sink's result is returned as it is.
///
/// ```
/// use wds_core::{async_trait, layer::Router, Delivered, Message, Sink, SinkError};
///
/// #[derive(Debug)]
/// struct Named(&'static str);
///
/// #[async_trait]
/// impl Sink for Named {
///     async fn deliver(&self, _: &Message) -> Result<Delivered, SinkError> {
///         Err(SinkError::permanent(self.0)) // says which sink was called
///     }
/// }
///
/// // The `channel` column of a CSV file with a header, say.
/// let router = Router::new(|m: &Message| m.attributes.get("channel")?.as_str())
///     .route("sms", Named("sms"))
///     .route("mail", Named("mail"));
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// # let job = wds_core::JobId::from_identity("example");
/// let mut message = Message::fresh(&job, 1, "u1", "hello");
/// message.attributes.push("channel", "mail").unwrap();
/// assert_eq!(router.deliver(&message).await.unwrap_err().reason(), "mail");
///
/// message.attributes = Default::default();
/// let e = router.deliver(&message).await.unwrap_err();
/// assert!(!e.is_retryable() && e.reason().contains("no route"), "{e}");
/// # });
/// ```
pub struct Router<K> {
    key: K,
    routes: HashMap<String, Arc<dyn Sink>>,
    fallback: Option<Arc<dyn Sink>>,
}

impl<K> Router<K>
where
    K: Fn(&Message) -> Option<&str> + Send + Sync + 'static,
{
    /// A router without routes that reads each message's key with `key`
    /// (`None`: the message has no key, and goes to the fallback).
    pub fn new(key: K) -> Self {
        Router {
            key,
            routes: HashMap::new(),
            fallback: None,
        }
    }

    /// Sends the messages whose key is `key` to `sink` (instead of the sink
    /// given for that key before, if any).
    pub fn route(mut self, key: impl Into<String>, sink: impl Sink) -> Self {
        self.routes.insert(key.into(), Arc::new(sink));
        self
    }

    /// Sends the messages whose key names no route, or that have no key, to
    /// `sink`.
    pub fn fallback(mut self, sink: impl Sink) -> Self {
        self.fallback = Some(Arc::new(sink));
        self
    }

    /// The sink a message goes to, if any.
    fn pick(&self, message: &Message) -> Result<&dyn Sink, SinkError> {
        let key = (self.key)(message);
        key.and_then(|k| self.routes.get(k))
            .or(self.fallback.as_ref())
            .map(|sink| &**sink)
            .ok_or_else(|| match key {
                Some(k) => SinkError::permanent(format!("no route for key {k:?}")),
                None => SinkError::permanent("no route: the message has no key"),
            })
    }
}

impl<K> fmt::Debug for Router<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<&str> = self.routes.keys().map(String::as_str).collect();
        keys.sort_unstable();
        f.debug_struct("Router")
            .field("routes", &keys)
            .field("fallback", &self.fallback)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<K> Sink for Router<K>
where
    K: Fn(&Message) -> Option<&str> + Send + Sync + 'static,
{
    async fn deliver(&self, message: &Message) -> Result<Delivered, SinkError> {
        self.pick(message)?.deliver(message).await
    }
}
