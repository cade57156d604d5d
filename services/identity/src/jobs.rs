//! Background work of the identity service: the stale-account sweep (guideline 14 ⑦, unused IDs
//! are found and taken out of use without waiting for the next review).
//!
//! Every hour, for each tenant and its identity policy: an active account without a sign-in (or,
//! never signed in, since its creation) for `stale_after_days` is flagged (`stale_flagged_at`);
//! an account still flagged `disable_after_days` later is disabled and its sessions end
//! (`ended_reason` `stale_account`). A sign-in after the flag lifts it at once (the flag only
//! holds while `last_sign_in_at <= stale_flagged_at`); the sweep then clears the column.
//! Break-glass accounts are meant to stay unused and are never flagged.
//!
//! The same hourly job prunes the used `jti`s of client assertions (`client_assertion_jtis`)
//! once their assertions have expired: an expired assertion is refused on its own, so its `jti`
//! no longer needs remembering.

use crate::clients::token::ASSERTION_LEEWAY_SECS;
use crate::entity::{break_glass, client_assertion_jti, user};
use crate::error::IdentityError;
use crate::inventory::{disable_in, effective_flag};
use crate::policy::{self, PolicySettings};
use anshin_platform::db::{begin_platform_tx, begin_platform_write_tx};
use anshin_platform::jobs::{JobContext, JobFailure, JobHandler, Schedule};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, DatabaseConnection, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect,
};
use serde::Serialize;
use std::collections::HashSet;
use uuid::Uuid;

pub const STALE_ACCOUNT_SWEEP: &str = "identity.stale_account_sweep";

/// How long a used client-assertion `jti` is kept after the assertion's `exp`: the leeway the
/// token endpoint allows on `exp`, and a minute more for clocks.
pub const JTI_KEEP_AFTER_EXPIRY_SECS: i64 = ASSERTION_LEEWAY_SECS + 60;

/// Rows per `IN (…)` list in bulk updates.
const ID_CHUNK: usize = 500;

/// The identity service's periodic jobs.
pub fn schedules() -> Vec<Schedule> {
    vec![Schedule::new(
        STALE_ACCOUNT_SWEEP,
        STALE_ACCOUNT_SWEEP,
        std::time::Duration::from_secs(3600),
    )]
}

/// What the sweep should do with one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleAction {
    Keep,
    /// Unused for `stale_after_days`: set the flag now.
    Flag,
    /// The flag no longer holds (signed in since): clear the column.
    Clear,
    /// Flagged for `disable_after_days`: disable and end its sessions.
    Disable,
}

/// The sweep's decision for one active account at `now`.
pub fn stale_action(
    created_at: DateTime<Utc>,
    last_sign_in_at: Option<DateTime<Utc>>,
    stale_flagged_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    p: &PolicySettings,
) -> StaleAction {
    if let Some(flagged) = effective_flag(last_sign_in_at, stale_flagged_at) {
        return if now - flagged >= Duration::days(p.disable_after_days) {
            StaleAction::Disable
        } else {
            StaleAction::Keep
        };
    }
    let last_used = last_sign_in_at.unwrap_or(created_at);
    if now - last_used >= Duration::days(p.stale_after_days) {
        StaleAction::Flag
    } else if stale_flagged_at.is_some() {
        StaleAction::Clear
    } else {
        StaleAction::Keep
    }
}

/// What one sweep changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub flagged: u64,
    pub cleared: u64,
    pub disabled: u64,
    pub sessions_ended: u64,
}

impl SweepReport {
    fn add(&mut self, o: SweepReport) {
        self.flagged += o.flagged;
        self.cleared += o.cleared;
        self.disabled += o.disabled;
        self.sessions_ended += o.sessions_ended;
    }
}

