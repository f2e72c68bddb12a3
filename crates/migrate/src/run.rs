//! A recorded run: `apply` with its backup, journal, run file and audit record, and the
//! `rollback` and `status` built on them. Every file here holds keys, actions and outcomes, never
//! a value; all are written 0600 and atomically under the state directory (`.ikit/migrations/`).
//!
//! `journal.json` exists while an apply is under way. It names the run and its backup, so an
//! apply after a crash or Ctrl-C resumes that run: it keeps the backup taken before the first
//! write (a new one would capture the half-migrated state) and writes only what the plan still
//! finds to do. `<run>.json` is the run file, written when a run ends (successfully or not).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ikit_client::{BatchProgress, Client};
#[cfg(feature = "audit")]
pub use ikit_common::audit::AuditLog;
#[cfg(feature = "audit")]
use ikit_common::audit::{AuditEvent, Outcome};
use ikit_common::clock::Clock;
use serde::{Deserialize, Serialize};

use crate::MigrateError;
use crate::apply::{ApplyReport, apply};
use crate::backup::{self, Backup, Protection};
use crate::mapping::Mapped;
use crate::plan::{Action, Plan, target_folders};
use crate::rollback::{self, RollbackReport};

pub const JOURNAL_FILE: &str = "journal.json";

/// Built without the `audit` feature there is no audit log to record to: this type has no
/// values, so [`RunSettings::audit`] is always `None` and the run file is the run's only record.
#[cfg(not(feature = "audit"))]
pub enum AuditLog {}

/// How a run ended, as the audit log would record it.
#[cfg(not(feature = "audit"))]
#[derive(Clone, Copy)]
enum Outcome {
    Success,
    Failure,
}

/// Where runs are recorded, relative to the working directory.
pub const DEFAULT_STATE_DIR: &str = ".ikit/migrations";

/// The in-progress run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Journal {
    pub run_id: String,
    pub project_id: String,
    pub started_ms: i64,
    pub backup: PathBuf,
    /// The folders the backup holds (`environment:/folder`): a resumed run may write only there.
    pub folders: Vec<String>,
    /// Keys written so far, by `environment:/folder` (as the last chunk reported).
    pub written: BTreeMap<String, usize>,
    /// How many times this run was resumed.
    pub resumes: u32,
}

/// One key of a run file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunItem {
    pub target: String,
    pub action: Action,
    /// `written`, `pending_approval`, `unchanged`, `conflict`, `skip`, `not_written`.
    pub result: String,
}

/// The run file: what a run planned and what came of it. No values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunRecord {
    pub run_id: String,
    /// `apply` or `rollback`.
    pub command: String,
    pub project_id: String,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub backup: PathBuf,
    pub resumes: u32,
    /// `done`, `pending_approval`, `failed`, or for a rollback `restored` / `differs`.
    pub outcome: String,
    /// The error that ended a failed run (names keys and the server's reason, never a value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub folders_created: Vec<String>,
    pub items: Vec<RunItem>,
}

/// Where and how a run is recorded.
pub struct RunSettings<'a> {
    pub state_dir: PathBuf,
    /// Where the backup goes; `<state_dir>/<run>.backup.age` when unset.
    pub backup_out: Option<PathBuf>,
    /// What apply's backup is encrypted to (required by `apply_run`; a rollback takes none).
    pub protection: Option<&'a Protection>,
    pub audit: Option<&'a AuditLog>,
    /// Who runs it, for the audit log (the identity or user).
    pub actor: String,
    pub clock: &'a dyn Clock,
}

/// What `apply_run` did.
pub struct ApplyRun {
    pub record: RunRecord,
    pub plan: Plan,
    pub report: ApplyReport,
    /// True when it continued an interrupted run (and kept its backup).
    pub resumed: bool,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> MigrateError + '_ {
    move |source| MigrateError::Io { path: path.display().to_string(), source }
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), MigrateError> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        ikit_common::files::ensure_private_dir(dir).map_err(io_error(dir))?;
    }
    let text = serde_json::to_vec_pretty(value).map_err(|error| MigrateError::State {
        path: path.display().to_string(),
        reason: error.to_string(),
    })?;
    ikit_common::files::write_private(path, &text).map_err(io_error(path))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, MigrateError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io_error(path)(source)),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|error| MigrateError::State {
        path: path.display().to_string(),
        reason: error.to_string(),
    })
}

/// The in-progress run, if an apply was interrupted.
pub fn read_journal(state_dir: &Path) -> Result<Option<Journal>, MigrateError> {
    read_json(&state_dir.join(JOURNAL_FILE))
}

