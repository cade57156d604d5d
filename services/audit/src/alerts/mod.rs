//! Review and alerts (guideline 17.1; 10 ③④ maintenance outside its window; 11 ① break-glass
//! use). Rules are data ([`RuleSet`], TOML, shipped in `services/audit/rules/default.toml` and
//! replaceable with `audit.alert_rules_file`), adjusted per tenant by overrides stored in the
//! database. [`AlertEngine`] evaluates them as a sealer hook, inside the sealing transaction;
//! alerts go to the inbox (`audit_alerts`, [`routes`]), and to each of the tenant's notification
//! channels by a durable job ([`AlertDeliveryJob`]): signed webhooks and mail.
//!
//! Wiring (server):
//!
//! ```text
//! let rules = Arc::new(alerts::RuleSet::load(config.audit.alert_rules_file.as_deref())?);
//! let secrets = alerts::secretbox::load(&config.data_dir)?;
//! let keys: Arc<dyn SecretSealer> = key_service.sealer();       // optional: per-tenant KEKs
//! sealer = sealer.with_hook(Arc::new(alerts::AlertEngine::new(rules.clone())));
//! app_data(web::Data::new(alerts::AlertService::new(db, rules, secrets.clone()).with_sealer(keys.clone())));
//! cfg.configure(alerts::routes::configure);                       // + AlertsApi in OpenAPI
//! let mailer = config.identity.smtp_url.as_ref()
//!     .map(|u| alerts::AlertMailer::new(u, &config.identity.mail_from)).transpose()?;
//! worker.register(alerts::AlertDeliveryJob::new(secrets, mailer)?.with_sealer(keys).with_console_url(&config.public_url));
//! migrations: anshin_audit::migrations() then alerts::migrations(); grants: alerts::grants().
//! ```

pub mod delivery;
pub mod engine;
pub mod migration;
pub mod model;
pub mod reseal;
pub mod routes;
pub mod rules;
pub mod sealing;
pub mod secretbox;
pub mod service;
mod sql;

pub use delivery::{
    sign_webhook, verify_webhook, AlertDeliveryJob, AlertMailer, DeliveryPayload, WebhookBody,
    DELIVERY_JOB, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
pub use engine::{AlertEngine, NewAlert};
pub use migration::{grants, later_migrations, migrations};
pub use model::{
    AlertPage, AlertQuery, AlertStatus, AlertView, ChannelKind, ChannelView, CreatedChannel,
    DeliveryView, NewChannel, PutRules, RulesView,
};
pub use rules::{BusinessHours, Rule, RuleKind, RuleOverride, RuleSet, Severity};
pub use sealing::{mask_address, RECIPIENTS_PURPOSE, WEBHOOK_SECRET_PURPOSE, WEBHOOK_URL_PURPOSE};
pub use secretbox::SecretBox;
pub use service::AlertService;

use crate::AuditError;
use anshin_platform::error::Problem;

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("alerts setup: {0}")]
    Setup(String),
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// Sealing or opening a webhook secret or URL failed (the key service is unreachable, the
    /// tenant's key is unusable, …).
    #[error(transparent)]
    Sealer(#[from] anshin_platform::sealer::SealerError),
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
}

impl From<serde_json::Error> for AlertError {
    fn from(e: serde_json::Error) -> Self {
        AlertError::Audit(AuditError::Encode(e))
    }
}

impl From<AlertError> for Problem {
    fn from(e: AlertError) -> Self {
        match e {
            AlertError::NotFound(d) => Problem::not_found(d),
            AlertError::Forbidden(d) => Problem::forbidden(d),
            AlertError::Invalid(d) => Problem::validation(d, Vec::new()),
            AlertError::Conflict(d) => Problem::conflict(d),
            AlertError::Audit(a) => Problem::from(a),
            AlertError::Sealer(s) => Problem::from(s),
            AlertError::Db(e) => Problem::from(e),
            other => Problem::internal(&other),
        }
    }
}
