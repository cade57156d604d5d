//! Identity administration pages (issue 3 item 12): the account inventory and its review
//! campaigns, invitations, break-glass (issue and use) and maintenance grants.
//!
//! Pages are rendered here from the identity service's typed API, always as the signed-in
//! principal; every change is made by `web/static/admin.js` through the JSON API with the
//! session's CSRF token, so the API's own role and scope checks decide. The role gates below
//! only decide which pages open (403 with a friendly page otherwise) and which links show.

use super::{not_found, page_with, redirect, Lang, Web};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use anshin_identity::service::{SessionInfo, UserInfo};
use anshin_identity::{IdentityError, IdentityService};
use anshin_platform::error::Problem;
use anshin_platform::http::SESSION_COOKIE;
use anshin_platform::{Principal, Role, TenantKind};
use anshin_tenancy::{TenancyService, TenantFilter};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// Times on pages are Japan Standard Time (UTC+9 all year; no daylight saving).
pub(crate) fn fmt_time(t: DateTime<Utc>) -> String {
    (t + chrono::Duration::hours(9))
        .format("%Y-%m-%d %H:%M JST")
        .to_string()
}

pub(crate) fn fmt_opt(t: Option<DateTime<Utc>>) -> String {
    t.map(fmt_time).unwrap_or_else(|| "—".into())
}

/// The signed-in person behind a page request.
pub(crate) struct Viewer {
    pub principal: Principal,
    pub user: UserInfo,
    pub csrf: String,
    pub sessions: Vec<SessionInfo>,
    pub lang: Lang,
}

impl Viewer {
    /// The current session when it is a break-glass (emergency) session.
    pub(crate) fn emergency(&self) -> Option<&SessionInfo> {
        self.sessions
            .iter()
            .find(|s| s.current && s.method == "break_glass")
    }

    pub(crate) fn is_admin(&self) -> bool {
        matches!(
            self.principal.role,
            Role::ProviderAdmin | Role::InstitutionAdmin
        ) && self.principal.grant.is_none()
    }
}

/// The person of a page request's session, or the response to send instead: a redirect to the
/// sign-in page without a valid session (as `/portal` does).
pub(crate) async fn viewer(
    identity: &IdentityService,
    req: &HttpRequest,
) -> Result<Viewer, HttpResponse> {
    let Some(cookie) = req.cookie(SESSION_COOKIE) else {
        return Err(redirect("/signin"));
    };
    let principal = match identity
        .authenticate_session(cookie.value(), None, false)
        .await
    {
        Ok(Some(p)) => p,
        Ok(None) => return Err(redirect("/signin")),
        Err(e) => return Err(actix_web::ResponseError::error_response(&e)),
    };
    let loaded = async {
        let (user, csrf) = identity.me(&principal).await?;
        let sessions = identity.my_sessions(&principal).await?;
        Ok::<_, IdentityError>((user, csrf, sessions))
    }
    .await;
    match loaded {
        Ok((user, csrf, sessions)) => Ok(Viewer {
            principal,
            user,
            csrf,
            sessions,
            lang: super::negotiate(req).0,
        }),
        Err(e) => Err(actix_web::ResponseError::error_response(&Problem::from(e))),
    }
}

/// The identity pages, for the role gates and the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// `/accounts`, `/accounts/{id}`, `/accounts/reviews…`: admins and auditors of the tenant.
    Accounts,
    /// `/invitations`: admins.
    Invitations,
    /// `/break-glass`: admins (issue) and auditors (state only).
    BreakGlass,
    /// `/maintenance-grants`: provider admins, operators and maintainers, institution admins,
    /// auditors.
    Grants,
    /// `/audit`, `/audit/events/{id}`, `/audit/export`: auditors and admins (the audit service's
    /// readers).
    Audit,
    /// `/audit/alerts`: auditors and admins read; admins acknowledge and resolve.
    Alerts,
    /// `/keys`: the tenant's key status (admins, provider operators, auditors); admins rotate
    /// and bring their own key.
    Keys,
}

