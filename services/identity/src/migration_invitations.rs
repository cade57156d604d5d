//! Invitations record how they ended early: revoked by an admin or replaced by a newer invitation
//! of the same address, by whom and when (until now the only trace was the audit event and an
//! expiry moved to the moment of revocation).

use crate::migration::col;
use sea_orm_migration::prelude::*;

pub struct RecordInvitationRevocation;

impl MigrationName for RecordInvitationRevocation {
    fn name(&self) -> &str {
        "m20261122_000210_identity_invitation_revocation"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for RecordInvitationRevocation {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters a table one change at a time.
        for c in [
            col("revoked_at")
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            col("revoked_by").string_len(128).null().to_owned(),
            col("revoked_reason").string_len(16).null().to_owned(),
        ] {
            m.alter_table(
                Table::alter()
                    .table(Alias::new("invitations"))
                    .add_column(c)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for c in ["revoked_reason", "revoked_by", "revoked_at"] {
            m.alter_table(
                Table::alter()
                    .table(Alias::new("invitations"))
                    .drop_column(Alias::new(c))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
