//! [`Secrets`]: a [`CachedClient`] with a default project and environment, so reading a secret
//! takes its path and nothing else.

use std::ops::Deref;
use std::sync::Arc;

use ikit_common::{SecretRef, SecretValue};

use crate::cache::{CachedClient, SecretHandle, Served};
use crate::error::ClientError;
use crate::wire::Secret;

/// A cached client reading from one project and one default environment; everything
/// [`CachedClient`] offers is reachable through it (it dereferences to one), so
/// [`CachedClient::get`] with a full [`SecretRef`] stays available for other projects.
///
/// How the environment is chosen: [`Secrets::value`] and [`Secrets::secret`] read the default
/// environment (`IKIT_INFISICAL_ENVIRONMENT` for [`crate::from_env`], `dev` when unset);
/// [`Secrets::value_in`] names another one for one read. Paths are `/folder/KEY`, the last
/// segment being the key (`/KEY` is a key in the root folder).
///
/// ```no_run
/// # async fn demo(secrets: ikit_client::Secrets) -> Result<(), ikit_client::ClientError> {
/// let db_url = secrets.value("/app/DB_URL").await?;
/// let prod_url = secrets.value_in("prod", "/app/DB_URL").await?;
/// # let _ = (db_url, prod_url);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Secrets {
    cache: CachedClient,
    project: String,
    environment: String,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("project", &self.project)
            .field("environment", &self.environment)
            .field("cache", &self.cache)
            .finish()
    }
}

impl Secrets {
    /// Reads from `project`, in `environment` unless told otherwise. Both are checked now.
    pub fn new(
        cache: CachedClient,
        project: impl Into<String>,
        environment: impl Into<String>,
    ) -> Result<Self, ClientError> {
        let (project, environment) = (project.into(), environment.into());
        // One valid reference proves the project and environment are usable.
        SecretRef::new(project.as_str(), environment.as_str(), "/", "KEY")?;
        Ok(Self { cache, project, environment })
    }

    /// The value of the secret at `path` (`/folder/KEY`) in the default environment.
    pub async fn value(&self, path: &str) -> Result<SecretValue, ClientError> {
        self.read(&self.reference(&self.environment, path)?).await
    }

    /// The value of the secret at `path` in `environment`.
    pub async fn value_in(
        &self,
        environment: &str,
        path: &str,
    ) -> Result<SecretValue, ClientError> {
        self.read(&self.reference(environment, path)?).await
    }

    /// The whole secret at `path` in the default environment, with where it came from
    /// (network, cache or offline snapshot) and its age.
    pub async fn secret(&self, path: &str) -> Result<Served<Arc<Secret>>, ClientError> {
        self.cache.get(&self.reference(&self.environment, path)?).await
    }

    /// A live handle on the secret at `path` in the default environment (see
    /// [`CachedClient::handle`]).
    pub async fn handle_path(&self, path: &str) -> Result<SecretHandle, ClientError> {
        self.cache.handle(&self.reference(&self.environment, path)?).await
    }

    /// The reference `path` names in `environment` of this project.
    pub fn reference(&self, environment: &str, path: &str) -> Result<SecretRef, ClientError> {
        Ok(SecretRef::parse(self.project.as_str(), environment, path)?)
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    /// The environment [`Secrets::value`] reads.
    pub fn environment(&self) -> &str {
        &self.environment
    }

    /// The cached client underneath.
    pub fn cache(&self) -> &CachedClient {
        &self.cache
    }

    async fn read(&self, secret: &SecretRef) -> Result<SecretValue, ClientError> {
        Ok(self.cache.get(secret).await?.value.value.clone())
    }
}

impl Deref for Secrets {
    type Target = CachedClient;

    fn deref(&self) -> &CachedClient {
        &self.cache
    }
}
