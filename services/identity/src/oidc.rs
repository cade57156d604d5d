//! Sign-in through a tenant's own OpenID Provider: authorization code flow with PKCE, `state`
//! and `nonce`, full ID-token validation, users bound by (issuer, subject). The provider's
//! sign-in counts as two factors only when its `amr` shows several factors or its `acr` is one
//! the tenant accepts; otherwise the person completes a passkey step-up before any session.

/// The key-service purpose of identity providers' client secrets.
const OIDC_SECRET_PURPOSE: &str = "identity.oidc-client-secret";

use crate::entity::{federated_identity, identity_provider, oidc_flow, user};
use crate::error::IdentityError;
use crate::secrets::sha256_hex;
use crate::service::{ClientMeta, IdentityService, NewSession};
use anshin_platform::db::{begin_platform_tx, begin_platform_write_tx, begin_tenant_write_tx};
use anshin_platform::{Principal, Role};
use chrono::{DateTime, Duration, Utc};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    SignatureVerificationError, TokenResponse,
};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use webauthn_rs::prelude::{PublicKeyCredential, RequestChallengeResponse};

const FLOW_TTL_MINUTES: i64 = 10;

/// A tenant's OpenID Provider settings as an admin sets them.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    #[schema(example = "https://login.hikari-hospital.example.jp")]
    pub issuer: String,
    pub client_id: String,
    /// Required the first time; omit to keep the stored secret.
    pub client_secret: Option<String>,
    /// Email domains whose people may sign in this way, e.g. `hikari-hospital.example.jp`.
    pub allowed_domains: Vec<String>,
    /// Role of accounts created on first sign-in.
    pub default_role: Role,
    /// Create an account on first sign-in (otherwise only invited, linked people may use it).
    pub jit_provisioning: bool,
    /// `acr` values that prove two-factor sign-in.
    #[serde(default)]
    pub accepted_acr: Vec<String>,
}

/// The stored settings, without the secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProviderView {
    pub issuer: String,
    pub client_id: String,
    pub allowed_domains: Vec<String>,
    pub default_role: Role,
    pub jit_provisioning: bool,
    pub accepted_acr: Vec<String>,
    pub updated_at: DateTime<Utc>,
}

impl ProviderView {
    fn from_model(m: &identity_provider::Model) -> Self {
        Self {
            issuer: m.issuer.clone(),
            client_id: m.client_id.clone(),
            allowed_domains: split_list(&m.allowed_domains),
            default_role: Role::parse(&m.default_role).unwrap_or(Role::Auditor),
            jit_provisioning: m.jit_provisioning,
            accepted_acr: split_list(&m.accepted_acr),
            updated_at: m.updated_at,
        }
    }
}

pub enum OidcOutcome {
    SignedIn(NewSession),
    /// The provider did not prove two factors: finish with a passkey on this flow.
    StepUp {
        flow_id: Uuid,
    },
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

/// RFC 8176 methods, by factor class. `mfa` says several factors outright.
fn proves_two_factors(amr: &[String]) -> bool {
    if amr.iter().any(|m| m == "mfa") {
        return true;
    }
    let class = |m: &str| match m {
        "pwd" | "pin" | "kba" => Some(0),
        "otp" | "hwk" | "swk" | "sms" | "tel" | "sc" => Some(1),
        "fpt" | "face" | "iris" | "retina" | "vbm" | "user" => Some(2),
        _ => None,
    };
    let mut classes: Vec<u8> = amr.iter().filter_map(|m| class(m)).collect();
    classes.sort_unstable();
    classes.dedup();
    classes.len() >= 2
}

fn federation(msg: impl std::fmt::Display) -> IdentityError {
    IdentityError::Federation(msg.to_string())
}

impl IdentityService {
    fn redirect_uri(&self) -> Result<RedirectUrl, IdentityError> {
        let u = self
            .public_url()
            .join("/auth/oidc/callback")
            .map_err(|e| IdentityError::Setup(e.to_string()))?;
        RedirectUrl::new(u.to_string()).map_err(|e| IdentityError::Setup(e.to_string()))
    }

