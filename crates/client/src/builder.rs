//! The ways in: [`from_env`] and [`from_settings`] return a ready [`Secrets`] in one line, and
//! [`CachedClient::builder`] assembles a cached client from named settings with documented
//! defaults instead of positional arguments.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use ikit_common::Settings;
use ikit_common::config::{DEFAULT_CACHE_MAX_STALE, DEFAULT_CACHE_TTL};

use crate::cache::{
    CacheConfig, CachedClient, DEFAULT_REDIS_OP_TIMEOUT, DEFAULT_REDIS_PING_EVERY,
    DEFAULT_REDIS_PREFIX, DEFAULT_REDIS_RETRY_EVERY, DEFAULT_REDIS_SCAN_BUDGET,
};
use crate::client::Client;
use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::seal::SealKey;
use crate::secrets::Secrets;
use crate::snapshot::DeferredWrites;

/// A ready [`Secrets`] from an environment map (the Infisical CLI's variable names, read by
/// `ikit_common::Settings::load`; see [`ClientConfig::from_env`]), never the process environment:
/// pass `ikit_common::env_map_from_process()` in a binary.
///
/// Needs `INFISICAL_PROJECT_ID` and a login (`INFISICAL_UNIVERSAL_AUTH_CLIENT_ID` and `_SECRET`,
/// `INFISICAL_TOKEN`, ...). `INFISICAL_API_URL` defaults to `https://app.infisical.com`; the
/// environment of [`Secrets::value`] is `IKIT_INFISICAL_ENVIRONMENT` (default `dev`). The cache
/// and the offline snapshot follow `IKIT_CACHE_*`, `IKIT_REDIS_URL` and `IKIT_SNAPSHOT_*`.
///
/// Against the in-process emulator (a binary passes `ikit_common::env_map_from_process()`):
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let seed = ikit_emulator::Seed::from_json(r#"{
/// #   "projects": [{"id": "p-1", "slug": "demo", "environments": ["dev"]}],
/// #   "identities": [{"id": "i-1", "name": "ci", "clientId": "ci-id",
/// #                   "clientSecret": "ci-secret", "projects": ["p-1"]}],
/// #   "folders": [{"projectId": "p-1", "environment": "dev", "path": "/app"}],
/// #   "secrets": [{"projectId": "p-1", "environment": "dev", "path": "/app",
/// #                "key": "DB_URL", "value": "postgres://db/app"}]}"#)?;
/// # let server = ikit_emulator::Emulator::start(ikit_emulator::EmulatorConfig::new(seed)).await?;
/// let env = std::collections::BTreeMap::from([
///     ("INFISICAL_API_URL".to_owned(), server.base_url()),
///     ("INFISICAL_PROJECT_ID".to_owned(), "p-1".to_owned()),
///     ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID".to_owned(), "ci-id".to_owned()),
///     ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET".to_owned(), "ci-secret".to_owned()),
/// ]);
/// let secrets = ikit_client::from_env(&env)?;
/// assert_eq!(secrets.value("/app/DB_URL").await?.expose(), "postgres://db/app");
/// # Ok(())
/// # }
/// ```
pub fn from_env(env: &BTreeMap<String, String>) -> Result<Secrets, ClientError> {
    from_settings(&Settings::load(None, env)?)
}

/// A ready [`Secrets`] from loaded settings: the client from [`ClientConfig::from_settings`],
/// the cache from [`CachedClientBuilder::settings`], the default project and environment from
/// `settings.infisical`. Nothing is sent until the first read.
pub fn from_settings(settings: &Settings) -> Result<Secrets, ClientError> {
    let project = settings.infisical.project_id.as_deref().ok_or_else(|| {
        ClientError::Config(
            "INFISICAL_PROJECT_ID is not set: the project to read secrets from".into(),
        )
    })?;
    let cache = CachedClient::builder().settings(settings)?.build()?;
    Secrets::new(cache, project, &settings.infisical.environment)
}

/// Where the builder gets its [`Client`].
#[derive(Clone)]
enum ClientSource {
    Missing,
    Config(Box<ClientConfig>),
    Ready(Client),
}

/// Assembles a [`CachedClient`]: the one way to make one. Every setting has a method below;
/// the defaults, the same as the settings' defaults:
///
/// | setting | default |
/// |---|---|
/// | [`ttl`](Self::ttl) | 5 minutes |
/// | [`max_stale`](Self::max_stale) | 24 hours |
/// | [`stale_while_revalidate`](Self::stale_while_revalidate) | `ttl` |
/// | [`max_entries`](Self::max_entries) | 10,000 folder listings |
/// | [`redis`](Self::redis) | none: L1 only, no fan-out |
/// | [`redis_prefix`](Self::redis_prefix) | `ikit:` |
/// | [`redis_op_timeout`](Self::redis_op_timeout) | 500 ms |
/// | [`redis_retry_every`](Self::redis_retry_every) | 1 second |
/// | [`redis_scan_budget`](Self::redis_scan_budget) | 5 seconds |
/// | [`redis_ping_every`](Self::redis_ping_every) | 15 seconds |
/// | [`snapshot`](Self::snapshot) | none |
/// | [`deferred_writes`](Self::deferred_writes) | none: snapshot files are written before a read returns |
///
/// A client is required: [`client`](Self::client), [`client_config`](Self::client_config) or
/// [`settings`](Self::settings). A builder can be cloned to make several caches alike.
///
/// ```no_run
/// # fn demo(client: ikit_client::Client) -> Result<(), ikit_client::ClientError> {
/// use std::time::Duration;
/// let cache = ikit_client::CachedClient::builder()
///     .client(client)
///     .ttl(Duration::from_secs(60))
///     .max_stale(Duration::from_secs(3600))
///     .build()?;
/// # let _ = cache;
/// # Ok(())
/// # }
/// ```
#[must_use = "a builder does nothing until `build`"]
#[derive(Clone)]
pub struct CachedClientBuilder {
    client: ClientSource,
    ttl: Duration,
    max_stale: Duration,
    stale_while_revalidate: Option<Duration>,
    max_entries: u64,
    redis: Option<(String, Option<SealKey>)>,
    redis_prefix: String,
    redis_op_timeout: Duration,
    redis_retry_every: Duration,
    redis_scan_budget: Duration,
    redis_ping_every: Duration,
    snapshot: Option<(PathBuf, SealKey)>,
    deferred_writes: Option<DeferredWrites>,
}

impl std::fmt::Debug for CachedClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedClientBuilder")
            .field("ttl", &self.ttl)
            .field("max_stale", &self.max_stale)
            .field("redis", &self.redis.is_some())
            .field("snapshot", &self.snapshot.as_ref().map(|(dir, _)| dir))
            .finish_non_exhaustive()
    }
}

