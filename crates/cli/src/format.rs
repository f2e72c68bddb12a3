//! The export formats, pure: sorted secrets in, file text out. Each format's quoting reads back
//! exactly in the reader it is made for: `dotenv` in python-dotenv (the quoter shared with
//! `ikit migrate`), `dotenv-export` in a POSIX shell (`source`, `eval`), `docker` in
//! `docker --env-file` (which takes values verbatim and so cannot hold every value: those are
//! refused by name), `json`, `yaml` (JSON-style double-quoted scalars, valid YAML) and `csv`
//! (RFC 4180). No error holds a value.

use crate::CliError;
use crate::fetch::SecretMap;

/// `KEY="…"` lines python-dotenv reads back exactly with interpolation off. No quoting stops
/// its default interpolation of `${NAME}` (single quotes included), so such keys are listed by
/// [`interpolated_keys`] for a warning.
pub fn dotenv(secrets: &SecretMap) -> Result<String, CliError> {
    let mut out = String::new();
    for (key, value) in secrets {
        let line = ikit_migrate::dotenv::quote(key, value.expose())
            .map_err(|e| CliError::Failed(format!("cannot export as dotenv: {e}")))?;
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

/// Keys whose values python-dotenv's `load_dotenv` / `dotenv_values` would change by
/// interpolation (a `${` in the value) unless called with `interpolate=False`.
pub fn interpolated_keys(secrets: &SecretMap) -> Vec<&str> {
    secrets.iter().filter(|(_, v)| v.expose().contains("${")).map(|(k, _)| k.as_str()).collect()
}

fn shell_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `export KEY='…'` lines: POSIX single quotes, a `'` written as `'\''`; everything else,
/// newlines included, is literal inside them.
pub fn dotenv_export(secrets: &SecretMap) -> Result<String, CliError> {
    let mut out = String::new();
    for (key, value) in secrets {
        if !shell_name(key) {
            return Err(CliError::Failed(format!(
                "cannot export {key:?} for a shell: not a variable name"
            )));
        }
        out.push_str("export ");
        out.push_str(key);
        out.push_str("='");
        out.push_str(&value.expose().replace('\'', r"'\''"));
        out.push_str("'\n");
    }
    Ok(out)
}

/// The longest line docker's `--env-file` reader takes (Go's `bufio.Scanner` default).
const DOCKER_MAX_LINE: usize = 64 * 1024;

/// `KEY=value` lines for `docker --env-file`, which takes the value verbatim up to the end of
/// the line: a value with a line feed, a trailing carriage return, or too long a line cannot be
/// written and is refused.
pub fn docker(secrets: &SecretMap) -> Result<String, CliError> {
    let mut out = String::new();
    for (key, value) in secrets {
        let v = value.expose();
        let refuse = |why: &str| {
            Err(CliError::Failed(format!("cannot export {key} for docker --env-file: {why}")))
        };
        if key.is_empty()
            || key.starts_with('#')
            || key.contains(['=', '\0'])
            || key.chars().any(char::is_whitespace)
        {
            return refuse("docker cannot read that variable name");
        }
        if v.contains('\n') {
            return refuse("the value spans lines, which docker cannot read");
        }
        if v.ends_with('\r') {
            return refuse("the value ends in a carriage return, which docker drops");
        }
        if v.contains('\0') {
            return refuse("the value holds a NUL byte");
        }
        if key.len() + 1 + v.len() >= DOCKER_MAX_LINE {
            return refuse("the line is longer than docker reads (64 KiB)");
        }
        out.push_str(key);
        out.push('=');
        out.push_str(v);
        out.push('\n');
    }
    Ok(out)
}

/// `[{"key": …, "value": …}, …]`, sorted by key.
pub fn json(secrets: &SecretMap) -> String {
    let items: Vec<serde_json::Value> =
        secrets.iter().map(|(k, v)| serde_json::json!({ "key": k, "value": v.expose() })).collect();
    let mut text = serde_json::to_string_pretty(&items).expect("strings serialize");
    text.push('\n');
    text
}

/// A YAML double-quoted scalar: JSON's string escapes (a subset of YAML's), plus escapes for
/// the characters YAML does not allow unescaped (DEL, C1 controls, BOM, line and paragraph
/// separators).
fn yaml_quoted(s: &str) -> String {
    let json = serde_json::to_string(s).expect("strings serialize");
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '\u{7f}' | '\u{80}'..='\u{9f}' | '\u{feff}' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            other => out.push(other),
        }
    }
    out
}

