//! What the key service's unit tests share: a migrated SQLite database and the local provider
//! in a temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::provider::local::LocalProvider;
use crate::service::{KeyService, KeySettings, TenantDirectory, TenantInfo};
use anshin_platform::config::DatabaseConfig;
use anshin_platform::TenantKind;
use sea_orm::DatabaseConnection;
use sea_orm_migration::{MigrationTrait, MigratorTrait};
use std::sync::Arc;
use uuid::Uuid;

/// Every tenant asked about is an institution of its own.
pub(crate) struct AnyTenant;

#[async_trait::async_trait]
impl TenantDirectory for AnyTenant {
    async fn tenant(&self, id: Uuid) -> Option<TenantInfo> {
        Some(TenantInfo {
            id,
            kind: TenantKind::Institution,
            provider_id: id,
        })
    }
}

struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut all = anshin_platform::migration::migrations();
        all.extend(anshin_audit::migrations());
        all.extend(crate::migrations());
        all
    }
}

pub(crate) struct TestKeys {
    pub db: DatabaseConnection,
    provider: Arc<LocalProvider>,
    _dir: tempfile::TempDir,
}

impl TestKeys {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = anshin_platform::secret::Secret::new(format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("k.db").display()
        ));
        let db = anshin_platform::db::connect(&url, &DatabaseConfig::default())
            .await
            .unwrap();
        Migrator::up(&db, None).await.unwrap();
        let provider = Arc::new(LocalProvider::open(&dir.path().join("keys"), None).unwrap());
        Self {
            db,
            provider,
            _dir: dir,
        }
    }

    /// A key service as one replica (or one process start) would build it: several share the
    /// database and the provider's key material.
    pub fn service(&self) -> KeyService {
        KeyService::new(
            self.db.clone(),
            self.provider.clone(),
            Arc::new(AnyTenant),
            KeySettings::default(),
        )
    }
}
