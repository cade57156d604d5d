//! Crypto-erase (guideline 7.3, 7 ⑨–⑪): the primitive the destruction workflow builds on. It
//! disables every KEK of a tenant, schedules its deletion (the local provider destroys the
//! material at once), deletes the wrapped data keys Anshin holds, and returns evidence of each
//! step. Once the KEKs are gone, every copy of the tenant's data — backups included — is
//! unreadable, because every data key was only ever stored wrapped under them.

use crate::admin::{check_certifiable, AdminError};
use crate::entity::{data_key, kek};
use crate::error::KeyError;
use crate::provider::{KeyState, Receipt};
use crate::service::{record, KeyService, ORIGIN_BYOK, STATUS_ERASED};
use anshin_audit::{Actor, AuditEvent, Outcome, Target};
use anshin_platform::db::{begin_platform_tx, begin_platform_write_tx};
use anshin_platform::{Principal, Role};
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// What happened to one KEK.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErasedKey {
    pub kek_id: Uuid,
    pub provider: String,
    /// KMS key ARN or `local:<uuid>`.
    pub key_id: String,
    pub state_before: KeyState,
    /// The provider's state after the request: `pending_deletion` (KMS) or `destroyed` (local).
    pub state_after: KeyState,
    /// When the material is (or was) deleted.
    pub deletion_date: Option<DateTime<Utc>>,
    pub disable_request_id: Option<String>,
    pub deletion_request_id: Option<String>,
}

/// Structured evidence for the destruction certificate.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErasureEvidence {
    pub tenant_id: Uuid,
    pub keys: Vec<ErasedKey>,
    /// Wrapped data keys deleted from Anshin's database.
    pub data_keys_deleted: u64,
    pub requested_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    /// Who asked (an audit actor label, e.g. `user:<uuid>` or `operator`).
    pub principal: String,
    /// The audit event that records the erasure.
    pub audit_event_id: Uuid,
}

/// Who may crypto-erase a tenant's keys through [`KeyService::crypto_erase_for`]: the
/// provider's admins (the provider holds the keys of its institutions). The destruction
/// workflow adds its own approvals on top.
pub const ERASERS: [Role; 1] = [Role::ProviderAdmin];

impl KeyService {
    /// Crypto-erase on behalf of a principal: scope first (another provider's tenant is "not
    /// found"), then the role ([`ERASERS`], never under a maintenance grant), then — for a
    /// person — a passkey step-up within the last few minutes. API tokens are not people and
    /// are not asked. Nothing changes when any check fails.
    pub async fn crypto_erase_for(
        &self,
        p: &Principal,
        tenant: Option<Uuid>,
        pending_days: Option<u32>,
    ) -> Result<ErasureEvidence, AdminError> {
        let t = self
            .authorize_admin(p, tenant, &ERASERS, "crypto-erasing a tenant's keys")
            .await?;
        Ok(self
            .crypto_erase(Actor::from_principal(p), t.id, pending_days)
            .await?)
    }

