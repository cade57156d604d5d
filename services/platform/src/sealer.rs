//! Sealing what Anshin itself stores that is secret (webhook secrets and URLs, identity
//! providers' client secrets) under the owning tenant's key, through the key service.
//!
//! Services that must not depend on the key service (the audit service: the key service records
//! its own audit events) receive an `Arc<dyn SecretSealer>`; the server passes the key service's
//! implementation (`anshin_keys::sealer::KeySealer`). Values sealed before the key service existed
//! were sealed with the interim [`crate::secretbox::SecretBox`]; [`is_sealed_text`] tells the two
//! apart, so readers accept both while the re-encryption pass (`anshin keys reencrypt`) moves the
//! old ones over.

use crate::error::Problem;
use crate::secret::Secret;
use actix_web::http::StatusCode;
use serde::Serialize;
use uuid::Uuid;

/// The prefix of text sealed by the key service (`anshin-env1:<base64 envelope>`). A secret box
/// value is plain standard base64, which never contains `-` or `:`, so the two cannot be confused.
pub const SEALED_TEXT_PREFIX: &str = "anshin-env1:";

/// Whether a stored value was sealed by the key service (rather than the interim secret box).
pub fn is_sealed_text(stored: &str) -> bool {
    stored.starts_with(SEALED_TEXT_PREFIX)
}

/// Why a secret could not be sealed or opened. Messages never contain the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealerError {
    /// The key provider cannot be reached or is throttling. Nothing was sealed or opened; a
    /// retry later can succeed (HTTP 503).
    #[error("the key service is unavailable: {0}")]
    Unavailable(String),
    /// The tenant's key exists but cannot be used: disabled, access denied, or destroyed by a
    /// crypto-erase (HTTP 409).
    #[error("the tenant's key cannot be used: {0}")]
    KeyUnusable(String),
    /// The stored value does not open: altered, moved to another tenant, purpose or record, or
    /// sealed under a key this process does not hold.
    #[error("the stored secret cannot be opened: {0}")]
    Invalid(String),
    /// A value sealed by the key service, read by a process without one.
    #[error("the stored secret was sealed by the key service, which is not configured here")]
    NotConfigured,
    /// The key service's own storage failed; a retry later can succeed.
    #[error("the key service's storage failed: {0}")]
    Storage(String),
    /// Anything else (a malformed purpose, an unknown tenant, a configuration fault).
    #[error("the key service refused: {0}")]
    Failed(String),
}

impl SealerError {
    /// Whether retrying later could succeed (delivery jobs retry these like network failures).
    pub fn is_transient(&self) -> bool {
        matches!(self, SealerError::Unavailable(_) | SealerError::Storage(_))
    }
}

impl From<SealerError> for Problem {
    fn from(e: SealerError) -> Self {
        match e {
            SealerError::Unavailable(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "key-provider-unavailable",
                "Key provider unavailable",
                "the key provider cannot be reached; nothing was encrypted or stored. Retry later.",
            )
            .with_retry_after(5),
            SealerError::KeyUnusable(_) => Problem::new(
                StatusCode::CONFLICT,
                "key-unusable",
                "Key unusable",
                e.to_string(),
            ),
            other => Problem::internal(&other),
        }
    }
}

/// Seals and opens short secrets bound to a tenant, a purpose and a record (`context`), so a
/// value copied to another row, tenant or use does not open.
#[async_trait::async_trait]
pub trait SecretSealer: Send + Sync + 'static {
    /// Seals `secret` under `tenant`'s key; the result satisfies [`SecretSealer::is_sealed`].
    /// `purpose` is 1–64 characters of `a-z 0-9 . _ -`; `context` is 1–256 bytes.
    async fn seal(
        &self,
        tenant: Uuid,
        purpose: &str,
        context: &str,
        secret: &str,
    ) -> Result<String, SealerError>;

    /// Opens what [`SecretSealer::seal`] produced for the same tenant, purpose and context.
    async fn open(
        &self,
        tenant: Uuid,
        purpose: &str,
        context: &str,
        sealed: &str,
    ) -> Result<Secret, SealerError>;

    /// Whether `stored` is in this sealer's format (as opposed to a legacy secret box value).
    fn is_sealed(&self, stored: &str) -> bool {
        is_sealed_text(stored)
    }
}

/// What a re-encryption pass did: values found still sealed under the interim secret box,
/// re-sealed under the key service, and left as they were because they could not be moved
/// (unreadable with the secret box's key, or the tenant's key is unusable, e.g. crypto-erased).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ResealReport {
    pub examined: u64,
    pub resealed: u64,
    pub failed: u64,
}

impl ResealReport {
    pub fn add(&mut self, other: ResealReport) {
        self.examined += other.examined;
        self.resealed += other.resealed;
        self.failed += other.failed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secretbox::SecretBox;

    #[test]
    fn secret_box_values_never_look_sealed() {
        let b = SecretBox::from_key([3; 32]);
        for s in [
            "",
            "x",
            "whsec_0123456789",
            "https://hooks.example.jp/a?b=c",
        ] {
            assert!(!is_sealed_text(&b.seal(s, "ctx")));
        }
        assert!(is_sealed_text("anshin-env1:QU5TRQ=="));
        assert!(!is_sealed_text("anshin-env2:QU5TRQ=="));
    }

    #[test]
    fn only_outages_are_transient_and_map_to_503() {
        assert!(SealerError::Unavailable("down".into()).is_transient());
        assert!(SealerError::Storage("locked".into()).is_transient());
        for e in [
            SealerError::KeyUnusable("erased".into()),
            SealerError::Invalid("altered".into()),
            SealerError::NotConfigured,
            SealerError::Failed("bad purpose".into()),
        ] {
            assert!(!e.is_transient(), "{e}");
        }
        let p = Problem::from(SealerError::Unavailable("timeout".into()));
        assert_eq!(p.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(p.kind, "key-provider-unavailable");
        assert_eq!(p.retry_after, Some(5));
        let p = Problem::from(SealerError::KeyUnusable("destroyed".into()));
        assert_eq!(p.status, StatusCode::CONFLICT);
        assert_eq!(
            Problem::from(SealerError::NotConfigured).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn reports_add_up() {
        let mut r = ResealReport::default();
        r.add(ResealReport {
            examined: 3,
            resealed: 2,
            failed: 1,
        });
        r.add(ResealReport {
            examined: 1,
            resealed: 1,
            failed: 0,
        });
        assert_eq!(
            r,
            ResealReport {
                examined: 4,
                resealed: 3,
                failed: 1
            }
        );
    }
}
