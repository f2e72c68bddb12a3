//! A change under `/auth/jwt`, made in Infisical by someone else, reloads the key ring of a
//! `KeyManager` attached to a cache: the only path here is the emulator's webhook, this
//! service's per-key events and the subscription (the writer has no publisher).

use std::sync::Arc;
use std::time::Duration;

use ikit_keys::infisical::InfisicalStore;
use ikit_keys::{KeyManager, RotationTarget, Trigger};

use crate::support::{PROJECT, Stack, cached_reader};

#[tokio::test]
async fn a_change_under_auth_jwt_reloads_an_attached_key_manager() {
    let stack = Stack::start().await;
    let app = stack.app(&[]).await;
    stack.register_hook(&app, "dev").await;
    let store = || Arc::new(InfisicalStore::new(stack.writer(), PROJECT, "dev"));
    let writer = KeyManager::builder(store()).build().expect("writer manager");
    writer.load().await.expect("first keys");
    let replica = Arc::new(KeyManager::builder(store()).build().expect("replica manager"));
    replica.load().await.expect("replica loads");
    assert_eq!(replica.jwks().unwrap(), writer.jwks().unwrap());
    let (cache, _listener) = cached_reader(&stack).await;
    let _watch = replica.attach(&cache);
    let mut updates = replica.ring_updates();
    updates.borrow_and_update();

    stack.tick();
    writer.rotate(RotationTarget::Jwt, true, "test", Trigger::Manual).await.expect("rotate");
    assert_ne!(replica.jwks().unwrap(), writer.jwks().unwrap(), "nothing but the webhook tells it");
    tokio::time::timeout(Duration::from_secs(15), async {
        while replica.jwks().unwrap() != writer.jwks().unwrap() {
            updates.changed().await.unwrap();
        }
    })
    .await
    .expect("the webhook's events reload the attached manager");
    app.shutdown().await;
}
