use anshin_platform::error::Problem;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    /// A WebAuthn ceremony that cannot complete: expired, replayed, wrong origin, unknown
    /// credential, counter regression, malformed response.
    #[error("{0}")]
    Ceremony(String),
    /// An OpenID Connect sign-in that cannot complete: state, nonce, issuer, code or token.
    #[error("{0}")]
    Federation(String),
    /// A service Anshin depends on (the mail server) did not answer.
    #[error("{0}")]
    Upstream(String),
    /// Email address or password wrong (deliberately not saying which).
    #[error("{0}")]
    SignIn(String),
    /// The password is locked after repeated failures.
    #[error("{detail}")]
    Locked {
        detail: String,
        retry_after_secs: i64,
    },
    /// A sensitive action needs a fresh passkey confirmation first.
    #[error("{0}")]
    StepUpRequired(String),
    #[error("WebAuthn is not configured correctly: {0}")]
    Setup(String),
    /// An OAuth 2.0 token-endpoint error (RFC 6749 §5.2). The token endpoint answers it as
    /// `{"error": code, "error_description": description}`, not as a problem.
    #[error("{description}")]
    OAuth {
        /// `invalid_request`, `invalid_client`, `invalid_grant`, `unauthorized_client`,
        /// `unsupported_grant_type` or `invalid_scope`.
        code: &'static str,
        description: String,
    },
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
}

impl From<IdentityError> for Problem {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::NotFound(d) => Problem::not_found(d),
            IdentityError::Forbidden(d) => Problem::forbidden(d),
            IdentityError::Invalid(d) => Problem::validation(d, Vec::new()),
            IdentityError::Conflict(d) => Problem::conflict(d),
            IdentityError::Ceremony(d) => Problem::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                "webauthn-failed",
                "The security key or passkey check failed",
                d,
            ),
            IdentityError::Federation(d) => Problem::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                "federation-failed",
                "Sign-in with your organisation's account failed",
                d,
            ),
            IdentityError::SignIn(d) => Problem::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                "sign-in-failed",
                "Sign-in failed",
                d,
            ),
            IdentityError::Locked {
                detail,
                retry_after_secs,
            } => Problem::new(
                actix_web::http::StatusCode::TOO_MANY_REQUESTS,
                "password-locked",
                "The password is locked for now",
                detail,
            )
            .with_retry_after(retry_after_secs),
            IdentityError::StepUpRequired(d) => Problem::new(
                actix_web::http::StatusCode::FORBIDDEN,
                "step-up-required",
                "Confirm with your passkey first",
                d,
            ),
            IdentityError::Upstream(d) => Problem::unavailable(d),
            IdentityError::Setup(d) => Problem::internal(&d),
            IdentityError::OAuth {
                code: "invalid_client",
                description,
            } => Problem::unauthorized(description),
            IdentityError::OAuth { description, .. } => Problem::bad_request(description),
            IdentityError::Db(e) => Problem::internal(&e),
        }
    }
}