/// `"KEY": "value"` lines, sorted by key.
pub fn yaml(secrets: &SecretMap) -> String {
    let mut out = String::new();
    for (key, value) in secrets {
        out.push_str(&yaml_quoted(key));
        out.push_str(": ");
        out.push_str(&yaml_quoted(value.expose()));
        out.push('\n');
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// `Key,Value` then one row per secret (RFC 4180 quoting).
pub fn csv(secrets: &SecretMap) -> String {
    let mut out = String::from("Key,Value\n");
    for (key, value) in secrets {
        out.push_str(&csv_field(key));
        out.push(',');
        out.push_str(&csv_field(value.expose()));
        out.push('\n');
    }
    out
}

/// Replaces each `{{ .KEY }}` (or `{{KEY}}`) in `template` with the value of KEY; an unknown
/// name is an error naming it and the line.
pub fn template(template: &str, secrets: &SecretMap) -> Result<String, CliError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let line = 1 + template[..template.len() - rest.len() + start].matches('\n').count();
        let end = after.find("}}").ok_or_else(|| {
            CliError::Usage(format!("template line {line}: `{{{{` without `}}}}`"))
        })?;
        let name = after[..end].trim();
        let name = name.strip_prefix('.').unwrap_or(name);
        let value = secrets.get(name).ok_or_else(|| {
            CliError::Failed(format!("template line {line}: no secret named {name:?}"))
        })?;
        out.push_str(value.expose());
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ikit_common::SecretValue;

    fn map(pairs: &[(&str, &str)]) -> SecretMap {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), SecretValue::new(*v))).collect()
    }

    #[test]
    fn shell_quoting_escapes_only_the_single_quote() {
        let out = dotenv_export(&map(&[("B", "it's $HOME\n\\x"), ("A", "")])).unwrap();
        assert_eq!(out, "export A=''\nexport B='it'\\''s $HOME\n\\x'\n");
        let err = dotenv_export(&map(&[("A-B", "v")])).unwrap_err();
        assert!(err.to_string().contains("\"A-B\""), "{err}");
    }

    #[test]
    fn docker_takes_values_verbatim_and_refuses_what_it_cannot_hold_by_name() {
        assert_eq!(docker(&map(&[("K", " 'q' \"d\" #x ")])).unwrap(), "K= 'q' \"d\" #x \n");
        for bad in ["two\nlines", "cr\r"] {
            let err = docker(&map(&[("KEY", bad)])).unwrap_err();
            assert!(err.to_string().contains("KEY"), "{err}");
            assert!(!err.to_string().contains(bad), "{err}");
        }
        assert!(docker(&map(&[("K", &"x".repeat(DOCKER_MAX_LINE))])).is_err());
    }

    #[test]
    fn yaml_and_csv_quote_what_they_must() {
        let out = yaml(&map(&[("K", "a\u{7f}b\u{85}\"\n")]));
        assert_eq!(out, "\"K\": \"a\\u007fb\\u0085\\\"\\n\"\n");
        let out = csv(&map(&[("K", "x,\"y\"\nz"), ("L", " lead")]));
        assert_eq!(out, "Key,Value\nK,\"x,\"\"y\"\"\nz\"\nL,\" lead\"\n");
    }

    #[test]
    fn templates_fill_names_and_refuse_unknown_ones() {
        let secrets = map(&[("DB", "postgres://x")]);
        assert_eq!(
            template("url={{ .DB }}\nraw={{DB}}", &secrets).unwrap(),
            "url=postgres://x\nraw=postgres://x"
        );
        let err = template("a\n{{ .NOPE }}", &secrets).unwrap_err();
        assert!(err.to_string().contains("line 2") && err.to_string().contains("NOPE"), "{err}");
        assert!(template("{{ open", &secrets).is_err());
    }
}