impl Area {
    pub const ALL: [Area; 7] = [
        Area::Accounts,
        Area::Invitations,
        Area::BreakGlass,
        Area::Grants,
        Area::Audit,
        Area::Alerts,
        Area::Keys,
    ];

    fn href(self) -> &'static str {
        match self {
            Area::Accounts => "/accounts",
            Area::Invitations => "/invitations",
            Area::BreakGlass => "/break-glass",
            Area::Grants => "/maintenance-grants",
            Area::Audit => "/audit",
            Area::Alerts => "/audit/alerts",
            Area::Keys => "/keys",
        }
    }

    /// The paths below `href` that count as the same menu entry.
    fn prefix(self) -> String {
        match self {
            // `/audit/alerts` has its own entry.
            Area::Audit => "/audit/events/".into(),
            other => format!("{}/", other.href()),
        }
    }

    fn label_key(self) -> &'static str {
        match self {
            Area::Accounts => "nav_accounts",
            Area::Invitations => "nav_invitations",
            Area::BreakGlass => "nav_break_glass",
            Area::Grants => "nav_grants",
            Area::Audit => "nav_audit",
            Area::Alerts => "nav_alerts",
            Area::Keys => "nav_keys",
        }
    }

    /// Whether a principal may open the pages of this area.
    pub fn open_to(self, p: &Principal) -> bool {
        if p.grant.is_some() {
            return false;
        }
        match self {
            Area::Accounts | Area::BreakGlass => matches!(
                p.role,
                Role::ProviderAdmin | Role::InstitutionAdmin | Role::Auditor
            ),
            Area::Invitations => matches!(p.role, Role::ProviderAdmin | Role::InstitutionAdmin),
            Area::Grants => p.role != Role::InstitutionStaff,
            Area::Audit | Area::Alerts => anshin_audit::service::may_read(p.role),
            // The readers of `KeyService::status`.
            Area::Keys => matches!(
                p.role,
                Role::InstitutionAdmin
                    | Role::ProviderAdmin
                    | Role::ProviderOperator
                    | Role::Auditor
            ),
        }
    }
}

pub(crate) fn msg(web: &Web, lang: Lang, key: &str) -> String {
    web.messages(lang)[key].as_str().unwrap_or(key).to_string()
}

pub(crate) fn role_name(web: &Web, lang: Lang, role: &str) -> String {
    web.messages(lang)[format!("role_{role}").as_str()]
        .as_str()
        .unwrap_or(role)
        .to_string()
}

/// Links to the identity pages the principal may open.
pub(crate) fn nav(web: &Web, lang: Lang, p: &Principal) -> Vec<Value> {
    Area::ALL
        .into_iter()
        .filter(|a| a.open_to(p))
        .map(|a| {
            json!({
                "href": a.href(),
                "prefix": a.prefix(),
                "label": msg(web, lang, a.label_key()),
            })
        })
        .collect()
}

/// What every signed-in page shows: the person, the CSRF token, the navigation by role and the
/// emergency banner during a break-glass session.
pub(crate) fn base_context(web: &Web, v: &Viewer) -> tera::Context {
    let mut ctx = tera::Context::new();
    ctx.insert("signed_in", &true);
    ctx.insert("user", &v.user);
    ctx.insert("csrf_token", &v.csrf);
    ctx.insert(
        "role_name",
        &role_name(web, v.lang, v.principal.role.as_str()),
    );
    let emergency = v.emergency();
    ctx.insert("emergency", &emergency.is_some());
    ctx.insert(
        "emergency_until",
        &emergency.map(|s| fmt_time(s.absolute_expires_at)),
    );
    ctx.insert("admin_nav", &nav(web, v.lang, &v.principal));
    ctx
}

pub(crate) fn forbidden(web: &Web, req: &HttpRequest, v: &Viewer) -> HttpResponse {
    page_with(
        web,
        req,
        "forbidden.html",
        StatusCode::FORBIDDEN,
        base_context(web, v),
    )
}

