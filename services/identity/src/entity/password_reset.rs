use sea_orm::entity::prelude::*;

/// An administrator's password reset of one account (guideline 14 ⑥): how the person's identity
/// was verified, by whom and when, and the hash of the single-use link with which the person
/// sets a new password. The link itself is never stored.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "password_resets")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The account whose password was reset.
    pub user_id: Uuid,
    /// How the identity was verified: `in_person_id_card`, `video_call`,
    /// `callback_registered_phone` or `other`.
    pub method: String,
    pub note: Option<String>,
    /// The verifying administrator (`user:<id>`) and their email address at the time, sealed
    /// like `users.email` (record = this id).
    pub verified_by: String,
    #[sea_orm(column_name = "verifier_email")]
    pub verifier_email_sealed: String,
    pub created_at: DateTimeUtc,
    /// SHA-256 (hex) of the reset token.
    #[sea_orm(unique)]
    pub token_hash: String,
    pub expires_at: DateTimeUtc,
    /// `mail` (sent to the person) or `shown` (shown once to the administrator).
    pub delivery: String,
    /// When the person set a new password with the link.
    pub completed_at: Option<DateTimeUtc>,
    /// When a newer reset of the same account replaced this one's link.
    pub superseded_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
