use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "invitations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The invited address, sealed like `users.email` (record = this id).
    #[sea_orm(column_name = "email")]
    pub email_sealed: String,
    /// The blind index of the address (NULL only in rows not yet re-encrypted).
    pub email_index: Option<String>,
    pub display_name: String,
    pub role: String,
    /// SHA-256 of the enrollment token in the link; the token itself is never stored.
    #[sea_orm(unique)]
    pub token_hash: String,
    /// Who invited (`token:<id>` or `user:<id>`).
    pub invited_by: String,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    pub used_at: Option<DateTimeUtc>,
    /// When the invitation ended before use, if it did.
    pub revoked_at: Option<DateTimeUtc>,
    /// Who ended it (`token:<id>` or `user:<id>`).
    pub revoked_by: Option<String>,
    /// `revoked` (by an admin) or `superseded` (a newer invitation of the same address).
    pub revoked_reason: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// Ends invitations before use (the caller filters which): the link stops enrolling at once, and
/// the rows say when, by whom (`by`, a principal label) and why (`revoked` or `superseded`).
pub fn end_early(
    now: DateTimeUtc,
    by: String,
    reason: &'static str,
) -> sea_orm::UpdateMany<Entity> {
    use sea_orm::sea_query::Expr;
    Entity::update_many()
        .col_expr(Column::ExpiresAt, Expr::value(now))
        .col_expr(Column::RevokedAt, Expr::value(now))
        .col_expr(Column::RevokedBy, Expr::value(by))
        .col_expr(Column::RevokedReason, Expr::value(reason))
}
