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

/// Whether a cached listing of `folder` (or of a folder importing `folder`) may hold something
/// `pattern` names: the pattern names the folder, something under it or a folder above it (a
/// recursive listing), or, for a glob, it may match a path in the folder. Decided from names
/// only, so an invalidation never has to open a listing; a glob errs on the side of dropping.
pub fn folder_affected(pattern: &str, folder: &str) -> bool {
    if !is_glob(pattern) {
        return under(folder, pattern) || under(pattern, folder);
    }
    if glob(pattern.as_bytes(), folder.as_bytes()) {
        return true;
    }
    // Some path `folder/...` can match when the literal head of the glob and `folder/` agree
    // as far as both go: the wildcard may stand for the rest.
    let literal = &pattern[..pattern.find(['*', '?']).unwrap_or(pattern.len())];
    let dir = format!("{}/", folder.trim_end_matches('/'));
    literal.starts_with(&dir) || dir.starts_with(literal)
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
    fn folder_listings_affected_by_keys_prefixes_and_globs() {
        // A key in the folder, cached or not.
        assert!(folder_affected("/auth/jwt/new_key", "/auth/jwt"));
        // A folder prefix above, the folder itself, and a folder below (a recursive listing).
        assert!(folder_affected("/auth", "/auth/jwt"));
        assert!(folder_affected("/auth/jwt", "/auth/jwt"));
        assert!(folder_affected("/auth/jwt/k", "/"));
        // A glob over the folder's keys, present or to come.
        assert!(folder_affected("/auth/*", "/auth/jwt"));
        assert!(folder_affected("/auth/*", "/auth"));
        assert!(folder_affected("/app/DB_*", "/app"));
        assert!(folder_affected("*", "/app"));
        assert!(!folder_affected("/auth/*", "/app"));
        assert!(!folder_affected("/app/DB_*", "/application"));
        // Unrelated folders are kept.
        assert!(!folder_affected("/auth", "/app"));
        assert!(!folder_affected("/auth", "/authz"));
        assert!(!folder_affected("/app/DB", "/shared"));
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
