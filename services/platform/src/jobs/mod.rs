//! Durable background jobs stored in the application database (SQLite or PostgreSQL).
//!
//! Jobs can be enqueued inside the caller's own transaction, so a state change and the work it
//! triggers commit together. Workers claim jobs with a lease (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL, a single atomic `UPDATE … RETURNING` on SQLite), extend it while they run, and
//! fence every write with their worker id; a crashed worker's job is taken over when its lease
//! expires. Handlers split work into named steps whose results are recorded, so a resumed job
//! skips the steps that already completed.

mod migration;
mod queue;
mod schedule;
mod sql;
mod worker;

pub use migration::CreateJobTables;
pub use queue::{JobQueue, JobRecord, JobStatus, NewJob};
pub use schedule::Schedule;
pub use worker::{JobContext, JobFailure, JobHandler, Worker, WorkerOptions};

use crate::db::TableGrant;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("database error in the job queue: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error("job payload could not be encoded or decoded: {0}")]
    Payload(#[from] serde_json::Error),
    #[error("no job with id {0}")]
    NotFound(String),
}

pub fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
    vec![Box::new(CreateJobTables)]
}

pub fn grants() -> Vec<TableGrant> {
    vec![
        TableGrant {
            table: "anshin_jobs",
            privileges: "SELECT, INSERT, UPDATE",
        },
        TableGrant {
            table: "anshin_job_steps",
            privileges: "SELECT, INSERT",
        },
        TableGrant {
            table: "anshin_job_schedules",
            privileges: "SELECT, INSERT, UPDATE",
        },
    ]
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
