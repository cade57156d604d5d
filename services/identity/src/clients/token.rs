//! The token endpoint (`POST /oauth2/token`): the client-credentials grant (RFC 6749 §4.4) with
//! client authentication by secret (`client_secret_basic`, `client_secret_post`) or by a signed
//! assertion (`private_key_jwt`, RFC 7523 §2.2), and bearer authentication with the access
//! tokens it issues.

use super::jwt::{looks_like_jwt, AccessClaims};
use super::registry::AuthMethod;
use super::{parse_scope_param, ClientService, ACCESS_TOKEN_AUDIENCE, CLIENT_ID_PREFIX};
use crate::entity::{api_client, client_assertion_jti};
use crate::error::IdentityError;
use crate::secrets::{constant_time_eq, sha256_hex};
use anshin_platform::db::begin_platform_tx;
use anshin_platform::error::Problem;
use anshin_platform::{Principal, Role, Subject, TenantKind};
use base64::Engine;
use chrono::Utc;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use utoipa::ToSchema;
use uuid::Uuid;

pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
pub const ASSERTION_TYPE_JWT_BEARER: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The furthest ahead a client assertion's `exp` may lie.
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 300;
/// Clock skew tolerated on client assertions.
pub const ASSERTION_LEEWAY_SECS: i64 = 30;
const MAX_ASSERTION_LEN: usize = 8192;
const MAX_JTI_LEN: usize = 255;

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenResponse {
    /// An ES256 JWT; send it as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the token expires.
    #[schema(example = 600)]
    pub expires_in: i64,
    /// The scopes granted, space-separated.
    #[schema(example = "read")]
    pub scope: String,
}

/// An error response of the token endpoint (RFC 6749 §5.2).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OAuthErrorBody {
    #[schema(example = "invalid_client")]
    pub error: String,
    pub error_description: String,
}

/// The form fields of a token request, for the OpenAPI document.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenRequestForm {
    /// `client_credentials`.
    #[schema(example = "client_credentials")]
    pub grant_type: String,
    /// Space-separated subset of the client's scopes; all of them when absent.
    pub scope: Option<String>,
    /// For `client_secret_post` (and optionally `private_key_jwt`).
    pub client_id: Option<String>,
    /// For `client_secret_post`; prefer HTTP Basic (`client_secret_basic`).
    pub client_secret: Option<String>,
    /// For `private_key_jwt`: `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`.
    pub client_assertion_type: Option<String>,
    /// For `private_key_jwt`: a JWT signed with the client's key; `iss` = `sub` = client id,
    /// `aud` = the token endpoint URL, `exp` at most 5 minutes ahead, a single-use `jti`.
    pub client_assertion: Option<String>,
}

fn oauth(code: &'static str, description: impl Into<String>) -> IdentityError {
    IdentityError::OAuth {
        code,
        description: description.into(),
    }
}

fn invalid_client(description: impl Into<String>) -> IdentityError {
    oauth("invalid_client", description)
}

/// The one description for a failed secret check: it does not tell an unknown client from a
/// wrong secret or a revoked client.
const CLIENT_AUTH_FAILED: &str = "client authentication failed";

/// Parses an `application/x-www-form-urlencoded` body; a parameter sent twice is an error
/// (RFC 6749 §3.2), and an empty value counts as absent.
pub fn parse_form(body: &[u8]) -> Result<HashMap<String, String>, IdentityError> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if v.is_empty() {
            continue;
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(oauth(
                "invalid_request",
                format!("the parameter {k} was sent more than once"),
            ));
        }
    }
    Ok(out)
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space, `%XX` a byte), as HTTP
/// Basic credentials of OAuth clients are encoded (RFC 6749 §2.3.1).
pub fn form_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `(client_id, client_secret)` of an `Authorization: Basic …` header; `Err` for another
/// scheme or a malformed value.
pub fn basic_credentials(header: &str) -> Result<(String, String), IdentityError> {
    let bad = || {
        invalid_client("the Authorization header must be HTTP Basic with the client id and secret")
    };
    let (scheme, rest) = header.trim().split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(bad());
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    let id = form_decode(id).ok_or_else(bad)?;
    let secret = form_decode(secret).ok_or_else(bad)?;
    if id.is_empty() || secret.is_empty() {
        return Err(bad());
    }
    Ok((id, secret))
}

