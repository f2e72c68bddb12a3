//! Client configuration: a builder with documented defaults, and a pure reader of the Infisical
//! CLI's environment variable names over an env map (tests never touch the process env).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ikit_common::Settings;
use ikit_common::config::{
    AuthMethod as Common, CloudSettings, DEFAULT_API_URL, InfisicalSettings, normalize_api_url,
    redact_url,
};
use reqwest::header::{HeaderName, HeaderValue};
use url::Url;
use zeroize::Zeroizing;

use crate::api::{ApiVersion, BatchLimits};
use crate::auth::{AuthMethod, Credential};
use crate::aws::{
    AwsCredentialChain, AwsCredentialSource, ContainerCredentials, DEFAULT_IMDS_ENDPOINT,
    ECS_CREDENTIALS_HOST, WebIdentity,
};
use crate::clock::{Clock, Sleeper, TokioSleeper};
use crate::error::ClientError;
use crate::retry::{BreakerConfig, BudgetConfig, RetryPolicy};
use crate::sigv4::AwsCredentials;
use crate::wire::ImportOrder;

/// Everything a [`crate::Client`] needs. Build with [`ClientConfig::new`] and the `with_*` setters.
#[derive(Clone)]
pub struct ClientConfig {
    pub(crate) api_url: Url,
    pub(crate) auth: AuthMethod,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    /// A client-side floor under the server's pacing; off (`None`) by default.
    pub(crate) budget: Option<BudgetConfig>,
    pub(crate) breaker: BreakerConfig,
    pub(crate) custom_headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) import_order: ImportOrder,
    pub(crate) organization_slug: Option<String>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) sleeper: Arc<dyn Sleeper>,
    pub(crate) rng_seed: Option<u64>,
    /// A PEM bundle of extra trusted roots, read when the client is built.
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) root_certificates_pem: Option<Vec<u8>>,
    /// The secrets dialect a previous process found; probed when `None`.
    pub(crate) api_version: Option<ApiVersion>,
    pub(crate) batch_limits: BatchLimits,
}

