//! aws-iam with the standard AWS credential chain: web identity (IRSA), container credentials
//! and the EC2 instance role over IMDSv2, each played by a local fake on loopback; session
//! credentials cached and fetched again shortly before they expire.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use base64::Engine as _;
use ikit_client::{Client, ClientConfig, ClientError};
use ikit_emulator::ApiVersion;

use crate::support::Harness;

/// What the fake AWS endpoints saw, and the credentials they hand out in turn.
#[derive(Default)]
struct Aws {
    hits: Vec<String>,
    /// `(access key id, expiration)` handed out by the next credential answers, in order.
    issue: Vec<(&'static str, &'static str)>,
    issued: usize,
    sts_forms: Vec<HashMap<String, String>>,
    container_authorization: Vec<Option<String>>,
}

type Shared = Arc<Mutex<Aws>>;

impl Aws {
    fn next(&mut self) -> (&'static str, &'static str) {
        let n = self.issued.min(self.issue.len() - 1);
        self.issued += 1;
        self.issue[n]
    }
}

fn json_credentials(key: &str, expiration: &str) -> String {
    serde_json::json!({
        "Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": key,
        "SecretAccessKey": format!("secret-of-{key}"), "Token": format!("token-of-{key}"),
        "Expiration": expiration,
    })
    .to_string()
}

async fn fake_aws(issue: Vec<(&'static str, &'static str)>) -> (String, Shared) {
    let shared: Shared = Arc::new(Mutex::new(Aws { issue, ..Aws::default() }));
    async fn imds_token(State(s): State<Shared>, headers: HeaderMap) -> (StatusCode, String) {
        s.lock().unwrap().hits.push("imds token".into());
        if headers.get("x-aws-ec2-metadata-token-ttl-seconds").is_none() {
            return (StatusCode::BAD_REQUEST, String::new());
        }
        (StatusCode::OK, "imds-session-token".into())
    }
    fn imds_authorized(headers: &HeaderMap) -> bool {
        headers.get("x-aws-ec2-metadata-token").and_then(|v| v.to_str().ok())
            == Some("imds-session-token")
    }
    async fn imds_roles(State(s): State<Shared>, headers: HeaderMap) -> (StatusCode, String) {
        s.lock().unwrap().hits.push("imds roles".into());
        if !imds_authorized(&headers) {
            return (StatusCode::UNAUTHORIZED, String::new());
        }
        (StatusCode::OK, "app-role\n".into())
    }
    async fn imds_role(State(s): State<Shared>, headers: HeaderMap) -> (StatusCode, String) {
        let mut s = s.lock().unwrap();
        s.hits.push("imds credentials".into());
        if !imds_authorized(&headers) {
            return (StatusCode::UNAUTHORIZED, String::new());
        }
        let (key, expiration) = s.next();
        (StatusCode::OK, json_credentials(key, expiration))
    }
    async fn container(State(s): State<Shared>, headers: HeaderMap) -> String {
        let mut s = s.lock().unwrap();
        s.hits.push("container".into());
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
        s.container_authorization.push(auth);
        let (key, expiration) = s.next();
        json_credentials(key, expiration)
    }
    async fn sts(State(s): State<Shared>, body: String) -> String {
        let mut s = s.lock().unwrap();
        s.hits.push("sts".into());
        s.sts_forms.push(url::form_urlencoded::parse(body.as_bytes()).into_owned().collect());
        let (key, expiration) = s.next();
        format!(
            "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>\
             <AccessKeyId>{key}</AccessKeyId><SecretAccessKey>secret-of-{key}</SecretAccessKey>\
             <SessionToken>token-of-{key}</SessionToken><Expiration>{expiration}</Expiration>\
             </Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
        )
    }
    let app = axum::Router::new()
        .route("/latest/api/token", put(imds_token))
        .route("/latest/meta-data/iam/security-credentials/", get(imds_roles))
        .route("/latest/meta-data/iam/security-credentials/app-role", get(imds_role))
        .route("/v2/credentials/task", get(container))
        .route("/sts/", post(sts))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), shared)
}

