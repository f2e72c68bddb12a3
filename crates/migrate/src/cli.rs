//! `ikit migrate ...`: the clap arguments and the runner. The `ikit` binary resolves the server,
//! login and project (its context) and hands a client here with the env map, the working
//! directory, a clock and the output streams; everything else (sources, mapping, files under
//! `.ikit/`, exit codes) is decided here so it is tested without spawning a process.
//!
//! Exit codes: 0 nothing left to do; 1 a failure (an error, a failed check, a rollback that
//! still differs); 2 something to do (`plan`, `status` drift, `rollback` without `--yes`);
//! 3 an apply that left changes pending approval.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use ikit_client::{BatchProgress, Client};
#[cfg(feature = "audit")]
use ikit_common::audit::AuditOptions;
use ikit_common::clock::Clock;
use zeroize::Zeroizing;

use crate::MigrateError;
use crate::backup::{self, Backup, Protection, Unlock};
use crate::dotenv::Interpolation;
use crate::mapping::{Mapped, Mapping};
use crate::plan::{plan, target_folders};
use crate::run::{self, AuditLog, RunSettings};
use crate::{prereq, rollback, source};

/// The environment variable holding a backup passphrase (when no recipient or identity is given).
pub const PASSPHRASE_VAR: &str = "IKIT_BACKUP_PASSPHRASE";

/// Where apply and rollback record their runs when the audit log is compiled in.
#[cfg(feature = "audit")]
pub const DEFAULT_AUDIT_DB: &str = "sqlite://.ikit/audit.db";

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    #[command(subcommand)]
    pub command: MigrateCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum MigrateCommand {
    /// Check server, login, project, environments and target folders; writes nothing
    CheckPrerequisites(SourceArgs),
    /// Show what apply would do per key (exit 2 when there is something to do)
    Plan(PlanArgs),
    /// Back up the target folders, then write the plan in batches
    Apply(ApplyArgs),
    /// The recorded runs and the current drift between the sources and Infisical
    Status(StatusArgs),
    /// Save the target folders' exact state, encrypted (age format)
    Backup(BackupArgs),
    /// Restore the state saved in a backup file
    Rollback(RollbackArgs),
}

/// Where the secrets come from and where they go.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// The mapping file (TOML)
    #[arg(long, short = 'm', value_name = "FILE")]
    pub mapping: PathBuf,
    /// Source files: `.json`, `.yaml` / `.yml`, anything else is read as a `.env` file
    #[arg(value_name = "SOURCE")]
    pub sources: Vec<PathBuf>,
    /// Also read the process environment (filtered by --prefix)
    #[arg(long)]
    pub from_env: bool,
    /// Only variables starting with this prefix (with --from-env)
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Remove the prefix from the names (with --from-env)
    #[arg(long)]
    pub strip_prefix: bool,
    /// Expand `${VAR}` in unquoted and double-quoted `.env` values (off: kept literally)
    #[arg(long)]
    pub interpolate: bool,
    /// Where runs, journals and backups are kept
    #[arg(long, value_name = "DIR", default_value = run::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The plan as JSON (values as keyed HMACs, never in clear)
    #[arg(long)]
    pub json: bool,
}

/// What a backup is encrypted to; a passphrase comes from IKIT_BACKUP_PASSPHRASE.
#[derive(Debug, Clone, clap::Args)]
pub struct ProtectArgs {
    /// An age recipient (`age1...`) to encrypt the backup to
    #[arg(long, value_name = "RECIPIENT")]
    pub recipient: Option<String>,
    /// A file of age recipients, one per line (the first is used)
    #[arg(long, value_name = "FILE", conflicts_with = "recipient")]
    pub recipient_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub protect: ProtectArgs,
    /// Only plan (the same as `plan`)
    #[arg(long)]
    pub dry_run: bool,
    /// Where the backup taken first goes (default: <state-dir>/<run>.backup.age)
    #[arg(long, value_name = "FILE")]
    pub backup_out: Option<PathBuf>,
    /// The audit log database (postgres:// or sqlite:); refused by a build without the audit log
    #[cfg_attr(feature = "audit", arg(long, value_name = "URL", default_value = DEFAULT_AUDIT_DB))]
    #[cfg_attr(not(feature = "audit"), arg(long, value_name = "URL"))]
    pub audit_db: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// With a mapping (and sources), also show the drift
    #[arg(long, short = 'm', value_name = "FILE")]
    pub mapping: Option<PathBuf>,
    #[arg(value_name = "SOURCE")]
    pub sources: Vec<PathBuf>,
    #[arg(long)]
    pub from_env: bool,
    #[arg(long, default_value = "")]
    pub prefix: String,
    #[arg(long)]
    pub strip_prefix: bool,
    #[arg(long, value_name = "DIR", default_value = run::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub protect: ProtectArgs,
    /// The backup file (default: <state-dir>/backup-<time>.age)
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The backup file to restore
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Restore without stopping after the plan
    #[arg(long)]
    pub yes: bool,
    /// An age identity file that opens the backup (else IKIT_BACKUP_PASSPHRASE)
    #[arg(long, short = 'i', value_name = "FILE")]
    pub identity: Option<PathBuf>,
    #[arg(long, value_name = "DIR", default_value = run::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// The audit log database (postgres:// or sqlite:); refused by a build without the audit log
    #[cfg_attr(feature = "audit", arg(long, value_name = "URL", default_value = DEFAULT_AUDIT_DB))]
    #[cfg_attr(not(feature = "audit"), arg(long, value_name = "URL"))]
    pub audit_db: Option<String>,
}

