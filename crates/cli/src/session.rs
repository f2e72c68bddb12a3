//! What ikit keeps under `~/.ikit/` between runs, for a warm start: the access token of a
//! machine-identity login (sealed with AES-256-GCM, 0600, bound to the server and the
//! credentials it came from), the API generation the server speaks, and the key that seals
//! tokens and the offline snapshots.
//!
//! The local key (`~/.ikit/key`, 32 random bytes, 0600) is split by HMAC into one key per use.
//! A token file's name is a keyed HMAC of the server and credentials, never a plain hash of a
//! secret, and the same text is the sealed payload's associated data, so a file copied to another
//! name, or read with other credentials, does not open.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use ikit_client::{ApiVersion, Client, LoginToken, SealKey};
use ikit_common::SecretValue;
use ikit_common::config::AuthMethod;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::CliError;
use crate::context::Context;

/// A cached token is used only while it has at least this long left.
pub const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
const KEY_FILE: &str = "key";

/// Reads `~/.ikit/key`, creating it (0600, in a 0700 directory) on first use; read once per
/// process (a new key is queued on [`Context::writes`], before any file it seals).
fn master_key(ctx: &Context, dir: &Path) -> Result<Zeroizing<Vec<u8>>, CliError> {
    if let Some(key) = ctx.master_key.get() {
        return Ok(key.clone());
    }
    let path = dir.join(KEY_FILE);
    let key = match std::fs::read_to_string(&path) {
        Ok(text) => base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .map(Zeroizing::new)
            .ok_or_else(|| {
                CliError::Failed(format!(
                    "{}: not a key written by ikit (delete it to start over)",
                    path.display()
                ))
            })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = Zeroizing::new(vec![0u8; 32]);
            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
            let text = base64::engine::general_purpose::STANDARD.encode(bytes.as_slice());
            ctx.writes.write_private(path, Zeroizing::new(text.into_bytes()));
            bytes
        }
        Err(e) => return Err(CliError::io(&path, e)),
    };
    Ok(ctx.master_key.get_or_init(|| key).clone())
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac takes any key length");
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The key sealing offline snapshots under `dir`.
pub fn snapshot_key(ctx: &Context, dir: &Path) -> Result<SealKey, CliError> {
    let master = master_key(ctx, dir)?;
    Ok(SealKey::new(hmac(&master, &[b"ikit snapshot key"])))
}

/// What identifies a login: the server and the method with every credential it uses. `None`
/// for a fixed token (nothing to cache) or no auth.
fn login_identity(ctx: &Context) -> Option<Vec<Vec<u8>>> {
    let infisical = &ctx.settings.infisical;
    let mut parts: Vec<Vec<u8>> =
        vec![infisical.api_url.as_bytes().to_vec(), infisical.auth.name().as_bytes().to_vec()];
    match &infisical.auth {
        AuthMethod::None | AuthMethod::Token(_) => return None,
        AuthMethod::UniversalAuth { client_id, client_secret } => {
            parts.push(client_id.as_bytes().to_vec());
            parts.push(client_secret.expose().as_bytes().to_vec());
        }
        AuthMethod::Kubernetes { identity_id, token_path } => {
            parts.push(identity_id.as_bytes().to_vec());
            parts.push(token_path.to_string_lossy().as_bytes().to_vec());
        }
        AuthMethod::OidcAuth { identity_id, jwt } | AuthMethod::JwtAuth { identity_id, jwt } => {
            parts.push(identity_id.as_bytes().to_vec());
            parts.push(jwt.expose().as_bytes().to_vec());
        }
        AuthMethod::AwsIam { identity_id }
        | AuthMethod::Azure { identity_id }
        | AuthMethod::GcpIdToken { identity_id } => parts.push(identity_id.as_bytes().to_vec()),
    }
    if let Some(org) = &infisical.organization_slug {
        parts.push(org.as_bytes().to_vec());
    }
    Some(parts)
}

