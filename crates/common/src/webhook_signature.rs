//! Infisical webhook signatures (`infisical-api.md` 5.2), signing and verifying, with no IO.
//!
//! Infisical signs `x-infisical-signature: t=<ms>;<hex>` where `hex` is the lower-case
//! HMAC-SHA256 of the raw body under the webhook's secret key (UTF-8); `t` is the body's own
//! `timestamp`, not part of the HMAC input. A plain `sha256=<hex>` of the same HMAC is accepted
//! too, for proxies and senders that re-sign. Several secrets may be given so a secret can be
//! rotated without dropping deliveries. Comparison is constant time (`hmac`'s `verify_slice`).
//! `now` and the window are parameters: the caller's clock decides what "recent" means.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header Infisical sends the signature in.
pub const SIGNATURE_HEADER: &str = "x-infisical-signature";

/// The replay window used when none is configured.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(5 * 60);

/// Which of the two accepted header forms a delivery came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `t=<ms>;<hex>`, what Infisical sends.
    Timestamped,
    /// `sha256=<hex>`, no timestamp in the header.
    Sha256,
}

/// A signature that checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub scheme: Scheme,
    /// The header's `t` (unix ms) for [`Scheme::Timestamped`].
    pub timestamp_ms: Option<i64>,
    /// Which of the given secrets matched (0 = the first, the current one).
    pub secret_index: usize,
}

/// Why a delivery was refused. Carries no signature, secret or body bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature header is missing")]
    Missing,
    #[error("signature header is malformed: {0}")]
    Malformed(&'static str),
    #[error("no webhook secret is configured")]
    NoSecret,
    #[error("signature does not match the body")]
    Mismatch,
    #[error("timestamp {timestamp_ms} is outside the window of {window_secs} s around {now_ms}")]
    OutsideWindow { timestamp_ms: i64, now_ms: i64, window_secs: u64 },
    #[error("the signed timestamp differs from the body's timestamp")]
    TimestampMismatch,
}

impl SignatureError {
    /// A stable, machine-readable code for error bodies and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "signature_missing",
            Self::Malformed(_) => "signature_malformed",
            Self::NoSecret => "signature_unconfigured",
            Self::Mismatch => "signature_mismatch",
            Self::OutsideWindow { .. } => "timestamp_outside_window",
            Self::TimestampMismatch => "timestamp_mismatch",
        }
    }
}

fn mac(secret: &[u8], body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    mac
}

/// The lower-case hex HMAC-SHA256 of `body` under `secret`.
pub fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    hex::encode(mac(secret, body).finalize().into_bytes())
}

/// The `x-infisical-signature` value Infisical sends for a body whose `timestamp` is
/// `timestamp_ms`: `t=<ms>;<hex>`.
pub fn sign(timestamp_ms: i64, secret: &[u8], body: &[u8]) -> String {
    format!("t={timestamp_ms};{}", hmac_hex(secret, body))
}

/// The `sha256=<hex>` form of the same signature.
pub fn sign_sha256(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hmac_hex(secret, body))
}

/// Splits a header into its scheme, optional timestamp and raw signature bytes.
fn parse(header: &str) -> Result<(Scheme, Option<i64>, Vec<u8>), SignatureError> {
    let header = header.trim();
    if header.is_empty() {
        return Err(SignatureError::Missing);
    }
    let (scheme, stamp, hex_sig) = if let Some(rest) = header.strip_prefix("sha256=") {
        (Scheme::Sha256, None, rest)
    } else {
        // Infisical's form: split on the first ';', the left part must be `t=<ms>`.
        let (left, right) =
            header.split_once(';').ok_or(SignatureError::Malformed("no ';' after t=<ms>"))?;
        let ms = left
            .trim()
            .strip_prefix("t=")
            .ok_or(SignatureError::Malformed("expected t=<ms>;<hex> or sha256=<hex>"))?;
        let ms: i64 = ms.parse().map_err(|_| SignatureError::Malformed("t is not a number"))?;
        (Scheme::Timestamped, Some(ms), right)
    };
    let hex_sig = hex_sig.trim();
    if hex_sig.len() != 64 {
        return Err(SignatureError::Malformed("signature is not 64 hex digits"));
    }
    let sig =
        hex::decode(hex_sig).map_err(|_| SignatureError::Malformed("signature is not hex"))?;
    Ok((scheme, stamp, sig))
}

