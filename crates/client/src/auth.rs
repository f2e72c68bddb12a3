//! Login methods and their credential sources (`infisical-api.md` 1.2, 1.6). A method's
//! credential is read again at every login: Kubernetes rotates service-account tokens, JWT files
//! change, cloud metadata tokens expire.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use zeroize::Zeroizing;

use ikit_common::config::{DEFAULT_K8S_TOKEN_PATH, redact_url};

use crate::aws::AwsCredentialSource;
use crate::error::ClientError;
use crate::sigv4;
use crate::token::AccessToken;

/// The Azure instance metadata (IMDS) managed-identity token endpoint.
pub const DEFAULT_AZURE_IMDS_URL: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
/// The resource an Azure managed-identity token is requested for.
pub const DEFAULT_AZURE_RESOURCE: &str = "https://management.azure.com/";
/// The GCP metadata server's identity-token endpoint.
pub const DEFAULT_GCP_METADATA_URL: &str =
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/identity";

/// A secret read at login time: a fixed value, or a file read again at every login.
#[derive(Clone)]
pub enum Credential {
    Value(Zeroizing<String>),
    File(PathBuf),
}

impl Credential {
    pub fn value(v: impl Into<String>) -> Self {
        Self::Value(Zeroizing::new(v.into()))
    }

    pub(crate) async fn read(&self) -> Result<Zeroizing<String>, ClientError> {
        match self {
            Self::Value(v) => Ok(Zeroizing::new(v.trim().to_owned())),
            Self::File(path) => {
                let text = Zeroizing::new(tokio::fs::read_to_string(path).await.map_err(|e| {
                    ClientError::Credential(format!("cannot read {}: {e}", path.display()))
                })?);
                let trimmed = Zeroizing::new(text.trim().to_owned());
                if trimmed.is_empty() {
                    return Err(ClientError::Credential(format!("{} is empty", path.display())));
                }
                Ok(trimmed)
            }
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(_) => f.write_str("Credential::Value([REDACTED])"),
            Self::File(p) => write!(f, "Credential::File({})", p.display()),
        }
    }
}

/// How the client authenticates. `Debug` prints the method and ids only.
#[derive(Clone)]
pub enum AuthMethod {
    UniversalAuth {
        client_id: String,
        client_secret: Zeroizing<String>,
    },
    Kubernetes {
        identity_id: String,
        /// Read at every login.
        token_path: PathBuf,
    },
    Oidc {
        identity_id: String,
        jwt: Credential,
    },
    Jwt {
        identity_id: String,
        jwt: Credential,
    },
    AwsIam {
        identity_id: String,
        /// Static keys (`AwsCredentials.into()`) or the standard chain, with refresh.
        credentials: AwsCredentialSource,
        region: String,
        /// The STS host signed into the request; `sts.<region>.amazonaws.com` when `None`.
        sts_host: Option<String>,
    },
    Azure {
        identity_id: String,
        resource: String,
        imds_url: String,
    },
    GcpIdToken {
        identity_id: String,
        /// The audience of the requested ID token; the identity id when `None`.
        audience: Option<String>,
        metadata_url: String,
    },
    /// A ready access token (`INFISICAL_TOKEN`): used as is, never renewed.
    AccessToken(AccessToken),
    /// A service token `st.<id>.<secret>[.<key>]`: only the first three parts are sent.
    ServiceToken(AccessToken),
}

impl AuthMethod {
    pub fn universal(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        Self::UniversalAuth {
            client_id: client_id.into(),
            client_secret: Zeroizing::new(client_secret.into()),
        }
    }

    pub fn kubernetes(identity_id: impl Into<String>, token_path: Option<PathBuf>) -> Self {
        Self::Kubernetes {
            identity_id: identity_id.into(),
            token_path: token_path.unwrap_or_else(|| PathBuf::from(DEFAULT_K8S_TOKEN_PATH)),
        }
    }

    pub fn azure(identity_id: impl Into<String>) -> Self {
        Self::Azure {
            identity_id: identity_id.into(),
            resource: DEFAULT_AZURE_RESOURCE.into(),
            imds_url: DEFAULT_AZURE_IMDS_URL.into(),
        }
    }

    pub fn gcp_id_token(identity_id: impl Into<String>) -> Self {
        Self::GcpIdToken {
            identity_id: identity_id.into(),
            audience: None,
            metadata_url: DEFAULT_GCP_METADATA_URL.into(),
        }
    }

    /// `INFISICAL_TOKEN`: a service token when it starts with `st.`, else an access token.
    pub fn token(token: impl Into<String>) -> Self {
        let token = Zeroizing::new(token.into());
        if token.starts_with("st.") {
            let bearer: Vec<&str> = token.splitn(4, '.').take(3).collect();
            Self::ServiceToken(AccessToken::new(bearer.join(".")))
        } else {
            Self::AccessToken(AccessToken::new(token.trim()))
        }
    }

