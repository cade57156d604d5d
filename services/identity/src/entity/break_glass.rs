use sea_orm::entity::prelude::*;

/// A tenant's sealed emergency credential (非常時用ユーザアカウント, guideline 11 ①).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "break_glass_credentials")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The account the emergency session acts as.
    pub user_id: Uuid,
    /// SHA-256 of the code (256 random bits); the code itself is shown once and sealed on paper.
    pub code_hash: String,
    /// `sealed`, `used` or `retired`.
    pub status: String,
    pub created_by: String,
    pub created_at: DateTimeUtc,
    pub used_at: Option<DateTimeUtc>,
    pub used_reason: Option<String>,
    pub used_from: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
