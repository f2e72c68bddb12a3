//! `ikit secrets`: list, get, set, delete, and the folders under a path.
//!
//! Reads list the folder once and filter here (like the official CLI), through the cache and
//! offline snapshot `run` uses (`fetch::listings`). Writes go to Infisical
//! and then invalidate the folder through a [`CachedClient`](ikit_client::CachedClient), which
//! tells every replica sharing `IKIT_REDIS_URL` to drop its copy. Values are printed only by
//! the commands that exist to print them (`secrets`, `secrets get`); `set` shows a mask.

use std::collections::BTreeMap;
use std::process::ExitCode;

use ikit_client::{
    CachedClient, Client, FolderQuery, InvalidationScope, NewSecret, Scope, SecretType,
    SecretUpdate,
};
use ikit_common::SecretValue;

use crate::fetch::ListingArgs;
use crate::render::{self, ListFormat, Listed};
use crate::{CliError, Context};
use crate::{assign, reauth};

#[derive(Debug, clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  ikit secrets --env prod --path /app\n  \
                  ikit secrets -o json\n  ikit secrets get DATABASE_URL --plain\n  \
                  printf %s \"$TOKEN\" | ikit secrets set API_TOKEN=-\n  \
                  ikit secrets delete OLD_KEY"
)]
pub struct SecretsArgs {
    #[command(subcommand)]
    pub command: Option<SecretsCommand>,
    #[command(flatten)]
    pub list: ListArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum SecretsCommand {
    /// Print the values of the named secrets (a missing name is an error).
    #[command(after_help = "Examples:\n  ikit secrets get DATABASE_URL --plain\n  \
                            ikit secrets get A B --allow-missing -o json")]
    Get(GetArgs),
    /// Create or update secrets: KEY=VALUE, KEY=@FILE (the file's text), KEY=- (stdin).
    #[command(after_help = "Examples:\n  ikit secrets set LOG_LEVEL=debug\n  \
                            ikit secrets set TLS_CERT=@cert.pem\n  \
                            printf %s \"$TOKEN\" | ikit secrets set API_TOKEN=-\n  \
                            ikit secrets set --file .env --path /app")]
    Set(SetArgs),
    /// Delete the named secrets (type shared unless --type personal).
    #[command(after_help = "Example:\n  ikit secrets delete OLD_KEY OTHER_KEY --path /app")]
    Delete(DeleteArgs),
    /// List, create or delete folders.
    #[command(after_help = "Examples:\n  ikit secrets folders get --path /\n  \
                            ikit secrets folders create --path / --name app\n  \
                            ikit secrets folders delete --path / --name app")]
    Folders(FoldersArgs),
}