/// A service refusal as a page: 403 and 404 get the friendly pages, the rest a problem.
fn failure(web: &Web, req: &HttpRequest, v: &Viewer, e: IdentityError) -> HttpResponse {
    match e {
        IdentityError::Forbidden(_) => forbidden(web, req, v),
        IdentityError::NotFound(_) => not_found(web, req),
        other => actix_web::ResponseError::error_response(&Problem::from(other)),
    }
}

/// Opens a page of `area`: the viewer, or the redirect / 403 page to answer instead.
pub(crate) async fn gate(
    web: &Web,
    identity: &IdentityService,
    req: &HttpRequest,
    area: Area,
) -> Result<Viewer, HttpResponse> {
    let v = viewer(identity, req).await?;
    if area.open_to(&v.principal) {
        Ok(v)
    } else {
        Err(forbidden(web, req, &v))
    }
}

/// Accounts of the viewer's tenant by `user:<id>` label, for showing who started or decided
/// something by name (only for those who may read the inventory).
pub(crate) async fn names(identity: &IdentityService, v: &Viewer) -> HashMap<String, String> {
    let mut names = HashMap::from([(format!("user:{}", v.user.id), v.user.display_name.clone())]);
    if Area::Accounts.open_to(&v.principal) {
        if let Ok(entries) = identity.inventory(&v.principal).await {
            names.extend(
                entries
                    .into_iter()
                    .map(|a| (format!("user:{}", a.id), a.display_name)),
            );
        }
    }
    names
}

pub(crate) fn who(names: &HashMap<String, String>, label: &str) -> String {
    names.get(label).cloned().unwrap_or_else(|| {
        // `user:<uuid>` → `user:0190abcd…`: enough to tell people apart in a table.
        let short: String = label.chars().take(13).collect();
        if short.len() < label.len() {
            format!("{short}…")
        } else {
            short
        }
    })
}

pub(crate) fn tenant_name(
    t: &Result<anshin_tenancy::Tenant, anshin_tenancy::TenancyError>,
) -> Value {
    match t {
        Ok(t) => json!({"id": t.id, "name": t.name, "slug": t.slug}),
        Err(_) => json!({"id": "", "name": "", "slug": ""}),
    }
}

// ---------------------------------------------------------------------------------------------
// Accounts

fn account_row(web: &Web, v: &Viewer, a: &anshin_identity::inventory::AccountEntry) -> Value {
    let lang = v.lang;
    let mut factors = Vec::new();
    if a.passkeys > 0 {
        factors.push(msg(web, lang, "factor_keys").replace("{n}", &a.passkeys.to_string()));
    }
    if a.federated {
        factors.push(msg(web, lang, "factor_federated"));
    }
    if a.break_glass {
        factors.push(msg(web, lang, "factor_break_glass"));
    }
    if factors.is_empty() {
        factors.push(msg(web, lang, "factor_none"));
    }
    json!({
        "id": a.id,
        "email": a.email,
        "name": a.display_name,
        "role": role_name(web, lang, a.role.as_str()),
        "status": a.status,
        "status_name": msg(web, lang, &format!("status_{}", a.status)),
        "factors": factors.join(" ・ "),
        "created": fmt_time(a.created_at),
        "last_sign_in": fmt_opt(a.last_sign_in_at),
        "stale_since": a.stale_since.map(fmt_time),
        "sessions": a.open_sessions,
        "break_glass": a.break_glass,
        "is_me": a.id == v.user.id,
    })
}

