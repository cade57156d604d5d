//! API tokens for machine clients: random, shown once, stored only as a SHA-256 hash.
//!
//! SHA-256 rather than a password hash is deliberate: tokens carry 256 bits of randomness, so
//! there is nothing to brute-force, and every API request verifies one.

use crate::entity::{api_token, tenant};
use crate::model::TenantStatus;
use crate::TenancyError;
use anshin_audit::{Actor, AuditEvent, Outcome, Target};
use anshin_platform::db::{begin_platform_tx, begin_platform_write_tx};
use anshin_platform::error::Problem;
use anshin_platform::http::Authenticator;
use anshin_platform::secret::Secret;
use anshin_platform::{Principal, Role, Subject, TenantKind};
use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, Set, Statement,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use uuid::Uuid;

pub const TOKEN_PREFIX: &str = "anshin_";
/// How stale `last_used_at` may get before a request writes it again; keeps reads write-free.
const LAST_USED_GRANULARITY_SECS: i64 = 60;

#[derive(Clone)]
pub struct TokenService {
    db: DatabaseConnection,
    cache_ttl: std::time::Duration,
}

/// Successful authentications, shared by every `TokenService` of the process, so that revoking a
/// token or suspending a tenant here takes effect at once; other processes see the change once
/// their entries expire (the TTL, one second by default).
struct CachedAuth {
    principal: Principal,
    valid_until: std::time::Instant,
}

const MAX_CACHED_AUTHENTICATIONS: usize = 10_000;

fn auth_cache() -> &'static RwLock<HashMap<String, CachedAuth>> {
    static CACHE: OnceLock<RwLock<HashMap<String, CachedAuth>>> = OnceLock::new();
    CACHE.get_or_init(|| RwLock::new(HashMap::new()))
}

/// Drops every cached authentication in this process (after revocations and status changes).
pub fn forget_cached_authentications() {
    if let Ok(mut c) = auth_cache().write() {
        c.clear();
    }
}

