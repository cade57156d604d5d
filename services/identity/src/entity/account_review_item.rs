use sea_orm::entity::prelude::*;

/// One account in a review: what it looked like when the review started, and the decision.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "account_review_items")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub review_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    pub tenant_id: Uuid,
    // Snapshot at the start of the review.
    /// The account's address as stored in `users.email` when the review started: the same
    /// sealed value (bound to the tenant and `user_id`, whose address it is).
    #[sea_orm(column_name = "email")]
    pub email_sealed: String,
    pub display_name: String,
    pub role: String,
    pub status: String,
    pub last_sign_in_at: Option<DateTimeUtc>,
    pub stale_since: Option<DateTimeUtc>,
    /// `confirmed` or `disabled`; `None` while undecided. Final once set.
    pub decision: Option<String>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTimeUtc>,
    pub note: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