/// The way the client authenticates in one request.
#[derive(Debug, PartialEq, Eq)]
enum ClientAuth {
    Secret {
        client_id: String,
        secret: String,
    },
    Assertion {
        assertion: String,
        client_id: Option<String>,
    },
}

/// Picks the one client authentication method of a request (RFC 6749 §2.3: never more).
fn client_auth(
    authorization: Option<&str>,
    form: &HashMap<String, String>,
) -> Result<ClientAuth, IdentityError> {
    let body_id = form.get("client_id").cloned();
    let body_secret = form.get("client_secret").cloned();
    let assertion = form.get("client_assertion").cloned();
    let assertion_type = form.get("client_assertion_type");
    let methods = usize::from(authorization.is_some())
        + usize::from(body_secret.is_some())
        + usize::from(assertion.is_some());
    if methods > 1 {
        return Err(oauth(
            "invalid_request",
            "use exactly one client authentication method (HTTP Basic, client_secret in the body, or client_assertion)",
        ));
    }
    if let Some(h) = authorization {
        let (client_id, secret) = basic_credentials(h)?;
        if body_id.as_deref().is_some_and(|b| b != client_id) {
            return Err(oauth(
                "invalid_request",
                "client_id in the body differs from the authenticated client",
            ));
        }
        return Ok(ClientAuth::Secret { client_id, secret });
    }
    if let Some(secret) = body_secret {
        let client_id = body_id.ok_or_else(|| {
            oauth(
                "invalid_request",
                "client_secret needs client_id in the body",
            )
        })?;
        return Ok(ClientAuth::Secret { client_id, secret });
    }
    if let Some(assertion) = assertion {
        if assertion_type.map(String::as_str) != Some(ASSERTION_TYPE_JWT_BEARER) {
            return Err(oauth(
                "invalid_request",
                format!("client_assertion_type must be {ASSERTION_TYPE_JWT_BEARER}"),
            ));
        }
        return Ok(ClientAuth::Assertion {
            assertion,
            client_id: body_id,
        });
    }
    Err(invalid_client(
        "authenticate the client: HTTP Basic with its id and secret, client_id and client_secret in the body, or a client_assertion",
    ))
}

/// `aud` of an assertion: one string or several.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, s: &str) -> bool {
        match self {
            Audience::One(a) => a == s,
            Audience::Many(v) => v.iter().any(|a| a == s),
        }
    }
}

/// The claims of a client assertion that Anshin checks.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AssertionClaims {
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub aud: Option<Audience>,
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
    pub iat: Option<i64>,
    pub jti: Option<String>,
}

/// RFC 7523 §3 checks of an assertion's claims, after its signature verified: `iss` and `sub`
/// are the client, `aud` names the token endpoint, it has not expired and expires within
/// [`MAX_ASSERTION_LIFETIME_SECS`], it is not for later, and it carries a usable `jti`.
pub fn check_assertion_claims(
    c: &AssertionClaims,
    client_id: &str,
    token_endpoint: &str,
    now: i64,
) -> Result<(), String> {
    if c.iss.as_deref() != Some(client_id) || c.sub.as_deref() != Some(client_id) {
        return Err("iss and sub of the client assertion must both be the client id".into());
    }
    if !c.aud.as_ref().is_some_and(|a| a.contains(token_endpoint)) {
        return Err(format!(
            "aud of the client assertion must be the token endpoint {token_endpoint}"
        ));
    }
    let exp = c.exp.ok_or("the client assertion must have exp")?;
    if exp <= now - ASSERTION_LEEWAY_SECS {
        return Err("the client assertion has expired".into());
    }
    if exp > now + MAX_ASSERTION_LIFETIME_SECS + ASSERTION_LEEWAY_SECS {
        return Err(format!(
            "exp of the client assertion may lie at most {MAX_ASSERTION_LIFETIME_SECS} seconds ahead"
        ));
    }
    if c.nbf.is_some_and(|n| n > now + ASSERTION_LEEWAY_SECS)
        || c.iat.is_some_and(|i| i > now + ASSERTION_LEEWAY_SECS)
    {
        return Err("the client assertion is not valid yet (nbf or iat lies in the future)".into());
    }
    match c.jti.as_deref() {
        Some(j) if !j.is_empty() && j.len() <= MAX_JTI_LEN && !j.chars().any(char::is_control) => {
            Ok(())
        }
        _ => Err(format!(
            "the client assertion must have a jti of 1–{MAX_JTI_LEN} characters, never reused"
        )),
    }
}

