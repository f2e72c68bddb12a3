//! [`KeyStore`] over Infisical through ikit-client: a folder is read with one listing (no
//! imports, no reference expansion: key material is taken literally), written with one batch
//! upsert and deleted with one batch delete. Missing folders are created on the first write.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use ikit_client::{Client, ClientError, FolderQuery, NewSecret, RetryPolicy, Scope};
use ikit_common::SecretValue;

use crate::error::{Error, Result};
use crate::store::{Folder, KeyStore, StoredSecret};

/// Keys kept in one Infisical project environment.
pub struct InfisicalStore {
    client: Client,
    project_id: String,
    environment: String,
}

impl std::fmt::Debug for InfisicalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfisicalStore")
            .field("project_id", &self.project_id)
            .field("environment", &self.environment)
            .finish_non_exhaustive()
    }
}

fn store_err(what: &str, folder: &str, e: ClientError) -> Error {
    match e {
        ClientError::PendingApproval { .. } => {
            Error::Store(format!("{what} {folder}: the change is pending approval, not applied"))
        }
        other => Error::Store(format!("{what} {folder}: {other}")),
    }
}

impl InfisicalStore {
    pub fn new(
        client: Client,
        project_id: impl Into<String>,
        environment: impl Into<String>,
    ) -> Self {
        Self { client, project_id: project_id.into(), environment: environment.into() }
    }

    /// The longest one call of a client built with `retry` and `request_timeout` can take:
    /// every attempt timing out, the longest backoff before each retry and, when
    /// `with_retry_after`, the longest `Retry-After` the client waits. Set the manager's
    /// `store_timeout` to this so a write that the client would still complete is not cut short;
    /// the manager then refuses a Redis lock whose TTL does not cover it.
    pub fn call_budget(
        retry: &RetryPolicy,
        request_timeout: Duration,
        with_retry_after: bool,
    ) -> Duration {
        let attempts = retry.max_attempts.max(1);
        let mut total = request_timeout.saturating_mul(attempts);
        for attempt in 0..attempts - 1 {
            let ceiling = retry
                .base_delay
                .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
                .unwrap_or(retry.max_delay)
                .min(retry.max_delay);
            let wait = if with_retry_after { ceiling.max(retry.max_retry_after) } else { ceiling };
            total = total.saturating_add(wait);
        }
        total
    }

    fn scope(&self, folder: &str) -> Scope {
        Scope::new(&self.project_id, &self.environment, folder)
    }

    /// Creates every missing folder on the way to `folder`.
    async fn ensure_folder(&self, folder: &str) -> Result<()> {
        let folder = ikit_common::secret::normalize_folder(folder)
            .map_err(|e| Error::Store(e.to_string()))?;
        let mut parent = "/".to_owned();
        for name in folder.split('/').filter(|s| !s.is_empty()) {
            let existing = self
                .client
                .list_folders(&self.project_id, &self.environment, &parent, false)
                .await
                .map_err(|e| store_err("list folders in", &parent, e))?;
            if !existing.iter().any(|f| f.name == name) {
                self.client
                    .create_folder(&self.project_id, &self.environment, &parent, name)
                    .await
                    .map_err(|e| store_err("create folder in", &parent, e))?;
            }
            parent = if parent == "/" { format!("/{name}") } else { format!("{parent}/{name}") };
        }
        Ok(())
    }
}

impl KeyStore for InfisicalStore {
    fn read_folder<'a>(&'a self, folder: &'a str) -> BoxFuture<'a, Result<Folder>> {
        Box::pin(async move {
            let query = FolderQuery::new(&self.project_id, &self.environment, folder)
                .include_imports(false)
                .expand_references(false);
            let listing = match self.client.fetch_folder(&query).await {
                Ok(listing) => listing,
                Err(ClientError::NotFound { .. }) => return Ok(BTreeMap::new()),
                Err(e) => return Err(store_err("read", folder, e)),
            };
            Ok(listing
                .secrets
                .into_iter()
                .map(|s| (s.key, StoredSecret { value: s.value, version: s.version }))
                .collect())
        })
    }

    fn upsert<'a>(
        &'a self,
        folder: &'a str,
        entries: Vec<(String, SecretValue)>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let items: Vec<NewSecret> = entries
                .into_iter()
                // `skipMultilineEncoding` stays false: with it true the server returns a multi-line
                // value (a PEM) with its newlines escaped once references are expanded
                .map(|(key, value)| NewSecret::new(key, value))
                .collect();
            match self.client.batch_upsert(&self.scope(folder), &items).await {
                Ok(_) => Ok(()),
                Err(ClientError::NotFound { .. }) => {
                    self.ensure_folder(folder).await?;
                    self.client
                        .batch_upsert(&self.scope(folder), &items)
                        .await
                        .map(drop)
                        .map_err(|e| store_err("write", folder, e))
                }
                Err(e) => Err(store_err("write", folder, e)),
            }
        })
    }

    fn delete<'a>(&'a self, folder: &'a str, keys: Vec<String>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(());
            }
            // the server refuses the whole batch when a key (or the folder) is missing: only then
            // read what is there and delete that
            match self.client.batch_delete(&self.scope(folder), &keys).await {
                Ok(_) => return Ok(()),
                Err(ClientError::NotFound { .. }) => {}
                Err(e) => return Err(store_err("delete from", folder, e)),
            }
            let present = self.read_folder(folder).await?;
            let keys: Vec<String> = keys.into_iter().filter(|k| present.contains_key(k)).collect();
            if keys.is_empty() {
                return Ok(());
            }
            self.client
                .batch_delete(&self.scope(folder), &keys)
                .await
                .map(drop)
                .map_err(|e| store_err("delete from", folder, e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::DEFAULT_STORE_TIMEOUT;

    #[test]
    fn the_call_budget_adds_every_attempt_and_backoff_and_the_default_store_timeout_covers_it() {
        let retry = RetryPolicy::default();
        let secs = |s: f64| Duration::from_secs_f64(s);
        // 4 attempts of 30 s, backoff ceilings of 0.2, 0.4 and 0.8 s
        let budget = InfisicalStore::call_budget(&retry, Duration::from_secs(30), false);
        assert_eq!(budget, secs(121.4));
        assert!(budget < DEFAULT_STORE_TIMEOUT);
        // with the longest Retry-After waited before each retry
        let with_waits = InfisicalStore::call_budget(&retry, Duration::from_secs(30), true);
        assert_eq!(with_waits, secs(120.0 + 3.0 * 120.0));
        let once = RetryPolicy { max_attempts: 1, ..retry };
        assert_eq!(InfisicalStore::call_budget(&once, secs(2.0), true), secs(2.0));
    }
}
