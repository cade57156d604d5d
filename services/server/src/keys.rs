//! Composes the key service: the configured provider, the tenant directory it asks about new
//! tenants (answered from tenancy, so keys never reads tenancy's tables), and the hook that gives
//! each new tenant its KEK; the re-encryption pass that moves secrets sealed before the key
//! service under the tenants' KEKs (`anshin keys reencrypt` and the `keys.reencrypt` job).

use anshin_audit::Actor;
use anshin_keys::provider::aws::{AwsKmsProvider, AwsSettings};
use anshin_keys::provider::local::LocalProvider;
use anshin_keys::{CacheLimits, KeyError, KeyProvider, KeyService, KeySettings, TenantInfo};
use anshin_platform::config::Config;
use anshin_platform::jobs::{JobContext, JobFailure, JobHandler, Schedule};
use anshin_platform::sealer::ResealReport;
use anshin_tenancy::{TenancyService, Tenant, TenantCreated};
use sea_orm::DatabaseConnection;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// The local provider (the embedded default), from the configuration.
pub fn local_provider(config: &Config) -> Result<Arc<dyn KeyProvider>, KeyError> {
    let passphrase = config.keys.local_passphrase.as_ref().map(|s| s.expose());
    Ok(Arc::new(LocalProvider::open(
        &config.data_dir.join("keys"),
        passphrase,
    )?))
}

/// The configured key provider; AWS KMS needs the credential chain, which loads asynchronously.
pub async fn key_provider(config: &Config) -> Result<Arc<dyn KeyProvider>, KeyError> {
    match config.keys.provider.as_str() {
        "local" => local_provider(config),
        "aws-kms" => Ok(Arc::new(
            AwsKmsProvider::connect(&AwsSettings {
                region: config.keys.aws_region.clone(),
                endpoint_url: config.keys.aws_endpoint_url.clone(),
                allow_test_endpoint: config.keys.allow_test_endpoint,
                timeout: Duration::from_secs(config.keys.aws_timeout_secs.max(1)),
            })
            .await?,
        )),
        other => Err(KeyError::Config(format!(
            "keys.provider must be 'local' or 'aws-kms', not '{other}'"
        ))),
    }
}

pub fn settings(config: &Config) -> KeySettings {
    KeySettings {
        cache: CacheLimits {
            max_age: Duration::from_secs(config.keys.cache_max_age_secs),
            max_messages: config.keys.cache_max_messages,
            max_bytes: config.keys.cache_max_bytes,
            capacity: config.keys.cache_capacity.max(1),
        },
        deletion_window_days: config.keys.deletion_window_days,
        ..KeySettings::default()
    }
}

pub fn service(
    db: DatabaseConnection,
    config: &Config,
    provider: Arc<dyn KeyProvider>,
) -> KeyService {
    KeyService::new(
        db.clone(),
        provider,
        Arc::new(Directory(TenancyService::new(db))),
        settings(config),
    )
}

pub fn info(t: &Tenant) -> TenantInfo {
    TenantInfo {
        id: t.id,
        kind: t.kind,
        provider_id: t.parent_id.unwrap_or(t.id),
    }
}

/// Answers the key service's questions about tenants from the tenancy service.
pub struct Directory(pub TenancyService);

#[async_trait::async_trait]
impl anshin_keys::TenantDirectory for Directory {
    async fn tenant(&self, id: Uuid) -> Option<TenantInfo> {
        match self.0.admin_find(&id.to_string()).await {
            Ok(t) => t.map(|t| info(&t)),
            Err(e) => {
                tracing::warn!(error = %e, "tenant lookup for the key service failed");
                None
            }
        }
    }
}

#[async_trait::async_trait]
impl anshin_keys::jobs::TenantList for Directory {
    async fn all(&self) -> Result<Vec<TenantInfo>, String> {
        self.0
            .admin_list()
            .await
            .map(|ts| ts.iter().map(info).collect())
            .map_err(|e| e.to_string())
    }
}

/// Gives each new tenant its own KEK. If the provider is down, the backfill job retries.
pub struct ProvisionOnCreate(pub KeyService);

#[async_trait::async_trait]
impl TenantCreated for ProvisionOnCreate {
    async fn created(&self, tenant: &Tenant) {
        if let Err(e) = self.0.provision(info(tenant)).await {
            tracing::warn!(tenant = %tenant.id, error = %e, "the tenant's KEK will be created by the backfill job");
        }
    }
}

// ---- Re-encryption of what Anshin sealed before the key service ---------------------------

/// The job kind and schedule name of the re-encryption pass.
pub const REENCRYPT_JOB: &str = "keys.reencrypt";
/// Rows per batch by default (each batch is one short write transaction).
pub const REENCRYPT_BATCH: u64 = 100;
/// How often the worker runs the pass. The first run is due as soon as a worker starts for the
/// first time; once everything is moved, a run is two small queries that find nothing.
pub const REENCRYPT_EVERY: Duration = Duration::from_secs(3600);

/// A pass that stopped before the end.
#[derive(Debug, Clone, thiserror::Error)]
#[error("re-encrypting {what} stopped: {message}")]
pub struct ReencryptError {
    pub what: &'static str,
    pub message: String,
    /// Whether a later run can succeed (the key provider or the database was unavailable).
    pub transient: bool,
}

