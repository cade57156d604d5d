//! Audit tables. Events, log entries, checkpoints and the tenant map are append-only: the
//! application role gets INSERT and SELECT only, and triggers refuse UPDATE and DELETE on both
//! backends (17 ②). The pending queue is the one table the sealer deletes from, in the same
//! transaction that appends the entries it held; deleting a pending row cannot remove the event
//! itself, and the unsealed-event check reports events that stay out of the log.

use anshin_platform::db::{TableGrant, CURRENT_TENANT, PLATFORM_SCOPE};
use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;

pub struct CreateAuditTables;

impl MigrationName for CreateAuditTables {
    fn name(&self) -> &str {
        "m20261122_000300_audit"
    }
}

fn a(s: &str) -> Alias {
    Alias::new(s)
}

/// Tables whose rows never change once written.
pub const APPEND_ONLY: [&str; 4] = [
    "audit_tenants",
    "audit_events",
    "audit_log",
    "audit_checkpoints",
];

#[async_trait::async_trait]
impl MigrationTrait for CreateAuditTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(a("audit_tenants"))
                .col(
                    ColumnDef::new(a("tenant_id"))
                        .uuid()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(a("provider_id")).uuid().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("audit_tenants_provider_idx")
                .table(a("audit_tenants"))
                .col(a("provider_id"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(a("audit_events"))
                .col(ColumnDef::new(a("id")).uuid().not_null().primary_key())
                .col(ColumnDef::new(a("tenant_id")).uuid().not_null())
                .col(
                    ColumnDef::new(a("time"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(ColumnDef::new(a("action")).string_len(128).not_null())
                .col(ColumnDef::new(a("actor_kind")).string_len(32).not_null())
                .col(ColumnDef::new(a("actor_id")).string_len(128))
                .col(ColumnDef::new(a("actor_label")).string_len(320))
                .col(ColumnDef::new(a("target_type")).string_len(64))
                .col(ColumnDef::new(a("target_id")).string_len(256))
                .col(ColumnDef::new(a("outcome")).string_len(16).not_null())
                .col(ColumnDef::new(a("grant_id")).uuid())
                // Idempotency key of events ingested from machine clients: client + its event id.
                .col(ColumnDef::new(a("client_ref")).string_len(300))
                // The canonical JSON of the event, exactly as it will be sealed.
                .col(ColumnDef::new(a("body")).text().not_null())
                .to_owned(),
        )
        .await?;
        for (name, cols) in [
            ("audit_events_tenant_time_idx", &["tenant_id", "time"][..]),
            (
                "audit_events_tenant_action_idx",
                &["tenant_id", "action", "time"][..],
            ),
            (
                "audit_events_tenant_actor_idx",
                &["tenant_id", "actor_id", "time"][..],
            ),
            (
                "audit_events_tenant_target_idx",
                &["tenant_id", "target_id"][..],
            ),
        ] {
            let mut idx = Index::create();
            idx.name(name).table(a("audit_events"));
            for c in cols {
                idx.col(a(c));
            }
            m.create_index(idx.to_owned()).await?;
        }
        m.create_index(
            Index::create()
                .name("audit_events_client_ref_key")
                .table(a("audit_events"))
                .col(a("tenant_id"))
                .col(a("client_ref"))
                .unique()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(a("audit_pending"))
                // Sealing order within a batch is the event id (UUIDv7, time-ordered); the total
                // order that matters is the `seq` each entry gets in the log.
                .col(
                    ColumnDef::new(a("event_id"))
                        .uuid()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(a("tenant_id")).uuid().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("audit_pending_tenant_idx")
                .table(a("audit_pending"))
                .col(a("tenant_id"))
                .col(a("event_id"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(a("audit_log"))
                .col(ColumnDef::new(a("tenant_id")).uuid().not_null())
                .col(ColumnDef::new(a("seq")).big_integer().not_null())
                .col(ColumnDef::new(a("event_id")).uuid().not_null().unique_key())
                .col(ColumnDef::new(a("leaf_hash")).binary_len(32).not_null())
                .col(ColumnDef::new(a("entry")).text().not_null())
                .primary_key(Index::create().col(a("tenant_id")).col(a("seq")))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(a("audit_checkpoints"))
                .col(ColumnDef::new(a("tenant_id")).uuid().not_null())
                .col(ColumnDef::new(a("tree_size")).big_integer().not_null())
                .col(ColumnDef::new(a("root_hash")).string_len(64).not_null())
                // The log's frontier at this size (JSON array of hex hashes): the sealer continues
                // from it without reading earlier entries.
                .col(ColumnDef::new(a("frontier")).text().not_null())
                .col(ColumnDef::new(a("last_leaf")).string_len(64).not_null())
                .col(ColumnDef::new(a("body")).text().not_null())
                .col(ColumnDef::new(a("signature")).text().not_null())
                .col(ColumnDef::new(a("key_id")).string_len(128).not_null())
                .col(
                    ColumnDef::new(a("created_at"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .primary_key(Index::create().col(a("tenant_id")).col(a("tree_size")))
                .to_owned(),
        )
        .await?;

        let db = m.get_connection();
        match m.get_database_backend() {
            DbBackend::Postgres => {
                let mut sql = String::from(
                    "CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN
                       RAISE EXCEPTION 'audit records are append-only: % on % refused', TG_OP, TG_TABLE_NAME
                         USING ERRCODE = 'insufficient_privilege';
                     END $$;",
                );
                for t in APPEND_ONLY {
                    sql.push_str(&format!(
                        "CREATE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE ON {t}
                           FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
                         CREATE TRIGGER {t}_no_truncate BEFORE TRUNCATE ON {t}
                           FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();"
                    ));
                }
                let (t, p) = (CURRENT_TENANT, PLATFORM_SCOPE);
                sql.push_str(&format!(
                    "ALTER TABLE audit_tenants ENABLE ROW LEVEL SECURITY;
                     ALTER TABLE audit_tenants FORCE ROW LEVEL SECURITY;
                     CREATE POLICY audit_tenants_isolation ON audit_tenants
                       USING (tenant_id = {t} OR provider_id = {t} OR {p})
                       WITH CHECK (tenant_id = {t} OR provider_id = {t} OR {p});"
                ));
                for table in [
                    "audit_events",
                    "audit_pending",
                    "audit_log",
                    "audit_checkpoints",
                ] {
                    sql.push_str(&format!(
                        "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
                         ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
                         CREATE POLICY {table}_isolation ON {table}
                           USING (tenant_id = {t} OR tenant_id IN (SELECT tenant_id FROM audit_tenants WHERE provider_id = {t}) OR {p})
                           WITH CHECK (tenant_id = {t} OR tenant_id IN (SELECT tenant_id FROM audit_tenants WHERE provider_id = {t}) OR {p});"
                    ));
                }
                db.execute_unprepared(&sql).await?;
            }
            _ => {
                for t in APPEND_ONLY {
                    db.execute_unprepared(&format!(
                        "CREATE TRIGGER {t}_no_update BEFORE UPDATE ON {t}
                           BEGIN SELECT RAISE(ABORT, 'audit records are append-only: UPDATE on {t} refused'); END;
                         CREATE TRIGGER {t}_no_delete BEFORE DELETE ON {t}
                           BEGIN SELECT RAISE(ABORT, 'audit records are append-only: DELETE on {t} refused'); END;"
                    ))
                    .await?;
                }
            }
        }
        Ok(())
    }

    async fn down(&self, _m: &SchemaManager) -> Result<(), DbErr> {
        Err(DbErr::Migration(
            "the audit trail cannot be migrated down: its tables are append-only".into(),
        ))
    }
}

pub fn migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![Box::new(CreateAuditTables)]
}

pub fn grants() -> Vec<TableGrant> {
    let mut g: Vec<TableGrant> = APPEND_ONLY
        .iter()
        .map(|t| TableGrant {
            table: t,
            privileges: "SELECT, INSERT",
        })
        .collect();
    g.push(TableGrant {
        table: "audit_pending",
        privileges: "SELECT, INSERT, DELETE",
    });
    g
}
