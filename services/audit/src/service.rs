//! The audit service's typed API: recording outside a caller's transaction, reading within the
//! principal's tenant scope, proofs, checkpoints and the sealer handle. Read access is for
//! auditors and admins; provider roles also read their institutions' trails.

use crate::checkpoint::{PublicKeyInfo, Signer};
use crate::event::AuditEvent;
use crate::merkle::{self, Hash};
use crate::sealer::{parse_hash, Sealer};
use crate::AuditError;
use anshin_platform::db::{begin_tenant_tx, tenant_reader, TenantReader};
use anshin_platform::{Principal, Role, TenantScope};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Cond, Expr, JoinType, Order, Query, SelectStatement};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub const MAX_PAGE: u64 = 500;

#[derive(Clone)]
pub struct AuditService {
    db: DatabaseConnection,
    sealer: Sealer,
    /// Wakes the sealer loop early (after a large ingest, before an export).
    notify: Arc<tokio::sync::Notify>,
    ingest_max_events: usize,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// A tenant in the caller's scope (default: the caller's own).
    pub tenant_id: Option<Uuid>,
    /// Actor id or label (email address, client id).
    pub actor: Option<String>,
    /// Exact action, or a prefix ending in `.*` (e.g. `auth.*`).
    pub action: Option<String>,
    /// Target id.
    pub target: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: Option<String>,
    /// Events at or after this time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Events before this time (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// Page size, 1–500 (default 100).
    pub limit: Option<u64>,
    pub offset: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    #[serde(flatten)]
    pub event: AuditEvent,
    /// The entry's position in its tenant's log once sealed; `null` while waiting for the sealer.
    pub seq: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    pub items: Vec<EventView>,
    pub limit: u64,
    pub offset: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CheckpointView {
    pub tenant_id: Uuid,
    pub tree_size: u64,
    pub root_hash: String,
    pub time: DateTime<Utc>,
    pub key_id: String,
    /// The canonical body exactly as signed.
    pub body: String,
    /// Base64 signature over `body`.
    pub signature: String,
}

/// An event with the proof that it is in the log: RFC 9162 inclusion proof of its entry in the
/// latest checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventProof {
    pub event: AuditEvent,
    pub seq: u64,
    /// The exact entry bytes hashed into the log.
    pub entry: String,
    pub leaf_hash: String,
    /// The first checkpoint that covered the entry: when it was sealed.
    pub sealed_by: CheckpointView,
    /// The latest checkpoint, which the inclusion proof is for.
    pub checkpoint: CheckpointView,
    /// Sibling hashes, leaf to root (hex).
    pub inclusion_proof: Vec<String>,
    /// Whether this server re-verified the proof and the checkpoint signature just now.
    pub verified: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConsistencyProof {
    pub tenant_id: Uuid,
    pub old: CheckpointView,
    pub new: CheckpointView,
    /// RFC 9162 §2.1.4 consistency proof (hex).
    pub proof: Vec<String>,
    pub verified: bool,
}

impl AuditService {
    pub fn new(db: DatabaseConnection, signer: Arc<dyn Signer>, cfg: &AuditSettings) -> Self {
        let sealer = Sealer::new(db.clone(), signer, cfg.checkpoint_max_entries);
        Self {
            db,
            sealer,
            notify: Arc::new(tokio::sync::Notify::new()),
            ingest_max_events: cfg.ingest_max_events,
        }
    }

