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

/// The process can serve: its database and its key provider answer. Without the key provider
/// nothing can be encrypted or decrypted, so the process is not ready.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, body = Readiness),
        (status = 503, body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(
    db: web::Data<DatabaseConnection>,
    keys: web::Data<anshin_keys::KeyService>,
) -> Result<HttpResponse, Problem> {
    if let Err(e) = db.execute_unprepared("SELECT 1").await {
        tracing::warn!(error = %e, "readiness check: database unreachable");
        return Err(Problem::unavailable("the database is not reachable"));
    }
    if let Err(e) = keys.ready().await {
        tracing::warn!(error = %e, provider = keys.provider_name(), "readiness check: key provider unreachable");
        return Err(Problem::unavailable(format!(
            "the key provider ({}) is not reachable",
            keys.provider_name()
        )));
    }
    let provider = match keys.provider_name() {
        "aws-kms" => "ok (aws-kms)",
        _ => "ok (local)",
    };
    Ok(HttpResponse::Ok().json(Readiness {
        status: "ready",
        checks: [("database", "ok"), ("key_provider", provider)]
            .into_iter()
            .collect(),
    }))
}
