//! Trusted time (17 ③) against real peers started by the tests: an SNTP server
//! (`tests/python/sntp_server.py`, the local clock plus a known offset) and an RFC 3161 TSA
//! (`tests/python/tsa_server.py`, `openssl ts -reply` behind http.server). Tokens are checked
//! with our verifier and with `openssl ts -verify`. The database half runs on SQLite and on
//! PostgreSQL (a throwaway database via `TEST_PG_ADMIN_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, as the workspace's other storage tests).

// Test support: a failed setup step should abort the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use anshin_audit::event::ClockStamp;
use anshin_audit::trusted_time::{
    self, check_clock, measure, measure_best, run_clock_monitor, timestamp_pending, tokens_for,
    verify_token, SignatureCheck, TimeError, TsaClient,
};
use anshin_audit::{Actor, AuditEvent, LocalSigner, Outcome, Sealer};
use anshin_platform::config::{AuditConfig, DatabaseConfig};
use anshin_platform::db::{self, begin_platform_tx, begin_tenant_tx, TableGrant};
use anshin_platform::secret::Secret;
use base64::Engine;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use sea_orm_migration::{MigrationTrait, MigratorTrait};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

// ---- Peers -------------------------------------------------------------------------------

/// A Python test peer; killed when dropped.
struct Peer {
    child: Child,
    info: serde_json::Value,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn repo_root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).to_path_buf()
}

/// The venv's Python when ./infra/test.sh made one; the peers need only the stdlib.
fn python() -> PathBuf {
    let venv = repo_root().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Starts `tests/python/<script>` and waits for the JSON line it prints once it listens.
fn start_peer(script: &str, args: &[&str]) -> Peer {
    let mut child = Command::new(python())
        .arg(repo_root().join("tests/python").join(script))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {script}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let (send, recv) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = send.send(line);
    });
    let line = recv
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_default();
    // Owned before parsing, so that a failed start still kills the child.
    let mut peer = Peer {
        child,
        info: serde_json::Value::Null,
    };
    peer.info = serde_json::from_str(line.trim())
        .unwrap_or_else(|_| panic!("{script} did not start (printed {line:?})"));
    peer
}

impl Peer {
    fn sntp(args: &[&str]) -> (Self, String) {
        let p = start_peer("sntp_server.py", args);
        let server = format!("127.0.0.1:{}", p.info["port"]);
        (p, server)
    }

    fn tsa(dir: &Path, key: &str, ess: &str) -> Self {
        start_peer(
            "tsa_server.py",
            &["--dir", dir.to_str().unwrap(), "--key", key, "--ess", ess],
        )
    }

    fn url(&self) -> String {
        self.info["url"].as_str().unwrap().to_string()
    }

    fn ca(&self) -> PathBuf {
        PathBuf::from(self.info["ca"].as_str().unwrap())
    }

    fn tsa_cert_pem(&self) -> String {
        std::fs::read_to_string(self.info["tsa_cert"].as_str().unwrap()).unwrap()
    }
}

/// A UDP port nothing listens on (bound, then released).
fn closed_udp_port() -> String {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    drop(s);
    format!("127.0.0.1:{port}")
}

/// `openssl ts -verify` of a DER TimeStampToken over `body`, trusting `ca`.
fn openssl_verifies(dir: &Path, token: &[u8], body: &[u8], ca: &Path) -> bool {
    let t = dir.join(format!("token-{}.der", Uuid::new_v4()));
    let b = dir.join(format!("body-{}.json", Uuid::new_v4()));
    std::fs::write(&t, token).unwrap();
    std::fs::write(&b, body).unwrap();
    let out = Command::new("openssl")
        .args(["ts", "-verify", "-token_in", "-in"])
        .arg(&t)
        .arg("-data")
        .arg(&b)
        .arg("-CAfile")
        .arg(ca)
        .output()
        .expect("the openssl command is needed for the trusted-time tests");
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verification: OK")
}

