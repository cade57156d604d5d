//! Keys (guideline 7 ③, 7.3, 13 ⑦, 10 ②): a key-encryption key (KEK) per tenant in KMS or the
//! local provider, envelope encryption with AES-256-GCM data keys bound to tenant, purpose and
//! record, a bounded data-key cache, rotation and crypto-erase.

pub mod admin;
pub mod cache;
pub mod data;
pub mod entity;
pub mod envelope;
pub mod erase;
pub mod error;
pub mod index;
pub mod jobs;
pub mod migration;
pub mod platform_keys;
pub mod provider;
pub mod ring;
pub mod routes;
pub mod sealer;
pub mod service;
#[cfg(test)]
mod testutil;

pub use admin::{KekView, KeyStatus, RotationStarted};
pub use cache::CacheLimits;
pub use erase::{ErasedKey, ErasureEvidence};
pub use error::KeyError;
pub use provider::{KeyProvider, KeyState};
pub use service::{KeyService, KeySettings, TenantDirectory, TenantInfo, PLATFORM_TENANT};

/// Every migration of the key service, in order.
pub fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
    migration::migrations()
}

/// What the application role may do on the key service's tables.
pub fn grants() -> Vec<anshin_platform::db::TableGrant> {
    migration::grants()
}