/// Checks `header` against the raw `body` under any of `secrets`, then that the header's `t`
/// (when present) lies within `window` of `now_ms`. The signature is checked first, so an
/// unsigned caller learns nothing about the window.
pub fn verify_at(
    header: &str,
    body: &[u8],
    secrets: &[&[u8]],
    now_ms: i64,
    window: Duration,
) -> Result<Verified, SignatureError> {
    let (scheme, timestamp_ms, sig) = parse(header)?;
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let secret_index = secrets
        .iter()
        .position(|secret| mac(secret, body).verify_slice(&sig).is_ok())
        .ok_or(SignatureError::Mismatch)?;
    if let Some(ts) = timestamp_ms {
        check_window(ts, now_ms, window)?;
    }
    Ok(Verified { scheme, timestamp_ms, secret_index })
}

/// `Ok` when `timestamp_ms` is at most `window` before or after `now_ms`.
pub fn check_window(
    timestamp_ms: i64,
    now_ms: i64,
    window: Duration,
) -> Result<(), SignatureError> {
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    if now_ms.abs_diff(timestamp_ms) > window_ms.unsigned_abs() {
        return Err(SignatureError::OutsideWindow {
            timestamp_ms,
            now_ms,
            window_secs: window.as_secs(),
        });
    }
    Ok(())
}

