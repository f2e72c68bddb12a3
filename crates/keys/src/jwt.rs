//! JWT signing keys, pure: generation, PKCS#8 PEM in and out, public keys as JWK with the RFC
//! 7638 thumbprint as `kid`, signing, and verification against a set of published keys where the
//! algorithm always comes from the key, never from the token header. No IO, no clock: `now` and
//! the RNG are parameters.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ikit_common::SecretValue;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::{CryptoRng, RngCore};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The signing algorithms supported. ES256 is the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    #[default]
    ES256,
    RS256,
    EdDSA,
}

impl JwtAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
            Self::EdDSA => "EdDSA",
        }
    }

    fn jsonwebtoken(self) -> Algorithm {
        match self {
            Self::ES256 => Algorithm::ES256,
            Self::RS256 => Algorithm::RS256,
            Self::EdDSA => Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JwtAlgorithm {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ES256" => Ok(Self::ES256),
            "RS256" => Ok(Self::RS256),
            "EdDSA" => Ok(Self::EdDSA),
            other => Err(Error::InvalidKey(format!("unsupported jwt algorithm {other:?}"))),
        }
    }
}

/// RSA modulus size used when generating RS256 keys.
pub const RSA_BITS: usize = 2048;

/// The public half of a signing key's JWK parameters.
#[derive(Clone, PartialEq, Eq)]
enum JwkParams {
    Ec { x: String, y: String },
    Rsa { n: String, e: String },
    Okp { x: String },
}

impl JwkParams {
    /// The RFC 7638 canonical form: required members only, sorted, no whitespace.
    fn canonical(&self) -> String {
        let s = |v: &str| Value::String(v.to_owned()).to_string();
        match self {
            Self::Ec { x, y } => {
                format!(r#"{{"crv":"P-256","kty":"EC","x":{},"y":{}}}"#, s(x), s(y))
            }
            Self::Rsa { n, e } => format!(r#"{{"e":{},"kty":"RSA","n":{}}}"#, s(e), s(n)),
            Self::Okp { x } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":{}}}"#, s(x)),
        }
    }

    fn thumbprint(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.canonical().as_bytes()))
    }

    fn algorithm(&self) -> JwtAlgorithm {
        match self {
            Self::Ec { .. } => JwtAlgorithm::ES256,
            Self::Rsa { .. } => JwtAlgorithm::RS256,
            Self::Okp { .. } => JwtAlgorithm::EdDSA,
        }
    }

    fn from_json(jwk: &Value) -> Result<Self> {
        let field = |name: &str| {
            jwk.get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| Error::InvalidKey(format!("jwk has no string member {name:?}")))
        };
        match field("kty")?.as_str() {
            "EC" => {
                let crv = field("crv")?;
                if crv != "P-256" {
                    return Err(Error::InvalidKey(format!("unsupported ec curve {crv:?}")));
                }
                Ok(Self::Ec { x: field("x")?, y: field("y")? })
            }
            "RSA" => Ok(Self::Rsa { n: field("n")?, e: field("e")? }),
            "OKP" => {
                let crv = field("crv")?;
                if crv != "Ed25519" {
                    return Err(Error::InvalidKey(format!("unsupported okp curve {crv:?}")));
                }
                Ok(Self::Okp { x: field("x")? })
            }
            other => Err(Error::InvalidKey(format!("unsupported jwk kty {other:?}"))),
        }
    }

    fn decoding_key(&self) -> Result<DecodingKey> {
        let key = match self {
            Self::Ec { x, y } => DecodingKey::from_ec_components(x, y),
            Self::Rsa { n, e } => DecodingKey::from_rsa_components(n, e),
            Self::Okp { x } => DecodingKey::from_ed_components(x),
        };
        key.map_err(|e| Error::InvalidKey(format!("jwk is not a usable public key: {e}")))
    }
}

/// Computes the RFC 7638 SHA-256 thumbprint of a public JWK (EC P-256, RSA or OKP Ed25519).
pub fn rfc7638_thumbprint(jwk: &Value) -> Result<String> {
    Ok(JwkParams::from_json(jwk)?.thumbprint())
}

