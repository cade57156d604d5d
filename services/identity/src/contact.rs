//! People's e-mail addresses at rest (guideline 7 ③ / 10 ②). Every stored address is sealed by
//! the key service under the owning tenant's KEK (purpose [`EMAIL_PURPOSE`]), so a crypto-erase
//! of the tenant leaves them unreadable, and a database copy shows none. Equality lookups (sign-in
//! by address, "is this address taken?") go through a blind index: a keyed HMAC of the
//! normalised address, whose key the key service holds.
//!
//! Bindings (the `record` of the envelope): an account's address is bound to the account
//! (`users.id`), and so is its copy in an account review's snapshot (the same sealed value, the
//! same person); an invitation's to the invitation; a password reset's verifier address to the
//! reset.
//!
//! Rows written before this hold the readable address and a NULL index until the re-encryption
//! pass ([`crate::reseal`]) seals them; lookups match them by the readable column meanwhile.
//!
//! Sealing and blind indexes may write (a tenant's first data key, the index key on first use),
//! and SQLite has one writer: callers compute them before opening a write transaction, and open
//! addresses before one too.

use crate::entity::user;
use crate::error::IdentityError;
use crate::service::{key_error, IdentityService};
use anshin_keys::KeyError;
use anshin_platform::sealer::is_sealed_text;
use sea_orm::{ColumnTrait, Condition};
use uuid::Uuid;

/// The key-service purpose of stored addresses, and of their blind index.
pub(crate) const EMAIL_PURPOSE: &str = "identity.email";

/// Shown instead of an address whose tenant key was crypto-erased.
pub const ERASED_EMAIL: &str = "(消去済み)";
/// Shown instead of an address that cannot be opened for another lasting reason (the tenant's
/// key is disabled, or the stored value was altered).
pub const UNREADABLE_EMAIL: &str = "(表示できません)";

/// An address as lookups need it: normalised, and its blind index.
#[derive(Clone)]
pub(crate) struct EmailKey {
    pub(crate) address: String,
    pub(crate) index: String,
}

impl std::fmt::Debug for EmailKey {
    // An address never reaches logs, not even through a debug print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmailKey(..)")
    }
}

/// Rows whose address is `address`: by the blind index, or, in rows not re-encrypted yet, by
/// the readable address.
fn email_is<C: ColumnTrait>(index_col: C, stored_col: C, index: &str, address: &str) -> Condition {
    Condition::any().add(index_col.eq(index)).add(
        Condition::all()
            .add(index_col.is_null())
            .add(stored_col.eq(address)),
    )
}

impl EmailKey {
    /// The accounts with this address (at most one).
    pub(crate) fn users(&self) -> Condition {
        email_is(
            user::Column::EmailIndex,
            user::Column::EmailSealed,
            &self.index,
            &self.address,
        )
    }
}

/// What to show instead of an address that cannot be opened.
pub(crate) fn placeholder(e: &KeyError) -> &'static str {
    match e {
        KeyError::KeyDestroyed(_) => ERASED_EMAIL,
        _ => UNREADABLE_EMAIL,
    }
}

/// Whether a shown address is one of the placeholders (nothing to mail to).
pub(crate) fn is_placeholder(shown: &str) -> bool {
    shown == ERASED_EMAIL || shown == UNREADABLE_EMAIL
}

impl IdentityService {
    /// The lookup key of an address already normalised (`normalise_email`).
    pub(crate) async fn email_key(&self, address: String) -> Result<EmailKey, IdentityError> {
        let index = self
            .keys()
            .blind_index(EMAIL_PURPOSE, &address)
            .await
            .map_err(key_error)?;
        Ok(EmailKey { address, index })
    }

    /// Seals `address` for storage in a row of `tenant` identified by `record`.
    pub(crate) async fn seal_email(
        &self,
        tenant: Uuid,
        record: Uuid,
        address: &str,
    ) -> Result<String, IdentityError> {
        self.keys()
            .seal_text(tenant, EMAIL_PURPOSE, &record.to_string(), address)
            .await
            .map_err(key_error)
    }

