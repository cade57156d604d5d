use sea_orm::entity::prelude::*;

/// The columns of `users` the stale-account sweep and the ID inventory need, including
/// `stale_flagged_at` (guideline 14 ⑦).
///
/// `stale_flagged_at` is not on `user::Model` yet: code elsewhere builds `user::ActiveModel`
/// literals field by field, which a new field would break. Once those set it (or use
/// `..Default::default()`), the column can move to `user::Model` and this view can go.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub email: String,
    /// `active` or `disabled`.
    pub status: String,
    pub created_at: DateTimeUtc,
    pub last_sign_in_at: Option<DateTimeUtc>,
    /// When the sweep found the account unused for the tenant's `stale_after_days`. A sign-in
    /// after this time means the flag no longer holds (cleared lazily by the sweep).
    pub stale_flagged_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