impl Verified {
    /// Binds the signature to the body's own `timestamp`: equal to the header's `t` for the
    /// Infisical form; for `sha256=`, which has no `t`, the body's timestamp must be in the
    /// window. A body without a timestamp is refused for `sha256=` (nothing bounds a replay).
    pub fn check_body_timestamp(
        &self,
        body_timestamp_ms: Option<i64>,
        now_ms: i64,
        window: Duration,
    ) -> Result<(), SignatureError> {
        match (self.timestamp_ms, body_timestamp_ms) {
            (Some(t), Some(b)) if t == b => Ok(()),
            (Some(_), _) => Err(SignatureError::TimestampMismatch),
            (None, Some(b)) => check_window(b, now_ms, window),
            (None, None) => Err(SignatureError::TimestampMismatch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const VECTORS: &str = include_str!("../tests/data/infisical-webhooks.json");
    const REAL: &str = include_str!("../tests/data/infisical-webhooks-2024-10-real.json");
    const WINDOW: Duration = DEFAULT_WINDOW;

    fn stamp(header: &str) -> i64 {
        header[2..header.find(';').unwrap()].parse().unwrap()
    }

    /// (secret, header, body, expected valid) for every delivery of both vector files.
    fn all_vectors() -> Vec<(String, String, Vec<u8>, bool)> {
        let mut out = Vec::new();
        let v: Value = serde_json::from_str(VECTORS).unwrap();
        for case in v["vectors"].as_array().unwrap() {
            out.push((
                case["secret"].as_str().unwrap().to_owned(),
                case["x_infisical_signature"].as_str().unwrap().to_owned(),
                case["body"].as_str().unwrap().as_bytes().to_vec(),
                case["expect"] == "valid",
            ));
        }
        let real: Value = serde_json::from_str(REAL).unwrap();
        let secret = real["secret"].as_str().unwrap();
        for d in real["deliveries"].as_array().unwrap() {
            let header = d["headers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(SIGNATURE_HEADER))
                .map(|h| h[1].as_str().unwrap().to_owned())
                .unwrap();
            let body = hex::decode(d["bodyHex"].as_str().unwrap()).unwrap();
            assert_eq!(body, d["body"].as_str().unwrap().as_bytes());
            out.push((secret.to_owned(), header, body, true));
        }
        out
    }

    #[test]
    fn every_shared_vector_verifies_as_labelled_and_one_changed_byte_breaks_it() {
        let vectors = all_vectors();
        assert_eq!(vectors.len(), 15, "7 captured + 8 real deliveries");
        for (secret, header, body, valid) in &vectors {
            let now = stamp(header) + 1_000;
            let got = verify_at(header, body, &[secret.as_bytes()], now, WINDOW);
            if *valid {
                let ok = got.unwrap_or_else(|e| panic!("{header}: {e}"));
                assert_eq!(ok.scheme, Scheme::Timestamped);
                assert_eq!(ok.timestamp_ms, Some(stamp(header)));
                let ts: Value = serde_json::from_slice(body).unwrap();
                assert_eq!(ok.check_body_timestamp(ts["timestamp"].as_i64(), now, WINDOW), Ok(()));
                // Signing reproduces the captured header byte for byte.
                assert_eq!(&sign(stamp(header), secret.as_bytes(), body), header);
                for i in 0..body.len() {
                    let mut changed = body.clone();
                    changed[i] ^= 0x01;
                    assert_eq!(
                        verify_at(header, &changed, &[secret.as_bytes()], now, WINDOW),
                        Err(SignatureError::Mismatch),
                        "byte {i} of {header}"
                    );
                }
            } else {
                assert_eq!(got, Err(SignatureError::Mismatch), "{header}");
            }
        }
    }

    #[test]
    fn the_window_bounds_t_on_both_sides() {
        let (secret, header, body, _) = all_vectors().remove(0);
        let t = stamp(&header);
        let key = [secret.as_bytes()];
        let w = WINDOW.as_millis() as i64;
        assert!(verify_at(&header, &body, &key, t + w, WINDOW).is_ok());
        assert!(verify_at(&header, &body, &key, t - w, WINDOW).is_ok());
        assert!(matches!(
            verify_at(&header, &body, &key, t + w + 1, WINDOW),
            Err(SignatureError::OutsideWindow { .. })
        ));
        assert!(matches!(
            verify_at(&header, &body, &key, t - w - 1, WINDOW),
            Err(SignatureError::OutsideWindow { .. })
        ));
        // Extreme clocks never overflow.
        assert!(verify_at(&header, &body, &key, i64::MIN, WINDOW).is_err());
        assert!(verify_at(&header, &body, &key, i64::MAX, Duration::MAX).is_ok());
    }

    #[test]
    fn two_secrets_are_accepted_during_a_rotation() {
        let body = br#"{"event":"test","timestamp":5}"#;
        let header = sign(5, b"old-secret", body);
        let secrets: [&[u8]; 2] = [b"new-secret", b"old-secret"];
        assert_eq!(verify_at(&header, body, &secrets, 5, WINDOW).unwrap().secret_index, 1);
        assert_eq!(
            verify_at(&header, body, &secrets[..1], 5, WINDOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify_at(&header, body, &[], 5, WINDOW), Err(SignatureError::NoSecret));
    }

    #[test]
    fn the_sha256_form_is_accepted_and_bound_to_the_body_timestamp() {
        let body = br#"{"event":"test","timestamp":5000}"#;
        let header = sign_sha256(b"k", body);
        let ok = verify_at(&header, body, &[b"k"], 0, WINDOW).unwrap();
        assert_eq!((ok.scheme, ok.timestamp_ms), (Scheme::Sha256, None));
        assert_eq!(ok.check_body_timestamp(Some(5000), 6000, WINDOW), Ok(()));
        assert!(matches!(
            ok.check_body_timestamp(Some(5000), 5000 + 301_000, WINDOW),
            Err(SignatureError::OutsideWindow { .. })
        ));
        assert_eq!(
            ok.check_body_timestamp(None, 6000, WINDOW),
            Err(SignatureError::TimestampMismatch)
        );
        assert_eq!(verify_at(&header, b"{}", &[b"k"], 0, WINDOW), Err(SignatureError::Mismatch));
        let upper = header.to_uppercase().replace("SHA256=", "sha256=");
        assert!(verify_at(&upper, body, &[b"k"], 0, WINDOW).is_ok(), "hex case is not significant");
    }

    #[test]
    fn a_signed_t_that_differs_from_the_body_timestamp_is_refused() {
        let body = br#"{"event":"test","timestamp":5}"#;
        let ok = verify_at(&sign(6, b"k", body), body, &[b"k"], 6, WINDOW).unwrap();
        assert_eq!(
            ok.check_body_timestamp(Some(5), 6, WINDOW),
            Err(SignatureError::TimestampMismatch)
        );
        assert_eq!(
            ok.check_body_timestamp(None, 6, WINDOW),
            Err(SignatureError::TimestampMismatch)
        );
    }

    #[test]
    fn malformed_headers_are_named_and_never_panic() {
        let body = b"{}";
        let good = hmac_hex(b"k", body);
        for (header, want) in [
            ("", SignatureError::Missing),
            ("   ", SignatureError::Missing),
            ("t=5", SignatureError::Malformed("no ';' after t=<ms>")),
            (
                &format!("x=5;{good}") as &str,
                SignatureError::Malformed("expected t=<ms>;<hex> or sha256=<hex>"),
            ),
            (&format!("t=abc;{good}"), SignatureError::Malformed("t is not a number")),
            ("t=5;abcd", SignatureError::Malformed("signature is not 64 hex digits")),
            (
                &format!("t=5;{}", "zz".repeat(32)),
                SignatureError::Malformed("signature is not hex"),
            ),
            (&format!("t=5,v1={good}"), SignatureError::Malformed("no ';' after t=<ms>")),
            (&format!("t=5;é{}", &good[2..]), SignatureError::Malformed("signature is not hex")),
        ] {
            assert_eq!(verify_at(header, body, &[b"k"], 5, WINDOW), Err(want), "{header:?}");
        }
        assert!(verify_at(&format!("t=5;{good}"), body, &[b"k"], 5, WINDOW).is_ok());
        assert_eq!(SignatureError::Mismatch.code(), "signature_mismatch");
    }
}
