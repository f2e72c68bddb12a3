//! Pure request builders for the secrets, folders and projects routes, in both the v4 and the
//! v3 `raw` dialects (`infisical-api.md` 2.2, 2.4, 3.1, 3.2). Every boolean is sent explicitly.

use ikit_common::SecretValue;
use reqwest::Method;
use zeroize::Zeroizing;

use crate::transport::Call;
use crate::wire::{Secret, SecretMetadata, SecretType};

/// Which dialect of the secrets routes a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// `/api/v4/secrets` with `projectId` (2025 on).
    V4,
    /// `/api/v3/secrets/raw` with `workspaceId` (every server of 2024 to 2026).
    V3,
}

fn flag(b: bool) -> String {
    if b { "true" } else { "false" }.to_owned()
}

/// A folder listing request. Defaults: not recursive, imports included, references expanded,
/// values visible, no personal overrides, no tag filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FolderQuery {
    pub project_id: String,
    pub environment: String,
    pub path: String,
    pub recursive: bool,
    pub include_imports: bool,
    pub expand_references: bool,
    pub view_values: bool,
    pub include_personal_overrides: bool,
    pub tag_slugs: Vec<String>,
}

impl FolderQuery {
    pub fn new(
        project_id: impl Into<String>,
        environment: impl Into<String>,
        path: impl Into<String>,
    ) -> Self {
        Self {
            project_id: project_id.into(),
            environment: environment.into(),
            path: path.into(),
            recursive: false,
            include_imports: true,
            expand_references: true,
            view_values: true,
            include_personal_overrides: false,
            tag_slugs: Vec::new(),
        }
    }

    pub fn recursive(mut self, on: bool) -> Self {
        self.recursive = on;
        self
    }

    pub fn include_imports(mut self, on: bool) -> Self {
        self.include_imports = on;
        self
    }

    pub fn expand_references(mut self, on: bool) -> Self {
        self.expand_references = on;
        self
    }

    pub fn tags(mut self, slugs: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.tag_slugs = slugs.into_iter().map(Into::into).collect();
        self
    }
}

/// Where a write goes: project, environment and folder.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub project_id: String,
    pub environment: String,
    pub path: String,
}

impl Scope {
    pub fn new(
        project_id: impl Into<String>,
        environment: impl Into<String>,
        path: impl Into<String>,
    ) -> Self {
        Self { project_id: project_id.into(), environment: environment.into(), path: path.into() }
    }

    fn project_field(&self, version: ApiVersion) -> (&'static str, serde_json::Value) {
        match version {
            ApiVersion::V4 => ("projectId", self.project_id.clone().into()),
            ApiVersion::V3 => ("workspaceId", self.project_id.clone().into()),
        }
    }

    fn body(&self, version: ApiVersion) -> serde_json::Map<String, serde_json::Value> {
        let mut map = serde_json::Map::new();
        let (k, v) = self.project_field(version);
        map.insert(k.into(), v);
        map.insert("environment".into(), self.environment.clone().into());
        map.insert("secretPath".into(), self.path.clone().into());
        map
    }
}

/// Options of a get-by-name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetOptions {
    pub version: Option<u64>,
    pub secret_type: SecretType,
    pub expand_references: bool,
    pub include_imports: bool,
}

impl Default for GetOptions {
    fn default() -> Self {
        Self {
            version: None,
            secret_type: SecretType::Shared,
            expand_references: true,
            include_imports: true,
        }
    }
}

/// A new secret. No `Debug`: holds a value.
#[derive(Clone)]
pub struct NewSecret {
    pub key: String,
    pub value: SecretValue,
    pub comment: String,
    pub tag_ids: Vec<String>,
    pub skip_multiline_encoding: bool,
    pub secret_type: SecretType,
    /// `secretMetadata`; sent only when not empty.
    pub metadata: Vec<SecretMetadata>,
    pub reminder_note: Option<String>,
    pub reminder_repeat_days: Option<u64>,
}

