//! The client: the token manager (one login or renewal in flight at a time, never wedged) and the
//! secrets, folders and projects operations, with the v4 to v3 fallback remembered per client.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use ikit_common::{SecretRef, SecretValue};
use reqwest::Method;
use zeroize::Zeroizing;

use crate::api::{
    self, ApiVersion, BatchLimits, BatchProgress, FolderQuery, GetOptions, NewSecret, Scope,
    SecretUpdate,
};
use crate::auth::{self, AuthMethod};
use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::token::{AccessToken, TokenAction, TokenState, TokenTimes};
use crate::transport::{Call, Failure, Reply, Transport};
use crate::wire::{
    self, Folder, FolderDigest, FolderSecrets, ImportOrder, Project, Secret, SecretType,
    ServiceTokenInfo,
};

/// Successful folder fetches, by source (`network`, `cache`, `snapshot`) and folder path.
pub const METRIC_FETCH_TOTAL: &str = "infisical_fetch_total";
/// Failed folder fetches, by folder path and error kind.
pub const METRIC_FETCH_ERRORS: &str = "infisical_fetch_errors_total";
/// Folder fetch latency, by folder path.
pub const METRIC_FETCH_DURATION: &str = "infisical_fetch_duration_seconds";
/// `expiresIn` of the current access token when it was obtained.
pub const METRIC_TOKEN_EXPIRES_IN: &str = "infisical_token_expires_in_seconds";

/// The answer to a conditional folder fetch.
pub enum FolderFetch {
    /// The folder changed (or no ETag was given): its listing and the new ETag.
    Modified { folder: FolderSecrets, etag: Option<String> },
    /// The server still has the version named by the ETag.
    NotModified,
}

impl std::fmt::Debug for FolderFetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Modified { folder, etag } => f
                .debug_struct("Modified")
                .field("secrets", &folder.secrets.len())
                .field("imports", &folder.imports.len())
                .field("etag", etag)
                .finish(),
            Self::NotModified => f.write_str("NotModified"),
        }
    }
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Network,
    Cache,
    Snapshot,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Network => "network",
            Self::Cache => "cache",
            Self::Snapshot => "snapshot",
        }
    }
}

/// A freshly obtained access token and when it stops working (`ikit login --plain`). No
/// `Debug`: it holds the token.
pub struct LoginToken {
    pub access_token: AccessToken,
    /// When the token expires; `None` for a token that does not (or a fixed token whose
    /// expiry the client does not know).
    pub expires_at: Option<SystemTime>,
    /// When renewals stop being possible (`accessTokenMaxTTL` after the login), if limited.
    pub renewable_until: Option<SystemTime>,
}

/// Holds the current token and obtains new ones. The tokio mutex is held across a login or
/// renewal, so concurrent callers wait for the one in flight instead of starting their own;
/// every path out of the lock returns (errors propagate), so it cannot wedge.
struct TokenManager {
    auth: AuthMethod,
    org_slug: Option<String>,
    state: tokio::sync::Mutex<Option<TokenState>>,
}

impl TokenManager {
    async fn current(&self, transport: &Transport) -> Result<AccessToken, ClientError> {
        if let Some(token) = self.auth.static_token() {
            return Ok(token.clone());
        }
        let mut state = self.state.lock().await;
        let now = transport.clock.now();
        let action = state.as_ref().map_or(TokenAction::Login, |s| s.times.decide(now));
        let fresh = match (action, state.as_ref()) {
            (TokenAction::Use, Some(s)) => return Ok(s.token.clone()),
            (TokenAction::Renew, Some(s)) => match self.renew(transport, s).await {
                Ok(renewed) => renewed,
                Err(e) => {
                    tracing::warn!(error = e.kind(), "token renewal failed, logging in again");
                    self.login(transport).await?
                }
            },
            _ => self.login(transport).await?,
        };
        let token = fresh.token.clone();
        *state = Some(fresh);
        Ok(token)
    }

    /// Logs in now, even when a valid token is held, and makes the new token the current one.
    async fn login_now(&self, transport: &Transport) -> Result<LoginToken, ClientError> {
        if let Some(token) = self.auth.static_token() {
            return Ok(LoginToken {
                access_token: token.clone(),
                expires_at: None,
                renewable_until: None,
            });
        }
        let mut state = self.state.lock().await;
        let fresh = self.login(transport).await?;
        let times = fresh.times;
        let at = |d: Duration| (!d.is_zero()).then(|| times.obtained_at + d);
        let token = LoginToken {
            access_token: fresh.token.clone(),
            expires_at: at(times.expires_in),
            renewable_until: (!times.max_ttl.is_zero()).then(|| times.login_at + times.max_ttl),
        };
        *state = Some(fresh);
        Ok(token)
    }