/// A published verification key: a public JWK with its `kid` and `alg`.
#[derive(Clone)]
pub struct PublicJwk {
    kid: String,
    params: JwkParams,
    decoding: DecodingKey,
}

impl fmt::Debug for PublicJwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicJwk").field("kid", &self.kid).field("alg", &self.algorithm()).finish()
    }
}

impl PartialEq for PublicJwk {
    fn eq(&self, other: &Self) -> bool {
        self.kid == other.kid && self.params == other.params
    }
}

impl PublicJwk {
    fn from_params(params: JwkParams) -> Result<Self> {
        let decoding = params.decoding_key()?;
        Ok(Self { kid: params.thumbprint(), params, decoding })
    }

    /// Parses a JWK. A `kid` member, when present, must equal the RFC 7638 thumbprint and an
    /// `alg` member must match the key type: a published key cannot claim another algorithm.
    pub fn from_json(jwk: &Value) -> Result<Self> {
        let key = Self::from_params(JwkParams::from_json(jwk)?)?;
        if let Some(kid) = jwk.get("kid").and_then(Value::as_str)
            && kid != key.kid
        {
            return Err(Error::InvalidKey(format!(
                "jwk kid {kid:?} is not its thumbprint {:?}",
                key.kid
            )));
        }
        if let Some(alg) = jwk.get("alg").and_then(Value::as_str)
            && alg != key.algorithm().as_str()
        {
            return Err(Error::InvalidKey(format!(
                "jwk alg {alg:?} does not fit a {} key",
                key.algorithm()
            )));
        }
        Ok(key)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> JwtAlgorithm {
        self.params.algorithm()
    }

    /// The JWK as published in JWKS: `kty`, curve or modulus members, `kid`, `alg`, `use`.
    pub fn to_json(&self) -> Value {
        let (kid, alg) = (self.kid.as_str(), self.algorithm().as_str());
        match &self.params {
            JwkParams::Ec { x, y } => json!({
                "kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": alg, "use": "sig"
            }),
            JwkParams::Rsa { n, e } => json!({
                "kty": "RSA", "n": n, "e": e, "kid": kid, "alg": alg, "use": "sig"
            }),
            JwkParams::Okp { x } => json!({
                "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": alg, "use": "sig"
            }),
        }
    }
}

/// A parsed private key, kept ready so signing does not parse DER on every token. Each key type
/// zeroizes itself on drop.
#[derive(Clone)]
enum Signer {
    Es256(p256::ecdsa::SigningKey),
    EdDsa(ed25519_dalek::SigningKey),
    Rs256(Box<rsa::pkcs1v15::SigningKey<Sha256>>),
}

impl Signer {
    /// The JWS signature of `message`: `r || s` for ES256, the 64-byte Ed25519 signature, or the
    /// RSASSA-PKCS1-v1_5 signature (blinded) for RS256.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        use p256::ecdsa::signature::{RandomizedSigner, SignatureEncoding, Signer as _};
        let failed = |e: p256::ecdsa::signature::Error| Error::Sign(e.to_string());
        Ok(match self {
            Self::Es256(key) => {
                let signature: p256::ecdsa::Signature = key.try_sign(message).map_err(failed)?;
                signature.to_bytes().to_vec()
            }
            Self::EdDsa(key) => ed25519_dalek::Signer::sign(key, message).to_bytes().to_vec(),
            Self::Rs256(key) => {
                key.try_sign_with_rng(&mut rand::thread_rng(), message).map_err(failed)?.to_vec()
            }
        })
    }
}

/// A private signing key: PKCS#8 PEM text, its public JWK and the parsed key.
#[derive(Clone)]
pub struct JwtKey {
    pem: SecretValue,
    signer: Signer,
    public: PublicJwk,
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.public.kid)
            .field("alg", &self.public.algorithm())
            .field("private", &"[REDACTED]")
            .finish()
    }
}

fn invalid(what: &str) -> impl Fn(String) -> Error + '_ {
    move |e| Error::InvalidKey(format!("{what}: {e}"))
}