/// What the runner needs from the binary.
pub struct Invocation<'a> {
    pub client: &'a Client,
    pub project_id: &'a str,
    /// The process environment (read once by the binary).
    pub env: &'a BTreeMap<String, String>,
    /// Relative paths are resolved against it.
    pub cwd: &'a Path,
    pub clock: &'a dyn Clock,
    /// Who runs it, for the audit log.
    pub actor: String,
    pub stdout: &'a mut (dyn Write + Send),
    pub stderr: &'a mut (dyn Write + Send),
    /// Draw progress bars (stderr is a terminal) instead of plain progress lines.
    pub tty: bool,
}

impl Invocation<'_> {
    fn path(&self, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_path_buf() } else { self.cwd.join(path) }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MigrateError + '_ {
    move |source| MigrateError::Io { path: path.display().to_string(), source }
}

fn out(stream: &mut (dyn Write + Send), text: &str) -> Result<(), MigrateError> {
    stream
        .write_all(text.as_bytes())
        .map_err(|source| MigrateError::Io { path: "output".to_owned(), source })
}

/// Runs one `ikit migrate` subcommand and returns its exit code.
pub async fn run(args: &MigrateArgs, mut inv: Invocation<'_>) -> Result<u8, MigrateError> {
    match &args.command {
        MigrateCommand::CheckPrerequisites(source) => {
            let mapped = read_sources(source, &inv)?;
            let report = prereq::check(inv.client, inv.project_id, &target_folders(&mapped)).await;
            out(inv.stdout, &report.render())?;
            Ok(if report.passed() { 0 } else { 1 })
        }
        MigrateCommand::Plan(plan_args) => {
            run_plan(&plan_args.source, plan_args.json, &mut inv).await
        }
        MigrateCommand::Apply(apply) if apply.dry_run => {
            run_plan(&apply.source, false, &mut inv).await
        }
        MigrateCommand::Apply(apply) => run_apply(apply, &mut inv).await,
        MigrateCommand::Status(status) => run_status(status, &mut inv).await,
        MigrateCommand::Backup(backup) => {
            let mapped = read_sources(&backup.source, &inv)?;
            let protection = protection(&backup.protect, &inv)?;
            let now = inv.clock.now_ms();
            let path = match &backup.out {
                Some(path) => inv.path(path),
                None => inv.path(&backup.source.state_dir).join(format!(
                    "backup-{}.age",
                    ikit_common::datetime::iso8601_basic(now.div_euclid(1000))
                )),
            };
            let taken =
                backup::take(inv.client, inv.project_id, &target_folders(&mapped), now, None)
                    .await?;
            taken.write(&path, &protection)?;
            let keys: usize = taken.folders.iter().map(|folder| folder.secrets.len()).sum();
            out(
                inv.stdout,
                &format!(
                    "backup of {} folders ({keys} keys) written to {}\n",
                    taken.folders.len(),
                    path.display()
                ),
            )?;
            Ok(0)
        }
        MigrateCommand::Rollback(rollback_args) => run_rollback(rollback_args, &mut inv).await,
    }
}