// ---- SNTP --------------------------------------------------------------------------------

#[tokio::test]
async fn sntp_offset_is_measured_against_a_real_server() {
    let (_ahead, server) = Peer::sntp(&["--offset-ms", "1500"]);
    let m = measure(&server, Duration::from_secs(2)).await.unwrap();
    assert!(
        (m.offset_ms() - 1500).abs() <= 150,
        "offset {} ms, expected about +1500",
        m.offset_ms()
    );
    assert!(
        m.delay_ms() < 500,
        "loopback round trip {} ms",
        m.delay_ms()
    );
    assert_eq!(m.stratum, 1);
    assert_eq!(&m.reference_id, b"TEST");
    assert_eq!(
        m.stamp(),
        ClockStamp {
            source: format!("ntp:{server}"),
            offset_ms: Some(m.offset_ms()),
        }
    );

    let (_behind, server) = Peer::sntp(&["--offset-ms", "-2500"]);
    let m = measure_best(&server, Duration::from_secs(2), 2)
        .await
        .unwrap();
    assert!(
        (m.offset_ms() + 2500).abs() <= 150,
        "offset {} ms, expected about -2500",
        m.offset_ms()
    );
}

#[tokio::test]
async fn sntp_failures_are_reported() {
    let short = Duration::from_millis(500);
    // Nothing listening: ICMP port unreachable (or, where that is filtered, a timeout).
    let e = measure(&closed_udp_port(), short).await.unwrap_err();
    assert!(
        matches!(e, TimeError::Unreachable { .. } | TimeError::Timeout { .. }),
        "{e}"
    );
    // A server that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let e = measure(&addr, short).await.unwrap_err();
    assert!(matches!(e, TimeError::Timeout { .. }), "{e}");
    // Kiss-o'-death and an unsynchronized server are refusals, not measurements.
    let (_kod, server) = Peer::sntp(&["--kiss", "RATE"]);
    let e = measure_best(&server, short, 3).await.unwrap_err();
    assert!(
        matches!(&e, TimeError::KissOfDeath { code, .. } if code == "RATE"),
        "{e}"
    );
    let (_alarm, server) = Peer::sntp(&["--unsynchronized"]);
    let e = measure(&server, short).await.unwrap_err();
    assert!(matches!(e, TimeError::Unsynchronized { .. }), "{e}");
    assert!(matches!(
        measure("no port:x", short).await,
        Err(TimeError::Address(_))
    ));
}

/// One test for everything that sets the process-wide clock stamp, so that nothing else in
/// this binary races it.
#[tokio::test]
async fn clock_stamp_follows_the_ntp_server() {
    // No server configured: the system clock, offset unknown.
    assert_eq!(check_clock(None).await, ClockStamp::default());
    assert_eq!(anshin_audit::clock::current(), ClockStamp::default());

    // The monitor measures at once and publishes "ntp:<server>" with the offset; events and
    // checkpoints made afterwards carry it.
    let (_peer, server) = Peer::sntp(&["--offset-ms", "1500"]);
    let config = AuditConfig {
        ntp_server: Some(server.clone()),
        ntp_check_interval_secs: 1,
        ..AuditConfig::default()
    };
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let monitor = tokio::spawn(run_clock_monitor(config, shutdown));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let stamp = loop {
        let c = anshin_audit::clock::current();
        if c.source.starts_with("ntp:") {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the monitor did not publish a measurement"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stamp.source, format!("ntp:{server}"));
    let offset = stamp.offset_ms.unwrap();
    assert!((offset - 1500).abs() <= 150, "offset {offset}");
    let event = AuditEvent::new(
        Uuid::nil(),
        Actor::system("test"),
        "test.clock",
        Outcome::Success,
    );
    assert_eq!(event.clock.source, format!("ntp:{server}"));
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), monitor)
        .await
        .expect("the monitor stops on shutdown")
        .unwrap();

    // The server stops answering: back to "system", offset unknown — never a stale figure.
    let stamp = check_clock(Some(&closed_udp_port())).await;
    assert_eq!(stamp, ClockStamp::default());
    assert_eq!(anshin_audit::clock::current(), ClockStamp::default());

    // Without a server the monitor sets the unknown stamp and just waits for shutdown.
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let monitor = tokio::spawn(run_clock_monitor(AuditConfig::default(), shutdown));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(anshin_audit::clock::current(), ClockStamp::default());
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), monitor)
        .await
        .expect("the monitor stops on shutdown")
        .unwrap();
}