impl JwtKey {
    /// Generates a new key for `alg`.
    pub fn generate(alg: JwtAlgorithm, rng: &mut (impl RngCore + CryptoRng)) -> Result<Self> {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        let pem = match alg {
            JwtAlgorithm::ES256 => p256::SecretKey::random(rng)
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| invalid("cannot encode p-256 key")(e.to_string()))?,
            JwtAlgorithm::RS256 => rsa::RsaPrivateKey::new(rng, RSA_BITS)
                .map_err(|e| invalid("cannot generate rsa key")(e.to_string()))?
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| invalid("cannot encode rsa key")(e.to_string()))?,
            JwtAlgorithm::EdDSA => ed25519_dalek::SigningKey::generate(rng)
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| invalid("cannot encode ed25519 key")(e.to_string()))?,
        };
        Self::from_pem(&pem)
    }

    /// Reads a private key from PEM: PKCS#8 (`PRIVATE KEY`) for any supported algorithm, and for
    /// imports also PKCS#1 (`RSA PRIVATE KEY`) and SEC1 (`EC PRIVATE KEY`), which are converted to
    /// PKCS#8. The algorithm is found from the key itself.
    pub fn from_pem(pem: &str) -> Result<Self> {
        use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::traits::PublicKeyParts;

        let pem = pem.trim();
        if let Ok(key) =
            p256::SecretKey::from_pkcs8_pem(pem).or_else(|_| p256::SecretKey::from_sec1_pem(pem))
        {
            use p256::elliptic_curve::sec1::ToEncodedPoint;
            let point = key.public_key().to_encoded_point(false);
            let (Some(x), Some(y)) = (point.x(), point.y()) else {
                return Err(Error::InvalidKey("p-256 public point is the identity".into()));
            };
            let params =
                JwkParams::Ec { x: URL_SAFE_NO_PAD.encode(x), y: URL_SAFE_NO_PAD.encode(y) };
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| invalid("cannot encode p-256 key")(e.to_string()))?;
            let signer = Signer::Es256(p256::ecdsa::SigningKey::from(&key));
            return Self::assemble(&pem, signer, params);
        }
        if let Ok(key) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            let params =
                JwkParams::Okp { x: URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes()) };
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| invalid("cannot encode ed25519 key")(e.to_string()))?;
            return Self::assemble(&pem, Signer::EdDsa(key), params);
        }
        let rsa = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem));
        if let Ok(key) = rsa {
            if key.size() * 8 < RSA_BITS {
                return Err(Error::InvalidKey(format!(
                    "rsa key has {} bits, at least {RSA_BITS} are required",
                    key.size() * 8
                )));
            }
            let params = JwkParams::Rsa {
                n: URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
                e: URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
            };
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| invalid("cannot encode rsa key")(e.to_string()))?;
            let signer = Signer::Rs256(Box::new(rsa::pkcs1v15::SigningKey::<Sha256>::new(key)));
            return Self::assemble(&pem, signer, params);
        }
        Err(Error::InvalidKey(
            "not a pkcs#8, pkcs#1 or sec1 pem private key for p-256, rsa or ed25519".into(),
        ))
    }

    fn assemble(pem: &str, signer: Signer, params: JwkParams) -> Result<Self> {
        Ok(Self { pem: SecretValue::new(pem), signer, public: PublicJwk::from_params(params)? })
    }

    /// The private key as PKCS#8 PEM.
    pub fn pem(&self) -> &SecretValue {
        &self.pem
    }

    pub fn kid(&self) -> &str {
        &self.public.kid
    }

    pub fn algorithm(&self) -> JwtAlgorithm {
        self.public.algorithm()
    }

    pub fn public(&self) -> &PublicJwk {
        &self.public
    }

    /// Signs `claims` as a compact JWS with `typ: JWT`, `alg` and `kid` in the header.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String> {
        let header = json!({ "typ": "JWT", "alg": self.algorithm().as_str(), "kid": self.kid() });
        let claims = serde_json::to_vec(claims).map_err(|e| Error::Sign(format!("claims: {e}")))?;
        let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(claims));
        let signature = self.signer.sign(token.as_bytes())?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(token)
    }
}

