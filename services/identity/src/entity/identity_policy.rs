use sea_orm::entity::prelude::*;

/// A tenant's identity policy (guideline 14 ⑦, 12 ⑥). No row means the defaults apply (see
/// `crate::policy`).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "identity_policies")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    /// Idle timeout of sessions created from now on, in seconds.
    pub idle_timeout_secs: i64,
    /// Days without a sign-in after which an active account is flagged as stale.
    pub stale_after_days: i64,
    /// Days after being flagged after which a still-unused account is disabled.
    pub disable_after_days: i64,
    /// Who set it (`user:<id>` or `token:<id>`).
    pub updated_by: String,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