/// Where the token of this login is cached, and the text its seal is bound to.
fn token_slot(ctx: &Context) -> Result<Option<(PathBuf, SealKey, String)>, CliError> {
    let (Some(dir), Some(identity)) = (&ctx.state_dir, login_identity(ctx)) else {
        return Ok(None);
    };
    let master = master_key(ctx, dir)?;
    let parts: Vec<&[u8]> = identity.iter().map(Vec::as_slice).collect();
    let name = hex::encode(&hmac(&master, &parts)[..16]);
    let key = SealKey::new(hmac(&master, &[b"ikit token key"]));
    Ok(Some((dir.join("tokens").join(format!("{name}.sealed")), key, name)))
}

/// Loads the cached token for this login when it has at least [`MIN_TOKEN_LIFETIME`] left.
/// A file that does not open (other key, altered) is ignored: a login replaces it.
pub fn cached_token(ctx: &Context) -> Result<Option<SecretValue>, CliError> {
    let Some((path, key, aad)) = token_slot(ctx)? else { return Ok(None) };
    let Ok(sealed) = std::fs::read(&path) else { return Ok(None) };
    let Ok(plain) = ikit_client::internals::open(&key, aad.as_bytes(), &sealed) else {
        tracing::debug!(path = %path.display(), "cached token does not open, ignored");
        return Ok(None);
    };
    let Some((expires_ms, token)) =
        std::str::from_utf8(&plain).ok().and_then(|t| t.split_once('\n'))
    else {
        return Ok(None);
    };
    let Ok(expires_ms) = expires_ms.parse::<i64>() else { return Ok(None) };
    let left = expires_ms.saturating_sub(ctx.clock.now_ms());
    if left < MIN_TOKEN_LIFETIME.as_millis() as i64 {
        return Ok(None);
    }
    Ok(Some(SecretValue::new(token)))
}

/// Seals and stores a fresh token for this login (nothing for a token without expiry: it is
/// not ours to keep).
pub fn store_token(ctx: &Context, token: &LoginToken) -> Result<(), CliError> {
    let Some(expires_at) = token.expires_at else { return Ok(()) };
    let Some((path, key, aad)) = token_slot(ctx)? else { return Ok(()) };
    let expires_ms = expires_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let plain = Zeroizing::new(format!("{expires_ms}\n{}", token.access_token.expose()));
    let sealed = ikit_client::internals::seal(
        &key,
        aad.as_bytes(),
        plain.as_bytes(),
        &mut rand::thread_rng(),
    );
    ctx.writes.write_private(path, Zeroizing::new(sealed));
    Ok(())
}

/// Drops the cached token for this login (after the server refused it).
pub fn forget_token(ctx: &Context) -> Result<(), CliError> {
    if let Some((path, _, _)) = token_slot(ctx)? {
        // Queued behind any write of the same file, so a token stored earlier in this process
        // cannot come back after it.
        let target = path.clone();
        ctx.writes.push(path, move || match std::fs::remove_file(&target) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        });
    }
    Ok(())
}

/// The secrets API generation an earlier run found this server to speak: the one the cached
/// client saves beside its snapshots (remembered in one place only).
pub fn remembered_api_version(ctx: &Context) -> Option<ApiVersion> {
    ikit_client::internals::saved_api_version(&ctx.snapshot_dir()?)
}

/// A client for the context: a fixed token as is; a machine-identity login through its cached
/// token while valid (the `bool` says so), else logged in now and the token cached.
pub async fn client(ctx: &Context) -> Result<(Client, bool), CliError> {
    if let Some(token) = cached_token(ctx)? {
        let mut settings = ctx.settings.clone();
        settings.infisical.auth = AuthMethod::Token(token);
        let config = ctx.with_client_defaults(
            ikit_client::ClientConfig::from_settings(&settings)
                .map_err(|e| CliError::Usage(e.to_string()))?,
        );
        return Ok((Client::new(config).map_err(|e| CliError::Usage(e.to_string()))?, true));
    }
    Ok((fresh_client(ctx).await?, false))
}

/// A client that logs in now (a machine identity) and caches the token; a fixed token as is.
/// When Infisical is unreachable the client is returned without a token, so a cached or
/// snapshot copy can still serve; any other login failure is returned.
pub async fn fresh_client(ctx: &Context) -> Result<Client, CliError> {
    let client = Client::new(ctx.client_config()?).map_err(|e| CliError::Usage(e.to_string()))?;
    if login_identity(ctx).is_some() {
        match client.login().await {
            Ok(token) => store_token(ctx, &token)?,
            Err(e) if e.is_unreachable() => {}
            Err(e) => return Err(CliError::client("login", e)),
        }
    }
    Ok(client)
}

