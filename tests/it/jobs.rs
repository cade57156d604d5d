//! The durable job queue on both backends: crash resumption, no double execution across
//! processes, periodic schedules, retries, idempotency and same-transaction enqueue.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use anshin_platform::jobs::{
    JobContext, JobFailure, JobHandler, JobQueue, JobStatus, NewJob, Worker, WorkerOptions,
};
use anshin_tests::{both_backends, TestDb};
use sea_orm::TransactionTrait;
use serde_json::json;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn spawn_worker(db: &TestDb, extra: &[(&str, String)]) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_job-worker-fixture"));
    c.env("FIXTURE_DB_URL", db.config.database_url().expose())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in extra {
        c.env(k, v);
    }
    c.spawn().expect("spawn job worker fixture")
}

async fn wait_until<F: Fn() -> Fut, Fut: std::future::Future<Output = bool>>(
    secs: u64,
    f: F,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

struct Flaky;

#[async_trait::async_trait]
impl JobHandler for Flaky {
    fn kind(&self) -> &'static str {
        "test.flaky"
    }
    async fn run(&self, ctx: &JobContext) -> Result<(), JobFailure> {
        if ctx.job.attempts < 3 {
            Err(JobFailure::retry(format!(
                "temporary outage on attempt {}",
                ctx.job.attempts
            )))
        } else {
            Ok(())
        }
    }
}

struct Broken;

#[async_trait::async_trait]
impl JobHandler for Broken {
    fn kind(&self) -> &'static str {
        "test.broken"
    }
    async fn run(&self, ctx: &JobContext) -> Result<(), JobFailure> {
        if ctx.job.payload["panic"] == true {
            panic!("handler bug");
        }
        Err(JobFailure::permanent(
            "the payload names a tenant that does not exist",
        ))
    }
}

fn fast_worker(db: &TestDb) -> Worker {
    Worker::new(
        db.app.clone(),
        WorkerOptions {
            backoff_base: Duration::from_millis(20),
            poll_interval: Duration::from_millis(20),
            ..WorkerOptions::default()
        },
    )
    .register(Flaky)
    .register(Broken)
}

