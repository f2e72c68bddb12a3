//! Each auth method's login request, as the emulator received it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use base64::Engine as _;
use ikit_client::{AuthMethod, AwsCredentials, ClientError, Credential, FolderQuery, SecretRef};
use ikit_emulator::ApiVersion;
use zeroize::Zeroizing;

use crate::support::{DB_VALUE, Harness, PROJECT, hs256_jwt, ua};

fn dev_app() -> FolderQuery {
    FolderQuery::new(PROJECT, "dev", "/app")
}

fn far_future_jwt(sub: &str) -> String {
    hs256_jwt(&serde_json::json!({"sub": sub, "iat": 1_700_000_000, "exp": 4_000_000_000i64}))
}

#[tokio::test]
async fn universal_auth_sends_trimmed_client_credentials() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(AuthMethod::universal("ua-client-id ", " ua-client-secret-1\n"));
    let folder = client.fetch_folder(&dev_app()).await.unwrap();
    assert!(folder.secrets.iter().any(|s| s.key == "DB_URL" && s.value.expose() == DB_VALUE));
    assert_eq!(
        h.emulator.login_requests("universal-auth"),
        vec![serde_json::json!({"clientId": "ua-client-id", "clientSecret": "ua-client-secret-1"})]
    );
    let bad = h.client(AuthMethod::universal("ua-client-id", "wrong"));
    let err = bad.fetch_folder(&dev_app()).await.unwrap_err();
    assert!(matches!(err, ClientError::Auth { .. }), "{err:?}");
}

#[tokio::test]
async fn kubernetes_reads_the_rotated_token_file_at_every_login() {
    let h = Harness::start(ApiVersion::V2026).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    let first = far_future_jwt("system:serviceaccount:default:app");
    std::fs::write(&path, format!("{first}\n")).unwrap();
    let client = h.client(AuthMethod::kubernetes("id-cloud", Some(path.clone())));
    client.fetch_folder(&dev_app()).await.unwrap();
    let second = far_future_jwt("system:serviceaccount:default:app-rotated");
    std::fs::write(&path, &second).unwrap();
    // The cloud identity has the default 30-day TTL: move past it to force a new login.
    h.advance(std::time::Duration::from_secs(2_592_000));
    client.fetch_folder(&dev_app()).await.unwrap();
    assert_eq!(
        h.emulator.login_requests("kubernetes-auth"),
        vec![
            serde_json::json!({"identityId": "id-cloud", "jwt": first}),
            serde_json::json!({"identityId": "id-cloud", "jwt": second}),
        ]
    );
}

