//! Re-encryption of what identity stored before the key service sealed it:
//!
//! - identity providers' client secrets still under the interim secret box
//!   (`identity-secrets.key`) are opened and sealed again under the tenant's KEK, so a KEK
//!   rotation re-wraps them and a crypto-erase makes them unreadable;
//! - people's e-mail addresses stored readable (`users.email`, `invitations.email`,
//!   `account_review_items.email`, `password_resets.verifier_email`) are sealed under the
//!   tenant's KEK, and accounts and invitations get their blind index ([`crate::contact`]).
//!
//! In batches: a short read, then the sealing (outside any transaction: the key service writes
//! data keys in its own), then one write transaction in which each row is updated only if it
//! still holds the value that was read (an administrator's change meanwhile wins), together with
//! its audit event (`identity_provider.client_secret.reseal`, [`CONTACT_RESEAL_ACTION`]; never
//! the value itself). Idempotent and resumable: a value sealed by the key service is never
//! selected again.

use crate::audit::{record, Actor, AuditEvent, Outcome, Target};
use crate::entity::{account_review_item, identity_provider, invitation, password_reset, user};
use crate::error::IdentityError;
use crate::service::IdentityService;
use anshin_platform::db::{begin_platform_tx, begin_platform_write_tx};
use anshin_platform::sealer::{ResealReport, SEALED_TEXT_PREFIX};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, Condition, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

/// The key-service purpose of identity providers' client secrets (as `oidc.rs` seals and opens
/// them; the tests check both agree by opening a re-sealed secret the way sign-in does).
const OIDC_SECRET_PURPOSE: &str = "identity.oidc-client-secret";

/// The audit action of one re-sealed client secret.
pub const RESEAL_ACTION: &str = "identity_provider.client_secret.reseal";

/// The audit action of one e-mail address sealed by the re-encryption pass.
pub const CONTACT_RESEAL_ACTION: &str = "identity.email.reseal";

fn context(tenant: Uuid) -> String {
    format!("identity-provider:{tenant}")
}

/// A transient failure stops the pass; anything else is this row's problem.
fn is_transient(e: &IdentityError) -> bool {
    matches!(e, IdentityError::Upstream(_) | IdentityError::Db(_))
}

impl IdentityService {
    /// Re-seals every identity provider client secret still under the interim secret box,
    /// `batch` rows at a time (addresses stored readable are
    /// [`Self::reseal_legacy_contact_data`]'s). Secrets that cannot be moved (unreadable with
    /// the secret box's key, or the tenant's key is unusable — e.g. crypto-erased) are counted
    /// in `failed` and left as they are; an outage of the key service stops the pass with an
    /// error (what was done stays done).
    pub async fn reseal_legacy_secrets(
        &self,
        actor: &Actor,
        batch: u64,
    ) -> Result<ResealReport, IdentityError> {
        let batch = batch.clamp(1, 10_000);
        let mut total = ResealReport::default();
        let mut after = None;
        loop {
            let (report, last, full) = self.reseal_batch(actor, after, batch).await?;
            total.add(report);
            match last {
                Some(t) if full => after = Some(t),
                _ => break,
            }
        }
        Ok(total)
    }

    /// Seals, under each row's tenant KEK, every e-mail address stored readable before addresses
    /// were sealed, and gives accounts and invitations their blind index, `batch` rows at a
    /// time. Each row changes with its audit event [`CONTACT_RESEAL_ACTION`]. An address whose
    /// tenant key is unusable (crypto-erased), or whose index another account already holds, is
    /// counted in `failed` and left as it is; an outage of the key service stops the pass.
    pub async fn reseal_legacy_contact_data(
        &self,
        actor: &Actor,
        batch: u64,
    ) -> Result<ResealReport, IdentityError> {
        let batch = batch.clamp(1, 10_000);
        let mut total = ResealReport::default();
        for place in ContactColumn::ALL {
            let mut after = None;
            loop {
                let rows = place.legacy_rows(self, after, batch).await?;
                let full = rows.len() as u64 == batch;
                after = rows.last().map(|r| r.key);
                total.add(self.reseal_contact_batch(actor, place, rows).await?);
                if !full {
                    break;
                }
            }
        }
        if total.resealed > 0 {
            tracing::info!(
                sealed = total.resealed,
                "e-mail addresses sealed under their tenants' keys"
            );
        }
        Ok(total)
    }

