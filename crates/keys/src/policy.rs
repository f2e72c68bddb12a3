//! Rotation policy: how often keys rotate and how long old keys stay published. Refused at load
//! when it could break a valid token.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::jwt::JwtAlgorithm;

pub const MINUTE: i64 = 60;
pub const HOUR: i64 = 60 * MINUTE;
pub const DAY: i64 = 24 * HOUR;

/// Timings in seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// Algorithm of newly generated signing keys.
    pub jwt_algorithm: JwtAlgorithm,
    /// A JWT rotation starts this long after the current key began signing. Default 60 days.
    pub jwt_rotation_interval: i64,
    /// The longest lifetime of a token we sign. Default 1 hour.
    pub max_token_ttl: i64,
    /// The `max-age` verifiers may cache JWKS for. Default 1 hour.
    pub jwks_cache_max_age: i64,
    /// Clock skew tolerated between signer and verifiers. Default 5 minutes.
    pub clock_skew: i64,
    /// How long the next key is published before it signs, and how long the previous key stays
    /// published after the flip. Must be at least `max_token_ttl + jwks_cache_max_age +
    /// clock_skew`. Default 24 hours.
    pub jwt_overlap: i64,
    /// An AES rotation starts this long after the active key was activated. Default 90 days.
    pub aes_rotation_interval: i64,
    /// How long a new AES key is loaded everywhere before it encrypts. Default 15 minutes.
    pub aes_activation_delay: i64,
    /// A decrypt-only AES key may be retired (with an explicit force) this long after it stopped
    /// encrypting. Default 365 days.
    pub aes_retire_after: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            jwt_algorithm: JwtAlgorithm::ES256,
            jwt_rotation_interval: 60 * DAY,
            max_token_ttl: HOUR,
            jwks_cache_max_age: HOUR,
            clock_skew: 5 * MINUTE,
            jwt_overlap: DAY,
            aes_rotation_interval: 90 * DAY,
            aes_activation_delay: 15 * MINUTE,
            aes_retire_after: 365 * DAY,
        }
    }
}

impl Policy {
    /// The smallest overlap that keeps every valid token verifiable.
    pub fn min_overlap(&self) -> i64 {
        self.max_token_ttl.saturating_add(self.jwks_cache_max_age).saturating_add(self.clock_skew)
    }

    /// Refuses a policy that could reject a valid token or never finish a rotation.
    pub fn validate(&self) -> Result<()> {
        let named = [
            ("jwt_rotation_interval", self.jwt_rotation_interval),
            ("max_token_ttl", self.max_token_ttl),
            ("jwt_overlap", self.jwt_overlap),
            ("aes_rotation_interval", self.aes_rotation_interval),
            ("aes_retire_after", self.aes_retire_after),
        ];
        for (name, value) in named {
            if value <= 0 {
                return Err(Error::UnsafePolicy(format!("{name} must be positive, got {value}")));
            }
        }
        let non_negative = [
            ("jwks_cache_max_age", self.jwks_cache_max_age),
            ("clock_skew", self.clock_skew),
            ("aes_activation_delay", self.aes_activation_delay),
        ];
        for (name, value) in non_negative {
            if value < 0 {
                return Err(Error::UnsafePolicy(format!("{name} cannot be negative, got {value}")));
            }
        }
        if self.jwt_overlap < self.min_overlap() {
            return Err(Error::UnsafePolicy(format!(
                "jwt_overlap {}s is shorter than max_token_ttl {}s + jwks_cache_max_age {}s + clock_skew {}s = {}s",
                self.jwt_overlap,
                self.max_token_ttl,
                self.jwks_cache_max_age,
                self.clock_skew,
                self.min_overlap()
            )));
        }
        if self.jwt_rotation_interval <= self.jwt_overlap.saturating_mul(2) {
            return Err(Error::UnsafePolicy(format!(
                "jwt_rotation_interval {}s must exceed twice jwt_overlap ({}s) so a rotation ends before the next begins",
                self.jwt_rotation_interval,
                self.jwt_overlap.saturating_mul(2)
            )));
        }
        if self.aes_rotation_interval <= self.aes_activation_delay {
            return Err(Error::UnsafePolicy(format!(
                "aes_rotation_interval {}s must exceed aes_activation_delay {}s",
                self.aes_rotation_interval, self.aes_activation_delay
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_safe() {
        Policy::default().validate().unwrap();
        assert_eq!(Policy::default().jwt_rotation_interval, 60 * DAY);
        assert_eq!(Policy::default().aes_rotation_interval, 90 * DAY);
    }

    #[test]
    fn overlap_shorter_than_ttl_cache_and_skew_is_refused() {
        let policy = Policy {
            max_token_ttl: 20 * HOUR,
            jwks_cache_max_age: 4 * HOUR,
            clock_skew: 1,
            ..Policy::default()
        };
        let err = policy.validate().unwrap_err().to_string();
        assert!(err.contains("jwt_overlap 86400s is shorter than"), "{err}");
        assert!(Policy { jwt_overlap: 24 * HOUR + 1, ..policy }.validate().is_ok());
        let bad = [
            Policy { jwt_rotation_interval: 2 * DAY, ..Policy::default() },
            Policy { max_token_ttl: 0, ..Policy::default() },
            Policy { clock_skew: -1, ..Policy::default() },
            Policy { aes_rotation_interval: 60, aes_activation_delay: 60, ..Policy::default() },
        ];
        for policy in bad {
            assert!(matches!(policy.validate(), Err(Error::UnsafePolicy(_))), "{policy:?}");
        }
    }
}
