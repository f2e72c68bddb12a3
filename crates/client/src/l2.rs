//! The Redis layout of the shared (L2) cache, which every replica and the standalone
//! [`Invalidator`](crate::Invalidator) agree on, under a key prefix such as `ikit:`:
//!
//! - `{prefix}cache:{project}:{env}:{flags}:{folder}`: one sealed listing, expiring after
//!   `max_stale`;
//! - `{prefix}cache-importers:{project}:{env}:{folder}`: the reverse import index, the set of
//!   listing keys whose listing imports that folder, written together with the listing;
//! - `{prefix}cache-gen`, `…-gen:{project}:`, `…-gen::{env}`, `…-gen:{project}:{env}`: the
//!   invalidation generations of every scope a listing lies in (counters without expiry: an
//!   expired counter would read as an old value again).
//!
//! A writer reads the generations of its listing when it looks in L2, before it fetches, and
//! [`write`] stores the listing only if none of them moved since (one Lua script, which also
//! adds the listing to the import index). An invalidation bumps the generation of its scope
//! before it deletes anything, so a fetch that started before it can never put its (possibly
//! pre-change) answer back afterwards. Deleting needs names only: listings by their key,
//! importers through the index, so no listing is ever opened to invalidate it.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use ikit_common::events::InvalidationScope;
use redis::aio::ConnectionLike;

use crate::pattern::folder_affected;

const ENTRIES: &str = "cache:";
const IMPORTERS: &str = "cache-importers:";
const GENERATION: &str = "cache-gen";

/// `{prefix}cache:{cache_key}`.
pub(crate) fn entry_key(prefix: &str, cache_key: &str) -> String {
    format!("{prefix}{ENTRIES}{cache_key}")
}

/// The index of the listings importing `folder` of `project` / `environment`.
pub(crate) fn importers_key(
    prefix: &str,
    project: &str,
    environment: &str,
    folder: &str,
) -> String {
    format!("{prefix}{IMPORTERS}{project}:{environment}:{folder}")
}

/// The generation counters a listing of `project` / `environment` depends on.
fn generation_keys(prefix: &str, project: &str, environment: &str) -> [String; 4] {
    [
        format!("{prefix}{GENERATION}"),
        format!("{prefix}{GENERATION}:{project}:"),
        format!("{prefix}{GENERATION}::{environment}"),
        format!("{prefix}{GENERATION}:{project}:{environment}"),
    ]
}

/// The one counter an invalidation of `scope` bumps (one of the four of [`generation_keys`]).
fn scope_generation_key(prefix: &str, scope: &InvalidationScope) -> String {
    match (&scope.project, &scope.environment) {
        (None, None) => format!("{prefix}{GENERATION}"),
        (project, environment) => format!(
            "{prefix}{GENERATION}:{}:{}",
            project.as_deref().unwrap_or(""),
            environment.as_deref().unwrap_or("")
        ),
    }
}

/// Project, environment and the rest (flags and folder, or folder) of a key after its kind.
fn split_scope(rest: &str) -> Option<(&str, &str, &str)> {
    let mut it = rest.splitn(3, ':');
    Some((it.next()?, it.next()?, it.next()?))
}

/// The generations a writer saw, to be matched when it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Generation([String; 4]);

/// What [`read`] found: the sealed listing, if any, and the generations it was read under.
pub(crate) struct Read {
    pub(crate) sealed: Option<Vec<u8>>,
    pub(crate) generation: Generation,
}

/// One round trip: the listing and the generations of its scope.
pub(crate) async fn read<C: ConnectionLike + Send>(
    conn: &mut C,
    prefix: &str,
    cache_key: &str,
    project: &str,
    environment: &str,
) -> redis::RedisResult<Read> {
    let mut values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
        .arg(entry_key(prefix, cache_key))
        .arg(&generation_keys(prefix, project, environment))
        .query_async(conn)
        .await?;
    let mut values = values.drain(..);
    let sealed = values.next().flatten();
    // A counter never set reads as 0, as in the write script.
    let mut counter = || {
        values
            .next()
            .flatten()
            .map_or_else(|| "0".to_owned(), |v| String::from_utf8_lossy(&v).into_owned())
    };
    let generation = Generation([counter(), counter(), counter(), counter()]);
    Ok(Read { sealed, generation })
}

/// Stores a sealed listing unless a generation moved; adds it to the import index of each
/// imported folder. KEYS: listing, 4 generations, import indexes. ARGV: 4 generations, value,
/// ttl in ms. Returns 1 when written, 0 when refused.
static WRITE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
for i = 1, 4 do
  if (redis.call('GET', KEYS[i + 1]) or '0') ~= ARGV[i] then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[5], 'PX', ARGV[6])
for i = 6, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[1])
  redis.call('PEXPIRE', KEYS[i], ARGV[6])
end
return 1
",
    )
});

/// One listing to [`write`]: where it lies and what it imports.
pub(crate) struct Listing<'a> {
    pub(crate) cache_key: &'a str,
    pub(crate) project: &'a str,
    pub(crate) environment: &'a str,
    /// `(environment, folder)` of every imported folder (same project).
    pub(crate) imports: Vec<(&'a str, &'a str)>,
}

