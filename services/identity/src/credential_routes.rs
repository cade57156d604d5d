//! HTTP routes for security keys with passwords, a person's own credentials, password changes,
//! the password lock an administrator sees, password resets after identity verification, and
//! the tenant's attestation policy.

use crate::credentials::{
    AttestationMode, AttestationPolicy, AttestationPolicyView, AttestedModel, CredentialInfo,
    CredentialKind, MyCredentials, PasswordStatus,
};
use crate::password_reset::{
    IssuedPasswordReset, PasswordResetRequest, PasswordResetView, VerificationMethod,
};
use crate::routes::{
    meta, signed_in, to_json, CeremonyStart, CookiePolicy, SignInFinish, SignedIn,
};
use crate::service::IdentityService;
use actix_web::{web, HttpRequest, HttpResponse};
use anshin_platform::error::{Problem, ProblemBody};
use anshin_platform::http::Authenticated;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;
use webauthn_rs::prelude::RegisterPublicKeyCredential;

#[derive(OpenApi)]
#[openapi(
    paths(password_sign_in_begin, password_sign_in_finish, my_credentials, rename_credential,
        remove_credential, add_credential_begin, add_credential_finish, change_password,
        get_attestation_policy, put_attestation_policy, password_status, unlock_password,
        reset_password, list_password_resets, complete_password_reset),
    components(schemas(PasswordSignIn, CredentialInfo, MyCredentials, RenameCredential,
        AddCredential, AddCredentialFinish, NewPassword, AttestationPolicy, AttestationPolicyView,
        AttestedModel, AttestationMode, CredentialKind, PasswordStatus, PasswordResetRequest,
        VerificationMethod, PasswordResetView, IssuedPasswordReset, PasswordResetList,
        CompletePasswordReset)),
    tags((name = "identity", description = "Two-factor sign-in with passkeys, invitations and sessions"))
)]
pub struct CredentialsApi;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/api/v1/auth/password-sign-in/begin",
        web::post().to(password_sign_in_begin),
    )
    .route(
        "/api/v1/auth/password-sign-in/finish",
        web::post().to(password_sign_in_finish),
    )
    .route("/api/v1/me/credentials", web::get().to(my_credentials))
    .route(
        "/api/v1/me/credentials/{id}",
        web::patch().to(rename_credential),
    )
    .route(
        "/api/v1/me/credentials/{id}",
        web::delete().to(remove_credential),
    )
    .route(
        "/api/v1/me/credentials/begin",
        web::post().to(add_credential_begin),
    )
    .route(
        "/api/v1/me/credentials/finish",
        web::post().to(add_credential_finish),
    )
    .route("/api/v1/me/password", web::put().to(change_password))
    .route(
        "/api/v1/attestation-policy",
        web::get().to(get_attestation_policy),
    )
    .route(
        "/api/v1/attestation-policy",
        web::put().to(put_attestation_policy),
    )
    .route(
        "/api/v1/accounts/{id}/password",
        web::get().to(password_status),
    )
    .route(
        "/api/v1/accounts/{id}/password-lock",
        web::delete().to(unlock_password),
    )
    .route(
        "/api/v1/accounts/{id}/password-resets",
        web::post().to(reset_password),
    )
    .route(
        "/api/v1/accounts/{id}/password-resets",
        web::get().to(list_password_resets),
    )
    .route(
        "/api/v1/auth/password-reset",
        web::post().to(complete_password_reset),
    );
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordSignIn {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameCredential {
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddCredential {
    pub kind: CredentialKind,
    /// For a security key when the account has no password yet (or to replace it).
    pub password: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddCredentialFinish {
    pub ceremony_id: Uuid,
    #[schema(value_type = Object)]
    pub credential: RegisterPublicKeyCredential,
    pub name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    pub new_password: String,
}

/// Checks the password and starts the security-key check. A wrong address or password gets
/// one answer; repeated failures lock the password with a growing delay (429).
#[utoipa::path(post, path = "/api/v1/auth/password-sign-in/begin", tag = "identity", request_body = PasswordSignIn,
    responses((status = 200, body = CeremonyStart), (status = 400, body = ProblemBody), (status = 422, body = ProblemBody), (status = 429, body = ProblemBody)))]
pub async fn password_sign_in_begin(
    svc: web::Data<IdentityService>,
    body: web::Json<PasswordSignIn>,
) -> Result<HttpResponse, Problem> {
    let b = body.into_inner();
    let (id, rcr) = svc.password_sign_in_begin(&b.email, &b.password).await?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(CeremonyStart {
            ceremony_id: id,
            public_key: to_json(&rcr)?,
        }))
}

