//! The arguments of `ikit secrets set`, pure: `KEY=value`, `KEY=@file` (the file's bytes),
//! `KEY=-` (standard input, so the value never sits in argv or shell history) and `KEY=\@x` for
//! a literal value starting with `@`. Reading the files and stdin happens in [`resolve`], the
//! one IO edge, given a reader for stdin.

use std::io::Read;
use std::path::{Path, PathBuf};

use ikit_common::SecretValue;

/// Where one value comes from.
pub enum ValueSource {
    Literal(SecretValue),
    File(PathBuf),
    Stdin,
}

/// One `KEY=...` argument.
pub struct Assignment {
    pub key: String,
    pub source: ValueSource,
}

impl std::fmt::Debug for Assignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.source {
            ValueSource::Literal(_) => "literal".to_owned(),
            ValueSource::File(p) => format!("file {}", p.display()),
            ValueSource::Stdin => "stdin".to_owned(),
        };
        f.debug_struct("Assignment").field("key", &self.key).field("source", &source).finish()
    }
}

/// Why an argument or a value was refused; names the key or the argument's position, never the
/// value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignError {
    #[error("argument {position}: expected KEY=VALUE, KEY=@FILE or KEY=- (no '=' found)")]
    NoEquals { position: usize },
    #[error("argument {position}: the key is empty")]
    EmptyKey { position: usize },
    #[error("{key}: {reason}")]
    BadKey { key: String, reason: String },
    #[error("{key}: the value is empty (Infisical refuses empty values)")]
    EmptyValue { key: String },
    #[error("{key}: set twice")]
    Duplicate { key: String },
    #[error("only one value can come from stdin ('-'), but {first} and {second} both ask for it")]
    StdinTwice { first: String, second: String },
    #[error("{key}: reading {path}: {reason}")]
    Read { key: String, path: String, reason: String },
    #[error("{key}: the value is not UTF-8 text")]
    NotUtf8 { key: String },
}

/// Checks a key as `ikit secrets set` accepts it: what the server accepts, and not starting with
/// a digit (the official CLI's rule: such a key cannot be an environment variable).
pub fn check_key(key: &str) -> Result<(), AssignError> {
    let bad = |reason: &str| AssignError::BadKey { key: key.to_owned(), reason: reason.to_owned() };
    if key.trim() != key {
        return Err(bad("surrounding white space"));
    }
    ikit_common::secret::validate_key(key).map_err(|e| bad(&e.to_string()))?;
    if key.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(bad("a key cannot start with a digit"));
    }
    if key.chars().any(|c| c.is_control() || c == '=') {
        return Err(bad("control characters and '=' are not allowed in a key"));
    }
    Ok(())
}

/// Parses the arguments in order (1-based positions in errors); a key given twice and two
/// stdin values are refused.
pub fn parse_all(args: &[String]) -> Result<Vec<Assignment>, AssignError> {
    let mut out: Vec<Assignment> = Vec::with_capacity(args.len());
    let mut stdin_key: Option<String> = None;
    for (i, arg) in args.iter().enumerate() {
        let position = i + 1;
        let (key, raw) = arg.split_once('=').ok_or(AssignError::NoEquals { position })?;
        if key.is_empty() {
            return Err(AssignError::EmptyKey { position });
        }
        check_key(key)?;
        if out.iter().any(|a| a.key == key) {
            return Err(AssignError::Duplicate { key: key.to_owned() });
        }
        let source = match raw {
            "" => return Err(AssignError::EmptyValue { key: key.to_owned() }),
            "-" => {
                if let Some(first) = &stdin_key {
                    return Err(AssignError::StdinTwice {
                        first: first.clone(),
                        second: key.to_owned(),
                    });
                }
                stdin_key = Some(key.to_owned());
                ValueSource::Stdin
            }
            _ if raw.starts_with("\\@") => ValueSource::Literal(SecretValue::new(&raw[1..])),
            _ if raw.starts_with('@') && raw.len() > 1 => {
                ValueSource::File(PathBuf::from(&raw[1..]))
            }
            _ => ValueSource::Literal(SecretValue::new(raw)),
        };
        out.push(Assignment { key: key.to_owned(), source });
    }
    Ok(out)
}

