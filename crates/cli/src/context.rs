//! What every command runs with: where Infisical is, how to authenticate, which project,
//! environment and folder, where ikit keeps its state. [`Context::resolve`] is a pure function of
//! the global flags, the environment map, the current and home directories and what
//! [`Discovered::discover`] found on disk (.infisical.json, the git branch), so every precedence
//! rule is unit-tested without touching the process or the filesystem.
//!
//! Precedence follows the official `infisical` CLI: flags, then variables, then .infisical.json,
//! then defaults. Flags are folded into a copy of the environment map as the variables they stand
//! for, so `ikit_common::Settings::load` stays the one reader of the Infisical variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ikit_client::{CachedClient, Client, ClientConfig, DeferredWrites, FolderQuery, RetryPolicy};
use ikit_common::Settings;
use ikit_common::clock::{Clock, SystemClock};
use ikit_common::config::AuthMethod;

use crate::CliError;
use crate::cli::GlobalArgs;
use zeroize::Zeroizing;

/// The project configuration file of the official CLI.
pub const PROJECT_FILE: &str = ".infisical.json";
/// The environment when nothing else names one.
pub const DEFAULT_ENVIRONMENT: &str = "dev";
/// The per-user state directory under `$HOME`.
pub const STATE_DIR: &str = ".ikit";

/// `.infisical.json` as the official CLI writes and reads it. Unknown keys are ignored (the
/// official CLI ignores them too).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_environment: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub git_branch_to_environment_mapping: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_secret_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

impl ProjectConfig {
    /// Parses the file's text; the error names the file and the JSON problem (the file holds
    /// no secret, but the message quotes no text of it anyway).
    pub fn parse(path: &Path, text: &str) -> Result<Self, CliError> {
        // The official CLI writes `null` for an absent mapping.
        let mut value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| CliError::Usage(format!("{}: not valid JSON: {e}", path.display())))?;
        if let Some(obj) = value.as_object_mut() {
            obj.retain(|_, v| !v.is_null());
        }
        serde_json::from_value(value)
            .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
    }
}

/// What was found on disk before resolving: the nearest .infisical.json and the git branch.
#[derive(Debug, Clone, Default)]
pub struct Discovered {
    pub project_file: Option<(PathBuf, ProjectConfig)>,
    /// The checked-out branch (`None` outside a repository or on a detached HEAD).
    pub git_branch: Option<String>,
}

impl Discovered {
    /// Looks for .infisical.json in `config_dir`, or walking up from `cwd`; reads the git branch
    /// only when the file maps branches to environments and `--env` was not given.
    pub fn discover(
        config_dir: Option<&Path>,
        cwd: &Path,
        env_given: bool,
    ) -> Result<Self, CliError> {
        let file = match config_dir {
            Some(dir) => {
                let path = dir.join(PROJECT_FILE);
                if !path.is_file() {
                    return Err(CliError::Usage(format!(
                        "--project-config-dir: {} does not exist",
                        path.display()
                    )));
                }
                Some(path)
            }
            None => cwd.ancestors().map(|d| d.join(PROJECT_FILE)).find(|p| p.is_file()),
        };
        let project_file = match file {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| CliError::io(&path, e))?;
                let config = ProjectConfig::parse(&path, &text)?;
                Some((path, config))
            }
            None => None,
        };
        let wants_branch = !env_given
            && project_file
                .as_ref()
                .is_some_and(|(_, c)| !c.git_branch_to_environment_mapping.is_empty());
        let git_branch = if wants_branch { git_branch(cwd) } else { None };
        Ok(Self { project_file, git_branch })
    }
}

/// The branch `HEAD` names, read from the repository's files (no `git` process: start-up
/// speed). Handles worktrees and submodules, whose `.git` is a file `gitdir: <path>`.
pub fn git_branch(cwd: &Path) -> Option<String> {
    let dot_git = cwd.ancestors().map(|d| d.join(".git")).find(|p| p.exists())?;
    let git_dir = if dot_git.is_file() {
        let text = std::fs::read_to_string(&dot_git).ok()?;
        let target = PathBuf::from(text.trim().strip_prefix("gitdir:")?.trim());
        if target.is_absolute() { target } else { dot_git.parent()?.join(target) }
    } else {
        dot_git
    };
    let head = std::fs::read_to_string(git_dir.join("HEAD")).ok()?;
    branch_of_head(&head)
}

