use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The address, sealed by the key service under the tenant's KEK (`anshin-env1:…`, purpose
    /// `identity.email`, record = this id). Rows written before hold it readable until the
    /// re-encryption pass (`anshin keys reencrypt`) seals them.
    #[sea_orm(column_name = "email", unique)]
    pub email_sealed: String,
    /// The blind index of the normalised address: how sign-in finds an account and how an
    /// address stays unique without being readable. NULL only in rows not yet re-encrypted.
    #[sea_orm(unique)]
    pub email_index: Option<String>,
    pub display_name: String,
    pub role: String,
    /// `active` or `disabled`.
    pub status: String,
    pub created_at: DateTimeUtc,
    pub last_sign_in_at: Option<DateTimeUtc>,
    /// When the stale-account sweep found the account unused for the tenant's
    /// `stale_after_days` (guideline 14 ⑦). A sign-in after this time means the flag no longer
    /// holds (the sweep clears the column later).
    pub stale_flagged_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::credential::Entity")]
    Credentials,
}

impl Related<super::credential::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Credentials.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
