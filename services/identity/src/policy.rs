//! Per-tenant identity policy (guideline 14 ⑦, 12 ⑥): how long an idle session lives, after how
//! many days without a sign-in an account counts as stale, and how long a stale account stays
//! flagged before it is disabled. A tenant without a stored policy gets the defaults: the
//! configured idle timeout (`identity.session_idle_timeout_secs`, 15 minutes unless changed),
//! stale after 90 days, disabled 30 days after being flagged.

use crate::access::require_admin;
use crate::entity::identity_policy as policy;
use crate::error::IdentityError;
use crate::service::IdentityService;
use actix_web::{web, HttpResponse};
use anshin_platform::db::{begin_tenant_write_tx, tenant_reader};
use anshin_platform::error::{Problem, ProblemBody};
use anshin_platform::http::Authenticated;
use anshin_platform::{Principal, Role};
use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, Set};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

pub const IDLE_TIMEOUT_SECS: std::ops::RangeInclusive<i64> = 60..=3600;
pub const STALE_AFTER_DAYS: std::ops::RangeInclusive<i64> = 7..=730;
pub const DISABLE_AFTER_DAYS: std::ops::RangeInclusive<i64> = 1..=365;
pub const DEFAULT_STALE_AFTER_DAYS: i64 = 90;
pub const DEFAULT_DISABLE_AFTER_DAYS: i64 = 30;
/// The idle timeout when the configured one does not fit an `i64` (15 minutes).
const FALLBACK_IDLE_TIMEOUT_SECS: i64 = 15 * 60;

/// The values of a tenant's identity policy (the body of `PUT /api/v1/identity-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// Seconds without a request after which a session ends (60–3600). Applies to sessions
    /// created after the change.
    #[schema(example = 900, minimum = 60, maximum = 3600)]
    pub idle_timeout_secs: i64,
    /// Days without a sign-in after which an active account is flagged as stale (7–730).
    #[schema(example = 90, minimum = 7, maximum = 730)]
    pub stale_after_days: i64,
    /// Days a stale account stays flagged before it is disabled (1–365).
    #[schema(example = 30, minimum = 1, maximum = 365)]
    pub disable_after_days: i64,
}

/// The policy in force for the caller's tenant.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PolicyView {
    pub tenant_id: Uuid,
    pub idle_timeout_secs: i64,
    pub stale_after_days: i64,
    pub disable_after_days: i64,
    /// True when the tenant never set a policy and the defaults apply.
    pub default: bool,
    pub updated_by: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Checks every value against its range; the message names each one that is out of range.
