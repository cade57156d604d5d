//! The identity service's typed API: invitations, WebAuthn enrollment and sign-in, sessions.

use crate::audit::{Actor, AuditEvent, Outcome, Target};
use crate::entity::{ceremony, credential, invitation, session, user};
use crate::error::IdentityError;
use crate::secretbox::SecretBox;
use crate::secrets::{constant_time_eq, random_token, sha256_hex};
use anshin_platform::batch::write_all_or_nothing;
use anshin_platform::config::IdentityConfig;
use anshin_platform::db::{
    begin_platform_tx, begin_platform_write_tx, platform_reader, tenant_reader,
};
use anshin_platform::error::Problem;
use anshin_platform::secret::Secret;
use anshin_platform::{Principal, Role, Subject, TenantKind};
use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, Set, Statement,
};
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;
use uuid::Uuid;
use webauthn_rs::prelude::{
    AttestationMetadata, AuthenticationResult, CreationChallengeResponse, Passkey,
    PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse, SecurityKey, SecurityKeyAuthentication, SecurityKeyRegistration, Url,
    Webauthn, WebauthnBuilder,
};

/// What a person registers: a passkey (user verification: two factors in one gesture) or a
/// security key that is only ever used together with a password.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum StoredAuthenticator {
    Passkey(Passkey),
    SecurityKey(SecurityKey),
}

impl StoredAuthenticator {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            StoredAuthenticator::Passkey(_) => "passkey",
            StoredAuthenticator::SecurityKey(_) => "security_key",
        }
    }

    fn cred_id(&self) -> String {
        base64_url(match self {
            StoredAuthenticator::Passkey(p) => p.cred_id().as_ref(),
            StoredAuthenticator::SecurityKey(k) => k.cred_id().as_ref(),
        })
    }

    /// The attested authenticator model, when the registration carried a verified attestation
    /// (security keys under an allow list; passkeys are registered without attestation).
    pub(crate) fn aaguid(&self) -> Option<Uuid> {
        let StoredAuthenticator::SecurityKey(k) = self else {
            return None;
        };
        match k.attestation().metadata.clone() {
            AttestationMetadata::Packed { aaguid } => Some(aaguid),
            AttestationMetadata::Tpm { aaguid, .. } => Some(aaguid),
            _ => None,
        }
    }

    fn update(&mut self, r: &AuthenticationResult) {
        match self {
            StoredAuthenticator::Passkey(p) => {
                p.update_credential(r);
            }
            StoredAuthenticator::SecurityKey(k) => {
                k.update_credential(r);
            }
        }
    }

    /// Reads a stored row: `passkey` rows written before security keys existed hold a bare
    /// `Passkey`.
    pub(crate) fn from_row(kind: &str, json: &str) -> Result<Self, IdentityError> {
        let bad = |e: serde_json::Error| {
            IdentityError::Setup(format!("stored credential is unreadable: {e}"))
        };
        match kind {
            "security_key" => serde_json::from_str(json)
                .map(Self::SecurityKey)
                .map_err(bad),
            _ => serde_json::from_str(json).map(Self::Passkey).map_err(bad),
        }
    }

    fn to_row(&self) -> Result<String, IdentityError> {
        match self {
            StoredAuthenticator::Passkey(p) => serde_json::to_string(p),
            StoredAuthenticator::SecurityKey(k) => serde_json::to_string(k),
        }
        .map_err(|e| IdentityError::Setup(e.to_string()))
    }
}

/// The server-side state of an authentication ceremony.
#[derive(Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum AuthState {
    Passkey(PasskeyAuthentication),
    SecurityKey(SecurityKeyAuthentication),
}

/// The server-side state of a registration ceremony. A security key registered at enrollment
/// carries the hash of the password chosen with it.
#[derive(Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum RegState {
    Passkey(PasskeyRegistration),
    SecurityKey {
        reg: SecurityKeyRegistration,
        password_hash: Option<String>,
    },
}

/// Ceremony kinds (column `kind`).
pub(crate) const CEREMONY_ENROLL: &str = "enrollment";
pub(crate) const CEREMONY_SIGN_IN: &str = "sign_in";
/// A security-key assertion after the password was checked.
pub(crate) const CEREMONY_PASSWORD_SIGN_IN: &str = "sign_in_pw";
/// Adding another credential to a signed-in account.
pub(crate) const CEREMONY_ADD: &str = "add_credential";

/// How often `last_seen_at` is written; the idle timeout is exact to within this.
const LAST_SEEN_GRANULARITY_SECS: i64 = 30;

/// A verified assertion and what recording it changes, read before the write transaction.
struct CheckedAssertion {
    ceremony: Uuid,
    /// The account as read (active then).
    user: user::Model,
    credential: Uuid,
    /// The credential's stored form with the new counter.
    passkey: String,
    /// The idle timeout of a session it opens: the tenant's policy or the default.
    idle_timeout_secs: i64,
}