both_backends! {
    async fn a_killed_worker_s_job_resumes_elsewhere_without_repeating_steps(db) {
        let log = db.data_dir.join("two_steps.log");
        std::fs::create_dir_all(&db.data_dir).unwrap();
        let id = JobQueue::enqueue(&db.app, NewJob::new("fixture.two_steps", json!({"log": log}))).await.unwrap();
        let mut a = spawn_worker(&db, &[("FIXTURE_LEASE_MS", "1500".into())]);
        assert!(wait_until(30, || async { read(&log).contains("second-start attempt=1") }).await, "worker A never reached step two");
        a.kill().unwrap(); // SIGKILL: no chance to clean up
        a.wait().unwrap();
        let q = JobQueue::new(db.app.clone());
        assert_eq!(q.get(&id).await.unwrap().status, JobStatus::Running, "the dead worker still holds the lease");
        let mut b = spawn_worker(&db, &[("FIXTURE_LEASE_MS", "1500".into())]);
        let done = wait_until(30, || async { q.get(&id).await.unwrap().status == JobStatus::Succeeded }).await;
        b.kill().ok();
        b.wait().ok();
        assert!(done, "worker B did not finish the job: {:?}", q.get(&id).await.unwrap());
        let job = q.get(&id).await.unwrap();
        assert_eq!(job.attempts, 2);
        let lines: Vec<String> = read(&log).lines().map(String::from).collect();
        assert_eq!(lines, vec!["first", "second-start attempt=1", "second-start attempt=2", "second-end"], "step one ran once");
        assert_eq!(q.completed_steps(&id).await.unwrap(), vec!["first", "second"]);
    }

    async fn competing_worker_processes_run_each_job_exactly_once(db) {
        let log = db.data_dir.join("count.log");
        std::fs::create_dir_all(&db.data_dir).unwrap();
        let n = 150u64;
        for i in 0..n {
            JobQueue::enqueue(&db.app, NewJob::new("fixture.count", json!({"log": log, "n": i}))).await.unwrap();
        }
        let mut workers: Vec<Child> = (0..3).map(|_| spawn_worker(&db, &[("FIXTURE_CONCURRENCY", "4".into())])).collect();
        let q = JobQueue::new(db.app.clone());
        let done = wait_until(90, || async {
            q.list_by_kind("fixture.count").await.unwrap().iter().all(|j| j.status == JobStatus::Succeeded)
        }).await;
        for w in &mut workers {
            w.kill().ok();
            w.wait().ok();
        }
        assert!(done, "not every job finished");
        let mut seen: HashMap<u64, usize> = HashMap::new();
        for l in read(&log).lines() {
            *seen.entry(l.parse().unwrap()).or_default() += 1;
        }
        assert_eq!(seen.len() as u64, n);
        assert!(seen.values().all(|c| *c == 1), "a job ran twice: {:?}", seen.iter().filter(|(_, c)| **c > 1).collect::<Vec<_>>());
        let mut by_worker: HashMap<String, usize> = HashMap::new();
        for j in q.list_by_kind("fixture.count").await.unwrap() {
            assert_eq!(j.attempts, 1);
            *by_worker.entry(j.status.as_str().into()).or_default() += 1;
        }
        assert_eq!(by_worker.get("succeeded"), Some(&(n as usize)));
    }

    async fn a_schedule_shared_by_two_processes_fires_once_per_slot(db) {
        let log = db.data_dir.join("ticks.log");
        std::fs::create_dir_all(&db.data_dir).unwrap();
        let env = [("FIXTURE_SCHEDULE_LOG", log.display().to_string()), ("FIXTURE_RUN_SECS", "3".into())];
        let mut a = spawn_worker(&db, &env);
        let mut b = spawn_worker(&db, &env);
        a.wait().unwrap();
        b.wait().unwrap();
        let q = JobQueue::new(db.app.clone());
        let jobs = q.list_by_kind("fixture.tick").await.unwrap();
        // 3 s at one slot per 300 ms; start-up time makes the exact count vary.
        assert!((4..=12).contains(&jobs.len()), "{} ticks", jobs.len());
        let mut keys: Vec<_> = jobs.iter().map(|j| j.idempotency_key.clone().unwrap()).collect();
        keys.dedup();
        assert_eq!(keys.len(), jobs.len(), "one job per schedule slot");
        let lines: Vec<String> = read(&log).lines().map(String::from).collect();
        let mut unique = lines.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), lines.len(), "a tick ran twice");
        let finished = jobs.iter().filter(|j| j.status == JobStatus::Succeeded).count();
        assert_eq!(lines.len(), finished);
    }

    async fn retries_back_off_then_succeed_and_permanent_failures_stop(db) {
        let q = JobQueue::new(db.app.clone());
        let flaky = JobQueue::enqueue(&db.app, NewJob::new("test.flaky", json!({}))).await.unwrap();
        let broken = JobQueue::enqueue(&db.app, NewJob::new("test.broken", json!({}))).await.unwrap();
        let panics = JobQueue::enqueue(&db.app, NewJob::new("test.broken", json!({"panic": true})).max_attempts(2)).await.unwrap();
        let w = fast_worker(&db);
        let ok = wait_until(20, || async {
            let _ = w.run_one().await.unwrap();
            let s = |id: String| { let q = q.clone(); async move { q.get(&id).await.unwrap().status } };
            s(flaky.clone()).await == JobStatus::Succeeded && s(panics.clone()).await == JobStatus::Failed
        }).await;
        assert!(ok);
        let f = q.get(&flaky).await.unwrap();
        assert_eq!(f.attempts, 3);
        assert_eq!(f.last_error, None);
        let b = q.get(&broken).await.unwrap();
        assert_eq!(b.status, JobStatus::Failed);
        assert_eq!(b.attempts, 1, "permanent failures are not retried");
        assert!(b.last_error.unwrap().contains("does not exist"));
        let p = q.get(&panics).await.unwrap();
        assert_eq!(p.attempts, 2);
        assert!(p.last_error.unwrap().contains("panicked"));
    }

    async fn enqueue_is_transactional_and_idempotent(db) {
        let q = JobQueue::new(db.app.clone());
        let tx = db.app.begin().await.unwrap();
        JobQueue::enqueue(&tx, NewJob::new("test.flaky", json!({"n": 1}))).await.unwrap();
        tx.rollback().await.unwrap();
        assert!(q.list_by_kind("test.flaky").await.unwrap().is_empty(), "a rolled-back enqueue leaves no job");
        let tx = db.app.begin().await.unwrap();
        let a = JobQueue::enqueue(&tx, NewJob::new("test.flaky", json!({"n": 2})).idempotency_key("render:doc-7")).await.unwrap();
        tx.commit().await.unwrap();
        let b = JobQueue::enqueue(&db.app, NewJob::new("test.flaky", json!({"n": 3})).idempotency_key("render:doc-7")).await.unwrap();
        assert_eq!(a, b);
        let jobs = q.list_by_kind("test.flaky").await.unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].payload["n"], 2);
        // A worker without a handler for a kind never claims it.
        let other = Worker::new(db.app.clone(), WorkerOptions::default()).register(Broken);
        assert!(other.claim().await.unwrap().is_none());
        // Jobs scheduled for later wait.
        JobQueue::enqueue(&db.app, NewJob::new("test.broken", json!({})).run_at(chrono::Utc::now().timestamp_millis() + 60_000)).await.unwrap();
        assert!(other.claim().await.unwrap().is_none());
    }
}
