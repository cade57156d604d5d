//! Server-rendered pages: tera templates and CSS embedded in the binary, Japanese by default and
//! English by `?lang=en`, a cookie, or `Accept-Language`.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header::{self, ContentType};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use anshin_identity::IdentityService;
use anshin_platform::error::Problem;
use anshin_platform::http::SESSION_COOKIE;
use anshin_tenancy::TenancyService;
use rust_embed::RustEmbed;
use serde_json::Value;
use std::sync::Arc;

pub mod admin;
pub mod audit;
pub mod keys;

pub use admin::{
    account, accounts, break_glass, break_glass_use, grants, invitations, review, reviews,
};

#[derive(RustEmbed)]
#[folder = "../../web/templates/"]
struct Templates;

#[derive(RustEmbed)]
#[folder = "../../web/static/"]
struct Static;

#[derive(RustEmbed)]
#[folder = "../../web/i18n/"]
struct Messages;

pub const LANG_COOKIE: &str = "anshin_lang";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Ja,
    En,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::Ja => "ja",
            Lang::En => "en",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        let primary = s
            .trim()
            .split(['-', '_'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        match primary.as_str() {
            "ja" => Some(Lang::Ja),
            "en" => Some(Lang::En),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("template {0} is not valid UTF-8")]
    Encoding(String),
    #[error("templates could not be loaded: {0}")]
    Tera(#[from] tera::Error),
    #[error("message catalogue {0} is not valid: {1}")]
    Messages(String, String),
}

/// Templates and message catalogues, parsed once at start-up.
pub struct Web {
    tera: tera::Tera,
    ja: Value,
    en: Value,
    pub insecure_cookies: bool,
}

impl Web {
    pub fn load(insecure_cookies: bool) -> Result<Arc<Self>, WebError> {
        let mut tera = tera::Tera::default();
        let mut sources = Vec::new();
        for name in Templates::iter() {
            let file = Templates::get(&name).ok_or_else(|| WebError::Encoding(name.to_string()))?;
            let text = String::from_utf8(file.data.into_owned())
                .map_err(|_| WebError::Encoding(name.to_string()))?;
            sources.push((name.to_string(), text));
        }
        tera.add_raw_templates(sources)?;
        Ok(Arc::new(Self {
            tera,
            ja: load_messages("ja.toml")?,
            en: load_messages("en.toml")?,
            insecure_cookies,
        }))
    }

    pub fn messages(&self, lang: Lang) -> &Value {
        match lang {
            Lang::Ja => &self.ja,
            Lang::En => &self.en,
        }
    }

    pub fn render(
        &self,
        template: &str,
        lang: Lang,
        path: &str,
        extra: Option<tera::Context>,
    ) -> Result<String, tera::Error> {
        let mut ctx = extra.unwrap_or_default();
        ctx.insert("t", self.messages(lang));
        ctx.insert("lang", lang.code());
        ctx.insert("path", path);
        ctx.insert(
            "other_lang",
            match lang {
                Lang::Ja => "en",
                Lang::En => "ja",
            },
        );
        ctx.insert("version", env!("CARGO_PKG_VERSION"));
        if !ctx.contains_key("lang_query") {
            ctx.insert("lang_query", "");
        }
        self.tera.render(template, &ctx)
    }
}

fn load_messages(name: &str) -> Result<Value, WebError> {
    let file =
        Messages::get(name).ok_or_else(|| WebError::Messages(name.into(), "missing".into()))?;
    let text = std::str::from_utf8(&file.data)
        .map_err(|e| WebError::Messages(name.into(), e.to_string()))?;
    let v: toml::Value =
        toml::from_str(text).map_err(|e| WebError::Messages(name.into(), e.to_string()))?;
    serde_json::to_value(v).map_err(|e| WebError::Messages(name.into(), e.to_string()))
}

/// The language of a request: explicit `?lang=`, then the cookie, then `Accept-Language`.
pub fn negotiate(req: &HttpRequest) -> (Lang, bool) {
    let from_query =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .ok()
            .and_then(|q| q.get("lang").and_then(|l| Lang::parse(l)));
    if let Some(l) = from_query {
        return (l, true);
    }
    if let Some(l) = req.cookie(LANG_COOKIE).and_then(|c| Lang::parse(c.value())) {
        return (l, false);
    }
    let accept = req
        .headers()
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut best: Option<(Lang, f32)> = None;
    for part in accept.split(',') {
        let mut it = part.split(';');
        let tag = it.next().unwrap_or("");
        let q = it
            .find_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
            })
            .unwrap_or(1.0);
        if let Some(l) = Lang::parse(tag) {
            if best.is_none_or(|(_, bq)| q > bq) {
                best = Some((l, q));
            }
        }
    }
    (best.map(|(l, _)| l).unwrap_or(Lang::Ja), false)
}