/// A freshly issued token. `token` is the only copy of the secret that will ever exist.
#[derive(Debug)]
pub struct IssuedToken {
    pub info: TokenInfo,
    pub token: Secret,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub role: Role,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl TokenInfo {
    fn from_model(m: api_token::Model) -> Self {
        Self {
            id: m.id,
            tenant_id: m.tenant_id,
            name: m.name,
            role: Role::parse(&m.role).unwrap_or(Role::Auditor),
            prefix: m.prefix,
            created_at: m.created_at,
            expires_at: m.expires_at,
            revoked_at: m.revoked_at,
            last_used_at: m.last_used_at,
        }
    }

    pub fn state(&self, now: DateTime<Utc>) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at <= now {
            "expired"
        } else {
            "active"
        }
    }
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

impl TokenService {
    /// Without an authentication cache: every check reads the database.
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            cache_ttl: std::time::Duration::ZERO,
        }
    }

    /// Caches successful authentications for `ttl` (bounded by the token's own expiry), so a busy
    /// API does not read the token table on every request.
    pub fn with_auth_cache(mut self, ttl: std::time::Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// Issues a token for `role` in the tenant named by slug or id (platform operation).
    pub async fn issue(
        &self,
        tenant_ref: &str,
        role: Role,
        name: &str,
        expires_in: Duration,
    ) -> Result<IssuedToken, TenancyError> {
        if expires_in <= Duration::zero() {
            return Err(TenancyError::validation(
                "expires_in",
                "the lifetime must be positive",
            ));
        }
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
            return Err(TenancyError::validation(
                "name",
                "give a token name of 1–200 printable characters",
            ));
        }
        let tx = begin_platform_write_tx(&self.db).await?;
        let t = find_tenant(&tx, tenant_ref).await?;
        let kind = TenantKind::parse(&t.kind).unwrap_or(TenantKind::Institution);
        if !role.fits(kind) {
            return Err(TenancyError::validation(
                "role",
                &format!(
                    "the role {role} cannot belong to a {} tenant",
                    kind.as_str()
                ),
            ));
        }
        let token = new_token();
        let now = Utc::now();
        let m = api_token::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(t.id),
            name: Set(name.to_string()),
            role: Set(role.as_str().into()),
            token_hash: Set(hash_token(&token)),
            prefix: Set(token.chars().take(12).collect()),
            created_at: Set(now),
            expires_at: Set(now + expires_in),
            revoked_at: Set(None),
            last_used_at: Set(None),
        }
        .insert(&tx)
        .await?;
        anshin_audit::record(
            &tx,
            &AuditEvent::new(t.id, Actor::operator(), "api_token.issue", Outcome::Success)
                .target(Target::new("api_token", m.id))
                .detail("name", &m.name)
                .detail("role", &m.role)
                .detail("expires_at", m.expires_at),
        )
        .await?;
        tx.commit().await?;
        Ok(IssuedToken {
            info: TokenInfo::from_model(m),
            token: Secret::new(token),
        })
    }

    /// Revokes a token; revoking one already revoked is a no-op that reports the earlier time.
    pub async fn revoke(&self, id: Uuid) -> Result<TokenInfo, TenancyError> {
        let tx = begin_platform_write_tx(&self.db).await?;
        let m = api_token::Entity::find_by_id(id)
            .one(&tx)
            .await?
            .ok_or_else(|| TenancyError::NotFound(format!("no API token with id {id}")))?;
        let m = if m.revoked_at.is_none() {
            let mut am: api_token::ActiveModel = m.into();
            am.revoked_at = Set(Some(Utc::now()));
            let m = am.update(&tx).await?;
            anshin_audit::record(
                &tx,
                &AuditEvent::new(
                    m.tenant_id,
                    Actor::operator(),
                    "api_token.revoke",
                    Outcome::Success,
                )
                .target(Target::new("api_token", m.id))
                .detail("name", &m.name),
            )
            .await?;
            m
        } else {
            m
        };
        tx.commit().await?;
        forget_cached_authentications();
        Ok(TokenInfo::from_model(m))
    }

    pub async fn list(&self, tenant_ref: &str) -> Result<Vec<TokenInfo>, TenancyError> {
        let tx = begin_platform_tx(&self.db).await?;
        let t = find_tenant(&tx, tenant_ref).await?;
        let rows = api_token::Entity::find()
            .filter(api_token::Column::TenantId.eq(t.id))
            .order_by_asc(api_token::Column::CreatedAt)
            .all(&tx)
            .await?;
        tx.commit().await?;
        Ok(rows.into_iter().map(TokenInfo::from_model).collect())
    }

    /// Revokes every active token of a tenant with this name (used by the demo seeding).
    pub async fn revoke_named(&self, tenant_id: Uuid, name: &str) -> Result<u64, TenancyError> {
        let tx = begin_platform_write_tx(&self.db).await?;
        let r = api_token::Entity::update_many()
            .col_expr(
                api_token::Column::RevokedAt,
                sea_orm::sea_query::Expr::value(Utc::now()),
            )
            .filter(api_token::Column::TenantId.eq(tenant_id))
            .filter(api_token::Column::Name.eq(name))
            .filter(api_token::Column::RevokedAt.is_null())
            .exec(&tx)
            .await?;
        if r.rows_affected > 0 {
            anshin_audit::record(
                &tx,
                &AuditEvent::new(
                    tenant_id,
                    Actor::operator(),
                    "api_token.revoke",
                    Outcome::Success,
                )
                .detail("name", name)
                .detail("count", r.rows_affected),
            )
            .await?;
        }
        tx.commit().await?;
        forget_cached_authentications();
        Ok(r.rows_affected)
    }

    /// The principal a bearer token stands for, if the token is valid and its tenant (and that
    /// tenant's provider) is neither suspended nor destroyed.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>, TenancyError> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
            return Ok(None);
        }
        let hash = hash_token(token);
        if !self.cache_ttl.is_zero() {
            if let Ok(c) = auth_cache().read() {
                if let Some(hit) = c
                    .get(&hash)
                    .filter(|h| h.valid_until > std::time::Instant::now())
                {
                    return Ok(Some(hit.principal.clone()));
                }
            }
        }
        let tx = begin_platform_tx(&self.db).await?;
        let backend = tx.get_database_backend();
        let sql = "SELECT k.id, k.name, k.role, k.expires_at, k.revoked_at, k.last_used_at, \
                   t.id AS tenant_id, t.kind, t.status, p.status AS parent_status \
                   FROM api_tokens k JOIN tenants t ON t.id = k.tenant_id LEFT JOIN tenants p ON p.id = t.parent_id \
                   WHERE k.token_hash = $1";
        let sql = if backend == DbBackend::Postgres {
            sql.to_string()
        } else {
            sql.replace("$1", "?")
        };
        let row = tx
            .query_one(Statement::from_sql_and_values(
                backend,
                sql,
                [hash.clone().into()],
            ))
            .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(None);
        };
        let id: Uuid = row.try_get("", "id")?;
        let expires_at: DateTime<Utc> = row.try_get("", "expires_at")?;
        let revoked_at: Option<DateTime<Utc>> = row.try_get("", "revoked_at")?;
        let last_used: Option<DateTime<Utc>> = row.try_get("", "last_used_at")?;
        let status: String = row.try_get("", "status")?;
        let parent_status: Option<String> = row.try_get("", "parent_status")?;
        let now = Utc::now();
        let blocked = |s: &str| {
            s == TenantStatus::Suspended.as_str() || s == TenantStatus::Destroyed.as_str()
        };
        if revoked_at.is_some()
            || expires_at <= now
            || blocked(&status)
            || parent_status.as_deref().is_some_and(blocked)
        {
            tx.commit().await?;
            return Ok(None);
        }
        tx.commit().await?;
        // Written in its own short transaction so the lookup above stays read-only.
        if last_used.is_none_or(|t| (now - t).num_seconds() >= LAST_USED_GRANULARITY_SECS) {
            let tx = begin_platform_tx(&self.db).await?;
            api_token::Entity::update_many()
                .col_expr(
                    api_token::Column::LastUsedAt,
                    sea_orm::sea_query::Expr::value(now),
                )
                .filter(api_token::Column::Id.eq(id))
                .exec(&tx)
                .await?;
            tx.commit().await?;
        }
        let role_s: String = row.try_get("", "role")?;
        let kind_s: String = row.try_get("", "kind")?;
        let (Some(role), Some(kind)) = (Role::parse(&role_s), TenantKind::parse(&kind_s)) else {
            return Ok(None);
        };
        let principal = Principal {
            subject: Subject::ApiToken {
                id,
                name: row.try_get("", "name")?,
            },
            tenant_id: row.try_get("", "tenant_id")?,
            tenant_kind: kind,
            role,
            grant: None,
        };
        if !self.cache_ttl.is_zero() {
            let left = (expires_at - now).to_std().unwrap_or_default();
            if let Ok(mut c) = auth_cache().write() {
                if c.len() >= MAX_CACHED_AUTHENTICATIONS {
                    c.clear();
                }
                c.insert(
                    hash,
                    CachedAuth {
                        principal: principal.clone(),
                        valid_until: std::time::Instant::now() + self.cache_ttl.min(left),
                    },
                );
            }
        }
        Ok(Some(principal))
    }
}

async fn find_tenant(c: &impl ConnectionTrait, r: &str) -> Result<tenant::Model, TenancyError> {
    let q = match Uuid::parse_str(r) {
        Ok(id) => tenant::Entity::find_by_id(id),
        Err(_) => tenant::Entity::find().filter(tenant::Column::Slug.eq(r)),
    };
    q.one(c)
        .await?
        .ok_or_else(|| TenancyError::NotFound(format!("no tenant with slug or id '{r}'")))
}

#[async_trait]
impl Authenticator for TokenService {
    async fn authenticate_bearer(&self, token: &str) -> Result<Option<Principal>, Problem> {
        self.authenticate(token).await.map_err(Problem::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hash_stably() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_eq!(hash_token(&a).len(), 64);
    }
}
