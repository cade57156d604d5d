//! Break-glass (非常時用ユーザアカウント, guideline 11 ①): a sealed, single-use emergency code per
//! tenant. Using it needs a stated reason, gives a short session marked as an emergency, and
//! raises an alert in the same transaction; the code is dead after one use until an admin issues
//! a new one, so any use outside an emergency is visible.

use crate::entity::{break_glass, user};
use crate::error::IdentityError;
use crate::secrets::{random_token, sha256_hex};
use crate::service::{ClientMeta, IdentityService, NewSession};
use anshin_platform::db::{begin_platform_write_tx, tenant_reader};
use anshin_platform::jobs::{JobContext, JobFailure, JobHandler, JobQueue, NewJob};
use anshin_platform::secret::Secret;
use anshin_platform::{Principal, Role, TenantKind};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;
use uuid::Uuid;

pub const ALERT_JOB: &str = "identity.break_glass_alert";

/// A new emergency code. `code` is the only copy: print it, seal it, store it safely.
#[derive(Debug)]
pub struct IssuedBreakGlass {
    pub id: Uuid,
    pub code: Secret,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BreakGlassView {
    pub id: Uuid,
    /// `sealed` (ready), `used` (dead until a new code is issued) or `retired`.
    pub status: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub used_reason: Option<String>,
    pub used_from: Option<String>,
}

impl BreakGlassView {
    fn from_model(m: break_glass::Model) -> Self {
        Self {
            id: m.id,
            status: m.status,
            created_by: m.created_by,
            created_at: m.created_at,
            used_at: m.used_at,
            used_reason: m.used_reason,
            used_from: m.used_from,
        }
    }
}

/// What the alert job sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BreakGlassAlert {
    pub event: String,
    pub tenant_id: Uuid,
    pub credential_id: Uuid,
    pub session_id: Uuid,
    pub reason: String,
    pub used_at: DateTime<Utc>,
    pub source_ip: Option<String>,
}

fn admin_role(kind: TenantKind) -> Role {
    match kind {
        TenantKind::Provider => Role::ProviderAdmin,
        TenantKind::Institution => Role::InstitutionAdmin,
    }
}

