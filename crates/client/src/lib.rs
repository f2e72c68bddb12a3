//! ikit-client: the Infisical client every service and the CLI read secrets through.
//!
//! Reading a secret takes one line to start and one to read:
//!
//! ```no_run
//! # async fn demo() -> Result<(), ikit_client::ClientError> {
//! let secrets = ikit_client::from_env(&ikit_common::env_map_from_process())?;
//! let db_url = secrets.value("/app/DB_URL").await?;
//! println!("{}", db_url.expose());
//! # Ok(())
//! # }
//! ```
//!
//! [`from_env`] reads the Infisical CLI's variables (`INFISICAL_API_URL`, `INFISICAL_PROJECT_ID`,
//! `INFISICAL_UNIVERSAL_AUTH_CLIENT_ID` and `_SECRET` or `INFISICAL_TOKEN`, ...) and returns
//! [`Secrets`]: a [`CachedClient`] with a default project and environment
//! (`IKIT_INFISICAL_ENVIRONMENT`, `dev` when unset). [`CachedClient::get`] with a [`SecretRef`]
//! gives full control, [`CachedClient::handle`] a live handle for the hot path, and
//! [`CachedClient::builder`] assembles a cache with named settings. Every fallible call returns
//! [`ClientError`].
//!
//! The crate owns machine-identity auth (universal, kubernetes, oidc, jwt, aws-iam, azure,
//! gcp-id-token, fixed and service tokens), the token lifecycle (renew at 80%, log in again
//! instead of renewing past the max TTL, re-authenticate once on 401 or 403 `TokenError`), the
//! secrets, folders and projects API in the v4 and v3 `raw` dialects, and the reliability rules
//! (timeouts, pacing, circuit breaker, full-jitter retries that honour `Retry-After`).
//! [`CachedClient`] adds the two-level cache (a lock-free L1, sealed Redis L2), single-flight,
//! stale-while-revalidate, stale-if-error, the encrypted offline snapshot, fan-out invalidation
//! and change subscriptions.
//!
//! Code map: pure logic lives in `token` (lifecycle decisions), `retry` (backoff, `Retry-After`,
//! bucket, breaker), `wire` (lenient decoding, import merge, listing encoder), `error`
//! (classification), `sigv4` and `api` (request builders), `seal` (AES-256-GCM with bound
//! associated data), `pattern` (invalidation and subscription matching, event de-duplication);
//! IO lives in `auth` (credential sources), `transport` (one exchange with retries), `client`
//! (token manager and operations), `cache` (L1, L2, pub/sub listener), `l2` (the Redis layout
//! shared with other replicas: generation-guarded writes, the import index, clearing by name),
//! `invalidator` (the standalone publisher) and `snapshot` (atomic sealed files). The entry
//! points are `builder` ([`from_env`], [`CachedClient::builder`]) and `secrets` ([`Secrets`]).
//! Time and randomness are injected through [`Clock`], [`Sleeper`] and a seed.
//!
//! Invariants: no secret value or token reaches a log, a metric label or a `Debug` string;
//! nothing reaches Redis or disk unsealed; [`Client::fetch_folder_if_changed`] is the one network
//! path for folder reads, and the cache wraps it.

mod api;
mod auth;
mod aws;
mod builder;
mod cache;
mod client;
mod clock;
mod config;
mod error;
mod hits;
mod invalidator;
mod l1;
mod l2;
mod pattern;
#[cfg(test)]
mod props;
mod retry;
mod seal;
mod secrets;
mod sigv4;
mod snapshot;
mod token;
mod transport;
mod wire;

