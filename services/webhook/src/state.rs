//! What every handler and worker shares.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ikit_client::Client;
use ikit_common::audit::AuditLog;
use ikit_common::clock::Clock;
use tokio::sync::Notify;

use crate::config::WebhookSettings;
use crate::error::WebhookError;
use crate::fanout::Fanout;
use crate::intake::Intake;
use crate::redis_link::RedisLink;
use crate::replay::ReplayCache;
use crate::store::{Db, FolderId};
use crate::worker::scope_key;

pub struct AppState {
    pub settings: WebhookSettings,
    pub clock: Arc<dyn Clock>,
    pub db: Db,
    pub audit: AuditLog,
    pub client: Client,
    pub fanout: Fanout,
    /// Shared with the receiver's group-commit writer, which checks each batch.
    pub replay: Arc<ReplayCache>,
    pub redis: Option<Arc<RedisLink>>,
    pub limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Something was queued (notified by the receiver's writer once per batch).
    pub wake: Arc<Notify>,
    /// Events were stored (the SSE streams look).
    pub changed: Notify,
    /// Names this process's leases.
    pub instance_id: String,
    /// The receiver's group-commit writer (queue and audit rows).
    pub intake: Intake,
    /// Queue rows this process finished (processed, or redone after another's crash).
    pub rows_finished: AtomicU64,
    /// Queue rows this process gave back unfinished at shutdown.
    pub rows_released_at_shutdown: AtomicU64,
}

impl AppState {
    pub fn limiter(settings: &WebhookSettings) -> Option<DefaultKeyedRateLimiter<IpAddr>> {
        let rate = NonZeroU32::new(settings.rate_per_sec)?;
        let burst = NonZeroU32::new(settings.rate_burst).unwrap_or(rate);
        Some(RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)))
    }

    /// The webhook secrets, current first.
    pub fn secrets(&self) -> Vec<&[u8]> {
        let mut out = vec![self.settings.secret.expose().as_bytes()];
        if let Some(p) = &self.settings.secret_previous {
            out.push(p.expose().as_bytes());
        }
        out
    }

    /// Whether a folder lies in the watched scope (environment and path prefix).
    pub fn watches(&self, environment: &str, folder: &str) -> bool {
        let envs = &self.settings.environments;
        let prefix = self.settings.path_prefix.trim_end_matches('/');
        (envs.is_empty() || envs.iter().any(|e| e == environment))
            && (prefix.is_empty()
                || folder == prefix
                || folder.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/')))
    }

    /// True when a baseline of this folder's scope was taken, so a folder without a stored
    /// state was created after it.
    pub async fn baseline_covers(&self, id: &FolderId) -> Result<bool, WebhookError> {
        if !self.watches(&id.environment, &id.folder) {
            return Ok(false);
        }
        self.db
            .baseline_taken(&scope_key(&id.project, &id.environment, &self.settings.path_prefix))
            .await
    }
}
