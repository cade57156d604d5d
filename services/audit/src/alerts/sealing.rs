//! How notification channels' webhook secrets and URLs are sealed at rest: under the tenant's
//! key through the key service (a [`SecretSealer`]) when the server provides one, otherwise with
//! the interim secret box (`data_dir/audit-secrets.key`). Reading accepts both, so channels
//! created before the key service keep working until the re-encryption pass
//! ([`super::AlertService::reseal_legacy`]) moves them.

use super::secretbox::SecretBox;
use anshin_platform::sealer::{is_sealed_text, SealerError, SecretSealer};
use anshin_platform::secret::Secret;
use std::sync::Arc;
use uuid::Uuid;

/// Key-service purpose of webhook signing secrets.
pub const WEBHOOK_SECRET_PURPOSE: &str = "audit.webhook-secret";
/// Key-service purpose of full webhook URLs (they may carry a token of their own).
pub const WEBHOOK_URL_PURPOSE: &str = "audit.webhook-url";

/// Key-service purpose of mail channels' recipient lists (contact data).
pub const RECIPIENTS_PURPOSE: &str = "audit.alert-recipients";

/// The associated data a recipient list is sealed with.
pub(crate) fn recipients_context(tenant: Uuid, channel: Uuid) -> String {
    format!("audit-recipients:{tenant}:{channel}")
}

/// An address as kept where it is only needed to tell recipients apart (delivery records, the
/// audit trail): the first character of the local part and the domain, `i…@clinic.example.jp`.
pub fn mask_address(addr: &str) -> String {
    match addr.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}…@{domain}")
        }
        None => "…".into(),
    }
}

/// The associated data a webhook secret is sealed with: it only opens for its own channel.
pub(crate) fn secret_context(tenant: Uuid, channel: Uuid) -> String {
    format!("audit-webhook:{tenant}:{channel}")
}

/// The associated data a webhook URL is sealed with.
pub(crate) fn url_context(tenant: Uuid, channel: Uuid) -> String {
    format!("audit-webhook-url:{tenant}:{channel}")
}

/// The two ways a channel's secrets may be sealed.
#[derive(Clone)]
pub(crate) struct Sealing {
    legacy: SecretBox,
    sealer: Option<Arc<dyn SecretSealer>>,
}

impl Sealing {
    pub(crate) fn new(legacy: SecretBox) -> Self {
        Self {
            legacy,
            sealer: None,
        }
    }

    pub(crate) fn with_sealer(mut self, sealer: Arc<dyn SecretSealer>) -> Self {
        self.sealer = Some(sealer);
        self
    }

    pub(crate) fn sealer(&self) -> Option<&Arc<dyn SecretSealer>> {
        self.sealer.as_ref()
    }

    /// Whether `stored` was sealed by the key service.
    pub(crate) fn is_sealed(&self, stored: &str) -> bool {
        match &self.sealer {
            Some(s) => s.is_sealed(stored),
            None => is_sealed_text(stored),
        }
    }

    /// Seals with the key service when there is one, otherwise with the secret box. Call it
    /// before opening a write transaction: the key service stores a new data key in its own.
    pub(crate) async fn seal(
        &self,
        tenant: Uuid,
        purpose: &str,
        context: &str,
        value: &str,
    ) -> Result<String, SealerError> {
        match &self.sealer {
            Some(s) => s.seal(tenant, purpose, context, value).await,
            None => Ok(self.legacy.seal(value, context)),
        }
    }

    /// Opens a value sealed either way.
    pub(crate) async fn open(
        &self,
        tenant: Uuid,
        purpose: &str,
        context: &str,
        stored: &str,
    ) -> Result<Secret, SealerError> {
        if self.is_sealed(stored) {
            let s = self.sealer.as_ref().ok_or(SealerError::NotConfigured)?;
            return s.open(tenant, purpose, context, stored).await;
        }
        self.open_legacy(stored, context)
    }

    /// Fills a mail channel's `view.recipients` from its sealed list (rows from before sealing
    /// already have them readable).
    pub(crate) async fn reveal_recipients(
        &self,
        ch: &mut super::model::ChannelRow,
    ) -> Result<(), SealerError> {
        let Some(sealed) = ch.recipients_sealed.as_deref() else {
            return Ok(());
        };
        let (t, id) = (ch.view.tenant_id, ch.view.id);
        let json = self
            .open(t, RECIPIENTS_PURPOSE, &recipients_context(t, id), sealed)
            .await?;
        ch.view.recipients = serde_json::from_str(json.expose()).map_err(|_| {
            SealerError::Invalid("the sealed recipient list is not a list of addresses".into())
        })?;
        Ok(())
    }

