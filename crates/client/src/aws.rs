//! The standard AWS credential chain the AWS SDKs use, for aws-iam login: static keys, then a web
//! identity (IRSA: `AssumeRoleWithWebIdentity`), then container credentials (ECS task role, EKS
//! pod identity), then the EC2 instance role over IMDSv2. The first source that is configured is
//! the one used; session credentials are cached and fetched again shortly before they expire.
//! The parsing of the answers is pure; the fetches are the IO around it.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::auth::Credential;
use crate::error::ClientError;
use crate::sigv4::AwsCredentials;

/// The ECS task-role endpoint that `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` is relative to.
pub const ECS_CREDENTIALS_HOST: &str = "http://169.254.170.2";
/// The EC2 instance metadata service.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// Session credentials are fetched again this long before they expire (the SDKs' margin).
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
const IMDS_TOKEN_TTL_SECS: &str = "21600";
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// `AssumeRoleWithWebIdentity` with a token file (IRSA).
#[derive(Debug, Clone)]
pub struct WebIdentity {
    /// Read again at every refresh: the kubelet rotates it.
    pub token_file: PathBuf,
    pub role_arn: String,
    pub session_name: Option<String>,
    /// The STS endpoint; `https://sts.<region>.amazonaws.com` when `None`.
    pub sts_endpoint: Option<String>,
}

/// Container credentials: a full URL, and an optional `Authorization` value.
#[derive(Debug, Clone)]
pub struct ContainerCredentials {
    pub url: String,
    pub authorization: Option<Credential>,
}

