//! The audit trail (guideline 17, 10 ③④, 11 ①). Services record events in the same database
//! transaction as the change they describe ([`record`]); the sealer appends them to a per-tenant,
//! hash-chained Merkle log (RFC 9162 hashing) and signs checkpoints; exports carry everything a
//! third party needs to verify them offline (`docs/audit-verification.md`).

pub mod alerts;
pub mod assemble;
pub mod canonical;
pub mod checkpoint;
pub mod clock;
pub mod entry;
pub mod event;
pub mod export;
pub mod format;
pub mod ingest;
pub mod merkle;
pub mod migration;
pub mod routes;
pub mod sealer;
pub mod service;
pub mod store;
pub mod trusted_time;
pub mod verify;

pub use checkpoint::{LocalSigner, PublicKeyInfo, Signer};
pub use event::{Actor, ActorKind, AuditEvent, ClockStamp, Outcome, Source, Target, PLATFORM_LOG};
pub use sealer::{SealReport, Sealer};
pub use service::{AuditService, AuditSettings};
pub use store::{record, record_all, record_statements, register_tenant};

use anshin_platform::error::Problem;

/// Every migration of the audit service, in order.
pub fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
    let mut all = migration::migrations();
    all.extend(alerts::migrations());
    all.extend(trusted_time::migrations());
    all.extend(alerts::later_migrations());
    all
}

/// What the application role may do on the audit service's tables.
pub fn grants() -> Vec<anshin_platform::db::TableGrant> {
    let mut all = migration::grants();
    all.extend(alerts::grants());
    all.extend(trusted_time::grants());
    all
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(String),
    #[error("audit setup: {0}")]
    Setup(String),
    #[error("cannot encode an audit event: {0}")]
    Encode(#[from] serde_json::Error),
    /// The stored log does not continue from its last checkpoint: someone changed the tables
    /// outside Anshin. Sealing stops rather than extend a broken log.
    #[error("the audit log of tenant {tenant} is inconsistent: {detail}")]
    Corrupt { tenant: uuid::Uuid, detail: String },
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
}

impl From<AuditError> for Problem {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::NotFound(d) => Problem::not_found(d),
            AuditError::Forbidden(d) => Problem::forbidden(d),
            AuditError::Invalid(d) => Problem::validation(d, Vec::new()),
            AuditError::Db(e) => Problem::from(e),
            other => Problem::internal(&other),
        }
    }
}
