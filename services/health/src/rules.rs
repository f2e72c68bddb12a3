//! The health rules, pure: observations in, one status per part out. The same rules are written
//! for people in `docs/health.md`; a change here changes that page.

use std::time::Duration;

use ikit_keys::manager::{AesHealth, JwtHealth, LastOutcome};
use serde::Serialize;
use serde_json::{Value, json};

/// One part's state. Ordered from best to worst, so the overall status is the maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Healthy,
    Degraded,
    Unhealthy,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
        }
    }
}

/// A part's status, a sentence a person acts on, and the figures behind it.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    pub status: Status,
    pub detail: String,
    pub fields: Value,
}

impl Part {
    /// `{"status": .., "detail": .., ...fields}`.
    pub fn to_json(&self) -> Value {
        let mut out = json!({"status": self.status, "detail": self.detail});
        if let (Some(out), Some(fields)) = (out.as_object_mut(), self.fields.as_object()) {
            for (k, v) in fields {
                out.insert(k.clone(), v.clone());
            }
        }
        out
    }
}

/// A scheduled step this long past due means the scheduler is not doing its job.
pub const OVERDUE_GRACE_SECS: i64 = 3600;

fn last_failure(last: Option<&LastOutcome>) -> Option<String> {
    last.filter(|l| !l.ok)
        .map(|l| format!("the last rotation ({}) failed: {}", l.trigger.as_str(), l.detail))
}

/// `/auth/jwt`: unhealthy without a loaded key; degraded when the last rotation failed or a due
/// step is overdue; otherwise healthy.
pub fn jwt_part(
    jwt: Option<&JwtHealth>,
    last: Option<&LastOutcome>,
    load_error: Option<&str>,
    now: i64,
) -> Part {
    let Some(jwt) = jwt else {
        return Part {
            status: Status::Unhealthy,
            detail: format!(
                "no JWT signing key is loaded: {}",
                load_error.unwrap_or("the key folder has not been read yet")
            ),
            fields: json!({}),
        };
    };
    let fields = json!({
        "algorithm": jwt.algorithm,
        "current_kid": jwt.current_kid,
        "current_age_seconds": jwt.current_age_seconds,
        "phase": jwt.phase,
        "published_kids": jwt.published_kids,
        "overlap": match jwt.phase.as_str() {
            "next_published" => "next key published, current key still signs",
            "flipped" => "previous key still published until its tokens expire",
            _ => "one key published",
        },
        "next_rotation_at": jwt.next_step_at,
    });
    let (status, detail) = if let Some(failure) = last_failure(last) {
        (Status::Degraded, failure)
    } else if jwt.next_step_at + OVERDUE_GRACE_SECS < now {
        (
            Status::Degraded,
            format!(
                "a rotation step is overdue by {}s: is the scheduler running?",
                now - jwt.next_step_at
            ),
        )
    } else {
        (
            Status::Healthy,
            format!(
                "signing with {} ({} days old), {}",
                jwt.current_kid,
                jwt.current_age_seconds / 86_400,
                jwt.phase
            ),
        )
    };
    Part { status, detail, fields }
}

/// `/auth/aes`: same rules as JWT, with the active key.
pub fn aes_part(
    aes: Option<&AesHealth>,
    last: Option<&LastOutcome>,
    load_error: Option<&str>,
    now: i64,
) -> Part {
    let Some(aes) = aes.filter(|a| a.active_kid.is_some()) else {
        return Part {
            status: Status::Unhealthy,
            detail: format!(
                "no active AES key is loaded: {}",
                load_error.unwrap_or("the key folder has not been read yet")
            ),
            fields: json!({"active_kid": null}),
        };
    };
    let fields = json!({
        "active_kid": aes.active_kid,
        "active_age_seconds": aes.active_age_seconds,
        "pending_kid": aes.pending_kid,
        "decrypt_only": aes.decrypt_only,
        "retired": aes.retired,
        "next_rotation_at": aes.next_step_at,
    });
    let kid = aes.active_kid.as_deref().unwrap_or_default();
    let (status, detail) = if let Some(failure) = last_failure(last) {
        (Status::Degraded, failure)
    } else if aes.next_step_at + OVERDUE_GRACE_SECS < now {
        (
            Status::Degraded,
            format!(
                "a rotation step is overdue by {}s: is the scheduler running?",
                now - aes.next_step_at
            ),
        )
    } else {
        let days = aes.active_age_seconds.unwrap_or(0) / 86_400;
        (Status::Healthy, format!("encrypting with {kid} ({days} days old)"))
    };
    Part { status, detail, fields }
}