impl NewSecret {
    pub fn new(key: impl Into<String>, value: impl Into<SecretValue>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            comment: String::new(),
            tag_ids: Vec::new(),
            skip_multiline_encoding: false,
            secret_type: SecretType::Shared,
            metadata: Vec::new(),
            reminder_note: None,
            reminder_repeat_days: None,
        }
    }

    /// Everything of a secret read earlier that a write can set again (a restore or a
    /// migration): value, comment, tags by id, multiline flag, type, metadata and reminder.
    /// Version and timestamps are the server's to assign.
    pub fn from_secret(secret: &Secret) -> Self {
        Self {
            key: secret.key.clone(),
            value: secret.value.clone(),
            comment: secret.comment.clone(),
            tag_ids: secret.tags.iter().map(|t| t.id.clone()).filter(|id| !id.is_empty()).collect(),
            skip_multiline_encoding: secret.skip_multiline_encoding,
            secret_type: secret.secret_type,
            metadata: secret.metadata.clone(),
            reminder_note: secret.reminder_note.clone(),
            reminder_repeat_days: secret.reminder_repeat_days,
        }
    }

    /// The JSON text of this item in a batch body, for sizing chunks.
    pub(crate) fn batch_item(&self) -> serde_json::Value {
        let mut item = serde_json::json!({
            "secretKey": self.key,
            "secretValue": self.value.expose(),
            "secretComment": self.comment,
            "skipMultilineEncoding": self.skip_multiline_encoding,
            "tagIds": self.tag_ids,
            "type": self.secret_type.as_str(),
        });
        if let Some(map) = item.as_object_mut() {
            self.extras(map);
        }
        item
    }

    fn extras(&self, map: &mut serde_json::Map<String, serde_json::Value>) {
        if !self.metadata.is_empty() {
            map.insert("secretMetadata".into(), metadata_json(&self.metadata));
        }
        if let Some(note) = &self.reminder_note {
            map.insert("secretReminderNote".into(), note.clone().into());
        }
        if let Some(days) = self.reminder_repeat_days {
            map.insert("secretReminderRepeatDays".into(), days.into());
        }
    }
}

fn metadata_json(metadata: &[SecretMetadata]) -> serde_json::Value {
    serde_json::to_value(metadata).unwrap_or_default()
}

/// A change to an existing secret; `None` fields are left as they are. No `Debug`.
#[derive(Clone, Default)]
pub struct SecretUpdate {
    pub key: String,
    pub value: Option<SecretValue>,
    pub new_key: Option<String>,
    pub comment: Option<String>,
    /// Replaces the whole tag set.
    pub tag_ids: Option<Vec<String>>,
    pub skip_multiline_encoding: Option<bool>,
    pub secret_type: SecretType,
    /// Replaces the whole `secretMetadata` set.
    pub metadata: Option<Vec<SecretMetadata>>,
    pub reminder_note: Option<String>,
    pub reminder_repeat_days: Option<u64>,
}

impl SecretUpdate {
    pub fn value(key: impl Into<String>, value: impl Into<SecretValue>) -> Self {
        Self { key: key.into(), value: Some(value.into()), ..Self::default() }
    }

    pub fn rename(key: impl Into<String>, new_key: impl Into<String>) -> Self {
        Self { key: key.into(), new_key: Some(new_key.into()), ..Self::default() }
    }
}

fn json_body(map: serde_json::Map<String, serde_json::Value>) -> Option<Zeroizing<String>> {
    Some(Zeroizing::new(serde_json::Value::Object(map).to_string()))
}

fn secrets_root(version: ApiVersion) -> Vec<&'static str> {
    match version {
        ApiVersion::V4 => vec!["v4", "secrets"],
        ApiVersion::V3 => vec!["v3", "secrets", "raw"],
    }
}

fn secret_call(version: ApiVersion, method: Method, key: &str) -> Call {
    let mut call = Call::new(method, &secrets_root(version));
    call.segments.push(key.trim().to_owned());
    call
}

fn batch_call(version: ApiVersion, method: Method) -> Call {
    match version {
        ApiVersion::V4 => Call::new(method, &["v4", "secrets", "batch"]),
        ApiVersion::V3 => Call::new(method, &["v3", "secrets", "batch", "raw"]),
    }
}

