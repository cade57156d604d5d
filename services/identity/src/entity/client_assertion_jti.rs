use sea_orm::entity::prelude::*;

/// A `jti` of a `private_key_jwt` client assertion already used (RFC 7523 §3): kept so the same
/// assertion cannot be replayed. Rows whose assertion has expired are pruned by the hourly
/// identity job (`jobs::prune_client_assertion_jtis`).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "client_assertion_jtis")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The client's tenant (row-level security).
    pub tenant_id: Uuid,
    /// `api_clients.id` of the client that used it.
    pub client_id: Uuid,
    pub jti: String,
    /// The assertion's `exp`.
    pub expires_at: DateTimeUtc,
    pub used_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
