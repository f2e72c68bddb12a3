//! Key operations of `ikit rotate` and `ikit verify`: the rotation checks (pure, over the key
//! folders' contents), the served-JWKS checks (pure, over the JSON), and the direct rotation
//! through ikit-keys under the same lock the health service takes.

use std::collections::BTreeMap;
use std::sync::Arc;

use ikit_common::SecretValue;
use ikit_keys::KeyManager;
use ikit_keys::jwt::PublicJwk;
#[cfg(feature = "postgres")]
use ikit_keys::lock::PgAdvisoryLock;
use ikit_keys::lock::{LocalLock, RedisLock, RotationLock};
use ikit_keys::rotation::{Check, JwtFolder, jwt_names, verify_aes_folder, verify_jwt_folder};
use serde_json::Value;

/// Where the keys live in the project (the seeds' layout, shared with the health service).
pub const JWT_FOLDER: &str = "/auth/jwt";
pub const AES_FOLDER: &str = "/auth/aes";
/// The health service's Redis lock lease (it must outlast one store call plus a lock call).
const REDIS_LOCK_TTL_MS: u64 = 180_000;

fn check(name: &str, ok: bool, detail: impl Into<String>) -> Check {
    Check { name: name.to_owned(), ok, detail: detail.into() }
}

/// Every published key's `kid` must be the RFC 7638 thumbprint of the key it names.
fn published_kids_match(jwks: &Value, what: &str) -> Check {
    let name = format!("{what}: every kid matches its key");
    let Some(keys) = jwks.get("keys").and_then(Value::as_array) else {
        return check(&name, false, "no \"keys\" array");
    };
    let bad: Vec<String> = keys
        .iter()
        .enumerate()
        .filter_map(|(i, k)| {
            PublicJwk::from_json(k).err().map(|e| {
                let kid = k.get("kid").and_then(Value::as_str).unwrap_or("(no kid)");
                format!("key {i} ({kid}): {e}")
            })
        })
        .collect();
    if bad.is_empty() {
        check(&name, true, format!("{} keys", keys.len()))
    } else {
        check(&name, false, bad.join("; "))
    }
}

/// The rotation checks of the stored key folders: ikit-keys' consistency checks (state, public
/// keys matching private ones, `active_kid` in `keys_map`, `current_key` its material), every
/// published kid matching its key, and, when `require_next`, the seed's rule that `public_jwks`
/// holds both the current and the next key (verifiers know the next key before it signs).
pub fn rotation_checks(
    jwt: &BTreeMap<String, SecretValue>,
    aes: &BTreeMap<String, SecretValue>,
    require_next: bool,
) -> Vec<Check> {
    let mut checks = verify_jwt_folder(jwt);
    let jwks = jwt
        .get(jwt_names::PUBLIC_JWKS)
        .and_then(|t| serde_json::from_str::<Value>(t.expose()).ok());
    match &jwks {
        Some(jwks) => checks.push(published_kids_match(jwks, "public_jwks")),
        None => checks.push(check(
            "public_jwks: every kid matches its key",
            false,
            "missing or not JSON",
        )),
    }
    if require_next {
        let state = JwtFolder::parse(jwt).ok().and_then(|f| f.state);
        let published: Vec<String> = jwks
            .as_ref()
            .and_then(|j| j.get("keys")?.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|k| k.get("kid")?.as_str().map(str::to_owned))
            .collect();
        let name = "public_jwks holds the current and the next key";
        checks.push(match state {
            None => check(name, false, "no rotation_state"),
            Some(state) => {
                let mut missing = Vec::new();
                if !published.contains(&state.current_kid) {
                    missing.push(format!("current key {}", state.current_kid));
                }
                match &state.next {
                    Some(next) if !published.contains(&next.kid) => {
                        missing.push(format!("next key {}", next.kid));
                    }
                    Some(_) => {}
                    None => missing.push(
                        "next key (none is published: run `ikit rotate jwt`, or pass \
                         --allow-no-next between rotations)"
                            .to_owned(),
                    ),
                }
                if missing.is_empty() {
                    check(name, true, format!("current {}", state.current_kid))
                } else {
                    check(name, false, format!("missing {}", missing.join(", ")))
                }
            }
        });
    }
    checks.extend(verify_aes_folder(aes));
    checks
}

