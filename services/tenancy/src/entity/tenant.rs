use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tenants")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub kind: String,
    #[sea_orm(unique)]
    pub slug: String,
    pub name: String,
    pub parent_id: Option<Uuid>,
    pub institution_type: Option<String>,
    pub reference_pattern: Option<String>,
    pub bed_count: Option<i32>,
    pub contract_start: Option<Date>,
    pub contract_end: Option<Date>,
    pub status: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
