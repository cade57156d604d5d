use anshin_platform::db::TableGrant;
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct CreateTenancyTables;

impl MigrationName for CreateTenancyTables {
    fn name(&self) -> &str {
        "m20261122_000100_tenancy"
    }
}

pub use anshin_platform::db::{CURRENT_TENANT, PLATFORM_SCOPE};

#[async_trait::async_trait]
impl MigrationTrait for CreateTenancyTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Alias::new("tenants"))
                .col(
                    ColumnDef::new(Alias::new("id"))
                        .uuid()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(Alias::new("kind")).string_len(16).not_null())
                .col(
                    ColumnDef::new(Alias::new("slug"))
                        .string_len(63)
                        .not_null()
                        .unique_key(),
                )
                .col(
                    ColumnDef::new(Alias::new("name"))
                        .string_len(200)
                        .not_null(),
                )
                .col(ColumnDef::new(Alias::new("parent_id")).uuid().null())
                .col(
                    ColumnDef::new(Alias::new("institution_type"))
                        .string_len(16)
                        .null(),
                )
                .col(
                    ColumnDef::new(Alias::new("reference_pattern"))
                        .string_len(4)
                        .null(),
                )
                .col(ColumnDef::new(Alias::new("bed_count")).integer().null())
                .col(ColumnDef::new(Alias::new("contract_start")).date().null())
                .col(ColumnDef::new(Alias::new("contract_end")).date().null())
                .col(
                    ColumnDef::new(Alias::new("status"))
                        .string_len(16)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Alias::new("created_at"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Alias::new("updated_at"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("tenants_parent_fk")
                        .from(Alias::new("tenants"), Alias::new("parent_id"))
                        .to(Alias::new("tenants"), Alias::new("id")),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("tenants_parent_idx")
                .table(Alias::new("tenants"))
                .col(Alias::new("parent_id"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("api_tokens"))
                .col(
                    ColumnDef::new(Alias::new("id"))
                        .uuid()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(Alias::new("tenant_id")).uuid().not_null())
                .col(
                    ColumnDef::new(Alias::new("name"))
                        .string_len(200)
                        .not_null(),
                )
                .col(ColumnDef::new(Alias::new("role")).string_len(32).not_null())
                .col(
                    ColumnDef::new(Alias::new("token_hash"))
                        .string_len(64)
                        .not_null()
                        .unique_key(),
                )
                .col(
                    ColumnDef::new(Alias::new("prefix"))
                        .string_len(16)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Alias::new("created_at"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Alias::new("expires_at"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Alias::new("revoked_at"))
                        .timestamp_with_time_zone()
                        .null(),
                )
                .col(
                    ColumnDef::new(Alias::new("last_used_at"))
                        .timestamp_with_time_zone()
                        .null(),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("api_tokens_tenant_fk")
                        .from(Alias::new("api_tokens"), Alias::new("tenant_id"))
                        .to(Alias::new("tenants"), Alias::new("id")),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("api_tokens_tenant_idx")
                .table(Alias::new("api_tokens"))
                .col(Alias::new("tenant_id"))
                .to_owned(),
        )
        .await?;
        if m.get_database_backend() == DbBackend::Postgres {
            let db = m.get_connection();
            // Wall 2: even a query with no tenant filter sees only the bound tenant's rows.
            db.execute_unprepared(&format!(
                "ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
                 ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
                 CREATE POLICY tenants_isolation ON tenants
                   USING (id = {t} OR parent_id = {t} OR {p})
                   WITH CHECK (id = {t} OR parent_id = {t} OR {p});
                 ALTER TABLE api_tokens ENABLE ROW LEVEL SECURITY;
                 ALTER TABLE api_tokens FORCE ROW LEVEL SECURITY;
                 CREATE POLICY api_tokens_isolation ON api_tokens
                   USING (tenant_id = {t} OR tenant_id IN (SELECT id FROM tenants WHERE parent_id = {t}) OR {p})
                   WITH CHECK (tenant_id = {t} OR tenant_id IN (SELECT id FROM tenants WHERE parent_id = {t}) OR {p});",
                t = CURRENT_TENANT,
                p = PLATFORM_SCOPE
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Alias::new("api_tokens")).to_owned())
            .await?;
        m.drop_table(Table::drop().table(Alias::new("tenants")).to_owned())
            .await
    }
}

pub fn migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![Box::new(CreateTenancyTables)]
}

/// Nothing is hard-deleted: the application role gets no DELETE.
pub fn grants() -> Vec<TableGrant> {
    vec![
        TableGrant {
            table: "tenants",
            privileges: "SELECT, INSERT, UPDATE",
        },
        TableGrant {
            table: "api_tokens",
            privileges: "SELECT, INSERT, UPDATE",
        },
    ]
}