    /// Opens a secret box value.
    pub(crate) fn open_legacy(&self, stored: &str, context: &str) -> Result<Secret, SealerError> {
        self.legacy.open(stored, context).map(Secret::new).map_err(|_| {
            SealerError::Invalid(
                "it was sealed with a different audit-secrets.key (was the data directory's key file replaced?) or altered"
                    .into(),
            )
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// A stand-in for the key service: values are kept in memory behind an opaque handle; it can
    /// be switched off (an outage) or told a tenant's key is gone (a crypto-erase).
    #[derive(Default)]
    pub(crate) struct FakeSealer {
        pub down: AtomicBool,
        pub erased: Mutex<Vec<Uuid>>,
        pub seals: AtomicUsize,
        store: Mutex<HashMap<String, (Uuid, String, String, String)>>,
    }

    impl FakeSealer {
        fn check(&self, tenant: Uuid) -> Result<(), SealerError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(SealerError::Unavailable("the test provider is down".into()));
            }
            if self.erased.lock().unwrap().contains(&tenant) {
                return Err(SealerError::KeyUnusable(format!(
                    "of tenant {tenant} (crypto-erased)"
                )));
            }
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl SecretSealer for FakeSealer {
        async fn seal(
            &self,
            tenant: Uuid,
            purpose: &str,
            context: &str,
            secret: &str,
        ) -> Result<String, SealerError> {
            self.check(tenant)?;
            self.seals.fetch_add(1, Ordering::SeqCst);
            let handle = format!("anshin-env1:{}", Uuid::new_v4().simple());
            self.store.lock().unwrap().insert(
                handle.clone(),
                (tenant, purpose.into(), context.into(), secret.into()),
            );
            Ok(handle)
        }

        async fn open(
            &self,
            tenant: Uuid,
            purpose: &str,
            context: &str,
            sealed: &str,
        ) -> Result<Secret, SealerError> {
            self.check(tenant)?;
            match self.store.lock().unwrap().get(sealed) {
                Some((t, p, c, s)) if *t == tenant && p == purpose && c == context => {
                    Ok(Secret::new(s.clone()))
                }
                _ => Err(SealerError::Invalid("not this binding".into())),
            }
        }
    }

    #[test]
    fn masked_addresses_keep_the_domain_and_one_character() {
        assert_eq!(mask_address("it@clinic.example.jp"), "i…@clinic.example.jp");
        assert_eq!(mask_address("情報@病院.jp"), "情…@病院.jp");
        assert_eq!(mask_address("a@b@c.jp"), "a…@c.jp");
        assert_eq!(mask_address("no-at-sign"), "…");
    }

    #[tokio::test]
    async fn seals_with_the_sealer_and_still_opens_legacy_values() {
        let legacy = SecretBox::from_key([9; 32]);
        let fake = Arc::new(FakeSealer::default());
        let (t, ch) = (Uuid::now_v7(), Uuid::now_v7());
        let ctx = secret_context(t, ch);
        let old = legacy.seal("whsec_old", &ctx);

        let without = Sealing::new(legacy.clone());
        let s = without
            .seal(t, WEBHOOK_SECRET_PURPOSE, &ctx, "whsec_a")
            .await
            .unwrap();
        assert!(!without.is_sealed(&s), "no key service: the secret box");
        let with = Sealing::new(legacy.clone()).with_sealer(fake.clone());
        let n = with
            .seal(t, WEBHOOK_SECRET_PURPOSE, &ctx, "whsec_b")
            .await
            .unwrap();
        assert!(with.is_sealed(&n) && without.is_sealed(&n));
        for (stored, want) in [(&old, "whsec_old"), (&s, "whsec_a"), (&n, "whsec_b")] {
            let got = with
                .open(t, WEBHOOK_SECRET_PURPOSE, &ctx, stored)
                .await
                .unwrap();
            assert_eq!(got.expose(), want);
        }
        assert_eq!(
            without
                .open(t, WEBHOOK_SECRET_PURPOSE, &ctx, &n)
                .await
                .unwrap_err(),
            SealerError::NotConfigured
        );
        assert!(matches!(
            with.open(t, WEBHOOK_SECRET_PURPOSE, &url_context(t, ch), &old)
                .await,
            Err(SealerError::Invalid(_))
        ));
        fake.down.store(true, Ordering::SeqCst);
        assert!(with
            .seal(t, WEBHOOK_SECRET_PURPOSE, &ctx, "x")
            .await
            .unwrap_err()
            .is_transient());
        assert!(with
            .open(t, WEBHOOK_SECRET_PURPOSE, &ctx, &n)
            .await
            .unwrap_err()
            .is_transient());
        assert_eq!(
            with.open(t, WEBHOOK_SECRET_PURPOSE, &ctx, &old)
                .await
                .unwrap()
                .expose(),
            "whsec_old",
            "legacy values do not need the key service"
        );
    }
}