    /// Crypto-erases a tenant. Refused (nothing changed) when a key cannot be certified:
    /// multi-Region or imported material, or a key the tenant itself holds (BYOK — the tenant
    /// must schedule its deletion in its own account). Safe to run again after a partial
    /// failure: keys already disabled or pending deletion are recorded as they are.
    pub async fn crypto_erase(
        &self,
        actor: Actor,
        tenant: Uuid,
        pending_days: Option<u32>,
    ) -> Result<ErasureEvidence, KeyError> {
        let requested_at = Utc::now();
        let days = pending_days.unwrap_or(self.inner.settings.deletion_window_days);
        if !(7..=30).contains(&days) {
            return Err(KeyError::Invalid(
                "the KMS deletion waiting period must be 7 to 30 days".into(),
            ));
        }
        let tx = begin_platform_tx(self.db()).await?;
        let keks = kek::Entity::find()
            .filter(kek::Column::TenantId.eq(tenant))
            .all(&tx)
            .await?;
        tx.commit().await?;
        if keks.is_empty() {
            return Err(KeyError::NotFound(format!(
                "tenant {tenant} has no keys to erase"
            )));
        }
        let provider = self.inner.ring.provider();
        if let Some(byok) = keks
            .iter()
            .find(|k| k.origin == ORIGIN_BYOK && k.status != STATUS_ERASED)
        {
            return Err(KeyError::Refused(format!(
                "the tenant holds its own key {} in its AWS account; Anshin cannot certify its destruction. The tenant must schedule the key's deletion itself (or remove BYOK first so Anshin manages the key)",
                byok.key_id
            )));
        }
        // Check every key before changing any, so a refusal leaves everything as it was.
        let mut metas = Vec::with_capacity(keks.len());
        for k in &keks {
            if k.provider != provider.name() {
                return Err(KeyError::Config(format!(
                    "KEK {} belongs to the {} provider but this deployment uses {}",
                    k.id,
                    k.provider,
                    provider.name()
                )));
            }
            let meta = provider.describe(&k.key_id).await?;
            if !matches!(meta.state, KeyState::PendingDeletion | KeyState::Destroyed) {
                check_certifiable(&meta)?;
            }
            metas.push(meta);
        }
        // No new data key may be created from memory while the keys go.
        self.inner.ring.cache().flush_tenant(tenant);
        let mut keys = Vec::with_capacity(keks.len());
        for (k, meta) in keks.iter().zip(metas) {
            let before = meta.state;
            let disabled: Option<Receipt> = match before {
                KeyState::Enabled => Some(provider.disable(&k.key_id).await?),
                _ => None,
            };
            let deletion = match before {
                KeyState::PendingDeletion | KeyState::Destroyed => Receipt {
                    key_id: k.key_id.clone(),
                    state: before,
                    request_id: None,
                    deletion_date: meta.deletion_date,
                },
                _ => provider.schedule_deletion(&k.key_id, days).await?,
            };
            keys.push(ErasedKey {
                kek_id: k.id,
                provider: k.provider.clone(),
                key_id: k.key_id.clone(),
                state_before: before,
                state_after: deletion.state,
                deletion_date: deletion.deletion_date,
                disable_request_id: disabled.and_then(|r| r.request_id),
                deletion_request_id: deletion.request_id,
            });
        }
        let completed_at = Utc::now();
        let tx = begin_platform_write_tx(self.db()).await?;
        let deleted = data_key::Entity::delete_many()
            .filter(data_key::Column::TenantId.eq(tenant))
            .exec(&tx)
            .await?
            .rows_affected;
        for key in &keys {
            use sea_orm::sea_query::Expr;
            kek::Entity::update_many()
                .col_expr(kek::Column::Status, Expr::value(STATUS_ERASED))
                .col_expr(kek::Column::KeyState, Expr::value(key.state_after.as_str()))
                .col_expr(kek::Column::ErasedAt, Expr::value(completed_at))
                .col_expr(kek::Column::DeletionDate, Expr::value(key.deletion_date))
                .filter(kek::Column::Id.eq(key.kek_id))
                .exec(&tx)
                .await?;
        }
        let principal = match (&actor.id, &actor.label) {
            (Some(id), _) => format!("{}:{id}", actor.kind.as_str()),
            (None, Some(label)) => format!("{}:{label}", actor.kind.as_str()),
            (None, None) => actor.kind.as_str().to_string(),
        };
        let event = AuditEvent::new(tenant, actor, "keys.crypto_erase", Outcome::Success)
            .target(Target::new("tenant", tenant))
            .detail("keys", &keys)
            .detail("data_keys_deleted", deleted);
        let audit_event_id = event.id;
        record(&tx, event).await?;
        tx.commit().await?;
        self.inner.ring.cache().flush_tenant(tenant);
        tracing::warn!(tenant = %tenant, keys = keys.len(), data_keys = deleted, "tenant crypto-erased");
        Ok(ErasureEvidence {
            tenant_id: tenant,
            keys,
            data_keys_deleted: deleted,
            requested_at,
            completed_at,
            principal,
            audit_event_id,
        })
    }
}