/// Reads every source and places it with the mapping.
fn read_sources(args: &SourceArgs, inv: &Invocation<'_>) -> Result<Mapped, MigrateError> {
    let mapping_path = inv.path(&args.mapping);
    let text = std::fs::read_to_string(&mapping_path).map_err(io(&mapping_path))?;
    let mapping = Mapping::from_toml(&args.mapping.display().to_string(), &text)?;
    let interpolation =
        if args.interpolate { Interpolation::On(inv.env) } else { Interpolation::Off };
    let mut secrets = Vec::new();
    for file in &args.sources {
        let path = inv.path(file);
        let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(io(&path))?);
        let name = file.display().to_string();
        let extension = file.extension().and_then(|ext| ext.to_str()).unwrap_or_default();
        secrets.extend(match extension {
            "json" => source::from_json(&name, &text)?,
            "yaml" | "yml" => source::from_yaml(&name, &text)?,
            _ => source::from_dotenv(&name, &text, interpolation)?,
        });
    }
    if args.from_env {
        secrets.extend(source::from_env(inv.env, &args.prefix, args.strip_prefix));
    }
    mapping.apply(secrets)
}

/// The plan key (random, 32 bytes, 0600 beside the runs): it keys the HMACs of the plan file,
/// so a plan file cannot be used to confirm a guessed value without it.
fn plan_key(state_dir: &Path) -> Result<Zeroizing<Vec<u8>>, MigrateError> {
    let path = state_dir.join("plan.key");
    match std::fs::read(&path) {
        Ok(key) if key.len() == 32 => return Ok(Zeroizing::new(key)),
        Ok(_) => {
            return Err(MigrateError::State {
                path: path.display().to_string(),
                reason: "the plan key is not 32 bytes".to_owned(),
            });
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(io(&path)(source)),
    }
    let key = Zeroizing::new(rand::random::<[u8; 32]>().to_vec());
    ikit_common::files::ensure_private_dir(state_dir).map_err(io(state_dir))?;
    ikit_common::files::write_private(&path, &key).map_err(io(&path))?;
    Ok(key)
}

fn overwrite(args: &SourceArgs, inv: &Invocation<'_>) -> Result<bool, MigrateError> {
    let path = inv.path(&args.mapping);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    Ok(Mapping::from_toml(&args.mapping.display().to_string(), &text)?.defaults.overwrite)
}

async fn run_plan(
    args: &SourceArgs,
    json: bool,
    inv: &mut Invocation<'_>,
) -> Result<u8, MigrateError> {
    let mapped = read_sources(args, inv)?;
    let key = plan_key(&inv.path(&args.state_dir))?;
    let planned = plan(inv.client, inv.project_id, &mapped, overwrite(args, inv)?, &key).await?;
    if json {
        out(inv.stdout, &format!("{}\n", planned.to_json()))?;
    } else {
        out(inv.stdout, &planned.render())?;
        out(inv.stdout, &summary(&planned))?;
    }
    Ok(if planned.has_work() { 2 } else { 0 })
}

fn summary(planned: &crate::plan::Plan) -> String {
    use crate::plan::Action::*;
    format!(
        "{} to create, {} to update, {} unchanged, {} conflicts, {} skipped\n",
        planned.count(Create),
        planned.count(Update),
        planned.count(Unchanged),
        planned.count(Conflict),
        planned.count(Skip)
    )
}

/// The backup protection: a recipient, a recipient file, or the passphrase variable.
fn protection(args: &ProtectArgs, inv: &Invocation<'_>) -> Result<Protection, MigrateError> {
    if let Some(recipient) = &args.recipient {
        return Protection::recipient(recipient);
    }
    if let Some(file) = &args.recipient_file {
        let path = inv.path(file);
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let first = text
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty() && !line.starts_with('#'))
            .unwrap_or_default();
        return Protection::recipient(first);
    }
    match inv.env.get(PASSPHRASE_VAR).filter(|value| !value.is_empty()) {
        Some(passphrase) => Ok(Protection::Passphrase {
            passphrase: Zeroizing::new(passphrase.clone()),
            work_factor: None,
        }),
        None => Err(MigrateError::Backup {
            reason: format!(
                "no way to encrypt the backup: pass --recipient or --recipient-file, or set {PASSPHRASE_VAR}"
            ),
        }),
    }
}

#[cfg(feature = "audit")]
fn audit_log(
    url: Option<&str>,
    state_dir: &Path,
    inv: &mut Invocation<'_>,
) -> Result<Option<AuditLog>, MigrateError> {
    let Some(url) = url else { return Ok(None) };
    // a relative SQLite path is relative to the working directory given, not the process's
    let url = match url.strip_prefix("sqlite://") {
        Some(file) if !file.starts_with('/') => {
            format!("sqlite://{}", inv.cwd.join(file).display())
        }
        _ => url.to_owned(),
    };
    Ok(Some(AuditLog::connect(&url, AuditOptions::new(state_dir.join("audit-spool")))?))
}