    /// The method's name as in its login path (`universal-auth`, `kubernetes-auth`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::UniversalAuth { .. } => "universal-auth",
            Self::Kubernetes { .. } => "kubernetes-auth",
            Self::Oidc { .. } => "oidc-auth",
            Self::Jwt { .. } => "jwt-auth",
            Self::AwsIam { .. } => "aws-auth",
            Self::Azure { .. } => "azure-auth",
            Self::GcpIdToken { .. } => "gcp-auth",
            Self::AccessToken(_) => "access-token",
            Self::ServiceToken(_) => "service-token",
        }
    }

    /// A fixed token that cannot be renewed or obtained again.
    pub(crate) fn static_token(&self) -> Option<&AccessToken> {
        match self {
            Self::AccessToken(t) | Self::ServiceToken(t) => Some(t),
            _ => None,
        }
    }
}

impl fmt::Debug for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("AuthMethod");
        d.field("method", &self.name());
        match self {
            Self::UniversalAuth { client_id, .. } => d.field("client_id", client_id),
            Self::Kubernetes { identity_id, token_path } => {
                d.field("identity_id", identity_id).field("token_path", token_path)
            }
            Self::Oidc { identity_id, jwt } | Self::Jwt { identity_id, jwt } => {
                d.field("identity_id", identity_id).field("jwt", jwt)
            }
            Self::AwsIam { identity_id, region, credentials, .. } => d
                .field("identity_id", identity_id)
                .field("region", region)
                .field("credentials", &credentials.config().source_name()),
            Self::Azure { identity_id, imds_url, .. } => {
                d.field("identity_id", identity_id).field("imds_url", &redact_url(imds_url))
            }
            Self::GcpIdToken { identity_id, metadata_url, .. } => {
                d.field("identity_id", identity_id).field("metadata_url", &redact_url(metadata_url))
            }
            Self::AccessToken(_) | Self::ServiceToken(_) => &mut d,
        };
        d.finish_non_exhaustive()
    }
}

/// A login request: the method segment of `/api/v1/auth/<method>/login` and the JSON body.
/// No `Debug`: the body holds the credential.
pub(crate) struct LoginRequest {
    pub(crate) method: &'static str,
    pub(crate) body: Zeroizing<String>,
}

/// Reads the method's credential (from files and metadata services as needed) and builds the
/// login body. `org_slug` is sent under both names servers have used.
pub(crate) async fn login_request(
    method: &AuthMethod,
    http: &reqwest::Client,
    org_slug: Option<&str>,
    now: SystemTime,
) -> Result<LoginRequest, ClientError> {
    let mut body = match method {
        AuthMethod::UniversalAuth { client_id, client_secret } => serde_json::json!({
            "clientId": client_id.trim(),
            "clientSecret": client_secret.trim(),
        }),
        AuthMethod::Kubernetes { identity_id, token_path } => {
            let jwt = Credential::File(token_path.clone()).read().await?;
            serde_json::json!({ "identityId": identity_id, "jwt": jwt.as_str() })
        }
        AuthMethod::Oidc { identity_id, jwt } | AuthMethod::Jwt { identity_id, jwt } => {
            let jwt = jwt.read().await?;
            serde_json::json!({ "identityId": identity_id, "jwt": jwt.as_str() })
        }
        AuthMethod::AwsIam { identity_id, credentials, region, sts_host } => {
            let host = sts_host.clone().unwrap_or_else(|| format!("sts.{region}.amazonaws.com"));
            let credentials = credentials.credentials(http, region, now).await?;
            let signed = sigv4::sign_get_caller_identity(&credentials, region, &host, now);
            sigv4::aws_login_body(identity_id, &signed)
        }
        AuthMethod::Azure { identity_id, resource, imds_url } => {
            let jwt = azure_token(http, imds_url, resource).await?;
            serde_json::json!({ "identityId": identity_id, "jwt": jwt.as_str() })
        }
        AuthMethod::GcpIdToken { identity_id, audience, metadata_url } => {
            let audience = audience.as_deref().unwrap_or(identity_id);
            let jwt = gcp_id_token(http, metadata_url, audience).await?;
            serde_json::json!({ "identityId": identity_id, "jwt": jwt.as_str() })
        }
        AuthMethod::AccessToken(_) | AuthMethod::ServiceToken(_) => {
            return Err(ClientError::Auth { message: "a fixed token cannot log in again".into() });
        }
    };
    if let (Some(slug), Some(obj)) = (org_slug, body.as_object_mut()) {
        obj.insert("organizationSlug".into(), slug.into());
        obj.insert("subOrganizationName".into(), slug.into());
    }
    let name = method.name();
    let body = Zeroizing::new(body.to_string());
    Ok(LoginRequest { method: name, body })
}