    async fn reseal_contact_batch(
        &self,
        actor: &Actor,
        place: ContactColumn,
        rows: Vec<LegacyAddress>,
    ) -> Result<ResealReport, IdentityError> {
        let mut report = ResealReport {
            examined: rows.len() as u64,
            ..ResealReport::default()
        };
        // Sealing and indexing first, outside any transaction (both may write key material).
        let mut done = Vec::new();
        for row in rows {
            match self.seal_legacy_address(place, &row).await {
                Ok(sealed) => done.push((row, sealed)),
                Err(e) if is_transient(&e) => {
                    tracing::warn!(tenant = %row.tenant, error = %e, "sealing of stored e-mail addresses paused: the key service is unavailable");
                    return Err(e);
                }
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!(tenant = %row.tenant, column = place.name(), id = %row.key.0, error = %e, "a stored e-mail address could not be sealed; it stays readable");
                }
            }
        }
        if done.is_empty() {
            return Ok(report);
        }
        let tx = begin_platform_write_tx(self.db()).await?;
        for (row, (sealed, index)) in &done {
            if let Some(index) = index {
                if place.index_taken(&tx, row, index).await? {
                    report.failed += 1;
                    tracing::warn!(tenant = %row.tenant, column = place.name(), id = %row.key.0, "a stored e-mail address is another account's too; it stays readable until one of them changes");
                    continue;
                }
            }
            if !place.replace(&tx, row, sealed, index.as_deref()).await? {
                // Changed meanwhile: whatever is there now was written sealed.
                continue;
            }
            let (kind, id) = place.target(row);
            let mut event = AuditEvent::new(
                row.tenant,
                actor.clone(),
                CONTACT_RESEAL_ACTION,
                Outcome::Success,
            )
            .target(Target::new(kind, id))
            .detail("column", place.name())
            .detail("from", "plaintext")
            .detail("to", "key-service");
            if place == ContactColumn::ReviewItems {
                event = event.detail("user_id", row.key.1);
            }
            record(&tx, event).await?;
            report.resealed += 1;
        }
        tx.commit().await?;
        Ok(report)
    }

    /// The sealed address of a legacy row, and its blind index where the table keeps one.
    async fn seal_legacy_address(
        &self,
        place: ContactColumn,
        row: &LegacyAddress,
    ) -> Result<(String, Option<String>), IdentityError> {
        // Normalised like every lookup key; a value that does not parse as an address (nothing
        // Anshin wrote) is sealed as it is.
        let address =
            crate::service::normalise_email(&row.stored).unwrap_or_else(|_| row.stored.clone());
        let sealed = self.seal_email(row.tenant, row.record, &address).await?;
        let index = if place.indexed() {
            Some(self.email_key(address).await?.index)
        } else {
            None
        };
        Ok((sealed, index))
    }

    async fn reseal_batch(
        &self,
        actor: &Actor,
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<(ResealReport, Option<Uuid>, bool), IdentityError> {
        let tx = begin_platform_tx(self.db()).await?;
        let mut q = identity_provider::Entity::find().filter(
            identity_provider::Column::ClientSecretSealed
                .not_like(format!("{SEALED_TEXT_PREFIX}%")),
        );
        if let Some(t) = after {
            q = q.filter(identity_provider::Column::TenantId.gt(t));
        }
        let rows = q
            .order_by_asc(identity_provider::Column::TenantId)
            .limit(limit)
            .all(&tx)
            .await?;
        tx.commit().await?;
        let full = rows.len() as u64 == limit;
        let last = rows.last().map(|r| r.tenant_id);
        let mut report = ResealReport {
            examined: rows.len() as u64,
            ..ResealReport::default()
        };
        let mut done = Vec::new();
        for row in rows {
            let t = row.tenant_id;
            match self.reseal_one(&row).await {
                Ok(sealed) => done.push((row, sealed)),
                Err(e) if is_transient(&e) => {
                    tracing::warn!(tenant = %t, error = %e, "re-encryption of identity provider secrets paused: the key service is unavailable");
                    return Err(e);
                }
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!(tenant = %t, error = %e, "an identity provider's client secret could not be re-encrypted; it stays under the interim key");
                }
            }
        }
        if done.is_empty() {
            return Ok((report, last, full));
        }
        let tx = begin_platform_write_tx(self.db()).await?;
        for (row, sealed) in &done {
            let changed = identity_provider::Entity::update_many()
                .col_expr(
                    identity_provider::Column::ClientSecretSealed,
                    Expr::value(sealed.clone()),
                )
                .filter(identity_provider::Column::TenantId.eq(row.tenant_id))
                .filter(
                    identity_provider::Column::ClientSecretSealed
                        .eq(row.client_secret_sealed.clone()),
                )
                .exec(&tx)
                .await?;
            if changed.rows_affected != 1 {
                // An administrator set a new secret meanwhile: it is already sealed the new way.
                continue;
            }
            record(
                &tx,
                AuditEvent::new(
                    row.tenant_id,
                    actor.clone(),
                    RESEAL_ACTION,
                    Outcome::Success,
                )
                .target(Target::new("identity_provider", row.tenant_id))
                .detail("issuer", &row.issuer)
                .detail("from", "secretbox")
                .detail("to", "key-service"),
            )
            .await?;
            report.resealed += 1;
        }
        tx.commit().await?;
        if report.resealed > 0 {
            tracing::info!(
                resealed = report.resealed,
                "identity provider client secrets re-encrypted under their tenants' keys"
            );
        }
        Ok((report, last, full))
    }

    /// Opens one legacy secret and seals it with the key service.
    async fn reseal_one(&self, row: &identity_provider::Model) -> Result<String, IdentityError> {
        let t = row.tenant_id;
        let ctx = context(t);
        let plain = self
            .open_secret(t, OIDC_SECRET_PURPOSE, &ctx, &row.client_secret_sealed)
            .await?;
        // The key service itself, whatever `seal_secret` is set to do for new secrets.
        self.keys()
            .seal_text(t, OIDC_SECRET_PURPOSE, &ctx, &plain)
            .await
            .map_err(crate::service::key_error)
    }
}

