//! The caching client: L1 in process (`l1`, lock-free, size-bounded), an optional L2 in Redis (values
//! sealed with AES-256-GCM, bound to their key), single-flight misses, stale-while-revalidate,
//! stale-if-error up to `max_stale`, ETag revalidation, the offline snapshot, invalidation fanned
//! out over Redis pub/sub, and per-key change subscriptions.
//!
//! Freshness is decided with the client's injected clock (L1's own sweep of listings past
//! `max_stale` only bounds memory).
//! Redis is optional and may fail at any time: every Redis step has a timeout, a failure marks
//! L2 down (logged once per transition, gauge `infisical_cache_l2_up`) and reads go on from L1;
//! a reconnect is tried again after `retry_every` on the injected clock.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt as _;
use ikit_common::events::{ChangeKind, InvalidationMessage, InvalidationScope, SecretChangeEvent};
pub use ikit_common::events::{DEFAULT_REDIS_PREFIX, events_channel, invalidation_channel};
use ikit_common::{SecretRef, Settings};
use metrics::SharedString;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{broadcast, mpsc, watch};

use crate::api::{ApiVersion, FolderQuery, NewSecret, Scope, SecretUpdate};
use crate::client::{Client, FolderFetch, METRIC_FETCH_TOTAL, Source};
use crate::clock::ReadClock;
use crate::error::ClientError;
use crate::hits::Hits;
use crate::l1::{Aged, L1, ShardMap, SlotMap};
use crate::l2::{self, Cleared, Generation};
use crate::pattern::{Dedup, folder_affected, path_matches};
use crate::seal::{self, SealKey};
use crate::snapshot::{DeferredWrites, SnapshotStore, decode_entry, encode_entry, stored_age};
use crate::wire::{FolderSecrets, ImportOrder, Secret, SecretType};

/// A live view of one secret ([`CachedClient::handle`]): resolved once, then kept current by
/// the cache, which swaps in the secret each time its folder's listing is stored and clears it
/// when an invalidation or change event drops the listing. A fresh read is an atomic load and
/// an age check: no allocation, no lookup, no await. Cheap to clone.
///
/// A thread that reads a handle keeps a copy of its slot, checked against the slot on every
/// read (so it never serves a replaced or cleared secret): the copy keeps the listing it came
/// from in memory until the thread reads the handle again, reads enough other handles, or
/// exits, even when the handle was dropped meanwhile.
#[derive(Clone)]
pub struct SecretHandle {
    cache: CachedClient,
    state: Arc<HandleState>,
}

impl std::fmt::Debug for SecretHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretHandle").field("secret", &self.state.secret).finish_non_exhaustive()
    }
}

struct HandleState {
    secret: SecretRef,
    /// `None` until resolved, and again once the listing was dropped or lacks the key.
    current: arc_swap::ArcSwapOption<Resolved>,
}

/// What a handle serves, and the listing it came from (its age, metric handles and imports).
/// No `Debug`: holds a value.
struct Resolved {
    secret: Arc<Secret>,
    entry: Arc<Entry>,
}

/// A handle's slot as `arc_swap::Cache` reads it (holding the handle's state).
struct SlotOf(Arc<HandleState>);

impl std::ops::Deref for SlotOf {
    type Target = arc_swap::ArcSwapOption<Resolved>;

    fn deref(&self) -> &Self::Target {
        &self.0.current
    }
}

/// Handles a thread keeps a copy of: a few, direct-mapped by the handle's address.
const HANDLE_SLOTS: usize = 8;

/// A thread's copies of the slots of the handles it read last. Pinning a slot (`ArcSwap::load`)
/// costs two full-fence atomics, most of a handle read; a copy is checked against the slot with
/// one plain atomic load (`arc_swap::Cache`), and is only ever used while it is the slot's
/// current value, so a copy serves exactly what the slot would (an invalidated or replaced
/// listing is never served from it). The price is retention: a copy keeps its listing (and the
/// secret values in it) alive until this thread reads that handle again, reuses the copy's place
/// for another handle, or exits: at most [`HANDLE_SLOTS`] listings per thread, and a dropped
/// handle or client is let go the same way.
struct HandleCopies([Option<arc_swap::Cache<SlotOf, Option<Arc<Resolved>>>>; HANDLE_SLOTS]);

impl HandleCopies {
    /// This thread's copy of `state`'s slot, made (in place of another handle's) if needed.
    #[inline]
    fn copy_of(
        &mut self,
        state: &Arc<HandleState>,
    ) -> &mut arc_swap::Cache<SlotOf, Option<Arc<Resolved>>> {
        let at = address_slot(Arc::as_ptr(state).cast(), HANDLE_SLOTS);
        let place = &mut self.0[at];
        // The copy holds its state: while it lives, no other state can have its address.
        let mine = place.as_ref().is_some_and(|c| std::ptr::eq(c.arc_swap(), &state.current));
        if !mine {
            *place = Some(arc_swap::Cache::new(SlotOf(state.clone())));
        }
        place.as_mut().expect("filled above")
    }
}

/// L1 shards a thread keeps a copy of: two clients' worth, direct-mapped by the shard's address.
const SHARD_SLOTS: usize = 32;

type ShardCopy = arc_swap::Cache<ShardMap<Entry>, Arc<SlotMap<Arc<Entry>>>>;

/// A thread's copies of the L1 shards it read last, for `get` hits: like [`HandleCopies`], a
/// copy is checked against its shard with one plain atomic load instead of a pin, and used only
/// while it is the shard's current map (a listing invalidated, replaced or evicted since is
/// never served from it). Retention: a copy keeps the shard's listings as of its last read alive
/// until this thread reads the shard again, reuses the place, or exits: at most [`SHARD_SLOTS`]
/// shard maps per thread, beyond L1's own bound, and a dropped client's shards are let go the
/// same way.
struct ShardCopies([Option<ShardCopy>; SHARD_SLOTS]);

impl ShardCopies {
    /// This thread's copy of `shard`, made (in place of another shard's) if needed.
    #[inline]
    fn copy_of(&mut self, shard: &ShardMap<Entry>) -> &mut ShardCopy {
        let at = address_slot(Arc::as_ptr(shard).cast(), SHARD_SLOTS);
        let place = &mut self.0[at];
        // The copy holds its shard: while it lives, no other shard can have its address.
        let mine = place.as_ref().is_some_and(|c| std::ptr::eq(c.arc_swap(), &**shard));
        if !mine {
            *place = Some(arc_swap::Cache::new(shard.clone()));
        }
        place.as_mut().expect("filled above")
    }
}

thread_local! {
    static SHARD_COPIES: std::cell::RefCell<ShardCopies> =
        const { std::cell::RefCell::new(ShardCopies([const { None }; SHARD_SLOTS])) };
    static HANDLE_COPIES: std::cell::RefCell<HandleCopies> =
        const { std::cell::RefCell::new(HandleCopies([const { None }; HANDLE_SLOTS])) };
}

/// A place among `places` (a power of two) for an address: its bits mixed, the top ones kept.
#[inline]
fn address_slot(address: *const u8, places: usize) -> usize {
    let mixed = (address as usize as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> (64 - places.trailing_zeros())) as usize
}

/// What the miss path of [`CachedClient::get`] resolves to.
type GetOutput = Result<Served<Arc<Secret>>, ClientError>;

/// The future of [`CachedClient::get`]. Written out rather than an `async fn` so that its
/// `poll` can be inlined into the caller's: a fresh hit is then answered in place, where an
/// `async fn`'s state machine is a call and a few copies of a `Result` as large as
/// [`ClientError`]. Past L1 it continues on the boxed miss path (L2, the fetch, the fallbacks),
/// which keeps this future two references and a pointer whatever the miss path holds.
#[must_use = "futures do nothing unless polled"]
pub struct Get<'a> {
    cache: &'a CachedClient,
    secret: &'a SecretRef,
    miss: Option<std::pin::Pin<Box<dyn std::future::Future<Output = GetOutput> + Send + 'a>>>,
}

impl std::future::Future for Get<'_> {
    type Output = GetOutput;

    #[inline]
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<GetOutput> {
        let this = &mut *self;
        let miss = match &mut this.miss {
            Some(miss) => miss,
            None => {
                if let Some((value, age_ms)) = this.cache.fresh_hit(this.secret) {
                    let age = Duration::from_millis(age_ms);
                    return std::task::Poll::Ready(Ok(Served {
                        value,
                        source: Source::Cache,
                        age,
                    }));
                }
                this.miss.insert(Box::pin(this.cache.get_through(this.secret)))
            }
        };
        miss.as_mut().poll(cx)
    }
}

impl SecretHandle {
    /// The secret: from the slot while fresh, else through [`CachedClient::get`] (which also
    /// refills the slot).
    pub async fn value(&self) -> Result<Served<Arc<Secret>>, ClientError> {
        if let Some(served) = self.fresh() {
            return Ok(served);
        }
        self.cache.get(&self.state.secret).await
    }

    /// The secret if the slot holds a fresh one, without waiting for anything.
    pub fn fresh(&self) -> Option<Served<Arc<Secret>>> {
        self.read_fresh(|resolved, age| Served {
            value: resolved.secret.clone(),
            source: Source::Cache,
            age,
        })
    }

    /// Runs `read` on the secret if the slot holds a fresh one, and returns what it returns:
    /// the cheapest read there is (no reference count is touched, no atomic read-modify-write).
    /// `read` runs while the slot is held, so it should be short: copy out what is needed.
    ///
    /// ```no_run
    /// # fn demo(handle: &ikit_client::SecretHandle) {
    /// let url_len = handle.with_fresh(|secret| secret.value.expose().len());
    /// # let _ = url_len;
    /// # }
    /// ```
    #[inline]
    pub fn with_fresh<R>(&self, read: impl FnOnce(&Secret) -> R) -> Option<R> {
        self.read_fresh(|resolved, _| read(&resolved.secret))
    }

