//! Delivering alerts: a durable job per alert and channel, queued in the sealing transaction
//! that raised the alert, retried with the worker's exponential back-off. Every attempt is
//! recorded in `audit_alert_deliveries` (status code, error, time, duration).
//!
//! Webhooks get the alert as JSON, signed with the channel's secret:
//!
//! ```text
//! x-anshin-timestamp: <unix seconds>
//! x-anshin-signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>
//! x-anshin-event:     audit.alert
//! x-anshin-delivery:  <delivery id, the same on every retry of this alert to this channel>
//! ```
//!
//! The timestamp is inside the signed message, so a receiver that refuses timestamps more than
//! a few minutes old (see [`verify_webhook`]) cannot be fed a replayed delivery, and one that
//! remembers delivery ids sees each alert once. Mail goes to each recipient through SMTP
//! (`identity.smtp_url`, `identity.mail_from`), Japanese first, then English; a recipient who got
//! it is not mailed again when the job retries for another.

use super::model::{alert_by_id, channel_by_id, AlertView, ChannelKind, ChannelRow};
use super::rules::tokyo;
use super::sealing::{
    mask_address, secret_context, url_context, Sealing, WEBHOOK_SECRET_PURPOSE, WEBHOOK_URL_PURPOSE,
};
use super::secretbox::SecretBox;
use super::sql::exec;
use anshin_platform::db::begin_tenant_tx;
use anshin_platform::jobs::{JobContext, JobFailure, JobHandler};
use anshin_platform::sealer::{SealerError, SecretSealer};
use anshin_platform::secret::{redact_url, Secret};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use lettre::message::{header::ContentType, Mailbox, Message};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The job kind; register [`AlertDeliveryJob`] on the worker to run it.
pub const DELIVERY_JOB: &str = "audit.alert_delivery";
/// Attempts per alert and channel (with the worker's back-off: about 17 minutes of retries at
/// the default 1 s base, doubling).
pub const DELIVERY_MAX_ATTEMPTS: i32 = 10;
pub const SIGNATURE_HEADER: &str = "x-anshin-signature";
pub const TIMESTAMP_HEADER: &str = "x-anshin-timestamp";
pub const EVENT_HEADER: &str = "x-anshin-event";
pub const DELIVERY_HEADER: &str = "x-anshin-delivery";
/// How long one webhook request or one mail may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// The job's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryPayload {
    pub tenant_id: Uuid,
    pub alert_id: Uuid,
    pub channel_id: Uuid,
}

/// The JSON body POSTed to webhooks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookBody {
    /// Always `audit.alert`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Stable across retries: receivers can drop duplicates by it.
    pub delivery_id: String,
    pub sent_at: DateTime<Utc>,
    pub alert: AlertView,
    /// Where people see the alert inbox, when the server knows its public URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_url: Option<String>,
}

/// `sha256=<hex>` of HMAC-SHA256 over `"<timestamp>.<body>"`.
pub fn sign_webhook(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        // HMAC takes keys of any length; this branch is unreachable.
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What a receiver does: the signature matches (constant-time) and the timestamp is within
/// `tolerance` of `now`.
pub fn verify_webhook(
    secret: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> bool {
    let Ok(ts) = timestamp.trim().parse::<i64>() else {
        return false;
    };
    if (now.timestamp() - ts).unsigned_abs() > tolerance.as_secs() {
        return false;
    }
    let Some(sig) = signature
        .trim()
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// Alert mail over SMTP (lettre), configured like identity's mailer.
pub struct AlertMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for AlertMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlertMailer(from {})", self.from)
    }
}

impl AlertMailer {
    /// `smtp_url` is `identity.smtp_url` (e.g. `smtp://127.0.0.1:25`), `from` is
    /// `identity.mail_from`.
    pub fn new(smtp_url: &Secret, from: &str) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url.expose())
            .map_err(|e| {
                format!(
                    "SMTP URL {} is not usable: {e}",
                    redact_url(smtp_url.expose())
                )
            })?
            .timeout(Some(ATTEMPT_TIMEOUT))
            .build();
        let from = from
            .parse()
            .map_err(|e| format!("mail sender '{from}' is not an address: {e}"))?;
        Ok(Self { transport, from })
    }

    /// Sends one alert mail; on failure, the SMTP reply code (when the server answered) and the
    /// reason.
    async fn send(
        &self,
        to: &str,
        subject: &str,
        body: String,
    ) -> Result<u16, (Option<u16>, String)> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| (None, format!("not a mail address: {e}")))?;
        let msg = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| (None, format!("cannot build the mail: {e}")))?;
        match self.transport.send(msg).await {
            Ok(r) => Ok(u16::from(r.code())),
            Err(e) => Err((e.status().map(u16::from), e.to_string())),
        }
    }
}