pub use api::{
    ApiVersion, BatchLimits, BatchProgress, FolderQuery, GetOptions, NewSecret, Scope, SecretUpdate,
};
pub use auth::{
    AuthMethod, Credential, DEFAULT_AZURE_IMDS_URL, DEFAULT_AZURE_RESOURCE,
    DEFAULT_GCP_METADATA_URL,
};
pub use aws::{
    AwsCredentialChain, AwsCredentialSource, ContainerCredentials, DEFAULT_IMDS_ENDPOINT,
    ECS_CREDENTIALS_HOST, REFRESH_BEFORE_EXPIRY, WebIdentity,
};
pub use builder::{CachedClientBuilder, from_env, from_settings};
pub use cache::{
    CachedClient, DEFAULT_REDIS_PREFIX, Get, Invalidated, ListenerHandle, METRIC_CACHE_HIT,
    METRIC_CACHE_L2_UP, METRIC_CACHE_MISS, METRIC_CACHE_STALE, METRIC_CACHE_STALE_AGE,
    SecretHandle, Served, events_channel, invalidation_channel,
};
pub use client::{
    Client, FolderFetch, LoginToken, METRIC_FETCH_DURATION, METRIC_FETCH_ERRORS,
    METRIC_FETCH_TOTAL, METRIC_TOKEN_EXPIRES_IN, Source,
};
pub use clock::{Clock, ManualClock, SleepFuture, Sleeper, SystemClock, TokioSleeper};
pub use config::{ClientConfig, custom_headers};
pub use error::ClientError;
/// One definition of the defaults and the URL rule, `ikit_common`'s, re-exported for callers.
pub use ikit_common::config::{DEFAULT_API_URL, DEFAULT_K8S_TOKEN_PATH, normalize_api_url};
pub use ikit_common::events::InvalidationScope;
pub use ikit_common::{SecretRef, SecretValue};
pub use invalidator::Invalidator;
pub use pattern::path_matches;
pub use retry::{BreakerConfig, BudgetConfig, RetryPolicy};
pub use seal::{SealError, SealKey};
pub use secrets::Secrets;
pub use sigv4::AwsCredentials;
pub use snapshot::DeferredWrites;
pub use token::AccessToken;
pub use transport::METRIC_RATE_LIMIT_WAIT;
pub use wire::{
    DigestEntry, DigestImport, Environment, Folder, FolderDigest, FolderSecrets, HIDDEN_VALUE,
    Import, ImportOrder, Project, Secret, SecretMetadata, SecretType, ServiceTokenInfo, Tag,
    TokenScope,
};

/// The building blocks behind the API, for this workspace's tests, benches and emulator
/// cross-checks. Not a stable API: anything here may change in any release.
#[doc(hidden)]
pub mod internals {
    pub use crate::pattern::folder_affected;
    pub use crate::retry::{CircuitBreaker, TokenBucket, parse_retry_after};
    pub use crate::seal::{SEAL_VERSION, open, seal};
    pub use crate::sigv4::{STS_BODY, aws_login_body, sign_get_caller_identity};
    pub use crate::token::{RENEW_AT, TokenAction, TokenTimes};
    pub use crate::wire::{decode_digest, decode_list, decode_many, decode_one};

    /// The API generation a cached client saved beside its snapshots in `dir`.
    pub fn saved_api_version(dir: &std::path::Path) -> Option<crate::ApiVersion> {
        crate::snapshot::saved_generation(dir)
    }

    /// The offline snapshot's entry codec (the plaintext inside the seal), for the fuzz suite.
    pub fn encode_snapshot_entry(
        saved_at_ms: i64,
        etag: Option<&str>,
        folder: &crate::FolderSecrets,
    ) -> zeroize::Zeroizing<Vec<u8>> {
        crate::snapshot::encode_entry(saved_at_ms, etag, folder)
    }

    /// Decodes a snapshot entry to (saved at, ETag, listing); malformed bytes are an error.
    pub fn decode_snapshot_entry(
        bytes: &[u8],
    ) -> Result<(i64, Option<String>, crate::FolderSecrets), String> {
        crate::snapshot::decode_entry(bytes).map(|e| (e.saved_at_ms, e.etag, e.folder))
    }
}
