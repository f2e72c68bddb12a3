//! The stateful key manager: loads the keys from the store into a ring that readers use without
//! blocking (swapped atomically with `arc-swap`), runs rotation steps under the one-leader lock,
//! repairs a folder left half-written by a crash, audits every step and counts rotations.
//!
//! Propagation: a replica that did not write a step learns of it by reloading its ring, which
//! happens on every scheduler tick ([`spawn_scheduler`]), when `rotate` finds the lock busy, on a
//! token or ciphertext naming an unknown kid ([`KeyManager::verify_with_reload`],
//! [`KeyManager::decrypt_with_reload`], rate-limited), and on change events and invalidations
//! of the key folders once the manager is attached to a `CachedClient`
//! ([`KeyManager::attach`](crate::propagate)). After every committed step the leader publishes an
//! invalidation of the folder it wrote through its [`KeyChangePublisher`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use ikit_common::SecretValue;
use rand::{CryptoRng, RngCore};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::audit::{AuditEntry, AuditSink, TracingAudit};
use crate::cipher::{AesKey, AesKeyRing, AesKeyState, RingKey};
use crate::error::{Error, Result};
use crate::jwt::{JwkSet, JwtKey, VerifyOptions};
use crate::lock::{LocalLock, LockGuard, RotationLock};
use crate::policy::Policy;
use crate::propagate::KeyChangePublisher;
use crate::rotation::{
    AesStep, Check, JwtFolder, JwtKeys, JwtPhase, JwtState, JwtStep, KeyKind, Layout, Trigger,
    Write, aes_activate, aes_add_pending, aes_layout, aes_names, aes_retire, aes_revoke,
    fence_writes, next_aes_step, next_jwt_step, stored_fence, verify_aes_folder, verify_jwt_folder,
};
use crate::store::KeyStore;
use ikit_common::clock::{Clock, SystemClock};

/// A cryptographically secure RNG that can live behind a `Box`.
pub trait SecureRng: RngCore + CryptoRng + Send {}
impl<T: RngCore + CryptoRng + Send> SecureRng for T {}

/// Which keys a rotation is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationTarget {
    Jwt,
    Aes,
    Both,
}

impl RotationTarget {
    fn kinds(self) -> &'static [KeyKind] {
        match self {
            Self::Jwt => &[KeyKind::Jwt],
            Self::Aes => &[KeyKind::Aes],
            Self::Both => &[KeyKind::Jwt, KeyKind::Aes],
        }
    }
}

impl From<KeyKind> for RotationTarget {
    fn from(kind: KeyKind) -> Self {
        match kind {
            KeyKind::Jwt => Self::Jwt,
            KeyKind::Aes => Self::Aes,
        }
    }
}

/// Folders, policy, token checks and the bounds on storage calls.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    pub jwt_folder: String,
    pub aes_folder: String,
    pub policy: Policy,
    /// What [`KeyManager::verify`] checks besides the signature (`leeway` is replaced by the
    /// policy's `clock_skew`). Its `issuer`, when set, is also what `sign` puts in `iss`.
    pub verify: VerifyOptions,
    /// A token or ciphertext with an unknown kid reloads the ring at most once per this.
    pub unknown_kid_reload_every: Duration,
    /// Bound on each call to the key store; a write cut short is handled like a crash between
    /// two writes. Set it to cover the store's own retries (`InfisicalStore::call_budget`).
    pub store_timeout: Duration,
}

/// Default bound on a key store call: covers ikit-client's default retry budget without
/// `Retry-After` waits (4 attempts of 30 s and their backoffs).
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(125);

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            jwt_folder: "/auth/jwt".into(),
            aes_folder: "/auth/aes".into(),
            policy: Policy::default(),
            verify: VerifyOptions::default(),
            unknown_kid_reload_every: Duration::from_secs(30),
            store_timeout: DEFAULT_STORE_TIMEOUT,
        }
    }
}

/// The JWT part of the ring.
#[derive(Clone, Debug)]
pub struct JwtRing {
    pub keys: JwtKeys,
    pub published: JwkSet,
}

/// What readers use: the keys as last loaded. Immutable; replaced whole on reload.
#[derive(Clone, Debug, Default)]
pub struct KeyRing {
    pub jwt: Option<JwtRing>,
    pub aes: Option<AesKeyRing>,
    pub loaded_at: Option<i64>,
}

/// One step a rotation performed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AppliedStep {
    pub kind: KeyKind,
    /// `init`, `adopt`, `repair`, `publish_next`, `flip`, `retire`, `add_next`, `activate`
    /// (a new key replaces the active one), `activate_first` (the first AES key), `import`.
    pub action: String,
    pub kids: Vec<String>,
    pub writes: usize,
}

/// What `rotate` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RotateOutcome {
    /// The lock was not taken (another replica holds it, or, for `load`, the lock backend is
    /// down): nothing was written here.
    pub busy: bool,
    pub steps: Vec<AppliedStep>,
}

impl RotateOutcome {
    /// How many keys started signing or encrypting (flips and replacing activations).
    pub fn rotations(&self) -> usize {
        self.steps.iter().filter(|s| s.action == "flip" || s.action == "activate").count()
    }
}

/// The last rotation attempt of one kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LastOutcome {
    pub at: i64,
    pub trigger: Trigger,
    pub ok: bool,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JwtHealth {
    pub algorithm: String,
    pub current_kid: String,
    pub current_age_seconds: i64,
    pub phase: String,
    pub published_kids: Vec<String>,
    /// When the state machine next has something to do (now or earlier when it is due).
    pub next_step_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AesHealth {
    pub active_kid: Option<String>,
    pub active_age_seconds: Option<i64>,
    pub pending_kid: Option<String>,
    pub decrypt_only: usize,
    pub retired: usize,
    pub next_step_at: i64,
}

/// A health snapshot of both key systems.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeysHealth {
    pub loaded_at: Option<i64>,
    pub jwt: Option<JwtHealth>,
    pub aes: Option<AesHealth>,
    pub last_jwt: Option<LastOutcome>,
    pub last_aes: Option<LastOutcome>,
}

/// The result of [`KeyManager::verify_rotation`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RotationReport {
    pub jwt: Vec<Check>,
    pub aes: Vec<Check>,
}

impl RotationReport {
    pub fn ok(&self) -> bool {
        self.jwt.iter().chain(&self.aes).all(|c| c.ok)
    }

