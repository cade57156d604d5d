//! Tenancy: providers (事業者) and their medical institutions (医療機関), the lifecycle of each,
//! API tokens for machine clients, and the tenant API.

pub mod authz;
pub mod entity;
pub mod jobs;
pub mod migration;
pub mod model;
pub mod routes;
pub mod service;
pub mod tokens;

pub use migration::{grants, migrations};
pub use model::{
    CreateTenant, InstitutionType, ReferencePattern, Tenant, TenantStatus, UpdateTenant,
};
pub use service::{TenancyService, TenantCreated, TenantFilter};
pub use tokens::{IssuedToken, TokenInfo, TokenService};

use anshin_platform::error::{FieldError, Problem};

#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{}", .0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
    Validation(Vec<FieldError>),
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error("audit trail: {0}")]
    Audit(#[from] anshin_audit::AuditError),
}

impl TenancyError {
    pub fn validation(field: &str, message: &str) -> Self {
        TenancyError::Validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }
}

impl From<TenancyError> for Problem {
    fn from(e: TenancyError) -> Self {
        match e {
            TenancyError::NotFound(d) => Problem::not_found(d),
            TenancyError::Forbidden(d) => Problem::forbidden(d),
            TenancyError::Conflict(d) => Problem::conflict(d),
            TenancyError::Validation(errs) => {
                let detail = errs
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                Problem::validation(detail, errs)
            }
            TenancyError::Db(e) => Problem::internal(&e),
            TenancyError::Audit(e) => Problem::from(e),
        }
    }
}
