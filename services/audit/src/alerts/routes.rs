//! HTTP API of audit alerts. Mount with `cfg.configure(anshin_audit::alerts::routes::configure)`
//! and `app_data(web::Data::new(alert_service))`; merge [`AlertsApi`] into the OpenAPI document.

use super::model::*;
use super::rules::{BusinessHours, Clause, Day, GroupBy, Rule, RuleKind, RuleOverride, Severity};
use super::service::AlertService;
use crate::event::Source;
use actix_web::{web, HttpResponse};
use anshin_platform::error::{Problem, ProblemBody};
use anshin_platform::http::{Authenticated, ClientInfo};
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

#[derive(OpenApi)]
#[openapi(
    paths(list_alerts, get_alert, acknowledge_alert, resolve_alert, get_alert_rules, put_alert_rules,
        list_channels, create_channel, delete_channel, list_deliveries),
    components(schemas(AlertView, AlertStatus, AlertPage, AlertNote, AlertQuery, Severity, RuleKind, GroupBy, Day,
        BusinessHours, Clause, Rule, RuleOverride, EffectiveRule, RulesView, PutRules, ChannelKind, ChannelView,
        NewChannel, CreatedChannel, ChannelList, DeliveryView, DeliveryList)),
    tags((name = "audit", description = "Tamper-evident audit trail, proofs, export and alerts"))
)]
pub struct AlertsApi;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/audit/alerts", web::get().to(list_alerts))
        .route("/api/v1/audit/alerts/{id}", web::get().to(get_alert))
        .route(
            "/api/v1/audit/alerts/{id}/acknowledge",
            web::post().to(acknowledge_alert),
        )
        .route(
            "/api/v1/audit/alerts/{id}/resolve",
            web::post().to(resolve_alert),
        )
        .route("/api/v1/audit/alert-rules", web::get().to(get_alert_rules))
        .route("/api/v1/audit/alert-rules", web::put().to(put_alert_rules))
        .route(
            "/api/v1/audit/notification-channels",
            web::get().to(list_channels),
        )
        .route(
            "/api/v1/audit/notification-channels",
            web::post().to(create_channel),
        )
        .route(
            "/api/v1/audit/notification-channels/{id}",
            web::delete().to(delete_channel),
        )
        .route(
            "/api/v1/audit/notification-channels/{id}/deliveries",
            web::get().to(list_deliveries),
        );
}

fn source(c: &ClientInfo) -> Source {
    Source::new(
        c.ip.clone(),
        c.user_agent.as_deref(),
        c.request_id.as_deref(),
    )
}

#[derive(Debug, Default, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct TenantParam {
    /// A tenant in the caller's scope (default: the caller's own).
    pub tenant_id: Option<Uuid>,
}

#[derive(Debug, Default, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct LimitParam {
    /// 1–500 (default 100).
    pub limit: Option<u64>,
}

