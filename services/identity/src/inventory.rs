//! The ID inventory (guideline 14 ⑦): every account of a tenant with its role, status, factors,
//! creation and last sign-in, and the admin's levers: disable or re-enable an account, end all of
//! its sessions.

use crate::access::{require_admin, require_reader};
use crate::entity::{credential, federated_identity, session, user};
use crate::error::IdentityError;
use anshin_platform::db::{begin_tenant_write_tx, tenant_reader};
use anshin_platform::{Principal, Role};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::service::IdentityService;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountEntry {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub status: String,
    /// How the account can sign in: `passkey` (with a count), `oidc`.
    pub passkeys: u32,
    pub federated: bool,
    pub created_at: DateTime<Utc>,
    pub last_sign_in_at: Option<DateTime<Utc>>,
    pub open_sessions: u32,
    /// True for the tenant's break-glass account.
    pub break_glass: bool,
    /// Since when the account counts as stale (no sign-in for the tenant's `stale_after_days`);
    /// it is disabled `disable_after_days` later unless someone signs in with it.
    pub stale_since: Option<DateTime<Utc>>,
}

/// The email of a tenant's break-glass account (see `break_glass.rs`).
pub(crate) fn is_break_glass_email(email: &str) -> bool {
    email.starts_with("break-glass+") && email.ends_with("@anshin.invalid")
}

