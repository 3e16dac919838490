//! A [`Source`] fed from code: jobs submitted programmatically.

use async_trait::async_trait;
use tokio::sync::{mpsc, Mutex};

use super::input::{Input, Source};
use super::SharedReceiver;
use crate::error::{Error, Result};

/// A source that yields what its [`Submitter`]s send. It ends when every
/// submitter has been dropped.
#[derive(Debug)]
pub struct ChannelSource {
    rx: SharedReceiver,
}

/// The sending half of a [`ChannelSource`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Submitter {
    tx: mpsc::Sender<Input>,
}

impl ChannelSource {
    /// A source and its submitter; `capacity` inputs may wait.
    pub fn new(capacity: usize) -> (ChannelSource, Submitter) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (ChannelSource { rx: Mutex::new(rx) }, Submitter { tx })
    }
}

impl Submitter {
    /// Submits an input; waits while the source is full.
    pub async fn submit(&self, input: Input) -> Result<()> {
        self.tx.send(input).await.map_err(|_| Error::Shutdown {
            what: "the channel source",
        })
    }
}

#[async_trait]
impl Source for ChannelSource {
    async fn next(&self) -> Result<Option<Input>> {
        // recv is cancel safe, and so is the lock: no input is lost.
        Ok(self.rx.lock().await.recv().await)
    }
}
