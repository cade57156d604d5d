//! Signed checkpoints: a statement "the log of tenant T had `tree_size` entries with Merkle root
//! R at time t (by this clock)", signed by the audit key. The canonical body is signed as bytes
//! and exported verbatim beside its signature.

use crate::canonical;
use crate::event::ClockStamp;
use crate::merkle::Hash;
use crate::AuditError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const CHECKPOINT_TYPE: &str = "anshin.audit.checkpoint.v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointBody {
    #[serde(rename = "type")]
    pub kind: String,
    pub log: Uuid,
    pub tree_size: u64,
    /// Hex MTH of the first `tree_size` entries.
    pub root_hash: String,
    pub time: DateTime<Utc>,
    pub clock: ClockStamp,
    /// Which key signed (see [`Signer::key_id`]).
    pub key_id: String,
}

impl CheckpointBody {
    pub fn new(log: Uuid, tree_size: u64, root: &Hash, clock: ClockStamp, key_id: &str) -> Self {
        use chrono::SubsecRound;
        Self {
            kind: CHECKPOINT_TYPE.into(),
            log,
            tree_size,
            root_hash: hex::encode(root),
            time: Utc::now().trunc_subsecs(6),
            clock,
            key_id: key_id.to_string(),
        }
    }

    pub fn encode(&self) -> Result<String, serde_json::Error> {
        canonical::to_string(self)
    }
}

/// The public half of a checkpoint-signing key, as published for verifiers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PublicKeyInfo {
    /// `ed25519` (raw 32-byte key) or `ecdsa-p256-sha256` (SPKI DER).
    pub algorithm: String,
    pub key_id: String,
    /// Base64 (standard, padded).
    pub public_key: String,
}

/// Signs checkpoint bodies. [`LocalSigner`] holds an Ed25519 key in memory (the server keeps its
/// seed sealed by the key service).
#[async_trait::async_trait]
pub trait Signer: Send + Sync {
    fn public_key(&self) -> PublicKeyInfo;
    fn key_id(&self) -> String {
        self.public_key().key_id
    }
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, AuditError>;
}

/// An Ed25519 key from its 32-byte seed (the server keeps the seed sealed by the key service).
pub struct LocalSigner {
    key: ed25519_dalek::SigningKey,
    info: PublicKeyInfo,
}

impl LocalSigner {
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        use base64::Engine;
        let key = ed25519_dalek::SigningKey::from_bytes(seed);
        let public = key.verifying_key().to_bytes();
        let info = PublicKeyInfo {
            algorithm: "ed25519".into(),
            key_id: key_id_of(&public),
            public_key: base64::engine::general_purpose::STANDARD.encode(public),
        };
        Self { key, info }
    }
}

/// `ed25519:` + the first 16 hex digits of SHA-256 of the raw public key.
pub fn key_id_of(public: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("ed25519:{}", &hex::encode(Sha256::digest(public))[..16])
}

#[async_trait::async_trait]
impl Signer for LocalSigner {
    fn public_key(&self) -> PublicKeyInfo {
        self.info.clone()
    }
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, AuditError> {
        use ed25519_dalek::Signer as _;
        Ok(self.key.sign(message).to_bytes().to_vec())
    }
}

/// Verifies a checkpoint signature with a published key.
pub fn verify_signature(
    key: &PublicKeyInfo,
    message: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    use base64::Engine;
    match key.algorithm.as_str() {
        "ed25519" => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(&key.public_key)
                .map_err(|_| "the public key is not valid base64".to_string())?;
            let raw: [u8; 32] = raw
                .try_into()
                .map_err(|_| "an Ed25519 public key has 32 bytes".to_string())?;
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&raw)
                .map_err(|_| "the public key is not a valid Ed25519 point".to_string())?;
            let sig = ed25519_dalek::Signature::from_slice(signature)
                .map_err(|_| "the signature is not 64 bytes".to_string())?;
            vk.verify_strict(message, &sig)
                .map_err(|_| "the signature does not verify".to_string())
        }
        other => Err(format!("unsupported signature algorithm '{other}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_seed_gives_a_stable_key_that_signs() {
        let a = LocalSigner::from_seed(&[7; 32]);
        let b = LocalSigner::from_seed(&[7; 32]);
        assert_eq!(a.public_key(), b.public_key());
        assert_ne!(
            a.public_key(),
            LocalSigner::from_seed(&[8; 32]).public_key()
        );
        let sig = a.sign(b"body").await.unwrap();
        assert!(verify_signature(&b.public_key(), b"body", &sig).is_ok());
        assert!(verify_signature(&b.public_key(), b"bodY", &sig).is_err());
    }
}