/// Runs the sweep over every tenant with active accounts, one transaction per tenant. A tenant
/// that fails does not stop the others; the first error is returned after all were tried (the
/// job then retries; the sweep is idempotent).
pub async fn sweep_stale_accounts(
    db: &DatabaseConnection,
    now: DateTime<Utc>,
) -> Result<SweepReport, IdentityError> {
    let tx = begin_platform_tx(db).await?;
    let tenants: Vec<Uuid> = user::Entity::find()
        .select_only()
        .column(user::Column::TenantId)
        .distinct()
        .filter(user::Column::Status.eq("active"))
        .into_tuple()
        .all(&tx)
        .await?;
    tx.commit().await?;
    let mut report = SweepReport::default();
    let mut first_error = None;
    for tenant_id in tenants {
        match sweep_tenant(db, tenant_id, now).await {
            Ok(r) => report.add(r),
            Err(e) => {
                tracing::error!(tenant = %tenant_id, error = %e, "stale-account sweep failed for a tenant");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

async fn sweep_tenant(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    now: DateTime<Utc>,
) -> Result<SweepReport, IdentityError> {
    let tx = begin_platform_write_tx(db).await?;
    // The sweep needs only the stale and disable periods; the idle default does not matter here.
    let p = policy::stored(&tx, tenant_id)
        .await?
        .unwrap_or_else(|| policy::defaults(0));
    let break_glass: HashSet<Uuid> = break_glass::Entity::find()
        .select_only()
        .column(break_glass::Column::UserId)
        .filter(break_glass::Column::TenantId.eq(tenant_id))
        .into_tuple::<Uuid>()
        .all(&tx)
        .await?
        .into_iter()
        .collect();
    let accounts = user::Entity::find()
        .filter(user::Column::TenantId.eq(tenant_id))
        .filter(user::Column::Status.eq("active"))
        .all(&tx)
        .await?;
    let (mut flag, mut clear, mut disable) = (Vec::new(), Vec::new(), Vec::new());
    for a in accounts {
        // Every break-glass account is created together with its first code, and codes are
        // only ever retired, never deleted: the codes name them all (their addresses are sealed).
        if break_glass.contains(&a.id) {
            continue;
        }
        match stale_action(a.created_at, a.last_sign_in_at, a.stale_flagged_at, now, &p) {
            StaleAction::Keep => {}
            StaleAction::Flag => flag.push(a.id),
            StaleAction::Clear => clear.push(a.id),
            StaleAction::Disable => disable.push(a.id),
        }
    }
    let mut r = SweepReport {
        flagged: set_flag(&tx, tenant_id, &flag, Some(now)).await?,
        cleared: set_flag(&tx, tenant_id, &clear, None).await?,
        ..SweepReport::default()
    };
    for id in &disable {
        r.sessions_ended += disable_in(&tx, tenant_id, *id, "stale_account").await?;
        r.disabled += 1;
    }
    let sweep = crate::audit::Actor::system("identity.stale_account_sweep");
    let mut events = Vec::new();
    for (ids, action) in [(&flag, "account.flag_stale"), (&disable, "account.disable")] {
        for id in ids {
            events.push(
                crate::audit::AuditEvent::new(
                    tenant_id,
                    sweep.clone(),
                    action,
                    crate::audit::Outcome::Success,
                )
                .target(crate::audit::Target::new("user", id))
                .reason("no sign-in within the identity policy's period")
                .detail("stale_after_days", p.stale_after_days)
                .detail("disable_after_days", p.disable_after_days),
            );
        }
    }
    anshin_audit::record_all(&tx, &events)
        .await
        .map_err(crate::audit::audit_err)?;
    tx.commit().await?;
    if r != SweepReport::default() {
        tracing::info!(tenant = %tenant_id, flagged = r.flagged, cleared = r.cleared, disabled = r.disabled,
            sessions_ended = r.sessions_ended, "stale-account sweep");
    }
    Ok(r)
}

async fn set_flag(
    tx: &DatabaseTransaction,
    tenant_id: Uuid,
    ids: &[Uuid],
    value: Option<DateTime<Utc>>,
) -> Result<u64, IdentityError> {
    let mut n = 0;
    for chunk in ids.chunks(ID_CHUNK) {
        n += user::Entity::update_many()
            .col_expr(user::Column::StaleFlaggedAt, Expr::value(value))
            .filter(user::Column::TenantId.eq(tenant_id))
            .filter(user::Column::Id.is_in(chunk.iter().copied()))
            .exec(tx)
            .await?
            .rows_affected;
    }
    Ok(n)
}

/// Deletes the used client-assertion `jti`s whose assertions expired more than
/// [`JTI_KEEP_AFTER_EXPIRY_SECS`] before `now`; returns how many went.
pub async fn prune_client_assertion_jtis(
    db: &DatabaseConnection,
    now: DateTime<Utc>,
) -> Result<u64, IdentityError> {
    let cutoff = now - Duration::seconds(JTI_KEEP_AFTER_EXPIRY_SECS);
    let tx = begin_platform_tx(db).await?;
    let r = client_assertion_jti::Entity::delete_many()
        .filter(client_assertion_jti::Column::ExpiresAt.lt(cutoff))
        .exec(&tx)
        .await?;
    tx.commit().await?;
    if r.rows_affected > 0 {
        tracing::info!(
            pruned = r.rows_affected,
            "expired client-assertion jtis pruned"
        );
    }
    Ok(r.rows_affected)
}

/// The hourly identity job (registered by the server next to the tenancy jobs): the
/// stale-account sweep, then the pruning of expired client-assertion `jti`s.
pub struct StaleAccountSweep;

#[async_trait]
impl JobHandler for StaleAccountSweep {
    fn kind(&self) -> &'static str {
        STALE_ACCOUNT_SWEEP
    }

    async fn run(&self, ctx: &JobContext) -> Result<(), JobFailure> {
        let now = Utc::now();
        let swept = sweep_stale_accounts(ctx.db(), now).await;
        if let Ok(r) = &swept {
            if r.disabled > 0 {
                tracing::warn!(
                    disabled = r.disabled,
                    "stale accounts disabled (no sign-in within the tenant's policy)"
                );
            }
        }
        // Independent of the sweep: a failing tenant does not keep the table growing.
        let pruned = prune_client_assertion_jtis(ctx.db(), now).await;
        if let Err(e) = &pruned {
            tracing::error!(error = %e, "pruning expired client-assertion jtis failed");
        }
        swept.map_err(JobFailure::retry)?;
        pruned.map_err(JobFailure::retry)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> PolicySettings {
        PolicySettings {
            idle_timeout_secs: 900,
            stale_after_days: 90,
            disable_after_days: 30,
        }
    }

    fn days(n: i64) -> Duration {
        Duration::days(n)
    }

    #[test]
    fn recent_sign_in_keeps_the_account() {
        let now = Utc::now();
        let a = stale_action(now - days(400), Some(now - days(89)), None, now, &p());
        assert_eq!(a, StaleAction::Keep);
    }

    #[test]
    fn unused_for_the_period_is_flagged() {
        let now = Utc::now();
        assert_eq!(
            stale_action(now - days(400), Some(now - days(90)), None, now, &p()),
            StaleAction::Flag
        );
        // Never signed in: counted from creation.
        assert_eq!(
            stale_action(now - days(91), None, None, now, &p()),
            StaleAction::Flag
        );
        assert_eq!(
            stale_action(now - days(10), None, None, now, &p()),
            StaleAction::Keep
        );
    }

    #[test]
    fn flagged_accounts_are_disabled_after_the_grace_period() {
        let now = Utc::now();
        let last = Some(now - days(200));
        assert_eq!(
            stale_action(now - days(400), last, Some(now - days(29)), now, &p()),
            StaleAction::Keep
        );
        assert_eq!(
            stale_action(now - days(400), last, Some(now - days(30)), now, &p()),
            StaleAction::Disable
        );
        assert_eq!(
            stale_action(now - days(400), None, Some(now - days(31)), now, &p()),
            StaleAction::Disable
        );
    }

    #[test]
    fn a_sign_in_after_the_flag_lifts_it() {
        let now = Utc::now();
        // Flagged 40 days ago, signed in yesterday: not disabled, the column is cleared.
        assert_eq!(
            stale_action(
                now - days(400),
                Some(now - days(1)),
                Some(now - days(40)),
                now,
                &p()
            ),
            StaleAction::Clear
        );
        // Flagged long ago, signed in after, then unused again for the period: flagged anew.
        assert_eq!(
            stale_action(
                now - days(900),
                Some(now - days(100)),
                Some(now - days(300)),
                now,
                &p()
            ),
            StaleAction::Flag
        );
    }

    #[test]
    fn the_policy_sets_the_periods() {
        let now = Utc::now();
        let strict = PolicySettings {
            idle_timeout_secs: 900,
            stale_after_days: 7,
            disable_after_days: 1,
        };
        assert_eq!(
            stale_action(now - days(30), Some(now - days(8)), None, now, &strict),
            StaleAction::Flag
        );
        assert_eq!(
            stale_action(
                now - days(30),
                Some(now - days(8)),
                Some(now - days(1)),
                now,
                &strict
            ),
            StaleAction::Disable
        );
    }
}
