//! Settings: a pure function over an optional TOML file and an env map.
//!
//! Environment overrides the file, the file overrides defaults. The Infisical CLI's own variable
//! names are read as the CLI reads them (`INFISICAL_TOKEN`, `INFISICAL_DOMAIN`, …), so CI
//! recipes written for the CLI work unchanged; our own settings use `IKIT_*` names. A bad
//! configuration reports every bad field at once, each naming the field and where its value came
//! from, and never echoes a secret value. Nothing here reads the process environment: binaries
//! pass [`env_map_from_process`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::secret::{SecretValue, validate_environment};

pub const DEFAULT_API_URL: &str = "https://app.infisical.com/api";
pub const DEFAULT_ENVIRONMENT: &str = "dev";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://.ikit-dev/ikit.db?mode=rwc";
pub const DEFAULT_K8S_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
pub const DEFAULT_WEBHOOK_ADDR: &str = "0.0.0.0:8080";
pub const DEFAULT_HEALTH_ADDR: &str = "0.0.0.0:8081";
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);
pub const DEFAULT_CACHE_MAX_STALE: Duration = Duration::from_secs(24 * 3600);
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// The process environment as a map; the one place that reads it. For binaries only.
pub fn env_map_from_process() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Everything a binary of infisical-kit is configured with.
#[derive(Clone)]
pub struct Settings {
    pub infisical: InfisicalSettings,
    /// `postgres://…` or `sqlite:…`; may hold a password (redacted in `Debug`).
    pub database_url: String,
    /// `redis://…`; optional (no L2 cache and no fan-out without it).
    pub redis_url: Option<String>,
    pub log_format: LogFormat,
    /// An `EnvFilter` directive (`RUST_LOG`), `info` by default.
    pub log_filter: String,
    /// OTLP/HTTP collector base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`); no export when unset.
    pub otlp_endpoint: Option<String>,
    pub webhook_addr: SocketAddr,
    pub health_addr: SocketAddr,
    pub cache_ttl: Duration,
    pub cache_max_stale: Duration,
    /// `IKIT_CACHE_KEY`: base64 of the 32-byte AES-256-GCM key sealing L2 cache values in Redis
    /// (no L2 without it).
    pub cache_key: Option<SecretValue>,
    /// `IKIT_SNAPSHOT_DIR`: where the client keeps its encrypted offline snapshots.
    pub snapshot_dir: Option<PathBuf>,
    /// `IKIT_SNAPSHOT_KEY`: base64 of the 32-byte AES-256-GCM snapshot key.
    pub snapshot_key: Option<SecretValue>,
    /// Bearer token for the admin endpoints; admin endpoints are off when unset.
    pub admin_token: Option<SecretValue>,
}

/// Where Infisical is and how to log in.
#[derive(Clone)]
pub struct InfisicalSettings {
    /// Base URL ending in `/api`.
    pub api_url: String,
    pub project_id: Option<String>,
    pub environment: String,
    pub auth: AuthMethod,
    /// `INFISICAL_CUSTOM_HEADERS`, added to every API call. Values may be credentials.
    pub custom_headers: Vec<(String, SecretValue)>,
    pub disable_update_check: bool,
    /// `INFISICAL_JWT_FILE`: a file holding the JWT for oidc-auth / jwt-auth, re-read at every
    /// login; used when `INFISICAL_JWT` is unset.
    pub jwt_file: Option<PathBuf>,
    /// `INFISICAL_AUTH_ORGANIZATION_SLUG`: a sub-organization to log in to.
    pub organization_slug: Option<String>,
    /// Credentials and endpoints of the cloud auth methods.
    pub cloud: CloudSettings,
    /// `IKIT_CA_FILE`, else `SSL_CERT_FILE`: a PEM bundle of extra trusted root certificates
    /// (a self-hosted server behind a private CA), trusted beside the system and built-in roots.
    pub ca_file: Option<PathBuf>,
    /// `IKIT_RATE_LIMIT_BURST` / `IKIT_RATE_LIMIT_PER_SECOND`: a client-side request budget under
    /// the server's own pacing; `None` (the default) leaves pacing to the server's headers.
    pub rate_limit: Option<RateLimitSettings>,
}

/// A client-side floor on request pacing: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitSettings {
    pub burst: f64,
    pub per_second: f64,
}

/// The cloud side of aws-iam, azure and gcp-id-token logins: the standard AWS credential
/// variables and overridable metadata endpoints (tests point them at local fakes).
#[derive(Clone, Default)]
pub struct CloudSettings {
    /// `AWS_ACCESS_KEY_ID`.
    pub aws_access_key_id: Option<String>,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub aws_secret_access_key: Option<SecretValue>,
    /// `AWS_SESSION_TOKEN`.
    pub aws_session_token: Option<SecretValue>,
    /// `AWS_REGION`, else `AWS_DEFAULT_REGION`.
    pub aws_region: Option<String>,
    /// `IKIT_AWS_STS_HOST`: the STS host signed into the request.
    pub aws_sts_host: Option<String>,
    /// `IKIT_AZURE_IMDS_URL`: the managed-identity token endpoint.
    pub azure_imds_url: Option<String>,
    /// `IKIT_GCP_METADATA_URL`: the identity-token endpoint of the metadata server.
    pub gcp_metadata_url: Option<String>,
    /// The rest of the standard AWS credential chain (web identity, container, instance role).
    pub aws_chain: AwsChainSettings,
}