/// Audit alerts, newest first (auditors and admins). Provider roles see their institutions'
/// alerts too, or one tenant's with `tenant_id`.
#[utoipa::path(get, path = "/api/v1/audit/alerts", tag = "audit", params(AlertQuery),
    responses((status = 200, body = AlertPage), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn list_alerts(
    Authenticated(p): Authenticated,
    svc: web::Data<AlertService>,
    q: web::Query<AlertQuery>,
) -> Result<web::Json<AlertPage>, Problem> {
    Ok(web::Json(svc.list(&p, &q).await?))
}

/// One audit alert (auditors and admins).
#[utoipa::path(get, path = "/api/v1/audit/alerts/{id}", tag = "audit", params(("id" = Uuid, Path, description = "Alert id")),
    responses((status = 200, body = AlertView), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn get_alert(
    Authenticated(p): Authenticated,
    svc: web::Data<AlertService>,
    id: web::Path<Uuid>,
) -> Result<web::Json<AlertView>, Problem> {
    Ok(web::Json(svc.get(&p, id.into_inner()).await?))
}

/// Acknowledges an open alert (admins): someone is on it. Recorded in the audit trail.
#[utoipa::path(post, path = "/api/v1/audit/alerts/{id}/acknowledge", tag = "audit", params(("id" = Uuid, Path, description = "Alert id")), request_body = AlertNote,
    responses((status = 200, body = AlertView), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn acknowledge_alert(
    Authenticated(p): Authenticated,
    client: ClientInfo,
    svc: web::Data<AlertService>,
    id: web::Path<Uuid>,
    body: Option<web::Json<AlertNote>>,
) -> Result<web::Json<AlertView>, Problem> {
    let note = body.and_then(|b| b.into_inner().note);
    Ok(web::Json(
        svc.acknowledge(&p, id.into_inner(), note, &source(&client))
            .await?,
    ))
}

/// Resolves an open or acknowledged alert (admins); final. Recorded in the audit trail.
#[utoipa::path(post, path = "/api/v1/audit/alerts/{id}/resolve", tag = "audit", params(("id" = Uuid, Path, description = "Alert id")), request_body = AlertNote,
    responses((status = 200, body = AlertView), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn resolve_alert(
    Authenticated(p): Authenticated,
    client: ClientInfo,
    svc: web::Data<AlertService>,
    id: web::Path<Uuid>,
    body: Option<web::Json<AlertNote>>,
) -> Result<web::Json<AlertView>, Problem> {
    let note = body.and_then(|b| b.into_inner().note);
    Ok(web::Json(
        svc.resolve(&p, id.into_inner(), note, &source(&client))
            .await?,
    ))
}

/// The alert rules as they apply to a tenant: each rule as evaluated, as shipped, and the
/// tenant's override (auditors and admins).
#[utoipa::path(get, path = "/api/v1/audit/alert-rules", tag = "audit", params(TenantParam),
    responses((status = 200, body = RulesView), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn get_alert_rules(
    Authenticated(p): Authenticated,
    svc: web::Data<AlertService>,
    q: web::Query<TenantParam>,
) -> Result<web::Json<RulesView>, Problem> {
    Ok(web::Json(svc.tenant_rules(&p, q.tenant_id).await?))
}

/// Replaces the tenant's rule overrides (admins): enable or disable rules, change severity,
/// thresholds, windows and business hours. Rules not listed return to their base form.
#[utoipa::path(put, path = "/api/v1/audit/alert-rules", tag = "audit", request_body = PutRules,
    responses((status = 200, body = RulesView), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn put_alert_rules(
    Authenticated(p): Authenticated,
    client: ClientInfo,
    svc: web::Data<AlertService>,
    body: web::Json<PutRules>,
) -> Result<web::Json<RulesView>, Problem> {
    Ok(web::Json(
        svc.put_rules(&p, body.into_inner(), &source(&client))
            .await?,
    ))
}

/// The tenant's notification channels (auditors and admins). Webhook secrets are never shown.
#[utoipa::path(get, path = "/api/v1/audit/notification-channels", tag = "audit", params(TenantParam),
    responses((status = 200, body = ChannelList), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn list_channels(
    Authenticated(p): Authenticated,
    svc: web::Data<AlertService>,
    q: web::Query<TenantParam>,
) -> Result<web::Json<ChannelList>, Problem> {
    Ok(web::Json(ChannelList {
        items: svc.channels(&p, q.tenant_id).await?,
    }))
}

/// Adds a notification channel (admins): a webhook (its signing secret is in this response
/// only) or a list of mail recipients.
#[utoipa::path(post, path = "/api/v1/audit/notification-channels", tag = "audit", request_body = NewChannel,
    responses((status = 201, body = CreatedChannel), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn create_channel(
    Authenticated(p): Authenticated,
    client: ClientInfo,
    svc: web::Data<AlertService>,
    body: web::Json<NewChannel>,
) -> Result<HttpResponse, Problem> {
    let created = svc
        .create_channel(&p, body.into_inner(), &source(&client))
        .await?;
    Ok(HttpResponse::Created().json(created))
}

/// Deletes a notification channel (admins). Its delivery record stays readable.
#[utoipa::path(delete, path = "/api/v1/audit/notification-channels/{id}", tag = "audit", params(("id" = Uuid, Path, description = "Channel id")),
    responses((status = 204), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn delete_channel(
    Authenticated(p): Authenticated,
    client: ClientInfo,
    svc: web::Data<AlertService>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    svc.delete_channel(&p, id.into_inner(), &source(&client))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Every attempt to deliver alerts to a channel, newest first: status code, error, time
/// (auditors and admins).
#[utoipa::path(get, path = "/api/v1/audit/notification-channels/{id}/deliveries", tag = "audit",
    params(("id" = Uuid, Path, description = "Channel id"), LimitParam),
    responses((status = 200, body = DeliveryList), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn list_deliveries(
    Authenticated(p): Authenticated,
    svc: web::Data<AlertService>,
    id: web::Path<Uuid>,
    q: web::Query<LimitParam>,
) -> Result<web::Json<DeliveryList>, Problem> {
    Ok(web::Json(DeliveryList {
        items: svc.deliveries(&p, id.into_inner(), q.limit).await?,
    }))
}
