//! The tenancy service's typed API, used by its HTTP routes, the CLI and other services.

use crate::authz::{self, TenantAction};
use crate::entity::tenant;
use crate::model::*;
use crate::TenancyError;
use anshin_audit::{Actor, AuditEvent, Outcome, Target};
use anshin_platform::db::{
    begin_platform_tx, begin_platform_write_tx, begin_tenant_write_tx, is_unique_violation,
    tenant_reader,
};
use anshin_platform::error::FieldError;
use anshin_platform::{Principal, TenantKind, TenantScope};
use chrono::Utc;
use sea_orm::sea_query::Condition;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, Set,
};
use uuid::Uuid;

#[derive(Clone)]
pub struct TenancyService {
    db: DatabaseConnection,
    on_created: Option<std::sync::Arc<dyn TenantCreated>>,
}

/// Told about each tenant after its creation commits (the key service gives it its own KEK).
/// A failure is the listener's to retry: the tenant exists either way.
#[async_trait::async_trait]
pub trait TenantCreated: Send + Sync + 'static {
    async fn created(&self, tenant: &Tenant);
}

/// Filters for listing tenants.
#[derive(Debug, Clone, Default)]
pub struct TenantFilter {
    pub kind: Option<TenantKind>,
    pub status: Option<TenantStatus>,
}

/// The wall-1 filter: the tenants a scope may see.
pub fn scope_condition(scope: TenantScope) -> Condition {
    match scope {
        TenantScope::Provider(p) => Condition::any()
            .add(tenant::Column::Id.eq(p))
            .add(tenant::Column::ParentId.eq(p)),
        TenantScope::Institution(i) => Condition::all().add(tenant::Column::Id.eq(i)),
    }
}