    pub fn with_sealer(mut self, sealer: Sealer) -> Self {
        self.sealer = sealer;
        self
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    pub fn notifier(&self) -> Arc<tokio::sync::Notify> {
        self.notify.clone()
    }

    pub fn ingest_max_events(&self) -> usize {
        self.ingest_max_events
    }

    pub fn public_key(&self) -> PublicKeyInfo {
        self.sealer.signer().public_key()
    }

    /// Records an event that accompanies no other change (a refused sign-in, a denied request),
    /// in its own transaction.
    pub async fn record_now(&self, event: &AuditEvent) -> Result<(), AuditError> {
        let tx = if event.tenant_id == crate::PLATFORM_LOG {
            anshin_platform::db::begin_platform_tx(&self.db).await?
        } else {
            begin_tenant_tx(&self.db, event.tenant_id).await?
        };
        crate::store::record(&tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Which tenant's trail the principal asks for, if they may read it. A tenant outside the
    /// principal's scope is "not found" (scope before role).
    pub async fn readable_tenant(
        &self,
        p: &Principal,
        requested: Option<Uuid>,
    ) -> Result<Uuid, AuditError> {
        let t = requested.unwrap_or(p.tenant_id);
        if t != p.tenant_id {
            let TenantScope::Provider(provider) = p.scope() else {
                return Err(AuditError::NotFound("no such tenant".into()));
            };
            let r = tenant_reader(&self.db, p.tenant_id).await?;
            let q = Query::select()
                .expr(Expr::val(1))
                .from(Alias::new("audit_tenants"))
                .and_where(Expr::col(Alias::new("tenant_id")).eq(t))
                .and_where(Expr::col(Alias::new("provider_id")).eq(provider))
                .to_owned();
            let found = r.query_one(r.get_database_backend().build(&q)).await?;
            r.finish().await?;
            if found.is_none() {
                return Err(AuditError::NotFound("no such tenant".into()));
            }
        }
        if !may_read(p.role) || p.grant.is_some() {
            return Err(AuditError::Forbidden(
                "reading the audit trail needs the auditor or an admin role".into(),
            ));
        }
        Ok(t)
    }

    pub async fn search(&self, p: &Principal, q: &SearchQuery) -> Result<EventPage, AuditError> {
        let tenant = self.readable_tenant(p, q.tenant_id).await?;
        let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
        let offset = q.offset.unwrap_or(0);
        let mut sel = base_select(tenant);
        if let Some(actor) = q.actor.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            sel.and_where(
                Cond::any()
                    .add(Expr::col((Alias::new("e"), Alias::new("actor_id"))).eq(actor))
                    .add(Expr::col((Alias::new("e"), Alias::new("actor_label"))).eq(actor))
                    .into(),
            );
        }
        if let Some(action) = q.action.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            if !action
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._*".contains(&b))
            {
                return Err(AuditError::Invalid(
                    "action may contain only a-z, 0-9, '_', '.' and a final '.*'".into(),
                ));
            }
            match action.strip_suffix(".*") {
                Some(prefix) if !prefix.contains('*') => {
                    sel.and_where(
                        Expr::col((Alias::new("e"), Alias::new("action")))
                            .like(format!("{prefix}.%")),
                    );
                }
                None if !action.contains('*') => {
                    sel.and_where(Expr::col((Alias::new("e"), Alias::new("action"))).eq(action));
                }
                _ => {
                    return Err(AuditError::Invalid(
                        "a wildcard is allowed only as a final '.*'".into(),
                    ))
                }
            }
        }
        if let Some(target) = q.target.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            sel.and_where(Expr::col((Alias::new("e"), Alias::new("target_id"))).eq(target));
        }
        if let Some(outcome) = q.outcome.as_deref() {
            if !["success", "failure", "denied"].contains(&outcome) {
                return Err(AuditError::Invalid(
                    "outcome must be success, failure or denied".into(),
                ));
            }
            sel.and_where(Expr::col((Alias::new("e"), Alias::new("outcome"))).eq(outcome));
        }
        if let Some(from) = q.from {
            sel.and_where(Expr::col((Alias::new("e"), Alias::new("time"))).gte(from));
        }
        if let Some(to) = q.to {
            sel.and_where(Expr::col((Alias::new("e"), Alias::new("time"))).lt(to));
        }
        sel.order_by((Alias::new("e"), Alias::new("time")), Order::Desc)
            .order_by((Alias::new("e"), Alias::new("id")), Order::Desc)
            .limit(limit)
            .offset(offset);
        let r = tenant_reader(&self.db, p.tenant_id).await?;
        let items = fetch_views(&r, &sel).await?;
        r.finish().await?;
        Ok(EventPage {
            items,
            limit,
            offset,
        })
    }

