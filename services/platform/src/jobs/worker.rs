use super::queue::{JobRecord, COLUMNS};
use super::schedule;
use super::sql::{exec, query};
use super::{now_ms, JobError};
use async_trait::async_trait;
use opentelemetry::KeyValue;
use rand::Rng;
use sea_orm::{ConnectionTrait, DatabaseConnection, Value};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tracing::Instrument;

/// Why a job attempt failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JobFailure {
    /// Worth another attempt after back-off (network, lock, temporary outage).
    #[error("{0}")]
    Retry(String),
    /// Retrying cannot help (bad payload, missing tenant); the job fails at once.
    #[error("{0}")]
    Permanent(String),
}

impl JobFailure {
    pub fn retry(e: impl std::fmt::Display) -> Self {
        JobFailure::Retry(e.to_string())
    }
    pub fn permanent(e: impl std::fmt::Display) -> Self {
        JobFailure::Permanent(e.to_string())
    }
}

#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// The job kind this handler runs, e.g. `drift.scan`.
    fn kind(&self) -> &'static str;
    async fn run(&self, ctx: &JobContext) -> Result<(), JobFailure>;
}

/// What a handler sees of its job, and the step recorder that makes resumption safe.
pub struct JobContext {
    pub job: JobRecord,
    db: DatabaseConnection,
}

impl JobContext {
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, JobFailure> {
        serde_json::from_value(self.job.payload.clone())
            .map_err(|e| JobFailure::permanent(format!("job payload is not valid: {e}")))
    }

    /// Runs `f` unless an earlier attempt of this job completed the step `name`, in which case the
    /// recorded output is returned without running it again.
    pub async fn step<T, F, Fut>(&self, name: &str, f: F) -> Result<T, JobFailure>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, JobFailure>>,
    {
        let rows = query(
            &self.db,
            "SELECT output FROM anshin_job_steps WHERE job_id = $1 AND name = $2",
            vec![self.job.id.clone().into(), name.into()],
        )
        .await
        .map_err(JobFailure::retry)?;
        if let Some(row) = rows.first() {
            let out: String = row.try_get("", "output").map_err(JobFailure::retry)?;
            return serde_json::from_str(&out).map_err(JobFailure::permanent);
        }
        let value = f().await?;
        let out = serde_json::to_string(&value).map_err(JobFailure::permanent)?;
        exec(
            &self.db,
            "INSERT INTO anshin_job_steps (job_id, name, output, completed_at) VALUES ($1, $2, $3, $4) ON CONFLICT (job_id, name) DO NOTHING",
            vec![self.job.id.clone().into(), name.into(), out.into(), now_ms().into()],
        )
        .await
        .map_err(JobFailure::retry)?;
        Ok(value)
    }
}

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Unique per process; fences every write a worker makes to a job it holds.
    pub id: String,
    pub queues: Vec<String>,
    pub concurrency: usize,
    pub poll_interval: Duration,
    pub lease: Duration,
    /// First retry delay; doubles per attempt up to `max_backoff`.
    pub backoff_base: Duration,
    pub max_backoff: Duration,
    pub run_scheduler: bool,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            id: format!(
                "{}:{}:{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ),
            queues: vec!["default".into()],
            concurrency: 4,
            poll_interval: Duration::from_millis(500),
            lease: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            max_backoff: Duration::from_secs(600),
            run_scheduler: true,
        }
    }
}

#[derive(Clone)]
pub struct Worker {
    db: DatabaseConnection,
    handlers: Arc<HashMap<&'static str, Arc<dyn JobHandler>>>,
    opts: Arc<WorkerOptions>,
}

enum Outcome {
    Succeeded,
    Failed(JobFailure),
}

impl Worker {
    pub fn new(db: DatabaseConnection, opts: WorkerOptions) -> Self {
        Self {
            db,
            handlers: Arc::new(HashMap::new()),
            opts: Arc::new(opts),
        }
    }

    pub fn register(mut self, handler: impl JobHandler) -> Self {
        let mut map = (*self.handlers).clone();
        map.insert(handler.kind(), Arc::new(handler));
        self.handlers = Arc::new(map);
        self
    }

    pub fn id(&self) -> &str {
        &self.opts.id
    }