    pub fn failures(&self) -> Vec<&Check> {
        self.jwt.iter().chain(&self.aes).filter(|c| !c.ok).collect()
    }
}

/// Builds a [`KeyManager`]; defaults: in-process lock, tracing audit, system clock, OS RNG.
pub struct KeyManagerBuilder {
    store: Arc<dyn KeyStore>,
    lock: Arc<dyn RotationLock>,
    audit: Arc<dyn AuditSink>,
    clock: Arc<dyn Clock>,
    rng: Box<dyn SecureRng>,
    config: ManagerConfig,
    publisher: Option<Arc<dyn KeyChangePublisher>>,
}

impl KeyManagerBuilder {
    /// Where every committed step announces the folder it changed (see [`crate::propagate`]).
    pub fn publisher(mut self, publisher: Arc<dyn KeyChangePublisher>) -> Self {
        self.publisher = Some(publisher);
        self
    }

    /// `sign` sets `iss` to this and `verify` requires it.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.config.verify.issuer = Some(issuer.into());
        self
    }

    /// An audience `verify` accepts (tokens carrying `aud` must name one of them).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.config.verify.audiences.push(audience.into());
        self
    }

    /// Replaces the token checks (issuer, audiences, whether `exp` is required).
    pub fn verify_options(mut self, options: VerifyOptions) -> Self {
        self.config.verify = options;
        self
    }

    pub fn unknown_kid_reload_every(mut self, every: Duration) -> Self {
        self.config.unknown_kid_reload_every = every;
        self
    }

    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.config.store_timeout = timeout;
        self
    }

    pub fn lock(mut self, lock: Arc<dyn RotationLock>) -> Self {
        self.lock = lock;
        self
    }

    pub fn audit(mut self, audit: Arc<dyn AuditSink>) -> Self {
        self.audit = audit;
        self
    }

    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn rng(mut self, rng: impl SecureRng + 'static) -> Self {
        self.rng = Box::new(rng);
        self
    }

    pub fn policy(mut self, policy: Policy) -> Self {
        self.config.policy = policy;
        self
    }

    pub fn folders(mut self, jwt: impl Into<String>, aes: impl Into<String>) -> Self {
        self.config.jwt_folder = jwt.into();
        self.config.aes_folder = aes.into();
        self
    }

    /// Refuses an unsafe policy or invalid folders.
    pub fn build(self) -> Result<KeyManager> {
        self.config.policy.validate()?;
        for folder in [&self.config.jwt_folder, &self.config.aes_folder] {
            ikit_common::secret::normalize_folder(folder)
                .map_err(|e| Error::UnsafePolicy(format!("invalid key folder: {e}")))?;
        }
        if self.config.jwt_folder == self.config.aes_folder {
            return Err(Error::UnsafePolicy("jwt and aes keys need different folders".into()));
        }
        // a check extends the lease before each write: the write and the next check must fit
        if let Some(lease) = self.lock.lease() {
            let needed = self.config.store_timeout.saturating_add(self.lock.op_timeout());
            if lease <= needed {
                return Err(Error::UnsafePolicy(format!(
                    "the rotation lock lease {lease:?} must exceed the store timeout {:?} plus \
                     the lock timeout {:?}, or the lock can expire during a write",
                    self.config.store_timeout,
                    self.lock.op_timeout()
                )));
            }
        }
        Ok(KeyManager {
            store: self.store,
            lock: self.lock,
            audit: self.audit,
            clock: self.clock,
            rng: Mutex::new(self.rng),
            config: self.config,
            ring: ArcSwap::from_pointee(KeyRing::default()),
            last: Mutex::new((None, None)),
            publisher: self.publisher,
            ring_updates: tokio::sync::watch::channel(0).0,
            unknown_kid_reload: tokio::sync::Mutex::new(None),
        })
    }
}

/// The key manager. Share it in an `Arc`; every method takes `&self`.
pub struct KeyManager {
    store: Arc<dyn KeyStore>,
    lock: Arc<dyn RotationLock>,
    audit: Arc<dyn AuditSink>,
    clock: Arc<dyn Clock>,
    rng: Mutex<Box<dyn SecureRng>>,
    config: ManagerConfig,
    ring: ArcSwap<KeyRing>,
    last: Mutex<(Option<LastOutcome>, Option<LastOutcome>)>,
    publisher: Option<Arc<dyn KeyChangePublisher>>,
    /// Counts installed rings.
    ring_updates: tokio::sync::watch::Sender<u64>,
    /// When (clock ms) an unknown kid last reloaded the ring; held while such a reload runs.
    unknown_kid_reload: tokio::sync::Mutex<Option<i64>>,
}

impl std::fmt::Debug for KeyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyManager").field("config", &self.config).finish_non_exhaustive()
    }
}

type Stored = BTreeMap<String, SecretValue>;

/// The folders a run holds as it left them in the store; the ring is built from these, and only
/// a folder the run did not touch is read again.
#[derive(Default)]
struct Held {
    jwt: Option<Stored>,
    aes: Option<Stored>,
}

/// Context of one run under the lock.
struct Run<'a> {
    guard: &'a mut Box<dyn LockGuard>,
    trigger: &'a str,
    reason: &'a str,
}

impl KeyManager {
    pub fn builder(store: Arc<dyn KeyStore>) -> KeyManagerBuilder {
        KeyManagerBuilder {
            store,
            lock: Arc::new(LocalLock::default()),
            audit: Arc::new(TracingAudit),
            clock: Arc::new(SystemClock),
            rng: Box::new(rand::rngs::OsRng),
            config: ManagerConfig::default(),
            publisher: None,
        }
    }

    pub fn config(&self) -> &ManagerConfig {
        &self.config
    }

    pub fn now(&self) -> i64 {
        self.clock.now_secs()
    }

    // ---------------------------------------------------------------- readers (never block)