impl CachedClient {
    /// A builder with the defaults listed on [`CachedClientBuilder`].
    pub fn builder() -> CachedClientBuilder {
        CachedClientBuilder {
            client: ClientSource::Missing,
            ttl: DEFAULT_CACHE_TTL,
            max_stale: DEFAULT_CACHE_MAX_STALE,
            stale_while_revalidate: None,
            max_entries: 10_000,
            redis: None,
            redis_prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            redis_op_timeout: DEFAULT_REDIS_OP_TIMEOUT,
            redis_retry_every: DEFAULT_REDIS_RETRY_EVERY,
            redis_scan_budget: DEFAULT_REDIS_SCAN_BUDGET,
            redis_ping_every: DEFAULT_REDIS_PING_EVERY,
            snapshot: None,
            deferred_writes: None,
        }
    }
}

impl CachedClientBuilder {
    /// The client to cache in front of.
    pub fn client(mut self, client: Client) -> Self {
        self.client = ClientSource::Ready(client);
        self
    }

    /// The configuration of the client to build.
    pub fn client_config(mut self, config: ClientConfig) -> Self {
        self.client = ClientSource::Config(Box::new(config));
        self
    }

    /// Everything from settings: the client ([`ClientConfig::from_settings`]) unless one was
    /// given, and the cache's `ttl` (`IKIT_CACHE_TTL`), `max_stale` (`IKIT_CACHE_MAX_STALE`),
    /// Redis (`IKIT_REDIS_URL` with `IKIT_CACHE_KEY`) and snapshot (`IKIT_SNAPSHOT_DIR` with
    /// `IKIT_SNAPSHOT_KEY`), an unset variable meaning the default (no Redis, no snapshot). The
    /// Redis prefix and timings, `max_entries` and `stale_while_revalidate` are not settings
    /// and stay as set. Setters called after this one override it.
    pub fn settings(mut self, settings: &Settings) -> Result<Self, ClientError> {
        if matches!(self.client, ClientSource::Missing) {
            self.client = ClientSource::Config(Box::new(ClientConfig::from_settings(settings)?));
        }
        let cache = CacheConfig::from_settings(settings)?;
        self.ttl = cache.ttl;
        self.max_stale = cache.max_stale;
        self.redis = cache.redis.map(|redis| (redis.url, redis.seal_key));
        self.snapshot = cache.snapshot;
        Ok(self)
    }

    /// How long a folder listing is served without asking Infisical (default 5 minutes).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How old a listing may be when Infisical is unreachable or failing (default 24 hours).
    /// Taken as given: below `ttl` it also bounds how long a listing stays in memory.
    pub fn max_stale(mut self, max_stale: Duration) -> Self {
        self.max_stale = max_stale;
        self
    }