/// The verification key and algorithm of a registered public key: P-256 → ES256, Ed25519 →
/// EdDSA. Anything else is refused with a reason.
pub fn client_key(pem: &str) -> Result<(DecodingKey, Algorithm), String> {
    use p256::pkcs8::DecodePublicKey;
    if !pem.contains("-----BEGIN PUBLIC KEY-----") {
        return Err(
            "public_key_pem must be a public key in SPKI PEM (-----BEGIN PUBLIC KEY-----)".into(),
        );
    }
    if p256::PublicKey::from_public_key_pem(pem).is_ok() {
        let key = DecodingKey::from_ec_pem(pem.as_bytes())
            .map_err(|e| format!("public_key_pem is not a usable P-256 key: {e}"))?;
        return Ok((key, Algorithm::ES256));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem.as_bytes()) {
        if key.try_get_as_bytes().is_ok_and(|b| b.len() == 32) {
            return Ok((key, Algorithm::EdDSA));
        }
    }
    Err("public_key_pem must be a P-256 (ES256) or Ed25519 (EdDSA) public key in SPKI PEM".into())
}

/// What bearer authentication needs to know of a client, cached briefly.
#[derive(Debug, Clone)]
struct ClientState {
    id: Uuid,
    tenant_id: Uuid,
    tenant_kind: TenantKind,
    role: Role,
    scopes: Vec<String>,
}

struct CachedClient {
    state: ClientState,
    valid_until: std::time::Instant,
}

const MAX_CACHED_CLIENTS: usize = 10_000;

fn client_cache() -> &'static RwLock<HashMap<String, CachedClient>> {
    static CACHE: OnceLock<RwLock<HashMap<String, CachedClient>>> = OnceLock::new();
    CACHE.get_or_init(|| RwLock::new(HashMap::new()))
}

/// Drops every cached client state in this process (after a revocation).
pub fn forget_cached_clients() {
    if let Ok(mut c) = client_cache().write() {
        c.clear();
    }
}

impl ClientService {
    /// Answers a token request: `authorization` is the request's Authorization header, `form`
    /// its decoded body.
    pub async fn token(
        &self,
        authorization: Option<&str>,
        form: &HashMap<String, String>,
    ) -> Result<TokenResponse, IdentityError> {
        let r = self.token_checked(authorization, form).await;
        if let Err(IdentityError::OAuth { code, description }) = &r {
            if *code == "invalid_client" || *code == "unauthorized_client" {
                crate::audit::record_now(
                    self.db(),
                    crate::audit::AuditEvent::new(
                        crate::audit::NO_TENANT,
                        crate::audit::Actor::anonymous(form.get("client_id").map(String::as_str)),
                        "client.token",
                        crate::audit::Outcome::Failure,
                    )
                    .reason(description.clone())
                    .detail("error", code),
                )
                .await;
            }
        }
        r
    }

