//! The HTTP edge shared by every service: request ids, a span and metrics per request, problem
//! responses for malformed input, and the authenticated principal extractor.

use crate::error::Problem;
use crate::principal::Principal;
use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use async_trait::async_trait;
use futures_util::future::LocalBoxFuture;
use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::KeyValue;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tracing::field::Empty;
use tracing::Instrument;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the current request (from `x-request-id` when it is sane, else generated).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The request's span, so extractors can record the tenant and principal on it.
#[derive(Clone)]
pub struct RequestSpan(pub tracing::Span);

fn sane_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| s.to_string())
}

struct HttpMetrics {
    requests: Counter<u64>,
    duration: Histogram<f64>,
}

fn metrics() -> &'static HttpMetrics {
    static M: OnceLock<HttpMetrics> = OnceLock::new();
    M.get_or_init(|| {
        let meter = opentelemetry::global::meter("anshin");
        HttpMetrics {
            requests: meter
                .u64_counter("http.server.requests")
                .with_description("HTTP requests served, by route and status class")
                .build(),
            duration: meter
                .f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("HTTP request duration")
                .build(),
        }
    })
}

/// Middleware: request id, one span per request, a completion log line and request metrics.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(sane_request_id)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{method} {route}"),
        http.request.method = %method,
        http.route = %route,
        request_id = %request_id,
        tenant = Empty,
        principal = Empty,
        role = Empty,
        grant = Empty,
        http.response.status_code = Empty,
        latency_ms = Empty,
    );
    req.extensions_mut().insert(RequestId(request_id.clone()));
    req.extensions_mut().insert(RequestSpan(span.clone()));
    let client = ClientInfo::of(req.request());
    let result = CLIENT
        .scope(client, next.call(req).instrument(span.clone()))
        .await;
    let elapsed = started.elapsed();
    let (status, mut res) = match result {
        Ok(res) => (res.status(), res),
        Err(e) => return Err(e),
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    span.record("http.response.status_code", status.as_u16());
    span.record("latency_ms", elapsed.as_secs_f64() * 1000.0);
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request completed"
        );
    });
    let attrs = [
        KeyValue::new("http.route", route),
        KeyValue::new("http.request.method", method),
        KeyValue::new("http.response.status_code", i64::from(status.as_u16())),
    ];
    let m = metrics();
    m.requests.add(1, &attrs);
    m.duration.record(elapsed.as_secs_f64(), &attrs);
    Ok(res)
}

/// JSON bodies: size limit, and a 4xx problem for every way a body can be wrong.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(move |err, _req| json_problem(err, limit).into())
}

fn json_problem(err: JsonPayloadError, limit: usize) -> Problem {
    match err {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            Problem::payload_too_large(limit)
        }
        JsonPayloadError::ContentType => Problem::unsupported_media_type(
            "send the body as JSON with Content-Type: application/json",
        ),
        JsonPayloadError::Deserialize(e) if e.is_data() => Problem::validation(
            format!("the request body does not match the expected fields: {e}"),
            Vec::new(),
        ),
        JsonPayloadError::Deserialize(e) => {
            Problem::bad_request(format!("the request body is not valid JSON: {e}"))
        }
        other => Problem::bad_request(format!("the request body could not be read: {other}")),
    }
}

/// Path parameters that cannot name anything (a malformed id) answer 404, like a missing one.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_err: PathError, _req| {
        Problem::not_found("no resource exists at this path").into()
    })
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err: QueryPayloadError, _req| {
        Problem::bad_request(format!("the query string is not valid: {err}")).into()
    })
}

/// Resolves bearer credentials to a principal. Implemented by the service that owns credentials.
#[async_trait]
pub trait Authenticator: Send + Sync {
    /// `Ok(None)` for unknown, expired or revoked credentials; `Err` only when the check itself failed.
    async fn authenticate_bearer(&self, token: &str) -> Result<Option<Principal>, Problem>;

    /// A session cookie. `csrf` is the `x-csrf-token` header; for methods that change state
    /// (`unsafe_method`) it must match the session's token, or the answer is a 403 problem.
    async fn authenticate_session(
        &self,
        _session: &str,
        _csrf: Option<&str>,
        _unsafe_method: bool,
    ) -> Result<Option<Principal>, Problem> {
        Ok(None)
    }

    /// The principal acting under the maintenance grant `grant` (header `x-anshin-grant`), or a
    /// 403 problem when the grant is not the caller's, not approved or outside its window.
    async fn apply_grant(
        &self,
        _principal: Principal,
        _grant: uuid::Uuid,
    ) -> Result<Principal, Problem> {
        Err(Problem::forbidden("maintenance grants are not available"))
    }
}

pub const SESSION_COOKIE: &str = "anshin_session";
pub const GRANT_HEADER: &str = "x-anshin-grant";
pub const CSRF_HEADER: &str = "x-csrf-token";

pub type SharedAuthenticator = Arc<dyn Authenticator>;

/// Extractor: the authenticated principal of this request, or a 401 problem.
pub struct Authenticated(pub Principal);

