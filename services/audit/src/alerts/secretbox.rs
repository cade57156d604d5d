//! Encryption at rest for webhook signing secrets, which Anshin must read back to sign each
//! delivery: AES-256-GCM with a key in `audit-secrets.key` under the data directory (mode 0600,
//! created on first use). The same construction as identity's `secretbox` (copied, not shared,
//! so the audit crate does not depend on identity); the keys service will replace both with
//! per-tenant KMS keys.

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::Engine;
use std::path::Path;
use std::sync::Arc;

/// The key file's name under the data directory.
pub const KEY_FILE: &str = "audit-secrets.key";

#[derive(Clone)]
pub struct SecretBox {
    cipher: Arc<Aes256Gcm>,
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
        }
    }

    /// Loads `data_dir/audit-secrets.key`, creating a random key (mode 0600) on first use.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, String> {
        let path = data_dir.join(KEY_FILE);
        let err = |reason: String| format!("audit secret key {}: {reason}", path.display());
        if !path.exists() {
            let key = Aes256Gcm::generate_key(OsRng);
            match anshin_platform::fsutil::write_private(&path, key.as_slice()) {
                Ok(()) => {}
                // Another process created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(err(e.to_string())),
            }
        }
        let bytes = std::fs::read(&path).map_err(|e| err(e.to_string()))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| err("the key file must hold exactly 32 bytes".into()))?;
        Ok(Self::from_key(key))
    }

    /// `context` (tenant and channel) is bound as associated data: a ciphertext copied to
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

    pub fn open(&self, sealed: &str, context: &str) -> Option<String> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .ok()?;
        if raw.len() < 12 + 16 {
            return None;
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
            .ok()?;
        String::from_utf8(pt).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let b = SecretBox::load_or_create(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sealed = b.seal("whsec_abc", "ch:1");
        assert!(!sealed.contains("whsec_abc"));
        assert_eq!(b.open(&sealed, "ch:1").as_deref(), Some("whsec_abc"));
        assert!(b.open(&sealed, "ch:2").is_none(), "bound to its context");
        let again = SecretBox::load_or_create(dir.path()).unwrap();
        assert_eq!(again.open(&sealed, "ch:1").as_deref(), Some("whsec_abc"));
        assert!(SecretBox::from_key([7; 32]).open(&sealed, "ch:1").is_none());
        assert_eq!(format!("{b:?}"), "SecretBox([key redacted])");
    }
}