    /// One event, with its inclusion proof when it has been sealed.
    pub async fn event(&self, p: &Principal, id: Uuid) -> Result<EventView, AuditError> {
        let r = tenant_reader(&self.db, p.tenant_id).await?;
        let mut sel = base_select_any();
        sel.and_where(Expr::col((Alias::new("e"), Alias::new("id"))).eq(id));
        let found = fetch_views(&r, &sel).await?;
        r.finish().await?;
        let view = found
            .into_iter()
            .next()
            .ok_or_else(|| AuditError::NotFound("no such audit event".into()))?;
        // Scope check on the event's tenant (an id from another tenant is "not found").
        self.readable_tenant(p, Some(view.event.tenant_id))
            .await
            .map_err(|e| match e {
                AuditError::NotFound(_) => AuditError::NotFound("no such audit event".into()),
                other => other,
            })?;
        Ok(view)
    }

    pub async fn proof(&self, p: &Principal, id: Uuid) -> Result<EventProof, AuditError> {
        let view = self.event(p, id).await?;
        let tenant = view.event.tenant_id;
        let seq = view.seq.ok_or_else(|| {
            AuditError::NotFound("the event is not sealed yet; try again in a few seconds".into())
        })?;
        let r = tenant_reader(&self.db, p.tenant_id).await?;
        let latest = latest_checkpoint(&r, tenant)
            .await?
            .ok_or_else(|| AuditError::NotFound("the log has no checkpoint yet".into()))?;
        let sealed_by = first_checkpoint_covering(&r, tenant, seq)
            .await?
            .ok_or_else(|| AuditError::NotFound("the log has no checkpoint yet".into()))?;
        let leaves = leaf_hashes(&r, tenant, latest.tree_size).await?;
        let entry = entry_text(&r, tenant, seq).await?;
        r.finish().await?;
        let proof = merkle::inclusion_proof(&leaves, seq, latest.tree_size);
        let leaf = leaves
            .get(seq as usize)
            .copied()
            .ok_or_else(|| AuditError::Corrupt {
                tenant,
                detail: format!("entry {seq} has no leaf hash"),
            })?;
        let verified = self.check_checkpoint(&latest)
            && parse_hash(&latest.root_hash).is_some_and(|root| {
                merkle::verify_inclusion(&leaf, seq, latest.tree_size, &proof, &root)
            })
            && merkle::leaf_hash(entry.as_bytes()) == leaf;
        Ok(EventProof {
            event: view.event,
            seq,
            entry,
            leaf_hash: hex::encode(leaf),
            sealed_by,
            checkpoint: latest,
            inclusion_proof: proof.iter().map(hex::encode).collect(),
            verified,
        })
    }

    fn check_checkpoint(&self, c: &CheckpointView) -> bool {
        use base64::Engine;
        let key = self.public_key();
        if key.key_id != c.key_id {
            return false;
        }
        base64::engine::general_purpose::STANDARD
            .decode(&c.signature)
            .ok()
            .is_some_and(|sig| {
                crate::checkpoint::verify_signature(&key, c.body.as_bytes(), &sig).is_ok()
            })
    }

