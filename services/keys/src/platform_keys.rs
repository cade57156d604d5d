//! Anshin's own keys (not a tenant's): blind-index keys ([`crate::index`]) and the signing keys
//! of audit checkpoints and access tokens. Each is created once, kept sealed under the
//! platform's KEK in `key_index_keys` (one row per name; a KEK rotation re-wraps its data key
//! like any other) and unsealed only in memory, so every replica uses the same key and none is
//! ever a readable file.

use crate::entity::index_key;
use crate::envelope::Plaintext;
use crate::error::KeyError;
use crate::service::{KeyService, PLATFORM_TENANT};
use anshin_platform::db::{begin_platform_tx, begin_platform_write_tx};
use chrono::Utc;
use sea_orm::sea_query::OnConflict;
use sea_orm::{EntityTrait, Set};
use zeroize::Zeroizing;

/// The purpose under which signing keys and other platform secrets are sealed.
const PLATFORM_SECRET_PURPOSE: &str = "keys.platform-secret";

/// The row of the platform secret `name`: prefixed, so no blind-index purpose can take it.
fn secret_row(name: &str) -> Result<String, KeyError> {
    crate::envelope::validate_purpose(name)?;
    Ok(format!("secret:{name}"))
}

impl KeyService {
    /// The platform secret called `name` (a purpose-like name, e.g. `audit.checkpoint-signing`),
    /// created by `create` on first use. Concurrent first uses on several replicas agree on one value: the
    /// first stored wins, and every caller gets the stored one (`create` may therefore run
    /// without its result being kept). Fails with [`KeyError::Unavailable`] while the key
    /// provider cannot unseal it.
    pub async fn platform_secret<F>(&self, name: &str, create: F) -> Result<Plaintext, KeyError>
    where
        F: FnOnce() -> Result<Zeroizing<Vec<u8>>, KeyError>,
    {
        self.load_or_store(PLATFORM_SECRET_PURPOSE, &secret_row(name)?, create)
            .await
    }

    /// Whether the platform secret `name` has been stored (by any replica).
    pub async fn has_platform_secret(&self, name: &str) -> Result<bool, KeyError> {
        Ok(self
            .stored_platform_key(&secret_row(name)?)
            .await?
            .is_some())
    }

    /// The value stored under `name`, sealed with `seal_purpose` and bound to `name`; created
    /// by `create` if none is stored yet.
    pub(crate) async fn load_or_store<F>(
        &self,
        seal_purpose: &str,
        name: &str,
        create: F,
    ) -> Result<Plaintext, KeyError>
    where
        F: FnOnce() -> Result<Zeroizing<Vec<u8>>, KeyError>,
    {
        crate::envelope::Binding {
            tenant: PLATFORM_TENANT,
            purpose: seal_purpose,
            record: name,
        }
        .validate()?;
        if let Some(stored) = self.stored_platform_key(name).await? {
            return self
                .open(PLATFORM_TENANT, seal_purpose, name, &stored.sealed)
                .await;
        }
        let fresh = create()?;
        // Sealed before the write transaction: sealing may store a data key in its own
        // transaction, and SQLite allows one writer.
        let sealed = self
            .seal(PLATFORM_TENANT, seal_purpose, name, fresh.as_slice())
            .await?;
        drop(fresh);
        let tx = begin_platform_write_tx(self.db()).await?;
        index_key::Entity::insert(index_key::ActiveModel {
            purpose: Set(name.to_string()),
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
        // Another replica may have stored its value first: use whichever is stored.
        let stored = self
            .stored_platform_key(name)
            .await?
            .ok_or_else(|| KeyError::Invalid(format!("the platform key {name} was not stored")))?;
        self.open(PLATFORM_TENANT, seal_purpose, name, &stored.sealed)
            .await
    }

    async fn stored_platform_key(&self, name: &str) -> Result<Option<index_key::Model>, KeyError> {
        let tx = begin_platform_tx(self.db()).await?;
        let m = index_key::Entity::find_by_id(name.to_string())
            .one(&tx)
            .await?;
        tx.commit().await?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::testutil::TestKeys;
    use sea_orm::EntityTrait;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn bytes(b: u8) -> impl FnOnce() -> Result<Zeroizing<Vec<u8>>, KeyError> {
        move || Ok(Zeroizing::new(vec![b; 48]))
    }

    #[tokio::test]
    async fn created_once_sealed_and_agreed_between_replicas() {
        let env = TestKeys::sqlite().await;
        let (a, b) = (env.service(), env.service());
        assert!(!a.has_platform_secret("test.signing").await.unwrap());
        // Two replicas starting at once: each proposes its own value, both end up with one.
        let (x, y) = tokio::join!(
            a.platform_secret("test.signing", bytes(1)),
            b.platform_secret("test.signing", bytes(2))
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(x.as_slice(), y.as_slice());
        assert!(x.as_slice() == [1; 48] || x.as_slice() == [2; 48]);
        assert!(b.has_platform_secret("test.signing").await.unwrap());

        // Stored sealed, never readable; a restarted process reads it back without creating.
        let row = index_key::Entity::find_by_id("secret:test.signing".to_string())
            .one(&env.db)
            .await
            .unwrap()
            .unwrap();
        assert!(!row.sealed.windows(8).any(|w| w == [1; 8] || w == [2; 8]));
        let created = AtomicUsize::new(0);
        let again = env
            .service()
            .platform_secret("test.signing", || {
                created.fetch_add(1, Ordering::SeqCst);
                Ok(Zeroizing::new(vec![3; 48]))
            })
            .await
            .unwrap();
        assert_eq!(again.as_slice(), x.as_slice());
        assert_eq!(created.load(Ordering::SeqCst), 0, "not created again");

        // Names are separate; a failing creation stores nothing; bad names are refused.
        let other = a.platform_secret("test.other", bytes(4)).await.unwrap();
        assert_eq!(other.as_slice(), [4; 48]);
        assert!(matches!(
            a.platform_secret("test.failing", || Err(KeyError::Invalid("no".into())))
                .await,
            Err(KeyError::Invalid(_))
        ));
        assert!(!a.has_platform_secret("test.failing").await.unwrap());
        assert!(matches!(
            a.platform_secret("Not A Name", bytes(5)).await,
            Err(KeyError::Invalid(_))
        ));
        // A blind-index purpose of the same name has its own key.
        a.blind_index("test.signing", "x").await.unwrap();
        let again = a.platform_secret("test.signing", bytes(6)).await.unwrap();
        assert_eq!(again.as_slice(), x.as_slice());
        assert!(a
            .open(
                PLATFORM_TENANT,
                "keys.index-key",
                "secret:test.signing",
                &row.sealed
            )
            .await
            .is_err());
    }
}
