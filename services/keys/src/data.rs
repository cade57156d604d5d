//! Key operations for the EMR data plane (14.1.2, 13 ⑦): machine clients ask for data keys,
//! unwrap them, or have small payloads encrypted. Each call acts for exactly the caller's tenant
//! and is audited with the key id, operation and caller — never key material.

use crate::envelope;
use crate::error::KeyError;
use crate::ring::Kek;
use crate::service::{record_now, KeyService, ORIGIN_BYOK};
use anshin_audit::{Actor, AuditEvent, Outcome, Target};
use anshin_platform::{Principal, Role, Subject};
use uuid::Uuid;
use zeroize::Zeroizing;

/// Transit payloads are for small values (keys, identifiers, short notes); records go through
/// data keys.
pub const TRANSIT_MAX_BYTES: usize = 64 * 1024;

/// A data key for the caller: plaintext for its own AES-256-GCM, and the token to store.
pub struct IssuedKey {
    pub key_id: String,
    pub plaintext: Zeroizing<[u8; 32]>,
    pub token: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Generate,
    Unwrap,
    Encrypt,
    Decrypt,
    Rewrap,
}

impl Op {
    fn action(self) -> &'static str {
        match self {
            Op::Generate => "keys.data_key.generate",
            Op::Unwrap => "keys.data_key.unwrap",
            Op::Encrypt => "keys.encrypt",
            Op::Decrypt => "keys.decrypt",
            Op::Rewrap => "keys.data_key.rewrap",
        }
    }
    fn writes(self) -> bool {
        matches!(self, Op::Generate | Op::Encrypt | Op::Rewrap)
    }
}

impl KeyService {
    /// Machine clients with the `keys` scope, and API tokens of roles that may see records;
    /// people never handle raw key material, and maintenance grants do not reach keys (10 ②).
    /// Creating keys or ciphertexts with an API token needs a role that may change data.
    fn authorize_data(&self, p: &Principal, op: Op) -> Result<(), KeyError> {
        if p.grant.is_some() {
            return Err(KeyError::Forbidden(
                "maintenance grants do not extend to key operations".into(),
            ));
        }
        match &p.subject {
            Subject::Client { scopes, .. } => {
                if !scopes.iter().any(|s| s == "keys") {
                    return Err(KeyError::Forbidden(
                        "key operations need an access token with the keys scope".into(),
                    ));
                }
            }
            Subject::ApiToken { .. } => {
                if matches!(p.role, Role::Auditor | Role::ProviderMaintainer) {
                    return Err(KeyError::Forbidden(format!(
                        "the {} role may not use data keys",
                        p.role
                    )));
                }
                if op.writes() && p.role.is_read_only() {
                    return Err(KeyError::Forbidden(format!(
                        "{} needs a role that may change data; {} may only unwrap and decrypt",
                        op.action(),
                        p.role
                    )));
                }
            }
            Subject::User { .. } => {
                return Err(KeyError::Forbidden(
                    "key operations are for machine clients (the EMR data plane), not for people"
                        .into(),
                ))
            }
        }
        Ok(())
    }

    /// [`Self::authorize_data`], with a refusal recorded in the audit trail.
    async fn authorize(&self, p: &Principal, op: Op, purpose: &str) -> Result<(), KeyError> {
        let r = self.authorize_data(p, op);
        if let Err(e) = &r {
            let ev = self.audit(p, op, None, purpose, None, &Err(e));
            record_now(self.db(), ev).await;
        }
        r
    }

    fn audit(
        &self,
        p: &Principal,
        op: Op,
        key_id: Option<&str>,
        purpose: &str,
        record: Option<&str>,
        result: &Result<(), &KeyError>,
    ) -> AuditEvent {
        let outcome = match result {
            Ok(()) => Outcome::Success,
            Err(KeyError::Forbidden(_)) => Outcome::Denied,
            Err(_) => Outcome::Failure,
        };
        let mut e = AuditEvent::new(p.tenant_id, Actor::from_principal(p), op.action(), outcome)
            .detail("purpose", purpose);
        if let Some(k) = key_id {
            e = e.target(Target::new("kms_key", k)).detail("key_id", k);
        }
        if let Some(r) = record {
            e = e.detail("record_id", r);
        }
        if let Err(err) = result {
            e = e.reason(err.to_string());
        }
        e
    }

    async fn finish<T>(
        &self,
        p: &Principal,
        op: Op,
        key_id: Option<&str>,
        purpose: &str,
        record: Option<&str>,
        r: Result<T, KeyError>,
    ) -> Result<T, KeyError> {
        let e = self.audit(p, op, key_id, purpose, record, &r.as_ref().map(|_| ()));
        record_now(self.db(), e).await;
        if let Err(err) = &r {
            self.note_failure(p.tenant_id, err).await;
        }
        r
    }

    /// A fresh data key from the provider under the tenant's active KEK.
    pub async fn issue_data_key(
        &self,
        p: &Principal,
        purpose: &str,
    ) -> Result<IssuedKey, KeyError> {
        self.authorize(p, Op::Generate, purpose).await?;
        envelope::validate_purpose(purpose)?;
        let k = self.active_kek(p.tenant_id).await?;
        let r = self.inner.ring.issue_data_key(&Kek::of(&k), purpose).await;
        if r.is_ok() {
            self.touch(k.id).await;
        }
        let r = r.map(|d| IssuedKey {
            key_id: d.key_id,
            plaintext: d.plaintext,
            token: d.token,
        });
        self.finish(p, Op::Generate, Some(&k.key_id), purpose, None, r)
            .await
    }

