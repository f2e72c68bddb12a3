//! The mapping file (TOML), pure: which source key goes to which environment and folder under which
//! name. Every key is either placed or listed as skipped; a key that cannot be placed is an error
//! naming it, never a silent skip.
//!
//! ```toml
//! skip = ["DEBUG"]                 # source keys left out on purpose
//!
//! [defaults]
//! environment = "dev"
//! folder = "/"                     # nested JSON folders are placed under it
//! normalize = true                 # upper-case, anything outside [A-Za-z0-9_] becomes _
//! overwrite = false                # an existing different value is a conflict, not an update
//!
//! [[rule]]
//! key = "JWT_PRIVATE_KEY"          # one key ...
//! folder = "/auth/jwt"
//! name = "PRIVATE_KEY"
//!
//! [[rule]]
//! prefix = "DB_"                   # ... or every key with a prefix
//! folder = "/database"
//! strip_prefix = true
//! environment = "prod"
//! ```

use std::collections::BTreeMap;

use ikit_common::secret::{SecretValue, normalize_folder, validate_environment, validate_key};
use serde::Deserialize;

use crate::MigrateError;
use crate::source::SourceSecret;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub skip: Vec<String>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub environment: Option<String>,
    #[serde(default = "root_folder")]
    pub folder: String,
    #[serde(default)]
    pub normalize: bool,
    #[serde(default)]
    pub overwrite: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults { environment: None, folder: root_folder(), normalize: false, overwrite: false }
    }
}

fn root_folder() -> String {
    "/".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub key: Option<String>,
    pub prefix: Option<String>,
    pub environment: Option<String>,
    pub folder: Option<String>,
    /// New name for a `key` rule.
    pub name: Option<String>,
    /// Drop the prefix from names matched by a `prefix` rule.
    #[serde(default)]
    pub strip_prefix: bool,
}

/// Where one secret goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub environment: String,
    pub folder: String,
    pub key: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let separator = if self.folder == "/" { "" } else { "/" };
        write!(f, "{}:{}{separator}{}", self.environment, self.folder, self.key)
    }
}

/// A source key with its place. No `Debug`: it holds a value.
pub struct MappedSecret {
    pub origin: String,
    pub source_key: String,
    pub target: Target,
    pub value: SecretValue,
}

/// A source key the mapping leaves out on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub origin: String,
    pub key: String,
}

pub struct Mapped {
    pub secrets: Vec<MappedSecret>,
    pub skipped: Vec<Skipped>,
}

impl Mapping {
    /// Parses a mapping file; unknown fields are errors (a typo must not silently change a target).
    pub fn from_toml(file: &str, text: &str) -> Result<Mapping, MigrateError> {
        let mapping: Mapping = toml::from_str(text).map_err(|error| MigrateError::Document {
            file: file.to_owned(),
            reason: error.message().to_owned(),
        })?;
        for rule in &mapping.rules {
            if rule.key.is_some() == rule.prefix.is_some() {
                return Err(MigrateError::Document {
                    file: file.to_owned(),
                    reason: "each [[rule]] needs exactly one of `key` or `prefix`".to_owned(),
                });
            }
        }
        Ok(mapping)
    }

    /// Places every source key. The first matching rule wins (a `key` rule before any `prefix`
    /// rule); keys no rule names go to the defaults.
    pub fn apply(&self, sources: Vec<SourceSecret>) -> Result<Mapped, MigrateError> {
        let mut secrets: Vec<MappedSecret> = Vec::new();
        let mut skipped = Vec::new();
        let mut placed: BTreeMap<Target, String> = BTreeMap::new();
        for source in sources {
            if self.skip.contains(&source.key) {
                skipped.push(Skipped { origin: source.origin, key: source.key });
                continue;
            }
            let target = self.place(&source)?;
            if let Some(first) = placed.get(&target) {
                return Err(MigrateError::Collision {
                    first: first.clone(),
                    second: source.key,
                    target: target.to_string(),
                });
            }
            placed.insert(target.clone(), source.key.clone());
            secrets.push(MappedSecret {
                origin: source.origin,
                source_key: source.key,
                target,
                value: source.value,
            });
        }
        Ok(Mapped { secrets, skipped })
    }

