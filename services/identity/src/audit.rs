//! Identity's audit events (guideline 17): every sign-in, step-up, session end, credential,
//! account, invitation, review, break-glass and maintenance change is recorded through the audit
//! service, in the transaction of the change it describes.

use crate::entity::user;
use crate::error::IdentityError;
pub(crate) use anshin_audit::{Actor, AuditEvent, Outcome, Target};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use uuid::Uuid;

/// The person an account belongs to, as an actor labelled with their address (`email`, opened
/// by the caller: the stored one is sealed).
pub(crate) fn user_actor(u: &user::Model, email: &str) -> Actor {
    Actor::user(u.id, email, u.tenant_id, &u.role)
}

/// Records in the caller's transaction: if the change commits, so does its event.
pub(crate) async fn record(c: &impl ConnectionTrait, e: AuditEvent) -> Result<(), IdentityError> {
    anshin_audit::record(c, &e).await.map_err(audit_err)
}

/// Records an event with no change to commit alongside (a refused sign-in), in its own
/// transaction. A failure is logged; it never turns a refusal into a server error.
pub(crate) async fn record_now(db: &DatabaseConnection, e: AuditEvent) {
    let tx = if e.tenant_id == anshin_audit::PLATFORM_LOG {
        anshin_platform::db::begin_platform_tx(db).await
    } else {
        anshin_platform::db::begin_tenant_tx(db, e.tenant_id).await
    };
    let r = match tx {
        Ok(tx) => match anshin_audit::record(&tx, &e).await {
            Ok(()) => tx.commit().await.map_err(|e| e.to_string()),
            Err(err) => Err(err.to_string()),
        },
        Err(err) => Err(err.to_string()),
    };
    if let Err(err) = r {
        tracing::error!(error = %err, action = %e.action, "could not record an audit event");
    }
}

pub(crate) fn audit_err(e: anshin_audit::AuditError) -> IdentityError {
    match e {
        anshin_audit::AuditError::Db(d) => IdentityError::Db(d),
        other => IdentityError::Setup(format!("audit trail: {other}")),
    }
}

/// The tenant of a sign-in attempt that names no known account: the platform's own log.
pub(crate) const NO_TENANT: Uuid = anshin_audit::PLATFORM_LOG;

/// The account a refused sign-in aimed at, when it can be told: the one named when the
/// ceremony began (the email typed at the sign-in page), else the owner of the credential the
/// browser presented. `None` for unknown addresses (decoy challenges) and foreign credentials.
pub(crate) async fn sign_in_target(
    db: &DatabaseConnection,
    ceremony_id: Option<Uuid>,
    credential_id: Option<&str>,
) -> Result<Option<user::Model>, sea_orm::DbErr> {
    use crate::entity::{ceremony, credential};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let tx = anshin_platform::db::begin_platform_tx(db).await?;
    let mut user_id = None;
    if let Some(id) = ceremony_id {
        user_id = ceremony::Entity::find_by_id(id)
            .one(&tx)
            .await?
            .filter(|c| c.kind != crate::service::CEREMONY_ENROLL)
            .map(|c| c.user_id);
    }
    if user_id.is_none() {
        if let Some(cid) = credential_id.filter(|c| !c.is_empty() && c.len() <= 1024) {
            user_id = credential::Entity::find()
                .filter(credential::Column::CredentialId.eq(cid))
                .one(&tx)
                .await?
                .map(|c| c.user_id);
        }
    }
    let u = match user_id {
        Some(id) => user::Entity::find_by_id(id).one(&tx).await?,
        None => None,
    };
    tx.commit().await?;
    Ok(u)
}

/// A refused sign-in as an event of the tenant it aimed at, so the institution's admin sees it
/// in their own trail. Anonymous actor labelled with the account's (opened) address, the account
/// as target.
pub(crate) fn refused_sign_in_event(
    u: &user::Model,
    email: &str,
    method: &str,
    reason: &str,
) -> AuditEvent {
    AuditEvent::new(
        u.tenant_id,
        Actor::anonymous(Some(email)),
        "auth.sign_in",
        Outcome::Failure,
    )
    .target(Target::new("user", u.id))
    .reason(reason.chars().take(500).collect::<String>())
    .detail("method", method)
}

impl crate::service::IdentityService {
    /// Records a refused WebAuthn sign-in in the trail of the tenant it aimed at, when that can
    /// be told (see [`sign_in_target`]). Refusals with no known tenant stay in the platform's
    /// log only. Never fails the caller: problems are logged.
    pub(crate) async fn record_refused_sign_in(
        &self,
        ceremony_id: Option<Uuid>,
        credential: Option<&webauthn_rs::prelude::PublicKeyCredential>,
        method: &str,
        reason: &str,
    ) {
        use base64::Engine;
        let cred_id = credential
            .map(|c| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c.raw_id.as_ref()));
        match sign_in_target(self.db(), ceremony_id, cred_id.as_deref()).await {
            Ok(Some(u)) => {
                let email = self.user_email_label(&u).await;
                let mut e = refused_sign_in_event(&u, &email, method, reason);
                if let Some(id) = ceremony_id {
                    e = e.detail("ceremony_id", id);
                }
                record_now(self.db(), e).await;
            }
            Ok(None) => {}
            Err(err) => {
                tracing::error!(error = %err, "could not tell which tenant a refused sign-in aimed at")
            }
        }
    }
}
