//! Pure token lifecycle decisions (`infisical-api.md` 1.4 and 7): renew at 80% of `expiresIn`,
//! log in again instead when the renewal would pass `accessTokenMaxTTL`, log in again when the
//! token has expired (an expired JWT cannot be renewed).

use std::fmt;
use std::time::{Duration, SystemTime};

use zeroize::Zeroizing;

use crate::clock::elapsed;

/// The fraction of `expiresIn` after which a token is renewed.
pub const RENEW_AT: f64 = 0.8;

/// What to do with the current token before the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAction {
    /// The token is fresh: use it.
    Use,
    /// Renewal is due and allowed.
    Renew,
    /// Log in again: no token, expired, or a renewal would pass the max TTL.
    Login,
}

/// The timing facts about an identity access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenTimes {
    /// When the login that created the token's database row was sent.
    pub login_at: SystemTime,
    /// When the current JWT was obtained (login or last renewal), taken before sending.
    pub obtained_at: SystemTime,
    /// `expiresIn` of the last login or renewal; zero means the token does not expire.
    pub expires_in: Duration,
    /// `accessTokenMaxTTL`; zero means no limit.
    pub max_ttl: Duration,
}

impl TokenTimes {
    /// Decides what to do at `now`.
    pub fn decide(&self, now: SystemTime) -> TokenAction {
        let age = elapsed(self.obtained_at, now);
        let since_login = elapsed(self.login_at, now);
        if !self.max_ttl.is_zero() && since_login >= self.max_ttl {
            return TokenAction::Login;
        }
        if self.expires_in.is_zero() {
            return TokenAction::Use;
        }
        if age >= self.expires_in {
            return TokenAction::Login;
        }
        if age < self.expires_in.mul_f64(RENEW_AT) {
            return TokenAction::Use;
        }
        // The server destroys a token whose renewal would pass the max TTL (1.4 rule 6).
        if !self.max_ttl.is_zero() && since_login + self.expires_in > self.max_ttl {
            TokenAction::Login
        } else {
            TokenAction::Renew
        }
    }

    /// When the token expires, if it does.
    #[cfg(test)]
    fn expires_at(&self) -> Option<SystemTime> {
        (!self.expires_in.is_zero()).then(|| self.obtained_at + self.expires_in)
    }
}

/// An access token. Zeroized on drop, never printed, never compared with `==` (a comparison that
/// stops at the first differing byte would time how much of a guess is right): use
/// [`AccessToken::same_as`].
///
/// ```compile_fail
/// let token = ikit_client::AccessToken::new("eyJ...");
/// let _ = token == token.clone(); // no `==` on a credential
/// ```
#[derive(Clone)]
pub struct AccessToken(Zeroizing<String>);

impl AccessToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(Zeroizing::new(token.into()))
    }

    /// The token text, for the `Authorization` header or a renew body.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when both tokens are the same text, compared in constant time.
    pub fn same_as(&self, other: &AccessToken) -> bool {
        use subtle::ConstantTimeEq as _;
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken([REDACTED])")
    }
}

/// A token and its timing.
#[derive(Clone)]
pub(crate) struct TokenState {
    pub(crate) token: AccessToken,
    pub(crate) times: TokenTimes,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn at(min: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + MIN * min as u32
    }

    fn times(login: u64, obtained: u64, ttl_min: u64, max_min: u64) -> TokenTimes {
        TokenTimes {
            login_at: at(login),
            obtained_at: at(obtained),
            expires_in: MIN * ttl_min as u32,
            max_ttl: MIN * max_min as u32,
        }
    }

    #[test]
    fn tokens_compare_by_their_text() {
        let a = AccessToken::new("eyJ.one.sig");
        assert!(a.same_as(&a.clone()));
        assert!(!a.same_as(&AccessToken::new("eyJ.one.sih")));
        assert!(!a.same_as(&AccessToken::new("eyJ.one")), "a prefix is not the token");
        assert_eq!(format!("{a:?}"), "AccessToken([REDACTED])");
    }

    #[test]
    fn renews_at_eighty_percent() {
        let t = times(0, 0, 10, 60);
        assert_eq!(t.decide(at(0)), TokenAction::Use);
        assert_eq!(t.decide(at(7)), TokenAction::Use);
        assert_eq!(t.decide(at(8)), TokenAction::Renew);
        assert_eq!(t.decide(at(9)), TokenAction::Renew);
        assert_eq!(t.decide(at(10)), TokenAction::Login, "an expired jwt cannot be renewed");
        assert_eq!(t.expires_at(), Some(at(10)));
    }

    #[test]
    fn logs_in_instead_of_renewing_past_max_ttl() {
        // Renewed at minute 48, the token lives to 58; renewing at 56 would reach 66 > 60.
        let t = times(0, 48, 10, 60);
        assert_eq!(t.decide(at(55)), TokenAction::Use);
        assert_eq!(t.decide(at(56)), TokenAction::Login);
        // At 40 + 10 = 50 <= 60 renewal is still allowed.
        assert_eq!(times(0, 32, 10, 60).decide(at(40)), TokenAction::Renew);
        // Exactly at the limit is allowed (the server rejects only "greater than").
        assert_eq!(times(0, 42, 10, 60).decide(at(50)), TokenAction::Renew);
        // Past max TTL the token is dead whatever its own expiry says.
        assert_eq!(times(0, 59, 10, 60).decide(at(60)), TokenAction::Login);
    }

    #[test]
    fn a_whole_max_ttl_cycle_follows_the_go_sdk_pattern() {
        let mut t = times(0, 0, 10, 60);
        let mut actions = Vec::new();
        for minute in 0..=70 {
            match t.decide(at(minute)) {
                TokenAction::Use => {}
                TokenAction::Renew => {
                    actions.push(("renew", minute));
                    t.obtained_at = at(minute);
                }
                TokenAction::Login => {
                    actions.push(("login", minute));
                    t = times(minute, minute, 10, 60);
                }
            }
        }
        assert_eq!(
            actions,
            [
                ("renew", 8),
                ("renew", 16),
                ("renew", 24),
                ("renew", 32),
                ("renew", 40),
                ("renew", 48),
                ("login", 56),
                ("renew", 64)
            ]
        );
    }

    #[test]
    fn periodic_tokens_renew_forever() {
        // Periodic: expiresIn is the period, max TTL 1e9 s.
        let t = TokenTimes {
            login_at: at(0),
            obtained_at: at(60 * 24 * 365),
            expires_in: MIN * 10,
            max_ttl: Duration::from_secs(1_000_000_000),
        };
        assert_eq!(t.decide(at(60 * 24 * 365 + 9)), TokenAction::Renew);
    }

    #[test]
    fn non_expiring_tokens_are_used_as_is() {
        assert_eq!(times(0, 0, 0, 0).decide(at(1_000_000)), TokenAction::Use);
        // No max TTL: renew, never a forced login.
        assert_eq!(times(0, 900, 10, 0).decide(at(909)), TokenAction::Renew);
    }

    #[test]
    fn tokens_never_print() {
        let token = AccessToken::new("eyJ-secret-token");
        assert!(!format!("{token:?}").contains("eyJ"));
        assert_eq!(token.expose(), "eyJ-secret-token");
    }
}
