use actix_web::{web, HttpResponse};
use anshin_platform::error::{Problem, ProblemBody};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    #[schema(example = "ready")]
    pub status: &'static str,
    /// Each dependency and its state.
    pub checks: std::collections::BTreeMap<&'static str, &'static str>,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// The process can serve: its database answers.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, body = Readiness),
        (status = 503, body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(db: web::Data<DatabaseConnection>) -> Result<HttpResponse, Problem> {
    match db.execute_unprepared("SELECT 1").await {
        Ok(_) => Ok(HttpResponse::Ok().json(Readiness {
            status: "ready",
            checks: [("database", "ok")].into_iter().collect(),
        })),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: database unreachable");
            Err(Problem::unavailable("the database is not reachable"))
        }
    }
}