    /// Revokes the current token on the server and forgets it.
    async fn revoke(&self, transport: &Transport) -> Result<(), ClientError> {
        if self.auth.static_token().is_some() {
            return Ok(());
        }
        let mut state = self.state.lock().await;
        let Some(current) = state.take() else { return Ok(()) };
        let call = token_call("revoke", &current.token);
        transport.send(&call, None).await.map_err(|f| login_error(f, "revocation"))?;
        Ok(())
    }

    /// Forgets `used` if it is still the current token, so the next call logs in.
    async fn invalidate(&self, used: &AccessToken) {
        let mut state = self.state.lock().await;
        if state.as_ref().is_some_and(|s| s.token.same_as(used)) {
            *state = None;
        }
    }

    async fn login(&self, transport: &Transport) -> Result<TokenState, ClientError> {
        let sent_at = transport.clock.now();
        let request =
            auth::login_request(&self.auth, transport.http(), self.org_slug.as_deref(), sent_at)
                .await?;
        let mut call = Call::new(Method::POST, &["v1", "auth", request.method, "login"]);
        call.body = Some(request.body);
        // Repeating a login at worst leaves an unused token row behind: safe to retry.
        call.idempotent = true;
        let reply = transport.send(&call, None).await.map_err(|f| {
            crate::config::name_the_default_server(login_error(f, "login"), &transport.base)
        })?;
        let login = wire::decode_login(&reply.body)?;
        tracing::info!(
            method = self.auth.name(),
            expires_in = login.expires_in,
            "logged in to infisical"
        );
        Ok(self.state_from(login, sent_at, sent_at))
    }

    async fn renew(
        &self,
        transport: &Transport,
        old: &TokenState,
    ) -> Result<TokenState, ClientError> {
        let sent_at = transport.clock.now();
        let call = token_call("renew", &old.token);
        let reply = transport.send(&call, None).await.map_err(|f| login_error(f, "renewal"))?;
        let renewed = wire::decode_login(&reply.body)?;
        tracing::debug!(expires_in = renewed.expires_in, "renewed infisical access token");
        Ok(self.state_from(renewed, old.times.login_at, sent_at))
    }

    fn state_from(
        &self,
        r: wire::LoginResponse,
        login_at: std::time::SystemTime,
        obtained_at: std::time::SystemTime,
    ) -> TokenState {
        if r.expires_in > 0 && r.expires_in < 60 {
            tracing::warn!(expires_in = r.expires_in, "access token ttl is under 60 s");
        }
        metrics::gauge!(METRIC_TOKEN_EXPIRES_IN).set(r.expires_in as f64);
        TokenState {
            token: r.access_token,
            times: TokenTimes {
                login_at,
                obtained_at,
                expires_in: Duration::from_secs(r.expires_in),
                max_ttl: Duration::from_secs(r.max_ttl),
            },
        }
    }
}

/// `POST /api/v1/auth/token/{action}` with the token in the body (renew and revoke); safe to
/// send twice.
fn token_call(action: &str, token: &AccessToken) -> Call {
    let mut call = Call::new(Method::POST, &["v1", "auth", "token", action]);
    call.body =
        Some(Zeroizing::new(serde_json::json!({ "accessToken": token.expose() }).to_string()));
    call.idempotent = true;
    call
}

/// How an authenticated call failed: the transport's [`Failure`] and the call it ended on (none
/// when no call was sent because getting a token failed).
struct Refused {
    failure: Failure,
    call: Option<Call>,
}

impl Refused {
    fn into_error(self) -> ClientError {
        match self.failure {
            Failure::RouteNotFound => {
                let route = self
                    .call
                    .map(|call| format!("{} {}", call.method, call.route()))
                    .unwrap_or_default();
                ClientError::not_found(format!("route {route} not found"))
            }
            Failure::ReAuth(message) => ClientError::Auth { message },
            Failure::Error(e) => e,
        }
    }
}

