//! Envelope encryption over a key provider and the data-key cache, without storage: the path the
//! data plane's records take (DEK embedded in each ciphertext) and the wrapped data keys handed to
//! machine clients. The key service adds tenants' KEK records and Anshin's stored DEKs on top.

use crate::cache::{CacheLimits, CacheStats, DataKeyCache, EmbeddedRef, EncryptionKey};
use crate::envelope::{self, Binding, DataKey, DekRef, DekView, Plaintext, SealError};
use crate::error::KeyError;
use crate::provider::{EncryptionContext, KeyProvider};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use uuid::Uuid;
use zeroize::Zeroizing;

/// A tenant's key-encryption key as the ring needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kek {
    pub tenant: Uuid,
    /// The key service's record of this KEK.
    pub id: Uuid,
    /// The provider's key id (KMS ARN or `local:<uuid>`).
    pub key_id: String,
}

/// The context a DEK is wrapped with at the provider. The record id is not part of it (one DEK
/// serves many records); the envelope's associated data binds the record.
pub fn dek_context(tenant: Uuid, purpose: &str) -> EncryptionContext {
    [
        ("anshin:purpose".to_string(), purpose.to_string()),
        ("anshin:tenant".to_string(), tenant.to_string()),
    ]
    .into()
}

const TOKEN_MAGIC: &[u8; 4] = b"ANSK";

/// A data key handed to a machine client: the plaintext (for its own encryption) and a token it
/// stores beside its records and sends back to unwrap.
pub struct IssuedDataKey {
    pub plaintext: Zeroizing<[u8; 32]>,
    pub token: Vec<u8>,
    pub key_id: String,
}

/// `"ANSK" | 0x01 | u16 len | KEK id | wrapped DEK` — the provider ciphertext with the KEK that
/// unwraps it.
pub fn encode_token(kek_id: &str, wrapped: &[u8]) -> Result<Vec<u8>, KeyError> {
    let kl =
        u16::try_from(kek_id.len()).map_err(|_| KeyError::Invalid("KEK id too long".into()))?;
    let mut out = TOKEN_MAGIC.to_vec();
    out.push(1);
    out.extend_from_slice(&kl.to_be_bytes());
    out.extend_from_slice(kek_id.as_bytes());
    out.extend_from_slice(wrapped);
    Ok(out)
}

pub fn decode_token(token: &[u8]) -> Result<(String, &[u8]), KeyError> {
    let bad = || KeyError::Invalid("not a wrapped data key issued by Anshin".into());
    if token.len() < 7 || &token[..4] != TOKEN_MAGIC || token[4] != 1 {
        return Err(bad());
    }
    let kl = u16::from_be_bytes([token[5], token[6]]) as usize;
    let rest = &token[7..];
    if rest.len() <= kl {
        return Err(bad());
    }
    let (kek, wrapped) = rest.split_at(kl);
    let kek = std::str::from_utf8(kek).map_err(|_| bad())?.to_string();
    Ok((kek, wrapped))
}

pub struct KeyRing {
    provider: Arc<dyn KeyProvider>,
    cache: DataKeyCache,
    provider_calls: AtomicU64,
    kms_calls: opentelemetry::metrics::Counter<u64>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("provider", &self.provider.name())
            .field("cache", &self.cache)
            .finish()
    }
}

impl KeyRing {
    pub fn new(provider: Arc<dyn KeyProvider>, limits: CacheLimits) -> Self {
        Self {
            provider,
            cache: DataKeyCache::new(limits),
            provider_calls: AtomicU64::new(0),
            kms_calls: opentelemetry::global::meter("anshin")
                .u64_counter("anshin.keys.provider.calls")
                .with_description("Calls to the key provider (KMS) for data keys")
                .build(),
        }
    }

    pub fn provider(&self) -> &Arc<dyn KeyProvider> {
        &self.provider
    }

    pub fn cache(&self) -> &DataKeyCache {
        &self.cache
    }

