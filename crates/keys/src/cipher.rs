//! The token cipher, pure: AES-256-GCM under a ring of keys named by kid.
//!
//! Binary form: `version (1 byte) | kid length (1 byte) | kid | nonce (12 bytes) | ciphertext+tag`.
//! The text form is that, base64url without padding. The header (version, kid) is bound into the
//! GCM associated data along with the caller's own, so it cannot be swapped unnoticed.

use std::collections::BTreeMap;
use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ikit_common::SecretValue;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The ciphertext format version written by this crate.
pub const CIPHERTEXT_VERSION: u8 = 1;
/// GCM nonce length.
pub const NONCE_LEN: usize = 12;
/// GCM tag length.
pub const TAG_LEN: usize = 16;

/// The parts of a ciphertext, borrowed from its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub version: u8,
    pub kid: &'a str,
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the 16-byte tag.
    pub sealed: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// The header bytes: version, kid length, kid.
    pub fn header(version: u8, kid: &str) -> Result<Vec<u8>> {
        let len = u8::try_from(kid.len()).ok().filter(|l| *l > 0).ok_or_else(|| {
            Error::InvalidKey(format!("kid must be 1 to 255 bytes, got {}", kid.len()))
        })?;
        let mut out = Vec::with_capacity(2 + kid.len());
        out.push(version);
        out.push(len);
        out.extend_from_slice(kid.as_bytes());
        Ok(out)
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Self::header(self.version, self.kid)?;
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(self.sealed);
        Ok(out)
    }

    /// Splits ciphertext bytes into their parts; checks lengths and the version, not the tag.
    pub fn decode(bytes: &'a [u8]) -> Result<Self> {
        let malformed = |m: &str| Error::MalformedCiphertext(m.to_owned());
        let (&version, rest) = bytes.split_first().ok_or_else(|| malformed("empty"))?;
        if version != CIPHERTEXT_VERSION {
            return Err(Error::UnsupportedCiphertextVersion(version));
        }
        let (&len, rest) = rest.split_first().ok_or_else(|| malformed("no kid length"))?;
        let len = usize::from(len);
        if len == 0 || rest.len() < len + NONCE_LEN + TAG_LEN {
            return Err(malformed("too short for its kid, nonce and tag"));
        }
        let (kid, rest) = rest.split_at(len);
        let kid = std::str::from_utf8(kid).map_err(|_| malformed("kid is not utf-8"))?;
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = nonce.try_into().map_err(|_| malformed("nonce"))?;
        Ok(Self { version, kid, nonce, sealed })
    }
}

/// The lifecycle of an AES key in `keys_map`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AesKeyState {
    /// Added and loaded everywhere, not yet encrypting.
    Pending,
    /// The one key that encrypts.
    Active,
    /// Decrypts old data only.
    DecryptOnly,
    /// Kept for the record; decrypts nothing.
    Retired,
}

impl AesKeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::DecryptOnly => "decrypt_only",
            Self::Retired => "retired",
        }
    }
}

/// A 256-bit AES key with its kid and its cipher, set up once (the key schedule is zeroized on
/// drop with the key). Never printed.
#[derive(Clone)]
pub struct AesKey {
    kid: String,
    key: Zeroizing<[u8; 32]>,
    cipher: Aes256Gcm,
}

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AesKey").field("kid", &self.kid).field("key", &"[REDACTED]").finish()
    }
}

/// Key bytes compared in constant time (`subtle`): an equality check on key material must not
/// tell by its timing how many leading bytes matched.
impl PartialEq for AesKey {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq as _;
        self.kid == other.kid && bool::from(self.key[..].ct_eq(&other.key[..]))
    }
}

