//! The circuits of endpoints, in the backend's state: shared by every
//! delivery task of the process.

use async_trait::async_trait;
use wds_core::backend::{CircuitState, CircuitStore};
use wds_core::Result;

use crate::MemoryBackend;

#[async_trait]
impl CircuitStore for MemoryBackend {
    async fn load(&self, endpoint: &str) -> Result<CircuitState> {
        Ok(self
            .lock()
            .circuits
            .get(endpoint)
            .copied()
            .unwrap_or_default())
    }

    async fn swap(&self, endpoint: &str, from: &CircuitState, to: &CircuitState) -> Result<bool> {
        let mut state = self.lock();
        let stored = state.circuits.get(endpoint).copied().unwrap_or_default();
        if stored != *from {
            return Ok(false);
        }
        state.circuits.insert(endpoint.to_owned(), *to);
        Ok(true)
    }
}
