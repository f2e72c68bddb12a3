//! Pure decoding of a delivery body (`infisical-api.md` 5.4): bytes in, what to do out.
//! Bodies are decoded leniently (unknown fields are ignored) but the fields a decision needs
//! must be there with the right type. Values in a payload are never read: the folder is refetched.

use serde_json::Value;

/// What a verified delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Refetch this folder and diff it (`secrets.modified`, or a per-key `secret.*` event).
    Refetch { project: Option<String>, environment: String, path: String, key: Option<String> },
    /// Infisical's `test` event.
    Test,
    /// An event this service does not process; recorded and acknowledged.
    Ignored,
}

/// A decoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The event name as sent.
    pub event: String,
    pub timestamp_ms: Option<i64>,
    pub action: Action,
}

const PER_KEY: &[&str] = &["secret.created", "secret.updated", "secret.rotated", "secret.deleted"];

/// The metric label of an event name: the known names, else `other` (labels stay bounded).
pub fn event_label(event: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "secrets.modified",
        "test",
        "secret.created",
        "secret.updated",
        "secret.rotated",
        "secret.deleted",
        "secrets.reminder-expired",
        "secrets.rotation-failed",
        "honey-token.triggered",
        "secrets.change-request.modified",
    ];
    KNOWN.iter().find(|k| **k == event).copied().unwrap_or("other")
}

fn text<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get(field).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Decodes a body. The error names what is wrong, never quotes the body.
pub fn decode(body: &[u8]) -> Result<Delivery, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("not JSON (line {}, column {})", e.line(), e.column()))?;
    let Some(obj) = v.as_object() else { return Err("not a JSON object".into()) };
    let event =
        obj.get("event").and_then(Value::as_str).ok_or("`event` must be a string")?.to_owned();
    let timestamp_ms = match obj.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(t) => Some(t.as_i64().ok_or("`timestamp` must be whole milliseconds")?),
    };
    let project = obj.get("project").cloned().unwrap_or(Value::Null);
    if !(project.is_null() || project.is_object()) {
        return Err("`project` must be an object".into());
    }
    let action = if event == "secrets.modified" {
        let environment =
            text(&project, "environment").ok_or("`project.environment` is missing")?;
        let path = text(&project, "secretPath").ok_or("`project.secretPath` is missing")?;
        let id = text(&project, "projectId").or_else(|| text(&project, "workspaceId"));
        Action::Refetch {
            project: Some(id.ok_or("`project.workspaceId` is missing")?.to_owned()),
            environment: environment.to_owned(),
            path: normalize(path)?,
            key: None,
        }
    } else if PER_KEY.contains(&event.as_str()) {
        let payload = obj.get("payload").ok_or("`payload` is missing")?;
        let key = text(payload, "secretKey").ok_or("`payload.secretKey` is missing")?;
        let pick = |field: &str| text(payload, field).or_else(|| text(&project, field));
        let environment = pick("environment").ok_or("`payload.environment` is missing")?;
        Action::Refetch {
            project: pick("projectId").or_else(|| pick("workspaceId")).map(str::to_owned),
            environment: environment.to_owned(),
            path: normalize(pick("secretPath").unwrap_or("/"))?,
            key: Some(key.to_owned()),
        }
    } else if event == "test" {
        Action::Test
    } else {
        Action::Ignored
    };
    Ok(Delivery { event, timestamp_ms, action })
}

fn normalize(path: &str) -> Result<String, String> {
    ikit_common::secret::normalize_folder(path).map_err(|e| format!("bad secretPath: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_real_shapes() {
        let d = decode(br#"{"event":"secrets.modified","project":{"workspaceId":"p","environment":"dev","secretPath":"/app/"},"timestamp":5}"#).unwrap();
        assert_eq!(d.timestamp_ms, Some(5));
        assert_eq!(
            d.action,
            Action::Refetch {
                project: Some("p".into()),
                environment: "dev".into(),
                path: "/app".into(),
                key: None
            }
        );
        let d = decode(br#"{"event":"secret.updated","payload":{"secretKey":"K","secretValue":"leak","environment":"prod"},"timestamp":5}"#).unwrap();
        assert_eq!(
            d.action,
            Action::Refetch {
                project: None,
                environment: "prod".into(),
                path: "/".into(),
                key: Some("K".into())
            }
        );
        assert_eq!(decode(br#"{"event":"test","project":{}}"#).unwrap().action, Action::Test);
        assert_eq!(
            decode(br#"{"event":"honey-token.triggered"}"#).unwrap().action,
            Action::Ignored
        );
    }

    #[test]
    fn bad_shapes_are_named() {
        for (body, want) in [
            (&b"{"[..], "not JSON"),
            (b"[]", "not a JSON object"),
            (br#"{"event":1}"#, "`event`"),
            (br#"{"event":"test","timestamp":"x"}"#, "`timestamp`"),
            (br#"{"event":"secrets.modified","project":{"workspaceId":"p","secretPath":"/"}}"#, "environment"),
            (br#"{"event":"secrets.modified","project":{"workspaceId":"p","environment":"dev","secretPath":"../x"}}"#, "secretPath"),
            (br#"{"event":"secret.deleted","payload":{"environment":"dev"}}"#, "secretKey"),
            (br#"{"event":"test","project":"p"}"#, "`project`"),
        ] {
            let e = decode(body).unwrap_err();
            assert!(e.contains(want), "{e} should name {want}");
        }
        assert_eq!(event_label("secrets.modified"), "secrets.modified");
        assert_eq!(event_label("anything-else"), "other");
    }
}
