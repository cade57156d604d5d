//! Sign-in, enrollment, invitations and the signed-in person's own account and sessions.

use crate::break_glass::BreakGlassView;
use crate::grants::{GrantDecision, GrantRequest, GrantView};
use crate::inventory::{AccountChange, AccountEntry};
use crate::oidc::{OidcOutcome, ProviderSettings, ProviderView};
use crate::service::{
    ClientMeta, IdentityService, InvitationInfo, NewSession, SessionInfo, UserInfo,
};
use actix_web::cookie::{Cookie, SameSite};
use actix_web::{web, HttpRequest, HttpResponse};
use anshin_platform::error::{Problem, ProblemBody};
use anshin_platform::http::{Authenticated, SESSION_COOKIE};
use anshin_platform::{Role, Subject};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

#[derive(OpenApi)]
#[openapi(
    paths(crate::policy::get_identity_policy, crate::policy::put_identity_policy, crate::review::start_review, crate::review::list_reviews,
        crate::review::get_review, crate::review::decide_review_item, crate::review::close_review,
        invite, enroll_begin, enroll_finish, sign_in_begin, sign_in_finish, sign_out, me, my_sessions, end_my_session,
        oidc_start, oidc_callback, oidc_step_up_begin, oidc_step_up_finish, get_identity_provider, put_identity_provider,
        issue_break_glass, get_break_glass, use_break_glass, list_accounts, get_account, change_account, end_account_sessions,
        list_invitations, revoke_invitation,
        request_grant, list_grants, decide_grant, step_up_begin, step_up_finish,
        crate::clients::http::register_client, crate::clients::http::list_clients, crate::clients::http::revoke_client,
        crate::clients::http::token, crate::clients::http::jwks),
    components(schemas(crate::clients::ClientRegistration, crate::clients::AuthMethod, crate::clients::ClientView,
        crate::clients::RegisteredClient, crate::clients::http::ClientList, crate::clients::http::Jwks,
        crate::clients::TokenResponse, crate::clients::OAuthErrorBody, crate::clients::token::TokenRequestForm,
        crate::policy::PolicySettings, crate::policy::PolicyView, crate::review::StartReview, crate::review::ReviewDecision,
        crate::review::DecideItem, crate::review::CloseReview, crate::review::ReviewSummary, crate::review::ReviewItemView,
        crate::review::ReviewDetail, crate::review::ReviewList,
        InvitationList, crate::inventory::PendingInvitation,
        StepUpProof, GrantRequest, GrantDecision, GrantView, GrantList, AccountList, AccountEntry, AccountChange, IssuedCode, BreakGlassView, BreakGlassUse, FlowRequest, StepUpFinish, ProviderSettings, ProviderView, InviteRequest, InvitationInfo, TokenRequest, EmailRequest, CeremonyStart, EnrollFinish, SignInFinish, SignedIn, Me, SessionList, SessionInfo, UserInfo, Role)),
    tags((name = "identity", description = "Two-factor sign-in with passkeys, invitations and sessions"))
)]
pub struct IdentityApi;

