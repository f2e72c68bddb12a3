//! Apply: plans again (so a second apply finds everything `unchanged` and writes nothing), creates
//! missing target folders, then writes each folder's `create` and `update` keys with the chunked
//! batch upsert of ikit-client (v4 `mode: upsert`, v3 batch raw on older servers). Conflicts and
//! skips are left alone. A folder held by an approval policy is reported as pending approval.

use std::collections::{BTreeMap, BTreeSet};

use ikit_client::{BatchProgress, Client, ClientError, NewSecret, Scope};

use crate::MigrateError;
use crate::mapping::Mapped;
use crate::plan::{Action, Plan, comparable, decide, read_targets};

/// What an apply did, by target (`environment:/folder/KEY`). No values.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub written: Vec<String>,
    /// Written as a change request that waits for approval: not done yet.
    pub pending_approval: Vec<String>,
    pub folders_created: Vec<String>,
}

/// Applies `mapped`. `progress` is called with `environment:/folder` after every chunk the server
/// accepted. On an error, the error says how many keys of that folder were written before it and
/// the first key of the refused chunk.
pub async fn apply(
    client: &Client,
    project_id: &str,
    mapped: &Mapped,
    overwrite: bool,
    plan_key: &[u8],
    progress: &mut (dyn FnMut(&str, BatchProgress) + Send),
) -> Result<(Plan, ApplyReport), MigrateError> {
    let existing = read_targets(client, project_id, mapped).await?;
    let planned = decide(mapped, &comparable(&existing), overwrite, plan_key);
    let to_write: BTreeSet<&str> = planned
        .items
        .iter()
        .filter(|item| matches!(item.action, Action::Create | Action::Update))
        .map(|item| item.target.as_str())
        .collect();
    let mut by_folder: BTreeMap<(&str, &str), Vec<(String, NewSecret)>> = BTreeMap::new();
    for secret in &mapped.secrets {
        let target = secret.target.to_string();
        if to_write.contains(target.as_str()) {
            // An update keeps the comment, tags and metadata the key has: an upsert item replaces
            // them all, and the migration only brings a value.
            let item = match existing.get(&secret.target) {
                Some(current) => {
                    let mut item = NewSecret::from_secret(current);
                    item.value = secret.value.clone();
                    item
                }
                None => NewSecret::new(secret.target.key.clone(), secret.value.clone()),
            };
            by_folder
                .entry((&secret.target.environment, &secret.target.folder))
                .or_default()
                .push((target, item));
        }
    }
    let mut report = ApplyReport::default();
    for ((environment, folder), entries) in by_folder {
        let label = format!("{environment}:{folder}");
        ensure_folder(client, project_id, environment, folder, &mut report).await?;
        let (targets, items): (Vec<String>, Vec<NewSecret>) = entries.into_iter().unzip();
        let scope = Scope::new(project_id, environment, folder);
        let mut done = 0;
        let mut on_chunk = |step: BatchProgress| {
            done = step.done;
            progress(&label, step);
        };
        match client.batch_upsert_with(&scope, &items, &mut on_chunk).await {
            Ok(_) => report.written.extend(targets),
            Err(ClientError::PendingApproval { .. }) => {
                report.written.extend(targets[..done].iter().cloned());
                report.pending_approval.extend(targets[done..].iter().cloned());
            }
            Err(source) => {
                return Err(MigrateError::Write {
                    folder: label,
                    written: done,
                    total: targets.len(),
                    at_key: items.get(done).map(|item| item.key.clone()),
                    source: Box::new(source),
                });
            }
        }
    }
    Ok((planned, report))
}

/// Creates the missing segments of `folder`, parent first.
async fn ensure_folder(
    client: &Client,
    project_id: &str,
    environment: &str,
    folder: &str,
    report: &mut ApplyReport,
) -> Result<(), MigrateError> {
    let mut parent = "/".to_owned();
    for segment in folder.split('/').filter(|segment| !segment.is_empty()) {
        let path =
            if parent == "/" { format!("/{segment}") } else { format!("{parent}/{segment}") };
        let folder_error =
            |source| MigrateError::Folder { folder: format!("{environment}:{path}"), source };
        let existing = client
            .list_folders(project_id, environment, &parent, false)
            .await
            .map_err(folder_error)?;
        if !existing.iter().any(|known| known.name == segment) {
            client
                .create_folder(project_id, environment, &parent, segment)
                .await
                .map_err(folder_error)?;
            report.folders_created.push(format!("{environment}:{path}"));
        }
        parent = path;
    }
    Ok(())
}
