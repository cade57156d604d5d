//! The sealer: moves queued events into each tenant's log, in one transaction per batch —
//! entries appended with consecutive `seq` and chained `prev`, pending rows removed, a signed
//! checkpoint for the new tree size. A crash at any point leaves either the whole batch or
//! none of it, so there is no gap and no duplicate. Several sealer processes may run against
//! one PostgreSQL database: a per-tenant advisory lock serializes them (SQLite serializes all
//! writers anyway).

use crate::checkpoint::{CheckpointBody, Signer};
use crate::entry::{encode_raw, GENESIS_PREV};
use crate::event::AuditEvent;
use crate::merkle::{leaf_hash, Frontier, Hash};
use crate::store::is_postgres;
use crate::AuditError;
use anshin_platform::db::{begin_platform_tx, begin_platform_write_tx, on_writer};
use sea_orm::sea_query::{Alias, Expr, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, Statement};
use std::sync::Arc;
use uuid::Uuid;

/// An event as it was sealed, handed to hooks (alert rules) inside the sealing transaction.
#[derive(Debug, Clone)]
pub struct SealedEvent {
    pub seq: u64,
    pub event: AuditEvent,
}

/// Runs inside the sealing transaction after a batch is appended: whatever it writes commits
/// with the batch, and an error rolls the batch back to be retried.
#[async_trait::async_trait]
pub trait SealHook: Send + Sync {
    async fn on_sealed(
        &self,
        tx: &DatabaseTransaction,
        tenant_id: Uuid,
        events: &[SealedEvent],
    ) -> Result<(), AuditError>;
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SealReport {
    pub tenants: usize,
    pub entries: u64,
    pub checkpoints: usize,
}

#[derive(Clone)]
pub struct Sealer {
    db: DatabaseConnection,
    signer: Arc<dyn Signer>,
    /// At most this many entries per checkpoint.
    batch: usize,
    hooks: Vec<Arc<dyn SealHook>>,
}

/// The log's state after its last checkpoint.
struct Head {
    frontier: Frontier,
    last_leaf: Hash,
}

impl Sealer {
    pub fn new(db: DatabaseConnection, signer: Arc<dyn Signer>, batch: usize) -> Self {
        Self {
            db,
            signer,
            batch: batch.clamp(1, 50_000),
            hooks: Vec::new(),
        }
    }

    pub fn with_hook(mut self, hook: Arc<dyn SealHook>) -> Self {
        self.hooks.push(hook);
        self
    }

    pub fn signer(&self) -> &Arc<dyn Signer> {
        &self.signer
    }

    /// Seals everything pending, tenant by tenant.
    pub async fn seal_all(&self) -> Result<SealReport, AuditError> {
        let tenants = self.pending_tenants().await?;
        let mut report = SealReport::default();
        for t in tenants {
            report.tenants += 1;
            loop {
                let n = self.seal_batch(t).await?;
                if n == 0 {
                    break;
                }
                report.entries += n as u64;
                report.checkpoints += 1;
                if n < self.batch {
                    break;
                }
            }
        }
        Ok(report)
    }

    /// Seals everything pending for one tenant (before an export, for instance).
    pub async fn seal_tenant(&self, tenant_id: Uuid) -> Result<u64, AuditError> {
        let mut total = 0u64;
        loop {
            let n = self.seal_batch(tenant_id).await?;
            total += n as u64;
            if n < self.batch {
                return Ok(total);
            }
        }
    }

    async fn pending_tenants(&self) -> Result<Vec<Uuid>, AuditError> {
        let tx = begin_platform_tx(&self.db).await?;
        let backend = tx.get_database_backend();
        let q = Query::select()
            .distinct()
            .column(Alias::new("tenant_id"))
            .from(Alias::new("audit_pending"))
            .to_owned();
        let rows = tx.query_all(backend.build(&q)).await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| r.try_get::<Uuid>("", "tenant_id").map_err(AuditError::from))
            .collect()
    }

    /// One batch for one tenant, in one transaction (on SQLite, on the writer runtime: see
    /// [`on_writer`]). Returns how many entries were appended.
    async fn seal_batch(&self, tenant_id: Uuid) -> Result<usize, AuditError> {
        let this = self.clone();
        on_writer(
            &self.db,
            async move { this.seal_batch_here(tenant_id).await },
        )
        .await
    }

