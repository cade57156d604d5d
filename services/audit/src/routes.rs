//! HTTP API of the audit trail. Reading is for auditors and admins within their tenant scope;
//! nothing here (or anywhere) updates or deletes an event.

use crate::ingest::{IngestBatch, IngestResult};
use crate::service::{
    AuditService, CheckpointView, ConsistencyProof, EventPage, EventProof, EventView, SearchQuery,
};
use crate::{PublicKeyInfo, Source};
use actix_web::{web, HttpResponse};
use anshin_platform::error::{Problem, ProblemBody};
use anshin_platform::http::{Authenticated, ClientInfo};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Ingest bodies may be larger than ordinary API bodies (a batch of up to 1,000 events).
pub const INGEST_MAX_BYTES: usize = 2 * 1024 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v1/audit/events")
            .app_data(anshin_platform::http::json_config(INGEST_MAX_BYTES))
            .route(web::get().to(search))
            .route(web::post().to(ingest)),
    )
    .route("/api/v1/audit/events/{id}", web::get().to(event))
    .route("/api/v1/audit/events/{id}/proof", web::get().to(proof))
    .route("/api/v1/audit/checkpoints", web::get().to(checkpoints))
    .route("/api/v1/audit/consistency", web::get().to(consistency))
    .route("/api/v1/audit/export", web::get().to(export))
    .route("/api/v1/audit/public-key", web::get().to(public_key));
}

pub fn source_of(info: &ClientInfo) -> Source {
    Source::new(
        info.ip.clone(),
        info.user_agent.as_deref(),
        info.request_id.as_deref(),
    )
}

/// Search a tenant's audit trail (auditors and admins; provider roles may name one of their
/// institutions), newest first.
#[utoipa::path(get, path = "/api/v1/audit/events", tag = "audit", params(SearchQuery),
    responses((status = 200, body = EventPage), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn search(
    Authenticated(p): Authenticated,
    svc: web::Data<AuditService>,
    q: web::Query<SearchQuery>,
) -> Result<web::Json<EventPage>, Problem> {
    Ok(web::Json(svc.search(&p, &q).await?))
}

/// Send access events from the EMR data plane (machine clients with the `write` scope, or API
/// tokens): who opened which record, when, for how long. All-or-nothing validation; idempotent
/// by `client_event_id`.
#[utoipa::path(post, path = "/api/v1/audit/events", tag = "audit", request_body = IngestBatch,
    responses((status = 202, body = IngestResult), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 413, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn ingest(
    Authenticated(p): Authenticated,
    info: ClientInfo,
    svc: web::Data<AuditService>,
    body: web::Json<IngestBatch>,
) -> Result<HttpResponse, Problem> {
    let r = svc.ingest(&p, source_of(&info), body.into_inner()).await?;
    Ok(HttpResponse::Accepted().json(r))
}

/// One event, with its log position once sealed.
#[utoipa::path(get, path = "/api/v1/audit/events/{id}", tag = "audit", params(("id" = Uuid, Path, description = "Event id")),
    responses((status = 200, body = EventView), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn event(
    Authenticated(p): Authenticated,
    svc: web::Data<AuditService>,
    id: web::Path<Uuid>,
) -> Result<web::Json<EventView>, Problem> {
    Ok(web::Json(svc.event(&p, id.into_inner()).await?))
}

/// The proof that a sealed event is in its tenant's log: the entry bytes, the checkpoint that
/// first sealed it, and an RFC 9162 inclusion proof in the latest signed checkpoint.
#[utoipa::path(get, path = "/api/v1/audit/events/{id}/proof", tag = "audit", params(("id" = Uuid, Path, description = "Event id")),
    responses((status = 200, body = EventProof), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn proof(
    Authenticated(p): Authenticated,
    svc: web::Data<AuditService>,
    id: web::Path<Uuid>,
) -> Result<web::Json<EventProof>, Problem> {
    Ok(web::Json(svc.proof(&p, id.into_inner()).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CheckpointQuery {
    pub tenant_id: Option<Uuid>,
    /// 1–500, default 50.
    pub limit: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointList {
    pub items: Vec<CheckpointView>,
}

/// A tenant's signed checkpoints, newest first.
#[utoipa::path(get, path = "/api/v1/audit/checkpoints", tag = "audit", params(CheckpointQuery),
    responses((status = 200, body = CheckpointList), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn checkpoints(
    Authenticated(p): Authenticated,
    svc: web::Data<AuditService>,
    q: web::Query<CheckpointQuery>,
) -> Result<web::Json<CheckpointList>, Problem> {
    Ok(web::Json(CheckpointList {
        items: svc
            .checkpoints(&p, q.tenant_id, q.limit.unwrap_or(50))
            .await?,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    pub tenant_id: Option<Uuid>,
    /// Tree size of the older checkpoint.
    pub old: u64,
    /// Tree size of the newer checkpoint.
    pub new: u64,
}

/// RFC 9162 consistency proof: the newer checkpoint's log extends the older one's unchanged.
#[utoipa::path(get, path = "/api/v1/audit/consistency", tag = "audit", params(ConsistencyQuery),
    responses((status = 200, body = ConsistencyProof), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn consistency(
    Authenticated(p): Authenticated,
    svc: web::Data<AuditService>,
    q: web::Query<ConsistencyQuery>,
) -> Result<web::Json<ConsistencyProof>, Problem> {
    Ok(web::Json(
        svc.consistency(&p, q.tenant_id, q.old, q.new).await?,
    ))
}

/// Download a tenant's trail for a time range as JSON Lines (`anshin-audit-export/1`) with the
/// signed checkpoints and proofs to verify it offline (`anshin audit verify FILE`, or any
/// verifier written from `docs/audit-verification.md`). The export itself is recorded.
#[utoipa::path(get, path = "/api/v1/audit/export", tag = "audit", params(crate::export::ExportQuery),
    responses((status = 200, content_type = "application/x-ndjson", body = String), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn export(
    Authenticated(p): Authenticated,
    svc: web::Data<AuditService>,
    q: web::Query<crate::export::ExportQuery>,
) -> Result<HttpResponse, Problem> {
    let (bytes, summary) = svc.export(&p, &q).await?;
    let name = format!(
        "anshin-audit-{}-{}-{}.jsonl",
        summary.tenant_id, summary.first, summary.last
    );
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .insert_header((
            "content-disposition",
            format!("attachment; filename=\"{name}\""),
        ))
        .body(bytes))
}

/// The key that signs checkpoints, for verifiers (public).
#[utoipa::path(get, path = "/api/v1/audit/public-key", tag = "audit",
    responses((status = 200, body = PublicKeyInfo)))]
pub async fn public_key(svc: web::Data<AuditService>) -> web::Json<PublicKeyInfo> {
    web::Json(svc.public_key())
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(search, ingest, event, proof, checkpoints, consistency, export, public_key),
    components(schemas(
        EventPage, EventView, EventProof, CheckpointView, CheckpointList, ConsistencyProof,
        PublicKeyInfo, IngestBatch, IngestResult, crate::ingest::IngestEvent,
        crate::ingest::IngestActor, crate::ingest::IngestTarget, crate::AuditEvent, crate::Actor,
        crate::ActorKind, crate::Target, crate::Outcome, crate::Source, crate::ClockStamp
    )),
    tags((name = "audit", description = "Tamper-evident audit trail (guideline 17): search, proofs, checkpoints, export, data-plane access events"))
)]
pub struct AuditApi;