/// Cookie settings the routes need.
#[derive(Clone, Copy)]
pub struct CookiePolicy {
    pub insecure: bool,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/invitations", web::post().to(invite))
        .route("/api/v1/invitations", web::get().to(list_invitations))
        .route(
            "/api/v1/invitations/{id}",
            web::delete().to(revoke_invitation),
        )
        .route(
            "/api/v1/auth/enrollment/begin",
            web::post().to(enroll_begin),
        )
        .route(
            "/api/v1/auth/enrollment/finish",
            web::post().to(enroll_finish),
        )
        .route("/api/v1/auth/sign-in/begin", web::post().to(sign_in_begin))
        .route(
            "/api/v1/auth/sign-in/finish",
            web::post().to(sign_in_finish),
        )
        .route("/api/v1/auth/sign-out", web::post().to(sign_out))
        .route("/api/v1/me", web::get().to(me))
        .route("/api/v1/me/sessions", web::get().to(my_sessions))
        .route("/api/v1/me/sessions/{id}", web::delete().to(end_my_session))
        .route("/api/v1/me/step-up/begin", web::post().to(step_up_begin))
        .route("/api/v1/me/step-up/finish", web::post().to(step_up_finish))
        .route(
            "/api/v1/identity-provider",
            web::get().to(get_identity_provider),
        )
        .route(
            "/api/v1/identity-provider",
            web::put().to(put_identity_provider),
        )
        .route(
            "/api/v1/auth/oidc/step-up/begin",
            web::post().to(oidc_step_up_begin),
        )
        .route(
            "/api/v1/auth/oidc/step-up/finish",
            web::post().to(oidc_step_up_finish),
        )
        .route("/api/v1/maintenance-grants", web::post().to(request_grant))
        .route("/api/v1/maintenance-grants", web::get().to(list_grants))
        .route(
            "/api/v1/maintenance-grants/{id}/decision",
            web::post().to(decide_grant),
        )
        .route("/api/v1/accounts", web::get().to(list_accounts))
        .route("/api/v1/accounts/{id}", web::get().to(get_account))
        .route("/api/v1/accounts/{id}", web::patch().to(change_account))
        .route(
            "/api/v1/accounts/{id}/sessions",
            web::delete().to(end_account_sessions),
        )
        .route("/api/v1/break-glass", web::post().to(issue_break_glass))
        .route("/api/v1/break-glass", web::get().to(get_break_glass))
        .route("/api/v1/auth/break-glass", web::post().to(use_break_glass))
        .route("/auth/oidc/start", web::get().to(oidc_start))
        .route("/auth/oidc/callback", web::get().to(oidc_callback));
    crate::policy::configure(cfg);
    crate::credential_routes::configure(cfg);
    crate::review::configure(cfg);
    crate::clients::http::configure(cfg);
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OidcStartQuery {
    /// The organisation's sign-in name (its tenant slug).
    pub org: String,
    /// The person's email, passed on to the provider as `login_hint`.
    pub login_hint: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OidcCallbackQuery {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowRequest {
    pub flow_id: Uuid,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepUpFinish {
    pub flow_id: Uuid,
    pub ceremony_id: Uuid,
    #[schema(value_type = Object)]
    pub credential: PublicKeyCredential,
}

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, to.to_string()))
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// Sends the browser to the organisation's OpenID Provider (authorization code flow with PKCE).
#[utoipa::path(get, path = "/auth/oidc/start", tag = "identity", params(OidcStartQuery),
    responses((status = 303, description = "Redirect to the provider"), (status = 400, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub async fn oidc_start(
    svc: web::Data<IdentityService>,
    q: web::Query<OidcStartQuery>,
) -> Result<HttpResponse, Problem> {
    let url = svc.oidc_start(&q.org, q.login_hint.as_deref()).await?;
    Ok(see_other(url.as_str()))
}

/// The provider's redirect back. Signs in (303 to /portal) or asks for a passkey step-up
/// (303 to /signin/step-up#flow=…).
#[utoipa::path(get, path = "/auth/oidc/callback", tag = "identity", params(OidcCallbackQuery),
    responses((status = 303, description = "Signed in, or on to the step-up"), (status = 400, body = ProblemBody), (status = 403, body = ProblemBody)))]
pub async fn oidc_callback(
    req: HttpRequest,
    svc: web::Data<IdentityService>,
    policy: web::Data<CookiePolicy>,
    q: web::Query<OidcCallbackQuery>,
) -> Result<HttpResponse, Problem> {
    let q = q.into_inner();
    if let Some(err) = q.error {
        let detail = q.error_description.unwrap_or_default();
        return Err(Problem::new(
            actix_web::http::StatusCode::BAD_REQUEST,
            "federation-failed",
            "Sign-in with your organisation's account failed",
            format!("the provider answered {err}: {detail}"),
        ));
    }
    let (Some(state), Some(code)) = (q.state, q.code) else {
        return Err(Problem::bad_request(
            "the provider's answer has no state or code",
        ));
    };
    match svc.oidc_callback(&state, &code, meta(&req)).await? {
        OidcOutcome::SignedIn(s) => Ok(HttpResponse::SeeOther()
            .cookie(session_cookie(s.cookie.expose(), **policy))
            .insert_header((actix_web::http::header::LOCATION, "/portal"))
            .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
            .finish()),
        OidcOutcome::StepUp { flow_id } => {
            Ok(see_other(&format!("/signin/step-up#flow={flow_id}")))
        }
    }
}

/// Starts the passkey step-up after a provider sign-in that did not prove two factors.
#[utoipa::path(post, path = "/api/v1/auth/oidc/step-up/begin", tag = "identity", request_body = FlowRequest,
    responses((status = 200, body = CeremonyStart), (status = 400, body = ProblemBody)))]