    /// Opens a stored address; a row not re-encrypted yet holds it readable.
    pub(crate) async fn open_email(
        &self,
        tenant: Uuid,
        record: Uuid,
        stored: &str,
    ) -> Result<String, KeyError> {
        if !is_sealed_text(stored) {
            return Ok(stored.to_string());
        }
        self.keys()
            .open_text(tenant, EMAIL_PURPOSE, &record.to_string(), stored)
            .await
            .map(|s| s.as_str().to_string())
    }

    /// The address where it is needed as such (mail, a passkey's user name, the password
    /// policy): any failure is an error.
    pub(crate) async fn email_for_use(
        &self,
        tenant: Uuid,
        record: Uuid,
        stored: &str,
    ) -> Result<String, IdentityError> {
        self.open_email(tenant, record, stored)
            .await
            .map_err(key_error)
    }

    /// The address for an answer or a page: a placeholder when it can no longer be opened (a
    /// crypto-erased tenant), so one unreadable row does not hide the others. An outage of the
    /// key provider is an error (503), not a placeholder.
    pub(crate) async fn email_for_display(
        &self,
        tenant: Uuid,
        record: Uuid,
        stored: &str,
    ) -> Result<String, IdentityError> {
        match self.open_email(tenant, record, stored).await {
            Ok(a) => Ok(a),
            Err(e) if e.is_transient() => Err(key_error(e)),
            Err(e) => {
                log_unopened(tenant, record, &e);
                Ok(placeholder(&e).to_string())
            }
        }
    }

    /// The address as a label (audit actors, mail recipients) where nothing may fail because of
    /// it: a placeholder whatever the reason.
    pub(crate) async fn email_for_label(&self, tenant: Uuid, record: Uuid, stored: &str) -> String {
        match self.open_email(tenant, record, stored).await {
            Ok(a) => a,
            Err(e) => {
                log_unopened(tenant, record, &e);
                placeholder(&e).to_string()
            }
        }
    }

    /// [`Self::email_for_use`] of an account.
    pub(crate) async fn user_email_for_use(
        &self,
        u: &user::Model,
    ) -> Result<String, IdentityError> {
        self.email_for_use(u.tenant_id, u.id, &u.email_sealed).await
    }

    /// [`Self::email_for_display`] of an account.
    pub(crate) async fn user_email(&self, u: &user::Model) -> Result<String, IdentityError> {
        self.email_for_display(u.tenant_id, u.id, &u.email_sealed)
            .await
    }

    /// [`Self::email_for_label`] of an account.
    pub(crate) async fn user_email_label(&self, u: &user::Model) -> String {
        self.email_for_label(u.tenant_id, u.id, &u.email_sealed)
            .await
    }
}

/// Names the row, never the address or the stored value.
fn log_unopened(tenant: Uuid, record: Uuid, e: &KeyError) {
    match e {
        // Expected after a crypto-erase: every address of the tenant is gone.
        KeyError::KeyDestroyed(_) => {
            tracing::debug!(%tenant, %record, "an e-mail address of a crypto-erased tenant was shown as erased")
        }
        _ => {
            tracing::warn!(%tenant, %record, error = %e, "a stored e-mail address cannot be opened")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{EntityTrait, QueryFilter, QueryTrait};

    #[test]
    fn lookups_use_the_index_and_fall_back_to_readable_rows_only() {
        let key = EmailKey {
            address: "hanako@example.jp".into(),
            index: "ab".repeat(32),
        };
        let sql = user::Entity::find()
            .filter(key.users())
            .build(sea_orm::DbBackend::Postgres)
            .to_string();
        assert!(
            sql.contains(r#""users"."email_index" = 'abababab"#)
                && sql.contains(
                    r#"("users"."email_index" IS NULL AND "users"."email" = 'hanako@example.jp')"#
                ),
            "{sql}"
        );
        assert_eq!(format!("{key:?}"), "EmailKey(..)");
    }

    #[test]
    fn placeholders_say_why() {
        assert_eq!(
            placeholder(&KeyError::KeyDestroyed("k".into())),
            ERASED_EMAIL
        );
        assert_eq!(placeholder(&KeyError::InvalidCiphertext), UNREADABLE_EMAIL);
        assert!(is_placeholder(ERASED_EMAIL) && is_placeholder(UNREADABLE_EMAIL));
        assert!(!is_placeholder("hanako@example.jp"));
    }
}
