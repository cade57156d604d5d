//! Exporting a tenant's trail for a time range: the contiguous run of sealed entries that holds
//! every event of the range, the checkpoints that sealed them and the latest one, and the
//! subtree hashes a verifier needs (format in [`crate::format`], written by [`crate::assemble`]).

use crate::assemble::{select_rows, write_export, CheckpointRow, ExportParts};
use crate::event::{Actor, AuditEvent, Outcome, Target};
use crate::service::{leaf_hashes, AuditService};
use crate::AuditError;
use anshin_platform::db::{tenant_reader, TenantReader};
use anshin_platform::Principal;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, Func, JoinType, Order, Query};
use sea_orm::ConnectionTrait;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// A tenant in the caller's scope (default: the caller's own).
    pub tenant_id: Option<Uuid>,
    /// Events at or after this time (RFC 3339); default: from the beginning.
    pub from: Option<DateTime<Utc>>,
    /// Events before this time (RFC 3339); default: until now.
    pub to: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExportSummary {
    pub tenant_id: Uuid,
    pub first: u64,
    pub last: u64,
    pub checkpoints: usize,
}

impl AuditService {
    /// The export as JSON Lines bytes. Who exported what is itself recorded (`audit.export`).
    pub async fn export(
        &self,
        p: &Principal,
        q: &ExportQuery,
    ) -> Result<(Vec<u8>, ExportSummary), AuditError> {
        let tenant = self.readable_tenant(p, q.tenant_id).await?;
        if let (Some(f), Some(t)) = (q.from, q.to) {
            if f >= t {
                return Err(AuditError::Invalid("from must be before to".into()));
            }
        }
        // Include what happened up to this moment.
        if let Err(e) = self.seal_now(tenant).await {
            tracing::warn!(error = %e, tenant = %tenant, "sealing before export failed; exporting what is sealed");
        }
        let r = tenant_reader(self.db(), p.tenant_id).await?;
        let out = build(&r, tenant, q, self.public_key()).await;
        r.finish().await?;
        let (bytes, summary) = out?;
        let actor = Actor::from_principal(p);
        self.record_now(
            &AuditEvent::new(tenant, actor, "audit.export", Outcome::Success)
                .target(Target::new("audit_log", tenant))
                .detail("from", q.from)
                .detail("to", q.to)
                .detail("first", summary.first)
                .detail("last", summary.last)
                .detail("count", summary.last - summary.first),
        )
        .await?;
        Ok((bytes, summary))
    }
}

/// Exports for the CLI (platform operator), without a principal.
pub async fn export_as_operator(
    svc: &AuditService,
    tenant: Uuid,
    q: &ExportQuery,
) -> Result<(Vec<u8>, ExportSummary), AuditError> {
    svc.seal_now(tenant).await?;
    let tx = anshin_platform::db::begin_platform_tx(svc.db()).await?;
    let r = TenantReader::Tx(tx);
    let out = build(&r, tenant, q, svc.public_key()).await;
    r.finish().await?;
    let (bytes, summary) = out?;
    svc.record_now(
        &AuditEvent::new(tenant, Actor::operator(), "audit.export", Outcome::Success)
            .target(Target::new("audit_log", tenant))
            .detail("from", q.from)
            .detail("to", q.to)
            .detail("count", summary.last - summary.first),
    )
    .await?;
    Ok((bytes, summary))
}

async fn build(
    r: &TenantReader,
    tenant: Uuid,
    q: &ExportQuery,
    key: crate::PublicKeyInfo,
) -> Result<(Vec<u8>, ExportSummary), AuditError> {
    let backend = r.get_database_backend();
    let mut range = Query::select();
    range
        .expr_as(
            Func::min(Expr::col((Alias::new("l"), Alias::new("seq")))),
            Alias::new("lo"),
        )
        .expr_as(
            Func::max(Expr::col((Alias::new("l"), Alias::new("seq")))),
            Alias::new("hi"),
        )
        .from_as(Alias::new("audit_log"), Alias::new("l"))
        .join_as(
            JoinType::InnerJoin,
            Alias::new("audit_events"),
            Alias::new("e"),
            Expr::col((Alias::new("e"), Alias::new("id")))
                .equals((Alias::new("l"), Alias::new("event_id"))),
        )
        .and_where(Expr::col((Alias::new("l"), Alias::new("tenant_id"))).eq(tenant));
    if let Some(f) = q.from {
        range.and_where(Expr::col((Alias::new("e"), Alias::new("time"))).gte(f));
    }
    if let Some(t) = q.to {
        range.and_where(Expr::col((Alias::new("e"), Alias::new("time"))).lt(t));
    }
    let row = r.query_one(backend.build(&range)).await?;
    let (lo, hi): (Option<i64>, Option<i64>) = match row {
        Some(row) => (row.try_get("", "lo")?, row.try_get("", "hi")?),
        None => (None, None),
    };
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Err(AuditError::NotFound(
            "no sealed audit events in that time range".into(),
        ));
    };
    let (first, last) = (lo as u64, hi as u64 + 1);

    let cps = Query::select()
        .columns([
            Alias::new("tree_size"),
            Alias::new("body"),
            Alias::new("signature"),
        ])
        .from(Alias::new("audit_checkpoints"))
        .and_where(Expr::col(Alias::new("tenant_id")).eq(tenant))
        .and_where(Expr::col(Alias::new("tree_size")).gt(first as i64))
        .order_by(Alias::new("tree_size"), Order::Asc)
        .to_owned();
    let rows = r.query_all(backend.build(&cps)).await?;
    let mut all = Vec::with_capacity(rows.len());
    for row in rows {
        let size: i64 = row.try_get("", "tree_size")?;
        all.push(CheckpointRow {
            tree_size: size as u64,
            body: row.try_get("", "body")?,
            signature: row.try_get("", "signature")?,
            timestamp_token: None,
        });
    }
    let mut chosen = select_rows(&all, first, last);
    let sizes: Vec<u64> = chosen.iter().map(|c| c.tree_size).collect();
    let tokens = crate::trusted_time::tokens_for(r, tenant, &sizes).await?;
    for c in &mut chosen {
        c.timestamp_token = tokens.get(&c.tree_size).cloned();
    }
    let n = chosen.last().map(|c| c.tree_size).unwrap_or(last);
    let leaves = leaf_hashes(r, tenant, n).await?;

    let entries_q = Query::select()
        .column(Alias::new("entry"))
        .from(Alias::new("audit_log"))
        .and_where(Expr::col(Alias::new("tenant_id")).eq(tenant))
        .and_where(Expr::col(Alias::new("seq")).gte(first as i64))
        .and_where(Expr::col(Alias::new("seq")).lt(last as i64))
        .order_by(Alias::new("seq"), Order::Asc)
        .to_owned();
    let entry_rows = r.query_all(backend.build(&entries_q)).await?;
    let entries = entry_rows
        .iter()
        .map(|row| row.try_get::<String>("", "entry"))
        .collect::<Result<Vec<_>, _>>()?;
    let keys = [key];
    let parts = ExportParts {
        log: tenant,
        from: q.from,
        to: q.to,
        first,
        last,
        exported_at: Utc::now(),
        leaves: &leaves,
        checkpoints: &chosen,
        keys: &keys,
    };
    let mut out = Vec::with_capacity(entries.iter().map(|e| e.len() + 1).sum::<usize>() + 4096);
    write_export(&mut out, &parts, entries.iter())?;
    Ok((
        out,
        ExportSummary {
            tenant_id: tenant,
            first,
            last,
            checkpoints: chosen.len(),
        },
    ))
}
