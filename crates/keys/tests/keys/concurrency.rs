//! One leader: three replicas rotating at the same moment give exactly one rotation, with real
//! PostgreSQL advisory locks and real Redis locks; a leader with a stale fencing token is refused.
//!
//! The contenders are made to overlap for real: a lock holder's first read of the store returns
//! only once every contender has either read the folder too or been turned away by the lock. So
//! with a lock that excludes, the holder waits for the two others to be refused (busy == 2); with
//! no exclusion (the always-grant control), all three read the same state and all three publish.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use ikit_common::SecretValue;
use ikit_common::testsuite::{TestDatabase, TestRedis};
use ikit_keys::lock::{Fence, LockGuard, PgAdvisoryLock, RedisLock, RotationLock};
use ikit_keys::rotation::{JwtState, aes_names, jwt_names};
use ikit_keys::store::{Folder, KeyStore};
use ikit_keys::{Error, KeyManager, RotationTarget, Trigger};
use tokio::sync::watch;

use crate::support::{Env, policy};

const LOCK: &str = "ikit-keys-rotation";
/// A safety net only: a meeting that does not happen fails the test instead of hanging it.
const MEETING_TIMEOUT: Duration = Duration::from_secs(30);

/// A count of contenders that have reached the meeting point.
#[derive(Clone)]
struct Meeting(Arc<watch::Sender<usize>>);

impl Meeting {
    fn new() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }

    fn arrive(&self) {
        self.0.send_modify(|n| *n += 1);
    }

    async fn wait_for(&self, count: usize) -> ikit_keys::Result<()> {
        let mut rx = self.0.subscribe();
        let met = matches!(
            tokio::time::timeout(MEETING_TIMEOUT, rx.wait_for(|n| *n >= count)).await,
            Ok(Ok(_))
        );
        if met {
            Ok(())
        } else {
            Err(Error::Store(format!("only {} of {count} contenders met", *rx.borrow())))
        }
    }
}

/// A lock that counts a contender as arrived when it is turned away.
struct CountingLock {
    inner: Arc<dyn RotationLock>,
    meeting: Meeting,
}

impl RotationLock for CountingLock {
    fn try_acquire(&self) -> BoxFuture<'_, ikit_keys::Result<Option<Box<dyn LockGuard>>>> {
        Box::pin(async move {
            let guard = self.inner.try_acquire().await?;
            if guard.is_none() {
                self.meeting.arrive();
            }
            Ok(guard)
        })
    }
}

/// One contender's view of the store: its first read counts it as arrived and returns only when
/// `needed` contenders have arrived. Later reads and all writes pass through.
struct GatedStore {
    inner: Arc<dyn KeyStore>,
    meeting: Meeting,
    needed: usize,
    first: AtomicBool,
}

impl GatedStore {
    fn new(inner: Arc<dyn KeyStore>, meeting: Meeting, needed: usize) -> Self {
        Self { inner, meeting, needed, first: AtomicBool::new(true) }
    }
}

impl KeyStore for GatedStore {
    fn read_folder<'a>(&'a self, folder: &'a str) -> BoxFuture<'a, ikit_keys::Result<Folder>> {
        Box::pin(async move {
            let read = self.inner.read_folder(folder).await?;
            if self.first.swap(false, Ordering::SeqCst) {
                self.meeting.arrive();
                self.meeting.wait_for(self.needed).await?;
            }
            Ok(read)
        })
    }

    fn upsert<'a>(
        &'a self,
        folder: &'a str,
        entries: Vec<(String, SecretValue)>,
    ) -> BoxFuture<'a, ikit_keys::Result<()>> {
        self.inner.upsert(folder, entries)
    }

    fn delete<'a>(
        &'a self,
        folder: &'a str,
        keys: Vec<String>,
    ) -> BoxFuture<'a, ikit_keys::Result<()>> {
        self.inner.delete(folder, keys)
    }
}

