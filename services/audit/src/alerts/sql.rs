//! Raw SQL shared by both backends: written with `$n` placeholders, which SQLite reads as `?n`.

use sea_orm::{ConnectionTrait, DbBackend, DbErr, ExecResult, QueryResult, Statement, Value};

pub(crate) fn stmt(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    let sql = match backend {
        DbBackend::Postgres => sql.to_string(),
        _ => sql.replace('$', "?"),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

pub(crate) async fn exec<C: ConnectionTrait>(
    c: &C,
    sql: &str,
    values: Vec<Value>,
) -> Result<ExecResult, DbErr> {
    c.execute(stmt(c.get_database_backend(), sql, values)).await
}

pub(crate) async fn query<C: ConnectionTrait>(
    c: &C,
    sql: &str,
    values: Vec<Value>,
) -> Result<Vec<QueryResult>, DbErr> {
    c.query_all(stmt(c.get_database_backend(), sql, values))
        .await
}

pub(crate) async fn query_one<C: ConnectionTrait>(
    c: &C,
    sql: &str,
    values: Vec<Value>,
) -> Result<Option<QueryResult>, DbErr> {
    c.query_one(stmt(c.get_database_backend(), sql, values))
        .await
}
