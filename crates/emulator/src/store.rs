//! The emulator's state: projects, folders, secrets, identities, tokens and webhooks. Plain data
//! plus lookups; the HTTP rules live in `routes`. Serialised whole for `--data` persistence.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::EmulatorError;
use crate::logic::expand::Lookup;
use crate::logic::tokens::TokenRow;
use crate::logic::values::{join_path, normalize_path, split_parent};
use crate::seed::{Seed, SeedEnvironment, SeedJwtAuth, SeedLockout, SeedScope};

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Store {
    /// Signs identity access tokens (hex of 32 random bytes).
    pub(crate) jwt_secret: String,
    pub(crate) org_id: String,
    pub(crate) projects: Vec<Project>,
    pub(crate) folders: Vec<Folder>,
    pub(crate) secrets: Vec<Secret>,
    pub(crate) imports: Vec<Import>,
    pub(crate) identities: Vec<Identity>,
    pub(crate) tokens: Vec<TokenRow>,
    pub(crate) service_tokens: Vec<ServiceToken>,
    pub(crate) webhooks: Vec<Webhook>,
    pub(crate) approval_policies: Vec<ApprovalPolicy>,
    #[serde(default)]
    pub(crate) tags: Vec<Tag>,
    #[serde(default)]
    pub(crate) users: Vec<User>,
}

/// A seeded user and the bearer token it is known by.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct User {
    pub(crate) id: String,
    pub(crate) email: String,
    pub(crate) token: String,
    pub(crate) projects: Vec<String>,
}

