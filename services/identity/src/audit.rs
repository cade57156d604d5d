//! Identity's audit events (guideline 17): every sign-in, step-up, session end, credential,
//! account, invitation, review, break-glass and maintenance change is recorded through the audit
//! service, in the transaction of the change it describes.

use crate::entity::user;
use crate::error::IdentityError;
pub(crate) use anshin_audit::{Actor, AuditEvent, Outcome, Target};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use uuid::Uuid;

/// The person an account belongs to, as an actor.
pub(crate) fn user_actor(u: &user::Model) -> Actor {
    Actor::user(u.id, &u.email, u.tenant_id, &u.role)
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
