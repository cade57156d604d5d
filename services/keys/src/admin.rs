//! Key administration: the status page's data, on-demand rotation to a new KEK (stored data keys
//! are re-wrapped by a durable job), bring-your-own-key, and the BYOK health check.

use crate::entity::{data_key, kek};
use crate::error::KeyError;
use crate::provider::{KeyOrigin, KeyState};
use crate::ring::dek_context;
use crate::service::{
    record, KeyService, TenantInfo, ORIGIN_BYOK, ORIGIN_MANAGED, STATUS_ACTIVE, STATUS_ERASED,
    STATUS_RETIRED,
};
use anshin_audit::{Actor, AuditEvent, Outcome, Target};
use anshin_platform::db::{begin_platform_tx, begin_platform_write_tx};
use anshin_platform::error::Problem;
use anshin_platform::jobs::{JobQueue, NewJob};
use anshin_platform::stepup::{
    RefusePeople, StepUpError, StepUpVerifier, SENSITIVE_ACTION_WINDOW_MINUTES,
};
use anshin_platform::{Principal, Role, TenantScope};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

pub const REWRAP_JOB: &str = "keys.rewrap";
pub const BYOK_HEALTH_JOB: &str = "keys.byok_health";
pub const BACKFILL_JOB: &str = "keys.backfill";

