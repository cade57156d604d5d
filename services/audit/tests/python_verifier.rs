//! The independent verifier (`tests/python/verify_audit.py`, written from
//! `docs/audit-verification.md` with hashlib and `cryptography` only) accepts what Anshin
//! exports and rejects a tampered export, naming the offending entry.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use anshin_audit::assemble::{select_rows, write_export, CheckpointRow, ExportParts};
use anshin_audit::checkpoint::CheckpointBody;
use anshin_audit::entry::{encode_raw, GENESIS_PREV};
use anshin_audit::merkle::{leaf_hash, Frontier, Hash};
use anshin_audit::{verify, ClockStamp, LocalSigner, Signer};
use base64::Engine;
use std::path::{Path, PathBuf};
use std::process::Command;
use uuid::Uuid;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Log {
    log: Uuid,
    entries: Vec<String>,
    leaves: Vec<Hash>,
    rows: Vec<CheckpointRow>,
    signer: LocalSigner,
}

async fn build(batches: &[u64]) -> Log {
    let log = Uuid::now_v7();
    let signer = LocalSigner::from_seed(&[3u8; 32]);
    let (mut entries, mut leaves, mut rows) = (Vec::new(), Vec::new(), Vec::new());
    let mut frontier = Frontier::default();
    let mut prev = GENESIS_PREV;
    for &b in batches {
        for _ in 0..b {
            let seq = frontier.size();
            let event = format!(
                r#"{{"action":"record.open","actor":{{"id":"u{seq}","kind":"user"}},"details":{{"note":"患者記録 {seq}"}},"id":"{}","outcome":"success","tenant_id":"{log}"}}"#,
                Uuid::now_v7()
            );
            let line = encode_raw(log, seq, &prev, &event);
            prev = leaf_hash(line.as_bytes());
            frontier.push(prev);
            leaves.push(prev);
            entries.push(line);
        }
        let body = CheckpointBody::new(
            log,
            frontier.size(),
            &frontier.root(),
            ClockStamp::default(),
            &signer.key_id(),
        )
        .encode()
        .unwrap();
        let sig = signer.sign(body.as_bytes()).await.unwrap();
        rows.push(CheckpointRow {
            tree_size: frontier.size(),
            signature: base64::engine::general_purpose::STANDARD.encode(sig),
            body,
            timestamp_token: None,
        });
    }
    Log {
        log,
        entries,
        leaves,
        rows,
        signer,
    }
}

fn export(l: &Log, first: u64, last: u64) -> Vec<String> {
    let checkpoints = select_rows(&l.rows, first, last);
    let keys = [l.signer.public_key()];
    let parts = ExportParts {
        log: l.log,
        from: None,
        to: None,
        first,
        last,
        exported_at: chrono::Utc::now(),
        leaves: &l.leaves,
        checkpoints: &checkpoints,
        keys: &keys,
    };
    let mut out = Vec::new();
    write_export(&mut out, &parts, &l.entries[first as usize..last as usize]).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Runs the Python verifier; `None` when the virtualenv is missing.
fn python(lines: &[String], public_key: Option<&str>) -> Option<(bool, String)> {
    let root = workspace_root();
    let py = root.join(".venv/bin/python");
    if !py.exists() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let mut cmd = Command::new(py);
    cmd.arg(root.join("tests/python/verify_audit.py"))
        .arg(&path);
    if let Some(k) = public_key {
        cmd.arg("--public-key").arg(k);
    }
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    Some((out.status.success(), text))
}

fn rust(lines: &[String]) -> Result<verify::VerifyReport, verify::VerifyError> {
    verify::verify((lines.join("\n") + "\n").as_bytes(), None)
}

#[tokio::test]
async fn the_independent_verifier_agrees() {
    if !workspace_root().join(".venv/bin/python").exists() {
        eprintln!(
            "SKIPPED: .venv/bin/python is missing; run ./infra/test.sh (it creates the virtualenv \
             with tests/python/requirements.txt) to run the independent Python verifier"
        );
        return;
    }
    let l = build(&[5, 7, 3, 10, 1, 8, 6]).await;
    let key = l.signer.public_key().public_key;
    for (first, last) in [(0, 40), (9, 23), (13, 14), (34, 40)] {
        let good = export(&l, first, last);
        rust(&good).unwrap();
        let (ok, out) = python(&good, None).unwrap();
        assert!(ok, "{first}..{last}: {out}");
        assert!(out.contains(&format!("{} entries", last - first)), "{out}");
        let (ok, out) = python(&good, Some(&key)).unwrap();
        assert!(ok, "{first}..{last} with the key: {out}");
    }

    let (first, last) = (9, 23);
    let good = export(&l, first, last);
    let line = |seq: u64| (1 + seq - first) as usize;
    let tampered = |f: &dyn Fn(&mut Vec<String>)| {
        let mut lines = good.clone();
        f(&mut lines);
        lines
    };
    // (what, export, the seq both verifiers must name)
    let cases: Vec<(&str, Vec<String>, u64)> = vec![
        (
            "first entry changed",
            tampered(&|x| x[line(9)] = x[line(9)].replace("患者記録", "患者記錄")),
            9,
        ),
        (
            "middle entry changed",
            tampered(&|x| x[line(15)] = x[line(15)].replace("record.open", "record.read")),
            15,
        ),
        (
            "last entry changed",
            tampered(&|x| x[line(22)] = x[line(22)].replace("record.open", "record.read")),
            22,
        ),
        (
            "entry deleted",
            tampered(&|x| {
                x.remove(line(17));
            }),
            17,
        ),
        (
            "entries swapped",
            tampered(&|x| x.swap(line(12), line(13))),
            12,
        ),
    ];
    for (what, lines, seq) in &cases {
        let e = rust(lines).unwrap_err();
        assert!(e.to_string().contains(&format!("seq {seq}")), "{what}: {e}");
        let (ok, out) = python(lines, Some(&key)).unwrap();
        assert!(
            !ok,
            "{what}: the Python verifier accepted a tampered export: {out}"
        );
        assert!(out.contains(&format!("seq {seq}")), "{what}: {out}");
    }
    // Another key.
    let other = LocalSigner::from_seed(&[4u8; 32]).public_key().public_key;
    let (ok, out) = python(&good, Some(&other)).unwrap();
    assert!(!ok && out.contains("unknown key"), "{out}");
    // A changed checkpoint body.
    let cp = line(last);
    let bad =
        tampered(&|x| x[cp] = x[cp].replacen("\\\"tree_size\\\":12", "\\\"tree_size\\\":11", 1));
    assert_eq!(
        rust(&bad).unwrap_err().failure,
        verify::Failure::BadSignature
    );
    let (ok, out) = python(&bad, None).unwrap();
    assert!(!ok && out.contains("bad signature"), "{out}");
}
