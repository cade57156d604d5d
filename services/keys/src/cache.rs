//! The data-key cache: keeps plaintext DEKs in memory for a bounded time and use, so the data
//! plane does not call KMS per record. Limits follow the AWS Encryption SDK's caching
//! cryptographic materials manager: maximum age, messages and bytes per cached key, and a bound on
//! the number of entries. Encryption entries are per (tenant, purpose); decryption entries are per
//! wrapped DEK.

use crate::envelope::{DataKey, DekRef};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    pub max_age: Duration,
    pub max_messages: u64,
    pub max_bytes: u64,
    /// Entries kept per direction (encrypt, decrypt).
    pub capacity: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(300),
            max_messages: 1_000_000,
            max_bytes: 1 << 36,
            capacity: 4096,
        }
    }
}

/// A DEK ready for encryption, with the header reference that finds it again.
#[derive(Debug)]
pub struct EncryptionKey {
    pub key: DataKey,
    pub dek: DekRef,
    /// The tenant KEK record that wrapped it (a rotation flushes entries of the old one).
    pub kek: Uuid,
    created: Instant,
    bytes: AtomicU64,
}

impl EncryptionKey {
    pub fn new(key: DataKey, dek: DekRef, kek: Uuid) -> Self {
        Self {
            key,
            dek,
            kek,
            created: Instant::now(),
            bytes: AtomicU64::new(0),
        }
    }
}

#[derive(Debug)]
struct DecryptionKey {
    key: Arc<DataKey>,
    tenant: Uuid,
    created: Instant,
}

/// Where a decryption entry came from: a stored DEK id, or a hash of an embedded wrapped DEK with
/// everything it was bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DecryptionRef {
    Stored(Uuid),
    Embedded([u8; 32]),
}

impl DecryptionRef {
    pub fn embedded(tenant: Uuid, purpose: &str, kek_id: &str, wrapped: &[u8]) -> Self {
        let mut h = Sha256::new();
        for part in [
            tenant.as_bytes().as_slice(),
            purpose.as_bytes(),
            kek_id.as_bytes(),
            wrapped,
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        DecryptionRef::Embedded(h.finalize().into())
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
}

type Slot = (Uuid, String);

pub struct DataKeyCache {
    limits: CacheLimits,
    enc: Mutex<HashMap<Slot, Arc<EncryptionKey>>>,
    dec: Mutex<HashMap<DecryptionRef, DecryptionKey>>,
    hits: Arc<AtomicU64>,
    misses: AtomicU64,
    /// One fill at a time per encryption slot, so a burst of misses costs one KMS call.
    fills: Mutex<HashMap<Slot, Arc<tokio::sync::Mutex<()>>>>,
    meter: Meters,
}

struct Meters {
    /// Hits are counted in an atomic and read by the exporter: the hot path stays a single
    /// atomic add.
    _hits: opentelemetry::metrics::ObservableCounter<u64>,
    misses: opentelemetry::metrics::Counter<u64>,
}

impl std::fmt::Debug for DataKeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeyCache")
            .field("limits", &self.limits)
            .field("stats", &self.stats())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked mid-update of a cache; the map itself
    // is still consistent (every update is a single insert or remove).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DataKeyCache {
    pub fn new(limits: CacheLimits) -> Self {
        let m = opentelemetry::global::meter("anshin");
        let hits = Arc::new(AtomicU64::new(0));
        let observed = hits.clone();
        Self {
            limits,
            enc: Mutex::new(HashMap::new()),
            dec: Mutex::new(HashMap::new()),
            hits,
            misses: AtomicU64::new(0),
            fills: Mutex::new(HashMap::new()),
            meter: Meters {
                _hits: m
                    .u64_observable_counter("anshin.keys.cache.hits")
                    .with_description("Data-key cache hits")
                    .with_callback(move |o| o.observe(observed.load(Ordering::Relaxed), &[]))
                    .build(),
                misses: m
                    .u64_counter("anshin.keys.cache.misses")
                    .with_description("Data-key cache misses (each costs a key-provider call)")
                    .build(),
            },
        }
    }

    pub fn limits(&self) -> CacheLimits {
        self.limits
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: (lock(&self.enc).len() + lock(&self.dec).len()) as u64,
        }
    }

