//! Load generator: key-service HTTP requests per second against a running `anshin serve`, per
//! operation, with CONCURRENCY clients in parallel for SECONDS each:
//!
//! - `generate`: `POST /api/v1/keys/data-keys` (a fresh data key from the provider each time);
//! - `unwrap`: `POST /api/v1/keys/data-keys/unwrap` of one token (the decryption cache serves it);
//! - `encrypt`: `POST /api/v1/keys/transit/encrypt` of a 1 KiB record (the encryption cache).
//!
//! Every request is authenticated and writes an audit event, as in production.
//!
//!   keys-http-bench URL TOKEN [CONCURRENCY=16] [SECONDS=10]
//!
//! TOKEN is an API token (or machine-client access token) of one institution.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: fail loudly

use base64::Engine;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn run(
    c: reqwest::Client,
    url: String,
    token: String,
    body: Value,
    conc: usize,
    secs: u64,
) -> (f64, u64) {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (c, url, token, body) = (c.clone(), url.clone(), token.clone(), body.clone());
        let (ok, failed) = (ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let r = c.post(&url).bearer_auth(&token).json(&body).send().await;
                match r {
                    Ok(res) if res.status().is_success() => {
                        res.bytes().await.ok();
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    (
        ok.load(Ordering::Relaxed) as f64 / elapsed,
        failed.load(Ordering::Relaxed),
    )
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: keys-http-bench URL TOKEN [CONCURRENCY] [SECONDS]");
        std::process::exit(2);
    }
    let base = args[1].trim_end_matches('/').to_string();
    let token = args[2].clone();
    let n = |i: usize, d: u64| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (conc, secs) = (n(3, 16) as usize, n(4, 10));
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(conc)
        .build()
        .unwrap();
    let first: Value = c
        .post(format!("{base}/api/v1/keys/data-keys"))
        .bearer_auth(&token)
        .json(&json!({"purpose": "emr.record"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let wrapped = first["wrapped"].as_str().expect("a data key").to_string();
    let record = base64::engine::general_purpose::STANDARD.encode(vec![0x41u8; 1024]);
    let ops = [
        (
            "generate",
            format!("{base}/api/v1/keys/data-keys"),
            json!({"purpose": "emr.record"}),
        ),
        (
            "unwrap",
            format!("{base}/api/v1/keys/data-keys/unwrap"),
            json!({"purpose": "emr.record", "wrapped": wrapped}),
        ),
        (
            "encrypt",
            format!("{base}/api/v1/keys/transit/encrypt"),
            json!({"purpose": "emr.record", "record_id": "P-0001", "plaintext": record}),
        ),
    ];
    let mut out = serde_json::Map::new();
    for (name, url, body) in ops {
        let (rps, failed) = run(c.clone(), url, token.clone(), body, conc, secs).await;
        out.insert(
            name.into(),
            json!({"requests_per_sec": (rps * 10.0).round() / 10.0, "failed": failed}),
        );
    }
    out.insert("concurrency".into(), json!(conc));
    out.insert("seconds_each".into(), json!(secs));
    println!("{}", Value::Object(out));
}