    /// The fresh slot, counted as a hit. Read through this thread's copy of the slot when it
    /// has one (see [`HandleCopies`]), else by pinning the slot.
    #[inline]
    fn read_fresh<R>(&self, read: impl FnOnce(&Resolved, Duration) -> R) -> Option<R> {
        let mut read = Some(read);
        let copied = HANDLE_COPIES
            .try_with(|copies| {
                // Taken already: `read` is reading another handle on this thread.
                let mut copies = copies.try_borrow_mut().ok()?;
                let copy = copies.copy_of(&self.state);
                let read = read.take()?;
                Some(copy.load().as_deref().and_then(|resolved| self.serve(resolved, read)))
            })
            .ok()
            .flatten();
        match (copied, read) {
            (Some(served), _) => served,
            (None, Some(read)) => self.serve(self.state.current.load().as_deref()?, read),
            (None, None) => None,
        }
    }

    /// `read` on a resolved slot if it is fresh, counted as a hit.
    #[inline]
    fn serve<R>(
        &self,
        resolved: &Resolved,
        read: impl FnOnce(&Resolved, Duration) -> R,
    ) -> Option<R> {
        let age = resolved.entry.age(self.cache.now_ms());
        if age >= self.cache.shared.config.ttl {
            return None;
        }
        resolved.entry.hits.count();
        Some(read(resolved, age))
    }

    pub fn secret_ref(&self) -> &SecretRef {
        &self.state.secret
    }
}

/// Fresh reads served from L1 or L2, by folder path.
pub const METRIC_CACHE_HIT: &str = "infisical_cache_hit_total";
/// Reads that had to go to Infisical, by folder path.
pub const METRIC_CACHE_MISS: &str = "infisical_cache_miss_total";
/// Reads served past their TTL, by folder path and source (`cache` or `snapshot`).
pub const METRIC_CACHE_STALE: &str = "infisical_cache_stale_total";
/// Age of values served stale, in seconds, by folder path and source.
pub const METRIC_CACHE_STALE_AGE: &str = "infisical_cache_stale_age_seconds";
/// 1 while the Redis L2 answers, 0 while it does not.
pub const METRIC_CACHE_L2_UP: &str = "infisical_cache_l2_up";

/// Bound on each Redis step (connect, command).
pub(crate) const DEFAULT_REDIS_OP_TIMEOUT: Duration = Duration::from_millis(500);
/// After a Redis failure, Redis is left alone this long.
pub(crate) const DEFAULT_REDIS_RETRY_EVERY: Duration = Duration::from_secs(1);
/// Bound on the L2 part of an invalidation.
pub(crate) const DEFAULT_REDIS_SCAN_BUDGET: Duration = Duration::from_secs(5);
/// How often the listener pings its pub/sub connection.
pub(crate) const DEFAULT_REDIS_PING_EVERY: Duration = Duration::from_secs(15);

/// Redis for L2 and fan-out, as [`CachedClientBuilder`](crate::CachedClientBuilder) sets it.
#[derive(Clone)]
pub(crate) struct RedisConfig {
    pub(crate) url: String,
    /// Prefix of every key and channel, e.g. `ikit:`.
    pub(crate) prefix: String,
    /// The L2 sealing key; without it Redis carries invalidations and events only.
    pub(crate) seal_key: Option<SealKey>,
    /// Bound on each Redis step (connect, command).
    pub(crate) op_timeout: Duration,
    /// After a failure, Redis is left alone this long (on the client clock).
    pub(crate) retry_every: Duration,
    /// Bound on the L2 part of an invalidation (`SCAN` over the cache keys by name).
    pub(crate) scan_budget: Duration,
    /// How often the listener pings its pub/sub connection (a silent connection is replaced).
    pub(crate) ping_every: Duration,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &ikit_common::config::redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("l2", &self.seal_key.is_some())
            .finish_non_exhaustive()
    }
}

/// How reads are cached, as [`CachedClientBuilder`](crate::CachedClientBuilder) sets it: the
/// builder is the one way in, and its documentation states the defaults.
#[derive(Clone, Debug)]
pub(crate) struct CacheConfig {
    /// How long a listing is fresh.
    pub(crate) ttl: Duration,
    /// How long past `ttl` a listing is still served at once while it is revalidated in the
    /// background (Infisical healthy). Older listings wait for Infisical.
    pub(crate) stale_while_revalidate: Duration,
    /// How old a listing may be when served because Infisical is unreachable or failing.
    pub(crate) max_stale: Duration,
    /// Bound on L1 entries (folder listings).
    pub(crate) max_entries: u64,
    pub(crate) redis: Option<RedisConfig>,
    /// Directory and key of the offline snapshot.
    pub(crate) snapshot: Option<(PathBuf, SealKey)>,
    /// Snapshot writes queued here instead of made before a read returns (a short-lived
    /// process that joins them before it exits); `None`: written in line.
    pub(crate) deferred_writes: Option<DeferredWrites>,
}

impl CacheConfig {
    /// L1 only, 10,000 listings at most; `max_stale` never below `ttl`.
    pub(crate) fn new(ttl: Duration, max_stale: Duration) -> Self {
        Self {
            ttl,
            stale_while_revalidate: ttl,
            max_stale: max_stale.max(ttl),
            max_entries: 10_000,
            redis: None,
            snapshot: None,
            deferred_writes: None,
        }
    }

    /// Redis at `url` with keys and channels under `prefix`; L2 values sealed with `seal_key`.
    /// The timings are the defaults the builder documents.
    pub(crate) fn with_redis(
        mut self,
        url: impl Into<String>,
        prefix: impl Into<String>,
        seal_key: Option<SealKey>,
    ) -> Self {
        self.redis = Some(RedisConfig {
            url: url.into(),
            prefix: prefix.into(),
            seal_key,
            op_timeout: DEFAULT_REDIS_OP_TIMEOUT,
            retry_every: DEFAULT_REDIS_RETRY_EVERY,
            scan_budget: DEFAULT_REDIS_SCAN_BUDGET,
            ping_every: DEFAULT_REDIS_PING_EVERY,
        });
        self
    }

    /// Queues the snapshot writes on `writes` (see [`DeferredWrites`]).
    pub(crate) fn with_deferred_writes(mut self, writes: DeferredWrites) -> Self {
        self.deferred_writes = Some(writes);
        self
    }

    /// `IKIT_CACHE_TTL`, `IKIT_CACHE_MAX_STALE`, `IKIT_REDIS_URL` with `IKIT_CACHE_KEY` (base64,
    /// 32 bytes), `IKIT_SNAPSHOT_DIR` with `IKIT_SNAPSHOT_KEY` (base64, 32 bytes).
    pub(crate) fn from_settings(settings: &Settings) -> Result<Self, ClientError> {
        let key = |v: &ikit_common::SecretValue, name: &str| {
            SealKey::from_base64(v.expose())
                .map_err(|e| ClientError::Config(format!("{name}: {e}")))
        };
        let mut config = Self::new(settings.cache_ttl, settings.cache_max_stale);
        if let Some(url) = &settings.redis_url {
            let seal_key =
                settings.cache_key.as_ref().map(|k| key(k, "IKIT_CACHE_KEY")).transpose()?;
            config = config.with_redis(url, DEFAULT_REDIS_PREFIX, seal_key);
        }
        match (&settings.snapshot_dir, &settings.snapshot_key) {
            (Some(dir), Some(k)) => {
                config.snapshot = Some((dir.clone(), key(k, "IKIT_SNAPSHOT_KEY")?));
            }
            (Some(_), None) => {
                return Err(ClientError::Config(
                    "IKIT_SNAPSHOT_DIR needs IKIT_SNAPSHOT_KEY".into(),
                ));
            }
            _ => {}
        }
        Ok(config)
    }
}

/// What [`CachedClient::invalidate`] (or the [`Invalidator`](crate::Invalidator)) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalidated {
    /// Listings dropped from this replica's L1 (0 for the standalone invalidator).
    pub local: usize,
    /// The message reached Redis for the other replicas (false without Redis).
    pub published: bool,
    /// Every affected L2 listing was deleted (true without an L2).
    pub l2_cleared: bool,
}

/// A value with where it came from and how old it is (zero when fetched just now).
pub struct Served<T> {
    pub value: T,
    pub source: Source,
    pub age: Duration,
}

impl<T> std::fmt::Debug for Served<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served")
            .field("source", &self.source)
            .field("age", &self.age)
            .finish_non_exhaustive()
    }
}

/// The cache key: project, environment, query flags, folder.
pub(crate) fn cache_key(q: &FolderQuery) -> String {
    let b = |on: bool| if on { '1' } else { '0' };
    format!(
        "{}:{}:r{}i{}e{}v{}p{}t{}:{}",
        q.project_id,
        q.environment,
        b(q.recursive),
        b(q.include_imports),
        b(q.expand_references),
        b(q.view_values),
        b(q.include_personal_overrides),
        q.tag_slugs.join(","),
        q.path
    )
}

/// Project, environment and folder of a cache key.
fn key_parts(key: &str) -> Option<(&str, &str, &str)> {
    let mut it = key.splitn(4, ':');
    let (project, env, _flags, folder) = (it.next()?, it.next()?, it.next()?, it.next()?);
    Some((project, env, folder))
}

/// One cached listing, with what a hit needs made once, at insert: the key index (import order
/// applied) and the metric handles. No `Debug`: holds secret values.
struct Entry {
    query: FolderQuery,
    /// `query` has the default flags of [`FolderQuery::new`] (what [`CachedClient::get`] reads).
    default_flags: bool,
    /// The listing's name in L2, the snapshot and the flights.
    key: String,
    folder: Arc<FolderSecrets>,
    etag: Option<String>,
    fetched_at_ms: i64,
    /// When the listing's snapshot file was last written (by this process, or read from the
    /// file itself; `None`: unknown, e.g. a copy from L2), so a 304 can leave an unchanged file
    /// alone.
    snapshot_written_ms: Option<i64>,
    /// Every key the listing resolves to, own secrets first, then imports in `ImportOrder`.
    index: KeyIndex,
    /// Fresh reads of this listing (`get` hits, handle reads, `folder` hits).
    hits: Arc<Hits>,
}