/// The stale flag as it stands: a sign-in after the flag was set lifts it (the sweep clears the
/// column later).
pub(crate) fn effective_flag(
    last_sign_in_at: Option<DateTime<Utc>>,
    stale_flagged_at: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    stale_flagged_at.filter(|f| last_sign_in_at.is_none_or(|s| s <= *f))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountChange {
    /// `active` or `disabled`. Disabling ends every session of the account.
    pub status: String,
}

impl IdentityService {
    /// Every account of the caller's own tenant (admins and auditors).
    pub async fn inventory(&self, actor: &Principal) -> Result<Vec<AccountEntry>, IdentityError> {
        require_reader(actor, "read the account inventory")?;
        let r = tenant_reader(self.db(), actor.tenant_id).await?;
        let users = user::Entity::find()
            .filter(user::Column::TenantId.eq(actor.tenant_id))
            .order_by_asc(user::Column::Email)
            .all(&r)
            .await?;
        let creds = credential::Entity::find()
            .filter(credential::Column::TenantId.eq(actor.tenant_id))
            .all(&r)
            .await?;
        let feds = federated_identity::Entity::find()
            .filter(federated_identity::Column::TenantId.eq(actor.tenant_id))
            .all(&r)
            .await?;
        let sessions = session::Entity::find()
            .filter(session::Column::TenantId.eq(actor.tenant_id))
            .filter(session::Column::EndedAt.is_null())
            .all(&r)
            .await?;
        r.finish().await?;
        let now = Utc::now();
        let mut passkeys: HashMap<Uuid, u32> = HashMap::new();
        for c in creds {
            *passkeys.entry(c.user_id).or_default() += 1;
        }
        let mut open: HashMap<Uuid, u32> = HashMap::new();
        for s in sessions.iter().filter(|s| {
            now < s.absolute_expires_at
                && (now - s.last_seen_at).num_seconds() < s.idle_timeout_secs
        }) {
            *open.entry(s.user_id).or_default() += 1;
        }
        Ok(users
            .into_iter()
            .map(|u| AccountEntry {
                passkeys: passkeys.get(&u.id).copied().unwrap_or(0),
                federated: feds.iter().any(|f| f.user_id == u.id),
                open_sessions: open.get(&u.id).copied().unwrap_or(0),
                break_glass: is_break_glass_email(&u.email),
                stale_since: effective_flag(u.last_sign_in_at, u.stale_flagged_at),
                role: Role::parse(&u.role).unwrap_or(Role::Auditor),
                id: u.id,
                email: u.email,
                display_name: u.display_name,
                status: u.status,
                created_at: u.created_at,
                last_sign_in_at: u.last_sign_in_at,
            })
            .collect())
    }

    /// Disables or re-enables an account of the caller's tenant; disabling ends its sessions.
    pub async fn change_account(
        &self,
        actor: &Principal,
        user_id: Uuid,
        change: AccountChange,
    ) -> Result<(), IdentityError> {
        if !matches!(change.status.as_str(), "active" | "disabled") {
            return Err(IdentityError::Invalid(
                "status must be active or disabled".into(),
            ));
        }
        if let anshin_platform::Subject::User { id, .. } = &actor.subject {
            if *id == user_id && change.status == "disabled" {
                return Err(IdentityError::Conflict(
                    "you cannot disable your own account".into(),
                ));
            }
        }
        let tx = begin_tenant_write_tx(self.db(), actor.tenant_id).await?;
        let u = account_in(&tx, actor.tenant_id, user_id).await?;
        // Scope first (404 outside the tenant), then role (403), as everywhere.
        require_admin(actor, "manage accounts")?;
        crate::audit::record(
            &tx,
            crate::audit::AuditEvent::new(
                actor.tenant_id,
                crate::audit::Actor::from_principal(actor),
                if change.status == "disabled" {
                    "account.disable"
                } else {
                    "account.enable"
                },
                crate::audit::Outcome::Success,
            )
            .target(crate::audit::Target::new("user", u.id))
            .detail("email", &u.email)
            .detail("status_before", &u.status),
        )
        .await?;
        if change.status == "disabled" {
            disable_in(&tx, actor.tenant_id, u.id, "account_disabled").await?;
        } else {
            let mut am: user::ActiveModel = u.into();
            am.status = Set(change.status);
            // Re-enabled: the stale flag starts over, giving the person a full
            // `disable_after_days` to sign in before the sweep disables the account again.
            am.stale_flagged_at = Set(None);
            am.update(&tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Ends every open session of an account of the caller's tenant; returns how many ended.
    pub async fn end_sessions_of(
        &self,
        actor: &Principal,
        user_id: Uuid,
    ) -> Result<u64, IdentityError> {
        let tx = begin_tenant_write_tx(self.db(), actor.tenant_id).await?;
        account_in(&tx, actor.tenant_id, user_id).await?;
        require_admin(actor, "manage accounts")?;
        let n = end_all(&tx, actor.tenant_id, user_id, "ended_by_admin").await?;
        crate::audit::record(
            &tx,
            crate::audit::AuditEvent::new(
                actor.tenant_id,
                crate::audit::Actor::from_principal(actor),
                "session.end_all",
                crate::audit::Outcome::Success,
            )
            .target(crate::audit::Target::new("user", user_id))
            .reason("ended_by_admin")
            .detail("count", n),
        )
        .await?;
        tx.commit().await?;
        Ok(n)
    }
}

pub(crate) async fn account_in(
    tx: &sea_orm::DatabaseTransaction,
    tenant_id: Uuid,
    user_id: Uuid,
) -> Result<user::Model, IdentityError> {
    user::Entity::find_by_id(user_id)
        .filter(user::Column::TenantId.eq(tenant_id))
        .one(tx)
        .await?
        .ok_or_else(|| IdentityError::NotFound("no account with this id in your tenant".into()))
}

/// Disables an account of `tenant_id` and ends its open sessions with `reason`, inside the
/// caller's transaction (the admin's switch, a review decision, the stale-account sweep).
pub(crate) async fn disable_in(
    tx: &sea_orm::DatabaseTransaction,
    tenant_id: Uuid,
    user_id: Uuid,
    reason: &str,
) -> Result<u64, IdentityError> {
    user::Entity::update_many()
        .col_expr(user::Column::Status, Expr::value("disabled"))
        .filter(user::Column::Id.eq(user_id))
        .filter(user::Column::TenantId.eq(tenant_id))
        .exec(tx)
        .await?;
    end_all(tx, tenant_id, user_id, reason).await
}

pub(crate) async fn end_all(
    tx: &sea_orm::DatabaseTransaction,
    tenant_id: Uuid,
    user_id: Uuid,
    reason: &str,
) -> Result<u64, IdentityError> {
    let r = session::Entity::update_many()
        .col_expr(session::Column::EndedAt, Expr::value(Utc::now()))
        .col_expr(session::Column::EndedReason, Expr::value(reason))
        .filter(session::Column::UserId.eq(user_id))
        .filter(session::Column::TenantId.eq(tenant_id))
        .filter(session::Column::EndedAt.is_null())
        .exec(tx)
        .await?;
    Ok(r.rows_affected)
}
