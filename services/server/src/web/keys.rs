//! The key page (`/keys`): a tenant's key-encryption key, its health and history, the data-key
//! rotation policy, and, for admins, rotation and bring-your-own-key.
//!
//! The page reads through the key service's typed API as the signed-in principal, so its scope
//! and role checks decide what is shown (a tenant outside the viewer's scope is "not found").
//! Rotation and BYOK go through the JSON API from `web/static/keys.js` with the session's CSRF
//! token; the page only decides which buttons show. They are sensitive key operations: when the
//! API answers `step-up-required`, the script confirms with the person's passkey
//! (`webauthn.js`) and sends the request again.

use super::admin::{base_context, fmt_opt, fmt_time, forbidden, gate, msg, Area, Viewer};
use super::{not_found, page_with, Lang, Web};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use anshin_identity::IdentityService;
use anshin_keys::{KekView, KeyError, KeyService};
use anshin_platform::error::Problem;
use anshin_platform::{Principal, TenantScope};
use anshin_tenancy::{TenancyService, TenantFilter};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Default, Deserialize)]
struct KeysForm {
    tenant: Option<String>,
}

/// The tenants the viewer may pick: their own and, for provider roles, the provider's
/// institutions (own tenant first).
async fn tenants(tenancy: &TenancyService, p: &Principal) -> Vec<(Uuid, String)> {
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
    list
}

/// `n` with thousands separators.
fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn duration_text(web: &Web, lang: Lang, secs: u64) -> String {
    let (key, n) = if secs >= 3600 && secs.is_multiple_of(3600) {
        ("keys_hours", secs / 3600)
    } else if secs >= 60 && secs.is_multiple_of(60) {
        ("keys_minutes", secs / 60)
    } else {
        ("keys_seconds", secs)
    };
    msg(web, lang, key).replace("{n}", &grouped(n))
}

/// Bytes in binary units (KiB, MiB, GiB, TiB), to one decimal unless whole.
fn bytes_text(b: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    if v.fract() == 0.0 {
        format!("{v:.0} {unit}")
    } else {
        format!("{v:.1} {unit}")
    }
}

fn label(web: &Web, lang: Lang, prefix: &str, value: &str) -> String {
    let key = format!("{prefix}_{value}");
    let m = msg(web, lang, &key);
    // An unknown value shows as itself rather than as a message key.
    if m == key {
        value.to_string()
    } else {
        m
    }
}

fn kek_row(web: &Web, lang: Lang, k: &KekView) -> Value {
    let rotation = match k.rotation_enabled {
        Some(true) => msg(web, lang, "keys_rotation_on"),
        Some(false) => msg(web, lang, "keys_rotation_off"),
        None => msg(web, lang, "keys_rotation_unknown"),
    };
    json!({
        "id": k.id,
        "provider": k.provider,
        "provider_name": label(web, lang, "keys_provider", &k.provider.replace('-', "_")),
        "key_id": k.key_id,
        "alias": k.alias,
        "origin": k.origin,
        "origin_name": label(web, lang, "keys_origin", &k.origin),
        "status": k.status,
        "status_name": label(web, lang, "keys_status", &k.status),
        "key_state": k.key_state,
        "key_state_name": label(web, lang, "keys_state", &k.key_state),
        "rotation": rotation,
        "rotation_enabled": k.rotation_enabled,
        "created": fmt_time(k.created_at),
        "retired": fmt_opt(k.retired_at),
        "last_used": k.last_used_at.map(fmt_time).unwrap_or_else(|| msg(web, lang, "keys_never_used")),
        "health": k.health,
        "health_name": label(web, lang, "keys_health", &k.health),
        "health_checked": k.health_checked_at.map(|t| msg(web, lang, "keys_health_checked").replace("{time}", &fmt_time(t))),
        "health_detail": k.health_detail,
        "erased": fmt_opt(k.erased_at),
        "deletion_date": fmt_opt(k.deletion_date),
        "stored_data_keys": k.stored_data_keys,
        "stored_data_keys_text": msg(web, lang, "keys_count").replace("{n}", &grouped(k.stored_data_keys)),
    })
}

/// A key service refusal as a page: 403 and 404 get the friendly pages, the rest a problem.
fn failure(web: &Web, req: &HttpRequest, v: &Viewer, e: KeyError) -> HttpResponse {
    match e {
        KeyError::Forbidden(_) => forbidden(web, req, v),
        KeyError::NotFound(_) => not_found(web, req),
        other => {
            tracing::error!(error = %other, "the key page failed");
            actix_web::ResponseError::error_response(&Problem::from(other))
        }
    }
}