impl Entry {
    fn new(
        query: &FolderQuery,
        key: &str,
        folder: Arc<FolderSecrets>,
        etag: Option<String>,
        fetched_at_ms: i64,
        order: ImportOrder,
    ) -> Self {
        let imports: Box<dyn Iterator<Item = &crate::wire::Import>> = match order {
            ImportOrder::LaterWins => Box::new(folder.imports.iter().rev()),
            ImportOrder::EarlierWins => Box::new(folder.imports.iter()),
        };
        let index =
            KeyIndex::new(folder.secrets.iter().chain(imports.flat_map(|i| i.secrets.iter())));
        let path = path_label(&query.path);
        let hits = Hits::register([
            metrics::counter!(METRIC_CACHE_HIT, "path" => path.clone()),
            metrics::counter!(METRIC_FETCH_TOTAL, "source" => Source::Cache.as_str(), "path" => path),
        ]);
        Self {
            default_flags: is_default(query),
            query: query.clone(),
            key: key.to_owned(),
            folder,
            etag,
            fetched_at_ms,
            snapshot_written_ms: None,
            index,
            hits,
        }
    }

    #[inline]
    fn age(&self, now_ms: i64) -> Duration {
        stored_age(now_ms, self.fetched_at_ms)
    }

    /// The same listing as `folder` of `project` / `environment` with the default flags.
    fn is_default_of(&self, project: &str, environment: &str, folder: &str) -> bool {
        self.default_flags
            && self.query.path == folder
            && self.query.project_id == project
            && self.query.environment == environment
    }

    /// The secret a reference resolves to, as `Client::get` would pick it from the listing.
    fn pick(&self, secret: &SecretRef) -> Result<Arc<Secret>, ClientError> {
        let Some(found) = self.index.get(secret) else {
            return Err(crate::client::missing_secret(secret, self.index.is_empty()));
        };
        if found.value_hidden {
            return Err(crate::client::hidden_value(secret));
        }
        Ok(found.clone())
    }
}

/// A listing's secrets by key, found by the key hash a [`SecretRef`] carries (the key is
/// compared, never hashed, on a read).
struct KeyIndex(hashbrown::HashTable<(u64, Arc<Secret>)>);

impl KeyIndex {
    /// The first secret of each key, in the order given.
    fn new<'a>(secrets: impl Iterator<Item = &'a Secret>) -> Self {
        let mut table = hashbrown::HashTable::new();
        for secret in secrets {
            let hash = ikit_common::secret::address_hash(secret.key.as_str());
            if table.find(hash, |(_, s): &(u64, Arc<Secret>)| s.key == secret.key).is_none() {
                table.insert_unique(hash, (hash, Arc::new(secret.clone())), |(h, _)| *h);
            }
        }
        Self(table)
    }

    #[inline]
    fn get(&self, secret: &SecretRef) -> Option<&Arc<Secret>> {
        let key = secret.key();
        self.0.find(secret.key_hash(), |(_, s)| s.key == key).map(|(_, s)| s)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }

    #[cfg(test)]
    fn by_key(&self, key: &str) -> Option<&Arc<Secret>> {
        self.get(&SecretRef::new("p", "dev", "/", key).unwrap())
    }
}

impl Aged for Entry {
    fn fetched_at_ms(&self) -> i64 {
        self.fetched_at_ms
    }
}

fn generation_code(version: ApiVersion) -> u8 {
    match version {
        ApiVersion::V4 => 4,
        ApiVersion::V3 => 3,
    }
}

fn is_default(q: &FolderQuery) -> bool {
    *q == FolderQuery::new(q.project_id.as_str(), q.environment.as_str(), q.path.as_str())
}

/// Whether an invalidation of `pattern` within `scope` reaches the L1 listing under `key`: the
/// listing's own folder, or a folder it imports (whatever the importer's environment).
fn l1_affected(scope: &InvalidationScope, pattern: &str, entry: &Entry) -> bool {
    let Some((project, env, folder)) = key_parts(&entry.key) else { return false };
    (scope.contains(project, env) && folder_affected(pattern, folder))
        || entry.folder.imports.iter().any(|import| {
            let import_env =
                if import.environment.is_empty() { env } else { import.environment.as_str() };
            scope.contains(project, import_env) && folder_affected(pattern, &import.path)
        })
}

/// What became of an L2 write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L2Write {
    Written,
    /// An invalidation began since the listing was looked up: its answer may predate it.
    Refused,
    /// No L2, or Redis is down.
    Skipped,
}

const L2_UNKNOWN: u8 = 0;
const L2_UP: u8 = 1;
const L2_DOWN: u8 = 2;

/// The Redis side: one multiplexed connection, dropped on any failure and made again lazily.
struct Redis {
    config: RedisConfig,
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    state: AtomicU8,
    retry_at_ms: AtomicI64,
}

/// What a finished flight served: the listing, its source and age, or the error.
type Landed = Result<(Arc<Entry>, Source, Duration), ClientError>;

/// One miss in progress for a key: whoever holds `lock` fetches; the first to finish leaves
/// its result in `done` so the callers queued behind it return that instead of asking again.
#[derive(Default)]
struct Flight {
    lock: tokio::sync::Mutex<()>,
    done: std::sync::OnceLock<Landed>,
}

type Callback = Arc<dyn Fn(&SecretChangeEvent) + Send + Sync>;

enum Sink {
    Callback(Callback),
    Stream(mpsc::Sender<SecretChangeEvent>),
}

struct Subscription {
    id: u64,
    scope: InvalidationScope,
    pattern: String,
    sink: Sink,
}

struct Shared {
    client: Client,
    config: CacheConfig,
    /// Keyed by [`CachedClient::slot`]: a hash of the query, carried by a [`SecretRef`] for the
    /// default flags; the entry's query is compared on every read.
    l1: L1<Entry>,
    /// The client's clock as the hot path reads it (coarse when it is the system clock).
    clock: ReadClock,
    flights: Mutex<HashMap<String, Arc<Flight>>>,
    redis: Option<Redis>,
    snapshot: Option<SnapshotStore>,
    /// Snapshots decoded while Infisical was unreachable, by cache key: an outage reads each
    /// file once, not on every read. A listing's copy goes when Infisical answers for it again.
    offline: Mutex<HashMap<String, Arc<Entry>>>,
    /// The API generation last saved beside the snapshot (`ApiVersion` as `u8`, 0: none yet).
    saved_generation: AtomicU8,
    rng: Mutex<StdRng>,
    subscriptions: Mutex<Vec<Subscription>>,
    next_subscription: AtomicU64,
    dedup: Mutex<Dedup>,
    invalidated: broadcast::Sender<String>,
    /// Live [`SecretHandle`]s by the L1 slot of their folder's listing.
    handles: Mutex<HashMap<u64, Vec<std::sync::Weak<HandleState>>>>,
    /// Bumped by every invalidation and change event before it drops anything: a fetch that saw
    /// another value when it started answers its caller but stores nothing (its answer may
    /// predate the change), and one whose L1 insert raced an invalidation removes it again.
    epoch: AtomicU64,
}

