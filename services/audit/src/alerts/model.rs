//! What the alert API and the notifications show: alerts, notification channels, delivery
//! attempts; and how they are read from their rows.

use super::rules::{Rule, RuleOverride, Severity};
use super::sql::{query, query_one};
use super::AlertError;
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, QueryResult};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Open,
    /// Someone is looking into it.
    Acknowledged,
    /// Closed; final.
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(AlertStatus::Open),
            "acknowledged" => Some(AlertStatus::Acknowledged),
            "resolved" => Some(AlertStatus::Resolved),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub rule_id: String,
    pub severity: Severity,
    pub title_ja: String,
    pub title_en: String,
    /// The value that groups the alert's events (an actor, an address), per the rule's
    /// `group_by`; absent for rules without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_key: Option<String>,
    /// How many events the alert covers.
    pub count: u64,
    pub first_event_id: Uuid,
    pub first_event_at: DateTime<Utc>,
    pub last_event_id: Uuid,
    pub last_event_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub status: AlertStatus,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// The last note given when acknowledging or resolving.
    pub note: Option<String>,
    /// The event that raised the alert: action, outcome, actor, source address, target, reason.
    #[schema(value_type = Object)]
    pub context: Value,
}

pub(crate) const ALERT_COLUMNS: &str = "id, tenant_id, rule_id, severity, title_ja, title_en, group_key, count, first_event_id, \
     first_event_at, last_event_id, last_event_at, created_at, updated_at, status, acknowledged_by, acknowledged_at, \
     resolved_by, resolved_at, note, context";

impl AlertView {
    pub(crate) fn from_row(r: &QueryResult) -> Result<Self, AlertError> {
        let severity: String = r.try_get("", "severity")?;
        let status: String = r.try_get("", "status")?;
        let group: String = r.try_get("", "group_key")?;
        let count: i64 = r.try_get("", "count")?;
        let context: String = r.try_get("", "context")?;
        Ok(Self {
            id: r.try_get("", "id")?,
            tenant_id: r.try_get("", "tenant_id")?,
            rule_id: r.try_get("", "rule_id")?,
            severity: Severity::parse(&severity).unwrap_or(Severity::High),
            title_ja: r.try_get("", "title_ja")?,
            title_en: r.try_get("", "title_en")?,
            group_key: Some(group).filter(|g| !g.is_empty()),
            count: u64::try_from(count).unwrap_or(0),
            first_event_id: r.try_get("", "first_event_id")?,
            first_event_at: r.try_get("", "first_event_at")?,
            last_event_id: r.try_get("", "last_event_id")?,
            last_event_at: r.try_get("", "last_event_at")?,
            created_at: r.try_get("", "created_at")?,
            updated_at: r.try_get("", "updated_at")?,
            status: AlertStatus::parse(&status).unwrap_or(AlertStatus::Open),
            acknowledged_by: r.try_get("", "acknowledged_by")?,
            acknowledged_at: r.try_get("", "acknowledged_at")?,
            resolved_by: r.try_get("", "resolved_by")?,
            resolved_at: r.try_get("", "resolved_at")?,
            note: r.try_get("", "note")?,
            context: serde_json::from_str(&context).unwrap_or(Value::Null),
        })
    }
}

