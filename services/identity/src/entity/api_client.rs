use sea_orm::entity::prelude::*;

/// A machine client (OAuth2 client credentials, guideline 14.1.2): a program of one tenant that
/// obtains short-lived access tokens at `/oauth2/token`. Revoked, never deleted.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_clients")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The public identifier the client authenticates with (`anc_…`).
    #[sea_orm(unique)]
    pub client_id: String,
    pub name: String,
    pub role: String,
    /// Space-separated scopes the client may ask for.
    pub scopes: String,
    /// `client_secret` or `private_key_jwt`.
    pub auth_method: String,
    /// SHA-256 of the client secret (hex); the secret itself is never stored.
    pub secret_hash: Option<String>,
    /// The client's public key (SPKI PEM) for `private_key_jwt`.
    pub public_key_pem: Option<String>,
    /// `active` or `revoked`.
    pub status: String,
    /// Who registered it (`user:<id>` or `token:<id>`).
    pub created_by: String,
    pub created_at: DateTimeUtc,
    pub revoked_at: Option<DateTimeUtc>,
    /// Last successful authentication at the token endpoint.
    pub last_used_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
