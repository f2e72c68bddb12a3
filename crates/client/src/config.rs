//! Client configuration: a builder with documented defaults, and a pure reader of the Infisical
//! CLI's environment variable names over an env map (tests never touch the process env).

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use url::Url;
use zeroize::Zeroizing;

use crate::auth::{AuthMethod, Credential};
use crate::clock::{Clock, Sleeper, SystemClock, TokioSleeper};
use crate::error::ClientError;
use crate::retry::{BreakerConfig, BudgetConfig, RetryPolicy};
use crate::sigv4::AwsCredentials;
use crate::wire::ImportOrder;

/// Infisical Cloud, the default when no URL is configured.
pub const DEFAULT_API_URL: &str = "https://app.infisical.com/api";

/// Everything a [`crate::Client`] needs. Build with [`ClientConfig::new`] and the `with_*` setters.
#[derive(Clone)]
pub struct ClientConfig {
    pub(crate) api_url: Url,
    pub(crate) auth: AuthMethod,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) budget: BudgetConfig,
    pub(crate) breaker: BreakerConfig,
    pub(crate) custom_headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) import_order: ImportOrder,
    pub(crate) organization_slug: Option<String>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) sleeper: Arc<dyn Sleeper>,
    pub(crate) rng_seed: Option<u64>,
    pub(crate) user_agent: String,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("api_url", &self.api_url.as_str())
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
            .finish_non_exhaustive()
    }
}