    async fn seal_batch_here(&self, tenant_id: Uuid) -> Result<usize, AuditError> {
        let tx = begin_platform_write_tx(&self.db).await?;
        let backend = tx.get_database_backend();
        if is_postgres(&tx) {
            tx.execute(Statement::from_sql_and_values(
                backend,
                "SELECT pg_advisory_xact_lock($1)",
                [lock_key(tenant_id).into()],
            ))
            .await?;
        }
        let head = load_head(&tx, tenant_id).await?;
        let q = Query::select()
            .expr_as(
                Expr::col((Alias::new("p"), Alias::new("event_id"))),
                Alias::new("id"),
            )
            .expr_as(
                Expr::col((Alias::new("e"), Alias::new("body"))),
                Alias::new("body"),
            )
            .from_as(Alias::new("audit_pending"), Alias::new("p"))
            .join_as(
                sea_orm::sea_query::JoinType::InnerJoin,
                Alias::new("audit_events"),
                Alias::new("e"),
                Expr::col((Alias::new("e"), Alias::new("id")))
                    .equals((Alias::new("p"), Alias::new("event_id"))),
            )
            .and_where(Expr::col((Alias::new("p"), Alias::new("tenant_id"))).eq(tenant_id))
            .order_by(
                (Alias::new("p"), Alias::new("event_id")),
                sea_orm::Order::Asc,
            )
            .limit(self.batch as u64)
            .to_owned();
        let sql = backend.build(&q);
        let rows = tx.query_all(sql).await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let mut frontier = head.frontier;
        let mut prev = head.last_leaf;
        let mut ids = Vec::with_capacity(rows.len());
        let mut log_rows = Vec::with_capacity(rows.len());
        let mut sealed = Vec::new();
        for row in &rows {
            let id: Uuid = row.try_get("", "id")?;
            let body: String = row.try_get("", "body")?;
            let seq = frontier.size();
            let entry = encode_raw(tenant_id, seq, &prev, &body);
            let leaf = leaf_hash(entry.as_bytes());
            frontier.push(leaf);
            prev = leaf;
            if !self.hooks.is_empty() {
                if let Ok(event) = serde_json::from_str::<AuditEvent>(&body) {
                    sealed.push(SealedEvent { seq, event });
                }
            }
            ids.push(id);
            log_rows.push((seq, id, leaf, entry));
        }
        for chunk in log_rows.chunks(500) {
            let mut ins = Query::insert();
            ins.into_table(Alias::new("audit_log")).columns([
                Alias::new("tenant_id"),
                Alias::new("seq"),
                Alias::new("event_id"),
                Alias::new("leaf_hash"),
                Alias::new("entry"),
            ]);
            for (seq, id, leaf, entry) in chunk {
                ins.values([
                    tenant_id.into(),
                    (*seq as i64).into(),
                    (*id).into(),
                    leaf.to_vec().into(),
                    entry.clone().into(),
                ])
                .map_err(|e| AuditError::Invalid(e.to_string()))?;
            }
            tx.execute(backend.build(&ins)).await?;
        }
        fault_point("after_log_insert");
        for chunk in ids.chunks(500) {
            let del = Query::delete()
                .from_table(Alias::new("audit_pending"))
                .and_where(Expr::col(Alias::new("event_id")).is_in(chunk.iter().copied()))
                .to_owned();
            tx.execute(backend.build(&del)).await?;
        }
        fault_point("after_pending_delete");
        let body = CheckpointBody::new(
            tenant_id,
            frontier.size(),
            &frontier.root(),
            crate::clock::current(),
            &self.signer.key_id(),
        );
        let body_json = body.encode()?;
        let signature = self.signer.sign(body_json.as_bytes()).await?;
        use base64::Engine;
        let frontier_json =
            serde_json::to_string(&frontier.nodes().iter().map(hex::encode).collect::<Vec<_>>())?;
        let mut cp = Query::insert();
        cp.into_table(Alias::new("audit_checkpoints"))
            .columns([
                Alias::new("tenant_id"),
                Alias::new("tree_size"),
                Alias::new("root_hash"),
                Alias::new("frontier"),
                Alias::new("last_leaf"),
                Alias::new("body"),
                Alias::new("signature"),
                Alias::new("key_id"),
                Alias::new("created_at"),
            ])
            .values([
                tenant_id.into(),
                (frontier.size() as i64).into(),
                body.root_hash.clone().into(),
                frontier_json.into(),
                hex::encode(prev).into(),
                body_json.into(),
                base64::engine::general_purpose::STANDARD
                    .encode(signature)
                    .into(),
                body.key_id.clone().into(),
                body.time.into(),
            ])
            .map_err(|e| AuditError::Invalid(e.to_string()))?;
        tx.execute(backend.build(&cp)).await?;
        fault_point("after_checkpoint_insert");
        for hook in &self.hooks {
            hook.on_sealed(&tx, tenant_id, &sealed).await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }
}

/// Stable 64-bit advisory-lock key for a tenant's log.
fn lock_key(tenant_id: Uuid) -> i64 {
    let b = tenant_id.as_bytes();
    let mut k = [0u8; 8];
    for (i, x) in b.iter().enumerate() {
        k[i % 8] ^= x;
    }
    // Keep clear of other users of advisory locks by mixing in a constant.
    i64::from_be_bytes(k) ^ 0x616e_7368_696e_4155
}

async fn load_head(tx: &DatabaseTransaction, tenant_id: Uuid) -> Result<Head, AuditError> {
    let backend = tx.get_database_backend();
    let q = Query::select()
        .columns([
            Alias::new("tree_size"),
            Alias::new("frontier"),
            Alias::new("last_leaf"),
        ])
        .from(Alias::new("audit_checkpoints"))
        .and_where(Expr::col(Alias::new("tenant_id")).eq(tenant_id))
        .order_by(Alias::new("tree_size"), sea_orm::Order::Desc)
        .limit(1)
        .to_owned();
    let Some(row) = tx.query_one(backend.build(&q)).await? else {
        return Ok(Head {
            frontier: Frontier::default(),
            last_leaf: GENESIS_PREV,
        });
    };
    let corrupt = |detail: String| AuditError::Corrupt {
        tenant: tenant_id,
        detail,
    };
    let size: i64 = row.try_get("", "tree_size")?;
    let frontier: String = row.try_get("", "frontier")?;
    let last: String = row.try_get("", "last_leaf")?;
    let nodes: Vec<String> = serde_json::from_str(&frontier)
        .map_err(|e| corrupt(format!("checkpoint frontier is not a JSON list: {e}")))?;
    let nodes = nodes
        .iter()
        .map(|h| parse_hash(h))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| corrupt("checkpoint frontier holds a malformed hash".into()))?;
    let frontier = Frontier::new(size as u64, nodes).map_err(|e| corrupt(e.to_string()))?;
    let last_leaf =
        parse_hash(&last).ok_or_else(|| corrupt("checkpoint last leaf is malformed".into()))?;
    Ok(Head {
        frontier,
        last_leaf,
    })
}

pub fn parse_hash(h: &str) -> Option<Hash> {
    let v = hex::decode(h).ok()?;
    v.try_into().ok()
}

/// Fault injection for the crash tests: in debug builds only, `ANSHIN_AUDIT_FAULT=<point>`
/// aborts the process at that point of a sealing transaction.
fn fault_point(point: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("ANSHIN_AUDIT_FAULT").is_ok_and(|p| p == point) {
        eprintln!("ANSHIN_AUDIT_FAULT: aborting at {point}");
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}

/// Seals on a timer until `shutdown` fires: every `interval`, or sooner when `notify` wakes it.
pub async fn run(
    sealer: Sealer,
    interval: std::time::Duration,
    notify: Arc<tokio::sync::Notify>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match sealer.seal_all().await {
            Ok(r) if r.entries > 0 => {
                tracing::debug!(
                    entries = r.entries,
                    checkpoints = r.checkpoints,
                    "audit sealed"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "audit sealing failed; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = notify.notified() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
