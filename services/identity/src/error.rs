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
    /// A sensitive action needs a fresh passkey confirmation first.
    #[error("{0}")]
    StepUpRequired(String),
    #[error("WebAuthn is not configured correctly: {0}")]
    Setup(String),
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
            IdentityError::StepUpRequired(d) => Problem::new(
                actix_web::http::StatusCode::FORBIDDEN,
                "step-up-required",
                "Confirm with your passkey first",
                d,
            ),
            IdentityError::Upstream(d) => Problem::unavailable(d),
            IdentityError::Setup(d) => Problem::internal(&d),
            IdentityError::Db(e) => Problem::internal(&e),
        }
    }
}