    /// The ring as last loaded.
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.load_full()
    }

    /// Signs `claims` (a JSON object) with the current key, valid for `ttl`: sets `iat` to now,
    /// `exp` to now + `ttl`, and `iss` to the configured issuer when the claims have none. `ttl`
    /// must be within the policy's `max_token_ttl`, which the overlap is sized for; claims that
    /// set `exp` or `iat` themselves are refused.
    pub fn sign<T: Serialize>(&self, claims: &T, ttl: Duration) -> Result<String> {
        let max = self.config.policy.max_token_ttl;
        let secs = ttl.as_secs();
        if secs == 0 || i64::try_from(secs).map_or(true, |s| s > max) {
            return Err(Error::TokenTtl { requested: secs, max });
        }
        let mut claims = match serde_json::to_value(claims) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(Error::Sign("claims must be a json object".into())),
            Err(e) => return Err(Error::Sign(format!("claims: {e}"))),
        };
        for name in ["exp", "iat"] {
            if claims.contains_key(name) {
                return Err(Error::Sign(format!("claims set {name:?}: sign sets it from the ttl")));
            }
        }
        let now = self.clock.now_secs();
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), now.saturating_add(secs as i64).into());
        if let Some(issuer) = &self.config.verify.issuer {
            claims.entry("iss").or_insert_with(|| issuer.clone().into());
        }
        let ring = self.ring.load();
        let jwt = ring.jwt.as_ref().ok_or(Error::NotLoaded)?;
        jwt.keys.current.sign(&claims)
    }

    /// The token checks `verify` applies (the configured ones with the policy's skew).
    pub fn verify_options(&self) -> VerifyOptions {
        self.config.verify.clone().with_leeway(self.config.policy.clock_skew)
    }

    /// Verifies a token against every published key of the loaded ring, at the clock's time,
    /// with [`KeyManager::verify_options`].
    pub fn verify<T: DeserializeOwned>(&self, token: &str) -> Result<T> {
        let ring = self.ring.load();
        let jwt = ring.jwt.as_ref().ok_or(Error::NotLoaded)?;
        jwt.published.verify_at(token, self.clock.now_secs(), &self.verify_options())
    }

    /// [`KeyManager::verify`], and when the token names a kid the ring does not know, reloads
    /// the ring (at most once per `unknown_kid_reload_every`, concurrent callers sharing one
    /// reload) and verifies again: a key published by another replica is found at once.
    pub async fn verify_with_reload<T: DeserializeOwned>(&self, token: &str) -> Result<T> {
        match self.verify(token) {
            Err(Error::UnknownKid(_)) if self.reload_for_unknown_kid().await => self.verify(token),
            other => other,
        }
    }

    /// [`KeyManager::decrypt`] with the same reload on an unknown kid.
    pub async fn decrypt_with_reload(
        &self,
        ciphertext: &str,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        match self.decrypt(ciphertext, aad) {
            Err(Error::UnknownKid(_)) if self.reload_for_unknown_kid().await => {
                self.decrypt(ciphertext, aad)
            }
            other => other,
        }
    }

    /// Reloads for an unknown kid unless one did within the interval; true when the ring was
    /// reloaded (here or by a reload that finished while this caller waited).
    async fn reload_for_unknown_kid(&self) -> bool {
        let seen = *self.ring_updates.borrow();
        let mut last = self.unknown_kid_reload.lock().await;
        if *self.ring_updates.borrow() != seen {
            return true;
        }
        let now = self.clock.now_ms();
        let every =
            i64::try_from(self.config.unknown_kid_reload_every.as_millis()).unwrap_or(i64::MAX);
        if last.is_some_and(|at| now.saturating_sub(at) < every) {
            return false;
        }
        *last = Some(now);
        match self.reload().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "reload for an unknown kid failed");
                false
            }
        }
    }

    /// Changes whenever a ring is installed (load, reload, a rotation here): wait on it to know
    /// that a reload happened.
    pub fn ring_updates(&self) -> tokio::sync::watch::Receiver<u64> {
        self.ring_updates.subscribe()
    }

    /// `{"keys":[...]}`: current, next and previous keys.
    pub fn jwks(&self) -> Result<Value> {
        let ring = self.ring.load();
        Ok(ring.jwt.as_ref().ok_or(Error::NotLoaded)?.published.to_json())
    }

    /// Encrypts under the active key (nonce from the thread-local CSPRNG).
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<String> {
        self.encrypt_with(&mut rand::thread_rng(), plaintext, aad)
    }

    pub fn encrypt_with(
        &self,
        rng: &mut (impl RngCore + CryptoRng),
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<String> {
        let ring = self.ring.load();
        ring.aes.as_ref().ok_or(Error::NotLoaded)?.encrypt(rng, plaintext, aad)
    }

    /// Decrypts with any key that is not retired.
    pub fn decrypt(&self, ciphertext: &str, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let ring = self.ring.load();
        ring.aes.as_ref().ok_or(Error::NotLoaded)?.decrypt(ciphertext, aad)
    }

    /// Moves a ciphertext to the active key (unchanged when it is already there).
    pub fn reencrypt(&self, ciphertext: &str, aad: &[u8]) -> Result<String> {
        let ring = self.ring.load();
        ring.aes.as_ref().ok_or(Error::NotLoaded)?.reencrypt(
            &mut rand::thread_rng(),
            ciphertext,
            aad,
        )
    }

    // ---------------------------------------------------------------- loading

    /// Runs one store call within the store timeout.
    async fn bounded<T>(&self, what: &str, call: impl Future<Output = Result<T>>) -> Result<T> {
        let limit = self.config.store_timeout;
        tokio::time::timeout(limit, call)
            .await
            .unwrap_or_else(|_| Err(Error::Store(format!("{what} timed out after {limit:?}"))))
    }

    async fn read(&self, folder: &str) -> Result<Stored> {
        let read = self.bounded("read", self.store.read_folder(folder)).await?;
        Ok(read.into_iter().map(|(k, v)| (k, v.value)).collect())
    }

    fn build_ring(&self, jwt: &Stored, aes: &Stored) -> Result<KeyRing> {
        let jwt = JwtFolder::parse(jwt)?
            .resolve()?
            .map(|keys| JwtRing { published: keys.published(), keys });
        let aes = aes
            .get(aes_names::KEYS_MAP)
            .map(|m| AesKeyRing::from_keys_map(m.expose()))
            .transpose()?
            .filter(|r| r.active().is_some());
        Ok(KeyRing { jwt, aes, loaded_at: Some(self.clock.now_secs()) })
    }

    /// Re-reads both folders and swaps the ring in one atomic store. Never writes: this is the
    /// path a change under `/auth/*` (the webhook) takes.
    pub async fn reload(&self) -> Result<()> {
        self.install(Held::default()).await
    }

    /// Builds the ring from the held folders (reading the others) and swaps it in.
    async fn install(&self, held: Held) -> Result<()> {
        let jwt = match held.jwt {
            Some(stored) => stored,
            None => self.read(&self.config.jwt_folder).await?,
        };
        let aes = match held.aes {
            Some(stored) => stored,
            None => self.read(&self.config.aes_folder).await?,
        };
        let ring = self.build_ring(&jwt, &aes)?;
        self.ring.store(Arc::new(ring));
        self.ring_updates.send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }

    /// Whether a change at `path` (a secret, a folder, or a prefix glob such as `/auth/*`) can
    /// touch the key folders.
    pub fn affects_keys(&self, path: &str) -> bool {
        [&self.config.jwt_folder, &self.config.aes_folder]
            .into_iter()
            .any(|folder| path_touches(folder, path))
    }

    /// The webhook path: reloads the ring when `path` touches the key folders. Returns whether it
    /// reloaded.
    pub async fn on_change(&self, path: &str) -> Result<bool> {
        if !self.affects_keys(path) {
            return Ok(false);
        }
        self.reload().await?;
        Ok(true)
    }

    /// Loads the keys and brings the folders to a consistent state: creates keys in an empty
    /// store, adopts a lone private key, finishes a step a crash interrupted after its commit and
    /// drops material a crash left before its commit. Writes happen only under the lock; when
    /// another replica holds it, or the lock backend is down, the committed state is loaded as it
    /// is and `busy` is set.
    pub async fn load(&self) -> Result<RotateOutcome> {
        let mut outcome = RotateOutcome::default();
        let mut held = Held::default();
        let lock = match self.lock.try_acquire().await {
            Ok(lock) => lock,
            Err(e) => {
                // readers must not depend on the lock backend: load what is committed
                tracing::warn!(error = %e, "rotation lock unavailable, loading keys without repair");
                None
            }
        };
        match lock {
            None => outcome.busy = true,
            Some(mut guard) => {
                let result = async {
                    let mut run = Run { guard: &mut guard, trigger: "load", reason: "load" };
                    let ((_, jwt), mut steps) = self.settle_jwt(&mut run).await?;
                    let ((_, aes), settled) = self.settle_aes(&mut run).await?;
                    steps.extend(settled);
                    Ok::<_, Error>((steps, Held { jwt: Some(jwt), aes: Some(aes) }))
                }
                .await;
                let released = guard.release().await;
                (outcome.steps, held) = result?;
                released?;
            }
        }
        self.install(held).await?;
        Ok(outcome)
    }

    // ---------------------------------------------------------------- writing

    async fn apply(
        &self,
        run: &mut Run<'_>,
        folder: &str,
        stored: &mut Stored,
        writes: Vec<Write>,
    ) -> Result<usize> {
        let count = writes.len();
        for write in writes {
            run.guard.check().await?;
            match write {
                Write::Upsert(name, value) => {
                    let entry = vec![(name.clone(), value.clone())];
                    self.bounded("write", self.store.upsert(folder, entry)).await?;
                    stored.insert(name, value);
                }
                Write::Delete(names) => {
                    self.bounded("delete", self.store.delete(folder, names.clone())).await?;
                    for name in names {
                        stored.remove(&name);
                    }
                }
            }
        }
        Ok(count)
    }

    async fn audit(
        &self,
        (trigger, reason): (String, String),
        action: String,
        kids: Vec<String>,
        outcome: String,
    ) {
        self.audit
            .record(AuditEntry {
                at: self.clock.now_secs(),
                action,
                trigger,
                reason,
                kids,
                outcome,
            })
            .await;
    }

    /// Writes `layout` as one step: the commit name (when given) first, then the rest in layout
    /// order, then deletions. When the lock fences, the step is refused if the folder's last
    /// commit carries a newer token of the same lock, and its commit is stamped with ours.
    /// Audits the step, successful or not.
    #[allow(clippy::too_many_arguments)]
    async fn step(
        &self,
        run: &mut Run<'_>,
        kind: KeyKind,
        action: &str,
        kids: Vec<String>,
        folder: &str,
        stored: &mut Stored,
        layout: Layout,
        commit_first: Option<&str>,
    ) -> Result<AppliedStep> {
        let mut writes = layout.writes_from(stored);
        if let Some(commit) = commit_first
            && let Some(i) =
                writes.iter().position(|w| matches!(w, Write::Upsert(n, _) if n == commit))
        {
            let w = writes.remove(i);
            writes.insert(0, w);
        }
        let name = format!("{}.{action}", kind.as_str());
        let who = (run.trigger.to_owned(), run.reason.to_owned());
        let result = async {
            // a newer leader may have committed since this one read the folder: re-read its stamp
            if !writes.is_empty()
                && let Some(ours) = run.guard.fence()
            {
                let fresh = self.read(folder).await?;
                fence_writes(kind, &ours, stored_fence(kind, &fresh)?.as_ref(), &mut writes)?;
            }
            self.apply(run, folder, stored, writes).await
        }
        .await;
        match result {
            Ok(count) => {
                self.audit(who, name, kids.clone(), "ok".into()).await;
                if count > 0 {
                    self.announce(folder).await;
                }
                Ok(AppliedStep { kind, action: action.to_owned(), kids, writes: count })
            }
            Err(e) => {
                self.audit(who, name, kids, format!("failed: {e}")).await;
                Err(e)
            }
        }
    }

    /// Tells the other replicas that `folder` changed. A failure is logged and the rotation
    /// goes on: the step is committed, and replicas also reload on their timer.
    async fn announce(&self, folder: &str) {
        if let Some(publisher) = &self.publisher
            && let Err(e) = publisher.folder_changed(folder).await
        {
            tracing::warn!(folder, error = %e, "key folder change not published, replicas reload on their timer");
        }
    }

    fn generate_jwt(&self) -> Result<JwtKey> {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        JwtKey::generate(self.config.policy.jwt_algorithm, &mut *rng)
    }

    fn generate_aes(&self) -> AesKey {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        AesKey::generate(&mut *rng)
    }

    /// Reads the JWT folder and brings it to its committed state (creating or adopting keys when
    /// there is no state). Returns the keys, the folder as now stored, and the steps taken.
    async fn settle_jwt(&self, run: &mut Run<'_>) -> Result<((JwtKeys, Stored), Vec<AppliedStep>)> {
        let folder_name = self.config.jwt_folder.clone();
        let mut stored = self.read(&folder_name).await?;
        let folder = JwtFolder::parse(&stored)?;
        let now = self.clock.now_secs();
        let mut steps = Vec::new();
        let keys = match folder.resolve()? {
            Some(keys) => {
                let layout = keys.layout();
                if !layout.writes_from(&stored).is_empty() {
                    let kids = vec![keys.current.kid().to_owned()];
                    steps.push(
                        self.step(
                            run,
                            KeyKind::Jwt,
                            "repair",
                            kids,
                            &folder_name,
                            &mut stored,
                            layout,
                            None,
                        )
                        .await?,
                    );
                }
                keys
            }
            None => {
                // without a state only a lone current key is adopted; a key in the next slot
                // was never written by us without a state, and is never deleted silently
                if folder.privates.keys().any(|kid| folder.current_slot.as_ref() != Some(kid)) {
                    return Err(Error::State(
                        "next_private_key is set but there is no rotation_state: import the key \
                         or remove it"
                            .into(),
                    ));
                }
                let (current, action) =
                    match folder.current_slot.as_ref().and_then(|kid| folder.privates.get(kid)) {
                        Some(existing) => (existing.clone(), "adopt"),
                        None => (self.generate_jwt()?, "init"),
                    };
                let keys = JwtKeys {
                    state: JwtState::new(&current, now),
                    current,
                    next: None,
                    previous: Vec::new(),
                };
                let kids = vec![keys.current.kid().to_owned()];
                let layout = keys.layout();
                steps.push(
                    self.step(
                        run,
                        KeyKind::Jwt,
                        action,
                        kids,
                        &folder_name,
                        &mut stored,
                        layout,
                        None,
                    )
                    .await?,
                );
                keys
            }
        };
        Ok(((keys, stored), steps))
    }

    async fn settle_aes(
        &self,
        run: &mut Run<'_>,
    ) -> Result<((AesKeyRing, Stored), Vec<AppliedStep>)> {
        let folder_name = self.config.aes_folder.clone();
        let mut stored = self.read(&folder_name).await?;
        let mut steps = Vec::new();
        let mut ring = match stored.get(aes_names::KEYS_MAP) {
            Some(map) => AesKeyRing::from_keys_map(map.expose())?,
            None => AesKeyRing::default(),
        };
        if !ring.is_empty() {
            let layout = aes_layout(&ring);
            if !layout.writes_from(&stored).is_empty() {
                let kids = ring.active().map(|k| vec![k.key.kid().to_owned()]).unwrap_or_default();
                steps.push(
                    self.step(
                        run,
                        KeyKind::Aes,
                        "repair",
                        kids,
                        &folder_name,
                        &mut stored,
                        layout,
                        None,
                    )
                    .await?,
                );
            }
        }
        // no active key yet (empty store, or a first key that was added but not activated)
        if ring.active().is_none() {
            if ring.pending().is_none() {
                let key = self.generate_aes();
                let kid = key.kid().to_owned();
                ring = aes_add_pending(&ring, key, self.clock.now_secs());
                let layout = aes_layout(&ring);
                steps.push(
                    self.step(
                        run,
                        KeyKind::Aes,
                        "init",
                        vec![kid],
                        &folder_name,
                        &mut stored,
                        layout,
                        None,
                    )
                    .await?,
                );
            }
            let kid = ring.pending().map(|k| k.key.kid().to_owned()).unwrap_or_default();
            ring = aes_activate(&ring, &kid, self.clock.now_secs())?;
            let layout = aes_layout(&ring);
            steps.push(
                self.step(
                    run,
                    KeyKind::Aes,
                    "activate_first",
                    vec![kid],
                    &folder_name,
                    &mut stored,
                    layout,
                    None,
                )
                .await?,
            );
        }
        Ok(((ring, stored), steps))
    }

    // ---------------------------------------------------------------- rotation

    /// Runs the due steps of the rotation state machine for `target` under the lock. `force`
    /// skips the schedule: a rotation starts now (a next JWT key is published, a pending AES key
    /// added). It never skips the overlap or the activation delay: the new key signs or
    /// encrypts only once they have passed, in a later call, like any rotation. It never retires
    /// a JWT key early, and it is required to retire an AES key that is old enough by policy. To
    /// stop trusting a key at once, see [`KeyManager::revoke`]. Returns `busy` when another
    /// replica holds the lock, after reloading the ring (the holder is changing it).
    pub async fn rotate(
        &self,
        target: RotationTarget,
        force: bool,
        reason: &str,
        trigger: Trigger,
    ) -> Result<RotateOutcome> {
        let Some(mut guard) = self.lock.try_acquire().await? else {
            tracing::info!(
                trigger = trigger.as_str(),
                "rotation skipped: another replica holds the lock"
            );
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "reload after a busy rotation lock failed");
            }
            return Ok(RotateOutcome { busy: true, steps: Vec::new() });
        };
        let mut steps = Vec::new();
        let mut held = Held::default();
        let mut result = Ok(());
        for &kind in target.kinds() {
            let mut run = Run { guard: &mut guard, trigger: trigger.as_str(), reason };
            let r = match kind {
                KeyKind::Jwt => self
                    .rotate_jwt(&mut run, force, trigger, &mut steps)
                    .await
                    .map(|stored| held.jwt = Some(stored)),
                KeyKind::Aes => self
                    .rotate_aes(&mut run, force, trigger, &mut steps)
                    .await
                    .map(|stored| held.aes = Some(stored)),
            };
            let outcome = LastOutcome {
                at: self.clock.now_secs(),
                trigger,
                ok: r.is_ok(),
                detail: match &r {
                    Ok(()) => {
                        let done: Vec<&str> = steps
                            .iter()
                            .filter(|s| s.kind == kind)
                            .map(|s| s.action.as_str())
                            .collect();
                        if done.is_empty() { "nothing due".into() } else { done.join(", ") }
                    }
                    Err(e) => e.to_string(),
                },
            };
            {
                let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
                match kind {
                    KeyKind::Jwt => last.0 = Some(outcome),
                    KeyKind::Aes => last.1 = Some(outcome),
                }
            }
            if let Err(e) = r {
                result = Err(e);
                break;
            }
        }
        let released = guard.release().await;
        result?;
        released?;
        self.install(held).await?;
        Ok(RotateOutcome { busy: false, steps })
    }

    async fn rotate_jwt(
        &self,
        run: &mut Run<'_>,
        force: bool,
        trigger: Trigger,
        steps: &mut Vec<AppliedStep>,
    ) -> Result<Stored> {
        let folder = self.config.jwt_folder.clone();
        let ((mut keys, mut stored), settled) = self.settle_jwt(run).await?;
        steps.extend(settled);
        let mut force = force;
        let policy = &self.config.policy;
        for _ in 0..8 {
            let now = self.clock.now_secs();
            let (next, action, kids, commit_first) =
                match next_jwt_step(&keys.state, now, policy, force) {
                    JwtStep::Wait { .. } => break,
                    JwtStep::PublishNext => {
                        let next = self.generate_jwt()?;
                        let kids = vec![next.kid().to_owned()];
                        let state = keys.state.publish(&next, now);
                        (
                            JwtKeys { state, next: Some(next), ..keys.clone() },
                            "publish_next",
                            kids,
                            false,
                        )
                    }
                    JwtStep::Flip => {
                        let next = keys
                            .next
                            .clone()
                            .ok_or_else(|| Error::State("flip without a next key".into()))?;
                        let state = keys.state.flip(keys.current.public().to_json(), now)?;
                        let mut previous = keys.previous.clone();
                        previous.push(keys.current.public().clone());
                        let kids = vec![next.kid().to_owned(), keys.current.kid().to_owned()];
                        (JwtKeys { state, current: next, next: None, previous }, "flip", kids, true)
                    }
                    JwtStep::Retire(kids) => {
                        let state = keys.state.retire(&kids, now);
                        let previous = keys
                            .previous
                            .iter()
                            .filter(|p| !kids.iter().any(|k| k == p.kid()))
                            .cloned()
                            .collect();
                        (JwtKeys { state, previous, ..keys.clone() }, "retire", kids, true)
                    }
                };
            let layout = next.layout();
            let commit = commit_first.then_some(crate::rotation::jwt_names::ROTATION_STATE);
            steps.push(
                self.step(run, KeyKind::Jwt, action, kids, &folder, &mut stored, layout, commit)
                    .await?,
            );
            if action == "flip" {
                metrics::counter!("jwt_key_rotation_total", "method" => trigger.as_str())
                    .increment(1);
            }
            if action == "flip" || action == "publish_next" {
                // at most one rotation per call, forced or not
                force = false;
            }
            keys = next;
        }
        Ok(stored)
    }

    async fn rotate_aes(
        &self,
        run: &mut Run<'_>,
        force: bool,
        trigger: Trigger,
        steps: &mut Vec<AppliedStep>,
    ) -> Result<Stored> {
        let folder = self.config.aes_folder.clone();
        let ((mut ring, mut stored), settled) = self.settle_aes(run).await?;
        steps.extend(settled);
        let mut force = force;
        let policy = &self.config.policy;
        for _ in 0..8 {
            let now = self.clock.now_secs();
            let (next, action, kids) = match next_aes_step(&ring, now, policy, force) {
                AesStep::Wait { .. } => break,
                AesStep::AddNext => {
                    let key = self.generate_aes();
                    let kids = vec![key.kid().to_owned()];
                    (aes_add_pending(&ring, key, now), "add_next", kids)
                }
                AesStep::Activate(kid) => {
                    let mut kids = vec![kid.clone()];
                    kids.extend(ring.active().map(|k| k.key.kid().to_owned()));
                    (aes_activate(&ring, &kid, now)?, "activate", kids)
                }
                AesStep::Retire(kids) => (aes_retire(&ring, &kids, now), "retire", kids),
            };
            let layout = aes_layout(&next);
            steps.push(
                self.step(run, KeyKind::Aes, action, kids, &folder, &mut stored, layout, None)
                    .await?,
            );
            if action == "activate" {
                metrics::counter!("aes_key_rotation_total", "method" => trigger.as_str())
                    .increment(1);
            }
            if action == "activate" || action == "add_next" {
                // at most one rotation per call, forced or not
                force = false;
            }
            ring = next;
        }
        Ok(stored)
    }

    /// The kinds whose state machine has a step due now, by the loaded ring.
    pub fn due(&self) -> Vec<KeyKind> {
        let ring = self.ring.load();
        let (now, policy) = (self.clock.now_secs(), &self.config.policy);
        let mut due = Vec::new();
        match &ring.jwt {
            Some(jwt)
                if matches!(
                    next_jwt_step(&jwt.keys.state, now, policy, false),
                    JwtStep::Wait { .. }
                ) => {}
            _ => due.push(KeyKind::Jwt),
        }
        match &ring.aes {
            Some(aes) if matches!(next_aes_step(aes, now, policy, false), AesStep::Wait { .. }) => {
            }
            _ => due.push(KeyKind::Aes),
        }
        due
    }

    /// Runs the scheduled rotation for every kind that is due.
    /// A kind that fails does not keep the other from rotating; the first error is returned.
    pub async fn run_due(&self) -> Result<RotateOutcome> {
        let mut outcome = RotateOutcome::default();
        let mut first_error = None;
        for kind in self.due() {
            match self.rotate(kind.into(), false, "scheduled rotation", Trigger::Scheduled).await {
                Ok(r) => {
                    outcome.busy |= r.busy;
                    outcome.steps.extend(r.steps);
                }
                Err(e) => {
                    tracing::warn!(kind = kind.as_str(), error = %e, "scheduled rotation failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(outcome), Err)
    }

    // ---------------------------------------------------------------- checks, imports, health

    /// Checks the stored folders: JWKS holds what the state requires, public keys match private
    /// ones, `active_kid` is in `keys_map` and `current_key` is its material.
    pub async fn verify_rotation(&self) -> Result<RotationReport> {
        let jwt = self.read(&self.config.jwt_folder).await?;
        let aes = self.read(&self.config.aes_folder).await?;
        Ok(RotationReport { jwt: verify_jwt_folder(&jwt), aes: verify_aes_folder(&aes) })
    }

    async fn with_lock<T>(
        &self,
        f: impl AsyncFnOnce(&mut Run<'_>) -> Result<(T, Held)>,
        trigger: &str,
        reason: &str,
    ) -> Result<T> {
        let mut guard = self.lock.try_acquire().await?.ok_or_else(|| {
            Error::RotationInProgress("another replica holds the rotation lock".into())
        })?;
        let result = {
            let mut run = Run { guard: &mut guard, trigger, reason };
            f(&mut run).await
        };
        let released = guard.release().await;
        let (value, held) = result?;
        released?;
        self.install(held).await?;
        Ok(value)
    }

    /// Emergency revoke: stops trusting `kid` now and accepts what breaks. Audited as
    /// `<kind>.revoke` with trigger `emergency`; `reason` is recorded.
    ///
    /// JWT: the current key is replaced at once by the published next key, or by a new key
    /// (published, then promoted, in two committed steps), and is not kept as a previous key:
    /// its tokens stop verifying everywhere as soon as replicas reload, and verifiers caching
    /// JWKS reject the new key's tokens until their cache expires. A next or previous key is
    /// dropped from JWKS at once. AES: the active key is replaced at once by the pending key or
    /// a new one (no activation delay), and the revoked key is retired: ciphertexts under it no
    /// longer decrypt. Refused for an unknown kid.
    pub async fn revoke(&self, kind: KeyKind, kid: &str, reason: &str) -> Result<Vec<AppliedStep>> {
        self.with_lock(
            async |run: &mut Run<'_>| match kind {
                KeyKind::Jwt => {
                    let (steps, stored) = self.revoke_jwt(run, kid).await?;
                    Ok((steps, Held { jwt: Some(stored), aes: None }))
                }
                KeyKind::Aes => {
                    let (steps, stored) = self.revoke_aes(run, kid).await?;
                    Ok((steps, Held { jwt: None, aes: Some(stored) }))
                }
            },
            "emergency",
            reason,
        )
        .await
    }

    async fn revoke_jwt(&self, run: &mut Run<'_>, kid: &str) -> Result<(Vec<AppliedStep>, Stored)> {
        use crate::rotation::jwt_names::ROTATION_STATE;
        let folder = self.config.jwt_folder.clone();
        let ((mut keys, mut stored), mut steps) = self.settle_jwt(run).await?;
        let now = self.clock.now_secs();
        let revoked = vec![kid.to_owned()];
        if keys.current.kid() == kid {
            if keys.next.is_none() {
                let next = self.generate_jwt()?;
                let state = keys.state.publish(&next, now);
                let kids = vec![next.kid().to_owned()];
                keys = JwtKeys { state, next: Some(next), ..keys };
                let layout = keys.layout();
                steps.push(
                    self.step(
                        run,
                        KeyKind::Jwt,
                        "publish_next",
                        kids,
                        &folder,
                        &mut stored,
                        layout,
                        None,
                    )
                    .await?,
                );
            }
            let next = keys.next.clone().ok_or_else(|| Error::State("no next key".into()))?;
            let state = keys.state.promote_dropping_current(now)?;
            let kids = vec![kid.to_owned(), next.kid().to_owned()];
            let promoted = JwtKeys { state, current: next, next: None, previous: keys.previous };
            let layout = promoted.layout();
            steps.push(
                self.step(
                    run,
                    KeyKind::Jwt,
                    "revoke",
                    kids,
                    &folder,
                    &mut stored,
                    layout,
                    Some(ROTATION_STATE),
                )
                .await?,
            );
        } else if keys.next.as_ref().is_some_and(|n| n.kid() == kid)
            || keys.previous.iter().any(|p| p.kid() == kid)
        {
            let dropped = JwtKeys {
                state: keys.state.drop_kid(kid, now),
                next: keys.next.filter(|n| n.kid() != kid),
                previous: keys.previous.into_iter().filter(|p| p.kid() != kid).collect(),
                current: keys.current,
            };
            let layout = dropped.layout();
            steps.push(
                self.step(
                    run,
                    KeyKind::Jwt,
                    "revoke",
                    revoked,
                    &folder,
                    &mut stored,
                    layout,
                    Some(ROTATION_STATE),
                )
                .await?,
            );
        } else {
            return Err(Error::UnknownKid(kid.to_owned()));
        }
        Ok((steps, stored))
    }

    async fn revoke_aes(&self, run: &mut Run<'_>, kid: &str) -> Result<(Vec<AppliedStep>, Stored)> {
        let folder = self.config.aes_folder.clone();
        let ((mut ring, mut stored), mut steps) = self.settle_aes(run).await?;
        let now = self.clock.now_secs();
        if ring.get(kid).is_none() {
            return Err(Error::UnknownKid(kid.to_owned()));
        }
        let mut kids = vec![kid.to_owned()];
        if ring.active().is_some_and(|a| a.key.kid() == kid) {
            // keys_map carries the material and is the commit: the new key, its activation and
            // the retirement of the revoked one land in one write
            let replacement = match ring.pending().filter(|p| p.key.kid() != kid) {
                Some(pending) => pending.key.kid().to_owned(),
                None => {
                    let key = self.generate_aes();
                    let new_kid = key.kid().to_owned();
                    ring = aes_add_pending(&ring, key, now);
                    new_kid
                }
            };
            ring = aes_activate(&ring, &replacement, now)?;
            kids.push(replacement);
        }
        let ring = aes_revoke(&ring, kid, now)?;
        steps.push(
            self.step(
                run,
                KeyKind::Aes,
                "revoke",
                kids,
                &folder,
                &mut stored,
                aes_layout(&ring),
                None,
            )
            .await?,
        );
        Ok((steps, stored))
    }

    /// Imports a signing key (PEM: PKCS#8, PKCS#1 or SEC1). Into an empty folder it becomes the
    /// current key; otherwise it is published as the next key and flips after the overlap like
    /// any rotation. Refused while another next key is published.
    pub async fn import_jwt_key(&self, pem: &SecretValue, reason: &str) -> Result<AppliedStep> {
        let key = JwtKey::from_pem(pem.expose())?;
        self.with_lock(
            async |run: &mut Run<'_>| {
                let folder = self.config.jwt_folder.clone();
                let mut stored = self.read(&folder).await?;
                let parsed = JwtFolder::parse(&stored)?;
                let now = self.clock.now_secs();
                let kids = vec![key.kid().to_owned()];
                let keys = match parsed.resolve()? {
                    None => JwtKeys {
                        state: JwtState::new(&key, now),
                        current: key.clone(),
                        next: None,
                        previous: Vec::new(),
                    },
                    Some(keys)
                        if keys.current.kid() == key.kid()
                            || keys.next.as_ref().is_some_and(|n| n.kid() == key.kid()) =>
                    {
                        keys
                    }
                    Some(keys) if keys.next.is_some() => {
                        return Err(Error::RotationInProgress(
                            "a next key is already published".into(),
                        ));
                    }
                    Some(keys) => {
                        let state = keys.state.publish(&key, now);
                        JwtKeys { state, next: Some(key.clone()), ..keys }
                    }
                };
                let layout = keys.layout();
                let step = self
                    .step(run, KeyKind::Jwt, "import", kids, &folder, &mut stored, layout, None)
                    .await?;
                Ok((step, Held { jwt: Some(stored), aes: None }))
            },
            "import",
            reason,
        )
        .await
    }

    /// Imports AES keys (kid -> base64 key) and makes `active` the active key; the keys already
    /// there stay and the former active key becomes decrypt-only. A kid that exists with other
    /// material is refused.
    pub async fn import_aes_keys(
        &self,
        keys: &BTreeMap<String, SecretValue>,
        active: &str,
        reason: &str,
    ) -> Result<AppliedStep> {
        let imported = keys
            .iter()
            .map(|(kid, value)| AesKey::from_base64(kid.clone(), value.expose()))
            .collect::<Result<Vec<_>>>()?;
        self.with_lock(
            async |run: &mut Run<'_>| {
                let folder = self.config.aes_folder.clone();
                let mut stored = self.read(&folder).await?;
                let mut ring = match stored.get(aes_names::KEYS_MAP) {
                    Some(map) => AesKeyRing::from_keys_map(map.expose())?,
                    None => AesKeyRing::default(),
                };
                let now = self.clock.now_secs();
                for key in &imported {
                    match ring.get(key.kid()) {
                        Some(existing) if existing.key != *key => {
                            return Err(Error::InvalidKey(format!(
                                "kid {:?} already exists with other key material",
                                key.kid()
                            )));
                        }
                        Some(_) => {}
                        None => ring.put(RingKey {
                            key: key.clone(),
                            state: AesKeyState::DecryptOnly,
                            created_at: now,
                            activated_at: None,
                            deactivated_at: Some(now),
                            retired_at: None,
                        }),
                    }
                }
                let ring = aes_activate(&ring, active, now)?;
                let kids = imported.iter().map(|k| k.kid().to_owned()).collect();
                let step = self
                    .step(
                        run,
                        KeyKind::Aes,
                        "import",
                        kids,
                        &folder,
                        &mut stored,
                        aes_layout(&ring),
                        None,
                    )
                    .await?;
                Ok((step, Held { jwt: None, aes: Some(stored) }))
            },
            "import",
            reason,
        )
        .await
    }

    /// Key ages, state, next step and last outcome, from the loaded ring.
    pub fn health(&self) -> KeysHealth {
        let ring = self.ring.load();
        let (now, policy) = (self.clock.now_secs(), &self.config.policy);
        let step_at = |wait: Option<i64>| wait.unwrap_or(now);
        let jwt = ring.jwt.as_ref().map(|j| {
            let state = &j.keys.state;
            JwtHealth {
                algorithm: state.algorithm.as_str().to_owned(),
                current_kid: state.current_kid.clone(),
                current_age_seconds: now - state.current_since,
                phase: state.phase().as_str().to_owned(),
                published_kids: j.published.kids().map(str::to_owned).collect(),
                next_step_at: step_at(match next_jwt_step(state, now, policy, false) {
                    JwtStep::Wait { until } => Some(until),
                    _ => None,
                }),
            }
        });
        let aes = ring.aes.as_ref().map(|a| {
            let count = |s: AesKeyState| a.keys().filter(|k| k.state == s).count();
            AesHealth {
                active_kid: a.active().map(|k| k.key.kid().to_owned()),
                active_age_seconds: a
                    .active()
                    .map(|k| now - k.activated_at.unwrap_or(k.created_at)),
                pending_kid: a.pending().map(|k| k.key.kid().to_owned()),
                decrypt_only: count(AesKeyState::DecryptOnly),
                retired: count(AesKeyState::Retired),
                next_step_at: step_at(match next_aes_step(a, now, policy, false) {
                    AesStep::Wait { until } => Some(until),
                    _ => None,
                }),
            }
        });
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        KeysHealth { loaded_at: ring.loaded_at, jwt, aes, last_jwt: last.0, last_aes: last.1 }
    }

    /// The JWT phase of the loaded ring.
    pub fn jwt_phase(&self) -> Option<JwtPhase> {
        self.ring.load().jwt.as_ref().map(|j| j.keys.state.phase())
    }
}

/// Whether a change at `changed` can touch `folder`: the folder itself, a secret in it, or a
/// parent folder (with or without a trailing `*`).
pub fn path_touches(folder: &str, changed: &str) -> bool {
    let folder = folder.trim_end_matches('/');
    let changed = changed.trim().trim_end_matches('*').trim_end_matches('/');
    changed.is_empty()
        || changed == folder
        || folder.strip_prefix(changed).is_some_and(|rest| rest.starts_with('/'))
        || changed.strip_prefix(folder).is_some_and(|rest| rest.starts_with('/'))
}

/// Every `every` (the first tick at once) until `shutdown` turns true (or its sender drops):
/// reloads the ring, so a replica that did not rotate picks up what another committed, then
/// runs [`KeyManager::run_due`]. Each tick's outcome is offered on the returned channel (dropped
/// when nobody reads it); errors are logged and retried at the next tick.
///
/// `every` bounds how stale this replica's ring can be: keep it well under the policy's
/// `aes_activation_delay` and `jwt_overlap - jwks_cache_max_age` (minutes, not hours).
pub fn spawn_scheduler(
    manager: Arc<KeyManager>,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> (tokio::task::JoinHandle<()>, tokio::sync::mpsc::Receiver<RotateOutcome>) {
    let (reports, rx) = tokio::sync::mpsc::channel(16);
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    if let Err(e) = manager.reload().await {
                        tracing::warn!(error = %e, "scheduled key ring reload failed");
                    }
                    match manager.run_due().await {
                        Ok(outcome) => {
                            let _ = reports.try_send(outcome);
                        }
                        Err(e) => tracing::warn!(error = %e, "scheduled key rotation failed"),
                    }
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
    });
    (task, rx)
}

#[cfg(test)]
mod tests {
    use super::path_touches;

    #[test]
    fn changes_under_auth_touch_the_key_folders() {
        let yes = [
            "/auth/*",
            "/auth",
            "/auth/",
            "/",
            "*",
            "/auth/jwt",
            "/auth/jwt/current_private_key",
            "/auth/jwt/*",
        ];
        for path in yes {
            assert!(path_touches("/auth/jwt", path), "{path}");
        }
        for path in ["/authx", "/auth/aes", "/auth/jwtx/k", "/app/*", "/auth/aes/keys_map"] {
            assert!(!path_touches("/auth/jwt", path), "{path}");
        }
    }
}
