//! Writing events: in the caller's transaction, so an event exists exactly when the change it
//! describes commits (outbox). Each event is stored in its canonical form and queued for the
//! sealer.

use crate::canonical;
use crate::event::AuditEvent;
use crate::AuditError;
use sea_orm::sea_query::{Alias, InsertStatement, OnConflict, Query, SimpleExpr};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use uuid::Uuid;

/// Rows per INSERT statement: well inside both backends' bind-parameter limits.
const CHUNK: usize = 500;

/// Records one event in the caller's transaction (or connection).
pub async fn record<C: ConnectionTrait>(conn: &C, event: &AuditEvent) -> Result<(), AuditError> {
    record_all(conn, std::slice::from_ref(event)).await
}

/// Records events in the caller's transaction (or connection), as few statements as possible.
pub async fn record_all<C: ConnectionTrait>(
    conn: &C,
    events: &[AuditEvent],
) -> Result<(), AuditError> {
    let rows = events
        .iter()
        .map(|e| Row::of(e, None))
        .collect::<Result<Vec<_>, _>>()?;
    insert_rows(conn, &rows, false).await?;
    Ok(())
}

/// Records events sent by a machine client, each with the client's own id for it. An event
/// whose `(tenant, client_ref)` is already stored is skipped: retries are harmless. Returns
/// how many were new.
pub async fn record_ingested<C: ConnectionTrait>(
    conn: &C,
    events: &[(AuditEvent, String)],
) -> Result<usize, AuditError> {
    let rows = events
        .iter()
        .map(|(e, r)| Row::of(e, Some(r.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    insert_rows(conn, &rows, true).await
}

/// Tells the audit service which provider a tenant belongs to, so provider roles can read
/// their institutions' trails. Idempotent; call it in the transaction that creates the tenant.
pub async fn register_tenant<C: ConnectionTrait>(
    conn: &C,
    tenant_id: Uuid,
    provider_id: Uuid,
) -> Result<(), AuditError> {
    let mut q = Query::insert();
    q.into_table(Alias::new("audit_tenants"))
        .columns([Alias::new("tenant_id"), Alias::new("provider_id")])
        .values([tenant_id.into(), provider_id.into()])
        .map_err(|e| AuditError::Invalid(e.to_string()))?
        .on_conflict(
            OnConflict::column(Alias::new("tenant_id"))
                .do_nothing()
                .to_owned(),
        );
    let backend = conn.get_database_backend();
    conn.execute(backend.build(&q)).await?;
    Ok(())
}

struct Row {
    id: Uuid,
    tenant_id: Uuid,
    values: Vec<SimpleExpr>,
}

impl Row {
    fn of(e: &AuditEvent, client_ref: Option<String>) -> Result<Self, AuditError> {
        let e = e.sanitized();
        let body = canonical::to_string(&e)?;
        let values: Vec<SimpleExpr> = vec![
            e.id.into(),
            e.tenant_id.into(),
            e.time.into(),
            e.action.clone().into(),
            e.actor.kind.as_str().into(),
            e.actor.id.clone().into(),
            e.actor.label.clone().into(),
            e.target.as_ref().map(|t| t.kind.clone()).into(),
            e.target.as_ref().map(|t| t.id.clone()).into(),
            e.outcome.as_str().into(),
            e.actor.grant_id.into(),
            client_ref.into(),
            body.into(),
        ];
        Ok(Self {
            id: e.id,
            tenant_id: e.tenant_id,
            values,
        })
    }
}

const EVENT_COLUMNS: [&str; 13] = [
    "id",
    "tenant_id",
    "time",
    "action",
    "actor_kind",
    "actor_id",
    "actor_label",
    "target_type",
    "target_id",
    "outcome",
    "grant_id",
    "client_ref",
    "body",
];

/// The statements that record `event` (its row and its place in the sealing queue), for a
/// caller that sends its writes together (`anshin_platform::batch`). Each inserts one row.
pub fn record_statements(
    backend: DbBackend,
    event: &AuditEvent,
) -> Result<Vec<Statement>, AuditError> {
    let row = Row::of(event, None)?;
    let events = events_insert(std::slice::from_ref(&row))?;
    let pending = pending_insert(&[(row.id, row.tenant_id)])?;
    Ok(vec![backend.build(&events), backend.build(&pending)])
}

fn events_insert(rows: &[Row]) -> Result<InsertStatement, AuditError> {
    let mut q = Query::insert();
    q.into_table(Alias::new("audit_events"))
        .columns(EVENT_COLUMNS.map(Alias::new));
    for r in rows {
        q.values(r.values.clone())
            .map_err(|e| AuditError::Invalid(e.to_string()))?;
    }
    Ok(q)
}

fn pending_insert(ids: &[(Uuid, Uuid)]) -> Result<InsertStatement, AuditError> {
    let mut p = Query::insert();
    p.into_table(Alias::new("audit_pending"))
        .columns([Alias::new("event_id"), Alias::new("tenant_id")]);
    for (id, tenant) in ids {
        p.values([(*id).into(), (*tenant).into()])
            .map_err(|e| AuditError::Invalid(e.to_string()))?;
    }
    Ok(p)
}

async fn insert_rows<C: ConnectionTrait>(
    conn: &C,
    rows: &[Row],
    skip_duplicates: bool,
) -> Result<usize, AuditError> {
    let backend = conn.get_database_backend();
    let mut inserted = 0usize;
    for chunk in rows.chunks(CHUNK) {
        let mut q = events_insert(chunk)?;
        let ids: Vec<(Uuid, Uuid)> = if skip_duplicates {
            q.on_conflict(
                OnConflict::columns([Alias::new("tenant_id"), Alias::new("client_ref")])
                    .do_nothing()
                    .to_owned(),
            )
            .returning(Query::returning().columns([Alias::new("id"), Alias::new("tenant_id")]));
            let found = conn.query_all(backend.build(&q)).await?;
            found
                .iter()
                .map(|row| Ok((row.try_get("", "id")?, row.try_get("", "tenant_id")?)))
                .collect::<Result<_, sea_orm::DbErr>>()?
        } else {
            conn.execute(backend.build(&q)).await?;
            chunk.iter().map(|r| (r.id, r.tenant_id)).collect()
        };
        if ids.is_empty() {
            continue;
        }
        inserted += ids.len();
        conn.execute(backend.build(&pending_insert(&ids)?)).await?;
    }
    Ok(inserted)
}

/// Whether the backend is PostgreSQL (advisory locks, arrays).
pub(crate) fn is_postgres<C: ConnectionTrait>(conn: &C) -> bool {
    conn.get_database_backend() == DbBackend::Postgres
}