/// One line naming the method and the server's reason; the client's errors never hold a
/// credential.
pub fn login_error(ctx: &Context, e: ikit_client::ClientError) -> CliError {
    CliError::Failed(format!(
        "unable to authenticate with {}: {e}",
        ctx.settings.infisical.auth.name()
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::SystemTime;

    use ikit_client::AccessToken;
    use ikit_common::clock::ManualClock;

    use super::*;
    use crate::cli::GlobalArgs;
    use crate::context::Discovered;

    const NOW_MS: i64 = 1_800_000_000_000;

    fn ctx(home: &Path, secret: &str) -> Context {
        let env: BTreeMap<String, String> = [
            ("INFISICAL_DOMAIN", "http://127.0.0.1:9"),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", "id"),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", secret),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let mut ctx =
            Context::resolve(&GlobalArgs::default(), &env, home, Some(home), Discovered::default())
                .unwrap();
        ctx.clock = Arc::new(ManualClock::new(NOW_MS));
        ctx
    }

    fn token(value: &str, expires_in: Duration) -> LoginToken {
        LoginToken {
            access_token: AccessToken::new(value),
            expires_at: Some(
                SystemTime::UNIX_EPOCH + Duration::from_millis(NOW_MS as u64) + expires_in,
            ),
            renewable_until: None,
        }
    }

    #[test]
    fn a_stored_token_is_served_until_a_minute_before_it_expires() {
        let home = tempfile::tempdir().unwrap();
        let c = ctx(home.path(), "s1");
        assert!(cached_token(&c).unwrap().is_none());
        store_token(&c, &token("tok-1", Duration::from_secs(600))).unwrap();
        assert!(c.writes.finish().is_empty(), "stored by the time the writes are joined");
        assert_eq!(cached_token(&c).unwrap().unwrap().expose(), "tok-1");

        let mut late = c.clone();
        late.clock = Arc::new(ManualClock::new(NOW_MS + 540_001));
        assert!(cached_token(&late).unwrap().is_none(), "less than a minute left");
        forget_token(&c).unwrap();
        assert!(cached_token(&c).unwrap().is_none());
    }

    #[test]
    fn a_token_is_bound_to_the_credentials_and_its_file_name() {
        let home = tempfile::tempdir().unwrap();
        let c = ctx(home.path(), "s1");
        store_token(&c, &token("tok-1", Duration::from_secs(600))).unwrap();
        assert!(c.writes.finish().is_empty());
        assert!(
            cached_token(&ctx(home.path(), "s2")).unwrap().is_none(),
            "other secret, other slot"
        );

        // a file moved to another login's name does not open there
        let (path, _, _) = token_slot(&c).unwrap().unwrap();
        let (other, _, _) = token_slot(&ctx(home.path(), "s2")).unwrap().unwrap();
        std::fs::copy(&path, &other).unwrap();
        assert!(cached_token(&ctx(home.path(), "s2")).unwrap().is_none());
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.contains("s1") && name.len() == "0123456789abcdef0123456789abcdef.sealed".len()
        );
    }

    #[test]
    fn fixed_tokens_are_never_cached() {
        let home = tempfile::tempdir().unwrap();
        let mut c = ctx(home.path(), "s1");
        c.settings.infisical.auth = AuthMethod::Token(SecretValue::new("st.a.b"));
        store_token(&c, &token("tok", Duration::from_secs(600))).unwrap();
        assert!(c.writes.finish().is_empty());
        assert!(token_slot(&c).unwrap().is_none());
        assert!(!home.path().join(".ikit/tokens").exists());
    }

    #[test]
    fn a_key_file_that_is_not_ours_is_reported_not_overwritten() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join(crate::context::STATE_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(KEY_FILE), "not base64!").unwrap();
        let err = snapshot_key(&ctx(home.path(), "s1"), &dir).err().unwrap();
        assert!(err.to_string().contains("not a key written by ikit"), "{err}");
        assert_eq!(std::fs::read_to_string(dir.join(KEY_FILE)).unwrap(), "not base64!");
    }
}