    pub async fn set_identity_provider(
        &self,
        actor: &Principal,
        s: ProviderSettings,
    ) -> Result<ProviderView, IdentityError> {
        if !matches!(actor.role, Role::ProviderAdmin | Role::InstitutionAdmin) {
            return Err(IdentityError::Forbidden(format!(
                "the role {} may not configure sign-in",
                actor.role
            )));
        }
        self.require_recent_step_up(actor, Duration::minutes(5))
            .await?;
        let issuer = url::Url::parse(s.issuer.trim())
            .ok()
            .filter(|u| {
                let loopback = matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
                (u.scheme() == "https" || (u.scheme() == "http" && loopback)) && u.host_str().is_some() && u.query().is_none()
            })
            .ok_or_else(|| IdentityError::Invalid("the issuer must be an https URL without a query (plain http only on this machine's loopback)".into()))?;
        if s.client_id.trim().is_empty() || s.client_id.len() > 255 {
            return Err(IdentityError::Invalid(
                "give the client id the provider issued".into(),
            ));
        }
        if !s.default_role.fits(actor.tenant_kind) {
            return Err(IdentityError::Invalid(format!(
                "the role {} cannot belong to this tenant",
                s.default_role
            )));
        }
        let domains: Vec<String> = s
            .allowed_domains
            .iter()
            .map(|d| d.trim().to_lowercase())
            .filter(|d| !d.is_empty())
            .collect();
        if domains.is_empty()
            || domains
                .iter()
                .any(|d| !d.contains('.') || d.contains('@') || d.contains(','))
        {
            return Err(IdentityError::Invalid(
                "list at least one email domain such as hospital.example.jp".into(),
            ));
        }
        let context = format!("identity-provider:{}", actor.tenant_id);
        // Sealed before the write transaction: the key service stores the data key in its own.
        let fresh = match &s.client_secret {
            Some(secret) if !secret.is_empty() => Some(
                self.seal_secret(actor.tenant_id, OIDC_SECRET_PURPOSE, &context, secret)
                    .await?,
            ),
            _ => None,
        };
        let tx = begin_tenant_write_tx(self.db(), actor.tenant_id).await?;
        let existing = identity_provider::Entity::find_by_id(actor.tenant_id)
            .one(&tx)
            .await?;
        let sealed = match (fresh, &existing) {
            (Some(sealed), _) => sealed,
            (None, Some(e)) => e.client_secret_sealed.clone(),
            _ => return Err(IdentityError::Invalid("give the client secret".into())),
        };
        let am = identity_provider::ActiveModel {
            tenant_id: Set(actor.tenant_id),
            issuer: Set(issuer.as_str().trim_end_matches('/').to_string()),
            client_id: Set(s.client_id.trim().to_string()),
            client_secret_sealed: Set(sealed),
            allowed_domains: Set(domains.join(",")),
            default_role: Set(s.default_role.as_str().into()),
            jit_provisioning: Set(s.jit_provisioning),
            accepted_acr: Set(s
                .accepted_acr
                .iter()
                .map(|a| a.trim())
                .filter(|a| !a.is_empty())
                .collect::<Vec<_>>()
                .join(",")),
            updated_at: Set(Utc::now()),
        };
        let m = if existing.is_some() {
            am.update(&tx).await?
        } else {
            am.insert(&tx).await?
        };
        let view = ProviderView::from_model(&m);
        crate::audit::record(
            &tx,
            crate::audit::AuditEvent::new(
                actor.tenant_id,
                crate::audit::Actor::from_principal(actor),
                "identity_provider.update",
                crate::audit::Outcome::Success,
            )
            .target(crate::audit::Target::new("tenant", actor.tenant_id))
            .detail("settings", &view),
        )
        .await?;
        tx.commit().await?;
        Ok(view)
    }

    pub async fn identity_provider(
        &self,
        actor: &Principal,
    ) -> Result<Option<ProviderView>, IdentityError> {
        let r = anshin_platform::db::tenant_reader(self.db(), actor.tenant_id).await?;
        let m = identity_provider::Entity::find_by_id(actor.tenant_id)
            .one(&r)
            .await?;
        r.finish().await?;
        Ok(m.as_ref().map(ProviderView::from_model))
    }

