//! The data-key cache: keeps plaintext DEKs in memory for a bounded time and use, so the data
//! plane does not call KMS per record. Limits follow the AWS Encryption SDK's caching
//! cryptographic materials manager: maximum age, messages and bytes per cached key, and a bound on
//! the number of entries. Encryption entries are per (tenant, purpose); decryption entries are per
//! wrapped DEK.
//!
//! Every record looks the cache up, so lookups borrow their keys (no allocation) and the maps use
//! hashbrown's foldhash, seeded per process: the embedded wrapped DEKs come from callers, and a
//! per-process seed keeps them from choosing colliding keys.

use crate::envelope::{self, Binding, Bound, DataKey, DekRef, SealError};
use crate::error::KeyError;
use hashbrown::{Equivalent, HashMap};
use std::hash::{Hash, Hasher};
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
    /// `dek` encoded once as the envelope header, for every message under this key.
    header: Box<[u8]>,
    /// The tenant and purpose this key encrypts for, and the envelope's [`Bound`] for them.
    tenant: Uuid,
    purpose: Box<str>,
    bound: Bound,
    created: Instant,
    bytes: AtomicU64,
}

impl EncryptionKey {
    /// A key for messages of `tenant` and `purpose` (the binding's purpose, which for stored
    /// DEKs differs from the cache slot's name).
    pub fn new(
        key: DataKey,
        dek: DekRef,
        kek: Uuid,
        tenant: Uuid,
        purpose: &str,
    ) -> Result<Self, KeyError> {
        let header = envelope::encode_header(&dek)?;
        Ok(Self {
            bound: envelope::bound(&header, tenant, purpose),
            header: header.into(),
            tenant,
            purpose: purpose.into(),
            key,
            dek,
            kek,
            created: Instant::now(),
            bytes: AtomicU64::new(0),
        })
    }

    /// Encrypts one message under this key.
    pub fn seal(&self, binding: &Binding<'_>, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        if binding.tenant == self.tenant && binding.purpose == &*self.purpose {
            self.key
                .seal_with_header(&self.header, &self.bound, binding.record, plaintext)
        } else {
            let bound = envelope::bound(&self.header, binding.tenant, binding.purpose);
            self.key
                .seal_with_header(&self.header, &bound, binding.record, plaintext)
        }
    }
}

#[derive(Debug)]
struct DecryptionKey {
    key: Arc<DataKey>,
    tenant: Uuid,
    created: Instant,
}

/// A decryption entry of a DEK Anshin stores, by its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecryptionRef {
    Stored(Uuid),
}

/// The owned key of an embedded wrapped DEK's entry: the wrapped bytes with everything they were
/// bound to, compared in full (no digest to collide).
#[derive(Debug, PartialEq, Eq)]
struct EmbeddedKey {
    tenant: Uuid,
    purpose: Box<str>,
    kek_id: Box<str>,
    wrapped: Box<[u8]>,
}

/// The borrowed form a lookup uses.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedRef<'a> {
    pub tenant: Uuid,
    pub purpose: &'a str,
    pub kek_id: &'a str,
    pub wrapped: &'a [u8],
}

impl EmbeddedRef<'_> {
    fn hash_parts<H: Hasher>(
        tenant: &Uuid,
        purpose: &str,
        kek_id: &str,
        wrapped: &[u8],
        h: &mut H,
    ) {
        tenant.hash(h);
        purpose.hash(h);
        kek_id.hash(h);
        wrapped.hash(h);
    }

    fn to_owned_key(self) -> EmbeddedKey {
        EmbeddedKey {
            tenant: self.tenant,
            purpose: self.purpose.into(),
            kek_id: self.kek_id.into(),
            wrapped: self.wrapped.into(),
        }
    }
}

// Both forms hash the same parts in the same order, as `Equivalent` requires.
impl Hash for EmbeddedKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        EmbeddedRef::hash_parts(&self.tenant, &self.purpose, &self.kek_id, &self.wrapped, h);
    }
}

impl Hash for EmbeddedRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        EmbeddedRef::hash_parts(&self.tenant, self.purpose, self.kek_id, self.wrapped, h);
    }
}