fn page(web: &Web, req: &HttpRequest, template: &str, status: StatusCode) -> HttpResponse {
    page_with(web, req, template, status, tera::Context::new())
}

fn page_with(
    web: &Web,
    req: &HttpRequest,
    template: &str,
    status: StatusCode,
    mut ctx: tera::Context,
) -> HttpResponse {
    let (lang, remember) = negotiate(req);
    if !ctx.contains_key("signed_in") {
        ctx.insert("signed_in", &req.cookie(SESSION_COOKIE).is_some());
    }
    ctx.insert("lang_query", &lang_query(req.query_string()));
    match web.render(template, lang, req.path(), Some(ctx)) {
        Ok(html) => {
            let mut b = HttpResponse::build(status);
            b.content_type(ContentType::html())
                .insert_header((header::CONTENT_LANGUAGE, lang.code()))
                .insert_header((header::VARY, "Accept-Language, Cookie"))
                .insert_header((header::CACHE_CONTROL, "no-store"));
            if remember {
                b.cookie(
                    Cookie::build(LANG_COOKIE, lang.code())
                        .path("/")
                        .secure(!web.insecure_cookies)
                        .http_only(true)
                        .same_site(SameSite::Lax)
                        .max_age(actix_web::cookie::time::Duration::days(365))
                        .finish(),
                );
            }
            b.body(html)
        }
        Err(e) => {
            tracing::error!(error = ?e, template, "rendering a page failed");
            HttpResponse::InternalServerError()
                .content_type(ContentType::plaintext())
                .body("500")
        }
    }
}

/// The query of the page without its `lang`, ready for `lang=` to follow: the language switch
/// keeps what the page shows (a search, a tab).
fn lang_query(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("lang="))
        .map(|p| format!("{p}&"))
        .collect()
}

fn redirect(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to.to_string()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// Content security policy of the sign-in page: its organisation form is redirected on to the
/// organisation's OpenID Provider, and `form-action` governs that redirect too.
const SIGNIN_CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; \
    form-action 'self' https: http://localhost:* http://127.0.0.1:*";

pub async fn signin(web: web::Data<Arc<Web>>, req: HttpRequest) -> HttpResponse {
    let mut res = page(&web, &req, "signin.html", StatusCode::OK);
    res.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(SIGNIN_CSP),
    );
    res
}

/// The enrollment token travels in the URL fragment, which browsers never send to the server.
pub async fn enroll(web: web::Data<Arc<Web>>, req: HttpRequest) -> HttpResponse {
    page(&web, &req, "enroll.html", StatusCode::OK)
}

/// Setting a new password with an administrator's reset link; the token is in the fragment,
/// which browsers never send to the server. Public: the person has no session.
pub async fn password_reset(web: web::Data<Arc<Web>>, req: HttpRequest) -> HttpResponse {
    page(&web, &req, "password_reset.html", StatusCode::OK)
}

/// The passkey step-up after a one-factor organisation sign-in; the flow id is in the fragment.
pub async fn step_up(web: web::Data<Arc<Web>>, req: HttpRequest) -> HttpResponse {
    page(&web, &req, "step_up.html", StatusCode::OK)
}

