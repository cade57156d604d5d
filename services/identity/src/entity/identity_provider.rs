use sea_orm::entity::prelude::*;

/// A tenant's OpenID Provider (the hospital's or provider's own sign-in).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "identity_providers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    pub issuer: String,
    pub client_id: String,
    /// AES-256-GCM sealed, bound to the tenant (see `secretbox`).
    pub client_secret_sealed: String,
    /// Comma-separated email domains whose people may sign in this way.
    pub allowed_domains: String,
    pub default_role: String,
    pub jit_provisioning: bool,
    /// Comma-separated `acr` values that count as two-factor sign-in.
    pub accepted_acr: String,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
