//! Offline verification of an export of 1,000,000 events, beside raw SHA-256 over the same
//! entry lines (the ceiling: a verifier must hash every byte at least once).
//!
//!     cargo bench -p anshin-audit --bench verify
//!
//! The export (a log of 1,001,000 events sealed in checkpoints of 1,000, entries 500..1,000,500
//! exported, so both left and right subtrees are used) is generated once in a temp file.

use anshin_audit::assemble::{select_rows, write_export, CheckpointRow, ExportParts};
use anshin_audit::checkpoint::CheckpointBody;
use anshin_audit::entry::{encode_raw, GENESIS_PREV};
use anshin_audit::event::{Actor, ActorKind, AuditEvent, ClockStamp, Outcome, Source, Target};
use anshin_audit::merkle::{leaf_hash, Frontier, Hash};
use anshin_audit::{canonical, verify, LocalSigner, Signer};
use base64::Engine;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use uuid::Uuid;

const LOG_SIZE: u64 = 1_001_000;
const BATCH: u64 = 1_000;
const FIRST: u64 = 500;
const LAST: u64 = FIRST + 1_000_000;

const ID: &str = "00000000-0000-7000-8000-00000000d00d";
const PATIENT: &str = "P-PATIENT";

/// A typical medical-record access event (`record.open` by a clinician, from the EMR), in
/// canonical form, with placeholders for what varies.
fn template(log: Uuid) -> String {
    let mut e = AuditEvent::new(
        log,
        Actor {
            kind: ActorKind::User,
            id: Some(Uuid::now_v7().to_string()),
            label: Some("yamada.taro@clinic-example.jp".into()),
            tenant_id: Some(log),
            role: Some("clinician".into()),
            session_id: Some(Uuid::now_v7()),
            grant_id: None,
        },
        "record.open",
        Outcome::Success,
    )
    .target(Target::new("patient_record", PATIENT))
    .source(Source::new(
        Some("10.20.30.40".into()),
        Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"),
        Some("6f1c2a8e-5b1d-4c3e-9a7f-2d4b6c8e0f12"),
    ))
    .detail("duration_s", 42)
    .detail("sections", ["allergies", "medications"]);
    e.id = ID.parse().unwrap_or_default();
    e.clock = ClockStamp {
        source: "ntp:ntp.nict.jp:123".into(),
        offset_ms: Some(3),
    };
    canonical::to_string(&e).unwrap_or_default()
}

fn event(template: &str, seq: u64) -> String {
    template
        .replacen(ID, &format!("0190f5a1-0000-7000-8000-{seq:012x}"), 1)
        .replacen(PATIENT, &format!("P-{:08}", seq * 7919 % 100_000_000), 1)
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    key: anshin_audit::PublicKeyInfo,
}

/// The entry lines `[0, n)` of a log, chained.
fn lines(log: Uuid, n: u64) -> (Vec<Hash>, impl Fn(u64, &Hash) -> String) {
    let template = template(log);
    let line = move |seq: u64, prev: &Hash| encode_raw(log, seq, prev, &event(&template, seq));
    let mut leaves: Vec<Hash> = Vec::with_capacity(n as usize);
    let mut prev = GENESIS_PREV;
    for seq in 0..n {
        prev = leaf_hash(line(seq, &prev).as_bytes());
        leaves.push(prev);
    }
    (leaves, line)
}

/// 100,000 entry lines, for the SHA-256 ceiling and the parts of the work.
fn sample() -> Vec<String> {
    let (leaves, line) = lines(Uuid::now_v7(), 100_001);
    (1..=100_000)
        .map(|s| line(s, &leaves[s as usize - 1]))
        .collect()
}

