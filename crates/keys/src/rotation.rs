//! Rotation as a persisted state machine, pure.
//!
//! JWT: stable -> next published (JWKS holds current and next) -> after the overlap, flip (next
//! signs, the old key stays in JWKS as previous) -> after the overlap again, the previous key is
//! retired. AES: add a pending key -> after the activation delay, make it active (the old active
//! key becomes decrypt-only) -> a decrypt-only key is retired only when it is old enough by
//! policy and the caller forces it.
//!
//! The decision functions ([`next_jwt_step`], [`next_aes_step`]) take the state, `now` and the
//! policy and return a [`JwtStep`] or [`AesStep`]. The layout functions compute what each folder
//! must hold for a committed state; the manager writes the difference. Crash safety comes from the
//! order: new material is written before the state that refers to it, the state (the commit
//! point) before anything derived from it, and deletions last.

use std::collections::BTreeMap;

use ikit_common::SecretValue;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cipher::{AesKey, AesKeyRing, AesKeyState, RingKey};
use crate::error::{Error, Result};
use crate::jwt::{JwkSet, JwtAlgorithm, JwtKey, PublicJwk};
use crate::lock::Fence;
use crate::policy::Policy;

/// Secret names in the JWT folder.
pub mod jwt_names {
    pub const CURRENT_PRIVATE_KEY: &str = "current_private_key";
    pub const NEXT_PRIVATE_KEY: &str = "next_private_key";
    pub const CURRENT_PUBLIC_KEY: &str = "current_public_key";
    pub const NEXT_PUBLIC_KEY: &str = "next_public_key";
    pub const PUBLIC_JWKS: &str = "public_jwks";
    pub const ROTATION_STATE: &str = "rotation_state";
}

/// Secret names in the AES folder.
pub mod aes_names {
    pub const KEYS_MAP: &str = "keys_map";
    pub const ACTIVE_KID: &str = "active_kid";
    pub const CURRENT_KEY: &str = "current_key";
    pub const NEXT_KEY: &str = "next_key";
    /// The [`Fence`](crate::lock::Fence) of the last commit of `keys_map` (written just before it).
    pub const ROTATION_FENCE: &str = "rotation_fence";
}

/// Which key system a rotation is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    Jwt,
    Aes,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jwt => "jwt",
            Self::Aes => "aes",
        }
    }
}

/// What asked for a rotation; the `method` label of the rotation metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Scheduled,
    Forced,
    Manual,
    Webhook,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Forced => "forced",
            Self::Manual => "manual",
            Self::Webhook => "webhook",
        }
    }
}

/// The next JWT key, published but not yet signing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextJwt {
    pub kid: String,
    pub published_at: i64,
}

/// A former signing key, still published so its tokens verify until it is retired.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreviousJwt {
    pub kid: String,
    /// The public JWK, kept here because its private key is gone after the flip.
    pub jwk: Value,
    pub flipped_at: i64,
}

/// The JWT rotation state, stored as `rotation_state` beside the keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JwtState {
    pub algorithm: JwtAlgorithm,
    pub current_kid: String,
    /// When the current key began signing.
    pub current_since: i64,
    #[serde(default)]
    pub next: Option<NextJwt>,
    #[serde(default)]
    pub previous: Vec<PreviousJwt>,
    pub updated_at: i64,
    /// The lock and token of the leader that committed this state (see [`crate::lock`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<Fence>,
}

/// Where a JWT rotation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JwtPhase {
    Stable,
    NextPublished,
    Flipped,
}

impl JwtPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stable => "stable",
            Self::NextPublished => "next_published",
            Self::Flipped => "flipped",
        }
    }
}

impl JwtState {
    pub fn new(key: &JwtKey, now: i64) -> Self {
        Self {
            algorithm: key.algorithm(),
            current_kid: key.kid().to_owned(),
            current_since: now,
            next: None,
            previous: Vec::new(),
            updated_at: now,
            fence: None,
        }
    }

