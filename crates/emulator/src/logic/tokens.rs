//! The identity access-token rules of spec 1.4 and 1.5 as pure decisions over a token row and
//! the emulator's `now`. The caller deletes the row when a decision says so.

use serde::{Deserialize, Serialize};

/// `accessTokenMaxTTL` reported for periodic tokens.
pub const PERIODIC_MAX_TTL: u64 = 1_000_000_000;

/// The database row behind a family of JWTs sharing one `identityAccessTokenId`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TokenRow {
    pub id: String,
    pub identity_id: String,
    pub created_at_ms: i64,
    pub last_renewed_at_ms: Option<i64>,
    pub ttl_secs: u64,
    pub max_ttl_secs: u64,
    pub period_secs: u64,
    pub num_uses: u64,
    pub num_uses_limit: u64,
    pub revoked: bool,
}

/// Why a token was refused; `delete` says whether the row must go.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Refusal {
    pub message: &'static str,
    pub delete: bool,
}

pub const NOT_FOUND: &str = "No identity access token found";
pub const USES_EXHAUSTED: &str =
    "Unable to renew because access token number of uses limit reached";
pub const TTL_EXPIRED: &str = "Failed to renew MI access token due to TTL expiration";
pub const MAX_TTL_EXPIRED: &str = "Failed to renew MI access token due to Max TTL expiration";
pub const PAST_MAX_TTL: &str = "Failed to renew MI access token past its Max TTL expiration";

fn refuse(message: &'static str) -> Refusal {
    Refusal { message, delete: true }
}

/// Seconds to milliseconds, saturating at `i64::MAX`.
pub(crate) fn secs_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Checks shared by renewal and per-request validation: revocation, use limit, TTL.
fn common_checks(row: Option<&TokenRow>, now_ms: i64) -> Result<&TokenRow, Refusal> {
    let row = match row {
        Some(row) if !row.revoked => row,
        _ => return Err(Refusal { message: NOT_FOUND, delete: false }),
    };
    if row.num_uses_limit > 0 && row.num_uses >= row.num_uses_limit {
        return Err(refuse(USES_EXHAUSTED));
    }
    if row.ttl_secs > 0 && row.period_secs == 0 {
        let base = row.last_renewed_at_ms.unwrap_or(row.created_at_ms);
        if now_ms > base.saturating_add(secs_ms(row.ttl_secs)) {
            return Err(refuse(TTL_EXPIRED));
        }
    }
    Ok(row)
}

/// Renewal, rules 3 to 6 of spec 1.4 (rules 1 and 2 are JWT checks made before).
pub fn check_renew(row: Option<&TokenRow>, now_ms: i64) -> Result<(), Refusal> {
    let row = common_checks(row, now_ms)?;
    if row.max_ttl_secs > 0 && row.period_secs == 0 {
        let end = row.created_at_ms.saturating_add(secs_ms(row.max_ttl_secs));
        if now_ms > end {
            return Err(refuse(MAX_TTL_EXPIRED));
        }
        if now_ms.saturating_add(secs_ms(row.ttl_secs)) > end {
            return Err(refuse(PAST_MAX_TTL));
        }
    }
    Ok(())
}

/// Per-request validation (spec 1.4, `fnValidateIdentityAccessToken`).
pub fn check_request(row: Option<&TokenRow>, now_ms: i64) -> Result<(), Refusal> {
    let row = common_checks(row, now_ms)?;
    if row.max_ttl_secs > 0 && row.period_secs == 0 {
        let end = row.created_at_ms.saturating_add(secs_ms(row.max_ttl_secs));
        if now_ms > end {
            return Err(refuse(MAX_TTL_EXPIRED));
        }
    }
    Ok(())
}

/// The lifetime of a freshly issued or renewed JWT: the period, else the TTL, else none.
pub fn jwt_lifetime_secs(row: &TokenRow) -> Option<u64> {
    if row.period_secs > 0 {
        Some(row.period_secs)
    } else if row.ttl_secs > 0 {
        Some(row.ttl_secs)
    } else {
        None
    }
}

/// `expiresIn` and `accessTokenMaxTTL` of a login or renew answer.
pub fn answer_lifetimes(row: &TokenRow) -> (u64, u64) {
    if row.period_secs > 0 {
        (row.period_secs, PERIODIC_MAX_TTL)
    } else {
        (row.ttl_secs, row.max_ttl_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ttl: u64, max: u64) -> TokenRow {
        TokenRow {
            id: "t".into(),
            identity_id: "i".into(),
            created_at_ms: 0,
            last_renewed_at_ms: None,
            ttl_secs: ttl,
            max_ttl_secs: max,
            period_secs: 0,
            num_uses: 0,
            num_uses_limit: 0,
            revoked: false,
        }
    }

    #[test]
    fn renewal_rules_apply_in_order() {
        let r = row(100, 250);
        assert_eq!(
            check_renew(None, 0).unwrap_err(),
            Refusal { message: NOT_FOUND, delete: false }
        );
        let revoked = TokenRow { revoked: true, ..r.clone() };
        assert_eq!(check_renew(Some(&revoked), 0).unwrap_err().message, NOT_FOUND);
        let used = TokenRow { num_uses: 2, num_uses_limit: 2, ..r.clone() };
        assert_eq!(check_renew(Some(&used), 0).unwrap_err(), refuse(USES_EXHAUSTED));
        assert_eq!(check_renew(Some(&r), 100_001).unwrap_err(), refuse(TTL_EXPIRED));
        assert_eq!(check_renew(Some(&r), 100_000), Ok(()));
        let once = TokenRow { last_renewed_at_ms: Some(100_000), ..r.clone() };
        assert_eq!(check_renew(Some(&once), 150_000), Ok(()));
        // 150.001 s + 100 s TTL passes the 250 s max TTL: the token dies although it had time left.
        assert_eq!(check_renew(Some(&once), 150_001).unwrap_err(), refuse(PAST_MAX_TTL));
        let renewed = TokenRow { last_renewed_at_ms: Some(200_000), ..r.clone() };
        assert_eq!(check_renew(Some(&renewed), 250_001).unwrap_err(), refuse(MAX_TTL_EXPIRED));
    }

    #[test]
    fn periodic_tokens_skip_ttl_and_max_ttl() {
        let r = TokenRow { period_secs: 60, ..row(100, 250) };
        assert_eq!(check_renew(Some(&r), 10_000_000), Ok(()));
        assert_eq!(jwt_lifetime_secs(&r), Some(60));
        assert_eq!(answer_lifetimes(&r), (60, PERIODIC_MAX_TTL));
    }

    #[test]
    fn requests_check_ttl_but_not_the_renewal_horizon() {
        let r = row(100, 250);
        assert_eq!(check_request(Some(&r), 99_000), Ok(()));
        assert_eq!(check_request(Some(&r), 100_001).unwrap_err(), refuse(TTL_EXPIRED));
        let renewed = TokenRow { last_renewed_at_ms: Some(200_000), ..r.clone() };
        assert_eq!(check_request(Some(&renewed), 240_000), Ok(()));
        assert_eq!(check_request(Some(&renewed), 250_001).unwrap_err(), refuse(MAX_TTL_EXPIRED));
        let zero = row(0, 0);
        assert_eq!(check_request(Some(&zero), i64::MAX / 2), Ok(()));
        assert_eq!(jwt_lifetime_secs(&zero), None);
    }
}