fn fixture() -> Fixture {
    let log = Uuid::now_v7();
    let signer = LocalSigner::from_seed(&[5u8; 32]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let (leaves, line) = lines(log, LOG_SIZE);
    let mut rows = Vec::new();
    let mut frontier = Frontier::default();
    for leaf in &leaves {
        frontier.push(*leaf);
        if frontier.size().is_multiple_of(BATCH) {
            let body = CheckpointBody::new(
                log,
                frontier.size(),
                &frontier.root(),
                ClockStamp::default(),
                &signer.key_id(),
            )
            .encode()
            .unwrap_or_default();
            let sig = rt
                .block_on(signer.sign(body.as_bytes()))
                .unwrap_or_default();
            rows.push(CheckpointRow {
                tree_size: frontier.size(),
                signature: base64::engine::general_purpose::STANDARD.encode(sig),
                body,
                timestamp_token: None,
            });
        }
    }
    let checkpoints = select_rows(&rows, FIRST, LAST);
    let keys = [signer.public_key()];
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("export.jsonl");
    let file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
    let entries = (FIRST..LAST).map(|seq| line(seq, &leaves[seq as usize - 1]));
    let parts = ExportParts {
        log,
        from: None,
        to: None,
        first: FIRST,
        last: LAST,
        exported_at: chrono::Utc::now(),
        leaves: &leaves,
        checkpoints: &checkpoints,
        keys: &keys,
    };
    write_export(file, &parts, entries).unwrap_or_else(|e| panic!("{e}"));
    let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    eprintln!(
        "export: {} entries, {} checkpoints, {bytes} bytes ({} bytes per line on average)",
        LAST - FIRST,
        checkpoints.len(),
        bytes / (LAST - FIRST)
    );
    Fixture {
        _dir: dir,
        path,
        key: signer.public_key(),
    }
}

fn run_verify(path: &Path, key: &anshin_audit::PublicKeyInfo, threads: usize) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{e}"));
    let report = verify::verify_with_threads(
        BufReader::with_capacity(1 << 20, file),
        Some(std::slice::from_ref(key)),
        threads,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.entries, LAST - FIRST);
    black_box(report);
}

/// Leaf hashes of `lines` on `threads` threads.
fn sha256_leaves(lines: &[String], threads: usize) -> Hash {
    let per = lines.len().div_ceil(threads);
    std::thread::scope(|s| {
        let hs: Vec<_> = lines
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    let mut x = [0u8; 32];
                    for l in part {
                        let h = leaf_hash(l.as_bytes());
                        x[0] ^= h[0];
                    }
                    x
                })
            })
            .collect();
        let mut x = [0u8; 32];
        for h in hs {
            if let Ok(h) = h.join() {
                x[0] ^= h[0];
            }
        }
        x
    })
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct LineFields<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a str>,
    #[serde(borrow)]
    log: Option<&'a str>,
    seq: Option<u64>,
    #[serde(borrow)]
    prev: Option<&'a str>,
    event: Option<serde::de::IgnoredAny>,
}

fn benches(c: &mut Criterion) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let export = std::sync::OnceLock::new();

    let mut g = c.benchmark_group("verify_export_1m");
    g.sample_size(10);
    g.measurement_time(std::time::Duration::from_secs(30));
    g.throughput(Throughput::Elements(LAST - FIRST));
    for t in [threads, 1] {
        g.bench_with_input(BenchmarkId::new("threads", t), &t, |b, &t| {
            let f = export.get_or_init(fixture);
            b.iter(|| run_verify(&f.path, &f.key, t))
        });
    }
    g.finish();

    let sample = sample();
    let bytes: u64 = sample.iter().map(|l| l.len() as u64).sum();
    eprintln!(
        "sample: {} entry lines, {bytes} bytes ({} per line)",
        sample.len(),
        bytes / sample.len() as u64
    );
    let mut g = c.benchmark_group("sha256_leaf_ceiling");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(bytes));
    for t in [threads, 1] {
        g.bench_with_input(BenchmarkId::new("threads", t), &t, |b, &t| {
            b.iter(|| black_box(sha256_leaves(&sample, t)))
        });
    }
    g.finish();

    // SHA-256 leaf hashes of lines of other typical sizes, one thread.
    let mut g = c.benchmark_group("sha256_leaf_by_size");
    g.sample_size(20);
    for size in [256usize, 512, 1024, 2048] {
        let lines: Vec<String> = (0..20_000).map(|i| format!("{i:0size$}")).collect();
        g.throughput(Throughput::Bytes((size * lines.len()) as u64));
        g.bench_with_input(BenchmarkId::new("bytes", size), &lines, |b, lines| {
            b.iter(|| black_box(sha256_leaves(lines, 1)))
        });
    }
    g.finish();

    // The parts of the per-line work, on one thread.
    let mut g = c.benchmark_group("per_line_100k");
    g.sample_size(20);
    g.throughput(Throughput::Elements(sample.len() as u64));
    g.bench_function("serde_fields_ignored_any", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for l in &sample {
                if let Ok(x) = serde_json::from_str::<LineFields>(l) {
                    n += x.seq.unwrap_or_default();
                }
            }
            black_box(n)
        })
    });
    g.bench_function("line_fields_fast_path", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for l in &sample {
                if let Ok(verify::LineFieldsOf::Entry { seq, .. }) =
                    verify::line_fields(l.as_bytes())
                {
                    n += seq;
                }
            }
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(verify_benches, benches);
criterion_main!(verify_benches);
