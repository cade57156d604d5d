//! HTTP handlers of machine clients: the management API (problem+json errors), the token
//! endpoint (RFC 6749 JSON errors) and the public key set.

use super::registry::{ClientRegistration, ClientView, RegisteredClient};
use super::token::{parse_form, OAuthErrorBody, TokenRequestForm, TokenResponse};
use super::ClientService;
use crate::error::IdentityError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use anshin_platform::error::{Problem, ProblemBody};
use anshin_platform::http::Authenticated;
use serde::Serialize;
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/clients", web::post().to(register_client))
        .route("/api/v1/clients", web::get().to(list_clients))
        .route("/api/v1/clients/{id}", web::delete().to(revoke_client))
        .route("/oauth2/token", web::post().to(token))
        .route("/.well-known/jwks.json", web::get().to(jwks));
}

/// A JSON Web Key Set (RFC 7517): today one P-256 key (`kty` EC, `alg` ES256, `use` sig, `kid`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Jwks {
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClientList {
    pub items: Vec<ClientView>,
}

/// Registers a machine client in the caller's tenant (admins). For `client_secret` the answer
/// carries the secret, shown only this once.
#[utoipa::path(post, path = "/api/v1/clients", tag = "identity", request_body = ClientRegistration,
    responses((status = 201, body = RegisteredClient), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn register_client(
    Authenticated(p): Authenticated,
    svc: web::Data<ClientService>,
    body: web::Json<ClientRegistration>,
) -> Result<HttpResponse, Problem> {
    let c = svc.register(&p, body.into_inner()).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(c))
}

/// The machine clients of the caller's tenant (admins and auditors). Secrets are never shown.
#[utoipa::path(get, path = "/api/v1/clients", tag = "identity",
    responses((status = 200, body = ClientList), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn list_clients(
    Authenticated(p): Authenticated,
    svc: web::Data<ClientService>,
) -> Result<web::Json<ClientList>, Problem> {
    Ok(web::Json(ClientList {
        items: svc.list(&p).await?,
    }))
}

/// Revokes a machine client (admins): its access tokens stop working and it gets no new ones.
/// The record stays, marked revoked.
#[utoipa::path(delete, path = "/api/v1/clients/{id}", tag = "identity",
    params(("id" = String, Path, description = "The client's id (UUID) or its client_id (anc_…)")),
    responses((status = 200, body = ClientView), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn revoke_client(
    Authenticated(p): Authenticated,
    svc: web::Data<ClientService>,
    id: web::Path<String>,
) -> Result<web::Json<ClientView>, Problem> {
    Ok(web::Json(svc.revoke(&p, &id.into_inner()).await?))
}

/// The OAuth 2.0 token endpoint: client-credentials grant (RFC 6749 §4.4). Authenticate with
/// HTTP Basic (`client_secret_basic`), `client_id` and `client_secret` in the body
/// (`client_secret_post`), or a signed `client_assertion` (`private_key_jwt`, RFC 7523). Errors
/// are RFC 6749 §5.2 JSON; `invalid_client` answers 401.
#[utoipa::path(post, path = "/oauth2/token", tag = "identity",
    request_body(content = TokenRequestForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = TokenResponse), (status = 400, body = OAuthErrorBody), (status = 401, body = OAuthErrorBody)))]
pub async fn token(
    req: HttpRequest,
    svc: web::Data<ClientService>,
    body: web::Bytes,
) -> HttpResponse {
    let form_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return oauth_error(IdentityError::OAuth {
            code: "invalid_request",
            description: "send the token request as application/x-www-form-urlencoded".into(),
        });
    }
    let authorization = match req.headers().get(header::AUTHORIZATION).map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => Some(v.to_string()),
        Some(Err(_)) => {
            return oauth_error(IdentityError::OAuth {
                code: "invalid_client",
                description: "the Authorization header is not readable".into(),
            })
        }
    };
    let result = match parse_form(&body) {
        Ok(form) => svc.token(authorization.as_deref(), &form).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(t) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::PRAGMA, "no-cache"))
            .json(t),
        Err(e) => oauth_error(e),
    }
}

/// An RFC 6749 §5.2 error answer. Failures that are not protocol errors (the database) are
/// logged and answered `server_error` without detail.
fn oauth_error(e: IdentityError) -> HttpResponse {
    let (status, code, description) = match e {
        IdentityError::OAuth { code, description } => {
            let status = if code == "invalid_client" {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::BAD_REQUEST
            };
            (status, code, description)
        }
        other => {
            let p = Problem::from(other);
            let code = if p.status.is_server_error() {
                if p.status == StatusCode::SERVICE_UNAVAILABLE {
                    "temporarily_unavailable"
                } else {
                    "server_error"
                }
            } else {
                "invalid_request"
            };
            (p.status, code, p.detail)
        }
    };
    let mut res = HttpResponse::build(status);
    res.insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"));
    if status == StatusCode::UNAUTHORIZED {
        res.insert_header((
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"anshin\""),
        ));
    }
    res.json(OAuthErrorBody {
        error: code.to_string(),
        error_description: description,
    })
}

/// Anshin's public keys for access tokens (JWKS, RFC 7517): resource servers verify tokens
/// offline with them.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "identity",
    responses((status = 200, description = "JSON Web Key Set", body = Jwks)))]
pub async fn jwks(svc: web::Data<ClientService>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(svc.keys().jwks())
}