/// `/accounts`: every account of the tenant (the ID inventory, guideline 14 ⑦).
pub async fn accounts(
    web: web::Data<Arc<Web>>,
    identity: web::Data<IdentityService>,
    tenancy: web::Data<TenancyService>,
    req: HttpRequest,
) -> HttpResponse {
    let v = match gate(&web, &identity, &req, Area::Accounts).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let entries = match identity.inventory(&v.principal).await {
        Ok(e) => e,
        Err(e) => return failure(&web, &req, &v, e),
    };
    let open_review = match identity.list_reviews(&v.principal).await {
        Ok(list) => list.into_iter().find(|r| r.status == "open").map(|r| r.id),
        Err(e) => return failure(&web, &req, &v, e),
    };
    let tenant = tenancy.get(&v.principal, v.principal.tenant_id).await;
    let rows: Vec<Value> = entries.iter().map(|a| account_row(&web, &v, a)).collect();
    let mut ctx = base_context(&web, &v);
    ctx.insert("tenant", &tenant_name(&tenant));
    ctx.insert("accounts", &rows);
    let stale = entries.iter().filter(|a| a.stale_since.is_some()).count();
    ctx.insert(
        "stale_notice",
        &(stale > 0)
            .then(|| msg(&web, v.lang, "accounts_stale_notice").replace("{n}", &stale.to_string())),
    );
    ctx.insert("open_review", &open_review);
    ctx.insert("can_manage", &v.is_admin());
    page_with(&web, &req, "accounts.html", StatusCode::OK, ctx)
}

/// `/accounts/{id}`: one account, its password state and the admin's levers.
pub async fn account(
    web: web::Data<Arc<Web>>,
    identity: web::Data<IdentityService>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let v = match gate(&web, &identity, &req, Area::Accounts).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Ok(id) = Uuid::parse_str(&path.into_inner()) else {
        return not_found(&web, &req);
    };
    let entry = match identity.account(&v.principal, id).await {
        Ok(a) => a,
        Err(e) => return failure(&web, &req, &v, e),
    };
    let entry = &entry;
    let password = match identity.password_status(&v.principal, id).await {
        Ok(p) => p,
        Err(e) => return failure(&web, &req, &v, e),
    };
    let now = Utc::now();
    let locked = password.locked_until.is_some_and(|t| t > now);
    let mut ctx = base_context(&web, &v);
    ctx.insert("account", &account_row(&web, &v, entry));
    ctx.insert(
        "password",
        &json!({
            "has_password": password.has_password,
            "changed": fmt_opt(password.changed_at),
            "failed_count": password.failed_count,
            "last_failed": fmt_opt(password.last_failed_at),
            "locked": locked,
            "locked_until": fmt_opt(password.locked_until),
        }),
    );
    ctx.insert("can_manage", &v.is_admin());
    page_with(&web, &req, "account.html", StatusCode::OK, ctx)
}

// ---------------------------------------------------------------------------------------------
// Account reviews

fn review_summary(
    web: &Web,
    lang: Lang,
    names: &HashMap<String, String>,
    r: &anshin_identity::review::ReviewSummary,
) -> Value {
    let progress = msg(web, lang, "review_progress_fmt")
        .replace("{c}", &r.confirmed.to_string())
        .replace("{d}", &r.disabled.to_string())
        .replace("{u}", &r.undecided.to_string())
        .replace("{t}", &r.total.to_string());
    json!({
        "id": r.id,
        "started": fmt_time(r.started_at),
        "started_by": who(names, &r.started_by),
        "due": fmt_time(r.due_at),
        "status": r.status,
        "status_name": msg(web, lang, if r.status == "open" { "review_open" } else { "review_closed" }),
        "overdue": r.overdue,
        "closed": fmt_opt(r.closed_at),
        "closed_by": r.closed_by.as_deref().map(|c| who(names, c)),
        "progress": progress,
        "undecided": r.undecided,
        "undecided_left": msg(web, lang, "review_undecided_left").replace("{n}", &r.undecided.to_string()),
        "total": r.total,
    })
}

/// `/accounts/reviews`: the review campaigns, and starting one.
pub async fn reviews(
    web: web::Data<Arc<Web>>,
    identity: web::Data<IdentityService>,
    req: HttpRequest,
) -> HttpResponse {
    let v = match gate(&web, &identity, &req, Area::Accounts).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let list = match identity.list_reviews(&v.principal).await {
        Ok(l) => l,
        Err(e) => return failure(&web, &req, &v, e),
    };
    let names = names(&identity, &v).await;
    let rows: Vec<Value> = list
        .iter()
        .map(|r| review_summary(&web, v.lang, &names, r))
        .collect();
    let mut ctx = base_context(&web, &v);
    ctx.insert("reviews", &rows);
    ctx.insert(
        "open_review",
        &list.iter().find(|r| r.status == "open").map(|r| r.id),
    );
    ctx.insert("can_manage", &v.is_admin());
    page_with(&web, &req, "reviews.html", StatusCode::OK, ctx)
}