impl FromRequest for Authenticated {
    type Error = Problem;
    type Future = LocalBoxFuture<'static, Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let fut = authenticate(req, true);
        Box::pin(async move { fut.await.map(Authenticated) })
    }
}

/// Like [`Authenticated`], without the rule that a machine client's token needs the `write` scope
/// for every unsafe method: for routes that check the token's scopes themselves (the key
/// service's data operations, where unwrapping is a POST that changes nothing).
pub struct ScopeCheckedByRoute(pub Principal);

impl FromRequest for ScopeCheckedByRoute {
    type Error = Problem;
    type Future = LocalBoxFuture<'static, Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let fut = authenticate(req, false);
        Box::pin(async move { fut.await.map(ScopeCheckedByRoute) })
    }
}

fn authenticate(
    req: &HttpRequest,
    enforce_write_scope: bool,
) -> LocalBoxFuture<'static, Result<Principal, Problem>> {
    let auth = req.app_data::<web::Data<SharedAuthenticator>>().cloned();
    let header = req.headers().get(AUTHORIZATION).cloned();
    let cookie = req.cookie(SESSION_COOKIE).map(|c| c.value().to_string());
    let csrf = req
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let unsafe_method = !req.method().is_safe();
    let grant = req.headers().get(GRANT_HEADER).map(|v| {
        v.to_str()
            .ok()
            .and_then(|s| uuid::Uuid::parse_str(s.trim()).ok())
            .ok_or_else(|| {
                Problem::bad_request("the x-anshin-grant header must be a grant id (a UUID)")
            })
    });
    let span = req.extensions().get::<RequestSpan>().cloned();
    Box::pin(async move {
        let auth = auth.ok_or_else(|| Problem::internal(&"no authenticator configured"))?;
        let principal = match (header, cookie) {
            (Some(header), _) => {
                let token = header
                    .to_str()
                    .ok()
                    .and_then(|h| {
                        let (scheme, rest) = h.split_once(' ')?;
                        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
                    })
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        Problem::unauthorized("the Authorization header must be 'Bearer <token>'")
                    })?
                    .to_string();
                auth.authenticate_bearer(&token).await?.ok_or_else(|| {
                    Problem::unauthorized("the API token is unknown, expired or revoked")
                })?
            }
            (None, Some(session)) => auth
                .authenticate_session(&session, csrf.as_deref(), unsafe_method)
                .await?
                .ok_or_else(|| Problem::unauthorized("your session has ended; sign in again"))?,
            (None, None) => {
                return Err(Problem::unauthorized(
                    "sign in, or send an API token as 'Authorization: Bearer <token>'",
                ))
            }
        };
        let principal = match grant {
            None => principal,
            Some(g) => auth.apply_grant(principal, g?).await?,
        };
        if let Some(RequestSpan(span)) = span {
            span.record("tenant", tracing::field::display(principal.tenant_id));
            span.record(
                "principal",
                tracing::field::display(principal.subject.label()),
            );
            span.record("role", principal.role.as_str());
            if let Some(g) = principal.grant {
                span.record("grant", tracing::field::display(g));
            }
        }
        if enforce_write_scope && unsafe_method && !principal.may_write() {
            return Err(Problem::new(
                    actix_web::http::StatusCode::FORBIDDEN,
                    "insufficient-scope",
                    "The access token's scope does not allow this",
                    "this access token has only read scope; request a token with the write scope (the client must be registered with it) to change data",
                ));
        }
        Ok(principal)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_sanitised() {
        assert_eq!(
            sane_request_id(&HeaderValue::from_static("abc-123")).as_deref(),
            Some("abc-123")
        );
        assert!(sane_request_id(&HeaderValue::from_static("a b")).is_none());
        assert!(sane_request_id(&HeaderValue::from_static("")).is_none());
        let long = "x".repeat(200);
        assert!(sane_request_id(&HeaderValue::from_str(&long).unwrap()).is_none());
    }
}

/// Where a request came from, for audit events: the peer address (not `X-Forwarded-For`, which
/// any client can write), the user agent and the request id. Never fails.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// `METHOD /path` (no query string: it may carry search terms).
    pub route: Option<String>,
}

impl ClientInfo {
    pub fn of(req: &HttpRequest) -> Self {
        Self {
            ip: req.peer_addr().map(|a| a.ip().to_string()),
            user_agent: req
                .headers()
                .get(actix_web::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(512).collect()),
            request_id: req.extensions().get::<RequestId>().map(|r| r.0.clone()),
            route: Some(format!("{} {}", req.method(), req.path())),
        }
    }
}

tokio::task_local! {
    /// The client of the request being handled, so services deep in a call can stamp audit
    /// events with it without every signature carrying it.
    static CLIENT: ClientInfo;
}

/// The client of the HTTP request this code runs for, if any (not in jobs or the CLI).
pub fn current_client() -> Option<ClientInfo> {
    CLIENT.try_with(|c| c.clone()).ok()
}

impl FromRequest for ClientInfo {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        std::future::ready(Ok(Self::of(req)))
    }
}