pub async fn oidc_step_up_begin(
    svc: web::Data<IdentityService>,
    body: web::Json<FlowRequest>,
) -> Result<web::Json<CeremonyStart>, Problem> {
    let (id, rcr) = svc.oidc_step_up_begin(body.flow_id).await?;
    Ok(web::Json(CeremonyStart {
        ceremony_id: id,
        public_key: to_json(&rcr)?,
    }))
}

#[utoipa::path(post, path = "/api/v1/auth/oidc/step-up/finish", tag = "identity", request_body = StepUpFinish,
    responses((status = 200, body = SignedIn), (status = 400, body = ProblemBody)))]
pub async fn oidc_step_up_finish(
    req: HttpRequest,
    svc: web::Data<IdentityService>,
    policy: web::Data<CookiePolicy>,
    body: web::Json<StepUpFinish>,
) -> Result<HttpResponse, Problem> {
    let b = body.into_inner();
    let s = svc
        .oidc_step_up_finish(b.flow_id, b.ceremony_id, &b.credential, meta(&req))
        .await?;
    Ok(signed_in(actix_web::http::StatusCode::OK, s, **policy))
}

/// The caller's tenant's OpenID Provider settings (never the client secret).
#[utoipa::path(get, path = "/api/v1/identity-provider", tag = "identity",
    responses((status = 200, body = ProviderView), (status = 401, body = ProblemBody), (status = 404, body = ProblemBody)), security(("bearer" = []), ("session" = [])))]
pub async fn get_identity_provider(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
) -> Result<web::Json<ProviderView>, Problem> {
    svc.identity_provider(&p)
        .await?
        .map(web::Json)
        .ok_or_else(|| Problem::not_found("this tenant has no OpenID Provider configured"))
}

/// Sets the caller's tenant's OpenID Provider (admins). The client secret is stored encrypted.
#[utoipa::path(put, path = "/api/v1/identity-provider", tag = "identity", request_body = ProviderSettings,
    responses((status = 200, body = ProviderView), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 422, body = ProblemBody)), security(("bearer" = []), ("session" = [])))]
