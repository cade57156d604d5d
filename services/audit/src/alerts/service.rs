//! The alert API's typed core: the inbox (list, acknowledge, resolve), the tenant's rules and
//! overrides, notification channels and their delivery record. Reading is for auditors and
//! admins; changing is for admins. Provider roles reach their institutions (`audit_tenants`).
//! Scope is checked before role: a tenant or alert outside the caller's scope is "not found".
//! Every change records an audit event in the same transaction.

use super::engine::load_overrides;
use super::model::*;
use super::rules::{RuleSet, Severity};
use super::sealing::{
    mask_address, recipients_context, secret_context, url_context, Sealing, RECIPIENTS_PURPOSE,
    WEBHOOK_SECRET_PURPOSE, WEBHOOK_URL_PURPOSE,
};
use super::secretbox::SecretBox;
use super::sql::{exec, query, query_one};
use super::AlertError;
use crate::event::{Actor, AuditEvent, Outcome, Source, Target};
use crate::service::may_read;
use anshin_platform::db::{begin_tenant_write_tx, tenant_reader};
use anshin_platform::sealer::SecretSealer;
use anshin_platform::{Principal, Role, TenantScope};
use chrono::Utc;
use sea_orm::{ConnectionTrait, DatabaseConnection, Value};
use std::collections::HashSet;
use std::sync::Arc;
use uuid::Uuid;

pub const MAX_PAGE: u64 = 500;
pub const MAX_CHANNELS_PER_TENANT: usize = 20;
pub const MAX_RECIPIENTS: usize = 20;
const MAX_NOTE_CHARS: usize = 1000;

#[derive(Clone)]
pub struct AlertService {
    pub(crate) db: DatabaseConnection,
    rules: Arc<RuleSet>,
    /// Seals webhook secrets and URLs: under the tenant's key with the key service when the
    /// server provides one ([`Self::with_sealer`]), otherwise with the interim secret box.
    pub(crate) sealing: Sealing,
}

fn require_reader(p: &Principal) -> Result<(), AlertError> {
    if may_read(p.role) && p.grant.is_none() {
        Ok(())
    } else {
        Err(AlertError::Forbidden(
            "audit alerts are for the auditor and admin roles".into(),
        ))
    }
}

fn require_admin(p: &Principal) -> Result<(), AlertError> {
    if matches!(p.role, Role::InstitutionAdmin | Role::ProviderAdmin)
        && p.grant.is_none()
        && p.may_write()
    {
        Ok(())
    } else {
        Err(AlertError::Forbidden(
            "only administrators change audit alerts, alert rules and notification channels".into(),
        ))
    }
}

fn clean_note(note: Option<String>) -> Result<Option<String>, AlertError> {
    let note = note.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
    if note
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NOTE_CHARS)
    {
        return Err(AlertError::Invalid(format!(
            "the note may have at most {MAX_NOTE_CHARS} characters"
        )));
    }
    Ok(note)
}

/// Whether `tenant` is in the principal's scope: their own tenant, or for provider roles an
/// institution of their provider.
async fn in_scope<C: ConnectionTrait>(
    c: &C,
    p: &Principal,
    tenant: Uuid,
) -> Result<bool, AlertError> {
    if tenant == p.tenant_id {
        return Ok(true);
    }
    let TenantScope::Provider(provider) = p.scope() else {
        return Ok(false);
    };
    Ok(query_one(
        c,
        "SELECT 1 AS x FROM audit_tenants WHERE tenant_id = $1 AND provider_id = $2",
        vec![tenant.into(), provider.into()],
    )
    .await?
    .is_some())
}

fn event(p: &Principal, tenant: Uuid, action: &str, target: Target, source: &Source) -> AuditEvent {
    AuditEvent::new(tenant, Actor::from_principal(p), action, Outcome::Success)
        .target(target)
        .source(source.clone())
}