    /// A client for the tenant's provider, from its cached documents (`fresh`: fetched again,
    /// for an ID token signed with a key the cached set lacks).
    async fn oidc_client(
        &self,
        p: &identity_provider::Model,
        fresh: bool,
    ) -> Result<
        (
            CoreClient<
                openidconnect::EndpointSet,
                openidconnect::EndpointNotSet,
                openidconnect::EndpointNotSet,
                openidconnect::EndpointNotSet,
                openidconnect::EndpointMaybeSet,
                openidconnect::EndpointMaybeSet,
            >,
            IssuerUrl,
        ),
        IdentityError,
    > {
        let issuer = IssuerUrl::new(p.issuer.clone()).map_err(federation)?;
        let metadata = self
            .provider_metadata()
            .get(&issuer, self.http(), fresh)
            .await
            .map_err(|e| {
                federation(format!(
                    "the organisation's sign-in service could not be used: {e}"
                ))
            })?;
        let secret = self
            .open_secret(
                p.tenant_id,
                OIDC_SECRET_PURPOSE,
                &format!("identity-provider:{}", p.tenant_id),
                &p.client_secret_sealed,
            )
            .await?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(p.client_id.clone()),
            Some(ClientSecret::new(secret)),
        )
        .set_redirect_uri(self.redirect_uri()?);
        Ok((client, issuer))
    }