    /// How long past `ttl` a listing is still served at once while it is refreshed in the
    /// background (default: `ttl`).
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = Some(window);
        self
    }

    /// Bound on the folder listings kept in memory (default 10,000).
    pub fn max_entries(mut self, n: u64) -> Self {
        self.max_entries = n;
        self
    }

    /// Redis at `url` for invalidations and change events from other replicas; with `seal_key`
    /// also a shared L2 cache, its values sealed with that key.
    pub fn redis(mut self, url: impl Into<String>, seal_key: Option<SealKey>) -> Self {
        self.redis = Some((url.into(), seal_key));
        self
    }

    /// The prefix of every Redis key and channel (default `ikit:`): replicas sharing a cache
    /// share a prefix.
    pub fn redis_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.redis_prefix = prefix.into();
        self
    }

    /// Bound on each Redis step, connect or command (default 500 ms): past it the step counts
    /// as a Redis failure and the read goes on without Redis.
    pub fn redis_op_timeout(mut self, timeout: Duration) -> Self {
        self.redis_op_timeout = timeout;
        self
    }

    /// After a Redis failure, how long Redis is left alone before it is tried again, on the
    /// client's clock (default 1 second).
    pub fn redis_retry_every(mut self, every: Duration) -> Self {
        self.redis_retry_every = every;
        self
    }

    /// Bound on the L2 part of an invalidation, the `SCAN` over the cache keys by name (default
    /// 5 seconds); overrunning it is reported as `l2_cleared: false`.
    pub fn redis_scan_budget(mut self, budget: Duration) -> Self {
        self.redis_scan_budget = budget;
        self
    }

    /// How often the listener pings its pub/sub connection (default 15 seconds): a connection
    /// that does not answer is replaced.
    pub fn redis_ping_every(mut self, every: Duration) -> Self {
        self.redis_ping_every = every;
        self
    }

    /// An encrypted offline snapshot in `dir`, sealed with `key` (32 bytes; `openssl rand
    /// -base64 32` makes one for [`SealKey::from_base64`]): served when Infisical is unreachable.
    pub fn snapshot(mut self, dir: impl Into<PathBuf>, key: SealKey) -> Self {
        self.snapshot = Some((dir.into(), key));
        self
    }

    /// Queues the snapshot's file writes on `writes` instead of making them before a read
    /// returns: for a short-lived process (the CLI) that joins them before it exits, so a run
    /// need not wait for the fsyncs. Default: written in line.
    pub fn deferred_writes(mut self, writes: DeferredWrites) -> Self {
        self.deferred_writes = Some(writes);
        self
    }

    /// The cache configuration these settings describe.
    pub(crate) fn cache_config(&self) -> CacheConfig {
        let mut config = CacheConfig::new(self.ttl, self.max_stale);
        // As given, even below `ttl`: the CLI's `--max-stale 0s` means "serve no stale copy".
        config.max_stale = self.max_stale;
        config.max_entries = self.max_entries;
        if let Some(window) = self.stale_while_revalidate {
            config.stale_while_revalidate = window;
        }
        if let Some((url, seal_key)) = &self.redis {
            config = config.with_redis(url, &self.redis_prefix, seal_key.clone());
            if let Some(redis) = config.redis.as_mut() {
                redis.op_timeout = self.redis_op_timeout;
                redis.retry_every = self.redis_retry_every;
                redis.scan_budget = self.redis_scan_budget;
                redis.ping_every = self.redis_ping_every;
            }
        }
        config.snapshot = self.snapshot.clone();
        if let Some(writes) = &self.deferred_writes {
            config = config.with_deferred_writes(writes.clone());
        }
        config
    }

    /// Builds the client (if given a configuration) and the cache. Sends nothing.
    pub fn build(self) -> Result<CachedClient, ClientError> {
        let config = self.cache_config();
        let client = match self.client {
            ClientSource::Ready(client) => client,
            ClientSource::Config(config) => Client::new(*config)?,
            ClientSource::Missing => {
                return Err(ClientError::Config(
                    "CachedClient::builder() needs a client: call .client(), .client_config() \
                     or .settings()"
                        .into(),
                ));
            }
        };
        CachedClient::new(client, config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_match_the_settings_defaults() {
        let built = CachedClient::builder().cache_config();
        let settings = Settings::load(None, &env(&[])).unwrap();
        let from_settings = CacheConfig::from_settings(&settings).unwrap();
        assert_eq!(built.ttl, from_settings.ttl);
        assert_eq!(built.max_stale, from_settings.max_stale);
        assert_eq!(built.stale_while_revalidate, built.ttl);
        assert_eq!(built.max_entries, 10_000);
        assert!(built.redis.is_none() && built.snapshot.is_none());
    }

    #[test]
    fn setters_after_settings_override_them() {
        let settings = Settings::load(
            None,
            &env(&[
                ("INFISICAL_TOKEN", "st.a.b.c"),
                ("IKIT_CACHE_TTL", "30s"),
                ("IKIT_REDIS_URL", "redis://127.0.0.1:6379"),
            ]),
        )
        .unwrap();
        let config = CachedClient::builder()
            .settings(&settings)
            .unwrap()
            .max_stale(Duration::from_secs(90))
            .stale_while_revalidate(Duration::from_secs(5))
            .redis_prefix("team-a:")
            .cache_config();
        assert_eq!(config.ttl, Duration::from_secs(30));
        assert_eq!(config.max_stale, Duration::from_secs(90));
        assert_eq!(config.stale_while_revalidate, Duration::from_secs(5));
        let redis = config.redis.unwrap();
        assert_eq!(
            (redis.url.as_str(), redis.prefix.as_str()),
            ("redis://127.0.0.1:6379", "team-a:")
        );
    }

    #[test]
    fn redis_timings_default_and_can_be_set() {
        let url = "redis://127.0.0.1:6379";
        let defaults = CachedClient::builder().redis(url, None).cache_config();
        let redis = defaults.redis.unwrap();
        assert_eq!(
            (redis.op_timeout, redis.retry_every, redis.scan_budget, redis.ping_every),
            (
                Duration::from_millis(500),
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(15)
            )
        );
        assert_eq!(redis.prefix, "ikit:");
        let tuned = CachedClient::builder()
            .redis_op_timeout(Duration::from_secs(30))
            .redis_retry_every(Duration::from_secs(2))
            .redis_scan_budget(Duration::ZERO)
            .redis_ping_every(Duration::from_millis(50))
            .redis(url, None)
            .cache_config();
        let redis = tuned.redis.unwrap();
        assert_eq!(
            (redis.op_timeout, redis.retry_every, redis.scan_budget, redis.ping_every),
            (
                Duration::from_secs(30),
                Duration::from_secs(2),
                Duration::ZERO,
                Duration::from_millis(50)
            )
        );
    }

    #[test]
    fn max_stale_is_taken_as_given_and_snapshot_is_kept() {
        let key = SealKey::new([7; 32]);
        let config = CachedClient::builder()
            .ttl(Duration::from_secs(600))
            .max_stale(Duration::from_secs(60))
            .max_entries(5)
            .snapshot("/tmp/snaps", key)
            .cache_config();
        assert_eq!(config.max_stale, Duration::from_secs(60), "no stale copy past a minute");
        assert_eq!(config.max_entries, 5);
        assert_eq!(config.snapshot.unwrap().0, PathBuf::from("/tmp/snaps"));
    }

    #[test]
    fn settings_replace_the_cache_settings_but_not_the_prefix() {
        let settings = Settings::load(None, &env(&[("INFISICAL_TOKEN", "st.a.b.c")])).unwrap();
        let config = CachedClient::builder()
            .redis_prefix("team-a:")
            .redis("redis://127.0.0.1:6379", None)
            .settings(&settings)
            .unwrap()
            .cache_config();
        assert!(config.redis.is_none(), "IKIT_REDIS_URL unset: no Redis");
        let with_redis = Settings::load(
            None,
            &env(&[("INFISICAL_TOKEN", "st.a.b.c"), ("IKIT_REDIS_URL", "redis://127.0.0.1:6379")]),
        )
        .unwrap();
        let config = CachedClient::builder()
            .redis_prefix("team-a:")
            .settings(&with_redis)
            .unwrap()
            .cache_config();
        assert_eq!(config.redis.unwrap().prefix, "team-a:");
    }

    #[test]
    fn a_builder_without_a_client_says_what_is_missing() {
        let err = CachedClient::builder().build().unwrap_err();
        assert_eq!(err.kind(), "config");
        assert!(err.to_string().contains(".client()"), "{err}");
    }

    #[test]
    fn from_env_needs_a_project_and_a_login_and_names_them() {
        let no_project = from_env(&env(&[("INFISICAL_TOKEN", "st.a.b.c")])).unwrap_err();
        assert_eq!(no_project.kind(), "config");
        assert!(no_project.to_string().contains("INFISICAL_PROJECT_ID"), "{no_project}");
        let no_login = from_env(&env(&[("INFISICAL_PROJECT_ID", "p")])).unwrap_err();
        assert!(no_login.to_string().contains("INFISICAL_TOKEN"), "{no_login}");
        let bad = from_env(&env(&[("INFISICAL_PROJECT_ID", "p"), ("IKIT_CACHE_TTL", "soon")]))
            .unwrap_err();
        assert_eq!(bad.kind(), "config");
        assert!(bad.to_string().contains("IKIT_CACHE_TTL"), "{bad}");
    }
}
