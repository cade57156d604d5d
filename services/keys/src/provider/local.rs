//! The local key provider for the embedded default: each key-encryption key is a file under
//! `<data_dir>/keys/` (mode 0600), optionally sealed under a key derived from a passphrase
//! (argon2id). It keeps KMS semantics: a disabled key refuses to wrap or unwrap, deletion destroys
//! the material at once (the file is overwritten, then removed), and rotation adds a new version
//! while older versions keep unwrapping what they wrapped.
//!
//! Layout: `<id>.json` holds the metadata (no secrets) and survives deletion as a tombstone, so a
//! destroyed key is reported as destroyed rather than unknown; `<id>.key` holds the versions of the
//! material.

use super::{
    context_bytes, CreateKey, EncryptionContext, GeneratedKey, KeyMeta, KeyOrigin, KeyProvider,
    KeyState, Receipt,
};
use crate::error::KeyError;
use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use uuid::Uuid;
use zeroize::{Zeroize, Zeroizing};

const WRAP_MAGIC: &[u8; 4] = b"LKW1";
const KEY_ID_PREFIX: &str = "local:";

#[derive(Debug, Serialize, Deserialize)]
struct Metadata {
    id: String,
    alias: String,
    description: String,
    tags: Vec<(String, String)>,
    state: KeyState,
    created_at: DateTime<Utc>,
    rotation_enabled: bool,
    current_version: u32,
    deletion_date: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize)]
struct Material {
    /// Either the raw key (base64) or, with a passphrase, the key sealed under the derived key.
    versions: Vec<Version>,
}

#[derive(Serialize, Deserialize)]
struct Version {
    version: u32,
    created_at: DateTime<Utc>,
    /// `plain:<b64>` or `sealed:<b64 nonce||ct>`.
    key: String,
}

impl Drop for Material {
    fn drop(&mut self) {
        for v in &mut self.versions {
            v.key.zeroize();
        }
    }
}

pub struct LocalProvider {
    root: PathBuf,
    /// Key derived from the passphrase, when one is configured.
    seal: Option<Arc<Aes256Gcm>>,
    calls: AtomicU64,
}

impl std::fmt::Debug for LocalProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalProvider")
            .field("root", &self.root)
            .field("passphrase", &self.seal.is_some())
            .finish()
    }
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> KeyError {
    KeyError::Unavailable(format!("local key store {}: {e}", path.display()))
}

impl LocalProvider {
    /// Opens (creating if needed) the key store under `root`. With `passphrase`, key material is
    /// sealed under an argon2id-derived key; the salt lives in `root/kdf.json`.
    pub fn open(root: &Path, passphrase: Option<&str>) -> Result<Self, KeyError> {
        std::fs::create_dir_all(root).map_err(|e| io_err(root, e))?;
        restrict_dir(root)?;
        let seal = match passphrase {
            None => None,
            Some(p) if p.len() < 12 => {
                return Err(KeyError::Config(
                    "the local key passphrase must be at least 12 characters".into(),
                ))
            }
            Some(p) => Some(Arc::new(derive_seal_key(root, p)?)),
        };
        Ok(Self {
            root: root.to_path_buf(),
            seal,
            calls: AtomicU64::new(0),
        })
    }