/// A run id from the clock (`20261127T174500Z-123`), unique within the state directory.
fn new_run_id(state_dir: &Path, now_ms: i64) -> String {
    let base = format!(
        "{}-{:03}",
        ikit_common::datetime::iso8601_basic(now_ms.div_euclid(1000)),
        now_ms.rem_euclid(1000)
    );
    let taken = |id: &str| {
        state_dir.join(format!("{id}.json")).exists()
            || state_dir.join(format!("{id}.backup.age")).exists()
    };
    if !taken(&base) {
        return base;
    }
    (2..).map(|n| format!("{base}-{n}")).find(|id| !taken(id)).unwrap_or(base)
}

/// Applies a migration as a recorded run: resumes the journal's run or takes the backup first,
/// journals progress after every chunk, then writes the run file and the audit record. When the
/// future is dropped mid-way (Ctrl-C, a crash), the journal stays and the next call resumes.
pub async fn apply_run(
    client: &Client,
    project_id: &str,
    mapped: &Mapped,
    overwrite: bool,
    plan_key: &[u8],
    settings: &RunSettings<'_>,
    progress: &mut (dyn FnMut(&str, BatchProgress) + Send),
) -> Result<ApplyRun, MigrateError> {
    let journal_path = settings.state_dir.join(JOURNAL_FILE);
    let (mut journal, resumed) = match read_journal(&settings.state_dir)? {
        Some(journal) if journal.project_id == project_id => {
            let uncovered: Vec<String> = target_folders(mapped)
                .into_iter()
                .map(|(environment, folder)| format!("{environment}:{folder}"))
                .filter(|label| !journal.folders.contains(label))
                .collect();
            if !uncovered.is_empty() {
                return Err(MigrateError::State {
                    path: journal_path.display().to_string(),
                    reason: format!(
                        "the interrupted run {} has no backup of {}; finish it with its mapping first",
                        journal.run_id,
                        uncovered.join(", ")
                    ),
                });
            }
            let resumes = journal.resumes + 1;
            tracing::info!(run = %journal.run_id, resumes, "resuming an interrupted migration run");
            (Journal { resumes, ..journal }, true)
        }
        Some(journal) => {
            return Err(MigrateError::State {
                path: journal_path.display().to_string(),
                reason: format!(
                    "an interrupted run ({}) of project {} waits; finish it there or remove the journal",
                    journal.run_id, journal.project_id
                ),
            });
        }
        None => {
            let started_ms = settings.clock.now_ms();
            let run_id = new_run_id(&settings.state_dir, started_ms);
            let backup_path = settings
                .backup_out
                .clone()
                .unwrap_or_else(|| settings.state_dir.join(format!("{run_id}.backup.age")));
            let backup = backup::take(
                client,
                project_id,
                &target_folders(mapped),
                started_ms,
                Some(run_id.clone()),
            )
            .await?;
            let protection = settings.protection.ok_or_else(|| MigrateError::Backup {
                reason: "no recipient or passphrase to encrypt the backup to".to_owned(),
            })?;
            backup.write(&backup_path, protection)?;
            tracing::info!(run = %run_id, folders = backup.folders.len(), "backup written before the first write");
            let journal = Journal {
                run_id,
                project_id: project_id.to_owned(),
                started_ms,
                backup: backup_path,
                folders: backup.folders.iter().map(|folder| folder.label()).collect(),
                written: BTreeMap::new(),
                resumes: 0,
            };
            (journal, false)
        }
    };
    write_json(&journal_path, &journal)?;

    let mut journal_error = None;
    let outcome = {
        let mut on_chunk = |folder: &str, step: BatchProgress| {
            journal.written.insert(folder.to_owned(), step.done);
            if let Err(error) = write_json(&journal_path, &journal) {
                journal_error.get_or_insert(error);
            }
            progress(folder, step);
        };
        apply(client, project_id, mapped, overwrite, plan_key, &mut on_chunk).await
    };
    if let Some(error) = journal_error {
        return Err(error);
    }
    let finished_ms = settings.clock.now_ms();
    let base = RunRecord {
        run_id: journal.run_id.clone(),
        command: "apply".to_owned(),
        project_id: project_id.to_owned(),
        started_ms: journal.started_ms,
        finished_ms,
        backup: journal.backup.clone(),
        resumes: journal.resumes,
        outcome: String::new(),
        error: None,
        folders_created: Vec::new(),
        items: Vec::new(),
    };
    match outcome {
        Ok((plan, report)) => {
            let record = RunRecord {
                outcome: if report.pending_approval.is_empty() {
                    "done"
                } else {
                    "pending_approval"
                }
                .to_owned(),
                folders_created: report.folders_created.clone(),
                items: run_items(&plan, &report),
                ..base
            };
            finish(settings, &record, Outcome::Success).await?;
            std::fs::remove_file(&journal_path).map_err(io_error(&journal_path))?;
            Ok(ApplyRun { record, plan, report, resumed })
        }
        Err(error) => {
            // The journal stays: the next apply resumes this run with its backup.
            let record =
                RunRecord { outcome: "failed".to_owned(), error: Some(error.to_string()), ..base };
            finish(settings, &record, Outcome::Failure).await?;
            Err(error)
        }
    }
}

