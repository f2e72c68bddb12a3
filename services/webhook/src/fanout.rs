//! Cache invalidation and event publishing on every replica, after the events are stored:
//! `ikit_client::Invalidator` clears the shared L2 of the changed folders (and of the folders
//! importing them) once, publishes one coalesced invalidation per folder so every replica drops
//! L1, then publishes the per-key events. Without Redis configured there is nothing to fan out
//! to (the embedded default: the SSE stream still carries the events).

use ikit_client::Invalidator;
use ikit_common::events::SecretChangeEvent;

use crate::error::WebhookError;

pub struct Fanout {
    redis_url: Option<String>,
    prefix: String,
    /// Made on first use and again after a failed connect, so a Redis outage at start is only
    /// a delay.
    invalidator: tokio::sync::Mutex<Option<Invalidator>>,
}

impl Fanout {
    pub fn new(redis_url: Option<String>, prefix: &str) -> Self {
        Self { redis_url, prefix: prefix.to_owned(), invalidator: tokio::sync::Mutex::new(None) }
    }

    async fn invalidator(&self, url: &str) -> Result<Invalidator, WebhookError> {
        let mut slot = self.invalidator.lock().await;
        if let Some(i) = slot.as_ref() {
            return Ok(i.clone());
        }
        let made = Invalidator::connect(url, &self.prefix).await?;
        *slot = Some(made.clone());
        Ok(made)
    }

    /// Clears L2, drops L1 everywhere and publishes the events; an error leaves them to be
    /// published again by a retry (subscribers drop a repeat of the same version).
    pub async fn publish(&self, events: &[SecretChangeEvent]) -> Result<(), WebhookError> {
        let Some(url) = &self.redis_url else { return Ok(()) };
        if events.is_empty() {
            return Ok(());
        }
        let outcome = self.invalidator(url).await?.publish(events).await?;
        if !outcome.l2_cleared {
            // The replicas' L1 is dropped and the events are out; the shared L2 serves the old
            // listing until its TTL at worst. Redoing would not clear it either.
            tracing::warn!(
                events = events.len(),
                "published, but the shared l2 could not be cleared in time"
            );
        }
        Ok(())
    }
}