    async fn token_checked(
        &self,
        authorization: Option<&str>,
        form: &HashMap<String, String>,
    ) -> Result<TokenResponse, IdentityError> {
        match form.get("grant_type").map(String::as_str) {
            None => return Err(oauth("invalid_request", "grant_type is missing")),
            Some(GRANT_CLIENT_CREDENTIALS) => {}
            Some(_) => {
                return Err(oauth(
                    "unsupported_grant_type",
                    "only the client_credentials grant is supported",
                ))
            }
        }
        let requested = parse_scope_param(form.get("scope").map(String::as_str))
            .map_err(|e| oauth("invalid_scope", e))?;
        let client = match client_auth(authorization, form)? {
            ClientAuth::Secret { client_id, secret } => {
                self.check_secret(&client_id, &secret).await?
            }
            ClientAuth::Assertion {
                assertion,
                client_id,
            } => {
                self.check_assertion(&assertion, client_id.as_deref())
                    .await?
            }
        };
        let Some(_kind) = self.active_tenant_kind(client.tenant_id).await? else {
            return Err(oauth(
                "unauthorized_client",
                "the client's organisation is suspended or closed; no tokens are issued",
            ));
        };
        let held: Vec<String> = client
            .scopes
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let granted = match requested {
            None => held,
            Some(req) => {
                if let Some(extra) = req.iter().find(|s| !held.contains(s)) {
                    return Err(oauth(
                        "invalid_scope",
                        format!("the client does not hold the scope {extra}"),
                    ));
                }
                req
            }
        };
        let now = Utc::now();
        let claims = AccessClaims {
            iss: self.issuer().to_string(),
            sub: client.client_id.clone(),
            aud: ACCESS_TOKEN_AUDIENCE.into(),
            exp: now.timestamp() + self.access_ttl_secs,
            iat: now.timestamp(),
            jti: Uuid::new_v4().to_string(),
            tenant: client.tenant_id,
            role: client.role.clone(),
            scope: granted.join(" "),
        };
        let access_token = self.keys().sign(&claims)?;
        let tx = begin_platform_tx(self.db()).await?;
        api_client::Entity::update_many()
            .col_expr(api_client::Column::LastUsedAt, Expr::value(now))
            .filter(api_client::Column::Id.eq(client.id))
            .exec(&tx)
            .await?;
        crate::audit::record(
            &tx,
            crate::audit::AuditEvent::new(
                client.tenant_id,
                crate::audit::Actor {
                    kind: anshin_audit::ActorKind::Client,
                    id: Some(client.id.to_string()),
                    label: Some(client.client_id.clone()),
                    tenant_id: Some(client.tenant_id),
                    role: Some(client.role.clone()),
                    session_id: None,
                    grant_id: None,
                },
                "client.token",
                crate::audit::Outcome::Success,
            )
            .target(crate::audit::Target::new("access_token", &claims.jti))
            .detail("scope", &claims.scope),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(client = %client.id, client_id = %client.client_id, tenant = %client.tenant_id, scope = %claims.scope, token = %claims.jti, "access token issued");
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: self.access_ttl_secs,
            scope: claims.scope,
        })
    }

    async fn active_client(
        &self,
        client_id: &str,
    ) -> Result<Option<api_client::Model>, IdentityError> {
        if !client_id.starts_with(CLIENT_ID_PREFIX) || client_id.len() > 64 {
            return Ok(None);
        }
        let tx = begin_platform_tx(self.db()).await?;
        let m = api_client::Entity::find()
            .filter(api_client::Column::ClientId.eq(client_id))
            .one(&tx)
            .await?;
        tx.commit().await?;
        Ok(m.filter(|m| m.status == "active"))
    }

    async fn check_secret(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<api_client::Model, IdentityError> {
        let presented = sha256_hex(secret);
        let client = self.active_client(client_id).await?;
        let stored = client
            .as_ref()
            .filter(|c| c.auth_method == AuthMethod::ClientSecret.as_str())
            .and_then(|c| c.secret_hash.clone());
        // Compare even when there is nothing to compare with, so the time taken does not
        // tell an unknown client from a wrong secret.
        let expected = stored.clone().unwrap_or_else(|| "0".repeat(64));
        let matches = constant_time_eq(&presented, &expected);
        match (client, stored.is_some() && matches) {
            (Some(c), true) => Ok(c),
            _ => Err(invalid_client(CLIENT_AUTH_FAILED)),
        }
    }

    async fn check_assertion(
        &self,
        assertion: &str,
        body_client_id: Option<&str>,
    ) -> Result<api_client::Model, IdentityError> {
        let malformed = || invalid_client("the client assertion is not a well-formed JWT");
        if assertion.len() > MAX_ASSERTION_LEN || !looks_like_jwt(assertion) {
            return Err(malformed());
        }
        // Only to find the key: nothing of these claims is trusted before the signature is.
        let unverified: AssertionClaims =
            jsonwebtoken::dangerous::insecure_decode_claims(assertion).map_err(|_| malformed())?;
        let client_id = unverified
            .iss
            .clone()
            .ok_or_else(|| invalid_client("the client assertion has no iss"))?;
        if body_client_id.is_some_and(|b| b != client_id) {
            return Err(invalid_client(
                "client_id differs from the iss of the client assertion",
            ));
        }
        let client = self
            .active_client(&client_id)
            .await?
            .filter(|c| c.auth_method == AuthMethod::PrivateKeyJwt.as_str())
            .ok_or_else(|| invalid_client(CLIENT_AUTH_FAILED))?;
        let pem = client
            .public_key_pem
            .as_deref()
            .ok_or_else(|| invalid_client(CLIENT_AUTH_FAILED))?;
        let (key, alg) = client_key(pem).map_err(|_| invalid_client(CLIENT_AUTH_FAILED))?;
        let mut v = Validation::new(alg);
        v.leeway = ASSERTION_LEEWAY_SECS.unsigned_abs();
        v.set_issuer(&[&client_id]);
        v.set_audience(&[self.token_endpoint()]);
        v.sub = Some(client_id.clone());
        v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        let claims = jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &v)
            .map_err(|e| {
                invalid_client(match e.kind() {
                    ErrorKind::InvalidSignature => {
                        "the client assertion's signature does not verify with the client's registered key".to_string()
                    }
                    ErrorKind::InvalidAlgorithm => format!(
                        "the client assertion must be signed {alg:?}, the algorithm of the client's registered key"
                    ),
                    ErrorKind::ExpiredSignature => "the client assertion has expired".to_string(),
                    ErrorKind::InvalidAudience => format!(
                        "aud of the client assertion must be the token endpoint {}",
                        self.token_endpoint()
                    ),
                    ErrorKind::MissingRequiredClaim(c) => {
                        format!("the client assertion must have {c}")
                    }
                    ErrorKind::InvalidIssuer | ErrorKind::InvalidSubject => {
                        "iss and sub of the client assertion must both be the client id".to_string()
                    }
                    _ => "the client assertion is not a well-formed JWT".to_string(),
                })
            })?
            .claims;
        let now = Utc::now().timestamp();
        check_assertion_claims(&claims, &client_id, self.token_endpoint(), now)
            .map_err(invalid_client)?;
        // Single use: the jti is recorded until the assertion expires; a second use collides.
        let (jti, exp) = match (claims.jti, claims.exp) {
            (Some(j), Some(e)) => (j, e),
            _ => return Err(malformed()),
        };
        let expires_at = chrono::DateTime::from_timestamp(exp, 0).ok_or_else(malformed)?;
        let tx = begin_platform_tx(self.db()).await?;
        let inserted = client_assertion_jti::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(client.tenant_id),
            client_id: Set(client.id),
            jti: Set(jti),
            expires_at: Set(expires_at),
            used_at: Set(Utc::now()),
        }
        .insert(&tx)
        .await;
        match inserted {
            Ok(_) => tx.commit().await?,
            Err(e) if anshin_platform::db::is_unique_violation(&e) => {
                return Err(invalid_client(
                    "this client assertion was already used (its jti must be new every time)",
                ))
            }
            Err(e) => return Err(e.into()),
        }
        Ok(client)
    }

    /// The principal of an access token, if Anshin signed it for the API, it has not expired,
    /// its client is still active and the client's tenant may still act; `Ok(None)` otherwise.
    pub async fn authenticate_bearer(&self, token: &str) -> Result<Option<Principal>, Problem> {
        let Some(claims) = self.keys().verify(token, self.issuer()) else {
            return Ok(None);
        };
        let Some(state) = self
            .client_state(&claims.sub)
            .await
            .map_err(Problem::from)?
        else {
            return Ok(None);
        };
        if state.tenant_id != claims.tenant || state.role.as_str() != claims.role {
            return Ok(None);
        }
        // The token's scopes, as far as the client still holds them.
        let scopes: Vec<String> = claims
            .scope
            .split(' ')
            .filter(|s| state.scopes.iter().any(|h| h == s))
            .map(String::from)
            .collect();
        Ok(Some(Principal {
            subject: Subject::Client {
                id: state.id,
                client_id: claims.sub,
                scopes,
            },
            tenant_id: state.tenant_id,
            tenant_kind: state.tenant_kind,
            role: state.role,
            grant: None,
        }))
    }

    async fn client_state(&self, client_id: &str) -> Result<Option<ClientState>, IdentityError> {
        if !self.cache_ttl.is_zero() {
            if let Ok(c) = client_cache().read() {
                if let Some(hit) = c
                    .get(client_id)
                    .filter(|h| h.valid_until > std::time::Instant::now())
                {
                    return Ok(Some(hit.state.clone()));
                }
            }
        }
        let Some(m) = self.active_client(client_id).await? else {
            return Ok(None);
        };
        let Some(kind) = self.active_tenant_kind(m.tenant_id).await? else {
            return Ok(None);
        };
        let Some(role) = Role::parse(&m.role) else {
            return Ok(None);
        };
        let state = ClientState {
            id: m.id,
            tenant_id: m.tenant_id,
            tenant_kind: kind,
            role,
            scopes: m
                .scopes
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        };
        if !self.cache_ttl.is_zero() {
            if let Ok(mut c) = client_cache().write() {
                if c.len() >= MAX_CACHED_CLIENTS {
                    c.clear();
                }
                c.insert(
                    client_id.to_string(),
                    CachedClient {
                        state: state.clone(),
                        valid_until: std::time::Instant::now() + self.cache_ttl,
                    },
                );
            }
        }
        Ok(Some(state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EP: &str = "https://anshin.example.jp/oauth2/token";

    fn good(now: i64) -> AssertionClaims {
        AssertionClaims {
            iss: Some("anc_a".into()),
            sub: Some("anc_a".into()),
            aud: Some(Audience::One(EP.into())),
            exp: Some(now + 120),
            nbf: None,
            iat: Some(now),
            jti: Some("j-1".into()),
        }
    }

    #[test]
    fn assertion_claims_are_checked() {
        let now = 1_800_000_000;
        assert!(check_assertion_claims(&good(now), "anc_a", EP, now).is_ok());
        let many = AssertionClaims {
            aud: Some(Audience::Many(vec!["x".into(), EP.into()])),
            ..good(now)
        };
        assert!(check_assertion_claims(&many, "anc_a", EP, now).is_ok());
        let cases: Vec<(AssertionClaims, &str)> = vec![
            (
                AssertionClaims {
                    iss: Some("anc_b".into()),
                    ..good(now)
                },
                "iss",
            ),
            (
                AssertionClaims {
                    sub: None,
                    ..good(now)
                },
                "sub",
            ),
            (
                AssertionClaims {
                    aud: Some(Audience::One("https://anshin.example.jp".into())),
                    ..good(now)
                },
                "aud",
            ),
            (
                AssertionClaims {
                    aud: None,
                    ..good(now)
                },
                "aud",
            ),
            (
                AssertionClaims {
                    exp: None,
                    ..good(now)
                },
                "exp",
            ),
            (
                AssertionClaims {
                    exp: Some(now - 60),
                    ..good(now)
                },
                "expired",
            ),
            (
                AssertionClaims {
                    exp: Some(now + 3600),
                    ..good(now)
                },
                "seconds ahead",
            ),
            (
                AssertionClaims {
                    nbf: Some(now + 600),
                    ..good(now)
                },
                "not valid yet",
            ),
            (
                AssertionClaims {
                    iat: Some(now + 600),
                    ..good(now)
                },
                "not valid yet",
            ),
            (
                AssertionClaims {
                    jti: None,
                    ..good(now)
                },
                "jti",
            ),
            (
                AssertionClaims {
                    jti: Some(String::new()),
                    ..good(now)
                },
                "jti",
            ),
            (
                AssertionClaims {
                    jti: Some("x".repeat(256)),
                    ..good(now)
                },
                "jti",
            ),
        ];
        for (c, want) in cases {
            let e = check_assertion_claims(&c, "anc_a", EP, now).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
        // Within the tolerated skew.
        let skewed = AssertionClaims {
            exp: Some(now - 10),
            ..good(now)
        };
        assert!(check_assertion_claims(&skewed, "anc_a", EP, now).is_ok());
    }

    #[test]
    fn form_bodies_and_basic_credentials() {
        let f = parse_form(b"grant_type=client_credentials&scope=read+write&client_id=").unwrap();
        assert_eq!(f.get("scope").map(String::as_str), Some("read write"));
        assert!(!f.contains_key("client_id"), "empty counts as absent");
        assert!(parse_form(b"scope=read&scope=write").is_err());

        assert_eq!(form_decode("a%3Ab+c").as_deref(), Some("a:b c"));
        assert_eq!(form_decode("bad%2"), None);
        assert_eq!(form_decode("bad%zz"), None);

        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(
            basic_credentials(&format!("Basic {}", enc("anc_x:s%2Bcret"))).unwrap(),
            ("anc_x".to_string(), "s+cret".to_string())
        );
        assert!(basic_credentials(&format!("Bearer {}", enc("anc_x:s"))).is_err());
        assert!(basic_credentials("Basic !!!").is_err());
        assert!(basic_credentials(&format!("Basic {}", enc("no-colon"))).is_err());
        assert!(basic_credentials(&format!("Basic {}", enc("anc_x:"))).is_err());
    }

    #[test]
    fn exactly_one_client_authentication_method() {
        let form = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("anc_x:secret")
        );
        assert_eq!(
            client_auth(Some(&basic), &form(&[])).unwrap(),
            ClientAuth::Secret {
                client_id: "anc_x".into(),
                secret: "secret".into()
            }
        );
        assert!(client_auth(
            Some(&basic),
            &form(&[("client_secret", "s"), ("client_id", "anc_x")])
        )
        .is_err());
        assert!(client_auth(Some(&basic), &form(&[("client_id", "anc_y")])).is_err());
        assert_eq!(
            client_auth(
                None,
                &form(&[("client_id", "anc_x"), ("client_secret", "s")])
            )
            .unwrap(),
            ClientAuth::Secret {
                client_id: "anc_x".into(),
                secret: "s".into()
            }
        );
        assert!(client_auth(None, &form(&[("client_secret", "s")])).is_err());
        assert!(
            client_auth(None, &form(&[("client_assertion", "a.b.c")])).is_err(),
            "type needed"
        );
        assert_eq!(
            client_auth(
                None,
                &form(&[
                    ("client_assertion", "a.b.c"),
                    ("client_assertion_type", ASSERTION_TYPE_JWT_BEARER)
                ])
            )
            .unwrap(),
            ClientAuth::Assertion {
                assertion: "a.b.c".into(),
                client_id: None
            }
        );
        let e = client_auth(None, &form(&[])).unwrap_err();
        assert!(matches!(
            e,
            IdentityError::OAuth {
                code: "invalid_client",
                ..
            }
        ));
    }

    #[test]
    fn registered_keys_must_be_p256_or_ed25519() {
        use p256::pkcs8::{EncodePublicKey, LineEnding};
        let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let pem = sk.public_key().to_public_key_pem(LineEnding::LF).unwrap();
        let (_, alg) = client_key(&pem).unwrap();
        assert_eq!(alg, Algorithm::ES256);
        // An Ed25519 SPKI key (RFC 8410 example).
        let ed = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        assert_eq!(client_key(ed).unwrap().1, Algorithm::EdDSA);
        assert!(
            client_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err()
        );
        assert!(client_key("-----BEGIN PRIVATE KEY-----\n...").is_err());
    }
}
