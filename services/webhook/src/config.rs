//! The service's settings: ikit-common's [`Settings`] plus the `webhook.*` keys, as a pure
//! function of an optional TOML text and an env map. Every bad field is reported at once.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use ikit_common::config::{ConfigError, ConfigErrors, parse_duration};
use ikit_common::webhook_signature::DEFAULT_WINDOW;
use ikit_common::{SecretValue, Settings};

/// The bodies Infisical sends are tiny; its own JSON limit is 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
pub const DEFAULT_WORKERS: usize = 4;
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
pub const DEFAULT_COALESCE: Duration = Duration::from_millis(100);
pub const DEFAULT_RETENTION: u64 = 10_000;
pub const DEFAULT_RATE_PER_SEC: u32 = 50;
pub const DEFAULT_RATE_BURST: u32 = 100;
/// How often an idle event stream sends a comment, so proxies keep it open.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// How long a stopping worker may keep working on the folder it holds before it gives it back.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// A state key shorter than this is refused: it keys the MACs that stand in for values.
pub const MIN_STATE_KEY_LEN: usize = 32;

/// Everything `ikit-webhook` is configured with.
#[derive(Clone)]
pub struct WebhookSettings {
    pub base: Settings,
    /// `IKIT_WEBHOOK_SECRET`: the project webhook's secret key.
    pub secret: SecretValue,
    /// `IKIT_WEBHOOK_SECRET_PREVIOUS`: still accepted while the secret is rotated.
    pub secret_previous: Option<SecretValue>,
    /// `IKIT_WEBHOOK_WINDOW`: how far a delivery's timestamp may be from now (default 5 min).
    pub window: Duration,
    /// `IKIT_EVENTS_TOKEN`: a read-only bearer token for the event stream.
    pub events_token: Option<SecretValue>,
    /// `IKIT_WEBHOOK_STATE_KEY`: keys the HMACs of values in the stored folder states.
    pub state_key: SecretValue,
    /// `IKIT_WEBHOOK_ENVIRONMENTS`: watched environments (empty = every environment).
    pub environments: Vec<String>,
    /// `IKIT_WEBHOOK_PATH`: the watched path prefix (default `/`, recursive).
    pub path_prefix: String,
    /// `IKIT_WEBHOOK_WORKERS`: workers per replica.
    pub workers: usize,
    /// `IKIT_WEBHOOK_LEASE`: how long a claimed queue row is held before another worker may redo it.
    pub lease: Duration,
    /// `IKIT_WEBHOOK_COALESCE`: how long a queued folder waits for more changes before its refetch.
    pub coalesce: Duration,
    /// `IKIT_WEBHOOK_RETENTION`: how many per-key events are kept for `Last-Event-ID` resume.
    pub retention: u64,
    /// `IKIT_WEBHOOK_RATE_LIMIT`: requests per second per source address (0 = off).
    pub rate_per_sec: u32,
    pub rate_burst: u32,
    pub body_limit: usize,
    /// `IKIT_WEBHOOK_BASELINE`: take the baseline at start (default true).
    pub baseline: bool,
    /// `IKIT_WEBHOOK_HEARTBEAT`: the event stream's heartbeat interval (default 15 s).
    pub heartbeat: Duration,
    /// `IKIT_WEBHOOK_SHUTDOWN_GRACE`: at shutdown, how long a worker may finish the folder it
    /// holds before it releases it for another replica (default 10 s).
    pub shutdown_grace: Duration,
}

impl fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("base", &self.base)
            .field("secret", &"[REDACTED]")
            .field("secret_previous", &self.secret_previous.as_ref().map(|_| "[REDACTED]"))
            .field("window", &self.window)
            .field("events_token", &self.events_token.as_ref().map(|_| "[REDACTED]"))
            .field("state_key", &"[REDACTED]")
            .field("environments", &self.environments)
            .field("path_prefix", &self.path_prefix)
            .field("workers", &self.workers)
            .field("lease", &self.lease)
            .field("coalesce", &self.coalesce)
            .field("retention", &self.retention)
            .field("rate_per_sec", &self.rate_per_sec)
            .field("heartbeat", &self.heartbeat)
            .field("shutdown_grace", &self.shutdown_grace)
            .finish_non_exhaustive()
    }
}

