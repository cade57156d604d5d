//! A person's authenticators beyond enrollment: security keys with a password, several named
//! credentials with add/rename/remove after a fresh step-up, password changes with reuse
//! refused, the password lock an administrator sees and lifts, and the per-tenant attestation
//! policy that can restrict registration to hospital-issued key models.

use crate::access::{require_admin, require_reader};
use crate::audit::{Actor, AuditEvent, Outcome, Target};
use crate::entity::{attestation_policy, credential, password_credential, password_history, user};
use crate::error::IdentityError;
use crate::service::{
    normalise_email, AuthState, ClientMeta, IdentityService, NewSession, RegState,
    StoredAuthenticator, CEREMONY_ADD, CEREMONY_PASSWORD_SIGN_IN,
};
use anshin_platform::db::{begin_platform_tx, begin_tenant_write_tx, tenant_reader};
use anshin_platform::stepup::{StepUpError, StepUpVerifier};
use anshin_platform::{Principal, Subject};
use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use webauthn_rs::prelude::{
    AttestationCaList, AttestationCaListBuilder, CreationChallengeResponse, CredentialID,
    PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse,
    SecurityKeyRegistration,
};

/// How fresh the passkey confirmation must be for credential, password and policy changes.
pub(crate) const STEP_UP_WINDOW_MINUTES: i64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttestationMode {
    /// Any authenticator (no attestation asked).
    Any,
    /// Only the listed, attested models: registration asks for attestation and checks the
    /// certificate chain against the listed CAs and the model's AAGUID. Passkeys without
    /// attestation cannot be registered.
    AllowList,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttestedModel {
    /// The authenticator model's AAGUID.
    pub aaguid: Uuid,
    pub description: String,
    /// The manufacturer's attestation root certificate (PEM) that signs this model's keys.
    pub ca_pem: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttestationPolicy {
    pub mode: AttestationMode,
    #[serde(default)]
    pub models: Vec<AttestedModel>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttestationPolicyView {
    pub mode: AttestationMode,
    pub models: Vec<AttestedModel>,
    pub updated_by: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CredentialInfo {
    pub id: Uuid,
    pub name: String,
    /// `passkey` or `security_key`.
    pub kind: String,
    /// The attested authenticator model, if any.
    pub aaguid: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MyCredentials {
    pub items: Vec<CredentialInfo>,
    /// True when the person has a password that signs in (not one an administrator reset).
    pub has_password: bool,
    pub password_changed_at: Option<DateTime<Utc>>,
}

/// What an administrator sees of a person's password: never the password, only its state.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PasswordStatus {
    pub has_password: bool,
    pub changed_at: Option<DateTime<Utc>>,
    pub failed_count: i32,
    pub last_failed_at: Option<DateTime<Utc>>,
    pub locked_until: Option<DateTime<Utc>>,
    /// Set while an administrator's reset is pending: the password no longer signs in until the
    /// person sets a new one with the reset link.
    pub invalidated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    Passkey,
    SecurityKey,
}

/// Stores (or replaces) a person's password hash and remembers it for the reuse check.
pub(crate) async fn store_password(
    c: &impl ConnectionTrait,
    u: &user::Model,
    hash: &str,
    now: DateTime<Utc>,
) -> Result<(), IdentityError> {
    match password_credential::Entity::find_by_id(u.id).one(c).await? {
        Some(existing) => {
            let mut am: password_credential::ActiveModel = existing.into();
            am.hash = Set(hash.to_string());
            am.changed_at = Set(now);
            am.failed_count = Set(0);
            am.locked_until = Set(None);
            am.invalidated_at = Set(None);
            am.update(c).await?;
        }
        None => {
            password_credential::ActiveModel {
                user_id: Set(u.id),
                tenant_id: Set(u.tenant_id),
                hash: Set(hash.to_string()),
                changed_at: Set(now),
                failed_count: Set(0),
                last_failed_at: Set(None),
                locked_until: Set(None),
                invalidated_at: Set(None),
            }
            .insert(c)
            .await?;
        }
    }
    password_history::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(u.id),
        tenant_id: Set(u.tenant_id),
        hash: Set(hash.to_string()),
        created_at: Set(now),
    }
    .insert(c)
    .await?;
    Ok(())
}

fn validate_policy(p: &AttestationPolicy) -> Result<Option<AttestationCaList>, IdentityError> {
    match p.mode {
        AttestationMode::Any => {
            if !p.models.is_empty() {
                return Err(IdentityError::Invalid(
                    "models are only used with mode allow_list".into(),
                ));
            }
            Ok(None)
        }
        AttestationMode::AllowList => {
            if p.models.is_empty() || p.models.len() > 50 {
                return Err(IdentityError::Invalid(
                    "an allow list needs between 1 and 50 models".into(),
                ));
            }
            let mut b = AttestationCaListBuilder::new();
            for m in &p.models {
                let d = m.description.trim();
                if d.is_empty() || d.chars().count() > 200 || d.chars().any(char::is_control) {
                    return Err(IdentityError::Invalid(format!(
                        "model {}: give a description of 1–200 printable characters",
                        m.aaguid
                    )));
                }
                b.insert_device_pem(
                    m.ca_pem.as_bytes(),
                    m.aaguid,
                    d.to_string(),
                    Default::default(),
                )
                .map_err(|_| {
                    IdentityError::Invalid(format!(
                        "model {}: ca_pem is not a PEM X.509 certificate",
                        m.aaguid
                    ))
                })?;
            }
            Ok(Some(b.build()))
        }
    }
}

fn user_of(p: &Principal) -> Result<Uuid, IdentityError> {
    match &p.subject {
        Subject::User { id, .. } => Ok(*id),
        _ => Err(IdentityError::NotFound(
            "API clients have no credentials of their own".into(),
        )),
    }
}

fn info(m: credential::Model) -> CredentialInfo {
    CredentialInfo {
        id: m.id,
        name: m.name,
        kind: m.kind,
        aaguid: m.aaguid,
        created_at: m.created_at,
        last_used_at: m.last_used_at,
    }
}

fn clean_name(name: &str) -> Result<String, IdentityError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control) {
        return Err(IdentityError::Invalid(
            "give a name of 1–100 printable characters".into(),
        ));
    }
    Ok(n.to_string())
}

const WRONG_PASSWORD: &str = "the email address or the password is wrong";

impl IdentityService {
    // ---- Attestation policy -------------------------------------------------------------

    /// The tenant's policy (`any` when none was set).
    pub async fn attestation_policy(
        &self,
        tenant_id: Uuid,
    ) -> Result<AttestationPolicyView, IdentityError> {
        let tx = begin_platform_tx(self.db()).await?;
        let row = attestation_policy::Entity::find_by_id(tenant_id)
            .one(&tx)
            .await?;
        tx.commit().await?;
        Ok(match row {
            None => AttestationPolicyView {
                mode: AttestationMode::Any,
                models: Vec::new(),
                updated_by: None,
                updated_at: None,
            },
            Some(r) => AttestationPolicyView {
                mode: if r.mode == "allow_list" {
                    AttestationMode::AllowList
                } else {
                    AttestationMode::Any
                },
                models: serde_json::from_str(&r.entries).map_err(|e| {
                    IdentityError::Setup(format!("stored attestation policy is unreadable: {e}"))
                })?,
                updated_by: Some(r.updated_by),
                updated_at: Some(r.updated_at),
            },
        })
    }

    /// Sets the caller's tenant's policy. Admins only, after a fresh passkey confirmation.
    pub async fn put_attestation_policy(
        &self,
        p: &Principal,
        policy: AttestationPolicy,
    ) -> Result<AttestationPolicyView, IdentityError> {
        require_admin(p, "change the attestation policy")?;
        validate_policy(&policy)?;
        self.require_recent_step_up(p, Duration::minutes(STEP_UP_WINDOW_MINUTES))
            .await?;
        let entries = serde_json::to_string(&policy.models)
            .map_err(|e| IdentityError::Setup(e.to_string()))?;
        let mode = match policy.mode {
            AttestationMode::Any => "any",
            AttestationMode::AllowList => "allow_list",
        };
        let tx = begin_tenant_write_tx(self.db(), p.tenant_id).await?;
        let now = Utc::now();
        let am = attestation_policy::ActiveModel {
            tenant_id: Set(p.tenant_id),
            mode: Set(mode.into()),
            entries: Set(entries),
            updated_by: Set(p.subject.label()),
            updated_at: Set(now),
        };
        if attestation_policy::Entity::find_by_id(p.tenant_id)
            .one(&tx)
            .await?
            .is_some()
        {
            am.update(&tx).await?;
        } else {
            am.insert(&tx).await?;
        }
        crate::audit::record(
            &tx,
            AuditEvent::new(
                p.tenant_id,
                Actor::from_principal(p),
                "attestation_policy.update",
                Outcome::Success,
            )
            .target(Target::new("tenant", p.tenant_id))
            .detail("mode", mode)
            .detail("models", policy.models.len()),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(tenant = %p.tenant_id, mode, "attestation policy changed");
        self.attestation_policy(p.tenant_id).await
    }

    async fn ca_list_for(
        &self,
        tenant_id: Uuid,
    ) -> Result<Option<AttestationCaList>, IdentityError> {
        let v = self.attestation_policy(tenant_id).await?;
        validate_policy(&AttestationPolicy {
            mode: v.mode,
            models: v.models,
        })
    }

    pub(crate) async fn refuse_passkeys_if_attested_only(
        &self,
        tenant_id: Uuid,
    ) -> Result<(), IdentityError> {
        if self.ca_list_for(tenant_id).await?.is_some() {
            return Err(IdentityError::Invalid(
                "your organisation accepts only the security keys it issued: register one with a password"
                    .into(),
            ));
        }
        Ok(())
    }

    pub(crate) async fn start_security_key_registration(
        &self,
        tenant_id: Uuid,
        user_id: Uuid,
        email: &str,
        display_name: &str,
        exclude: Option<Vec<CredentialID>>,
    ) -> Result<(CreationChallengeResponse, SecurityKeyRegistration), IdentityError> {
        let cas = self.ca_list_for(tenant_id).await?;
        self.webauthn()
            .start_securitykey_registration(user_id, email, display_name, exclude, cas, None)
            .map_err(|e| IdentityError::Ceremony(format!("cannot start registration: {e}")))
    }

    /// Checks a registration response against its ceremony state (origin, challenge and, under
    /// an allow list, the attestation chain and model).
    pub(crate) fn finish_registration(
        &self,
        response: &RegisterPublicKeyCredential,
        state: RegState,
    ) -> Result<(StoredAuthenticator, Option<String>), IdentityError> {
        match state {
            RegState::Passkey(reg) => self
                .webauthn()
                .finish_passkey_registration(response, &reg)
                .map(|p| (StoredAuthenticator::Passkey(p), None)),
            RegState::SecurityKey { reg, password_hash } => self
                .webauthn()
                .finish_securitykey_registration(response, &reg)
                .map(|k| (StoredAuthenticator::SecurityKey(k), password_hash)),
        }
        .map_err(|e| IdentityError::Ceremony(format!("the registration was not accepted: {e}")))
    }

    // ---- Password + security key sign-in -------------------------------------------------

    /// Checks the password (with lock and back-off), then asks for the security key. Unknown
    /// addresses take the same time and get the same answer as a wrong password.
    pub async fn password_sign_in_begin(
        &self,
        email: &str,
        password: &str,
    ) -> Result<(Uuid, RequestChallengeResponse), IdentityError> {
        // Found by equality, so the typed (normalised) address is the account's address: the
        // events below are labelled with it without opening the stored one.
        let email = self.email_key(normalise_email(email)?).await?;
        let tx = begin_platform_tx(self.db()).await?;
        let u = user::Entity::find()
            .filter(email.users())
            .filter(user::Column::Status.eq("active"))
            .one(&tx)
            .await?;
        let pw = match &u {
            Some(u) => {
                password_credential::Entity::find_by_id(u.id)
                    .one(&tx)
                    .await?
            }
            None => None,
        };
        tx.commit().await?;
        // A password an administrator reset answers like a wrong one until the person sets a
        // new one with the reset link.
        let pw = pw.filter(|p| p.invalidated_at.is_none());
        let (Some(u), Some(pw)) = (u, pw) else {
            crate::password::verify_dummy(password).await?;
            crate::audit::record_now(
                self.db(),
                AuditEvent::new(
                    crate::audit::NO_TENANT,
                    Actor::anonymous(Some(&email.address)),
                    "auth.sign_in",
                    Outcome::Failure,
                )
                .reason("unknown address or no usable password")
                .detail("method", "security_key+password"),
            )
            .await;
            return Err(IdentityError::SignIn(WRONG_PASSWORD.into()));
        };
        let now = Utc::now();
        if let Some(until) = pw.locked_until.filter(|t| *t > now) {
            crate::audit::record_now(
                self.db(),
                AuditEvent::new(
                    u.tenant_id,
                    Actor::anonymous(Some(&email.address)),
                    "auth.sign_in",
                    Outcome::Denied,
                )
                .target(Target::new("user", u.id))
                .reason("password locked")
                .detail("method", "security_key+password")
                .detail("locked_until", until),
            )
            .await;
            return Err(IdentityError::Locked {
                detail: "the password is locked after repeated wrong attempts; try again later or ask your administrator to unlock it".into(),
                retry_after_secs: (until - now).num_seconds().max(1),
            });
        }
        let ok = crate::password::verify(password, &pw.hash).await?;
        let tx = begin_platform_tx(self.db()).await?;
        let mut am: password_credential::ActiveModel = pw.clone().into();
        if ok {
            am.failed_count = Set(0);
            am.locked_until = Set(None);
        } else {
            let failures = pw.failed_count.saturating_add(1);
            am.failed_count = Set(failures);
            am.last_failed_at = Set(Some(now));
            am.locked_until = Set(crate::password::lock_after(
                failures.max(0) as u32,
                self.config().password_lockout_threshold,
                now,
            ));
        }
        let locked = !ok
            && crate::password::lock_after(
                pw.failed_count.saturating_add(1).max(0) as u32,
                self.config().password_lockout_threshold,
                now,
            )
            .is_some();
        am.update(&tx).await?;
        if !ok {
            crate::audit::record(
                &tx,
                AuditEvent::new(
                    u.tenant_id,
                    Actor::anonymous(Some(&email.address)),
                    "auth.sign_in",
                    Outcome::Failure,
                )
                .target(Target::new("user", u.id))
                .reason("wrong password")
                .detail("method", "security_key+password")
                .detail("failed_count", pw.failed_count.saturating_add(1))
                .detail("locked", locked),
            )
            .await?;
        }
        tx.commit().await?;
        if !ok {
            tracing::info!(user = %u.id, "wrong password");
            return Err(IdentityError::SignIn(WRONG_PASSWORD.into()));
        }
        let (_, keys) = {
            let tx = begin_platform_tx(self.db()).await?;
            let r = self.authenticators_of(&tx, u.id).await?;
            tx.commit().await?;
            r
        };
        if keys.is_empty() {
            return Err(IdentityError::SignIn(
                "this account has no security key; sign in with your passkey".into(),
            ));
        }
        let (rcr, state) = self
            .webauthn()
            .start_securitykey_authentication(&keys)
            .map_err(|e| IdentityError::Ceremony(format!("cannot start sign-in: {e}")))?;
        let tx = begin_platform_tx(self.db()).await?;
        let id = self
            .store_ceremony(
                &tx,
                CEREMONY_PASSWORD_SIGN_IN,
                u.tenant_id,
                u.id,
                None,
                &AuthState::SecurityKey(state),
            )
            .await?;
        tx.commit().await?;
        Ok((id, rcr))
    }

    /// Finishes it with the security key: two factors (knowledge and possession).
    pub async fn password_sign_in_finish(
        &self,
        ceremony_id: Uuid,
        response: &PublicKeyCredential,
        meta: ClientMeta,
    ) -> Result<NewSession, IdentityError> {
        let u = match self
            .verify_assertion(ceremony_id, CEREMONY_PASSWORD_SIGN_IN, response)
            .await
        {
            Ok(u) => u,
            Err(e @ IdentityError::Ceremony(_)) => {
                tracing::info!(reason = %e, "security-key sign-in refused");
                // In the trail of the tenant the sign-in aimed at (the account whose password
                // was checked at the start).
                self.record_refused_sign_in(
                    Some(ceremony_id),
                    Some(response),
                    "security_key+password",
                    &e.to_string(),
                )
                .await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let email = self.user_email(&u).await?;
        let tx = begin_platform_tx(self.db()).await?;
        // The password checked at the start may have been reset since.
        let usable = password_credential::Entity::find_by_id(u.id)
            .one(&tx)
            .await?
            .is_some_and(|p| p.invalidated_at.is_none());
        if !usable {
            drop(tx);
            crate::audit::record_now(
                self.db(),
                crate::audit::refused_sign_in_event(
                    &u,
                    &email,
                    "security_key+password",
                    "the password was reset after it was checked",
                ),
            )
            .await;
            return Err(IdentityError::SignIn(WRONG_PASSWORD.into()));
        }
        let s = self
            .create_session(&tx, &u, &email, "security_key+password", meta)
            .await?;
        tx.commit().await?;
        tracing::info!(user = %u.id, "signed in with a security key and password");
        Ok(s)
    }

    // ---- My credentials -----------------------------------------------------------------

    pub async fn my_credentials(&self, p: &Principal) -> Result<MyCredentials, IdentityError> {
        let uid = user_of(p)?;
        let r = tenant_reader(self.db(), p.tenant_id).await?;
        let rows = credential::Entity::find()
            .filter(credential::Column::UserId.eq(uid))
            .filter(credential::Column::TenantId.eq(p.tenant_id))
            .order_by_asc(credential::Column::CreatedAt)
            .all(&r)
            .await?;
        let pw = password_credential::Entity::find_by_id(uid)
            .filter(password_credential::Column::TenantId.eq(p.tenant_id))
            .one(&r)
            .await?;
        r.finish().await?;
        Ok(MyCredentials {
            items: rows.into_iter().map(info).collect(),
            has_password: pw.as_ref().is_some_and(|p| p.invalidated_at.is_none()),
            password_changed_at: pw.map(|p| p.changed_at),
        })
    }

    pub async fn rename_credential(
        &self,
        p: &Principal,
        id: Uuid,
        name: &str,
    ) -> Result<CredentialInfo, IdentityError> {
        let uid = user_of(p)?;
        let name = clean_name(name)?;
        let tx = begin_tenant_write_tx(self.db(), p.tenant_id).await?;
        let row = credential::Entity::find_by_id(id)
            .filter(credential::Column::UserId.eq(uid))
            .filter(credential::Column::TenantId.eq(p.tenant_id))
            .one(&tx)
            .await?
            .ok_or_else(|| IdentityError::NotFound("you have no credential with this id".into()))?;
        let mut am: credential::ActiveModel = row.into();
        am.name = Set(name);
        let m = am.update(&tx).await?;
        crate::audit::record(
            &tx,
            AuditEvent::new(
                p.tenant_id,
                Actor::from_principal(p),
                "credential.rename",
                Outcome::Success,
            )
            .target(Target::new("credential", m.id))
            .detail("name", &m.name),
        )
        .await?;
        tx.commit().await?;
        Ok(info(m))
    }

    /// Removes one of the caller's credentials after a fresh step-up. The last way to sign in
    /// (a passkey, or a security key while a password exists) cannot be removed.
    pub async fn remove_credential(&self, p: &Principal, id: Uuid) -> Result<(), IdentityError> {
        let uid = user_of(p)?;
        self.require_recent_step_up(p, Duration::minutes(STEP_UP_WINDOW_MINUTES))
            .await?;
        let tx = begin_tenant_write_tx(self.db(), p.tenant_id).await?;
        let rows = credential::Entity::find()
            .filter(credential::Column::UserId.eq(uid))
            .filter(credential::Column::TenantId.eq(p.tenant_id))
            .all(&tx)
            .await?;
        if !rows.iter().any(|r| r.id == id) {
            return Err(IdentityError::NotFound(
                "you have no credential with this id".into(),
            ));
        }
        let has_password = password_credential::Entity::find_by_id(uid)
            .one(&tx)
            .await?
            .is_some();
        let left = rows.iter().filter(|r| r.id != id);
        let can_sign_in = left
            .clone()
            .any(|r| r.kind == "passkey" || (r.kind == "security_key" && has_password));
        if !can_sign_in {
            return Err(IdentityError::Conflict(
                "this is your last way to sign in; add another passkey or security key first"
                    .into(),
            ));
        }
        credential::Entity::delete_by_id(id).exec(&tx).await?;
        let removed = rows.iter().find(|r| r.id == id);
        crate::audit::record(
            &tx,
            AuditEvent::new(
                p.tenant_id,
                Actor::from_principal(p),
                "credential.remove",
                Outcome::Success,
            )
            .target(Target::new("credential", id))
            .detail("kind", removed.map(|r| r.kind.clone()))
            .detail("name", removed.map(|r| r.name.clone())),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(user = %uid, credential = %id, "credential removed");
        Ok(())
    }

    /// Starts registering another credential for the signed-in person, after a fresh step-up.
    /// A security key needs a password; one is set here if the person has none yet.
    pub async fn add_credential_begin(
        &self,
        p: &Principal,
        kind: CredentialKind,
        password: Option<&str>,
    ) -> Result<(Uuid, CreationChallengeResponse), IdentityError> {
        let uid = user_of(p)?;
        self.require_recent_step_up(p, Duration::minutes(STEP_UP_WINDOW_MINUTES))
            .await?;
        let r = tenant_reader(self.db(), p.tenant_id).await?;
        let u = user::Entity::find_by_id(uid)
            .filter(user::Column::TenantId.eq(p.tenant_id))
            .one(&r)
            .await?
            .ok_or_else(|| IdentityError::NotFound("no such account".into()))?;
        let existing: Vec<CredentialID> = credential::Entity::find()
            .filter(credential::Column::UserId.eq(uid))
            .all(&r)
            .await?
            .into_iter()
            .filter_map(|c| StoredAuthenticator::from_row(&c.kind, &c.passkey).ok())
            .map(|a| match a {
                StoredAuthenticator::Passkey(p) => p.cred_id().clone(),
                StoredAuthenticator::SecurityKey(k) => k.cred_id().clone(),
            })
            .collect();
        let has_password = password_credential::Entity::find_by_id(uid)
            .one(&r)
            .await?
            .is_some();
        r.finish().await?;
        let email = self.user_email_for_use(&u).await?;
        let (ccr, state) = match kind {
            CredentialKind::Passkey => {
                self.refuse_passkeys_if_attested_only(u.tenant_id).await?;
                let (ccr, reg) = self
                    .webauthn()
                    .start_passkey_registration(u.id, &email, &u.display_name, Some(existing))
                    .map_err(|e| {
                        IdentityError::Ceremony(format!("cannot start registration: {e}"))
                    })?;
                (ccr, RegState::Passkey(reg))
            }
            CredentialKind::SecurityKey => {
                let password_hash = match (password, has_password) {
                    (Some(pw), _) => {
                        crate::password::check_policy(
                            pw,
                            self.config().password_min_length,
                            &email,
                            &u.display_name,
                        )?;
                        self.refuse_reuse(u.id, pw).await?;
                        Some(crate::password::hash(pw).await?)
                    }
                    (None, true) => None,
                    (None, false) => {
                        return Err(IdentityError::Invalid(
                            "a security key is used with a password: choose one (password)".into(),
                        ))
                    }
                };
                let (ccr, reg) = self
                    .start_security_key_registration(
                        u.tenant_id,
                        u.id,
                        &email,
                        &u.display_name,
                        Some(existing),
                    )
                    .await?;
                (ccr, RegState::SecurityKey { reg, password_hash })
            }
        };
        let tx = begin_platform_tx(self.db()).await?;
        let id = self
            .store_ceremony(&tx, CEREMONY_ADD, u.tenant_id, u.id, None, &state)
            .await?;
        tx.commit().await?;
        Ok((id, ccr))
    }

    pub async fn add_credential_finish(
        &self,
        p: &Principal,
        ceremony_id: Uuid,
        response: &RegisterPublicKeyCredential,
        name: Option<&str>,
    ) -> Result<CredentialInfo, IdentityError> {
        let uid = user_of(p)?;
        let (c, state): (_, RegState) = self.consume_ceremony(ceremony_id, CEREMONY_ADD).await?;
        if c.user_id != uid {
            return Err(IdentityError::Ceremony(
                "this registration was started by another account".into(),
            ));
        }
        let (auth, password_hash) = self.finish_registration(response, state)?;
        let tx = begin_tenant_write_tx(self.db(), p.tenant_id).await?;
        let u = user::Entity::find_by_id(uid)
            .filter(user::Column::TenantId.eq(p.tenant_id))
            .one(&tx)
            .await?
            .ok_or_else(|| IdentityError::NotFound("no such account".into()))?;
        let name = name.map(clean_name).transpose()?;
        let m = self
            .store_credential(&tx, &u, &auth, name.as_deref().unwrap_or(""))
            .await?;
        let with_password = password_hash.is_some();
        if let Some(hash) = password_hash {
            store_password(&tx, &u, &hash, Utc::now()).await?;
        }
        crate::audit::record(
            &tx,
            AuditEvent::new(
                p.tenant_id,
                Actor::from_principal(p),
                "credential.add",
                Outcome::Success,
            )
            .target(Target::new("credential", m.id))
            .detail("kind", &m.kind)
            .detail("name", &m.name)
            .detail("password_set", with_password),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(user = %uid, credential = %m.id, kind = %m.kind, "credential added");
        Ok(info(m))
    }

    // ---- Passwords ----------------------------------------------------------------------

    pub(crate) async fn refuse_reuse(
        &self,
        user_id: Uuid,
        password: &str,
    ) -> Result<(), IdentityError> {
        let n = self.config().password_history as u64;
        if n == 0 {
            return Ok(());
        }
        let tx = begin_platform_tx(self.db()).await?;
        let recent = password_history::Entity::find()
            .filter(password_history::Column::UserId.eq(user_id))
            .order_by_desc(password_history::Column::CreatedAt)
            .limit(n)
            .all(&tx)
            .await?;
        tx.commit().await?;
        for h in recent {
            if crate::password::verify(password, &h.hash).await? {
                return Err(IdentityError::Invalid(format!(
                    "this password was one of your last {n}; choose a new one"
                )));
            }
        }
        Ok(())
    }

    /// Changes the signed-in person's password after a fresh step-up. There is no forced
    /// periodic change; this is for when the person wants or needs one.
    pub async fn change_password(
        &self,
        p: &Principal,
        new_password: &str,
    ) -> Result<(), IdentityError> {
        let uid = user_of(p)?;
        self.require_recent_step_up(p, Duration::minutes(STEP_UP_WINDOW_MINUTES))
            .await?;
        let r = tenant_reader(self.db(), p.tenant_id).await?;
        let u = user::Entity::find_by_id(uid)
            .filter(user::Column::TenantId.eq(p.tenant_id))
            .one(&r)
            .await?
            .ok_or_else(|| IdentityError::NotFound("no such account".into()))?;
        r.finish().await?;
        let email = self.user_email_for_use(&u).await?;
        crate::password::check_policy(
            new_password,
            self.config().password_min_length,
            &email,
            &u.display_name,
        )?;
        self.refuse_reuse(u.id, new_password).await?;
        let hash = crate::password::hash(new_password).await?;
        let tx = begin_tenant_write_tx(self.db(), p.tenant_id).await?;
        store_password(&tx, &u, &hash, Utc::now()).await?;
        crate::audit::record(
            &tx,
            AuditEvent::new(
                p.tenant_id,
                Actor::from_principal(p),
                "password.change",
                Outcome::Success,
            )
            .target(Target::new("user", u.id)),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(user = %uid, "password changed");
        Ok(())
    }

    /// The password state of an account in the admin's tenant scope.
    pub async fn password_status(
        &self,
        p: &Principal,
        user_id: Uuid,
    ) -> Result<PasswordStatus, IdentityError> {
        // Scope before role: an id outside the tenant is not found, whoever asks.
        let r = tenant_reader(self.db(), p.tenant_id).await?;
        let u = user::Entity::find_by_id(user_id)
            .filter(user::Column::TenantId.eq(p.tenant_id))
            .one(&r)
            .await?
            .ok_or_else(|| IdentityError::NotFound("no account with this id".into()))?;
        require_reader(p, "see password states")?;
        let pw = password_credential::Entity::find_by_id(u.id)
            .one(&r)
            .await?;
        r.finish().await?;
        Ok(match pw {
            None => PasswordStatus {
                has_password: false,
                changed_at: None,
                failed_count: 0,
                last_failed_at: None,
                locked_until: None,
                invalidated_at: None,
            },
            Some(pw) => PasswordStatus {
                has_password: true,
                changed_at: Some(pw.changed_at),
                failed_count: pw.failed_count,
                last_failed_at: pw.last_failed_at,
                locked_until: pw.locked_until.filter(|t| *t > Utc::now()),
                invalidated_at: pw.invalidated_at,
            },
        })
    }

    /// Lifts a password lock (after the admin has confirmed who is asking, outside Anshin).
    pub async fn unlock_password(
        &self,
        p: &Principal,
        user_id: Uuid,
    ) -> Result<PasswordStatus, IdentityError> {
        let tx = begin_tenant_write_tx(self.db(), p.tenant_id).await?;
        let u = user::Entity::find_by_id(user_id)
            .filter(user::Column::TenantId.eq(p.tenant_id))
            .one(&tx)
            .await?
            .ok_or_else(|| IdentityError::NotFound("no account with this id".into()))?;
        require_admin(p, "unlock passwords")?;
        let pw = password_credential::Entity::find_by_id(u.id)
            .one(&tx)
            .await?
            .ok_or_else(|| IdentityError::NotFound("this account has no password".into()))?;
        let mut am: password_credential::ActiveModel = pw.into();
        am.failed_count = Set(0);
        am.locked_until = Set(None);
        am.update(&tx).await?;
        crate::audit::record(
            &tx,
            AuditEvent::new(
                p.tenant_id,
                Actor::from_principal(p),
                "password.unlock",
                Outcome::Success,
            )
            .target(Target::new("user", u.id)),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(user = %user_id, by = %p.subject.label(), "password lock lifted");
        self.password_status(p, user_id).await
    }
}

// ---- Step-up for other services ---------------------------------------------------------

/// Whether a session's last authenticator confirmation (`stepped_up_at`) is recent enough:
/// within `within` before `now`, and not in the future beyond a small clock skew.
pub(crate) fn fresh_step_up(
    stepped_up_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    within: Duration,
) -> bool {
    stepped_up_at.is_some_and(|t| now - t <= within && t - now <= Duration::seconds(5))
}

/// The step-up check of the platform's [`StepUpVerifier`] over identity's sessions: a person
/// passes when their (open) session proved a passkey or security key within the window; API
/// tokens and machine clients are not asked.
async fn check_step_up(
    db: &sea_orm::DatabaseConnection,
    p: &Principal,
    within: Duration,
) -> Result<(), StepUpError> {
    let Subject::User { id, session_id, .. } = &p.subject else {
        return Ok(());
    };
    let found = async {
        let tx = begin_platform_tx(db).await?;
        let s = crate::entity::session::Entity::find_by_id(*session_id)
            .one(&tx)
            .await?;
        tx.commit().await?;
        Ok::<_, sea_orm::DbErr>(s)
    }
    .await
    .map_err(|e| StepUpError::Unavailable(e.to_string()))?;
    let fresh = found
        .filter(|s| s.user_id == *id && s.ended_at.is_none())
        .is_some_and(|s| fresh_step_up(s.stepped_up_at, Utc::now(), within));
    if fresh {
        Ok(())
    } else {
        Err(StepUpError::required(within))
    }
}

/// Identity's answer to "did this person confirm recently?" for services that must not depend
/// on identity (keys). It holds only the database connection, so a service that keeps it forms
/// no reference cycle with the identity service (which itself keeps the key service).
#[derive(Clone)]
pub struct SessionStepUp {
    db: sea_orm::DatabaseConnection,
}

impl SessionStepUp {
    pub fn new(db: sea_orm::DatabaseConnection) -> Self {
        Self { db }
    }
}

impl std::fmt::Debug for SessionStepUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStepUp").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl StepUpVerifier for SessionStepUp {
    async fn require_recent_step_up(
        &self,
        p: &Principal,
        within: Duration,
    ) -> Result<(), StepUpError> {
        check_step_up(&self.db, p, within).await
    }
}

#[async_trait::async_trait]
impl StepUpVerifier for IdentityService {
    async fn require_recent_step_up(
        &self,
        p: &Principal,
        within: Duration,
    ) -> Result<(), StepUpError> {
        check_step_up(self.db(), p, within).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_validated() {
        assert!(validate_policy(&AttestationPolicy {
            mode: AttestationMode::Any,
            models: vec![]
        })
        .unwrap()
        .is_none());
        assert!(validate_policy(&AttestationPolicy {
            mode: AttestationMode::AllowList,
            models: vec![]
        })
        .is_err());
        let bad_pem = AttestationPolicy {
            mode: AttestationMode::AllowList,
            models: vec![AttestedModel {
                aaguid: Uuid::nil(),
                description: "病院支給キー".into(),
                ca_pem: "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----".into(),
            }],
        };
        assert!(validate_policy(&bad_pem).is_err());
        assert!(clean_name(" 受付PCのキー ").is_ok());
        assert!(clean_name("").is_err());
        assert!(clean_name("a\nb").is_err());
    }

    #[test]
    fn step_ups_are_fresh_only_within_the_window() {
        let now = Utc::now();
        let w = Duration::minutes(STEP_UP_WINDOW_MINUTES);
        assert!(!fresh_step_up(None, now, w), "never confirmed");
        assert!(fresh_step_up(Some(now), now, w));
        assert!(fresh_step_up(Some(now - Duration::minutes(4)), now, w));
        assert!(!fresh_step_up(Some(now - Duration::minutes(6)), now, w));
        assert!(
            fresh_step_up(Some(now + Duration::seconds(2)), now, w),
            "small clock skew"
        );
        assert!(
            !fresh_step_up(Some(now + Duration::hours(1)), now, w),
            "not from the future"
        );
    }
}