    pub async fn checkpoints(
        &self,
        p: &Principal,
        tenant: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<CheckpointView>, AuditError> {
        let tenant = self.readable_tenant(p, tenant).await?;
        let r = tenant_reader(&self.db, p.tenant_id).await?;
        let q = checkpoint_select(tenant)
            .order_by(Alias::new("tree_size"), Order::Desc)
            .limit(limit.clamp(1, MAX_PAGE))
            .to_owned();
        let out = fetch_checkpoints(&r, &q).await?;
        r.finish().await?;
        Ok(out)
    }

    pub async fn consistency(
        &self,
        p: &Principal,
        tenant: Option<Uuid>,
        old: u64,
        new: u64,
    ) -> Result<ConsistencyProof, AuditError> {
        let tenant = self.readable_tenant(p, tenant).await?;
        if old == 0 || old > new {
            return Err(AuditError::Invalid(
                "need 0 < old ≤ new tree sizes of existing checkpoints".into(),
            ));
        }
        let r = tenant_reader(&self.db, p.tenant_id).await?;
        let get = |size: u64| {
            checkpoint_select(tenant)
                .and_where(Expr::col(Alias::new("tree_size")).eq(size as i64))
                .to_owned()
        };
        let old_cp = fetch_checkpoints(&r, &get(old)).await?.into_iter().next();
        let new_cp = fetch_checkpoints(&r, &get(new)).await?.into_iter().next();
        let (Some(old_cp), Some(new_cp)) = (old_cp, new_cp) else {
            r.finish().await?;
            return Err(AuditError::NotFound(
                "no checkpoint with that tree size".into(),
            ));
        };
        let leaves = leaf_hashes(&r, tenant, new).await?;
        r.finish().await?;
        let proof = merkle::consistency_proof(&leaves, old, new);
        let verified = self.check_checkpoint(&old_cp)
            && self.check_checkpoint(&new_cp)
            && match (parse_hash(&old_cp.root_hash), parse_hash(&new_cp.root_hash)) {
                (Some(a), Some(b)) => merkle::verify_consistency(old, new, &proof, &a, &b),
                _ => false,
            };
        Ok(ConsistencyProof {
            tenant_id: tenant,
            old: old_cp,
            new: new_cp,
            proof: proof.iter().map(hex::encode).collect(),
            verified,
        })
    }

    /// Seals what is pending for `tenant` now (an export should include the latest events).
    pub async fn seal_now(&self, tenant: Uuid) -> Result<u64, AuditError> {
        self.sealer.seal_tenant(tenant).await
    }

    pub fn wake_sealer(&self) {
        self.notify.notify_one();
    }
}

/// What [`AuditService::new`] needs from the configuration.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub checkpoint_max_entries: usize,
    pub ingest_max_events: usize,
}

impl From<&anshin_platform::config::AuditConfig> for AuditSettings {
    fn from(c: &anshin_platform::config::AuditConfig) -> Self {
        Self {
            checkpoint_max_entries: c.checkpoint_max_entries,
            ingest_max_events: c.ingest_max_events,
        }
    }
}

pub fn may_read(role: Role) -> bool {
    matches!(
        role,
        Role::Auditor | Role::InstitutionAdmin | Role::ProviderAdmin
    )
}

fn base_select_any() -> SelectStatement {
    Query::select()
        .expr_as(
            Expr::col((Alias::new("e"), Alias::new("body"))),
            Alias::new("body"),
        )
        .expr_as(
            Expr::col((Alias::new("l"), Alias::new("seq"))),
            Alias::new("seq"),
        )
        .from_as(Alias::new("audit_events"), Alias::new("e"))
        .join_as(
            JoinType::LeftJoin,
            Alias::new("audit_log"),
            Alias::new("l"),
            Expr::col((Alias::new("l"), Alias::new("event_id")))
                .equals((Alias::new("e"), Alias::new("id"))),
        )
        .to_owned()
}

fn base_select(tenant: Uuid) -> SelectStatement {
    let mut s = base_select_any();
    s.and_where(Expr::col((Alias::new("e"), Alias::new("tenant_id"))).eq(tenant));
    s
}

async fn fetch_views(
    r: &TenantReader,
    sel: &SelectStatement,
) -> Result<Vec<EventView>, AuditError> {
    let rows = r.query_all(r.get_database_backend().build(sel)).await?;
    rows.iter()
        .map(|row| {
            let body: String = row.try_get("", "body")?;
            let seq: Option<i64> = row.try_get("", "seq")?;
            Ok(EventView {
                event: serde_json::from_str(&body)?,
                seq: seq.map(|s| s as u64),
            })
        })
        .collect()
}

pub(crate) fn checkpoint_select(tenant: Uuid) -> SelectStatement {
    Query::select()
        .columns([
            Alias::new("tenant_id"),
            Alias::new("tree_size"),
            Alias::new("root_hash"),
            Alias::new("created_at"),
            Alias::new("key_id"),
            Alias::new("body"),
            Alias::new("signature"),
        ])
        .from(Alias::new("audit_checkpoints"))
        .and_where(Expr::col(Alias::new("tenant_id")).eq(tenant))
        .to_owned()
}

pub(crate) async fn fetch_checkpoints<C: ConnectionTrait>(
    r: &C,
    q: &SelectStatement,
) -> Result<Vec<CheckpointView>, AuditError> {
    let rows = r.query_all(r.get_database_backend().build(q)).await?;
    rows.iter()
        .map(|row| {
            let size: i64 = row.try_get("", "tree_size")?;
            Ok(CheckpointView {
                tenant_id: row.try_get("", "tenant_id")?,
                tree_size: size as u64,
                root_hash: row.try_get("", "root_hash")?,
                time: row.try_get("", "created_at")?,
                key_id: row.try_get("", "key_id")?,
                body: row.try_get("", "body")?,
                signature: row.try_get("", "signature")?,
            })
        })
        .collect()
}

pub(crate) async fn latest_checkpoint<C: ConnectionTrait>(
    r: &C,
    tenant: Uuid,
) -> Result<Option<CheckpointView>, AuditError> {
    let q = checkpoint_select(tenant)
        .order_by(Alias::new("tree_size"), Order::Desc)
        .limit(1)
        .to_owned();
    Ok(fetch_checkpoints(r, &q).await?.into_iter().next())
}

pub(crate) async fn first_checkpoint_covering<C: ConnectionTrait>(
    r: &C,
    tenant: Uuid,
    seq: u64,
) -> Result<Option<CheckpointView>, AuditError> {
    let q = checkpoint_select(tenant)
        .and_where(Expr::col(Alias::new("tree_size")).gt(seq as i64))
        .order_by(Alias::new("tree_size"), Order::Asc)
        .limit(1)
        .to_owned();
    Ok(fetch_checkpoints(r, &q).await?.into_iter().next())
}

/// Leaf hashes `[0, size)` of a tenant's log, in order.
pub(crate) async fn leaf_hashes<C: ConnectionTrait>(
    r: &C,
    tenant: Uuid,
    size: u64,
) -> Result<Vec<Hash>, AuditError> {
    let q = Query::select()
        .column(Alias::new("leaf_hash"))
        .from(Alias::new("audit_log"))
        .and_where(Expr::col(Alias::new("tenant_id")).eq(tenant))
        .and_where(Expr::col(Alias::new("seq")).lt(size as i64))
        .order_by(Alias::new("seq"), Order::Asc)
        .to_owned();
    let rows = r.query_all(r.get_database_backend().build(&q)).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let h: Vec<u8> = row.try_get("", "leaf_hash")?;
        out.push(h.try_into().map_err(|_| AuditError::Corrupt {
            tenant,
            detail: "a stored leaf hash is not 32 bytes".into(),
        })?);
    }
    if out.len() as u64 != size {
        return Err(AuditError::Corrupt {
            tenant,
            detail: format!("the log should hold {size} entries, found {}", out.len()),
        });
    }
    Ok(out)
}

async fn entry_text<C: ConnectionTrait>(
    r: &C,
    tenant: Uuid,
    seq: u64,
) -> Result<String, AuditError> {
    let q = Query::select()
        .column(Alias::new("entry"))
        .from(Alias::new("audit_log"))
        .and_where(Expr::col(Alias::new("tenant_id")).eq(tenant))
        .and_where(Expr::col(Alias::new("seq")).eq(seq as i64))
        .to_owned();
    let row = r
        .query_one(r.get_database_backend().build(&q))
        .await?
        .ok_or_else(|| AuditError::NotFound("no such log entry".into()))?;
    Ok(row.try_get("", "entry")?)
}
