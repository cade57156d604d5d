//! Load generator for the audit trail: durable events per second appended through the service
//! API (one transaction per event, and batches of 1,000 per transaction), then sealing
//! throughput (entries appended to the Merkle log and checkpoints signed per second).
//!
//!   audit-bench DATABASE_URL [EVENTS=100000] [WRITERS=8] [RUNS=3]
//!
//! DATABASE_URL is an empty database the tool migrates itself (SQLite path or PostgreSQL URL,
//! owner role). Prints one line per run and the medians.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: fail loudly

use anshin_audit::{Actor, AuditEvent, LocalSigner, Outcome, Sealer, Target};
use anshin_platform::config::DatabaseConfig;
use anshin_platform::secret::Secret;
use sea_orm_migration::MigratorTrait;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

struct Migrator;
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
        let mut all = anshin_platform::migration::migrations();
        all.extend(anshin_audit::migrations());
        all
    }
}

fn event(tenant: Uuid, i: usize) -> AuditEvent {
    AuditEvent::new(
        tenant,
        Actor::user(
            Uuid::nil(),
            "dr.yamada@aoba-clinic.jp",
            tenant,
            "institution_staff",
        ),
        "record.open",
        Outcome::Success,
    )
    .target(Target::new("patient_record", format!("P-{i:08}")))
    .detail("duration_ms", 91_000)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 2 {
        eprintln!("usage: audit-bench DATABASE_URL [EVENTS] [WRITERS] [RUNS]");
        std::process::exit(2);
    }
    let n = |i: usize, d: usize| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (events, writers, runs) = (n(2, 100_000), n(3, 8), n(4, 3));
    let cfg = DatabaseConfig {
        max_connections: (writers as u32 + 2).max(4),
        ..DatabaseConfig::default()
    };
    let db = anshin_platform::db::connect(&Secret::new(args[1].clone()), &cfg)
        .await
        .expect("connect");
    Migrator::up(&db, None).await.expect("migrate");
    let sealer = Sealer::new(
        db.clone(),
        Arc::new(LocalSigner::from_seed(&[7u8; 32])),
        10_000,
    );
    let (mut single, mut batched, mut seal) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let tenant = Uuid::now_v7();
        // One transaction per event, `writers` concurrent writers.
        let per_writer = (events / 10 / writers).max(1);
        let started = Instant::now();
        let mut hs = Vec::new();
        for w in 0..writers {
            let db = db.clone();
            hs.push(tokio::spawn(async move {
                for i in 0..per_writer {
                    let tx = anshin_platform::db::begin_tenant_tx(&db, tenant)
                        .await
                        .unwrap();
                    anshin_audit::record(&tx, &event(tenant, w * per_writer + i))
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                }
            }));
        }
        for h in hs {
            h.await.unwrap();
        }
        let s = (per_writer * writers) as f64 / started.elapsed().as_secs_f64();
        // Batches of 1,000 events per transaction.
        let batches = (events / 1000).max(1);
        let per_writer = batches.div_ceil(writers);
        let started = Instant::now();
        let mut hs = Vec::new();
        for _ in 0..writers {
            let db = db.clone();
            hs.push(tokio::spawn(async move {
                for b in 0..per_writer {
                    let evs: Vec<AuditEvent> =
                        (0..1000).map(|i| event(tenant, b * 1000 + i)).collect();
                    let tx = anshin_platform::db::begin_tenant_tx(&db, tenant)
                        .await
                        .unwrap();
                    anshin_audit::record_all(&tx, &evs).await.unwrap();
                    tx.commit().await.unwrap();
                }
            }));
        }
        for h in hs {
            h.await.unwrap();
        }
        let b = (per_writer * writers * 1000) as f64 / started.elapsed().as_secs_f64();
        // Seal everything appended in this run.
        let started = Instant::now();
        let r = sealer.seal_all().await.expect("seal");
        let z = r.entries as f64 / started.elapsed().as_secs_f64();
        println!(
            "run {run}: append single {s:.0}/s, append batched {b:.0}/s, sealed {} entries in {} checkpoints at {z:.0}/s",
            r.entries, r.checkpoints
        );
        single.push(s);
        batched.push(b);
        seal.push(z);
    }
    println!(
        "median: append single {:.0}/s, append batched {:.0}/s, seal {:.0}/s",
        median(single),
        median(batched),
        median(seal)
    );
}
