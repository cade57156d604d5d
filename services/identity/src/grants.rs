//! Maintenance access (保守要員, guideline 10 ③): a provider maintainer has no standing access to
//! any institution. To act in one, they request a grant naming the work plan, a time window and a
//! scope; the institution's admin approves it (or, for a declared incident, the grant works at
//! once and is approved after the fact). Requests then carry `x-anshin-grant`, and the principal
//! records the grant so every action under it is attributable.

use crate::entity::maintenance_grant as grant;
use crate::error::IdentityError;
use crate::service::IdentityService;
use anshin_platform::db::{begin_platform_tx, begin_tenant_write_tx, tenant_reader};
use anshin_platform::error::Problem;
use anshin_platform::{Principal, Role, TenantKind};
use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::Condition;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

const MAX_WINDOW_HOURS: i64 = 72;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    pub institution_id: Uuid,
    /// Reference of the work plan (作業計画書) this access serves.
    #[schema(example = "WP-2026-1122-03 レセコン連携の障害調査")]
    pub work_plan_ref: String,
    /// `read` or `operate`.
    pub scope: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// A declared incident: usable at once, approved by the institution afterwards.
    #[serde(default)]
    pub incident: bool,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantDecision {
    pub approve: bool,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GrantView {
    pub id: Uuid,
    pub provider_id: Uuid,
    pub institution_id: Uuid,
    /// Who asked: `user:<id>` (or `token:<id>` for an API token).
    pub maintainer: String,
    /// The maintainer's name and email, when the maintainer is a person.
    pub maintainer_name: Option<String>,
    pub maintainer_email: Option<String>,
    pub work_plan_ref: String,
    pub scope: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub incident: bool,
    pub status: String,
    pub requested_at: DateTime<Utc>,
    pub decided_by: Option<String>,
    /// The name of the person who decided, when a person did.
    pub decided_by_name: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decision_note: Option<String>,
    /// Whether the grant can be used right now.
    pub active: bool,
}

/// The account id in an actor label `user:<uuid>`.
fn user_id_of(label: &str) -> Option<Uuid> {
    label
        .strip_prefix("user:")
        .and_then(|id| Uuid::parse_str(id).ok())
}

fn usable(g: &grant::Model, now: DateTime<Utc>) -> bool {
    matches!(g.status.as_str(), "approved" | "incident") && g.starts_at <= now && now < g.ends_at
}

impl GrantView {
    fn from_model(g: grant::Model) -> Self {
        let active = usable(&g, Utc::now());
        Self {
            id: g.id,
            provider_id: g.tenant_id,
            institution_id: g.institution_id,
            maintainer: g.maintainer,
            maintainer_name: None,
            maintainer_email: None,
            work_plan_ref: g.work_plan_ref,
            scope: g.scope,
            starts_at: g.starts_at,
            ends_at: g.ends_at,
            incident: g.incident,
            status: g.status,
            requested_at: g.requested_at,
            decided_by: g.decided_by,
            decided_by_name: None,
            decided_at: g.decided_at,
            decision_note: g.decision_note,
            active,
        }
    }
}

impl IdentityService {
    /// Names the people behind `user:<id>` labels (the maintainer, who belongs to the provider,
    /// and the deciding admin, who belongs to the institution), so both sides of a grant see who
    /// is who instead of ids. A lookup failure leaves the names out.
    async fn with_names(&self, mut views: Vec<GrantView>) -> Vec<GrantView> {
        let ids: Vec<Uuid> = views
            .iter()
            .flat_map(|v| {
                std::iter::once(user_id_of(&v.maintainer)).chain(std::iter::once(
                    v.decided_by.as_deref().and_then(user_id_of),
                ))
            })
            .flatten()
            .collect();
        if ids.is_empty() {
            return views;
        }
        let found = async {
            let tx = begin_platform_tx(self.db()).await?;
            let users = crate::entity::user::Entity::find()
                .filter(crate::entity::user::Column::Id.is_in(ids))
                .all(&tx)
                .await?;
            tx.commit().await?;
            Ok::<_, sea_orm::DbErr>(users)
        }
        .await;
        let found = match found {
            Ok(us) => us,
            Err(e) => {
                tracing::warn!(error = %e, "could not name the people of maintenance grants");
                return views;
            }
        };
        let mut users: std::collections::HashMap<Uuid, (String, String)> =
            std::collections::HashMap::new();
        for u in found {
            // Like the names, an address that cannot be opened never fails the answer.
            let email = self.user_email_label(&u).await;
            users.insert(u.id, (u.display_name, email));
        }
        for v in &mut views {
            if let Some((name, email)) = user_id_of(&v.maintainer).and_then(|id| users.get(&id)) {
                v.maintainer_name = Some(name.clone());
                v.maintainer_email = Some(email.clone());
            }
            v.decided_by_name = v
                .decided_by
                .as_deref()
                .and_then(user_id_of)
                .and_then(|id| users.get(&id))
                .map(|(name, _)| name.clone());
        }
        views
    }

    pub async fn request_grant(
        &self,
        actor: &Principal,
        r: GrantRequest,
    ) -> Result<GrantView, IdentityError> {
        if actor.role != Role::ProviderMaintainer || actor.grant.is_some() {
            return Err(IdentityError::Forbidden(
                "only provider maintainers request maintenance grants".into(),
            ));
        }
        // The institution must be one of the maintainer's provider's (404 otherwise).
        let inst = anshin_tenancy::TenancyService::new(self.db().clone())
            .admin_find(&r.institution_id.to_string())
            .await
            .map_err(|e| IdentityError::Setup(e.to_string()))?
            .filter(|t| t.kind == TenantKind::Institution && t.parent_id == Some(actor.tenant_id))
            .ok_or_else(|| {
                IdentityError::NotFound(
                    "no institution with this id belongs to your provider".into(),
                )
            })?;
        let plan = r.work_plan_ref.trim();
        if plan.is_empty() || plan.chars().count() > 200 || plan.chars().any(char::is_control) {
            return Err(IdentityError::Invalid(
                "give the work plan reference (1–200 characters)".into(),
            ));
        }
        if !matches!(r.scope.as_str(), "read" | "operate") {
            return Err(IdentityError::Invalid(
                "scope must be read or operate".into(),
            ));
        }
        let now = Utc::now();
        if r.ends_at <= r.starts_at
            || r.ends_at <= now
            || r.ends_at - r.starts_at > Duration::hours(MAX_WINDOW_HOURS)
        {
            return Err(IdentityError::Invalid(format!("the window must end in the future, after it starts, and last at most {MAX_WINDOW_HOURS} hours")));
        }
        let tx = begin_tenant_write_tx(self.db(), actor.tenant_id).await?;
        let g = grant::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(actor.tenant_id),
            institution_id: Set(inst.id),
            maintainer: Set(actor.subject.label()),
            work_plan_ref: Set(plan.to_string()),
            scope: Set(r.scope),
            starts_at: Set(r.starts_at),
            ends_at: Set(r.ends_at),
            incident: Set(r.incident),
            status: Set(if r.incident { "incident" } else { "requested" }.into()),
            requested_at: Set(now),
            decided_by: Set(None),
            decided_at: Set(None),
            decision_note: Set(None),
        }
        .insert(&tx)
        .await?;
        // In the institution's trail, which is where its admin decides and inspectors look.
        crate::audit::record(
            &tx,
            crate::audit::AuditEvent::new(
                inst.id,
                crate::audit::Actor::from_principal(actor),
                "maintenance_grant.request",
                crate::audit::Outcome::Success,
            )
            .target(crate::audit::Target::new("maintenance_grant", g.id))
            .detail("work_plan_ref", &g.work_plan_ref)
            .detail("scope", &g.scope)
            .detail("starts_at", g.starts_at)
            .detail("ends_at", g.ends_at)
            .detail("incident", g.incident),
        )
        .await?;
        tx.commit().await?;
        if r.incident {
            tracing::warn!(grant = %g.id, institution = %inst.id, "maintenance grant opened for a declared incident; awaiting the institution's approval");
        }
        Ok(self.named(GrantView::from_model(g)).await)
    }

    /// Grants the caller can see: a maintainer their own, an institution those opening it, a
    /// provider admin or operator all of their provider's.
    pub async fn list_grants(&self, actor: &Principal) -> Result<Vec<GrantView>, IdentityError> {
        let cond = match (actor.tenant_kind, actor.role) {
            (TenantKind::Provider, Role::ProviderMaintainer) => Condition::all()
                .add(grant::Column::TenantId.eq(actor.tenant_id))
                .add(grant::Column::Maintainer.eq(actor.subject.label())),
            (TenantKind::Provider, _) => {
                Condition::all().add(grant::Column::TenantId.eq(actor.tenant_id))
            }
            (TenantKind::Institution, Role::ProviderMaintainer) => {
                Condition::all().add(grant::Column::Id.eq(actor.grant.unwrap_or_default()))
            }
            (TenantKind::Institution, _) => {
                Condition::all().add(grant::Column::InstitutionId.eq(actor.tenant_id))
            }
        };
        let r = tenant_reader(self.db(), actor.tenant_id).await?;
        let rows = grant::Entity::find()
            .filter(cond)
            .order_by_desc(grant::Column::RequestedAt)
            .all(&r)
            .await?;
        r.finish().await?;
        Ok(self
            .with_names(rows.into_iter().map(GrantView::from_model).collect())
            .await)
    }

    /// The institution's admin approves or rejects a grant (after the fact for incidents).
    pub async fn decide_grant(
        &self,
        actor: &Principal,
        id: Uuid,
        d: GrantDecision,
    ) -> Result<GrantView, IdentityError> {
        let tx = begin_tenant_write_tx(self.db(), actor.tenant_id).await?;
        let g = grant::Entity::find_by_id(id)
            .filter(grant::Column::InstitutionId.eq(actor.tenant_id))
            .one(&tx)
            .await?
            .ok_or_else(|| {
                IdentityError::NotFound(
                    "no maintenance grant with this id concerns your institution".into(),
                )
            })?;
        if actor.role != Role::InstitutionAdmin || actor.grant.is_some() {
            return Err(IdentityError::Forbidden(
                "only the institution's admin decides maintenance grants".into(),
            ));
        }
        if !matches!(g.status.as_str(), "requested" | "incident") {
            return Err(IdentityError::Conflict(format!(
                "this grant was already decided ({})",
                g.status
            )));
        }
        let note = d
            .note
            .map(|n| n.trim().chars().take(1000).collect::<String>());
        let mut am: grant::ActiveModel = g.into();
        am.status = Set(if d.approve { "approved" } else { "rejected" }.into());
        am.decided_by = Set(Some(actor.subject.label()));
        am.decided_at = Set(Some(Utc::now()));
        am.decision_note = Set(note);
        let g = am.update(&tx).await?;
        crate::audit::record(
            &tx,
            crate::audit::AuditEvent::new(
                actor.tenant_id,
                crate::audit::Actor::from_principal(actor),
                if d.approve {
                    "maintenance_grant.approve"
                } else {
                    "maintenance_grant.reject"
                },
                crate::audit::Outcome::Success,
            )
            .target(crate::audit::Target::new("maintenance_grant", g.id))
            .detail("maintainer", &g.maintainer)
            .detail("work_plan_ref", &g.work_plan_ref)
            .detail("after_the_fact", g.incident)
            .detail("note", &g.decision_note),
        )
        .await?;
        tx.commit().await?;
        Ok(self.named(GrantView::from_model(g)).await)
    }

    /// One grant with its people named.
    async fn named(&self, v: GrantView) -> GrantView {
        let fallback = v.clone();
        self.with_names(vec![v]).await.pop().unwrap_or(fallback)
    }

    /// The maintainer, now acting in the grant's institution (read-only roles apply).
    pub async fn apply_grant(&self, p: Principal, grant_id: Uuid) -> Result<Principal, Problem> {
        let refused = || {
            Problem::forbidden(
                "no maintenance grant of yours with this id is approved and open right now",
            )
        };
        if p.role != Role::ProviderMaintainer || p.tenant_kind != TenantKind::Provider {
            return Err(Problem::forbidden(
                "only provider maintainers act under maintenance grants",
            ));
        }
        let tx = begin_platform_tx(self.db()).await.map_err(Problem::from)?;
        let g = grant::Entity::find_by_id(grant_id)
            .one(&tx)
            .await
            .map_err(Problem::from)?;
        tx.commit().await.map_err(Problem::from)?;
        let g = g.ok_or_else(refused)?;
        if g.tenant_id != p.tenant_id || g.maintainer != p.subject.label() {
            return Err(refused());
        }
        if !usable(&g, Utc::now()) {
            // A maintainer's own grant used outside its window or before approval: 10 ③ says
            // refuse it, 17.1 says notice it.
            let now = Utc::now();
            crate::audit::record_now(
                self.db(),
                crate::audit::AuditEvent::new(
                    g.institution_id,
                    crate::audit::Actor::from_principal(&p),
                    "maintenance_grant.access",
                    crate::audit::Outcome::Denied,
                )
                .target(crate::audit::Target::new("maintenance_grant", g.id))
                .reason(format!("grant {} at {}", g.status, now.to_rfc3339()))
                .detail("grant_id", g.id)
                .detail("outside_window", now < g.starts_at || now >= g.ends_at)
                .detail("status", &g.status),
            )
            .await;
            return Err(refused());
        }
        let acting = Principal {
            subject: p.subject,
            tenant_id: g.institution_id,
            tenant_kind: TenantKind::Institution,
            role: Role::ProviderMaintainer,
            grant: Some(g.id),
        };
        // 10 ④: every request under a grant is on record, so the remote-maintenance log can be
        // checked against the work plan.
        crate::audit::record_now(
            self.db(),
            crate::audit::AuditEvent::new(
                g.institution_id,
                crate::audit::Actor::from_principal(&acting),
                "maintenance_grant.access",
                crate::audit::Outcome::Success,
            )
            .target(crate::audit::Target::new("maintenance_grant", g.id))
            .detail("work_plan_ref", &g.work_plan_ref)
            .detail("scope", &g.scope)
            .detail(
                "request",
                anshin_platform::http::current_client().and_then(|c| c.route),
            ),
        )
        .await;
        Ok(acting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_are_found_by_their_labels() {
        let id = Uuid::now_v7();
        assert_eq!(user_id_of(&format!("user:{id}")), Some(id));
        assert_eq!(user_id_of(&format!("token:{id}")), None);
        assert_eq!(user_id_of("user:not-a-uuid"), None);
    }
}