/// The standard AWS variables of the credential chain after the static keys, read as the AWS
/// SDKs read them.
#[derive(Clone, Default)]
pub struct AwsChainSettings {
    /// `AWS_WEB_IDENTITY_TOKEN_FILE` (IRSA, EKS pod identity webhook): re-read at every refresh.
    pub web_identity_token_file: Option<PathBuf>,
    /// `AWS_ROLE_ARN`: the role assumed with the web identity token.
    pub role_arn: Option<String>,
    /// `AWS_ROLE_SESSION_NAME`.
    pub role_session_name: Option<String>,
    /// `AWS_ENDPOINT_URL_STS`, else `AWS_ENDPOINT_URL`: the STS endpoint for
    /// `AssumeRoleWithWebIdentity` (regional `sts.<region>.amazonaws.com` when unset).
    pub sts_endpoint: Option<String>,
    /// `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (ECS task role, under `169.254.170.2`).
    pub container_relative_uri: Option<String>,
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI` (EKS pod identity, Greengrass, local fakes).
    pub container_full_uri: Option<String>,
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
    pub container_authorization_token: Option<SecretValue>,
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`: re-read at every refresh; wins over the token.
    pub container_authorization_token_file: Option<PathBuf>,
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`: the instance metadata service (IMDSv2).
    pub ec2_metadata_endpoint: Option<String>,
    /// `AWS_EC2_METADATA_DISABLED=true` skips the instance role.
    pub ec2_metadata_disabled: bool,
}

impl fmt::Debug for AwsChainSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsChainSettings")
            .field("web_identity_token_file", &self.web_identity_token_file)
            .field("role_arn", &self.role_arn)
            .field("role_session_name", &self.role_session_name)
            .field("sts_endpoint", &self.sts_endpoint)
            .field("container_relative_uri", &self.container_relative_uri)
            .field("container_full_uri", &self.container_full_uri)
            .field(
                "container_authorization_token",
                &self.container_authorization_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("container_authorization_token_file", &self.container_authorization_token_file)
            .field("ec2_metadata_endpoint", &self.ec2_metadata_endpoint)
            .field("ec2_metadata_disabled", &self.ec2_metadata_disabled)
            .finish()
    }
}

impl fmt::Debug for CloudSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudSettings")
            .field("aws_access_key_id", &self.aws_access_key_id)
            .field(
                "aws_secret_access_key",
                &self.aws_secret_access_key.as_ref().map(|_| "[REDACTED]"),
            )
            .field("aws_session_token", &self.aws_session_token.as_ref().map(|_| "[REDACTED]"))
            .field("aws_region", &self.aws_region)
            .field("aws_sts_host", &self.aws_sts_host)
            .field("azure_imds_url", &self.azure_imds_url.as_deref().map(redact_url))
            .field("gcp_metadata_url", &self.gcp_metadata_url.as_deref().map(redact_url))
            .field("aws_chain", &self.aws_chain)
            .finish()
    }
}

/// How to authenticate to Infisical, with the credentials each method needs.
#[derive(Clone)]
pub enum AuthMethod {
    /// No login configured.
    None,
    /// A ready token: a service token (`st.…`) or a machine-identity access token.
    Token(SecretValue),
    UniversalAuth {
        client_id: String,
        client_secret: SecretValue,
    },
    /// The service-account token file is re-read at every login.
    Kubernetes {
        identity_id: String,
        token_path: PathBuf,
    },
    OidcAuth {
        identity_id: String,
        jwt: SecretValue,
    },
    JwtAuth {
        identity_id: String,
        jwt: SecretValue,
    },
    AwsIam {
        identity_id: String,
    },
    Azure {
        identity_id: String,
    },
    GcpIdToken {
        identity_id: String,
    },
}

impl AuthMethod {
    /// The name used in configuration (`universal-auth`, …), as the Infisical CLI spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Token(_) => "token",
            Self::UniversalAuth { .. } => "universal-auth",
            Self::Kubernetes { .. } => "kubernetes",
            Self::OidcAuth { .. } => "oidc-auth",
            Self::JwtAuth { .. } => "jwt-auth",
            Self::AwsIam { .. } => "aws-iam",
            Self::Azure { .. } => "azure",
            Self::GcpIdToken { .. } => "gcp-id-token",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// One bad field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The setting, e.g. `infisical.api_url`.
    pub field: &'static str,
    /// Where the bad value came from, e.g. `env INFISICAL_API_URL` or `file key infisical.api_url`.
    pub origin: String,
    /// What is wrong; never contains a secret value.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.field, self.origin, self.message)
    }
}

/// Every bad field of a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let noun = if self.0.len() == 1 { "problem" } else { "problems" };
        write!(f, "invalid configuration ({} {noun})", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// The error for `field`, if it is one of them.
    pub fn field(&self, field: &str) -> Option<&ConfigError> {
        self.0.iter().find(|e| e.field == field)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Secret,
}

#[derive(Clone)]
enum Origin {
    Env(&'static str),
    File(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Env(name) => write!(f, "env {name}"),
            Origin::File(key) => write!(f, "file key {key}"),
        }
    }
}

/// Reads values by precedence and collects errors instead of stopping at the first.
struct Loader<'a> {
    env: &'a BTreeMap<String, String>,
    file: BTreeMap<String, toml::Value>,
    used: BTreeSet<String>,
    errors: Vec<ConfigError>,
}

impl<'a> Loader<'a> {
    fn error(
        &mut self,
        field: &'static str,
        origin: impl fmt::Display,
        message: impl Into<String>,
    ) {
        self.errors.push(ConfigError {
            field,
            origin: origin.to_string(),
            message: message.into(),
        });
    }

    /// The first non-empty env variable of `env_names`, else the file key named like `field`,
    /// else `None`.
    fn raw(
        &mut self,
        field: &'static str,
        env_names: &[&'static str],
        kind: Kind,
    ) -> Option<(String, Origin)> {
        self.used.insert(field.to_owned());
        for name in env_names {
            if let Some(v) = self.env.get(*name).filter(|v| !v.trim().is_empty()) {
                return Some((v.clone(), Origin::Env(name)));
            }
        }
        let origin = Origin::File(field.to_owned());
        match self.file.get(field).cloned() {
            None => None,
            Some(toml::Value::String(s)) => Some((s, origin)),
            Some(toml::Value::Integer(i)) if kind == Kind::Plain => Some((i.to_string(), origin)),
            Some(toml::Value::Boolean(b)) if kind == Kind::Plain => Some((b.to_string(), origin)),
            Some(other) => {
                self.error(field, origin, format!("must be a string, not {}", other.type_str()));
                None
            }
        }
    }

    fn string(&mut self, field: &'static str, env: &[&'static str]) -> Option<String> {
        self.raw(field, env, Kind::Plain).map(|(v, _)| v.trim().to_owned())
    }

    fn secret(
        &mut self,
        field: &'static str,
        env: &[&'static str],
    ) -> Option<(SecretValue, Origin)> {
        self.raw(field, env, Kind::Secret).map(|(v, o)| (SecretValue::new(v), o))
    }

    /// A value parsed by `parse`; a parse error is reported with the field and origin. The
    /// value itself is echoed (these fields are never secret).
    fn parsed<T>(
        &mut self,
        field: &'static str,
        env: &[&'static str],
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let (value, origin) = self.raw(field, env, Kind::Plain)?;
        match parse(value.trim()) {
            Ok(v) => Some(v),
            Err(message) => {
                self.error(field, origin, message);
                None
            }
        }
    }

    fn required_error(&mut self, field: &'static str, env: &'static str, method: &str) {
        self.error(
            field,
            format!("env {env} or file key {field}"),
            format!("is required for {method}"),
        );
    }
}

/// `file` flattened to dotted keys (`infisical.api_url`).
fn flatten(prefix: &str, table: toml::Table, out: &mut BTreeMap<String, toml::Value>) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            other => {
                out.insert(key, other);
            }
        }
    }
}

impl Settings {
    /// Reads the TOML file at `path`, or at `IKIT_CONFIG` from `env` when `path` is `None` (no
    /// file when neither is set), then [`Settings::load`]s it with `env`.
    pub fn load_path(
        path: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigErrors> {
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| env.get("IKIT_CONFIG").filter(|p| !p.is_empty()).map(PathBuf::from));
        let Some(path) = path else { return Self::load(None, env) };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::load(Some(&text), env),
            Err(e) => Err(ConfigErrors(vec![ConfigError {
                field: "file",
                origin: format!("file {}", path.display()),
                message: format!("cannot read: {e}"),
            }])),
        }
    }

    /// Loads settings from an optional TOML text and an env map. Env wins over the file.
    pub fn load(file: Option<&str>, env: &BTreeMap<String, String>) -> Result<Self, ConfigErrors> {
        let mut loader =
            Loader { env, file: BTreeMap::new(), used: BTreeSet::new(), errors: Vec::new() };
        if let Some(text) = file {
            match toml::from_str::<toml::Table>(text) {
                Ok(table) => flatten("", table, &mut loader.file),
                Err(e) => {
                    // The message only: toml's own Display quotes the line, which may hold a secret.
                    let line = e.span().map_or(0, |s| text[..s.start].matches('\n').count() + 1);
                    let message = e.message().trim().to_owned();
                    loader.error(
                        "file",
                        format!("line {line}"),
                        format!("not valid TOML: {message}"),
                    );
                    return Err(ConfigErrors(loader.errors));
                }
            }
        }
        let l = &mut loader;

        let api_url = l
            .parsed(
                "infisical.api_url",
                &["INFISICAL_DOMAIN", "INFISICAL_API_URL"],
                normalize_api_url,
            )
            .unwrap_or_else(|| DEFAULT_API_URL.to_owned());
        let project_id = l.string("infisical.project_id", &["INFISICAL_PROJECT_ID"]);
        let environment = l
            .parsed("infisical.environment", &["IKIT_INFISICAL_ENVIRONMENT"], |v| {
                validate_environment(v).map(|()| v.to_owned()).map_err(|e| e.to_string())
            })
            .unwrap_or_else(|| DEFAULT_ENVIRONMENT.to_owned());
        let jwt_file = l.string("infisical.jwt_file", &["INFISICAL_JWT_FILE"]).map(PathBuf::from);
        let auth = load_auth(l, jwt_file.is_some());
        let organization_slug =
            l.string("infisical.organization_slug", &["INFISICAL_AUTH_ORGANIZATION_SLUG"]);
        let cloud = CloudSettings {
            aws_access_key_id: l.string("cloud.aws_access_key_id", &["AWS_ACCESS_KEY_ID"]),
            aws_secret_access_key: l
                .secret("cloud.aws_secret_access_key", &["AWS_SECRET_ACCESS_KEY"])
                .map(|(v, _)| v),
            aws_session_token: l
                .secret("cloud.aws_session_token", &["AWS_SESSION_TOKEN"])
                .map(|(v, _)| v),
            aws_region: l.string("cloud.aws_region", &["AWS_REGION", "AWS_DEFAULT_REGION"]),
            aws_sts_host: l.string("cloud.aws_sts_host", &["IKIT_AWS_STS_HOST"]),
            azure_imds_url: l.parsed("cloud.azure_imds_url", &["IKIT_AZURE_IMDS_URL"], |v| {
                http_url(v).map(str::to_owned)
            }),
            gcp_metadata_url: l.parsed("cloud.gcp_metadata_url", &["IKIT_GCP_METADATA_URL"], |v| {
                http_url(v).map(str::to_owned)
            }),
            aws_chain: load_aws_chain(l),
        };
        let ca_file =
            l.string("infisical.ca_file", &["IKIT_CA_FILE", "SSL_CERT_FILE"]).map(PathBuf::from);
        let rate_limit = load_rate_limit(l);
        let custom_headers =
            match l.raw("infisical.custom_headers", &["INFISICAL_CUSTOM_HEADERS"], Kind::Secret) {
                Some((text, origin)) => match parse_custom_headers(&text) {
                    Ok(h) => h,
                    Err(message) => {
                        l.error("infisical.custom_headers", origin, message);
                        Vec::new()
                    }
                },
                None => Vec::new(),
            };
        let disable_update_check = l
            .parsed(
                "infisical.disable_update_check",
                &["INFISICAL_DISABLE_UPDATE_CHECK"],
                // The CLI treats any non-empty value as "disable"; the file takes a boolean.
                |v| Ok(v != "false"),
            )
            .unwrap_or(false);

        let database_url = l
            .parsed("database.url", &["IKIT_DATABASE_URL"], |v| {
                let ok =
                    ["postgres://", "postgresql://", "sqlite:"].iter().any(|p| v.starts_with(p));
                if ok {
                    Ok(v.to_owned())
                } else {
                    Err("must start with postgres://, postgresql:// or sqlite:".into())
                }
            })
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        let redis_url = l.parsed("redis.url", &["IKIT_REDIS_URL"], |v| {
            let ok = ["redis://", "rediss://", "unix://", "redis+unix://"]
                .iter()
                .any(|p| v.starts_with(p));
            if ok {
                Ok(v.to_owned())
            } else {
                Err("must start with redis://, rediss:// or unix://".into())
            }
        });
        let log_format = l
            .parsed("log.format", &["IKIT_LOG_FORMAT"], |v| match v {
                "json" => Ok(LogFormat::Json),
                "pretty" => Ok(LogFormat::Pretty),
                other => Err(format!("{other:?} is not a log format: use json or pretty")),
            })
            .unwrap_or(LogFormat::Json);
        let log_filter = l
            .parsed("log.filter", &["RUST_LOG"], |v| {
                crate::telemetry::parse_log_filter(v)
                    .map(|_| v.to_owned())
                    .map_err(|e| format!("not a valid filter: {e}"))
            })
            .unwrap_or_else(|| "info".to_owned());
        let otlp_endpoint =
            l.parsed("telemetry.otlp_endpoint", &["OTEL_EXPORTER_OTLP_ENDPOINT"], |v| {
                http_url(v).map(|u| u.trim_end_matches('/').to_owned())
            });
        let addr = |v: &str| {
            v.parse::<SocketAddr>()
                .map_err(|_| format!("{v:?} is not a socket address (e.g. 0.0.0.0:8080)"))
        };
        let webhook_addr = l
            .parsed("listen.webhook", &["IKIT_WEBHOOK_ADDR"], addr)
            .unwrap_or_else(|| DEFAULT_WEBHOOK_ADDR.parse().expect("valid default"));
        let health_addr = l
            .parsed("listen.health", &["IKIT_HEALTH_ADDR"], addr)
            .unwrap_or_else(|| DEFAULT_HEALTH_ADDR.parse().expect("valid default"));
        if webhook_addr == health_addr {
            l.error(
                "listen.health",
                "env IKIT_HEALTH_ADDR or file key listen.health",
                "must differ from listen.webhook",
            );
        }
        let ttl = l.parsed("cache.ttl", &["IKIT_CACHE_TTL"], parse_duration);
        let max_stale = l.parsed("cache.max_stale", &["IKIT_CACHE_MAX_STALE"], parse_duration);
        let cache_ttl = ttl.unwrap_or(DEFAULT_CACHE_TTL);
        let cache_max_stale = max_stale.unwrap_or(DEFAULT_CACHE_MAX_STALE.max(cache_ttl));
        if cache_ttl.is_zero() {
            l.error(
                "cache.ttl",
                "env IKIT_CACHE_TTL or file key cache.ttl",
                "must be greater than zero",
            );
        }
        if cache_max_stale < cache_ttl {
            l.error(
                "cache.max_stale",
                "env IKIT_CACHE_MAX_STALE or file key cache.max_stale",
                "must be at least cache.ttl",
            );
        }
        let cache_key = l.secret("cache.key", &["IKIT_CACHE_KEY"]).map(|(v, _)| v);
        let snapshot_dir = l.string("snapshot.dir", &["IKIT_SNAPSHOT_DIR"]).map(PathBuf::from);
        let snapshot_key = l.secret("snapshot.key", &["IKIT_SNAPSHOT_KEY"]).map(|(v, _)| v);
        let admin_token = match l.secret("admin.token", &["IKIT_ADMIN_TOKEN"]) {
            Some((token, origin)) if token.expose().trim().len() < MIN_ADMIN_TOKEN_LEN => {
                l.error(
                    "admin.token",
                    origin,
                    format!("must be at least {MIN_ADMIN_TOKEN_LEN} characters"),
                );
                None
            }
            other => other.map(|(t, _)| t),
        };

        let unknown: Vec<String> =
            l.file.keys().filter(|k| !l.used.contains(*k)).cloned().collect();
        for key in unknown {
            l.error("file", format!("file key {key}"), "unknown setting");
        }

        if !loader.errors.is_empty() {
            return Err(ConfigErrors(loader.errors));
        }
        Ok(Settings {
            infisical: InfisicalSettings {
                api_url,
                project_id,
                environment,
                auth,
                custom_headers,
                disable_update_check,
                jwt_file,
                organization_slug,
                cloud,
                ca_file,
                rate_limit,
            },
            database_url,
            redis_url,
            log_format,
            log_filter,
            otlp_endpoint,
            webhook_addr,
            health_addr,
            cache_ttl,
            cache_max_stale,
            cache_key,
            snapshot_dir,
            snapshot_key,
            admin_token,
        })
    }
}

fn load_aws_chain(l: &mut Loader<'_>) -> AwsChainSettings {
    let url = |v: &str| http_url(v).map(str::to_owned);
    AwsChainSettings {
        web_identity_token_file: l
            .string("cloud.aws_web_identity_token_file", &["AWS_WEB_IDENTITY_TOKEN_FILE"])
            .map(PathBuf::from),
        role_arn: l.string("cloud.aws_role_arn", &["AWS_ROLE_ARN"]),
        role_session_name: l.string("cloud.aws_role_session_name", &["AWS_ROLE_SESSION_NAME"]),
        sts_endpoint: l.parsed(
            "cloud.aws_sts_endpoint",
            &["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"],
            url,
        ),
        container_relative_uri: l.string(
            "cloud.aws_container_credentials_relative_uri",
            &["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"],
        ),
        container_full_uri: l.parsed(
            "cloud.aws_container_credentials_full_uri",
            &["AWS_CONTAINER_CREDENTIALS_FULL_URI"],
            url,
        ),
        container_authorization_token: l
            .secret(
                "cloud.aws_container_authorization_token",
                &["AWS_CONTAINER_AUTHORIZATION_TOKEN"],
            )
            .map(|(v, _)| v),
        container_authorization_token_file: l
            .string(
                "cloud.aws_container_authorization_token_file",
                &["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"],
            )
            .map(PathBuf::from),
        ec2_metadata_endpoint: l.parsed(
            "cloud.aws_ec2_metadata_endpoint",
            &["AWS_EC2_METADATA_SERVICE_ENDPOINT"],
            url,
        ),
        ec2_metadata_disabled: l
            .parsed("cloud.aws_ec2_metadata_disabled", &["AWS_EC2_METADATA_DISABLED"], |v| {
                Ok(v.eq_ignore_ascii_case("true"))
            })
            .unwrap_or(false),
    }
}

/// Both numbers or neither; a burst of at least one and a positive rate.
fn load_rate_limit(l: &mut Loader<'_>) -> Option<RateLimitSettings> {
    let number = |v: &str| match v.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err(format!("{v:?} is not a positive number")),
    };
    let burst = l.parsed("infisical.rate_limit_burst", &["IKIT_RATE_LIMIT_BURST"], number);
    let per_second =
        l.parsed("infisical.rate_limit_per_second", &["IKIT_RATE_LIMIT_PER_SECOND"], number);
    match (burst, per_second) {
        (Some(burst), _) if burst < 1.0 => {
            l.error(
                "infisical.rate_limit_burst",
                "env IKIT_RATE_LIMIT_BURST or file key infisical.rate_limit_burst",
                "must be at least 1",
            );
            None
        }
        (Some(burst), Some(per_second)) => Some(RateLimitSettings { burst, per_second }),
        // One alone: a burst refilled at a tenth of it per second, or a second's worth of burst.
        (Some(burst), None) => Some(RateLimitSettings { burst, per_second: burst / 10.0 }),
        (None, Some(per_second)) => {
            Some(RateLimitSettings { burst: per_second.max(1.0), per_second })
        }
        (None, None) => None,
    }
}

/// `has_jwt_file`: a JWT file stands in for `INFISICAL_JWT` (the value is then empty here and the
/// file is read at login).
fn load_auth(l: &mut Loader<'_>, has_jwt_file: bool) -> AuthMethod {
    const METHOD_ENV: &str = "IKIT_INFISICAL_AUTH_METHOD";
    let explicit = l.string("infisical.auth_method", &[METHOD_ENV]);
    // `INFISICAL_UNIVERSAL_AUTH_ACCESS_TOKEN` wins over `INFISICAL_TOKEN`, as in the CLI.
    let token =
        l.secret("infisical.token", &["INFISICAL_UNIVERSAL_AUTH_ACCESS_TOKEN", "INFISICAL_TOKEN"]);
    let client_id = l.string("infisical.client_id", &["INFISICAL_UNIVERSAL_AUTH_CLIENT_ID"]);
    let client_secret =
        l.secret("infisical.client_secret", &["INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET"]);
    let identity_id = l.string("infisical.identity_id", &["INFISICAL_MACHINE_IDENTITY_ID"]);
    let jwt = l.secret("infisical.jwt", &["INFISICAL_JWT"]);
    let token_path = l
        .string(
            "infisical.service_account_token_path",
            &["INFISICAL_KUBERNETES_SERVICE_ACCOUNT_TOKEN_PATH"],
        )
        .unwrap_or_else(|| DEFAULT_K8S_TOKEN_PATH.to_owned());

    let method = match explicit.as_deref() {
        Some(m) => m.to_owned(),
        None if token.is_some() => "token".to_owned(),
        None if client_id.is_some() || client_secret.is_some() => "universal-auth".to_owned(),
        None if jwt.is_some() || has_jwt_file => "jwt-auth".to_owned(),
        None => "none".to_owned(),
    };
    let identity = |l: &mut Loader<'_>, method: &str| match &identity_id {
        Some(id) => id.clone(),
        None => {
            l.required_error("infisical.identity_id", "INFISICAL_MACHINE_IDENTITY_ID", method);
            String::new()
        }
    };
    let need_jwt = |l: &mut Loader<'_>, method: &str| match &jwt {
        Some((jwt, _)) => jwt.clone(),
        None if has_jwt_file => SecretValue::new(""),
        None => {
            l.required_error("infisical.jwt", "INFISICAL_JWT", method);
            SecretValue::new("")
        }
    };
    match method.as_str() {
        "none" => AuthMethod::None,
        "token" => match token {
            Some((t, _)) => AuthMethod::Token(t),
            None => {
                l.required_error("infisical.token", "INFISICAL_TOKEN", "token");
                AuthMethod::None
            }
        },
        "universal-auth" => {
            if client_id.is_none() {
                l.required_error(
                    "infisical.client_id",
                    "INFISICAL_UNIVERSAL_AUTH_CLIENT_ID",
                    "universal-auth",
                );
            }
            if client_secret.is_none() {
                l.required_error(
                    "infisical.client_secret",
                    "INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET",
                    "universal-auth",
                );
            }
            AuthMethod::UniversalAuth {
                client_id: client_id.unwrap_or_default(),
                client_secret: client_secret
                    .map(|(s, _)| s)
                    .unwrap_or_else(|| SecretValue::new("")),
            }
        }
        "kubernetes" => AuthMethod::Kubernetes {
            identity_id: identity(l, "kubernetes"),
            token_path: PathBuf::from(token_path),
        },
        "oidc-auth" => AuthMethod::OidcAuth {
            identity_id: identity(l, "oidc-auth"),
            jwt: need_jwt(l, "oidc-auth"),
        },
        "jwt-auth" => AuthMethod::JwtAuth {
            identity_id: identity(l, "jwt-auth"),
            jwt: need_jwt(l, "jwt-auth"),
        },
        "aws-iam" => AuthMethod::AwsIam { identity_id: identity(l, "aws-iam") },
        "azure" => AuthMethod::Azure { identity_id: identity(l, "azure") },
        "gcp-id-token" => AuthMethod::GcpIdToken { identity_id: identity(l, "gcp-id-token") },
        other => {
            l.error(
                "infisical.auth_method",
                format!("env {METHOD_ENV} or file key infisical.auth_method"),
                format!(
                    "{other:?} is not an auth method: use token, universal-auth, kubernetes, \
                     oidc-auth, jwt-auth, aws-iam, azure, gcp-id-token or none"
                ),
            );
            AuthMethod::None
        }
    }
}

/// Errors quote the URL redacted: a mistyped URL may still hold a password.
fn http_url(v: &str) -> Result<&str, String> {
    let rest = v.strip_prefix("https://").or_else(|| v.strip_prefix("http://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(v),
        Some(_) => Err(format!("{:?} has no host", redact_url(v))),
        None => Err(format!("{:?} must start with http:// or https://", redact_url(v))),
    }
}

/// The CLI's rule: a domain without `/api` at the end gets it appended.
pub fn normalize_api_url(v: &str) -> Result<String, String> {
    let url = http_url(v)?.trim_end_matches('/');
    Ok(if url.ends_with("/api") { url.to_owned() } else { format!("{url}/api") })
}

/// `250ms`, `30s`, `5m`, `1h`, `1d`, or a plain number of seconds.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let bad = || format!("{v:?} is not a duration (e.g. 30s, 5m, 1h, 1d)");
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => return Err(bad()),
    };
    ms.map(Duration::from_millis).ok_or_else(bad)
}

/// Parses `INFISICAL_CUSTOM_HEADERS` the way the Infisical CLI does: whitespace-separated
/// `Name=value` pairs; a value may be wrapped in `"` or `'` (a backslash keeps the quote from
/// closing it; an unclosed quote runs to the end); whitespace after `=` is skipped; later names
/// replace earlier ones; `User-Agent` and `Accept` are ignored. Errors never include a value.
pub fn parse_custom_headers(text: &str) -> Result<Vec<(String, SecretValue)>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut headers: Vec<(String, SecretValue)> = Vec::new();
    let mut pos = 0;
    // Errors name a pair by its position, never by its text: a stray word is most often the tail of
    // a credential that contained a space (`Authorization=Bearer abc123`).
    let mut item = 0;
    let skip_space = |pos: &mut usize| {
        while *pos < chars.len() && chars[*pos].is_whitespace() {
            *pos += 1;
        }
    };
    loop {
        skip_space(&mut pos);
        if pos >= chars.len() {
            break;
        }
        item += 1;
        let start = pos;
        while pos < chars.len() && chars[pos] != '=' && !chars[pos].is_whitespace() {
            pos += 1;
        }
        let name: String = chars[start..pos].iter().collect();
        if pos >= chars.len() || chars[pos] != '=' {
            return Err(format!(
                "expected Name=value pairs separated by spaces; item {item} has no '=' \
                 (quote values that contain spaces)"
            ));
        }
        pos += 1;
        skip_space(&mut pos);
        let value: String = match chars.get(pos) {
            Some(&quote) if quote == '"' || quote == '\'' => {
                pos += 1;
                let start = pos;
                while pos < chars.len() && (chars[pos] != quote || chars[pos - 1] == '\\') {
                    pos += 1;
                }
                let value = chars[start..pos].iter().collect();
                pos += 1; // past the closing quote (or the end)
                value
            }
            _ => {
                let start = pos;
                while pos < chars.len() && !chars[pos].is_whitespace() {
                    pos += 1;
                }
                chars[start..pos].iter().collect()
            }
        };
        if name.is_empty()
            || name.eq_ignore_ascii_case("user-agent")
            || name.eq_ignore_ascii_case("accept")
        {
            continue;
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) {
            return Err(format!("item {item}: the header name is not a valid HTTP token"));
        }
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(format!("the value of header {name:?} contains control characters"));
        }
        headers.retain(|(n, _)| n != &name);
        headers.push((name, SecretValue::new(value)));
    }
    Ok(headers)
}

