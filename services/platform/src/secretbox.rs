//! Encryption at rest for secrets Anshin must be able to read back (an identity provider's
//! client secret, a webhook secret): AES-256-GCM with a key kept in a file under the data directory, readable by
//! its owner only. The keys service will take this over with per-tenant KMS keys.

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::Engine;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum SecretBoxError {
    #[error("cannot read or create the secret key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("a stored secret could not be decrypted (wrong key or altered data)")]
    Decrypt,
}

#[derive(Clone)]
pub struct SecretBox {
    cipher: Arc<Aes256Gcm>,
    /// A separate key for deriving values (never the encryption key itself).
    mac_key: Arc<[u8; 32]>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox([key redacted])")
    }
}

impl SecretBox {
    pub fn from_key(key: [u8; 32]) -> Self {
        Self {
            cipher: Arc::new(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key))),
            mac_key: Arc::new(hmac_sha256(&key, &[b"anshin-secretbox-derive"])),
        }
    }

    /// `n` values of 32 bytes, each a keyed hash of `purpose` and `input`: stable for the same
    /// input, unpredictable without the key.
    pub fn derive_many(&self, purpose: &str, input: &[u8], n: usize) -> Vec<Vec<u8>> {
        (0..n as u32)
            .map(|i| {
                hmac_sha256(
                    self.mac_key.as_ref(),
                    &[purpose.as_bytes(), &[0], input, &i.to_be_bytes()],
                )
                .to_vec()
            })
            .collect()
    }

    /// Loads the key, creating a random one (mode 0600) on first use.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretBoxError> {
        let err = |reason: String| SecretBoxError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        if !path.exists() {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
            }
            let key = Aes256Gcm::generate_key(OsRng);
            crate::fsutil::write_private(path, key.as_slice()).map_err(|e| err(e.to_string()))?;
        }
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| err("the key file must hold exactly 32 bytes".into()))?;
        Ok(Self::from_key(key))
    }

    /// `context` (e.g. the tenant and purpose) is bound as associated data: a ciphertext moved to
    /// another row does not decrypt.
    pub fn seal(&self, plaintext: &str, context: &str) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        // Encryption with a fresh nonce and in-memory buffers cannot fail.
        let ct = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    pub fn open(&self, sealed: &str, context: &str) -> Result<String, SecretBoxError> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| SecretBoxError::Decrypt)?;
        if raw.len() < 12 + 16 {
            return Err(SecretBoxError::Decrypt);
        }
        let (nonce, ct) = raw.split_at(12);
        let pt = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretBoxError::Decrypt)?;
        String::from_utf8(pt).map_err(|_| SecretBoxError::Decrypt)
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    // HMAC accepts keys of any length; the error case cannot occur.
    let mut mac = match <Hmac<sha2::Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/identity-secrets.key");
        let b = SecretBox::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let sealed = b.seal("client-secret", "idp:t1");
        assert!(!sealed.contains("client-secret"));
        assert_eq!(b.open(&sealed, "idp:t1").unwrap(), "client-secret");
        assert!(b.open(&sealed, "idp:t2").is_err(), "bound to its context");
        let again = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(
            again.open(&sealed, "idp:t1").unwrap(),
            "client-secret",
            "same key after reload"
        );
        let other = SecretBox::from_key([7; 32]);
        assert!(other.open(&sealed, "idp:t1").is_err());
    }
}
