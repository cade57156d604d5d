use sea_orm::entity::prelude::*;

/// An OpenID Connect sign-in in progress: what the callback must match, and, once the provider
/// answered without proving two factors, the user awaiting a passkey step-up.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "oidc_flows")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// SHA-256 of the `state` parameter.
    #[sea_orm(unique)]
    pub state_hash: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    pub consumed_at: Option<DateTimeUtc>,
    /// Set when the provider's sign-in needs a passkey step-up to become a session.
    pub step_up_user_id: Option<Uuid>,
    pub step_up_done_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