/// Test-only: grants every acquisition, like having no lock at all. `fence` is what its guards
/// stamp (none: nothing is fenced either).
struct AlwaysGrant {
    fence: Option<Fence>,
    acquired: AtomicU64,
}

impl AlwaysGrant {
    fn new(fence: Option<Fence>) -> Self {
        Self { fence, acquired: AtomicU64::new(0) }
    }

    fn with_token(token: u64) -> Self {
        Self::new(Some(Fence { scope: "test".into(), token }))
    }
}

struct GrantedGuard(Option<Fence>);

impl RotationLock for AlwaysGrant {
    fn try_acquire(&self) -> BoxFuture<'_, ikit_keys::Result<Option<Box<dyn LockGuard>>>> {
        Box::pin(async move {
            self.acquired.fetch_add(1, Ordering::SeqCst);
            Ok(Some(Box::new(GrantedGuard(self.fence.clone())) as Box<dyn LockGuard>))
        })
    }
}

impl LockGuard for GrantedGuard {
    fn fence(&self) -> Option<Fence> {
        self.0.clone()
    }

    fn check(&mut self) -> BoxFuture<'_, ikit_keys::Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, ikit_keys::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

struct Contention {
    /// `publish_next` steps the contenders report.
    published: usize,
    busy: usize,
    /// `jwt.publish_next` steps audited as done (also those of a contender that failed later).
    audited_publishes: usize,
    /// Contenders whose rotation failed.
    failed: usize,
    managers: Vec<Arc<KeyManager>>,
}

/// Three replicas, due for a JWT rotation, all start it at once and overlap as described above.
async fn three_replicas_contend(env: &Env, locks: [Arc<dyn RotationLock>; 3]) -> Contention {
    env.manager(1).load().await.unwrap();
    env.clock.advance(policy().jwt_rotation_interval);
    let meeting = Meeting::new();
    let managers: Vec<_> = locks
        .into_iter()
        .enumerate()
        .map(|(i, lock)| {
            let store = Arc::new(GatedStore::new(env.store.clone(), meeting.clone(), 3));
            let lock = Arc::new(CountingLock { inner: lock, meeting: meeting.clone() });
            Arc::new(env.manager_on(store, 10 + i as u64, Some(lock)))
        })
        .collect();
    let tasks: Vec<_> = managers
        .iter()
        .cloned()
        .map(|m| {
            tokio::spawn(async move {
                m.rotate(RotationTarget::Jwt, false, "due", Trigger::Scheduled).await
            })
        })
        .collect();
    let (mut published, mut busy, mut failed) = (0, 0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(outcome) => {
                busy += usize::from(outcome.busy);
                published += outcome.steps.iter().filter(|s| s.action == "publish_next").count();
            }
            Err(_) => failed += 1,
        }
    }
    let audited_publishes = env
        .audit
        .entries()
        .iter()
        .filter(|e| e.action == "jwt.publish_next" && e.outcome == "ok")
        .count();
    Contention { published, busy, audited_publishes, failed, managers }
}

async fn jwt_fence(env: &Env) -> Option<Fence> {
    let state = env.dump("/auth/jwt").await[jwt_names::ROTATION_STATE].clone();
    JwtState::parse(&state).unwrap().fence
}

