//! Background work of the tenancy service.

use crate::entity::tenant;
use crate::model::TenantStatus;
use anshin_platform::db::begin_platform_tx;
use anshin_platform::jobs::{JobContext, JobFailure, JobHandler, Schedule};
use async_trait::async_trait;
use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use std::time::Duration;

pub const CONTRACT_SWEEP: &str = "tenancy.contract_sweep";

/// Moves active institutions whose contract has ended into `offboarding`, so that the end of a
/// contract starts the hand-back and destruction process instead of being forgotten.
pub struct ContractSweep;

pub fn schedules() -> Vec<Schedule> {
    vec![Schedule::new(
        CONTRACT_SWEEP,
        CONTRACT_SWEEP,
        Duration::from_secs(3600),
    )]
}

#[async_trait]
impl JobHandler for ContractSweep {
    fn kind(&self) -> &'static str {
        CONTRACT_SWEEP
    }

    async fn run(&self, ctx: &JobContext) -> Result<(), JobFailure> {
        let today = Utc::now().date_naive();
        let tx = begin_platform_tx(ctx.db())
            .await
            .map_err(JobFailure::retry)?;
        let r = tenant::Entity::update_many()
            .col_expr(
                tenant::Column::Status,
                Expr::value(TenantStatus::Offboarding.as_str()),
            )
            .col_expr(tenant::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(tenant::Column::Kind.eq("institution"))
            .filter(tenant::Column::Status.eq(TenantStatus::Active.as_str()))
            .filter(tenant::Column::ContractEnd.lt(today))
            .exec(&tx)
            .await
            .map_err(JobFailure::retry)?;
        tx.commit().await.map_err(JobFailure::retry)?;
        if r.rows_affected > 0 {
            tracing::info!(
                count = r.rows_affected,
                "institutions with ended contracts moved to offboarding"
            );
        }
        Ok(())
    }
}