pub fn validate(s: &PolicySettings) -> Result<(), IdentityError> {
    let mut wrong = Vec::new();
    for (name, value, range, unit) in [
        (
            "idle_timeout_secs",
            s.idle_timeout_secs,
            &IDLE_TIMEOUT_SECS,
            "seconds",
        ),
        (
            "stale_after_days",
            s.stale_after_days,
            &STALE_AFTER_DAYS,
            "days",
        ),
        (
            "disable_after_days",
            s.disable_after_days,
            &DISABLE_AFTER_DAYS,
            "days",
        ),
    ] {
        if !range.contains(&value) {
            wrong.push(format!(
                "{name} must be {}–{} {unit} (got {value})",
                range.start(),
                range.end()
            ));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(IdentityError::Invalid(wrong.join("; ")))
    }
}

/// The defaults, with the configured idle timeout. The operator's configuration is taken as
/// it is; the ranges bind only what a tenant sets.
pub fn defaults(configured_idle_secs: u64) -> PolicySettings {
    let idle = i64::try_from(configured_idle_secs).unwrap_or(FALLBACK_IDLE_TIMEOUT_SECS);
    PolicySettings {
        idle_timeout_secs: idle,
        stale_after_days: DEFAULT_STALE_AFTER_DAYS,
        disable_after_days: DEFAULT_DISABLE_AFTER_DAYS,
    }
}

fn settings_of(m: &policy::Model) -> PolicySettings {
    PolicySettings {
        idle_timeout_secs: m.idle_timeout_secs,
        stale_after_days: m.stale_after_days,
        disable_after_days: m.disable_after_days,
    }
}

/// The stored policy of a tenant, if any, read through `c` (a tenant or platform transaction).
pub async fn stored(
    c: &impl ConnectionTrait,
    tenant_id: Uuid,
) -> Result<Option<PolicySettings>, IdentityError> {
    Ok(policy::Entity::find_by_id(tenant_id)
        .one(c)
        .await?
        .as_ref()
        .map(settings_of))
}

fn view(tenant_id: Uuid, m: Option<policy::Model>, defaults: PolicySettings) -> PolicyView {
    match m {
        Some(m) => PolicyView {
            tenant_id,
            idle_timeout_secs: m.idle_timeout_secs,
            stale_after_days: m.stale_after_days,
            disable_after_days: m.disable_after_days,
            default: false,
            updated_by: Some(m.updated_by),
            updated_at: Some(m.updated_at),
        },
        None => PolicyView {
            tenant_id,
            idle_timeout_secs: defaults.idle_timeout_secs,
            stale_after_days: defaults.stale_after_days,
            disable_after_days: defaults.disable_after_days,
            default: true,
            updated_by: None,
            updated_at: None,
        },
    }
}

impl IdentityService {
    /// The policy defaults of this deployment (idle timeout from the configuration).
    pub fn policy_defaults(&self) -> PolicySettings {
        defaults(self.config().session_idle_timeout_secs)
    }

    /// The idle timeout, in seconds, for a new session of a person of `tenant_id`: the tenant's
    /// policy, or the configured default. Reads through `c`, so it can run inside the
    /// transaction that creates the session.
    pub async fn idle_timeout_secs(
        &self,
        c: &impl ConnectionTrait,
        tenant_id: Uuid,
    ) -> Result<i64, IdentityError> {
        Ok(stored(c, tenant_id)
            .await?
            .unwrap_or_else(|| self.policy_defaults())
            .idle_timeout_secs)
    }

    /// The policy of the caller's tenant (admins and auditors).
    pub async fn identity_policy(&self, actor: &Principal) -> Result<PolicyView, IdentityError> {
        if !matches!(
            actor.role,
            Role::ProviderAdmin | Role::InstitutionAdmin | Role::Auditor
        ) || actor.grant.is_some()
        {
            return Err(IdentityError::Forbidden(format!(
                "the role {} may not read the identity policy",
                actor.role
            )));
        }
        let r = tenant_reader(self.db(), actor.tenant_id).await?;
        let m = policy::Entity::find_by_id(actor.tenant_id).one(&r).await?;
        r.finish().await?;
        Ok(view(actor.tenant_id, m, self.policy_defaults()))
    }

    /// Sets the policy of the caller's own tenant (its admins; a provider admin sets the
    /// provider's, each institution sets its own), after a fresh passkey confirmation: it
    /// decides how long sessions live and when accounts are disabled.
    pub async fn set_identity_policy(
        &self,
        actor: &Principal,
        s: PolicySettings,
    ) -> Result<PolicyView, IdentityError> {
        require_admin(actor, "change the identity policy")?;
        validate(&s)?;
        self.require_recent_step_up(
            actor,
            chrono::Duration::minutes(crate::credentials::STEP_UP_WINDOW_MINUTES),
        )
        .await?;
        let now = Utc::now();
        let tx = begin_tenant_write_tx(self.db(), actor.tenant_id).await?;
        let existing = policy::Entity::find_by_id(actor.tenant_id).one(&tx).await?;
        let am = policy::ActiveModel {
            tenant_id: Set(actor.tenant_id),
            idle_timeout_secs: Set(s.idle_timeout_secs),
            stale_after_days: Set(s.stale_after_days),
            disable_after_days: Set(s.disable_after_days),
            updated_by: Set(actor.subject.label()),
            updated_at: Set(now),
        };
        let m = match existing {
            Some(_) => am.update(&tx).await?,
            None => am.insert(&tx).await?,
        };
        crate::audit::record(
            &tx,
            crate::audit::AuditEvent::new(
                actor.tenant_id,
                crate::audit::Actor::from_principal(actor),
                "identity_policy.update",
                crate::audit::Outcome::Success,
            )
            .target(crate::audit::Target::new("tenant", actor.tenant_id))
            .detail("idle_timeout_secs", s.idle_timeout_secs)
            .detail("stale_after_days", s.stale_after_days)
            .detail("disable_after_days", s.disable_after_days),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(tenant = %actor.tenant_id, idle_timeout_secs = s.idle_timeout_secs,
            stale_after_days = s.stale_after_days, disable_after_days = s.disable_after_days,
            "identity policy changed");
        Ok(view(actor.tenant_id, Some(m), self.policy_defaults()))
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/api/v1/identity-policy",
        web::get().to(get_identity_policy),
    )
    .route(
        "/api/v1/identity-policy",
        web::put().to(put_identity_policy),
    );
}

/// The identity policy of the caller's tenant: idle timeout, when accounts count as stale and
/// when stale accounts are disabled (admins and auditors; the defaults when none was set).
#[utoipa::path(get, path = "/api/v1/identity-policy", tag = "identity",
    responses((status = 200, body = PolicyView), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody)), security(("bearer" = []), ("session" = [])))]