/// The verification keys published at one time, by kid.
#[derive(Clone, Debug, Default)]
pub struct JwkSet {
    keys: BTreeMap<String, PublicJwk>,
    order: Vec<String>,
}

impl JwkSet {
    pub fn new(keys: impl IntoIterator<Item = PublicJwk>) -> Self {
        let mut set = Self::default();
        for key in keys {
            set.insert(key);
        }
        set
    }

    /// Adds a key; a key already present (same kid) is kept once, in its first position.
    pub fn insert(&mut self, key: PublicJwk) {
        if !self.keys.contains_key(&key.kid) {
            self.order.push(key.kid.clone());
            self.keys.insert(key.kid.clone(), key);
        }
    }

    pub fn get(&self, kid: &str) -> Option<&PublicJwk> {
        self.keys.get(kid)
    }

    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// `{"keys":[...]}` in publication order.
    pub fn to_json(&self) -> Value {
        json!({ "keys": self.order.iter().map(|k| self.keys[k].to_json()).collect::<Vec<_>>() })
    }

    /// Parses `{"keys":[...]}`; every key must be a valid public JWK whose kid is its thumbprint.
    pub fn from_json(jwks: &Value) -> Result<Self> {
        let keys = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::InvalidKey("jwks has no \"keys\" array".into()))?;
        Ok(Self::new(keys.iter().map(PublicJwk::from_json).collect::<Result<Vec<_>>>()?))
    }

    /// Verifies a compact JWS at time `now` (seconds) and returns its claims. The key is chosen
    /// by the header's `kid` among this set; its algorithm must equal the key's own, whatever the
    /// header says. The claims are then checked against `options` (see [`VerifyOptions`]).
    pub fn verify_at<T: DeserializeOwned>(
        &self,
        token: &str,
        now: i64,
        options: &VerifyOptions,
    ) -> Result<T> {
        let header_b64 = token
            .split('.')
            .next()
            .filter(|_| token.split('.').count() == 3)
            .ok_or_else(|| Error::MalformedToken("not three dot-separated parts".into()))?;
        let header_bytes = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|e| Error::MalformedToken(format!("header is not base64url: {e}")))?;
        let header: Value = serde_json::from_slice(&header_bytes)
            .map_err(|e| Error::MalformedToken(format!("header is not json: {e}")))?;
        let kid = header.get("kid").and_then(Value::as_str).ok_or(Error::MissingKid)?;
        let key = self.keys.get(kid).ok_or_else(|| Error::UnknownKid(kid.to_owned()))?;
        let expected = key.algorithm();
        let found = header.get("alg").and_then(Value::as_str).unwrap_or("");
        if found != expected.as_str() {
            return Err(Error::AlgorithmMismatch {
                kid: kid.to_owned(),
                expected: expected.as_str().to_owned(),
                found: found.to_owned(),
            });
        }
        // jsonwebtoken checks the signature only; the claims are checked below, one rule each
        let mut validation = Validation::new(expected.jsonwebtoken());
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Value>(token, &key.decoding, &validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => Error::InvalidSignature,
                _ => Error::MalformedToken(e.to_string()),
            },
        )?;
        let claims = data.claims;
        options.check(&claims, now)?;
        serde_json::from_value(claims).map_err(|e| Error::MalformedToken(format!("claims: {e}")))
    }
}

/// What a token's claims must satisfy once its signature verified.
///
/// The default requires `exp` (a token without one would verify forever), accepts no `aud` (RFC
/// 7519: a recipient not named in a present `aud` must refuse the token), checks no issuer and
/// tolerates no skew.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Refuse a token without `exp`. Default true.
    pub require_exp: bool,
    /// The audiences this verifier answers to: a token's `aud` (a string or an array) must name
    /// one of them, and with audiences set a token without `aud` is refused. Empty: a token
    /// carrying `aud` is refused.
    pub audiences: Vec<String>,
    /// When set, `iss` must be present and equal to it.
    pub issuer: Option<String>,
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    pub leeway: i64,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self { require_exp: true, audiences: Vec::new(), issuer: None, leeway: 0 }
    }
}

