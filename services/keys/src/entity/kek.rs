use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "key_keks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// `aws-kms` or `local`.
    pub provider: String,
    /// KMS key ARN or `local:<uuid>`.
    pub key_id: String,
    pub alias: Option<String>,
    /// `managed` or `byok`.
    pub origin: String,
    /// `active`, `retired` or `erased`.
    pub status: String,
    /// The provider's key state when last seen (`enabled`, `disabled`, …).
    pub key_state: String,
    pub rotation_enabled: Option<bool>,
    pub created_at: DateTimeUtc,
    pub rotated_at: Option<DateTimeUtc>,
    pub retired_at: Option<DateTimeUtc>,
    pub last_used_at: Option<DateTimeUtc>,
    /// `ok`, `unreachable` or `denied`.
    pub health: String,
    pub health_checked_at: Option<DateTimeUtc>,
    pub health_detail: Option<String>,
    pub erased_at: Option<DateTimeUtc>,
    pub deletion_date: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
