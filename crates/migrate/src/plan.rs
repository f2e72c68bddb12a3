//! The plan: per mapped key `create | update | unchanged | conflict`, per skipped key `skip`, each
//! with its target path. Values never appear: equality is decided in memory (constant time), and
//! the plan file carries a keyed HMAC of each source value so `apply` can tell a source that
//! changed since the plan, without the file revealing or letting anyone confirm a guessed value.
//!
//! `decide` is pure; `plan` reads the target folders through ikit-client (raw values: no import
//! merging, no reference expansion, so `${REF}` compares as written).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use hmac::{Hmac, Mac};
use ikit_client::{Client, ClientError, FolderQuery, Secret, SecretType};
use ikit_common::secret::SecretValue;
use serde::Serialize;
use sha2::Sha256;

use crate::MigrateError;
use crate::mapping::{Mapped, MappedSecret, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Unchanged,
    /// The target holds a different value and the mapping does not allow overwriting it, or the
    /// server hides the value so equality cannot be decided.
    Conflict,
    Skip,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` so that `{:<9}` in the plan's columns applies
        f.pad(match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Unchanged => "unchanged",
            Action::Conflict => "conflict",
            Action::Skip => "skip",
        })
    }
}

/// One line of the plan. Holds no value; `value_hmac` is HMAC-SHA256 under the plan key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanItem {
    pub action: Action,
    /// `environment:/folder/KEY`; for a skipped key, the source key.
    pub target: String,
    pub origin: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_hmac: Option<String>,
    /// Why a key is a conflict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub items: Vec<PlanItem>,
}

/// What the target holds for one key, as far as the plan needs it.
pub enum Existing {
    Value(SecretValue),
    Hidden,
}

impl Plan {
    /// True when an apply would write or a conflict needs a decision (the CLI exits 2).
    pub fn has_work(&self) -> bool {
        self.items
            .iter()
            .any(|item| matches!(item.action, Action::Create | Action::Update | Action::Conflict))
    }

    pub fn count(&self, action: Action) -> usize {
        self.items.iter().filter(|item| item.action == action).count()
    }

    /// One line per key: action, target, origin (and why, for a conflict). No values, no HMACs.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for item in &self.items {
            out.push_str(&format!("{:<9}  {}  ({})", item.action, item.target, item.origin));
            if let Some(reason) = item.reason {
                out.push_str(&format!(": {reason}"));
            }
            out.push('\n');
        }
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// Keyed HMAC of a value, hex. The key is the plan key (random, kept beside the plan, 0600).
pub fn value_hmac(plan_key: &[u8], value: &SecretValue) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(plan_key).expect("hmac accepts any key");
    mac.update(value.expose().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Pure: decides each key's action from what the target folders hold.
pub fn decide(
    mapped: &Mapped,
    existing: &BTreeMap<Target, Existing>,
    overwrite: bool,
    plan_key: &[u8],
) -> Plan {
    let mut items: Vec<PlanItem> = mapped
        .secrets
        .iter()
        .map(|secret| {
            let (action, reason) = action_for(secret, existing.get(&secret.target), overwrite);
            PlanItem {
                action,
                target: secret.target.to_string(),
                origin: secret.origin.clone(),
                value_hmac: Some(value_hmac(plan_key, &secret.value)),
                reason,
            }
        })
        .collect();
    items.extend(mapped.skipped.iter().map(|skipped| PlanItem {
        action: Action::Skip,
        target: skipped.key.clone(),
        origin: skipped.origin.clone(),
        value_hmac: None,
        reason: None,
    }));
    Plan { items }
}

fn action_for(
    secret: &MappedSecret,
    existing: Option<&Existing>,
    overwrite: bool,
) -> (Action, Option<&'static str>) {
    if !server_keeps(secret.value.expose()) {
        return (Action::Conflict, Some(TRIMMED));
    }
    match existing {
        None => (Action::Create, None),
        Some(Existing::Hidden) => (Action::Conflict, Some("the server hides the current value")),
        Some(Existing::Value(current)) if current.verify(secret.value.expose()) => {
            (Action::Unchanged, None)
        }
        Some(Existing::Value(_)) if overwrite => (Action::Update, None),
        Some(Existing::Value(_)) => {
            (Action::Conflict, Some("a different value exists and the mapping does not overwrite"))
        }
    }
}

const TRIMMED: &str = "the server trims surrounding white space from this value";

/// Whether Infisical stores `value` unchanged: it trims every written value (JavaScript's
/// `trim`), keeping one trailing `\n` when the value ended in one (spec section on value trimming).
/// A value it would change cannot migrate exactly, so it is a conflict, never a silent rewrite.
pub fn server_keeps(value: &str) -> bool {
    let is_js_space = |c: char| (c.is_whitespace() && c != '\u{85}') || c == '\u{feff}';
    let trimmed = value.trim_matches(is_js_space);
    let kept_tail = if value.ends_with('\n') { "\n" } else { "" };
    value.strip_suffix(kept_tail) == Some(trimmed)
}

/// The target folders of a mapping, `(environment, folder)`.
pub fn target_folders(mapped: &Mapped) -> BTreeSet<(String, String)> {
    mapped
        .secrets
        .iter()
        .map(|secret| (secret.target.environment.clone(), secret.target.folder.clone()))
        .collect()
}

/// Reads every target folder once (raw: no imports, references as written; a missing folder
/// counts as empty, apply creates it): each shared secret there, by target.
pub(crate) async fn read_targets(
    client: &Client,
    project_id: &str,
    mapped: &Mapped,
) -> Result<BTreeMap<Target, Secret>, MigrateError> {
    let mut existing = BTreeMap::new();
    for (environment, folder) in target_folders(mapped) {
        let query = FolderQuery::new(project_id, &environment, &folder)
            .include_imports(false)
            .expand_references(false);
        let listing = match client.list_secrets(&query).await {
            Ok(listing) => listing.secrets,
            Err(ClientError::NotFound { .. }) => Vec::new(),
            Err(source) => {
                return Err(MigrateError::Read {
                    folder: format!("{environment}:{folder}"),
                    source,
                });
            }
        };
        for secret in listing {
            if secret.secret_type != SecretType::Shared {
                continue;
            }
            let target = Target {
                environment: environment.clone(),
                folder: folder.clone(),
                key: secret.key.clone(),
            };
            existing.insert(target, secret);
        }
    }
    Ok(existing)
}

/// What the plan needs of each existing secret.
pub(crate) fn comparable(existing: &BTreeMap<Target, Secret>) -> BTreeMap<Target, Existing> {
    existing
        .iter()
        .map(|(target, secret)| {
            let state = if secret.value_hidden {
                Existing::Hidden
            } else {
                Existing::Value(secret.value.clone())
            };
            (target.clone(), state)
        })
        .collect()
}

/// Reads every target folder once and decides.
pub async fn plan(
    client: &Client,
    project_id: &str,
    mapped: &Mapped,
    overwrite: bool,
    plan_key: &[u8],
) -> Result<Plan, MigrateError> {
    let existing = read_targets(client, project_id, mapped).await?;
    Ok(decide(mapped, &comparable(&existing), overwrite, plan_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_the_server_would_trim_are_recognised() {
        for kept in ["", "v", "a b", "line\n", "multi\nline\n", "\n", "é"] {
            assert!(server_keeps(kept), "{kept:?}");
        }
        for changed in [" v", "v ", "v\n\n", "\tv", "v\r\n", "\u{a0}v", "\u{feff}v", "  "] {
            assert!(!server_keeps(changed), "{changed:?}");
        }
    }
}
