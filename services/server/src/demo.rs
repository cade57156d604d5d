//! `anshin serve --demo`: demo tenants (created once) and a fresh API token per role.

use anshin_identity::IdentityService;
use anshin_platform::{Role, TenantKind};
use anshin_tenancy::{
    CreateTenant, InstitutionType, ReferencePattern, TenancyError, TenancyService, TokenService,
};
use chrono::Duration;

pub const PROVIDER: &str = "demo-provider";
pub const CLINIC: &str = "demo-clinic";
pub const HOSPITAL: &str = "demo-hospital";

pub const DEMO_ADMIN_EMAIL: &str = "admin@demo-clinic.example.jp";

pub struct DemoToken {
    pub tenant: &'static str,
    pub role: Role,
    pub token: String,
}

pub async fn seed(
    tenancy: &TenancyService,
    tokens: &TokenService,
) -> Result<Vec<DemoToken>, TenancyError> {
    let specs = [
        (
            PROVIDER,
            "デモ医療クラウド株式会社",
            TenantKind::Provider,
            None,
            None,
            None,
        ),
        (
            CLINIC,
            "さくら内科クリニック",
            TenantKind::Institution,
            Some(ReferencePattern::IV),
            Some(InstitutionType::Clinic),
            Some(0),
        ),
        (
            HOSPITAL,
            "みなと総合病院",
            TenantKind::Institution,
            Some(ReferencePattern::II),
            Some(InstitutionType::Hospital),
            Some(199),
        ),
    ];
    for (slug, name, kind, pattern, it, beds) in specs {
        if tenancy.admin_find(slug).await?.is_none() {
            tenancy
                .admin_create(CreateTenant {
                    kind,
                    slug: slug.into(),
                    name: name.into(),
                    parent: (kind == TenantKind::Institution).then(|| PROVIDER.to_string()),
                    reference_pattern: pattern,
                    institution_type: it,
                    bed_count: beds,
                    contract_start: None,
                    contract_end: None,
                })
                .await?;
        }
    }
    let grants = [
        (PROVIDER, Role::ProviderAdmin),
        (PROVIDER, Role::ProviderOperator),
        (PROVIDER, Role::Auditor),
        (CLINIC, Role::InstitutionAdmin),
        (CLINIC, Role::InstitutionStaff),
        (HOSPITAL, Role::InstitutionAdmin),
    ];
    let mut out = Vec::new();
    for (slug, role) in grants {
        let t = tenancy
            .admin_find(slug)
            .await?
            .ok_or_else(|| TenancyError::NotFound(slug.into()))?;
        let name = format!("demo:{role}");
        // Each start hands out new tokens; the previous demo tokens stop working.
        tokens.revoke_named(t.id, &name).await?;
        let issued = tokens.issue(slug, role, &name, Duration::days(30)).await?;
        out.push(DemoToken {
            tenant: slug,
            role,
            token: issued.token.expose().to_string(),
        });
    }
    Ok(out)
}

/// An enrollment link for the demo clinic's administrator, until that person has enrolled.
pub async fn invitation(
    identity: &IdentityService,
    tokens: &TokenService,
    demo: &[DemoToken],
) -> Result<Option<String>, String> {
    let Some(admin) = demo
        .iter()
        .find(|t| t.tenant == CLINIC && t.role == Role::InstitutionAdmin)
    else {
        return Ok(None);
    };
    let principal = tokens
        .authenticate(&admin.token)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the demo token was not accepted")?;
    match identity
        .invite(
            &principal,
            DEMO_ADMIN_EMAIL,
            "山田 太郎（デモ管理者）",
            Role::InstitutionAdmin,
        )
        .await
    {
        Ok(inv) => Ok(inv.enrollment_url),
        Err(anshin_identity::IdentityError::Conflict(_)) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}