    fn hit(&self, _op: &'static str) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    fn miss(&self, op: &'static str) {
        self.misses.fetch_add(1, Ordering::Relaxed);
        // Misses are rare (each costs a provider call), so they carry the operation.
        self.meter
            .misses
            .add(1, &[opentelemetry::KeyValue::new("operation", op)]);
    }

    /// A cached encryption key for (tenant, purpose) that can take `bytes` more, with one message
    /// and the bytes already counted against it. `None` is a miss.
    pub fn encryption_key(
        &self,
        tenant: Uuid,
        purpose: &str,
        bytes: u64,
    ) -> Option<Arc<EncryptionKey>> {
        self.lookup(tenant, purpose, bytes, true)
    }

    /// The same lookup without counting it, for the second look taken under the fill lock.
    pub fn recheck_encryption_key(
        &self,
        tenant: Uuid,
        purpose: &str,
        bytes: u64,
    ) -> Option<Arc<EncryptionKey>> {
        self.lookup(tenant, purpose, bytes, false)
    }

    fn lookup(
        &self,
        tenant: Uuid,
        purpose: &str,
        bytes: u64,
        count: bool,
    ) -> Option<Arc<EncryptionKey>> {
        let slot = (tenant, purpose.to_string());
        let entry = lock(&self.enc).get(&slot).cloned();
        if let Some(e) = entry {
            let fresh = e.created.elapsed() < self.limits.max_age;
            let used = e
                .bytes
                .fetch_add(bytes, Ordering::Relaxed)
                .saturating_add(bytes);
            if fresh && used <= self.limits.max_bytes && e.key.used() < self.limits.max_messages {
                if count {
                    self.hit("encrypt");
                }
                return Some(e);
            }
            self.evict_encryption(&slot, &e);
        }
        if count {
            self.miss("encrypt");
        }
        None
    }

    /// Drops `entry` from its slot if it is still the one cached (another thread may have
    /// replaced it already).
    pub fn evict_encryption(&self, slot: &(Uuid, String), entry: &Arc<EncryptionKey>) {
        let mut enc = lock(&self.enc);
        if enc.get(slot).is_some_and(|cur| Arc::ptr_eq(cur, entry)) {
            enc.remove(slot);
        }
    }

    pub fn put_encryption_key(&self, tenant: Uuid, purpose: &str, key: Arc<EncryptionKey>) {
        let mut enc = lock(&self.enc);
        if enc.len() >= self.limits.capacity {
            let max_age = self.limits.max_age;
            enc.retain(|_, e| e.created.elapsed() < max_age);
            if enc.len() >= self.limits.capacity {
                if let Some(oldest) = enc
                    .iter()
                    .min_by_key(|(_, e)| e.created)
                    .map(|(k, _)| k.clone())
                {
                    enc.remove(&oldest);
                }
            }
        }
        enc.insert((tenant, purpose.to_string()), key);
    }