async fn assert_exactly_one_rotation(env: &Env, c: &Contention, scope: &str) {
    assert_eq!(c.failed, 0);
    assert_eq!(c.busy, 2, "two replicas were turned away by the lock");
    assert_eq!(c.published, 1, "exactly one replica published a next key");
    assert_eq!(c.audited_publishes, 1, "{:?}", env.actions());
    let checker = &c.managers[0];
    assert!(checker.verify_rotation().await.unwrap().ok());
    checker.reload().await.unwrap();
    assert_eq!(checker.jwks().unwrap()["keys"].as_array().unwrap().len(), 2);
    let fence = jwt_fence(env).await.expect("the commit is fenced");
    assert_eq!(fence.scope, scope);
    assert!(fence.token > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn three_concurrent_rotations_with_postgres_lock_give_one() {
    let db = TestDatabase::postgres().await;
    let locks: [Arc<dyn RotationLock>; 3] = std::array::from_fn(|_| {
        Arc::new(PgAdvisoryLock::from_url(db.url(), LOCK).unwrap()) as Arc<dyn RotationLock>
    });
    let env = Env::new();
    let contention = three_replicas_contend(&env, locks).await;
    let scope = format!("postgres:{}", ikit_keys::lock::lock_id(LOCK));
    assert_exactly_one_rotation(&env, &contention, &scope).await;
    db.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn three_concurrent_rotations_with_redis_lock_give_one() {
    let redis = TestRedis::new().await;
    let locks: [Arc<dyn RotationLock>; 3] = std::array::from_fn(|_| {
        Arc::new(RedisLock::new(redis.client().clone(), redis.key(LOCK), 30_000))
            as Arc<dyn RotationLock>
    });
    let env = Env::new();
    let contention = three_replicas_contend(&env, locks).await;
    assert_exactly_one_rotation(&env, &contention, &format!("redis:{}", redis.key(LOCK))).await;
    redis.cleanup().await.unwrap();
}

/// The control: with a lock that grants everyone, the same contention rotates more than once,
/// so the two tests above fail if their lock stops excluding.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn three_concurrent_rotations_without_exclusion_rotate_more_than_once() {
    let env = Env::new();
    let grant = Arc::new(AlwaysGrant::new(None));
    let locks: [Arc<dyn RotationLock>; 3] =
        std::array::from_fn(|_| grant.clone() as Arc<dyn RotationLock>);
    let c = three_replicas_contend(&env, locks).await;
    assert_eq!(grant.acquired.load(Ordering::SeqCst), 3);
    assert_eq!(c.busy, 0);
    assert!(c.audited_publishes > 1, "{:?}", env.actions());
    assert_eq!(c.audited_publishes, 3, "all three read the stable state and published");
}

/// A leader reads the folder, pauses (long enough for its lock to pass to another replica), and
/// resumes still believing it leads: its token is older than the one the newer leader committed
/// under, so its write is refused and the newer leader's next key stays published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_leader_with_an_older_token_is_refused() {
    let env = Env::new();
    env.manager(1).load().await.unwrap();
    env.clock.advance(policy().jwt_rotation_interval);

    let resume = Meeting::new();
    let paused = Arc::new(GatedStore::new(env.store.clone(), resume.clone(), 2));
    let stale = Arc::new(env.manager_on(paused, 2, Some(Arc::new(AlwaysGrant::with_token(5)))));
    let stale_run = tokio::spawn({
        let stale = stale.clone();
        async move { stale.rotate(RotationTarget::Jwt, false, "due", Trigger::Scheduled).await }
    });
    // the stale leader has read the stable folder and waits
    let mut rx = resume.0.subscribe();
    tokio::time::timeout(MEETING_TIMEOUT, rx.wait_for(|n| *n >= 1)).await.unwrap().unwrap();

    let newer = env.manager_on(env.store.clone(), 3, Some(Arc::new(AlwaysGrant::with_token(7))));
    let outcome = newer.rotate(RotationTarget::Jwt, false, "due", Trigger::Scheduled).await;
    assert_eq!(outcome.unwrap().steps.len(), 1);
    assert_eq!(jwt_fence(&env).await, Some(Fence { scope: "test".into(), token: 7 }));
    let committed = env.dump("/auth/jwt").await;

    resume.arrive();
    let result = stale_run.await.unwrap();
    assert!(matches!(result, Err(Error::Fenced { ours: 5, stored: 7 })), "{result:?}");
    assert_eq!(env.dump("/auth/jwt").await, committed, "the stale leader wrote nothing");
    let audit = env.audit.entries();
    let done = audit.iter().filter(|e| e.action == "jwt.publish_next" && e.outcome == "ok");
    assert_eq!(done.count(), 1);
    assert!(newer.verify_rotation().await.unwrap().ok());

    // the AES commit is fenced the same way
    newer.rotate(RotationTarget::Aes, true, "rotate", Trigger::Manual).await.unwrap();
    let aes = env.dump("/auth/aes").await;
    assert_eq!(aes[aes_names::ROTATION_FENCE], r#"{"scope":"test","token":7}"#);
    // past the overlap both the next JWT and the pending AES key are due to take over
    env.clock.advance(policy().jwt_overlap);
    let stale = env.manager_on(env.store.clone(), 4, Some(Arc::new(AlwaysGrant::with_token(5))));
    let result = stale.rotate(RotationTarget::Aes, true, "rotate", Trigger::Manual).await;
    assert!(matches!(result, Err(Error::Fenced { ours: 5, stored: 7 })), "{result:?}");
    assert_eq!(env.dump("/auth/aes").await, aes);

    // a later leader goes on and stamps its own token
    let later = env.manager_on(env.store.clone(), 5, Some(Arc::new(AlwaysGrant::with_token(8))));
    later.rotate(RotationTarget::Aes, true, "rotate", Trigger::Manual).await.unwrap();
    later.rotate(RotationTarget::Jwt, true, "rotate", Trigger::Manual).await.unwrap();
    assert_eq!(jwt_fence(&env).await.map(|f| f.token), Some(8));
    let aes = env.dump("/auth/aes").await;
    assert_eq!(aes[aes_names::ROTATION_FENCE], r#"{"scope":"test","token":8}"#);
    assert!(later.verify_rotation().await.unwrap().ok());
}

#[tokio::test]
async fn postgres_lock_excludes_a_second_holder_and_notices_a_lost_session() {
    let db = TestDatabase::postgres().await;
    let (a, b) = (
        PgAdvisoryLock::from_url(db.url(), LOCK).unwrap(),
        PgAdvisoryLock::from_url(db.url(), LOCK).unwrap(),
    );
    let mut first = a.try_acquire().await.unwrap().expect("free lock");
    first.check().await.unwrap();
    assert!(b.try_acquire().await.unwrap().is_none(), "held by the first");
    let token = first.fence().unwrap().token;
    first.release().await.unwrap();
    let mut second = b.try_acquire().await.unwrap().expect("released lock");
    assert!(second.fence().unwrap().token > token, "fencing tokens grow");

    // the holder's session dies (crash, network): it must notice before writing, and the
    // server frees the lock for the next leader
    let pids: Vec<i32> = sqlx::query_scalar(
        "select pid from pg_locks where locktype = 'advisory' and granted \
         and database = (select oid from pg_database where datname = current_database())",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(pids.len(), 1);
    let _: bool = sqlx::query_scalar("select pg_terminate_backend($1)")
        .bind(pids[0])
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(matches!(second.check().await, Err(Error::LockLost)));
    let mut third = None;
    for _ in 0..200 {
        third = a.try_acquire().await.unwrap();
        if third.is_some() {
            break;
        }
    }
    third.expect("lock freed when its session ended").release().await.unwrap();
    drop(second);
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn redis_lock_detects_a_lost_lock_and_fences() {
    let redis = TestRedis::new().await;
    let key = redis.key(LOCK);
    let lock = RedisLock::new(redis.client().clone(), key.clone(), 30_000);
    let mut held = lock.try_acquire().await.unwrap().expect("free lock");
    held.check().await.unwrap();
    assert!(lock.try_acquire().await.unwrap().is_none());
    // the key expires or is taken over: the holder must notice before writing
    let mut conn = redis.connection().await.unwrap();
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
    let next = lock.try_acquire().await.unwrap().expect("taken over");
    assert!(next.fence().unwrap().token > held.fence().unwrap().token);
    assert!(matches!(held.check().await, Err(Error::LockLost)));
    // the old holder's release does not free the new holder's lock
    held.release().await.unwrap();
    assert!(lock.try_acquire().await.unwrap().is_none());
    next.release().await.unwrap();
    redis.cleanup().await.unwrap();
}