/// The `User-Agent` of every request this crate sends to Infisical.
pub(crate) const USER_AGENT: &str = concat!("ikit-client/", env!("CARGO_PKG_VERSION"));

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("api_url", &redact_url(self.api_url.as_str()))
            .field("auth", &self.auth)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .field("budget", &self.budget)
            .field("breaker", &self.breaker)
            .field(
                "custom_headers",
                &self.custom_headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("import_order", &self.import_order)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// The API base as a URL ending in `/api/`, normalised by `ikit_common`'s rule (the CLI's: `/api`
/// is appended when missing), so a path joined onto it stays under `/api`.
fn api_base(raw: &str) -> Result<Url, ClientError> {
    let normalized = normalize_api_url(raw.trim())
        .map_err(|e| ClientError::Config(format!("invalid api url: {e}")))?;
    Url::parse(&format!("{normalized}/"))
        .map_err(|e| ClientError::Config(format!("invalid api url {:?}: {e}", redact_url(raw))))
}

impl ClientConfig {
    /// Defaults: connect timeout 5 s, request timeout 30 s, 4 attempts with full-jitter backoff
    /// from 200 ms up to 10 s, pacing from the server's `x-ratelimit-*` headers with no client-side
    /// budget (see [`ClientConfig::with_budget`]), a breaker that
    /// opens for 30 s after 8 consecutive failures, the CLI's import order, system time.
    pub fn new(api_url: &str, auth: AuthMethod) -> Result<Self, ClientError> {
        Ok(Self {
            api_url: api_base(api_url)?,
            auth,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            budget: None,
            breaker: BreakerConfig::default(),
            custom_headers: Vec::new(),
            import_order: ImportOrder::default(),
            organization_slug: None,
            clock: crate::clock::system_clock(),
            sleeper: Arc::new(TokioSleeper),
            rng_seed: None,
            ca_file: None,
            root_certificates_pem: None,
            api_version: None,
            batch_limits: BatchLimits::default(),
        })
    }

    pub fn with_timeouts(mut self, connect: Duration, request: Duration) -> Self {
        self.connect_timeout = connect;
        self.request_timeout = request;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// A client-side request budget (`IKIT_RATE_LIMIT_BURST` / `_PER_SECOND`) on top of the
    /// pacing the server's rate-limit headers ask for: a floor for servers that send none.
    pub fn with_budget(mut self, budget: BudgetConfig) -> Self {
        self.budget = Some(budget);
        self
    }

    pub fn with_breaker(mut self, breaker: BreakerConfig) -> Self {
        self.breaker = breaker;
        self
    }

    /// Headers added to every Infisical call (see [`custom_headers`]).
    pub fn with_custom_headers(mut self, headers: Vec<(HeaderName, HeaderValue)>) -> Self {
        self.custom_headers = headers;
        self
    }

    pub fn with_import_order(mut self, order: ImportOrder) -> Self {
        self.import_order = order;
        self
    }

    /// A sub-organization slug sent on login.
    pub fn with_organization_slug(mut self, slug: impl Into<String>) -> Self {
        self.organization_slug = Some(slug.into());
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }

    /// Trusts the roots in the PEM bundle at `path` too (`IKIT_CA_FILE` / `SSL_CERT_FILE`), beside
    /// the system's and the built-in ones: a self-hosted server behind a private CA.
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Trusts the roots of a PEM bundle given in memory too.
    pub fn with_root_certificates_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificates_pem = Some(pem.into());
        self
    }

    /// Starts in the dialect a previous process found ([`crate::Client::api_version`]), so a
    /// warm start does not probe v4 on a server without it. A wrong guess costs one probe: v4 still
    /// falls back on a route-not-found, and every server has v3.
    pub fn with_api_version(mut self, version: ApiVersion) -> Self {
        self.api_version = Some(version);
        self
    }

    /// The chunk limits of batch writes.
    pub fn with_batch_limits(mut self, limits: BatchLimits) -> Self {
        self.batch_limits = limits;
        self
    }

    /// Seeds the backoff jitter (tests); entropy otherwise.
    pub fn with_rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = Some(seed);
        self
    }

    pub fn api_url(&self) -> &Url {
        &self.api_url
    }

    pub fn auth(&self) -> &AuthMethod {
        &self.auth
    }

    /// Builds a configuration from the shared settings: the one reading of the environment is
    /// `ikit_common::Settings::load`, so every variable means the same thing in every binary.
    /// The cache and snapshot settings are mapped by [`crate::CachedClientBuilder::settings`].
    pub fn from_settings(settings: &Settings) -> Result<Self, ClientError> {
        let infisical = &settings.infisical;
        let auth = auth_from_settings(infisical)?;
        let mut config = Self::new(&infisical.api_url, auth)?;
        config.custom_headers = header_pairs(&infisical.custom_headers)?;
        config.organization_slug = infisical.organization_slug.clone();
        config.ca_file = infisical.ca_file.clone();
        config.budget = infisical
            .rate_limit
            .map(|r| BudgetConfig { capacity: r.burst, refill_per_sec: r.per_second });
        Ok(config)
    }

    /// `Settings::load(None, env)` and [`ClientConfig::from_settings`]: the Infisical CLI's
    /// variable names (`INFISICAL_API_URL` or `INFISICAL_DOMAIN`, `INFISICAL_TOKEN`,
    /// `INFISICAL_UNIVERSAL_AUTH_CLIENT_ID`/`_SECRET`, `IKIT_INFISICAL_AUTH_METHOD` with
    /// `INFISICAL_MACHINE_IDENTITY_ID`, `INFISICAL_JWT` or `INFISICAL_JWT_FILE`, the standard
    /// `AWS_*` variables, `INFISICAL_CUSTOM_HEADERS`, ...) read from a map, never the process env.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Self, ClientError> {
        let settings = Settings::load(None, env).map_err(|e| ClientError::Config(e.to_string()))?;
        Self::from_settings(&settings)
    }
}