pub async fn put_identity_provider(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    body: web::Json<ProviderSettings>,
) -> Result<web::Json<ProviderView>, Problem> {
    Ok(web::Json(
        svc.set_identity_provider(&p, body.into_inner()).await?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    #[schema(example = "hanako.sato@sakura-clinic.example.jp")]
    pub email: String,
    #[schema(example = "佐藤 花子")]
    pub display_name: String,
    pub role: Role,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The token from the enrollment link.
    pub token: String,
    /// What to register: a passkey (default) or a security key with a password.
    #[serde(default)]
    pub method: Option<crate::credentials::CredentialKind>,
    /// The password chosen with a security key (never stored, only its argon2id hash).
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailRequest {
    pub email: String,
}

/// A started WebAuthn ceremony: pass `public_key` to `navigator.credentials`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CeremonyStart {
    pub ceremony_id: Uuid,
    #[schema(value_type = Object)]
    pub public_key: serde_json::Value,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollFinish {
    pub ceremony_id: Uuid,
    #[schema(value_type = Object)]
    pub credential: RegisterPublicKeyCredential,
    /// A name for the passkey, e.g. "受付PCの Windows Hello".
    pub credential_name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInFinish {
    pub ceremony_id: Uuid,
    #[schema(value_type = Object)]
    pub credential: PublicKeyCredential,
}

/// The session cookie is set on this response; `csrf_token` goes in `x-csrf-token` on every
/// request that changes data.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignedIn {
    pub user: UserInfo,
    pub csrf_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub user: UserInfo,
    pub csrf_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    pub items: Vec<SessionInfo>,
}

pub(crate) fn meta(req: &HttpRequest) -> ClientMeta {
    ClientMeta {
        user_agent: req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        source_ip: req.peer_addr().map(|a| a.ip().to_string()),
    }
}

fn session_cookie(value: &str, policy: CookiePolicy) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, value.to_string())
        .path("/")
        .secure(!policy.insecure)
        .http_only(true)
        .same_site(SameSite::Strict)
        .finish()
}

pub(crate) fn signed_in(
    status: actix_web::http::StatusCode,
    s: NewSession,
    policy: CookiePolicy,
) -> HttpResponse {
    HttpResponse::build(status)
        .cookie(session_cookie(s.cookie.expose(), policy))
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(SignedIn {
            user: s.user,
            csrf_token: s.csrf_token,
        })
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> Result<serde_json::Value, Problem> {
    serde_json::to_value(v).map_err(|e| Problem::internal(&e))
}

/// Invites a person into the caller's tenant; the response carries the single-use enrollment
/// link, shown only this once.
#[utoipa::path(post, path = "/api/v1/invitations", tag = "identity", request_body = InviteRequest,
    responses((status = 201, body = InvitationInfo), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn invite(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    body: web::Json<InviteRequest>,
) -> Result<HttpResponse, Problem> {
    let b = body.into_inner();
    let inv = svc.invite(&p, &b.email, &b.display_name, b.role).await?;
    Ok(HttpResponse::Created()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(inv))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationList {
    pub items: Vec<crate::inventory::PendingInvitation>,
}

/// The caller's tenant's pending invitations: not used, not expired, not revoked (admins and
/// auditors). Never the enrollment link.
#[utoipa::path(get, path = "/api/v1/invitations", tag = "identity",
    responses((status = 200, body = InvitationList), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn list_invitations(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
) -> Result<web::Json<InvitationList>, Problem> {
    Ok(web::Json(InvitationList {
        items: svc.pending_invitations(&p).await?,
    }))
}

/// Revokes a pending invitation (admins): its enrollment link stops working at once. 409 when
/// it was already used, expired or revoked; another tenant's invitation is not found.
#[utoipa::path(delete, path = "/api/v1/invitations/{id}", tag = "identity", params(("id" = Uuid, Path, description = "Invitation id")),
    responses((status = 204), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn revoke_invitation(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    svc.revoke_invitation(&p, id.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Starts registering a passkey from an enrollment link.
#[utoipa::path(post, path = "/api/v1/auth/enrollment/begin", tag = "identity", request_body = TokenRequest,
    responses((status = 200, body = CeremonyStart), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody)))]
pub async fn enroll_begin(
    svc: web::Data<IdentityService>,
    body: web::Json<TokenRequest>,
) -> Result<web::Json<CeremonyStart>, Problem> {
    let b = body.into_inner();
    let method = match (b.method, b.password) {
        (None | Some(crate::credentials::CredentialKind::Passkey), None) => {
            crate::service::EnrollMethod::Passkey
        }
        (Some(crate::credentials::CredentialKind::SecurityKey), Some(password)) => {
            crate::service::EnrollMethod::SecurityKey { password }
        }
        (Some(crate::credentials::CredentialKind::SecurityKey), None) => {
            return Err(Problem::validation(
                "a security key is used with a password: give one in `password`",
                Vec::new(),
            ))
        }
        (_, Some(_)) => {
            return Err(Problem::validation(
                "a password goes only with method security_key",
                Vec::new(),
            ))
        }
    };
    let (id, ccr) = svc.enroll_begin(&b.token, method).await?;
    Ok(web::Json(CeremonyStart {
        ceremony_id: id,
        public_key: to_json(&ccr)?,
    }))
}

/// Finishes registration: the account exists and a session starts.
#[utoipa::path(post, path = "/api/v1/auth/enrollment/finish", tag = "identity", request_body = EnrollFinish,
    responses((status = 201, body = SignedIn), (status = 400, body = ProblemBody), (status = 409, body = ProblemBody)))]
pub async fn enroll_finish(
    req: HttpRequest,
    svc: web::Data<IdentityService>,
    policy: web::Data<CookiePolicy>,
    body: web::Json<EnrollFinish>,
) -> Result<HttpResponse, Problem> {
    let b = body.into_inner();
    let s = svc
        .enroll_finish(
            b.ceremony_id,
            &b.credential,
            b.credential_name.as_deref(),
            meta(&req),
        )
        .await?;
    Ok(signed_in(actix_web::http::StatusCode::CREATED, s, **policy))
}

/// Starts a passkey sign-in for an email address.
#[utoipa::path(post, path = "/api/v1/auth/sign-in/begin", tag = "identity", request_body = EmailRequest,
    responses((status = 200, body = CeremonyStart), (status = 400, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn sign_in_begin(
    svc: web::Data<IdentityService>,
    body: web::Json<EmailRequest>,
) -> Result<web::Json<CeremonyStart>, Problem> {
    let (id, rcr) = svc.sign_in_begin(&body.email).await?;
    Ok(web::Json(CeremonyStart {
        ceremony_id: id,
        public_key: to_json(&rcr)?,
    }))
}

/// Finishes a passkey sign-in (user verification required: two factors in one gesture).
#[utoipa::path(post, path = "/api/v1/auth/sign-in/finish", tag = "identity", request_body = SignInFinish,
    responses((status = 200, body = SignedIn), (status = 400, body = ProblemBody)))]
pub async fn sign_in_finish(
    req: HttpRequest,
    svc: web::Data<IdentityService>,
    policy: web::Data<CookiePolicy>,
    body: web::Json<SignInFinish>,
) -> Result<HttpResponse, Problem> {
    let b = body.into_inner();
    let s = match svc
        .sign_in_finish(b.ceremony_id, &b.credential, meta(&req))
        .await
    {
        Ok(s) => s,
        Err(e) => {
            // The platform log has the refusal; the tenant it aimed at gets it in its own trail.
            if matches!(e, crate::error::IdentityError::Ceremony(_)) {
                svc.record_refused_sign_in(
                    Some(b.ceremony_id),
                    Some(&b.credential),
                    "passkey",
                    &e.to_string(),
                )
                .await;
            }
            return Err(e.into());
        }
    };
    Ok(signed_in(actix_web::http::StatusCode::OK, s, **policy))
}

/// Ends the current session and clears the cookie.
#[utoipa::path(post, path = "/api/v1/auth/sign-out", tag = "identity",
    responses((status = 204), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody)), security(("session" = [])))]