fn jst(t: DateTime<Utc>) -> String {
    t.with_timezone(&tokyo())
        .format("%Y-%m-%d %H:%M:%S JST")
        .to_string()
}

/// The alert mail: subject and plain-text body, Japanese first.
pub fn mail_text(a: &AlertView, console_url: Option<&str>) -> (String, String) {
    let subject = format!(
        "[Anshin 監査アラート/{}] {} / Audit alert: {}",
        a.severity.label_ja(),
        a.title_ja,
        a.title_en
    );
    let ctx = &a.context;
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let actor = format!(
        "{} ({})",
        s(&ctx["actor"]["label"]),
        s(&ctx["actor"]["kind"])
    );
    let target = match (&ctx["target"]["type"], &ctx["target"]["id"]) {
        (serde_json::Value::String(t), serde_json::Value::String(i)) => format!("{t} {i}"),
        _ => "-".into(),
    };
    let group = a.group_key.as_deref().unwrap_or("-");
    let link = console_url
        .map(|u| format!("\n{}/audit/alerts/{}\n", u.trim_end_matches('/'), a.id))
        .unwrap_or_default();
    let reason = ctx["reason"]
        .as_str()
        .map(|r| format!("理由 / Reason: {r}\n"))
        .unwrap_or_default();
    let body = format!(
        "Anshin の監査アラートが発生しました。内容を確認し、必要に応じて対応してください。\n\n\
         アラート: {title_ja}\n\
         重要度: {sev_ja} ({sev})\n\
         ルール: {rule}\n\
         対象グループ: {group}\n\
         件数: {count}\n\
         最初の事象: {first}\n\
         最後の事象: {last}\n\
         操作: {action} ({outcome})\n\
         操作者: {actor}\n\
         対象: {target}\n\
         接続元: {ip}\n\
         {reason}\
         テナント: {tenant}\n\
         アラート ID: {id}\n{link}\n\
         ---\n\
         An Anshin audit alert was raised. Review it and act as needed.\n\n\
         Alert: {title_en}\n\
         Severity: {sev}\n\
         Rule: {rule}\n\
         Group: {group}\n\
         Events: {count}\n\
         First event: {first}\n\
         Last event: {last}\n\
         Action: {action} ({outcome})\n\
         Actor: {actor}\n\
         Target: {target}\n\
         Source address: {ip}\n\
         Tenant: {tenant}\n\
         Alert id: {id}\n",
        title_ja = a.title_ja,
        title_en = a.title_en,
        sev_ja = a.severity.label_ja(),
        sev = a.severity.as_str(),
        rule = a.rule_id,
        count = a.count,
        first = jst(a.first_event_at),
        last = jst(a.last_event_at),
        action = s(&ctx["action"]),
        outcome = s(&ctx["outcome"]),
        ip = s(&ctx["source_ip"]),
        tenant = a.tenant_id,
        id = a.id,
    );
    (subject, body)
}

/// Runs [`DELIVERY_JOB`]: register it on the worker with
/// `worker.register(AlertDeliveryJob::new(secrets, mailer)?)`.
pub struct AlertDeliveryJob {
    http: reqwest::Client,
    mailer: Option<Arc<AlertMailer>>,
    sealing: Sealing,
    console_url: Option<String>,
}

/// One recorded attempt.
struct Attempt {
    recipient: Option<String>,
    status_code: Option<i32>,
    error: Option<String>,
    started: Instant,
}