impl AesKey {
    /// A new random key with a random 16-hex-digit kid.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut key[..]);
        let mut id = [0u8; 8];
        rng.fill_bytes(&mut id);
        Self::with_key(hex::encode(id), key)
    }

    fn with_key(kid: String, key: Zeroizing<[u8; 32]>) -> Self {
        let cipher = Aes256Gcm::new(aes_gcm::Key::<Aes256Gcm>::from_slice(&key[..]));
        Self { kid, key, cipher }
    }

    pub fn from_bytes(kid: impl Into<String>, bytes: &[u8]) -> Result<Self> {
        let kid = kid.into();
        Envelope::header(CIPHERTEXT_VERSION, &kid)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| {
            Error::InvalidKey(format!("aes key {kid:?} is {} bytes, not 32", bytes.len()))
        })?;
        Ok(Self::with_key(kid, Zeroizing::new(key)))
    }

    /// Reads a key stored as standard base64 (with or without padding) or base64url.
    pub fn from_base64(kid: impl Into<String>, text: &str) -> Result<Self> {
        let kid = kid.into();
        let text = text.trim();
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
                .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
                .map_err(|_| Error::InvalidKey(format!("aes key {kid:?} is not base64")))?,
        );
        Self::from_bytes(kid, &bytes)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key as standard base64, as stored in `keys_map` and `current_key`.
    pub fn to_base64(&self) -> SecretValue {
        SecretValue::new(STANDARD.encode(&self.key[..]))
    }

    /// Encrypts to the binary form with a fresh random nonce.
    pub fn seal(
        &self,
        rng: &mut (impl RngCore + CryptoRng),
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        self.seal_with_nonce(nonce, plaintext, aad)
    }

    fn seal_with_nonce(
        &self,
        nonce: [u8; NONCE_LEN],
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>> {
        let header = Envelope::header(CIPHERTEXT_VERSION, &self.kid)?;
        let full_aad = [header.as_slice(), aad].concat();
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: &full_aad })
            .map_err(|_| Error::InvalidKey("aes-gcm encryption failed".into()))?;
        Envelope { version: CIPHERTEXT_VERSION, kid: &self.kid, nonce, sealed: &sealed }.encode()
    }

    /// Decrypts an envelope made under this key.
    pub fn open(&self, envelope: &Envelope<'_>, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let header = Envelope::header(envelope.version, envelope.kid)?;
        let full_aad = [header.as_slice(), aad].concat();
        self.cipher
            .decrypt(
                Nonce::from_slice(&envelope.nonce),
                Payload { msg: envelope.sealed, aad: &full_aad },
            )
            .map(Zeroizing::new)
            .map_err(|_| Error::Tampered)
    }
}

/// One key of the ring with its lifecycle.
#[derive(Clone, Debug)]
pub struct RingKey {
    pub key: AesKey,
    pub state: AesKeyState,
    pub created_at: i64,
    pub activated_at: Option<i64>,
    pub deactivated_at: Option<i64>,
    pub retired_at: Option<i64>,
}

/// The shape of one `keys_map` entry as stored (JSON).
#[derive(Serialize, Deserialize)]
struct StoredEntry {
    key: String,
    state: AesKeyState,
    created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    activated_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deactivated_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retired_at: Option<i64>,
}

impl Drop for StoredEntry {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

/// The AES keys by kid, with exactly one active key once loaded.
#[derive(Clone, Debug, Default)]
pub struct AesKeyRing {
    keys: BTreeMap<String, RingKey>,
}

impl AesKeyRing {
    pub fn new(keys: impl IntoIterator<Item = RingKey>) -> Result<Self> {
        let ring = Self { keys: keys.into_iter().map(|k| (k.key.kid.clone(), k)).collect() };
        let active = ring.keys.values().filter(|k| k.state == AesKeyState::Active).count();
        if active > 1 {
            return Err(Error::State(format!("keys_map has {active} active keys")));
        }
        Ok(ring)
    }

