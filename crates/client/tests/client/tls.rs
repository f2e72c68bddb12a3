//! TLS and redirects: a server behind a private CA (a test CA made here with rcgen, and a TLS
//! terminator on loopback in front of the emulator), and redirects that would carry the login
//! body or credential headers to another origin.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ikit_client::{Client, ClientConfig, ClientError, FolderQuery};
use ikit_emulator::ApiVersion;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::support::{DB_VALUE, Harness, PROJECT, ua};

fn dev_app() -> FolderQuery {
    FolderQuery::new(PROJECT, "dev", "/app")
}

/// A private CA and a `localhost` certificate it signed; returns the CA's PEM and the server's
/// TLS configuration.
fn private_ca() -> (String, Arc<rustls::ServerConfig>) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "ikit test private ca");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(leaf.der().to_vec())], key)
        .unwrap();
    (ca.pem(), Arc::new(config))
}

/// Terminates TLS on a loopback port and relays the bytes to `upstream`; returns the https base.
async fn tls_terminator(config: Arc<rustls::ServerConfig>, upstream: String) -> String {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = upstream.trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut plain) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    format!("https://localhost:{port}")
}

fn client(h: &Harness, config: ClientConfig) -> Client {
    Client::new(config.with_clock(h.clock.clone()).with_sleeper(h.sleeper.clone())).unwrap()
}

#[tokio::test]
async fn a_server_behind_a_private_ca_is_reached_with_the_ca_file_and_named_without_it() {
    let h = Harness::start(ApiVersion::V2026).await;
    let (ca_pem, server) = private_ca();
    let base = tls_terminator(server, h.emulator.base_url()).await;

    // Not trusted by the system or built-in roots: the error names the URL and the cause.
    let untrusted = client(&h, ClientConfig::new(&base, ua()).unwrap());
    let err = untrusted.fetch_folder(&dev_app()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ClientError::Unavailable { status: None, .. }), "{text}");
    assert!(text.contains(&format!("{base}/api/v1/auth/universal-auth/login")), "{text}");
    assert!(text.to_ascii_lowercase().contains("certificate"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let trusted = client(&h, ClientConfig::new(&base, ua()).unwrap().with_ca_file(&ca_file));
    let folder = trusted.fetch_folder(&dev_app()).await.unwrap();
    assert!(folder.secrets.iter().any(|s| s.value.expose() == DB_VALUE));

    // From settings: IKIT_CA_FILE, else the OpenSSL convention SSL_CERT_FILE.
    for variable in ["IKIT_CA_FILE", "SSL_CERT_FILE"] {
        let env: BTreeMap<String, String> = [
            ("INFISICAL_API_URL", base.as_str()),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", "ua-client-id"),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", "ua-client-secret-1"),
            (variable, ca_file.to_str().unwrap()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let from_env = client(&h, ClientConfig::from_env(&env).unwrap());
        from_env.fetch_folder(&dev_app()).await.unwrap();
    }

    // A CA file that is missing or holds no certificate is refused when the client is built.
    let missing = Client::new(
        ClientConfig::new(&base, ua()).unwrap().with_ca_file(dir.path().join("nope.pem")),
    );
    assert!(
        matches!(missing, Err(ClientError::Config(ref m)) if m.contains("nope.pem")),
        "{missing:?}"
    );
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let empty = Client::new(ClientConfig::new(&base, ua()).unwrap().with_ca_file(&empty));
    assert!(
        matches!(empty, Err(ClientError::Config(ref m)) if m.contains("empty.pem")),
        "{empty:?}"
    );
}

/// Every request a server received: path, a custom credential header, body.
type Seen = Arc<Mutex<Vec<(String, Option<String>, String)>>>;

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn recorder() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let log = log.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            log.lock().unwrap().push((
                parts.uri.to_string(),
                parts
                    .headers
                    .get("x-access-secret")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                String::from_utf8_lossy(&body).into_owned(),
            ));
            "{}"
        }
    });
    (serve(app).await, seen)
}

/// Answers every request with `status` and `Location: <target><path and query>`.
async fn redirector(status: u16, target: String) -> String {
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let target = target.clone();
        async move {
            let location = format!("{target}{}", req.uri());
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [(axum::http::header::LOCATION, location)],
            )
        }
    });
    serve(app).await
}

#[tokio::test]
async fn a_cross_origin_redirect_is_refused_and_never_sees_the_login_body_or_headers() {
    let h = Harness::start(ApiVersion::V2026).await;
    let (elsewhere, seen) = recorder().await;
    let headers = ikit_client::custom_headers("X-Access-Secret=proxy-secret-value").unwrap();
    for status in [307, 308, 302] {
        let base = redirector(status, elsewhere.clone()).await;
        let c = client(
            &h,
            ClientConfig::new(&base, ua()).unwrap().with_custom_headers(headers.clone()),
        );
        let err = c.fetch_folder(&dev_app()).await.unwrap_err();
        assert!(
            matches!(err, ClientError::Redirect { ref from, ref to } if from == &base && to == &elsewhere),
            "{status}: {err:?}"
        );
        assert!(err.to_string().contains("INFISICAL_API_URL"), "{err}");
    }
    assert_eq!(*seen.lock().unwrap(), Vec::new(), "the other origin received nothing");
}

#[tokio::test]
async fn a_redirect_within_the_origin_is_still_followed() {
    let h = Harness::start(ApiVersion::V2026).await;
    let upstream = h.emulator.base_url();
    // `/api/...` answers 307 to `/moved/api/...` on the same server, which relays to the emulator.
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let upstream = upstream.clone();
        async move {
            let (parts, body) = req.into_parts();
            let path = parts.uri.to_string();
            let Some(rest) = path.strip_prefix("/moved") else {
                let mut headers = axum::http::HeaderMap::new();
                headers
                    .insert(axum::http::header::LOCATION, format!("/moved{path}").parse().unwrap());
                return (axum::http::StatusCode::TEMPORARY_REDIRECT, headers, Vec::new());
            };
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let mut forward =
                reqwest::Client::new().request(parts.method.clone(), format!("{upstream}{rest}"));
            for (name, value) in parts.headers.iter() {
                if name != "host" {
                    forward = forward.header(name, value);
                }
            }
            let response = forward.body(body.to_vec()).send().await.unwrap();
            let status = response.status();
            let bytes = response.bytes().await.unwrap().to_vec();
            (status, axum::http::HeaderMap::new(), bytes)
        }
    });
    let base = serve(app).await;
    let c = client(&h, ClientConfig::new(&base, ua()).unwrap());
    let folder = c.fetch_folder(&dev_app()).await.unwrap();
    assert!(folder.secrets.iter().any(|s| s.value.expose() == DB_VALUE));
    assert_eq!(h.emulator.login_requests("universal-auth").len(), 1, "the login body followed");
}
