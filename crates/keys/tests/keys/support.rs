use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use ikit_common::SecretValue;
use ikit_common::clock::ManualClock;
use ikit_keys::audit::MemoryAudit;
use ikit_keys::jwt::JwtKey;
use ikit_keys::lock::RotationLock;
use ikit_keys::policy::Policy;
use ikit_keys::store::{Folder, KeyStore};
use ikit_keys::{Error, FileStore, KeyManager, RotationTarget, Trigger};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;

pub(crate) const T0: i64 = 1_800_000_000;

/// The lifetime of the tokens the tests sign through the manager.
pub(crate) const TTL: Duration = Duration::from_secs(600);

/// A token signed directly by the private key in `slot` of the JWT folder (`current` or
/// `next`), with an `exp` 1000 days after `T0`: for tests about which keys verify across clock
/// jumps longer than any token the manager signs.
pub(crate) async fn long_lived_token(store: &dyn KeyStore, slot: &str, claims: Value) -> String {
    let folder = store.read_folder("/auth/jwt").await.unwrap();
    let key = JwtKey::from_pem(folder[&format!("{slot}_private_key")].value.expose()).unwrap();
    let mut claims = claims;
    claims["exp"] = (T0 + 1000 * 86_400).into();
    key.sign(&claims).unwrap()
}

/// A forced rotation carried to its end the only way there is: the forced call publishes (adds)
/// the next key, and a call once the overlap (and activation delay) has passed flips
/// (activates) it. Returns the actions of both calls.
pub(crate) async fn rotate_fully(
    env: &Env,
    m: &KeyManager,
    target: RotationTarget,
    trigger: Trigger,
) -> Vec<String> {
    let first = m.rotate(target, true, "rotate now", trigger).await.unwrap();
    env.clock.advance(policy().jwt_overlap.max(policy().aes_activation_delay));
    let second = m.rotate(target, false, "rotate now", trigger).await.unwrap();
    first.steps.into_iter().chain(second.steps).map(|s| s.action).collect()
}

/// Wraps a store and fails exactly one write: the one with index `fail_at` (0-based) counted
/// from `arm`. The failed write is not performed, as if the process stopped just before it.
pub(crate) struct FailingStore {
    inner: Arc<dyn KeyStore>,
    fail_at: AtomicI64,
    writes: AtomicUsize,
    reads: AtomicUsize,
    injected: AtomicBool,
}

impl FailingStore {
    pub(crate) fn new(inner: Arc<dyn KeyStore>) -> Self {
        Self {
            inner,
            fail_at: AtomicI64::new(-1),
            writes: AtomicUsize::new(0),
            reads: AtomicUsize::new(0),
            injected: AtomicBool::new(false),
        }
    }

    pub(crate) fn arm(&self, index: usize) {
        self.writes.store(0, Ordering::SeqCst);
        self.injected.store(false, Ordering::SeqCst);
        self.fail_at.store(index as i64, Ordering::SeqCst);
    }

    pub(crate) fn injected(&self) -> bool {
        self.injected.load(Ordering::SeqCst)
    }

    pub(crate) fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    /// Folder reads since the store was made.
    pub(crate) fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    fn gate(&self) -> Result<(), Error> {
        let index = self.writes.fetch_add(1, Ordering::SeqCst) as i64;
        if index == self.fail_at.load(Ordering::SeqCst) {
            self.injected.store(true, Ordering::SeqCst);
            return Err(Error::Store("injected failure".into()));
        }
        Ok(())
    }
}

impl KeyStore for FailingStore {
    fn read_folder<'a>(&'a self, folder: &'a str) -> BoxFuture<'a, ikit_keys::Result<Folder>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_folder(folder)
    }

    fn upsert<'a>(
        &'a self,
        folder: &'a str,
        entries: Vec<(String, SecretValue)>,
    ) -> BoxFuture<'a, ikit_keys::Result<()>> {
        Box::pin(async move {
            self.gate()?;
            self.inner.upsert(folder, entries).await
        })
    }

    fn delete<'a>(
        &'a self,
        folder: &'a str,
        keys: Vec<String>,
    ) -> BoxFuture<'a, ikit_keys::Result<()>> {
        Box::pin(async move {
            self.gate()?;
            self.inner.delete(folder, keys).await
        })
    }
}

/// The shared manual clock, driven in whole seconds as the rotation policy is written.
#[derive(Clone)]
pub(crate) struct SecondsClock(Arc<ManualClock>);

impl SecondsClock {
    pub(crate) fn at(secs: i64) -> Self {
        Self(Arc::new(ManualClock::new(secs * 1000)))
    }

    pub(crate) fn set(&self, secs: i64) {
        self.0.set(secs * 1000);
    }

    pub(crate) fn advance(&self, secs: i64) {
        self.0.advance(secs * 1000);
    }

    pub(crate) fn shared(&self) -> Arc<ManualClock> {
        self.0.clone()
    }
}

pub(crate) struct Env {
    _dir: tempfile::TempDir,
    pub(crate) store: Arc<FileStore>,
    pub(crate) clock: SecondsClock,
    pub(crate) audit: Arc<MemoryAudit>,
}

impl Env {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(FileStore::new(dir.path()));
        Self {
            _dir: dir,
            store,
            clock: SecondsClock::at(T0),
            audit: Arc::new(MemoryAudit::default()),
        }
    }

    pub(crate) fn manager(&self, seed: u64) -> KeyManager {
        self.manager_on(self.store.clone(), seed, None)
    }

    pub(crate) fn manager_on(
        &self,
        store: Arc<dyn KeyStore>,
        seed: u64,
        lock: Option<Arc<dyn RotationLock>>,
    ) -> KeyManager {
        let mut builder = KeyManager::builder(store)
            .store_timeout(Duration::from_secs(20))
            .clock(self.clock.shared())
            .audit(self.audit.clone())
            .rng(StdRng::seed_from_u64(seed))
            .policy(policy());
        if let Some(lock) = lock {
            builder = builder.lock(lock);
        }
        builder.build().expect("safe policy")
    }

    /// Every secret of a folder as plain text (for comparisons).
    pub(crate) async fn dump(&self, folder: &str) -> BTreeMap<String, String> {
        self.store
            .read_folder(folder)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.value.expose().to_owned()))
            .collect()
    }

    pub(crate) fn actions(&self) -> Vec<String> {
        self.audit.entries().into_iter().map(|e| e.action).collect()
    }
}

pub(crate) fn policy() -> Policy {
    Policy::default()
}