pub async fn sign_out(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    policy: web::Data<CookiePolicy>,
) -> Result<HttpResponse, Problem> {
    let Subject::User { session_id, .. } = p.subject else {
        return Err(Problem::bad_request(
            "sign-out ends a browser session; API tokens are revoked with `anshin token revoke`",
        ));
    };
    svc.end_my_session(&p, session_id).await?;
    let mut gone = session_cookie("", **policy);
    gone.make_removal();
    Ok(HttpResponse::NoContent().cookie(gone).finish())
}

/// The signed-in person and the CSRF token of this session.
#[utoipa::path(get, path = "/api/v1/me", tag = "identity",
    responses((status = 200, body = Me), (status = 401, body = ProblemBody), (status = 404, body = ProblemBody)), security(("session" = [])))]
pub async fn me(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
) -> Result<HttpResponse, Problem> {
    let (user, csrf_token) = svc.me(&p).await?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(Me { user, csrf_token }))
}

/// The signed-in person's open sessions.
#[utoipa::path(get, path = "/api/v1/me/sessions", tag = "identity",
    responses((status = 200, body = SessionList), (status = 401, body = ProblemBody)), security(("session" = [])))]
pub async fn my_sessions(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
) -> Result<web::Json<SessionList>, Problem> {
    Ok(web::Json(SessionList {
        items: svc.my_sessions(&p).await?,
    }))
}