/// `ref: refs/heads/<branch>` -> `<branch>`; a detached HEAD (a commit id) has none.
pub fn branch_of_head(head: &str) -> Option<String> {
    head.trim().strip_prefix("ref:")?.trim().strip_prefix("refs/heads/").map(str::to_owned)
}

/// Where the environment slug came from (said in notices and `--help` output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvironmentSource {
    Flag,
    GitBranch(String),
    ProjectFile,
    Default,
}

/// Everything a command needs to reach Infisical and find its secrets.
#[derive(Clone)]
pub struct Context {
    /// The shared settings (API URL, auth, custom headers, cache, snapshot), flags folded in.
    pub settings: Settings,
    pub project_id: Option<String>,
    pub environment: String,
    pub environment_source: EnvironmentSource,
    /// `defaultSecretPath` of .infisical.json, else `/`.
    pub secret_path: String,
    /// The .infisical.json that was read, if any.
    pub project_file: Option<PathBuf>,
    pub cwd: PathBuf,
    /// `~/.ikit`, or `None` when `HOME` is unknown (then nothing is cached).
    pub state_dir: Option<PathBuf>,
    /// The process environment as read once by `main` (a child of `ikit run` starts from it).
    pub env: BTreeMap<String, String>,
    /// `--silent`: no notices or warnings.
    pub silent: bool,
    /// False when `NO_COLOR` is set (any value), as <https://no-color.org> asks.
    pub color: bool,
    /// Notices found while resolving, printed by [`Context::print_notices`] unless silent.
    pub notices: Vec<String>,
    /// The time source for token expiry and snapshot ages (tests swap it).
    pub clock: Arc<dyn Clock>,
    /// The token, key and snapshot files, written while the command goes on (an `ikit run`
    /// child starts without waiting for fsyncs); [`Context::finish_writes`] joins them.
    pub writes: DeferredWrites,
    /// `~/.ikit/key` once read or made: a new key is still being written, so it is never read
    /// back from disk in the same process.
    pub(crate) master_key: Arc<OnceLock<Zeroizing<Vec<u8>>>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("api_url", &ikit_common::config::redact_url(&self.settings.infisical.api_url))
            .field("auth", &self.settings.infisical.auth.name())
            .field("project_id", &self.project_id)
            .field("environment", &self.environment)
            .field("secret_path", &self.secret_path)
            .field("project_file", &self.project_file)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Reads .infisical.json (and the git branch when needed), then [`Context::resolve`]s.
    pub fn load(
        global: &GlobalArgs,
        env: &BTreeMap<String, String>,
        cwd: &Path,
        home: Option<&Path>,
    ) -> Result<Self, CliError> {
        let found =
            Discovered::discover(global.project_config_dir.as_deref(), cwd, global.env.is_some())?;
        Self::resolve(global, env, cwd, home, found)
    }

    /// The pure resolution: flags over variables over .infisical.json over defaults.
    pub fn resolve(
        global: &GlobalArgs,
        env: &BTreeMap<String, String>,
        cwd: &Path,
        home: Option<&Path>,
        found: Discovered,
    ) -> Result<Self, CliError> {
        let mut notices = Vec::new();
        let (project_file, config) = match found.project_file {
            Some((path, config)) => (Some(path), config),
            None => (None, ProjectConfig::default()),
        };
        let set = |v: &str| env.get(v).is_some_and(|s| !s.trim().is_empty());

        // Flags become the variables they stand for; the file's domain only fills a gap.
        let mut vars = env.clone();
        if let Some(domain) = &global.domain {
            vars.insert("INFISICAL_DOMAIN".into(), domain.clone());
        } else if let Some(domain) =
            config.domain.as_ref().filter(|_| !set("INFISICAL_DOMAIN") && !set("INFISICAL_API_URL"))
        {
            if !(domain.starts_with("https://") || domain.starts_with("http://")) {
                return Err(CliError::Usage(format!(
                    "{}: domain must start with http:// or https://",
                    project_file.as_deref().unwrap_or(Path::new(PROJECT_FILE)).display()
                )));
            }
            notices.push(format!("using the domain of {PROJECT_FILE}: {domain}"));
            vars.insert("INFISICAL_DOMAIN".into(), domain.clone());
        }
        if let Some(token) = &global.token {
            vars.remove("INFISICAL_UNIVERSAL_AUTH_ACCESS_TOKEN");
            vars.insert("INFISICAL_TOKEN".into(), token.0.expose().to_owned());
        }
        let settings = Settings::load(None, &vars)?;

        let project_id = global
            .project_id
            .clone()
            .or_else(|| env.get("INFISICAL_PROJECT_ID").cloned())
            .or(config.workspace_id.clone())
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty());

