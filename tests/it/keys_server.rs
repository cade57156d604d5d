//! The key service end to end with the real `anshin` binary: the example data-plane client
//! (`keys-example`) against the embedded local provider, and a KMS outage (moto frozen with
//! SIGSTOP) during which key operations fail closed with 503 and from which the server recovers
//! without a restart.
//!
//! Needs `cargo build --bins` (the `anshin` binary) and, for the outage, the Python test peers
//! (`./infra/test.sh` creates `.venv` with moto).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use anshin_tests::moto::{Moto, MOTO_REGION};
use anshin_tests::{anshin_bin, both_backends, free_port, wait_for_port, TestDb};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The environment of every `anshin` process of a test: the database's, plus `extra`, and nothing
/// inherited (no stray AWS profile or `ANSHIN_*` setting of the machine running the tests).
fn command(db: &TestDb, extra: &[(String, String)]) -> Command {
    let mut c = Command::new(anshin_bin());
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in db.env.iter().chain(extra) {
        c.env(k, v);
    }
    c
}

fn cli(db: &TestDb, extra: &[(String, String)], args: &[&str]) -> Output {
    let o = command(db, extra)
        .args(args)
        .output()
        .expect("run anshin (build it first: cargo build --bins)");
    assert_eq!(
        o.status.code(),
        Some(0),
        "anshin {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// A provider and one institution, created on the command line (each gets its KEK there), with
/// an API token of each one's admin.
struct Tenants {
    provider_admin: String,
    clinic_admin: String,
}

fn tenants(db: &TestDb, extra: &[(String, String)]) -> Tenants {
    cli(
        db,
        extra,
        &[
            "tenant",
            "create",
            "--kind",
            "provider",
            "--slug",
            "ex-cloud",
            "--name",
            "イグザンプルクラウド",
        ],
    );
    cli(
        db,
        extra,
        &[
            "tenant",
            "create",
            "--kind",
            "institution",
            "--slug",
            "ex-clinic",
            "--name",
            "さくら内科",
            "--parent",
            "ex-cloud",
            "--pattern",
            "IV",
        ],
    );
    let token = |tenant: &str, role: &str| {
        let o = cli(
            db,
            extra,
            &[
                "token",
                "issue",
                "--tenant",
                tenant,
                "--role",
                role,
                "--name",
                "keys test",
                "--expires-in",
                "1d",
            ],
        );
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        let t = out.lines().last().unwrap().trim().to_string();
        assert!(t.starts_with("anshin_"), "{out}");
        t
    };
    Tenants {
        provider_admin: token("ex-cloud", "provider_admin"),
        clinic_admin: token("ex-clinic", "institution_admin"),
    }
}

/// The active KEK of a tenant, from `anshin keys status --json`.
fn active_kek(db: &TestDb, extra: &[(String, String)], slug: &str) -> String {
    let o = cli(db, extra, &["keys", "status", "--tenant", slug, "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v["active"]["key_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string()
}

/// `anshin serve` on a free port, killed when dropped; its output goes to a log file.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(db: &TestDb, extra: &[(String, String)]) -> Self {
        let port = free_port();
        let log = db.data_dir.with_file_name(format!("serve-{port}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = command(db, extra)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("ANSHIN_LOG_FORMAT", "text")
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn anshin serve");
        let s = Self { child, port, log };
        assert!(
            wait_for_port(port, 60),
            "the server did not start: {}",
            s.log_text()
        );
        s
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn still_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

struct Answer {
    status: u16,
    content_type: String,
    retry_after: Option<String>,
    body: Value,
    raw: String,
    took: Duration,
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let start = Instant::now();
    let mut req = http.request(method, url);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = res.status().as_u16();
    let header = |n: &str| {
        res.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let content_type = header("content-type").unwrap_or_default();
    let retry_after = header("retry-after");
    let raw = res.text().await.unwrap();
    Answer {
        status,
        content_type,
        retry_after,
        body: serde_json::from_str(&raw).unwrap_or(Value::Null),
        raw,
        took: start.elapsed(),
    }
}

async fn post(http: &reqwest::Client, s: &Server, path: &str, bearer: &str, body: Value) -> Answer {
    call(
        http,
        reqwest::Method::POST,
        &format!("{}{path}", s.url()),
        Some(bearer),
        Some(body),
    )
    .await
}

async fn readyz(http: &reqwest::Client, s: &Server) -> Answer {
    call(
        http,
        reqwest::Method::GET,
        &format!("{}/readyz", s.url()),
        None,
        None,
    )
    .await
}

/// Registers a machine client of the provider (provider_operator, read and write) and returns an
/// access token from the token endpoint.
async fn machine_token(http: &reqwest::Client, s: &Server, provider_admin: &str) -> String {
    let r = post(
        http,
        s,
        "/api/v1/clients",
        provider_admin,
        json!({"name": "電子カルテ基盤", "role": "provider_operator", "scopes": ["read", "write", "keys"], "auth_method": "client_secret"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.raw);
    let id = r.body["client_id"].as_str().unwrap();
    let secret = r.body["client_secret"].as_str().unwrap();
    let res = http
        .post(format!("{}/oauth2/token", s.url()))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let t: Value = res.json().await.unwrap();
    assert_eq!(t["scope"], "read write keys");
    t["access_token"].as_str().unwrap().to_string()
}

fn run_example(s: &Server, token: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keys-example"))
        .args(["--url", &s.url(), "--token", token])
        .args(extra)
        .output()
        .expect("run keys-example")
}

/// (KEK records, stored data keys) in the database.
async fn stored_rows(db: &TestDb) -> (i64, i64) {
    (
        db.count_platform("SELECT COUNT(*) FROM key_keks").await,
        db.count_platform("SELECT COUNT(*) FROM key_data_keys")
            .await,
    )
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

both_backends! {
    async fn the_example_data_plane_client_works_against_the_local_provider(db) {
        let t = tenants(&db, &[]);
        let provider_kek = active_kek(&db, &[], "ex-cloud");
        let clinic_kek = active_kek(&db, &[], "ex-clinic");
        assert!(provider_kek.starts_with("local:") && clinic_kek.starts_with("local:"));
        assert_ne!(provider_kek, clinic_kek);
        let mut server = Server::start(&db, &[]);
        let http = http();

        let r = readyz(&http, &server).await;
        assert_eq!(r.status, 200, "{}", r.raw);
        assert_eq!(r.body["checks"]["key_provider"], "ok (local)");
        assert_eq!(r.body["checks"]["database"], "ok");

        // The EMR platform's machine client.
        let token = machine_token(&http, &server, &t.provider_admin).await;
        let store = db.data_dir.with_file_name("records.json");
        let o = run_example(&server, &token, &["--records", "8", "--store", store.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&o.stdout).to_string();
        assert_eq!(o.status.code(), Some(0), "{stdout}\n{}\n{}", String::from_utf8_lossy(&o.stderr), server.log_text());
        println!("keys-example:\n{stdout}");
        assert!(stdout.contains("OK: 8 records round-tripped"), "{stdout}");
        assert!(stdout.contains(&provider_kek), "the provider's KEK wrapped the key: {stdout}");
        assert!(stdout.contains("transit encrypt/decrypt of one value") && stdout.contains(": ok"), "{stdout}");
        // What the data plane stored: the wrapped key beside the records, nothing in clear.
        let stored: Value = serde_json::from_str(&std::fs::read_to_string(&store).unwrap()).unwrap();
        assert_eq!(stored["key_id"], provider_kek.as_str());
        assert_eq!(stored["records"].as_array().unwrap().len(), 8);
        let wrapped = B64.decode(stored["wrapped"].as_str().unwrap()).unwrap();
        assert_eq!(&wrapped[..4], b"ANSK");
        let text = stored.to_string();
        for clear in ["山田", "患者名", "診療記録", "インフルエンザ", "plaintext"] {
            assert!(!text.contains(clear), "{clear} stored in clear: {text}");
        }

        // An institution's own API token works too, with the institution's KEK.
        let o = run_example(&server, &t.clinic_admin, &["--records", "3"]);
        let stdout = String::from_utf8_lossy(&o.stdout).to_string();
        assert_eq!(o.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
        assert!(stdout.contains(&clinic_kek), "{stdout}");

        // Failures exit non-zero with the server's problem.
        let o = run_example(&server, "anshin_not-a-token", &[]);
        assert_eq!(o.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&o.stderr).contains("HTTP 401"), "{}", String::from_utf8_lossy(&o.stderr));
        let o = Command::new(env!("CARGO_BIN_EXE_keys-example")).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "usage error");
        assert!(server.still_running());

        // Each of the example's calls is in the audit trail of the caller's tenant.
        let n = db.count_platform("SELECT COUNT(*) FROM audit_events WHERE action IN ('keys.data_key.generate', 'keys.data_key.unwrap', 'keys.encrypt', 'keys.decrypt') AND outcome = 'success'").await;
        assert_eq!(n, 8, "four calls per run, two runs");
    }

    async fn a_kms_outage_fails_closed_and_the_server_recovers_without_a_restart(db) {
        let mut moto = Moto::start();
        let env: Vec<(String, String)> = [
            ("ANSHIN_KEYS__PROVIDER", "aws-kms".to_string()),
            ("ANSHIN_KEYS__AWS_ENDPOINT_URL", moto.endpoint()),
            ("ANSHIN_KEYS__ALLOW_TEST_ENDPOINT", "true".into()),
            ("ANSHIN_KEYS__AWS_TIMEOUT_SECS", "2".into()),
            ("ANSHIN_KEYS__AWS_REGION", MOTO_REGION.into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", MOTO_REGION.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let t = tenants(&db, &env);
        let kek = active_kek(&db, &env, "ex-cloud");
        assert!(kek.starts_with("arn:aws:kms:ap-northeast-1:"), "a KMS key in moto: {kek}");
        let mut server = Server::start(&db, &env);
        let http = http();
        let r = readyz(&http, &server).await;
        assert_eq!(r.status, 200, "{}\n{}", r.raw, server.log_text());
        assert_eq!(r.body["checks"]["key_provider"], "ok (aws-kms)");

        // Before the outage: data keys and transit encryption through KMS.
        let token = machine_token(&http, &server, &t.provider_admin).await;
        let g = post(&http, &server, "/api/v1/keys/data-keys", &token, json!({"purpose": "emr.record"})).await;
        assert_eq!(g.status, 200, "{}", g.raw);
        assert_eq!(g.body["key_id"], kek.as_str());
        let wrapped = g.body["wrapped"].as_str().unwrap().to_string();
        let u = post(&http, &server, "/api/v1/keys/data-keys/unwrap", &token, json!({"purpose": "emr.record", "wrapped": wrapped})).await;
        assert_eq!(u.body["plaintext"], g.body["plaintext"]);
        let note = B64.encode("紹介状：循環器内科へ".as_bytes());
        let e = post(&http, &server, "/api/v1/keys/transit/encrypt", &token, json!({"purpose": "emr.note", "record_id": "P-1", "plaintext": note})).await;
        assert_eq!(e.status, 200, "{}", e.raw);
        let d = post(&http, &server, "/api/v1/keys/transit/decrypt", &token, json!({"purpose": "emr.note", "record_id": "P-1", "ciphertext": e.body["ciphertext"]})).await;
        assert_eq!(d.body["plaintext"], note.as_str());
        // Also through the example client.
        let o = run_example(&server, &token, &["--records", "2"]);
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));

        let rows_before = stored_rows(&db).await;

        // KMS hangs: connections are accepted, nothing answers.
        moto.pause();
        let fresh = B64.encode("新しいデータ".as_bytes());
        let calls = [
            ("/api/v1/keys/data-keys", json!({"purpose": "emr.record"})),
            ("/api/v1/keys/transit/encrypt", json!({"purpose": "emr.outage", "record_id": "P-2", "plaintext": fresh})),
            ("/api/v1/keys/data-keys/unwrap", json!({"purpose": "emr.record", "wrapped": wrapped})),
        ];
        for (path, body) in &calls {
            let r = post(&http, &server, path, &token, body.clone()).await;
            assert_eq!(r.status, 503, "{path} during the outage: {}", r.raw);
            assert_eq!(r.content_type, "application/problem+json", "{path}");
            assert_eq!(r.body["type"], "urn:anshin:problem:key-provider-unavailable", "{path}: {}", r.raw);
            assert_eq!(r.retry_after.as_deref(), Some("5"), "{path}");
            println!("{path} during the outage: {} after {:?}", r.status, r.took);
            assert!(r.took < Duration::from_secs(8), "{path} answered after {:?}", r.took);
            for field in ["plaintext", "ciphertext", "wrapped", "key_id"] {
                assert!(r.body.get(field).is_none(), "{path}: {field} during an outage: {}", r.raw);
            }
            assert!(!r.raw.contains(&fresh), "{path}: the plaintext came back");
        }
        let r = readyz(&http, &server).await;
        assert_eq!(r.status, 503, "{}", r.raw);
        assert_eq!(r.content_type, "application/problem+json");
        assert!(r.body["detail"].as_str().unwrap().contains("aws-kms"), "{}", r.raw);
        println!("/readyz during the outage: {} after {:?}", r.status, r.took);
        assert!(r.took < Duration::from_secs(8), "/readyz answered after {:?}", r.took);
        assert_eq!(stored_rows(&db).await, rows_before, "nothing was stored during the outage");
        let failures = db.count_platform("SELECT COUNT(*) FROM audit_events WHERE action LIKE 'keys.%' AND outcome = 'failure'").await;
        assert!(failures >= 3, "the refused operations are audited: {failures}");
        assert!(server.still_running());

        // KMS is back: the same server serves again.
        moto.resume();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = readyz(&http, &server).await;
            if r.status == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "not ready 30 s after KMS came back: {}\n{}", r.raw, server.log_text());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        for (path, body) in &calls {
            let r = post(&http, &server, path, &token, body.clone()).await;
            assert_eq!(r.status, 200, "{path} after the outage: {}", r.raw);
        }
        let e = post(&http, &server, "/api/v1/keys/transit/encrypt", &token, json!({"purpose": "emr.outage", "record_id": "P-2", "plaintext": fresh})).await;
        let d = post(&http, &server, "/api/v1/keys/transit/decrypt", &token, json!({"purpose": "emr.outage", "record_id": "P-2", "ciphertext": e.body["ciphertext"]})).await;
        assert_eq!(d.status, 200, "{}", d.raw);
        assert_eq!(d.body["plaintext"], fresh.as_str());
        let o = run_example(&server, &token, &["--records", "2"]);
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(server.still_running(), "no restart needed");
    }
}
