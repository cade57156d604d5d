//! Blind indexes: a keyed HMAC-SHA-256 of a value Anshin stores sealed (users' e-mail
//! addresses), so rows can still be found by equality and kept unique without the value being
//! readable in the database. One 256-bit key per purpose, created on first use, kept sealed
//! under the platform's KEK in `key_index_keys` (a KEK rotation re-wraps its data key like any
//! other) and held unsealed in memory only. Without the key, an index reveals nothing and
//! cannot be used to confirm a guessed address.

use crate::entity::index_key;
use crate::error::KeyError;
use crate::service::{KeyService, PLATFORM_TENANT};
use anshin_platform::db::{begin_platform_tx, begin_platform_write_tx};
use chrono::Utc;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sea_orm::sea_query::OnConflict;
use sea_orm::{EntityTrait, Set};
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
        crate::envelope::Binding {
            tenant: PLATFORM_TENANT,
            purpose,
            record: purpose,
        }
        .validate()?;
        if let Some(stored) = self.stored_index_key(purpose).await? {
            return self.unseal_index_key(purpose, &stored.sealed).await;
        }
        let mut fresh = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(fresh.as_mut_slice());
        // Sealed before the write transaction: sealing may store a data key in its own
        // transaction, and SQLite allows one writer.
        let sealed = self
            .seal(
                PLATFORM_TENANT,
                INDEX_KEY_PURPOSE,
                purpose,
                fresh.as_slice(),
            )
            .await?;
        let tx = begin_platform_write_tx(self.db()).await?;
        index_key::Entity::insert(index_key::ActiveModel {
            purpose: Set(purpose.to_string()),
            sealed: Set(sealed),
            created_at: Set(Utc::now()),
        })
        .on_conflict(
            OnConflict::column(index_key::Column::Purpose)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&tx)
        .await?;
        tx.commit().await?;
        // Another replica may have stored its key first: use whichever is stored.
        let stored = self.stored_index_key(purpose).await?.ok_or_else(|| {
            KeyError::Invalid(format!("the index key for {purpose} was not stored"))
        })?;
        self.unseal_index_key(purpose, &stored.sealed).await
    }

    async fn stored_index_key(&self, purpose: &str) -> Result<Option<index_key::Model>, KeyError> {
        let tx = begin_platform_tx(self.db()).await?;
        let m = index_key::Entity::find_by_id(purpose.to_string())
            .one(&tx)
            .await?;
        tx.commit().await?;
        Ok(m)
    }

    async fn unseal_index_key(
        &self,
        purpose: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        let pt = self
            .open(PLATFORM_TENANT, INDEX_KEY_PURPOSE, purpose, sealed)
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
    use crate::provider::local::LocalProvider;
    use crate::service::{KeySettings, TenantDirectory, TenantInfo};
    use anshin_platform::config::DatabaseConfig;
    use sea_orm_migration::{MigrationTrait, MigratorTrait};
    use uuid::Uuid;

    struct NoTenants;

    #[async_trait::async_trait]
    impl TenantDirectory for NoTenants {
        async fn tenant(&self, _id: Uuid) -> Option<TenantInfo> {
            None
        }
    }

    struct Migrator;

    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            let mut all = anshin_platform::migration::migrations();
            all.extend(anshin_audit::migrations());
            all.extend(crate::migrations());
            all
        }
    }

    #[tokio::test]
    async fn indexes_are_keyed_stable_across_restarts_and_agree_between_replicas() {
        let dir = tempfile::tempdir().unwrap();
        let url = anshin_platform::secret::Secret::new(format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("k.db").display()
        ));
        let db = anshin_platform::db::connect(&url, &DatabaseConfig::default())
            .await
            .unwrap();
        Migrator::up(&db, None).await.unwrap();
        let provider = Arc::new(LocalProvider::open(&dir.path().join("keys"), None).unwrap());
        let service = || {
            KeyService::new(
                db.clone(),
                provider.clone(),
                Arc::new(NoTenants),
                KeySettings::default(),
            )
        };
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
        let stored = index_key::Entity::find().all(&db).await.unwrap();
        assert_eq!(stored.len(), 2, "one key per purpose");
        assert!(matches!(
            c.blind_index("Not A Purpose", "x").await,
            Err(KeyError::Invalid(_))
        ));
    }
}
