//! The keys Anshin signs with: the ES256 key of machine clients' access tokens and the Ed25519
//! key of audit checkpoints. Both are platform secrets of the key service (sealed under the
//! platform's KEK in the database, unsealed only in memory), so every replica signs with the
//! same key and neither is a readable file. A key an earlier version kept as a file under the
//! data directory is imported on first start, so tokens and checkpoints it signed still verify,
//! and the file is then removed.

use anshin_identity::clients::TokenKeys;
use anshin_identity::IdentityError;
use anshin_keys::{KeyError, KeyService};
use anshin_platform::config::Config;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

/// The platform secret holding the access-token key (PKCS#8 PEM of a P-256 key).
pub const TOKEN_SIGNING_KEY: &str = "identity.token-signing";
/// The platform secret holding the checkpoint key (the 32-byte Ed25519 seed).
pub const AUDIT_SIGNING_KEY: &str = "audit.checkpoint-signing";

/// Where earlier versions kept the keys.
pub fn legacy_token_key_file(config: &Config) -> PathBuf {
    config.data_dir.join("identity-token-signing.key")
}

pub fn legacy_audit_key_file(config: &Config) -> PathBuf {
    config.data_dir.join("audit-signing.key")
}

/// Legacy key files are small; anything larger is not one.
const MAX_LEGACY_FILE: u64 = 16 * 1024;

/// The access-token signing key.
pub async fn token_keys(keys: &KeyService, config: &Config) -> Result<TokenKeys, IdentityError> {
    let pem = stored_or_imported(
        keys,
        TOKEN_SIGNING_KEY,
        &legacy_token_key_file(config),
        |bytes| {
            std::str::from_utf8(bytes)
                .map_err(|_| "not UTF-8 PEM".to_string())
                .and_then(TokenKeys::from_pkcs8_pem)
                .map(|_| ())
        },
        || TokenKeys::generate_pkcs8_pem().map(|pem| Zeroizing::new(pem.into_bytes())),
    )
    .await?;
    let pem = std::str::from_utf8(&pem).map_err(|_| {
        IdentityError::Setup("the stored token signing key is not a PEM text".into())
    })?;
    TokenKeys::from_pkcs8_pem(pem).map_err(|e| {
        IdentityError::Setup(format!("the stored token signing key cannot be used: {e}"))
    })
}

/// The audit checkpoint signer.
pub async fn audit_signer(
    keys: &KeyService,
    config: &Config,
) -> Result<Arc<dyn anshin_audit::Signer>, IdentityError> {
    let seed = stored_or_imported(
        keys,
        AUDIT_SIGNING_KEY,
        &legacy_audit_key_file(config),
        |bytes| match bytes.len() {
            32 => Ok(()),
            n => Err(format!("{n} bytes; an Ed25519 seed has 32")),
        },
        || {
            use rand::RngCore;
            let mut seed = Zeroizing::new(vec![0u8; 32]);
            rand::rngs::OsRng.fill_bytes(seed.as_mut_slice());
            Ok(seed)
        },
    )
    .await?;
    let seed: &[u8; 32] = seed.as_slice().try_into().map_err(|_| {
        IdentityError::Setup("the stored audit signing key is not a 32-byte Ed25519 seed".into())
    })?;
    Ok(Arc::new(anshin_audit::LocalSigner::from_seed(seed)))
}

/// The stored key `name`; on first use the legacy file's key if there is one (checked by
/// `valid`), else a new one from `generate`. A legacy file holding the stored key is removed.
async fn stored_or_imported(
    keys: &KeyService,
    name: &str,
    legacy: &Path,
    valid: impl Fn(&[u8]) -> Result<(), String>,
    generate: impl FnOnce() -> Result<Zeroizing<Vec<u8>>, String>,
) -> Result<anshin_keys::envelope::Plaintext, IdentityError> {
    let setup = |e: String| IdentityError::Setup(format!("signing key {name}: {e}"));
    let unavailable = |e: KeyError| match e {
        KeyError::Unavailable(_) => IdentityError::Upstream(format!(
            "the key service cannot unseal the signing key {name}: {e}"
        )),
        e => IdentityError::Setup(format!("signing key {name}: {e}")),
    };
    let file = read_legacy(legacy).map_err(setup)?;
    if let Some(bytes) = &file {
        valid(bytes).map_err(|e| {
            setup(format!(
                "{} cannot be imported ({e}); move it away to start with a new key",
                legacy.display()
            ))
        })?;
    }
    let imported = file.clone();
    let stored = keys
        .platform_secret(name, move || match imported {
            Some(bytes) => Ok(bytes),
            None => generate().map_err(KeyError::Invalid),
        })
        .await
        .map_err(unavailable)?;
    if let Some(bytes) = file {
        if bytes.as_slice() == stored.as_slice() {
            std::fs::remove_file(legacy).map_err(|e| {
                setup(format!(
                    "imported {}, but cannot remove the file: {e}",
                    legacy.display()
                ))
            })?;
            tracing::info!(key = name, file = %legacy.display(), "signing key moved from its file into the key service; the file is removed");
        } else {
            tracing::warn!(key = name, file = %legacy.display(), "a signing key file is present but another key is in use (stored by another replica); the file is not used and should be removed");
        }
    }
    Ok(stored)
}

fn read_legacy(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if meta.len() > MAX_LEGACY_FILE {
        return Err(format!(
            "{} is too large to be a signing key",
            path.display()
        ));
    }
    std::fs::read(path)
        .map(|b| Some(Zeroizing::new(b)))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}
