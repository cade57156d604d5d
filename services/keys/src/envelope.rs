//! The Anshin envelope: a record encrypted with AES-256-GCM under a data key (DEK), with a
//! versioned header that says how to find the DEK. The format is documented in `docs/keys.md`.
//!
//! ```text
//! magic "ANSE" | version 0x02 | kind
//!   kind 0x01 (embedded DEK):  u16 len | KEK id (UTF-8) | u16 len | wrapped DEK
//!   kind 0x02 (stored DEK):    16-byte DEK id (Anshin keeps the wrapped DEK)
//! nonce (12 bytes) | ciphertext | tag (16 bytes)
//! ```
//!
//! Version 2 (written): the associated data is `bound || nonce || record id`, where
//! `bound = SHA-256("anshin-envelope/2\0" || u32 len || header || tenant (16 bytes) || u32 len ||
//! purpose)` and the header is every byte before the nonce. Everything in `bound` is the same for
//! all messages under one cached DEK, so it is hashed once per key rather than run through GHASH
//! with every record (at 1 KiB that was a fifth of the cost).
//!
//! Version 1 (still read): `"anshin-envelope/1\0" || header (nonce included) || context`, the
//! context binding tenant, purpose and record id ([`crate::provider::context_bytes`]).
//!
//! In both, a ciphertext moved to another tenant, purpose or record, or with any header byte
//! changed, fails authentication.
//!
//! Nonces are a 4-byte random prefix chosen when the DEK is created followed by a 64-bit message
//! counter. A DEK is only ever used for encryption by the process that generated it, so nonces
//! never repeat; the counter also enforces the per-DEK message limit.

use crate::error::KeyError;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};
use rand::RngCore;
use std::sync::atomic::{AtomicU64, Ordering};
use uuid::Uuid;
use zeroize::Zeroizing;

pub const MAGIC: &[u8; 4] = b"ANSE";
/// The version written.
pub const VERSION: u8 = 2;
const VERSION_1: u8 = 1;
const KIND_EMBEDDED: u8 = 1;
const KIND_STORED: u8 = 2;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const AAD_PREFIX: &[u8] = b"anshin-envelope/1\0";
const BOUND_PREFIX: &[u8] = b"anshin-envelope/2\0";
const MAX_RECORD_LEN: usize = 256;
/// Version 2's associated data: bound, nonce, record id.
const AAD_V2_MAX: usize = 32 + NONCE_LEN + MAX_RECORD_LEN;

/// What version 2 binds once per DEK, tenant and purpose (see the module documentation).
pub type Bound = [u8; 32];

/// [`Bound`] of a header (the bytes before the nonce) for a tenant and purpose.
pub fn bound(header: &[u8], tenant: Uuid, purpose: &str) -> Bound {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(BOUND_PREFIX);
    h.update((header.len() as u32).to_be_bytes());
    h.update(header);
    h.update(tenant.as_bytes());
    h.update((purpose.len() as u32).to_be_bytes());
    h.update(purpose.as_bytes());
    h.finalize().into()
}

/// Version 2's associated data, on the stack.
struct AadV2 {
    buf: [u8; AAD_V2_MAX],
    len: usize,
}

impl AadV2 {
    fn new(bound: &Bound, nonce: &[u8], record: &str) -> Result<Self, KeyError> {
        let r = record.as_bytes();
        if r.len() > MAX_RECORD_LEN || nonce.len() != NONCE_LEN {
            return Err(KeyError::Invalid(
                "the record id must be 1 to 256 bytes long".into(),
            ));
        }
        let mut buf = [0u8; AAD_V2_MAX];
        buf[..32].copy_from_slice(bound);
        buf[32..32 + NONCE_LEN].copy_from_slice(nonce);
        buf[32 + NONCE_LEN..32 + NONCE_LEN + r.len()].copy_from_slice(r);
        Ok(Self {
            buf,
            len: 32 + NONCE_LEN + r.len(),
        })
    }

    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Hard ceiling on messages under one DEK. The counter nonce makes collisions impossible below
/// 2^64; 2^32 keeps each key's use within NIST SP 800-38D's invocation guidance anyway.
pub const MAX_MESSAGES_PER_DEK: u64 = 1 << 32;

/// What a ciphertext is bound to. All three must match to decrypt.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub tenant: Uuid,
    pub purpose: &'a str,
    pub record: &'a str,
}