        let (environment, environment_source) =
            pick_environment(global.env.as_deref(), &config, found.git_branch.as_deref());
        ikit_common::secret::validate_environment(&environment)
            .map_err(|e| CliError::Usage(format!("environment {environment:?}: {e}")))?;

        let secret_path = config.default_secret_path.clone().unwrap_or_else(|| "/".to_owned());
        let secret_path = ikit_common::secret::normalize_folder(&secret_path)
            .map_err(|e| CliError::Usage(format!("defaultSecretPath: {e}")))?;

        Ok(Self {
            settings,
            project_id,
            environment,
            environment_source,
            secret_path,
            project_file,
            cwd: cwd.to_path_buf(),
            state_dir: home.map(|h| h.join(STATE_DIR)),
            env: env.clone(),
            silent: global.silent,
            color: !env.contains_key("NO_COLOR"),
            notices,
            clock: Arc::new(SystemClock),
            writes: DeferredWrites::new(),
            master_key: Arc::default(),
        })
    }

    /// Writes the resolution notices to stderr unless `--silent`.
    pub fn print_notices(&self) {
        for notice in &self.notices {
            self.warn(notice);
        }
    }

    /// One warning line on stderr, unless `--silent`.
    pub fn warn(&self, message: &str) {
        if !self.silent {
            eprintln!("ikit: warning: {message}");
        }
    }

    /// The project id, or the error the official CLI gives when it is missing.
    pub fn require_project(&self) -> Result<&str, CliError> {
        self.project_id.as_deref().ok_or_else(|| {
            CliError::Usage(
                "a project id is required: pass --projectId, set INFISICAL_PROJECT_ID, or run \
                 `ikit init` to write .infisical.json"
                    .into(),
            )
        })
    }

    /// This context, with the project filled in from the service token's details when none was
    /// given and the credential is a service token (`st.…`), as the official CLI does.
    pub async fn with_token_project(&self) -> Result<std::borrow::Cow<'_, Self>, CliError> {
        let is_service_token = matches!(
            &self.settings.infisical.auth,
            AuthMethod::Token(t) if t.expose().starts_with("st.")
        );
        if self.project_id.is_some() || !is_service_token {
            return Ok(std::borrow::Cow::Borrowed(self));
        }
        let info = self
            .client()
            .await?
            .service_token_info()
            .await
            .map_err(|e| CliError::client("cannot read the service token's project", e))?;
        let mut ctx = self.clone();
        ctx.project_id = Some(info.project_id).filter(|p| !p.is_empty());
        Ok(std::borrow::Cow::Owned(ctx))
    }

    /// A listing query for `path` (`None`: the default secret path) in the resolved project and
    /// environment.
    pub fn folder_query(&self, path: Option<&str>) -> Result<FolderQuery, CliError> {
        let path = match path {
            Some(p) => ikit_common::secret::normalize_folder(p)
                .map_err(|e| CliError::Usage(format!("--path {p:?}: {e}")))?,
            None => self.secret_path.clone(),
        };
        Ok(FolderQuery::new(self.require_project()?, &self.environment, path))
    }

    /// The client configuration from the settings, with the API generation a previous run
    /// found remembered.
    pub fn client_config(&self) -> Result<ClientConfig, CliError> {
        if matches!(self.settings.infisical.auth, AuthMethod::None) {
            return Err(CliError::Usage(
                "no credentials: pass --token, set INFISICAL_TOKEN, or set \
                 INFISICAL_UNIVERSAL_AUTH_CLIENT_ID and INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET"
                    .into(),
            ));
        }
        let config = ClientConfig::from_settings(&self.settings)
            .map_err(|e| CliError::Usage(e.to_string()))?;
        Ok(self.with_client_defaults(config))
    }

    /// What every client of the CLI shares: the remembered API generation, and fewer retries
    /// than a service makes (a person or a CI step is waiting; the snapshot covers an outage).
    pub fn with_client_defaults(&self, mut config: ClientConfig) -> ClientConfig {
        if let Some(version) = crate::session::remembered_api_version(self) {
            config = config.with_api_version(version);
        }
        config.with_retry(RetryPolicy { max_attempts: 2, ..RetryPolicy::default() })
    }

    /// Where the offline snapshots are kept: `IKIT_SNAPSHOT_DIR`, else `~/.ikit/snapshots`.
    pub fn snapshot_dir(&self) -> Option<PathBuf> {
        self.settings
            .snapshot_dir
            .clone()
            .or_else(|| Some(self.state_dir.as_ref()?.join("snapshots")))
    }

    /// Waits for the files queued on [`Context::writes`]; one that could not be written is a
    /// warning (the next run logs in or lists again), not a failure of the command.
    pub fn finish_writes(&self) {
        for (path, e) in self.writes.finish() {
            self.warn(&format!("cannot save {}: {e}", path.display()));
        }
    }

    /// A client for the resolved server and credentials. A machine-identity login reuses the
    /// token `ikit login` or an earlier run cached under `~/.ikit/` while it is still valid.
    pub async fn client(&self) -> Result<Client, CliError> {
        crate::session::client(self).await.map(|(client, _)| client)
    }

    /// A [`CachedClient`] over [`Context::client`] with the encrypted offline snapshot under
    /// `~/.ikit/snapshots` (or `IKIT_SNAPSHOT_DIR` / `IKIT_SNAPSHOT_KEY`); `max_stale` bounds
    /// how old a copy may be when Infisical is unreachable.
    pub async fn cached_client(&self, max_stale: Duration) -> Result<CachedClient, CliError> {
        self.cached_client_with(max_stale, false).await.map(|(cached, _)| cached)
    }

    /// [`Context::cached_client`]; `fresh` logs in even when a cached token is valid. The `bool`
    /// says whether a cached token is in use.
    pub async fn cached_client_with(
        &self,
        max_stale: Duration,
        fresh: bool,
    ) -> Result<(CachedClient, bool), CliError> {
        let (client, cached_token) = if fresh {
            (crate::session::fresh_client(self).await?, false)
        } else {
            crate::session::client(self).await?
        };
        let mut builder = CachedClient::builder()
            .client(client)
            .settings(&self.settings)
            .map_err(|e| CliError::Usage(e.to_string()))?
            // One command reads each listing once: a TTL only has to cover the command.
            .max_stale(max_stale);
        // Without IKIT_SNAPSHOT_DIR (which needs its key) the state directory holds the snapshot.
        if let (None, Some(dir)) = (&self.settings.snapshot_dir, &self.state_dir) {
            let key = crate::session::snapshot_key(self, dir)?;
            builder = builder.snapshot(dir.join("snapshots"), key);
        }
        let cached = builder
            .deferred_writes(self.writes.clone())
            .build()
            .map_err(|e| CliError::Usage(e.to_string()))?;
        Ok((cached, cached_token))
    }
}

