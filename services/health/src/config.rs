//! The service's configuration: the shared [`Settings`] (file + env, see ikit-common) plus the
//! few settings only this service has, read from the same env map by a pure function.
//!
//! | env | default | meaning |
//! |---|---|---|
//! | `IKIT_ADMIN_TOKEN` | (admin endpoints off) | bearer token of the admin endpoints |
//! | `IKIT_ADMIN_TOKEN_PREVIOUS` | | a second accepted token, while the first is rotated |
//! | `IKIT_JWT_ROTATION_INTERVAL` | `60d` | scheduled JWT rotation |
//! | `IKIT_AES_ROTATION_INTERVAL` | `90d` | scheduled AES rotation |
//! | `IKIT_JWKS_MAX_AGE` | `1h` | `Cache-Control: max-age` of the JWKS (counted into the overlap) |
//! | `IKIT_JWT_OVERLAP` | `24h` | how long a next key is published before it signs |
//! | `IKIT_ROTATION_CHECK_EVERY` | `60s` | how often the scheduler looks for a due rotation |
//! | `IKIT_AUDIT_SPOOL_DIR` | `.ikit-dev/spool-health` | where audit entries wait for the database |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ikit_common::config::{ConfigError, ConfigErrors, MIN_ADMIN_TOKEN_LEN, parse_duration};
use ikit_common::{SecretValue, Settings};
use ikit_keys::policy::Policy;

/// Where `ikit-health` listens by default (issue 13). ikit-common's shared default
/// (`DEFAULT_HEALTH_ADDR`, 8081) predates it and is owned there; until it moves, an address left
/// at that default is read as this one.
pub const DEFAULT_ADDR: &str = "0.0.0.0:8000";
pub const DEFAULT_ROTATION_CHECK_EVERY: Duration = Duration::from_secs(60);
pub const DEFAULT_SPOOL_DIR: &str = ".ikit-dev/spool-health";
/// Where the keys live in the project (the seeds' layout).
pub const JWT_FOLDER: &str = "/auth/jwt";
pub const AES_FOLDER: &str = "/auth/aes";

/// Everything `ikit-health` is configured with.
#[derive(Clone)]
pub struct HealthConfig {
    pub settings: Settings,
    /// Accepted admin bearer tokens (the current one first); empty: admin endpoints refuse.
    pub admin_tokens: Vec<SecretValue>,
    /// The project holding the keys (`INFISICAL_PROJECT_ID`).
    pub project_id: String,
    pub policy: Policy,
    pub rotation_check_every: Duration,
    pub spool_dir: PathBuf,
    /// A `GET /api/status` slower than this makes the connection `degraded`.
    pub slow_probe: Duration,
    /// Bound on one probe of Infisical.
    pub probe_timeout: Duration,
}

impl std::fmt::Debug for HealthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthConfig")
            .field("settings", &self.settings)
            .field("admin_tokens", &self.admin_tokens.len())
            .field("project_id", &self.project_id)
            .field("policy", &self.policy)
            .field("rotation_check_every", &self.rotation_check_every)
            .field("spool_dir", &self.spool_dir)
            .finish_non_exhaustive()
    }
}

fn error(field: &'static str, origin: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { field, origin: origin.to_owned(), message: message.into() }
}