/// `/accounts/reviews/{id}`: one campaign, its items and the decisions.
pub async fn review(
    web: web::Data<Arc<Web>>,
    identity: web::Data<IdentityService>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let v = match gate(&web, &identity, &req, Area::Accounts).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Ok(id) = Uuid::parse_str(&path.into_inner()) else {
        return not_found(&web, &req);
    };
    let detail = match identity.review(&v.principal, id).await {
        Ok(d) => d,
        Err(e) => return failure(&web, &req, &v, e),
    };
    let names = names(&identity, &v).await;
    let lang = v.lang;
    let items: Vec<Value> = detail
        .items
        .iter()
        .map(|i| {
            json!({
                "user_id": i.user_id,
                "email": i.email,
                "name": i.display_name,
                "role": role_name(&web, lang, &i.role),
                "status_name": msg(&web, lang, &format!("status_{}", i.status)),
                "last_sign_in": fmt_opt(i.last_sign_in_at),
                "stale_since": i.stale_since.map(fmt_time),
                "decision": i.decision.map(|d| d.as_str()),
                "decision_name": i.decision.map(|d| msg(&web, lang, &format!("review_decision_{}", d.as_str()))),
                "decided_by": i.decided_by.as_deref().map(|d| who(&names, d)),
                "decided": fmt_opt(i.decided_at),
                "note": i.note,
                "is_me": i.user_id == v.user.id,
            })
        })
        .collect();
    let mut ctx = base_context(&web, &v);
    ctx.insert(
        "review",
        &review_summary(&web, lang, &names, &detail.review),
    );
    ctx.insert("items", &items);
    ctx.insert(
        "can_decide",
        &(v.is_admin() && detail.review.status == "open"),
    );
    page_with(&web, &req, "review.html", StatusCode::OK, ctx)
}

// ---------------------------------------------------------------------------------------------
// Invitations

/// `/invitations`: invite a person by email with a role of this tenant; the pending
/// invitations, each of which an admin can revoke.
pub async fn invitations(
    web: web::Data<Arc<Web>>,
    identity: web::Data<IdentityService>,
    req: HttpRequest,
) -> HttpResponse {
    let v = match gate(&web, &identity, &req, Area::Invitations).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let kind: TenantKind = v.principal.tenant_kind;
    let roles: Vec<Value> = Role::ALL
        .into_iter()
        .filter(|r| r.fits(kind))
        .map(|r| {
            json!({
                "code": r.as_str(),
                "name": role_name(&web, v.lang, r.as_str()),
                // The least privileged role is preselected.
                "default": matches!(r, Role::InstitutionStaff | Role::ProviderOperator),
            })
        })
        .collect();
    let pending = match identity.pending_invitations(&v.principal).await {
        Ok(p) => p,
        Err(e) => return failure(&web, &req, &v, e),
    };
    let pending: Vec<Value> = pending
        .iter()
        .map(|i| {
            json!({
                "id": i.id,
                "email": i.email,
                "name": i.display_name,
                "role": role_name(&web, v.lang, i.role.as_str()),
                "invited_by": i.invited_by_name.clone().unwrap_or_else(|| who(&HashMap::new(), &i.invited_by)),
                "created": fmt_time(i.created_at),
                "expires": fmt_time(i.expires_at),
            })
        })
        .collect();
    let mut ctx = base_context(&web, &v);
    ctx.insert("roles", &roles);
    ctx.insert("pending", &pending);
    page_with(&web, &req, "invitations.html", StatusCode::OK, ctx)
}

// ---------------------------------------------------------------------------------------------
// Break-glass