    /// Cache hits and misses, and the data-key calls made to the provider.
    pub fn stats(&self) -> (CacheStats, u64) {
        (
            self.cache.stats(),
            self.provider_calls.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn count_call(&self, op: &'static str) {
        self.provider_calls.fetch_add(1, Ordering::Relaxed);
        self.kms_calls
            .add(1, &[opentelemetry::KeyValue::new("operation", op)]);
    }

    /// Encrypts one record with the tenant's cached DEK for `purpose` (the DEK travels in the
    /// header, wrapped under `kek`).
    pub async fn encrypt(
        &self,
        kek: &Kek,
        purpose: &str,
        record: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        let binding = Binding {
            tenant: kek.tenant,
            purpose,
            record,
        };
        binding.validate()?;
        self.seal_cached(kek.tenant, purpose, &binding, plaintext, || async {
            self.count_call("generate_data_key");
            let g = self
                .provider
                .generate_data_key(&kek.key_id, &dek_context(kek.tenant, purpose))
                .await?;
            EncryptionKey::new(
                DataKey::new(&g.plaintext, self.cache.limits().max_messages),
                DekRef::Embedded {
                    kek_id: g.key_id,
                    wrapped: g.wrapped,
                },
                kek.id,
                kek.tenant,
                purpose,
            )
        })
        .await
    }

    /// Seals with the cached key of the (tenant, slot) pair, filling the cache with `fill` on a
    /// miss. The slot is the purpose for embedded DEKs; stored DEKs use `stored/<purpose>`, so the
    /// two kinds never share a key.
    pub(crate) async fn seal_cached<F, Fut>(
        &self,
        tenant: Uuid,
        purpose: &str,
        binding: &Binding<'_>,
        plaintext: &[u8],
        fill: F,
    ) -> Result<Vec<u8>, KeyError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<EncryptionKey, KeyError>>,
    {
        let bytes = plaintext.len() as u64;
        // A handful of tries: a key can run out between the lookup and the seal when many
        // requests share it.
        for _ in 0..4 {
            let entry = match self.cache.encryption_key(tenant, purpose, bytes) {
                Some(e) => e,
                None => {
                    let lock = self.cache.fill_lock(tenant, purpose);
                    let _guard = lock.lock().await;
                    match self.cache.recheck_encryption_key(tenant, purpose, bytes) {
                        Some(e) => e,
                        None => {
                            let e = Arc::new(fill().await?);
                            self.cache.put_encryption_key(tenant, purpose, e.clone());
                            e
                        }
                    }
                }
            };
            match entry.seal(binding, plaintext) {
                Ok(ct) => return Ok(ct),
                Err(SealError::Exhausted) => {
                    self.cache.evict_encryption(tenant, purpose, &entry);
                }
                Err(SealError::Key(e)) => return Err(e),
            }
        }
        Err(KeyError::Unavailable(
            "data keys are being exhausted faster than they can be replaced".into(),
        ))
    }

    /// Decrypts a record whose DEK is embedded. `owns` must say whether a provider key id is one
    /// of this tenant's KEKs: a ciphertext naming another tenant's key is refused before any
    /// provider call.
    pub async fn decrypt(
        &self,
        tenant: Uuid,
        owns: &(dyn Fn(&str) -> bool + Sync),
        purpose: &str,
        record: &str,
        ciphertext: &[u8],
    ) -> Result<Plaintext, KeyError> {
        let binding = Binding {
            tenant,
            purpose,
            record,
        };
        binding.validate()?;
        let parsed = envelope::parse(ciphertext)?;
        let (kek_id, wrapped) = match parsed.dek {
            DekView::Embedded { kek_id, wrapped } => (kek_id, wrapped),
            DekView::Stored(_) => return Err(KeyError::Invalid(
                "this ciphertext refers to a key Anshin stores; decrypt it through the key service"
                    .into(),
            )),
        };
        let (key, bound) = self
            .unwrap_cached(tenant, owns, purpose, kek_id, wrapped)
            .await?;
        if parsed.version == envelope::VERSION {
            key.open_bound(&parsed, &bound, record)
        } else {
            key.open(&parsed, &binding)
        }
    }

    /// A DEK for an embedded wrapped key, from the cache or the provider, with the envelope
    /// [`envelope::Bound`] of its header, tenant and purpose.
    pub async fn unwrap_cached(
        &self,
        tenant: Uuid,
        owns: &(dyn Fn(&str) -> bool + Sync),
        purpose: &str,
        kek_id: &str,
        wrapped: &[u8],
    ) -> Result<(Arc<DataKey>, envelope::Bound), KeyError> {
        if !owns(kek_id) {
            return Err(KeyError::InvalidCiphertext);
        }
        let r = EmbeddedRef {
            tenant,
            purpose,
            kek_id,
            wrapped,
        };
        if let Some(k) = self.cache.embedded_key(&r) {
            return Ok(k);
        }
        self.count_call("decrypt");
        let raw = self
            .provider
            .unwrap(kek_id, wrapped, &dek_context(tenant, purpose))
            .await?;
        // Decryption-only: the message limit is irrelevant.
        let key = Arc::new(DataKey::from_slice(&raw, 0)?);
        let bound = self.cache.put_embedded_key(&r, key.clone())?;
        Ok((key, bound))
    }

    /// A fresh data key for a machine client (never cached: the client owns its use).
    pub async fn issue_data_key(
        &self,
        kek: &Kek,
        purpose: &str,
    ) -> Result<IssuedDataKey, KeyError> {
        envelope::validate_purpose(purpose)?;
        self.count_call("generate_data_key");
        let g = self
            .provider
            .generate_data_key(&kek.key_id, &dek_context(kek.tenant, purpose))
            .await?;
        Ok(IssuedDataKey {
            token: encode_token(&g.key_id, &g.wrapped)?,
            plaintext: g.plaintext,
            key_id: g.key_id,
        })
    }

    /// Unwraps a token from [`Self::issue_data_key`] for the same tenant and purpose.
    pub async fn unwrap_token(
        &self,
        tenant: Uuid,
        owns: &(dyn Fn(&str) -> bool + Sync),
        purpose: &str,
        token: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        envelope::validate_purpose(purpose)?;
        let (kek_id, wrapped) = decode_token(token)?;
        if !owns(&kek_id) {
            return Err(KeyError::InvalidCiphertext);
        }
        self.count_call("decrypt");
        self.provider
            .unwrap(&kek_id, wrapped, &dek_context(tenant, purpose))
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::provider::local::LocalProvider;
    use crate::provider::CreateKey;

    async fn ring(limits: CacheLimits) -> (tempfile::TempDir, KeyRing, Kek) {
        let dir = tempfile::tempdir().unwrap();
        let p = Arc::new(LocalProvider::open(dir.path(), None).unwrap());
        let meta = p
            .create_key(&CreateKey {
                alias: "t".into(),
                description: String::new(),
                tags: vec![],
            })
            .await
            .unwrap();
        let kek = Kek {
            tenant: Uuid::new_v4(),
            id: Uuid::new_v4(),
            key_id: meta.key_id,
        };
        (dir, KeyRing::new(p, limits), kek)
    }

    #[tokio::test]
    async fn records_round_trip_with_few_provider_calls() {
        let (_d, ring, kek) = ring(CacheLimits::default()).await;
        let owns = |k: &str| k == kek.key_id;
        let mut cts = Vec::new();
        for i in 0..500 {
            let rec = format!("rec-{i}");
            cts.push((
                rec.clone(),
                ring.encrypt(&kek, "emr.record", &rec, b"hello")
                    .await
                    .unwrap(),
            ));
        }
        for (rec, ct) in &cts {
            let pt = ring
                .decrypt(kek.tenant, &owns, "emr.record", rec, ct)
                .await
                .unwrap();
            assert_eq!(pt.as_slice(), b"hello");
        }
        let (stats, calls) = ring.stats();
        assert_eq!(calls, 2, "one generate and one unwrap for 1,000 operations");
        assert_eq!(stats.misses, 2);
        assert_eq!(stats.hits, 998);
    }

    #[tokio::test]
    async fn message_limit_forces_a_new_key() {
        let (_d, ring, kek) = ring(CacheLimits {
            max_messages: 10,
            ..CacheLimits::default()
        })
        .await;
        for i in 0..25 {
            ring.encrypt(&kek, "emr.record", &i.to_string(), b"x")
                .await
                .unwrap();
        }
        assert_eq!(ring.stats().1, 3);
    }

    #[tokio::test]
    async fn foreign_keys_and_tenants_are_refused() {
        let (_d, ring, kek) = ring(CacheLimits::default()).await;
        let ct = ring.encrypt(&kek, "emr.record", "r", b"x").await.unwrap();
        let nobody = |_: &str| false;
        assert!(matches!(
            ring.decrypt(kek.tenant, &nobody, "emr.record", "r", &ct)
                .await,
            Err(KeyError::InvalidCiphertext)
        ));
        let anyone = |_: &str| true;
        // Even if the KEK check were bypassed, the provider context names the tenant.
        assert!(matches!(
            ring.decrypt(Uuid::new_v4(), &anyone, "emr.record", "r", &ct)
                .await,
            Err(KeyError::InvalidCiphertext)
        ));
    }

    #[tokio::test]
    async fn issued_keys_unwrap_for_the_same_tenant_and_purpose_only() {
        let (_d, ring, kek) = ring(CacheLimits::default()).await;
        let owns = |k: &str| k == kek.key_id;
        let dk = ring.issue_data_key(&kek, "emr.record").await.unwrap();
        let back = ring
            .unwrap_token(kek.tenant, &owns, "emr.record", &dk.token)
            .await
            .unwrap();
        assert_eq!(back.as_slice(), dk.plaintext.as_ref());
        assert!(ring
            .unwrap_token(kek.tenant, &owns, "emr.other", &dk.token)
            .await
            .is_err());
        assert!(ring
            .unwrap_token(Uuid::new_v4(), &|_: &str| true, "emr.record", &dk.token)
            .await
            .is_err());
        assert!(matches!(
            ring.unwrap_token(kek.tenant, &owns, "emr.record", b"garbage")
                .await,
            Err(KeyError::Invalid(_))
        ));
    }
}
