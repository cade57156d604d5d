//! Registration, listing and revocation of machine clients: the management API. Admins register
//! clients in their own tenant; a client secret is shown once and only its SHA-256 is stored.

use super::{
    canonical_scopes, client_role_allowed, scopes_fit_role, token::client_key, ClientService,
    CLIENT_ID_PREFIX, SECRET_PREFIX,
};
use crate::access::require_admin;
use crate::entity::api_client;
use crate::error::IdentityError;
use crate::secrets::{random_token, sha256_hex};
use anshin_platform::db::{begin_tenant_tx, begin_tenant_write_tx, tenant_reader};
use anshin_platform::{Principal, Role};
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sea_orm::sea_query::Condition;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// How a client proves itself at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A secret issued at registration (`client_secret_basic` or `client_secret_post`).
    ClientSecret,
    /// An assertion signed with the client's private key (RFC 7523); Anshin keeps only the
    /// public key.
    PrivateKeyJwt,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecret => "client_secret",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "client_secret" => Some(AuthMethod::ClientSecret),
            "private_key_jwt" => Some(AuthMethod::PrivateKeyJwt),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientRegistration {
    /// What the client is, e.g. "電子カルテ本番環境 (鍵取得)".
    #[schema(example = "電子カルテ本番環境")]
    pub name: String,
    /// `provider_operator`, `institution_staff` or `auditor`, fitting the tenant.
    pub role: Role,
    /// `read`, and `write` for roles that may change data.
    #[schema(example = json!(["read"]))]
    pub scopes: Vec<String>,
    pub auth_method: AuthMethod,
    /// For `private_key_jwt`: the client's public key, SPKI PEM (`-----BEGIN PUBLIC KEY-----`),
    /// P-256 (assertions signed ES256) or Ed25519 (EdDSA).
    pub public_key_pem: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClientView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// What the client sends as `client_id` (and `iss`/`sub` of its assertions).
    #[schema(example = "anc_3q2-7wEd1vJm5Yk0p4lQxA")]
    pub client_id: String,
    pub name: String,
    pub role: Role,
    pub scopes: Vec<String>,
    pub auth_method: AuthMethod,
    /// For `private_key_jwt`: the algorithm its assertions must use (`ES256` or `EdDSA`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assertion_alg: Option<String>,
    /// `active` or `revoked`.
    pub status: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// When the client last obtained a token.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl ClientView {
    pub(crate) fn from_model(m: api_client::Model) -> Self {
        let method = AuthMethod::parse(&m.auth_method).unwrap_or(AuthMethod::ClientSecret);
        let assertion_alg = m
            .public_key_pem
            .as_deref()
            .and_then(|pem| client_key(pem).ok())
            .map(|(_, alg)| format!("{alg:?}"));
        Self {
            id: m.id,
            tenant_id: m.tenant_id,
            client_id: m.client_id,
            name: m.name,
            role: Role::parse(&m.role).unwrap_or(Role::Auditor),
            scopes: m
                .scopes
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            auth_method: method,
            assertion_alg,
            status: m.status,
            created_by: m.created_by,
            created_at: m.created_at,
            revoked_at: m.revoked_at,
            last_used_at: m.last_used_at,
        }
    }
}

/// A client just registered. `client_secret` is the only copy of the secret that will ever
/// exist; it is absent for `private_key_jwt` clients.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisteredClient {
    #[serde(flatten)]
    pub client: ClientView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Where the client obtains access tokens (and the `aud` of its assertions).
    pub token_endpoint: String,
}

fn new_client_id() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!(
        "{CLIENT_ID_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    )
}

