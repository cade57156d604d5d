//! Machine clients (guideline 14.1.2: authentication of programs that use the API).
//!
//! An admin registers a client for their tenant with a role and scopes; the client then obtains
//! short-lived access tokens at `POST /oauth2/token` with the OAuth 2.0 client-credentials grant
//! (RFC 6749 §4.4), authenticating with a client secret (`client_secret_basic`,
//! `client_secret_post`) or a signed assertion (`private_key_jwt`, RFC 7523). The access tokens
//! are JWTs signed by Anshin (ES256, key published at `/.well-known/jwks.json`); the API accepts
//! them as bearer tokens for as long as they are valid and the client is neither revoked nor its
//! tenant suspended.
//!
//! - [`registry`]: registration, listing and revocation (the management API).
//! - [`token`]: the token endpoint (client authentication, scope, issuance).
//! - [`jwt`]: Anshin's signing key, access-token claims, and their verification.
//! - [`http`]: the HTTP handlers.

pub mod http;
pub mod jwt;
pub mod registry;
pub mod token;

pub use jwt::TokenKeys;
pub use registry::{AuthMethod, ClientRegistration, ClientView, RegisteredClient};
pub use token::{OAuthErrorBody, TokenResponse};

use crate::error::IdentityError;
use anshin_platform::{Role, TenantKind};
use sea_orm::DatabaseConnection;
use std::sync::Arc;
use uuid::Uuid;

/// The scopes a client may hold. `read` allows safe methods only; `write` also allows methods
/// that change data (and only for roles that are not read-only); `keys` allows the key service's
/// data operations (data keys, transit encryption) for the client's own tenant — what the EMR
/// data plane needs, whatever else it may do. Auditors never hold `keys`.
pub const SCOPES: [&str; 3] = ["read", "write", "keys"];

/// `aud` of every access token Anshin issues.
pub const ACCESS_TOKEN_AUDIENCE: &str = "anshin-api";

/// Prefix of client ids (`anc_…`); secrets start with [`SECRET_PREFIX`].
pub const CLIENT_ID_PREFIX: &str = "anc_";
pub const SECRET_PREFIX: &str = "ancs_";

/// Roles a machine client may have: no admin (a client never manages people or clients) and no
/// maintainer (maintenance access is personal and goes through grants).
pub fn client_role_allowed(role: Role) -> bool {
    matches!(
        role,
        Role::ProviderOperator | Role::InstitutionStaff | Role::Auditor
    )
}

/// The identity service's machine-client side. Cheap to clone.
#[derive(Clone)]
pub struct ClientService {
    db: DatabaseConnection,
    /// `iss` of access tokens: the public URL without a trailing slash.
    issuer: String,
    /// `aud` client assertions must name: `<public URL>/oauth2/token`.
    token_endpoint: String,
    keys: TokenKeys,
    access_ttl_secs: i64,
    cache_ttl: std::time::Duration,
    tenancy: Arc<anshin_tenancy::TenancyService>,
}

impl ClientService {
    /// `access_ttl_secs` is the lifetime of issued access tokens (60–3600 s).
    pub fn new(
        db: DatabaseConnection,
        public_url: &str,
        keys: TokenKeys,
        access_ttl_secs: u64,
    ) -> Result<Self, IdentityError> {
        let url = url::Url::parse(public_url)
            .map_err(|e| IdentityError::Setup(format!("public URL: {e}")))?;
        if url.host_str().is_none() {
            return Err(IdentityError::Setup("the public URL has no host".into()));
        }
        let issuer = url.as_str().trim_end_matches('/').to_string();
        let access_ttl_secs = i64::try_from(access_ttl_secs.clamp(60, 3600)).unwrap_or(600);
        Ok(Self {
            token_endpoint: format!("{issuer}/oauth2/token"),
            issuer,
            keys,
            access_ttl_secs,
            cache_ttl: std::time::Duration::ZERO,
            tenancy: Arc::new(anshin_tenancy::TenancyService::new(db.clone())),
            db,
        })
    }

