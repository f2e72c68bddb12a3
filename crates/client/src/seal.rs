//! Authenticated encryption of cached values and snapshots: AES-256-GCM with a random 12-byte
//! nonce, a version byte in front, and associated data that binds the ciphertext to where it is
//! stored (a cache key, a snapshot's project/environment/folder), so a value copied elsewhere
//! fails to open. Pure: the nonce source is a parameter.
//!
//! Layout: `version (1) || nonce (12) || ciphertext || tag (16)`.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use rand::RngCore;
use zeroize::Zeroizing;

/// The only layout version so far.
pub const SEAL_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// A 32-byte AES-256-GCM key. Zeroized on drop; `Debug` prints `[REDACTED]`.
#[derive(Clone)]
pub struct SealKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey([REDACTED])")
    }
}

impl SealKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Decodes standard base64 (padded or not) of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, SealError> {
        let text = text.trim();
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
                .map_err(|_| SealError::BadKey("not valid base64".into()))?,
        );
        let bytes: [u8; 32] = decoded.as_slice().try_into().map_err(|_| {
            SealError::BadKey(format!("must decode to 32 bytes, not {}", decoded.len()))
        })?;
        Ok(Self::new(bytes))
    }

    /// A fresh random key.
    pub fn generate(rng: &mut impl RngCore) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        Self(bytes)
    }
}

/// Why sealed bytes could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("invalid key: {0}")]
    BadKey(String),
    #[error("truncated: {0} bytes is shorter than any sealed value")]
    Truncated(usize),
    #[error("unknown format version {0}")]
    Version(u8),
    /// Wrong key, a changed byte, or bound to another key or location.
    #[error("authentication failed: wrong key, altered bytes or bound to another location")]
    Authentication,
}

/// Encrypts `plaintext` bound to `aad`, with a nonce drawn from `rng`.
pub fn seal(key: &SealKey, aad: &[u8], plaintext: &[u8], rng: &mut impl RngCore) -> Vec<u8> {
    let cipher = Aes256Gcm::new_from_slice(key.0.as_ref()).expect("32-byte key");
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let ciphertext = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
        .expect("aes-gcm encryption of an in-memory buffer does not fail");
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
    out.push(SEAL_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    out
}

/// Decrypts what [`seal`] produced with the same key and `aad`.
pub fn open(key: &SealKey, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if sealed.len() < 1 + NONCE_LEN + TAG_LEN {
        return Err(SealError::Truncated(sealed.len()));
    }
    if sealed[0] != SEAL_VERSION {
        return Err(SealError::Version(sealed[0]));
    }
    let cipher = Aes256Gcm::new_from_slice(key.0.as_ref()).expect("32-byte key");
    let nonce = Nonce::from_slice(&sealed[1..=NONCE_LEN]);
    cipher
        .decrypt(nonce, Payload { msg: &sealed[1 + NONCE_LEN..], aad })
        .map(Zeroizing::new)
        .map_err(|_| SealError::Authentication)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn key(b: u8) -> SealKey {
        SealKey::new([b; 32])
    }

    #[test]
    fn round_trips_and_rejects_every_kind_of_tampering() {
        let mut rng = StdRng::seed_from_u64(1);
        let sealed = seal(&key(7), b"where", b"the value", &mut rng);
        assert_eq!(sealed[0], SEAL_VERSION);
        assert!(!sealed.windows(9).any(|w| w == b"the value"));
        assert_eq!(open(&key(7), b"where", &sealed).unwrap().as_slice(), b"the value");

        assert_eq!(open(&key(8), b"where", &sealed), Err(SealError::Authentication));
        assert_eq!(open(&key(7), b"elsewhere", &sealed), Err(SealError::Authentication));
        for i in 1..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[i] ^= 0x01;
            assert_eq!(open(&key(7), b"where", &flipped), Err(SealError::Authentication), "{i}");
        }
        let mut other_version = sealed.clone();
        other_version[0] = 9;
        assert_eq!(open(&key(7), b"where", &other_version), Err(SealError::Version(9)));
        assert_eq!(open(&key(7), b"where", &sealed[..20]), Err(SealError::Truncated(20)));
        assert!(matches!(
            open(&key(7), b"where", &sealed[..sealed.len() - 1]),
            Err(SealError::Authentication)
        ));
    }

    #[test]
    fn nonces_differ_between_seals() {
        let mut rng = StdRng::seed_from_u64(2);
        let a = seal(&key(1), b"", b"same", &mut rng);
        let b = seal(&key(1), b"", b"same", &mut rng);
        assert_ne!(a, b);
    }

    #[test]
    fn keys_come_from_base64_of_32_bytes() {
        let text = base64::engine::general_purpose::STANDARD.encode([3u8; 32]);
        assert!(SealKey::from_base64(&text).is_ok());
        assert!(SealKey::from_base64(text.trim_end_matches('=')).is_ok());
        assert!(
            matches!(SealKey::from_base64("c2hvcnQ="), Err(SealError::BadKey(m)) if m.contains("32"))
        );
        assert!(SealKey::from_base64("!!!").is_err());
        assert_eq!(format!("{:?}", key(5)), "SealKey([REDACTED])");
    }
}
