//! Key service tables: the tenant map (for provider reads under row-level security), each
//! tenant's KEK records, and the data keys Anshin stores wrapped under them.

use anshin_platform::db::{TableGrant, CURRENT_TENANT, PLATFORM_SCOPE};
use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;

pub struct CreateKeyTables;

impl MigrationName for CreateKeyTables {
    fn name(&self) -> &str {
        "m20261122_000400_keys"
    }
}

fn a(s: &str) -> Alias {
    Alias::new(s)
}

fn ts(name: &str) -> ColumnDef {
    ColumnDef::new(a(name))
        .timestamp_with_time_zone()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for CreateKeyTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(a("key_tenants"))
                .col(
                    ColumnDef::new(a("tenant_id"))
                        .uuid()
                        .not_null()
                        .primary_key(),
                )
                // The provider a tenant belongs to (a provider's own id for a provider).
                .col(ColumnDef::new(a("provider_id")).uuid().not_null())
                .col(ColumnDef::new(a("kind")).string_len(16).not_null())
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(a("key_keks"))
                .col(ColumnDef::new(a("id")).uuid().not_null().primary_key())
                .col(ColumnDef::new(a("tenant_id")).uuid().not_null())
                .col(ColumnDef::new(a("provider")).string_len(16).not_null())
                .col(ColumnDef::new(a("key_id")).string_len(2048).not_null())
                .col(ColumnDef::new(a("alias")).string_len(256))
                // managed (Anshin created it) or byok (the tenant's own KMS key).
                .col(ColumnDef::new(a("origin")).string_len(16).not_null())
                // active (wraps new keys), retired (still unwraps) or erased.
                .col(ColumnDef::new(a("status")).string_len(16).not_null())
                .col(ColumnDef::new(a("key_state")).string_len(32).not_null())
                .col(ColumnDef::new(a("rotation_enabled")).boolean())
                .col(ts("created_at").not_null())
                .col(ts("rotated_at"))
                .col(ts("retired_at"))
                .col(ts("last_used_at"))
                // ok, unreachable (provider down) or denied (a BYOK grant was revoked).
                .col(ColumnDef::new(a("health")).string_len(16).not_null())
                .col(ts("health_checked_at"))
                .col(ColumnDef::new(a("health_detail")).string_len(512))
                .col(ts("erased_at"))
                .col(ts("deletion_date"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("key_keks_tenant_idx")
                .table(a("key_keks"))
                .col(a("tenant_id"))
                .col(a("status"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(a("key_data_keys"))
                .col(ColumnDef::new(a("id")).uuid().not_null().primary_key())
                .col(ColumnDef::new(a("tenant_id")).uuid().not_null())
                .col(ColumnDef::new(a("kek_id")).uuid().not_null())
                .col(ColumnDef::new(a("purpose")).string_len(64).not_null())
                .col(ColumnDef::new(a("wrapped")).binary().not_null())
                .col(ts("created_at").not_null())
                .col(ts("rewrapped_at"))
                .foreign_key(
                    ForeignKey::create()
                        .name("key_data_keys_kek_fk")
                        .from(a("key_data_keys"), a("kek_id"))
                        .to(a("key_keks"), a("id")),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("key_data_keys_kek_idx")
                .table(a("key_data_keys"))
                .col(a("kek_id"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("key_data_keys_tenant_idx")
                .table(a("key_data_keys"))
                .col(a("tenant_id"))
                .to_owned(),
        )
        .await?;

        let db = m.get_connection();
        // One active KEK per tenant, enforced by the database (both backends support partial
        // unique indexes).
        db.execute_unprepared(
            "CREATE UNIQUE INDEX key_keks_one_active ON key_keks (tenant_id) WHERE status = 'active'",
        )
        .await?;
        if db.get_database_backend() == DbBackend::Postgres {
            let (t, p) = (CURRENT_TENANT, PLATFORM_SCOPE);
            let mut sql = format!(
                "ALTER TABLE key_tenants ENABLE ROW LEVEL SECURITY;
                 ALTER TABLE key_tenants FORCE ROW LEVEL SECURITY;
                 CREATE POLICY key_tenants_isolation ON key_tenants
                   USING (tenant_id = {t} OR provider_id = {t} OR {p})
                   WITH CHECK (tenant_id = {t} OR provider_id = {t} OR {p});"
            );
            for table in ["key_keks", "key_data_keys"] {
                sql.push_str(&format!(
                    "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
                     ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
                     CREATE POLICY {table}_isolation ON {table}
                       USING (tenant_id = {t} OR tenant_id IN (SELECT tenant_id FROM key_tenants WHERE provider_id = {t}) OR {p})
                       WITH CHECK (tenant_id = {t} OR tenant_id IN (SELECT tenant_id FROM key_tenants WHERE provider_id = {t}) OR {p});"
                ));
            }
            db.execute_unprepared(&sql).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["key_data_keys", "key_keks", "key_tenants"] {
            m.drop_table(Table::drop().table(a(t)).to_owned()).await?;
        }
        Ok(())
    }
}

/// Blind-index keys: one per purpose, sealed under the platform's KEK. Only platform-scope
/// transactions see them (sign-in looks up accounts before any tenant is known).
pub struct CreateIndexKeys;

impl MigrationName for CreateIndexKeys {
    fn name(&self) -> &str {
        "m20261203_000401_key_index_keys"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateIndexKeys {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(a("key_index_keys"))
                .col(
                    ColumnDef::new(a("purpose"))
                        .string_len(64)
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(a("sealed")).binary().not_null())
                .col(ts("created_at").not_null())
                .to_owned(),
        )
        .await?;
        let db = m.get_connection();
        if db.get_database_backend() == DbBackend::Postgres {
            let p = PLATFORM_SCOPE;
            db.execute_unprepared(&format!(
                "ALTER TABLE key_index_keys ENABLE ROW LEVEL SECURITY;
                 ALTER TABLE key_index_keys FORCE ROW LEVEL SECURITY;
                 CREATE POLICY key_index_keys_platform ON key_index_keys
                   USING ({p}) WITH CHECK ({p});"
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(a("key_index_keys")).to_owned())
            .await
    }
}

pub fn migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![Box::new(CreateKeyTables), Box::new(CreateIndexKeys)]
}

pub fn grants() -> Vec<TableGrant> {
    vec![
        TableGrant {
            table: "key_tenants",
            privileges: "SELECT, INSERT",
        },
        TableGrant {
            table: "key_keks",
            privileges: "SELECT, INSERT, UPDATE",
        },
        // Deleting wrapped data keys is what crypto-erase does.
        TableGrant {
            table: "key_data_keys",
            privileges: "SELECT, INSERT, UPDATE, DELETE",
        },
        TableGrant {
            table: "key_index_keys",
            privileges: "SELECT, INSERT",
        },
    ]
}