struct Reader<'a> {
    env: &'a BTreeMap<String, String>,
    file: &'a toml::Table,
    errors: Vec<ConfigError>,
}

impl Reader<'_> {
    /// The env variable, else the `webhook.<key>` file key, as text.
    fn raw(&mut self, field: &'static str, var: &'static str) -> Option<(String, String)> {
        if let Some(v) = self.env.get(var).filter(|v| !v.trim().is_empty()) {
            return Some((v.clone(), format!("env {var}")));
        }
        let key = field.trim_start_matches("webhook.");
        let origin = format!("file key {field}");
        match self.file.get(key)? {
            toml::Value::String(s) => Some((s.clone(), origin)),
            toml::Value::Integer(i) => Some((i.to_string(), origin)),
            toml::Value::Boolean(b) => Some((b.to_string(), origin)),
            other => {
                let message = format!("must be a string, not {}", other.type_str());
                self.errors.push(ConfigError { field, origin, message });
                None
            }
        }
    }

    fn parsed<T>(
        &mut self,
        field: &'static str,
        var: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let (value, origin) = self.raw(field, var)?;
        match parse(value.trim()) {
            Ok(v) => Some(v),
            Err(message) => {
                self.errors.push(ConfigError { field, origin, message });
                None
            }
        }
    }

    fn secret(&mut self, field: &'static str, var: &'static str) -> Option<(SecretValue, String)> {
        self.raw(field, var).map(|(v, o)| (SecretValue::new(v), o))
    }

    fn error(&mut self, field: &'static str, origin: String, message: impl Into<String>) {
        self.errors.push(ConfigError { field, origin, message: message.into() });
    }
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(v: &str) -> Result<T, String> {
    match v.parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        _ => Err(format!("{v:?} is not a positive whole number")),
    }
}

fn boolean(v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        other => Err(format!("{other:?} is not true or false")),
    }
}

