use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// SHA-256 of the cookie value; the cookie value itself is never stored.
    #[sea_orm(unique)]
    pub token_hash: String,
    pub user_id: Uuid,
    pub tenant_id: Uuid,
    /// How the second factor was proven, e.g. `passkey`.
    pub method: String,
    pub csrf_token: String,
    pub user_agent: Option<String>,
    pub source_ip: Option<String>,
    pub created_at: DateTimeUtc,
    pub last_seen_at: DateTimeUtc,
    pub idle_timeout_secs: i64,
    pub absolute_expires_at: DateTimeUtc,
    /// Last time this session's person proved a passkey (sign-in or step-up).
    pub stepped_up_at: Option<DateTimeUtc>,
    pub ended_at: Option<DateTimeUtc>,
    pub ended_reason: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
