//! Cache invalidation and event publishing on every replica, after the events are stored.
//!
//! Interim: until `ikit_client::Invalidator` lands (contract 2), the per-key events are
//! published on the events channel, which the client's listener turns into L1 and L2 drops.
//! Without Redis configured there is nothing to fan out to (the embedded default: the SSE
//! stream still carries the events).

use std::sync::Arc;

use ikit_common::events::{SecretChangeEvent, events_channel};

use crate::error::WebhookError;
use crate::redis_link::RedisLink;

pub struct Fanout {
    redis: Option<Arc<RedisLink>>,
    prefix: String,
}

impl Fanout {
    pub fn new(redis: Option<Arc<RedisLink>>, prefix: &str) -> Self {
        Self { redis, prefix: prefix.to_owned() }
    }

    /// Publishes the events; an error leaves them to be published again by a retry.
    pub async fn publish(&self, events: &[SecretChangeEvent]) -> Result<(), WebhookError> {
        let Some(redis) = &self.redis else { return Ok(()) };
        if events.is_empty() {
            return Ok(());
        }
        let channel = events_channel(&self.prefix);
        let mut messages = Vec::with_capacity(events.len());
        for e in events {
            messages
                .push(serde_json::to_string(e).map_err(|e| WebhookError::State(e.to_string()))?);
        }
        redis
            .run(|mut c| async move {
                let mut pipe = redis::pipe();
                for m in &messages {
                    pipe.cmd("PUBLISH").arg(&channel).arg(m).ignore();
                }
                pipe.query_async::<()>(&mut c).await
            })
            .await
            .ok_or_else(|| WebhookError::Redis("publish failed".into()))
    }
}
