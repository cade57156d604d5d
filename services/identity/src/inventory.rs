//! The ID inventory (guideline 14 ⑦): every account of a tenant with its role, status, factors,
//! creation and last sign-in, one account on its own, and the admin's levers: disable or
//! re-enable an account, end all of its sessions. Also the tenant's pending invitations, which
//! an admin can revoke before they are used.

use crate::access::{require_admin, require_reader};
use crate::entity::{
    break_glass, credential, federated_identity, invitation, password_credential, session, user,
};
use crate::error::IdentityError;
use anshin_platform::db::{begin_tenant_write_tx, tenant_reader};
use anshin_platform::{Principal, Role};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
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
    /// The ways the account can sign in: `passkey`, `security_key`, `password` (only with a
    /// security key), `oidc` (the organisation's OpenID Provider), `break_glass`.
    pub factors: Vec<String>,
}

/// An invitation not used yet and not expired (or revoked).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PendingInvitation {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    /// Who invited: `user:<id>` or `token:<id>`.
    pub invited_by: String,
    /// The inviting person's name, when they are an account of this tenant.
    pub invited_by_name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The ways an account signs in, from what it has registered.
pub(crate) fn factors_of(
    credential_kinds: &[&str],
    has_password: bool,
    federated: bool,
    break_glass: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for kind in ["passkey", "security_key"] {
        if credential_kinds.contains(&kind) {
            out.push(kind.to_string());
        }
    }
    if has_password {
        out.push("password".into());
    }
    if federated {
        out.push("oidc".into());
    }
    if break_glass {
        out.push("break_glass".into());
    }
    out
}

/// The address of a tenant's break-glass account (see `break_glass.rs`).
pub(crate) fn break_glass_email(tenant_id: Uuid) -> String {
    format!("break-glass+{tenant_id}@anshin.invalid")
}

