use super::sql::{exec, query};
use super::{now_ms, JobError};
use sea_orm::{ConnectionTrait, DatabaseConnection, QueryResult, Value};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    /// Gave up: attempts exhausted or a permanent failure.
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            _ => JobStatus::Queued,
        }
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    pub payload: serde_json::Value,
    pub queue: String,
    pub max_attempts: i32,
    /// Epoch milliseconds; `None` means now.
    pub run_at: Option<i64>,
    /// Enqueuing twice with the same key yields one job.
    pub idempotency_key: Option<String>,
    pub tenant_id: Option<Uuid>,
}

impl NewJob {
    pub fn new(kind: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            kind: kind.into(),
            payload,
            queue: "default".into(),
            max_attempts: 5,
            run_at: None,
            idempotency_key: None,
            tenant_id: None,
        }
    }
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
    pub fn queue(mut self, q: impl Into<String>) -> Self {
        self.queue = q.into();
        self
    }
    pub fn max_attempts(mut self, n: i32) -> Self {
        self.max_attempts = n.max(1);
        self
    }
    pub fn run_at(mut self, epoch_ms: i64) -> Self {
        self.run_at = Some(epoch_ms);
        self
    }
    pub fn tenant(mut self, id: Uuid) -> Self {
        self.tenant_id = Some(id);
        self
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct JobRecord {
    pub id: String,
    pub queue: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub tenant_id: Option<String>,
    pub status: JobStatus,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: i64,
    pub locked_by: Option<String>,
    pub last_error: Option<String>,
    pub idempotency_key: Option<String>,
}

pub(crate) const COLUMNS: &str = "id, queue, kind, payload, tenant_id, status, attempts, max_attempts, run_at, locked_by, last_error, idempotency_key";

impl JobRecord {
    pub(crate) fn from_row(r: &QueryResult) -> Result<Self, JobError> {
        let payload: String = r.try_get("", "payload")?;
        let status: String = r.try_get("", "status")?;
        Ok(Self {
            id: r.try_get("", "id")?,
            queue: r.try_get("", "queue")?,
            kind: r.try_get("", "kind")?,
            payload: serde_json::from_str(&payload)?,
            tenant_id: r.try_get("", "tenant_id")?,
            status: JobStatus::parse(&status),
            attempts: r.try_get("", "attempts")?,
            max_attempts: r.try_get("", "max_attempts")?,
            run_at: r.try_get("", "run_at")?,
            locked_by: r.try_get("", "locked_by")?,
            last_error: r.try_get("", "last_error")?,
            idempotency_key: r.try_get("", "idempotency_key")?,
        })
    }
}

/// Enqueue and inspect jobs. Enqueue takes any connection, including an open transaction.
#[derive(Clone)]
pub struct JobQueue {
    db: DatabaseConnection,
}

impl JobQueue {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Returns the job's id; with an idempotency key already used, the existing job's id.
    pub async fn enqueue(conn: &impl ConnectionTrait, job: NewJob) -> Result<String, JobError> {
        let now = now_ms();
        let id = Uuid::now_v7().to_string();
        let payload = serde_json::to_string(&job.payload)?;
        exec(
            conn,
            "INSERT INTO anshin_jobs (id, queue, kind, payload, tenant_id, status, attempts, max_attempts, run_at, idempotency_key, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'queued', 0, $6, $7, $8, $9, $9) ON CONFLICT (idempotency_key) DO NOTHING",
            vec![
                id.clone().into(),
                job.queue.into(),
                job.kind.into(),
                payload.into(),
                Value::String(job.tenant_id.map(|t| Box::new(t.to_string()))),
                job.max_attempts.into(),
                job.run_at.unwrap_or(now).into(),
                Value::String(job.idempotency_key.clone().map(Box::new)),
                now.into(),
            ],
        )
        .await?;
        match job.idempotency_key {
            None => Ok(id),
            Some(key) => {
                let rows = query(
                    conn,
                    "SELECT id FROM anshin_jobs WHERE idempotency_key = $1",
                    vec![key.clone().into()],
                )
                .await?;
                let row = rows.first().ok_or(JobError::NotFound(key))?;
                Ok(row.try_get("", "id")?)
            }
        }
    }

    pub async fn get(&self, id: &str) -> Result<JobRecord, JobError> {
        let rows = query(
            &self.db,
            &format!("SELECT {COLUMNS} FROM anshin_jobs WHERE id = $1"),
            vec![id.into()],
        )
        .await?;
        rows.first()
            .map(JobRecord::from_row)
            .transpose()?
            .ok_or_else(|| JobError::NotFound(id.into()))
    }

    pub async fn list_by_kind(&self, kind: &str) -> Result<Vec<JobRecord>, JobError> {
        let rows = query(
            &self.db,
            &format!("SELECT {COLUMNS} FROM anshin_jobs WHERE kind = $1 ORDER BY created_at, id"),
            vec![kind.into()],
        )
        .await?;
        rows.iter().map(JobRecord::from_row).collect()
    }

    /// Names of the steps a job has completed, in completion order.
    pub async fn completed_steps(&self, id: &str) -> Result<Vec<String>, JobError> {
        let rows = query(
            &self.db,
            "SELECT name FROM anshin_job_steps WHERE job_id = $1 ORDER BY completed_at, name",
            vec![id.into()],
        )
        .await?;
        rows.iter()
            .map(|r| r.try_get::<String>("", "name").map_err(JobError::from))
            .collect()
    }

    /// Counts by status, for readiness pages and metrics.
    pub async fn counts(&self) -> Result<Vec<(String, i64)>, JobError> {
        let rows = query(
            &self.db,
            "SELECT status, COUNT(*) AS n FROM anshin_jobs GROUP BY status ORDER BY status",
            vec![],
        )
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("", "status")?, r.try_get("", "n")?)))
            .collect()
    }
}
