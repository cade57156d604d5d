//! Envelope encryption through [`KeyRing`] beside raw AES-256-GCM from the same `aes-gcm` crate
//! (the ceiling: the library must at least run AES-GCM over every byte once).
//!
//!     cargo bench -p anshin-keys --bench envelope
//!
//! For 1 KiB and 64 KiB records, one thread:
//! - `raw_aes_gcm/encrypt`: `Aes256Gcm::encrypt` with a fresh random 96-bit nonce per message
//!   (from `rand::thread_rng`, a user-space CSPRNG, so the ceiling pays no syscall) and a 48-byte
//!   associated data naming tenant, purpose and record; `raw_aes_gcm/decrypt` opens it.
//!   `raw_aes_gcm/encrypt_in_place` is the cipher alone (`encrypt_in_place_detached` on a reused
//!   buffer: no allocation, no copy).
//! - `keyring/encrypt` and `keyring/decrypt`: `KeyRing::encrypt` / `KeyRing::decrypt` with the
//!   local provider and the default cache limits. The cache is warmed first, so this is the steady
//!   state: no provider call, one cache lookup, the envelope header, the associated data binding
//!   tenant, purpose and record, and AES-256-GCM. Operations run back to back inside one
//!   current-thread Tokio runtime (`iter_custom`), so no per-operation `block_on` is measured.

use aes_gcm::aead::{Aead, AeadCore, AeadInPlace, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use anshin_keys::cache::CacheLimits;
use anshin_keys::provider::local::LocalProvider;
use anshin_keys::provider::{CreateKey, KeyProvider};
use anshin_keys::ring::{Kek, KeyRing};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const PURPOSE: &str = "emr.record";
/// A realistic record id: patient and document.
const RECORD: &str = "P-00012345/doc-0042";
const SIZES: [(usize, &str); 2] = [(1024, "1KiB"), (64 * 1024, "64KiB")];

struct Fixture {
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    ring: KeyRing,
    kek: Kek,
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let provider =
        Arc::new(LocalProvider::open(dir.path(), None).unwrap_or_else(|e| panic!("{e}")));
    let meta = rt
        .block_on(provider.create_key(&CreateKey {
            alias: "anshin/tenant/bench".into(),
            description: "envelope bench".into(),
            tags: vec![],
        }))
        .unwrap_or_else(|e| panic!("{e}"));
    let kek = Kek {
        tenant: Uuid::now_v7(),
        id: Uuid::now_v7(),
        key_id: meta.key_id,
    };
    let ring = KeyRing::new(provider, CacheLimits::default());
    Fixture {
        _dir: dir,
        rt,
        ring,
        kek,
    }
}

fn benches(c: &mut Criterion) {
    let f = fixture();
    let mut rng = rand::thread_rng();
    let raw = Aes256Gcm::new(&Aes256Gcm::generate_key(&mut rng));
    let aad = format!("{}/{PURPOSE}/{RECORD}", f.kek.tenant);
    let aad = &aad.as_bytes()[..48.min(aad.len())];
    let owns = |k: &str| k == f.kek.key_id;

    for (size, label) in SIZES {
        let plaintext: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();

        let mut g = c.benchmark_group(format!("envelope_{label}"));
        g.throughput(Throughput::Bytes(size as u64));
        g.measurement_time(Duration::from_secs(3));
        g.warm_up_time(Duration::from_secs(1));
        g.sample_size(50);

        g.bench_function(BenchmarkId::new("raw_aes_gcm", "encrypt"), |b| {
            b.iter(|| {
                let nonce = Aes256Gcm::generate_nonce(&mut rand::thread_rng());
                let ct = raw
                    .encrypt(
                        &nonce,
                        Payload {
                            msg: black_box(&plaintext),
                            aad,
                        },
                    )
                    .unwrap_or_else(|e| panic!("{e}"));
                black_box((nonce, ct))
            })
        });

        // The cipher alone: in place on a reused buffer, no allocation or copy (a stricter
        // ceiling than the `Payload` API, whose copy into a fresh `Vec` varies with alignment).
        let mut buf = plaintext.clone();
        g.bench_function(BenchmarkId::new("raw_aes_gcm", "encrypt_in_place"), |b| {
            b.iter(|| {
                let nonce = Aes256Gcm::generate_nonce(&mut rand::thread_rng());
                let tag = raw
                    .encrypt_in_place_detached(&nonce, aad, black_box(&mut buf))
                    .unwrap_or_else(|e| panic!("{e}"));
                black_box(tag)
            })
        });

        let nonce = Aes256Gcm::generate_nonce(&mut rng);
        let sealed = raw
            .encrypt(
                &nonce,
                Payload {
                    msg: &plaintext,
                    aad,
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
        g.bench_function(BenchmarkId::new("raw_aes_gcm", "decrypt"), |b| {
            b.iter(|| {
                let pt = raw
                    .decrypt(
                        black_box(&nonce),
                        Payload {
                            msg: black_box(&sealed),
                            aad,
                        },
                    )
                    .unwrap_or_else(|e| panic!("{e}"));
                black_box(pt)
            })
        });

        // Warm both directions of the cache (one provider call each). The measured loops then
        // only call the provider when a DEK reaches its message limit (1,000,000 by default).
        let ct =
            f.rt.block_on(f.ring.encrypt(&f.kek, PURPOSE, RECORD, &plaintext))
                .unwrap_or_else(|e| panic!("{e}"));
        let back =
            f.rt.block_on(f.ring.decrypt(f.kek.tenant, &owns, PURPOSE, RECORD, &ct))
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.as_slice(), plaintext.as_slice());
        let (_, calls_before) = f.ring.stats();

        g.bench_function(BenchmarkId::new("keyring", "encrypt"), |b| {
            b.iter_custom(|iters| {
                f.rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let ct = f
                            .ring
                            .encrypt(&f.kek, PURPOSE, black_box(RECORD), black_box(&plaintext))
                            .await
                            .unwrap_or_else(|e| panic!("{e}"));
                        black_box(ct);
                    }
                    started.elapsed()
                })
            })
        });

        g.bench_function(BenchmarkId::new("keyring", "decrypt"), |b| {
            b.iter_custom(|iters| {
                f.rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let pt = f
                            .ring
                            .decrypt(
                                f.kek.tenant,
                                &owns,
                                PURPOSE,
                                black_box(RECORD),
                                black_box(&ct),
                            )
                            .await
                            .unwrap_or_else(|e| panic!("{e}"));
                        black_box(pt);
                    }
                    started.elapsed()
                })
            })
        });
        g.finish();

        let (stats, calls) = f.ring.stats();
        eprintln!(
            "{label}: envelope of {} bytes for {size} bytes of plaintext ({} bytes of overhead); \
             cache {} hits, {} misses so far; {} provider data-key calls while measuring",
            ct.len(),
            ct.len() - size,
            stats.hits,
            stats.misses,
            calls - calls_before
        );
    }
}

criterion_group!(envelope_benches, benches);
criterion_main!(envelope_benches);
