//! Anshin's access-token signing key and the access tokens themselves: ES256 JWTs (RFC 9068
//! profile, `typ: at+jwt`) with the tenant, role and scope of the client.
//!
//! The private key is a P-256 key in a PKCS#8 PEM file under the data directory (mode 0600),
//! created on first start. The keys service will hold it in KMS instead.

use crate::error::IdentityError;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

/// The JOSE `typ` of Anshin's access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// Clock skew tolerated when checking an access token's `exp`.
const ACCESS_TOKEN_LEEWAY_SECS: u64 = 5;
/// Longest bearer value treated as an access token.
const MAX_TOKEN_LEN: usize = 4096;

/// The signing key, its public JWK and key id. Cheap to clone.
#[derive(Clone)]
pub struct TokenKeys {
    inner: Arc<Keys>,
}

struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Jwk,
    kid: String,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TokenKeys(kid={}, [private key redacted])",
            self.inner.kid
        )
    }
}

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    /// The client id (`anc_…`).
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    /// The client's tenant.
    pub tenant: Uuid,
    pub role: String,
    /// Space-separated scopes.
    pub scope: String,
}

impl TokenKeys {
    /// A new P-256 private key in PKCS#8 PEM, for the caller to store (the server keeps it
    /// sealed by the key service).
    pub fn generate_pkcs8_pem() -> Result<String, String> {
        generate_pem()
    }

    /// A P-256 private key in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, String> {
        use p256::pkcs8::DecodePrivateKey;
        // Checks the curve: jsonwebtoken would accept any EC key here.
        p256::SecretKey::from_pkcs8_pem(pem)
            .map_err(|_| "the file does not hold a P-256 private key in PKCS#8 PEM".to_string())?;
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes())
            .map_err(|e| format!("the key cannot sign ES256: {e}"))?;
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256)
            .map_err(|e| format!("the public key cannot be derived: {e}"))?;
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| format!("the key id cannot be computed: {e}"))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let decoding = DecodingKey::from_jwk(&jwk)
            .map_err(|e| format!("the public key cannot verify: {e}"))?;
        Ok(Self {
            inner: Arc::new(Keys {
                encoding,
                decoding,
                jwk,
                kid,
            }),
        })
    }

    /// The key id (`kid`): the public key's RFC 7638 thumbprint.
    pub fn kid(&self) -> &str {
        &self.inner.kid
    }

    /// The public key set published at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.inner.jwk.clone()],
        }
    }

    /// Signs access-token claims.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, IdentityError> {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some(ACCESS_TOKEN_TYP.into());
        header.kid = Some(self.inner.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.inner.encoding)
            .map_err(|e| IdentityError::Setup(format!("cannot sign an access token: {e}")))
    }

    /// The claims of an access token this key signed for `issuer`, if it is intact, meant for
    /// the API, and not expired; `None` otherwise (the caller answers 401).
    pub fn verify(&self, token: &str, issuer: &str) -> Option<AccessClaims> {
        if !looks_like_jwt(token) {
            return None;
        }
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg != Algorithm::ES256
            || header.typ.as_deref() != Some(ACCESS_TOKEN_TYP)
            || header.kid.as_deref() != Some(self.inner.kid.as_str())
        {
            return None;
        }
        let mut v = Validation::new(Algorithm::ES256);
        v.leeway = ACCESS_TOKEN_LEEWAY_SECS;
        v.set_issuer(&[issuer]);
        v.set_audience(&[super::ACCESS_TOKEN_AUDIENCE]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<AccessClaims>(token, &self.inner.decoding, &v)
            .ok()
            .map(|d| d.claims)
    }
}

/// Whether a bearer value has the shape of a JWT (three base64url parts), as opposed to an
/// `anshin_…` API token.
pub fn looks_like_jwt(token: &str) -> bool {
    token.len() <= MAX_TOKEN_LEN
        && token.split('.').count() == 3
        && token.split('.').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn generate_pem() -> Result<String, String> {
    use p256::pkcs8::{EncodePrivateKey, LineEnding};
    let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    key.to_pkcs8_pem(LineEnding::LF)
        .map(|pem| pem.as_str().to_string())
        .map_err(|e| format!("cannot encode a new key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp_in: i64) -> AccessClaims {
        let now = chrono::Utc::now().timestamp();
        AccessClaims {
            iss: "https://anshin.example.jp".into(),
            sub: "anc_test".into(),
            aud: super::super::ACCESS_TOKEN_AUDIENCE.into(),
            exp: now + exp_in,
            iat: now,
            jti: Uuid::new_v4().to_string(),
            tenant: Uuid::new_v4(),
            role: "auditor".into(),
            scope: "read".into(),
        }
    }

    #[test]
    fn a_key_is_stable_from_its_pem_and_verifies_its_tokens() {
        let pem = TokenKeys::generate_pkcs8_pem().unwrap();
        let keys = TokenKeys::from_pkcs8_pem(&pem).unwrap();
        let again = TokenKeys::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(keys.kid(), again.kid(), "same key after reload");
        assert!(!format!("{keys:?}").contains("PRIVATE"));

        let c = claims(600);
        let token = keys.sign(&c).unwrap();
        assert!(looks_like_jwt(&token));
        assert_eq!(again.verify(&token, &c.iss), Some(c.clone()));
        assert_eq!(
            keys.verify(&token, "https://other.example.jp"),
            None,
            "issuer"
        );
        let expired = keys.sign(&claims(-60)).unwrap();
        assert_eq!(keys.verify(&expired, &c.iss), None, "expired");
        let mut wrong_aud = claims(600);
        wrong_aud.aud = "another-api".into();
        assert_eq!(
            keys.verify(&keys.sign(&wrong_aud).unwrap(), &c.iss),
            None,
            "audience"
        );

        // Tampered payload: the signature no longer matches.
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = c.clone();
        forged.role = "provider_admin".into();
        let forged_payload = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(&forged).unwrap())
        };
        let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(keys.verify(&tampered, &c.iss), None);

        // Another key's token, even with our kid, does not verify.
        let other = TokenKeys::from_pkcs8_pem(&generate_pem().unwrap()).unwrap();
        assert_ne!(other.kid(), keys.kid());
        assert_eq!(keys.verify(&other.sign(&c).unwrap(), &c.iss), None);

        let jwks = serde_json::to_value(keys.jwks()).unwrap();
        assert_eq!(jwks["keys"][0]["kty"], "EC");
        assert_eq!(jwks["keys"][0]["crv"], "P-256");
        assert_eq!(jwks["keys"][0]["kid"], keys.kid());
        assert_eq!(jwks["keys"][0]["use"], "sig");
        assert!(jwks["keys"][0].get("d").is_none(), "no private part");
    }

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt("anshin_abcdef"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a..c"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt("a.b c.d"));
    }

    #[test]
    fn garbage_keys_are_refused() {
        assert!(TokenKeys::from_pkcs8_pem("not a key").is_err());
        assert!(TokenKeys::from_pkcs8_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )
        .is_err());
    }
}