#[cfg(not(feature = "audit"))]
fn audit_log(
    url: Option<&str>,
    state_dir: &Path,
    inv: &mut Invocation<'_>,
) -> Result<Option<AuditLog>, MigrateError> {
    no_audit_log(url, state_dir, inv.stderr)?;
    Ok(None)
}

/// A build without the audit log (feature `audit`) refuses an audit database asked for, before
/// anything is written, rather than dropping the record; without one it says on stderr that the
/// run file is the run's only record. Compiled in every build so the tests cover it.
#[cfg_attr(feature = "audit", allow(dead_code))]
fn no_audit_log(
    url: Option<&str>,
    state_dir: &Path,
    stderr: &mut (dyn Write + Send),
) -> Result<(), MigrateError> {
    if let Some(url) = url {
        return Err(MigrateError::AuditNotBuilt { url: ikit_common::config::redact_url(url) });
    }
    out(
        stderr,
        &format!(
            "warning: no audit log in this build (cargo feature `audit`): the run file under {} \
             is the only record of this run\n",
            state_dir.display()
        ),
    )
}

/// Progress after every chunk: a bar per folder on a terminal, a plain line otherwise.
struct Progress {
    tty: bool,
    bars: BTreeMap<String, indicatif::ProgressBar>,
    lines: Vec<String>,
}

impl Progress {
    fn step(&mut self, folder: &str, step: BatchProgress) {
        if self.tty {
            let bar = self.bars.entry(folder.to_owned()).or_insert_with(|| {
                let bar = indicatif::ProgressBar::new(step.total as u64);
                if let Ok(style) =
                    indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} keys")
                {
                    bar.set_style(style);
                }
                bar.set_message(folder.to_owned());
                bar
            });
            bar.set_position(step.done as u64);
            if step.done == step.total {
                bar.finish();
            }
        } else {
            self.lines.push(format!(
                "{folder}: {}/{} keys written (chunk {}/{})\n",
                step.done, step.total, step.chunk, step.chunks
            ));
        }
    }
}

async fn run_apply(args: &ApplyArgs, inv: &mut Invocation<'_>) -> Result<u8, MigrateError> {
    let mapped = read_sources(&args.source, inv)?;
    let state_dir = inv.path(&args.source.state_dir);
    // first: a refused audit database must stop the run before any file is written
    let audit = audit_log(args.audit_db.as_deref(), &state_dir, inv)?;
    let key = plan_key(&state_dir)?;
    let protection = protection(&args.protect, inv)?;
    let settings = RunSettings {
        state_dir: state_dir.clone(),
        backup_out: args.backup_out.as_ref().map(|path| inv.path(path)),
        protection: Some(&protection),
        audit: audit.as_ref(),
        actor: inv.actor.clone(),
        clock: inv.clock,
    };
    let progress =
        std::sync::Mutex::new(Progress { tty: inv.tty, bars: BTreeMap::new(), lines: Vec::new() });
    let mut on_chunk = |folder: &str, step: BatchProgress| {
        if let Ok(mut progress) = progress.lock() {
            progress.step(folder, step);
        }
    };
    let result = run::apply_run(
        inv.client,
        inv.project_id,
        &mapped,
        overwrite(&args.source, inv)?,
        &key,
        &settings,
        &mut on_chunk,
    )
    .await;
    let lines = progress.lock().map(|mut p| std::mem::take(&mut p.lines)).unwrap_or_default();
    for line in lines {
        out(inv.stderr, &line)?;
    }
    let applied = result?;
    if applied.resumed {
        out(inv.stderr, &format!("resumed interrupted run {}\n", applied.record.run_id))?;
    }
    out(inv.stdout, &applied.plan.render())?;
    for target in &applied.report.pending_approval {
        out(inv.stdout, &format!("pending approval  {target}\n"))?;
    }
    out(
        inv.stdout,
        &format!(
            "run {}: {} written, {} pending approval, {} folders created; backup {}\n",
            applied.record.run_id,
            applied.report.written.len(),
            applied.report.pending_approval.len(),
            applied.report.folders_created.len(),
            applied.record.backup.display()
        ),
    )?;
    Ok(if applied.report.pending_approval.is_empty() { 0 } else { 3 })
}

