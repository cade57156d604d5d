//! All-or-nothing batches of conditional writes: the hot write paths (a sign-in's ceremony,
//! session and audit event) as few round trips to the database as the backend allows.

use crate::db::{begin_platform_tx, sqlite_writer, writer_runtime, Backend};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait, Values,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use tokio::sync::{mpsc, oneshot};

/// Batches committed together at most, when that many wait for the writer.
const GROUP_MAX: usize = 64;

/// Writes `statements` in one platform-scope transaction that commits only when together they
/// change exactly `expected` rows; otherwise nothing is written and the answer is `false`.
///
/// The count is how a condition that no longer holds is noticed, so every statement must be an
/// `INSERT`, `UPDATE` or `DELETE` whose effect is known in advance: an insert of one row, an
/// update of at most one row by key with its condition in the `WHERE` clause. A lone statement
/// runs without a transaction (a statement is atomic), so it must not be able to change more
/// than `expected` rows.
///
/// On SQLite the statements go to the file's writer connection as one multi-statement query,
/// and batches that wait for the writer at the same time are committed together (group
/// commit): SQLite's one write lock is held for about one round trip to its worker thread per
/// batch instead of one per statement plus a transaction of its own. Should any batch of a
/// group fail its count or a statement, the group is rolled back and each of its batches runs
/// on its own, so one batch never decides another's fate. PostgreSQL runs the statements one by
/// one in a transaction of their own.
pub async fn write_all_or_nothing(
    db: &DatabaseConnection,
    statements: Vec<Statement>,
    expected: u64,
) -> Result<bool, DbErr> {
    if statements.is_empty() {
        return Ok(expected == 0);
    }
    let queue = match Backend::of(db) {
        Backend::Sqlite => writer_queue(db),
        Backend::Postgres => None,
    };
    let Some(queue) = queue else {
        return one_by_one(db, statements, expected).await;
    };
    let (reply, answer) = oneshot::channel();
    let job = Job {
        single: statements.len() == 1,
        statement: join(statements)?,
        expected,
        reply,
    };
    if queue.send(job).is_err() {
        return Err(DbErr::Custom("the SQLite writer has stopped".into()));
    }
    answer
        .await
        .map_err(|_| DbErr::Custom("the SQLite writer has stopped".into()))?
}

/// One caller's batch, waiting for the writer.
struct Job {
    /// One statement only: atomic by itself, it needs no transaction.
    single: bool,
    statement: Statement,
    expected: u64,
    reply: oneshot::Sender<Result<bool, DbErr>>,
}

type Queues = Mutex<HashMap<PathBuf, mpsc::UnboundedSender<Job>>>;

/// The batch queue of `db`'s SQLite file, served by one task on the writer runtime.
fn writer_queue(db: &DatabaseConnection) -> Option<mpsc::UnboundedSender<Job>> {
    static QUEUES: OnceLock<Queues> = OnceLock::new();
    let writer = sqlite_writer(db)?;
    let runtime = writer_runtime()?;
    let file = db
        .get_sqlite_connection_pool()
        .connect_options()
        .get_filename()
        .to_path_buf();
    let mut queues = QUEUES.get_or_init(Default::default).lock().ok()?;
    if let Some(q) = queues.get(&file).filter(|q| !q.is_closed()) {
        return Some(q.clone());
    }
    let (queue, jobs) = mpsc::unbounded_channel();
    runtime.spawn(serve(writer, jobs));
    queues.insert(file, queue.clone());
    Some(queue)
}

/// Takes every batch waiting (up to [`GROUP_MAX`]) and commits them together.
async fn serve(writer: DatabaseConnection, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = jobs.recv().await {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match jobs.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        if group.len() > 1 && matches!(together(&writer, &group).await, Ok(true)) {
            for j in group {
                let _ = j.reply.send(Ok(true));
            }
            continue;
        }
        for j in group {
            alone(&writer, j).await;
        }
    }
}

/// The group in one transaction, committed only when every batch changed what it expected.
async fn together(writer: &DatabaseConnection, group: &[Job]) -> Result<bool, DbErr> {
    let tx = writer.begin().await?;
    for j in group {
        if tx.execute(j.statement.clone()).await?.rows_affected() != j.expected {
            tx.rollback().await?;
            return Ok(false);
        }
    }
    tx.commit().await?;
    Ok(true)
}

/// One batch in a transaction of its own (none for a single statement); answers its caller.
async fn alone(writer: &DatabaseConnection, j: Job) {
    let r = alone_result(writer, j.single, j.statement, j.expected).await;
    // A caller that gave up waiting no longer needs the answer.
    let _ = j.reply.send(r);
}

async fn alone_result(
    writer: &DatabaseConnection,
    single: bool,
    statement: Statement,
    expected: u64,
) -> Result<bool, DbErr> {
    if single {
        return Ok(writer.execute(statement).await?.rows_affected() == expected);
    }
    let tx = writer.begin().await?;
    if tx.execute(statement).await?.rows_affected() == expected {
        tx.commit().await?;
        Ok(true)
    } else {
        tx.rollback().await?;
        Ok(false)
    }
}