#[tokio::test]
async fn oidc_and_jwt_auth_send_the_jwt_from_a_value_or_a_file() {
    let h = Harness::start(ApiVersion::V2026).await;
    let jwt = far_future_jwt("ci-pipeline");
    let oidc = h.client(AuthMethod::Oidc {
        identity_id: "id-cloud".into(),
        jwt: Credential::value(jwt.clone()),
    });
    oidc.fetch_folder(&dev_app()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwt");
    std::fs::write(&file, &jwt).unwrap();
    let from_file =
        h.client(AuthMethod::Jwt { identity_id: "id-cloud".into(), jwt: Credential::File(file) });
    from_file.fetch_folder(&dev_app()).await.unwrap();
    let want = serde_json::json!({"identityId": "id-cloud", "jwt": jwt});
    assert_eq!(h.emulator.login_requests("oidc-auth"), vec![want.clone()]);
    assert_eq!(h.emulator.login_requests("jwt-auth"), vec![want]);
}

#[tokio::test]
async fn aws_iam_sends_a_signed_get_caller_identity() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(AuthMethod::AwsIam {
        identity_id: "id-cloud".into(),
        credentials: AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Zeroizing::new("aws-secret-key-value".into()),
            session_token: Some(Zeroizing::new("aws-session-token".into())),
        }
        .into(),
        region: "eu-west-1".into(),
        sts_host: Some("sts.test.local".into()),
    });
    client.fetch_folder(&dev_app()).await.unwrap();
    let logins = h.emulator.login_requests("aws-auth");
    assert_eq!(logins.len(), 1);
    let body = &logins[0];
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(body["identityId"], "id-cloud");
    assert_eq!(body["iamHttpRequestMethod"], "POST");
    assert_eq!(
        b64.decode(body["iamRequestBody"].as_str().unwrap()).unwrap(),
        b"Action=GetCallerIdentity&Version=2011-06-15"
    );
    let headers: HashMap<String, String> =
        serde_json::from_slice(&b64.decode(body["iamRequestHeaders"].as_str().unwrap()).unwrap())
            .unwrap();
    let mut names: Vec<&str> = headers.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "Authorization",
            "Content-Length",
            "Content-Type",
            "Host",
            "X-Amz-Date",
            "X-Amz-Security-Token"
        ]
    );
    assert_eq!(headers["Host"], "sts.test.local");
    assert_eq!(headers["X-Amz-Security-Token"], "aws-session-token");
    let signed = ikit_client::internals::sign_get_caller_identity(
        &AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Zeroizing::new("aws-secret-key-value".into()),
            session_token: Some(Zeroizing::new("aws-session-token".into())),
        },
        "eu-west-1",
        "sts.test.local",
        h.now(),
    );
    // Signed at the injected time, so the recorded signature is reproducible.
    assert_eq!(headers["Authorization"], signed.headers[0].1);
    assert!(headers["Authorization"].contains("/eu-west-1/sts/aws4_request"));
}

#[derive(Default)]
struct Seen {
    queries: Vec<HashMap<String, String>>,
    headers: Vec<(Option<String>, Option<String>)>,
}

/// A fake Azure IMDS and GCP metadata server on port 0.
async fn metadata_server(token: String) -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    type S = (Arc<Mutex<Seen>>, String);
    async fn azure(
        State((seen, token)): State<S>,
        headers: HeaderMap,
        Query(q): Query<HashMap<String, String>>,
    ) -> axum::Json<serde_json::Value> {
        let mut s = seen.lock().unwrap();
        s.queries.push(q);
        s.headers
            .push((headers.get("metadata").and_then(|v| v.to_str().ok()).map(str::to_owned), None));
        axum::Json(
            serde_json::json!({"access_token": token, "expires_in": "3599", "token_type": "Bearer"}),
        )
    }
    async fn gcp(
        State((seen, token)): State<S>,
        headers: HeaderMap,
        Query(q): Query<HashMap<String, String>>,
    ) -> String {
        let mut s = seen.lock().unwrap();
        s.queries.push(q);
        s.headers.push((
            None,
            headers.get("metadata-flavor").and_then(|v| v.to_str().ok()).map(str::to_owned),
        ));
        token
    }
    let app = axum::Router::new()
        .route("/metadata/identity/oauth2/token", get(azure))
        .route("/computeMetadata/v1/instance/service-accounts/default/identity", get(gcp))
        .with_state((seen.clone(), token));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn azure_fetches_a_managed_identity_token_from_imds() {
    let h = Harness::start(ApiVersion::V2026).await;
    let msi = far_future_jwt("azure-msi");
    let (base, seen) = metadata_server(msi.clone()).await;
    let client = h.client(AuthMethod::Azure {
        identity_id: "id-cloud".into(),
        resource: "https://management.azure.com/".into(),
        imds_url: format!("{base}/metadata/identity/oauth2/token"),
    });
    client.fetch_folder(&dev_app()).await.unwrap();
    assert_eq!(
        h.emulator.login_requests("azure-auth"),
        vec![serde_json::json!({"identityId": "id-cloud", "jwt": msi})]
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.headers, vec![(Some("true".to_owned()), None)]);
    assert_eq!(seen.queries[0]["resource"], "https://management.azure.com/");
    assert_eq!(seen.queries[0]["api-version"], "2018-02-01");
}

