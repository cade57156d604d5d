//! An example EMR data-plane client of Anshin's key service: envelope encryption of patient
//! records with data keys from Anshin (guideline 7 ③, 13 ⑦).
//!
//! ```text
//! keys-example --url http://127.0.0.1:8080 --token <bearer token>
//!              [--records 5] [--purpose emr.record] [--store records.json]
//! ```
//!
//! The token is an OAuth2 access token of a machine client (client credentials, with the `read`
//! and `keys` scopes) or an Anshin API token. People's sessions cannot ask for keys.
//!
//! What a data plane does, step by step:
//!
//! 1. **Get a data key** — `POST /api/v1/keys/data-keys {"purpose": "emr.record"}`. Anshin asks
//!    the tenant's key-encryption key (KEK, in AWS KMS or the local provider) for a fresh AES-256
//!    key and answers it twice: `plaintext` (base64, use it and forget it) and `wrapped` (base64,
//!    the same key encrypted under the KEK, bound to the tenant and the purpose).
//! 2. **Encrypt locally** — each record is encrypted with AES-256-GCM under the plaintext key,
//!    with a random 96-bit nonce and associated data that names the purpose and the record id,
//!    so a ciphertext copied onto another record does not decrypt. Record contents never travel
//!    to Anshin.
//! 3. **Store the wrapped key beside the records** — here a JSON file holds `key_id`, `wrapped`
//!    and the encrypted records; a real data plane keeps `wrapped` in the same row or object as
//!    the records it protects. The plaintext key is wiped and never stored.
//! 4. **Read back** — `POST /api/v1/keys/data-keys/unwrap {"purpose", "wrapped"}` returns the
//!    plaintext key again (only to a caller of the same tenant, for the same purpose), and the
//!    records are decrypted locally. Unwrapping needs only the `read` scope.
//! 5. **Transit encryption** — small values (an identifier, a short note, a secret) can be
//!    encrypted by Anshin itself: `POST /api/v1/keys/transit/encrypt {"purpose", "record_id",
//!    "plaintext"}` answers an Anshin envelope; `…/transit/decrypt` with the same purpose and
//!    record id gives the value back. Bodies are base64; at most 64 KiB per value.
//!
//! After a KEK rotation, old wrapped keys still unwrap; `POST /api/v1/keys/data-keys/rewrap`
//! re-wraps one under the current KEK so the old KEK can be retired. After crypto-erase of the
//! tenant, every wrapped key (and so every record) is unreadable for good.
//!
//! Errors are RFC 9457 problems (`application/problem+json`): 503 when the key provider cannot
//! be reached (retry later; nothing was encrypted with a substitute key), 409 when the key is
//! disabled or destroyed, 400 when a ciphertext or wrapped key was altered or belongs to another
//! tenant, purpose or record, 403 without the `write` scope.
//!
//! Prints a summary; exits 1 on any HTTP error or mismatch, 2 on bad arguments.

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;

/// What the data plane keeps on disk: the wrapped data key beside the records it encrypts.
#[derive(Debug, Serialize, Deserialize)]
struct Store {
    purpose: String,
    /// The KEK that wrapped the data key (for operators; unwrapping reads it from `wrapped`).
    key_id: String,
    /// The data key, wrapped under the tenant's KEK (base64). Not a secret on its own.
    wrapped: String,
    records: Vec<StoredRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredRecord {
    id: String,
    /// 96-bit AES-GCM nonce (base64), random per record.
    nonce: String,
    /// AES-256-GCM ciphertext with its tag (base64).
    ciphertext: String,
}

/// A sample patient record (fictitious).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PatientRecord {
    #[serde(rename = "患者ID")]
    patient_id: String,
    #[serde(rename = "患者名")]
    name: String,
    #[serde(rename = "生年月日")]
    birth_date: String,
    #[serde(rename = "診療記録")]
    note: String,
}

struct Args {
    url: String,
    token: String,
    records: usize,
    purpose: String,
    store: Option<PathBuf>,
}

fn usage() -> &'static str {
    "usage: keys-example --url URL --token TOKEN [--records N] [--purpose emr.record] [--store FILE]"
}

