//! Where key-encryption keys live. Two real implementations with the same semantics: AWS KMS
//! ([`aws::AwsKmsProvider`]) and the local provider for the embedded default
//! ([`local::LocalProvider`]). Key material never leaves the provider except as the plaintext
//! half of a freshly generated data key.

pub mod aws;
pub mod local;

use crate::error::KeyError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// Name/value pairs bound to a wrapped key as authenticated data (KMS "encryption context").
/// Unwrapping with a different context fails.
pub type EncryptionContext = BTreeMap<String, String>;

/// A key's lifecycle state, as KMS reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
    /// The material is gone (local provider after deletion; KMS after the waiting period).
    Destroyed,
    /// Any other provider state (Creating, PendingImport, Unavailable, …): not usable.
    Other,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Enabled => "enabled",
            KeyState::Disabled => "disabled",
            KeyState::PendingDeletion => "pending_deletion",
            KeyState::Destroyed => "destroyed",
            KeyState::Other => "other",
        }
    }
}

/// Where the key material came from. Only `Provider` keys can be certified as destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyOrigin {
    /// Generated inside the provider (KMS origin `AWS_KMS`, or the local provider).
    Provider,
    /// Imported material (KMS origin `EXTERNAL`): copies may exist outside the provider.
    Imported,
    /// CloudHSM or external key stores.
    Other,
}

/// What the provider says about a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMeta {
    /// The provider's identifier: a KMS key ARN, or `local:<uuid>`.
    pub key_id: String,
    pub state: KeyState,
    pub origin: KeyOrigin,
    pub multi_region: bool,
    /// Automatic yearly rotation (KMS) or its local equivalent. `None` when the caller may not
    /// read it (a BYOK key whose policy does not grant `GetKeyRotationStatus`).
    pub rotation_enabled: Option<bool>,
    pub deletion_date: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    /// Whether the key is symmetric (`SYMMETRIC_DEFAULT`): only those can wrap data keys.
    pub symmetric: bool,
}

/// A new key-encryption key.
#[derive(Debug, Clone)]
pub struct CreateKey {
    /// Without the `alias/` prefix, e.g. `anshin/tenant/<uuid>`.
    pub alias: String,
    pub description: String,
    pub tags: Vec<(String, String)>,
}

/// A data key fresh from the provider: the plaintext (wiped on drop) and the same key wrapped
/// under the KEK.
pub struct GeneratedKey {
    pub plaintext: Zeroizing<[u8; 32]>,
    pub wrapped: Vec<u8>,
    /// The full identifier of the KEK that wrapped it (a KMS ARN even if the request used an alias).
    pub key_id: String,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("plaintext", &"[redacted]")
            .field("wrapped_len", &self.wrapped.len())
            .field("key_id", &self.key_id)
            .finish()
    }
}

/// Evidence that a provider accepted a state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Receipt {
    pub key_id: String,
    pub state: KeyState,
    /// The provider's request id (AWS `x-amzn-RequestId`), when it has one.
    pub request_id: Option<String>,
    pub deletion_date: Option<DateTime<Utc>>,
}

/// The operations Anshin needs from a key store. Implementations map provider errors onto
/// [`KeyError`]: unreachable or throttled → `Unavailable`; disabled or pending deletion →
/// `KeyUnusable`; access denied → `AccessDenied`; a failed authenticated decryption →
/// `InvalidCiphertext`.
#[async_trait::async_trait]
pub trait KeyProvider: Send + Sync + 'static {
    /// `aws-kms` or `local`.
    fn name(&self) -> &'static str;

    /// Creates a symmetric KEK with the alias and tags, and turns on automatic rotation.
    async fn create_key(&self, req: &CreateKey) -> Result<KeyMeta, KeyError>;

    async fn describe(&self, key_id: &str) -> Result<KeyMeta, KeyError>;

    /// A new AES-256 data key, wrapped under `key_id` with `context` bound.
    async fn generate_data_key(
        &self,
        key_id: &str,
        context: &EncryptionContext,
    ) -> Result<GeneratedKey, KeyError>;

    /// Wraps existing key material (used to re-wrap data keys under a new KEK).
    async fn wrap(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>, KeyError>;

    /// Unwraps a data key. The provider must refuse a wrong context and must be told which key
    /// to use, so a blob wrapped under another tenant's key never decrypts here.
    async fn unwrap(
        &self,
        key_id: &str,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<Zeroizing<Vec<u8>>, KeyError>;

    /// Rotates the key material now (KMS `RotateKeyOnDemand`); old material keeps decrypting.
    async fn rotate_material(&self, key_id: &str) -> Result<Receipt, KeyError>;

    async fn enable(&self, key_id: &str) -> Result<Receipt, KeyError>;

    async fn disable(&self, key_id: &str) -> Result<Receipt, KeyError>;

    /// Schedules deletion after `pending_days` (KMS: 7–30). The local provider destroys the
    /// material at once and reports `Destroyed`.
    async fn schedule_deletion(&self, key_id: &str, pending_days: u32)
        -> Result<Receipt, KeyError>;

    /// A cheap call that proves the provider answers (for `/readyz`).
    async fn ping(&self) -> Result<(), KeyError>;
}

/// The canonical byte form of a context, used as associated data by the local provider and in
/// envelope headers: sorted `key=value` pairs, each length-prefixed, so no two contexts collide.
pub fn context_bytes(context: &EncryptionContext) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in context {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_bytes_do_not_collide() {
        let a: EncryptionContext = [("ab".to_string(), "c".to_string())].into();
        let b: EncryptionContext = [("a".to_string(), "bc".to_string())].into();
        assert_ne!(context_bytes(&a), context_bytes(&b));
        let empty = EncryptionContext::new();
        assert!(context_bytes(&empty).is_empty());
    }
}
