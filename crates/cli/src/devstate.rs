//! `IKIT_DEV_STATE`: point ikit at a running `ikit dev` (`make dev`) by its state file instead of
//! exporting its URLs and credentials. The file's values only fill gaps: with `INFISICAL_DOMAIN`
//! or `INFISICAL_API_URL` set (a real server) no Infisical variable is touched, a credential
//! already set (say a token from `ikit login --plain`) is kept, and an explicit
//! `IKIT_HEALTH_URL` keeps its own admin token. Pure: the file's text and the env map in, the
//! completed env map out; credentials go from file to map without being copied anywhere else.

use std::collections::BTreeMap;

use serde_json::Value;

/// The variable naming the state file.
pub const VAR: &str = "IKIT_DEV_STATE";

/// Variables that say "a real server is configured": then no Infisical variable is filled.
const SERVER_VARS: [&str; 2] = ["INFISICAL_DOMAIN", "INFISICAL_API_URL"];
/// Variables that carry a credential: then the stack's client id and secret are not filled
/// (`ikit login --plain` against the stack, then `INFISICAL_TOKEN=...`, keeps the token).
const CREDENTIAL_VARS: [&str; 4] = [
    "INFISICAL_TOKEN",
    "INFISICAL_UNIVERSAL_AUTH_CLIENT_ID",
    "INFISICAL_UNIVERSAL_AUTH_ACCESS_TOKEN",
    "INFISICAL_MACHINE_IDENTITY_ID",
];

fn set(env: &BTreeMap<String, String>, name: &str) -> bool {
    env.get(name).is_some_and(|v| !v.trim().is_empty())
}

/// Fills `env` from the state file's JSON text. `path` names the file in errors.
pub fn overlay(
    mut env: BTreeMap<String, String>,
    path: &str,
    text: &str,
) -> Result<BTreeMap<String, String>, String> {
    let state: Value = serde_json::from_str(text).map_err(|e| {
        format!("{path}: not an ikit dev state file ({:?} at line {})", e.classify(), e.line())
    })?;
    let field = |name: &str| -> Result<String, String> {
        state
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("{path}: `{name}` missing (is it written by `ikit dev`?)"))
    };
    if !SERVER_VARS.iter().any(|v| set(&env, v)) {
        env.insert("INFISICAL_DOMAIN".into(), field("emulator_url")?);
        if !CREDENTIAL_VARS.iter().any(|v| set(&env, v)) {
            env.insert("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID".into(), field("client_id")?);
            env.insert("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET".into(), field("client_secret")?);
        }
        if !set(&env, "INFISICAL_PROJECT_ID") {
            env.insert("INFISICAL_PROJECT_ID".into(), field("project_id")?);
        }
    }
    if !set(&env, "IKIT_HEALTH_URL") {
        env.insert("IKIT_HEALTH_URL".into(), field("health_url")?);
        if !set(&env, "IKIT_ADMIN_TOKEN") {
            env.insert("IKIT_ADMIN_TOKEN".into(), field("admin_token")?);
        }
    }
    Ok(env)
}

/// Reads the file `IKIT_DEV_STATE` names, when set, and [`overlay`]s it.
pub fn apply(env: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String> {
    let Some(path) = env.get(VAR).map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()) else {
        return Ok(env);
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!("{VAR}={path}: {} (start the stack with `make dev` first)", e.kind())
    })?;
    overlay(env, &path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = r#"{"emulator_url":"http://127.0.0.1:1","health_url":"http://127.0.0.1:2",
        "admin_token":"admin-token-from-file","client_id":"cid","client_secret":"csecret",
        "project_id":"proj","environment":"dev","webhook_url":null,"webhook_secret":"w"}"#;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn fills_every_gap_from_the_state_file() {
        let out = overlay(env(&[]), "dev.json", STATE).unwrap();
        assert_eq!(out["INFISICAL_DOMAIN"], "http://127.0.0.1:1");
        assert_eq!(out["INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET"], "csecret");
        assert_eq!(out["INFISICAL_PROJECT_ID"], "proj");
        assert_eq!(out["IKIT_HEALTH_URL"], "http://127.0.0.1:2");
        assert_eq!(out["IKIT_ADMIN_TOKEN"], "admin-token-from-file");
    }

    #[test]
    fn a_configured_real_server_is_left_alone() {
        let out = overlay(
            env(&[
                ("INFISICAL_DOMAIN", "https://real"),
                ("IKIT_HEALTH_URL", "https://h"),
                ("IKIT_ADMIN_TOKEN", "mine"),
            ]),
            "dev.json",
            STATE,
        )
        .unwrap();
        assert_eq!(out["INFISICAL_DOMAIN"], "https://real");
        assert!(!out.contains_key("INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET"));
        assert!(!out.contains_key("INFISICAL_PROJECT_ID"));
        assert_eq!(out["IKIT_HEALTH_URL"], "https://h");
        assert_eq!(out["IKIT_ADMIN_TOKEN"], "mine");
        // an explicit health URL never receives the dev stack's admin token
        let out = overlay(env(&[("IKIT_HEALTH_URL", "https://h")]), "dev.json", STATE).unwrap();
        assert!(!out.contains_key("IKIT_ADMIN_TOKEN"));
    }

    #[test]
    fn a_token_from_login_is_kept_and_pointed_at_the_stack() {
        let out = overlay(env(&[("INFISICAL_TOKEN", "tok")]), "dev.json", STATE).unwrap();
        assert_eq!(out["INFISICAL_TOKEN"], "tok");
        assert_eq!(out["INFISICAL_DOMAIN"], "http://127.0.0.1:1");
        assert_eq!(out["INFISICAL_PROJECT_ID"], "proj");
        assert!(!out.contains_key("INFISICAL_UNIVERSAL_AUTH_CLIENT_ID"));
    }

    #[test]
    fn a_bad_file_is_an_error_naming_it_and_never_its_text() {
        let err = overlay(env(&[]), "dev.json", "{\"admin_token\": \"sekrit\"").unwrap_err();
        assert!(err.starts_with("dev.json: "), "{err}");
        assert!(!err.contains("sekrit"));
        let err = overlay(env(&[]), "dev.json", "{}").unwrap_err();
        assert!(err.contains("emulator_url"), "{err}");
        let err = apply(env(&[(VAR, "/nonexistent/dev.json")])).unwrap_err();
        assert!(err.contains("make dev"), "{err}");
    }
}
