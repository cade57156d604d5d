//! Migrations of every service, applied in order by the schema owner, then the application
//! role's grants.

use anshin_platform::config::Config;
use anshin_platform::db::{self, Backend, TableGrant};
use anshin_platform::secret::Secret;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use sea_orm_migration::{MigrationTrait, MigratorTrait};

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut all = anshin_platform::migration::migrations();
        all.extend(anshin_tenancy::migrations());
        all.extend(anshin_identity::migrations());
        all.extend(anshin_audit::migrations());
        all.extend(anshin_keys::migrations());
        all
    }
}

fn grants() -> Vec<TableGrant> {
    let mut all = vec![TableGrant {
        table: "seaql_migrations",
        privileges: "SELECT",
    }];
    all.extend(anshin_platform::migration::grants());
    all.extend(anshin_tenancy::grants());
    all.extend(anshin_identity::grants());
    all.extend(anshin_audit::grants());
    all.extend(anshin_keys::grants());
    all
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Setup(#[from] db::DbSetupError),
    #[error("applying migrations failed: {0}")]
    Apply(sea_orm::DbErr),
    #[error("granting the application role its privileges failed: {0}")]
    Grant(sea_orm::DbErr),
}

/// Applies pending migrations with the owner connection and grants the app role its privileges.
pub async fn run(config: &Config) -> Result<usize, MigrateError> {
    let owner_url = config.migration_database_url();
    let app_url: Secret = config.database_url();
    // Check both URLs before touching either database, so a bad setting changes nothing.
    if Backend::of_url(app_url.expose())? != Backend::of_url(owner_url.expose())? {
        return Err(MigrateError::Setup(db::DbSetupError::InvalidUrl(
            "ANSHIN_DATABASE_URL and ANSHIN_MIGRATION_DATABASE_URL must use the same database backend".into(),
        )));
    }
    let owner = db::connect(&owner_url, &config.database).await?;
    let pending = Migrator::get_pending_migrations(&owner)
        .await
        .map_err(MigrateError::Apply)?
        .len();
    Migrator::up(&owner, None)
        .await
        .map_err(MigrateError::Apply)?;
    if Backend::of(&owner) == Backend::Postgres && app_url.expose() != owner_url.expose() {
        if let Some(role) = db::role_of_url(&app_url) {
            db::apply_grants(&owner, &role, &grants(), &[])
                .await
                .map_err(MigrateError::Grant)?;
        }
    }
    owner.close().await.ok();
    Ok(pending)
}

/// On PostgreSQL, the server's role must be subject to row-level security.
pub async fn check_app_role(db: &DatabaseConnection) -> Result<(), String> {
    if Backend::of(db) != Backend::Postgres {
        return Ok(());
    }
    let row = db
        .query_one(Statement::from_string(
            DbBackend::Postgres,
            "SELECT current_user::text AS name, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
        ))
        .await
        .map_err(|e| format!("cannot inspect the database role: {e}"))?
        .ok_or("cannot inspect the database role")?;
    let name: String = row.try_get("", "name").map_err(|e| e.to_string())?;
    let sup: bool = row.try_get("", "rolsuper").map_err(|e| e.to_string())?;
    let bypass: bool = row.try_get("", "rolbypassrls").map_err(|e| e.to_string())?;
    if sup || bypass {
        return Err(format!(
            "the database role '{name}' is a superuser or has BYPASSRLS, which would switch off row-level security; \
             connect the server as a role without them (ANSHIN_DATABASE_URL) and run migrations as the owner (ANSHIN_MIGRATION_DATABASE_URL)"
        ));
    }
    Ok(())
}

/// Registers every existing tenant with the audit service (tenants created before the audit
/// trail existed). Idempotent, so it runs at every start.
pub async fn register_tenants_with_audit(db: &DatabaseConnection) -> Result<(), String> {
    let tenants = anshin_tenancy::TenancyService::new(db.clone())
        .admin_list()
        .await
        .map_err(|e| format!("listing tenants for the audit trail failed: {e}"))?;
    let tx = db::begin_platform_tx(db).await.map_err(|e| e.to_string())?;
    for t in tenants {
        anshin_audit::register_tenant(&tx, t.id, t.parent_id.unwrap_or(t.id))
            .await
            .map_err(|e| {
                format!(
                    "registering tenant {} with the audit trail failed: {e}",
                    t.id
                )
            })?;
    }
    tx.commit().await.map_err(|e| e.to_string())
}