    pub fn phase(&self) -> JwtPhase {
        if self.next.is_some() {
            JwtPhase::NextPublished
        } else if !self.previous.is_empty() {
            JwtPhase::Flipped
        } else {
            JwtPhase::Stable
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        serde_json::from_str(text)
            .map_err(|e| Error::State(format!("rotation_state is not valid: {e}")))
    }

    pub fn render(&self) -> SecretValue {
        SecretValue::new(
            serde_json::to_string(self).unwrap_or_else(|_| unreachable!("plain struct")),
        )
    }

    /// Publishes `next` (not yet signing).
    pub fn publish(&self, next: &JwtKey, now: i64) -> Self {
        Self {
            next: Some(NextJwt { kid: next.kid().to_owned(), published_at: now }),
            updated_at: now,
            ..self.clone()
        }
    }

    /// The next key signs from now; the current one becomes previous.
    pub fn flip(&self, current_jwk: Value, now: i64) -> Result<Self> {
        let next =
            self.next.clone().ok_or_else(|| Error::State("flip without a next key".into()))?;
        let mut previous = self.previous.clone();
        previous.push(PreviousJwt {
            kid: self.current_kid.clone(),
            jwk: current_jwk,
            flipped_at: now,
        });
        Ok(Self {
            algorithm: self.algorithm,
            current_kid: next.kid,
            current_since: now,
            next: None,
            previous,
            updated_at: now,
            fence: self.fence.clone(),
        })
    }

    /// Emergency: the next key signs from now and the current key is dropped at once, not kept
    /// as previous (its tokens stop verifying).
    pub fn promote_dropping_current(&self, now: i64) -> Result<Self> {
        let next =
            self.next.clone().ok_or_else(|| Error::State("promote without a next key".into()))?;
        Ok(Self {
            current_kid: next.kid,
            current_since: now,
            next: None,
            updated_at: now,
            ..self.clone()
        })
    }

    /// Emergency: stops publishing `kid` (the next key or a previous one) at once.
    pub fn drop_kid(&self, kid: &str, now: i64) -> Self {
        Self {
            next: self.next.clone().filter(|n| n.kid != kid),
            previous: self.previous.iter().filter(|p| p.kid != kid).cloned().collect(),
            updated_at: now,
            ..self.clone()
        }
    }

    pub fn retire(&self, kids: &[String], now: i64) -> Self {
        Self {
            previous: self.previous.iter().filter(|p| !kids.contains(&p.kid)).cloned().collect(),
            updated_at: now,
            ..self.clone()
        }
    }
}

/// The next thing a JWT rotation should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwtStep {
    PublishNext,
    Flip,
    Retire(Vec<String>),
    /// Nothing to do before `until`.
    Wait {
        until: i64,
    },
}

/// Decides the next JWT step. Retirement of previous keys comes first and is never forced (their
/// tokens may still be valid). `force` skips the schedule (a next key is published now), never
/// the overlap: the flip still waits until the next key has been published for `jwt_overlap`, so
/// every replica and every verifier caching JWKS knows it before it signs. Stopping trust in a
/// key at once is the separate emergency revoke.
pub fn next_jwt_step(state: &JwtState, now: i64, policy: &Policy, force: bool) -> JwtStep {
    let retire_at = |p: &PreviousJwt| p.flipped_at.saturating_add(policy.jwt_overlap);
    let due: Vec<String> =
        state.previous.iter().filter(|p| now >= retire_at(p)).map(|p| p.kid.clone()).collect();
    if !due.is_empty() {
        return JwtStep::Retire(due);
    }
    let next_retirement = state.previous.iter().map(retire_at).min();
    let wait =
        |until: i64| JwtStep::Wait { until: next_retirement.map_or(until, |r| r.min(until)) };
    match &state.next {
        Some(next) => {
            let flip_at = next.published_at.saturating_add(policy.jwt_overlap);
            if now >= flip_at { JwtStep::Flip } else { wait(flip_at) }
        }
        None => {
            let start_at = state.current_since.saturating_add(policy.jwt_rotation_interval);
            if force || now >= start_at { JwtStep::PublishNext } else { wait(start_at) }
        }
    }
}

/// The next thing an AES rotation should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AesStep {
    AddNext,
    Activate(String),
    Retire(Vec<String>),
    Wait { until: i64 },
}