#[tokio::test]
async fn gcp_fetches_an_id_token_from_the_metadata_server() {
    let h = Harness::start(ApiVersion::V2026).await;
    let id_token = far_future_jwt("gcp-sa");
    let (base, seen) = metadata_server(id_token.clone()).await;
    let client = h.client(AuthMethod::GcpIdToken {
        identity_id: "id-cloud".into(),
        audience: None,
        metadata_url: format!(
            "{base}/computeMetadata/v1/instance/service-accounts/default/identity"
        ),
    });
    client.fetch_folder(&dev_app()).await.unwrap();
    assert_eq!(
        h.emulator.login_requests("gcp-auth"),
        vec![serde_json::json!({"identityId": "id-cloud", "jwt": id_token})]
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.headers, vec![(None, Some("Google".to_owned()))]);
    assert_eq!(seen.queries[0]["audience"], "id-cloud");
    assert_eq!(seen.queries[0]["format"], "full");
}

#[tokio::test]
async fn ready_tokens_and_service_tokens_skip_login() {
    let h = Harness::start(ApiVersion::V2026).await;
    // A service token with its e2ee part: only st.<id>.<secret> is sent.
    let st = h.client(AuthMethod::token("st.st-id-1.st-secret-1.e2ee-key-part"));
    let secret = SecretRef::parse(PROJECT, "dev", "/app/DB_URL").unwrap();
    assert_eq!(st.get_value(&secret).await.unwrap().expose(), DB_VALUE);
    let info = st.service_token_info().await.unwrap();
    assert_eq!((info.id.as_str(), info.project_id.as_str()), ("st-id-1", PROJECT));
    assert_eq!(info.scopes.len(), 1);
    assert_eq!(
        (info.scopes[0].environment.as_str(), info.scopes[0].secret_path.as_str()),
        ("dev", "/app")
    );

    // A ready access token obtained elsewhere.
    let ua_client = h.client(ua());
    ua_client.ensure_token().await.unwrap();
    let logins_before = h.emulator.login_requests("universal-auth").len();
    let body = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/universal-auth/login", h.emulator.base_url()))
        .json(
            &serde_json::json!({"clientId": "ua-client-id", "clientSecret": "ua-client-secret-1"}),
        )
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let ready = h.client(AuthMethod::token(body["accessToken"].as_str().unwrap()));
    assert_eq!(ready.get_value(&secret).await.unwrap().expose(), DB_VALUE);
    assert_eq!(h.emulator.login_requests("universal-auth").len(), logins_before + 1);

    // A fixed token that stops working is an auth error, not a login attempt.
    let wrong = h.client(AuthMethod::token("st.st-id-1.not-the-secret"));
    let err = wrong.get_value(&secret).await.unwrap_err();
    assert!(matches!(err, ClientError::Auth { .. }), "{err:?}");
}

#[tokio::test]
async fn custom_headers_reach_every_call() {
    let h = Harness::start(ApiVersion::V2026).await;
    let seen = Arc::new(Mutex::new(Vec::<(String, Option<String>)>::new()));
    // A recording proxy in front of the emulator.
    let upstream = h.emulator.base_url();
    let recorder = seen.clone();
    let proxy = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let upstream = upstream.clone();
        let recorder = recorder.clone();
        async move {
            let (parts, body) = req.into_parts();
            recorder.lock().unwrap().push((
                parts.uri.path().to_owned(),
                parts.headers.get("x-tenant").and_then(|v| v.to_str().ok()).map(str::to_owned),
            ));
            let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let mut forward = reqwest::Client::new()
                .request(parts.method.clone(), format!("{upstream}{}", parts.uri))
                .body(bytes.to_vec());
            for (name, value) in parts.headers.iter() {
                if name != "host" {
                    forward = forward.header(name, value);
                }
            }
            let response = forward.send().await.unwrap();
            let status = response.status();
            let body = response.bytes().await.unwrap();
            (status, body.to_vec())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, proxy).await });
    let config = ikit_client::ClientConfig::new(&format!("http://{addr}"), ua())
        .unwrap()
        .with_clock(h.clock.clone())
        .with_sleeper(h.sleeper.clone())
        .with_custom_headers(ikit_client::custom_headers("X-Tenant=\"blue team\"").unwrap());
    let client = ikit_client::Client::new(config).unwrap();
    client.fetch_folder(&dev_app()).await.unwrap();
    let seen = seen.lock().unwrap();
    let paths: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["/api/v1/auth/universal-auth/login", "/api/v4/secrets"]);
    assert!(seen.iter().all(|(_, v)| v.as_deref() == Some("blue team")), "{seen:?}");
}

