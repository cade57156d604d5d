//! People's e-mail addresses sealed under their tenant's key (guideline 7 ③ / 10 ②): the address
//! columns keep their names but hold `anshin-env1:` envelopes, and blind indexes take over
//! equality lookups and uniqueness. Existing rows keep their readable address (and a NULL
//! index) until the re-encryption pass seals them; lookups fall back to the readable column for
//! them meanwhile.

use crate::migration::col;
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct SealContactData;

impl MigrationName for SealContactData {
    fn name(&self) -> &str {
        "m20261122_000209_identity_sealed_contact_data"
    }
}

/// Columns that now hold sealed text, which is longer than the 254 characters of an address.
const SEALED_COLUMNS: [(&str, &str); 4] = [
    ("users", "email"),
    ("invitations", "email"),
    ("account_review_items", "email"),
    ("password_resets", "verifier_email"),
];

#[async_trait::async_trait]
impl MigrationTrait for SealContactData {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["users", "invitations"] {
            m.alter_table(
                Table::alter()
                    .table(Alias::new(t))
                    .add_column(col("email_index").string_len(64).null())
                    .to_owned(),
            )
            .await?;
        }
        // Both backends let a unique index hold many NULLs (the rows not yet re-encrypted).
        m.create_index(
            Index::create()
                .name("users_email_index")
                .table(Alias::new("users"))
                .col(Alias::new("email_index"))
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("invitations_email_index")
                .table(Alias::new("invitations"))
                .col(Alias::new("email_index"))
                .to_owned(),
        )
        .await?;
        // SQLite does not enforce VARCHAR lengths; PostgreSQL does. VARCHAR to TEXT rewrites no
        // rows, and the tables' row-level security policies do not mention these columns.
        if m.get_database_backend() == DbBackend::Postgres {
            for (t, c) in SEALED_COLUMNS {
                m.get_connection()
                    .execute_unprepared(&format!("ALTER TABLE {t} ALTER COLUMN {c} TYPE TEXT"))
                    .await?;
            }
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // The address columns stay TEXT: sealed values would not fit the old length.
        for (t, i) in [
            ("invitations", "invitations_email_index"),
            ("users", "users_email_index"),
        ] {
            m.drop_index(Index::drop().name(i).table(Alias::new(t)).to_owned())
                .await?;
            m.alter_table(
                Table::alter()
                    .table(Alias::new(t))
                    .drop_column(Alias::new("email_index"))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
