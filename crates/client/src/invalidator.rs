//! The standalone publisher of invalidations and change events (for the webhook service and
//! admin tools): Redis only, no Infisical credentials, no seal key, never a secret value.
//!
//! It clears the shared L2 once, here, by name (see `l2`), then publishes on Redis pub/sub so
//! every replica drops its in-process L1 and calls its subscribers.

use std::time::Duration;

use ikit_common::events::{
    InvalidationMessage, InvalidationScope, SecretChangeEvent, events_channel, invalidation_channel,
};

use crate::cache::Invalidated;
use crate::error::ClientError;
use crate::l2::{self, Cleared};

/// Publishes invalidations and change events to every replica sharing a Redis prefix.
#[derive(Clone)]
pub struct Invalidator {
    prefix: String,
    conn: redis::aio::ConnectionManager,
    op_timeout: Duration,
    scan_budget: Duration,
}

impl std::fmt::Debug for Invalidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invalidator").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

fn redis_error(what: &str, e: &redis::RedisError) -> ClientError {
    // The error's kind and server message only: a connection error may carry the address.
    ClientError::Redis(format!("{what}: {:?}", e.kind()))
}

impl Invalidator {
    /// Connects to Redis at `redis_url`, with keys and channels under `prefix` (e.g. `ikit:`).
    /// The connection is re-made on its own after a failure. Each Redis step is bounded by 500 ms
    /// and the L2 part of an invalidation by 5 s (see [`Invalidator::with_timeouts`]).
    pub async fn connect(redis_url: &str, prefix: &str) -> Result<Self, ClientError> {
        let op_timeout = Duration::from_millis(500);
        let client = redis::Client::open(redis_url)
            .map_err(|e| ClientError::Config(format!("invalid redis url: {:?}", e.kind())))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(op_timeout))
            .set_response_timeout(Some(op_timeout))
            .set_number_of_retries(2);
        let conn = tokio::time::timeout(
            op_timeout * 4,
            redis::aio::ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| ClientError::Redis("connecting timed out".into()))?
        .map_err(|e| redis_error("connecting", &e))?;
        Ok(Self {
            prefix: prefix.to_owned(),
            conn,
            op_timeout,
            scan_budget: Duration::from_secs(5),
        })
    }

    /// Bounds on each Redis command and on the L2 part of one call.
    pub fn with_timeouts(mut self, op_timeout: Duration, scan_budget: Duration) -> Self {
        self.op_timeout = op_timeout;
        self.scan_budget = scan_budget;
        self
    }

    /// Drops the L2 listings `pattern` (a key path, a folder prefix or a glob) affects within
    /// `scope`, then publishes one [`InvalidationMessage`] so every replica drops its L1.
    /// An error means nothing was published; an L2 step that failed or overran its budget is
    /// reported as `l2_cleared: false` (the message is published all the same).
    pub async fn invalidate(
        &self,
        scope: &InvalidationScope,
        pattern: &str,
    ) -> Result<Invalidated, ClientError> {
        let targets = [(scope.clone(), pattern.to_owned())];
        let l2_cleared = self.clear(&targets).await;
        let message = serde_json::to_string(&InvalidationMessage::new(scope, pattern))
            .map_err(|e| ClientError::Redis(format!("encoding the message: {e}")))?;
        let mut pipe = redis::pipe();
        pipe.cmd("PUBLISH").arg(invalidation_channel(&self.prefix)).arg(message).ignore();
        self.send(&pipe).await?;
        Ok(Invalidated { local: 0, published: true, l2_cleared })
    }

    /// Publishes change events: first clears L2 for their folders (and the folders importing
    /// them) in one pass, then publishes one coalesced invalidation per folder (the key's path
    /// when one key of the folder changed, else the folder), then the events themselves, in
    /// order, on the events channel.
    pub async fn publish(&self, events: &[SecretChangeEvent]) -> Result<Invalidated, ClientError> {
        if events.is_empty() {
            return Ok(Invalidated { local: 0, published: true, l2_cleared: true });
        }
        let targets = coalesce(events);
        let l2_cleared = self.clear(&targets).await;
        let mut pipe = redis::pipe();
        let encode = |e: serde_json::Result<String>| {
            e.map_err(|e| ClientError::Redis(format!("encoding a message: {e}")))
        };
        for (scope, pattern) in &targets {
            let message = encode(serde_json::to_string(&InvalidationMessage::new(scope, pattern)))?;
            pipe.cmd("PUBLISH").arg(invalidation_channel(&self.prefix)).arg(message).ignore();
        }
        for event in events {
            pipe.cmd("PUBLISH")
                .arg(events_channel(&self.prefix))
                .arg(encode(serde_json::to_string(event))?)
                .ignore();
        }
        self.send(&pipe).await?;
        Ok(Invalidated { local: 0, published: true, l2_cleared })
    }

    async fn send(&self, pipe: &redis::Pipeline) -> Result<(), ClientError> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.op_timeout, pipe.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(redis_error("publishing", &e)),
            Err(_) => Err(ClientError::Redis("publishing timed out".into())),
        }
    }

    /// The L2 step; true when every affected listing is gone.
    async fn clear(&self, targets: &[(InvalidationScope, String)]) -> bool {
        let mut conn = self.conn.clone();
        let deadline = tokio::time::Instant::now() + self.scan_budget;
        let cleared = tokio::time::timeout(
            self.scan_budget + self.op_timeout,
            l2::clear(&mut conn, &self.prefix, targets, deadline),
        )
        .await;
        match cleared {
            Ok(Ok(Cleared::All(deleted))) => {
                tracing::debug!(deleted, "invalidated l2 listings");
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(error = ?e.kind(), "l2 invalidation failed, listings may remain until their ttl");
                false
            }
            Ok(Ok(Cleared::Overran)) | Err(_) => {
                tracing::warn!(
                    "l2 invalidation overran its budget, some listings may remain until their ttl"
                );
                false
            }
        }
    }
}