pub(crate) async fn alert_by_id<C: ConnectionTrait>(
    c: &C,
    id: Uuid,
) -> Result<Option<AlertView>, AlertError> {
    query_one(
        c,
        &format!("SELECT {ALERT_COLUMNS} FROM audit_alerts WHERE id = $1"),
        vec![id.into()],
    )
    .await?
    .map(|r| AlertView::from_row(&r))
    .transpose()
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// One tenant in the caller's scope. Without it: the caller's tenant, and for provider
    /// roles also every institution of the provider.
    pub tenant_id: Option<Uuid>,
    /// `open`, `acknowledged` or `resolved`.
    pub status: Option<String>,
    /// Exactly this severity (`info`, `low`, `medium`, `high`, `critical`).
    pub severity: Option<String>,
    /// Only alerts of this rule.
    pub rule_id: Option<String>,
    /// Page size, 1–500 (default 100).
    pub limit: Option<u64>,
    pub offset: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AlertPage {
    pub items: Vec<AlertView>,
    pub limit: u64,
    pub offset: u64,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertNote {
    /// Why (at most 1000 characters), e.g. "本人に確認済み: パスワード入力誤り".
    pub note: Option<String>,
}

/// A rule as it applies to a tenant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EffectiveRule {
    /// The rule with the tenant's override applied: what is evaluated.
    pub rule: Rule,
    /// The rule as shipped (or as in `audit.alert_rules_file`).
    pub base: Rule,
    /// The tenant's override, if any.
    #[serde(rename = "override", default, skip_serializing_if = "Option::is_none")]
    pub tenant_override: Option<RuleOverride>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RulesView {
    pub tenant_id: Uuid,
    pub rules: Vec<EffectiveRule>,
}

/// Replaces the tenant's overrides: rules not listed (or listed with no setting) go back to
/// their base form.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRules {
    /// A tenant in the caller's scope (default: the caller's own).
    pub tenant_id: Option<Uuid>,
    pub overrides: Vec<RuleOverride>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// HTTPS POST of the alert as JSON, signed with HMAC-SHA256.
    Webhook,
    /// A mail to each listed address.
    Email,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Email => "email",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "webhook" => Some(ChannelKind::Webhook),
            "email" => Some(ChannelKind::Email),
            _ => None,
        }
    }
}

/// Where a tenant's alerts are sent. The webhook secret is never shown after creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChannelView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub kind: ChannelKind,
    pub name: String,
    /// Webhooks: the endpoint, without its query string (which may carry a token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Email: the recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// Alerts below this severity are not sent here.
    pub min_severity: Severity,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// Set once the channel was deleted: it receives nothing, its deliveries stay listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A channel as stored, with what delivery needs: the full URL and the signing secret, both
/// sealed (a webhook URL often carries a token of its own).
#[derive(Debug, Clone)]
pub(crate) struct ChannelRow {
    pub view: ChannelView,
    pub url_sealed: Option<String>,
    pub secret_sealed: Option<String>,
    /// Mail channels: the recipient list (JSON) sealed; `view.recipients` is empty until
    /// [`super::AlertService::reveal_recipients`] opens it. Channels from before sealing keep a
    /// readable list in `recipients` until the re-encryption pass moves it.
    pub recipients_sealed: Option<String>,
}

pub(crate) const CHANNEL_COLUMNS: &str = "id, tenant_id, kind, name, url, url_sealed, recipients, recipients_sealed, min_severity, enabled, secret_sealed, created_at, created_by, deleted_at";

/// The URL shown to people: scheme, host, port and path; no query, fragment or credentials, and
/// long path segments (webhook services often put a token there) masked.
pub fn display_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let path = u
                .path()
                .split('/')
                .map(|s| if s.chars().count() > 16 { "…" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            format!(
                "{}://{}{}{}",
                u.scheme(),
                u.host_str().unwrap_or(""),
                port,
                path
            )
        }
        Err(_) => String::new(),
    }
}

impl ChannelRow {
    pub(crate) fn from_row(r: &QueryResult) -> Result<Self, AlertError> {
        let kind: String = r.try_get("", "kind")?;
        let min: String = r.try_get("", "min_severity")?;
        let url: Option<String> = r.try_get("", "url")?;
        let recipients: Option<String> = r.try_get("", "recipients")?;
        let recipients: Vec<String> = recipients
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        Ok(Self {
            view: ChannelView {
                id: r.try_get("", "id")?,
                tenant_id: r.try_get("", "tenant_id")?,
                kind: ChannelKind::parse(&kind).unwrap_or(ChannelKind::Webhook),
                name: r.try_get("", "name")?,
                url,
                recipients,
                min_severity: Severity::parse(&min).unwrap_or(Severity::Info),
                enabled: r.try_get("", "enabled")?,
                created_at: r.try_get("", "created_at")?,
                created_by: r.try_get("", "created_by")?,
                deleted_at: r.try_get("", "deleted_at")?,
            },
            url_sealed: r.try_get("", "url_sealed")?,
            secret_sealed: r.try_get("", "secret_sealed")?,
            recipients_sealed: r.try_get("", "recipients_sealed")?,
        })
    }
}