/// The access key id and session token an aws-auth login was signed with.
fn signed_with(login: &serde_json::Value) -> (String, Option<String>) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let headers: HashMap<String, String> =
        serde_json::from_slice(&b64.decode(login["iamRequestHeaders"].as_str().unwrap()).unwrap())
            .unwrap();
    let credential = headers["Authorization"]
        .split([' ', ','])
        .find_map(|p| p.strip_prefix("Credential="))
        .unwrap()
        .to_owned();
    let key = credential.split('/').next().unwrap().to_owned();
    (key, headers.get("X-Amz-Security-Token").cloned())
}

fn client_from_env(h: &Harness, vars: &[(&str, &str)]) -> Client {
    let mut env: BTreeMap<String, String> =
        vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    env.insert("INFISICAL_API_URL".into(), h.emulator.base_url());
    env.insert("IKIT_INFISICAL_AUTH_METHOD".into(), "aws-iam".into());
    env.insert("INFISICAL_MACHINE_IDENTITY_ID".into(), "id-cloud".into());
    let config = ClientConfig::from_env(&env)
        .unwrap()
        .with_clock(h.clock.clone())
        .with_sleeper(h.sleeper.clone());
    Client::new(config).unwrap()
}

fn logins(h: &Harness) -> Vec<(String, Option<String>)> {
    h.emulator.login_requests("aws-auth").iter().map(signed_with).collect()
}

#[tokio::test]
async fn the_instance_role_is_read_over_imdsv2_cached_and_refreshed_before_it_expires() {
    let h = Harness::start(ApiVersion::V2026).await;
    // The harness clock starts at 2026-05-28T20:26:40Z.
    let (base, aws) = fake_aws(vec![
        ("ASIA-IMDS-1", "2026-05-28T21:26:40Z"),
        ("ASIA-IMDS-2", "2026-05-28T22:26:40Z"),
    ])
    .await;
    let client = client_from_env(&h, &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", base.as_str())]);
    client.ensure_token().await.unwrap();
    client.revoke_token().await.unwrap();
    h.advance(Duration::from_secs(30 * 60));
    client.ensure_token().await.unwrap();
    assert_eq!(
        aws.lock().unwrap().hits,
        ["imds token", "imds roles", "imds credentials"],
        "IMDSv2: a session token first, then the role, then its credentials; once"
    );
    client.revoke_token().await.unwrap();
    h.advance(Duration::from_secs(26 * 60));
    client.ensure_token().await.unwrap();
    assert_eq!(aws.lock().unwrap().issued, 2, "4 minutes before expiry: refreshed");
    let keys: Vec<String> = logins(&h).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["ASIA-IMDS-1", "ASIA-IMDS-1", "ASIA-IMDS-2"]);
    assert_eq!(logins(&h)[0].1.as_deref(), Some("token-of-ASIA-IMDS-1"));
}