impl Binding<'_> {
    pub fn validate(&self) -> Result<(), KeyError> {
        validate_purpose(self.purpose)?;
        if self.record.is_empty() || self.record.len() > MAX_RECORD_LEN {
            return Err(KeyError::Invalid(
                "the record id must be 1 to 256 bytes long".into(),
            ));
        }
        Ok(())
    }

    /// The documented form of the bound context (the hot path writes the same bytes directly).
    #[cfg(test)]
    fn context(&self) -> crate::provider::EncryptionContext {
        [
            ("purpose".to_string(), self.purpose.to_string()),
            ("record".to_string(), self.record.to_string()),
            ("tenant".to_string(), self.tenant.to_string()),
        ]
        .into()
    }
}

/// Purposes name what a key protects (`emr.record`, `identity.oidc-secret`): 1–64 characters of
/// lowercase letters, digits, `.`, `_` and `-`.
pub fn validate_purpose(purpose: &str) -> Result<(), KeyError> {
    let ok = !purpose.is_empty()
        && purpose.len() <= 64
        && purpose
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(KeyError::Invalid(format!(
            "purpose '{purpose}' must be 1-64 characters of a-z, 0-9, '.', '_' and '-'"
        )))
    }
}

/// How the header refers to the DEK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DekRef {
    /// The wrapped DEK travels with the ciphertext (the data plane's records).
    Embedded { kek_id: String, wrapped: Vec<u8> },
    /// Anshin stores the wrapped DEK; rotation re-wraps it without touching ciphertexts, and
    /// crypto-erase deletes it.
    Stored(Uuid),
}

impl DekRef {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), KeyError> {
        match self {
            DekRef::Embedded { kek_id, wrapped } => {
                let too_long = |what: &str| KeyError::Invalid(format!("{what} is too long"));
                let kl = u16::try_from(kek_id.len()).map_err(|_| too_long("the KEK id"))?;
                let wl = u16::try_from(wrapped.len()).map_err(|_| too_long("the wrapped key"))?;
                out.push(KIND_EMBEDDED);
                out.extend_from_slice(&kl.to_be_bytes());
                out.extend_from_slice(kek_id.as_bytes());
                out.extend_from_slice(&wl.to_be_bytes());
                out.extend_from_slice(wrapped);
            }
            DekRef::Stored(id) => {
                out.push(KIND_STORED);
                out.extend_from_slice(id.as_bytes());
            }
        }
        Ok(())
    }
}

/// The header bytes before the nonce (`magic | version | DEK reference`). They are the same for
/// every message under one cached DEK, so the cache encodes them once.
pub fn encode_header(dek: &DekRef) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    dek.encode(&mut out)?;
    Ok(out)
}

/// A [`DekRef`] borrowed from a ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DekView<'a> {
    Embedded { kek_id: &'a str, wrapped: &'a [u8] },
    Stored(Uuid),
}

impl DekView<'_> {
    pub fn to_ref(&self) -> DekRef {
        match *self {
            DekView::Embedded { kek_id, wrapped } => DekRef::Embedded {
                kek_id: kek_id.to_string(),
                wrapped: wrapped.to_vec(),
            },
            DekView::Stored(id) => DekRef::Stored(id),
        }
    }
}

/// A parsed envelope, borrowing the ciphertext.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub dek: DekView<'a>,
    pub version: u8,
    /// Every byte before the ciphertext, nonce included.
    header: &'a [u8],
    nonce: &'a [u8],
    body: &'a [u8],
    tag: &'a [u8],
}

impl Parsed<'_> {
    /// The header without the nonce: what version 2's [`bound`] covers.
    pub fn header_before_nonce(&self) -> &[u8] {
        &self.header[..self.header.len() - NONCE_LEN]
    }
}