/// Ends one of the signed-in person's sessions (for example on a shared terminal).
#[utoipa::path(delete, path = "/api/v1/me/sessions/{id}", tag = "identity", params(("id" = Uuid, Path, description = "Session id")),
    responses((status = 204), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)), security(("session" = [])))]
pub async fn end_my_session(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    svc.end_my_session(&p, id.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A new emergency code, shown this once: print it and seal it.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedCode {
    pub id: Uuid,
    pub code: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassUse {
    /// The organisation's sign-in name (tenant slug).
    pub org: String,
    pub code: String,
    /// Why emergency access is needed now (10–1000 characters); sent to the administrators.
    pub reason: String,
}

/// Issues a new sealed emergency code for the caller's tenant, retiring the previous one (admins).
#[utoipa::path(post, path = "/api/v1/break-glass", tag = "identity",
    responses((status = 201, body = IssuedCode), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody)), security(("bearer" = []), ("session" = [])))]
pub async fn issue_break_glass(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
) -> Result<HttpResponse, Problem> {
    let issued = svc.issue_break_glass(&p).await?;
    Ok(HttpResponse::Created()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(IssuedCode {
            id: issued.id,
            code: issued.code.expose().to_string(),
            created_at: issued.created_at,
        }))
}

/// The state of the tenant's emergency code: sealed, used (with when, why and from where) or retired.
#[utoipa::path(get, path = "/api/v1/break-glass", tag = "identity",
    responses((status = 200, body = BreakGlassView), (status = 401, body = ProblemBody), (status = 404, body = ProblemBody)), security(("bearer" = []), ("session" = [])))]
pub async fn get_break_glass(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
) -> Result<web::Json<BreakGlassView>, Problem> {
    svc.break_glass_status(&p)
        .await?
        .map(web::Json)
        .ok_or_else(|| Problem::not_found("no emergency code was issued for this tenant"))
}

/// Uses an emergency code: a short session marked as an emergency, and an alert to the administrators.
#[utoipa::path(post, path = "/api/v1/auth/break-glass", tag = "identity", request_body = BreakGlassUse,
    responses((status = 200, body = SignedIn), (status = 403, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn use_break_glass(
    req: HttpRequest,
    svc: web::Data<IdentityService>,
    policy: web::Data<CookiePolicy>,
    body: web::Json<BreakGlassUse>,
) -> Result<HttpResponse, Problem> {
    let b = body.into_inner();
    let s = svc
        .use_break_glass(&b.org, &b.code, &b.reason, meta(&req))
        .await?;
    Ok(signed_in(actix_web::http::StatusCode::OK, s, **policy))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountList {
    pub items: Vec<AccountEntry>,
}

/// The ID inventory of the caller's tenant: every account, its role, status, factors, creation,
/// last sign-in and open sessions (admins and auditors).
#[utoipa::path(get, path = "/api/v1/accounts", tag = "identity",
    responses((status = 200, body = AccountList), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody)), security(("bearer" = []), ("session" = [])))]
pub async fn list_accounts(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
) -> Result<web::Json<AccountList>, Problem> {
    Ok(web::Json(AccountList {
        items: svc.inventory(&p).await?,
    }))
}

/// One account of the caller's tenant: role, status, factors, creation, last sign-in, open
/// sessions (admins and auditors). Another tenant's account is not found.
#[utoipa::path(get, path = "/api/v1/accounts/{id}", tag = "identity", params(("id" = Uuid, Path, description = "Account id")),
    responses((status = 200, body = AccountEntry), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)), security(("bearer" = []), ("session" = [])))]
