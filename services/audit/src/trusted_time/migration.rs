//! `audit_checkpoint_timestamps`: one RFC 3161 token per checkpoint. Append-only like the other
//! audit tables (17 ②): the application role gets INSERT and SELECT only, triggers refuse UPDATE
//! and DELETE on both backends, and on PostgreSQL row-level security limits it to the tenant
//! (its provider, or platform scope) as for the checkpoints themselves.

use anshin_platform::db::{TableGrant, CURRENT_TENANT, PLATFORM_SCOPE};
use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;

pub const TABLE: &str = "audit_checkpoint_timestamps";

pub struct CreateCheckpointTimestamps;

impl MigrationName for CreateCheckpointTimestamps {
    fn name(&self) -> &str {
        "m20261122_000302_audit_timestamps"
    }
}

fn a(s: &str) -> Alias {
    Alias::new(s)
}

#[async_trait::async_trait]
impl MigrationTrait for CreateCheckpointTimestamps {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(a(TABLE))
                .col(ColumnDef::new(a("tenant_id")).uuid().not_null())
                .col(ColumnDef::new(a("tree_size")).big_integer().not_null())
                // DER TimeStampToken (CMS ContentInfo) over SHA-256 of the checkpoint body.
                .col(ColumnDef::new(a("token")).blob().not_null())
                // TSTInfo genTime, for queries; the token is authoritative.
                .col(
                    ColumnDef::new(a("gen_time"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(ColumnDef::new(a("tsa_url")).string_len(2048).not_null())
                .col(
                    ColumnDef::new(a("created_at"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .primary_key(Index::create().col(a("tenant_id")).col(a("tree_size")))
                .foreign_key(
                    ForeignKey::create()
                        .name("audit_checkpoint_timestamps_checkpoint_fk")
                        .from(a(TABLE), (a("tenant_id"), a("tree_size")))
                        .to(a("audit_checkpoints"), (a("tenant_id"), a("tree_size"))),
                )
                .to_owned(),
        )
        .await?;

        let db = m.get_connection();
        let t = TABLE;
        match m.get_database_backend() {
            DbBackend::Postgres => {
                // audit_refuse_change() comes with the audit tables (m20261122_000300_audit).
                let (cur, p) = (CURRENT_TENANT, PLATFORM_SCOPE);
                db.execute_unprepared(&format!(
                    "CREATE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE ON {t}
                       FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
                     CREATE TRIGGER {t}_no_truncate BEFORE TRUNCATE ON {t}
                       FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
                     ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;
                     ALTER TABLE {t} FORCE ROW LEVEL SECURITY;
                     CREATE POLICY {t}_isolation ON {t}
                       USING (tenant_id = {cur} OR tenant_id IN (SELECT tenant_id FROM audit_tenants WHERE provider_id = {cur}) OR {p})
                       WITH CHECK (tenant_id = {cur} OR tenant_id IN (SELECT tenant_id FROM audit_tenants WHERE provider_id = {cur}) OR {p});"
                ))
                .await?;
            }
            _ => {
                db.execute_unprepared(&format!(
                    "CREATE TRIGGER {t}_no_update BEFORE UPDATE ON {t}
                       BEGIN SELECT RAISE(ABORT, 'audit records are append-only: UPDATE on {t} refused'); END;
                     CREATE TRIGGER {t}_no_delete BEFORE DELETE ON {t}
                       BEGIN SELECT RAISE(ABORT, 'audit records are append-only: DELETE on {t} refused'); END;"
                ))
                .await?;
            }
        }
        Ok(())
    }

    async fn down(&self, _m: &SchemaManager) -> Result<(), DbErr> {
        Err(DbErr::Migration(
            "audit timestamps cannot be migrated down: the table is append-only".into(),
        ))
    }
}

/// Apply after [`crate::migrations`] (the table refers to `audit_checkpoints` and reuses its
/// trigger function).
pub fn migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![Box::new(CreateCheckpointTimestamps)]
}

pub fn grants() -> Vec<TableGrant> {
    vec![TableGrant {
        table: TABLE,
        privileges: "SELECT, INSERT",
    }]
}