/// A project tag; secrets hold copies of theirs.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Tag {
    pub(crate) id: String,
    pub(crate) project_id: String,
    pub(crate) slug: String,
    pub(crate) name: String,
    pub(crate) color: Option<String>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Project {
    pub(crate) id: String,
    pub(crate) slug: String,
    pub(crate) name: String,
    pub(crate) created_at_ms: i64,
    pub(crate) environments: Vec<Environment>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Environment {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) slug: String,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Folder {
    pub(crate) id: String,
    pub(crate) project_id: String,
    pub(crate) env: String,
    /// Full path; `/` for the root folder.
    pub(crate) path: String,
    pub(crate) name: String,
    pub(crate) parent_id: Option<String>,
    pub(crate) version: u64,
    pub(crate) description: Option<String>,
    pub(crate) created_at_ms: i64,
    pub(crate) updated_at_ms: i64,
    pub(crate) last_secret_modified_ms: Option<i64>,
}

impl Folder {
    /// A new folder at version 1 with no description, created at `now_ms`.
    pub(crate) fn new(
        project_id: &str,
        env: &str,
        path: String,
        name: &str,
        parent_id: Option<String>,
        now_ms: i64,
    ) -> Self {
        Self {
            id: new_id(),
            project_id: project_id.to_owned(),
            env: env.to_owned(),
            path,
            name: name.to_owned(),
            parent_id,
            version: 1,
            description: None,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            last_secret_modified_ms: None,
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Secret {
    pub(crate) id: String,
    pub(crate) project_id: String,
    pub(crate) env: String,
    pub(crate) path: String,
    pub(crate) key: String,
    pub(crate) kind: String,
    pub(crate) value: String,
    pub(crate) comment: String,
    pub(crate) skip_multiline: Option<bool>,
    pub(crate) reminder_note: Option<String>,
    pub(crate) reminder_repeat_days: Option<u64>,
    pub(crate) metadata: Vec<serde_json::Value>,
    #[serde(default)]
    pub(crate) tags: Vec<Tag>,
    pub(crate) version: u64,
    pub(crate) created_at_ms: i64,
    pub(crate) updated_at_ms: i64,
    pub(crate) actor: Option<Actor>,
    /// Every version, oldest first, including the current one.
    pub(crate) history: Vec<SecretVersion>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SecretVersion {
    pub(crate) version: u64,
    pub(crate) key: String,
    pub(crate) value: String,
    pub(crate) comment: String,
    pub(crate) created_at_ms: i64,
}

/// Who made a change, as recorded on secrets and in webhook payloads.
#[derive(Clone, Serialize, Deserialize, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Actor {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) kind: String,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Import {
    pub(crate) id: String,
    pub(crate) project_id: String,
    pub(crate) env: String,
    pub(crate) path: String,
    pub(crate) import_env: String,
    pub(crate) import_path: String,
    pub(crate) omit_folder_id: bool,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Identity {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret: Option<String>,
    pub(crate) ttl: u64,
    pub(crate) max_ttl: u64,
    pub(crate) num_uses_limit: u64,
    pub(crate) period: u64,
    pub(crate) projects: Vec<String>,
    /// Values hidden from this identity (see `SeedIdentity::describe_only`).
    #[serde(default)]
    pub(crate) describe_only: bool,
    pub(crate) auth_methods: Vec<String>,
    pub(crate) jwt_auth: Option<SeedJwtAuth>,
    pub(crate) lockout: SeedLockout,
    /// Failed universal-auth attempts (emulator ms) inside the counter window.
    #[serde(default)]
    pub(crate) failures: Vec<i64>,
    #[serde(default)]
    pub(crate) locked_until_ms: Option<i64>,
    #[serde(default)]
    pub(crate) secret_state: ClientSecretState,
}

/// Lifetime rules of the universal-auth client secret (spec 1.3).
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClientSecretState {
    pub(crate) created_at_ms: i64,
    pub(crate) ttl_secs: u64,
    pub(crate) num_uses_limit: u64,
    pub(crate) num_uses: u64,
    pub(crate) revoked: bool,
}

impl Identity {
    pub(crate) fn has_method(&self, method: &str) -> bool {
        self.auth_methods.iter().any(|m| m == method)
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceToken {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) secret: String,
    pub(crate) project_id: String,
    pub(crate) scopes: Vec<SeedScope>,
    pub(crate) expires_at_ms: Option<i64>,
    pub(crate) created_at_ms: i64,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Webhook {
    pub(crate) id: String,
    pub(crate) project_id: String,
    pub(crate) env: String,
    pub(crate) secret_path: String,
    pub(crate) url: String,
    pub(crate) secret_key: Option<String>,
    pub(crate) kind: String,
    pub(crate) is_disabled: bool,
    pub(crate) last_status: Option<String>,
    pub(crate) last_run_error_message: Option<String>,
    pub(crate) created_at_ms: i64,
    pub(crate) updated_at_ms: i64,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ApprovalPolicy {
    pub(crate) id: String,
    pub(crate) project_id: String,
    pub(crate) env: String,
    pub(crate) secret_path: String,
}

fn env_name(slug: &str) -> String {
    match slug {
        "dev" => "Development".to_owned(),
        "staging" => "Staging".to_owned(),
        "prod" => "Production".to_owned(),
        other => other.to_owned(),
    }
}

fn seed_err(message: String) -> EmulatorError {
    EmulatorError::Seed(message)
}

impl Store {
    /// Builds the initial state from a seed, checking every cross-reference.
    pub(crate) fn from_seed(
        seed: &Seed,
        now_ms: i64,
        jwt_secret: String,
    ) -> Result<Store, EmulatorError> {
        let mut store = Store {
            jwt_secret,
            org_id: new_id(),
            projects: Vec::new(),
            folders: Vec::new(),
            secrets: Vec::new(),
            imports: Vec::new(),
            identities: Vec::new(),
            tokens: Vec::new(),
            service_tokens: Vec::new(),
            webhooks: Vec::new(),
            approval_policies: Vec::new(),
            tags: Vec::new(),
            users: Vec::new(),
        };
        for p in &seed.projects {
            if store.project(&p.id).is_some() {
                return Err(seed_err(format!("duplicate project id {}", p.id)));
            }
            let environments = p
                .environments
                .iter()
                .map(|e| {
                    let (slug, name) = match e {
                        SeedEnvironment::Slug(s) => (s.clone(), env_name(s)),
                        SeedEnvironment::Full { slug, name } => (slug.clone(), name.clone()),
                    };
                    Environment { id: new_id(), name, slug }
                })
                .collect::<Vec<_>>();
            store.projects.push(Project {
                id: p.id.clone(),
                slug: p.slug.clone(),
                name: p.name.clone().unwrap_or_else(|| p.slug.clone()),
                created_at_ms: now_ms,
                environments: environments.clone(),
            });
            for env in environments {
                store.folders.push(Folder::new(&p.id, &env.slug, "/".into(), "root", None, now_ms));
            }
        }
        for f in &seed.folders {
            let path = store.seed_location(&f.project_id, &f.environment, &f.path)?;
            store.ensure_folders(&f.project_id, &f.environment, &path, now_ms);
        }
        // Seeded addresses so far: a duplicate is found without scanning every secret seeded
        // before it (a seed of 10,000 secrets would otherwise make 50 million comparisons).
        let mut seeded = std::collections::HashSet::new();
        for s in &seed.secrets {
            let path = store.seed_location(&s.project_id, &s.environment, &s.path)?;
            store.ensure_folders(&s.project_id, &s.environment, &path, now_ms);
            let address = (s.project_id.as_str(), s.environment.as_str(), path.clone(), &s.key);
            if !seeded.insert(address) {
                let at = join_path(&path, &s.key);
                return Err(seed_err(format!("duplicate secret {}:{at}", s.environment)));
            }
            let mut secret = Secret::new(
                &s.project_id,
                &s.environment,
                &path,
                &s.key,
                s.value.clone(),
                s.comment.clone(),
                s.skip_multiline_encoding,
                None,
                now_ms,
            );
            secret.tags =
                s.tags.iter().map(|slug| store.tag_or_create(&s.project_id, slug)).collect();
            store.secrets.push(secret);
        }
        for i in &seed.imports {
            let path = store.seed_location(&i.project_id, &i.environment, &i.path)?;
            let import_path =
                store.seed_location(&i.project_id, &i.import_environment, &i.import_path)?;
            store.ensure_folders(&i.project_id, &i.environment, &path, now_ms);
            store.imports.push(Import {
                id: new_id(),
                project_id: i.project_id.clone(),
                env: i.environment.clone(),
                path,
                import_env: i.import_environment.clone(),
                import_path,
                omit_folder_id: i.omit_folder_id,
            });
        }
        for i in &seed.identities {
            for p in &i.projects {
                if store.project(p).is_none() {
                    return Err(seed_err(format!("identity {} names unknown project {p}", i.name)));
                }
            }
            let mut methods = i.auth_methods.clone();
            if i.client_id.is_some() {
                if i.client_secret.is_none() {
                    return Err(seed_err(format!(
                        "identity {} has a clientId but no clientSecret",
                        i.name
                    )));
                }
                methods.push("universal-auth".into());
            }
            if i.jwt_auth.is_some() {
                for m in ["kubernetes-auth", "oidc-auth", "jwt-auth"] {
                    methods.push(m.into());
                }
            }
            if i.access_token_max_ttl > 0 && i.access_token_ttl > i.access_token_max_ttl {
                return Err(seed_err(format!(
                    "identity {}: accessTokenTTL exceeds accessTokenMaxTTL",
                    i.name
                )));
            }
            store.identities.push(Identity {
                id: i.id.clone().unwrap_or_else(new_id),
                name: i.name.clone(),
                client_id: i.client_id.clone(),
                client_secret: i.client_secret.clone(),
                ttl: i.access_token_ttl,
                max_ttl: i.access_token_max_ttl,
                num_uses_limit: i.access_token_num_uses_limit,
                period: i.access_token_period,
                projects: i.projects.clone(),
                describe_only: i.describe_only,
                auth_methods: methods,
                jwt_auth: i.jwt_auth.clone(),
                lockout: i.lockout.clone().unwrap_or_default(),
                failures: Vec::new(),
                locked_until_ms: None,
                secret_state: ClientSecretState {
                    created_at_ms: now_ms,
                    ttl_secs: i.client_secret_ttl,
                    num_uses_limit: i.client_secret_num_uses_limit,
                    num_uses: 0,
                    revoked: false,
                },
            });
        }
        for t in &seed.service_tokens {
            if store.project(&t.project_id).is_none() {
                return Err(seed_err(format!("service token {} names unknown project", t.id)));
            }
            store.service_tokens.push(ServiceToken {
                id: t.id.clone(),
                name: t.name.clone().unwrap_or_else(|| format!("token-{}", t.id)),
                secret: t.secret.clone(),
                project_id: t.project_id.clone(),
                scopes: t.scopes.clone(),
                expires_at_ms: t.expires_at,
                created_at_ms: now_ms,
            });
        }
        for w in &seed.webhooks {
            store.seed_location(&w.project_id, &w.environment, "/")?;
            url::Url::parse(&w.url).map_err(|e| seed_err(format!("webhook url {}: {e}", w.url)))?;
            store.webhooks.push(Webhook {
                id: w.id.clone().unwrap_or_else(new_id),
                project_id: w.project_id.clone(),
                env: w.environment.clone(),
                secret_path: w.secret_path.clone(),
                url: w.url.clone(),
                secret_key: w.secret_key.clone(),
                kind: "general".into(),
                is_disabled: false,
                last_status: None,
                last_run_error_message: None,
                created_at_ms: now_ms,
                updated_at_ms: now_ms,
            });
        }
        for u in &seed.users {
            for p in &u.projects {
                if store.project(p).is_none() {
                    return Err(seed_err(format!("user {} names unknown project {p}", u.email)));
                }
            }
            if u.token.is_empty() || u.token.starts_with("st.") {
                return Err(seed_err(format!(
                    "user {}: token must be non-empty, not st.",
                    u.email
                )));
            }
            store.users.push(User {
                id: u.id.clone().unwrap_or_else(new_id),
                email: u.email.clone(),
                token: u.token.clone(),
                projects: u.projects.clone(),
            });
        }
        for a in &seed.approval_policies {
            store.seed_location(&a.project_id, &a.environment, "/")?;
            store.approval_policies.push(ApprovalPolicy {
                id: new_id(),
                project_id: a.project_id.clone(),
                env: a.environment.clone(),
                secret_path: a.secret_path.clone(),
            });
        }
        Ok(store)
    }

    fn seed_location(
        &self,
        project_id: &str,
        env: &str,
        path: &str,
    ) -> Result<String, EmulatorError> {
        let project = self
            .project(project_id)
            .ok_or_else(|| seed_err(format!("unknown project {project_id}")))?;
        if !project.environments.iter().any(|e| e.slug == env) {
            return Err(seed_err(format!("project {project_id} has no environment {env}")));
        }
        normalize_path(path).ok_or_else(|| seed_err(format!("invalid folder path {path}")))
    }

    pub(crate) fn project(&self, id: &str) -> Option<&Project> {
        self.projects.iter().find(|p| p.id == id)
    }

    pub(crate) fn project_by_slug(&self, slug: &str) -> Option<&Project> {
        self.projects.iter().find(|p| p.slug == slug)
    }

    pub(crate) fn environment(&self, project_id: &str, slug: &str) -> Option<&Environment> {
        self.project(project_id)?.environments.iter().find(|e| e.slug == slug)
    }

    pub(crate) fn folder(&self, project_id: &str, env: &str, path: &str) -> Option<&Folder> {
        self.folders.iter().find(|f| f.project_id == project_id && f.env == env && f.path == path)
    }

    pub(crate) fn folder_by_id(&self, id: &str) -> Option<&Folder> {
        self.folders.iter().find(|f| f.id == id)
    }

    /// Creates every missing folder along `path` (the seed, and folder creation under a missing
    /// parent, which the server answers by creating the parents).
    pub(crate) fn ensure_folders(&mut self, project_id: &str, env: &str, path: &str, now_ms: i64) {
        let mut current = "/".to_owned();
        for name in path.split('/').filter(|s| !s.is_empty()) {
            let next = join_path(&current, name);
            if self.folder(project_id, env, &next).is_none() {
                let parent = self.folder(project_id, env, &current).map(|f| f.id.clone());
                self.folders.push(Folder::new(project_id, env, next.clone(), name, parent, now_ms));
            }
            current = next;
        }
    }

    /// Direct sub-folders of a folder.
    pub(crate) fn children(&self, project_id: &str, env: &str, path: &str) -> Vec<&Folder> {
        let mut out: Vec<&Folder> = self
            .folders
            .iter()
            .filter(|f| {
                f.project_id == project_id
                    && f.env == env
                    && f.path != "/"
                    && split_parent(&f.path).is_some_and(|(parent, _)| parent == path)
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// A folder and all its descendants' paths, the folder first, then depth-first by name.
    pub(crate) fn subtree(&self, project_id: &str, env: &str, path: &str) -> Vec<String> {
        let mut out = vec![path.to_owned()];
        for child in self.children(project_id, env, path) {
            out.extend(self.subtree(project_id, env, &child.path));
        }
        out
    }

    pub(crate) fn secrets_in(&self, project_id: &str, env: &str, path: &str) -> Vec<&Secret> {
        let mut out: Vec<&Secret> = self
            .secrets
            .iter()
            .filter(|s| {
                s.project_id == project_id && s.env == env && s.path == path && s.kind == "shared"
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    pub(crate) fn find_secret(
        &self,
        project_id: &str,
        env: &str,
        path: &str,
        key: &str,
    ) -> Option<&Secret> {
        self.secrets.iter().find(|s| {
            s.project_id == project_id
                && s.env == env
                && s.path == path
                && s.key == key
                && s.kind == "shared"
        })
    }

    pub(crate) fn find_secret_mut(
        &mut self,
        project_id: &str,
        env: &str,
        path: &str,
        key: &str,
    ) -> Option<&mut Secret> {
        self.secrets.iter_mut().find(|s| {
            s.project_id == project_id
                && s.env == env
                && s.path == path
                && s.key == key
                && s.kind == "shared"
        })
    }

    pub(crate) fn imports_of(&self, project_id: &str, env: &str, path: &str) -> Vec<&Import> {
        self.imports
            .iter()
            .filter(|i| i.project_id == project_id && i.env == env && i.path == path)
            .collect()
    }

    /// Marks the folder (and its ancestors' `lastSecretModified` is left alone, as the server
    /// updates only the folder itself).
    pub(crate) fn touch_folder(&mut self, project_id: &str, env: &str, path: &str, now_ms: i64) {
        if let Some(f) = self
            .folders
            .iter_mut()
            .find(|f| f.project_id == project_id && f.env == env && f.path == path)
        {
            f.last_secret_modified_ms = Some(now_ms);
        }
    }

    /// The expansion view of one project, copied out of the store, for values about to be
    /// shown. Copying a whole project costs a few milliseconds at ten thousand secrets, so it is
    /// made only when one of those values holds a reference; otherwise the view is empty
    /// (expanding a value without `${` looks nothing up).
    pub(crate) fn snapshot_for<'a>(
        &self,
        project_id: &str,
        mut shown: impl Iterator<Item = &'a str>,
    ) -> ProjectSnapshot {
        if shown.any(|value| value.contains("${")) {
            self.snapshot(project_id)
        } else {
            ProjectSnapshot::default()
        }
    }

    /// The expansion view of one project, copied out of the store.
    pub(crate) fn snapshot(&self, project_id: &str) -> ProjectSnapshot {
        let values = self
            .secrets
            .iter()
            .filter(|s| s.project_id == project_id && s.kind == "shared")
            .map(|s| ((s.env.clone(), s.path.clone(), s.key.clone()), s.value.clone()))
            .collect();
        let mut imports: HashMap<(String, String), Vec<(String, String)>> = HashMap::new();
        for i in self.imports.iter().filter(|i| i.project_id == project_id) {
            imports
                .entry((i.env.clone(), i.path.clone()))
                .or_default()
                .push((i.import_env.clone(), i.import_path.clone()));
        }
        ProjectSnapshot { values, imports }
    }

    /// The project's tag with `slug`, created (named after the slug) when missing.
    pub(crate) fn tag_or_create(&mut self, project_id: &str, slug: &str) -> Tag {
        if let Some(tag) = self.tags.iter().find(|t| t.project_id == project_id && t.slug == slug) {
            return tag.clone();
        }
        let tag = Tag {
            id: new_id(),
            project_id: project_id.to_owned(),
            slug: slug.to_owned(),
            name: slug.to_owned(),
            color: None,
        };
        self.tags.push(tag.clone());
        tag
    }

    pub(crate) fn identity(&self, id: &str) -> Option<&Identity> {
        self.identities.iter().find(|i| i.id == id)
    }

    pub(crate) fn token(&self, id: &str) -> Option<&TokenRow> {
        self.tokens.iter().find(|t| t.id == id)
    }

    pub(crate) fn token_mut(&mut self, id: &str) -> Option<&mut TokenRow> {
        self.tokens.iter_mut().find(|t| t.id == id)
    }

    pub(crate) fn delete_token(&mut self, id: &str) {
        self.tokens.retain(|t| t.id != id);
    }
}

impl Secret {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        project_id: &str,
        env: &str,
        path: &str,
        key: &str,
        value: String,
        comment: String,
        skip_multiline: Option<bool>,
        actor: Option<Actor>,
        now_ms: i64,
    ) -> Secret {
        Secret {
            id: new_id(),
            project_id: project_id.to_owned(),
            env: env.to_owned(),
            path: path.to_owned(),
            key: key.to_owned(),
            kind: "shared".into(),
            history: vec![SecretVersion {
                version: 1,
                key: key.to_owned(),
                value: value.clone(),
                comment: comment.clone(),
                created_at_ms: now_ms,
            }],
            value,
            comment,
            skip_multiline,
            reminder_note: None,
            reminder_repeat_days: None,
            metadata: Vec::new(),
            tags: Vec::new(),
            version: 1,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            actor,
        }
    }

    /// Records the current fields as a new version.
    pub(crate) fn bump(&mut self, now_ms: i64) {
        self.version += 1;
        self.updated_at_ms = now_ms;
        self.history.push(SecretVersion {
            version: self.version,
            key: self.key.clone(),
            value: self.value.clone(),
            comment: self.comment.clone(),
            created_at_ms: now_ms,
        });
    }
}

/// An owned copy of one project's shared secret values and imports, for reference expansion
/// after the store lock is released: own secrets first, then the folder's imports in order.
#[derive(Default)]
pub(crate) struct ProjectSnapshot {
    values: HashMap<(String, String, String), String>,
    imports: HashMap<(String, String), Vec<(String, String)>>,
}

impl Lookup for ProjectSnapshot {
    fn find(&self, env: &str, path: &str, key: &str) -> Option<String> {
        let value = |env: &str, path: &str| {
            self.values.get(&(env.to_owned(), path.to_owned(), key.to_owned())).cloned()
        };
        value(env, path).or_else(|| {
            self.imports
                .get(&(env.to_owned(), path.to_owned()))?
                .iter()
                .find_map(|(ienv, ipath)| value(ienv, ipath))
        })
    }
}
