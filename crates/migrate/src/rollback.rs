//! Rollback: puts every folder of a backup back exactly as it was. Keys that did not exist then
//! are deleted, changed ones set back (value, comment, tags, metadata, flag, reminder), deleted
//! ones re-created, and folders that did not exist are removed once empty. `decide` is pure;
//! `rollback` writes (batch upsert, batch delete) and then reads everything again to verify.

use std::fmt;

use ikit_client::{Client, ClientError, NewSecret, Scope};

use crate::MigrateError;
use crate::backup::{self, Backup, FolderState, SavedSecret, split_folder};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// The key did not exist in the backup: delete it.
    Delete,
    /// The key differs from the backup: set it back.
    Restore,
    /// The key was deleted since: create it again.
    Recreate,
    /// The folder did not exist in the backup and is empty after the rollback: remove it.
    RemoveFolder,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` so that `{:<9}` in the plan's columns applies
        f.pad(match self {
            Step::Delete => "delete",
            Step::Restore => "restore",
            Step::Recreate => "recreate",
            Step::RemoveFolder => "remove-folder",
        })
    }
}

/// One line of a rollback plan: a step and its target (`environment:/folder/KEY`, or the folder).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RollbackItem {
    pub step: Step,
    pub target: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RollbackPlan {
    pub items: Vec<RollbackItem>,
}

impl RollbackPlan {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// One line per step; no values.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for item in &self.items {
            out.push_str(&format!("{:<13}  {}\n", item.step, item.target));
        }
        out
    }
}

fn key_target(state: &FolderState, key: &str) -> String {
    let separator = if state.folder == "/" { "" } else { "/" };
    format!("{}:{}{separator}{key}", state.environment, state.folder)
}

/// Pure: the steps that turn `current` (same folders, read now) into `saved`.
pub fn decide_folder(saved: &FolderState, current: &FolderState) -> Vec<RollbackItem> {
    let mut items = Vec::new();
    for now in &current.secrets {
        if !saved.secrets.iter().any(|then| then.key == now.key) {
            items.push(RollbackItem { step: Step::Delete, target: key_target(saved, &now.key) });
        }
    }
    for then in &saved.secrets {
        match current.secrets.iter().find(|now| now.key == then.key) {
            None => items
                .push(RollbackItem { step: Step::Recreate, target: key_target(saved, &then.key) }),
            Some(now) if !now.same_as(then) => items
                .push(RollbackItem { step: Step::Restore, target: key_target(saved, &then.key) }),
            Some(_) => {}
        }
    }
    if !saved.existed && current.existed {
        items.push(RollbackItem { step: Step::RemoveFolder, target: saved.label() });
    }
    items
}

/// Reads the backup's folders as they are now.
async fn current_state(client: &Client, backup: &Backup) -> Result<Vec<FolderState>, MigrateError> {
    let mut out = Vec::with_capacity(backup.folders.len());
    for saved in &backup.folders {
        out.push(
            backup::read_folder(client, &backup.project_id, &saved.environment, &saved.folder)
                .await?,
        );
    }
    Ok(out)
}

/// What a rollback would do, read from Infisical now. Writes nothing.
pub async fn plan(client: &Client, backup: &Backup) -> Result<RollbackPlan, MigrateError> {
    let current = current_state(client, backup).await?;
    let items = backup
        .folders
        .iter()
        .zip(&current)
        .flat_map(|(saved, now)| decide_folder(saved, now))
        .collect();
    Ok(RollbackPlan { items })
}

/// What a rollback did, and what still differs after it (empty when the state matches the backup).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollbackReport {
    pub done: RollbackPlan,
    /// Targets that still differ from the backup after the rollback, read back.
    pub differences: RollbackPlan,
}

/// Restores every folder of the backup, then reads them again and reports what still differs.
pub async fn rollback(client: &Client, backup: &Backup) -> Result<RollbackReport, MigrateError> {
    let current = current_state(client, backup).await?;
    let mut done = RollbackPlan::default();
    // Deepest folders first, so a parent created by the migration is empty when its turn comes.
    let mut order: Vec<usize> = (0..backup.folders.len()).collect();
    order.sort_by_key(|&n| std::cmp::Reverse(backup.folders[n].folder.matches('/').count()));
    for n in order {
        let (saved, now) = (&backup.folders[n], &current[n]);
        let steps = decide_folder(saved, now);
        if steps.is_empty() {
            continue;
        }
        restore_folder(client, &backup.project_id, saved, now).await?;
        done.items.extend(steps);
    }
    let differences = plan(client, backup).await?;
    Ok(RollbackReport { done, differences })
}

async fn restore_folder(
    client: &Client,
    project_id: &str,
    saved: &FolderState,
    now: &FolderState,
) -> Result<(), MigrateError> {
    let label = saved.label();
    let scope = Scope::new(project_id, &saved.environment, &saved.folder);
    let writes: Vec<NewSecret> = saved
        .secrets
        .iter()
        .filter(|then| match now.secrets.iter().find(|current| current.key == then.key) {
            None => true,
            Some(current) => !current.same_as(then),
        })
        .map(SavedSecret::to_new_secret)
        .collect();
    if !writes.is_empty() {
        let mut done = 0;
        let result = client
            .batch_upsert_with(&scope, &writes, &mut |step: ikit_client::BatchProgress| {
                done = step.done
            })
            .await;
        result.map_err(|source| MigrateError::Write {
            folder: label.clone(),
            written: done,
            total: writes.len(),
            at_key: writes.get(done).map(|item| item.key.clone()),
            source: Box::new(source),
        })?;
    }
    let deletes: Vec<String> = now
        .secrets
        .iter()
        .filter(|current| !saved.secrets.iter().any(|then| then.key == current.key))
        .map(|current| current.key.clone())
        .collect();
    if !deletes.is_empty() {
        client.batch_delete(&scope, &deletes).await.map_err(|source| MigrateError::Delete {
            folder: label.clone(),
            keys: deletes.clone(),
            source: Box::new(source),
        })?;
    }
    if !saved.existed && now.existed {
        // the folder and the ancestors created with it, deepest first, while each is empty
        let mut path = saved.folder.clone();
        while path != saved.existing_ancestor {
            let Some((parent, name)) = split_folder(&path) else { break };
            let removed = remove_if_empty(client, project_id, &saved.environment, &parent, &name)
                .await
                .map_err(|source| MigrateError::Folder {
                    folder: format!("{}:{path}", saved.environment),
                    source,
                })?;
            if !removed {
                break;
            }
            path = parent;
        }
    }
    Ok(())
}

/// Removes a folder a migration created, only when it holds no subfolder and no secret: anything
/// someone put there since is left alone (and shows as a difference when it is a target folder).
async fn remove_if_empty(
    client: &Client,
    project_id: &str,
    environment: &str,
    parent: &str,
    name: &str,
) -> Result<bool, ClientError> {
    let path = if parent == "/" { format!("/{name}") } else { format!("{parent}/{name}") };
    if !client.list_folders(project_id, environment, &path, false).await?.is_empty() {
        return Ok(false);
    }
    let query = ikit_client::FolderQuery::new(project_id, environment, &path)
        .include_imports(false)
        .expand_references(false);
    if !client.list_secrets(&query).await?.secrets.is_empty() {
        return Ok(false);
    }
    client.delete_folder(project_id, environment, parent, name).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ikit_common::secret::SecretValue;

    fn secret(key: &str, value: &str, comment: &str) -> SavedSecret {
        SavedSecret {
            key: key.to_owned(),
            value: SecretValue::new(value),
            comment: comment.to_owned(),
            tags: Vec::new(),
            metadata: Vec::new(),
            skip_multiline_encoding: false,
            reminder_note: None,
            reminder_repeat_days: None,
        }
    }

    fn folder(existed: bool, secrets: Vec<SavedSecret>) -> FolderState {
        FolderState {
            environment: "dev".to_owned(),
            folder: "/db".to_owned(),
            existed,
            existing_ancestor: if existed { "/db".to_owned() } else { "/".to_owned() },
            secrets,
        }
    }

    #[test]
    fn each_difference_gets_its_step() {
        let saved = folder(
            true,
            vec![secret("SAME", "1", ""), secret("CHANGED", "old", ""), secret("GONE", "g", "")],
        );
        let now = folder(
            true,
            vec![secret("SAME", "1", ""), secret("CHANGED", "new", ""), secret("ADDED", "a", "")],
        );
        let steps: Vec<(Step, String)> =
            decide_folder(&saved, &now).into_iter().map(|i| (i.step, i.target)).collect();
        assert_eq!(
            steps,
            [
                (Step::Delete, "dev:/db/ADDED".to_owned()),
                (Step::Restore, "dev:/db/CHANGED".to_owned()),
                (Step::Recreate, "dev:/db/GONE".to_owned()),
            ]
        );
    }

    #[test]
    fn a_comment_alone_is_a_difference_and_a_created_folder_is_removed() {
        let saved = folder(true, vec![secret("K", "v", "before")]);
        let now = folder(true, vec![secret("K", "v", "after")]);
        assert_eq!(decide_folder(&saved, &now)[0].step, Step::Restore);
        let steps = decide_folder(&folder(false, vec![]), &folder(true, vec![secret("N", "", "")]));
        let steps: Vec<Step> = steps.into_iter().map(|item| item.step).collect();
        assert_eq!(steps, [Step::Delete, Step::RemoveFolder]);
        assert!(decide_folder(&saved, &saved.clone()).is_empty());
    }
}