    /// Requests served (the local equivalent of counted KMS calls).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn meta_path(&self, key_id: &str) -> Result<PathBuf, KeyError> {
        Ok(self.root.join(format!("{}.json", file_stem(key_id)?)))
    }

    fn material_path(&self, key_id: &str) -> Result<PathBuf, KeyError> {
        Ok(self.root.join(format!("{}.key", file_stem(key_id)?)))
    }

    fn read_meta(&self, key_id: &str) -> Result<Metadata, KeyError> {
        let path = self.meta_path(key_id)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyError::KeyNotFound(key_id.to_string()))
            }
            Err(e) => return Err(io_err(&path, e)),
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| KeyError::Provider(format!("{}: {e}", path.display())))
    }

    fn write_meta(&self, meta: &Metadata) -> Result<(), KeyError> {
        let path = self.meta_path(&meta.id)?;
        let bytes =
            serde_json::to_vec_pretty(meta).map_err(|e| KeyError::Provider(e.to_string()))?;
        write_atomic(&path, &bytes)
    }

    fn read_material(&self, key_id: &str) -> Result<Material, KeyError> {
        let path = self.material_path(key_id)?;
        let bytes = Zeroizing::new(std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                KeyError::KeyDestroyed(key_id.to_string())
            } else {
                io_err(&path, e)
            }
        })?);
        serde_json::from_slice(&bytes)
            .map_err(|e| KeyError::Provider(format!("{}: {e}", path.display())))
    }

    fn write_material(&self, key_id: &str, m: &Material) -> Result<(), KeyError> {
        let path = self.material_path(key_id)?;
        let bytes =
            Zeroizing::new(serde_json::to_vec(m).map_err(|e| KeyError::Provider(e.to_string()))?);
        write_atomic(&path, &bytes)
    }

    fn encode_key(&self, key_id: &str, raw: &[u8; 32]) -> Result<String, KeyError> {
        match &self.seal {
            None => Ok(format!("plain:{}", B64.encode(raw))),
            Some(c) => {
                let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
                let ct = c
                    .encrypt(
                        &nonce,
                        Payload {
                            msg: raw,
                            aad: key_id.as_bytes(),
                        },
                    )
                    .map_err(|_| KeyError::Provider("sealing key material failed".into()))?;
                let mut out = nonce.to_vec();
                out.extend_from_slice(&ct);
                Ok(format!("sealed:{}", B64.encode(out)))
            }
        }
    }

    fn decode_key(&self, key_id: &str, stored: &str) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        let bad = || KeyError::Provider(format!("the material of local key {key_id} is corrupt"));
        let raw: Zeroizing<Vec<u8>> =
            match (stored.split_once(':'), &self.seal) {
                (Some(("plain", b)), None) => Zeroizing::new(B64.decode(b).map_err(|_| bad())?),
                (Some(("sealed", b)), Some(c)) => {
                    let bytes = B64.decode(b).map_err(|_| bad())?;
                    if bytes.len() < 12 {
                        return Err(bad());
                    }
                    let (nonce, ct) = bytes.split_at(12);
                    Zeroizing::new(
                        c.decrypt(
                            Nonce::from_slice(nonce),
                            Payload {
                                msg: ct,
                                aad: key_id.as_bytes(),
                            },
                        )
                        .map_err(|_| {
                            KeyError::Config(
                                "the local key passphrase does not open the key files".into(),
                            )
                        })?,
                    )
                }
                (Some(("sealed", _)), None) => return Err(KeyError::Config(
                    "the local key files are sealed with a passphrase; set keys.local_passphrase"
                        .into(),
                )),
                (Some(("plain", _)), Some(_)) => {
                    return Err(KeyError::Config(
                        "a passphrase is configured but the local key files are not sealed with it"
                            .into(),
                    ))
                }
                _ => return Err(bad()),
            };
        let mut out = Zeroizing::new([0u8; 32]);
        if raw.len() != 32 {
            return Err(bad());
        }
        out.copy_from_slice(&raw);
        Ok(out)
    }

    /// The metadata of a key that may be used now, or the reason it may not.
    fn usable(&self, key_id: &str) -> Result<Metadata, KeyError> {
        let meta = self.read_meta(key_id)?;
        match meta.state {
            KeyState::Enabled => Ok(meta),
            KeyState::Destroyed => Err(KeyError::KeyDestroyed(key_id.to_string())),
            other => Err(KeyError::KeyUnusable {
                key: key_id.to_string(),
                state: other.as_str().replace('_', " "),
            }),
        }
    }

    fn cipher_for(&self, key_id: &str, version: u32) -> Result<Aes256Gcm, KeyError> {
        let material = self.read_material(key_id)?;
        let v = material
            .versions
            .iter()
            .find(|v| v.version == version)
            .ok_or(KeyError::InvalidCiphertext)?;
        let key = self.decode_key(key_id, &v.key)?;
        Ok(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.as_ref())))
    }

    fn wrap_with(
        &self,
        meta: &Metadata,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>, KeyError> {
        let cipher = self.cipher_for(&meta.id, meta.current_version)?;
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut header = WRAP_MAGIC.to_vec();
        header.extend_from_slice(&meta.current_version.to_be_bytes());
        header.extend_from_slice(&nonce);
        let aad = wrap_aad(&meta.id, &header, context);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| KeyError::Provider("wrapping failed".into()))?;
        header.extend_from_slice(&ct);
        Ok(header)
    }

    fn set_state(&self, key_id: &str, state: KeyState) -> Result<Receipt, KeyError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut meta = self.read_meta(key_id)?;
        match meta.state {
            KeyState::Destroyed => return Err(KeyError::KeyDestroyed(key_id.to_string())),
            KeyState::PendingDeletion => {
                return Err(KeyError::KeyUnusable {
                    key: key_id.to_string(),
                    state: "pending deletion".into(),
                })
            }
            _ => {}
        }
        meta.state = state;
        self.write_meta(&meta)?;
        Ok(Receipt {
            key_id: key_id.to_string(),
            state,
            request_id: Some(Uuid::new_v4().to_string()),
            deletion_date: None,
        })
    }
}