/// One invalidation per (project, environment, folder), in order of first appearance: the key's
/// path when one key of the folder changed, else the folder (which also drops its subfolders'
/// listings: one refetch each, against one message per key).
pub(crate) fn coalesce(events: &[SecretChangeEvent]) -> Vec<(InvalidationScope, String)> {
    let mut folders: Vec<(&SecretChangeEvent, Vec<&str>)> = Vec::new();
    for event in events {
        let same = |e: &SecretChangeEvent| {
            e.project == event.project
                && e.environment == event.environment
                && e.folder == event.folder
        };
        match folders.iter_mut().find(|(first, _)| same(first)) {
            Some((_, keys)) if !keys.contains(&event.key.as_str()) => keys.push(&event.key),
            Some(_) => {}
            None => folders.push((event, vec![event.key.as_str()])),
        }
    }
    folders
        .into_iter()
        .map(|(first, keys)| {
            let scope = InvalidationScope::of(&first.project, &first.environment);
            let pattern = if keys.len() == 1 { first.path() } else { first.folder.clone() };
            (scope, pattern)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ikit_common::events::ChangeKind;

    fn event(env: &str, folder: &str, key: &str) -> SecretChangeEvent {
        SecretChangeEvent {
            project: "p".into(),
            environment: env.into(),
            folder: folder.into(),
            key: key.into(),
            kind: ChangeKind::Updated,
            version: Some(2),
            event_id: format!("{env}{folder}{key}"),
        }
    }

    #[test]
    fn events_of_one_folder_coalesce_into_one_invalidation() {
        let mut events: Vec<SecretChangeEvent> =
            (0..200).map(|i| event("dev", "/app", &format!("K{i}"))).collect();
        events.push(event("prod", "/app", "K1"));
        events.push(event("dev", "/auth/jwt", "current_private_key"));
        events.push(event("dev", "/auth/jwt", "current_private_key"));
        let targets = coalesce(&events);
        assert_eq!(
            targets,
            [
                (InvalidationScope::of("p", "dev"), "/app".to_owned()),
                (InvalidationScope::of("p", "prod"), "/app/K1".to_owned()),
                (InvalidationScope::of("p", "dev"), "/auth/jwt/current_private_key".to_owned()),
            ]
        );
    }
}
