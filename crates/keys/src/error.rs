//! The crate's one error type. Variants are the cases a caller branches on: a rejected token or
//! ciphertext names why, a refused policy names the rule it breaks.

/// Everything that can go wrong in ikit-keys.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key store failed: {0}")]
    Store(String),
    #[error("rotation lock failed: {0}")]
    Lock(String),
    #[error("rotation lock was lost before the step finished")]
    LockLost,
    #[error(
        "stale fencing token {ours}: the state was committed under token {stored} of the same \
         lock (a newer leader took over, or the lock's token counter went back)"
    )]
    Fenced { ours: u64, stored: u64 },
    #[error("unsafe key policy: {0}")]
    UnsafePolicy(String),
    #[error("invalid key material: {0}")]
    InvalidKey(String),
    #[error("persisted key state is invalid: {0}")]
    State(String),
    #[error("key ring is not loaded: call load() first")]
    NotLoaded,
    #[error("a rotation is in progress: {0}")]
    RotationInProgress(String),
    #[error("signing failed: {0}")]
    Sign(String),

    // token verification
    #[error("malformed token: {0}")]
    MalformedToken(String),
    #[error("token header has no kid")]
    MissingKid,
    #[error("unknown key id {0:?}")]
    UnknownKid(String),
    #[error("token header names algorithm {found:?} but key {kid:?} is {expected}")]
    AlgorithmMismatch { kid: String, expected: String, found: String },
    #[error("token signature is invalid")]
    InvalidSignature,
    #[error("token has expired")]
    TokenExpired,
    #[error("token is not valid yet")]
    TokenNotYetValid,
    #[error("token has no {0} claim")]
    MissingClaim(&'static str),
    #[error("token audience is not accepted here")]
    InvalidAudience,
    #[error("token issuer is not accepted here")]
    InvalidIssuer,
    #[error(
        "requested token lifetime {requested}s is outside 1..={max}s (the policy's max_token_ttl)"
    )]
    TokenTtl { requested: u64, max: i64 },

    // token cipher
    #[error("malformed ciphertext: {0}")]
    MalformedCiphertext(String),
    #[error("unsupported ciphertext version {0}")]
    UnsupportedCiphertextVersion(u8),
    #[error("key {0:?} is retired and no longer decrypts")]
    RetiredKid(String),
    #[error("ciphertext failed authentication: tampered, or wrong associated data")]
    Tampered,
    #[error("no active encryption key")]
    NoActiveKey,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
