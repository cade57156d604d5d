//! Raw SQL shared by both backends: written with `$n` placeholders, rewritten to SQLite's `?n`.

use sea_orm::{ConnectionTrait, DbBackend, DbErr, ExecResult, QueryResult, Statement, Value};
use std::time::Duration;

pub(crate) fn stmt(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    let sql = match backend {
        DbBackend::Postgres => sql.to_string(),
        _ => sql.replace('$', "?"),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// SQLite refuses a write whose read snapshot went stale (`SQLITE_BUSY`) without waiting; the
/// statements here are idempotent, so they are simply tried again.
fn is_busy(e: &DbErr) -> bool {
    let s = e.to_string();
    s.contains("database is locked")
        || s.contains("SQLITE_BUSY")
        || s.contains("(code: 5)")
        || s.contains("(code: 517)")
}

async fn retry_busy<T, F, Fut>(mut attempt: F) -> Result<T, DbErr>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DbErr>>,
{
    let mut delay = Duration::from_millis(5);
    for _ in 0..20 {
        match attempt().await {
            Err(e) if is_busy(&e) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(200));
            }
            other => return other,
        }
    }
    attempt().await
}

pub(crate) async fn exec(
    c: &impl ConnectionTrait,
    sql: &str,
    values: Vec<Value>,
) -> Result<ExecResult, DbErr> {
    let backend = c.get_database_backend();
    retry_busy(|| c.execute(stmt(backend, sql, values.clone()))).await
}

pub(crate) async fn query(
    c: &impl ConnectionTrait,
    sql: &str,
    values: Vec<Value>,
) -> Result<Vec<QueryResult>, DbErr> {
    let backend = c.get_database_backend();
    retry_busy(|| c.query_all(stmt(backend, sql, values.clone()))).await
}