/// `/break-glass`: the state of the tenant's sealed emergency code; admins issue or rotate it.
pub async fn break_glass(
    web: web::Data<Arc<Web>>,
    identity: web::Data<IdentityService>,
    tenancy: web::Data<TenancyService>,
    req: HttpRequest,
) -> HttpResponse {
    let v = match gate(&web, &identity, &req, Area::BreakGlass).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let state = match identity.break_glass_status(&v.principal).await {
        Ok(s) => s,
        Err(e) => return failure(&web, &req, &v, e),
    };
    let names = names(&identity, &v).await;
    let lang = v.lang;
    let state = state.map(|s| {
        json!({
            "status": s.status,
            "status_name": msg(&web, lang, &format!("bg_status_{}", s.status)),
            "created": fmt_time(s.created_at),
            "created_by": who(&names, &s.created_by),
            "used_at": s.used_at.map(fmt_time),
            "used_reason": s.used_reason,
            "used_from": s.used_from.unwrap_or_else(|| "—".into()),
        })
    });
    let tenant = tenancy.get(&v.principal, v.principal.tenant_id).await;
    let mut ctx = base_context(&web, &v);
    ctx.insert("state", &state);
    ctx.insert("tenant", &tenant_name(&tenant));
    // An emergency session has no authenticator to confirm with; it cannot issue a new code.
    ctx.insert("can_issue", &(v.is_admin() && v.emergency().is_none()));
    page_with(&web, &req, "break_glass.html", StatusCode::OK, ctx)
}

