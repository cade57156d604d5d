use super::queue::{JobQueue, NewJob};
use super::sql::{exec, query};
use super::{now_ms, JobError};
use sea_orm::{DatabaseConnection, TransactionTrait};
use std::time::Duration;

/// A job enqueued every `every`. Several processes may run the scheduler: each due slot is taken
/// by exactly one of them (compare-and-set on `next_run_at`), and the job it enqueues carries the
/// slot in its idempotency key.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub kind: String,
    pub queue: String,
    pub payload: serde_json::Value,
    pub every: Duration,
}

impl Schedule {
    pub fn new(name: impl Into<String>, kind: impl Into<String>, every: Duration) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            queue: "default".into(),
            payload: serde_json::json!({}),
            every,
        }
    }

    fn interval_ms(&self) -> i64 {
        i64::try_from(self.every.as_millis())
            .unwrap_or(i64::MAX)
            .max(1)
    }

    /// Creates the schedule or updates its definition, keeping its next due time.
    pub async fn register(&self, db: &DatabaseConnection) -> Result<(), JobError> {
        let payload = serde_json::to_string(&self.payload)?;
        exec(
            db,
            "INSERT INTO anshin_job_schedules (name, queue, kind, payload, interval_ms, next_run_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (name) DO UPDATE SET queue = excluded.queue, kind = excluded.kind, payload = excluded.payload, interval_ms = excluded.interval_ms",
            vec![
                self.name.clone().into(),
                self.queue.clone().into(),
                self.kind.clone().into(),
                payload.into(),
                self.interval_ms().into(),
                now_ms().into(),
            ],
        )
        .await?;
        Ok(())
    }
}

/// Enqueues a job for every due schedule slot; returns how many this process enqueued.
pub(crate) async fn tick(db: &DatabaseConnection) -> Result<usize, JobError> {
    let now = now_ms();
    let due = query(
        db,
        "SELECT name, queue, kind, payload, interval_ms, next_run_at FROM anshin_job_schedules WHERE next_run_at <= $1",
        vec![now.into()],
    )
    .await?;
    let mut enqueued = 0;
    for row in due {
        let name: String = row.try_get("", "name")?;
        let slot: i64 = row.try_get("", "next_run_at")?;
        let interval: i64 = row.try_get("", "interval_ms")?;
        let payload: String = row.try_get("", "payload")?;
        // Skip missed slots rather than replaying each one after downtime.
        let mut next = slot + interval;
        if next <= now {
            next = now + interval - ((now - slot) % interval);
        }
        let tx = db.begin().await?;
        let claimed = exec(
            &tx,
            "UPDATE anshin_job_schedules SET next_run_at = $1 WHERE name = $2 AND next_run_at = $3",
            vec![next.into(), name.clone().into(), slot.into()],
        )
        .await?;
        if claimed.rows_affected() == 1 {
            let job = NewJob::new(
                row.try_get::<String>("", "kind")?,
                serde_json::from_str(&payload)?,
            )
            .queue(row.try_get::<String>("", "queue")?)
            .idempotency_key(format!("schedule:{name}:{slot}"));
            JobQueue::enqueue(&tx, job).await?;
            enqueued += 1;
        }
        tx.commit().await?;
    }
    Ok(enqueued)
}