impl TenancyService {
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            on_created: None,
        }
    }

    pub fn with_created_hook(mut self, hook: std::sync::Arc<dyn TenantCreated>) -> Self {
        self.on_created = Some(hook);
        self
    }

    async fn notify_created(&self, t: &Tenant) {
        if let Some(h) = &self.on_created {
            h.created(t).await;
        }
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    pub async fn list(
        &self,
        actor: &Principal,
        filter: &TenantFilter,
    ) -> Result<Vec<Tenant>, TenancyError> {
        authz::check(actor, TenantAction::Read)?;
        let tx = tenant_reader(&self.db, actor.tenant_id).await?;
        let mut q = tenant::Entity::find().filter(scope_condition(actor.scope()));
        if let Some(k) = filter.kind {
            q = q.filter(tenant::Column::Kind.eq(k.as_str()));
        }
        if let Some(s) = filter.status {
            q = q.filter(tenant::Column::Status.eq(s.as_str()));
        }
        let rows = q
            .order_by_asc(tenant::Column::Kind)
            .order_by_asc(tenant::Column::Slug)
            .all(&tx)
            .await?;
        tx.finish().await?;
        Ok(rows.into_iter().map(Tenant::from_model).collect())
    }

    /// A tenant the principal can see; `NotFound` for one it cannot, so existence does not leak.
    pub async fn get(&self, actor: &Principal, id: Uuid) -> Result<Tenant, TenancyError> {
        authz::check(actor, TenantAction::Read)?;
        let tx = tenant_reader(&self.db, actor.tenant_id).await?;
        let row = find_in_scope(&tx, actor.scope(), id).await?;
        tx.finish().await?;
        Ok(Tenant::from_model(row))
    }

    /// Creates a medical institution under the caller's provider.
    pub async fn create(
        &self,
        actor: &Principal,
        req: CreateTenant,
    ) -> Result<Tenant, TenancyError> {
        if req.kind == TenantKind::Provider {
            return Err(TenancyError::Forbidden(
                "providers are created by the platform operator with `anshin tenant create --kind provider`".into(),
            ));
        }
        authz::check(actor, TenantAction::CreateInstitution)?;
        let tx = begin_tenant_write_tx(&self.db, actor.tenant_id).await?;
        let parent = match req.parent.as_deref() {
            None => find_in_scope(&tx, actor.scope(), actor.tenant_id).await?,
            Some(p) => {
                let found = find_ref_in_scope(&tx, actor.scope(), p).await?;
                if found.id != actor.tenant_id {
                    // Another institution of the same provider is visible but cannot be a parent.
                    return Err(TenancyError::validation(
                        "parent",
                        "the parent must be your own provider",
                    ));
                }
                found
            }
        };
        let t = insert(&tx, req, Some(parent)).await?;
        audit_tenant(
            &tx,
            Actor::from_principal(actor),
            "tenant.create",
            &t,
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(tenant = %t.id, slug = %t.slug, "institution created");
        self.notify_created(&t).await;
        Ok(t)
    }

    pub async fn update(
        &self,
        actor: &Principal,
        id: Uuid,
        patch: UpdateTenant,
    ) -> Result<Tenant, TenancyError> {
        let tx = begin_tenant_write_tx(&self.db, actor.tenant_id).await?;
        let row = find_in_scope(&tx, actor.scope(), id).await?;
        let kind = TenantKind::parse(&row.kind).unwrap_or(TenantKind::Institution);
        authz::check(actor, authz::update_action(kind, patch.is_self_service()))?;
        let status_changes = patch.status.is_some();
        let before = row.status.clone();
        let changed = patch.changed_fields();
        let t = apply_update(&tx, row, patch).await?;
        audit_tenant(
            &tx,
            Actor::from_principal(actor),
            "tenant.update",
            &t,
            update_details(&before, &t, &changed),
        )
        .await?;
        tx.commit().await?;
        if status_changes {
            crate::tokens::forget_cached_authentications();
        }
        tracing::info!(tenant = %t.id, "tenant updated");
        Ok(t)
    }

    // ---- Platform operations (CLI only) -------------------------------------------------

    /// Creates a provider, or an institution under the provider named by `parent`.
    pub async fn admin_create(&self, req: CreateTenant) -> Result<Tenant, TenancyError> {
        let tx = begin_platform_write_tx(&self.db).await?;
        let parent = match (&req.kind, req.parent.as_deref()) {
            (TenantKind::Provider, None) => None,
            (TenantKind::Provider, Some(_)) => {
                return Err(TenancyError::validation(
                    "parent",
                    "a provider has no parent",
                ));
            }
            (TenantKind::Institution, None) => {
                return Err(TenancyError::validation(
                    "parent",
                    "an institution needs --parent, the slug of its provider",
                ));
            }
            (TenantKind::Institution, Some(p)) => {
                Some(find_ref(&tx, p).await?.ok_or_else(|| {
                    TenancyError::NotFound(format!("no provider with slug or id '{p}'"))
                })?)
            }
        };
        let t = insert(&tx, req, parent).await?;
        audit_tenant(
            &tx,
            Actor::operator(),
            "tenant.create",
            &t,
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        self.notify_created(&t).await;
        Ok(t)
    }

    pub async fn admin_list(&self) -> Result<Vec<Tenant>, TenancyError> {
        let tx = begin_platform_tx(&self.db).await?;
        let rows = tenant::Entity::find()
            .order_by_asc(tenant::Column::Kind)
            .order_by_asc(tenant::Column::Slug)
            .all(&tx)
            .await?;
        tx.commit().await?;
        Ok(rows.into_iter().map(Tenant::from_model).collect())
    }

    pub async fn admin_find(&self, slug_or_id: &str) -> Result<Option<Tenant>, TenancyError> {
        let tx = begin_platform_tx(&self.db).await?;
        let row = find_ref(&tx, slug_or_id).await?;
        tx.commit().await?;
        Ok(row.map(Tenant::from_model))
    }

    pub async fn admin_update(
        &self,
        slug_or_id: &str,
        patch: UpdateTenant,
    ) -> Result<Tenant, TenancyError> {
        let tx = begin_platform_write_tx(&self.db).await?;
        let row = find_ref(&tx, slug_or_id).await?.ok_or_else(|| {
            TenancyError::NotFound(format!("no tenant with slug or id '{slug_or_id}'"))
        })?;
        let status_changes = patch.status.is_some();
        let before = row.status.clone();
        let changed = patch.changed_fields();
        let t = apply_update(&tx, row, patch).await?;
        audit_tenant(
            &tx,
            Actor::operator(),
            "tenant.update",
            &t,
            update_details(&before, &t, &changed),
        )
        .await?;
        tx.commit().await?;
        if status_changes {
            crate::tokens::forget_cached_authentications();
        }
        Ok(t)
    }
}

async fn find_in_scope(
    c: &impl ConnectionTrait,
    scope: TenantScope,
    id: Uuid,
) -> Result<tenant::Model, TenancyError> {
    tenant::Entity::find_by_id(id)
        .filter(scope_condition(scope))
        .one(c)
        .await?
        .ok_or_else(|| TenancyError::NotFound("no tenant with this id is visible to you".into()))
}

async fn find_ref_in_scope(
    c: &impl ConnectionTrait,
    scope: TenantScope,
    r: &str,
) -> Result<tenant::Model, TenancyError> {
    let q = tenant::Entity::find().filter(scope_condition(scope));
    let q = match Uuid::parse_str(r) {
        Ok(id) => q.filter(tenant::Column::Id.eq(id)),
        Err(_) => q.filter(tenant::Column::Slug.eq(r)),
    };
    q.one(c)
        .await?
        .ok_or_else(|| TenancyError::NotFound(format!("no tenant '{r}' is visible to you")))
}

async fn find_ref(
    c: &impl ConnectionTrait,
    r: &str,
) -> Result<Option<tenant::Model>, TenancyError> {
    let q = match Uuid::parse_str(r) {
        Ok(id) => tenant::Entity::find_by_id(id),
        Err(_) => tenant::Entity::find().filter(tenant::Column::Slug.eq(r)),
    };
    Ok(q.one(c).await?)
}

/// Records a tenant change in the tenant's own trail (its provider reads it too).
async fn audit_tenant(
    c: &impl ConnectionTrait,
    actor: Actor,
    action: &str,
    t: &Tenant,
    details: serde_json::Value,
) -> Result<(), TenancyError> {
    let mut d = details;
    if let serde_json::Value::Object(m) = &mut d {
        m.insert("slug".into(), t.slug.clone().into());
        m.insert("kind".into(), t.kind.as_str().into());
    }
    anshin_audit::record(
        c,
        &AuditEvent::new(t.id, actor, action, Outcome::Success)
            .target(Target::new("tenant", t.id))
            .details(d),
    )
    .await?;
    Ok(())
}

fn update_details(before: &str, t: &Tenant, changed: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "changed": changed,
        "status_before": before,
        "status": t.status.as_str(),
    })
}