/// Splits an envelope into its parts. Malformed input is `InvalidCiphertext`, never a panic.
pub fn parse(ct: &[u8]) -> Result<Parsed<'_>, KeyError> {
    let bad = || KeyError::InvalidCiphertext;
    let mut r = Reader { buf: ct, pos: 0 };
    if r.take(4).ok_or_else(bad)? != MAGIC {
        return Err(bad());
    }
    let version = r.take(1).ok_or_else(bad)?[0];
    if version != VERSION && version != VERSION_1 {
        return Err(KeyError::Invalid(
            "unsupported envelope version (this server reads versions 1 and 2)".into(),
        ));
    }
    let dek = match r.take(1).ok_or_else(bad)?[0] {
        KIND_EMBEDDED => {
            let kl = r.u16().ok_or_else(bad)?;
            let kek_id = std::str::from_utf8(r.take(kl).ok_or_else(bad)?).map_err(|_| bad())?;
            let wl = r.u16().ok_or_else(bad)?;
            let wrapped = r.take(wl).ok_or_else(bad)?;
            DekView::Embedded { kek_id, wrapped }
        }
        KIND_STORED => {
            let id = Uuid::from_slice(r.take(16).ok_or_else(bad)?).map_err(|_| bad())?;
            DekView::Stored(id)
        }
        _ => return Err(bad()),
    };
    let nonce = r.take(NONCE_LEN).ok_or_else(bad)?;
    let header = &ct[..r.pos];
    let rest = &ct[r.pos..];
    if rest.len() < TAG_LEN {
        return Err(bad());
    }
    let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
    Ok(Parsed {
        dek,
        version,
        header,
        nonce,
        body,
        tag,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u16(&mut self) -> Option<usize> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]) as usize)
    }
}

/// Version 1: appends `AAD_PREFIX || header || context_bytes(binding.context())` to `out`, written without
/// building the map: this runs once per record, and the keys are fixed and already in order.
/// The header is given in parts (the sealer has the encoded DEK reference and the nonce apart).
fn append_aad_v1(out: &mut Vec<u8>, header: &[&[u8]], binding: &Binding<'_>) {
    let mut tenant = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let tenant = binding
        .tenant
        .hyphenated()
        .encode_lower(&mut tenant)
        .as_bytes();
    let fields: [(&[u8], &[u8]); 3] = [
        (b"purpose", binding.purpose.as_bytes()),
        (b"record", binding.record.as_bytes()),
        (b"tenant", tenant),
    ];
    out.extend_from_slice(AAD_PREFIX);
    for part in header {
        out.extend_from_slice(part);
    }
    for (k, v) in fields {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v);
    }
}

/// The length [`append_aad_v1`] adds for a header of `header_len` bytes.
fn aad_len_v1(header_len: usize, binding: &Binding<'_>) -> usize {
    AAD_PREFIX.len()
        + header_len
        + (8 + 7 + binding.purpose.len())
        + (8 + 6 + binding.record.len())
        + (8 + 6 + uuid::fmt::Hyphenated::LENGTH)
}

/// A plaintext data key ready to encrypt or decrypt. The key bytes and the cipher's round keys
/// are wiped when it is dropped.
pub struct DataKey {
    cipher: Aes256Gcm,
    nonce_prefix: [u8; 4],
    counter: AtomicU64,
    max_messages: u64,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("key", &"[redacted]")
            .field("used", &self.counter.load(Ordering::Relaxed))
            .finish()
    }
}

