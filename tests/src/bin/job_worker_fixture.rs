//! A job worker process for the job-queue tests: it can be killed mid-job and run as several

// A test fixture process: failing loudly is what the tests want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

//! competing processes against one database.
//!
//! Environment: FIXTURE_DB_URL, FIXTURE_LEASE_MS, FIXTURE_CONCURRENCY, FIXTURE_RUN_SECS
//! (exit after, 0 = forever), FIXTURE_SCHEDULE_LOG (register a 300 ms schedule writing there).

use anshin_platform::config::DatabaseConfig;
use anshin_platform::jobs::{JobContext, JobFailure, JobHandler, Schedule, Worker, WorkerOptions};
use anshin_platform::secret::Secret;
use std::io::Write;
use std::time::Duration;

fn append(path: &str, line: &str) -> Result<(), JobFailure> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(JobFailure::retry)?;
    f.write_all(format!("{line}\n").as_bytes())
        .map_err(JobFailure::retry)
}

#[derive(serde::Deserialize)]
struct Payload {
    log: String,
    #[serde(default)]
    n: u64,
}

/// Two steps; the first attempt hangs inside the second step so the test can kill it there.
struct TwoSteps;

#[async_trait::async_trait]
impl JobHandler for TwoSteps {
    fn kind(&self) -> &'static str {
        "fixture.two_steps"
    }
    async fn run(&self, ctx: &JobContext) -> Result<(), JobFailure> {
        let p: Payload = ctx.payload()?;
        ctx.step("first", || async { append(&p.log, "first").map(|_| 1u32) })
            .await?;
        let attempt = ctx.job.attempts;
        ctx.step("second", || async {
            append(&p.log, &format!("second-start attempt={attempt}"))?;
            if attempt == 1 {
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
            append(&p.log, "second-end").map(|_| 2u32)
        })
        .await?;
        Ok(())
    }
}

struct Count;

#[async_trait::async_trait]
impl JobHandler for Count {
    fn kind(&self) -> &'static str {
        "fixture.count"
    }
    async fn run(&self, ctx: &JobContext) -> Result<(), JobFailure> {
        let p: Payload = ctx.payload()?;
        tokio::time::sleep(Duration::from_millis(2)).await;
        append(&p.log, &p.n.to_string())
    }
}

struct Tick(String);

#[async_trait::async_trait]
impl JobHandler for Tick {
    fn kind(&self) -> &'static str {
        "fixture.tick"
    }
    async fn run(&self, ctx: &JobContext) -> Result<(), JobFailure> {
        append(&self.0, &ctx.job.id)
    }
}

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

#[tokio::main]
async fn main() {
    let url = Secret::new(std::env::var("FIXTURE_DB_URL").unwrap_or_default());
    let db = match anshin_platform::db::connect(&url, &DatabaseConfig::default()).await {
        Ok(db) => db,
        Err(e) => {
            eprintln!("fixture: {e}");
            std::process::exit(1);
        }
    };
    let schedule_log = std::env::var("FIXTURE_SCHEDULE_LOG").ok();
    let mut worker = Worker::new(
        db.clone(),
        WorkerOptions {
            lease: Duration::from_millis(env_u64("FIXTURE_LEASE_MS", 2000)),
            concurrency: env_u64("FIXTURE_CONCURRENCY", 2) as usize,
            poll_interval: Duration::from_millis(50),
            run_scheduler: schedule_log.is_some(),
            ..WorkerOptions::default()
        },
    )
    .register(TwoSteps)
    .register(Count);
    if let Some(log) = schedule_log {
        let s = Schedule::new("fixture-tick", "fixture.tick", Duration::from_millis(300));
        if let Err(e) = s.register(&db).await {
            eprintln!("fixture: {e}");
            std::process::exit(1);
        }
        worker = worker.register(Tick(log));
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    let secs = env_u64("FIXTURE_RUN_SECS", 0);
    if secs > 0 {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let _ = tx.send(true);
        });
    } else {
        std::mem::forget(tx);
    }
    worker.run(rx).await;
}
