//! Pipelined publishing for bulk use: many acknowledgements in flight at
//! once (with backpressure), instead of one round trip per event.

use async_nats::jetstream::{context::PublishAckFuture, message::PublishMessage};
use baton_core::{Event, subjects};
use futures::{StreamExt, stream::FuturesUnordered};

use crate::{agent::Agent, error::BrokerError};

type Pending =
    std::pin::Pin<Box<dyn std::future::Future<Output = (String, Result<u64, String>)> + Send>>;

/// Publishes events with up to `window` acknowledgements outstanding.
/// Every event keeps `Nats-Msg-Id` = its id, so re-sending after a failure
/// stores it once.
pub struct Pipeline {
    agent: Agent,
    window: usize,
    inflight: FuturesUnordered<Pending>,
    stored: Vec<(String, u64)>,
    failed: Vec<(String, String)>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("window", &self.window)
            .field("inflight", &self.inflight.len())
            .finish()
    }
}

/// What a flushed pipeline stored and what it could not.
#[derive(Debug, Default)]
pub struct Flushed {
    /// (event id, stream sequence)
    pub stored: Vec<(String, u64)>,
    /// (event id, why) — publish these again.
    pub failed: Vec<(String, String)>,
}

impl Pipeline {
    pub(crate) fn new(agent: Agent, window: usize) -> Pipeline {
        Pipeline {
            agent,
            window: window.max(1),
            inflight: FuturesUnordered::new(),
            stored: Vec::new(),
            failed: Vec::new(),
        }
    }

    /// The agent publishing.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// Queues an event; waits only when `window` acknowledgements are
    /// outstanding.
    pub async fn send(&mut self, event: &Event) -> Result<(), BrokerError> {
        while self.inflight.len() >= self.window {
            self.collect_one().await;
        }
        let msg = PublishMessage::build()
            .payload(event.encode_to_vec().into())
            .message_id(event.event_id.as_str());
        let ack: PublishAckFuture = self
            .agent
            .inner
            .js
            .send_publish(subjects::event(&event.task, &event.agent), msg)
            .await
            .map_err(|e| BrokerError::Other(e.to_string()))?;
        let id = event.event_id.clone();
        self.inflight.push(Box::pin(async move {
            let result = ack.await.map(|a| a.sequence).map_err(|e| e.to_string());
            (id, result)
        }));
        Ok(())
    }

    async fn collect_one(&mut self) {
        if let Some((id, result)) = self.inflight.next().await {
            match result {
                Ok(seq) => self.stored.push((id, seq)),
                Err(e) => self.failed.push((id, e)),
            }
        }
    }

    /// Waits for every outstanding acknowledgement.
    pub async fn flush(&mut self) -> Flushed {
        while !self.inflight.is_empty() {
            self.collect_one().await;
        }
        Flushed {
            stored: std::mem::take(&mut self.stored),
            failed: std::mem::take(&mut self.failed),
        }
    }
}