pub(crate) fn list(version: ApiVersion, q: &FolderQuery) -> Call {
    let mut call = Call::new(Method::GET, &secrets_root(version));
    let project_key = if version == ApiVersion::V4 { "projectId" } else { "workspaceId" };
    call.query = vec![
        (project_key, q.project_id.clone()),
        ("environment", q.environment.clone()),
        ("secretPath", q.path.clone()),
        ("viewSecretValue", flag(q.view_values)),
        ("expandSecretReferences", flag(q.expand_references)),
        ("recursive", flag(q.recursive)),
        ("include_imports", flag(q.include_imports)),
        ("includeImports", flag(q.include_imports)),
        ("includePersonalOverrides", flag(q.include_personal_overrides)),
    ];
    if !q.tag_slugs.is_empty() {
        call.query.push(("tagSlugs", q.tag_slugs.join(",")));
    }
    call.idempotent = true;
    call
}

pub(crate) fn get(version: ApiVersion, scope: &Scope, key: &str, o: &GetOptions) -> Call {
    let mut call = secret_call(version, Method::GET, key);
    let project_key = if version == ApiVersion::V4 { "projectId" } else { "workspaceId" };
    call.query = vec![
        (project_key, scope.project_id.clone()),
        ("environment", scope.environment.clone()),
        ("secretPath", scope.path.clone()),
        ("type", o.secret_type.as_str().to_owned()),
        ("viewSecretValue", "true".to_owned()),
        ("expandSecretReferences", flag(o.expand_references)),
        ("include_imports", flag(o.include_imports)),
        ("includeImports", flag(o.include_imports)),
    ];
    if let Some(v) = o.version {
        call.query.push(("version", v.to_string()));
    }
    call.idempotent = true;
    call
}

pub(crate) fn create(version: ApiVersion, scope: &Scope, s: &NewSecret) -> Call {
    let mut call = secret_call(version, Method::POST, &s.key);
    let mut body = scope.body(version);
    body.insert("secretValue".into(), s.value.expose().into());
    body.insert("secretComment".into(), s.comment.clone().into());
    body.insert("tagIds".into(), s.tag_ids.clone().into());
    body.insert("skipMultilineEncoding".into(), s.skip_multiline_encoding.into());
    body.insert("type".into(), s.secret_type.as_str().into());
    s.extras(&mut body);
    call.body = json_body(body);
    call
}

pub(crate) fn update(version: ApiVersion, scope: &Scope, u: &SecretUpdate) -> Call {
    let mut call = secret_call(version, Method::PATCH, &u.key);
    let mut body = scope.body(version);
    body.insert("type".into(), u.secret_type.as_str().into());
    if let Some(v) = &u.value {
        body.insert("secretValue".into(), v.expose().into());
    }
    if let Some(k) = &u.new_key {
        body.insert("newSecretName".into(), k.clone().into());
    }
    if let Some(c) = &u.comment {
        body.insert("secretComment".into(), c.clone().into());
    }
    if let Some(t) = &u.tag_ids {
        body.insert("tagIds".into(), t.clone().into());
    }
    if let Some(s) = u.skip_multiline_encoding {
        body.insert("skipMultilineEncoding".into(), s.into());
    }
    if let Some(m) = &u.metadata {
        body.insert("secretMetadata".into(), metadata_json(m));
    }
    if let Some(note) = &u.reminder_note {
        body.insert("secretReminderNote".into(), note.clone().into());
    }
    if let Some(days) = u.reminder_repeat_days {
        body.insert("secretReminderRepeatDays".into(), days.into());
    }
    call.body = json_body(body);
    // Setting a value twice is harmless; renaming twice is not.
    call.idempotent = u.new_key.is_none();
    call
}

pub(crate) fn delete(version: ApiVersion, scope: &Scope, key: &str, kind: SecretType) -> Call {
    let mut call = secret_call(version, Method::DELETE, key);
    let mut body = scope.body(version);
    body.insert("type".into(), kind.as_str().into());
    call.body = json_body(body);
    call.idempotent = true;
    call
}

/// How big one batch request may get. The server refuses a JSON body over 1 MiB (the 2024
/// server with a 500, a 2026 server with 413) and publishes no item limit; a batch runs in one
/// database transaction, so chunks stay small enough to keep each request short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_items: usize,
    pub max_body_bytes: usize,
}

impl Default for BatchLimits {
    /// 250 items and 768 KiB, a quarter under the 1 MiB body limit for the envelope and
    /// escaping differences. The byte budget bounds big values; the item count bounds the
    /// transaction of one request (250 typical items are some 50 KB), and keeps a 10,000-key
    /// migration at 40 writes, within the 60 secrets requests a minute a production server
    /// allows one address.
    fn default() -> Self {
        Self { max_items: 250, max_body_bytes: 768 * 1024 }
    }
}

