//! One leader: three replicas rotating at once give exactly one rotation, with real PostgreSQL
//! advisory locks and real Redis locks.

use std::sync::Arc;

use ikit_common::testsuite::{TestDatabase, TestRedis};
use ikit_keys::lock::{PgAdvisoryLock, RedisLock, RotationLock};
use ikit_keys::{Error, RotationTarget, Trigger};

use crate::support::{Env, policy};

const LOCK: &str = "ikit-keys-rotation";

async fn three_replicas_rotate_once(locks: [Arc<dyn RotationLock>; 3]) {
    let env = Env::new();
    env.manager(1).load().await.unwrap();
    env.clock.advance(policy().jwt_rotation_interval);
    let managers: Vec<_> = locks
        .into_iter()
        .enumerate()
        .map(|(i, lock)| Arc::new(env.manager_on(env.store.clone(), 10 + i as u64, Some(lock))))
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
    let mut published = 0;
    let mut busy = 0;
    for task in tasks {
        let outcome = task.await.unwrap().unwrap();
        busy += usize::from(outcome.busy);
        published += outcome.steps.iter().filter(|s| s.action == "publish_next").count();
    }
    assert_eq!(published, 1, "exactly one replica published a next key (busy: {busy})");
    let audit = env.actions();
    assert_eq!(audit.iter().filter(|a| *a == "jwt.publish_next").count(), 1, "{audit:?}");
    let checker = &managers[0];
    assert!(checker.verify_rotation().await.unwrap().ok());
    checker.reload().await.unwrap();
    assert_eq!(checker.jwks().unwrap()["keys"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn three_concurrent_rotations_with_postgres_lock_give_one() {
    let db = TestDatabase::postgres().await;
    let locks: [Arc<dyn RotationLock>; 3] = std::array::from_fn(|_| {
        Arc::new(PgAdvisoryLock::from_url(db.url(), LOCK).unwrap()) as Arc<dyn RotationLock>
    });
    three_replicas_rotate_once(locks).await;
    db.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn three_concurrent_rotations_with_redis_lock_give_one() {
    let redis = TestRedis::new().await;
    let locks: [Arc<dyn RotationLock>; 3] = std::array::from_fn(|_| {
        Arc::new(RedisLock::new(redis.client().clone(), redis.key(LOCK), 30_000))
            as Arc<dyn RotationLock>
    });
    three_replicas_rotate_once(locks).await;
    redis.cleanup().await.unwrap();
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
    let token = first.fencing_token();
    first.release().await.unwrap();
    let mut second = b.try_acquire().await.unwrap().expect("released lock");
    assert!(second.fencing_token() > token, "fencing tokens grow");

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
    assert!(next.fencing_token() > held.fencing_token());
    assert!(matches!(held.check().await, Err(Error::LockLost)));
    // the old holder's release does not free the new holder's lock
    held.release().await.unwrap();
    assert!(lock.try_acquire().await.unwrap().is_none());
    next.release().await.unwrap();
    redis.cleanup().await.unwrap();
}