pub(crate) async fn channel_by_id<C: ConnectionTrait>(
    c: &C,
    id: Uuid,
) -> Result<Option<ChannelRow>, AlertError> {
    query_one(
        c,
        &format!("SELECT {CHANNEL_COLUMNS} FROM audit_notification_channels WHERE id = $1"),
        vec![id.into()],
    )
    .await?
    .map(|r| ChannelRow::from_row(&r))
    .transpose()
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewChannel {
    /// A tenant in the caller's scope (default: the caller's own).
    pub tenant_id: Option<Uuid>,
    pub kind: ChannelKind,
    /// A name people recognise, e.g. "情報システム室 Slack".
    pub name: String,
    /// Webhooks: an `https://` URL (`http://` only to this host, for local receivers).
    pub url: Option<String>,
    /// Email: 1–20 addresses, e.g. the tenant's administrators.
    pub recipients: Option<Vec<String>>,
    /// Default `info` (every alert).
    pub min_severity: Option<Severity>,
}

/// A new channel. For a webhook, `secret` is shown this once: the receiver verifies
/// `x-anshin-signature` with it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedChannel {
    pub channel: ChannelView,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChannelList {
    pub items: Vec<ChannelView>,
}

/// One attempt to deliver an alert to a channel (for email, to one recipient).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    pub id: Uuid,
    pub alert_id: Uuid,
    pub channel_id: Uuid,
    /// The job's attempt number (1 for the first).
    pub attempt: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// `delivered` or `failed`.
    pub status: String,
    /// HTTP status for webhooks, SMTP reply code for mail, when there was an answer.
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub attempted_at: DateTime<Utc>,
    pub duration_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    pub items: Vec<DeliveryView>,
}

pub(crate) async fn deliveries_of<C: ConnectionTrait>(
    c: &C,
    tenant: Uuid,
    channel: Uuid,
    limit: u64,
) -> Result<Vec<DeliveryView>, AlertError> {
    let rows = query(
        c,
        "SELECT id, alert_id, channel_id, attempt, recipient, status, status_code, error, attempted_at, duration_ms \
         FROM audit_alert_deliveries WHERE tenant_id = $1 AND channel_id = $2 ORDER BY attempted_at DESC, id DESC LIMIT $3",
        vec![tenant.into(), channel.into(), i64::try_from(limit).unwrap_or(100).into()],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(DeliveryView {
                id: r.try_get("", "id")?,
                alert_id: r.try_get("", "alert_id")?,
                channel_id: r.try_get("", "channel_id")?,
                attempt: r.try_get("", "attempt")?,
                recipient: r.try_get("", "recipient")?,
                status: r.try_get("", "status")?,
                status_code: r.try_get("", "status_code")?,
                error: r.try_get("", "error")?,
                attempted_at: r.try_get("", "attempted_at")?,
                duration_ms: r.try_get("", "duration_ms")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_query_or_credentials() {
        assert_eq!(
            display_url("https://u:p@hooks.example.jp:8443/services/T0/B1?token=abc#x"),
            "https://hooks.example.jp:8443/services/T0/B1"
        );
        assert_eq!(
            display_url("https://hooks.example.jp/services/T0/B1/a8f3kq0d9s8d7f6g5h4j"),
            "https://hooks.example.jp/services/T0/B1/…"
        );
        assert_eq!(display_url("not a url"), "");
    }
}
