//! `/api/v1/tenants`: the tenant API.

use crate::model::{CreateTenant, Tenant, TenantStatus, UpdateTenant};
use crate::service::{TenancyService, TenantFilter};
use actix_web::{http::header, web, HttpResponse};
use anshin_platform::error::{Problem, ProblemBody};
use anshin_platform::http::Authenticated;
use anshin_platform::TenantKind;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

#[derive(OpenApi)]
#[openapi(
    paths(list_tenants, create_tenant, get_tenant, update_tenant),
    components(schemas(Tenant, TenantList, CreateTenant, UpdateTenant, ProblemBody)),
    tags((name = "tenants", description = "Providers (事業者) and medical institutions (医療機関)"))
)]
pub struct TenancyApi;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v1/tenants")
            .route(web::get().to(list_tenants))
            .route(web::post().to(create_tenant))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/api/v1/tenants/{id}")
            .route(web::get().to(get_tenant))
            .route(web::patch().to(update_tenant))
            .default_service(web::to(method_not_allowed)),
    );
}

async fn method_not_allowed() -> HttpResponse {
    actix_web::ResponseError::error_response(&Problem::method_not_allowed())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantList {
    pub items: Vec<Tenant>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only tenants of this kind.
    pub kind: Option<TenantKind>,
    /// Only tenants in this lifecycle state.
    pub status: Option<TenantStatus>,
}

/// Tenants visible to the caller: a provider sees itself and its institutions, an institution
/// only itself.
#[utoipa::path(
    get, path = "/api/v1/tenants", tag = "tenants",
    params(ListQuery),
    responses(
        (status = 200, body = TenantList),
        (status = 400, body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_tenants(
    Authenticated(p): Authenticated,
    svc: web::Data<TenancyService>,
    q: web::Query<ListQuery>,
) -> Result<web::Json<TenantList>, Problem> {
    let q = q.into_inner();
    let items = svc
        .list(
            &p,
            &TenantFilter {
                kind: q.kind,
                status: q.status,
            },
        )
        .await?;
    Ok(web::Json(TenantList { items }))
}

/// Creates a medical institution under the caller's provider.
#[utoipa::path(
    post, path = "/api/v1/tenants", tag = "tenants",
    request_body = CreateTenant,
    responses(
        (status = 201, body = Tenant, headers(("location" = String, description = "URL of the new tenant"))),
        (status = 400, body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_tenant(
    Authenticated(p): Authenticated,
    svc: web::Data<TenancyService>,
    body: web::Json<CreateTenant>,
) -> Result<HttpResponse, Problem> {
    let t = svc.create(&p, body.into_inner()).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/tenants/{}", t.id)))
        .json(t))
}

/// One tenant. A tenant outside the caller's scope answers 404, exactly like one that does not exist.
#[utoipa::path(
    get, path = "/api/v1/tenants/{id}", tag = "tenants",
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses(
        (status = 200, body = Tenant),
        (status = 401, body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_tenant(
    Authenticated(p): Authenticated,
    svc: web::Data<TenancyService>,
    id: web::Path<Uuid>,
) -> Result<web::Json<Tenant>, Problem> {
    Ok(web::Json(svc.get(&p, id.into_inner()).await?))
}

/// Changes a tenant. Institution admins may change their institution's name and beds; provider
/// roles also its status, reference pattern, type and contract dates.
#[utoipa::path(
    patch, path = "/api/v1/tenants/{id}", tag = "tenants",
    params(("id" = Uuid, Path, description = "Tenant id")),
    request_body = UpdateTenant,
    responses(
        (status = 200, body = Tenant),
        (status = 400, body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn update_tenant(
    Authenticated(p): Authenticated,
    svc: web::Data<TenancyService>,
    id: web::Path<Uuid>,
    body: web::Json<UpdateTenant>,
) -> Result<web::Json<Tenant>, Problem> {
    Ok(web::Json(
        svc.update(&p, id.into_inner(), body.into_inner()).await?,
    ))
}
