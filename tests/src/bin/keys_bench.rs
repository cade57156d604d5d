//! Envelope encryption under load through `KeyRing`, against a real KMS API (the moto server) or
//! the local provider, counting every call that reaches the provider.
//!
//!   keys-bench [--provider moto|local] [--endpoint URL] [--tenants 20] [--ops 100000]
//!              [--size 1024] [--concurrency 1]
//!
//! The workload: `--tenants` tenants (clinics), each with its own KEK created through the
//! provider (`CreateKey` with alias and rotation, as the key service does), all using one purpose
//! (`emr.record`). First `ops / 2` records of `--size` bytes are encrypted, record `i` belonging to
//! tenant `i % tenants` (id `P-<i>/doc`), then every one of them is decrypted, in a scattered
//! order, by its tenant. Each operation goes through `KeyRing::encrypt` / `KeyRing::decrypt` with
//! the default cache limits (300 s, 1,000,000 messages, 2^36 bytes per data key), starting with an
//! empty cache: the cold misses are part of the measured time. `--concurrency` tasks share the
//! work (1 = one operation at a time, like the AWS Encryption SDK peer in `bench/keys_esdk.py`).
//!
//! With `--provider moto` and no `--endpoint`, a moto server is started (`.venv`, see
//! `tests/src/moto.rs`); `bench/keys.sh` starts one and passes `--endpoint` so that the SDK peer
//! uses the same server. Prints one JSON object: operations, rates, the provider calls split into
//! setup (KEK creation: CreateKey, CreateAlias, EnableKeyRotation, DescribeKey,
//! GetKeyRotationStatus) and data-key calls (GenerateDataKey, Decrypt), and the cache counters.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: fail loudly

use anshin_keys::cache::CacheLimits;
use anshin_keys::provider::aws::{AwsKmsProvider, AwsSettings};
use anshin_keys::provider::local::LocalProvider;
use anshin_keys::provider::{CreateKey, KeyProvider};
use anshin_keys::ring::{Kek, KeyRing};
use anshin_tests::moto::{Moto, MOTO_REGION};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const PURPOSE: &str = "emr.record";

struct Args {
    provider: String,
    endpoint: Option<String>,
    tenants: usize,
    ops: usize,
    size: usize,
    concurrency: usize,
}

