use sea_orm::entity::prelude::*;

/// A WebAuthn ceremony in progress, stored so that any replica can finish what another began.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webauthn_ceremonies")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// `enrollment` or `sign_in`.
    pub kind: String,
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub invitation_id: Option<Uuid>,
    /// webauthn-rs registration or authentication state, JSON.
    pub state: String,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    /// Set when finished (successfully or not): a ceremony is used once.
    pub consumed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