pub async fn get_account(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    id: web::Path<Uuid>,
) -> Result<web::Json<AccountEntry>, Problem> {
    Ok(web::Json(svc.account(&p, id.into_inner()).await?))
}

/// Disables or re-enables an account (admins). Disabling ends its sessions at once.
#[utoipa::path(patch, path = "/api/v1/accounts/{id}", tag = "identity", params(("id" = Uuid, Path, description = "Account id")), request_body = AccountChange,
    responses((status = 204), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)), security(("bearer" = []), ("session" = [])))]
pub async fn change_account(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    id: web::Path<Uuid>,
    body: web::Json<AccountChange>,
) -> Result<HttpResponse, Problem> {
    svc.change_account(&p, id.into_inner(), body.into_inner())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Ends every open session of an account (admins), e.g. after a lost device.
#[utoipa::path(delete, path = "/api/v1/accounts/{id}/sessions", tag = "identity", params(("id" = Uuid, Path, description = "Account id")),
    responses((status = 204), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)), security(("bearer" = []), ("session" = [])))]
pub async fn end_account_sessions(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    svc.end_sessions_of(&p, id.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GrantList {
    pub items: Vec<GrantView>,
}

/// A maintainer requests access to one institution for one work plan and window.
#[utoipa::path(post, path = "/api/v1/maintenance-grants", tag = "identity", request_body = GrantRequest,
    responses((status = 201, body = GrantView), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)), security(("bearer" = []), ("session" = [])))]
pub async fn request_grant(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    body: web::Json<GrantRequest>,
) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Created().json(svc.request_grant(&p, body.into_inner()).await?))
}

/// Maintenance grants the caller may see (their own, their institution's, or their provider's).
#[utoipa::path(get, path = "/api/v1/maintenance-grants", tag = "identity",
    responses((status = 200, body = GrantList), (status = 401, body = ProblemBody)), security(("bearer" = []), ("session" = [])))]
pub async fn list_grants(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
) -> Result<web::Json<GrantList>, Problem> {
    Ok(web::Json(GrantList {
        items: svc.list_grants(&p).await?,
    }))
}

/// The institution's admin approves or rejects a grant (incident grants: after the fact).
#[utoipa::path(post, path = "/api/v1/maintenance-grants/{id}/decision", tag = "identity", params(("id" = Uuid, Path, description = "Grant id")), request_body = GrantDecision,
    responses((status = 200, body = GrantView), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody)), security(("bearer" = []), ("session" = [])))]
pub async fn decide_grant(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    id: web::Path<Uuid>,
    body: web::Json<GrantDecision>,
) -> Result<web::Json<GrantView>, Problem> {
    Ok(web::Json(
        svc.decide_grant(&p, id.into_inner(), body.into_inner())
            .await?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepUpProof {
    pub ceremony_id: Uuid,
    #[schema(value_type = Object)]
    pub credential: PublicKeyCredential,
}

/// Starts a passkey confirmation of the signed-in person, needed before sensitive actions.
#[utoipa::path(post, path = "/api/v1/me/step-up/begin", tag = "identity",
    responses((status = 200, body = CeremonyStart), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody)), security(("session" = [])))]
pub async fn step_up_begin(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
) -> Result<web::Json<CeremonyStart>, Problem> {
    let (id, rcr) = svc.step_up_begin(&p).await?;
    Ok(web::Json(CeremonyStart {
        ceremony_id: id,
        public_key: to_json(&rcr)?,
    }))
}

/// Finishes the confirmation; sensitive actions are allowed for the next minutes.
#[utoipa::path(post, path = "/api/v1/me/step-up/finish", tag = "identity", request_body = StepUpProof,
    responses((status = 204), (status = 400, body = ProblemBody), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody)), security(("session" = [])))]
pub async fn step_up_finish(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    body: web::Json<StepUpProof>,
) -> Result<HttpResponse, Problem> {
    let b = body.into_inner();
    svc.step_up_finish(&p, b.ceremony_id, &b.credential).await?;
    Ok(HttpResponse::NoContent().finish())
}