fn auth_from_settings(infisical: &InfisicalSettings) -> Result<AuthMethod, ClientError> {
    let cloud = &infisical.cloud;
    let jwt = |value: &ikit_common::SecretValue| match (&infisical.jwt_file, value.expose()) {
        (Some(path), "") => Credential::File(path.clone()),
        (_, v) => Credential::value(v),
    };
    Ok(match &infisical.auth {
        Common::None => {
            return Err(ClientError::Config(
                "no infisical auth configured: set INFISICAL_TOKEN or \
                 INFISICAL_UNIVERSAL_AUTH_CLIENT_ID and _SECRET"
                    .into(),
            ));
        }
        Common::Token(token) => AuthMethod::token(token.expose()),
        Common::UniversalAuth { client_id, client_secret } => {
            AuthMethod::universal(client_id, client_secret.expose())
        }
        Common::Kubernetes { identity_id, token_path } => {
            AuthMethod::kubernetes(identity_id, Some(token_path.clone()))
        }
        Common::OidcAuth { identity_id, jwt: value } => {
            AuthMethod::Oidc { identity_id: identity_id.clone(), jwt: jwt(value) }
        }
        Common::JwtAuth { identity_id, jwt: value } => {
            AuthMethod::Jwt { identity_id: identity_id.clone(), jwt: jwt(value) }
        }
        Common::AwsIam { identity_id } => AuthMethod::AwsIam {
            identity_id: identity_id.clone(),
            credentials: AwsCredentialSource::chain(aws_chain(cloud)?),
            region: cloud.aws_region.clone().unwrap_or_else(|| "us-east-1".into()),
            sts_host: cloud.aws_sts_host.clone(),
        },
        Common::Azure { identity_id } => {
            let mut method = AuthMethod::azure(identity_id);
            if let (AuthMethod::Azure { imds_url, .. }, Some(url)) =
                (&mut method, &cloud.azure_imds_url)
            {
                imds_url.clone_from(url);
            }
            method
        }
        Common::GcpIdToken { identity_id } => {
            let mut method = AuthMethod::gcp_id_token(identity_id);
            if let (AuthMethod::GcpIdToken { metadata_url, .. }, Some(url)) =
                (&mut method, &cloud.gcp_metadata_url)
            {
                metadata_url.clone_from(url);
            }
            method
        }
    })
}

