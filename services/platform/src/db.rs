//! Database access: one connection setup for SQLite (embedded default) and PostgreSQL, and the
//! tenant-scoped transaction that is the second wall of tenant isolation.

use crate::config::DatabaseConfig;
use crate::secret::{redact_url, Secret};
use sea_orm::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sea_orm::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    SqlxPostgresConnector, SqlxSqliteConnector, Statement, TransactionTrait,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use uuid::Uuid;

/// SQLite lets one connection write at a time. A writer that finds the lock taken waits in
/// SQLite's busy handler, which sleeps (1, 2, 5 … 100 ms) between polls, so under concurrent
/// writes most of a write's time was spent asleep while the lock was already free again (sign-in
/// p99 near one second). Write transactions ([`begin_tenant_write_tx`],
/// [`begin_platform_write_tx`]) therefore run on a second pool of one connection per database
/// file: they queue for it in order and are woken the moment the previous writer commits. Other
/// processes on the same file (CLI commands, a separate job worker) still meet the busy handler.
static SQLITE_WRITERS: OnceLock<Mutex<HashMap<PathBuf, DatabaseConnection>>> = OnceLock::new();

fn sqlite_writers() -> &'static Mutex<HashMap<PathBuf, DatabaseConnection>> {
    SQLITE_WRITERS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The write pool of `db`'s SQLite file, if [`connect`] made one.
pub(crate) fn sqlite_writer(db: &DatabaseConnection) -> Option<DatabaseConnection> {
    if !matches!(db, DatabaseConnection::SqlxSqlitePoolConnection(_)) {
        return None;
    }
    let opts = db.get_sqlite_connection_pool().connect_options();
    let writers = sqlite_writers().lock().ok()?;
    writers.get(opts.get_filename()).cloned()
}

#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    #[error("unsupported database backend '{0}': use a sqlite:// or postgres:// URL")]
    UnsupportedBackend(String),
    #[error("database URL is not valid: {0}")]
    InvalidUrl(String),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot connect to the database at {url}: {reason}")]
    Connect { url: String, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Result<Self, DbSetupError> {
        let scheme = url
            .split_once(':')
            .map(|(s, _)| s.to_ascii_lowercase())
            .ok_or_else(|| {
                DbSetupError::InvalidUrl("it has no scheme such as sqlite:// or postgres://".into())
            })?;
        match scheme.as_str() {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            other => Err(DbSetupError::UnsupportedBackend(other.to_string())),
        }
    }

    pub fn of(db: &impl ConnectionTrait) -> Self {
        match db.get_database_backend() {
            DbBackend::Postgres => Backend::Postgres,
            _ => Backend::Sqlite,
        }
    }
}