fn wrap_aad(key_id: &str, header: &[u8], context: &EncryptionContext) -> Vec<u8> {
    let mut aad = b"anshin-local-kek/1\0".to_vec();
    aad.extend_from_slice(key_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(header);
    aad.extend_from_slice(&context_bytes(context));
    aad
}

/// `local:<uuid>` → `<uuid>`; anything else is not a local key (and must never become a path).
fn file_stem(key_id: &str) -> Result<String, KeyError> {
    key_id
        .strip_prefix(KEY_ID_PREFIX)
        .and_then(|s| Uuid::parse_str(s).ok())
        .map(|u| u.to_string())
        .ok_or_else(|| KeyError::KeyNotFound(format!("{key_id} is not a local key id")))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let tmp = path.with_extension(format!("tmp-{}", Uuid::new_v4().simple()));
    anshin_platform::fsutil::write_private(&tmp, bytes).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

#[cfg(unix)]
fn restrict_dir(root: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io_err(root, e))
}

#[cfg(not(unix))]
fn restrict_dir(_root: &Path) -> Result<(), KeyError> {
    Ok(())
}

/// Overwrites a file with random bytes before removing it, so the material does not linger in
/// the file's old blocks on simple filesystems. (Copy-on-write and flash storage may still keep
/// old blocks; the evidence names the provider so an inspector can weigh that.)
fn destroy_file(path: &Path) -> Result<(), KeyError> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len() as usize,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path, e)),
    };
    let mut noise = vec![0u8; len.max(1)];
    OsRng.fill_bytes(&mut noise);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| io_err(path, e))?;
        f.write_all(&noise).map_err(|e| io_err(path, e))?;
        f.sync_all().map_err(|e| io_err(path, e))?;
    }
    std::fs::remove_file(path).map_err(|e| io_err(path, e))
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    algorithm: String,
    salt: String,
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
}