/// What one probe of Infisical saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// `GET /api/status`: the latency of a 2xx answer, or why there was none.
    pub status: Result<Duration, String>,
    /// Whether this service holds a valid access token (or could get one), or why not.
    pub token: Result<(), String>,
    /// How long the access token held has left, when it expires.
    pub token_expires_in: Option<Duration>,
}

/// Infisical: healthy when `/api/status` answers within `slow` and we can log in; degraded when
/// it is slow, failing or unreachable while the keys are loaded (the service keeps serving from
/// memory and cache); unhealthy when it is unreachable and nothing was ever loaded.
pub fn infisical_part(url: &str, probe: &Probe, slow: Duration, keys_loaded: bool) -> Part {
    let latency = probe.status.as_ref().ok().map(|d| d.as_millis() as u64);
    let fields = json!({
        "url": url,
        "latency_ms": latency,
        "error": probe.status.as_ref().err(),
        "token": match &probe.token { Ok(()) => "valid".to_owned(), Err(e) => e.clone() },
        "token_expires_in_seconds": probe.token_expires_in.map(|d| d.as_secs()),
    });
    let (status, detail) = match (&probe.status, &probe.token) {
        (Ok(d), Ok(())) if *d <= slow => {
            (Status::Healthy, format!("answered in {} ms", d.as_millis()))
        }
        (Ok(d), Ok(())) => (
            Status::Degraded,
            format!("slow: answered in {} ms (over {} ms)", d.as_millis(), slow.as_millis()),
        ),
        (Ok(_), Err(e)) => (
            if keys_loaded { Status::Degraded } else { Status::Unhealthy },
            format!("reachable, but login fails: {e}"),
        ),
        (Err(e), _) if keys_loaded => (
            Status::Degraded,
            format!("unreachable ({e}); serving the loaded keys and cached secrets"),
        ),
        (Err(e), _) => {
            (Status::Unhealthy, format!("unreachable ({e}) and no keys were ever loaded"))
        }
    };
    Part { status, detail, fields }
}

/// The cache: L1 always works, so the worst is degraded: Redis configured but down (each
/// replica serves from its own memory and invalidations do not fan out).
pub fn cache_part(redis_configured: bool, redis_up: bool, stale_serves: u64) -> Part {
    let redis = match (redis_configured, redis_up) {
        (false, _) => "not_configured",
        (true, true) => "up",
        (true, false) => "down",
    };
    let fields = json!({"l1": "up", "redis": redis, "stale_serves": stale_serves});
    let (status, detail) = match redis {
        "down" => (
            Status::Degraded,
            "redis is down: serving from this process's cache, invalidations do not reach other replicas"
                .to_owned(),
        ),
        "up" => (Status::Healthy, format!("in-process and redis caches up, {stale_serves} stale serves")),
        _ => (Status::Healthy, format!("in-process cache only, {stale_serves} stale serves")),
    };
    Part { status, detail, fields }
}

/// The audit log: unhealthy when the spool is full (entries are refused), degraded while the
/// database is down or entries wait in the spool, healthy otherwise.
pub fn audit_part(status: &ikit_common::audit::AuditStatus, backend: &str) -> Part {
    let database = if status.last_error.is_some() { "down" } else { "up" };
    let fields = json!({
        "backend": backend,
        "database": database,
        "spool_depth": status.spooled,
        "spool_capacity": status.capacity,
        "last_error": status.last_error,
    });
    let (status_, detail) = if status.is_spool_full() {
        (
            Status::Unhealthy,
            format!(
                "the {backend} database is down and the spool is full: new entries are refused"
            ),
        )
    } else if status.last_error.is_some() || status.spooled > 0 {
        (
            Status::Degraded,
            format!("{} entries wait in the spool for the {backend} database", status.spooled),
        )
    } else {
        (Status::Healthy, format!("{backend} database takes writes"))
    };
    Part { status: status_, detail, fields }
}

