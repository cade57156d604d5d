//! Who is acting, in which tenant, with which role. Every tenant-scoped query starts here.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    ProviderAdmin,
    ProviderOperator,
    /// 保守要員: no standing access to institutions; acts in one only under an approved,
    /// time-boxed maintenance grant (guideline 10 ③).
    ProviderMaintainer,
    InstitutionAdmin,
    InstitutionStaff,
    Auditor,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::ProviderAdmin,
        Role::ProviderOperator,
        Role::ProviderMaintainer,
        Role::InstitutionAdmin,
        Role::InstitutionStaff,
        Role::Auditor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::ProviderAdmin => "provider_admin",
            Role::ProviderOperator => "provider_operator",
            Role::ProviderMaintainer => "provider_maintainer",
            Role::InstitutionAdmin => "institution_admin",
            Role::InstitutionStaff => "institution_staff",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether a principal of this role may belong to a tenant of this kind.
    pub fn fits(self, kind: TenantKind) -> bool {
        match self {
            Role::ProviderAdmin | Role::ProviderOperator | Role::ProviderMaintainer => {
                kind == TenantKind::Provider
            }
            Role::InstitutionAdmin | Role::InstitutionStaff => kind == TenantKind::Institution,
            Role::Auditor => true,
        }
    }

    pub fn is_read_only(self) -> bool {
        matches!(
            self,
            Role::Auditor | Role::InstitutionStaff | Role::ProviderMaintainer
        )
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantKind {
    Provider,
    Institution,
}

impl TenantKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantKind::Provider => "provider",
            TenantKind::Institution => "institution",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "provider" => Some(TenantKind::Provider),
            "institution" => Some(TenantKind::Institution),
            _ => None,
        }
    }
}

/// How the principal proved who it is. People signing in (identity issue) add a variant here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Subject {
    ApiToken {
        id: Uuid,
        name: String,
    },
    /// A person signed in with two factors, through a server-side session.
    User {
        id: Uuid,
        session_id: Uuid,
        email: String,
    },
    /// A machine client (OAuth2 client credentials) with an access token from `/oauth2/token`.
    /// `scopes` are the token's; without `write` it may only read.
    Client {
        id: Uuid,
        client_id: String,
        scopes: Vec<String>,
    },
}

impl Subject {
    /// Stable identifier for logs and audit: `token:<id>`.
    pub fn label(&self) -> String {
        match self {
            Subject::ApiToken { id, .. } => format!("token:{id}"),
            Subject::User { id, .. } => format!("user:{id}"),
            Subject::Client { id, .. } => format!("client:{id}"),
        }
    }
}

/// An authenticated caller, bound to exactly one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: Subject,
    pub tenant_id: Uuid,
    pub tenant_kind: TenantKind,
    pub role: Role,
    /// Set when a maintainer acts in an institution under a maintenance grant; every action is
    /// attributable to it.
    pub grant: Option<Uuid>,
}

/// The set of tenants a principal may see, derived only from the principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantScope {
    /// A provider and every institution under it.
    Provider(Uuid),
    /// Exactly one tenant: an institution, or a maintainer's own provider.
    Institution(Uuid),
}

impl Principal {
    /// Whether the credential allows changing data at all (the role decides the rest): a machine
    /// client's access token needs the `write` scope; people and API tokens are not scoped.
    pub fn may_write(&self) -> bool {
        match &self.subject {
            Subject::Client { scopes, .. } => scopes.iter().any(|s| s == "write"),
            Subject::ApiToken { .. } | Subject::User { .. } => true,
        }
    }

    /// Maintainers see only their own tenant (their provider, or the one institution of their
    /// grant); other provider roles see the provider and its institutions.
    pub fn scope(&self) -> TenantScope {
        match (self.tenant_kind, self.role) {
            (TenantKind::Provider, Role::ProviderMaintainer) => {
                TenantScope::Institution(self.tenant_id)
            }
            (TenantKind::Provider, _) => TenantScope::Provider(self.tenant_id),
            (TenantKind::Institution, _) => TenantScope::Institution(self.tenant_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_fit_kinds() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert!(Role::ProviderAdmin.fits(TenantKind::Provider));
        assert!(!Role::ProviderAdmin.fits(TenantKind::Institution));
        assert!(!Role::InstitutionStaff.fits(TenantKind::Provider));
        assert!(Role::Auditor.fits(TenantKind::Institution));
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn clients_write_only_with_the_write_scope() {
        let client = |scopes: &[&str]| Principal {
            subject: Subject::Client {
                id: Uuid::nil(),
                client_id: "anc_x".into(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
            },
            tenant_id: Uuid::nil(),
            tenant_kind: TenantKind::Provider,
            role: Role::ProviderOperator,
            grant: None,
        };
        assert!(!client(&["read"]).may_write());
        assert!(!client(&[]).may_write());
        assert!(client(&["read", "write"]).may_write());
        assert_eq!(
            client(&["read"]).subject.label(),
            format!("client:{}", Uuid::nil())
        );
    }
}