async fn insert(
    c: &impl ConnectionTrait,
    req: CreateTenant,
    parent: Option<tenant::Model>,
) -> Result<Tenant, TenancyError> {
    let mut errors: Vec<FieldError> = Vec::new();
    validate_slug(&req.slug, &mut errors);
    let name = validate_name(&req.name, &mut errors);
    let (institution_type, pattern) = match req.kind {
        TenantKind::Provider => {
            if req.reference_pattern.is_some()
                || req.institution_type.is_some()
                || req.bed_count.is_some()
            {
                errors.push(FieldError {
                    field: "reference_pattern".into(),
                    message:
                        "reference pattern, institution type and beds apply only to institutions"
                            .into(),
                });
            }
            (None, None)
        }
        TenantKind::Institution => {
            let it = req.institution_type.unwrap_or(match req.bed_count {
                Some(b) if b >= 20 => InstitutionType::Hospital,
                _ => InstitutionType::Clinic,
            });
            if req.reference_pattern.is_none() {
                errors.push(FieldError {
                    field: "reference_pattern".into(),
                    message: "give the reference pattern, II (with IT staff) or IV (without)"
                        .into(),
                });
            }
            validate_institution(
                it,
                req.bed_count,
                req.contract_start,
                req.contract_end,
                &mut errors,
            );
            (Some(it), req.reference_pattern)
        }
    };
    if !errors.is_empty() {
        return Err(TenancyError::Validation(errors));
    }
    if let Some(p) = &parent {
        if p.kind != TenantKind::Provider.as_str() {
            return Err(TenancyError::validation(
                "parent",
                "the parent must be a provider",
            ));
        }
        if p.status != TenantStatus::Active.as_str() {
            return Err(TenancyError::Conflict(format!(
                "the provider '{}' is {} and cannot take new institutions",
                p.slug, p.status
            )));
        }
    }
    let now = Utc::now();
    let model = tenant::ActiveModel {
        id: Set(Uuid::now_v7()),
        kind: Set(req.kind.as_str().into()),
        slug: Set(req.slug.clone()),
        name: Set(name),
        parent_id: Set(parent.map(|p| p.id)),
        institution_type: Set(institution_type.map(|t| t.as_str().into())),
        reference_pattern: Set(pattern.map(|p| p.as_str().into())),
        bed_count: Set(req.bed_count),
        contract_start: Set(req.contract_start),
        contract_end: Set(req.contract_end),
        status: Set(TenantStatus::Active.as_str().into()),
        created_at: Set(now),
        updated_at: Set(now),
    };
    match model.insert(c).await {
        Ok(m) => {
            // The audit service keeps its own tenant → provider map for provider-scoped reads.
            anshin_audit::register_tenant(c, m.id, m.parent_id.unwrap_or(m.id)).await?;
            Ok(Tenant::from_model(m))
        }
        Err(e) if is_unique_violation(&e) => Err(TenancyError::Conflict(format!(
            "the slug '{}' is already taken",
            req.slug
        ))),
        Err(e) => Err(e.into()),
    }
}

