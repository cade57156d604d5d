use sea_orm::entity::prelude::*;

/// Permission for a provider maintainer (保守要員) to act in one institution, for one piece of
/// work, within a time window (guideline 10 ③).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "maintenance_grants")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The maintainer's provider.
    pub tenant_id: Uuid,
    pub institution_id: Uuid,
    /// The maintainer (`user:<id>` or `token:<id>`).
    pub maintainer: String,
    /// The work plan (作業計画) this access is for.
    pub work_plan_ref: String,
    /// `read` (look only) or `operate` (later services decide what operating allows).
    pub scope: String,
    pub starts_at: DateTimeUtc,
    pub ends_at: DateTimeUtc,
    /// Declared incident: usable at once, approved after the fact.
    pub incident: bool,
    /// `requested`, `approved`, `rejected`, or `incident` (in use, awaiting approval).
    pub status: String,
    pub requested_at: DateTimeUtc,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTimeUtc>,
    pub decision_note: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
