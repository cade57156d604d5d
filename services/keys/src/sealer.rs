//! The key service as the platform's [`SecretSealer`]: what Anshin stores that is secret
//! (webhook secrets and URLs of audit alert channels, identity providers' client secrets) is
//! sealed with [`KeyService::seal_text`] under the owning tenant's KEK, with a data key kept
//! wrapped in `key_data_keys` — so KEK rotation re-wraps it and crypto-erase makes it unreadable.
//! Services that cannot depend on this crate (audit) take an `Arc<dyn SecretSealer>`.

use crate::error::KeyError;
use crate::service::{is_sealed_text, KeyService};
use anshin_platform::sealer::{SealerError, SecretSealer};
use anshin_platform::secret::Secret;
use std::sync::Arc;
use uuid::Uuid;

/// Seals and opens secrets with the key service.
#[derive(Clone, Debug)]
pub struct KeySealer(KeyService);

impl KeySealer {
    pub fn new(keys: KeyService) -> Self {
        Self(keys)
    }

    /// As a shared trait object, for services that take `Arc<dyn SecretSealer>`.
    pub fn shared(keys: KeyService) -> Arc<dyn SecretSealer> {
        Arc::new(Self(keys))
    }
}

impl KeyService {
    /// This key service as a [`SecretSealer`].
    pub fn sealer(&self) -> Arc<dyn SecretSealer> {
        KeySealer::shared(self.clone())
    }
}

/// How a key-service failure reads to a service that only seals and opens.
pub fn sealer_error(e: KeyError) -> SealerError {
    match e {
        KeyError::Unavailable(m) => SealerError::Unavailable(m),
        e @ (KeyError::KeyUnusable { .. }
        | KeyError::KeyDestroyed(_)
        | KeyError::AccessDenied(_)) => SealerError::KeyUnusable(e.to_string()),
        e @ KeyError::InvalidCiphertext => SealerError::Invalid(e.to_string()),
        KeyError::Db(d) => SealerError::Storage(d.to_string()),
        other => SealerError::Failed(other.to_string()),
    }
}

#[async_trait::async_trait]
impl SecretSealer for KeySealer {
    async fn seal(
        &self,
        tenant: Uuid,
        purpose: &str,
        context: &str,
        secret: &str,
    ) -> Result<String, SealerError> {
        self.0
            .seal_text(tenant, purpose, context, secret)
            .await
            .map_err(sealer_error)
    }

    async fn open(
        &self,
        tenant: Uuid,
        purpose: &str,
        context: &str,
        sealed: &str,
    ) -> Result<Secret, SealerError> {
        if !is_sealed_text(sealed) {
            return Err(SealerError::Invalid(
                "it is not a value sealed by the key service".into(),
            ));
        }
        let text = self
            .0
            .open_text(tenant, purpose, context, sealed)
            .await
            .map_err(sealer_error)?;
        Ok(Secret::new(text.as_str()))
    }

    fn is_sealed(&self, stored: &str) -> bool {
        is_sealed_text(stored)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::service::TEXT_PREFIX;
    use crate::testutil::TestKeys;

    #[test]
    fn the_platform_and_the_key_service_agree_on_the_prefix() {
        assert_eq!(TEXT_PREFIX, anshin_platform::sealer::SEALED_TEXT_PREFIX);
    }

    #[test]
    fn errors_keep_their_meaning() {
        assert!(matches!(
            sealer_error(KeyError::Unavailable("timeout".into())),
            SealerError::Unavailable(_)
        ));
        assert!(matches!(
            sealer_error(KeyError::KeyDestroyed("k".into())),
            SealerError::KeyUnusable(_)
        ));
        assert!(matches!(
            sealer_error(KeyError::KeyUnusable {
                key: "k".into(),
                state: "disabled".into()
            }),
            SealerError::KeyUnusable(_)
        ));
        assert!(matches!(
            sealer_error(KeyError::AccessDenied("k".into())),
            SealerError::KeyUnusable(_)
        ));
        assert!(matches!(
            sealer_error(KeyError::InvalidCiphertext),
            SealerError::Invalid(_)
        ));
        assert!(matches!(
            sealer_error(KeyError::Db(sea_orm::DbErr::Custom("locked".into()))),
            SealerError::Storage(_)
        ));
        assert!(matches!(
            sealer_error(KeyError::Invalid("purpose".into())),
            SealerError::Failed(_)
        ));
    }

    #[tokio::test]
    async fn seals_opens_binds_and_is_erased_with_the_tenant() {
        let env = TestKeys::sqlite().await;
        let keys = env.service();
        let sealer = keys.sealer();
        let (t, other) = (Uuid::now_v7(), Uuid::now_v7());

        let sealed = sealer
            .seal(t, "test.webhook-secret", "ch:1", "whsec_abc")
            .await
            .unwrap();
        assert!(sealer.is_sealed(&sealed) && sealed.starts_with(TEXT_PREFIX));
        assert!(!sealed.contains("whsec_abc"));
        assert_eq!(
            sealer
                .open(t, "test.webhook-secret", "ch:1", &sealed)
                .await
                .unwrap()
                .expose(),
            "whsec_abc"
        );
        for (tenant, purpose, ctx) in [
            (t, "test.webhook-secret", "ch:2"),
            (t, "test.webhook-url", "ch:1"),
            (other, "test.webhook-secret", "ch:1"),
        ] {
            assert!(
                sealer.open(tenant, purpose, ctx, &sealed).await.is_err(),
                "bound to tenant, purpose and context: {tenant} {purpose} {ctx}"
            );
        }
        assert!(matches!(
            sealer
                .open(t, "test.webhook-secret", "ch:1", "c2VjcmV0")
                .await,
            Err(SealerError::Invalid(_))
        ));
        assert!(matches!(
            sealer.seal(t, "Not A Purpose", "ch:1", "x").await,
            Err(SealerError::Failed(_))
        ));

        keys.crypto_erase(anshin_audit::Actor::system("test"), t, None)
            .await
            .unwrap();
        assert!(matches!(
            sealer.open(t, "test.webhook-secret", "ch:1", &sealed).await,
            Err(SealerError::KeyUnusable(_))
        ));
        assert!(matches!(
            sealer.seal(t, "test.webhook-secret", "ch:3", "x").await,
            Err(SealerError::KeyUnusable(_))
        ));
    }
}