impl WebhookSettings {
    /// Reads the file at `IKIT_CONFIG` (when set) and loads it with `env`.
    pub fn load_path(env: &BTreeMap<String, String>) -> Result<Self, ConfigErrors> {
        match env.get("IKIT_CONFIG").filter(|p| !p.is_empty()) {
            None => Self::load(None, env),
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => Self::load(Some(&text), env),
                Err(e) => Err(ConfigErrors(vec![ConfigError {
                    field: "file",
                    origin: format!("file {path}"),
                    message: format!("cannot read: {e}"),
                }])),
            },
        }
    }

    /// Loads settings from an optional TOML text and an env map; env wins over the file.
    pub fn load(file: Option<&str>, env: &BTreeMap<String, String>) -> Result<Self, ConfigErrors> {
        // The `[webhook]` table is ours; the shared settings get the rest of the file (or the
        // text as it is when it does not parse, so they report the syntax error).
        let parsed = file.map(|t| t.parse::<toml::Table>());
        let (base_text, table) = match parsed {
            Some(Ok(mut all)) => {
                let table = match all.remove("webhook") {
                    Some(toml::Value::Table(t)) => t,
                    _ => toml::Table::new(),
                };
                (Some(all.to_string()), table)
            }
            Some(Err(_)) => (file.map(str::to_owned), toml::Table::new()),
            None => (None, toml::Table::new()),
        };
        let base = Settings::load(base_text.as_deref(), env);
        let mut r = Reader { env, file: &table, errors: Vec::new() };

        let secret = r.secret("webhook.secret", "IKIT_WEBHOOK_SECRET");
        if secret.is_none() {
            r.error(
                "webhook.secret",
                "env IKIT_WEBHOOK_SECRET or file key webhook.secret".into(),
                "is required: the project webhook's secret key",
            );
        }
        let secret_previous =
            r.secret("webhook.secret_previous", "IKIT_WEBHOOK_SECRET_PREVIOUS").map(|(v, _)| v);
        let window = r
            .parsed("webhook.window", "IKIT_WEBHOOK_WINDOW", |v| {
                parse_duration(v).and_then(|d| {
                    if d.is_zero() { Err("must be greater than zero".into()) } else { Ok(d) }
                })
            })
            .unwrap_or(DEFAULT_WINDOW);
        let events_token = match r.secret("webhook.events_token", "IKIT_EVENTS_TOKEN") {
            Some((t, origin)) if t.expose().trim().len() < 16 => {
                r.error("webhook.events_token", origin, "must be at least 16 characters");
                None
            }
            other => other.map(|(t, _)| t),
        };
        let state_key = match r.secret("webhook.state_key", "IKIT_WEBHOOK_STATE_KEY") {
            Some((k, origin)) if k.expose().len() < MIN_STATE_KEY_LEN => {
                r.error(
                    "webhook.state_key",
                    origin,
                    format!("must be at least {MIN_STATE_KEY_LEN} characters"),
                );
                None
            }
            Some((k, _)) => Some(k),
            None => {
                r.error(
                    "webhook.state_key",
                    "env IKIT_WEBHOOK_STATE_KEY or file key webhook.state_key".into(),
                    "is required: it keys the value MACs of the stored folder states",
                );
                None
            }
        };
        let environments = r
            .parsed("webhook.environments", "IKIT_WEBHOOK_ENVIRONMENTS", |v| {
                let list: Vec<String> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                for slug in &list {
                    ikit_common::secret::validate_environment(slug).map_err(|e| e.to_string())?;
                }
                Ok(list)
            })
            .unwrap_or_default();
        let path_prefix = r
            .parsed("webhook.path", "IKIT_WEBHOOK_PATH", |v| {
                ikit_common::secret::normalize_folder(v).map_err(|e| e.to_string())
            })
            .unwrap_or_else(|| "/".to_owned());
        let workers = r
            .parsed("webhook.workers", "IKIT_WEBHOOK_WORKERS", positive)
            .unwrap_or(DEFAULT_WORKERS);
        let lease = r
            .parsed("webhook.lease", "IKIT_WEBHOOK_LEASE", |v| {
                parse_duration(v).and_then(|d| {
                    if d < Duration::from_secs(1) {
                        Err("must be at least 1s".into())
                    } else {
                        Ok(d)
                    }
                })
            })
            .unwrap_or(DEFAULT_LEASE);
        let coalesce = r
            .parsed("webhook.coalesce", "IKIT_WEBHOOK_COALESCE", parse_duration)
            .unwrap_or(DEFAULT_COALESCE);
        let retention = r
            .parsed("webhook.retention", "IKIT_WEBHOOK_RETENTION", positive)
            .unwrap_or(DEFAULT_RETENTION);
        let rate_per_sec = r
            .parsed("webhook.rate_limit", "IKIT_WEBHOOK_RATE_LIMIT", |v| {
                v.parse::<u32>().map_err(|_| format!("{v:?} is not a whole number"))
            })
            .unwrap_or(DEFAULT_RATE_PER_SEC);
        let rate_burst = r
            .parsed("webhook.rate_burst", "IKIT_WEBHOOK_RATE_BURST", positive)
            .unwrap_or(DEFAULT_RATE_BURST.max(rate_per_sec));
        let baseline =
            r.parsed("webhook.baseline", "IKIT_WEBHOOK_BASELINE", boolean).unwrap_or(true);
        let heartbeat = r
            .parsed("webhook.heartbeat", "IKIT_WEBHOOK_HEARTBEAT", |v| {
                parse_duration(v).and_then(|d| {
                    if d.is_zero() { Err("must be greater than zero".into()) } else { Ok(d) }
                })
            })
            .unwrap_or(DEFAULT_HEARTBEAT);
        let shutdown_grace = r
            .parsed("webhook.shutdown_grace", "IKIT_WEBHOOK_SHUTDOWN_GRACE", parse_duration)
            .unwrap_or(DEFAULT_SHUTDOWN_GRACE);
        for key in table.keys() {
            const KNOWN: &[&str] = &[
                "secret",
                "secret_previous",
                "window",
                "events_token",
                "state_key",
                "environments",
                "path",
                "workers",
                "lease",
                "coalesce",
                "retention",
                "rate_limit",
                "rate_burst",
                "baseline",
                "heartbeat",
                "shutdown_grace",
            ];
            if !KNOWN.contains(&key.as_str()) {
                r.error("file", format!("file key webhook.{key}"), "unknown setting");
            }
        }

        let mut errors = match &base {
            Ok(_) => Vec::new(),
            Err(e) => e.0.clone(),
        };
        let project_in_file = file
            .and_then(|t| t.parse::<toml::Table>().ok())
            .and_then(|t| t.get("infisical").and_then(|i| i.get("project_id")).cloned())
            .is_some();
        let project_in_env = env.get("INFISICAL_PROJECT_ID").is_some_and(|v| !v.trim().is_empty());
        if !project_in_file && !project_in_env {
            errors.push(ConfigError {
                field: "infisical.project_id",
                origin: "env INFISICAL_PROJECT_ID or file key infisical.project_id".into(),
                message: "is required: the project whose webhooks are received".into(),
            });
        }
        errors.extend(r.errors);
        match (base, secret, state_key) {
            (Ok(base), Some((secret, _)), Some(state_key)) if errors.is_empty() => Ok(Self {
                base,
                secret,
                secret_previous,
                window,
                events_token,
                state_key,
                environments,
                path_prefix,
                workers,
                lease,
                coalesce,
                retention,
                rate_per_sec,
                rate_burst,
                body_limit: DEFAULT_BODY_LIMIT,
                baseline,
                heartbeat,
                shutdown_grace,
            }),
            _ => Err(ConfigErrors(errors)),
        }
    }

    /// The coalescing window in milliseconds, for the queue's `available_ms` arithmetic.
    pub fn coalesce_ms(&self) -> i64 {
        i64::try_from(self.coalesce.as_millis()).unwrap_or(i64::MAX)
    }

    /// The project whose webhooks are received (checked present by [`Self::load`]).
    pub fn project_id(&self) -> &str {
        self.base.infisical.project_id.as_deref().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    const GOOD: &[(&str, &str)] = &[
        ("INFISICAL_PROJECT_ID", "p1"),
        ("IKIT_WEBHOOK_SECRET", "whsec-abc"),
        ("IKIT_WEBHOOK_STATE_KEY", "0123456789abcdef0123456789abcdef"),
    ];

    #[test]
    fn loads_defaults_and_reads_the_webhook_table() {
        let s = WebhookSettings::load(None, &env(GOOD)).unwrap();
        assert_eq!((s.window, s.workers, s.path_prefix.as_str()), (DEFAULT_WINDOW, 4, "/"));
        assert_eq!((s.heartbeat, s.shutdown_grace), (DEFAULT_HEARTBEAT, DEFAULT_SHUTDOWN_GRACE));
        let file = "[webhook]\nwindow = \"90s\"\nenvironments = \"dev, prod\"\nworkers = 2\n\
                    heartbeat = \"250ms\"\nshutdown_grace = \"0s\"\n";
        let s = WebhookSettings::load(Some(file), &env(GOOD)).unwrap();
        assert_eq!(s.window, Duration::from_secs(90));
        assert_eq!(s.environments, ["dev", "prod"]);
        assert_eq!(s.workers, 2);
        assert_eq!((s.heartbeat, s.shutdown_grace), (Duration::from_millis(250), Duration::ZERO));
        let debug = format!("{s:?}");
        assert!(!debug.contains("whsec-abc") && !debug.contains("0123456789abcdef"), "{debug}");
    }

    #[test]
    fn every_bad_field_is_named_without_echoing_secrets() {
        let bad = env(&[
            ("IKIT_WEBHOOK_STATE_KEY", "short-secret-key"),
            ("IKIT_WEBHOOK_WINDOW", "soon"),
            ("IKIT_WEBHOOK_WORKERS", "0"),
            ("IKIT_WEBHOOK_HEARTBEAT", "0s"),
            ("IKIT_DATABASE_URL", "mysql://x"),
        ]);
        let e = WebhookSettings::load(Some("[webhook]\ntypo = 1\n"), &bad).unwrap_err();
        for field in [
            "webhook.secret",
            "webhook.state_key",
            "webhook.window",
            "webhook.workers",
            "webhook.heartbeat",
            "database.url",
            "infisical.project_id",
            "file",
        ] {
            assert!(e.field(field).is_some(), "{field} missing from {e}");
        }
        assert!(!e.to_string().contains("short-secret-key"));
    }
}