    /// Parses `keys_map`: `{kid: {key, state, created_at, ...}}`.
    pub fn from_keys_map(json: &str) -> Result<Self> {
        let map: BTreeMap<String, StoredEntry> = serde_json::from_str(json)
            .map_err(|e| Error::State(format!("keys_map is not valid: {e}")))?;
        let keys = map
            .iter()
            .map(|(kid, e)| {
                Ok(RingKey {
                    key: AesKey::from_base64(kid.clone(), &e.key)?,
                    state: e.state,
                    created_at: e.created_at,
                    activated_at: e.activated_at,
                    deactivated_at: e.deactivated_at,
                    retired_at: e.retired_at,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(keys)
    }

    /// Renders `keys_map` (sorted by kid, so equal rings render equal text).
    pub fn to_keys_map(&self) -> SecretValue {
        let map: BTreeMap<&str, StoredEntry> = self
            .keys
            .values()
            .map(|k| {
                (
                    k.key.kid(),
                    StoredEntry {
                        key: k.key.to_base64().expose().to_owned(),
                        state: k.state,
                        created_at: k.created_at,
                        activated_at: k.activated_at,
                        deactivated_at: k.deactivated_at,
                        retired_at: k.retired_at,
                    },
                )
            })
            .collect();
        SecretValue::new(serde_json::to_string(&map).unwrap_or_else(|_| unreachable!("plain map")))
    }

    pub fn keys(&self) -> impl Iterator<Item = &RingKey> {
        self.keys.values()
    }

    pub fn get(&self, kid: &str) -> Option<&RingKey> {
        self.keys.get(kid)
    }

    pub fn active(&self) -> Option<&RingKey> {
        self.keys.values().find(|k| k.state == AesKeyState::Active)
    }

    pub fn pending(&self) -> Option<&RingKey> {
        self.keys.values().find(|k| k.state == AesKeyState::Pending)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Adds or replaces a key.
    pub fn put(&mut self, key: RingKey) {
        self.keys.insert(key.key.kid.clone(), key);
    }

    pub(crate) fn get_mut(&mut self, kid: &str) -> Option<&mut RingKey> {
        self.keys.get_mut(kid)
    }

    /// Encrypts with the active key; returns the base64url text form.
    pub fn encrypt(
        &self,
        rng: &mut (impl RngCore + CryptoRng),
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<String> {
        let active = self.active().ok_or(Error::NoActiveKey)?;
        Ok(URL_SAFE_NO_PAD.encode(active.key.seal(rng, plaintext, aad)?))
    }

    /// Decrypts the text form with whichever key its kid names, unless that key is retired.
    pub fn decrypt(&self, ciphertext: &str, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.decrypt_bytes(&from_text(ciphertext)?, aad)
    }

    /// Decrypts the binary form.
    pub fn decrypt_bytes(&self, bytes: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.open(&Envelope::decode(bytes)?, aad)
    }

    fn open(&self, envelope: &Envelope<'_>, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let key = self
            .keys
            .get(envelope.kid)
            .ok_or_else(|| Error::UnknownKid(envelope.kid.to_owned()))?;
        if key.state == AesKeyState::Retired {
            return Err(Error::RetiredKid(envelope.kid.to_owned()));
        }
        key.key.open(envelope, aad)
    }

    /// The kid a ciphertext was made under, without decrypting it.
    pub fn kid_of(ciphertext: &str) -> Result<String> {
        Ok(Envelope::decode(&from_text(ciphertext)?)?.kid.to_owned())
    }

    /// Moves a ciphertext to the active key: decrypts it and encrypts again under the active key.
    /// A ciphertext already under the active key is returned unchanged.
    pub fn reencrypt(
        &self,
        rng: &mut (impl RngCore + CryptoRng),
        ciphertext: &str,
        aad: &[u8],
    ) -> Result<String> {
        let active = self.active().ok_or(Error::NoActiveKey)?;
        let bytes = from_text(ciphertext)?;
        let envelope = Envelope::decode(&bytes)?;
        let plaintext = self.open(&envelope, aad)?;
        if envelope.kid == active.key.kid {
            return Ok(ciphertext.trim().to_owned());
        }
        self.encrypt(rng, &plaintext, aad)
    }
}

/// The bytes of a ciphertext's text form.
fn from_text(ciphertext: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(ciphertext.trim())
        .map_err(|_| Error::MalformedCiphertext("not base64url".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn ring_key(rng: &mut StdRng, state: AesKeyState) -> RingKey {
        RingKey {
            key: AesKey::generate(rng),
            state,
            created_at: 0,
            activated_at: None,
            deactivated_at: None,
            retired_at: None,
        }
    }

    fn ring(seed: u64) -> (AesKeyRing, Vec<String>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let keys = [AesKeyState::Active, AesKeyState::DecryptOnly, AesKeyState::Retired]
            .map(|s| ring_key(&mut rng, s));
        let kids = keys.iter().map(|k| k.key.kid().to_owned()).collect();
        (AesKeyRing::new(keys).unwrap(), kids)
    }

    #[test]
    fn format_is_version_kid_nonce_sealed() {
        let key = AesKey::from_bytes("k1", &[7u8; 32]).unwrap();
        let bytes = key.seal_with_nonce([9u8; NONCE_LEN], b"hello", b"").unwrap();
        assert_eq!(bytes[0], CIPHERTEXT_VERSION);
        assert_eq!(bytes[1], 2);
        assert_eq!(&bytes[2..4], b"k1");
        assert_eq!(&bytes[4..16], &[9u8; 12]);
        assert_eq!(bytes.len(), 16 + 5 + TAG_LEN);
        let env = Envelope::decode(&bytes).unwrap();
        assert_eq!(&*key.open(&env, b"").unwrap(), b"hello");
    }

    #[test]
    fn errors_are_distinct() {
        let (ring, kids) = ring(1);
        let mut rng = StdRng::seed_from_u64(2);
        let ct = ring.encrypt(&mut rng, b"refresh-token", b"user-1").unwrap();
        assert_eq!(AesKeyRing::kid_of(&ct).unwrap(), kids[0]);
        assert_eq!(&*ring.decrypt(&ct, b"user-1").unwrap(), b"refresh-token");
        assert!(matches!(ring.decrypt(&ct, b"user-2"), Err(Error::Tampered)));

        let old = ring.get(&kids[1]).unwrap().key.seal(&mut rng, b"old", b"").unwrap();
        assert_eq!(&*ring.decrypt_bytes(&old, b"").unwrap(), b"old");
        let retired = ring.get(&kids[2]).unwrap().key.seal(&mut rng, b"gone", b"").unwrap();
        assert!(
            matches!(ring.decrypt_bytes(&retired, b""), Err(Error::RetiredKid(k)) if k == kids[2])
        );
        let stranger = AesKey::generate(&mut rng).seal(&mut rng, b"x", b"").unwrap();
        assert!(matches!(ring.decrypt_bytes(&stranger, b""), Err(Error::UnknownKid(_))));
        let mut v2 = old.clone();
        v2[0] = 2;
        assert!(matches!(
            ring.decrypt_bytes(&v2, b""),
            Err(Error::UnsupportedCiphertextVersion(2))
        ));
        assert!(matches!(ring.decrypt("!!", b""), Err(Error::MalformedCiphertext(_))));
        assert!(matches!(ring.decrypt_bytes(&old[..20], b""), Err(Error::MalformedCiphertext(_))));

        let moved = ring.reencrypt(&mut rng, &URL_SAFE_NO_PAD.encode(&old), b"").unwrap();
        assert_eq!(AesKeyRing::kid_of(&moved).unwrap(), kids[0]);
        assert_eq!(&*ring.decrypt(&moved, b"").unwrap(), b"old");
        assert_eq!(ring.reencrypt(&mut rng, &ct, b"user-1").unwrap(), ct);
    }

    #[test]
    fn keys_map_round_trips() {
        let (ring, kids) = ring(3);
        let text = ring.to_keys_map();
        let again = AesKeyRing::from_keys_map(text.expose()).unwrap();
        assert_eq!(again.to_keys_map().expose(), text.expose());
        assert_eq!(again.active().unwrap().key.kid(), kids[0]);
        assert_eq!(again.get(&kids[2]).unwrap().state, AesKeyState::Retired);
        assert!(!format!("{again:?}").contains(ring.active().unwrap().key.to_base64().expose()));
        let two_active = r#"{"a":{"key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","state":"active","created_at":0},
                             "b":{"key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","state":"active","created_at":0}}"#;
        assert!(matches!(AesKeyRing::from_keys_map(two_active), Err(Error::State(_))));
        assert!(matches!(AesKey::from_base64("k", "AAAA"), Err(Error::InvalidKey(_))));
    }

    /// Two kids holding the same key bytes: a ciphertext relabelled from one kid to the other
    /// decrypts only if the header is left out of the associated data, so this fails when it is.
    #[test]
    fn the_header_is_bound_to_the_ciphertext_as_associated_data() {
        let bytes = [5u8; 32];
        let (a, b) =
            (AesKey::from_bytes("ka", &bytes).unwrap(), AesKey::from_bytes("kb", &bytes).unwrap());
        let sealed = a.seal_with_nonce([1u8; NONCE_LEN], b"refresh", b"user-1").unwrap();
        let mut relabelled = sealed.clone();
        relabelled[2..4].copy_from_slice(b"kb");
        let envelope = Envelope::decode(&relabelled).unwrap();
        assert_eq!(envelope.kid, "kb");
        assert!(matches!(b.open(&envelope, b"user-1"), Err(Error::Tampered)));
        let ring = AesKeyRing::new([RingKey {
            key: b,
            state: AesKeyState::Active,
            created_at: 0,
            activated_at: None,
            deactivated_at: None,
            retired_at: None,
        }])
        .unwrap();
        assert!(matches!(ring.decrypt_bytes(&relabelled, b"user-1"), Err(Error::Tampered)));
        // the associated data is exactly header || caller's aad: a known answer from aes-gcm itself
        let cipher = Aes256Gcm::new(aes_gcm::Key::<Aes256Gcm>::from_slice(&bytes));
        let aad = [&[CIPHERTEXT_VERSION, 2][..], b"ka", b"user-1"].concat();
        let expected = cipher
            .encrypt(Nonce::from_slice(&[1u8; NONCE_LEN]), Payload { msg: b"refresh", aad: &aad })
            .unwrap();
        assert_eq!(&sealed[4 + NONCE_LEN..], &expected[..]);
    }

    #[test]
    fn equal_keys_need_equal_kid_and_bytes() {
        let k = |kid: &str, byte: u8| AesKey::from_bytes(kid, &[byte; 32]).unwrap();
        assert!(k("a", 1) == k("a", 1));
        assert!(k("a", 1) != k("a", 2));
        assert!(k("a", 1) != k("b", 1));
    }

    proptest! {
        #[test]
        fn round_trips_any_plaintext_and_aad(
            seed in any::<u64>(),
            plaintext in proptest::collection::vec(any::<u8>(), 0..512),
            aad in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let (ring, kids) = ring(seed);
            let mut rng = StdRng::seed_from_u64(seed ^ 1);
            let ct = ring.encrypt(&mut rng, &plaintext, &aad).unwrap();
            prop_assert_eq!(AesKeyRing::kid_of(&ct).unwrap(), kids[0].clone());
            prop_assert_eq!(&ring.decrypt(&ct, &aad).unwrap()[..], &plaintext[..]);
            let bytes = URL_SAFE_NO_PAD.decode(&ct).unwrap();
            let env = Envelope::decode(&bytes).unwrap();
            prop_assert_eq!(env.encode().unwrap(), bytes.clone());
            prop_assert_eq!(env.sealed.len(), plaintext.len() + TAG_LEN);
        }

        #[test]
        fn any_flipped_bit_is_rejected(
            seed in any::<u64>(),
            plaintext in proptest::collection::vec(any::<u8>(), 0..128),
            position in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let (ring, _) = ring(seed);
            let mut rng = StdRng::seed_from_u64(seed);
            let ct = ring.encrypt(&mut rng, &plaintext, b"aad").unwrap();
            let mut bytes = URL_SAFE_NO_PAD.decode(&ct).unwrap();
            let i = position.index(bytes.len());
            bytes[i] ^= 1 << bit;
            let result = ring.decrypt_bytes(&bytes, b"aad");
            prop_assert!(result.is_err());
            // a change in the body is reported as tampering, not as something else
            let header_len = 2 + usize::from(URL_SAFE_NO_PAD.decode(&ct).unwrap()[1]);
            if i >= header_len {
                prop_assert!(matches!(result, Err(Error::Tampered)));
            }
        }
    }
}
