//! Write-side normalisation of secret values and keys (spec 2.2 trimming, 2.5 naming rules).

/// Trims a value; if the original ended in `\n`, exactly one trailing `\n` is kept.
pub fn trim_value(value: &str) -> String {
    let trimmed = value.trim();
    if value.ends_with('\n') { format!("{trimmed}\n") } else { trimmed.to_owned() }
}

/// The zod message for a key that fails `min(1)` after trimming.
pub const KEY_EMPTY: &str = "String must contain at least 1 character(s)";
/// The zod refine message for a key holding `:` or `/`.
pub const KEY_SEPARATOR: &str = "Secret name cannot contain colon or forward slash.";

/// Trims and checks a secret key. `allow_separators` reproduces the 2024 server, which
/// accepted `/` (and `:`) in keys.
pub fn validate_key(key: &str, allow_separators: bool) -> Result<String, &'static str> {
    let key = key.trim();
    if key.is_empty() {
        return Err(KEY_EMPTY);
    }
    if !allow_separators && (key.contains(':') || key.contains('/')) {
        return Err(KEY_SEPARATOR);
    }
    Ok(key.to_owned())
}

/// A folder name: only `[A-Za-z0-9_-]`, at least one character.
pub fn valid_folder_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A slug: 1 to 64 lowercase letters, digits and hyphens.
pub fn valid_slug(slug: &str) -> bool {
    (1..=64).contains(&slug.len())
        && slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Normalises a secret path as the server does: `""` is `/`, a trailing slash is dropped.
/// Returns `None` when a segment is not a valid folder name.
pub fn normalize_path(path: &str) -> Option<String> {
    let trimmed = path.trim();
    let inner = trimmed.trim_start_matches('/').trim_end_matches('/');
    if inner.is_empty() {
        return Some("/".to_owned());
    }
    if inner.split('/').all(valid_folder_name) { Some(format!("/{inner}")) } else { None }
}

/// `/a/b` → (`/a`, `b`); `/a` → (`/`, `a`); `/` → none.
pub fn split_parent(path: &str) -> Option<(String, String)> {
    let (parent, name) = path.rsplit_once('/')?;
    if name.is_empty() {
        return None;
    }
    Some((if parent.is_empty() { "/".to_owned() } else { parent.to_owned() }, name.to_owned()))
}

/// Joins a parent path and a folder name.
pub fn join_path(parent: &str, name: &str) -> String {
    if parent == "/" { format!("/{name}") } else { format!("{parent}/{name}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_keeps_one_trailing_newline() {
        let cases = [
            ("  v1\n\n", "v1\n"),
            ("  v1  ", "v1"),
            ("v1", "v1"),
            ("a\nb\n", "a\nb\n"),
            ("\tx \n", "x\n"),
            ("", ""),
            ("\n", "\n"),
            ("  multi\n line  ", "multi\n line"),
        ];
        for (input, want) in cases {
            assert_eq!(trim_value(input), want, "{input:?}");
        }
    }

    #[test]
    fn validates_keys_with_the_server_messages() {
        assert_eq!(validate_key("  K1 ", false), Ok("K1".to_owned()));
        assert_eq!(validate_key("1 dotted.key-é", false), Ok("1 dotted.key-é".to_owned()));
        assert_eq!(validate_key("   ", false), Err(KEY_EMPTY));
        assert_eq!(validate_key("a/b", false), Err(KEY_SEPARATOR));
        assert_eq!(validate_key("a:b", false), Err(KEY_SEPARATOR));
        assert_eq!(validate_key("a/b", true), Ok("a/b".to_owned()));
    }

    #[test]
    fn checks_slugs() {
        assert!(valid_slug("prod-eu-1"));
        assert!(!valid_slug("Prod"));
        assert!(!valid_slug(""));
        assert!(!valid_slug(&"a".repeat(65)));
    }

    #[test]
    fn normalises_paths() {
        assert_eq!(normalize_path("").as_deref(), Some("/"));
        assert_eq!(normalize_path("/").as_deref(), Some("/"));
        assert_eq!(normalize_path("/a/b/").as_deref(), Some("/a/b"));
        assert_eq!(normalize_path("a").as_deref(), Some("/a"));
        assert_eq!(normalize_path("/a.b"), None);
        assert_eq!(split_parent("/a/b"), Some(("/a".to_owned(), "b".to_owned())));
        assert_eq!(split_parent("/a"), Some(("/".to_owned(), "a".to_owned())));
        assert_eq!(split_parent("/"), None);
        assert_eq!(join_path("/", "x"), "/x");
        assert_eq!(join_path("/a", "x"), "/a/x");
    }
}