impl AlertDeliveryJob {
    /// `secrets` opens the webhook secrets sealed before the key service
    /// (`alerts::secretbox::load(data_dir)`); add the key service with [`Self::with_sealer`] for
    /// the others. Without a mailer, email channels fail their attempts with "no mail server
    /// configured".
    pub fn new(secrets: SecretBox, mailer: Option<AlertMailer>) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(ATTEMPT_TIMEOUT)
            .user_agent(concat!("Anshin-Audit-Alerts/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))?;
        Ok(Self {
            http,
            mailer: mailer.map(Arc::new),
            sealing: Sealing::new(secrets),
            console_url: None,
        })
    }

    /// Opens webhook secrets and URLs sealed by the key service (as [`super::AlertService`]
    /// seals them when it has the same sealer).
    pub fn with_sealer(mut self, sealer: Arc<dyn SecretSealer>) -> Self {
        self.sealing = self.sealing.with_sealer(sealer);
        self
    }

    /// The server's public URL, for links to the alert inbox in mails and webhook bodies.
    pub fn with_console_url(mut self, url: impl Into<String>) -> Self {
        self.console_url = Some(url.into());
        self
    }

    async fn record(&self, ctx: &JobContext, p: &DeliveryPayload, a: Attempt) {
        let ok = a.error.is_none();
        let r = async {
            let tx = begin_tenant_tx(ctx.db(), p.tenant_id).await?;
            exec(
                &tx,
                "INSERT INTO audit_alert_deliveries (id, tenant_id, alert_id, channel_id, job_id, attempt, recipient, status, \
                 status_code, error, attempted_at, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                vec![
                    Uuid::now_v7().into(),
                    p.tenant_id.into(),
                    p.alert_id.into(),
                    p.channel_id.into(),
                    ctx.job.id.clone().into(),
                    ctx.job.attempts.into(),
                    a.recipient.clone().into(),
                    (if ok { "delivered" } else { "failed" }).into(),
                    a.status_code.into(),
                    a.error.as_ref().map(|e| e.chars().take(1000).collect::<String>()).into(),
                    Utc::now().into(),
                    i64::try_from(a.started.elapsed().as_millis()).unwrap_or(i64::MAX).into(),
                ],
            )
            .await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, alert = %p.alert_id, channel = %p.channel_id, "could not record an alert delivery attempt");
        }
    }

    async fn webhook(
        &self,
        ctx: &JobContext,
        p: &DeliveryPayload,
        ch: &ChannelRow,
        alert: &AlertView,
    ) -> Result<(), JobFailure> {
        let started = Instant::now();
        let fail = |code: Option<i32>, error: String| Attempt {
            recipient: None,
            status_code: code,
            error: Some(error),
            started,
        };
        // Both are opened before anything is sent: without its secret, nothing goes out.
        let opened = async {
            let (Some(url), Some(secret)) = (&ch.url_sealed, &ch.secret_sealed) else {
                return Err(SealerError::Invalid(
                    "the channel has no URL or secret".into(),
                ));
            };
            let t = p.tenant_id;
            let url = self
                .sealing
                .open(t, WEBHOOK_URL_PURPOSE, &url_context(t, p.channel_id), url)
                .await?;
            let secret = self
                .sealing
                .open(
                    t,
                    WEBHOOK_SECRET_PURPOSE,
                    &secret_context(t, p.channel_id),
                    secret,
                )
                .await?;
            Ok((url, secret))
        }
        .await;
        let (url, secret) = match opened {
            Ok(v) => v,
            Err(e) if e.is_transient() => {
                // A key-service outage: retried with back-off like an unreachable receiver.
                let msg = format!("the webhook's URL and secret could not be opened now: {e}");
                self.record(ctx, p, fail(None, msg.clone())).await;
                return Err(JobFailure::retry(msg));
            }
            Err(e) => {
                let msg = format!("the webhook's URL or secret cannot be read: {e}");
                self.record(ctx, p, fail(None, msg.clone())).await;
                return Err(JobFailure::permanent(msg));
            }
        };
        let (url, secret) = (url.expose(), secret.expose());
        let body = WebhookBody {
            kind: "audit.alert".into(),
            delivery_id: ctx.job.id.clone(),
            sent_at: Utc::now(),
            alert: alert.clone(),
            console_url: self.console_url.clone(),
        };
        let body = serde_json::to_vec(&body).map_err(JobFailure::permanent)?;
        let ts = Utc::now().timestamp();
        let res = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header(EVENT_HEADER, "audit.alert")
            .header(DELIVERY_HEADER, ctx.job.id.as_str())
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, sign_webhook(secret, ts, &body))
            .body(body)
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => {
                let code = i32::from(r.status().as_u16());
                self.record(
                    ctx,
                    p,
                    Attempt {
                        recipient: None,
                        status_code: Some(code),
                        error: None,
                        started,
                    },
                )
                .await;
                Ok(())
            }
            Ok(r) => {
                let code = r.status();
                let msg = format!("the webhook answered {code}");
                self.record(ctx, p, fail(Some(i32::from(code.as_u16())), msg.clone()))
                    .await;
                Err(JobFailure::retry(msg))
            }
            Err(e) => {
                // Never the URL in errors: its path or query may hold a token.
                let msg = format!("the webhook could not be reached: {}", error_chain(e));
                self.record(ctx, p, fail(None, msg.clone())).await;
                Err(JobFailure::retry(msg))
            }
        }
    }

    async fn email(
        &self,
        ctx: &JobContext,
        p: &DeliveryPayload,
        ch: &ChannelRow,
        alert: &AlertView,
    ) -> Result<(), JobFailure> {
        let Some(mailer) = &self.mailer else {
            let msg = "no mail server is configured (identity.smtp_url)";
            self.record(
                ctx,
                p,
                Attempt {
                    recipient: None,
                    status_code: None,
                    error: Some(msg.into()),
                    started: Instant::now(),
                },
            )
            .await;
            return Err(JobFailure::retry(msg));
        };
        let (subject, body) = mail_text(alert, self.console_url.as_deref());
        let mut failed = Vec::new();
        for (i, to) in ch.view.recipients.iter().enumerate() {
            // A recipient already mailed by an earlier attempt is skipped. Named by position
            // (a channel's list never changes), so job records hold no address, not even hashed.
            let step = format!("mail:{i}");
            let sent = ctx
                .step(&step, || async {
                    let started = Instant::now();
                    let r = tokio::time::timeout(
                        ATTEMPT_TIMEOUT,
                        mailer.send(to, &subject, body.clone()),
                    )
                    .await
                    .unwrap_or_else(|_| {
                        Err((None, "no answer from the mail server in time".into()))
                    });
                    let (code, error) = match &r {
                        Ok(c) => (Some(i32::from(*c)), None),
                        Err((c, e)) => (c.map(i32::from), Some(e.clone())),
                    };
                    self.record(
                        ctx,
                        p,
                        Attempt {
                            recipient: Some(mask_address(to)),
                            status_code: code,
                            error: error.clone(),
                            started,
                        },
                    )
                    .await;
                    match error {
                        None => Ok(true),
                        Some(e) => Err(JobFailure::retry(e)),
                    }
                })
                .await;
            if let Err(e) = sent {
                failed.push(e.to_string());
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(JobFailure::retry(format!(
                "{} of {} alert mails were not sent: {}",
                failed.len(),
                ch.view.recipients.len(),
                failed.join("; ")
            )))
        }
    }
}

