//! Mail over SMTP (lettre), Japanese first, then English: invitations, password-reset links and
//! break-glass alerts. Links travel only in the mail; they are never logged or stored.

use crate::error::IdentityError;
use anshin_platform::secret::{redact_url, Secret};
use chrono::{DateTime, Duration, Utc};
use lettre::message::{header::ContentType, Mailbox, Message};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

/// A time as people in Japan read it. Japan Standard Time has no daylight saving: UTC+9 always.
pub fn jst(t: DateTime<Utc>) -> String {
    (t + Duration::hours(9))
        .format("%Y-%m-%d %H:%M JST")
        .to_string()
}

/// What administrators are told when the tenant's break-glass code was used.
#[derive(Debug, Clone)]
pub struct BreakGlassNotice {
    /// The tenant's name.
    pub organisation: String,
    /// The emergency account that was signed in.
    pub account: String,
    pub used_at: DateTime<Utc>,
    pub reason: String,
    pub session_expires_at: DateTime<Utc>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
}

impl Mailer {
    pub fn new(url: &Secret, from: &str) -> Result<Self, IdentityError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
            .map_err(|e| {
                IdentityError::Setup(format!(
                    "SMTP URL {} is not usable: {e}",
                    redact_url(url.expose())
                ))
            })?
            .build();
        let from = from.parse().map_err(|e| {
            IdentityError::Setup(format!("mail sender '{from}' is not an address: {e}"))
        })?;
        Ok(Self { transport, from })
    }

    /// Sends one plain-text mail. `what` names it in errors and logs (never the address or the
    /// body, which may hold a link).
    async fn send(
        &self,
        to: &str,
        name: &str,
        subject: &str,
        body: String,
        what: &str,
    ) -> Result<(), IdentityError> {
        let to_box: Mailbox = format!("{name} <{to}>")
            .parse()
            .or_else(|_| to.parse())
            .map_err(|e| IdentityError::Invalid(format!("cannot mail {to}: {e}")))?;
        let msg = Message::builder()
            .from(self.from.clone())
            .to(to_box)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| IdentityError::Setup(format!("cannot build the {what} mail: {e}")))?;
        self.transport.send(msg).await.map_err(|e| {
            tracing::warn!(error = %e, mail = what, "sending a mail failed");
            IdentityError::Upstream(format!(
                "the {what} mail could not be sent; nothing was changed, try again later"
            ))
        })?;
        Ok(())
    }

    pub async fn send_invitation(
        &self,
        to: &str,
        name: &str,
        link: &str,
        expires: &str,
    ) -> Result<(), IdentityError> {
        let body = format!(
            "{name} 様\n\n\
             Anshin へのアカウントが招待されました。次のリンクを開き、この端末またはセキュリティキーにパスキーを登録してください。\n\
             リンクは一度だけ使え、{expires} まで有効です。\n\n{link}\n\n\
             心当たりがない場合は、このメールを破棄してください。\n\n\
             ---\n\
             You have been invited to Anshin. Open the link above to register a passkey on this device or a security key.\n\
             The link works once and until {expires}. If you did not expect this, ignore this mail.\n"
        );
        self.send(
            to,
            name,
            "Anshin への招待 / Your invitation to Anshin",
            body,
            "invitation",
        )
        .await
    }

    /// The link with which a person sets a new password after an administrator verified their
    /// identity and reset it.
    pub async fn send_password_reset(
        &self,
        to: &str,
        name: &str,
        link: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), IdentityError> {
        let expires = jst(expires_at);
        let body = format!(
            "{name} 様\n\n\
             管理者が本人確認のうえ、あなたの Anshin のパスワードをリセットしました。これまでのパスワードは使えません。\n\
             次のリンクを開いて新しいパスワードを設定し、その後はいつもどおりパスワードとセキュリティキーでサインインしてください。\n\
             リンクは一度だけ使え、{expires} まで有効です。\n\n{link}\n\n\
             心当たりがない場合は、このリンクを開かず、すぐに管理者へ連絡してください。\n\n\
             ---\n\
             An administrator verified your identity and reset your Anshin password; the old password no longer works.\n\
             Open the link above to set a new password, then sign in as usual with your password and security key.\n\
             The link works once and until {expires}. If you did not ask for this, do not open the link and tell your administrator at once.\n"
        );
        self.send(
            to,
            name,
            "Anshin パスワードの再設定 / Set a new Anshin password",
            body,
            "password reset",
        )
        .await
    }

    /// Tells one administrator that the tenant's break-glass code was used.
    pub async fn send_break_glass_alert(
        &self,
        to: &str,
        name: &str,
        n: &BreakGlassNotice,
    ) -> Result<(), IdentityError> {
        let from = match (&n.source_ip, &n.user_agent) {
            (Some(ip), Some(ua)) => format!("{ip} ({ua})"),
            (Some(ip), None) => ip.clone(),
            (None, Some(ua)) => ua.clone(),
            (None, None) => "-".into(),
        };
        let utc = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
        let body = format!(
            "{name} 様\n\n\
             【緊急】{org} の非常時用アカウント（break-glass）が使用され、緊急セッションが開始されました（ガイドライン 11 ①）。\n\n\
             利用者: {account}\n\
             接続元: {from}\n\
             日時: {used_jst}\n\
             理由: {reason}\n\
             セッションの有効期限: {expires_jst}\n\n\
             非常時用コードは使用済みとなり、新しいコードを発行するまで使えません。\n\
             正当な利用か確認してください。心当たりがない場合は、アカウント一覧で非常時用アカウントのセッションを直ちに終了してください。\n\
             平常運用に戻ったら、新しい非常時用コードを発行して封印してください。\n\n\
             ---\n\
             ALERT: the break-glass (emergency) account of {org} was used and an emergency session started (guideline 11 ①).\n\n\
             Who: {account}\n\
             From: {from}\n\
             When: {used_jst} ({used_utc})\n\
             Reason: {reason}\n\
             Session expires: {expires_jst} ({expires_utc})\n\n\
             The emergency code is now used up until a new one is issued. Check that this use is legitimate; if not, end the\n\
             emergency account's sessions from the account list at once. When normal operation resumes, issue and seal a new code.\n",
            org = n.organisation,
            account = n.account,
            reason = n.reason,
            used_jst = jst(n.used_at),
            used_utc = utc(n.used_at),
            expires_jst = jst(n.session_expires_at),
            expires_utc = utc(n.session_expires_at),
        );
        self.send(
            to,
            name,
            &format!(
                "【緊急】非常時用アカウントが使用されました / ALERT: break-glass access used — {}",
                n.organisation
            ),
            body,
            "break-glass alert",
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_japan_standard_time() {
        let t: DateTime<Utc> = "2026-11-22T16:30:00Z".parse().unwrap();
        assert_eq!(jst(t), "2026-11-23 01:30 JST");
    }
}