/// Writes `sealed` for `listing` if the generations are still `seen`; false when refused.
pub(crate) async fn write<C: ConnectionLike + Send>(
    conn: &mut C,
    prefix: &str,
    listing: &Listing<'_>,
    seen: &Generation,
    sealed: &[u8],
    ttl_ms: u64,
) -> redis::RedisResult<bool> {
    let mut call = WRITE.key(entry_key(prefix, listing.cache_key));
    for key in generation_keys(prefix, listing.project, listing.environment) {
        call.key(key);
    }
    let indexes: BTreeSet<String> = listing
        .imports
        .iter()
        .map(|(env, folder)| importers_key(prefix, listing.project, env, folder))
        .collect();
    for index in indexes {
        call.key(index);
    }
    for value in &seen.0 {
        call.arg(value);
    }
    call.arg(sealed).arg(ttl_ms.max(1));
    let written: i64 = call.invoke_async(conn).await?;
    Ok(written == 1)
}

/// `*`, `?`, `[`, `]` and `\` escaped for a `SCAN MATCH` pattern.
fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What one invalidation target (scope and pattern) drops by name.
fn targeted(
    targets: &[(InvalidationScope, String)],
    project: &str,
    env: &str,
    folder: &str,
) -> bool {
    targets
        .iter()
        .any(|(scope, pattern)| scope.contains(project, env) && folder_affected(pattern, folder))
}

/// The outcome of [`clear`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cleared {
    /// Every affected listing is gone; this many keys were deleted.
    All(usize),
    /// The deadline passed between two batches; some listings may remain until their TTL.
    Overran,
}

/// Invalidates L2 for every `(scope, pattern)` in one pass: bumps the generation of each
/// scope first, then deletes the listings the targets name and the listings importing a
/// folder they name (through the index), without opening any. `deadline` is checked after
/// each `SCAN` batch.
pub(crate) async fn clear<C: ConnectionLike + Send>(
    conn: &mut C,
    prefix: &str,
    targets: &[(InvalidationScope, String)],
    deadline: tokio::time::Instant,
) -> redis::RedisResult<Cleared> {
    if targets.is_empty() {
        return Ok(Cleared::All(0));
    }
    let scopes: BTreeSet<String> =
        targets.iter().map(|(scope, _)| scope_generation_key(prefix, scope)).collect();
    let mut bump = redis::pipe();
    for key in &scopes {
        bump.cmd("INCR").arg(key).ignore();
    }
    bump.query_async::<()>(conn).await?;

    let entries = format!("{prefix}{ENTRIES}");
    let importers = format!("{prefix}{IMPORTERS}");
    let mut cursor: u64 = 0;
    let mut deleted = 0usize;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}cache*", escape_glob(prefix)))
            .arg("COUNT")
            .arg(500)
            .query_async(conn)
            .await?;
        if tokio::time::Instant::now() >= deadline {
            return Ok(Cleared::Overran);
        }
        let mut doomed: Vec<String> = Vec::new();
        let mut indexes: Vec<String> = Vec::new();
        for key in keys {
            if let Some((project, env, rest)) = key.strip_prefix(&entries).and_then(split_scope) {
                // `rest` is `{flags}:{folder}`.
                let folder = rest.split_once(':').map_or(rest, |(_, folder)| folder);
                if targeted(targets, project, env, folder) {
                    doomed.push(key);
                }
            } else if let Some((project, env, folder)) =
                key.strip_prefix(&importers).and_then(split_scope)
                && targeted(targets, project, env, folder)
            {
                indexes.push(key);
            }
        }
        if !indexes.is_empty() {
            let mut members = redis::pipe();
            for index in &indexes {
                members.cmd("SMEMBERS").arg(index);
            }
            let sets: Vec<Vec<String>> = members.query_async(conn).await?;
            doomed.extend(sets.into_iter().flatten());
            doomed.extend(indexes);
        }
        if !doomed.is_empty() {
            doomed.sort_unstable();
            doomed.dedup();
            deleted += redis::cmd("DEL").arg(&doomed).query_async::<usize>(conn).await?;
        }
        cursor = next;
        if cursor == 0 {
            return Ok(Cleared::All(deleted));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_stable_and_kept_apart() {
        assert_eq!(entry_key("ikit:", "p:dev:r0:/app"), "ikit:cache:p:dev:r0:/app");
        assert_eq!(
            importers_key("ikit:", "p", "dev", "/shared"),
            "ikit:cache-importers:p:dev:/shared"
        );
        assert_eq!(
            generation_keys("ikit:", "p", "dev"),
            ["ikit:cache-gen", "ikit:cache-gen:p:", "ikit:cache-gen::dev", "ikit:cache-gen:p:dev"]
        );
        // Each scope bumps exactly one of the counters a listing in it reads.
        let keys = generation_keys("ikit:", "p", "dev");
        for scope in [
            InvalidationScope::all(),
            InvalidationScope { project: Some("p".into()), environment: None },
            InvalidationScope { project: None, environment: Some("dev".into()) },
            InvalidationScope::of("p", "dev"),
        ] {
            assert!(keys.contains(&scope_generation_key("ikit:", &scope)), "{scope:?}");
        }
        assert!(
            !keys.contains(&scope_generation_key("ikit:", &InvalidationScope::of("p", "prod")))
        );
        assert_eq!(escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn targets_respect_scope_and_pattern() {
        let targets = vec![(InvalidationScope::of("p", "dev"), "/shared".to_owned())];
        assert!(targeted(&targets, "p", "dev", "/shared"));
        assert!(targeted(&targets, "p", "dev", "/"), "a recursive listing above");
        assert!(!targeted(&targets, "p", "prod", "/shared"));
        assert!(!targeted(&targets, "q", "dev", "/shared"));
        assert!(!targeted(&targets, "p", "dev", "/app"));
    }
}
