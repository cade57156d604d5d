//! Which role may do what to tenants. Scope (which tenants a principal can see at all) is decided
//! by the query filters and RLS; this decides what it may do with the ones it sees.

use anshin_platform::{Principal, Role, TenantKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantAction {
    Read,
    CreateInstitution,
    /// Change name or bed count of an institution (facts it states about itself).
    UpdateInstitutionProfile,
    /// Change lifecycle, reference pattern, type or contract of an institution.
    ManageInstitution,
    /// Rename the provider itself.
    UpdateProvider,
}

pub fn allowed(role: Role, action: TenantAction) -> bool {
    use Role::*;
    use TenantAction::*;
    match action {
        Read => true,
        CreateInstitution | ManageInstitution => matches!(role, ProviderAdmin | ProviderOperator),
        UpdateInstitutionProfile => {
            matches!(role, ProviderAdmin | ProviderOperator | InstitutionAdmin)
        }
        UpdateProvider => role == ProviderAdmin,
    }
}

/// The action a change to a tenant of `target_kind` amounts to.
pub fn update_action(target_kind: TenantKind, self_service_only: bool) -> TenantAction {
    match (target_kind, self_service_only) {
        (TenantKind::Provider, _) => TenantAction::UpdateProvider,
        (TenantKind::Institution, true) => TenantAction::UpdateInstitutionProfile,
        (TenantKind::Institution, false) => TenantAction::ManageInstitution,
    }
}

pub fn check(p: &Principal, action: TenantAction) -> Result<(), crate::TenancyError> {
    if allowed(p.role, action) {
        Ok(())
    } else {
        Err(crate::TenancyError::Forbidden(format!(
            "the role {} may not {}",
            p.role,
            describe(action)
        )))
    }
}

fn describe(a: TenantAction) -> &'static str {
    match a {
        TenantAction::Read => "read tenants",
        TenantAction::CreateInstitution => "create medical institutions",
        TenantAction::UpdateInstitutionProfile => "change this institution's name or beds",
        TenantAction::ManageInstitution => {
            "change an institution's status, reference pattern, type or contract"
        }
        TenantAction::UpdateProvider => "change the provider's details",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented matrix (README "Roles"): one row per role, one column per action.
    #[test]
    fn matrix() {
        use TenantAction::*;
        let actions = [
            Read,
            CreateInstitution,
            UpdateInstitutionProfile,
            ManageInstitution,
            UpdateProvider,
        ];
        let expect: [(Role, [bool; 5]); 6] = [
            (Role::ProviderAdmin, [true, true, true, true, true]),
            (Role::ProviderOperator, [true, true, true, true, false]),
            (Role::ProviderMaintainer, [true, false, false, false, false]),
            (Role::InstitutionAdmin, [true, false, true, false, false]),
            (Role::InstitutionStaff, [true, false, false, false, false]),
            (Role::Auditor, [true, false, false, false, false]),
        ];
        for (role, row) in expect {
            for (a, want) in actions.iter().zip(row) {
                assert_eq!(allowed(role, *a), want, "{role} {a:?}");
            }
        }
    }
}