/// Finishes with the security key: a session proven by password and key.
#[utoipa::path(post, path = "/api/v1/auth/password-sign-in/finish", tag = "identity", request_body = SignInFinish,
    responses((status = 200, body = SignedIn), (status = 400, body = ProblemBody)))]
pub async fn password_sign_in_finish(
    req: HttpRequest,
    svc: web::Data<IdentityService>,
    policy: web::Data<CookiePolicy>,
    body: web::Json<SignInFinish>,
) -> Result<HttpResponse, Problem> {
    let b = body.into_inner();
    let s = svc
        .password_sign_in_finish(b.ceremony_id, &b.credential, meta(&req))
        .await?;
    Ok(signed_in(actix_web::http::StatusCode::OK, s, **policy))
}

/// The signed-in person's passkeys and security keys, and whether they have a password.
#[utoipa::path(get, path = "/api/v1/me/credentials", tag = "identity",
    responses((status = 200, body = MyCredentials), (status = 401, body = ProblemBody), (status = 404, body = ProblemBody)), security(("session" = [])))]
pub async fn my_credentials(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
) -> Result<web::Json<MyCredentials>, Problem> {
    Ok(web::Json(svc.my_credentials(&p).await?))
}

/// Renames one of the signed-in person's credentials.
#[utoipa::path(patch, path = "/api/v1/me/credentials/{id}", tag = "identity", params(("id" = Uuid, Path, description = "Credential id")), request_body = RenameCredential,
    responses((status = 200, body = CredentialInfo), (status = 401, body = ProblemBody), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)), security(("session" = [])))]
pub async fn rename_credential(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    id: web::Path<Uuid>,
    body: web::Json<RenameCredential>,
) -> Result<web::Json<CredentialInfo>, Problem> {
    Ok(web::Json(
        svc.rename_credential(&p, id.into_inner(), &body.name)
            .await?,
    ))
}

/// Removes a credential (fresh step-up required; the last way to sign in stays).
#[utoipa::path(delete, path = "/api/v1/me/credentials/{id}", tag = "identity", params(("id" = Uuid, Path, description = "Credential id")),
    responses((status = 204), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody)), security(("session" = [])))]
pub async fn remove_credential(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    svc.remove_credential(&p, id.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Starts registering another passkey or security key (fresh step-up required).
#[utoipa::path(post, path = "/api/v1/me/credentials/begin", tag = "identity", request_body = AddCredential,
    responses((status = 200, body = CeremonyStart), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)), security(("session" = [])))]
pub async fn add_credential_begin(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    body: web::Json<AddCredential>,
) -> Result<web::Json<CeremonyStart>, Problem> {
    let b = body.into_inner();
    let (id, ccr) = svc
        .add_credential_begin(&p, b.kind, b.password.as_deref())
        .await?;
    Ok(web::Json(CeremonyStart {
        ceremony_id: id,
        public_key: to_json(&ccr)?,
    }))
}

/// Finishes the registration.
#[utoipa::path(post, path = "/api/v1/me/credentials/finish", tag = "identity", request_body = AddCredentialFinish,
    responses((status = 201, body = CredentialInfo), (status = 400, body = ProblemBody), (status = 401, body = ProblemBody), (status = 409, body = ProblemBody)), security(("session" = [])))]
pub async fn add_credential_finish(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    body: web::Json<AddCredentialFinish>,
) -> Result<HttpResponse, Problem> {
    let b = body.into_inner();
    let c = svc
        .add_credential_finish(&p, b.ceremony_id, &b.credential, b.name.as_deref())
        .await?;
    Ok(HttpResponse::Created().json(c))
}

/// Changes the signed-in person's password (fresh step-up; the last few may not be reused).
#[utoipa::path(put, path = "/api/v1/me/password", tag = "identity", request_body = NewPassword,
    responses((status = 204), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)), security(("session" = [])))]
pub async fn change_password(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    body: web::Json<NewPassword>,
) -> Result<HttpResponse, Problem> {
    svc.change_password(&p, &body.new_password).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Which authenticators the caller's tenant accepts.
#[utoipa::path(get, path = "/api/v1/attestation-policy", tag = "identity",
    responses((status = 200, body = AttestationPolicyView), (status = 401, body = ProblemBody)), security(("bearer" = []), ("session" = [])))]