impl DataKey {
    /// `max_messages` is capped at [`MAX_MESSAGES_PER_DEK`].
    pub fn new(key: &Zeroizing<[u8; 32]>, max_messages: u64) -> Self {
        let mut nonce_prefix = [0u8; 4];
        rand::rngs::OsRng.fill_bytes(&mut nonce_prefix);
        Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.as_ref())),
            nonce_prefix,
            counter: AtomicU64::new(0),
            max_messages: max_messages.min(MAX_MESSAGES_PER_DEK),
        }
    }

    /// From unwrapped bytes, which must be 32 long.
    pub fn from_slice(bytes: &[u8], max_messages: u64) -> Result<Self, KeyError> {
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            return Err(KeyError::InvalidCiphertext);
        }
        key.copy_from_slice(bytes);
        Ok(Self::new(&key, max_messages))
    }

    /// Messages encrypted so far.
    pub fn used(&self) -> u64 {
        self.counter.load(Ordering::Relaxed)
    }

    /// Reserves the next nonce, or `None` when the message limit is reached.
    fn next_nonce(&self) -> Option<[u8; NONCE_LEN]> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        if n >= self.max_messages {
            return None;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&self.nonce_prefix);
        nonce[4..].copy_from_slice(&n.to_be_bytes());
        Some(nonce)
    }

    /// Encrypts `plaintext` into an envelope. `Err(Exhausted)` means the DEK reached its message
    /// limit and the caller must get a new one.
    pub fn seal(
        &self,
        dek: &DekRef,
        binding: &Binding<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let header = encode_header(dek).map_err(SealError::Key)?;
        let bound = bound(&header, binding.tenant, binding.purpose);
        self.seal_with_header(&header, &bound, binding.record, plaintext)
    }

    /// [`Self::seal`] with the header already encoded by [`encode_header`] and its [`bound`]
    /// computed for the binding's tenant and purpose.
    pub fn seal_with_header(
        &self,
        header: &[u8],
        bound: &Bound,
        record: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let nonce = self.next_nonce().ok_or(SealError::Exhausted)?;
        let aad = AadV2::new(bound, &nonce, record).map_err(SealError::Key)?;
        let body_start = header.len() + NONCE_LEN;
        let mut out = Vec::with_capacity(body_start + plaintext.len() + TAG_LEN);
        out.extend_from_slice(header);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .encrypt_in_place_detached(
                Nonce::from_slice(&nonce),
                aad.as_slice(),
                &mut out[body_start..],
            )
            .map_err(|_| SealError::Key(KeyError::Invalid("the record is too large".into())))?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Decrypts an envelope of either version, checking its binding.
    pub fn open(&self, parsed: &Parsed<'_>, binding: &Binding<'_>) -> Result<Plaintext, KeyError> {
        if parsed.version == VERSION_1 {
            return self.open_v1(parsed, binding);
        }
        let bound = bound(
            parsed.header_before_nonce(),
            binding.tenant,
            binding.purpose,
        );
        self.open_bound(parsed, &bound, binding.record)
    }

    /// Decrypts a version 2 envelope whose [`bound`] the caller already has (the data-key cache
    /// keeps it beside the key). A version 1 envelope is refused here.
    pub fn open_bound(
        &self,
        parsed: &Parsed<'_>,
        bound: &Bound,
        record: &str,
    ) -> Result<Plaintext, KeyError> {
        if parsed.version != VERSION {
            return Err(KeyError::InvalidCiphertext);
        }
        let aad = AadV2::new(bound, parsed.nonce, record)?;
        let mut buf = Plaintext(parsed.body.to_vec());
        self.cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(parsed.nonce),
                aad.as_slice(),
                &mut buf.0,
                Tag::from_slice(parsed.tag),
            )
            .map_err(|_| KeyError::InvalidCiphertext)?;
        Ok(buf)
    }

    fn open_v1(&self, parsed: &Parsed<'_>, binding: &Binding<'_>) -> Result<Plaintext, KeyError> {
        let body_len = parsed.body.len();
        // The plaintext buffer, with the associated data written behind the body as scratch, so
        // one allocation serves both.
        let mut buf = Plaintext(Vec::with_capacity(
            body_len + aad_len_v1(parsed.header.len(), binding),
        ));
        buf.0.extend_from_slice(parsed.body);
        append_aad_v1(&mut buf.0, &[parsed.header], binding);
        let (body, aad) = buf.0.split_at_mut(body_len);
        self.cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(parsed.nonce),
                aad,
                body,
                Tag::from_slice(parsed.tag),
            )
            .map_err(|_| KeyError::InvalidCiphertext)?;
        buf.0.truncate(body_len);
        Ok(buf)
    }

    /// A version 1 envelope, as servers before version 2 wrote them (tests of reading old data).
    #[cfg(test)]
    fn seal_v1(&self, dek: &DekRef, binding: &Binding<'_>, plaintext: &[u8]) -> Vec<u8> {
        let nonce = self.next_nonce().unwrap_or_default();
        let mut out = MAGIC.to_vec();
        out.push(VERSION_1);
        dek.encode(&mut out).unwrap_or_default();
        out.extend_from_slice(&nonce);
        let mut aad = Vec::new();
        append_aad_v1(&mut aad, &[&out], binding);
        let body_start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, &mut out[body_start..])
            .unwrap_or_default();
        out.extend_from_slice(&tag);
        out
    }
}