/// `/keys?tenant=`: the key status of the viewer's tenant or, for provider roles, of one of
/// their institutions.
pub async fn status(
    web: web::Data<Arc<Web>>,
    identity: web::Data<IdentityService>,
    tenancy: web::Data<TenancyService>,
    keys: web::Data<KeyService>,
    req: HttpRequest,
) -> HttpResponse {
    let v = match gate(&web, &identity, &req, Area::Keys).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let lang = v.lang;
    let p = &v.principal;
    let form = web::Query::<KeysForm>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .unwrap_or_default();
    let tenant = match form
        .tenant
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => None,
        Some(t) => match Uuid::parse_str(t) {
            Ok(id) => Some(id),
            Err(_) => return not_found(&web, &req),
        },
    };
    let st = match keys.status(p, tenant).await {
        Ok(s) => s,
        Err(e) => return failure(&web, &req, &v, e),
    };
    let list = tenants(&tenancy, p).await;
    let tenant_name = list
        .iter()
        .find(|(id, _)| *id == st.tenant_id)
        .map(|(_, n)| n.clone())
        .unwrap_or_else(|| st.tenant_id.to_string());
    let options: Vec<Value> = list
        .iter()
        .map(|(id, name)| json!({"id": id, "name": name, "selected": *id == st.tenant_id}))
        .collect();
    let active = st.active.as_ref().map(|k| kek_row(&web, lang, k));
    let previous: Vec<Value> = st.previous.iter().map(|k| kek_row(&web, lang, k)).collect();
    let rewrap_pending: u64 = st
        .previous
        .iter()
        .filter(|k| k.status == "retired")
        .map(|k| k.stored_data_keys)
        .sum();
    let byok = st.active.as_ref().is_some_and(|k| k.origin == "byok");
    let health = st
        .active
        .as_ref()
        .map(|k| k.health.as_str())
        .unwrap_or("ok");
    let policy = &st.data_key_policy;

    let mut ctx = base_context(&web, &v);
    ctx.insert("tenant_id", &st.tenant_id);
    ctx.insert("tenant_name", &tenant_name);
    ctx.insert("tenants", &options);
    ctx.insert("provider", &st.provider);
    ctx.insert(
        "provider_name",
        &label(&web, lang, "keys_provider", &st.provider.replace('-', "_")),
    );
    ctx.insert("erased", &st.erased);
    ctx.insert("byok", &byok);
    ctx.insert("byok_lost", &(byok && health == "denied"));
    ctx.insert("unreachable", &(health == "unreachable"));
    ctx.insert("active", &active);
    ctx.insert("previous", &previous);
    ctx.insert(
        "rewrap_text",
        &(rewrap_pending > 0).then(|| {
            msg(&web, lang, "keys_rewrap_pending").replace("{n}", &grouped(rewrap_pending))
        }),
    );
    ctx.insert(
        "policy",
        &json!({
            "age": duration_text(&web, lang, policy.max_age_secs),
            "messages": msg(&web, lang, "keys_messages_n").replace("{n}", &grouped(policy.max_messages)),
            "bytes": bytes_text(policy.max_bytes),
        }),
    );
    // The same roles as rotation and BYOK in the key service; an erased tenant gets no new key.
    // An emergency (break-glass) session has no authenticator for the step-up these need.
    let emergency = v.emergency().is_some();
    ctx.insert("can_manage", &(v.is_admin() && !st.erased && !emergency));
    ctx.insert(
        "emergency_no_manage",
        &(v.is_admin() && !st.erased && emergency),
    );
    ctx.insert("read_only", &!v.is_admin());
    page_with(&web, &req, "keys.html", StatusCode::OK, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000_000), "1,000,000");
        assert_eq!(bytes_text(512), "512 B");
        assert_eq!(bytes_text(1 << 36), "64 GiB");
        assert_eq!(bytes_text(1536), "1.5 KiB");
        assert_eq!(bytes_text(1 << 40), "1 TiB");
    }

    #[test]
    fn durations_use_the_largest_whole_unit() {
        let w = Web::load(false).unwrap();
        assert_eq!(duration_text(&w, Lang::Ja, 300), "5 分");
        assert_eq!(duration_text(&w, Lang::En, 7200), "2 h");
        assert_eq!(duration_text(&w, Lang::En, 90), "90 s");
        assert_eq!(label(&w, Lang::Ja, "keys_health", "denied"), "アクセス拒否");
        assert_eq!(label(&w, Lang::Ja, "keys_health", "strange"), "strange");
    }
}