    /// Claims one runnable job of a kind this worker handles: queued and due, or running with an
    /// expired lease (its worker died).
    pub async fn claim(&self) -> Result<Option<JobRecord>, JobError> {
        if self.handlers.is_empty() || self.opts.queues.is_empty() {
            return Ok(None);
        }
        let now = now_ms();
        let lease_ms = i64::try_from(self.opts.lease.as_millis()).unwrap_or(30_000);
        // Jobs whose worker died on their last allowed attempt are given up here.
        exec(
            &self.db,
            "UPDATE anshin_jobs SET status = 'failed', locked_by = NULL, locked_until = NULL, finished_at = $1, updated_at = $1, \
             last_error = 'the worker stopped during the final attempt' \
             WHERE status = 'running' AND locked_until < $1 AND attempts >= max_attempts",
            vec![now.into()],
        )
        .await?;
        let mut values: Vec<Value> = vec![
            self.opts.id.clone().into(),
            (now + lease_ms).into(),
            now.into(),
        ];
        let kinds = placeholders(&mut values, self.handlers.keys().map(|k| (*k).to_string()));
        let queues = placeholders(&mut values, self.opts.queues.iter().cloned());
        let lock = if self.db.get_database_backend() == sea_orm::DbBackend::Postgres {
            "FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE anshin_jobs SET status = 'running', locked_by = $1, locked_until = $2, attempts = attempts + 1, updated_at = $3 \
             WHERE id = (SELECT id FROM anshin_jobs WHERE kind IN ({kinds}) AND queue IN ({queues}) \
             AND ((status = 'queued' AND run_at <= $3) OR (status = 'running' AND locked_until < $3 AND attempts < max_attempts)) \
             ORDER BY run_at, id LIMIT 1 {lock}) \
             AND ((status = 'queued' AND run_at <= $3) OR (status = 'running' AND locked_until < $3)) \
             RETURNING {COLUMNS}"
        );
        let rows = query(&self.db, &sql, values).await?;
        rows.first().map(JobRecord::from_row).transpose()
    }