/// A transport error with its causes ("error sending request: … Connection refused"), without
/// the URL.
fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out.chars().take(1000).collect()
}

#[async_trait::async_trait]
impl JobHandler for AlertDeliveryJob {
    fn kind(&self) -> &'static str {
        DELIVERY_JOB
    }

    async fn run(&self, ctx: &JobContext) -> Result<(), JobFailure> {
        let p: DeliveryPayload = ctx.payload()?;
        let tx = begin_tenant_tx(ctx.db(), p.tenant_id)
            .await
            .map_err(JobFailure::retry)?;
        let alert = alert_by_id(&tx, p.alert_id)
            .await
            .map_err(JobFailure::retry)?
            .filter(|a| a.tenant_id == p.tenant_id);
        let channel = channel_by_id(&tx, p.channel_id)
            .await
            .map_err(JobFailure::retry)?
            .filter(|c| c.view.tenant_id == p.tenant_id);
        tx.commit().await.map_err(JobFailure::retry)?;
        let Some(alert) = alert else {
            return Err(JobFailure::permanent("the alert no longer exists"));
        };
        let Some(mut ch) = channel.filter(|c| c.view.enabled && c.view.deleted_at.is_none()) else {
            tracing::info!(alert = %p.alert_id, channel = %p.channel_id, "alert not delivered: the channel was deleted or disabled");
            return Ok(());
        };
        if let Err(e) = self.sealing.reveal_recipients(&mut ch).await {
            let msg = format!("the channel's recipients cannot be opened: {e}");
            self.record(
                ctx,
                &p,
                Attempt {
                    recipient: None,
                    status_code: None,
                    error: Some(msg.clone()),
                    started: Instant::now(),
                },
            )
            .await;
            return Err(if e.is_transient() {
                JobFailure::retry(msg)
            } else {
                JobFailure::permanent(msg)
            });
        }
        // Always in the log, whatever the channels do.
        tracing::warn!(tenant = %p.tenant_id, alert = %alert.id, rule = %alert.rule_id, severity = alert.severity.as_str(), channel = %ch.view.id, "delivering audit alert");
        match ch.view.kind {
            ChannelKind::Webhook => self.webhook(ctx, &p, &ch, &alert).await,
            ChannelKind::Email => self.email(ctx, &p, &ch, &alert).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::rules::Severity;
    use crate::alerts::AlertStatus;

    #[test]
    fn signatures_cover_timestamp_and_body() {
        let now = Utc::now();
        let ts = now.timestamp();
        let body = br#"{"type":"audit.alert"}"#;
        let sig = sign_webhook("whsec_x", ts, body);
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        let tol = Duration::from_secs(300);
        assert!(verify_webhook(
            "whsec_x",
            &ts.to_string(),
            &sig,
            body,
            now,
            tol
        ));
        assert!(
            !verify_webhook("whsec_y", &ts.to_string(), &sig, body, now, tol),
            "wrong secret"
        );
        assert!(
            !verify_webhook("whsec_x", &ts.to_string(), &sig, b"{}", now, tol),
            "altered body"
        );
        assert!(
            !verify_webhook("whsec_x", &(ts + 1).to_string(), &sig, body, now, tol),
            "the timestamp is signed: it cannot be refreshed for a replay"
        );
        let old = now + chrono::Duration::seconds(301);
        assert!(
            !verify_webhook("whsec_x", &ts.to_string(), &sig, body, old, tol),
            "too old"
        );
        assert!(!verify_webhook("whsec_x", "x", &sig, body, now, tol));
        assert!(!verify_webhook(
            "whsec_x",
            &ts.to_string(),
            "sha256=zz",
            body,
            now,
            tol
        ));
    }

    #[test]
    fn mail_is_japanese_first_in_tokyo_time() {
        let t = DateTime::parse_from_rfc3339("2026-01-05T15:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let a = AlertView {
            id: Uuid::nil(),
            tenant_id: Uuid::nil(),
            rule_id: "record.access_off_hours".into(),
            severity: Severity::Medium,
            title_ja: "診療時間外に診療記録へのアクセスがありました".into(),
            title_en: "Medical record access outside business hours".into(),
            group_key: Some("u1".into()),
            count: 1,
            first_event_id: Uuid::nil(),
            first_event_at: t,
            last_event_id: Uuid::nil(),
            last_event_at: t,
            created_at: t,
            updated_at: t,
            status: AlertStatus::Open,
            acknowledged_by: None,
            acknowledged_at: None,
            resolved_by: None,
            resolved_at: None,
            note: None,
            context: serde_json::json!({"action": "record.open", "outcome": "success", "actor": {"kind": "user", "label": "dr@clinic.jp"}, "target": {"type": "patient_record", "id": "P-1"}}),
        };
        let (subject, body) = mail_text(&a, Some("https://anshin.example.jp/"));
        assert!(
            subject.starts_with("[Anshin 監査アラート/中] 診療時間外"),
            "{subject}"
        );
        assert!(body.find("アラート:").unwrap() < body.find("Alert:").unwrap());
        assert!(body.contains("2026-01-06 00:30:00 JST"), "{body}");
        assert!(body.contains("dr@clinic.jp (user)") && body.contains("patient_record P-1"));
        assert!(body.contains("https://anshin.example.jp/audit/alerts/"));
    }
}
