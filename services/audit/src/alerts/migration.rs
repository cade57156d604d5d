//! Alert tables: alerts (the inbox), threshold-window hits, per-tenant rule overrides,
//! notification channels and the record of every delivery attempt. Tenant-scoped: on PostgreSQL
//! row-level security admits the tenant, its provider (through `audit_tenants`) or platform scope
//! (the sealer and the job worker). Delivery attempts are a record: the application role may
//! only insert and read them.

use anshin_platform::db::{TableGrant, CURRENT_TENANT, PLATFORM_SCOPE};
use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;

pub struct CreateAlertTables;

impl MigrationName for CreateAlertTables {
    fn name(&self) -> &str {
        "m20261122_000301_audit_alerts"
    }
}

fn a(s: &str) -> Alias {
    Alias::new(s)
}

pub const TABLES: [&str; 5] = [
    "audit_alerts",
    "audit_alert_hits",
    "audit_alert_rule_overrides",
    "audit_notification_channels",
    "audit_alert_deliveries",
];

fn ts(name: &str) -> ColumnDef {
    ColumnDef::new(a(name))
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn ts_null(name: &str) -> ColumnDef {
    ColumnDef::new(a(name))
        .timestamp_with_time_zone()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for CreateAlertTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(a("audit_alerts"))
                .col(ColumnDef::new(a("id")).uuid().not_null().primary_key())
                .col(ColumnDef::new(a("tenant_id")).uuid().not_null())
                .col(ColumnDef::new(a("rule_id")).string_len(64).not_null())
                .col(ColumnDef::new(a("severity")).string_len(16).not_null())
                .col(ColumnDef::new(a("title_ja")).string_len(400).not_null())
                .col(ColumnDef::new(a("title_en")).string_len(400).not_null())
                // '' for rules without `group_by`.
                .col(ColumnDef::new(a("group_key")).string_len(320).not_null())
                .col(ColumnDef::new(a("count")).big_integer().not_null())
                .col(ColumnDef::new(a("first_event_id")).uuid().not_null())
                .col(ts("first_event_at"))
                .col(ColumnDef::new(a("last_event_id")).uuid().not_null())
                .col(ts("last_event_at"))
                .col(ColumnDef::new(a("context")).text().not_null())
                .col(ColumnDef::new(a("status")).string_len(16).not_null())
                .col(ColumnDef::new(a("acknowledged_by")).string_len(128))
                .col(ts_null("acknowledged_at"))
                .col(ColumnDef::new(a("resolved_by")).string_len(128))
                .col(ts_null("resolved_at"))
                .col(ColumnDef::new(a("note")).text())
                .col(ts("created_at"))
                .col(ts("updated_at"))
                .to_owned(),
        )
        .await?;
        for (name, cols) in [
            (
                "audit_alerts_tenant_created_idx",
                &["tenant_id", "created_at"][..],
            ),
            (
                "audit_alerts_dedupe_idx",
                &["tenant_id", "rule_id", "group_key", "status"][..],
            ),
        ] {
            let mut idx = Index::create();
            idx.name(name).table(a("audit_alerts"));
            for c in cols {
                idx.col(a(c));
            }
            m.create_index(idx.to_owned()).await?;
        }

        m.create_table(
            Table::create()
                .table(a("audit_alert_hits"))
                .col(ColumnDef::new(a("tenant_id")).uuid().not_null())
                .col(ColumnDef::new(a("rule_id")).string_len(64).not_null())
                .col(ColumnDef::new(a("event_id")).uuid().not_null())
                .col(ColumnDef::new(a("group_key")).string_len(320).not_null())
                // Event time, epoch milliseconds.
                .col(ColumnDef::new(a("at_ms")).big_integer().not_null())
                .primary_key(
                    Index::create()
                        .col(a("tenant_id"))
                        .col(a("rule_id"))
                        .col(a("event_id")),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("audit_alert_hits_window_idx")
                .table(a("audit_alert_hits"))
                .col(a("tenant_id"))
                .col(a("rule_id"))
                .col(a("group_key"))
                .col(a("at_ms"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(a("audit_alert_rule_overrides"))
                .col(ColumnDef::new(a("tenant_id")).uuid().not_null())
                .col(ColumnDef::new(a("rule_id")).string_len(64).not_null())
                // JSON of the override (enabled, severity, window_secs, count, above,
                // business_hours).
                .col(ColumnDef::new(a("settings")).text().not_null())
                .col(ts("updated_at"))
                .col(ColumnDef::new(a("updated_by")).string_len(128).not_null())
                .primary_key(Index::create().col(a("tenant_id")).col(a("rule_id")))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(a("audit_notification_channels"))
                .col(ColumnDef::new(a("id")).uuid().not_null().primary_key())
                .col(ColumnDef::new(a("tenant_id")).uuid().not_null())
                .col(ColumnDef::new(a("kind")).string_len(16).not_null())
                .col(ColumnDef::new(a("name")).string_len(400).not_null())
                // Webhooks: the URL as shown (no query, long path segments masked), and the
                // full URL sealed like the secret (it may carry a token).
                .col(ColumnDef::new(a("url")).string_len(2000))
                .col(ColumnDef::new(a("url_sealed")).text())
                // JSON array of addresses (email channels).
                .col(ColumnDef::new(a("recipients")).text())
                .col(ColumnDef::new(a("min_severity")).string_len(16).not_null())
                .col(ColumnDef::new(a("enabled")).boolean().not_null())
                // AES-256-GCM sealed webhook secret (key under the data directory).
                .col(ColumnDef::new(a("secret_sealed")).text())
                .col(ts("created_at"))
                .col(ColumnDef::new(a("created_by")).string_len(128).not_null())
                .col(ts_null("deleted_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("audit_notification_channels_tenant_idx")
                .table(a("audit_notification_channels"))
                .col(a("tenant_id"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(a("audit_alert_deliveries"))
                .col(ColumnDef::new(a("id")).uuid().not_null().primary_key())
                .col(ColumnDef::new(a("tenant_id")).uuid().not_null())
                .col(ColumnDef::new(a("alert_id")).uuid().not_null())
                .col(ColumnDef::new(a("channel_id")).uuid().not_null())
                .col(ColumnDef::new(a("job_id")).string_len(36).not_null())
                .col(ColumnDef::new(a("attempt")).integer().not_null())
                .col(ColumnDef::new(a("recipient")).string_len(320))
                // delivered | failed
                .col(ColumnDef::new(a("status")).string_len(16).not_null())
                .col(ColumnDef::new(a("status_code")).integer())
                .col(ColumnDef::new(a("error")).text())
                .col(ts("attempted_at"))
                .col(ColumnDef::new(a("duration_ms")).big_integer().not_null())
                .foreign_key(
                    ForeignKey::create()
                        .from(a("audit_alert_deliveries"), a("alert_id"))
                        .to(a("audit_alerts"), a("id")),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(a("audit_alert_deliveries"), a("channel_id"))
                        .to(a("audit_notification_channels"), a("id")),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("audit_alert_deliveries_channel_idx")
                .table(a("audit_alert_deliveries"))
                .col(a("tenant_id"))
                .col(a("channel_id"))
                .col(a("attempted_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("audit_alert_deliveries_alert_idx")
                .table(a("audit_alert_deliveries"))
                .col(a("alert_id"))
                .to_owned(),
        )
        .await?;

        let db = m.get_connection();
        match m.get_database_backend() {
            DbBackend::Postgres => {
                let (t, p) = (CURRENT_TENANT, PLATFORM_SCOPE);
                let mut sql = String::from(
                    "CREATE FUNCTION audit_alert_deliveries_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN
                       RAISE EXCEPTION 'alert delivery records are append-only: % refused', TG_OP
                         USING ERRCODE = 'insufficient_privilege';
                     END $$;
                     CREATE TRIGGER audit_alert_deliveries_append_only BEFORE UPDATE OR DELETE ON audit_alert_deliveries
                       FOR EACH ROW EXECUTE FUNCTION audit_alert_deliveries_refuse_change();",
                );
                for table in TABLES {
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
                db.execute_unprepared(
                    "CREATE TRIGGER audit_alert_deliveries_no_update BEFORE UPDATE ON audit_alert_deliveries
                       BEGIN SELECT RAISE(ABORT, 'alert delivery records are append-only: UPDATE refused'); END;
                     CREATE TRIGGER audit_alert_deliveries_no_delete BEFORE DELETE ON audit_alert_deliveries
                       BEGIN SELECT RAISE(ABORT, 'alert delivery records are append-only: DELETE refused'); END;",
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "audit_alert_deliveries",
            "audit_notification_channels",
            "audit_alert_rule_overrides",
            "audit_alert_hits",
            "audit_alerts",
        ] {
            m.drop_table(Table::drop().table(a(t)).to_owned()).await?;
        }
        if m.get_database_backend() == DbBackend::Postgres {
            m.get_connection()
                .execute_unprepared(
                    "DROP FUNCTION IF EXISTS audit_alert_deliveries_refuse_change()",
                )
                .await?;
        }
        Ok(())
    }
}

/// Mail recipients sealed like webhook secrets (contact data, guideline 7 ③): new channels
/// store them only in `recipients_sealed`; the re-encryption pass moves the readable ones.
pub struct SealRecipients;

impl MigrationName for SealRecipients {
    fn name(&self) -> &str {
        "m20261203_000303_audit_alert_recipients_sealed"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for SealRecipients {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(a("audit_notification_channels"))
                .add_column(ColumnDef::new(a("recipients_sealed")).text())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(a("audit_notification_channels"))
                .drop_column(a("recipients_sealed"))
                .to_owned(),
        )
        .await
    }
}

pub fn migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![Box::new(CreateAlertTables)]
}

/// Alert migrations that come after the trusted-time tables (names sort in list order).
pub fn later_migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![Box::new(SealRecipients)]
}

pub fn grants() -> Vec<TableGrant> {
    vec![
        TableGrant {
            table: "audit_alerts",
            privileges: "SELECT, INSERT, UPDATE",
        },
        TableGrant {
            table: "audit_alert_hits",
            privileges: "SELECT, INSERT, DELETE",
        },
        TableGrant {
            table: "audit_alert_rule_overrides",
            privileges: "SELECT, INSERT, UPDATE, DELETE",
        },
        TableGrant {
            table: "audit_notification_channels",
            privileges: "SELECT, INSERT, UPDATE",
        },
        TableGrant {
            table: "audit_alert_deliveries",
            privileges: "SELECT, INSERT",
        },
    ]
}