/// One KEK of a tenant, as operators and inspectors see it (never key material).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KekView {
    pub id: Uuid,
    /// `aws-kms` or `local`.
    pub provider: String,
    /// KMS key ARN or `local:<uuid>`.
    pub key_id: String,
    pub alias: Option<String>,
    /// `managed` (created by Anshin) or `byok` (the tenant's own KMS key).
    pub origin: String,
    /// `active` (wraps new data keys), `retired` (still unwraps) or `erased`.
    pub status: String,
    /// The provider's key state when last seen.
    pub key_state: String,
    pub rotation_enabled: Option<bool>,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// `ok`, `unreachable` or `denied`.
    pub health: String,
    pub health_checked_at: Option<DateTime<Utc>>,
    pub health_detail: Option<String>,
    pub erased_at: Option<DateTime<Utc>>,
    pub deletion_date: Option<DateTime<Utc>>,
    /// Data keys Anshin stores wrapped under this KEK.
    pub stored_data_keys: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CachePolicy {
    pub max_age_secs: u64,
    pub max_messages: u64,
    pub max_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyStatus {
    pub tenant_id: Uuid,
    /// The deployment's key provider.
    pub provider: String,
    pub active: Option<KekView>,
    /// Retired and erased KEKs, newest first.
    pub previous: Vec<KekView>,
    /// The tenant's keys were crypto-erased.
    pub erased: bool,
    /// Data-key (DEK) rotation policy: cached data keys are replaced after this age or use.
    pub data_key_policy: CachePolicy,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RotationStarted {
    pub tenant_id: Uuid,
    pub new_kek: KekView,
    pub retired_kek: Uuid,
    /// The durable job re-wrapping stored data keys under the new KEK.
    pub rewrap_job: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RewrapPayload {
    pub tenant_id: Uuid,
    pub from_kek: Uuid,
}

/// Why a key administration request (rotation, BYOK, crypto-erase) was refused: the key
/// service's own reasons, or a person who has not confirmed with their passkey recently.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Key(#[from] KeyError),
    /// 403 `urn:anshin:problem:step-up-required`: confirm and retry.
    #[error(transparent)]
    StepUp(#[from] StepUpError),
}

impl From<AdminError> for Problem {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Key(k) => k.into(),
            AdminError::StepUp(s) => s.into(),
        }
    }
}

/// The roles that change a tenant's keys (rotation, BYOK).
pub(crate) const KEY_ADMINS: [Role; 2] = [Role::InstitutionAdmin, Role::ProviderAdmin];

fn readers() -> [Role; 4] {
    [
        Role::InstitutionAdmin,
        Role::ProviderAdmin,
        Role::ProviderOperator,
        Role::Auditor,
    ]
}

impl KeyService {
    /// Resolves which tenant's keys the principal asks about. Another tenant is visible only to
    /// its provider; anything else is "not found" (scope before role).
    pub(crate) async fn target_tenant(
        &self,
        p: &Principal,
        tenant: Option<Uuid>,
    ) -> Result<TenantInfo, KeyError> {
        let id = tenant.unwrap_or(p.tenant_id);
        let not_found = || KeyError::NotFound(format!("no such tenant {id}"));
        let info = self
            .inner
            .directory
            .tenant(id)
            .await
            .ok_or_else(not_found)?;
        if id != p.tenant_id {
            match p.scope() {
                TenantScope::Provider(pid) if info.provider_id == pid => {}
                _ => return Err(not_found()),
            }
        }
        Ok(info)
    }

    /// A person changing keys must have confirmed with a registered authenticator within the
    /// last few minutes (issue 5: sensitive key operations need step-up). API tokens and machine
    /// clients are not people: their role (and scopes) decide, as before.
    pub async fn require_step_up(&self, p: &Principal) -> Result<(), StepUpError> {
        if !anshin_platform::stepup::is_person(p) {
            return Ok(());
        }
        let within = chrono::Duration::minutes(SENSITIVE_ACTION_WINDOW_MINUTES);
        match self.inner.step_up.get() {
            Some(v) => v.require_recent_step_up(p, within).await,
            // Nobody can tell whether the person confirmed: refused (fail closed).
            None => RefusePeople.require_recent_step_up(p, within).await,
        }
    }

    /// Scope (404), then role (403), then a person's step-up (403 `step-up-required`): the
    /// checks every key administration request passes before anything changes.
    pub(crate) async fn authorize_admin(
        &self,
        p: &Principal,
        tenant: Option<Uuid>,
        roles: &[Role],
        what: &str,
    ) -> Result<TenantInfo, AdminError> {
        let t = self.target_tenant(p, tenant).await?;
        Self::require(p, roles, what)?;
        self.require_step_up(p).await?;
        Ok(t)
    }

    fn require(p: &Principal, roles: &[Role], what: &str) -> Result<(), KeyError> {
        if p.grant.is_some() || !roles.contains(&p.role) {
            return Err(KeyError::Forbidden(format!(
                "{what} is for {}",
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(())
    }

    pub async fn status(&self, p: &Principal, tenant: Option<Uuid>) -> Result<KeyStatus, KeyError> {
        let t = self.target_tenant(p, tenant).await?;
        Self::require(p, &readers(), "reading key status")?;
        self.status_of(t.id).await
    }

    /// Key status without a principal (the CLI and the evidence documents).
    pub async fn status_of(&self, tenant: Uuid) -> Result<KeyStatus, KeyError> {
        let tx = begin_platform_tx(self.db()).await?;
        let rows = kek::Entity::find()
            .filter(kek::Column::TenantId.eq(tenant))
            .order_by_desc(kek::Column::CreatedAt)
            .all(&tx)
            .await?;
        let mut views = Vec::with_capacity(rows.len());
        for r in rows {
            let n = data_key::Entity::find()
                .filter(data_key::Column::KekId.eq(r.id))
                .count(&tx)
                .await?;
            views.push(view(r, n));
        }
        tx.commit().await?;
        let erased = views.iter().any(|v| v.status == STATUS_ERASED);
        let (active, previous): (Vec<_>, Vec<_>) =
            views.into_iter().partition(|v| v.status == STATUS_ACTIVE);
        let limits = self.inner.ring.cache().limits();
        Ok(KeyStatus {
            tenant_id: tenant,
            provider: self.provider_name().into(),
            active: active.into_iter().next(),
            previous,
            erased,
            data_key_policy: CachePolicy {
                max_age_secs: limits.max_age.as_secs(),
                max_messages: limits.max_messages,
                max_bytes: limits.max_bytes,
            },
        })
    }

    /// Rotates to a new KEK now: the new key wraps every new data key at once, the old one
    /// stays usable for unwrapping, and a durable job re-wraps the stored data keys.
    pub async fn rotate(
        &self,
        p: &Principal,
        tenant: Option<Uuid>,
    ) -> Result<RotationStarted, AdminError> {
        let t = self
            .authorize_admin(p, tenant, &KEY_ADMINS, "rotating keys")
            .await?;
        let old = self.active_kek(t.id).await?;
        if old.origin == ORIGIN_BYOK {
            return Err(KeyError::Conflict(
                "the tenant's own (BYOK) key is rotated in the tenant's AWS account; remove BYOK to go back to an Anshin-managed key".into(),
            )
            .into());
        }
        let meta = self
            .inner
            .ring
            .provider()
            .create_key(&crate::provider::CreateKey {
                alias: format!(
                    "anshin/tenant/{}/{}",
                    t.id,
                    Utc::now().format("%Y%m%d%H%M%S")
                ),
                description: format!(
                    "Anshin key-encryption key of {} {} (rotated)",
                    t.kind.as_str(),
                    t.id
                ),
                tags: vec![
                    ("anshin:tenant".into(), t.id.to_string()),
                    ("anshin:provider".into(), t.provider_id.to_string()),
                    ("anshin:kind".into(), t.kind.as_str().into()),
                ],
            })
            .await?;
        let actor = Actor::from_principal(p);
        Ok(self
            .replace_active(
                t,
                &old,
                meta.key_id,
                meta.state,
                meta.rotation_enabled,
                ORIGIN_MANAGED,
                actor,
                "keys.kek.rotate",
            )
            .await?)
    }

    /// Retires `old`, inserts the new active KEK, and queues the re-wrap job, in one transaction
    /// with its audit event.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn replace_active(
        &self,
        t: TenantInfo,
        old: &kek::Model,
        key_id: String,
        state: KeyState,
        rotation_enabled: Option<bool>,
        origin: &str,
        actor: Actor,
        action: &str,
    ) -> Result<RotationStarted, KeyError> {
        let now = Utc::now();
        let tx = begin_platform_write_tx(self.db()).await?;
        let updated = kek::Entity::update_many()
            .col_expr(
                kek::Column::Status,
                sea_orm::sea_query::Expr::value(STATUS_RETIRED),
            )
            .col_expr(kek::Column::RetiredAt, sea_orm::sea_query::Expr::value(now))
            .filter(kek::Column::Id.eq(old.id))
            .filter(kek::Column::Status.eq(STATUS_ACTIVE))
            .exec(&tx)
            .await?;
        if updated.rows_affected != 1 {
            return Err(KeyError::Conflict(
                "the tenant's active key changed meanwhile; try again".into(),
            ));
        }
        let new = kek::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(t.id),
            provider: Set(self.provider_name().into()),
            key_id: Set(key_id),
            alias: Set(None),
            origin: Set(origin.into()),
            status: Set(STATUS_ACTIVE.into()),
            key_state: Set(state.as_str().into()),
            rotation_enabled: Set(rotation_enabled),
            created_at: Set(now),
            rotated_at: Set(None),
            retired_at: Set(None),
            last_used_at: Set(None),
            health: Set("ok".into()),
            health_checked_at: Set(Some(now)),
            health_detail: Set(None),
            erased_at: Set(None),
            deletion_date: Set(None),
        }
        .insert(&tx)
        .await?;
        let job = JobQueue::enqueue(
            &tx,
            NewJob::new(
                REWRAP_JOB,
                serde_json::to_value(RewrapPayload {
                    tenant_id: t.id,
                    from_kek: old.id,
                })
                .map_err(|e| KeyError::Provider(e.to_string()))?,
            )
            .idempotency_key(format!("rewrap:{}", old.id))
            .tenant(t.id)
            .max_attempts(50),
        )
        .await
        .map_err(|e| KeyError::Provider(format!("queueing the re-wrap job: {e}")))?;
        record(
            &tx,
            AuditEvent::new(t.id, actor, action, Outcome::Success)
                .target(Target::new("kek", new.id))
                .detail("new_key_id", &new.key_id)
                .detail("old_key_id", &old.key_id)
                .detail("origin", origin)
                .detail("rewrap_job", &job),
        )
        .await?;
        tx.commit().await?;
        self.inner.ring.cache().flush_tenant(t.id);
        tracing::info!(tenant = %t.id, new = %new.key_id, "tenant KEK replaced");
        Ok(RotationStarted {
            tenant_id: t.id,
            new_kek: view(new, 0),
            retired_kek: old.id,
            rewrap_job: job,
        })
    }

    /// Re-wraps up to `limit` stored data keys of `from` under the tenant's active KEK. Returns
    /// how many remain. Each key moves in its own conditional update, so a crash or a concurrent
    /// run never loses or double-moves one.
    pub async fn rewrap_batch(
        &self,
        tenant: Uuid,
        from: Uuid,
        limit: u64,
    ) -> Result<u64, KeyError> {
        let tx = begin_platform_tx(self.db()).await?;
        let old = kek::Entity::find_by_id(from)
            .one(&tx)
            .await?
            .ok_or_else(|| KeyError::NotFound(format!("no KEK {from}")))?;
        let rows = data_key::Entity::find()
            .filter(data_key::Column::KekId.eq(from))
            .filter(data_key::Column::TenantId.eq(tenant))
            .order_by_asc(data_key::Column::Id)
            .limit(limit)
            .all(&tx)
            .await?;
        tx.commit().await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let active = self.active_kek(tenant).await?;
        let provider = self.inner.ring.provider();
        let mut moved = Vec::with_capacity(rows.len());
        for r in &rows {
            let ctx = dek_context(tenant, &r.purpose);
            let raw = provider.unwrap(&old.key_id, &r.wrapped, &ctx).await?;
            let wrapped = provider.wrap(&active.key_id, &raw, &ctx).await?;
            moved.push((r.id, wrapped));
        }
        let now = Utc::now();
        let tx = begin_platform_write_tx(self.db()).await?;
        for (id, wrapped) in moved {
            data_key::Entity::update_many()
                .col_expr(
                    data_key::Column::KekId,
                    sea_orm::sea_query::Expr::value(active.id),
                )
                .col_expr(
                    data_key::Column::Wrapped,
                    sea_orm::sea_query::Expr::value(wrapped),
                )
                .col_expr(
                    data_key::Column::RewrappedAt,
                    sea_orm::sea_query::Expr::value(now),
                )
                .filter(data_key::Column::Id.eq(id))
                .filter(data_key::Column::KekId.eq(from))
                .exec(&tx)
                .await?;
        }
        let remaining = data_key::Entity::find()
            .filter(data_key::Column::KekId.eq(from))
            .count(&tx)
            .await?;
        if remaining == 0 {
            record(
                &tx,
                AuditEvent::new(
                    tenant,
                    Actor::system(REWRAP_JOB),
                    "keys.rewrap.complete",
                    Outcome::Success,
                )
                .target(Target::new("kek", from))
                .detail("from_key_id", &old.key_id)
                .detail("to_key_id", &active.key_id),
            )
            .await?;
        }
        tx.commit().await?;
        // Cached entries of moved keys still hold the right plaintext; nothing to flush.
        Ok(remaining)
    }

    /// A hospital brings its own KMS key (in its own AWS account). Anshin checks it can use the
    /// key and that the key can be certified, then makes it the tenant's active KEK.
    pub async fn register_byok(
        &self,
        p: &Principal,
        tenant: Option<Uuid>,
        key_arn: &str,
    ) -> Result<RotationStarted, AdminError> {
        let t = self
            .authorize_admin(p, tenant, &KEY_ADMINS, "registering a tenant's own key")
            .await?;
        Ok(self.register_byok_for(t, p, key_arn).await?)
    }

    async fn register_byok_for(
        &self,
        t: TenantInfo,
        p: &Principal,
        key_arn: &str,
    ) -> Result<RotationStarted, KeyError> {
        if self.provider_name() != "aws-kms" {
            return Err(KeyError::Refused(
                "bring-your-own-key needs the AWS KMS key provider; this deployment uses the local provider".into(),
            ));
        }
        let region = parse_key_arn(key_arn)?;
        if !self
            .inner
            .settings
            .allowed_regions
            .iter()
            .any(|r| r == region)
        {
            return Err(KeyError::Refused(format!(
                "the key is in {region}; Anshin only uses keys in {}",
                self.inner.settings.allowed_regions.join(", ")
            )));
        }
        let provider = self.inner.ring.provider();
        let meta = provider.describe(key_arn).await?;
        check_certifiable(&meta)?;
        if meta.state != KeyState::Enabled {
            return Err(KeyError::Refused(format!(
                "the key is {}; enable it first",
                meta.state.as_str().replace('_', " ")
            )));
        }
        // Prove Anshin may use it: generate and unwrap one throwaway data key.
        let ctx = dek_context(t.id, "keys.byok-check");
        let g = provider.generate_data_key(key_arn, &ctx).await?;
        provider.unwrap(&g.key_id, &g.wrapped, &ctx).await?;
        let old = self.active_kek(t.id).await?;
        if old.key_id == meta.key_id {
            return Err(KeyError::Conflict(
                "this key is already the tenant's key".into(),
            ));
        }
        self.replace_active(
            t,
            &old,
            meta.key_id,
            meta.state,
            meta.rotation_enabled,
            ORIGIN_BYOK,
            Actor::from_principal(p),
            "keys.byok.register",
        )
        .await
    }

    /// Goes back to an Anshin-managed key; the tenant's key stays usable for unwrapping until the
    /// re-wrap job has moved every stored data key.
    pub async fn remove_byok(
        &self,
        p: &Principal,
        tenant: Option<Uuid>,
    ) -> Result<RotationStarted, AdminError> {
        let t = self
            .authorize_admin(p, tenant, &KEY_ADMINS, "removing a tenant's own key")
            .await?;
        Ok(self.remove_byok_for(t, p).await?)
    }

    async fn remove_byok_for(
        &self,
        t: TenantInfo,
        p: &Principal,
    ) -> Result<RotationStarted, KeyError> {
        let old = self.active_kek(t.id).await?;
        if old.origin != ORIGIN_BYOK {
            return Err(KeyError::Conflict(
                "the tenant does not use its own key".into(),
            ));
        }
        let meta = self
            .inner
            .ring
            .provider()
            .create_key(&crate::provider::CreateKey {
                alias: format!(
                    "anshin/tenant/{}/{}",
                    t.id,
                    Utc::now().format("%Y%m%d%H%M%S")
                ),
                description: format!("Anshin key-encryption key of {} {}", t.kind.as_str(), t.id),
                tags: vec![("anshin:tenant".into(), t.id.to_string())],
            })
            .await?;
        self.replace_active(
            t,
            &old,
            meta.key_id,
            meta.state,
            meta.rotation_enabled,
            ORIGIN_MANAGED,
            Actor::from_principal(p),
            "keys.byok.remove",
        )
        .await
    }

    /// Checks every active BYOK key can still be used. A lost grant becomes a tenant alert
    /// (`keys.byok.access_lost`); an unreachable provider is only noted.
    pub async fn check_byok_health(&self) -> Result<u64, KeyError> {
        let tx = begin_platform_tx(self.db()).await?;
        let rows = kek::Entity::find()
            .filter(kek::Column::Status.eq(STATUS_ACTIVE))
            .filter(kek::Column::Origin.eq(ORIGIN_BYOK))
            .all(&tx)
            .await?;
        tx.commit().await?;
        let mut lost = 0;
        for k in rows {
            let ctx = dek_context(k.tenant_id, "keys.byok-check");
            let r = self
                .inner
                .ring
                .provider()
                .generate_data_key(&k.key_id, &ctx)
                .await;
            match r {
                Ok(_) => self.mark_byok_health(&k, true, "").await?,
                Err(e) if e.is_transient() => {
                    self.set_health(&k, "unreachable", &e.to_string()).await?
                }
                Err(e) => {
                    lost += 1;
                    self.mark_byok_health(&k, false, &e.to_string()).await?
                }
            }
        }
        Ok(lost)
    }

    async fn set_health(&self, k: &kek::Model, health: &str, detail: &str) -> Result<(), KeyError> {
        let tx = begin_platform_write_tx(self.db()).await?;
        update_health(&tx, k.id, health, detail).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a BYOK key's health; a change between usable and denied is audited (and the
    /// audit alert rules turn a loss into a tenant alert).
    pub(crate) async fn mark_byok_health(
        &self,
        k: &kek::Model,
        ok: bool,
        detail: &str,
    ) -> Result<(), KeyError> {
        let tx = begin_platform_write_tx(self.db()).await?;
        let current = kek::Entity::find_by_id(k.id).one(&tx).await?;
        let was_denied = current.as_ref().is_some_and(|c| c.health == "denied");
        update_health(&tx, k.id, if ok { "ok" } else { "denied" }, detail).await?;
        let action = match (ok, was_denied) {
            (false, false) => Some("keys.byok.access_lost"),
            (true, true) => Some("keys.byok.access_restored"),
            _ => None,
        };
        if let Some(action) = action {
            let outcome = if ok {
                Outcome::Success
            } else {
                Outcome::Failure
            };
            let mut e =
                AuditEvent::new(k.tenant_id, Actor::system(BYOK_HEALTH_JOB), action, outcome)
                    .target(Target::new("kek", k.id))
                    .detail("key_id", &k.key_id);
            if !ok {
                e = e.reason(detail.to_string());
            }
            record(&tx, e).await?;
        }
        tx.commit().await?;
        if !ok {
            self.inner.ring.cache().flush_tenant(k.tenant_id);
        }
        Ok(())
    }
}

async fn update_health(
    c: &impl ConnectionTrait,
    id: Uuid,
    health: &str,
    detail: &str,
) -> Result<(), KeyError> {
    use sea_orm::sea_query::Expr;
    let detail: Option<String> = (!detail.is_empty()).then(|| detail.chars().take(500).collect());
    kek::Entity::update_many()
        .col_expr(kek::Column::Health, Expr::value(health))
        .col_expr(kek::Column::HealthCheckedAt, Expr::value(Utc::now()))
        .col_expr(kek::Column::HealthDetail, Expr::value(detail))
        .filter(kek::Column::Id.eq(id))
        .exec(c)
        .await?;
    Ok(())
}

/// Keys whose destruction cannot be certified are refused for tenants: copies of imported
/// material may exist elsewhere, and a multi-Region key lives on in its replicas.
pub(crate) fn check_certifiable(meta: &crate::provider::KeyMeta) -> Result<(), KeyError> {
    if meta.multi_region {
        return Err(KeyError::Refused(
            "multi-Region keys are refused: a replica would survive crypto-erase".into(),
        ));
    }
    if meta.origin != KeyOrigin::Provider {
        return Err(KeyError::Refused(
            "keys with imported or external material are refused: copies may exist outside KMS, so destruction cannot be certified".into(),
        ));
    }
    if !meta.symmetric {
        return Err(KeyError::Refused(
            "only symmetric encryption keys (SYMMETRIC_DEFAULT) can wrap data keys".into(),
        ));
    }
    Ok(())
}

/// `arn:aws:kms:<region>:<account>:key/<key-id>` → region.
pub fn parse_key_arn(arn: &str) -> Result<&str, KeyError> {
    let bad = || {
        KeyError::Invalid(
            "give the key's ARN, like arn:aws:kms:ap-northeast-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab".into(),
        )
    };
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" || !parts[1].starts_with("aws") || parts[2] != "kms" {
        return Err(bad());
    }
    let (region, account, resource) = (parts[3], parts[4], parts[5]);
    let key = resource.strip_prefix("key/").ok_or_else(bad)?;
    if region.is_empty()
        || account.len() != 12
        || !account.bytes().all(|b| b.is_ascii_digit())
        || key.is_empty()
        || key.len() > 128
        || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(bad());
    }
    Ok(region)
}

pub(crate) fn view(r: kek::Model, stored_data_keys: u64) -> KekView {
    KekView {
        id: r.id,
        provider: r.provider,
        key_id: r.key_id,
        alias: r.alias,
        origin: r.origin,
        status: r.status,
        key_state: r.key_state,
        rotation_enabled: r.rotation_enabled,
        created_at: r.created_at,
        retired_at: r.retired_at,
        last_used_at: r.last_used_at,
        health: r.health,
        health_checked_at: r.health_checked_at,
        health_detail: r.health_detail,
        erased_at: r.erased_at,
        deletion_date: r.deletion_date,
        stored_data_keys,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_reach_the_edge_as_problems() {
        let p = Problem::from(AdminError::from(StepUpError::required(
            chrono::Duration::minutes(SENSITIVE_ACTION_WINDOW_MINUTES),
        )));
        assert_eq!((p.status.as_u16(), p.kind), (403, "step-up-required"));
        assert!(
            p.detail.contains("/api/v1/me/step-up/begin"),
            "{}",
            p.detail
        );
        let p = Problem::from(AdminError::from(KeyError::Forbidden(
            "rotating keys is for x".into(),
        )));
        assert_eq!((p.status.as_u16(), p.kind), (403, "forbidden"));
        let p = Problem::from(AdminError::from(KeyError::NotFound(
            "no such tenant".into(),
        )));
        assert_eq!(p.status.as_u16(), 404);
    }

    #[test]
    fn key_arns_are_checked() {
        assert_eq!(
            parse_key_arn("arn:aws:kms:ap-northeast-1:111122223333:key/1234abcd-12ab").ok(),
            Some("ap-northeast-1")
        );
        for bad in [
            "",
            "arn:aws:kms:ap-northeast-1:111122223333:alias/x",
            "arn:aws:s3:ap-northeast-1:111122223333:key/x",
            "arn:aws:kms:ap-northeast-1:1111:key/x",
            "arn:aws:kms:ap-northeast-1:111122223333:key/",
            "arn:aws:kms:ap-northeast-1:111122223333:key/../x",
        ] {
            assert!(parse_key_arn(bad).is_err(), "{bad}");
        }
    }
}