/// A decrypted record. Its bytes are overwritten with zeros when it is dropped: a plain fill
/// that an optimisation barrier keeps from being removed. (`Zeroizing` writes each byte
/// volatile, which for a 1 KiB record costs about as much as decrypting it.)
pub struct Plaintext(Vec<u8>);

impl std::ops::Deref for Plaintext {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl Drop for Plaintext {
    fn drop(&mut self) {
        self.0.fill(0);
        zeroize::optimization_barrier(self.0.as_slice());
    }
}

impl std::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Plaintext({} bytes)", self.0.len())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the data key reached its message limit")]
    Exhausted,
    #[error(transparent)]
    Key(KeyError),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::provider::context_bytes;

    fn key() -> Zeroizing<[u8; 32]> {
        Zeroizing::new([7u8; 32])
    }

    fn binding(record: &str) -> Binding<'_> {
        Binding {
            tenant: Uuid::from_u128(1),
            purpose: "emr.record",
            record,
        }
    }

    fn embedded() -> DekRef {
        DekRef::Embedded {
            kek_id: "local:0000".into(),
            wrapped: vec![1, 2, 3],
        }
    }

    #[test]
    fn round_trips_both_kinds() {
        let k = DataKey::new(&key(), 10);
        for dek in [embedded(), DekRef::Stored(Uuid::from_u128(9))] {
            let ct = k.seal(&dek, &binding("r1"), b"patient record").unwrap();
            let p = parse(&ct).unwrap();
            assert_eq!(p.dek.to_ref(), dek);
            assert_eq!(
                k.open(&p, &binding("r1")).unwrap().as_slice(),
                b"patient record"
            );
        }
        let empty = k.seal(&embedded(), &binding("r"), b"").unwrap();
        assert!(k
            .open(&parse(&empty).unwrap(), &binding("r"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn every_byte_is_authenticated() {
        let k = DataKey::new(&key(), 10);
        let ct = k.seal(&embedded(), &binding("r1"), b"abc").unwrap();
        for i in 0..ct.len() {
            let mut t = ct.clone();
            t[i] ^= 0x01;
            let opened = parse(&t).and_then(|p| k.open(&p, &binding("r1")));
            assert!(opened.is_err(), "flipping byte {i} went unnoticed");
        }
        // Truncations are malformed, not panics.
        for n in 0..ct.len() {
            assert!(parse(&ct[..n])
                .and_then(|p| k.open(&p, &binding("r1")))
                .is_err());
        }
    }

    #[test]
    fn binding_is_enforced() {
        let k = DataKey::new(&key(), 10);
        let ct = k.seal(&embedded(), &binding("r1"), b"abc").unwrap();
        let p = parse(&ct).unwrap();
        assert!(matches!(
            k.open(&p, &binding("r2")),
            Err(KeyError::InvalidCiphertext)
        ));
        let other_tenant = Binding {
            tenant: Uuid::from_u128(2),
            ..binding("r1")
        };
        assert!(k.open(&p, &other_tenant).is_err());
        let other_purpose = Binding {
            purpose: "identity.oidc-secret",
            ..binding("r1")
        };
        assert!(k.open(&p, &other_purpose).is_err());
    }

    #[test]
    fn nonces_are_unique_and_the_limit_holds() {
        let k = DataKey::new(&key(), 3);
        let mut nonces = std::collections::HashSet::new();
        for _ in 0..3 {
            let ct = k.seal(&embedded(), &binding("r"), b"x").unwrap();
            assert!(nonces.insert(parse(&ct).unwrap().nonce.to_vec()));
        }
        assert!(matches!(
            k.seal(&embedded(), &binding("r"), b"x"),
            Err(SealError::Exhausted)
        ));
        assert_eq!(
            DataKey::new(&key(), u64::MAX).max_messages,
            MAX_MESSAGES_PER_DEK
        );
    }

    #[test]
    fn purposes_and_records_are_validated() {
        assert!(validate_purpose("emr.record").is_ok());
        assert!(validate_purpose("").is_err());
        assert!(validate_purpose("EMR").is_err());
        assert!(validate_purpose(&"a".repeat(65)).is_err());
        assert!(binding("").validate().is_err());
        let long = "r".repeat(257);
        assert!(binding(&long).validate().is_err());
    }

    #[test]
    fn version_1_envelopes_still_open_with_their_binding() {
        let k = DataKey::new(&key(), 10);
        for dek in [embedded(), DekRef::Stored(Uuid::from_u128(9))] {
            let ct = k.seal_v1(&dek, &binding("r1"), b"written by an older server");
            let p = parse(&ct).unwrap();
            assert_eq!(p.version, 1);
            assert_eq!(
                k.open(&p, &binding("r1")).unwrap().as_slice(),
                b"written by an older server"
            );
            assert!(k.open(&p, &binding("r2")).is_err());
            // The cached-bound path is for version 2 only.
            assert!(k.open_bound(&p, &[0; 32], "r1").is_err());
            for i in 0..ct.len() {
                let mut t = ct.clone();
                t[i] ^= 0x01;
                let opened = parse(&t).and_then(|p| k.open(&p, &binding("r1")));
                assert!(opened.is_err(), "flipping byte {i} went unnoticed");
            }
        }
    }

    #[test]
    fn the_cached_bound_is_the_one_the_header_gives() {
        let k = DataKey::new(&key(), 10);
        let b = binding("r1");
        let header = encode_header(&embedded()).unwrap();
        let ct = k.seal(&embedded(), &b, b"x").unwrap();
        let p = parse(&ct).unwrap();
        assert_eq!(p.version, VERSION);
        assert_eq!(p.header_before_nonce(), header.as_slice());
        let good = bound(&header, b.tenant, b.purpose);
        assert_eq!(k.open_bound(&p, &good, "r1").unwrap().as_slice(), b"x");
        assert!(k.open_bound(&p, &good, "r2").is_err());
        let other_tenant = bound(&header, Uuid::from_u128(2), b.purpose);
        assert!(k.open_bound(&p, &other_tenant, "r1").is_err());
        let other_purpose = bound(&header, b.tenant, "emr.other");
        assert!(k.open_bound(&p, &other_purpose, "r1").is_err());
    }

    #[test]
    fn the_fast_aad_matches_the_documented_one() {
        let b = binding("P-1/記録");
        let header = b"ANSE\x01\x02header";
        let mut want = AAD_PREFIX.to_vec();
        want.extend_from_slice(header);
        want.extend_from_slice(&context_bytes(&b.context()));
        let mut got = Vec::new();
        append_aad_v1(&mut got, &[&header[..6], &header[6..]], &b);
        assert_eq!(got, want);
        assert_eq!(aad_len_v1(header.len(), &b), want.len());
    }

    #[test]
    fn unknown_versions_are_named() {
        let k = DataKey::new(&key(), 10);
        let mut ct = k.seal(&embedded(), &binding("r"), b"x").unwrap();
        ct[4] = 3;
        assert!(matches!(parse(&ct), Err(KeyError::Invalid(m)) if m.contains("version")));
    }
}