fn valid_webhook_url(raw: &str) -> Result<String, AlertError> {
    let bad = |m: &str| AlertError::Invalid(format!("url: {m}"));
    let raw = raw.trim();
    if raw.len() > 2000 {
        return Err(bad("at most 2000 characters"));
    }
    let u = reqwest::Url::parse(raw).map_err(|_| bad("not a URL"))?;
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad(
            "no credentials in the URL; the signature authenticates Anshin",
        ));
    }
    if u.fragment().is_some() {
        return Err(bad("no #fragment"));
    }
    let loopback = match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => return Err(bad("needs a host")),
    };
    match u.scheme() {
        "https" => Ok(u.to_string()),
        "http" if loopback => Ok(u.to_string()),
        "http" => Err(bad(
            "must be https:// (plain http only to this host, for a local receiver)",
        )),
        _ => Err(bad("must be https://")),
    }
}

fn valid_recipients(list: Vec<String>) -> Result<Vec<String>, AlertError> {
    let mut out: Vec<String> = Vec::new();
    for r in list {
        let r = r.trim().to_string();
        if r.parse::<lettre::Address>().is_err() || r.len() > 254 {
            return Err(AlertError::Invalid(format!(
                "recipients: '{r}' is not a mail address"
            )));
        }
        if !out.iter().any(|o| o.eq_ignore_ascii_case(&r)) {
            out.push(r);
        }
    }
    if out.is_empty() || out.len() > MAX_RECIPIENTS {
        return Err(AlertError::Invalid(format!(
            "recipients: give 1–{MAX_RECIPIENTS} addresses"
        )));
    }
    Ok(out)
}

fn new_secret() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    )
}

impl AlertService {
    /// `secrets` is the interim secret box (`alerts::secretbox::load(data_dir)`): it seals new
    /// channels when no key service is given, and always opens channels sealed before one was.
    pub fn new(db: DatabaseConnection, rules: Arc<RuleSet>, secrets: SecretBox) -> Self {
        Self {
            db,
            rules,
            sealing: Sealing::new(secrets),
        }
    }

    /// Seals new webhook secrets and URLs with the key service (under each tenant's KEK).
    pub fn with_sealer(mut self, sealer: Arc<dyn SecretSealer>) -> Self {
        self.sealing = self.sealing.with_sealer(sealer);
        self
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// The sealer hook evaluating these rules.
    pub fn engine(&self) -> super::AlertEngine {
        super::AlertEngine::new(self.rules.clone())
    }

    /// The requested tenant (default: the caller's) if in scope, then the role check.
    async fn tenant_for(
        &self,
        p: &Principal,
        requested: Option<Uuid>,
        write: bool,
    ) -> Result<Uuid, AlertError> {
        let t = requested.unwrap_or(p.tenant_id);
        if t != p.tenant_id {
            let r = tenant_reader(&self.db, p.tenant_id).await?;
            let ok = in_scope(&r, p, t).await?;
            r.finish().await?;
            if !ok {
                return Err(AlertError::NotFound("no such tenant".into()));
            }
        }
        if write {
            require_admin(p)?;
        } else {
            require_reader(p)?;
        }
        Ok(t)
    }

    /// Alerts, newest first.
    pub async fn list(&self, p: &Principal, q: &AlertQuery) -> Result<AlertPage, AlertError> {
        let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
        let offset = q.offset.unwrap_or(0);
        let mut values: Vec<Value> = Vec::new();
        let mut push = |v: Value| {
            values.push(v);
            format!("${}", values.len())
        };
        let mut conds = Vec::new();
        match q.tenant_id {
            Some(_) => {
                let t = self.tenant_for(p, q.tenant_id, false).await?;
                conds.push(format!("tenant_id = {}", push(t.into())));
            }
            None => {
                require_reader(p)?;
                let own = push(p.tenant_id.into());
                match p.scope() {
                    TenantScope::Provider(provider) => conds.push(format!(
                        "(tenant_id = {own} OR tenant_id IN (SELECT tenant_id FROM audit_tenants WHERE provider_id = {}))",
                        push(provider.into())
                    )),
                    TenantScope::Institution(_) => conds.push(format!("tenant_id = {own}")),
                }
            }
        }
        if let Some(s) = q.status.as_deref().filter(|s| !s.is_empty()) {
            let s = AlertStatus::parse(s).ok_or_else(|| {
                AlertError::Invalid("status must be open, acknowledged or resolved".into())
            })?;
            conds.push(format!("status = {}", push(s.as_str().into())));
        }
        if let Some(s) = q.severity.as_deref().filter(|s| !s.is_empty()) {
            let s = Severity::parse(s).ok_or_else(|| {
                AlertError::Invalid("severity must be info, low, medium, high or critical".into())
            })?;
            conds.push(format!("severity = {}", push(s.as_str().into())));
        }
        if let Some(r) = q.rule_id.as_deref().filter(|s| !s.is_empty()) {
            conds.push(format!("rule_id = {}", push(r.to_string().into())));
        }
        let lim = push(i64::try_from(limit).unwrap_or(100).into());
        let off = push(i64::try_from(offset).unwrap_or(0).into());
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM audit_alerts WHERE {} ORDER BY created_at DESC, id DESC LIMIT {lim} OFFSET {off}",
            conds.join(" AND ")
        );
        let r = tenant_reader(&self.db, p.tenant_id).await?;
        let rows = query(&r, &sql, values).await?;
        r.finish().await?;
        let items = rows
            .iter()
            .map(AlertView::from_row)
            .collect::<Result<_, _>>()?;
        Ok(AlertPage {
            items,
            limit,
            offset,
        })
    }