/// A login, renewal or revocation failure. Any refusal (a 4xx other than 429) means our
/// credential was not accepted, whatever status the server chose: a 2024 server answers an
/// unknown client id 404 `NotFound`, a malformed one 401 `ValidationFailure`. The server's
/// message is kept. Rate limits and outages stay what they are, so callers can wait or serve
/// stale.
fn login_error(f: Failure, what: &str) -> ClientError {
    let refused =
        |message: String| ClientError::Auth { message: format!("{what} refused: {message}") };
    match f {
        Failure::ReAuth(message) => refused(message),
        Failure::RouteNotFound => {
            ClientError::Auth { message: format!("{what} route not found on this server") }
        }
        Failure::Error(
            ClientError::PermissionDenied { message, .. }
            | ClientError::NotFound { message, .. }
            | ClientError::InvalidInput { message },
        ) => refused(message),
        Failure::Error(ClientError::Api { status, message, .. })
            if (400..500).contains(&status) =>
        {
            refused(message)
        }
        Failure::Error(e) => e,
    }
}

/// A key missing from its folder's listing. A 2024 server lists an unknown environment (and a
/// missing folder) as empty, so an empty listing names the environment as possibly unknown.
pub(crate) fn missing_secret(secret: &SecretRef, listing_empty: bool) -> ClientError {
    let place = format!("{}:{}", secret.environment(), secret.folder());
    let message = if listing_empty {
        format!(
            "secret {} not found: the listing of {place} is empty; the environment {:?} may not \
             exist in this project, or the folder may not",
            secret.key(),
            secret.environment()
        )
    } else {
        format!("secret {} not found in {place}", secret.key())
    };
    ClientError::NotFound {
        message,
        secret: Some(secret.key().to_owned()),
        folder: Some(secret.folder().to_owned()),
    }
}

/// A value the server masked: refused, never returned as the mask.
pub(crate) fn hidden_value(secret: &SecretRef) -> ClientError {
    ClientError::PermissionDenied {
        secret: Some(secret.key().to_owned()),
        folder: Some(secret.folder().to_owned()),
        message: format!(
            "the value of {} in {} is hidden: the identity may not read secret values",
            secret.key(),
            secret.folder()
        ),
    }
}

/// The secret a reference resolves to in a folder listing.
pub(crate) fn pick(
    folder: &FolderSecrets,
    secret: &SecretRef,
    order: ImportOrder,
) -> Result<Secret, ClientError> {
    let empty = folder.secrets.is_empty() && folder.imports.iter().all(|i| i.secrets.is_empty());
    let found = folder.find(secret.key(), order).ok_or_else(|| missing_secret(secret, empty))?;
    if found.value_hidden {
        return Err(hidden_value(secret));
    }
    Ok(found.clone())
}

struct Inner {
    transport: Transport,
    tokens: TokenManager,
    /// Set once a server showed it has no v4 secrets routes.
    v3: AtomicBool,
    import_order: ImportOrder,
    batch_limits: BatchLimits,
}