/// Where aws-iam login takes its AWS credentials from, in the SDKs' order.
#[derive(Debug, Clone, Default)]
pub struct AwsCredentialChain {
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`.
    pub fixed: Option<AwsCredentials>,
    pub web_identity: Option<WebIdentity>,
    pub container: Option<ContainerCredentials>,
    /// The IMDSv2 endpoint of the instance role; `None` when disabled.
    pub instance_metadata: Option<String>,
}

impl AwsCredentialChain {
    /// The name of the source that will be used, for logs and errors.
    pub fn source_name(&self) -> &'static str {
        if self.fixed.is_some() {
            "environment"
        } else if self.web_identity.is_some() {
            "web identity"
        } else if self.container.is_some() {
            "container"
        } else if self.instance_metadata.is_some() {
            "instance metadata"
        } else {
            "none"
        }
    }
}

struct Cached {
    credentials: AwsCredentials,
    /// `None`: long-lived keys that never expire.
    expires_at: Option<SystemTime>,
}

/// A credential chain with its cache of session credentials. Clones share the cache.
#[derive(Clone)]
pub struct AwsCredentialSource {
    chain: Arc<AwsCredentialChain>,
    cached: Arc<Mutex<Option<Cached>>>,
}

impl fmt::Debug for AwsCredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentialSource").field("source", &self.chain.source_name()).finish()
    }
}

impl From<AwsCredentials> for AwsCredentialSource {
    fn from(credentials: AwsCredentials) -> Self {
        Self::chain(AwsCredentialChain { fixed: Some(credentials), ..Default::default() })
    }
}

impl AwsCredentialSource {
    pub fn chain(chain: AwsCredentialChain) -> Self {
        Self { chain: Arc::new(chain), cached: Arc::new(Mutex::new(None)) }
    }

    pub fn config(&self) -> &AwsCredentialChain {
        &self.chain
    }

    /// Credentials valid for a while longer: the cached ones until [`REFRESH_BEFORE_EXPIRY`]
    /// before they expire, else fetched again. A failed refresh falls back to cached credentials
    /// that have not expired yet.
    pub(crate) async fn credentials(
        &self,
        http: &reqwest::Client,
        region: &str,
        now: SystemTime,
    ) -> Result<AwsCredentials, ClientError> {
        let usable = |c: &Cached, margin: Duration| {
            c.expires_at.is_none_or(|at| at.checked_sub(margin).is_some_and(|t| t > now))
        };
        let stale = {
            let cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
            match cached.as_ref() {
                Some(c) if usable(c, REFRESH_BEFORE_EXPIRY) => return Ok(c.credentials.clone()),
                Some(c) if usable(c, Duration::ZERO) => Some(c.credentials.clone()),
                _ => None,
            }
        };
        match self.fetch(http, region, now).await {
            Ok(fresh) => {
                let credentials = fresh.credentials.clone();
                if let Some(at) = fresh.expires_at {
                    tracing::debug!(
                        source = self.chain.source_name(),
                        expires_in_s = at.duration_since(now).map(|d| d.as_secs()).unwrap_or(0),
                        "obtained aws session credentials"
                    );
                }
                *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some(fresh);
                Ok(credentials)
            }
            Err(e) => match stale {
                Some(credentials) => {
                    tracing::warn!(
                        source = self.chain.source_name(),
                        error = %e,
                        "aws credential refresh failed, using the current ones until they expire"
                    );
                    Ok(credentials)
                }
                None => Err(e),
            },
        }
    }

    async fn fetch(
        &self,
        http: &reqwest::Client,
        region: &str,
        now: SystemTime,
    ) -> Result<Cached, ClientError> {
        let chain = &*self.chain;
        if let Some(fixed) = &chain.fixed {
            return Ok(Cached { credentials: fixed.clone(), expires_at: None });
        }
        if let Some(web) = &chain.web_identity {
            return assume_role_with_web_identity(http, web, region, now).await;
        }
        if let Some(container) = &chain.container {
            return container_credentials(http, container).await;
        }
        if let Some(endpoint) = &chain.instance_metadata {
            return instance_credentials(http, endpoint).await;
        }
        Err(ClientError::Credential(
            "aws-iam found no aws credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
             AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, or run with a container or instance role"
                .into(),
        ))
    }
}

fn credential_error(what: &str, e: impl fmt::Display) -> ClientError {
    ClientError::Credential(format!("{what}: {e}"))
}

async fn body_of(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    let response = request
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(|e| credential_error(&format!("{what} unreachable"), e))?;
    let status = response.status();
    let bytes = Zeroizing::new(
        response.bytes().await.map_err(|e| credential_error(&format!("{what} read"), e))?.to_vec(),
    );
    if !status.is_success() {
        let detail = sts_error_message(&bytes).unwrap_or_default();
        return Err(ClientError::Credential(format!("{what} answered {status} {detail}")));
    }
    Ok(bytes)
}

async fn assume_role_with_web_identity(
    http: &reqwest::Client,
    web: &WebIdentity,
    region: &str,
    now: SystemTime,
) -> Result<Cached, ClientError> {
    let token = Credential::File(web.token_file.clone()).read().await?;
    let endpoint =
        web.sts_endpoint.clone().unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com/"));
    let session_name = web.session_name.clone().unwrap_or_else(|| {
        let secs = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        format!("ikit-{secs}")
    });
    let form = Zeroizing::new(
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("Action", "AssumeRoleWithWebIdentity")
            .append_pair("Version", "2011-06-15")
            .append_pair("RoleArn", &web.role_arn)
            .append_pair("RoleSessionName", &session_name)
            .append_pair("WebIdentityToken", &token)
            .finish(),
    );
    let request = http
        .post(&endpoint)
        .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
        .body(form.as_bytes().to_vec());
    let body = body_of(request, "sts AssumeRoleWithWebIdentity").await?;
    parse_assume_role_response(&body)
}

async fn container_credentials(
    http: &reqwest::Client,
    container: &ContainerCredentials,
) -> Result<Cached, ClientError> {
    let mut request = http.get(&container.url);
    if let Some(authorization) = &container.authorization {
        let value = authorization.read().await?;
        let mut header = reqwest::header::HeaderValue::from_str(&value).map_err(|_| {
            ClientError::Credential("container authorization token is not a header value".into())
        })?;
        header.set_sensitive(true);
        request = request.header(reqwest::header::AUTHORIZATION, header);
    }
    let body = body_of(request, "container credentials endpoint").await?;
    parse_json_credentials(&body, "container credentials endpoint")
}

async fn instance_credentials(
    http: &reqwest::Client,
    endpoint: &str,
) -> Result<Cached, ClientError> {
    let base = endpoint.trim_end_matches('/');
    let token = body_of(
        http.put(format!("{base}/latest/api/token"))
            .header("x-aws-ec2-metadata-token-ttl-seconds", IMDS_TOKEN_TTL_SECS),
        "instance metadata token endpoint",
    )
    .await?;
    let mut token = reqwest::header::HeaderValue::from_bytes(&token)
        .map_err(|_| ClientError::Credential("instance metadata token is not a header".into()))?;
    token.set_sensitive(true);
    let roles = body_of(
        http.get(format!("{base}/latest/meta-data/iam/security-credentials/"))
            .header("x-aws-ec2-metadata-token", token.clone()),
        "instance metadata role listing",
    )
    .await?;
    let role = String::from_utf8_lossy(&roles).lines().next().unwrap_or("").trim().to_owned();
    if role.is_empty() {
        return Err(ClientError::Credential("the instance has no iam role attached".into()));
    }
    let mut url = url::Url::parse(&format!("{base}/latest/meta-data/iam/security-credentials/"))
        .map_err(|e| credential_error("instance metadata endpoint", e))?;
    url.path_segments_mut()
        .map_err(|()| ClientError::Credential("instance metadata endpoint has no path".into()))?
        .pop_if_empty()
        .push(&role);
    let body = body_of(
        http.get(url).header("x-aws-ec2-metadata-token", token),
        "instance metadata credentials",
    )
    .await?;
    parse_json_credentials(&body, "instance metadata credentials")
}

/// The JSON the container endpoint and IMDS answer with (`Token` is the session token).
fn parse_json_credentials(body: &[u8], what: &str) -> Result<Cached, ClientError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Raw {
        #[serde(default)]
        code: Option<String>,
        access_key_id: String,
        secret_access_key: String,
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        expiration: Option<String>,
    }
    let raw: Raw = serde_json::from_slice(body)
        .map_err(|_| ClientError::Credential(format!("{what} sent no credentials")))?;
    if let Some(code) = raw.code.filter(|c| c != "Success") {
        return Err(ClientError::Credential(format!("{what} answered code {code}")));
    }
    let expires_at = raw.expiration.as_deref().map(parse_expiration).transpose()?;
    Ok(Cached {
        credentials: AwsCredentials {
            access_key_id: raw.access_key_id,
            secret_access_key: Zeroizing::new(raw.secret_access_key),
            session_token: raw.token.filter(|t| !t.is_empty()).map(Zeroizing::new),
        },
        expires_at,
    })
}

/// The `Credentials` of an `AssumeRoleWithWebIdentityResponse` (XML, the STS query protocol).
fn parse_assume_role_response(body: &[u8]) -> Result<Cached, ClientError> {
    let text = Zeroizing::new(String::from_utf8_lossy(body).into_owned());
    let missing = |name: &str| {
        ClientError::Credential(format!("sts AssumeRoleWithWebIdentity answer has no {name}"))
    };
    let credentials = xml_element(&text, "Credentials").ok_or_else(|| missing("Credentials"))?;
    let field =
        |name: &str| xml_element(credentials, name).map(xml_unescape).ok_or_else(|| missing(name));
    let expiration = field("Expiration")?;
    Ok(Cached {
        credentials: AwsCredentials {
            access_key_id: field("AccessKeyId")?.to_string(),
            secret_access_key: field("SecretAccessKey")?,
            session_token: Some(field("SessionToken")?),
        },
        expires_at: Some(parse_expiration(&expiration)?),
    })
}

/// The text between `<name>` and `</name>` (STS answers carry no attributes on these).
fn xml_element<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&close)?;
    Some(text[start..end].trim())
}

/// The five predefined XML entities.
fn xml_unescape(text: &str) -> Zeroizing<String> {
    Zeroizing::new(
        text.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// The `<Message>` of an STS error answer, for the error text (never a credential).
fn sts_error_message(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    xml_element(text, "Message").map(|m| xml_unescape(m).to_string())
}

fn parse_expiration(text: &str) -> Result<SystemTime, ClientError> {
    let at: jiff::Timestamp = text.trim().parse().map_err(|_| {
        ClientError::Credential(format!("aws credential expiration {text:?} is not a timestamp"))
    })?;
    Ok(SystemTime::from(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STS_ANSWER: &str = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:default:app</SubjectFromWebIdentityToken>
    <Credentials>
      <SessionToken>FwoGZX&amp;IvYXdzE</SessionToken>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG+bPxRfiCY</SecretAccessKey>
      <Expiration>2026-11-27T16:00:00Z</Expiration>
      <AccessKeyId>ASIAEXAMPLE</AccessKeyId>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>"#;

    #[test]
    fn parses_the_sts_web_identity_answer() {
        let cached = parse_assume_role_response(STS_ANSWER.as_bytes()).unwrap();
        let c = &cached.credentials;
        assert_eq!(c.access_key_id, "ASIAEXAMPLE");
        assert_eq!(c.secret_access_key.as_str(), "wJalrXUtnFEMI/K7MDENG+bPxRfiCY");
        assert_eq!(c.session_token.as_deref().map(String::as_str), Some("FwoGZX&IvYXdzE"));
        let at = cached.expires_at.unwrap().duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(at.as_secs(), 1_795_795_200);
        let truncated = STS_ANSWER.replace("<AccessKeyId>ASIAEXAMPLE</AccessKeyId>", "");
        let err = parse_assume_role_response(truncated.as_bytes()).err().unwrap();
        assert!(err.to_string().contains("AccessKeyId"), "{err}");
    }

    #[test]
    fn parses_container_and_imds_json_and_refuses_failures() {
        let ok = br#"{"Code":"Success","LastUpdated":"2026-11-27T10:00:00Z","Type":"AWS-HMAC",
            "AccessKeyId":"ASIAIMDS","SecretAccessKey":"sk","Token":"tok","Expiration":"2026-11-27T16:00:00.000Z"}"#;
        let cached = parse_json_credentials(ok, "imds").unwrap();
        assert_eq!(cached.credentials.access_key_id, "ASIAIMDS");
        assert_eq!(cached.credentials.session_token.as_deref().map(String::as_str), Some("tok"));
        assert!(cached.expires_at.is_some());
        let failed =
            br#"{"Code":"AssumeRoleUnauthorizedAccess","AccessKeyId":"","SecretAccessKey":""}"#;
        assert!(parse_json_credentials(failed, "imds").is_err());
        let err =
            parse_json_credentials(br#"{"SecretAccessKey":"sk-hunter2"}"#, "x").err().unwrap();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(
            parse_json_credentials(
                br#"{"AccessKeyId":"a","SecretAccessKey":"s","Expiration":"tomorrow"}"#,
                "x"
            )
            .is_err()
        );
    }

    #[test]
    fn an_sts_error_names_its_message() {
        let body = br#"<ErrorResponse><Error><Code>InvalidIdentityToken</Code><Message>Token expired &amp; gone</Message></Error></ErrorResponse>"#;
        assert_eq!(sts_error_message(body).as_deref(), Some("Token expired & gone"));
    }
}
