//! The key service: each tenant's KEK records, provisioning, and envelope encryption of what
//! Anshin itself stores (data keys kept wrapped in `key_data_keys`). The data plane's operations
//! are in [`crate::data`], key administration in [`crate::admin`], crypto-erase in
//! [`crate::erase`].

use crate::cache::{CacheLimits, DecryptionRef, EncryptionKey};
use crate::entity::{data_key, kek, key_tenant};
use crate::envelope::{self, Binding, DataKey, DekRef};
use crate::error::KeyError;
use crate::provider::{CreateKey, KeyProvider};
use crate::ring::{dek_context, Kek, KeyRing};
use anshin_audit::{Actor, AuditEvent, Outcome, Target};
use anshin_platform::db::{begin_platform_tx, begin_platform_write_tx, begin_tenant_tx};
use anshin_platform::stepup::StepUpVerifier;
use anshin_platform::TenantKind;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    EntityTrait, QueryFilter, QueryOrder, Set,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use uuid::Uuid;
use zeroize::Zeroizing;

/// The tenant of secrets that belong to no tenant (the platform's own): the nil UUID, as for the
/// platform's audit log.
pub const PLATFORM_TENANT: Uuid = Uuid::nil();

/// What the key service needs to know about a tenant it has not seen yet. The server answers
/// from the tenancy service, so keys never reads tenancy's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantInfo {
    pub id: Uuid,
    pub kind: TenantKind,
    /// The provider a tenant belongs to (its own id for a provider).
    pub provider_id: Uuid,
}

#[async_trait::async_trait]
pub trait TenantDirectory: Send + Sync + 'static {
    async fn tenant(&self, id: Uuid) -> Option<TenantInfo>;
}

#[derive(Debug, Clone)]
pub struct KeySettings {
    pub cache: CacheLimits,
    /// KMS waiting period before a crypto-erased key is deleted (7–30 days).
    pub deletion_window_days: u32,
    /// Regions BYOK keys may live in.
    pub allowed_regions: Vec<String>,
}

impl Default for KeySettings {
    fn default() -> Self {
        Self {
            cache: CacheLimits::default(),
            deletion_window_days: 30,
            allowed_regions: vec!["ap-northeast-1".into(), "ap-northeast-3".into()],
        }
    }
}

#[derive(Clone)]
pub struct KeyService {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) db: DatabaseConnection,
    pub(crate) ring: KeyRing,
    pub(crate) directory: Arc<dyn TenantDirectory>,
    pub(crate) settings: KeySettings,
    /// When each KEK's `last_used_at` was last written (at most once a minute per KEK).
    last_used: Mutex<HashMap<Uuid, Instant>>,
    /// Who tells whether a person confirmed recently (identity, wired by the server); unset,
    /// people are refused key administration (fail closed).
    pub(crate) step_up: OnceLock<Arc<dyn StepUpVerifier>>,
    /// Blind-index keys, unsealed on first use ([`crate::index`]).
    pub(crate) index_keys: crate::index::IndexKeys,
}

impl std::fmt::Debug for KeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyService")
            .field("ring", &self.inner.ring)
            .finish()
    }
}

pub(crate) const STATUS_ACTIVE: &str = "active";
pub(crate) const STATUS_RETIRED: &str = "retired";
pub(crate) const STATUS_ERASED: &str = "erased";
pub(crate) const ORIGIN_MANAGED: &str = "managed";
pub(crate) const ORIGIN_BYOK: &str = "byok";

