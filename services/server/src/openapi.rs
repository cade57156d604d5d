use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Anshin API",
        description = "Compliance control plane for Japanese cloud EMR providers (3省2ガイドライン). \
                       Errors are RFC 9457 application/problem+json. Authenticate with \
                       `Authorization: Bearer <token>` (tokens from `anshin token issue`).",
        license(name = "Apache-2.0")
    ),
    paths(crate::health::healthz, crate::health::readyz),
    components(schemas(crate::health::Health, crate::health::Readiness)),
    modifiers(&BearerAuth),
    tags((name = "operations", description = "Liveness and readiness"))
)]
struct RootApi;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("API token issued with `anshin token issue`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                anshin_platform::http::SESSION_COOKIE,
                "Session cookie set by sign-in; requests that change data also send x-csrf-token",
            ))),
        );
    }
}

/// The whole API, composed from every service.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = RootApi::openapi();
    doc.merge(anshin_tenancy::routes::TenancyApi::openapi());
    doc.merge(anshin_identity::routes::IdentityApi::openapi());
    doc.merge(anshin_identity::credential_routes::CredentialsApi::openapi());
    doc.merge(anshin_audit::routes::AuditApi::openapi());
    doc.merge(anshin_audit::alerts::routes::AlertsApi::openapi());
    doc.merge(anshin_keys::routes::KeysApi::openapi());
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

pub fn document_json() -> String {
    let mut s = document()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}