/// The standard AWS credential chain from the standard variables: static keys when both are
/// set, a web identity when its token file and role are, container credentials when a URI is,
/// else the instance role unless `AWS_EC2_METADATA_DISABLED`.
fn aws_chain(cloud: &CloudSettings) -> Result<AwsCredentialChain, ClientError> {
    let chain = &cloud.aws_chain;
    let fixed = match (&cloud.aws_access_key_id, &cloud.aws_secret_access_key) {
        (Some(id), Some(secret)) => Some(AwsCredentials {
            access_key_id: id.clone(),
            secret_access_key: Zeroizing::new(secret.expose().to_owned()),
            session_token: cloud
                .aws_session_token
                .as_ref()
                .map(|t| Zeroizing::new(t.expose().to_owned())),
        }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ClientError::Config(
                "aws-iam: AWS_ACCESS_KEY_ID without AWS_SECRET_ACCESS_KEY".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(ClientError::Config(
                "aws-iam: AWS_SECRET_ACCESS_KEY without AWS_ACCESS_KEY_ID".into(),
            ));
        }
    };
    let web_identity = match (&chain.web_identity_token_file, &chain.role_arn) {
        (Some(token_file), Some(role_arn)) => Some(WebIdentity {
            token_file: token_file.clone(),
            role_arn: role_arn.clone(),
            session_name: chain.role_session_name.clone(),
            sts_endpoint: chain.sts_endpoint.clone(),
        }),
        _ => None,
    };
    let container_url = match (&chain.container_full_uri, &chain.container_relative_uri) {
        (Some(full), _) => Some(full.clone()),
        (None, Some(relative)) => Some(format!("{ECS_CREDENTIALS_HOST}{relative}")),
        (None, None) => None,
    };
    let container = container_url.map(|url| ContainerCredentials {
        url,
        authorization: match (
            &chain.container_authorization_token_file,
            &chain.container_authorization_token,
        ) {
            (Some(file), _) => Some(Credential::File(file.clone())),
            (None, Some(token)) => Some(Credential::value(token.expose())),
            (None, None) => None,
        },
    });
    let instance_metadata = (!chain.ec2_metadata_disabled).then(|| {
        chain.ec2_metadata_endpoint.clone().unwrap_or_else(|| DEFAULT_IMDS_ENDPOINT.to_owned())
    });
    Ok(AwsCredentialChain { fixed, web_identity, container, instance_metadata })
}

/// Custom headers parsed by `ikit_common::config::parse_custom_headers`, as HTTP headers marked
/// sensitive. `Authorization` is dropped so a stray variable cannot replace the bearer token.
pub(crate) fn header_pairs(
    pairs: &[(String, ikit_common::SecretValue)],
) -> Result<Vec<(HeaderName, HeaderValue)>, ClientError> {
    let mut out = Vec::with_capacity(pairs.len());
    for (name, value) in pairs {
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            ClientError::Config(format!("INFISICAL_CUSTOM_HEADERS: invalid header name {name:?}"))
        })?;
        if header == reqwest::header::AUTHORIZATION {
            continue;
        }
        let mut v = HeaderValue::from_str(value.expose()).map_err(|_| {
            ClientError::Config(format!("INFISICAL_CUSTOM_HEADERS: invalid value for {name}"))
        })?;
        v.set_sensitive(true);
        out.push((header, v));
    }
    Ok(out)
}

/// A refused login at Infisical Cloud, when that is only the default: a forgotten
/// `INFISICAL_API_URL` sends a self-hosted identity's credentials to app.infisical.com, which
/// refuses them in words that do not mention the address.
pub(crate) fn name_the_default_server(e: ClientError, base: &Url) -> ClientError {
    match e {
        ClientError::Auth { message } if is_default_server(base) => ClientError::Auth {
            message: format!(
                "{message} (at {}, Infisical Cloud, the default when INFISICAL_API_URL is not set)",
                base.host_str().unwrap_or_default()
            ),
        },
        other => other,
    }
}

fn is_default_server(url: &Url) -> bool {
    let default = Url::parse(DEFAULT_API_URL).ok();
    default.is_some_and(|d| d.host_str() == url.host_str())
}

/// What a network failure to `url` most likely means, said out loud where the bare cause (from
/// the resolver, the socket or TLS) leaves a new user guessing. `cause` is the error chain's text.
pub(crate) fn network_hint(url: &Url, cause: &str) -> Option<String> {
    let host = url.host_str().unwrap_or_default();
    let cause = cause.to_ascii_lowercase();
    if is_default_server(url) {
        return Some(format!(
            "{host} is Infisical Cloud, the default when INFISICAL_API_URL is not set: set it to \
             reach your own server"
        ));
    }
    let tls_garbage = ["corrupt message", "invalidcontenttype", "wrong version number"];
    if url.scheme() == "https" && tls_garbage.iter().any(|t| cause.contains(t)) {
        return Some(format!(
            "{host} did not answer TLS: if it serves plain http, use http:// in INFISICAL_API_URL"
        ));
    }
    if cause.contains("dns error") || cause.contains("failed to lookup address") {
        return Some(format!("unknown host {host}: check INFISICAL_API_URL"));
    }
    if cause.contains("connection refused") {
        let port = url.port_or_known_default().unwrap_or_default();
        return Some(format!(
            "nothing listens on {host}:{port}: is the server running, is the port right?"
        ));
    }
    None
}

