//! Reading the secrets `run` and `export` inject: one or more folder listings (a later folder
//! wins for a key in both), through the cache with the encrypted offline snapshot, else a
//! `--fallback-env` file when Infisical is unreachable; the caller says where they came from.
//! `secrets` and `secrets get` read their listing the same way ([`listings`]), without the file.
//!
//! A new process has nothing in memory, but the snapshot of an earlier one holds each listing
//! with its ETag: the cache revalidates it (`If-None-Match`), so a warm start is answered 304
//! and downloads no listing when nothing changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ikit_client::{ClientError, FolderQuery, FolderSecrets, ImportOrder, Source};
use ikit_common::SecretValue;

use crate::{CliError, Context, session};

/// Secrets by key, sorted. No `Debug`: it holds values.
pub type SecretMap = BTreeMap<String, SecretValue>;

/// How a folder is listed: the flags `run`, `export` and `secrets` share.
#[derive(Debug, Clone, clap::Args)]
pub struct ListingArgs {
    /// Include the secrets of sub-folders.
    #[arg(long)]
    pub recursive: bool,
    /// Include imported secrets.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub include_imports: bool,
    /// Expand secret references (`${KEY}`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub expand: bool,
    /// Only secrets with these tag slugs (comma-separated).
    #[arg(long, short = 't', value_delimiter = ',')]
    pub tags: Vec<String>,
}

impl ListingArgs {
    /// `query` listed as these flags say.
    pub fn shape(&self, mut query: FolderQuery) -> FolderQuery {
        query.recursive = self.recursive;
        query.include_imports = self.include_imports;
        query.expand_references = self.expand;
        query.tag_slugs.clone_from(&self.tags);
        query
    }
}

/// `--max-stale` when not given: a week-old copy still starts a service during an outage.
pub const DEFAULT_MAX_STALE: &str = "7d";

/// The reading flags `run` and `export` share (flattened into both commands' arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    #[command(flatten)]
    pub listing: ListingArgs,
    /// How old the offline snapshot may be when Infisical is unreachable (e.g. 24h).
    #[arg(long, default_value = DEFAULT_MAX_STALE, value_parser = ikit_common::config::parse_duration)]
    pub max_stale: Duration,
    /// A .env file to use when Infisical is unreachable and no snapshot serves.
    #[arg(long, value_name = "FILE")]
    pub fallback_env: Option<PathBuf>,
}

impl SourceArgs {
    /// What to read: these folders, in order, with these flags.
    pub fn fetch_options(&self, paths: Vec<String>) -> FetchOptions {
        FetchOptions {
            paths,
            listing: self.listing.clone(),
            max_stale: self.max_stale,
            fallback_env: self.fallback_env.clone(),
        }
    }
}

/// Which listings to read and what to do when Infisical cannot answer.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Folders in order (a later one wins); empty: the context's default secret path.
    pub paths: Vec<String>,
    pub listing: ListingArgs,
    pub max_stale: Duration,
    pub fallback_env: Option<PathBuf>,
}

/// Where the secrets came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    Infisical,
    /// The offline snapshot, this old (the oldest of the folders read).
    Snapshot(Duration),
    /// The `--fallback-env` file.
    FallbackFile(PathBuf),
}

pub struct Fetched {
    pub secrets: SecretMap,
    pub origin: Origin,
}

impl FetchOptions {
    /// The listing queries, in order.
    pub fn queries(&self, ctx: &Context) -> Result<Vec<FolderQuery>, CliError> {
        let paths: Vec<Option<&str>> = if self.paths.is_empty() {
            vec![None]
        } else {
            self.paths.iter().map(|p| Some(p.as_str())).collect()
        };
        paths.into_iter().map(|path| Ok(self.listing.shape(ctx.folder_query(path)?))).collect()
    }
}

/// Merges listings in order: a folder's own secrets over its imports, a later folder over an
/// earlier one.
pub fn merge<'a>(
    listings: impl IntoIterator<Item = &'a FolderSecrets>,
    order: ImportOrder,
) -> SecretMap {
    let mut out = SecretMap::new();
    for listing in listings {
        for secret in listing.merged(order) {
            out.insert(secret.key, secret.value);
        }
    }
    out
}

/// Whether an error means Infisical could not be reached (or only stale copies remain), the
/// cases a fallback file stands in for.
fn unreachable(e: &ClientError) -> bool {
    e.is_unreachable()
        || matches!(
            e,
            ClientError::Unavailable { .. }
                | ClientError::TooStale { .. }
                | ClientError::Snapshot(_)
        )
}

/// Reads the secrets. A cached token the server refuses is dropped and the login done again once.
pub async fn fetch(ctx: &Context, opts: &FetchOptions) -> Result<Fetched, CliError> {
    let queries = opts.queries(ctx)?;
    match read(ctx, &queries, opts.max_stale).await? {
        Ok(read) => {
            let secrets = merge(read.listings.iter().map(|l| l.as_ref()), read.order);
            Ok(Fetched { secrets, origin: read.origin })
        }
        Err(error) if unreachable(&error) => match &opts.fallback_env {
            Some(file) => {
                let secrets = read_fallback(file)?;
                Ok(Fetched { secrets, origin: Origin::FallbackFile(file.clone()) })
            }
            None => Err(failed(ctx, "cannot read secrets", error)),
        },
        Err(error) => Err(failed(ctx, "cannot read secrets", error)),
    }
}