impl ClientService {
    /// Registers a machine client in the caller's own tenant (admins only).
    pub async fn register(
        &self,
        actor: &Principal,
        r: ClientRegistration,
    ) -> Result<RegisteredClient, IdentityError> {
        require_admin(actor, "register machine clients")?;
        let name = r.name.trim();
        if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
            return Err(IdentityError::Invalid(
                "give a client name of 1–200 printable characters".into(),
            ));
        }
        if !client_role_allowed(r.role) {
            return Err(IdentityError::Invalid(format!(
                "a machine client cannot have the role {}: use provider_operator, institution_staff or auditor (admin and maintainer roles are for people)",
                r.role
            )));
        }
        if !r.role.fits(actor.tenant_kind) {
            return Err(IdentityError::Invalid(format!(
                "the role {} cannot belong to a {} tenant",
                r.role,
                actor.tenant_kind.as_str()
            )));
        }
        let scopes = canonical_scopes(r.scopes.iter().map(String::as_str))
            .map_err(IdentityError::Invalid)?;
        if scopes.is_empty() {
            return Err(IdentityError::Invalid(
                "give at least one scope: read, or read and write".into(),
            ));
        }
        scopes_fit_role(r.role, &scopes).map_err(IdentityError::Invalid)?;
        let (secret, public_key_pem) = match (r.auth_method, r.public_key_pem) {
            (AuthMethod::ClientSecret, None) => {
                (Some(format!("{SECRET_PREFIX}{}", random_token())), None)
            }
            (AuthMethod::ClientSecret, Some(_)) => {
                return Err(IdentityError::Invalid(
                    "public_key_pem is only for auth_method private_key_jwt".into(),
                ))
            }
            (AuthMethod::PrivateKeyJwt, None) => {
                return Err(IdentityError::Invalid(
                    "auth_method private_key_jwt needs public_key_pem (the client's public key, SPKI PEM)".into(),
                ))
            }
            (AuthMethod::PrivateKeyJwt, Some(pem)) => {
                let pem = pem.trim().to_string();
                if pem.len() > 8192 {
                    return Err(IdentityError::Invalid("public_key_pem is too long".into()));
                }
                client_key(&pem).map_err(IdentityError::Invalid)?;
                (None, Some(pem))
            }
        };
        let now = Utc::now();
        let tx = begin_tenant_tx(self.db(), actor.tenant_id).await?;
        let m = api_client::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(actor.tenant_id),
            client_id: Set(new_client_id()),
            name: Set(name.to_string()),
            role: Set(r.role.as_str().into()),
            scopes: Set(scopes.join(" ")),
            auth_method: Set(r.auth_method.as_str().into()),
            secret_hash: Set(secret.as_deref().map(sha256_hex)),
            public_key_pem: Set(public_key_pem),
            status: Set("active".into()),
            created_by: Set(actor.subject.label()),
            created_at: Set(now),
            revoked_at: Set(None),
            last_used_at: Set(None),
        }
        .insert(&tx)
        .await
        .map_err(|e| {
            if anshin_platform::db::is_unique_violation(&e) {
                IdentityError::Conflict("a client id collided; register again".into())
            } else {
                e.into()
            }
        })?;
        crate::audit::record(
            &tx,
            crate::audit::AuditEvent::new(
                m.tenant_id,
                crate::audit::Actor::from_principal(actor),
                "client.register",
                crate::audit::Outcome::Success,
            )
            .target(crate::audit::Target::new("api_client", m.id))
            .detail("client_id", &m.client_id)
            .detail("role", &m.role)
            .detail("auth_method", &m.auth_method),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(client = %m.id, client_id = %m.client_id, tenant = %m.tenant_id, role = %m.role, auth_method = %m.auth_method, "machine client registered");
        Ok(RegisteredClient {
            client: ClientView::from_model(m),
            client_secret: secret,
            token_endpoint: self.token_endpoint().to_string(),
        })
    }

    /// The machine clients of the caller's own tenant (admins and auditors), oldest first.
    pub async fn list(&self, actor: &Principal) -> Result<Vec<ClientView>, IdentityError> {
        if !matches!(
            actor.role,
            Role::ProviderAdmin | Role::InstitutionAdmin | Role::Auditor
        ) || actor.grant.is_some()
        {
            return Err(IdentityError::Forbidden(format!(
                "the role {} may not list machine clients",
                actor.role
            )));
        }
        let r = tenant_reader(self.db(), actor.tenant_id).await?;
        let rows = api_client::Entity::find()
            .filter(api_client::Column::TenantId.eq(actor.tenant_id))
            .order_by_asc(api_client::Column::CreatedAt)
            .all(&r)
            .await?;
        r.finish().await?;
        Ok(rows.into_iter().map(ClientView::from_model).collect())
    }

    /// Revokes a client of the caller's tenant (admins), named by its id or its `client_id`.
    /// Its access tokens stop working at once in this process (within the authentication cache
    /// time elsewhere) and it gets no new ones. Revoking twice reports the first revocation.
    pub async fn revoke(
        &self,
        actor: &Principal,
        id_or_client_id: &str,
    ) -> Result<ClientView, IdentityError> {
        let named = match Uuid::parse_str(id_or_client_id) {
            Ok(id) => Condition::all().add(api_client::Column::Id.eq(id)),
            Err(_) => Condition::all().add(api_client::Column::ClientId.eq(id_or_client_id)),
        };
        let tx = begin_tenant_write_tx(self.db(), actor.tenant_id).await?;
        let m = api_client::Entity::find()
            .filter(named)
            .filter(api_client::Column::TenantId.eq(actor.tenant_id))
            .one(&tx)
            .await?
            .ok_or_else(|| {
                IdentityError::NotFound("no machine client with this id in your tenant".into())
            })?;
        // Scope first (404 outside the tenant), then role (403), as everywhere.
        require_admin(actor, "revoke machine clients")?;
        let m = if m.status == "revoked" {
            m
        } else {
            let mut am: api_client::ActiveModel = m.into();
            am.status = Set("revoked".into());
            am.revoked_at = Set(Some(Utc::now()));
            let m = am.update(&tx).await?;
            crate::audit::record(
                &tx,
                crate::audit::AuditEvent::new(
                    m.tenant_id,
                    crate::audit::Actor::from_principal(actor),
                    "client.revoke",
                    crate::audit::Outcome::Success,
                )
                .target(crate::audit::Target::new("api_client", m.id))
                .detail("client_id", &m.client_id),
            )
            .await?;
            m
        };
        tx.commit().await?;
        super::token::forget_cached_clients();
        tracing::info!(client = %m.id, client_id = %m.client_id, tenant = %m.tenant_id, by = %actor.subject.label(), "machine client revoked");
        Ok(ClientView::from_model(m))
    }

    pub(crate) fn db(&self) -> &sea_orm::DatabaseConnection {
        &self.db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_random_and_prefixed() {
        let a = new_client_id();
        assert!(a.starts_with(CLIENT_ID_PREFIX));
        assert_eq!(a.len(), CLIENT_ID_PREFIX.len() + 22);
        assert_ne!(a, new_client_id());
        for m in [AuthMethod::ClientSecret, AuthMethod::PrivateKeyJwt] {
            assert_eq!(AuthMethod::parse(m.as_str()), Some(m));
        }
    }
}