/// Text read from stdin loses one trailing line break (`echo v | ikit secrets set K=-` stores
/// `v`); a file's bytes are kept exactly.
fn strip_one_newline(mut text: String) -> String {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    text
}

/// Reads every file and stdin value; `stdin` is read at most once.
pub fn resolve(
    assignments: Vec<Assignment>,
    base: &Path,
    stdin: &mut dyn Read,
) -> Result<Vec<(String, SecretValue)>, AssignError> {
    let mut out = Vec::with_capacity(assignments.len());
    for Assignment { key, source } in assignments {
        let value = match source {
            ValueSource::Literal(v) => v,
            ValueSource::File(path) => {
                let full = base.join(&path);
                let bytes = std::fs::read(&full).map_err(|e| AssignError::Read {
                    key: key.clone(),
                    path: path.display().to_string(),
                    reason: e.kind().to_string(),
                })?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| AssignError::NotUtf8 { key: key.clone() })?;
                SecretValue::new(text)
            }
            ValueSource::Stdin => {
                let mut bytes = Vec::new();
                stdin.read_to_end(&mut bytes).map_err(|e| AssignError::Read {
                    key: key.clone(),
                    path: "stdin".into(),
                    reason: e.kind().to_string(),
                })?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| AssignError::NotUtf8 { key: key.clone() })?;
                SecretValue::new(strip_one_newline(text))
            }
        };
        if value.is_empty() {
            return Err(AssignError::EmptyValue { key });
        }
        out.push((key, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn literal_file_stdin_and_escaped_at() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), "line1\nline2\n").unwrap();
        let parsed =
            parse_all(&args(&["A=x=y", "B=@cert.pem", "C=-", "D=\\@literal", "E=@"])).unwrap();
        let mut stdin = "from stdin\n".as_bytes();
        let values = resolve(parsed, dir.path(), &mut stdin).unwrap();
        let shown: Vec<(&str, &str)> =
            values.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
        assert_eq!(
            shown,
            vec![
                ("A", "x=y"),
                ("B", "line1\nline2\n"),
                ("C", "from stdin"),
                ("D", "@literal"),
                ("E", "@"),
            ]
        );
    }

    #[test]
    fn bad_arguments_are_refused_by_position_or_key() {
        let cases: [(&[&str], AssignError); 6] = [
            (&["A"], AssignError::NoEquals { position: 1 }),
            (&["A=1", "=2"], AssignError::EmptyKey { position: 2 }),
            (&["A="], AssignError::EmptyValue { key: "A".into() }),
            (&["A=1", "A=2"], AssignError::Duplicate { key: "A".into() }),
            (&["A=-", "B=-"], AssignError::StdinTwice { first: "A".into(), second: "B".into() }),
            (
                &["1A=x"],
                AssignError::BadKey {
                    key: "1A".into(),
                    reason: "a key cannot start with a digit".into(),
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_all(&args(input)).unwrap_err(), expected, "{input:?}");
        }
        assert!(matches!(parse_all(&args(&["a/b=1"])), Err(AssignError::BadKey { .. })));
    }

    #[test]
    fn empty_stdin_or_missing_file_is_an_error_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(parse_all(&args(&["K=-"])).unwrap(), dir.path(), &mut "\n".as_bytes())
            .unwrap_err();
        assert_eq!(err, AssignError::EmptyValue { key: "K".into() });
        let err = resolve(parse_all(&args(&["K=@nope"])).unwrap(), dir.path(), &mut "".as_bytes())
            .unwrap_err();
        assert!(matches!(err, AssignError::Read { ref key, .. } if key == "K"), "{err}");
    }

    #[test]
    fn errors_and_debug_never_show_a_value() {
        let parsed = parse_all(&args(&["K=hunter2"])).unwrap();
        assert!(!format!("{parsed:?}").contains("hunter2"));
        let err = parse_all(&args(&["K=hunter2", "K=hunter2"])).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }
}
