//! Pure matching of invalidation and subscription patterns against secret and folder paths,
//! and the bounded de-duplication of change events.
//!
//! A pattern is a key path (`/auth/jwt/current_private_key`), a folder prefix (`/auth` or
//! `/auth/`, everything under it) or a glob (`/auth/*`; `*` and `?` cross `/`).

use std::collections::{HashSet, VecDeque};

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

/// `*` matches any run of characters (including `/`), `?` exactly one.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// `path` equals `prefix` or lies under it (`/` is the prefix of everything).
fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// Whether a secret or folder at `path` is named by `pattern` (for subscriptions).
pub fn path_matches(pattern: &str, path: &str) -> bool {
    if is_glob(pattern) { glob(pattern.as_bytes(), path.as_bytes()) } else { under(path, pattern) }
}

/// Whether a cached listing of `folder` (whose secrets and imported folders are `paths`) is
/// affected by `pattern`: the pattern names the folder, something under it, a folder above it,
/// one of its secrets, or one of the folders it imports.
pub fn folder_affected<'a>(
    pattern: &str,
    folder: &str,
    paths: impl IntoIterator<Item = &'a str>,
) -> bool {
    if is_glob(pattern) {
        let p = pattern.as_bytes();
        // `/auth/*` names any secret directly in `/auth`, cached or not yet.
        return glob(p, folder.as_bytes())
            || glob(p, format!("{}/\u{0}", folder.trim_end_matches('/')).as_bytes())
            || paths.into_iter().any(|x| glob(p, x.as_bytes()));
    }
    under(folder, pattern) || under(pattern, folder) || paths.into_iter().any(|x| under(x, pattern))
}

/// Remembers the last `capacity` event identities; `first_time` is false for a repeat.
#[derive(Debug)]
pub(crate) struct Dedup {
    capacity: usize,
    order: VecDeque<String>,
    seen: HashSet<String>,
}

impl Dedup {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), order: VecDeque::new(), seen: HashSet::new() }
    }

    pub(crate) fn first_time(&mut self, id: String) -> bool {
        if self.seen.contains(&id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(id.clone());
        self.order.push_back(id);
        true
    }

    /// Forgets every identity starting with `prefix` except `keep` (after a deletion, a
    /// re-created secret starts its versions again).
    pub(crate) fn forget_prefix_except(&mut self, prefix: &str, keep: &str) {
        let gone = |id: &String| id.starts_with(prefix) && id != keep;
        if self.order.iter().any(gone) {
            self.order.retain(|id| !gone(id));
            self.seen.retain(|id| !gone(id));
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_cross_slashes() {
        assert!(path_matches("/auth/*", "/auth/jwt/current_private_key"));
        assert!(path_matches("/auth/*", "/auth/aes"));
        assert!(!path_matches("/auth/*", "/authz/x"));
        assert!(!path_matches("/auth/*", "/auth"));
        assert!(path_matches("/a?c/*_key", "/abc/d/private_key"));
        assert!(path_matches("*", "/anything"));
    }

    #[test]
    fn prefixes_stop_at_segment_boundaries() {
        assert!(path_matches("/auth", "/auth/jwt/k"));
        assert!(path_matches("/auth/", "/auth/jwt/k"));
        assert!(path_matches("/auth/jwt/k", "/auth/jwt/k"));
        assert!(!path_matches("/auth", "/authz/k"));
        assert!(path_matches("/", "/x/y"));
    }

    #[test]
    fn folder_listings_affected_by_keys_prefixes_globs_and_imports() {
        let none: [&str; 0] = [];
        // A key in the folder, cached or not.
        assert!(folder_affected("/auth/jwt/new_key", "/auth/jwt", none));
        // A folder prefix above, and the folder itself.
        assert!(folder_affected("/auth", "/auth/jwt", none));
        assert!(folder_affected("/auth/jwt", "/auth/jwt", none));
        // A glob over the folder's keys.
        assert!(folder_affected("/auth/*", "/auth/jwt", none));
        assert!(folder_affected("/auth/*", "/auth", none));
        assert!(!folder_affected("/auth/*", "/app", none));
        // Unrelated folders are kept.
        assert!(!folder_affected("/auth", "/app", none));
        assert!(!folder_affected("/app/DB", "/shared", none));
        // A folder that imports an affected one is affected too.
        assert!(folder_affected(
            "/shared/COMMON",
            "/app",
            ["/app/DB_URL", "/shared", "/shared/COMMON"]
        ));
        assert!(folder_affected("/shared/*", "/app", ["/shared/COMMON"]));
    }

    #[test]
    fn dedup_is_bounded() {
        let mut d = Dedup::new(2);
        assert!(d.first_time("a".into()));
        assert!(!d.first_time("a".into()));
        assert!(d.first_time("b".into()));
        assert!(d.first_time("c".into()));
        assert_eq!(d.len(), 2);
        assert!(d.first_time("a".into()), "forgotten after capacity");
        assert!(!d.first_time("c".into()));
        d.forget_prefix_except("a", "c");
        assert!(d.first_time("a".into()));
        assert!(!d.first_time("c".into()), "kept");
    }
}
