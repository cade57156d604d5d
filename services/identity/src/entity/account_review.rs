use sea_orm::entity::prelude::*;

/// An ID inventory review campaign (棚卸, guideline 14 ⑦) of one tenant's accounts.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "account_reviews")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// Who started it (`user:<id>` or `token:<id>`).
    pub started_by: String,
    pub started_at: DateTimeUtc,
    pub due_at: DateTimeUtc,
    pub closed_at: Option<DateTimeUtc>,
    pub closed_by: Option<String>,
    /// `open` or `closed`; at most one open review per tenant (unique partial index).
    pub status: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
