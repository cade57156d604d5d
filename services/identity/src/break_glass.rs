//! Break-glass (非常時用ユーザアカウント, guideline 11 ①): a sealed, single-use emergency code per
//! tenant. Using it needs a stated reason, gives a short session marked as an emergency, and
//! raises an alert in the same transaction; the code is dead after one use until an admin issues
//! a new one, so any use outside an emergency is visible.
//!
//! Besides the alert job (log and signed webhook), every active administrator of the tenant is
//! mailed at once when a mail server is configured. The mail goes out in the background after
//! the use committed: a slow or failing mail server never delays or blocks the emergency
//! session; failures are logged.

use crate::entity::{break_glass, user};
use crate::error::IdentityError;
use crate::mail::BreakGlassNotice;
use crate::secrets::{random_token, sha256_hex};
use crate::service::{ClientMeta, IdentityService, NewSession};
use anshin_platform::db::{begin_platform_tx, begin_platform_write_tx, tenant_reader};
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

/// How long one alert mail may take before it is given up (and logged).
const ALERT_MAIL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

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
        // Stored like every address (sealed, found by its blind index), prepared before the
        // write transaction because both may write key material on first use.
        let email = self
            .email_key(crate::inventory::break_glass_email(actor.tenant_id))
            .await?;
        let new_id = Uuid::now_v7();
        let sealed = self
            .seal_email(actor.tenant_id, new_id, &email.address)
            .await?;
        let tx = anshin_platform::db::begin_tenant_write_tx(self.db(), actor.tenant_id).await?;
        let account = match user::Entity::find().filter(email.users()).one(&tx).await? {
            Some(u) => u,
            None => {
                user::ActiveModel {
                    id: Set(new_id),
                    tenant_id: Set(actor.tenant_id),
                    email_sealed: Set(sealed),
                    email_index: Set(Some(email.index.clone())),
                    display_name: Set("非常時用アカウント (break-glass)".into()),
                    role: Set(admin_role(actor.tenant_kind).as_str().into()),
                    status: Set("active".into()),
                    created_at: Set(now),
                    last_sign_in_at: Set(None),
                    stale_flagged_at: Set(None),
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
        crate::audit::record(
            &tx,
            crate::audit::AuditEvent::new(
                actor.tenant_id,
                crate::audit::Actor::from_principal(actor),
                "break_glass.issue",
                crate::audit::Outcome::Success,
            )
            .target(crate::audit::Target::new("break_glass", m.id))
            .detail("account_id", account.id),
        )
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
        // A refused attempt is evidence too (11 ①: use outside an emergency must be detectable).
        let refused_attempt = |why: &'static str| {
            crate::audit::AuditEvent::new(
                tenant.id,
                crate::audit::Actor::anonymous(None),
                "break_glass.use",
                crate::audit::Outcome::Failure,
            )
            .reason(why)
            .detail("stated_reason", reason)
        };
        // Read first: the addresses of the account and of the administrators to alert are opened
        // before the write transaction (opening may write key metadata, and SQLite has one
        // writer).
        let tx = begin_platform_tx(self.db()).await?;
        let cred = break_glass::Entity::find()
            .filter(break_glass::Column::CodeHash.eq(sha256_hex(code.trim())))
            .filter(break_glass::Column::TenantId.eq(tenant.id))
            .one(&tx)
            .await?;
        let (account, admins) = match &cred {
            Some(c) => (
                user::Entity::find_by_id(c.user_id).one(&tx).await?,
                // Every active administrator of the tenant (the emergency account is left out
                // below).
                user::Entity::find()
                    .filter(user::Column::TenantId.eq(tenant.id))
                    .filter(user::Column::Role.eq(admin_role(tenant.kind).as_str()))
                    .filter(user::Column::Status.eq("active"))
                    .all(&tx)
                    .await?,
            ),
            None => (None, Vec::new()),
        };
        tx.commit().await?;
        let Some(cred) = cred else {
            crate::audit::record_now(self.db(), refused_attempt("unknown emergency code")).await;
            return Err(refused());
        };
        let account = account.ok_or_else(refused)?;
        // Nothing about addresses may stop an emergency session: one that cannot be opened is a
        // placeholder label, and is left out of the alert mail (the webhook and the log still
        // alert).
        let account_email = self.user_email_label(&account).await;
        let mut recipients: Vec<(String, String)> = Vec::new();
        for u in admins.into_iter().filter(|u| u.id != account.id) {
            let email = self.user_email_label(&u).await;
            if !crate::inventory::is_break_glass_email(&email)
                && !crate::contact::is_placeholder(&email)
            {
                recipients.push((email, u.display_name));
            }
        }
        let tx = begin_platform_write_tx(self.db()).await?;
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
            drop(tx);
            crate::audit::record_now(
                self.db(),
                refused_attempt("the emergency code was already used or retired")
                    .target(crate::audit::Target::new("break_glass", cred.id)),
            )
            .await;
            return Err(refused());
        }
        // An emergency session is a sign-in: the inventory (14 ⑦) shows when the break-glass
        // account was last used, in the same transaction as the use.
        user::Entity::update_many()
            .col_expr(user::Column::LastSignInAt, Expr::value(now))
            .filter(user::Column::Id.eq(account.id))
            .exec(&tx)
            .await?;
        let minutes = self.config().break_glass_session_minutes.max(1) as i64;
        let source_ip = meta.source_ip.clone();
        let user_agent = meta.user_agent.clone();
        let session = self
            .create_session_limited(
                &tx,
                &account,
                &account_email,
                "break_glass",
                meta,
                minutes * 60,
            )
            .await?;
        let notice = BreakGlassNotice {
            organisation: tenant.name.clone(),
            account: account.display_name.clone(),
            used_at: now,
            reason: reason.to_string(),
            session_expires_at: session.absolute_expires_at,
            source_ip: source_ip.clone(),
            user_agent,
        };
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
        let mut actor =
            crate::audit::user_actor(&account, &account_email).with_session(session.session_id);
        actor.kind = anshin_audit::ActorKind::BreakGlass;
        crate::audit::record(
            &tx,
            crate::audit::AuditEvent::new(
                tenant.id,
                actor,
                "break_glass.use",
                crate::audit::Outcome::Success,
            )
            .target(crate::audit::Target::new("break_glass", cred.id))
            .reason(reason)
            .detail("session_id", session.session_id)
            .detail("session_expires_at", session.absolute_expires_at)
            .detail("admins_notified", recipients.len()),
        )
        .await?;
        tx.commit().await?;
        tracing::warn!(tenant = %tenant.id, credential = %cred.id, "break-glass code used; emergency session granted and alert queued");
        self.mail_break_glass_alert(tenant.id, recipients, notice);
        Ok(session)
    }

    /// Mails the alert to each recipient (email, name) in the background. Failures are logged,
    /// never returned: the emergency session stands whatever the mail server does.
    fn mail_break_glass_alert(
        &self,
        tenant_id: Uuid,
        recipients: Vec<(String, String)>,
        notice: BreakGlassNotice,
    ) {
        let Some(mailer) = self.mailer().cloned() else {
            tracing::info!(tenant = %tenant_id, "no mail server configured: the break-glass alert goes to the log and the webhook only");
            return;
        };
        if recipients.is_empty() {
            tracing::warn!(tenant = %tenant_id, "the tenant has no active administrator to mail the break-glass alert to");
            return;
        }
        let send = async move {
            let total = recipients.len();
            let mut failed = 0usize;
            for (email, name) in &recipients {
                let sent = tokio::time::timeout(
                    ALERT_MAIL_TIMEOUT,
                    mailer.send_break_glass_alert(email, name, &notice),
                )
                .await;
                let error = match sent {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!(
                        "no answer from the mail server within {} seconds",
                        ALERT_MAIL_TIMEOUT.as_secs()
                    ),
                };
                failed += 1;
                tracing::error!(tenant = %tenant_id, %error, "a break-glass alert mail to an administrator was not sent");
            }
            if failed == 0 {
                tracing::info!(tenant = %tenant_id, mailed = total, "break-glass alert mailed to the administrators");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(send);
            }
            // Not inside a runtime cannot happen from an async caller; still, never panic.
            Err(_) => {
                tracing::error!(tenant = %tenant_id, "no async runtime to send the break-glass alert mail")
            }
        }
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
