//! Audit pages (issue 4 item 10): search of a tenant's trail, one event with its proof, the
//! export download and the alert inbox.
//!
//! Pages read through the audit service's typed API as the signed-in principal, so its scope and
//! role checks decide what is shown (a tenant or event outside the viewer's scope is "not
//! found"). Search and export are plain GET forms: times are typed in Japan time and converted to
//! UTC here, so they need no script. Acknowledging and resolving alerts goes through the JSON API
//! from `web/static/admin.js` with the session's CSRF token.

use super::admin::{self, base_context, forbidden, gate, msg, Area, Viewer};
use super::{not_found, page_with, Lang, Web};
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use anshin_audit::alerts::{AlertError, AlertQuery, AlertService, AlertStatus, AlertView};
use anshin_audit::export::ExportQuery;
use anshin_audit::service::{CheckpointView, EventView, SearchQuery};
use anshin_audit::{AuditError, AuditEvent, AuditService, ClockStamp};
use anshin_identity::IdentityService;
use anshin_platform::error::Problem;
use anshin_platform::{Principal, TenantScope};
use anshin_tenancy::{TenancyService, TenantFilter};
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// Rows per page of the search and of the alert inbox.
const PAGE: u64 = 50;

// ---------------------------------------------------------------------------------------------
// Times and links

/// An event time in Japan time, to the second (audit times matter to the second).
pub(crate) fn fmt_secs(t: DateTime<Utc>) -> String {
    (t + Duration::hours(9))
        .format("%Y-%m-%d %H:%M:%S JST")
        .to_string()
}

/// A UTC time as a `datetime-local` value in Japan time.
fn jst_input(t: DateTime<Utc>) -> String {
    (t + Duration::hours(9))
        .format("%Y-%m-%dT%H:%M")
        .to_string()
}

/// A time typed on a page as UTC: a `datetime-local` value (read as Japan time whatever the
/// browser's zone), an RFC 3339 time with its own offset, or a bare date, which is the start of
/// that day in Japan (with `end`, the start of the next day, so "to 2026-04-01" includes it).
pub(crate) fn parse_jst(s: &str, end: bool) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    const FORMATS: [&str; 4] = [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d %H:%M:%S",
    ];
    let naive = FORMATS
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .or_else(|| {
            let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
            let d = if end { d.succ_opt()? } else { d };
            d.and_hms_opt(0, 0, 0)
        })?;
    Some(DateTime::from_naive_utc_and_offset(
        naive - Duration::hours(9),
        Utc,
    ))
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters), so the links
/// built here contain only `[A-Za-z0-9-._~%]` besides `?`, `=` and `&`.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `path?k=v&…` with the non-empty pairs.
fn link(path: &str, pairs: &[(&str, &str)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    if q.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", q.join("&"))
    }
}