/// Decides the next AES step. Retirement needs both `force` and the policy age; `force` also
/// skips the schedule (a pending key is added now), never the activation delay: a new key
/// encrypts only once every replica has had the delay to load it.
pub fn next_aes_step(ring: &AesKeyRing, now: i64, policy: &Policy, force: bool) -> AesStep {
    if force {
        let due: Vec<String> = ring
            .keys()
            .filter(|k| k.state == AesKeyState::DecryptOnly)
            .filter(|k| {
                now >= k
                    .deactivated_at
                    .unwrap_or(k.created_at)
                    .saturating_add(policy.aes_retire_after)
            })
            .map(|k| k.key.kid().to_owned())
            .collect();
        if !due.is_empty() {
            return AesStep::Retire(due);
        }
    }
    if let Some(pending) = ring.pending() {
        let at = pending.created_at.saturating_add(policy.aes_activation_delay);
        return if now >= at || ring.active().is_none() {
            AesStep::Activate(pending.key.kid().to_owned())
        } else {
            AesStep::Wait { until: at }
        };
    }
    match ring.active() {
        None => AesStep::AddNext,
        Some(active) => {
            let due = active
                .activated_at
                .unwrap_or(active.created_at)
                .saturating_add(policy.aes_rotation_interval);
            if force || now >= due { AesStep::AddNext } else { AesStep::Wait { until: due } }
        }
    }
}

/// AES ring transitions.
pub fn aes_add_pending(ring: &AesKeyRing, key: AesKey, now: i64) -> AesKeyRing {
    let mut ring = ring.clone();
    ring.put(RingKey {
        key,
        state: AesKeyState::Pending,
        created_at: now,
        activated_at: None,
        deactivated_at: None,
        retired_at: None,
    });
    ring
}

pub fn aes_activate(ring: &AesKeyRing, kid: &str, now: i64) -> Result<AesKeyRing> {
    let mut ring = ring.clone();
    if ring.get(kid).is_none() {
        return Err(Error::UnknownKid(kid.to_owned()));
    }
    let old: Vec<String> = ring
        .keys()
        .filter(|k| k.state == AesKeyState::Active && k.key.kid() != kid)
        .map(|k| k.key.kid().to_owned())
        .collect();
    for old in old {
        if let Some(k) = ring.get_mut(&old) {
            k.state = AesKeyState::DecryptOnly;
            k.deactivated_at = Some(now);
        }
    }
    if let Some(k) = ring.get_mut(kid)
        && k.state != AesKeyState::Active
    {
        k.state = AesKeyState::Active;
        k.activated_at = Some(now);
        k.deactivated_at = None;
        k.retired_at = None;
    }
    Ok(ring)
}

/// Emergency: retires `kid` now whatever its age (pending or decrypt-only; an active key must be
/// replaced first). Ciphertexts under it stop decrypting.
pub fn aes_revoke(ring: &AesKeyRing, kid: &str, now: i64) -> Result<AesKeyRing> {
    let mut ring = ring.clone();
    let key = ring.get_mut(kid).ok_or_else(|| Error::UnknownKid(kid.to_owned()))?;
    match key.state {
        AesKeyState::Active => {
            return Err(Error::State(format!("{kid} is active: activate another key first")));
        }
        AesKeyState::Retired => {}
        AesKeyState::Pending | AesKeyState::DecryptOnly => {
            key.state = AesKeyState::Retired;
            key.retired_at = Some(now);
        }
    }
    Ok(ring)
}

pub fn aes_retire(ring: &AesKeyRing, kids: &[String], now: i64) -> AesKeyRing {
    let mut ring = ring.clone();
    for kid in kids {
        if let Some(k) = ring.get_mut(kid)
            && k.state == AesKeyState::DecryptOnly
        {
            k.state = AesKeyState::Retired;
            k.retired_at = Some(now);
        }
    }
    ring
}

/// A write to one folder.
#[derive(Clone, Debug)]
pub enum Write {
    Upsert(String, SecretValue),
    Delete(Vec<String>),
}

impl Write {
    pub fn describe(&self) -> String {
        match self {
            Self::Upsert(name, _) => format!("upsert {name}"),
            Self::Delete(names) => format!("delete {}", names.join(",")),
        }
    }
}

/// What a folder must hold: names with their values, in write order, and names to delete.
#[derive(Debug, Default)]
pub struct Layout {
    pub upserts: Vec<(String, SecretValue)>,
    pub absent: Vec<String>,
}