    /// One alert (404 outside the caller's scope).
    pub async fn get(&self, p: &Principal, id: Uuid) -> Result<AlertView, AlertError> {
        let r = tenant_reader(&self.db, p.tenant_id).await?;
        let a = alert_by_id(&r, id).await?;
        let a = match a {
            Some(a) if in_scope(&r, p, a.tenant_id).await? => a,
            _ => {
                r.finish().await?;
                return Err(not_found_alert());
            }
        };
        r.finish().await?;
        require_reader(p)?;
        Ok(a)
    }

    /// Open → acknowledged (admins).
    pub async fn acknowledge(
        &self,
        p: &Principal,
        id: Uuid,
        note: Option<String>,
        source: &Source,
    ) -> Result<AlertView, AlertError> {
        self.transition(p, id, note, source, AlertStatus::Acknowledged)
            .await
    }

    /// Open or acknowledged → resolved (admins). Final.
    pub async fn resolve(
        &self,
        p: &Principal,
        id: Uuid,
        note: Option<String>,
        source: &Source,
    ) -> Result<AlertView, AlertError> {
        self.transition(p, id, note, source, AlertStatus::Resolved)
            .await
    }

    async fn transition(
        &self,
        p: &Principal,
        id: Uuid,
        note: Option<String>,
        source: &Source,
        to: AlertStatus,
    ) -> Result<AlertView, AlertError> {
        let tx = begin_tenant_write_tx(&self.db, p.tenant_id).await?;
        let a = match alert_by_id(&tx, id).await? {
            Some(a) if in_scope(&tx, p, a.tenant_id).await? => a,
            _ => return Err(not_found_alert()),
        };
        require_admin(p)?;
        let note = clean_note(note)?;
        let now = Utc::now();
        let who = p.subject.label();
        let (sql, from): (&str, &[&str]) = match to {
            AlertStatus::Acknowledged => (
                "UPDATE audit_alerts SET status = 'acknowledged', acknowledged_by = $2, acknowledged_at = $3, updated_at = $3, \
                 note = COALESCE($4, note) WHERE id = $1 AND status = 'open'",
                &["open"],
            ),
            AlertStatus::Resolved => (
                "UPDATE audit_alerts SET status = 'resolved', resolved_by = $2, resolved_at = $3, updated_at = $3, \
                 note = COALESCE($4, note) WHERE id = $1 AND status IN ('open', 'acknowledged')",
                &["open", "acknowledged"],
            ),
            AlertStatus::Open => {
                return Err(AlertError::Invalid("an alert cannot be reopened".into()))
            }
        };
        if !from.contains(&a.status.as_str()) {
            return Err(AlertError::Conflict(format!(
                "the alert is {}; it cannot become {}",
                a.status.as_str(),
                to.as_str()
            )));
        }
        let changed = exec(
            &tx,
            sql,
            vec![id.into(), who.into(), now.into(), note.clone().into()],
        )
        .await?;
        if changed.rows_affected() != 1 {
            return Err(AlertError::Conflict(
                "the alert was changed by someone else just now".into(),
            ));
        }
        let action = match to {
            AlertStatus::Acknowledged => "audit.alert.acknowledge",
            _ => "audit.alert.resolve",
        };
        let e = event(
            p,
            a.tenant_id,
            action,
            Target::new("audit_alert", id),
            source,
        )
        .detail("rule_id", &a.rule_id)
        .detail("severity", a.severity.as_str())
        .detail("from", a.status.as_str())
        .detail("note", &note);
        crate::store::record(&tx, &e).await?;
        let a = alert_by_id(&tx, id).await?.ok_or_else(not_found_alert)?;
        tx.commit().await?;
        tracing::info!(tenant = %a.tenant_id, alert = %id, status = to.as_str(), "audit alert updated");
        Ok(a)
    }