fn query_form<T: for<'de> Deserialize<'de> + Default>(req: &HttpRequest) -> T {
    web::Query::<T>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Tenants the viewer may pick

struct Tenants {
    /// (id, name), the viewer's own tenant first.
    list: Vec<(Uuid, String)>,
}

impl Tenants {
    /// The viewer's own tenant and, for provider roles, the institutions of the provider.
    async fn load(tenancy: &TenancyService, p: &Principal) -> Self {
        let mut list = Vec::new();
        if matches!(p.scope(), TenantScope::Provider(_)) {
            if let Ok(ts) = tenancy.list(p, &TenantFilter::default()).await {
                list.extend(ts.into_iter().map(|t| (t.id, t.name)));
            }
        } else if let Ok(t) = tenancy.get(p, p.tenant_id).await {
            list.push((t.id, t.name));
        }
        if let Some(i) = list.iter().position(|(id, _)| *id == p.tenant_id) {
            let own = list.remove(i);
            list.insert(0, own);
        }
        Self { list }
    }

    fn name(&self, id: Uuid) -> Option<String> {
        self.list
            .iter()
            .find(|(t, _)| *t == id)
            .map(|(_, n)| n.clone())
    }

    fn options(&self, selected: Uuid) -> Vec<Value> {
        self.list
            .iter()
            .map(|(id, name)| json!({"id": id, "name": name, "selected": *id == selected}))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Labels

fn outcome_name(web: &Web, lang: Lang, outcome: &str) -> String {
    msg(web, lang, &format!("outcome_{outcome}"))
}

fn actor_kind_name(web: &Web, lang: Lang, kind: &str) -> String {
    msg(web, lang, &format!("actor_kind_{kind}"))
}

/// "source, offset +12 ms" / "source, offset unknown" for a clock stamp.
fn clock_text(web: &Web, lang: Lang, clock: &ClockStamp) -> String {
    let offset = match clock.offset_ms {
        Some(ms) => msg(web, lang, "audit_clock_offset").replace("{ms}", &format!("{ms:+}")),
        None => msg(web, lang, "audit_clock_offset_unknown"),
    };
    msg(web, lang, "audit_clock_fmt")
        .replace("{source}", &clock.source)
        .replace("{offset}", &offset)
}

fn actor_display(e: &AuditEvent) -> String {
    e.actor
        .label
        .clone()
        .or_else(|| e.actor.id.clone())
        .unwrap_or_else(|| "—".into())
}

// ---------------------------------------------------------------------------------------------
// Search

/// The search form as typed (every field a string, so nothing a person types is a 400).
#[derive(Debug, Clone, Default, Deserialize)]
struct SearchForm {
    tenant: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    outcome: Option<String>,
    from: Option<String>,
    to: Option<String>,
    offset: Option<String>,
}

fn field(v: &Option<String>) -> String {
    v.as_deref().map(str::trim).unwrap_or("").to_string()
}

/// The form's values, checked, as the service's query; and what is wrong with them.
struct Search {
    actor: String,
    action: String,
    target: String,
    outcome: String,
    from: String,
    to: String,
    query: SearchQuery,
    errors: Vec<String>,
}

impl Search {
    fn parse(web: &Web, lang: Lang, f: &SearchForm) -> Self {
        let mut errors = Vec::new();
        let tenant_id = match field(&f.tenant) {
            t if t.is_empty() => None,
            t => match Uuid::parse_str(&t) {
                Ok(id) => Some(id),
                Err(_) => {
                    errors.push(msg(web, lang, "audit_error_tenant"));
                    None
                }
            },
        };
        let mut time = |raw: String, end: bool, key: &str| -> Option<DateTime<Utc>> {
            if raw.is_empty() {
                return None;
            }
            let t = parse_jst(&raw, end);
            if t.is_none() {
                errors.push(msg(web, lang, key));
            }
            t
        };
        let (from, to) = (field(&f.from), field(&f.to));
        let from_t = time(from.clone(), false, "audit_error_from");
        let to_t = time(to.clone(), true, "audit_error_to");
        if let (Some(a), Some(b)) = (from_t, to_t) {
            if a >= b {
                errors.push(msg(web, lang, "audit_error_range"));
            }
        }
        let outcome = field(&f.outcome);
        if !outcome.is_empty() && !["success", "failure", "denied"].contains(&outcome.as_str()) {
            errors.push(msg(web, lang, "audit_error_outcome"));
        }
        let action = field(&f.action);
        let action_ok = action
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._*".contains(&b))
            && action
                .strip_suffix(".*")
                .unwrap_or(&action)
                .find('*')
                .is_none();
        if !action_ok {
            errors.push(msg(web, lang, "audit_error_action"));
        }
        let offset = field(&f.offset).parse::<u64>().unwrap_or(0);
        let opt = |s: &String| Some(s.clone()).filter(|s| !s.is_empty());
        let (actor, target) = (field(&f.actor), field(&f.target));
        let query = SearchQuery {
            tenant_id,
            actor: opt(&actor),
            action: opt(&action).filter(|_| action_ok),
            target: opt(&target),
            outcome: opt(&outcome)
                .filter(|o| ["success", "failure", "denied"].contains(&o.as_str())),
            from: from_t,
            to: to_t,
            limit: Some(PAGE + 1),
            offset: Some(offset),
        };
        Self {
            actor,
            action,
            target,
            outcome,
            // Echo valid times in the form's own format; keep what was typed otherwise.
            from: from_t.map(jst_input).unwrap_or(from),
            to: to_t.map(jst_input).unwrap_or(to),
            query,
            errors,
        }
    }

    /// The search as a link, at `offset`, for `tenant`.
    fn href(&self, tenant: Uuid, offset: u64) -> String {
        let tenant = tenant.to_string();
        let offset = if offset == 0 {
            String::new()
        } else {
            offset.to_string()
        };
        link(
            "/audit",
            &[
                ("tenant", &tenant),
                ("actor", &self.actor),
                ("action", &self.action),
                ("target", &self.target),
                ("outcome", &self.outcome),
                ("from", &self.from),
                ("to", &self.to),
                ("offset", &offset),
            ],
        )
    }
}

fn event_row(web: &Web, lang: Lang, e: &EventView) -> Value {
    let ev = &e.event;
    json!({
        "id": ev.id,
        "time": fmt_secs(ev.time),
        "actor": actor_display(ev),
        "actor_kind": actor_kind_name(web, lang, ev.actor.kind.as_str()),
        "action": ev.action,
        "target_type": ev.target.as_ref().map(|t| t.kind.clone()),
        "target_id": ev.target.as_ref().map(|t| t.id.clone()),
        "outcome": ev.outcome.as_str(),
        "outcome_name": outcome_name(web, lang, ev.outcome.as_str()),
        "sealed": e.seq.is_some(),
        "seq": e.seq,
    })
}

/// An audit service refusal as a page: 403 and 404 get the friendly pages, the rest a problem.
fn audit_failure(web: &Web, req: &HttpRequest, v: &Viewer, e: AuditError) -> HttpResponse {
    match e {
        AuditError::Forbidden(_) => forbidden(web, req, v),
        AuditError::NotFound(_) => not_found(web, req),
        other => {
            tracing::error!(error = %other, "an audit page failed");
            actix_web::ResponseError::error_response(&Problem::from(other))
        }
    }
}

/// `/audit`: search the trail of the viewer's tenant (or, for provider roles, of one of their
/// institutions), newest first.
pub async fn search(
    web: web::Data<Arc<Web>>,
    identity: web::Data<IdentityService>,
    tenancy: web::Data<TenancyService>,
    audit: web::Data<AuditService>,
    req: HttpRequest,
) -> HttpResponse {
    let v = match gate(&web, &identity, &req, Area::Audit).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let form: SearchForm = query_form(&req);
    search_page(&web, &tenancy, &audit, &req, &v, &form, None).await
}

async fn search_page(
    web: &Web,
    tenancy: &TenancyService,
    audit: &AuditService,
    req: &HttpRequest,
    v: &Viewer,
    form: &SearchForm,
    export_error: Option<String>,
) -> HttpResponse {
    let lang = v.lang;
    let p = &v.principal;
    let s = Search::parse(web, lang, form);
    let tenant = match audit.readable_tenant(p, s.query.tenant_id).await {
        Ok(t) => t,
        Err(e) => return audit_failure(web, req, v, e),
    };
    let mut errors = s.errors.clone();
    let mut rows = Vec::new();
    let mut more = false;
    if errors.is_empty() {
        match audit.search(p, &s.query).await {
            Ok(page) => {
                more = page.items.len() as u64 > PAGE;
                rows = page
                    .items
                    .iter()
                    .take(PAGE as usize)
                    .map(|e| event_row(web, lang, e))
                    .collect();
            }
            Err(AuditError::Invalid(d)) => errors.push(d),
            Err(e) => return audit_failure(web, req, v, e),
        }
    }
    let offset = s.query.offset.unwrap_or(0);
    let tenants = Tenants::load(tenancy, p).await;
    let key = audit.public_key();
    let mut ctx = base_context(web, v);
    ctx.insert(
        "tenant_name",
        &tenants.name(tenant).unwrap_or_else(|| tenant.to_string()),
    );
    ctx.insert("tenant_id", &tenant);
    ctx.insert("tenants", &tenants.options(tenant));
    ctx.insert(
        "form",
        &json!({
            "actor": s.actor, "action": s.action, "target": s.target,
            "from": s.from, "to": s.to,
        }),
    );
    let outcomes: Vec<Value> = ["success", "failure", "denied"]
        .iter()
        .map(|o| json!({"value": o, "name": outcome_name(web, lang, o), "selected": s.outcome == *o}))
        .collect();
    ctx.insert("outcomes", &outcomes);
    ctx.insert("errors", &errors);
    ctx.insert("events", &rows);
    ctx.insert(
        "range_text",
        &(!rows.is_empty()).then(|| {
            msg(web, lang, "audit_range")
                .replace("{from}", &(offset + 1).to_string())
                .replace("{to}", &(offset + rows.len() as u64).to_string())
        }),
    );
    ctx.insert(
        "prev_href",
        &(offset > 0).then(|| s.href(tenant, offset.saturating_sub(PAGE))),
    );
    ctx.insert("next_href", &more.then(|| s.href(tenant, offset + PAGE)));
    ctx.insert("export_error", &export_error);
    ctx.insert(
        "key",
        &json!({"algorithm": key.algorithm, "key_id": key.key_id, "public_key": key.public_key}),
    );
    page_with(web, req, "audit.html", StatusCode::OK, ctx)
}

/// `/audit/export?tenant&from&to`: the tenant's trail for the range (Japan time) as the JSON
/// Lines export with its checkpoints and proofs, as a download. The export itself is recorded by
/// the service (`audit.export`). When there is nothing to export, the search page says so.
pub async fn export(
    web: web::Data<Arc<Web>>,
    identity: web::Data<IdentityService>,
    tenancy: web::Data<TenancyService>,
    audit: web::Data<AuditService>,
    req: HttpRequest,
) -> HttpResponse {
    let v = match gate(&web, &identity, &req, Area::Audit).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    // The export form carries only the range and the tenant; the search shown on failure is the
    // same range.
    let form: SearchForm = query_form(&req);
    let form = SearchForm {
        tenant: form.tenant,
        from: form.from,
        to: form.to,
        ..SearchForm::default()
    };
    let s = Search::parse(&web, v.lang, &form);
    if !s.errors.is_empty() {
        let e = s.errors.join(" ");
        return search_page(&web, &tenancy, &audit, &req, &v, &form, Some(e)).await;
    }
    // Scope first, so "no such tenant" is a 404 and not "nothing to export".
    if let Err(e) = audit.readable_tenant(&v.principal, s.query.tenant_id).await {
        return audit_failure(&web, &req, &v, e);
    }
    let q = ExportQuery {
        tenant_id: s.query.tenant_id,
        from: s.query.from,
        to: s.query.to,
    };
    match audit.export(&v.principal, &q).await {
        Ok((bytes, summary)) => {
            let name = format!(
                "anshin-audit-{}-{}-{}.jsonl",
                summary.tenant_id, summary.first, summary.last
            );
            HttpResponse::Ok()
                .content_type("application/x-ndjson")
                .insert_header((
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}\""),
                ))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .body(bytes)
        }
        Err(AuditError::NotFound(_)) => {
            let e = msg(&web, v.lang, "audit_export_empty");
            search_page(&web, &tenancy, &audit, &req, &v, &form, Some(e)).await
        }
        Err(AuditError::Invalid(d)) => {
            search_page(&web, &tenancy, &audit, &req, &v, &form, Some(d)).await
        }
        Err(e) => audit_failure(&web, &req, &v, e),
    }
}

// ---------------------------------------------------------------------------------------------
// One event and its proof

fn checkpoint_view(web: &Web, lang: Lang, c: &CheckpointView) -> Value {
    // The clock is part of the signed body.
    let clock = serde_json::from_str::<Value>(&c.body)
        .ok()
        .and_then(|b| serde_json::from_value::<ClockStamp>(b["clock"].clone()).ok());
    json!({
        "tree_size": c.tree_size,
        "root_hash": c.root_hash,
        "time": fmt_secs(c.time),
        "time_utc": c.time.to_rfc3339_opts(SecondsFormat::Micros, true),
        "clock": clock.as_ref().map(|k| clock_text(web, lang, k)),
        "clock_source": clock.as_ref().map(|k| k.source.clone()),
        "key_id": c.key_id,
        "signature": c.signature,
        "body": c.body,
    })
}

/// `/audit/events/{id}`: every field of one event and, once sealed, the proof that it is in its
/// tenant's log, as this server re-verified it just now.
pub async fn event(
    web: web::Data<Arc<Web>>,
    identity: web::Data<IdentityService>,
    tenancy: web::Data<TenancyService>,
    audit: web::Data<AuditService>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let v = match gate(&web, &identity, &req, Area::Audit).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Ok(id) = Uuid::parse_str(&path.into_inner()) else {
        return not_found(&web, &req);
    };
    let p = &v.principal;
    let lang = v.lang;
    let view = match audit.event(p, id).await {
        Ok(e) => e,
        Err(e) => return audit_failure(&web, &req, &v, e),
    };
    let (proof, proof_error) = match view.seq {
        None => (None, None),
        Some(_) => match audit.proof(p, id).await {
            Ok(pr) => (Some(pr), None),
            // Sealed, but its checkpoint is not written yet.
            Err(AuditError::NotFound(_)) => (None, None),
            Err(e) => {
                tracing::error!(error = %e, event = %id, "the proof of an audit event failed");
                (None, Some(e.to_string()))
            }
        },
    };
    let ev = &view.event;
    let tenants = Tenants::load(&tenancy, p).await;
    let tenant = ev.tenant_id.to_string();
    let search = |k: &str, val: &str| link("/audit", &[("tenant", &tenant), (k, val)]);
    let details = serde_json::to_string_pretty(&ev.details).unwrap_or_default();
    let mut ctx = base_context(&web, &v);
    ctx.insert(
        "ev",
        &json!({
            "id": ev.id,
            "tenant_id": ev.tenant_id,
            "tenant_name": tenants.name(ev.tenant_id),
            "time": fmt_secs(ev.time),
            "time_utc": ev.time.to_rfc3339_opts(SecondsFormat::Micros, true),
            "clock": clock_text(&web, lang, &ev.clock),
            "actor": actor_display(ev),
            "actor_kind": ev.actor.kind.as_str(),
            "actor_kind_name": actor_kind_name(&web, lang, ev.actor.kind.as_str()),
            "actor_id": ev.actor.id,
            "actor_label": ev.actor.label,
            "actor_tenant_id": ev.actor.tenant_id,
            "actor_tenant_name": ev.actor.tenant_id.and_then(|t| tenants.name(t)),
            "actor_role": ev.actor.role.as_deref().map(|r| admin::role_name(&web, lang, r)),
            "session_id": ev.actor.session_id,
            "grant_id": ev.actor.grant_id,
            "action": ev.action,
            "target_type": ev.target.as_ref().map(|t| t.kind.clone()),
            "target_id": ev.target.as_ref().map(|t| t.id.clone()),
            "outcome": ev.outcome.as_str(),
            "outcome_name": outcome_name(&web, lang, ev.outcome.as_str()),
            "reason": ev.reason,
            "source_ip": ev.source.ip,
            "user_agent": ev.source.user_agent,
            "request_id": ev.source.request_id,
            "details": details,
            "seq": view.seq,
            "actor_href": ev.actor.label.as_deref().or(ev.actor.id.as_deref()).map(|a| search("actor", a)),
            "action_href": search("action", &ev.action),
            "target_href": ev.target.as_ref().map(|t| search("target", &t.id)),
            "back_href": link("/audit", &[("tenant", &tenant)]),
        }),
    );
    ctx.insert(
        "proof",
        &proof.map(|pr| {
            let sealed_by = checkpoint_view(&web, lang, &pr.sealed_by);
            let sealed_text = msg(&web, lang, "audit_sealed_by")
                .replace("{n}", &pr.sealed_by.tree_size.to_string())
                .replace("{time}", &fmt_secs(pr.sealed_by.time))
                .replace("{clock}", sealed_by["clock"].as_str().unwrap_or("—"));
            json!({
                "seq": pr.seq,
                "entry": pr.entry,
                "leaf_hash": pr.leaf_hash,
                "sealed_by": sealed_by,
                "sealed_text": sealed_text,
                "latest": checkpoint_view(&web, lang, &pr.checkpoint),
                "inclusion": pr.inclusion_proof,
                "verified": pr.verified,
            })
        }),
    );
    ctx.insert("proof_error", &proof_error);
    page_with(&web, &req, "audit_event.html", StatusCode::OK, ctx)
}

// ---------------------------------------------------------------------------------------------
// Alert inbox

#[derive(Debug, Clone, Default, Deserialize)]
struct AlertForm {
    status: Option<String>,
    tenant: Option<String>,
    offset: Option<String>,
}

fn alert_row(
    web: &Web,
    lang: Lang,
    names: &HashMap<String, String>,
    tenants: Option<&Tenants>,
    can_manage: bool,
    a: &AlertView,
) -> Value {
    let who = |label: &Option<String>| label.as_deref().map(|l| admin::who(names, l));
    let context = &a.context;
    json!({
        "id": a.id,
        "tenant": tenants.map(|t| t.name(a.tenant_id).unwrap_or_else(|| a.tenant_id.to_string())),
        "severity": a.severity.as_str(),
        "severity_name": msg(web, lang, &format!("severity_{}", a.severity.as_str())),
        "title": match lang { Lang::Ja => &a.title_ja, Lang::En => &a.title_en },
        "group_key": a.group_key,
        "count": a.count,
        "first": fmt_secs(a.first_event_at),
        "first_event_id": a.first_event_id,
        "last": fmt_secs(a.last_event_at),
        "last_event_id": a.last_event_id,
        "same_event": a.first_event_id == a.last_event_id,
        "action": context["action"].as_str(),
        "reason": context["reason"].as_str(),
        "status": a.status.as_str(),
        "status_name": msg(web, lang, &format!("alert_status_{}", a.status.as_str())),
        "acknowledged_by": who(&a.acknowledged_by),
        "acknowledged": a.acknowledged_at.map(fmt_secs),
        "resolved_by": who(&a.resolved_by),
        "resolved": a.resolved_at.map(fmt_secs),
        "note": a.note,
        "can_acknowledge": can_manage && a.status == AlertStatus::Open,
        "can_resolve": can_manage && a.status != AlertStatus::Resolved,
    })
}

/// `/audit/alerts?status=open|acknowledged|resolved`: the alerts of the viewer's tenant (for
/// provider roles, also of their institutions), newest first; admins acknowledge and resolve.
pub async fn alerts(
    web: web::Data<Arc<Web>>,
    identity: web::Data<IdentityService>,
    tenancy: web::Data<TenancyService>,
    alerts: Option<web::Data<AlertService>>,
    req: HttpRequest,
) -> HttpResponse {
    let v = match gate(&web, &identity, &req, Area::Alerts).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let lang = v.lang;
    let p = &v.principal;
    let form: AlertForm = query_form(&req);
    let status = AlertStatus::parse(&field(&form.status)).unwrap_or(AlertStatus::Open);
    let tenant = Uuid::parse_str(&field(&form.tenant)).ok();
    let offset = field(&form.offset).parse::<u64>().unwrap_or(0);
    let provider = matches!(p.scope(), TenantScope::Provider(_));
    let tenants = Tenants::load(&tenancy, p).await;
    let tenant_s = tenant.map(|t| t.to_string()).unwrap_or_default();
    let tab_href = |s: AlertStatus, offset: u64| {
        let off = if offset == 0 {
            String::new()
        } else {
            offset.to_string()
        };
        link(
            "/audit/alerts",
            &[
                ("status", s.as_str()),
                ("tenant", &tenant_s),
                ("offset", &off),
            ],
        )
    };
    let tabs: Vec<Value> = [
        AlertStatus::Open,
        AlertStatus::Acknowledged,
        AlertStatus::Resolved,
    ]
    .into_iter()
    .map(|s| {
        json!({
            "status": s.as_str(),
            "name": msg(&web, lang, &format!("alert_status_{}", s.as_str())),
            "href": tab_href(s, 0),
            "current": s == status,
        })
    })
    .collect();
    let mut ctx = base_context(&web, &v);
    ctx.insert("tabs", &tabs);
    ctx.insert("status", status.as_str());
    ctx.insert("can_manage", &v.is_admin());
    ctx.insert("provider", &provider);
    // Providers may narrow the inbox to one tenant ("all" by default).
    let options = if provider {
        tenants.options(tenant.unwrap_or(Uuid::nil()))
    } else {
        Vec::new()
    };
    ctx.insert("tenants", &options);
    ctx.insert("tenant", &tenant_s);
    let Some(svc) = alerts else {
        ctx.insert("unavailable", &true);
        ctx.insert("alerts", &Vec::<Value>::new());
        return page_with(&web, &req, "audit_alerts.html", StatusCode::OK, ctx);
    };
    ctx.insert("unavailable", &false);
    let q = AlertQuery {
        tenant_id: tenant,
        status: Some(status.as_str().to_string()),
        severity: None,
        rule_id: None,
        limit: Some(PAGE + 1),
        offset: Some(offset),
    };
    let page = match svc.list(p, &q).await {
        Ok(page) => page,
        Err(AlertError::Forbidden(_)) => return forbidden(&web, &req, &v),
        Err(AlertError::NotFound(_)) => return not_found(&web, &req),
        Err(e) => {
            tracing::error!(error = %e, "the alert inbox failed");
            return actix_web::ResponseError::error_response(&Problem::from(e));
        }
    };
    let names = admin::names(&identity, &v).await;
    let more = page.items.len() as u64 > PAGE;
    let rows: Vec<Value> = page
        .items
        .iter()
        .take(PAGE as usize)
        .map(|a| {
            alert_row(
                &web,
                lang,
                &names,
                provider.then_some(&tenants),
                v.is_admin(),
                a,
            )
        })
        .collect();
    ctx.insert("alerts", &rows);
    ctx.insert(
        "prev_href",
        &(offset > 0).then(|| tab_href(status, offset.saturating_sub(PAGE))),
    );
    ctx.insert("next_href", &more.then(|| tab_href(status, offset + PAGE)));
    page_with(&web, &req, "audit_alerts.html", StatusCode::OK, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn japan_time_is_read_and_written() {
        let t = parse_jst("2026-04-01T09:30", false).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-04-01T00:30:00+00:00");
        assert_eq!(jst_input(t), "2026-04-01T09:30");
        assert_eq!(fmt_secs(t), "2026-04-01 09:30:00 JST");
        assert_eq!(
            parse_jst("2026-04-01 00:00:05", false)
                .unwrap()
                .to_rfc3339(),
            "2026-03-31T15:00:05+00:00"
        );
        // A bare date: the day's start, or as an end the next day's start.
        assert_eq!(
            parse_jst("2026-04-01", false).unwrap().to_rfc3339(),
            "2026-03-31T15:00:00+00:00"
        );
        assert_eq!(
            parse_jst("2026-04-01", true).unwrap().to_rfc3339(),
            "2026-04-01T15:00:00+00:00"
        );
        assert_eq!(
            parse_jst("2026-04-01T09:30:00+09:00", false),
            Some(t),
            "an explicit offset is honoured"
        );
        assert!(parse_jst("yesterday", false).is_none());
        assert!(parse_jst("2026-13-01T00:00", false).is_none());
    }

    #[test]
    fn links_are_encoded() {
        assert_eq!(link("/audit", &[]), "/audit");
        assert_eq!(
            link(
                "/audit",
                &[
                    ("actor", "a+b@例.jp"),
                    ("action", ""),
                    ("from", "2026-04-01T09:30")
                ]
            ),
            "/audit?actor=a%2Bb%40%E4%BE%8B.jp&from=2026-04-01T09%3A30"
        );
        assert_eq!(encode("\"><x&y"), "%22%3E%3Cx%26y");
    }
}
