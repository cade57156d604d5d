//! The role gates identity's routes share. Scope is checked first by each caller (a foreign id is
//! "not found"); these decide what a principal of the tenant may do. Nobody acting under a
//! maintenance grant passes them: a grant opens tenant data, not account administration.

use crate::error::IdentityError;
use anshin_platform::{Principal, Role};

/// The tenant's admins only. `what` completes "the role … may not …".
pub(crate) fn require_admin(p: &Principal, what: &str) -> Result<(), IdentityError> {
    if p.grant.is_none() && matches!(p.role, Role::ProviderAdmin | Role::InstitutionAdmin) {
        Ok(())
    } else {
        Err(IdentityError::Forbidden(format!(
            "the role {} may not {what}",
            p.role
        )))
    }
}

/// The tenant's admins and auditors (read-only views of accounts and their history).
pub(crate) fn require_reader(p: &Principal, what: &str) -> Result<(), IdentityError> {
    if p.grant.is_none()
        && matches!(
            p.role,
            Role::ProviderAdmin | Role::InstitutionAdmin | Role::Auditor
        )
    {
        Ok(())
    } else {
        Err(IdentityError::Forbidden(format!(
            "the role {} may not {what}",
            p.role
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anshin_platform::{Subject, TenantKind};
    use uuid::Uuid;

    fn p(role: Role, grant: bool) -> Principal {
        Principal {
            subject: Subject::ApiToken {
                id: Uuid::nil(),
                name: "t".into(),
            },
            tenant_id: Uuid::nil(),
            tenant_kind: TenantKind::Institution,
            role,
            grant: grant.then(Uuid::nil),
        }
    }

    #[test]
    fn admins_and_readers() {
        assert!(require_admin(&p(Role::InstitutionAdmin, false), "x").is_ok());
        assert!(require_admin(&p(Role::Auditor, false), "x").is_err());
        assert!(require_reader(&p(Role::Auditor, false), "x").is_ok());
        assert!(require_reader(&p(Role::InstitutionStaff, false), "x").is_err());
        let e = require_admin(&p(Role::InstitutionAdmin, true), "manage accounts").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the role institution_admin may not manage accounts"
        );
    }
}
