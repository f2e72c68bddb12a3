//! The seed file: the projects, identities, secrets and webhooks the emulator starts with.
//! The format is documented in `docs/emulator.md`.

use serde::Deserialize;

use crate::error::EmulatorError;

/// The parsed seed. Deserialised leniently: every list may be left out.
#[derive(Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Seed {
    #[serde(default)]
    pub projects: Vec<SeedProject>,
    #[serde(default)]
    pub identities: Vec<SeedIdentity>,
    #[serde(default)]
    pub folders: Vec<SeedFolder>,
    #[serde(default)]
    pub secrets: Vec<SeedSecret>,
    #[serde(default)]
    pub imports: Vec<SeedImport>,
    #[serde(default)]
    pub webhooks: Vec<SeedWebhook>,
    #[serde(default)]
    pub service_tokens: Vec<SeedServiceToken>,
    #[serde(default)]
    pub approval_policies: Vec<SeedApprovalPolicy>,
    #[serde(default)]
    pub users: Vec<SeedUser>,
}

impl Seed {
    pub fn from_json(s: &str) -> Result<Seed, EmulatorError> {
        serde_json::from_str(s).map_err(|e| EmulatorError::Seed(e.to_string()))
    }
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedProject {
    pub id: String,
    pub slug: String,
    pub name: Option<String>,
    #[serde(default)]
    pub environments: Vec<SeedEnvironment>,
}

/// `"dev"` or `{"slug":"dev","name":"Development"}`.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum SeedEnvironment {
    Slug(String),
    Full { slug: String, name: String },
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedIdentity {
    pub id: Option<String>,
    pub name: String,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    #[serde(rename = "accessTokenTTL", default = "default_ttl")]
    pub access_token_ttl: u64,
    #[serde(rename = "accessTokenMaxTTL", default = "default_ttl")]
    pub access_token_max_ttl: u64,
    #[serde(default)]
    pub access_token_num_uses_limit: u64,
    #[serde(default)]
    pub access_token_period: u64,
    #[serde(default)]
    pub projects: Vec<String>,
    /// May list and describe secrets but not read their values (Infisical's `DescribeSecret`
    /// without `ReadValue`): every value comes back as `<hidden-by-infisical>` with
    /// `secretValueHidden: true`, whatever `viewSecretValue` asks.
    #[serde(default)]
    pub describe_only: bool,
    /// Login methods besides the ones implied by `clientId` (universal-auth) and `jwtAuth`
    /// (kubernetes-auth, oidc-auth, jwt-auth): `aws-auth`, `azure-auth`, `gcp-auth`, `token-auth`.
    #[serde(default)]
    pub auth_methods: Vec<String>,
    pub jwt_auth: Option<SeedJwtAuth>,
    pub lockout: Option<SeedLockout>,
    /// Lifetime of the universal-auth client secret in seconds (0: none).
    #[serde(rename = "clientSecretTTL", default)]
    pub client_secret_ttl: u64,
    /// Logins the client secret allows (0: no limit).
    #[serde(default)]
    pub client_secret_num_uses_limit: u64,
}

fn default_ttl() -> u64 {
    2_592_000
}

#[derive(Clone, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedJwtAuth {
    #[serde(default)]
    pub public_keys_pem: Vec<String>,
    pub hmac_secret: Option<String>,
    pub bound_audience: Option<String>,
    pub bound_subject: Option<String>,
}

#[derive(Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SeedLockout {
    pub enabled: bool,
    pub threshold: u32,
    pub duration_seconds: u64,
    pub counter_reset_seconds: u64,
}

impl Default for SeedLockout {
    fn default() -> Self {
        Self { enabled: true, threshold: 3, duration_seconds: 300, counter_reset_seconds: 30 }
    }
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedFolder {
    pub project_id: String,
    pub environment: String,
    pub path: String,
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedSecret {
    pub project_id: String,
    pub environment: String,
    #[serde(default = "root")]
    pub path: String,
    pub key: String,
    pub value: String,
    #[serde(default)]
    pub comment: String,
    pub skip_multiline_encoding: Option<bool>,
    /// Tag slugs; the project's tags are created as needed.
    #[serde(default)]
    pub tags: Vec<String>,
}

fn root() -> String {
    "/".to_owned()
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedImport {
    pub project_id: String,
    pub environment: String,
    #[serde(default = "root")]
    pub path: String,
    pub import_environment: String,
    pub import_path: String,
    /// Leave `folderId` out of this import's list entries, like older servers.
    #[serde(default)]
    pub omit_folder_id: bool,
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedWebhook {
    pub id: Option<String>,
    pub project_id: String,
    pub environment: String,
    #[serde(default = "root")]
    pub secret_path: String,
    pub url: String,
    pub secret_key: Option<String>,
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedServiceToken {
    pub id: String,
    pub secret: String,
    pub project_id: String,
    pub name: Option<String>,
    #[serde(default)]
    pub scopes: Vec<SeedScope>,
    /// Unix milliseconds.
    pub expires_at: Option<i64>,
}

#[derive(Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedScope {
    pub environment: String,
    pub secret_path: String,
}

/// A user with a fixed bearer token (real user tokens are JWTs from the browser login, which
/// the emulator does not have): enough to call the routes that need a user, such as webhook
/// management on the 2024 server.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedUser {
    pub id: Option<String>,
    pub email: String,
    pub token: String,
    #[serde(default)]
    pub projects: Vec<String>,
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedApprovalPolicy {
    pub project_id: String,
    pub environment: String,
    #[serde(default = "root")]
    pub secret_path: String,
}