fn derive_seal_key(root: &Path, passphrase: &str) -> Result<Aes256Gcm, KeyError> {
    let path = root.join("kdf.json");
    let kdf: Kdf = if path.exists() {
        let bytes = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| KeyError::Config(format!("{}: {e}", path.display())))?
    } else {
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        let kdf = Kdf {
            algorithm: "argon2id".into(),
            salt: B64.encode(salt),
            m_cost: 19 * 1024,
            t_cost: 2,
            p_cost: 1,
        };
        let bytes = serde_json::to_vec_pretty(&kdf).map_err(|e| KeyError::Config(e.to_string()))?;
        write_atomic(&path, &bytes)?;
        kdf
    };
    let salt = B64
        .decode(&kdf.salt)
        .map_err(|_| KeyError::Config(format!("{}: bad salt", path.display())))?;
    let params = argon2::Params::new(kdf.m_cost, kdf.t_cost, kdf.p_cost, Some(32))
        .map_err(|e| KeyError::Config(format!("{}: {e}", path.display())))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.as_bytes(), &salt, out.as_mut())
        .map_err(|e| KeyError::Config(format!("deriving the local key seal: {e}")))?;
    Ok(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(out.as_ref())))
}

#[async_trait::async_trait]
impl KeyProvider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn create_key(&self, req: &CreateKey) -> Result<KeyMeta, KeyError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let id = format!("{KEY_ID_PREFIX}{}", Uuid::new_v4());
        let mut raw = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(raw.as_mut());
        let now = Utc::now();
        let material = Material {
            versions: vec![Version {
                version: 1,
                created_at: now,
                key: self.encode_key(&id, &raw)?,
            }],
        };
        // Material first: metadata without material would read as a destroyed key.
        self.write_material(&id, &material)?;
        let meta = Metadata {
            id: id.clone(),
            alias: req.alias.clone(),
            description: req.description.clone(),
            tags: req.tags.clone(),
            state: KeyState::Enabled,
            created_at: now,
            rotation_enabled: true,
            current_version: 1,
            deletion_date: None,
        };
        self.write_meta(&meta)?;
        Ok(meta_of(&meta))
    }

    async fn describe(&self, key_id: &str) -> Result<KeyMeta, KeyError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(meta_of(&self.read_meta(key_id)?))
    }

    async fn generate_data_key(
        &self,
        key_id: &str,
        context: &EncryptionContext,
    ) -> Result<GeneratedKey, KeyError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let meta = self.usable(key_id)?;
        let mut plaintext = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(plaintext.as_mut());
        let wrapped = self.wrap_with(&meta, plaintext.as_ref(), context)?;
        Ok(GeneratedKey {
            plaintext,
            wrapped,
            key_id: meta.id.clone(),
        })
    }

    async fn wrap(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>, KeyError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let meta = self.usable(key_id)?;
        self.wrap_with(&meta, plaintext, context)
    }

    async fn unwrap(
        &self,
        key_id: &str,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let meta = self.usable(key_id)?;
        if wrapped.len() < 4 + 4 + 12 + 16 || &wrapped[..4] != WRAP_MAGIC {
            return Err(KeyError::InvalidCiphertext);
        }
        let mut v = [0u8; 4];
        v.copy_from_slice(&wrapped[4..8]);
        let version = u32::from_be_bytes(v);
        let (header, ct) = wrapped.split_at(4 + 4 + 12);
        let cipher = self.cipher_for(&meta.id, version)?;
        let aad = wrap_aad(&meta.id, header, context);
        let pt = cipher
            .decrypt(
                Nonce::from_slice(&header[8..20]),
                Payload { msg: ct, aad: &aad },
            )
            .map_err(|_| KeyError::InvalidCiphertext)?;
        Ok(Zeroizing::new(pt))
    }

    async fn rotate_material(&self, key_id: &str) -> Result<Receipt, KeyError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut meta = self.usable(key_id)?;
        let mut material = self.read_material(key_id)?;
        let mut raw = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(raw.as_mut());
        let version = meta.current_version + 1;
        material.versions.push(Version {
            version,
            created_at: Utc::now(),
            key: self.encode_key(key_id, &raw)?,
        });
        self.write_material(key_id, &material)?;
        meta.current_version = version;
        self.write_meta(&meta)?;
        Ok(Receipt {
            key_id: key_id.to_string(),
            state: meta.state,
            request_id: Some(Uuid::new_v4().to_string()),
            deletion_date: None,
        })
    }

    async fn enable(&self, key_id: &str) -> Result<Receipt, KeyError> {
        self.set_state(key_id, KeyState::Enabled)
    }

    async fn disable(&self, key_id: &str) -> Result<Receipt, KeyError> {
        self.set_state(key_id, KeyState::Disabled)
    }

    async fn schedule_deletion(
        &self,
        key_id: &str,
        _pending_days: u32,
    ) -> Result<Receipt, KeyError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut meta = self.read_meta(key_id)?;
        let now = Utc::now();
        if meta.state != KeyState::Destroyed {
            destroy_file(&self.material_path(key_id)?)?;
            meta.state = KeyState::Destroyed;
            meta.deletion_date = Some(now);
            self.write_meta(&meta)?;
        }
        Ok(Receipt {
            key_id: key_id.to_string(),
            state: KeyState::Destroyed,
            request_id: Some(Uuid::new_v4().to_string()),
            deletion_date: meta.deletion_date,
        })
    }

    async fn ping(&self) -> Result<(), KeyError> {
        std::fs::read_dir(&self.root)
            .map(|_| ())
            .map_err(|e| io_err(&self.root, e))
    }
}

