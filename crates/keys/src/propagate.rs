//! How a committed key step reaches the replicas that did not write it.
//!
//! The leader announces every committed step through a [`KeyChangePublisher`] (set with
//! [`KeyManagerBuilder::publisher`](crate::KeyManagerBuilder::publisher)): with the `infisical`
//! feature, an `ikit_client::CachedClient` or `ikit_client::Invalidator` publishes an invalidation
//! of the folder on Redis. Every replica attaches its manager to its own `CachedClient` with
//! [`KeyManager::attach`]: an invalidation touching the key folders (from a leader, from the
//! admin API's `cache/invalidate?pattern=/auth/*`) or a change event under them (from the webhook
//! service, when someone edits the keys in Infisical) reloads the ring. Reloads are coalesced: a
//! burst of messages costs one reload. The scheduler's timer reload is the fallback when a
//! message is lost.

use futures_util::future::BoxFuture;

use crate::error::Result;
#[cfg(feature = "infisical")]
pub use watch::RingWatch;

/// Announces that a key folder changed, so the other replicas reload.
pub trait KeyChangePublisher: Send + Sync {
    /// Called after each committed step with the folder it wrote (e.g. `/auth/jwt`).
    fn folder_changed<'a>(&'a self, folder: &'a str) -> BoxFuture<'a, Result<()>>;
}

#[cfg(feature = "infisical")]
mod watch {
    use std::sync::Arc;

    use futures_util::future::BoxFuture;
    use ikit_client::CachedClient;
    use tokio::sync::{broadcast, mpsc};

    use super::KeyChangePublisher;
    use crate::error::{Error, Result};
    use crate::manager::KeyManager;

    /// Drops this replica's cached listings of the folder, clears them from L2 and publishes the
    /// invalidation to every replica.
    impl KeyChangePublisher for CachedClient {
        fn folder_changed<'a>(&'a self, folder: &'a str) -> BoxFuture<'a, Result<()>> {
            Box::pin(async move {
                let done = self.invalidate(folder).await;
                if done.published {
                    Ok(())
                } else {
                    Err(Error::Store(format!("invalidation of {folder} was not published")))
                }
            })
        }
    }

    /// The task reloading a manager's ring on changes seen by a `CachedClient`; dropping it (or
    /// [`RingWatch::stop`]) ends the task.
    #[must_use = "dropping the watch stops it"]
    pub struct RingWatch {
        stop: tokio::sync::watch::Sender<bool>,
        task: Option<tokio::task::JoinHandle<()>>,
    }

    impl std::fmt::Debug for RingWatch {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RingWatch").finish_non_exhaustive()
        }
    }

    impl RingWatch {
        /// Stops the task and waits for it.
        pub async fn stop(mut self) {
            let _ = self.stop.send(true);
            if let Some(task) = self.task.take() {
                let _ = task.await;
            }
        }
    }

    impl Drop for RingWatch {
        fn drop(&mut self) {
            let _ = self.stop.send(true);
        }
    }

    impl KeyManager {
        /// Reloads the ring whenever `cache` sees a change event under the JWT or AES folder
        /// (delivered from Redis by its listener, or in process with `CachedClient::deliver`) or
        /// applies an invalidation that touches them (from another replica's step, or this
        /// one's). The subscriptions are in place when this returns. Start the cache's Redis
        /// listener (`CachedClient::start_listener`) for messages from other replicas.
        ///
        /// ```no_run
        /// # async fn run(
        /// #     store: std::sync::Arc<dyn ikit_keys::KeyStore>,
        /// #     cache: ikit_client::CachedClient,
        /// # ) -> ikit_keys::Result<()> {
        /// use std::sync::Arc;
        /// let manager = Arc::new(
        ///     ikit_keys::KeyManager::builder(store).publisher(Arc::new(cache.clone())).build()?,
        /// );
        /// manager.load().await?;
        /// let _listener = cache.start_listener(); // messages from the other replicas
        /// let _watch = manager.attach(&cache); // keep both for the life of the service
        /// # Ok(())
        /// # }
        /// ```
        pub fn attach(self: &Arc<Self>, cache: &CachedClient) -> RingWatch {
            let folders = [self.config().jwt_folder.clone(), self.config().aes_folder.clone()];
            let mut events: Vec<mpsc::Receiver<_>> =
                folders.iter().map(|f| cache.subscribe_stream(f.clone(), 64)).collect();
            let mut invalidations = cache.invalidations();
            let (stop, mut stopped) = tokio::sync::watch::channel(false);
            let manager = self.clone();
            let task = tokio::spawn(async move {
                let (mut jwt, mut aes) = (events.remove(0), events.remove(0));
                loop {
                    let mut touched = tokio::select! {
                        _ = stopped.changed() => return,
                        e = jwt.recv() => match e {
                            Some(_) => true,
                            None => return,
                        },
                        e = aes.recv() => match e {
                            Some(_) => true,
                            None => return,
                        },
                        p = invalidations.recv() => match p {
                            Ok(pattern) => manager.affects_keys(&pattern),
                            Err(broadcast::error::RecvError::Lagged(_)) => true,
                            Err(broadcast::error::RecvError::Closed) => return,
                        },
                    };
                    // what else is queued is served by this same reload
                    while jwt.try_recv().is_ok() || aes.try_recv().is_ok() {
                        touched = true;
                    }
                    loop {
                        match invalidations.try_recv() {
                            Ok(pattern) => touched |= manager.affects_keys(&pattern),
                            Err(broadcast::error::TryRecvError::Lagged(_)) => touched = true,
                            Err(_) => break,
                        }
                    }
                    if touched && let Err(e) = manager.reload().await {
                        tracing::warn!(error = %e, "key ring reload on a change failed");
                    }
                }
            });
            RingWatch { stop, task: Some(task) }
        }
    }
}