/// What replaces a credential in a redacted URL.
const REDACTED: &str = "***";

/// `raw` with every credential in it replaced by `***`, for logs, `Debug` and error messages:
/// the password of the user info (also when it holds an unescaped `/` or `@`, or sits after a
/// third slash as in `redis:///user:pw@host`), the values of query parameters whose names look
/// like credentials (`?password=`, `?auth_token=`, `?sslkey=`...), and any fragment. The URL is
/// read with the `url` crate; text it cannot read keeps only what is certainly not a credential.
/// Nothing else changes, so an address without credentials prints exactly as given.
pub fn redact_url(raw: &str) -> String {
    let text = redact_userinfo(raw);
    match url::Url::parse(&text) {
        Ok(mut url) => {
            let mut changed = false;
            if url.password().is_some_and(|p| p != REDACTED) {
                // Only fails for URLs that cannot carry credentials, which then have none.
                changed |= url.set_password(Some(REDACTED)).is_ok();
            }
            if let Some(query) = url.query() {
                let pairs: Vec<(String, String)> =
                    url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
                if pairs.iter().any(|(name, _)| is_credential_name(name)) {
                    let redacted = pairs.into_iter().map(|(name, value)| {
                        let value =
                            if is_credential_name(&name) { REDACTED.to_owned() } else { value };
                        (name, value)
                    });
                    url.query_pairs_mut().clear().extend_pairs(redacted);
                    changed = true;
                }
            }
            if url.fragment().is_some_and(|f| !f.is_empty()) {
                url.set_fragment(Some(REDACTED));
                changed = true;
            }
            if changed { url.into() } else { text }
        }
        // Unreadable: keep the part before any query or fragment (its password is gone already).
        Err(_) => match text.find(['?', '#']) {
            Some(cut) => format!("{}{}{REDACTED}", &text[..cut], &text[cut..=cut]),
            None => text,
        },
    }
}

