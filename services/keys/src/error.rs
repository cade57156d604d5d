//! What can go wrong with keys, and how each failure reaches an HTTP client.

use anshin_platform::error::Problem;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key provider cannot be reached or is throttling. Callers fail closed: nothing is
    /// encrypted with a substitute key and nothing is stored in plaintext.
    #[error("the key provider is unavailable: {0}")]
    Unavailable(String),
    /// The key exists but its state forbids the operation (disabled, pending deletion).
    #[error("the key {key} cannot be used: it is {state}")]
    KeyUnusable { key: String, state: String },
    /// The key's material is gone for good (crypto-erased).
    #[error("the key {0} has been destroyed")]
    KeyDestroyed(String),
    #[error("no such key: {0}")]
    KeyNotFound(String),
    /// The provider refused Anshin's use of the key (a hospital revoked a BYOK grant).
    #[error("access to the key {0} is denied by the key provider")]
    AccessDenied(String),
    /// Authentication failed: altered ciphertext, header or associated data, or the wrong key.
    #[error("the ciphertext cannot be decrypted: it was altered, or belongs to another tenant, purpose or record")]
    InvalidCiphertext,
    /// A well-formed request that a key policy forbids (multi-Region keys, imported material,
    /// a region outside Japan).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("key provider configuration: {0}")]
    Config(String),
    #[error("key provider error: {0}")]
    Provider(String),
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
}

impl KeyError {
    /// Whether retrying later could succeed (used by jobs and the BYOK health check).
    pub fn is_transient(&self) -> bool {
        matches!(self, KeyError::Unavailable(_) | KeyError::Db(_))
    }
}

impl From<KeyError> for Problem {
    fn from(e: KeyError) -> Self {
        use actix_web::http::StatusCode;
        match e {
            KeyError::Unavailable(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "key-provider-unavailable",
                "Key provider unavailable",
                "the key provider cannot be reached; nothing was encrypted or decrypted. Retry later.",
            )
            .with_retry_after(5),
            KeyError::KeyUnusable { .. } | KeyError::KeyDestroyed(_) => Problem::new(
                StatusCode::CONFLICT,
                "key-unusable",
                "Key unusable",
                e.to_string(),
            ),
            KeyError::AccessDenied(_) => Problem::new(
                StatusCode::FORBIDDEN,
                "key-access-denied",
                "Key access denied",
                e.to_string(),
            ),
            KeyError::InvalidCiphertext => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-ciphertext",
                "Invalid ciphertext",
                e.to_string(),
            ),
            KeyError::Refused(m) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "key-refused",
                "Key refused",
                m,
            ),
            KeyError::Invalid(m) => Problem::validation(m, Vec::new()),
            KeyError::NotFound(m) | KeyError::KeyNotFound(m) => Problem::not_found(m),
            KeyError::Forbidden(m) => Problem::forbidden(m),
            KeyError::Conflict(m) => Problem::conflict(m),
            KeyError::Db(e) => Problem::from(e),
            other => Problem::internal(&other),
        }
    }
}
