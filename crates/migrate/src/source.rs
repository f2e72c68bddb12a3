//! Sources, pure: `.env` text, an env map, JSON and YAML objects. Each yields the keys it holds with the
//! folder its nesting implies (relative, `/` for top level) and where it came from, for errors.

use std::collections::BTreeMap;

use ikit_common::secret::SecretValue;

use crate::MigrateError;
use crate::dotenv::{self, Interpolation};

/// One key read from a source. No `Debug`: it holds a value.
pub struct SourceSecret {
    /// Where the key was read: `file:line`, `env`, `file.json`.
    pub origin: String,
    /// Folder implied by the source's nesting (`/` unless nested JSON put it deeper).
    pub folder: String,
    pub key: String,
    pub value: SecretValue,
}

/// A `.env` file's statements. A key written without `=` is an error naming it: it has no value to
/// migrate, and dropping it silently would lose it.
pub fn from_dotenv(
    file: &str,
    text: &str,
    interpolation: Interpolation<'_>,
) -> Result<Vec<SourceSecret>, MigrateError> {
    dotenv::parse(file, text, interpolation)?
        .into_iter()
        .map(|entry| {
            let origin = format!("{file}:{}", entry.line);
            let value = entry.value.ok_or_else(|| MigrateError::NoValue {
                key: entry.key.clone(),
                origin: origin.clone(),
            })?;
            Ok(SourceSecret { origin, folder: "/".to_owned(), key: entry.key, value })
        })
        .collect()
}

/// The variables of an env map whose names start with `prefix`, the prefix removed when
/// `strip_prefix` is set. The map is the caller's (binaries read the process environment once).
pub fn from_env(
    env: &BTreeMap<String, String>,
    prefix: &str,
    strip_prefix: bool,
) -> Vec<SourceSecret> {
    env.iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .filter(|(name, _)| !strip_prefix || name.len() > prefix.len())
        .map(|(name, value)| SourceSecret {
            origin: "env".to_owned(),
            folder: "/".to_owned(),
            key: if strip_prefix { name[prefix.len()..].to_owned() } else { name.clone() },
            value: SecretValue::new(value.as_str()),
        })
        .collect()
}

/// A JSON object: strings, numbers and booleans are values (numbers and booleans as written);
/// nested objects are folders. `null` and arrays are errors naming the key.
pub fn from_json(file: &str, text: &str) -> Result<Vec<SourceSecret>, MigrateError> {
    let document: serde_json::Value =
        serde_json::from_str(text).map_err(|error| MigrateError::Document {
            file: file.to_owned(),
            // serde_json's messages carry a position and a category, never the input text
            reason: error.to_string(),
        })?;
    let serde_json::Value::Object(object) = document else {
        return Err(MigrateError::Document {
            file: file.to_owned(),
            reason: "the top level is not an object".to_owned(),
        });
    };
    let mut out = Vec::new();
    walk_json(file, "/", &object, &mut out)?;
    Ok(out)
}

fn walk_json(
    file: &str,
    folder: &str,
    object: &serde_json::Map<String, serde_json::Value>,
    out: &mut Vec<SourceSecret>,
) -> Result<(), MigrateError> {
    for (key, value) in object {
        let text = match value {
            serde_json::Value::String(text) => text.clone(),
            serde_json::Value::Number(number) => number.to_string(),
            serde_json::Value::Bool(flag) => flag.to_string(),
            serde_json::Value::Object(inner) => {
                let nested =
                    if folder == "/" { format!("/{key}") } else { format!("{folder}/{key}") };
                walk_json(file, &nested, inner, out)?;
                continue;
            }
            serde_json::Value::Null | serde_json::Value::Array(_) => {
                return Err(MigrateError::Unsupported {
                    key: key.clone(),
                    origin: format!("{file}:{folder}"),
                });
            }
        };
        out.push(SourceSecret {
            origin: file.to_owned(),
            folder: folder.to_owned(),
            key: key.clone(),
            value: SecretValue::new(text),
        });
    }
    Ok(())
}

/// A YAML mapping: strings are values, nested mappings are folders. Numbers, booleans, null,
/// lists and tagged values are errors naming the key: the YAML parser keeps no record of how a
/// scalar was written (`1.10`, `0755`, `True` would arrive as `1.1`, `493`, `true`), so only a
/// quoted or plain string migrates exactly. Errors give the position, never the document's text.
pub fn from_yaml(file: &str, text: &str) -> Result<Vec<SourceSecret>, MigrateError> {
    let document: serde_norway::Value =
        serde_norway::from_str(text).map_err(|error| MigrateError::Document {
            file: file.to_owned(),
            reason: match error.location() {
                Some(at) => format!("not valid YAML at line {} column {}", at.line(), at.column()),
                None => "not valid YAML".to_owned(),
            },
        })?;
    let serde_norway::Value::Mapping(mapping) = document else {
        return Err(MigrateError::Document {
            file: file.to_owned(),
            reason: "the top level is not a mapping".to_owned(),
        });
    };
    let mut out = Vec::new();
    walk_yaml(file, "/", &mapping, &mut out)?;
    Ok(out)
}