/// A fake STS: verifies a SigV4 `GetCallerIdentity` the way AWS does, from the request it
/// received, with its own implementation of the algorithm; answers 200 or 403.
async fn fake_sts(secret_key: &'static str) -> String {
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    fn mac(key: &[u8], data: &str) -> Vec<u8> {
        let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
        m.update(data.as_bytes());
        m.finalize().into_bytes().to_vec()
    }
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| async move {
            let auth = headers["authorization"].to_str().unwrap().to_owned();
            let field = |name: &str| {
                auth.split([' ', ','])
                    .find_map(|p| p.strip_prefix(&format!("{name}=")))
                    .unwrap()
                    .to_owned()
            };
            let credential = field("Credential");
            let signed_headers = field("SignedHeaders");
            let scope: Vec<&str> = credential.split_once('/').unwrap().1.split('/').collect();
            let mut canonical = String::from("POST\n/\n\n");
            for name in signed_headers.split(';') {
                let value = headers[name].to_str().unwrap().trim();
                canonical.push_str(&format!("{name}:{value}\n"));
            }
            canonical
                .push_str(&format!("\n{signed_headers}\n{}", hex::encode(Sha256::digest(&body))));
            let amz_date = headers["x-amz-date"].to_str().unwrap();
            let to_sign = format!(
                "AWS4-HMAC-SHA256\n{amz_date}\n{}\n{}",
                scope.join("/"),
                hex::encode(Sha256::digest(canonical.as_bytes()))
            );
            let mut key = mac(format!("AWS4{secret_key}").as_bytes(), scope[0]);
            for part in &scope[1..] {
                key = mac(&key, part);
            }
            let ok = hex::encode(mac(&key, &to_sign)) == field("Signature")
                && &body[..] == b"Action=GetCallerIdentity&Version=2011-06-15";
            if ok {
                (axum::http::StatusCode::OK, "<GetCallerIdentityResponse/>")
            } else {
                (axum::http::StatusCode::FORBIDDEN, "SignatureDoesNotMatch")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}

#[tokio::test]
async fn the_aws_login_request_verifies_at_a_fake_sts_as_infisical_would_forward_it() {
    let h = Harness::start(ApiVersion::V2026).await;
    let sts = fake_sts("aws-secret-key-value").await;
    let credentials = |secret: &str| AwsCredentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: Zeroizing::new(secret.into()),
        session_token: Some(Zeroizing::new("aws-session-token".into())),
    };
    for (secret, want) in [("aws-secret-key-value", 200), ("some-other-secret", 403)] {
        let client = h.client(AuthMethod::AwsIam {
            identity_id: "id-cloud".into(),
            credentials: credentials(secret).into(),
            region: "us-east-1".into(),
            sts_host: None,
        });
        client.ensure_token().await.unwrap();
        let body = h.emulator.login_requests("aws-auth").pop().unwrap();
        // Replay the recorded request the way the Infisical server forwards it to STS.
        let b64 = base64::engine::general_purpose::STANDARD;
        let headers: HashMap<String, String> = serde_json::from_slice(
            &b64.decode(body["iamRequestHeaders"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!(headers["Host"], "sts.us-east-1.amazonaws.com");
        let mut request = reqwest::Client::new()
            .post(&sts)
            .body(b64.decode(body["iamRequestBody"].as_str().unwrap()).unwrap());
        for (name, value) in &headers {
            if name != "Content-Length" {
                request = request.header(name.as_str(), value.as_str());
            }
        }
        let status = request.send().await.unwrap().status().as_u16();
        assert_eq!(status, want, "signed with {secret}");
    }
}
