//! HTTP API of the key service. Data-plane operations act for the caller's own tenant only;
//! binary values travel as standard base64.

use crate::admin::{KeyStatus, RotationStarted};
use crate::data::TRANSIT_MAX_BYTES;
use crate::service::KeyService;
use actix_web::{web, HttpResponse};
use anshin_platform::error::{Problem, ProblemBody};
use anshin_platform::http::{Authenticated, ScopeCheckedByRoute};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/keys/status", web::get().to(status))
        .route("/api/v1/keys/rotate", web::post().to(rotate))
        .service(
            web::resource("/api/v1/keys/byok")
                .route(web::put().to(register_byok))
                .route(web::delete().to(remove_byok)),
        )
        .route("/api/v1/keys/data-keys", web::post().to(generate))
        .route("/api/v1/keys/data-keys/unwrap", web::post().to(unwrap))
        .route("/api/v1/keys/data-keys/rewrap", web::post().to(rewrap))
        .service(
            web::scope("/api/v1/keys/transit")
                // Base64 grows payloads by a third; leave room for the JSON around them.
                .app_data(anshin_platform::http::json_config(TRANSIT_MAX_BYTES * 2))
                .route("/encrypt", web::post().to(encrypt))
                .route("/decrypt", web::post().to(decrypt)),
        );
}

