//! The circuits of endpoints in Redis: one string key per endpoint,
//! changed by one compare-and-swap script, shared by every worker.

use async_trait::async_trait;
use deadpool_redis::redis::{cmd, Value};
use wds_core::backend::{CircuitState, CircuitStore};
use wds_core::{Error, Result};

use crate::args;
use crate::backend::RedisBackend;
use crate::codec;

impl RedisBackend {
    /// The key of `endpoint`'s circuit.
    fn circuit_key(&self, endpoint: &str) -> String {
        self.own_slot_key("circuit", endpoint)
    }
}

/// Reads a stored state; a missing key is a closed circuit.
fn decode(key: &str, reply: &Value) -> Result<CircuitState> {
    if matches!(reply, Value::Nil) {
        return Ok(CircuitState::Closed);
    }
    let text = codec::string("circuit load", reply)?;
    text.parse().map_err(|detail| Error::Corrupt {
        key: key.to_owned(),
        detail,
    })
}

#[async_trait]
impl CircuitStore for RedisBackend {
    async fn load(&self, endpoint: &str) -> Result<CircuitState> {
        let key = self.circuit_key(endpoint);
        let reply = self
            .inner
            .conns
            .query("circuit load", cmd("GET").arg(&key))
            .await?;
        decode(&key, &reply)
    }

    async fn swap(&self, endpoint: &str, from: &CircuitState, to: &CircuitState) -> Result<bool> {
        let op = "circuit swap";
        let args = args::CircuitSwap {
            expected: from.to_string(),
            new: to.to_string(),
        };
        let invocation = args::keyed(&args, &[self.circuit_key(endpoint)]);
        let reply = self.inner.conns.invoke(op, &invocation).await?;
        Ok(codec::int(op, &reply)? == 1)
    }
}