/// Connects and configures the pool. SQLite files (and their directory) are created on first use.
pub async fn connect(
    url: &Secret,
    cfg: &DatabaseConfig,
) -> Result<DatabaseConnection, DbSetupError> {
    let raw = url.expose();
    let connect_err = |e: sea_orm::sqlx::Error| DbSetupError::Connect {
        url: redact_url(raw),
        reason: scrub(&e.to_string(), raw),
    };
    match Backend::of_url(raw)? {
        Backend::Sqlite => {
            let opts = SqliteConnectOptions::from_str(raw)
                .map_err(|e| DbSetupError::InvalidUrl(scrub(&e.to_string(), raw)))?;
            let path = opts.get_filename().to_path_buf();
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| DbSetupError::DataDir {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
            let busy = Duration::from_millis(cfg.sqlite_busy_timeout_ms);
            let opts = opts
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(busy);
            let pool = SqlitePoolOptions::new()
                .max_connections(cfg.max_connections)
                .min_connections(cfg.min_connections.min(cfg.max_connections))
                .acquire_timeout(Duration::from_secs(cfg.connect_timeout_secs))
                .connect_with(opts.clone())
                .await
                .map_err(connect_err)?;
            let db = SqlxSqliteConnector::from_sqlx_sqlite_pool(pool);
            // An in-memory database is private to each connection: no separate writer.
            if !opts.get_filename().as_os_str().is_empty()
                && opts.get_filename() != std::path::Path::new(":memory:")
            {
                let key = opts.get_filename().to_path_buf();
                let mut writers = sqlite_writers().lock().map_err(|_| DbSetupError::Connect {
                    url: redact_url(raw),
                    reason: "the SQLite writer registry is unusable".into(),
                })?;
                writers.entry(key).or_insert_with(|| {
                    // Waiting writers queue here as long as they would have waited for the lock.
                    let writer = SqlitePoolOptions::new()
                        .max_connections(1)
                        .min_connections(0)
                        .idle_timeout(Duration::from_secs(60))
                        .acquire_timeout(busy.max(Duration::from_secs(1)))
                        .connect_lazy_with(opts);
                    SqlxSqliteConnector::from_sqlx_sqlite_pool(writer)
                });
            }
            Ok(db)
        }
        Backend::Postgres => {
            let opts = PgConnectOptions::from_str(raw)
                .map_err(|e| DbSetupError::InvalidUrl(scrub(&e.to_string(), raw)))?
                .application_name("anshin");
            let pool = PgPoolOptions::new()
                .max_connections(cfg.max_connections)
                .min_connections(cfg.min_connections.min(cfg.max_connections))
                .acquire_timeout(Duration::from_secs(cfg.connect_timeout_secs))
                .connect_with(opts)
                .await
                .map_err(connect_err)?;
            Ok(SqlxPostgresConnector::from_sqlx_postgres_pool(pool))
        }
    }
}

/// Driver errors sometimes echo the connection string; never let the password through.
fn scrub(msg: &str, raw_url: &str) -> String {
    let mut out = msg.replace(raw_url, &redact_url(raw_url));
    if let Ok(u) = url::Url::parse(raw_url) {
        if let Some(p) = u.password().filter(|p| !p.is_empty()) {
            out = out.replace(p, "[redacted]");
        }
    }
    out
}

/// SQL for the tenant a PostgreSQL transaction is bound to (`app.tenant_id`), or NULL when
/// unset; every row-level-security policy compares against it.
pub const CURRENT_TENANT: &str = "nullif(current_setting('app.tenant_id', true), '')::uuid";
/// SQL that is true in platform scope: set only by operator commands run from the CLI and by
/// background jobs, never by an HTTP request.
pub const PLATFORM_SCOPE: &str = "coalesce(current_setting('app.platform', true), '') = 'on'";

/// Begins a transaction bound to one tenant. On PostgreSQL this sets `app.tenant_id` for the
/// transaction only (`set_config(..., true)` is `SET LOCAL` with a bind parameter), which every
/// row-level-security policy reads. On SQLite, isolation rests on the query filters (wall 1).
pub async fn begin_tenant_tx(
    db: &DatabaseConnection,
    tenant_id: Uuid,
) -> Result<DatabaseTransaction, DbErr> {
    let tx = db.begin().await?;
    if Backend::of(db) == Backend::Postgres {
        tx.execute(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT set_config('app.tenant_id', $1, true)",
            [tenant_id.to_string().into()],
        ))
        .await?;
    }
    Ok(tx)
}

/// Begins a transaction in platform scope: operator commands run from the CLI (create a provider,
/// issue a token, list every tenant) and credential lookups before any tenant is known. HTTP
/// handlers must use [`begin_tenant_tx`]; nothing in a request binds platform scope to its data.
pub async fn begin_platform_tx(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    let tx = db.begin().await?;
    if Backend::of(db) == Backend::Postgres {
        tx.execute_unprepared("SELECT set_config('app.platform', 'on', true)")
            .await?;
    }
    Ok(tx)
}

/// A connection for tenant-scoped reads. On PostgreSQL it is a transaction with `app.tenant_id`
/// set (RLS needs it); on SQLite, which has no RLS, it is the pool itself, sparing a
/// BEGIN/COMMIT per read. Without a transaction on SQLite, successive statements do not share a
/// snapshot: use it for reads that are one statement or need no consistent snapshot.
pub enum TenantReader {
    Pool(DatabaseConnection),
    Tx(DatabaseTransaction),
}

impl TenantReader {
    /// Ends the read (commits the PostgreSQL transaction).
    pub async fn finish(self) -> Result<(), DbErr> {
        match self {
            TenantReader::Pool(_) => Ok(()),
            TenantReader::Tx(tx) => tx.commit().await,
        }
    }
}

pub async fn tenant_reader(
    db: &DatabaseConnection,
    tenant_id: Uuid,
) -> Result<TenantReader, DbErr> {
    match Backend::of(db) {
        Backend::Sqlite => Ok(TenantReader::Pool(db.clone())),
        Backend::Postgres => Ok(TenantReader::Tx(begin_tenant_tx(db, tenant_id).await?)),
    }
}