fn args() -> Args {
    let mut a = Args {
        provider: "moto".into(),
        endpoint: None,
        tenants: 20,
        ops: 100_000,
        size: 1024,
        concurrency: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let num = |v: String| -> usize { v.parse().unwrap_or_else(|_| panic!("{flag} {v}")) };
        match flag.as_str() {
            "--provider" => a.provider = value(),
            "--endpoint" => a.endpoint = Some(value()),
            "--tenants" => a.tenants = num(value()),
            "--ops" => a.ops = num(value()),
            "--size" => a.size = num(value()),
            "--concurrency" => a.concurrency = num(value()),
            "-h" | "--help" => {
                eprintln!(
                    "usage: keys-bench [--provider moto|local] [--endpoint URL] [--tenants 20] \
                     [--ops 100000] [--size 1024] [--concurrency 1]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other} (try --help)"),
        }
    }
    assert!(a.tenants >= 1 && a.ops >= 2 && a.concurrency >= 1);
    assert!(
        a.provider == "moto" || a.provider == "local",
        "--provider is moto or local"
    );
    a
}

/// The provider under test and a way to read its call counter.
struct Provider {
    dynamic: Arc<dyn KeyProvider>,
    calls: Box<dyn Fn() -> u64>,
    description: String,
    _moto: Option<Moto>,
    _dir: Option<tempfile::TempDir>,
}

async fn provider(a: &Args) -> Provider {
    if a.provider == "local" {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Arc::new(LocalProvider::open(dir.path(), None).expect("local provider"));
        let c = p.clone();
        return Provider {
            dynamic: p,
            calls: Box::new(move || c.calls()),
            description: "local (key files in a temp dir, no passphrase)".into(),
            _moto: None,
            _dir: Some(dir),
        };
    }
    let (p, moto, endpoint) = match &a.endpoint {
        Some(endpoint) => {
            let conf = aws_config::SdkConfig::builder()
                .behavior_version(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new(MOTO_REGION))
                .endpoint_url(endpoint.clone())
                .credentials_provider(
                    aws_credential_types::provider::SharedCredentialsProvider::new(
                        aws_credential_types::Credentials::new(
                            "testing", "testing", None, None, "moto",
                        ),
                    ),
                )
                .build();
            let settings = AwsSettings {
                region: MOTO_REGION.into(),
                endpoint_url: Some(endpoint.clone()),
                allow_test_endpoint: true,
                timeout: Duration::from_secs(2),
            };
            let p = AwsKmsProvider::from_sdk_config(&conf, &settings).expect("provider");
            (p, None, endpoint.clone())
        }
        None => {
            let moto = Moto::start();
            let p = moto.provider().await;
            let endpoint = moto.endpoint();
            (p, Some(moto), endpoint)
        }
    };
    let p = Arc::new(p);
    let c = p.clone();
    Provider {
        dynamic: p,
        calls: Box::new(move || c.calls()),
        description: format!("aws-kms on moto at {endpoint} (region {MOTO_REGION})"),
        _moto: moto,
        _dir: None,
    }
}

fn per_s(n: usize, d: Duration) -> f64 {
    (n as f64 / d.as_secs_f64()).round()
}

#[tokio::main]
async fn main() {
    let a = args();
    let p = provider(&a).await;

    // One KEK per tenant, created as the key service does.
    let mut keks = Vec::with_capacity(a.tenants);
    for t in 0..a.tenants {
        let tenant = Uuid::now_v7();
        let meta = p
            .dynamic
            .create_key(&CreateKey {
                alias: format!("anshin/tenant/{tenant}"),
                description: format!("keys-bench tenant {t}"),
                tags: vec![("anshin:tenant".into(), tenant.to_string())],
            })
            .await
            .expect("create KEK");
        keks.push(Kek {
            tenant,
            id: Uuid::now_v7(),
            key_id: meta.key_id,
        });
    }
    let setup_calls = (p.calls)();
    let keks = Arc::new(keks);
    let ring = Arc::new(KeyRing::new(p.dynamic.clone(), CacheLimits::default()));

    let encrypts = a.ops / 2;
    let decrypts = a.ops - encrypts;
    let plaintext: Arc<Vec<u8>> = Arc::new((0..a.size).map(|i| (i * 31 % 251) as u8).collect());
    let record = |i: usize| format!("P-{i:08}/doc");

    // Encrypt: task `w` takes records w, w + C, w + 2C, …
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..a.concurrency {
        let (ring, keks, plaintext, c) =
            (ring.clone(), keks.clone(), plaintext.clone(), a.concurrency);
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(encrypts / c + 1);
            for i in (w..encrypts).step_by(c) {
                let kek = &keks[i % keks.len()];
                let ct = ring
                    .encrypt(kek, PURPOSE, &record(i), &plaintext)
                    .await
                    .expect("encrypt");
                out.push((i, ct));
            }
            out
        }));
    }
    let mut cts: Vec<Vec<u8>> = vec![Vec::new(); encrypts];
    for t in tasks {
        for (i, ct) in t.await.expect("encrypt task") {
            cts[i] = ct;
        }
    }
    let encrypt_time = started.elapsed();
    let after_encrypt = (p.calls)();
    let envelope_bytes = cts.first().map_or(0, Vec::len);

    // Decrypt every record once, in a scattered order (a stride coprime with the count).
    let stride = (7919..).find(|s| gcd(*s, encrypts) == 1).expect("a stride");
    let cts = Arc::new(cts);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..a.concurrency {
        let (ring, keks, cts, plaintext, c) = (
            ring.clone(),
            keks.clone(),
            cts.clone(),
            plaintext.clone(),
            a.concurrency,
        );
        tasks.push(tokio::spawn(async move {
            for j in (w..decrypts).step_by(c) {
                let i = (j * stride) % encrypts;
                let kek = &keks[i % keks.len()];
                let owns = |k: &str| k == kek.key_id;
                let pt = ring
                    .decrypt(kek.tenant, &owns, PURPOSE, &record(i), &cts[i])
                    .await
                    .expect("decrypt");
                assert_eq!(pt.len(), plaintext.len());
            }
        }));
    }
    for t in tasks {
        t.await.expect("decrypt task");
    }
    let decrypt_time = started.elapsed();
    let total_calls = (p.calls)();

    let (stats, ring_calls) = ring.stats();
    let data_key_calls = total_calls - setup_calls;
    assert_eq!(
        data_key_calls, ring_calls,
        "every provider call after setup should be a data-key call counted by the ring"
    );
    let per_100k = |calls: u64| calls as f64 * 100_000.0 / a.ops as f64;
    let report = json!({
        "tool": "keys-bench",
        "provider": p.description,
        "workload": format!(
            "{} tenants x purpose {PURPOSE}: {encrypts} encrypts then {decrypts} decrypts of {}-byte records, concurrency {}",
            a.tenants, a.size, a.concurrency
        ),
        "tenants": a.tenants,
        "record_bytes": a.size,
        "envelope_bytes": envelope_bytes,
        "concurrency": a.concurrency,
        "operations": a.ops,
        "encrypts": encrypts,
        "decrypts": decrypts,
        "encrypt_seconds": encrypt_time.as_secs_f64(),
        "decrypt_seconds": decrypt_time.as_secs_f64(),
        "encrypt_ops_per_s": per_s(encrypts, encrypt_time),
        "decrypt_ops_per_s": per_s(decrypts, decrypt_time),
        "ops_per_s": per_s(a.ops, encrypt_time + decrypt_time),
        "provider_calls": {
            "setup_create_kek": setup_calls,
            "data_key": data_key_calls,
            "data_key_encrypt_phase": after_encrypt - setup_calls,
            "data_key_decrypt_phase": total_calls - after_encrypt,
            "total": total_calls,
        },
        "cache": { "hits": stats.hits, "misses": stats.misses },
        "data_key_calls_per_100k_ops": per_100k(data_key_calls),
        "data_key_calls_per_tenant": data_key_calls as f64 / a.tenants as f64,
        "ops_per_tenant": a.ops / a.tenants,
    });
    println!("{report}");
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