/// Whether an (opened) address is a break-glass account's.
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
        self.entries(actor.tenant_id, None).await
    }

    /// One account of the caller's own tenant (admins and auditors): role, status, factors,
    /// creation, last sign-in. Another tenant's account is "not found", before any role check.
    pub async fn account(
        &self,
        actor: &Principal,
        user_id: Uuid,
    ) -> Result<AccountEntry, IdentityError> {
        let not_found = || IdentityError::NotFound("no account with this id in your tenant".into());
        let r = tenant_reader(self.db(), actor.tenant_id).await?;
        let exists = user::Entity::find_by_id(user_id)
            .filter(user::Column::TenantId.eq(actor.tenant_id))
            .one(&r)
            .await?
            .is_some();
        r.finish().await?;
        if !exists {
            return Err(not_found());
        }
        require_reader(actor, "read accounts")?;
        self.entries(actor.tenant_id, Some(user_id))
            .await?
            .into_iter()
            .next()
            .ok_or_else(not_found)
    }

    /// The inventory rows of `tenant_id`: all accounts, or only `only`.
    async fn entries(
        &self,
        tenant_id: Uuid,
        only: Option<Uuid>,
    ) -> Result<Vec<AccountEntry>, IdentityError> {
        let r = tenant_reader(self.db(), tenant_id).await?;
        let mut users = user::Entity::find().filter(user::Column::TenantId.eq(tenant_id));
        let mut creds =
            credential::Entity::find().filter(credential::Column::TenantId.eq(tenant_id));
        let mut feds = federated_identity::Entity::find()
            .filter(federated_identity::Column::TenantId.eq(tenant_id));
        let mut passwords = password_credential::Entity::find()
            .filter(password_credential::Column::TenantId.eq(tenant_id));
        let mut sessions = session::Entity::find()
            .filter(session::Column::TenantId.eq(tenant_id))
            .filter(session::Column::EndedAt.is_null());
        if let Some(id) = only {
            users = users.filter(user::Column::Id.eq(id));
            creds = creds.filter(credential::Column::UserId.eq(id));
            feds = feds.filter(federated_identity::Column::UserId.eq(id));
            passwords = passwords.filter(password_credential::Column::UserId.eq(id));
            sessions = sessions.filter(session::Column::UserId.eq(id));
        }
        let users = users.all(&r).await?;
        // The accounts emergency codes sign in to, known even when an address cannot be opened.
        let break_glass_accounts: HashSet<Uuid> = break_glass::Entity::find()
            .select_only()
            .column(break_glass::Column::UserId)
            .filter(break_glass::Column::TenantId.eq(tenant_id))
            .into_tuple::<Uuid>()
            .all(&r)
            .await?
            .into_iter()
            .collect();
        let creds = creds.all(&r).await?;
        let feds = feds.all(&r).await?;
        let passwords = passwords.all(&r).await?;
        let sessions = sessions.all(&r).await?;
        r.finish().await?;
        let now = Utc::now();
        let mut passkeys: HashMap<Uuid, u32> = HashMap::new();
        let mut kinds: HashMap<Uuid, Vec<String>> = HashMap::new();
        for c in creds {
            *passkeys.entry(c.user_id).or_default() += 1;
            kinds.entry(c.user_id).or_default().push(c.kind);
        }
        let mut open: HashMap<Uuid, u32> = HashMap::new();
        for s in sessions.iter().filter(|s| {
            now < s.absolute_expires_at
                && (now - s.last_seen_at).num_seconds() < s.idle_timeout_secs
        }) {
            *open.entry(s.user_id).or_default() += 1;
        }
        let mut entries = Vec::with_capacity(users.len());
        for u in users {
            let email = self.user_email(&u).await?;
            entries.push((u, email));
        }
        // Sorted here: the stored addresses are sealed, so the database cannot order them.
        entries.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(entries
            .into_iter()
            .map(|(u, email)| {
                let federated = feds.iter().any(|f| f.user_id == u.id);
                let break_glass =
                    break_glass_accounts.contains(&u.id) || is_break_glass_email(&email);
                let has_password = passwords
                    .iter()
                    .any(|p| p.user_id == u.id && p.invalidated_at.is_none());
                let user_kinds: Vec<&str> = kinds
                    .get(&u.id)
                    .map(|k| k.iter().map(String::as_str).collect())
                    .unwrap_or_default();
                AccountEntry {
                    passkeys: passkeys.get(&u.id).copied().unwrap_or(0),
                    federated,
                    open_sessions: open.get(&u.id).copied().unwrap_or(0),
                    break_glass,
                    stale_since: effective_flag(u.last_sign_in_at, u.stale_flagged_at),
                    factors: factors_of(&user_kinds, has_password, federated, break_glass),
                    role: Role::parse(&u.role).unwrap_or(Role::Auditor),
                    id: u.id,
                    email,
                    display_name: u.display_name,
                    status: u.status,
                    created_at: u.created_at,
                    last_sign_in_at: u.last_sign_in_at,
                }
            })
            .collect())
    }

    /// The caller's tenant's invitations that can still be used, newest first (admins and
    /// auditors).
    pub async fn pending_invitations(
        &self,
        actor: &Principal,
    ) -> Result<Vec<PendingInvitation>, IdentityError> {
        require_reader(actor, "read invitations")?;
        let now = Utc::now();
        let r = tenant_reader(self.db(), actor.tenant_id).await?;
        let rows = invitation::Entity::find()
            .filter(invitation::Column::TenantId.eq(actor.tenant_id))
            .filter(invitation::Column::UsedAt.is_null())
            .filter(invitation::Column::ExpiresAt.gt(now))
            .order_by_desc(invitation::Column::CreatedAt)
            .all(&r)
            .await?;
        let inviters: Vec<Uuid> = rows
            .iter()
            .filter_map(|i| i.invited_by.strip_prefix("user:"))
            .filter_map(|id| Uuid::parse_str(id).ok())
            .collect();
        let names: HashMap<Uuid, String> = if inviters.is_empty() {
            HashMap::new()
        } else {
            user::Entity::find()
                .filter(user::Column::TenantId.eq(actor.tenant_id))
                .filter(user::Column::Id.is_in(inviters))
                .all(&r)
                .await?
                .into_iter()
                .map(|u| (u.id, u.display_name))
                .collect()
        };
        r.finish().await?;
        let mut out = Vec::with_capacity(rows.len());
        for i in rows {
            out.push(PendingInvitation {
                email: self
                    .email_for_display(i.tenant_id, i.id, &i.email_sealed)
                    .await?,
                invited_by_name: i
                    .invited_by
                    .strip_prefix("user:")
                    .and_then(|id| Uuid::parse_str(id).ok())
                    .and_then(|id| names.get(&id).cloned()),
                id: i.id,
                display_name: i.display_name,
                role: Role::parse(&i.role).unwrap_or(Role::Auditor),
                invited_by: i.invited_by,
                created_at: i.created_at,
                expires_at: i.expires_at,
            });
        }
        Ok(out)
    }

    /// Revokes a pending invitation of the caller's tenant (admins): its link no longer
    /// enrolls, including a registration already started with it. The invitation ends at once
    /// (its expiry becomes now) and the revocation is audited in the same transaction.
    pub async fn revoke_invitation(
        &self,
        actor: &Principal,
        id: Uuid,
    ) -> Result<(), IdentityError> {
        let not_found =
            || IdentityError::NotFound("no invitation with this id in your tenant".into());
        // The address for the trail, opened before the write transaction.
        let r = tenant_reader(self.db(), actor.tenant_id).await?;
        let found = invitation::Entity::find_by_id(id)
            .filter(invitation::Column::TenantId.eq(actor.tenant_id))
            .one(&r)
            .await?;
        r.finish().await?;
        let found = found.ok_or_else(not_found)?;
        require_admin(actor, "revoke invitations")?;
        let email = self
            .email_for_display(found.tenant_id, found.id, &found.email_sealed)
            .await?;
        let tx = begin_tenant_write_tx(self.db(), actor.tenant_id).await?;
        let inv = invitation::Entity::find_by_id(id)
            .filter(invitation::Column::TenantId.eq(actor.tenant_id))
            .one(&tx)
            .await?
            .ok_or_else(not_found)?;
        let now = Utc::now();
        if inv.used_at.is_some() {
            return Err(IdentityError::Conflict(
                "this invitation was already used: the account exists; disable it on the account page instead".into(),
            ));
        }
        if inv.revoked_at.is_some() {
            return Err(IdentityError::Conflict(
                "this invitation was already revoked or replaced by a newer one".into(),
            ));
        }
        if inv.expires_at <= now {
            return Err(IdentityError::Conflict(
                "this invitation has already expired".into(),
            ));
        }
        // Only a still-pending invitation ends here: an enrollment finishing at the same moment
        // either wins (and the revocation is refused) or finds the link expired.
        let ended = invitation::end_early(now, actor.subject.label(), "revoked")
            .filter(invitation::Column::Id.eq(inv.id))
            .filter(invitation::Column::UsedAt.is_null())
            .filter(invitation::Column::ExpiresAt.gt(now))
            .exec(&tx)
            .await?;
        if ended.rows_affected != 1 {
            return Err(IdentityError::Conflict(
                "this invitation was used or ended meanwhile".into(),
            ));
        }
        crate::audit::record(
            &tx,
            crate::audit::AuditEvent::new(
                actor.tenant_id,
                crate::audit::Actor::from_principal(actor),
                "invitation.revoke",
                crate::audit::Outcome::Success,
            )
            .target(crate::audit::Target::new("invitation", inv.id))
            .detail("email", &email)
            .detail("role", &inv.role)
            .detail("invited_by", &inv.invited_by)
            .detail("expires_at_before", inv.expires_at),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(invitation = %inv.id, by = %actor.subject.label(), "invitation revoked");
        Ok(())
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
        // Scope first (404 outside the tenant), then role (403), as everywhere; the address for
        // the trail is opened before the write transaction.
        let r = tenant_reader(self.db(), actor.tenant_id).await?;
        let found = user::Entity::find_by_id(user_id)
            .filter(user::Column::TenantId.eq(actor.tenant_id))
            .one(&r)
            .await?;
        r.finish().await?;
        let found = found.ok_or_else(|| {
            IdentityError::NotFound("no account with this id in your tenant".into())
        })?;
        require_admin(actor, "manage accounts")?;
        let email = self.user_email(&found).await?;
        let tx = begin_tenant_write_tx(self.db(), actor.tenant_id).await?;
        let u = account_in(&tx, actor.tenant_id, user_id).await?;
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
            .detail("email", &email)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors_name_every_way_in() {
        assert_eq!(
            factors_of(&["passkey", "passkey"], false, false, false),
            vec!["passkey"]
        );
        assert_eq!(
            factors_of(&["security_key"], true, true, false),
            vec!["security_key", "password", "oidc"]
        );
        assert_eq!(
            factors_of(&["passkey", "security_key"], false, false, false),
            vec!["passkey", "security_key"]
        );
        assert_eq!(factors_of(&[], false, false, true), vec!["break_glass"]);
        assert!(factors_of(&[], false, false, false).is_empty());
    }

    #[test]
    fn break_glass_accounts_are_told_apart() {
        assert!(is_break_glass_email(&format!(
            "break-glass+{}@anshin.invalid",
            Uuid::nil()
        )));
        assert!(!is_break_glass_email("break-glass@hospital.example.jp"));
    }
}