pub async fn get_attestation_policy(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
) -> Result<web::Json<AttestationPolicyView>, Problem> {
    Ok(web::Json(svc.attestation_policy(p.tenant_id).await?))
}

/// Sets it (admins, fresh step-up): `any`, or an allow list of attested key models.
#[utoipa::path(put, path = "/api/v1/attestation-policy", tag = "identity", request_body = AttestationPolicy,
    responses((status = 200, body = AttestationPolicyView), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 422, body = ProblemBody)), security(("bearer" = []), ("session" = [])))]
pub async fn put_attestation_policy(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    body: web::Json<AttestationPolicy>,
) -> Result<web::Json<AttestationPolicyView>, Problem> {
    Ok(web::Json(
        svc.put_attestation_policy(&p, body.into_inner()).await?,
    ))
}

/// An account's password state: set or not, failures, lock (admins and auditors).
#[utoipa::path(get, path = "/api/v1/accounts/{id}/password", tag = "identity", params(("id" = Uuid, Path, description = "Account id")),
    responses((status = 200, body = PasswordStatus), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)), security(("bearer" = []), ("session" = [])))]
pub async fn password_status(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    id: web::Path<Uuid>,
) -> Result<web::Json<PasswordStatus>, Problem> {
    Ok(web::Json(svc.password_status(&p, id.into_inner()).await?))
}

/// Lifts a password lock (admins).
#[utoipa::path(delete, path = "/api/v1/accounts/{id}/password-lock", tag = "identity", params(("id" = Uuid, Path, description = "Account id")),
    responses((status = 200, body = PasswordStatus), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)), security(("bearer" = []), ("session" = [])))]
pub async fn unlock_password(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    id: web::Path<Uuid>,
) -> Result<web::Json<PasswordStatus>, Problem> {
    Ok(web::Json(svc.unlock_password(&p, id.into_inner()).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PasswordResetList {
    pub items: Vec<PasswordResetView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompletePasswordReset {
    /// The token from the reset link (`/password-reset#token=…`).
    pub token: String,
    pub new_password: String,
}

/// Resets an account's password after the admin verified the person's identity (guideline
/// 14 ⑥): records how (method, note) and by whom, makes the current password unusable, ends the
/// account's sessions and issues a single-use link (mailed to the person, or shown here once).
/// The admin never sets the password. A signed-in admin with a fresh passkey step-up only.
#[utoipa::path(post, path = "/api/v1/accounts/{id}/password-resets", tag = "identity", params(("id" = Uuid, Path, description = "Account id")), request_body = PasswordResetRequest,
    responses((status = 201, body = IssuedPasswordReset), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody), (status = 503, body = ProblemBody)), security(("session" = [])))]
pub async fn reset_password(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    id: web::Path<Uuid>,
    body: web::Json<PasswordResetRequest>,
) -> Result<HttpResponse, Problem> {
    let issued = svc
        .reset_password(&p, id.into_inner(), body.into_inner())
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(issued))
}

/// The recorded password resets of an account, newest first: how and by whom the identity was
/// verified, and whether the link was used (admins and auditors).
#[utoipa::path(get, path = "/api/v1/accounts/{id}/password-resets", tag = "identity", params(("id" = Uuid, Path, description = "Account id")),
    responses((status = 200, body = PasswordResetList), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)), security(("bearer" = []), ("session" = [])))]
pub async fn list_password_resets(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    id: web::Path<Uuid>,
) -> Result<web::Json<PasswordResetList>, Problem> {
    Ok(web::Json(PasswordResetList {
        items: svc.password_resets(&p, id.into_inner()).await?,
    }))
}

/// Sets a new password with the token of a reset link (once, before it expires). The password
/// rules apply (422). Afterwards sign in as usual with the password and the security key.
#[utoipa::path(post, path = "/api/v1/auth/password-reset", tag = "identity", request_body = CompletePasswordReset,
    responses((status = 204), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody), (status = 429, body = ProblemBody)))]
pub async fn complete_password_reset(
    svc: web::Data<IdentityService>,
    body: web::Json<CompletePasswordReset>,
) -> Result<HttpResponse, Problem> {
    let b = body.into_inner();
    svc.complete_password_reset(&b.token, &b.new_password)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