    /// The lock that serialises refills of one encryption slot.
    pub fn fill_lock(&self, tenant: Uuid, purpose: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.fills)
            .entry((tenant, purpose.to_string()))
            .or_default()
            .clone()
    }

    pub fn decryption_key(&self, r: &DecryptionRef, tenant: Uuid) -> Option<Arc<DataKey>> {
        let mut dec = lock(&self.dec);
        match dec.get(r) {
            Some(e) if e.tenant == tenant && e.created.elapsed() < self.limits.max_age => {
                let k = e.key.clone();
                drop(dec);
                self.hit("decrypt");
                Some(k)
            }
            Some(e) if e.tenant == tenant => {
                dec.remove(r);
                drop(dec);
                self.miss("decrypt");
                None
            }
            _ => {
                drop(dec);
                self.miss("decrypt");
                None
            }
        }
    }

    pub fn put_decryption_key(&self, r: DecryptionRef, tenant: Uuid, key: Arc<DataKey>) {
        let mut dec = lock(&self.dec);
        if dec.len() >= self.limits.capacity {
            let max_age = self.limits.max_age;
            dec.retain(|_, e| e.created.elapsed() < max_age);
            if dec.len() >= self.limits.capacity {
                if let Some(oldest) = dec
                    .iter()
                    .min_by_key(|(_, e)| e.created)
                    .map(|(k, _)| k.clone())
                {
                    dec.remove(&oldest);
                }
            }
        }
        dec.insert(
            r,
            DecryptionKey {
                key,
                tenant,
                created: Instant::now(),
            },
        );
    }

    /// Forgets every key of a tenant: after a KEK rotation, a disable or a crypto-erase, nothing
    /// may keep working from memory.
    pub fn flush_tenant(&self, tenant: Uuid) {
        lock(&self.enc).retain(|(t, _), _| *t != tenant);
        lock(&self.dec).retain(|_, e| e.tenant != tenant);
    }

    pub fn flush_all(&self) {
        lock(&self.enc).clear();
        lock(&self.dec).clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use zeroize::Zeroizing;

    fn entry(max_messages: u64) -> Arc<EncryptionKey> {
        Arc::new(EncryptionKey::new(
            DataKey::new(&Zeroizing::new([1u8; 32]), max_messages),
            DekRef::Stored(Uuid::new_v4()),
            Uuid::nil(),
        ))
    }

    fn limits() -> CacheLimits {
        CacheLimits {
            max_age: Duration::from_secs(60),
            max_messages: 1000,
            max_bytes: 100,
            capacity: 2,
        }
    }

    #[test]
    fn bytes_limit_evicts() {
        let c = DataKeyCache::new(limits());
        let t = Uuid::new_v4();
        c.put_encryption_key(t, "p", entry(1000));
        assert!(c.encryption_key(t, "p", 60).is_some());
        assert!(c.encryption_key(t, "p", 60).is_none(), "over 100 bytes");
        assert!(c.encryption_key(t, "p", 1).is_none(), "evicted");
        assert_eq!(c.stats().hits, 1);
        assert_eq!(c.stats().misses, 2);
    }

    #[test]
    fn age_limit_evicts() {
        let c = DataKeyCache::new(CacheLimits {
            max_age: Duration::from_millis(20),
            ..limits()
        });
        let t = Uuid::new_v4();
        c.put_encryption_key(t, "p", entry(1000));
        assert!(c.encryption_key(t, "p", 1).is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert!(c.encryption_key(t, "p", 1).is_none());
    }

    #[test]
    fn message_limit_evicts() {
        let c = DataKeyCache::new(CacheLimits {
            max_messages: 2,
            ..limits()
        });
        let t = Uuid::new_v4();
        let e = entry(2);
        c.put_encryption_key(t, "p", e.clone());
        let b = crate::envelope::Binding {
            tenant: t,
            purpose: "p",
            record: "r",
        };
        for _ in 0..2 {
            let k = c.encryption_key(t, "p", 1).unwrap();
            k.key.seal(&k.dek, &b, b"x").unwrap();
        }
        assert!(c.encryption_key(t, "p", 1).is_none());
    }

    #[test]
    fn capacity_is_bounded_and_tenants_are_separate() {
        let c = DataKeyCache::new(limits());
        let (a, b, d) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        c.put_encryption_key(a, "p", entry(10));
        c.put_encryption_key(b, "p", entry(10));
        c.put_encryption_key(d, "p", entry(10));
        assert!(lock(&c.enc).len() <= 2);
        assert!(c.encryption_key(d, "p", 1).is_some());

        let r = DecryptionRef::Stored(Uuid::new_v4());
        c.put_decryption_key(
            r.clone(),
            a,
            Arc::new(DataKey::new(&Zeroizing::new([2; 32]), 1)),
        );
        assert!(c.decryption_key(&r, a).is_some());
        assert!(c.decryption_key(&r, b).is_none(), "another tenant's entry");
        c.flush_tenant(d);
        assert!(c.encryption_key(d, "p", 1).is_none());
    }

    #[test]
    fn embedded_refs_bind_everything() {
        let t = Uuid::new_v4();
        let r = DecryptionRef::embedded(t, "p", "k", b"w");
        assert_ne!(r, DecryptionRef::embedded(Uuid::new_v4(), "p", "k", b"w"));
        assert_ne!(r, DecryptionRef::embedded(t, "q", "k", b"w"));
        assert_ne!(r, DecryptionRef::embedded(t, "p", "kw", b""));
    }
}
