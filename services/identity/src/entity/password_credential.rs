use sea_orm::entity::prelude::*;

/// A person's password (argon2id PHC string) and its failure counter and lock.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "password_credentials")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    pub tenant_id: Uuid,
    pub hash: String,
    pub changed_at: DateTimeUtc,
    pub failed_count: i32,
    pub last_failed_at: Option<DateTimeUtc>,
    pub locked_until: Option<DateTimeUtc>,
    /// Set when an administrator reset the password: it no longer signs in, and only the reset
    /// link can set a new one.
    pub invalidated_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