    fn rules_view(&self, tenant: Uuid, overrides: Vec<super::RuleOverride>) -> RulesView {
        let effective = self.rules.effective(&overrides);
        let rules = self
            .rules
            .rules()
            .iter()
            .zip(effective)
            .map(|(base, rule)| EffectiveRule {
                tenant_override: overrides.iter().find(|o| o.rule_id == base.id).cloned(),
                rule,
                base: base.clone(),
            })
            .collect();
        RulesView {
            tenant_id: tenant,
            rules,
        }
    }

    /// The rules as they apply to a tenant, with its overrides.
    pub async fn tenant_rules(
        &self,
        p: &Principal,
        tenant: Option<Uuid>,
    ) -> Result<RulesView, AlertError> {
        let t = self.tenant_for(p, tenant, false).await?;
        let r = tenant_reader(&self.db, p.tenant_id).await?;
        let overrides = load_overrides(&r, t).await?;
        r.finish().await?;
        Ok(self.rules_view(t, overrides))
    }

    /// Replaces the tenant's overrides (admins).
    pub async fn put_rules(
        &self,
        p: &Principal,
        req: PutRules,
        source: &Source,
    ) -> Result<RulesView, AlertError> {
        let t = self.tenant_for(p, req.tenant_id, true).await?;
        let mut seen = HashSet::new();
        let mut keep = Vec::new();
        for o in req.overrides {
            let Some(base) = self.rules.get(&o.rule_id) else {
                return Err(AlertError::Invalid(format!(
                    "overrides: there is no rule '{}'",
                    o.rule_id
                )));
            };
            if !seen.insert(o.rule_id.clone()) {
                return Err(AlertError::Invalid(format!(
                    "overrides: rule '{}' is listed twice",
                    o.rule_id
                )));
            }
            base.with_override(&o)
                .map_err(|e| AlertError::Invalid(format!("overrides: {e}")))?;
            if !o.is_empty() {
                keep.push(o);
            }
        }
        let tx = begin_tenant_write_tx(&self.db, p.tenant_id).await?;
        let before = load_overrides(&tx, t).await?;
        exec(
            &tx,
            "DELETE FROM audit_alert_rule_overrides WHERE tenant_id = $1",
            vec![t.into()],
        )
        .await?;
        let now = Utc::now();
        for o in &keep {
            exec(
                &tx,
                "INSERT INTO audit_alert_rule_overrides (tenant_id, rule_id, settings, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5)",
                vec![
                    t.into(),
                    o.rule_id.clone().into(),
                    serde_json::to_string(o)?.into(),
                    now.into(),
                    p.subject.label().into(),
                ],
            )
            .await?;
        }
        let e = event(
            p,
            t,
            "audit.alert_rules.update",
            Target::new("audit_alert_rules", t),
            source,
        )
        .detail("before", &before)
        .detail("after", &keep);
        crate::store::record(&tx, &e).await?;
        tx.commit().await?;
        tracing::info!(tenant = %t, overrides = keep.len(), "audit alert rule overrides replaced");
        Ok(self.rules_view(t, keep))
    }