fn meta_of(m: &Metadata) -> KeyMeta {
    KeyMeta {
        key_id: m.id.clone(),
        state: m.state,
        origin: KeyOrigin::Provider,
        multi_region: false,
        rotation_enabled: Some(m.rotation_enabled),
        deletion_date: m.deletion_date,
        created_at: Some(m.created_at),
        symmetric: true,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn ctx(t: &str) -> EncryptionContext {
        [("tenant".to_string(), t.to_string())].into()
    }

    fn req() -> CreateKey {
        CreateKey {
            alias: "anshin/tenant/test".into(),
            description: "test".into(),
            tags: vec![("anshin:tenant".into(), "t".into())],
        }
    }

    #[tokio::test]
    async fn wraps_and_unwraps_with_the_same_context_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = LocalProvider::open(dir.path(), None).unwrap();
        let k = p.create_key(&req()).await.unwrap();
        let dk = p.generate_data_key(&k.key_id, &ctx("a")).await.unwrap();
        let back = p.unwrap(&k.key_id, &dk.wrapped, &ctx("a")).await.unwrap();
        assert_eq!(back.as_slice(), dk.plaintext.as_ref());
        assert!(matches!(
            p.unwrap(&k.key_id, &dk.wrapped, &ctx("b")).await,
            Err(KeyError::InvalidCiphertext)
        ));
        let other = p.create_key(&req()).await.unwrap();
        assert!(matches!(
            p.unwrap(&other.key_id, &dk.wrapped, &ctx("a")).await,
            Err(KeyError::InvalidCiphertext)
        ));
        let mut tampered = dk.wrapped.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(
            p.unwrap(&k.key_id, &tampered, &ctx("a")).await,
            Err(KeyError::InvalidCiphertext)
        ));
    }

    #[tokio::test]
    async fn disabled_keys_refuse_and_enabled_again_work() {
        let dir = tempfile::tempdir().unwrap();
        let p = LocalProvider::open(dir.path(), None).unwrap();
        let k = p.create_key(&req()).await.unwrap();
        let dk = p.generate_data_key(&k.key_id, &ctx("a")).await.unwrap();
        p.disable(&k.key_id).await.unwrap();
        assert_eq!(
            p.describe(&k.key_id).await.unwrap().state,
            KeyState::Disabled
        );
        assert!(matches!(
            p.unwrap(&k.key_id, &dk.wrapped, &ctx("a")).await,
            Err(KeyError::KeyUnusable { .. })
        ));
        assert!(matches!(
            p.generate_data_key(&k.key_id, &ctx("a")).await,
            Err(KeyError::KeyUnusable { .. })
        ));
        p.enable(&k.key_id).await.unwrap();
        assert!(p.unwrap(&k.key_id, &dk.wrapped, &ctx("a")).await.is_ok());
    }

    #[tokio::test]
    async fn deletion_destroys_the_material() {
        let dir = tempfile::tempdir().unwrap();
        let p = LocalProvider::open(dir.path(), None).unwrap();
        let k = p.create_key(&req()).await.unwrap();
        let dk = p.generate_data_key(&k.key_id, &ctx("a")).await.unwrap();
        let r = p.schedule_deletion(&k.key_id, 7).await.unwrap();
        assert_eq!(r.state, KeyState::Destroyed);
        assert!(r.deletion_date.is_some());
        assert!(!p.material_path(&k.key_id).unwrap().exists());
        assert!(matches!(
            p.unwrap(&k.key_id, &dk.wrapped, &ctx("a")).await,
            Err(KeyError::KeyDestroyed(_))
        ));
        assert_eq!(
            p.describe(&k.key_id).await.unwrap().state,
            KeyState::Destroyed
        );
        // Re-enabling cannot bring it back.
        assert!(p.enable(&k.key_id).await.is_err());
        // Idempotent.
        assert_eq!(
            p.schedule_deletion(&k.key_id, 7).await.unwrap().state,
            KeyState::Destroyed
        );
    }

    #[tokio::test]
    async fn rotation_keeps_old_blobs_readable() {
        let dir = tempfile::tempdir().unwrap();
        let p = LocalProvider::open(dir.path(), None).unwrap();
        let k = p.create_key(&req()).await.unwrap();
        let old = p.generate_data_key(&k.key_id, &ctx("a")).await.unwrap();
        p.rotate_material(&k.key_id).await.unwrap();
        let new = p.generate_data_key(&k.key_id, &ctx("a")).await.unwrap();
        assert_eq!(&new.wrapped[4..8], &2u32.to_be_bytes());
        assert!(p.unwrap(&k.key_id, &old.wrapped, &ctx("a")).await.is_ok());
        assert!(p.unwrap(&k.key_id, &new.wrapped, &ctx("a")).await.is_ok());
    }

    #[tokio::test]
    async fn passphrase_seals_material_and_is_required() {
        let dir = tempfile::tempdir().unwrap();
        let p = LocalProvider::open(dir.path(), Some("correct horse battery")).unwrap();
        let k = p.create_key(&req()).await.unwrap();
        let dk = p.generate_data_key(&k.key_id, &ctx("a")).await.unwrap();
        let file = std::fs::read_to_string(p.material_path(&k.key_id).unwrap()).unwrap();
        assert!(file.contains("sealed:") && !file.contains("plain:"));

        let again = LocalProvider::open(dir.path(), Some("correct horse battery")).unwrap();
        assert!(again
            .unwrap(&k.key_id, &dk.wrapped, &ctx("a"))
            .await
            .is_ok());
        let wrong = LocalProvider::open(dir.path(), Some("wrong horse battery")).unwrap();
        assert!(matches!(
            wrong.unwrap(&k.key_id, &dk.wrapped, &ctx("a")).await,
            Err(KeyError::Config(_))
        ));
        let none = LocalProvider::open(dir.path(), None).unwrap();
        assert!(matches!(
            none.unwrap(&k.key_id, &dk.wrapped, &ctx("a")).await,
            Err(KeyError::Config(_))
        ));
    }

    #[tokio::test]
    async fn files_are_private_and_ids_cannot_escape_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = LocalProvider::open(dir.path(), None).unwrap();
        let k = p.create_key(&req()).await.unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(p.material_path(&k.key_id).unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0);
        }
        assert!(matches!(
            p.describe("local:../../etc/passwd").await,
            Err(KeyError::KeyNotFound(_))
        ));
        assert!(matches!(
            p.describe("arn:aws:kms:ap-northeast-1:1:key/x").await,
            Err(KeyError::KeyNotFound(_))
        ));
    }
}