#[tokio::test]
async fn a_web_identity_token_file_is_exchanged_at_sts_and_read_again_at_each_refresh() {
    let h = Harness::start(ApiVersion::V2026).await;
    let (base, aws) = fake_aws(vec![
        ("ASIA-WEB-1", "2026-05-28T21:26:40Z"),
        ("ASIA-WEB-2", "2026-05-28T22:26:40Z"),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "irsa-jwt-1\n").unwrap();
    let sts = format!("{base}/sts/");
    let client = client_from_env(
        &h,
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/app"),
            ("AWS_ROLE_SESSION_NAME", "app-pod"),
            ("AWS_ENDPOINT_URL_STS", sts.as_str()),
            // Configured but later in the chain: never asked.
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", base.as_str()),
        ],
    );
    client.ensure_token().await.unwrap();
    std::fs::write(&token_file, "irsa-jwt-2").unwrap();
    client.revoke_token().await.unwrap();
    h.advance(Duration::from_secs(58 * 60));
    client.ensure_token().await.unwrap();
    let aws = aws.lock().unwrap();
    assert_eq!(aws.hits, ["sts", "sts"]);
    let form = |n: usize, k: &str| aws.sts_forms[n][k].clone();
    assert_eq!(form(0, "Action"), "AssumeRoleWithWebIdentity");
    assert_eq!(form(0, "RoleArn"), "arn:aws:iam::123456789012:role/app");
    assert_eq!(form(0, "RoleSessionName"), "app-pod");
    assert_eq!(form(0, "WebIdentityToken"), "irsa-jwt-1");
    assert_eq!(form(1, "WebIdentityToken"), "irsa-jwt-2", "the rotated token file is read again");
    let keys: Vec<(String, Option<String>)> = logins(&h);
    assert_eq!(
        keys,
        [
            ("ASIA-WEB-1".to_owned(), Some("token-of-ASIA-WEB-1".to_owned())),
            ("ASIA-WEB-2".to_owned(), Some("token-of-ASIA-WEB-2".to_owned())),
        ]
    );
}

#[tokio::test]
async fn container_credentials_send_the_authorization_token_file_and_env_keys_come_first() {
    let h = Harness::start(ApiVersion::V2026).await;
    let (base, aws) = fake_aws(vec![("ASIA-ECS-1", "2026-05-28T21:26:40Z")]).await;
    let dir = tempfile::tempdir().unwrap();
    let auth_file = dir.path().join("auth");
    std::fs::write(&auth_file, "pod-identity-token\n").unwrap();
    let full_uri = format!("{base}/v2/credentials/task");
    let container = [
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", full_uri.as_str()),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", auth_file.to_str().unwrap()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", base.as_str()),
    ];
    client_from_env(&h, &container).ensure_token().await.unwrap();
    assert_eq!(aws.lock().unwrap().hits, ["container"]);
    assert_eq!(
        aws.lock().unwrap().container_authorization,
        [Some("pod-identity-token".to_owned())]
    );
    assert_eq!(logins(&h)[0].0, "ASIA-ECS-1");

    // Static keys in the environment win over every other source.
    let mut with_keys = container.to_vec();
    with_keys.extend([("AWS_ACCESS_KEY_ID", "AKIDSTATIC"), ("AWS_SECRET_ACCESS_KEY", "sk")]);
    client_from_env(&h, &with_keys).ensure_token().await.unwrap();
    assert_eq!(aws.lock().unwrap().hits.len(), 1, "no source after the env keys was asked");
    assert_eq!(logins(&h)[1], ("AKIDSTATIC".to_owned(), None));
}

#[tokio::test]
async fn no_credentials_anywhere_is_a_credential_error_naming_the_sources() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = client_from_env(&h, &[("AWS_EC2_METADATA_DISABLED", "true")]);
    let err = client.ensure_token().await.unwrap_err();
    assert!(
        matches!(err, ClientError::Credential(ref m) if m.contains("AWS_WEB_IDENTITY_TOKEN_FILE")),
        "{err}"
    );
    assert!(h.emulator.login_requests("aws-auth").is_empty());
    // A half-configured key pair is refused up front.
    let mut env = BTreeMap::new();
    for (k, v) in [
        ("INFISICAL_API_URL", h.emulator.base_url().as_str()),
        ("IKIT_INFISICAL_AUTH_METHOD", "aws-iam"),
        ("INFISICAL_MACHINE_IDENTITY_ID", "id-cloud"),
        ("AWS_ACCESS_KEY_ID", "AKID"),
    ] {
        env.insert(k.to_owned(), v.to_owned());
    }
    let err = ClientConfig::from_env(&env).unwrap_err();
    assert!(err.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{err}");
}