async fn apply_update(
    c: &impl ConnectionTrait,
    row: tenant::Model,
    patch: UpdateTenant,
) -> Result<Tenant, TenancyError> {
    if patch.is_empty() {
        return Err(TenancyError::validation(
            "body",
            "name at least one field to change",
        ));
    }
    let current = Tenant::from_model(row.clone());
    let mut errors = Vec::new();
    let name = patch.name.as_deref().map(|n| validate_name(n, &mut errors));
    if current.kind == TenantKind::Provider
        && (patch.reference_pattern.is_some()
            || patch.institution_type.is_some()
            || matches!(patch.bed_count, Some(Some(_))))
    {
        errors.push(FieldError {
            field: "reference_pattern".into(),
            message: "reference pattern, institution type and beds apply only to institutions"
                .into(),
        });
    }
    if let Some(next) = patch.status {
        if !current.status.can_become(next) {
            return Err(TenancyError::Conflict(if next == TenantStatus::Destroyed {
                "a tenant becomes destroyed only through the destruction workflow".into()
            } else {
                format!(
                    "a {} tenant cannot become {}",
                    current.status.as_str(),
                    next.as_str()
                )
            }));
        }
    }
    let it = patch.institution_type.or(current.institution_type);
    let beds = patch.bed_count.unwrap_or(current.bed_count);
    let start = patch.contract_start.unwrap_or(current.contract_start);
    let end = patch.contract_end.unwrap_or(current.contract_end);
    if let Some(it) = it {
        validate_institution(it, beds, start, end, &mut errors);
    }
    if !errors.is_empty() {
        return Err(TenancyError::Validation(errors));
    }
    let mut am: tenant::ActiveModel = row.into();
    if let Some(n) = name {
        am.name = Set(n);
    }
    if let Some(s) = patch.status {
        am.status = Set(s.as_str().into());
    }
    if let Some(p) = patch.reference_pattern {
        am.reference_pattern = Set(Some(p.as_str().into()));
    }
    if let Some(t) = patch.institution_type {
        am.institution_type = Set(Some(t.as_str().into()));
    }
    if let Some(b) = patch.bed_count {
        am.bed_count = Set(b);
    }
    if let Some(s) = patch.contract_start {
        am.contract_start = Set(s);
    }
    if let Some(e) = patch.contract_end {
        am.contract_end = Set(e);
    }
    am.updated_at = Set(Utc::now());
    Ok(Tenant::from_model(am.update(c).await?))
}
