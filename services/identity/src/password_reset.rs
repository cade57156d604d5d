//! Password reset by an administrator after verifying the person's identity (guideline 14 ⑥:
//! a forgotten password is reset only once the person's identity is confirmed, and the
//! confirmation is recorded).
//!
//! The administrator never chooses the new password. The reset records how the identity was
//! verified (method, note, verifier, time), makes the current password unusable, ends the
//! person's sessions and issues a single-use link that expires after
//! [`RESET_LINK_TTL_HOURS`]: mailed to the person when a mail server is configured, otherwise
//! shown once to the administrator to hand over. With the link the person sets a new password
//! (the policy and reuse rules apply) and then signs in with password and security key as
//! usual. Only the link's hash is stored; a newer reset of the same account voids older links.

use crate::access::{require_admin, require_reader};
use crate::credentials::STEP_UP_WINDOW_MINUTES;
use crate::entity::{password_credential, password_reset, user};
use crate::error::IdentityError;
use crate::inventory::{account_in, end_all};
use crate::secrets::{random_token, sha256_hex};
use crate::service::IdentityService;
use anshin_platform::db::{begin_platform_tx, begin_tenant_write_tx, tenant_reader};
use anshin_platform::{Principal, Subject};
use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// How long a reset link works.
pub const RESET_LINK_TTL_HOURS: i64 = 24;
/// Longest verification note.
const MAX_NOTE_CHARS: usize = 1000;
/// `ended_reason` of the sessions a reset ends.
const ENDED_BY_RESET: &str = "password_reset";

/// How the administrator verified that the person asking is who they say they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerificationMethod {
    /// In person, against an official photo ID (staff card, driving licence, My Number card).
    InPersonIdCard,
    /// A video call in which the administrator recognised the person and saw their ID.
    VideoCall,
    /// A call back to the phone number registered for the person (not one they gave now).
    CallbackRegisteredPhone,
    /// Something else, described in the note (required then).
    Other,
}

impl VerificationMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            VerificationMethod::InPersonIdCard => "in_person_id_card",
            VerificationMethod::VideoCall => "video_call",
            VerificationMethod::CallbackRegisteredPhone => "callback_registered_phone",
            VerificationMethod::Other => "other",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            VerificationMethod::InPersonIdCard,
            VerificationMethod::VideoCall,
            VerificationMethod::CallbackRegisteredPhone,
            VerificationMethod::Other,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }
}

/// The body of an administrator's reset: how the identity was verified.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetRequest {
    pub method: VerificationMethod,
    /// What was checked, e.g. "職員証を受付で確認". Up to 1000 characters; required with
    /// `other`.
    #[schema(example = "受付で運転免許証を確認")]
    pub note: Option<String>,
}

/// One recorded reset (never its link).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PasswordResetView {
    pub id: Uuid,
    /// The account whose password was reset.
    pub user_id: Uuid,
    pub method: VerificationMethod,
    pub note: Option<String>,
    /// The verifying administrator (`user:<id>`) and their email address at the time.
    pub verified_by: String,
    pub verifier_email: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// `mail` (sent to the person) or `shown` (shown once to the administrator).
    pub delivery: String,
    /// `pending` (the link works), `completed` (a new password was set), `superseded` (a newer
    /// reset replaced the link) or `expired`.
    pub status: String,
    pub completed_at: Option<DateTime<Utc>>,
}

/// A reset just made.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IssuedPasswordReset {
    pub reset: PasswordResetView,
    /// True when the link went to the person by mail; it is then not in this answer.
    pub mailed: bool,
    /// The single-use link, when no mail server is configured: shown this once (only its hash
    /// is stored). Hand it to the person through the channel their identity was verified on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_url: Option<String>,
}

/// A reset as answered; `verifier_email` is the opened address.
fn view(m: password_reset::Model, verifier_email: String, now: DateTime<Utc>) -> PasswordResetView {
    let status = if m.completed_at.is_some() {
        "completed"
    } else if m.superseded_at.is_some() {
        "superseded"
    } else if m.expires_at <= now {
        "expired"
    } else {
        "pending"
    };
    PasswordResetView {
        id: m.id,
        user_id: m.user_id,
        method: VerificationMethod::parse(&m.method).unwrap_or(VerificationMethod::Other),
        note: m.note,
        verified_by: m.verified_by,
        verifier_email,
        created_at: m.created_at,
        expires_at: m.expires_at,
        delivery: m.delivery,
        status: status.into(),
        completed_at: m.completed_at,
    }
}