impl Layout {
    /// The writes that bring `stored` to this layout: changed upserts in order, then one delete.
    pub fn writes_from(&self, stored: &BTreeMap<String, SecretValue>) -> Vec<Write> {
        let mut writes: Vec<Write> = self
            .upserts
            .iter()
            .filter(|(name, value)| !stored.get(name).is_some_and(|s| s.verify(value.expose())))
            .map(|(name, value)| Write::Upsert(name.clone(), value.clone()))
            .collect();
        let delete: Vec<String> =
            self.absent.iter().filter(|n| stored.contains_key(*n)).cloned().collect();
        if !delete.is_empty() {
            writes.push(Write::Delete(delete));
        }
        writes
    }
}

/// The JWT keys of a committed state, resolved by kid from whichever slot holds them.
#[derive(Clone, Debug)]
pub struct JwtKeys {
    pub state: JwtState,
    pub current: JwtKey,
    pub next: Option<JwtKey>,
    pub previous: Vec<PublicJwk>,
}

impl JwtKeys {
    /// Every key verifiers must accept now: current, next, previous.
    pub fn published(&self) -> JwkSet {
        let mut set = JwkSet::new([self.current.public().clone()]);
        if let Some(next) = &self.next {
            set.insert(next.public().clone());
        }
        for p in &self.previous {
            set.insert(p.clone());
        }
        set
    }

    /// The canonical JWT folder for this state (rotation_state itself is written by the step).
    pub fn layout(&self) -> Layout {
        use jwt_names::*;
        let jwk = |k: &PublicJwk| SecretValue::new(k.to_json().to_string());
        let mut upserts = vec![
            (CURRENT_PRIVATE_KEY.to_owned(), self.current.pem().clone()),
            (CURRENT_PUBLIC_KEY.to_owned(), jwk(self.current.public())),
        ];
        let mut absent = Vec::new();
        match &self.next {
            Some(next) => {
                upserts.push((NEXT_PRIVATE_KEY.to_owned(), next.pem().clone()));
                upserts.push((NEXT_PUBLIC_KEY.to_owned(), jwk(next.public())));
            }
            None => absent.extend([NEXT_PRIVATE_KEY.to_owned(), NEXT_PUBLIC_KEY.to_owned()]),
        }
        upserts.push((
            PUBLIC_JWKS.to_owned(),
            SecretValue::new(self.published().to_json().to_string()),
        ));
        upserts.push((ROTATION_STATE.to_owned(), self.state.render()));
        Layout { upserts, absent }
    }
}

/// The private keys found in a JWT folder by kid, and its committed state if any.
#[derive(Debug, Default)]
pub struct JwtFolder {
    pub privates: BTreeMap<String, JwtKey>,
    pub state: Option<JwtState>,
    /// The kid held in `current_private_key`, if it parses.
    pub current_slot: Option<String>,
}

impl JwtFolder {
    pub fn parse(stored: &BTreeMap<String, SecretValue>) -> Result<Self> {
        use jwt_names::*;
        let mut folder = Self::default();
        for slot in [CURRENT_PRIVATE_KEY, NEXT_PRIVATE_KEY] {
            if let Some(pem) = stored.get(slot) {
                let key = JwtKey::from_pem(pem.expose()).map_err(|e| {
                    Error::State(format!("{slot} is not a usable private key: {e}"))
                })?;
                if slot == CURRENT_PRIVATE_KEY {
                    folder.current_slot = Some(key.kid().to_owned());
                }
                folder.privates.insert(key.kid().to_owned(), key);
            }
        }
        folder.state =
            stored.get(ROTATION_STATE).map(|s| JwtState::parse(s.expose())).transpose()?;
        Ok(folder)
    }

