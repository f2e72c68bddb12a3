//! Secret reference expansion (spec 2.6) and the import precedence it looks through (2.3).
//!
//! `${KEY}` names a key of the same folder; `${env.a.b.KEY}` names `KEY` in folder `/a/b` of
//! environment `env`. Expansion recurses up to [`MAX_DEPTH`]; circular, missing and too-deep
//! references are left as text.
//!
//! Depth alone does not bound the work: a value referencing four secrets that each reference
//! four more, ten levels down, is a million lookups. One expansion therefore resolves at most
//! [`MAX_REFERENCES`] references and produces at most [`MAX_EXPANDED_BYTES`]; past either,
//! the remaining references are left as text.

/// How deep nested references are followed (newer servers; older ones used 5).
pub const MAX_DEPTH: usize = 10;
/// References one expansion may resolve.
pub const MAX_REFERENCES: usize = 10_000;
/// Bytes one expansion may substitute in (the request body limit).
pub const MAX_EXPANDED_BYTES: usize = 1 << 20;

/// What is left of one expansion's allowance.
struct Budget {
    references: usize,
    bytes: usize,
}

/// Finds the value a reference points at.
pub trait Lookup {
    /// The value of `key` as seen from folder `path` of `env`: the folder's own secrets first,
    /// then its imports in order, the first import holding the key winning.
    fn find(&self, env: &str, path: &str, key: &str) -> Option<String>;
}

/// One reference target: environment, folder path, key.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Target {
    pub env: String,
    pub path: String,
    pub key: String,
}

/// Parses the inside of `${...}` relative to the folder it appears in.
pub fn parse_reference(body: &str, env: &str, path: &str) -> Option<Target> {
    if body.is_empty() {
        return None;
    }
    let parts: Vec<&str> = body.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    if parts.len() == 1 {
        return Some(Target { env: env.to_owned(), path: path.to_owned(), key: body.to_owned() });
    }
    let folders = &parts[1..parts.len() - 1];
    Some(Target {
        env: parts[0].to_owned(),
        path: format!("/{}", folders.join("/")),
        key: parts[parts.len() - 1].to_owned(),
    })
}

/// Expands every reference in `value`, a secret of folder `path` in `env`. `origin` is the
/// secret's own address so a self-reference counts as circular.
pub fn expand(value: &str, origin: &Target, lookup: &dyn Lookup) -> String {
    let mut stack = vec![origin.clone()];
    let mut budget = Budget { references: MAX_REFERENCES, bytes: MAX_EXPANDED_BYTES };
    expand_inner(value, &origin.env, &origin.path, lookup, &mut stack, 0, &mut budget)
}

fn expand_inner(
    value: &str,
    env: &str,
    path: &str,
    lookup: &dyn Lookup,
    stack: &mut Vec<Target>,
    depth: usize,
    budget: &mut Budget,
) -> String {
    map_references(value, |body| {
        let target = parse_reference(body, env, path)?;
        if depth >= MAX_DEPTH || stack.contains(&target) || budget.references == 0 {
            return None;
        }
        budget.references -= 1;
        let raw = lookup.find(&target.env, &target.path, &target.key)?;
        stack.push(target.clone());
        let expanded =
            expand_inner(&raw, &target.env, &target.path, lookup, stack, depth + 1, budget);
        stack.pop();
        if expanded.len() > budget.bytes {
            budget.bytes = 0;
            return None;
        }
        budget.bytes -= expanded.len();
        Some(expanded)
    })
}

/// Rewrites the references to `target` inside `value` (a secret of folder `path` in `env`) so
/// they name `new_key`, as newer servers do when a secret is renamed
/// (`fnUpdateSecretLinkedReferences`). Other text is left byte for byte.
pub fn rename_references(
    value: &str,
    env: &str,
    path: &str,
    target: &Target,
    new_key: &str,
) -> String {
    map_references(value, |body| {
        if parse_reference(body, env, path).as_ref() != Some(target) {
            return None;
        }
        let prefix = body.rsplit_once('.').map_or(String::new(), |(head, _)| format!("{head}."));
        Some(format!("${{{prefix}{new_key}}}"))
    })
}

/// Finds every reference `${body}` the server's pattern `\${([a-zA-Z0-9-_.]+)}` matches and
/// replaces it with what `replace` returns for its body; `None` keeps the reference as written.
/// Text that only looks like a reference (`${`, `${a b}`) is copied unchanged.
fn map_references(value: &str, mut replace: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let body_len = after
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            .count();
        if body_len == 0 || after.as_bytes().get(body_len) != Some(&b'}') {
            out.push_str("${");
            rest = after;
            continue;
        }
        let body = &after[..body_len];
        let literal = &rest[start..start + 3 + body_len];
        rest = &after[body_len + 1..];
        match replace(body) {
            Some(replacement) => out.push_str(&replacement),
            None => out.push_str(literal),
        }
    }
    out.push_str(rest);
    out
}