const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// A managed-identity token from Azure IMDS (`Metadata: true`).
async fn azure_token(
    http: &reqwest::Client,
    imds_url: &str,
    resource: &str,
) -> Result<Zeroizing<String>, ClientError> {
    #[derive(Deserialize)]
    struct Imds {
        access_token: String,
    }
    let request = http
        .get(imds_url)
        .query(&[("api-version", "2018-02-01"), ("resource", resource)])
        .header("Metadata", "true");
    let bytes = metadata_get(request, "azure imds", "azure imds").await?;
    let imds: Imds = serde_json::from_slice(&bytes)
        .map_err(|_| ClientError::Credential("azure imds answer has no access_token".into()))?;
    Ok(Zeroizing::new(imds.access_token))
}

/// An ID token from the GCP metadata server (`Metadata-Flavor: Google`).
async fn gcp_id_token(
    http: &reqwest::Client,
    metadata_url: &str,
    audience: &str,
) -> Result<Zeroizing<String>, ClientError> {
    let request = http
        .get(metadata_url)
        .query(&[("audience", audience), ("format", "full")])
        .header("Metadata-Flavor", "Google");
    let bytes = metadata_get(request, "gcp metadata server", "gcp metadata").await?;
    let token = Zeroizing::new(String::from_utf8_lossy(&bytes).trim().to_owned());
    if token.is_empty() {
        return Err(ClientError::Credential("gcp metadata server sent an empty token".into()));
    }
    Ok(token)
}

/// Sends a request to a cloud metadata endpoint and returns its body when the status is a
/// success. `server` names the endpoint in errors, `read` names it when the body cannot be read.
async fn metadata_get(
    request: reqwest::RequestBuilder,
    server: &str,
    read: &str,
) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    let response = request
        .timeout(METADATA_TIMEOUT)
        .send()
        .await
        .map_err(|e| ClientError::Credential(format!("{server} unreachable: {e}")))?;
    let status = response.status();
    let bytes = Zeroizing::new(
        response
            .bytes()
            .await
            .map_err(|e| ClientError::Credential(format!("{read} read failed: {e}")))?
            .to_vec(),
    );
    if !status.is_success() {
        return Err(ClientError::Credential(format!("{server} answered {status}")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_tokens_send_three_parts() {
        match AuthMethod::token("st.tid.tsecret.e2ee") {
            AuthMethod::ServiceToken(t) => assert_eq!(t.expose(), "st.tid.tsecret"),
            other => panic!("{other:?}"),
        }
        match AuthMethod::token("st.tid.tsecret") {
            AuthMethod::ServiceToken(t) => assert_eq!(t.expose(), "st.tid.tsecret"),
            other => panic!("{other:?}"),
        }
        match AuthMethod::token("eyJhbGci.x.y\n") {
            AuthMethod::AccessToken(t) => assert_eq!(t.expose(), "eyJhbGci.x.y"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn debug_never_shows_credentials() {
        let methods = [
            AuthMethod::universal("cid", "csecret-xyz"),
            AuthMethod::token("st.a.csecret-xyz.k"),
            AuthMethod::token("csecret-xyz"),
            AuthMethod::Jwt { identity_id: "i".into(), jwt: Credential::value("csecret-xyz") },
        ];
        for m in methods {
            let text = format!("{m:?}");
            assert!(!text.contains("csecret-xyz"), "{text}");
            assert!(text.contains(m.name()), "{text}");
        }
    }

    #[tokio::test]
    async fn login_bodies_carry_the_exact_fields() {
        let http = reqwest::Client::new();
        let now = SystemTime::UNIX_EPOCH;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "k8s-jwt-1\n").unwrap();
        let k8s = AuthMethod::kubernetes("kid", Some(path.clone()));
        let body = |r: LoginRequest| serde_json::from_str::<serde_json::Value>(&r.body).unwrap();
        let first = login_request(&k8s, &http, None, now).await.unwrap();
        assert_eq!(first.method, "kubernetes-auth");
        assert_eq!(body(first), serde_json::json!({"identityId":"kid","jwt":"k8s-jwt-1"}));
        // Rotated on disk: the next login reads the new token.
        std::fs::write(&path, "k8s-jwt-2").unwrap();
        let second = body(login_request(&k8s, &http, None, now).await.unwrap());
        assert_eq!(second["jwt"], "k8s-jwt-2");

        let ua = AuthMethod::universal(" cid ", "sec\n");
        let ua = body(login_request(&ua, &http, Some("child-org"), now).await.unwrap());
        assert_eq!(
            ua,
            serde_json::json!({"clientId":"cid","clientSecret":"sec",
                "organizationSlug":"child-org","subOrganizationName":"child-org"})
        );

        std::fs::remove_file(&path).unwrap();
        let missing = login_request(&k8s, &http, None, now).await.err().unwrap();
        assert!(matches!(missing, ClientError::Credential(_)), "{missing:?}");
        assert!(login_request(&AuthMethod::token("t"), &http, None, now).await.is_err());
    }
}