/// The Infisical client. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("auth", &self.inner.tokens.auth.name())
            .field("api_version", &self.api_version())
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let transport = Transport::new(&config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                transport,
                tokens: TokenManager {
                    auth: config.auth,
                    org_slug: config.organization_slug,
                    state: tokio::sync::Mutex::new(None),
                },
                v3: AtomicBool::new(config.api_version == Some(ApiVersion::V3)),
                import_order: config.import_order,
                batch_limits: config.batch_limits,
            }),
        })
    }

    /// The secrets dialect in use: v4 until the server shows it lacks it (or the one the
    /// configuration remembered, [`ClientConfig::with_api_version`]). Save it with the state of
    /// a process so the next one does not probe v4 again on a server without it.
    pub fn api_version(&self) -> ApiVersion {
        if self.inner.v3.load(Ordering::Relaxed) { ApiVersion::V3 } else { ApiVersion::V4 }
    }

    /// Switches the secrets dialect of this client and its clones, e.g. to the one a previous
    /// process saved after the client was built. (A cache with a snapshot directory saves and
    /// restores it by itself.)
    pub fn set_api_version(&self, version: ApiVersion) {
        self.inner.v3.store(version == ApiVersion::V3, Ordering::Relaxed);
    }

    pub fn import_order(&self) -> ImportOrder {
        self.inner.import_order
    }

    /// The clock this client decides time with (shared by its cache).
    pub(crate) fn clock(&self) -> &Arc<dyn crate::clock::Clock> {
        &self.inner.transport.clock
    }

    /// True while the circuit breaker refuses requests.
    pub fn circuit_open(&self) -> bool {
        self.inner.transport.breaker_open()
    }

    /// Makes sure a valid token is held: logs in or renews as due. Useful at start-up and for a
    /// background refresher; every request does this anyway.
    pub async fn ensure_token(&self) -> Result<(), ClientError> {
        self.inner.tokens.current(&self.inner.transport).await.map(|_| ())
    }

    /// When the access token held now expires: `None` before the first login, for a fixed
    /// token, or for a token that does not expire. For health pages; takes no network action.
    pub async fn token_expires_at(&self) -> Option<SystemTime> {
        if self.inner.tokens.auth.static_token().is_some() {
            return None;
        }
        let state = self.inner.tokens.state.lock().await;
        let times = &state.as_ref()?.times;
        (!times.expires_in.is_zero()).then(|| times.obtained_at + times.expires_in)
    }

    /// Logs in now and returns the new access token with its expiry (what `ikit login --plain`
    /// prints); the client then uses that token. A fixed token is returned as is.
    pub async fn login(&self) -> Result<LoginToken, ClientError> {
        self.inner.tokens.login_now(&self.inner.transport).await
    }

    /// Revokes the access token this client holds (for a clean shutdown); the next request logs
    /// in again. Fixed tokens are left alone.
    pub async fn revoke_token(&self) -> Result<(), ClientError> {
        self.inner.tokens.revoke(&self.inner.transport).await
    }

    /// Sends an authenticated call built for the current dialect; on a route-not-found from v4
    /// switches this client to v3 for good; on a token error logs in again once and retries.
    async fn execute(
        &self,
        versioned: bool,
        build: impl Fn(ApiVersion) -> Call,
    ) -> Result<Reply, ClientError> {
        self.send_authenticated(versioned, build).await.map_err(Refused::into_error)
    }

    /// [`Client::execute`] keeping the transport's [`Failure`] and the call it ended on.
    async fn send_authenticated(
        &self,
        versioned: bool,
        build: impl Fn(ApiVersion) -> Call,
    ) -> Result<Reply, Refused> {
        let mut reauthenticated = false;
        let mut fell_back = false;
        loop {
            let version = self.api_version();
            let token = self
                .inner
                .tokens
                .current(&self.inner.transport)
                .await
                .map_err(|e| Refused { failure: Failure::Error(e), call: None })?;
            let call = build(version);
            match self.inner.transport.send(&call, Some(&token)).await {
                Ok(body) => return Ok(body),
                Err(Failure::RouteNotFound)
                    if versioned && version == ApiVersion::V4 && !fell_back =>
                {
                    fell_back = true;
                    if !self.inner.v3.swap(true, Ordering::Relaxed) {
                        tracing::info!(
                            route = call.route(),
                            "server has no v4 secrets routes, using v3 raw"
                        );
                    }
                }
                Err(Failure::ReAuth(_))
                    if !reauthenticated && self.inner.tokens.auth.static_token().is_none() =>
                {
                    tracing::info!(route = call.route(), "token rejected, logging in again");
                    reauthenticated = true;
                    self.inner.tokens.invalidate(&token).await;
                }
                Err(failure) => return Err(Refused { failure, call: Some(call) }),
            }
        }
    }

    /// Fetches one folder listing from Infisical. The single network path for folder reads: the
    /// cache of part 2 wraps it. Records `infisical_fetch_*` metrics labelled by folder path.
    pub async fn fetch_folder(&self, query: &FolderQuery) -> Result<FolderSecrets, ClientError> {
        match self.fetch_folder_if_changed(query, None).await? {
            FolderFetch::Modified { folder, .. } => Ok(folder),
            FolderFetch::NotModified => Err(ClientError::Decode("unexpected 304".into())),
        }
    }

    /// Like [`Client::fetch_folder`], revalidating with `If-None-Match: etag` when given: a
    /// server that still has that version answers 304 and nothing is decoded.
    pub async fn fetch_folder_if_changed(
        &self,
        query: &FolderQuery,
        etag: Option<&str>,
    ) -> Result<FolderFetch, ClientError> {
        self.fetch_listing(query, etag, |reply| {
            if reply.not_modified {
                return Ok(FolderFetch::NotModified);
            }
            let folder = wire::decode_list(&reply.body)?;
            Ok(FolderFetch::Modified { folder, etag: reply.etag })
        })
        .await
    }

    /// Fetches one folder listing as a [`FolderDigest`]: each own secret's key, type, version
    /// and value, and the folders it imports; nothing else is decoded. For change detection
    /// (the webhook service refetches whole folders on every change): a 10,000-secret folder
    /// then costs two strings per secret instead of a full [`Secret`] each.
    pub async fn fetch_folder_digest(
        &self,
        query: &FolderQuery,
    ) -> Result<FolderDigest, ClientError> {
        self.fetch_listing(query, None, |reply| {
            if reply.not_modified {
                return Err(ClientError::Decode("unexpected 304".into()));
            }
            wire::decode_digest(&reply.body)
        })
        .await
    }

    /// One folder listing request and its metrics; `decode` turns the answer into `T`.
    async fn fetch_listing<T>(
        &self,
        query: &FolderQuery,
        etag: Option<&str>,
        decode: impl FnOnce(Reply) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let started = Instant::now();
        let result = self
            .execute(true, |v| {
                let mut call = api::list(v, query);
                call.if_none_match = etag.map(str::to_owned);
                call
            })
            .await
            .and_then(decode);
        let path = query.path.clone();
        metrics::histogram!(METRIC_FETCH_DURATION, "path" => path.clone())
            .record(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => {
                metrics::counter!(METRIC_FETCH_TOTAL, "source" => Source::Network.as_str(), "path" => path)
                    .increment(1);
            }
            Err(e) => {
                metrics::counter!(METRIC_FETCH_ERRORS, "path" => path, "error" => e.kind())
                    .increment(1);
            }
        }
        result
    }

    /// Lists a folder (alias of [`Client::fetch_folder`]).
    pub async fn list_secrets(&self, query: &FolderQuery) -> Result<FolderSecrets, ClientError> {
        self.fetch_folder(query).await
    }

    /// Reads one secret, uncached: the by-name endpoint for a key of the folder itself (one
    /// small request, not the whole listing), else the folder listing, so an imported key
    /// resolves by the configured [`ImportOrder`] exactly as the cache resolves it. A value the
    /// server masked is refused, never returned as the mask.
    pub async fn get(&self, secret: &SecretRef) -> Result<(Secret, Source), ClientError> {
        let scope = Scope::new(secret.project(), secret.environment(), secret.folder());
        let own = GetOptions { include_imports: false, ..GetOptions::default() };
        match self.get_secret(&scope, secret.key(), &own).await {
            // The answer is the secret itself: returned as decoded, not wrapped in a listing
            // and cloned out of it.
            Ok(found) if found.key == secret.key() => {
                if found.value_hidden {
                    return Err(hidden_value(secret));
                }
                Ok((found, Source::Network))
            }
            Ok(_) => Err(missing_secret(secret, false)),
            Err(ClientError::NotFound { .. }) => {
                let query =
                    FolderQuery::new(secret.project(), secret.environment(), secret.folder());
                let folder = self.fetch_folder(&query).await?;
                pick(&folder, secret, self.inner.import_order).map(|s| (s, Source::Network))
            }
            Err(e) => Err(e),
        }
    }

    /// Reads one value; see [`Client::get`].
    pub async fn get_value(&self, secret: &SecretRef) -> Result<SecretValue, ClientError> {
        self.get(secret).await.map(|(s, _)| s.value)
    }

    /// Reads one secret by name (optionally an older version).
    pub async fn get_secret(
        &self,
        scope: &Scope,
        key: &str,
        options: &GetOptions,
    ) -> Result<Secret, ClientError> {
        let body = self
            .execute(true, |v| api::get(v, scope, key, options))
            .await
            .map_err(|e| e.about(&scope.path, key))?;
        wire::decode_one(&body.body)
    }

    /// Creates a secret. `Err(PendingApproval)` when a change policy holds it.
    pub async fn create_secret(
        &self,
        scope: &Scope,
        secret: &NewSecret,
    ) -> Result<Secret, ClientError> {
        let body = self.execute(true, |v| api::create(v, scope, secret)).await?;
        wire::decode_one(&body.body)
    }

    /// Updates (and optionally renames) a secret. A 2024 server refuses an update without
    /// `secretValue` (a rename or a comment change alone): the current raw value is then read
    /// and sent along, once.
    pub async fn update_secret(
        &self,
        scope: &Scope,
        update: &SecretUpdate,
    ) -> Result<Secret, ClientError> {
        let first = self
            .execute(true, |v| api::update(v, scope, update))
            .await
            .map_err(|e| e.about(&scope.path, &update.key));
        let body = match first {
            Err(ClientError::InvalidInput { message })
                if update.value.is_none() && message.contains("secretValue") =>
            {
                let raw = GetOptions {
                    secret_type: update.secret_type,
                    expand_references: false,
                    include_imports: false,
                    version: None,
                };
                let current = self.get_secret(scope, &update.key, &raw).await?;
                let mut with_value = update.clone();
                with_value.value = Some(current.value);
                self.execute(true, |v| api::update(v, scope, &with_value)).await?
            }
            other => other?,
        };
        wire::decode_one(&body.body)
    }

    /// Updates a secret only if it is still at `expected_version` (the version read before).
    /// Infisical has no `If-Match`, so the secret is read again and compared first; a write
    /// landing between that read and this update is not caught, a change since the caller's
    /// read is. `Err(VersionConflict)` when the version moved.
    pub async fn update_secret_if_version(
        &self,
        scope: &Scope,
        update: &SecretUpdate,
        expected_version: u64,
    ) -> Result<Secret, ClientError> {
        let options = GetOptions {
            secret_type: update.secret_type,
            expand_references: false,
            include_imports: false,
            version: None,
        };
        let current = self.get_secret(scope, &update.key, &options).await?;
        if current.version != expected_version {
            return Err(ClientError::VersionConflict {
                key: update.key.clone(),
                folder: scope.path.clone(),
                expected: expected_version,
                found: current.version,
            });
        }
        self.update_secret(scope, update).await
    }

    pub async fn delete_secret(
        &self,
        scope: &Scope,
        key: &str,
        secret_type: SecretType,
    ) -> Result<Secret, ClientError> {
        let body = self
            .execute(true, |v| api::delete(v, scope, key, secret_type))
            .await
            .map_err(|e| e.about(&scope.path, key))?;
        wire::decode_one(&body.body)
    }

    /// Creates every item, in chunks within [`BatchLimits`] (see [`Client::batch_create_with`]).
    pub async fn batch_create(
        &self,
        scope: &Scope,
        items: &[NewSecret],
    ) -> Result<Vec<Secret>, ClientError> {
        self.batch_create_with(scope, items, &mut |_| {}).await
    }

    /// Creates every item in consecutive chunks within the client's [`BatchLimits`], calling
    /// `progress` after each chunk the server accepted. On an error the chunks reported so far
    /// are written and the rest is not.
    pub async fn batch_create_with(
        &self,
        scope: &Scope,
        items: &[NewSecret],
        progress: &mut (dyn FnMut(BatchProgress) + Send),
    ) -> Result<Vec<Secret>, ClientError> {
        self.chunked(items, progress, |chunk| async move {
            let body = self.execute(true, |v| api::batch_create(v, scope, chunk)).await?;
            wire::decode_many(&body.body)
        })
        .await
    }

    /// Creates or updates every item (`mode: upsert`), chunked as [`Client::batch_create_with`].
    pub async fn batch_upsert(
        &self,
        scope: &Scope,
        items: &[NewSecret],
    ) -> Result<Vec<Secret>, ClientError> {
        self.batch_upsert_with(scope, items, &mut |_| {}).await
    }

    pub async fn batch_upsert_with(
        &self,
        scope: &Scope,
        items: &[NewSecret],
        progress: &mut (dyn FnMut(BatchProgress) + Send),
    ) -> Result<Vec<Secret>, ClientError> {
        self.chunked(items, progress, |chunk| async move {
            let body = self.execute(true, |v| api::batch_upsert(v, scope, chunk)).await?;
            wire::decode_many(&body.body)
        })
        .await
    }

    /// Deletes every key, in chunks of at most `max_items` keys.
    pub async fn batch_delete(
        &self,
        scope: &Scope,
        keys: &[String],
    ) -> Result<Vec<Secret>, ClientError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(self.inner.batch_limits.max_items.max(1)) {
            let body = self.execute(true, |v| api::batch_delete(v, scope, chunk)).await?;
            out.extend(wire::decode_many(&body.body)?);
        }
        Ok(out)
    }

    async fn chunked<'a, F, Fut>(
        &self,
        items: &'a [NewSecret],
        progress: &mut (dyn FnMut(BatchProgress) + Send),
        send: F,
    ) -> Result<Vec<Secret>, ClientError>
    where
        F: Fn(&'a [NewSecret]) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<Secret>, ClientError>>,
    {
        let sizes = items.iter().map(|item| {
            let size = item.batch_item().to_string().len();
            (item.key.clone(), size)
        });
        let ranges = api::chunk_ranges(sizes, self.inner.batch_limits)?;
        let mut out = Vec::with_capacity(items.len());
        for (n, range) in ranges.iter().enumerate() {
            out.extend(send(&items[range.clone()]).await?);
            progress(BatchProgress {
                done: range.end,
                total: items.len(),
                chunk: n + 1,
                chunks: ranges.len(),
            });
        }
        Ok(out)
    }

    pub async fn list_folders(
        &self,
        project_id: &str,
        environment: &str,
        path: &str,
        recursive: bool,
    ) -> Result<Vec<Folder>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Folders {
            folders: Vec<Folder>,
        }
        let body = self
            .execute(false, |_| api::list_folders(project_id, environment, path, recursive))
            .await?;
        Ok(wire::decode_json::<Folders>(&body.body)?.folders)
    }

    /// Creates folder `name` under `parent`.
    pub async fn create_folder(
        &self,
        project_id: &str,
        environment: &str,
        parent: &str,
        name: &str,
    ) -> Result<Folder, ClientError> {
        #[derive(serde::Deserialize)]
        struct One {
            folder: Folder,
        }
        let body = self
            .execute(false, |_| api::create_folder(project_id, environment, parent, name))
            .await?;
        Ok(wire::decode_json::<One>(&body.body)?.folder)
    }

    pub async fn delete_folder(
        &self,
        project_id: &str,
        environment: &str,
        parent: &str,
        name: &str,
    ) -> Result<Folder, ClientError> {
        #[derive(serde::Deserialize)]
        struct One {
            folder: Folder,
        }
        let body = self
            .execute(false, |_| api::delete_folder(project_id, environment, parent, name))
            .await?;
        Ok(wire::decode_json::<One>(&body.body)?.folder)
    }

    /// The project and scopes of the service token this client uses (`GET /api/v2/service-token`);
    /// the CLI reads the project id from here when none is given.
    pub async fn service_token_info(&self) -> Result<ServiceTokenInfo, ClientError> {
        let body = self
            .execute(false, |_| {
                let mut call = Call::new(Method::GET, &["v2", "service-token"]);
                call.idempotent = true;
                call
            })
            .await?;
        wire::decode_json(&body.body)
    }

    /// Projects visible to the identity (`/api/v1/projects`, or `/api/v1/workspace` on servers
    /// without it), each with its environments.
    pub async fn list_projects(&self) -> Result<Vec<Project>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Projects {
            #[serde(default, alias = "workspaces")]
            projects: Vec<Project>,
        }
        let body =
            match self.send_authenticated(false, |_| api::list_projects(ApiVersion::V4)).await {
                Err(Refused { failure: Failure::RouteNotFound, .. }) => {
                    self.execute(false, |_| api::list_projects(ApiVersion::V3)).await?
                }
                other => other.map_err(Refused::into_error)?,
            };
        Ok(wire::decode_json::<Projects>(&body.body)?.projects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_value_is_refused_not_returned() {
        let folder = wire::decode_list(
            br#"{"secrets":[{"secretKey":"HIDDEN","secretValue":"<hidden-by-infisical>","secretValueHidden":true},{"secretKey":"OPEN","secretValue":"v"}]}"#,
        )
        .unwrap();
        let r = |k: &str| SecretRef::new("p", "dev", "/", k).unwrap();
        let hidden = pick(&folder, &r("HIDDEN"), ImportOrder::LaterWins).unwrap_err();
        assert!(matches!(hidden, ClientError::PermissionDenied { .. }), "{hidden:?}");
        assert_eq!(pick(&folder, &r("OPEN"), ImportOrder::LaterWins).unwrap().value.expose(), "v");
        let missing = pick(&folder, &r("NOPE"), ImportOrder::LaterWins).unwrap_err();
        assert!(matches!(missing, ClientError::NotFound { .. }));
    }
}