/// The official CLI's rule: `--env`; else the environment the current git branch maps to; else
/// `defaultEnvironment`; else `dev`.
pub fn pick_environment(
    flag: Option<&str>,
    config: &ProjectConfig,
    git_branch: Option<&str>,
) -> (String, EnvironmentSource) {
    if let Some(env) = flag.map(str::trim).filter(|e| !e.is_empty()) {
        return (env.to_owned(), EnvironmentSource::Flag);
    }
    if let Some((branch, env)) =
        git_branch.and_then(|b| config.git_branch_to_environment_mapping.get(b).map(|env| (b, env)))
    {
        return (env.clone(), EnvironmentSource::GitBranch(branch.to_owned()));
    }
    if let Some(env) = config.default_environment.as_deref().filter(|e| !e.trim().is_empty()) {
        return (env.trim().to_owned(), EnvironmentSource::ProjectFile);
    }
    (DEFAULT_ENVIRONMENT.to_owned(), EnvironmentSource::Default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::SecretArg;
    use ikit_common::SecretValue;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn file(json: &str) -> Discovered {
        let path = PathBuf::from("/repo/.infisical.json");
        let config = ProjectConfig::parse(&path, json).unwrap();
        Discovered { project_file: Some((path, config)), git_branch: None }
    }

    fn resolve(global: &GlobalArgs, vars: &[(&str, &str)], found: Discovered) -> Context {
        Context::resolve(
            global,
            &env(vars),
            Path::new("/repo/sub"),
            Some(Path::new("/home/u")),
            found,
        )
        .unwrap()
    }

    #[test]
    fn the_api_url_comes_from_the_flag_then_the_variables_then_the_file_then_the_default() {
        let found = || file(r#"{"domain": "https://file.example"}"#);
        let flag =
            GlobalArgs { domain: Some("https://flag.example/".into()), ..Default::default() };
        let both = [
            ("INFISICAL_DOMAIN", "https://new.example"),
            ("INFISICAL_API_URL", "https://old.example/api"),
        ];
        assert_eq!(
            resolve(&flag, &both, found()).settings.infisical.api_url,
            "https://flag.example/api"
        );
        let none = GlobalArgs::default();
        assert_eq!(
            resolve(&none, &both, found()).settings.infisical.api_url,
            "https://new.example/api"
        );
        let legacy = [("INFISICAL_API_URL", "https://old.example/api")];
        assert_eq!(
            resolve(&none, &legacy, found()).settings.infisical.api_url,
            "https://old.example/api"
        );
        let from_file = resolve(&none, &[], found());
        assert_eq!(from_file.settings.infisical.api_url, "https://file.example/api");
        assert!(from_file.notices.iter().any(|n| n.contains("https://file.example")));
        let default = resolve(&none, &[], Discovered::default());
        assert_eq!(default.settings.infisical.api_url, "https://app.infisical.com/api");
        assert!(default.notices.is_empty());
    }

    #[test]
    fn a_file_domain_without_a_scheme_is_refused_with_the_file_named() {
        let err = Context::resolve(
            &GlobalArgs::default(),
            &BTreeMap::new(),
            Path::new("/repo"),
            None,
            file(r#"{"domain": "infisical.example"}"#),
        )
        .unwrap_err();
        assert!(matches!(err, CliError::Usage(_)));
        assert!(err.to_string().contains("/repo/.infisical.json"), "{err}");
    }

    #[test]
    fn the_project_comes_from_the_flag_then_the_variable_then_the_file() {
        let found = || file(r#"{"workspaceId": "from-file"}"#);
        let flag = GlobalArgs { project_id: Some("from-flag".into()), ..Default::default() };
        let var = [("INFISICAL_PROJECT_ID", "from-env")];
        assert_eq!(resolve(&flag, &var, found()).project_id.as_deref(), Some("from-flag"));
        let none = GlobalArgs::default();
        assert_eq!(resolve(&none, &var, found()).project_id.as_deref(), Some("from-env"));
        assert_eq!(resolve(&none, &[], found()).project_id.as_deref(), Some("from-file"));
        let nothing = resolve(&none, &[], Discovered::default());
        assert!(nothing.project_id.is_none());
        assert!(matches!(nothing.require_project(), Err(CliError::Usage(_))));
    }

    #[test]
    fn the_environment_follows_the_official_rule() {
        let config = ProjectConfig::parse(
            Path::new(".infisical.json"),
            r#"{"defaultEnvironment": "staging", "gitBranchToEnvironmentMapping": {"main": "prod"}}"#,
        )
        .unwrap();
        assert_eq!(
            pick_environment(Some("qa"), &config, Some("main")),
            ("qa".into(), EnvironmentSource::Flag)
        );
        assert_eq!(
            pick_environment(None, &config, Some("main")),
            ("prod".into(), EnvironmentSource::GitBranch("main".into()))
        );
        assert_eq!(
            pick_environment(None, &config, Some("feature")),
            ("staging".into(), EnvironmentSource::ProjectFile)
        );
        assert_eq!(
            pick_environment(None, &config, None),
            ("staging".into(), EnvironmentSource::ProjectFile)
        );
        assert_eq!(
            pick_environment(None, &ProjectConfig::default(), Some("main")),
            ("dev".into(), EnvironmentSource::Default)
        );
        // `INFISICAL_ENVIRONMENT` is only read by the official CLI's agent proxy, not by `run`.
        let ctx = resolve(
            &GlobalArgs::default(),
            &[("INFISICAL_ENVIRONMENT", "prod")],
            Discovered::default(),
        );
        assert_eq!(ctx.environment, "dev");
    }

    #[test]
    fn a_bad_environment_slug_is_a_usage_error() {
        let global = GlobalArgs { env: Some("no spaces allowed".into()), ..Default::default() };
        let err = Context::resolve(
            &global,
            &BTreeMap::new(),
            Path::new("/"),
            None,
            Discovered::default(),
        )
        .unwrap_err();
        assert!(matches!(err, CliError::Usage(_)), "{err}");
    }

    #[test]
    fn the_token_flag_wins_over_every_variable() {
        let global = GlobalArgs {
            token: Some(SecretArg(SecretValue::new("st.flag.token"))),
            ..Default::default()
        };
        let vars = [
            ("INFISICAL_UNIVERSAL_AUTH_ACCESS_TOKEN", "access-from-env"),
            ("INFISICAL_TOKEN", "token-from-env"),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", "id"),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", "secret"),
        ];
        let ctx = resolve(&global, &vars, Discovered::default());
        match &ctx.settings.infisical.auth {
            AuthMethod::Token(t) => assert_eq!(t.expose(), "st.flag.token"),
            other => panic!("expected a token, got {}", other.name()),
        }
        // without the flag the access-token variable wins, as in the official CLI
        let ctx = resolve(&GlobalArgs::default(), &vars, Discovered::default());
        match &ctx.settings.infisical.auth {
            AuthMethod::Token(t) => assert_eq!(t.expose(), "access-from-env"),
            other => panic!("expected a token, got {}", other.name()),
        }
    }

    #[test]
    fn universal_auth_and_identity_methods_come_from_their_variables() {
        let vars = [
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID", "the-id"),
            ("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET", "the-secret"),
            ("INFISICAL_DISABLE_UPDATE_CHECK", "1"),
        ];
        let ctx = resolve(&GlobalArgs::default(), &vars, Discovered::default());
        assert!(
            matches!(&ctx.settings.infisical.auth, AuthMethod::UniversalAuth { client_id, .. } if client_id == "the-id")
        );
        assert!(ctx.settings.infisical.disable_update_check);
        let vars = [
            ("IKIT_INFISICAL_AUTH_METHOD", "kubernetes"),
            ("INFISICAL_MACHINE_IDENTITY_ID", "ident"),
        ];
        let ctx = resolve(&GlobalArgs::default(), &vars, Discovered::default());
        assert!(
            matches!(&ctx.settings.infisical.auth, AuthMethod::Kubernetes { identity_id, .. } if identity_id == "ident")
        );
        let ctx = resolve(&GlobalArgs::default(), &[], Discovered::default());
        assert!(matches!(ctx.settings.infisical.auth, AuthMethod::None));
        assert!(
            matches!(ctx.client_config(), Err(CliError::Usage(m)) if m.contains("INFISICAL_TOKEN"))
        );
    }

    #[test]
    fn bad_custom_headers_are_a_configuration_error_that_does_not_echo_the_value() {
        let vars = [("INFISICAL_CUSTOM_HEADERS", "X-Team=a Bearer-s3cr3t-tail")];
        let err = Context::resolve(
            &GlobalArgs::default(),
            &env(&vars),
            Path::new("/"),
            None,
            Discovered::default(),
        )
        .unwrap_err();
        assert!(matches!(err, CliError::Config(_)));
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        let vars = [("INFISICAL_CUSTOM_HEADERS", r#"X-Team="platform eng" X-Env=ci"#)];
        let ctx = resolve(&GlobalArgs::default(), &vars, Discovered::default());
        let names: Vec<&str> =
            ctx.settings.infisical.custom_headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["X-Team", "X-Env"]);
    }

    #[test]
    fn the_secret_path_state_dir_silence_and_colour_are_resolved() {
        let ctx = resolve(
            &GlobalArgs { silent: true, ..Default::default() },
            &[("NO_COLOR", "")],
            file(r#"{"defaultSecretPath": "/api/"}"#),
        );
        assert_eq!(ctx.secret_path, "/api");
        assert_eq!(ctx.state_dir.as_deref(), Some(Path::new("/home/u/.ikit")));
        assert!(ctx.silent && !ctx.color);
        assert_eq!(ctx.project_file.as_deref(), Some(Path::new("/repo/.infisical.json")));
        let ctx = resolve(&GlobalArgs::default(), &[], Discovered::default());
        assert_eq!(ctx.secret_path, "/");
        assert!(ctx.color);
        let q =
            Context { project_id: Some("p".into()), ..ctx }.folder_query(Some("/a/b/")).unwrap();
        assert_eq!(
            (q.project_id.as_str(), q.environment.as_str(), q.path.as_str()),
            ("p", "dev", "/a/b")
        );
    }

    #[test]
    fn the_project_file_reads_the_official_clis_output_and_names_itself_when_broken() {
        let text = r#"{"workspaceId":"p1","defaultEnvironment":"","gitBranchToEnvironmentMapping":null,"unknownKey":1}"#;
        let config = ProjectConfig::parse(Path::new("x/.infisical.json"), text).unwrap();
        assert_eq!(config.workspace_id.as_deref(), Some("p1"));
        assert!(config.git_branch_to_environment_mapping.is_empty());
        let err = ProjectConfig::parse(Path::new("x/.infisical.json"), "{not json").unwrap_err();
        assert!(err.to_string().starts_with("x/.infisical.json: not valid JSON"), "{err}");
        let err = ProjectConfig::parse(Path::new("x/.infisical.json"), r#"{"workspaceId": 7}"#)
            .unwrap_err();
        assert!(err.to_string().contains("x/.infisical.json"), "{err}");
    }

    #[test]
    fn the_branch_is_read_from_head() {
        assert_eq!(branch_of_head("ref: refs/heads/feature/x\n").as_deref(), Some("feature/x"));
        assert_eq!(branch_of_head("3f2a9c0d1e\n"), None);
    }

    #[test]
    fn discovery_walks_up_and_reads_the_branch_of_a_worktree() {
        let root = tempfile::tempdir().unwrap();
        let sub = root.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(
            root.path().join(PROJECT_FILE),
            r#"{"workspaceId":"p","gitBranchToEnvironmentMapping":{"release":"prod"}}"#,
        )
        .unwrap();
        let gitdir = root.path().join("real-git-dir");
        std::fs::create_dir_all(&gitdir).unwrap();
        std::fs::write(gitdir.join("HEAD"), "ref: refs/heads/release\n").unwrap();
        std::fs::write(root.path().join(".git"), "gitdir: real-git-dir\n").unwrap();
        let found = Discovered::discover(None, &sub, false).unwrap();
        assert_eq!(found.git_branch.as_deref(), Some("release"));
        let ctx =
            Context::resolve(&GlobalArgs::default(), &BTreeMap::new(), &sub, None, found).unwrap();
        assert_eq!((ctx.environment.as_str(), ctx.project_id.as_deref()), ("prod", Some("p")));
        // with --env the branch is not even read
        assert!(Discovered::discover(None, &sub, true).unwrap().git_branch.is_none());
    }
}