fn parse_args() -> Result<Args, String> {
    let mut url = None;
    let mut token = None;
    let mut records = 5usize;
    let mut purpose = "emr.record".to_string();
    let mut store = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => url = Some(value()?.trim_end_matches('/').to_string()),
            "--token" => token = Some(value()?),
            "--records" => {
                records = value()?
                    .parse()
                    .map_err(|_| "--records takes a number".to_string())?
            }
            "--purpose" => purpose = value()?,
            "--store" => store = Some(PathBuf::from(value()?)),
            "-h" | "--help" => return Err(usage().into()),
            other => return Err(format!("unknown argument {other}\n{}", usage())),
        }
    }
    if records == 0 {
        return Err("--records must be at least 1".into());
    }
    Ok(Args {
        url: url.ok_or_else(|| format!("--url is required\n{}", usage()))?,
        token: token.ok_or_else(|| format!("--token is required\n{}", usage()))?,
        records,
        purpose,
        store,
    })
}

/// Fictitious records in Japanese, as an EMR would hold them.
fn sample_records(n: usize) -> Vec<PatientRecord> {
    let names = [
        "山田 太郎",
        "佐藤 花子",
        "鈴木 一郎",
        "高橋 美咲",
        "田中 健",
    ];
    let notes = [
        "主訴：発熱（38.5℃）と咳嗽。インフルエンザ迅速検査陰性。解熱剤を処方。",
        "高血圧症の定期受診。血圧 138/86 mmHg。降圧薬を継続。",
        "2型糖尿病。HbA1c 7.1%。食事療法の再指導を行った。",
        "右足関節捻挫。X線で骨折なし。湿布と安静を指示。",
        "健康診断後の再検査。LDLコレステロール高値、生活指導。",
    ];
    (0..n)
        .map(|i| PatientRecord {
            patient_id: format!("P-{:06}", 100_001 + i),
            name: names[i % names.len()].to_string(),
            birth_date: format!("19{:02}-0{}-1{}", 50 + (i * 7) % 49, 1 + i % 9, i % 10),
            note: format!("{}（記録 {}）", notes[i % notes.len()], i + 1),
        })
        .collect()
}

/// The associated data of a record: binds the ciphertext to its purpose and record id.
fn aad(purpose: &str, record_id: &str) -> Vec<u8> {
    format!("anshin-example/1\0{purpose}\0{record_id}").into_bytes()
}

struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    /// POSTs JSON; a problem (or any non-2xx answer) becomes an error with its detail.
    async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        let res = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        let status = res.status();
        let text = res
            .text()
            .await
            .map_err(|e| format!("POST {path}: reading the answer: {e}"))?;
        if !status.is_success() {
            let detail = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| {
                    Some(format!(
                        "{} ({})",
                        v["detail"].as_str()?,
                        v["type"].as_str().unwrap_or("")
                    ))
                })
                .unwrap_or(text);
            return Err(format!("POST {path}: HTTP {status}: {detail}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("POST {path}: not JSON: {e}"))
    }
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a str, String> {
    v[name]
        .as_str()
        .ok_or_else(|| format!("the answer has no '{name}': {v}"))
}

fn key_from_b64(b64: &str) -> Result<Vec<u8>, String> {
    let key = B64
        .decode(b64)
        .map_err(|_| "the data key is not base64".to_string())?;
    if key.len() != 32 {
        return Err(format!("the data key has {} bytes, not 32", key.len()));
    }
    Ok(key)
}

/// Overwrites key bytes before they are dropped. (A production client would hold keys in
/// `zeroize::Zeroizing`.)
fn wipe(mut key: Vec<u8>) {
    key.iter_mut().for_each(|b| *b = 0);
    std::hint::black_box(&key);
}

async fn run(args: &Args) -> Result<(), String> {
    let api = Api {
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?,
        url: args.url.clone(),
        token: args.token.clone(),
    };
    let originals = sample_records(args.records);
    let store_path = args.store.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("anshin-keys-example-{}.json", std::process::id()))
    });

    // 1. A data key for this batch of records.
    let dk = api
        .post("/api/v1/keys/data-keys", json!({"purpose": args.purpose}))
        .await?;
    let key_id = field(&dk, "key_id")?.to_string();
    let wrapped = field(&dk, "wrapped")?.to_string();
    let key = key_from_b64(field(&dk, "plaintext")?)?;
    println!(
        "data key issued under KEK {key_id} (purpose {})",
        args.purpose
    );

    // 2. Encrypt each record locally; 3. store the wrapped key beside them.
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key));
    wipe(key);
    let mut records = Vec::with_capacity(originals.len());
    for r in &originals {
        let plaintext = serde_json::to_vec(r).map_err(|e| e.to_string())?;
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &plaintext,
                    aad: &aad(&args.purpose, &r.patient_id),
                },
            )
            .map_err(|_| "AES-GCM encryption failed".to_string())?;
        records.push(StoredRecord {
            id: r.patient_id.clone(),
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(ct),
        });
    }
    drop(cipher);
    let store = Store {
        purpose: args.purpose.clone(),
        key_id: key_id.clone(),
        wrapped,
        records,
    };
    let text = serde_json::to_string_pretty(&store).map_err(|e| e.to_string())?;
    for r in &originals {
        if text.contains(&r.name) || text.contains(&r.note) {
            return Err(format!("record {} is stored in plaintext", r.patient_id));
        }
    }
    std::fs::write(&store_path, text)
        .map_err(|e| format!("writing {}: {e}", store_path.display()))?;
    println!(
        "encrypted {} records into {}",
        store.records.len(),
        store_path.display()
    );

    // 4. Read back: unwrap the stored key through Anshin, decrypt locally, compare.
    let loaded: Store = serde_json::from_slice(
        &std::fs::read(&store_path)
            .map_err(|e| format!("reading {}: {e}", store_path.display()))?,
    )
    .map_err(|e| format!("{}: {e}", store_path.display()))?;
    let unwrapped = api
        .post(
            "/api/v1/keys/data-keys/unwrap",
            json!({"purpose": loaded.purpose, "wrapped": loaded.wrapped}),
        )
        .await?;
    let key = key_from_b64(field(&unwrapped, "plaintext")?)?;
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key));
    wipe(key);
    let mut mismatches = 0usize;
    for (stored, original) in loaded.records.iter().zip(&originals) {
        let nonce = B64
            .decode(&stored.nonce)
            .map_err(|_| format!("record {}: bad nonce", stored.id))?;
        if nonce.len() != 12 {
            return Err(format!("record {}: the nonce is not 96 bits", stored.id));
        }
        let ct = B64
            .decode(&stored.ciphertext)
            .map_err(|_| format!("record {}: bad ciphertext", stored.id))?;
        let pt = cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ct,
                    aad: &aad(&loaded.purpose, &stored.id),
                },
            )
            .map_err(|_| {
                format!(
                    "record {}: decryption failed (altered, or the wrong key)",
                    stored.id
                )
            })?;
        let back: PatientRecord = serde_json::from_slice(&pt).map_err(|e| e.to_string())?;
        if &back != original {
            eprintln!("MISMATCH in record {}", stored.id);
            mismatches += 1;
        }
    }
    if loaded.records.len() != originals.len() {
        mismatches += originals.len().abs_diff(loaded.records.len());
    }
    println!(
        "decrypted {} records after unwrapping the stored key: {} mismatches",
        loaded.records.len(),
        mismatches
    );
    if let Some(first) = originals.first() {
        println!("  e.g. {} {}: {}", first.patient_id, first.name, first.note);
    }

    // 5. Transit encryption of one small value, bound to a purpose and a record.
    let value = "アレルギー：ペニシリン系抗菌薬（重篤な発疹の既往）";
    let record_id = originals
        .first()
        .map(|r| r.patient_id.clone())
        .unwrap_or_default();
    let ct = api
        .post(
            "/api/v1/keys/transit/encrypt",
            json!({"purpose": "emr.allergy", "record_id": record_id, "plaintext": B64.encode(value)}),
        )
        .await?;
    let ciphertext = field(&ct, "ciphertext")?.to_string();
    let pt = api
        .post(
            "/api/v1/keys/transit/decrypt",
            json!({"purpose": "emr.allergy", "record_id": record_id, "ciphertext": ciphertext}),
        )
        .await?;
    let back = B64
        .decode(field(&pt, "plaintext")?)
        .map_err(|_| "the transit plaintext is not base64".to_string())?;
    let transit_ok = back == value.as_bytes();
    println!(
        "transit encrypt/decrypt of one value ({} bytes of ciphertext): {}",
        B64.decode(&ciphertext).map(|c| c.len()).unwrap_or(0),
        if transit_ok { "ok" } else { "MISMATCH" }
    );

    if args.store.is_none() {
        std::fs::remove_file(&store_path).ok();
    }
    if mismatches > 0 || !transit_ok {
        return Err(format!(
            "{mismatches} record mismatches, transit {}",
            if transit_ok { "ok" } else { "mismatch" }
        ));
    }
    println!(
        "OK: {} records round-tripped under {key_id}, transit round trip ok",
        originals.len()
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keys-example failed: {e}");
            ExitCode::FAILURE
        }
    }
}