fn b64(field: &str, value: &str) -> Result<Vec<u8>, Problem> {
    B64.decode(value).map_err(|_| {
        Problem::validation(
            format!("{field} must be standard base64"),
            vec![anshin_platform::error::FieldError {
                field: field.into(),
                message: "not valid base64".into(),
            }],
        )
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantQuery {
    /// One of the provider's institutions (provider roles only); default: the caller's tenant.
    pub tenant_id: Option<Uuid>,
}

/// The tenant's key-encryption keys: active KEK, rotation, last use, BYOK state and health.
#[utoipa::path(get, path = "/api/v1/keys/status", tag = "keys", params(TenantQuery),
    responses((status = 200, body = KeyStatus), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn status(
    Authenticated(p): Authenticated,
    svc: web::Data<KeyService>,
    q: web::Query<TenantQuery>,
) -> Result<web::Json<KeyStatus>, Problem> {
    Ok(web::Json(svc.status(&p, q.tenant_id).await?))
}

/// Rotate to a new KEK now (institution or provider admins). Stored data keys are re-wrapped by
/// a background job; the old KEK keeps unwrapping until then. A person signed in with a session
/// must have confirmed with their passkey within the last 5 minutes
/// (`POST /api/v1/me/step-up/begin` and `finish`), otherwise 403
/// `urn:anshin:problem:step-up-required` and nothing changes; API tokens are not asked.
#[utoipa::path(post, path = "/api/v1/keys/rotate", tag = "keys", params(TenantQuery),
    responses((status = 202, body = RotationStarted), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody), (status = 503, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn rotate(
    Authenticated(p): Authenticated,
    svc: web::Data<KeyService>,
    q: web::Query<TenantQuery>,
) -> Result<HttpResponse, Problem> {
    let r = svc.rotate(&p, q.tenant_id).await?;
    Ok(HttpResponse::Accepted().json(r))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ByokRequest {
    /// The ARN of a symmetric KMS key in the tenant's own AWS account, in ap-northeast-1 or
    /// ap-northeast-3, whose key policy lets Anshin's role use it.
    pub key_arn: String,
}

/// Bring your own key: make a KMS key from the tenant's own AWS account its KEK. Anshin checks it
/// can use the key and refuses multi-Region keys and imported material. People need a passkey
/// step-up within 5 minutes (403 `urn:anshin:problem:step-up-required` otherwise).
#[utoipa::path(put, path = "/api/v1/keys/byok", tag = "keys", params(TenantQuery), request_body = ByokRequest,
    responses((status = 202, body = RotationStarted), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody), (status = 503, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn register_byok(
    Authenticated(p): Authenticated,
    svc: web::Data<KeyService>,
    q: web::Query<TenantQuery>,
    body: web::Json<ByokRequest>,
) -> Result<HttpResponse, Problem> {
    let r = svc
        .register_byok(&p, q.tenant_id, body.key_arn.trim())
        .await?;
    Ok(HttpResponse::Accepted().json(r))
}

/// Stop using the tenant's own key and go back to an Anshin-managed KEK. People need a passkey
/// step-up within 5 minutes (403 `urn:anshin:problem:step-up-required` otherwise).
#[utoipa::path(delete, path = "/api/v1/keys/byok", tag = "keys", params(TenantQuery),
    responses((status = 202, body = RotationStarted), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody), (status = 503, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn remove_byok(
    Authenticated(p): Authenticated,
    svc: web::Data<KeyService>,
    q: web::Query<TenantQuery>,
) -> Result<HttpResponse, Problem> {
    let r = svc.remove_byok(&p, q.tenant_id).await?;
    Ok(HttpResponse::Accepted().json(r))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct GenerateRequest {
    /// What the key protects, e.g. `emr.record` (a-z, 0-9, `.`, `_`, `-`; at most 64).
    pub purpose: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GeneratedDataKey {
    /// The KEK that wrapped it.
    pub key_id: String,
    /// The AES-256 key (base64). Use it, then wipe it; never store it.
    pub plaintext: String,
    /// Store this beside the records it encrypts and send it back to unwrap (base64).
    pub wrapped: String,
}

/// A fresh data key for the caller's tenant (machine clients with the `keys` scope, or API tokens of roles that may change data).
#[utoipa::path(post, path = "/api/v1/keys/data-keys", tag = "keys", request_body = GenerateRequest,
    responses((status = 200, body = GeneratedDataKey), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody), (status = 503, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn generate(
    ScopeCheckedByRoute(p): ScopeCheckedByRoute,
    svc: web::Data<KeyService>,
    body: web::Json<GenerateRequest>,
) -> Result<HttpResponse, Problem> {
    let k = svc.issue_data_key(&p, &body.purpose).await?;
    Ok(no_store(HttpResponse::Ok()).json(GeneratedDataKey {
        key_id: k.key_id,
        plaintext: B64.encode(k.plaintext.as_ref()),
        wrapped: B64.encode(&k.token),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UnwrapRequest {
    pub purpose: String,
    /// The `wrapped` value from the data-key response (base64).
    pub wrapped: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UnwrappedDataKey {
    /// The AES-256 key (base64).
    pub plaintext: String,
}

/// Unwrap a data key of the caller's tenant. Keys of another tenant or purpose are refused.
#[utoipa::path(post, path = "/api/v1/keys/data-keys/unwrap", tag = "keys", request_body = UnwrapRequest,
    responses((status = 200, body = UnwrappedDataKey), (status = 400, body = ProblemBody), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody), (status = 503, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn unwrap(
    ScopeCheckedByRoute(p): ScopeCheckedByRoute,
    svc: web::Data<KeyService>,
    body: web::Json<UnwrapRequest>,
) -> Result<HttpResponse, Problem> {
    let token = b64("wrapped", &body.wrapped)?;
    let k = svc.unwrap_data_key(&p, &body.purpose, &token).await?;
    Ok(no_store(HttpResponse::Ok()).json(UnwrappedDataKey {
        plaintext: B64.encode(k.as_slice()),
    }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RewrappedDataKey {
    pub wrapped: String,
}

/// Re-wrap a data key under the tenant's current KEK (after a rotation or a BYOK change).
#[utoipa::path(post, path = "/api/v1/keys/data-keys/rewrap", tag = "keys", request_body = UnwrapRequest,
    responses((status = 200, body = RewrappedDataKey), (status = 400, body = ProblemBody), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody), (status = 503, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn rewrap(
    ScopeCheckedByRoute(p): ScopeCheckedByRoute,
    svc: web::Data<KeyService>,
    body: web::Json<UnwrapRequest>,
) -> Result<HttpResponse, Problem> {
    let token = b64("wrapped", &body.wrapped)?;
    let w = svc.rewrap_data_key(&p, &body.purpose, &token).await?;
    Ok(HttpResponse::Ok().json(RewrappedDataKey {
        wrapped: B64.encode(w),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct EncryptRequest {
    pub purpose: String,
    /// The record the value belongs to; decrypting needs the same id.
    pub record_id: String,
    /// At most 64 KiB before encoding (base64).
    pub plaintext: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Ciphertext {
    /// An Anshin envelope (format version 1, base64).
    pub ciphertext: String,
}

/// Encrypt a small value for the caller's tenant, bound to purpose and record.
#[utoipa::path(post, path = "/api/v1/keys/transit/encrypt", tag = "keys", request_body = EncryptRequest,
    responses((status = 200, body = Ciphertext), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 409, body = ProblemBody), (status = 413, body = ProblemBody), (status = 422, body = ProblemBody), (status = 503, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn encrypt(
    ScopeCheckedByRoute(p): ScopeCheckedByRoute,
    svc: web::Data<KeyService>,
    body: web::Json<EncryptRequest>,
) -> Result<web::Json<Ciphertext>, Problem> {
    let pt = zeroize::Zeroizing::new(b64("plaintext", &body.plaintext)?);
    let ct = svc
        .encrypt_for(&p, &body.purpose, &body.record_id, &pt)
        .await?;
    Ok(web::Json(Ciphertext {
        ciphertext: B64.encode(ct),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DecryptRequest {
    pub purpose: String,
    pub record_id: String,
    pub ciphertext: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Plaintext {
    pub plaintext: String,
}

/// Decrypt a value encrypted for the caller's tenant, purpose and record.
#[utoipa::path(post, path = "/api/v1/keys/transit/decrypt", tag = "keys", request_body = DecryptRequest,
    responses((status = 200, body = Plaintext), (status = 400, body = ProblemBody), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody), (status = 503, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn decrypt(
    ScopeCheckedByRoute(p): ScopeCheckedByRoute,
    svc: web::Data<KeyService>,
    body: web::Json<DecryptRequest>,
) -> Result<HttpResponse, Problem> {
    let ct = b64("ciphertext", &body.ciphertext)?;
    let pt = svc
        .decrypt_for(&p, &body.purpose, &body.record_id, &ct)
        .await?;
    Ok(no_store(HttpResponse::Ok()).json(Plaintext {
        plaintext: B64.encode(pt.as_slice()),
    }))
}

/// Key material must not be kept by caches or proxies.
fn no_store(mut b: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    b.insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"));
    b
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(status, rotate, register_byok, remove_byok, generate, unwrap, rewrap, encrypt, decrypt),
    components(schemas(
        KeyStatus, RotationStarted, crate::admin::KekView, crate::admin::CachePolicy, ByokRequest,
        GenerateRequest, GeneratedDataKey, UnwrapRequest, UnwrappedDataKey, RewrappedDataKey,
        EncryptRequest, Ciphertext, DecryptRequest, Plaintext
    )),
    tags((name = "keys", description = "Per-tenant keys (guideline 7 ③, 13 ⑦): key status, rotation, bring-your-own-key, data keys and transit encryption for the EMR data plane"))
)]
pub struct KeysApi;
