//! The baseline: at start, the state of every watched folder, so the first webhook after a
//! (re)start yields exact per-key events. A scope seen for the first time is recorded silently;
//! a scope with a baseline already has every folder queued for a refetch instead, so changes
//! made while no replica ran come out as events.

use std::collections::VecDeque;

use ikit_client::FolderQuery;
use ikit_common::folder_diff::{self, FolderState, ImportRef, ListingEntry};

use crate::error::WebhookError;
use crate::state::AppState;
use crate::store::FolderId;
use crate::worker::scope_key;

/// Every folder under `prefix` (itself included), walking the tree one level at a time.
async fn folders(
    state: &AppState,
    project: &str,
    env: &str,
    prefix: &str,
) -> Result<Vec<String>, WebhookError> {
    let mut out = Vec::new();
    let mut todo = VecDeque::from([prefix.to_owned()]);
    while let Some(path) = todo.pop_front() {
        for child in state.client.list_folders(project, env, &path, false).await? {
            let base = path.trim_end_matches('/');
            todo.push_back(format!("{base}/{}", child.name));
        }
        out.push(path);
    }
    Ok(out)
}

async fn environments(state: &AppState, project: &str) -> Result<Vec<String>, WebhookError> {
    if !state.settings.environments.is_empty() {
        return Ok(state.settings.environments.clone());
    }
    let projects = state.client.list_projects().await?;
    let found = projects.into_iter().find(|p| p.id == project).ok_or_else(|| {
        WebhookError::Config(format!("project {project} is not visible to this identity"))
    })?;
    Ok(found.environments.into_iter().map(|e| e.slug).collect())
}

/// Takes (or refreshes) the baseline of every watched scope; returns the folders seen.
pub async fn take(state: &AppState) -> Result<usize, WebhookError> {
    let project = state.settings.project_id().to_owned();
    let prefix = state.settings.path_prefix.clone();
    let mut seen = 0;
    for env in environments(state, &project).await? {
        let scope = scope_key(&project, &env, &prefix);
        let known = state.db.baseline_taken(&scope).await?;
        let paths = folders(state, &project, &env, &prefix).await?;
        seen += paths.len();
        for path in paths {
            let id = FolderId::new(&project, &env, &path);
            let now = state.clock.now_ms();
            if known {
                state.db.enqueue(&id, now, now).await?;
                continue;
            }
            let query = FolderQuery::new(&project, &env, &path)
                .include_imports(true)
                .expand_references(false);
            let listing = state.client.fetch_folder(&query).await?;
            let entries: Vec<ListingEntry<'_>> = listing
                .secrets
                .iter()
                .map(|s| ListingEntry {
                    key: &s.key,
                    secret_type: s.secret_type.as_str(),
                    version: s.version,
                    value: s.value.expose().as_bytes(),
                })
                .collect();
            let imports = listing
                .imports
                .iter()
                .map(|i| ImportRef { environment: i.environment.clone(), path: i.path.clone() })
                .collect();
            let (folder_state, _) = folder_diff::diff(
                &FolderState::default(),
                &entries,
                imports,
                state.settings.state_key.expose().as_bytes(),
            );
            state.db.insert_state_if_absent(&id, &folder_state, now).await?;
        }
        state.db.mark_baseline(&scope, state.clock.now_ms()).await?;
        tracing::info!(environment = env, prefix, refresh = known, "baseline taken");
    }
    state.wake.notify_waiters();
    Ok(seen)
}
