//! Composes the services into one actix-web application.

use crate::services::{Service, ServiceSet};
use crate::web::{self as pages, Web};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, DefaultHeaders};
use actix_web::{web, App, HttpRequest, HttpResponse};
use anshin_identity::routes::CookiePolicy;
use anshin_identity::{ClientService, IdentityError, IdentityService, SecretBox};
use anshin_platform::config::Config;
use anshin_platform::error::Problem;
use anshin_platform::http::Authenticator;
use anshin_platform::http::{self, SharedAuthenticator};
use anshin_platform::Principal;
use anshin_tenancy::{TenancyService, TokenService};
use sea_orm::DatabaseConnection;
use std::sync::Arc;

/// Everything the HTTP handlers share. Cheap to clone (one per actix worker).
#[derive(Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
    pub tenancy: TenancyService,
    pub identity: IdentityService,
    /// Machine clients: registration, the OAuth2 token endpoint, access-token verification.
    pub clients: ClientService,
    /// The audit trail: recording, search, proofs, export, ingest from the data plane.
    pub audit: anshin_audit::AuditService,
    /// Alert inbox, rules and notification channels.
    pub alerts: anshin_audit::alerts::AlertService,
    /// The interim key of notification channels' webhook secrets and addresses, for channels
    /// sealed before the key service (new ones are sealed with `keys`; the delivery job opens both).
    pub alert_secrets: anshin_audit::alerts::SecretBox,
    /// Tenants' KEKs, envelope encryption, data keys for the data plane, crypto-erase.
    pub keys: anshin_keys::KeyService,
    pub authenticator: SharedAuthenticator,
    pub web: Arc<Web>,
    pub services: ServiceSet,
    pub max_body_bytes: usize,
    pub cookies: CookiePolicy,
    pub auth_rate: anshin_platform::ratelimit::AuthRateLimit,
}

/// Bearer tokens go to tenancy's token service (`anshin_…`) or, when JWT-shaped, to identity's
/// access-token verifier; session cookies go to identity.
struct Authenticators {
    tokens: TokenService,
    identity: IdentityService,
    clients: ClientService,
}

#[async_trait::async_trait]
impl Authenticator for Authenticators {
    async fn authenticate_bearer(&self, token: &str) -> Result<Option<Principal>, Problem> {
        if anshin_identity::clients::jwt::looks_like_jwt(token) {
            self.clients.authenticate_bearer(token).await
        } else {
            self.tokens.authenticate_bearer(token).await
        }
    }

    async fn apply_grant(
        &self,
        principal: Principal,
        grant: uuid::Uuid,
    ) -> Result<Principal, Problem> {
        self.identity.apply_grant(principal, grant).await
    }

    async fn authenticate_session(
        &self,
        session: &str,
        csrf: Option<&str>,
        unsafe_method: bool,
    ) -> Result<Option<Principal>, Problem> {
        self.identity
            .authenticate_session(session, csrf, unsafe_method)
            .await
    }
}

impl AppState {
    /// With the key provider the configuration names.
    pub async fn new(
        db: DatabaseConnection,
        web: Arc<Web>,
        services: ServiceSet,
        config: &Config,
    ) -> Result<Self, IdentityError> {
        let provider = crate::keys::key_provider(config)
            .await
            .map_err(|e| IdentityError::Setup(e.to_string()))?;
        Self::with_key_provider(db, web, services, config, provider).await
    }

    pub async fn with_key_provider(
        db: DatabaseConnection,
        web: Arc<Web>,
        services: ServiceSet,
        config: &Config,
        key_provider: Arc<dyn anshin_keys::KeyProvider>,
    ) -> Result<Self, IdentityError> {
        // Key administration asks people for a fresh passkey step-up; identity's sessions answer.
        let keys = crate::keys::service(db.clone(), config, key_provider).with_step_up(Arc::new(
            anshin_identity::credentials::SessionStepUp::new(db.clone()),
        ));
        let identity = IdentityService::new(
            db.clone(),
            &config.public_url,
            config.identity.clone(),
            secret_box(config)?,
            keys.clone(),
        )?;
        let tokens = TokenService::new(db.clone())
            .with_auth_cache(std::time::Duration::from_millis(config.http.auth_cache_ms));
        let clients = ClientService::new(
            db.clone(),
            &config.public_url,
            crate::signing_keys::token_keys(&keys, config).await?,
            config.identity.access_token_ttl_secs,
        )?
        .with_auth_cache(std::time::Duration::from_millis(config.http.auth_cache_ms));
        let setup = |e: String| IdentityError::Setup(e);
        let rules = Arc::new(
            anshin_audit::alerts::RuleSet::load(config.audit.alert_rules_file.as_deref())
                .map_err(setup)?,
        );
        let alert_secrets =
            anshin_audit::alerts::secretbox::load(&config.data_dir).map_err(setup)?;
        let signer = crate::signing_keys::audit_signer(&keys, config).await?;
        let settings = anshin_audit::AuditSettings::from(&config.audit);
        // Alert rules run inside each sealing transaction, as events arrive in the log.
        let sealer =
            anshin_audit::Sealer::new(db.clone(), signer.clone(), settings.checkpoint_max_entries)
                .with_hook(Arc::new(anshin_audit::alerts::AlertEngine::new(
                    rules.clone(),
                )));
        let audit =
            anshin_audit::AuditService::new(db.clone(), signer, &settings).with_sealer(sealer);
        // Webhook secrets and URLs of new channels are sealed under the tenant's KEK; channels
        // sealed with `alert_secrets` before the key service still open (`anshin keys reencrypt`
        // and the `keys.reencrypt` job move them).
        let alerts =
            anshin_audit::alerts::AlertService::new(db.clone(), rules, alert_secrets.clone())
                .with_sealer(keys.sealer());
        Ok(Self {
            audit,
            alerts,
            alert_secrets,
            tenancy: TenancyService::new(db.clone())
                .with_created_hook(Arc::new(crate::keys::ProvisionOnCreate(keys.clone()))),
            keys,
            authenticator: Arc::new(Authenticators {
                tokens,
                identity: identity.clone(),
                clients: clients.clone(),
            }),
            identity,
            clients,
            db,
            web,
            services,
            max_body_bytes: config.http.max_body_bytes,
            auth_rate: anshin_platform::ratelimit::AuthRateLimit::new(
                config.http.auth_rate_per_minute,
                config.http.auth_rate_burst,
            ),
            cookies: CookiePolicy {
                insecure: config.http.insecure_cookies,
            },
        })
    }
}