impl KeyService {
    pub fn new(
        db: DatabaseConnection,
        provider: Arc<dyn KeyProvider>,
        directory: Arc<dyn TenantDirectory>,
        settings: KeySettings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                ring: KeyRing::new(provider, settings.cache),
                db,
                directory,
                settings,
                last_used: Mutex::new(HashMap::new()),
                step_up: OnceLock::new(),
                index_keys: Default::default(),
            }),
        }
    }

    /// Wires the step-up check that key administration asks of people (identity's sessions).
    /// Set once; a second call is ignored with a warning.
    pub fn with_step_up(self, verifier: Arc<dyn StepUpVerifier>) -> Self {
        if self.inner.step_up.set(verifier).is_err() {
            tracing::warn!("the key service's step-up verifier was already set");
        }
        self
    }

    pub fn ring(&self) -> &KeyRing {
        &self.inner.ring
    }

    pub fn provider_name(&self) -> &'static str {
        self.inner.ring.provider().name()
    }

    pub(crate) fn db(&self) -> &DatabaseConnection {
        &self.inner.db
    }

    /// Whether the key provider answers (for `/readyz`).
    pub async fn ready(&self) -> Result<(), KeyError> {
        match tokio::time::timeout(Duration::from_secs(3), self.inner.ring.provider().ping()).await
        {
            Ok(r) => r,
            Err(_) => Err(KeyError::Unavailable(
                "the key provider did not answer in 3 s".into(),
            )),
        }
    }

    /// A transaction that sees `tenant`'s rows (row-level security on PostgreSQL).
    pub(crate) async fn tenant_tx(&self, tenant: Uuid) -> Result<DatabaseTransaction, KeyError> {
        Ok(if tenant == PLATFORM_TENANT {
            begin_platform_tx(self.db()).await?
        } else {
            begin_tenant_tx(self.db(), tenant).await?
        })
    }

    // ---- Provisioning -------------------------------------------------------------------

    /// Records a tenant in the key service's map and gives it its own KEK if it has none.
    /// Idempotent; safe to run from several processes at once.
    pub async fn provision(&self, t: TenantInfo) -> Result<kek::Model, KeyError> {
        if let Some(k) = self.find_active(t.id).await? {
            return Ok(k);
        }
        let provider = self.inner.ring.provider();
        let meta = provider
            .create_key(&CreateKey {
                alias: format!("anshin/tenant/{}", t.id),
                description: format!("Anshin key-encryption key of {} {}", t.kind.as_str(), t.id),
                tags: vec![
                    ("anshin:tenant".into(), t.id.to_string()),
                    ("anshin:provider".into(), t.provider_id.to_string()),
                    ("anshin:kind".into(), t.kind.as_str().into()),
                ],
            })
            .await?;
        let row = kek::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(t.id),
            provider: Set(provider.name().into()),
            key_id: Set(meta.key_id.clone()),
            alias: Set(Some(format!("alias/anshin/tenant/{}", t.id))),
            origin: Set(ORIGIN_MANAGED.into()),
            status: Set(STATUS_ACTIVE.into()),
            key_state: Set(meta.state.as_str().into()),
            rotation_enabled: Set(meta.rotation_enabled),
            created_at: Set(Utc::now()),
            rotated_at: Set(None),
            retired_at: Set(None),
            last_used_at: Set(None),
            health: Set("ok".into()),
            health_checked_at: Set(Some(Utc::now())),
            health_detail: Set(None),
            erased_at: Set(None),
            deletion_date: Set(None),
        };
        let tx = begin_platform_write_tx(self.db()).await?;
        register_in(&tx, t).await?;
        let inserted = row.insert(&tx).await;
        match inserted {
            Ok(model) => {
                record(
                    &tx,
                    AuditEvent::new(
                        t.id,
                        Actor::system("keys.provision"),
                        "keys.kek.create",
                        Outcome::Success,
                    )
                    .target(Target::new("kek", model.id))
                    .detail("key_id", &model.key_id)
                    .detail("provider", &model.provider)
                    .detail("rotation_enabled", model.rotation_enabled),
                )
                .await?;
                tx.commit().await?;
                tracing::info!(tenant = %t.id, key = %model.key_id, "tenant KEK created");
                Ok(model)
            }
            Err(e) if anshin_platform::db::is_unique_violation(&e) => {
                // Another process won the race: keep its key, discard ours.
                drop(tx);
                if let Err(err) = provider
                    .schedule_deletion(&meta.key_id, self.inner.settings.deletion_window_days)
                    .await
                {
                    tracing::warn!(error = %err, key = %meta.key_id, "could not discard a duplicate KEK");
                }
                self.find_active(t.id).await?.ok_or_else(|| {
                    KeyError::Conflict("the tenant's KEK changed during provisioning".into())
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Gives every tenant in `tenants` a KEK (the migration job for tenants created before the
    /// key service, and the catch-up when the provider was down at creation). Returns how many
    /// were created; stops at the first provider outage.
    pub async fn backfill(&self, tenants: &[TenantInfo]) -> Result<usize, KeyError> {
        let mut created = 0;
        for t in tenants {
            if self.find_active(t.id).await?.is_none() {
                if self.has_erased(t.id).await? {
                    continue;
                }
                self.provision(*t).await?;
                created += 1;
            }
        }
        Ok(created)
    }

    pub(crate) async fn find_active(&self, tenant: Uuid) -> Result<Option<kek::Model>, KeyError> {
        let tx = begin_platform_tx(self.db()).await?;
        let k = kek::Entity::find()
            .filter(kek::Column::TenantId.eq(tenant))
            .filter(kek::Column::Status.eq(STATUS_ACTIVE))
            .one(&tx)
            .await?;
        tx.commit().await?;
        Ok(k)
    }

    async fn has_erased(&self, tenant: Uuid) -> Result<bool, KeyError> {
        let tx = begin_platform_tx(self.db()).await?;
        let k = kek::Entity::find()
            .filter(kek::Column::TenantId.eq(tenant))
            .filter(kek::Column::Status.eq(STATUS_ERASED))
            .one(&tx)
            .await?;
        tx.commit().await?;
        Ok(k.is_some())
    }

    /// The tenant's active KEK, provisioning one on first use. A crypto-erased tenant gets none:
    /// its keys are gone on purpose.
    pub(crate) async fn active_kek(&self, tenant: Uuid) -> Result<kek::Model, KeyError> {
        if let Some(k) = self.find_active(tenant).await? {
            return Ok(k);
        }
        if self.has_erased(tenant).await? {
            return Err(KeyError::KeyDestroyed(format!(
                "of tenant {tenant} (crypto-erased)"
            )));
        }
        let info = if tenant == PLATFORM_TENANT {
            TenantInfo {
                id: PLATFORM_TENANT,
                kind: TenantKind::Provider,
                provider_id: PLATFORM_TENANT,
            }
        } else {
            self.inner
                .directory
                .tenant(tenant)
                .await
                .ok_or_else(|| KeyError::NotFound(format!("no such tenant {tenant}")))?
        };
        self.provision(info).await
    }

    /// Every KEK of a tenant that can still unwrap (active and retired).
    pub(crate) async fn usable_keks(&self, tenant: Uuid) -> Result<Vec<kek::Model>, KeyError> {
        let tx = begin_platform_tx(self.db()).await?;
        let rows = kek::Entity::find()
            .filter(kek::Column::TenantId.eq(tenant))
            .filter(kek::Column::Status.ne(STATUS_ERASED))
            .order_by_desc(kek::Column::CreatedAt)
            .all(&tx)
            .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Whether `key_id` was one of the tenant's KEKs before a crypto-erase: its data is gone on
    /// purpose, which callers should hear as such rather than as a foreign key.
    pub(crate) async fn erased_key(&self, tenant: Uuid, key_id: &str) -> Result<bool, KeyError> {
        let tx = begin_platform_tx(self.db()).await?;
        let k = kek::Entity::find()
            .filter(kek::Column::TenantId.eq(tenant))
            .filter(kek::Column::KeyId.eq(key_id))
            .filter(kek::Column::Status.eq(STATUS_ERASED))
            .one(&tx)
            .await?;
        tx.commit().await?;
        Ok(k.is_some())
    }

    /// Notes that a KEK was used with the provider, at most once a minute per KEK.
    pub(crate) async fn touch(&self, kek_id: Uuid) {
        {
            let mut seen = self
                .inner
                .last_used
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if seen
                .get(&kek_id)
                .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
            {
                return;
            }
            seen.insert(kek_id, Instant::now());
        }
        let r = async {
            let tx = begin_platform_write_tx(self.db()).await?;
            kek::Entity::update_many()
                .col_expr(
                    kek::Column::LastUsedAt,
                    sea_orm::sea_query::Expr::value(Utc::now()),
                )
                .filter(kek::Column::Id.eq(kek_id))
                .exec(&tx)
                .await?;
            tx.commit().await?;
            Ok::<_, KeyError>(())
        }
        .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not record a KEK's last use");
        }
    }

    // ---- Anshin's own secrets (stored data keys) ------------------------------------------

    /// Encrypts something Anshin stores for `tenant` ([`PLATFORM_TENANT`] for the platform's
    /// own). The data key stays in `key_data_keys`, wrapped under the tenant's KEK, so a KEK
    /// rotation re-wraps it and crypto-erase destroys it.
    pub async fn seal(
        &self,
        tenant: Uuid,
        purpose: &str,
        record: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        let binding = Binding {
            tenant,
            purpose,
            record,
        };
        binding.validate()?;
        let ring = &self.inner.ring;
        let slot = format!("stored/{purpose}");
        ring.seal_cached(tenant, &slot, &binding, plaintext, || async {
            let k = self.active_kek(tenant).await?;
            ring.count_call("generate_data_key");
            let g = ring
                .provider()
                .generate_data_key(&k.key_id, &dek_context(tenant, purpose))
                .await?;
            let id = Uuid::now_v7();
            let tx = self.tenant_tx(tenant).await?;
            data_key::ActiveModel {
                id: Set(id),
                tenant_id: Set(tenant),
                kek_id: Set(k.id),
                purpose: Set(purpose.to_string()),
                wrapped: Set(g.wrapped),
                created_at: Set(Utc::now()),
                rewrapped_at: Set(None),
            }
            .insert(&tx)
            .await?;
            tx.commit().await?;
            self.touch(k.id).await;
            EncryptionKey::new(
                DataKey::new(&g.plaintext, ring.cache().limits().max_messages),
                DekRef::Stored(id),
                k.id,
                tenant,
                purpose,
            )
        })
        .await
    }

    /// Decrypts what [`Self::seal`] produced for the same tenant, purpose and record.
    pub async fn open(
        &self,
        tenant: Uuid,
        purpose: &str,
        record: &str,
        ciphertext: &[u8],
    ) -> Result<envelope::Plaintext, KeyError> {
        let binding = Binding {
            tenant,
            purpose,
            record,
        };
        binding.validate()?;
        let parsed = envelope::parse(ciphertext)?;
        let envelope::DekView::Stored(id) = parsed.dek else {
            let keks = self.usable_keks(tenant).await?;
            let owns = |k: &str| keks.iter().any(|m| m.key_id == k);
            return self
                .inner
                .ring
                .decrypt(tenant, &owns, purpose, record, ciphertext)
                .await;
        };
        let r = DecryptionRef::Stored(id);
        let key = match self.inner.ring.cache().decryption_key(&r, tenant) {
            Some(k) => k,
            None => {
                let key = Arc::new(self.unwrap_stored(tenant, purpose, id).await?);
                self.inner
                    .ring
                    .cache()
                    .put_decryption_key(r, tenant, key.clone());
                key
            }
        };
        key.open(&parsed, &binding)
    }

    async fn unwrap_stored(
        &self,
        tenant: Uuid,
        purpose: &str,
        id: Uuid,
    ) -> Result<DataKey, KeyError> {
        let tx = self.tenant_tx(tenant).await?;
        let dk = data_key::Entity::find_by_id(id)
            .filter(data_key::Column::TenantId.eq(tenant))
            .one(&tx)
            .await?;
        // A missing row is what crypto-erase leaves behind: the data is unreadable by design.
        let dk = dk.ok_or_else(|| KeyError::KeyDestroyed(format!("data key {id}")))?;
        if dk.purpose != purpose {
            return Err(KeyError::InvalidCiphertext);
        }
        let k = kek::Entity::find_by_id(dk.kek_id)
            .one(&tx)
            .await?
            .ok_or_else(|| KeyError::KeyDestroyed(format!("KEK {}", dk.kek_id)))?;
        tx.commit().await?;
        self.inner.ring.count_call("decrypt");
        let raw = self
            .inner
            .ring
            .provider()
            .unwrap(&k.key_id, &dk.wrapped, &dek_context(tenant, purpose))
            .await?;
        self.touch(k.id).await;
        DataKey::from_slice(&raw, 0)
    }

    /// [`Self::seal`] for text columns: `anshin-env1:<base64>`.
    pub async fn seal_text(
        &self,
        tenant: Uuid,
        purpose: &str,
        record: &str,
        plaintext: &str,
    ) -> Result<String, KeyError> {
        let ct = self
            .seal(tenant, purpose, record, plaintext.as_bytes())
            .await?;
        Ok(format!("{TEXT_PREFIX}{}", B64.encode(ct)))
    }

    pub async fn open_text(
        &self,
        tenant: Uuid,
        purpose: &str,
        record: &str,
        sealed: &str,
    ) -> Result<Zeroizing<String>, KeyError> {
        let b64 = sealed
            .strip_prefix(TEXT_PREFIX)
            .ok_or(KeyError::InvalidCiphertext)?;
        let ct = B64.decode(b64).map_err(|_| KeyError::InvalidCiphertext)?;
        let pt = self.open(tenant, purpose, record, &ct).await?;
        String::from_utf8(pt.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| KeyError::InvalidCiphertext)
    }
}

/// The prefix of sealed text values, so readers can tell them from older formats.
pub const TEXT_PREFIX: &str = "anshin-env1:";

pub fn is_sealed_text(s: &str) -> bool {
    s.starts_with(TEXT_PREFIX)
}

/// Adds the tenant to the key service's map if it is not there yet.
pub(crate) async fn register_in(c: &impl ConnectionTrait, t: TenantInfo) -> Result<(), KeyError> {
    let exists = key_tenant::Entity::find_by_id(t.id).one(c).await?.is_some();
    if !exists {
        key_tenant::ActiveModel {
            tenant_id: Set(t.id),
            provider_id: Set(t.provider_id),
            kind: Set(t.kind.as_str().into()),
        }
        .insert(c)
        .await?;
    }
    Ok(())
}

pub(crate) async fn record(c: &impl ConnectionTrait, e: AuditEvent) -> Result<(), KeyError> {
    anshin_audit::record(c, &e).await.map_err(|err| match err {
        anshin_audit::AuditError::Db(d) => KeyError::Db(d),
        other => KeyError::Provider(format!("audit trail: {other}")),
    })
}

/// Records an event with no change beside it (a data-plane key operation), in its own
/// transaction. The operation has already happened, so a failure to record is logged loudly
/// rather than undoing it.
pub(crate) async fn record_now(db: &DatabaseConnection, e: AuditEvent) {
    let r = async {
        let tx = if e.tenant_id == PLATFORM_TENANT {
            begin_platform_tx(db).await?
        } else {
            begin_tenant_tx(db, e.tenant_id).await?
        };
        record(&tx, e.clone()).await?;
        tx.commit().await?;
        Ok::<_, KeyError>(())
    }
    .await;
    if let Err(err) = r {
        tracing::error!(error = %err, action = %e.action, "could not record a key audit event");
    }
}

impl Kek {
    pub(crate) fn of(m: &kek::Model) -> Self {
        Kek {
            tenant: m.tenant_id,
            id: m.id,
            key_id: m.key_id.clone(),
        }
    }
}