/// Where a chunked batch write is: after each chunk the server accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchProgress {
    /// Items written so far.
    pub done: usize,
    pub total: usize,
    /// Chunks written so far, of `chunks`.
    pub chunk: usize,
    pub chunks: usize,
}

/// Room for the envelope around the items (`projectId`, `environment`, `secretPath`, `mode`).
const ENVELOPE_BYTES: usize = 1024;

/// Splits items into consecutive chunks within `limits` (pure). An item that alone exceeds the
/// body limit is refused by key, before anything is sent.
pub(crate) fn chunk_ranges(
    sizes: impl IntoIterator<Item = (String, usize)>,
    limits: BatchLimits,
) -> Result<Vec<std::ops::Range<usize>>, crate::error::ClientError> {
    let budget = limits.max_body_bytes.saturating_sub(ENVELOPE_BYTES);
    let max_items = limits.max_items.max(1);
    let mut ranges = Vec::new();
    let (mut start, mut bytes, mut count) = (0usize, 0usize, 0usize);
    for (index, (key, size)) in sizes.into_iter().enumerate() {
        let size = size + 1; // the comma
        if size > budget {
            return Err(crate::error::ClientError::InvalidInput {
                message: format!(
                    "secret {key} alone is {size} bytes, over the {} byte batch body limit",
                    limits.max_body_bytes
                ),
            });
        }
        if count == max_items || bytes + size > budget {
            ranges.push(start..index);
            (start, bytes, count) = (index, 0, 0);
        }
        bytes += size;
        count += 1;
    }
    if count > 0 {
        ranges.push(start..start + count);
    }
    Ok(ranges)
}

fn batch_items(items: &[NewSecret]) -> serde_json::Value {
    items.iter().map(NewSecret::batch_item).collect()
}

pub(crate) fn batch_create(version: ApiVersion, scope: &Scope, items: &[NewSecret]) -> Call {
    let mut call = batch_call(version, Method::POST);
    let mut body = scope.body(version);
    body.insert("secrets".into(), batch_items(items));
    call.body = json_body(body);
    call
}

pub(crate) fn batch_upsert(version: ApiVersion, scope: &Scope, items: &[NewSecret]) -> Call {
    let mut call = batch_call(version, Method::PATCH);
    let mut body = scope.body(version);
    body.insert("mode".into(), "upsert".into());
    body.insert("secrets".into(), batch_items(items));
    call.body = json_body(body);
    call.idempotent = true;
    call
}

pub(crate) fn batch_delete(version: ApiVersion, scope: &Scope, keys: &[String]) -> Call {
    let mut call = batch_call(version, Method::DELETE);
    let mut body = scope.body(version);
    let secrets: Vec<serde_json::Value> =
        keys.iter().map(|k| serde_json::json!({ "secretKey": k, "type": "shared" })).collect();
    body.insert("secrets".into(), secrets.into());
    call.body = json_body(body);
    call.idempotent = true;
    call
}

pub(crate) fn list_folders(
    project_id: &str,
    environment: &str,
    path: &str,
    recursive: bool,
) -> Call {
    let mut call = Call::new(Method::GET, &["v2", "folders"]);
    call.query = vec![
        ("projectId", project_id.to_owned()),
        ("environment", environment.to_owned()),
        ("path", path.to_owned()),
        ("recursive", flag(recursive)),
    ];
    call.idempotent = true;
    call
}

pub(crate) fn create_folder(project_id: &str, environment: &str, parent: &str, name: &str) -> Call {
    let mut call = Call::new(Method::POST, &["v2", "folders"]);
    call.body = Some(Zeroizing::new(
        serde_json::json!({
            "projectId": project_id, "environment": environment, "name": name, "path": parent,
        })
        .to_string(),
    ));
    call
}

pub(crate) fn delete_folder(project_id: &str, environment: &str, parent: &str, name: &str) -> Call {
    let mut call = Call::new(Method::DELETE, &["v2", "folders", name]);
    call.body = Some(Zeroizing::new(
        serde_json::json!({
            "projectId": project_id, "environment": environment, "path": parent, "forceDelete": false,
        })
        .to_string(),
    ));
    call.idempotent = true;
    call
}