// ---- RFC 3161 ----------------------------------------------------------------------------

async fn tsa_round_trip(key: &str, ess: &str) {
    let dir = tempfile::tempdir().unwrap();
    let tsa = Peer::tsa(&dir.path().join("tsa"), key, ess);
    let client = TsaClient::new(&tsa.url()).unwrap();
    let body = br#"{"type":"anshin.audit.checkpoint.v1","tree_size":3}"#;
    let before = chrono::Utc::now();
    let stamp = client.timestamp(body).await.unwrap();
    let after = chrono::Utc::now();

    // The client already checked imprint, nonce and the signature with the embedded cert.
    assert_eq!(stamp.info.signature, SignatureCheck::EmbeddedCertificate);
    let pem = tsa.tsa_cert_pem();
    let info = verify_token(&stamp.token, body, Some(&pem)).unwrap();
    assert_eq!(info.signature, SignatureCheck::PinnedCertificate);
    assert!(
        info.gen_time >= before - chrono::Duration::seconds(2)
            && info.gen_time <= after + chrono::Duration::seconds(2),
        "genTime {} outside [{before}, {after}]",
        info.gen_time
    );
    assert!(
        info.tsa_name
            .as_deref()
            .unwrap_or("")
            .contains("Anshin Test TSA"),
        "{:?}",
        info.tsa_name
    );
    assert_eq!(info.policy, "1.3.6.1.4.1.99999.1");
    assert_eq!(info.accuracy_us, Some(1_000_000));
    assert!(!info.serial.is_empty());
    assert!(info.signer.as_deref().unwrap().contains("Anshin Test TSA"));

    // OpenSSL agrees, trusting only the test CA.
    assert!(openssl_verifies(dir.path(), &stamp.token, body, &tsa.ca()));
    assert!(!openssl_verifies(
        dir.path(),
        &stamp.token,
        b"other",
        &tsa.ca()
    ));

    // A token is for one body only.
    let e = verify_token(&stamp.token, b"another checkpoint", Some(&pem)).unwrap_err();
    assert!(matches!(e, TimeError::Mismatch(_)), "{e}");
    // A certificate that did not sign it (the CA's) is refused.
    let ca_pem = std::fs::read_to_string(tsa.ca()).unwrap();
    let e = verify_token(&stamp.token, body, Some(&ca_pem)).unwrap_err();
    assert!(matches!(e, TimeError::Signature(_)), "{e}");
    // Altering the signed TSTInfo (one digit of genTime) breaks messageDigest.
    let year = info.gen_time.format("%Y%m%d%H%M%S").to_string();
    let at = stamp
        .token
        .windows(year.len())
        .position(|w| w == year.as_bytes())
        .expect("genTime in the token");
    let mut altered = stamp.token.clone();
    altered[at + 3] = if altered[at + 3] == b'9' { b'8' } else { b'9' };
    let e = verify_token(&altered, body, None).unwrap_err();
    assert!(matches!(e, TimeError::Signature(_)), "{e}");
    assert!(!openssl_verifies(dir.path(), &altered, body, &tsa.ca()));
    // Altering the signature itself (its last byte ends the token).
    let mut altered = stamp.token.clone();
    let last = altered.len() - 1;
    altered[last] ^= 0x01;
    let e = verify_token(&altered, body, Some(&pem)).unwrap_err();
    assert!(matches!(e, TimeError::Signature(_)), "{e}");

    // A refusal carries the TSA's status and reason.
    let strict = TsaClient::new(&format!("{}strict", tsa.url())).unwrap();
    match strict.timestamp(body).await {
        Err(TimeError::Rejected { status, detail }) => {
            assert_eq!(status, "Rejection");
            assert!(detail.to_lowercase().contains("algorithm"), "{detail}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // HTTP errors and an unreachable TSA are transport errors.
    let missing = TsaClient::new(&format!("{}nope", tsa.url())).unwrap();
    assert!(matches!(
        missing.timestamp(body).await,
        Err(TimeError::Tsa { .. })
    ));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    assert!(matches!(
        TsaClient::new(&url).unwrap().timestamp(body).await,
        Err(TimeError::Tsa { .. })
    ));
    assert!(TsaClient::new("ftp://tsa.example.jp/").is_err());
}

#[tokio::test]
async fn tsa_round_trip_ecdsa_p256_ess_v2() {
    tsa_round_trip("ec", "sha256").await;
}

#[tokio::test]
async fn tsa_round_trip_rsa_ess_v1() {
    tsa_round_trip("rsa", "sha1").await;
}

// ---- Checkpoints in the database ---------------------------------------------------------

struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut all = anshin_platform::migration::migrations();
        all.extend(anshin_audit::migrations());
        for m in trusted_time::migrations() {
            // The crate's list may come to include these; apply them once.
            if !all.iter().any(|x| x.name() == m.name()) {
                all.push(m);
            }
        }
        all
    }
}

struct TestDb {
    app: DatabaseConnection,
    /// PostgreSQL: the schema owner, and the database to drop at the end.
    owner: Option<(DatabaseConnection, String)>,
    _dir: tempfile::TempDir,
}

fn pg_admin_url() -> String {
    std::env::var("TEST_PG_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn admin_exec(sql: &str) {
    let admin = sea_orm::Database::connect(pg_admin_url())
        .await
        .expect("PostgreSQL must be reachable for the PostgreSQL half of the suite");
    admin.execute_unprepared(sql).await.expect(sql);
    admin.close().await.ok();
}

impl TestDb {
    async fn new(backend: DbBackend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DatabaseConfig {
            max_connections: 8,
            ..DatabaseConfig::default()
        };
        if backend == DbBackend::Sqlite {
            let url = format!("sqlite://{}", dir.path().join("audit.db").display());
            let app = db::connect(&Secret::new(url), &cfg).await.unwrap();
            Migrator::up(&app, None).await.unwrap();
            return Self {
                app,
                owner: None,
                _dir: dir,
            };
        }
        // As tests/src/lib.rs: migrations as `anshin_owner`, the app as `anshin_app` (no
        // ownership, no BYPASSRLS), grants as a deployment applies them.
        admin_exec(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anshin_owner') THEN
                 CREATE ROLE anshin_owner LOGIN NOSUPERUSER NOBYPASSRLS CREATEDB;
               END IF;
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anshin_app') THEN
                 CREATE ROLE anshin_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
               END IF;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
             END $$;",
        )
        .await;
        let name = format!("anshin_t_{}", Uuid::new_v4().simple());
        admin_exec(&format!("CREATE DATABASE {name} OWNER anshin_owner")).await;
        let u = url::Url::parse(&pg_admin_url()).unwrap();
        let (host, port) = (
            u.host_str().unwrap_or("127.0.0.1").to_string(),
            u.port().unwrap_or(5432),
        );
        let at = |role: &str| Secret::new(format!("postgres://{role}@{host}:{port}/{name}"));
        let owner = db::connect(&at("anshin_owner"), &cfg).await.unwrap();
        Migrator::up(&owner, None).await.unwrap();
        let mut grants = vec![TableGrant {
            table: "seaql_migrations",
            privileges: "SELECT",
        }];
        grants.extend(anshin_platform::migration::grants());
        grants.extend(anshin_audit::grants());
        grants.extend(trusted_time::grants());
        db::apply_grants(&owner, "anshin_app", &grants, &[])
            .await
            .unwrap();
        let app = db::connect(&at("anshin_app"), &cfg).await.unwrap();
        Self {
            app,
            owner: Some((owner, name)),
            _dir: dir,
        }
    }

    async fn finish(self) {
        self.app.close().await.ok();
        if let Some((owner, name)) = self.owner {
            owner.close().await.ok();
            admin_exec(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
        }
    }

    /// Every checkpoint: (tenant, tree size, body).
    async fn checkpoints(&self) -> Vec<(Uuid, u64, String)> {
        let tx = begin_platform_tx(&self.app).await.unwrap();
        let rows = tx
            .query_all(Statement::from_string(
                tx.get_database_backend(),
                "SELECT tenant_id, tree_size, body FROM audit_checkpoints ORDER BY tenant_id, tree_size",
            ))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        rows.iter()
            .map(|r| {
                (
                    r.try_get::<Uuid>("", "tenant_id").unwrap(),
                    r.try_get::<i64>("", "tree_size").unwrap() as u64,
                    r.try_get::<String>("", "body").unwrap(),
                )
            })
            .collect()
    }

    async fn count_tokens(&self) -> i64 {
        let tx = begin_platform_tx(&self.app).await.unwrap();
        let row = tx
            .query_one(Statement::from_string(
                tx.get_database_backend(),
                "SELECT COUNT(*) FROM audit_checkpoint_timestamps",
            ))
            .await
            .unwrap()
            .unwrap();
        tx.commit().await.unwrap();
        row.try_get_by_index::<i64>(0).unwrap()
    }

    async fn record_events(&self, tenants: &[Uuid], per_tenant: usize) {
        let tx = begin_platform_tx(&self.app).await.unwrap();
        for t in tenants {
            for i in 0..per_tenant {
                let e = AuditEvent::new(*t, Actor::system("test"), "test.event", Outcome::Success)
                    .detail("i", i);
                anshin_audit::record(&tx, &e).await.unwrap();
            }
        }
        tx.commit().await.unwrap();
    }
}

async fn checkpoints_are_timestamped(backend: DbBackend) {
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let tsa = Peer::tsa(&dir.path().join("tsa"), "ec", "sha256");
    let pem = tsa.tsa_cert_pem();
    let client = TsaClient::new(&tsa.url()).unwrap();
    let sealer = Sealer::new(
        db.app.clone(),
        Arc::new(LocalSigner::from_seed(&[7u8; 32])),
        2,
    );
    let tenants = [Uuid::now_v7(), Uuid::now_v7()];

    // Five events per tenant, two per checkpoint: three checkpoints each.
    db.record_events(&tenants, 5).await;
    sealer.seal_all().await.unwrap();
    let checkpoints = db.checkpoints().await;
    assert_eq!(checkpoints.len(), 6);

    let r = timestamp_pending(&db.app, &client, 100).await.unwrap();
    assert_eq!((r.found, r.stamped, r.already_stamped), (6, 6, 0));
    assert_eq!(db.count_tokens().await, 6);

    // Every checkpoint's token verifies against its body, read back as the export reads it
    // (tenant-bound on PostgreSQL, where row-level security applies).
    for t in tenants {
        let mine: Vec<_> = checkpoints.iter().filter(|c| c.0 == t).collect();
        let sizes: Vec<u64> = mine.iter().map(|c| c.1).collect();
        let tx = begin_tenant_tx(&db.app, t).await.unwrap();
        let tokens = tokens_for(&tx, t, &sizes).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(tokens.len(), sizes.len());
        for (_, size, body) in &mine {
            let der = base64::engine::general_purpose::STANDARD
                .decode(&tokens[size])
                .unwrap();
            let info = verify_token(&der, body.as_bytes(), Some(&pem)).unwrap();
            assert_eq!(info.signature, SignatureCheck::PinnedCertificate);
            assert!(openssl_verifies(
                dir.path(),
                &der,
                body.as_bytes(),
                &tsa.ca()
            ));
            // Not interchangeable with another checkpoint's.
            let other = mine.iter().find(|c| c.1 != *size).unwrap();
            assert!(verify_token(&der, other.2.as_bytes(), Some(&pem)).is_err());
        }
    }
    if backend == DbBackend::Postgres {
        // Another tenant's tokens are invisible in a tenant-bound transaction.
        let tx = begin_tenant_tx(&db.app, tenants[0]).await.unwrap();
        let sizes: Vec<u64> = checkpoints
            .iter()
            .filter(|c| c.0 == tenants[1])
            .map(|c| c.1)
            .collect();
        assert!(tokens_for(&tx, tenants[1], &sizes)
            .await
            .unwrap()
            .is_empty());
        tx.commit().await.unwrap();
    }

    // A second run finds nothing to do.
    let r = timestamp_pending(&db.app, &client, 100).await.unwrap();
    assert_eq!((r.found, r.stamped), (0, 0));

    // New checkpoints, two workers at once: each checkpoint gets exactly one token.
    db.record_events(&tenants, 4).await;
    sealer.seal_all().await.unwrap();
    let total = db.checkpoints().await.len();
    assert_eq!(total, 10);
    let other = TsaClient::new(&tsa.url()).unwrap();
    let (a, b) = tokio::join!(
        timestamp_pending(&db.app, &client, 100),
        timestamp_pending(&db.app, &other, 100)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.stamped + b.stamped, 4, "{a:?} {b:?}");
    assert_eq!(db.count_tokens().await, total as i64);
    let r = timestamp_pending(&db.app, &client, 100).await.unwrap();
    assert_eq!(r.stamped, 0);

    // A TSA that is down stamps nothing and says so.
    db.record_events(&tenants[..1], 1).await;
    sealer.seal_all().await.unwrap();
    let down = TsaClient::new(&format!("{}nope", tsa.url())).unwrap();
    assert!(matches!(
        timestamp_pending(&db.app, &down, 100).await,
        Err(TimeError::Tsa { .. })
    ));
    assert_eq!(db.count_tokens().await, total as i64);

    // Append-only: the application cannot change or remove a token.
    for sql in [
        "UPDATE audit_checkpoint_timestamps SET tsa_url = 'http://elsewhere/'",
        "DELETE FROM audit_checkpoint_timestamps",
    ] {
        let tx = begin_platform_tx(&db.app).await.unwrap();
        let r = tx
            .execute(Statement::from_string(backend, sql.to_string()))
            .await;
        assert!(r.is_err(), "{sql} must be refused");
        tx.rollback().await.ok();
    }
    // Not even the schema owner, on PostgreSQL: the trigger refuses.
    if let Some((owner, _)) = &db.owner {
        let tx = begin_platform_tx(owner).await.unwrap();
        let r = tx
            .execute_unprepared("DELETE FROM audit_checkpoint_timestamps")
            .await;
        let e = r.expect_err("the trigger refuses DELETE");
        assert!(e.to_string().contains("append-only"), "{e}");
        tx.rollback().await.ok();
    }
    assert_eq!(db.count_tokens().await, total as i64);
    db.finish().await;
}

#[tokio::test]
async fn checkpoints_are_timestamped_sqlite() {
    checkpoints_are_timestamped(DbBackend::Sqlite).await;
}

#[tokio::test]
async fn checkpoints_are_timestamped_postgres() {
    checkpoints_are_timestamped(DbBackend::Postgres).await;
}