/// The note, trimmed: at most [`MAX_NOTE_CHARS`] characters, line breaks and tabs allowed but no
/// other control characters; required with `other`.
fn clean_note(
    method: VerificationMethod,
    note: Option<&str>,
) -> Result<Option<String>, IdentityError> {
    let note = note.map(str::trim).filter(|n| !n.is_empty());
    if let Some(n) = note {
        if n.chars().count() > MAX_NOTE_CHARS
            || n.chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(IdentityError::Invalid(format!(
                "give a note of at most {MAX_NOTE_CHARS} printable characters"
            )));
        }
    }
    if method == VerificationMethod::Other && note.is_none() {
        return Err(IdentityError::Invalid(
            "with method other, describe in the note how the identity was verified".into(),
        ));
    }
    Ok(note.map(String::from))
}

impl IdentityService {
    /// Resets the password of an account of the admin's tenant after recording how the person's
    /// identity was verified. Needs a person (not an API token) with a fresh passkey
    /// confirmation. Scope before role: an account outside the tenant is not found.
    pub async fn reset_password(
        &self,
        p: &Principal,
        user_id: Uuid,
        req: PasswordResetRequest,
    ) -> Result<IssuedPasswordReset, IdentityError> {
        // Checks that need no write: scope, role, who verifies, the request, the account.
        let r = tenant_reader(self.db(), p.tenant_id).await?;
        let target = user::Entity::find_by_id(user_id)
            .filter(user::Column::TenantId.eq(p.tenant_id))
            .one(&r)
            .await?
            .ok_or_else(|| IdentityError::NotFound("no account with this id".into()))?;
        require_admin(p, "reset passwords")?;
        let Subject::User {
            id: admin_id,
            email: admin_email,
            ..
        } = &p.subject
        else {
            return Err(IdentityError::Forbidden(
                "an identity verification is recorded by an administrator signed in with their passkey, not by an API token".into(),
            ));
        };
        if *admin_id == target.id {
            return Err(IdentityError::Conflict(
                "you cannot reset your own password; change it under your account or ask another administrator".into(),
            ));
        }
        let note = clean_note(req.method, req.note.as_deref())?;
        if target.status != "active" {
            return Err(IdentityError::Conflict(
                "the account is disabled; enable it first".into(),
            ));
        }
        let has_password = password_credential::Entity::find_by_id(target.id)
            .one(&r)
            .await?
            .is_some();
        r.finish().await?;
        if !has_password {
            return Err(IdentityError::Conflict(
                "this account has no password (it signs in with a passkey or its organisation's account); there is nothing to reset".into(),
            ));
        }
        self.require_recent_step_up(p, Duration::minutes(STEP_UP_WINDOW_MINUTES))
            .await?;

        let token = random_token();
        let now = Utc::now();
        let expires_at = now + Duration::hours(RESET_LINK_TTL_HOURS);
        let mut link = self
            .public_url()
            .join("/password-reset")
            .map_err(|e| IdentityError::Setup(e.to_string()))?;
        link.set_fragment(Some(&format!("token={token}")));
        let mailer = self.mailer().cloned();
        // Addresses are opened and sealed before the write transaction (either may write key
        // material): the person's, when the link goes by mail, and the verifier's for the record.
        let target_email = match &mailer {
            Some(_) => Some(self.user_email_for_use(&target).await?),
            None => None,
        };
        // The session's address is only a label; a placeholder (the key provider was briefly
        // unreachable when the session was checked) is not recorded as the verifier's address.
        if crate::contact::is_placeholder(admin_email) {
            return Err(IdentityError::Upstream(
                "your address could not be read from the key service just now; try again".into(),
            ));
        }
        let reset_id = Uuid::now_v7();
        let verifier_email: String = admin_email.chars().take(254).collect();
        let verifier_sealed = self
            .seal_email(p.tenant_id, reset_id, &verifier_email)
            .await?;

        let tx = begin_tenant_write_tx(self.db(), p.tenant_id).await?;
        let target = account_in(&tx, p.tenant_id, user_id).await?;
        if target.status != "active" {
            return Err(IdentityError::Conflict(
                "the account is disabled; enable it first".into(),
            ));
        }
        let pw = password_credential::Entity::find_by_id(target.id)
            .one(&tx)
            .await?
            .ok_or_else(|| IdentityError::Conflict("this account has no password".into()))?;
        let mut am: password_credential::ActiveModel = pw.into();
        am.invalidated_at = Set(Some(now));
        am.failed_count = Set(0);
        am.locked_until = Set(None);
        am.update(&tx).await?;
        let sessions_ended = end_all(&tx, p.tenant_id, target.id, ENDED_BY_RESET).await?;
        password_reset::Entity::update_many()
            .col_expr(password_reset::Column::SupersededAt, Expr::value(now))
            .filter(password_reset::Column::UserId.eq(target.id))
            .filter(password_reset::Column::TenantId.eq(p.tenant_id))
            .filter(password_reset::Column::CompletedAt.is_null())
            .filter(password_reset::Column::SupersededAt.is_null())
            .exec(&tx)
            .await?;
        let m = password_reset::ActiveModel {
            id: Set(reset_id),
            tenant_id: Set(p.tenant_id),
            user_id: Set(target.id),
            method: Set(req.method.as_str().into()),
            note: Set(note),
            verified_by: Set(p.subject.label()),
            verifier_email_sealed: Set(verifier_sealed),
            created_at: Set(now),
            token_hash: Set(sha256_hex(&token)),
            expires_at: Set(expires_at),
            delivery: Set(if mailer.is_some() { "mail" } else { "shown" }.into()),
            completed_at: Set(None),
            superseded_at: Set(None),
        }
        .insert(&tx)
        .await?;
        // With a mail server the link goes only by mail, sent before the reset commits: if the
        // mail fails, nothing changes (the old password still works).
        if let (Some(mailer), Some(to)) = (&mailer, &target_email) {
            mailer
                .send_password_reset(to, &target.display_name, link.as_str(), expires_at)
                .await?;
        }
        crate::audit::record(
            &tx,
            crate::audit::AuditEvent::new(
                p.tenant_id,
                crate::audit::Actor::from_principal(p),
                "password.reset",
                crate::audit::Outcome::Success,
            )
            .target(crate::audit::Target::new("user", target.id))
            .detail("verification_method", req.method.as_str())
            .detail("verification_note", &m.note)
            .detail("sessions_ended", sessions_ended)
            .detail("delivery", &m.delivery)
            .detail("expires_at", expires_at),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(user = %target.id, by = %p.subject.label(), method = req.method.as_str(),
            sessions_ended, mailed = mailer.is_some(), "password reset after identity verification");
        Ok(IssuedPasswordReset {
            reset: view(m, verifier_email, now),
            mailed: mailer.is_some(),
            reset_url: mailer.is_none().then(|| link.to_string()),
        })
    }

    /// The recorded resets of an account of the caller's tenant, newest first (admins and
    /// auditors). Scope before role.
    pub async fn password_resets(
        &self,
        p: &Principal,
        user_id: Uuid,
    ) -> Result<Vec<PasswordResetView>, IdentityError> {
        let r = tenant_reader(self.db(), p.tenant_id).await?;
        user::Entity::find_by_id(user_id)
            .filter(user::Column::TenantId.eq(p.tenant_id))
            .one(&r)
            .await?
            .ok_or_else(|| IdentityError::NotFound("no account with this id".into()))?;
        require_reader(p, "see password resets")?;
        let rows = password_reset::Entity::find()
            .filter(password_reset::Column::UserId.eq(user_id))
            .filter(password_reset::Column::TenantId.eq(p.tenant_id))
            .order_by_desc(password_reset::Column::CreatedAt)
            .all(&r)
            .await?;
        r.finish().await?;
        let now = Utc::now();
        let mut out = Vec::with_capacity(rows.len());
        for m in rows {
            let email = self
                .email_for_display(m.tenant_id, m.id, &m.verifier_email_sealed)
                .await?;
            out.push(view(m, email, now));
        }
        Ok(out)
    }

    /// Sets a new password with a reset link's token. The link works once, until it expires or
    /// a newer reset replaces it; the password must meet the policy and differ from the recent
    /// ones. No session is created: the person then signs in as usual, with password and
    /// security key.
    pub async fn complete_password_reset(
        &self,
        token: &str,
        new_password: &str,
    ) -> Result<(), IdentityError> {
        let unusable = || {
            IdentityError::Conflict(
                "this password reset link was already used, replaced by a newer one or has expired; ask your administrator for a new one".into(),
            )
        };
        let tx = begin_platform_tx(self.db()).await?;
        let reset = password_reset::Entity::find()
            .filter(password_reset::Column::TokenHash.eq(sha256_hex(token.trim())))
            .one(&tx)
            .await?
            .ok_or_else(|| {
                IdentityError::NotFound("this password reset link is not valid".into())
            })?;
        let u = user::Entity::find_by_id(reset.user_id)
            .filter(user::Column::TenantId.eq(reset.tenant_id))
            .one(&tx)
            .await?;
        tx.commit().await?;
        let now = Utc::now();
        if reset.completed_at.is_some() || reset.superseded_at.is_some() || reset.expires_at <= now
        {
            return Err(unusable());
        }
        let u = u
            .filter(|u| u.status == "active")
            .ok_or_else(|| IdentityError::Conflict("the account is disabled".into()))?;
        let email = self.user_email_for_use(&u).await?;
        crate::password::check_policy(
            new_password,
            self.config().password_min_length,
            &email,
            &u.display_name,
        )?;
        self.refuse_reuse(u.id, new_password).await?;
        let hash = crate::password::hash(new_password).await?;

        let tx = begin_tenant_write_tx(self.db(), reset.tenant_id).await?;
        // Single use: only one request can complete the reset, and only while it is current.
        let done = password_reset::Entity::update_many()
            .col_expr(password_reset::Column::CompletedAt, Expr::value(now))
            .filter(password_reset::Column::Id.eq(reset.id))
            .filter(password_reset::Column::CompletedAt.is_null())
            .filter(password_reset::Column::SupersededAt.is_null())
            .filter(password_reset::Column::ExpiresAt.gt(now))
            .exec(&tx)
            .await?;
        if done.rows_affected != 1 {
            return Err(unusable());
        }
        crate::credentials::store_password(&tx, &u, &hash, now).await?;
        crate::audit::record(
            &tx,
            crate::audit::AuditEvent::new(
                u.tenant_id,
                crate::audit::user_actor(&u, &email),
                "password.reset_complete",
                crate::audit::Outcome::Success,
            )
            .target(crate::audit::Target::new("password_reset", reset.id)),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(user = %u.id, reset = %reset.id, "new password set with a reset link");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_round_trip_and_notes_are_checked() {
        for m in [
            VerificationMethod::InPersonIdCard,
            VerificationMethod::VideoCall,
            VerificationMethod::CallbackRegisteredPhone,
            VerificationMethod::Other,
        ] {
            assert_eq!(VerificationMethod::parse(m.as_str()), Some(m));
            assert_eq!(
                serde_json::to_value(m).unwrap(),
                serde_json::json!(m.as_str())
            );
        }
        let ok = clean_note(
            VerificationMethod::VideoCall,
            Some("  画面越しに職員証を確認\n"),
        )
        .unwrap();
        assert_eq!(ok.as_deref(), Some("画面越しに職員証を確認"));
        assert_eq!(
            clean_note(VerificationMethod::VideoCall, Some("  ")).unwrap(),
            None
        );
        assert!(clean_note(VerificationMethod::Other, None).is_err());
        assert!(clean_note(VerificationMethod::Other, Some(" ")).is_err());
        assert!(clean_note(VerificationMethod::Other, Some("院長が対面で確認")).is_ok());
        assert!(clean_note(VerificationMethod::InPersonIdCard, Some("a\u{7}b")).is_err());
        assert!(clean_note(VerificationMethod::InPersonIdCard, Some(&"あ".repeat(1001))).is_err());
    }

    #[test]
    fn status_follows_the_record() {
        let now = Utc::now();
        let m = password_reset::Model {
            id: Uuid::nil(),
            tenant_id: Uuid::nil(),
            user_id: Uuid::nil(),
            method: "video_call".into(),
            note: None,
            verified_by: "user:x".into(),
            verifier_email_sealed: "anshin-env1:AAAA".into(),
            created_at: now,
            token_hash: String::new(),
            expires_at: now + Duration::hours(1),
            delivery: "shown".into(),
            completed_at: None,
            superseded_at: None,
        };
        assert_eq!(view(m.clone(), "a@b.jp".into(), now).status, "pending");
        assert_eq!(
            view(m.clone(), "a@b.jp".into(), now + Duration::hours(2)).status,
            "expired"
        );
        let superseded = password_reset::Model {
            superseded_at: Some(now),
            ..m.clone()
        };
        assert_eq!(view(superseded, "a@b.jp".into(), now).status, "superseded");
        let completed = password_reset::Model {
            completed_at: Some(now),
            ..m
        };
        assert_eq!(view(completed, "a@b.jp".into(), now).status, "completed");
    }
}