impl HealthConfig {
    /// The settings file (`path`, else `IKIT_CONFIG`) and `env`; every bad field at once.
    pub fn load(path: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Self, ConfigErrors> {
        let settings = Settings::load_path(path, env);
        Self::from_settings(settings, env)
    }

    /// Adds this service's own settings to already loaded shared settings.
    pub fn from_settings(
        settings: Result<Settings, ConfigErrors>,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigErrors> {
        let (settings, mut errors) = match settings {
            Ok(s) => (Some(s), Vec::new()),
            Err(e) => (None, e.0),
        };
        let get = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let mut duration = |field: &'static str, name: &str, default: Duration| match get(name) {
            None => default,
            Some(v) => match parse_duration(v) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    errors.push(error(field, &format!("env {name}"), "must be greater than zero"));
                    default
                }
                Err(message) => {
                    errors.push(error(field, &format!("env {name}"), message));
                    default
                }
            },
        };
        let defaults = Policy::default();
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let policy = Policy {
            jwt_rotation_interval: secs(duration(
                "keys.jwt_rotation_interval",
                "IKIT_JWT_ROTATION_INTERVAL",
                Duration::from_secs(defaults.jwt_rotation_interval as u64),
            )),
            aes_rotation_interval: secs(duration(
                "keys.aes_rotation_interval",
                "IKIT_AES_ROTATION_INTERVAL",
                Duration::from_secs(defaults.aes_rotation_interval as u64),
            )),
            jwks_cache_max_age: secs(duration(
                "keys.jwks_max_age",
                "IKIT_JWKS_MAX_AGE",
                Duration::from_secs(defaults.jwks_cache_max_age as u64),
            )),
            jwt_overlap: secs(duration(
                "keys.jwt_overlap",
                "IKIT_JWT_OVERLAP",
                Duration::from_secs(defaults.jwt_overlap as u64),
            )),
            ..defaults
        };
        let rotation_check_every = duration(
            "keys.rotation_check_every",
            "IKIT_ROTATION_CHECK_EVERY",
            DEFAULT_ROTATION_CHECK_EVERY,
        );
        if let Err(e) = policy.validate() {
            errors.push(error(
                "keys",
                "env IKIT_JWT_* / IKIT_AES_* / IKIT_JWKS_MAX_AGE",
                e.to_string(),
            ));
        }
        let previous = get("IKIT_ADMIN_TOKEN_PREVIOUS").map(SecretValue::new);
        if previous.as_ref().is_some_and(|t| t.expose().len() < MIN_ADMIN_TOKEN_LEN) {
            errors.push(error(
                "admin.token_previous",
                "env IKIT_ADMIN_TOKEN_PREVIOUS",
                format!("must be at least {MIN_ADMIN_TOKEN_LEN} characters"),
            ));
        }
        let spool_dir = PathBuf::from(get("IKIT_AUDIT_SPOOL_DIR").unwrap_or(DEFAULT_SPOOL_DIR));
        let Some(mut settings) = settings else { return Err(ConfigErrors(errors)) };
        let shared_default = ikit_common::config::DEFAULT_HEALTH_ADDR.parse().ok();
        if get("IKIT_HEALTH_ADDR").is_none() && Some(settings.health_addr) == shared_default {
            settings.health_addr = DEFAULT_ADDR.parse().expect("valid default");
        }
        let project_id = match &settings.infisical.project_id {
            Some(p) => p.clone(),
            None => {
                errors.push(error(
                    "infisical.project_id",
                    "env INFISICAL_PROJECT_ID or file key infisical.project_id",
                    "is required: the keys live in this project",
                ));
                String::new()
            }
        };
        if matches!(settings.infisical.auth, ikit_common::config::AuthMethod::None) {
            errors.push(error(
                "infisical.auth_method",
                "env INFISICAL_TOKEN or INFISICAL_UNIVERSAL_AUTH_CLIENT_ID/_SECRET",
                "an Infisical login is required to read the keys",
            ));
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        if previous.is_some() && settings.admin_token.is_none() {
            return Err(ConfigErrors(vec![error(
                "admin.token_previous",
                "env IKIT_ADMIN_TOKEN_PREVIOUS",
                "needs IKIT_ADMIN_TOKEN as well",
            )]));
        }
        let admin_tokens = settings.admin_token.iter().cloned().chain(previous).collect();
        Ok(Self {
            settings,
            admin_tokens,
            project_id,
            policy,
            rotation_check_every,
            spool_dir,
            slow_probe: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(2),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let base = [
            ("INFISICAL_API_URL", "http://127.0.0.1:9"),
            ("INFISICAL_PROJECT_ID", "p1"),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", "id"),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", "secret"),
        ];
        base.iter().chain(pairs).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_follow_the_product_schedule() {
        let config = HealthConfig::load(None, &env(&[])).unwrap();
        assert_eq!(config.policy.jwt_rotation_interval, 60 * 86_400);
        assert_eq!(config.policy.aes_rotation_interval, 90 * 86_400);
        assert!(config.admin_tokens.is_empty());
        assert_eq!(config.project_id, "p1");
        assert_eq!(config.settings.health_addr.to_string(), "0.0.0.0:8000");
        let moved = HealthConfig::load(None, &env(&[("IKIT_HEALTH_ADDR", "127.0.0.1:9100")]));
        assert_eq!(moved.unwrap().settings.health_addr.to_string(), "127.0.0.1:9100");
    }

    #[test]
    fn two_admin_tokens_and_custom_intervals() {
        let config = HealthConfig::load(
            None,
            &env(&[
                ("IKIT_ADMIN_TOKEN", "first-admin-token-0001"),
                ("IKIT_ADMIN_TOKEN_PREVIOUS", "second-admin-token-0002"),
                ("IKIT_JWT_ROTATION_INTERVAL", "30d"),
                ("IKIT_AES_ROTATION_INTERVAL", "45d"),
            ]),
        )
        .unwrap();
        assert_eq!(config.admin_tokens.len(), 2);
        assert_eq!(config.admin_tokens[1].expose(), "second-admin-token-0002");
        assert_eq!(config.policy.jwt_rotation_interval, 30 * 86_400);
        assert_eq!(config.policy.aes_rotation_interval, 45 * 86_400);
    }

    #[test]
    fn every_bad_field_is_reported_without_echoing_tokens() {
        let bad = env(&[
            ("IKIT_JWT_ROTATION_INTERVAL", "soon"),
            ("IKIT_ADMIN_TOKEN_PREVIOUS", "short-secret"),
            ("IKIT_HEALTH_ADDR", "nowhere"),
            ("INFISICAL_PROJECT_ID", ""),
        ]);
        let errors = HealthConfig::load(None, &bad).unwrap_err();
        for field in ["keys.jwt_rotation_interval", "admin.token_previous", "listen.health"] {
            assert!(errors.field(field).is_some(), "{field} missing from {errors}");
        }
        assert!(!errors.to_string().contains("short-secret"), "{errors}");
        // without a project the keys have nowhere to live
        let errors = HealthConfig::load(None, &env(&[("INFISICAL_PROJECT_ID", " ")])).unwrap_err();
        assert!(errors.field("infisical.project_id").is_some(), "{errors}");
        // an overlap shorter than token ttl + jwks max-age + skew is refused
        let errors = HealthConfig::load(None, &env(&[("IKIT_JWKS_MAX_AGE", "30h")])).unwrap_err();
        assert!(errors.to_string().contains("jwt_overlap"), "{errors}");
    }
}