    /// Unwraps a token from [`Self::issue_data_key`]. A token of another tenant, or for another
    /// purpose, is refused.
    pub async fn unwrap_data_key(
        &self,
        p: &Principal,
        purpose: &str,
        token: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        self.authorize(p, Op::Unwrap, purpose).await?;
        envelope::validate_purpose(purpose)?;
        let key_id = crate::ring::decode_token(token).ok().map(|(k, _)| k);
        if let Some(k) = &key_id {
            if self.erased_key(p.tenant_id, k).await? {
                let r = Err(KeyError::KeyDestroyed(k.clone()));
                return self.finish(p, Op::Unwrap, Some(k), purpose, None, r).await;
            }
        }
        let keks = self.usable_keks(p.tenant_id).await?;
        let owns = |k: &str| keks.iter().any(|m| m.key_id == k);
        let r = self
            .inner
            .ring
            .unwrap_token(p.tenant_id, &owns, purpose, token)
            .await;
        self.finish(p, Op::Unwrap, key_id.as_deref(), purpose, None, r)
            .await
    }

    /// Wraps the key of an older token under the tenant's active KEK (after a rotation or a move
    /// to BYOK), so the data plane can retire the old KEK.
    pub async fn rewrap_data_key(
        &self,
        p: &Principal,
        purpose: &str,
        token: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        self.authorize(p, Op::Rewrap, purpose).await?;
        envelope::validate_purpose(purpose)?;
        let keks = self.usable_keks(p.tenant_id).await?;
        let owns = |k: &str| keks.iter().any(|m| m.key_id == k);
        let active = self.active_kek(p.tenant_id).await?;
        let r = async {
            let raw = self
                .inner
                .ring
                .unwrap_token(p.tenant_id, &owns, purpose, token)
                .await?;
            self.inner.ring.count_call("encrypt");
            let wrapped = self
                .inner
                .ring
                .provider()
                .wrap(
                    &active.key_id,
                    &raw,
                    &crate::ring::dek_context(p.tenant_id, purpose),
                )
                .await?;
            crate::ring::encode_token(&active.key_id, &wrapped)
        }
        .await;
        self.finish(p, Op::Rewrap, Some(&active.key_id), purpose, None, r)
            .await
    }

    /// Transit encryption of a small payload, bound to tenant, purpose and record.
    pub async fn encrypt_for(
        &self,
        p: &Principal,
        purpose: &str,
        record: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        self.authorize(p, Op::Encrypt, purpose).await?;
        if plaintext.len() > TRANSIT_MAX_BYTES {
            return Err(KeyError::Invalid(format!(
                "transit encryption takes at most {TRANSIT_MAX_BYTES} bytes; encrypt larger records with a data key"
            )));
        }
        let k = self.active_kek(p.tenant_id).await?;
        let r = self
            .inner
            .ring
            .encrypt(&Kek::of(&k), purpose, record, plaintext)
            .await;
        self.finish(p, Op::Encrypt, Some(&k.key_id), purpose, Some(record), r)
            .await
    }

    pub async fn decrypt_for(
        &self,
        p: &Principal,
        purpose: &str,
        record: &str,
        ciphertext: &[u8],
    ) -> Result<envelope::Plaintext, KeyError> {
        self.authorize(p, Op::Decrypt, purpose).await?;
        let key_id = match envelope::parse(ciphertext).map(|x| x.dek) {
            Ok(envelope::DekView::Embedded { kek_id, .. }) => Some(kek_id.to_string()),
            _ => None,
        };
        if let Some(k) = &key_id {
            if self.erased_key(p.tenant_id, k).await? {
                let r = Err(KeyError::KeyDestroyed(k.clone()));
                return self
                    .finish(p, Op::Decrypt, Some(k), purpose, Some(record), r)
                    .await;
            }
        }
        let keks = self.usable_keks(p.tenant_id).await?;
        let owns = |k: &str| keks.iter().any(|m| m.key_id == k);
        let r = self
            .inner
            .ring
            .decrypt(p.tenant_id, &owns, purpose, record, ciphertext)
            .await;
        self.finish(p, Op::Decrypt, key_id.as_deref(), purpose, Some(record), r)
            .await
    }

    /// A provider refusal on a tenant's own (BYOK) key is a tenant-level event, not a silent
    /// failure: mark the key and raise `keys.byok.access_lost` once per loss.
    pub(crate) async fn note_failure(&self, tenant: Uuid, err: &KeyError) {
        if !matches!(
            err,
            KeyError::AccessDenied(_)
                | KeyError::KeyUnusable { .. }
                | KeyError::KeyNotFound(_)
                | KeyError::KeyDestroyed(_)
        ) {
            return;
        }
        // Nothing may keep working from memory once the provider refuses the tenant's key.
        self.inner.ring.cache().flush_tenant(tenant);
        let Ok(Some(k)) = self.find_active(tenant).await else {
            return;
        };
        if k.origin == ORIGIN_BYOK {
            if let Err(e) = self.mark_byok_health(&k, false, &err.to_string()).await {
                tracing::warn!(error = %e, "could not record a BYOK key's loss of access");
            }
        }
    }
}
