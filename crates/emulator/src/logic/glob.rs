//! Webhook and approval-policy path globs with the picomatch semantics the server uses
//! (`picomatch.isMatch(path, glob, {strictSlashes: false})`, spec 5.3).
//!
//! Supported: `**` as a whole segment (zero or more folders), `*` (any run of characters inside
//! one segment), `?` (one character), `{a,b}` alternatives, everything else literal. A trailing
//! slash on the path or the glob is ignored.

/// Whether the folder `path` matches the glob `pattern`.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    expand_braces(pattern).iter().any(|p| {
        let pat = segments(p);
        let segs = segments(path);
        match_segments(&pat, &segs)
    })
}

/// Whether `pattern` holds any glob syntax (a single service-token scope on a literal path
/// overrides the request, spec 1.6).
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '{', '[', '!', '('])
}

fn segments(path: &str) -> Vec<&str> {
    let trimmed = path.trim_start_matches('/').trim_end_matches('/');
    if trimmed.is_empty() { Vec::new() } else { trimmed.split('/').collect() }
}

fn match_segments(pat: &[&str], segs: &[&str]) -> bool {
    match pat.split_first() {
        None => segs.is_empty(),
        Some((&"**", rest)) => (0..=segs.len()).any(|skip| match_segments(rest, &segs[skip..])),
        Some((p, rest)) => match segs.split_first() {
            Some((s, srest)) => {
                match_segment(p.as_bytes(), s.as_bytes()) && match_segments(rest, srest)
            }
            None => false,
        },
    }
}

fn match_segment(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|skip| match_segment(rest, &s[skip..])),
        Some((b'?', rest)) => !s.is_empty() && match_segment(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && match_segment(rest, &s[1..]),
    }
}

/// `/a/{b,c}/**` becomes `/a/b/**` and `/a/c/**` (no nesting needed for folder globs).
fn expand_braces(pattern: &str) -> Vec<String> {
    let (Some(open), Some(close)) = (pattern.find('{'), pattern.find('}')) else {
        return vec![pattern.to_owned()];
    };
    if close < open {
        return vec![pattern.to_owned()];
    }
    let (head, tail) = (&pattern[..open], &pattern[close + 1..]);
    pattern[open + 1..close]
        .split(',')
        .flat_map(|alt| expand_braces(&format!("{head}{alt}{tail}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_like_picomatch_without_strict_slashes() {
        let cases = [
            ("/**", "/", true),
            ("/**", "/app", true),
            ("/**", "/a/b/c", true),
            ("/", "/", true),
            ("/", "/app", false),
            ("/app", "/app/", true),
            ("/app/", "/app", true),
            ("/api/*", "/api/v1", true),
            ("/api/*", "/api/v1/x", false),
            ("/api/*", "/api", false),
            ("/api/**", "/api", true),
            ("/api/**", "/api/v1/x", true),
            ("/api/**", "/apix", false),
            ("/a*/b", "/abc/b", true),
            ("/a?c", "/abc", true),
            ("/a?c", "/ac", false),
            ("/{dev,ops}/**", "/ops/x", true),
            ("/{dev,ops}/**", "/qa/x", false),
            ("/app", "/application", false),
        ];
        for (pattern, path, want) in cases {
            assert_eq!(path_matches(pattern, path), want, "{pattern} vs {path}");
        }
    }

    #[test]
    fn tells_globs_from_literal_paths() {
        assert!(is_glob("/**"));
        assert!(is_glob("/a/*"));
        assert!(!is_glob("/a/b"));
        assert!(!is_glob("/"));
    }
}