/// Parses `INFISICAL_CUSTOM_HEADERS` text with `ikit_common`'s parser (the CLI's rules) into
/// headers for [`ClientConfig::with_custom_headers`].
pub fn custom_headers(text: &str) -> Result<Vec<(HeaderName, HeaderValue)>, ClientError> {
    let pairs = ikit_common::config::parse_custom_headers(text)
        .map_err(|e| ClientError::Config(format!("INFISICAL_CUSTOM_HEADERS: {e}")))?;
    header_pairs(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn network_failures_get_a_hint_naming_the_likely_mistake() {
        let hint = |url: &str, cause: &str| network_hint(&Url::parse(url).unwrap(), cause);
        let cloud = hint("https://app.infisical.com/api/v1/auth", "dns error").unwrap();
        assert!(cloud.contains("INFISICAL_API_URL is not set"), "{cloud}");
        let tls = hint(
            "https://127.0.0.1:8090/api/",
            "invalid peer certificate: received corrupt message of type InvalidContentType",
        )
        .unwrap();
        assert!(tls.contains("use http://"), "{tls}");
        let dns = hint(
            "http://infisical.internal/api/",
            "dns error: failed to lookup address information: Name or service not known",
        )
        .unwrap();
        assert!(dns.contains("unknown host infisical.internal"), "{dns}");
        let closed =
            hint("http://127.0.0.1:9/api/", "tcp connect error: Connection refused").unwrap();
        assert!(closed.contains("127.0.0.1:9"), "{closed}");
        assert_eq!(hint("http://127.0.0.1:9/api/", "operation timed out"), None);

        let refused = || ClientError::Auth { message: "login refused: Invalid credentials".into() };
        let cloud = name_the_default_server(refused(), &api_base(DEFAULT_API_URL).unwrap());
        assert!(cloud.to_string().contains("INFISICAL_API_URL is not set"), "{cloud}");
        let own = name_the_default_server(refused(), &api_base("http://127.0.0.1:8090").unwrap());
        assert_eq!(own.to_string(), refused().to_string());
    }

    #[test]
    fn api_url_gets_api_appended_once() {
        for (raw, want) in [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/api/"),
            ("http://h/api", "http://h/api/"),
            ("http://h/api/", "http://h/api/"),
            ("https://eu.infisical.com/", "https://eu.infisical.com/api/"),
        ] {
            assert_eq!(api_base(raw).unwrap().as_str(), want, "{raw}");
            // One rule, ikit_common's: the same base the shared settings produce.
            assert_eq!(api_base(raw).unwrap().as_str(), normalize_api_url(raw).unwrap() + "/");
        }
        assert_eq!(api_base(" http://h ").unwrap().as_str(), "http://h/api/");
        for bad in ["ftp://x", "not a url", "http://", "http://bad host"] {
            assert!(
                matches!(api_base(bad), Err(ClientError::Config(ref m)) if m.contains("api url")),
                "{bad}"
            );
        }
    }

    #[test]
    fn urls_with_credentials_are_redacted_in_debug_and_errors() {
        let c = ClientConfig::new(
            "https://user:api-pw-value@infisical.example.com",
            AuthMethod::token("st.a.b.c"),
        )
        .unwrap();
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("api-pw-value") && debug.contains("infisical.example.com"),
            "{debug}"
        );
        for bad in ["http://user:bad-pw-value@bad host", "https://u:bad-pw-value@/x"] {
            let err = api_base(bad).unwrap_err().to_string();
            assert!(!err.contains("bad-pw-value"), "{err}");
        }
        let azure = AuthMethod::Azure {
            identity_id: "i".into(),
            resource: "r".into(),
            imds_url: "http://127.0.0.1:1/token?sig=imds-pw-value".into(),
        };
        assert!(!format!("{azure:?}").contains("imds-pw-value"));
    }

    #[test]
    fn custom_headers_use_the_shared_parser_and_drop_authorization() {
        let headers = custom_headers(
            r#"X-One=1  X-Two="two words" X-Three='a=b' User-Agent=x Accept=y Authorization=z"#,
        )
        .unwrap();
        let got: Vec<(String, String)> =
            headers.iter().map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned())).collect();
        assert_eq!(
            got,
            [("x-one", "1"), ("x-two", "two words"), ("x-three", "a=b")]
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert!(headers.iter().all(|(_, v)| v.is_sensitive()));
        assert!(custom_headers("").unwrap().is_empty());
        assert!(custom_headers("NoEquals").is_err());
        assert!(custom_headers("Bad(Name)=1").is_err());
    }

    #[test]
    fn reads_the_cli_variable_names() {
        let c = ClientConfig::from_env(&env(&[
            ("INFISICAL_API_URL", "http://127.0.0.1:9"),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", "cid"),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", "cs"),
            ("INFISICAL_CUSTOM_HEADERS", "X-Tenant=t1"),
        ]))
        .unwrap();
        assert_eq!(c.api_url().as_str(), "http://127.0.0.1:9/api/");
        assert_eq!(c.auth().name(), "universal-auth");
        assert_eq!(c.custom_headers.len(), 1);

        let t = ClientConfig::from_env(&env(&[("INFISICAL_TOKEN", "st.a.b.c")])).unwrap();
        assert_eq!(t.auth().name(), "service-token");
        assert_eq!(t.api_url().as_str(), ikit_common::config::DEFAULT_API_URL.to_owned() + "/");

        let k = ClientConfig::from_env(&env(&[
            ("IKIT_INFISICAL_AUTH_METHOD", "kubernetes"),
            ("INFISICAL_MACHINE_IDENTITY_ID", "mid"),
        ]))
        .unwrap();
        match k.auth() {
            AuthMethod::Kubernetes { token_path, .. } => {
                assert_eq!(
                    token_path,
                    &std::path::PathBuf::from(ikit_common::config::DEFAULT_K8S_TOKEN_PATH)
                )
            }
            other => panic!("{other:?}"),
        }
        let aws = ClientConfig::from_env(&env(&[
            ("IKIT_INFISICAL_AUTH_METHOD", "aws-iam"),
            ("INFISICAL_MACHINE_IDENTITY_ID", "mid"),
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "SK"),
            ("AWS_REGION", "eu-central-1"),
        ]))
        .unwrap();
        assert!(
            matches!(aws.auth(), AuthMethod::AwsIam { region, .. } if region == "eu-central-1")
        );
        assert!(ClientConfig::from_env(&env(&[])).is_err());
        assert!(
            ClientConfig::from_env(&env(&[("IKIT_INFISICAL_AUTH_METHOD", "jwt-auth")])).is_err(),
            "jwt-auth without an identity id"
        );
        assert_eq!(c.budget, None, "no client-side budget by default");
        let container = env(&[
            ("IKIT_INFISICAL_AUTH_METHOD", "aws-iam"),
            ("INFISICAL_MACHINE_IDENTITY_ID", "mid"),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:9/creds"),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "container-token-qqq"),
        ]);
        let settings = Settings::load(None, &container).unwrap();
        let aws = ClientConfig::from_settings(&settings).unwrap();
        let shown = format!("{settings:?} {aws:?}");
        assert!(!shown.contains("container-token-qqq"), "{shown}");
        assert!(shown.contains("container"), "the source is named: {shown}");
        let floor = ClientConfig::from_env(&env(&[
            ("INFISICAL_TOKEN", "st.a.b.c"),
            ("IKIT_RATE_LIMIT_BURST", "20"),
            ("IKIT_RATE_LIMIT_PER_SECOND", "2.5"),
        ]))
        .unwrap();
        assert_eq!(floor.budget, Some(BudgetConfig { capacity: 20.0, refill_per_sec: 2.5 }));
        let bad = ClientConfig::from_env(&env(&[
            ("INFISICAL_TOKEN", "st.a.b.c"),
            ("IKIT_RATE_LIMIT_PER_SECOND", "fast"),
        ]));
        assert!(bad.unwrap_err().to_string().contains("IKIT_RATE_LIMIT_PER_SECOND"));
        let debug = format!("{c:?}");
        assert!(!debug.contains("\"cs\"") && !debug.contains("t1"), "{debug}");
    }
}