    /// Claims and runs one job; `false` when none was runnable.
    pub async fn run_one(&self) -> Result<bool, JobError> {
        match self.claim().await? {
            Some(job) => {
                self.execute(job).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn execute(&self, job: JobRecord) -> Result<(), JobError> {
        let Some(handler) = self.handlers.get(job.kind.as_str()).cloned() else {
            return Ok(());
        };
        let span = tracing::info_span!(
            "job.run",
            otel.name = %format!("job {}", job.kind),
            job.id = %job.id,
            job.kind = %job.kind,
            job.attempt = job.attempts,
            tenant = job.tenant_id.as_deref().unwrap_or(""),
        );
        let started = Instant::now();
        let heartbeat = self.spawn_heartbeat(job.id.clone());
        let ctx = JobContext {
            job: job.clone(),
            db: self.db.clone(),
        };
        // Run in its own task so a panicking handler fails the attempt instead of the worker.
        let run = tokio::spawn(async move { handler.run(&ctx).await }.instrument(span.clone()));
        let outcome = match run.await {
            Ok(Ok(())) => Outcome::Succeeded,
            Ok(Err(f)) => Outcome::Failed(f),
            Err(e) => Outcome::Failed(JobFailure::Retry(format!("the job handler panicked: {e}"))),
        };
        heartbeat.abort();
        let label = match &outcome {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed(JobFailure::Retry(_)) if job.attempts < job.max_attempts => "retry",
            Outcome::Failed(_) => "failed",
        };
        span.in_scope(|| match &outcome {
            Outcome::Succeeded => tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "job succeeded"
            ),
            Outcome::Failed(f) => tracing::warn!(error = %f, outcome = label, "job attempt failed"),
        });
        let m = opentelemetry::global::meter("anshin");
        let attrs = [
            KeyValue::new("job.kind", job.kind.clone()),
            KeyValue::new("outcome", label),
        ];
        m.f64_histogram("job.duration")
            .with_unit("s")
            .build()
            .record(started.elapsed().as_secs_f64(), &attrs);
        m.u64_counter("job.attempts").build().add(1, &attrs);
        self.finish(&job, outcome).await
    }

    fn spawn_heartbeat(&self, job_id: String) -> tokio::task::JoinHandle<()> {
        let db = self.db.clone();
        let opts = self.opts.clone();
        tokio::spawn(async move {
            let every = opts.lease / 3;
            let lease_ms = i64::try_from(opts.lease.as_millis()).unwrap_or(30_000);
            loop {
                tokio::time::sleep(every).await;
                let r = exec(
                    &db,
                    "UPDATE anshin_jobs SET locked_until = $1 WHERE id = $2 AND locked_by = $3 AND status = 'running'",
                    vec![(now_ms() + lease_ms).into(), job_id.clone().into(), opts.id.clone().into()],
                )
                .await;
                match r {
                    Ok(r) if r.rows_affected() == 0 => {
                        tracing::warn!(job.id = %job_id, "lost the lease on a running job; another worker may take it over");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(job.id = %job_id, error = %e, "could not extend job lease")
                    }
                    Ok(_) => {}
                }
            }
        })
    }

    async fn finish(&self, job: &JobRecord, outcome: Outcome) -> Result<(), JobError> {
        let now = now_ms();
        let fence = vec![job.id.clone().into(), self.opts.id.clone().into()];
        let (sql, mut values): (&str, Vec<Value>) = match outcome {
            Outcome::Succeeded => (
                "UPDATE anshin_jobs SET status = 'succeeded', locked_by = NULL, locked_until = NULL, last_error = NULL, finished_at = $3, updated_at = $3 \
                 WHERE id = $1 AND locked_by = $2 AND status = 'running'",
                vec![now.into()],
            ),
            Outcome::Failed(JobFailure::Retry(msg)) if job.attempts < job.max_attempts => (
                "UPDATE anshin_jobs SET status = 'queued', locked_by = NULL, locked_until = NULL, last_error = $4, run_at = $5, updated_at = $3 \
                 WHERE id = $1 AND locked_by = $2 AND status = 'running'",
                vec![now.into(), truncate(&msg).into(), (now + self.backoff_ms(job.attempts)).into()],
            ),
            Outcome::Failed(f) => (
                "UPDATE anshin_jobs SET status = 'failed', locked_by = NULL, locked_until = NULL, last_error = $4, finished_at = $3, updated_at = $3 \
                 WHERE id = $1 AND locked_by = $2 AND status = 'running'",
                vec![now.into(), truncate(&f.to_string()).into()],
            ),
        };
        let mut all = fence;
        all.append(&mut values);
        let r = exec(&self.db, sql, all).await?;
        if r.rows_affected() == 0 {
            tracing::warn!(job.id = %job.id, "job result not recorded: this worker no longer holds the job");
        }
        Ok(())
    }

    fn backoff_ms(&self, attempt: i32) -> i64 {
        let base = self.opts.backoff_base.as_millis() as f64;
        let exp = base * 2f64.powi(attempt.saturating_sub(1).min(30));
        let capped = exp.min(self.opts.max_backoff.as_millis() as f64);
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        (capped * jitter) as i64
    }

    /// Runs until `shutdown` turns true, then waits for jobs in flight to finish.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let permits = Arc::new(Semaphore::new(self.opts.concurrency.max(1)));
        let mut last_tick: Option<Instant> = None;
        tracing::info!(worker = %self.opts.id, kinds = ?self.handlers.keys().collect::<Vec<_>>(), "job worker started");
        loop {
            if *shutdown.borrow() {
                break;
            }
            if self.opts.run_scheduler
                && last_tick.is_none_or(|t| t.elapsed() >= Duration::from_millis(250))
            {
                last_tick = Some(Instant::now());
                if let Err(e) = schedule::tick(&self.db).await {
                    tracing::warn!(error = %e, "job scheduler tick failed");
                }
            }
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.changed() => continue,
            };
            match self.claim().await {
                Ok(Some(job)) => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = me.execute(job).await {
                            tracing::error!(error = %e, "recording a job result failed");
                        }
                        drop(permit);
                    });
                }
                Ok(None) => {
                    drop(permit);
                    tokio::select! {
                        _ = tokio::time::sleep(self.opts.poll_interval) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(e) => {
                    drop(permit);
                    tracing::warn!(error = %e, "claiming a job failed");
                    tokio::time::sleep(self.opts.poll_interval).await;
                }
            }
        }
        let total = u32::try_from(self.opts.concurrency.max(1)).unwrap_or(u32::MAX);
        let _ = permits.acquire_many(total).await;
        tracing::info!(worker = %self.opts.id, "job worker stopped");
    }
}

fn placeholders(values: &mut Vec<Value>, items: impl Iterator<Item = String>) -> String {
    let mut out = Vec::new();
    for item in items {
        values.push(item.into());
        out.push(format!("${}", values.len()));
    }
    out.join(", ")
}

fn truncate(s: &str) -> String {
    s.chars().take(2000).collect()
}