    /// Caches the state of clients seen by bearer authentication for `ttl` (revocations and
    /// suspensions made in this process take effect at once; elsewhere within `ttl`).
    pub fn with_auth_cache(mut self, ttl: std::time::Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// The URL client assertions must name as their audience.
    pub fn token_endpoint(&self) -> &str {
        &self.token_endpoint
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    /// The kind of a tenant that may still act: neither it nor its provider is suspended or
    /// destroyed.
    pub(crate) async fn active_tenant_kind(
        &self,
        tenant_id: Uuid,
    ) -> Result<Option<TenantKind>, IdentityError> {
        let find = |id: Uuid| async move {
            self.tenancy
                .admin_find(&id.to_string())
                .await
                .map_err(|e| IdentityError::Setup(e.to_string()))
        };
        let blocked = |s: anshin_tenancy::TenantStatus| {
            matches!(
                s,
                anshin_tenancy::TenantStatus::Suspended | anshin_tenancy::TenantStatus::Destroyed
            )
        };
        let Some(t) = find(tenant_id).await? else {
            return Ok(None);
        };
        if blocked(t.status) {
            return Ok(None);
        }
        if let Some(parent) = t.parent_id {
            match find(parent).await? {
                Some(p) if !blocked(p.status) => {}
                _ => return Ok(None),
            }
        }
        Ok(Some(t.kind))
    }
}

/// Scopes in canonical order (the order of [`SCOPES`]), without duplicates; an unknown scope is
/// an error naming it.
pub fn canonical_scopes<'a>(
    requested: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<String>, String> {
    let mut seen = [false; SCOPES.len()];
    for s in requested {
        match SCOPES.iter().position(|k| *k == s) {
            Some(i) => seen[i] = true,
            None => {
                let shown: String = s.chars().filter(|c| !c.is_control()).take(40).collect();
                return Err(format!(
                    "unknown scope '{shown}'; the scopes are {}",
                    SCOPES.join(", ")
                ));
            }
        }
    }
    Ok(SCOPES
        .iter()
        .zip(seen)
        .filter(|(_, on)| *on)
        .map(|(s, _)| (*s).to_string())
        .collect())
}

/// The `scope` parameter of a token request (RFC 6749 §3.3: space-separated scope tokens).
/// `None` when absent or empty; malformed or unknown scopes are an error.
pub fn parse_scope_param(param: Option<&str>) -> Result<Option<Vec<String>>, String> {
    let Some(p) = param else { return Ok(None) };
    if p.is_empty() {
        return Ok(None);
    }
    let tokens: Vec<&str> = p.split(' ').collect();
    let well_formed = tokens.iter().all(|t| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
    });
    if !well_formed {
        return Err("scope must be scope names separated by single spaces".into());
    }
    canonical_scopes(tokens).map(Some)
}

/// Whether a client of `role` may hold `scopes`: `write` only for roles that may change data.
pub fn scopes_fit_role(role: Role, scopes: &[String]) -> Result<(), String> {
    if role.is_read_only() && scopes.iter().any(|s| s == "write") {
        return Err(format!(
            "the role {role} is read-only, so a client with it cannot hold the write scope"
        ));
    }
    // Auditors read the trail; decrypting records is not part of auditing.
    if role == Role::Auditor && scopes.iter().any(|s| s == "keys") {
        return Err("an auditor client cannot hold the keys scope".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_canonical_and_checked() {
        assert_eq!(
            canonical_scopes(["write", "read", "write"]).unwrap(),
            vec!["read", "write"]
        );
        assert!(canonical_scopes(["admin"]).unwrap_err().contains("'admin'"));
        assert_eq!(canonical_scopes([]).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn scope_parameter_follows_rfc6749() {
        assert_eq!(parse_scope_param(None).unwrap(), None);
        assert_eq!(parse_scope_param(Some("")).unwrap(), None);
        assert_eq!(
            parse_scope_param(Some("write read")).unwrap(),
            Some(vec!["read".to_string(), "write".to_string()])
        );
        assert_eq!(
            parse_scope_param(Some("read")).unwrap(),
            Some(vec!["read".to_string()])
        );
        for bad in [
            "read  write",
            " read",
            "read\twrite",
            "re\"ad",
            "read\\",
            "keys:use",
        ] {
            assert!(parse_scope_param(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn write_needs_a_role_that_may_write() {
        let rw = vec!["read".to_string(), "write".to_string()];
        assert!(scopes_fit_role(Role::ProviderOperator, &rw).is_ok());
        assert!(scopes_fit_role(Role::Auditor, &rw).is_err());
        assert!(scopes_fit_role(Role::InstitutionStaff, &rw).is_err());
        assert!(scopes_fit_role(Role::Auditor, &["read".to_string()]).is_ok());
    }

    #[test]
    fn only_non_admin_roles_for_clients() {
        assert!(client_role_allowed(Role::ProviderOperator));
        assert!(client_role_allowed(Role::InstitutionStaff));
        assert!(client_role_allowed(Role::Auditor));
        assert!(!client_role_allowed(Role::ProviderAdmin));
        assert!(!client_role_allowed(Role::InstitutionAdmin));
        assert!(!client_role_allowed(Role::ProviderMaintainer));
    }
}