/// What both passes did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Reencrypted {
    /// Identity providers' client secrets under the interim secret box.
    pub identity_providers: ResealReport,
    /// People's e-mail addresses stored readable (accounts, invitations, review snapshots,
    /// password-reset verifiers).
    pub contact_data: ResealReport,
    /// Notification channels' webhook secrets and URLs.
    pub notification_channels: ResealReport,
    #[serde(skip)]
    pub errors: Vec<ReencryptError>,
}

impl Reencrypted {
    /// Values found under the interim keys that could not be moved.
    pub fn failed(&self) -> u64 {
        self.identity_providers.failed
            + self.contact_data.failed
            + self.notification_channels.failed
    }
}

/// Re-seals under the tenants' KEKs what is still sealed with the interim secret boxes:
/// identity providers' client secrets, people's e-mail addresses stored readable, then
/// notification channels' webhook secrets and URLs. Each change is audited with `actor`. Every
/// pass runs even if an earlier one stops.
pub async fn reencrypt(
    identity: &anshin_identity::IdentityService,
    alerts: &anshin_audit::alerts::AlertService,
    actor: &Actor,
    batch: u64,
) -> Reencrypted {
    let mut out = Reencrypted::default();
    match identity.reseal_legacy_secrets(actor, batch).await {
        Ok(r) => out.identity_providers = r,
        Err(e) => out.errors.push(ReencryptError {
            what: "identity provider client secrets",
            transient: identity_transient(&e),
            message: e.to_string(),
        }),
    }
    match identity.reseal_legacy_contact_data(actor, batch).await {
        Ok(r) => out.contact_data = r,
        Err(e) => out.errors.push(ReencryptError {
            what: "e-mail addresses",
            transient: identity_transient(&e),
            message: e.to_string(),
        }),
    }
    match alerts.reseal_legacy(actor, batch).await {
        Ok(r) => out.notification_channels = r,
        Err(e) => out.errors.push(ReencryptError {
            what: "notification channel secrets",
            transient: match &e {
                anshin_audit::alerts::AlertError::Sealer(s) => s.is_transient(),
                anshin_audit::alerts::AlertError::Db(_) => true,
                _ => false,
            },
            message: e.to_string(),
        }),
    }
    out
}

fn identity_transient(e: &anshin_identity::IdentityError) -> bool {
    matches!(
        e,
        anshin_identity::IdentityError::Upstream(_) | anshin_identity::IdentityError::Db(_)
    )
}

/// The services the re-encryption pass needs, for `anshin keys reencrypt` (the server uses its
/// own, already wired).
pub fn reencrypt_services(
    db: DatabaseConnection,
    config: &Config,
    keys: &KeyService,
) -> Result<
    (
        anshin_identity::IdentityService,
        anshin_audit::alerts::AlertService,
    ),
    String,
> {
    let identity = anshin_identity::IdentityService::new(
        db.clone(),
        &config.public_url,
        config.identity.clone(),
        crate::app::secret_box(config).map_err(|e| e.to_string())?,
        keys.clone(),
    )
    .map_err(|e| e.to_string())?;
    let rules = Arc::new(anshin_audit::alerts::RuleSet::load(
        config.audit.alert_rules_file.as_deref(),
    )?);
    let alerts = anshin_audit::alerts::AlertService::new(
        db,
        rules,
        anshin_audit::alerts::secretbox::load(&config.data_dir)?,
    )
    .with_sealer(keys.sealer());
    Ok((identity, alerts))
}

/// The worker's schedule for [`ReencryptJob`].
pub fn reencrypt_schedule() -> Schedule {
    Schedule::new(REENCRYPT_JOB, REENCRYPT_JOB, REENCRYPT_EVERY)
}

/// Runs the re-encryption pass on the worker: due at the first start, then hourly. A key
/// provider outage is retried with the worker's back-off; values that cannot be moved are
/// logged (by id, never their content) and left for an operator.
pub struct ReencryptJob {
    pub identity: anshin_identity::IdentityService,
    pub alerts: anshin_audit::alerts::AlertService,
}

#[async_trait::async_trait]
impl JobHandler for ReencryptJob {
    fn kind(&self) -> &'static str {
        REENCRYPT_JOB
    }

    async fn run(&self, _ctx: &JobContext) -> Result<(), JobFailure> {
        let r = reencrypt(
            &self.identity,
            &self.alerts,
            &Actor::system(REENCRYPT_JOB),
            REENCRYPT_BATCH,
        )
        .await;
        let moved = r.identity_providers.resealed
            + r.contact_data.resealed
            + r.notification_channels.resealed;
        if moved > 0 {
            tracing::info!(
                identity_providers = r.identity_providers.resealed,
                contact_data = r.contact_data.resealed,
                notification_channels = r.notification_channels.resealed,
                "secrets re-encrypted under the tenants' KEKs"
            );
        }
        if r.failed() > 0 {
            tracing::warn!(
                failed = r.failed(),
                "secrets under the interim keys could not be re-encrypted; run `anshin keys reencrypt` for details"
            );
        }
        match r.errors.iter().find(|e| e.transient) {
            Some(e) => Err(JobFailure::retry(e)),
            None => match r.errors.first() {
                Some(e) => Err(JobFailure::permanent(e)),
                None => Ok(()),
            },
        }
    }
}