/// The `formatMultiValueEnv` rule for `skipMultilineEncoding` secrets: a value holding newlines
/// is quoted and its newlines written as the two characters `\n`.
pub fn format_multiline(value: &str) -> String {
    if value.contains('\n') {
        format!("\"{}\"", value.replace('\n', "\\n"))
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Map(HashMap<(String, String, String), String>);

    impl Map {
        fn new(entries: &[(&str, &str, &str, &str)]) -> Self {
            Self(
                entries
                    .iter()
                    .map(|(e, p, k, v)| {
                        ((e.to_string(), p.to_string(), k.to_string()), v.to_string())
                    })
                    .collect(),
            )
        }
    }

    impl Lookup for Map {
        fn find(&self, env: &str, path: &str, key: &str) -> Option<String> {
            self.0.get(&(env.to_owned(), path.to_owned(), key.to_owned())).cloned()
        }
    }

    fn at(key: &str) -> Target {
        Target { env: "dev".into(), path: "/".into(), key: key.into() }
    }

    #[test]
    fn expands_local_and_cross_path_references() {
        let map = Map::new(&[
            ("dev", "/", "HOST", "db"),
            ("dev", "/", "PORT", "5432"),
            ("prod", "/", "KEY", "pk"),
            ("dev", "/api/v2", "DB_URL", "postgres://${dev.HOST}:${PORT}"),
            ("dev", "/api/v2", "PORT", "6543"),
        ]);
        assert_eq!(expand("${HOST}:${PORT}", &at("X"), &map), "db:5432");
        assert_eq!(expand("k=${prod.KEY}", &at("X"), &map), "k=pk");
        // Nested: the inner `${PORT}` is local to /api/v2, not to the referring folder.
        assert_eq!(expand("${dev.api.v2.DB_URL}", &at("X"), &map), "postgres://db:6543");
    }

    #[test]
    fn leaves_missing_circular_and_malformed_references_as_text() {
        let map = Map::new(&[
            ("dev", "/", "A", "${B}"),
            ("dev", "/", "B", "${A}"),
            ("dev", "/", "SELF", "x${SELF}"),
        ]);
        assert_eq!(expand("${MISSING}-${dev.nope.K}", &at("X"), &map), "${MISSING}-${dev.nope.K}");
        assert_eq!(expand("${A}", &at("A"), &map), "${A}");
        // B resolves to its own text, whose reference back to A is circular.
        assert_eq!(expand("${B}", &at("A"), &map), "${A}");
        assert_eq!(expand("x${SELF}", &at("SELF"), &map), "x${SELF}");
        assert_eq!(expand("${bad key} ${} $HOME ${", &at("X"), &map), "${bad key} ${} $HOME ${");
        assert_eq!(expand("${a..b}", &at("X"), &map), "${a..b}");
    }

    #[test]
    fn stops_at_depth_ten() {
        // K0 -> K1 -> ... -> K11 = "end"
        let mut entries = Vec::new();
        let names: Vec<String> = (0..12).map(|i| format!("K{i}")).collect();
        let values: Vec<String> = (0..12)
            .map(|i| if i == 11 { "end".to_owned() } else { format!("${{K{}}}", i + 1) })
            .collect();
        for i in 0..12 {
            entries.push(("dev", "/", names[i].as_str(), values[i].as_str()));
        }
        let map = Map::new(&entries);
        // From K2, ten hops reach K11: fully expanded.
        assert_eq!(expand("${K3}", &at("K2"), &map), "end");
        // From the top, the chain is eleven deep: the tenth-level reference stays text.
        assert_eq!(expand("${K1}", &at("K0"), &map), "${K11}");
    }

    /// Fan-out 4 over depth 10 (a million lookups unbounded) stops at the reference budget;
    /// what was not resolved stays as text.
    #[test]
    fn total_work_is_bounded() {
        struct Counting(std::cell::Cell<usize>);
        impl Lookup for Counting {
            fn find(&self, _env: &str, _path: &str, key: &str) -> Option<String> {
                self.0.set(self.0.get() + 1);
                let depth: usize = key[1..].parse().unwrap();
                Some(format!("${{K{0}}}${{K{0}}}${{K{0}}}${{K{0}}}", depth + 1))
            }
        }
        let lookup = Counting(std::cell::Cell::new(0));
        let out = expand("${K0}", &at("X"), &lookup);
        assert!(lookup.0.get() <= MAX_REFERENCES, "{} lookups", lookup.0.get());
        assert!(out.contains("${K"), "unresolved references stay as text");
        assert!(out.len() <= MAX_EXPANDED_BYTES + 16);
    }

    #[test]
    fn renames_only_references_to_the_target() {
        let target = Target { env: "dev".into(), path: "/api".into(), key: "OLD".into() };
        let local = rename_references("a ${OLD} b ${OLDER} ${", "dev", "/api", &target, "NEW");
        assert_eq!(local, "a ${NEW} b ${OLDER} ${");
        let remote =
            rename_references("${dev.api.OLD}/${prod.api.OLD}/${OLD}", "dev", "/", &target, "NEW");
        assert_eq!(remote, "${dev.api.NEW}/${prod.api.OLD}/${OLD}");
    }

    #[test]
    fn formats_multiline_values() {
        assert_eq!(format_multiline("a\nb"), "\"a\\nb\"");
        assert_eq!(format_multiline("ab"), "ab");
    }
}
