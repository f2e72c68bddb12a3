//! SecretSpec manifests (`secretspec.toml`) for `ikit check`, pure: text in, requirements out,
//! and a check of those requirements against the key names a folder holds (never values).
//!
//! The subset of the format that decides presence: `[project]` (`name`, `revision`),
//! `[profiles.<name>]` tables of `KEY = { description, required, default }` where `required`
//! defaults to true, a profile's `[profiles.<name>.defaults]` (`required`, `default`) applied to
//! its secrets that do not set them (here or in `default`), and inheritance: every other profile starts from `default`
//! and overrides field by field. Fields that do not decide presence (`type`, `generate`,
//! `providers`, `as_path`) are accepted and ignored; `composed` secrets are derived, not stored,
//! so they are not looked up. `extends` (parent manifests on disk) is refused with an error
//! rather than silently checking less than the manifest asks.

use std::collections::{BTreeMap, BTreeSet};

/// The profile used when none is named.
pub const DEFAULT_PROFILE: &str = "default";

/// A manifest error: what is wrong and where (`profiles.prod.API_KEY`), never a default value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct ManifestError {
    pub at: String,
    pub message: String,
}

fn bad(at: impl Into<String>, message: impl Into<String>) -> ManifestError {
    ManifestError { at: at.into(), message: message.into() }
}

/// One declared secret as written in one profile: unset fields inherit.
#[derive(Clone, Default)]
struct Declared {
    required: Option<bool>,
    has_default: Option<bool>,
    composed: bool,
}

#[derive(Clone, Default)]
struct Profile {
    defaults: Declared,
    secrets: BTreeMap<String, Declared>,
}

/// A parsed manifest.
pub struct Manifest {
    pub project: Option<String>,
    profiles: BTreeMap<String, Profile>,
}

impl std::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manifest")
            .field("project", &self.project)
            .field("profiles", &self.profiles.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What one profile asks of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub required: bool,
    pub has_default: bool,
}

/// The outcome of a check; every list sorted by key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckReport {
    pub present: Vec<String>,
    /// Required, no default, not in the folder: the check fails.
    pub missing: Vec<String>,
    /// Not in the folder, but the manifest's default applies.
    pub defaulted: Vec<String>,
    /// Optional and not in the folder.
    pub optional_missing: Vec<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.missing.is_empty()
    }
}

fn parse_declared(at: &str, value: &toml::Value) -> Result<Declared, ManifestError> {
    let table = value.as_table().ok_or_else(|| {
        bad(at, "expected a table such as { description = \"...\", required = true }")
    })?;
    let mut declared = Declared::default();
    for (field, v) in table {
        match field.as_str() {
            "required" => {
                declared.required = Some(
                    v.as_bool()
                        .ok_or_else(|| bad(format!("{at}.required"), "expected true or false"))?,
                );
            }
            "default" => {
                if !v.is_str() {
                    return Err(bad(format!("{at}.default"), "expected a string"));
                }
                declared.has_default = Some(true);
            }
            "composed" => declared.composed = true,
            "description" | "type" | "generate" | "providers" | "as_path" => {}
            other => return Err(bad(format!("{at}.{other}"), "unknown field")),
        }
    }
    Ok(declared)
}

/// Parses a manifest's text; every profile and secret is validated.
pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
    let root: toml::Table =
        toml::from_str(text).map_err(|e| bad("secretspec.toml", e.message().to_owned()))?;
    let mut project = None;
    let mut profiles = BTreeMap::new();
    for (section, value) in &root {
        match section.as_str() {
            "project" => {
                let table = value.as_table().ok_or_else(|| bad("project", "expected a table"))?;
                if table.contains_key("extends") {
                    return Err(bad(
                        "project.extends",
                        "parent manifests are not supported by ikit check: merge them into this file",
                    ));
                }
                project = table.get("name").and_then(toml::Value::as_str).map(str::to_owned);
            }
            "profiles" => {
                let table = value
                    .as_table()
                    .ok_or_else(|| bad("profiles", "expected [profiles.<name>]"))?;
                for (name, body) in table {
                    let at = format!("profiles.{name}");
                    let body = body.as_table().ok_or_else(|| bad(&at, "expected a table"))?;
                    let mut profile = Profile::default();
                    for (key, declared) in body {
                        if key == "defaults" {
                            profile.defaults = parse_declared(&format!("{at}.defaults"), declared)?;
                            continue;
                        }
                        ikit_common::secret::validate_key(key)
                            .map_err(|e| bad(format!("{at}.{key}"), e.to_string()))?;
                        let parsed = parse_declared(&format!("{at}.{key}"), declared)?;
                        profile.secrets.insert(key.clone(), parsed);
                    }
                    profiles.insert(name.clone(), profile);
                }
            }
            other => {
                return Err(bad(other, "unknown section (expected [project] or [profiles.*])"));
            }
        }
    }
    if profiles.is_empty() {
        return Err(bad("profiles", "no profile declared: add [profiles.default]"));
    }
    Ok(Manifest { project, profiles })
}

impl Manifest {
    pub fn profiles(&self) -> impl Iterator<Item = &str> {
        self.profiles.keys().map(String::as_str)
    }

