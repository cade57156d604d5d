//! Blind indexes: a keyed HMAC-SHA-256 of a value Anshin stores sealed (users' e-mail
//! addresses), so rows can still be found by equality and kept unique without the value being
//! readable in the database. One 256-bit key per purpose, created on first use, kept sealed
//! under the platform's KEK and held unsealed in memory only. Without the key, an index reveals nothing and
//! cannot be used to confirm a guessed address. Keys are stored as [`crate::platform_keys`]
//! describes.

use crate::error::KeyError;
use crate::service::KeyService;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

/// The purpose under which index keys themselves are sealed.
const INDEX_KEY_PURPOSE: &str = "keys.index-key";

type IndexKey = Arc<Zeroizing<[u8; 32]>>;

/// Unsealed index keys by purpose.
#[derive(Default)]
pub(crate) struct IndexKeys(Mutex<HashMap<String, IndexKey>>);

impl IndexKeys {
    fn get(&self, purpose: &str) -> Option<IndexKey> {
        self.0.lock().ok()?.get(purpose).cloned()
    }

    fn put(&self, purpose: &str, key: IndexKey) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(purpose.to_string(), key);
        }
    }
}

impl KeyService {
    /// The blind index of `value` for `purpose` (64 lowercase hex digits). Equal inputs give
    /// equal indexes; callers normalise first (e.g. lowercase an address). The first call for
    /// a purpose creates its key; concurrent first calls on several replicas agree on one key
    /// (the first stored wins).
    pub async fn blind_index(&self, purpose: &str, value: &str) -> Result<String, KeyError> {
        let key = match self.inner.index_keys.get(purpose) {
            Some(k) => k,
            None => {
                let k = Arc::new(self.load_index_key(purpose).await?);
                self.inner.index_keys.put(purpose, k.clone());
                k
            }
        };
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_slice())
            .map_err(|_| KeyError::Invalid("index key length".into()))?;
        mac.update(value.as_bytes());
        Ok(hex::encode(mac.finalize().into_bytes()))
    }

    async fn load_index_key(&self, purpose: &str) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        crate::envelope::validate_purpose(purpose)?;
        let pt = self
            .load_or_store(INDEX_KEY_PURPOSE, purpose, || {
                let mut fresh = Zeroizing::new(vec![0u8; 32]);
                rand::rngs::OsRng.fill_bytes(fresh.as_mut_slice());
                Ok(fresh)
            })
            .await?;
        let bytes: [u8; 32] = pt
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::InvalidCiphertext)?;
        Ok(Zeroizing::new(bytes))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::entity::index_key;
    use crate::testutil::TestKeys;
    use sea_orm::EntityTrait;

    #[tokio::test]
    async fn indexes_are_keyed_stable_across_restarts_and_agree_between_replicas() {
        let t = TestKeys::sqlite().await;
        let service = || t.service();
        let (a, b) = (service(), service());
        // Two replicas using a purpose for the first time at once agree on one key.
        let (ia, ib) = tokio::join!(
            a.blind_index("test.email", "a@example.jp"),
            b.blind_index("test.email", "a@example.jp")
        );
        let (ia, ib) = (ia.unwrap(), ib.unwrap());
        assert_eq!(ia, ib);
        assert_eq!(ia.len(), 64);
        assert!(ia.chars().all(|c| c.is_ascii_hexdigit()));
        // Keyed: not a plain digest of the value.
        use sha2::Digest;
        assert_ne!(ia, hex::encode(Sha256::digest(b"a@example.jp")));
        assert_ne!(
            ia,
            a.blind_index("test.email", "b@example.jp").await.unwrap()
        );
        assert_ne!(
            ia,
            a.blind_index("test.other", "a@example.jp").await.unwrap()
        );
        // A restarted process unseals the stored key and computes the same index.
        let c = service();
        assert_eq!(
            c.blind_index("test.email", "a@example.jp").await.unwrap(),
            ia
        );
        let stored = index_key::Entity::find().all(&t.db).await.unwrap();
        assert_eq!(stored.len(), 2, "one key per purpose");
        assert!(matches!(
            c.blind_index("Not A Purpose", "x").await,
            Err(KeyError::Invalid(_))
        ));
    }
}