/// The columns that hold addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContactColumn {
    Users,
    Invitations,
    ReviewItems,
    PasswordResets,
}

/// A row whose address is still readable.
struct LegacyAddress {
    tenant: Uuid,
    /// The row's key: its id, or (review id, user id) for review items.
    key: (Uuid, Uuid),
    /// What the sealed address is bound to ([`crate::contact`]).
    record: Uuid,
    stored: String,
}

impl ContactColumn {
    const ALL: [ContactColumn; 4] = [
        ContactColumn::Users,
        ContactColumn::Invitations,
        ContactColumn::ReviewItems,
        ContactColumn::PasswordResets,
    ];

    fn name(self) -> &'static str {
        match self {
            ContactColumn::Users => "users.email",
            ContactColumn::Invitations => "invitations.email",
            ContactColumn::ReviewItems => "account_review_items.email",
            ContactColumn::PasswordResets => "password_resets.verifier_email",
        }
    }

    fn indexed(self) -> bool {
        matches!(self, ContactColumn::Users | ContactColumn::Invitations)
    }

    fn target(self, row: &LegacyAddress) -> (&'static str, Uuid) {
        match self {
            ContactColumn::Users => ("user", row.key.0),
            ContactColumn::Invitations => ("invitation", row.key.0),
            ContactColumn::ReviewItems => ("account_review", row.key.0),
            ContactColumn::PasswordResets => ("password_reset", row.key.0),
        }
    }

    /// Up to `limit` rows still readable, after `after` in key order.
    async fn legacy_rows(
        self,
        s: &IdentityService,
        after: Option<(Uuid, Uuid)>,
        limit: u64,
    ) -> Result<Vec<LegacyAddress>, IdentityError> {
        let readable = format!("{SEALED_TEXT_PREFIX}%");
        let tx = begin_platform_tx(s.db()).await?;
        let rows = match self {
            ContactColumn::Users => {
                let mut q =
                    user::Entity::find().filter(user::Column::EmailSealed.not_like(&readable));
                if let Some((id, _)) = after {
                    q = q.filter(user::Column::Id.gt(id));
                }
                q.order_by_asc(user::Column::Id)
                    .limit(limit)
                    .all(&tx)
                    .await?
                    .into_iter()
                    .map(|u| LegacyAddress {
                        tenant: u.tenant_id,
                        key: (u.id, Uuid::nil()),
                        record: u.id,
                        stored: u.email_sealed,
                    })
                    .collect()
            }
            ContactColumn::Invitations => {
                let mut q = invitation::Entity::find()
                    .filter(invitation::Column::EmailSealed.not_like(&readable));
                if let Some((id, _)) = after {
                    q = q.filter(invitation::Column::Id.gt(id));
                }
                q.order_by_asc(invitation::Column::Id)
                    .limit(limit)
                    .all(&tx)
                    .await?
                    .into_iter()
                    .map(|i| LegacyAddress {
                        tenant: i.tenant_id,
                        key: (i.id, Uuid::nil()),
                        record: i.id,
                        stored: i.email_sealed,
                    })
                    .collect()
            }
            ContactColumn::ReviewItems => {
                let mut q = account_review_item::Entity::find()
                    .filter(account_review_item::Column::EmailSealed.not_like(&readable));
                if let Some((review, user)) = after {
                    q = q.filter(
                        Condition::any()
                            .add(account_review_item::Column::ReviewId.gt(review))
                            .add(
                                Condition::all()
                                    .add(account_review_item::Column::ReviewId.eq(review))
                                    .add(account_review_item::Column::UserId.gt(user)),
                            ),
                    );
                }
                q.order_by_asc(account_review_item::Column::ReviewId)
                    .order_by_asc(account_review_item::Column::UserId)
                    .limit(limit)
                    .all(&tx)
                    .await?
                    .into_iter()
                    .map(|i| LegacyAddress {
                        tenant: i.tenant_id,
                        key: (i.review_id, i.user_id),
                        // The snapshot is bound to the account, like the address it copies.
                        record: i.user_id,
                        stored: i.email_sealed,
                    })
                    .collect()
            }
            ContactColumn::PasswordResets => {
                let mut q = password_reset::Entity::find()
                    .filter(password_reset::Column::VerifierEmailSealed.not_like(&readable));
                if let Some((id, _)) = after {
                    q = q.filter(password_reset::Column::Id.gt(id));
                }
                q.order_by_asc(password_reset::Column::Id)
                    .limit(limit)
                    .all(&tx)
                    .await?
                    .into_iter()
                    .map(|r| LegacyAddress {
                        tenant: r.tenant_id,
                        key: (r.id, Uuid::nil()),
                        record: r.id,
                        stored: r.verifier_email_sealed,
                    })
                    .collect()
            }
        };
        tx.commit().await?;
        Ok(rows)
    }

    /// Whether another row already holds `index` (the unique index would refuse it).
    async fn index_taken(
        self,
        tx: &DatabaseTransaction,
        row: &LegacyAddress,
        index: &str,
    ) -> Result<bool, IdentityError> {
        Ok(match self {
            ContactColumn::Users => user::Entity::find()
                .filter(user::Column::EmailIndex.eq(index))
                .filter(user::Column::Id.ne(row.key.0))
                .one(tx)
                .await?
                .is_some(),
            _ => false,
        })
    }

    /// Replaces the readable address with the sealed one if the row still holds what was read.
    async fn replace(
        self,
        tx: &DatabaseTransaction,
        row: &LegacyAddress,
        sealed: &str,
        index: Option<&str>,
    ) -> Result<bool, IdentityError> {
        let sealed = Expr::value(sealed.to_string());
        let index = Expr::value(index.map(str::to_string));
        let r = match self {
            ContactColumn::Users => {
                user::Entity::update_many()
                    .col_expr(user::Column::EmailSealed, sealed)
                    .col_expr(user::Column::EmailIndex, index)
                    .filter(user::Column::Id.eq(row.key.0))
                    .filter(user::Column::EmailSealed.eq(row.stored.clone()))
                    .exec(tx)
                    .await?
            }
            ContactColumn::Invitations => {
                invitation::Entity::update_many()
                    .col_expr(invitation::Column::EmailSealed, sealed)
                    .col_expr(invitation::Column::EmailIndex, index)
                    .filter(invitation::Column::Id.eq(row.key.0))
                    .filter(invitation::Column::EmailSealed.eq(row.stored.clone()))
                    .exec(tx)
                    .await?
            }
            ContactColumn::ReviewItems => {
                account_review_item::Entity::update_many()
                    .col_expr(account_review_item::Column::EmailSealed, sealed)
                    .filter(account_review_item::Column::ReviewId.eq(row.key.0))
                    .filter(account_review_item::Column::UserId.eq(row.key.1))
                    .filter(account_review_item::Column::EmailSealed.eq(row.stored.clone()))
                    .exec(tx)
                    .await?
            }
            ContactColumn::PasswordResets => {
                password_reset::Entity::update_many()
                    .col_expr(password_reset::Column::VerifierEmailSealed, sealed)
                    .filter(password_reset::Column::Id.eq(row.key.0))
                    .filter(password_reset::Column::VerifierEmailSealed.eq(row.stored.clone()))
                    .exec(tx)
                    .await?
            }
        };
        Ok(r.rows_affected == 1)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_purpose_is_the_one_sign_in_uses() {
        // `oidc.rs` keeps its purpose private; a re-sealed secret must open where it is used.
        let oidc = include_str!("oidc.rs");
        assert!(
            oidc.contains(&format!(
                "const OIDC_SECRET_PURPOSE: &str = \"{}\";",
                super::OIDC_SECRET_PURPOSE
            )),
            "oidc.rs seals client secrets under another purpose than the re-encryption pass"
        );
        assert_eq!(
            super::context(uuid::Uuid::nil()),
            format!("identity-provider:{}", uuid::Uuid::nil())
        );
    }

    #[test]
    fn the_trail_names_the_columns_the_entities_map() {
        use super::ContactColumn as C;
        use crate::entity::{account_review_item, invitation, password_reset, user};
        use sea_orm::{EntityName, Iden};
        let mapped = |table: &str, column: &dyn Iden| format!("{table}.{}", column.to_string());
        assert_eq!(
            C::ALL.map(C::name),
            [
                mapped(user::Entity.table_name(), &user::Column::EmailSealed),
                mapped(
                    invitation::Entity.table_name(),
                    &invitation::Column::EmailSealed
                ),
                mapped(
                    account_review_item::Entity.table_name(),
                    &account_review_item::Column::EmailSealed
                ),
                mapped(
                    password_reset::Entity.table_name(),
                    &password_reset::Column::VerifierEmailSealed
                ),
            ]
        );
        assert_eq!(C::ALL.map(C::indexed), [true, true, false, false]);
    }
}