/// Which folder and how it is read.
#[derive(Debug, Clone, clap::Args)]
pub struct FolderArgs {
    /// The folder (default: `defaultSecretPath` of .infisical.json, else /).
    #[arg(long)]
    pub path: Option<String>,
    #[command(flatten)]
    pub listing: ListingArgs,
    /// How old the offline snapshot may be when Infisical is unreachable (e.g. 24h).
    #[arg(long, default_value = crate::fetch::DEFAULT_MAX_STALE, value_parser = ikit_common::config::parse_duration)]
    pub max_stale: std::time::Duration,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub folder: FolderArgs,
    /// `KEY=VALUE` lines (quoted so that every value reads back exactly).
    #[arg(long)]
    pub plain: bool,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: ListFormat,
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    #[command(flatten)]
    pub folder: FolderArgs,
    /// Each value on its own line, nothing else.
    #[arg(long, visible_alias = "raw-value")]
    pub plain: bool,
    /// A missing name is shown as `*not found*` (skipped with --plain) instead of failing.
    #[arg(long)]
    pub allow_missing: bool,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: ListFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TypeArg {
    Shared,
    Personal,
}

impl From<TypeArg> for SecretType {
    fn from(t: TypeArg) -> Self {
        match t {
            TypeArg::Shared => SecretType::Shared,
            TypeArg::Personal => SecretType::Personal,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// KEY=VALUE, KEY=@FILE, KEY=- (stdin; the value never appears in argv), KEY=\@literal.
    #[arg(value_name = "KEY=VALUE", required_unless_present = "file", conflicts_with = "file")]
    pub assignments: Vec<String>,
    /// Take the keys and values from a .env file.
    #[arg(long, value_name = "FILE")]
    pub file: Option<std::path::PathBuf>,
    #[arg(long = "type", value_enum, default_value = "shared")]
    pub secret_type: TypeArg,
    #[arg(long)]
    pub path: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Shared by default (the official CLI defaults to personal, which surprises).
    #[arg(long = "type", value_enum, default_value = "shared")]
    pub secret_type: TypeArg,
    #[arg(long)]
    pub path: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct FoldersArgs {
    #[command(subcommand)]
    pub command: FoldersCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum FoldersCommand {
    /// The folders directly under --path.
    Get {
        #[arg(long, short = 'p')]
        path: Option<String>,
        #[arg(long, short = 'o', value_enum, default_value = "table")]
        output: FolderFormat,
    },
    /// Create folder --name under --path.
    Create {
        #[arg(long, short = 'p')]
        path: Option<String>,
        #[arg(long, short = 'n')]
        name: String,
    },
    /// Delete folder --name under --path (with everything in it).
    Delete {
        #[arg(long, short = 'p')]
        path: Option<String>,
        #[arg(long, short = 'n')]
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FolderFormat {
    Table,
    Json,
}

pub async fn run(ctx: &Context, args: SecretsArgs) -> Result<ExitCode, CliError> {
    match args.command {
        None => list(ctx, args.list).await,
        Some(SecretsCommand::Get(a)) => get(ctx, a).await,
        Some(SecretsCommand::Set(a)) => set(ctx, a).await,
        Some(SecretsCommand::Delete(a)) => delete(ctx, a).await,
        Some(SecretsCommand::Folders(a)) => folders(ctx, a).await,
    }
}

fn query(ctx: &Context, folder: &FolderArgs) -> Result<FolderQuery, CliError> {
    Ok(folder.listing.shape(ctx.folder_query(folder.path.as_deref())?))
}

/// The folder's secrets (imports merged below its own), sorted by key. Read as `run` reads
/// them: revalidating the offline snapshot's copy, and served from it (with the same warning)
/// when Infisical is unreachable.
async fn fetch(ctx: &Context, folder: &FolderArgs) -> Result<Vec<ikit_client::Secret>, CliError> {
    let q = query(ctx, folder)?;
    let read = crate::fetch::listings(
        ctx,
        std::slice::from_ref(&q),
        folder.max_stale,
        "cannot list secrets",
    )
    .await?;
    crate::fetch::announce(&read.origin);
    let listing = read.listings.first().expect("one listing per query");
    let mut secrets = listing.merged(read.order);
    secrets.sort_by(|a, b| a.key.cmp(&b.key).then(a.path.cmp(&b.path)));
    Ok(secrets)
}

fn print(text: &str) -> Result<(), CliError> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| CliError::io(std::path::Path::new("stdout"), e))
}

async fn list(ctx: &Context, args: ListArgs) -> Result<ExitCode, CliError> {
    let secrets = fetch(ctx, &args.folder).await?;
    let items: Vec<Listed<'_>> = secrets
        .iter()
        .map(|s| Listed { key: &s.key, value: &s.value, secret_type: s.secret_type.as_str() })
        .collect();
    let format = if args.plain { ListFormat::Dotenv } else { args.output };
    print(&render::listing(format, &items).map_err(CliError::Failed)?)?;
    Ok(ExitCode::SUCCESS)
}

async fn get(ctx: &Context, args: GetArgs) -> Result<ExitCode, CliError> {
    let secrets = fetch(ctx, &args.folder).await?;
    let by_key: BTreeMap<&str, &ikit_client::Secret> =
        secrets.iter().rev().map(|s| (s.key.as_str(), s)).collect();
    let missing: Vec<&str> =
        args.names.iter().map(String::as_str).filter(|n| !by_key.contains_key(n)).collect();
    if !missing.is_empty() && !args.allow_missing {
        return Err(CliError::Failed(format!(
            "not found in {} {}: {} (pass --allow-missing to print the others)",
            ctx.environment,
            query(ctx, &args.folder)?.path,
            missing.join(", ")
        )));
    }
    if args.plain {
        let mut out = String::new();
        for name in &args.names {
            if let Some(s) = by_key.get(name.as_str()) {
                out.push_str(s.value.expose());
                out.push('\n');
            }
        }
        print(&out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let not_found = SecretValue::new(render::NOT_FOUND);
    let items: Vec<Listed<'_>> = args
        .names
        .iter()
        .filter_map(|name| match by_key.get(name.as_str()) {
            Some(s) => {
                Some(Listed { key: name, value: &s.value, secret_type: s.secret_type.as_str() })
            }
            // only the table shows a placeholder; structured output leaves the key out
            None if args.output == ListFormat::Table => {
                Some(Listed { key: name, value: &not_found, secret_type: render::NOT_FOUND })
            }
            None => None,
        })
        .collect();
    print(&render::listing(args.output, &items).map_err(CliError::Failed)?)?;
    Ok(ExitCode::SUCCESS)
}

/// The cache the writes invalidate through (a no-op beyond this process without Redis).
fn cache(ctx: &Context, client: &Client) -> Result<CachedClient, CliError> {
    CachedClient::builder()
        .client(client.clone())
        .settings(&ctx.settings)
        .and_then(|builder| builder.build())
        .map_err(|e| CliError::Usage(e.to_string()))
}

async fn invalidate(ctx: &Context, cache: &CachedClient, scope: &Scope) {
    let done = cache
        .invalidate_in(&InvalidationScope::of(&scope.project_id, &scope.environment), &scope.path)
        .await;
    if ctx.settings.redis_url.is_some() && !done.published {
        ctx.warn("the change was written, but other replicas were not told (Redis did not answer)");
    }
}

fn scope(ctx: &Context, path: Option<&str>) -> Result<Scope, CliError> {
    let q = ctx.folder_query(path)?;
    Ok(Scope::new(q.project_id, q.environment, q.path))
}

/// The values to write, from the arguments (files and stdin read here) or a .env file.
fn values(ctx: &Context, args: &SetArgs) -> Result<Vec<(String, SecretValue)>, CliError> {
    if let Some(file) = &args.file {
        let full = ctx.cwd.join(file);
        let text = std::fs::read_to_string(&full).map_err(|e| CliError::io(file, e))?;
        let entries = ikit_migrate::dotenv::parse(
            &file.display().to_string(),
            &text,
            ikit_migrate::dotenv::Interpolation::Off,
        )
        .map_err(|e| CliError::Usage(e.to_string()))?;
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            assign::check_key(&entry.key).map_err(|e| CliError::Usage(e.to_string()))?;
            match entry.value {
                Some(v) if !v.is_empty() => out.push((entry.key, v)),
                _ => {
                    return Err(CliError::Usage(format!(
                        "{}: line {}: {} has no value (Infisical refuses empty values)",
                        file.display(),
                        entry.line,
                        entry.key
                    )));
                }
            }
        }
        if out.is_empty() {
            return Err(CliError::Usage(format!("{}: no KEY=VALUE lines", file.display())));
        }
        return Ok(out);
    }
    let parsed =
        assign::parse_all(&args.assignments).map_err(|e| CliError::Usage(e.to_string()))?;
    assign::resolve(parsed, &ctx.cwd, &mut std::io::stdin().lock())
        .map_err(|e| CliError::Usage(e.to_string()))
}

async fn set(ctx: &Context, args: SetArgs) -> Result<ExitCode, CliError> {
    let values = values(ctx, &args)?;
    let scope = scope(ctx, args.path.as_deref())?;
    let secret_type: SecretType = args.secret_type.into();
    let mut current_query = FolderQuery::new(&scope.project_id, &scope.environment, &scope.path);
    current_query.include_imports = false;
    current_query.expand_references = false;
    let (client, current) = reauth::with_client(ctx, async |client: Client| {
        match client.fetch_folder(&current_query).await {
            Ok(folder) => Ok((client, folder.secrets)),
            // a folder that does not exist yet holds nothing: the create names the real problem
            Err(ikit_client::ClientError::NotFound { .. }) => Ok((client, Vec::new())),
            Err(e) => Err(CliError::client("cannot list the folder before writing", e)),
        }
    })
    .await?;
    let client = &client;
    let mut rows = Vec::with_capacity(values.len());
    let mut changed = false;
    for (key, value) in values {
        let existing = current.iter().find(|s| s.key == key && s.secret_type == secret_type);
        let status = match existing {
            Some(s) if s.value.verify(value.expose()) => "SECRET VALUE UNCHANGED",
            Some(_) => {
                let mut update = SecretUpdate::value(&key, value);
                update.secret_type = secret_type;
                client
                    .update_secret(&scope, &update)
                    .await
                    .map_err(|e| CliError::client(format!("cannot update {key}"), e))?;
                changed = true;
                "SECRET VALUE MODIFIED"
            }
            None => {
                let mut new = NewSecret::new(&key, value);
                new.secret_type = secret_type;
                client
                    .create_secret(&scope, &new)
                    .await
                    .map_err(|e| CliError::client(format!("cannot create {key}"), e))?;
                changed = true;
                "SECRET CREATED"
            }
        };
        rows.push(vec![key, render::MASK.to_owned(), status.to_owned()]);
    }
    if changed {
        invalidate(ctx, &cache(ctx, client)?, &scope).await;
    }
    print(&render::table(&["SECRET NAME", "SECRET VALUE", "STATUS"], &rows))?;
    Ok(ExitCode::SUCCESS)
}

async fn delete(ctx: &Context, args: DeleteArgs) -> Result<ExitCode, CliError> {
    for name in &args.names {
        assign::check_key(name).map_err(|e| CliError::Usage(e.to_string()))?;
    }
    let scope = scope(ctx, args.path.as_deref())?;
    let secret_type: SecretType = args.secret_type.into();
    // only the first delete can meet a refused cached token, so a retry repeats nothing
    let (client, mut deleted) = reauth::with_client(ctx, async |client: Client| {
        let first = &args.names[0];
        client
            .delete_secret(&scope, first, secret_type)
            .await
            .map_err(|e| CliError::client(format!("cannot delete {first}"), e))?;
        Ok((client, vec![first.as_str()]))
    })
    .await?;
    let mut failure = None;
    for name in &args.names[1..] {
        match client.delete_secret(&scope, name, secret_type).await {
            Ok(_) => deleted.push(name.as_str()),
            Err(e) => {
                failure = Some(CliError::client(format!("cannot delete {name}"), e));
                break;
            }
        }
    }
    invalidate(ctx, &cache(ctx, &client)?, &scope).await;
    eprintln!("deleted {} from {} {}", deleted.join(", "), scope.environment, scope.path);
    match failure {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

async fn folders(ctx: &Context, args: FoldersArgs) -> Result<ExitCode, CliError> {
    let project = ctx.require_project()?.to_owned();
    let env = ctx.environment.clone();
    reauth::with_client(ctx, async |client: Client| {
        folder_op(ctx, &client, &project, &env, &args.command).await
    })
    .await
}

async fn folder_op(
    ctx: &Context,
    client: &Client,
    project: &str,
    env: &str,
    command: &FoldersCommand,
) -> Result<ExitCode, CliError> {
    let (project, env) = (project.to_owned(), env.to_owned());
    match command {
        FoldersCommand::Get { path, output } => {
            let output = *output;
            let path = scope(ctx, path.as_deref())?.path;
            let mut folders = client
                .list_folders(&project, &env, &path, false)
                .await
                .map_err(|e| CliError::client(format!("cannot list the folders of {path}"), e))?;
            folders.sort_by(|a, b| a.name.cmp(&b.name));
            let text = match output {
                FolderFormat::Table => render::table(
                    &["FOLDER NAME"],
                    &folders.iter().map(|f| vec![f.name.clone()]).collect::<Vec<_>>(),
                ),
                FolderFormat::Json => {
                    let list: Vec<serde_json::Value> = folders
                        .iter()
                        .map(|f| serde_json::json!({"id": f.id, "name": f.name}))
                        .collect();
                    format!("{}\n", serde_json::Value::Array(list))
                }
            };
            print(&text)?;
        }
        FoldersCommand::Create { path, name } => {
            let path = scope(ctx, path.as_deref())?.path;
            client.create_folder(&project, &env, &path, name).await.map_err(|e| {
                CliError::client(format!("cannot create folder {name} in {path}"), e)
            })?;
            eprintln!("created folder {name} in {env} {path}");
        }
        FoldersCommand::Delete { path, name } => {
            let path = scope(ctx, path.as_deref())?.path;
            client.delete_folder(&project, &env, &path, name).await.map_err(|e| {
                CliError::client(format!("cannot delete folder {name} in {path}"), e)
            })?;
            let folder = if path == "/" { format!("/{name}") } else { format!("{path}/{name}") };
            invalidate(ctx, &cache(ctx, client)?, &Scope::new(&project, &env, folder)).await;
            eprintln!("deleted folder {name} in {env} {path}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