/// Listings read through the cache, in the order asked, and where they came from (Infisical,
/// or the offline snapshot: never a fallback file). No `Debug`: they hold values.
pub struct Listings {
    pub listings: Vec<Arc<FolderSecrets>>,
    pub origin: Origin,
    /// How the server orders imports (for [`FolderSecrets::merged`]).
    pub order: ImportOrder,
}

/// [`fetch`]'s path without the fallback file, for the commands that show listings (`secrets`,
/// `secrets get`): the offline snapshot serves them too when Infisical is unreachable. An error
/// says `what` was being done.
pub async fn listings(
    ctx: &Context,
    queries: &[FolderQuery],
    max_stale: Duration,
    what: &str,
) -> Result<Listings, CliError> {
    read(ctx, queries, max_stale).await?.map_err(|error| failed(ctx, what, error))
}

fn failed(ctx: &Context, what: &str, error: ClientError) -> CliError {
    match error {
        e @ (ClientError::Auth { .. } | ClientError::Credential(_)) => session::login_error(ctx, e),
        e => CliError::client(what, e),
    }
}

/// The outer error is one the user must fix (no credentials, a bad key file); the inner one
/// is Infisical's answer, which a fallback may cover. A cached token the server refuses is
/// dropped and the login done again once.
async fn read(
    ctx: &Context,
    queries: &[FolderQuery],
    max_stale: Duration,
) -> Result<Result<Listings, ClientError>, CliError> {
    let result = match read_listings(ctx, queries, max_stale, false).await? {
        Err(Failure { error: ClientError::Auth { .. }, cached_token: true }) => {
            tracing::info!("cached token refused, logging in again");
            session::forget_token(ctx)?;
            read_listings(ctx, queries, max_stale, true).await?
        }
        other => other,
    };
    Ok(result.map_err(|f| f.error))
}

/// A read Infisical refused or could not answer, and whether a cached token was in use.
struct Failure {
    error: ClientError,
    cached_token: bool,
}

async fn read_listings(
    ctx: &Context,
    queries: &[FolderQuery],
    max_stale: Duration,
    fresh: bool,
) -> Result<Result<Listings, Failure>, CliError> {
    let (cached, used_cache) = match ctx.cached_client_with(max_stale, fresh).await {
        Ok(pair) => pair,
        Err(CliError::Client { source, .. }) => {
            return Ok(Err(Failure { error: source, cached_token: false }));
        }
        Err(other) => return Err(other),
    };
    let mut listings = Vec::with_capacity(queries.len());
    let mut oldest: Option<Duration> = None;
    for q in queries {
        let served = match cached.folder(q).await {
            Ok(served) => served,
            Err(error) => return Ok(Err(Failure { error, cached_token: used_cache })),
        };
        if served.source == Source::Snapshot {
            oldest = Some(oldest.map_or(served.age, |o| o.max(served.age)));
        }
        listings.push(served.value);
    }
    let order = cached.client().import_order();
    let origin = oldest.map_or(Origin::Infisical, Origin::Snapshot);
    Ok(Ok(Listings { listings, origin, order }))
}

/// A `.env` file in python-dotenv's dialect; a key without `=` is an error naming it.
pub fn read_fallback(file: &Path) -> Result<SecretMap, CliError> {
    let text = std::fs::read_to_string(file).map_err(|e| CliError::io(file, e))?;
    let name = file.display().to_string();
    let entries =
        ikit_migrate::dotenv::parse(&name, &text, ikit_migrate::dotenv::Interpolation::Off)
            .map_err(|e| CliError::Usage(e.to_string()))?;
    let mut out = SecretMap::new();
    for entry in entries {
        let value = entry.value.ok_or_else(|| {
            CliError::Usage(format!("{name}:{}: key {} has no value", entry.line, entry.key))
        })?;
        out.insert(entry.key, value);
    }
    Ok(out)
}

/// `1h 2m 3s` style, for notices.
pub fn human_age(age: Duration) -> String {
    let s = age.as_secs();
    match (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60) {
        (0, 0, 0, sec) => format!("{sec}s"),
        (0, 0, m, sec) => format!("{m}m {sec}s"),
        (0, h, m, _) => format!("{h}h {m}m"),
        (d, h, _, _) => format!("{d}d {h}h"),
    }
}

/// Says on stderr where the secrets came from when it was not Infisical (never silenced: the
/// user must know the values may be old).
pub fn announce(origin: &Origin) {
    match origin {
        Origin::Infisical => {}
        Origin::Snapshot(age) => eprintln!(
            "ikit: warning: infisical unreachable, using the offline snapshot from {} ago",
            human_age(*age)
        ),
        Origin::FallbackFile(path) => eprintln!(
            "ikit: warning: infisical unreachable, using the fallback file {}",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(human_age(Duration::from_secs(5)), "5s");
        assert_eq!(human_age(Duration::from_secs(125)), "2m 5s");
        assert_eq!(human_age(Duration::from_secs(3 * 3600 + 120)), "3h 2m");
        assert_eq!(human_age(Duration::from_secs(2 * 86_400 + 3600)), "2d 1h");
    }

    #[test]
    fn a_fallback_file_is_read_in_the_dotenv_dialect_and_a_bare_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, "A='x y'\nexport B=\"q\\\"z\"\n# c\n").unwrap();
        let map = read_fallback(&path).unwrap();
        let got: Vec<(&str, &str)> = map.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
        assert_eq!(got, [("A", "x y"), ("B", "q\"z")]);
        std::fs::write(&path, "A=1\nBARE\n").unwrap();
        let err = read_fallback(&path).unwrap_err();
        assert!(err.to_string().contains(":2: key BARE has no value"), "{err}");
    }
}