/// A folder path as a metric label, allocated once and shared by the metrics of one read.
fn path_label(path: &str) -> SharedString {
    SharedString::from_shared(Arc::from(path))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The Infisical client behind a two-level cache and an offline snapshot. Cheap to clone.
#[derive(Clone)]
pub struct CachedClient {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CachedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedClient")
            .field("client", &self.shared.client)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// Stops the background Redis listener; dropping it stops the listener too.
#[must_use = "dropping the handle stops the listener"]
pub struct ListenerHandle {
    stop: watch::Sender<bool>,
    ready: watch::Receiver<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for ListenerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerHandle").field("subscribed", &*self.ready.borrow()).finish()
    }
}

impl ListenerHandle {
    /// Waits until the listener is subscribed to both channels.
    pub async fn subscribed(&mut self) {
        let _ = self.ready.wait_for(|r| *r).await;
    }

    /// Waits until the listener has lost its Redis subscription (it then reconnects).
    pub async fn disconnected(&mut self) {
        let _ = self.ready.wait_for(|r| !*r).await;
    }

    /// Stops the listener and waits for it to finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl CachedClient {
    /// Not public: [`CachedClient::builder`] is the one way in (it states the defaults and
    /// checks what is missing), and the config type behind it is free to change.
    pub(crate) fn new(client: Client, config: CacheConfig) -> Result<Self, ClientError> {
        let redis = match &config.redis {
            Some(rc) => Some(Redis {
                client: redis::Client::open(rc.url.as_str())
                    .map_err(|e| ClientError::Config(format!("invalid redis url: {e}")))?,
                config: rc.clone(),
                conn: tokio::sync::Mutex::new(None),
                state: AtomicU8::new(L2_UNKNOWN),
                retry_at_ms: AtomicI64::new(i64::MIN),
            }),
            None => None,
        };
        let snapshot = config
            .snapshot
            .clone()
            .map(|(dir, key)| SnapshotStore::new(dir, key, config.deferred_writes.clone()));
        // A generation found by an earlier process spares this one the v4 probe.
        let saved = snapshot.as_ref().and_then(SnapshotStore::read_generation);
        if saved == Some(ApiVersion::V3) {
            client.set_api_version(ApiVersion::V3);
        }
        let l1 = L1::new(config.max_entries, config.max_stale.max(Duration::from_secs(1)));
        let clock = ReadClock::of(client.clock());
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                config,
                l1,
                clock,
                flights: Mutex::new(HashMap::new()),
                redis,
                snapshot,
                offline: Mutex::new(HashMap::new()),
                // No file reads as v4, what an unconfigured client assumes: only a server
                // without v4 needs one written.
                saved_generation: AtomicU8::new(generation_code(saved.unwrap_or(ApiVersion::V4))),
                rng: Mutex::new(StdRng::from_entropy()),
                subscriptions: Mutex::new(Vec::new()),
                next_subscription: AtomicU64::new(1),
                dedup: Mutex::new(Dedup::new(4096)),
                invalidated: broadcast::channel(64).0,
                epoch: AtomicU64::new(0),
                handles: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The uncached client, for writes and everything else.
    pub fn client(&self) -> &Client {
        &self.shared.client
    }

    #[inline]
    fn now_ms(&self) -> i64 {
        self.shared.clock.now_ms()
    }

    /// Reads one secret through its folder's cached listing. A fresh L1 hit is one lookup by
    /// the folder hash the reference carries, a comparison and a lookup in the listing's key
    /// index: nothing hashed or formatted, no label resolution, no copy of the secret, nothing
    /// awaited. The hit is answered by the first poll of [`Get`], which inlines into the caller.
    pub fn get<'a>(&'a self, secret: &'a SecretRef) -> Get<'a> {
        Get { cache: self, secret, miss: None }
    }

    /// The secret from a fresh L1 listing that holds it with its value, and the listing's age
    /// in milliseconds. Only the found case is answered here, as two words (returned in
    /// registers, where a `Served` or a `Result` as large as `ClientError` would be copied
    /// through the stack). A fresh listing without the key, or hiding its value, is answered by
    /// [`Self::get_through`], which finds the same listing in L1 and names the error.
    #[inline]
    fn fresh_hit(&self, secret: &SecretRef) -> Option<(Arc<Secret>, u64)> {
        // The slot is the hash the reference carries: nothing is hashed here.
        let slot = secret.folder_hash();
        let shard = self.shared.l1.shard_map(slot);
        let read = |map: &SlotMap<Arc<Entry>>| map.get(&slot).and_then(|e| self.hit_in(e, secret));
        SHARD_COPIES
            .try_with(|copies| Some(read(copies.try_borrow_mut().ok()?.copy_of(shard).load())))
            .ok()
            .flatten()
            // No copy to read (the thread is exiting): the shard itself, pinned.
            .unwrap_or_else(|| read(&shard.load()))
    }

    /// [`Self::fresh_hit`] in `e`, the listing in the reference's slot, counted as a hit.
    #[inline(always)]
    fn hit_in(&self, e: &Arc<Entry>, secret: &SecretRef) -> Option<(Arc<Secret>, u64)> {
        // Another listing in the slot (other flags, or a hash collision) is not this one.
        if !e.is_default_of(secret.project(), secret.environment(), secret.folder()) {
            return None;
        }
        let age = e.age(self.now_ms());
        if age >= self.shared.config.ttl {
            return None;
        }
        let found = e.index.get(secret).filter(|found| !found.value_hidden)?;
        e.hits.count();
        // Whole milliseconds below the TTL: `stored_age` made it from them.
        Some((found.clone(), u64::try_from(age.as_millis()).unwrap_or(u64::MAX)))
    }

    /// [`Self::get`] past L1: the listing through [`Self::entry`].
    async fn get_through(&self, secret: &SecretRef) -> Result<Served<Arc<Secret>>, ClientError> {
        let query = FolderQuery::new(secret.project(), secret.environment(), secret.folder());
        let served = self.entry(&query).await?;
        let found = served.value.pick(secret)?;
        Ok(Served { value: found, source: served.source, age: served.age })
    }

    /// Moves every cache hit counted so far in this process into `infisical_cache_hit_total`
    /// and `infisical_fetch_total{source=cache}`. Hits are counted per listing and reach the
    /// counters within a second anyway (and when the listing is dropped); call this before a
    /// scrape or a test that needs them exact at once.
    pub fn flush_metrics(&self) {
        crate::hits::flush_all();
    }

    /// A folder listing: fresh from L1 or L2, else from Infisical (one request however many
    /// callers miss together), else stale from cache or snapshot when Infisical cannot answer.
    pub async fn folder(&self, q: &FolderQuery) -> Result<Served<Arc<FolderSecrets>>, ClientError> {
        let served = self.entry(q).await?;
        Ok(Served { value: served.value.folder.clone(), source: served.source, age: served.age })
    }

    /// A live handle on one secret, resolved now (an error when it cannot be read).
    pub async fn handle(&self, secret: &SecretRef) -> Result<SecretHandle, ClientError> {
        let state = Arc::new(HandleState {
            secret: secret.clone(),
            current: arc_swap::ArcSwapOption::empty(),
        });
        let slot = secret.folder_hash();
        {
            let mut handles = lock(&self.shared.handles);
            let live = handles.entry(slot).or_default();
            live.retain(|h| h.strong_count() > 0);
            live.push(Arc::downgrade(&state));
        }
        let handle = SecretHandle { cache: self.clone(), state };
        // Registered first: a listing stored from here on reaches the handle.
        let query = FolderQuery::new(secret.project(), secret.environment(), secret.folder());
        let served = self.entry(&query).await?;
        served.value.pick(secret)?;
        if handle.state.current.load().is_none() {
            Self::resolve(&handle.state, &served.value);
        }
        Ok(handle)
    }

    /// Points a handle at its secret in `entry` (or at nothing when the listing lacks it).
    fn resolve(state: &HandleState, entry: &Arc<Entry>) {
        let resolved = entry
            .index
            .get(&state.secret)
            .map(|secret| Arc::new(Resolved { secret: secret.clone(), entry: entry.clone() }));
        state.current.store(resolved);
    }

    /// Swaps `entry` into the live handles of `slot`, or clears them (`None`).
    fn update_handles(&self, slot: u64, entry: Option<&Arc<Entry>>) {
        let mut handles = lock(&self.shared.handles);
        let Some(live) = handles.get_mut(&slot) else { return };
        live.retain(|h| h.strong_count() > 0);
        if live.is_empty() {
            handles.remove(&slot);
            return;
        }
        for state in live.iter().filter_map(std::sync::Weak::upgrade) {
            let s = &state.secret;
            match entry {
                Some(e) if e.is_default_of(s.project(), s.environment(), s.folder()) => {
                    Self::resolve(&state, e);
                }
                Some(_) => {}
                None => state.current.store(None),
            }
        }
    }

    /// The L1 slot of a listing with the default flags: what [`SecretRef::folder_hash`] carries.
    fn default_slot(&self, project: &str, environment: &str, folder: &str) -> u64 {
        ikit_common::secret::folder_hash(project, environment, folder)
    }

    /// The L1 slot of a query: [`Self::default_slot`] for the default flags, else a hash of the
    /// whole query (a collision with another listing only shares the slot: the query is
    /// compared on every read).
    fn slot(&self, q: &FolderQuery) -> u64 {
        if is_default(q) {
            return self.default_slot(&q.project_id, &q.environment, &q.path);
        }
        ikit_common::secret::address_hash(q)
    }

    /// This query's L1 entry (another query's entry in the same slot is not it).
    fn l1_get(&self, slot: u64, q: &FolderQuery) -> Option<Arc<Entry>> {
        self.shared.l1.get(slot).filter(|e| e.query == *q)
    }

    async fn entry(&self, q: &FolderQuery) -> Result<Served<Arc<Entry>>, ClientError> {
        let slot = self.slot(q);
        let now = self.now_ms();
        let (ttl, max_stale) = (self.shared.config.ttl, self.shared.config.max_stale);
        if let Some(e) = self.l1_get(slot, q) {
            let age = e.age(now);
            if age < ttl {
                return Ok(self.hit(&e, age));
            }
            if age <= max_stale && self.shared.client.circuit_open() {
                return Ok(self.stale(Source::Cache, e, age));
            }
            if age <= ttl.saturating_add(self.shared.config.stale_while_revalidate) {
                self.revalidate_in_background(q.clone(), e.key.clone());
                return Ok(self.stale(Source::Cache, e, age));
            }
        }

        let key = cache_key(q);
        let flight = self.flight(&key);
        let guard = flight.lock.lock().await;
        if let Some(landed) = flight.done.get() {
            // Another caller fetched while we waited: its answer is ours.
            return match landed {
                Ok((e, Source::Network, _)) => Ok(self.hit(e, Duration::ZERO)),
                Ok((e, source, age)) => Ok(self.stale(*source, e.clone(), *age)),
                Err(e) => Err(e.clone()),
            };
        }
        let result = self.miss(q, slot, &key).await;
        let _ = flight.done.set(match &result {
            Ok(s) => Ok((s.value.clone(), s.source, s.age)),
            Err(e) => Err(e.clone()),
        });
        self.land(&key, &flight);
        drop(guard);
        result
    }

    fn hit(&self, e: &Arc<Entry>, age: Duration) -> Served<Arc<Entry>> {
        e.hits.count();
        Served { value: e.clone(), source: Source::Cache, age }
    }

    fn stale(&self, source: Source, e: Arc<Entry>, age: Duration) -> Served<Arc<Entry>> {
        let path = e.query.path.as_str();
        let label = path_label(path);
        let labels = [("path", label.clone()), ("source", SharedString::from(source.as_str()))];
        metrics::counter!(METRIC_CACHE_STALE, &labels).increment(1);
        metrics::histogram!(METRIC_CACHE_STALE_AGE, &labels).record(age.as_secs_f64());
        metrics::counter!(METRIC_FETCH_TOTAL, "source" => source.as_str(), "path" => label)
            .increment(1);
        // Debug: during an outage this is every read (the metrics carry the counts).
        tracing::debug!(
            path,
            source = source.as_str(),
            age_secs = age.as_secs(),
            "serving a stale listing"
        );
        Served { value: e, source, age }
    }

    fn flight(&self, key: &str) -> Arc<Flight> {
        lock(&self.shared.flights).entry(key.to_owned()).or_default().clone()
    }

    /// Removes a finished flight from the map: later callers start a new one, while those
    /// already queued on it read its result.
    fn land(&self, key: &str, flight: &Arc<Flight>) {
        let mut flights = lock(&self.shared.flights);
        if flights.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            flights.remove(key);
        }
    }

    fn new_entry(
        &self,
        q: &FolderQuery,
        key: &str,
        folder: Arc<FolderSecrets>,
        etag: Option<String>,
        fetched_at_ms: i64,
    ) -> Entry {
        Entry::new(q, key, folder, etag, fetched_at_ms, self.shared.client.import_order())
    }

    /// Under the key's flight lock: L1 again (another caller may just have filled it), then
    /// L2, then Infisical, then the fallbacks.
    async fn miss(
        &self,
        q: &FolderQuery,
        slot: u64,
        key: &str,
    ) -> Result<Served<Arc<Entry>>, ClientError> {
        let path = q.path.as_str();
        let epoch = self.epoch();
        let now = self.now_ms();
        let ttl = self.shared.config.ttl;
        let mut previous = self.l1_get(slot, q);
        if let Some(e) = &previous
            && e.age(now) < ttl
        {
            return Ok(self.hit(e, e.age(now)));
        }
        let mut generation = None;
        if let Some((found, seen)) = self.l2_read(key, q).await {
            generation = Some(seen);
            if let Some(e) = found {
                let e = Arc::new(e);
                let age = e.age(now);
                if age < ttl {
                    self.store_l1(slot, e.clone(), epoch).await;
                    return Ok(self.hit(&e, age));
                }
                if previous.as_ref().is_none_or(|p| p.age(now) > age) {
                    previous = Some(e);
                }
            }
        }
        metrics::counter!(METRIC_CACHE_MISS, "path" => path.to_owned()).increment(1);
        // Nothing in memory to revalidate: the snapshot's listing can be, so a new process
        // (a warm `ikit run`) is answered 304 instead of the whole listing when it has not
        // changed. It is only the ETag's source: served when Infisical confirms it, never as a
        // stale `cache` copy (the snapshot stays for `fallback`, when unreachable).
        let from_snapshot = match &previous {
            None => self.snapshot_to_revalidate(q, key).await,
            Some(_) => None,
        };
        let revalidate = previous.as_deref().or(from_snapshot.as_deref());
        match self.refresh(q, slot, key, revalidate, epoch, generation).await {
            Ok(e) => Ok(Served { value: e, source: Source::Network, age: Duration::ZERO }),
            Err(error) => self.fallback(q, key, previous, error).await,
        }
    }

    /// The snapshot of a listing when it carries an ETag to revalidate with. Decoded once: it
    /// is kept among the offline copies (dropped when Infisical answers, served by `fallback`
    /// when it cannot be reached). A snapshot that cannot be read costs only the conditional
    /// request: the listing is fetched whole, and the fetch rewrites the file.
    async fn snapshot_to_revalidate(&self, q: &FolderQuery, key: &str) -> Option<Arc<Entry>> {
        self.shared.snapshot.as_ref()?;
        match self.offline_snapshot(q, key).await {
            Ok(found) => found.filter(|e| e.etag.is_some()),
            Err(e) => {
                tracing::debug!(path = q.path, error = %e, "snapshot not usable for revalidation");
                None
            }
        }
    }

    fn epoch(&self) -> u64 {
        self.shared.epoch.load(Ordering::SeqCst)
    }

    /// Puts a listing in L1 unless an invalidation ran since `epoch` was read, checked again
    /// once the insert is done (an invalidation walking L1 meanwhile may have missed it).
    async fn store_l1(&self, slot: u64, entry: Arc<Entry>, epoch: u64) -> bool {
        if self.epoch() != epoch {
            return false;
        }
        self.shared.l1.insert(slot, entry.clone(), self.now_ms());
        if self.epoch() != epoch {
            self.shared.l1.remove_if_same(slot, &entry);
            return false;
        }
        self.update_handles(slot, Some(&entry));
        // Checked once more: an invalidation that cleared the handles meanwhile wins.
        if self.epoch() != epoch {
            self.update_handles(slot, None);
        }
        true
    }

    /// Fetches (revalidating with the ETag of `previous`) and stores in L1, L2 and the snapshot,
    /// unless an invalidation ran since `epoch` was read (here) or since `generation` was read
    /// (anywhere: the L2 write is refused, and the listing leaves L1 again).
    async fn refresh(
        &self,
        q: &FolderQuery,
        slot: u64,
        key: &str,
        previous: Option<&Entry>,
        epoch: u64,
        generation: Option<Generation>,
    ) -> Result<Arc<Entry>, ClientError> {
        let etag = previous.and_then(|p| p.etag.as_deref());
        let fetched = match self.shared.client.fetch_folder_if_changed(q, etag).await {
            Ok(fetched) => fetched,
            Err(e) => {
                // A definite answer to a request we were allowed to make: the listing is gone
                // or no longer ours to read. (A refused login of our own is not one: the other
                // replicas' copies stay, see `fallback`.)
                if matches!(e, ClientError::NotFound { .. } | ClientError::PermissionDenied { .. })
                {
                    self.forget(slot, key).await;
                }
                return Err(e);
            }
        };
        let now = self.now_ms();
        if self.shared.snapshot.is_some() {
            lock(&self.shared.offline).remove(key);
        }
        let (mut entry, write_snapshot) = match (fetched, previous) {
            (FolderFetch::Modified { folder, etag }, _) => {
                (self.new_entry(q, key, Arc::new(folder), etag, now), true)
            }
            (FolderFetch::NotModified, Some(p)) => {
                tracing::debug!(path = q.path, "listing not modified");
                let mut entry = self.new_entry(q, key, p.folder.clone(), p.etag.clone(), now);
                entry.snapshot_written_ms = p.snapshot_written_ms;
                let write = self.snapshot_outdated(p.snapshot_written_ms, now);
                (entry, write)
            }
            (FolderFetch::NotModified, None) => {
                return Err(ClientError::Decode("304 without a cached listing".into()));
            }
        };
        let write_snapshot = write_snapshot && self.shared.snapshot.is_some();
        if write_snapshot {
            entry.snapshot_written_ms = Some(now);
        }
        let entry = Arc::new(entry);
        if !self.store_l1(slot, entry.clone(), epoch).await {
            tracing::debug!(path = q.path, "invalidated while fetching, not cached");
            return Ok(entry);
        }
        let plain = encode_entry(entry.fetched_at_ms, entry.etag.as_deref(), &entry.folder);
        if let Some(generation) = generation
            && self.l2_put(key, q, &entry, &plain, &generation).await == L2Write::Refused
        {
            tracing::debug!(path = q.path, "invalidated elsewhere while fetching, not cached");
            self.shared.l1.remove_if_same(slot, &entry);
            self.update_handles(slot, None);
            return Ok(entry);
        }
        if write_snapshot {
            self.write_snapshot(key, plain).await;
        }
        self.save_generation().await;
        Ok(entry)
    }

    /// Drops one listing from L2 and L1.
    async fn forget(&self, slot: u64, key: &str) {
        if let Some((redis_key, _)) = self.l2_key(key) {
            self.redis_op(|mut c| async move {
                redis::cmd("DEL").arg(redis_key).query_async::<i64>(&mut c).await
            })
            .await;
        }
        self.shared.l1.remove(slot);
        self.update_handles(slot, None);
    }

    fn revalidate_in_background(&self, q: FolderQuery, key: String) {
        let this = self.clone();
        tokio::spawn(async move {
            let flight = this.flight(&key);
            // Someone is already fetching this folder: nothing to add.
            let Ok(guard) = flight.lock.try_lock() else { return };
            let slot = this.slot(&q);
            let epoch = this.epoch();
            let previous = this.l1_get(slot, &q);
            let now = this.now_ms();
            // L2 gives the generation to write under, and maybe a copy another replica just
            // refreshed.
            let (found, generation) = match this.l2_read(&key, &q).await {
                Some((found, seen)) => (found, Some(seen)),
                None => (None, None),
            };
            if let Some(e) = found
                && e.age(now) < this.shared.config.ttl
            {
                this.store_l1(slot, Arc::new(e), epoch).await;
            } else if let Err(e) =
                this.refresh(&q, slot, &key, previous.as_deref(), epoch, generation).await
            {
                tracing::warn!(path = q.path, error = e.kind(), "background revalidation failed");
            }
            this.land(&key, &flight);
            drop(guard);
        });
    }

    /// Whether a 304 should still rewrite the snapshot last written at `written_ms`. Unchanged,
    /// the file is left alone (no write, no fsync), unless its timestamp has fallen a quarter
    /// of `max_stale` behind: a process started during an outage judges the snapshot's age by
    /// it, and must not find it too stale much earlier than it is.
    fn snapshot_outdated(&self, written_ms: Option<i64>, now_ms: i64) -> bool {
        let Some(written_ms) = written_ms else { return true };
        stored_age(now_ms, written_ms) > self.shared.config.max_stale / 4
    }

    /// Saves the client's API generation beside the snapshot when it differs from the saved one,
    /// for the next process (the next cache built reads it).
    async fn save_generation(&self) {
        if self.shared.snapshot.is_none() {
            return;
        }
        let version = self.shared.client.api_version();
        let code = generation_code(version);
        if self.shared.saved_generation.swap(code, Ordering::AcqRel) == code {
            return;
        }
        let this = self.clone();
        let written = tokio::task::spawn_blocking(move || {
            this.shared.snapshot.as_ref().expect("checked above").write_generation(version)
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            // Tried again after the next fetch.
            self.shared.saved_generation.store(0, Ordering::Release);
            tracing::warn!("cannot save the api generation beside the snapshot");
        }
    }

    async fn write_snapshot(&self, key: &str, plain: zeroize::Zeroizing<Vec<u8>>) {
        if self.shared.snapshot.is_none() {
            return;
        }
        let this = self.clone();
        let key = key.to_owned();
        let written = tokio::task::spawn_blocking(move || {
            let store = this.shared.snapshot.as_ref().expect("checked above");
            let mut rng = StdRng::from_rng(&mut *lock(&this.shared.rng)).expect("rng");
            store.write(&key, &plain, &mut rng)
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot write offline snapshot"),
            Err(e) => tracing::warn!(error = %e, "offline snapshot writer failed"),
        }
    }

    /// Infisical did not answer: serve the previous listing if young enough (any unavailability),
    /// else the snapshot (only when Infisical is unreachable), else a clear error.
    async fn fallback(
        &self,
        q: &FolderQuery,
        key: &str,
        previous: Option<Arc<Entry>>,
        error: ClientError,
    ) -> Result<Served<Arc<Entry>>, ClientError> {
        let now = self.now_ms();
        let max_stale = self.shared.config.max_stale;
        // Infisical failing, or our own login refused (a lockout, a secret rotated under this
        // pod, a briefly stale token file): the copy we hold is still the best answer.
        let unavailable = error.is_unreachable()
            || matches!(
                error,
                ClientError::Unavailable { .. }
                    | ClientError::RateLimited { .. }
                    | ClientError::Auth { .. }
                    | ClientError::Credential(_)
            );
        if !unavailable {
            return Err(error);
        }
        let mut oldest = None;
        if let Some(p) = previous {
            let age = p.age(now);
            if age <= max_stale {
                return Ok(self.stale(Source::Cache, p, age));
            }
            oldest = Some(age);
        }
        if !error.is_unreachable() {
            return Err(error);
        }
        if self.shared.snapshot.is_some()
            && let Some(e) = self.offline_snapshot(q, key).await?
        {
            // Kept apart from L1: every offline read reports the snapshot and its age.
            let age = e.age(now);
            if age <= max_stale {
                return Ok(self.stale(Source::Snapshot, e, age));
            }
            oldest = Some(oldest.map_or(age, |o: Duration| o.min(age)));
        }
        match oldest {
            Some(age) => Err(ClientError::TooStale { age, max_stale }),
            None => Err(error),
        }
    }

    /// The snapshot of a listing, decoded once per outage: from the offline copies, else
    /// from its file (then kept among the copies).
    async fn offline_snapshot(
        &self,
        q: &FolderQuery,
        key: &str,
    ) -> Result<Option<Arc<Entry>>, ClientError> {
        if let Some(e) = lock(&self.shared.offline).get(key) {
            return Ok(Some(e.clone()));
        }
        let read = {
            let key = key.to_owned();
            let this = self.clone();
            tokio::task::spawn_blocking(move || {
                this.shared.snapshot.as_ref().expect("checked by the caller").read(&key)
            })
            .await
            .map_err(|e| ClientError::Snapshot(format!("snapshot reader failed: {e}")))?
        };
        let Some(s) = read? else { return Ok(None) };
        let mut e = self.new_entry(q, key, Arc::new(s.folder), s.etag, s.saved_at_ms);
        // The file holds this listing as of `saved_at_ms`: a 304 revalidating it leaves the
        // file alone until that falls behind (`snapshot_outdated`).
        e.snapshot_written_ms = Some(s.saved_at_ms);
        let e = Arc::new(e);
        lock(&self.shared.offline).insert(key.to_owned(), e.clone());
        Ok(Some(e))
    }

    /// How many times a snapshot file was read and decoded (by this client).
    #[doc(hidden)]
    pub fn snapshot_file_reads(&self) -> u64 {
        self.shared.snapshot.as_ref().map_or(0, SnapshotStore::reads)
    }

    // ---- writes ----
    //
    // Writes go to Infisical, then drop the folder they touched (here, in L2 and on every
    // replica, like `invalidate_in`), whatever the outcome: a failed or timed-out write may
    // still have landed. A read that follows sees the write.

    /// [`Client::create_secret`], then the folder is invalidated.
    pub async fn create_secret(
        &self,
        scope: &Scope,
        secret: &NewSecret,
    ) -> Result<Secret, ClientError> {
        let written = self.shared.client.create_secret(scope, secret).await;
        self.wrote(scope).await;
        written
    }

    /// [`Client::update_secret`], then the folder is invalidated.
    pub async fn update_secret(
        &self,
        scope: &Scope,
        update: &SecretUpdate,
    ) -> Result<Secret, ClientError> {
        let written = self.shared.client.update_secret(scope, update).await;
        self.wrote(scope).await;
        written
    }

    /// [`Client::update_secret_if_version`], then the folder is invalidated.
    pub async fn update_secret_if_version(
        &self,
        scope: &Scope,
        update: &SecretUpdate,
        expected_version: u64,
    ) -> Result<Secret, ClientError> {
        let written =
            self.shared.client.update_secret_if_version(scope, update, expected_version).await;
        self.wrote(scope).await;
        written
    }

    /// [`Client::delete_secret`], then the folder is invalidated.
    pub async fn delete_secret(
        &self,
        scope: &Scope,
        key: &str,
        secret_type: SecretType,
    ) -> Result<Secret, ClientError> {
        let deleted = self.shared.client.delete_secret(scope, key, secret_type).await;
        self.wrote(scope).await;
        deleted
    }

    /// [`Client::batch_upsert_with`] (chunked, with progress), then the folder is invalidated.
    pub async fn batch_upsert_with(
        &self,
        scope: &Scope,
        items: &[NewSecret],
        progress: &mut (dyn FnMut(crate::api::BatchProgress) + Send),
    ) -> Result<Vec<Secret>, ClientError> {
        let written = self.shared.client.batch_upsert_with(scope, items, progress).await;
        self.wrote(scope).await;
        written
    }

    /// [`Client::batch_delete`], then the folder is invalidated.
    pub async fn batch_delete(
        &self,
        scope: &Scope,
        keys: &[String],
    ) -> Result<Vec<Secret>, ClientError> {
        let deleted = self.shared.client.batch_delete(scope, keys).await;
        self.wrote(scope).await;
        deleted
    }

    async fn wrote(&self, scope: &Scope) {
        let within = InvalidationScope::of(scope.project_id.as_str(), scope.environment.as_str());
        self.invalidate_in(&within, &scope.path).await;
    }

    // ---- invalidation ----

    /// Drops matching listings from L2 and this replica's L1, then asks every other replica to
    /// drop theirs (published whatever became of the L2 step). `pattern` is a key path, a
    /// folder prefix or a glob (`/auth/*`), in every project and environment.
    pub async fn invalidate(&self, pattern: &str) -> Invalidated {
        self.invalidate_in(&InvalidationScope::all(), pattern).await
    }

    /// [`CachedClient::invalidate`] within one project and/or environment.
    pub async fn invalidate_in(&self, scope: &InvalidationScope, pattern: &str) -> Invalidated {
        // Bump first: a fetch already under way here stores nothing, and L2 writes started
        // anywhere before the L2 step are refused by the generation it bumps.
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        let l2_cleared = self.l2_clear(&[(scope.clone(), pattern.to_owned())]).await;
        // L1 after L2: a read between the two steps must not refill L1 from the old L2 copy.
        let local = self.invalidate_local(scope, pattern).await;
        let mut published = false;
        if let Some(redis) = &self.shared.redis {
            let message = serde_json::to_string(&InvalidationMessage::new(scope, pattern))
                .expect("serializes");
            let channel = invalidation_channel(&redis.config.prefix);
            let now = self.now_ms();
            if let Some(mut c) = self.connection(redis, true).await {
                let sent = tokio::time::timeout(
                    redis.config.op_timeout,
                    redis::cmd("PUBLISH").arg(channel).arg(message).query_async::<i64>(&mut c),
                )
                .await;
                if let Ok(Ok(_)) = sent {
                    self.mark(true);
                    published = true;
                } else {
                    self.redis_failed(redis, now).await;
                }
            }
            if !published {
                tracing::warn!(
                    pattern,
                    "invalidation not published, other replicas keep their copies until their ttl"
                );
            }
        }
        Invalidated { local, published, l2_cleared }
    }

    /// Drops matching L1 listings of this replica only.
    async fn invalidate_local(&self, scope: &InvalidationScope, pattern: &str) -> usize {
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        let dropped = self.shared.l1.remove_where(|entry| l1_affected(scope, pattern, entry));
        self.clear_handles(scope, pattern);
        if dropped > 0 {
            tracing::debug!(pattern, dropped, "invalidated cached listings");
        }
        let _ = self.shared.invalidated.send(pattern.to_owned());
        dropped
    }

    /// Clears the live handles whose listing the invalidation reaches, like L1 (that listing
    /// may have left L1 earlier, by size or age, and still be what they hold).
    fn clear_handles(&self, scope: &InvalidationScope, pattern: &str) {
        let mut handles = lock(&self.shared.handles);
        handles.retain(|_, live| {
            live.retain(|h| h.strong_count() > 0);
            !live.is_empty()
        });
        for state in handles.values().flatten().filter_map(std::sync::Weak::upgrade) {
            let reached = state
                .current
                .load()
                .as_ref()
                .is_some_and(|r| l1_affected(scope, pattern, &r.entry));
            if reached {
                state.current.store(None);
            }
        }
    }

    /// Patterns applied to this replica's L1, from here or from another replica.
    pub fn invalidations(&self) -> broadcast::Receiver<String> {
        self.shared.invalidated.subscribe()
    }

    /// The age of this replica's L1 listing for the query, on the client clock.
    pub async fn cached_age(&self, q: &FolderQuery) -> Option<Duration> {
        let now = self.now_ms();
        self.l1_get(self.slot(q), q).map(|e| e.age(now))
    }

    /// True when L1 holds a listing for this query (fresh or not).
    pub async fn is_cached(&self, q: &FolderQuery) -> bool {
        self.l1_get(self.slot(q), q).is_some()
    }

    // ---- subscriptions ----

    /// Calls `callback` for every created / updated / deleted event whose path matches
    /// `pattern`. Returns an id for [`CachedClient::unsubscribe`].
    /// (In every project and environment; see [`CachedClient::subscribe_in`].)
    pub fn subscribe(
        &self,
        pattern: impl Into<String>,
        callback: impl Fn(&SecretChangeEvent) + Send + Sync + 'static,
    ) -> u64 {
        self.subscribe_in(&InvalidationScope::all(), pattern, callback)
    }

    /// [`CachedClient::subscribe`] for events of one project and/or environment only.
    pub fn subscribe_in(
        &self,
        scope: &InvalidationScope,
        pattern: impl Into<String>,
        callback: impl Fn(&SecretChangeEvent) + Send + Sync + 'static,
    ) -> u64 {
        self.add_subscription(scope, pattern.into(), Sink::Callback(Arc::new(callback)))
    }

    /// Events whose path matches `pattern`, on a channel of `buffer` (events are dropped, with a
    /// warning, while the receiver lags behind by a full buffer). In every project and
    /// environment; see [`CachedClient::subscribe_stream_in`].
    pub fn subscribe_stream(
        &self,
        pattern: impl Into<String>,
        buffer: usize,
    ) -> mpsc::Receiver<SecretChangeEvent> {
        self.subscribe_stream_in(&InvalidationScope::all(), pattern, buffer)
    }

    /// [`CachedClient::subscribe_stream`] for events of one project and/or environment only.
    pub fn subscribe_stream_in(
        &self,
        scope: &InvalidationScope,
        pattern: impl Into<String>,
        buffer: usize,
    ) -> mpsc::Receiver<SecretChangeEvent> {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        self.add_subscription(scope, pattern.into(), Sink::Stream(tx));
        rx
    }

    pub fn unsubscribe(&self, id: u64) {
        lock(&self.shared.subscriptions).retain(|s| s.id != id);
    }

    fn add_subscription(&self, scope: &InvalidationScope, pattern: String, sink: Sink) -> u64 {
        let id = self.shared.next_subscription.fetch_add(1, Ordering::Relaxed);
        let scope = scope.clone();
        lock(&self.shared.subscriptions).push(Subscription { id, scope, pattern, sink });
        id
    }

    /// Delivers one change event (from Redis, or from an in-process receiver): drops the
    /// listings of this replica's L1 holding the key, then calls the matching subscribers
    /// (by project, environment and path) unless the event repeats one already delivered (same
    /// project, environment, path, kind and version, or same kind and id without a version; a
    /// deletion starts the path's history afresh). Returns whether subscribers were called.
    ///
    /// L2 is left alone: the publisher ([`Invalidator::publish`](crate::Invalidator::publish))
    /// clears it once, before it publishes, instead of every replica for every event.
    pub async fn deliver(&self, event: &SecretChangeEvent) -> bool {
        let path = event.path();
        let scope = InvalidationScope::of(&event.project, &event.environment);
        // Always drop the cache, even for a repeat: it is cheap and never wrong.
        self.invalidate_local(&scope, &path).await;
        let base = format!("{}/{}{}\u{0}", event.project, event.environment, path);
        let kind = match event.kind {
            ChangeKind::Created => "created",
            ChangeKind::Updated => "updated",
            ChangeKind::Deleted => "deleted",
        };
        let identity = match event.version {
            Some(v) => format!("{base}{kind}@{v}"),
            None => format!("{base}{kind}#{}", event.event_id),
        };
        {
            let mut dedup = lock(&self.shared.dedup);
            if !dedup.first_time(identity.clone()) {
                tracing::debug!(path, "duplicate change event not delivered again");
                return false;
            }
            if event.kind == ChangeKind::Deleted {
                dedup.forget_prefix_except(&base, &identity);
            }
        }
        let sinks: Vec<(Option<Callback>, Option<mpsc::Sender<SecretChangeEvent>>)> =
            lock(&self.shared.subscriptions)
                .iter()
                .filter(|s| {
                    s.scope.contains(&event.project, &event.environment)
                        && path_matches(&s.pattern, &path)
                })
                .map(|s| match &s.sink {
                    Sink::Callback(c) => (Some(c.clone()), None),
                    Sink::Stream(tx) => (None, Some(tx.clone())),
                })
                .collect();
        for sink in sinks {
            match sink {
                (Some(callback), _) => {
                    let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        callback(event);
                    }));
                    if called.is_err() {
                        tracing::error!(path, "a change subscriber panicked; listener goes on");
                    }
                }
                (_, Some(tx)) => {
                    if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(event.clone()) {
                        tracing::warn!(path, "subscriber lagging, change event dropped");
                    }
                }
                _ => {}
            }
        }
        lock(&self.shared.subscriptions).retain(|s| match &s.sink {
            Sink::Stream(tx) => !tx.is_closed(),
            Sink::Callback(_) => true,
        });
        true
    }

    /// Starts the background task that listens on Redis for invalidations and change events,
    /// reconnecting with backoff; `None` without Redis. Keep the handle for as long as the
    /// listener should run: dropping it stops the listener, and `let _ = ...` drops it at once.
    #[must_use = "dropping the handle stops the listener: keep it in a named binding"]
    pub fn start_listener(&self) -> Option<ListenerHandle> {
        let redis = self.shared.redis.as_ref()?;
        let client = redis.client.clone();
        let prefix = redis.config.prefix.clone();
        let timeout = redis.config.op_timeout;
        let ping_every = redis.config.ping_every.max(Duration::from_millis(10));
        let (stop, mut stopped) = watch::channel(false);
        let (ready_tx, ready) = watch::channel(false);
        let this = self.clone();
        let task = tokio::spawn(async move {
            let channels = [invalidation_channel(&prefix), events_channel(&prefix)];
            let mut backoff = Duration::from_millis(100);
            let mut was_up = true;
            let mut subscribed_before = false;
            loop {
                if *stopped.borrow() {
                    return;
                }
                let connected = tokio::time::timeout(timeout, async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    for channel in &channels {
                        pubsub.subscribe(channel).await?;
                    }
                    Ok::<_, redis::RedisError>(pubsub)
                })
                .await;
                if let Ok(Ok(pubsub)) = connected {
                    if !was_up {
                        tracing::info!("redis listener reconnected");
                    }
                    if subscribed_before {
                        // Whatever was published while we were away is lost: start afresh.
                        this.invalidate_local(&InvalidationScope::all(), "*").await;
                    }
                    subscribed_before = true;
                    was_up = true;
                    backoff = Duration::from_millis(100);
                    let _ = ready_tx.send(true);
                    let (mut sink, mut messages) = pubsub.split();
                    let mut ping = tokio::time::interval(ping_every);
                    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    ping.tick().await;
                    loop {
                        tokio::select! {
                            _ = stopped.changed() => return,
                            msg = messages.next() => match msg {
                                Some(msg) => this.on_message(&channels, &msg).await,
                                None => break,
                            },
                            _ = ping.tick() => {
                                // A connection that went silent is found out here.
                                let pong = tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await;
                                if !matches!(pong, Ok(Ok(_))) {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = ready_tx.send(false);
                }
                if was_up {
                    tracing::warn!("redis listener disconnected, reconnecting");
                    was_up = false;
                }
                tokio::select! {
                    _ = stopped.changed() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
        Some(ListenerHandle { stop, ready, task: Some(task) })
    }

    async fn on_message(&self, channels: &[String; 2], msg: &redis::Msg) {
        let payload = msg.get_payload_bytes();
        if msg.get_channel_name() == channels[0] {
            match serde_json::from_slice::<InvalidationMessage>(payload) {
                Ok(m) => {
                    self.invalidate_local(&m.scope(), &m.pattern).await;
                }
                Err(_) => tracing::warn!("ignoring a malformed invalidation message"),
            }
        } else if msg.get_channel_name() == channels[1] {
            match serde_json::from_slice::<SecretChangeEvent>(payload) {
                Ok(event) => {
                    self.deliver(&event).await;
                }
                Err(_) => tracing::warn!("ignoring a malformed change event"),
            }
        }
    }

    // ---- L2 ----

    /// True while the last Redis step succeeded (false before the first one).
    pub fn l2_up(&self) -> bool {
        self.shared.redis.as_ref().is_some_and(|r| r.state.load(Ordering::Relaxed) == L2_UP)
    }

    fn mark(&self, up: bool) {
        let Some(redis) = &self.shared.redis else { return };
        let new = if up { L2_UP } else { L2_DOWN };
        let old = redis.state.swap(new, Ordering::Relaxed);
        if old != new {
            metrics::gauge!(METRIC_CACHE_L2_UP).set(if up { 1.0 } else { 0.0 });
            match (old, up) {
                (L2_DOWN, true) => tracing::info!("redis cache is back"),
                (_, true) => tracing::debug!("redis cache connected"),
                (_, false) => {
                    tracing::warn!("redis cache unavailable, serving from the in-process cache")
                }
            }
        }
    }

    /// Runs one Redis command with a timeout; on any failure marks Redis down, drops the
    /// connection and returns `None`.
    async fn redis_op<T, F, Fut>(&self, op: F) -> Option<T>
    where
        F: FnOnce(redis::aio::MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let timeout = self.shared.redis.as_ref()?.config.op_timeout;
        self.redis_op_within(timeout, op).await
    }

    /// [`Self::redis_op`] with `budget` for the command(s) (connecting keeps `op_timeout`).
    async fn redis_op_within<T, F, Fut>(&self, budget: Duration, op: F) -> Option<T>
    where
        F: FnOnce(redis::aio::MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let redis = self.shared.redis.as_ref()?;
        let now = self.now_ms();
        let conn = self.connection(redis, false).await?;
        match tokio::time::timeout(budget, op(conn)).await {
            Ok(Ok(v)) => {
                self.mark(true);
                Some(v)
            }
            _ => {
                self.redis_failed(redis, now).await;
                None
            }
        }
    }

    /// The shared connection, made if needed. Inside the retry window after a failure it is
    /// not tried, unless `always` (for the invalidation message, which must not be skipped).
    async fn connection(
        &self,
        redis: &Redis,
        always: bool,
    ) -> Option<redis::aio::MultiplexedConnection> {
        let timeout = redis.config.op_timeout;
        let now = self.now_ms();
        let mut slot = redis.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Some(c.clone());
        }
        if !always && now < redis.retry_at_ms.load(Ordering::Relaxed) {
            return None;
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let made = tokio::time::timeout(
            timeout,
            redis.client.get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        match made {
            Ok(Ok(c)) => {
                *slot = Some(c.clone());
                Some(c)
            }
            _ => {
                // Still holding the slot: callers queued on it see the retry window and give
                // up at once instead of each trying to connect in turn.
                Self::hold_off(redis, now);
                drop(slot);
                self.mark(false);
                None
            }
        }
    }

    async fn redis_failed(&self, redis: &Redis, now: i64) {
        let mut slot = redis.conn.lock().await;
        *slot = None;
        Self::hold_off(redis, now);
        drop(slot);
        self.mark(false);
    }

    /// Leaves Redis alone for `retry_every` from `now`.
    fn hold_off(redis: &Redis, now: i64) {
        let retry = i64::try_from(redis.config.retry_every.as_millis()).unwrap_or(i64::MAX);
        redis.retry_at_ms.store(now.saturating_add(retry), Ordering::Relaxed);
    }

    fn l2_key(&self, key: &str) -> Option<(String, &SealKey)> {
        let redis = self.shared.redis.as_ref()?;
        let seal_key = redis.config.seal_key.as_ref()?;
        Some((l2::entry_key(&redis.config.prefix, key), seal_key))
    }

    /// L2's copy of a listing (when there is one that opens) and the generation it was read
    /// under; `None` without L2 or while Redis is down.
    async fn l2_read(&self, key: &str, q: &FolderQuery) -> Option<(Option<Entry>, Generation)> {
        let (redis_key, seal_key) = self.l2_key(key)?;
        let prefix = self.shared.redis.as_ref()?.config.prefix.clone();
        let (cache_key, project, env) =
            (key.to_owned(), q.project_id.clone(), q.environment.clone());
        let read = self
            .redis_op(
                |mut c| async move { l2::read(&mut c, &prefix, &cache_key, &project, &env).await },
            )
            .await?;
        let Some(bytes) = read.sealed else { return Some((None, read.generation)) };
        let opened = seal::open(seal_key, redis_key.as_bytes(), &bytes)
            .map_err(|e| e.to_string())
            .and_then(|plain| decode_entry(&plain));
        match opened {
            Ok(s) => {
                let entry = self.new_entry(q, key, Arc::new(s.folder), s.etag, s.saved_at_ms);
                Some((Some(entry), read.generation))
            }
            Err(e) => {
                tracing::warn!(path = q.path, error = %e, "ignoring an l2 entry that does not open");
                Some((None, read.generation))
            }
        }
    }

    /// Writes a listing to L2 if no invalidation of its scope began since `generation` was
    /// read, indexing it under every folder it imports.
    async fn l2_put(
        &self,
        key: &str,
        q: &FolderQuery,
        entry: &Entry,
        plain: &[u8],
        generation: &Generation,
    ) -> L2Write {
        let Some((redis_key, seal_key)) = self.l2_key(key) else { return L2Write::Skipped };
        let Some(redis) = &self.shared.redis else { return L2Write::Skipped };
        let sealed = {
            let mut rng = lock(&self.shared.rng);
            seal::seal(seal_key, redis_key.as_bytes(), plain, &mut *rng)
        };
        let ttl_ms =
            u64::try_from(self.shared.config.max_stale.as_millis()).unwrap_or(u64::MAX).max(1);
        let prefix = redis.config.prefix.as_str();
        let imports: Vec<(&str, &str)> = entry
            .folder
            .imports
            .iter()
            .map(|i| {
                let env = if i.environment.is_empty() { &q.environment } else { &i.environment };
                (env.as_str(), i.path.as_str())
            })
            .collect();
        let listing = l2::Listing {
            cache_key: key,
            project: &q.project_id,
            environment: &q.environment,
            imports,
        };
        let written = self
            .redis_op(|mut c| async move {
                l2::write(&mut c, prefix, &listing, generation, &sealed, ttl_ms).await
            })
            .await;
        match written {
            Some(true) => L2Write::Written,
            Some(false) => L2Write::Refused,
            None => L2Write::Skipped,
        }
    }

    /// The L2 part of an invalidation, by name only (see `l2::clear`), bounded by
    /// `scan_budget`: overrunning it is logged and leaves L2 up. True when every affected
    /// listing is gone (or there is no Redis).
    async fn l2_clear(&self, targets: &[(InvalidationScope, String)]) -> bool {
        let Some(redis) = &self.shared.redis else { return true };
        let now = self.now_ms();
        let Some(mut c) = self.connection(redis, false).await else { return false };
        let budget = redis.config.scan_budget;
        let deadline = tokio::time::Instant::now() + budget;
        // The deadline is checked between batches; the timeout bounds one stuck command.
        let cleared = tokio::time::timeout(
            budget + redis.config.op_timeout,
            l2::clear(&mut c, &redis.config.prefix, targets, deadline),
        )
        .await;
        match cleared {
            Ok(Ok(Cleared::All(deleted))) => {
                self.mark(true);
                tracing::debug!(deleted, "invalidated l2 listings");
                true
            }
            Ok(Err(_)) => {
                self.redis_failed(redis, now).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let env: BTreeMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Settings::load(None, &env).unwrap()
    }

    #[test]
    fn cache_config_from_settings() {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        let c = CacheConfig::from_settings(&settings(&[
            ("IKIT_CACHE_TTL", "30s"),
            ("IKIT_CACHE_MAX_STALE", "2h"),
            ("IKIT_REDIS_URL", "redis://127.0.0.1:6379"),
            ("IKIT_CACHE_KEY", &key),
            ("IKIT_SNAPSHOT_DIR", "/tmp/snaps"),
            ("IKIT_SNAPSHOT_KEY", &key),
        ]))
        .unwrap();
        assert_eq!((c.ttl, c.max_stale), (Duration::from_secs(30), Duration::from_secs(7200)));
        let redis = c.redis.as_ref().unwrap();
        assert!(redis.seal_key.is_some() && redis.prefix == DEFAULT_REDIS_PREFIX);
        assert_eq!(c.snapshot.as_ref().unwrap().0, PathBuf::from("/tmp/snaps"));
        assert!(!format!("{c:?}").contains(&key));

        let pubsub_only =
            CacheConfig::from_settings(&settings(&[("IKIT_REDIS_URL", "redis://127.0.0.1:6379")]))
                .unwrap();
        assert!(pubsub_only.redis.unwrap().seal_key.is_none());
        let err =
            CacheConfig::from_settings(&settings(&[("IKIT_SNAPSHOT_DIR", "/tmp/s")])).unwrap_err();
        assert!(err.to_string().contains("IKIT_SNAPSHOT_KEY"), "{err}");
        let err = CacheConfig::from_settings(&settings(&[
            ("IKIT_SNAPSHOT_DIR", "/tmp/s"),
            ("IKIT_SNAPSHOT_KEY", "c2hvcnQ="),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("32 bytes"), "{err}");
    }

    #[test]
    fn the_key_index_resolves_like_the_listing_does() {
        let folder = crate::wire::decode_list(
            br#"{"secrets":[{"secretKey":"OWN","secretValue":"own"},
                            {"secretKey":"COMMON","secretValue":"own-common"}],
                 "imports":[
                   {"secretPath":"/a","environment":"dev","secrets":[
                      {"secretKey":"COMMON","secretValue":"a"},{"secretKey":"A","secretValue":"a"},
                      {"secretKey":"BOTH","secretValue":"from-a"}]},
                   {"secretPath":"/b","environment":"dev","secrets":[
                      {"secretKey":"BOTH","secretValue":"from-b"}]}]}"#,
        )
        .unwrap();
        let folder = Arc::new(folder);
        let q = FolderQuery::new("p", "dev", "/app");
        for order in [ImportOrder::LaterWins, ImportOrder::EarlierWins] {
            let entry = Entry::new(&q, &cache_key(&q), folder.clone(), None, 0, order);
            assert_eq!(entry.index.len(), 4);
            for key in ["OWN", "COMMON", "A", "BOTH"] {
                let indexed = entry.index.by_key(key).unwrap().value.expose();
                assert_eq!(indexed, folder.find(key, order).unwrap().value.expose(), "{key}");
            }
            let secret = SecretRef::parse("p", "dev", "/app/MISSING").unwrap();
            assert!(matches!(entry.pick(&secret), Err(ClientError::NotFound { .. })));
        }
        let later = Entry::new(&q, "k", folder.clone(), None, 0, ImportOrder::LaterWins);
        assert_eq!(later.index.by_key("BOTH").unwrap().value.expose(), "from-b");
        let common = later.index.by_key("COMMON").unwrap();
        assert_eq!(common.value.expose(), "own-common", "own secrets win");
        assert!(later.default_flags && later.is_default_of("p", "dev", "/app"));
        assert!(!later.is_default_of("p", "prod", "/app"));
        let recursive =
            Entry::new(&q.clone().recursive(true), "k", folder, None, 0, ImportOrder::LaterWins);
        assert!(!recursive.is_default_of("p", "dev", "/app"), "another listing of the folder");
    }

    #[test]
    fn cache_keys_separate_projects_environments_flags_and_folders() {
        let q = FolderQuery::new("p1", "dev", "/auth/jwt");
        let k = cache_key(&q);
        assert_eq!(key_parts(&k), Some(("p1", "dev", "/auth/jwt")));
        assert_ne!(k, cache_key(&FolderQuery::new("p2", "dev", "/auth/jwt")));
        assert_ne!(k, cache_key(&FolderQuery::new("p1", "prod", "/auth/jwt")));
        assert_ne!(k, cache_key(&FolderQuery::new("p1", "dev", "/auth")));
        assert_ne!(k, cache_key(&FolderQuery::new("p1", "dev", "/auth/jwt").recursive(true)));
    }
}