/// The key that seals identity-provider client secrets, under the data directory (until the
/// keys service holds it in KMS).
pub fn secret_box(config: &Config) -> Result<SecretBox, IdentityError> {
    SecretBox::load_or_create(&config.data_dir.join("identity-secrets.key"))
        .map_err(|e| IdentityError::Setup(e.to_string()))
}

pub fn app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let services = state.services.clone();
    let web_state = state.web.clone();
    App::new()
        .app_data(web::Data::new(state.db.clone()))
        .app_data(web::Data::new(state.tenancy.clone()))
        .app_data(web::Data::new(state.identity.clone()))
        .app_data(web::Data::new(state.clients.clone()))
        .app_data(web::Data::new(state.audit.clone()))
        .app_data(web::Data::new(state.alerts.clone()))
        .app_data(web::Data::new(state.keys.clone()))
        .app_data(web::Data::new(state.cookies))
        .app_data(web::Data::new(state.auth_rate.clone()))
        .app_data(web::Data::new(state.authenticator.clone()))
        .app_data(web::Data::new(state.web.clone()))
        .app_data(http::json_config(state.max_body_bytes))
        .app_data(http::path_config())
        .app_data(http::query_config())
        .app_data(web::PayloadConfig::new(state.max_body_bytes))
        .wrap(
            DefaultHeaders::new()
                .add(("x-content-type-options", "nosniff"))
                .add(("x-frame-options", "DENY"))
                .add(("referrer-policy", "no-referrer"))
                .add((
                    "content-security-policy",
                    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
                )),
        )
        .wrap(from_fn(anshin_platform::ratelimit::limit_auth))
        .wrap(from_fn(http::observe))
        .route("/healthz", web::get().to(crate::health::healthz))
        .route("/readyz", web::get().to(crate::health::readyz))
        .route("/openapi.json", web::get().to(openapi_json))
        .configure(|cfg| {
            if services.contains(Service::Api) {
                anshin_tenancy::routes::configure(cfg);
                anshin_identity::routes::configure(cfg);
                anshin_audit::routes::configure(cfg);
                anshin_audit::alerts::routes::configure(cfg);
                anshin_keys::routes::configure(cfg);
            }
            if services.contains(Service::Web) {
                cfg.route("/", web::get().to(pages::landing))
                    .route("/signin", web::get().to(pages::signin))
                    .route("/signin/step-up", web::get().to(pages::step_up))
                    .route("/enroll", web::get().to(pages::enroll))
                    .route("/password-reset", web::get().to(pages::password_reset))
                    .route("/portal", web::get().to(pages::portal))
                    .route("/accounts", web::get().to(pages::accounts))
                    // Before `/accounts/{id}`, which would otherwise take "reviews" as an id.
                    .route("/accounts/reviews", web::get().to(pages::reviews))
                    .route("/accounts/reviews/{id}", web::get().to(pages::review))
                    .route("/accounts/{id}", web::get().to(pages::account))
                    .route("/invitations", web::get().to(pages::invitations))
                    .route("/break-glass", web::get().to(pages::break_glass))
                    .route("/break-glass/use", web::get().to(pages::break_glass_use))
                    .route("/maintenance-grants", web::get().to(pages::grants))
                    .route("/audit", web::get().to(pages::audit::search))
                    .route("/audit/export", web::get().to(pages::audit::export))
                    .route("/audit/events/{id}", web::get().to(pages::audit::event))
                    .route("/audit/alerts", web::get().to(pages::audit::alerts))
                    .route("/keys", web::get().to(pages::keys::status))
                    .route("/static/{path:.*}", web::get().to(pages::static_file));
            }
        })
        .default_service(web::to(move |req: HttpRequest| {
            let web_state = web_state.clone();
            async move { fallback(&web_state, &req) }
        }))
}

async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(crate::openapi::document_json())
}

fn fallback(web_state: &Web, req: &HttpRequest) -> HttpResponse {
    if req.path().starts_with("/api/") {
        actix_web::ResponseError::error_response(&Problem::not_found(
            "no API resource at this path; see /openapi.json",
        ))
    } else {
        pages::not_found(web_state, req)
    }
}