/// [`tenant_reader`] in platform scope: lookups before any tenant is known (a sign-in finding
/// its account). On SQLite the pool itself, on PostgreSQL a platform-scope transaction.
pub async fn platform_reader(db: &DatabaseConnection) -> Result<TenantReader, DbErr> {
    match Backend::of(db) {
        Backend::Sqlite => Ok(TenantReader::Pool(db.clone())),
        Backend::Postgres => Ok(TenantReader::Tx(begin_platform_tx(db).await?)),
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for TenantReader {
    fn get_database_backend(&self) -> DbBackend {
        match self {
            TenantReader::Pool(c) => c.get_database_backend(),
            TenantReader::Tx(t) => t.get_database_backend(),
        }
    }
    async fn execute(&self, stmt: Statement) -> Result<sea_orm::ExecResult, DbErr> {
        match self {
            TenantReader::Pool(c) => c.execute(stmt).await,
            TenantReader::Tx(t) => t.execute(stmt).await,
        }
    }
    async fn execute_unprepared(&self, sql: &str) -> Result<sea_orm::ExecResult, DbErr> {
        match self {
            TenantReader::Pool(c) => c.execute_unprepared(sql).await,
            TenantReader::Tx(t) => t.execute_unprepared(sql).await,
        }
    }
    async fn query_one(&self, stmt: Statement) -> Result<Option<sea_orm::QueryResult>, DbErr> {
        match self {
            TenantReader::Pool(c) => c.query_one(stmt).await,
            TenantReader::Tx(t) => t.query_one(stmt).await,
        }
    }
    async fn query_all(&self, stmt: Statement) -> Result<Vec<sea_orm::QueryResult>, DbErr> {
        match self {
            TenantReader::Pool(c) => c.query_all(stmt).await,
            TenantReader::Tx(t) => t.query_all(stmt).await,
        }
    }
}

/// [`begin_tenant_tx`] for a transaction that will write after reading. SQLite refuses, without
/// waiting, to upgrade a read transaction whose snapshot another writer has moved past; taking
/// the write lock first makes the transaction wait its turn (`busy_timeout`) instead.
pub async fn begin_tenant_write_tx(
    db: &DatabaseConnection,
    tenant_id: Uuid,
) -> Result<DatabaseTransaction, DbErr> {
    let writer = sqlite_writer(db);
    let tx = begin_tenant_tx(writer.as_ref().unwrap_or(db), tenant_id).await?;
    lock_for_write(&tx).await?;
    Ok(tx)
}

/// [`begin_platform_tx`] for a transaction that will write after reading (see
/// [`begin_tenant_write_tx`]).
pub async fn begin_platform_write_tx(
    db: &DatabaseConnection,
) -> Result<DatabaseTransaction, DbErr> {
    let writer = sqlite_writer(db);
    let tx = begin_platform_tx(writer.as_ref().unwrap_or(db)).await?;
    lock_for_write(&tx).await?;
    Ok(tx)
}

/// Runs `work` — a whole write transaction — on a runtime of its own when `db` is SQLite.
///
/// SQLite has one writer, so while a write transaction is open every other writer waits. Run
/// on a request's own worker, each statement's answer wakes the transaction behind the other
/// requests queued on that worker (WebAuthn verification, JSON), and the transaction stays open
/// for many times its own work. On the writer runtime, whose one thread runs nothing else, it
/// resumes at once. PostgreSQL transactions run where they are (writers do not exclude each
/// other there).
pub async fn on_writer<F, T>(db: &DatabaseConnection, work: F) -> T
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    if Backend::of(db) != Backend::Sqlite {
        return work.await;
    }
    let Some(rt) = writer_runtime() else {
        return work.await;
    };
    match rt.spawn(work).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // The runtime lives as long as the process; a cancelled task means it is shutting down.
        Err(e) => panic!("the SQLite writer runtime stopped: {e}"),
    }
}

pub(crate) fn writer_runtime() -> Option<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("anshin-sqlite-writer")
            .enable_all()
            .build()
            .map_err(|e| tracing::warn!(error = %e, "no SQLite writer runtime; write transactions run on the request workers"))
            .ok()
    })
    .as_ref()
}

async fn lock_for_write(tx: &DatabaseTransaction) -> Result<(), DbErr> {
    if Backend::of(tx) == Backend::Sqlite {
        tx.execute_unprepared("UPDATE anshin_write_lock SET id = id WHERE 0")
            .await?;
    }
    Ok(())
}

/// Privileges the application role needs on one table (PostgreSQL only).
#[derive(Debug, Clone)]
pub struct TableGrant {
    pub table: &'static str,
    pub privileges: &'static str,
}