impl VerifyOptions {
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    pub fn with_leeway(mut self, seconds: i64) -> Self {
        self.leeway = seconds;
        self
    }

    /// Accepts tokens without `exp` (they never expire: only for tokens that are checked
    /// otherwise, such as one-time tokens kept in a database).
    pub fn allow_missing_exp(mut self) -> Self {
        self.require_exp = false;
        self
    }

    /// Checks `exp`, `nbf`, `aud` and `iss` of verified claims at `now`.
    pub fn check(&self, claims: &Value, now: i64) -> Result<()> {
        let number = |name: &str| -> Result<Option<i64>> {
            match claims.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => {
                    v.as_f64().filter(|f| f.is_finite()).map(|f| Some(f.floor() as i64)).ok_or_else(
                        || Error::MalformedToken(format!("claim {name:?} is not a number")),
                    )
                }
            }
        };
        match number("exp")? {
            Some(exp) if now >= exp.saturating_add(self.leeway) => return Err(Error::TokenExpired),
            None if self.require_exp => return Err(Error::MissingClaim("exp")),
            _ => {}
        }
        if let Some(nbf) = number("nbf")?
            && now < nbf.saturating_sub(self.leeway)
        {
            return Err(Error::TokenNotYetValid);
        }
        let audiences: Vec<&str> = match claims.get("aud") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many
                .iter()
                .map(|v| {
                    v.as_str().ok_or_else(|| {
                        Error::MalformedToken("claim \"aud\" holds a non-string".into())
                    })
                })
                .collect::<Result<_>>()?,
            Some(_) => {
                return Err(Error::MalformedToken(
                    "claim \"aud\" is neither a string nor an array".into(),
                ));
            }
        };
        let named = audiences.iter().any(|a| self.audiences.iter().any(|ours| ours == a));
        if (!self.audiences.is_empty() || !audiences.is_empty()) && !named {
            return Err(Error::InvalidAudience);
        }
        if let Some(issuer) = &self.issuer
            && claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
        {
            return Err(Error::InvalidIssuer);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    /// Options for tests about signatures and keys, not about `exp`.
    fn lax(leeway: i64) -> VerifyOptions {
        VerifyOptions::default().allow_missing_exp().with_leeway(leeway)
    }

    #[test]
    fn exp_is_required_by_default_and_aud_and_iss_are_checked() {
        let key = JwtKey::generate(JwtAlgorithm::ES256, &mut rng()).unwrap();
        let set = JwkSet::new([key.public().clone()]);
        let strict = VerifyOptions::default();
        let forever = key.sign(&json!({"sub": "u"})).unwrap();
        assert!(matches!(
            set.verify_at::<Value>(&forever, 0, &strict),
            Err(Error::MissingClaim("exp"))
        ));
        let bounded = key.sign(&json!({"sub": "u", "exp": 100})).unwrap();
        assert!(set.verify_at::<Value>(&bounded, 99, &strict).is_ok());
        assert!(matches!(set.verify_at::<Value>(&bounded, 100, &strict), Err(Error::TokenExpired)));
        assert!(matches!(
            set.verify_at::<Value>(&key.sign(&json!({"exp": "soon"})).unwrap(), 0, &strict),
            Err(Error::MalformedToken(_))
        ));

        let api = strict.clone().with_audience("api").with_audience("admin");
        for (aud, ok) in
            [(json!("api"), true), (json!(["x", "admin"]), true), (json!("other"), false)]
        {
            let token = key.sign(&json!({"exp": 100, "aud": aud})).unwrap();
            assert_eq!(set.verify_at::<Value>(&token, 0, &api).is_ok(), ok, "{aud}");
            // a verifier that names no audience refuses a token addressed to one
            let refused = set.verify_at::<Value>(&token, 0, &strict);
            assert!(matches!(refused, Err(Error::InvalidAudience)), "{aud}");
        }
        let nobody = key.sign(&json!({"exp": 100, "aud": []})).unwrap();
        assert!(matches!(set.verify_at::<Value>(&nobody, 0, &api), Err(Error::InvalidAudience)));
        assert!(matches!(set.verify_at::<Value>(&bounded, 0, &api), Err(Error::InvalidAudience)));
        let bad_aud = key.sign(&json!({"exp": 100, "aud": 7})).unwrap();
        assert!(matches!(set.verify_at::<Value>(&bad_aud, 0, &api), Err(Error::MalformedToken(_))));

        let issued = strict.clone().with_issuer("https://auth.example");
        let from_us = key.sign(&json!({"exp": 100, "iss": "https://auth.example"})).unwrap();
        let from_them = key.sign(&json!({"exp": 100, "iss": "https://evil.example"})).unwrap();
        assert!(set.verify_at::<Value>(&from_us, 0, &issued).is_ok());
        assert!(matches!(
            set.verify_at::<Value>(&from_them, 0, &issued),
            Err(Error::InvalidIssuer)
        ));
        assert!(matches!(set.verify_at::<Value>(&bounded, 0, &issued), Err(Error::InvalidIssuer)));
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            rfc7638_thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        // the published form refuses a kid that is not the thumbprint
        assert!(matches!(PublicJwk::from_json(&jwk), Err(Error::InvalidKey(_))));
    }

    #[test]
    fn each_algorithm_signs_verifies_and_round_trips_pem() {
        let mut rng = rng();
        for alg in [JwtAlgorithm::ES256, JwtAlgorithm::EdDSA, JwtAlgorithm::RS256] {
            let key = JwtKey::generate(alg, &mut rng).unwrap();
            assert_eq!(key.algorithm(), alg);
            assert!(key.pem().expose().starts_with("-----BEGIN PRIVATE KEY-----"), "{alg}");
            let again = JwtKey::from_pem(key.pem().expose()).unwrap();
            assert_eq!(again.kid(), key.kid());
            let jwk = key.public().to_json();
            assert_eq!(jwk["kid"], key.kid());
            assert_eq!(jwk["alg"], alg.as_str());
            assert_eq!(jwk["use"], "sig");
            assert_eq!(rfc7638_thumbprint(&jwk).unwrap(), key.kid());
            let set = JwkSet::from_json(&JwkSet::new([key.public().clone()]).to_json()).unwrap();
            let token = key.sign(&json!({"sub": "u1", "exp": 2_000})).unwrap();
            let claims: Value = set.verify_at(&token, 1_000, &lax(0)).unwrap();
            assert_eq!(claims["sub"], "u1");
            assert!(matches!(
                set.verify_at::<Value>(&token, 2_000, &lax(0)),
                Err(Error::TokenExpired)
            ));
            assert!(set.verify_at::<Value>(&token, 2_000, &lax(5)).is_ok());
            // tokens made by jsonwebtoken itself from our PEM verify here too
            let encoding = match alg {
                JwtAlgorithm::ES256 => {
                    jsonwebtoken::EncodingKey::from_ec_pem(key.pem().expose().as_bytes())
                }
                JwtAlgorithm::EdDSA => {
                    jsonwebtoken::EncodingKey::from_ed_pem(key.pem().expose().as_bytes())
                }
                JwtAlgorithm::RS256 => continue,
            }
            .unwrap();
            let mut header = jsonwebtoken::Header::new(alg.jsonwebtoken());
            header.kid = Some(key.kid().to_owned());
            let theirs = jsonwebtoken::encode(&header, &json!({"sub": "u2"}), &encoding).unwrap();
            assert_eq!(set.verify_at::<Value>(&theirs, 0, &lax(0)).unwrap()["sub"], "u2");
        }
    }

    #[test]
    fn debug_never_shows_private_key() {
        let key = JwtKey::generate(JwtAlgorithm::ES256, &mut rng()).unwrap();
        let debug = format!("{key:?}");
        assert!(!debug.contains("PRIVATE"), "{debug}");
        assert!(debug.contains(key.kid()));
    }

    fn forge(header: &Value, token: &str) -> String {
        let rest = token.split_once('.').unwrap().1;
        format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()))
    }

    #[test]
    fn algorithm_comes_from_the_key_not_the_header() {
        let mut rng = rng();
        let key = JwtKey::generate(JwtAlgorithm::ES256, &mut rng).unwrap();
        let set = JwkSet::new([key.public().clone()]);
        let token = key.sign(&json!({"sub": "u1"})).unwrap();
        for alg in ["HS256", "none", "RS256", "ES384", "EdDSA"] {
            let forged = forge(&json!({"alg": alg, "kid": key.kid(), "typ": "JWT"}), &token);
            match set.verify_at::<Value>(&forged, 0, &lax(0)) {
                Err(Error::AlgorithmMismatch { found, expected, .. }) => {
                    assert_eq!((found.as_str(), expected.as_str()), (alg, "ES256"));
                }
                other => panic!("{alg}: {other:?}"),
            }
        }
        // an HS256 token made with the public key bytes as the secret is refused too
        let secret = key.public().to_json().to_string();
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.kid = Some(key.kid().to_owned());
        let hs = jsonwebtoken::encode(
            &header,
            &json!({"sub":"x"}),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap();
        assert!(matches!(
            set.verify_at::<Value>(&hs, 0, &lax(0)),
            Err(Error::AlgorithmMismatch { .. })
        ));
        // unsigned "none" token with an empty signature
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(json!({"alg":"none","kid":key.kid()}).to_string()),
            URL_SAFE_NO_PAD.encode("{}")
        );
        assert!(matches!(
            set.verify_at::<Value>(&none, 0, &lax(0)),
            Err(Error::AlgorithmMismatch { .. })
        ));
    }

    #[test]
    fn tampered_unknown_and_malformed_tokens_are_rejected() {
        let mut rng = rng();
        let key = JwtKey::generate(JwtAlgorithm::ES256, &mut rng).unwrap();
        let other = JwtKey::generate(JwtAlgorithm::ES256, &mut rng).unwrap();
        let set = JwkSet::new([key.public().clone()]);
        let token = key.sign(&json!({"sub": "u1", "admin": false})).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let evil = URL_SAFE_NO_PAD.encode(json!({"sub": "u1", "admin": true}).to_string());
        let tampered = format!("{}.{evil}.{}", parts[0], parts[2]);
        assert!(matches!(
            set.verify_at::<Value>(&tampered, 0, &lax(0)),
            Err(Error::InvalidSignature)
        ));
        let foreign = other.sign(&json!({"sub": "u1"})).unwrap();
        assert!(
            matches!(set.verify_at::<Value>(&foreign, 0, &lax(0)), Err(Error::UnknownKid(k)) if k == other.kid())
        );
        let no_kid = forge(&json!({"alg": "ES256"}), &token);
        assert!(matches!(set.verify_at::<Value>(&no_kid, 0, &lax(0)), Err(Error::MissingKid)));
        assert!(matches!(set.verify_at::<Value>("a.b", 0, &lax(0)), Err(Error::MalformedToken(_))));
        let nbf = key.sign(&json!({"nbf": 100})).unwrap();
        assert!(matches!(set.verify_at::<Value>(&nbf, 50, &lax(10)), Err(Error::TokenNotYetValid)));
        assert!(set.verify_at::<Value>(&nbf, 95, &lax(10)).is_ok());
    }

    #[test]
    fn imports_pkcs1_and_sec1_and_refuses_junk() {
        use p256::elliptic_curve::pkcs8::LineEnding;
        let sec1 = p256::SecretKey::random(&mut rng()).to_sec1_pem(LineEnding::LF).unwrap();
        let key = JwtKey::from_pem(&sec1).unwrap();
        assert_eq!(key.algorithm(), JwtAlgorithm::ES256);
        assert!(key.pem().expose().contains("BEGIN PRIVATE KEY"));
        assert!(matches!(JwtKey::from_pem("hello"), Err(Error::InvalidKey(_))));
    }
}