    fn place(&self, source: &SourceSecret) -> Result<Target, MigrateError> {
        let unmapped = |reason: String| MigrateError::Unmapped {
            key: source.key.clone(),
            origin: source.origin.clone(),
            reason,
        };
        let rule = self
            .rules
            .iter()
            .find(|rule| rule.key.as_deref() == Some(source.key.as_str()))
            .or_else(|| {
                self.rules.iter().find(|rule| {
                    rule.prefix.as_deref().is_some_and(|prefix| source.key.starts_with(prefix))
                })
            });
        let environment = rule
            .and_then(|rule| rule.environment.clone())
            .or_else(|| self.defaults.environment.clone())
            .ok_or_else(|| unmapped("no rule or default gives it an environment".to_owned()))?;
        validate_environment(&environment).map_err(|error| unmapped(error.to_string()))?;
        let base = rule.and_then(|rule| rule.folder.as_deref()).unwrap_or(&self.defaults.folder);
        let joined = match (base.trim_end_matches('/'), source.folder.as_str()) {
            (base, "/") => format!("{base}/"),
            (base, nested) => format!("{base}{nested}"),
        };
        let folder = normalize_folder(&joined).map_err(|error| unmapped(error.to_string()))?;
        let name = match rule {
            Some(Rule { name: Some(name), .. }) => name.clone(),
            Some(Rule { prefix: Some(prefix), strip_prefix: true, .. }) => {
                source.key[prefix.len()..].to_owned()
            }
            _ => source.key.clone(),
        };
        let name = if self.defaults.normalize { normalize_key(&name) } else { name };
        let key = validate_key(&name).map_err(|error| unmapped(error.to_string()))?;
        if key != name {
            return Err(unmapped("surrounding white space in the name".to_owned()));
        }
        Ok(Target { environment, folder, key })
    }
}

/// Upper-case, with every character outside `[A-Za-z0-9_]` replaced by `_`.
pub fn normalize_key(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c.to_ascii_uppercase() } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(folder: &str, key: &str) -> SourceSecret {
        SourceSecret {
            origin: "test".to_owned(),
            folder: folder.to_owned(),
            key: key.to_owned(),
            value: SecretValue::new("v"),
        }
    }

    const SEEDS: &str = r#"
skip = ["DEBUG"]

[defaults]
environment = "dev"
normalize = true

[[rule]]
key = "JWT_PRIVATE_KEY"
folder = "/auth/jwt"
name = "PRIVATE_KEY"

[[rule]]
prefix = "DB_"
folder = "/database"
strip_prefix = true
environment = "prod"
"#;

    fn targets(mapping: &Mapping, sources: Vec<SourceSecret>) -> Vec<String> {
        let mapped = mapping.apply(sources).expect("maps");
        mapped.secrets.iter().map(|s| s.target.to_string()).collect()
    }

    #[test]
    fn rules_defaults_skips_and_normalisation() {
        let mapping = Mapping::from_toml("map.toml", SEEDS).expect("parses");
        let mapped = mapping
            .apply(vec![
                source("/", "JWT_PRIVATE_KEY"),
                source("/", "DB_URL"),
                source("/", "api.key-v2"),
                source("/", "DEBUG"),
                source("/infrastructure", "region"),
            ])
            .expect("maps");
        let placed: Vec<String> = mapped.secrets.iter().map(|s| s.target.to_string()).collect();
        assert_eq!(
            placed,
            [
                "dev:/auth/jwt/PRIVATE_KEY",
                "prod:/database/URL",
                "dev:/API_KEY_V2",
                "dev:/infrastructure/REGION"
            ]
        );
        assert_eq!(mapped.skipped.len(), 1);
        assert_eq!(mapped.skipped[0].key, "DEBUG");
    }

    #[test]
    fn a_key_without_an_environment_is_an_error_naming_it() {
        let mapping =
            Mapping::from_toml("map.toml", "[defaults]\nfolder = \"/x\"\n").expect("parses");
        let error = mapping.apply(vec![source("/", "ORPHAN")]).err().expect("unmapped").to_string();
        assert_eq!(
            error,
            "key \"ORPHAN\" from test cannot be mapped: no rule or default gives it an environment"
        );
    }

    #[test]
    fn an_invalid_name_is_an_error_naming_the_key() {
        let mapping =
            Mapping::from_toml("m", "[defaults]\nenvironment = \"dev\"\n").expect("parses");
        let error = mapping.apply(vec![source("/", "a:b")]).err().expect("refused").to_string();
        assert!(error.starts_with("key \"a:b\" from test cannot be mapped"), "{error}");
        let error =
            mapping.apply(vec![source("/bad folder", "K")]).err().expect("refused").to_string();
        assert!(error.starts_with("key \"K\" from test cannot be mapped"), "{error}");
    }

    #[test]
    fn two_keys_landing_on_one_target_are_a_collision() {
        let mapping =
            Mapping::from_toml("m", "[defaults]\nenvironment = \"dev\"\nnormalize = true\n")
                .expect("parses");
        let error = mapping
            .apply(vec![source("/", "api-key"), source("/", "API_KEY")])
            .err()
            .expect("collision")
            .to_string();
        assert_eq!(error, "keys \"api-key\" and \"API_KEY\" both map to dev:/API_KEY");
        assert_eq!(targets(&mapping, vec![source("/", "x")]), ["dev:/X"]);
    }

    #[test]
    fn typos_and_ambiguous_rules_are_refused() {
        assert!(Mapping::from_toml("m", "[defaults]\nenviroment = \"dev\"\n").is_err());
        assert!(Mapping::from_toml("m", "[[rule]]\nfolder = \"/x\"\n").is_err());
        assert!(Mapping::from_toml("m", "[[rule]]\nkey = \"A\"\nprefix = \"B\"\n").is_err());
    }
}
