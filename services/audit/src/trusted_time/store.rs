//! Stamping checkpoints with RFC 3161 tokens, and reading the tokens back for exports.
//!
//! [`timestamp_pending`] finds checkpoints that have no token (an anti-join of
//! `audit_checkpoints` against `audit_checkpoint_timestamps`), newest first — a token on the
//! newest checkpoint covers, through the log's consistency, every entry before it — and stamps
//! them one by one. No transaction is open while the TSA is asked: the pending list is read in a
//! short transaction, and each token is written in its own. Two workers stamping the same
//! checkpoint both succeed: the primary key `(tenant_id, tree_size)` keeps the first token and
//! `ON CONFLICT DO NOTHING` drops the second.

use super::migration::TABLE;
use super::tsp::TsaClient;
use super::TimeError;
use crate::AuditError;
use anshin_platform::db::begin_platform_tx;
use sea_orm::sea_query::{Alias, Condition, Expr, JoinType, OnConflict, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

/// Checkpoints stamped per round of [`run_timestamper`].
pub const BATCH: usize = 100;
/// Longest wait between attempts while the TSA keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimestampReport {
    /// Checkpoints found without a token.
    pub found: usize,
    /// Tokens stored by this call.
    pub stamped: usize,
    /// Tokens obtained but not stored because another worker stored one first.
    pub already_stamped: usize,
}

fn a(s: &str) -> Alias {
    Alias::new(s)
}

/// Stamps up to `limit` checkpoints that have no token yet, newest first. Stops at the first
/// TSA failure (the rest wait for the next round); tokens stored before it stay.
pub async fn timestamp_pending(
    db: &DatabaseConnection,
    tsa: &TsaClient,
    limit: usize,
) -> Result<TimestampReport, TimeError> {
    let pending = find_pending(db, limit).await?;
    let mut report = TimestampReport {
        found: pending.len(),
        ..Default::default()
    };
    for (tenant_id, tree_size, body) in pending {
        let stamp = match tsa.timestamp(body.as_bytes()).await {
            Ok(s) => s,
            Err(e) => {
                if report.stamped > 0 {
                    tracing::info!(
                        stamped = report.stamped,
                        "audit checkpoints timestamped before the TSA failed"
                    );
                }
                return Err(e);
            }
        };
        let mut q = Query::insert();
        q.into_table(a(TABLE))
            .columns([
                a("tenant_id"),
                a("tree_size"),
                a("token"),
                a("gen_time"),
                a("tsa_url"),
                a("created_at"),
            ])
            .values([
                tenant_id.into(),
                tree_size.into(),
                stamp.token.into(),
                stamp.info.gen_time.into(),
                tsa.url().into(),
                chrono::Utc::now().into(),
            ])
            .map_err(|e| TimeError::Malformed(e.to_string()))?
            .on_conflict(
                OnConflict::columns([a("tenant_id"), a("tree_size")])
                    .do_nothing()
                    .to_owned(),
            );
        let tx = begin_platform_tx(db).await?;
        let backend = tx.get_database_backend();
        let done = tx.execute(backend.build(&q)).await?;
        tx.commit().await?;
        if done.rows_affected() > 0 {
            report.stamped += 1;
        } else {
            report.already_stamped += 1;
        }
    }
    Ok(report)
}

/// `(tenant, tree size, body)` of up to `limit` checkpoints without a token, newest first.
async fn find_pending(
    db: &DatabaseConnection,
    limit: usize,
) -> Result<Vec<(Uuid, i64, String)>, TimeError> {
    let (c, t) = (a("c"), a("t"));
    let q = Query::select()
        .column((c.clone(), a("tenant_id")))
        .column((c.clone(), a("tree_size")))
        .column((c.clone(), a("body")))
        .from_as(a("audit_checkpoints"), c.clone())
        .join_as(
            JoinType::LeftJoin,
            a(TABLE),
            t.clone(),
            Condition::all()
                .add(Expr::col((t.clone(), a("tenant_id"))).equals((c.clone(), a("tenant_id"))))
                .add(Expr::col((t.clone(), a("tree_size"))).equals((c.clone(), a("tree_size")))),
        )
        .and_where(Expr::col((t, a("tenant_id"))).is_null())
        .order_by((c.clone(), a("created_at")), sea_orm::Order::Desc)
        .order_by((c, a("tree_size")), sea_orm::Order::Desc)
        .limit(limit as u64)
        .to_owned();
    let tx = begin_platform_tx(db).await?;
    let backend = tx.get_database_backend();
    let rows = tx.query_all(backend.build(&q)).await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<Uuid>("", "tenant_id")?,
                r.try_get::<i64>("", "tree_size")?,
                r.try_get::<String>("", "body")?,
            ))
        })
        .collect::<Result<_, sea_orm::DbErr>>()
        .map_err(TimeError::from)
}

/// The stored tokens of one tenant's checkpoints of the given sizes, as base64 (standard,
/// padded) DER — the form of `CheckpointLine::timestamp_token`. Sizes without a token are
/// absent from the map. Runs on the caller's connection or transaction (tenant-bound on
/// PostgreSQL: row-level security applies).
pub async fn tokens_for<C: ConnectionTrait>(
    conn: &C,
    tenant_id: Uuid,
    sizes: &[u64],
) -> Result<HashMap<u64, String>, AuditError> {
    use base64::Engine;
    let backend = conn.get_database_backend();
    let mut out = HashMap::new();
    for chunk in sizes.chunks(500) {
        let q = Query::select()
            .columns([a("tree_size"), a("token")])
            .from(a(TABLE))
            .and_where(Expr::col(a("tenant_id")).eq(tenant_id))
            .and_where(Expr::col(a("tree_size")).is_in(chunk.iter().map(|s| *s as i64)))
            .to_owned();
        for row in conn.query_all(backend.build(&q)).await? {
            let size: i64 = row.try_get("", "tree_size")?;
            let token: Vec<u8> = row.try_get("", "token")?;
            out.insert(
                size as u64,
                base64::engine::general_purpose::STANDARD.encode(token),
            );
        }
    }
    Ok(out)
}

/// Stamps pending checkpoints until `shutdown` turns true: a round every `interval`, at once
/// again while rounds come back full, backing off (doubling, up to 10 minutes) while the TSA
/// fails.
pub async fn run_timestamper(
    db: DatabaseConnection,
    tsa: TsaClient,
    interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let interval = interval.max(Duration::from_millis(100));
    let mut backoff = interval;
    loop {
        let round = tokio::select! {
            r = timestamp_pending(&db, &tsa, BATCH) => r,
            _ = shutdown.changed() => return,
        };
        let wait = match round {
            Ok(r) => {
                backoff = interval;
                if r.stamped > 0 {
                    tracing::debug!(stamped = r.stamped, "audit checkpoints timestamped");
                }
                if r.found >= BATCH {
                    Duration::ZERO
                } else {
                    interval
                }
            }
            Err(e) => {
                tracing::warn!(
                    tsa = tsa.url(),
                    error = %e,
                    retry_in_secs = backoff.as_secs(),
                    "timestamping audit checkpoints failed; will retry"
                );
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}