/// Grants the application role exactly what each service declares, after migrations ran as the
/// owner. The role name comes from the application's own connection URL.
pub async fn apply_grants(
    owner: &DatabaseConnection,
    app_role: &str,
    grants: &[TableGrant],
    functions: &[&str],
) -> Result<(), DbErr> {
    if Backend::of(owner) != Backend::Postgres {
        return Ok(());
    }
    let role = quote_ident(app_role);
    owner
        .execute_unprepared(&format!("GRANT USAGE ON SCHEMA public TO {role}"))
        .await?;
    for g in grants {
        owner
            .execute_unprepared(&format!(
                "REVOKE ALL ON {table} FROM {role}; GRANT {privs} ON {table} TO {role}",
                table = quote_ident(g.table),
                privs = g.privileges
            ))
            .await?;
    }
    for f in functions {
        owner
            .execute_unprepared(&format!("GRANT EXECUTE ON FUNCTION {f} TO {role}"))
            .await?;
    }
    Ok(())
}

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Whether a database error is a unique-constraint violation, on either backend.
pub fn is_unique_violation(e: &DbErr) -> bool {
    matches!(
        e.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

/// Role name from a PostgreSQL URL (the `user` part), used to grant privileges to the app role.
pub fn role_of_url(url: &Secret) -> Option<String> {
    let u = url::Url::parse(url.expose()).ok()?;
    let user = u.username();
    if user.is_empty() {
        None
    } else {
        Some(user.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_detection() {
        assert_eq!(Backend::of_url("sqlite://x.db").unwrap(), Backend::Sqlite);
        assert_eq!(
            Backend::of_url("postgresql://h/db").unwrap(),
            Backend::Postgres
        );
        let e = Backend::of_url("mysql://h/db").unwrap_err();
        assert!(e
            .to_string()
            .contains("unsupported database backend 'mysql'"));
        assert!(Backend::of_url("nonsense").is_err());
    }

    #[test]
    fn scrub_removes_passwords() {
        let raw = "postgres://u:pa55word@h/db";
        assert!(
            !scrub("failed for postgres://u:pa55word@h/db (pa55word)", raw).contains("pa55word")
        );
    }

    /// Concurrent write transactions queue for the file's writer instead of polling SQLite's
    /// lock: with a 50 ms busy timeout, 48 writers that each hold the lock for 5 ms all commit
    /// (through the busy handler most of them would fail with "database is locked").
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_sqlite_writers_queue_instead_of_failing_busy() {
        let dir = tempfile::tempdir().unwrap();
        let url = Secret::new(format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("w.db").display()
        ));
        let cfg = DatabaseConfig {
            sqlite_busy_timeout_ms: 50,
            ..DatabaseConfig::default()
        };
        let db = connect(&url, &cfg).await.unwrap();
        db.execute_unprepared(
            "CREATE TABLE anshin_write_lock (id INTEGER PRIMARY KEY); CREATE TABLE n (v INTEGER NOT NULL)",
        )
        .await
        .unwrap();
        assert!(sqlite_writer(&db).is_some());
        let tasks: Vec<_> = (0..48)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    let tx = begin_platform_write_tx(&db).await?;
                    tx.execute_unprepared(&format!("INSERT INTO n (v) VALUES ({i})"))
                        .await?;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    tx.commit().await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let n = db
            .query_one(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT COUNT(*) AS c FROM n",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get::<i64>("", "c")
            .unwrap();
        assert_eq!(n, 48);
    }

    #[tokio::test]
    async fn sqlite_is_configured_for_wal_and_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let url = Secret::new(format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("sub/a.db").display()
        ));
        let db = connect(&url, &DatabaseConfig::default()).await.unwrap();
        let row = db
            .query_one(Statement::from_string(
                DbBackend::Sqlite,
                "PRAGMA journal_mode",
            ))
            .await
            .unwrap()
            .unwrap();
        let mode: String = row.try_get_by_index(0).unwrap();
        assert_eq!(mode, "wal");
        let row = db
            .query_one(Statement::from_string(
                DbBackend::Sqlite,
                "PRAGMA foreign_keys",
            ))
            .await
            .unwrap()
            .unwrap();
        let fk: i64 = row.try_get_by_index(0).unwrap();
        assert_eq!(fk, 1);
        let row = db
            .query_one(Statement::from_string(
                DbBackend::Sqlite,
                "PRAGMA busy_timeout",
            ))
            .await
            .unwrap()
            .unwrap();
        let bt: i64 = row.try_get_by_index(0).unwrap();
        assert_eq!(bt, 5000);
    }
}