async fn run_status(args: &StatusArgs, inv: &mut Invocation<'_>) -> Result<u8, MigrateError> {
    let state_dir = inv.path(&args.state_dir);
    let (runs, journal) = run::list_runs(&state_dir)?;
    if runs.is_empty() {
        out(inv.stdout, "no recorded runs\n")?;
    }
    for record in &runs {
        let written = record.items.iter().filter(|item| item.result == "written").count();
        out(
            inv.stdout,
            &format!(
                "{}  {:<8}  {:<16}  {} keys, {written} written  {}\n",
                ikit_common::datetime::iso8601_millis(record.started_ms),
                record.command,
                record.outcome,
                record.items.len(),
                record.run_id
            ),
        )?;
    }
    if let Some(journal) = journal {
        out(
            inv.stdout,
            &format!(
                "interrupted run {} (backup {}): `apply` resumes it\n",
                journal.run_id,
                journal.backup.display()
            ),
        )?;
    }
    let Some(mapping) = &args.mapping else {
        return Ok(0);
    };
    let source = SourceArgs {
        mapping: mapping.clone(),
        sources: args.sources.clone(),
        from_env: args.from_env,
        prefix: args.prefix.clone(),
        strip_prefix: args.strip_prefix,
        interpolate: false,
        state_dir: args.state_dir.clone(),
    };
    let mapped = read_sources(&source, inv)?;
    let key = plan_key(&state_dir)?;
    let planned = plan(inv.client, inv.project_id, &mapped, overwrite(&source, inv)?, &key).await?;
    out(inv.stdout, &format!("drift: {}", summary(&planned)))?;
    Ok(if planned.has_work() { 2 } else { 0 })
}

async fn run_rollback(args: &RollbackArgs, inv: &mut Invocation<'_>) -> Result<u8, MigrateError> {
    let path = inv.path(&args.file);
    let unlock = match &args.identity {
        Some(file) => {
            let identity_path = inv.path(file);
            let text = Zeroizing::new(
                std::fs::read_to_string(&identity_path).map_err(io(&identity_path))?,
            );
            Unlock::identity_file(&text)?
        }
        None => match inv.env.get(PASSPHRASE_VAR).filter(|value| !value.is_empty()) {
            Some(passphrase) => Unlock::Passphrase(Zeroizing::new(passphrase.clone())),
            None => {
                return Err(MigrateError::Backup {
                    reason: format!(
                        "no way to open the backup: pass --identity or set {PASSPHRASE_VAR}"
                    ),
                });
            }
        },
    };
    let saved = Backup::read(&path, &unlock)?;
    if saved.project_id != inv.project_id {
        return Err(MigrateError::Backup {
            reason: format!(
                "the backup is of project {}, not {}",
                saved.project_id, inv.project_id
            ),
        });
    }
    let planned = rollback::plan(inv.client, &saved).await?;
    if planned.is_empty() {
        out(inv.stdout, "nothing to restore: the folders match the backup\n")?;
        return Ok(0);
    }
    out(inv.stdout, &planned.render())?;
    if !args.yes {
        out(inv.stdout, "nothing restored yet: run again with --yes to restore\n")?;
        return Ok(2);
    }
    let state_dir = inv.path(&args.state_dir);
    let audit = audit_log(args.audit_db.as_deref(), &state_dir, inv)?;
    let settings = RunSettings {
        state_dir,
        backup_out: None,
        protection: None,
        audit: audit.as_ref(),
        actor: inv.actor.clone(),
        clock: inv.clock,
    };
    let report = run::rollback_run(inv.client, &saved, &path, &settings).await?;
    if report.differences.is_empty() {
        out(
            inv.stdout,
            &format!(
                "restored {} changes; verified: the folders match the backup\n",
                report.done.items.len()
            ),
        )?;
        Ok(0)
    } else {
        out(inv.stdout, "verification failed: these still differ from the backup\n")?;
        out(inv.stdout, &report.differences.render())?;
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_audit_log_a_given_database_is_refused_and_never_echoes_its_password() {
        let mut stderr = Vec::new();
        let refused = no_audit_log(
            Some("postgres://audit:hunter2@db/ikit"),
            Path::new(".ikit/migrations"),
            &mut stderr,
        )
        .expect_err("an audit database asked of a build without the audit log");
        let message = refused.to_string();
        assert!(matches!(refused, MigrateError::AuditNotBuilt { .. }), "{message}");
        assert!(message.contains("--features audit") && message.contains("db/ikit"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        assert!(stderr.is_empty(), "a refusal is the error, not a warning");
    }

    #[test]
    fn without_the_audit_log_a_run_says_its_run_file_is_the_only_record() {
        let mut stderr = Vec::new();
        no_audit_log(None, Path::new("/work/.ikit/migrations"), &mut stderr).expect("no database");
        let warning = String::from_utf8(stderr).expect("utf-8");
        assert!(warning.starts_with("warning: no audit log in this build"), "{warning}");
        assert!(warning.contains("/work/.ikit/migrations is the only record"), "{warning}");
    }
}
