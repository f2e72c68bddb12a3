//! Wire types shared by the webhook service (publisher) and the client (subscriber): the JSON
//! messages on Redis pub/sub. Names and versions only, never a secret value.

use serde::{Deserialize, Serialize};

/// What happened to one secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Created,
    Updated,
    Deleted,
}

/// One per-key change, derived by the webhook service from Infisical's folder-level events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretChangeEvent {
    pub project: String,
    pub environment: String,
    /// Folder path, `/` for the root.
    pub folder: String,
    pub key: String,
    pub kind: ChangeKind,
    /// The secret's version after the change, when known (none for deletions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Unique per event, for de-duplication and audit.
    pub event_id: String,
}

impl SecretChangeEvent {
    /// Folder and key as one path, e.g. `/auth/jwt/current_private_key`.
    pub fn path(&self) -> String {
        if self.folder == "/" || self.folder.is_empty() {
            format!("/{}", self.key)
        } else {
            format!("{}/{}", self.folder.trim_end_matches('/'), self.key)
        }
    }
}

/// The default prefix of infisical-kit's Redis keys and channels.
pub const DEFAULT_REDIS_PREFIX: &str = "ikit:";

/// The pub/sub channel carrying [`InvalidationMessage`]s, under a key prefix such as `ikit:`.
pub fn invalidation_channel(prefix: &str) -> String {
    format!("{prefix}cache:invalidate")
}

/// The pub/sub channel carrying [`SecretChangeEvent`]s, under a key prefix such as `ikit:`.
pub fn events_channel(prefix: &str) -> String {
    format!("{prefix}secrets:events")
}

/// Which projects and environments an invalidation or a subscription concerns; `None` means
/// all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct InvalidationScope {
    pub project: Option<String>,
    pub environment: Option<String>,
}

impl InvalidationScope {
    /// Every project and environment.
    pub fn all() -> Self {
        Self::default()
    }

    /// One environment of one project.
    pub fn of(project: impl Into<String>, environment: impl Into<String>) -> Self {
        Self { project: Some(project.into()), environment: Some(environment.into()) }
    }

    /// Whether `project` / `environment` lie inside this scope.
    pub fn contains(&self, project: &str, environment: &str) -> bool {
        self.project.as_deref().is_none_or(|p| p == project)
            && self.environment.as_deref().is_none_or(|e| e == environment)
    }
}

/// Asks every replica to drop cached entries matching `pattern` (a key path, a folder prefix or
/// a glob such as `/auth/*`), within one project and/or environment when they are given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidationMessage {
    pub pattern: String,
    /// `None`: every project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// `None`: every environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

impl InvalidationMessage {
    pub fn new(scope: &InvalidationScope, pattern: impl Into<String>) -> Self {
        Self {
            pattern: pattern.into(),
            project: scope.project.clone(),
            environment: scope.environment.clone(),
        }
    }

    pub fn scope(&self) -> InvalidationScope {
        InvalidationScope { project: self.project.clone(), environment: self.environment.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn change_event_round_trips_with_a_stable_shape() {
        let event = SecretChangeEvent {
            project: "p1".into(),
            environment: "prod".into(),
            folder: "/auth/jwt".into(),
            key: "current_private_key".into(),
            kind: ChangeKind::Updated,
            version: Some(4),
            event_id: "evt-1".into(),
        };
        let value = serde_json::to_value(&event).unwrap();
        assert_eq!(
            value,
            json!({"project": "p1", "environment": "prod", "folder": "/auth/jwt",
                   "key": "current_private_key", "kind": "updated", "version": 4,
                   "eventId": "evt-1"})
        );
        let back: SecretChangeEvent = serde_json::from_value(value).unwrap();
        assert_eq!(back, event);
        assert_eq!(event.path(), "/auth/jwt/current_private_key");

        let deleted = SecretChangeEvent { kind: ChangeKind::Deleted, version: None, ..event };
        let text = serde_json::to_string(&deleted).unwrap();
        assert!(!text.contains("version") && text.contains("\"deleted\""), "{text}");
        assert_eq!(serde_json::from_str::<SecretChangeEvent>(&text).unwrap(), deleted);
        let root = SecretChangeEvent { folder: "/".into(), ..deleted };
        assert_eq!(root.path(), "/current_private_key");
        assert!(serde_json::from_value::<SecretChangeEvent>(json!({"kind": "renamed"})).is_err());
    }

    #[test]
    fn channel_names_are_stable() {
        assert_eq!(invalidation_channel(DEFAULT_REDIS_PREFIX), "ikit:cache:invalidate");
        assert_eq!(events_channel("t:"), "t:secrets:events");
    }

    #[test]
    fn invalidation_round_trips() {
        let msg = InvalidationMessage::new(&InvalidationScope::all(), "/auth/*");
        let text = serde_json::to_string(&msg).unwrap();
        assert_eq!(text, r#"{"pattern":"/auth/*"}"#, "an unscoped message keeps its old shape");
        assert_eq!(serde_json::from_str::<InvalidationMessage>(&text).unwrap(), msg);
        assert_eq!(msg.scope(), InvalidationScope::all());

        let scoped = InvalidationMessage::new(&InvalidationScope::of("p1", "prod"), "/auth");
        let text = serde_json::to_string(&scoped).unwrap();
        assert_eq!(text, r#"{"pattern":"/auth","project":"p1","environment":"prod"}"#);
        assert_eq!(serde_json::from_str::<InvalidationMessage>(&text).unwrap(), scoped);
        let env_only: InvalidationMessage =
            serde_json::from_str(r#"{"pattern":"/a","environment":"dev"}"#).unwrap();
        let scope = env_only.scope();
        assert_eq!((scope.project.as_deref(), scope.environment.as_deref()), (None, Some("dev")));
    }

    #[test]
    fn scopes_contain_what_they_name_and_none_means_all() {
        let all = InvalidationScope::all();
        assert!(all.contains("p1", "dev") && all.contains("p2", "prod"));
        let dev = InvalidationScope::of("p1", "dev");
        assert!(dev.contains("p1", "dev"));
        assert!(!dev.contains("p1", "prod") && !dev.contains("p2", "dev"));
        let project = InvalidationScope { project: Some("p1".into()), environment: None };
        assert!(project.contains("p1", "prod") && !project.contains("p2", "prod"));
        let env = InvalidationScope { project: None, environment: Some("prod".into()) };
        assert!(env.contains("p2", "prod") && !env.contains("p2", "dev"));
    }
}