    /// What `profile` requires, `default` merged under it field by field; composed secrets
    /// are left out (they are derived from others, not stored).
    pub fn requirements(&self, profile: &str) -> Result<Vec<Requirement>, ManifestError> {
        let chosen = self.profiles.get(profile).ok_or_else(|| {
            bad(
                format!("profiles.{profile}"),
                format!(
                    "no such profile (declared: {})",
                    self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        let base =
            if profile == DEFAULT_PROFILE { None } else { self.profiles.get(DEFAULT_PROFILE) };
        let keys: BTreeSet<&String> =
            chosen.secrets.keys().chain(base.into_iter().flat_map(|b| b.secrets.keys())).collect();
        let mut out = Vec::new();
        for key in keys {
            let own = chosen.secrets.get(key);
            let inherited = base.and_then(|b| b.secrets.get(key));
            let pick = |f: fn(&Declared) -> Option<bool>| {
                // a field the secret sets (here or in `default`) beats any profile-level default
                own.and_then(f)
                    .or_else(|| inherited.and_then(f))
                    .or_else(|| f(&chosen.defaults))
                    .or_else(|| base.and_then(|b| f(&b.defaults)))
            };
            if own.or(inherited).is_some_and(|d| d.composed) {
                continue;
            }
            out.push(Requirement {
                key: key.clone(),
                required: pick(|d| d.required).unwrap_or(true),
                has_default: pick(|d| d.has_default).unwrap_or(false),
            });
        }
        Ok(out)
    }
}

/// Checks `requirements` against the key names present in the folder.
pub fn check(requirements: &[Requirement], present: &BTreeSet<String>) -> CheckReport {
    let mut report = CheckReport::default();
    for r in requirements {
        let list = if present.contains(&r.key) {
            &mut report.present
        } else if r.has_default {
            &mut report.defaulted
        } else if r.required {
            &mut report.missing
        } else {
            &mut report.optional_missing
        };
        list.push(r.key.clone());
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
[project]
name = "shop"
revision = "1.0"

[profiles.default]
DATABASE_URL = { description = "db", required = true }
API_KEY = { description = "api" }
LOG_LEVEL = { description = "log", required = false, default = "info" }
SENTRY_DSN = { description = "errors", required = false }
FULL_URL = { description = "derived", composed = "{{ DATABASE_URL }}" }

[profiles.development]
DATABASE_URL = { required = false, default = "sqlite://dev.db" }

[profiles.production]
SENTRY_DSN = { required = true }
"#;

    fn names(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn req(key: &str, required: bool, has_default: bool) -> Requirement {
        Requirement { key: key.into(), required, has_default }
    }

    #[test]
    fn default_profile_required_defaults_to_true_and_composed_is_skipped() {
        let m = parse(MANIFEST).unwrap();
        assert_eq!(m.project.as_deref(), Some("shop"));
        assert_eq!(
            m.requirements("default").unwrap(),
            vec![
                req("API_KEY", true, false),
                req("DATABASE_URL", true, false),
                req("LOG_LEVEL", false, true),
                req("SENTRY_DSN", false, false),
            ]
        );
    }

    #[test]
    fn profiles_inherit_from_default_field_by_field() {
        let m = parse(MANIFEST).unwrap();
        let dev = m.requirements("development").unwrap();
        assert!(dev.contains(&req("DATABASE_URL", false, true)));
        assert!(dev.contains(&req("API_KEY", true, false)), "inherited unchanged");
        let prod = m.requirements("production").unwrap();
        assert!(prod.contains(&req("SENTRY_DSN", true, false)));
        assert!(prod.contains(&req("DATABASE_URL", true, false)));
    }

    #[test]
    fn profile_defaults_apply_to_secrets_that_do_not_say() {
        let m = parse(
            "[profiles.default]\nA = { description = \"a\" }\nB = { description = \"b\", required = true }\n\
             [profiles.ci.defaults]\nrequired = false\n",
        )
        .unwrap();
        assert_eq!(
            m.requirements("ci").unwrap(),
            vec![req("A", false, false), req("B", true, false)]
        );
    }

    #[test]
    fn check_lists_missing_required_keys_by_name() {
        let m = parse(MANIFEST).unwrap();
        let report = check(&m.requirements("production").unwrap(), &names(&["API_KEY", "OTHER"]));
        assert!(!report.ok());
        assert_eq!(report.missing, vec!["DATABASE_URL", "SENTRY_DSN"]);
        assert_eq!(report.defaulted, vec!["LOG_LEVEL"]);
        assert_eq!(report.present, vec!["API_KEY"]);

        let report =
            check(&m.requirements("default").unwrap(), &names(&["API_KEY", "DATABASE_URL"]));
        assert!(report.ok());
        assert_eq!(report.optional_missing, vec!["SENTRY_DSN"]);
    }

    #[test]
    fn bad_manifests_are_refused_with_the_place() {
        let cases = [
            ("[profiles.default]\nA = \"x\"\n", "profiles.default.A"),
            ("[profiles.default]\nA = { required = \"yes\" }\n", "profiles.default.A.required"),
            ("[profiles.default]\nA = { requierd = true }\n", "profiles.default.A.requierd"),
            ("[project]\nname = \"x\"\nextends = [\"../a\"]\n", "project.extends"),
            ("[project]\nname = \"x\"\n", "profiles"),
            ("[secrets]\n", "secrets"),
            ("[profiles.default\n", "secretspec.toml"),
        ];
        for (text, at) in cases {
            let err = parse(text).err().unwrap_or_else(|| panic!("accepted {text:?}"));
            assert_eq!(err.at, at, "{text:?}: {err}");
        }
        let m = parse(MANIFEST).unwrap();
        let err = m.requirements("staging").unwrap_err();
        assert!(err.message.contains("development, production"), "{err}");
    }

    #[test]
    fn errors_never_echo_a_default_value() {
        let err =
            parse("[profiles.default]\nA = { default = \"hunter2\", oops = 1 }\n").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