fn walk_yaml(
    file: &str,
    folder: &str,
    mapping: &serde_norway::Mapping,
    out: &mut Vec<SourceSecret>,
) -> Result<(), MigrateError> {
    for (key, value) in mapping {
        let serde_norway::Value::String(key) = key else {
            return Err(MigrateError::Document {
                file: file.to_owned(),
                reason: format!("a key in {folder} is not a string"),
            });
        };
        let unsupported = |what: &str| MigrateError::UnsupportedYaml {
            key: key.clone(),
            origin: format!("{file}:{folder}"),
            what: what.to_owned(),
        };
        match value {
            serde_norway::Value::String(text) => out.push(SourceSecret {
                origin: file.to_owned(),
                folder: folder.to_owned(),
                key: key.clone(),
                value: SecretValue::new(text.as_str()),
            }),
            serde_norway::Value::Mapping(inner) => {
                let nested =
                    if folder == "/" { format!("/{key}") } else { format!("{folder}/{key}") };
                walk_yaml(file, &nested, inner, out)?;
            }
            serde_norway::Value::Number(_) => return Err(unsupported("a number")),
            serde_norway::Value::Bool(_) => return Err(unsupported("a boolean")),
            serde_norway::Value::Null => return Err(unsupported("null")),
            serde_norway::Value::Sequence(_) => return Err(unsupported("a list")),
            serde_norway::Value::Tagged(_) => return Err(unsupported("a tagged value")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(secrets: &[SourceSecret]) -> Vec<(String, String, String)> {
        secrets
            .iter()
            .map(|s| (s.folder.clone(), s.key.clone(), s.value.expose().to_owned()))
            .collect()
    }

    #[test]
    fn env_map_filtered_by_prefix_and_stripped() {
        let env = BTreeMap::from([
            ("JOURNAL_DB".to_owned(), "postgres://x".to_owned()),
            ("JOURNAL_".to_owned(), "bare prefix".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ]);
        let stripped = from_env(&env, "JOURNAL_", true);
        assert_eq!(
            summary(&stripped),
            [("/".to_owned(), "DB".to_owned(), "postgres://x".to_owned())]
        );
        let kept = from_env(&env, "JOURNAL_", false);
        assert_eq!(kept.len(), 2);
        assert!(kept.iter().all(|s| s.key.starts_with("JOURNAL_")));
    }

    #[test]
    fn nested_json_objects_become_folders() {
        let text = r#"{"PORT": 8080, "DEBUG": false, "auth": {"jwt": {"KEY": "k"}}, "database": {"URL": "u"}}"#;
        let secrets = from_json("cfg.json", text).expect("parses");
        assert_eq!(
            summary(&secrets),
            [
                ("/".to_owned(), "PORT".to_owned(), "8080".to_owned()),
                ("/".to_owned(), "DEBUG".to_owned(), "false".to_owned()),
                ("/auth/jwt".to_owned(), "KEY".to_owned(), "k".to_owned()),
                ("/database".to_owned(), "URL".to_owned(), "u".to_owned()),
            ]
        );
    }

    #[test]
    fn json_arrays_and_nulls_are_errors_naming_the_key() {
        let error = from_json("cfg.json", r#"{"db": {"HOSTS": ["a", "b"]}}"#)
            .err()
            .expect("arrays are refused")
            .to_string();
        assert!(error.contains("\"HOSTS\""), "{error}");
        assert!(error.contains("cfg.json:/db"), "{error}");
        assert!(from_json("cfg.json", "[1]").is_err());
    }

    #[test]
    fn nested_yaml_mappings_become_folders() {
        let text = "PORT: \"8080\"\nauth:\n  jwt:\n    KEY: |\n      line one\n      line two\ndatabase:\n  URL: 'postgres://u@h/db'\n";
        let secrets = from_yaml("cfg.yaml", text).expect("parses");
        assert_eq!(
            summary(&secrets),
            [
                ("/".to_owned(), "PORT".to_owned(), "8080".to_owned()),
                ("/auth/jwt".to_owned(), "KEY".to_owned(), "line one\nline two\n".to_owned()),
                ("/database".to_owned(), "URL".to_owned(), "postgres://u@h/db".to_owned()),
            ]
        );
    }

    #[test]
    fn yaml_scalars_that_would_change_are_errors_naming_the_key() {
        for (text, what) in [
            ("db:\n  VERSION: 1.10\n", "a number"),
            ("db:\n  VERSION: True\n", "a boolean"),
            ("db:\n  VERSION: ~\n", "null"),
            ("db:\n  VERSION: [a]\n", "a list"),
        ] {
            let error = from_yaml("cfg.yaml", text).err().expect("refused").to_string();
            assert!(error.contains("\"VERSION\" at cfg.yaml:/db"), "{error}");
            assert!(error.contains(what), "{error}");
        }
    }

    #[test]
    fn broken_yaml_names_the_position_not_the_text() {
        let error = from_yaml("cfg.yaml", "A: \"s3cr3t-value\n  B: [\n")
            .err()
            .expect("refused")
            .to_string();
        assert!(error.starts_with("cfg.yaml: not valid YAML"), "{error}");
        assert!(!error.contains("s3cr3t"), "{error}");
        assert!(from_yaml("cfg.yaml", "- a\n- b\n").is_err());
    }

    #[test]
    fn a_dotenv_key_without_value_is_an_error_naming_it() {
        let error = from_dotenv(".env", "A=1\nLONELY\n", Interpolation::Off)
            .err()
            .expect("no value is an error")
            .to_string();
        assert_eq!(error, "key \"LONELY\" at .env:2 has no value");
    }
}
