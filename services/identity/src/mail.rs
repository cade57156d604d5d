//! Invitation mail over SMTP (lettre). The enrollment link travels only in the mail; it is never
//! logged or stored.

use crate::error::IdentityError;
use anshin_platform::secret::{redact_url, Secret};
use lettre::message::{header::ContentType, Mailbox, Message};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
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

    pub async fn send_invitation(
        &self,
        to: &str,
        name: &str,
        link: &str,
        expires: &str,
    ) -> Result<(), IdentityError> {
        let to_box: Mailbox = format!("{name} <{to}>")
            .parse()
            .or_else(|_| to.parse())
            .map_err(|e| IdentityError::Invalid(format!("cannot mail {to}: {e}")))?;
        let body = format!(
            "{name} 様\n\n\
             Anshin へのアカウントが招待されました。次のリンクを開き、この端末またはセキュリティキーにパスキーを登録してください。\n\
             リンクは一度だけ使え、{expires} まで有効です。\n\n{link}\n\n\
             心当たりがない場合は、このメールを破棄してください。\n\n\
             ---\n\
             You have been invited to Anshin. Open the link above to register a passkey on this device or a security key.\n\
             The link works once and until {expires}. If you did not expect this, ignore this mail.\n"
        );
        let msg = Message::builder()
            .from(self.from.clone())
            .to(to_box)
            .subject("Anshin への招待 / Your invitation to Anshin")
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| IdentityError::Setup(format!("cannot build the invitation mail: {e}")))?;
        self.transport.send(msg).await.map_err(|e| {
            tracing::warn!(error = %e, "sending an invitation mail failed");
            IdentityError::Upstream(
                "the invitation mail could not be sent; nothing was created, try again later"
                    .into(),
            )
        })?;
        Ok(())
    }
}