fn run_items(plan: &Plan, report: &ApplyReport) -> Vec<RunItem> {
    plan.items
        .iter()
        .map(|item| {
            let result = match item.action {
                Action::Create | Action::Update => {
                    if report.written.contains(&item.target) {
                        "written"
                    } else if report.pending_approval.contains(&item.target) {
                        "pending_approval"
                    } else {
                        "not_written"
                    }
                }
                Action::Unchanged => "unchanged",
                Action::Conflict => "conflict",
                Action::Skip => "skip",
            };
            RunItem { target: item.target.clone(), action: item.action, result: result.to_owned() }
        })
        .collect()
}

/// Writes the run file and the audit record of a finished run.
async fn finish(
    settings: &RunSettings<'_>,
    record: &RunRecord,
    outcome: Outcome,
) -> Result<(), MigrateError> {
    write_json(&settings.state_dir.join(format!("{}.json", record.run_id)), record)?;
    if let Some(audit) = settings.audit {
        record_audit(audit, settings, record, outcome).await?;
    }
    Ok(())
}

#[cfg(not(feature = "audit"))]
async fn record_audit(
    audit: &AuditLog,
    _: &RunSettings<'_>,
    _: &RunRecord,
    _: Outcome,
) -> Result<(), MigrateError> {
    match *audit {}
}

/// The audit record of a finished run (its run file is already written).
#[cfg(feature = "audit")]
async fn record_audit(
    audit: &AuditLog,
    settings: &RunSettings<'_>,
    record: &RunRecord,
    outcome: Outcome,
) -> Result<(), MigrateError> {
    let count = |result: &str| record.items.iter().filter(|item| item.result == result).count();
    let event = AuditEvent::new(
        record.finished_ms,
        settings.actor.clone(),
        format!("migrate.{}", record.command),
        format!("{}:{}", record.project_id, record.run_id),
        outcome,
    )
    .with_details(serde_json::json!({
        "run": record.run_id,
        "outcome": record.outcome,
        "backup": record.backup.display().to_string(),
        "resumes": record.resumes,
        "written": count("written"),
        "pendingApproval": count("pending_approval"),
        "conflicts": count("conflict"),
        "foldersCreated": record.folders_created.len(),
        "error": record.error,
    }));
    audit.record(event).await?;
    Ok(())
}

/// Restores a backup as a recorded run (run file `<run>-rollback.json` and audit record).
/// The report's `differences` is empty when the state read back matches the backup.
pub async fn rollback_run(
    client: &Client,
    backup: &Backup,
    backup_path: &Path,
    settings: &RunSettings<'_>,
) -> Result<RollbackReport, MigrateError> {
    let started_ms = settings.clock.now_ms();
    let result = rollback::rollback(client, backup).await;
    let run_id = format!(
        "{}-rollback",
        backup.run_id.clone().unwrap_or_else(|| new_run_id(&settings.state_dir, started_ms))
    );
    let mut record = RunRecord {
        run_id,
        command: "rollback".to_owned(),
        project_id: backup.project_id.clone(),
        started_ms,
        finished_ms: settings.clock.now_ms(),
        backup: backup_path.to_path_buf(),
        resumes: 0,
        outcome: String::new(),
        error: None,
        folders_created: Vec::new(),
        items: Vec::new(),
    };
    match &result {
        Ok(report) => {
            record.outcome =
                if report.differences.is_empty() { "restored" } else { "differs" }.to_owned();
            record.items = report
                .done
                .items
                .iter()
                .map(|item| RunItem {
                    target: item.target.clone(),
                    action: Action::Update,
                    result: item.step.to_string(),
                })
                .collect();
            let outcome =
                if report.differences.is_empty() { Outcome::Success } else { Outcome::Failure };
            finish(settings, &record, outcome).await?;
        }
        Err(error) => {
            record.outcome = "failed".to_owned();
            record.error = Some(error.to_string());
            finish(settings, &record, Outcome::Failure).await?;
        }
    }
    result
}

/// The recorded runs, oldest first, and the interrupted one if any.
pub fn list_runs(state_dir: &Path) -> Result<(Vec<RunRecord>, Option<Journal>), MigrateError> {
    let mut runs = Vec::new();
    let entries = match std::fs::read_dir(state_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok((runs, None));
        }
        Err(source) => return Err(io_error(state_dir)(source)),
    };
    for entry in entries {
        let path = entry.map_err(io_error(state_dir))?.path();
        let is_run = path.extension().is_some_and(|ext| ext == "json")
            && path.file_name().is_some_and(|name| name != JOURNAL_FILE);
        if is_run && let Some(record) = read_json::<RunRecord>(&path)? {
            runs.push(record);
        }
    }
    runs.sort_by(|a, b| (a.started_ms, &a.run_id).cmp(&(b.started_ms, &b.run_id)));
    Ok((runs, read_journal(state_dir)?))
}
