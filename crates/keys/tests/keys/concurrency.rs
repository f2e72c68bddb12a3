//! One leader: three replicas rotating at once give exactly one rotation, with real PostgreSQL
//! advisory locks and real Redis locks.

use std::sync::Arc;

use ikit_keys::lock::{PgAdvisoryLock, RedisLock, RotationLock};
use ikit_keys::{Error, RotationTarget, Trigger};

use crate::support::{Env, pg_url, policy, redis_url, unique};

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
    let name = unique("ikit-keys-test");
    let locks: [Arc<dyn RotationLock>; 3] = std::array::from_fn(|_| {
        Arc::new(PgAdvisoryLock::from_url(&pg_url(), &name).unwrap()) as Arc<dyn RotationLock>
    });
    three_replicas_rotate_once(locks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn three_concurrent_rotations_with_redis_lock_give_one() {
    let key = unique("ikit-keys-test-lock");
    let locks: [Arc<dyn RotationLock>; 3] = std::array::from_fn(|_| {
        Arc::new(RedisLock::new(redis::Client::open(redis_url()).unwrap(), key.clone(), 30_000))
            as Arc<dyn RotationLock>
    });
    three_replicas_rotate_once(locks).await;
}

#[tokio::test]
async fn postgres_lock_excludes_a_second_holder_and_tokens_grow() {
    let name = unique("ikit-keys-test");
    let (a, b) = (
        PgAdvisoryLock::from_url(&pg_url(), &name).unwrap(),
        PgAdvisoryLock::from_url(&pg_url(), &name).unwrap(),
    );
    let mut first = a.try_acquire().await.unwrap().expect("free lock");
    first.check().await.unwrap();
    assert!(b.try_acquire().await.unwrap().is_none(), "held by the first");
    let token = first.fencing_token();
    first.release().await.unwrap();
    let second = b.try_acquire().await.unwrap().expect("released lock");
    assert!(second.fencing_token() > token);
    // a holder whose connection dies loses the lock to the server, not forever
    drop(second);
    let mut third = None;
    for _ in 0..50 {
        if let Some(g) = a.try_acquire().await.unwrap() {
            third = Some(g);
            break;
        }
        tokio::task::yield_now().await;
    }
    third.expect("lock freed when its connection closed").release().await.unwrap();
}

#[tokio::test]
async fn redis_lock_detects_a_lost_lock_and_fences() {
    let key = unique("ikit-keys-test-lock");
    let client = redis::Client::open(redis_url()).unwrap();
    let lock = RedisLock::new(client.clone(), key.clone(), 30_000);
    let mut held = lock.try_acquire().await.unwrap().expect("free lock");
    held.check().await.unwrap();
    assert!(lock.try_acquire().await.unwrap().is_none());
    // the key expires or is taken over: the holder must notice before writing
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
    let next = lock.try_acquire().await.unwrap().expect("taken over");
    assert!(next.fencing_token() > held.fencing_token());
    assert!(matches!(held.check().await, Err(Error::LockLost)));
    // the old holder's release does not free the new holder's lock
    held.release().await.unwrap();
    assert!(lock.try_acquire().await.unwrap().is_none());
    next.release().await.unwrap();
    let _: () = redis::cmd("DEL").arg(format!("{key}:fence")).query_async(&mut conn).await.unwrap();
}
