//! Composes the key service: the configured provider, the tenant directory it asks about new
//! tenants (answered from tenancy, so keys never reads tenancy's tables), and the hook that gives
//! each new tenant its KEK.

use anshin_keys::provider::aws::{AwsKmsProvider, AwsSettings};
use anshin_keys::provider::local::LocalProvider;
use anshin_keys::{CacheLimits, KeyError, KeyProvider, KeyService, KeySettings, TenantInfo};
use anshin_platform::config::Config;
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
