//! `docs/configuration.md` is generated here from the settings code: the variables are the ones
//! the config modules read (scanned from their sources), the defaults come from their constants,
//! and a test regenerates the page and compares, so neither a new variable nor a changed default
//! can leave the page behind. `UPDATE_DOCS=1 cargo test -p ikit-e2e --test e2e docs::` rewrites it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ikit_common::config as common;
use ikit_health::config as health;
use ikit_webhook::config as webhook;

/// One variable: its name, the services that read it, its default and its meaning.
struct Var {
    name: &'static str,
    who: &'static str,
    default: String,
    meaning: &'static str,
}

fn var(
    name: &'static str,
    who: &'static str,
    default: impl Into<String>,
    meaning: &'static str,
) -> Var {
    Var { name, who, default: default.into(), meaning }
}

fn secs(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        s if s % 86_400 == 0 && s >= 2 * 86_400 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn code(v: impl std::fmt::Display) -> String {
    format!("`{v}`")
}

/// (section title, variables), in the page's order.
fn sections() -> Vec<(&'static str, Vec<Var>)> {
    let policy = ikit_keys_policy_defaults();
    const BOTH: &str = "both";
    vec![
        (
            "Infisical",
            vec![
                var(
                    "INFISICAL_API_URL",
                    BOTH,
                    code(common::DEFAULT_API_URL),
                    "base URL of Infisical; `/api` is added when missing",
                ),
                var(
                    "INFISICAL_DOMAIN",
                    BOTH,
                    "",
                    "the Infisical CLI's name for the same URL (`INFISICAL_API_URL` wins)",
                ),
                var(
                    "INFISICAL_PROJECT_ID",
                    BOTH,
                    "required",
                    "the project the services read, and where the keys live",
                ),
                var(
                    "IKIT_INFISICAL_ENVIRONMENT",
                    BOTH,
                    code(common::DEFAULT_ENVIRONMENT),
                    "environment slug the services read",
                ),
                var(
                    "INFISICAL_CUSTOM_HEADERS",
                    BOTH,
                    "",
                    "extra request headers, `Name=value` pairs separated by spaces (secret)",
                ),
                var(
                    "INFISICAL_DISABLE_UPDATE_CHECK",
                    BOTH,
                    "",
                    "accepted for the CLI's recipes; nothing here checks for updates",
                ),
                var(
                    "IKIT_CA_FILE",
                    BOTH,
                    "",
                    "PEM bundle trusted besides the built-in and native roots",
                ),
                var(
                    "SSL_CERT_FILE",
                    BOTH,
                    "",
                    "the conventional name for `IKIT_CA_FILE` (which wins)",
                ),
                var(
                    "IKIT_RATE_LIMIT_PER_SECOND",
                    BOTH,
                    "the server's headers",
                    "client-side request rate floor",
                ),
                var(
                    "IKIT_RATE_LIMIT_BURST",
                    BOTH,
                    "a tenth of it refilled per second",
                    "client-side burst",
                ),
            ],
        ),
        (
            "Machine identity login",
            vec![
                var(
                    "IKIT_INFISICAL_AUTH_METHOD",
                    BOTH,
                    "from the variables set",
                    "`universal-auth`, `kubernetes`, `aws-iam`, `azure-auth`, `gcp-auth`, `jwt-auth`, `oidc-auth`, `token`",
                ),
                var("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", BOTH, "", "universal auth client id"),
                var(
                    "INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET",
                    BOTH,
                    "",
                    "universal auth client secret (secret)",
                ),
                var(
                    "INFISICAL_MACHINE_IDENTITY_ID",
                    BOTH,
                    "",
                    "identity id, required by kubernetes, jwt, oidc and cloud methods",
                ),
                var(
                    "INFISICAL_KUBERNETES_SERVICE_ACCOUNT_TOKEN_PATH",
                    BOTH,
                    code(common::DEFAULT_K8S_TOKEN_PATH),
                    "the pod's service account token (kubernetes auth)",
                ),
                var("INFISICAL_JWT", BOTH, "", "a JWT to log in with (jwt and oidc auth; secret)"),
                var(
                    "INFISICAL_JWT_FILE",
                    BOTH,
                    "",
                    "a file holding that JWT, re-read at each login",
                ),
                var("INFISICAL_TOKEN", BOTH, "", "a service or access token used as is (secret)"),
                var(
                    "INFISICAL_UNIVERSAL_AUTH_ACCESS_TOKEN",
                    BOTH,
                    "",
                    "an access token used as is (wins over `INFISICAL_TOKEN`; secret)",
                ),
                var(
                    "INFISICAL_AUTH_ORGANIZATION_SLUG",
                    BOTH,
                    "",
                    "organisation to scope the login to",
                ),
                var(
                    "IKIT_AWS_STS_HOST",
                    BOTH,
                    "the global STS host",
                    "STS endpoint of aws-iam auth",
                ),
                var(
                    "IKIT_AZURE_IMDS_URL",
                    BOTH,
                    "Azure's IMDS address",
                    "token endpoint of azure auth",
                ),
                var(
                    "IKIT_GCP_METADATA_URL",
                    BOTH,
                    "GCP's metadata address",
                    "token endpoint of gcp auth",
                ),
            ],
        ),
        (
            "Storage, cache, telemetry",
            vec![
                var("IKIT_CONFIG", BOTH, "", "a TOML settings file; the environment wins over it"),
                var(
                    "IKIT_DATABASE_URL",
                    BOTH,
                    code(common::DEFAULT_DATABASE_URL),
                    "PostgreSQL (or SQLite) for the audit log and the webhook queue (secret)",
                ),
                var(
                    "IKIT_REDIS_URL",
                    BOTH,
                    "",
                    "Redis for the shared cache, invalidations and events; unset: in-process only (secret)",
                ),
                var(
                    "IKIT_CACHE_TTL",
                    BOTH,
                    secs(common::DEFAULT_CACHE_TTL),
                    "how long a listing is fresh",
                ),
                var(
                    "IKIT_CACHE_MAX_STALE",
                    BOTH,
                    secs(common::DEFAULT_CACHE_MAX_STALE),
                    "how old a listing may be served while Infisical fails",
                ),
                var(
                    "IKIT_CACHE_KEY",
                    BOTH,
                    "",
                    "64 hex characters sealing the Redis L2 cache; unset: no L2 (secret)",
                ),
                var(
                    "IKIT_SNAPSHOT_DIR",
                    BOTH,
                    "",
                    "directory of the encrypted offline snapshot; unset: none",
                ),
                var("IKIT_SNAPSHOT_KEY", BOTH, "", "the snapshot's key (secret)"),
                var("IKIT_LOG_FORMAT", BOTH, "`json`", "`json` or `pretty`"),
                var("RUST_LOG", BOTH, "`info`", "tracing filter"),
                var(
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    BOTH,
                    "",
                    "OTLP/HTTP endpoint for traces; unset: no export",
                ),
            ],
        ),
        (
            "ikit-webhook",
            vec![
                var(
                    "IKIT_WEBHOOK_ADDR",
                    "webhook",
                    code(common::DEFAULT_WEBHOOK_ADDR),
                    "listen address",
                ),
                var(
                    "IKIT_WEBHOOK_SECRET",
                    "webhook",
                    "required",
                    "the project webhook's secret key (secret)",
                ),
                var(
                    "IKIT_WEBHOOK_SECRET_PREVIOUS",
                    "webhook",
                    "",
                    "also accepted while the secret is rotated (secret)",
                ),
                var(
                    "IKIT_WEBHOOK_STATE_KEY",
                    "webhook",
                    format!("required, at least {} characters", webhook::MIN_STATE_KEY_LEN),
                    "keys the HMACs standing in for values in stored folder states (secret)",
                ),
                var(
                    "IKIT_WEBHOOK_WINDOW",
                    "webhook",
                    secs(ikit_common::webhook_signature::DEFAULT_WINDOW),
                    "how far a delivery's timestamp may be from now",
                ),
                var(
                    "IKIT_EVENTS_TOKEN",
                    "webhook",
                    "",
                    "read-only bearer token of the event stream (secret)",
                ),
                var(
                    "IKIT_WEBHOOK_ENVIRONMENTS",
                    "webhook",
                    "every environment",
                    "watched environments, comma separated",
                ),
                var("IKIT_WEBHOOK_PATH", "webhook", "`/`", "watched path prefix (recursive)"),
                var(
                    "IKIT_WEBHOOK_WORKERS",
                    "webhook",
                    webhook::DEFAULT_WORKERS.to_string(),
                    "queue workers per replica",
                ),
                var(
                    "IKIT_WEBHOOK_LEASE",
                    "webhook",
                    secs(webhook::DEFAULT_LEASE),
                    "how long a claimed change is held before another replica may redo it",
                ),
                var(
                    "IKIT_WEBHOOK_HEARTBEAT",
                    "webhook",
                    secs(webhook::DEFAULT_HEARTBEAT),
                    "interval of the event stream's heartbeat comments",
                ),
                var(
                    "IKIT_WEBHOOK_SHUTDOWN_GRACE",
                    "webhook",
                    secs(webhook::DEFAULT_SHUTDOWN_GRACE),
                    "at shutdown, how long a worker may finish the folder in hand before its lease is released",
                ),
                var(
                    "IKIT_WEBHOOK_COALESCE",
                    "webhook",
                    secs(webhook::DEFAULT_COALESCE),
                    "how long a queued folder waits for more changes",
                ),
                var(
                    "IKIT_WEBHOOK_RETENTION",
                    "webhook",
                    webhook::DEFAULT_RETENTION.to_string(),
                    "events kept for `Last-Event-ID` resume",
                ),
                var(
                    "IKIT_WEBHOOK_RATE_LIMIT",
                    "webhook",
                    format!("{}/s", webhook::DEFAULT_RATE_PER_SEC),
                    "requests per second per source address (0: off)",
                ),
                var(
                    "IKIT_WEBHOOK_RATE_BURST",
                    "webhook",
                    webhook::DEFAULT_RATE_BURST.to_string(),
                    "burst of that limit",
                ),
                var(
                    "IKIT_WEBHOOK_BASELINE",
                    "webhook",
                    "`true`",
                    "record the watched folders at start",
                ),
            ],
        ),
        (
            "ikit-health",
            vec![
                var("IKIT_HEALTH_ADDR", "health", code(health::DEFAULT_ADDR), "listen address"),
                var(
                    "IKIT_ADMIN_TOKEN",
                    "health",
                    "admin endpoints off",
                    "bearer token of the admin actions, at least 16 characters (secret)",
                ),
                var(
                    "IKIT_ADMIN_TOKEN_PREVIOUS",
                    "health",
                    "",
                    "also accepted while the token is rotated (secret)",
                ),
                var(
                    "IKIT_JWT_ROTATION_INTERVAL",
                    "health",
                    secs(policy.0),
                    "scheduled JWT key rotation",
                ),
                var(
                    "IKIT_AES_ROTATION_INTERVAL",
                    "health",
                    secs(policy.1),
                    "scheduled AES key rotation",
                ),
                var(
                    "IKIT_JWKS_MAX_AGE",
                    "health",
                    secs(policy.2),
                    "`Cache-Control: max-age` of the JWKS (counted into the overlap)",
                ),
                var(
                    "IKIT_JWT_OVERLAP",
                    "health",
                    secs(policy.3),
                    "how long a next key is published before it signs; at least token TTL + JWKS max-age + skew",
                ),
                var(
                    "IKIT_ROTATION_CHECK_EVERY",
                    "health",
                    secs(health::DEFAULT_ROTATION_CHECK_EVERY),
                    "how often the scheduler looks for a due rotation",
                ),
                var(
                    "IKIT_AUDIT_SPOOL_DIR",
                    "health",
                    code(health::DEFAULT_SPOOL_DIR),
                    "where audit entries wait while the database is down",
                ),
            ],
        ),
    ]
}

/// The key policy's defaults as health loads them with nothing set (interval JWT, AES, JWKS
/// max-age, overlap).
fn ikit_keys_policy_defaults()
-> (std::time::Duration, std::time::Duration, std::time::Duration, std::time::Duration) {
    let env = [
        ("INFISICAL_PROJECT_ID", "p"),
        ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", "id"),
        ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", "secret"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = health::HealthConfig::load(None, &env).expect("defaults load");
    let d = |s: i64| std::time::Duration::from_secs(s as u64);
    let p = config.policy;
    (
        d(p.jwt_rotation_interval),
        d(p.aes_rotation_interval),
        d(p.jwks_cache_max_age),
        d(p.jwt_overlap),
    )
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Every variable name the settings code reads: string literals of the config modules (unit
/// tests excluded) and the binaries' own probes.
fn read_by_code() -> BTreeSet<String> {
    let files = [
        "crates/common/src/config.rs",
        "services/webhook/src/config.rs",
        "services/webhook/src/main.rs",
        "services/health/src/config.rs",
        "services/health/src/main.rs",
    ];
    let mut names = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(root().join(file)).expect("config source");
        let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
        for piece in text.split('"').skip(1).step_by(2) {
            let known_prefix =
                ["INFISICAL_", "IKIT_", "OTEL_"].iter().any(|p| piece.starts_with(p));
            let shaped =
                piece.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if shaped && (known_prefix || piece == "RUST_LOG" || piece == "SSL_CERT_FILE") {
                names.insert(piece.to_owned());
            }
        }
    }
    names
}

fn render() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- generated by tests/e2e/docs.rs from the settings code: do not edit; run\n\
         UPDATE_DOCS=1 cargo test -p ikit-e2e --test e2e docs:: after changing a setting -->\n\n\
         Both services read the same shared settings (`ikit_common::Settings`) plus their own, from\n\
         the environment and optionally a TOML file (`IKIT_CONFIG`); the environment wins. A bad\n\
         setting stops the start with exit code 64 and a message naming every bad field, never\n\
         its value. Variables marked (secret) belong in a Secret or `.env`, never in a ConfigMap.\n\
         Durations are written `30s`, `5m`, `24h`, `60d`. For compose, `.env.example` sets them;\n\
         for Kubernetes, the ConfigMap and the `ikit-secrets` Secret (docs/operations.md).\n",
    );
    for (title, vars) in sections() {
        out.push_str(&format!(
            "\n## {title}\n\n| variable | read by | default | meaning |\n|---|---|---|---|\n"
        ));
        for v in vars {
            let default = if v.default.is_empty() { "unset".to_owned() } else { v.default };
            out.push_str(&format!("| `{}` | {} | {} | {} |\n", v.name, v.who, default, v.meaning));
        }
    }
    out
}

#[test]
fn every_variable_the_code_reads_is_documented_and_nothing_else() {
    let documented: BTreeSet<String> =
        sections().into_iter().flat_map(|(_, vars)| vars).map(|v| v.name.to_owned()).collect();
    let read = read_by_code();
    let undocumented: Vec<_> = read.difference(&documented).collect();
    let gone: Vec<_> = documented.difference(&read).collect();
    assert!(
        undocumented.is_empty(),
        "read by the code, missing from tests/e2e/docs.rs: {undocumented:?}"
    );
    assert!(gone.is_empty(), "documented, no longer read by the code: {gone:?}");
    assert!(read.len() > 50, "the source scan found only {read:?}");
}

#[test]
fn configuration_reference_is_regenerated_from_the_settings_code() {
    let path = root().join("docs/configuration.md");
    let fresh = render();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &fresh).expect("write docs/configuration.md");
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == fresh,
        "docs/configuration.md is out of date: run UPDATE_DOCS=1 cargo test -p ikit-e2e --test e2e docs::"
    );
    // the defaults are the code's, not copies
    assert!(fresh.contains(&format!("`{}`", health::DEFAULT_ADDR)));
    assert!(fresh.contains("| `IKIT_JWT_OVERLAP` | health | 24h |"), "{fresh}");
}

#[test]
fn env_example_sets_only_documented_variables() {
    let documented: BTreeSet<String> =
        sections().into_iter().flat_map(|(_, vars)| vars).map(|v| v.name.to_owned()).collect();
    let example = std::fs::read_to_string(root().join(".env.example")).expect(".env.example");
    for line in example.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, _)) = line.split_once('=') else { continue };
        let compose_only = name.starts_with("POSTGRES_")
            || name.starts_with("COMPOSE_")
            || name.starts_with("GRAFANA_")
            || name.starts_with("IKIT_IMAGE_")
            || name.ends_with("_PORT")
            || name.ends_with("_PORTS")
            || name == "IKIT_EMULATOR_ADMIN_TOKEN";
        assert!(
            compose_only || documented.contains(name),
            ".env.example sets {name}, which no service reads"
        );
    }
}