/// Normalises a configured URL the way the CLI does: `/api` is appended when missing.
pub fn normalize_api_url(raw: &str) -> Result<Url, ClientError> {
    let trimmed = raw.trim().trim_end_matches('/');
    let with_api =
        if trimmed.ends_with("/api") { format!("{trimmed}/") } else { format!("{trimmed}/api/") };
    let url = Url::parse(&with_api)
        .map_err(|e| ClientError::Config(format!("invalid api url {raw:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ClientError::Config(format!("api url {raw:?} must be http or https")));
    }
    Ok(url)
}

impl ClientConfig {
    /// Defaults: connect timeout 5 s, request timeout 30 s, 4 attempts with full-jitter backoff
    /// from 200 ms up to 10 s, a budget of 50 requests refilled at 8 per second, a breaker that
    /// opens for 30 s after 8 consecutive failures, the CLI's import order, system time.
    pub fn new(api_url: &str, auth: AuthMethod) -> Result<Self, ClientError> {
        Ok(Self {
            api_url: normalize_api_url(api_url)?,
            auth,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            budget: BudgetConfig::default(),
            breaker: BreakerConfig::default(),
            custom_headers: Vec::new(),
            import_order: ImportOrder::default(),
            organization_slug: None,
            clock: Arc::new(SystemClock),
            sleeper: Arc::new(TokioSleeper),
            rng_seed: None,
            user_agent: format!("ikit-client/{}", env!("CARGO_PKG_VERSION")),
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

    pub fn with_budget(mut self, budget: BudgetConfig) -> Self {
        self.budget = budget;
        self
    }

    pub fn with_breaker(mut self, breaker: BreakerConfig) -> Self {
        self.breaker = breaker;
        self
    }

    /// Headers added to every Infisical call (see [`parse_custom_headers`]).
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

    /// Reads the Infisical CLI's variable names from an env map:
    /// `INFISICAL_API_URL` (or `INFISICAL_DOMAIN`), `INFISICAL_TOKEN`,
    /// `INFISICAL_UNIVERSAL_AUTH_CLIENT_ID`/`_SECRET`, `INFISICAL_AUTH_METHOD` with
    /// `INFISICAL_MACHINE_IDENTITY_ID` for the other methods, `INFISICAL_JWT` (a value, or a file
    /// path with `INFISICAL_JWT_FILE`), `INFISICAL_KUBERNETES_SERVICE_ACCOUNT_TOKEN_PATH`, the
    /// standard `AWS_*` variables, `INFISICAL_CUSTOM_HEADERS`, `INFISICAL_AUTH_ORGANIZATION_SLUG`.
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, ClientError> {
        let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let url = get("INFISICAL_API_URL").or(get("INFISICAL_DOMAIN")).unwrap_or(DEFAULT_API_URL);
        let auth = auth_from_env(&get)?;
        let mut config = Self::new(url, auth)?;
        if let Some(headers) = get("INFISICAL_CUSTOM_HEADERS") {
            config.custom_headers = parse_custom_headers(headers)?;
        }
        if let Some(slug) = get("INFISICAL_AUTH_ORGANIZATION_SLUG") {
            config.organization_slug = Some(slug.to_owned());
        }
        Ok(config)
    }
}

fn auth_from_env<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<AuthMethod, ClientError> {
    if let Some(token) = get("INFISICAL_TOKEN").or(get("INFISICAL_ACCESS_TOKEN")) {
        return Ok(AuthMethod::token(token));
    }
    let method = get("INFISICAL_AUTH_METHOD").unwrap_or("universal-auth");
    let identity = || {
        get("INFISICAL_MACHINE_IDENTITY_ID").map(str::to_owned).ok_or_else(|| {
            ClientError::Config(format!("{method} needs INFISICAL_MACHINE_IDENTITY_ID"))
        })
    };
    let jwt = || match (get("INFISICAL_JWT"), get("INFISICAL_JWT_FILE")) {
        (Some(v), _) => Ok(Credential::value(v)),
        (None, Some(path)) => Ok(Credential::File(PathBuf::from(path))),
        (None, None) => Err(ClientError::Config(format!("{method} needs INFISICAL_JWT"))),
    };
    match method {
        "universal-auth" | "universal" => {
            match (
                get("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID"),
                get("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET"),
            ) {
                (Some(id), Some(secret)) => Ok(AuthMethod::universal(id, secret)),
                _ => Err(ClientError::Config(
                    "set INFISICAL_TOKEN or INFISICAL_UNIVERSAL_AUTH_CLIENT_ID and _SECRET".into(),
                )),
            }
        }
        "kubernetes" | "kubernetes-auth" => Ok(AuthMethod::kubernetes(
            identity()?,
            get("INFISICAL_KUBERNETES_SERVICE_ACCOUNT_TOKEN_PATH").map(PathBuf::from),
        )),
        "oidc-auth" | "oidc" => Ok(AuthMethod::Oidc { identity_id: identity()?, jwt: jwt()? }),
        "jwt-auth" | "jwt" => Ok(AuthMethod::Jwt { identity_id: identity()?, jwt: jwt()? }),
        "aws-iam" | "aws-auth" => {
            let need =
                |k: &str| get(k).ok_or_else(|| ClientError::Config(format!("aws-iam needs {k}")));
            Ok(AuthMethod::AwsIam {
                identity_id: identity()?,
                credentials: AwsCredentials {
                    access_key_id: need("AWS_ACCESS_KEY_ID")?.to_owned(),
                    secret_access_key: Zeroizing::new(need("AWS_SECRET_ACCESS_KEY")?.to_owned()),
                    session_token: get("AWS_SESSION_TOKEN").map(|t| Zeroizing::new(t.to_owned())),
                },
                region: get("AWS_REGION")
                    .or(get("AWS_DEFAULT_REGION"))
                    .unwrap_or("us-east-1")
                    .into(),
                sts_host: None,
            })
        }
        "azure" | "azure-auth" => Ok(AuthMethod::azure(identity()?)),
        "gcp-id-token" | "gcp-auth" => Ok(AuthMethod::gcp_id_token(identity()?)),
        other => Err(ClientError::Config(format!("unknown auth method {other:?}"))),
    }
}

/// Parses `INFISICAL_CUSTOM_HEADERS`: `Name1=value1 Name2="value with spaces" Name3='x'`.
/// `User-Agent` and `Accept` are ignored as the CLI does; `Authorization` is ignored too so a
/// stray variable cannot replace the bearer token. Values are marked sensitive.
pub fn parse_custom_headers(raw: &str) -> Result<Vec<(HeaderName, HeaderValue)>, ClientError> {
    let mut out = Vec::new();
    let mut chars = raw.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if name.is_empty() || name.chars().any(char::is_whitespace) {
            return Err(ClientError::Config(format!(
                "INFISICAL_CUSTOM_HEADERS: expected Name=value, got {name:?}"
            )));
        }
        let mut value = String::new();
        match chars.peek().copied() {
            Some(q @ ('"' | '\'')) => {
                chars.next();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == q {
                        closed = true;
                        break;
                    }
                    value.push(c);
                }
                if !closed {
                    return Err(ClientError::Config(format!(
                        "INFISICAL_CUSTOM_HEADERS: unclosed quote in {name}"
                    )));
                }
            }
            _ => {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            ClientError::Config(format!("INFISICAL_CUSTOM_HEADERS: invalid header name {name:?}"))
        })?;
        if matches!(header.as_str(), "user-agent" | "accept" | "authorization") {
            continue;
        }
        let mut header_value = HeaderValue::from_str(&value).map_err(|_| {
            ClientError::Config(format!("INFISICAL_CUSTOM_HEADERS: invalid value for {name}"))
        })?;
        header_value.set_sensitive(true);
        out.push((header, header_value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn api_url_gets_api_appended_once() {
        for (raw, want) in [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/api/"),
            ("http://h/api", "http://h/api/"),
            ("http://h/api/", "http://h/api/"),
            ("https://eu.infisical.com/", "https://eu.infisical.com/api/"),
        ] {
            assert_eq!(normalize_api_url(raw).unwrap().as_str(), want, "{raw}");
        }
        assert!(normalize_api_url("ftp://x").is_err());
        assert!(normalize_api_url("not a url").is_err());
    }

    #[test]
    fn custom_headers_parse_quotes_and_skip_reserved_names() {
        let headers = parse_custom_headers(
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
        assert!(parse_custom_headers("").unwrap().is_empty());
        assert!(parse_custom_headers("X=\"open").is_err());
        assert!(parse_custom_headers("bad header=1").is_err());
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
        assert_eq!(t.api_url().as_str(), DEFAULT_API_URL.to_owned() + "/");

        let k = ClientConfig::from_env(&env(&[
            ("INFISICAL_AUTH_METHOD", "kubernetes"),
            ("INFISICAL_MACHINE_IDENTITY_ID", "mid"),
        ]))
        .unwrap();
        match k.auth() {
            AuthMethod::Kubernetes { token_path, .. } => {
                assert_eq!(token_path, &PathBuf::from(crate::auth::DEFAULT_K8S_TOKEN_PATH))
            }
            other => panic!("{other:?}"),
        }
        let aws = ClientConfig::from_env(&env(&[
            ("INFISICAL_AUTH_METHOD", "aws-iam"),
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
            ClientConfig::from_env(&env(&[("INFISICAL_AUTH_METHOD", "jwt-auth")])).is_err(),
            "jwt-auth without an identity id"
        );
        let debug = format!("{c:?}");
        assert!(!debug.contains("\"cs\"") && !debug.contains("t1"), "{debug}");
    }
}