pub async fn get_identity_policy(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
) -> Result<web::Json<PolicyView>, Problem> {
    Ok(web::Json(svc.identity_policy(&p).await?))
}

/// Sets the identity policy of the caller's own tenant (its admins, after a fresh passkey
/// step-up: 403 `step-up-required` otherwise). Out-of-range values are a 422 naming each one.
#[utoipa::path(put, path = "/api/v1/identity-policy", tag = "identity", request_body = PolicySettings,
    responses((status = 200, body = PolicyView), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 422, body = ProblemBody)), security(("bearer" = []), ("session" = [])))]
pub async fn put_identity_policy(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    body: web::Json<PolicySettings>,
) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Ok().json(svc.set_identity_policy(&p, body.into_inner()).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(idle: i64, stale: i64, disable: i64) -> PolicySettings {
        PolicySettings {
            idle_timeout_secs: idle,
            stale_after_days: stale,
            disable_after_days: disable,
        }
    }

    #[test]
    fn bounds_are_inclusive() {
        assert!(validate(&s(60, 7, 1)).is_ok());
        assert!(validate(&s(3600, 730, 365)).is_ok());
        assert!(validate(&s(900, 90, 30)).is_ok());
    }

    #[test]
    fn each_out_of_range_value_is_named() {
        for (bad, field) in [
            (s(59, 90, 30), "idle_timeout_secs"),
            (s(3601, 90, 30), "idle_timeout_secs"),
            (s(900, 6, 30), "stale_after_days"),
            (s(900, 731, 30), "stale_after_days"),
            (s(900, 90, 0), "disable_after_days"),
            (s(900, 90, 366), "disable_after_days"),
            (s(-1, 90, 30), "idle_timeout_secs"),
        ] {
            match validate(&bad) {
                Err(IdentityError::Invalid(m)) => {
                    assert!(m.contains(field), "{m}");
                    assert_eq!(m.matches("must be").count(), 1, "{m}");
                }
                other => panic!("{bad:?} was not refused: {other:?}"),
            }
        }
        match validate(&s(0, 0, 0)) {
            Err(IdentityError::Invalid(m)) => assert_eq!(m.matches("must be").count(), 3, "{m}"),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn defaults_take_the_configured_idle_timeout() {
        assert_eq!(defaults(900), s(900, 90, 30));
        assert_eq!(defaults(600).idle_timeout_secs, 600);
        assert_eq!(
            defaults(30).idle_timeout_secs,
            30,
            "the operator's choice stands"
        );
        assert_eq!(defaults(u64::MAX).idle_timeout_secs, 900);
    }
}