    /// The tenant's notification channels (not deleted ones).
    pub async fn channels(
        &self,
        p: &Principal,
        tenant: Option<Uuid>,
    ) -> Result<Vec<ChannelView>, AlertError> {
        let t = self.tenant_for(p, tenant, false).await?;
        let r = tenant_reader(&self.db, p.tenant_id).await?;
        let rows = query(
            &r,
            &format!("SELECT {CHANNEL_COLUMNS} FROM audit_notification_channels WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY created_at, id"),
            vec![t.into()],
        )
        .await?;
        r.finish().await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut ch = ChannelRow::from_row(row)?;
            self.sealing.reveal_recipients(&mut ch).await?;
            out.push(ch.view);
        }
        Ok(out)
    }

    /// Adds a channel (admins). A webhook gets a new signing secret, returned this once.
    pub async fn create_channel(
        &self,
        p: &Principal,
        req: NewChannel,
        source: &Source,
    ) -> Result<CreatedChannel, AlertError> {
        let t = self.tenant_for(p, req.tenant_id, true).await?;
        let name = req.name.trim().to_string();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(AlertError::Invalid(
                "name must have 1–100 characters".into(),
            ));
        }
        let id = Uuid::now_v7();
        let (url, recipients, secret) = match req.kind {
            ChannelKind::Webhook => {
                if req.recipients.is_some() {
                    return Err(AlertError::Invalid(
                        "recipients belong to email channels".into(),
                    ));
                }
                let url = valid_webhook_url(req.url.as_deref().unwrap_or(""))?;
                (Some(url), None, Some(new_secret()))
            }
            ChannelKind::Email => {
                if req.url.is_some() {
                    return Err(AlertError::Invalid(
                        "url belongs to webhook channels".into(),
                    ));
                }
                let list = valid_recipients(req.recipients.unwrap_or_default())?;
                (None, Some(list), None)
            }
        };
        // Sealed before the write transaction: the key service stores a new data key in a
        // transaction of its own (on SQLite a second writer inside ours would wait for it).
        // When the key service is unreachable nothing is stored (503).
        let sealed = match secret.as_deref() {
            Some(s) => Some(
                self.sealing
                    .seal(t, WEBHOOK_SECRET_PURPOSE, &secret_context(t, id), s)
                    .await?,
            ),
            None => None,
        };
        let url_sealed = match url.as_deref() {
            Some(u) => Some(
                self.sealing
                    .seal(t, WEBHOOK_URL_PURPOSE, &url_context(t, id), u)
                    .await?,
            ),
            None => None,
        };
        let recipients_sealed = match &recipients {
            Some(list) => Some(
                self.sealing
                    .seal(
                        t,
                        RECIPIENTS_PURPOSE,
                        &recipients_context(t, id),
                        &serde_json::to_string(list)?,
                    )
                    .await?,
            ),
            None => None,
        };
        let url_shown = url.as_deref().map(display_url);
        let min = req.min_severity.unwrap_or(Severity::Info);
        let tx = begin_tenant_write_tx(&self.db, p.tenant_id).await?;
        let n: i64 = query_one(
            &tx,
            "SELECT COUNT(*) AS n FROM audit_notification_channels WHERE tenant_id = $1 AND deleted_at IS NULL",
            vec![t.into()],
        )
        .await?
        .map(|r| r.try_get("", "n"))
        .transpose()?
        .unwrap_or(0);
        if n >= MAX_CHANNELS_PER_TENANT as i64 {
            return Err(AlertError::Conflict(format!(
                "a tenant has at most {MAX_CHANNELS_PER_TENANT} notification channels; delete one first"
            )));
        }
        let now = Utc::now();
        exec(
            &tx,
            "INSERT INTO audit_notification_channels (id, tenant_id, kind, name, url, url_sealed, recipients_sealed, min_severity, \
             enabled, secret_sealed, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            vec![
                id.into(),
                t.into(),
                req.kind.as_str().into(),
                name.clone().into(),
                url_shown.into(),
                url_sealed.into(),
                recipients_sealed.into(),
                min.as_str().into(),
                true.into(),
                sealed.into(),
                now.into(),
                p.subject.label().into(),
            ],
        )
        .await?;
        let mut ch = channel_by_id(&tx, id)
            .await?
            .ok_or_else(|| AlertError::Setup("the new channel was not stored".into()))?;
        ch.view.recipients = recipients.clone().unwrap_or_default();
        // The trail tells recipients apart without keeping their addresses readable.
        let masked: Vec<String> = ch.view.recipients.iter().map(|r| mask_address(r)).collect();
        let e = event(
            p,
            t,
            "audit.notification_channel.create",
            Target::new("notification_channel", id),
            source,
        )
        .detail("kind", req.kind.as_str())
        .detail("name", &name)
        .detail("url", &ch.view.url)
        .detail("recipients", &masked)
        .detail("min_severity", min.as_str());
        crate::store::record(&tx, &e).await?;
        tx.commit().await?;
        tracing::info!(tenant = %t, channel = %id, kind = req.kind.as_str(), "notification channel created");
        Ok(CreatedChannel {
            channel: ch.view,
            secret,
        })
    }

    /// Deletes a channel (admins): it receives nothing more; its delivery record stays.
    pub async fn delete_channel(
        &self,
        p: &Principal,
        id: Uuid,
        source: &Source,
    ) -> Result<(), AlertError> {
        let tx = begin_tenant_write_tx(&self.db, p.tenant_id).await?;
        let ch = match channel_by_id(&tx, id).await? {
            Some(c)
                if c.view.deleted_at.is_none() && in_scope(&tx, p, c.view.tenant_id).await? =>
            {
                c
            }
            _ => return Err(AlertError::NotFound("no such notification channel".into())),
        };
        require_admin(p)?;
        exec(
            &tx,
            "UPDATE audit_notification_channels SET deleted_at = $2, enabled = $3, secret_sealed = NULL, url_sealed = NULL, recipients = NULL, recipients_sealed = NULL WHERE id = $1 AND deleted_at IS NULL",
            vec![id.into(), Utc::now().into(), false.into()],
        )
        .await?;
        let e = event(
            p,
            ch.view.tenant_id,
            "audit.notification_channel.delete",
            Target::new("notification_channel", id),
            source,
        )
        .detail("kind", ch.view.kind.as_str())
        .detail("name", &ch.view.name);
        crate::store::record(&tx, &e).await?;
        tx.commit().await?;
        tracing::info!(tenant = %ch.view.tenant_id, channel = %id, "notification channel deleted");
        Ok(())
    }

    /// A channel's delivery attempts, newest first (deleted channels too).
    pub async fn deliveries(
        &self,
        p: &Principal,
        channel: Uuid,
        limit: Option<u64>,
    ) -> Result<Vec<DeliveryView>, AlertError> {
        let r = tenant_reader(&self.db, p.tenant_id).await?;
        let ch = match channel_by_id(&r, channel).await? {
            Some(c) if in_scope(&r, p, c.view.tenant_id).await? => c,
            _ => {
                r.finish().await?;
                return Err(AlertError::NotFound("no such notification channel".into()));
            }
        };
        if let Err(e) = require_reader(p) {
            r.finish().await?;
            return Err(e);
        }
        let out = deliveries_of(
            &r,
            ch.view.tenant_id,
            channel,
            limit.unwrap_or(100).clamp(1, MAX_PAGE),
        )
        .await?;
        r.finish().await?;
        Ok(out)
    }
}