impl Equivalent<EmbeddedKey> for EmbeddedRef<'_> {
    fn equivalent(&self, k: &EmbeddedKey) -> bool {
        self.tenant == k.tenant
            && self.wrapped == &*k.wrapped
            && self.kek_id == &*k.kek_id
            && self.purpose == &*k.purpose
    }
}

/// An encryption slot: (tenant, slot name).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    tenant: Uuid,
    purpose: Box<str>,
}

#[derive(Debug, Clone, Copy)]
struct SlotRef<'a> {
    tenant: Uuid,
    purpose: &'a str,
}

impl Hash for Slot {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.tenant.hash(h);
        (*self.purpose).hash(h);
    }
}

impl Hash for SlotRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.tenant.hash(h);
        self.purpose.hash(h);
    }
}

impl Equivalent<Slot> for SlotRef<'_> {
    fn equivalent(&self, k: &Slot) -> bool {
        self.tenant == k.tenant && self.purpose == &*k.purpose
    }
}

impl SlotRef<'_> {
    fn to_owned_slot(self) -> Slot {
        Slot {
            tenant: self.tenant,
            purpose: self.purpose.into(),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
}

pub struct DataKeyCache {
    limits: CacheLimits,
    enc: Mutex<HashMap<Slot, Arc<EncryptionKey>>>,
    dec: Mutex<HashMap<DecryptionRef, DecryptionKey>>,
    embedded: Mutex<HashMap<EmbeddedKey, (DecryptionKey, Bound)>>,
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

trait Aged {
    fn created(&self) -> Instant;
}

impl Aged for DecryptionKey {
    fn created(&self) -> Instant {
        self.created
    }
}

impl Aged for (DecryptionKey, Bound) {
    fn created(&self) -> Instant {
        self.0.created
    }
}

/// Keeps a decryption map under its capacity: expired entries go first, then the oldest.
fn make_room<K: Eq + Hash, V: Aged>(map: &mut HashMap<K, V>, limits: CacheLimits) {
    if map.len() < limits.capacity {
        return;
    }
    map.retain(|_, e| e.created().elapsed() < limits.max_age);
    while map.len() >= limits.capacity {
        let Some(oldest) = map.values().map(Aged::created).min() else {
            return;
        };
        map.retain(|_, e| e.created() != oldest);
    }
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
            embedded: Mutex::new(HashMap::new()),
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
            entries: (lock(&self.enc).len() + lock(&self.dec).len() + lock(&self.embedded).len())
                as u64,
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
        let slot = SlotRef { tenant, purpose };
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
            self.evict_encryption(tenant, purpose, &e);
        }
        if count {
            self.miss("encrypt");
        }
        None
    }

    /// Drops `entry` from its slot if it is still the one cached (another thread may have
    /// replaced it already).
    pub fn evict_encryption(&self, tenant: Uuid, purpose: &str, entry: &Arc<EncryptionKey>) {
        let slot = SlotRef { tenant, purpose };
        let mut enc = lock(&self.enc);
        if enc.get(&slot).is_some_and(|cur| Arc::ptr_eq(cur, entry)) {
            enc.remove(&slot);
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
        enc.insert(SlotRef { tenant, purpose }.to_owned_slot(), key);
    }

    /// The lock that serialises refills of one encryption slot.
    pub fn fill_lock(&self, tenant: Uuid, purpose: &str) -> Arc<tokio::sync::Mutex<()>> {
        let slot = SlotRef { tenant, purpose };
        let mut fills = lock(&self.fills);
        if let Some(l) = fills.get(&slot) {
            return l.clone();
        }
        fills.entry(slot.to_owned_slot()).or_default().clone()
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
        make_room(&mut dec, self.limits);
        dec.insert(
            r,
            DecryptionKey {
                key,
                tenant,
                created: Instant::now(),
            },
        );
    }

    /// The cached DEK of an embedded wrapped key, if it is fresh, with the version 2 envelope
    /// [`Bound`] of its header, tenant and purpose.
    pub fn embedded_key(&self, r: &EmbeddedRef<'_>) -> Option<(Arc<DataKey>, Bound)> {
        let mut dec = lock(&self.embedded);
        match dec.get(r) {
            Some((e, bound)) if e.created.elapsed() < self.limits.max_age => {
                let k = (e.key.clone(), *bound);
                drop(dec);
                self.hit("decrypt");
                Some(k)
            }
            Some(_) => {
                dec.remove(r);
                drop(dec);
                self.miss("decrypt");
                None
            }
            None => {
                drop(dec);
                self.miss("decrypt");
                None
            }
        }
    }

    /// Caches an unwrapped embedded DEK; returns the [`Bound`] its envelopes are checked with.
    pub fn put_embedded_key(
        &self,
        r: &EmbeddedRef<'_>,
        key: Arc<DataKey>,
    ) -> Result<Bound, KeyError> {
        let header = envelope::encode_header(&DekRef::Embedded {
            kek_id: r.kek_id.to_string(),
            wrapped: r.wrapped.to_vec(),
        })?;
        let bound = envelope::bound(&header, r.tenant, r.purpose);
        let mut dec = lock(&self.embedded);
        make_room(&mut dec, self.limits);
        dec.insert(
            r.to_owned_key(),
            (
                DecryptionKey {
                    key,
                    tenant: r.tenant,
                    created: Instant::now(),
                },
                bound,
            ),
        );
        Ok(bound)
    }

    /// Forgets every key of a tenant: after a KEK rotation, a disable or a crypto-erase, nothing
    /// may keep working from memory.
    pub fn flush_tenant(&self, tenant: Uuid) {
        lock(&self.enc).retain(|s, _| s.tenant != tenant);
        lock(&self.dec).retain(|_, e| e.tenant != tenant);
        lock(&self.embedded).retain(|_, (e, _)| e.tenant != tenant);
    }

    pub fn flush_all(&self) {
        lock(&self.enc).clear();
        lock(&self.dec).clear();
        lock(&self.embedded).clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use zeroize::Zeroizing;

    fn entry(max_messages: u64) -> Arc<EncryptionKey> {
        Arc::new(
            EncryptionKey::new(
                DataKey::new(&Zeroizing::new([1u8; 32]), max_messages),
                DekRef::Stored(Uuid::new_v4()),
                Uuid::nil(),
                Uuid::nil(),
                "p",
            )
            .unwrap(),
        )
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
            k.seal(&b, b"x").unwrap();
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
        c.put_decryption_key(r, a, Arc::new(DataKey::new(&Zeroizing::new([2; 32]), 1)));
        assert!(c.decryption_key(&r, a).is_some());
        assert!(c.decryption_key(&r, b).is_none(), "another tenant's entry");
        c.flush_tenant(d);
        assert!(c.encryption_key(d, "p", 1).is_none());
    }

    #[test]
    fn embedded_entries_match_every_part() {
        let c = DataKeyCache::new(limits());
        let t = Uuid::new_v4();
        let r = EmbeddedRef {
            tenant: t,
            purpose: "p",
            kek_id: "k",
            wrapped: b"w",
        };
        let bound = c
            .put_embedded_key(&r, Arc::new(DataKey::new(&Zeroizing::new([3; 32]), 0)))
            .unwrap();
        assert_eq!(c.embedded_key(&r).unwrap().1, bound);
        for other in [
            EmbeddedRef {
                tenant: Uuid::new_v4(),
                ..r
            },
            EmbeddedRef { purpose: "q", ..r },
            EmbeddedRef {
                kek_id: "kw",
                wrapped: b"",
                ..r
            },
            EmbeddedRef { wrapped: b"x", ..r },
        ] {
            assert!(c.embedded_key(&other).is_none(), "{other:?}");
        }
        c.flush_tenant(t);
        assert!(c.embedded_key(&r).is_none());
    }

    #[test]
    fn decryption_capacity_is_bounded() {
        let c = DataKeyCache::new(limits());
        let t = Uuid::new_v4();
        for w in [b"a", b"b", b"c"] {
            let r = EmbeddedRef {
                tenant: t,
                purpose: "p",
                kek_id: "k",
                wrapped: w,
            };
            c.put_embedded_key(&r, Arc::new(DataKey::new(&Zeroizing::new([3; 32]), 0)))
                .unwrap();
        }
        assert!(lock(&c.embedded).len() <= 2);
    }
}
