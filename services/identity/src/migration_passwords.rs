//! Passwords (second factor beside a security key), security keys beside passkeys, and the
//! per-tenant attestation policy for hospital-issued keys.

use crate::migration::{col, rls_sql, tenant_fk, user_fk};
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct AddPasswordsAndSecurityKeys;

pub(crate) const TABLES: [&str; 3] = [
    "password_credentials",
    "password_history",
    "attestation_policies",
];

impl MigrationName for AddPasswordsAndSecurityKeys {
    fn name(&self) -> &str {
        "m20261122_000205_identity_passwords"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddPasswordsAndSecurityKeys {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Alias::new("password_credentials"))
                .col(col("user_id").uuid().not_null().primary_key())
                .col(col("tenant_id").uuid().not_null())
                .col(col("hash").string_len(256).not_null())
                .col(col("changed_at").timestamp_with_time_zone().not_null())
                .col(col("failed_count").integer().not_null().default(0))
                .col(col("last_failed_at").timestamp_with_time_zone().null())
                .col(col("locked_until").timestamp_with_time_zone().null())
                .foreign_key(&mut tenant_fk("password_credentials"))
                .foreign_key(&mut user_fk("password_credentials"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("password_history"))
                .col(col("id").uuid().not_null().primary_key())
                .col(col("user_id").uuid().not_null())
                .col(col("tenant_id").uuid().not_null())
                .col(col("hash").string_len(256).not_null())
                .col(col("created_at").timestamp_with_time_zone().not_null())
                .foreign_key(&mut tenant_fk("password_history"))
                .foreign_key(&mut user_fk("password_history"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("password_history_user")
                .table(Alias::new("password_history"))
                .col(Alias::new("user_id"))
                .col(Alias::new("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("attestation_policies"))
                .col(col("tenant_id").uuid().not_null().primary_key())
                .col(col("mode").string_len(16).not_null())
                .col(col("entries").text().not_null())
                .col(col("updated_by").string_len(64).not_null())
                .col(col("updated_at").timestamp_with_time_zone().not_null())
                .foreign_key(&mut tenant_fk("attestation_policies"))
                .to_owned(),
        )
        .await?;
        // Existing credentials are passkeys; security keys arrive with this change.
        m.alter_table(
            Table::alter()
                .table(Alias::new("webauthn_credentials"))
                .add_column(col("kind").string_len(16).not_null().default("passkey"))
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Alias::new("webauthn_credentials"))
                .add_column(col("aaguid").string_len(36).null())
                .to_owned(),
        )
        .await?;
        if m.get_database_backend() == DbBackend::Postgres {
            for t in TABLES {
                m.get_connection().execute_unprepared(&rls_sql(t)).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in TABLES {
            m.drop_table(Table::drop().table(Alias::new(t)).to_owned())
                .await?;
        }
        for c in ["kind", "aaguid"] {
            m.alter_table(
                Table::alter()
                    .table(Alias::new("webauthn_credentials"))
                    .drop_column(Alias::new(c))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}

/// Guideline 14 ⑥: an administrator resets a forgotten password only after verifying the
/// person's identity. Each reset records how (method, note, verifier) and carries the hash of
/// the single-use link with which the person sets a new password; the old password is marked
/// invalid until then.
pub struct AddPasswordResets;

pub(crate) const RESET_TABLES: [&str; 1] = ["password_resets"];

impl MigrationName for AddPasswordResets {
    fn name(&self) -> &str {
        "m20261122_000208_identity_password_resets"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddPasswordResets {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Alias::new("password_resets"))
                .col(col("id").uuid().not_null().primary_key())
                .col(col("tenant_id").uuid().not_null())
                .col(col("user_id").uuid().not_null())
                .col(col("method").string_len(32).not_null())
                .col(col("note").text().null())
                .col(col("verified_by").string_len(64).not_null())
                .col(col("verifier_email").string_len(254).not_null())
                .col(col("created_at").timestamp_with_time_zone().not_null())
                .col(col("token_hash").string_len(64).not_null().unique_key())
                .col(col("expires_at").timestamp_with_time_zone().not_null())
                .col(col("delivery").string_len(16).not_null())
                .col(col("completed_at").timestamp_with_time_zone().null())
                .col(col("superseded_at").timestamp_with_time_zone().null())
                .foreign_key(&mut tenant_fk("password_resets"))
                .foreign_key(&mut user_fk("password_resets"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("password_resets_user")
                .table(Alias::new("password_resets"))
                .col(Alias::new("user_id"))
                .col(Alias::new("created_at"))
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Alias::new("password_credentials"))
                .add_column(col("invalidated_at").timestamp_with_time_zone().null())
                .to_owned(),
        )
        .await?;
        if m.get_database_backend() == DbBackend::Postgres {
            for t in RESET_TABLES {
                m.get_connection().execute_unprepared(&rls_sql(t)).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in RESET_TABLES {
            m.drop_table(Table::drop().table(Alias::new(t)).to_owned())
                .await?;
        }
        m.alter_table(
            Table::alter()
                .table(Alias::new("password_credentials"))
                .drop_column(Alias::new("invalidated_at"))
                .to_owned(),
        )
        .await
    }
}
