//! Background work of the key service: re-wrapping stored data keys after a KEK change (durable,
//! resumable: each batch commits on its own and only moves keys still under the old KEK), the
//! BYOK health check, and the backfill that gives every tenant its KEK.

use crate::admin::{RewrapPayload, BACKFILL_JOB, BYOK_HEALTH_JOB, REWRAP_JOB};
use crate::service::{KeyService, TenantInfo};
use anshin_platform::jobs::{JobContext, JobFailure, JobHandler, Schedule};
use async_trait::async_trait;
use std::sync::Arc;

/// Data keys re-wrapped per batch (each batch is one short transaction).
const REWRAP_BATCH: u64 = 200;

/// The key service's periodic jobs.
pub fn schedules() -> Vec<Schedule> {
    vec![
        Schedule::new(
            BYOK_HEALTH_JOB,
            BYOK_HEALTH_JOB,
            std::time::Duration::from_secs(300),
        ),
        Schedule::new(
            BACKFILL_JOB,
            BACKFILL_JOB,
            std::time::Duration::from_secs(600),
        ),
    ]
}

fn failure(e: crate::KeyError) -> JobFailure {
    if e.is_transient() {
        JobFailure::retry(e)
    } else {
        JobFailure::permanent(e)
    }
}

pub struct RewrapJob(pub KeyService);

#[async_trait]
impl JobHandler for RewrapJob {
    fn kind(&self) -> &'static str {
        REWRAP_JOB
    }

    async fn run(&self, ctx: &JobContext) -> Result<(), JobFailure> {
        let p: RewrapPayload = ctx.payload()?;
        loop {
            let remaining = self
                .0
                .rewrap_batch(p.tenant_id, p.from_kek, REWRAP_BATCH)
                .await
                .map_err(failure)?;
            if remaining == 0 {
                return Ok(());
            }
        }
    }
}

pub struct ByokHealthJob(pub KeyService);

#[async_trait]
impl JobHandler for ByokHealthJob {
    fn kind(&self) -> &'static str {
        BYOK_HEALTH_JOB
    }

    async fn run(&self, _ctx: &JobContext) -> Result<(), JobFailure> {
        let lost = self.0.check_byok_health().await.map_err(failure)?;
        if lost > 0 {
            tracing::warn!(lost, "tenant-held (BYOK) keys Anshin can no longer use");
        }
        Ok(())
    }
}

/// Lists every tenant (the server answers from the tenancy service).
#[async_trait]
pub trait TenantList: Send + Sync + 'static {
    async fn all(&self) -> Result<Vec<TenantInfo>, String>;
}

pub struct BackfillJob {
    pub keys: KeyService,
    pub tenants: Arc<dyn TenantList>,
}

#[async_trait]
impl JobHandler for BackfillJob {
    fn kind(&self) -> &'static str {
        BACKFILL_JOB
    }

    async fn run(&self, _ctx: &JobContext) -> Result<(), JobFailure> {
        let all = self.tenants.all().await.map_err(JobFailure::retry)?;
        let created = self.keys.backfill(&all).await.map_err(failure)?;
        if created > 0 {
            tracing::info!(created, "tenant KEKs created by the backfill");
        }
        Ok(())
    }
}