/// The worst of the parts.
pub fn overall<'a>(parts: impl IntoIterator<Item = &'a Part>) -> Status {
    parts.into_iter().map(|p| p.status).max().unwrap_or(Status::Healthy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ikit_common::audit::AuditStatus;
    use ikit_keys::Trigger;

    fn jwt(next_step_at: i64) -> JwtHealth {
        JwtHealth {
            algorithm: "ES256".into(),
            current_kid: "kid-1".into(),
            current_age_seconds: 86_400 * 3,
            phase: "stable".into(),
            published_kids: vec!["kid-1".into()],
            next_step_at,
        }
    }

    #[test]
    fn jwt_is_unhealthy_unloaded_degraded_when_failing_or_overdue() {
        let now = 1_000_000;
        let part = jwt_part(None, None, Some("store unreachable"), now);
        assert_eq!(part.status, Status::Unhealthy);
        assert!(part.detail.contains("store unreachable"), "{}", part.detail);
        assert_eq!(jwt_part(Some(&jwt(now + 10)), None, None, now).status, Status::Healthy);
        let overdue = jwt_part(Some(&jwt(now - OVERDUE_GRACE_SECS - 1)), None, None, now);
        assert_eq!(overdue.status, Status::Degraded);
        let failed = LastOutcome {
            at: now,
            trigger: Trigger::Scheduled,
            ok: false,
            detail: "lock lost".into(),
        };
        let part = jwt_part(Some(&jwt(now + 10)), Some(&failed), None, now);
        assert_eq!(part.status, Status::Degraded);
        assert!(part.detail.contains("lock lost"));
        assert_eq!(part.to_json()["current_kid"], "kid-1");
    }

    #[test]
    fn aes_needs_an_active_key() {
        let aes = AesHealth {
            active_kid: None,
            active_age_seconds: None,
            pending_kid: Some("k2".into()),
            decrypt_only: 0,
            retired: 0,
            next_step_at: 0,
        };
        assert_eq!(aes_part(Some(&aes), None, None, 0).status, Status::Unhealthy);
        let active =
            AesHealth { active_kid: Some("k1".into()), active_age_seconds: Some(10), ..aes };
        let part = aes_part(Some(&active), None, None, 0);
        assert_eq!(part.status, Status::Healthy);
        assert_eq!(part.to_json()["active_kid"], "k1");
    }

    #[test]
    fn infisical_down_with_keys_loaded_is_degraded_not_unhealthy() {
        let slow = Duration::from_secs(1);
        let up =
            Probe { status: Ok(Duration::from_millis(5)), token: Ok(()), token_expires_in: None };
        assert_eq!(infisical_part("u", &up, slow, true).status, Status::Healthy);
        let sluggish = Probe {
            status: Ok(Duration::from_millis(1500)),
            token: Ok(()),
            token_expires_in: None,
        };
        assert_eq!(infisical_part("u", &sluggish, slow, true).status, Status::Degraded);
        let down = Probe {
            status: Err("connection refused".into()),
            token: Err("network".into()),
            token_expires_in: None,
        };
        assert_eq!(infisical_part("u", &down, slow, true).status, Status::Degraded);
        assert_eq!(infisical_part("u", &down, slow, false).status, Status::Unhealthy);
        let no_login = Probe {
            status: Ok(Duration::from_millis(5)),
            token: Err("auth".into()),
            token_expires_in: None,
        };
        assert_eq!(infisical_part("u", &no_login, slow, true).status, Status::Degraded);
    }

    #[test]
    fn cache_and_audit_rules() {
        assert_eq!(cache_part(false, false, 0).status, Status::Healthy);
        assert_eq!(cache_part(true, true, 0).status, Status::Healthy);
        assert_eq!(cache_part(true, false, 3).status, Status::Degraded);
        let ok = AuditStatus { spooled: 0, capacity: 10, last_error: None, last_error_ms: None };
        assert_eq!(audit_part(&ok, "sqlite").status, Status::Healthy);
        let down = AuditStatus { spooled: 2, last_error: Some("refused".into()), ..ok.clone() };
        assert_eq!(audit_part(&down, "postgres").status, Status::Degraded);
        let full = AuditStatus { spooled: 10, ..down };
        assert_eq!(audit_part(&full, "postgres").status, Status::Unhealthy);
    }

    #[test]
    fn overall_is_the_worst_part() {
        let part = |status| Part { status, detail: String::new(), fields: json!({}) };
        assert_eq!(overall([&part(Status::Healthy), &part(Status::Degraded)]), Status::Degraded);
        assert_eq!(overall([&part(Status::Unhealthy), &part(Status::Degraded)]), Status::Unhealthy);
        assert_eq!(overall([]), Status::Healthy);
    }
}