pub(crate) fn list_projects(version: ApiVersion) -> Call {
    let mut call = match version {
        ApiVersion::V4 => {
            let mut c = Call::new(Method::GET, &["v1", "projects"]);
            c.query = vec![("includeRoles", flag(false)), ("type", "secret-manager".to_owned())];
            c
        }
        ApiVersion::V3 => Call::new(Method::GET, &["v1", "workspace"]),
    };
    call.idempotent = true;
    call
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(call: &Call) -> Vec<(String, String)> {
        call.query.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    fn body(call: &Call) -> serde_json::Value {
        serde_json::from_str(call.body.as_ref().unwrap()).unwrap()
    }

    #[test]
    fn list_sends_every_boolean_in_both_dialects() {
        let q = FolderQuery::new("p1", "dev", "/a").recursive(true).tags(["t1", "t2"]);
        let v4 = list(ApiVersion::V4, &q);
        assert_eq!(v4.route(), "/api/v4/secrets");
        let pairs = query(&v4);
        for (k, v) in [
            ("projectId", "p1"),
            ("viewSecretValue", "true"),
            ("expandSecretReferences", "true"),
            ("recursive", "true"),
            ("include_imports", "true"),
            ("includeImports", "true"),
            ("includePersonalOverrides", "false"),
            ("tagSlugs", "t1,t2"),
        ] {
            assert!(pairs.contains(&(k.to_owned(), v.to_owned())), "{k}={v} in {pairs:?}");
        }
        let v3 = list(ApiVersion::V3, &q.clone().include_imports(false));
        assert_eq!(v3.route(), "/api/v3/secrets/raw");
        let pairs = query(&v3);
        assert!(pairs.contains(&("workspaceId".into(), "p1".into())));
        assert!(pairs.contains(&("include_imports".into(), "false".into())));
        assert!(pairs.iter().all(|(k, _)| k != "projectId"));
        assert!(v4.idempotent && v3.idempotent);
    }

    #[test]
    fn writes_carry_json_bodies_and_idempotency() {
        let scope = Scope::new("p1", "dev", "/a");
        let c = create(ApiVersion::V4, &scope, &NewSecret::new("K", "v"));
        assert_eq!((c.method.clone(), c.route()), (Method::POST, "/api/v4/secrets/K".to_owned()));
        assert_eq!(
            body(&c),
            serde_json::json!({"projectId":"p1","environment":"dev","secretPath":"/a",
                "secretValue":"v","secretComment":"","tagIds":[],"skipMultilineEncoding":false,"type":"shared"})
        );
        assert!(!c.idempotent, "a create is never repeated blindly");
        let d = delete(ApiVersion::V3, &scope, "K", SecretType::Shared);
        assert_eq!(d.route(), "/api/v3/secrets/raw/K");
        assert_eq!(body(&d)["workspaceId"], "p1");
        assert_eq!(body(&d)["type"], "shared");
        assert!(d.idempotent);
        let rename = update(ApiVersion::V4, &scope, &SecretUpdate::rename("K", "K2"));
        assert_eq!(body(&rename)["newSecretName"], "K2");
        assert!(!rename.idempotent);
        assert!(update(ApiVersion::V4, &scope, &SecretUpdate::value("K", "v2")).idempotent);
        let up = batch_upsert(ApiVersion::V3, &scope, &[NewSecret::new("A", "1")]);
        assert_eq!(
            (up.method.clone(), up.route()),
            (Method::PATCH, "/api/v3/secrets/batch/raw".into())
        );
        assert_eq!(body(&up)["mode"], "upsert");
        assert_eq!(body(&up)["secrets"][0]["secretKey"], "A");
        let bd = batch_delete(ApiVersion::V4, &scope, &["A".into()]);
        assert_eq!(
            (bd.method.clone(), bd.route()),
            (Method::DELETE, "/api/v4/secrets/batch".into())
        );
        let g = get(
            ApiVersion::V4,
            &scope,
            "K",
            &GetOptions { version: Some(3), ..GetOptions::default() },
        );
        assert!(query(&g).contains(&("version".into(), "3".into())));
    }
}