/// `/break-glass/use`: public; someone with the sealed code and a reason starts an emergency
/// session. `?org=` pre-fills the organisation's sign-in name.
pub async fn break_glass_use(web: web::Data<Arc<Web>>, req: HttpRequest) -> HttpResponse {
    let org = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get("org").cloned())
        .filter(|o| {
            !o.is_empty()
                && o.len() <= 63
                && o.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
        .unwrap_or_default();
    let mut ctx = tera::Context::new();
    ctx.insert("org", &org);
    page_with(&web, &req, "break_glass_use.html", StatusCode::OK, ctx)
}

// ---------------------------------------------------------------------------------------------
// Maintenance grants

/// `/maintenance-grants`: maintainers request, institution admins decide, the others read.
pub async fn grants(
    web: web::Data<Arc<Web>>,
    identity: web::Data<IdentityService>,
    tenancy: web::Data<TenancyService>,
    req: HttpRequest,
) -> HttpResponse {
    let v = match gate(&web, &identity, &req, Area::Grants).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let list = match identity.list_grants(&v.principal).await {
        Ok(l) => l,
        Err(e) => return failure(&web, &req, &v, e),
    };
    let p = &v.principal;
    // Institution names the viewer may see anyway: a provider's (not a maintainer's, who has no
    // standing view of institutions) or the institution's own.
    let mut institutions: HashMap<Uuid, String> = HashMap::new();
    match (p.tenant_kind, p.role) {
        (TenantKind::Provider, Role::ProviderMaintainer) => {}
        (TenantKind::Provider, _) => {
            let filter = TenantFilter {
                kind: Some(TenantKind::Institution),
                ..TenantFilter::default()
            };
            if let Ok(ts) = tenancy.list(p, &filter).await {
                institutions.extend(ts.into_iter().map(|t| (t.id, t.name)));
            }
        }
        (TenantKind::Institution, _) => {
            if let Ok(t) = tenancy.get(p, p.tenant_id).await {
                institutions.insert(t.id, t.name);
            }
        }
    }
    let names = names(&identity, &v).await;
    let lang = v.lang;
    let can_decide = p.role == Role::InstitutionAdmin && p.grant.is_none();
    let rows: Vec<Value> = list
        .iter()
        .map(|g| {
            json!({
                "id": g.id,
                "institution": institutions.get(&g.institution_id).cloned(),
                "institution_id": g.institution_id,
                // The maintainer belongs to the provider: named by the grant itself.
                "maintainer": g.maintainer_name.clone().unwrap_or_else(|| who(&names, &g.maintainer)),
                "maintainer_email": g.maintainer_email,
                "plan": g.work_plan_ref,
                "scope_name": msg(&web, lang, &format!("grant_scope_{}", g.scope)),
                "starts": fmt_time(g.starts_at),
                "ends": fmt_time(g.ends_at),
                "incident": g.incident,
                "status": g.status,
                "status_name": msg(&web, lang, &format!("grant_status_{}", g.status)),
                "requested": fmt_time(g.requested_at),
                "decided_by": g.decided_by_name.clone().or_else(|| g.decided_by.as_deref().map(|d| who(&names, d))),
                "decided": fmt_opt(g.decided_at),
                "note": g.decision_note,
                "active": g.active,
                "decidable": can_decide && matches!(g.status.as_str(), "requested" | "incident"),
            })
        })
        .collect();
    // Institutions the maintainer already worked for, to pick again.
    let mut known: Vec<Uuid> = list.iter().map(|g| g.institution_id).collect();
    known.sort();
    known.dedup();
    let mut ctx = base_context(&web, &v);
    ctx.insert("grants", &rows);
    ctx.insert(
        "can_request",
        &(p.role == Role::ProviderMaintainer && p.grant.is_none()),
    );
    ctx.insert("can_decide", &can_decide);
    ctx.insert("known_institutions", &known);
    ctx.insert(
        "own_institution_id",
        &(p.tenant_kind == TenantKind::Institution).then_some(p.tenant_id),
    );
    page_with(&web, &req, "grants.html", StatusCode::OK, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anshin_platform::Subject;

    fn principal(role: Role, kind: TenantKind, grant: Option<Uuid>) -> Principal {
        Principal {
            subject: Subject::User {
                id: Uuid::nil(),
                session_id: Uuid::nil(),
                email: "a@example.jp".into(),
            },
            tenant_id: Uuid::nil(),
            tenant_kind: kind,
            role,
            grant,
        }
    }

    #[test]
    fn gates_follow_roles() {
        use Area::*;
        let open = |r, k| -> Vec<Area> {
            Area::ALL
                .into_iter()
                .filter(|a| a.open_to(&principal(r, k, None)))
                .collect()
        };
        let inst = TenantKind::Institution;
        let prov = TenantKind::Provider;
        assert_eq!(
            open(Role::InstitutionAdmin, inst),
            vec![
                Accounts,
                Invitations,
                BreakGlass,
                Grants,
                Audit,
                Alerts,
                Keys
            ]
        );
        assert_eq!(
            open(Role::ProviderAdmin, prov),
            vec![
                Accounts,
                Invitations,
                BreakGlass,
                Grants,
                Audit,
                Alerts,
                Keys
            ]
        );
        assert_eq!(
            open(Role::Auditor, inst),
            vec![Accounts, BreakGlass, Grants, Audit, Alerts, Keys]
        );
        assert_eq!(
            open(Role::Auditor, prov),
            vec![Accounts, BreakGlass, Grants, Audit, Alerts, Keys]
        );
        assert_eq!(open(Role::ProviderOperator, prov), vec![Grants, Keys]);
        assert_eq!(open(Role::ProviderMaintainer, prov), vec![Grants]);
        assert_eq!(open(Role::InstitutionStaff, inst), Vec::<Area>::new());
        // Acting under a maintenance grant opens none of them.
        let under = principal(Role::ProviderMaintainer, inst, Some(Uuid::nil()));
        assert!(Area::ALL.into_iter().all(|a| !a.open_to(&under)));
    }

    #[test]
    fn times_are_japan_time() {
        let t: DateTime<Utc> = "2026-03-31T15:30:00Z".parse().unwrap();
        assert_eq!(fmt_time(t), "2026-04-01 00:30 JST");
        assert_eq!(fmt_opt(None), "—");
    }

    #[test]
    fn unknown_people_are_shortened() {
        let names = HashMap::from([("user:a".to_string(), "佐藤".to_string())]);
        assert_eq!(who(&names, "user:a"), "佐藤");
        assert_eq!(
            who(&names, "user:0190abcd-0000-7000-8000-000000000000"),
            "user:0190abcd…"
        );
        assert_eq!(who(&names, "token:1"), "token:1");
    }
}