impl IdentityService {
    /// Issues a new emergency code for the caller's tenant (admins), retiring any earlier one.
    pub async fn issue_break_glass(
        &self,
        actor: &Principal,
    ) -> Result<IssuedBreakGlass, IdentityError> {
        if !matches!(actor.role, Role::ProviderAdmin | Role::InstitutionAdmin) {
            return Err(IdentityError::Forbidden(format!(
                "the role {} may not manage emergency access",
                actor.role
            )));
        }
        self.require_recent_step_up(actor, chrono::Duration::minutes(5))
            .await?;
        let code = format!("bg_{}", random_token());
        let now = Utc::now();
        let tx = anshin_platform::db::begin_tenant_write_tx(self.db(), actor.tenant_id).await?;
        let email = format!("break-glass+{}@anshin.invalid", actor.tenant_id);
        let account = match user::Entity::find()
            .filter(user::Column::Email.eq(&email))
            .one(&tx)
            .await?
        {
            Some(u) => u,
            None => {
                user::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    tenant_id: Set(actor.tenant_id),
                    email: Set(email),
                    display_name: Set("非常時用アカウント (break-glass)".into()),
                    role: Set(admin_role(actor.tenant_kind).as_str().into()),
                    status: Set("active".into()),
                    created_at: Set(now),
                    last_sign_in_at: Set(None),
                }
                .insert(&tx)
                .await?
            }
        };
        break_glass::Entity::update_many()
            .col_expr(break_glass::Column::Status, Expr::value("retired"))
            .filter(break_glass::Column::TenantId.eq(actor.tenant_id))
            .filter(break_glass::Column::Status.ne("retired"))
            .exec(&tx)
            .await?;
        let m = break_glass::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(actor.tenant_id),
            user_id: Set(account.id),
            code_hash: Set(sha256_hex(&code)),
            status: Set("sealed".into()),
            created_by: Set(actor.subject.label()),
            created_at: Set(now),
            used_at: Set(None),
            used_reason: Set(None),
            used_from: Set(None),
        }
        .insert(&tx)
        .await?;
        tx.commit().await?;
        tracing::info!(tenant = %actor.tenant_id, "break-glass code issued");
        Ok(IssuedBreakGlass {
            id: m.id,
            code: Secret::new(code),
            created_at: now,
        })
    }

    /// The tenant's current (latest) emergency credential, never its code.
    pub async fn break_glass_status(
        &self,
        actor: &Principal,
    ) -> Result<Option<BreakGlassView>, IdentityError> {
        let r = tenant_reader(self.db(), actor.tenant_id).await?;
        let m = break_glass::Entity::find()
            .filter(break_glass::Column::TenantId.eq(actor.tenant_id))
            .order_by_desc(break_glass::Column::CreatedAt)
            .one(&r)
            .await?;
        r.finish().await?;
        Ok(m.map(BreakGlassView::from_model))
    }

    /// Uses an emergency code: a short session marked `break_glass`, and an alert job in the same
    /// transaction as the use.
    pub async fn use_break_glass(
        &self,
        org: &str,
        code: &str,
        reason: &str,
        meta: ClientMeta,
    ) -> Result<NewSession, IdentityError> {
        let reason = reason.trim();
        if reason.chars().count() < 10 || reason.chars().count() > 1000 {
            return Err(IdentityError::Invalid(
                "state the emergency in 10–1000 characters; the reason goes to your administrators"
                    .into(),
            ));
        }
        let refused = || {
            IdentityError::Forbidden(
                "the organisation or emergency code is not valid, or the code was already used"
                    .into(),
            )
        };
        let tenant = anshin_tenancy::TenancyService::new(self.db().clone())
            .admin_find(org)
            .await
            .map_err(|e| IdentityError::Setup(e.to_string()))?
            .ok_or_else(refused)?;
        let now = Utc::now();
        let tx = begin_platform_write_tx(self.db()).await?;
        let cred = break_glass::Entity::find()
            .filter(break_glass::Column::CodeHash.eq(sha256_hex(code.trim())))
            .filter(break_glass::Column::TenantId.eq(tenant.id))
            .one(&tx)
            .await?
            .ok_or_else(refused)?;
        let used = break_glass::Entity::update_many()
            .col_expr(break_glass::Column::Status, Expr::value("used"))
            .col_expr(break_glass::Column::UsedAt, Expr::value(now))
            .col_expr(
                break_glass::Column::UsedReason,
                Expr::value(reason.to_string()),
            )
            .col_expr(
                break_glass::Column::UsedFrom,
                Expr::value(meta.source_ip.clone()),
            )
            .filter(break_glass::Column::Id.eq(cred.id))
            .filter(break_glass::Column::Status.eq("sealed"))
            .exec(&tx)
            .await?;
        if used.rows_affected != 1 {
            return Err(refused());
        }
        let account = user::Entity::find_by_id(cred.user_id)
            .one(&tx)
            .await?
            .ok_or_else(refused)?;
        let minutes = self.config().break_glass_session_minutes.max(1) as i64;
        let source_ip = meta.source_ip.clone();
        let session = self
            .create_session_limited(&tx, &account, "break_glass", meta, minutes * 60)
            .await?;
        let alert = BreakGlassAlert {
            event: "break_glass.used".into(),
            tenant_id: tenant.id,
            credential_id: cred.id,
            session_id: session.session_id,
            reason: reason.to_string(),
            used_at: now,
            source_ip,
        };
        let payload =
            serde_json::to_value(&alert).map_err(|e| IdentityError::Setup(e.to_string()))?;
        JobQueue::enqueue(
            &tx,
            NewJob::new(ALERT_JOB, payload)
                .tenant(tenant.id)
                .max_attempts(10),
        )
        .await
        .map_err(|e| IdentityError::Setup(e.to_string()))?;
        tx.commit().await?;
        tracing::warn!(tenant = %tenant.id, credential = %cred.id, "break-glass code used; emergency session granted and alert queued");
        Ok(session)
    }
}

/// Delivers break-glass alerts to the configured webhook, signed with HMAC-SHA256
/// (`x-anshin-signature: sha256=<hex>` over the body); retried with back-off until it answers 2xx.
pub struct BreakGlassAlertJob {
    pub webhook_url: Option<String>,
    pub secret: Option<Secret>,
    pub http: reqwest_client::Client,
}

pub mod reqwest_client {
    pub use openidconnect::reqwest::Client;
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[async_trait::async_trait]
impl JobHandler for BreakGlassAlertJob {
    fn kind(&self) -> &'static str {
        ALERT_JOB
    }

    async fn run(&self, ctx: &JobContext) -> Result<(), JobFailure> {
        let alert: BreakGlassAlert = ctx.payload()?;
        // Always in the log at error level, whether or not a webhook is configured.
        tracing::error!(tenant = %alert.tenant_id, credential = %alert.credential_id, reason = %alert.reason, "ALERT: break-glass emergency access used");
        let Some(url) = &self.webhook_url else {
            return Ok(());
        };
        let body = serde_json::to_vec(&alert).map_err(JobFailure::permanent)?;
        let mut req = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("x-anshin-event", "break_glass.used");
        if let Some(secret) = &self.secret {
            req = req.header("x-anshin-signature", sign(secret.expose(), &body));
        }
        let res = req
            .body(body)
            .send()
            .await
            .map_err(|e| JobFailure::retry(format!("alert webhook unreachable: {e}")))?;
        if res.status().is_success() {
            Ok(())
        } else {
            Err(JobFailure::retry(format!(
                "alert webhook answered {}",
                res.status()
            )))
        }
    }
}
