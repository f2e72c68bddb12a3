//! The public surface as a new user meets it: `from_env` in one line, `value(path)`, the builder,
//! and network errors that name the URL and the likely mistake.

use std::collections::BTreeMap;
use std::time::Duration;

use ikit_client::{CachedClient, Client, ClientConfig, ClientError, RetryPolicy, Source};
use ikit_emulator::ApiVersion;

use crate::support::{DB_VALUE, Harness, PROJECT, emulator, ua};

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test]
async fn from_env_reads_a_value_in_the_default_environment() {
    let emu = emulator(ApiVersion::V2026).await;
    let url = emu.base_url();
    let secrets = ikit_client::from_env(&env(&[
        ("INFISICAL_API_URL", &url),
        ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", "ua-client-id"),
        ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", "ua-client-secret-1"),
        ("INFISICAL_PROJECT_ID", PROJECT),
    ]))
    .unwrap();
    assert_eq!((secrets.project(), secrets.environment()), (PROJECT, "dev"));
    assert_eq!(secrets.value("/app/DB_URL").await.unwrap().expose(), DB_VALUE);
    // Imports resolve as in a full `get`; the second read of the folder is a cache hit.
    assert_eq!(secrets.value("/app/COMMON").await.unwrap().expose(), "from-shared2");
    assert_eq!(secrets.secret("/app/DB_URL").await.unwrap().source, Source::Cache);
    // Another environment for one read.
    assert_eq!(secrets.value_in("prod", "/locked/K").await.unwrap().expose(), "v");

    // A missing secret says which one and where, through the one error type.
    let missing = secrets.value("/app/NOPE").await.unwrap_err();
    assert_eq!(missing.kind(), "not_found");
    assert_eq!((missing.secret(), missing.folder()), (Some("NOPE"), Some("/app")));
    // A bad path is refused before anything is sent, with the reference error's words.
    let bad = secrets.value("app/DB_URL").await.unwrap_err();
    assert_eq!(bad.kind(), "invalid_input");
    assert!(bad.to_string().contains("must start with '/'"), "{bad}");

    // The environment comes from IKIT_INFISICAL_ENVIRONMENT when set.
    let prod = ikit_client::from_env(&env(&[
        ("INFISICAL_API_URL", &url),
        ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", "ua-client-id"),
        ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", "ua-client-secret-1"),
        ("INFISICAL_PROJECT_ID", PROJECT),
        ("IKIT_INFISICAL_ENVIRONMENT", "prod"),
    ]))
    .unwrap();
    assert_eq!(prod.value("/locked/K").await.unwrap().expose(), "v");
    assert_eq!(prod.value("/app/DB_URL").await.unwrap_err().kind(), "not_found");
}

#[tokio::test]
async fn the_builder_caches_in_front_of_a_given_client() {
    let h = Harness::start(ApiVersion::V2026).await;
    let cache = CachedClient::builder()
        .client(h.client(ua()))
        .ttl(Duration::from_secs(60))
        .max_stale(Duration::from_secs(600))
        .stale_while_revalidate(Duration::ZERO)
        .build()
        .unwrap();
    let secrets = ikit_client::Secrets::new(cache, PROJECT, "dev").unwrap();
    assert_eq!(secrets.value("/app/DB_URL").await.unwrap().expose(), DB_VALUE);
    assert_eq!(secrets.secret("/app/DB_URL").await.unwrap().source, Source::Cache);
    // Past the ttl given to the builder (not the 5-minute default) the folder is read again.
    h.advance(Duration::from_secs(61));
    let again = secrets.secret("/app/DB_URL").await.unwrap();
    assert_ne!(again.source, Source::Cache, "ttl of 60 s applied");
    assert!(ikit_client::Secrets::new(secrets.cache().clone(), PROJECT, "Not An Env").is_err());
}

/// A client for `url` that retries nothing and never sleeps for real.
fn one_attempt(h: &Harness, url: &str) -> Client {
    let config = ClientConfig::new(url, ua())
        .unwrap()
        .with_clock(h.clock.clone())
        .with_sleeper(h.sleeper.clone())
        .with_retry(RetryPolicy { max_attempts: 1, ..RetryPolicy::default() })
        .with_timeouts(Duration::from_secs(5), Duration::from_secs(10));
    Client::new(config).unwrap()
}

#[tokio::test]
async fn network_errors_name_the_url_and_the_likely_mistake() {
    let h = Harness::start(ApiVersion::V2026).await;
    // A closed port: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let closed = one_attempt(&h, &format!("http://127.0.0.1:{port}"));
    let err = closed.ensure_token().await.unwrap_err();
    assert!(matches!(err, ClientError::Unavailable { status: None, .. }), "{err:?}");
    let text = err.to_string();
    let login_url = format!("http://127.0.0.1:{port}/api/v1/auth/universal-auth/login");
    assert!(text.contains(&login_url), "names the url: {text}");
    assert!(text.contains("refused"), "names the cause: {text}");
    assert!(text.contains(&format!("nothing listens on 127.0.0.1:{port}")), "{text}");

    // https against the plain-http emulator.
    let https = h.emulator.base_url().replacen("http://", "https://", 1);
    let err = one_attempt(&h, &https).ensure_token().await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&format!("{https}/api/v1/auth")), "names the url: {text}");
    assert!(text.contains("use http://"), "says what to change: {text}");
}