    /// Resolves the committed state's keys. `None` when there is no state yet.
    pub fn resolve(&self) -> Result<Option<JwtKeys>> {
        let Some(state) = &self.state else { return Ok(None) };
        let find = |kid: &str, role: &str| {
            self.privates.get(kid).cloned().ok_or_else(|| {
                Error::State(format!("{role} key {kid:?} named by rotation_state is missing"))
            })
        };
        let current = find(&state.current_kid, "current")?;
        let next = state.next.as_ref().map(|n| find(&n.kid, "next")).transpose()?;
        let previous = state
            .previous
            .iter()
            .map(|p| {
                let jwk = PublicJwk::from_json(&p.jwk)?;
                if jwk.kid() != p.kid {
                    return Err(Error::State(format!(
                        "previous key {:?} has kid {:?}",
                        p.kid,
                        jwk.kid()
                    )));
                }
                Ok(jwk)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(JwtKeys { state: state.clone(), current, next, previous }))
    }
}

/// The canonical AES folder for a ring.
pub fn aes_layout(ring: &AesKeyRing) -> Layout {
    use aes_names::*;
    let mut upserts = vec![(KEYS_MAP.to_owned(), ring.to_keys_map())];
    let mut absent = Vec::new();
    if let Some(active) = ring.active() {
        upserts.push((ACTIVE_KID.to_owned(), SecretValue::new(active.key.kid())));
        upserts.push((CURRENT_KEY.to_owned(), active.key.to_base64()));
    }
    match ring.pending() {
        Some(pending) => upserts.push((NEXT_KEY.to_owned(), pending.key.to_base64())),
        None => absent.push(NEXT_KEY.to_owned()),
    }
    Layout { upserts, absent }
}

/// The fence stamped on a folder's last commit: in `rotation_state` (JWT) or `rotation_fence`
/// (AES).
pub fn stored_fence(
    kind: KeyKind,
    stored: &BTreeMap<String, SecretValue>,
) -> Result<Option<Fence>> {
    match kind {
        KeyKind::Jwt => Ok(stored
            .get(jwt_names::ROTATION_STATE)
            .map(|s| JwtState::parse(s.expose()))
            .transpose()?
            .and_then(|s| s.fence)),
        KeyKind::Aes => stored
            .get(aes_names::ROTATION_FENCE)
            .map(|s| {
                serde_json::from_str(s.expose())
                    .map_err(|e| Error::State(format!("rotation_fence is not valid: {e}")))
            })
            .transpose(),
    }
}

/// Fences a step's writes: refuses them when `stored` (the stamp read from the store just before)
/// is a higher token of the same lock, and otherwise stamps `ours` on the commit they write
/// (`rotation_state` itself, or `rotation_fence` just before `keys_map`). Writes that commit
/// nothing are left as they are.
pub fn fence_writes(
    kind: KeyKind,
    ours: &Fence,
    stored: Option<&Fence>,
    writes: &mut Vec<Write>,
) -> Result<()> {
    if !ours.admits(stored) {
        return Err(Error::Fenced { ours: ours.token, stored: stored.map_or(0, |s| s.token) });
    }
    match kind {
        KeyKind::Jwt => {
            for write in writes.iter_mut() {
                if let Write::Upsert(name, value) = write
                    && name == jwt_names::ROTATION_STATE
                {
                    let mut state = JwtState::parse(value.expose())?;
                    state.fence = Some(ours.clone());
                    *value = state.render();
                }
            }
        }
        KeyKind::Aes => {
            let commit = writes
                .iter()
                .position(|w| matches!(w, Write::Upsert(n, _) if n == aes_names::KEYS_MAP));
            if let Some(i) = commit
                && stored != Some(ours)
            {
                let stamp =
                    serde_json::to_string(ours).unwrap_or_else(|_| unreachable!("plain struct"));
                writes.insert(
                    i,
                    Write::Upsert(aes_names::ROTATION_FENCE.to_owned(), SecretValue::new(stamp)),
                );
            }
        }
    }
    Ok(())
}

/// One line of a rotation check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

fn check(name: &str, ok: bool, detail: impl Into<String>) -> Check {
    Check { name: name.to_owned(), ok, detail: detail.into() }
}

/// Checks a JWT folder: the state's keys exist, public keys match private ones, and
/// `public_jwks` holds every key the state requires.
pub fn verify_jwt_folder(stored: &BTreeMap<String, SecretValue>) -> Vec<Check> {
    use jwt_names::*;
    let folder = match JwtFolder::parse(stored) {
        Ok(f) => f,
        Err(e) => return vec![check("jwt keys parse", false, e.to_string())],
    };
    let keys = match folder.resolve() {
        Ok(Some(keys)) => keys,
        Ok(None) => return vec![check("jwt rotation_state present", false, "no rotation_state")],
        Err(e) => return vec![check("jwt keys named by state exist", false, e.to_string())],
    };
    let mut checks = vec![check(
        "jwt keys named by state exist",
        true,
        format!("phase {}", keys.state.phase().as_str()),
    )];
    let public_matches = |slot: &str, key: &JwtKey| match stored.get(slot) {
        None => check(&format!("{slot} matches private key"), false, "missing"),
        Some(text) => {
            let ok = serde_json::from_str::<Value>(text.expose())
                .ok()
                .and_then(|v| PublicJwk::from_json(&v).ok())
                .is_some_and(|p| &p == key.public());
            check(&format!("{slot} matches private key"), ok, key.kid())
        }
    };
    checks.push(public_matches(CURRENT_PUBLIC_KEY, &keys.current));
    checks.push(check(
        "current_private_key is the signing key",
        folder.current_slot.as_deref() == Some(keys.current.kid()),
        keys.current.kid(),
    ));
    if let Some(next) = &keys.next {
        checks.push(public_matches(NEXT_PUBLIC_KEY, next));
    }
    let jwks = stored
        .get(PUBLIC_JWKS)
        .and_then(|t| serde_json::from_str::<Value>(t.expose()).ok())
        .and_then(|v| JwkSet::from_json(&v).ok());
    match jwks {
        None => checks.push(check("public_jwks holds required keys", false, "missing or invalid")),
        Some(jwks) => {
            let required = keys.published();
            let missing: Vec<&str> = required.kids().filter(|k| !jwks.contains(k)).collect();
            checks.push(check(
                "public_jwks holds required keys",
                missing.is_empty(),
                if missing.is_empty() {
                    format!("{} keys", jwks.len())
                } else {
                    format!("missing {}", missing.join(", "))
                },
            ));
        }
    }
    checks
}

/// Checks an AES folder: `keys_map` parses with one active key, `active_kid` names it and
/// `current_key` is its material.
pub fn verify_aes_folder(stored: &BTreeMap<String, SecretValue>) -> Vec<Check> {
    use aes_names::*;
    let Some(map) = stored.get(KEYS_MAP) else {
        return vec![check("aes keys_map present", false, "missing")];
    };
    let ring = match AesKeyRing::from_keys_map(map.expose()) {
        Ok(r) => r,
        Err(e) => return vec![check("aes keys_map parses", false, e.to_string())],
    };
    let mut checks = vec![check("aes keys_map parses", true, format!("{} keys", ring.len()))];
    let active = ring.active();
    checks.push(check("aes keys_map has an active key", active.is_some(), ""));
    let active_kid = stored.get(ACTIVE_KID).map(|v| v.expose().trim().to_owned());
    let in_map = active_kid.as_deref().and_then(|k| ring.get(k));
    checks.push(check(
        "active_kid is in keys_map",
        in_map.is_some_and(|k| k.state == AesKeyState::Active),
        active_kid.clone().unwrap_or_else(|| "missing".into()),
    ));
    if let Some(active) = active {
        let current_ok = stored
            .get(CURRENT_KEY)
            .and_then(|v| AesKey::from_base64(active.key.kid(), v.expose()).ok())
            .is_some_and(|k| k == active.key);
        checks.push(check("current_key is the active key", current_ok, active.key.kid()));
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::JwtAlgorithm;
    use crate::policy::DAY;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn key(seed: u64) -> JwtKey {
        JwtKey::generate(JwtAlgorithm::ES256, &mut StdRng::seed_from_u64(seed)).unwrap()
    }

    #[test]
    fn jwt_walks_stable_publish_flip_retire() {
        let policy = Policy::default();
        let (a, b) = (key(1), key(2));
        let t0 = 1_000_000;
        let s = JwtState::new(&a, t0);
        assert_eq!(s.phase(), JwtPhase::Stable);
        let due = t0 + policy.jwt_rotation_interval;
        assert_eq!(next_jwt_step(&s, due - 1, &policy, false), JwtStep::Wait { until: due });
        assert_eq!(next_jwt_step(&s, due, &policy, false), JwtStep::PublishNext);
        assert_eq!(next_jwt_step(&s, t0, &policy, true), JwtStep::PublishNext);

        let s = s.publish(&b, due);
        assert_eq!(s.phase(), JwtPhase::NextPublished);
        let flip_at = due + policy.jwt_overlap;
        assert_eq!(
            next_jwt_step(&s, flip_at - 1, &policy, false),
            JwtStep::Wait { until: flip_at }
        );
        assert_eq!(next_jwt_step(&s, flip_at, &policy, false), JwtStep::Flip);
        // force never skips the overlap: verifiers must know the next key before it signs
        assert_eq!(next_jwt_step(&s, due, &policy, true), JwtStep::Wait { until: flip_at });

        let s = s.flip(a.public().to_json(), flip_at).unwrap();
        assert_eq!((s.phase(), s.current_kid.as_str()), (JwtPhase::Flipped, b.kid()));
        let retire_at = flip_at + policy.jwt_overlap;
        assert_eq!(
            next_jwt_step(&s, retire_at - 1, &policy, false),
            JwtStep::Wait { until: retire_at }
        );
        // force never retires early: the old key's tokens may still be valid
        assert_eq!(next_jwt_step(&s, retire_at - 1, &policy, true), JwtStep::PublishNext);
        assert_eq!(
            next_jwt_step(&s, retire_at, &policy, true),
            JwtStep::Retire(vec![a.kid().to_owned()])
        );
        let s = s.retire(&[a.kid().to_owned()], retire_at);
        assert_eq!(s.phase(), JwtPhase::Stable);
        assert_eq!(
            next_jwt_step(&s, retire_at, &policy, false),
            JwtStep::Wait { until: flip_at + policy.jwt_rotation_interval }
        );
    }

    #[test]
    fn aes_adds_activates_and_retires_only_when_forced_and_old() {
        let policy = Policy { aes_retire_after: 30 * DAY, ..Policy::default() };
        let mut rng = StdRng::seed_from_u64(5);
        let t0 = 0;
        let empty = AesKeyRing::default();
        assert_eq!(next_aes_step(&empty, t0, &policy, false), AesStep::AddNext);
        let k1 = AesKey::generate(&mut rng);
        let ring = aes_add_pending(&empty, k1.clone(), t0);
        // nothing active yet: the first key is activated at once
        assert_eq!(
            next_aes_step(&ring, t0, &policy, false),
            AesStep::Activate(k1.kid().to_owned())
        );
        let ring = aes_activate(&ring, k1.kid(), t0).unwrap();
        let due = t0 + policy.aes_rotation_interval;
        assert_eq!(next_aes_step(&ring, due - 1, &policy, false), AesStep::Wait { until: due });
        assert_eq!(next_aes_step(&ring, due, &policy, false), AesStep::AddNext);
        let k2 = AesKey::generate(&mut rng);
        let ring = aes_add_pending(&ring, k2.clone(), due);
        let at = due + policy.aes_activation_delay;
        assert_eq!(next_aes_step(&ring, at - 1, &policy, false), AesStep::Wait { until: at });
        // force never skips the activation delay: every replica must have loaded the key
        assert_eq!(next_aes_step(&ring, due, &policy, true), AesStep::Wait { until: at });
        assert_eq!(
            next_aes_step(&ring, at, &policy, false),
            AesStep::Activate(k2.kid().to_owned())
        );
        let ring = aes_activate(&ring, k2.kid(), at).unwrap();
        assert_eq!(ring.get(k1.kid()).unwrap().state, AesKeyState::DecryptOnly);
        let old_enough = at + policy.aes_retire_after;
        assert_eq!(
            next_aes_step(&ring, old_enough, &policy, false),
            AesStep::Wait { until: at + policy.aes_rotation_interval }
        );
        assert_eq!(next_aes_step(&ring, old_enough - 1, &policy, true), AesStep::AddNext);
        assert_eq!(
            next_aes_step(&ring, old_enough, &policy, true),
            AesStep::Retire(vec![k1.kid().to_owned()])
        );
        let ring = aes_retire(&ring, &[k1.kid().to_owned()], old_enough);
        assert_eq!(ring.get(k1.kid()).unwrap().state, AesKeyState::Retired);
        assert_eq!(ring.len(), 2, "retired keys are kept, never dropped");
    }

    #[test]
    fn layouts_and_checks_agree() {
        let (a, b) = (key(1), key(2));
        let state = JwtState::new(&a, 0).publish(&b, 10);
        let keys = JwtKeys { state, current: a.clone(), next: Some(b.clone()), previous: vec![] };
        let layout = keys.layout();
        let stored: BTreeMap<String, SecretValue> = layout.upserts.iter().cloned().collect();
        assert!(layout.writes_from(&stored).is_empty(), "a canonical folder needs no writes");
        assert!(
            verify_jwt_folder(&stored).iter().all(|c| c.ok),
            "{:?}",
            verify_jwt_folder(&stored)
        );
        let mut broken = stored.clone();
        broken.insert(
            jwt_names::PUBLIC_JWKS.into(),
            SecretValue::new(JwkSet::new([a.public().clone()]).to_json().to_string()),
        );
        let failed: Vec<Check> = verify_jwt_folder(&broken).into_iter().filter(|c| !c.ok).collect();
        assert_eq!(failed.len(), 1);
        assert!(failed[0].detail.contains(b.kid()), "{failed:?}");
        let writes = layout.writes_from(&broken);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].describe(), "upsert public_jwks");

        let mut rng = StdRng::seed_from_u64(9);
        let ring = aes_activate(
            &aes_add_pending(&AesKeyRing::default(), AesKey::generate(&mut rng), 0),
            "x",
            0,
        );
        assert!(ring.is_err());
        let k = AesKey::generate(&mut rng);
        let ring = aes_activate(&aes_add_pending(&AesKeyRing::default(), k.clone(), 0), k.kid(), 0)
            .unwrap();
        let stored: BTreeMap<String, SecretValue> = aes_layout(&ring).upserts.into_iter().collect();
        assert!(verify_aes_folder(&stored).iter().all(|c| c.ok));
        let mut wrong = stored.clone();
        wrong.insert(aes_names::ACTIVE_KID.into(), "nope".into());
        assert!(!verify_aes_folder(&wrong).iter().all(|c| c.ok));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::jwt::JwtAlgorithm;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::collections::HashMap;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the timing and forcing of rotate calls: a key signs only after it was
        /// published for the overlap (forced or not), and it stays published for the overlap after
        /// it stopped signing, so every token it signed outlives its key's publication.
        #[test]
        fn jwt_keys_outlive_their_tokens(ops in proptest::collection::vec((0i64..40 * 86_400, any::<bool>()), 1..40)) {
            let policy = Policy::default();
            let mut rng = StdRng::seed_from_u64(1);
            let first = JwtKey::generate(JwtAlgorithm::EdDSA, &mut rng).unwrap();
            let mut now = 0;
            let mut state = JwtState::new(&first, now);
            let mut keys: HashMap<String, JwtKey> = HashMap::from([(first.kid().to_owned(), first)]);
            let mut published_at: HashMap<String, i64> = HashMap::new();
            let mut stopped_signing: HashMap<String, i64> = HashMap::new();
            for (dt, force) in ops {
                now += dt;
                let mut force = force;
                for _ in 0..8 {
                    match next_jwt_step(&state, now, &policy, force) {
                        JwtStep::Wait { until } => {
                            prop_assert!(until > now);
                            break;
                        }
                        JwtStep::PublishNext => {
                            let next = JwtKey::generate(JwtAlgorithm::EdDSA, &mut rng).unwrap();
                            published_at.insert(next.kid().to_owned(), now);
                            state = state.publish(&next, now);
                            keys.insert(next.kid().to_owned(), next);
                        }
                        JwtStep::Flip => {
                            let next_kid = state.next.as_ref().unwrap().kid.clone();
                            prop_assert!(now - published_at[&next_kid] >= policy.jwt_overlap);
                            stopped_signing.insert(state.current_kid.clone(), now);
                            let jwk = keys[&state.current_kid].public().to_json();
                            state = state.flip(jwk, now).unwrap();
                            force = false;
                        }
                        JwtStep::Retire(kids) => {
                            for kid in &kids {
                                prop_assert!(now - stopped_signing[kid] >= policy.min_overlap());
                            }
                            state = state.retire(&kids, now);
                        }
                    }
                }
                // the signing key is always among the published ones, once
                let published: Vec<&str> = std::iter::once(state.current_kid.as_str())
                    .chain(state.next.iter().map(|n| n.kid.as_str()))
                    .chain(state.previous.iter().map(|p| p.kid.as_str()))
                    .collect();
                let unique: std::collections::HashSet<&&str> = published.iter().collect();
                prop_assert_eq!(unique.len(), published.len());
            }
        }
    }
}