/// Replaces the password of the user info with `***`, found the way a person writing the URL
/// meant it: everything between `scheme://` and the last `@` before the query, even where a URL
/// parser would end the authority earlier (`postgres://u:pa/ss@db`, `redis:///u:pw@host`).
fn redact_userinfo(raw: &str) -> String {
    let Some(authority_start) = raw.find("://").map(|i| i + 3) else { return raw.to_owned() };
    let rest = &raw[authority_start..];
    let before_query = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    let Some(at) = before_query.rfind('@') else { return raw.to_owned() };
    match before_query[..at].find(':') {
        Some(colon) => {
            format!("{}{}:{REDACTED}{}", &raw[..authority_start], &rest[..colon], &rest[at..])
        }
        None => raw.to_owned(),
    }
}

/// Query parameter names that carry credentials in database, cache and collector URLs.
fn is_credential_name(name: &str) -> bool {
    const MARKERS: &[&str] =
        &["pass", "pwd", "secret", "token", "key", "auth", "sig", "credential", "session"];
    let name = name.to_ascii_lowercase();
    MARKERS.iter().any(|m| name.contains(m))
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("infisical", &self.infisical)
            .field("database_url", &redact_url(&self.database_url))
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("log_format", &self.log_format)
            .field("log_filter", &self.log_filter)
            .field("otlp_endpoint", &self.otlp_endpoint.as_deref().map(redact_url))
            .field("webhook_addr", &self.webhook_addr)
            .field("health_addr", &self.health_addr)
            .field("cache_ttl", &self.cache_ttl)
            .field("cache_max_stale", &self.cache_max_stale)
            .field("cache_key", &self.cache_key.as_ref().map(|_| "[REDACTED]"))
            .field("snapshot_dir", &self.snapshot_dir)
            .field("snapshot_key", &self.snapshot_key.as_ref().map(|_| "[REDACTED]"))
            .field("admin_token", &self.admin_token.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

impl fmt::Debug for InfisicalSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> =
            self.custom_headers.iter().map(|(n, _)| (n.as_str(), "[REDACTED]")).collect();
        f.debug_struct("InfisicalSettings")
            .field("api_url", &redact_url(&self.api_url))
            .field("project_id", &self.project_id)
            .field("environment", &self.environment)
            .field("auth", &self.auth)
            .field("custom_headers", &headers)
            .field("disable_update_check", &self.disable_update_check)
            .field("jwt_file", &self.jwt_file)
            .field("organization_slug", &self.organization_slug)
            .field("cloud", &self.cloud)
            .field("ca_file", &self.ca_file)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

impl fmt::Debug for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("AuthMethod");
        s.field("method", &self.name());
        match self {
            Self::None | Self::Token(_) => {}
            Self::UniversalAuth { client_id, .. } => {
                s.field("client_id", client_id);
            }
            Self::Kubernetes { identity_id, token_path } => {
                s.field("identity_id", identity_id).field("token_path", token_path);
            }
            Self::OidcAuth { identity_id, .. }
            | Self::JwtAuth { identity_id, .. }
            | Self::AwsIam { identity_id }
            | Self::Azure { identity_id }
            | Self::GcpIdToken { identity_id } => {
                s.field("identity_id", identity_id);
            }
        }
        s.finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults_with_nothing_set() {
        let s = Settings::load(None, &BTreeMap::new()).unwrap();
        assert_eq!(s.infisical.api_url, DEFAULT_API_URL);
        assert_eq!(s.infisical.environment, "dev");
        assert!(matches!(s.infisical.auth, AuthMethod::None));
        assert!(s.infisical.custom_headers.is_empty());
        assert!(!s.infisical.disable_update_check);
        assert_eq!(s.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(s.redis_url, None);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.log_filter, "info");
        assert_eq!(s.otlp_endpoint, None);
        assert_eq!(s.webhook_addr.to_string(), DEFAULT_WEBHOOK_ADDR);
        assert_eq!(s.health_addr.to_string(), DEFAULT_HEALTH_ADDR);
        assert_eq!((s.cache_ttl, s.cache_max_stale), (DEFAULT_CACHE_TTL, DEFAULT_CACHE_MAX_STALE));
        assert!(s.admin_token.is_none());
    }

    #[test]
    fn reads_the_infisical_cli_names() {
        let s = Settings::load(
            None,
            &env(&[
                ("INFISICAL_API_URL", "https://legacy.example.com/api"),
                ("INFISICAL_DOMAIN", "https://infisical.example.com/"),
                ("INFISICAL_PROJECT_ID", "proj-123"),
                ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", "client-abc"),
                ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", "ua-secret-value"),
                ("INFISICAL_CUSTOM_HEADERS", r#"CF-Access-Client-Id=id1 X-Note="two words""#),
                ("INFISICAL_DISABLE_UPDATE_CHECK", "1"),
                ("IKIT_INFISICAL_ENVIRONMENT", "prod-eu"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                ("RUST_LOG", "ikit=debug,info"),
            ]),
        )
        .unwrap();
        let i = &s.infisical;
        assert_eq!(i.api_url, "https://infisical.example.com/api", "domain wins, /api appended");
        assert_eq!(i.project_id.as_deref(), Some("proj-123"));
        assert_eq!(i.environment, "prod-eu");
        match &i.auth {
            AuthMethod::UniversalAuth { client_id, client_secret } => {
                assert_eq!(client_id, "client-abc");
                assert_eq!(client_secret.expose(), "ua-secret-value");
            }
            other => panic!("{other:?}"),
        }
        let headers: Vec<(&str, &str)> =
            i.custom_headers.iter().map(|(n, v)| (n.as_str(), v.expose())).collect();
        assert_eq!(headers, [("CF-Access-Client-Id", "id1"), ("X-Note", "two words")]);
        assert!(i.disable_update_check);
        assert_eq!(s.otlp_endpoint.as_deref(), Some("http://collector:4318"));
        assert_eq!(s.log_filter, "ikit=debug,info");

        let legacy = Settings::load(None, &env(&[("INFISICAL_API_URL", "http://localhost:8080")]));
        assert_eq!(legacy.unwrap().infisical.api_url, "http://localhost:8080/api");
    }

    #[test]
    fn picks_the_auth_method() {
        let token = |pairs: &[(&str, &str)]| match Settings::load(None, &env(pairs))
            .unwrap()
            .infisical
            .auth
        {
            AuthMethod::Token(t) => t.expose().to_owned(),
            other => panic!("{other:?}"),
        };
        assert_eq!(token(&[("INFISICAL_TOKEN", "st.abc")]), "st.abc");
        assert_eq!(
            token(&[
                ("INFISICAL_TOKEN", "st.abc"),
                ("INFISICAL_UNIVERSAL_AUTH_ACCESS_TOKEN", "jwt1")
            ]),
            "jwt1"
        );

        let s = Settings::load(
            None,
            &env(&[
                ("IKIT_INFISICAL_AUTH_METHOD", "kubernetes"),
                ("INFISICAL_MACHINE_IDENTITY_ID", "ident-1"),
            ]),
        )
        .unwrap();
        match s.infisical.auth {
            AuthMethod::Kubernetes { identity_id, token_path } => {
                assert_eq!(identity_id, "ident-1");
                assert_eq!(token_path, PathBuf::from(DEFAULT_K8S_TOKEN_PATH));
            }
            other => panic!("{other:?}"),
        }
        let s = Settings::load(
            None,
            &env(&[
                ("IKIT_INFISICAL_AUTH_METHOD", "kubernetes"),
                ("INFISICAL_MACHINE_IDENTITY_ID", "ident-1"),
                ("INFISICAL_KUBERNETES_SERVICE_ACCOUNT_TOKEN_PATH", "/tmp/sa-token"),
            ]),
        )
        .unwrap();
        assert!(
            matches!(&s.infisical.auth, AuthMethod::Kubernetes { token_path, .. } if token_path == &PathBuf::from("/tmp/sa-token"))
        );

        let s = Settings::load(
            None,
            &env(&[("INFISICAL_JWT", "eyJ.jwt.sig"), ("INFISICAL_MACHINE_IDENTITY_ID", "ident-2")]),
        )
        .unwrap();
        match s.infisical.auth {
            AuthMethod::JwtAuth { identity_id, jwt } => {
                assert_eq!((identity_id.as_str(), jwt.expose()), ("ident-2", "eyJ.jwt.sig"));
            }
            other => panic!("{other:?}"),
        }
        let s = Settings::load(
            None,
            &env(&[
                ("IKIT_INFISICAL_AUTH_METHOD", "oidc-auth"),
                ("INFISICAL_JWT", "eyJ.oidc"),
                ("INFISICAL_MACHINE_IDENTITY_ID", "ident-3"),
            ]),
        );
        assert!(matches!(s.unwrap().infisical.auth, AuthMethod::OidcAuth { .. }));
    }

    #[test]
    fn env_overrides_the_file() {
        let file = r#"
            [infisical]
            api_url = "https://file.example.com"
            project_id = "from-file"
            environment = "staging"
            auth_method = "universal-auth"
            client_id = "file-client"
            client_secret = "file-secret"

            [database]
            url = "postgres://audit:pw@db:5432/ikit"

            [redis]
            url = "redis://cache:6379"

            [log]
            format = "pretty"

            [listen]
            webhook = "127.0.0.1:9000"
            health = "127.0.0.1:9001"

            [cache]
            ttl = "30s"
            max_stale = 3600

            [admin]
            token = "file-admin-token-0123456789"
        "#;
        let s = Settings::load(Some(file), &BTreeMap::new()).unwrap();
        assert_eq!(s.infisical.api_url, "https://file.example.com/api");
        assert_eq!(s.infisical.project_id.as_deref(), Some("from-file"));
        assert_eq!(s.infisical.environment, "staging");
        assert!(
            matches!(&s.infisical.auth, AuthMethod::UniversalAuth { client_id, .. } if client_id == "file-client")
        );
        assert_eq!(s.database_url, "postgres://audit:pw@db:5432/ikit");
        assert_eq!(s.redis_url.as_deref(), Some("redis://cache:6379"));
        assert_eq!(s.log_format, LogFormat::Pretty);
        assert_eq!(s.webhook_addr.port(), 9000);
        assert_eq!(s.cache_ttl, Duration::from_secs(30));
        assert_eq!(s.cache_max_stale, Duration::from_secs(3600));
        assert_eq!(s.admin_token.unwrap().expose(), "file-admin-token-0123456789");

        let s = Settings::load(
            Some(file),
            &env(&[
                ("INFISICAL_API_URL", "https://env.example.com/api"),
                ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", "env-secret"),
                ("IKIT_INFISICAL_ENVIRONMENT", "prod"),
                ("IKIT_LOG_FORMAT", "json"),
                ("IKIT_CACHE_TTL", "2m"),
                // An empty variable counts as unset, as in the CLI.
                ("INFISICAL_PROJECT_ID", ""),
            ]),
        )
        .unwrap();
        assert_eq!(s.infisical.api_url, "https://env.example.com/api");
        assert_eq!(s.infisical.environment, "prod");
        assert_eq!(s.infisical.project_id.as_deref(), Some("from-file"));
        assert!(matches!(
            &s.infisical.auth,
            AuthMethod::UniversalAuth { client_id, client_secret }
                if client_id == "file-client" && client_secret.expose() == "env-secret"
        ));
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.cache_ttl, Duration::from_secs(120));
    }

    #[test]
    fn reports_every_bad_field_at_once_without_secrets() {
        let file = r#"
            [infisical]
            client_secret = "file-secret-zzz"
            colour = "blue"
            [admin]
            token = 12345
        "#;
        let errs = Settings::load(
            Some(file),
            &env(&[
                ("INFISICAL_DOMAIN", "infisical.example.com"),
                ("IKIT_INFISICAL_ENVIRONMENT", "Prod"),
                ("IKIT_INFISICAL_AUTH_METHOD", "universal-auth"),
                ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", "ua-secret-xyz"),
                ("INFISICAL_CUSTOM_HEADERS", "X-Key=hdr-secret-qqq Broken"),
                ("IKIT_DATABASE_URL", "mysql://db"),
                ("IKIT_LOG_FORMAT", "xml"),
                ("IKIT_WEBHOOK_ADDR", "nowhere"),
                ("IKIT_CACHE_TTL", "5 parsecs"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
            ]),
        )
        .unwrap_err();
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field).collect();
        for field in [
            "infisical.api_url",
            "infisical.environment",
            "infisical.client_id",
            "infisical.custom_headers",
            "database.url",
            "log.format",
            "listen.webhook",
            "cache.ttl",
            "telemetry.otlp_endpoint",
            "admin.token",
            "file",
        ] {
            assert!(fields.contains(&field), "{field} missing from {fields:?}");
        }
        assert_eq!(errs.field("infisical.api_url").unwrap().origin, "env INFISICAL_DOMAIN");
        assert_eq!(errs.field("admin.token").unwrap().origin, "file key admin.token");
        assert_eq!(errs.field("file").unwrap().origin, "file key infisical.colour");
        assert!(errs.field("infisical.client_id").unwrap().message.contains("universal-auth"));
        let text = errs.to_string();
        assert!(text.contains(&format!("({} problems)", errs.0.len())), "{text}");
        let one = ConfigErrors(errs.0[..1].to_vec());
        assert!(one.to_string().starts_with("invalid configuration (1 problem)\n"), "{one}");
        for secret in ["ua-secret-xyz", "file-secret-zzz", "hdr-secret-qqq", "12345"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
            assert!(!format!("{errs:?}").contains(secret), "{secret} leaked in Debug");
        }
    }

    #[test]
    fn reads_jwt_file_cloud_and_cache_keys() {
        let s = Settings::load(
            None,
            &env(&[
                ("IKIT_INFISICAL_AUTH_METHOD", "oidc-auth"),
                ("INFISICAL_MACHINE_IDENTITY_ID", "ident-9"),
                ("INFISICAL_JWT_FILE", "/var/run/jwt"),
                ("INFISICAL_AUTH_ORGANIZATION_SLUG", "sub-org"),
                ("AWS_ACCESS_KEY_ID", "AKID"),
                ("AWS_SECRET_ACCESS_KEY", "aws-secret-value"),
                ("AWS_DEFAULT_REGION", "eu-west-1"),
                ("IKIT_AZURE_IMDS_URL", "http://127.0.0.1:1/imds"),
                ("IKIT_CACHE_KEY", "cache-key-value"),
                ("IKIT_SNAPSHOT_DIR", "/var/lib/ikit"),
                ("IKIT_SNAPSHOT_KEY", "snapshot-key-value"),
            ]),
        )
        .unwrap();
        assert!(
            matches!(&s.infisical.auth, AuthMethod::OidcAuth { jwt, .. } if jwt.expose().is_empty())
        );
        assert_eq!(s.infisical.jwt_file.as_deref(), Some(Path::new("/var/run/jwt")));
        assert_eq!(s.infisical.organization_slug.as_deref(), Some("sub-org"));
        assert_eq!(s.infisical.cloud.aws_region.as_deref(), Some("eu-west-1"));
        assert_eq!(s.infisical.cloud.azure_imds_url.as_deref(), Some("http://127.0.0.1:1/imds"));
        assert_eq!(s.snapshot_dir.as_deref(), Some(Path::new("/var/lib/ikit")));
        assert_eq!(s.cache_key.as_ref().unwrap().expose(), "cache-key-value");
        let debug = format!("{s:?}");
        for secret in ["aws-secret-value", "cache-key-value", "snapshot-key-value"] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
        let errs = Settings::load(
            None,
            &env(&[
                ("IKIT_INFISICAL_AUTH_METHOD", "jwt-auth"),
                ("INFISICAL_MACHINE_IDENTITY_ID", "i"),
            ]),
        )
        .unwrap_err();
        assert!(errs.field("infisical.jwt").is_some(), "{errs}");
    }

    #[test]
    fn short_admin_token_is_refused_without_echo() {
        let errs = Settings::load(None, &env(&[("IKIT_ADMIN_TOKEN", "tiny-tok")])).unwrap_err();
        assert_eq!(errs.0.len(), 1);
        assert_eq!(errs.0[0].origin, "env IKIT_ADMIN_TOKEN");
        assert!(!errs.to_string().contains("tiny-tok"));
    }

    #[test]
    fn toml_syntax_errors_do_not_quote_the_line() {
        let file = "[infisical]\nclient_secret = \"unterminated-secret-value\n";
        let errs = Settings::load(Some(file), &BTreeMap::new()).unwrap_err();
        let text = errs.to_string();
        assert!(text.contains("line 2"), "{text}");
        assert!(!text.contains("unterminated-secret-value"), "{text}");
    }

    #[test]
    fn debug_redacts_credentials() {
        let s = Settings::load(
            None,
            &env(&[
                ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", "client-abc"),
                ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", "ua-secret-value"),
                ("INFISICAL_CUSTOM_HEADERS", "CF-Access-Client-Secret=cf-secret-value"),
                ("IKIT_ADMIN_TOKEN", "admin-token-value-0123456789"),
                ("IKIT_DATABASE_URL", "postgres://ikit:db-password-value@db/ikit"),
                ("IKIT_REDIS_URL", "redis://:redis-password-value@cache:6379"),
            ]),
        )
        .unwrap();
        let debug = format!("{s:?} {s:#?}");
        for secret in [
            "ua-secret-value",
            "cf-secret-value",
            "admin-token-value",
            "db-password-value",
            "redis-password-value",
        ] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
        assert!(
            debug.contains("client-abc") && debug.contains("CF-Access-Client-Secret"),
            "{debug}"
        );
        let token = Settings::load(None, &env(&[("INFISICAL_TOKEN", "st.token-value")])).unwrap();
        assert!(!format!("{token:?}").contains("token-value"));
    }

    #[test]
    fn redact_url_hides_every_credential_shape() {
        // (input, exact output where it is certain)
        let cases: &[(&str, Option<&str>)] = &[
            ("postgres://ikit:hunter2@db:5432/ikit", Some("postgres://ikit:***@db:5432/ikit")),
            ("redis://:hunter2@cache:6379/0", Some("redis://:***@cache:6379/0")),
            ("rediss://default:hunter2@cache:6380", Some("rediss://default:***@cache:6380")),
            (
                "https://user:hunter2@infisical.example.com/api",
                Some("https://user:***@infisical.example.com/api"),
            ),
            // A password with an unescaped '/' (the authority would end at it) or '@'.
            ("postgres://ikit:pa/hunter2@db/ikit", Some("postgres://ikit:***@db/ikit")),
            ("postgres://ikit:12/hunter2@db/ikit", Some("postgres://ikit:***@db/ikit")),
            ("postgres://ikit:p@hunter2@db/ikit", Some("postgres://ikit:***@db/ikit")),
            // Credentials after a third slash.
            ("redis:///user:hunter2@host:6379", Some("redis:///user:***@host:6379")),
            // Credentials in the query, other parameters kept.
            (
                "postgres://ikit@db/ikit?sslmode=require&password=hunter2",
                Some("postgres://ikit@db/ikit?sslmode=require&password=***"),
            ),
            ("redis+unix:///run/redis.sock?db=0&pass=hunter2", None),
            ("postgresql:///ikit?host=/run/pg&PASSWORD=hunter2", None),
            ("http://collector:4318/v1/traces?api_key=hunter2", None),
            ("http://collector:4318/v1/traces?x-amz-signature=hunter2", None),
            // A fragment, where implicit-flow tokens travel.
            ("https://idp.example.com/cb#access_token=hunter2", None),
            // Text the parser refuses still loses its password and query.
            ("http://us er:hunter2@ho st/x", Some("http://us er:***@ho st/x")),
            ("http://ho st/x?password=hunter2", Some("http://ho st/x?***")),
            ("redis://ca che:6379#hunter2", Some("redis://ca che:6379#***")),
        ];
        for (raw, want) in cases {
            let got = redact_url(raw);
            assert!(!got.contains("hunter2"), "{raw} -> {got}");
            if let Some(want) = want {
                assert_eq!(&got, want, "{raw}");
            }
        }
        // Addresses without credentials print exactly as given.
        for plain in [
            "https://app.infisical.com/api",
            "http://collector:4318",
            "sqlite://.ikit-dev/ikit.db?mode=rwc",
            "redis://cache:6379/0",
            "postgres://ikit@db/ikit?sslmode=require",
            "unix:///run/redis.sock",
            "not a url at all",
        ] {
            assert_eq!(redact_url(plain), plain);
        }
    }

    #[test]
    fn url_fields_are_redacted_in_debug_and_errors() {
        let s = Settings::load(
            None,
            &env(&[
                ("INFISICAL_API_URL", "https://user:api-pw-value@infisical.example.com"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:otlp-pw-value@collector:4318"),
                ("IKIT_AZURE_IMDS_URL", "http://127.0.0.1:1/imds?token=imds-pw-value"),
                ("IKIT_GCP_METADATA_URL", "http://m:gcp-pw-value@127.0.0.1:2/id"),
                ("IKIT_DATABASE_URL", "postgres://ikit@db/ikit?password=db-pw-value"),
                ("IKIT_REDIS_URL", "redis:///user:redis-pw-value@cache"),
            ]),
        )
        .unwrap();
        let debug = format!("{s:?} {s:#?}");
        for secret in [
            "api-pw-value",
            "otlp-pw-value",
            "imds-pw-value",
            "gcp-pw-value",
            "db-pw-value",
            "redis-pw-value",
        ] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
        assert!(debug.contains("infisical.example.com") && debug.contains("collector:4318"));

        let errs = Settings::load(
            None,
            &env(&[
                ("INFISICAL_DOMAIN", "ftp://user:domain-pw-value@infisical.example.com"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector://u:otlp-pw-value@x"),
                ("IKIT_AZURE_IMDS_URL", "http:///imds?token=imds-pw-value"),
            ]),
        )
        .unwrap_err();
        assert_eq!(errs.0.len(), 3, "{errs}");
        let text = format!("{errs} {errs:?}");
        for secret in ["domain-pw-value", "otlp-pw-value", "imds-pw-value"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.contains("infisical.example.com"), "{text}");
    }

    #[test]
    fn custom_headers_parse_like_the_cli() {
        let parse = |s: &str| {
            parse_custom_headers(s)
                .unwrap()
                .into_iter()
                .map(|(n, v)| (n, v.expose().to_owned()))
                .collect::<Vec<_>>()
        };
        let pairs = |v: &[(&str, &str)]| {
            v.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect::<Vec<_>>()
        };
        assert_eq!(parse("  A=1   B=2 "), pairs(&[("A", "1"), ("B", "2")]));
        assert_eq!(
            parse(r#"Name2="value with spaces" Name3='x'"#),
            pairs(&[("Name2", "value with spaces"), ("Name3", "x")])
        );
        assert_eq!(parse("A= spaced"), pairs(&[("A", "spaced")]));
        assert_eq!(parse(r#"A="say \"hi\"""#), pairs(&[("A", r#"say \"hi\""#)]));
        assert_eq!(parse(r#"A="open ended"#), pairs(&[("A", "open ended")]));
        assert_eq!(parse("User-Agent=x accept=y C=z"), pairs(&[("C", "z")]));
        assert_eq!(parse("A=1 A=2"), pairs(&[("A", "2")]));
        assert_eq!(parse("A="), pairs(&[("A", "")]));
        assert!(parse("").is_empty());

        let err = parse_custom_headers("A=secret-one NoEquals").unwrap_err();
        assert!(err.contains("item 2 has no '='") && !err.contains("secret-one"), "{err}");
        let err = parse_custom_headers("Authorization=Bearer abc123").unwrap_err();
        assert!(err.contains("item 2") && !err.contains("abc123"), "{err}");
        let err = parse_custom_headers("A=1 Bad(Name)=v").unwrap_err();
        assert!(err.contains("item 2: the header name") && !err.contains("Bad(Name)"), "{err}");
    }

    #[test]
    fn loads_the_file_named_by_path_or_ikit_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ikit.toml");
        std::fs::write(&path, "[infisical]\nproject_id = \"from-path\"\n").unwrap();
        let s = Settings::load_path(Some(&path), &BTreeMap::new()).unwrap();
        assert_eq!(s.infisical.project_id.as_deref(), Some("from-path"));
        let by_env = env(&[("IKIT_CONFIG", path.to_str().unwrap())]);
        let s = Settings::load_path(None, &by_env).unwrap();
        assert_eq!(s.infisical.project_id.as_deref(), Some("from-path"));
        assert!(
            Settings::load_path(None, &BTreeMap::new()).unwrap().infisical.project_id.is_none()
        );
        let missing = dir.path().join("absent.toml");
        let errs = Settings::load_path(Some(&missing), &BTreeMap::new()).unwrap_err();
        assert_eq!(errs.0[0].field, "file");
        assert!(errs.0[0].origin.contains("absent.toml"));
    }

    #[test]
    fn a_non_ascii_log_filter_is_a_config_error_not_a_panic() {
        for filter in ["x, é=info", "é", "ikit=debug,ünïcode=warn"] {
            let errs = Settings::load(None, &env(&[("RUST_LOG", filter)])).unwrap_err();
            let e = errs.field("log.filter").unwrap();
            assert_eq!(e.origin, "env RUST_LOG");
            assert!(e.message.contains("ASCII"), "{e}");
        }
        let errs = Settings::load(Some("[log]\nfilter = \"x, é=info\"\n"), &BTreeMap::new());
        assert!(errs.unwrap_err().field("log.filter").is_some());
        let s = Settings::load(None, &env(&[("RUST_LOG", "ikit_client=debug,warn")])).unwrap();
        assert_eq!(s.log_filter, "ikit_client=debug,warn");
    }

    #[test]
    fn durations() {
        let ok = [
            ("250ms", 250),
            ("30s", 30_000),
            ("30", 30_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("2d", 172_800_000),
        ];
        for (text, ms) in ok {
            assert_eq!(parse_duration(text), Ok(Duration::from_millis(ms)), "{text}");
        }
        for bad in ["", "m", "5 parsecs", "-1s", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn api_url_normalisation() {
        assert_eq!(normalize_api_url("https://a.com").unwrap(), "https://a.com/api");
        assert_eq!(normalize_api_url("https://a.com/api/").unwrap(), "https://a.com/api");
        assert_eq!(
            normalize_api_url("http://h:8080/infisical").unwrap(),
            "http://h:8080/infisical/api"
        );
        assert!(normalize_api_url("ftp://a.com").is_err());
        assert!(normalize_api_url("https://").is_err());
    }
}