    /// Starts a sign-in with the organisation `org` (a tenant slug); returns where to send the browser.
    pub async fn oidc_start(
        &self,
        org: &str,
        login_hint: Option<&str>,
    ) -> Result<url::Url, IdentityError> {
        let tenant = anshin_tenancy::TenancyService::new(self.db().clone())
            .admin_find(org)
            .await
            .map_err(|e| IdentityError::Setup(e.to_string()))?
            .ok_or_else(|| {
                IdentityError::NotFound("no organisation with this sign-in name".into())
            })?;
        // Read, then build the client (provider discovery over HTTP, opening the client secret
        // through the key service) outside any write transaction: on SQLite a write held across
        // those calls would block every other writer, the key service's own bookkeeping included.
        let tx = begin_platform_tx(self.db()).await?;
        let p = identity_provider::Entity::find_by_id(tenant.id)
            .one(&tx)
            .await?;
        tx.commit().await?;
        let p = p.ok_or_else(|| {
            IdentityError::NotFound(
                "this organisation has not set up sign-in with its own account".into(),
            )
        })?;
        let (client, _) = self.oidc_client(&p, false).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge);
        if let Some(h) = login_hint
            .map(str::trim)
            .filter(|h| !h.is_empty() && h.len() <= 254)
        {
            req = req.add_extra_param("login_hint", h.to_string());
        }
        let (url, state, nonce) = req.url();
        let now = Utc::now();
        let tx = begin_platform_write_tx(self.db()).await?;
        oidc_flow::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(tenant.id),
            state_hash: Set(sha256_hex(state.secret())),
            nonce: Set(nonce.secret().clone()),
            pkce_verifier: Set(verifier.secret().clone()),
            created_at: Set(now),
            expires_at: Set(now + Duration::minutes(FLOW_TTL_MINUTES)),
            consumed_at: Set(None),
            step_up_user_id: Set(None),
            step_up_done_at: Set(None),
        }
        .insert(&tx)
        .await?;
        tx.commit().await?;
        Ok(url)
    }

    /// Handles the provider's redirect back: validates everything, binds the user, and either
    /// signs in or asks for a passkey step-up.
    pub async fn oidc_callback(
        &self,
        state: &str,
        code: &str,
        meta: ClientMeta,
    ) -> Result<OidcOutcome, IdentityError> {
        let r = self.oidc_callback_checked(state, code, meta).await;
        if let Err(e @ (IdentityError::Federation(_) | IdentityError::Forbidden(_))) = &r {
            crate::audit::record_now(
                self.db(),
                crate::audit::AuditEvent::new(
                    crate::audit::NO_TENANT,
                    crate::audit::Actor::anonymous(None),
                    "auth.sign_in",
                    crate::audit::Outcome::Failure,
                )
                .reason(e.to_string())
                .detail("method", "oidc"),
            )
            .await;
            // When the response belongs to a sign-in started here, its organisation sees the
            // refusal in its own trail too.
            if let Some(tenant) = self.flow_tenant(state).await {
                crate::audit::record_now(
                    self.db(),
                    crate::audit::AuditEvent::new(
                        tenant,
                        crate::audit::Actor::anonymous(None),
                        "auth.sign_in",
                        crate::audit::Outcome::Failure,
                    )
                    .reason(e.to_string())
                    .detail("method", "oidc"),
                )
                .await;
            }
        }
        r
    }

    /// The tenant whose sign-in a provider's `state` belongs to, if it names one started here.
    async fn flow_tenant(&self, state: &str) -> Option<Uuid> {
        let found = async {
            let tx = begin_platform_tx(self.db()).await?;
            let f = oidc_flow::Entity::find()
                .filter(oidc_flow::Column::StateHash.eq(sha256_hex(state)))
                .one(&tx)
                .await?;
            tx.commit().await?;
            Ok::<_, sea_orm::DbErr>(f)
        }
        .await;
        match found {
            Ok(f) => f.map(|f| f.tenant_id),
            Err(e) => {
                tracing::error!(error = %e, "could not tell which tenant a refused OIDC sign-in aimed at");
                None
            }
        }
    }

    async fn oidc_callback_checked(
        &self,
        state: &str,
        code: &str,
        meta: ClientMeta,
    ) -> Result<OidcOutcome, IdentityError> {
        let now = Utc::now();
        let tx = begin_platform_write_tx(self.db()).await?;
        let flow = oidc_flow::Entity::find()
            .filter(oidc_flow::Column::StateHash.eq(sha256_hex(state)))
            .one(&tx)
            .await?
            .ok_or_else(|| federation("the sign-in response does not belong to a sign-in started here (state mismatch); start again"))?;
        let consumed = oidc_flow::Entity::update_many()
            .col_expr(oidc_flow::Column::ConsumedAt, Expr::value(now))
            .filter(oidc_flow::Column::Id.eq(flow.id))
            .filter(oidc_flow::Column::ConsumedAt.is_null())
            .exec(&tx)
            .await?;
        let p = identity_provider::Entity::find_by_id(flow.tenant_id)
            .one(&tx)
            .await?;
        tx.commit().await?;
        if consumed.rows_affected != 1 {
            return Err(federation(
                "this sign-in response was already used; start again",
            ));
        }
        if flow.expires_at <= now {
            return Err(federation("the sign-in took too long; start again"));
        }
        let p = p.ok_or_else(|| federation("the organisation no longer signs in this way"))?;
        let (client, issuer) = self.oidc_client(&p, false).await?;
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(federation)?
            .set_pkce_verifier(PkceCodeVerifier::new(flow.pkce_verifier.clone()))
            .request_async(self.http())
            .await
            .map_err(|e| federation(format!("the provider refused the authorization code: {e}")))?;
        let id_token = token
            .id_token()
            .ok_or_else(|| federation("the provider returned no ID token"))?;
        let nonce = Nonce::new(flow.nonce.clone());
        let claims = match id_token.claims(&client.id_token_verifier(), &nonce) {
            Ok(c) => c.clone(),
            // The provider signs with a key the cached set lacks (it rotated): fetch its
            // documents again and check the same token with the new set.
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                let (fresh, _) = self.oidc_client(&p, true).await?;
                let verifier = fresh.id_token_verifier();
                let claims = id_token
                    .claims(&verifier, &nonce)
                    .map_err(|e| federation(format!("the ID token is not valid: {e}")))?
                    .clone();
                claims
            }
            Err(e) => return Err(federation(format!("the ID token is not valid: {e}"))),
        };
        let subject = claims.subject().as_str().to_string();
        let mut email = claims.email().map(|e| e.as_str().to_lowercase());
        let mut verified = claims.email_verified().unwrap_or(false);
        let mut name = claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str().to_string());
        if email.is_none() {
            // Conformant providers may keep profile claims out of the ID token; ask userinfo,
            // which the library checks is about the same subject.
            let info: openidconnect::core::CoreUserInfoClaims = client
                .user_info(token.access_token().clone(), Some(claims.subject().clone()))
                .map_err(federation)?
                .request_async(self.http())
                .await
                .map_err(|e| {
                    federation(format!("the provider's userinfo could not be read: {e}"))
                })?;
            email = info.email().map(|e| e.as_str().to_lowercase());
            verified = info.email_verified().unwrap_or(false);
            name = name.or_else(|| {
                info.name()
                    .and_then(|n| n.get(None))
                    .map(|n| n.as_str().to_string())
            });
        }
        let amr: Vec<String> = claims
            .auth_method_refs()
            .map(|v| v.iter().map(|m| m.as_str().to_string()).collect())
            .unwrap_or_default();
        let acr = claims.auth_context_ref().map(|a| a.as_str().to_string());
        let domains = split_list(&p.allowed_domains);
        let email_ok = email.as_deref().is_some_and(|e| {
            verified
                && e.rsplit_once('@')
                    .is_some_and(|(_, d)| domains.iter().any(|a| a == d))
        });
        if !email_ok {
            return Err(IdentityError::Forbidden("your organisation account's email address is not verified or not in a domain allowed to sign in here".into()));
        }
        let email = email.unwrap_or_default();
        let two_factors = proves_two_factors(&amr)
            || acr
                .as_deref()
                .is_some_and(|a| split_list(&p.accepted_acr).iter().any(|x| x == a));
        let u = self
            .bind_federated_user(&p, issuer.as_str(), &subject, &email, name)
            .await?;
        if two_factors {
            let email = self.user_email(&u).await?;
            let tx = begin_platform_write_tx(self.db()).await?;
            let s = self
                .create_session(&tx, &u, &email, "oidc_mfa", meta)
                .await?;
            tx.commit().await?;
            return Ok(OidcOutcome::SignedIn(s));
        }
        if !self.has_passkey(u.id).await? {
            return Err(IdentityError::Forbidden("your organisation's sign-in did not prove a second factor, and you have no passkey to add one; ask your administrator for an invitation to register a passkey".into()));
        }
        let tx = begin_platform_tx(self.db()).await?;
        oidc_flow::Entity::update_many()
            .col_expr(oidc_flow::Column::StepUpUserId, Expr::value(u.id))
            .filter(oidc_flow::Column::Id.eq(flow.id))
            .exec(&tx)
            .await?;
        tx.commit().await?;
        Ok(OidcOutcome::StepUp { flow_id: flow.id })
    }

    async fn bind_federated_user(
        &self,
        p: &identity_provider::Model,
        issuer: &str,
        subject: &str,
        email: &str,
        name: Option<String>,
    ) -> Result<user::Model, IdentityError> {
        // The address's index (of the address normalised like typed ones, so an invited account
        // is found), and its sealed form for an account provisioned just in time: both before
        // the write transaction, as both may write key material on first use.
        let address = crate::service::normalise_email(email).unwrap_or_else(|_| email.to_string());
        let email = self.email_key(address).await?;
        let provisioned = if p.jit_provisioning {
            let id = Uuid::now_v7();
            Some((id, self.seal_email(p.tenant_id, id, &email.address).await?))
        } else {
            None
        };
        let tx = begin_platform_write_tx(self.db()).await?;
        let bound = federated_identity::Entity::find()
            .filter(federated_identity::Column::Issuer.eq(issuer))
            .filter(federated_identity::Column::Subject.eq(subject))
            .one(&tx)
            .await?;
        let u = match bound {
            Some(b) => user::Entity::find_by_id(b.user_id).one(&tx).await?,
            None => {
                // Link an invited account of the same tenant by its (verified, allowed) email, or
                // create one when the tenant allows just-in-time provisioning.
                let existing = user::Entity::find().filter(email.users()).one(&tx).await?;
                let u = match (existing, provisioned) {
                    (Some(u), _) if u.tenant_id == p.tenant_id => u,
                    (Some(_), _) => return Err(IdentityError::Conflict("this email address belongs to an account of another organisation".into())),
                    (None, Some((id, sealed))) => {
                        user::ActiveModel {
                            id: Set(id),
                            tenant_id: Set(p.tenant_id),
                            email_sealed: Set(sealed),
                            email_index: Set(Some(email.index.clone())),
                            display_name: Set(name.unwrap_or_else(|| email.address.clone()).chars().take(200).collect()),
                            role: Set(p.default_role.clone()),
                            status: Set("active".into()),
                            created_at: Set(Utc::now()),
                            last_sign_in_at: Set(None),
                            stale_flagged_at: Set(None),
                        }
                        .insert(&tx)
                        .await?
                    }
                    (None, None) => return Err(IdentityError::Forbidden("there is no account for you here yet; ask your administrator for an invitation".into())),
                };
                federated_identity::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    user_id: Set(u.id),
                    tenant_id: Set(p.tenant_id),
                    issuer: Set(issuer.to_string()),
                    subject: Set(subject.to_string()),
                    created_at: Set(Utc::now()),
                }
                .insert(&tx)
                .await?;
                Some(u)
            }
        };
        let u = u
            .filter(|u| u.status == "active" && u.tenant_id == p.tenant_id)
            .ok_or_else(|| IdentityError::Forbidden("this account is disabled".into()))?;
        tx.commit().await?;
        Ok(u)
    }

    /// Starts the passkey step-up of a provider sign-in that did not prove two factors.
    pub async fn oidc_step_up_begin(
        &self,
        flow_id: Uuid,
    ) -> Result<(Uuid, RequestChallengeResponse), IdentityError> {
        let flow = self.step_up_flow(flow_id).await?;
        let user_id = flow
            .step_up_user_id
            .ok_or_else(|| federation("this sign-in needs no step-up"))?;
        self.passkey_challenge_for(user_id).await
    }

    pub async fn oidc_step_up_finish(
        &self,
        flow_id: Uuid,
        ceremony_id: Uuid,
        response: &PublicKeyCredential,
        meta: ClientMeta,
    ) -> Result<NewSession, IdentityError> {
        let flow = self.step_up_flow(flow_id).await?;
        let verified = match self.verify_passkey(ceremony_id, response).await {
            Ok(u) if Some(u.id) == flow.step_up_user_id => Ok(u),
            Ok(_) => Err(IdentityError::Ceremony(
                "the passkey belongs to another account than the organisation sign-in".into(),
            )),
            Err(e) => Err(e),
        };
        let u = match verified {
            Ok(u) => u,
            Err(e @ IdentityError::Ceremony(_)) => {
                // The organisation and the person are known from the flow: a refused passkey
                // step-up is a refused sign-in in that tenant's trail.
                let mut ev = crate::audit::AuditEvent::new(
                    flow.tenant_id,
                    crate::audit::Actor::anonymous(None),
                    "auth.sign_in",
                    crate::audit::Outcome::Failure,
                )
                .reason(e.to_string())
                .detail("method", "oidc+passkey")
                .detail("flow_id", flow.id);
                if let Some(user_id) = flow.step_up_user_id {
                    ev = ev.target(crate::audit::Target::new("user", user_id));
                }
                crate::audit::record_now(self.db(), ev).await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let email = self.user_email(&u).await?;
        let tx = begin_platform_write_tx(self.db()).await?;
        let done = oidc_flow::Entity::update_many()
            .col_expr(oidc_flow::Column::StepUpDoneAt, Expr::value(Utc::now()))
            .filter(oidc_flow::Column::Id.eq(flow.id))
            .filter(oidc_flow::Column::StepUpDoneAt.is_null())
            .exec(&tx)
            .await?;
        if done.rows_affected != 1 {
            return Err(federation("this step-up was already completed"));
        }
        let s = self
            .create_session(&tx, &u, &email, "oidc+passkey", meta)
            .await?;
        tx.commit().await?;
        Ok(s)
    }

    async fn step_up_flow(&self, flow_id: Uuid) -> Result<oidc_flow::Model, IdentityError> {
        let tx = begin_platform_tx(self.db()).await?;
        let f = oidc_flow::Entity::find_by_id(flow_id).one(&tx).await?;
        tx.commit().await?;
        f.filter(|f| {
            f.expires_at > Utc::now() && f.step_up_done_at.is_none() && f.step_up_user_id.is_some()
        })
        .ok_or_else(|| federation("this step-up is unknown, finished or expired; sign in again"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amr_classes() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(proves_two_factors(&v(&["mfa"])));
        assert!(proves_two_factors(&v(&["pwd", "otp"])));
        assert!(proves_two_factors(&v(&["hwk", "fpt"])));
        assert!(!proves_two_factors(&v(&["pwd"])));
        assert!(
            !proves_two_factors(&v(&["pwd", "pin"])),
            "two knowledge factors are one class"
        );
        assert!(!proves_two_factors(&v(&[])));
    }
}