/// The signed-in person's home. Without a valid session: to the sign-in page.
pub async fn portal(
    web: web::Data<Arc<Web>>,
    identity: web::Data<IdentityService>,
    tenancy: web::Data<TenancyService>,
    req: HttpRequest,
) -> HttpResponse {
    let v = match admin::viewer(&identity, &req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let principal = &v.principal;
    let loaded = async {
        let tenant = tenancy
            .get(principal, principal.tenant_id)
            .await
            .map_err(Problem::from)?;
        let credentials = identity
            .my_credentials(principal)
            .await
            .map_err(Problem::from)?;
        Ok::<_, Problem>((tenant, credentials))
    }
    .await;
    let (tenant, credentials) = match loaded {
        Ok(v) => v,
        Err(e) => return actix_web::ResponseError::error_response(&e),
    };
    let lang = v.lang;
    let fmt = admin::fmt_time;
    let rows: Vec<Value> = v
        .sessions
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.id,
                "created": fmt(s.created_at),
                "last_seen": fmt(s.last_seen_at),
                "device": s.user_agent.as_deref()
                    .map(|u| u.chars().take(60).collect::<String>())
                    .unwrap_or_else(|| "-".into()),
                "current": s.current,
            })
        })
        .collect();
    let kind_passkey = web.messages(lang)["credential_kind_passkey"]
        .as_str()
        .unwrap_or("passkey")
        .to_string();
    let kind_key = web.messages(lang)["credential_kind_security_key"]
        .as_str()
        .unwrap_or("security key")
        .to_string();
    let creds: Vec<Value> = credentials
        .items
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": c.id,
                "name": c.name,
                "kind": if c.kind == "security_key" { &kind_key } else { &kind_passkey },
                "created": fmt(c.created_at),
                "last_used": c.last_used_at.map(fmt).unwrap_or_else(|| "-".into()),
            })
        })
        .collect();
    let mut ctx = admin::base_context(&web, &v);
    ctx.insert("tenant", &tenant);
    ctx.insert("sessions", &rows);
    ctx.insert("credentials", &creds);
    ctx.insert("has_password", &credentials.has_password);
    ctx.insert(
        "password_changed",
        &credentials.password_changed_at.map(fmt),
    );
    page_with(&web, &req, "portal.html", StatusCode::OK, ctx)
}

pub async fn landing(web: web::Data<Arc<Web>>, req: HttpRequest) -> HttpResponse {
    page(&web, &req, "index.html", StatusCode::OK)
}

pub fn not_found(web: &Web, req: &HttpRequest) -> HttpResponse {
    page(
        web,
        req,
        "not_found.html",
        actix_web::http::StatusCode::NOT_FOUND,
    )
}

pub async fn static_file(path: web::Path<String>) -> HttpResponse {
    let path = path.into_inner();
    match Static::get(&path) {
        Some(file) => {
            let mime = match path.rsplit('.').next() {
                Some("css") => "text/css; charset=utf-8",
                Some("svg") => "image/svg+xml",
                Some("js") => "text/javascript; charset=utf-8",
                Some("png") => "image/png",
                _ => "application/octet-stream",
            };
            HttpResponse::Ok()
                .insert_header((header::CONTENT_TYPE, mime))
                .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
                .insert_header((
                    header::ETAG,
                    format!("\"{}\"", hex_of(&file.metadata.sha256_hash())),
                ))
                .body(file.data.into_owned())
        }
        None => HttpResponse::NotFound()
            .content_type(ContentType::plaintext())
            .body("not found"),
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn language_negotiation() {
        let r = TestRequest::default().to_http_request();
        assert_eq!(negotiate(&r).0, Lang::Ja);
        let r = TestRequest::default()
            .insert_header((header::ACCEPT_LANGUAGE, "en-US,en;q=0.9,ja;q=0.8"))
            .to_http_request();
        assert_eq!(negotiate(&r).0, Lang::En);
        let r = TestRequest::default()
            .insert_header((header::ACCEPT_LANGUAGE, "fr, ja;q=0.5, en;q=0.4"))
            .to_http_request();
        assert_eq!(negotiate(&r).0, Lang::Ja);
        let r = TestRequest::with_uri("/?lang=en")
            .insert_header((header::ACCEPT_LANGUAGE, "ja"))
            .to_http_request();
        assert_eq!(negotiate(&r), (Lang::En, true));
    }

    #[test]
    fn the_language_switch_keeps_the_query() {
        assert_eq!(lang_query(""), "");
        assert_eq!(lang_query("lang=en"), "");
        assert_eq!(
            lang_query("actor=a%40b.jp&lang=ja&offset=50"),
            "actor=a%40b.jp&offset=50&"
        );
    }

    #[test]
    fn catalogues_have_the_same_keys() {
        let w = Web::load(false).unwrap();
        let keys = |v: &Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&w.ja), keys(&w.en));
        for lang in [Lang::Ja, Lang::En] {
            let html = w.render("index.html", lang, "/", None).unwrap();
            assert!(html.contains(&format!("lang=\"{}\"", lang.code())));
        }
    }
}
