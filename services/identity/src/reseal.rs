//! Re-encryption of identity providers' client secrets stored before the key service: values
//! still under the interim secret box (`identity-secrets.key`) are opened and sealed again under
//! the tenant's KEK, so a KEK rotation re-wraps them and a crypto-erase makes them unreadable.
//!
//! In batches: a short read, then the sealing (outside any transaction: the key service writes
//! data keys in its own), then one write transaction in which each row is updated only if it
//! still holds the value that was read (an administrator's change meanwhile wins), together with
//! its audit event `identity_provider.client_secret.reseal`. Idempotent and resumable: a value
//! sealed by the key service is never selected again.

use crate::audit::{record, Actor, AuditEvent, Outcome, Target};
use crate::entity::identity_provider;
use crate::error::IdentityError;
use crate::service::IdentityService;
use anshin_platform::db::{begin_platform_tx, begin_platform_write_tx};
use anshin_platform::sealer::{is_sealed_text, ResealReport, SEALED_TEXT_PREFIX};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

/// The key-service purpose of identity providers' client secrets (as `oidc.rs` seals and opens
/// them; the tests check both agree by opening a re-sealed secret the way sign-in does).
const OIDC_SECRET_PURPOSE: &str = "identity.oidc-client-secret";

/// The audit action of one re-sealed client secret.
pub const RESEAL_ACTION: &str = "identity_provider.client_secret.reseal";

fn context(tenant: Uuid) -> String {
    format!("identity-provider:{tenant}")
}

/// A transient failure stops the pass; anything else is this row's problem.
fn is_transient(e: &IdentityError) -> bool {
    matches!(e, IdentityError::Upstream(_) | IdentityError::Db(_))
}

impl IdentityService {
    /// Re-seals every identity provider client secret still under the interim secret box,
    /// `batch` rows at a time. Needs the key service ([`Self::with_keys`]). Secrets that cannot be
    /// moved (unreadable with the secret box's key, or the tenant's key is unusable — e.g.
    /// crypto-erased) are counted in `failed` and left as they are; an outage of the key service
    /// stops the pass with an error (what was done stays done).
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
                _ => return Ok(total),
            }
        }
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
                Ok(sealed) if is_sealed_text(&sealed) => done.push((row, sealed)),
                Ok(_) => {
                    // Without the key service, `seal_secret` falls back to the secret box.
                    return Err(IdentityError::Setup(
                        "re-encrypting client secrets needs the key service".into(),
                    ));
                }
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
        self.seal_secret(t, OIDC_SECRET_PURPOSE, &ctx, &plain).await
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
}