async fn one_by_one(
    db: &DatabaseConnection,
    statements: Vec<Statement>,
    expected: u64,
) -> Result<bool, DbErr> {
    let tx = begin_platform_tx(db).await?;
    let mut changed = 0;
    for s in statements {
        changed += tx.execute(s).await?.rows_affected();
    }
    if changed == expected {
        tx.commit().await?;
        Ok(true)
    } else {
        tx.rollback().await?;
        Ok(false)
    }
}

/// One SQLite query of several statements; the driver binds the parameters in order across
/// them.
fn join(statements: Vec<Statement>) -> Result<Statement, DbErr> {
    let mut sql = String::new();
    let mut values = Vec::new();
    for s in statements {
        if s.db_backend != DbBackend::Sqlite {
            return Err(DbErr::Custom(
                "a SQLite write batch was given a statement built for another backend".into(),
            ));
        }
        if !sql.is_empty() {
            sql.push_str(";\n");
        }
        sql.push_str(s.sql.trim_end().trim_end_matches(';'));
        if let Some(Values(v)) = s.values {
            values.extend(v);
        }
    }
    Ok(Statement::from_sql_and_values(
        DbBackend::Sqlite,
        sql,
        values,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseConfig;
    use crate::secret::Secret;
    use sea_orm::{QueryResult, Value};

    async fn sqlite() -> (tempfile::TempDir, DatabaseConnection) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = Secret::new(format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("t.db").display()
        ));
        let db = crate::db::connect(&url, &DatabaseConfig::default())
            .await
            .expect("connect");
        db.execute_unprepared("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .await
            .expect("table");
        (dir, db)
    }

    fn st(sql: &str, values: Vec<Value>) -> Statement {
        Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)
    }

    fn insert(id: i64, v: &str) -> Statement {
        st(
            "INSERT INTO t (id, v) VALUES (?, ?)",
            vec![id.into(), v.into()],
        )
    }

    fn update(id: i64, v: &str) -> Statement {
        st("UPDATE t SET v = ? WHERE id = ?", vec![v.into(), id.into()])
    }

    async fn rows(db: &DatabaseConnection) -> Vec<(i64, String)> {
        let all: Vec<QueryResult> = db
            .query_all(st("SELECT id, v FROM t ORDER BY id", vec![]))
            .await
            .expect("select");
        all.iter()
            .map(|r| {
                (
                    r.try_get("", "id").expect("id"),
                    r.try_get("", "v").expect("v"),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn a_batch_commits_when_every_write_happened_and_binds_parameters_in_order() {
        let (_d, db) = sqlite().await;
        let ok = write_all_or_nothing(&db, vec![insert(1, "a"), insert(2, "b"), update(1, "c")], 3)
            .await
            .expect("batch");
        assert!(ok);
        assert_eq!(rows(&db).await, vec![(1, "c".into()), (2, "b".into())]);
    }

    #[tokio::test]
    async fn a_batch_whose_condition_failed_writes_nothing() {
        let (_d, db) = sqlite().await;
        let ok = write_all_or_nothing(
            &db,
            vec![
                insert(1, "a"),
                // No row 9: the update changes nothing, so the insert must not stay either.
                update(9, "x"),
            ],
            2,
        )
        .await
        .expect("batch");
        assert!(!ok);
        assert!(rows(&db).await.is_empty());
    }

    #[tokio::test]
    async fn a_failing_statement_rolls_the_batch_back() {
        let (_d, db) = sqlite().await;
        assert!(write_all_or_nothing(&db, vec![insert(1, "a")], 1)
            .await
            .expect("one"));
        let r = write_all_or_nothing(&db, vec![insert(2, "b"), insert(1, "dup")], 2).await;
        assert!(r.is_err());
        assert_eq!(rows(&db).await, vec![(1, "a".into())]);
    }

    /// Many batches at once are committed in groups; a batch whose condition fails or whose
    /// statement errs inside a group costs the others nothing and leaves nothing behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_committed_together_keep_their_own_outcome() {
        let (_d, db) = sqlite().await;
        db.execute_unprepared("INSERT INTO t (id, v) VALUES (1000, 'taken')")
            .await
            .expect("seed");
        let tasks: Vec<_> = (0..200i64)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    let mut writes = vec![insert(i, "new")];
                    match i % 20 {
                        // A condition that does not hold: no row 5000.
                        7 => writes.push(update(5000, "x")),
                        // A statement that fails: the key is taken.
                        13 => writes.push(insert(1000, "dup")),
                        _ => writes.push(update(i, "done")),
                    }
                    (i, write_all_or_nothing(&db, writes, 2).await)
                })
            })
            .collect();
        for t in tasks {
            let (i, r) = t.await.expect("task");
            match i % 20 {
                7 => assert!(!r.expect("no error"), "batch {i} must not commit"),
                13 => assert!(r.is_err(), "batch {i} must fail"),
                _ => assert!(r.expect("no error"), "batch {i} must commit"),
            }
        }
        let all = rows(&db).await;
        assert_eq!(
            all.len(),
            1 + 180,
            "every good batch and nothing of the others"
        );
        assert!(all.iter().all(|(id, v)| (*id == 1000 && v == "taken")
            || (id % 20 != 7 && id % 20 != 13 && v == "done")));
    }

    #[test]
    fn statements_of_another_backend_are_refused() {
        let s = Statement::from_string(DbBackend::Postgres, "SELECT 1");
        assert!(join(vec![s]).is_err());
    }
}
