use crate::db::TableGrant;
use sea_orm_migration::prelude::*;

/// An empty table whose only use is a no-op `UPDATE` that takes SQLite's write lock at the start
/// of a read-then-write transaction (see `db::begin_tenant_write_tx`).
pub struct CreateWriteLock;

impl MigrationName for CreateWriteLock {
    fn name(&self) -> &str {
        "m20261122_000000_platform_write_lock"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateWriteLock {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Alias::new("anshin_write_lock"))
                .col(
                    ColumnDef::new(Alias::new("id"))
                        .integer()
                        .not_null()
                        .primary_key(),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(
            Table::drop()
                .table(Alias::new("anshin_write_lock"))
                .to_owned(),
        )
        .await
    }
}

/// Migrations of the platform itself, applied before any service's.
pub fn migrations() -> Vec<Box<dyn MigrationTrait>> {
    let mut all: Vec<Box<dyn MigrationTrait>> = vec![Box::new(CreateWriteLock)];
    all.extend(crate::jobs::migrations());
    all
}

pub fn grants() -> Vec<TableGrant> {
    let mut all = vec![TableGrant {
        table: "anshin_write_lock",
        privileges: "SELECT, UPDATE",
    }];
    all.extend(crate::jobs::grants());
    all
}