fn not_found_alert() -> AlertError {
    AlertError::NotFound("no such audit alert".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls() {
        assert!(valid_webhook_url("https://hooks.example.jp/anshin").is_ok());
        assert!(valid_webhook_url("http://127.0.0.1:8080/hook").is_ok());
        assert!(valid_webhook_url("http://localhost/hook").is_ok());
        assert!(valid_webhook_url("http://[::1]:9/x").is_ok());
        for bad in [
            "http://hooks.example.jp/x",
            "ftp://hooks.example.jp/x",
            "https://u:p@hooks.example.jp/x",
            "https://hooks.example.jp/x#frag",
            "hooks.example.jp",
            "",
        ] {
            assert!(valid_webhook_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn recipients() {
        assert_eq!(
            valid_recipients(vec![" a@b.jp ".into(), "A@b.jp".into(), "c@d.jp".into()]).unwrap(),
            ["a@b.jp", "c@d.jp"]
        );
        assert!(valid_recipients(vec![]).is_err());
        assert!(valid_recipients(vec!["not an address".into()]).is_err());
        assert!(valid_recipients((0..21).map(|i| format!("u{i}@b.jp")).collect()).is_err());
    }

    #[test]
    fn secrets_are_random_and_long() {
        let a = new_secret();
        assert!(a.starts_with("whsec_") && a.len() == 6 + 43);
        assert_ne!(a, new_secret());
    }
}
