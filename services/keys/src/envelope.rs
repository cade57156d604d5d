//! The Anshin envelope: a record encrypted with AES-256-GCM under a data key (DEK), with a
//! versioned header that says how to find the DEK. The format is documented in `docs/keys.md`.
//!
//! ```text
//! magic "ANSE" | version 0x01 | kind
//!   kind 0x01 (embedded DEK):  u16 len | KEK id (UTF-8) | u16 len | wrapped DEK
//!   kind 0x02 (stored DEK):    16-byte DEK id (Anshin keeps the wrapped DEK)
//! nonce (12 bytes) | ciphertext | tag (16 bytes)
//! ```
//!
//! The associated data is `"anshin-envelope/1\0" || header || context`, where the header is every
//! byte before the ciphertext and the context binds tenant, purpose and record id
//! ([`crate::provider::context_bytes`]). A ciphertext moved to another tenant or record, or with
//! any header byte changed, fails authentication.
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
pub const VERSION: u8 = 1;
const KIND_EMBEDDED: u8 = 1;
const KIND_STORED: u8 = 2;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const AAD_PREFIX: &[u8] = b"anshin-envelope/1\0";

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
        if self.record.is_empty() || self.record.len() > 256 {
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

/// A parsed envelope, borrowing the ciphertext.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub dek: DekRef,
    header: &'a [u8],
    nonce: &'a [u8],
    body: &'a [u8],
    tag: &'a [u8],
}

/// Splits an envelope into its parts. Malformed input is `InvalidCiphertext`, never a panic.
pub fn parse(ct: &[u8]) -> Result<Parsed<'_>, KeyError> {
    let bad = || KeyError::InvalidCiphertext;
    let mut r = Reader { buf: ct, pos: 0 };
    if r.take(4).ok_or_else(bad)? != MAGIC {
        return Err(bad());
    }
    if r.take(1).ok_or_else(bad)? != [VERSION] {
        return Err(KeyError::Invalid(
            "unsupported envelope version (this server reads version 1)".into(),
        ));
    }
    let dek = match r.take(1).ok_or_else(bad)?[0] {
        KIND_EMBEDDED => {
            let kl = r.u16().ok_or_else(bad)?;
            let kek_id = std::str::from_utf8(r.take(kl).ok_or_else(bad)?)
                .map_err(|_| bad())?
                .to_string();
            let wl = r.u16().ok_or_else(bad)?;
            let wrapped = r.take(wl).ok_or_else(bad)?.to_vec();
            DekRef::Embedded { kek_id, wrapped }
        }
        KIND_STORED => {
            let id = Uuid::from_slice(r.take(16).ok_or_else(bad)?).map_err(|_| bad())?;
            DekRef::Stored(id)
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

/// The same bytes as `AAD_PREFIX || header || context_bytes(binding.context())`, written without
/// building the map: this runs once per record, and the keys are fixed and already in order.
fn aad(header: &[u8], binding: &Binding<'_>) -> Vec<u8> {
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
    let ctx_len: usize = fields.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut aad = Vec::with_capacity(AAD_PREFIX.len() + header.len() + ctx_len);
    aad.extend_from_slice(AAD_PREFIX);
    aad.extend_from_slice(header);
    for (k, v) in fields {
        aad.extend_from_slice(&(k.len() as u32).to_be_bytes());
        aad.extend_from_slice(k);
        aad.extend_from_slice(&(v.len() as u32).to_be_bytes());
        aad.extend_from_slice(v);
    }
    aad
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
        let nonce = self.next_nonce().ok_or(SealError::Exhausted)?;
        let mut out = Vec::with_capacity(64 + plaintext.len() + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        dek.encode(&mut out).map_err(SealError::Key)?;
        out.extend_from_slice(&nonce);
        let header_len = out.len();
        let aad = aad(&out, binding);
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, &mut out[header_len..])
            .map_err(|_| SealError::Key(KeyError::Invalid("the record is too large".into())))?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    pub fn open(
        &self,
        parsed: &Parsed<'_>,
        binding: &Binding<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let aad = aad(parsed.header, binding);
        let mut buf = Zeroizing::new(parsed.body.to_vec());
        self.cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(parsed.nonce),
                &aad,
                &mut buf,
                Tag::from_slice(parsed.tag),
            )
            .map_err(|_| KeyError::InvalidCiphertext)?;
        Ok(buf)
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
            assert_eq!(p.dek, dek);
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
    fn the_fast_aad_matches_the_documented_one() {
        let b = binding("P-1/記録");
        let header = b"ANSE\x01\x02header";
        let mut want = AAD_PREFIX.to_vec();
        want.extend_from_slice(header);
        want.extend_from_slice(&context_bytes(&b.context()));
        assert_eq!(aad(header, &b), want);
    }

    #[test]
    fn unknown_versions_are_named() {
        let k = DataKey::new(&key(), 10);
        let mut ct = k.seal(&embedded(), &binding("r"), b"x").unwrap();
        ct[4] = 2;
        assert!(matches!(parse(&ct), Err(KeyError::Invalid(m)) if m.contains("version")));
    }
}