/// The checks of a JWKS as a verifier fetches it: keys present, every kid its key's
/// thumbprint, and (when the stored `public_jwks` is known) the same kids as stored.
pub fn served_jwks_checks(served: &Value, stored_kids: Option<&[String]>) -> Vec<Check> {
    let mut checks = Vec::new();
    let kids: Vec<String> = served
        .get("keys")
        .and_then(Value::as_array)
        .map(|keys| keys.iter().filter_map(|k| k.get("kid")?.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    checks.push(check("served JWKS has keys", !kids.is_empty(), format!("{} keys", kids.len())));
    checks.push(published_kids_match(served, "served JWKS"));
    if let Some(stored) = stored_kids {
        let missing: Vec<&String> = stored.iter().filter(|k| !kids.contains(k)).collect();
        checks.push(check(
            "served JWKS holds every stored key",
            missing.is_empty(),
            if missing.is_empty() {
                "in sync".to_owned()
            } else {
                format!(
                    "not served yet: {}",
                    missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                )
            },
        ));
    }
    checks
}

/// The lines `ikit verify` prints: `ok`/`FAIL`, the check, its detail.
pub fn report_lines(checks: &[Check]) -> String {
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|c| {
            vec![if c.ok { "ok" } else { "FAIL" }.to_owned(), c.name.clone(), c.detail.clone()]
        })
        .collect();
    crate::render::table(&["RESULT", "CHECK", "DETAIL"], &rows)
}

/// Why a build without the `postgres` feature refuses a direct rotation with a PostgreSQL
/// `IKIT_DATABASE_URL`.
#[cfg(not(feature = "postgres"))]
const NO_POSTGRES_LOCK: &str = "IKIT_DATABASE_URL is PostgreSQL, so the health service takes its \
    rotation lock there, and this ikit is built without PostgreSQL (cargo feature `postgres`): \
    rotate through the health service (set IKIT_HEALTH_URL and IKIT_ADMIN_TOKEN) or build ikit \
    with --features postgres";

/// The rotation lock the health service of the same project and environment takes: PostgreSQL
/// advisory with a PostgreSQL `IKIT_DATABASE_URL`, else Redis with `IKIT_REDIS_URL`, else an
/// in-process lock (`shared` false: nothing stops a concurrent rotator elsewhere).
pub fn rotation_lock(
    project_id: &str,
    environment: &str,
    database_url: Option<&str>,
    redis_url: Option<&str>,
) -> Result<(Arc<dyn RotationLock>, bool), String> {
    let name = format!("ikit-keys-rotation:{project_id}:{environment}");
    if let Some(url) =
        database_url.filter(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
    {
        #[cfg(feature = "postgres")]
        {
            let lock = PgAdvisoryLock::from_url(url, &name).map_err(|e| e.to_string())?;
            return Ok((Arc::new(lock), true));
        }
        // any other lock would not exclude a health service holding the PostgreSQL one
        #[cfg(not(feature = "postgres"))]
        {
            let _ = url;
            return Err(NO_POSTGRES_LOCK.to_owned());
        }
    }
    if let Some(url) = redis_url {
        let client = redis::Client::open(url)
            .map_err(|_| "IKIT_REDIS_URL is not a valid redis url".to_owned())?;
        return Ok((
            Arc::new(RedisLock::new(client, format!("ikit:lock:{name}"), REDIS_LOCK_TTL_MS)),
            true,
        ));
    }
    Ok((Arc::new(LocalLock::default()), false))
}

/// A key manager over the project's key folders in Infisical. With a `publisher` (a
/// `CachedClient` on the replicas' Redis), every committed step tells the other replicas to
/// reload their ring, as the health service's own rotations do.
pub fn manager(
    client: ikit_client::Client,
    project_id: &str,
    environment: &str,
    lock: Arc<dyn RotationLock>,
    publisher: Option<Arc<dyn ikit_keys::KeyChangePublisher>>,
) -> Result<KeyManager, ikit_keys::Error> {
    let store = ikit_keys::infisical::InfisicalStore::new(client, project_id, environment);
    let mut builder =
        KeyManager::builder(Arc::new(store)).lock(lock).folders(JWT_FOLDER, AES_FOLDER);
    if let Some(publisher) = publisher {
        builder = builder.publisher(publisher);
    }
    builder.build()
}

/// A key folder read as the key store reads it (no imports, no reference expansion: key
/// material is taken literally; a missing folder is empty), for the pure checks.
pub async fn read_key_folder(
    client: &ikit_client::Client,
    project_id: &str,
    environment: &str,
    folder: &str,
) -> Result<BTreeMap<String, SecretValue>, ikit_client::ClientError> {
    let query = ikit_client::FolderQuery::new(project_id, environment, folder)
        .include_imports(false)
        .expand_references(false);
    match client.fetch_folder(&query).await {
        Ok(listing) => Ok(listing.secrets.into_iter().map(|s| (s.key, s.value)).collect()),
        Err(ikit_client::ClientError::NotFound { .. }) => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

/// A folder as the pure checks take it.
pub fn values(folder: ikit_keys::store::Folder) -> BTreeMap<String, SecretValue> {
    folder.into_iter().map(|(k, v)| (k, v.value)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ikit_keys::store::KeyStore as _;
    use ikit_keys::{FileStore, RotationTarget, Trigger};

    async fn folders(
        store: &FileStore,
    ) -> (BTreeMap<String, SecretValue>, BTreeMap<String, SecretValue>) {
        (
            values(store.read_folder(JWT_FOLDER).await.unwrap()),
            values(store.read_folder(AES_FOLDER).await.unwrap()),
        )
    }

    fn failed(checks: &[Check]) -> Vec<String> {
        checks.iter().filter(|c| !c.ok).map(|c| format!("{}: {}", c.name, c.detail)).collect()
    }

    #[tokio::test]
    async fn a_folder_without_a_next_key_fails_until_a_rotation_publishes_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FileStore::new(dir.path()));
        let keys =
            KeyManager::builder(store.clone()).folders(JWT_FOLDER, AES_FOLDER).build().unwrap();
        keys.load().await.unwrap();

        let (jwt, aes) = folders(&store).await;
        let checks = rotation_checks(&jwt, &aes, true);
        let failures = failed(&checks);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].contains("next key"), "{failures:?}");
        assert!(failed(&rotation_checks(&jwt, &aes, false)).is_empty(), "consistent otherwise");

        keys.rotate(RotationTarget::Both, true, "test", Trigger::Forced).await.unwrap();
        let (jwt, aes) = folders(&store).await;
        assert!(failed(&rotation_checks(&jwt, &aes, true)).is_empty());
    }

    #[tokio::test]
    async fn an_active_kid_outside_keys_map_and_a_forged_kid_fail() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FileStore::new(dir.path()));
        let keys =
            KeyManager::builder(store.clone()).folders(JWT_FOLDER, AES_FOLDER).build().unwrap();
        keys.load().await.unwrap();
        let (mut jwt, mut aes) = folders(&store).await;

        aes.insert("active_kid".into(), SecretValue::new("not-a-kid"));
        let jwks: Value = serde_json::from_str(jwt["public_jwks"].expose()).unwrap();
        let mut forged = jwks.clone();
        forged["keys"][0]["kid"] = Value::String("forged".into());
        jwt.insert("public_jwks".into(), SecretValue::new(forged.to_string()));

        let failures = failed(&rotation_checks(&jwt, &aes, false));
        assert!(
            failures.iter().any(|f| f.starts_with("active_kid is in keys_map")),
            "{failures:?}"
        );
        assert!(
            failures
                .iter()
                .any(|f| f.starts_with("public_jwks: every kid matches its key")
                    && f.contains("forged")),
            "{failures:?}"
        );

        let served = served_jwks_checks(&forged, None);
        assert!(!served[1].ok);
        let real_kids: Vec<String> =
            vec![jwks["keys"][0]["kid"].as_str().unwrap().to_owned(), "other".into()];
        let served = served_jwks_checks(&jwks, Some(&real_kids));
        assert!(served[0].ok && served[1].ok);
        assert!(!served[2].ok && served[2].detail.contains("other"));
    }

    #[test]
    fn the_lock_follows_the_health_service() {
        let (_, shared) = rotation_lock("p", "dev", Some("sqlite://x.db"), None).unwrap();
        assert!(!shared, "sqlite is one process: no shared lock");
        let (_, shared) = rotation_lock("p", "dev", None, Some("redis://127.0.0.1:6379")).unwrap();
        assert!(shared);
        assert!(rotation_lock("p", "dev", None, Some("not a url")).is_err());
    }
}