#[derive(Clone)]
pub struct IdentityService {
    db: DatabaseConnection,
    webauthn: Arc<Webauthn>,
    cfg: IdentityConfig,
    public_url: Url,
    secrets: SecretBox,
    /// Seals what identity stores that is secret or personal (identity providers' client
    /// secrets, people's addresses) under the tenant's KEK, and keeps the addresses' blind
    /// indexes. Secrets sealed before the key service existed still open with `secrets`.
    keys: anshin_keys::KeyService,
    /// Seal new client secrets with `secrets` instead, as before the key service: only for
    /// tests that need values for the re-encryption pass to move.
    legacy_secret_sealing: bool,
    http: openidconnect::reqwest::Client,
    /// OpenID Providers' discovery documents and JWKS, shared by the clones of this service.
    provider_metadata: Arc<crate::oidc_metadata::MetadataCache>,
    mailer: Option<Arc<crate::mail::Mailer>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserInfo {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub last_sign_in_at: Option<DateTime<Utc>>,
}

impl UserInfo {
    /// An account and its opened address.
    fn from_model(m: user::Model, email: String) -> Self {
        Self {
            id: m.id,
            tenant_id: m.tenant_id,
            email,
            display_name: m.display_name,
            role: Role::parse(&m.role).unwrap_or(Role::Auditor),
            status: m.status,
            created_at: m.created_at,
            last_sign_in_at: m.last_sign_in_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionInfo {
    pub id: Uuid,
    pub method: String,
    pub user_agent: Option<String>,
    pub source_ip: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub absolute_expires_at: DateTime<Utc>,
    pub current: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InvitationInfo {
    pub id: Uuid,
    /// True when the link went by mail; it is then not in this answer.
    pub mailed: bool,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub expires_at: DateTime<Utc>,
    /// The single-use enrollment link, when no mail server is configured. Shown once: only its
    /// hash is stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrollment_url: Option<String>,
}

/// A session just created. `cookie` is the only copy of the session secret.
/// How an invited person enrolls.
#[derive(Debug, Clone)]
pub enum EnrollMethod {
    Passkey,
    /// A security key used together with this password.
    SecurityKey {
        password: String,
    },
}

pub struct NewSession {
    pub session_id: Uuid,
    pub cookie: Secret,
    pub csrf_token: String,
    pub user: UserInfo,
    /// When the session ends whatever its use.
    pub absolute_expires_at: DateTime<Utc>,
}

/// Where a request came from, recorded on the session.
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    pub user_agent: Option<String>,
    pub source_ip: Option<String>,
}

impl IdentityService {
    pub fn new(
        db: DatabaseConnection,
        public_url: &str,
        cfg: IdentityConfig,
        secrets: SecretBox,
        keys: anshin_keys::KeyService,
    ) -> Result<Self, IdentityError> {
        let url =
            Url::parse(public_url).map_err(|e| IdentityError::Setup(format!("public URL: {e}")))?;
        let rp_id = url
            .host_str()
            .ok_or_else(|| IdentityError::Setup("the public URL has no host".into()))?
            .to_string();
        let webauthn = WebauthnBuilder::new(&rp_id, &url)
            .map_err(|e| IdentityError::Setup(e.to_string()))?
            .rp_name("Anshin")
            .timeout(std::time::Duration::from_secs(cfg.ceremony_timeout_secs))
            .build()
            .map_err(|e| IdentityError::Setup(e.to_string()))?;
        // Provider calls never follow redirects (SSRF and mix-up protection).
        let http = openidconnect::reqwest::ClientBuilder::new()
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| IdentityError::Setup(e.to_string()))?;
        let mailer = match &cfg.smtp_url {
            Some(url) => Some(Arc::new(crate::mail::Mailer::new(url, &cfg.mail_from)?)),
            None => None,
        };
        Ok(Self {
            mailer,
            keys,
            legacy_secret_sealing: false,
            db,
            webauthn: Arc::new(webauthn),
            cfg,
            public_url: url,
            secrets,
            http,
            provider_metadata: Arc::default(),
        })
    }

    fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    pub(crate) fn public_url(&self) -> &Url {
        &self.public_url
    }

    pub(crate) fn webauthn(&self) -> &Webauthn {
        &self.webauthn
    }

    pub(crate) fn config(&self) -> &IdentityConfig {
        &self.cfg
    }

    /// The outbound HTTP client (no redirects, short timeouts), for alert delivery.
    pub fn http_client(&self) -> openidconnect::reqwest::Client {
        self.http.clone()
    }

    /// The mail server, when one is configured.
    pub(crate) fn mailer(&self) -> Option<&Arc<crate::mail::Mailer>> {
        self.mailer.as_ref()
    }

    pub(crate) fn keys(&self) -> &anshin_keys::KeyService {
        &self.keys
    }

    /// Test support: seals new identity-provider client secrets with the interim secret box, as
    /// Anshin did before the key service, so tests can create the values the re-encryption pass
    /// moves. Addresses are sealed by the key service regardless.
    #[doc(hidden)]
    pub fn sealing_secrets_with_secret_box(mut self) -> Self {
        self.legacy_secret_sealing = true;
        self
    }

    /// Seals a secret of `tenant` for `purpose`, bound to `context`, under the tenant's KEK.
    pub(crate) async fn seal_secret(
        &self,
        tenant: Uuid,
        purpose: &str,
        context: &str,
        secret: &str,
    ) -> Result<String, IdentityError> {
        if self.legacy_secret_sealing {
            return Ok(self.secrets.seal(secret, context));
        }
        self.keys
            .seal_text(tenant, purpose, context, secret)
            .await
            .map_err(key_error)
    }

    pub(crate) async fn open_secret(
        &self,
        tenant: Uuid,
        purpose: &str,
        context: &str,
        sealed: &str,
    ) -> Result<String, IdentityError> {
        if anshin_keys::service::is_sealed_text(sealed) {
            return self
                .keys
                .open_text(tenant, purpose, context, sealed)
                .await
                .map(|s| s.to_string())
                .map_err(key_error);
        }
        self.secrets
            .open(sealed, context)
            .map_err(|e| IdentityError::Setup(e.to_string()))
    }

    pub(crate) fn http(&self) -> &openidconnect::reqwest::Client {
        &self.http
    }

    pub(crate) fn provider_metadata(&self) -> &crate::oidc_metadata::MetadataCache {
        &self.provider_metadata
    }

    // ---- Invitations --------------------------------------------------------------------

    /// Invites a person into the inviter's own tenant. Admin roles only. A pending invitation
    /// of the same address in this tenant ends (is superseded) in the same transaction.
    pub async fn invite(
        &self,
        actor: &Principal,
        email: &str,
        display_name: &str,
        role: Role,
    ) -> Result<InvitationInfo, IdentityError> {
        if !matches!(actor.role, Role::ProviderAdmin | Role::InstitutionAdmin) {
            return Err(IdentityError::Forbidden(format!(
                "the role {} may not invite people",
                actor.role
            )));
        }
        if !role.fits(actor.tenant_kind) {
            return Err(IdentityError::Invalid(format!(
                "the role {role} cannot belong to a {} tenant",
                actor.tenant_kind.as_str()
            )));
        }
        let email = normalise_email(email)?;
        let display_name = display_name.trim();
        if display_name.is_empty()
            || display_name.chars().count() > 200
            || display_name.chars().any(char::is_control)
        {
            return Err(IdentityError::Invalid(
                "give a display name of 1–200 printable characters".into(),
            ));
        }
        let token = random_token();
        let now = Utc::now();
        // Before the write transaction: both may write key material on first use.
        let email = self.email_key(email).await?;
        let id = Uuid::now_v7();
        let sealed = self.seal_email(actor.tenant_id, id, &email.address).await?;
        let tx = begin_platform_write_tx(&self.db).await?;
        let taken = user::Entity::find().filter(email.users()).one(&tx).await?;
        if taken.is_some() {
            return Err(IdentityError::Conflict(
                "an account with this email address already exists".into(),
            ));
        }
        // Inviting an address again (the first mail was lost, the role was wrong) replaces the
        // pending invitation of this tenant: its link stops enrolling, so only one is ever live.
        let superseded: Vec<Uuid> = invitation::Entity::find()
            .select_only()
            .column(invitation::Column::Id)
            .filter(invitation::Column::TenantId.eq(actor.tenant_id))
            .filter(invitation::Column::EmailIndex.eq(email.index.clone()))
            .filter(invitation::Column::UsedAt.is_null())
            .filter(invitation::Column::ExpiresAt.gt(now))
            .into_tuple()
            .all(&tx)
            .await?;
        if !superseded.is_empty() {
            invitation::end_early(now, actor.subject.label(), "superseded")
                .filter(invitation::Column::Id.is_in(superseded.clone()))
                .exec(&tx)
                .await?;
        }
        let inv = invitation::ActiveModel {
            id: Set(id),
            tenant_id: Set(actor.tenant_id),
            email_sealed: Set(sealed),
            email_index: Set(Some(email.index.clone())),
            display_name: Set(display_name.to_string()),
            role: Set(role.as_str().into()),
            token_hash: Set(sha256_hex(&token)),
            invited_by: Set(actor.subject.label()),
            created_at: Set(now),
            expires_at: Set(now + Duration::hours(self.cfg.invitation_ttl_hours as i64)),
            used_at: Set(None),
            revoked_at: Set(None),
            revoked_by: Set(None),
            revoked_reason: Set(None),
        }
        .insert(&tx)
        .await?;
        let mut link = self
            .public_url
            .join("/enroll")
            .map_err(|e| IdentityError::Setup(e.to_string()))?;
        link.set_fragment(Some(&format!("token={token}")));
        // With a mail server the link goes only by mail, sent before the invitation commits:
        // if the mail fails, nothing changes.
        let mailed = match &self.mailer {
            Some(m) => {
                let expires = crate::mail::jst(inv.expires_at);
                m.send_invitation(&email.address, &inv.display_name, link.as_str(), &expires)
                    .await?;
                true
            }
            None => false,
        };
        crate::audit::record(
            &tx,
            AuditEvent::new(
                actor.tenant_id,
                Actor::from_principal(actor),
                "invitation.create",
                Outcome::Success,
            )
            .target(Target::new("invitation", inv.id))
            .detail("email", &email.address)
            .detail("role", role.as_str())
            .detail("mailed", mailed)
            .detail("superseded", &superseded),
        )
        .await?;
        tx.commit().await?;
        Ok(InvitationInfo {
            id: inv.id,
            mailed,
            email: email.address,
            display_name: inv.display_name,
            role,
            expires_at: inv.expires_at,
            enrollment_url: (!mailed).then(|| link.to_string()),
        })
    }

    // ---- Enrollment ---------------------------------------------------------------------

    /// Starts registering the first credential of the person an enrollment token invites: a
    /// passkey, or a security key with a password (checked against the policy now, stored only
    /// as its argon2id hash, and kept only if the registration finishes).
    pub async fn enroll_begin(
        &self,
        token: &str,
        method: EnrollMethod,
    ) -> Result<(Uuid, CreationChallengeResponse), IdentityError> {
        let inv = {
            let tx = begin_platform_tx(&self.db).await?;
            let inv = usable_invitation(&tx, token).await?;
            tx.commit().await?;
            inv
        };
        let email = self
            .email_for_use(inv.tenant_id, inv.id, &inv.email_sealed)
            .await?;
        let user_id = Uuid::now_v7();
        let state = match method {
            EnrollMethod::Passkey => {
                self.refuse_passkeys_if_attested_only(inv.tenant_id).await?;
                let (ccr, reg) = self
                    .webauthn
                    .start_passkey_registration(user_id, &email, &inv.display_name, None)
                    .map_err(|e| {
                        IdentityError::Ceremony(format!("cannot start registration: {e}"))
                    })?;
                (ccr, RegState::Passkey(reg))
            }
            EnrollMethod::SecurityKey { password } => {
                crate::password::check_policy(
                    &password,
                    self.cfg.password_min_length,
                    &email,
                    &inv.display_name,
                )?;
                let hash = crate::password::hash(&password).await?;
                let (ccr, reg) = self
                    .start_security_key_registration(
                        inv.tenant_id,
                        user_id,
                        &email,
                        &inv.display_name,
                        None,
                    )
                    .await?;
                (
                    ccr,
                    RegState::SecurityKey {
                        reg,
                        password_hash: Some(hash),
                    },
                )
            }
        };
        let tx = begin_platform_write_tx(&self.db).await?;
        let id = self
            .store_ceremony(
                &tx,
                CEREMONY_ENROLL,
                inv.tenant_id,
                user_id,
                Some(inv.id),
                &state.1,
            )
            .await?;
        tx.commit().await?;
        Ok((id, state.0))
    }

    /// Finishes registration: creates the account, its first passkey and a session.
    pub async fn enroll_finish(
        &self,
        ceremony_id: Uuid,
        response: &RegisterPublicKeyCredential,
        credential_name: Option<&str>,
        meta: ClientMeta,
    ) -> Result<NewSession, IdentityError> {
        let (c, state): (_, RegState) = self.consume_ceremony(ceremony_id, CEREMONY_ENROLL).await?;
        let (authenticator, password_hash) = self.finish_registration(response, state)?;
        let inv_id = c
            .invitation_id
            .ok_or_else(|| IdentityError::Ceremony("the ceremony has no invitation".into()))?;
        let gone = || IdentityError::NotFound("the invitation no longer exists".into());
        // The account's address, sealed for the account and indexed before the write
        // transaction (both may write key material on first use).
        let email = {
            let tx = begin_platform_tx(&self.db).await?;
            let inv = invitation::Entity::find_by_id(inv_id).one(&tx).await?;
            tx.commit().await?;
            let inv = inv.ok_or_else(gone)?;
            let address = self
                .email_for_use(inv.tenant_id, inv.id, &inv.email_sealed)
                .await?;
            self.email_key(address).await?
        };
        let sealed = self
            .seal_email(c.tenant_id, c.user_id, &email.address)
            .await?;
        let tx = begin_platform_write_tx(&self.db).await?;
        let inv = invitation::Entity::find_by_id(inv_id)
            .one(&tx)
            .await?
            .ok_or_else(gone)?;
        let now = Utc::now();
        // The invitation is single-use: only one finish can flip used_at.
        let used = invitation::Entity::update_many()
            .col_expr(invitation::Column::UsedAt, Expr::value(now))
            .filter(invitation::Column::Id.eq(inv.id))
            .filter(invitation::Column::UsedAt.is_null())
            .exec(&tx)
            .await?;
        if used.rows_affected != 1 || inv.expires_at <= now {
            return Err(IdentityError::Ceremony(
                "the enrollment link was already used or has expired".into(),
            ));
        }
        let taken =
            || IdentityError::Conflict("an account with this email address already exists".into());
        // The unique blind index refuses a second account; an account not re-encrypted yet has
        // no index, so it is looked for by its readable address too.
        if user::Entity::find()
            .filter(email.users())
            .one(&tx)
            .await?
            .is_some()
        {
            return Err(taken());
        }
        let u = user::ActiveModel {
            id: Set(c.user_id),
            tenant_id: Set(inv.tenant_id),
            email_sealed: Set(sealed),
            email_index: Set(Some(email.index.clone())),
            display_name: Set(inv.display_name.clone()),
            role: Set(inv.role.clone()),
            status: Set("active".into()),
            created_at: Set(now),
            last_sign_in_at: Set(Some(now)),
            stale_flagged_at: Set(None),
        }
        .insert(&tx)
        .await
        .map_err(|e| {
            if anshin_platform::db::is_unique_violation(&e) {
                taken()
            } else {
                e.into()
            }
        })?;
        let default_name = match authenticator {
            StoredAuthenticator::Passkey(_) => "パスキー",
            StoredAuthenticator::SecurityKey(_) => "セキュリティキー",
        };
        self.store_credential(
            &tx,
            &u,
            &authenticator,
            credential_name.unwrap_or(default_name),
        )
        .await?;
        let method = match &password_hash {
            Some(hash) => {
                crate::credentials::store_password(&tx, &u, hash, now).await?;
                "security_key+password"
            }
            None => "passkey",
        };
        crate::audit::record(
            &tx,
            AuditEvent::new(
                u.tenant_id,
                crate::audit::user_actor(&u, &email.address),
                "account.enroll",
                Outcome::Success,
            )
            .target(Target::new("user", u.id))
            .detail("invitation_id", inv.id)
            .detail("role", &u.role)
            .detail("method", method),
        )
        .await?;
        let s = self
            .create_session(&tx, &u, &email.address, method, meta)
            .await?;
        tx.commit().await?;
        tracing::info!(user = %u.id, tenant = %u.tenant_id, method, "account enrolled");
        Ok(s)
    }

    // ---- Sign-in ------------------------------------------------------------------------

    /// Starts a passkey sign-in. The answer has the same shape whether or not the address has
    /// an account with a passkey (a decoy challenge listing credential ids derived from the
    /// address), so sign-in cannot be used to find out who has an account.
    pub async fn sign_in_begin(
        &self,
        email: &str,
    ) -> Result<(Uuid, RequestChallengeResponse), IdentityError> {
        let email = self.email_key(normalise_email(email)?).await?;
        // The account and its credentials in one read (no transaction on SQLite).
        let r = platform_reader(&self.db).await?;
        let found = user::Entity::find()
            .filter(email.users())
            .filter(user::Column::Status.eq("active"))
            .find_with_related(credential::Entity)
            .all(&r)
            .await?;
        r.finish().await?;
        let Some((u, rows)) = found.into_iter().next() else {
            return Ok((Uuid::now_v7(), self.decoy_challenge(&email.address)?));
        };
        let passkeys = split_authenticators(rows)?.0;
        if passkeys.is_empty() {
            return Ok((Uuid::now_v7(), self.decoy_challenge(&email.address)?));
        }
        let (rcr, state) = self
            .webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(|e| IdentityError::Ceremony(format!("cannot start sign-in: {e}")))?;
        let (id, row) = self.ceremony_row(
            CEREMONY_SIGN_IN,
            u.tenant_id,
            u.id,
            None,
            &AuthState::Passkey(state),
        )?;
        let insert = ceremony::Entity::insert(row).build(self.backend());
        if !write_all_or_nothing(&self.db, vec![insert], 1).await? {
            return Err(IdentityError::Setup(
                "the sign-in challenge could not be stored".into(),
            ));
        }
        Ok((id, rcr))
    }

    /// A challenge for an address without passkeys, indistinguishable from a real one: fresh
    /// random challenge, and credential ids derived from the address with a secret key, so the
    /// same address always lists the same ids.
    fn decoy_challenge(&self, email: &str) -> Result<RequestChallengeResponse, IdentityError> {
        use webauthn_rs::prelude::Base64UrlSafeData;
        let mut challenge = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut challenge);
        let ids = self
            .secrets
            .derive_many("webauthn-decoy", email.as_bytes(), 1);
        let rp_id = self
            .public_url
            .host_str()
            .unwrap_or("localhost")
            .to_string();
        let mut v = serde_json::json!({
            "publicKey": {
                "challenge": Base64UrlSafeData::from(challenge.to_vec()),
                "timeout": self.cfg.ceremony_timeout_secs * 1000,
                "rpId": rp_id,
                "allowCredentials": ids.into_iter().map(|id| serde_json::json!({
                    "type": "public-key",
                    "id": Base64UrlSafeData::from(id),
                })).collect::<Vec<_>>(),
                "userVerification": "required"
            }
        });
        if let Some(o) = v.get_mut("publicKey").and_then(|p| p.as_object_mut()) {
            o.retain(|_, v| !v.is_null());
        }
        serde_json::from_value(v).map_err(|e| IdentityError::Setup(e.to_string()))
    }

    /// A WebAuthn authentication challenge for one signed-in person's credentials (step-up):
    /// their passkeys, or their security keys when they have no passkey.
    pub(crate) async fn passkey_challenge_for(
        &self,
        user_id: Uuid,
    ) -> Result<(Uuid, RequestChallengeResponse), IdentityError> {
        let tx = begin_platform_tx(&self.db).await?;
        let u = user::Entity::find_by_id(user_id)
            .one(&tx)
            .await?
            .filter(|u| u.status == "active")
            .ok_or_else(|| IdentityError::Ceremony("the account is disabled".into()))?;
        let (passkeys, keys) = self.authenticators_of(&tx, u.id).await?;
        tx.commit().await?;
        let (rcr, state) = if !passkeys.is_empty() {
            let (rcr, st) = self
                .webauthn
                .start_passkey_authentication(&passkeys)
                .map_err(|e| IdentityError::Ceremony(format!("cannot start sign-in: {e}")))?;
            (rcr, AuthState::Passkey(st))
        } else if !keys.is_empty() {
            let (rcr, st) = self
                .webauthn
                .start_securitykey_authentication(&keys)
                .map_err(|e| IdentityError::Ceremony(format!("cannot start sign-in: {e}")))?;
            (rcr, AuthState::SecurityKey(st))
        } else {
            return Err(IdentityError::Ceremony(
                "this account has no passkey or security key yet".into(),
            ));
        };
        let tx = begin_platform_write_tx(&self.db).await?;
        let id = self
            .store_ceremony(&tx, CEREMONY_SIGN_IN, u.tenant_id, u.id, None, &state)
            .await?;
        tx.commit().await?;
        Ok((id, rcr))
    }

    pub(crate) async fn has_passkey(&self, user_id: Uuid) -> Result<bool, IdentityError> {
        let tx = begin_platform_tx(&self.db).await?;
        let n = credential::Entity::find()
            .filter(credential::Column::UserId.eq(user_id))
            .one(&tx)
            .await?;
        tx.commit().await?;
        Ok(n.is_some())
    }

    /// Finishes a passkey sign-in. Every failure gets the same answer (the reason is logged),
    /// so an attacker learns nothing about the account from it.
    ///
    /// Reads first (ceremony, account, credential, beside other writers), then one write
    /// transaction that only writes: the ceremony is consumed, the credential's counter and the
    /// account's last sign-in recorded — each conditionally, so a change meanwhile refuses the
    /// sign-in — and the session and its audit event inserted together.
    pub async fn sign_in_finish(
        &self,
        ceremony_id: Uuid,
        response: &PublicKeyCredential,
        meta: ClientMeta,
    ) -> Result<NewSession, IdentityError> {
        let outcome = async {
            let checked = self
                .check_assertion(ceremony_id, CEREMONY_SIGN_IN, response)
                .await?;
            let email = self.user_email(&checked.user).await?;
            let idle = checked.idle_timeout_secs;
            let now = Utc::now();
            let u = user::Model {
                last_sign_in_at: Some(now),
                ..checked.user.clone()
            };
            let absolute = self.cfg.session_absolute_timeout_secs as i64;
            let (s, session_writes) =
                self.session_writes(&u, &email, "passkey", meta, absolute, idle)?;
            let mut writes = self.assertion_writes(&checked, now).to_vec();
            writes.extend(session_writes);
            let expected = writes.len() as u64;
            if !write_all_or_nothing(&self.db, writes, expected).await? {
                return Err(IdentityError::Ceremony(
                    "the challenge was used, the passkey removed or the account disabled while the sign-in was checked".into(),
                ));
            }
            Ok::<_, IdentityError>((u, s))
        }
        .await;
        match outcome {
            Ok((u, s)) => {
                tracing::info!(user = %u.id, "signed in with a passkey");
                Ok(s)
            }
            Err(IdentityError::Ceremony(reason)) => {
                tracing::info!(%reason, "passkey sign-in refused");
                crate::audit::record_now(
                    &self.db,
                    AuditEvent::new(
                        crate::audit::NO_TENANT,
                        Actor::anonymous(None),
                        "auth.sign_in",
                        Outcome::Failure,
                    )
                    .reason(reason.clone())
                    .detail("method", "passkey"),
                )
                .await;
                Err(IdentityError::Ceremony(
                    "the passkey sign-in was not accepted (unknown, used or expired challenge, or a passkey this account does not have); start again".into(),
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// Checks a passkey assertion of a step-up or OIDC step-up ceremony.
    pub(crate) async fn verify_passkey(
        &self,
        ceremony_id: Uuid,
        response: &PublicKeyCredential,
    ) -> Result<user::Model, IdentityError> {
        self.verify_assertion(ceremony_id, CEREMONY_SIGN_IN, response)
            .await
    }

    /// Checks an assertion against its (single-use) ceremony of `kind`, records the new
    /// counter (a counter that went backwards means a cloned authenticator and is refused), and
    /// returns the account it proves.
    pub(crate) async fn verify_assertion(
        &self,
        ceremony_id: Uuid,
        kind: &str,
        response: &PublicKeyCredential,
    ) -> Result<user::Model, IdentityError> {
        let checked = self.check_assertion(ceremony_id, kind, response).await?;
        let tx = begin_platform_write_tx(&self.db).await?;
        let u = self.apply_assertion(&tx, checked).await?;
        tx.commit().await?;
        Ok(u)
    }

    /// Verifies an assertion against a pending ceremony of `kind` and reads what it will change,
    /// without writing anything when it is good (the caller's write transaction consumes the
    /// ceremony with [`Self::apply_assertion`]); a bad assertion uses the ceremony up, so each
    /// challenge gets one try.
    async fn check_assertion(
        &self,
        ceremony_id: Uuid,
        kind: &str,
        response: &PublicKeyCredential,
    ) -> Result<CheckedAssertion, IdentityError> {
        let presented = base64_url(response.raw_id.as_ref());
        let ctx = crate::assertion_read::read(&self.db, ceremony_id, kind, &presented)
            .await?
            .ok_or_else(|| IdentityError::Ceremony("unknown ceremony; start again".into()))?;
        let (c, state): (_, AuthState) = usable_ceremony(ctx.ceremony.clone())?;
        let verified = match &state {
            AuthState::Passkey(st) => self.webauthn.finish_passkey_authentication(response, st),
            AuthState::SecurityKey(st) => self
                .webauthn
                .finish_securitykey_authentication(response, st),
        };
        let result = match verified {
            Ok(r) => r,
            Err(e) => {
                if let Err(err) = self.use_up_ceremony(ceremony_id).await {
                    tracing::warn!(error = %err, "could not mark a failed ceremony used");
                }
                return Err(match e {
                    webauthn_rs::prelude::WebauthnError::CredentialPossibleCompromise => {
                        tracing::warn!(user = %c.user_id, "authenticator counter went backwards: possible cloned credential");
                        IdentityError::Ceremony(
                            "the authenticator's signature counter went backwards, which happens when a key was copied; the sign-in was refused — tell your administrator".into(),
                        )
                    }
                    e => IdentityError::Ceremony(format!("the passkey was not accepted: {e}")),
                });
            }
        };
        let user = ctx
            .user
            .filter(|u| u.status == "active")
            .ok_or_else(|| IdentityError::Ceremony("the account is disabled".into()))?;
        // The verified credential is the one presented (and read) above.
        let stored = ctx
            .credential
            .filter(|k| k.credential_id == base64_url(result.cred_id().as_ref()))
            .ok_or_else(|| {
                IdentityError::Ceremony("this passkey is not registered to the account".into())
            })?;
        let mut auth = StoredAuthenticator::from_row(&stored.kind, &stored.passkey)?;
        auth.update(&result);
        let idle_timeout_secs = ctx
            .policy
            .map(|p| p.idle_timeout_secs)
            .unwrap_or_else(|| self.policy_defaults().idle_timeout_secs);
        Ok(CheckedAssertion {
            ceremony: c.id,
            user,
            credential: stored.id,
            passkey: auth.to_row()?,
            idle_timeout_secs,
        })
    }

    async fn use_up_ceremony(&self, id: Uuid) -> Result<(), IdentityError> {
        let tx = begin_platform_write_tx(&self.db).await?;
        ceremony::Entity::update_many()
            .col_expr(ceremony::Column::ConsumedAt, Expr::value(Utc::now()))
            .filter(ceremony::Column::Id.eq(id))
            .filter(ceremony::Column::ConsumedAt.is_null())
            .exec(&tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Inside the caller's write transaction, writes only: consumes the ceremony (only one of
    /// two racing finishes wins), stores the credential's new counter and the account's last
    /// sign-in. Each write is conditional: a credential removed or an account disabled since
    /// [`Self::check_assertion`] read them refuses the sign-in.
    async fn apply_assertion(
        &self,
        tx: &impl ConnectionTrait,
        checked: CheckedAssertion,
    ) -> Result<user::Model, IdentityError> {
        let now = Utc::now();
        let [consume, counter, last_sign_in] = self.assertion_writes(&checked, now);
        let refusals = [
            (consume, "this challenge was already used; start again"),
            (counter, "this passkey is not registered to the account"),
            (last_sign_in, "the account is disabled"),
        ];
        for (write, refusal) in refusals {
            if tx.execute(write).await?.rows_affected() != 1 {
                return Err(IdentityError::Ceremony(refusal.into()));
            }
        }
        Ok(user::Model {
            last_sign_in_at: Some(now),
            ..checked.user
        })
    }

    /// The writes of an accepted assertion, each changing one row only while its condition
    /// holds: the ceremony consumed (only one of two racing finishes wins), the credential's
    /// new counter stored, the account's last sign-in recorded while it is still active.
    fn assertion_writes(&self, checked: &CheckedAssertion, now: DateTime<Utc>) -> [Statement; 3] {
        let backend = self.backend();
        [
            ceremony::Entity::update_many()
                .col_expr(ceremony::Column::ConsumedAt, Expr::value(now))
                .filter(ceremony::Column::Id.eq(checked.ceremony))
                .filter(ceremony::Column::ConsumedAt.is_null())
                .build(backend),
            credential::Entity::update_many()
                .col_expr(
                    credential::Column::Passkey,
                    Expr::value(checked.passkey.clone()),
                )
                .col_expr(credential::Column::LastUsedAt, Expr::value(now))
                .filter(credential::Column::Id.eq(checked.credential))
                .filter(credential::Column::UserId.eq(checked.user.id))
                .build(backend),
            user::Entity::update_many()
                .col_expr(user::Column::LastSignInAt, Expr::value(now))
                .filter(user::Column::Id.eq(checked.user.id))
                .filter(user::Column::Status.eq("active"))
                .build(backend),
        ]
    }

    // ---- Sessions -----------------------------------------------------------------------

    /// The principal of a session cookie, enforcing the idle and absolute timeouts and, for
    /// requests that change state, the CSRF token.
    pub async fn authenticate_session(
        &self,
        cookie: &str,
        csrf: Option<&str>,
        unsafe_method: bool,
    ) -> Result<Option<Principal>, Problem> {
        if cookie.len() != 43 {
            return Ok(None);
        }
        let hash = sha256_hex(cookie);
        let tx = begin_platform_tx(&self.db).await.map_err(Problem::from)?;
        let Some(s) = session::Entity::find()
            .filter(session::Column::TokenHash.eq(hash))
            .one(&tx)
            .await
            .map_err(Problem::from)?
        else {
            tx.commit().await.map_err(Problem::from)?;
            return Ok(None);
        };
        let u = user::Entity::find_by_id(s.user_id)
            .one(&tx)
            .await
            .map_err(Problem::from)?;
        tx.commit().await.map_err(Problem::from)?;
        let kind = self.active_tenant_kind(s.tenant_id).await?;
        let now = Utc::now();
        let ended = if s.ended_at.is_some() {
            Some(None)
        } else if now >= s.absolute_expires_at {
            Some(Some("absolute_timeout"))
        } else if (now - s.last_seen_at).num_seconds() >= s.idle_timeout_secs {
            Some(Some("idle_timeout"))
        } else if u.as_ref().is_none_or(|u| u.status != "active") || kind.is_none() {
            Some(Some("account_disabled"))
        } else {
            None
        };
        if let Some(reason) = ended {
            if let Some(reason) = reason {
                self.end(s.id, reason).await.map_err(Problem::from)?;
            }
            return Ok(None);
        }
        if unsafe_method && !csrf.is_some_and(|c| constant_time_eq(c, &s.csrf_token)) {
            return Err(Problem::forbidden(
                "this request changes data and needs the x-csrf-token header of your session",
            ));
        }
        if (now - s.last_seen_at).num_seconds() >= LAST_SEEN_GRANULARITY_SECS {
            let tx = begin_platform_tx(&self.db).await.map_err(Problem::from)?;
            session::Entity::update_many()
                .col_expr(session::Column::LastSeenAt, Expr::value(now))
                .filter(session::Column::Id.eq(s.id))
                .exec(&tx)
                .await
                .map_err(Problem::from)?;
            tx.commit().await.map_err(Problem::from)?;
        }
        let (Some(u), Some(kind)) = (u, kind) else {
            return Ok(None);
        };
        let Some(role) = Role::parse(&u.role) else {
            return Ok(None);
        };
        // Only a label for the trail and the pages: a session stays usable when the address
        // cannot be opened (the key provider is briefly unreachable).
        let email = self.user_email_label(&u).await;
        Ok(Some(Principal {
            subject: Subject::User {
                id: u.id,
                session_id: s.id,
                email,
            },
            tenant_id: u.tenant_id,
            tenant_kind: kind,
            role,
            grant: None,
        }))
    }

    pub async fn me(&self, p: &Principal) -> Result<(UserInfo, String), IdentityError> {
        let Subject::User { id, session_id, .. } = &p.subject else {
            return Err(IdentityError::NotFound(
                "API tokens have no user account".into(),
            ));
        };
        let r = tenant_reader(&self.db, p.tenant_id).await?;
        let u = user::Entity::find_by_id(*id)
            .filter(user::Column::TenantId.eq(p.tenant_id))
            .one(&r)
            .await?
            .ok_or_else(|| IdentityError::NotFound("no such account".into()))?;
        let s = session::Entity::find_by_id(*session_id)
            .filter(session::Column::UserId.eq(*id))
            .one(&r)
            .await?
            .ok_or_else(|| IdentityError::NotFound("no such session".into()))?;
        r.finish().await?;
        let email = self.user_email(&u).await?;
        Ok((UserInfo::from_model(u, email), s.csrf_token))
    }

    /// The caller's own sessions that have not ended, newest first.
    pub async fn my_sessions(&self, p: &Principal) -> Result<Vec<SessionInfo>, IdentityError> {
        let Subject::User { id, session_id, .. } = &p.subject else {
            return Err(IdentityError::NotFound(
                "API tokens have no sessions".into(),
            ));
        };
        let r = tenant_reader(&self.db, p.tenant_id).await?;
        let rows = session::Entity::find()
            .filter(session::Column::UserId.eq(*id))
            .filter(session::Column::TenantId.eq(p.tenant_id))
            .filter(session::Column::EndedAt.is_null())
            .order_by_desc(session::Column::CreatedAt)
            .all(&r)
            .await?;
        r.finish().await?;
        let now = Utc::now();
        Ok(rows
            .into_iter()
            .filter(|s| {
                now < s.absolute_expires_at
                    && (now - s.last_seen_at).num_seconds() < s.idle_timeout_secs
            })
            .map(|s| SessionInfo {
                current: s.id == *session_id,
                id: s.id,
                method: s.method,
                user_agent: s.user_agent,
                source_ip: s.source_ip,
                created_at: s.created_at,
                last_seen_at: s.last_seen_at,
                absolute_expires_at: s.absolute_expires_at,
            })
            .collect())
    }

    /// Ends one of the caller's own sessions; another user's session answers NotFound.
    pub async fn end_my_session(
        &self,
        p: &Principal,
        session_id: Uuid,
    ) -> Result<(), IdentityError> {
        let Subject::User { id, .. } = &p.subject else {
            return Err(IdentityError::NotFound(
                "API tokens have no sessions".into(),
            ));
        };
        let tx = anshin_platform::db::begin_tenant_write_tx(&self.db, p.tenant_id).await?;
        let r = session::Entity::update_many()
            .col_expr(session::Column::EndedAt, Expr::value(Utc::now()))
            .col_expr(session::Column::EndedReason, Expr::value("signed_out"))
            .filter(session::Column::Id.eq(session_id))
            .filter(session::Column::UserId.eq(*id))
            .filter(session::Column::TenantId.eq(p.tenant_id))
            .filter(session::Column::EndedAt.is_null())
            .exec(&tx)
            .await?;
        if r.rows_affected == 0 {
            return Err(IdentityError::NotFound(
                "no open session with this id is yours".into(),
            ));
        }
        crate::audit::record(
            &tx,
            AuditEvent::new(
                p.tenant_id,
                Actor::from_principal(p),
                "session.end",
                Outcome::Success,
            )
            .target(Target::new("session", session_id))
            .reason("signed_out"),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn end(&self, session_id: Uuid, reason: &str) -> Result<(), IdentityError> {
        let tx = begin_platform_tx(&self.db).await?;
        let r = session::Entity::update_many()
            .col_expr(session::Column::EndedAt, Expr::value(Utc::now()))
            .col_expr(session::Column::EndedReason, Expr::value(reason))
            .filter(session::Column::Id.eq(session_id))
            .filter(session::Column::EndedAt.is_null())
            .exec(&tx)
            .await?;
        if r.rows_affected == 1 {
            if let Some(s) = session::Entity::find_by_id(session_id).one(&tx).await? {
                crate::audit::record(
                    &tx,
                    AuditEvent::new(
                        s.tenant_id,
                        Actor::system("identity.session_timeout"),
                        "session.end",
                        Outcome::Success,
                    )
                    .target(Target::new("session", session_id))
                    .reason(reason)
                    .detail("user_id", s.user_id),
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- Step-up ------------------------------------------------------------------------

    /// For other services: refuse a sensitive action unless the person confirmed a passkey in
    /// this session within `within`. API tokens (machines) are not asked; their scope is the
    /// role they were issued with.
    pub async fn require_recent_step_up(
        &self,
        p: &Principal,
        within: Duration,
    ) -> Result<(), IdentityError> {
        let Subject::User { session_id, .. } = &p.subject else {
            return Ok(());
        };
        let tx = begin_platform_tx(&self.db).await?;
        let s = session::Entity::find_by_id(*session_id).one(&tx).await?;
        tx.commit().await?;
        let fresh = s
            .and_then(|s| s.stepped_up_at)
            .is_some_and(|t| Utc::now() - t <= within);
        if fresh {
            Ok(())
        } else {
            Err(IdentityError::StepUpRequired(format!(
                "confirm with your passkey (POST /api/v1/me/step-up/begin and finish) and try again within {} minutes",
                within.num_minutes()
            )))
        }
    }

    /// Starts a passkey confirmation for the signed-in person.
    pub async fn step_up_begin(
        &self,
        p: &Principal,
    ) -> Result<(Uuid, RequestChallengeResponse), IdentityError> {
        let Subject::User { id, .. } = &p.subject else {
            return Err(IdentityError::NotFound(
                "API tokens have no passkeys".into(),
            ));
        };
        self.passkey_challenge_for(*id).await
    }

    /// Finishes it: the session counts as freshly confirmed.
    pub async fn step_up_finish(
        &self,
        p: &Principal,
        ceremony_id: Uuid,
        response: &PublicKeyCredential,
    ) -> Result<(), IdentityError> {
        let Subject::User { id, session_id, .. } = &p.subject else {
            return Err(IdentityError::NotFound(
                "API tokens have no passkeys".into(),
            ));
        };
        let verified = match self.verify_passkey(ceremony_id, response).await {
            Ok(u) if u.id == *id => Ok(u),
            Ok(_) => Err(IdentityError::Ceremony(
                "the passkey belongs to another account".into(),
            )),
            Err(e) => Err(e),
        };
        if let Err(e) = &verified {
            crate::audit::record_now(
                &self.db,
                AuditEvent::new(
                    p.tenant_id,
                    Actor::from_principal(p),
                    "auth.step_up",
                    Outcome::Failure,
                )
                .reason(e.to_string()),
            )
            .await;
        }
        verified?;
        let tx = begin_platform_tx(&self.db).await?;
        session::Entity::update_many()
            .col_expr(session::Column::SteppedUpAt, Expr::value(Utc::now()))
            .filter(session::Column::Id.eq(*session_id))
            .exec(&tx)
            .await?;
        crate::audit::record(
            &tx,
            AuditEvent::new(
                p.tenant_id,
                Actor::from_principal(p),
                "auth.step_up",
                Outcome::Success,
            )
            .target(Target::new("session", *session_id)),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- Internals ----------------------------------------------------------------------

    /// The kind of a tenant that may still sign in (not suspended or destroyed), via tenancy's API.
    async fn active_tenant_kind(&self, tenant_id: Uuid) -> Result<Option<TenantKind>, Problem> {
        let t = anshin_tenancy::TenancyService::new(self.db.clone())
            .admin_find(&tenant_id.to_string())
            .await
            .map_err(Problem::from)?;
        Ok(t.filter(|t| {
            !matches!(
                t.status,
                anshin_tenancy::TenantStatus::Suspended | anshin_tenancy::TenantStatus::Destroyed
            )
        })
        .map(|t| t.kind))
    }

    pub(crate) async fn store_ceremony<S: Serialize>(
        &self,
        c: &impl ConnectionTrait,
        kind: &str,
        tenant_id: Uuid,
        user_id: Uuid,
        invitation_id: Option<Uuid>,
        state: &S,
    ) -> Result<Uuid, IdentityError> {
        let (id, row) = self.ceremony_row(kind, tenant_id, user_id, invitation_id, state)?;
        ceremony::Entity::insert(row)
            .exec_without_returning(c)
            .await?;
        Ok(id)
    }

    /// A new pending ceremony, expiring after the configured ceremony timeout.
    fn ceremony_row<S: Serialize>(
        &self,
        kind: &str,
        tenant_id: Uuid,
        user_id: Uuid,
        invitation_id: Option<Uuid>,
        state: &S,
    ) -> Result<(Uuid, ceremony::ActiveModel), IdentityError> {
        let now = Utc::now();
        let id = Uuid::now_v7();
        Ok((
            id,
            ceremony::ActiveModel {
                id: Set(id),
                kind: Set(kind.into()),
                tenant_id: Set(tenant_id),
                user_id: Set(user_id),
                invitation_id: Set(invitation_id),
                state: Set(serde_json::to_string(state)
                    .map_err(|e| IdentityError::Setup(e.to_string()))?),
                created_at: Set(now),
                expires_at: Set(now + Duration::seconds(self.cfg.ceremony_timeout_secs as i64)),
                consumed_at: Set(None),
            },
        ))
    }

    /// Marks a ceremony used and returns it with its decoded state; a replayed, expired or unknown
    /// one is refused.
    pub(crate) async fn consume_ceremony<S: serde::de::DeserializeOwned>(
        &self,
        id: Uuid,
        kind: &str,
    ) -> Result<(ceremony::Model, S), IdentityError> {
        let now = Utc::now();
        let tx = begin_platform_write_tx(&self.db).await?;
        let c = ceremony::Entity::find_by_id(id)
            .filter(ceremony::Column::Kind.eq(kind))
            .one(&tx)
            .await?
            .ok_or_else(|| IdentityError::Ceremony("unknown ceremony; start again".into()))?;
        let r = ceremony::Entity::update_many()
            .col_expr(ceremony::Column::ConsumedAt, Expr::value(now))
            .filter(ceremony::Column::Id.eq(id))
            .filter(ceremony::Column::ConsumedAt.is_null())
            .exec(&tx)
            .await?;
        tx.commit().await?;
        if r.rows_affected != 1 {
            return Err(IdentityError::Ceremony(
                "this challenge was already used; start again".into(),
            ));
        }
        if c.expires_at <= now {
            return Err(IdentityError::Ceremony(
                "this challenge has expired; start again".into(),
            ));
        }
        let state = serde_json::from_str(&c.state)
            .map_err(|e| IdentityError::Ceremony(format!("stored ceremony is unreadable: {e}")))?;
        Ok((c, state))
    }

    /// A person's passkeys and security keys.
    pub(crate) async fn authenticators_of(
        &self,
        c: &impl ConnectionTrait,
        user_id: Uuid,
    ) -> Result<(Vec<Passkey>, Vec<SecurityKey>), IdentityError> {
        let rows = credential::Entity::find()
            .filter(credential::Column::UserId.eq(user_id))
            .all(c)
            .await?;
        split_authenticators(rows)
    }

    pub(crate) async fn store_credential(
        &self,
        c: &impl ConnectionTrait,
        u: &user::Model,
        authenticator: &StoredAuthenticator,
        name: &str,
    ) -> Result<credential::Model, IdentityError> {
        let name: String = name
            .trim()
            .chars()
            .filter(|ch| !ch.is_control())
            .take(100)
            .collect();
        let m = credential::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(u.id),
            tenant_id: Set(u.tenant_id),
            name: Set(if name.is_empty() {
                match authenticator {
                    StoredAuthenticator::Passkey(_) => "パスキー".into(),
                    StoredAuthenticator::SecurityKey(_) => "セキュリティキー".into(),
                }
            } else {
                name
            }),
            kind: Set(authenticator.kind().into()),
            aaguid: Set(authenticator.aaguid().map(|a| a.to_string())),
            credential_id: Set(authenticator.cred_id()),
            passkey: Set(authenticator.to_row()?),
            created_at: Set(Utc::now()),
            last_used_at: Set(None),
        }
        .insert(c)
        .await
        .map_err(|e| {
            if anshin_platform::db::is_unique_violation(&e) {
                IdentityError::Conflict("this authenticator is already registered".into())
            } else {
                e.into()
            }
        })?;
        Ok(m)
    }

    /// A new session for `u` proven by `method`, in the caller's transaction.
    /// `email` is the account's opened address (opened before the caller's transaction).
    pub(crate) async fn create_session(
        &self,
        c: &impl ConnectionTrait,
        u: &user::Model,
        email: &str,
        method: &str,
        meta: ClientMeta,
    ) -> Result<NewSession, IdentityError> {
        let absolute = self.cfg.session_absolute_timeout_secs as i64;
        self.create_session_limited(c, u, email, method, meta, absolute)
            .await
    }

    /// A fresh session id every sign-in (no fixation): the cookie value is new and random.
    pub(crate) async fn create_session_limited(
        &self,
        c: &impl ConnectionTrait,
        u: &user::Model,
        email: &str,
        method: &str,
        meta: ClientMeta,
        absolute_secs: i64,
    ) -> Result<NewSession, IdentityError> {
        // The tenant's own idle timeout (identity policy), else the configured default.
        let idle = self.idle_timeout_secs(c, u.tenant_id).await?;
        let (s, writes) = self.session_writes(u, email, method, meta, absolute_secs, idle)?;
        for w in writes {
            c.execute(w).await?;
        }
        Ok(s)
    }

    /// A new session and the writes that create it: its row and its `auth.sign_in` audit event
    /// (each inserts one row).
    fn session_writes(
        &self,
        u: &user::Model,
        email: &str,
        method: &str,
        meta: ClientMeta,
        absolute_secs: i64,
        idle_timeout_secs: i64,
    ) -> Result<(NewSession, Vec<Statement>), IdentityError> {
        let backend = self.backend();
        let cookie = random_token();
        let csrf = random_token();
        let now = Utc::now();
        let session_id = Uuid::now_v7();
        let absolute_expires_at = now + Duration::seconds(absolute_secs);
        let row = session::ActiveModel {
            id: Set(session_id),
            token_hash: Set(sha256_hex(&cookie)),
            user_id: Set(u.id),
            tenant_id: Set(u.tenant_id),
            method: Set(method.into()),
            csrf_token: Set(csrf.clone()),
            user_agent: Set(meta.user_agent.map(|s| s.chars().take(512).collect())),
            source_ip: Set(meta.source_ip.map(|s| s.chars().take(64).collect())),
            created_at: Set(now),
            last_seen_at: Set(now),
            idle_timeout_secs: Set(idle_timeout_secs),
            absolute_expires_at: Set(absolute_expires_at),
            stepped_up_at: Set(
                (method.contains("passkey") || method.contains("security_key")).then_some(now),
            ),
            ended_at: Set(None),
            ended_reason: Set(None),
        };
        let mut writes = vec![session::Entity::insert(row).build(backend)];
        writes.extend(
            anshin_audit::record_statements(
                backend,
                &AuditEvent::new(
                    u.tenant_id,
                    crate::audit::user_actor(u, email).with_session(session_id),
                    "auth.sign_in",
                    Outcome::Success,
                )
                .target(Target::new("session", session_id))
                .detail("method", method)
                .detail("absolute_expires_at", absolute_expires_at),
            )
            .map_err(crate::audit::audit_err)?,
        );
        Ok((
            NewSession {
                session_id,
                cookie: Secret::new(cookie),
                csrf_token: csrf,
                user: UserInfo::from_model(u.clone(), email.to_string()),
                absolute_expires_at,
            },
            writes,
        ))
    }
}

/// A ceremony that exists and is neither used nor expired, with its decoded state.
fn usable_ceremony<S: serde::de::DeserializeOwned>(
    c: ceremony::Model,
) -> Result<(ceremony::Model, S), IdentityError> {
    if c.consumed_at.is_some() {
        return Err(IdentityError::Ceremony(
            "this challenge was already used; start again".into(),
        ));
    }
    if c.expires_at <= Utc::now() {
        return Err(IdentityError::Ceremony(
            "this challenge has expired; start again".into(),
        ));
    }
    let state = serde_json::from_str(&c.state)
        .map_err(|e| IdentityError::Ceremony(format!("stored ceremony is unreadable: {e}")))?;
    Ok((c, state))
}

/// Stored credentials as webauthn-rs authenticators: passkeys and security keys apart.
fn split_authenticators(
    rows: Vec<credential::Model>,
) -> Result<(Vec<Passkey>, Vec<SecurityKey>), IdentityError> {
    let mut passkeys = Vec::new();
    let mut keys = Vec::new();
    for r in rows {
        match StoredAuthenticator::from_row(&r.kind, &r.passkey)? {
            StoredAuthenticator::Passkey(p) => passkeys.push(p),
            StoredAuthenticator::SecurityKey(k) => keys.push(k),
        }
    }
    Ok((passkeys, keys))
}

async fn usable_invitation(
    c: &impl ConnectionTrait,
    token: &str,
) -> Result<invitation::Model, IdentityError> {
    let inv = invitation::Entity::find()
        .filter(invitation::Column::TokenHash.eq(sha256_hex(token)))
        .one(c)
        .await?
        .ok_or_else(|| IdentityError::NotFound("this enrollment link is not valid".into()))?;
    match inv.revoked_reason.as_deref() {
        Some("superseded") => {
            return Err(IdentityError::Conflict(
                "this enrollment link was replaced by a newer invitation of the same address; use the link of the newest invitation".into(),
            ))
        }
        Some(_) => {
            return Err(IdentityError::Conflict(
                "this enrollment link was revoked by an administrator; ask for a new invitation"
                    .into(),
            ))
        }
        None => {}
    }
    if inv.used_at.is_some() || inv.expires_at <= Utc::now() {
        return Err(IdentityError::Conflict(
            "this enrollment link was already used or has expired; ask for a new invitation".into(),
        ));
    }
    Ok(inv)
}

pub(crate) fn normalise_email(e: &str) -> Result<String, IdentityError> {
    let e = e.trim().to_lowercase();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
        })
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(e)
    } else {
        Err(IdentityError::Invalid("give a valid email address".into()))
    }
}

fn base64_url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// An unreachable key provider is an upstream outage (503); anything else is a setup fault.
pub(crate) fn key_error(e: anshin_keys::KeyError) -> IdentityError {
    match e {
        anshin_keys::KeyError::Unavailable(m) => IdentityError::Upstream(m),
        other => IdentityError::Setup(format!("keys: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            normalise_email(" Hanako@Example.JP ").unwrap(),
            "hanako@example.jp"
        );
        for bad in ["", "no-at", "@example.jp", "a@b", "a@.jp", "a b@example.jp"] {
            assert!(normalise_email(bad).is_err(), "{bad}");
        }
    }
}
